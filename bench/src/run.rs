//! The benchmark's order of work: set up one nats-server and dispatcher, then in every run
//! measure the bare reference, Squall (with a gateway dispatcher without the query index beside
//! the first during raw NATS) and its batch submission back to back, then the cold paths and
//! scale-from-zero; then, when asked for, the cluster phase on clusters of its own
//! (`replicated`); then report (with each figure's change against the baseline).

use crate::bare;
use crate::baseline::{self, Baseline};
use crate::cluster::{lacks_query_index_flag, Cluster};
use crate::cold;
use crate::drive::{self, Nats, NoBatchEndpoint, Submit};
use crate::measure::{self, Driver, Load};
use crate::procs::{version_of, Environment, NatsServer, Proc};
use crate::replicated;
use crate::report::{Machine, Report};
use crate::resources::{clock_ticks_per_second, process_tree, CpuMeter, RssSampler, Usage, Watch};
use crate::stats::Latency;
use crate::zero;
use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use squall_broker::names::RESULTS_STREAM;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::measure::FUNCTION;

// Section titles of the report; their numbers order the printed tables.
pub const S1: &str = "1. bare reference: minimal async-nats pipeline";
pub const S2: &str = "2. Squall async throughput";
pub const S3: &str = "3. Squall sync latency over HTTP";
pub const S4: &str = "4. cold paths";
pub const S5: &str = "5. resources";
pub const S7: &str = "7. function state (host services)";

/// Concurrent HTTP clients posting batches in the batch measurement: a few are enough to keep
/// the dispatcher busy when every request carries hundreds of invocations.
const BATCH_SUBMITTERS: usize = 4;

/// The gateway dispatcher's figures (key, label, unit): the target's CPU figure first.
const GATEWAY_FIGURES: [(&str, &str, &str); 4] = [
    (
        "res.cpu.nats.gateway",
        "gateway dispatcher without the index: CPU per raw-NATS invocation it did not submit",
        "µs/inv",
    ),
    (
        "res.ctx.nats.gateway",
        "gateway dispatcher without the index: context switches per raw-NATS invocation",
        "/inv",
    ),
    (
        "res.gateway.rss.idle",
        "gateway dispatcher RSS, idle (started, no index)",
        "MiB",
    ),
    (
        "res.gateway.rss.load",
        "gateway dispatcher RSS, peak during raw NATS",
        "MiB",
    ),
];

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
    /// The host services' `kv_get`, cached and not, beside a bare KV get.
    State,
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
    fn single_node(self) -> bool {
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
    fn latency_warmup(&self) -> usize {
        (self.latency_n / 10).clamp(10, 200)
    }

    /// The longest one throughput measurement may take.
    pub fn limit(&self) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(self.n as u64 * 5)
    }

    fn runs_phase(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    fn to_json(&self) -> serde_json::Value {
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

/// What every measurement needs.
pub struct Bench {
    pub settings: Settings,
    pub env: Environment,
    pub dir: PathBuf,
    pub nats_url: String,
    pub nats_pid: u32,
    pub nats: Nats,
    pub cluster: Cluster,
    pub report: Report,
    pub payload: Bytes,
    pub artifact: Vec<u8>,
    /// Set once the dispatcher turned out to have no batch endpoint: the later runs skip the
    /// batch measurement (the report already says why).
    batch_skipped: bool,
    /// Set once the dispatcher turned out to have no `--query-index`: the later runs start no
    /// gateway (the report already says why).
    gateway_skipped: bool,
    ticks_per_second: u64,
    started: Instant,
}

/// Prints a progress line to stderr, with the time since the benchmark `started`.
pub fn progress(started: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

impl Bench {
    /// Prints a progress line to stderr.
    pub fn progress(&self, what: &str) {
        progress(self.started, what);
    }

    /// What drives the single-node throughput measurements.
    fn driver(&self) -> Driver<'_> {
        driver(
            &self.settings,
            &self.nats,
            &self.payload,
            self.ticks_per_second,
        )
    }
}

/// What drives a throughput measurement under `settings`.
pub fn driver<'a>(
    settings: &Settings,
    nats: &'a Nats,
    payload: &'a Bytes,
    ticks_per_second: u64,
) -> Driver<'a> {
    Driver {
        nats,
        payload,
        warmup: settings.warmup(),
        limit: settings.limit(),
        ticks_per_second,
    }
}

