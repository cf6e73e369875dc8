//! The Squall worker: watches the registry, loads function libraries and runs their jobs.
//!
//! Architecture invariant: only `loader` touches `libloading` or `unsafe` (besides the one
//! `pre_exec` hook in `process` that ties child processes to their parent); everything else
//! here is plain async code around it.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod aggregate;
pub mod artifacts;
pub mod cancel;
pub mod decide;
pub mod executor;
pub mod host;
pub mod job;
pub mod loader;
pub mod metrics;
pub mod process;
pub mod scale;

use crate::artifacts::ArtifactCache;
use async_nats::jetstream::kv;
use futures::StreamExt;
use squall_broker::{FunctionRecord, Topology};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// Everything a worker needs to run; built by `main` from flags and environment.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats_url: String,
    /// NATS credentials and TLS.
    pub nats_auth: squall_broker::connect::NatsAuth,
    /// Where fetched artifacts are cached, one file per version.
    pub cache_dir: PathBuf,
    /// Functions this worker serves; empty means all.
    pub functions: Vec<String>,
    /// Bytes of log lines kept per invocation.
    pub log_capture_bytes: usize,
    /// How long to wait for in-flight jobs at shutdown.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`); none by default.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The Unix socket of the fleet supervisor this worker reports its metrics to, if any.
    pub metrics_report: Option<PathBuf>,
    /// Longest one host-service call waits for the broker, within the invocation's deadline.
    pub host_call_timeout: Duration,
}

/// A deployed function as this worker knows it: its record and its loaded library, if loading worked.
pub struct FunctionState {
    pub record: FunctionRecord,
    pub spec: squall_broker::FunctionSpec,
    pub library: Result<Arc<loader::Loaded>, String>,
    /// The config JSON the function receives, with its secrets under `"secrets"`.
    pub call_config: String,
}

/// Shared state of a running worker.
pub struct Worker {
    pub config: WorkerConfig,
    /// This process's name in results: `<host>-<pid>`.
    pub id: String,
    pub topology: Topology,
    functions: Mutex<HashMap<String, Arc<FunctionState>>>,
    runners: Mutex<HashMap<String, JoinHandle<()>>>,
    artifacts: ArtifactCache,
    /// Turns true when the worker must stop pulling jobs: at shutdown, or to recycle itself.
    stop: watch::Sender<bool>,
    /// Set when a stuck function thread means this process must be replaced.
    recycle: AtomicBool,
    /// Permits held by in-flight jobs across all functions, to wait for them at shutdown.
    in_flight: Arc<Semaphore>,
    /// This process's metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Functions' state and events (the ABI's host services).
    pub host: Arc<host::HostServices>,
    /// The invocations cancelled while queued or running.
    pub cancels: Arc<cancel::Cancellations>,
}

const MAX_IN_FLIGHT: u32 = 1 << 20;

impl Worker {
    /// The current state of `function`, if this worker serves it.
    pub fn function(&self, name: &str) -> Option<Arc<FunctionState>> {
        self.functions
            .lock()
            .expect("functions lock")
            .get(name)
            .cloned()
    }

    /// The function's state for a job stamped with `version` (`sha256:<hex>`; none on plain
    /// NATS jobs): `current` when it is that version and loaded; otherwise that version's
    /// library, loaded once (a transient fetch failure is retried here). The current spec applies.
    pub async fn for_job(
        &self,
        current: Arc<FunctionState>,
        version: Option<&str>,
    ) -> Arc<FunctionState> {
        let sha = version
            .and_then(|v| v.strip_prefix("sha256:"))
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        let record = match sha {
            Some(sha) if sha != current.record.sha256 => {
                let mut record = current.record.clone();
                record.version = format!("sha256:{sha}");
                record.sha256 = sha.to_string();
                record
            }
            _ if current.library.is_ok() => return current,
            _ => current.record.clone(),
        };
        let library = self.artifacts.load(&self.topology.artifacts, &record).await;
        Arc::new(FunctionState {
            spec: current.spec.clone(),
            call_config: current.call_config.clone(),
            record,
            library,
        })
    }

