//! Web functions: `/function/{name}` and `/function/{name}/{*path}`, every method, answered in
//! Lambda's function-URL response format, on the web listener only (`--web-addr`).
//!
//! A function's answer never shares an origin with the console and the API: the web listener
//! serves web functions and nothing else, and the API's listener answers their paths with a
//! 404 naming the web listener (`elsewhere`). Headers that act on a whole origin are dropped,
//! a function's cookies are confined to its own path (`/function/{name}`, no `Domain`), and a
//! caller's Squall key is never forwarded to a function.
//!
//! A web request is an ordinary invocation: its body is the input, the request's method, path,
//! query, headers and client address travel in the job's `Squall-Web` header (the worker makes
//! them `ctx.event`), and it goes through the same queue and synchronous wait as
//! `POST /v1/functions/{name}/invocations`. Invariant: a failed invocation's answer carries no
//! detail of the failure (only its invocation id), and a caller without a key learns nothing
//! about functions that need one: an unknown function, a function that is not a web function
//! and a web function with `auth: "key"` all answer 401 to it.

use crate::compat::web_stream;
use crate::core::invoke::{default_wait, Call, Outcome};
use crate::core::keys::KEY_PREFIX;
use crate::core::rate_limit::{client_key, retry_after_secs, Rate};
use crate::core::stream::{OutputStream, Streamed};
use crate::core::submit::{is_valid_traceparent, new_traceparent};
use crate::http::auth::{self, Access, Scope};
use crate::http::error::ApiError;
use crate::http::extract::FunctionName;
use crate::http::payload::{content_length, read_head, read_output, reference_header};
use crate::AppState;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use base64::Engine as _;
use squall_api::invocations::Binary;
use squall_api::ErrorCode;
use squall_api::{ErrorBody, WebAuth};
use squall_broker::headers as h;
use squall_broker::time::now_ms;
use squall_broker::web::WebRequest;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

/// Where web functions are served.
pub const PREFIX: &str = "/function/";

/// The longest path and query accepted, in bytes, so that the request's description stays
/// well within the room a job's headers have beside the payload.
pub const MAX_URI_BYTES: usize = 4096;

/// Response headers a function may not set: HTTP framing, which the server owns; Squall's and
/// NATS's own; and those that act on the whole origin (a service worker's scope beyond the
/// function, wiping the origin's storage, HSTS for the host), which one function must not
/// decide for the others.
fn is_forbidden_response_header(name: &HeaderName) -> bool {
    // HTTP header names are lowercase: these are `headers::is_reserved`'s prefixes, lowercased.
    let name = name.as_str();
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
            | "service-worker-allowed"
            | "clear-site-data"
            | "strict-transport-security"
    ) || name.starts_with("squall-")
        || name.starts_with("nats-")
}

/// Where function `name` is served: the path its cookies are confined to.
pub fn function_prefix(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A function's `Set-Cookie` confined to its own path `prefix`: `Domain` is dropped, and `Path`
/// is kept only when it is `prefix` or below it, else it becomes `prefix` (added when absent).
/// A `__Host-` cookie, which browsers accept only with `Path=/`, is thus refused by them.
pub fn confine_cookie(cookie: &str, prefix: &str) -> String {
    let mut parts = cookie.split(';');
    let mut out = vec![parts.next().unwrap_or_default().trim().to_string()];
    let mut has_path = false;
    for attribute in parts.map(str::trim).filter(|a| !a.is_empty()) {
        let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
        let key = key.trim();
        if key.eq_ignore_ascii_case("domain") {
            continue;
        }
        if key.eq_ignore_ascii_case("path") {
            if has_path {
                continue;
            }
            has_path = true;
            let value = value.trim();
            let inside = value == prefix
                || value
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('/'));
            out.push(match inside {
                true => format!("Path={value}"),
                false => format!("Path={prefix}"),
            });
            continue;
        }
        out.push(attribute.to_string());
    }
    if !has_path {
        out.push(format!("Path={prefix}"));
    }
    out.join("; ")
}

