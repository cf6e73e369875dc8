//! Pure conversions from broker records to the API's views (`squall-api` types).

use crate::index::store::Entry;
use base64::Engine;
use chrono::{DateTime, Datelike as _};
use squall_api::functions::Function;
use squall_api::invocations::{Invocation, InvocationError};
use squall_api::queries::InvocationSummary;
use squall_api::versions::{Alias, AliasTarget as AliasTargetView, Version, VersionList};
use squall_broker::versions::{AliasTarget, VersionEntry};
use squall_broker::{ErrorKind, FunctionRecord, InvocationStatus, ResultMeta};
use std::collections::BTreeMap;

/// Formats Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: u64) -> String {
    // UTC as `Z`, and the fewest fraction digits that keep the milliseconds (none when whole:
    // `…:01Z`, `…:01.5Z`, `…:01.25Z`, `…:01.125Z`); empty past the year 9999, which RFC 3339
    // cannot write.
    let Some(t) = i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .filter(|t| t.year() <= 9999)
    else {
        return String::new();
    };
    let mut text = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let millis = ms % 1000;
    if millis > 0 {
        text.push_str(format!(".{millis:03}").trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// The API view of a deployed function.
pub fn function_view(record: &FunctionRecord) -> Function {
    Function {
        name: record.name.clone(),
        version: record.version.clone(),
        sha256: record.sha256.clone(),
        version_number: record.versions.latest,
        aliases: record
            .versions
            .aliases
            .iter()
            .map(|(name, alias)| (name.clone(), alias.target.version))
            .collect(),
        artifact_size: record.artifact_size,
        deployed_at: rfc3339(record.deployed_at_ms),
        config: record.spec(),
        secrets: record.secret_names(),
        warnings: Vec::new(),
        destination_secret: None,
    }
}

/// The API view of an invocation that has a result (terminal or `retrying`).
pub fn invocation_view(meta: &ResultMeta, body: &[u8]) -> Invocation {
    let succeeded = meta.status == InvocationStatus::Succeeded;
    let (output, output_base64) = if succeeded {
        match std::str::from_utf8(body) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(body)),
            ),
        }
    } else {
        (None, None)
    };
    let error = meta.error_kind.map(|kind| InvocationError {
        kind,
        message: String::from_utf8_lossy(body).into_owned(),
    });
    Invocation {
        invocation_id: meta.invocation_id.clone(),
        function: meta.function.clone(),
        version: Some(meta.version.clone()),
        version_number: None,
        status: meta.status,
        attempts: meta.attempt,
        output,
        output_base64,
        output_stored_bytes: None,
        error,
        created_at: rfc3339(meta.created_at_ms),
        finished_at: meta
            .status
            .is_terminal()
            .then(|| rfc3339(meta.finished_at_ms)),
        duration_ms: Some(meta.duration_us as f64 / 1000.0),
        cpu_ms: Some(meta.cpu_us as f64 / 1000.0),
        logs: meta.logs.clone(),
        worker: Some(meta.worker.clone()),
        destinations: Vec::new(),
        trace_id: (!meta.trace_id.is_empty()).then(|| meta.trace_id.clone()),
    }
}

/// The API view of a result record: an output stored apart is named by its size, not shown.
pub fn finished_view(finished: &crate::core::waiter::Finished) -> Invocation {
    let mut view = invocation_view(&finished.meta, &finished.body);
    if let Some(stored) = &finished.payload {
        view.output = None;
        view.output_base64 = None;
        view.output_stored_bytes = Some(stored.size);
    }
    view
}

/// The API view of an accepted invocation that has no result yet.
pub fn queued_view(id: &str, function: &str, created_at_ms: u64) -> Invocation {
    Invocation {
        invocation_id: id.to_string(),
        function: function.to_string(),
        version: None,
        version_number: None,
        status: InvocationStatus::Queued,
        attempts: 0,
        output: None,
        output_base64: None,
        output_stored_bytes: None,
        error: None,
        created_at: rfc3339(created_at_ms),
        finished_at: None,
        duration_ms: None,
        cpu_ms: None,
        logs: Vec::new(),
        worker: None,
        destinations: Vec::new(),
        trace_id: None,
    }
}

