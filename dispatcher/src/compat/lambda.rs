//! The Lambda-compatible API (`/2015-03-31`, the wire format of AWS Lambda's Invoke and read
//! operations, and InvokeWithResponseStream under `/2021-11-15`), so boto3 and the AWS CLI work
//! unchanged: requests are checked with AWS
//! Signature V4 (`sigv4`), mapped onto the native invoke and registry, and answered in
//! Lambda's shapes and error format.

use crate::compat::{eventstream, sigv4};
use crate::core::invoke::{default_wait, invoke_span, Call, Outcome};
use crate::core::keys::Grant;
use crate::core::rate_limit::retry_after_secs;
use crate::core::stream::Streamed;
use crate::core::submit::{forwarded_headers, is_valid_traceparent, new_traceparent};
use crate::core::versions::{job_version, resolve, Qualified};
use crate::core::view::rfc3339;
use crate::http::auth::Scope;
use crate::http::error::ApiError;
use crate::http::limits::read_limited;
use crate::http::payload::{open_output, reference_header, store_read, stored_output};
use crate::AppState;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use squall_broker::time::now_ms;
use squall_broker::versions::{VersionEntry, LATEST};
use squall_broker::FunctionRecord;
use std::sync::Arc;
use tracing::Instrument as _;

/// The account id in the ARNs this API shows (Squall has no accounts).
pub const ACCOUNT: &str = "000000000000";

/// The region of unsigned requests' ARNs.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The most of a function's log text `X-Amz-Log-Result` carries, as Lambda does.
pub const LOG_TAIL_BYTES: usize = 4096;

/// The routes, outside the OpenAPI document (they follow Lambda's contract, not Squall's).
pub fn router() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/2015-03-31/functions", get(list_functions))
        .route("/2015-03-31/functions/", get(list_functions))
        .route("/2015-03-31/functions/{function}", get(get_function))
        .route(
            "/2015-03-31/functions/{function}/configuration",
            get(get_configuration),
        )
        .route(
            "/2015-03-31/functions/{function}/versions",
            get(list_versions),
        )
        .route(
            "/2015-03-31/functions/{function}/aliases",
            get(list_aliases),
        )
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route(
            "/2021-11-15/functions/{function}/response-streaming-invocations",
            post(invoke_with_response_stream),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// An error in Lambda's shape: the status, `x-amzn-ErrorType`, and `{"Type", "Message"}`.
#[derive(Debug)]
pub struct LambdaError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for a spent rate.
    pub retry_after: Option<u64>,
}

impl LambdaError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        LambdaError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The Lambda error a native API error becomes.
    fn from_api(error: impl Into<ApiError>) -> Self {
        let error: ApiError = error.into();
        error.log();
        let kind = match error.status.as_u16() {
            404 => "ResourceNotFoundException",
            413 => "RequestTooLargeException",
            429 => "TooManyRequestsException",
            401 | 403 => "AccessDeniedException",
            400 | 422 => "InvalidParameterValueException",
            503 => "ServiceException",
            _ => "ServiceException",
        };
        LambdaError::new(error.status, kind, error.message)
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let origin = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let body =
            serde_json::json!({"Type": origin, "Message": self.message, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(self.kind),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

type Answer = Result<Response, LambdaError>;

/// `name`, `name:qualifier` or `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]` as
/// `name[:qualifier]`.
pub fn function_target(text: &str) -> &str {
    match text.strip_prefix("arn:") {
        Some(rest) => match rest.split_once(":function:") {
            Some((_, target)) => target,
            None => text,
        },
        None => text,
    }
}

/// The decoded query parameters.
fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                sigv4::percent_decode(k, true),
                sigv4::percent_decode(v, true),
            )
        })
        .collect()
}

