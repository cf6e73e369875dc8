//! The one place that loads function libraries and calls into them through the C ABI.
//!
//! Architecture invariant: every `dlopen`, `dlsym` and FFI call of the worker lives in this module.
//! A library is never unloaded (Rust TLS destructors make `dlclose` unsound), so a `Loaded`
//! keeps its `Library` alive for the life of the process.

use squall_broker::record::{LogLevel, LogLine};
use squall_sdk::abi::{
    self, FreeFn, InitFn, InvokeFn, SquallBuf, SquallBytes, SquallCtx, SquallHost, SquallOutput,
};
use squall_sdk::Level;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Why a library could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load library: {0}")]
    Open(String),
    #[error("library does not export squall_abi_version")]
    NoAbiVersion,
    #[error(
        "library has ABI version {found}; this worker supports version {}",
        abi::SQUALL_ABI_VERSION
    )]
    AbiVersion { found: u32 },
    #[error("library does not export {0}")]
    MissingSymbol(&'static str),
    #[error("squall_init failed with status {0}")]
    Init(i32),
}

/// A loaded function library and the entry points taken from it.
///
/// Invariant: `invoke` and `free` point into `_library`, which lives as long as this struct.
pub struct Loaded {
    invoke: InvokeFn,
    free: FreeFn,
    _library: libloading::Library,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

/// The raw outcome of one call: the status code and the bytes the function returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    pub status: i32,
    pub body: Vec<u8>,
    pub retry_after_ms: u64,
}

/// CPU time the calling thread has used so far (its thread CPU clock), for metering.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` to the valid, exclusively borrowed `now`.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The level of a log line a function sent through the ABI's `log(data, level, message)`:
/// parsed here, once, and carried typed from then on. A number the ABI does not name is kept
/// as `trace`, the least severe level.
pub fn log_level(level: u32) -> LogLevel {
    match Level::from_u32(level) {
        Some(Level::Error) => LogLevel::Error,
        Some(Level::Warn) => LogLevel::Warn,
        Some(Level::Info) => LogLevel::Info,
        Some(Level::Debug) => LogLevel::Debug,
        Some(Level::Trace) | None => LogLevel::Trace,
    }
}

/// Collects a call's log lines up to a byte budget.
#[derive(Debug)]
pub struct LogCapture {
    pub lines: Vec<LogLine>,
    pub budget: usize,
    pub dropped: usize,
}

impl LogCapture {
    /// A capture that keeps at most `budget` bytes of messages.
    pub fn new(budget: usize) -> Self {
        LogCapture {
            lines: Vec::new(),
            budget,
            dropped: 0,
        }
    }

    fn push(&mut self, level: LogLevel, message: &[u8]) {
        if message.len() > self.budget {
            self.dropped += 1;
            return;
        }
        self.budget -= message.len();
        self.lines.push(LogLine {
            level,
            message: String::from_utf8_lossy(message).into_owned(),
        });
    }
}

/// What the host tells a function about one call; the loader turns it into a `squall_ctx`.
pub struct CallContext<'a> {
    pub function: &'a str,
    pub invocation_id: &'a str,
    pub traceparent: &'a str,
    pub config: &'a [u8],
    pub event: &'a [u8],
    pub attempt: u32,
    pub deadline_unix_ms: u64,
}

/// The host's `log` callback for calls: appends to the `LogCapture` that `data` points to.
unsafe extern "C" fn capture_log(data: *mut c_void, level: u32, message: SquallBytes) {
    // Never unwind into foreign code: a panic here is swallowed.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if data.is_null() {
            return;
        }
        // SAFETY: `data` is the `&mut LogCapture` that `Loaded::call` put into the host struct,
        // alive and not otherwise borrowed for the duration of the call.
        let capture = unsafe { &mut *(data as *mut LogCapture) };
        // SAFETY: the ABI requires `message` to point to `len` readable bytes during the callback.
        let bytes = unsafe { message.as_slice() };
        capture.push(log_level(level), bytes);
    }));
}

/// The host's `log` callback during `squall_init`: goes straight to the worker's own log.
unsafe extern "C" fn init_log(_data: *mut c_void, level: u32, message: SquallBytes) {
    let _ = catch_unwind(|| {
        // SAFETY: the ABI requires `message` to point to `len` readable bytes during the callback.
        let text = String::from_utf8_lossy(unsafe { message.as_slice() }).into_owned();
        tracing::info!(message = "function init log", level = %log_level(level), text = %text);
    });
}

fn host_struct(data: *mut c_void, log: abi::LogFn) -> SquallHost {
    SquallHost {
        size: std::mem::size_of::<SquallHost>() as u32,
        data,
        log: Some(log),
    }
}

