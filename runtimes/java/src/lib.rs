//! Squall's Java runtime: an ABI v1 function library that embeds a JVM (OpenJDK 17) through JNI
//! and runs a bundle's `squall.Handler` or `squall.JsonHandler`.
//!
//! Besides ABI v1 (`squall_abi_version`, `squall_invoke`, `squall_free`, from the SDK's export
//! macro) it exports the runtime symbols `squall_runtime_open`, `squall_runtime_check` and
//! `squall_runtime_test`. One JVM serves the whole process, whichever copy of this library
//! started it; each copy defines the Java SDK (package `squall`) in a class loader of its own, so
//! that the SDK's native methods are that copy's, and each opened bundle's classes load through a
//! `URLClassLoader` of their own over that. The Rust API under the symbols ([`Function`],
//! [`check`], [`run_tests`]) is what the tests use; [`java_home`] tells the worker which JDK the
//! runtime loads (to preload its `libjsig.so`).
//!
//! The Java half lives in `java/squall/`: the SDK users compile against (shipped as
//! [`SDK_JAR`]) and the runtime's internal classes (`Engine`, `CallContext`, `LogStream`,
//! `ExitGuard`).

#![deny(clippy::undocumented_unsafe_blocks)]

mod bundle;
mod engine;
mod error;
mod function;
mod jvm;
mod natives;
mod tools;

pub use bundle::{
    class_path, parse_manifest, read_manifest, BundleError, CLASSES_DIR, MANIFEST_FILE, RUNTIME,
};
pub use engine::{SDK_CLASSES_DIR, SDK_JAR};
pub use error::RuntimeError;
pub use function::Function;
pub use jvm::{
    java_home, java_home_from, jvm_options, libjsig, libjvm, DEFAULT_JAVA_HOME, ENV_JAVA_HOME,
    ENV_MAX_HEAP_MB, ENV_SQUALL_JAVA_HOME,
};
pub use tools::{check, run_tests, TestReport};

squall_sdk::export_runtime! {
    language: "Java",
    function: crate::function::Function,
    check: crate::tools::check,
    test: crate::tools::run_tests,
}
