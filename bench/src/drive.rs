//! Load generators shared by the bare and the Squall measurements: pipelined throughput (submit
//! N jobs, count N results) and round trips (one request at a time per client).

use crate::bare;
use anyhow::{bail, Context as _};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// JetStream publish acknowledgements are awaited in windows of this many jobs.
pub const ACK_WINDOW: usize = 1000;
/// The longest a single round trip may take before the measurement fails.
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(30);

/// A connection to the benchmark's nats-server.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// How jobs are submitted in a throughput measurement.
pub enum Submit {
    /// JetStream publishes to `subject`, acks awaited in windows of `ACK_WINDOW`: what a plain
    /// NATS client of Squall does, and what the bare reference does.
    JetStream { subject: String },
    /// JetStream publishes as above, to each of `subjects` in turn (job `i` to subject
    /// `i % subjects.len()`): the same work spread over several functions.
    JetStreamSpread { subjects: Vec<String> },
    /// `POST …/invocations?async=true` from `submitters` concurrent HTTP clients.
    Http {
        http: reqwest::Client,
        url: String,
        submitters: usize,
    },
    /// `POST …/batch` of NDJSON bodies of up to `lines` copies of `line` (one JSON input, no
    /// newline), from `submitters` concurrent HTTP clients.
    HttpBatch {
        http: reqwest::Client,
        url: String,
        submitters: usize,
        lines: usize,
        line: Bytes,
    },
}

/// The dispatcher answered the first batch with 404 or 405: it has no batch endpoint, so the
/// batch measurement is skipped rather than failed.
#[derive(Debug)]
pub struct NoBatchEndpoint(pub reqwest::StatusCode);

impl std::fmt::Display for NoBatchEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the dispatcher has no batch endpoint ({})", self.0)
    }
}

impl std::error::Error for NoBatchEndpoint {}

/// Which result messages count as a completed invocation.
#[derive(Debug, Clone, Copy)]
pub enum Completion {
    /// Every message on the results subject.
    Any,
    /// Only Squall results with `Squall-Status: succeeded`.
    Succeeded,
}

impl Completion {
    fn counts(self, message: &async_nats::Message) -> bool {
        match self {
            Completion::Any => true,
            Completion::Succeeded => message
                .headers
                .as_ref()
                .and_then(|h| h.get(squall_broker::headers::STATUS))
                .is_some_and(|v| v.as_str() == "succeeded"),
        }
    }
}

/// The outcome of one throughput measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Completed invocations per second, first submit to last result.
    pub per_second: f64,
    /// First submit to last accepted submit.
    pub submitted_in: Duration,
}

/// Submits `n` jobs and waits until `n` results arrived on `results` (a core subscription,
/// made before the first submit).
pub async fn throughput(
    nats: &Nats,
    results: &str,
    completion: Completion,
    submit: &Submit,
    n: usize,
    payload: &Bytes,
    limit: Duration,
) -> anyhow::Result<Throughput> {
    let mut subscription = nats.client.subscribe(results.to_string()).await?;
    nats.client.flush().await?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + limit);
    let observer = tokio::spawn(async move {
        let mut seen = 0usize;
        while seen < n {
            match tokio::time::timeout_at(deadline, subscription.next()).await {
                Ok(Some(message)) => {
                    if completion.counts(&message) {
                        seen += 1;
                    }
                }
                Ok(None) => bail!("the result subscription ended after {seen} of {n} results"),
                Err(_) => bail!("only {seen} of {n} results arrived within {limit:?}"),
            }
        }
        Ok(started.elapsed())
    });
    let submitted = match submit {
        Submit::JetStream { subject } => {
            publish_windowed(&nats.js, std::slice::from_ref(subject), payload, n).await
        }
        Submit::JetStreamSpread { subjects } => {
            publish_windowed(&nats.js, subjects, payload, n).await
        }
        Submit::Http {
            http,
            url,
            submitters,
        } => post_async(http, url, *submitters, payload, n, deadline).await,
        Submit::HttpBatch {
            http,
            url,
            submitters,
            lines,
            line,
        } => post_batches(http, url, *submitters, line, *lines, n, deadline).await,
    };
    let submitted_in = started.elapsed();
    if let Err(error) = submitted {
        observer.abort();
        return Err(error);
    }
    let elapsed = observer.await.context("the result observer panicked")??;
    Ok(Throughput {
        per_second: n as f64 / elapsed.as_secs_f64(),
        submitted_in,
    })
}

