//! CloudEvents 1.0 at the edges (pure): reading an event from an HTTP request or a NATS message in
//! binary, structured or batch mode, checking its attributes, and writing one in binary mode.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use squall_api::invocations::CloudEventAttributes;
use std::collections::BTreeMap;

/// The only CloudEvents version Squall reads and writes.
pub const SPEC_VERSION: &str = "1.0";
/// The media type of a structured event.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The media type of a batch of structured events.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The prefix of binary-mode attribute headers (HTTP binding; NATS binding draft).
pub const HEADER_PREFIX: &str = "ce-";
/// The most bytes an event's attributes take in the job's `Squall-Cloudevent` header.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// The longest extension attribute name.
pub const MAX_EXTENSION_NAME: usize = 20;
/// The most events in one batch.
pub const MAX_BATCH: usize = 1000;

/// An event's attributes, as the function sees them in `ctx.event.cloudevent`: the context
/// attributes of `squall-api` (read through `Deref`), and the extensions as an object of their
/// own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(flatten)]
    pub context: CloudEventAttributes,
    /// Extension attributes by name (strings, numbers or booleans).
    #[serde(default)]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

impl std::ops::Deref for Attributes {
    type Target = CloudEventAttributes;

    fn deref(&self) -> &CloudEventAttributes {
        &self.context
    }
}

impl std::ops::DerefMut for Attributes {
    fn deref_mut(&mut self) -> &mut CloudEventAttributes {
        &mut self.context
    }
}

/// One event: its attributes and its data (the function's input).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub attributes: Attributes,
    pub data: bytes::Bytes,
}

/// Why an event was refused: the attribute at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CloudEventError {
    /// The attribute's name (`specversion`, `time`, …), or `event` for the envelope itself.
    pub attribute: String,
    pub message: String,
}

fn error(attribute: &str, message: impl Into<String>) -> CloudEventError {
    CloudEventError {
        attribute: attribute.to_string(),
        message: message.into(),
    }
}

/// How a request or message carries an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Not a CloudEvent.
    None,
    /// `ce-*` headers, the body is the data.
    Binary,
    /// `application/cloudevents+json` (or another `application/cloudevents…` type).
    Structured,
    /// `application/cloudevents-batch+json`.
    Batch,
}

/// The mode of a request or message from its `Content-Type` and whether it has a binary-mode
/// attribute header.
pub fn mode(content_type: Option<&str>, has_ce_headers: bool) -> Mode {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media == BATCH {
        Mode::Batch
    } else if media.starts_with("application/cloudevents") {
        Mode::Structured
    } else if has_ce_headers {
        Mode::Binary
    } else {
        Mode::None
    }
}

/// Whether a header name is one of the required attributes' binary-mode headers (any of them
/// makes a request a binary-mode event, so a missing one is named in the answer).
pub fn is_binary_header(name: &str) -> bool {
    ["ce-specversion", "ce-id", "ce-source", "ce-type"]
        .iter()
        .any(|required| name.eq_ignore_ascii_case(required))
}

/// Reads a binary-mode event: `ce-<attribute>` headers (percent-encoded values) and the
/// `Content-Type` as `datacontenttype`.
pub fn from_binary<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    content_type: Option<&str>,
    data: bytes::Bytes,
) -> Result<Event, CloudEventError> {
    let mut attributes = Attributes {
        context: CloudEventAttributes {
            datacontenttype: content_type.map(str::to_string),
            ..CloudEventAttributes::default()
        },
        ..Attributes::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let Some(attribute) = lower.strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        let value = percent_decode(value).map_err(|m| error(attribute, m))?;
        if !seen.insert(attribute.to_string()) {
            return Err(error(
                attribute,
                format!("attribute {attribute} is given more than once"),
            ));
        }
        match attribute {
            "specversion" => attributes.specversion = value,
            "id" => attributes.id = value,
            "source" => attributes.source = value,
            "type" => attributes.kind = value,
            "subject" => attributes.subject = Some(value),
            "time" => attributes.time = Some(value),
            "dataschema" => attributes.dataschema = Some(value),
            "datacontenttype" => attributes.datacontenttype = Some(value),
            _ => {
                check_extension_name(attribute)?;
                attributes
                    .extensions
                    .insert(attribute.to_string(), value.into());
            }
        }
    }
    check(&attributes)?;
    Ok(Event { attributes, data })
}

