//! Destinations and callbacks: after an invocation's terminal state, the CloudEvent that
//! describes it goes to the function's `on_success` / `on_failure` destination and to the call's
//! `X-Callback-Url`. A durable consumer on RESULTS shared by every dispatcher (filtered to the
//! functions that need it) carries each terminal result to one of them; delivery is at least
//! once, never touches the invocation, and a delivery that finally fails is recorded on the
//! invocation, counted, and kept as a destination dead letter that can be replayed.
//!
//! URL deliveries go only where the egress guard allows (`egress`), are signed the Standard
//! Webhooks way (`webhook`), and share the dispatcher fairly (`pacing`): a few tries in flight
//! per host, and the pause between tries spent outside any slot.

use crate::core::broker::Broker;
use crate::core::broker::BrokerError;
use crate::core::cloudevents::Attributes;
use crate::core::metrics::Metrics;
use crate::core::registry::Registry;
use crate::core::view::rfc3339;
use crate::events::egress::{self, Allowlist, Refusal};
use crate::events::pacing::{self, HostSlots, Step, TryResult};
use crate::events::webhook::{self, Secret, Secrets};
use async_nats::jetstream::{self, AckKind};
use base64::Engine as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use squall_api::invocations::{
    CloudEventAttributes, DeliveryOutcome, DestinationDelivery, DestinationTarget,
};
use squall_broker::names::destination_dlq_subject;
use squall_broker::time::now_ms;
use squall_broker::topology::{self, DestinationTopology};
use squall_broker::{headers as h, FunctionRecord, InvocationStatus, ResultMeta};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The CloudEvents `source` of Squall's own events: `/squall/functions/<name>`.
pub const EVENT_SOURCE_PREFIX: &str = "/squall/functions/";
/// The `type` of an invocation's terminal event: `io.squall.invocation.<status>`.
pub const EVENT_TYPE_PREFIX: &str = "io.squall.invocation.";
/// Deliveries in flight at once in one dispatcher.
const MAX_IN_FLIGHT: usize = 64;

/// Why a destination's record, filter or dead letter could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A spec's subject destination breaks the subject rule.
    #[error("{0}")]
    InvalidSpec(String),
    #[error("cannot keep the destination dead letter: {0}")]
    Publish(#[source] squall_broker::publish::PublishError),
    /// A URL the egress guard refuses, as the caller gave it: what names it
    /// (`X-Callback-Url`, `destinations.on_success`), the URL and why.
    #[error("{what} {url:?} {refusal}{}", allow_hint(refusal))]
    Refused {
        what: String,
        url: String,
        refusal: Refusal,
    },
}

/// What a refused address's message adds: how it can be opened on purpose.
fn allow_hint(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Address { .. } => "; an operator can allow it with --egress-allow",
        Refusal::Scheme | Refusal::NoHost => "",
    }
}

/// How deliveries to URLs are tried, where they may go and how they are signed.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How long a URL delivery keeps trying (with backoff) before it fails.
    pub retry_for: Duration,
    /// The longest one POST may take.
    pub try_timeout: Duration,
    /// The longest connecting (TCP and TLS) may take, within `try_timeout`.
    pub connect_timeout: Duration,
    /// The first pause between tries; it doubles up to 5 s.
    pub first_backoff: Duration,
    /// POSTs in flight at once to one host from this dispatcher.
    pub per_host: usize,
    /// Internal hosts and address blocks the operator opened on purpose.
    pub allow: Allowlist,
    /// The operator's signing secrets, the current one first.
    pub secrets: Secrets,
}

impl DeliveryConfig {
    /// How long a delivery keeps trying and how its pauses start.
    pub fn budget(&self) -> pacing::Budget {
        pacing::Budget {
            retry_for: self.retry_for,
            first_backoff: self.first_backoff,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_for: Duration::from_secs(60),
            try_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            first_backoff: Duration::from_millis(250),
            per_host: 4,
            allow: Allowlist::default(),
            secrets: Secrets::default(),
        }
    }
}

/// What delivering needs: the service below, the broker, the registry (for each function's
/// destinations and secret), the metrics and how URL deliveries are tried.
#[derive(Clone)]
pub struct Destinations {
    pub service: Arc<Service>,
    pub broker: Broker,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub delivery: DeliveryConfig,
}

