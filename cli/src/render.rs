//! Human-readable renderings of the API's answers; pure, so they are tested without a server.

use squall_api::functions::FunctionList;
use squall_api::invocations::Invocation;
use squall_api::operations::{DeadLetter, DeadLetterList};

/// A version hash cut to its first 12 hex digits: `sha256:3f2a…` → `3f2a9c1d0b7e`.
pub fn short_version(version: &str) -> &str {
    let hex = version.split_once(':').map_or(version, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

/// The `ls` table.
pub fn function_table(list: &FunctionList) -> String {
    if list.functions.is_empty() {
        return "no functions deployed\n".to_string();
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".to_string(),
        "DEPLOYED".to_string(),
    ]];
    for f in &list.functions {
        rows.push([
            f.name.clone(),
            short_version(&f.version).to_string(),
            f.deployed_at.clone(),
        ]);
    }
    table(&rows)
}

/// Aligns rows into columns separated by two spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An optional value, or `-` when absent.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The `get` view of an invocation.
pub fn invocation_details(view: &Invocation) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("invocation", view.invocation_id.clone()),
        ("function", view.function.clone()),
        ("version", or_dash(view.version.as_deref())),
        ("status", view.status.as_str().to_string()),
        ("attempts", view.attempts.to_string()),
        ("created", view.created_at.clone()),
        ("finished", or_dash(view.finished_at.as_deref())),
        (
            "duration",
            or_dash(view.duration_ms.map(|ms| format!("{ms} ms"))),
        ),
    ];
    if let Some(error) = &view.error {
        rows.push((
            "error",
            format!("{}: {}", error.kind.as_str(), error.message),
        ));
    }
    if let Some(output) = &view.output {
        rows.push(("output", output.clone()));
    } else if let Some(encoded) = &view.output_base64 {
        rows.push(("output", format!("(binary, base64) {encoded}")));
    } else if let Some(size) = view.output_stored_bytes {
        rows.push((
            "output",
            format!(
                "({size} bytes, stored apart: GET /v1/invocations/{}/output)",
                view.invocation_id
            ),
        ));
    }
    let mut out = String::new();
    for (label, value) in rows {
        if value.contains('\n') {
            out.push_str(&format!("{label}:\n"));
            for line in value.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        } else {
            out.push_str(&format!("{label:<10}  {value}\n"));
        }
    }
    if !view.logs.is_empty() {
        out.push_str("logs:\n");
        for log in &view.logs {
            out.push_str(&format!("  {:<5}  {}\n", log.level.as_str(), log.message));
        }
    }
    out
}

/// The `squall dlq ls` table.
pub fn dead_letter_table(list: &DeadLetterList) -> String {
    if list.dead_letters.is_empty() {
        return "no dead letters\n".to_string();
    }
    let mut out = format!(
        "{:<36}  {:<20}  {:<13}  {:<8}  {:>8}  {}\n",
        "ID", "FUNCTION", "STATUS", "KIND", "ATTEMPTS", "DEAD-LETTERED AT"
    );
    for letter in &list.dead_letters {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<13}  {:<8}  {:>8}  {}\n",
            letter.id,
            letter.function,
            letter.status.as_str(),
            or_dash(letter.kind.map(|k| k.as_str())),
            letter.attempts,
            letter.dead_lettered_at,
        ));
    }
    out
}

