//! What the phases share, at the bottom of the benchmark's modules: its settings, the section
//! titles of the report, the progress line, and the single-node phases' context (`Context`,
//! what every phase reads; `Server`, the benchmark's nats-server). It imports no phase, and
//! no phase imports the orchestration (`run`) above it.

use crate::drive::Nats;
use crate::measure::Driver;
use crate::procs::Environment;
use bytes::Bytes;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// Section titles of the report; their numbers order the printed tables.
pub const S1: &str = "1. bare reference: minimal async-nats pipeline";
pub const S2: &str = "2. Squall async throughput";
pub const S3: &str = "3. Squall sync latency over HTTP";
pub const S4: &str = "4. cold paths";
pub const S5: &str = "5. resources";
pub const S7: &str = "7. function state (host services)";
// Between 7 and 8 (the sections sort by name; 8 is the query index at scale).
pub const S7B: &str = "7b. large payloads (claim checks)";
pub const S9: &str = "9. language runtimes: Python and JavaScript beside native, and Celery";

/// Which parts of the benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Bare,
    Squall,
    /// HTTP batch submission (`POST …/batch`); skipped when the dispatcher has no such route.
    Batch,
    Cold,
    /// Scale-from-zero through a fleet supervisor with `--min 0`.
    Zero,
    /// Twenty functions busy at once against one, each side under a fleet supervisor running
    /// 20 worker processes.
    Many,
    /// The host services' `kv_get`, cached and not, beside a bare KV get.
    State,
    /// A 10 MiB echo through the payload buckets beside a bare object-store put and get.
    Payloads,
    /// Python and JavaScript noops beside the native one (sync overhead, worker CPU, async
    /// throughput, a new function's first result), then Celery with a no-op task (opt-in; it
    /// skips Celery in a smoke run or when it is not installed).
    Runtimes,
    /// Raw-NATS throughput on a three-node loopback cluster, R3 against R1 (opt-in: not in
    /// the default set; it starts clusters of its own).
    Cluster,
    /// The query index at scale: `--scale-n` synthetic results published into RESULTS, a
    /// fresh index catching up on them, and queries against it (opt-in; it runs last, and
    /// replaces the benchmark's dispatcher by the fresh one).
    Scale,
}

impl Phase {
    /// Whether the phase runs on the benchmark's single nats-server.
    pub fn single_node(self) -> bool {
        self != Phase::Cluster
    }
}

/// The benchmark's settings after `--smoke` and the defaults are applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub smoke: bool,
    pub runs: usize,
    /// Invocations per throughput measurement.
    pub n: usize,
    /// Requests per latency measurement.
    pub latency_n: usize,
    pub payload: usize,
    pub concurrency: u32,
    pub http_submitters: usize,
    pub clients: usize,
    pub phases: Vec<Phase>,
    pub json: PathBuf,
    pub markdown: Option<PathBuf>,
    pub artifact: Option<PathBuf>,
    pub keep: bool,
    /// `--open-broker`: brokers without users (the A/B of authentication's cost).
    pub open_broker: bool,
    pub label: Option<String>,
    /// Invocations per batch request.
    pub batch_lines: usize,
    /// The baseline to compare with; `None` means `bench/baseline.json` in the workspace.
    pub baseline: Option<PathBuf>,
    /// Also write the JSON report here, as the new baseline.
    pub write_baseline: Option<PathBuf>,
    /// Synthetic results of the scale phase.
    pub scale_n: usize,
}

impl Settings {
    /// Warm-up invocations before each throughput measurement.
    pub fn warmup(&self) -> usize {
        (self.n / 10).clamp(50, 2000)
    }

    /// Warm-up requests before each latency measurement.
    pub fn latency_warmup(&self) -> usize {
        (self.latency_n / 10).clamp(10, 200)
    }

    /// The longest one throughput measurement may take.
    pub fn limit(&self) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(self.n as u64 * 5)
    }

    pub fn runs_phase(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "label": self.label,
            "smoke": self.smoke,
            "runs": self.runs,
            "n": self.n,
            "latency_n": self.latency_n,
            "payload_bytes": self.payload,
            "concurrency": self.concurrency,
            "http_submitters": self.http_submitters,
            "clients": self.clients,
            "batch_lines": self.batch_lines,
            "scale_n": self.scale_n,
            "phases": self.phases.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
        })
    }
}

/// Prints a progress line to stderr, with the time since the benchmark `started`.
pub fn progress(started: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// What every single-node phase reads: the settings, where the binaries are, the run's
/// temporary folder, the payload and the function's library, and the clock.
pub struct Context {
    pub settings: Settings,
    pub env: Environment,
    pub dir: PathBuf,
    pub payload: Bytes,
    pub artifact: Vec<u8>,
    pub ticks_per_second: u64,
    pub started: Instant,
}

impl Context {
    /// Prints a progress line to stderr.
    pub fn progress(&self, what: &str) {
        progress(self.started, what);
    }

    /// What drives the single-node throughput measurements over `nats`.
    pub fn driver<'a>(&'a self, nats: &'a Nats) -> Driver<'a> {
        Driver {
            nats,
            payload: &self.payload,
            warmup: self.settings.warmup(),
            limit: self.settings.limit(),
            ticks_per_second: self.ticks_per_second,
        }
    }
}

/// The benchmark's single nats-server as the phases see it: its URL, its process and the
/// benchmark's own connection to it.
pub struct Server {
    pub url: String,
    pub pid: u32,
    pub nats: Nats,
}