/// Reads one structured-mode event (a JSON object).
pub fn from_structured(body: &[u8]) -> Result<Event, CloudEventError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| error("event", format!("the body is not a JSON CloudEvent: {e}")))?;
    from_json(value)
}

/// Reads a batch: a JSON array of structured events; an error names the event's index.
pub fn from_batch(body: &[u8]) -> Result<Vec<Event>, CloudEventError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        error(
            "event",
            format!("the body is not a JSON CloudEvents batch: {e}"),
        )
    })?;
    let serde_json::Value::Array(events) = value else {
        return Err(error("event", "a CloudEvents batch must be a JSON array"));
    };
    if events.len() > MAX_BATCH {
        return Err(error(
            "event",
            format!(
                "a batch holds at most {MAX_BATCH} events, this one {}",
                events.len()
            ),
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            from_json(event).map_err(|e| CloudEventError {
                message: format!("event {i} of the batch: {}", e.message),
                attribute: e.attribute,
            })
        })
        .collect()
}

fn from_json(value: serde_json::Value) -> Result<Event, CloudEventError> {
    let serde_json::Value::Object(object) = value else {
        return Err(error(
            "event",
            "a structured CloudEvent must be a JSON object",
        ));
    };
    let mut attributes = Attributes::default();
    let (mut data, mut data_base64) = (None, None);
    for (name, value) in object {
        if value.is_null() {
            continue;
        }
        let text = || match &value {
            serde_json::Value::String(s) => Ok(s.clone()),
            _ => Err(error(&name, format!("attribute {name} must be a string"))),
        };
        match name.as_str() {
            "specversion" => attributes.specversion = text()?,
            "id" => attributes.id = text()?,
            "source" => attributes.source = text()?,
            "type" => attributes.kind = text()?,
            "subject" => attributes.subject = Some(text()?),
            "time" => attributes.time = Some(text()?),
            "datacontenttype" => attributes.datacontenttype = Some(text()?),
            "dataschema" => attributes.dataschema = Some(text()?),
            "data" => data = Some(value),
            "data_base64" => data_base64 = Some(text()?),
            _ => {
                check_extension_name(&name)?;
                if value.is_object() || value.is_array() {
                    return Err(error(
                        &name,
                        format!(
                            "extension attribute {name} must be a string, a number or a boolean"
                        ),
                    ));
                }
                attributes.extensions.insert(name, value);
            }
        }
    }
    check(&attributes)?;
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(error(
                "data_base64",
                "an event has data or data_base64, not both",
            ))
        }
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| error("data_base64", format!("data_base64 is not base64: {e}")))?,
        (Some(serde_json::Value::String(text)), None)
            if !is_json(attributes.datacontenttype.as_deref()) =>
        {
            text.into_bytes()
        }
        (Some(value), None) => value.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    Ok(Event {
        attributes,
        data: data.into(),
    })
}

/// Whether a `datacontenttype` is JSON (absent counts as JSON in the JSON format).
fn is_json(content_type: Option<&str>) -> bool {
    let Some(media) = content_type.and_then(|c| c.split(';').next()) else {
        return true;
    };
    let media = media.trim().to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

/// Checks the required attributes, the version and the time.
fn check(attributes: &Attributes) -> Result<(), CloudEventError> {
    if attributes.specversion.is_empty() {
        return Err(error(
            "specversion",
            "required attribute specversion is missing",
        ));
    }
    if attributes.specversion != SPEC_VERSION {
        return Err(error(
            "specversion",
            format!(
                "specversion {:?} is not supported; only {SPEC_VERSION} is",
                attributes.specversion
            ),
        ));
    }
    for (name, value) in [
        ("id", &attributes.id),
        ("source", &attributes.source),
        ("type", &attributes.kind),
    ] {
        if value.is_empty() {
            return Err(error(
                name,
                format!("required attribute {name} is missing or empty"),
            ));
        }
    }
    if let Some(time) = &attributes.time {
        if chrono::DateTime::parse_from_rfc3339(time).is_err() {
            return Err(error(
                "time",
                format!("time {time:?} is not an RFC 3339 timestamp"),
            ));
        }
    }
    for (name, value) in [
        ("subject", &attributes.subject),
        ("dataschema", &attributes.dataschema),
        ("datacontenttype", &attributes.datacontenttype),
    ] {
        if value.as_deref() == Some("") {
            return Err(error(name, format!("attribute {name} must not be empty")));
        }
    }
    Ok(())
}

/// An extension's name: 1 to 20 lowercase ASCII letters or digits, and not `data`.
fn check_extension_name(name: &str) -> Result<(), CloudEventError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_EXTENSION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid || name == "data" {
        return Err(error(
            name,
            format!(
                "{name:?} is not a valid extension attribute name (1 to {MAX_EXTENSION_NAME} \
                 lowercase letters or digits)"
            ),
        ));
    }
    Ok(())
}

