//! The dead-letter queue: the mover that records jobs which exhausted their deliveries, and the
//! `/v1/dlq` API to list, show, replay and remove dead letters.

use crate::core::broker::Broker;
use crate::core::names::FunctionName;
use crate::core::registry::Registry;
use futures::StreamExt;
use squall_broker::dlq::{self, AttemptRecord, DeadLetter, CRASH_MESSAGE};
use squall_broker::names::results_subject;
use squall_broker::time::now_ms;
use squall_broker::topology::dlq_mover_consumer;
use squall_broker::{headers as h, ErrorKind, InvocationStatus, ResultMeta};
use std::time::Duration;

/// What JetStream says when a job ran out of deliveries.
/// The most queued jobs a function delete dead-letters in one request.
pub const MAX_SWEPT: usize = 100_000;

/// Dead-letters every job still queued for a deleted function, so none is left without an
/// outcome. Returns how many were moved.
pub async fn sweep_deleted_function(
    broker: &Broker,
    registry: &Registry,
    function: &str,
) -> anyhow::Result<usize> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let subject = squall_broker::names::jobs_subject(function);
    let mut next = 1;
    let mut moved = 0;
    while moved < MAX_SWEPT {
        match broker
            .topology
            .jobs
            .get_first_raw_message_by_subject(&subject, next)
            .await
        {
            Ok(job) => {
                remove_job(broker, registry, job.sequence, Removal::FunctionDeleted).await?;
                next = job.sequence + 1;
                moved += 1;
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => anyhow::bail!("cannot read queued jobs of {function}: {e}"),
        }
    }
    Ok(moved)
}

