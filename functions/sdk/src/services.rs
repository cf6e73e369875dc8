//! Host services for Rust functions: the function's own key-value state and event publishing.
//!
//! The calls go through the `squall_host` fields appended to ABI v1 (`kv_get` … `buf_free`).
//! A host too old to offer them answers every call with [`HostError::Unsupported`], never a
//! crash: the size rule is checked before any field is read.

use std::mem::{offset_of, size_of};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::abi::{
    self, BufFreeFn, CancelledFn, KvDeleteFn, KvGetFn, KvPutFn, PublishFn, SquallBuf, SquallBytes,
    SquallCtx, SquallHost, StreamWriteFn,
};
use crate::context::Context;

/// Why a host-service call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The broker did not answer in time; retrying the invocation may succeed.
    Unavailable,
    /// The key or subject is not allowed (a publish outside `events.`).
    Denied,
    /// A key over 256 bytes, or a value or payload over the limit.
    TooLarge,
    /// A malformed key or subject, or a call from outside an invocation.
    Invalid,
    /// The host offers no state or events (it predates them, or no host backs this context).
    Unsupported,
    /// A value that does not decode as the requested type (`get_json`), or a value that does
    /// not encode (`put_json`).
    Json(String),
    /// A status this SDK does not know.
    Other(i32),
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Unavailable => f.write_str("the platform's store did not answer in time"),
            HostError::Denied => f.write_str("not allowed"),
            HostError::TooLarge => f.write_str("key, value or payload too large"),
            HostError::Invalid => f.write_str("invalid key, subject or call"),
            HostError::Unsupported => f.write_str("the host offers no state or event services"),
            HostError::Json(e) => write!(f, "value is not valid JSON for this type: {e}"),
            HostError::Other(status) => write!(f, "host service failed with status {status}"),
        }
    }
}

impl std::error::Error for HostError {}

impl HostError {
    /// The error for a host status below zero.
    pub fn from_status(status: i32) -> HostError {
        match status {
            abi::SQUALL_HOST_UNAVAILABLE => HostError::Unavailable,
            abi::SQUALL_HOST_DENIED => HostError::Denied,
            abi::SQUALL_HOST_TOO_LARGE => HostError::TooLarge,
            abi::SQUALL_HOST_INVALID => HostError::Invalid,
            other => HostError::Other(other),
        }
    }

    /// Whether retrying the invocation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HostError::Unavailable)
    }
}

impl From<HostError> for crate::FnError {
    /// An unavailable store is retryable; every other host error is permanent.
    fn from(error: HostError) -> crate::FnError {
        if error.is_retryable() {
            crate::FnError::retry(error.to_string())
        } else {
            crate::FnError::permanent(error.to_string())
        }
    }
}

/// The host-service callbacks of a host that offers all of them.
#[derive(Clone, Copy)]
struct Services {
    ctx: *const SquallCtx,
    kv_get: KvGetFn,
    kv_put: KvPutFn,
    kv_delete: KvDeleteFn,
    publish: PublishFn,
    buf_free: BufFreeFn,
}

fn services(context: &Context<'_>) -> Result<Services, HostError> {
    let host: *const SquallHost = context.host().as_ptr();
    if host.is_null() || context.raw.is_null() {
        return Err(HostError::Unsupported);
    }
    // SAFETY: `Host::from_raw`'s contract makes a non-null host readable up to `size`, its
    // first field.
    let size = unsafe { (&raw const (*host).size).read() };
    let end = offset_of!(SquallHost, buf_free) + size_of::<Option<BufFreeFn>>();
    if usize::try_from(size).map_or(true, |size| size < end) {
        return Err(HostError::Unsupported);
    }
    // SAFETY: `size` covers every field up to `buf_free`, so they lie within readable bytes.
    let fields = unsafe {
        (
            (&raw const (*host).kv_get).read(),
            (&raw const (*host).kv_put).read(),
            (&raw const (*host).kv_delete).read(),
            (&raw const (*host).publish).read(),
            (&raw const (*host).buf_free).read(),
        )
    };
    match fields {
        (Some(kv_get), Some(kv_put), Some(kv_delete), Some(publish), Some(buf_free)) => {
            Ok(Services {
                ctx: context.raw,
                kv_get,
                kv_put,
                kv_delete,
                publish,
                buf_free,
            })
        }
        _ => Err(HostError::Unsupported),
    }
}