impl Attributes {
    /// The `Squall-Cloudevent` header of a job: the attributes as single-line JSON, at most
    /// `MAX_ATTRIBUTES_BYTES`.
    pub fn to_header(&self) -> Result<String, CloudEventError> {
        let json = serde_json::to_string(self).expect("attributes always serialize");
        if json.len() > MAX_ATTRIBUTES_BYTES {
            return Err(error(
                "extensions",
                format!("the event's attributes take more than {MAX_ATTRIBUTES_BYTES} bytes"),
            ));
        }
        Ok(json)
    }

    /// The binary-mode headers of the event (`ce-*`, values percent-encoded); the
    /// `datacontenttype` goes in `Content-Type` instead.
    pub fn binary_headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            ("ce-specversion".to_string(), self.specversion.clone()),
            ("ce-id".to_string(), self.id.clone()),
            ("ce-source".to_string(), self.source.clone()),
            ("ce-type".to_string(), self.kind.clone()),
        ];
        for (name, value) in [
            ("subject", &self.subject),
            ("time", &self.time),
            ("dataschema", &self.dataschema),
        ] {
            if let Some(value) = value {
                headers.push((format!("ce-{name}"), value.clone()));
            }
        }
        for (name, value) in &self.extensions {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.push((format!("ce-{name}"), text));
        }
        headers
            .into_iter()
            .map(|(name, value)| (name, percent_encode(&value)))
            .collect()
    }
}

/// Percent-encodes what a header value may not hold as it is (HTTP binding, 3.1.3.2): space,
/// `"`, `%` and everything outside printable ASCII.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte <= b' ' || byte >= 0x7f || byte == b'"' || byte == b'%' {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(byte as char);
        }
    }
    out
}

