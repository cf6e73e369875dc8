//! Calls into opened bundles: events and results, errors, retries, logs and concurrency.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bundle, call, call_with, Call, Services};
use serde_json::{json, Value};
use squall_runtime_python::Function;
use squall_sdk::abi::{
    LOG_ERROR, LOG_INFO, LOG_WARN, SQUALL_HOST_DENIED, SQUALL_HOST_TOO_LARGE,
    SQUALL_HOST_UNAVAILABLE,
};
use squall_sdk::FnError;

fn open(handler: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Function) {
    let dir = bundle(handler, files);
    let function = Function::open(dir.path()).expect("bundle opens");
    (dir, function)
}

fn json_of(output: Result<Vec<u8>, FnError>) -> Value {
    serde_json::from_slice(&output.expect("call succeeds")).expect("JSON output")
}

const HELLO: &str = r#"
def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    context.logger.info(f"greeting {name}")
    return {"message": f"Hello, {name}!"}
"#;

#[test]
fn a_handler_returns_json_and_logs_through_the_context() {
    let (_dir, function) = open("app.handler", &[("app.py", HELLO)]);
    let (output, logs) = call(Call::default(), |ctx| {
        function.invoke(ctx, br#"{"name": "Ada"}"#)
    });
    assert_eq!(json_of(output), json!({"message": "Hello, Ada!"}));
    assert!(
        logs.contains(LOG_INFO, "greeting Ada"),
        "{:?}",
        logs.lines()
    );
}

#[test]
fn bytes_that_are_not_json_arrive_as_bytes_and_bytes_return_as_they_are() {
    let source = r#"
def handler(event, context):
    assert isinstance(event, bytes), type(event)
    return event[::-1] + b"\xff"
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| {
        function.invoke(ctx, b"\x00\x01not json")
    });
    assert_eq!(output.unwrap(), b"nosj ton\x01\x00\xff");
}

#[test]
fn strings_return_as_utf8_none_as_null_and_empty_input_as_none() {
    let source = r#"
def text(event, context):
    return "héllo"

def nothing(event, context):
    assert event is None
    return None
"#;
    let (_dir, text) = open("app.text", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| text.invoke(ctx, b""));
    assert_eq!(output.unwrap(), "héllo".as_bytes());
    let (_dir, nothing) = open("app.nothing", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| nothing.invoke(ctx, b""));
    assert_eq!(output.unwrap(), b"null");
}

#[test]
fn an_exception_fails_the_call_with_its_type_and_logs_the_traceback() {
    let source = r#"
def check(value):
    raise ValueError(f"bad value {value}")

def handler(event, context):
    check(event["value"])
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, logs) = call(Call::default(), |ctx| {
        function.invoke(ctx, br#"{"value": 7}"#)
    });
    assert_eq!(output, Err(FnError::permanent("ValueError: bad value 7")));
    let errors = logs.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let trace = &errors[0];
    assert!(
        trace.starts_with("Traceback (most recent call last):"),
        "{trace}"
    );
    assert!(
        trace.contains("in handler") && trace.contains("in check"),
        "{trace}"
    );
    assert!(trace.ends_with("ValueError: bad value 7"), "{trace}");
    assert!(
        !trace.contains("squall_runtime.py"),
        "the runtime's own frame shows: {trace}"
    );
}

#[test]
fn an_output_that_is_not_json_serialisable_is_a_function_error() {
    let source = "def handler(event, context):\n    return {1, 2}\n";
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    let message = output.unwrap_err();
    assert!(!message.is_retry());
    assert!(message.message().starts_with("TypeError: "), "{message}");
}

#[test]
fn raising_retry_asks_for_another_attempt_after_the_delay() {
    let source = r#"
import squall

def handler(event, context):
    raise squall.Retry(after_ms=1500, message="store busy")

def soon(event, context):
    raise squall.Retry()
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, logs) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(
        output,
        Err(FnError::retry_after(
            "store busy",
            Duration::from_millis(1500)
        ))
    );
    assert!(
        logs.errors().is_empty(),
        "a retry is not an error: {:?}",
        logs.lines()
    );
    let (_dir, soon) = open("app.soon", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| soon.invoke(ctx, b"{}"));
    assert_eq!(output, Err(FnError::retry("retry requested")));
}

