//! Pulls a function's jobs and runs each attempt in two steps: execute the function, then
//! settle the outcome (publish the result, dead-letter, then ack or nak).

use crate::decide::{decide, jitter_unit, Attempt, JobAction, Settlement};
use crate::executor::Executor;
use crate::loader::{CallContext, LogCapture};
use crate::metrics::FunctionMetrics;
use crate::{FunctionState, Worker};
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use sha2::Digest as _;
use squall_broker::dlq::{self, DeadLetter};
use squall_broker::names::{consumer_name, results_subject};
use squall_broker::record::{LogLevel, LogLine, ResultMeta};
use squall_broker::time::now_ms;
use squall_broker::{headers as h, publish, ErrorKind, InvocationStatus};
use squall_telemetry::KeyValue;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

/// How long storing a result may keep trying before the job is left for redelivery: a
/// leader election of RESULTS, with the job kept alive by progress signals meanwhile.
const RESULT_PUBLISH: publish::PublishPolicy = publish::PublishPolicy {
    budget: Duration::from_secs(30),
    ack_timeout: publish::ACK_TIMEOUT,
};

/// Serves `function` until the task is aborted or the worker stops: re-subscribes after any
/// consumer error.
pub async fn serve_function(worker: Arc<Worker>, function: String) {
    let mut stopping = worker.stopping();
    while !*stopping.borrow() {
        if let Err(error) = pull_jobs(&worker, &function).await {
            tracing::warn!(message = "job consumer failed; resubscribing", function = %function, error = %error);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Most jobs asked for in one pull request.
const MAX_BATCH: usize = 256;
/// How long one pull request waits for jobs before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Pulls only as many jobs as there are free slots, so that no job waits in this process
/// unstarted (where it could outlive its ack deadline and run twice).
async fn pull_jobs(worker: &Arc<Worker>, function: &str) -> anyhow::Result<()> {
    let Some(state) = worker.function(function) else {
        return Ok(());
    };
    let consumer: jetstream::consumer::PullConsumer = worker
        .topology
        .jobs
        .get_consumer(&consumer_name(function))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open consumer {}: {e}", consumer_name(function)))?;
    let progress_every =
        (consumer.cached_info().config.ack_wait / 3).max(Duration::from_millis(100));
    let limit = Arc::new(tokio::sync::Semaphore::new(state.spec.concurrency as usize));
    let serving = Arc::new(Serving {
        executor: Executor::new(function, state.spec.concurrency as usize),
        progress_every,
        metrics: worker.metrics.function(function),
    });
    let mut stopping = worker.stopping();
    loop {
        let first = tokio::select! {
            permit = limit.clone().acquire_owned() => permit?,
            _ = stopping.changed() => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match limit.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let mut batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await?;
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = stopping.changed() => return Ok(()),
            };
            let Some(message) = next else { break };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::debug!(message = "transient pull error", function = %function, error = %error);
                    break;
                }
            };
            let Some(permit) = permits.pop() else {
                // The server never sends more than asked; hand back anything extra.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            let in_flight = worker.in_flight.clone().acquire_owned().await?;
            let worker = worker.clone();
            let serving = serving.clone();
            tokio::spawn(async move {
                run_job(&worker, &serving, message, permit).await;
                drop(in_flight);
            });
        }
    }
}

/// What a function's pull loop shares with its jobs.
struct Serving {
    /// The function's call threads, at most its concurrency.
    executor: Executor,
    /// How often a running job's progress is acknowledged.
    progress_every: Duration,
    /// The function's metric series.
    metrics: FunctionMetrics,
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
    let invocation_id =
        squall_broker::record::job_invocation_id(|name| header(headers, name).map(str::to_string))
            .unwrap_or_else(|| {
                squall_broker::record::derived_invocation_id(published_ms, sequence)
            });
    let created_at_ms = header(headers, h::CREATED_AT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(published_ms);
    let source = header(headers, h::SOURCE).unwrap_or("nats");
    let mut user_headers = serde_json::Map::new();
    if let Some(hs) = headers {
        for (name, values) in hs.iter() {
            let name = name.to_string();
            if squall_broker::headers::is_reserved(&name) {
                continue;
            }
            if let Some(value) = values.first() {
                user_headers.insert(name, value.as_str().into());
            }
        }
    }
    let mut event = serde_json::json!({
        "source": source,
        "subject": header(headers, h::EVENT_SUBJECT).unwrap_or(message.subject.as_str()),
        "headers": user_headers,
    });
    // A web request's event is the request itself (its headers are the HTTP request's).
    if let Some(web) = web_event(source, header(headers, h::WEB)) {
        event = web;
    }
    // A CloudEvent's attributes, when the job was made from one.
    if let Some(attributes) = header(headers, h::CLOUDEVENT)
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    {
        event["cloudevent"] = attributes;
    }
    // What made the job: a schedule, a trigger, a key-value change.
    for (name, field) in [
        (h::SCHEDULE, "schedule"),
        (h::TRIGGER, "trigger"),
        (h::KV_BUCKET, "bucket"),
        (h::KV_KEY, "key"),
        (h::KV_OP, "op"),
    ] {
        if let Some(value) = header(headers, name) {
            event[field] = value.into();
        }
    }
    let function = message
        .subject
        .as_str()
        .strip_prefix("jobs.")
        .unwrap_or_default()
        .to_string();
    JobMeta {
        function,
        attempt,
        created_at_ms,
        traceparent: header(headers, h::TRACEPARENT)
            .filter(|t| squall_telemetry::context_is_valid(t))
            .map(str::to_string)
            .unwrap_or_else(|| derived_traceparent(&invocation_id)),
        invocation_id,
        event: event.to_string().into_bytes(),
    }
}

/// The event of a job made from a web request: `Squall-Source: web` with a readable
/// `Squall-Web` header.
fn web_event(source: &str, web: Option<&str>) -> Option<serde_json::Value> {
    if source != "web" {
        return None;
    }
    web.and_then(squall_broker::web::WebRequest::from_header)
        .map(|request| request.event())
}

/// A trace context for a job published without one, derived from its invocation id so that
/// every attempt of the invocation lands in the same trace.
fn derived_traceparent(invocation_id: &str) -> String {
    let digest = sha2::Sha256::digest(invocation_id.as_bytes());
    let hex = hex::encode(digest);
    format!("00-{}-{}-01", &hex[..32], &hex[32..48])
}

/// What executing an attempt produced: its outcome, the function's log lines and its timing.
struct Execution {
    outcome: Attempt,
    logs: Vec<LogLine>,
    timing: Timing,
}

impl Execution {
    /// An attempt that ended before the function returned anything.
    fn failed(kind: ErrorKind, message: String, timing: Timing) -> Execution {
        Execution {
            outcome: Attempt::failed(kind, message),
            logs: Vec::new(),
            timing,
        }
    }
}

/// The first step of an attempt: runs the function on one of its call threads, keeping the
/// job alive meanwhile, and reads what it returned. Stores nothing and settles nothing.
async fn execute(
    worker: &Worker,
    serving: &Serving,
    state: &Arc<FunctionState>,
    job: &JobMeta,
    message: &jetstream::Message,
) -> Execution {
    let (executor, progress_every) = (&serving.executor, serving.progress_every);
    let input = message.payload.clone();
    let library = match &state.library {
        Ok(library) => library.clone(),
        Err(error) => {
            let message = format!(
                "function {} version {} failed to load: {error}",
                state.record.name, state.record.version
            );
            return Execution::failed(ErrorKind::Load, message, Timing::default());
        }
    };
    let timeout = Duration::from_millis(state.spec.timeout_ms);
    let state = state.clone();
    let budget = worker.config.log_capture_bytes;
    let invocation_id = job.invocation_id.clone();
    // The function continues the trace under this attempt's span when spans are exported.
    let traceparent = squall_telemetry::traceparent_of(&tracing::Span::current())
        .unwrap_or_else(|| job.traceparent.clone());
    let event = job.event.clone();
    let attempt_no = job.attempt;
    let deadline = now_ms() + state.spec.timeout_ms;
    let mut services = worker.host.for_call(
        &state.record.name,
        &invocation_id,
        &traceparent,
        std::time::Instant::now() + timeout,
        tracing::Span::current(),
    );
    let (done, mut call) = tokio::sync::oneshot::channel();
    let cancels = worker.cancels.clone();
    let ticket = executor.submit(move || {
        let mut logs = LogCapture::new(budget);
        let cx = CallContext {
            function: &state.record.name,
            invocation_id: &invocation_id,
            traceparent: &traceparent,
            config: state.call_config.as_bytes(),
            event: &event,
            attempt: attempt_no,
            deadline_unix_ms: deadline,
        };
        // Cancelled while it waited for a call thread: it never starts.
        if cancels.contains(cx.invocation_id) {
            return;
        }
        let started = std::time::Instant::now();
        let cpu_before = crate::loader::thread_cpu_time();
        let result = library.call(&cx, &input, &mut logs, &mut services);
        let cpu_us = crate::loader::thread_cpu_time()
            .saturating_sub(cpu_before)
            .as_micros() as u64;
        let timing = Timing {
            wall_us: started.elapsed().as_micros() as u64,
            cpu_us,
            kv: services.usage(),
        };
        let _ = done.send((result, logs, timing));
    });
    // While the function runs, keep telling JetStream the job is alive, so it is never
    // redelivered however long it runs within its timeout.
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
    let call = loop {
        tokio::select! {
            done = &mut call => break done,
            _ = &mut deadline => {
                // The thread cannot be killed: record the timeout and replace this process.
                ticket.abandon();
                worker.request_recycle("a function ran past its timeout");
                let message = format!(
                    "function did not return within its timeout of {} ms",
                    timeout.as_millis()
                );
                let timing = Timing { wall_us: timeout.as_micros() as u64, ..Timing::default() };
                return Execution::failed(ErrorKind::Timeout, message, timing);
            }
            _ = progress.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    match call {
        Ok((result, logs, timing)) => Execution {
            outcome: Attempt::from_call(result),
            logs: logs.lines,
            timing,
        },
        // Dropped unanswered: cancelled before it started (the caller drops the job), or the
        // host panicked.
        Err(error) => {
            let message =
                format!("function call did not complete: {error} (it was cancelled or panicked in the host)");
            Execution::failed(ErrorKind::Crash, message, Timing::default())
        }
    }
}

/// How long a call took: wall time, and CPU time on its thread; and its use of state (for
/// metering).
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    wall_us: u64,
    cpu_us: u64,
    kv: crate::host::KvUsage,
}

async fn run_job(
    worker: &Worker,
    serving: &Serving,
    message: jetstream::Message,
    permit: OwnedSemaphorePermit,
) {
    let job = job_meta(&message);
    if !squall_telemetry::exporting() {
        // No span is exported: skip the trace context and the spans' data altogether.
        return run_attempt(worker, serving, job, message, permit).await;
    }
    let parent = squall_telemetry::context_from_traceparent(Some(&job.traceparent));
    if job.attempt == 1 {
        let created = UNIX_EPOCH + Duration::from_millis(job.created_at_ms);
        squall_telemetry::record_past_span(
            "squall.queue_wait",
            &parent,
            created,
            SystemTime::now(),
            vec![
                KeyValue::new("squall.function", job.function.clone()),
                KeyValue::new("squall.invocation_id", job.invocation_id.clone()),
            ],
        );
    }
    let span = tracing::info_span!(
        "squall.attempt",
        otel.kind = "consumer",
        squall.function = %job.function,
        squall.invocation_id = %job.invocation_id,
        squall.attempt = job.attempt,
        squall.version = tracing::field::Empty,
        squall.outcome = tracing::field::Empty,
        squall.error_kind = tracing::field::Empty,
    );
    squall_telemetry::set_parent(&span, parent);
    run_attempt(worker, serving, job, message, permit)
        .instrument(span)
        .await
}

/// One attempt of a job, inside its `squall.attempt` span: execute, decide, settle.
async fn run_attempt(
    worker: &Worker,
    serving: &Serving,
    job: JobMeta,
    message: jetstream::Message,
    _permit: OwnedSemaphorePermit,
) {
    // Cancelled while queued or waiting for its retry: it never runs again.
    if worker.cancels.is_cancelled(&job.invocation_id).await {
        serving
            .metrics
            .settled(InvocationStatus::Cancelled, None, false);
        return drop_cancelled(worker, &job, &message).await;
    }
    let Some(current) = worker.function(&job.function) else {
        // Deleted while the job was buffered: leave it for whoever serves the function next.
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    };
    // A job runs the version that was current when it was accepted.
    let version = header(message.headers.as_ref(), h::VERSION);
    let state = worker.for_job(current, version).await;
    tracing::Span::current().record("squall.version", state.record.version.as_str());
    let started_at_ms = now_ms();
    let m = &serving.metrics;
    if job.attempt == 1 {
        m.waited(started_at_ms.saturating_sub(job.created_at_ms) as f64 / 1000.0);
    }
    let execution = {
        let _running = m.running();
        execute(worker, serving, &state, &job, &message).await
    };
    m.executed(execution.timing.wall_us as f64 / 1e6);
    emit_function_logs(&job, &execution.logs);
    // Cancelled while it ran: whatever it returned, the invocation ended `cancelled`.
    if worker.cancels.is_cancelled(&job.invocation_id).await {
        m.settled(InvocationStatus::Cancelled, None, false);
        return drop_cancelled(worker, &job, &message).await;
    }
    let settlement = decide(
        execution.outcome,
        job.attempt,
        state.spec.max_attempts,
        &state.spec.backoff,
        jitter_unit(&job.invocation_id, job.attempt),
    );
    let attempt = Attempted {
        started_at_ms,
        timing: execution.timing,
        logs: execution.logs,
    };
    settle(worker, serving, &job, &state, &message, attempt, settlement).await;
}

/// When and how long an executed attempt ran, and what it logged: the rest of its result.
struct Attempted {
    started_at_ms: u64,
    timing: Timing,
    logs: Vec<LogLine>,
}

/// The function's own log lines also become this process's log events, at their own level,
/// with the ids that tie them to the invocation and its trace.
fn emit_function_logs(job: &JobMeta, logs: &[LogLine]) {
    let trace_id = job.traceparent.split('-').nth(1).unwrap_or_default();
    let (function, id) = (&job.function, &job.invocation_id);
    for line in logs {
        let text = &line.message;
        match line.level {
            LogLevel::Error => {
                tracing::error!(message = "function log", function = %function, invocation_id = %id, trace_id, text = %text)
            }
            LogLevel::Warn => {
                tracing::warn!(message = "function log", function = %function, invocation_id = %id, trace_id, text = %text)
            }
            LogLevel::Info => {
                tracing::info!(message = "function log", function = %function, invocation_id = %id, trace_id, text = %text)
            }
            LogLevel::Debug => {
                tracing::debug!(message = "function log", function = %function, invocation_id = %id, trace_id, text = %text)
            }
            LogLevel::Trace => {
                tracing::trace!(message = "function log", function = %function, invocation_id = %id, trace_id, text = %text)
            }
        }
    }
}

/// The second step of an attempt: carries out `settlement`. Stores the result (and sends it to
/// a waiting caller), writes the dead letter when the invocation reached a dead end, then
/// acknowledges the job or hands it back for its retry.
async fn settle(
    worker: &Worker,
    serving: &Serving,
    job: &JobMeta,
    state: &FunctionState,
    message: &jetstream::Message,
    attempt: Attempted,
    settlement: Settlement,
) {
    let status = settlement.status();
    let kind = settlement.error_kind();
    let action = settlement.job_action();
    serving.metrics.settled(
        status,
        kind.filter(|_| matches!(action, JobAction::Redeliver(_))),
        action == JobAction::DeadLetter,
    );
    let span = tracing::Span::current();
    span.record("squall.outcome", status.as_str());
    if let Some(kind) = kind {
        span.record("squall.error_kind", kind.as_str());
    }
    let meta = ResultMeta {
        invocation_id: job.invocation_id.clone(),
        function: job.function.clone(),
        version: state.record.version.clone(),
        status,
        attempt: job.attempt,
        error_kind: kind,
        created_at_ms: job.created_at_ms,
        started_at_ms: attempt.started_at_ms,
        finished_at_ms: now_ms(),
        duration_us: attempt.timing.wall_us,
        cpu_us: attempt.timing.cpu_us,
        kv_ops: attempt.timing.kv.ops,
        kv_bytes: attempt.timing.kv.bytes,
        logs: attempt.logs,
        worker: worker.id.clone(),
        trace_id: squall_broker::record::trace_id_of(&job.traceparent),
    };
    let body = settlement.into_body();
    // The dead letter records this attempt itself, in case the history read back lags.
    let last_attempt =
        (action == JobAction::DeadLetter).then(|| dlq::AttemptRecord::from_result(&meta, &body));
    let reply = header(message.headers.as_ref(), h::REPLY_TO)
        .filter(|to| squall_broker::names::is_reply_subject(to, &job.invocation_id));
    let published =
        publish_result(&worker.topology, &meta, body, reply).instrument(tracing::info_span!(
            "squall.result",
            otel.kind = "producer",
            squall.outcome = status.as_str()
        ));
    let published = keep_alive(message, serving.progress_every, published).await;
    let stored = match published {
        Ok(stored) => stored,
        Err(error) => {
            // Without a recorded outcome the job must run again rather than vanish.
            tracing::warn!(message = "cannot publish result; job left for redelivery",
                function = %job.function, invocation_id = %job.invocation_id, error = %error);
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    };
    if let Stored::Earlier(earlier) = stored {
        // The invocation had ended first (a cancellation): nothing more to record.
        tracing::debug!(message = "invocation had ended before its result was stored",
            function = %job.function, invocation_id = %job.invocation_id, status = earlier.as_str());
        if let Err(error) = message.ack().await {
            tracing::warn!(message = "cannot acknowledge job; it may be delivered again",
                function = %job.function, invocation_id = %job.invocation_id, error = %error);
        }
        return;
    }
    if let Some(last_attempt) = last_attempt {
        let dead = dead_letter(worker, job, state, message, status, last_attempt).instrument(
            tracing::info_span!("squall.dead_letter", otel.kind = "producer"),
        );
        let dead = keep_alive(message, serving.progress_every, dead).await;
        if let Err(error) = dead {
            // Left unacknowledged, the job exhausts its deliveries and the dispatchers'
            // dead-letter mover records it instead.
            tracing::warn!(message = "cannot write the dead letter; leaving it to the dead-letter mover",
                function = %job.function, invocation_id = %job.invocation_id, error = %error);
            return;
        }
    }
    let ack = match action {
        JobAction::Ack | JobAction::DeadLetter => message.ack().await,
        JobAction::Redeliver(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(error) = ack {
        tracing::warn!(message = "cannot acknowledge job; it may run again",
            function = %job.function, invocation_id = %job.invocation_id, error = %error);
    }
    tracing::debug!(message = "job done", function = %job.function, invocation_id = %job.invocation_id,
        status = status.as_str(), attempt = job.attempt, duration_us = attempt.timing.wall_us);
}

/// Writes the DLQ record of a job whose last attempt failed, with every attempt's error.
async fn dead_letter(
    worker: &Worker,
    job: &JobMeta,
    state: &FunctionState,
    message: &jetstream::Message,
    status: InvocationStatus,
    last_attempt: dlq::AttemptRecord,
) -> anyhow::Result<()> {
    let history =
        dlq::result_history(&worker.topology.results, &job.function, &job.invocation_id).await;
    let letter = DeadLetter::builder(
        &job.invocation_id,
        &job.function,
        &state.record.version,
        job.created_at_ms,
    )
    .status(status)
    .job(message.headers.as_ref(), &message.payload)
    .history(&history)
    .attempt(last_attempt)
    .build(job.attempt, now_ms());
    dlq::publish_dead_letter(&worker.topology.jetstream, &letter).await?;
    tracing::info!(message = "invocation dead-lettered", function = %job.function,
        invocation_id = %job.invocation_id, status = status.as_str(), attempts = job.attempt);
    Ok(())
}

/// Runs `work` while telling JetStream every `every` that the job is alive, so a result or
/// dead letter that takes a leader election to store does not get the job redelivered meanwhile.
async fn keep_alive<T>(
    message: &jetstream::Message,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = progress.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// What storing a result found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// This result was stored (or was already, from an earlier try of this very publish).
    Ours,
    /// A terminal result with this status was stored before: the invocation had ended (a
    /// cancellation, or this job's own earlier run whose acknowledgement was lost).
    Earlier(InvocationStatus),
}

/// Stores a result in RESULTS, trying again with the same message id through a leader
/// election (see `squall_broker::publish`); a terminal result of a synchronous job then goes to
/// the waiting dispatcher's reply subject too (a plain publish: if it is lost, the dispatcher
/// reads RESULTS when its wait ends). When RESULTS already held the invocation's terminal
/// result (same terminal message id), that one is what the waiter hears.
async fn publish_result(
    topology: &squall_broker::Topology,
    meta: &ResultMeta,
    body: Vec<u8>,
    reply: Option<&str>,
) -> anyhow::Result<Stored> {
    let js = &topology.jetstream;
    let subject = results_subject(&meta.function, &meta.invocation_id);
    let body = bytes::Bytes::from(body);
    let mut headers = meta.to_headers();
    headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
    let reply = reply
        .filter(|_| meta.status.is_terminal())
        .map(|to| (to, headers.clone()));
    let ack = publish::publish_acked(js, &subject, headers, body.clone(), &RESULT_PUBLISH).await?;
    let mut stored = Stored::Ours;
    let mut answer = reply.map(|(to, headers)| (to, headers, body));
    if ack.duplicate && meta.status.is_terminal() {
        // The duplicate's acknowledgement names the stored message's sequence.
        match topology.results.direct_get(ack.sequence).await {
            Ok(earlier) => {
                let status = earlier
                    .headers
                    .get(h::STATUS)
                    .and_then(|s| InvocationStatus::parse(s.as_str()));
                if let Some(status) = status.filter(|s| *s != meta.status) {
                    stored = Stored::Earlier(status);
                }
                answer = answer.map(|(to, _, _)| (to, earlier.headers, earlier.payload));
            }
            Err(error) => {
                tracing::debug!(message = "cannot read the invocation's stored terminal result",
                    invocation_id = %meta.invocation_id, %error);
            }
        }
    }
    if let Some((to, reply_headers, body)) = answer {
        let sent = js
            .client()
            .publish_with_headers(to.to_string(), reply_headers, body)
            .await;
        if let Err(error) = sent {
            tracing::debug!(message = "cannot send the direct reply; the waiter reads RESULTS",
                invocation_id = %meta.invocation_id, %error);
        }
    }
    Ok(stored)
}

/// Drops the job of a cancelled invocation without running it (or after it ran): the
/// cancellation stored the terminal `cancelled` result, which a synchronous caller still
/// waiting hears of here. If RESULTS has no terminal result for it yet (the cancelling
/// dispatcher failed between marking and recording it), this worker records `cancelled`.
async fn drop_cancelled(worker: &Worker, job: &JobMeta, message: &jetstream::Message) {
    let topology = &worker.topology;
    let subject = results_subject(&job.function, &job.invocation_id);
    let last = topology.results.direct_get_last_for_subject(&subject).await;
    let terminal = last.ok().filter(|m| {
        m.headers
            .get(h::STATUS)
            .and_then(|s| InvocationStatus::parse(s.as_str()))
            .is_some_and(InvocationStatus::is_terminal)
    });
    let reply = header(message.headers.as_ref(), h::REPLY_TO)
        .filter(|to| squall_broker::names::is_reply_subject(to, &job.invocation_id));
    match terminal {
        Some(stored) => {
            if let Some(to) = reply {
                let _ = topology
                    .jetstream
                    .client()
                    .publish_with_headers(to.to_string(), stored.headers, stored.payload)
                    .await;
            }
        }
        None => {
            let now = now_ms();
            let meta = ResultMeta {
                invocation_id: job.invocation_id.clone(),
                function: job.function.clone(),
                version: header(message.headers.as_ref(), h::VERSION)
                    .unwrap_or_default()
                    .to_string(),
                status: InvocationStatus::Cancelled,
                attempt: job.attempt,
                error_kind: None,
                created_at_ms: job.created_at_ms,
                started_at_ms: now,
                finished_at_ms: now,
                duration_us: 0,
                cpu_us: 0,
                kv_ops: 0,
                kv_bytes: 0,
                logs: Vec::new(),
                worker: worker.id.clone(),
                trace_id: squall_broker::record::trace_id_of(&job.traceparent),
            };
            let body = b"cancelled".to_vec();
            if let Err(error) = publish_result(topology, &meta, body, reply).await {
                // Left unacknowledged, the job comes back and is dropped again.
                tracing::warn!(message = "cannot record a cancelled invocation; job left for redelivery",
                    function = %job.function, invocation_id = %job.invocation_id, error = %error);
                return;
            }
        }
    }
    if let Err(error) = message.ack().await {
        tracing::warn!(message = "cannot acknowledge a cancelled job; it is dropped again when it comes back",
            function = %job.function, invocation_id = %job.invocation_id, error = %error);
    }
    tracing::debug!(message = "cancelled job dropped", function = %job.function,
        invocation_id = %job.invocation_id, attempt = job.attempt);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_web_job_gets_the_request_as_its_event_and_others_do_not() {
        let request = squall_broker::web::WebRequest {
            method: "GET".into(),
            path: "/x".into(),
            ..Default::default()
        };
        let header = request.to_header();
        let event = web_event("web", Some(&header)).expect("a web event");
        assert_eq!(event["source"], "web");
        assert_eq!(event["method"], "GET");
        assert_eq!(event["path"], "/x");
        assert_eq!(web_event("nats", Some(&header)), None);
        assert_eq!(web_event("web", Some("{broken")), None);
        assert_eq!(web_event("web", None), None);
    }
}
