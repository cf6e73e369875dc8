//! Cancelling invocations: the pure decision and the one way an invocation ends as cancelled (a marker, then a terminal result), for one id or a function's queued backlog.

use crate::core::broker::{Broker, BrokerError};
use crate::core::invoke::Invoker;
use crate::core::registry::Registry;
use crate::core::waiter::Finished;
use crate::index::Accepted;
use squall_broker::names::{jobs_subject, results_subject};
use squall_broker::time::now_ms;
use squall_broker::{headers as h, publish, InvocationStatus, ResultMeta};

/// The body of a `cancelled` result.
const CANCELLED_BODY: &[u8] = b"cancelled by request";

/// How many cancellations of a backlog are in flight at once.
pub(crate) const BACKLOG_PARALLEL: usize = 64;

/// The most queued jobs one backlog request cancels; a larger backlog needs another request.
pub const MAX_BACKLOG: usize = 100_000;

/// What a cancellation request finds, from the local index and the latest result record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Neither this dispatcher nor RESULTS knows the id.
    Unknown,
    /// It already ended in this state.
    Ended(InvocationStatus),
    /// Queued, retrying or running: cancel it.
    Cancel(Target),
}

/// The invocation a cancellation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub function: String,
    pub created_at_ms: u64,
    /// Attempts made so far (0 when none reported a result yet).
    pub attempts: u32,
    /// The version its latest result ran, when one did.
    pub version: Option<String>,
}

/// Decides what cancelling an invocation means, from what this dispatcher accepted and the
/// invocation's latest result record.
pub fn decide(accepted: Option<&Accepted>, latest: Option<&ResultMeta>) -> Decision {
    match (accepted, latest) {
        (_, Some(meta)) if meta.status.is_terminal() => Decision::Ended(meta.status),
        (_, Some(meta)) => Decision::Cancel(Target {
            function: meta.function.clone(),
            created_at_ms: meta.created_at_ms,
            attempts: meta.attempt,
            version: Some(meta.version.clone()),
        }),
        (Some(accepted), None) => Decision::Cancel(Target {
            function: accepted.function.clone(),
            created_at_ms: accepted.created_at_ms,
            attempts: 0,
            version: None,
        }),
        (None, None) => Decision::Unknown,
    }
}

/// How a cancellation ended.
pub(crate) enum Ended {
    /// The invocation is `cancelled` by this request (the result stored by it, or by a worker
    /// that saw the mark first, or by a concurrent cancellation).
    Cancelled(Finished),
    /// It had already ended otherwise (a worker finished it first), or was cancelled before
    /// this request looked: the stored terminal result.
    Before(Finished),
}

/// Cancels invocation `id` of `target`: marks it for the workers, then stores its terminal
/// `cancelled` result unless another terminal result was stored first.
/// Why a cancellation could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("unreadable result record: {0}")]
    Corrupt(String),
}

