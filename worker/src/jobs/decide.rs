//! Pure decisions about an attempt's outcome: how the function's return reads, and how the
//! attempt is settled (the result it records and what happens to its job message).

use crate::loader::CallResult;
use squall_broker::retry::retry_delay;
use squall_broker::spec::Backoff;
use squall_broker::{ErrorKind, InvocationStatus};
use squall_sdk::abi;
use std::time::Duration;

/// How an attempt ended, before any policy is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The function returned output.
    Succeeded(Vec<u8>),
    /// The attempt failed; `retry_after_ms` is the function's own hint (0 = none).
    Failed {
        kind: ErrorKind,
        message: String,
        retry_after_ms: u64,
    },
}

impl Attempt {
    /// A failure with no retry hint.
    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Attempt {
        Attempt::Failed {
            kind,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// The attempt, failed when its output is larger than `max` bytes (the largest output a
    /// result may carry, stored or inline).
    pub fn within(self, max: usize) -> Attempt {
        match self {
            Attempt::Succeeded(output) if output.len() > max => Attempt::failed(
                ErrorKind::Error,
                format!(
                    "the function's output of {} bytes is larger than the limit of {max} bytes",
                    output.len()
                ),
            ),
            other => other,
        }
    }

    /// What a function's return means: its ABI status code, and the body as output or as the
    /// error message.
    pub fn from_call(result: CallResult) -> Attempt {
        let message = |body: &[u8]| String::from_utf8_lossy(body).into_owned();
        match result.status {
            abi::SQUALL_OK => Attempt::Succeeded(result.body),
            abi::SQUALL_ERROR => Attempt::failed(ErrorKind::Error, message(&result.body)),
            abi::SQUALL_RETRY => Attempt::Failed {
                kind: ErrorKind::Retry,
                message: message(&result.body),
                retry_after_ms: result.retry_after_ms,
            },
            abi::SQUALL_PANIC => Attempt::failed(ErrorKind::Panic, message(&result.body)),
            other => Attempt::failed(
                ErrorKind::Error,
                format!(
                    "function returned unknown status {other}: {}",
                    message(&result.body)
                ),
            ),
        }
    }
}

/// How an attempt is settled. Each variant carries exactly what recording its result and
/// handling its job message need; [`Settlement::status`], [`Settlement::error_kind`] and
/// [`Settlement::job_action`] read them out.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Record `succeeded` with the function's output, then acknowledge the job.
    Succeeded { output: Vec<u8> },
    /// A permanent error (kind `error`): record `failed` with its message, then acknowledge.
    Failed { message: String },
    /// Another attempt may help: record `retrying`, then hand the job back to be redelivered
    /// after `delay`.
    Retry {
        kind: ErrorKind,
        message: String,
        delay: Duration,
    },
    /// The last permitted attempt failed: record the dead end (`timed_out` after a timeout,
    /// `dead_lettered` otherwise), write the dead letter, then acknowledge.
    DeadLetter { kind: ErrorKind, message: String },
    /// A failure after the function streamed part of its output, which a retry could not take
    /// back: record the end (`timed_out` after a timeout, `failed` otherwise) with its kind,
    /// then acknowledge.
    Ended { kind: ErrorKind, message: String },
}

/// What happens to the job message once the attempt's result is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    /// Acknowledge: the invocation has its outcome.
    Ack,
    /// Negatively acknowledge, to be redelivered after the delay.
    Redeliver(Duration),
    /// Write the dead letter, then acknowledge.
    DeadLetter,
}

impl Settlement {
    /// The status the attempt's result records.
    pub fn status(&self) -> InvocationStatus {
        match self {
            Settlement::Succeeded { .. } => InvocationStatus::Succeeded,
            Settlement::Failed { .. } => InvocationStatus::Failed,
            Settlement::Retry { .. } => InvocationStatus::Retrying,
            Settlement::DeadLetter { kind, .. } => kind.terminal_status(),
            Settlement::Ended {
                kind: ErrorKind::Timeout,
                ..
            } => InvocationStatus::TimedOut,
            Settlement::Ended { .. } => InvocationStatus::Failed,
        }
    }

    /// The kind of failure the result records; none for a success.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Settlement::Succeeded { .. } => None,
            Settlement::Failed { .. } => Some(ErrorKind::Error),
            Settlement::Retry { kind, .. }
            | Settlement::DeadLetter { kind, .. }
            | Settlement::Ended { kind, .. } => Some(*kind),
        }
    }

    /// What happens to the job message after the result is stored.
    pub fn job_action(&self) -> JobAction {
        match self {
            Settlement::Succeeded { .. } | Settlement::Failed { .. } | Settlement::Ended { .. } => {
                JobAction::Ack
            }
            Settlement::Retry { delay, .. } => JobAction::Redeliver(*delay),
            Settlement::DeadLetter { .. } => JobAction::DeadLetter,
        }
    }

    /// The result's body: the output of a success, the error message of a failure.
    pub fn into_body(self) -> Vec<u8> {
        match self {
            Settlement::Succeeded { output } => output,
            Settlement::Failed { message }
            | Settlement::Retry { message, .. }
            | Settlement::DeadLetter { message, .. }
            | Settlement::Ended { message, .. } => message.into_bytes(),
        }
    }
}

