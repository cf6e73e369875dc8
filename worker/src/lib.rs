//! The Squall worker: watches the registry, loads function libraries and runs their jobs.
//!
//! This file is the roof: it declares the modules, connects, builds the shared state and
//! spawns the registry watch, the heartbeat and the metrics; no module imports anything from
//! it. Below it, `registry` feeds the functions table and starts one pull loop per function
//! (`jobs/`), which runs each attempt; `state` is the shared state at the bottom.
//!
//! Architecture invariant: only `loader` touches `libloading` or `unsafe` (besides the one
//! `pre_exec` hook in `process` that ties child processes to their parent, and the system
//! calls of `limits` and `sandbox` that confine a single-function process); everything else
//! here is plain async code around it.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod aggregate;
pub mod artifacts;
pub mod cancel;
pub mod confine;
pub mod credentials;
pub mod golang;
pub mod heartbeat;
pub mod host;
pub mod jobs;
pub mod limits;
pub mod loader;
pub mod metrics;
pub mod payloads;
pub mod process;
pub mod registry;
pub mod sandbox;
pub mod scale;
pub mod state;
pub mod stream;

pub use crate::heartbeat::host_and_pid;
pub use crate::state::FunctionState;

use crate::artifacts::ArtifactCache;
use crate::jobs::context::{Jobs, Outlet};
use crate::registry::Registry;
use crate::state::{Functions, InFlight, Lifecycle};
use squall_broker::Topology;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Everything a worker needs to run; built by `main` from flags and environment.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats_url: String,
    /// NATS credentials and TLS.
    pub nats_auth: squall_broker::connect::NatsAuth,
    /// Where fetched artifacts are cached, one file per version.
    pub cache_dir: PathBuf,
    /// The folder of the language runtimes' libraries (`--runtimes`).
    pub runtimes_dir: PathBuf,
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
    /// Limits and sandbox, for a process that serves exactly one function; `None` keeps a
    /// process as it is.
    pub confine: Option<confine::ConfineConfig>,
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
    let only = match config.functions.as_slice() {
        [function] => Some(function.clone()),
        _ => None,
    };
    let host =
        host::HostServices::start(&topology, config.host_call_timeout, cancels.clone(), only)
            .await
            .context("cannot open the functions' state bucket")?;
    let metrics = Arc::new(metrics::Metrics::new());
    let mut artifacts = ArtifactCache::new(config.cache_dir.clone());
    artifacts.metrics = Some(metrics.clone());
    artifacts.runtimes = config.runtimes_dir.clone();
    let confiner = config
        .confine
        .clone()
        .map(|confine| Arc::new(confine::Confiner::new(confine, config.cache_dir.clone())));
    artifacts.confiner = confiner.clone();
    let jobs = Arc::new(Jobs {
        functions: Functions::new(artifacts, topology.artifacts.clone()),
        outlet: Outlet {
            payloads: payloads::Payloads::new(
                topology.jetstream.clone(),
                topology.results.cached_info().config.max_message_size as i64,
            ),
            topology,
            worker_id: heartbeat::worker_id(),
        },
        lifecycle: Lifecycle::default(),
        in_flight: InFlight::default(),
        metrics,
        host,
        cancels,
        log_capture_bytes: config.log_capture_bytes,
        confiner: confiner.clone(),
    });
    let (topology, worker_id) = (&jobs.outlet.topology, &jobs.outlet.worker_id);
    if let Some(addr) = config.metrics_addr {
        let metrics = jobs.metrics.clone();
        metrics::serve(addr, move || metrics.render()).await?;
    }
    // The last report is sent after the jobs in flight settled, so the supervisor keeps them.
    let (report_stop, report_stopped) = watch::channel(false);
    let reporter = config.metrics_report.clone().map(|socket| {
        tokio::spawn(metrics::report(
            socket,
            jobs.metrics.clone(),
            report_stopped,
        ))
    });
    tracing::info!(message = "worker started", nats_url = %config.nats_url, worker = %worker_id);
    let heartbeat = tokio::spawn(heartbeat::beat(
        worker_id.clone(),
        config.functions.clone(),
        jobs.in_flight.clone(),
        topology.fleet.clone(),
        confiner,
    ));
    // The caller's shutdown request becomes the worker's own stop signal.
    let forward = {
        let jobs = jobs.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
            jobs.lifecycle.stop();
        })
    };
    let registry = Registry::new(jobs.clone(), config.functions.clone());
    let mut stop = jobs.lifecycle.stopping();
    loop {
        if *stop.borrow() {
            break;
        }
        match registry.watch().await {
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
    registry.stop_pulling();
    let grace = config.shutdown_grace;
    // A job that cannot reach the broker cannot be acknowledged either: it will be redelivered
    // whatever this process does, so without a broker there is nothing to wait for.
    let client = topology.jetstream.client();
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
        finished = tokio::time::timeout(grace, jobs.in_flight.drained()) => {
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
        let _ = topology
            .fleet
            .delete(squall_broker::fleet::worker_key(worker_id))
            .await;
        // Acks are plain publishes: make sure they left before the process ends.
        let _ = topology.jetstream.client().flush().await;
    };
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    if !connected || tokio::time::timeout(FAREWELL, farewell).await.is_err() {
        tracing::warn!(
            message = "the broker is unreachable; exiting without removing this worker's heartbeat"
        );
    }
    Ok(if jobs.lifecycle.recycling() {
        Exit::Recycle
    } else {
        Exit::Stopped
    })
}
