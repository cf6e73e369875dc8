//! Publishing to a JetStream stream through leader elections and reconnects: the same message
//! (same `Nats-Msg-Id`) is sent again until the broker acknowledges it or the budget is spent.
//!
//! Invariant: only a message carrying `Nats-Msg-Id` is retried, so a try that reached the stream
//! but whose acknowledgement was lost is dropped as a duplicate by the stream, never stored
//! twice. A refusal that a retry cannot change (a full stream, a message over the size limit) is
//! returned at once.

use crate::backoff::Doubling;
use crate::headers as h;
use async_nats::jetstream::context::{PublishError as NatsPublishError, PublishErrorKind};
use async_nats::jetstream::{self, publish::PublishAck};
use async_nats::HeaderMap;
use std::time::{Duration, Instant};

/// How long a publish may keep trying by default: about the longest leader election of a
/// three-node cluster after a node dies, with room to spare.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(15);
/// How long one try waits for its acknowledgement before it is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before the second try; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The least time a try must have left in the budget to wait for its acknowledgement.
const LAST_TRY_MIN: Duration = Duration::from_millis(100);
/// JetStream's answer to a message whose id is already being stored (`409`, 10158).
const DUPLICATE_IN_PROCESS: jetstream::ErrorCode = jetstream::ErrorCode(10158);
/// What a refused client is told to wait before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// How hard a publish tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishPolicy {
    /// The whole time a publish may take, every try included.
    pub budget: Duration,
    /// The wait for one try's acknowledgement.
    pub ack_timeout: Duration,
}

impl Default for PublishPolicy {
    fn default() -> Self {
        PublishPolicy {
            budget: DEFAULT_BUDGET,
            ack_timeout: ACK_TIMEOUT,
        }
    }
}

impl PublishPolicy {
    /// A policy with `budget`, each try waiting at most the default ack timeout (never beyond
    /// the budget).
    pub fn with_budget(budget: Duration) -> PublishPolicy {
        PublishPolicy {
            budget,
            ack_timeout: ACK_TIMEOUT.min(budget),
        }
    }
}

/// Why a publish was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker never acknowledged within the budget (no stream leader, no connection).
    #[error("the broker did not acknowledge within {} ms ({tries} tries): {last}", budget.as_millis())]
    Unacknowledged {
        budget: Duration,
        tries: u32,
        last: String,
    },
    /// The stream is at its limit and refuses new messages until some are consumed.
    #[error("the stream is full: {0}")]
    Full(String),
    /// The subject is at the stream's per-subject limit (a function's backlog in JOBS): the
    /// stream still takes other subjects' messages.
    #[error("the subject is full: {0}")]
    SubjectFull(String),
    /// The broker refused the message for a reason a retry cannot change.
    #[error("the broker refused the message: {0}")]
    Refused(String),
}

/// What a failed try means for the publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The broker may accept the same message shortly (election, reconnect, lost ack).
    Transient,
    /// The stream is full.
    Full,
    /// The subject is at the stream's per-subject limit.
    SubjectFull,
    /// Never going to be accepted.
    Permanent,
}

/// Classifies a failed try. A JetStream API error of status 503 is the cluster saying it
/// cannot serve right now (no leader, no quorum), except a stream at its limits.
pub fn classify(error: &NatsPublishError) -> Failure {
    match error.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Failure::Transient,
        // No responders: during an election or a reconnect no node answers for the subject.
        PublishErrorKind::StreamNotFound => Failure::Transient,
        PublishErrorKind::Other => {
            let api = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<jetstream::Error>());
            match api {
                Some(api) if api.code() == 503 => classify_unavailable(&api.to_string()),
                // The first copy of this message is still being replicated (no quorum yet):
                // its outcome is unknown, so the same message is sent again later.
                Some(api) if api.error_code() == DUPLICATE_IN_PROCESS => Failure::Transient,
                Some(_) => Failure::Permanent,
                // Not an API answer (for example a reply that did not parse): try again.
                None => Failure::Transient,
            }
        }
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxAckPending => Failure::Permanent,
    }
}

/// A 503 from JetStream: full when it names a stream limit, transient otherwise.
fn classify_unavailable(description: &str) -> Failure {
    let text = description.to_ascii_lowercase();
    if text.contains("maximum messages per subject") {
        Failure::SubjectFull
    } else if text.contains("maximum bytes") || text.contains("maximum messages") {
        Failure::Full
    } else {
        Failure::Transient
    }
}