/// Applies the retry policy to an attempt's outcome.
///
/// `attempt` is 1-based; `jitter_unit` in `[0, 1)` is the only source of randomness.
pub fn decide(
    outcome: Attempt,
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
    jitter_unit: f64,
) -> Settlement {
    match outcome {
        Attempt::Succeeded(output) => Settlement::Succeeded { output },
        Attempt::Failed {
            kind: ErrorKind::Error,
            message,
            ..
        } => Settlement::Failed { message },
        // The same input under the same limit would run out again: one attempt is enough.
        Attempt::Failed {
            kind: ErrorKind::OutOfMemory,
            message,
            ..
        } => Settlement::DeadLetter {
            kind: ErrorKind::OutOfMemory,
            message,
        },
        Attempt::Failed {
            kind,
            message,
            retry_after_ms,
        } if attempt < max_attempts => Settlement::Retry {
            kind,
            message,
            delay: retry_delay(backoff, attempt, retry_after_ms, jitter_unit),
        },
        Attempt::Failed { kind, message, .. } => Settlement::DeadLetter { kind, message },
    }
}

/// The settlement of an attempt that streamed part of its output: it succeeded, or it ended
/// (whatever the retry policy says, as the caller already has part of the output).
pub fn decide_streamed(outcome: Attempt) -> Settlement {
    match outcome {
        Attempt::Succeeded(output) => Settlement::Succeeded { output },
        Attempt::Failed { kind, message, .. } => Settlement::Ended { kind, message },
    }
}

