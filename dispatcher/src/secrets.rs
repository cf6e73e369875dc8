//! Function secrets: `/v1/functions/{name}/secrets`. Values travel to workers in the registry
//! record and reach the function as `ctx.config.secrets`; the API only ever shows their names.

use crate::api::load_record;
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use squall_broker::FunctionRecord;
use std::sync::Arc;

/// Most secrets a function may have.
pub const MAX_SECRETS: usize = 64;
/// Longest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// What the API shows instead of a value.
pub const REDACTED: &str = "[redacted]";

/// The API's view of a function's secrets: names only.
pub fn redacted(record: &FunctionRecord) -> serde_json::Value {
    let names = record.secret_names();
    let map: serde_json::Map<String, serde_json::Value> =
        names.into_iter().map(|n| (n, REDACTED.into())).collect();
    serde_json::Value::Object(map)
}

fn view(record: &FunctionRecord) -> Response {
    Json(serde_json::json!({ "function": record.name, "secrets": redacted(record) }))
        .into_response()
}

/// Validates a secrets body: a JSON object of at most `MAX_SECRETS` string values.
fn parse(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_secrets", m);
    let map = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            return Err(invalid(
                "secrets must be a JSON object of name → string".into(),
            ))
        }
        Err(e) => return Err(invalid(format!("secrets must be JSON: {e}"))),
    };
    if map.len() > MAX_SECRETS {
        return Err(invalid(format!(
            "{} secrets; the limit is {MAX_SECRETS}",
            map.len()
        )));
    }
    for (name, value) in &map {
        let ok_name = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_name {
            return Err(invalid(format!(
                "secret name {name:?} must be 1 to 128 ASCII letters, digits, '_' or '-'"
            )));
        }
        match value.as_str() {
            Some(v) if v.len() <= MAX_SECRET_BYTES => {}
            Some(_) => {
                return Err(invalid(format!(
                    "secret {name} is longer than {MAX_SECRET_BYTES} bytes"
                )))
            }
            None => return Err(invalid(format!("secret {name} must be a string"))),
        }
    }
    Ok(map)
}

async fn store(state: &AppState, record: FunctionRecord) -> Result<FunctionRecord, ApiError> {
    let revision = state
        .topology
        .registry
        .put(&record.name, record.encode().into())
        .await
        .map_err(|e| ApiError::broker("cannot store the secrets", e))?;
    state.registry.put(revision, record.clone());
    Ok(record)
}

/// `PUT /v1/functions/{name}/secrets`: replaces the function's secrets.
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let secrets = parse(&body)?;
    let mut record = load_record(&state, &name).await?;
    record.secrets_json = serde_json::Value::Object(secrets).to_string();
    let record = store(&state, record).await?;
    tracing::info!(message = "secrets set", function = %name, count = record.secret_names().len());
    Ok(view(&record))
}

/// `GET /v1/functions/{name}/secrets`: the names, values redacted.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(view(&load_record(&state, &name).await?))
}

/// `DELETE /v1/functions/{name}/secrets`: removes them all.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut record = load_record(&state, &name).await?;
    record.secrets_json = String::new();
    store(&state, record).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_string_maps_with_plain_names() {
        assert!(parse(br#"{"API_TOKEN": "x"}"#).is_ok());
        for bad in [
            &br#"["x"]"#[..],
            br#"{"A": 1}"#,
            br#"{"a b": "x"}"#,
            b"nope",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, "invalid_secrets");
        }
    }

    #[test]
    fn views_show_names_never_values() {
        let mut record = FunctionRecord::new("f", "00", 1, 0, &Default::default());
        record.secrets_json = r#"{"TOKEN": "s3cret"}"#.into();
        let shown = redacted(&record).to_string();
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(record.call_config().contains("s3cret"));
    }
}
