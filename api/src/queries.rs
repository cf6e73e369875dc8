//! Queries over recorded invocations: pages, per-function stats and usage, with their query
//! parameters. Times in parameters are RFC 3339 or Unix milliseconds.

use crate::status::{ErrorKind, InvocationStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The most rows of one page.
pub const MAX_LIMIT: usize = 1000;
/// Rows of a page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// The window of stats when neither `window` nor `since` is given, in seconds.
pub const DEFAULT_STATS_WINDOW_SECS: u64 = 3600;
/// The longest stats `window`, in seconds (366 days).
pub const MAX_STATS_WINDOW_SECS: u64 = 366 * 24 * 3600;

/// `GET /v1/invocations` parameters. Values are checked by the dispatcher, which names the
/// parameter in its error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this function's invocations.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub function: Option<String>,
    /// Only invocations in this status.
    #[param(value_type = Option<InvocationStatus>)]
    pub status: Option<String>,
    /// Created at or after (RFC 3339 or Unix ms).
    pub since: Option<String>,
    /// Created before (RFC 3339 or Unix ms).
    pub until: Option<String>,
    /// Rows per page, 1 to 1000 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/functions/{name}/stats` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// The last this many seconds (1 to 31622400; default 3600); not with `since`.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 31622400)]
    pub window: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// `GET /v1/usage` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    pub since: Option<String>,
    pub until: Option<String>,
    /// `function` (default) or `hour`.
    #[param(value_type = Option<GroupBy>)]
    pub group_by: Option<String>,
}

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Function,
    Hour,
}

/// One row of `GET /v1/invocations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvocationSummary {
    pub invocation_id: String,
    pub function: String,
    pub version: String,
    /// The version's number (1, 2, 3…), while the function still retains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_number: Option<u32>,
    pub status: InvocationStatus,
    pub attempts: u32,
    pub error_kind: Option<ErrorKind>,
    pub created_at: String,
    /// Null while retrying.
    pub finished_at: Option<String>,
    /// Wall time of the latest attempt.
    pub duration_ms: f64,
    /// CPU time of all attempts.
    pub cpu_ms: f64,
    /// Wall time of all attempts.
    pub wall_ms: f64,
}

/// A page of invocations, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvocationPage {
    pub items: Vec<InvocationSummary>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
    /// True while the query index is still replaying RESULTS (after it started empty, was
    /// rebuilt, or has not yet looked at the stream): the answer may be partial.
    #[serde(default)]
    pub catching_up: bool,
    /// The RESULTS stream sequence the index has applied up to.
    #[serde(default)]
    pub applied_sequence: u64,
}

/// A function's numbers over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionStats {
    pub function: String,
    pub since: String,
    /// RFC 3339, or `now`.
    pub until: String,
    /// Invocations with a terminal status.
    pub count: u64,
    pub succeeded: u64,
    /// Failed, timed out or dead-lettered (a cancelled invocation is not an error).
    pub errors: u64,
    /// `errors / count`, 0 when there are none.
    pub error_rate: f64,
    /// Invocations still retrying.
    pub in_progress: u64,
    /// Latest-attempt wall time percentiles of terminal invocations, in ms, by nearest rank
    /// from mergeable sketches: within 1% of the exact value.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// True while the query index is still replaying RESULTS (after it started empty, was
    /// rebuilt, or has not yet looked at the stream): the answer may be partial.
    #[serde(default)]
    pub catching_up: bool,
    /// The RESULTS stream sequence the index has applied up to.
    #[serde(default)]
    pub applied_sequence: u64,
}

/// Metered totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub invocations: u64,
    pub attempts: u64,
    pub cpu_ms: f64,
    pub wall_ms: f64,
    /// GB-seconds: each function's `memory_mb` (as deployed now) / 1024 times the wall time
    /// of its attempts, in seconds; the unit serverless memory is billed in.
    #[serde(default)]
    pub gb_s: f64,
    /// State operations (the host's `kv_get`, `kv_put`, `kv_delete`) of every attempt.
    #[serde(default)]
    pub kv_ops: u64,
    /// Bytes those operations read and wrote (values).
    #[serde(default)]
    pub kv_bytes: u64,
}

/// One group of a usage report: a function's or an hour's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// Set when grouped by function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The hour's start, RFC 3339; set when grouped by hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<String>,
    #[serde(flatten)]
    pub usage: Usage,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub group_by: GroupBy,
    pub since: String,
    pub until: String,
    pub groups: Vec<UsageRow>,
    pub total: Usage,
    /// True while the query index is still replaying RESULTS (after it started empty, was
    /// rebuilt, or has not yet looked at the stream): the answer may be partial.
    #[serde(default)]
    pub catching_up: bool,
    /// The RESULTS stream sequence the index has applied up to.
    #[serde(default)]
    pub applied_sequence: u64,
}
