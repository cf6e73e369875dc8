//! Host services behind the ABI's `kv_*` and `publish` calls: a function's own state in the
//! `squall_state` bucket with a coherent worker-local cache, and events published on `events.>`.
//!
//! Invariants:
//! - A function reaches only keys `<function>.<key>`: function names hold no `.`, so no key
//!   of one function is ever a key of another.
//! - The cache serves a key only while the bucket's watch runs. A watch event newer than a
//!   cached value evicts it; a fetch that raced an event is returned but not cached, so the
//!   cache never keeps a value older than one it has heard of.
//! - A worker reads its own writes: a put or delete acknowledged by the broker is cached at
//!   its revision before the call returns.
//! - Every call is bounded by the invocation's deadline and never blocks past it.

use crate::loader::{HostCalls, HostFailure};
use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use squall_broker::names::{STATE_BUCKET, STATE_MAX_VALUE};
use squall_broker::payloads::PayloadError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest key a function may use.
pub const MAX_KEY: usize = 256;
/// The largest payload a function may publish.
pub const MAX_PUBLISH: usize = 1 << 20;
/// The subject prefix a function may publish under.
pub const EVENTS_PREFIX: &str = "events.";
/// How many keys the cache holds before it forgets the least recently used half.
const CACHE_CAPACITY: usize = 16_384;
/// How long a cached key stays without being read or written.
const CACHE_IDLE: Duration = Duration::from_secs(120);
/// The broker's per-key TTL header (whole seconds).
const TTL_HEADER: &str = "Nats-TTL";

/// Checks a key against the ABI's rule: 1 to 256 bytes of `[A-Za-z0-9_=./-]`, not starting
/// or ending with `.`, and no empty token (`..`), which the broker cannot store.
pub fn check_key(key: &[u8]) -> Result<&str, HostFailure> {
    if key.len() > MAX_KEY {
        return Err(HostFailure::TooLarge);
    }
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b'.' | b'/' | b'-');
    if key.is_empty()
        || !key.iter().all(valid)
        || key.starts_with(b".")
        || key.ends_with(b".")
        || key.windows(2).any(|w| w == b"..")
    {
        return Err(HostFailure::Invalid);
    }
    // Every byte is ASCII.
    std::str::from_utf8(key).map_err(|_| HostFailure::Invalid)
}

/// Checks a publish subject: under `events.` (else denied), then a valid NATS subject (the
/// triggers' rule, `squall_broker::events`) with no wildcard: a literal one.
pub fn check_subject(subject: &[u8]) -> Result<&str, HostFailure> {
    if !subject.starts_with(EVENTS_PREFIX.as_bytes()) {
        return Err(HostFailure::Denied);
    }
    let subject = std::str::from_utf8(subject).map_err(|_| HostFailure::Invalid)?;
    let literal = !subject.split('.').any(|token| token == "*" || token == ">");
    if !literal || squall_broker::events::validate_subject_pattern(subject).is_err() {
        return Err(HostFailure::Invalid);
    }
    Ok(subject)
}

/// The bucket key of a function's key.
pub fn namespaced(function: &str, key: &str) -> String {
    format!("{function}.{key}")
}

/// The `Nats-Msg-Id` of an invocation's `index`-th publish: the same for every attempt, so a
/// retried attempt's repeats are dropped by the stream.
pub fn publish_id(invocation_id: &str, index: u32) -> String {
    format!("{invocation_id}:pub:{index}")
}

/// Whole seconds of a `ttl_ms` (rounded up; the broker keeps whole seconds).
pub fn ttl_seconds(ttl_ms: u64) -> u64 {
    ttl_ms.div_ceil(1000).max(1)
}

/// One key as the cache knows it.
#[derive(Debug, Clone)]
enum Slot {
    /// A value (or its absence) at a revision, until `expires` when it has a TTL.
    Fresh {
        value: Option<Bytes>,
        revision: u64,
        expires: Option<Instant>,
        used: Instant,
    },
    /// Being fetched; `stale` once a watch event for the key arrived meanwhile.
    Pending { stale: bool },
}

