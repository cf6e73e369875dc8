//! One QuickJS runtime and context per opened bundle: the prelude, the module loader, the
//! handler call and the loop that drives promises and timers until a call settles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rquickjs::loader::{Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::promise::PromiseState;
use rquickjs::{
    Coerced, Context, Ctx, Function, Module, Object, Persistent, Runtime, TypedArray, Value,
};

use crate::bundle::resolve_relative;
use crate::native::{self, Stop};
use crate::Error;

const PRELUDE: &str = include_str!("prelude.js");
const SQUALL_MODULE: &str = include_str!("squall_module.js");

/// The heap limit when the process has no data limit.
const DEFAULT_HEAP: usize = 512 << 20;
/// What is left of the process's data limit for everything that is not the JavaScript heap.
const HEAP_MARGIN: usize = 64 << 20;
/// The smallest heap a bundle gets, whatever the process limit says.
const MIN_HEAP: usize = 16 << 20;
/// How long the jobs a finished call left behind may run before they are cut short.
const TIDY_BUDGET: Duration = Duration::from_millis(50);
/// The JavaScript stack; the worker's call threads have 2 MiB.
const MAX_STACK: usize = 1 << 20;

/// How much a runtime may use, and for how long a bundle's top level may run when it opens.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The JavaScript heap limit in bytes.
    pub heap_bytes: usize,
    /// How long evaluating the modules at open may take.
    pub open_timeout: Duration,
}

impl Limits {
    /// The heap limit from the process's `RLIMIT_DATA` less a margin, or 512 MiB without one.
    pub fn from_process() -> Limits {
        Limits {
            heap_bytes: heap_for(data_limit()),
            open_timeout: Duration::from_secs(60),
        }
    }
}

/// The heap for a data limit (`None`: unlimited).
fn heap_for(data_limit: Option<u64>) -> usize {
    match data_limit {
        None => DEFAULT_HEAP,
        Some(limit) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            limit
                .saturating_sub(HEAP_MARGIN.max(limit / 4))
                .max(MIN_HEAP)
        }
    }
}

