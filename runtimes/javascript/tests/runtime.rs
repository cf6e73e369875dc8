//! The JavaScript runtime end to end without a worker: bundles in temporary folders, calls
//! through the Rust API and the exported C functions, logs captured by a host that only logs.

use std::ffi::c_void;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use squall_runtime_javascript::{check, run_tests, Function, Limits};
use squall_sdk::abi::{SquallBuf, SquallBytes, SquallCtx, SquallHost, SQUALL_HOST_TOO_LARGE};
use squall_sdk::{Context, FnError};

/// Writes `files` and a `squall-bundle.json` for `handler` into a new temporary folder.
fn bundle(handler: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(r#"{{"format": 1, "runtime": "javascript", "handler": "{handler}"}}"#);
    std::fs::write(dir.path().join("squall-bundle.json"), manifest).unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn limits() -> Limits {
    Limits {
        heap_bytes: 32 << 20,
        open_timeout: Duration::from_secs(10),
    }
}

fn open(dir: &Path) -> Function {
    Function::open(dir, limits()).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A log line as the host received it: level and message.
type LogLine = (u32, String);

/// A host that records log lines and streamed chunks, and may report the invocation cancelled.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<LogLine>>,
    cancel_at: Option<Instant>,
    /// The chunks the function streamed, in order.
    streamed: Mutex<Vec<Vec<u8>>>,
    /// How many bytes of output the host takes; `None` for no limit.
    output_limit: Option<usize>,
    /// An older host, without `stream_write`.
    without_streaming: bool,
}

/// The `Recorder` behind a context the test built.
///
/// # Safety
/// `ctx` must be a context built by `call_recorded`, during its call.
unsafe fn recorder<'a>(ctx: *const SquallCtx) -> &'a Recorder {
    // SAFETY: the host pointer in the ctx is the test's, whose data is a `Recorder`.
    unsafe { &*((*(*ctx).host).data as *const Recorder) }
}

unsafe extern "C" fn record(data: *mut c_void, level: u32, message: SquallBytes) {
    // SAFETY: `data` is the `Recorder` the test keeps alive for the call; the message is
    // readable for the call.
    let recorder = unsafe { &*(data as *const Recorder) };
    let text = String::from_utf8_lossy(unsafe { message.as_slice() }).into_owned();
    recorder.lines.lock().unwrap().push((level, text));
}

unsafe extern "C" fn cancelled(ctx: *const SquallCtx) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_recorded`.
    let recorder = unsafe { recorder(ctx) };
    i32::from(recorder.cancel_at.is_some_and(|at| Instant::now() >= at))
}

unsafe extern "C" fn stream_write(ctx: *const SquallCtx, chunk: SquallBytes) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_recorded`; the chunk is readable
    // for the call.
    let (recorder, chunk) = unsafe { (recorder(ctx), chunk.as_slice()) };
    let mut streamed = recorder.streamed.lock().unwrap();
    let written: usize = streamed.iter().map(Vec::len).sum();
    if recorder
        .output_limit
        .is_some_and(|limit| written + chunk.len() > limit)
    {
        return SQUALL_HOST_TOO_LARGE;
    }
    streamed.push(chunk.to_vec());
    0
}

/// Calls `function` with a context backed by a logging host; returns the outcome and the log.
fn call_logged(
    function: &Function,
    input: &[u8],
    deadline_ms: u64,
    cancel_after: Option<Duration>,
) -> (Result<Vec<u8>, FnError>, Vec<LogLine>) {
    let recorder = Recorder {
        cancel_at: cancel_after.map(|after| Instant::now() + after),
        ..Recorder::default()
    };
    let outcome = call_recorded(function, input, deadline_ms, &recorder);
    let lines = recorder.lines.lock().unwrap().clone();
    (outcome, lines)
}

/// Calls `function` with a context backed by `recorder`'s host.
fn call_recorded(
    function: &Function,
    input: &[u8],
    deadline_ms: u64,
    recorder: &Recorder,
) -> Result<Vec<u8>, FnError> {
    let host = SquallHost {
        size: size_of::<SquallHost>() as u32,
        data: recorder as *const Recorder as *mut c_void,
        log: Some(record),
        kv_get: None,
        kv_put: None,
        kv_delete: None,
        publish: None,
        buf_free: None,
        cancelled: Some(cancelled),
        stream_write: (!recorder.without_streaming).then_some(stream_write),
    };
    let config = br#"{"greeting": "Hi", "secrets": {"token": "s3cret"}}"#;
    let raw = SquallCtx {
        size: size_of::<SquallCtx>() as u32,
        function: SquallBytes::from_slice(b"hello"),
        invocation_id: SquallBytes::from_slice(b"inv-1"),
        traceparent: SquallBytes::EMPTY,
        config: SquallBytes::from_slice(config),
        event: SquallBytes::from_slice(br#"{"source": "http"}"#),
        attempt: 2,
        deadline_unix_ms: deadline_ms,
        host: &host,
    };
    // SAFETY: every slice and the host outlive the context, which lives for this call only.
    let context = unsafe { Context::from_raw(&raw) };
    function.invoke(&context, input)
}

fn call(function: &Function, input: &[u8]) -> Result<Vec<u8>, FnError> {
    call_logged(function, input, now_ms() + 10_000, None).0
}

const HELLO: &str = r#"
export async function handler(event, context) {
  const name = event?.name ?? "world";
  console.log(`greeting ${name}`);
  return { message: `Hello, ${name}!` };
}
"#;

#[test]
fn a_hello_handler_takes_json_and_answers_json() {
    let dir = bundle("app.handler", &[("app.mjs", HELLO)]);
    let function = open(dir.path());
    let (output, logs) = call_logged(&function, br#"{"name": "Ada"}"#, now_ms() + 5_000, None);
    let output: serde_json::Value = serde_json::from_slice(&output.unwrap()).unwrap();
    assert_eq!(output, serde_json::json!({"message": "Hello, Ada!"}));
    assert_eq!(logs, [(3, "greeting Ada".to_owned())]);
    let output = call(&function, b"").unwrap();
    assert_eq!(output, br#"{"message":"Hello, world!"}"#);
}

#[test]
fn the_context_carries_the_invocation_and_config() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export function handler(event, context) {
  return {
    name: context.functionName, id: context.invocationId, attempt: context.attempt,
    greeting: context.config.greeting, token: context.secrets.token,
    left: context.getRemainingTimeInMillis() > 0, cancelled: context.cancelled(),
  };
}
"#,
        )],
    );
    let output = call(&open(dir.path()), b"null").unwrap();
    let output: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(
        output,
        serde_json::json!({"name": "hello", "id": "inv-1", "attempt": 2, "greeting": "Hi",
            "token": "s3cret", "left": true, "cancelled": false})
    );
}

