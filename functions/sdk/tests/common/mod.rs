//! A tiny host for the SDK's tests: builds a real `squall_ctx`, records log lines, and calls a
//! function through the C ABI exactly as the worker does.

// Each test binary uses a different part of this host.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use squall_sdk::abi::{
    FreeFn, InvokeFn, SquallBuf, SquallBytes, SquallCtx, SquallHost, SquallOutput,
};

/// Log lines as the host received them: (level, message).
#[derive(Default)]
pub struct Recorder {
    lines: Mutex<Vec<(u32, String)>>,
}

impl Recorder {
    pub fn lines(&self) -> Vec<(u32, String)> {
        self.lines.lock().unwrap().clone()
    }
}

/// The host's log callback: `data` is a `&Recorder`.
pub unsafe extern "C" fn record(data: *mut c_void, level: u32, message: SquallBytes) {
    // SAFETY: every host built here passes a pointer to a live `Recorder` as `data`.
    let recorder = unsafe { &*(data as *const Recorder) };
    // SAFETY: the SDK passes a message borrowed for the duration of this call.
    let message = String::from_utf8_lossy(unsafe { message.as_slice() }).into_owned();
    recorder.lines.lock().unwrap().push((level, message));
}

thread_local! {
    /// The test host's state: key → value, per test thread.
    pub static STATE: RefCell<HashMap<Vec<u8>, Vec<u8>>> = RefCell::new(HashMap::new());
    /// What functions published: (subject, payload).
    pub static PUBLISHED: RefCell<Vec<(String, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" fn kv_get(
    _ctx: *const SquallCtx,
    key: SquallBytes,
    value: *mut SquallBuf,
) -> i32 {
    // SAFETY: the SDK passes a key borrowed for the call.
    let key = unsafe { key.as_slice() }.to_vec();
    match STATE.with(|s| s.borrow().get(&key).cloned()) {
        None => squall_sdk::abi::SQUALL_HOST_NOT_FOUND,
        Some(bytes) => {
            let mut bytes = std::mem::ManuallyDrop::new(bytes);
            // SAFETY: `value` is the SDK's valid out-pointer.
            unsafe {
                value.write(SquallBuf {
                    ptr: bytes.as_mut_ptr(),
                    len: bytes.len(),
                    cap: bytes.capacity(),
                })
            };
            0
        }
    }
}

unsafe extern "C" fn kv_put(
    _ctx: *const SquallCtx,
    key: SquallBytes,
    value: SquallBytes,
    _ttl_ms: u64,
) -> i32 {
    // SAFETY: the SDK passes both slices borrowed for the call.
    let (key, value) = unsafe { (key.as_slice().to_vec(), value.as_slice().to_vec()) };
    if value.len() > 1 << 20 {
        return squall_sdk::abi::SQUALL_HOST_TOO_LARGE;
    }
    STATE.with(|s| s.borrow_mut().insert(key, value));
    0
}

unsafe extern "C" fn kv_delete(_ctx: *const SquallCtx, key: SquallBytes) -> i32 {
    // SAFETY: the SDK passes a key borrowed for the call.
    let key = unsafe { key.as_slice() }.to_vec();
    STATE.with(|s| s.borrow_mut().remove(&key));
    0
}

unsafe extern "C" fn publish(
    _ctx: *const SquallCtx,
    subject: SquallBytes,
    payload: SquallBytes,
) -> i32 {
    // SAFETY: the SDK passes both slices borrowed for the call.
    let (subject, payload) = unsafe { (subject.as_slice(), payload.as_slice().to_vec()) };
    let subject = String::from_utf8_lossy(subject).into_owned();
    if !subject.starts_with("events.") {
        return squall_sdk::abi::SQUALL_HOST_DENIED;
    }
    PUBLISHED.with(|p| p.borrow_mut().push((subject, payload)));
    0
}

unsafe extern "C" fn buf_free(buf: SquallBuf) {
    if !buf.ptr.is_null() && buf.cap > 0 {
        // SAFETY: `kv_get` made this buffer from a Vec with these parts.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}

/// A host that records log lines and keeps state and events in memory (this thread's).
pub fn host(recorder: &Recorder) -> SquallHost {
    SquallHost {
        size: size_of::<SquallHost>() as u32,
        data: recorder as *const Recorder as *mut c_void,
        log: Some(record),
        kv_get: Some(kv_get),
        kv_put: Some(kv_put),
        kv_delete: Some(kv_delete),
        publish: Some(publish),
        buf_free: Some(buf_free),
        cancelled: Some(cancelled),
        stream_write: Some(stream_write),
    }
}

thread_local! {
    /// Whether this thread's test host says the invocation was cancelled.
    pub static CANCELLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C" fn cancelled(_ctx: *const SquallCtx) -> i32 {
    i32::from(CANCELLED.with(|c| c.get()))
}

thread_local! {
    /// The chunks functions streamed on this thread, in order.
    pub static STREAMED: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" fn stream_write(_ctx: *const SquallCtx, chunk: SquallBytes) -> i32 {
    // SAFETY: the SDK passes a chunk borrowed for the call.
    let chunk = unsafe { chunk.as_slice() }.to_vec();
    STREAMED.with(|s| s.borrow_mut().push(chunk));
    0
}

/// The size of `squall_host` before the host services were appended (`size`, `data`, `log`).
pub const HOST_SIZE_BEFORE_SERVICES: u32 = 24;
/// The size of `squall_host` with the host services but before `cancelled` was appended.
pub const HOST_SIZE_BEFORE_CANCELLED: u32 = 64;
/// The size of `squall_host` with `cancelled` but before `stream_write` was appended.
pub const HOST_SIZE_BEFORE_STREAM_WRITE: u32 = 72;

/// Everything a test may set in a `squall_ctx`.
pub struct Call<'a> {
    pub function: &'a str,
    pub invocation_id: &'a str,
    pub traceparent: &'a str,
    pub config: &'a [u8],
    pub event: &'a [u8],
    pub attempt: u32,
    pub deadline_unix_ms: u64,
    /// Overrides `squall_ctx.size`, to act as an older host.
    pub ctx_size: Option<u32>,
    /// Overrides `squall_host.size`.
    pub host_size: Option<u32>,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Call {
            function: "hello",
            invocation_id: "0193-test",
            traceparent: "",
            config: b"{}",
            event: br#"{"source": "http"}"#,
            attempt: 1,
            deadline_unix_ms: 4_102_444_800_000,
            ctx_size: None,
            host_size: None,
        }
    }
}

/// What one call returned, with the output copied out before `squall_free`.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    pub body: Vec<u8>,
    pub retry_after_ms: u64,
    pub logs: Vec<(u32, String)>,
}

