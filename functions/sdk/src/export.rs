//! The code behind `export_function!`, `export_raw_function!` and `export_web_function!`: the C
//! ABI boundary.
//!
//! The macros only declare the exported symbols; everything they do happens here, in ordinary
//! functions that tests can call directly. Nothing in this module lets a panic escape.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::abi::{
    SquallBuf, SquallBytes, SquallCtx, SquallHost, SquallOutput, SQUALL_ERROR, SQUALL_OK,
    SQUALL_PANIC, SQUALL_RETRY,
};
use crate::{Context, FnError, Host, WebRequest, WebResponse};

/// What a panic payload says, for the `SQUALL_PANIC` body.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "function panicked".to_owned()
    };
    // A payload's destructor may panic in turn; that must not unwind into the host either.
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    message
}

/// Hands a `Vec` to the host; `__free` takes it back.
fn into_buf(bytes: Vec<u8>) -> SquallBuf {
    let mut bytes = ManuallyDrop::new(bytes);
    SquallBuf {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    }
}

/// A retry delay in whole milliseconds, rounded up so that a short delay never turns into
/// "policy default" (0).
fn retry_after_ms(after: Option<Duration>) -> u64 {
    let Some(after) = after else { return 0 };
    let ms = after.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Runs `body` with panics caught and writes its outcome to `out`, returning the status.
///
/// # Safety
/// `out` must be null or valid for a write of one `SquallOutput`.
unsafe fn run(out: *mut SquallOutput, body: impl FnOnce() -> Result<Vec<u8>, FnError>) -> i32 {
    if out.is_null() {
        // Nowhere to put a result or a message: refuse without running the function.
        return SQUALL_ERROR;
    }
    let (status, body, retry_after_ms) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(output)) => (SQUALL_OK, output, 0),
        Ok(Err(FnError::Permanent(message))) => (SQUALL_ERROR, message.into_bytes(), 0),
        Ok(Err(FnError::Retry { message, after })) => {
            (SQUALL_RETRY, message.into_bytes(), retry_after_ms(after))
        }
        Err(payload) => (SQUALL_PANIC, panic_message(payload).into_bytes(), 0),
    };
    let output = SquallOutput {
        body: into_buf(body),
        retry_after_ms,
    };
    // SAFETY: `out` is non-null and the caller makes it valid for a write; `write` does not read
    // or drop whatever the host left there.
    unsafe { out.write(output) };
    status
}

