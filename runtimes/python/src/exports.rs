//! The C symbols beyond ABI v1 that make this library a language runtime, and the
//! `squall_invoke` handler behind the SDK's export macro.

use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use squall_sdk::abi::{SquallBuf, SquallBytes};
use squall_sdk::{Context, FnError};

use crate::error::RuntimeError;
use crate::function::Function;
use crate::tools;

/// The bundle this copy of the library serves; the worker loads one copy per function version.
static OPENED: OnceLock<Function> = OnceLock::new();

/// `squall_invoke`'s handler: the opened bundle's handler.
pub fn invoke(ctx: &Context<'_>, input: &[u8]) -> Result<Vec<u8>, FnError> {
    match OPENED.get() {
        Some(function) => function.invoke(ctx, input),
        None => Err(FnError::permanent(
            "the Python runtime has no bundle open (squall_runtime_open failed or was not called)",
        )),
    }
}

/// Hands bytes to the host, to be given back with `squall_free` (the SDK's `__free` takes a
/// `Vec<u8>`'s pointer and capacity, which is what this gives up).
fn into_buf(bytes: Vec<u8>) -> SquallBuf {
    let mut bytes = ManuallyDrop::new(bytes);
    SquallBuf {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    }
}

/// Reads the bundle directory argument.
///
/// # Safety
/// `dir` must be null/empty or point to `len` readable bytes for the call.
unsafe fn bundle_dir(dir: SquallBytes) -> Result<&'static Path, String> {
    // SAFETY: the caller makes `dir` readable for the call; the path does not outlive it.
    let bytes = unsafe { dir.as_slice() };
    match std::str::from_utf8(bytes) {
        Ok("") => Err("no bundle directory given".to_owned()),
        Ok(text) => Ok(Path::new(text)),
        Err(_) => Err("the bundle directory is not UTF-8".to_owned()),
    }
}

/// Runs `body` without letting a panic cross the C boundary; writes its message to `out`.
///
/// # Safety
/// `out` must be null or valid for a write of one `SquallBuf`.
unsafe fn answer(out: *mut SquallBuf, body: impl FnOnce() -> (i32, Option<String>)) -> i32 {
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(outcome) => outcome,
        Err(_) => (2, Some("the Python runtime panicked".to_owned())),
    };
    if !out.is_null() {
        let buf = message.map_or(SquallBuf::EMPTY, |message| into_buf(message.into_bytes()));
        // SAFETY: `out` is non-null and the caller makes it writable.
        unsafe { out.write(buf) };
    }
    status
}

fn open(dir: &Path) -> Result<(), RuntimeError> {
    if let Some(opened) = OPENED.get() {
        return Err(RuntimeError::AlreadyOpen(opened.dir().to_owned()));
    }
    let function = Function::open(dir)?;
    OPENED
        .set(function)
        .map_err(|_| RuntimeError::AlreadyOpen("another bundle".to_owned()))
}

/// Opens a bundle: starts Python if needed and imports the handler (see `squall.h`'s runtime
/// section). 0 = ready; otherwise `*error` holds the message.
///
/// # Safety
/// `bundle_dir` readable for the call; `error` null or writable.
#[no_mangle]
pub unsafe extern "C" fn squall_runtime_open(
    bundle_dir: SquallBytes,
    error: *mut SquallBuf,
) -> i32 {
    let body = || {
        // SAFETY: the host makes `bundle_dir` readable for the call.
        let opened = unsafe { self::bundle_dir(bundle_dir) }
            .and_then(|dir| open(dir).map_err(|error| error.to_string()));
        match opened {
            Ok(()) => (0, None),
            Err(message) => (1, Some(message)),
        }
    };
    // SAFETY: the host makes `error` null or writable.
    unsafe { answer(error, body) }
}

/// Validates a bundle without running its code. 0 = valid; otherwise `*error` holds
/// `FILE:LINE: message` lines.
///
/// # Safety
/// `bundle_dir` readable for the call; `error` null or writable.
#[no_mangle]
pub unsafe extern "C" fn squall_runtime_check(
    bundle_dir: SquallBytes,
    error: *mut SquallBuf,
) -> i32 {
    let body = || {
        // SAFETY: the host makes `bundle_dir` readable for the call.
        match unsafe { self::bundle_dir(bundle_dir) }.and_then(tools::check) {
            Ok(()) => (0, None),
            Err(message) => (1, Some(message)),
        }
    };
    // SAFETY: the host makes `error` null or writable.
    unsafe { answer(error, body) }
}

/// Runs the bundle's tests. 0 = all passed, 1 = a test failed, 2 = they could not run;
/// `*report` always holds the report.
///
/// # Safety
/// `bundle_dir` readable for the call; `report` null or writable.
#[no_mangle]
pub unsafe extern "C" fn squall_runtime_test(
    bundle_dir: SquallBytes,
    report: *mut SquallBuf,
) -> i32 {
    let body = || {
        // SAFETY: the host makes `bundle_dir` readable for the call.
        match unsafe { self::bundle_dir(bundle_dir) } {
            Ok(dir) => {
                let ran = tools::run_tests(dir);
                (ran.status, Some(ran.text))
            }
            Err(message) => (2, Some(message)),
        }
    };
    // SAFETY: the host makes `report` null or writable.
    unsafe { answer(report, body) }
}
