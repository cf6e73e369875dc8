//! `Context`, `Host` and `Level`: safe views of what the host passes to a function.

use std::cell::OnceCell;
use std::marker::PhantomData;
use std::mem::{offset_of, size_of};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::abi::{self, LogFn, SquallBytes, SquallCtx, SquallHost};

/// A log level, numbered as in the ABI (`SQUALL_LOG_ERROR` = 1 … `SQUALL_LOG_TRACE` = 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Level {
    /// Something failed.
    Error = abi::LOG_ERROR,
    /// Something looks wrong but the function carries on.
    Warn = abi::LOG_WARN,
    /// Progress worth keeping.
    Info = abi::LOG_INFO,
    /// Detail for whoever debugs the function.
    Debug = abi::LOG_DEBUG,
    /// Even more detail.
    Trace = abi::LOG_TRACE,
}

impl Level {
    /// The level's number on the wire.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The level for an ABI number, if it names one.
    pub fn from_u32(level: u32) -> Option<Level> {
        match level {
            abi::LOG_ERROR => Some(Level::Error),
            abi::LOG_WARN => Some(Level::Warn),
            abi::LOG_INFO => Some(Level::Info),
            abi::LOG_DEBUG => Some(Level::Debug),
            abi::LOG_TRACE => Some(Level::Trace),
            _ => None,
        }
    }
}

/// Whether a struct that the host says is `size` bytes long holds the field at
/// `offset..offset + len`. Later hosts append fields, older ones lack them: this is the ABI's
/// `size` rule.
fn covers(size: u32, offset: usize, len: usize) -> bool {
    usize::try_from(size).is_ok_and(|size| size >= offset + len)
}

/// The services the host offers a function, valid for `'a`.
///
/// A `Host` reaches a handler through [`Context::host`] and an init function as its argument.
/// Every method is safe to call: a missing host or a missing callback makes it a no-op.
#[derive(Debug)]
pub struct Host<'a> {
    raw: *const SquallHost,
    _host: PhantomData<&'a SquallHost>,
}

