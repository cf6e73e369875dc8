//! HTTP handlers of API v1.

use crate::artifact::validate_artifact;
use crate::error::ApiError;
use crate::index::Accepted;
use crate::view::{function_view, invocation_view, queued_view};
use crate::waiter::Outcome;
use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use squall_broker::names::{artifact_key, consumer_name, jobs_subject, results_subject};
use squall_broker::{headers as h, FunctionRecord, FunctionSpec, InvocationStatus, ResultMeta};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;

type Shared = State<Arc<AppState>>;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    squall_broker::validate_function_name(name)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

pub(crate) async fn load_record(state: &AppState, name: &str) -> Result<FunctionRecord, ApiError> {
    checked_name(name)?;
    if let Some(record) = state.registry.get(name) {
        return Ok((*record).clone());
    }
    match state.topology.registry.entry(name).await {
        Ok(Some(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
            let record = FunctionRecord::decode(&entry.value)
                .map_err(|e| ApiError::internal("registry", e))?;
            state.registry.put(entry.revision, record.clone());
            Ok(record)
        }
        Ok(_) => Err(ApiError::not_found(
            "function_not_found",
            format!("function {name:?} is not deployed"),
        )),
        Err(e) => Err(ApiError::broker("cannot read the function registry", e)),
    }
}

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): Shared) -> Response {
    match state.client.connection_state() {
        async_nats::connection::State::Connected => {
            Json(serde_json::json!({ "status": "ready" })).into_response()
        }
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("NATS connection is {other}"),
        )
        .into_response(),
    }
}

/// `GET /metrics`: see [`crate::metrics::scrape`].
pub async fn metrics(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::scrape(&state).await,
    )
        .into_response()
}

pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route; see GET /v1/openapi.json")
}

/// The artifact and spec of a deploy request, from either body form.
struct DeployParts {
    artifact: bytes::Bytes,
    config: Option<bytes::Bytes>,
}

async fn deploy_parts(state: &Arc<AppState>, request: Request) -> Result<DeployParts, ApiError> {
    let limit = state.config.max_artifact;
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
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request("bad_multipart", e.body_text()))?;
    let mut artifact = None;
    let mut config = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => return Err(ApiError::bad_request("bad_multipart", e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let data = match field.bytes().await {
            Ok(data) => data,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => return Err(ApiError::bad_request("bad_multipart", e.body_text())),
        };
        match name.as_str() {
            "artifact" => artifact = Some(data),
            "config" => config = Some(data),
            other => {
                return Err(ApiError::bad_request(
                    "bad_multipart",
                    format!(
                    "unexpected part {other:?}; expected \"artifact\" and optionally \"config\""
                ),
                ))
            }
        }
    }
    let artifact = artifact.ok_or_else(|| {
        ApiError::bad_request(
            "bad_multipart",
            "the multipart body has no \"artifact\" part",
        )
    })?;
    Ok(DeployParts { artifact, config })
}

pub async fn deploy(
    State(state): Shared,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // Read the body before judging the name, so a client still sending gets an answer, not a
    // reset connection.
    let parts = deploy_parts(&state, request).await?;
    checked_name(&name)?;
    let spec = match &parts.config {
        None => FunctionSpec::default(),
        Some(bytes) => FunctionSpec::from_json(bytes).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                e.to_string(),
            )
        })?,
    };
    validate_artifact(&parts.artifact)
        .map_err(|e| ApiError::bad_request("invalid_artifact", e.to_string()))?;
    let sha = hex::encode(Sha256::digest(&parts.artifact));
    let key = artifact_key(&sha);
    let store = &state.topology.artifacts;
    if store.info(&key).await.is_err() {
        let mut reader = parts.artifact.as_ref();
        store
            .put(key.as_str(), &mut reader)
            .await
            .map_err(|e| ApiError::broker("cannot store the artifact", e))?;
    }
    squall_broker::ensure_function_consumer(
        &state.topology.jobs,
        &name,
        &spec,
        &state.config.topology,
    )
    .await
    .map_err(|e| ApiError::broker("cannot create the function's consumer", e))?;
    let mut record = FunctionRecord::new(&name, &sha, parts.artifact.len() as u64, now_ms(), &spec);
    // A redeploy keeps the function's secrets.
    if let Ok(previous) = load_record(&state, &name).await {
        record.secrets_json = previous.secrets_json;
    }
    let revision = state
        .topology
        .registry
        .put(&name, record.encode().into())
        .await
        .map_err(|e| ApiError::broker("cannot write the function registry", e))?;
    state.registry.put(revision, record.clone());
    tracing::info!(message = "function deployed", function = %name, version = %record.version);
    Ok((StatusCode::CREATED, Json(function_view(&record))).into_response())
}