/// The dispatcher's part of destinations: the buckets and stream, the HTTP client, the
/// hosts' delivery slots, and the functions it knows the consumer's filter to hold.
pub struct Service {
    pub topology: DestinationTopology,
    http: reqwest::Client,
    slots: HostSlots,
    filtered: Mutex<BTreeSet<String>>,
}

impl Service {
    pub fn new(topology: DestinationTopology, config: &DeliveryConfig) -> Service {
        let resolver = egress::GuardedResolver::new(Arc::new(config.allow.clone()));
        Service {
            topology,
            // No redirects and no proxy: the address dialled is always one the guard judged.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(config.connect_timeout.min(config.try_timeout))
                .dns_resolver(Arc::new(resolver))
                .build()
                .expect("an HTTP client with default TLS settings builds"),
            slots: HostSlots::new(config.per_host),
            filtered: Mutex::new(BTreeSet::new()),
        }
    }
}

/// Checks a URL where it is given (a deploy's destination, an invoke's `X-Callback-Url`):
/// `what` names it in the refusal.
pub async fn check_url(
    state: &Destinations,
    what: &str,
    url: &str,
) -> Result<(), DestinationError> {
    egress::check(url, &state.delivery.allow)
        .await
        .map(|_| ())
        .map_err(|refusal| DestinationError::Refused {
            what: what.to_string(),
            url: url.to_string(),
            refusal,
        })
}

/// Checks the URL destinations of a spec with the egress guard.
pub async fn check_spec_urls(
    state: &Destinations,
    spec: &squall_broker::FunctionSpec,
) -> Result<(), DestinationError> {
    let Some(destinations) = &spec.destinations else {
        return Ok(());
    };
    for (field, target) in [
        ("on_success", &destinations.on_success),
        ("on_failure", &destinations.on_failure),
    ] {
        if let Some(url) = target.as_deref().filter(|t| is_url(t)) {
            check_url(state, &format!("destinations.{field}:"), url).await?;
        }
    }
    Ok(())
}

/// The keys a function's deliveries are signed with, the current one first; its record keeps
/// the function's own random key.
pub fn signing_keys(state: &Destinations, record: Option<&FunctionRecord>) -> Vec<Secret> {
    record
        .map(|r| state.delivery.secrets.function_keys(&r.destination_secret))
        .unwrap_or_default()
}

/// What the deliveries bucket keeps per invocation: its call's callback URL, every delivery
/// that ended, and the ones still being tried.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeliveriesRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback: Option<String>,
    #[serde(default)]
    deliveries: Vec<DestinationDelivery>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<Pending>,
}

/// A URL delivery between tries: how many it had, since when it is due, its last error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    target: DestinationTarget,
    event_type: String,
    tries: u32,
    since_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A destination dead letter (JSON): where the event was going, why it failed, and the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DestinationLetter {
    pub(crate) invocation_id: String,
    pub(crate) function: String,
    pub(crate) target: DestinationTarget,
    pub(crate) destination: String,
    pub(crate) tries: u32,
    pub(crate) error: String,
    pub(crate) failed_at_ms: u64,
    pub(crate) attributes: Attributes,
    data_base64: String,
}

/// An event on its way out: attributes and data (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct OutEvent {
    pub attributes: Attributes,
    pub data: Vec<u8>,
}

