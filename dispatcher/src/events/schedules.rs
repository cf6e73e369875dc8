//! Schedules: `/v1/schedules`, fired by the broker itself (NATS message schedules), and the
//! task that turns each tick into an invocation.
//!
//! A schedule is the last message on `schedules.<name>` in the SCHEDULES stream, carrying the
//! `Nats-Schedule` headers; the stream's leader publishes each tick to `cron.<name>` (so a
//! cluster fires exactly one tick each time, and any JetStream consumer can read the ticks).
//! One durable consumer, shared by every dispatcher, turns each tick into one invocation.

use crate::core::registry::load_record;
use crate::core::submit::{new_traceparent, submit, Job};
use crate::core::versions::{job_version, resolve, Qualified};
use crate::core::view::rfc3339;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Name, OfSchedule};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use squall_api::operations::{Schedule, ScheduleList, ScheduleRequest};
use squall_api::ErrorBody;
use squall_broker::headers as h;
use squall_broker::names::{schedule_subject, tick_subject};
use squall_broker::time::now_ms;
use squall_broker::topology::cron_dispatch_consumer;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

type Shared = State<Arc<AppState>>;

/// How long an unprocessed tick is kept (the broker's per-message TTL on ticks).
pub const TICK_TTL: &str = "24h";
/// How many upcoming fire times a schedule view shows.
pub const PREVIEW: usize = 5;

/// Why a cron expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Expression { expr: String, reason: String },
    #[error("time zone {0:?} is not an IANA time zone name (such as UTC or Europe/Paris)")]
    TimeZone(String),
}

const ALIASES: &[(&str, &str)] = &[
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

/// A validated schedule expression: the 6-field form the broker fires and croner's parse of it.
pub struct CronSpec {
    /// Seconds, minutes, hours, day of month, month, day of week.
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl CronSpec {
    /// Validates `expr` (5 fields, 6 with seconds, or an `@` alias) in `timezone`.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<CronSpec, CronError> {
        let bad = |reason: &str| CronError::Expression {
            expr: expr.to_string(),
            reason: reason.to_string(),
        };
        let tz_name = timezone.unwrap_or("UTC");
        let timezone = chrono_tz::Tz::from_str(tz_name)
            .map_err(|_| CronError::TimeZone(tz_name.to_string()))?;
        let trimmed = expr.trim();
        let expression = match ALIASES
            .iter()
            .find(|(alias, _)| trimmed.eq_ignore_ascii_case(alias))
        {
            Some((_, six)) => six.to_string(),
            None => {
                let fields: Vec<&str> = trimmed.split_whitespace().collect();
                match fields.len() {
                    5 => format!("0 {}", fields.join(" ")),
                    6 => fields.join(" "),
                    n => {
                        return Err(bad(&format!(
                            "it has {n} fields; give 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
                        )))
                    }
                }
            }
        };
        // What croner accepts beyond classic cron, the broker does not fire: refuse it here.
        let fields: Vec<&str> = expression.split(' ').collect();
        for (i, field) in fields.iter().enumerate() {
            if field.contains('#') || field.contains('?') {
                return Err(bad("'#' and '?' are not supported"));
            }
            let day_field = i == 3 || i == 5;
            if day_field
                && field.split(',').any(|part| {
                    let p = part.trim_start_matches(|c: char| c.is_ascii_digit());
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c == 'L' || c == 'W' || c == 'l' || c == 'w')
                })
            {
                return Err(bad("'L' and 'W' are not supported"));
            }
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&expression)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(CronSpec {
            expression,
            timezone,
            cron,
        })
    }

    /// The next `n` fire times after `after_ms`, in Unix ms.
    pub fn next_fires(&self, after_ms: u64, n: usize) -> Vec<u64> {
        use chrono::TimeZone as _;
        let Some(start) = self.timezone.timestamp_millis_opt(after_ms as i64).single() else {
            return Vec::new();
        };
        self.cron
            .iter_after(start)
            .take(n)
            .map(|t| t.timestamp_millis() as u64)
            .collect()
    }
}

fn schedule_view(name: &str, function: &str, spec: &CronSpec, payload: &[u8]) -> Schedule {
    let payload = (!payload.is_empty()).then(|| {
        serde_json::from_slice(payload)
            .unwrap_or_else(|_| String::from_utf8_lossy(payload).into_owned().into())
    });
    Schedule {
        name: name.to_string(),
        function: function.to_string(),
        cron: spec.expression.clone(),
        timezone: spec.timezone.name().to_string(),
        payload,
        subject: tick_subject(name),
        next: spec
            .next_fires(now_ms(), PREVIEW)
            .into_iter()
            .map(rfc3339)
            .collect(),
    }
}