#[test]
fn bytes_come_in_as_a_uint8array_and_go_out_as_they_are() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export function handler(event) {
  if (!(event instanceof Uint8Array)) throw new TypeError("not bytes");
  return event.map((b) => b + 1);
}
"#,
        )],
    );
    let output = call(&open(dir.path()), &[0x00, 0xfe, 0x10]).unwrap();
    assert_eq!(output, [0x01, 0xff, 0x11]);
}

#[test]
fn a_string_result_is_utf8_and_undefined_is_null() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "export function handler(e) { return e === 1 ? 'héllo' : undefined; }",
        )],
    );
    let function = open(dir.path());
    assert_eq!(call(&function, b"1").unwrap(), "héllo".as_bytes());
    assert_eq!(call(&function, b"2").unwrap(), b"null");
}

#[test]
fn modules_import_each_other_relatively_and_import_squall() {
    let dir = bundle(
        "src/app.handler",
        &[
            (
                "src/app.mjs",
                r#"
import { shout } from "./text/shout.mjs";
import { Retry } from "squall";
export const handler = (event) => ({ loud: shout(event.word), retry: typeof Retry });
"#,
            ),
            (
                "src/text/shout.mjs",
                "import { suffix } from '../../common.mjs';\nexport function shout(s) { return s.toUpperCase() + suffix; }",
            ),
            ("common.mjs", "export const suffix = '!';"),
        ],
    );
    let output = call(&open(dir.path()), br#"{"word": "hey"}"#).unwrap();
    assert_eq!(output, br#"{"loud":"HEY!","retry":"function"}"#);
}

#[test]
fn an_async_handler_awaits_a_timer() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export async function handler() {
  const started = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 50));
  return Date.now() - started;
}
"#,
        )],
    );
    let output = call(&open(dir.path()), b"").unwrap();
    let waited: u64 = String::from_utf8(output).unwrap().parse().unwrap();
    assert!(waited >= 50, "waited {waited} ms");
}