/// A figure of `report` in one run, for a ratio against it.
fn bare_figure(report: &Report, key: &str, run: usize) -> Option<f64> {
    report
        .figures
        .iter()
        .find(|f| f.key == key)
        .and_then(|f| f.values.get(run - 1).copied())
}

/// Runs the whole benchmark and writes its report.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let env = Environment::discover(settings.artifact.clone())?;
    // Read the baseline before starting anything, so that a malformed one fails at once.
    let baseline_path = settings
        .baseline
        .clone()
        .unwrap_or_else(|| env.root.join(baseline::DEFAULT_PATH));
    let baseline = Baseline::load(&baseline_path)?;
    if baseline.is_none() {
        eprintln!(
            "no baseline at {}: figures are not compared",
            baseline_path.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("squall-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let dir = tmp.path().to_path_buf();
    let started = Instant::now();
    let artifact = std::fs::read(&env.artifact)
        .with_context(|| format!("cannot read {}", env.artifact.display()))?;
    let mut machine = Machine::describe(version_of(&env.nats_server), &env.root);
    let mut report = Report {
        settings: settings.to_json(),
        baseline,
        ..Default::default()
    };
    let single_node = settings.phases.iter().any(|p| p.single_node());
    let measured = async {
        if single_node {
            single_node_phases(&settings, &env, &dir, &artifact, started, &mut report).await?;
        }
        if settings.runs_phase(Phase::Cluster) {
            replicated::measure(&settings, &env, &dir, &artifact, started, &mut report)
                .await
                .context("cluster")?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = measured {
        // Keep every log for the post-mortem.
        let kept = tmp.keep();
        return Err(error.context(format!("logs kept in {}", kept.display())));
    }
    machine.load_after = crate::report::load_average();
    if single_node {
        add_targets(&mut report);
    }
    print!("{}", report.table(&machine));
    write_json(&settings.json, &report.json(&machine))?;
    println!("\nJSON written to {}", settings.json.display());
    if let Some(path) = &settings.write_baseline {
        write_json(path, &report.json(&machine))?;
        println!("baseline written to {}", path.display());
    }
    if let Some(path) = &settings.markdown {
        write_text(path, &report.markdown(&machine))?;
        println!("Markdown written to {}", path.display());
    }
    if settings.keep {
        let kept = tmp.keep();
        println!("logs kept in {}", kept.display());
    }
    Ok(())
}

/// The phases on one nats-server: starts it and the dispatcher, deploys the function, runs
/// every selected phase and stops them all again, adding the figures to `report`.
async fn single_node_phases(
    settings: &Settings,
    env: &Environment,
    dir: &Path,
    artifact: &[u8],
    started: Instant,
    report: &mut Report,
) -> anyhow::Result<()> {
    let nats_server = NatsServer::start(env, dir).await?;
    let nats = measure::connect(nats_server.url.as_str(), "nats-server").await?;
    let cluster = Cluster::start(env, &nats_server.url, dir.to_path_buf()).await?;
    // Also a web function (`/function/noop`, no key), for the web requests' sync latency.
    let spec = json!({ "concurrency": settings.concurrency, "web": { "auth": "none" } });
    measure::deploy(&cluster, &nats, artifact, &spec).await?;
    let mut bench = Bench {
        report: std::mem::take(report),
        payload: Bytes::from(vec![b'x'; settings.payload]),
        ticks_per_second: clock_ticks_per_second(),
        nats_url: nats_server.url.clone(),
        nats_pid: nats_server.process.pid(),
        settings: settings.clone(),
        env: env.clone(),
        dir: dir.to_path_buf(),
        nats,
        cluster,
        artifact: artifact.to_vec(),
        batch_skipped: false,
        gateway_skipped: false,
        started,
    };
    bench.progress(&format!(
        "nats-server at {}, dispatcher at {}; {} run(s) of n={}",
        bench.nats_url, bench.cluster.url, bench.settings.runs, bench.settings.n
    ));
    let measured = async {
        let dispatcher_idle = mib(Watch::process(bench.cluster.dispatcher.pid()).rss_kib()?);
        bench.report.add(
            S5,
            "res.dispatcher.rss.idle",
            "dispatcher RSS, idle (started, one function deployed)",
            "MiB",
            dispatcher_idle,
        );
        measure_all(&mut bench).await
    }
    .await;
    // After a failure, shows the end of the Squall processes' logs.
    measure::stop(&mut bench.cluster, measured.is_err()).await;
    *report = std::mem::take(&mut bench.report);
    drop(nats_server);
    measured
}

async fn measure_all(bench: &mut Bench) -> anyhow::Result<()> {
    for run in 1..=bench.settings.runs {
        if bench.settings.runs_phase(Phase::Bare) {
            bench.progress(&format!(
                "run {run}/{}: bare reference",
                bench.settings.runs
            ));
            bare_run(bench, run).await.context("bare reference")?;
        }
        if bench.settings.runs_phase(Phase::Squall) {
            bench.progress(&format!("run {run}/{}: Squall", bench.settings.runs));
            squall_run(bench, run).await.context("Squall")?;
        }
        if bench.settings.runs_phase(Phase::Batch) && !bench.batch_skipped {
            bench.progress(&format!("run {run}/{}: HTTP batch", bench.settings.runs));
            batch_run(bench, run).await.context("HTTP batch")?;
        }
    }
    if bench.settings.runs_phase(Phase::Cold) {
        bench.progress("cold paths");
        cold::measure(bench).await.context("cold paths")?;
    }
    if bench.settings.runs_phase(Phase::State) {
        bench.progress("function state");
        crate::state::measure(bench)
            .await
            .context("function state")?;
    }
    if bench.settings.runs_phase(Phase::Zero) {
        bench.progress("scale-from-zero");
        zero::measure(bench).await.context("scale-from-zero")?;
    }
    if bench.settings.runs_phase(Phase::Scale) {
        bench.progress("query index at scale");
        crate::scale::measure(bench)
            .await
            .context("query index at scale")?;
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Sequential web requests (`POST /function/noop`, the same payload) against the bare round
/// trip: the sync path's targets apply to web functions too. Skipped by a dispatcher without
/// web functions (an older commit in an A/B run).
async fn web_latency(bench: &mut Bench, run: usize) -> anyhow::Result<()> {
    let url = format!("{}/function/{FUNCTION}", bench.cluster.url);
    let probe = bench.cluster.http.post(&url).body("x").send().await?;
    if probe.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    let samples = drive::http_round_trips(
        &bench.cluster.http,
        &url,
        1,
        bench.settings.latency_n,
        &bench.payload,
    )
    .await
    .context("web requests")?;
    let latency = Latency::of(&samples);
    add_latency(
        &mut bench.report,
        S3,
        "squall.web.seq",
        "web request (/function/noop), sequential",
        &latency,
    );
    if let Some(bare) = bare_figure(&bench.report, "bare.rt.seq.p50", run) {
        bench.report.add(
            S3,
            "squall.web.seq.p50.ratio",
            "  … p50 ÷ bare sequential round trip p50",
            "×",
            latency.p50 / bare,
        );
    }
    Ok(())
}

/// Records p50, p99 and p999 of a latency measurement under `key`.
fn add_latency(
    report: &mut Report,
    section: &'static str,
    key: &str,
    label: &str,
    latency: &Latency,
) {
    for (suffix, value) in [
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("p999", latency.p999),
    ] {
        report.add(
            section,
            &format!("{key}.{suffix}"),
            &format!("{label}, {suffix}"),
            "µs",
            value,
        );
    }
}

async fn bare_run(bench: &mut Bench, run: usize) -> anyhow::Result<()> {
    let s = bench.settings.clone();
    let load = Load::bare();
    let mut first = bare::spawn_worker(
        &bench.env,
        &bench.nats_url,
        &bench.dir,
        &format!("bare-{run}-1"),
        s.concurrency,
    )
    .await?;

    drive::bare_round_trips(&bench.nats, 1, s.latency_warmup(), &bench.payload).await?;
    let sequential = drive::bare_round_trips(&bench.nats, 1, s.latency_n, &bench.payload).await?;
    add_latency(
        &mut bench.report,
        S1,
        "bare.rt.seq",
        "bare round trip, sequential",
        &Latency::of(&sequential),
    );
    let per_client = (s.latency_n / s.clients).max(1);
    let concurrent =
        drive::bare_round_trips(&bench.nats, s.clients, per_client, &bench.payload).await?;
    add_latency(
        &mut bench.report,
        S1,
        "bare.rt.conc",
        &format!("bare round trip, {} concurrent clients", s.clients),
        &Latency::of(&concurrent),
    );

    let watched = [Watch::process(first.pid()), Watch::process(bench.nats_pid)];
    let (one, usage) = bench
        .driver()
        .warm_then_measure(&load, s.n, &watched)
        .await?;
    add_usage(
        &mut bench.report,
        "bare pipeline",
        &[
            ("bare.worker", "bare worker", true),
            ("bare.nats", "nats-server", false),
        ],
        &usage,
    );
    bench.report.add(
        S1,
        "bare.tput.1",
        "bare pipeline throughput, 1 worker connection",
        "jobs/s",
        one.per_second,
    );
    bench.driver().quiesce(&load).await?;

    let mut second = bare::spawn_worker(
        &bench.env,
        &bench.nats_url,
        &bench.dir,
        &format!("bare-{run}-2"),
        s.concurrency,
    )
    .await?;
    let driver = bench.driver();
    driver.warm_up(&load).await?;
    let two = driver.throughput(&load, s.n).await?;
    bench.report.add(
        S1,
        "bare.tput.2",
        "bare pipeline throughput, 2 worker connections",
        "jobs/s",
        two.per_second,
    );
    bench.driver().quiesce(&load).await?;
    first.terminate(Duration::from_secs(5)).await;
    second.terminate(Duration::from_secs(5)).await;
    drive::purge(&bench.nats, bare::RESULTS_STREAM).await?;
    Ok(())
}

/// Records what measured processes used per invocation: CPU time, and context switches where
/// asked. Each entry is (key, process, with context switches).
fn add_usage(report: &mut Report, mode: &str, processes: &[(&str, &str, bool)], usage: &[Usage]) {
    for (&(key, who, switches), usage) in processes.iter().zip(usage) {
        report.add(
            S5,
            &format!("res.cpu.{key}"),
            &format!("{who} CPU per 1,000 invocations, {mode}"),
            "ms/1k",
            usage.cpu_ms_per_1000,
        );
        if switches {
            report.add(
                S5,
                &format!("res.ctx.{key}"),
                &format!("{who} context switches per invocation, {mode}"),
                "/inv",
                usage.switches_per_unit,
            );
        }
    }
}

/// Records a Squall throughput and, when the same run measured it, its ratio to the bare one.
fn add_throughput(
    report: &mut Report,
    run: usize,
    key: &str,
    label: &str,
    bare_key: &str,
    value: f64,
) {
    report.add(S2, key, label, "inv/s", value);
    if let Some(bare) = bare_figure(report, bare_key, run) {
        let bare_label = match bare_key {
            "bare.tput.1" => "1 connection",
            _ => "2 connections",
        };
        report.add(
            S2,
            &format!("{key}.ratio"),
            &format!("  … as % of the bare pipeline ({bare_label})"),
            "%",
            100.0 * value / bare,
        );
    }
}

async fn squall_run(bench: &mut Bench, run: usize) -> anyhow::Result<()> {
    let s = bench.settings.clone();
    let raw = Load::squall_raw();
    let http = Load::squall(Submit::Http {
        http: bench.cluster.http.clone(),
        url: format!("{}?async=true", bench.cluster.invoke_url(FUNCTION)),
        submitters: s.http_submitters,
    });
    let sync_url = bench.cluster.invoke_url(FUNCTION);

    bench.cluster.add_worker(FUNCTION).await?;
    // A worker is measured with its children: by default it is a supervisor running the
    // worker proper as a child process.
    let dispatcher = Watch::process(bench.cluster.dispatcher.pid());
    let worker = Watch::tree(bench.cluster.workers[0].pid());
    let nats = Watch::process(bench.nats_pid);
    let own = Watch::process(std::process::id());
    bench.report.add(
        S5,
        "res.worker.rss.idle",
        "worker RSS, idle (started, function loaded; with its supervisor)",
        "MiB",
        mib(worker.rss_kib()?),
    );
    // The worker proper alone: what every added worker process costs, where the supervisor is
    // one per host (or absent under an orchestrator that restarts processes itself).
    let alone: u64 = process_tree(bench.cluster.workers[0].pid())
        .into_iter()
        .skip(1)
        .filter_map(|pid| Watch::process(pid).rss_kib().ok())
        .sum();
    if alone > 0 {
        bench.report.add(
            S5,
            "res.worker.rss.idle.alone",
            "worker RSS, idle (started, function loaded; the worker process alone)",
            "MiB",
            mib(alone),
        );
    }
    let sampler = RssSampler::start(vec![dispatcher, worker], Duration::from_millis(20));

    // Raw NATS publishes, one worker, with a gateway dispatcher without the query index beside
    // the first (which holds it). Neither submitted these jobs: the gateway's CPU is what a
    // dispatcher spends per invocation it did not submit; the index holder's is the cost of
    // indexing every result. The gateway stops afterwards, so that the HTTP measurements run
    // among the same processes as before.
    let gateway = start_gateway(bench, run).await?;
    let gateway_watch = gateway.as_ref().map(|g| Watch::process(g.pid()));
    let gateway_sampler =
        gateway_watch.map(|w| RssSampler::start(vec![w], Duration::from_millis(20)));
    let mut watched = vec![worker, dispatcher, nats];
    watched.extend(gateway_watch);
    let (t, usage) = bench
        .driver()
        .warm_then_measure(&raw, s.n, &watched)
        .await?;
    add_usage(
        &mut bench.report,
        "raw NATS",
        &[
            ("nats.worker", "worker", true),
            ("nats.nats", "nats-server", false),
        ],
        &[usage[0], usage[2]],
    );
    if let Some(gateway_usage) = usage.get(3) {
        let [(cpu_key, cpu_label, cpu_unit), (ctx_key, ctx_label, ctx_unit), ..] = GATEWAY_FIGURES;
        // ms per 1,000 invocations is µs per invocation.
        bench.report.add(
            S5,
            cpu_key,
            cpu_label,
            cpu_unit,
            gateway_usage.cpu_ms_per_1000,
        );
        bench.report.add(
            S5,
            ctx_key,
            ctx_label,
            ctx_unit,
            gateway_usage.switches_per_unit,
        );
    }
    // The key is the one the dispatcher's raw-NATS CPU always had (it held the index then too),
    // so the baseline still compares.
    bench.report.add(
        S5,
        "res.cpu.nats.dispatcher",
        "  … the index holder's CPU per result, raw NATS (the index's own cost)",
        "µs/inv",
        usage[1].cpu_ms_per_1000,
    );
    bench.report.add(
        S5,
        "res.ctx.nats.dispatcher",
        "  … the index holder's context switches per result, raw NATS",
        "/inv",
        usage[1].switches_per_unit,
    );
    if let (Some(mut process), Some(sampler)) = (gateway, gateway_sampler) {
        let (key, label, unit) = GATEWAY_FIGURES[3];
        bench
            .report
            .add(S5, key, label, unit, mib(sampler.stop()[0]));
        process.terminate(Duration::from_secs(10)).await;
    }
    add_throughput(
        &mut bench.report,
        run,
        "squall.tput.nats.1",
        "raw NATS publishes, 1 worker",
        "bare.tput.1",
        t.per_second,
    );
    bench.driver().quiesce(&raw).await?;

    // Through the dispatcher, one worker.
    let (t, usage) = bench
        .driver()
        .warm_then_measure(&http, s.n, &[worker, dispatcher, nats, own])
        .await?;
    add_usage(
        &mut bench.report,
        "HTTP async",
        &[
            ("http.worker", "worker", true),
            ("http.dispatcher", "dispatcher", true),
            ("http.nats", "nats-server", false),
            ("http.client", "benchmark client", false),
        ],
        &usage,
    );
    add_throughput(
        &mut bench.report,
        run,
        "squall.tput.http.1",
        "through the dispatcher (HTTP async), 1 worker",
        "bare.tput.1",
        t.per_second,
    );
    bench.report.add(
        S2,
        "squall.submit.http.1",
        "  … of which HTTP submission alone (202s per second)",
        "inv/s",
        s.n as f64 / t.submitted_in.as_secs_f64(),
    );
    bench.driver().quiesce(&http).await?;

    // Probes that split a synchronous invocation into parts.
    probes(bench).await?;

    // Synchronous invocations over HTTP.
    drive::http_round_trips(
        &bench.cluster.http,
        &sync_url,
        1,
        s.latency_warmup(),
        &bench.payload,
    )
    .await?;
    let cpu = CpuMeter::start(bench.ticks_per_second, &[worker, dispatcher])?;
    let sequential = drive::http_round_trips(
        &bench.cluster.http,
        &sync_url,
        1,
        s.latency_n,
        &bench.payload,
    )
    .await?;
    let usage = cpu.usage(s.latency_n)?;
    add_usage(
        &mut bench.report,
        "sync, sequential",
        &[
            ("sync.worker", "worker", true),
            ("sync.dispatcher", "dispatcher", true),
        ],
        &usage,
    );
    let latency = Latency::of(&sequential);
    add_latency(
        &mut bench.report,
        S3,
        "squall.sync.seq",
        "sync invoke, sequential",
        &latency,
    );
    if let Some(bare) = bare_figure(&bench.report, "bare.rt.seq.p50", run) {
        bench.report.add(
            S3,
            "squall.sync.seq.p50.ratio",
            "  … p50 ÷ bare sequential round trip p50",
            "×",
            latency.p50 / bare,
        );
    }
    if let Some(bare) = bare_figure(&bench.report, "bare.rt.seq.p99", run) {
        bench.report.add(
            S3,
            "squall.sync.seq.p99.ratio",
            "  … p99 ÷ bare sequential round trip p99",
            "×",
            latency.p99 / bare,
        );
    }
    web_latency(bench, run).await?;
    let per_client = (s.latency_n / s.clients).max(1);
    let started = Instant::now();
    let concurrent = drive::http_round_trips(
        &bench.cluster.http,
        &sync_url,
        s.clients,
        per_client,
        &bench.payload,
    )
    .await?;
    let rate = concurrent.len() as f64 / started.elapsed().as_secs_f64();
    let latency = Latency::of(&concurrent);
    let label = format!("sync invoke, {} concurrent clients", s.clients);
    add_latency(&mut bench.report, S3, "squall.sync.conc", &label, &latency);
    if let Some(bare) = bare_figure(&bench.report, "bare.rt.conc.p50", run) {
        bench.report.add(
            S3,
            "squall.sync.conc.p50.ratio",
            &format!("  … p50 ÷ bare round trip p50 with {} clients", s.clients),
            "×",
            latency.p50 / bare,
        );
    }
    bench.report.add(
        S3,
        "squall.sync.conc.rate",
        &format!("{label}, completed requests per second"),
        "req/s",
        rate,
    );
    let peaks = sampler.stop();
    bench.report.add(
        S5,
        "res.dispatcher.rss.load",
        "dispatcher RSS, peak under load",
        "MiB",
        mib(peaks[0]),
    );
    bench.report.add(
        S5,
        "res.worker.rss.load",
        "worker RSS, peak under load (with its supervisor)",
        "MiB",
        mib(peaks[1]),
    );
    bench.driver().quiesce(&raw).await?;

    // Two workers.
    let driver = driver(&s, &bench.nats, &bench.payload, bench.ticks_per_second);
    let t = driver
        .with_workers(&mut bench.cluster, &raw, 2, s.n)
        .await?;
    add_throughput(
        &mut bench.report,
        run,
        "squall.tput.nats.2",
        "raw NATS publishes, 2 workers",
        "bare.tput.2",
        t.per_second,
    );
    let t = bench.driver().throughput(&http, s.n).await?;
    add_throughput(
        &mut bench.report,
        run,
        "squall.tput.http.2",
        "through the dispatcher (HTTP async), 2 workers",
        "bare.tput.2",
        t.per_second,
    );
    bench.driver().quiesce(&http).await?;
    bench.cluster.stop_workers().await;
    drive::purge(&bench.nats, RESULTS_STREAM).await?;
    Ok(())
}

/// Starts this run's gateway dispatcher (`--query-index false`) and records its idle RSS; `None`
/// when the dispatcher has no such flag (recorded as n/a the first time).
async fn start_gateway(bench: &mut Bench, run: usize) -> anyhow::Result<Option<Proc>> {
    if bench.gateway_skipped {
        return Ok(None);
    }
    match bench.cluster.start_gateway(&format!("gateway-{run}")).await {
        Ok(process) => {
            let (key, label, unit) = GATEWAY_FIGURES[2];
            let idle = mib(Watch::process(process.pid()).rss_kib()?);
            bench.report.add(S5, key, label, unit, idle);
            Ok(Some(process))
        }
        Err(error) if lacks_query_index_flag(&format!("{error:#}")) => {
            let why = "n/a: the dispatcher has no --query-index";
            bench.progress(why);
            for (key, label, unit) in GATEWAY_FIGURES {
                bench.report.missing(S5, key, label, unit, why);
            }
            bench.gateway_skipped = true;
            Ok(None)
        }
        Err(error) => Err(error.context("cannot start the gateway dispatcher")),
    }
}

/// HTTP batch submission with one worker: `POST …/batch` of NDJSON bodies, each line the
/// payload as a JSON string, completion counted on the results subject as for the other async
/// measurements. Skipped, with the reason in the report, when the first batch answers 404 or 405.
async fn batch_run(bench: &mut Bench, run: usize) -> anyhow::Result<()> {
    let s = bench.settings.clone();
    let batch = Load::squall(Submit::HttpBatch {
        http: bench.cluster.http.clone(),
        url: format!("{}/v1/functions/{FUNCTION}/batch", bench.cluster.url),
        submitters: BATCH_SUBMITTERS,
        lines: s.batch_lines,
        line: json_string_line(s.payload),
    });
    bench.cluster.add_worker(FUNCTION).await?;
    let warm = bench.driver().throughput(&batch, s.warmup()).await;
    if let Err(error) = warm {
        let Some(missing) = error.downcast_ref::<NoBatchEndpoint>() else {
            return Err(error);
        };
        let why = format!("n/a: the dispatcher has no batch endpoint ({})", missing.0);
        bench.progress(&why);
        let label = format!(
            "through the dispatcher (HTTP batch of {}), 1 worker",
            s.batch_lines
        );
        bench
            .report
            .missing(S2, "squall.tput.batch.1", &label, "inv/s", &why);
        bench.report.missing(
            S2,
            "squall.tput.batch.1.ratio",
            "  … as % of the bare pipeline (1 connection)",
            "%",
            &why,
        );
        bench.batch_skipped = true;
        bench.cluster.stop_workers().await;
        return Ok(());
    }
    let dispatcher = Watch::process(bench.cluster.dispatcher.pid());
    let worker = Watch::tree(bench.cluster.workers[0].pid());
    let nats = Watch::process(bench.nats_pid);
    let own = Watch::process(std::process::id());
    let driver = bench.driver();
    driver.quiesce(&batch).await?;
    let (t, usage) = driver
        .measure(&batch, s.n, &[worker, dispatcher, nats, own])
        .await?;
    add_usage(
        &mut bench.report,
        "HTTP batch",
        &[
            ("batch.worker", "worker", true),
            ("batch.dispatcher", "dispatcher", true),
            ("batch.nats", "nats-server", false),
            ("batch.client", "benchmark client", false),
        ],
        &usage,
    );
    add_throughput(
        &mut bench.report,
        run,
        "squall.tput.batch.1",
        &format!(
            "through the dispatcher (HTTP batch of {}), 1 worker",
            s.batch_lines
        ),
        "bare.tput.1",
        t.per_second,
    );
    bench.report.add(
        S2,
        "squall.submit.batch.1",
        "  … of which batch submission alone (invocations accepted per second)",
        "inv/s",
        s.n as f64 / t.submitted_in.as_secs_f64(),
    );
    bench.driver().quiesce(&batch).await?;
    bench.cluster.stop_workers().await;
    drive::purge(&bench.nats, RESULTS_STREAM).await?;
    Ok(())
}

/// One batch line: a JSON string of `size` bytes with its quotes (at least the two quotes), so
/// a batch input is as large as the other measurements' raw payload and still valid JSON.
fn json_string_line(size: usize) -> Bytes {
    let mut line = Vec::with_capacity(size.max(2));
    line.push(b'"');
    line.resize(size.max(2) - 1, b'x');
    line.push(b'"');
    Bytes::from(line)
}

/// Times, one at a time, the steps a synchronous invocation adds to the bare round trip or
/// shares with it: an HTTP exchange with the dispatcher that touches no broker, one broker
/// request/response (a KV get of the function's record, what a registry read costs), and one
/// JetStream publish with its ack.
async fn probes(bench: &mut Bench) -> anyhow::Result<()> {
    let count = bench.settings.latency_n.min(2000);
    let warmup = bench.settings.latency_warmup();
    let http = bench.cluster.http.clone();
    let healthz = format!("{}/healthz", bench.cluster.url);
    let http_step = || {
        let (http, url) = (http.clone(), healthz.clone());
        async move {
            let response = http.get(url).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "healthz answered {}",
                response.status()
            );
            response.bytes().await?;
            Ok(())
        }
    };
    drive::probe(warmup, http_step).await?;
    let samples = drive::probe(count, http_step).await?;
    bench.report.add(
        S3,
        "probe.http",
        "probe: HTTP exchange alone (GET /healthz), p50",
        "µs",
        Latency::of(&samples).p50,
    );
    let registry = bench
        .nats
        .js
        .get_key_value(squall_broker::names::REGISTRY_BUCKET)
        .await?;
    let kv_step = || {
        let registry = registry.clone();
        async move {
            registry
                .get(FUNCTION)
                .await?
                .context("the function is not in the registry")?;
            Ok(())
        }
    };
    drive::probe(warmup, kv_step).await?;
    let samples = drive::probe(count, kv_step).await?;
    bench.report.add(
        S3,
        "probe.kv",
        "probe: one broker request/response (KV get of the record), p50",
        "µs",
        Latency::of(&samples).p50,
    );
    let js = bench.nats.js.clone();
    let payload = bench.payload.clone();
    let publish_step = || {
        let (js, payload) = (js.clone(), payload.clone());
        async move {
            js.publish(bare::PROBE_SUBJECT, payload).await?.await?;
            Ok(())
        }
    };
    drive::probe(warmup, publish_step).await?;
    let samples = drive::probe(count, publish_step).await?;
    bench.report.add(
        S3,
        "probe.publish",
        &format!(
            "probe: one JetStream publish + ack ({} B), p50",
            bench.settings.payload
        ),
        "µs",
        Latency::of(&samples).p50,
    );
    Ok(())
}

/// The targets for a 2-core machine (issue 12's second wave, and the cold start of issue 9):
/// medians of the runs, measured side by side with the bare pipeline.
fn add_targets(report: &mut Report) {
    report.target(
        "raw-NATS async throughput >= 70% of the bare pipeline (1 worker)",
        "squall.tput.nats.1.ratio",
        |v| v >= 70.0,
    );
    report.target(
        "HTTP async throughput, one request per invocation, >= 35% of the bare pipeline",
        "squall.tput.http.1.ratio",
        |v| v >= 35.0,
    );
    report.target(
        "HTTP batch throughput >= 60% of the bare pipeline",
        "squall.tput.batch.1.ratio",
        |v| v >= 60.0,
    );
    report.target(
        "sync p50 <= 1.5x the bare sequential round trip",
        "squall.sync.seq.p50.ratio",
        |v| v <= 1.5,
    );
    report.target(
        "sync p50 <= 2.5x the bare round trip with concurrent clients",
        "squall.sync.conc.p50.ratio",
        |v| v <= 2.5,
    );
    report.target(
        "web request p50 <= 1.5x the bare sequential round trip",
        "squall.web.seq.p50.ratio",
        |v| v <= 1.5,
    );
    report.target(
        "sync p99 <= 2x the bare sequential p99",
        "squall.sync.seq.p99.ratio",
        |v| v <= 2.0,
    );
    // Neither dispatcher submitted these jobs. The target is the gateway's: a dispatcher that
    // holds no index receives no results it did not ask for. The index holder's cost per result
    // is printed beside it, since some process pays it.
    report.target(
        "gateway dispatcher (no query index) CPU per raw-NATS invocation it did not submit <= 2 µs",
        "res.cpu.nats.gateway",
        |v| v <= 2.0,
    );
    report.beside_last_target(
        "the index holder's own cost per result",
        "res.cpu.nats.dispatcher",
    );
    report.target("a cached host kv_get < 5 µs", "state.cached.p50", |v| {
        v < 5.0
    });
    report.target(
        "an uncached host kv_get within 1.5x a bare KV get",
        "state.uncached.ratio",
        |v| v <= 1.5,
    );
    report.target(
        "scale-from-zero → first result < 50 ms",
        "cold.zero",
        |v| v < 50.0,
    );
    report.target(
        "worker idle RSS < 15 MiB (the worker process alone)",
        "res.worker.rss.idle.alone",
        |v| v < 15.0,
    );
    report.target(
        "worker idle RSS < 15 MiB (with its supervisor)",
        "res.worker.rss.idle",
        |v| v < 15.0,
    );
    report.target(
        "a new version's cold start < 5 ms beyond a warm call",
        "cold.version.extra",
        |v| v < 5.0,
    );
    if report.figures.iter().any(|f| f.key.starts_with("scale.")) {
        crate::scale::add_targets(report);
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    write_text(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

/// Writes `text` to `path`, creating its folder.
fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
