//! Claim checks: an input or output above the inline limit lives in its function's payload
//! object store (`squall_payloads_<function>`) and the job or result carries a reference to it.
//!
//! The reference travels in the `Squall-Payload` header as `<size> <object name>`; the message's
//! own body is then empty. Each function has a bucket of its own, so a function process's
//! credentials reach its own payloads and no other function's (`callout::permissions`).

use crate::headers as h;
use async_nats::jetstream::object_store::{ObjectInfo, ObjectOptions, ObjectStore};
use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The prefix of every function's payload bucket.
pub const PAYLOAD_BUCKET_PREFIX: &str = "squall_payloads_";

/// What a message's inline body may hold: the streams' largest message less room for headers.
pub const HEADER_ROOM: usize = 64 * 1024;

/// The size of one stored chunk.
const CHUNK: usize = 128 * 1024;

/// How many chunk publishes may wait for their acknowledgement at once.
const IN_FLIGHT: usize = 16;

/// `function`'s payload bucket.
pub fn payload_bucket(function: &str) -> String {
    format!("{PAYLOAD_BUCKET_PREFIX}{function}")
}

/// The stream behind `function`'s payload bucket.
pub fn payload_stream(function: &str) -> String {
    format!("OBJ_{}", payload_bucket(function))
}

/// The inline limit of streams whose largest message is `max_message_size` bytes.
pub fn inline_limit(max_message_size: i64) -> usize {
    (max_message_size.max(0) as usize).saturating_sub(HEADER_ROOM)
}

/// A stored payload: its object's name in the function's bucket and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRef {
    pub object: String,
    pub size: u64,
}

impl PayloadRef {
    /// The `Squall-Payload` header's value.
    pub fn to_header(&self) -> String {
        format!("{} {}", self.size, self.object)
    }

    /// Reads a `Squall-Payload` header's value; `None` when it is not one.
    pub fn parse(value: &str) -> Option<PayloadRef> {
        let (size, object) = value.split_once(' ')?;
        let size = size.parse().ok()?;
        (is_object_name(object)).then(|| PayloadRef {
            object: object.to_string(),
            size,
        })
    }

    /// The reference a message's headers carry, if any (an unreadable one counts as none:
    /// the caller then sees the empty inline body, never another object).
    pub fn from_headers(headers: Option<&HeaderMap>) -> Option<PayloadRef> {
        headers?
            .get(h::PAYLOAD)
            .and_then(|v| PayloadRef::parse(v.as_str()))
    }

    /// A new input's object name: unique (stored before its invocation id is claimed), so an
    /// upload never replaces another's object.
    pub fn input_name() -> String {
        format!("in/{}", uuid::Uuid::now_v7().simple())
    }

    /// A new output's reference name for invocation `id`'s `attempt`.
    pub fn output_name(id: &str, attempt: u32) -> String {
        format!("out/{id}/{attempt}-{}", uuid::Uuid::new_v4().simple())
    }
}

/// Object names Squall makes: `in/…` or `out/…`, printable ASCII without spaces.
fn is_object_name(name: &str) -> bool {
    (name.starts_with("in/") || name.starts_with("out/"))
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Why a payload could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body was larger than the limit (what was written so far is removed).
    #[error("the payload is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Reading the body failed (a client that went away).
    #[error("cannot read the payload: {0}")]
    Read(String),
    /// The object is not stored (it expired, was deleted, or never existed).
    #[error("payload {0} is no longer stored")]
    Missing(String),
    /// The broker refused or did not answer.
    #[error("payload store: {0}")]
    Broker(String),
}

impl PayloadError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, PayloadError::Broker(_))
    }
}

/// Stores `first` followed by everything `rest` yields as object `name`, at most `limit` bytes
/// in all, without holding more than a few chunks in memory. Chunk publishes are pipelined;
/// a failure (including a body over the limit) purges the chunks already written.
pub async fn put(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    name: &str,
    first: Bytes,
    rest: &mut (impl AsyncRead + Unpin),
    limit: usize,
) -> Result<PayloadRef, PayloadError> {
    let nuid = uuid::Uuid::new_v4().simple().to_string();
    let mut writer = ObjectWriter::new(js, bucket, &nuid, limit);
    let written = fill(&mut writer, first, rest).await;
    let finished = match written {
        Ok(()) => writer.finish(name).await,
        Err(error) => Err(error),
    };
    if finished.is_err() {
        purge(js, bucket, &format!("$O.{bucket}.C.{nuid}")).await;
    }
    finished
}

