//! The invocation routes: invoke (synchronous or not), and an invocation's state, output and
//! logs, read from the local index and RESULTS.

use crate::core::cloudevents;
use crate::core::invoke::Invoker;
use crate::core::invoke::{default_wait, invoke_span, Call, Outcome};
use crate::core::registry::Registry;
use crate::core::stream::Streamed;
use crate::core::submit::{
    checked_idempotency_key, event_key, forwarded_headers, is_valid_traceparent, new_traceparent,
    Job, IDEMPOTENCY_KEY,
};
use crate::core::versions::{job_version, resolve, Qualified};
use crate::core::view::{finished_view, queued_view};
use crate::core::waiter::Finished;
use crate::events::destinations::Destinations;
use crate::http::answer::accepted;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, InvocationId};
use crate::http::payload::{content_length, read_head, reference_header, stored_output};
use crate::index::Accepted;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use squall_api::invocations::Binary;
use squall_api::invocations::{
    Accepted as AcceptedView, CloudEventBatchAccepted, Invocation, InvocationLogs, InvokeAccepted,
    InvokeParams, StructuredCloudEvent,
};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::time::now_ms;
use squall_broker::{headers as h, FunctionRecord, InvocationStatus};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

type Shared = State<Arc<AppState>>;

fn parse_flag(value: Option<&str>, key: &str) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("{key}={other:?} is not a boolean; use true or false"),
        )),
    }
}

/// Invoke a function: the body is its input. `Prefer: respond-async` (or `?async=true`)
/// answers 202 at once; otherwise the answer waits for the outcome up to `wait`. The same
/// `Idempotency-Key` gives the same invocation. Runs inside the `squall.invoke` span, which
/// continues the caller's trace when the request carries a valid `traceparent`.
#[utoipa::path(post, path = "/v1/functions/{name}/invocations", tag = "invocations",
    params(("name" = String, Path, description = crate::http::extract::QUALIFIED_NAME, pattern = "^[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]{1,64})?$"), InvokeParams,
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same invocation (1 to 256 characters)."),
        ("Prefer" = Option<String>, Header, description = "`respond-async` answers 202 at once."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context to continue."),
        ("Accept" = Option<String>, Header, description = "`application/x-ndjson` or `text/event-stream` asks for the output as the function streams it (chunked, each chunk as it is written); a function that does not stream answers whole."),
        ("Squall-Stream" = Option<String>, Header, description = "`true` asks for the output as the function streams it, as `application/octet-stream`."),
        ("X-Callback-Url" = Option<String>, Header, description = "An http(s) URL that receives the CloudEvent of this call's terminal state (a signed POST, like a destination's). Refused (400 `invalid_callback_url`) when its host is or resolves to a loopback, link-local, private, unique-local, unspecified, multicast or broadcast address the operator did not allow."),
        ("ce-specversion" = Option<String>, Header, description = "CloudEvents binary mode: `1.0`; with `ce-id`, `ce-source`, `ce-type` (and optionally `ce-subject`, `ce-time`, `ce-dataschema`, `ce-<extension>`) the body is the event's data and `Content-Type` its `datacontenttype`."),
        ("ce-id" = Option<String>, Header, description = "CloudEvents binary mode: the event's id."),
        ("ce-source" = Option<String>, Header, description = "CloudEvents binary mode: the event's source."),
        ("ce-type" = Option<String>, Header, description = "CloudEvents binary mode: the event's type.")),
    request_body(content(
        (Binary = "application/octet-stream"),
        (StructuredCloudEvent = "application/cloudevents+json"),
        (Vec<StructuredCloudEvent> = "application/cloudevents-batch+json")),
        description = "The function's input; or a CloudEvent (structured mode), whose data is the input; or a batch of them, one invocation each. A CloudEvent's `source` and `id` are its idempotency key when there is no `Idempotency-Key`."),
    responses(
        (status = 200, description = "Succeeded; the body is the function's output. When a stream was asked for and the function streams, the chunks as they are written; a failure after the first chunk cuts the body short (no final chunk) and the invocation records it.", body = Binary, content_type = "application/octet-stream",
            headers(("Squall-Invocation-Id" = String, description = "The invocation id."))),
        (status = 202, description = "Accepted and not finished yet (async, or the wait ran out); a CloudEvents batch answers with every invocation.", body = InvokeAccepted,
            headers(("Location" = String, description = "Where to read the invocation."))),
        (status = 400, description = "Invalid name, query, Idempotency-Key or X-Callback-Url (`invalid_callback_url`: not http(s), or an address the egress guard refuses), or an invalid CloudEvent (`invalid_cloudevent`, with `attribute` naming the attribute at fault).", body = ErrorBody),
        (status = 404, description = "Unknown function, version or alias.", body = ErrorBody),
        (status = 413, description = "The payload is larger than the limit (default 1 MiB).", body = ErrorBody),
        (status = 500, description = "The function failed terminally; `kind` says how.", body = ErrorBody),
        (status = 503, description = "The broker did not acknowledge the job within the publish budget; retry after `Retry-After`.", body = ErrorBody),
        (status = 504, description = "The function timed out terminally.", body = ErrorBody)))]
