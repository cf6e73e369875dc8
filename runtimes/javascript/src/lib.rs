//! The JavaScript language runtime: ES modules on an embedded QuickJS, served as an ABI v1
//! function library.
//!
//! `squall_runtime_open` loads a bundle (its handler's module and everything it imports) into
//! one QuickJS runtime; `squall_invoke` calls the cached handler, one call at a time.
//! `squall_runtime_check` validates a bundle without running it and `squall_runtime_test` runs
//! its `*.test.mjs` files.

#![deny(clippy::undocumented_unsafe_blocks)]

mod bundle;
mod check;
mod engine;
mod native;
mod testing;

use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rquickjs::Persistent;
use squall_sdk::abi::{SquallBuf, SquallBytes};
use squall_sdk::{export_raw_function, Context, FnError};

pub use bundle::{Bundle, BUNDLE_FILE, RUNTIME};
pub use check::{check, GLOBALS};
pub use engine::{CallError, Limits};
pub use testing::{run_tests, TestOutcome, TestReport};

use engine::Engine;

/// Why a bundle cannot be opened, checked or tested.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `squall-bundle.json` or the files it names are missing or wrong.
    #[error("{0}")]
    Bundle(String),
    /// A source file is refused: "FILE:LINE: message".
    #[error("{0}")]
    Check(String),
    /// The handler's module failed while it was evaluated.
    #[error("{0}")]
    Load(String),
    /// QuickJS itself failed.
    #[error("javascript engine: {0}")]
    Engine(String),
}

/// An opened bundle: its runtime and the handler function, evaluated once.
pub struct Function {
    /// Released before the engine that holds its value.
    handler: Persistent<rquickjs::Function<'static>>,
    engine: Engine,
}

// SAFETY: everything in a `Function` belongs to one QuickJS runtime and moves with it: the
// runtime and context are `Send` under rquickjs's `parallel` feature (their state sits behind
// the runtime's own lock), and the saved handler is a counted reference into that runtime,
// restored only inside `Context::with` (which takes that lock). `Function` is not `Sync`, so
// calls from several threads go through a `Mutex` and never overlap.
unsafe impl Send for Function {}

impl Function {
    /// Opens the bundle at `dir`: evaluates the handler's module and keeps the handler.
    pub fn open(dir: &Path, limits: Limits) -> Result<Function, Error> {
        let bundle = Bundle::load(dir)?;
        let engine = Engine::new(&bundle.root, limits)?;
        let export = bundle.export.clone();
        let handler = engine
            .import(&bundle.module, |ctx, namespace| {
                match namespace.get::<_, rquickjs::Value>(export.as_str()) {
                    Ok(value) => value
                        .into_function()
                        .map(|function| Persistent::save(ctx, function)),
                    Err(_) => None,
                }
            })
            .map_err(|error| Error::Load(format!("{}: {}", bundle.module, error.with_stack())))?;
        let handler = handler.ok_or_else(|| {
            Error::Load(format!(
                "{}: the module does not export a function named {}",
                bundle.module, bundle.export
            ))
        })?;
        Ok(Function { handler, engine })
    }

    /// Calls the handler for one invocation.
    pub fn invoke(&self, context: &Context<'_>, input: &[u8]) -> Result<Vec<u8>, FnError> {
        let _call = native::CallGuard::invocation(context);
        let outcome = self.engine.call(
            &self.handler,
            |ctx, engine| {
                let event = if engine::is_web(context) {
                    engine::web_event(ctx, context, input)?
                } else {
                    engine::event(ctx, input)?
                };
                let js_context = engine.make_context(
                    ctx,
                    context.function(),
                    context.invocation_id(),
                    context.attempt(),
                    context.deadline_unix_ms(),
                )?;
                Ok(vec![event, js_context])
            },
            engine::output,
        );
        outcome.map_err(|error| fn_error(context, error))
    }
}

/// The platform's error for a failed call, with the stack logged at error level.
fn fn_error(context: &Context<'_>, error: CallError) -> FnError {
    match error {
        CallError::Retry { message, after_ms } if after_ms > 0 => {
            FnError::retry_after(message, Duration::from_millis(after_ms))
        }
        CallError::Retry { message, .. } => FnError::retry(message),
        CallError::Thrown {
            ref message,
            retryable,
            ..
        } => {
            context.error(&error.with_stack());
            let message = message.clone();
            if retryable {
                FnError::retry(message)
            } else {
                FnError::permanent(message)
            }
        }
        other => {
            let message = other.to_string();
            context.error(&message);
            FnError::permanent(message)
        }
    }
}

