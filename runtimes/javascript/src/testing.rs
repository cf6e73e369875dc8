//! `squall_runtime_test`: runs the exported `test*` functions of a bundle's `*.test.mjs` files
//! with local contexts (`squall.testing.context()`), and reports pass or fail per test.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use rquickjs::{Function, Persistent};

use crate::bundle::module_files;
use crate::check::test_names;
use crate::engine::{CallError, Engine, Limits};
use crate::native::CallGuard;
use crate::Error;

/// How long one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    /// The test module, relative to the bundle root.
    pub file: String,
    /// The exported function's name; empty when the module itself failed to load.
    pub name: String,
    /// `None` when it passed, else the error ("Name: message").
    pub error: Option<String>,
    /// What the test logged.
    pub logs: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Every test's result, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestReport {
    /// The outcomes.
    pub outcomes: Vec<TestOutcome>,
}

impl TestReport {
    /// Whether every test passed.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|outcome| outcome.error.is_none())
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.outcomes.is_empty() {
            return writeln!(
                f,
                "no tests: add a *.test.mjs file exporting functions named test…"
            );
        }
        let mut file = "";
        for outcome in &self.outcomes {
            if outcome.file != file {
                file = &outcome.file;
                writeln!(f, "{file}")?;
            }
            let ms = outcome.elapsed.as_millis();
            match (&outcome.error, outcome.name.is_empty()) {
                (None, _) => writeln!(f, "  PASS {} ({ms} ms)", outcome.name)?,
                (Some(error), true) => writeln!(f, "  ERROR loading the module: {error}")?,
                (Some(error), false) => writeln!(f, "  FAIL {} ({ms} ms): {error}", outcome.name)?,
            }
            for line in &outcome.logs {
                for part in line.lines() {
                    writeln!(f, "      {part}")?;
                }
            }
        }
        let failed = self.outcomes.iter().filter(|o| o.error.is_some()).count();
        writeln!(
            f,
            "{} passed, {failed} failed",
            self.outcomes.len() - failed
        )
    }
}

/// The error text of a failed test, with the stack when there is one.
fn failure_text(error: CallError) -> String {
    error.with_stack()
}

/// Runs every `*.test.mjs` (and `*.test.js`) file under `dir`.
pub fn run_tests(dir: &Path, limits: Limits) -> Result<TestReport, Error> {
    let files: Vec<String> = module_files(dir)?
        .into_iter()
        .filter(|file| file.ends_with(".test.mjs") || file.ends_with(".test.js"))
        .collect();
    let mut report = TestReport::default();
    if files.is_empty() {
        return Ok(report);
    }
    let engine = Engine::new(dir, limits)?;
    for file in files {
        let source = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        let started = Instant::now();
        let loaded = engine.import(&file, |ctx, namespace| {
            let mut order = test_names(&file, &source);
            let keys: Vec<String> = namespace
                .keys::<String>()
                .filter_map(Result::ok)
                .filter(|key| key.starts_with("test"))
                .collect();
            order.retain(|name| keys.contains(name));
            for key in keys {
                if !order.contains(&key) {
                    order.push(key);
                }
            }
            order
                .into_iter()
                .filter_map(|name| {
                    let function: Function = namespace.get(name.as_str()).ok()?;
                    Some((name, Persistent::save(ctx, function)))
                })
                .collect::<Vec<_>>()
        });
        let tests = match loaded {
            Ok(tests) => tests,
            Err(error) => {
                report.outcomes.push(TestOutcome {
                    file: file.clone(),
                    name: String::new(),
                    error: Some(failure_text(error)),
                    logs: Vec::new(),
                    elapsed: started.elapsed(),
                });
                continue;
            }
        };
        for (name, function) in tests {
            let started = Instant::now();
            let call = CallGuard::local(TEST_TIMEOUT);
            let outcome = engine.call(&function, |_, _| Ok(Vec::new()), |_, _| Ok(()));
            let logs = call.take_logs();
            drop(call);
            report.outcomes.push(TestOutcome {
                file: file.clone(),
                name,
                error: outcome.err().map(failure_text),
                logs,
                elapsed: started.elapsed(),
            });
        }
    }
    Ok(report)
}
