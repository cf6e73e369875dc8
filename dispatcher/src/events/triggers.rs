//! Triggers: `/v1/triggers`, binding a NATS subject pattern or a KV bucket's keys to a
//! function, and the task that turns each event into an invocation.
//!
//! A subject trigger adds its pattern to the EVENTS stream, so messages any client publishes
//! there are stored even while no worker (or no dispatcher) runs. A KV trigger reads the
//! bucket's own stream. Each trigger has one durable consumer shared by every dispatcher, so
//! each event becomes one invocation (its id is derived from the event, and the job's
//! `Nats-Msg-Id` drops a re-submission after a redelivery).

use crate::core::broker::{Broker, BrokerError};
use crate::core::cloudevents;
use crate::core::registry::Registry;
use crate::core::registry::RegistryError;
use crate::core::submit::SubmitError;
use crate::core::submit::Submitter;
use crate::core::submit::{event_key, new_traceparent, Job};
use crate::core::versions::{job_version, resolve, Qualified};
use crate::core::versions::{QualifierError, Refused};
use async_nats::jetstream::{kv, AckKind};
use futures::StreamExt;
use squall_broker::events::{TriggerRecord, TriggerSource};
use squall_broker::headers as h;
use squall_broker::topology::{set_events_subjects, trigger_consumer, EventsSubjectsError};
use std::collections::HashMap;
use std::time::Duration;

/// Why the triggers' records or streams could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("unreadable trigger record: {0}")]
    Corrupt(String),
    #[error("no key-value bucket named {0:?}")]
    NoBucket(String),
    #[error("the broker refused the subjects: {0} (another stream may capture them)")]
    SubjectInUse(String),
}

/// Every trigger in the bucket.
pub(crate) async fn all_triggers(broker: &Broker) -> Result<Vec<TriggerRecord>, TriggerError> {
    let mut keys = broker
        .topology
        .triggers
        .keys()
        .await
        .map_err(|e| BrokerError::new("cannot list triggers", e))?;
    let mut records = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| BrokerError::new("cannot list triggers", e))?;
        if let Some(record) = read_trigger(broker, &key).await? {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

pub(crate) async fn read_trigger(
    broker: &Broker,
    name: &str,
) -> Result<Option<TriggerRecord>, TriggerError> {
    match broker.topology.triggers.get(name).await {
        Ok(Some(bytes)) => TriggerRecord::decode(&bytes)
            .map(Some)
            .map_err(|e| TriggerError::Corrupt(e.to_string())),
        Ok(None) => Ok(None),
        Err(e) => Err(BrokerError::new("cannot read the trigger", e).into()),
    }
}

pub(crate) async fn event_stream(
    broker: &Broker,
    record: &TriggerRecord,
) -> Result<async_nats::jetstream::stream::Stream, TriggerError> {
    match &record.source {
        TriggerSource::Subject { .. } => Ok(broker.topology.events.clone()),
        TriggerSource::Kv { bucket, .. } => broker
            .topology
            .jetstream
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|_| TriggerError::NoBucket(bucket.clone())),
    }
}

/// Sets EVENTS' subjects to the placeholder plus every subject trigger's pattern.
pub(crate) async fn sync_event_subjects(
    broker: &Broker,
    patterns: Vec<String>,
) -> Result<(), TriggerError> {
    let topology = &broker.topology;
    set_events_subjects(&topology.jetstream, &topology.events, patterns)
        .await
        .map_err(|e| match e {
            EventsSubjectsError::Read(e) => {
                BrokerError::new("cannot read the EVENTS stream", e).into()
            }
            EventsSubjectsError::Refused(e) => TriggerError::SubjectInUse(e.to_string()),
        })
}

pub(crate) fn subject_patterns(records: &[TriggerRecord], except: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.name != except)
        .filter_map(|r| match &r.source {
            TriggerSource::Subject { subject } => Some(subject.clone()),
            TriggerSource::Kv { .. } => None,
        })
        .collect()
}

