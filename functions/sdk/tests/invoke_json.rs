//! Typed handlers called through the C ABI: statuses, messages, input parsing, context and logs.

mod common;

use std::time::Duration;

use common::{invoke, invoke_with, Call};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use squall_sdk::abi::{
    SquallBuf, SquallBytes, SquallCtx, SquallOutput, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE,
    LOG_WARN, SQUALL_ERROR, SQUALL_OK, SQUALL_PANIC, SQUALL_RETRY,
};
use squall_sdk::{Context, FnError, Level};

/// Declares an `extern "C"` entry point over `__invoke_json`, as the macro does but without
/// `#[no_mangle]`, so one test binary can hold many handlers.
macro_rules! entry {
    ($name:ident, $handler:expr) => {
        unsafe extern "C" fn $name(
            ctx: *const SquallCtx,
            input: SquallBytes,
            out: *mut SquallOutput,
        ) -> i32 {
            // SAFETY: the test host upholds ABI v1 for the duration of the call.
            unsafe { squall_sdk::__invoke_json(ctx, input, out, $handler) }
        }
    };
}

unsafe extern "C" fn free(buf: SquallBuf) {
    // SAFETY: the test host frees each returned buffer once.
    unsafe { squall_sdk::__free(buf) }
}

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn greet(_ctx: &Context, input: Greet) -> Result<Greeting, FnError> {
    Ok(Greeting {
        greeting: format!("Hello, {}!", input.name),
    })
}
entry!(greet_entry, greet);

fn echo(_ctx: &Context, input: Value) -> Result<Value, FnError> {
    Ok(input)
}
entry!(echo_entry, echo);

fn refuse(_ctx: &Context, _input: Value) -> Result<Value, FnError> {
    Err(FnError::permanent("no such user"))
}
entry!(refuse_entry, refuse);

fn busy(_ctx: &Context, input: Option<u64>) -> Result<Value, FnError> {
    match input {
        Some(ms) => Err(FnError::retry_after(
            "database busy",
            Duration::from_millis(ms),
        )),
        None => Err(FnError::retry("database busy")),
    }
}
entry!(busy_entry, busy);

fn explode(_ctx: &Context, input: Value) -> Result<Value, FnError> {
    match input.as_str() {
        Some("static") => panic!("boom"),
        Some("formatted") => panic!("boom number {}", 7),
        _ => std::panic::panic_any(42_u32),
    }
}
entry!(explode_entry, explode);

fn chatty(ctx: &Context, _input: Value) -> Result<Value, FnError> {
    ctx.error("an error line");
    ctx.warn("a warn line");
    ctx.info("an info line");
    ctx.debug("a debug line");
    ctx.trace("a trace line");
    ctx.log(Level::Info, "via log");
    Ok(Value::Null)
}
entry!(chatty_entry, chatty);

fn describe(ctx: &Context, _input: Value) -> Result<Value, FnError> {
    Ok(json!({
        "function": ctx.function(),
        "invocation_id": ctx.invocation_id(),
        "attempt": ctx.attempt(),
        "deadline_unix_ms": ctx.deadline_unix_ms(),
        "traceparent": ctx.traceparent(),
        "config": ctx.config(),
        "config_raw": String::from_utf8_lossy(ctx.config_raw()),
        "event": ctx.event(),
        "can_log": ctx.host().can_log(),
    }))
}
entry!(describe_entry, describe);

#[derive(Deserialize)]
#[allow(dead_code)]
struct Settings {
    limit: u32,
}

fn read_settings(ctx: &Context, _input: Value) -> Result<Value, FnError> {
    let settings: Settings = serde_json::from_value(ctx.config().clone())?;
    Ok(json!(settings.limit))
}
entry!(read_settings_entry, read_settings);

