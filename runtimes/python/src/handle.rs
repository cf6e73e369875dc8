//! `CallHandle`: the native object behind a Python handler's `context`, valid for one call.
//!
//! It points at the call's `squall_sdk::Context`, which lives on the calling thread's stack.
//! Python code may keep the context (or hand it to a thread) past the call, so every use is
//! counted and `end` waits until no use is in flight, then disconnects the handle for good:
//! later uses raise instead of touching freed memory.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use squall_sdk::{Context, HostError, Level};

/// The handle's state: the context's address (0 once the call has ended) and how many uses of
/// it are in flight.
struct State {
    address: usize,
    users: usize,
}

/// One call's context, as the runtime's Python half sees it.
#[pyclass(frozen, name = "CallHandle", module = "_squall_runtime")]
pub struct CallHandle {
    state: Mutex<State>,
    idle: Condvar,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is two integers, consistent after any panic; a poisoned lock is still usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A use of the context in flight; while it lives, `end` waits.
struct Use<'h> {
    handle: &'h CallHandle,
    address: usize,
}

impl Use<'_> {
    fn context(&self) -> &Context<'_> {
        // SAFETY: `address` came from a live `&Context` in `CallHandle::new`; the call that owns
        // that context waits in `end` (before the context is dropped) until this use is over.
        unsafe { &*(self.address as *const Context<'_>) }
    }
}

impl Drop for Use<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.handle.state);
        state.users -= 1;
        if state.users == 0 {
            self.handle.idle.notify_all();
        }
    }
}

impl CallHandle {
    /// A handle on `ctx`; the caller must call [`CallHandle::end`] before `ctx` goes away.
    pub fn new(ctx: &Context<'_>) -> CallHandle {
        CallHandle {
            state: Mutex::new(State {
                address: ctx as *const Context<'_> as usize,
                users: 0,
            }),
            idle: Condvar::new(),
        }
    }

    /// Disconnects the handle from its context, waiting (without the GIL) for uses in flight
    /// on other threads.
    pub fn end(&self, py: Python<'_>) {
        let mut state = lock(&self.state);
        state.address = 0;
        if state.users == 0 {
            return;
        }
        drop(state);
        py.detach(|| {
            let mut state = lock(&self.state);
            while state.users > 0 {
                state = self
                    .idle
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        });
    }

    fn enter(&self) -> PyResult<Use<'_>> {
        let mut state = lock(&self.state);
        if state.address == 0 {
            return Err(PyRuntimeError::new_err(
                "this context's invocation has ended; use the context only during its call",
            ));
        }
        state.users += 1;
        Ok(Use {
            handle: self,
            address: state.address,
        })
    }

    /// Runs a host service without the GIL, so that other calls run while the host works.
    fn host_call<T, F>(&self, py: Python<'_>, call: F) -> PyResult<T>
    where
        T: Send,
        F: Send + FnOnce(&Context<'_>) -> T,
    {
        let used = self.enter()?;
        let address = used.address;
        let result = py.detach(move || {
            // SAFETY: as in `Use::context`: `used` keeps the call waiting in `end`.
            call(unsafe { &*(address as *const Context<'_>) })
        });
        drop(used);
        Ok(result)
    }
}

/// The `squall.HostError` for a failed host service.
fn host_error(py: Python<'_>, operation: &str, error: HostError) -> PyErr {
    let code = match &error {
        HostError::Unavailable => "unavailable".to_owned(),
        HostError::Denied => "denied".to_owned(),
        HostError::TooLarge => "too_large".to_owned(),
        HostError::Invalid | HostError::Json(_) => "invalid".to_owned(),
        HostError::Unsupported => "unsupported".to_owned(),
        HostError::Other(status) => format!("status {status}"),
    };
    let message = format!("{operation}: {error}");
    let raised = py
        .import("squall")
        .and_then(|squall| squall.getattr("HostError"))
        .and_then(|class| class.call1((code, message.clone())));
    match raised {
        Ok(exception) => PyErr::from_value(exception),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

#[pymethods]
impl CallHandle {
    fn function_name(&self) -> PyResult<String> {
        Ok(self.enter()?.context().function().to_owned())
    }

    fn invocation_id(&self) -> PyResult<String> {
        Ok(self.enter()?.context().invocation_id().to_owned())
    }

    fn attempt(&self) -> PyResult<u32> {
        Ok(self.enter()?.context().attempt())
    }

    fn deadline_ms(&self) -> PyResult<u64> {
        Ok(self.enter()?.context().deadline_unix_ms())
    }

    fn traceparent(&self) -> PyResult<Option<String>> {
        Ok(self.enter()?.context().traceparent().map(str::to_owned))
    }

    fn config_raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.enter()?.context().config_raw()))
    }

    fn trigger_raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.enter()?.context().event_raw()))
    }

    /// Logs through the host; after the call has ended, to the process's stderr instead.
    fn log(&self, level: u32, message: &str) {
        let level = Level::from_u32(level).unwrap_or(Level::Info);
        match self.enter() {
            Ok(used) => used.context().log(level, message),
            Err(_) => eprintln!("{level:?} (after its invocation ended): {message}"),
        }
    }

    fn cancelled(&self) -> PyResult<bool> {
        Ok(self.enter()?.context().cancelled())
    }

    fn kv_get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.host_call(py, |ctx| ctx.kv().get(key))? {
            Ok(value) => Ok(value.map(|value| PyBytes::new(py, &value))),
            Err(error) => Err(host_error(py, "kv_get", error)),
        }
    }

    #[pyo3(signature = (key, value, ttl_ms = 0))]
    fn kv_put(&self, py: Python<'_>, key: &str, value: &[u8], ttl_ms: u64) -> PyResult<()> {
        let stored = self.host_call(py, |ctx| match ttl_ms {
            0 => ctx.kv().put(key, value),
            ttl => ctx
                .kv()
                .put_with_ttl(key, value, Duration::from_millis(ttl)),
        })?;
        stored.map_err(|error| host_error(py, "kv_put", error))
    }

    fn kv_delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        let deleted = self.host_call(py, |ctx| ctx.kv().delete(key))?;
        deleted.map_err(|error| host_error(py, "kv_delete", error))
    }

    fn publish(&self, py: Python<'_>, subject: &str, payload: &[u8]) -> PyResult<()> {
        let published = self.host_call(py, |ctx| ctx.publish(subject, payload))?;
        published.map_err(|error| host_error(py, "publish", error))
    }

    /// Writes one chunk of the output now; what the handler returns follows as the last chunk.
    fn stream_write(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<()> {
        let written = self.host_call(py, |ctx| ctx.stream_write(chunk))?;
        written.map_err(|error| host_error(py, "stream_write", error))
    }
}
