//! The function spec: the deploy-time settings shared by the deploy `config` part and `squall.toml`.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

/// The longest accepted timeout: one hour.
pub const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// The most attempts a function may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// The highest per-function concurrency.
pub const MAX_CONCURRENCY: u32 = 10_000;
/// The memory a function gets when its spec names none, in MiB (as Lambda's 128 to 10,240 MB
/// range, with a default that fits a native function and its call threads comfortably).
pub const DEFAULT_MEMORY_MB: u32 = 256;
/// The least memory a spec may name, in MiB.
pub const MIN_MEMORY_MB: u32 = 64;
/// The most memory a spec may name, in MiB (10 GiB, Lambda's maximum).
pub const MAX_MEMORY_MB: u32 = 10_240;
/// The highest backlog limit a spec may name (a dispatcher's `--max-backlog` caps it further).
pub const MAX_BACKLOG: u64 = 100_000_000;
/// The most worker processes a spec may ask for, as a warm floor or a ceiling (a fleet's own
/// `--max` caps them further).
pub const MAX_INSTANCES: u32 = 1_000;

/// An integer schema bounded by `[min, max]`, for limits that live in this module's constants.
fn bounded(min: u64, max: u64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .description(Some(description))
        .build()
}

fn timeout_schema() -> Object {
    bounded(1, MAX_TIMEOUT_MS, "Longest an attempt may run, in ms.")
}

fn attempts_schema() -> Object {
    bounded(
        1,
        u64::from(MAX_ATTEMPTS),
        "Attempts before the invocation is given up.",
    )
}

fn concurrency_schema() -> Object {
    bounded(
        1,
        u64::from(MAX_CONCURRENCY),
        "Attempts one worker runs at once.",
    )
}

fn memory_schema() -> Object {
    bounded(
        u64::from(MIN_MEMORY_MB),
        u64::from(MAX_MEMORY_MB),
        "Memory of one worker process of the function, in MiB: its heap on top of the worker's \
         runtime and its call threads' stacks. An attempt that exceeds it ends with kind \
         out_of_memory.",
    )
}

fn max_concurrency_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Integer,
            Type::Null,
        ]))
        .minimum(Some(1.0))
        .maximum(Some(f64::from(MAX_CONCURRENCY)))
        .description(Some(
            "Most attempts running at once across the whole fleet; unlimited when absent.",
        ))
        .build()
}

fn min_instances_schema() -> Object {
    bounded(
        0,
        u64::from(MAX_INSTANCES),
        "Worker processes of this function kept running even when idle (a warm floor); 0, the \
         default, scales to zero.",
    )
}

fn max_instances_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Integer,
            Type::Null,
        ]))
        .minimum(Some(1.0))
        .maximum(Some(f64::from(MAX_INSTANCES)))
        .description(Some(
            "Most worker processes of this function at once across the fleet's hosts, each \
             within its host's share; absent: only the fleet's process cap.",
        ))
        .build()
}

fn max_backlog_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Integer,
            Type::Null,
        ]))
        .minimum(Some(1.0))
        .maximum(Some(MAX_BACKLOG as f64))
        .description(Some(
            "Most of its jobs queued or running at once; a submission beyond is answered 429 \
             function_backlog_full. Absent: the dispatcher's --max-backlog (100000 by default), \
             which a spec may lower but not raise.",
        ))
        .build()
}

/// Retry backoff between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// The first pause, in ms.
    pub initial_ms: u64,
    /// Each further pause is the previous one times this (at least 1.0).
    #[schema(minimum = 1.0)]
    pub multiplier: f64,
    /// The longest pause, in ms (at least `initial_ms`).
    pub max_ms: u64,
    /// Pauses vary at random by up to half, so retries of many invocations spread out.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1000,
            multiplier: 2.0,
            max_ms: 60_000,
            jitter: true,
        }
    }
}

/// Who may call a web function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebAuth {
    /// Anyone who reaches the dispatcher: for callers that cannot send a Squall key, such as
    /// webhooks and public forms. Only ever set explicitly; the deploy answer warns about it.
    None,
    /// A Squall API key with the `invoke` scope, as for `/v1/functions/{name}/invocations`.
    #[default]
    Key,
}

impl WebAuth {
    /// The spelling in a spec: `none` or `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebAuth::None => "none",
            WebAuth::Key => "key",
        }
    }
}

fn rate_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Number,
            Type::Null,
        ]))
        .exclusive_minimum(Some(0.0))
        .maximum(Some(MAX_WEB_RATE_PER_S))
        .description(Some(
            "Requests per second one client address may make (a token bucket holding one \
             second's worth, at least one request); unlimited when absent.",
        ))
        .build()
}

/// The highest per-client web rate limit a spec may name.
pub const MAX_WEB_RATE_PER_S: f64 = 1_000_000.0;

