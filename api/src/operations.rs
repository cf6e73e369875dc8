//! The platform's operations: dead letters, schedules, triggers, the fleet and API keys.

use crate::status::{ErrorKind, InvocationStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/dlq` and `POST /v1/dlq/replay` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DlqParams {
    /// Only this function's dead letters.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub function: Option<String>,
}

/// A dead letter in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterSummary {
    /// The invocation id (the dead letter's id).
    pub id: String,
    pub invocation_id: String,
    pub function: String,
    pub version: String,
    /// The version's number (1, 2, 3…), while the function still retains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_number: Option<u32>,
    /// `timed_out` or `dead_lettered`.
    pub status: InvocationStatus,
    /// The kind of the last attempt's failure.
    pub kind: Option<ErrorKind>,
    /// Attempts made.
    pub attempts: usize,
    pub created_at: String,
    pub dead_lettered_at: String,
}

/// A dead letter with its payload, headers and every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    /// The input, when UTF-8.
    pub payload: Option<String>,
    /// The input, base64, when not UTF-8.
    pub payload_base64: Option<String>,
    /// The job's headers.
    pub headers: BTreeMap<String, String>,
    pub attempt_history: Vec<Attempt>,
}

/// One attempt of a dead-lettered invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub kind: Option<ErrorKind>,
    pub message: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: f64,
    pub worker: String,
}

/// `GET /v1/dlq`: oldest first, at most 1000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterSummary>,
}

/// One replay of `POST /v1/dlq/replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Replay {
    pub replay_of: String,
    pub invocation_id: String,
}

/// `POST /v1/dlq/replay` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayedAll {
    pub replayed: Vec<Replay>,
}

/// The body of `PUT /v1/schedules/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub function: String,
    /// Cron expression: 5 fields, or 6 with seconds first; or `@hourly`, `@daily`, ….
    pub cron: String,
    /// IANA time zone the expression is read in; UTC by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The input of each invocation, as JSON; no input when absent.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

/// A schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub name: String,
    pub function: String,
    pub cron: String,
    pub timezone: String,
    /// The input of each invocation: JSON, or text when it is not JSON.
    pub payload: Option<serde_json::Value>,
    /// The broker subject its ticks arrive on.
    pub subject: String,
    /// The next fire times, RFC 3339.
    pub next: Vec<String>,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// The body of `PUT /v1/triggers/{name}`: `subject`, or `bucket` and `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    pub function: String,
    /// A NATS subject (wildcards allowed): each message is one invocation.
    #[serde(default)]
    pub subject: Option<String>,
    /// A KV bucket whose changes are invocations; with `key`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// A key or key pattern of `bucket`.
    #[serde(default)]
    pub key: Option<String>,
}

/// What a trigger listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Subject,
    Kv,
}

/// A trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trigger {
    pub name: String,
    pub function: String,
    pub created_at: String,
    pub kind: TriggerKind,
    /// Set for `subject` triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Set for `kv` triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Set for `kv` triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `GET /v1/triggers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TriggerList {
    pub triggers: Vec<Trigger>,
}

/// `GET /v1/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Fleet {
    pub supervisors: Vec<Supervisor>,
    pub workers: Vec<FleetWorker>,
    pub functions: Vec<FunctionLoad>,
    /// Worker slots granted per supervisor id.
    pub allocation: BTreeMap<String, u32>,
}

/// A fleet supervisor that is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Supervisor {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Functions served; empty means all.
    pub functions: Vec<String>,
    pub min: u32,
    pub max: u32,
    /// What its last scaling decision asked for.
    pub desired: u32,
    /// Process ids of its running workers.
    pub workers: Vec<u32>,
    /// Its pools: each function's worker processes, which run that function alone.
    #[serde(default)]
    pub pools: Vec<Pool>,
    pub updated_at: String,
}

/// One function's worker processes on one supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub function: String,
    /// Process ids of its running worker processes.
    pub processes: Vec<u32>,
    /// What the supervisor's last scaling decision asked for.
    pub desired: u32,
}

/// A worker process that is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetWorker {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub functions: Vec<String>,
    /// Jobs running now.
    pub in_flight: u32,
    pub updated_at: String,
    /// Its limits and sandbox, when it serves one function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Confinement>,
}

/// The limits and sandbox of a worker process that serves one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Confinement {
    /// The function's `memory_mb`.
    pub memory_mb: u32,
    /// How memory is enforced: `cgroup` (the process's cgroup v2 `memory.max`, plus the
    /// rlimit) or `rlimit` (`RLIMIT_DATA`).
    pub memory_via: String,
    /// The `RLIMIT_DATA` in bytes: `memory_mb` plus the worker's own allowance.
    pub data_limit_bytes: u64,
    /// The `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// Most call threads the function gets in this process.
    pub call_threads: u32,
    /// The `--sandbox` mode: `required`, `auto` or `off`.
    pub sandbox: String,
    /// Each sandbox feature: whether it is active and, when not, why.
    pub features: Vec<SandboxFeature>,
}

/// One feature of a worker's sandbox (`no_new_privs`, `landlock`, `seccomp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxFeature {
    pub name: String,
    pub active: bool,
    /// What it does when active; why it is not, otherwise.
    pub detail: String,
}

/// A function's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionLoad {
    pub name: String,
    /// Jobs waiting.
    pub backlog: u64,
    /// Jobs delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Its worker processes running now, on every supervisor.
    #[serde(default)]
    pub processes: u32,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Deploy, delete, schedules, triggers, dead letters, secrets, keys; and everything else.
    Admin,
    /// Invoke, and read invocations and results.
    Invoke,
    /// List and show functions, fleet, stats, usage.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Invoke => "invoke",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "admin" => Scope::Admin,
            "invoke" => Scope::Invoke,
            "read" => Scope::Read,
            _ => return None,
        })
    }
}

/// The body of `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    /// `admin`, `invoke` or `read`.
    #[schema(value_type = Vec<Scope>)]
    pub scopes: Vec<String>,
    /// Also usable as an AWS secret access key (SigV4, with the name as access key id); the
    /// dispatcher then keeps the key itself, not only its hash.
    #[serde(default)]
    pub sigv4: bool,
    /// The functions the key may invoke and read: names (`billing`) or prefixes ending in `*`
    /// (`orders-*`). Empty: every function. Not for an `admin` key, which may mint any key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// The most requests per second the key may make, on each dispatcher (a token bucket per
    /// dispatcher); past it, 429 `rate_limited` with `Retry-After`. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// How many requests the key may make at once above its rate (the bucket's size); by
    /// default one second's worth, and at least 1. Only with `rate_per_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// What a key is limited to besides its scopes: functions and a request rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyLimits {
    /// Function names and `prefix*` patterns the key may invoke and read; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Requests per second, per dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// The token bucket's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// A key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    #[serde(flatten)]
    pub limits: KeyLimits,
}

/// `POST /v1/keys` (201): the key, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub key: String,
    pub created_at: String,
    #[serde(flatten)]
    pub limits: KeyLimits,
}

/// `GET /v1/whoami`: what the presented key may do, and what a client such as the console
/// needs to know about this dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The key's scopes (`admin` holds them all); `["admin"]` when the dispatcher requires no
    /// key.
    pub scopes: Vec<Scope>,
    /// Whether this dispatcher requires keys at all.
    pub auth_required: bool,
    /// The trace viewer's link for a trace id: `{trace_id}` is replaced by the id (the
    /// dispatcher's `--trace-url`); none when not configured.
    pub trace_url: Option<String>,
    /// The functions the key is limited to (names and `prefix*` patterns); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}
