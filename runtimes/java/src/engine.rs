//! This copy's Java half: the SDK classes defined in a class loader of this copy's own, the
//! native methods bound to this copy's functions, and the calls into `squall.Engine`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jni::objects::{
    GlobalRef, JByteArray, JClass, JFieldID, JObject, JObjectArray, JStaticMethodID, JString,
    JThrowable, JValueOwned,
};
use jni::signature::{Primitive, ReturnType};
use jni::sys::jvalue;
use jni::{JNIEnv, JavaVM};

use crate::error::RuntimeError;
use crate::{jvm, natives};

include!(concat!(env!("OUT_DIR"), "/sdk_classes.rs"));

/// The folder of the SDK's compiled classes in the build tree, for compiling test bundles
/// against (`javac -cp SDK_CLASSES_DIR`).
pub const SDK_CLASSES_DIR: &str = env!("SQUALL_JAVA_SDK_CLASSES");
/// The SDK as a jar, for compiling functions against (`squall init` can write it out).
pub const SDK_JAR: &[u8] = include_bytes!(env!("SQUALL_JAVA_SDK_JAR"));

const ENGINE_CLASS: &str = "squall/Engine";
const OUTCOME: &str = "Lsquall/Engine$Outcome;";
const BUNDLE: &str = "Lsquall/Engine$Bundle;";

/// What `squall.Engine` answered: 0 ok, 1 error, 2 retry; the output or the message.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    pub body: Vec<u8>,
    pub after_ms: u64,
}

/// The JVM and this copy's SDK classes, with the IDs of what the runtime calls.
pub struct Engine {
    vm: JavaVM,
    engine: GlobalRef,
    open: JStaticMethodID,
    invoke: JStaticMethodID,
    check: JStaticMethodID,
    run_tests: JStaticMethodID,
    trace: JStaticMethodID,
    status: JFieldID,
    body: JFieldID,
    after_ms: JFieldID,
}

/// A JNI failure, with the Java exception it left (already cleared) when there was one.
fn failure(env: &mut JNIEnv<'_>, error: jni::errors::Error, engine: Option<&Engine>) -> String {
    match pending(env) {
        Some(throwable) => describe(env, &throwable, engine),
        None => error.to_string(),
    }
}

/// Takes the pending Java exception, if any.
fn pending<'local>(env: &mut JNIEnv<'local>) -> Option<JThrowable<'local>> {
    if !env.exception_check().unwrap_or(false) {
        return None;
    }
    let throwable = env.exception_occurred().ok();
    let _ = env.exception_clear();
    throwable.filter(|throwable| !throwable.is_null())
}

/// A throwable as its stack trace (through `Engine.trace` once it exists) or `toString()`.
fn describe(env: &mut JNIEnv<'_>, throwable: &JThrowable<'_>, engine: Option<&Engine>) -> String {
    let text = match engine {
        // SAFETY: `trace` is Engine.trace(Throwable): String.
        Some(engine) => unsafe {
            env.call_static_method_unchecked(
                engine.engine_class(),
                engine.trace,
                ReturnType::Object,
                &[jvalue {
                    l: throwable.as_raw(),
                }],
            )
        },
        None => Err(jni::errors::Error::JavaException),
    };
    let text = text.or_else(|_| {
        let _ = env.exception_clear();
        env.call_method(throwable, "toString", "()Ljava/lang/String;", &[])
    });
    let _ = env.exception_clear();
    text.and_then(|value| value.l())
        .and_then(|object| string(env, object))
        .unwrap_or_else(|_| "a Java exception that cannot be described".to_owned())
}

fn string(env: &mut JNIEnv<'_>, object: JObject<'_>) -> jni::errors::Result<String> {
    if object.is_null() {
        return Ok(String::new());
    }
    let text = JString::from(object);
    let value: String = env.get_string(&text)?.into();
    Ok(value)
}

fn string_array<'local>(
    env: &mut JNIEnv<'local>,
    items: &[String],
) -> jni::errors::Result<JObjectArray<'local>> {
    let array = env.new_object_array(items.len() as i32, "java/lang/String", JObject::null())?;
    for (index, item) in items.iter().enumerate() {
        let text = env.new_string(item)?;
        env.set_object_array_element(&array, index as i32, &text)?;
        env.delete_local_ref(text)?;
    }
    Ok(array)
}