#[test]
fn an_exception_is_a_function_error_with_its_stack_logged() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "function inner() { throw new TypeError('bad input'); }\nexport async function handler() { inner(); }\n",
        )],
    );
    let (outcome, logs) = call_logged(&open(dir.path()), b"", now_ms() + 5_000, None);
    assert_eq!(outcome, Err(FnError::permanent("TypeError: bad input")));
    let (level, line) = logs.last().unwrap();
    assert_eq!(*level, 1);
    assert!(line.starts_with("TypeError: bad input\n"), "{line}");
    assert!(
        line.contains("inner") && line.contains("app.mjs:1"),
        "{line}"
    );
}

#[test]
fn a_rejected_promise_is_a_function_error() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "export function handler() { return Promise.reject(new RangeError('nope')); }",
        )],
    );
    assert_eq!(
        call(&open(dir.path()), b""),
        Err(FnError::permanent("RangeError: nope"))
    );
}

#[test]
fn a_thrown_retry_asks_for_another_attempt_after_its_delay() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
import { Retry } from "squall";
export async function handler(event) {
  if (event === 1) throw new squall.Retry(1500);
  if (event === 2) throw Retry;
  throw new Retry(0, "busy");
}
"#,
        )],
    );
    let function = open(dir.path());
    assert_eq!(
        call(&function, b"1"),
        Err(FnError::retry_after(
            "Retry: retry after 1500 ms",
            Duration::from_millis(1500)
        ))
    );
    assert!(call(&function, b"2").unwrap_err().is_retry());
    assert_eq!(call(&function, b"3"), Err(FnError::retry("Retry: busy")));
}

#[test]
fn an_infinite_loop_is_interrupted_at_the_deadline() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "export function handler(e) { if (e === 1) { while (true) {} } return 'alive'; }",
        )],
    );
    let function = open(dir.path());
    let started = Instant::now();
    let (outcome, _) = call_logged(&function, b"1", now_ms() + 200, None);
    let error = outcome.unwrap_err();
    assert!(error.message().starts_with("TimeoutError"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(call(&function, b"2").unwrap(), b"alive");
}

#[test]
fn a_cancelled_invocation_stops_a_running_script() {
    let dir = bundle(
        "app.handler",
        &[("app.mjs", "export function handler() { for (;;) {} }")],
    );
    let started = Instant::now();
    let (outcome, _) = call_logged(
        &open(dir.path()),
        b"",
        now_ms() + 10_000,
        Some(Duration::from_millis(100)),
    );
    assert!(outcome.unwrap_err().message().starts_with("CancelledError"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_memory_blow_up_is_out_of_memory_and_the_next_call_still_runs() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export function handler(e) {
  if (e === 1) { const all = []; for (;;) all.push(new Array(100000).fill(e)); }
  return "fine";
}
"#,
        )],
    );
    let function = open(dir.path());
    let error = call(&function, b"1").unwrap_err();
    assert!(error.message().starts_with("out of memory:"), "{error}");
    assert_eq!(call(&function, b"2").unwrap(), b"fine");
}

#[test]
fn host_services_without_a_host_throw_errors_with_a_code() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export function handler(event, context) {
  try { context.kv.get("k"); } catch (e) { return `${e.code}: ${e.message}`; }
  return "no error";
}
"#,
        )],
    );
    let output = call(&open(dir.path()), b"").unwrap();
    assert_eq!(
        String::from_utf8(output).unwrap(),
        "UNSUPPORTED: the host offers no state or event services"
    );
}

const STREAMER: &str = r#"
export async function handler(event, context) {
  context.streamWrite("one ");
  await new Promise((resolve) => setTimeout(resolve, 1));
  context.streamWrite(new TextEncoder().encode("two "));
  context.streamWrite(new TextEncoder().encode("three ").buffer);
  if (event === "silent") return undefined;
  return "four";
}
"#;

