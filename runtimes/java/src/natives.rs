//! The native methods of `squall.CallContext`: the host services of the call the current thread
//! runs, found through a thread-local set for the duration of the call.

use std::cell::Cell;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::Duration;

use jni::objects::{GlobalRef, JByteArray, JClass, JMethodID, JString, JValue};
use jni::sys::{jboolean, jbyteArray, jint, jlong, jstring, JNI_FALSE};
use jni::{JNIEnv, NativeMethod};
use squall_sdk::{Context, HostError, Level};

thread_local! {
    /// The `squall_sdk::Context` of the call this thread runs, type- and lifetime-erased; null
    /// outside calls.
    static CURRENT: Cell<*const c_void> = const { Cell::new(std::ptr::null()) };
}

/// `squall.HostException` of this copy's SDK and its (code, message) constructor.
static HOST_EXCEPTION: OnceLock<(GlobalRef, JMethodID)> = OnceLock::new();

pub fn set_host_exception(class: GlobalRef, constructor: JMethodID) {
    let _ = HOST_EXCEPTION.set((class, constructor));
}

/// Makes `ctx` the current thread's call context until dropped.
pub struct Entered<'a> {
    previous: *const c_void,
    _context: PhantomData<&'a Context<'a>>,
}

/// Makes `ctx` the context the native methods use on this thread while the guard lives.
pub fn enter<'a>(ctx: &'a Context<'a>) -> Entered<'a> {
    let address = ctx as *const Context<'a> as *const c_void;
    let previous = CURRENT.with(|current| current.replace(address));
    Entered {
        previous,
        _context: PhantomData,
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
    }
}

