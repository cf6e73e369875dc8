//! Calls into opened bundles: input and output, config, logs, host services, errors, retries,
//! refused exits, web answers and concurrency, through a real JVM.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{bundle, call, call_with, jar, Call, Services};
use serde_json::{json, Value};
use squall_runtime_java::{Function, RuntimeError};
use squall_sdk::abi::{
    LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARN, SQUALL_HOST_DENIED, SQUALL_HOST_UNAVAILABLE,
};
use squall_sdk::FnError;

const ECHO: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Echo implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        byte[] out = new byte[input.length + 1];
        for (int i = 0; i < input.length; i++) {
            out[i] = input[input.length - 1 - i];
        }
        out[input.length] = (byte) 0xff;
        return out;
    }
}
"#;

const GREETER: &str = r#"
package app;

import java.util.LinkedHashMap;
import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Greeter implements JsonHandler {
    @Override
    @SuppressWarnings("unchecked")
    public Object handle(Context ctx, Object event) {
        Map<String, Object> input = (Map<String, Object>) event;
        ctx.info("greeting " + input.get("name"));
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("message", ctx.config().getOrDefault("greeting", "Hello") + ", " + input.get("name") + "!");
        out.put("token", ctx.secrets().get("token"));
        out.put("source", ctx.trigger().get("source"));
        out.put("attempt", ctx.attempt());
        out.put("function", ctx.functionName());
        out.put("invocation", ctx.invocationId());
        out.put("deadline", ctx.deadlineMs());
        out.put("traceparent", ctx.traceparent());
        out.put("numbers", java.util.List.of(1, 2.5, -3L));
        return out;
    }
}
"#;

const TYPES: &str = r#"
package app;

import squall.Context;
import squall.JsonHandler;

public class Types implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        return event == null ? "null" : event.getClass().getSimpleName();
    }
}
"#;

const PRINTER: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Printer implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        System.out.println("to stdout");
        System.err.println("to stderr");
        System.out.print("no newline at the end");
        ctx.warn("careful");
        ctx.log(Context.DEBUG, "detail");
        return new byte[0];
    }
}
"#;

const COUNTER: &str = r#"
package app;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Counter implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        String stored = ctx.kvGetText("count");
        long count = stored == null ? 1 : Long.parseLong(stored) + 1;
        ctx.kvPut("count", Long.toString(count), 60_000);
        ctx.kvDelete("gone");
        ctx.publish("events.counted", "count " + count);
        return Map.of("count", count, "missing", ctx.kvGet("nothing-here") == null);
    }
}
"#;

const THROWER: &str = r#"
package app;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Thrower implements JsonHandler {
    static void check(Object value) {
        throw new IllegalArgumentException("bad value " + value);
    }

    @Override
    public Object handle(Context ctx, Object event) {
        check(((Map<?, ?>) event).get("value"));
        return null;
    }
}
"#;

const RETRYING: &str = r#"
package app;

import squall.Context;
import squall.Handler;
import squall.Retry;

public class Retrying implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        if (input.length == 0) {
            throw new Retry();
        }
        throw new Retry(1500, "store busy");
    }
}
"#;

const HOST_USER: &str = r#"
package app;

import squall.Context;
import squall.Handler;
import squall.HostException;

public class HostUser implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        String what = new String(input);
        if (what.equals("catch")) {
            try {
                ctx.kvGet("k");
                return "no error".getBytes();
            } catch (HostException error) {
                return (error.code() + " " + error.retryable()).getBytes();
            }
        }
        if (what.equals("publish")) {
            ctx.publish("elsewhere", "x");
        }
        ctx.kvGet("k");
        return new byte[0];
    }
}
"#;

const EXITER: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Exiter implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        String what = new String(input);
        if (what.equals("exit")) {
            System.exit(3);
        }
        if (what.equals("halt")) {
            Runtime.getRuntime().halt(4);
        }
        if (what.equals("replace")) {
            System.setSecurityManager(null);
        }
        return "alive".getBytes();
    }
}
"#;

const WEB: &str = r#"
package app;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;
import squall.WebResponse;

public class Web implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        Map<?, ?> request = (Map<?, ?>) event;
        return WebResponse.status(201)
            .header("Content-Type", "text/plain")
            .cookie("id=7; Path=/")
            .body("created " + request.get("method") + " " + request.get("path") + " " + request.get("body"));
    }
}
"#;