/// The worker-local cache of state keys, kept coherent by the bucket's watch.
#[derive(Debug, Default)]
pub struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
    /// Whether the watch runs; the cache neither serves nor keeps anything otherwise.
    live: AtomicBool,
}

/// What a cache lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A cached value (or a cached absence).
    Hit(Option<Bytes>),
    /// Not cached: fetch it, then `settle_fetch`.
    Miss,
}

impl Cache {
    /// Marks the watch as running or not; when it stops, everything cached is forgotten.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.slots.lock().expect("cache lock").clear();
        }
    }

    /// The cached value of `key`, or a miss that marks the key as being fetched.
    pub fn lookup(&self, key: &str, now: Instant) -> Lookup {
        if !self.live.load(Ordering::SeqCst) {
            return Lookup::Miss;
        }
        let mut slots = self.slots.lock().expect("cache lock");
        match slots.get_mut(key) {
            Some(Slot::Fresh {
                value,
                expires,
                used,
                ..
            }) => {
                if expires.is_some_and(|at| at <= now) {
                    slots.insert(key.to_string(), Slot::Pending { stale: false });
                    return Lookup::Miss;
                }
                *used = now;
                Lookup::Hit(value.clone())
            }
            Some(Slot::Pending { .. }) => Lookup::Miss,
            None => {
                if slots.len() >= CACHE_CAPACITY {
                    evict(&mut slots, now);
                }
                slots.insert(key.to_string(), Slot::Pending { stale: false });
                Lookup::Miss
            }
        }
    }

    /// Keeps what a fetch found, unless a watch event for the key arrived while it ran.
    pub fn settle_fetch(
        &self,
        key: &str,
        value: Option<Bytes>,
        revision: u64,
        expires: Option<Instant>,
        now: Instant,
    ) {
        let mut slots = self.slots.lock().expect("cache lock");
        let keep = match slots.get(key) {
            Some(Slot::Pending { stale }) => !stale,
            Some(Slot::Fresh { revision: had, .. }) => revision > *had,
            None => false,
        };
        if keep && self.live.load(Ordering::SeqCst) {
            slots.insert(
                key.to_string(),
                Slot::Fresh {
                    value,
                    revision,
                    expires,
                    used: now,
                },
            );
        } else if matches!(slots.get(key), Some(Slot::Pending { .. })) {
            slots.remove(key);
        }
    }

    /// Keeps this worker's own acknowledged write (a `None` value for a delete).
    pub fn wrote(&self, key: &str, value: Option<Bytes>, revision: u64, expires: Option<Instant>) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        let mut slots = self.slots.lock().expect("cache lock");
        let newer = match slots.get(key) {
            Some(Slot::Fresh { revision: had, .. }) => revision > *had,
            _ => true,
        };
        if newer {
            if slots.len() >= CACHE_CAPACITY {
                evict(&mut slots, Instant::now());
            }
            slots.insert(
                key.to_string(),
                Slot::Fresh {
                    value,
                    revision,
                    expires,
                    used: Instant::now(),
                },
            );
        }
    }

    /// Gives up a fetch that failed: the key is no longer marked as being fetched.
    pub fn abandon(&self, key: &str) {
        let mut slots = self.slots.lock().expect("cache lock");
        if matches!(slots.get(key), Some(Slot::Pending { .. })) {
            slots.remove(key);
        }
    }

    /// A change of `key` at `revision` seen on the watch: anything older is forgotten.
    pub fn changed(&self, key: &str, revision: u64) {
        let mut slots = self.slots.lock().expect("cache lock");
        match slots.get_mut(key) {
            Some(Slot::Fresh { revision: had, .. }) if revision > *had => {
                slots.remove(key);
            }
            Some(Slot::Pending { stale }) => *stale = true,
            _ => {}
        }
    }

    /// Keys cached now, for tests.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("cache lock").len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets idle keys, or the least recently used half when none is idle.
