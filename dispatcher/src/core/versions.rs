//! Numbered versions and aliases: the routes that list and delete versions and set, show,
//! delete and roll back aliases; qualifier resolution for every path that takes a function
//! name; and the compare-and-set write every change of a function's record goes through.

use crate::core::registry::load_record;
use crate::core::view::rfc3339;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, FunctionName};
use crate::AppState;
use async_nats::jetstream::kv;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use squall_api::versions::{
    valid_alias_name, Alias, AliasBody, AliasList, AliasTarget as AliasTargetView, Version,
    VersionList,
};
use squall_api::ErrorBody;
use squall_broker::time::now_ms;
use squall_broker::versions::{split_qualified, AliasTarget, VersionEntry, VersionError};
use squall_broker::FunctionRecord;
use std::collections::BTreeMap;
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

/// The `{name}` parameter of these routes (as `functions::NAME`, which this module may not
/// import: handlers import services, not each other).
const NAME: &str = "Function name: 1 to 64 ASCII letters, digits, '-' or '_'.";

/// The `{name}` parameter of a route that takes a qualifier.
pub(crate) const QUALIFIED_NAME: &str =
    "Function name, optionally with `:qualifier` (a version number, `$LATEST` or an alias).";

/// How many versions a function keeps unless the dispatcher is told otherwise.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;

/// The answer a refused version or alias operation gives.
pub fn version_error(function: &str, error: VersionError) -> ApiError {
    let message = format!("{function}: {error}");
    match error {
        VersionError::NoSuchVersion(_) => ApiError::not_found("version_not_found", message),
        VersionError::NoSuchAlias(_) => ApiError::not_found("alias_not_found", message),
        VersionError::BadQualifier(_) => ApiError::bad_request("invalid_qualifier", message),
        VersionError::BadWeight(_) | VersionError::WeightsOver => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_weights", message)
        }
        VersionError::Aliased { .. } | VersionError::Latest(_) | VersionError::NoPrevious(_) => {
            ApiError::new(StatusCode::CONFLICT, "version_in_use", message)
        }
    }
}

/// A function name as routes take it: `name`, or `name:qualifier`, with `query` as a second
/// way to give the qualifier (both at once must agree).
pub struct Qualified {
    pub name: FunctionName,
    pub qualifier: Option<String>,
}

impl Qualified {
    pub fn parse(text: &str, query: Option<&str>) -> Result<Qualified, ApiError> {
        let (name, in_name) = split_qualified(text);
        let name = FunctionName::parse(name.to_string())?;
        let qualifier = match (in_name, query) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(
                    "invalid_qualifier",
                    format!("the name's qualifier {a:?} and ?qualifier={b:?} disagree"),
                ))
            }
            (Some(q), _) | (None, Some(q)) => Some(q.to_string()),
            (None, None) => None,
        };
        Ok(Qualified { name, qualifier })
    }
}