/// The CloudEvent of a terminal result: `io.squall.invocation.<status>` from
/// `/squall/functions/<name>`, its data the invocation's id, function, version, status,
/// attempts, output or error, and timings.
/// An output above the inline limit (`stored_bytes`) is stored apart: the event then carries
/// its size as `output_stored_bytes`, and the output is read at `/v1/invocations/{id}/output`.
pub fn invocation_event(meta: &ResultMeta, body: &[u8], stored_bytes: Option<u64>) -> OutEvent {
    let status = meta.status.as_str();
    let mut data = serde_json::json!({
        "invocation_id": meta.invocation_id,
        "function": meta.function,
        "version": meta.version,
        "status": status,
        "attempts": meta.attempt,
        "created_at": rfc3339(meta.created_at_ms),
        "started_at": rfc3339(meta.started_at_ms),
        "finished_at": rfc3339(meta.finished_at_ms),
        "duration_ms": meta.duration_us as f64 / 1000.0,
    });
    if let Some(size) = stored_bytes.filter(|_| meta.status == InvocationStatus::Succeeded) {
        data["output_stored_bytes"] = size.into();
    } else if meta.status == InvocationStatus::Succeeded {
        match std::str::from_utf8(body) {
            Ok(text) => data["output"] = text.into(),
            Err(_) => {
                data["output_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into()
            }
        }
    } else {
        data["error"] = serde_json::json!({
            "kind": meta.error_kind.map(|k| k.as_str()).unwrap_or(status),
            "message": String::from_utf8_lossy(body),
        });
    }
    OutEvent {
        attributes: Attributes {
            context: CloudEventAttributes {
                specversion: crate::core::cloudevents::SPEC_VERSION.into(),
                id: format!("{}:{status}", meta.invocation_id),
                source: format!("{EVENT_SOURCE_PREFIX}{}", meta.function),
                kind: format!("{EVENT_TYPE_PREFIX}{status}"),
                subject: Some(meta.invocation_id.clone()),
                time: Some(rfc3339(meta.finished_at_ms)),
                datacontenttype: Some("application/json".into()),
                dataschema: None,
            },
            extensions: Default::default(),
        },
        data: data.to_string().into_bytes(),
    }
}

/// Where the event of a terminal `status` goes: the spec's destination for it (`succeeded` →
/// `on_success`, every other terminal state → `on_failure`) and the call's callback.
pub fn targets(
    record: Option<&FunctionRecord>,
    status: InvocationStatus,
    callback: Option<&str>,
) -> Vec<(DestinationTarget, String)> {
    let succeeded = status == InvocationStatus::Succeeded;
    let mut targets = Vec::new();
    if let Some(destination) = record
        .and_then(|r| r.destinations.as_ref())
        .and_then(|d| d.for_outcome(succeeded))
    {
        let target = match succeeded {
            true => DestinationTarget::OnSuccess,
            false => DestinationTarget::OnFailure,
        };
        targets.push((target, destination.to_string()));
    }
    if let Some(url) = callback {
        targets.push((DestinationTarget::Callback, url.to_string()));
    }
    targets
}

/// Whether a destination is a URL (else it is a NATS subject).
fn is_url(destination: &str) -> bool {
    destination.starts_with("http://") || destination.starts_with("https://")
}

/// Checks the subject destinations of a spec against the broker contract's subject rule (a
/// literal subject outside what Squall reserves); URLs were checked with the spec.
pub fn check_subjects(spec: &squall_broker::FunctionSpec) -> Result<(), DestinationError> {
    let Some(destinations) = &spec.destinations else {
        return Ok(());
    };
    for (field, target) in [
        ("on_success", &destinations.on_success),
        ("on_failure", &destinations.on_failure),
    ] {
        let Some(subject) = target.as_deref().filter(|t| !is_url(t)) else {
            continue;
        };
        if let Err(e) = squall_broker::events::validate_subject_pattern(subject) {
            return Err(DestinationError::InvalidSpec(format!(
                "destinations.{field}: {e}"
            )));
        }
    }
    Ok(())
}

/// A new key for a function's record: 32 random bytes in hex (the function signs with it, or
/// with keys derived from it and the operator's secrets: `webhook::Secrets::function_keys`).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random generator works");
    hex::encode(bytes)
}

/// Remembers a call's callback URL and makes sure the destinations consumer follows its
/// function's results, before its job is published.
pub async fn register_callback(
    state: &Destinations,
    function: &str,
    id: &str,
    url: &str,
) -> Result<(), DestinationError> {
    let service = &state.service;
    let record = DeliveriesRecord {
        callback: Some(url.to_string()),
        ..Default::default()
    };
    let json = serde_json::to_vec(&record).expect("a deliveries record encodes");
    service
        .topology
        .deliveries
        .put(id, json.into())
        .await
        .map_err(|e| BrokerError::new("cannot record the callback", e))?;
    service
        .topology
        .callbacks
        .put(function, now_ms().to_string().into())
        .await
        .map_err(|e| BrokerError::new("cannot record the callback", e))?;
    let known = service
        .filtered
        .lock()
        .expect("filter lock")
        .contains(function);
    if !known {
        sync_filter(state).await?;
    }
    Ok(())
}

