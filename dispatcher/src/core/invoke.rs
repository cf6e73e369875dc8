//! One invoke core for every front: submit a job, wait for its outcome, and say how it ended.
//! The native API, web functions and the Lambda API each render the `Outcome` in their own
//! wire format; none of them calls another's handler or reads another's HTTP answer.

use crate::core::submit::{Job, SubmitError, Submitter};
use crate::core::waiter::{Finished, ResultWaiter};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use squall_broker::names::results_subject;
use squall_broker::{FunctionRecord, InvocationStatus, ResultMeta};
use std::time::Duration;

/// Added to the default wait for the time a job spends queued and in transit.
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// How long a synchronous invoke waits by default: every attempt's timeout plus the backoff
/// between attempts, capped by the dispatcher's `max_wait`.
pub fn default_wait(record: &FunctionRecord, max_wait: Duration) -> Duration {
    let attempts = record.max_attempts.max(1);
    // Room for queueing and delivery on top of the function's own time.
    let mut total = Duration::from_millis(record.timeout_ms) * attempts + WAIT_SLACK;
    for attempt in 1..attempts {
        total += squall_broker::retry::retry_delay(&record.backoff, attempt, 0, 1.0);
    }
    total.min(max_wait)
}

/// The `squall.invoke` span of one invoke request, continuing the caller's trace when its
/// `traceparent` is valid; a front records the invocation id, outcome and status in it.
pub fn invoke_span(function: &str, client_traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "squall.invoke",
        otel.kind = "server",
        squall.function = %function,
        squall.invocation_id = tracing::field::Empty,
        squall.outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    squall_telemetry::set_parent(
        &span,
        squall_telemetry::context_from_traceparent(client_traceparent),
    );
    span
}

/// What the invoke core needs: job submission and the waiter of this dispatcher's replies.
#[derive(Clone)]
pub struct Invoker {
    pub submitter: Submitter,
    pub waiter: ResultWaiter,
    /// Large inputs and outputs (claim checks).
    pub payloads: crate::core::payloads::Payloads,
}

/// One invocation to make, its id already claimed and its version already resolved.
pub struct Call<'a> {
    pub function: &'a str,
    /// `sha256:<hex>`: the version the worker runs.
    pub version: &'a str,
    pub id: &'a str,
    pub created_at_ms: u64,
    /// The id came from a repeated idempotency key: an earlier request may have published
    /// the job and may be waiting for it.
    pub repeated: bool,
    pub traceparent: &'a str,
    /// What made it: `http`, `web`, ….
    pub source: &'static str,
    pub extra_headers: Vec<(String, String)>,
    /// How long to wait for the outcome; `None` answers as soon as the job is stored.
    pub wait: Option<Duration>,
}

impl<'a> Call<'a> {
    /// The job this call publishes; `reply_to` names the waiting request's reply subject.
    pub fn into_job<'b>(self, reply_to: Option<&'b str>) -> Job<'b>
    where
        'a: 'b,
    {
        Job {
            reply_to,
            function: self.function,
            version: self.version,
            id: self.id,
            created_at_ms: self.created_at_ms,
            traceparent: self.traceparent,
            source: self.source,
            extra_headers: self.extra_headers,
        }
    }
}

/// How an invocation ended, or that it has not ended yet.
#[derive(Debug)]
pub enum Outcome {
    /// The function's output is the body.
    Succeeded(Finished),
    /// It failed terminally (an error, a panic, a crash, a time-out): the body is the error
    /// message and `kind` says how.
    Failed(Finished),
    /// Cancelled by request before it ran to the end.
    Cancelled(Finished),
    /// Accepted and not finished within the wait (or not waited for).
    Pending {
        id: String,
        status: InvocationStatus,
    },
}

impl Outcome {
    /// The outcome a terminal result gives.
    pub fn of(finished: Finished) -> Outcome {
        match finished.meta.status {
            InvocationStatus::Succeeded => Outcome::Succeeded(finished),
            InvocationStatus::Cancelled => Outcome::Cancelled(finished),
            _ => Outcome::Failed(finished),
        }
    }

    /// The terminal result, unless it is still pending.
    pub fn finished(&self) -> Option<&Finished> {
        match self {
            Outcome::Succeeded(f) | Outcome::Failed(f) | Outcome::Cancelled(f) => Some(f),
            Outcome::Pending { .. } => None,
        }
    }