fn status(code: i32) -> Result<(), HostError> {
    if code < 0 {
        Err(HostError::from_status(code))
    } else {
        Ok(())
    }
}

/// The function's own key-value namespace, from [`Context::kv`].
///
/// Keys are 1 to 256 bytes of `[A-Za-z0-9_=./-]`, not starting or ending with `.`; values are
/// at most 1 MiB. A function never sees another function's keys. Reads of keys this worker
/// used recently answer from its memory, kept coherent with every other worker's writes.
pub struct Kv<'c> {
    context: &'c Context<'c>,
}

impl Kv<'_> {
    /// The value of `key`, or `None` when there is none (or it expired).
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        let s = services(self.context)?;
        let mut value = SquallBuf::EMPTY;
        // SAFETY: `services` checked the size rule; the callback is the host's own, called with
        // the ctx it built, during the invocation; `value` is a valid out-pointer.
        let code =
            unsafe { (s.kv_get)(s.ctx, SquallBytes::from_slice(key.as_bytes()), &mut value) };
        if code < 0 {
            return Err(HostError::from_status(code));
        }
        if code == abi::SQUALL_HOST_NOT_FOUND {
            return Ok(None);
        }
        let bytes = if value.ptr.is_null() || value.len == 0 {
            Vec::new()
        } else {
            // SAFETY: on 0 the host filled `value` with `len` initialised bytes that stay valid
            // until they are handed back to `buf_free`.
            unsafe { std::slice::from_raw_parts(value.ptr, value.len) }.to_vec()
        };
        if !value.ptr.is_null() {
            // SAFETY: the buffer came from this host's `kv_get` and is given back exactly once.
            unsafe { (s.buf_free)(value) };
        }
        Ok(Some(bytes))
    }

    /// Stores `value` under `key` until it is deleted.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.put_raw(key, value, 0)
    }

    /// Stores `value` under `key` for `ttl` (the broker keeps whole seconds, rounded up).
    pub fn put_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HostError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.put_raw(key, value, ttl_ms)
    }

    fn put_raw(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), HostError> {
        let s = services(self.context)?;
        // SAFETY: as in `get`; both slices are borrowed for the duration of the call.
        let code = unsafe {
            (s.kv_put)(
                s.ctx,
                SquallBytes::from_slice(key.as_bytes()),
                SquallBytes::from_slice(value),
                ttl_ms,
            )
        };
        status(code)
    }

    /// Deletes `key`; deleting a key that does not exist succeeds.
    pub fn delete(&self, key: &str) -> Result<(), HostError> {
        let s = services(self.context)?;
        // SAFETY: as in `get`; the key is borrowed for the duration of the call.
        let code = unsafe { (s.kv_delete)(s.ctx, SquallBytes::from_slice(key.as_bytes())) };
        status(code)
    }

    /// The value of `key` decoded from JSON, or `None` when there is none.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, HostError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| HostError::Json(e.to_string())),
        }
    }

    /// Stores `value` as JSON under `key`.
    pub fn put_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), HostError> {
        let bytes = serde_json::to_vec(value).map_err(|e| HostError::Json(e.to_string()))?;
        self.put(key, &bytes)
    }
}

