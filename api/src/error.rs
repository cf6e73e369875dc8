//! The error shape every failing route answers with: `{"error": {"code", "message", …}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code` to branch on and a `message` for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `invalid_name` or `function_not_found`: one of
    /// `ErrorCode`.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    pub message: String,
    /// Extra fields of some errors: `kind` and `invocation_id` of a failed invocation,
    /// `scope` of a refused key, the limit of an oversized body.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ErrorDetail {
    /// A string field of `extra`, such as `kind`.
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(serde_json::Value::as_str)
    }
}

/// Every `code` an error answer of the API can carry: stable, to branch on. (`ErrorDetail`
/// keeps the code as a string on the wire, so a client built against an older list still
/// reads a newer code.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    AliasNotFound,
    AlreadyFinished,
    BadMultipart,
    BrokerUnavailable,
    BucketNotFound,
    ConcurrentChange,
    DeadLetterNotFound,
    DestinationDeadLetterNotFound,
    EmptyBatch,
    Forbidden,
    FunctionBacklogFull,
    FunctionFailed,
    FunctionNotFound,
    FunctionTimedOut,
    FunctionUnanswered,
    HeadersTooLarge,
    IdempotencyKeyReused,
    IndexUnavailable,
    Internal,
    InvalidAlias,
    InvalidArtifact,
    InvalidCallbackUrl,
    InvalidCloudevent,
    InvalidCron,
    InvalidCursor,
    InvalidGroupBy,
    InvalidIdempotencyKey,
    InvalidInvocationId,
    InvalidKey,
    InvalidLimit,
    InvalidLine,
    InvalidName,
    InvalidPath,
    InvalidQualifier,
    InvalidQuery,
    InvalidResponse,
    InvalidSchedule,
    InvalidScope,
    InvalidSecrets,
    InvalidSpec,
    InvalidStatus,
    InvalidSubject,
    InvalidTime,
    InvalidTimezone,
    InvalidTrigger,
    InvalidVersion,
    InvalidWeights,
    InvalidWindow,
    InvocationCancelled,
    InvocationNotFound,
    KeyExists,
    KeyNotFound,
    LineTooLarge,
    MissingFunction,
    NoOutput,
    NotAWebFunction,
    NotFinished,
    NotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    ReplayRefused,
    RequestTimeout,
    RouteNotFound,
    ScheduleNotFound,
    SubjectInUse,
    TooManyLines,
    TriggerNotFound,
    TriggerOverlap,
    Unauthorized,
    UriTooLong,
    VersionInUse,
    VersionNotFound,
}