impl Outcome {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }
}

/// Calls `invoke` with `input` and a default context, then frees the output with `free`.
pub fn invoke(invoke: InvokeFn, free: FreeFn, input: &[u8]) -> Outcome {
    invoke_with(invoke, free, input, &Call::default())
}

/// Calls `invoke` as the worker would, then frees the output with `free`.
pub fn invoke_with(invoke: InvokeFn, free: FreeFn, input: &[u8], call: &Call<'_>) -> Outcome {
    let recorder = Recorder::default();
    let mut host = host(&recorder);
    if let Some(size) = call.host_size {
        host.size = size;
    }
    let ctx = SquallCtx {
        size: call.ctx_size.unwrap_or(size_of::<SquallCtx>() as u32),
        function: SquallBytes::from_slice(call.function.as_bytes()),
        invocation_id: SquallBytes::from_slice(call.invocation_id.as_bytes()),
        traceparent: SquallBytes::from_slice(call.traceparent.as_bytes()),
        config: SquallBytes::from_slice(call.config),
        event: SquallBytes::from_slice(call.event),
        attempt: call.attempt,
        deadline_unix_ms: call.deadline_unix_ms,
        host: &host,
    };
    // Garbage in `out`, as a host with uninitialised memory would pass.
    let mut out = SquallOutput {
        body: SquallBuf {
            ptr: std::ptr::dangling_mut(),
            len: 7,
            cap: 7,
        },
        retry_after_ms: 99,
    };
    // SAFETY: ctx, its strings, the host and `out` all outlive the call.
    let status = unsafe { invoke(&ctx, SquallBytes::from_slice(input), &mut out) };
    // SAFETY: a successful `squall_invoke` always fills `out.body` with a buffer of `len` bytes.
    let body = unsafe {
        SquallBytes {
            ptr: out.body.ptr,
            len: out.body.len,
        }
        .as_slice()
    }
    .to_vec();
    // SAFETY: the buffer came from this library's `squall_invoke` and is freed once.
    unsafe { free(out.body) };
    Outcome {
        status,
        body,
        retry_after_ms: out.retry_after_ms,
        logs: recorder.lines(),
    }
}