#[test]
fn streamed_chunks_reach_the_host_in_order_and_the_returned_body_stays_separate() {
    let dir = bundle("app.handler", &[("app.mjs", STREAMER)]);
    let function = open(dir.path());
    let recorder = Recorder::default();
    let output = call_recorded(&function, b"", now_ms() + 10_000, &recorder);
    assert_eq!(output.unwrap(), b"four");
    let streamed = recorder.streamed.lock().unwrap().clone();
    assert_eq!(streamed, [&b"one "[..], b"two ", b"three "]);
}

#[test]
fn a_handler_that_streamed_and_returns_nothing_adds_no_last_chunk() {
    let dir = bundle("app.handler", &[("app.mjs", STREAMER)]);
    let function = open(dir.path());
    let recorder = Recorder::default();
    let output = call_recorded(&function, br#""silent""#, now_ms() + 10_000, &recorder);
    assert_eq!(output.unwrap(), b"");
    assert_eq!(recorder.streamed.lock().unwrap().len(), 3);
    // Without streaming, returning nothing is still `null`.
    let dir = bundle(
        "app.handler",
        &[("app.mjs", "export function handler() {}")],
    );
    assert_eq!(call(&open(dir.path()), b"").unwrap(), b"null");
}

#[test]
fn a_failed_stream_write_throws_an_error_with_the_hosts_code() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export function handler(event, context) {
  try {
    context.streamWrite("1234");
    context.streamWrite("5");
  } catch (e) {
    return e.code;
  }
  return "no error";
}
"#,
        )],
    );
    let function = open(dir.path());
    let limited = Recorder {
        output_limit: Some(4),
        ..Recorder::default()
    };
    let output = call_recorded(&function, b"", now_ms() + 10_000, &limited);
    assert_eq!(output.unwrap(), b"TOO_LARGE");
    assert_eq!(limited.streamed.lock().unwrap().clone(), [b"1234"]);

    let older = Recorder {
        without_streaming: true,
        ..Recorder::default()
    };
    let output = call_recorded(&function, b"", now_ms() + 10_000, &older);
    assert_eq!(output.unwrap(), b"UNSUPPORTED");
}

#[test]
fn the_test_context_records_streamed_chunks() {
    let dir = bundle(
        "app.handler",
        &[
            ("app.mjs", STREAMER),
            (
                "app.test.mjs",
                r#"
import { handler } from "./app.mjs";
const { assertEqual, context } = squall.testing;

export async function testStreamsThreeChunksThenReturnsTheLast() {
  const ctx = context();
  assertEqual(await handler(null, ctx), "four");
  const text = ctx.streamed.map((chunk) => new TextDecoder().decode(chunk));
  assertEqual(text, ["one ", "two ", "three "]);
}
"#,
            ),
        ],
    );
    let report = run_tests(dir.path(), limits()).unwrap();
    assert!(report.passed() && report.outcomes.len() == 1, "{report}");
}

#[test]
fn the_globals_work() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export function handler() {
  const bytes = new TextEncoder().encode("héllo");
  const random = crypto.getRandomValues(new Uint8Array(8));
  const clone = structuredClone({ a: [1, { b: 2 }], d: new Map([[1, 2]]) });
  return {
    length: bytes.length,
    text: new TextDecoder().decode(bytes),
    base64: btoa("hi"), back: atob("aGk="),
    uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID()),
    random: random.length,
    clone: clone.a[1].b + clone.d.get(1),
    json: JSON.parse('{"x":1}').x,
  };
}
"#,
        )],
    );
    let output = call(&open(dir.path()), b"").unwrap();
    let output: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(
        output,
        serde_json::json!({"length": 6, "text": "héllo", "base64": "aGk=", "back": "hi",
            "uuid": true, "random": 8, "clone": 4, "json": 1})
    );
}