/// Runs `body` in a local reference frame, so that its local references go when it returns.
fn framed<'local, T, E>(
    env: &mut JNIEnv<'local>,
    capacity: i32,
    frame_failed: impl FnOnce(String) -> E,
    body: impl FnOnce(&mut JNIEnv<'_>) -> Result<T, E>,
) -> Result<T, E> {
    match env.with_local_frame(capacity, |env| Ok::<_, jni::errors::Error>(body(env))) {
        Ok(result) => result,
        Err(error) => Err(frame_failed(error.to_string())),
    }
}

fn paths(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect()
}

impl Engine {
    /// The JVM and this copy's SDK, started and prepared on first use in this copy.
    pub fn get() -> Result<&'static Engine, RuntimeError> {
        static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
        ENGINE
            .get_or_init(start)
            .as_ref()
            .map_err(|error| RuntimeError::Start(error.clone()))
    }

    /// The calling thread's JNI environment; the thread is attached once and stays attached
    /// until it exits (attaching per call would cost more than a small call).
    fn env(&self) -> Result<JNIEnv<'_>, String> {
        self.vm
            .attach_current_thread_permanently()
            .map_err(|error| format!("cannot attach this thread to the JVM: {error}"))
    }

    fn engine_class(&self) -> &JClass<'static> {
        <&JClass>::from(self.engine.as_obj())
    }

    /// Loads a bundle's handler class (its static initialiser runs) and makes its instance.
    pub fn open(&self, class_path: &[PathBuf], handler: &str) -> Result<GlobalRef, RuntimeError> {
        let mut env = self.env().map_err(RuntimeError::Start)?;
        framed(&mut env, 8, RuntimeError::Internal, |env| {
            let opened = (|| {
                let class_path = string_array(env, &paths(class_path))?;
                let handler = env.new_string(handler)?;
                // SAFETY: `open` is Engine.open(String[], String): Engine$Bundle.
                let bundle = unsafe {
                    env.call_static_method_unchecked(
                        self.engine_class(),
                        self.open,
                        ReturnType::Object,
                        &[
                            jvalue {
                                l: class_path.as_raw(),
                            },
                            jvalue {
                                l: handler.as_raw(),
                            },
                        ],
                    )
                }?
                .l()?;
                env.new_global_ref(bundle)
            })();
            opened.map_err(|error| match pending(env) {
                Some(throwable) => {
                    let refused = env
                        .is_instance_of(&throwable, "java/lang/IllegalArgumentException")
                        .unwrap_or(false);
                    let message = if refused {
                        env.call_method(&throwable, "getMessage", "()Ljava/lang/String;", &[])
                            .and_then(|value| value.l())
                            .and_then(|object| string(env, object))
                            .ok()
                    } else {
                        None
                    };
                    let _ = env.exception_clear();
                    RuntimeError::Load(
                        message.unwrap_or_else(|| describe(env, &throwable, Some(self))),
                    )
                }
                None => RuntimeError::Internal(error.to_string()),
            })
        })
    }

    /// Runs one call of an opened bundle on this thread.
    pub fn invoke(&self, bundle: &GlobalRef, input: &[u8], web: bool) -> Result<Outcome, String> {
        let mut env = self.env()?;
        framed(&mut env, 4, String::from, |env| {
            let called = (|| {
                let input = env.byte_array_from_slice(input)?;
                // SAFETY: `invoke` is Engine.invoke(Engine$Bundle, byte[], boolean): Engine$Outcome.
                let outcome = unsafe {
                    env.call_static_method_unchecked(
                        self.engine_class(),
                        self.invoke,
                        ReturnType::Object,
                        &[
                            jvalue {
                                l: bundle.as_obj().as_raw(),
                            },
                            jvalue { l: input.as_raw() },
                            jvalue { z: u8::from(web) },
                        ],
                    )
                }?
                .l()?;
                self.outcome(env, &outcome)
            })();
            called.map_err(|error| failure(env, error, Some(self)))
        })
    }

    fn outcome(&self, env: &mut JNIEnv<'_>, outcome: &JObject<'_>) -> jni::errors::Result<Outcome> {
        let status = env
            .get_field_unchecked(outcome, self.status, ReturnType::Primitive(Primitive::Int))
            .and_then(JValueOwned::i)?;
        let body = env
            .get_field_unchecked(outcome, self.body, ReturnType::Array)
            .and_then(JValueOwned::l)?;
        let body = if body.is_null() {
            Vec::new()
        } else {
            env.convert_byte_array(JByteArray::from(body))?
        };
        let after_ms = env
            .get_field_unchecked(
                outcome,
                self.after_ms,
                ReturnType::Primitive(Primitive::Long),
            )
            .and_then(JValueOwned::j)?;
        Ok(Outcome {
            status,
            body,
            after_ms: u64::try_from(after_ms).unwrap_or(0),
        })
    }

    /// Validates a bundle's classes without running them: the problems as `FILE: message`.
    pub fn check(
        &self,
        root: &Path,
        class_path: &[PathBuf],
        handler: &str,
    ) -> Result<Vec<String>, String> {
        let mut env = self.env()?;
        framed(&mut env, 8, String::from, |env| {
            let checked = (|| {
                let root = env.new_string(root.to_string_lossy())?;
                let class_path = string_array(env, &paths(class_path))?;
                let handler = env.new_string(handler)?;
                // SAFETY: `check` is Engine.check(String, String[], String): String[].
                let problems = unsafe {
                    env.call_static_method_unchecked(
                        self.engine_class(),
                        self.check,
                        ReturnType::Array,
                        &[
                            jvalue { l: root.as_raw() },
                            jvalue {
                                l: class_path.as_raw(),
                            },
                            jvalue {
                                l: handler.as_raw(),
                            },
                        ],
                    )
                }?
                .l()?;
                let problems = JObjectArray::from(problems);
                let count = env.get_array_length(&problems)?;
                let mut lines = Vec::new();
                for index in 0..count {
                    let line = env.get_object_array_element(&problems, index)?;
                    lines.push(string(env, line)?);
                }
                Ok(lines)
            })();
            checked.map_err(|error| failure(env, error, Some(self)))
        })
    }

    /// Runs a bundle's test classes.
    pub fn run_tests(&self, class_path: &[PathBuf]) -> Result<Outcome, String> {
        let mut env = self.env()?;
        framed(&mut env, 4, String::from, |env| {
            let ran = (|| {
                let class_path = string_array(env, &paths(class_path))?;
                // SAFETY: `run_tests` is Engine.runTests(String[]): Engine$Outcome.
                let outcome = unsafe {
                    env.call_static_method_unchecked(
                        self.engine_class(),
                        self.run_tests,
                        ReturnType::Object,
                        &[jvalue {
                            l: class_path.as_raw(),
                        }],
                    )
                }?
                .l()?;
                self.outcome(env, &outcome)
            })();
            ran.map_err(|error| failure(env, error, Some(self)))
        })
    }
}