/// The functions the destinations consumer must follow, from the buckets: those whose record
/// names destinations and those with a recent callback.
async fn wanted_functions(state: &Destinations) -> Result<BTreeSet<String>, DestinationError> {
    let broker = |e: &dyn std::fmt::Display| {
        BrokerError::new(
            "cannot read which functions have destinations",
            e.to_string(),
        )
    };
    let mut wanted = BTreeSet::new();
    let mut names = state
        .broker
        .topology
        .registry
        .keys()
        .await
        .map_err(|e| broker(&e))?;
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| broker(&e))?;
        let Some(value) = state
            .broker
            .topology
            .registry
            .get(&name)
            .await
            .map_err(|e| broker(&e))?
        else {
            continue;
        };
        if let Ok(record) = FunctionRecord::decode(&value) {
            if record.destinations.is_some() {
                wanted.insert(record.name);
            }
        }
    }
    let mut callbacks = state
        .service
        .topology
        .callbacks
        .keys()
        .await
        .map_err(|e| broker(&e))?;
    while let Some(name) = callbacks.next().await {
        wanted.insert(name.map_err(|e| broker(&e))?);
    }
    Ok(wanted)
}

/// Sets the destinations consumer's filter to the functions that need it. Dispatchers may do
/// this at once: each writes what the buckets say, then reads them and the consumer again
/// until both agree, so the last one to finish leaves the whole set in place.
pub async fn sync_filter(state: &Destinations) -> Result<(), DestinationError> {
    let results = &state.broker.topology.results;
    for _ in 0..5 {
        let wanted = wanted_functions(state).await?;
        let filters = topology::destinations_filter(wanted.iter().cloned());
        topology::set_destinations_filter(results, filters.clone())
            .await
            .map_err(|e| BrokerError::new("cannot set the destinations consumer's filter", e))?;
        let again = wanted_functions(state).await?;
        let now = topology::destinations_filter_now(results).await;
        if again == wanted && now.as_ref() == Some(&filters) {
            *state.service.filtered.lock().expect("filter lock") = wanted;
            return Ok(());
        }
    }
    Err(BrokerError::new(
        "cannot set the destinations consumer's filter",
        "other dispatchers kept changing it; retry",
    )
    .into())
}

/// Delivers terminal events until the process ends.
pub async fn run(state: Destinations) {
    loop {
        if let Err(error) = serve(&state).await {
            tracing::warn!(message = "the destinations loop failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve(state: &Destinations) -> anyhow::Result<()> {
    if let Err(error) = sync_filter(state).await {
        tracing::warn!(message = "cannot set the destinations consumer's filter", %error);
    }
    let consumer = topology::destinations_consumer(&state.broker.topology.results).await?;
    let mut messages = consumer.messages().await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let permit = slots.clone().acquire_owned().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let ack = match handle(&state, &message).await {
                Ok(Next::Done) => AckKind::Ack,
                // The pause before a delivery's next try is spent with the result back in
                // JetStream, not in a slot.
                Ok(Next::Later(pause)) => AckKind::Nak(Some(pause)),
                Err(error) => {
                    tracing::warn!(message = "cannot finish a terminal event's deliveries; will retry",
                        subject = %message.subject, %error);
                    AckKind::Nak(Some(Duration::from_secs(2)))
                }
            };
            let _ = message.ack_with(ack).await;
            drop(permit);
        });
    }
    Ok(())
}

/// Reads an invocation's deliveries record.
async fn read_record(state: &Destinations, id: &str) -> Result<DeliveriesRecord, DestinationError> {
    let value = state
        .service
        .topology
        .deliveries
        .get(id)
        .await
        .map_err(|e| BrokerError::new("cannot read the invocation's deliveries", e))?;
    Ok(value
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default())
}

/// Adds `outcomes` to an invocation's deliveries record and, with `pending`, replaces the
/// deliveries of `event_type` still being tried.
async fn append_outcomes(
    state: &Destinations,
    id: &str,
    outcomes: &[DestinationDelivery],
    pending: Option<(&str, Vec<Pending>)>,
) -> Result<(), DestinationError> {
    let mut record = read_record(state, id).await?;
    record.deliveries.extend_from_slice(outcomes);
    if let Some((event_type, pending)) = pending {
        record.pending.retain(|p| p.event_type != event_type);
        record.pending.extend(pending);
    }
    let json = serde_json::to_vec(&record).expect("a deliveries record encodes");
    state
        .service
        .topology
        .deliveries
        .put(id, json.into())
        .await
        .map_err(|e| BrokerError::new("cannot record the deliveries", e))?;
    Ok(())
}

