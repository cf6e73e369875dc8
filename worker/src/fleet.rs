//! The autoscaling fleet supervisor (`squall-worker fleet`): keeps a pool of worker processes
//! per function on this host, each process serving that one function, sized from the
//! function's backlog; restarts crashed ones; and shares the fleet's maximum with the
//! supervisors on other hosts through the fleet bucket.
//!
//! Invariants: a worker process this supervisor starts serves exactly one function; this
//! supervisor never runs more processes (including ones still stopping) than the allocation
//! grants it, taking slots before starting processes and giving them back only after its
//! processes exited; one function's crashes delay only that function's restarts.

use anyhow::Context as _;
use async_nats::jetstream::kv;
use futures::StreamExt as _;
use squall_broker::backoff::Doubling;
use squall_broker::callout::Issuer;
use squall_broker::fleet::{
    self, Allocation, Heartbeat, PoolBeat, ALLOCATION_KEY, HEARTBEAT_EVERY_MS, HEARTBEAT_PREFIX,
};
use squall_broker::names::consumer_name;
use squall_broker::time::now_ms;
use squall_broker::topology::FLEET_HEARTBEAT_TTL;
use squall_broker::{FunctionRecord, Topology};
use squall_worker::metrics::Collector;
use squall_worker::scale::{self, Load, Policy, PoolLoad};
use std::collections::{BTreeMap, HashSet};
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
    started: Instant,
}

/// One function's processes on this host, and what its scaling and restarts remember.
struct Pool {
    running: Vec<Worker>,
    /// Processes asked to stop that have not exited yet: they still hold their slots.
    stopping: Vec<Worker>,
    below_since_ms: Option<u64>,
    desired: u32,
    /// Earliest time the next process may start after a crash, and the pauses that set it.
    restart_after: Instant,
    restart_pauses: Doubling,
    /// While the pool runs nothing: a task that reports each job published for the function,
    /// so a scale-from-zero does not wait for the next tick.
    wake: Option<tokio::task::JoinHandle<()>>,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            running: Vec::new(),
            stopping: Vec::new(),
            below_since_ms: None,
            desired: 0,
            restart_after: Instant::now(),
            restart_pauses: Doubling::new(Duration::from_millis(100), Duration::from_secs(5)),
            wake: None,
        }
    }

    fn holding(&self) -> u32 {
        (self.running.len() + self.stopping.len()) as u32
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.stopping.is_empty()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(wake) = self.wake.take() {
            wake.abort();
        }
    }
}