#[test]
fn four_threads_calling_at_once_all_succeed() {
    let dir = bundle("app.handler", &[("app.mjs", HELLO)]);
    let function = Arc::new(Mutex::new(open(dir.path())));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let function = Arc::clone(&function);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let input = format!(r#"{{"name": "t{n}-{i}"}}"#);
                    let function = function.lock().unwrap();
                    let output = call(&function, input.as_bytes()).unwrap();
                    assert_eq!(
                        output,
                        format!(r#"{{"message":"Hello, t{n}-{i}!"}}"#).as_bytes()
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn an_opened_bundle_serves_calls_through_the_exported_symbols_from_several_threads() {
    use squall_runtime_javascript::{squall_free, squall_invoke, squall_runtime_open};
    use squall_sdk::abi::{SquallOutput, SQUALL_OK};

    let dir = bundle("app.handler", &[("app.mjs", HELLO)]);
    let path = dir.path().to_str().unwrap().to_owned();
    let mut error = SquallBuf::EMPTY;
    // SAFETY: the path is readable and `error` writable for the call.
    let status =
        unsafe { squall_runtime_open(SquallBytes::from_slice(path.as_bytes()), &mut error) };
    assert_eq!(status, 0);
    let threads: Vec<_> = (0..4)
        .map(|n| {
            std::thread::spawn(move || {
                for i in 0..10 {
                    let input = format!(r#"{{"name": "{n}.{i}"}}"#);
                    let mut out = SquallOutput {
                        body: SquallBuf::EMPTY,
                        retry_after_ms: 0,
                    };
                    // SAFETY: a null ctx is allowed; input and out are valid for the call.
                    let status = unsafe {
                        squall_invoke(
                            std::ptr::null(),
                            SquallBytes::from_slice(input.as_bytes()),
                            &mut out,
                        )
                    };
                    // SAFETY: the body was filled by `squall_invoke` with `len` bytes.
                    let body = unsafe { std::slice::from_raw_parts(out.body.ptr, out.body.len) };
                    assert_eq!(status, SQUALL_OK, "{}", String::from_utf8_lossy(body));
                    assert_eq!(
                        body,
                        format!(r#"{{"message":"Hello, {n}.{i}!"}}"#).as_bytes()
                    );
                    // SAFETY: the buffer came from `squall_invoke` and is freed once.
                    unsafe { squall_free(out.body) };
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_module_that_fails_at_open_names_the_module() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "throw new Error('boom');\nexport function handler() {}",
        )],
    );
    let error = Function::open(dir.path(), limits())
        .err()
        .unwrap()
        .to_string();
    assert!(error.starts_with("app.mjs: Error: boom\n"), "{error}");
    assert!(error.contains("app.mjs:1"), "{error}");
}

#[test]
fn a_valid_bundle_passes_the_check() {
    let dir = bundle(
        "app.handler",
        &[
            (
                "app.mjs",
                "import { x } from './lib.mjs';\nexport async function handler() { return x; }",
            ),
            (
                "lib.mjs",
                "export const x = 1; // require('fs') in a comment",
            ),
        ],
    );
    check(dir.path()).unwrap();
}

#[test]
fn the_check_never_runs_a_modules_code() {
    // Evaluated, this module would throw at its top level; checked, it only compiles.
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "throw new Error('ran at deploy');\nexport function handler() { return 1; }\n",
        )],
    );
    check(dir.path()).unwrap();
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let dir = bundle(
        "app.handler",
        &[
            ("app.mjs", "export function handler() { return 1; }\n"),
            ("lib/broken.mjs", "const a = 1;\n\nconst b = ;\n"),
        ],
    );
    let error = check(dir.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("lib/broken.mjs:3: SyntaxError: "),
        "{error}"
    );
}

#[test]
fn a_missing_handler_export_is_refused() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "export function other() {}\nfunction handler() {}\n",
        )],
    );
    let error = check(dir.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("app.mjs:1: the module does not export a function named handler"),
        "{error}"
    );
    let missing = bundle("main.handler", &[("app.mjs", HELLO)]);
    let error = check(missing.path()).unwrap_err().to_string();
    assert!(error.starts_with("main.mjs: "), "{error}");
}

#[test]
fn importing_node_modules_is_refused_with_the_file_and_line() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "// a comment\nimport fs from 'fs';\nexport function handler() {}\n",
        )],
    );
    let error = check(dir.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("app.mjs:2: imports 'fs': Node's APIs are not available"),
        "{error}"
    );
    assert!(error.contains("TextEncoder"), "{error}");
    let node = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "import { join } from \"node:path\";\nexport function handler() {}\n",
        )],
    );
    assert!(check(node.path())
        .unwrap_err()
        .to_string()
        .starts_with("app.mjs:1: imports 'node:path'"));
}

#[test]
fn calling_require_is_refused_with_the_file_and_line() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "export function handler() {\n  const cp = require('child_process');\n}\n",
        )],
    );
    let error = check(dir.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("app.mjs:2: require() is Node's module system"),
        "{error}"
    );
}