/// The pauses between the tries of a publish started at `started`: `FIRST_BACKOFF` doubling up
/// to `MAX_BACKOFF`, and none after which the next try would have less than `LAST_TRY_MIN` of
/// the budget left to wait for its acknowledgement.
pub fn pauses(started: Instant, policy: &PublishPolicy) -> Doubling {
    Doubling::new(FIRST_BACKOFF, MAX_BACKOFF)
        .until(started + policy.budget.saturating_sub(LAST_TRY_MIN))
}

/// Publishes `payload` with `headers` to `subject` and waits for the stream's acknowledgement,
/// trying again with the same message while the failure is transient and the budget lasts.
/// `headers` must carry `Nats-Msg-Id` for a retry to be safe; without one a single try is made.
pub async fn publish_acked(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: bytes::Bytes,
    policy: &PublishPolicy,
) -> Result<PublishAck, PublishError> {
    let started = Instant::now();
    let retry_safe = headers.get(h::NATS_MSG_ID).is_some();
    let mut pauses = pauses(started, policy);
    let mut tries = 0;
    loop {
        tries += 1;
        let remaining = policy.budget.saturating_sub(started.elapsed());
        let wait = policy
            .ack_timeout
            .min(remaining)
            .max(Duration::from_millis(100));
        let attempt = async {
            js.publish_with_headers(subject.to_string(), headers.clone(), payload.clone())
                .await?
                .await
        };
        let error = match tokio::time::timeout(wait, attempt).await {
            Ok(Ok(ack)) => {
                if tries > 1 {
                    tracing::info!(
                        message = "publish acknowledged after trying again",
                        subject,
                        tries,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        duplicate = ack.duplicate
                    );
                }
                return Ok(ack);
            }
            Ok(Err(error)) => error,
            Err(_) => NatsPublishError::new(PublishErrorKind::TimedOut),
        };
        match classify(&error) {
            Failure::Full => return Err(PublishError::Full(error_text(&error))),
            Failure::SubjectFull => return Err(PublishError::SubjectFull(error_text(&error))),
            Failure::Permanent => return Err(PublishError::Refused(error_text(&error))),
            Failure::Transient => match pauses.fail_at(Instant::now()).filter(|_| retry_safe) {
                Some(pause) => {
                    tracing::debug!(message = "publish not acknowledged; trying again", subject,
                        tries, error = %error);
                    tokio::time::sleep(pause).await;
                }
                None => {
                    return Err(PublishError::Unacknowledged {
                        budget: policy.budget,
                        tries,
                        last: error_text(&error),
                    })
                }
            },
        }
    }
}

/// The error with its source, which holds the broker's own description.
fn error_text(error: &NatsPublishError) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second_and_stop_before_the_budget_ends() {
        let started = Instant::now();
        let policy = PublishPolicy::with_budget(Duration::from_secs(15));
        let schedule = pauses(started, &policy);
        assert_eq!(schedule.pause_after(1), Duration::from_millis(50));
        assert_eq!(schedule.pause_after(5), Duration::from_millis(800));
        assert_eq!(schedule.pause_after(6), MAX_BACKOFF);
        let mut late = schedule;
        assert_eq!(
            late.fail_at(started + Duration::from_secs(10)),
            Some(Duration::from_millis(50))
        );
        let mut too_late = schedule;
        assert_eq!(
            too_late.fail_at(started + Duration::from_millis(14_850)),
            None
        );
        let tiny = PublishPolicy::with_budget(Duration::from_millis(500));
        assert_eq!(tiny.ack_timeout, Duration::from_millis(500));
    }

    #[test]
    fn timeouts_and_no_responders_are_transient_limits_are_not() {
        assert_eq!(
            classify(&NatsPublishError::new(PublishErrorKind::TimedOut)),
            Failure::Transient
        );
        assert_eq!(
            classify(&NatsPublishError::new(PublishErrorKind::StreamNotFound)),
            Failure::Transient
        );
        assert_eq!(
            classify(&NatsPublishError::new(PublishErrorKind::MaxPayloadExceeded)),
            Failure::Permanent
        );
        assert_eq!(
            classify_unavailable("maximum bytes exceeded (code 503, error code 10077)"),
            Failure::Full
        );
        assert_eq!(
            classify_unavailable(
                "maximum messages per subject exceeded (code 503, error code 10077)"
            ),
            Failure::SubjectFull
        );
        assert_eq!(
            classify_unavailable("JetStream system temporarily unavailable (code 503)"),
            Failure::Transient
        );
    }
}
