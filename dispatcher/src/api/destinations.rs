//! The destination dead-letter routes: list and replay failed deliveries.

use crate::core::names::FunctionName;
use crate::core::registry::RegistryError;
use crate::core::view::rfc3339;
use crate::events::destinations::{replay_letters, scan, DestinationLetter, Destinations};
use crate::http::error::ApiError;
use crate::http::extract::InvocationId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use squall_api::invocations::{
    DestinationDeadLetter, DestinationDeadLetterList, DestinationReplay, DestinationTarget,
};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::record::RecordDestinations;

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

/// Why a destination dead letter may not be delivered again, if it may not (pure). A letter
/// says where it was going, but anyone who could write to its stream could have written it:
/// so a replay goes only where the function's current spec (or, for a callback, the call
/// itself) sends events, and never to a subject Squall reserves (`$KV`, `$JS`, `$SYS`, `$O`,
/// any `$`-subject, `jobs.`, `results.`, every `_INBOX` prefix, …), whatever the letter says.
/// `current` is the function's destinations now (`None`: not deployed); `callback` the URL the
/// invocation's call gave, as recorded.
pub fn replay_refusal(
    letter_function: &str,
    target: DestinationTarget,
    destination: &str,
    current: Option<Option<&RecordDestinations>>,
    callback: Option<&str>,
) -> Option<String> {
    let is_url = destination.starts_with("http://") || destination.starts_with("https://");
    if !is_url {
        if let Err(error) = squall_broker::events::validate_subject_pattern(destination) {
            return Some(format!(
                "the letter's destination {destination:?} is not a subject Squall may publish to ({error})"
            ));
        }
        if destination.split('.').any(|t| t == "*" || t == ">") {
            return Some(format!(
                "the letter's destination {destination:?} is not a subject Squall may publish to (it has a wildcard)"
            ));
        }
    }
    let expected = match target {
        DestinationTarget::Callback => {
            if !is_url {
                return Some(format!(
                    "the letter's callback {destination:?} is not a URL, which every callback is"
                ));
            }
            callback
        }
        DestinationTarget::OnSuccess | DestinationTarget::OnFailure => {
            let Some(current) = current else {
                return Some(format!("function {letter_function} is not deployed"));
            };
            current.and_then(|d| d.for_outcome(target == DestinationTarget::OnSuccess))
        }
    };
    match expected {
        Some(expected) if expected == destination => None,
        Some(expected) => Some(format!(
            "the letter's {} destination {destination:?} is not the current one ({expected:?})",
            target.as_str()
        )),
        None => Some(format!(
            "function {letter_function} sends no {} events now, and the letter names {destination:?}",
            target.as_str()
        )),
    }
}

/// The callback URL invocation `id`'s call gave, from the deliveries bucket (its `callback`
/// field), if any.
async fn recorded_callback(
    destinations: &Destinations,
    id: &str,
) -> Result<Option<String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Recorded {
        callback: Option<String>,
    }
    let entry = destinations
        .service
        .topology
        .deliveries
        .get(id)
        .await
        .map_err(|e| ApiError::broker("cannot read the invocation's deliveries", e))?;
    Ok(entry
        .and_then(|value| serde_json::from_slice::<Recorded>(&value).ok())
        .and_then(|r| r.callback))
}

/// Refuses the replay of `letters` (one invocation's) unless every letter goes where the
/// function or the call sends events now: nothing is delivered when one is refused.
async fn check_letters(
    destinations: &Destinations,
    id: &str,
    letters: &[(u64, DestinationLetter)],
) -> Result<(), ApiError> {
    let callback = recorded_callback(destinations, id).await?;
    for (_, letter) in letters {
        let current = match FunctionName::parse(letter.function.clone()) {
            Ok(name) => match destinations.registry.load(&name).await {
                Ok(record) => Some(record.destinations),
                Err(RegistryError::NotDeployed(_)) => None,
                Err(error) => return Err(error.into()),
            },
            Err(_) => None,
        };
        let refusal = replay_refusal(
            &letter.function,
            letter.target,
            &letter.destination,
            current.as_ref().map(Option::as_ref),
            callback.as_deref(),
        );
        if let Some(reason) = refusal {
            tracing::warn!(message = "destination dead letter not replayed", invocation_id = %id,
                function = %letter.function, destination = %letter.destination, reason = %reason);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ReplayRefused,
                format!("not replayed, nothing was delivered: {reason}"),
            ));
        }
    }
    Ok(())
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
/// does not run again). A delivered one's dead letter is removed; a failed one's stays. Only to
/// the function's current destinations (or the call's callback URL), never to a subject Squall
/// reserves.
#[utoipa::path(post, path = "/v1/dlq/destinations/{id}/replay", tag = "dead letters",
    params(("id" = String, Path, description = "Invocation id (UUIDv7).", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "Every failed delivery tried again; `outcome` says how each ended.", body = DestinationReplay),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "No destination dead letter for this invocation.", body = ErrorBody),
        (status = 409, description = "A letter's destination is not where the function (or the call) sends events now, or a subject Squall reserves: nothing is delivered.", body = ErrorBody)))]
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
    check_letters(&destinations, id.as_str(), &letters).await?;
    let deliveries = replay_letters(&destinations, id.as_str(), letters).await?;
    Ok(Json(DestinationReplay {
        invocation_id: id.to_string(),
        deliveries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(on_success: &str) -> RecordDestinations {
        RecordDestinations {
            on_success: Some(on_success.into()),
            on_failure: None,
        }
    }

    #[test]
    fn a_replay_goes_only_where_the_function_sends_events_now() {
        let now = current("events.done");
        let ok = DestinationTarget::OnSuccess;
        assert_eq!(
            replay_refusal("f", ok, "events.done", Some(Some(&now)), None),
            None
        );
        assert!(replay_refusal("f", ok, "events.other", Some(Some(&now)), None).is_some());
        assert!(replay_refusal("f", ok, "events.done", Some(None), None).is_some());
        assert!(replay_refusal("f", ok, "events.done", None, None)
            .unwrap()
            .contains("not deployed"));
        assert!(replay_refusal(
            "f",
            DestinationTarget::OnFailure,
            "events.done",
            Some(Some(&now)),
            None
        )
        .is_some());
    }

    #[test]
    fn a_reserved_subject_is_refused_even_when_the_spec_names_it() {
        for subject in [
            "$KV.squall_keys.x",
            "$JS.API.STREAM.DELETE.JOBS",
            "$SYS.REQ.SERVER.PING",
            "$O.squall_artifacts.x",
            "$SRV.PING",
            "jobs.f",
            "results.f.x",
            "_INBOX.x",
            "_INBOX_dispatcher.squall-reply.d.x",
            "_INBOX_worker.x",
            "events.*",
        ] {
            let now = current(subject);
            let refusal = replay_refusal(
                "f",
                DestinationTarget::OnSuccess,
                subject,
                Some(Some(&now)),
                None,
            );
            assert!(
                refusal
                    .as_deref()
                    .is_some_and(|r| r.contains("not a subject")),
                "{subject}: {refusal:?}"
            );
        }
    }

    #[test]
    fn a_callback_replay_goes_only_to_the_calls_own_url() {
        let cb = DestinationTarget::Callback;
        let url = "https://example.com/hook";
        assert_eq!(replay_refusal("f", cb, url, None, Some(url)), None);
        assert!(replay_refusal("f", cb, "https://evil.example/x", None, Some(url)).is_some());
        assert!(replay_refusal("f", cb, url, None, None).is_some());
        assert!(replay_refusal("f", cb, "events.x", None, Some("events.x")).is_some());
    }
}