pub async fn list_functions(State(state): Shared) -> Result<Response, ApiError> {
    let mut keys = state
        .topology
        .registry
        .keys()
        .await
        .map_err(|e| ApiError::broker("cannot list the function registry", e))?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        names.push(key.map_err(|e| ApiError::broker("cannot list the function registry", e))?);
    }
    names.sort();
    let mut functions = Vec::new();
    for name in names {
        match load_record(&state, &name).await {
            Ok(record) => functions.push(function_view(&record)),
            // Deleted between the listing and the read.
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(serde_json::json!({ "functions": functions })).into_response())
}

pub async fn get_function(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = load_record(&state, &name).await?;
    Ok(Json(function_view(&record)).into_response())
}

pub async fn delete_function(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = load_record(&state, &name).await?;
    state
        .topology
        .registry
        .delete(&name)
        .await
        .map_err(|e| ApiError::broker("cannot delete from the function registry", e))?;
    state.registry.remove(&name, u64::MAX);
    // Workers stop pulling once they see the delete; let the jobs they are running finish (up
    // to the function's timeout, at most 30 s) so that those end with their own result.
    let drain = Duration::from_millis(record.timeout_ms).min(Duration::from_secs(30))
        + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + drain;
    while tokio::time::Instant::now() < deadline {
        match state
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
    if let Err(error) = state
        .topology
        .jobs
        .delete_consumer(&consumer_name(&name))
        .await
    {
        tracing::warn!(message = "cannot delete the function's consumer", function = %name, error = %error);
    }
    // Jobs still queued can no longer run: they become dead letters (replayable after a
    // redeploy) instead of waiting forever.
    match crate::dlq::sweep_deleted_function(&state, &name).await {
        Ok(0) => {}
        Ok(moved) => {
            tracing::info!(message = "queued jobs of a deleted function dead-lettered", function = %name, moved)
        }
        Err(error) => {
            tracing::warn!(message = "cannot dead-letter the deleted function's queued jobs", function = %name, %error)
        }
    }
    tracing::info!(message = "function deleted", function = %name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// How many bytes of an oversized body are read and discarded so that the client, still
/// sending, receives the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a body of at most `limit` bytes. A larger body is drained (up to `DRAIN_LIMIT`, for a
/// few seconds at most) and refused.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ()> {
    let mut stream = body.into_data_stream();
    let mut buffer = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ())?;
        if buffer.len() + chunk.len() > limit {
            let mut seen = buffer.len() + chunk.len();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(chunk)) = stream.next().await {
                    seen += chunk.len();
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                }
            })
            .await;
            return Err(());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Added to the default wait for the time a job spends queued and in transit.
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// How long a synchronous invoke waits by default: every attempt's timeout plus the backoff
/// between attempts, capped by the dispatcher's `max_wait`.
pub fn default_wait(record: &FunctionRecord, max_wait: Duration) -> Duration {
    let attempts = record.max_attempts.max(1);
    // Room for queueing and delivery on top of the function's own time.
    let mut total = Duration::from_millis(record.timeout_ms) * attempts + WAIT_SLACK;
    for attempt in 1..attempts {
        total += squall_broker::retry::retry_delay(&record.backoff, attempt, 0, 1.0);
    }
    total.min(max_wait)
}

