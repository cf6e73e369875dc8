//! The Squall function ABI v1, as `#[repr(C)]` Rust types that match `include/squall.h` to the byte.
//!
//! This module is the public contract shared by the worker (the host) and every function library.
//! Change it only with a new ABI version that the worker also accepts beside v1.

use std::ffi::c_void;

/// The ABI version this crate implements; a library exports it as the `squall_abi_version` data symbol.
pub const SQUALL_ABI_VERSION: u32 = 1;

/// `squall_invoke` status: the call succeeded and `body` holds the output.
pub const SQUALL_OK: i32 = 0;
/// `squall_invoke` status: a permanent error; `body` holds a UTF-8 message and retrying is pointless.
pub const SQUALL_ERROR: i32 = 1;
/// `squall_invoke` status: a retryable error; `body` holds a UTF-8 message, `retry_after_ms` a hint.
pub const SQUALL_RETRY: i32 = 2;
/// `squall_invoke` status: the function panicked; `body` holds the panic message.
pub const SQUALL_PANIC: i32 = 3;

/// Log levels passed to [`SquallHost::log`].
pub const LOG_ERROR: u32 = 1;
/// Warning level.
pub const LOG_WARN: u32 = 2;
/// Info level.
pub const LOG_INFO: u32 = 3;
/// Debug level.
pub const LOG_DEBUG: u32 = 4;
/// Trace level.
pub const LOG_TRACE: u32 = 5;

/// Exported symbol names, NUL-terminated for `dlsym`.
pub mod symbols {
    /// `const uint32_t squall_abi_version`: data, read before anything else is resolved.
    pub const ABI_VERSION: &[u8] = b"squall_abi_version\0";
    /// `int32_t squall_init(const squall_host *)`: optional.
    pub const INIT: &[u8] = b"squall_init\0";
    /// `int32_t squall_invoke(const squall_ctx *, squall_bytes, squall_output *)`.
    pub const INVOKE: &[u8] = b"squall_invoke\0";
    /// `void squall_free(squall_buf)`.
    pub const FREE: &[u8] = b"squall_free\0";
}

/// `squall_bytes`: a byte slice borrowed for the duration of one call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SquallBytes {
    /// The first byte; may be null when `len` is 0. Not NUL-terminated.
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

