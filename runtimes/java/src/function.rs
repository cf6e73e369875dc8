//! An opened bundle: its handler instance, called once per invocation with the input and a
//! context.

use std::path::Path;
use std::time::Duration;

use jni::objects::GlobalRef;
use squall_sdk::{Context, FnError};

use crate::bundle;
use crate::engine::Engine;
use crate::error::RuntimeError;
use crate::natives;

/// A bundle's handler, loaded and ready to call from any thread.
pub struct Function {
    engine: &'static Engine,
    bundle: GlobalRef,
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

    /// Reads the bundle's manifest, starts the JVM if needed and loads the handler class
    /// through a class loader of this bundle's own; the class's static initialiser and its
    /// constructor run here.
    pub fn open(dir: &Path) -> Result<Function, RuntimeError> {
        let handler = bundle::read_manifest(dir)?;
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let class_path = bundle::class_path(&dir)?;
        let engine = Engine::get()?;
        let bundle = engine.open(&class_path, &handler)?;
        Ok(Function {
            engine,
            bundle,
            dir: dir.display().to_string(),
        })
    }

    /// Calls the handler. An exception fails the call with `ExceptionClass: message` and logs
    /// its stack trace; `squall.Retry` (or an uncaught `HostException` with code
    /// `unavailable`) asks for another attempt.
    pub fn invoke(&self, ctx: &Context<'_>, input: &[u8]) -> Result<Vec<u8>, FnError> {
        let web = is_web(ctx.event_raw()) && ctx.event().get("source") == Some(&"web".into());
        let entered = natives::enter(ctx);
        let outcome = self.engine.invoke(&self.bundle, input, web);
        drop(entered);
        let outcome = outcome
            .map_err(|error| FnError::permanent(RuntimeError::Internal(error).to_string()))?;
        let message = || String::from_utf8_lossy(&outcome.body).into_owned();
        match outcome.status {
            0 => Ok(outcome.body),
            2 if outcome.after_ms > 0 => Err(FnError::retry_after(
                message(),
                Duration::from_millis(outcome.after_ms),
            )),
            2 => Err(FnError::retry(message())),
            _ => Err(FnError::permanent(message())),
        }
    }
}

/// Whether a trigger event might be a web request; a byte search that spares parsing the event
/// of every other call.
fn is_web(event: &[u8]) -> bool {
    event.windows(5).any(|window| window == b"\"web\"")
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
