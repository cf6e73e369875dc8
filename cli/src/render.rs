//! Human-readable renderings of the API's JSON answers; pure, so they are tested without a server.

use serde_json::Value;

/// A version hash cut to its first 12 hex digits: `sha256:3f2a…` → `3f2a9c1d0b7e`.
pub fn short_version(version: &str) -> &str {
    let hex = version.split_once(':').map_or(version, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

/// The `ls` table of `{"functions": [...]}`.
pub fn function_table(list: &Value) -> String {
    let functions = list["functions"].as_array().cloned().unwrap_or_default();
    if functions.is_empty() {
        return "no functions deployed\n".to_string();
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".to_string(),
        "DEPLOYED".to_string(),
    ]];
    for f in &functions {
        rows.push([
            text(&f["name"]).to_string(),
            short_version(text(&f["version"])).to_string(),
            text(&f["deployed_at"]).to_string(),
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

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// The `get` view of an invocation.
pub fn invocation_details(view: &Value) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("invocation", text(&view["invocation_id"]).to_string()),
        ("function", text(&view["function"]).to_string()),
        ("version", text(&view["version"]).to_string()),
        ("status", text(&view["status"]).to_string()),
        (
            "attempts",
            view["attempts"]
                .as_u64()
                .map_or("-".to_string(), |n| n.to_string()),
        ),
        ("created", text(&view["created_at"]).to_string()),
        ("finished", text(&view["finished_at"]).to_string()),
        (
            "duration",
            view["duration_ms"]
                .as_f64()
                .map_or("-".to_string(), |ms| format!("{ms} ms")),
        ),
    ];
    if let Some(error) = view["error"].as_object() {
        let kind = error.get("kind").and_then(Value::as_str).unwrap_or("error");
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        rows.push(("error", format!("{kind}: {message}")));
    }
    if let Some(output) = view["output"].as_str() {
        rows.push(("output", output.to_string()));
    } else if let Some(encoded) = view["output_base64"].as_str() {
        rows.push(("output", format!("(binary, base64) {encoded}")));
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
    let logs = view["logs"].as_array().cloned().unwrap_or_default();
    if !logs.is_empty() {
        out.push_str("logs:\n");
        for log in &logs {
            out.push_str(&format!(
                "  {:<5}  {}\n",
                text(&log["level"]),
                text(&log["message"])
            ));
        }
    }
    out
}

/// The `squall dlq ls` table.
pub fn dead_letter_table(list: &Value) -> String {
    let letters = list["dead_letters"].as_array().cloned().unwrap_or_default();
    if letters.is_empty() {
        return "no dead letters\n".to_string();
    }
    let mut out = format!(
        "{:<36}  {:<20}  {:<13}  {:<8}  {:>8}  {}\n",
        "ID", "FUNCTION", "STATUS", "KIND", "ATTEMPTS", "DEAD-LETTERED AT"
    );
    for letter in letters {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<13}  {:<8}  {:>8}  {}\n",
            letter["id"].as_str().unwrap_or_default(),
            letter["function"].as_str().unwrap_or_default(),
            letter["status"].as_str().unwrap_or_default(),
            letter["kind"].as_str().unwrap_or("-"),
            letter["attempts"].as_u64().unwrap_or_default(),
            letter["dead_lettered_at"].as_str().unwrap_or_default(),
        ));
    }
    out
}

/// The `squall dlq show` text.
pub fn dead_letter_details(letter: &Value) -> String {
    let text = |key: &str| letter[key].as_str().unwrap_or("-").to_string();
    let mut out = String::new();
    out.push_str(&format!("dead letter {}\n", text("id")));
    out.push_str(&format!(
        "  function:         {} ({})\n",
        text("function"),
        short_version(&text("version"))
    ));
    out.push_str(&format!("  status:           {}\n", text("status")));
    out.push_str(&format!("  created at:       {}\n", text("created_at")));
    out.push_str(&format!(
        "  dead-lettered at: {}\n",
        text("dead_lettered_at")
    ));
    match (
        letter["payload"].as_str(),
        letter["payload_base64"].as_str(),
    ) {
        (Some(payload), _) => out.push_str(&format!("  payload:          {payload}\n")),
        (None, Some(b64)) => out.push_str(&format!("  payload (base64): {b64}\n")),
        _ => {}
    }
    if let Some(headers) = letter["headers"].as_object() {
        for (name, value) in headers {
            out.push_str(&format!(
                "  header:           {name}: {}\n",
                value.as_str().unwrap_or_default()
            ));
        }
    }
    for attempt in letter["attempt_history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "  attempt {}:        {}: {}\n",
            attempt["attempt"].as_u64().unwrap_or_default(),
            attempt["kind"].as_str().unwrap_or("-"),
            attempt["message"].as_str().unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_are_shortened_to_twelve_hex_digits() {
        assert_eq!(short_version("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_version("abc"), "abc");
    }

    #[test]
    fn function_table_aligns_columns() {
        let list = json!({"functions": [
            {"name": "hello", "version": "sha256:0123456789abcdef", "deployed_at": "2030-01-01T00:00:00Z"},
            {"name": "c-hello-long", "version": "sha256:fedcba9876543210", "deployed_at": "2030-01-02T00:00:00Z"},
        ]});
        assert_eq!(
            function_table(&list),
            "NAME          VERSION       DEPLOYED\n\
             hello         0123456789ab  2030-01-01T00:00:00Z\n\
             c-hello-long  fedcba987654  2030-01-02T00:00:00Z\n"
        );
        assert_eq!(
            function_table(&json!({"functions": []})),
            "no functions deployed\n"
        );
    }

    #[test]
    fn invocation_details_show_error_output_and_logs() {
        let view = json!({
            "invocation_id": "id-1", "function": "fail", "version": "sha256:00",
            "status": "failed", "attempts": 1, "output": null, "output_base64": null,
            "error": {"kind": "error", "message": "boom"},
            "created_at": "c", "finished_at": "f", "duration_ms": 0.5,
            "logs": [{"level": "info", "message": "starting"}],
        });
        let text = invocation_details(&view);
        assert!(text.contains("status      failed\n"), "{text}");
        assert!(text.contains("error       error: boom\n"), "{text}");
        assert!(text.contains("duration    0.5 ms\n"), "{text}");
        assert!(text.contains("  info   starting\n"), "{text}");
        assert!(!text.contains("output"), "{text}");
    }

    #[test]
    fn queued_invocation_shows_dashes() {
        let view = json!({"invocation_id": "id-2", "function": "hello", "version": null,
            "status": "queued", "attempts": 0, "finished_at": null, "duration_ms": null});
        let text = invocation_details(&view);
        assert!(text.contains("version     -\n"), "{text}");
        assert!(text.contains("finished    -\n"), "{text}");
    }
}