fn query_value(raw: &str, key: &str) -> Option<String> {
    query_pairs(raw)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The one answer to a request signed with an unknown key id or a wrong signature, so that an
/// unsigned caller cannot tell which key ids exist.
fn bad_signature() -> LambdaError {
    LambdaError::new(
        StatusCode::FORBIDDEN,
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method.",
    )
}

/// Who signed a request: the credential scope's region and what the key may do.
struct Signed {
    region: String,
    grant: Arc<Grant>,
}

impl Signed {
    /// Whether the key may reach `function` (a name, `name:qualifier` or an ARN); Lambda's
    /// answer when it may not.
    fn allow(&self, function: &str) -> Result<(), LambdaError> {
        let name = function_target(function);
        match self.grant.functions.allows(name) {
            true => Ok(()),
            false => Err(LambdaError::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!("this key is not allowed function {name}"),
            )),
        }
    }
}

/// What the headers of a signed request established before its body is read: the credential,
/// its key's secret and grant, and the request's time.
struct Pending {
    credential: sigv4::Credential,
    secret: String,
    grant: Arc<Grant>,
    amz_date: String,
    at_secs: i64,
}

/// The first half of SigV4 checking, on the headers alone, before any body is read: the
/// `Authorization` header, the date (format, scope, skew) and the key id. `None` when the
/// native API needs no key (unsigned requests are served).
fn check_headers(state: &AppState, headers: &HeaderMap) -> Result<Option<Pending>, LambdaError> {
    let denied = |kind, message: String| LambdaError::new(StatusCode::FORBIDDEN, kind, message);
    if !state.keys.enabled() {
        return Ok(None);
    }
    let Some(authorization) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token: sign the request with AWS Signature V4".into(),
        ));
    };
    let credential = sigv4::parse_authorization(authorization)
        .map_err(|e| denied("IncompleteSignatureException", e.to_string()))?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let now = (squall_broker::time::now_ms() / 1000) as i64;
    let at_secs = sigv4::check_date(&credential, &amz_date, now)
        .map_err(|e| denied("InvalidSignatureException", e.to_string()))?;
    let Some((secret, grant)) = state.keys.signing_key(&credential.access_key) else {
        return Err(bad_signature());
    };
    Ok(Some(Pending {
        credential,
        secret,
        grant,
        amz_date,
        at_secs,
    }))
}

/// The second half, once the body is read: the signature over the whole request, never seen
/// before (this dispatcher's replay cache), a key holding `needed`, within its rate. Answers
/// the region of the credential scope and the key's grant.
fn check_signature(
    state: &AppState,
    pending: Option<Pending>,
    method: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    needed: Scope,
) -> Result<Signed, LambdaError> {
    let Some(pending) = pending else {
        let region = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| sigv4::parse_authorization(a).ok())
            .map(|c| c.region)
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        return Ok(Signed {
            region,
            grant: state.keys.open_grant(),
        });
    };
    let parts = sigv4::RequestParts {
        method,
        raw_path: uri.path(),
        raw_query: uri.query().unwrap_or_default(),
        headers: headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
    };
    let now = (squall_broker::time::now_ms() / 1000) as i64;
    let Pending {
        credential,
        secret,
        grant,
        amz_date,
        at_secs,
    } = pending;
    sigv4::verify(&parts, &credential, &amz_date, &secret, now).map_err(|_| bad_signature())?;
    state
        .sigv4_replays
        .check(&credential.signature, at_secs + sigv4::MAX_SKEW_SECS, now)
        .map_err(|e| {
            LambdaError::new(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                e.to_string(),
            )
        })?;
    if !grant.has(needed) {
        return Err(LambdaError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!(
                "key {} lacks the {} scope this operation needs",
                credential.access_key,
                needed.as_str()
            ),
        ));
    }
    if let Err(wait) = state.keys.take(&grant, std::time::Instant::now()) {
        let mut refused = LambdaError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate exceeded: this key made more requests than its rate allows",
        );
        refused.retry_after = Some(retry_after_secs(wait));
        return Err(refused);
    }
    Ok(Signed {
        region: credential.region,
        grant,
    })
}