fn evict(slots: &mut HashMap<String, Slot>, now: Instant) {
    let used = |slot: &Slot| match slot {
        Slot::Fresh { used, .. } => Some(*used),
        Slot::Pending { .. } => None,
    };
    slots.retain(|_, slot| used(slot).is_none_or(|at| now.duration_since(at) < CACHE_IDLE));
    if slots.len() < CACHE_CAPACITY {
        return;
    }
    let mut ages: Vec<Instant> = slots.values().filter_map(used).collect();
    ages.sort_unstable();
    if let Some(&median) = ages.get(ages.len() / 2) {
        slots.retain(|_, slot| used(slot).is_none_or(|at| at > median));
    }
}

/// When a stored message with `Nats-TTL` expires, from its store time; `None` without one.
/// A TTL the worker cannot read gives `Some(now)`: returned, but never served from the cache.
fn expiry_of(headers: &HeaderMap, stored: std::time::SystemTime, now: Instant) -> Option<Instant> {
    let ttl = headers.get(TTL_HEADER)?;
    let Some(seconds) = parse_ttl(ttl.as_str()) else {
        return Some(now);
    };
    let expires_at = stored + Duration::from_secs(seconds);
    let left = expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(now + left)
}

/// A `Nats-TTL` value in whole seconds: `10`, `10s`, `1500ms` (rounded up), `never` is none.
fn parse_ttl(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds);
    }
    if let Some(ms) = value.strip_suffix("ms") {
        return ms.parse::<u64>().ok().map(|ms| ms.div_ceil(1000));
    }
    value.strip_suffix('s')?.parse::<u64>().ok()
}

/// A function's use of its state during one call: operations and bytes, for metering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    pub ops: u64,
    pub bytes: u64,
}

/// The worker's state and event services, shared by every call.
pub struct HostServices {
    jetstream: jetstream::Context,
    /// The bucket's stream, for direct gets that carry the TTL header.
    stream: jetstream::stream::Stream<()>,
    cache: Arc<Cache>,
    runtime: tokio::runtime::Handle,
    watch: tokio::task::JoinHandle<()>,
    /// The longest a single host call waits for the broker, within the deadline.
    call_bound: Duration,
    /// The invocations cancelled so far, for the `cancelled` host call.
    cancels: Arc<crate::cancel::Cancellations>,
    /// Whether a stream captures an event subject, as last asked, and when.
    captured: std::sync::Mutex<HashMap<String, (bool, Instant)>>,
    /// The client, for plain publishes of events no stream captures.
    client: async_nats::Client,
}

/// How long the answer to "does a stream capture this subject" is reused: a stream made for
/// events starts storing a subject's publishes at most this long after it is created.
const CAPTURE_TTL: Duration = Duration::from_secs(5);
/// Subjects whose capture answer is remembered at most; beyond, the memory starts over.
const CAPTURE_MEMORY: usize = 4096;

impl Drop for HostServices {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl HostServices {
    /// Services over the topology's state bucket; starts the watch that keeps the cache
    /// coherent: of `only`'s namespace when the process serves that one function (which its
    /// credentials may be limited to), else of the whole bucket. Call from within the worker's
    /// runtime.
    pub async fn start(
        topology: &squall_broker::Topology,
        call_bound: Duration,
        cancels: Arc<crate::cancel::Cancellations>,
        only: Option<String>,
    ) -> Result<Arc<HostServices>, jetstream::context::GetStreamError> {
        let stream = topology
            .jetstream
            .get_stream_no_info(format!("KV_{STATE_BUCKET}"))
            .await?;
        let cache = Arc::new(Cache::default());
        let client = topology.jetstream.client();
        let watch = tokio::spawn(follow(client, topology.state.clone(), only, cache.clone()));
        Ok(Arc::new(HostServices {
            jetstream: topology.jetstream.clone(),
            stream,
            cache,
            runtime: tokio::runtime::Handle::current(),
            watch,
            call_bound,
            cancels,
            captured: std::sync::Mutex::new(HashMap::new()),
            client: topology.jetstream.client(),
        }))
    }