const KEEPER: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Keeper implements Handler {
    static Context kept;

    @Override
    public byte[] handle(Context ctx, byte[] input) throws Exception {
        if (kept == null) {
            kept = ctx;
            return "kept".getBytes();
        }
        try {
            kept.functionName();
            return "the old context still works".getBytes();
        } catch (IllegalStateException refused) {
            String[] fromThread = new String[1];
            Thread other = new Thread(() -> {
                try {
                    ctx.kvGet("x");
                    fromThread[0] = "worked";
                } catch (IllegalStateException error) {
                    fromThread[0] = "refused";
                }
            });
            other.start();
            other.join();
            return (refused.getMessage() + " / other thread " + fromThread[0]).getBytes();
        }
    }
}
"#;

const SLOW: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Slow implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) throws Exception {
        String text = new String(input);
        if (text.startsWith("sleep")) {
            Thread.sleep(20);
        }
        System.out.println("line " + text);
        return (ctx.invocationId() + ":" + text).getBytes();
    }
}
"#;

const BROKEN: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Broken implements Handler {
    static {
        if (Boolean.parseBoolean("true")) {
            throw new IllegalStateException("boom while loading");
        }
    }

    @Override
    public byte[] handle(Context ctx, byte[] input) {
        return input;
    }
}
"#;

/// Every handler of this file, compiled once.
fn app() -> &'static std::path::Path {
    static JAR: OnceLock<std::path::PathBuf> = OnceLock::new();
    JAR.get_or_init(|| {
        jar(&[
            ("app/Echo.java", ECHO),
            ("app/Greeter.java", GREETER),
            ("app/Types.java", TYPES),
            ("app/Printer.java", PRINTER),
            ("app/Counter.java", COUNTER),
            ("app/Thrower.java", THROWER),
            ("app/Retrying.java", RETRYING),
            ("app/HostUser.java", HOST_USER),
            ("app/Exiter.java", EXITER),
            ("app/Web.java", WEB),
            ("app/Keeper.java", KEEPER),
            ("app/Slow.java", SLOW),
            ("app/Broken.java", BROKEN),
        ])
    })
}

fn open(handler: &str) -> (tempfile::TempDir, Function) {
    let dir = bundle(handler, app());
    let function = Function::open(dir.path()).expect("bundle opens");
    (dir, function)
}

fn json_of(output: Result<Vec<u8>, FnError>) -> Value {
    serde_json::from_slice(&output.expect("call succeeds")).expect("JSON output")
}

#[test]
fn a_handler_gets_the_input_bytes_and_its_bytes_are_the_output() {
    let (_dir, function) = open("app.Echo");
    let (output, _) = call(Call::default(), |ctx| {
        function.invoke(ctx, b"\x00\x01not json")
    });
    assert_eq!(output.unwrap(), b"nosj ton\x01\x00\xff");
}

