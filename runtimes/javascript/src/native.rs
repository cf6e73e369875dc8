//! The Rust side of the globals: the state of the call running on this thread, the interrupt
//! check, and the native functions the prelude builds `console`, `ctx.kv` and friends on.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rquickjs::{Ctx, Exception, Function, Object, TypedArray, Value};
use squall_sdk::{Context, HostError, Level};

/// How often, at most, a running script asks the host whether the invocation was cancelled.
const CANCEL_CHECK_EVERY: Duration = Duration::from_millis(10);

/// Why the interrupt handler stopped a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The call's deadline passed.
    Deadline,
    /// The host reported the invocation cancelled.
    Cancelled,
}

/// What the script running on this thread may reach: the host context of the invocation (none
/// while a bundle opens or a test runs), its deadline, and where logs go without a host.
struct CallState {
    /// The invocation's context; null outside an invocation. Valid while the guard lives.
    context: *const Context<'static>,
    deadline: Option<Instant>,
    next_cancel_check: Instant,
    stopped: Option<Stop>,
    /// Whether the script has written a chunk of its output through `streamWrite`.
    streamed: bool,
    /// Log lines collected when no host context backs the call (the test runner).
    logs: Vec<String>,
}

thread_local! {
    static CALL: RefCell<Option<CallState>> = const { RefCell::new(None) };
}

/// Marks a call running on this thread; the state is cleared when the guard drops.
pub struct CallGuard<'c> {
    _context: std::marker::PhantomData<&'c Context<'c>>,
}

impl<'c> CallGuard<'c> {
    /// Starts a call with the host's context (whose deadline counts, 0 meaning none).
    pub fn invocation(context: &'c Context<'c>) -> CallGuard<'c> {
        let deadline = match context.deadline_unix_ms() {
            0 => None,
            ms => Some(instant_of_unix_ms(ms)),
        };
        let context: *const Context<'c> = context;
        CallGuard::enter(context.cast(), deadline)
    }

    /// Starts a call without a host (opening a bundle, running a test) that may run `budget`.
    pub fn local(budget: Duration) -> CallGuard<'static> {
        CallGuard::enter(std::ptr::null(), Some(Instant::now() + budget))
    }

    fn enter(context: *const Context<'static>, deadline: Option<Instant>) -> CallGuard<'c> {
        CALL.with(|call| {
            *call.borrow_mut() = Some(CallState {
                context,
                deadline,
                next_cancel_check: Instant::now() + CANCEL_CHECK_EVERY,
                stopped: None,
                streamed: false,
                logs: Vec::new(),
            });
        });
        CallGuard {
            _context: std::marker::PhantomData,
        }
    }

    /// The log lines collected so far without a host.
    pub fn take_logs(&self) -> Vec<String> {
        CALL.with(|call| {
            call.borrow_mut()
                .as_mut()
                .map(|state| std::mem::take(&mut state.logs))
                .unwrap_or_default()
        })
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        CALL.with(|call| *call.borrow_mut() = None);
    }
}

fn instant_of_unix_ms(ms: u64) -> Instant {
    let deadline = UNIX_EPOCH + Duration::from_millis(ms);
    let now = Instant::now();
    match deadline.duration_since(SystemTime::now()) {
        Ok(left) => now
            .checked_add(left)
            .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        Err(_) => now,
    }
}