/// Confines every `Set-Cookie` of `response` to `prefix` (see `confine_cookie`); a cookie that
/// no longer makes a header value is dropped.
pub fn confine_cookies(response: &mut WebResponse, prefix: &str) {
    response.headers.retain_mut(|(name, value)| {
        if *name != header::SET_COOKIE {
            return true;
        }
        let text = String::from_utf8_lossy(value.as_bytes());
        match HeaderValue::from_str(&confine_cookie(&text, prefix)) {
            Ok(confined) => {
                *value = confined;
                true
            }
            Err(_) => false,
        }
    });
}

/// Whether `Authorization` carries a Squall key: a bearer the dispatcher knows, or one shaped
/// like the keys it makes (a revoked key, or another dispatcher's).
fn carries_squall_key(headers: &axum::http::HeaderMap, keys: &crate::core::keys::Keys) -> bool {
    auth::bearer(headers)
        .is_some_and(|key| key.starts_with(KEY_PREFIX) || keys.grant_of(key).is_some())
}

/// The TCP peer of a connection, as the server hands it to each request (plain or TLS).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::http::tls::TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, crate::http::tls::TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// A function's answer, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct WebResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: bytes::Bytes,
}

impl IntoResponse for WebResponse {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// Why an output that claims to be a function-URL response (an object with `statusCode`) is
/// not one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadResponse {
    #[error("statusCode must be an integer from 200 to 599, got {0}")]
    Status(String),
    #[error("headers must be an object of strings")]
    Headers,
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("header {0} has an invalid value")]
    HeaderValue(String),
    #[error("cookies must be an array of strings that are valid header values")]
    Cookies,
    #[error("body must be a string")]
    Body,
    #[error("isBase64Encoded is true but body is not base64")]
    Base64,
}

/// The `Content-Type` of a body the function gave none for: JSON, UTF-8 text, or bytes.
fn default_content_type(body: &[u8]) -> HeaderValue {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        HeaderValue::from_static("application/json")
    } else if std::str::from_utf8(body).is_ok() {
        HeaderValue::from_static("text/plain; charset=utf-8")
    } else {
        HeaderValue::from_static("application/octet-stream")
    }
}

/// Maps a function's output to its HTTP answer. A JSON object with a `statusCode` is a
/// function-URL response (`statusCode`, `headers`, `cookies`, `body`, `isBase64Encoded`); any
/// other output is the body of a 200.
pub fn response_of(output: &[u8]) -> Result<WebResponse, BadResponse> {
    let envelope = match serde_json::from_slice::<serde_json::Value>(output) {
        Ok(serde_json::Value::Object(map)) if map.contains_key("statusCode") => map,
        _ => {
            return Ok(WebResponse {
                status: StatusCode::OK,
                headers: vec![(header::CONTENT_TYPE, default_content_type(output))],
                body: bytes::Bytes::copy_from_slice(output),
            })
        }
    };
    let status = &envelope["statusCode"];
    let status = status
        .as_u64()
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code as u16).ok())
        .ok_or_else(|| BadResponse::Status(status.to_string()))?;
    let mut headers = Vec::new();
    match envelope.get("headers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (name, value) in map {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => return Err(BadResponse::Headers),
                };
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| BadResponse::HeaderName(name.clone()))?;
                let value = HeaderValue::from_str(&text)
                    .map_err(|_| BadResponse::HeaderValue(name.to_string()))?;
                if !is_forbidden_response_header(&name) {
                    headers.push((name, value));
                }
            }
        }
        Some(_) => return Err(BadResponse::Headers),
    }
    match envelope.get("cookies") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(cookies)) => {
            for cookie in cookies {
                let value = cookie
                    .as_str()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                    .ok_or(BadResponse::Cookies)?;
                headers.push((header::SET_COOKIE, value));
            }
        }
        Some(_) => return Err(BadResponse::Cookies),
    }
    let text = match envelope.get("body") {
        None | Some(serde_json::Value::Null) => "",
        Some(serde_json::Value::String(text)) => text.as_str(),
        Some(_) => return Err(BadResponse::Body),
    };
    let base64 = envelope
        .get("isBase64Encoded")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let body: bytes::Bytes = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| BadResponse::Base64)?
            .into()
    } else {
        bytes::Bytes::copy_from_slice(text.as_bytes())
    };
    if !headers.iter().any(|(name, _)| name == header::CONTENT_TYPE) {
        let content_type = if base64 {
            HeaderValue::from_static("application/octet-stream")
        } else {
            default_content_type(&body)
        };
        headers.push((header::CONTENT_TYPE, content_type));
    }
    Ok(WebResponse {
        status,
        headers,
        body,
    })
}

