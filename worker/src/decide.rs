//! Pure decisions about an attempt's outcome: what status it leads to and whether to retry.

use squall_broker::retry::retry_delay;
use squall_broker::spec::Backoff;
use squall_broker::{ErrorKind, InvocationStatus};
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

/// What to do with the job message after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish a result with this terminal status, then acknowledge the job.
    Finish(InvocationStatus),
    /// Publish a `retrying` status, then hand the job back to redeliver after `delay`.
    Retry { delay: Duration },
}

/// Applies the retry policy to an attempt's outcome.
///
/// `attempt` is 1-based; `jitter_unit` in `[0, 1)` is the only source of randomness.
pub fn decide(
    outcome: &Attempt,
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
    jitter_unit: f64,
) -> Decision {
    match outcome {
        Attempt::Succeeded(_) => Decision::Finish(InvocationStatus::Succeeded),
        Attempt::Failed {
            kind,
            retry_after_ms,
            ..
        } => {
            if kind.is_retryable() && attempt < max_attempts {
                Decision::Retry {
                    delay: retry_delay(backoff, attempt, *retry_after_ms, jitter_unit),
                }
            } else {
                Decision::Finish(kind.terminal_status())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: ErrorKind) -> Attempt {
        Attempt::Failed {
            kind,
            message: "x".into(),
            retry_after_ms: 0,
        }
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
    fn success_finishes_as_succeeded() {
        let d = decide(&Attempt::Succeeded(vec![]), 1, 3, &backoff(), 0.0);
        assert_eq!(d, Decision::Finish(InvocationStatus::Succeeded));
    }

    #[test]
    fn permanent_error_never_retries() {
        let d = decide(&failed(ErrorKind::Error), 1, 3, &backoff(), 0.0);
        assert_eq!(d, Decision::Finish(InvocationStatus::Failed));
    }

    #[test]
    fn panic_retries_until_the_last_attempt_then_dead_letters() {
        let b = backoff();
        assert_eq!(
            decide(&failed(ErrorKind::Panic), 1, 3, &b, 0.0),
            Decision::Retry {
                delay: Duration::from_millis(10)
            }
        );
        assert_eq!(
            decide(&failed(ErrorKind::Panic), 2, 3, &b, 0.0),
            Decision::Retry {
                delay: Duration::from_millis(20)
            }
        );
        assert_eq!(
            decide(&failed(ErrorKind::Panic), 3, 3, &b, 0.0),
            Decision::Finish(InvocationStatus::DeadLettered)
        );
    }

    #[test]
    fn retry_hint_from_the_function_sets_the_delay() {
        let outcome = Attempt::Failed {
            kind: ErrorKind::Retry,
            message: "later".into(),
            retry_after_ms: 42,
        };
        assert_eq!(
            decide(&outcome, 1, 2, &backoff(), 0.0),
            Decision::Retry {
                delay: Duration::from_millis(42)
            }
        );
    }
}