    /// Asks the worker to stop taking jobs, let the others finish and exit to be restarted:
    /// a function thread is stuck past its timeout and cannot be killed.
    pub fn request_recycle(&self, reason: &str) {
        if !self.recycle.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                message = "recycling this worker: no new jobs; exiting after in-flight jobs finish",
                reason
            );
        }
        let _ = self.stop.send(true);
    }

    /// A receiver that turns true when the worker stops pulling jobs.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn serves(&self, name: &str) -> bool {
        self.config.functions.is_empty() || self.config.functions.iter().any(|f| f == name)
    }

    async fn apply_put(self: &Arc<Self>, value: &[u8]) {
        let record = match FunctionRecord::decode(value) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(message = "skipping unreadable registry record", %error);
                return;
            }
        };
        if !self.serves(&record.name) {
            return;
        }
        let library = self.artifacts.load(&self.topology.artifacts, &record).await;
        if let Err(error) = &library {
            tracing::warn!(message = "function failed to load; its jobs will fail with kind load",
                function = %record.name, version = %record.version, %error);
        } else {
            tracing::info!(message = "function ready", function = %record.name, version = %record.version);
        }
        let name = record.name.clone();
        let state = FunctionState {
            spec: record.spec(),
            call_config: record.call_config(),
            record,
            library,
        };
        let concurrency = state.spec.concurrency;
        let previous = self
            .functions
            .lock()
            .expect("functions lock")
            .insert(name.clone(), Arc::new(state))
            .map(|old| old.spec.concurrency);
        let mut runners = self.runners.lock().expect("runners lock");
        let running = runners.get(&name).is_some_and(|h| !h.is_finished());
        // The pull loop sizes itself from the spec's concurrency: restart it when that changes.
        let resized = previous.is_some_and(|p| p != concurrency);
        if resized {
            if let Some(handle) = runners.remove(&name) {
                handle.abort();
            }
        }
        if !running || resized {
            let worker = self.clone();
            let fname = name.clone();
            runners.insert(
                name,
                tokio::spawn(async move { job::serve_function(worker, fname).await }),
            );
        }
    }

    fn apply_delete(&self, name: &str) {
        self.functions.lock().expect("functions lock").remove(name);
        if let Some(handle) = self.runners.lock().expect("runners lock").remove(name) {
            handle.abort();
        }
        tracing::info!(message = "function removed", function = %name);
    }

    async fn watch_registry(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut entries = self.topology.registry.watch_with_history(">").await?;
        let mut shutdown = self.stop.subscribe();
        if *shutdown.borrow() {
            return Ok(());
        }
        loop {
            let entry = tokio::select! {
                entry = entries.next() => entry,
                _ = shutdown.changed() => return Ok(()),
            };
            let Some(entry) = entry else {
                anyhow::bail!("registry watch ended");
            };
            let entry = entry?;
            match entry.operation {
                kv::Operation::Put => self.apply_put(&entry.value).await,
                kv::Operation::Delete | kv::Operation::Purge => self.apply_delete(&entry.key),
            }
        }
    }
}

/// This machine's host name and this process's id.
pub fn host_and_pid() -> (String, u32) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    (host, std::process::id())
}

fn worker_id() -> String {
    let (host, pid) = host_and_pid();
    format!("{host}-{pid}")
}