    /// Whether a stream captures `subject` (asked of JetStream at most every `CAPTURE_TTL`).
    async fn captured(&self, subject: &str) -> Result<bool, HostFailure> {
        use async_nats::jetstream::context::GetStreamByNameErrorKind;
        if let Some((captured, at)) = self.captured.lock().expect("capture memory").get(subject) {
            if at.elapsed() < CAPTURE_TTL {
                return Ok(*captured);
            }
        }
        let captured = match self.jetstream.stream_by_subject(subject).await {
            Ok(_) => true,
            Err(error) if error.kind() == GetStreamByNameErrorKind::NotFound => false,
            Err(error) => {
                tracing::debug!(message = "cannot ask which stream captures an event", %error);
                return Err(HostFailure::Unavailable);
            }
        };
        let mut memory = self.captured.lock().expect("capture memory");
        if memory.len() >= CAPTURE_MEMORY {
            memory.clear();
        }
        memory.insert(subject.to_string(), (captured, Instant::now()));
        Ok(captured)
    }

    /// The cache, for tests and benchmarks.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Waits until the watch runs, so the cache serves reads (at most `timeout`).
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.cache.live.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The services of one call of `function`'s invocation `invocation_id`, ending at
    /// `deadline`; host calls made under `span`.
    pub fn for_call(
        self: &Arc<Self>,
        function: &str,
        invocation_id: &str,
        traceparent: &str,
        deadline: Instant,
        span: tracing::Span,
    ) -> CallServices {
        CallServices {
            services: self.clone(),
            function: function.to_string(),
            invocation_id: invocation_id.to_string(),
            traceparent: traceparent.to_string(),
            deadline,
            published: 0,
            usage: KvUsage::default(),
            span,
            stream: None,
        }
    }

    /// Runs `future` to completion on the worker's runtime from a call thread, bounded by
    /// `deadline`; `None` when it ran out.
    fn block<F: std::future::Future>(&self, deadline: Instant, future: F) -> Option<F::Output> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(self.call_bound);
        if left.is_zero() {
            return None;
        }
        self.runtime
            .block_on(async { tokio::time::timeout(left, future).await.ok() })
    }

    /// Reads a bucket key: from the cache, or from the broker (then cached).
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, HostFailure> {
        let now = Instant::now();
        if let Lookup::Hit(value) = self.cache.lookup(key, now) {
            return Ok(value);
        }
        // A fetch cut short by the call's deadline must not leave the key marked as pending.
        let pending = Pending {
            cache: &self.cache,
            key,
            settled: false,
        };
        let found = self.fetch(key, now).await;
        pending.settle();
        found
    }