/// `/function/{name}/rest?q` → (`name`, `/rest`); the root of a function is `/`.
fn split_path(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    }
}

/// The request's headers by lowercase name, repeated ones joined with `,`; without
/// `Authorization` unless `keep_authorization` (it carried no Squall key).
fn request_headers(
    headers: &axum::http::HeaderMap,
    keep_authorization: bool,
) -> BTreeMap<String, String> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if name == header::AUTHORIZATION && !keep_authorization {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.as_str().to_string())
            .and_modify(|known| {
                known.push(',');
                known.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    joined
}

/// The decoded query parameters, repeated ones joined with `,`.
fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(pairs)| pairs)
        .unwrap_or_default();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in pairs {
        query
            .entry(name)
            .and_modify(|known| {
                known.push(',');
                known.push_str(&value);
            })
            .or_insert(value);
    }
    query
}

/// A generic error of a web function's answer: no detail, and the invocation id in its header.
fn generic(status: StatusCode, code: ErrorCode, message: &str, id: &str) -> Response {
    let mut response = ApiError::new(status, code, message).into_response();
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(h::INVOCATION_ID, value);
    }
    response
}

/// Serve a web function at its root (any method; the document lists GET and POST).
#[utoipa::path(method(get, post), path = "/function/{name}", tag = "web",
    params(("name" = String, Path, description = crate::http::extract::NAME, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The function's input."),
    responses(
        (status = "default", description = "The function's own answer: the status, headers, cookies and body of its function-URL response, or a 200 with its output.", body = Binary, content_type = "application/octet-stream",
            headers(("Squall-Invocation-Id" = String, description = "The invocation id."))),
        (status = 400, description = "Invalid function name.", body = ErrorBody),
        (status = 404, description = "Unknown function, or not a web function.", body = ErrorBody),
        (status = 413, description = "The body is larger than the payload limit.", body = ErrorBody),
        (status = 414, description = "The path and query are longer than 4096 bytes.", body = ErrorBody),
        (status = 429, description = "Past the function's rate limit for this client address; retry after `Retry-After`.", body = ErrorBody),
        (status = 502, description = "The function failed, or its answer is not a valid response; no detail, the invocation keeps it.", body = ErrorBody,
            headers(("Squall-Invocation-Id" = String, description = "The invocation id."))),
        (status = 504, description = "The function did not answer within the wait; the invocation goes on.", body = ErrorBody,
            headers(("Squall-Invocation-Id" = String, description = "The invocation id.")))))]
pub async fn root(state: State<Arc<AppState>>, request: Request) -> Response {
    serve(state, request).await
}

/// Serve a web function below its root: `path` is everything after the name, slashes included
/// (any method; the document lists GET and POST).
#[utoipa::path(method(get, post), path = "/function/{name}/{path}", tag = "web",
    params(("name" = String, Path, description = crate::http::extract::NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("path" = String, Path, description = "The rest of the path; the function sees it as `/{path}`.")),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The function's input."),
    responses(
        (status = "default", description = "The function's own answer, as at the function's root.", body = Binary, content_type = "application/octet-stream"),
        (status = 400, description = "Invalid function name.", body = ErrorBody),
        (status = 404, description = "Unknown function, or not a web function.", body = ErrorBody),
        (status = 413, description = "The body is larger than the payload limit.", body = ErrorBody),
        (status = 414, description = "The path and query are longer than 4096 bytes.", body = ErrorBody),
        (status = 429, description = "Past the function's rate limit for this client address.", body = ErrorBody),
        (status = 502, description = "The function failed; no detail.", body = ErrorBody),
        (status = 504, description = "The function did not answer within the wait.", body = ErrorBody)))]