#[test]
fn ok_returns_the_serialized_output() {
    let outcome = invoke(greet_entry, free, br#"{"name": "Ada"}"#);
    assert_eq!(outcome.status, SQUALL_OK);
    assert_eq!(outcome.text(), r#"{"greeting":"Hello, Ada!"}"#);
    assert_eq!(outcome.retry_after_ms, 0);
}

#[test]
fn empty_input_is_json_null() {
    let outcome = invoke(echo_entry, free, b"");
    assert_eq!(outcome.status, SQUALL_OK);
    assert_eq!(outcome.text(), "null");
}

#[test]
fn empty_input_fails_a_handler_that_requires_input() {
    let outcome = invoke(greet_entry, free, b"");
    assert_eq!(outcome.status, SQUALL_ERROR);
    assert!(
        outcome
            .text()
            .starts_with("invalid input: invalid type: null"),
        "{}",
        outcome.text()
    );
}

#[test]
fn invalid_json_input_is_a_permanent_error() {
    let outcome = invoke(greet_entry, free, b"{not json");
    assert_eq!(outcome.status, SQUALL_ERROR);
    assert!(
        outcome.text().starts_with("invalid input: "),
        "{}",
        outcome.text()
    );
    assert_eq!(outcome.retry_after_ms, 0);
}

#[test]
fn permanent_error_returns_squall_error_with_the_message() {
    let outcome = invoke(refuse_entry, free, b"{}");
    assert_eq!(outcome.status, SQUALL_ERROR);
    assert_eq!(outcome.text(), "no such user");
    assert_eq!(outcome.retry_after_ms, 0);
}

#[test]
fn retry_after_returns_squall_retry_with_the_delay() {
    let outcome = invoke(busy_entry, free, b"250");
    assert_eq!(outcome.status, SQUALL_RETRY);
    assert_eq!(outcome.text(), "database busy");
    assert_eq!(outcome.retry_after_ms, 250);
}

#[test]
fn retry_without_a_delay_leaves_it_to_the_policy() {
    let outcome = invoke(busy_entry, free, b"");
    assert_eq!(outcome.status, SQUALL_RETRY);
    assert_eq!(outcome.retry_after_ms, 0);
}

#[test]
fn panic_returns_squall_panic_with_the_message() {
    let outcome = invoke(explode_entry, free, br#""static""#);
    assert_eq!(outcome.status, SQUALL_PANIC);
    assert_eq!(outcome.text(), "boom");

    let outcome = invoke(explode_entry, free, br#""formatted""#);
    assert_eq!(outcome.status, SQUALL_PANIC);
    assert_eq!(outcome.text(), "boom number 7");
}

#[test]
fn panic_with_a_non_string_payload_has_a_generic_message() {
    let outcome = invoke(explode_entry, free, b"1");
    assert_eq!(outcome.status, SQUALL_PANIC);
    assert_eq!(outcome.text(), "function panicked");
}

#[test]
fn logs_reach_the_host_with_their_levels() {
    let outcome = invoke(chatty_entry, free, b"");
    assert_eq!(outcome.status, SQUALL_OK);
    assert_eq!(
        outcome.logs,
        vec![
            (LOG_ERROR, "an error line".to_owned()),
            (LOG_WARN, "a warn line".to_owned()),
            (LOG_INFO, "an info line".to_owned()),
            (LOG_DEBUG, "a debug line".to_owned()),
            (LOG_TRACE, "a trace line".to_owned()),
            (LOG_INFO, "via log".to_owned()),
        ]
    );
}

#[test]
fn the_handler_sees_the_context_the_host_built() {
    let call = Call {
        function: "describe",
        invocation_id: "0193abc",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        config: br#"{"greeting": "Hi"}"#,
        event: br#"{"source": "cron", "schedule": "* * * * *"}"#,
        attempt: 3,
        deadline_unix_ms: 1_700_000_000_123,
        ..Call::default()
    };
    let outcome = invoke_with(describe_entry, free, b"", &call);
    assert_eq!(outcome.status, SQUALL_OK, "{}", outcome.text());
    let seen: Value = serde_json::from_slice(&outcome.body).unwrap();
    assert_eq!(
        seen,
        json!({
            "function": "describe",
            "invocation_id": "0193abc",
            "attempt": 3,
            "deadline_unix_ms": 1_700_000_000_123_u64,
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "config": {"greeting": "Hi"},
            "config_raw": r#"{"greeting": "Hi"}"#,
            "event": {"source": "cron", "schedule": "* * * * *"},
            "can_log": true,
        })
    );
}

#[test]
fn empty_or_invalid_config_reads_as_an_empty_object() {
    for config in [&b""[..], b"{oops"] {
        let call = Call {
            config,
            event: b"",
            ..Call::default()
        };
        let seen: Value =
            serde_json::from_slice(&invoke_with(describe_entry, free, b"", &call).body).unwrap();
        assert_eq!(seen["config"], json!({}));
        assert_eq!(seen["event"], json!({}));
        assert_eq!(seen["traceparent"], Value::Null);
    }
}

#[test]
fn fields_beyond_the_ctx_size_are_not_read() {
    // An older host whose ctx ends after `invocation_id`.
    let call = Call {
        ctx_size: Some(40),
        ..Call::default()
    };
    let seen: Value =
        serde_json::from_slice(&invoke_with(describe_entry, free, b"", &call).body).unwrap();
    assert_eq!(seen["function"], "hello");
    assert_eq!(seen["invocation_id"], "0193-test");
    assert_eq!(seen["attempt"], 0);
    assert_eq!(seen["event"], json!({}));
    assert_eq!(seen["can_log"], false);
}

#[test]
fn a_host_too_small_to_hold_log_gets_no_log_calls() {
    let call = Call {
        host_size: Some(16),
        ..Call::default()
    };
    let outcome = invoke_with(chatty_entry, free, b"", &call);
    assert_eq!(outcome.status, SQUALL_OK);
    assert!(outcome.logs.is_empty());
}

#[test]
fn a_null_ctx_runs_with_an_empty_context() {
    let mut out = SquallOutput {
        body: SquallBuf::EMPTY,
        retry_after_ms: 0,
    };
    // SAFETY: a null ctx is accepted; `out` is valid for the call.
    let status = unsafe { describe_entry(std::ptr::null(), SquallBytes::EMPTY, &mut out) };
    assert_eq!(status, SQUALL_OK);
    // SAFETY: the body is `len` bytes owned by the SDK until freed below.
    let body = unsafe {
        SquallBytes {
            ptr: out.body.ptr,
            len: out.body.len,
        }
        .as_slice()
    };
    let seen: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(seen["function"], "");
    assert_eq!(seen["can_log"], false);
    // SAFETY: freed once.
    unsafe { free(out.body) };
}

#[test]
fn a_json_error_inside_the_handler_is_permanent() {
    let call = Call {
        config: br#"{"limit": "many"}"#,
        ..Call::default()
    };
    let outcome = invoke_with(read_settings_entry, free, b"", &call);
    assert_eq!(outcome.status, SQUALL_ERROR);
    assert!(
        outcome.text().contains("invalid type"),
        "{}",
        outcome.text()
    );
}