/// Checks a request's Signature V4 (its body already read, or none), that its key holds
/// `needed` and is within its rate; answers the region of the credential scope and the key's
/// grant. Without keys configured (the native API is open), requests need none.
fn authorize(
    state: &AppState,
    method: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    needed: Scope,
) -> Result<Signed, LambdaError> {
    let pending = check_headers(state, headers)?;
    check_signature(state, pending, method, uri, headers, body, needed)
}

fn function_arn(region: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{ACCOUNT}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"),
    }
}

/// A `FunctionConfiguration` of `record` at `entry` (shown as version `label`).
fn configuration(
    record: &FunctionRecord,
    entry: &VersionEntry,
    label: &str,
    region: &str,
) -> serde_json::Value {
    let sha = hex::decode(&entry.sha256).unwrap_or_default();
    let qualifier = (label != LATEST).then_some(label);
    serde_json::json!({
        "FunctionName": record.name,
        "FunctionArn": function_arn(region, &record.name, qualifier),
        "Runtime": "provided.al2023",
        "Handler": "squall_invoke",
        "CodeSize": entry.artifact_size,
        "CodeSha256": base64::engine::general_purpose::STANDARD.encode(sha),
        "Description": "",
        "Timeout": record.timeout_ms.div_ceil(1000),
        "LastModified": rfc3339(entry.deployed_at_ms),
        "Version": label,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
    })
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The record and the version a target (`name[:qualifier]`, `?Qualifier=`) names.
async fn target(
    state: &AppState,
    function: &str,
    query: Option<&str>,
) -> Result<(FunctionRecord, Option<String>), LambdaError> {
    let qualified =
        Qualified::parse(function_target(function), query).map_err(LambdaError::from_api)?;
    let record = state.registry.load(&qualified.name).await.map_err(|_| {
        LambdaError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {}", qualified.name),
        )
    })?;
    if qualified.qualifier.is_some() {
        resolve(&record, qualified.qualifier.as_deref(), "").map_err(LambdaError::from_api)?;
    }
    Ok((record, qualified.qualifier))
}

/// ListFunctions: `$LATEST` of every function, by name, `MaxItems` at a time after `Marker`.
async fn list_functions(State(state): State<Arc<AppState>>, request: Request) -> Answer {
    let (parts, _) = request.into_parts();
    let signed = authorize(&state, "GET", &parts.uri, &parts.headers, b"", Scope::Read)?;
    let region = signed.region;
    let raw = parts.uri.query().unwrap_or_default();
    let max = match query_value(raw, "MaxItems") {
        None => 50,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                LambdaError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    "MaxItems must be a number from 1 to 10000",
                )
            })?,
    };
    let marker = query_value(raw, "Marker");
    let records = state.registry.list().await.map_err(LambdaError::from_api)?;
    let mut functions = Vec::new();
    let mut next = None;
    for record in records
        .iter()
        .filter(|r| marker.as_deref().is_none_or(|m| r.name.as_str() > m))
        .filter(|r| signed.grant.functions.allows(&r.name))
    {
        if functions.len() == max {
            next = functions
                .last()
                .and_then(|f: &serde_json::Value| f["FunctionName"].as_str().map(str::to_string));
            break;
        }
        if let Some(latest) = record.versions.latest() {
            functions.push(configuration(record, latest, LATEST, &region));
        }
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"Functions": functions, "NextMarker": next}),
    ))
}

/// The configuration a GET of `function` (with its qualifier) names.
async fn configuration_of(
    state: &AppState,
    function: &str,
    request: Request,
) -> Result<serde_json::Value, LambdaError> {
    let (parts, _) = request.into_parts();
    let signed = authorize(state, "GET", &parts.uri, &parts.headers, b"", Scope::Read)?;
    signed.allow(function)?;
    let region = signed.region;
    let query = query_value(parts.uri.query().unwrap_or_default(), "Qualifier");
    let (record, qualifier) = target(state, function, query.as_deref()).await?;
    let entry = resolve(&record, qualifier.as_deref(), "").map_err(LambdaError::from_api)?;
    let label = match qualifier.as_deref() {
        None | Some(LATEST) => LATEST.to_string(),
        Some(_) => entry.number.to_string(),
    };
    Ok(configuration(&record, &entry, &label, &region))
}