/// Runs `f` with the host context of the call on this thread, if there is one.
fn with_context<R>(f: impl FnOnce(Option<&Context<'_>>) -> R) -> R {
    let context = CALL.with(|call| {
        call.borrow()
            .as_ref()
            .map_or(std::ptr::null(), |state| state.context)
    });
    // SAFETY: a non-null pointer was stored by `CallGuard::invocation` from a reference that
    // outlives the guard, and the guard clears it before that reference ends; this runs on the
    // guard's thread, inside the call.
    let context = unsafe { context.as_ref() };
    f(context)
}

/// The interrupt handler's check: whether the script on this thread must stop now.
pub fn should_stop() -> bool {
    let context = CALL.with(|call| {
        let Ok(mut call) = call.try_borrow_mut() else {
            return None;
        };
        let state = call.as_mut()?;
        if state.stopped.is_some() {
            return None;
        }
        let now = Instant::now();
        if state.deadline.is_some_and(|deadline| now >= deadline) {
            state.stopped = Some(Stop::Deadline);
            return None;
        }
        if now >= state.next_cancel_check && !state.context.is_null() {
            state.next_cancel_check = now + CANCEL_CHECK_EVERY;
            return Some(state.context);
        }
        None
    });
    if let Some(context) = context {
        // SAFETY: as in `with_context`: the guard keeps the pointer valid on this thread.
        let cancelled = unsafe { context.as_ref() }.is_some_and(Context::cancelled);
        if cancelled {
            CALL.with(|call| {
                if let Some(state) = call.borrow_mut().as_mut() {
                    state.stopped = Some(Stop::Cancelled);
                }
            });
        }
    }
    stopped().is_some()
}

/// Gives the call on this thread `budget` more, clearing a stop, so that the runtime can tidy
/// up after the user's code (which the interrupt handler bounds to that budget).
pub fn grace(budget: Duration) {
    CALL.with(|call| {
        if let Some(state) = call.borrow_mut().as_mut() {
            state.stopped = None;
            state.deadline = Some(Instant::now() + budget);
        }
    });
}

/// Why the call on this thread was stopped, if it was.
pub fn stopped() -> Option<Stop> {
    CALL.with(|call| call.borrow().as_ref().and_then(|state| state.stopped))
}

/// Whether the call on this thread has streamed a chunk of its output.
pub fn streamed() -> bool {
    CALL.with(|call| call.borrow().as_ref().is_some_and(|state| state.streamed))
}

/// How long the call on this thread may still run; `None` without a deadline.
pub fn remaining() -> Option<Duration> {
    CALL.with(|call| {
        call.borrow()
            .as_ref()
            .and_then(|state| state.deadline)
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    })
}

fn log(level: u32, message: String) {
    let level = Level::from_u32(level).unwrap_or(Level::Info);
    with_context(|context| match context {
        Some(context) => context.log(level, &message),
        None => CALL.with(|call| {
            if let Some(state) = call.borrow_mut().as_mut() {
                let tag = match level {
                    Level::Error => "error",
                    Level::Warn => "warn",
                    Level::Info => "info",
                    Level::Debug => "debug",
                    Level::Trace => "trace",
                };
                state.logs.push(format!("[{tag}] {message}"));
            }
        }),
    })
}

/// The `code` a host failure carries in JavaScript.
fn host_code(error: &HostError) -> &'static str {
    match error {
        HostError::Unavailable => "UNAVAILABLE",
        HostError::Denied => "DENIED",
        HostError::TooLarge => "TOO_LARGE",
        HostError::Invalid => "INVALID",
        HostError::Unsupported => "UNSUPPORTED",
        HostError::Json(_) => "JSON",
        HostError::Other(_) => "HOST",
    }
}

/// Throws an `Error` with the host failure's message and `code`.
fn throw_host(ctx: &Ctx<'_>, error: HostError) -> rquickjs::Error {
    let code = host_code(&error);
    match Exception::from_message(ctx.clone(), &error.to_string()) {
        Ok(exception) => match exception.set("code", code) {
            Ok(()) => exception.throw(),
            Err(error) => error,
        },
        Err(error) => error,
    }
}

/// Runs a host service with the call's context, or throws when no invocation is running.
fn host_call<'js, R>(
    ctx: &Ctx<'js>,
    f: impl FnOnce(&Context<'_>) -> Result<R, HostError>,
) -> rquickjs::Result<R> {
    with_context(|context| match context {
        Some(context) => f(context).map_err(|error| throw_host(ctx, error)),
        None => Err(throw_host(ctx, HostError::Invalid)),
    })
}

/// The bytes of a `Uint8Array` (the prelude converts strings and other views first).
fn bytes_of<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> rquickjs::Result<Vec<u8>> {
    TypedArray::<u8>::from_value(value.clone())
        .ok()
        .and_then(|array| array.as_bytes().map(<[u8]>::to_vec))
        .ok_or_else(|| Exception::throw_type(ctx, "expected a Uint8Array"))
}

