//! Squall's Python runtime: an ABI v1 function library that embeds CPython 3.11 and runs a
//! bundle's `handler(event, context)`, Lambda's Python model.
//!
//! Besides ABI v1 (`squall_abi_version`, `squall_invoke`, `squall_free`, from the SDK's
//! export macro) it exports the runtime symbols `squall_runtime_open`, `squall_runtime_check`
//! and `squall_runtime_test`. One interpreter serves the whole process, whichever copy of this
//! library started it; each opened bundle's handler module is imported under a name of its own.
//! The Rust API under the symbols ([`Function`], [`check`], [`run_tests`]) is what the tests
//! use.
//!
//! The Python half lives in `py/`: `squall.py` (the `squall` module users import, also usable
//! from plain CPython) and `squall_runtime.py` (calls, checks and test runs).

#![deny(clippy::undocumented_unsafe_blocks)]

mod bundle;
mod engine;
mod error;
mod function;
mod handle;
mod tools;

pub use bundle::{parse_manifest, read_manifest, BundleError, Handler, MANIFEST_FILE, RUNTIME};
pub use engine::SQUALL_PY;
pub use error::RuntimeError;
pub use function::Function;
pub use tools::{check, run_tests, TestReport};

squall_sdk::export_runtime! {
    language: "Python",
    function: crate::function::Function,
    check: crate::tools::check,
    test: crate::tools::run_tests,
}