#[test]
fn a_json_handler_reads_the_event_config_secrets_and_trigger() {
    let (_dir, function) = open("app.Greeter");
    let config = r#"{"greeting": "Hi", "secrets": {"token": "s3cret"}}"#;
    let call_data = Call {
        config,
        event: r#"{"source": "cron"}"#,
        attempt: 2,
        deadline_unix_ms: 1_700_000_000_000,
    };
    let (output, logs) = call(call_data, |ctx| function.invoke(ctx, br#"{"name": "Ada"}"#));
    assert_eq!(
        json_of(output),
        json!({
            "message": "Hi, Ada!", "token": "s3cret", "source": "cron", "attempt": 2,
            "function": "fn-test", "invocation": "inv-1", "deadline": 1_700_000_000_000u64,
            "traceparent": null, "numbers": [1, 2.5, -3]
        })
    );
    assert!(
        logs.contains(LOG_INFO, "greeting Ada"),
        "{:?}",
        logs.lines()
    );
}

#[test]
fn empty_input_is_null_json_is_parsed_and_other_bytes_stay_bytes() {
    let (_dir, function) = open("app.Types");
    let cases: [(&[u8], &str); 6] = [
        (b"", "\"null\""),
        (br#"{"a": 1}"#, "\"LinkedHashMap\""),
        (b"[1, 2]", "\"ArrayList\""),
        (b"7", "\"Long\""),
        (b"7.5", "\"Double\""),
        (b"\xffnot json", "\"byte[]\""),
    ];
    for (input, expected) in cases {
        let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, input));
        assert_eq!(
            String::from_utf8(output.unwrap()).unwrap(),
            expected,
            "{input:?}"
        );
    }
}

#[test]
fn context_logs_and_printed_lines_reach_the_invocation_logs() {
    let (_dir, function) = open("app.Printer");
    let (output, logs) = call(Call::default(), |ctx| function.invoke(ctx, b""));
    assert_eq!(output.unwrap(), b"");
    assert_eq!(
        logs.lines(),
        vec![
            (LOG_INFO, "to stdout".to_owned()),
            (LOG_WARN, "to stderr".to_owned()),
            (LOG_WARN, "careful".to_owned()),
            (LOG_DEBUG, "detail".to_owned()),
            (LOG_INFO, "no newline at the end".to_owned()),
        ]
    );
}

#[test]
fn state_and_events_go_through_the_host() {
    let (_dir, function) = open("app.Counter");
    let services = Services::default();
    services
        .kv
        .lock()
        .unwrap()
        .insert("gone".to_owned(), b"x".to_vec());
    for expected in [1, 2] {
        let (output, _) = call_with(Call::default(), Some(&services), |ctx| {
            function.invoke(ctx, b"")
        });
        assert_eq!(json_of(output), json!({"count": expected, "missing": true}));
    }
    let kv = services.kv.lock().unwrap();
    assert_eq!(kv.get("count").map(Vec::as_slice), Some(&b"2"[..]));
    assert!(!kv.contains_key("gone"));
    assert_eq!(
        *services.published.lock().unwrap(),
        vec![
            ("events.counted".to_owned(), b"count 1".to_vec()),
            ("events.counted".to_owned(), b"count 2".to_vec()),
        ]
    );
}

#[test]
fn an_exception_fails_the_call_with_its_class_and_logs_the_stack_trace() {
    let (_dir, function) = open("app.Thrower");
    let (output, logs) = call(Call::default(), |ctx| {
        function.invoke(ctx, br#"{"value": 7}"#)
    });
    assert_eq!(
        output,
        Err(FnError::permanent(
            "java.lang.IllegalArgumentException: bad value 7"
        ))
    );
    let errors = logs.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let trace = &errors[0];
    assert!(
        trace.starts_with("java.lang.IllegalArgumentException: bad value 7\n"),
        "{trace}"
    );
    assert!(
        trace.contains("at app.Thrower.check(Thrower.java:"),
        "{trace}"
    );
    assert!(
        trace.contains("at app.Thrower.handle(Thrower.java:"),
        "{trace}"
    );
    assert!(
        !trace.contains("squall.Engine"),
        "the runtime's frames show: {trace}"
    );
}

#[test]
fn retry_asks_for_another_attempt_after_its_delay() {
    let (_dir, function) = open("app.Retrying");
    let (output, logs) = call(Call::default(), |ctx| function.invoke(ctx, b"later"));
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
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b""));
    assert_eq!(output, Err(FnError::retry("retry requested")));
}

#[test]
fn an_unavailable_store_is_retried_and_a_denied_publish_is_not() {
    let (_dir, function) = open("app.HostUser");
    let unavailable = Services {
        failure: Some(SQUALL_HOST_UNAVAILABLE),
        ..Services::default()
    };
    let (output, logs) = call_with(Call::default(), Some(&unavailable), |ctx| {
        function.invoke(ctx, b"get")
    });
    let error = output.unwrap_err();
    assert!(error.is_retry(), "{error:?}");
    assert!(
        error
            .message()
            .starts_with("squall.HostException: kv_get: "),
        "{error:?}"
    );
    assert_eq!(logs.errors().len(), 1, "{:?}", logs.lines());
    let (output, _) = call_with(Call::default(), Some(&unavailable), |ctx| {
        function.invoke(ctx, b"catch")
    });
    assert_eq!(output.unwrap(), b"unavailable true");

    let denied = Services {
        failure: Some(SQUALL_HOST_DENIED),
        ..Services::default()
    };
    let (output, _) = call_with(Call::default(), Some(&denied), |ctx| {
        function.invoke(ctx, b"publish")
    });
    assert_eq!(
        output,
        Err(FnError::permanent(
            "squall.HostException: publish: not allowed"
        ))
    );
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"catch"));
    assert_eq!(output.unwrap(), b"unsupported false");
}

