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
use std::cell::Cell;
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
    #[error("the {runtime} runtime cannot load the bundle: {message}")]
    Runtime { runtime: String, message: String },
    #[error("{0}")]
    SecondGoRuntime(String),
}

/// A language runtime's entry points beyond ABI v1: `squall_runtime_open`,
/// `squall_runtime_check` and `squall_runtime_test`, each `(bundle_dir, *out) -> status`.
type RuntimeEntryFn = unsafe extern "C" fn(SquallBytes, *mut SquallBuf) -> i32;

/// What a runtime library is asked to do with a bundle besides serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeTool {
    /// Validate the bundle without running its code: 0 valid, else the error names FILE:LINE.
    Check,
    /// Run the bundle's own tests: 0 all passed, 1 a test failed, 2 they could not run.
    Test,
}

impl RuntimeTool {
    fn symbol(self) -> &'static [u8] {
        match self {
            RuntimeTool::Check => b"squall_runtime_check\0",
            RuntimeTool::Test => b"squall_runtime_test\0",
        }
    }
}

/// Calls a runtime entry point with `bundle` and returns its status and the text it wrote.
///
/// # Safety
/// `entry` must come from a library that stays loaded and exports it with the runtime signature;
/// `free` must be that library's `squall_free`.
unsafe fn call_runtime_entry(entry: RuntimeEntryFn, free: FreeFn, bundle: &Path) -> (i32, String) {
    let path = bundle.as_os_str().as_encoded_bytes();
    let mut out = SquallBuf::EMPTY;
    // SAFETY: per this function's contract; `path` and `out` outlive the call.
    let status = unsafe { entry(SquallBytes::from_slice(path), &mut out) };
    let text = if out.ptr.is_null() || out.len == 0 {
        String::new()
    } else {
        // SAFETY: the runtime wrote `len` initialised bytes it owns until `squall_free`.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(out.ptr, out.len) })
            .into_owned()
    };
    if !out.ptr.is_null() {
        // SAFETY: the buffer came from this library and is freed exactly once.
        unsafe { free(out) };
    }
    (status, text)
}

/// Runs a runtime library's `tool` on `bundle` (a runtime library at `library`, loaded for
/// the purpose and never unloaded): its status and report.
pub fn run_runtime_tool(
    library: &Path,
    tool: RuntimeTool,
    bundle: &Path,
) -> Result<(i32, String), LoadError> {
    let library = open_checked(library)?;
    // SAFETY: the ABI version matched; the runtime exports these with the runtime signature.
    let (entry, free) = unsafe {
        let entry = *library.get::<RuntimeEntryFn>(tool.symbol()).map_err(|_| {
            LoadError::MissingSymbol(match tool {
                RuntimeTool::Check => "squall_runtime_check",
                RuntimeTool::Test => "squall_runtime_test",
            })
        })?;
        let free = *library
            .get::<FreeFn>(abi::symbols::FREE)
            .map_err(|_| LoadError::MissingSymbol("squall_free"))?;
        (entry, free)
    };
    // SAFETY: both entry points come from `library`, kept loaded below.
    let outcome = unsafe { call_runtime_entry(entry, free, bundle) };
    std::mem::forget(library);
    Ok(outcome)
}

/// Opens the library at `path` and checks its ABI version before anything else is resolved.
fn open_checked(path: &Path) -> Result<libloading::Library, LoadError> {
    // SAFETY: loading a library runs its initialisers. The artifact passed the dispatcher's
    // validation and the worker's sha256 check (a runtime library ships with the worker);
    // running the author's code is the point.
    let library =
        unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open(e.to_string()))?;
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
    Ok(library)
}

/// A loaded function library and the entry points taken from it.
///
/// Invariant: `invoke` and `free` point into `_library`, which lives as long as this struct.
pub struct Loaded {
    invoke: InvokeFn,
    free: FreeFn,
    /// The library is a language runtime that ends a running call itself at its deadline.
    interrupts: bool,
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

/// Why a host-service call failed, as the ABI numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFailure {
    /// The broker did not answer in time: retryable.
    Unavailable,
    /// The key or subject is not allowed.
    Denied,
    /// A key over 256 bytes, or a value or payload over the limit.
    TooLarge,
    /// A malformed key or subject, or a call from outside an invocation.
    Invalid,
}

impl HostFailure {
    /// The ABI status code.
    pub fn code(self) -> i32 {
        match self {
            HostFailure::Unavailable => abi::SQUALL_HOST_UNAVAILABLE,
            HostFailure::Denied => abi::SQUALL_HOST_DENIED,
            HostFailure::TooLarge => abi::SQUALL_HOST_TOO_LARGE,
            HostFailure::Invalid => abi::SQUALL_HOST_INVALID,
        }
    }