pub async fn under(state: State<Arc<AppState>>, request: Request) -> Response {
    serve(state, request).await
}

async fn serve(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (name, _) = split_path(request.uri().path());
    let span = tracing::info_span!(
        "squall.web",
        otel.kind = "server",
        squall.function = %name,
        squall.invocation_id = tracing::field::Empty,
        http.request.method = %request.method(),
        http.response.status_code = tracing::field::Empty,
    );
    let client_trace = request
        .headers()
        .get(h::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    squall_telemetry::set_parent(
        &span,
        squall_telemetry::context_from_traceparent(client_trace),
    );
    let response = match handle(&state, request).instrument(span.clone()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn handle(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (name, path) = split_path(request.uri().path());
    let (name, path) = (name.to_string(), path.to_string());
    let record = match FunctionName::parse(name.clone()) {
        Ok(name) => state
            .registry
            .load(&name)
            .await
            .map(|r| (name, r))
            .map_err(ApiError::from),
        Err(invalid) => Err(ApiError::from(invalid)),
    };
    let web = match &record {
        Ok((_, record)) => record.web.clone(),
        // The broker is down: nothing is known, so nothing is told.
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => return Err(e.clone()),
        Err(_) => None,
    };
    let open = web.as_ref().is_some_and(|w| w.auth == WebAuth::None);
    if !open {
        let checked = auth::check(&state.keys, &request, Access::Scope(Scope::Invoke))
            .and_then(|grant| auth::allow_function(&grant, &name));
        if let Err(refused) = checked {
            return Ok(refused.into_response());
        }
    }
    // A keyed function never sees the key; an open one sees `Authorization` unless it carries
    // a Squall key (a caller's console key must not reach a function by mistake).
    let keep_authorization = open && !carries_squall_key(request.headers(), &state.keys);
    let (name, record) = record?;
    let Some(web) = web else {
        return Err(ApiError::not_found(
            ErrorCode::NotAWebFunction,
            format!(
                "function {:?} is not a web function; deploy it with \"web\" in its spec",
                name.as_str()
            ),
        ));
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(peer))| peer.ip());
    if let Some(rate) = web.rate_per_s {
        let address = client_key(client.unwrap_or(IpAddr::from([0, 0, 0, 0])));
        let bucket = (address, name.to_string());
        if let Err(wait) = state
            .web_limits
            .take(bucket, Rate::per_second(rate), Instant::now())
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!("more than {rate} requests per second to this function from one address (an IPv6 client is its /64)"),
            )
            .retry_after(retry_after_secs(wait)));
        }
    }
    let uri = request.uri().clone();
    let raw_query = uri.query().unwrap_or_default().to_string();
    if path.len() + raw_query.len() > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            format!("the path and query are longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    let description = WebRequest {
        method: request.method().to_string(),
        path,
        raw_query,
        query: query_map(&uri),
        headers: request_headers(request.headers(), keep_authorization),
        remote_addr: client.map(|ip| ip.to_string()).unwrap_or_default(),
    };
    let traceparent = request
        .headers()
        .get(h::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_traceparent(v))
        .map(str::to_string)
        .unwrap_or_else(new_traceparent);
    let payloads = &state.invoker.payloads;
    let declared = content_length(request.headers());
    // A body above the inline limit streams into the function's payload bucket.
    let (payload, stored) = read_head(payloads, declared, request.into_body())
        .await?
        .store(payloads, &name)
        .await?;
    let mut extra_headers = vec![(h::WEB.to_string(), description.to_header())];
    extra_headers.extend(stored.as_ref().map(reference_header));
    let id = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("squall.invocation_id", id.as_str());
    let call = Call {
        function: &name,
        version: &record.version,
        id: &id,
        created_at_ms: now_ms(),
        repeated: false,
        traceparent: &traceparent,
        source: "web",
        extra_headers,
        wait: Some(default_wait(&record, state.config.max_wait)),
    };
    // A function that streams answers as it writes (`compat::web_stream`).
    let outcome = match state.invoker.invoke_streamed(call, payload).await? {
        Streamed::Streaming(stream) => return Ok(streamed_answer(stream, &name).await),
        Streamed::Whole(outcome) => outcome,
    };
    let outcome = match outcome {
        Outcome::Succeeded(finished) => finished,
        Outcome::Pending { .. } => {
            return Ok(generic(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::FunctionUnanswered,
                "the function did not answer in time",
                &id,
            ))
        }
        Outcome::Failed(_) | Outcome::Cancelled(_) => {
            return Ok(generic(
                StatusCode::BAD_GATEWAY,
                ErrorCode::FunctionFailed,
                "the function failed",
                &id,
            ))
        }
    };
    // A stored answer is read whole: its JSON is parsed into the HTTP response.
    let answer = match &outcome.payload {
        Some(stored) => read_output(payloads, &name, stored).await?,
        None => outcome.body.clone(),
    };
    let mut response = match response_of(&answer) {
        Ok(mut answer) => {
            confine_cookies(&mut answer, &function_prefix(&name));
            answer.into_response()
        }
        Err(error) => {
            tracing::info!(message = "a web function's answer is not a valid response", function = %name, invocation_id = %id, %error);
            return Ok(generic(
                StatusCode::BAD_GATEWAY,
                ErrorCode::InvalidResponse,
                "the function's answer is not a valid response",
                &id,
            ));
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(h::INVOCATION_ID, value);
    }
    Ok(response)
}

