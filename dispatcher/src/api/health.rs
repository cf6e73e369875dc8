//! The open routes: the probes, metrics, the OpenAPI document, and the answer to unknown routes.

use crate::core::broker::Broker;
use crate::core::keys::KeyRing;
use crate::core::metrics::SharedMetrics;
use crate::core::registry::Registry;
use crate::http::error::ApiError;
use crate::state::OpenApiDocument;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use squall_api::invocations::Health;
use squall_api::ErrorBody;
use squall_api::ErrorCode;

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "The process is up.", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: connected to NATS with the topology ensured.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Ready.", body = Health),
    (status = 503, description = "Not connected to NATS.", body = ErrorBody)))]
pub async fn readyz(State(broker): State<Broker>) -> Result<Json<Health>, ApiError> {
    match broker.client.connection_state() {
        async_nats::connection::State::Connected => Ok(Json(Health {
            status: "ready".into(),
        })),
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReady,
            format!("NATS connection is {other}"),
        )),
    }
}

/// Prometheus metrics of this dispatcher, and per-function backlog and in-flight jobs.
#[utoipa::path(get, path = "/metrics", tag = "probes", responses(
    (status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain")))]
pub async fn metrics(
    State(SharedMetrics(metrics)): State<SharedMetrics>,
    State(registry): State<Registry>,
    State(broker): State<Broker>,
) -> Response {
    (
        [(header::CONTENT_TYPE, crate::core::metrics::CONTENT_TYPE)],
        crate::core::metrics::scrape(&metrics, &registry, &broker).await,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "probes", responses(
    (status = 200, description = "The OpenAPI document.", body = Object)))]
pub async fn openapi(State(OpenApiDocument(document)): State<OpenApiDocument>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

/// A route nobody declared: 404 to a caller with a valid key (or when keys are off), 401 to
/// anyone else, who learns nothing about which routes exist.
pub async fn not_found(State(KeyRing(keys)): State<KeyRing>, request: Request) -> Response {
    if let Err(refused) =
        crate::http::auth::check(&keys, &request, crate::http::auth::Access::AnyKey)
    {
        return refused.into_response();
    }
    ApiError::not_found(
        ErrorCode::RouteNotFound,
        "no such route; see GET /v1/openapi.json",
    )
    .into_response()
}
