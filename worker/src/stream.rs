//! Streamed outputs: the chunks a function writes with `stream_write`, stored in its payload bucket as they come and, when the caller asked for a stream, sent to the waiting dispatcher at once.
//!
//! The chunks go under a subject derived from the invocation and attempt
//! (`payloads::streamed_nuid`), so the next attempt of a job whose process died mid-stream
//! finds them and closes them into an object (`payloads::close_streamed`) instead of running
//! the function again. Each chunk sent to the dispatcher carries its byte offset: one lost on
//! the way is filled in from the stored object when the result comes.

use bytes::Bytes;
use squall_broker::headers as h;
use squall_broker::payloads::{self, ObjectWriter, PayloadError, PayloadRef};
use std::sync::{Arc, Mutex};

/// The largest piece of a chunk sent to a dispatcher in one message.
const REPLY_PIECE: usize = 128 * 1024;

/// One attempt's stream: where its chunks go, and what was written so far.
pub struct Streaming {
    jetstream: async_nats::jetstream::Context,
    function: String,
    invocation_id: String,
    attempt: u32,
    /// The waiting dispatcher's reply subject, when the caller asked for a stream.
    reply: Option<String>,
    max: usize,
    writer: Option<ObjectWriter>,
    /// Why the stream cannot go on: the first write that failed.
    broken: Option<String>,
}

/// A call's stream, shared between its host calls (on the call thread) and the attempt that
/// takes it back when the call ends, returns or is abandoned.
pub type StreamSlot = Arc<Mutex<Option<Streaming>>>;

impl Streaming {
    /// The stream of `function`'s invocation `invocation_id`, attempt `attempt`; chunks also
    /// go to `reply` when given. At most `max` bytes in all.
    pub fn new(
        jetstream: &async_nats::jetstream::Context,
        function: &str,
        invocation_id: &str,
        attempt: u32,
        reply: Option<String>,
        max: usize,
    ) -> Streaming {
        Streaming {
            jetstream: jetstream.clone(),
            function: function.to_string(),
            invocation_id: invocation_id.to_string(),
            attempt,
            reply,
            max,
            writer: None,
            broken: None,
        }
    }

    /// Whether the function wrote any bytes.
    pub fn started(&self) -> bool {
        self.size() > 0
    }

    /// Bytes written so far.
    pub fn size(&self) -> usize {
        self.writer.as_ref().map_or(0, ObjectWriter::size)
    }

    /// Whether a write failed or ran out of time: the stream cannot go on.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Marks the stream broken (a write that failed or ran out of time).
    pub fn break_with(&mut self, why: String) {
        self.broken.get_or_insert(why);
    }

    /// Stores `chunk` and, when a dispatcher waits for the stream, sends it there with its
    /// offset (a plain publish: a lost one is filled in from the store). `TooLarge`, writing
    /// nothing, when it would take the output past the limit.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), PayloadError> {
        let writer = self.writer.get_or_insert_with(|| {
            ObjectWriter::new(
                &self.jetstream,
                &payloads::payload_bucket(&self.function),
                &payloads::streamed_nuid(&self.invocation_id, self.attempt),
                self.max,
            )
        });
        let offset = writer.size();
        writer.write(chunk.clone()).await?;
        if let Some(reply) = &self.reply {
            let client = self.jetstream.client();
            let mut at = offset;
            let mut rest = chunk;
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(REPLY_PIECE));
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(h::CHUNK_OFFSET, at.to_string().as_str());
                at += piece.len();
                if let Err(error) = client
                    .publish_with_headers(reply.clone(), headers, piece)
                    .await
                {
                    tracing::debug!(message = "cannot send a streamed chunk; the store has it",
                        invocation_id = %self.invocation_id, %error);
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: writes `last` (what a succeeded function returned) as its last chunk,
    /// then closes the chunks into the invocation's streamed object.
    pub async fn finish(mut self, last: Option<Bytes>) -> Result<PayloadRef, PayloadError> {
        if let Some(why) = self.broken.take() {
            return Err(PayloadError::Broker(why));
        }
        if let Some(last) = last.filter(|l| !l.is_empty()) {
            self.write(last).await?;
        }
        let name = payloads::streamed_name(&self.invocation_id, self.attempt);
        match self.writer.take() {
            Some(writer) => writer.finish(&name).await,
            None => Err(PayloadError::Broker("nothing was streamed".into())),
        }
    }
}

/// Takes a call's stream back, so a host call from an abandoned call thread finds none; `None`
/// when the function wrote nothing (or a write is still blocked on that thread).
pub fn take_started(slot: &StreamSlot) -> Option<Streaming> {
    let stream = slot.try_lock().ok()?.take()?;
    stream.started().then_some(stream)
}
