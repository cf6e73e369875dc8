//! A web function that streams: its status, headers and cookies come first, in Lambda's streaming format for function URLs (a JSON prelude `{"statusCode": …, "headers": {…}, "cookies": […]}` and eight NUL bytes), then its body as it writes it.
//!
//! A stream that does not open with `{` has no prelude: it is the body of a 200 typed
//! `application/octet-stream`. A stream that opens with `{` must hold the eight NUL bytes within
//! its first `PRELUDE_MAX` bytes (or before it ends), else it too is all body.

use crate::core::stream::OutputStream;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

/// What separates the prelude from the body.
const SEPARATOR: [u8; 8] = [0; 8];
/// How far into the stream the prelude's end is looked for.
pub const PRELUDE_MAX: usize = 64 * 1024;

/// What the first bytes of a stream tell.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// Not enough yet to tell.
    Undecided,
    /// No prelude: every byte is body.
    Body,
    /// A prelude of `json` bytes; the body starts at `body`.
    Prelude { json: usize, body: usize },
}

/// Reads the opening of a stream from its first bytes `head`; `ended` when no more come.
pub fn opening(head: &[u8], ended: bool) -> Opening {
    match head.first() {
        None if ended => return Opening::Body,
        None => return Opening::Undecided,
        Some(b'{') => {}
        Some(_) => return Opening::Body,
    }
    let window = &head[..head.len().min(PRELUDE_MAX + SEPARATOR.len())];
    if let Some(at) = window.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        return Opening::Prelude {
            json: at,
            body: at + SEPARATOR.len(),
        };
    }
    if ended || head.len() >= PRELUDE_MAX + SEPARATOR.len() {
        Opening::Body
    } else {
        Opening::Undecided
    }
}

/// A streaming web function's answer, opened: its prelude, if it has one, and its body from
/// the first byte after it, as it comes.
pub struct Opened {
    pub prelude: Option<Bytes>,
    pub body: Body,
}

/// Reads a stream until its opening is told; `None` when the invocation failed first (the
/// caller answers as for a function that failed without streaming).
pub async fn open(stream: OutputStream) -> Option<Opened> {
    let mut pieces = stream.into_body();
    let mut head = BytesMut::new();
    let opened = loop {
        let ended = match pieces.next().await {
            Some(Ok(piece)) => {
                head.extend_from_slice(&piece);
                false
            }
            Some(Err(_)) => return None,
            None => true,
        };
        match opening(&head, ended) {
            Opening::Undecided => continue,
            decided => break decided,
        }
    };
    let mut head = head.freeze();
    let prelude = match opened {
        Opening::Prelude { json, body } => Some(head.split_to(body).slice(..json)),
        _ => None,
    };
    let first =
        futures::stream::iter((!head.is_empty()).then_some(Ok::<Bytes, std::io::Error>(head)));
    Some(Opened {
        prelude,
        body: Body::from_stream(first.chain(pieces)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prelude_ends_at_eight_nul_bytes() {
        let stream = b"{\"statusCode\":201}\0\0\0\0\0\0\0\0hello";
        assert_eq!(
            opening(stream, false),
            Opening::Prelude { json: 18, body: 26 }
        );
    }

    #[test]
    fn a_prelude_waits_for_its_end_and_a_stream_without_one_is_body() {
        assert_eq!(opening(b"{\"statusCode\":2", false), Opening::Undecided);
        assert_eq!(opening(b"", false), Opening::Undecided);
        assert_eq!(opening(b"data: 1\n\n", false), Opening::Body);
        assert_eq!(opening(b"{\"a\":1}", true), Opening::Body);
        assert_eq!(opening(b"", true), Opening::Body);
        let long = [b"{".as_slice(), &vec![b' '; PRELUDE_MAX + 8]].concat();
        assert_eq!(opening(&long, false), Opening::Body);
    }
}