#[test]
fn another_runtime_in_the_bundle_is_refused() {
    let dir = bundle("app.handler", &[("app.mjs", HELLO)]);
    std::fs::write(
        dir.path().join("squall-bundle.json"),
        r#"{"format": 1, "runtime": "python3.11", "handler": "app.handler"}"#,
    )
    .unwrap();
    let error = check(dir.path()).unwrap_err().to_string();
    assert!(error.contains("\"python3.11\""), "{error}");
}

#[test]
fn the_test_runner_reports_passes_and_failures() {
    let dir = bundle(
        "app.handler",
        &[
            ("app.mjs", HELLO),
            (
                "app.test.mjs",
                r#"
import { handler } from "./app.mjs";
const { assertEqual, context } = squall.testing;

export async function testGreetsByName() {
  const ctx = context({ config: { greeting: "Hi" } });
  assertEqual(await handler({ name: "Ada" }, ctx), { message: "Hello, Ada!" });
}

export async function testKvAndPublishAreLocal() {
  const ctx = context();
  ctx.kv.put("k", "v");
  assertEqual(ctx.kv.getText("k"), "v");
  ctx.publish("events.done", "x");
  assertEqual(ctx.published.length, 1);
  await new Promise((r) => setTimeout(r, 5));
}

export function testThatFails() {
  assertEqual(1 + 1, 3);
}

export function helper() { throw new Error("not a test"); }
"#,
            ),
        ],
    );
    let report = run_tests(dir.path(), limits()).unwrap();
    let names: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| (o.name.as_str(), o.error.is_none()))
        .collect();
    assert_eq!(
        names,
        [
            ("testGreetsByName", true),
            ("testKvAndPublishAreLocal", true),
            ("testThatFails", false)
        ]
    );
    assert!(!report.passed());
    let text = report.to_string();
    assert!(text.contains("FAIL testThatFails"), "{text}");
    assert!(text.contains("AssertionError: expected 3, got 2"), "{text}");
    assert!(text.contains("[info] greeting Ada"), "{text}");
    assert!(text.ends_with("2 passed, 1 failed\n"), "{text}");
}

#[test]
fn the_template_passes_its_own_check_and_tests() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("template");
    let dir = bundle(
        "app.handler",
        &[
            (
                "app.mjs",
                &std::fs::read_to_string(template.join("app.mjs")).unwrap(),
            ),
            (
                "app.test.mjs",
                &std::fs::read_to_string(template.join("app.test.mjs")).unwrap(),
            ),
        ],
    );
    check(dir.path()).unwrap();
    let report = run_tests(dir.path(), limits()).unwrap();
    assert!(report.passed() && !report.outcomes.is_empty(), "{report}");
}

#[test]
fn a_web_request_arrives_as_the_event_and_the_response_passes_through() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export async function handler(request, context) {
  return {
    statusCode: 201,
    headers: { "content-type": "text/plain" },
    body: `${request.method} ${request.path} ${request.query.q} ${request.headers["x-a"]} ${request.body} ${context.trigger.source}`,
  };
}
"#,
        )],
    );
    let event = br#"{"source": "web", "method": "PUT", "path": "/x", "raw_query": "q=1", "query": {"q": "1"}, "headers": {"x-a": "b"}}"#;
    let context = Context::new("web", "i").with_event(event);
    let output = open(dir.path()).invoke(&context, b"hi").unwrap();
    let output: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(
        output,
        serde_json::json!({"statusCode": 201, "headers": {"content-type": "text/plain"},
            "body": "PUT /x 1 b hi web"})
    );
}

#[test]
fn a_promise_nothing_can_settle_fails_at_once() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "export function handler() { return new Promise(() => {}); }",
        )],
    );
    let started = Instant::now();
    let error = call(&open(dir.path()), b"").unwrap_err();
    assert!(error.message().contains("never settled"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_error_thrown_in_a_timer_fails_the_call() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
export async function handler() {
  setTimeout(() => { throw new Error("in a timer"); }, 1);
  await new Promise((resolve) => setTimeout(resolve, 1000));
}
"#,
        )],
    );
    assert_eq!(
        call(&open(dir.path()), b""),
        Err(FnError::permanent("Error: in a timer"))
    );
}