fn data_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` to a valid pointer and reads nothing else.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_DATA, &mut limit) };
    if status != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(limit.rlim_cur)
    }
}

/// How a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The script threw (or its promise rejected) `message` ("Name: message"); `stack` is
    /// logged.
    Thrown {
        message: String,
        stack: Option<String>,
        /// Set when the thrown value was a host failure worth retrying.
        retryable: bool,
    },
    /// A `squall.Retry`: try again after `after_ms` (0: the policy decides).
    Retry { message: String, after_ms: u64 },
    /// The deadline passed while the script ran.
    Timeout,
    /// The invocation was cancelled while the script ran.
    Cancelled,
    /// The JavaScript heap limit was reached.
    OutOfMemory { limit: usize },
    /// The handler's promise is pending with no job or timer left that could settle it.
    Stalled,
    /// The engine itself failed.
    Engine(String),
}

impl CallError {
    /// The message followed by the stack, when the error has one.
    pub fn with_stack(&self) -> String {
        match self {
            CallError::Thrown {
                message,
                stack: Some(stack),
                ..
            } => format!("{message}\n{}", stack.trim_end()),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Thrown { message, .. } | CallError::Retry { message, .. } => {
                f.write_str(message)
            }
            CallError::Timeout => f.write_str(
                "TimeoutError: the deadline passed while the script was running (interrupted)",
            ),
            CallError::Cancelled => {
                f.write_str("CancelledError: the invocation was cancelled (script interrupted)")
            }
            CallError::OutOfMemory { limit } => write!(
                f,
                "out of memory: the script reached its {} MiB JavaScript heap limit",
                limit >> 20
            ),
            CallError::Stalled => f.write_str(
                "Error: the handler's promise never settled (nothing left to wait for: no \
                 pending job or timer)",
            ),
            CallError::Engine(message) => write!(f, "InternalError: {message}"),
        }
    }
}

/// The prelude's functions the runtime calls.
struct Hooks {
    make_context: Persistent<Function<'static>>,
    next_timer: Persistent<Function<'static>>,
    fire_timers: Persistent<Function<'static>>,
    clear_timers: Persistent<Function<'static>>,
    is_retry: Persistent<Function<'static>>,
}

/// A QuickJS runtime with the prelude, serving one bundle.
///
/// Field order matters: the saved values are released before the context and the runtime.
pub struct Engine {
    hooks: Hooks,
    context: Context,
    limits: Limits,
}

/// Module names are paths relative to the bundle root; `squall` is the built-in module.
struct BundleLoader {
    root: PathBuf,
}

impl BundleLoader {
    /// Whether `path` (relative to the root) is a file that stays inside the root once links
    /// are followed.
    fn inside(&self, path: &str) -> bool {
        let (Ok(root), Ok(file)) = (
            std::fs::canonicalize(&self.root),
            std::fs::canonicalize(self.root.join(path)),
        ) else {
            return false;
        };
        file.starts_with(root) && file.is_file()
    }
}

impl Resolver for BundleLoader {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
    ) -> rquickjs::Result<String> {
        if name == "squall" {
            return Ok(name.to_owned());
        }
        match resolve_relative(base, name) {
            Some(path) if self.inside(&path) => Ok(path),
            _ => Err(rquickjs::Error::new_resolving_message(
                base,
                name,
                "only relative imports of the bundle's own files ('./lib.mjs') and 'squall' \
                 are supported; Node's modules are not available",
            )),
        }
    }
}

impl Loader for BundleLoader {
    fn load<'js>(&mut self, ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Module<'js, Declared>> {
        if name == "squall" {
            return Module::declare(ctx.clone(), name, SQUALL_MODULE);
        }
        let source = std::fs::read(self.root.join(name))
            .map_err(|error| rquickjs::Error::new_loading_message(name, error.to_string()))?;
        Module::declare(ctx.clone(), name, source)
    }
}

impl Engine {
    /// A runtime with the prelude whose modules load from `root`.
    pub fn new(root: &Path, limits: Limits) -> Result<Engine, Error> {
        let engine_error = |error: rquickjs::Error| Error::Engine(error.to_string());
        let runtime = Runtime::new().map_err(engine_error)?;
        runtime.set_memory_limit(limits.heap_bytes);
        runtime.set_max_stack_size(MAX_STACK);
        runtime.set_interrupt_handler(Some(Box::new(native::should_stop)));
        runtime.set_loader(
            BundleLoader {
                root: root.to_path_buf(),
            },
            BundleLoader {
                root: root.to_path_buf(),
            },
        );
        let context = Context::full(&runtime).map_err(engine_error)?;
        let hooks = context.with(|ctx| -> rquickjs::Result<Hooks> {
            native::install(&ctx)?;
            let hooks: Object = ctx.eval(PRELUDE)?;
            let save = |name: &str| -> rquickjs::Result<Persistent<Function<'static>>> {
                Ok(Persistent::save(&ctx, hooks.get::<_, Function>(name)?))
            };
            Ok(Hooks {
                make_context: save("makeContext")?,
                next_timer: save("nextTimer")?,
                fire_timers: save("fireTimers")?,
                clear_timers: save("clearTimers")?,
                is_retry: save("isRetry")?,
            })
        });
        let hooks = hooks.map_err(|error| Error::Engine(format!("the prelude failed: {error}")))?;
        Ok(Engine {
            hooks,
            context,
            limits,
        })
    }

    /// Evaluates the module `name` (relative to the root) and everything it imports, and
    /// returns the names of its exports that are functions, with `f` reading them meanwhile.
    pub fn import<R>(
        &self,
        name: &str,
        f: impl for<'js> FnOnce(&Ctx<'js>, Object<'js>) -> R,
    ) -> Result<R, CallError> {
        let _call = native::CallGuard::local(self.limits.open_timeout);
        self.context.with(|ctx| {
            let promise = Module::import(&ctx, format!("./{name}"))
                .map_err(|error| self.caught(&ctx, error))?;
            let namespace = self.drive(&ctx, promise.into_value())?;
            let namespace = namespace.into_object().ok_or_else(|| {
                CallError::Engine(format!("importing {name} gave no module namespace"))
            })?;
            Ok(f(&ctx, namespace))
        })
    }

    /// Calls `function` with `args` built inside the context and drives the result until it
    /// settles; the settled value goes to `output`.
    pub fn call<R>(
        &self,
        function: &Persistent<Function<'static>>,
        args: impl for<'js> FnOnce(&Ctx<'js>, &Self) -> rquickjs::Result<Vec<Value<'js>>>,
        output: impl for<'js> FnOnce(&Ctx<'js>, Value<'js>) -> rquickjs::Result<R>,
    ) -> Result<R, CallError> {
        let outcome = self.context.with(|ctx| {
            let function = function.clone().restore(&ctx).map_err(engine)?;
            let args = args(&ctx, self).map_err(|error| self.caught(&ctx, error))?;
            let mut list = rquickjs::function::Args::new(ctx.clone(), args.len());
            for arg in args {
                list.push_arg(arg).map_err(engine)?;
            }
            let value: Value = function
                .call_arg(list)
                .map_err(|error| self.caught(&ctx, error))?;
            let value = self.drive(&ctx, value)?;
            output(&ctx, value).map_err(|error| self.caught(&ctx, error))
        });
        self.after_call(outcome.as_ref().err());
        outcome
    }

    /// Builds the `context` argument of a handler.
    pub fn make_context<'js>(
        &self,
        ctx: &Ctx<'js>,
        function: &str,
        invocation_id: &str,
        attempt: u32,
        deadline_ms: u64,
    ) -> rquickjs::Result<Value<'js>> {
        let make: Function = self.hooks.make_context.clone().restore(ctx)?;
        make.call((function, invocation_id, attempt, deadline_ms as f64))
    }

    /// Forgets the call's timers, runs the jobs it left for at most [`TIDY_BUDGET`] and, after
    /// running out of memory, collects what it left.
    fn after_call(&self, error: Option<&CallError>) {
        native::grace(TIDY_BUDGET);
        self.context.with(|ctx| {
            if let Ok(clear) = self.hooks.clear_timers.clone().restore(&ctx) {
                let _: rquickjs::Result<Value> = clear.call(());
            }
            while ctx.execute_pending_job() {}
            if matches!(error, Some(CallError::OutOfMemory { .. })) {
                ctx.run_gc();
            }
        });
    }

    /// Runs jobs and timers until `value` (a promise or anything else) settles, the deadline
    /// passes or the call is cancelled.
    pub fn drive<'js>(&self, ctx: &Ctx<'js>, value: Value<'js>) -> Result<Value<'js>, CallError> {
        let Some(promise) = value.as_promise().cloned() else {
            while ctx.execute_pending_job() {}
            return self.check_stop().map(|()| value);
        };
        let next_timer: Function = self.hooks.next_timer.clone().restore(ctx).map_err(engine)?;
        let fire_timers: Function = self
            .hooks
            .fire_timers
            .clone()
            .restore(ctx)
            .map_err(engine)?;
        loop {
            while ctx.execute_pending_job() {}
            self.check_stop()?;
            match promise.state() {
                PromiseState::Resolved => {
                    return promise
                        .result::<Value>()
                        .unwrap_or_else(|| Ok(Value::new_undefined(ctx.clone())))
                        .map_err(|error| self.caught(ctx, error));
                }
                PromiseState::Rejected => {
                    let error = match promise.result::<Value>() {
                        Some(Err(error)) => error,
                        _ => rquickjs::Error::Exception,
                    };
                    return Err(self.caught(ctx, error));
                }
                PromiseState::Pending => {}
            }
            if native::should_stop() {
                self.check_stop()?;
            }
            let wait: f64 = next_timer
                .call(())
                .map_err(|error| self.caught(ctx, error))?;
            if wait < 0.0 {
                return Err(CallError::Stalled);
            }
            if wait <= 0.0 {
                let thrown: Value = fire_timers
                    .call(())
                    .map_err(|error| self.caught(ctx, error))?;
                if !thrown.is_undefined() {
                    return Err(self.describe(ctx, thrown));
                }
                continue;
            }
            let mut nap = Duration::from_secs_f64(wait / 1000.0).min(Duration::from_millis(10));
            if let Some(left) = native::remaining() {
                nap = nap.min(left);
            }
            std::thread::sleep(nap);
        }
    }

    fn check_stop(&self) -> Result<(), CallError> {
        match native::stopped() {
            Some(Stop::Deadline) => Err(CallError::Timeout),
            Some(Stop::Cancelled) => Err(CallError::Cancelled),
            None => Ok(()),
        }
    }

    /// Turns an error from a call into the JavaScript failure it stands for.
    fn caught(&self, ctx: &Ctx<'_>, error: rquickjs::Error) -> CallError {
        if let Err(stop) = self.check_stop() {
            // Clear the pending "interrupted" exception.
            let _ = ctx.catch();
            return stop;
        }
        match error {
            rquickjs::Error::Exception => {
                let thrown = ctx.catch();
                self.describe(ctx, thrown)
            }
            rquickjs::Error::Allocation => CallError::OutOfMemory {
                limit: self.limits.heap_bytes,
            },
            other => CallError::Engine(other.to_string()),
        }
    }

    /// Describes a thrown value as "Name: message", recognising `squall.Retry`, out of memory
    /// and retryable host failures.
    pub fn describe<'js>(&self, ctx: &Ctx<'js>, thrown: Value<'js>) -> CallError {
        if let Err(stop) = self.check_stop() {
            return stop;
        }
        let Some(object) = thrown.as_object() else {
            if thrown.is_null() {
                // QuickJS throws null when it cannot even allocate the error.
                return CallError::OutOfMemory {
                    limit: self.limits.heap_bytes,
                };
            }
            let text = ctx
                .json_stringify(thrown.clone())
                .ok()
                .flatten()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| "a value".to_owned());
            return CallError::Thrown {
                message: format!("Error: uncaught {text}"),
                stack: None,
                retryable: false,
            };
        };
        let text = |key: &str| -> Option<String> {
            object
                .get::<_, Option<Coerced<String>>>(key)
                .ok()
                .flatten()
                .map(|c| c.0)
        };
        let name = text("name").unwrap_or_else(|| "Error".to_owned());
        let message = text("message").unwrap_or_default();
        if name == "InternalError" && message.contains("out of memory") {
            return CallError::OutOfMemory {
                limit: self.limits.heap_bytes,
            };
        }
        let full = if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        };
        let is_retry = self
            .hooks
            .is_retry
            .clone()
            .restore(ctx)
            .and_then(|is_retry| is_retry.call::<_, bool>((thrown.clone(),)))
            .unwrap_or(false);
        if is_retry {
            let after: f64 = object.get("afterMs").unwrap_or(0.0);
            let after_ms = if after.is_finite() && after > 0.0 {
                after.ceil().min(u64::MAX as f64) as u64
            } else {
                0
            };
            return CallError::Retry {
                message: full,
                after_ms,
            };
        }
        let code = text("code");
        CallError::Thrown {
            message: full,
            stack: text("stack").filter(|s| !s.trim().is_empty()),
            retryable: code.as_deref() == Some("UNAVAILABLE"),
        }
    }
}

fn engine(error: rquickjs::Error) -> CallError {
    CallError::Engine(error.to_string())
}

/// The event a handler gets: the input parsed as JSON when it is JSON, else a `Uint8Array`;
/// `null` for no input.
pub fn event<'js>(ctx: &Ctx<'js>, input: &[u8]) -> rquickjs::Result<Value<'js>> {
    let start = input.iter().find(|b| !b.is_ascii_whitespace());
    let Some(&start) = start else {
        return if input.is_empty() {
            Ok(Value::new_null(ctx.clone()))
        } else {
            Ok(TypedArray::<u8>::new(ctx.clone(), input.to_vec())?.into_value())
        };
    };
    if b"{[\"-0123456789tfn".contains(&start) {
        match ctx.json_parse(input.to_vec()) {
            Ok(value) => return Ok(value),
            Err(rquickjs::Error::Exception) => {
                let _ = ctx.catch();
            }
            Err(other) => return Err(other),
        }
    }
    Ok(TypedArray::<u8>::new(ctx.clone(), input.to_vec())?.into_value())
}

/// Whether the invocation is a web request (`ctx.event.source == "web"`).
pub fn is_web(context: &squall_sdk::Context<'_>) -> bool {
    let raw = context.event_raw();
    // Most events are not web requests; skip parsing them.
    raw.windows(5).any(|w| w == b"\"web\"")
        && context
            .event()
            .get("source")
            .and_then(serde_json::Value::as_str)
            == Some("web")
}

/// A web function's event: the request from `ctx.event` (`method`, `path`, `rawQuery`,
/// `query`, `headers`, `remoteAddr`) with the input as `body`, a string (base64 with
/// `isBase64Encoded` when the body is not UTF-8).
pub fn web_event<'js>(
    ctx: &Ctx<'js>,
    context: &squall_sdk::Context<'_>,
    input: &[u8],
) -> rquickjs::Result<Value<'js>> {
    use base64::Engine as _;
    use serde_json::{json, Value as Json};

    let request = squall_sdk::WebRequest::from_event(context.event(), input);
    let mut headers = serde_json::Map::new();
    for (name, value) in &request.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Json::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Json::String(value));
            }
        }
    }
    let (body, is_base64) = match std::str::from_utf8(input) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(input),
            true,
        ),
    };
    let event = json!({
        "source": "web",
        "method": request.method.as_str(),
        "path": request.path,
        "rawQuery": request.raw_query,
        "query": request.query,
        "headers": headers,
        "remoteAddr": request.remote_addr,
        "body": body,
        "isBase64Encoded": is_base64,
    });
    ctx.json_parse(event.to_string())
}

/// The bytes of a handler's result: bytes as they are, a string as UTF-8, anything else as
/// JSON (`undefined` → `null`, or nothing once the call has streamed).
pub fn output<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Vec<u8>> {
    if value.is_undefined() && native::streamed() {
        return Ok(Vec::new());
    }
    if value.is_undefined() || value.is_null() {
        return Ok(b"null".to_vec());
    }
    if let Some(text) = value.as_string() {
        return Ok(text.to_string()?.into_bytes());
    }
    if let Ok(bytes) = TypedArray::<u8>::from_value(value.clone()) {
        return Ok(bytes.as_bytes().map(<[u8]>::to_vec).unwrap_or_default());
    }
    if let Some(buffer) = rquickjs::ArrayBuffer::from_value(value.clone()) {
        return Ok(buffer.as_bytes().map(<[u8]>::to_vec).unwrap_or_default());
    }
    match ctx.json_stringify(value)? {
        Some(json) => Ok(json.to_string()?.into_bytes()),
        None => Ok(b"null".to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_leaves_a_margin_of_the_data_limit() {
        assert_eq!(heap_for(None), DEFAULT_HEAP);
        assert_eq!(heap_for(Some(1 << 30)), (1 << 30) - (256 << 20));
        assert_eq!(heap_for(Some(128 << 20)), 64 << 20);
        assert_eq!(heap_for(Some(1 << 20)), MIN_HEAP);
    }
}