/// The deliveries of invocation `id` that ended, for its view.
pub async fn outcomes(state: &Destinations, id: &str) -> Vec<DestinationDelivery> {
    match read_record(state, id).await {
        Ok(record) => record.deliveries,
        Err(error) => {
            tracing::warn!(message = "cannot read an invocation's deliveries", invocation_id = %id, %error);
            Vec::new()
        }
    }
}

/// What to do with a terminal result once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Every delivery ended: acknowledge it.
    Done,
    /// Some delivery is tried again after this pause: hand the result back until then.
    Later(Duration),
}

/// One delivery's part of a handling: it ended, or waits for another handling.
enum Part {
    Ended(DestinationDelivery),
    Waits(Pending, Duration),
}

/// One terminal result: make one try of every delivery not ended yet (a URL delivery only if
/// its host has a free slot), keep the ones that finally failed as dead letters, record every
/// outcome and what is still being tried. An error leaves the result for a retry.
async fn handle(
    state: &Destinations,
    message: &jetstream::Message,
) -> Result<Next, DestinationError> {
    let Some(headers) = message.headers.as_ref() else {
        return Ok(Next::Done);
    };
    let Ok(meta) = ResultMeta::from_headers(headers) else {
        return Ok(Next::Done);
    };
    if !meta.status.is_terminal() {
        return Ok(Next::Done);
    }
    let record = match state.registry.get(&meta.function) {
        Some(record) => Some(record),
        None => match crate::core::names::FunctionName::parse(meta.function.clone()) {
            Ok(name) => state.registry.load(&name).await.ok().map(Arc::new),
            Err(_) => None,
        },
    };
    let stored = read_record(state, &meta.invocation_id).await?;
    let stored_output = squall_broker::payloads::PayloadRef::from_headers(message.headers.as_ref());
    let event = invocation_event(&meta, &message.payload, stored_output.map(|s| s.size));
    let kind = event.attributes.kind.as_str();
    let pending: Vec<_> = targets(record.as_deref(), meta.status, stored.callback.as_deref())
        .into_iter()
        // A redelivered result does not deliver again what already ended.
        .filter(|(target, _)| {
            !stored
                .deliveries
                .iter()
                .any(|d| d.target == *target && d.event_type == kind)
        })
        .collect();
    if pending.is_empty() {
        return Ok(Next::Done);
    }
    // A slow try must not let JetStream hand the result to another dispatcher.
    let progress = {
        let message = message.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(topology::DESTINATIONS_ACK_WAIT / 3);
            every.tick().await;
            loop {
                every.tick().await;
                let _ = message.ack_with(AckKind::Progress).await;
            }
        })
    };
    let keys = signing_keys(state, record.as_deref());
    let now = now_ms();
    let parts = futures::future::join_all(pending.iter().map(|(target, destination)| {
        let before = stored
            .pending
            .iter()
            .find(|p| p.target == *target && p.event_type == kind)
            .cloned()
            .unwrap_or(Pending {
                target: *target,
                event_type: kind.to_string(),
                tries: 0,
                since_ms: now,
                error: None,
            });
        step(state, &keys, destination, &event, before)
    }))
    .await;
    progress.abort();
    let mut deliveries = Vec::new();
    let mut waiting = Vec::new();
    let mut next = Next::Done;
    for part in parts {
        match part {
            Part::Ended(delivery) => deliveries.push(delivery),
            Part::Waits(pending, pause) => {
                waiting.push(pending);
                next = match next {
                    Next::Later(p) if p <= pause => next,
                    _ => Next::Later(pause),
                };
            }
        }
    }
    for delivery in &deliveries {
        if delivery.outcome == DeliveryOutcome::Failed {
            dead_letter(state, &meta, delivery, &event).await?;
        }
    }
    // A deferral that changed nothing needs no write.
    let unchanged = deliveries.is_empty()
        && waiting
            .iter()
            .all(|w| stored.pending.iter().any(|p| p == w));
    if !unchanged {
        append_outcomes(
            state,
            &meta.invocation_id,
            &deliveries,
            Some((kind, waiting)),
        )
        .await?;
    }
    for delivery in &deliveries {
        state.metrics.delivery(
            &meta.function,
            delivery.target.as_str(),
            delivery.outcome.as_str(),
        );
        if delivery.outcome == DeliveryOutcome::Failed {
            tracing::warn!(message = "a destination delivery failed; kept as a destination dead letter",
                function = %meta.function, invocation_id = %meta.invocation_id,
                target = delivery.target.as_str(), destination = %delivery.destination,
                error = delivery.error.as_deref().unwrap_or_default());
        }
    }
    Ok(next)
}