#[test]
fn exiting_the_jvm_is_refused_and_the_function_keeps_serving() {
    let (_dir, function) = open("app.Exiter");
    for (input, status) in [(&b"exit"[..], 3), (b"halt", 4)] {
        let (output, logs) = call(Call::default(), |ctx| function.invoke(ctx, input));
        assert_eq!(
            output,
            Err(FnError::permanent(format!(
                "java.lang.SecurityException: exit({status}) refused: a function cannot stop its worker process"
            )))
        );
        assert_eq!(logs.errors().len(), 1, "{:?}", logs.lines());
    }
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"replace"));
    assert_eq!(
        output,
        Err(FnError::permanent(
            "java.lang.SecurityException: the runtime's security manager cannot be replaced"
        ))
    );
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"again"));
    assert_eq!(output.unwrap(), b"alive");
}

#[test]
fn a_web_response_is_written_as_the_function_url_envelope() {
    let (_dir, function) = open("app.Web");
    let event = r#"{"source": "web", "method": "POST", "path": "/orders", "raw_query": "", "query": {}, "headers": {}, "remote_addr": "203.0.113.9"}"#;
    let call_data = Call {
        event,
        ..Call::default()
    };
    let (output, _) = call(call_data, |ctx| function.invoke(ctx, b"order 7"));
    assert_eq!(
        json_of(output),
        json!({
            "statusCode": 201,
            "headers": {"content-type": "text/plain"},
            "cookies": ["id=7; Path=/"],
            "body": "created POST /orders order 7",
            "isBase64Encoded": false
        })
    );
}

#[test]
fn a_context_used_after_its_call_or_from_another_thread_refuses() {
    let (_dir, function) = open("app.Keeper");
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b""));
    assert_eq!(output.unwrap(), b"kept");
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b""));
    assert_eq!(
        String::from_utf8(output.unwrap()).unwrap(),
        "this context's invocation has ended; use the context only during its call / other thread refused"
    );
}

#[test]
fn a_failing_static_initialiser_fails_the_open_with_its_trace() {
    let dir = bundle("app.Broken", app());
    let error = Function::open(dir.path()).unwrap_err();
    let RuntimeError::Load(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.starts_with("the static initialiser of app.Broken failed: java.lang.IllegalStateException: boom while loading"),
        "{message}"
    );
    assert!(
        message.contains("at app.Broken.<clinit>(Broken.java:"),
        "{message}"
    );
    let missing = bundle("app.Missing", app());
    let error = Function::open(missing.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "class app.Missing not found in the bundle"
    );
}

#[test]
fn several_threads_call_at_once_each_with_its_own_context_and_logs() {
    let (_dir, function) = open("app.Slow");
    std::thread::scope(|scope| {
        for thread in 0..6 {
            let function = &function;
            scope.spawn(move || {
                for round in 0..20 {
                    let input = match round % 5 {
                        0 => format!("sleep-{thread}-{round}"),
                        _ => format!("{thread}-{round}"),
                    };
                    let (output, logs) = call(Call::default(), |ctx| {
                        function.invoke(ctx, input.as_bytes())
                    });
                    assert_eq!(
                        String::from_utf8(output.unwrap()).unwrap(),
                        format!("inv-1:{input}")
                    );
                    assert_eq!(logs.lines(), vec![(LOG_INFO, format!("line {input}"))]);
                }
            });
        }
    });
}

#[test]
fn a_warm_call_costs_microseconds() {
    let (_dir, function) = open("app.Echo");
    let rounds = 20_000;
    let measure = || {
        let (elapsed, _) = call(Call::default(), |ctx| {
            let started = Instant::now();
            for _ in 0..rounds {
                function.invoke(ctx, b"ping").unwrap();
            }
            started.elapsed()
        });
        elapsed / rounds
    };
    measure();
    let per_call = measure();
    eprintln!("a warm call of app.Echo: {per_call:?}");
    // Generous for unoptimised builds on a busy machine; a release build is a few microseconds.
    assert!(
        per_call < Duration::from_micros(200),
        "{per_call:?} per call"
    );
    let (errors, _) = call(Call::default(), |_| LOG_ERROR);
    assert_eq!(errors, LOG_ERROR);
}
