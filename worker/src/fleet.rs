//! The autoscaling fleet supervisor (`squall-worker fleet`): starts and stops worker processes
//! on this host from the backlog of the functions it serves, restarts crashed ones, and shares
//! the fleet's maximum with the supervisors on other hosts through the fleet bucket.
//!
//! Invariant: this supervisor never runs more workers (including ones still stopping) than
//! the allocation grants it; it takes slots before starting workers and gives them back only
//! after its workers exited.

use anyhow::Context as _;
use async_nats::jetstream::kv;
use futures::StreamExt as _;
use squall_broker::backoff::Doubling;
use squall_broker::fleet::{
    self, Allocation, Heartbeat, ALLOCATION_KEY, HEARTBEAT_EVERY_MS, HEARTBEAT_PREFIX,
};
use squall_broker::names::consumer_name;
use squall_broker::time::now_ms;
use squall_broker::topology::FLEET_HEARTBEAT_TTL;
use squall_broker::{FunctionRecord, Topology};
use squall_worker::metrics::Collector;
use squall_worker::scale::{self, Load, Policy};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What `squall-worker fleet` was asked to do.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub nats_url: String,
    /// NATS credentials and TLS; workers get them through their environment.
    pub nats_auth: squall_broker::connect::NatsAuth,
    pub data_dir: PathBuf,
    /// Functions served; empty means all.
    pub functions: Vec<String>,
    pub policy: Policy,
    /// How often the backlog is read and the decision taken.
    pub interval: Duration,
    /// Arguments every worker process gets besides its own data directory.
    pub worker_args: Vec<String>,
    pub grace_secs: u64,
    /// Where to serve the Prometheus metrics of every worker this supervisor runs, summed.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A worker process this supervisor started.
struct Worker {
    child: Child,
    slot: usize,
    started: Instant,
}

/// The supervisor's state between ticks.
struct Fleet {
    config: FleetConfig,
    id: String,
    host: String,
    topology: Topology,
    exe: PathBuf,
    running: Vec<Worker>,
    /// Workers asked to stop that have not exited yet: they still hold their slots.
    stopping: Vec<Worker>,
    granted: u32,
    below_since_ms: Option<u64>,
    desired: u32,
    /// Earliest time the next worker may start after a crash, and the pauses that set it.
    restart_after: Instant,
    restart_pauses: Doubling,
    last_heartbeat: Option<Instant>,
    /// The host's metrics and the socket its workers report them to, with `--metrics-addr`.
    metrics: Option<(Arc<Collector>, PathBuf)>,
}

