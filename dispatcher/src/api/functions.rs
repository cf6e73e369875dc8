//! The function routes: deploy (multipart or a bare artifact), list, show and delete.

use crate::core::artifact::validate_artifact;
use crate::core::broker::Broker;
use crate::core::bundle::BundleRefusal;
use crate::core::registry::Registry;
use crate::core::registry::RegistryError;
use crate::core::versions::modify;
use crate::core::versions::ModifyError;
use crate::core::view::function_view;
use crate::events::destinations::Destinations;
use crate::http::error::ApiError;
use crate::http::extract::FunctionName;
use crate::http::extract::NAME;
use crate::http::limits::read_limited;
use crate::state::{BundleChecking, Limits, TopologySettings};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use squall_api::functions::{DeployForm, Function, FunctionList};
use squall_api::invocations::Binary;
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::names::{artifact_key, consumer_name};
use squall_broker::time::now_ms;
use squall_broker::{FunctionRecord, FunctionSpec, TopologyConfig};
use std::time::Duration;

/// The artifact and spec of a deploy request, from either body form.
struct DeployParts {
    artifact: bytes::Bytes,
    config: Option<bytes::Bytes>,
}

async fn deploy_parts(limit: usize, request: Request) -> Result<DeployParts, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "artifact is larger than the limit of {limit} bytes"
        ))
    };
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        let artifact = read_limited(request.into_body(), limit)
            .await
            .map_err(|_| too_large())?;
        return Ok(DeployParts {
            artifact,
            config: None,
        });
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(ErrorCode::BadMultipart, e.body_text()))?;
    let mut artifact = None;
    let mut config = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => {
                return Err(ApiError::bad_request(
                    ErrorCode::BadMultipart,
                    e.body_text(),
                ))
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let data = match field.bytes().await {
            Ok(data) => data,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => {
                return Err(ApiError::bad_request(
                    ErrorCode::BadMultipart,
                    e.body_text(),
                ))
            }
        };
        match name.as_str() {
            "artifact" => artifact = Some(data),
            "config" => config = Some(data),
            other => {
                return Err(ApiError::bad_request(
                    ErrorCode::BadMultipart,
                    format!(
                    "unexpected part {other:?}; expected \"artifact\" and optionally \"config\""
                ),
                ))
            }
        }
    }
    let artifact = artifact.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::BadMultipart,
            "the multipart body has no \"artifact\" part",
        )
    })?;
    Ok(DeployParts { artifact, config })
}

/// Deploy (create or update) a function: a multipart body with an `artifact` part and an
/// optional JSON `config` part, or the bare artifact.
#[utoipa::path(put, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body(content(
        (DeployForm = "multipart/form-data"),
        (Binary = "application/octet-stream"))),
    responses(
        (status = 201, description = "Deployed; `warnings` names risky settings such as a web function without a key.", body = Function),
        (status = 400, description = "Invalid name, or not a loadable artifact (not ELF, truncated, wrong architecture, no squall_abi_version export), or a malformed multipart body, or a URL destination the egress guard refuses (`invalid_callback_url`: its host is or resolves to a loopback, link-local, private, unique-local, unspecified, multicast or broadcast address the operator did not allow).", body = ErrorBody),
        (status = 413, description = "The artifact is larger than the limit.", body = ErrorBody),
        (status = 422, description = "Invalid spec (unknown field, value out of range, a destination that is neither an http(s) URL nor a subject Squall may publish to).", body = ErrorBody),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody)))]
