//! The schedule routes: `/v1/schedules` (put, show, list, delete).

use crate::core::broker::Broker;
use crate::core::registry::Registry;
use crate::core::versions::{resolve, Qualified};
use crate::core::view::rfc3339;
use crate::events::schedules::{CronError, CronSpec, PREVIEW, TICK_TTL};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Name, OfSchedule};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use squall_api::operations::{Schedule, ScheduleList, ScheduleRequest};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::headers as h;
use squall_broker::names::{schedule_subject, tick_subject};
use squall_broker::time::now_ms;

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
        CronError::Expression { .. } => {
            ApiError::bad_request(ErrorCode::InvalidCron, e.to_string())
        }
        CronError::TimeZone(_) => ApiError::bad_request(ErrorCode::InvalidTimezone, e.to_string()),
    }
}

/// The schedule stored under `name`, as (function, spec, payload).
async fn read_schedule(
    broker: &Broker,
    name: &str,
) -> Result<Option<(String, CronSpec, Bytes)>, ApiError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let message = match broker
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
    State(registry): State<Registry>,
    State(broker): State<Broker>,
    name: Name<OfSchedule>,
    ApiJson(body): ApiJson<ScheduleRequest>,
) -> Result<Json<Schedule>, ApiError> {
    let name = name.as_str();
    let spec = CronSpec::parse(&body.cron, body.timezone.as_deref()).map_err(cron_error)?;
    // `name:alias` is kept as given and resolved at each tick.
    let target = Qualified::parse(&body.function, None)?;
    let function = registry.load(&target.name).await?;
    resolve(&function, target.qualifier.as_deref(), "")?;
    let payload = body
        .payload
        .as_ref()
        .map(|p| p.to_string().into_bytes())
        .unwrap_or_default();
    // Re-publishing an unchanged schedule would restart its timer: skip it.
    let unchanged = match read_schedule(&broker, name).await? {
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
        broker
            .topology
            .jetstream
            .publish_with_headers(schedule_subject(name), headers, payload.clone().into())
            .await
            .map_err(|e| ApiError::broker("cannot store the schedule", e))?
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    ErrorCode::InvalidCron,
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
pub async fn get(
    State(_registry): State<Registry>,
    State(broker): State<Broker>,
    name: Name<OfSchedule>,
) -> Result<Json<Schedule>, ApiError> {
    match read_schedule(&broker, &name).await? {
        Some((function, spec, payload)) => {
            Ok(Json(schedule_view(&name, &function, &spec, &payload)))
        }
        None => Err(not_found(&name)),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        ErrorCode::ScheduleNotFound,
        format!("no schedule named {name:?}"),
    )
}

/// List schedules.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", responses(
    (status = 200, description = "All schedules, by name.", body = ScheduleList)))]
pub async fn list(
    State(_registry): State<Registry>,
    State(broker): State<Broker>,
) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = broker.topology.schedules.clone();
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
        if let Some((function, spec, payload)) = read_schedule(&broker, &name).await? {
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
pub async fn delete(
    State(_registry): State<Registry>,
    State(broker): State<Broker>,
    name: Name<OfSchedule>,
) -> Result<StatusCode, ApiError> {
    if read_schedule(&broker, &name).await?.is_none() {
        return Err(not_found(&name));
    }
    broker
        .topology
        .schedules
        .purge()
        .filter(schedule_subject(&name))
        .await
        .map_err(|e| ApiError::broker("cannot delete the schedule", e))?;
    tracing::info!(message = "schedule deleted", schedule = %name);
    Ok(StatusCode::NO_CONTENT)
}