/// `squall_invoke` for a typed handler: JSON in (empty input = `null`), JSON out.
///
/// # Safety
/// The host's side of ABI v1: `ctx` null or valid as [`Context::from_raw`] requires, `input`
/// null/empty or `len` readable bytes, `out` null or writable, all for the duration of the call.
#[doc(hidden)]
pub unsafe fn __invoke_json<In, Out, F>(
    ctx: *const SquallCtx,
    input: SquallBytes,
    out: *mut SquallOutput,
    handler: F,
) -> i32
where
    In: DeserializeOwned,
    Out: Serialize,
    F: FnOnce(&Context<'_>, In) -> Result<Out, FnError>,
{
    let body = || {
        // SAFETY: the caller upholds the ABI for `ctx` and `input` for the whole call, which
        // outlives the context and the slice.
        let (context, input) = unsafe { (Context::from_ptr(ctx), input.as_slice()) };
        let input = if input.is_empty() { b"null" } else { input };
        let input: In = serde_json::from_slice(input)
            .map_err(|error| FnError::permanent(format!("invalid input: {error}")))?;
        let output = handler(&context, input)?;
        serde_json::to_vec(&output)
            .map_err(|error| FnError::permanent(format!("invalid output: {error}")))
    };
    // SAFETY: the caller makes `out` null or writable.
    unsafe { run(out, body) }
}

/// `squall_invoke` for a raw handler: bytes in, bytes out.
///
/// # Safety
/// As for [`__invoke_json`].
#[doc(hidden)]
pub unsafe fn __invoke_raw<F>(
    ctx: *const SquallCtx,
    input: SquallBytes,
    out: *mut SquallOutput,
    handler: F,
) -> i32
where
    F: FnOnce(&Context<'_>, &[u8]) -> Result<Vec<u8>, FnError>,
{
    let body = || {
        // SAFETY: the caller upholds the ABI for `ctx` and `input` for the whole call, which
        // outlives the context and the slice.
        let (context, input) = unsafe { (Context::from_ptr(ctx), input.as_slice()) };
        handler(&context, input)
    };
    // SAFETY: the caller makes `out` null or writable.
    unsafe { run(out, body) }
}

/// `squall_invoke` for a web handler: the request from `ctx.event` and the input (its body),
/// the answer as a function-URL response.
///
/// # Safety
/// As for [`__invoke_json`].
#[doc(hidden)]
pub unsafe fn __invoke_web<F>(
    ctx: *const SquallCtx,
    input: SquallBytes,
    out: *mut SquallOutput,
    handler: F,
) -> i32
where
    F: FnOnce(&Context<'_>, WebRequest) -> Result<WebResponse, FnError>,
{
    let body = || {
        // SAFETY: the caller upholds the ABI for `ctx` and `input` for the whole call, which
        // outlives the context and the slice.
        let (context, input) = unsafe { (Context::from_ptr(ctx), input.as_slice()) };
        web_call(&context, input, handler)
    };
    // SAFETY: the caller makes `out` null or writable.
    unsafe { run(out, body) }
}

/// A web call without the ABI: request in, envelope bytes out.
fn web_call<F>(context: &Context<'_>, input: &[u8], handler: F) -> Result<Vec<u8>, FnError>
where
    F: FnOnce(&Context<'_>, WebRequest) -> Result<WebResponse, FnError>,
{
    let request = WebRequest::from_event(context.event(), input);
    let response = handler(context, request)?;
    serde_json::to_vec(&response.to_envelope())
        .map_err(|error| FnError::permanent(format!("invalid output: {error}")))
}

/// `squall_init`: runs `init` once per load.
///
/// Returns 0 on success, `SQUALL_ERROR` (1) when `init` returns an error and `SQUALL_PANIC` (3)
/// when it panics; either failure is also logged at error level through the host, since the
/// return value has no room for a message.
///
/// # Safety
/// `host` must be null or valid as [`Host::from_raw`] requires, for the duration of the call.
#[doc(hidden)]
pub unsafe fn __init<F>(host: *const SquallHost, init: F) -> i32
where
    F: FnOnce(&Host<'_>) -> Result<(), String>,
{
    // SAFETY: the caller upholds the ABI for `host` during this call, which outlives `host`.
    let host = unsafe { Host::from_raw(host) };
    match catch_unwind(AssertUnwindSafe(|| init(&host))) {
        Ok(Ok(())) => SQUALL_OK,
        Ok(Err(message)) => {
            host.error(&format!("init failed: {message}"));
            SQUALL_ERROR
        }
        Err(payload) => {
            host.error(&format!("init panicked: {}", panic_message(payload)));
            SQUALL_PANIC
        }
    }
}

/// `squall_free`: releases a buffer that `squall_invoke` returned. Empty or null is a no-op.
///
/// # Safety
/// `buf` must be empty, null, or a buffer this library returned and has not been freed yet.
#[doc(hidden)]
pub unsafe fn __free(buf: SquallBuf) {
    if buf.ptr.is_null() || buf.cap == 0 {
        return;
    }
    // SAFETY: `ptr` and `cap` come from a `Vec<u8>` that `into_buf` gave up, in this same
    // library and allocator. The length is taken as 0 because bytes need no drop, so a
    // host that changed `len` cannot cause an out-of-bounds read.
    drop(unsafe { Vec::from_raw_parts(buf.ptr, 0, buf.cap) });
}

/// `squall_invoke` (and the symbols every function exports) over `$invoker`, one of the
/// SDK's `__invoke_*` adapters, calling `$handler`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_invoke {
    ($invoker:ident, $handler:expr) => {
        $crate::__export_common!();

        /// The function's entry point (ABI v1).
        ///
        /// # Safety
        /// The host passes pointers valid for the call, as `squall.h` describes.
        #[no_mangle]
        pub unsafe extern "C" fn squall_invoke(
            ctx: *const $crate::abi::SquallCtx,
            input: $crate::abi::SquallBytes,
            out: *mut $crate::abi::SquallOutput,
        ) -> i32 {
            // SAFETY: the host upholds ABI v1 for `ctx`, `input` and `out` during the call.
            unsafe { $crate::$invoker(ctx, input, out, $handler) }
        }
    };
}

/// Exports a typed handler as a Squall ABI v1 function.
///
/// `handler` is any `fn(&Context, In) -> Result<Out, FnError>` with `In: DeserializeOwned` and
/// `Out: Serialize`. The input is parsed as JSON, with an empty input read as `null` (so
/// `In = Option<T>` accepts no input at all); input that does not parse fails permanently with
/// `invalid input: <reason>`. The output is serialized as JSON.
///
/// With `init = init_fn` (`fn(&Host) -> Result<(), String>`) the library also exports
/// `squall_init`, which the host calls once per load; without it no `squall_init` is exported,
/// which the ABI allows.
///
/// Use it once per library, at the crate root:
///
/// ```
/// use squall_sdk::{export_function, Context, FnError};
///
/// fn double(_ctx: &Context, n: i64) -> Result<i64, FnError> {
///     Ok(n * 2)
/// }
///
/// export_function!(double);
/// ```
#[macro_export]
macro_rules! export_function {
    ($handler:expr, init = $init:expr $(,)?) => {
        $crate::export_function!($handler);
        $crate::__export_init!($init);
    };
    ($handler:expr $(,)?) => {
        $crate::__export_invoke!(__invoke_json, $handler);
    };
}

/// Exports a handler over raw bytes as a Squall ABI v1 function.
///
/// `handler` is any `fn(&Context, &[u8]) -> Result<Vec<u8>, FnError>`; the input and output
/// bytes are passed through untouched. `init = init_fn` works as in [`export_function!`].
#[macro_export]
macro_rules! export_raw_function {
    ($handler:expr, init = $init:expr $(,)?) => {
        $crate::export_raw_function!($handler);
        $crate::__export_init!($init);
    };
    ($handler:expr $(,)?) => {
        $crate::__export_invoke!(__invoke_raw, $handler);
    };
}

/// Exports an HTTP handler as a Squall ABI v1 web function (deploy it with `"web"` in its
/// spec to serve it at `/function/{name}`).
///
/// `handler` is any `fn(&Context, WebRequest) -> Result<WebResponse, FnError>`. The request
/// comes from `ctx.event` and the input (the request body); the response becomes Lambda's
/// function-URL response format. An `Err` or a panic answers the caller a generic 502 (the
/// invocation keeps the message). `init = init_fn` works as in [`export_function!`].
///
/// ```
/// use squall_sdk::http::StatusCode;
/// use squall_sdk::{export_web_function, Context, FnError, WebRequest, WebResponse};
///
/// fn hello(_ctx: &Context, request: WebRequest) -> Result<WebResponse, FnError> {
///     let name = request.query("name").unwrap_or("world");
///     Ok(WebResponse::text(StatusCode::OK, format!("Hello, {name}!")).with_header("x-greeted", name))
/// }
///
/// export_web_function!(hello);
/// ```
#[macro_export]
macro_rules! export_web_function {
    ($handler:expr, init = $init:expr $(,)?) => {
        $crate::export_web_function!($handler);
        $crate::__export_init!($init);
    };
    ($handler:expr $(,)?) => {
        $crate::__export_invoke!(__invoke_web, $handler);
    };
}

/// The symbols every library exports: the ABI version and `squall_free`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_common {
    () => {
        /// The ABI version this library implements; data, so it can be read without loading.
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static squall_abi_version: u32 = $crate::abi::SQUALL_ABI_VERSION;

        /// Frees a buffer that `squall_invoke` returned (ABI v1).
        ///
        /// # Safety
        /// `buf` must be empty or a buffer this library returned and not freed yet.
        #[no_mangle]
        pub unsafe extern "C" fn squall_free(buf: $crate::abi::SquallBuf) {
            // SAFETY: the host hands back a buffer from `squall_invoke`, once.
            unsafe { $crate::__free(buf) }
        }
    };
}

/// The optional `squall_init` symbol.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_init {
    ($init:expr) => {
        /// Runs once per load, before any `squall_invoke` (ABI v1); non-zero means failure.
        ///
        /// # Safety
        /// `host` is null or valid for the call, as `squall.h` describes.
        #[no_mangle]
        pub unsafe extern "C" fn squall_init(host: *const $crate::abi::SquallHost) -> i32 {
            // SAFETY: the host upholds ABI v1 for `host` during the call.
            unsafe { $crate::__init(host, $init) }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_round_up_to_whole_milliseconds() {
        assert_eq!(retry_after_ms(None), 0);
        assert_eq!(retry_after_ms(Some(Duration::ZERO)), 0);
        assert_eq!(retry_after_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(retry_after_ms(Some(Duration::from_millis(10))), 10);
        assert_eq!(retry_after_ms(Some(Duration::MAX)), u64::MAX);
    }

    #[test]
    fn panic_messages_come_from_string_payloads() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(42_u8)), "function panicked");
    }

    #[test]
    fn a_null_output_pointer_is_refused_without_running_the_handler() {
        let mut ran = false;
        // SAFETY: a null `out` is allowed; nothing else is read.
        let status = unsafe {
            run(std::ptr::null_mut(), || {
                ran = true;
                Ok(Vec::new())
            })
        };
        assert_eq!(status, SQUALL_ERROR);
        assert!(!ran);
    }

    #[test]
    fn a_web_call_reads_the_request_and_answers_the_envelope() {
        let event = br#"{"source": "web", "method": "GET", "path": "/x", "query": {"q": "1"}}"#;
        let ctx = Context::new("web", "1").with_event(event);
        let output = web_call(&ctx, b"body", |_, request| {
            assert_eq!(request.method, http::Method::GET);
            assert_eq!(request.body, b"body");
            let q = request.query("q").unwrap_or_default().to_owned();
            Ok(WebResponse::text(
                http::StatusCode::ACCEPTED,
                format!("{} {q}", request.path),
            ))
        })
        .unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(&output).unwrap();
        assert_eq!(envelope["statusCode"], 202);
        assert_eq!(envelope["body"], "/x 1");
        let failed = web_call(&ctx, b"", |_, _| Err(FnError::permanent("no")));
        assert_eq!(failed, Err(FnError::permanent("no")));
    }

    #[test]
    fn freeing_an_empty_or_null_buffer_is_a_no_op() {
        // SAFETY: empty and null buffers are documented no-ops.
        unsafe {
            __free(SquallBuf::EMPTY);
            __free(into_buf(Vec::new()));
        }
    }
}