/// Why a native method failed.
enum Failure {
    /// A JNI call failed; a Java exception may be pending.
    Jni(jni::errors::Error),
    /// A host service failed: (operation, error).
    Host(&'static str, HostError),
    /// A Java argument was null.
    Null(&'static str),
}

impl From<jni::errors::Error> for Failure {
    fn from(error: jni::errors::Error) -> Failure {
        Failure::Jni(error)
    }
}

/// The code `squall.HostException.code()` reports, as in the Python runtime.
fn code(error: &HostError) -> String {
    match error {
        HostError::Unavailable => "unavailable".to_owned(),
        HostError::Denied => "denied".to_owned(),
        HostError::TooLarge => "too_large".to_owned(),
        HostError::Invalid | HostError::Json(_) => "invalid".to_owned(),
        HostError::Unsupported => "unsupported".to_owned(),
        HostError::Other(status) => format!("status {status}"),
    }
}

fn throw_host(env: &mut JNIEnv<'_>, operation: &str, error: &HostError) {
    let message = format!("{operation}: {error}");
    let thrown = (|| -> jni::errors::Result<()> {
        let (class, constructor) = HOST_EXCEPTION
            .get()
            .ok_or(jni::errors::Error::NullPtr("HostException"))?;
        let code = env.new_string(code(error))?;
        let text = env.new_string(&message)?;
        // SAFETY: the constructor is HostException(String, String).
        let exception = unsafe {
            env.new_object_unchecked(
                <&JClass>::from(class.as_obj()),
                *constructor,
                &[JValue::from(&code).as_jni(), JValue::from(&text).as_jni()],
            )
        }?;
        env.throw(jni::objects::JThrowable::from(exception))
    })();
    if thrown.is_err() && !env.exception_check().unwrap_or(false) {
        let _ = env.throw_new("java/lang/RuntimeException", message);
    }
}

/// Runs a native method's body with the current call's context; any failure becomes a pending
/// Java exception and the method returns `fallback`.
fn with_context<R: Copy>(
    env: &mut JNIEnv<'_>,
    fallback: R,
    body: impl FnOnce(&mut JNIEnv<'_>, &Context<'_>) -> Result<R, Failure>,
) -> R {
    let address = CURRENT.with(Cell::get);
    if address.is_null() {
        let _ = env.throw_new(
            "java/lang/IllegalStateException",
            "this context's invocation has ended; use the context only during its call",
        );
        return fallback;
    }
    // SAFETY: `address` came from a live `&Context` in `enter`; the guard that restores it lives
    // in the call that owns the context, which is on this thread's stack below this native call.
    let ctx = unsafe { &*(address as *const Context<'_>) };
    let outcome = catch_unwind(AssertUnwindSafe(|| body(env, ctx)));
    match outcome {
        Ok(Ok(value)) => return value,
        Ok(Err(Failure::Host(operation, error))) => throw_host(env, operation, &error),
        Ok(Err(Failure::Null(what))) => {
            let _ = env.throw_new("java/lang/NullPointerException", format!("{what} is null"));
        }
        Ok(Err(Failure::Jni(error))) => {
            if !env.exception_check().unwrap_or(false) {
                let _ = env.throw_new("java/lang/RuntimeException", error.to_string());
            }
        }
        Err(_) => {
            if !env.exception_check().unwrap_or(false) {
                let _ = env.throw_new(
                    "java/lang/Error",
                    "the Java runtime's native method panicked",
                );
            }
        }
    }
    fallback
}

fn text(env: &mut JNIEnv<'_>, value: &JString<'_>, what: &'static str) -> Result<String, Failure> {
    if value.is_null() {
        return Err(Failure::Null(what));
    }
    Ok(env.get_string(value)?.into())
}

fn bytes(
    env: &mut JNIEnv<'_>,
    value: &JByteArray<'_>,
    what: &'static str,
) -> Result<Vec<u8>, Failure> {
    if value.is_null() {
        return Err(Failure::Null(what));
    }
    Ok(env.convert_byte_array(value)?)
}

fn new_string(env: &mut JNIEnv<'_>, value: &str) -> Result<jstring, Failure> {
    Ok(env.new_string(value)?.into_raw())
}

fn json_text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

extern "system" fn function_name<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jstring {
    with_context(&mut env, std::ptr::null_mut(), |env, ctx| {
        new_string(env, ctx.function())
    })
}

extern "system" fn invocation_id<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jstring {
    with_context(&mut env, std::ptr::null_mut(), |env, ctx| {
        new_string(env, ctx.invocation_id())
    })
}

extern "system" fn attempt<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jint {
    with_context(&mut env, 0, |_, ctx| {
        Ok(jint::try_from(ctx.attempt()).unwrap_or(jint::MAX))
    })
}

extern "system" fn deadline_ms<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jlong {
    with_context(&mut env, 0, |_, ctx| {
        Ok(jlong::try_from(ctx.deadline_unix_ms()).unwrap_or(jlong::MAX))
    })
}

extern "system" fn traceparent<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jstring {
    with_context(&mut env, std::ptr::null_mut(), |env, ctx| {
        match ctx.traceparent() {
            Some(traceparent) => new_string(env, traceparent),
            None => Ok(std::ptr::null_mut()),
        }
    })
}

extern "system" fn config<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jstring {
    with_context(&mut env, std::ptr::null_mut(), |env, ctx| {
        new_string(env, &json_text(ctx.config_raw()))
    })
}

extern "system" fn trigger<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jstring {
    with_context(&mut env, std::ptr::null_mut(), |env, ctx| {
        new_string(env, &json_text(ctx.event_raw()))
    })
}

extern "system" fn log<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    level: jint,
    message: JString<'l>,
) {
    let level = u32::try_from(level)
        .ok()
        .and_then(Level::from_u32)
        .unwrap_or(Level::Info);
    if CURRENT.with(Cell::get).is_null() {
        // A line from a thread that runs no call: the process's standard error keeps it.
        let message = text(&mut env, &message, "message").unwrap_or_default();
        eprintln!("{level:?} (outside an invocation): {message}");
        return;
    }
    with_context(&mut env, (), |env, ctx| {
        let message = text(env, &message, "message")?;
        ctx.log(level, &message);
        Ok(())
    })
}

extern "system" fn cancelled<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>) -> jboolean {
    with_context(&mut env, JNI_FALSE, |_, ctx| {
        Ok(jboolean::from(ctx.cancelled()))
    })
}

extern "system" fn stream_write<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    chunk: JByteArray<'l>,
) {
    with_context(&mut env, (), |env, ctx| {
        let chunk = bytes(env, &chunk, "chunk")?;
        ctx.stream_write(&chunk)
            .map_err(|error| Failure::Host("stream_write", error))
    })
}

extern "system" fn kv_get<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    key: JString<'l>,
) -> jbyteArray {
    with_context(&mut env, std::ptr::null_mut(), |env, ctx| {
        let key = text(env, &key, "key")?;
        match ctx.kv().get(&key) {
            Ok(Some(value)) => Ok(env.byte_array_from_slice(&value)?.into_raw()),
            Ok(None) => Ok(std::ptr::null_mut()),
            Err(error) => Err(Failure::Host("kv_get", error)),
        }
    })
}