fn cron_error(e: CronError) -> ApiError {
    match e {
        CronError::Expression { .. } => ApiError::bad_request("invalid_cron", e.to_string()),
        CronError::TimeZone(_) => ApiError::bad_request("invalid_timezone", e.to_string()),
    }
}

/// The schedule stored under `name`, as (function, spec, payload).
async fn read_schedule(
    state: &AppState,
    name: &str,
) -> Result<Option<(String, CronSpec, Bytes)>, ApiError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let message = match state
        .topology
        .schedules
        .get_last_raw_message_by_subject(&schedule_subject(name))
        .await
    {
        Ok(message) => message,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(ApiError::broker("cannot read the schedule", e)),
    };
    let header = |key: &str| message.headers.get(key).map(|v| v.as_str().to_string());
    let (Some(function), Some(cron)) = (header(h::FUNCTION), header("Nats-Schedule")) else {
        return Ok(None);
    };
    let tz = header("Nats-Schedule-Time-Zone");
    let spec = CronSpec::parse(&cron, tz.as_deref())
        .map_err(|e| ApiError::internal("stored schedule", e))?;
    Ok(Some((function, spec, message.payload)))
}

const NAME: &str = "Schedule name: 1 to 64 ASCII letters, digits, '-' or '_'.";

/// Create or replace a schedule; the broker fires its ticks on `cron.<name>`, each one
/// invocation of the function.
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = ScheduleRequest,
    responses(
        (status = 200, description = "The schedule with its next five fire times.", body = Schedule),
        (status = 400, description = "Invalid name, body, cron expression or time zone.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody)))]
pub async fn put(
    State(state): Shared,
    name: Name<OfSchedule>,
    ApiJson(body): ApiJson<ScheduleRequest>,
) -> Result<Json<Schedule>, ApiError> {
    let name = name.as_str();
    let spec = CronSpec::parse(&body.cron, body.timezone.as_deref()).map_err(cron_error)?;
    // `name:alias` is kept as given and resolved at each tick.
    let target = Qualified::parse(&body.function, None)?;
    let function = load_record(&state, &target.name).await?;
    resolve(&function, target.qualifier.as_deref(), "")?;
    let payload = body
        .payload
        .as_ref()
        .map(|p| p.to_string().into_bytes())
        .unwrap_or_default();
    // Re-publishing an unchanged schedule would restart its timer: skip it.
    let unchanged = match read_schedule(&state, name).await? {
        Some((function, old, old_payload)) => {
            function == body.function
                && old.expression == spec.expression
                && old.timezone == spec.timezone
                && old_payload.as_ref() == payload.as_slice()
        }
        None => false,
    };
    if !unchanged {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Schedule", spec.expression.as_str());
        headers.insert("Nats-Schedule-Target", tick_subject(name).as_str());
        headers.insert("Nats-Schedule-Time-Zone", spec.timezone.name());
        headers.insert("Nats-Schedule-TTL", TICK_TTL);
        // Only the newest schedule message of the subject is kept.
        headers.insert("Nats-Rollup", "sub");
        headers.insert(h::FUNCTION, body.function.as_str());
        headers.insert(h::SCHEDULE, name);
        state
            .topology
            .jetstream
            .publish_with_headers(schedule_subject(name), headers, payload.clone().into())
            .await
            .map_err(|e| ApiError::broker("cannot store the schedule", e))?
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_cron",
                    format!("the broker refused the schedule {:?}: {e}", spec.expression),
                )
            })?;
        tracing::info!(message = "schedule set", schedule = %name, function = %body.function, cron = %spec.expression);
    }
    Ok(Json(schedule_view(name, &body.function, &spec, &payload)))
}

/// Show a schedule and its next five fire times.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The schedule.", body = Schedule),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown schedule.", body = ErrorBody)))]
pub async fn get(State(state): Shared, name: Name<OfSchedule>) -> Result<Json<Schedule>, ApiError> {
    match read_schedule(&state, &name).await? {
        Some((function, spec, payload)) => {
            Ok(Json(schedule_view(&name, &function, &spec, &payload)))
        }
        None => Err(not_found(&name)),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("schedule_not_found", format!("no schedule named {name:?}"))
}

/// List schedules.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", responses(
    (status = 200, description = "All schedules, by name.", body = ScheduleList)))]
pub async fn list(State(state): Shared) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.topology.schedules.clone();
    let info = schedules
        .info_with_subjects("schedules.*")
        .await
        .map_err(|e| ApiError::broker("cannot list schedules", e))?;
    let mut names: Vec<String> = Vec::new();
    let mut subjects = info;
    while let Some(entry) = subjects.next().await {
        let (subject, _count) = entry.map_err(|e| ApiError::broker("cannot list schedules", e))?;
        if let Some(name) = subject.strip_prefix("schedules.") {
            names.push(name.to_string());
        }
    }
    names.sort();
    let mut views = Vec::new();
    for name in names {
        if let Some((function, spec, payload)) = read_schedule(&state, &name).await? {
            views.push(schedule_view(&name, &function, &spec, &payload));
        }
    }
    Ok(Json(ScheduleList { schedules: views }))
}