/// This handling's part of one delivery: a subject gets its one publish; a URL one try if its
/// host has a free slot, else it waits (both within the retry budget).
async fn step(
    state: &Destinations,
    keys: &[Secret],
    destination: &str,
    event: &OutEvent,
    mut pending: Pending,
) -> Part {
    let target = pending.target;
    if !is_url(destination) {
        let result = publish(state, target, destination, event).await;
        return Part::Ended(ended(target, destination, event, 1, result, false));
    }
    let config = &state.delivery;
    let host = host_key(destination);
    let step = match state.service.slots.try_take(&host) {
        Some(slot) => {
            let result = try_post(state, keys, destination, event).await;
            drop(slot);
            pending.tries += 1;
            if let TryResult::Retryable(error) = &result {
                pending.error = Some(error.clone());
            }
            pacing::after_try(
                result,
                pending.tries,
                pending.since_ms,
                now_ms(),
                config.budget(),
            )
        }
        None => {
            let busy = format!(
                "not tried: {host} had {} deliveries in flight for the whole retry budget",
                state.service.slots.per_host()
            );
            let jitter = pacing::jitter(config.first_backoff);
            pacing::after_deferral(
                pending.since_ms,
                now_ms(),
                pending.error.as_deref(),
                &busy,
                jitter,
                config.budget(),
            )
        }
    };
    match step {
        Step::Ended(result) => Part::Ended(ended(
            target,
            destination,
            event,
            pending.tries,
            result,
            false,
        )),
        Step::Again(pause) => Part::Waits(pending, pause),
    }
}

/// The receiver whose slots a URL delivery takes: its host (lower case) and port, so two
/// services on one host do not wait on each other; the whole URL when it has no host.
fn host_key(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            Some(format!("{host}:{}", u.port_or_known_default()?))
        })
        .unwrap_or_else(|| url.to_string())
}

/// The record of a delivery that ended.
fn ended(
    target: DestinationTarget,
    destination: &str,
    event: &OutEvent,
    tries: u32,
    result: Result<(), String>,
    replayed: bool,
) -> DestinationDelivery {
    DestinationDelivery {
        target,
        destination: destination.to_string(),
        outcome: match result {
            Ok(()) => DeliveryOutcome::Delivered,
            Err(_) => DeliveryOutcome::Failed,
        },
        tries,
        error: result.err(),
        event_type: event.attributes.kind.clone(),
        finished_at: rfc3339(now_ms()),
        replayed,
    }
}

/// Publishes `event` in binary mode (`ce-` headers, the NATS binding's draft): with a
/// JetStream acknowledgement when a stream captures the subject (a trigger's subject chains
/// functions this way), as a plain publish otherwise.
async fn publish(
    state: &Destinations,
    target: DestinationTarget,
    subject: &str,
    event: &OutEvent,
) -> Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in event.attributes.binary_headers() {
        headers.insert(name.as_str(), value.as_str());
    }
    headers.insert("content-type", "application/json");
    let msg_id = format!("{}:{}", event.attributes.id, target.as_str());
    headers.insert(h::NATS_MSG_ID, msg_id.as_str());
    let captured = state
        .broker
        .topology
        .jetstream
        .stream_by_subject(subject)
        .await
        .is_ok();
    if captured {
        squall_broker::publish::publish_acked(
            &state.broker.topology.jetstream,
            subject,
            headers,
            event.data.clone().into(),
            &state.broker.publish,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    } else {
        state
            .broker
            .client
            .publish_with_headers(subject.to_string(), headers, event.data.clone().into())
            .await
            .map_err(|e| e.to_string())?;
        state.broker.client.flush().await.map_err(|e| e.to_string())
    }
}