#[test]
fn a_local_copy_of_retry_is_recognised_by_its_name_and_delay() {
    let source = r#"
class Retry(Exception):
    def __init__(self, after_ms):
        super().__init__("mine")
        self.after_ms = after_ms

def handler(event, context):
    raise Retry(250)
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(
        output,
        Err(FnError::retry_after("mine", Duration::from_millis(250)))
    );
}

#[test]
fn the_context_carries_the_invocation_config_and_secrets() {
    let source = r#"
def handler(event, context):
    return {
        "function": context.function_name,
        "invocation": context.invocation_id,
        "attempt": context.attempt,
        "deadline": context.deadline_ms,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 60_000,
        "greeting": context.config["greeting"],
        "secrets": context.secrets,
        "trigger": context.trigger["source"],
        "cancelled": context.cancelled(),
    }
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let config = r#"{"greeting": "Hi", "secrets": {"token": "s3"}}"#;
    let context = Call {
        config,
        attempt: 3,
        deadline_unix_ms: now_ms + 30_000,
        ..Call::default()
    };
    let (output, _) = call(context, |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(
        json_of(output),
        json!({
            "function": "fn-test", "invocation": "inv-1", "attempt": 3,
            "deadline": now_ms + 30_000, "remaining_ok": true, "greeting": "Hi",
            "secrets": {"token": "s3"}, "trigger": "http", "cancelled": false,
        })
    );
}

#[test]
fn a_host_without_services_raises_host_error_with_its_code() {
    let source = r#"
import squall

def handler(event, context):
    try:
        context.kv_get("counter")
    except squall.HostError as error:
        return {"code": error.code, "message": str(error)}
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(
        json_of(output),
        json!({"code": "unsupported", "message": "kv_get: the host offers no state or event services"})
    );
}

#[test]
fn print_and_logging_land_in_the_invocations_logs() {
    let source = r#"
import logging
import sys

def handler(event, context):
    print("printed", "line")
    print("partial", end="")
    sys.stderr.write("to stderr\n")
    logging.getLogger("app").warning("careful %s", 42)
    context.logger.error("by the logger")
    return None
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, logs) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(output.unwrap(), b"null");
    for (level, line) in [
        (LOG_INFO, "printed line"),
        (LOG_INFO, "partial"),
        (LOG_WARN, "to stderr"),
        (LOG_WARN, "app: careful 42"),
        (LOG_ERROR, "by the logger"),
    ] {
        assert!(
            logs.contains(level, line),
            "{line:?} missing from {:?}",
            logs.lines()
        );
    }
}

#[test]
fn a_web_call_gets_the_request_with_its_body_and_returns_the_response_shape() {
    let source = r#"
def handler(event, context):
    assert event["query"] == {} and event["raw_query"] == "", event
    return {"statusCode": 201, "headers": {"x-path": event["path"]},
            "body": event["body"].upper(), "isBase64Encoded": event["isBase64Encoded"]}
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let event = r#"{"source": "web", "method": "POST", "path": "/items", "headers": {}}"#;
    let (output, _) = call(
        Call {
            event,
            ..Call::default()
        },
        |ctx| function.invoke(ctx, b"hi"),
    );
    assert_eq!(
        json_of(output),
        json!({"statusCode": 201, "headers": {"x-path": "/items"}, "body": "HI", "isBase64Encoded": false})
    );
}

#[test]
fn c_extension_modules_import() {
    let source = r#"
import math, _json, _decimal, json, decimal

def handler(event, context):
    return {"sqrt": math.sqrt(16), "decimal": str(decimal.Decimal("1.1") + decimal.Decimal("2.2"))}
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(json_of(output), json!({"sqrt": 4.0, "decimal": "3.3"}));
}

#[test]
fn two_bundles_in_one_process_keep_their_own_handlers_and_modules() {
    let version = |n: &str| {
        let helpers = format!("VERSION = {n}\n");
        let app = "import helpers\n\ndef handler(event, context):\n    return helpers.VERSION\n";
        bundle("app.handler", &[("app.py", app), ("helpers.py", &helpers)])
    };
    let (one, two) = (version("1"), version("2"));
    let first = Function::open(one.path()).unwrap();
    let second = Function::open(two.path()).unwrap();
    let (a, _) = call(Call::default(), |ctx| first.invoke(ctx, b""));
    let (b, _) = call(Call::default(), |ctx| second.invoke(ctx, b""));
    assert_eq!((a.unwrap(), b.unwrap()), (b"1".to_vec(), b"2".to_vec()));
}

