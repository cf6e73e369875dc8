//! Pulls a function's jobs and runs each one: call, publish the result, then ack or nak.

use crate::decide::{decide, Attempt, Decision};
use crate::loader::{CallContext, LogCapture};
use crate::{FunctionState, Worker};
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use squall_broker::names::{consumer_name, results_subject};
use squall_broker::record::{LogLine, ResultMeta};
use squall_broker::{headers as h, ErrorKind, InvocationStatus};
use squall_sdk::abi;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;

/// How often publishing a result is tried before the job is left for redelivery.
const PUBLISH_TRIES: u32 = 5;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serves `function` until the task is aborted: re-subscribes after any consumer error.
pub async fn serve_function(worker: Arc<Worker>, function: String) {
    loop {
        if let Err(error) = pull_jobs(&worker, &function).await {
            tracing::warn!(message = "job consumer failed; resubscribing", function = %function, error = %error);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn pull_jobs(worker: &Arc<Worker>, function: &str) -> anyhow::Result<()> {
    let Some(state) = worker.function(function) else {
        return Ok(());
    };
    let jobs = &worker.topology.jobs;
    let consumer: jetstream::consumer::PullConsumer = match jobs
        .get_consumer(&consumer_name(function))
        .await
    {
        Ok(consumer) => consumer,
        // The dispatcher creates the consumer at deploy; create it from the record if a
        // worker races ahead of that.
        Err(_) => squall_broker::ensure_function_consumer(jobs, function, &state.spec, 1).await?,
    };
    let concurrency = state.spec.concurrency as usize;
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency.clamp(1, 256))
        .messages()
        .await?;
    loop {
        let permit = limit.clone().acquire_owned().await?;
        let Some(message) = messages.next().await else {
            anyhow::bail!("job stream ended");
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(message = "transient pull error", function = %function, error = %error);
                continue;
            }
        };
        let in_flight = worker.in_flight.clone().acquire_owned().await?;
        let worker = worker.clone();
        tokio::spawn(async move {
            run_job(&worker, message, permit).await;
            drop(in_flight);
        });
    }
}

/// The identity and timing of a job, read from its headers or derived from its delivery.
struct JobMeta {
    invocation_id: String,
    function: String,
    attempt: u32,
    created_at_ms: u64,
    traceparent: String,
    event: Vec<u8>,
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|hs| hs.get(name)).map(|v| v.as_str())
}

