//! The trigger routes: `/v1/triggers` (put, show, list, delete), binding a subject pattern or a KV bucket's keys to a function.

use crate::core::broker::Broker;
use crate::core::registry::Registry;
use crate::core::versions::{resolve, Qualified};
use crate::core::view::rfc3339;
use crate::events::triggers::{
    all_triggers, event_stream, read_trigger, subject_patterns, sync_event_subjects,
};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Name, OfTrigger};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use squall_api::operations::{Trigger, TriggerKind, TriggerList, TriggerRequest};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::events::{
    subjects_overlap, validate_kv_bucket, validate_subject_pattern, TriggerRecord, TriggerSource,
};
use squall_broker::time::now_ms;
use squall_broker::topology::{delete_trigger_consumer, replace_trigger_consumer};

fn trigger_view(record: &TriggerRecord) -> Trigger {
    let (kind, subject, bucket, key) = match &record.source {
        TriggerSource::Subject { subject } => {
            (TriggerKind::Subject, Some(subject.clone()), None, None)
        }
        TriggerSource::Kv { bucket, key } => (
            TriggerKind::Kv,
            None,
            Some(bucket.clone()),
            Some(key.clone()),
        ),
    };
    Trigger {
        name: record.name.clone(),
        function: record.function.clone(),
        created_at: rfc3339(record.created_at_ms),
        kind,
        subject,
        bucket,
        key,
    }
}

/// Checks a KV key pattern: subject tokens, wildcards allowed.
fn validate_key_pattern(key: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            ErrorCode::InvalidTrigger,
            format!("key pattern {key:?} must be dot-separated tokens, with '*' for one token and '>' for the rest"),
        )
    };
    // The same token rules as a subject, without Squall's reserved prefixes.
    match validate_subject_pattern(&format!("kv.{key}")) {
        Ok(()) => Ok(()),
        Err(_) => Err(bad()),
    }
}

const NAME: &str = "Trigger name: 1 to 64 ASCII letters, digits, '-' or '_'.";

/// Bind a NATS subject pattern, or a key-value bucket's keys, to a function: every message or
/// change is one invocation.
#[utoipa::path(put, path = "/v1/triggers/{name}", tag = "triggers",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = TriggerRequest,
    responses(
        (status = 200, description = "The trigger.", body = Trigger),
        (status = 400, description = "Invalid name, body, subject or key pattern, or a bucket of Squall's own (squall_*).", body = ErrorBody),
        (status = 404, description = "Unknown function or bucket.", body = ErrorBody),
        (status = 409, description = "The pattern overlaps another trigger's, or another stream's subjects.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody)))]
pub async fn put(
    State(registry): State<Registry>,
    State(broker): State<Broker>,
    name: Name<OfTrigger>,
    ApiJson(body): ApiJson<TriggerRequest>,
) -> Result<Json<Trigger>, ApiError> {
    let name = name.into_string();
    let source = match (body.subject, body.bucket, body.key) {
        (Some(subject), None, None) => {
            validate_subject_pattern(&subject)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidSubject, e.to_string()))?;
            TriggerSource::Subject { subject }
        }
        (None, Some(bucket), key) => {
            validate_kv_bucket(&bucket)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidTrigger, e.to_string()))?;
            let key = key.unwrap_or_else(|| ">".into());
            validate_key_pattern(&key)?;
            TriggerSource::Kv { bucket, key }
        }
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidTrigger,
                "give either subject, or bucket (and optionally key), not both",
            ))
        }
    };
    // `name:alias` is kept as given and resolved at each event.
    let target = Qualified::parse(&body.function, None)?;
    let function = registry.load(&target.name).await?;
    resolve(&function, target.qualifier.as_deref(), "")?;
    let record = TriggerRecord {
        name: name.clone(),
        function: body.function,
        source,
        created_at_ms: now_ms(),
    };
    let existing = all_triggers(&broker).await?;
    if let Some(old) = existing.iter().find(|r| r.name == name) {
        if old.function == record.function && old.source == record.source {
            return Ok(Json(trigger_view(old)));
        }
    }
    for other in existing.iter().filter(|r| r.name != name) {
        let overlap = match (&record.source, &other.source) {
            (TriggerSource::Subject { subject: a }, TriggerSource::Subject { subject: b }) => {
                subjects_overlap(a, b)
            }
            (
                TriggerSource::Kv { bucket: a, key: ka },
                TriggerSource::Kv { bucket: b, key: kb },
            ) => a == b && subjects_overlap(ka, kb),
            _ => false,
        };
        if overlap {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::TriggerOverlap,
                format!(
                    "trigger {name:?} would overlap trigger {:?} ({}); an event must belong to one trigger",
                    other.name,
                    other.filter_subject()
                ),
            )
            .with("overlaps", other.name.as_str()));
        }
    }
    let stream = event_stream(&broker, &record).await?;
    if let TriggerSource::Subject { subject } = &record.source {
        let mut patterns = subject_patterns(&existing, &name);
        patterns.push(subject.clone());
        sync_event_subjects(&broker, patterns).await?;
    }
    // A changed binding gets a fresh consumer.
    replace_trigger_consumer(&stream, &record)
        .await
        .map_err(|e| ApiError::broker("cannot create the trigger's consumer", e))?;
    broker
        .topology
        .triggers
        .put(&name, record.encode().into())
        .await
        .map_err(|e| ApiError::broker("cannot store the trigger", e))?;
    tracing::info!(message = "trigger set", trigger = %name, function = %record.function, filter = %record.filter_subject());
    Ok(Json(trigger_view(&record)))
}