/// The supervisor's state between ticks.
struct Fleet {
    config: FleetConfig,
    id: String,
    host: String,
    client: async_nats::Client,
    topology: Topology,
    exe: PathBuf,
    /// Pools by function name.
    pools: BTreeMap<String, Pool>,
    /// Where wake tasks report the function a job was published for.
    woken_tx: tokio::sync::mpsc::UnboundedSender<String>,
    granted: u32,
    last_heartbeat: Option<Instant>,
    /// The host's metrics and the socket its workers report them to, with `--metrics-addr`.
    metrics: Option<(Arc<Collector>, PathBuf)>,
    /// The key that signs each process's credentials for its one function, when the broker
    /// hands function logins to the auth callout (`SQUALL_CALLOUT_SEED`); without it (a broker
    /// with no authentication) processes get the fleet's own login.
    issuer: Option<Issuer>,
    /// Answers the broker's authorization requests for the processes' logins.
    _callout: Option<tokio::task::JoinHandle<()>>,
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
    let issuer = Issuer::from_env().context("cannot read the callout issuer's seed")?;
    let callout = match &issuer {
        Some(issuer) => Some(
            squall_broker::callout::serve(client.clone(), Arc::new(issuer.clone()))
                .await
                .context("cannot answer the broker's authorization requests")?,
        ),
        None => None,
    };
    let (host, pid) = squall_worker::host_and_pid();
    let (woken_tx, mut woken_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut state = Fleet {
        id: format!("{host}-{pid}"),
        host,
        config,
        client,
        topology,
        exe,
        pools: BTreeMap::new(),
        woken_tx,
        granted: 0,
        last_heartbeat: None,
        metrics,
        issuer,
        _callout: callout,
    };
    tracing::info!(message = "fleet supervisor started", supervisor = %state.id,
        min = state.config.policy.min, max = state.config.policy.max,
        idle_ms = state.config.policy.idle_ms);
    let signal = crate::signal::wait_for_signal();
    tokio::pin!(signal);
    let mut every = tokio::time::interval(state.config.interval);
    let mut woken = HashSet::new();
    loop {
        // A job seen on the wire for a pool at zero needs a process even before its consumer
        // counts it: it wakes the supervisor at once instead of at the next tick.
        tokio::select! {
            _ = every.tick() => {}
            Some(function) = woken_rx.recv() => {
                woken.insert(function);
                while let Ok(more) = woken_rx.try_recv() {
                    woken.insert(more);
                }
            }
            _ = &mut signal => break,
        }
        if let Err(error) = state.tick(&woken).await {
            tracing::warn!(message = "fleet tick failed", error = %error);
        }
        woken.clear();
    }
    state.shutdown().await;
    Ok(())
}

/// The longest one listing of a bucket's keys may take. async-nats recreates a listing a broker
/// restart interrupted, trying for ever: a supervisor must not stop ticking (and beating) for it.
const KEYS_BUDGET: Duration = Duration::from_secs(10);

/// Every key of `bucket`, or an error once `KEYS_BUDGET` has passed.
async fn keys_of(bucket: &kv::Store) -> anyhow::Result<Vec<String>> {
    let listing = async {
        let mut keys = bucket.keys().await?;
        let mut all = Vec::new();
        while let Some(key) = keys.next().await {
            all.push(key?);
        }
        anyhow::Ok(all)
    };
    tokio::time::timeout(KEYS_BUDGET, listing)
        .await
        .context("listing a bucket's keys took too long")?
}

/// A function's bounds and work, as one tick reads them.
struct Demand {
    function: String,
    pool: PoolLoad,
}

impl Fleet {
    /// One decision: read each function's work, take or give back slots, share them among the
    /// pools, start or stop processes.
    async fn tick(&mut self, woken: &HashSet<String>) -> anyhow::Result<()> {
        self.reap();
        // First say we are alive: others treat grants without a live heartbeat as free, so
        // a grant must never exist before its holder's heartbeat.
        self.heartbeat().await;
        if self.last_heartbeat.is_none() {
            anyhow::bail!("no heartbeat written yet; not scaling");
        }
        if let Err(error) = self.wake_idle_pools(woken).await {
            tracing::debug!(message = "cannot start a woken pool at once; the tick will", %error);
        }
        let mut demands = self.demands(woken).await?;
        // A pool whose function is gone (deleted, or no longer served) wants nothing.
        for (function, pool) in &self.pools {
            if !pool.idle() && !demands.iter().any(|d| &d.function == function) {
                demands.push(Demand {
                    function: function.clone(),
                    pool: PoolLoad {
                        load: Load {
                            backlog: 0,
                            in_flight: 0,
                            concurrency: 1,
                        },
                        min: 0,
                        max: Some(0),
                        woken: false,
                    },
                });
            }
        }
        for demand in &demands {
            self.pools
                .entry(demand.function.clone())
                .or_insert_with(Pool::new);
        }
        let alive = self.alive_supervisors().await?;
        let (allocation, revision) = self.allocation().await?;
        let others: u32 = allocation
            .granted
            .iter()
            .filter(|(id, _)| id.as_str() != self.id && alive.contains(id.as_str()))
            .map(|(_, n)| *n)
            .sum();
        let room = self.config.policy.max.saturating_sub(others);
        let wanted: Vec<u32> = demands.iter().map(|d| scale::wanted(&d.pool)).collect();
        let floors: Vec<u32> = demands.iter().map(|d| d.pool.min).collect();
        let shares = scale::fair_shares(&wanted, &floors, room);
        let running: Vec<u32> = demands
            .iter()
            .map(|d| self.pools[&d.function].running.len() as u32)
            .collect();
        let below: Vec<Option<u64>> = demands
            .iter()
            .map(|d| self.pools[&d.function].below_since_ms)
            .collect();
        let targets = scale::targets(
            &shares,
            &running,
            &below,
            room,
            self.config.policy.idle_ms,
            now_ms(),
        );
        let holding: u32 = self.pools.values().map(Pool::holding).sum();
        let total: u32 = targets.iter().map(|t| t.processes).sum();
        // Slots: enough for the targets, and never fewer than processes still alive.
        let want = total.max(holding);
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
        for (demand, target) in demands.iter().zip(&targets) {
            let pool = self.pools.get_mut(&demand.function).expect("made above");
            pool.below_since_ms = target.below_since_ms;
            pool.desired = target.processes;
            while pool.running.len() as u32 > target.processes {
                stop_newest(&demand.function, pool);
            }
        }
        // Start what the targets ask for within the grant, one process per pool per round, so
        // a short grant is shared too.
        let mut free = self
            .granted
            .saturating_sub(self.pools.values().map(Pool::holding).sum());
        let now = Instant::now();
        let mut started = true;
        while free > 0 && started {
            started = false;
            for (demand, target) in demands.iter().zip(&targets) {
                if free == 0 {
                    break;
                }
                let pool = &self.pools[&demand.function];
                if pool.running.len() as u32 >= target.processes || now < pool.restart_after {
                    continue;
                }
                self.start_worker(&demand.function)?;
                free -= 1;
                started = true;
            }
        }
        self.pools
            .retain(|_, pool| !pool.idle() || pool.desired > 0 || pool.wake.is_some());
        self.watch_idle_pools(&demands).await;
        if let Some((collector, _)) = &self.metrics {
            let running: usize = self.pools.values().map(|p| p.running.len()).sum();
            collector.workers.set(running as i64);
        }
        Ok(())
    }

