//! Deploy-time tools over a bundle: the check that runs none of its code, and its own tests.

use std::path::Path;

use crate::bundle;
use crate::engine::Engine;
use crate::error::RuntimeError;

/// What a test run found (the SDK's runtime report): 0 all passed, 1 a test failed, 2 the
/// tests could not run, and the text.
pub use squall_sdk::runtime::TestReport;

/// Validates a bundle without running its code: the manifest, the jars open, the handler class
/// exists in them, implements `squall.Handler` or `squall.JsonHandler`, is concrete and has a
/// constructor without arguments (no static initialiser runs).
///
/// The error lists the problems, one per line, as `FILE: message` (FILE relative to the bundle
/// root).
pub fn check(dir: &Path) -> Result<(), String> {
    let handler = bundle::read_manifest(dir).map_err(|error| error.to_string())?;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let class_path = bundle::class_path(&dir).map_err(|error| error.to_string())?;
    let engine = Engine::get().map_err(|error| error.to_string())?;
    let problems = engine
        .check(&dir, &class_path, &handler)
        .map_err(|error| RuntimeError::Internal(error).to_string())?;
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("\n")),
    }
}

/// Runs the bundle's tests: every class in its jars (and `classes/`) whose simple name ends in
/// `Test`, each public static method without arguments whose name starts with `test`, in name
/// order, with assertions enabled. Tests build their context with `squall.TestContext`.
pub fn run_tests(dir: &Path) -> TestReport {
    let could_not_run = |text: String| TestReport { status: 2, text };
    if let Err(error) = bundle::read_manifest(dir) {
        return could_not_run(format!("{error}\n"));
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let class_path = match bundle::class_path(&dir) {
        Ok(class_path) => class_path,
        Err(error) => return could_not_run(format!("{error}\n")),
    };
    let engine = match Engine::get() {
        Ok(engine) => engine,
        Err(error) => return could_not_run(format!("{error}\n")),
    };
    match engine.run_tests(&class_path) {
        Ok(outcome) => TestReport {
            status: outcome.status,
            text: String::from_utf8_lossy(&outcome.body).into_owned(),
        },
        Err(error) => could_not_run(format!("{}\n", RuntimeError::Internal(error))),
    }
}