fn start() -> Result<Engine, String> {
    let vm = jvm::start()?;
    let prepared = {
        let mut env = vm
            .attach_current_thread_permanently()
            .map_err(|error| format!("cannot attach to the JVM: {error}"))?;
        let prepared = prepare(&mut env);
        prepared.map_err(|error| failure(&mut env, error, None))?
    };
    let (engine, open, invoke, check, run_tests, trace, status, body, after_ms) = prepared;
    Ok(Engine {
        vm,
        engine,
        open,
        invoke,
        check,
        run_tests,
        trace,
        status,
        body,
        after_ms,
    })
}

type Prepared = (
    GlobalRef,
    JStaticMethodID,
    JStaticMethodID,
    JStaticMethodID,
    JStaticMethodID,
    JStaticMethodID,
    JFieldID,
    JFieldID,
    JFieldID,
);

/// Defines this copy's SDK classes, binds the native methods and installs the process-wide
/// pieces (once per process, whichever copy comes first).
fn prepare(env: &mut JNIEnv<'_>) -> jni::errors::Result<Prepared> {
    let platform = env
        .call_static_method(
            "java/lang/ClassLoader",
            "getPlatformClassLoader",
            "()Ljava/lang/ClassLoader;",
            &[],
        )?
        .l()?;
    let urls = env.new_object_array(0, "java/net/URL", JObject::null())?;
    // A loader whose parent is the platform loader: the SDK sees the JDK and nothing from the
    // JVM's class path, and bundle loaders made over it see the SDK and the JDK.
    let loader = env.new_object(
        "java/net/URLClassLoader",
        "([Ljava/net/URL;Ljava/lang/ClassLoader;)V",
        &[(&urls).into(), (&platform).into()],
    )?;
    let classes = define_sdk(env, &loader)?;
    let class = |name: &str| {
        classes
            .iter()
            .find(|(defined, _)| *defined == name)
            .map(|(_, class)| class)
            .ok_or(jni::errors::Error::NullPtr("an SDK class is missing"))
    };
    let call_context = <&JClass>::from(class("squall/CallContext")?.as_obj());
    env.register_native_methods(call_context, &natives::methods())?;
    let host_exception = class("squall/HostException")?.clone();
    let host_exception_new = env.get_method_id(
        <&JClass>::from(host_exception.as_obj()),
        "<init>",
        "(Ljava/lang/String;Ljava/lang/String;)V",
    )?;
    natives::set_host_exception(host_exception, host_exception_new);

    let engine = class(ENGINE_CLASS)?.clone();
    let engine_class = <&JClass>::from(engine.as_obj());
    let open = env.get_static_method_id(
        engine_class,
        "open",
        format!("([Ljava/lang/String;Ljava/lang/String;){BUNDLE}"),
    )?;
    let invoke =
        env.get_static_method_id(engine_class, "invoke", format!("({BUNDLE}[BZ){OUTCOME}"))?;
    let check = env.get_static_method_id(
        engine_class,
        "check",
        "(Ljava/lang/String;[Ljava/lang/String;Ljava/lang/String;)[Ljava/lang/String;",
    )?;
    let run_tests = env.get_static_method_id(
        engine_class,
        "runTests",
        format!("([Ljava/lang/String;){OUTCOME}"),
    )?;
    let trace = env.get_static_method_id(
        engine_class,
        "trace",
        "(Ljava/lang/Throwable;)Ljava/lang/String;",
    )?;
    let outcome = <&JClass>::from(class("squall/Engine$Outcome")?.as_obj());
    let status = env.get_field_id(outcome, "status", "I")?;
    let body = env.get_field_id(outcome, "body", "[B")?;
    let after_ms = env.get_field_id(outcome, "afterMs", "J")?;
    jvm::without_stderr(|| env.call_static_method(engine_class, "install", "()V", &[]))?;
    Ok((
        engine, open, invoke, check, run_tests, trace, status, body, after_ms,
    ))
}