extern "system" fn kv_put<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    key: JString<'l>,
    value: JByteArray<'l>,
    ttl_ms: jlong,
) {
    with_context(&mut env, (), |env, ctx| {
        let key = text(env, &key, "key")?;
        let value = bytes(env, &value, "value")?;
        let stored = match u64::try_from(ttl_ms).unwrap_or(0) {
            0 => ctx.kv().put(&key, &value),
            ttl => ctx
                .kv()
                .put_with_ttl(&key, &value, Duration::from_millis(ttl)),
        };
        stored.map_err(|error| Failure::Host("kv_put", error))
    })
}

extern "system" fn kv_delete<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>, key: JString<'l>) {
    with_context(&mut env, (), |env, ctx| {
        let key = text(env, &key, "key")?;
        ctx.kv()
            .delete(&key)
            .map_err(|error| Failure::Host("kv_delete", error))
    })
}

extern "system" fn publish<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    subject: JString<'l>,
    payload: JByteArray<'l>,
) {
    with_context(&mut env, (), |env, ctx| {
        let subject = text(env, &subject, "subject")?;
        let payload = bytes(env, &payload, "payload")?;
        ctx.publish(&subject, &payload)
            .map_err(|error| Failure::Host("publish", error))
    })
}

fn method(name: &str, sig: &str, fn_ptr: *mut c_void) -> NativeMethod {
    NativeMethod {
        name: name.into(),
        sig: sig.into(),
        fn_ptr,
    }
}

/// The native methods of `squall.CallContext`, bound to this copy's functions.
pub fn methods() -> Vec<NativeMethod> {
    const STRING: &str = "()Ljava/lang/String;";
    vec![
        method("nFunctionName", STRING, function_name as *mut c_void),
        method("nInvocationId", STRING, invocation_id as *mut c_void),
        method("nAttempt", "()I", attempt as *mut c_void),
        method("nDeadlineMs", "()J", deadline_ms as *mut c_void),
        method("nTraceparent", STRING, traceparent as *mut c_void),
        method("nConfig", STRING, config as *mut c_void),
        method("nTrigger", STRING, trigger as *mut c_void),
        method("nLog", "(ILjava/lang/String;)V", log as *mut c_void),
        method("nCancelled", "()Z", cancelled as *mut c_void),
        method("nStreamWrite", "([B)V", stream_write as *mut c_void),
        method("nKvGet", "(Ljava/lang/String;)[B", kv_get as *mut c_void),
        method("nKvPut", "(Ljava/lang/String;[BJ)V", kv_put as *mut c_void),
        method(
            "nKvDelete",
            "(Ljava/lang/String;)V",
            kv_delete as *mut c_void,
        ),
        method(
            "nPublish",
            "(Ljava/lang/String;[B)V",
            publish as *mut c_void,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_have_the_python_runtime_s_codes() {
        assert_eq!(code(&HostError::Unavailable), "unavailable");
        assert_eq!(code(&HostError::TooLarge), "too_large");
        assert_eq!(code(&HostError::Other(-9)), "status -9");
    }

    #[test]
    fn a_context_is_current_only_while_entered() {
        let ctx = Context::new("f", "i");
        assert!(CURRENT.with(Cell::get).is_null());
        {
            let _entered = enter(&ctx);
            assert!(!CURRENT.with(Cell::get).is_null());
        }
        assert!(CURRENT.with(Cell::get).is_null());
    }
}