/// Writes `first`, then what `rest` yields, in chunks of `CHUNK` bytes.
async fn fill(
    writer: &mut ObjectWriter,
    first: Bytes,
    rest: &mut (impl AsyncRead + Unpin),
) -> Result<(), PayloadError> {
    let mut pending = first;
    let mut buffer = BytesMut::with_capacity(CHUNK);
    let mut ended = false;
    loop {
        // Fill one chunk from what is pending, then from the reader.
        while buffer.len() < CHUNK && !(ended && pending.is_empty()) {
            if !pending.is_empty() {
                let take = (CHUNK - buffer.len()).min(pending.len());
                buffer.extend_from_slice(&pending.split_to(take));
                continue;
            }
            buffer.reserve(CHUNK - buffer.len());
            let n = rest
                .read_buf(&mut buffer)
                .await
                .map_err(|e| PayloadError::Read(e.to_string()))?;
            if n == 0 {
                ended = true;
            }
        }
        if buffer.is_empty() {
            return Ok(());
        }
        writer.write(buffer.split().freeze()).await?;
    }
}

type AckFuture = futures::future::BoxFuture<'static, Result<(), PayloadError>>;

/// An object written as its bytes come: each write is published at once as one or more chunks
/// (acknowledgements pipelined, at most `IN_FLIGHT` waiting), and `finish` waits for them and
/// writes the object's metadata, after which the object reads like any other. A streamed
/// output is written so, under a chunk subject derived from its invocation and attempt
/// ([`streamed_nuid`]), so that a later attempt finds what a crashed one streamed.
pub struct ObjectWriter {
    js: async_nats::jetstream::Context,
    bucket: String,
    nuid: String,
    chunk_subject: String,
    sha: Sha256,
    size: usize,
    chunks: usize,
    acks: futures::stream::FuturesOrdered<AckFuture>,
    limit: usize,
}

impl ObjectWriter {
    /// A writer of chunks `$O.<bucket>.C.<nuid>`, at most `limit` bytes in all.
    pub fn new(
        js: &async_nats::jetstream::Context,
        bucket: &str,
        nuid: &str,
        limit: usize,
    ) -> ObjectWriter {
        ObjectWriter {
            js: js.clone(),
            bucket: bucket.to_string(),
            nuid: nuid.to_string(),
            chunk_subject: format!("$O.{bucket}.C.{nuid}"),
            sha: Sha256::new(),
            size: 0,
            chunks: 0,
            acks: futures::stream::FuturesOrdered::new(),
            limit,
        }
    }

    /// How many bytes were written so far.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `len` more bytes stay within the limit.
    fn fits(&self, len: usize) -> bool {
        self.size.saturating_add(len) <= self.limit
    }

    /// Publishes `bytes` as the next chunk (several when longer than a chunk); waits only for
    /// acknowledgements beyond the pipeline's depth. `TooLarge` past the limit, writing nothing.
    pub async fn write(&mut self, mut bytes: Bytes) -> Result<(), PayloadError> {
        if !self.fits(bytes.len()) {
            return Err(PayloadError::TooLarge { limit: self.limit });
        }
        while !bytes.is_empty() {
            let chunk = bytes.split_to(bytes.len().min(CHUNK));
            self.size += chunk.len();
            self.sha.update(&chunk);
            self.chunks += 1;
            let ack = self
                .js
                .publish(self.chunk_subject.clone(), chunk)
                .await
                .map_err(|e| PayloadError::Broker(e.to_string()))?;
            self.acks.push_back(Box::pin(async move {
                ack.await
                    .map(|_| ())
                    .map_err(|e| PayloadError::Broker(e.to_string()))
            }));
            while self.acks.len() >= IN_FLIGHT {
                self.acks.next().await.unwrap_or(Ok(()))?;
            }
        }
        Ok(())
    }

    /// Waits for every chunk's acknowledgement, then stores the object's metadata under
    /// `name`. The chunks stay when it fails (`purge` removes them, or the bucket's age limit).
    pub async fn finish(mut self, name: &str) -> Result<PayloadRef, PayloadError> {
        while let Some(ack) = self.acks.next().await {
            ack?;
        }
        let digest: [u8; 32] = self.sha.finalize().into();
        write_info(
            &self.js,
            &self.bucket,
            &self.nuid,
            name,
            self.size,
            self.chunks,
            digest,
        )
        .await
    }
}