/// Defines every SDK class in `loader`. A class whose superclass or interfaces are not defined
/// yet fails with `NoClassDefFoundError`; it is tried again once the others are in.
fn define_sdk(
    env: &mut JNIEnv<'_>,
    loader: &JObject<'_>,
) -> jni::errors::Result<Vec<(&'static str, GlobalRef)>> {
    let mut defined = Vec::new();
    let mut remaining: Vec<&(&str, &[u8])> = SDK_CLASSES.iter().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        let mut last_error = None;
        let mut left = Vec::new();
        for entry in remaining {
            let (name, bytes) = *entry;
            match env.define_class(name, loader, bytes) {
                Ok(class) => {
                    defined.push((name, env.new_global_ref(&class)?));
                    env.delete_local_ref(class)?;
                }
                Err(error) => {
                    if let Some(throwable) = pending(env) {
                        last_error = Some(describe(env, &throwable, None));
                    } else {
                        last_error = Some(error.to_string());
                    }
                    left.push(entry);
                }
            }
        }
        if left.len() == before {
            let message = last_error.unwrap_or_default();
            env.throw_new(
                "java/lang/LinkageError",
                format!("cannot define the Java SDK: {message}"),
            )?;
            return Err(jni::errors::Error::JavaException);
        }
        remaining = left;
    }
    Ok(defined)
}