/// Serving a function over HTTP at `/function/{name}` and `/function/{name}/{*path}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WebSpec {
    /// Who may call it: `key` (default) or `none`.
    pub auth: WebAuth,
    /// Requests per second per client address and function, answered 429 beyond; unlimited
    /// when absent.
    #[schema(schema_with = rate_schema)]
    pub rate_per_s: Option<f64>,
}

/// A function's deploy-time settings. Unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionSpec {
    #[schema(schema_with = timeout_schema)]
    pub timeout_ms: u64,
    #[schema(schema_with = attempts_schema)]
    pub max_attempts: u32,
    pub backoff: Backoff,
    #[schema(schema_with = concurrency_schema)]
    pub concurrency: u32,
    /// Most attempts running at once across the whole fleet (the consumer's `max_ack_pending`);
    /// unlimited when absent.
    #[schema(schema_with = max_concurrency_schema)]
    pub max_concurrency: Option<u32>,
    /// Most of its jobs queued or running at once (see `max_backlog_schema`); absent: the
    /// dispatcher's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = max_backlog_schema)]
    pub max_backlog: Option<u64>,
    /// Worker processes kept running when idle (see `min_instances_schema`).
    #[schema(schema_with = min_instances_schema)]
    pub min_instances: u32,
    /// Most worker processes at once (see `max_instances_schema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = max_instances_schema)]
    pub max_instances: Option<u32>,
    /// Memory of one of its worker processes, in MiB.
    #[schema(schema_with = memory_schema)]
    pub memory_mb: u32,
    /// Values passed to the function as `ctx.config`.
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Serve the function over HTTP (a web function); absent: it is not served there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<WebSpec>,
    /// Where a CloudEvent describing each invocation's terminal state goes; absent: nowhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Destinations>,
}

/// The longest destination a spec may name.
pub const MAX_DESTINATION_LEN: usize = 2048;

/// Where the event of an invocation's terminal state is delivered: a NATS subject (published
/// with a JetStream acknowledgement when a stream captures it) or an `http://` / `https://` URL
/// (POSTed in CloudEvents binary mode, signed with the function's destination secret).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Destinations {
    /// After `succeeded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    /// After every other terminal state (`failed`, `timed_out`, `dead_lettered`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

impl Destinations {
    /// The destination of an invocation that ended `succeeded` (or not).
    pub fn for_outcome(&self, succeeded: bool) -> Option<&str> {
        match succeeded {
            true => self.on_success.as_deref(),
            false => self.on_failure.as_deref(),
        }
        .filter(|d| !d.is_empty())
    }

    /// Whether it names any destination.
    pub fn is_empty(&self) -> bool {
        self.for_outcome(true).is_none() && self.for_outcome(false).is_none()
    }
}

impl Default for FunctionSpec {
    fn default() -> Self {
        FunctionSpec {
            timeout_ms: 30_000,
            max_attempts: 3,
            backoff: Backoff::default(),
            concurrency: 64,
            max_concurrency: None,
            max_backlog: None,
            min_instances: 0,
            max_instances: None,
            memory_mb: DEFAULT_MEMORY_MB,
            config: serde_json::Map::new(),
            web: None,
            destinations: None,
        }
    }
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecError {
    Parse(String),
    Timeout(u64),
    Attempts(u32),
    Concurrency(u32),
    MaxConcurrency(u32),
    MaxBacklog(u64),
    MinInstances(u32),
    MaxInstances(u32),
    /// `min_instances` above `max_instances`.
    InstancesRange {
        min: u32,
        max: u32,
    },
    MemoryMb(u32),
    Multiplier(f64),
    BackoffRange {
        initial: u64,
        max: u64,
    },
    WebRate(f64),
    /// `destinations.<field>` is neither a URL nor a NATS subject Squall may publish to.
    Destination {
        field: &'static str,
        message: String,
    },
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Parse(e) => write!(f, "invalid spec: {e}"),
            SpecError::Timeout(v) => {
                write!(
                    f,
                    "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {v}"
                )
            }
            SpecError::Attempts(v) => {
                write!(
                    f,
                    "max_attempts must be between 1 and {MAX_ATTEMPTS}, got {v}"
                )
            }
            SpecError::Concurrency(v) => {
                write!(
                    f,
                    "concurrency must be between 1 and {MAX_CONCURRENCY}, got {v}"
                )
            }
            SpecError::MaxConcurrency(v) => write!(
                f,
                "max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {v}"
            ),
            SpecError::MaxBacklog(v) => {
                write!(
                    f,
                    "max_backlog must be between 1 and {MAX_BACKLOG}, got {v}"
                )
            }
            SpecError::MinInstances(v) => write!(
                f,
                "min_instances must be between 0 and {MAX_INSTANCES}, got {v}"
            ),
            SpecError::MaxInstances(v) => write!(
                f,
                "max_instances must be between 1 and {MAX_INSTANCES}, got {v}"
            ),
            SpecError::InstancesRange { min, max } => write!(
                f,
                "min_instances ({min}) must not be above max_instances ({max})"
            ),
            SpecError::MemoryMb(v) => write!(
                f,
                "memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB}, got {v}"
            ),
            SpecError::Multiplier(v) => write!(
                f,
                "backoff.multiplier must be a finite number of at least 1.0, got {v}"
            ),
            SpecError::BackoffRange { initial, max } => write!(
                f,
                "backoff.max_ms ({max}) must be at least backoff.initial_ms ({initial})"
            ),
            SpecError::WebRate(v) => write!(
                f,
                "web.rate_per_s must be a number above 0 and at most {MAX_WEB_RATE_PER_S}, got {v}"
            ),
            SpecError::Destination { field, message } => {
                write!(f, "destinations.{field}: {message}")
            }
        }
    }
}

