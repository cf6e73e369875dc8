//! Invocation statuses and error kinds, as they travel in headers and appear in the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an invocation is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvocationStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    TimedOut,
    DeadLettered,
    /// Cancelled before it finished (`DELETE /v1/invocations/{id}`); never runs afterwards.
    Cancelled,
}

impl InvocationStatus {
    /// The wire and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::DeadLettered => "dead_lettered",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            "dead_lettered" => Self::DeadLettered,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Every status, in lifecycle order (the terminal ones last).
    pub const ALL: [InvocationStatus; 8] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::DeadLettered,
        Self::Cancelled,
    ];

    /// True for the five states an invocation ends in.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::TimedOut | Self::DeadLettered | Self::Cancelled
        )
    }

    /// True for the terminal states that count as errors: an invocation that failed, timed
    /// out or was dead-lettered (not one that succeeded or was cancelled).
    pub fn is_error(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut | Self::DeadLettered)
    }
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The function reported a permanent error.
    Error,
    /// The function asked to be retried.
    Retry,
    /// The function panicked (caught at the ABI boundary).
    Panic,
    /// The attempt ran past the function's timeout.
    Timeout,
    /// The worker died while running the attempt.
    Crash,
    /// The artifact could not be fetched or loaded.
    Load,
    /// The function asked for more memory than its `memory_mb` allows.
    OutOfMemory,
}

impl ErrorKind {
    /// The wire and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Retry => "retry",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Crash => "crash",
            Self::Load => "load",
            Self::OutOfMemory => "out_of_memory",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "error" => Self::Error,
            "retry" => Self::Retry,
            "panic" => Self::Panic,
            "timeout" => Self::Timeout,
            "crash" => Self::Crash,
            "load" => Self::Load,
            "out_of_memory" => Self::OutOfMemory,
            _ => return None,
        })
    }

    /// The terminal status of an invocation whose last permitted attempt failed this way.
    pub fn terminal_status(self) -> InvocationStatus {
        match self {
            Self::Error => InvocationStatus::Failed,
            Self::Timeout => InvocationStatus::TimedOut,
            Self::Retry | Self::Panic | Self::Crash | Self::Load | Self::OutOfMemory => {
                InvocationStatus::DeadLettered
            }
        }
    }

    /// Whether another attempt may help: not after a permanent error, nor after running out
    /// of memory (the same input under the same limit would again).
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::Error | Self::OutOfMemory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_wire_spelling() {
        for s in InvocationStatus::ALL {
            assert_eq!(InvocationStatus::parse(s.as_str()), Some(s));
        }
        assert!(InvocationStatus::Cancelled.is_terminal());
        assert!(!InvocationStatus::Cancelled.is_error());
    }

    #[test]
    fn permanent_errors_fail_and_others_dead_letter() {
        assert_eq!(ErrorKind::Error.terminal_status(), InvocationStatus::Failed);
        assert_eq!(
            ErrorKind::Timeout.terminal_status(),
            InvocationStatus::TimedOut
        );
        assert_eq!(
            ErrorKind::Panic.terminal_status(),
            InvocationStatus::DeadLettered
        );
        assert!(!ErrorKind::Error.is_retryable());
        assert!(ErrorKind::Load.is_retryable());
        assert_eq!(
            ErrorKind::OutOfMemory.terminal_status(),
            InvocationStatus::DeadLettered
        );
        assert_eq!(
            ErrorKind::parse(ErrorKind::OutOfMemory.as_str()),
            Some(ErrorKind::OutOfMemory)
        );
        assert_eq!(ErrorKind::OutOfMemory.as_str(), "out_of_memory");
    }
}