/// One POST of `event` in binary mode, signed the Standard Webhooks way with `keys`: its
/// address judged by the egress guard first (a written one here, a resolved one by the
/// client's resolver), no redirect followed.
async fn try_post(state: &Destinations, keys: &[Secret], url: &str, event: &OutEvent) -> TryResult {
    let config = &state.delivery;
    // Refused before anything is sent, so the outcome says nothing about what listens there.
    let refused = |refusal: &Refusal| TryResult::Permanent(format!("{url} is refused: {refusal}"));
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(_) => return refused(&Refusal::NoHost),
    };
    if let Err(refusal) = egress::check_literal(&parsed, &config.allow) {
        return refused(&refusal);
    }
    let mut request = state
        .service
        .http
        .post(parsed)
        .timeout(config.try_timeout)
        .header("content-type", "application/json")
        .body(event.data.clone());
    for (name, value) in event.attributes.binary_headers() {
        request = request.header(name, value);
    }
    let id = &event.attributes.id;
    let timestamp = now_ms() / 1000;
    request = request
        .header(webhook::ID_HEADER, id)
        .header(webhook::TIMESTAMP_HEADER, timestamp.to_string());
    if !keys.is_empty() {
        request = request.header(
            webhook::SIGNATURE_HEADER,
            webhook::sign(keys, id, timestamp, &event.data),
        );
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => TryResult::Delivered,
        Ok(response) => {
            let status = response.status();
            let error = format!("{url} answered {status}");
            match status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            {
                true => TryResult::Permanent(error),
                false => TryResult::Retryable(error),
            }
        }
        Err(e) => match egress::refusal_in(&e) {
            Some(refusal) => refused(refusal),
            None => TryResult::Retryable(format!("cannot POST to {url}: {e}")),
        },
    }
}

/// Keeps a failed delivery as a destination dead letter.
async fn dead_letter(
    state: &Destinations,
    meta: &ResultMeta,
    delivery: &DestinationDelivery,
    event: &OutEvent,
) -> Result<(), DestinationError> {
    let letter = DestinationLetter {
        invocation_id: meta.invocation_id.clone(),
        function: meta.function.clone(),
        target: delivery.target,
        destination: delivery.destination.clone(),
        tries: delivery.tries,
        error: delivery.error.clone().unwrap_or_default(),
        failed_at_ms: now_ms(),
        attributes: event.attributes.clone(),
        data_base64: base64::engine::general_purpose::STANDARD.encode(&event.data),
    };
    let subject = destination_dlq_subject(
        &meta.function,
        &meta.invocation_id,
        delivery.target.as_str(),
    );
    let mut headers = async_nats::HeaderMap::new();
    let msg_id = format!("dd:{}:{}", event.attributes.id, delivery.target.as_str());
    headers.insert(h::NATS_MSG_ID, msg_id.as_str());
    squall_broker::publish::publish_acked(
        &state.broker.topology.jetstream,
        &subject,
        headers,
        serde_json::to_vec(&letter)
            .expect("a destination letter encodes")
            .into(),
        &state.broker.publish,
    )
    .await
    .map(|_| ())
    .map_err(DestinationError::Publish)
}

/// Tries every letter of invocation `id` again; a delivered one leaves the dead-letter stream.
/// Returns every delivery's outcome, also appended to the invocation's record.
pub(crate) async fn replay_letters(
    state: &Destinations,
    id: &str,
    letters: Vec<(u64, DestinationLetter)>,
) -> Result<Vec<DestinationDelivery>, DestinationError> {
    let mut deliveries = Vec::new();
    for (sequence, letter) in letters {
        let record = match crate::core::names::FunctionName::parse(letter.function.clone()) {
            Ok(name) => state.registry.load(&name).await.ok(),
            Err(_) => None,
        };
        let keys = signing_keys(state, record.as_ref());
        let event = OutEvent {
            attributes: letter.attributes.clone(),
            data: base64::engine::general_purpose::STANDARD
                .decode(&letter.data_base64)
                .unwrap_or_default(),
        };
        // One try, now: the admin who asked waits for its outcome.
        let result = match is_url(&letter.destination) {
            true => match try_post(state, &keys, &letter.destination, &event).await {
                TryResult::Delivered => Ok(()),
                TryResult::Permanent(error) | TryResult::Retryable(error) => Err(error),
            },
            false => publish(state, letter.target, &letter.destination, &event).await,
        };
        let delivery = ended(letter.target, &letter.destination, &event, 1, result, true);
        state.metrics.delivery(
            &letter.function,
            delivery.target.as_str(),
            delivery.outcome.as_str(),
        );
        if delivery.outcome == DeliveryOutcome::Delivered {
            state
                .service
                .topology
                .dead_letters
                .delete_message(sequence)
                .await
                .map_err(|e| BrokerError::new("cannot remove the destination dead letter", e))?;
        }
        append_outcomes(state, id, std::slice::from_ref(&delivery), None).await?;
        deliveries.push(delivery);
    }
    Ok(deliveries)
}