/// GetFunction: the configuration and where the code is.
async fn get_function(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    request: Request,
) -> Answer {
    let config = configuration_of(&state, &function, request).await?;
    let name = config["FunctionName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "Configuration": config,
            "Code": {"RepositoryType": "Squall", "Location": format!("/v1/functions/{name}")},
            "Tags": {},
        }),
    ))
}

/// GetFunctionConfiguration.
async fn get_configuration(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    request: Request,
) -> Answer {
    Ok(json(
        StatusCode::OK,
        configuration_of(&state, &function, request).await?,
    ))
}

/// ListVersionsByFunction: `$LATEST`, then every retained version.
async fn list_versions(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    request: Request,
) -> Answer {
    let signed = authorize(
        &state,
        "GET",
        request.uri(),
        request.headers(),
        b"",
        Scope::Read,
    )?;
    signed.allow(&function)?;
    let region = signed.region;
    let (record, _) = target(&state, &function, None).await?;
    let mut versions = Vec::new();
    if let Some(latest) = record.versions.latest() {
        versions.push(configuration(&record, latest, LATEST, &region));
    }
    for entry in &record.versions.list {
        versions.push(configuration(
            &record,
            entry,
            &entry.number.to_string(),
            &region,
        ));
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"Versions": versions, "NextMarker": null}),
    ))
}

/// ListAliases, with their weighted routing as `RoutingConfig`.
async fn list_aliases(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    request: Request,
) -> Answer {
    let signed = authorize(
        &state,
        "GET",
        request.uri(),
        request.headers(),
        b"",
        Scope::Read,
    )?;
    signed.allow(&function)?;
    let region = signed.region;
    let (record, _) = target(&state, &function, None).await?;
    let aliases: Vec<serde_json::Value> = record
        .versions
        .aliases
        .iter()
        .map(|(name, alias)| {
            let mut view = serde_json::json!({
                "AliasArn": function_arn(&region, &record.name, Some(name)),
                "Name": name,
                "FunctionVersion": alias.target.version.to_string(),
                "Description": "",
            });
            if !alias.target.weights.is_empty() {
                let weights: serde_json::Map<String, serde_json::Value> = alias
                    .target
                    .weights
                    .iter()
                    .map(|(v, w)| (v.to_string(), (*w).into()))
                    .collect();
                view["RoutingConfig"] = serde_json::json!({"AdditionalVersionWeights": weights});
            }
            view
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"Aliases": aliases, "NextMarker": null}),
    ))
}

/// The last `LOG_TAIL_BYTES` of the log text (one `LEVEL message` line each), base64.
pub fn log_tail(lines: &[squall_broker::record::LogLine]) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(&format!(
            "{} {}\n",
            line.level.as_str().to_uppercase(),
            line.message
        ));
    }
    let mut start = text.len().saturating_sub(LOG_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&text.as_bytes()[start..])
}

/// How an Invoke request asks to be run (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// An Invoke request checked (signature, scope, function, JSON body) with its invocation
/// prepared: what Invoke and InvokeWithResponseStream share.
struct Prepared {
    record: FunctionRecord,
    kind: InvocationType,
    id: String,
    version: String,
    created_at_ms: u64,
    repeated: bool,
    traceparent: String,
    /// The caller's `traceparent` header, as it came.
    client_traceparent: Option<String>,
    extra_headers: Vec<(String, String)>,
    payload: bytes::Bytes,
    log_tail: bool,
}

impl Prepared {
    /// The invocation to make; `wait` none answers as soon as it is accepted.
    fn call(&self, wait: Option<std::time::Duration>) -> Call<'_> {
        Call {
            function: &self.record.name,
            version: &self.version,
            id: &self.id,
            created_at_ms: self.created_at_ms,
            repeated: self.repeated,
            traceparent: &self.traceparent,
            source: "http",
            extra_headers: self.extra_headers.clone(),
            wait,
        }
    }
}

