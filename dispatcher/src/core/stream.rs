//! Streamed responses: a synchronous invocation whose caller asked for the output as the function writes it. The chunks come from the worker's direct replies in order of their byte offsets; a chunk lost on the way (or dropped for a slow client) is filled in from the stored output, which is the concatenation, once the result comes.

use crate::core::invoke::{Call, InvokeError, Invoker, Outcome};
use crate::core::waiter::{Chunk, Finished, Registration};
use bytes::Bytes;
use squall_broker::headers as h;
use std::collections::BTreeMap;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

/// How many pieces of output wait for a slow client before the pump waits too.
const BODY_QUEUE: usize = 64;
/// The size of the pieces a gap is filled with from the stored output.
const FILL_PIECE: usize = 64 * 1024;

/// A streamed output's pieces in order, as a body: an error cuts it short.
pub type Pieces = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// How a streamed invocation went before its first chunk.
pub enum Streamed {
    /// The function streamed: the rest comes through [`OutputStream::pump`].
    Streaming(OutputStream),
    /// It ended, or the wait ran out, before anything was streamed: answered as without a
    /// stream.
    Whole(Outcome),
}

/// The chunks of an invocation that is streaming, and what tells its end.
pub struct OutputStream {
    invoker: Invoker,
    function: String,
    pub id: String,
    registration: Registration,
    chunks: mpsc::Receiver<Chunk>,
    deadline: tokio::time::Instant,
    first: Chunk,
}

/// Why a stream ended without the whole output: the body is cut short, so the client sees an
/// incomplete response rather than a complete-looking wrong one.
fn cut(why: impl Into<String>) -> std::io::Error {
    std::io::Error::other(why.into())
}

/// The chunks received so far, put in order: `sent` bytes went out; chunks past a gap wait.
#[derive(Default)]
pub struct Reorder {
    sent: u64,
    early: BTreeMap<u64, Bytes>,
}

impl Reorder {
    /// Takes `chunk` and returns what can go out now, in order (nothing while a gap stays
    /// open before it; a repeated or overlapping chunk only adds its new bytes).
    pub fn take(&mut self, (offset, bytes): Chunk) -> Vec<Bytes> {
        self.early.insert(offset, bytes);
        let mut out = Vec::new();
        while let Some((&offset, _)) = self.early.first_key_value() {
            if offset > self.sent {
                break;
            }
            let (offset, mut bytes) = self.early.pop_first().expect("checked");
            let skip = (self.sent - offset) as usize;
            if skip < bytes.len() {
                let fresh = bytes.split_off(skip);
                self.sent += fresh.len() as u64;
                out.push(fresh);
            }
        }
        out
    }

    /// How many bytes went out in order.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl Invoker {
    /// Submits `call` asking the worker to send the output's chunks as they are written, and
    /// waits for the first chunk or the end. A call that is not waited for, or that repeats an
    /// idempotency key (its job may carry another request's reply subject), is made as
    /// without a stream.
    pub async fn invoke_streamed(
        &self,
        mut call: Call<'_>,
        payload: Bytes,
    ) -> Result<Streamed, InvokeError> {
        let Some(wait) = call.wait.filter(|_| !call.repeated) else {
            return self.invoke(call, payload).await.map(Streamed::Whole);
        };
        let (function, id) = (call.function, call.id);
        let (mut registration, mut chunks) = self.waiter.register_stream(id);
        call.extra_headers
            .push((h::STREAM.to_string(), "true".to_string()));
        let job = call.into_job(Some(registration.reply_to.as_str()));
        self.submitter.submit(job, payload).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let finished = tokio::select! {
            // A chunk queued before the result is taken first: the function streamed.
            biased;
            Some(first) = chunks.recv() => {
                return Ok(Streamed::Streaming(OutputStream {
                    invoker: self.clone(),
                    function: function.to_string(),
                    id: id.to_string(),
                    registration,
                    chunks,
                    deadline,
                    first,
                }));
            }
            finished = registration.finished() => finished,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        self.conclude(function, id, finished)
            .await
            .map(Streamed::Whole)
    }
}

impl OutputStream {
    /// The output's pieces in order as the function writes them, ending when the invocation
    /// does: with the rest of the stored output after a success, cut short with an error
    /// after a failure (or when the wait runs out).
    pub fn into_body(self) -> Pieces {
        let (sender, receiver) = mpsc::channel(BODY_QUEUE);
        tokio::spawn(self.pump(sender));
        futures::StreamExt::boxed(futures::stream::unfold(receiver, |mut r| async move {
            r.recv().await.map(|item| (item, r))
        }))
    }