/// Opens the topology, waiting for a dispatcher to create it if it does not exist yet.
async fn wait_for_topology(
    client: async_nats::Client,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Topology> {
    let mut warned = false;
    loop {
        match squall_broker::open_topology(client.clone()).await {
            Ok(topology) => return Ok(topology),
            Err(error) => {
                if !warned {
                    tracing::warn!(message = "waiting for a dispatcher to create the JetStream topology", error = %error);
                    warned = true;
                }
            }
        }
        if *shutdown.borrow() {
            anyhow::bail!("stopped before the JetStream topology existed");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How a worker run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// A function hung past its timeout; the process must be replaced.
    Recycle,
}

/// How long the broker must stay unreachable before a stopping worker gives up on its jobs.
const BROKER_GONE: Duration = Duration::from_millis(500);

/// How long a stopping worker tries to remove its heartbeat and flush its last acks.
const FAREWELL: Duration = Duration::from_secs(1);

/// The exit code that asks the supervisor to start a fresh worker at once.
pub const EXIT_RECYCLE: u8 = 75;

/// Connects, opens the topology and serves jobs until `shutdown` turns true; then stops
/// pulling, waits up to the grace period for in-flight jobs, and returns.
/// Tells the fleet bucket this process is alive and how busy it is, every few seconds.
async fn heartbeat(worker: Arc<Worker>) {
    use squall_broker::fleet::{encode, worker_key, WorkerBeat, HEARTBEAT_EVERY_MS};
    let key = worker_key(&worker.id);
    let (host, pid) = host_and_pid();
    let mut every = tokio::time::interval(Duration::from_millis(HEARTBEAT_EVERY_MS));
    loop {
        every.tick().await;
        let beat = WorkerBeat {
            id: worker.id.clone(),
            host: host.clone(),
            pid,
            functions: worker.config.functions.clone(),
            in_flight: MAX_IN_FLIGHT - worker.in_flight.available_permits() as u32,
            updated_at_ms: squall_broker::time::now_ms(),
        };
        if let Err(error) = worker.topology.fleet.put(&key, encode(&beat).into()).await {
            tracing::debug!(message = "cannot write the worker heartbeat", %error);
        }
    }
}

pub async fn run(config: WorkerConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<Exit> {
    use anyhow::Context as _;
    let client =
        squall_broker::connect::connect(&config.nats_auth, "squall-worker", &config.nats_url)
            .await?;
    let topology = wait_for_topology(client, &shutdown).await?;
    std::fs::create_dir_all(&config.cache_dir).with_context(|| {
        format!(
            "cannot create artifact cache folder {}",
            config.cache_dir.display()
        )
    })?;
    let keep_cancels = topology
        .cancels
        .status()
        .await
        .map(|status| status.max_age())
        .ok()
        .filter(|age| !age.is_zero())
        .unwrap_or(Duration::from_secs(24 * 3600));
    let (cancels, _follow_cancels) =
        cancel::Cancellations::start(topology.cancels.clone(), keep_cancels);
    let host = host::HostServices::start(&topology, config.host_call_timeout, cancels.clone())
        .await
        .context("cannot open the functions' state bucket")?;
    let metrics = Arc::new(metrics::Metrics::new());
    let mut artifacts = ArtifactCache::new(config.cache_dir.clone());
    artifacts.metrics = Some(metrics.clone());
    let worker = Arc::new(Worker {
        artifacts,
        id: worker_id(),
        config,
        topology,
        functions: Mutex::new(HashMap::new()),
        runners: Mutex::new(HashMap::new()),
        stop: watch::channel(false).0,
        recycle: AtomicBool::new(false),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)),
        metrics,
        host,
        cancels,
    });
    if let Some(addr) = worker.config.metrics_addr {
        let metrics = worker.metrics.clone();
        metrics::serve(addr, move || metrics.render()).await?;
    }
    // The last report is sent after the jobs in flight settled, so the supervisor keeps them.
    let (report_stop, report_stopped) = watch::channel(false);
    let reporter = worker.config.metrics_report.clone().map(|socket| {
        tokio::spawn(metrics::report(
            socket,
            worker.metrics.clone(),
            report_stopped,
        ))
    });
    tracing::info!(message = "worker started", nats_url = %worker.config.nats_url, worker = %worker.id);
    let heartbeat = tokio::spawn(heartbeat(worker.clone()));
    // The caller's shutdown request becomes the worker's own stop signal.
    let forward = {
        let worker = worker.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
            let _ = worker.stop.send(true);
        })
    };
    let mut stop = worker.stopping();
    loop {
        if *stop.borrow() {
            break;
        }
        match worker.watch_registry().await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(message = "registry watch failed; retrying", error = %error);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    forward.abort();
    // Stop pulling new jobs, then wait for the ones in flight.
    for (_, handle) in worker.runners.lock().expect("runners lock").drain() {
        handle.abort();
    }
    let grace = worker.config.shutdown_grace;
    // A job that cannot reach the broker cannot be acknowledged either: it will be redelivered
    // whatever this process does, so without a broker there is nothing to wait for.
    let client = worker.topology.jetstream.client();
    let broker_gone = async {
        let mut away_since: Option<tokio::time::Instant> = None;
        loop {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            match (connected, away_since) {
                (true, _) => away_since = None,
                (false, None) => away_since = Some(tokio::time::Instant::now()),
                (false, Some(at)) if at.elapsed() >= BROKER_GONE => return,
                (false, Some(_)) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        finished = tokio::time::timeout(grace, worker.in_flight.acquire_many(MAX_IN_FLIGHT)) => {
            match finished {
            Ok(_) => tracing::info!(message = "worker stopped; no job in flight"),
            Err(_) => tracing::warn!(
                message =
                    "in-flight jobs did not finish within the grace period; they will be redelivered",
                grace_ms = grace.as_millis() as u64
            ),
            }
        }
        _ = broker_gone => tracing::warn!(
            message = "stopping without the broker: jobs in flight will be redelivered"
        ),
    }
    heartbeat.abort();
    let _ = report_stop.send(true);
    if let Some(reporter) = reporter {
        let _ = tokio::time::timeout(Duration::from_secs(1), reporter).await;
    }
    // With the broker gone these would wait for it: give them a moment, not the grace again.
    let farewell = async {
        let _ = worker
            .topology
            .fleet
            .delete(squall_broker::fleet::worker_key(&worker.id))
            .await;
        // Acks are plain publishes: make sure they left before the process ends.
        let _ = worker.topology.jetstream.client().flush().await;
    };
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    if !connected || tokio::time::timeout(FAREWELL, farewell).await.is_err() {
        tracing::warn!(
            message = "the broker is unreachable; exiting without removing this worker's heartbeat"
        );
    }
    Ok(if worker.recycle.load(Ordering::SeqCst) {
        Exit::Recycle
    } else {
        Exit::Stopped
    })
}
