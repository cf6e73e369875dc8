//! The `cluster` phase (opt-in): raw-NATS throughput on a three-node JetStream cluster on
//! loopback. In every run a fresh cluster with the topology replicated three ways (R3) carries
//! the bare pipeline and then Squall with 1, 2 and 4 worker processes; then a fresh cluster with
//! the topology at R1 carries the bare pipeline and Squall with one worker, so the cost of R3
//! is a ratio of two figures taken seconds apart. Every node's CPU is read around the
//! one-worker measurements.

use crate::bare;
use crate::cluster::Cluster;
use crate::context::{progress, Settings};
use crate::drive::{self, Nats};
use crate::measure::{self, Driver, Load, FUNCTION};
use crate::procs::{Environment, NatsCluster};
use crate::report::Report;
use crate::resources::{clock_ticks_per_second, Usage, Watch};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use squall_broker::names::{consumer_name, JOBS_STREAM, RESULTS_STREAM};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The report's section of this phase; its number orders it after the single-node sections.
pub const S6: &str = "6. cluster (3 nodes, loopback)";

/// The nodes of the cluster.
const NODES: usize = 3;
/// Worker processes measured at R3 after the first one (workers are added up to each count).
const R3_MORE_WORKERS: [usize; 2] = [2, 4];

/// The CPU of the cluster's nodes over one measurement, per 1,000 invocations.
#[derive(Debug, Clone, Copy)]
struct NodeCpu {
    /// All nodes together.
    total: f64,
    busiest: f64,
    idlest: f64,
}

impl NodeCpu {
    fn of(usage: &[Usage]) -> NodeCpu {
        let values = usage.iter().map(|u| u.cpu_ms_per_1000);
        NodeCpu {
            total: values.clone().sum(),
            busiest: values.clone().fold(f64::MIN, f64::max),
            idlest: values.fold(f64::MAX, f64::min),
        }
    }
}

/// What one cluster (one replica setting) measured in one run.
struct Measured {
    /// Bare pipeline, one worker connection, jobs/s.
    bare: f64,
    bare_nodes: NodeCpu,
    /// Squall's raw-NATS throughput by worker processes, inv/s.
    squall: Vec<(usize, f64)>,
    /// Around the one-worker measurement.
    nodes: NodeCpu,
    worker: Usage,
    dispatcher: Usage,
    client: Usage,
    /// CPU in use by every watched process during the one-worker measurement, in cores.
    cores: f64,
}

/// One cluster of one run: its replica setting and the worker counts measured after the first.
#[derive(Debug, Clone, Copy)]
struct Setup<'a> {
    run: usize,
    replicas: usize,
    more_workers: &'a [usize],
}

/// What every measurement of the phase shares.
struct Phase<'a> {
    settings: &'a Settings,
    env: &'a Environment,
    dir: &'a Path,
    artifact: &'a [u8],
    started: Instant,
    payload: Bytes,
    http: reqwest::Client,
    ticks_per_second: u64,
}

/// Runs the phase: per run a fresh R3 cluster, then a fresh R1 cluster; records the figures.
pub async fn measure(
    settings: &Settings,
    env: &Environment,
    dir: &Path,
    artifact: &[u8],
    started: Instant,
    report: &mut Report,
) -> anyhow::Result<()> {
    let phase = Phase {
        settings,
        env,
        dir,
        artifact,
        started,
        payload: Bytes::from(vec![b'x'; settings.payload]),
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?,
        ticks_per_second: clock_ticks_per_second(),
    };
    for run in 1..=settings.runs {
        let r3 = Setup {
            run,
            replicas: 3,
            more_workers: &R3_MORE_WORKERS,
        };
        let r3 = phase.on_fresh_cluster(r3).await.context("R3")?;
        let r1 = Setup {
            run,
            replicas: 1,
            more_workers: &[],
        };
        let r1 = phase.on_fresh_cluster(r1).await.context("R1")?;
        record(report, &r3, &r1);
    }
    Ok(())
}

