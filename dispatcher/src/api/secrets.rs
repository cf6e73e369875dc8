//! Function secrets: `/v1/functions/{name}/secrets`. Values travel to workers in the registry
//! record and reach the function as `ctx.config.secrets`; the API only ever shows their names.

use crate::core::registry::Registry;
use crate::core::versions::modify;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, FunctionName};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use squall_api::functions::{SecretValues, Secrets};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::FunctionRecord;

/// Most secrets a function may have.
pub const MAX_SECRETS: usize = 64;
/// Longest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// What the API shows instead of a value.
pub const REDACTED: &str = "[redacted]";

/// The API's view of a function's secrets: names only.
fn view(record: &FunctionRecord) -> Json<Secrets> {
    Json(Secrets {
        function: record.name.clone(),
        secrets: record
            .secret_names()
            .into_iter()
            .map(|n| (n, REDACTED.to_string()))
            .collect(),
    })
}

/// Checks a secrets body: at most `MAX_SECRETS` values, plain names, bounded values.
fn checked(map: SecretValues) -> Result<SecretValues, ApiError> {
    let invalid = |m: String| ApiError::bad_request(ErrorCode::InvalidSecrets, m);
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
        if value.len() > MAX_SECRET_BYTES {
            return Err(invalid(format!(
                "secret {name} is longer than {MAX_SECRET_BYTES} bytes"
            )));
        }
    }
    Ok(map)
}

/// Sets `name`'s secrets JSON through the registry's compare-and-set (`versions::modify`):
/// the record written is the one read from the bucket with its revision, never a cached copy,
/// so a secrets change cannot undo a deploy it did not see, nor bring back a deleted function.
async fn store(
    registry: &Registry,
    name: &FunctionName,
    secrets_json: String,
) -> Result<FunctionRecord, ApiError> {
    let (record, ()) = modify(registry, name, |record| {
        record.secrets_json = secrets_json.clone();
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(record)
}

const NAME: &str = crate::http::extract::NAME;

/// Replace a function's secrets; the function reads them in `ctx.config.secrets`.
#[utoipa::path(put, path = "/v1/functions/{name}/secrets", tag = "functions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = SecretValues,
    responses(
        (status = 200, description = "The secrets' names.", body = Secrets),
        (status = 400, description = "Invalid name or secrets.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody)))]
pub async fn put(
    State(registry): State<Registry>,
    name: FunctionName,
    ApiJson(secrets): ApiJson<SecretValues>,
) -> Result<Json<Secrets>, ApiError> {
    let secrets = checked(secrets)?;
    let json = serde_json::to_string(&secrets).map_err(|e| ApiError::internal("secrets", e))?;
    let record = store(&registry, &name, json).await?;
    tracing::info!(message = "secrets set", function = %name, count = record.secret_names().len());
    Ok(view(&record))
}

/// A function's secret names (values are never shown).
#[utoipa::path(get, path = "/v1/functions/{name}/secrets", tag = "functions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The secrets' names.", body = Secrets),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody)))]
pub async fn get(
    State(registry): State<Registry>,
    name: FunctionName,
) -> Result<Json<Secrets>, ApiError> {
    Ok(view(&registry.load(&name).await?))
}

/// Remove all of a function's secrets.
#[utoipa::path(delete, path = "/v1/functions/{name}/secrets", tag = "functions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody)))]
pub async fn delete(
    State(registry): State<Registry>,
    name: FunctionName,
) -> Result<StatusCode, ApiError> {
    store(&registry, &name, String::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> SecretValues {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_have_plain_names_and_bounded_values() {
        assert!(checked(values(&[("API_TOKEN", "x")])).is_ok());
        let long = "x".repeat(MAX_SECRET_BYTES + 1);
        for bad in [
            values(&[("a b", "x")]),
            values(&[("", "x")]),
            values(&[("A", &long)]),
        ] {
            assert_eq!(checked(bad).unwrap_err().code, ErrorCode::InvalidSecrets);
        }
    }

    #[test]
    fn views_show_names_never_values() {
        let mut record = FunctionRecord::new("f", "00", 1, 0, &Default::default());
        record.secrets_json = r#"{"TOKEN": "s3cret"}"#.into();
        let shown = serde_json::to_string(&view(&record).0).unwrap();
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(record.call_config().contains("s3cret"));
    }
}
