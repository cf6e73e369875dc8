//! A host for tests of language runtimes and SDK users: a context whose host collects the log lines and keeps state and events in memory (feature `testing`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::sync::Mutex;

use crate::abi::{
    LogFn, SquallBuf, SquallBytes, SquallCtx, SquallHost, LOG_ERROR, SQUALL_HOST_NOT_FOUND,
};
use crate::Context;

/// The log lines a call sent to its host: (level, message).
#[derive(Default)]
pub struct Logs(Mutex<Vec<(u32, String)>>);

impl Logs {
    pub fn lines(&self) -> Vec<(u32, String)> {
        self.0.lock().unwrap().clone()
    }

    pub fn errors(&self) -> Vec<String> {
        let lines = self.lines().into_iter();
        lines
            .filter(|(level, _)| *level == LOG_ERROR)
            .map(|(_, m)| m)
            .collect()
    }

    pub fn contains(&self, level: u32, message: &str) -> bool {
        self.lines()
            .iter()
            .any(|(l, m)| *l == level && m == message)
    }
}

unsafe extern "C" fn collect(data: *mut c_void, level: u32, message: SquallBytes) {
    // SAFETY: `data` is the `Logs` that `call` keeps alive for the whole call.
    let logs = unsafe { &*(data as *const Logs) };
    // SAFETY: the SDK passes a message valid for the call.
    let text = String::from_utf8_lossy(unsafe { message.as_slice() }).into_owned();
    logs.0.lock().unwrap().push((level, text));
}

/// What a context carries besides its host.
pub struct Call<'a> {
    pub config: &'a str,
    pub event: &'a str,
    pub attempt: u32,
    pub deadline_unix_ms: u64,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Call {
            config: "{}",
            event: r#"{"source": "http"}"#,
            attempt: 1,
            deadline_unix_ms: 0,
        }
    }
}

/// Runs `body` with a context of function `fn-test`, invocation `inv-1`, whose host offers only
/// `log`; returns what `body` returned and the log lines.
pub fn call<R>(call: Call<'_>, body: impl FnOnce(&Context<'_>) -> R) -> (R, Logs) {
    call_with(call, None, body)
}

/// A host's state and events in memory; `failure` makes every service answer that status.
#[derive(Default)]
pub struct Services {
    pub kv: Mutex<HashMap<String, Vec<u8>>>,
    pub published: Mutex<Vec<(String, Vec<u8>)>>,
    pub cancelled: bool,
    /// The chunks the function streamed, in order.
    pub streamed: Mutex<Vec<Vec<u8>>>,
    pub failure: Option<i32>,
}

/// The state of the host whose `data` is a `(Logs, &Services)`.
///
/// # Safety
/// `ctx` is a context that `call_with` built with services.
unsafe fn services<'a>(ctx: *const SquallCtx) -> &'a Services {
    // SAFETY: `call_with` keeps the ctx, its host and the data alive during the call.
    unsafe { (*((*(*ctx).host).data as *const (Logs, &Services))).1 }
}

unsafe fn text(bytes: SquallBytes) -> String {
    // SAFETY: the SDK passes slices valid for the call.
    String::from_utf8_lossy(unsafe { bytes.as_slice() }).into_owned()
}

unsafe extern "C" fn kv_get(ctx: *const SquallCtx, key: SquallBytes, value: *mut SquallBuf) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_with`.
    let (services, key) = unsafe { (services(ctx), text(key)) };
    if let Some(status) = services.failure {
        return status;
    }
    match services.kv.lock().unwrap().get(&key) {
        None => SQUALL_HOST_NOT_FOUND,
        Some(stored) => {
            let mut copy = std::mem::ManuallyDrop::new(stored.clone());
            let buf = SquallBuf {
                ptr: copy.as_mut_ptr(),
                len: copy.len(),
                cap: copy.capacity(),
            };
            // SAFETY: the SDK passes a writable out-pointer.
            unsafe { value.write(buf) };
            0
        }
    }
}

unsafe extern "C" fn buf_free(buf: SquallBuf) {
    // SAFETY: `buf` is a vector that `kv_get` gave up.
    drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
}

unsafe extern "C" fn kv_put(
    ctx: *const SquallCtx,
    key: SquallBytes,
    value: SquallBytes,
    _ttl_ms: u64,
) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_with`.
    let (services, key, value) = unsafe { (services(ctx), text(key), value.as_slice().to_vec()) };
    if let Some(status) = services.failure {
        return status;
    }
    services.kv.lock().unwrap().insert(key, value);
    0
}

