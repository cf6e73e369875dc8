//! Confines a worker process that serves exactly one function: its limits and its sandbox, applied once before the function's first library is loaded, and the threads that load libraries inside the sandbox.

use crate::limits::{self, MemoryMechanism, Plan};
use crate::loader::{LoadError, Loaded};
use crate::sandbox::{self, Mode};
use squall_broker::fleet::Confinement;
use squall_broker::FunctionRecord;
use std::path::PathBuf;
use std::sync::Mutex;

/// How to confine the process, from its flags.
#[derive(Debug, Clone)]
pub struct ConfineConfig {
    pub sandbox: Mode,
    /// The process's `--max-threads`: the most call threads the function gets.
    pub max_threads: usize,
    /// The process's private temporary folder (`TMPDIR`), the one place its function writes.
    pub tmp_dir: PathBuf,
}

/// The confinement of this process: nothing until the first load, then what was applied.
pub struct Confiner {
    config: ConfineConfig,
    artifacts: PathBuf,
    applied: Mutex<Option<Applied>>,
}

#[derive(Debug, Clone)]
struct Applied {
    plan: Plan,
    report: Confinement,
}

impl Confiner {
    pub fn new(config: ConfineConfig, artifacts: PathBuf) -> Confiner {
        Confiner {
            config,
            artifacts,
            applied: Mutex::new(None),
        }
    }

    /// The call threads of a function with `concurrency` in this process.
    pub fn call_threads(&self, concurrency: u32) -> usize {
        limits::call_threads(concurrency, self.config.max_threads)
    }

    /// What is in force, once applied (for the heartbeat).
    pub fn report(&self) -> Option<Confinement> {
        let applied = self.applied.lock().expect("confiner lock");
        applied.as_ref().map(|a| a.report.clone())
    }

    /// The `memory_mb` in force, once applied.
    pub fn memory_mb(&self) -> Option<u32> {
        let applied = self.applied.lock().expect("confiner lock");
        applied.as_ref().map(|a| a.plan.memory_mb)
    }

    /// Applies the limits and the sandbox the first time a library of `record` is about to
    /// load; later calls do nothing. An `Err` means the process must not run the function.
    pub fn before_load(&self, record: &FunctionRecord) -> Result<(), String> {
        let mut applied = self.applied.lock().expect("confiner lock");
        if applied.is_some() {
            return Ok(());
        }
        let baseline = limits::data_size().unwrap_or(0);
        let plan = limits::plan(
            record.memory_mb,
            baseline,
            self.call_threads(record.concurrency),
        );
        let mechanism = limits::apply(&plan).map_err(|e| e.to_string())?;
        let features = sandbox::apply(
            self.config.sandbox,
            &sandbox::Paths {
                artifacts: self.artifacts.clone(),
                tmp: self.config.tmp_dir.clone(),
            },
        )?;
        let report = confinement_report(&plan, mechanism, self.config.sandbox, features);
        log_report(&record.name, &report);
        *applied = Some(Applied { plan, report });
        Ok(())
    }
}

/// The report of what a process applied.
pub fn confinement_report(
    plan: &Plan,
    mechanism: MemoryMechanism,
    mode: Mode,
    features: Vec<sandbox::Feature>,
) -> Confinement {
    Confinement {
        memory_mb: plan.memory_mb,
        memory_via: mechanism.as_str().to_string(),
        data_limit_bytes: plan.data_bytes,
        open_files: plan.open_files,
        call_threads: plan.call_threads as u32,
        sandbox: mode.as_str().to_string(),
        features,
    }
}

fn log_report(function: &str, report: &Confinement) {
    let features: Vec<String> = report
        .features
        .iter()
        .map(|f| {
            let state = if f.active { "on" } else { "off" };
            format!("{} {state} ({})", f.name, f.detail)
        })
        .collect();
    tracing::info!(
        message = "process confined to one function",
        function,
        memory_mb = report.memory_mb,
        memory_via = %report.memory_via,
        data_limit_bytes = report.data_limit_bytes,
        open_files = report.open_files,
        call_threads = report.call_threads,
        sandbox = %report.sandbox,
        features = %features.join("; "),
    );
}

/// Loads the library at `path` on a thread of its own inside the sandbox (the function's
/// `squall_init` runs there), so that no thread the worker keeps using is confined.
pub async fn load_confined(
    path: PathBuf,
    bundle: Option<(squall_bundle::Runtime, PathBuf)>,
) -> Result<Result<Loaded, LoadError>, String> {
    let (done, loaded) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let outcome = match sandbox::enter_thread() {
                Ok(()) => Ok(Loaded::load_target(&path, &bundle)),
                Err(error) => Err(error),
            };
            let _ = done.send(outcome);
        })
        .map_err(|e| format!("cannot start the loading thread: {e}"))?;
    loaded
        .await
        .map_err(|_| "the library loader panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_carries_the_plan_the_mechanism_and_the_features() {
        let plan = limits::plan(128, 0, 8);
        let report = confinement_report(
            &plan,
            MemoryMechanism::Rlimit,
            Mode::Auto,
            vec![sandbox::Feature {
                name: "landlock".into(),
                active: false,
                detail: "not built into this kernel".into(),
            }],
        );
        assert_eq!(report.memory_mb, 128);
        assert_eq!(report.memory_via, "rlimit");
        assert_eq!(report.call_threads, 8);
        assert_eq!(report.sandbox, "auto");
        assert_eq!(report.data_limit_bytes, plan.data_bytes);
        assert!(!report.features[0].active);
    }
}