pub(crate) fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn parse_flag(query: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!("{key}={other:?} is not a boolean; use true or false"),
        )),
    }
}

/// `POST /v1/functions/{name}/invocations`, inside its `squall.invoke` span (which continues
/// the caller's trace when the request carries a valid `traceparent`).
pub async fn invoke(
    state: Shared,
    Path(name): Path<String>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "squall.invoke",
        otel.kind = "server",
        squall.function = %name,
        squall.invocation_id = tracing::field::Empty,
        squall.outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let client_trace = headers.get(h::TRACEPARENT).and_then(|v| v.to_str().ok());
    squall_telemetry::set_parent(
        &span,
        squall_telemetry::context_from_traceparent(client_trace),
    );
    let response = invoke_traced(state, name, query, headers, body)
        .instrument(span.clone())
        .await;
    let status = match &response {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    span.record("http.response.status_code", status.as_u16());
    if let Some(outcome) = response
        .as_ref()
        .ok()
        .and_then(|r| r.headers().get(h::STATUS))
        .and_then(|v| v.to_str().ok())
    {
        span.record("squall.outcome", outcome);
    }
    response
}

async fn invoke_traced(
    State(state): Shared,
    name: String,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.config.max_payload;
    let payload = read_limited(body, limit).await.map_err(|_| {
        ApiError::too_large(format!("payload is larger than the limit of {limit} bytes"))
    })?;
    let record = load_record(&state, &name).await?;
    let respond_async = parse_flag(&query, "async")?
        || headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
            });
    let wait = match query.get("wait") {
        None => default_wait(&record, state.config.max_wait),
        Some(text) => match text.parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                // Clamp before converting: a huge number of seconds does not fit a Duration.
                Duration::from_secs_f64(secs.min(state.config.max_wait.as_secs_f64()))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("wait={text:?} is not a number of seconds"),
                ))
            }
        },
    };
    let traceparent = headers
        .get(h::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_traceparent(v))
        .map(str::to_string)
        .unwrap_or_else(new_traceparent);
    let (id, created_at_ms, repeated) = match headers.get(IDEMPOTENCY_KEY) {
        None => (uuid::Uuid::now_v7().to_string(), now_ms(), false),
        Some(key) => claim_idempotency_key(&state, &name, key).await?,
    };
    tracing::Span::current().record("squall.invocation_id", id.as_str());
    // Register before publishing, so the result cannot arrive unseen.
    let registration = (!respond_async).then(|| state.waiter.register(&id));
    let job = Job {
        reply_to: registration.as_ref().map(|r| r.reply_to.as_str()),
        function: &name,
        version: &record.version,
        id: &id,
        created_at_ms,
        traceparent: &traceparent,
        source: "http",
        extra_headers: forwarded_headers(&headers),
    };
    // A repeated idempotency key publishes again with the same `Nats-Msg-Id`: JetStream drops it
    // as a duplicate when the first publish happened, and accepts it when that one was lost.
    submit(&state, job, payload).await?;
    let Some(mut registration) = registration else {
        return Ok(accepted(&id, InvocationStatus::Queued));
    };
    // A repeated key's job carries the first request's reply subject: follow the result
    // subject instead, then look at what RESULTS already holds.
    let mut followed = None;
    if repeated {
        followed = state.waiter.follow(&name, &id).await;
        if let Some(outcome) = lookup_result(&state, &id, Some(&name)).await? {
            if outcome.meta.status.is_terminal() {
                return Ok(terminal_response(outcome));
            }
        }
    }
    let outcome = match state.waiter.wait(&mut registration, followed, wait).await {
        Some(outcome) => Some(outcome),
        None => lookup_result(&state, &id, Some(&name))
            .await?
            .filter(|o| o.meta.status.is_terminal()),
    };
    match outcome {
        Some(outcome) => {
            forget(&state, &id);
            state.metrics.sync_outcome(&name, outcome.meta.status);
            Ok(terminal_response(outcome))
        }
        None => {
            let status = match lookup_result(&state, &id, Some(&name)).await? {
                Some(o) => o.meta.status,
                None => InvocationStatus::Queued,
            };
            Ok(accepted(&id, status))
        }
    }
}

