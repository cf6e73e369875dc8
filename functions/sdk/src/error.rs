//! `FnError`: how a function tells the platform whether a failure is worth retrying.

use std::fmt;
use std::time::Duration;

/// The error a handler returns.
///
/// The variant decides what the platform does next: a [`FnError::Permanent`] error ends the
/// invocation as `failed` (status `SQUALL_ERROR`), a [`FnError::Retry`] error asks for another
/// attempt (status `SQUALL_RETRY`) until the function's `max_attempts` is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FnError {
    /// Retrying cannot help: bad input, a missing record, a refused request.
    Permanent(String),
    /// The failure may go away: a busy dependency, a lost connection, a rate limit.
    Retry {
        /// What went wrong.
        message: String,
        /// A suggested delay before the next attempt; `None` lets the function's backoff
        /// policy decide.
        after: Option<Duration>,
    },
}

impl FnError {
    /// A permanent error: the invocation fails without further attempts.
    pub fn permanent(message: impl Into<String>) -> FnError {
        FnError::Permanent(message.into())
    }

    /// A retryable error; the function's backoff policy picks the delay.
    pub fn retry(message: impl Into<String>) -> FnError {
        FnError::Retry {
            message: message.into(),
            after: None,
        }
    }

    /// A retryable error with a suggested delay before the next attempt.
    ///
    /// The delay travels in whole milliseconds, rounded up; a zero delay means "policy default".
    pub fn retry_after(message: impl Into<String>, after: Duration) -> FnError {
        FnError::Retry {
            message: message.into(),
            after: Some(after),
        }
    }

    /// The error message, without the variant.
    pub fn message(&self) -> &str {
        match self {
            FnError::Permanent(message) | FnError::Retry { message, .. } => message,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retry(&self) -> bool {
        matches!(self, FnError::Retry { .. })
    }
}

impl fmt::Display for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for FnError {}

/// A JSON error inside a handler (for example while reading `ctx.config()` into a struct) is
/// treated as permanent: the same bytes will not parse any better next time.
impl From<serde_json::Error> for FnError {
    fn from(error: serde_json::Error) -> FnError {
        FnError::Permanent(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_the_message_only() {
        assert_eq!(
            FnError::permanent("no such user").to_string(),
            "no such user"
        );
        let retry = FnError::retry_after("busy", Duration::from_millis(5));
        assert_eq!(retry.to_string(), "busy");
        assert!(retry.is_retry());
        assert!(!FnError::permanent("x").is_retry());
    }

    #[test]
    fn retry_has_no_delay_unless_given() {
        assert_eq!(
            FnError::retry("busy"),
            FnError::Retry {
                message: "busy".to_owned(),
                after: None
            }
        );
    }

    #[test]
    fn json_errors_are_permanent() {
        let error = serde_json::from_str::<u32>("\"seven\"").unwrap_err();
        let text = error.to_string();
        assert_eq!(FnError::from(error), FnError::Permanent(text));
    }
}
