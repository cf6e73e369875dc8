//! Pure conversions from broker records to the API's JSON views.

use base64::Engine;
use squall_broker::{FunctionRecord, InvocationStatus, ResultMeta};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The JSON view of a deployed function.
pub fn function_view(record: &FunctionRecord) -> serde_json::Value {
    serde_json::json!({
        "name": record.name,
        "version": record.version,
        "sha256": record.sha256,
        "artifact_size": record.artifact_size,
        "deployed_at": rfc3339(record.deployed_at_ms),
        "config": record.spec(),
        "secrets": record.secret_names(),
    })
}

/// The JSON view of an invocation that has a result (terminal or `retrying`).
pub fn invocation_view(meta: &ResultMeta, body: &[u8]) -> serde_json::Value {
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
    let error = meta.error_kind.map(|kind| {
        serde_json::json!({ "kind": kind.as_str(), "message": String::from_utf8_lossy(body) })
    });
    let terminal = meta.status.is_terminal();
    serde_json::json!({
        "invocation_id": meta.invocation_id,
        "function": meta.function,
        "version": meta.version,
        "status": meta.status.as_str(),
        "attempts": meta.attempt,
        "output": output,
        "output_base64": output_base64,
        "error": error,
        "created_at": rfc3339(meta.created_at_ms),
        "finished_at": if terminal { Some(rfc3339(meta.finished_at_ms)) } else { None },
        "duration_ms": meta.duration_us as f64 / 1000.0,
        "cpu_ms": meta.cpu_us as f64 / 1000.0,
        "logs": meta.logs,
        "worker": meta.worker,
    })
}

/// The JSON view of an accepted invocation that has no result yet.
pub fn queued_view(id: &str, function: &str, created_at_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "invocation_id": id,
        "function": function,
        "version": null,
        "status": InvocationStatus::Queued.as_str(),
        "attempts": 0,
        "output": null,
        "output_base64": null,
        "error": null,
        "created_at": rfc3339(created_at_ms),
        "finished_at": null,
        "duration_ms": null,
        "cpu_ms": null,
        "logs": [],
    })
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
            logs: vec![],
            worker: String::new(),
        }
    }

    #[test]
    fn binary_output_is_base64() {
        let v = invocation_view(&meta(InvocationStatus::Succeeded, None), &[0xff, 0x00]);
        assert_eq!(v["output"], serde_json::Value::Null);
        assert_eq!(v["output_base64"], "/wA=");
        assert_eq!(v["duration_ms"], 0.42);
    }

    #[test]
    fn failure_shows_kind_and_message_but_no_output() {
        let v = invocation_view(
            &meta(InvocationStatus::Failed, Some(ErrorKind::Error)),
            b"boom",
        );
        assert_eq!(v["error"]["kind"], "error");
        assert_eq!(v["error"]["message"], "boom");
        assert_eq!(v["output"], serde_json::Value::Null);
        assert_eq!(v["finished_at"], "1970-01-01T00:00:01.5Z");
    }
}