impl<'a> Host<'a> {
    /// A host that offers nothing: logs are discarded.
    pub fn none() -> Host<'a> {
        Host {
            raw: std::ptr::null(),
            _host: PhantomData,
        }
    }

    /// Wraps the host pointer passed to `squall_init` or found in a `squall_ctx`.
    ///
    /// # Safety
    /// `raw` must be null, or point to a `squall_host` whose first `size` bytes are readable and
    /// stay valid for `'a`, with a `log` callback (when `size` covers it) that is safe to call
    /// with its `data` during `'a`, and host-service callbacks (when `size` covers them) that
    /// are safe to call, during `'a`, with the `squall_ctx` that carries this host.
    pub unsafe fn from_raw(raw: *const SquallHost) -> Host<'a> {
        Host {
            raw,
            _host: PhantomData,
        }
    }

    /// The raw pointer, for code that needs a host service this crate does not wrap yet.
    pub fn as_ptr(&self) -> *const SquallHost {
        self.raw
    }

    /// Whether the host accepts log lines.
    pub fn can_log(&self) -> bool {
        self.log_callback().is_some()
    }

    fn log_callback(&self) -> Option<(LogFn, *mut std::ffi::c_void)> {
        if self.raw.is_null() {
            return None;
        }
        let raw = self.raw;
        // SAFETY: `from_raw`'s contract makes a non-null `raw` point to a host struct whose
        // first `size` bytes are readable; `size` itself is the first field, always present.
        let size = unsafe { (&raw const (*raw).size).read() };
        // `data` sits before `log`, so covering `log` covers both.
        if !covers(
            size,
            offset_of!(SquallHost, log),
            size_of::<Option<LogFn>>(),
        ) {
            return None;
        }
        // SAFETY: `size` covers both fields, so they lie within the readable bytes.
        let (log, data) = unsafe {
            (
                (&raw const (*raw).log).read(),
                (&raw const (*raw).data).read(),
            )
        };
        log.map(|log| (log, data))
    }

    /// Sends one log line to the host; a no-op when the host does not log.
    pub fn log(&self, level: Level, message: &str) {
        if let Some((log, data)) = self.log_callback() {
            // SAFETY: `from_raw`'s contract makes the callback safe to call with the host's own
            // `data` during 'a; the message is borrowed only for the duration of the call.
            unsafe {
                log(
                    data,
                    level.as_u32(),
                    SquallBytes::from_slice(message.as_bytes()),
                )
            }
        }
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Trace`].
    pub fn trace(&self, message: &str) {
        self.log(Level::Trace, message);
    }
}

/// What a handler knows about the invocation it runs: names, attempt, deadline, trace context,
/// the function's config, the triggering event, and a way to log through the host.
///
/// `config()` and `event()` parse their JSON the first time they are called and keep the result.
#[derive(Debug)]
pub struct Context<'a> {
    /// The `squall_ctx` the host built, handed back to its services; null without a host.
    pub(crate) raw: *const SquallCtx,
    function: &'a [u8],
    invocation_id: &'a [u8],
    traceparent: &'a [u8],
    config_raw: &'a [u8],
    event_raw: &'a [u8],
    attempt: u32,
    deadline_unix_ms: u64,
    host: Host<'a>,
    config: OnceCell<Value>,
    event: OnceCell<Value>,
}

impl<'a> Context<'a> {
    /// A context that no host backs, for running a handler in a unit test or a local tool.
    ///
    /// Logs are discarded; the attempt is 1, the deadline 0, config and event empty until set
    /// with the `with_*` methods.
    pub fn new(function: &'a str, invocation_id: &'a str) -> Context<'a> {
        Context {
            raw: std::ptr::null(),
            function: function.as_bytes(),
            invocation_id: invocation_id.as_bytes(),
            traceparent: &[],
            config_raw: &[],
            event_raw: &[],
            attempt: 1,
            deadline_unix_ms: 0,
            host: Host::none(),
            config: OnceCell::new(),
            event: OnceCell::new(),
        }
    }

    /// Sets the config JSON that [`Context::config`] parses.
    pub fn with_config(mut self, json: &'a [u8]) -> Context<'a> {
        self.config_raw = json;
        self.config = OnceCell::new();
        self
    }

    /// Sets the event JSON that [`Context::event`] parses.
    pub fn with_event(mut self, json: &'a [u8]) -> Context<'a> {
        self.event_raw = json;
        self.event = OnceCell::new();
        self
    }

    /// Sets the 1-based attempt number.
    pub fn with_attempt(mut self, attempt: u32) -> Context<'a> {
        self.attempt = attempt;
        self
    }

    /// Sets the deadline, in milliseconds since the Unix epoch.
    pub fn with_deadline_unix_ms(mut self, deadline_unix_ms: u64) -> Context<'a> {
        self.deadline_unix_ms = deadline_unix_ms;
        self
    }

    /// Sets the W3C `traceparent`.
    pub fn with_traceparent(mut self, traceparent: &'a str) -> Context<'a> {
        self.traceparent = traceparent.as_bytes();
        self
    }

    /// Reads a `squall_ctx` the host built.
    ///
    /// Fields that the struct's `size` does not cover read as empty (or 0).
    ///
    /// # Safety
    /// Every `squall_bytes` in `ctx` that `size` covers must be null with length 0 or point to
    /// `len` readable bytes, and `ctx.host` must satisfy [`Host::from_raw`], all valid for `'a`.
    pub unsafe fn from_raw(ctx: &'a SquallCtx) -> Context<'a> {
        // SAFETY: a reference is a valid pointer; the caller vouches for what it points to.
        unsafe { Context::from_ptr(ctx) }
    }

    /// Reads a `squall_ctx` through a raw pointer, honouring its `size`; null gives an empty
    /// context without a host.
    ///
    /// # Safety
    /// `ctx` must be null, or point to a struct whose first `size` bytes are readable, with the
    /// same conditions on its fields as [`Context::from_raw`].
    pub(crate) unsafe fn from_ptr(ctx: *const SquallCtx) -> Context<'a> {
        let mut context = Context::new("", "").with_attempt(0);
        if ctx.is_null() {
            return context;
        }
        // SAFETY: the caller makes a non-null `ctx` readable up to `size`, the first field.
        let size = unsafe { (&raw const (*ctx).size).read() };
        context.raw = ctx;

        macro_rules! field {
            ($field:ident, $ty:ty) => {
                if covers(size, offset_of!(SquallCtx, $field), size_of::<$ty>()) {
                    // SAFETY: `size` covers this field, so it lies within the readable bytes.
                    Some(unsafe { (&raw const (*ctx).$field).read() })
                } else {
                    None
                }
            };
        }
        macro_rules! bytes {
            ($field:ident) => {
                match field!($field, SquallBytes) {
                    // SAFETY: the caller guarantees the host's slices are valid for 'a.
                    Some(bytes) => unsafe { bytes.as_slice() },
                    None => &[],
                }
            };
        }

        context.function = bytes!(function);
        context.invocation_id = bytes!(invocation_id);
        context.traceparent = bytes!(traceparent);
        context.config_raw = bytes!(config);
        context.event_raw = bytes!(event);
        context.attempt = field!(attempt, u32).unwrap_or(0);
        context.deadline_unix_ms = field!(deadline_unix_ms, u64).unwrap_or(0);
        if let Some(host) = field!(host, *const SquallHost) {
            // SAFETY: the caller guarantees `ctx.host` satisfies `Host::from_raw` for 'a.
            context.host = unsafe { Host::from_raw(host) };
        }
        context
    }

    /// The function's name; empty if the host sent invalid UTF-8.
    pub fn function(&self) -> &'a str {
        std::str::from_utf8(self.function).unwrap_or("")
    }

    /// This invocation's id, the same for every attempt; empty if the host sent invalid UTF-8.
    pub fn invocation_id(&self) -> &'a str {
        std::str::from_utf8(self.invocation_id).unwrap_or("")
    }

    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the platform gives up on this attempt, in milliseconds since the Unix epoch.
    pub fn deadline_unix_ms(&self) -> u64 {
        self.deadline_unix_ms
    }

    /// When the platform gives up on this attempt.
    pub fn deadline(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deadline_unix_ms)
    }

    /// How long until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.deadline()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// The W3C `traceparent` of the invocation, if the host sent one.
    pub fn traceparent(&self) -> Option<&'a str> {
        match std::str::from_utf8(self.traceparent) {
            Ok("") | Err(_) => None,
            Ok(traceparent) => Some(traceparent),
        }
    }

    /// The function's config values (the `[function.config]` table of its `squall.toml`).
    ///
    /// Parsed on first use; empty or invalid JSON reads as an empty object.
    pub fn config(&self) -> &Value {
        self.config.get_or_init(|| parse_object(self.config_raw))
    }

    /// The config JSON exactly as the host sent it.
    pub fn config_raw(&self) -> &'a [u8] {
        self.config_raw
    }

    /// What triggered the invocation, e.g. `{"source": "http", ...}`.
    ///
    /// Parsed on first use; empty or invalid JSON reads as an empty object.
    pub fn event(&self) -> &Value {
        self.event.get_or_init(|| parse_object(self.event_raw))
    }

    /// The event JSON exactly as the host sent it.
    pub fn event_raw(&self) -> &'a [u8] {
        self.event_raw
    }

    /// The host, for its services beyond logging (see [`Context::kv`] and
    /// [`Context::publish`] for state and events).
    pub fn host(&self) -> &Host<'a> {
        &self.host
    }

    /// Sends one log line to the host, tagged by the host with this invocation.
    pub fn log(&self, level: Level, message: &str) {
        self.host.log(level, message);
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.host.error(message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.host.warn(message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.host.info(message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.host.debug(message);
    }

    /// Logs at [`Level::Trace`].
    pub fn trace(&self, message: &str) {
        self.host.trace(message);
    }
}

/// Parses host-provided JSON, falling back to `{}` so a function never fails on the platform's
/// own metadata.
fn parse_object(json: &[u8]) -> Value {
    if json.is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_slice(json).unwrap_or_else(|_| Value::Object(serde_json::Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_is_parsed_once_and_defaults_to_an_empty_object() {
        let ctx = Context::new("hello", "id-1").with_config(br#"{"greeting": "Hi"}"#);
        assert_eq!(ctx.config(), &json!({"greeting": "Hi"}));
        assert!(std::ptr::eq(ctx.config(), ctx.config()));
        assert_eq!(Context::new("f", "i").config(), &json!({}));
        assert_eq!(
            Context::new("f", "i").with_event(b"{nope").event(),
            &json!({})
        );
    }

    #[test]
    fn empty_traceparent_is_none() {
        assert_eq!(Context::new("f", "i").traceparent(), None);
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            Context::new("f", "i").with_traceparent(tp).traceparent(),
            Some(tp)
        );
    }

    #[test]
    fn deadline_is_milliseconds_since_the_epoch() {
        let ctx = Context::new("f", "i").with_deadline_unix_ms(1_500);
        assert_eq!(ctx.deadline(), UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(ctx.remaining(), Duration::ZERO);
    }

    #[test]
    fn levels_round_trip_through_their_numbers() {
        for level in [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ] {
            assert_eq!(Level::from_u32(level.as_u32()), Some(level));
        }
        assert_eq!(Level::Error.as_u32(), 1);
        assert_eq!(Level::Trace.as_u32(), 5);
        assert_eq!(Level::from_u32(0), None);
    }

    #[test]
    fn a_context_without_a_host_drops_logs() {
        let ctx = Context::new("f", "i");
        assert!(!ctx.host().can_log());
        ctx.info("goes nowhere");
    }
}
