//! The version and alias routes: list and delete versions; set, show, delete and roll back aliases.

use crate::core::registry::Registry;
use crate::core::versions::{modify, Refused};
use crate::core::view::{alias_view, version_list};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, FunctionName};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use squall_api::versions::{valid_alias_name, Alias, AliasBody, AliasList, VersionList};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::time::now_ms;
use squall_broker::versions::{AliasTarget, VersionError};

/// The `{name}` parameter of these routes (as `functions::NAME`, which this module may not
/// import: handlers import services, not each other).
const NAME: &str = "Function name: 1 to 64 ASCII letters, digits, '-' or '_'.";

fn checked_alias(name: String) -> Result<String, ApiError> {
    if valid_alias_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidName,
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
    State(registry): State<Registry>,
    name: FunctionName,
) -> Result<Json<VersionList>, ApiError> {
    Ok(Json(version_list(&registry.load(&name).await?)))
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
    State(registry): State<Registry>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = FunctionName::parse(name)?;
    let number: u32 = version.parse().map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidVersion,
            format!("{version:?} is not a version number"),
        )
    })?;
    modify(&registry, &name, |record| {
        record
            .versions
            .delete(number)
            .map_err(|e| refused(&record.name, e))
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
    State(registry): State<Registry>,
    name: FunctionName,
) -> Result<Json<AliasList>, ApiError> {
    let record = registry.load(&name).await?;
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
    State(registry): State<Registry>,
    Path((name, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<AliasBody>,
) -> Result<Json<Alias>, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    let mut weights = Vec::new();
    for (version, weight) in &body.weights {
        let number: u32 = version.parse().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidWeights,
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
    let (record, ()) = modify(&registry, &name, |record| {
        record
            .versions
            .set_alias(&alias, target.clone(), now_ms())
            .map(|_| ())
            .map_err(|e| refused(&record.name, e))
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
    State(registry): State<Registry>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Alias>, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    let record = registry.load(&name).await?;
    alias_view(&record, &alias)
        .map(Json)
        .ok_or_else(|| refused(&name, VersionError::NoSuchAlias(alias)))
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
    State(registry): State<Registry>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    modify(&registry, &name, |record| {
        record
            .versions
            .aliases
            .remove(&alias)
            .map(|_| ())
            .ok_or_else(|| refused(&record.name, VersionError::NoSuchAlias(alias.clone())))
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
    State(registry): State<Registry>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Alias>, ApiError> {
    let (name, alias) = checked_pair(name, alias)?;
    let (record, version) = modify(&registry, &name, |record| {
        record
            .versions
            .rollback(&alias, now_ms())
            .map(|a| a.target.version)
            .map_err(|e| refused(&record.name, e))
    })
    .await?;
    tracing::info!(message = "alias rolled back", function = %name, alias = %alias, version);
    alias_view(&record, &alias)
        .map(Json)
        .ok_or_else(|| ApiError::internal("alias", "the alias vanished after a rollback"))
}

/// The answer of a refused version or alias operation on `function`.
fn refused(function: &str, error: VersionError) -> ApiError {
    Refused {
        function: function.to_string(),
        error,
    }
    .into()
}