pub async fn deploy(
    State(registry): State<Registry>,
    State(destinations): State<Destinations>,
    State(limits): State<Limits>,
    State(TopologySettings(topology)): State<TopologySettings>,
    State(checking): State<BundleChecking>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // Read the body before judging the name, so a client still sending gets an answer, not a
    // reset connection.
    let parts = deploy_parts(limits.max_artifact, request).await?;
    let name = FunctionName::parse(name)?;
    let is_bundle = squall_bundle::is_bundle(&parts.artifact);
    let spec = match &parts.config {
        // A language runtime runs one call at a time per process (the pool scales processes)
        // unless the spec says otherwise.
        None if is_bundle => FunctionSpec {
            concurrency: 1,
            ..FunctionSpec::default()
        },
        None => FunctionSpec::default(),
        Some(bytes) if is_bundle => {
            let mut spec = FunctionSpec::from_json(bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidSpec,
                    e.to_string(),
                )
            })?;
            let explicit = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .is_some_and(|v| v.get("concurrency").is_some());
            if !explicit {
                spec.concurrency = 1;
            }
            spec
        }
        Some(bytes) => FunctionSpec::from_json(bytes).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidSpec,
                e.to_string(),
            )
        })?,
    };
    crate::events::destinations::check_subjects(&spec)?;
    check_backlog_limit(&spec, &topology)?;
    // Boxed: a large future, polled on the caller's stack.
    Box::pin(crate::events::destinations::check_spec_urls(
        &destinations,
        &spec,
    ))
    .await?;
    if is_bundle {
        crate::core::bundle::check(
            &checking.worker_binary,
            &checking.scratch,
            parts.artifact.clone(),
        )
        .await
        .map_err(|refusal| match refusal {
            BundleRefusal::Invalid(message) => {
                ApiError::bad_request(ErrorCode::InvalidArtifact, message)
            }
            BundleRefusal::Unavailable(message) => ApiError::internal_message(message),
        })?;
    } else {
        validate_artifact(&parts.artifact)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidArtifact, e.to_string()))?;
    }
    let sha = hex::encode(Sha256::digest(&parts.artifact));
    let key = artifact_key(&sha);
    let broker = &destinations.broker;
    let store = &broker.topology.artifacts;
    if store.info(&key).await.is_err() {
        let mut reader = parts.artifact.as_ref();
        store
            .put(key.as_str(), &mut reader)
            .await
            .map_err(|e| ApiError::broker("cannot store the artifact", e))?;
    }
    squall_broker::ensure_function_consumer(&broker.topology.jobs, &name, &spec, &topology)
        .await
        .map_err(|e| ApiError::broker("cannot create the function's consumer", e))?;
    // Its payload bucket exists before any job does: a worker stores large outputs there.
    squall_broker::topology::ensure_payload_store(&broker.topology.jetstream, &topology, &name)
        .await
        .map_err(|e| ApiError::broker("cannot create the function's payload bucket", e))?;
    let size = parts.artifact.len() as u64;
    let (record, had_destinations) =
        write_deploy(&registry, limits.keep_versions, &name, &sha, size, &spec).await?;
    // The destinations consumer follows the function's results from now on (or stops).
    if had_destinations || record.destinations.is_some() {
        // Boxed: a large future, polled on the caller's stack.
        Box::pin(crate::events::destinations::sync_filter(&destinations)).await?;
    }
    tracing::info!(message = "function deployed", function = %name, version = %record.version);
    let mut view = function_view(&record);
    view.warnings = deploy_warnings(&name, &spec);
    view.destination_secret =
        crate::events::destinations::signing_keys(&destinations, Some(&record))
            .first()
            .map(|key| key.encode());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Refuses a spec whose `max_backlog` is above the dispatcher's: JOBS holds no more of one
/// function's jobs than that, so a higher limit would be a promise the stream does not keep.
fn check_backlog_limit(spec: &FunctionSpec, topology: &TopologyConfig) -> Result<(), ApiError> {
    match spec.max_backlog {
        Some(limit) if limit > topology.max_backlog.max(0) as u64 => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidSpec,
            format!(
                "max_backlog is {limit}, above this dispatcher's limit of {} jobs per function (--max-backlog)",
                topology.max_backlog
            ),
        )),
        _ => Ok(()),
    }
}

