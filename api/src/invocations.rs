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
    /// The size in bytes of an output above the inline limit, which is stored apart and not
    /// shown here (`output` and `output_base64` are then null): read it from
    /// `/v1/invocations/{id}/output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_stored_bytes: Option<u64>,
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
    /// How the event of its terminal state reached the function's destination and the call's
    /// callback; absent until a delivery ended (or when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationDelivery>,
    /// The W3C trace id of the invocation's trace (32 hex digits), when its result records it.
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// Which of an invocation's targets a delivery went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationTarget {
    /// The spec's `destinations.on_success`.
    OnSuccess,
    /// The spec's `destinations.on_failure`.
    OnFailure,
    /// The call's `X-Callback-Url`.
    Callback,
}

impl DestinationTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationTarget::OnSuccess => "on_success",
            DestinationTarget::OnFailure => "on_failure",
            DestinationTarget::Callback => "callback",
        }
    }

    /// Reads `as_str`'s spelling.
    pub fn parse(text: &str) -> Option<DestinationTarget> {
        [
            DestinationTarget::OnSuccess,
            DestinationTarget::OnFailure,
            DestinationTarget::Callback,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The subject's stream acknowledged it, it was published, or the URL answered 2xx.
    Delivered,
    /// Every try failed within the retry budget; a destination dead letter holds the event.
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
        }
    }
}

/// One delivery of an invocation's terminal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationDelivery {
    pub target: DestinationTarget,
    /// The subject or URL.
    pub destination: String,
    pub outcome: DeliveryOutcome,
    /// Tries made (for a URL: POSTs sent).
    pub tries: u32,
    /// The last try's error when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The CloudEvent's `type`: `io.squall.invocation.<status>`.
    pub event_type: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Whether this outcome came from replaying a destination dead letter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// `POST /v1/functions/{name}/invocations` with `Content-Type: application/cloudevents-batch+json`
/// (202): one invocation per event, in the batch's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CloudEventBatchAccepted {
    pub count: usize,
    pub invocations: Vec<Accepted>,
}

/// A destination delivery that finally failed, as `GET /v1/dlq/destinations` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationDeadLetter {
    pub invocation_id: String,
    pub function: String,
    pub target: DestinationTarget,
    pub destination: String,
    pub event_type: String,
    pub tries: u32,
    pub error: String,
    /// RFC 3339.
    pub failed_at: String,
}

/// `GET /v1/dlq/destinations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationDeadLetterList {
    /// Oldest first.
    pub dead_letters: Vec<DestinationDeadLetter>,
}

/// `POST /v1/dlq/destinations/{id}/replay`: the invocation's failed deliveries, sent again.
/// A delivered one's dead letter is removed; a failed one's stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationReplay {
    pub invocation_id: String,
    pub deliveries: Vec<DestinationDelivery>,
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

/// `DELETE /v1/functions/{name}/invocations` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CancelBacklogParams {
    /// Which invocations to cancel: `queued`, the jobs no worker has started yet (required, so
    /// that a bare `DELETE` cannot empty a backlog by accident).
    pub status: Option<String>,
}

/// `DELETE /v1/functions/{name}/invocations` (200): how many queued invocations were cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelledBacklog {
    pub function: String,
    /// Invocations that ended `cancelled` by this request.
    pub cancelled: u64,
    /// Queued jobs found that had already ended (by a worker, or by an earlier cancellation).
    pub already_finished: u64,
}

/// A CloudEvent's context attributes (CloudEvents 1.0), declared once: the structured events
/// the API takes, the attributes a function sees in `ctx.event.cloudevent` and those of the
/// events destinations receive all carry these.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct CloudEventAttributes {
    /// `1.0`.
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
}

/// A structured-mode CloudEvent (`application/cloudevents+json`; a batch is an array of them).
/// Extension attributes are further members: 1 to 20 lowercase letters or digits, with a
/// string, number or boolean value. `data` (JSON, or text when `datacontenttype` is not JSON)
/// or `data_base64` is the function's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StructuredCloudEvent {
    #[serde(flatten)]
    pub attributes: CloudEventAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

/// The 202 of an invoke: one invocation, or (for a CloudEvents batch) one per event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InvokeAccepted {
    One(Accepted),
    Batch(CloudEventBatchAccepted),
}