    /// Scale-from-zero's short path: a pool at zero that a job woke gets its first process
    /// before the tick reads every function's work (which grows with the functions deployed),
    /// within a grant taken by one read and one compare-and-set of the allocation. The tick
    /// that follows sees the pool running and decides the rest as usual.
    async fn wake_idle_pools(&mut self, woken: &HashSet<String>) -> anyhow::Result<()> {
        let now = Instant::now();
        let idle: Vec<String> = woken
            .iter()
            .filter(|f| {
                self.pools
                    .get(*f)
                    .is_some_and(|p| p.running.is_empty() && now >= p.restart_after)
            })
            .cloned()
            .collect();
        if idle.is_empty() {
            return Ok(());
        }
        let holding: u32 = self.pools.values().map(Pool::holding).sum();
        let (allocation, revision) = self.allocation().await?;
        let recorded = allocation.granted.get(&self.id).copied().unwrap_or(0);
        let want = holding + idle.len() as u32;
        self.granted = recorded;
        if want > recorded {
            // Every grant on record counts as taken here; the tick drops stale ones.
            let mut holders: HashSet<String> = allocation.granted.keys().cloned().collect();
            holders.insert(self.id.clone());
            let next = scale::regrant(
                &allocation,
                &self.id,
                want,
                self.config.policy.max,
                &holders,
            );
            if self.store_allocation(&next, revision).await {
                self.granted = next.granted.get(&self.id).copied().unwrap_or(0);
            }
        }
        let mut free = self.granted.saturating_sub(holding);
        for function in idle {
            if free == 0 {
                break;
            }
            self.start_worker(&function)?;
            free -= 1;
        }
        Ok(())
    }

    /// Keeps a wake task for every served function whose pool runs nothing, and none for the
    /// others.
    async fn watch_idle_pools(&mut self, demands: &[Demand]) {
        for demand in demands {
            let served = demand.pool.max != Some(0);
            let pool = self
                .pools
                .entry(demand.function.clone())
                .or_insert_with(Pool::new);
            let needs_watch = served && pool.running.is_empty();
            match (needs_watch, pool.wake.is_some()) {
                (true, false) => {
                    pool.wake = watch_jobs(&self.client, &demand.function, &self.woken_tx).await;
                }
                (false, true) => {
                    if let Some(wake) = pool.wake.take() {
                        wake.abort();
                    }
                }
                _ => {}
            }
        }
    }