impl Loaded {
    /// Loads the library at `path`: checks the ABI version before resolving anything else,
    /// then resolves the entry points and runs `squall_init` when it is exported.
    pub fn load(path: &Path) -> Result<Loaded, LoadError> {
        // SAFETY: loading a library runs its initialisers. The artifact passed the dispatcher's
        // validation and the worker's sha256 check; running the author's code is the point.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| LoadError::Open(e.to_string()))?;
        // SAFETY: `squall_abi_version` is declared by the ABI as `const uint32_t`; we only read it.
        let version = unsafe {
            let symbol = library
                .get::<*const u32>(abi::symbols::ABI_VERSION)
                .map_err(|_| LoadError::NoAbiVersion)?;
            let ptr: *const u32 = *symbol;
            if ptr.is_null() {
                return Err(LoadError::NoAbiVersion);
            }
            ptr.read_unaligned()
        };
        if version != abi::SQUALL_ABI_VERSION {
            return Err(LoadError::AbiVersion { found: version });
        }
        // SAFETY: the ABI version matched, so these symbols have the v1 signatures.
        let (invoke, free, init) = unsafe {
            let invoke = *library
                .get::<InvokeFn>(abi::symbols::INVOKE)
                .map_err(|_| LoadError::MissingSymbol("squall_invoke"))?;
            let free = *library
                .get::<FreeFn>(abi::symbols::FREE)
                .map_err(|_| LoadError::MissingSymbol("squall_free"))?;
            let init = library.get::<InitFn>(abi::symbols::INIT).ok().map(|s| *s);
            (invoke, free, init)
        };
        if let Some(init) = init {
            let host = host_struct(std::ptr::null_mut(), init_log);
            // SAFETY: `init` has the v1 signature; `host` outlives the call.
            let status = unsafe { init(&host) };
            if status != 0 {
                return Err(LoadError::Init(status));
            }
        }
        Ok(Loaded {
            invoke,
            free,
            _library: library,
        })
    }

    /// Calls `squall_invoke` once, capturing log lines into `logs`. Runs the function on the
    /// calling thread: call it from a blocking pool.
    pub fn call(&self, cx: &CallContext<'_>, input: &[u8], logs: &mut LogCapture) -> CallResult {
        let host = host_struct(logs as *mut LogCapture as *mut c_void, capture_log);
        let ctx = SquallCtx {
            size: std::mem::size_of::<SquallCtx>() as u32,
            function: SquallBytes::from_slice(cx.function.as_bytes()),
            invocation_id: SquallBytes::from_slice(cx.invocation_id.as_bytes()),
            traceparent: SquallBytes::from_slice(cx.traceparent.as_bytes()),
            config: SquallBytes::from_slice(cx.config),
            event: SquallBytes::from_slice(cx.event),
            attempt: cx.attempt,
            deadline_unix_ms: cx.deadline_unix_ms,
            host: &host,
        };
        let mut out = SquallOutput {
            body: SquallBuf::EMPTY,
            retry_after_ms: 0,
        };
        // SAFETY: `invoke` points into the library this struct keeps alive; `ctx`, the byte
        // slices it borrows, `host` and `logs` all outlive the call; `out` is a valid out-pointer.
        let status = unsafe { (self.invoke)(&ctx, SquallBytes::from_slice(input), &mut out) };
        let body = if out.body.ptr.is_null() || out.body.len == 0 {
            Vec::new()
        } else {
            // SAFETY: the ABI says `body` holds `len` initialised bytes owned by the library
            // until we hand it back to `squall_free`.
            unsafe { std::slice::from_raw_parts(out.body.ptr, out.body.len) }.to_vec()
        };
        if !out.body.ptr.is_null() {
            // SAFETY: `body` came from this library's `squall_invoke` and is freed exactly once.
            unsafe { (self.free)(out.body) };
        }
        CallResult {
            status,
            body,
            retry_after_ms: out.retry_after_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_log_levels_keep_their_numbers() {
        assert_eq!(log_level(abi::LOG_ERROR), LogLevel::Error);
        assert_eq!(log_level(abi::LOG_WARN), LogLevel::Warn);
        assert_eq!(log_level(abi::LOG_INFO), LogLevel::Info);
        assert_eq!(log_level(abi::LOG_DEBUG), LogLevel::Debug);
        assert_eq!(log_level(abi::LOG_TRACE), LogLevel::Trace);
    }

    #[test]
    fn an_unknown_abi_log_level_is_trace() {
        assert_eq!(log_level(0), LogLevel::Trace);
        assert_eq!(log_level(99), LogLevel::Trace);
    }

    #[test]
    fn log_capture_drops_lines_past_its_budget() {
        let mut capture = LogCapture::new(5);
        capture.push(LogLevel::Warn, b"abc");
        capture.push(LogLevel::Info, b"defg");
        assert_eq!(
            capture.lines,
            vec![LogLine {
                level: LogLevel::Warn,
                message: "abc".into()
            }]
        );
        assert_eq!(capture.dropped, 1);
    }
}
