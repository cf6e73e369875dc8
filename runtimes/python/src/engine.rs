//! The process's one CPython interpreter: made global for C extensions, started once, and
//! prepared with the runtime's Python modules. All `dlopen`/`dladdr` calls live here.

use std::cell::Cell;
use std::ffi::{c_void, CStr, CString};
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::error::RuntimeError;

/// The `squall` module users import, pure Python (also usable from plain CPython).
pub const SQUALL_PY: &str = include_str!("../py/squall.py");
/// The runtime's own Python half, registered as `_squall_runtime`.
const RUNTIME_PY: &str = include_str!("../py/squall_runtime.py");
/// The name the runtime's Python half has in `sys.modules`.
const RUNTIME_MODULE: &str = "_squall_runtime";

/// A fingerprint of the embedded Python sources (FNV-1a): every copy of the same library
/// agrees on it, so a copy can tell whether the module another copy installed is its own.
const EMBEDDED_ID: u64 = {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let sources = [SQUALL_PY.as_bytes(), RUNTIME_PY.as_bytes()];
    let mut s = 0;
    while s < sources.len() {
        let bytes = sources[s];
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        s += 1;
    }
    hash
};

/// This copy's handle on the prepared interpreter: the `_squall_runtime` module.
pub struct Engine {
    runtime: Py<PyModule>,
}

impl Engine {
    /// The interpreter, started and prepared on first use in this copy of the library.
    ///
    /// Safe to call from any thread and from several copies of the library: libpython is
    /// started only if no one has started it, and the Python modules are installed once per
    /// process.
    pub fn get() -> Result<&'static Engine, RuntimeError> {
        static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
        ENGINE
            .get_or_init(start)
            .as_ref()
            .map_err(|error| RuntimeError::Start(error.clone()))
    }

    /// The runtime's Python half, bound to `py`.
    pub fn runtime<'py>(&self, py: Python<'py>) -> &Bound<'py, PyModule> {
        self.runtime.bind(py)
    }
}

/// Gives the calling thread a Python thread state that outlives each call.
///
/// Without one, every call on a thread that Python did not start creates and destroys a thread
/// state (`PyGILState_Ensure`/`Release`), which costs more than the rest of a small call. The
/// state is kept for the thread's life; a worker's call threads are few and long-lived.
pub fn keep_thread_state() {
    thread_local! {
        static KEPT: Cell<bool> = const { Cell::new(false) };
    }
    KEPT.with(|kept| {
        // SAFETY: PyGILState_Check only reads the thread's state; the interpreter is running
        // (an `Engine` exists before any call).
        if kept.get() || unsafe { pyo3::ffi::PyGILState_Check() } == 1 {
            // Kept already, or a call from code that holds the GIL: leave its state alone.
            return;
        }
        // SAFETY: the interpreter is running and this thread does not hold the GIL (checked
        // above). Ensure creates the thread state and takes the GIL; SaveThread releases the
        // GIL but leaves the Ensure unbalanced, so later Ensure/Release pairs reuse the state
        // instead of deleting it.
        unsafe {
            pyo3::ffi::PyGILState_Ensure();
            pyo3::ffi::PyEval_SaveThread();
        }
        kept.set(true);
    });
}

fn start() -> Result<Engine, String> {
    promote_libpython()?;
    Python::initialize();
    Python::attach(|py| {
        prepare(py)
            .map(|runtime| Engine { runtime })
            .map_err(|error| describe(py, &error))
    })
}

/// Makes libpython's symbols global, as if it had been loaded with `RTLD_GLOBAL`.
///
/// The worker opens this library without `RTLD_GLOBAL`, so libpython, its dependency, lands in
/// a local scope; C extension modules (`math`, `_json`, numpy) do not link libpython and look
/// up `PyFloat_Type` and friends in the global scope, which fails. Reopening the already
/// loaded libpython with `RTLD_NOLOAD | RTLD_GLOBAL` promotes it without loading anything.
fn promote_libpython() -> Result<(), String> {
    let symbol = pyo3::ffi::Py_IsInitialized as *const c_void;
    // SAFETY: `Dl_info` is plain data for which all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `symbol` is the address of a function in a loaded object; `info` is writable.
    let found = unsafe { libc::dladdr(symbol, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return Err("cannot find the library that provides libpython's symbols".to_owned());
    }
    // SAFETY: dladdr set `dli_fname` to a NUL-terminated path owned by the loader, valid while
    // the object stays loaded (libpython is never unloaded).
    let path: CString = unsafe { CStr::from_ptr(info.dli_fname) }.to_owned();
    // SAFETY: RTLD_NOLOAD only looks up an object that is already loaded; the path is a valid
    // C string. The handle is kept (never closed), so libpython stays loaded and global.
    let handle = unsafe {
        libc::dlopen(
            path.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_GLOBAL | libc::RTLD_NOLOAD,
        )
    };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a C string valid until the next dl* call here.
        let reason = unsafe {
            let message = libc::dlerror();
            if message.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            }
        };
        return Err(format!(
            "cannot make {} global: {reason}",
            path.to_string_lossy()
        ));
    }
    Ok(())
}

/// Installs `squall` and `_squall_runtime` once per process, or finds the ones another copy of
/// this library installed.
fn prepare(py: Python<'_>) -> PyResult<Py<PyModule>> {
    // The interpreter-wide import lock: another copy preparing on another thread waits here
    // instead of installing the modules a second time.
    let imp = py.import("_imp")?;
    imp.call_method0("acquire_lock")?;
    let prepared = install(py);
    imp.call_method0("release_lock")?;
    prepared
}

fn install(py: Python<'_>) -> PyResult<Py<PyModule>> {
    let modules = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?;
    let id = format!("{EMBEDDED_ID:016x}");
    if let Some(existing) = modules.get_item(RUNTIME_MODULE)? {
        let theirs: Option<String> = existing.getattr("EMBEDDED_ID")?.extract()?;
        if theirs.as_deref() != Some(id.as_str()) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "another version of the Python runtime already runs in this process",
            ));
        }
        return Ok(existing.cast_into::<PyModule>()?.unbind());
    }
    let squall = c_string(SQUALL_PY)?;
    PyModule::from_code(py, &squall, c"squall.py", c"squall")?;
    let source = c_string(RUNTIME_PY)?;
    let runtime = PyModule::from_code(py, &source, c"squall_runtime.py", c"_squall_runtime")?;
    runtime.call_method0("install")?;
    runtime.setattr("EMBEDDED_ID", id)?;
    Ok(runtime.unbind())
}

fn c_string(source: &str) -> PyResult<CString> {
    CString::new(source).map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))
}

/// A Python exception as its traceback ending in `TypeName: message`.
pub fn describe(py: Python<'_>, error: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|traceback| {
        let lines = traceback.call_method1("format_exception", (error.value(py),))?;
        let text: String = PyString::new(py, "")
            .call_method1("join", (lines,))?
            .extract()?;
        Ok(text.trim_end().to_owned())
    });
    formatted.unwrap_or_else(|_| error.to_string())
}