/// The request header that makes an invoke idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Maps `(function, key)` to one invocation id for the idempotency window: the first request
/// creates the mapping atomically in KV (so concurrent dispatchers agree), later ones read it.
/// Returns the id, its creation time, and whether the key was seen before.
async fn claim_idempotency_key(
    state: &AppState,
    function: &str,
    key: &HeaderValue,
) -> Result<(String, u64, bool), ApiError> {
    let key = checked_idempotency_key(key)?;
    let kv_key = hex::encode(Sha256::digest(format!("{function}\n{key}").as_bytes()));
    let id = uuid::Uuid::now_v7().to_string();
    let (value, repeated) =
        claim_idempotency_value(state, &kv_key, format!("{id} {}", now_ms())).await?;
    let (id, created) = value.split_once(' ').unwrap_or((&value, "0"));
    Ok((id.to_string(), created.parse().unwrap_or(0), repeated))
}

/// The `Idempotency-Key` header's text, or the 400 that explains what a key may be.
pub(crate) fn checked_idempotency_key(key: &HeaderValue) -> Result<&str, ApiError> {
    key.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )
        })
}

/// Creates `kv_key` holding `value` in the idempotency bucket unless it exists; returns the value
/// it holds and whether it existed.
pub(crate) async fn claim_idempotency_value(
    state: &AppState,
    kv_key: &str,
    value: String,
) -> Result<(String, bool), ApiError> {
    let store = &state.topology.idempotency;
    match store.create(kv_key, value.clone().into()).await {
        Ok(_) => Ok((value, false)),
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
            let value = store
                .get(kv_key)
                .await
                .map_err(|e| ApiError::broker("cannot read the idempotency key", e))?
                .ok_or_else(|| {
                    ApiError::broker(
                        "cannot read the idempotency key",
                        "it expired while being read; retry",
                    )
                })?;
            Ok((String::from_utf8_lossy(&value).into_owned(), true))
        }
        Err(e) => Err(ApiError::broker("cannot record the idempotency key", e)),
    }
}

/// The most caller headers carried into a job.
const MAX_FORWARDED_HEADERS: usize = 32;

/// The caller's own `X-…` headers, which travel with the job and reach the function in
/// `ctx.event.headers` (and are kept in a dead letter).
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-"))
        .filter_map(|(name, value)| {
            Some((
                canonical_header(name.as_str()),
                value.to_str().ok()?.to_string(),
            ))
        })
        .take(MAX_FORWARDED_HEADERS)
        .collect()
}

/// `x-tenant-id` → `X-Tenant-Id`, the spelling NATS clients usually use.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// One job to publish.
pub struct Job<'a> {
    pub function: &'a str,
    /// The version current at acceptance; the worker runs exactly this one.
    pub version: &'a str,
    pub id: &'a str,
    pub created_at_ms: u64,
    pub traceparent: &'a str,
    /// What created it: `http`, `replay`, ….
    pub source: &'a str,
    /// Headers carried over (a replay keeps the original job's own headers).
    pub extra_headers: Vec<(String, String)>,
    /// The waiting dispatcher's direct-reply subject, on a synchronous job.
    pub reply_to: Option<&'a str>,
}

