//! One attempt of a job, in two steps: `execute` runs the function on one of its call threads
//! and reads its return; `decide` (pure) turns that into a settlement, which `settle` carries out.

use crate::jobs::admit::{pinned_version, read_claim, Claim, ForeignVersion};
use crate::jobs::context::{Jobs, Serving};
use crate::jobs::decide::{decide, decide_streamed, jitter_unit, Attempt};
use crate::jobs::meta::{header, job_meta, JobMeta};
use crate::jobs::settle::{drop_cancelled, keep_alive, settle, Attempted, Timing};
use crate::loader::{thread_cpu_time, CallContext, LogCapture};
use crate::state::FunctionState;
use crate::stream::{take_started, StreamSlot, Streaming};
use async_nats::jetstream::{self, AckKind};
use squall_broker::backoff::Doubling;
use squall_broker::record::{LogLevel, LogLine};
use squall_broker::time::now_ms;
use squall_broker::versions::VersionEntry;
use squall_broker::{headers as h, ErrorKind, FunctionRecord, InvocationStatus};
use squall_telemetry::KeyValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a confined attempt's waiter looks whether the call ran out of memory.
const OUT_OF_MEMORY_CHECK: Duration = Duration::from_millis(10);
/// How long past its deadline a call to a runtime that interrupts its script may take to
/// come back before the process is replaced as for a native function.
const INTERRUPT_GRACE: Duration = Duration::from_millis(250);
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

/// What executing an attempt produced: its outcome, the function's log lines and its timing.
struct Execution {
    outcome: Attempt,
    logs: Vec<LogLine>,
    timing: Timing,
    /// What the function streamed, when it did.
    streamed: Option<Streaming>,
}

impl Execution {
    /// An attempt that ended before the function returned anything.
    fn failed(kind: ErrorKind, message: String, timing: Timing) -> Execution {
        Execution {
            outcome: Attempt::failed(kind, message),
            logs: Vec::new(),
            timing,
            streamed: None,
        }
    }

    /// This execution with what the function streamed, if it did.
    fn with_stream(mut self, slot: &StreamSlot) -> Execution {
        self.streamed = take_started(slot);
        self
    }
}

/// The first step of an attempt: runs the function on one of its call threads, keeping the
/// job alive meanwhile, and reads what it returned and what it streamed. Stores nothing (but
/// the streamed chunks) and settles nothing.
async fn execute(
    jobs: &Jobs,
    serving: &Serving,
    state: &Arc<FunctionState>,
    job: &JobMeta,
    message: &jetstream::Message,
    input: bytes::Bytes,
) -> Execution {
    // The caller asked for the output as it is written: chunks go to its reply subject too.
    let reply = header(message.headers.as_ref(), h::REPLY_TO)
        .filter(|_| header(message.headers.as_ref(), h::STREAM) == Some("true"))
        .filter(|to| squall_broker::names::is_reply_subject(to, &job.invocation_id))
        .map(str::to_string);
    let slot: StreamSlot = Arc::new(std::sync::Mutex::new(Some(Streaming::new(
        &jobs.outlet.topology.jetstream,
        &state.record.name,
        &job.invocation_id,
        job.attempt,
        reply,
        jobs.outlet.payloads.max,
    ))));
    execute_call(jobs, serving, state, job, message, input, slot.clone())
        .await
        .with_stream(&slot)
}