impl std::error::Error for SpecError {}

impl FunctionSpec {
    /// Parses and validates a JSON spec; an empty document means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<FunctionSpec, SpecError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(FunctionSpec::default());
        }
        let spec: FunctionSpec =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every value is within its documented range.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(SpecError::Timeout(self.timeout_ms));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(SpecError::Attempts(self.max_attempts));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(SpecError::Concurrency(self.concurrency));
        }
        if let Some(max) = self.max_concurrency {
            if max == 0 || max > MAX_CONCURRENCY {
                return Err(SpecError::MaxConcurrency(max));
            }
        }
        if let Some(max) = self.max_backlog {
            if max == 0 || max > MAX_BACKLOG {
                return Err(SpecError::MaxBacklog(max));
            }
        }
        if self.min_instances > MAX_INSTANCES {
            return Err(SpecError::MinInstances(self.min_instances));
        }
        if let Some(max) = self.max_instances {
            if max == 0 || max > MAX_INSTANCES {
                return Err(SpecError::MaxInstances(max));
            }
            if self.min_instances > max {
                return Err(SpecError::InstancesRange {
                    min: self.min_instances,
                    max,
                });
            }
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(SpecError::MemoryMb(self.memory_mb));
        }
        let m = self.backoff.multiplier;
        if !m.is_finite() || m < 1.0 {
            return Err(SpecError::Multiplier(m));
        }
        if self.backoff.max_ms < self.backoff.initial_ms {
            return Err(SpecError::BackoffRange {
                initial: self.backoff.initial_ms,
                max: self.backoff.max_ms,
            });
        }
        if let Some(destinations) = &self.destinations {
            for (field, target) in [
                ("on_success", &destinations.on_success),
                ("on_failure", &destinations.on_failure),
            ] {
                if let Some(target) = target {
                    check_destination(target)
                        .map_err(|message| SpecError::Destination { field, message })?;
                }
            }
        }
        if let Some(rate) = self.web.as_ref().and_then(|web| web.rate_per_s) {
            if !rate.is_finite() || rate <= 0.0 || rate > MAX_WEB_RATE_PER_S {
                return Err(SpecError::WebRate(rate));
            }
        }
        Ok(())
    }
}

