//! HTTP answers more than one front gives: the 202 of an accepted invocation.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use squall_api::invocations::Accepted as AcceptedView;
use squall_broker::{headers as h, InvocationStatus};

/// The 202 of an accepted invocation, with its `Location`.
pub fn accepted(id: &str, status: InvocationStatus, replay_of: Option<&str>) -> Response {
    let location = format!("/v1/invocations/{id}");
    let view = AcceptedView {
        invocation_id: id.to_string(),
        status,
        location: location.clone(),
        replay_of: replay_of.map(str::to_string),
    };
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(h::INVOCATION_ID, value);
    }
    response
}