impl<'a> Context<'a> {
    /// The function's own key-value state.
    pub fn kv(&self) -> Kv<'_> {
        Kv { context: self }
    }

    /// Publishes `payload` on `subject`, which must start with `events.`. When a trigger's
    /// stream captures the subject, the message is stored before this returns, and a retried
    /// attempt that publishes the same sequence is deduplicated.
    pub fn publish(&self, subject: &str, payload: &[u8]) -> Result<(), HostError> {
        let s = services(self)?;
        // SAFETY: as in `Kv::get`; both slices are borrowed for the duration of the call.
        let code = unsafe {
            (s.publish)(
                s.ctx,
                SquallBytes::from_slice(subject.as_bytes()),
                SquallBytes::from_slice(payload),
            )
        };
        status(code)
    }

    /// Whether the invocation was cancelled (`DELETE /v1/invocations/{id}`): a long-running
    /// function may check this now and then and stop early. Whatever it returns then, the
    /// invocation ends `cancelled`. `false` on a host too old to offer the call. Cheap: the
    /// worker answers from memory.
    pub fn cancelled(&self) -> bool {
        let host: *const SquallHost = self.host().as_ptr();
        if host.is_null() || self.raw.is_null() {
            return false;
        }
        // SAFETY: `Host::from_raw`'s contract makes a non-null host readable up to `size`, its
        // first field.
        let size = unsafe { (&raw const (*host).size).read() };
        let end = offset_of!(SquallHost, cancelled) + size_of::<Option<CancelledFn>>();
        if usize::try_from(size).map_or(true, |size| size < end) {
            return false;
        }
        // SAFETY: `size` covers `cancelled`, so it lies within the readable bytes.
        let Some(cancelled) = (unsafe { (&raw const (*host).cancelled).read() }) else {
            return false;
        };
        // SAFETY: the host's contract makes its callbacks safe to call with this call's ctx
        // during the call.
        unsafe { cancelled(self.raw) == 1 }
    }

    /// Writes one chunk of the output now: a caller that asked for a stream receives it
    /// before the function returns. Once a function has streamed, what it returns is sent as
    /// the last chunk, and the invocation's output is every chunk in order. A streamed
    /// invocation is not retried. `Unsupported` on a host too old to offer the call (return the
    /// whole output instead); `TooLarge` past the output limit.
    pub fn stream_write(&self, chunk: &[u8]) -> Result<(), HostError> {
        let host: *const SquallHost = self.host().as_ptr();
        if host.is_null() || self.raw.is_null() {
            return Err(HostError::Unsupported);
        }
        // SAFETY: `Host::from_raw`'s contract makes a non-null host readable up to `size`, its
        // first field.
        let size = unsafe { (&raw const (*host).size).read() };
        let end = offset_of!(SquallHost, stream_write) + size_of::<Option<StreamWriteFn>>();
        if usize::try_from(size).map_or(true, |size| size < end) {
            return Err(HostError::Unsupported);
        }
        // SAFETY: `size` covers `stream_write`, so it lies within the readable bytes.
        let Some(stream_write) = (unsafe { (&raw const (*host).stream_write).read() }) else {
            return Err(HostError::Unsupported);
        };
        // SAFETY: the host's contract makes its callbacks safe to call with this call's ctx
        // during the call; `chunk` is borrowed for its duration.
        status(unsafe { stream_write(self.raw, SquallBytes::from_slice(chunk)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_without_a_host_has_no_services() {
        let ctx = Context::new("f", "i");
        assert_eq!(ctx.kv().get("k"), Err(HostError::Unsupported));
        assert_eq!(ctx.publish("events.x", b"y"), Err(HostError::Unsupported));
        assert!(!ctx.cancelled());
        assert_eq!(ctx.stream_write(b"x"), Err(HostError::Unsupported));
    }

    #[test]
    fn statuses_map_to_errors() {
        assert_eq!(HostError::from_status(-1), HostError::Unavailable);
        assert_eq!(HostError::from_status(-2), HostError::Denied);
        assert_eq!(HostError::from_status(-3), HostError::TooLarge);
        assert_eq!(HostError::from_status(-4), HostError::Invalid);
        assert_eq!(HostError::from_status(-9), HostError::Other(-9));
        assert!(HostError::Unavailable.is_retryable());
        assert!(!HostError::Denied.is_retryable());
    }
}