/// Adds one run's figures, the throughputs first and the CPU after them.
fn record(report: &mut Report, r3: &Measured, r1: &Measured) {
    let mut add = |key: &str, label: &str, unit: &'static str, value: f64| {
        report.add(S6, key, label, unit, value)
    };
    add(
        "cluster.r1.bare.tput.1",
        "bare pipeline throughput, R1, 1 worker connection",
        "jobs/s",
        r1.bare,
    );
    add(
        "cluster.r3.bare.tput.1",
        "bare pipeline throughput, R3, 1 worker connection",
        "jobs/s",
        r3.bare,
    );
    add(
        "cluster.r3r1.bare.tput.1",
        "  … R3 as % of R1",
        "%",
        100.0 * r3.bare / r1.bare,
    );
    let one = |m: &Measured| m.squall.iter().find(|(w, _)| *w == 1).map_or(0.0, |t| t.1);
    add(
        "cluster.r1.tput.1",
        "Squall raw NATS publishes, R1, 1 worker",
        "inv/s",
        one(r1),
    );
    add(
        "cluster.r1.tput.1.ratio",
        "  … as % of the bare pipeline at R1",
        "%",
        100.0 * one(r1) / r1.bare,
    );
    for &(workers, value) in &r3.squall {
        let plural = if workers == 1 { "" } else { "s" };
        add(
            &format!("cluster.r3.tput.{workers}"),
            &format!("Squall raw NATS publishes, R3, {workers} worker{plural}"),
            "inv/s",
            value,
        );
        if workers == 1 {
            add(
                "cluster.r3.tput.1.ratio",
                "  … as % of the bare pipeline at R3",
                "%",
                100.0 * value / r3.bare,
            );
            add(
                "cluster.r3r1.tput.1",
                "  … R3 as % of R1 (1 worker)",
                "%",
                100.0 * value / one(r1),
            );
        }
    }
    for (name, m) in [("r1", r1), ("r3", r3)] {
        let setting = name.to_uppercase();
        add(
            &format!("cluster.{name}.cpu.nodes"),
            &format!("nats-server CPU per 1,000 invocations, Squall {setting}, all 3 nodes"),
            "ms/1k",
            m.nodes.total,
        );
        add(
            &format!("cluster.{name}.cpu.node.max"),
            "  … the busiest node",
            "ms/1k",
            m.nodes.busiest,
        );
        add(
            &format!("cluster.{name}.cpu.node.min"),
            "  … the least busy node",
            "ms/1k",
            m.nodes.idlest,
        );
    }
    for (name, m) in [("r1", r1), ("r3", r3)] {
        let setting = name.to_uppercase();
        add(
            &format!("cluster.{name}.cpu.worker"),
            &format!("worker CPU per 1,000 invocations, Squall {setting}"),
            "ms/1k",
            m.worker.cpu_ms_per_1000,
        );
        add(
            &format!("cluster.{name}.ctx.worker"),
            &format!("worker context switches per invocation, Squall {setting}"),
            "/inv",
            m.worker.switches_per_unit,
        );
        add(
            &format!("cluster.{name}.cpu.dispatcher"),
            &format!("dispatcher (index holder) CPU per result, Squall {setting}"),
            "µs/inv",
            m.dispatcher.cpu_ms_per_1000,
        );
        add(
            &format!("cluster.{name}.cpu.client"),
            &format!("benchmark client CPU per 1,000 invocations, Squall {setting}"),
            "ms/1k",
            m.client.cpu_ms_per_1000,
        );
        add(
            &format!("cluster.{name}.cores"),
            &format!("CPU in use by the measured processes, Squall {setting}, 1 worker"),
            "cores",
            m.cores,
        );
    }
    for (name, m) in [("r1", r1), ("r3", r3)] {
        let setting = name.to_uppercase();
        add(
            &format!("cluster.{name}.bare.cpu.nodes"),
            &format!("nats-server CPU per 1,000 jobs, bare pipeline {setting}, all 3 nodes"),
            "ms/1k",
            m.bare_nodes.total,
        );
        add(
            &format!("cluster.{name}.bare.cpu.node.max"),
            "  … the busiest node",
            "ms/1k",
            m.bare_nodes.busiest,
        );
    }
}

