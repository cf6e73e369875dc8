//! What a language runtime library exports beyond ABI v1, written once: `squall_runtime_open`, `squall_runtime_check` and `squall_runtime_test` over a runtime's own open, check and test functions ([`export_runtime!`]).
//!
//! A runtime is an ABI v1 library that serves the bundle it is opened with; the worker calls
//! `squall_runtime_open(bundle_dir, *error)` after `dlopen` and before `squall_init`, the
//! dispatcher's checker `squall_runtime_check(bundle_dir, *error)` (0 = valid), and `squall test`
//! `squall_runtime_test(bundle_dir, *report)` (0 all passed, 1 a test failed, 2 they could not
//! run). Panics never cross these entry points.

use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::abi::{SquallBuf, SquallBytes};

/// What a runtime's test run reports: its status (0 all passed, 1 a test failed, 2 the tests
/// could not run) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    pub status: i32,
    pub text: String,
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
unsafe fn bundle_dir<'a>(dir: SquallBytes) -> Result<&'a Path, String> {
    // SAFETY: the caller makes `dir` readable for the call; the path does not outlive it.
    let bytes = unsafe { dir.as_slice() };
    match std::str::from_utf8(bytes) {
        Ok("") => Err("no bundle directory given".to_owned()),
        Ok(text) => Ok(Path::new(text)),
        Err(_) => Err("the bundle directory is not UTF-8".to_owned()),
    }
}

/// Runs `body` with the bundle directory without letting a panic cross the C boundary; writes
/// its text to `out`.
///
/// # Safety
/// `dir` readable for the call; `out` null or valid for a write of one `SquallBuf`.
unsafe fn answer(
    language: &str,
    dir: SquallBytes,
    out: *mut SquallBuf,
    body: impl FnOnce(&Path) -> (i32, Option<String>),
) -> i32 {
    let run = || {
        // SAFETY: the caller makes `dir` readable for the call.
        match unsafe { bundle_dir(dir) } {
            Ok(dir) => body(dir),
            Err(message) => (2, Some(message)),
        }
    };
    let (status, message) = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(outcome) => outcome,
        Err(_) => (2, Some(format!("the {language} runtime panicked"))),
    };
    if !out.is_null() {
        let buf = message.map_or(SquallBuf::EMPTY, |message| into_buf(message.into_bytes()));
        // SAFETY: `out` is non-null and the caller makes it writable.
        unsafe { out.write(buf) };
    }
    status
}

/// `squall_runtime_open`'s body: 0 when `open` opened the bundle, else 1 and its message.
///
/// # Safety
/// `dir` readable for the call; `error` null or writable.
#[doc(hidden)]
pub unsafe fn open_entry(
    language: &str,
    dir: SquallBytes,
    error: *mut SquallBuf,
    open: impl FnOnce(&Path) -> Result<(), String>,
) -> i32 {
    // SAFETY: the caller's guarantees are this function's.
    unsafe {
        answer(language, dir, error, |dir| match open(dir) {
            Ok(()) => (0, None),
            Err(message) => (1, Some(message)),
        })
    }
}

/// `squall_runtime_check`'s body: 0 when `check` found the bundle valid, else 1 and its
/// message (`FILE: message` lines).
///
/// # Safety
/// `dir` readable for the call; `error` null or writable.
#[doc(hidden)]
pub unsafe fn check_entry(
    language: &str,
    dir: SquallBytes,
    error: *mut SquallBuf,
    check: impl FnOnce(&Path) -> Result<(), String>,
) -> i32 {
    // SAFETY: the caller's guarantees are this function's.
    unsafe {
        answer(language, dir, error, |dir| match check(dir) {
            Ok(()) => (0, None),
            Err(message) => (1, Some(message)),
        })
    }
}

/// `squall_runtime_test`'s body: the report's status, its text always written.
///
/// # Safety
/// `dir` readable for the call; `report` null or writable.
#[doc(hidden)]
pub unsafe fn test_entry(
    language: &str,
    dir: SquallBytes,
    report: *mut SquallBuf,
    test: impl FnOnce(&Path) -> TestReport,
) -> i32 {
    // SAFETY: the caller's guarantees are this function's.
    unsafe {
        answer(language, dir, report, |dir| {
            let ran = test(dir);
            (ran.status, Some(ran.text))
        })
    }
}