/// The answer of a web function that streams: its prelude's status and headers (cookies
/// confined to its path), then the body as it comes; a stream without a prelude is the body
/// of a 200 of bytes. A failure before the prelude is whole is a 502 with no detail, as for a
/// function that did not stream.
async fn streamed_answer(stream: OutputStream, name: &str) -> Response {
    let id = stream.id.clone();
    let Some(opened) = web_stream::open(stream).await else {
        return generic(
            StatusCode::BAD_GATEWAY,
            ErrorCode::FunctionFailed,
            "the function failed",
            &id,
        );
    };
    let mut response = match &opened.prelude {
        Some(prelude) => match prelude_response(prelude, name) {
            Some(response) => response,
            None => {
                tracing::info!(message = "a web function's streamed prelude is not a valid response",
                    function = %name, invocation_id = %id);
                return generic(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::InvalidResponse,
                    "the function's answer is not a valid response",
                    &id,
                );
            }
        },
        None => {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
    };
    *response.body_mut() = opened.body;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(h::INVOCATION_ID, value);
    }
    response
}

/// The status and headers a streamed prelude gives; `None` when it is not a function-URL
/// response (no `statusCode`, a bad header or cookie). No `Content-Type` in it means bytes.
fn prelude_response(prelude: &[u8], name: &str) -> Option<Response> {
    let value: serde_json::Value = serde_json::from_slice(prelude).ok()?;
    let object = value.as_object().filter(|o| o.contains_key("statusCode"))?;
    let typed = object
        .get("headers")
        .and_then(|h| h.as_object())
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")));
    let mut answer = response_of(prelude).ok()?;
    if !typed {
        answer.headers.retain(|(n, _)| n != header::CONTENT_TYPE);
        answer.headers.push((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
    }
    answer.body = bytes::Bytes::new();
    confine_cookies(&mut answer, &function_prefix(name));
    let mut response = answer.into_response();
    response.headers_mut().remove(header::CONTENT_LENGTH);
    Some(response)
}

/// The web routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(root, under))]
pub struct Document;

/// The 404 of a web function's path on the API's listener: web functions have their own.
async fn on_the_web_listener() -> Response {
    ApiError::not_found(
        ErrorCode::RouteNotFound,
        "web functions are served on their own origin, the dispatcher's web listener \
         (--web-addr; by default the API's port + 1), not on the API's",
    )
    .into_response()
}

/// The API listener's answer to web functions' paths (`on_the_web_listener`).
pub fn elsewhere() -> axum::Router<Arc<AppState>> {
    use axum::routing::any;
    axum::Router::new()
        .route("/function/{name}", any(on_the_web_listener))
        .route("/function/{name}/", any(on_the_web_listener))
        .route("/function/{name}/{*path}", any(on_the_web_listener))
}

/// The web listener's answer to anything but a web function.
pub async fn not_here() -> Response {
    ApiError::not_found(
        ErrorCode::RouteNotFound,
        "this origin serves only web functions, at /function/{name}",
    )
    .into_response()
}

/// The router of the web routes (their key check is their own, by the function's spec).
pub fn router() -> axum::Router<Arc<AppState>> {
    use axum::routing::any;
    axum::Router::new()
        .route("/function/{name}", any(root))
        .route("/function/{name}/", any(root))
        .route("/function/{name}/{*path}", any(under))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(response: &'a WebResponse, name: &str) -> Vec<&'a str> {
        response
            .headers
            .iter()
            .filter(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn a_function_url_response_gives_status_headers_cookies_and_body() {
        let output = br#"{"statusCode": 201, "headers": {"X-Thing": "yes", "Retry": 3},
            "cookies": ["a=1; Path=/", "b=2"], "body": "{\"ok\":true}", "isBase64Encoded": false}"#;
        let response = response_of(output).unwrap();
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(header(&response, "x-thing"), ["yes"]);
        assert_eq!(header(&response, "retry"), ["3"]);
        assert_eq!(header(&response, "set-cookie"), ["a=1; Path=/", "b=2"]);
        assert_eq!(header(&response, "content-type"), ["application/json"]);
        assert_eq!(response.body, r#"{"ok":true}"#);
    }

    #[test]
    fn a_base64_body_is_decoded() {
        let output = br#"{"statusCode": 200, "body": "AP8=", "isBase64Encoded": true}"#;
        let response = response_of(output).unwrap();
        assert_eq!(response.body.as_ref(), [0u8, 255]);
        assert_eq!(
            header(&response, "content-type"),
            ["application/octet-stream"]
        );
        let bad = br#"{"statusCode": 200, "body": "%%", "isBase64Encoded": true}"#;
        assert_eq!(response_of(bad), Err(BadResponse::Base64));
    }

    #[test]
    fn any_other_output_is_a_200_body() {
        let response = response_of(br#"{"greeting": "hi"}"#).unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body, r#"{"greeting": "hi"}"#);
        assert_eq!(header(&response, "content-type"), ["application/json"]);
        let text = response_of(b"plain words").unwrap();
        assert_eq!(header(&text, "content-type"), ["text/plain; charset=utf-8"]);
        let bytes = response_of(&[0xff, 0xfe]).unwrap();
        assert_eq!(header(&bytes, "content-type"), ["application/octet-stream"]);
        assert_eq!(response_of(b"").unwrap().status, StatusCode::OK);
    }

    #[test]
    fn an_invalid_function_url_response_is_refused_with_the_reason() {
        for (output, error) in [
            (r#"{"statusCode": 99}"#, BadResponse::Status("99".into())),
            (
                r#"{"statusCode": "200"}"#,
                BadResponse::Status("\"200\"".into()),
            ),
            (r#"{"statusCode": 700}"#, BadResponse::Status("700".into())),
            (
                r#"{"statusCode": 200, "headers": []}"#,
                BadResponse::Headers,
            ),
            (
                r#"{"statusCode": 200, "headers": {"a b": "x"}}"#,
                BadResponse::HeaderName("a b".into()),
            ),
            (
                r#"{"statusCode": 200, "headers": {"x": "a\nb"}}"#,
                BadResponse::HeaderValue("x".into()),
            ),
            (
                r#"{"statusCode": 200, "cookies": [1]}"#,
                BadResponse::Cookies,
            ),
            (
                r#"{"statusCode": 200, "body": {"a": 1}}"#,
                BadResponse::Body,
            ),
        ] {
            assert_eq!(response_of(output.as_bytes()), Err(error), "{output}");
        }
    }

    #[test]
    fn framing_and_reserved_headers_of_a_function_are_dropped() {
        let output = br#"{"statusCode": 200, "headers": {"Content-Length": "5",
            "Squall-Invocation-Id": "forged", "Connection": "close", "X-Ok": "1"}}"#;
        let response = response_of(output).unwrap();
        let names: Vec<&str> = response.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-ok", "content-type"]);
    }

    #[test]
    fn headers_acting_on_the_whole_origin_are_dropped() {
        let output = br#"{"statusCode": 200, "headers": {"Service-Worker-Allowed": "/",
            "Clear-Site-Data": "\"*\"", "Strict-Transport-Security": "max-age=31536000",
            "X-Ok": "1"}}"#;
        let response = response_of(output).unwrap();
        let names: Vec<&str> = response.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-ok", "content-type"]);
    }

    #[test]
    fn cookies_are_confined_to_the_functions_path_without_a_domain() {
        let prefix = "/function/shop";
        for (given, confined) in [
            (
                "a=1; Path=/; HttpOnly",
                "a=1; Path=/function/shop; HttpOnly",
            ),
            ("a=1", "a=1; Path=/function/shop"),
            (
                "a=1; Domain=example.com; Secure",
                "a=1; Secure; Path=/function/shop",
            ),
            (
                "a=1; path=/function/shop/cart",
                "a=1; Path=/function/shop/cart",
            ),
            ("a=1; Path=/function/shop", "a=1; Path=/function/shop"),
            ("a=1; Path=/function/shopping", "a=1; Path=/function/shop"),
            ("a=1; Path=/function/other", "a=1; Path=/function/shop"),
            (
                "a=1; Path=/; Path=/x; DOMAIN=.x",
                "a=1; Path=/function/shop",
            ),
            ("a=b=c; Max-Age=5", "a=b=c; Max-Age=5; Path=/function/shop"),
        ] {
            assert_eq!(confine_cookie(given, prefix), confined, "{given}");
        }
        let mut response = response_of(
            br#"{"statusCode": 200, "headers": {"Set-Cookie": "h=1; Path=/"},
                "cookies": ["c=2; Domain=evil.example"]}"#,
        )
        .unwrap();
        confine_cookies(&mut response, prefix);
        assert_eq!(
            header(&response, "set-cookie"),
            ["h=1; Path=/function/shop", "c=2; Path=/function/shop"]
        );
    }

    #[test]
    fn a_streamed_prelude_gives_status_headers_and_confined_cookies() {
        let prelude =
            br#"{"statusCode": 201, "headers": {"x-a": "1"}, "cookies": ["s=1; Path=/"]}"#;
        let response = prelude_response(prelude, "chat").unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/octet-stream"
        );
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.contains("Path=/function/chat"), "{cookie}");
    }

    #[test]
    fn a_streamed_prelude_without_a_status_code_is_refused() {
        assert!(prelude_response(br#"{"headers": {}}"#, "chat").is_none());
        assert!(prelude_response(br#"{"statusCode": 99}"#, "chat").is_none());
    }

    #[test]
    fn paths_split_into_the_name_and_the_rest() {
        assert_eq!(split_path("/function/hook"), ("hook", "/"));
        assert_eq!(split_path("/function/hook/"), ("hook", "/"));
        assert_eq!(split_path("/function/hook/a/b"), ("hook", "/a/b"));
    }

    #[test]
    fn request_headers_join_repeats_and_drop_the_squall_key() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        let kept = request_headers(&headers, true);
        assert_eq!(kept["x-tag"], "a,b");
        assert_eq!(kept["authorization"], "Bearer k");
        assert!(!request_headers(&headers, false).contains_key("authorization"));
    }

    #[test]
    fn query_parameters_are_decoded_and_repeats_joined() {
        let uri: Uri = "/function/f/x?name=Ada%20L&tag=a&tag=b&flag"
            .parse()
            .unwrap();
        let query = query_map(&uri);
        assert_eq!(query["name"], "Ada L");
        assert_eq!(query["tag"], "a,b");
        assert_eq!(query["flag"], "");
    }
}
