//! Reads a job message into what its attempt needs: its invocation id, attempt number, trace
//! context and the event the function receives. Pure over the message; no IO.

use async_nats::jetstream;
use async_nats::HeaderMap;
use sha2::Digest as _;
use squall_broker::headers as h;
use squall_broker::time::now_ms;

/// The identity and timing of a job, read from its headers or derived from its delivery.
pub(crate) struct JobMeta {
    pub invocation_id: String,
    pub function: String,
    pub attempt: u32,
    pub created_at_ms: u64,
    pub traceparent: String,
    pub event: Vec<u8>,
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
    let invocation_id =
        squall_broker::record::job_invocation_id(|name| header(headers, name).map(str::to_string))
            .unwrap_or_else(|| {
                squall_broker::record::derived_invocation_id(published_ms, sequence)
            });
    let created_at_ms = header(headers, h::CREATED_AT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(published_ms);
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
        created_at_ms,
        traceparent: header(headers, h::TRACEPARENT)
            .filter(|t| squall_telemetry::context_is_valid(t))
            .map(str::to_string)
            .unwrap_or_else(|| derived_traceparent(&invocation_id)),
        invocation_id,
        event: event.to_string().into_bytes(),
    }
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