/// Runs the call of `execute`, its host calls streaming into `slot`.
async fn execute_call(
    jobs: &Jobs,
    serving: &Serving,
    state: &Arc<FunctionState>,
    job: &JobMeta,
    message: &jetstream::Message,
    input: bytes::Bytes,
    slot: StreamSlot,
) -> Execution {
    let (executor, progress_every) = (&serving.executor, serving.progress_every);
    let library = match &state.library {
        Ok(library) => library.clone(),
        Err(error) => {
            // A version this process must not load (a second Python bundle): a fresh process
            // will, and this attempt is retried there.
            if jobs.confiner.is_some() && jobs.functions.wants_fresh_process() {
                jobs.lifecycle
                    .request_recycle("a job for another version of a one-per-process runtime");
            }
            let message = format!(
                "function {} version {} failed to load: {error}",
                state.record.name, state.record.version
            );
            return Execution::failed(ErrorKind::Load, message, Timing::default());
        }
    };
    let timeout = Duration::from_millis(state.spec.timeout_ms);
    let interrupts = library.interrupts_at_deadline();
    let state = state.clone();
    let budget = jobs.log_capture_bytes;
    let invocation_id = job.invocation_id.clone();
    // The function continues the trace under this attempt's span when spans are exported.
    let traceparent = squall_telemetry::traceparent_of(&tracing::Span::current())
        .unwrap_or_else(|| job.traceparent.clone());
    let event = job.event.clone();
    let attempt_no = job.attempt;
    let deadline = now_ms() + state.spec.timeout_ms;
    let deadline_ms = deadline;
    let mut services = jobs
        .host
        .for_call(
            &state.record.name,
            &invocation_id,
            &traceparent,
            std::time::Instant::now() + timeout,
            tracing::Span::current(),
        )
        .with_stream(slot);
    let (done, mut call) = tokio::sync::oneshot::channel();
    let cancels = jobs.cancels.clone();
    let memory_mb = state.spec.memory_mb;
    // Set, on its call thread, when the function finds no memory within its limit.
    let out_of_memory = Arc::new(AtomicBool::new(false));
    let oom_flag = out_of_memory.clone();
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
        let result = crate::limits::during_call(&oom_flag, || {
            library.call(&cx, &input, &mut logs, &mut services)
        });
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
    let waiting_since = std::time::Instant::now();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
    // Only a confined process has a memory limit to run out of.
    let confined = crate::limits::armed();
    let mut memory_check = tokio::time::interval(OUT_OF_MEMORY_CHECK);
    let call = loop {
        tokio::select! {
            done = &mut call => break done,
            _ = &mut deadline => {
                let message = format!(
                    "function did not return within its timeout of {} ms",
                    timeout.as_millis()
                );
                // A runtime that interrupts its script at the deadline gives the thread back:
                // the attempt timed out all the same, and the process serves on.
                if interrupts {
                    if let Ok(Ok(_)) = tokio::time::timeout(INTERRUPT_GRACE, &mut call).await {
                        let timing = Timing { wall_us: timeout.as_micros() as u64, ..Timing::default() };
                        return Execution::failed(ErrorKind::Timeout, message, timing);
                    }
                }
                // The thread cannot be killed: record the timeout and replace this process.
                ticket.abandon();
                jobs.lifecycle.request_recycle("a function ran past its timeout");
                let timing = Timing { wall_us: timeout.as_micros() as u64, ..Timing::default() };
                return Execution::failed(ErrorKind::Timeout, message, timing);
            }
            _ = memory_check.tick(), if confined => {
                if out_of_memory.load(Ordering::SeqCst) {
                    // The call thread is parked for good: end the attempt and replace this
                    // process, whose memory the function holds.
                    ticket.abandon();
                    jobs.lifecycle.request_recycle("a function ran out of memory");
                    let message = format!(
                        "function ran out of memory: it asked for more than its memory_mb of {memory_mb} MiB"
                    );
                    let timing = Timing { wall_us: waiting_since.elapsed().as_micros() as u64, ..Timing::default() };
                    return Execution::failed(ErrorKind::OutOfMemory, message, timing);
                }
            }
            _ = progress.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    match call {
        // A runtime that interrupted its script at the deadline reports an error of its own:
        // the attempt timed out, as a native function's would have.
        Ok((result, logs, timing))
            if interrupts && result.status != 0 && now_ms() >= deadline_ms =>
        {
            let message = format!(
                "function did not return within its timeout of {} ms",
                timeout.as_millis()
            );
            Execution {
                outcome: Attempt::failed(ErrorKind::Timeout, message),
                logs: logs.lines,
                timing,
                streamed: None,
            }
        }
        Ok((result, logs, timing)) => Execution {
            outcome: Attempt::from_call(result),
            logs: logs.lines,
            timing,
            streamed: None,
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
    // An id the job's headers set must not be an earlier invocation's: such a job never runs
    // and stores nothing, so the earlier invocation keeps its own records.
    if job.id_claimed && !claim_is_free(jobs, serving, &job, &message).await {
        return;
    }
    // A job runs the version that was current when it was accepted, which must be one of the
    // function's own: another function's artifact would run with this function's secrets and
    // state.
    let version = header(message.headers.as_ref(), h::VERSION);
    let (state, refused) = match job_version(jobs, serving, &current, version, &message).await {
        JobVersion::Runs(pinned) => (jobs.functions.for_job(current, pinned.as_ref()).await, None),
        JobVersion::Refused(foreign) => (current, Some(foreign)),
        JobVersion::Unreadable => {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    };
    tracing::Span::current().record("squall.version", state.record.version.as_str());
    let started_at_ms = now_ms();
    let m = &serving.metrics;
    if job.attempt == 1 {
        m.waited(started_at_ms.saturating_sub(job.created_at_ms) as f64 / 1000.0);
    }
    // The previous attempt streamed and its process died: its caller saw part of the output,
    // so the invocation ends failed with what was streamed, and the function is not run again.
    let crashed_stream = match refused {
        Some(_) => None,
        None => match streamed_before(jobs, serving, &job, &message).await {
            Some(found) => found,
            None => return,
        },
    };
    let mut execution = match (refused, &crashed_stream) {
        (Some(foreign), _) => {
            tracing::warn!(message = "job refused: it names a version of another function or none",
                function = %job.function, invocation_id = %job.invocation_id, version = %foreign.version);
            Execution::failed(ErrorKind::Error, foreign.to_string(), Timing::default())
        }
        (None, Some(stored)) => {
            let message = format!(
                "the function's process ended after streaming {} bytes (attempt {}); a streamed invocation is not run again",
                stored.size,
                job.attempt.saturating_sub(1)
            );
            Execution::failed(ErrorKind::Crash, message, Timing::default())
        }
        (None, None) => {
            let Some(input) = job_input(jobs, serving, &job, &message).await else {
                return;
            };
            let mut execution = match input {
                Ok(input) => {
                    let _running = m.running();
                    execute(jobs, serving, &state, &job, &message, input).await
                }
                Err(missing) => Execution::failed(ErrorKind::Error, missing, Timing::default()),
            };
            m.executed(execution.timing.wall_us as f64 / 1e6);
            if execution.streamed.is_none() {
                execution.outcome = execution.outcome.within(jobs.outlet.payloads.max);
            }
            execution
        }
    };
    emit_function_logs(&job, &execution.logs);
    // What the function streamed is closed into its object: the last chunk is what it
    // returned, and a failure keeps what was streamed.
    let (streamed, stored) = match execution.streamed.take() {
        Some(stream) => {
            let (outcome, stored) =
                finish_stream(serving, &job, &message, stream, execution.outcome).await;
            execution.outcome = outcome;
            (true, stored)
        }
        None => (crashed_stream.is_some(), crashed_stream),
    };
    // Cancelled while it ran: whatever it returned, the invocation ended `cancelled`.
    if jobs.cancels.is_cancelled(&job.invocation_id).await {
        m.settled(InvocationStatus::Cancelled, None, false);
        return drop_cancelled(&jobs.outlet, &job, &message).await;
    }
    let settlement = match streamed {
        // Part of the output reached the caller: no retry could take it back.
        true => decide_streamed(execution.outcome),
        false => decide(
            execution.outcome,
            job.attempt,
            state.spec.max_attempts,
            &state.spec.backoff,
            jitter_unit(&job.invocation_id, job.attempt),
        ),
    };
    let attempt = Attempted {
        started_at_ms,
        timing: execution.timing,
        logs: execution.logs,
        streamed: stored,
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

/// What the job's previous attempt streamed before its process died, closed into an object:
/// `Some(None)` when it streamed nothing (or this is the first attempt); `None` when the
/// payload bucket could not be read within `ADMISSION_BUDGET` (the job was handed back).
async fn streamed_before(
    jobs: &Jobs,
    serving: &Serving,
    job: &JobMeta,
    message: &jetstream::Message,
) -> Option<Option<squall_broker::payloads::PayloadRef>> {
    if job.attempt <= 1 {
        return Some(None);
    }
    let js = &jobs.outlet.topology.jetstream;
    let read = read_patiently(
        serving,
        message,
        "what the previous attempt streamed",
        || async {
            let closed = squall_broker::payloads::close_streamed(
                js,
                &job.function,
                &job.invocation_id,
                job.attempt - 1,
            )
            .await;
            match closed {
                Err(error) if error.is_transient() => Err(error),
                other => Ok(other),
            }
        },
    )
    .await;
    match read {
        Ok(Ok(found)) => Some(found),
        // No payload bucket: nothing can have been streamed into it.
        Ok(Err(_)) => Some(None),
        Err(error) => {
            tracing::warn!(message = "cannot read what a job's previous attempt streamed; job left for redelivery",
                function = %job.function, invocation_id = %job.invocation_id, error = %error);
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            None
        }
    }
}

/// Closes an attempt's stream: a succeeded function's return is the last chunk; a failed one's
/// stream keeps what was written. The outcome becomes a failure when the stream cannot be
/// stored (the caller saw part of it; there is no taking that back). Returns the outcome and
/// the stored object, if any.
async fn finish_stream(
    serving: &Serving,
    job: &JobMeta,
    message: &jetstream::Message,
    stream: Streaming,
    outcome: Attempt,
) -> (Attempt, Option<squall_broker::payloads::PayloadRef>) {
    let size = stream.size();
    let finish = |last| keep_alive(message, serving.progress_every, stream.finish(last));
    let warn = |error: &squall_broker::payloads::PayloadError| {
        tracing::warn!(message = "cannot store a streamed output", function = %job.function,
            invocation_id = %job.invocation_id, error = %error);
    };
    match outcome {
        Attempt::Succeeded(body) => match finish(Some(bytes::Bytes::from(body))).await {
            Ok(stored) => (Attempt::Succeeded(Vec::new()), Some(stored)),
            Err(error) => {
                warn(&error);
                let message =
                    format!("the streamed output cannot be stored after {size} bytes: {error}");
                (Attempt::failed(ErrorKind::Error, message), None)
            }
        },
        Attempt::Failed { kind, message, .. } => match finish(None).await {
            Ok(stored) => {
                let message = format!("{message} (after streaming {size} bytes)");
                (Attempt::failed(kind, message), Some(stored))
            }
            Err(error) => {
                warn(&error);
                let message = format!(
                    "{message} (after streaming {size} bytes, which cannot be stored: {error})"
                );
                (Attempt::failed(kind, message), None)
            }
        },
    }
}

/// The job's input: its body, or the input stored in the function's payload bucket. `None`
/// when the bucket could not be read within `ADMISSION_BUDGET` (the job was handed back for a
/// later delivery, no attempt charged); `Some(Err)` when the stored input is gone for good.
async fn job_input(
    jobs: &Jobs,
    serving: &Serving,
    job: &JobMeta,
    message: &jetstream::Message,
) -> Option<Result<bytes::Bytes, String>> {
    let Some(stored) = &job.payload else {
        return Some(Ok(message.payload.clone()));
    };
    let payloads = &jobs.outlet.payloads;
    let read = read_patiently(serving, message, "the job's stored input", || async {
        match payloads.input(&job.function, stored).await {
            Err(error) if error.is_transient() => Err(error),
            other => Ok(other),
        }
    })
    .await;
    match read {
        Ok(Ok(input)) => Some(Ok(input)),
        Ok(Err(error)) => Some(Err(format!(
            "the invocation's input cannot be read: {error}"
        ))),
        Err(error) => {
            tracing::warn!(message = "cannot read a job's stored input; job left for redelivery",
                function = %job.function, invocation_id = %job.invocation_id, error = %error);
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            None
        }
    }
}

/// How long reading RESULTS or the registry for a job's admission may keep trying through a
/// broker's hiccup before the job is handed back for a later delivery.
const ADMISSION_BUDGET: Duration = Duration::from_secs(10);

/// Runs `read` until it succeeds, pausing between tries and keeping the job alive meanwhile;
/// after `ADMISSION_BUDGET`, the last error. The first try is made bare: it almost always
/// succeeds, and runs on every job.
async fn read_patiently<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    serving: &Serving,
    message: &jetstream::Message,
    what: &str,
    mut read: impl FnMut() -> F,
) -> Result<T, E> {
    if let Ok(value) = read().await {
        return Ok(value);
    }
    let mut pauses = Doubling::new(Duration::from_millis(50), Duration::from_secs(1))
        .until(Instant::now() + ADMISSION_BUDGET);
    let reading = async {
        loop {
            match read().await {
                Ok(value) => return Ok(value),
                Err(error) => match pauses.fail_at(Instant::now()) {
                    Some(pause) => {
                        tracing::debug!(message = "cannot read for a job's admission; trying again", what, %error);
                        tokio::time::sleep(pause).await;
                    }
                    None => return Err(error),
                },
            }
        }
    };
    keep_alive(message, serving.progress_every, reading).await
}

/// Whether the invocation id `job`'s headers set is its own to take (`admit::claim_of`). When
/// it is not, the job is terminated unrun and without a result (a result would be stored under
/// the other invocation's id); when RESULTS cannot be read, the job is handed back to be
/// checked again.
async fn claim_is_free(
    jobs: &Jobs,
    serving: &Serving,
    job: &JobMeta,
    message: &jetstream::Message,
) -> bool {
    let results = &jobs.outlet.topology.results;
    let (id, function) = (&job.invocation_id, &job.function);
    let claim = read_patiently(serving, message, "the invocation's results", || {
        read_claim(results, id, job.sequence, function, job.attempt)
    })
    .await;
    let refusal = match claim {
        Ok(Claim::Free) => return true,
        Ok(Claim::Taken {
            function: owner,
            status,
        }) => {
            tracing::warn!(message = "job refused: its invocation id is an earlier invocation's",
                function = %function, invocation_id = %id, owner = %owner, owner_status = %status);
            AckKind::Term
        }
        Ok(Claim::Malformed) => {
            tracing::warn!(message = "job refused: its invocation id is not one subject token",
                function = %function, invocation_id = %id.chars().take(80).collect::<String>());
            AckKind::Term
        }
        Err(error) => {
            tracing::warn!(message = "cannot check the job's invocation id; job left for redelivery",
                function = %function, invocation_id = %id, %error);
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    };
    if let Err(error) = message.ack_with(refusal).await {
        tracing::warn!(message = "cannot hand back or terminate a job",
            function = %function, invocation_id = %id, %error);
    }
    false
}

/// What the function's record says of the version a job names.
enum JobVersion {
    /// The job runs this version of the function (`None`: the current one).
    Runs(Option<VersionEntry>),
    /// The job names no version of the function: it fails unrun.
    Refused(ForeignVersion),
    /// The registry could not be read to tell.
    Unreadable,
}

/// Checks the version `version` (the job's `Squall-Version`) against the function's record:
/// this worker's, and when that does not list it, the registry's own (a deploy the watch has
/// not delivered yet).
async fn job_version(
    jobs: &Jobs,
    serving: &Serving,
    current: &FunctionState,
    version: Option<&str>,
    message: &jetstream::Message,
) -> JobVersion {
    let foreign = match pinned_version(&current.record, version) {
        Ok(pinned) => return JobVersion::Runs(pinned.cloned()),
        Err(foreign) => foreign,
    };
    let registry = &jobs.outlet.topology.registry;
    let name = &current.record.name;
    let entry = read_patiently(serving, message, "the function's record", || {
        registry.get(name)
    })
    .await;
    let record = match entry {
        Ok(Some(value)) => FunctionRecord::decode(&value).ok(),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(message = "cannot read the function's record to check a job's version; job left for redelivery",
                function = %name, %error);
            return JobVersion::Unreadable;
        }
    };
    match record.map(|record| pinned_version(&record, version).map(|p| p.cloned())) {
        Some(Ok(pinned)) => JobVersion::Runs(pinned),
        Some(Err(_)) | None => JobVersion::Refused(foreign),
    }
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