/// One row of a page of invocations.
pub fn summary_view(id: &str, entry: &Entry) -> InvocationSummary {
    InvocationSummary {
        invocation_id: id.to_string(),
        function: entry.function.clone(),
        version: entry.version.clone(),
        version_number: None,
        status: entry.status,
        attempts: entry.attempts,
        error_kind: entry.error_kind.as_deref().and_then(ErrorKind::parse),
        created_at: rfc3339(entry.created_at_ms),
        finished_at: entry
            .status
            .is_terminal()
            .then(|| rfc3339(entry.finished_at_ms)),
        duration_ms: entry.duration_us as f64 / 1000.0,
        cpu_ms: entry.cpu_us_total as f64 / 1000.0,
        wall_ms: entry.wall_us_total as f64 / 1000.0,
    }
}

fn version_view(record: &FunctionRecord, entry: &VersionEntry) -> Version {
    let aliases = record
        .versions
        .aliases
        .iter()
        .filter(|(_, a)| {
            a.target.version == entry.number
                || a.target.weights.iter().any(|(v, _)| *v == entry.number)
        })
        .map(|(name, _)| name.clone())
        .collect();
    Version {
        version: entry.number,
        sha256: entry.sha256.clone(),
        artifact_size: entry.artifact_size,
        deployed_at: rfc3339(entry.deployed_at_ms),
        latest: entry.number == record.versions.latest,
        aliases,
    }
}

/// The API view of a target.
fn target_view(target: &AliasTarget) -> AliasTargetView {
    AliasTargetView {
        version: target.version,
        weights: weights_view(&target.weights),
    }
}

fn weights_view(weights: &[(u32, f64)]) -> BTreeMap<String, f64> {
    weights.iter().map(|(v, w)| (v.to_string(), *w)).collect()
}

/// The API view of alias `name` of `record`.
pub fn alias_view(record: &FunctionRecord, name: &str) -> Option<Alias> {
    let alias = record.versions.aliases.get(name)?;
    Some(Alias {
        function: record.name.clone(),
        name: name.to_string(),
        version: alias.target.version,
        weights: weights_view(&alias.target.weights),
        previous: alias.previous.as_ref().map(target_view),
        updated_at: rfc3339(alias.updated_at_ms),
    })
}

/// The versions of `record`, oldest first.
pub fn version_list(record: &FunctionRecord) -> VersionList {
    VersionList {
        function: record.name.clone(),
        latest: record.versions.latest,
        versions: record
            .versions
            .list
            .iter()
            .map(|v| version_view(record, v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_broker::ErrorKind;

    fn meta(status: InvocationStatus, kind: Option<ErrorKind>) -> ResultMeta {
        ResultMeta {
            invocation_id: "id".into(),
            function: "f".into(),
            version: "sha256:00".into(),
            status,
            attempt: 1,
            error_kind: kind,
            created_at_ms: 0,
            started_at_ms: 0,
            finished_at_ms: 1500,
            duration_us: 420,
            cpu_us: 400,
            kv_ops: 0,
            kv_bytes: 0,
            logs: vec![],
            worker: String::new(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn times_are_rfc3339_in_utc_with_the_fewest_fraction_digits() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1500), "1970-01-01T00:00:01.5Z");
        assert_eq!(rfc3339(1520), "1970-01-01T00:00:01.52Z");
        assert_eq!(rfc3339(1_700_000_000_001), "2023-11-14T22:13:20.001Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "");
        assert_eq!(rfc3339(u64::MAX), "");
    }

    #[test]
    fn binary_output_is_base64() {
        let v = invocation_view(&meta(InvocationStatus::Succeeded, None), &[0xff, 0x00]);
        assert_eq!(v.output, None);
        assert_eq!(v.output_base64.as_deref(), Some("/wA="));
        assert_eq!(v.duration_ms, Some(0.42));
    }

    #[test]
    fn failure_shows_kind_and_message_but_no_output() {
        let v = invocation_view(
            &meta(InvocationStatus::Failed, Some(ErrorKind::Error)),
            b"boom",
        );
        let error = v.error.expect("an error");
        assert_eq!(error.kind, ErrorKind::Error);
        assert_eq!(error.message, "boom");
        assert_eq!(v.output, None);
        assert_eq!(v.finished_at.as_deref(), Some("1970-01-01T00:00:01.5Z"));
    }

    #[test]
    fn a_queued_invocation_has_every_field_of_a_finished_one() {
        let queued = serde_json::to_value(queued_view("id", "f", 0)).unwrap();
        let done = serde_json::to_value(invocation_view(
            &meta(InvocationStatus::Succeeded, None),
            b"ok",
        ))
        .unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&queued), keys(&done));
        assert_eq!(queued["worker"], serde_json::Value::Null);
    }
}