/// Runs every trigger's event loop, following the triggers bucket, forever.
pub async fn run(registry: Registry, submitter: Submitter) {
    loop {
        if let Err(error) = follow(&registry, &submitter).await {
            tracing::warn!(message = "trigger runner failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow(registry: &Registry, submitter: &Submitter) -> anyhow::Result<()> {
    let mut running: HashMap<String, (TriggerRecord, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut watch = submitter
        .broker
        .topology
        .triggers
        .watch_with_history(">")
        .await?;
    let result = async {
        while let Some(entry) = watch.next().await {
            let entry = entry?;
            match entry.operation {
                kv::Operation::Put => {
                    let Ok(record) = TriggerRecord::decode(&entry.value) else {
                        tracing::warn!(message = "ignoring an unreadable trigger record", trigger = %entry.key);
                        continue;
                    };
                    if running.get(&entry.key).is_some_and(|(r, _)| r == &record) {
                        continue;
                    }
                    if let Some((_, task)) = running.remove(&entry.key) {
                        task.abort();
                    }
                    let task = tokio::spawn(serve_trigger(
                        registry.clone(),
                        submitter.clone(),
                        record.clone(),
                    ));
                    running.insert(entry.key.clone(), (record, task));
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    if let Some((_, task)) = running.remove(&entry.key) {
                        task.abort();
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    for (_, (_, task)) in running {
        task.abort();
    }
    result
}

/// Turns one trigger's events into invocations until aborted.
async fn serve_trigger(registry: Registry, submitter: Submitter, record: TriggerRecord) {
    loop {
        if let Err(error) = serve_events(&registry, &submitter, &record).await {
            tracing::warn!(message = "trigger event loop failed; restarting", trigger = %record.name, error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve_events(
    registry: &Registry,
    submitter: &Submitter,
    record: &TriggerRecord,
) -> anyhow::Result<()> {
    // A trigger recorded before the bucket rule, or written to the bucket by hand, is not run.
    if let TriggerSource::Kv { bucket, .. } = &record.source {
        if let Err(error) = squall_broker::events::validate_kv_bucket(bucket) {
            tracing::warn!(message = "trigger not run: it watches a bucket triggers may not watch",
                trigger = %record.name, %error);
            return std::future::pending().await;
        }
    }
    let stream = event_stream(&submitter.broker, record).await?;
    let consumer = trigger_consumer(&stream, record).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let ack = match submit_event(registry, submitter, record, &message).await {
            Ok(()) => AckKind::Ack,
            Err(error) => {
                // Kept: it comes back and is tried again.
                tracing::warn!(message = "cannot turn an event into an invocation; will retry",
                    trigger = %record.name, %error);
                AckKind::Nak(Some(Duration::from_secs(2)))
            }
        };
        let _ = message.ack_with(ack).await;
    }
    Ok(())
}

/// Why an event did not become an invocation (it is kept and tried again).
#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("event without stream info: {0}")]
    NoInfo(String),
    #[error(transparent)]
    Qualifier(#[from] QualifierError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Version(#[from] Refused),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

async fn submit_event(
    registry: &Registry,
    submitter: &Submitter,
    record: &TriggerRecord,
    message: &async_nats::jetstream::Message,
) -> Result<(), EventError> {
    let info = message
        .info()
        .map_err(|e| EventError::NoInfo(e.to_string()))?;
    let published_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
    let target = Qualified::parse(&record.function, None)?;
    let function = registry.load(&target.name).await?;
    let subject = message.subject.as_str();
    let mut extra = vec![(h::TRIGGER.to_string(), record.name.clone())];
    let mut claim = None;
    let (source, payload) = match &record.source {
        TriggerSource::Subject { .. } => {
            if let Some(headers) = &message.headers {
                for (name, values) in headers.iter() {
                    let name = name.to_string();
                    if h::is_reserved(&name) {
                        continue;
                    }
                    for value in values {
                        extra.push((name.clone(), value.as_str().to_string()));
                    }
                }
            }
            extra.push((h::EVENT_SUBJECT.to_string(), subject.to_string()));
            match cloudevent_of(message) {
                Some(Ok(event)) => match event.attributes.to_header() {
                    Ok(attributes) => {
                        extra.push((h::CLOUDEVENT.to_string(), attributes));
                        claim = Some(event_key(&record.function, &event.attributes));
                        ("nats", event.data)
                    }
                    Err(error) => {
                        not_an_event(record, subject, &error);
                        ("nats", message.payload.clone())
                    }
                },
                Some(Err(error)) => {
                    not_an_event(record, subject, &error);
                    ("nats", message.payload.clone())
                }
                None => ("nats", message.payload.clone()),
            }
        }
        TriggerSource::Kv { bucket, .. } => {
            let key = subject
                .strip_prefix(&format!("$KV.{bucket}."))
                .unwrap_or(subject)
                .to_string();
            let op = match message
                .headers
                .as_ref()
                .and_then(|hs| hs.get("KV-Operation"))
                .map(|v| v.as_str())
            {
                Some("DEL") => "delete",
                Some("PURGE") => "purge",
                _ => "put",
            };
            extra.push((h::KV_BUCKET.to_string(), bucket.clone()));
            extra.push((h::KV_KEY.to_string(), key));
            extra.push((h::KV_OP.to_string(), op.to_string()));
            ("kv", message.payload.clone())
        }
    };
    let origin = format!("trigger.{}.{}", record.name, record.created_at_ms);
    let (id, created_at_ms) = match claim {
        // A CloudEvent's source and id make it the same invocation however often it is sent.
        Some(kv_key) => {
            let (id, created_at_ms, _) = submitter.claim_kv_key(&kv_key).await?;
            (id, created_at_ms)
        }
        None => (
            squall_broker::record::event_invocation_id(published_ms, &origin, info.stream_sequence),
            published_ms,
        ),
    };
    let traceparent = message
        .headers
        .as_ref()
        .and_then(|hs| hs.get(h::TRACEPARENT))
        .map(|v| v.as_str().to_string())
        .filter(|t| squall_telemetry::context_is_valid(t))
        .unwrap_or_else(new_traceparent);
    let version = job_version(&resolve(&function, target.qualifier.as_deref(), &id)?);
    let job = Job {
        function: target.name.as_str(),
        version: &version,
        id: &id,
        created_at_ms,
        traceparent: &traceparent,
        source,
        extra_headers: extra,
        reply_to: None,
    };
    Ok(submitter.submit(job, payload).await?)
}

/// The CloudEvent a subject trigger's message carries: structured mode (a `Content-Type`
/// starting with `application/cloudevents`) or binary mode (`ce-` headers, the NATS binding's
/// draft); `None` when it carries none.
fn cloudevent_of(
    message: &async_nats::jetstream::Message,
) -> Option<Result<cloudevents::Event, cloudevents::CloudEventError>> {
    let headers = message.headers.as_ref();
    let find = |wanted: &str| {
        headers.and_then(|hs| {
            hs.iter()
                .find(|(name, _)| name.to_string().eq_ignore_ascii_case(wanted))
                .and_then(|(_, values)| values.first())
                .map(|v| v.as_str().to_string())
        })
    };
    let content_type = find("content-type");
    let has_ce = headers.is_some_and(|hs| {
        hs.iter()
            .any(|(name, _)| cloudevents::is_binary_header(name.as_ref()))
    });
    match cloudevents::mode(content_type.as_deref(), has_ce) {
        cloudevents::Mode::None => None,
        cloudevents::Mode::Structured | cloudevents::Mode::Batch => {
            Some(cloudevents::from_structured(&message.payload))
        }
        cloudevents::Mode::Binary => {
            let pairs: Vec<(String, String)> = headers
                .into_iter()
                .flat_map(|hs| hs.iter())
                .filter_map(|(name, values)| {
                    Some((name.to_string(), values.first()?.as_str().to_string()))
                })
                .collect();
            Some(cloudevents::from_binary(
                pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                content_type.as_deref(),
                message.payload.clone(),
            ))
        }
    }
}

/// An event that claims to be a CloudEvent and is not runs as a plain message.
fn not_an_event(record: &TriggerRecord, subject: &str, error: &cloudevents::CloudEventError) {
    tracing::warn!(message = "an invalid CloudEvent runs as a plain event", trigger = %record.name,
        subject = %subject, attribute = %error.attribute, error = %error.message);
}