/// A stable UUIDv7 for a job that a plain NATS client published without an id: the time part
/// is the stream's receive time and the rest is the stream sequence, so every redelivery of the
/// same message gets the same id.
fn derived_invocation_id(published_ms: u64, stream_sequence: u64) -> String {
    let mut tail = [0u8; 10];
    tail[2..].copy_from_slice(&stream_sequence.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(published_ms, &tail)
        .into_uuid()
        .to_string()
}

fn job_meta(message: &jetstream::Message) -> JobMeta {
    let headers = message.headers.as_ref();
    let (attempt, published_ms, sequence) = match message.info() {
        Ok(info) => (
            info.delivered.max(1) as u32,
            (info.published.unix_timestamp_nanos() / 1_000_000) as u64,
            info.stream_sequence,
        ),
        Err(_) => (1, now_ms(), 0),
    };
    let invocation_id = header(headers, h::INVOCATION_ID)
        .map(str::to_string)
        .unwrap_or_else(|| derived_invocation_id(published_ms, sequence));
    let created_at_ms = header(headers, h::CREATED_AT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(published_ms);
    let source = header(headers, h::SOURCE).unwrap_or("nats");
    let mut user_headers = serde_json::Map::new();
    if let Some(hs) = headers {
        for (name, values) in hs.iter() {
            let name = name.to_string();
            if name.starts_with("Squall-") || name.starts_with("Nats-") {
                continue;
            }
            if let Some(value) = values.first() {
                user_headers.insert(name, value.as_str().into());
            }
        }
    }
    let event = serde_json::json!({
        "source": source,
        "subject": message.subject.as_str(),
        "headers": user_headers,
    });
    let function = message
        .subject
        .as_str()
        .strip_prefix("jobs.")
        .unwrap_or_default()
        .to_string();
    JobMeta {
        invocation_id,
        function,
        attempt,
        created_at_ms,
        traceparent: header(headers, h::TRACEPARENT)
            .unwrap_or_default()
            .to_string(),
        event: event.to_string().into_bytes(),
    }
}

fn level_name(level: u32) -> &'static str {
    match level {
        abi::LOG_ERROR => "error",
        abi::LOG_WARN => "warn",
        abi::LOG_INFO => "info",
        abi::LOG_DEBUG => "debug",
        _ => "trace",
    }
}

/// Runs the function on the blocking pool and classifies what happened.
async fn attempt(
    worker: &Worker,
    state: &Arc<FunctionState>,
    job: &JobMeta,
    input: bytes::Bytes,
) -> (Attempt, Vec<LogLine>, u64) {
    let library = match &state.library {
        Ok(library) => library.clone(),
        Err(error) => {
            let failed = Attempt::Failed {
                kind: ErrorKind::Load,
                message: format!(
                    "function {} version {} failed to load: {error}",
                    state.record.name, state.record.version
                ),
                retry_after_ms: 0,
            };
            return (failed, Vec::new(), 0);
        }
    };
    let state = state.clone();
    let budget = worker.config.log_capture_bytes;
    let invocation_id = job.invocation_id.clone();
    let traceparent = job.traceparent.clone();
    let event = job.event.clone();
    let attempt_no = job.attempt;
    let deadline = now_ms() + state.spec.timeout_ms;
    let call = tokio::task::spawn_blocking(move || {
        let mut logs = LogCapture::new(budget);
        let cx = CallContext {
            function: &state.record.name,
            invocation_id: &invocation_id,
            traceparent: &traceparent,
            config: state.record.config_json.as_bytes(),
            event: &event,
            attempt: attempt_no,
            deadline_unix_ms: deadline,
        };
        let started = std::time::Instant::now();
        let result = library.call(&cx, &input, &mut logs);
        (result, logs, started.elapsed().as_micros() as u64)
    })
    .await;
    let (result, logs, duration_us) = match call {
        Ok(done) => done,
        Err(error) => {
            let failed = Attempt::Failed {
                kind: ErrorKind::Crash,
                message: format!("function call did not complete: {error}"),
                retry_after_ms: 0,
            };
            return (failed, Vec::new(), 0);
        }
    };
    let lines = logs
        .lines
        .into_iter()
        .map(|l| LogLine {
            level: level_name(l.level).to_string(),
            message: l.message,
        })
        .collect();
    let message = || String::from_utf8_lossy(&result.body).into_owned();
    let outcome = match result.status {
        abi::SQUALL_OK => Attempt::Succeeded(result.body),
        abi::SQUALL_ERROR => Attempt::Failed {
            kind: ErrorKind::Error,
            message: message(),
            retry_after_ms: 0,
        },
        abi::SQUALL_RETRY => Attempt::Failed {
            kind: ErrorKind::Retry,
            message: message(),
            retry_after_ms: result.retry_after_ms,
        },
        abi::SQUALL_PANIC => Attempt::Failed {
            kind: ErrorKind::Panic,
            message: message(),
            retry_after_ms: 0,
        },
        other => Attempt::Failed {
            kind: ErrorKind::Error,
            message: format!("function returned unknown status {other}: {}", message()),
            retry_after_ms: 0,
        },
    };
    (outcome, lines, duration_us)
}

async fn run_job(worker: &Worker, message: jetstream::Message, _permit: OwnedSemaphorePermit) {
    let job = job_meta(&message);
    let Some(state) = worker.function(&job.function) else {
        // Deleted while the job was buffered: leave it for whoever serves the function next.
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    };
    let started_at_ms = now_ms();
    let (outcome, logs, duration_us) = attempt(worker, &state, &job, message.payload.clone()).await;
    let jitter = (job.invocation_id.bytes().fold(job.attempt as u64, |a, b| {
        a.wrapping_mul(31).wrapping_add(b as u64)
    }) % 1000) as f64
        / 1000.0;
    let decision = decide(
        &outcome,
        job.attempt,
        state.spec.max_attempts,
        &state.spec.backoff,
        jitter,
    );
    for line in &logs {
        tracing::info!(message = "function log", function = %job.function, invocation_id = %job.invocation_id, level = %line.level, text = %line.message);
    }
    let (status, kind, body) = match (&decision, outcome) {
        (Decision::Finish(status), Attempt::Succeeded(output)) => (*status, None, output),
        (Decision::Finish(status), Attempt::Failed { kind, message, .. }) => {
            (*status, Some(kind), message.into_bytes())
        }
        (Decision::Retry { .. }, Attempt::Failed { kind, message, .. }) => {
            (InvocationStatus::Retrying, Some(kind), message.into_bytes())
        }
        (Decision::Retry { .. }, Attempt::Succeeded(output)) => {
            (InvocationStatus::Succeeded, None, output)
        }
    };
    let meta = ResultMeta {
        invocation_id: job.invocation_id.clone(),
        function: job.function.clone(),
        version: state.record.version.clone(),
        status,
        attempt: job.attempt,
        error_kind: kind,
        created_at_ms: job.created_at_ms,
        started_at_ms,
        finished_at_ms: now_ms(),
        duration_us,
        logs,
        worker: worker.id.clone(),
    };
    if let Err(error) = publish_result(&worker.topology.jetstream, &meta, body).await {
        // Without a recorded outcome the job must run again rather than vanish.
        tracing::warn!(message = "cannot publish result; job left for redelivery",
            function = %job.function, invocation_id = %job.invocation_id, error = %error);
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    }
    let ack = match decision {
        Decision::Finish(_) => message.ack().await,
        Decision::Retry { delay } => message.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(error) = ack {
        tracing::warn!(message = "cannot acknowledge job; it may run again",
            function = %job.function, invocation_id = %job.invocation_id, error = %error);
    }
    tracing::debug!(message = "job done", function = %job.function, invocation_id = %job.invocation_id,
        status = status.as_str(), attempt = job.attempt, duration_us);
}

async fn publish_result(
    js: &jetstream::Context,
    meta: &ResultMeta,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let subject = results_subject(&meta.function, &meta.invocation_id);
    let headers = meta.to_headers();
    let body = bytes::Bytes::from(body);
    let mut last_error = None;
    for try_no in 0..PUBLISH_TRIES {
        let published = async {
            js.publish_with_headers(subject.clone(), headers.clone(), body.clone())
                .await?
                .await?;
            anyhow::Ok(())
        };
        match published.await {
            Ok(()) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100 << try_no)).await;
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("result not published")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_time_ordered() {
        let a = derived_invocation_id(1_700_000_000_000, 7);
        assert_eq!(a, derived_invocation_id(1_700_000_000_000, 7));
        let b = derived_invocation_id(1_700_000_000_001, 1);
        assert!(a < b);
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 7);
    }
}
