//! Example function: answers with what reached it (its input and the event that triggered it),
//! to see what schedules, subject triggers and key-value triggers deliver.

use squall_sdk::{export_raw_function, Context, FnError};

/// Output: `{"input": <the input as text>, "event": <the event object>}`.
pub fn echo(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let view = serde_json::json!({
        "input": String::from_utf8_lossy(input),
        "event": ctx.event(),
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
    }
}