#[test]
fn calls_from_four_threads_at_once_all_succeed() {
    let source = r#"
import threading, time

def handler(event, context):
    total = sum(range(event["n"]))
    time.sleep(0.01)
    print("thread", threading.get_ident())
    return {"n": event["n"], "total": total, "id": context.invocation_id}
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let function = &function;
                scope.spawn(move || {
                    for i in 0..25 {
                        let n = 1000 * t + i;
                        let input = format!(r#"{{"n": {n}}}"#);
                        let (output, logs) = call(Call::default(), |ctx| {
                            function.invoke(ctx, input.as_bytes())
                        });
                        let expected = json!({"n": n, "total": n * (n - 1) / 2, "id": "inv-1"});
                        assert_eq!(json_of(output), expected);
                        assert_eq!(logs.lines().len(), 1, "{:?}", logs.lines());
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("no call panicked");
        }
    });
}

#[test]
fn a_context_kept_past_its_call_refuses_use_instead_of_crashing() {
    let source = r#"
kept = []

def handler(event, context):
    if event == "keep":
        kept.append(context)
        return None
    try:
        kept[0].kv_get("k")
    except RuntimeError as error:
        return str(error)
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, br#""keep""#));
    assert_eq!(output.unwrap(), b"null");
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, br#""use""#));
    let message = String::from_utf8(output.unwrap()).unwrap();
    assert!(message.contains("has ended"), "{message}");
}

const COUNTER: &str = r#"
def handler(event, context):
    if context.cancelled():
        return "cancelled"
    count = int(context.kv_get("count") or b"0") + 1
    context.kv_put("count", str(count), ttl_ms=60_000)
    context.kv_delete("scratch")
    context.publish("events.counted", {"count": count}.__repr__())
    return {"count": count, "missing": context.kv_get("nothing")}
"#;

#[test]
fn host_services_reach_the_host() {
    let (_dir, function) = open("app.handler", &[("app.py", COUNTER)]);
    let services = Services::default();
    services
        .kv
        .lock()
        .unwrap()
        .insert("count".into(), b"41".to_vec());
    services
        .kv
        .lock()
        .unwrap()
        .insert("scratch".into(), b"x".to_vec());
    let (output, _) = call_with(Call::default(), Some(&services), |ctx| {
        function.invoke(ctx, b"{}")
    });
    assert_eq!(json_of(output), json!({"count": 42, "missing": null}));
    let kv = services.kv.lock().unwrap().clone();
    assert_eq!(kv.get("count").map(Vec::as_slice), Some(&b"42"[..]));
    assert!(!kv.contains_key("scratch"));
    let published = services.published.lock().unwrap().clone();
    assert_eq!(
        published,
        vec![("events.counted".to_owned(), b"{'count': 42}".to_vec())]
    );

    let cancelled = Services {
        cancelled: true,
        ..Services::default()
    };
    let (output, _) = call_with(Call::default(), Some(&cancelled), |ctx| {
        function.invoke(ctx, b"{}")
    });
    assert_eq!(output.unwrap(), b"cancelled");
}

#[test]
fn an_uncaught_unavailable_store_asks_for_a_retry_and_other_host_errors_fail() {
    let (_dir, function) = open("app.handler", &[("app.py", COUNTER)]);
    let busy = Services {
        failure: Some(SQUALL_HOST_UNAVAILABLE),
        ..Services::default()
    };
    let (output, _) = call_with(Call::default(), Some(&busy), |ctx| {
        function.invoke(ctx, b"{}")
    });
    let error = output.unwrap_err();
    assert!(error.is_retry(), "{error:?}");
    assert!(
        error.message().starts_with("HostError: kv_get: "),
        "{error}"
    );
    let denied = Services {
        failure: Some(SQUALL_HOST_DENIED),
        ..Services::default()
    };
    let (output, _) = call_with(Call::default(), Some(&denied), |ctx| {
        function.invoke(ctx, b"{}")
    });
    assert_eq!(
        output,
        Err(FnError::permanent("HostError: kv_get: not allowed"))
    );
}

const STREAMER: &str = r#"
import squall

def handler(event, context):
    try:
        context.stream_write(b"one ")
        context.stream_write("two ")
        context.stream_write(bytearray(b"three "))
    except squall.HostError as error:
        return f"{error.code}: {error}"
    if event == "silent":
        return None
    return "four"
"#;

#[test]
fn streamed_chunks_reach_the_host_in_order_and_the_returned_body_stays_separate() {
    let (_dir, function) = open("app.handler", &[("app.py", STREAMER)]);
    let services = Services::default();
    let (output, _) = call_with(Call::default(), Some(&services), |ctx| {
        function.invoke(ctx, b"{}")
    });
    assert_eq!(output.unwrap(), b"four");
    let streamed = services.streamed.lock().unwrap().clone();
    assert_eq!(streamed, [&b"one "[..], b"two ", b"three "]);
}

#[test]
fn a_handler_that_streamed_and_returns_none_adds_no_last_chunk() {
    let (_dir, function) = open("app.handler", &[("app.py", STREAMER)]);
    let services = Services::default();
    let (output, _) = call_with(Call::default(), Some(&services), |ctx| {
        function.invoke(ctx, br#""silent""#)
    });
    assert_eq!(output.unwrap(), b"");
    assert_eq!(services.streamed.lock().unwrap().len(), 3);
    // Without streaming, None is still `null`.
    let (_dir, function) = open(
        "app.handler",
        &[("app.py", "def handler(e, c):\n    pass\n")],
    );
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b""));
    assert_eq!(output.unwrap(), b"null");
}