    /// Reads a bucket key from the broker and settles its cache slot.
    async fn fetch(&self, key: &str, now: Instant) -> Result<Option<Bytes>, HostFailure> {
        let subject = format!("$KV.{STATE_BUCKET}.{key}");
        use async_nats::jetstream::stream::DirectGetErrorKind;
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => {
                let headers = &message.headers;
                let deleted = matches!(
                    headers.get("KV-Operation").map(|v| v.as_str()),
                    Some("DEL") | Some("PURGE")
                ) || headers.get("Nats-Marker-Reason").is_some();
                let value = (!deleted).then(|| message.payload.clone());
                let stored: std::time::SystemTime = message.time.into();
                let expires = expiry_of(headers, stored, now);
                self.cache
                    .settle_fetch(key, value.clone(), message.sequence, expires, now);
                Ok(value)
            }
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => {
                self.cache.settle_fetch(key, None, 0, None, now);
                Ok(None)
            }
            Err(error) => {
                tracing::debug!(message = "state read failed", %error);
                self.cache.abandon(key);
                Err(HostFailure::Unavailable)
            }
        }
    }

    /// Writes a bucket key (with a TTL in whole seconds when `ttl_s` is set).
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl_s: Option<u64>,
    ) -> Result<(), HostFailure> {
        let mut headers = HeaderMap::new();
        if let Some(seconds) = ttl_s {
            headers.insert(TTL_HEADER, seconds.to_string().as_str());
        }
        let revision = self.store(key, headers, value.clone()).await?;
        let expires = ttl_s.map(|s| Instant::now() + Duration::from_secs(s));
        self.cache.wrote(key, Some(value), revision, expires);
        Ok(())
    }

    /// Deletes a bucket key (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), HostFailure> {
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        let revision = self.store(key, headers, Bytes::new()).await?;
        self.cache.wrote(key, None, revision, None);
        Ok(())
    }

    /// Stores one message on a bucket key and waits for its acknowledgement: its revision.
    async fn store(&self, key: &str, headers: HeaderMap, value: Bytes) -> Result<u64, HostFailure> {
        let subject = format!("$KV.{STATE_BUCKET}.{key}");
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, value)
            .await
            .map_err(|_| HostFailure::Unavailable)?
            .await
            .map_err(|error| {
                tracing::debug!(message = "state write failed", %error);
                HostFailure::Unavailable
            })?;
        Ok(ack.sequence)
    }

    /// Publishes an event with its `Nats-Msg-Id`; stored with an acknowledgement when a stream
    /// captures the subject, sent as a plain message otherwise (answered at once, whoever
    /// subscribes: a plain subscriber never acknowledges a JetStream publish).
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        traceparent: &str,
        payload: Bytes,
    ) -> Result<(), HostFailure> {
        use async_nats::jetstream::context::PublishErrorKind;
        let mut headers = HeaderMap::new();
        headers.insert(squall_broker::headers::NATS_MSG_ID, msg_id);
        if !traceparent.is_empty() {
            headers.insert(squall_broker::headers::TRACEPARENT, traceparent);
        }
        if !self.captured(subject).await? {
            return self
                .client
                .publish_with_headers(subject.to_string(), headers, payload)
                .await
                .map_err(|error| {
                    tracing::debug!(message = "event publish failed", %error);
                    HostFailure::Unavailable
                });
        }
        let ack = self
            .jetstream
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
            .map_err(|_| HostFailure::Unavailable)?
            .await;
        match ack {
            Ok(_) => Ok(()),
            // The stream went away since it was asked about: the message went out plain.
            Err(error) if error.kind() == PublishErrorKind::StreamNotFound => Ok(()),
            Err(error) => {
                tracing::debug!(message = "event publish failed", %error);
                Err(HostFailure::Unavailable)
            }
        }
    }
}

/// A key being fetched; dropped unsettled (the fetch was cut short), it gives the fetch up.
struct Pending<'a> {
    cache: &'a Cache,
    key: &'a str,
    settled: bool,
}

impl Pending<'_> {
    fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.cache.abandon(self.key);
        }
    }
}