/// The draw in `[0, 1)` that picks among an alias's weighted versions for invocation `id`: its
/// random bits, so the same invocation (a resend with the same Idempotency-Key) runs the same
/// version and many invocations spread by the weights.
pub fn draw(id: &str) -> f64 {
    // FNV-1a, then splitmix64's finalizer: ids that differ in a few bits (a batch's line ids
    // differ only in their index) still get unrelated draws.
    let mut h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The version `qualifier` names for invocation `id`, or the 404 that says what is missing.
pub fn resolve(
    record: &FunctionRecord,
    qualifier: Option<&str>,
    id: &str,
) -> Result<VersionEntry, ApiError> {
    record
        .versions
        .resolve(qualifier, draw(id))
        .cloned()
        .map_err(|e| version_error(&record.name, e))
}

/// `sha256:<hex>` of a version, as a job's `Squall-Version` names it.
pub fn job_version(entry: &VersionEntry) -> String {
    format!("sha256:{}", entry.sha256)
}

/// Reads `name`'s record, lets `change` edit it, and writes it back only if no one wrote in
/// between (the KV revision), trying again on a conflict. Returns the record as written and
/// what `change` returned.
pub async fn modify<T>(
    state: &AppState,
    name: &FunctionName,
    mut change: impl FnMut(&mut FunctionRecord) -> Result<T, ApiError>,
) -> Result<(FunctionRecord, T), ApiError> {
    let registry = &state.topology.registry;
    for _ in 0..10 {
        let entry = registry
            .entry(name.as_str())
            .await
            .map_err(|e| ApiError::broker("cannot read the function registry", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Err(ApiError::not_found(
                "function_not_found",
                format!("function {:?} is not deployed", name.as_str()),
            ));
        };
        let mut record =
            FunctionRecord::decode(&entry.value).map_err(|e| ApiError::internal("registry", e))?;
        let answer = change(&mut record)?;
        match registry
            .update(name.as_str(), record.encode().into(), entry.revision)
            .await
        {
            Ok(revision) => {
                state.registry.put(revision, record.clone());
                return Ok((record, answer));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(ApiError::broker("cannot write the function registry", e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "concurrent_change",
        format!("{name} changed too often while being updated; try again"),
    ))
}

fn version_view(record: &FunctionRecord, entry: &VersionEntry) -> Version {
    let aliases = record
        .versions
        .aliases
        .iter()
        .filter(|(_, a)| {
            a.target.version == entry.number
                || a.target.weights.iter().any(|(v, _)| *v == entry.number)
        })
        .map(|(name, _)| name.clone())
        .collect();
    Version {
        version: entry.number,
        sha256: entry.sha256.clone(),
        artifact_size: entry.artifact_size,
        deployed_at: rfc3339(entry.deployed_at_ms),
        latest: entry.number == record.versions.latest,
        aliases,
    }
}

/// The API view of a target.
fn target_view(target: &AliasTarget) -> AliasTargetView {
    AliasTargetView {
        version: target.version,
        weights: weights_view(&target.weights),
    }
}

fn weights_view(weights: &[(u32, f64)]) -> BTreeMap<String, f64> {
    weights.iter().map(|(v, w)| (v.to_string(), *w)).collect()
}

/// The API view of alias `name` of `record`.
pub fn alias_view(record: &FunctionRecord, name: &str) -> Option<Alias> {
    let alias = record.versions.aliases.get(name)?;
    Some(Alias {
        function: record.name.clone(),
        name: name.to_string(),
        version: alias.target.version,
        weights: weights_view(&alias.target.weights),
        previous: alias.previous.as_ref().map(target_view),
        updated_at: rfc3339(alias.updated_at_ms),
    })
}

/// The versions of `record`, oldest first.
pub fn version_list(record: &FunctionRecord) -> VersionList {
    VersionList {
        function: record.name.clone(),
        latest: record.versions.latest,
        versions: record
            .versions
            .list
            .iter()
            .map(|v| version_view(record, v))
            .collect(),
    }
}

fn checked_alias(name: String) -> Result<String, ApiError> {
    if valid_alias_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("alias name {name:?} must be 1 to 64 ASCII letters, digits, '-' or '_', not only digits"),
        ))
    }
}

fn checked_pair(name: String, alias: String) -> Result<(FunctionName, String), ApiError> {
    Ok((FunctionName::parse(name)?, checked_alias(alias)?))
}

/// List a function's retained versions.
#[utoipa::path(get, path = "/v1/functions/{name}/versions", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "Oldest first.", body = VersionList),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Not deployed.", body = ErrorBody)))]
pub async fn list_versions(
    State(state): Shared,
    name: FunctionName,
) -> Result<Json<VersionList>, ApiError> {
    Ok(Json(version_list(&load_record(&state, &name).await?)))
}

/// Delete a version: refused (409) for `$LATEST` and for a version an alias routes to.
#[utoipa::path(delete, path = "/v1/functions/{name}/versions/{version}", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("version" = u32, Path, description = "Version number.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Invalid name or number.", body = ErrorBody),
        (status = 404, description = "No such function or version.", body = ErrorBody),
        (status = 409, description = "The version is $LATEST or an alias points at it.", body = ErrorBody)))]
pub async fn delete_version(
    State(state): Shared,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = FunctionName::parse(name)?;
    let number: u32 = version.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_version",
            format!("{version:?} is not a version number"),
        )
    })?;
    modify(&state, &name, |record| {
        record
            .versions
            .delete(number)
            .map_err(|e| version_error(&record.name, e))
    })
    .await?;
    tracing::info!(message = "version deleted", function = %name, version = number);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// List a function's aliases.
#[utoipa::path(get, path = "/v1/functions/{name}/aliases", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "By name.", body = AliasList),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Not deployed.", body = ErrorBody)))]
pub async fn list_aliases(
    State(state): Shared,
    name: FunctionName,
) -> Result<Json<AliasList>, ApiError> {
    let record = load_record(&state, &name).await?;
    Ok(Json(AliasList {
        function: record.name.clone(),
        aliases: record
            .versions
            .aliases
            .keys()
            .filter_map(|alias| alias_view(&record, alias))
            .collect(),
    }))
}

