//! One attempt of a job, in two steps: `execute` runs the function on one of its call threads
//! and reads its return; `decide` (pure) turns that into a settlement, which `settle` carries out.

use crate::jobs::context::{Jobs, Serving};
use crate::jobs::decide::{decide, jitter_unit, Attempt};
use crate::jobs::meta::{header, job_meta, JobMeta};
use crate::jobs::settle::{drop_cancelled, settle, Attempted, Timing};
use crate::loader::{thread_cpu_time, CallContext, LogCapture};
use crate::state::FunctionState;
use async_nats::jetstream::{self, AckKind};
use squall_broker::record::{LogLevel, LogLine};
use squall_broker::time::now_ms;
use squall_broker::{headers as h, ErrorKind, InvocationStatus};
use squall_telemetry::KeyValue;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

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
    jobs: &Jobs,
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
    let budget = jobs.log_capture_bytes;
    let invocation_id = job.invocation_id.clone();
    // The function continues the trace under this attempt's span when spans are exported.
    let traceparent = squall_telemetry::traceparent_of(&tracing::Span::current())
        .unwrap_or_else(|| job.traceparent.clone());
    let event = job.event.clone();
    let attempt_no = job.attempt;
    let deadline = now_ms() + state.spec.timeout_ms;
    let mut services = jobs.host.for_call(
        &state.record.name,
        &invocation_id,
        &traceparent,
        std::time::Instant::now() + timeout,
        tracing::Span::current(),
    );
    let (done, mut call) = tokio::sync::oneshot::channel();
    let cancels = jobs.cancels.clone();
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
        let cpu_before = thread_cpu_time();
        let result = library.call(&cx, &input, &mut logs, &mut services);
        let cpu_us = thread_cpu_time().saturating_sub(cpu_before).as_micros() as u64;
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
                jobs.lifecycle.request_recycle("a function ran past its timeout");
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

pub(crate) async fn run_job(
    jobs: &Jobs,
    serving: &Serving,
    message: jetstream::Message,
    permit: OwnedSemaphorePermit,
) {
    let job = job_meta(&message);
    if !squall_telemetry::exporting() {
        // No span is exported: skip the trace context and the spans' data altogether.
        return run_attempt(jobs, serving, job, message, permit).await;
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
    run_attempt(jobs, serving, job, message, permit)
        .instrument(span)
        .await
}

/// One attempt of a job, inside its `squall.attempt` span: execute, decide, settle.
async fn run_attempt(
    jobs: &Jobs,
    serving: &Serving,
    job: JobMeta,
    message: jetstream::Message,
    _permit: OwnedSemaphorePermit,
) {
    // Cancelled while queued or waiting for its retry: it never runs again.
    if jobs.cancels.is_cancelled(&job.invocation_id).await {
        serving
            .metrics
            .settled(InvocationStatus::Cancelled, None, false);
        return drop_cancelled(&jobs.outlet, &job, &message).await;
    }
    let Some(current) = jobs.functions.get(&job.function) else {
        // Deleted while the job was buffered: leave it for whoever serves the function next.
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    };
    // A job runs the version that was current when it was accepted.
    let version = header(message.headers.as_ref(), h::VERSION);
    let state = jobs.functions.for_job(current, version).await;
    tracing::Span::current().record("squall.version", state.record.version.as_str());
    let started_at_ms = now_ms();
    let m = &serving.metrics;
    if job.attempt == 1 {
        m.waited(started_at_ms.saturating_sub(job.created_at_ms) as f64 / 1000.0);
    }
    let execution = {
        let _running = m.running();
        execute(jobs, serving, &state, &job, &message).await
    };
    m.executed(execution.timing.wall_us as f64 / 1e6);
    emit_function_logs(&job, &execution.logs);
    // Cancelled while it ran: whatever it returned, the invocation ended `cancelled`.
    if jobs.cancels.is_cancelled(&job.invocation_id).await {
        m.settled(InvocationStatus::Cancelled, None, false);
        return drop_cancelled(&jobs.outlet, &job, &message).await;
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
    settle(
        &jobs.outlet,
        serving,
        &job,
        &state,
        &message,
        attempt,
        settlement,
    )
    .await;
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
