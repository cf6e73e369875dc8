//! Deploy-time tools over a bundle: the check that runs none of its code, and its own tests.

use std::path::Path;

use pyo3::prelude::*;

use crate::bundle;
use crate::engine::{describe, Engine};
use crate::error::RuntimeError;

/// What a test run found (the SDK's runtime report): 0 all passed, 1 a test failed, 2 the
/// tests could not run, and the text.
pub use squall_sdk::runtime::TestReport;

/// Validates a bundle without running its code: the manifest, every `.py` file outside
/// `site-packages/` compiles, and the handler module defines the handler at top level.
///
/// The error lists the problems, one per line, as `FILE:LINE: message` (FILE relative to the
/// bundle root) or `FILE: message` when no line applies.
pub fn check(dir: &Path) -> Result<(), String> {
    let handler = bundle::read_manifest(dir).map_err(|error| error.to_string())?;
    let engine = Engine::get().map_err(|error| error.to_string())?;
    Python::attach(|py| {
        let problems = engine
            .runtime(py)
            .call_method1(
                "check",
                (
                    dir.to_string_lossy().as_ref(),
                    handler.module.as_str(),
                    handler.function.as_str(),
                ),
            )
            .and_then(|problems| problems.extract::<Vec<String>>())
            .map_err(|error| RuntimeError::Internal(describe(py, &error)).to_string())?;
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("\n")),
        }
    })
}

/// Runs the bundle's `test_*.py` files (outside `site-packages/`) with unittest discovery in
/// this process's interpreter; tests build their context with `squall.testing.Context`.
pub fn run_tests(dir: &Path) -> TestReport {
    let could_not_run = |text: String| TestReport { status: 2, text };
    if let Err(error) = bundle::read_manifest(dir) {
        return could_not_run(format!("{error}\n"));
    }
    let engine = match Engine::get() {
        Ok(engine) => engine,
        Err(error) => return could_not_run(format!("{error}\n")),
    };
    Python::attach(|py| {
        let ran = engine
            .runtime(py)
            .call_method1("run_tests", (dir.to_string_lossy().as_ref(),))
            .and_then(|outcome| outcome.extract::<(i32, String)>());
        match ran {
            Ok((status, text)) => TestReport { status, text },
            Err(error) => could_not_run(RuntimeError::Internal(describe(py, &error)).to_string()),
        }
    })
}