/// Publishes `n` jobs to `subjects` in turn, awaiting JetStream's acks in windows.
async fn publish_windowed(
    js: &jetstream::Context,
    subjects: &[String],
    payload: &Bytes,
    n: usize,
) -> anyhow::Result<()> {
    if subjects.is_empty() {
        bail!("no subject to publish jobs to");
    }
    let mut acks = Vec::with_capacity(ACK_WINDOW);
    for subject in subjects.iter().cycle().take(n) {
        let ack = js
            .publish(subject.clone(), payload.clone())
            .await
            .context("cannot publish a job")?;
        acks.push(ack);
        if acks.len() == ACK_WINDOW {
            for ack in acks.drain(..) {
                ack.await.context("JetStream did not accept a job")?;
            }
        }
    }
    for ack in acks {
        ack.await.context("JetStream did not accept a job")?;
    }
    Ok(())
}

/// Posts `n` asynchronous invocations from `submitters` concurrent clients; each must get 202.
async fn post_async(
    http: &reqwest::Client,
    url: &str,
    submitters: usize,
    payload: &Bytes,
    n: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..submitters.max(1) {
        let (http, url, payload, next) =
            (http.clone(), url.to_string(), payload.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if tokio::time::Instant::now() > deadline {
                    bail!("submitting took longer than the measurement's limit");
                }
                let response = http
                    .post(&url)
                    .body(payload.clone())
                    .send()
                    .await
                    .context("async invoke request failed")?;
                let status = response.status();
                let body = response.bytes().await?;
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!(
                        "async invoke answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a submitter panicked")??;
    }
    Ok(())
}

/// An NDJSON body of `lines` copies of `line`.
pub fn ndjson(line: &[u8], lines: usize) -> Bytes {
    let mut body = Vec::with_capacity((line.len() + 1) * lines);
    for _ in 0..lines {
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    Bytes::from(body)
}

/// Posts `n` invocations as batches of at most `lines` from `submitters` concurrent clients;
/// each batch must get 202 with one invocation id per line. A 404 or 405 is
/// [`NoBatchEndpoint`].
async fn post_batches(
    http: &reqwest::Client,
    url: &str,
    submitters: usize,
    line: &Bytes,
    lines: usize,
    n: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let lines = lines.max(1);
    let batches = n.div_ceil(lines);
    // Every batch but the last is full: build that body once and share it.
    let full = ndjson(line, lines);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..submitters.max(1) {
        let (http, url, full, line, next) = (
            http.clone(),
            url.to_string(),
            full.clone(),
            line.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("submitting took longer than the measurement's limit");
                }
                let count = lines.min(n - batch * lines);
                let body = if count == lines {
                    full.clone()
                } else {
                    ndjson(&line, count)
                };
                let response = http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .context("batch request failed")?;
                let status = response.status();
                let body = response.bytes().await?;
                if matches!(
                    status,
                    reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED
                ) {
                    return Err(NoBatchEndpoint(status).into());
                }
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!(
                        "batch of {count} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let ids = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["invocation_ids"].as_array().map(Vec::len));
                if ids != Some(count) {
                    bail!(
                        "batch of {count} answered 202 without {count} invocation ids: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        });
    }
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done.context("a submitter panicked").and_then(|r| r) {
            // A missing endpoint is what every submitter sees; keep that one over the others.
            if failure.is_none() || error.is::<NoBatchEndpoint>() {
                failure = Some(error);
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Distinguishes bare job ids across measurements, so a late result cannot match a new waiter.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Bare round trips: `clients` concurrent clients each publish a job, wait for its result (via
/// one wildcard subscription, as Squall's dispatcher does) and repeat, `per_client` times.
pub async fn bare_round_trips(
    nats: &Nats,
    clients: usize,
    per_client: usize,
    payload: &Bytes,
) -> anyhow::Result<Vec<Duration>> {
    type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;
    let waiters: Waiters = Arc::default();
    let mut subscription = nats
        .client
        .subscribe(format!("{}.>", bare::RESULTS_PREFIX))
        .await?;
    nats.client.flush().await?;
    let router = {
        let waiters = waiters.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let id = message
                    .subject
                    .as_str()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default();
                if let Some(waiter) = waiters.lock().expect("waiters lock").remove(id) {
                    let _ = waiter.send(());
                }
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (js, payload, waiters) = (nats.js.clone(), payload.clone(), waiters.clone());
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let id = format!("rt{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
                let (sender, receiver) = oneshot::channel();
                waiters
                    .lock()
                    .expect("waiters lock")
                    .insert(id.clone(), sender);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(bare::ID_HEADER, id.as_str());
                let started = Instant::now();
                js.publish_with_headers(bare::JOBS_SUBJECT, headers, payload.clone())
                    .await?
                    .await
                    .context("JetStream did not accept a bare job")?;
                tokio::time::timeout(ROUND_TRIP_LIMIT, receiver)
                    .await
                    .context("a bare result did not arrive")?
                    .context("the result router stopped")?;
                samples.push(started.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    let mut samples = Vec::with_capacity(clients * per_client);
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        match done.context("a client panicked").and_then(|r| r) {
            Ok(mut s) => samples.append(&mut s),
            Err(error) => failure = Some(error),
        }
    }
    router.abort();
    match failure {
        Some(error) => Err(error),
        None => Ok(samples),
    }
}

/// Squall round trips over HTTP: `clients` concurrent clients each `POST` a synchronous
/// invocation, read the whole answer (which must be 200) and repeat, `per_client` times.
pub async fn http_round_trips(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    per_client: usize,
    payload: &Bytes,
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (http, url, payload) = (http.clone(), url.to_string(), payload.clone());
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let started = Instant::now();
                let response = tokio::time::timeout(
                    ROUND_TRIP_LIMIT,
                    http.post(&url).body(payload.clone()).send(),
                )
                .await
                .context("a synchronous invoke timed out")?
                .context("synchronous invoke request failed")?;
                let status = response.status();
                let body = response.bytes().await?;
                if status != reqwest::StatusCode::OK {
                    bail!(
                        "synchronous invoke answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                samples.push(started.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    let mut samples = Vec::with_capacity(clients * per_client);
    while let Some(done) = tasks.join_next().await {
        samples.append(&mut done.context("a client panicked")??);
    }
    Ok(samples)
}

/// Times `count` sequential runs of `step`, for the probes that split a round trip into parts.
pub async fn probe<F, Fut>(count: usize, mut step: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        tokio::time::timeout(ROUND_TRIP_LIMIT, step())
            .await
            .context("a probe timed out")??;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Waits until a consumer has nothing pending and nothing unacknowledged, so one measurement
/// never inherits another's work.
pub async fn quiesce(nats: &Nats, stream: &str, consumer: &str) -> anyhow::Result<()> {
    let stream_handle = nats.js.get_stream(stream).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream_handle.consumer_info(consumer).await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "consumer {consumer} still has {} pending and {} unacknowledged jobs",
                info.num_pending,
                info.num_ack_pending
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Empties a results stream between measurements, so every run starts from the same state.
pub async fn purge(nats: &Nats, stream: &str) -> anyhow::Result<()> {
    nats.js
        .get_stream(stream)
        .await?
        .purge()
        .await
        .with_context(|| format!("cannot purge stream {stream}"))?;
    Ok(())
}