/// Writes the record of a deploy: new content becomes the next numbered version (and
/// `$LATEST`), identical content none; the function's secrets, older versions and aliases stay,
/// and the versions beyond the dispatcher's `keep_versions` go (never an aliased one). Dropped
/// versions' artifacts stay in the object store: another function may share them. The
/// destination secret is made at the first deploy and kept. Also answers whether the previous
/// record had destinations.
async fn write_deploy(
    registry: &Registry,
    keep: usize,
    name: &FunctionName,
    sha: &str,
    size: u64,
    spec: &FunctionSpec,
) -> Result<(FunctionRecord, bool), ApiError> {
    let new_secret = crate::events::destinations::new_secret();
    for _ in 0..5 {
        let mut fresh = FunctionRecord::new(name, sha, size, now_ms(), spec);
        fresh.destination_secret = new_secret.clone();
        let mut had_destinations = false;
        let changed = modify(registry, name, |previous| {
            let mut next = fresh.clone();
            next.secrets_json = previous.secrets_json.clone();
            had_destinations = previous.destinations.is_some();
            if !previous.destination_secret.is_empty() {
                next.destination_secret = previous.destination_secret.clone();
            }
            next.versions = previous.versions.clone();
            if !next.versions.deploy(sha, size, next.deployed_at_ms) {
                next.deployed_at_ms = previous.deployed_at_ms;
            }
            let dropped = next.versions.retain(keep);
            if let Some(latest) = next.versions.latest().cloned() {
                next.set_current(&latest);
            }
            *previous = next;
            Ok::<_, ModifyError>(dropped)
        })
        .await;
        match changed {
            Ok((record, dropped)) => {
                if !dropped.is_empty() {
                    tracing::info!(message = "old versions dropped", function = %name, ?dropped);
                }
                return Ok((record, had_destinations));
            }
            Err(ModifyError::Registry(RegistryError::NotDeployed(_))) => {}
            Err(e) => return Err(e.into()),
        }
        match registry
            .bucket()
            .create(name.as_str(), fresh.encode().into())
            .await
        {
            Ok(revision) => {
                registry.put(revision, fresh.clone());
                return Ok((fresh, false));
            }
            // Deployed by someone else in between: add this deploy to theirs.
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(ApiError::broker("cannot write the function registry", e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::ConcurrentChange,
        format!("{name} changed too often while being deployed; try again"),
    ))
}

/// What a deploy answer warns about: a web function anyone may call.
fn deploy_warnings(name: &str, spec: &FunctionSpec) -> Vec<String> {
    match &spec.web {
        Some(web) if web.auth == squall_api::WebAuth::None => {
            let limit = match web.rate_per_s {
                Some(rate) => format!("at most {rate} requests per second per client address"),
                None => "with no rate limit (set web.rate_per_s)".to_string(),
            };
            vec![format!(
                "web.auth is \"none\": anyone who can reach the dispatcher may call /function/{name} \
                 without a key, {limit}; the function must check its callers itself (a signature, a token)"
            )]
        }
        _ => Vec::new(),
    }
}

/// List deployed functions (those the key may reach, when it is limited to some).
#[utoipa::path(get, path = "/v1/functions", tag = "functions", responses(
    (status = 200, description = "All functions the key may reach, by name.", body = FunctionList),
    (status = 503, description = "The broker is unavailable.", body = ErrorBody)))]
pub async fn list_functions(
    State(registry): State<Registry>,
    caller: crate::http::auth::Caller,
) -> Result<Json<FunctionList>, ApiError> {
    let functions = registry.list().await?;
    Ok(Json(FunctionList {
        functions: functions
            .iter()
            .filter(|record| caller.allows(&record.name))
            .map(function_view)
            .collect(),
    }))
}

/// Show a function.
#[utoipa::path(get, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The function.", body = Function),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Not deployed.", body = ErrorBody)))]
pub async fn get_function(
    State(registry): State<Registry>,
    name: FunctionName,
) -> Result<Json<Function>, ApiError> {
    Ok(Json(function_view(&registry.load(&name).await?)))
}

/// Remove a function: running jobs finish, queued ones become dead letters, and its state keys
/// are purged.
#[utoipa::path(delete, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Not deployed.", body = ErrorBody)))]
pub async fn delete_function(
    State(registry): State<Registry>,
    State(broker): State<Broker>,
    name: FunctionName,
) -> Result<Response, ApiError> {
    let record = registry.load(&name).await?;
    registry
        .bucket()
        .delete(&name)
        .await
        .map_err(|e| ApiError::broker("cannot delete from the function registry", e))?;
    registry.remove(&name, u64::MAX);
    // Workers stop pulling once they see the delete; let the jobs they are running finish (up
    // to the function's timeout, at most 30 s) so that those end with their own result.
    let drain = Duration::from_millis(record.timeout_ms).min(Duration::from_secs(30))
        + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + drain;
    while tokio::time::Instant::now() < deadline {
        match broker
            .topology
            .jobs
            .consumer_info(consumer_name(&name))
            .await
        {
            Ok(info) if info.num_ack_pending > 0 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => break,
        }
    }
    if let Err(error) =
        squall_broker::topology::delete_function_consumer(&broker.topology.jobs, &name).await
    {
        tracing::warn!(message = "cannot delete the function's consumer", function = %name, error = %error);
    }
    // Jobs still queued can no longer run: they become dead letters (replayable after a
    // redeploy) instead of waiting forever.
    match crate::events::dlq::sweep_deleted_function(&broker, &registry, &name).await {
        Ok(0) => {}
        Ok(moved) => {
            tracing::info!(message = "queued jobs of a deleted function dead-lettered", function = %name, moved)
        }
        Err(error) => {
            tracing::warn!(message = "cannot dead-letter the deleted function's queued jobs", function = %name, %error)
        }
    }
    // Its state goes with it: a function deployed later under this name starts with none.
    match crate::core::state::purge_function_state(&broker, &name).await {
        Ok(0) => {}
        Ok(purged) => {
            tracing::info!(message = "state of a deleted function purged", function = %name, purged)
        }
        Err(error) => {
            tracing::warn!(message = "cannot purge the deleted function's state", function = %name, %error)
        }
    }
    tracing::info!(message = "function deleted", function = %name);
    Ok(StatusCode::NO_CONTENT.into_response())
}