/// Checks an Invoke request of `operation` and prepares its invocation: the key and date before
/// the body is read, the signature over it, the scope, the function and qualifier, the JSON
/// body, the invocation type (`allowed`), the idempotency of botocore's retries, and a large
/// payload stored in the function's payload bucket.
async fn prepare(
    state: &AppState,
    function: &str,
    request: Request,
    operation: &str,
    allowed: &[InvocationType],
) -> Result<Prepared, LambdaError> {
    let (parts, body) = request.into_parts();
    // The key id and the date are checked before the body is read: an unknown or stale
    // signer's body is never read.
    let pending = check_headers(state, &parts.headers)?;
    let limit = state.config.max_payload;
    let payload = read_limited(body, limit).await.map_err(|_| {
        LambdaError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("Request must be smaller than {limit} bytes for the {operation} operation"),
        )
    })?;
    check_signature(
        state,
        pending,
        "POST",
        &parts.uri,
        &parts.headers,
        &payload,
        Scope::Invoke,
    )?
    .allow(function)?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let query = query_value(parts.uri.query().unwrap_or_default(), "Qualifier");
    let (record, qualifier) = target(state, function, query.as_deref()).await?;
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(LambdaError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json: the payload must be JSON",
        ));
    }
    let type_name = header("x-amz-invocation-type").unwrap_or("RequestResponse");
    let kind = match type_name {
        "RequestResponse" => InvocationType::RequestResponse,
        "Event" => InvocationType::Event,
        "DryRun" => InvocationType::DryRun,
        _ => InvocationType::Event,
    };
    if !matches!(type_name, "RequestResponse" | "Event" | "DryRun") || !allowed.contains(&kind) {
        let names: Vec<String> = allowed.iter().map(|k| format!("{k:?}")).collect();
        return Err(LambdaError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            format!(
                "X-Amz-Invocation-Type {type_name:?} is not {} for {operation}",
                names.join(" or ")
            ),
        ));
    }
    // What reaches the function: the client context (in ctx.event.headers) and the trace
    // context. botocore's per-call id is the idempotency key, so botocore's own retries of a
    // call (same amz-sdk-invocation-id) map to the same invocation instead of running it again.
    let mut forwarded = HeaderMap::new();
    if let Some(value) = parts.headers.get("x-amz-client-context") {
        forwarded.insert(
            HeaderName::from_static("x-amz-client-context"),
            value.clone(),
        );
    }
    let client_traceparent = header(squall_broker::headers::TRACEPARENT).map(str::to_string);
    let traceparent = client_traceparent
        .clone()
        .filter(|v| is_valid_traceparent(v))
        .unwrap_or_else(new_traceparent);
    let (id, created_at_ms, repeated) = match header("amz-sdk-invocation-id") {
        Some(call_id) if kind != InvocationType::DryRun => state
            .invoker
            .submitter
            .claim_idempotency_key(&record.name, &format!("lambda-{type_name}-{call_id}"))
            .await
            .map_err(LambdaError::from_api)?,
        _ => (uuid::Uuid::now_v7().to_string(), now_ms(), false),
    };
    let version =
        job_version(&resolve(&record, qualifier.as_deref(), &id).map_err(LambdaError::from_api)?);
    let log_tail = header("x-amz-log-type") == Some("Tail");
    let mut extra_headers = forwarded_headers(&forwarded);
    // A payload above the inline limit is stored in the function's payload bucket (it was
    // read whole: the signature and the JSON check need all of it); a dry run stores nothing.
    let payload = match kind {
        InvocationType::DryRun => bytes::Bytes::new(),
        _ => {
            let (payload, stored) = store_read(&state.invoker.payloads, &record.name, payload)
                .await
                .map_err(LambdaError::from_api)?;
            extra_headers.extend(stored.as_ref().map(reference_header));
            payload
        }
    };
    Ok(Prepared {
        record,
        kind,
        id,
        version,
        created_at_ms,
        repeated,
        traceparent,
        client_traceparent,
        extra_headers,
        payload,
        log_tail,
    })
}