/// Point an alias at a version, optionally sending weighted shares to others (a canary).
#[utoipa::path(put, path = "/v1/functions/{name}/aliases/{alias}", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("alias" = String, Path, description = "Alias name: letters, digits, '-' or '_', not only digits.")),
    request_body = AliasBody,
    responses(
        (status = 200, description = "The alias as set; `previous` is what a rollback returns to.", body = Alias),
        (status = 400, description = "Invalid name or weights key.", body = ErrorBody),
        (status = 404, description = "No such function or version.", body = ErrorBody),
        (status = 422, description = "Invalid body or weights.", body = ErrorBody)))]
pub async fn put_alias(
    State(state): Shared,
    Path((name, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<AliasBody>,
) -> Result<Json<Alias>, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    let mut weights = Vec::new();
    for (version, weight) in &body.weights {
        let number: u32 = version.parse().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_weights",
                format!("weights key {version:?} is not a version number"),
            )
        })?;
        if number != body.version {
            weights.push((number, *weight));
        }
    }
    let target = AliasTarget {
        version: body.version,
        weights,
    };
    let (record, ()) = modify(&state, &name, |record| {
        record
            .versions
            .set_alias(&alias, target.clone(), now_ms())
            .map(|_| ())
            .map_err(|e| version_error(&record.name, e))
    })
    .await?;
    tracing::info!(message = "alias set", function = %name, alias = %alias, version = body.version);
    alias_view(&record, &alias)
        .map(Json)
        .ok_or_else(|| ApiError::internal("alias", "the alias vanished after being set"))
}

/// Show an alias.
#[utoipa::path(get, path = "/v1/functions/{name}/aliases/{alias}", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("alias" = String, Path, description = "Alias name.")),
    responses(
        (status = 200, description = "The alias.", body = Alias),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "No such function or alias.", body = ErrorBody)))]
pub async fn get_alias(
    State(state): Shared,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Alias>, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    let record = load_record(&state, &name).await?;
    alias_view(&record, &alias)
        .map(Json)
        .ok_or_else(|| version_error(&name, VersionError::NoSuchAlias(alias)))
}

/// Delete an alias; the versions it pointed at may then be deleted.
#[utoipa::path(delete, path = "/v1/functions/{name}/aliases/{alias}", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("alias" = String, Path, description = "Alias name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "No such function or alias.", body = ErrorBody)))]
pub async fn delete_alias(
    State(state): Shared,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    modify(&state, &name, |record| {
        record
            .versions
            .aliases
            .remove(&alias)
            .map(|_| ())
            .ok_or_else(|| version_error(&record.name, VersionError::NoSuchAlias(alias.clone())))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Move an alias back to its previous target (a second rollback undoes the first).
#[utoipa::path(post, path = "/v1/functions/{name}/aliases/{alias}/rollback", tag = "versions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("alias" = String, Path, description = "Alias name.")),
    responses(
        (status = 200, description = "The alias after the rollback.", body = Alias),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "No such function, alias or version.", body = ErrorBody),
        (status = 409, description = "The alias never moved.", body = ErrorBody)))]
pub async fn rollback_alias(
    State(state): Shared,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Alias>, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    let (record, version) = modify(&state, &name, |record| {
        record
            .versions
            .rollback(&alias, now_ms())
            .map(|a| a.target.version)
            .map_err(|e| version_error(&record.name, e))
    })
    .await?;
    tracing::info!(message = "alias rolled back", function = %name, alias = %alias, version);
    alias_view(&record, &alias)
        .map(Json)
        .ok_or_else(|| ApiError::internal("alias", "the alias vanished after a rollback"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_stable_per_invocation_and_spread_over_many() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(draw(&id), draw(&id));
        let n = 20_000;
        let below = (0..n)
            .filter(|_| draw(&uuid::Uuid::now_v7().to_string()) < 0.25)
            .count();
        let share = below as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
    }

    #[test]
    fn a_qualifier_comes_from_the_name_or_the_query() {
        let q = Qualified::parse("hello:live", None).unwrap();
        assert_eq!(
            (q.name.as_str(), q.qualifier.as_deref()),
            ("hello", Some("live"))
        );
        let q = Qualified::parse("hello", Some("3")).unwrap();
        assert_eq!(q.qualifier.as_deref(), Some("3"));
        assert!(Qualified::parse("hello:live", Some("3")).is_err());
        assert!(Qualified::parse("he llo:live", None).is_err());
    }
}