/// Builds the `__squall_native` object the prelude consumes.
pub fn install<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    let native = Object::new(ctx.clone())?;
    native.set(
        "log",
        Function::new(ctx.clone(), |level: u32, message: String| {
            log(level, message)
        })?,
    )?;
    native.set(
        "kvGet",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, key: String| -> rquickjs::Result<Value<'js>> {
                match host_call(&ctx, |context| context.kv().get(&key))? {
                    Some(bytes) => Ok(TypedArray::<u8>::new(ctx, bytes)?.into_value()),
                    None => Ok(Value::new_null(ctx)),
                }
            },
        )?,
    )?;
    native.set(
        "kvPut",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, key: String, value: Value<'js>, ttl_ms: f64| {
                let bytes = bytes_of(&ctx, &value)?;
                host_call(&ctx, |context| {
                    let kv = context.kv();
                    // Whole milliseconds; a fraction below one still asks for an expiry.
                    if ttl_ms > 0.0 {
                        let ttl = Duration::from_millis(ttl_ms.ceil().min(u64::MAX as f64) as u64);
                        kv.put_with_ttl(&key, &bytes, ttl)
                    } else {
                        kv.put(&key, &bytes)
                    }
                })
            },
        )?,
    )?;
    native.set(
        "kvDelete",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, key: String| {
            host_call(&ctx, |context| context.kv().delete(&key))
        })?,
    )?;
    native.set(
        "publish",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, subject: String, payload: Value<'js>| {
                let bytes = bytes_of(&ctx, &payload)?;
                host_call(&ctx, |context| context.publish(&subject, &bytes))
            },
        )?,
    )?;
    native.set(
        "streamWrite",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, chunk: Value<'js>| {
            let bytes = bytes_of(&ctx, &chunk)?;
            host_call(&ctx, |context| context.stream_write(&bytes))?;
            CALL.with(|call| {
                if let Some(state) = call.borrow_mut().as_mut() {
                    state.streamed = true;
                }
            });
            Ok::<(), rquickjs::Error>(())
        })?,
    )?;
    native.set(
        "cancelled",
        Function::new(ctx.clone(), || {
            with_context(|context| context.is_some_and(Context::cancelled))
        })?,
    )?;
    native.set(
        "config",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            json_object(
                &ctx,
                with_context(|context| context.map(|c| c.config_raw().to_vec())),
            )
        })?,
    )?;
    native.set(
        "trigger",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            json_object(
                &ctx,
                with_context(|context| context.map(|c| c.event_raw().to_vec())),
            )
        })?,
    )?;
    native.set(
        "randomBytes",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, len: usize| -> rquickjs::Result<TypedArray<'js, u8>> {
                let mut bytes = vec![0_u8; len.min(65_536)];
                getrandom::fill(&mut bytes).map_err(|error| {
                    Exception::throw_internal(&ctx, &format!("no randomness: {error}"))
                })?;
                TypedArray::new(ctx, bytes)
            },
        )?,
    )?;
    native.set(
        "utf8Encode",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: String| -> rquickjs::Result<TypedArray<'js, u8>> {
                TypedArray::new(ctx, text.into_bytes())
            },
        )?,
    )?;
    native.set(
        "utf8Decode",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, bytes: Value<'js>, fatal: bool| -> rquickjs::Result<String> {
                let bytes = bytes_of(&ctx, &bytes)?;
                let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
                match std::str::from_utf8(bytes) {
                    Ok(text) => Ok(text.to_owned()),
                    Err(_) if fatal => Err(Exception::throw_type(
                        &ctx,
                        "the encoded data was not valid UTF-8",
                    )),
                    Err(_) => Ok(String::from_utf8_lossy(bytes).into_owned()),
                }
            },
        )?,
    )?;
    native.set(
        "btoa",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: String| -> rquickjs::Result<String> {
                let mut bytes = Vec::with_capacity(text.len());
                for c in text.chars() {
                    let byte = u8::try_from(u32::from(c)).map_err(|_| {
                        Exception::throw_message(
                            &ctx,
                            "InvalidCharacterError: btoa takes characters in the Latin-1 range only",
                        )
                    })?;
                    bytes.push(byte);
                }
                Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
            },
        )?,
    )?;
    native.set(
        "atob",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: String| -> rquickjs::Result<String> {
                let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                let bytes = engine.decode(compact.as_bytes()).map_err(|_| {
                    Exception::throw_message(
                        &ctx,
                        "InvalidCharacterError: the string to be decoded is not valid base64",
                    )
                })?;
                Ok(bytes.into_iter().map(char::from).collect())
            },
        )?,
    )?;
    ctx.globals().set("__squall_native", native)?;
    Ok(())
}

/// `raw` parsed as a JSON object; an empty object when there is none, it is not JSON, or it is
/// not an object.
fn json_object<'js>(ctx: &Ctx<'js>, raw: Option<Vec<u8>>) -> rquickjs::Result<Value<'js>> {
    match raw
        .filter(|raw| !raw.is_empty())
        .map(|raw| ctx.json_parse(raw))
    {
        Some(Ok(value)) if value.is_object() => Ok(value),
        _ => Ok(Object::new(ctx.clone())?.into_value()),
    }
}
