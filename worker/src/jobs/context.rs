//! What the job path shares: the parts of the worker's state that pulling and running jobs use
//! (`Jobs`), and what one function's pull loop shares with its jobs (`Serving`).

use crate::cancel::Cancellations;
use crate::host::HostServices;
use crate::jobs::executor::Executor;
use crate::metrics::{FunctionMetrics, Metrics};
use crate::state::{Functions, InFlight, Lifecycle};
use squall_broker::Topology;
use std::sync::Arc;
use std::time::Duration;

/// The worker's state as the job path sees it; the registry watch fills `functions`, the
/// roof owns the rest.
pub struct Jobs {
    /// Where attempts' outcomes go.
    pub outlet: Outlet,
    pub functions: Functions,
    pub lifecycle: Lifecycle,
    /// Held by every job from its pull to its settlement.
    pub in_flight: InFlight,
    /// This process's metrics.
    pub metrics: Arc<Metrics>,
    /// Functions' state and events (the ABI's host services).
    pub host: Arc<HostServices>,
    /// The invocations cancelled while queued or running.
    pub cancels: Arc<Cancellations>,
    /// Bytes of log lines kept per invocation.
    pub log_capture_bytes: usize,
    /// The limits and sandbox of a process that serves one function.
    pub confiner: Option<Arc<crate::confine::Confiner>>,
}

impl Jobs {
    /// The call threads (and jobs at once) of a function with `concurrency` in this process.
    pub fn call_threads(&self, concurrency: u32) -> usize {
        match &self.confiner {
            Some(confiner) => confiner.call_threads(concurrency),
            None => concurrency as usize,
        }
    }
}

/// Where an attempt's outcome goes: the topology's streams, under this worker's name; all that
/// settling a job uses.
pub struct Outlet {
    pub topology: Topology,
    /// This process's name in results: `<host>-<pid>`.
    pub worker_id: String,
    /// Inputs and outputs above the inline limit.
    pub payloads: crate::payloads::Payloads,
}

/// What a function's pull loop shares with its jobs.
pub struct Serving {
    /// The function's call threads, at most its concurrency.
    pub executor: Executor,
    /// How often a running job's progress is acknowledged.
    pub progress_every: Duration,
    /// The function's metric series.
    pub metrics: FunctionMetrics,
}