    async fn pump(mut self, out: mpsc::Sender<Result<Bytes, std::io::Error>>) {
        let mut order = Reorder::default();
        for piece in order.take(self.first.clone()) {
            if out.send(Ok(piece)).await.is_err() {
                return;
            }
        }
        let finished = loop {
            tokio::select! {
                biased;
                Some(chunk) = self.chunks.recv() => {
                    for piece in order.take(chunk) {
                        // The client went away: the invocation goes on, its output stored.
                        if out.send(Ok(piece)).await.is_err() {
                            return;
                        }
                    }
                }
                finished = self.registration.finished() => break finished,
                _ = tokio::time::sleep_until(self.deadline) => break None,
            }
        };
        // Chunks sent before the result are queued before it: take them all.
        while let Ok(chunk) = self.chunks.try_recv() {
            for piece in order.take(chunk) {
                if out.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
        }
        let finished = match self
            .invoker
            .conclude(&self.function, &self.id, finished)
            .await
        {
            Ok(Outcome::Succeeded(finished)) => finished,
            Ok(Outcome::Pending { .. }) => {
                let why = "the wait for the streamed output ran out";
                let _ = out.send(Err(cut(why))).await;
                return;
            }
            Ok(Outcome::Failed(f) | Outcome::Cancelled(f)) => {
                let why = format!(
                    "invocation {} ended {} while streaming: {}",
                    self.id,
                    f.meta.status.as_str(),
                    String::from_utf8_lossy(&f.body)
                );
                let _ = out.send(Err(cut(why))).await;
                return;
            }
            Err(error) => {
                let _ = out.send(Err(cut(error.to_string()))).await;
                return;
            }
        };
        if let Err(error) = self.fill(&finished, order.sent(), &out).await {
            let _ = out.send(Err(error)).await;
        }
    }

    /// Sends what the client has not had of the stored output: the bytes after `sent`.
    async fn fill(
        &self,
        finished: &Finished,
        sent: u64,
        out: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), std::io::Error> {
        let Some(stored) = &finished.payload else {
            return Ok(());
        };
        if sent >= stored.size {
            return Ok(());
        }
        let mut object = self
            .invoker
            .payloads
            .open(&self.function, stored)
            .await
            .map_err(|e| cut(e.to_string()))?;
        let mut skip = sent;
        loop {
            let mut piece = vec![0u8; FILL_PIECE];
            let n = object.read(&mut piece).await?;
            if n == 0 {
                return Ok(());
            }
            piece.truncate(n);
            let mut piece = Bytes::from(piece);
            if skip > 0 {
                let drop = (skip as usize).min(piece.len());
                let _ = piece.split_to(drop);
                skip -= drop as u64;
            }
            if !piece.is_empty() && out.send(Ok(piece)).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, text: &str) -> Chunk {
        (offset, Bytes::copy_from_slice(text.as_bytes()))
    }

    fn joined(pieces: Vec<Bytes>) -> String {
        pieces
            .iter()
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn chunks_in_order_go_out_at_once() {
        let mut order = Reorder::default();
        assert_eq!(joined(order.take(chunk(0, "ab"))), "ab");
        assert_eq!(joined(order.take(chunk(2, "cde"))), "cde");
        assert_eq!(order.sent(), 5);
    }

    #[test]
    fn a_chunk_after_a_gap_waits_for_the_gap() {
        let mut order = Reorder::default();
        assert_eq!(joined(order.take(chunk(0, "ab"))), "ab");
        assert_eq!(joined(order.take(chunk(4, "ef"))), "");
        assert_eq!(order.sent(), 2);
        assert_eq!(joined(order.take(chunk(2, "cd"))), "cdef");
        assert_eq!(order.sent(), 6);
    }

    #[test]
    fn a_repeated_or_overlapping_chunk_adds_only_its_new_bytes() {
        let mut order = Reorder::default();
        assert_eq!(joined(order.take(chunk(0, "abc"))), "abc");
        assert_eq!(joined(order.take(chunk(0, "abc"))), "");
        assert_eq!(joined(order.take(chunk(1, "bcdef"))), "def");
        assert_eq!(order.sent(), 6);
    }
}