/// Invoke: `RequestResponse` (the default) waits and answers the payload, `Event` queues it and
/// answers 202, `DryRun` checks the function and the permission and answers 204.
async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    request: Request,
) -> Answer {
    use InvocationType::*;
    let prepared = prepare(
        &state,
        &function,
        request,
        "Invoke",
        &[RequestResponse, Event, DryRun],
    )
    .await?;
    if prepared.kind == DryRun {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let respond_async = prepared.kind == Event;
    let record = &prepared.record;
    let id = &prepared.id;
    let call = prepared.call((!respond_async).then(|| default_wait(record, state.config.max_wait)));
    let payload = prepared.payload.clone();
    let span = invoke_span(&record.name, prepared.client_traceparent.as_deref());
    span.record("squall.invocation_id", id.as_str());
    let outcome = state
        .invoker
        .invoke(call, payload)
        .instrument(span.clone())
        .await
        .map_err(LambdaError::from_api)?;
    if let Some(finished) = outcome.finished() {
        span.record("squall.outcome", finished.meta.status.as_str());
    }
    let mut response = match (&outcome, respond_async) {
        (Outcome::Pending { .. }, true) => StatusCode::ACCEPTED.into_response(),
        (Outcome::Pending { .. }, false) => {
            return Err(LambdaError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                format!("invocation {id} did not finish within the dispatcher's wait; read it at /v1/invocations/{id}"),
            ))
        }
        (Outcome::Succeeded(finished), _) => match &finished.payload {
            Some(stored) => stored_output(&state.invoker.payloads, &record.name, stored)
                .await
                .map_err(LambdaError::from_api)?,
            None => (StatusCode::OK, finished.body.clone()).into_response(),
        },
        (Outcome::Failed(finished) | Outcome::Cancelled(finished), _) => {
            let kind = outcome.kind().unwrap_or("error");
            let handled = kind == "error";
            let body = serde_json::json!({
                "errorMessage": String::from_utf8_lossy(&finished.body),
                "errorType": if handled { "Error".to_string() } else { format!("Squall.{kind}") },
            });
            let mut r = json(StatusCode::OK, body);
            r.headers_mut().insert(
                HeaderName::from_static("x-amz-function-error"),
                HeaderValue::from_static(if handled { "Handled" } else { "Unhandled" }),
            );
            r
        }
    };
    if let Some(finished) = outcome.finished() {
        let number = record
            .version_number(&finished.meta.version)
            .map(|n| n.to_string())
            .unwrap_or_else(|| LATEST.to_string());
        if let Ok(value) = HeaderValue::from_str(&number) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-amz-executed-version"), value);
        }
        if prepared.log_tail {
            if let Ok(value) = HeaderValue::from_str(&log_tail(&finished.meta.logs)) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("x-amz-log-result"), value);
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-amzn-requestid"), value.clone());
        response
            .headers_mut()
            .insert(squall_broker::headers::INVOCATION_ID, value);
    }
    Ok(response)
}

