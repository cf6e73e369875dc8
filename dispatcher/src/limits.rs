//! Request limits that hold on every route: header count and size. (Body sizes are limited per
//! route, names by their validators, and JSON nesting by serde_json's depth limit of 128.)

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
            "headers_too_large",
            format!(
                "{count} headers of {bytes} bytes; the limits are {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes"
            ),
        )
        .into_response();
    }
    next.run(request).await
}