/// Stores the metadata of an object whose chunks are written: from then on it is readable.
async fn write_info(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    nuid: &str,
    name: &str,
    size: usize,
    chunks: usize,
    digest: [u8; 32],
) -> Result<PayloadRef, PayloadError> {
    let info = ObjectInfo {
        name: name.to_string(),
        description: None,
        metadata: Default::default(),
        headers: None,
        options: Some(ObjectOptions {
            link: None,
            max_chunk_size: Some(CHUNK),
        }),
        bucket: bucket.to_string(),
        nuid: nuid.to_string(),
        size,
        chunks,
        modified: None,
        digest: Some(format!(
            "SHA-256={}",
            base64::engine::general_purpose::URL_SAFE.encode(digest)
        )),
        deleted: false,
    };
    let meta_subject = format!(
        "$O.{bucket}.M.{}",
        base64::engine::general_purpose::URL_SAFE.encode(name)
    );
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    let body = serde_json::to_vec(&info).map_err(|e| PayloadError::Broker(e.to_string()))?;
    js.publish_with_headers(meta_subject, headers, body.into())
        .await
        .map_err(|e| PayloadError::Broker(e.to_string()))?
        .await
        .map_err(|e| PayloadError::Broker(e.to_string()))?;
    Ok(PayloadRef {
        object: name.to_string(),
        size: size as u64,
    })
}

/// The chunk subject token of invocation `id`'s attempt `attempt` when it streams: derived, so
/// the next attempt of a job whose process crashed finds what it streamed.
pub fn streamed_nuid(id: &str, attempt: u32) -> String {
    let hash = Sha256::digest(id.as_bytes());
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("s{hex}a{attempt}")
}

/// The object name of invocation `id`'s output streamed by attempt `attempt`.
pub fn streamed_name(id: &str, attempt: u32) -> String {
    format!("out/{id}/{attempt}-streamed")
}

/// Closes what attempt `attempt` of invocation `id` streamed before its process ended into an
/// object of its own (reading its chunks back for their size and digest); `None` when that
/// attempt streamed nothing; `Missing` when the function has no payload bucket.
pub async fn close_streamed(
    js: &async_nats::jetstream::Context,
    function: &str,
    id: &str,
    attempt: u32,
) -> Result<Option<PayloadRef>, PayloadError> {
    use async_nats::jetstream::consumer::push::OrderedConfig;
    let bucket = payload_bucket(function);
    let nuid = streamed_nuid(id, attempt);
    let broker = |e: &dyn std::fmt::Display| PayloadError::Broker(e.to_string());
    // No stream info request: the consumer create below answers for the stream too.
    let stream = js
        .get_stream_no_info(payload_stream(function))
        .await
        .map_err(|e| broker(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: format!("$O.{bucket}.C.{nuid}"),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            use async_nats::jetstream::{stream::ConsumerErrorKind, ErrorCode};
            match e.kind() {
                ConsumerErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    PayloadError::Missing(format!("payload bucket of function {function}"))
                }
                _ => broker(&e),
            }
        })?;
    // The create answer counts the chunks (a consumer info request is not among a function
    // process's permissions).
    let pending = consumer.cached_info().num_pending;
    if pending == 0 {
        return Ok(None);
    }
    let mut messages = consumer.messages().await.map_err(|e| broker(&e))?;
    let (mut sha, mut size, mut chunks) = (Sha256::new(), 0usize, 0usize);
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| PayloadError::Broker("timed out reading streamed chunks".into()))?
            .ok_or_else(|| PayloadError::Broker("streamed chunks ended early".into()))?
            .map_err(|e| broker(&e))?;
        sha.update(&message.payload);
        size += message.payload.len();
        chunks += 1;
        let info = message.info().map_err(|e| broker(&e))?;
        if info.pending == 0 {
            break;
        }
    }
    let name = streamed_name(id, attempt);
    write_info(
        js,
        &bucket,
        &nuid,
        &name,
        size,
        chunks,
        sha.finalize().into(),
    )
    .await
    .map(Some)
}