impl Phase<'_> {
    /// Starts a fresh cluster, measures on it with the topology at the setup's replicas (with
    /// one worker, then with each of its `more_workers`), and stops it.
    async fn on_fresh_cluster(&self, setup: Setup<'_>) -> anyhow::Result<Measured> {
        let Setup { run, replicas, .. } = setup;
        let dir = self.dir.join(format!("cluster-{run}-r{replicas}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let began = Instant::now();
        let mut nodes = NatsCluster::start(self.env, &dir, NODES, &self.http).await?;
        progress(
            self.started,
            &format!(
                "run {run}/{}: cluster R{replicas}: {NODES} nodes healthy in {:.1} s",
                self.settings.runs,
                began.elapsed().as_secs_f64()
            ),
        );
        let measured = self.measure_on(&nodes, dir, setup).await;
        nodes.stop(Duration::from_secs(10)).await;
        measured
    }

    /// Starts a dispatcher (`--replicas`) on the cluster, measures, and stops it and its workers.
    async fn measure_on(
        &self,
        nodes: &NatsCluster,
        dir: PathBuf,
        setup: Setup<'_>,
    ) -> anyhow::Result<Measured> {
        let urls = nodes.urls();
        let servers = squall_broker::connect::servers(&urls)?;
        let nats = measure::connect(self.env.broker.options(), servers, "cluster").await?;
        let replicas_flag = setup.replicas.to_string();
        let mut squall = Cluster::start_with(
            self.env,
            &urls,
            dir.clone(),
            &["--replicas", &replicas_flag],
        )
        .await?;
        let measured = self
            .measure_with(nodes, &nats, &mut squall, &dir, setup)
            .await;
        measure::stop(&mut squall, measured.is_err()).await;
        measured
    }

    /// Deploys the function, then measures the bare pipeline and Squall.
    async fn measure_with(
        &self,
        nodes: &NatsCluster,
        nats: &Nats,
        squall: &mut Cluster,
        dir: &Path,
        setup: Setup<'_>,
    ) -> anyhow::Result<Measured> {
        let Setup {
            run,
            replicas,
            more_workers,
        } = setup;
        let s = self.settings;
        let spec = serde_json::json!({ "concurrency": s.concurrency });
        measure::deploy(squall, nats, self.artifact, &spec).await?;
        let placement = placement(nats, replicas).await?;
        progress(
            self.started,
            &format!(
                "run {run}/{}: cluster R{replicas}: {placement}; the benchmark is connected to {}",
                s.runs,
                nats.client.server_info().server_name
            ),
        );
        let node_watches: Vec<Watch> = nodes
            .nodes
            .iter()
            .map(|n| Watch::process(n.process.pid()))
            .collect();
        let own = Watch::process(std::process::id());
        let driver = Driver {
            nats,
            payload: &self.payload,
            warmup: s.warmup(),
            limit: s.limit(),
            ticks_per_second: self.ticks_per_second,
        };

        // The bare pipeline, one worker connection, on streams copied from the dispatcher's
        // (so at the same replicas).
        let urls = nodes.urls();
        let mut bare_worker = bare::spawn_worker(
            self.env,
            &urls,
            dir,
            &format!("bare-{run}-r{replicas}"),
            s.concurrency,
        )
        .await?;
        let load = Load::bare();
        let (bare, usage) = driver.warm_then_measure(&load, s.n, &node_watches).await?;
        let bare_nodes = NodeCpu::of(&usage);
        driver.quiesce(&load).await?;
        bare_worker.terminate(Duration::from_secs(5)).await;
        drive::purge(nats, bare::RESULTS_STREAM).await?;

        // Squall: raw NATS publishes to the function's subject, results counted on its
        // results subject, as in the single-node measurement.
        let load = Load::squall_raw();
        squall.add_worker(FUNCTION).await?;
        // A worker is measured with its children (a supervisor and the worker proper).
        let mut watched = node_watches.clone();
        watched.extend([
            Watch::tree(squall.workers[0].pid()),
            Watch::process(squall.dispatcher.pid()),
            own,
        ]);
        let (t, usage) = driver.warm_then_measure(&load, s.n, &watched).await?;
        let (node_usage, rest) = usage.split_at(NODES);
        progress(
            self.started,
            &format!(
                "run {run}/{}: cluster R{replicas}, 1 worker: {:.0} inv/s; nats-server CPU \
                 ms/1k by node: {}",
                s.runs,
                t.per_second,
                nodes
                    .nodes
                    .iter()
                    .zip(node_usage)
                    .map(|(n, u)| format!("{} {:.1}", n.name, u.cpu_ms_per_1000))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        // ms per 1,000 invocations × invocations per second ÷ 1,000 = ms of CPU per second.
        let cpu_ms_per_second =
            usage.iter().map(|u| u.cpu_ms_per_1000).sum::<f64>() * t.per_second / 1000.0;
        let mut squall_figures = vec![(1, t.per_second)];
        driver.quiesce(&load).await?;
        for &count in more_workers {
            let t = driver.with_workers(squall, &load, count, s.n).await?;
            squall_figures.push((count, t.per_second));
        }
        Ok(Measured {
            bare: bare.per_second,
            bare_nodes,
            squall: squall_figures,
            nodes: NodeCpu::of(node_usage),
            worker: rest[0],
            dispatcher: rest[1],
            client: rest[2],
            cores: cpu_ms_per_second / 1000.0,
        })
    }
}

/// Where the streams' and the function consumer's leaders are, after checking that the
/// dispatcher created the topology at `replicas`.
async fn placement(nats: &Nats, replicas: usize) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for stream in [JOBS_STREAM, RESULTS_STREAM, bare::JOBS_STREAM] {
        let mut handle = nats.js.get_stream(stream).await?;
        let info = handle.info().await?;
        if info.config.num_replicas != replicas {
            bail!(
                "stream {stream} has {} replicas, not the {replicas} the dispatcher was given",
                info.config.num_replicas
            );
        }
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        parts.push(format!(
            "{stream} on {}",
            leader.as_deref().unwrap_or("(no leader)")
        ));
    }
    let consumer = nats
        .js
        .get_stream(JOBS_STREAM)
        .await?
        .consumer_info(consumer_name(FUNCTION))
        .await?
        .cluster
        .and_then(|c| c.leader);
    parts.push(format!(
        "consumer {} on {}",
        consumer_name(FUNCTION),
        consumer.as_deref().unwrap_or("(no leader)")
    ));
    Ok(format!("leaders: {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(ms: f64) -> Usage {
        Usage {
            cpu_ms_per_1000: ms,
            switches_per_unit: 0.0,
        }
    }

    #[test]
    fn node_cpu_sums_and_ranks_the_nodes() {
        let nodes = NodeCpu::of(&[cpu(40.0), cpu(90.0), cpu(15.0)]);
        assert_eq!(nodes.total, 145.0);
        assert_eq!(nodes.busiest, 90.0);
        assert_eq!(nodes.idlest, 15.0);
    }

    #[test]
    fn a_run_records_r3_against_r1() {
        let measured = |bare: f64, squall: Vec<(usize, f64)>| Measured {
            bare,
            bare_nodes: NodeCpu::of(&[cpu(10.0)]),
            squall,
            nodes: NodeCpu::of(&[cpu(20.0), cpu(30.0), cpu(40.0)]),
            worker: cpu(50.0),
            dispatcher: cpu(40.0),
            client: cpu(10.0),
            cores: 1.9,
        };
        let r3 = measured(6_000.0, vec![(1, 3_000.0), (2, 3_300.0), (4, 3_400.0)]);
        let r1 = measured(12_000.0, vec![(1, 5_000.0)]);
        let mut report = Report::default();
        record(&mut report, &r3, &r1);
        let median = |key: &str| {
            report
                .figures
                .iter()
                .find(|f| f.key == key)
                .and_then(|f| f.summary())
                .map(|s| s.median)
        };
        assert_eq!(median("cluster.r3.tput.1"), Some(3_000.0));
        assert_eq!(median("cluster.r3.tput.4"), Some(3_400.0));
        assert_eq!(median("cluster.r1.tput.1"), Some(5_000.0));
        assert_eq!(median("cluster.r3r1.tput.1"), Some(60.0));
        assert_eq!(median("cluster.r3r1.bare.tput.1"), Some(50.0));
        assert_eq!(median("cluster.r3.tput.1.ratio"), Some(50.0));
        assert_eq!(median("cluster.r3.cpu.nodes"), Some(90.0));
        assert_eq!(median("cluster.r3.cpu.node.max"), Some(40.0));
        assert!(report.figures.iter().all(|f| f.section == S6));
    }
}