#[derive(Debug, serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// Runs the dead-letter mover until the process ends. Every dispatcher runs one; they share one
/// durable consumer on a work-queue stream, so each exhausted job is handled once, and the DLQ
/// record is de-duplicated by invocation id besides.
pub async fn run_mover(broker: Broker, registry: Registry) {
    loop {
        if let Err(error) = mover(&broker, &registry).await {
            tracing::warn!(message = "dead-letter mover failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn mover(broker: &Broker, registry: &Registry) -> anyhow::Result<()> {
    let consumer = dlq_mover_consumer(&broker.topology.advisories).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        match serde_json::from_slice::<MaxDeliveries>(&message.payload) {
            Ok(advisory) => {
                if let Err(error) = move_to_dlq(broker, registry, &advisory).await {
                    // Not acknowledged: the advisory comes back and the move is retried.
                    tracing::warn!(message = "cannot dead-letter an exhausted job; will retry",
                        stream_seq = advisory.stream_seq, error = %error);
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(message = "ignoring an unreadable advisory", error = %error)
            }
        }
        let _ = message.ack().await;
    }
    Ok(())
}

/// Why a job is taken out of JOBS by a dispatcher rather than acknowledged by a worker.
#[derive(Debug, Clone, Copy)]
pub enum Removal {
    /// JetStream gave up after this many deliveries without an outcome: its workers died.
    Exhausted { deliveries: u32 },
    /// Its function was deleted before the job ran.
    FunctionDeleted,
}

async fn move_to_dlq(
    broker: &Broker,
    registry: &Registry,
    advisory: &MaxDeliveries,
) -> anyhow::Result<()> {
    let deliveries = advisory.deliveries.clamp(1, u64::from(u32::MAX)) as u32;
    remove_job(
        broker,
        registry,
        advisory.stream_seq,
        Removal::Exhausted { deliveries },
    )
    .await
}

/// Takes the job at `stream_seq` out of JOBS so that its invocation still ends in exactly one
/// terminal state: when it has none yet, writes one (`dead_lettered`, kind `crash` or `load`)
/// and a dead letter; a dead letter is also written when the worker recorded a dead end but
/// could not store the record. Safe to repeat.
pub async fn remove_job(
    broker: &Broker,
    registry: &Registry,
    stream_seq: u64,
    removal: Removal,
) -> anyhow::Result<()> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let jobs = &broker.topology.jobs;
    let job = match jobs.get_raw_message(stream_seq).await {
        Ok(job) => job,
        // Already moved (or acknowledged at the last moment): nothing to do.
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => anyhow::bail!("cannot read job {stream_seq}: {e}"),
    };
    let function = job
        .subject
        .as_str()
        .strip_prefix("jobs.")
        .unwrap_or_default()
        .to_string();
    let published_ms = (job.time.unix_timestamp_nanos() / 1_000_000) as u64;
    let header = |name: &str| job.headers.get(name).map(|v| v.as_str().to_string());
    let id = squall_broker::record::job_invocation_id(header).unwrap_or_else(|| {
        squall_broker::record::derived_invocation_id(published_ms, job.sequence)
    });
    let created_at_ms = header(h::CREATED_AT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(published_ms);
    let history = dlq::result_history(&broker.topology.results, &function, &id).await;
    let recorded = history
        .iter()
        .map(|(meta, _)| meta.attempt)
        .max()
        .unwrap_or(0);
    let (attempts, kind, reason) = match removal {
        Removal::Exhausted { deliveries } => (
            deliveries.max(recorded),
            ErrorKind::Crash,
            CRASH_MESSAGE.to_string(),
        ),
        Removal::FunctionDeleted => (
            recorded + 1,
            ErrorKind::Load,
            format!("function {function} was deleted before this invocation ran"),
        ),
    };
    let version = match history.last() {
        Some((meta, _)) => meta.version.clone(),
        None => match FunctionName::parse(function.clone()) {
            Ok(name) => registry
                .load(&name)
                .await
                .map(|record| record.version)
                .unwrap_or_default(),
            Err(_) => String::new(),
        },
    };
    let terminal = history
        .last()
        .filter(|(meta, _)| meta.status.is_terminal())
        .map(|(m, _)| m.status);
    let status = match terminal {
        // Finished normally; only the acknowledgement was lost. Nothing to dead-letter.
        Some(InvocationStatus::Succeeded | InvocationStatus::Failed) => {
            jobs.delete_message(stream_seq).await?;
            return Ok(());
        }
        Some(status) => status,
        None => {
            let now = now_ms();
            let meta = ResultMeta {
                invocation_id: id.clone(),
                function: function.clone(),
                version: version.clone(),
                status: InvocationStatus::DeadLettered,
                attempt: attempts,
                error_kind: Some(kind),
                created_at_ms,
                started_at_ms: now,
                finished_at_ms: now,
                duration_us: 0,
                cpu_us: 0,
                kv_ops: 0,
                kv_bytes: 0,
                logs: Vec::new(),
                worker: String::new(),
                trace_id: squall_broker::record::trace_id_of(
                    &header(h::TRACEPARENT).unwrap_or_default(),
                ),
            };
            let mut headers = meta.to_headers();
            headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
            let reply = header(h::REPLY_TO)
                .filter(|to| squall_broker::names::is_reply_subject(to, &id))
                .map(|to| (to, headers.clone()));
            squall_broker::publish::publish_acked(
                &broker.topology.jetstream,
                &results_subject(&function, &id),
                headers,
                reason.clone().into(),
                &squall_broker::publish::PublishPolicy::default(),
            )
            .await?;
            // A synchronous caller still waiting hears of the crash at once.
            if let Some((to, headers)) = reply {
                let _ = broker
                    .client
                    .publish_with_headers(to, headers, reason.clone().into())
                    .await;
            }
            InvocationStatus::DeadLettered
        }
    };
    let mut letter = DeadLetter::builder(&id, &function, &version, created_at_ms)
        .status(status)
        .job(Some(&job.headers), &job.payload)
        .history(&history);
    if terminal.is_none() {
        if let Removal::FunctionDeleted = removal {
            let now = now_ms();
            letter = letter.attempt(AttemptRecord {
                attempt: attempts,
                kind: Some(kind),
                message: reason.clone(),
                started_at_ms: now,
                finished_at_ms: now,
                duration_us: 0,
                worker: String::new(),
            });
        }
    }
    let letter = letter.build(attempts, now_ms());
    dlq::publish_dead_letter(&broker.topology.jetstream, &letter).await?;
    jobs.delete_message(stream_seq).await?;
    tracing::info!(message = "job dead-lettered", function = %function, invocation_id = %id, attempts, reason = %reason);
    Ok(())
}