/// The most destination dead letters one list shows.
const MAX_LISTED: usize = 1000;

/// Reads destination dead letters matching `filter`, oldest first, with their sequences.
pub(crate) async fn scan(
    state: &Destinations,
    filter: String,
) -> Result<Vec<(u64, DestinationLetter)>, DestinationError> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let broker = |e: &dyn std::fmt::Display| {
        BrokerError::new("cannot read the destination dead letters", e.to_string())
    };
    let mut consumer = state
        .service
        .topology
        .dead_letters
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await
        .map_err(|e| broker(&e))?;
    let pending = consumer.info().await.map_err(|e| broker(&e))?.num_pending as usize;
    let mut messages = consumer.messages().await.map_err(|e| broker(&e))?;
    let mut letters = Vec::new();
    for _ in 0..pending.min(MAX_LISTED) {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        match serde_json::from_slice(&message.payload) {
            Ok(letter) => letters.push((sequence, letter)),
            Err(error) => {
                tracing::warn!(message = "skipping an unreadable destination dead letter", %error)
            }
        }
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: InvocationStatus) -> ResultMeta {
        ResultMeta {
            invocation_id: "0193e0a0-0000-7000-8000-000000000001".into(),
            function: "f".into(),
            version: "sha256:ab".into(),
            status,
            attempt: 2,
            error_kind: (status != InvocationStatus::Succeeded)
                .then_some(squall_broker::ErrorKind::Error),
            created_at_ms: 1_700_000_000_000,
            started_at_ms: 1_700_000_000_100,
            finished_at_ms: 1_700_000_000_200,
            duration_us: 1500,
            cpu_us: 0,
            kv_ops: 0,
            kv_bytes: 0,
            logs: Vec::new(),
            worker: String::new(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn the_event_type_follows_any_terminal_status() {
        for status in [
            InvocationStatus::Succeeded,
            InvocationStatus::Failed,
            InvocationStatus::TimedOut,
            InvocationStatus::DeadLettered,
        ] {
            let event = invocation_event(&meta(status), b"out", None);
            assert_eq!(
                event.attributes.kind,
                format!("io.squall.invocation.{}", status.as_str())
            );
            let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
            assert_eq!(data["attempts"], 2);
            assert_eq!(data["status"], status.as_str());
            if status == InvocationStatus::Succeeded {
                assert_eq!(data["output"], "out");
            } else {
                assert_eq!(data["error"]["message"], "out");
            }
        }
    }

    #[test]
    fn success_goes_to_on_success_and_every_other_end_to_on_failure() {
        let spec = squall_broker::FunctionSpec {
            destinations: Some(squall_api::spec::Destinations {
                on_success: Some("events.ok".into()),
                on_failure: Some("https://example.com/f".into()),
            }),
            ..Default::default()
        };
        let record = FunctionRecord::new("f", "ab", 1, 0, &spec);
        let ok = targets(Some(&record), InvocationStatus::Succeeded, None);
        assert_eq!(
            ok,
            vec![(DestinationTarget::OnSuccess, "events.ok".to_string())]
        );
        let failed = targets(Some(&record), InvocationStatus::TimedOut, Some("http://cb"));
        assert_eq!(
            failed,
            vec![
                (
                    DestinationTarget::OnFailure,
                    "https://example.com/f".to_string()
                ),
                (DestinationTarget::Callback, "http://cb".to_string())
            ]
        );
        assert!(targets(None, InvocationStatus::Failed, None).is_empty());
    }
}
