//! Example function: answers with what reached it (its input, the event that triggered it, and
//! the length of each secret, never a secret itself), to see what schedules, triggers and
//! secrets deliver.

use squall_sdk::{export_raw_function, Context, FnError};

/// Output: `{"input": <the input as text>, "event": <the event object>,
/// "secret_lengths": {<name>: <length>}}`.
pub fn echo(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let secret_lengths: serde_json::Map<String, serde_json::Value> = ctx
        .config()
        .get("secrets")
        .and_then(|s| s.as_object())
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.clone(), value.as_str().map_or(0, str::len).into()))
        .collect();
    let view = serde_json::json!({
        "input": String::from_utf8_lossy(input),
        "event": ctx.event(),
        "secret_lengths": secret_lengths,
    });
    Ok(view.to_string().into_bytes())
}

export_raw_function!(echo);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_input_and_event() {
        let event = br#"{"source": "kv", "key": "app.color", "op": "put"}"#;
        let ctx = Context::new("echo", "1").with_event(event);
        let out: serde_json::Value = serde_json::from_slice(&echo(&ctx, b"blue").unwrap()).unwrap();
        assert_eq!(out["input"], "blue");
        assert_eq!(out["event"]["key"], "app.color");
        assert_eq!(out["event"]["op"], "put");
        let config = br#"{"secrets": {"TOKEN": "abcd"}}"#;
        let ctx = Context::new("echo", "1").with_config(config);
        let out: serde_json::Value = serde_json::from_slice(&echo(&ctx, b"").unwrap()).unwrap();
        assert_eq!(out["secret_lengths"]["TOKEN"], 4);
        assert!(!out.to_string().contains("abcd"));
    }
}