pub async fn invoke(
    state: Shared,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<InvokeParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = invoke_span(
        &name,
        headers.get(h::TRACEPARENT).and_then(|v| v.to_str().ok()),
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
    query: InvokeParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let payloads = &state.invoker.payloads;
    let head = read_head(payloads, content_length(&headers), body).await?;
    // The body is read before the name is judged, so a client still sending gets an answer.
    let qualified = Qualified::parse(&name, query.qualifier.as_deref())?;
    let name = qualified.name;
    let record = state.registry.load(&name).await?;
    // An unknown qualifier is refused before anything is claimed or published.
    if qualified.qualifier.is_some() {
        resolve(&record, qualified.qualifier.as_deref(), "")?;
    }
    let respond_async = parse_flag(query.respond_async.as_deref(), "async")?
        || headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
            });
    let wait = match query.wait.as_deref() {
        None => default_wait(&record, state.config.max_wait),
        Some(text) => match text.parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                // Clamp before converting: a huge number of seconds does not fit a Duration.
                Duration::from_secs_f64(secs.min(state.config.max_wait.as_secs_f64()))
            }
            _ => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQuery,
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
    let callback = callback_url(&headers)?;
    if let Some(url) = &callback {
        // Before anything is claimed or published: a refused URL leaves no trace.
        crate::events::destinations::check_url(&state.destinations, "X-Callback-Url", url).await?;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let has_ce = headers
        .keys()
        .any(|n| cloudevents::is_binary_header(n.as_str()));
    let mode = cloudevents::mode(content_type, has_ce);
    // A CloudEvent is parsed whole: only an inline body can be one.
    let (head, payload) = match mode {
        cloudevents::Mode::None => (Some(head), Bytes::new()),
        _ => (None, head.inline("a CloudEvent", payloads.inline_limit())?),
    };
    let event = match mode {
        cloudevents::Mode::None => None,
        cloudevents::Mode::Batch => {
            let events = cloudevents::from_batch(&payload).map_err(invalid_event)?;
            // Boxed: the batch's future would otherwise enlarge every invoke's.
            return Box::pin(submit_event_batch(
                &state,
                &name,
                &record,
                qualified.qualifier.as_deref(),
                &headers,
                &traceparent,
                events,
            ))
            .await;
        }
        cloudevents::Mode::Structured => {
            Some(cloudevents::from_structured(&payload).map_err(invalid_event)?)
        }
        cloudevents::Mode::Binary => Some(
            cloudevents::from_binary(
                headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
                content_type,
                payload.clone(),
            )
            .map_err(invalid_event)?,
        ),
    };
    let mut extra_headers = forwarded_headers(&headers);
    let (payload, claim) = match &event {
        Some(event) => {
            extra_headers.push((
                h::CLOUDEVENT.to_string(),
                event.attributes.to_header().map_err(invalid_event)?,
            ));
            (
                event.data.clone(),
                Some(event_key(&name, &event.attributes)),
            )
        }
        None => (payload, None),
    };
    // A body above the inline limit goes to the function's payload bucket now that the
    // function is known to exist; the job carries the reference.
    let payload = match head {
        Some(head) => {
            let (inline, stored) = head.store(payloads, &name).await?;
            extra_headers.extend(stored.as_ref().map(reference_header));
            inline
        }
        None => payload,
    };
    let (id, created_at_ms, repeated) = match (headers.get(IDEMPOTENCY_KEY), claim) {
        (Some(key), _) => {
            state
                .invoker
                .submitter
                .claim_idempotency_key(&name, checked_idempotency_key(key)?)
                .await?
        }
        // An event's source and id are its idempotency key when the caller gave none.
        (None, Some(kv_key)) => state.invoker.submitter.claim_kv_key(&kv_key).await?,
        (None, None) => (uuid::Uuid::now_v7().to_string(), now_ms(), false),
    };
    tracing::Span::current().record("squall.invocation_id", id.as_str());
    // A repeated idempotency key's invocation keeps the callback (and outcomes) it has.
    if let Some(url) = callback.as_ref().filter(|_| !repeated) {
        Box::pin(crate::events::destinations::register_callback(
            &state.destinations,
            &name,
            &id,
            url,
        ))
        .await?;
    }
    let version = job_version(&resolve(&record, qualified.qualifier.as_deref(), &id)?);
    let call = Call {
        function: &name,
        version: &version,
        id: &id,
        created_at_ms,
        repeated,
        traceparent: &traceparent,
        source: "http",
        extra_headers,
        wait: (!respond_async).then_some(wait),
    };
    // A caller that asked for a stream gets the chunks as the function writes them.
    let outcome = match crate::http::stream::requested(&headers).filter(|_| !respond_async) {
        Some(content_type) => match state.invoker.invoke_streamed(call, payload).await? {
            Streamed::Streaming(stream) => {
                return Ok(crate::http::stream::response(stream, content_type))
            }
            Streamed::Whole(outcome) => outcome,
        },
        None => state.invoker.invoke(call, payload).await?,
    };
    render(&state.invoker, outcome).await
}