    /// Collects exited processes: a crash delays that pool's next start (backoff); stopped
    /// ones free their slots.
    fn reap(&mut self) {
        for (function, pool) in &mut self.pools {
            pool.stopping
                .retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_))));
            let mut crashed = false;
            pool.running.retain_mut(|w| match w.child.try_wait() {
                Ok(Some(status)) => {
                    let recycled =
                        status.code() == Some(i32::from(squall_worker::EXIT_RECYCLE));
                    if recycled {
                        tracing::info!(message = "worker recycled itself; starting a fresh one", function = %function);
                    } else {
                        tracing::warn!(message = "worker process died; restarting it", function = %function, status = %status);
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
                pool.restart_after = Instant::now() + pool.restart_pauses.fail();
            } else if pool
                .running
                .iter()
                .all(|w| w.started.elapsed() > Duration::from_secs(30))
            {
                pool.restart_pauses.reset();
            }
        }
    }

    /// Backlog, in-flight work and bounds of every function served.
    async fn demands(&self, woken: &HashSet<String>) -> anyhow::Result<Vec<Demand>> {
        let mut names = keys_of(&self.topology.registry).await?;
        if !self.config.functions.is_empty() {
            names.retain(|n| self.config.functions.contains(n));
        }
        names.sort();
        let mut demands = Vec::new();
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
            demands.push(Demand {
                pool: PoolLoad {
                    load: Load {
                        backlog: info.num_pending,
                        in_flight: info.num_ack_pending as u64,
                        concurrency: record.concurrency,
                    },
                    min: record.min_instances.max(self.config.policy.min),
                    max: record.max_instances,
                    woken: woken.contains(&name),
                },
                function: name,
            });
        }
        Ok(demands)
    }

    async fn alive_supervisors(&self) -> anyhow::Result<HashSet<String>> {
        let mut alive = HashSet::from([self.id.clone()]);
        let now = now_ms();
        let ttl = FLEET_HEARTBEAT_TTL.as_millis() as u64;
        for key in keys_of(&self.topology.fleet).await? {
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

    /// Starts one process of `function`'s pool: it serves that function alone, with a data
    /// folder (its artifact cache) shared by the function's processes on this host.
    fn start_worker(&mut self, function: &str) -> anyhow::Result<()> {
        let mut command = Command::new(&self.exe);
        command
            .arg("--no-supervise")
            .arg("--nats-url")
            .arg(&self.config.nats_url)
            .arg("--data-dir")
            .arg(self.config.data_dir.join("functions").join(function))
            .arg("--function")
            .arg(function)
            .args(&self.config.worker_args)
            // One endpoint per host: the workers report to this supervisor instead.
            .env_remove(squall_broker::env::ENV_METRICS_ADDR)
            .kill_on_drop(true);
        if let Some((_, socket)) = &self.metrics {
            command.arg("--metrics-report").arg(socket);
        }
        // Its own function's credentials (with the broker's TLS settings), never the fleet's.
        squall_worker::credentials::hand_login(
            &mut command,
            self.issuer.as_ref(),
            function,
            &self.config.nats_auth,
        )
        .with_context(|| format!("cannot mint credentials for {function}"))?;
        squall_worker::process::chain_jvm_signals(&mut command);
        squall_worker::process::die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start a worker process for {function}"))?;
        let pool = self
            .pools
            .get_mut(function)
            .expect("a pool exists before its processes");
        tracing::info!(
            message = "worker process started",
            function = %function,
            pid = child.id().unwrap_or_default(),
            running = pool.running.len() + 1
        );
        pool.running.push(Worker {
            child,
            started: Instant::now(),
        });
        if let Some(wake) = pool.wake.take() {
            wake.abort();
        }
        Ok(())
    }

    async fn heartbeat(&mut self) {
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < Duration::from_millis(HEARTBEAT_EVERY_MS))
        {
            return;
        }
        let pids = |workers: &[Worker]| -> Vec<u32> {
            workers.iter().filter_map(|w| w.child.id()).collect()
        };
        let pools: BTreeMap<String, PoolBeat> = self
            .pools
            .iter()
            .filter(|(_, p)| !p.idle() || p.desired > 0)
            .map(|(function, p)| {
                (
                    function.clone(),
                    PoolBeat {
                        processes: pids(&p.running),
                        desired: p.desired,
                    },
                )
            })
            .collect();
        let beat = Heartbeat {
            id: self.id.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            functions: self.config.functions.clone(),
            min: self.config.policy.min,
            max: self.config.policy.max,
            workers: self.pools.values().flat_map(|p| pids(&p.running)).collect(),
            desired: self.pools.values().map(|p| p.desired).sum(),
            updated_at_ms: now_ms(),
            pools,
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
        for (function, pool) in &mut self.pools {
            while !pool.running.is_empty() {
                stop_newest(function, pool);
            }
        }
        let grace = Duration::from_secs(self.config.grace_secs + 5);
        for pool in self.pools.values_mut() {
            for worker in &mut pool.stopping {
                if tokio::time::timeout(grace, worker.child.wait())
                    .await
                    .is_err()
                {
                    let _ = worker.child.kill().await;
                }
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

/// Asks the newest process of a pool to stop (it drains its jobs first); it keeps its slot
/// until it exited.
fn stop_newest(function: &str, pool: &mut Pool) {
    if let Some(worker) = pool.running.pop() {
        if let Some(pid) = worker
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        tracing::info!(
            message = "stopping a worker process",
            function = %function,
            running = pool.running.len()
        );
        pool.stopping.push(worker);
    }
}

/// A task that sends `function` to `woken` for each job published for it (a core-NATS
/// subscription: it sees the publish before the consumer counts it).
async fn watch_jobs(
    client: &async_nats::Client,
    function: &str,
    woken: &tokio::sync::mpsc::UnboundedSender<String>,
) -> Option<tokio::task::JoinHandle<()>> {
    match client
        .subscribe(squall_broker::names::jobs_subject(function))
        .await
    {
        Ok(mut subscriber) => {
            let (function, woken) = (function.to_string(), woken.clone());
            Some(tokio::spawn(async move {
                while subscriber.next().await.is_some() {
                    if woken.send(function.clone()).is_err() {
                        break;
                    }
                }
            }))
        }
        Err(error) => {
            tracing::warn!(message = "cannot watch for new jobs; relying on the interval", function = %function, %error);
            None
        }
    }
}