#[test]
fn a_timed_out_call_leaves_no_timer_behind_for_the_next_one() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            r#"
let fired = 0;
export async function handler(event) {
  if (event === 1) {
    setTimeout(() => { fired += 1; }, 300);
    await new Promise(() => setTimeout(() => {}, 10000));
  }
  if (event === 2) await new Promise((resolve) => setTimeout(resolve, 400));
  return fired;
}
"#,
        )],
    );
    let function = open(dir.path());
    let (outcome, _) = call_logged(&function, b"1", now_ms() + 100, None);
    assert!(outcome.unwrap_err().message().starts_with("TimeoutError"));
    assert_eq!(call(&function, b"2").unwrap(), b"0");
}

/// Calls one of the exported `squall_runtime_check`/`squall_runtime_test` functions on `dir`.
fn exported(
    function: unsafe extern "C" fn(SquallBytes, *mut SquallBuf) -> i32,
    dir: &Path,
) -> (i32, String) {
    use squall_runtime_javascript::squall_free;

    let path = dir.to_str().unwrap();
    let mut text = SquallBuf::EMPTY;
    // SAFETY: the path is readable and `text` writable for the call.
    let status = unsafe { function(SquallBytes::from_slice(path.as_bytes()), &mut text) };
    let message = if text.ptr.is_null() {
        String::new()
    } else {
        // SAFETY: the library filled `text` with `len` bytes.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(text.ptr, text.len) })
            .into_owned()
    };
    // SAFETY: the buffer came from the library and is freed once.
    unsafe { squall_free(text) };
    (status, message)
}

#[test]
fn the_exported_check_and_test_functions_answer_status_and_text() {
    use squall_runtime_javascript::{squall_runtime_check, squall_runtime_test};

    let good = bundle(
        "app.handler",
        &[
            ("app.mjs", HELLO),
            ("app.test.mjs", "export function testOk() {}"),
        ],
    );
    assert_eq!(
        exported(squall_runtime_check, good.path()),
        (0, String::new())
    );
    let (status, report) = exported(squall_runtime_test, good.path());
    assert_eq!(status, 0, "{report}");
    assert!(report.contains("PASS testOk"), "{report}");

    let bad = bundle(
        "app.handler",
        &[
            (
                "app.mjs",
                "import path from 'node:path';\nexport function handler() {}",
            ),
            (
                "app.test.mjs",
                "export function testNo() { throw new Error('x'); }",
            ),
        ],
    );
    let (status, error) = exported(squall_runtime_check, bad.path());
    assert_eq!(status, 1);
    assert!(error.starts_with("app.mjs:1: "), "{error}");
    let (status, report) = exported(squall_runtime_test, bad.path());
    assert_eq!(status, 1, "{report}");
    assert!(report.contains("FAIL testNo"), "{report}");

    let gone = bad.path().join("missing");
    let (status, report) = exported(squall_runtime_test, &gone);
    assert_eq!(status, 2, "{report}");
    assert!(report.starts_with("the tests could not run"), "{report}");
}

#[test]
fn runaway_recursion_is_a_range_error_not_a_crash() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "function down(n) { return down(n + 1) + 1; }\nexport function handler() { return down(0); }",
        )],
    );
    let function = open(dir.path());
    let error = call(&function, b"").unwrap_err();
    assert!(error.message().starts_with("RangeError"), "{error}");
    // From a thread with a smaller stack than the worker's, too.
    let error = std::thread::Builder::new()
        .stack_size(1536 << 10)
        .spawn(move || call(&function, b"").unwrap_err())
        .unwrap()
        .join()
        .unwrap();
    assert!(error.message().starts_with("RangeError"), "{error}");
}

#[test]
fn an_import_cannot_leave_the_bundle_through_a_link() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.mjs"), "export const s = 1;").unwrap();
    let dir = bundle(
        "app.handler",
        &[(
            "app.mjs",
            "import { s } from './link.mjs';\nexport function handler() { return s; }",
        )],
    );
    std::os::unix::fs::symlink(
        outside.path().join("secret.mjs"),
        dir.path().join("link.mjs"),
    )
    .unwrap();
    let error = Function::open(dir.path(), limits())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("only relative imports"), "{error}");
}