/// Removes the chunks of an object that was not completed (best effort: the bucket's age
/// limit removes them otherwise).
async fn purge(js: &async_nats::jetstream::Context, bucket: &str, chunk_subject: &str) {
    let stream = format!("OBJ_{bucket}");
    match js.get_stream(&stream).await {
        Ok(stream) => {
            if let Err(error) = stream.purge().filter(chunk_subject).await {
                tracing::warn!(message = "cannot purge an unfinished payload's chunks", %bucket, error = %error);
            }
        }
        Err(error) => {
            tracing::warn!(message = "cannot purge an unfinished payload's chunks", %bucket, error = %error)
        }
    }
}

/// Opens `function`'s payload bucket, which a dispatcher made; `Missing` when there is none
/// (the function was never deployed here, or its bucket was removed).
pub async fn open_store(
    js: &async_nats::jetstream::Context,
    function: &str,
) -> Result<ObjectStore, PayloadError> {
    crate::topology::open_payload_store(js, function)
        .await
        .map_err(|e| match &e {
            crate::TopologyError::OpenPayloadStore { source, .. }
                if source.to_string().contains("not found") =>
            {
                PayloadError::Missing(format!("payload bucket of function {function}"))
            }
            _ => PayloadError::Broker(e.to_string()),
        })
}

/// Reads a stored payload whole (at most `limit` bytes).
pub async fn get(
    store: &ObjectStore,
    reference: &PayloadRef,
    limit: usize,
) -> Result<Bytes, PayloadError> {
    if reference.size as usize > limit {
        return Err(PayloadError::TooLarge { limit });
    }
    let mut object = open(store, reference).await?;
    let mut bytes = Vec::with_capacity(reference.size as usize);
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| PayloadError::Broker(e.to_string()))?;
    if bytes.len() as u64 != reference.size {
        return Err(PayloadError::Broker(format!(
            "payload {} has {} bytes where {} were stored",
            reference.object,
            bytes.len(),
            reference.size
        )));
    }
    Ok(bytes.into())
}

/// Opens a stored payload for reading as it streams.
pub async fn open(
    store: &ObjectStore,
    reference: &PayloadRef,
) -> Result<async_nats::jetstream::object_store::Object, PayloadError> {
    use async_nats::jetstream::object_store::GetErrorKind;
    store
        .get(&reference.object)
        .await
        .map_err(|e| match e.kind() {
            GetErrorKind::NotFound => PayloadError::Missing(reference.object.clone()),
            _ => PayloadError::Broker(e.to_string()),
        })
}

/// Deletes a stored payload (a missing one is no error).
pub async fn delete(store: &ObjectStore, reference: &PayloadRef) -> Result<(), PayloadError> {
    use async_nats::jetstream::object_store::DeleteErrorKind;
    match store.delete(&reference.object).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == DeleteErrorKind::NotFound => Ok(()),
        Err(e) => Err(PayloadError::Broker(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_reads_back_from_its_header() {
        let r = PayloadRef {
            object: PayloadRef::output_name("0190-abc", 2),
            size: 52_428_800,
        };
        assert_eq!(PayloadRef::parse(&r.to_header()), Some(r));
        let r = PayloadRef {
            object: PayloadRef::input_name(),
            size: 52_428_800,
        };
        assert_eq!(PayloadRef::parse(&r.to_header()), Some(r));
        let r = PayloadRef {
            object: streamed_name("0190-abc", 3),
            size: 7,
        };
        assert_eq!(PayloadRef::parse(&r.to_header()), Some(r));
    }

    #[test]
    fn a_streamed_chunk_subject_is_one_token_per_invocation_and_attempt() {
        let a = streamed_nuid("0190-abc", 1);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert_eq!(a, streamed_nuid("0190-abc", 1));
        assert_ne!(a, streamed_nuid("0190-abc", 2));
        assert_ne!(a, streamed_nuid("0190-abd", 1));
        // Claimed ids are the client's: a dot or wildcard never reaches the subject.
        assert!(!streamed_nuid("a.b.*", 1).contains(['.', '*', '>']));
    }

    #[test]
    fn a_header_that_names_no_squall_object_is_no_reference() {
        assert_eq!(PayloadRef::parse("12 ../etc/passwd"), None);
        assert_eq!(PayloadRef::parse("x in/a"), None);
        assert_eq!(PayloadRef::parse("12"), None);
        assert_eq!(PayloadRef::parse("12 in/a b"), None);
    }

    #[test]
    fn the_inline_limit_leaves_room_for_headers() {
        assert_eq!(inline_limit(1024 * 1024 + 64 * 1024), 1024 * 1024);
        assert_eq!(inline_limit(10), 0);
    }
}