/// The bundle this copy of the library serves.
static FUNCTION: Mutex<Option<Function>> = Mutex::new(None);

fn invoke(context: &Context<'_>, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let guard = FUNCTION
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match guard.as_ref() {
        Some(function) => function.invoke(context, input),
        None => Err(FnError::permanent(
            "the JavaScript runtime has no bundle open (squall_runtime_open was not called)",
        )),
    }
}

export_raw_function!(invoke);

/// Hands a `Vec` to the host, to be released with `squall_free`.
fn into_buf(bytes: Vec<u8>) -> SquallBuf {
    let mut bytes = ManuallyDrop::new(bytes);
    SquallBuf {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    }
}

/// Reads the bundle path argument.
///
/// # Safety
/// `dir` must be null/empty or point to `len` readable bytes for the call.
unsafe fn path_arg(dir: SquallBytes) -> Result<std::path::PathBuf, String> {
    // SAFETY: the caller guarantees the bytes are readable for the call.
    let bytes = unsafe { dir.as_slice() };
    let text = std::str::from_utf8(bytes).map_err(|_| "the bundle path is not UTF-8".to_owned())?;
    if text.is_empty() {
        return Err("no bundle path given".to_owned());
    }
    Ok(std::path::PathBuf::from(text))
}

/// Writes `text` to `out` when it is non-null.
///
/// # Safety
/// `out` must be null or valid for a write of one `SquallBuf`.
unsafe fn write_text(out: *mut SquallBuf, text: String) {
    if !out.is_null() {
        // SAFETY: `out` is non-null and the caller makes it writable.
        unsafe { out.write(into_buf(text.into_bytes())) };
    }
}

/// Runs `body` with panics caught, turning a panic into a message.
fn guarded<T>(body: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            std::mem::forget(payload);
            Err(format!("the JavaScript runtime panicked: {message}"))
        }
    }
}

/// Loads the bundle at `bundle_dir`; 0 = ready, otherwise `*error` says why.
///
/// # Safety
/// `bundle_dir` readable for the call; `error` null or writable.
#[no_mangle]
pub unsafe extern "C" fn squall_runtime_open(
    bundle_dir: SquallBytes,
    error: *mut SquallBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the caller makes `bundle_dir` readable for the call.
        let dir = unsafe { path_arg(bundle_dir) }?;
        let function =
            Function::open(&dir, Limits::from_process()).map_err(|error| error.to_string())?;
        let mut slot = FUNCTION
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(function);
        Ok(())
    });
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            // SAFETY: the caller makes `error` null or writable.
            unsafe { write_text(error, message) };
            1
        }
    }
}

/// Validates the bundle at `bundle_dir` without running it; 0 = valid, otherwise `*error` is
/// "FILE:LINE: message".
///
/// # Safety
/// `bundle_dir` readable for the call; `error` null or writable.
#[no_mangle]
pub unsafe extern "C" fn squall_runtime_check(
    bundle_dir: SquallBytes,
    error: *mut SquallBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the caller makes `bundle_dir` readable for the call.
        let dir = unsafe { path_arg(bundle_dir) }?;
        check(&dir).map_err(|error| error.to_string())
    });
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            // SAFETY: the caller makes `error` null or writable.
            unsafe { write_text(error, message) };
            1
        }
    }
}

/// Runs the bundle's `*.test.mjs` files; `*report` is always set. 0 = all passed, 1 = a test
/// failed, 2 = the tests could not run.
///
/// # Safety
/// `bundle_dir` readable for the call; `report` null or writable.
#[no_mangle]
pub unsafe extern "C" fn squall_runtime_test(
    bundle_dir: SquallBytes,
    report: *mut SquallBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the caller makes `bundle_dir` readable for the call.
        let dir = unsafe { path_arg(bundle_dir) }?;
        run_tests(&dir, Limits::from_process()).map_err(|error| error.to_string())
    });
    let (status, text) = match outcome {
        Ok(report) => (if report.passed() { 0 } else { 1 }, report.to_string()),
        Err(message) => (2, format!("the tests could not run: {message}\n")),
    };
    // SAFETY: the caller makes `report` null or writable.
    unsafe { write_text(report, text) };
    status
}