impl ErrorCode {
    /// Every code, in the order the document lists them.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::AliasNotFound,
        ErrorCode::AlreadyFinished,
        ErrorCode::BadMultipart,
        ErrorCode::BrokerUnavailable,
        ErrorCode::BucketNotFound,
        ErrorCode::ConcurrentChange,
        ErrorCode::DeadLetterNotFound,
        ErrorCode::DestinationDeadLetterNotFound,
        ErrorCode::EmptyBatch,
        ErrorCode::Forbidden,
        ErrorCode::FunctionBacklogFull,
        ErrorCode::FunctionFailed,
        ErrorCode::FunctionNotFound,
        ErrorCode::FunctionTimedOut,
        ErrorCode::FunctionUnanswered,
        ErrorCode::HeadersTooLarge,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IndexUnavailable,
        ErrorCode::Internal,
        ErrorCode::InvalidAlias,
        ErrorCode::InvalidArtifact,
        ErrorCode::InvalidCallbackUrl,
        ErrorCode::InvalidCloudevent,
        ErrorCode::InvalidCron,
        ErrorCode::InvalidCursor,
        ErrorCode::InvalidGroupBy,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::InvalidInvocationId,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidLimit,
        ErrorCode::InvalidLine,
        ErrorCode::InvalidName,
        ErrorCode::InvalidPath,
        ErrorCode::InvalidQualifier,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidResponse,
        ErrorCode::InvalidSchedule,
        ErrorCode::InvalidScope,
        ErrorCode::InvalidSecrets,
        ErrorCode::InvalidSpec,
        ErrorCode::InvalidStatus,
        ErrorCode::InvalidSubject,
        ErrorCode::InvalidTime,
        ErrorCode::InvalidTimezone,
        ErrorCode::InvalidTrigger,
        ErrorCode::InvalidVersion,
        ErrorCode::InvalidWeights,
        ErrorCode::InvalidWindow,
        ErrorCode::InvocationCancelled,
        ErrorCode::InvocationNotFound,
        ErrorCode::KeyExists,
        ErrorCode::KeyNotFound,
        ErrorCode::LineTooLarge,
        ErrorCode::MissingFunction,
        ErrorCode::NoOutput,
        ErrorCode::NotAWebFunction,
        ErrorCode::NotFinished,
        ErrorCode::NotFound,
        ErrorCode::NotReady,
        ErrorCode::PayloadTooLarge,
        ErrorCode::QueueFull,
        ErrorCode::RateLimited,
        ErrorCode::ReplayRefused,
        ErrorCode::RequestTimeout,
        ErrorCode::RouteNotFound,
        ErrorCode::ScheduleNotFound,
        ErrorCode::SubjectInUse,
        ErrorCode::TooManyLines,
        ErrorCode::TriggerNotFound,
        ErrorCode::TriggerOverlap,
        ErrorCode::Unauthorized,
        ErrorCode::UriTooLong,
        ErrorCode::VersionInUse,
        ErrorCode::VersionNotFound,
    ];

    /// The code as it travels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AliasNotFound => "alias_not_found",
            ErrorCode::AlreadyFinished => "already_finished",
            ErrorCode::BadMultipart => "bad_multipart",
            ErrorCode::BrokerUnavailable => "broker_unavailable",
            ErrorCode::BucketNotFound => "bucket_not_found",
            ErrorCode::ConcurrentChange => "concurrent_change",
            ErrorCode::DeadLetterNotFound => "dead_letter_not_found",
            ErrorCode::DestinationDeadLetterNotFound => "destination_dead_letter_not_found",
            ErrorCode::EmptyBatch => "empty_batch",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::FunctionBacklogFull => "function_backlog_full",
            ErrorCode::FunctionFailed => "function_failed",
            ErrorCode::FunctionNotFound => "function_not_found",
            ErrorCode::FunctionTimedOut => "function_timed_out",
            ErrorCode::FunctionUnanswered => "function_unanswered",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IndexUnavailable => "index_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidAlias => "invalid_alias",
            ErrorCode::InvalidArtifact => "invalid_artifact",
            ErrorCode::InvalidCallbackUrl => "invalid_callback_url",
            ErrorCode::InvalidCloudevent => "invalid_cloudevent",
            ErrorCode::InvalidCron => "invalid_cron",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::InvalidGroupBy => "invalid_group_by",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::InvalidInvocationId => "invalid_invocation_id",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidLine => "invalid_line",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidQualifier => "invalid_qualifier",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidResponse => "invalid_response",
            ErrorCode::InvalidSchedule => "invalid_schedule",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidSecrets => "invalid_secrets",
            ErrorCode::InvalidSpec => "invalid_spec",
            ErrorCode::InvalidStatus => "invalid_status",
            ErrorCode::InvalidSubject => "invalid_subject",
            ErrorCode::InvalidTime => "invalid_time",
            ErrorCode::InvalidTimezone => "invalid_timezone",
            ErrorCode::InvalidTrigger => "invalid_trigger",
            ErrorCode::InvalidVersion => "invalid_version",
            ErrorCode::InvalidWeights => "invalid_weights",
            ErrorCode::InvalidWindow => "invalid_window",
            ErrorCode::InvocationCancelled => "invocation_cancelled",
            ErrorCode::InvocationNotFound => "invocation_not_found",
            ErrorCode::KeyExists => "key_exists",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::LineTooLarge => "line_too_large",
            ErrorCode::MissingFunction => "missing_function",
            ErrorCode::NoOutput => "no_output",
            ErrorCode::NotAWebFunction => "not_a_web_function",
            ErrorCode::NotFinished => "not_finished",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ReplayRefused => "replay_refused",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::ScheduleNotFound => "schedule_not_found",
            ErrorCode::SubjectInUse => "subject_in_use",
            ErrorCode::TooManyLines => "too_many_lines",
            ErrorCode::TriggerNotFound => "trigger_not_found",
            ErrorCode::TriggerOverlap => "trigger_overlap",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::VersionInUse => "version_in_use",
            ErrorCode::VersionNotFound => "version_not_found",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn every_code_travels_as_its_snake_case_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
        }
        let distinct: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), ErrorCode::ALL.len());
    }
}
