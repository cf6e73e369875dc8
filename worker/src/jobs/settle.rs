//! The second step of an attempt: stores its result (and answers a waiting caller), writes the
//! dead letter at a dead end, then acks or naks the job; and drops a cancelled job.

use crate::host::KvUsage;
use crate::jobs::context::{Outlet, Serving};
use crate::jobs::decide::{JobAction, Settlement};
use crate::jobs::meta::{header, JobMeta};
use crate::state::FunctionState;
use async_nats::jetstream::{self, AckKind};
use squall_broker::dlq::{self, DeadLetter};
use squall_broker::names::results_subject;
use squall_broker::record::{LogLine, ResultMeta};
use squall_broker::time::now_ms;
use squall_broker::{headers as h, publish, InvocationStatus};
use std::time::Duration;
use tracing::Instrument as _;

/// How long storing a result may keep trying before the job is left for redelivery: a
/// leader election of RESULTS, with the job kept alive by progress signals meanwhile.
const RESULT_PUBLISH: publish::PublishPolicy = publish::PublishPolicy {
    budget: Duration::from_secs(30),
    ack_timeout: publish::ACK_TIMEOUT,
};

/// How long a call took: wall time, and CPU time on its thread; and its use of state (for
/// metering).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timing {
    pub wall_us: u64,
    pub cpu_us: u64,
    pub kv: KvUsage,
}

/// When and how long an executed attempt ran, and what it logged: the rest of its result.
pub(crate) struct Attempted {
    pub started_at_ms: u64,
    pub timing: Timing,
    pub logs: Vec<LogLine>,
    /// What the function streamed, stored: the output of a success, or what a failure had
    /// streamed (the result then carries the error message and this reference).
    pub streamed: Option<squall_broker::payloads::PayloadRef>,
}

/// The second step of an attempt: carries out `settlement`. Stores the result (and sends it to
/// a waiting caller), writes the dead letter when the invocation reached a dead end, then
/// acknowledges the job or hands it back for its retry.
pub(crate) async fn settle(
    outlet: &Outlet,
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
    if let Some(kind) = kind {
        serving.metrics.failed(kind);
    }
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
        worker: outlet.worker_id.clone(),
        trace_id: squall_broker::record::trace_id_of(&job.traceparent),
    };
    let body = settlement.into_body();
    // An output above the inline limit is stored in the function's payload bucket first; the
    // result carries the reference.
    let (body, stored_output) = if attempt.streamed.is_some() {
        (body, attempt.streamed.clone())
    } else if status == InvocationStatus::Succeeded && body.len() > outlet.payloads.inline {
        let store = outlet.payloads.store_output(
            &job.function,
            &job.invocation_id,
            job.attempt,
            bytes::Bytes::from(body),
        );
        match keep_alive(message, serving.progress_every, store).await {
            Ok(stored) => (Vec::new(), Some(stored)),
            Err(error) => {
                tracing::warn!(message = "cannot store a large output; job left for redelivery",
                    function = %job.function, invocation_id = %job.invocation_id, error = %error);
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        }
    } else {
        (body, None)
    };
    // The dead letter records this attempt itself, in case the history read back lags.
    let last_attempt =
        (action == JobAction::DeadLetter).then(|| dlq::AttemptRecord::from_result(&meta, &body));
    let reply = header(message.headers.as_ref(), h::REPLY_TO)
        .filter(|to| squall_broker::names::is_reply_subject(to, &job.invocation_id));
    let published = publish_result(
        &outlet.topology,
        &meta,
        job.sequence,
        body,
        stored_output.as_ref(),
        reply,
    )
    .instrument(tracing::info_span!(
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
        let dead = dead_letter(outlet, job, state, message, status, last_attempt).instrument(
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
    outlet: &Outlet,
    job: &JobMeta,
    state: &FunctionState,
    message: &jetstream::Message,
    status: InvocationStatus,
    last_attempt: dlq::AttemptRecord,
) -> anyhow::Result<()> {
    let history =
        dlq::result_history(&outlet.topology.results, &job.function, &job.invocation_id).await;
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
    dlq::publish_dead_letter(&outlet.topology.jetstream, &letter).await?;
    tracing::info!(message = "invocation dead-lettered", function = %job.function,
        invocation_id = %job.invocation_id, status = status.as_str(), attempts = job.attempt);
    Ok(())
}

/// Runs `work` while telling JetStream every `every` that the job is alive, so a result or
/// dead letter that takes a leader election to store does not get the job redelivered meanwhile.
pub(crate) async fn keep_alive<T>(
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
/// result (same terminal message id), that one is what the waiter hears. The result is marked
/// with `job_sequence`, the job message's, so its later deliveries know it for their own
/// (`admit::claim_of`).
async fn publish_result(
    topology: &squall_broker::Topology,
    meta: &ResultMeta,
    job_sequence: u64,
    body: Vec<u8>,
    stored_output: Option<&squall_broker::payloads::PayloadRef>,
    reply: Option<&str>,
) -> anyhow::Result<Stored> {
    let js = &topology.jetstream;
    let subject = results_subject(&meta.function, &meta.invocation_id);
    let body = bytes::Bytes::from(body);
    let mut headers = meta.to_headers();
    headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
    if job_sequence != 0 {
        headers.insert(h::JOB_SEQUENCE, job_sequence.to_string().as_str());
    }
    if let Some(stored) = stored_output {
        headers.insert(h::PAYLOAD, stored.to_header().as_str());
    }
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
pub(crate) async fn drop_cancelled(outlet: &Outlet, job: &JobMeta, message: &jetstream::Message) {
    let topology = &outlet.topology;
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
                worker: outlet.worker_id.clone(),
                trace_id: squall_broker::record::trace_id_of(&job.traceparent),
            };
            let body = b"cancelled".to_vec();
            if let Err(error) =
                publish_result(topology, &meta, job.sequence, body, None, reply).await
            {
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