/// The 400 of an event that is not a valid CloudEvent, naming the attribute.
fn invalid_event(e: cloudevents::CloudEventError) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidCloudevent, e.message).with("attribute", e.attribute)
}

/// The `X-Callback-Url` of a call: an `http://` or `https://` URL, or a 400.
fn callback_url(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(CALLBACK_URL) else {
        return Ok(None);
    };
    let url = value.to_str().unwrap_or_default();
    let is_url = url.starts_with("http://") || url.starts_with("https://");
    match squall_api::spec::check_destination(url) {
        Ok(()) if is_url => Ok(Some(url.to_string())),
        Ok(()) => Err(ApiError::bad_request(
            ErrorCode::InvalidCallbackUrl,
            format!("X-Callback-Url {url:?} is not an http:// or https:// URL"),
        )),
        Err(message) => Err(ApiError::bad_request(
            ErrorCode::InvalidCallbackUrl,
            format!("X-Callback-Url {message}"),
        )),
    }
}

/// The request header naming a call's own callback (OpenFaaS's convention).
pub const CALLBACK_URL: &str = "x-callback-url";

/// A CloudEvents batch: one asynchronous invocation per event, each idempotent by its source
/// and id (or by the request's `Idempotency-Key` and its index), published with pipelined
/// acknowledgements, answered 202 with every id in order.
async fn submit_event_batch(
    state: &AppState,
    name: &str,
    record: &FunctionRecord,
    qualifier: Option<&str>,
    headers: &HeaderMap,
    traceparent: &str,
    events: Vec<cloudevents::Event>,
) -> Result<Response, ApiError> {
    use futures::StreamExt as _;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(key) => Some(checked_idempotency_key(key)?.to_string()),
        None => None,
    };
    let forwarded = forwarded_headers(headers);
    let mut prepared = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let attributes = event.attributes.to_header().map_err(|e| {
            invalid_event(cloudevents::CloudEventError {
                message: format!("event {index} of the batch: {}", e.message),
                attribute: e.attribute,
            })
        })?;
        let kv_key = match &key {
            Some(key) => hex::encode(Sha256::digest(
                format!("{name}\nbatch-event\n{key}\n{index}").as_bytes(),
            )),
            None => event_key(name, &event.attributes),
        };
        prepared.push((kv_key, attributes, event.data));
    }
    let accepted: Vec<Result<AcceptedView, ApiError>> = futures::stream::iter(prepared)
        .map(|(kv_key, attributes, data)| {
            let mut extra_headers = forwarded.clone();
            extra_headers.push((h::CLOUDEVENT.to_string(), attributes));
            async move {
                let (id, created_at_ms, _) = state.invoker.submitter.claim_kv_key(&kv_key).await?;
                let version = job_version(&resolve(record, qualifier, &id)?);
                let job = Job {
                    reply_to: None,
                    function: name,
                    version: &version,
                    id: &id,
                    created_at_ms,
                    traceparent,
                    source: "http",
                    extra_headers,
                };
                state.invoker.submitter.submit(job, data).await?;
                Ok(AcceptedView {
                    location: format!("/v1/invocations/{id}"),
                    invocation_id: id,
                    status: InvocationStatus::Queued,
                    replay_of: None,
                })
            }
        })
        .buffered(64)
        .collect()
        .await;
    let invocations = accepted.into_iter().collect::<Result<Vec<_>, _>>()?;
    let view = CloudEventBatchAccepted {
        count: invocations.len(),
        invocations,
    };
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// The native answer of an outcome: the output (streamed from the payload bucket when it was
/// stored there), the error in the API's shape, or a 202.
async fn render(invoker: &Invoker, outcome: Outcome) -> Result<Response, ApiError> {
    let kind = outcome.kind();
    let finished = match outcome {
        Outcome::Pending { id, status } => return Ok(accepted(&id, status, None)),
        Outcome::Succeeded(f) | Outcome::Failed(f) | Outcome::Cancelled(f) => f,
    };
    let meta = &finished.meta;
    let mut response = match kind {
        None if finished.payload.is_some() => {
            let stored = finished.payload.as_ref().expect("checked");
            stored_output(&invoker.payloads, &meta.function, stored).await?
        }
        None => {
            let mut r = (StatusCode::OK, finished.body.clone()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Some(kind) => {
            let (status, code) = match meta.status {
                InvocationStatus::TimedOut => {
                    (StatusCode::GATEWAY_TIMEOUT, ErrorCode::FunctionTimedOut)
                }
                InvocationStatus::Cancelled => {
                    (StatusCode::CONFLICT, ErrorCode::InvocationCancelled)
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::FunctionFailed),
            };
            ApiError::new(
                status,
                code,
                String::from_utf8_lossy(&finished.body).into_owned(),
            )
            .with("kind", kind)
            .with("status", meta.status.as_str())
            .with("invocation_id", meta.invocation_id.clone())
            .with("attempts", meta.attempt)
            .into_response()
        }
    };
    if let Ok(id) = HeaderValue::from_str(&meta.invocation_id) {
        response.headers_mut().insert(h::INVOCATION_ID, id);
    }
    if let Ok(status) = HeaderValue::from_str(meta.status.as_str()) {
        response.headers_mut().insert(h::STATUS, status);
    }
    Ok(response)
}

/// The invocation `id`, finished or only accepted; unknown to a caller whose key may not reach
/// its function (answered exactly as an id that does not exist).
async fn find_invocation(
    invoker: &Invoker,
    caller: &Caller,
    id: &str,
) -> Result<Result<Finished, Accepted>, ApiError> {
    let unknown = || {
        ApiError::not_found(
            ErrorCode::InvocationNotFound,
            format!("no invocation with id {id}"),
        )
    };
    let accepted = invoker
        .submitter
        .index
        .get(id)
        .map_err(|e| ApiError::internal("invocation index", e))?;
    let function = accepted.as_ref().map(|a| a.function.as_str());
    if let Some(outcome) = invoker.lookup(id, function).await? {
        if !caller.allows(&outcome.meta.function) {
            return Err(unknown());
        }
        if accepted.is_some() && outcome.meta.status.is_terminal() {
            invoker.forget(id);
        }
        return Ok(Ok(outcome));
    }
    match accepted {
        Some(accepted) if caller.allows(&accepted.function) => Ok(Err(accepted)),
        _ => Err(unknown()),
    }
}

/// Invocation status: attempts, timings, error, and the output when it succeeded.
#[utoipa::path(get, path = "/v1/invocations/{id}", tag = "invocations",
    params(("id" = String, Path, description = "Invocation id (UUIDv7).", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The invocation.", body = Invocation),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "Unknown invocation.", body = ErrorBody)))]
pub async fn get_invocation(
    State(invoker): State<Invoker>,
    State(registry): State<Registry>,
    State(destinations): State<Destinations>,
    caller: Caller,
    id: InvocationId,
) -> Result<Json<Invocation>, ApiError> {
    let mut view = match find_invocation(&invoker, &caller, &id).await? {
        Ok(outcome) => {
            let mut view = finished_view(&outcome);
            if outcome.meta.status.is_terminal() {
                view.destinations =
                    Box::pin(crate::events::destinations::outcomes(&destinations, &id)).await;
            }
            view
        }
        Err(accepted) => queued_view(&id, &accepted.function, accepted.created_at_ms),
    };
    if let Some(version) = &view.version {
        view.version_number = registry.version_number(&view.function, version);
    }
    Ok(Json(view))
}

/// The log lines the function wrote through the host during its latest attempt (at most
/// 16 KiB in all).
#[utoipa::path(get, path = "/v1/invocations/{id}/logs", tag = "invocations",
    params(("id" = String, Path, description = "Invocation id (UUIDv7).", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The lines, oldest first.", body = InvocationLogs),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "Unknown invocation.", body = ErrorBody)))]
pub async fn get_logs(
    State(invoker): State<Invoker>,
    caller: Caller,
    id: InvocationId,
) -> Result<Json<InvocationLogs>, ApiError> {
    let (status, logs) = match find_invocation(&invoker, &caller, &id).await? {
        Ok(outcome) => (outcome.meta.status, outcome.meta.logs),
        Err(_) => (InvocationStatus::Queued, Vec::new()),
    };
    Ok(Json(InvocationLogs {
        invocation_id: id.to_string(),
        status,
        logs,
    }))
}

/// Raw output bytes of a succeeded invocation (or what a failed one streamed).
#[utoipa::path(get, path = "/v1/invocations/{id}/output", tag = "invocations",
    params(("id" = String, Path, description = "Invocation id (UUIDv7).", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The output; for an invocation that failed after streaming part of its output, what it streamed (`Squall-Status` names how it ended).", body = Binary, content_type = "application/octet-stream"),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "Unknown invocation.", body = ErrorBody),
        (status = 409, description = "Not finished, or ended without output.", body = ErrorBody)))]
pub async fn get_output(
    State(invoker): State<Invoker>,
    caller: Caller,
    id: InvocationId,
) -> Result<Response, ApiError> {
    match find_invocation(&invoker, &caller, &id).await? {
        Ok(outcome) if outcome.meta.status == InvocationStatus::Succeeded => {
            if let Some(stored) = &outcome.payload {
                return stored_output(&invoker.payloads, &outcome.meta.function, stored).await;
            }
            let mut r = (StatusCode::OK, outcome.body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
        // A failure after the function streamed: what it streamed, marked with its status.
        Ok(outcome) if outcome.meta.status.is_terminal() && outcome.payload.is_some() => {
            let stored = outcome.payload.as_ref().expect("checked");
            let mut r = stored_output(&invoker.payloads, &outcome.meta.function, stored).await?;
            if let Ok(status) = HeaderValue::from_str(outcome.meta.status.as_str()) {
                r.headers_mut().insert(h::STATUS, status);
            }
            Ok(r)
        }
        Ok(outcome) if outcome.meta.status.is_terminal() => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NoOutput,
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
        ErrorCode::NotFinished,
        format!(
            "invocation {id} is {}; it has no output yet",
            status.as_str()
        ),
    )
    .with("status", status.as_str())
}