/// Checks the shape of a destination: an `http://` or `https://` URL with a host, or a literal
/// NATS subject (no wildcards). Whether Squall may publish to the subject is the broker
/// contract's rule (`squall_broker::destinations`), checked at deploy.
pub fn check_destination(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("must not be empty".into());
    }
    if target.len() > MAX_DESTINATION_LEN {
        return Err(format!("is longer than {MAX_DESTINATION_LEN} characters"));
    }
    if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{target:?} has a space or a control character"));
    }
    if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.starts_with(':') || host.contains('@') {
            return Err(format!("{target:?} is not a URL with a host"));
        }
        return Ok(());
    }
    if target.contains("://") || target.contains(':') {
        return Err(format!(
            "{target:?} is neither an http:// or https:// URL nor a NATS subject"
        ));
    }
    if target
        .split('.')
        .any(|t| t.is_empty() || t == "*" || t == ">" || t.contains(['*', '>']))
    {
        return Err(format!(
            "{target:?} is not a literal NATS subject (no empty tokens, no wildcards)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_means_defaults() {
        assert_eq!(
            FunctionSpec::from_json(b"").unwrap(),
            FunctionSpec::default()
        );
        assert_eq!(
            FunctionSpec::from_json(b"{}").unwrap(),
            FunctionSpec::default()
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = FunctionSpec::from_json(br#"{"timeout": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn memory_defaults_to_256_and_is_bounded_by_name() {
        assert_eq!(FunctionSpec::default().memory_mb, DEFAULT_MEMORY_MB);
        let spec = FunctionSpec::from_json(br#"{"memory_mb": 10240}"#).unwrap();
        assert_eq!(spec.memory_mb, MAX_MEMORY_MB);
        for bad in [0, 63, 10_241] {
            let json = format!(r#"{{"memory_mb": {bad}}}"#);
            let err = FunctionSpec::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(err, SpecError::MemoryMb(bad));
            assert_eq!(
                err.to_string(),
                format!("memory_mb must be between 64 and 10240, got {bad}")
            );
        }
    }

    #[test]
    fn instance_bounds_are_checked_and_named() {
        let spec = FunctionSpec::from_json(br#"{"min_instances": 2, "max_instances": 5}"#).unwrap();
        assert_eq!((spec.min_instances, spec.max_instances), (2, Some(5)));
        for (body, wanted) in [
            (
                &br#"{"max_instances": 0}"#[..],
                "max_instances must be between 1 and 1000, got 0",
            ),
            (
                br#"{"min_instances": 1001}"#,
                "min_instances must be between 0 and 1000, got 1001",
            ),
            (
                br#"{"min_instances": 3, "max_instances": 2}"#,
                "min_instances (3) must not be above max_instances (2)",
            ),
        ] {
            let err = FunctionSpec::from_json(body).unwrap_err();
            assert_eq!(err.to_string(), wanted);
        }
    }

    #[test]
    fn zero_timeout_is_refused() {
        let err = FunctionSpec::from_json(br#"{"timeout_ms": 0}"#).unwrap_err();
        assert_eq!(err, SpecError::Timeout(0));
    }

    #[test]
    fn partial_backoff_keeps_other_defaults() {
        let spec = FunctionSpec::from_json(br#"{"backoff": {"initial_ms": 5}}"#).unwrap();
        assert_eq!(spec.backoff.initial_ms, 5);
        assert_eq!(spec.backoff.max_ms, 60_000);
    }

    #[test]
    fn web_auth_defaults_to_key_and_none_is_only_explicit() {
        let spec = FunctionSpec::from_json(br#"{"web": {}}"#).unwrap();
        assert_eq!(spec.web.unwrap().auth, WebAuth::Key);
        let spec = FunctionSpec::from_json(br#"{"web": {"auth": "none", "rate_per_s": 2.5}}"#)
            .unwrap()
            .web
            .unwrap();
        assert_eq!((spec.auth, spec.rate_per_s), (WebAuth::None, Some(2.5)));
        assert_eq!(FunctionSpec::from_json(b"{}").unwrap().web, None);
    }

    #[test]
    fn bad_web_settings_are_refused_by_name() {
        let err = FunctionSpec::from_json(br#"{"web": {"auth": "public"}}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `public`"),
            "{err}"
        );
        let err = FunctionSpec::from_json(br#"{"web": {"path": "/"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `path`"), "{err}");
        for rate in ["0", "-1", "1e9"] {
            let json = format!(r#"{{"web": {{"rate_per_s": {rate}}}}}"#);
            let err = FunctionSpec::from_json(json.as_bytes()).unwrap_err();
            assert!(matches!(err, SpecError::WebRate(_)), "{rate}: {err}");
            assert!(
                err.to_string().starts_with("web.rate_per_s must be"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_spec_without_web_shows_no_web_field() {
        let json = serde_json::to_value(FunctionSpec::default()).unwrap();
        assert!(json.get("web").is_none(), "{json}");
    }

    #[test]
    fn destinations_take_urls_and_subjects_and_refuse_the_rest_by_field() {
        let spec = FunctionSpec::from_json(
            br#"{"destinations": {"on_success": "events.next", "on_failure": "https://example.com/hook"}}"#,
        )
        .unwrap();
        let destinations = spec.destinations.unwrap();
        assert_eq!(destinations.for_outcome(true), Some("events.next"));
        assert_eq!(
            destinations.for_outcome(false),
            Some("https://example.com/hook")
        );
        for (json, field) in [
            (r#"{"on_success": "events.*"}"#, "on_success"),
            (r#"{"on_failure": "ftp://example.com"}"#, "on_failure"),
            (r#"{"on_failure": "http://"}"#, "on_failure"),
            (r#"{"on_success": "a..b"}"#, "on_success"),
            (r#"{"on_success": ""}"#, "on_success"),
        ] {
            let doc = format!(r#"{{"destinations": {json}}}"#);
            let err = FunctionSpec::from_json(doc.as_bytes()).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("destinations.{field}: ")),
                "{json}: {err}"
            );
        }
        let err = FunctionSpec::from_json(br#"{"destinations": {"on_done": "x"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `on_done`"), "{err}");
    }

    #[test]
    fn config_must_be_an_object() {
        assert!(FunctionSpec::from_json(br#"{"config": [1]}"#).is_err());
    }
}