    /// A short name, for spans and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HostFailure::Unavailable => "unavailable",
            HostFailure::Denied => "denied",
            HostFailure::TooLarge => "too_large",
            HostFailure::Invalid => "invalid",
        }
    }
}

/// The host services of one call, implemented in safe code outside this module; the
/// callbacks below turn the ABI's arguments into these calls and their results into codes.
pub trait HostCalls {
    /// The value of `key`, or `None` when there is none.
    fn kv_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, HostFailure>;
    /// Stores `value` under `key`; `ttl_ms` 0 keeps it.
    fn kv_put(&mut self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<(), HostFailure>;
    /// Deletes `key`.
    fn kv_delete(&mut self, key: &[u8]) -> Result<(), HostFailure>;
    /// Publishes `payload` on `subject`.
    fn publish(&mut self, subject: &[u8], payload: &[u8]) -> Result<(), HostFailure>;
    /// Whether the invocation was cancelled.
    fn cancelled(&mut self) -> Result<bool, HostFailure>;
    /// Writes `chunk` as the next chunk of the invocation's streamed output.
    fn stream_write(&mut self, chunk: &[u8]) -> Result<(), HostFailure>;
}

/// The call in progress on this thread: its `squall_ctx` and its services. Set only for the
/// duration of `squall_invoke`, so a host call from another thread, or after the call
/// returned, finds nothing and answers `SQUALL_HOST_INVALID`.
struct Current {
    ctx: *const SquallCtx,
    services: *mut (dyn HostCalls + 'static),
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// Runs `f` with the services of the call in progress on this thread, when `ctx` is its ctx.
fn with_current(ctx: *const SquallCtx, f: impl FnOnce(&mut dyn HostCalls) -> i32) -> i32 {
    let current = CURRENT.with(|cell| cell.take());
    let Some(current) = current else {
        return abi::SQUALL_HOST_INVALID;
    };
    let code = if std::ptr::eq(current.ctx, ctx) {
        // SAFETY: `services` was set by `Loaded::call` from a `&mut dyn HostCalls` that lives
        // for the whole `squall_invoke` on this thread, and it is taken out of the cell while
        // in use, so no second reference to it exists (a nested call finds the cell empty).
        let services = unsafe { &mut *current.services };
        catch_unwind(AssertUnwindSafe(|| f(services))).unwrap_or(abi::SQUALL_HOST_UNAVAILABLE)
    } else {
        abi::SQUALL_HOST_INVALID
    };
    CURRENT.with(|cell| cell.set(Some(current)));
    code
}

fn code_of(result: Result<(), HostFailure>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(failure) => failure.code(),
    }
}

unsafe extern "C" fn host_kv_get(
    ctx: *const SquallCtx,
    key: SquallBytes,
    value: *mut SquallBuf,
) -> i32 {
    if value.is_null() {
        return abi::SQUALL_HOST_INVALID;
    }
    with_current(ctx, |services| {
        // SAFETY: the ABI requires `key` to point to `len` readable bytes during the call.
        let key = unsafe { key.as_slice() };
        match services.kv_get(key) {
            Ok(Some(bytes)) => {
                let buf = if bytes.is_empty() {
                    SquallBuf::EMPTY
                } else {
                    let mut bytes = std::mem::ManuallyDrop::new(bytes);
                    SquallBuf {
                        ptr: bytes.as_mut_ptr(),
                        len: bytes.len(),
                        cap: bytes.capacity(),
                    }
                };
                // SAFETY: `value` is the function's non-null out-pointer for this call.
                unsafe { value.write(buf) };
                0
            }
            Ok(None) => abi::SQUALL_HOST_NOT_FOUND,
            Err(failure) => failure.code(),
        }
    })
}

unsafe extern "C" fn host_kv_put(
    ctx: *const SquallCtx,
    key: SquallBytes,
    value: SquallBytes,
    ttl_ms: u64,
) -> i32 {
    with_current(ctx, |services| {
        // SAFETY: the ABI requires both slices to be readable during the call.
        let (key, value) = unsafe { (key.as_slice(), value.as_slice()) };
        code_of(services.kv_put(key, value, ttl_ms))
    })
}

unsafe extern "C" fn host_kv_delete(ctx: *const SquallCtx, key: SquallBytes) -> i32 {
    with_current(ctx, |services| {
        // SAFETY: the ABI requires `key` to be readable during the call.
        let key = unsafe { key.as_slice() };
        code_of(services.kv_delete(key))
    })
}

unsafe extern "C" fn host_publish(
    ctx: *const SquallCtx,
    subject: SquallBytes,
    payload: SquallBytes,
) -> i32 {
    with_current(ctx, |services| {
        // SAFETY: the ABI requires both slices to be readable during the call.
        let (subject, payload) = unsafe { (subject.as_slice(), payload.as_slice()) };
        code_of(services.publish(subject, payload))
    })
}

unsafe extern "C" fn host_cancelled(ctx: *const SquallCtx) -> i32 {
    with_current(ctx, |services| match services.cancelled() {
        Ok(cancelled) => i32::from(cancelled),
        Err(failure) => failure.code(),
    })
}

unsafe extern "C" fn host_stream_write(ctx: *const SquallCtx, chunk: SquallBytes) -> i32 {
    with_current(ctx, |services| {
        // SAFETY: the ABI requires `chunk` to be readable during the call.
        let chunk = unsafe { chunk.as_slice() };
        code_of(services.stream_write(chunk))
    })
}

/// Frees a buffer `host_kv_get` filled: it is a `Vec<u8>`'s parts. Callable from any thread.
unsafe extern "C" fn host_buf_free(buf: SquallBuf) {
    if buf.ptr.is_null() || buf.cap == 0 {
        return;
    }
    // SAFETY: the ABI gives back, exactly once, a buffer `host_kv_get` made from a `Vec<u8>`
    // with these very pointer, length and capacity.
    drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
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

/// The host struct of this worker: its log callback and every host service. During
/// `squall_init` the services answer `SQUALL_HOST_INVALID` (no invocation runs).
fn host_struct(data: *mut c_void, log: abi::LogFn) -> SquallHost {
    SquallHost {
        size: std::mem::size_of::<SquallHost>() as u32,
        data,
        log: Some(log),
        kv_get: Some(host_kv_get),
        kv_put: Some(host_kv_put),
        kv_delete: Some(host_kv_delete),
        publish: Some(host_publish),
        buf_free: Some(host_buf_free),
        cancelled: Some(host_cancelled),
        stream_write: Some(host_stream_write),
    }
}

impl Loaded {
    /// Loads the library at `path`: checks the ABI version before resolving anything else,
    /// then resolves the entry points and runs `squall_init` when it is exported.
    pub fn load(path: &Path) -> Result<Loaded, LoadError> {
        Loaded::load_with(path, None)
    }

    /// Loads a library as [`Loaded::load`] does; with `bundle` (a runtime and the folder of
    /// the bundle it serves), calls `squall_runtime_open` before `squall_init`.
    pub fn load_with(
        path: &Path,
        bundle: Option<(squall_bundle::Runtime, &Path)>,
    ) -> Result<Loaded, LoadError> {
        if bundle.is_none() {
            crate::golang::admit(path).map_err(LoadError::SecondGoRuntime)?;
        }
        let library = open_checked(path)?;
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
        if let Some((runtime, bundle)) = bundle {
            // SAFETY: a runtime library exports `squall_runtime_open` with the runtime signature.
            let open = unsafe {
                *library
                    .get::<RuntimeEntryFn>(b"squall_runtime_open\0")
                    .map_err(|_| LoadError::MissingSymbol("squall_runtime_open"))?
            };
            // SAFETY: `open` and `free` come from `library`, which outlives the call.
            let (status, message) = unsafe { call_runtime_entry(open, free, bundle) };
            if status != 0 {
                return Err(LoadError::Runtime {
                    runtime: runtime.id().to_string(),
                    message,
                });
            }
        }
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
            interrupts: bundle.is_some_and(|(runtime, _)| runtime.interrupts_at_deadline()),
            _library: library,
        })
    }