#[test]
fn a_failed_stream_write_raises_host_error_with_its_code() {
    let (_dir, function) = open("app.handler", &[("app.py", STREAMER)]);
    let full = Services {
        failure: Some(SQUALL_HOST_TOO_LARGE),
        ..Services::default()
    };
    let (output, _) = call_with(Call::default(), Some(&full), |ctx| {
        function.invoke(ctx, b"{}")
    });
    let message = String::from_utf8(output.unwrap()).unwrap();
    assert!(
        message.starts_with("too_large: stream_write: "),
        "{message}"
    );
    assert!(full.streamed.lock().unwrap().is_empty());
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    let message = String::from_utf8(output.unwrap()).unwrap();
    assert!(
        message.starts_with("unsupported: stream_write: "),
        "{message}"
    );
}

#[test]
fn a_thread_using_the_context_when_the_call_ends_is_cut_off_safely() {
    let source = r#"
import threading

threads = []

def handler(event, context):
    if event == "join":
        for thread in threads:
            thread.join(10)
        return [thread.uses for thread in threads if not thread.is_alive()]

    def hammer():
        me = threading.current_thread()
        me.uses = 0
        while True:
            try:
                context.kv_get("k")
            except RuntimeError:
                return
            me.uses += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    threads.append(thread)
    while getattr(thread, "uses", 0) < 10:
        pass
    return None
"#;
    let (_dir, function) = open("app.handler", &[("app.py", source)]);
    for _ in 0..5 {
        let services = Services::default();
        let (output, _) = call_with(Call::default(), Some(&services), |ctx| {
            function.invoke(ctx, b"{}")
        });
        assert_eq!(output.unwrap(), b"null");
    }
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, br#""join""#));
    let finished: Vec<u64> = serde_json::from_slice(&output.unwrap()).unwrap();
    assert_eq!(finished.len(), 5, "threads still running: {finished:?}");
    assert!(finished.iter().all(|uses| *uses >= 10), "{finished:?}");
}

#[test]
fn a_handler_in_a_package_module_can_use_relative_imports() {
    let files = [
        ("pkg/__init__.py", ""),
        ("pkg/shared.py", "GREETING = 'hi'\n"),
        (
            "pkg/app.py",
            "from .shared import GREETING\n\ndef handler(event, context):\n    return GREETING\n",
        ),
    ];
    let (_dir, function) = open("pkg.app.handler", &files);
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b""));
    assert_eq!(output.unwrap(), b"hi");
}

#[test]
fn a_module_that_fails_to_import_names_the_file_and_keeps_its_traceback() {
    let dir = bundle(
        "app.handler",
        &[
            ("app.py", "import helpers\n"),
            ("helpers.py", "x = 1 / 0\n"),
        ],
    );
    let error = Function::open(dir.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("importing app.py failed:\nTraceback"),
        "{error}"
    );
    assert!(error.contains("helpers.py\", line 1"), "{error}");
    assert!(
        error.ends_with("ZeroDivisionError: division by zero"),
        "{error}"
    );
}
