//! An opened bundle: its handler, called once per invocation with the event and a context.

use std::path::Path;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use squall_sdk::{Context, FnError};

use crate::bundle;
use crate::engine::{self, describe, Engine};
use crate::error::RuntimeError;
use crate::handle::CallHandle;

/// A bundle's handler, imported and ready to call from any thread.
pub struct Function {
    handler: Py<PyAny>,
    invoke: Py<PyAny>,
    /// The bundle directory, for messages.
    dir: String,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("dir", &self.dir).finish()
    }
}

impl Function {
    /// The bundle directory it was opened from.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Reads the bundle's manifest and imports its handler module, under a module name of its
    /// own, with the bundle root and its `site-packages` first on `sys.path`. The module's
    /// top-level code runs here.
    pub fn open(dir: &Path) -> Result<Function, RuntimeError> {
        let handler = bundle::read_manifest(dir)?;
        let engine = Engine::get()?;
        Python::attach(|py| {
            let runtime = engine.runtime(py);
            let opened = runtime.call_method1(
                "open_bundle",
                (
                    dir.to_string_lossy().as_ref(),
                    handler.module.as_str(),
                    handler.function.as_str(),
                ),
            );
            let handler = match opened {
                Ok(handler) => handler,
                Err(error) if error.is_instance_of::<pyo3::exceptions::PyLookupError>(py) => {
                    let message = error.value(py).str().map(|s| s.to_string());
                    return Err(RuntimeError::Load(
                        message.unwrap_or_else(|_| error.to_string()),
                    ));
                }
                Err(error) => return Err(RuntimeError::Internal(describe(py, &error))),
            };
            let invoke = runtime
                .getattr("invoke")
                .map_err(|error| RuntimeError::Internal(describe(py, &error)))?;
            Ok(Function {
                handler: handler.unbind(),
                invoke: invoke.unbind(),
                dir: dir.display().to_string(),
            })
        })
    }

    /// Calls the handler: `input` parsed as JSON (raw bytes when it is not JSON, `None` when
    /// empty; the request with its body for a web call), the result as output bytes. An
    /// exception fails the call with `TypeName: message` and logs its traceback; `Retry`
    /// asks for another attempt.
    pub fn invoke(&self, ctx: &Context<'_>, input: &[u8]) -> Result<Vec<u8>, FnError> {
        let web = is_web(ctx.event_raw()) && ctx.event().get("source") == Some(&"web".into());
        engine::keep_thread_state();
        Python::attach(|py| {
            let handle = Bound::new(py, CallHandle::new(ctx))
                .map_err(|error| FnError::permanent(internal(py, &error)))?;
            let outcome = self.invoke.bind(py).call1((
                self.handler.bind(py),
                &handle,
                PyBytes::new(py, input),
                web,
            ));
            handle.get().end(py);
            let outcome = outcome.map_err(|error| FnError::permanent(internal(py, &error)))?;
            read_outcome(&outcome).map_err(|error| FnError::permanent(internal(py, &error)))?
        })
    }
}

/// Whether a trigger event might be a web request; a byte search that spares parsing the event
/// of every other call.
fn is_web(event: &[u8]) -> bool {
    event.windows(5).any(|window| window == b"\"web\"")
}

fn internal(py: Python<'_>, error: &PyErr) -> String {
    RuntimeError::Internal(describe(py, error)).to_string()
}

/// Reads `(status, body, retry_after_ms)` as the runtime's `invoke` returns it.
fn read_outcome(outcome: &Bound<'_, PyAny>) -> PyResult<Result<Vec<u8>, FnError>> {
    let outcome = outcome.cast::<PyTuple>()?;
    let status: i32 = outcome.get_item(0)?.extract()?;
    let body = outcome.get_item(1)?;
    let body = body.cast::<PyBytes>()?.as_bytes();
    let after_ms: u64 = outcome.get_item(2)?.extract()?;
    let message = || String::from_utf8_lossy(body).into_owned();
    Ok(match status {
        0 => Ok(body.to_vec()),
        2 if after_ms > 0 => Err(FnError::retry_after(
            message(),
            Duration::from_millis(after_ms),
        )),
        2 => Err(FnError::retry(message())),
        _ => Err(FnError::permanent(message())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_event_that_mentions_web_is_parsed() {
        assert!(is_web(br#"{"source":"web","method":"GET"}"#));
        assert!(!is_web(br#"{"source":"http"}"#));
        assert!(!is_web(b""));
    }
}