    /// Loads a version: a native library, or a runtime library opening its bundle (the
    /// bundle's runtime and unpacked folder).
    pub fn load_target(
        library: &Path,
        bundle: &Option<(squall_bundle::Runtime, std::path::PathBuf)>,
    ) -> Result<Loaded, LoadError> {
        match bundle {
            Some((runtime, dir)) => Loaded::load_with(library, Some((*runtime, dir))),
            None => Loaded::load(library),
        }
    }

    /// Whether a call returns by itself soon after its deadline (the runtime interrupts it).
    pub fn interrupts_at_deadline(&self) -> bool {
        self.interrupts
    }

    /// Calls `squall_invoke` once, capturing log lines into `logs` and serving host calls
    /// with `services`. Runs the function on the calling thread: call it from a call thread,
    /// never from within the async runtime (the services block on it).
    pub fn call(
        &self,
        cx: &CallContext<'_>,
        input: &[u8],
        logs: &mut LogCapture,
        services: &mut (dyn HostCalls + 'static),
    ) -> CallResult {
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
        let previous = CURRENT.with(|cell| {
            cell.replace(Some(Current {
                ctx: &ctx,
                services: services as *mut (dyn HostCalls + 'static),
            }))
        });
        // SAFETY: `invoke` points into the library this struct keeps alive; `ctx`, the byte
        // slices it borrows, `host`, `logs` and `services` all outlive the call; `out` is a
        // valid out-pointer.
        let status = unsafe { (self.invoke)(&ctx, SquallBytes::from_slice(input), &mut out) };
        CURRENT.with(|cell| cell.set(previous));
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