/// Publishes a job and waits for JetStream to accept it, then records it in the local index.
/// Through a leader election the same job is sent again (the stream drops the duplicates)
/// until the publish budget ends; only then is the answer a 503 with `Retry-After`.
/// With span export on, the job carries the trace context of its `squall.publish` span.
pub async fn submit(state: &AppState, job: Job<'_>, payload: bytes::Bytes) -> Result<(), ApiError> {
    let span = tracing::info_span!(
        "squall.publish",
        otel.kind = "producer",
        squall.function = %job.function,
        squall.invocation_id = %job.id,
        squall.source = %job.source,
    );
    let traceparent =
        squall_telemetry::traceparent_of(&span).unwrap_or_else(|| job.traceparent.to_string());
    submit_traced(state, job, &traceparent, payload)
        .instrument(span)
        .await
}

async fn submit_traced(
    state: &AppState,
    job: Job<'_>,
    traceparent: &str,
    payload: bytes::Bytes,
) -> Result<(), ApiError> {
    squall_broker::publish::publish_acked(
        &state.topology.jetstream,
        &jobs_subject(job.function),
        job_headers(&job, traceparent),
        payload,
        &state.config.publish,
    )
    .await
    .map_err(|e| ApiError::publish("the invocation was not accepted", e))?;
    record_accepted(state, &job);
    Ok(())
}

/// The NATS headers of a job: its carried-over headers, then Squall's own, with the invocation id
/// as `Nats-Msg-Id` only (so a repeated publish is dropped as a duplicate).
pub(crate) fn job_headers(job: &Job<'_>, traceparent: &str) -> async_nats::HeaderMap {
    let mut job_headers = async_nats::HeaderMap::new();
    for (name, value) in &job.extra_headers {
        job_headers.append(name.as_str(), value.as_str());
    }
    // The id travels once, as `Nats-Msg-Id` (below): workers read it from there.
    job_headers.insert(h::CREATED_AT, job.created_at_ms.to_string().as_str());
    job_headers.insert(h::SOURCE, job.source);
    job_headers.insert(h::VERSION, job.version);
    job_headers.insert(h::TRACEPARENT, traceparent);
    job_headers.insert(h::NATS_MSG_ID, job.id);
    if let Some(reply_to) = job.reply_to {
        job_headers.insert(h::REPLY_TO, reply_to);
    }
    job_headers
}

/// Counts a job JetStream stored and records it in the local index as queued.
pub(crate) fn record_accepted(state: &AppState, job: &Job<'_>) {
    let accepted = Accepted {
        function: job.function.to_string(),
        created_at_ms: job.created_at_ms,
    };
    state.metrics.accepted(job.function, job.source);
    if let Err(error) = state.index.insert(job.id, &accepted) {
        tracing::warn!(message = "cannot index an accepted invocation", invocation_id = %job.id, %error);
    }
}

pub(crate) fn accepted(id: &str, status: InvocationStatus) -> Response {
    let location = format!("/v1/invocations/{id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "invocation_id": id, "status": status.as_str(), "location": location })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(h::INVOCATION_ID, value);
    }
    response
}

fn terminal_response(outcome: Outcome) -> Response {
    let meta = &outcome.meta;
    let id = HeaderValue::from_str(&meta.invocation_id).ok();
    let mut response = if meta.status == InvocationStatus::Succeeded {
        let mut r = (StatusCode::OK, outcome.body.clone()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r
    } else {
        let (status, code) = match meta.status {
            InvocationStatus::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "function_timed_out"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "function_failed"),
        };
        let kind = meta.error_kind.map(|k| k.as_str()).unwrap_or("error");
        ApiError::new(
            status,
            code,
            String::from_utf8_lossy(&outcome.body).into_owned(),
        )
        .with("kind", kind)
        .with("status", meta.status.as_str())
        .with("invocation_id", meta.invocation_id.clone())
        .with("attempts", meta.attempt)
        .into_response()
    };
    if let Some(id) = id {
        response.headers_mut().insert(h::INVOCATION_ID, id);
    }
    if let Ok(status) = HeaderValue::from_str(meta.status.as_str()) {
        response.headers_mut().insert(h::STATUS, status);
    }
    response
}