fn percent_decode(value: &str) -> Result<String, String> {
    if !value.contains('%') {
        return Ok(value.to_string());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{value:?} has a malformed percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(headers: &[(&str, &str)]) -> Result<Event, CloudEventError> {
        from_binary(
            headers.iter().copied(),
            Some("text/plain"),
            bytes::Bytes::from_static(b"hi"),
        )
    }

    const REQUIRED: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e1"),
        ("ce-source", "/orders"),
        ("ce-type", "order.created"),
    ];

    #[test]
    fn a_binary_event_reads_headers_and_keeps_the_body_as_data() {
        let mut headers = REQUIRED.to_vec();
        headers.extend([
            ("CE-Subject", "order%2042"),
            ("ce-time", "2026-12-01T10:00:00.5+01:00"),
            ("ce-traceid", "abc"),
            ("x-other", "ignored"),
        ]);
        let event = binary(&headers).unwrap();
        let a = &event.attributes;
        assert_eq!((a.id.as_str(), a.source.as_str()), ("e1", "/orders"));
        assert_eq!(a.kind, "order.created");
        assert_eq!(a.subject.as_deref(), Some("order 42"));
        assert_eq!(a.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(a.extensions["traceid"], "abc");
        assert_eq!(event.data, "hi");
    }

    #[test]
    fn every_required_attribute_is_named_when_missing() {
        for (i, (header, _)) in REQUIRED.iter().enumerate() {
            let mut headers = REQUIRED.to_vec();
            headers.remove(i);
            let err = binary(&headers).unwrap_err();
            assert_eq!(
                err.attribute,
                header.trim_start_matches("ce-"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn only_specversion_1_0_is_read() {
        let mut headers = REQUIRED.to_vec();
        headers[0] = ("ce-specversion", "0.3");
        let err = binary(&headers).unwrap_err();
        assert_eq!(err.attribute, "specversion");
        assert!(err.message.contains("\"0.3\""), "{}", err.message);
    }

    #[test]
    fn time_must_be_rfc3339() {
        for bad in ["yesterday", "2026-12-01 10:00:00", "2026-13-01T00:00:00Z"] {
            let mut headers = REQUIRED.to_vec();
            headers.push(("ce-time", bad));
            let err = binary(&headers).unwrap_err();
            assert_eq!(err.attribute, "time", "{bad}");
        }
        let mut headers = REQUIRED.to_vec();
        headers.push(("ce-time", "2026-12-01T10:00:00Z"));
        assert!(binary(&headers).is_ok());
    }

    #[test]
    fn extension_names_are_lowercase_alphanumeric_and_short() {
        for bad in ["Has_Upper", "under_score", "waytoolongextensionname1"] {
            let json =
                format!(r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","{bad}":"v"}}"#);
            let err = from_structured(json.as_bytes()).unwrap_err();
            assert_eq!(err.attribute, bad);
        }
        let json = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","nested":{"a":1}}"#;
        assert_eq!(
            from_structured(json.as_bytes()).unwrap_err().attribute,
            "nested"
        );
    }

    #[test]
    fn structured_data_is_json_text_or_base64() {
        let json =
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"n":1},"count":3}"#;
        let event = from_structured(json).unwrap();
        assert_eq!(event.data, r#"{"n":1}"#);
        assert_eq!(event.attributes.extensions["count"], 3);
        let text = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"plain"}"#;
        assert_eq!(from_structured(text).unwrap().data, "plain");
        let b64 = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AAEC"}"#;
        assert_eq!(from_structured(b64).unwrap().data.as_ref(), &[0, 1, 2]);
        let both = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}"#;
        assert_eq!(from_structured(both).unwrap_err().attribute, "data_base64");
        let wrong = br#"{"specversion":"1.0","id":7,"source":"s","type":"t"}"#;
        assert_eq!(from_structured(wrong).unwrap_err().attribute, "id");
        assert_eq!(from_structured(b"[1]").unwrap_err().attribute, "event");
    }

    #[test]
    fn a_batch_names_the_event_at_fault() {
        let batch = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},
                         {"specversion":"1.0","id":"2","source":"s"}]"#;
        let err = from_batch(batch).unwrap_err();
        assert_eq!(err.attribute, "type");
        assert!(
            err.message.starts_with("event 1 of the batch"),
            "{}",
            err.message
        );
        let ok = from_batch(&batch[..batch.iter().position(|&b| b == b'\n').unwrap() - 1]);
        assert!(ok.is_err(), "a cut batch is not JSON");
        assert_eq!(from_batch(b"[]").unwrap().len(), 0);
    }

    #[test]
    fn modes_follow_the_content_type_then_the_headers() {
        assert_eq!(
            mode(Some("application/cloudevents+json; charset=utf-8"), true),
            Mode::Structured
        );
        assert_eq!(
            mode(Some("application/cloudevents-batch+json"), false),
            Mode::Batch
        );
        assert_eq!(mode(Some("application/json"), true), Mode::Binary);
        assert_eq!(mode(Some("application/json"), false), Mode::None);
        assert_eq!(mode(None, false), Mode::None);
    }

    #[test]
    fn binary_headers_round_trip_through_percent_encoding() {
        let mut event = binary(&REQUIRED).unwrap();
        event.attributes.subject = Some("a \"quoted\" 100% ünïcode".into());
        let out = event.attributes.binary_headers();
        let back = from_binary(
            out.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            Some("text/plain"),
            event.data.clone(),
        )
        .unwrap();
        assert_eq!(back.attributes, event.attributes);
        assert!(out.iter().all(|(_, v)| v.is_ascii() && !v.contains(' ')));
    }

    #[test]
    fn attributes_survive_the_job_header() {
        let event = binary(&REQUIRED).unwrap();
        let header = event.attributes.to_header().unwrap();
        let back: Attributes = serde_json::from_str(&header).unwrap();
        assert_eq!(back, event.attributes);
        let mut big = event.attributes.clone();
        big.extensions
            .insert("big".into(), "x".repeat(MAX_ATTRIBUTES_BYTES).into());
        assert_eq!(big.to_header().unwrap_err().attribute, "extensions");
    }
}
