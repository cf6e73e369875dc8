//! Request limits that hold on every route: header count and size. (Body sizes are limited per
//! route, names by their validators, and JSON nesting by serde_json's depth limit of 128.)

use crate::http::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use squall_api::ErrorCode;
use std::time::Duration;

/// Most request headers accepted.
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values accepted, in total.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Deepest JSON nesting accepted in request bodies (serde_json's recursion limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// Refuses requests with too many or too large headers (431).
pub async fn headers(request: Request, next: Next) -> Response {
    let count = request.headers().len();
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if count > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!(
                "{count} headers of {bytes} bytes; the limits are {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes"
            ),
        )
        .into_response();
    }
    next.run(request).await
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

/// The default most lines (invocations) of one batch.
pub const DEFAULT_MAX_BATCH_LINES: usize = 10_000;
/// The default largest batch body: 16 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// The highest line limit an operator may configure: a line's index must fit the 26 bits an
/// invocation id has for it (see `line_ids`), and far smaller batches already amortise a request.
pub const MAX_BATCH_LINES_LIMIT: usize = 1_000_000;
const _: () = assert!(MAX_BATCH_LINES_LIMIT < 1 << 26);
/// The highest body limit an operator may configure: 256 MiB.
pub const MAX_BATCH_BYTES_LIMIT: usize = 256 * 1024 * 1024;

/// The limits of one batch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most lines, each one invocation.
    pub max_lines: usize,
    /// Largest body, in bytes.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_lines: DEFAULT_MAX_BATCH_LINES,
            max_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}
