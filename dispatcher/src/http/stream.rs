//! Streamed HTTP answers: which requests ask for the output as the function writes it, and the chunked response that carries it.

use crate::core::stream::OutputStream;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use squall_broker::headers as h;

/// The media types whose requests get the output as it is written.
const STREAMED_TYPES: [&str; 2] = ["application/x-ndjson", "text/event-stream"];

/// The content type of the stream a request asks for: `Accept: application/x-ndjson` or
/// `text/event-stream`, or `Squall-Stream: true` (then `application/octet-stream`); `None` when
/// it asks for the whole output.
pub fn requested(headers: &HeaderMap) -> Option<&'static str> {
    let accepted = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|range| range.split(';').next().unwrap_or("").trim());
    for range in accepted {
        if let Some(t) = STREAMED_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(range))
        {
            return Some(t);
        }
    }
    headers
        .get(h::STREAM)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.trim().eq_ignore_ascii_case("true"))
        .map(|_| "application/octet-stream")
}

/// The body of a streaming invocation: its chunks as they come; cut short (no final chunk)
/// when the invocation fails after it began.
pub fn body(stream: OutputStream) -> Body {
    Body::from_stream(stream.into_body())
}

/// The 200 of a native invoke that streams: chunked, typed as asked, never buffered by a
/// proxy that honours `X-Accel-Buffering`.
pub fn response(stream: OutputStream, content_type: &'static str) -> Response {
    let id = HeaderValue::from_str(&stream.id).ok();
    let mut response = (StatusCode::OK, body(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(id) = id {
        headers.insert(h::INVOCATION_ID, id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn ndjson_and_event_stream_accepts_ask_for_a_stream() {
        assert_eq!(
            requested(&with(&[("accept", "application/x-ndjson")])),
            Some("application/x-ndjson")
        );
        assert_eq!(
            requested(&with(&[("accept", "text/html, TEXT/EVENT-STREAM;q=0.9")])),
            Some("text/event-stream")
        );
    }

    #[test]
    fn the_squall_stream_header_asks_for_an_octet_stream() {
        assert_eq!(
            requested(&with(&[
                ("accept", "application/octet-stream"),
                ("squall-stream", "true")
            ])),
            Some("application/octet-stream")
        );
        assert_eq!(requested(&with(&[("squall-stream", "false")])), None);
    }

    #[test]
    fn other_requests_get_the_whole_output() {
        assert_eq!(requested(&with(&[])), None);
        assert_eq!(
            requested(&with(&[("accept", "application/json, */*")])),
            None
        );
    }
}