    /// How a failed or cancelled invocation ended: the result's error kind (`error` when it
    /// names none), or `cancelled`.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Outcome::Failed(f) => Some(f.meta.error_kind.map(|k| k.as_str()).unwrap_or("error")),
            Outcome::Cancelled(_) => Some("cancelled"),
            Outcome::Succeeded(_) | Outcome::Pending { .. } => None,
        }
    }
}

/// Why an invocation could not be made or followed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("cannot read results: {0}")]
    Broker(String),
    #[error("unreadable result record: {0}")]
    Corrupt(String),
}

impl Invoker {
    /// Submits `call` and, when it asks to wait, waits for its terminal result: first the direct
    /// reply, then, if none came in time, RESULTS once.
    pub async fn invoke(&self, call: Call<'_>, payload: Bytes) -> Result<Outcome, InvokeError> {
        // Register before publishing, so the result cannot arrive unseen.
        let registration = call.wait.map(|wait| (self.waiter.register(call.id), wait));
        let (function, id, repeated) = (call.function, call.id, call.repeated);
        let job = call.into_job(registration.as_ref().map(|(r, _)| r.reply_to.as_str()));
        // A repeated idempotency key publishes again with the same `Nats-Msg-Id`: JetStream
        // drops it as a duplicate when the first publish happened, and accepts it when that one
        // was lost.
        self.submitter.submit(job, payload).await?;
        let Some((mut registration, wait)) = registration else {
            return Ok(Outcome::Pending {
                id: id.to_string(),
                status: InvocationStatus::Queued,
            });
        };
        // A repeated key's job carries the first request's reply subject: follow the result
        // subject instead, then look at what RESULTS already holds.
        let mut followed = None;
        if repeated {
            followed = self.waiter.follow(function, id).await;
            if let Some(finished) = self.lookup(id, Some(function)).await? {
                if finished.meta.status.is_terminal() {
                    return Ok(Outcome::of(finished));
                }
            }
        }
        let finished = self.waiter.wait(&mut registration, followed, wait).await;
        self.conclude(function, id, finished).await
    }

    /// How a synchronous wait for `id` ended: with `finished` when a reply brought it, else
    /// with what RESULTS holds (terminal, or the latest status of a pending invocation).
    pub async fn conclude(
        &self,
        function: &str,
        id: &str,
        finished: Option<Finished>,
    ) -> Result<Outcome, InvokeError> {
        let finished = match finished {
            Some(finished) => Some(finished),
            None => self
                .lookup(id, Some(function))
                .await?
                .filter(|f| f.meta.status.is_terminal()),
        };
        match finished {
            Some(finished) => {
                self.forget(id);
                self.submitter
                    .metrics
                    .sync_outcome(function, finished.meta.status);
                Ok(Outcome::of(finished))
            }
            None => {
                let status = match self.lookup(id, Some(function)).await? {
                    Some(latest) => latest.meta.status,
                    None => InvocationStatus::Queued,
                };
                Ok(Outcome::Pending {
                    id: id.to_string(),
                    status,
                })
            }
        }
    }

    /// The latest result record of an invocation (of `function`, when known), if any.
    pub async fn lookup(
        &self,
        id: &str,
        function: Option<&str>,
    ) -> Result<Option<Finished>, InvokeError> {
        let subject = match function {
            Some(f) => results_subject(f, id),
            None => format!("results.*.{id}"),
        };
        match self
            .submitter
            .broker
            .topology
            .results
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => {
                let meta = ResultMeta::from_headers(&message.headers)
                    .map_err(|e| InvokeError::Corrupt(e.to_string()))?;
                Ok(Some(Finished::of_record(
                    meta,
                    Some(&message.headers),
                    message.payload,
                )))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(InvokeError::Broker(e.to_string())),
        }
    }

    /// Drops a finished invocation from the local index: RESULTS answers for it from now on.
    pub fn forget(&self, id: &str) {
        if let Err(error) = self.submitter.index.remove(id) {
            tracing::warn!(message = "cannot drop a finished invocation from the index", invocation_id = %id, %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_broker::FunctionSpec;

    #[test]
    fn default_wait_covers_every_attempt_and_backoff() {
        let spec = FunctionSpec {
            timeout_ms: 1000,
            max_attempts: 3,
            ..FunctionSpec::default()
        };
        let spec = FunctionRecord::new("f", "00", 1, 0, &spec);
        // 3 × 1 s of timeouts, backoff of about 1 s and 2 s, and 5 s of slack.
        let wait = default_wait(&spec, Duration::from_secs(300));
        assert!(
            wait >= Duration::from_secs(10) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        assert_eq!(
            default_wait(&spec, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