/// The latest result record of an invocation, if any.
pub(crate) async fn lookup_result(
    state: &AppState,
    id: &str,
    function: Option<&str>,
) -> Result<Option<Outcome>, ApiError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = match function {
        Some(f) => results_subject(f, id),
        None => format!("results.*.{id}"),
    };
    match state
        .topology
        .results
        .get_last_raw_message_by_subject(&subject)
        .await
    {
        Ok(message) => {
            let meta = ResultMeta::from_headers(&message.headers)
                .map_err(|e| ApiError::internal("result record", e))?;
            Ok(Some(Outcome {
                meta,
                body: message.payload,
            }))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ApiError::broker("cannot read results", e)),
    }
}

/// Drops a finished invocation from the local index: RESULTS answers for it from now on.
fn forget(state: &AppState, id: &str) {
    if let Err(error) = state.index.remove(id) {
        tracing::warn!(message = "cannot drop a finished invocation from the index", invocation_id = %id, %error);
    }
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id).map(|_| ()).map_err(|_| {
        ApiError::bad_request(
            "invalid_invocation_id",
            format!("{id:?} is not an invocation id (a UUID)"),
        )
    })
}

async fn find_invocation(
    state: &AppState,
    id: &str,
) -> Result<Result<Outcome, Accepted>, ApiError> {
    checked_id(id)?;
    let accepted = state
        .index
        .get(id)
        .map_err(|e| ApiError::internal("invocation index", e))?;
    let function = accepted.as_ref().map(|a| a.function.as_str());
    if let Some(outcome) = lookup_result(state, id, function).await? {
        if accepted.is_some() && outcome.meta.status.is_terminal() {
            forget(state, id);
        }
        return Ok(Ok(outcome));
    }
    accepted.map(Err).ok_or_else(|| {
        ApiError::not_found(
            "invocation_not_found",
            format!("no invocation with id {id}"),
        )
    })
}

pub async fn get_invocation(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = match find_invocation(&state, &id).await? {
        Ok(outcome) => invocation_view(&outcome.meta, &outcome.body),
        Err(accepted) => queued_view(&id, &accepted.function, accepted.created_at_ms),
    };
    Ok(Json(view).into_response())
}

pub async fn get_logs(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (status, logs) = match find_invocation(&state, &id).await? {
        Ok(outcome) => (outcome.meta.status, outcome.meta.logs),
        Err(_) => (InvocationStatus::Queued, Vec::new()),
    };
    Ok(Json(serde_json::json!({
        "invocation_id": id,
        "status": status.as_str(),
        "logs": logs,
    }))
    .into_response())
}

pub async fn get_output(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match find_invocation(&state, &id).await? {
        Ok(outcome) if outcome.meta.status == InvocationStatus::Succeeded => {
            let mut r = (StatusCode::OK, outcome.body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
        Ok(outcome) if outcome.meta.status.is_terminal() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_output",
            format!(
                "invocation {id} ended as {} and has no output",
                outcome.meta.status.as_str()
            ),
        )),
        Ok(outcome) => Err(not_finished(&id, outcome.meta.status)),
        Err(_) => Err(not_finished(&id, InvocationStatus::Queued)),
    }
}

fn not_finished(id: &str, status: InvocationStatus) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_finished",
        format!(
            "invocation {id} is {}; it has no output yet",
            status.as_str()
        ),
    )
    .with("status", status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_wait_covers_every_attempt_and_backoff() {
        let spec = FunctionSpec {
            timeout_ms: 1000,
            max_attempts: 3,
            ..FunctionSpec::default()
        };
        let spec = FunctionRecord::new("f", "00", 1, 0, &spec);
        // 3 × 1 s of timeouts, backoff of about 1 s and 2 s, and 5 s of slack.
        let wait = default_wait(&spec, Duration::from_secs(300));
        assert!(
            wait >= Duration::from_secs(10) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        assert_eq!(
            default_wait(&spec, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn traceparent_format_is_checked() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(is_valid_traceparent(&new_traceparent()));
    }
}