/// The jitter of attempt `attempt` of an invocation, in `[0, 1)`: derived from the invocation
/// id, so that a burst of failures spreads out while each attempt's delay stays reproducible.
pub fn jitter_unit(invocation_id: &str, attempt: u32) -> f64 {
    let hash = invocation_id.bytes().fold(u64::from(attempt), |a, b| {
        a.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    (hash % 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: ErrorKind) -> Attempt {
        Attempt::failed(kind, "x")
    }

    fn backoff() -> Backoff {
        Backoff {
            initial_ms: 10,
            multiplier: 2.0,
            max_ms: 100,
            jitter: false,
        }
    }

    #[test]
    fn an_output_over_the_largest_payload_fails_without_a_retry() {
        let over = Attempt::Succeeded(vec![0; 11]).within(10);
        assert!(
            matches!(&over, Attempt::Failed { kind: ErrorKind::Error, message, .. }
                if message.contains("output of 11 bytes is larger than the limit of 10 bytes")),
            "{over:?}"
        );
        assert!(matches!(
            decide(over, 1, 3, &backoff(), 0.0),
            Settlement::Failed { .. }
        ));
        assert!(matches!(
            Attempt::Succeeded(vec![0; 10]).within(10),
            Attempt::Succeeded(_)
        ));
    }

    #[test]
    fn out_of_memory_dead_letters_at_its_first_attempt() {
        let s = decide(failed(ErrorKind::OutOfMemory), 1, 3, &backoff(), 0.0);
        assert_eq!(s.job_action(), JobAction::DeadLetter);
        assert_eq!(s.status(), InvocationStatus::DeadLettered);
        assert_eq!(s.error_kind(), Some(ErrorKind::OutOfMemory));
    }

    #[test]
    fn success_records_the_output_and_acks() {
        let s = decide(Attempt::Succeeded(b"out".to_vec()), 1, 3, &backoff(), 0.0);
        assert_eq!(
            s,
            Settlement::Succeeded {
                output: b"out".to_vec()
            }
        );
        assert_eq!(s.status(), InvocationStatus::Succeeded);
        assert_eq!(s.error_kind(), None);
        assert_eq!(s.job_action(), JobAction::Ack);
        assert_eq!(s.into_body(), b"out");
    }

    #[test]
    fn success_on_the_last_attempt_still_succeeds() {
        let s = decide(Attempt::Succeeded(vec![]), 3, 3, &backoff(), 0.0);
        assert_eq!(s.status(), InvocationStatus::Succeeded);
        assert_eq!(s.job_action(), JobAction::Ack);
    }

    #[test]
    fn permanent_error_fails_at_once_and_acks() {
        let s = decide(failed(ErrorKind::Error), 1, 3, &backoff(), 0.0);
        assert_eq!(
            s,
            Settlement::Failed {
                message: "x".into()
            }
        );
        assert_eq!(s.status(), InvocationStatus::Failed);
        assert_eq!(s.error_kind(), Some(ErrorKind::Error));
        assert_eq!(s.job_action(), JobAction::Ack);
        assert_eq!(s.into_body(), b"x");
    }

    #[test]
    fn panic_retries_until_the_last_attempt_then_dead_letters() {
        let b = backoff();
        let first = decide(failed(ErrorKind::Panic), 1, 3, &b, 0.0);
        assert_eq!(first.status(), InvocationStatus::Retrying);
        assert_eq!(first.error_kind(), Some(ErrorKind::Panic));
        assert_eq!(
            first.job_action(),
            JobAction::Redeliver(Duration::from_millis(10))
        );
        assert_eq!(
            decide(failed(ErrorKind::Panic), 2, 3, &b, 0.0).job_action(),
            JobAction::Redeliver(Duration::from_millis(20))
        );
        let last = decide(failed(ErrorKind::Panic), 3, 3, &b, 0.0);
        assert_eq!(
            last,
            Settlement::DeadLetter {
                kind: ErrorKind::Panic,
                message: "x".into()
            }
        );
        assert_eq!(last.status(), InvocationStatus::DeadLettered);
        assert_eq!(last.job_action(), JobAction::DeadLetter);
    }

    #[test]
    fn a_timeout_on_the_last_attempt_is_timed_out_and_dead_lettered() {
        let s = decide(failed(ErrorKind::Timeout), 2, 2, &backoff(), 0.0);
        assert_eq!(s.status(), InvocationStatus::TimedOut);
        assert_eq!(s.error_kind(), Some(ErrorKind::Timeout));
        assert_eq!(s.job_action(), JobAction::DeadLetter);
    }

    #[test]
    fn a_load_failure_retries_like_a_crash() {
        let s = decide(failed(ErrorKind::Load), 1, 2, &backoff(), 0.0);
        assert_eq!(s.status(), InvocationStatus::Retrying);
        let s = decide(failed(ErrorKind::Load), 2, 2, &backoff(), 0.0);
        assert_eq!(s.status(), InvocationStatus::DeadLettered);
    }

    #[test]
    fn retry_hint_from_the_function_sets_the_delay() {
        let outcome = Attempt::Failed {
            kind: ErrorKind::Retry,
            message: "later".into(),
            retry_after_ms: 42,
        };
        assert_eq!(
            decide(outcome, 1, 2, &backoff(), 0.0),
            Settlement::Retry {
                kind: ErrorKind::Retry,
                message: "later".into(),
                delay: Duration::from_millis(42)
            }
        );
    }

    #[test]
    fn one_attempt_allowed_dead_letters_a_retryable_failure_at_once() {
        let s = decide(failed(ErrorKind::Retry), 1, 1, &backoff(), 0.0);
        assert_eq!(s.job_action(), JobAction::DeadLetter);
    }

    fn call(status: i32, body: &[u8], retry_after_ms: u64) -> CallResult {
        CallResult {
            status,
            body: body.to_vec(),
            retry_after_ms,
        }
    }

    #[test]
    fn abi_statuses_read_as_outcomes() {
        assert_eq!(
            Attempt::from_call(call(abi::SQUALL_OK, b"out", 0)),
            Attempt::Succeeded(b"out".to_vec())
        );
        assert_eq!(
            Attempt::from_call(call(abi::SQUALL_ERROR, b"bad", 0)),
            Attempt::failed(ErrorKind::Error, "bad")
        );
        assert_eq!(
            Attempt::from_call(call(abi::SQUALL_RETRY, b"later", 7)),
            Attempt::Failed {
                kind: ErrorKind::Retry,
                message: "later".into(),
                retry_after_ms: 7
            }
        );
        assert_eq!(
            Attempt::from_call(call(abi::SQUALL_PANIC, b"boom", 0)),
            Attempt::failed(ErrorKind::Panic, "boom")
        );
    }

    #[test]
    fn an_unknown_abi_status_is_a_permanent_error() {
        assert_eq!(
            Attempt::from_call(call(42, b"what", 0)),
            Attempt::failed(
                ErrorKind::Error,
                "function returned unknown status 42: what"
            )
        );
    }

    #[test]
    fn a_failure_after_streaming_ends_the_invocation_without_a_retry() {
        let crash = decide_streamed(failed(ErrorKind::Crash));
        assert_eq!(crash.status(), InvocationStatus::Failed);
        assert_eq!(crash.error_kind(), Some(ErrorKind::Crash));
        assert_eq!(crash.job_action(), JobAction::Ack);
        let timeout = decide_streamed(failed(ErrorKind::Timeout));
        assert_eq!(timeout.status(), InvocationStatus::TimedOut);
        assert_eq!(timeout.job_action(), JobAction::Ack);
        let retry = decide_streamed(failed(ErrorKind::Retry));
        assert_eq!(retry.job_action(), JobAction::Ack);
        assert_eq!(
            decide_streamed(Attempt::Succeeded(Vec::new())),
            Settlement::Succeeded { output: Vec::new() }
        );
    }

    #[test]
    fn jitter_is_reproducible_and_within_the_unit_interval() {
        let id = "0193a5c2-2222-7000-8000-000000000001";
        assert_eq!(jitter_unit(id, 2), jitter_unit(id, 2));
        for attempt in 1..50 {
            let j = jitter_unit(id, attempt);
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