/// Runs the fleet until a stop signal; then stops every worker and gives back its slots.
pub async fn run(config: FleetConfig) -> ExitCode {
    match run_fleet(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("squall-worker fleet: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_fleet(config: FleetConfig) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let client =
        squall_broker::connect::connect(&config.nats_auth, "squall-fleet", &config.nats_url)
            .await?;
    let topology = loop {
        match squall_broker::open_topology(client.clone()).await {
            Ok(topology) => break topology,
            Err(error) => {
                tracing::info!(message = "waiting for a dispatcher to create the topology", error = %error);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let metrics = match config.metrics_addr {
        Some(addr) => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data folder {}",
                    config.data_dir.display()
                )
            })?;
            let socket = config.data_dir.join("metrics.sock");
            let collector = Arc::new(Collector::new());
            collector.listen(&socket)?;
            let serving = collector.clone();
            squall_worker::metrics::serve(addr, move || serving.render()).await?;
            Some((collector, socket))
        }
        None => None,
    };
    let (host, pid) = squall_worker::host_and_pid();
    let mut state = Fleet {
        id: format!("{host}-{pid}"),
        host,
        config,
        topology,
        exe,
        running: Vec::new(),
        stopping: Vec::new(),
        granted: 0,
        below_since_ms: None,
        desired: 0,
        restart_after: Instant::now(),
        restart_pauses: Doubling::new(Duration::from_millis(100), Duration::from_secs(5)),
        last_heartbeat: None,
        metrics,
    };
    tracing::info!(message = "fleet supervisor started", supervisor = %state.id,
        min = state.config.policy.min, max = state.config.policy.max,
        idle_ms = state.config.policy.idle_ms);
    let signal = crate::signal::wait_for_signal();
    tokio::pin!(signal);
    let mut every = tokio::time::interval(state.config.interval);
    // At zero workers, a job's publish wakes the supervisor at once instead of at the next tick:
    // the subscription exists only while no worker runs, so busy fleets pay nothing for it.
    let mut wake: Option<async_nats::Subscriber> = None;
    loop {
        if state.running.is_empty() && wake.is_none() {
            wake = subscribe_jobs(&client, &state.config.functions).await;
        } else if !state.running.is_empty() {
            wake = None;
        }
        let woken = async {
            match wake.as_mut() {
                Some(subscriber) => subscriber.next().await,
                None => std::future::pending().await,
            }
        };
        // A job seen on the wire needs a worker even before the consumer counts it.
        let at_least = tokio::select! {
            _ = every.tick() => 0,
            _ = woken => 1,
            _ = &mut signal => break,
        };
        if let Err(error) = state.tick(at_least).await {
            tracing::warn!(message = "fleet tick failed", error = %error);
        }
    }
    state.shutdown().await;
    Ok(())
}

/// A core-NATS subscription that sees every job published for the served functions.
async fn subscribe_jobs(
    client: &async_nats::Client,
    functions: &[String],
) -> Option<async_nats::Subscriber> {
    let subject = match functions {
        [one] => squall_broker::names::jobs_subject(one),
        _ => "jobs.*".to_string(),
    };
    match client.subscribe(subject).await {
        Ok(subscriber) => Some(subscriber),
        Err(error) => {
            tracing::warn!(message = "cannot watch for new jobs; relying on the interval", %error);
            None
        }
    }
}

impl Fleet {
    /// One decision: read the work, take or give back slots, start or stop workers.
    async fn tick(&mut self, at_least: u32) -> anyhow::Result<()> {
        self.reap();
        // First say we are alive: others treat grants without a live heartbeat as free, so
        // a grant must never exist before its holder's heartbeat.
        self.heartbeat().await;
        if self.last_heartbeat.is_none() {
            anyhow::bail!("no heartbeat written yet; not scaling");
        }
        let loads = self.loads().await?;
        let needed = scale::needed(&loads).max(at_least);
        let alive = self.alive_supervisors().await?;
        let (allocation, revision) = self.allocation().await?;
        let others: u32 = allocation
            .granted
            .iter()
            .filter(|(id, _)| id.as_str() != self.id && alive.contains(id.as_str()))
            .map(|(_, n)| *n)
            .sum();
        let holding = (self.running.len() + self.stopping.len()) as u32;
        let target = scale::target(
            needed,
            others,
            self.running.len() as u32,
            self.config.policy,
            self.below_since_ms,
            now_ms(),
        );
        self.below_since_ms = target.below_since_ms;
        self.desired = target.workers;
        // Slots: enough for the target, and never fewer than processes still alive.
        let want = target.workers.max(holding);
        let stale = allocation
            .granted
            .keys()
            .any(|id| id != &self.id && !alive.contains(id.as_str()));
        let recorded = allocation.granted.get(&self.id).copied().unwrap_or(0);
        if want != recorded || stale {
            let next = scale::regrant(&allocation, &self.id, want, self.config.policy.max, &alive);
            if self.store_allocation(&next, revision).await {
                self.granted = next.granted.get(&self.id).copied().unwrap_or(0);
            }
        } else {
            self.granted = recorded;
        }
        let allowed = target
            .workers
            .min(self.granted.saturating_sub(self.stopping.len() as u32));
        while (self.running.len() as u32) < allowed && Instant::now() >= self.restart_after {
            self.start_worker()?;
        }
        while self.running.len() as u32 > target.workers {
            self.stop_newest();
        }
        if let Some((collector, _)) = &self.metrics {
            collector.workers.set(self.running.len() as i64);
        }
        Ok(())
    }

    /// Collects exited workers: a crash delays the next start (backoff); stopped ones free
    /// their slots.
    fn reap(&mut self) {
        self.stopping
            .retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_))));
        let mut crashed = false;
        self.running.retain_mut(|w| match w.child.try_wait() {
            Ok(Some(status)) => {
                let recycled = status.code() == Some(i32::from(squall_worker::EXIT_RECYCLE));
                if recycled {
                    tracing::info!(message = "worker recycled itself; starting a fresh one", slot = w.slot);
                } else {
                    tracing::warn!(message = "worker process died; restarting it", slot = w.slot, status = %status);
                    if let Some((collector, _)) = &self.metrics {
                        collector.crashes.inc();
                    }
                    if w.started.elapsed() < Duration::from_secs(30) {
                        crashed = true;
                    }
                }
                false
            }
            _ => true,
        });
        if crashed {
            self.restart_after = Instant::now() + self.restart_pauses.fail();
        } else if self
            .running
            .iter()
            .all(|w| w.started.elapsed() > Duration::from_secs(30))
        {
            self.restart_pauses.reset();
        }
    }

    /// Backlog and in-flight work of every function served, with its per-worker concurrency.
    async fn loads(&self) -> anyhow::Result<Vec<Load>> {
        let mut names: Vec<String> = Vec::new();
        let mut keys = self.topology.registry.keys().await?;
        while let Some(key) = keys.next().await {
            names.push(key?);
        }
        if !self.config.functions.is_empty() {
            names.retain(|n| self.config.functions.contains(n));
        }
        let mut loads = Vec::new();
        for name in names {
            let Some(bytes) = self.topology.registry.get(&name).await? else {
                continue;
            };
            let Ok(record) = FunctionRecord::decode(&bytes) else {
                continue;
            };
            let Ok(info) = self.topology.jobs.consumer_info(consumer_name(&name)).await else {
                continue;
            };
            loads.push(Load {
                backlog: info.num_pending,
                in_flight: info.num_ack_pending as u64,
                concurrency: record.concurrency,
            });
        }
        Ok(loads)
    }

    async fn alive_supervisors(&self) -> anyhow::Result<HashSet<String>> {
        let mut alive = HashSet::from([self.id.clone()]);
        let mut keys = self.topology.fleet.keys().await?;
        let now = now_ms();
        let ttl = FLEET_HEARTBEAT_TTL.as_millis() as u64;
        while let Some(key) = keys.next().await {
            let key = key?;
            if !key.starts_with(HEARTBEAT_PREFIX) {
                continue;
            }
            if let Some(bytes) = self.topology.fleet.get(&key).await? {
                if let Ok(beat) = fleet::decode::<Heartbeat>(&bytes) {
                    if beat.is_alive(now, ttl) {
                        alive.insert(beat.id);
                    }
                }
            }
        }
        Ok(alive)
    }

    /// The allocation and its revision (0 when it does not exist yet).
    async fn allocation(&self) -> anyhow::Result<(Allocation, u64)> {
        match self.topology.fleet.entry(ALLOCATION_KEY).await? {
            Some(entry) if entry.operation == kv::Operation::Put => Ok((
                fleet::decode(&entry.value).unwrap_or_default(),
                entry.revision,
            )),
            Some(entry) => Ok((Allocation::default(), entry.revision)),
            None => Ok((Allocation::default(), 0)),
        }
    }

    /// Compare-and-set of the allocation; false when another supervisor changed it first.
    async fn store_allocation(&self, next: &Allocation, revision: u64) -> bool {
        let value = fleet::encode(next);
        let stored = if revision == 0 {
            self.topology
                .fleet
                .create(ALLOCATION_KEY, value.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            self.topology
                .fleet
                .update(ALLOCATION_KEY, value.into(), revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match stored {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(message = "allocation changed meanwhile; retrying next tick", %error);
                false
            }
        }
    }

    fn start_worker(&mut self) -> anyhow::Result<()> {
        let slot = (0..)
            .find(|s| {
                !self
                    .running
                    .iter()
                    .chain(&self.stopping)
                    .any(|w| w.slot == *s)
            })
            .unwrap_or(0);
        let mut command = Command::new(&self.exe);
        command
            .arg("--no-supervise")
            .arg("--nats-url")
            .arg(&self.config.nats_url)
            .arg("--data-dir")
            .arg(self.config.data_dir.join(format!("slot-{slot}")))
            .args(&self.config.worker_args)
            .envs(self.config.nats_auth.to_env())
            // One endpoint per host: the workers report to this supervisor instead.
            .env_remove(squall_broker::env::ENV_METRICS_ADDR)
            .kill_on_drop(true);
        if let Some((_, socket)) = &self.metrics {
            command.arg("--metrics-report").arg(socket);
        }
        for function in &self.config.functions {
            command.arg("--function").arg(function);
        }
        squall_worker::process::die_with_parent(&mut command);
        let child = command.spawn().context("cannot start a worker process")?;
        tracing::info!(
            message = "worker process started",
            slot,
            pid = child.id().unwrap_or_default(),
            running = self.running.len() + 1
        );
        self.running.push(Worker {
            child,
            slot,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Asks the newest worker to stop (it drains its jobs first); it keeps its slot until it
    /// exited.
    fn stop_newest(&mut self) {
        if let Some(worker) = self.running.pop() {
            if let Some(pid) = worker
                .child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            tracing::info!(
                message = "stopping a worker process",
                slot = worker.slot,
                running = self.running.len()
            );
            self.stopping.push(worker);
        }
    }

    async fn heartbeat(&mut self) {
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < Duration::from_millis(HEARTBEAT_EVERY_MS))
        {
            return;
        }
        let beat = Heartbeat {
            id: self.id.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            functions: self.config.functions.clone(),
            min: self.config.policy.min,
            max: self.config.policy.max,
            workers: self.running.iter().filter_map(|w| w.child.id()).collect(),
            desired: self.desired,
            updated_at_ms: now_ms(),
        };
        let key = fleet::heartbeat_key(&self.id);
        match self
            .topology
            .fleet
            .put(&key, fleet::encode(&beat).into())
            .await
        {
            Ok(_) => self.last_heartbeat = Some(Instant::now()),
            Err(error) => tracing::warn!(message = "cannot write the fleet heartbeat", %error),
        }
    }

    /// Stops every worker, waits for them (each drains its jobs), and gives the slots back.
    async fn shutdown(mut self) {
        while !self.running.is_empty() {
            self.stop_newest();
        }
        let grace = Duration::from_secs(self.config.grace_secs + 5);
        for worker in &mut self.stopping {
            if tokio::time::timeout(grace, worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
        // Without a broker the slots free themselves when the heartbeat expires: do not wait
        // for one that is gone.
        let give_back = async {
            for _ in 0..10 {
                let Ok((allocation, revision)) = self.allocation().await else {
                    break;
                };
                let mut next = allocation.clone();
                next.granted.remove(&self.id);
                if next == allocation || self.store_allocation(&next, revision).await {
                    break;
                }
            }
            let _ = self
                .topology
                .fleet
                .delete(fleet::heartbeat_key(&self.id))
                .await;
        };
        let connected = self.topology.jetstream.client().connection_state()
            == async_nats::connection::State::Connected;
        if !connected
            || tokio::time::timeout(Duration::from_secs(2), give_back)
                .await
                .is_err()
        {
            tracing::warn!(message = "the broker is unreachable; leaving this supervisor's slots to expire with its heartbeat");
        }
        tracing::info!(message = "fleet supervisor stopped", supervisor = %self.id);
    }
}