/// The `squall dlq show` text.
pub fn dead_letter_details(letter: &DeadLetter) -> String {
    let summary = &letter.summary;
    let mut out = String::new();
    out.push_str(&format!("dead letter {}\n", summary.id));
    out.push_str(&format!(
        "  function:         {} ({})\n",
        summary.function,
        short_version(&summary.version)
    ));
    out.push_str(&format!(
        "  status:           {}\n",
        summary.status.as_str()
    ));
    out.push_str(&format!("  created at:       {}\n", summary.created_at));
    out.push_str(&format!(
        "  dead-lettered at: {}\n",
        summary.dead_lettered_at
    ));
    match (&letter.payload, &letter.payload_base64) {
        (Some(payload), _) => out.push_str(&format!("  payload:          {payload}\n")),
        (None, Some(b64)) => out.push_str(&format!("  payload (base64): {b64}\n")),
        _ => {}
    }
    for (name, value) in &letter.headers {
        out.push_str(&format!("  header:           {name}: {value}\n"));
    }
    for attempt in &letter.attempt_history {
        out.push_str(&format!(
            "  attempt {}:        {}: {}\n",
            attempt.attempt,
            or_dash(attempt.kind.map(|k| k.as_str())),
            attempt.message
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn function(name: &str, version: &str, deployed_at: &str) -> serde_json::Value {
        json!({"name": name, "version": version, "sha256": "00", "artifact_size": 1,
            "deployed_at": deployed_at, "config": {}, "secrets": []})
    }

    #[test]
    fn versions_are_shortened_to_twelve_hex_digits() {
        assert_eq!(short_version("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_version("abc"), "abc");
    }

    #[test]
    fn function_table_aligns_columns() {
        let list: FunctionList = serde_json::from_value(json!({"functions": [
            function("hello", "sha256:0123456789abcdef", "2030-01-01T00:00:00Z"),
            function("c-hello-long", "sha256:fedcba9876543210", "2030-01-02T00:00:00Z"),
        ]}))
        .unwrap();
        assert_eq!(
            function_table(&list),
            "NAME          VERSION       DEPLOYED\n\
             hello         0123456789ab  2030-01-01T00:00:00Z\n\
             c-hello-long  fedcba987654  2030-01-02T00:00:00Z\n"
        );
        let empty = FunctionList { functions: vec![] };
        assert_eq!(function_table(&empty), "no functions deployed\n");
    }

    #[test]
    fn invocation_details_show_error_output_and_logs() {
        let view: Invocation = serde_json::from_value(json!({
            "invocation_id": "id-1", "function": "fail", "version": "sha256:00",
            "status": "failed", "attempts": 1, "output": null, "output_base64": null,
            "error": {"kind": "error", "message": "boom"},
            "created_at": "c", "finished_at": "f", "duration_ms": 0.5, "cpu_ms": 0.25,
            "logs": [{"level": "info", "message": "starting"}], "worker": "w-1",
        }))
        .unwrap();
        let text = invocation_details(&view);
        assert!(text.contains("status      failed\n"), "{text}");
        assert!(text.contains("error       error: boom\n"), "{text}");
        assert!(text.contains("duration    0.5 ms\n"), "{text}");
        assert!(text.contains("  info   starting\n"), "{text}");
        assert!(!text.contains("output"), "{text}");
    }

    #[test]
    fn queued_invocation_shows_dashes() {
        let view: Invocation = serde_json::from_value(json!({
            "invocation_id": "id-2", "function": "hello", "version": null,
            "status": "queued", "attempts": 0, "output": null, "output_base64": null,
            "error": null, "created_at": "c", "finished_at": null, "duration_ms": null,
            "cpu_ms": null, "logs": [], "worker": null,
        }))
        .unwrap();
        let text = invocation_details(&view);
        assert!(text.contains("version     -\n"), "{text}");
        assert!(text.contains("finished    -\n"), "{text}");
        assert!(text.contains("duration    -\n"), "{text}");
    }

    #[test]
    fn multi_line_output_is_indented_under_its_label() {
        let view: Invocation = serde_json::from_value(json!({
            "invocation_id": "id-3", "function": "hello", "version": "sha256:00",
            "status": "succeeded", "attempts": 1, "output": "a\nb", "output_base64": null,
            "error": null, "created_at": "c", "finished_at": "f", "duration_ms": 12.0,
            "cpu_ms": 1.0, "logs": [], "worker": "w-1",
        }))
        .unwrap();
        let text = invocation_details(&view);
        assert!(text.ends_with("output:\n  a\n  b\n"), "{text}");
        assert!(text.contains("duration    12 ms\n"), "{text}");
    }

    #[test]
    fn an_output_stored_apart_is_named_by_its_size_and_where_to_read_it() {
        let view: Invocation = serde_json::from_value(json!({
            "invocation_id": "id-4", "function": "big", "version": "sha256:00",
            "status": "succeeded", "attempts": 1, "output": null, "output_base64": null,
            "output_stored_bytes": 52428800,
            "error": null, "created_at": "c", "finished_at": "f", "duration_ms": 12.0,
            "cpu_ms": 1.0, "logs": [], "worker": "w-1",
        }))
        .unwrap();
        let text = invocation_details(&view);
        assert!(
            text.contains("(52428800 bytes, stored apart: GET /v1/invocations/id-4/output)"),
            "{text}"
        );
    }

    #[test]
    fn dead_letters_show_kind_attempts_headers_and_payload() {
        let summary = json!({"id": "d-1", "invocation_id": "d-1", "function": "flaky",
            "version": "sha256:0123456789abcdef", "status": "dead_lettered", "kind": null,
            "attempts": 2, "created_at": "c", "dead_lettered_at": "t"});
        let list: DeadLetterList =
            serde_json::from_value(json!({"dead_letters": [summary.clone()]})).unwrap();
        let table = dead_letter_table(&list);
        assert!(table.starts_with("ID "), "{table}");
        assert!(table.contains("dead_lettered  -  "), "{table}");
        let mut letter = summary;
        letter.as_object_mut().unwrap().extend(
            json!({"payload": "{}", "payload_base64": null,
                "headers": {"squall-attempt": "2"},
                "attempt_history": [{"attempt": 1, "kind": "retry", "message": "again",
                    "started_at": null, "finished_at": null, "duration_ms": 1.0, "worker": "w"}]})
            .as_object()
            .unwrap()
            .clone(),
        );
        let letter: DeadLetter = serde_json::from_value(letter).unwrap();
        let text = dead_letter_details(&letter);
        assert!(
            text.contains("function:         flaky (0123456789ab)\n"),
            "{text}"
        );
        assert!(text.contains("payload:          {}\n"), "{text}");
        assert!(
            text.contains("header:           squall-attempt: 2\n"),
            "{text}"
        );
        assert!(text.contains("attempt 1:        retry: again\n"), "{text}");
        let none = DeadLetterList {
            dead_letters: vec![],
        };
        assert_eq!(dead_letter_table(&none), "no dead letters\n");
    }
}
