//! Request and response bodies above the inline limit: a large request body is streamed into
//! the function's payload bucket, a stored output is streamed out of it.

use crate::core::payloads::Payloads;
use crate::http::error::ApiError;
use crate::http::limits::read_limited;
use axum::body::{Body, BodyDataStream};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use squall_api::ErrorCode;
use squall_broker::payloads::{PayloadError, PayloadRef};

/// A request body read up to the inline limit.
pub enum Head {
    /// The whole body: it travels inside the job.
    Inline(Bytes),
    /// More than the inline limit: what was read, and the rest still to come.
    Large { first: Bytes, rest: BodyDataStream },
}

/// A request's declared `Content-Length`, if it has a readable one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads `body` up to the inline limit; a longer body is left streaming (`Head::Large`). A
/// `declared` length (`content_length`) above the largest payload is refused at once.
pub async fn read_head(
    payloads: &Payloads,
    declared: Option<u64>,
    body: Body,
) -> Result<Head, ApiError> {
    let max = payloads.max();
    let inline = payloads.inline_limit();
    if declared.is_some_and(|n| n > max as u64) {
        // Drained (within bounds) so the client still sending hears the 413.
        let _ = read_limited(body, 0).await;
        return Err(too_large(max));
    }
    if inline >= max || declared.is_some_and(|n| n <= inline as u64) {
        return read_limited(body, inline.min(max))
            .await
            .map(Head::Inline)
            .map_err(|_| too_large(max));
    }
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreadable(&e.to_string()))?;
        buffer.extend_from_slice(&chunk);
        if buffer.len() > inline {
            return Ok(Head::Large {
                first: buffer.freeze(),
                rest: stream,
            });
        }
    }
    Ok(Head::Inline(buffer.freeze()))
}

impl Head {
    /// The inline body, or an error for a front that takes only inline bodies (CloudEvents in
    /// structured or batch mode).
    pub fn inline(self, what: &str, limit: usize) -> Result<Bytes, ApiError> {
        match self {
            Head::Inline(bytes) => Ok(bytes),
            Head::Large { .. } => Err(ApiError::too_large(format!(
                "{what} must be at most {limit} bytes"
            ))),
        }
    }

    /// Stores a large body in `function`'s payload bucket (the function exists: the caller
    /// looked it up). Returns the job's inline body (empty when stored) and the reference.
    pub async fn store(
        self,
        payloads: &Payloads,
        function: &str,
    ) -> Result<(Bytes, Option<PayloadRef>), ApiError> {
        match self {
            Head::Inline(bytes) => Ok((bytes, None)),
            Head::Large { first, rest } => {
                let mut reader = tokio_util::io::StreamReader::new(
                    rest.map_err(|e| std::io::Error::other(e.to_string())),
                );
                let stored = payloads
                    .upload(function, first, &mut reader)
                    .await
                    .map_err(|e| input_error(e, payloads.max()))?;
                Ok((Bytes::new(), Some(stored)))
            }
        }
    }
}

/// Stores `bytes`, read whole by a front that needed all of them, when they are above the
/// inline limit; as `Head::store`.
pub async fn store_read(
    payloads: &Payloads,
    function: &str,
    bytes: Bytes,
) -> Result<(Bytes, Option<PayloadRef>), ApiError> {
    if bytes.len() <= payloads.inline_limit() {
        return Ok((bytes, None));
    }
    let stored = payloads
        .upload(function, bytes, &mut tokio::io::empty())
        .await
        .map_err(|e| input_error(e, payloads.max()))?;
    Ok((Bytes::new(), Some(stored)))
}

/// The job header that carries a stored input's reference.
pub fn reference_header(stored: &PayloadRef) -> (String, String) {
    (
        squall_broker::headers::PAYLOAD.to_string(),
        stored.to_header(),
    )
}

fn too_large(max: usize) -> ApiError {
    ApiError::too_large(format!("payload is larger than the limit of {max} bytes"))
}

fn unreadable(error: &str) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        format!("the request body could not be read: {error}"),
    )
}

fn input_error(error: PayloadError, max: usize) -> ApiError {
    match error {
        PayloadError::TooLarge { .. } => too_large(max),
        PayloadError::Read(e) => unreadable(&e),
        PayloadError::Missing(_) | PayloadError::Broker(_) => {
            ApiError::broker("cannot store the payload", error)
        }
    }
}

/// The answer for a stored output: its bytes streamed from the payload bucket. A stored output
/// that is gone (expired, or its function deleted) is a 409 `no_output` that says so.
pub async fn stored_output(
    payloads: &Payloads,
    function: &str,
    reference: &PayloadRef,
) -> Result<Response, ApiError> {
    let stream =
        tokio_util::io::ReaderStream::new(open_output(payloads, function, reference).await?);
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(reference.size));
    Ok(response)
}

/// A stored output opened to stream it; gone (expired, or its function deleted) is a 409
/// `no_output` that says so.
pub async fn open_output(
    payloads: &Payloads,
    function: &str,
    reference: &PayloadRef,
) -> Result<async_nats::jetstream::object_store::Object, ApiError> {
    payloads
        .open(function, reference)
        .await
        .map_err(|e| output_error(e, &reference.object))
}

/// A stored output read whole (for fronts that must parse it: web functions).
pub async fn read_output(
    payloads: &Payloads,
    function: &str,
    reference: &PayloadRef,
) -> Result<Bytes, ApiError> {
    payloads
        .read(function, reference)
        .await
        .map_err(|e| output_error(e, &reference.object))
}

fn output_error(error: PayloadError, object: &str) -> ApiError {
    match error {
        PayloadError::Missing(_) => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NoOutput,
            format!("the output ({object}) is no longer stored"),
        ),
        other => ApiError::broker("cannot read the stored output", other),
    }
}