/// Show a trigger.
#[utoipa::path(get, path = "/v1/triggers/{name}", tag = "triggers",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The trigger.", body = Trigger),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown trigger.", body = ErrorBody)))]
pub async fn get(
    State(_registry): State<Registry>,
    State(broker): State<Broker>,
    name: Name<OfTrigger>,
) -> Result<Json<Trigger>, ApiError> {
    match read_trigger(&broker, &name).await? {
        Some(record) => Ok(Json(trigger_view(&record))),
        None => Err(not_found(&name)),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        ErrorCode::TriggerNotFound,
        format!("no trigger named {name:?}"),
    )
}

/// List triggers.
#[utoipa::path(get, path = "/v1/triggers", tag = "triggers", responses(
    (status = 200, description = "All triggers, by name.", body = TriggerList)))]
pub async fn list(
    State(_registry): State<Registry>,
    State(broker): State<Broker>,
) -> Result<Json<TriggerList>, ApiError> {
    let triggers = all_triggers(&broker)
        .await?
        .iter()
        .map(trigger_view)
        .collect();
    Ok(Json(TriggerList { triggers }))
}

/// Delete a trigger; events already turned into invocations still run.
#[utoipa::path(delete, path = "/v1/triggers/{name}", tag = "triggers",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown trigger.", body = ErrorBody)))]
pub async fn delete(
    State(_registry): State<Registry>,
    State(broker): State<Broker>,
    name: Name<OfTrigger>,
) -> Result<StatusCode, ApiError> {
    let name = name.into_string();
    let Some(record) = read_trigger(&broker, &name).await? else {
        return Err(not_found(&name));
    };
    broker
        .topology
        .triggers
        .delete(&name)
        .await
        .map_err(|e| ApiError::broker("cannot delete the trigger", e))?;
    if let Ok(stream) = event_stream(&broker, &record).await {
        delete_trigger_consumer(&stream, &name).await;
    }
    if let TriggerSource::Subject { subject } = &record.source {
        let existing = all_triggers(&broker).await?;
        sync_event_subjects(&broker, subject_patterns(&existing, &name)).await?;
        // Events of the old binding must not fire a later one on the same subject.
        let _ = broker
            .topology
            .events
            .purge()
            .filter(subject.as_str())
            .await;
    }
    tracing::info!(message = "trigger deleted", trigger = %name);
    Ok(StatusCode::NO_CONTENT)
}