/// The `InvokeComplete` event: empty after a success, `ErrorCode` and `ErrorDetails` after a
/// failure.
fn invoke_complete(error: Option<(&str, &str)>) -> bytes::Bytes {
    let body = match error {
        None => serde_json::json!({}),
        Some((code, details)) => {
            serde_json::json!({"ErrorCode": code, "ErrorDetails": details, "LogResult": ""})
        }
    };
    eventstream::event(
        "InvokeComplete",
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// The event stream of an output's pieces: a `PayloadChunk` each, then `InvokeComplete`, which
/// names the error when the pieces end with one (the invocation failed after it streamed).
fn event_stream(
    pieces: impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
) -> axum::body::Body {
    use futures::StreamExt as _;
    let frames = futures::stream::unfold(Some(pieces.boxed()), |pieces| async move {
        let mut pieces = pieces?;
        let frame = match pieces.next().await {
            Some(Ok(piece)) => {
                let chunk = eventstream::event("PayloadChunk", "application/octet-stream", &piece);
                return Some((Ok::<_, std::io::Error>(chunk), Some(pieces)));
            }
            Some(Err(error)) => invoke_complete(Some(("Unhandled", &error.to_string()))),
            None => invoke_complete(None),
        };
        Some((Ok(frame), None))
    });
    axum::body::Body::from_stream(frames)
}

/// InvokeWithResponseStream: the output as `PayloadChunk` events as the function streams it (a
/// function that does not stream: its whole output), then `InvokeComplete`, which names the
/// error when the invocation failed (after a chunk or before any).
async fn invoke_with_response_stream(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    request: Request,
) -> Answer {
    use InvocationType::*;
    let operation = "InvokeWithResponseStream";
    let prepared = prepare(
        &state,
        &function,
        request,
        operation,
        &[RequestResponse, DryRun],
    )
    .await?;
    if prepared.kind == DryRun {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let wait = default_wait(&prepared.record, state.config.max_wait);
    let streamed = state
        .invoker
        .invoke_streamed(prepared.call(Some(wait)), prepared.payload.clone())
        .await
        .map_err(LambdaError::from_api)?;
    let id = prepared.id.clone();
    let body = match streamed {
        Streamed::Streaming(stream) => event_stream(stream.into_body()),
        Streamed::Whole(Outcome::Pending { .. }) => {
            let message = format!(
                "invocation {id} did not finish within the dispatcher's wait; read it at /v1/invocations/{id}"
            );
            return Err(LambdaError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                message,
            ));
        }
        Streamed::Whole(Outcome::Succeeded(finished)) => match &finished.payload {
            None => event_stream(futures::stream::iter(
                (!finished.body.is_empty()).then(|| Ok(finished.body.clone())),
            )),
            Some(stored) => {
                let object = open_output(&state.invoker.payloads, &prepared.record.name, stored)
                    .await
                    .map_err(LambdaError::from_api)?;
                event_stream(tokio_util::io::ReaderStream::new(object))
            }
        },
        Streamed::Whole(outcome @ (Outcome::Failed(_) | Outcome::Cancelled(_))) => {
            let kind = outcome.kind().unwrap_or("error");
            let code = match kind {
                "error" => "Unhandled".to_string(),
                other => format!("Squall.{other}"),
            };
            let details = outcome
                .finished()
                .map(|f| String::from_utf8_lossy(&f.body).into_owned())
                .unwrap_or_default();
            axum::body::Body::from(invoke_complete(Some((&code, &details))))
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    let number = prepared
        .record
        .version_number(&prepared.version)
        .map(|n| n.to_string())
        .unwrap_or_else(|| LATEST.to_string());
    if let Ok(value) = HeaderValue::from_str(&number) {
        headers.insert(HeaderName::from_static("x-amz-executed-version"), value);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), value.clone());
        headers.insert(squall_broker::headers::INVOCATION_ID, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_is_named_by_name_qualifier_or_arn() {
        assert_eq!(function_target("hello"), "hello");
        assert_eq!(function_target("hello:live"), "hello:live");
        assert_eq!(
            function_target("arn:aws:lambda:eu-west-1:123456789012:function:hello:3"),
            "hello:3"
        );
    }

    #[test]
    fn the_log_tail_keeps_the_last_4_kib() {
        use squall_broker::record::{LogLevel, LogLine};
        let lines: Vec<LogLine> = (0..1000)
            .map(|i| LogLine {
                level: LogLevel::Info,
                message: format!("line {i}"),
            })
            .collect();
        let tail = base64::engine::general_purpose::STANDARD
            .decode(log_tail(&lines))
            .unwrap();
        assert_eq!(tail.len(), LOG_TAIL_BYTES);
        assert!(String::from_utf8(tail)
            .unwrap()
            .ends_with("INFO line 999\n"));
    }
}