pub(crate) async fn cancel(
    invoker: &Invoker,
    registry: &Registry,
    id: &str,
    target: &Target,
) -> Result<Ended, CancelError> {
    let broker = &invoker.submitter.broker;
    let marker = serde_json::json!({ "function": target.function, "at_ms": now_ms() });
    broker
        .topology
        .cancels
        .put(id, marker.to_string().into())
        .await
        .map_err(|e| BrokerError::new("cannot record the cancellation", e))?;
    let version = target.version.clone().unwrap_or_else(|| {
        registry
            .get(&target.function)
            .map(|record| record.version.clone())
            .unwrap_or_default()
    });
    let now = now_ms();
    let meta = ResultMeta {
        invocation_id: id.to_string(),
        function: target.function.clone(),
        version,
        status: InvocationStatus::Cancelled,
        attempt: target.attempts,
        error_kind: None,
        created_at_ms: target.created_at_ms,
        started_at_ms: now,
        finished_at_ms: now,
        duration_us: 0,
        cpu_us: 0,
        kv_ops: 0,
        kv_bytes: 0,
        logs: Vec::new(),
        worker: String::new(),
        trace_id: String::new(),
    };
    let mut headers = meta.to_headers();
    headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
    let ack = publish::publish_acked(
        &broker.topology.jetstream,
        &results_subject(&target.function, id),
        headers,
        CANCELLED_BODY.into(),
        &publish::PublishPolicy::default(),
    )
    .await
    .map_err(|e| BrokerError::new("cannot record the cancelled result", e))?;
    let ended = if ack.duplicate {
        // Another terminal result was stored first; the acknowledgement names it.
        let stored = broker
            .topology
            .results
            .direct_get(ack.sequence)
            .await
            .map_err(|e| BrokerError::new("cannot read the stored result", e))?;
        let meta = ResultMeta::from_headers(&stored.headers)
            .map_err(|e| CancelError::Corrupt(e.to_string()))?;
        let outcome = Finished::of_record(meta, Some(&stored.headers), stored.payload);
        // A worker that saw the mark before this result was stored records `cancelled` too.
        if outcome.meta.status == InvocationStatus::Cancelled {
            Ended::Cancelled(outcome)
        } else {
            Ended::Before(outcome)
        }
    } else {
        let outcome = Finished {
            meta,
            body: CANCELLED_BODY.into(),
            payload: None,
        };
        // A synchronous request waiting here hears of it at once (others: from their worker).
        invoker.waiter.deliver(&outcome);
        Ended::Cancelled(outcome)
    };
    invoker.forget(id);
    Ok(ended)
}

/// The ids and creation times of `function`'s jobs that its consumer has not delivered yet,
/// read one by one with direct gets (JOBS is a work queue: no second consumer may read it).
pub(crate) async fn queued_jobs(
    broker: &Broker,
    function: &str,
) -> Result<Vec<(String, u64)>, BrokerError> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let jobs = &broker.topology.jobs;
    // Jobs after the last one the consumer delivered were never started.
    let delivered = match jobs
        .consumer_info(squall_broker::names::consumer_name(function))
        .await
    {
        Ok(info) => info.delivered.stream_sequence,
        Err(_) => 0,
    };
    let subject = jobs_subject(function);
    let mut next = delivered + 1;
    let mut queued = Vec::new();
    while queued.len() < MAX_BACKLOG {
        let message = match jobs.direct_get_next_for_subject(&subject, Some(next)).await {
            Ok(message) => message,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => {
                return Err(BrokerError::new(
                    "cannot read the function's queued jobs",
                    e,
                ))
            }
        };
        next = message.sequence + 1;
        let published_ms = (message.time.unix_timestamp_nanos() / 1_000_000) as u64;
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        let id = squall_broker::record::job_invocation_id(header).unwrap_or_else(|| {
            squall_broker::record::derived_invocation_id(published_ms, message.sequence)
        });
        let created = header(h::CREATED_AT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(published_ms);
        queued.push((id, created));
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: InvocationStatus) -> ResultMeta {
        ResultMeta {
            invocation_id: "i".into(),
            function: "f".into(),
            version: "sha256:ab".into(),
            status,
            attempt: 2,
            error_kind: None,
            created_at_ms: 7,
            started_at_ms: 8,
            finished_at_ms: 9,
            duration_us: 1,
            cpu_us: 1,
            kv_ops: 0,
            kv_bytes: 0,
            logs: Vec::new(),
            worker: "w".into(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn an_ended_invocation_is_not_cancelled_and_says_how_it_ended() {
        for status in InvocationStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
        {
            assert_eq!(decide(None, Some(&result(status))), Decision::Ended(status));
        }
    }

    #[test]
    fn a_queued_or_retrying_invocation_is_cancelled_with_what_is_known_of_it() {
        let accepted = Accepted {
            function: "f".into(),
            created_at_ms: 5,
        };
        assert_eq!(
            decide(Some(&accepted), None),
            Decision::Cancel(Target {
                function: "f".into(),
                created_at_ms: 5,
                attempts: 0,
                version: None,
            })
        );
        assert_eq!(
            decide(None, Some(&result(InvocationStatus::Retrying))),
            Decision::Cancel(Target {
                function: "f".into(),
                created_at_ms: 7,
                attempts: 2,
                version: Some("sha256:ab".into()),
            })
        );
        assert_eq!(decide(None, None), Decision::Unknown);
    }
}