unsafe extern "C" fn kv_delete(ctx: *const SquallCtx, key: SquallBytes) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_with`.
    let (services, key) = unsafe { (services(ctx), text(key)) };
    services.kv.lock().unwrap().remove(&key);
    services.failure.unwrap_or(0)
}

unsafe extern "C" fn publish(
    ctx: *const SquallCtx,
    subject: SquallBytes,
    payload: SquallBytes,
) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_with`.
    let (services, subject, payload) =
        unsafe { (services(ctx), text(subject), payload.as_slice().to_vec()) };
    if let Some(status) = services.failure {
        return status;
    }
    services.published.lock().unwrap().push((subject, payload));
    0
}

unsafe extern "C" fn cancelled(ctx: *const SquallCtx) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_with`.
    i32::from(unsafe { services(ctx) }.cancelled)
}

unsafe extern "C" fn stream_write(ctx: *const SquallCtx, chunk: SquallBytes) -> i32 {
    // SAFETY: called by the SDK during a call built by `call_with`.
    let (services, chunk) = unsafe { (services(ctx), chunk.as_slice().to_vec()) };
    if let Some(status) = services.failure {
        return status;
    }
    services.streamed.lock().unwrap().push(chunk);
    0
}

unsafe extern "C" fn collect_with_services(data: *mut c_void, level: u32, message: SquallBytes) {
    // SAFETY: `data` is the `(Logs, &Services)` that `call_with` keeps alive for the call, and
    // `Logs` is its first field.
    unsafe {
        collect(
            &(*(data as *const (Logs, &Services))).0 as *const Logs as *mut c_void,
            level,
            message,
        )
    }
}

/// Runs `body` like `call`, with the host services of `services` when given.
pub fn call_with<R>(
    call: Call<'_>,
    services: Option<&Services>,
    body: impl FnOnce(&Context<'_>) -> R,
) -> (R, Logs) {
    let none = Services::default();
    let data = (Logs::default(), services.unwrap_or(&none));
    let host = match services {
        Some(_) => SquallHost {
            size: size_of::<SquallHost>() as u32,
            data: &data as *const (Logs, &Services) as *mut c_void,
            log: Some(collect_with_services),
            kv_get: Some(kv_get),
            kv_put: Some(kv_put),
            kv_delete: Some(kv_delete),
            publish: Some(publish),
            buf_free: Some(buf_free),
            cancelled: Some(cancelled),
            stream_write: Some(stream_write),
        },
        None => SquallHost {
            // Only `data` and `log`: the SDK reads no further, so the host services answer
            // "unsupported".
            size: (offset_of!(SquallHost, log) + size_of::<Option<LogFn>>()) as u32,
            data: &data.0 as *const Logs as *mut c_void,
            log: Some(collect),
            kv_get: None,
            kv_put: None,
            kv_delete: None,
            publish: None,
            buf_free: None,
            cancelled: None,
            stream_write: None,
        },
    };
    let ctx = SquallCtx {
        size: size_of::<SquallCtx>() as u32,
        function: SquallBytes::from_slice(b"fn-test"),
        invocation_id: SquallBytes::from_slice(b"inv-1"),
        traceparent: SquallBytes::EMPTY,
        config: SquallBytes::from_slice(call.config.as_bytes()),
        event: SquallBytes::from_slice(call.event.as_bytes()),
        attempt: call.attempt,
        deadline_unix_ms: call.deadline_unix_ms,
        host: &host,
    };
    // SAFETY: every slice and the host outlive the context, which lives only in this function.
    let context = unsafe { Context::from_raw(&ctx) };
    let result = body(&context);
    drop(context);
    (result, data.0)
}
