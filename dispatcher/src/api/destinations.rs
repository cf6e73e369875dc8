//! The destination dead-letter routes: list and replay failed deliveries.

use crate::core::view::rfc3339;
use crate::events::destinations::{replay_letters, scan, DestinationLetter, Destinations};
use crate::http::error::ApiError;
use crate::http::extract::InvocationId;
use axum::extract::State;
use axum::Json;
use squall_api::invocations::{
    DestinationDeadLetter, DestinationDeadLetterList, DestinationReplay,
};
use squall_api::ErrorBody;
use squall_api::ErrorCode;

fn letter_view(letter: &DestinationLetter) -> DestinationDeadLetter {
    DestinationDeadLetter {
        invocation_id: letter.invocation_id.clone(),
        function: letter.function.clone(),
        target: letter.target,
        destination: letter.destination.clone(),
        event_type: letter.attributes.kind.clone(),
        tries: letter.tries,
        error: letter.error.clone(),
        failed_at: rfc3339(letter.failed_at_ms),
    }
}

/// List destination dead letters (at most 1000, oldest first): deliveries of terminal events
/// that finally failed.
#[utoipa::path(get, path = "/v1/dlq/destinations", tag = "dead letters", responses(
    (status = 200, description = "Destination dead letters.", body = DestinationDeadLetterList)))]
pub async fn list(
    State(destinations): State<Destinations>,
) -> Result<Json<DestinationDeadLetterList>, ApiError> {
    let letters = scan(&destinations, "dlq-destinations.>".into()).await?;
    Ok(Json(DestinationDeadLetterList {
        dead_letters: letters.iter().map(|(_, l)| letter_view(l)).collect(),
    }))
}

/// Deliver an invocation's failed destination events again (the event, not the function: it
/// does not run again). A delivered one's dead letter is removed; a failed one's stays.
#[utoipa::path(post, path = "/v1/dlq/destinations/{id}/replay", tag = "dead letters",
    params(("id" = String, Path, description = "Invocation id (UUIDv7).", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "Every failed delivery tried again; `outcome` says how each ended.", body = DestinationReplay),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "No destination dead letter for this invocation.", body = ErrorBody)))]
pub async fn replay(
    State(destinations): State<Destinations>,
    id: InvocationId,
) -> Result<Json<DestinationReplay>, ApiError> {
    let letters = scan(
        &destinations,
        format!("dlq-destinations.*.{}.*", id.as_str()),
    )
    .await?;
    if letters.is_empty() {
        return Err(ApiError::not_found(
            ErrorCode::DestinationDeadLetterNotFound,
            format!("no destination dead letter for invocation {}", id.as_str()),
        ));
    }
    let deliveries = replay_letters(&destinations, id.as_str(), letters).await?;
    Ok(Json(DestinationReplay {
        invocation_id: id.to_string(),
        deliveries,
    }))
}