/// Exports a language runtime: ABI v1 (`squall_invoke` calls the opened bundle's function) and
/// the runtime entry points, over
/// - `function`: a type with `open(&Path) -> Result<Self, E: Display>`, `dir() -> &str` and
///   `invoke(&Context, &[u8]) -> Result<Vec<u8>, FnError>`; one bundle per copy of the library
///   (the worker loads a copy per function version);
/// - `check`: `fn(&Path) -> Result<(), String>`, validating without running user code;
/// - `test`: `fn(&Path) -> TestReport`, running the bundle's own tests.
///
/// `language` names the runtime in messages ("the Java runtime has no bundle open").
#[macro_export]
macro_rules! export_runtime {
    (language: $language:literal, function: $function:ty, check: $check:path, test: $test:path $(,)?) => {
        /// The bundle this copy of the library serves.
        static __SQUALL_OPENED: ::std::sync::OnceLock<$function> = ::std::sync::OnceLock::new();

        fn __squall_runtime_invoke(
            ctx: &$crate::Context<'_>,
            input: &[u8],
        ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::FnError> {
            match __SQUALL_OPENED.get() {
                Some(function) => function.invoke(ctx, input),
                None => Err($crate::FnError::permanent(concat!(
                    "the ",
                    $language,
                    " runtime has no bundle open (squall_runtime_open failed or was not called)"
                ))),
            }
        }

        $crate::export_raw_function!(__squall_runtime_invoke);

        /// Opens a bundle: starts the engine if needed and loads the handler. 0 = ready;
        /// otherwise `*error` holds the message.
        ///
        /// # Safety
        /// `bundle_dir` readable for the call; `error` null or writable.
        #[no_mangle]
        pub unsafe extern "C" fn squall_runtime_open(
            bundle_dir: $crate::abi::SquallBytes,
            error: *mut $crate::abi::SquallBuf,
        ) -> i32 {
            let open = |dir: &::std::path::Path| {
                if let Some(opened) = __SQUALL_OPENED.get() {
                    return Err(format!(
                        concat!(
                            "this copy of the ",
                            $language,
                            " runtime already serves {}; the worker loads a new copy per \
                             function version"
                        ),
                        opened.dir()
                    ));
                }
                let function = <$function>::open(dir).map_err(|error| error.to_string())?;
                __SQUALL_OPENED
                    .set(function)
                    .map_err(|_| "another bundle was opened meanwhile".to_owned())
            };
            // SAFETY: the host makes `bundle_dir` readable and `error` null or writable.
            unsafe { $crate::runtime::open_entry($language, bundle_dir, error, open) }
        }

        /// Validates a bundle without running its code. 0 = valid; otherwise `*error` holds
        /// `FILE: message` lines.
        ///
        /// # Safety
        /// `bundle_dir` readable for the call; `error` null or writable.
        #[no_mangle]
        pub unsafe extern "C" fn squall_runtime_check(
            bundle_dir: $crate::abi::SquallBytes,
            error: *mut $crate::abi::SquallBuf,
        ) -> i32 {
            // SAFETY: the host makes `bundle_dir` readable and `error` null or writable.
            unsafe { $crate::runtime::check_entry($language, bundle_dir, error, $check) }
        }

        /// Runs the bundle's tests. 0 = all passed, 1 = a test failed, 2 = they could not
        /// run; `*report` always holds the report.
        ///
        /// # Safety
        /// `bundle_dir` readable for the call; `report` null or writable.
        #[no_mangle]
        pub unsafe extern "C" fn squall_runtime_test(
            bundle_dir: $crate::abi::SquallBytes,
            report: *mut $crate::abi::SquallBuf,
        ) -> i32 {
            // SAFETY: the host makes `bundle_dir` readable and `report` null or writable.
            unsafe { $crate::runtime::test_entry($language, bundle_dir, report, $test) }
        }
    };
}