/// Delete a schedule: its ticks stop.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown schedule.", body = ErrorBody)))]
pub async fn delete(State(state): Shared, name: Name<OfSchedule>) -> Result<StatusCode, ApiError> {
    if read_schedule(&state, &name).await?.is_none() {
        return Err(not_found(&name));
    }
    state
        .topology
        .schedules
        .purge()
        .filter(schedule_subject(&name))
        .await
        .map_err(|e| ApiError::broker("cannot delete the schedule", e))?;
    tracing::info!(message = "schedule deleted", schedule = %name);
    Ok(StatusCode::NO_CONTENT)
}

/// Turns ticks into invocations, forever; restarts after broker errors.
pub async fn run_ticks(state: Arc<AppState>) {
    loop {
        if let Err(error) = dispatch_ticks(&state).await {
            tracing::warn!(message = "cron tick dispatcher failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn dispatch_ticks(state: &AppState) -> anyhow::Result<()> {
    let consumer = cron_dispatch_consumer(&state.topology.schedules).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("tick without stream info: {e}"))?;
        let (sequence, published_ms) = (
            info.stream_sequence,
            (info.published.unix_timestamp_nanos() / 1_000_000) as u64,
        );
        let name = message
            .subject
            .as_str()
            .strip_prefix("cron.")
            .unwrap_or_default()
            .to_string();
        let function = message
            .headers
            .as_ref()
            .and_then(|hs| hs.get(h::FUNCTION))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let id = squall_broker::record::event_invocation_id(
            published_ms,
            &tick_subject(&name),
            sequence,
        );
        let loaded = match Qualified::parse(&function, None) {
            Ok(target) => match load_record(state, &target.name).await {
                Ok(record) => resolve(&record, target.qualifier.as_deref(), &id)
                    .map(|version| (target.name.into_string(), job_version(&version))),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let (function, version) = match loaded {
            Ok(found) => found,
            Err(error) => {
                // A tick of a function that is gone has nothing to run.
                tracing::warn!(message = "dropping a tick: its function is not deployed",
                    schedule = %name, function = %function, error = %error.message);
                let _ = message.ack().await;
                continue;
            }
        };
        let traceparent = new_traceparent();
        let job = Job {
            function: &function,
            version: &version,
            id: &id,
            created_at_ms: published_ms,
            traceparent: &traceparent,
            source: "cron",
            extra_headers: vec![(h::SCHEDULE.to_string(), name.clone())],
            reply_to: None,
        };
        match submit(state, job, message.payload.clone()).await {
            Ok(()) => {
                let _ = message.ack().await;
            }
            Err(error) => {
                tracing::warn!(message = "cannot submit a tick's invocation; it will be retried",
                    schedule = %name, error = %error.message);
                let _ = message
                    .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                        Duration::from_secs(1),
                    )))
                    .await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_gain_a_zero_second_and_aliases_expand() {
        assert_eq!(
            CronSpec::parse("*/5 * * * *", None).unwrap().expression,
            "0 */5 * * * *"
        );
        assert_eq!(
            CronSpec::parse("* * * * * *", None).unwrap().expression,
            "* * * * * *"
        );
        assert_eq!(
            CronSpec::parse("@hourly", None).unwrap().expression,
            "0 0 * * * *"
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = CronSpec::parse("61 * * * *", None).err().unwrap();
        assert!(matches!(e, CronError::Expression { .. }), "{e}");
        assert!(e.to_string().contains("61 * * * *"));
        let e = CronSpec::parse("* * *", None).err().unwrap();
        assert!(e.to_string().contains("3 fields"), "{e}");
        let e = CronSpec::parse("0 0 L * *", None).err().unwrap();
        assert!(e.to_string().contains("'L'"), "{e}");
        let e = CronSpec::parse("* * * * *", Some("Mars/Olympus"))
            .err()
            .unwrap();
        assert_eq!(e, CronError::TimeZone("Mars/Olympus".into()));
    }

    #[test]
    fn next_fires_follow_the_time_zone() {
        // 09:00 every day in Paris is 08:00 UTC in winter.
        let spec = CronSpec::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        let jan_1_2026 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let next = spec.next_fires(jan_1_2026, 2);
        assert_eq!(rfc3339(next[0]), "2026-01-01T08:00:00Z");
        assert_eq!(rfc3339(next[1]), "2026-01-02T08:00:00Z");
        let every_second = CronSpec::parse("* * * * * *", None).unwrap();
        let fires = every_second.next_fires(1000, 5);
        assert_eq!(fires, vec![2000, 3000, 4000, 5000, 6000]);
    }
}