impl SquallBytes {
    /// An empty slice (null pointer, zero length).
    pub const EMPTY: SquallBytes = SquallBytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `bytes` for the duration of a call.
    pub fn from_slice(bytes: &[u8]) -> SquallBytes {
        SquallBytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Views the borrowed bytes.
    ///
    /// # Safety
    /// `ptr` must be null with `len == 0`, or point to `len` readable bytes that stay valid for `'a`.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `ptr` points to `len` readable bytes valid for 'a.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// `squall_buf`: a buffer allocated and owned by the function library, released with `squall_free`.
#[repr(C)]
#[derive(Debug)]
pub struct SquallBuf {
    /// The first byte; null (or dangling) when `len` is 0.
    pub ptr: *mut u8,
    /// The number of bytes of output.
    pub len: usize,
    /// The allocation's capacity, for the library's own `squall_free`; the host passes it back
    /// untouched.
    pub cap: usize,
}

impl SquallBuf {
    /// An empty buffer that owns nothing.
    pub const EMPTY: SquallBuf = SquallBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
}

/// The host's log callback: `void (*log)(void *data, uint32_t level, squall_bytes message)`.
pub type LogFn = unsafe extern "C" fn(data: *mut c_void, level: u32, message: SquallBytes);

/// `kv_get`: 0 found (`*value` filled by the host, given back with `buf_free`), 1 no such key,
/// < 0 an error ([`SQUALL_HOST_UNAVAILABLE`] …).
pub type KvGetFn =
    unsafe extern "C" fn(ctx: *const SquallCtx, key: SquallBytes, value: *mut SquallBuf) -> i32;
/// `kv_put`: `ttl_ms` 0 keeps the value; 0 stored, < 0 an error.
pub type KvPutFn = unsafe extern "C" fn(
    ctx: *const SquallCtx,
    key: SquallBytes,
    value: SquallBytes,
    ttl_ms: u64,
) -> i32;
/// `kv_delete`: 0 deleted or absent, < 0 an error.
pub type KvDeleteFn = unsafe extern "C" fn(ctx: *const SquallCtx, key: SquallBytes) -> i32;
/// `publish`: `subject` must start with `events.`; 0 accepted, < 0 an error.
pub type PublishFn =
    unsafe extern "C" fn(ctx: *const SquallCtx, subject: SquallBytes, payload: SquallBytes) -> i32;
/// `buf_free`: gives back a buffer the host filled (a `kv_get` value).
pub type BufFreeFn = unsafe extern "C" fn(buf: SquallBuf);
/// `cancelled`: 1 the invocation was cancelled, 0 not, < 0 an error.
pub type CancelledFn = unsafe extern "C" fn(ctx: *const SquallCtx) -> i32;
/// `stream_write`: writes one chunk of the output now; 0 sent, < 0 an error
/// ([`SQUALL_HOST_INVALID`] outside the invocation, [`SQUALL_HOST_TOO_LARGE`] past the output
/// limit). Once a function has streamed, the body `squall_invoke` returns is the last chunk.
pub type StreamWriteFn = unsafe extern "C" fn(ctx: *const SquallCtx, chunk: SquallBytes) -> i32;

/// Host-service status: `kv_get` found no such key.
pub const SQUALL_HOST_NOT_FOUND: i32 = 1;
/// Host-service status: the broker did not answer in time; retryable.
pub const SQUALL_HOST_UNAVAILABLE: i32 = -1;
/// Host-service status: the key or subject is not allowed.
pub const SQUALL_HOST_DENIED: i32 = -2;
/// Host-service status: a key over 256 bytes, or a value or payload over the limit.
pub const SQUALL_HOST_TOO_LARGE: i32 = -3;
/// Host-service status: a malformed key or subject, or a call from outside an invocation.
pub const SQUALL_HOST_INVALID: i32 = -4;

/// `squall_host`: services the host offers a function. Later hosts append fields; read one only
/// when `size` covers it.
#[repr(C)]
#[derive(Debug)]
pub struct SquallHost {
    /// `size_of::<SquallHost>()` as the host built it.
    pub size: u32,
    /// The host's own state, passed back to its callbacks.
    pub data: *mut c_void,
    /// Receives one log line; `None` when the host does not take logs.
    pub log: Option<LogFn>,
    // ---- appended: state and events, scoped to the function of `ctx` ----
    /// Reads a key of the function's own namespace.
    pub kv_get: Option<KvGetFn>,
    /// Writes a key, with an optional time to live.
    pub kv_put: Option<KvPutFn>,
    /// Deletes a key.
    pub kv_delete: Option<KvDeleteFn>,
    /// Publishes on a subject under `events.`.
    pub publish: Option<PublishFn>,
    /// Frees a buffer the host filled.
    pub buf_free: Option<BufFreeFn>,
    // ---- appended: cooperative cancellation ----
    /// Whether the invocation was cancelled.
    pub cancelled: Option<CancelledFn>,
    // ---- appended: streamed responses ----
    /// Writes one chunk of the output now.
    pub stream_write: Option<StreamWriteFn>,
}

/// `struct squall_ctx`: what the host tells a function about one invocation. Later hosts append fields;
/// read one only when `size` covers it.
#[repr(C)]
#[derive(Debug)]
pub struct SquallCtx {
    /// `size_of::<SquallCtx>()` as the host built it.
    pub size: u32,
    /// The function's name, UTF-8.
    pub function: SquallBytes,
    /// The invocation's id, UTF-8; the same for every attempt.
    pub invocation_id: SquallBytes,
    /// The W3C `traceparent`; may be empty.
    pub traceparent: SquallBytes,
    /// The function's config values, a JSON object.
    pub config: SquallBytes,
    /// What triggered the invocation, a JSON object such as `{"source": "http", ...}`.
    pub event: SquallBytes,
    /// The attempt number, 1-based.
    pub attempt: u32,
    /// When the platform gives up on this attempt, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// The host's services; may be null.
    pub host: *const SquallHost,
}

/// `squall_output`: filled in by `squall_invoke`.
#[repr(C)]
#[derive(Debug)]
pub struct SquallOutput {
    /// The output on `SQUALL_OK`, a UTF-8 error message otherwise; freed with `squall_free`.
    pub body: SquallBuf,
    /// With `SQUALL_RETRY`: the suggested delay in milliseconds, 0 for the policy's default.
    pub retry_after_ms: u64,
}

/// `int32_t squall_init(const squall_host *host)`.
pub type InitFn = unsafe extern "C" fn(host: *const SquallHost) -> i32;
/// `int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out)`.
pub type InvokeFn =
    unsafe extern "C" fn(ctx: *const SquallCtx, input: SquallBytes, out: *mut SquallOutput) -> i32;
/// `void squall_free(squall_buf buf)`.
pub type FreeFn = unsafe extern "C" fn(buf: SquallBuf);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn layout_matches_squall_h_on_64_bit_targets() {
        assert_eq!(size_of::<SquallBytes>(), 16);
        assert_eq!(size_of::<SquallBuf>(), 24);
        assert_eq!(size_of::<SquallHost>(), 80);
        assert_eq!(offset_of!(SquallHost, data), 8);
        assert_eq!(offset_of!(SquallHost, log), 16);
        assert_eq!(offset_of!(SquallHost, kv_get), 24);
        assert_eq!(offset_of!(SquallHost, kv_put), 32);
        assert_eq!(offset_of!(SquallHost, kv_delete), 40);
        assert_eq!(offset_of!(SquallHost, publish), 48);
        assert_eq!(offset_of!(SquallHost, buf_free), 56);
        assert_eq!(offset_of!(SquallHost, cancelled), 64);
        assert_eq!(offset_of!(SquallHost, stream_write), 72);
        assert_eq!(offset_of!(SquallCtx, function), 8);
        assert_eq!(offset_of!(SquallCtx, invocation_id), 24);
        assert_eq!(offset_of!(SquallCtx, traceparent), 40);
        assert_eq!(offset_of!(SquallCtx, config), 56);
        assert_eq!(offset_of!(SquallCtx, event), 72);
        assert_eq!(offset_of!(SquallCtx, attempt), 88);
        assert_eq!(offset_of!(SquallCtx, deadline_unix_ms), 96);
        assert_eq!(offset_of!(SquallCtx, host), 104);
        assert_eq!(size_of::<SquallCtx>(), 112);
        assert_eq!(size_of::<SquallOutput>(), 32);
        assert_eq!(offset_of!(SquallOutput, retry_after_ms), 24);
    }
}
