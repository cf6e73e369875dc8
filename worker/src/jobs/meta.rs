//! Reads a job message into what its attempt needs: its invocation id, attempt number, trace
//! context and the event the function receives. Pure over the message; no IO.
//!
//! Every header here may come from any client that can publish to `jobs.<fn>`: what decides
//! which invocation a result belongs to, or when the invocation was made, is either checked
//! before the job runs (`admit`) or bounded by what the broker itself says (the stream sequence
//! and timestamp of the message).

use async_nats::jetstream;
use async_nats::HeaderMap;
use sha2::Digest as _;
use squall_broker::headers as h;
use squall_broker::time::now_ms;

/// The identity and timing of a job, read from its headers or derived from its delivery.
pub(crate) struct JobMeta {
    pub invocation_id: String,
    /// Whether the id came from the job's headers (a client may set any), rather than being
    /// derived from the message's own place in the stream.
    pub id_claimed: bool,
    pub function: String,
    pub attempt: u32,
    /// The job message's sequence in the `JOBS` stream (0 when unknown).
    pub sequence: u64,
    pub created_at_ms: u64,
    pub traceparent: String,
    pub event: Vec<u8>,
    /// Where the input is stored when it was above the inline limit (the body is then empty).
    pub payload: Option<squall_broker::payloads::PayloadRef>,
}

pub(crate) fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|hs| hs.get(name)).map(|v| v.as_str())
}

pub(crate) fn job_meta(message: &jetstream::Message) -> JobMeta {
    let headers = message.headers.as_ref();
    let (attempt, published_ms, sequence) = match message.info() {
        Ok(info) => (
            info.delivered.max(1) as u32,
            (info.published.unix_timestamp_nanos() / 1_000_000) as u64,
            info.stream_sequence,
        ),
        Err(_) => (1, now_ms(), 0),
    };
    let claimed =
        squall_broker::record::job_invocation_id(|name| header(headers, name).map(str::to_string));
    let id_claimed = claimed.is_some();
    let invocation_id = claimed
        .unwrap_or_else(|| squall_broker::record::derived_invocation_id(published_ms, sequence));
    let created_at_ms = created_at(header(headers, h::CREATED_AT), published_ms);
    let source = header(headers, h::SOURCE).unwrap_or("nats");
    let mut user_headers = serde_json::Map::new();
    if let Some(hs) = headers {
        for (name, values) in hs.iter() {
            let name = name.to_string();
            if squall_broker::headers::is_reserved(&name) {
                continue;
            }
            if let Some(value) = values.first() {
                user_headers.insert(name, value.as_str().into());
            }
        }
    }
    let mut event = serde_json::json!({
        "source": source,
        "subject": header(headers, h::EVENT_SUBJECT).unwrap_or(message.subject.as_str()),
        "headers": user_headers,
    });
    // A web request's event is the request itself (its headers are the HTTP request's).
    if let Some(web) = web_event(source, header(headers, h::WEB)) {
        event = web;
    }
    // A CloudEvent's attributes, when the job was made from one.
    if let Some(attributes) = header(headers, h::CLOUDEVENT)
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    {
        event["cloudevent"] = attributes;
    }
    // What made the job: a schedule, a trigger, a key-value change.
    for (name, field) in [
        (h::SCHEDULE, "schedule"),
        (h::TRIGGER, "trigger"),
        (h::KV_BUCKET, "bucket"),
        (h::KV_KEY, "key"),
        (h::KV_OP, "op"),
    ] {
        if let Some(value) = header(headers, name) {
            event[field] = value.into();
        }
    }
    let function = message
        .subject
        .as_str()
        .strip_prefix("jobs.")
        .unwrap_or_default()
        .to_string();
    JobMeta {
        function,
        attempt,
        sequence,
        created_at_ms,
        traceparent: header(headers, h::TRACEPARENT)
            .filter(|t| squall_telemetry::context_is_valid(t))
            .map(str::to_string)
            .unwrap_or_else(|| derived_traceparent(&invocation_id)),
        invocation_id,
        id_claimed,
        event: event.to_string().into_bytes(),
        payload: squall_broker::payloads::PayloadRef::from_headers(headers),
    }
}

/// How far a job's `Squall-Created-At` may be from the time the broker stored the job: more
/// than any honest publisher's clock is off, less than what would skew the invocation's place
/// in queries and the index's pruning.
pub(crate) const CREATED_AT_SKEW_MS: u64 = 5 * 60 * 1000;

/// When the invocation was made: the job's `Squall-Created-At` when it is within
/// `CREATED_AT_SKEW_MS` of `published_ms` (the broker's timestamp of the job message), else
/// that timestamp.
fn created_at(claimed: Option<&str>, published_ms: u64) -> u64 {
    claimed
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|at| at.abs_diff(published_ms) <= CREATED_AT_SKEW_MS)
        .unwrap_or(published_ms)
}

/// The event of a job made from a web request: `Squall-Source: web` with a readable
/// `Squall-Web` header.
fn web_event(source: &str, web: Option<&str>) -> Option<serde_json::Value> {
    if source != "web" {
        return None;
    }
    web.and_then(squall_broker::web::WebRequest::from_header)
        .map(|request| request.event())
}

/// A trace context for a job published without one, derived from its invocation id so that
/// every attempt of the invocation lands in the same trace.
fn derived_traceparent(invocation_id: &str) -> String {
    let digest = sha2::Sha256::digest(invocation_id.as_bytes());
    let hex = hex::encode(digest);
    format!("00-{}-{}-01", &hex[..32], &hex[32..48])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_time_far_from_the_brokers_timestamp_is_replaced_by_it() {
        let stored = 1_700_000_000_000;
        let within = stored - CREATED_AT_SKEW_MS;
        assert_eq!(created_at(Some(&within.to_string()), stored), within);
        assert_eq!(
            created_at(Some(&(stored + 1500).to_string()), stored),
            stored + 1500
        );
        let future = stored + CREATED_AT_SKEW_MS + 1;
        assert_eq!(created_at(Some(&future.to_string()), stored), stored);
        assert_eq!(created_at(Some("0"), stored), stored);
        assert_eq!(created_at(Some("soon"), stored), stored);
        assert_eq!(created_at(None, stored), stored);
    }

    #[test]
    fn a_web_job_gets_the_request_as_its_event_and_others_do_not() {
        let request = squall_broker::web::WebRequest {
            method: "GET".into(),
            path: "/x".into(),
            ..Default::default()
        };
        let header = request.to_header();
        let event = web_event("web", Some(&header)).expect("a web event");
        assert_eq!(event["source"], "web");
        assert_eq!(event["method"], "GET");
        assert_eq!(event["path"], "/x");
        assert_eq!(web_event("nats", Some(&header)), None);
        assert_eq!(web_event("web", Some("{broken")), None);
        assert_eq!(web_event("web", None), None);
    }
}
