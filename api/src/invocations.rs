//! Invocations: what an invoke answers, and an invocation's state, logs and batch answer.

use crate::status::{ErrorKind, InvocationStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Raw bytes in a body (`application/octet-stream`): a function's input or output, an
/// artifact. Only its schema is used; bodies are read and written as bytes.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

/// An invocation, as `GET /v1/invocations/{id}` answers it. Fields may be added, not renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Invocation {
    pub invocation_id: String,
    pub function: String,
    /// The version that ran; null while queued.
    pub version: Option<String>,
    /// The version's number (1, 2, 3…), while the function still retains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_number: Option<u32>,
    pub status: InvocationStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The output when the invocation succeeded and it is UTF-8.
    pub output: Option<String>,
    /// The output, base64, when it succeeded and is not UTF-8.
    pub output_base64: Option<String>,
    pub error: Option<InvocationError>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null until terminal.
    pub finished_at: Option<String>,
    /// Wall time of the latest attempt; null while queued.
    pub duration_ms: Option<f64>,
    /// CPU time of the latest attempt; null while queued.
    pub cpu_ms: Option<f64>,
    /// What the function logged in its latest attempt.
    pub logs: Vec<LogLine>,
    /// The worker process of the latest attempt; null while queued.
    pub worker: Option<String>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvocationError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The level of a function's log line, stored and shown in lowercase (`"warn"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line a function logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// An accepted invocation that has no terminal outcome yet (202), or a replayed dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub invocation_id: String,
    pub status: InvocationStatus,
    /// Where to read it: `/v1/invocations/{id}`.
    pub location: String,
    /// The dead letter this invocation replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// `GET /v1/invocations/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvocationLogs {
    pub invocation_id: String,
    pub status: InvocationStatus,
    pub logs: Vec<LogLine>,
}

/// `POST /v1/functions/{name}/batch` (202): one invocation per line, in line order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    pub count: usize,
    pub invocation_ids: Vec<String>,
}

/// The answer of the probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: String,
}

/// `POST /v1/functions/{name}/invocations` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvokeParams {
    /// Seconds to wait for the outcome before answering 202 (default: the function's timeout
    /// times its attempts, capped by the dispatcher).
    #[param(value_type = Option<f64>, minimum = 0)]
    pub wait: Option<String>,
    /// `true`: answer 202 at once, like `Prefer: respond-async`.
    #[serde(rename = "async")]
    #[param(value_type = Option<bool>)]
    pub respond_async: Option<String>,
    /// A version number, `$LATEST` or an alias (also written `name:qualifier` in the path).
    pub qualifier: Option<String>,
}

/// `POST /v1/functions/{name}/batch` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QualifierParams {
    /// A version number, `$LATEST` or an alias (also written `name:qualifier` in the path).
    pub qualifier: Option<String>,
}