/// Follows the bucket's changes (of `only`'s namespace, if given) into the cache, restarting
/// the watch when it fails.
async fn follow(
    client: async_nats::Client,
    bucket: kv::Store,
    only: Option<String>,
    cache: Arc<Cache>,
) {
    loop {
        let changes = match &only {
            Some(function) => squall_broker::watch::watch_named(
                &client,
                &bucket,
                &format!("{function}.>"),
                jetstream::consumer::DeliverPolicy::New,
            )
            .await
            .map(|changes| changes.map(|c| c.map_err(anyhow::Error::from)).boxed())
            .map_err(anyhow::Error::from),
            None => bucket
                .watch_all()
                .await
                .map(|changes| changes.map(|c| c.map_err(anyhow::Error::from)).boxed())
                .map_err(anyhow::Error::from),
        };
        match changes {
            Ok(mut changes) => {
                cache.set_live(true);
                while let Some(change) = changes.next().await {
                    match change {
                        Ok(entry) => cache.changed(&entry.key, entry.revision),
                        Err(error) => {
                            tracing::warn!(message = "state watch failed; cache off until it resumes", error = %error);
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(message = "cannot watch the state bucket; cache off", error = %error)
            }
        }
        cache.set_live(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The host services of one call: the function's namespace, the invocation's publish
/// sequence, its deadline and what it used.
pub struct CallServices {
    services: Arc<HostServices>,
    function: String,
    invocation_id: String,
    traceparent: String,
    deadline: Instant,
    published: u32,
    usage: KvUsage,
    span: tracing::Span,
    /// Where `stream_write` sends the call's chunks (none outside a job's attempt).
    stream: Option<crate::stream::StreamSlot>,
}

impl CallServices {
    /// These services with the attempt's stream, for `stream_write`.
    pub fn with_stream(mut self, slot: crate::stream::StreamSlot) -> CallServices {
        self.stream = Some(slot);
        self
    }

    /// What the call used of its state.
    pub fn usage(&self) -> KvUsage {
        self.usage
    }

    fn span(&self, name: &'static str) -> tracing::Span {
        if self.span.is_disabled() {
            return tracing::Span::none();
        }
        tracing::info_span!(parent: &self.span, "squall.host", otel.name = name, squall.outcome = tracing::field::Empty)
    }

    fn run<T>(
        &mut self,
        name: &'static str,
        call: impl FnOnce(
            &HostServices,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, HostFailure>> + Send + '_>,
        >,
    ) -> Result<T, HostFailure> {
        let services = self.services.clone();
        self.blocking(name, call(&services))
    }

    /// Runs `future` on the worker's runtime within the call's bounds, in a `squall.host` span
    /// named `name` that records the outcome; running out of time is `Unavailable`.
    fn blocking<T>(
        &self,
        name: &'static str,
        future: impl std::future::Future<Output = Result<T, HostFailure>>,
    ) -> Result<T, HostFailure> {
        let span = self.span(name);
        let _entered = span.enter();
        let result = self
            .services
            .block(self.deadline, future)
            .unwrap_or(Err(HostFailure::Unavailable));
        span.record(
            "squall.outcome",
            match &result {
                Ok(_) => "ok",
                Err(failure) => failure.as_str(),
            },
        );
        result
    }
}

impl HostCalls for CallServices {
    fn stream_write(&mut self, chunk: &[u8]) -> Result<(), HostFailure> {
        let Some(slot) = self.stream.clone() else {
            return Err(HostFailure::Invalid);
        };
        let mut guard = slot.lock().map_err(|_| HostFailure::Unavailable)?;
        let Some(stream) = guard.as_mut() else {
            // The attempt already took its stream back (the call was abandoned).
            return Err(HostFailure::Invalid);
        };
        if stream.is_broken() {
            return Err(HostFailure::Unavailable);
        }
        let chunk = Bytes::copy_from_slice(chunk);
        let written = self.blocking("squall.host.stream_write", async {
            stream.write(chunk).await.map_err(|error| match error {
                PayloadError::TooLarge { .. } => HostFailure::TooLarge,
                other => {
                    stream.break_with(format!("cannot store a streamed chunk: {other}"));
                    HostFailure::Unavailable
                }
            })
        });
        // Out of time (or failed): what reached the store is unknown, so the stream ends here.
        if written == Err(HostFailure::Unavailable) {
            stream.break_with("storing a streamed chunk ran out of time".into());
        }
        written
    }

    fn cancelled(&mut self) -> Result<bool, HostFailure> {
        let cancels = &self.services.cancels;
        if cancels.contains(&self.invocation_id) {
            return Ok(true);
        }
        if cancels.is_live() {
            return Ok(false);
        }
        // The watch is not caught up: ask the bucket, within the call's bounds.
        let id = self.invocation_id.clone();
        self.run("squall.host.cancelled", |s| {
            Box::pin(async move { Ok(s.cancels.is_cancelled(&id).await) })
        })
    }

    fn kv_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, HostFailure> {
        let key = namespaced(&self.function, check_key(key)?);
        let found = self.run("squall.host.kv_get", |s| {
            Box::pin(async move { s.get(&key).await })
        })?;
        self.usage.ops += 1;
        self.usage.bytes += found.as_ref().map_or(0, |v| v.len() as u64);
        Ok(found.map(|v| v.to_vec()))
    }

    fn kv_put(&mut self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<(), HostFailure> {
        let key = namespaced(&self.function, check_key(key)?);
        if value.len() > STATE_MAX_VALUE {
            return Err(HostFailure::TooLarge);
        }
        let ttl = (ttl_ms > 0).then(|| ttl_seconds(ttl_ms));
        let value = Bytes::copy_from_slice(value);
        let size = value.len() as u64;
        self.run("squall.host.kv_put", |s| {
            Box::pin(async move { s.put(&key, value, ttl).await })
        })?;
        self.usage.ops += 1;
        self.usage.bytes += size;
        Ok(())
    }

    fn kv_delete(&mut self, key: &[u8]) -> Result<(), HostFailure> {
        let key = namespaced(&self.function, check_key(key)?);
        self.run("squall.host.kv_delete", |s| {
            Box::pin(async move { s.delete(&key).await })
        })?;
        self.usage.ops += 1;
        Ok(())
    }

    fn publish(&mut self, subject: &[u8], payload: &[u8]) -> Result<(), HostFailure> {
        let subject = check_subject(subject)?.to_string();
        if payload.len() > MAX_PUBLISH {
            return Err(HostFailure::TooLarge);
        }
        let msg_id = publish_id(&self.invocation_id, self.published);
        self.published += 1;
        let payload = Bytes::copy_from_slice(payload);
        let traceparent = self.traceparent.clone();
        self.run("squall.host.publish", |s| {
            Box::pin(async move { s.publish(&subject, &msg_id, &traceparent, payload).await })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_abi_rule() {
        assert_eq!(check_key(b"counter"), Ok("counter"));
        assert_eq!(check_key(b"user/42.name=x_y-z"), Ok("user/42.name=x_y-z"));
        assert_eq!(check_key(b""), Err(HostFailure::Invalid));
        assert_eq!(check_key(b".a"), Err(HostFailure::Invalid));
        assert_eq!(check_key(b"a."), Err(HostFailure::Invalid));
        assert_eq!(check_key(b"a..b"), Err(HostFailure::Invalid));
        assert_eq!(check_key(b"a b"), Err(HostFailure::Invalid));
        assert_eq!(check_key(b"a*"), Err(HostFailure::Invalid));
        assert_eq!(check_key(b"\xff"), Err(HostFailure::Invalid));
        assert!(check_key(&[b'k'; 256]).is_ok());
        assert_eq!(check_key(&[b'k'; 257]), Err(HostFailure::TooLarge));
    }

    #[test]
    fn only_literal_subjects_under_events_may_be_published() {
        assert_eq!(
            check_subject(b"events.orders.created"),
            Ok("events.orders.created")
        );
        assert_eq!(check_subject(b"jobs.hello"), Err(HostFailure::Denied));
        assert_eq!(check_subject(b"eventsx.a"), Err(HostFailure::Denied));
        assert_eq!(check_subject(b"results.a.b"), Err(HostFailure::Denied));
        assert_eq!(check_subject(b"events."), Err(HostFailure::Invalid));
        assert_eq!(check_subject(b"events.a..b"), Err(HostFailure::Invalid));
        assert_eq!(check_subject(b"events.*"), Err(HostFailure::Invalid));
        assert_eq!(check_subject(b"events.>"), Err(HostFailure::Invalid));
        assert_eq!(check_subject(b"events.a b"), Err(HostFailure::Invalid));
        let long = format!("events.{}", "x".repeat(250));
        assert_eq!(check_subject(long.as_bytes()), Err(HostFailure::Invalid));
    }

    #[test]
    fn namespaces_of_two_functions_never_overlap() {
        // Function names have no '.', so the first token is always the function.
        assert_ne!(namespaced("a", "b.c"), namespaced("a-b", "c"));
        assert_eq!(namespaced("f", "k"), "f.k");
    }

    #[test]
    fn publish_ids_depend_on_the_invocation_and_the_index_only() {
        assert_eq!(publish_id("inv-1", 0), publish_id("inv-1", 0));
        assert_ne!(publish_id("inv-1", 0), publish_id("inv-1", 1));
        assert_ne!(publish_id("inv-1", 0), publish_id("inv-2", 0));
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(1), 1);
        assert_eq!(ttl_seconds(1000), 1);
        assert_eq!(ttl_seconds(1001), 2);
        assert_eq!(parse_ttl("10"), Some(10));
        assert_eq!(parse_ttl("10s"), Some(10));
        assert_eq!(parse_ttl("1500ms"), Some(2));
        assert_eq!(parse_ttl("never"), None);
    }

    fn live_cache() -> Cache {
        let cache = Cache::default();
        cache.set_live(true);
        cache
    }

    #[test]
    fn a_cache_without_its_watch_serves_nothing() {
        let cache = Cache::default();
        cache.wrote("f.k", Some(Bytes::from_static(b"v")), 1, None);
        assert_eq!(cache.lookup("f.k", Instant::now()), Lookup::Miss);
    }

    #[test]
    fn a_worker_reads_its_own_writes_from_the_cache() {
        let cache = live_cache();
        cache.wrote("f.k", Some(Bytes::from_static(b"v")), 3, None);
        let hit = cache.lookup("f.k", Instant::now());
        assert_eq!(hit, Lookup::Hit(Some(Bytes::from_static(b"v"))));
        cache.wrote("f.k", None, 4, None);
        assert_eq!(cache.lookup("f.k", Instant::now()), Lookup::Hit(None));
    }

    #[test]
    fn a_newer_change_on_the_watch_evicts_the_cached_value() {
        let cache = live_cache();
        cache.wrote("f.k", Some(Bytes::from_static(b"v")), 3, None);
        cache.changed("f.k", 3);
        assert!(matches!(
            cache.lookup("f.k", Instant::now()),
            Lookup::Hit(_)
        ));
        cache.changed("f.k", 4);
        assert_eq!(cache.lookup("f.k", Instant::now()), Lookup::Miss);
    }

    #[test]
    fn a_fetch_that_raced_a_change_is_not_cached() {
        let cache = live_cache();
        let now = Instant::now();
        assert_eq!(cache.lookup("f.k", now), Lookup::Miss);
        cache.changed("f.k", 9);
        cache.settle_fetch("f.k", Some(Bytes::from_static(b"old")), 8, None, now);
        assert_eq!(cache.lookup("f.k", now), Lookup::Miss);
        cache.settle_fetch("f.k", Some(Bytes::from_static(b"new")), 9, None, now);
        assert_eq!(
            cache.lookup("f.k", now),
            Lookup::Hit(Some(Bytes::from_static(b"new")))
        );
    }

    #[test]
    fn an_expired_value_is_fetched_again() {
        let cache = live_cache();
        let now = Instant::now();
        cache.wrote("f.k", Some(Bytes::from_static(b"v")), 1, Some(now));
        assert_eq!(
            cache.lookup("f.k", now + Duration::from_millis(1)),
            Lookup::Miss
        );
    }

    #[test]
    fn losing_the_watch_forgets_everything() {
        let cache = live_cache();
        cache.wrote("f.k", Some(Bytes::from_static(b"v")), 1, None);
        cache.set_live(false);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_forgets_its_least_recently_used_half() {
        let cache = live_cache();
        for i in 0..CACHE_CAPACITY + 1 {
            cache.wrote(&format!("f.{i}"), None, 1, None);
        }
        assert!(cache.len() <= CACHE_CAPACITY / 2 + 2, "{}", cache.len());
    }
}
