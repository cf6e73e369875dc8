//! The benchmark's order of work: set up one nats-server and dispatcher, then in every run
//! measure the bare reference and Squall back to back, then the cold paths, then report.

use crate::bare;
use crate::cluster::Cluster;
use crate::cold;
use crate::drive::{self, Completion, Nats, Submit, Throughput};
use crate::procs::{version_of, Environment, NatsServer};
use crate::report::{Machine, Report};
use crate::resources::{clock_ticks_per_second, CpuMeter, RssSampler, Usage, Watch};
use crate::stats::Latency;
use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use squall_broker::names::{consumer_name, jobs_subject, JOBS_STREAM, RESULTS_STREAM};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The trivial function every Squall measurement invokes.
pub const FUNCTION: &str = "noop";

// Section titles of the report; their numbers order the printed tables.
pub const S1: &str = "1. bare reference: minimal async-nats pipeline";
pub const S2: &str = "2. Squall async throughput";
pub const S3: &str = "3. Squall sync latency over HTTP";
pub const S4: &str = "4. cold paths";
pub const S5: &str = "5. resources";

/// Which parts of the benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Bare,
    Squall,
    Cold,
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
}

impl Settings {
    /// Warm-up invocations before each throughput measurement.
    fn warmup(&self) -> usize {
        (self.n / 10).clamp(50, 2000)
    }

    /// Warm-up requests before each latency measurement.
    fn latency_warmup(&self) -> usize {
        (self.latency_n / 10).clamp(10, 200)
    }

    /// The longest one throughput measurement may take.
    fn limit(&self) -> Duration {
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
    ticks_per_second: u64,
    started: Instant,
}

impl Bench {
    /// Prints a progress line to stderr.
    pub fn progress(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// The bare figures of one run, for its ratios.
    fn bare_figure(&self, key: &str, run: usize) -> Option<f64> {
        self.report
            .figures
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| f.values.get(run - 1).copied())
    }

    async fn measure_throughput(
        &self,
        results: &str,
        completion: Completion,
        submit: &Submit,
        n: usize,
    ) -> anyhow::Result<Throughput> {
        drive::throughput(
            &self.nats,
            results,
            completion,
            submit,
            n,
            &self.payload,
            self.settings.limit(),
        )
        .await
    }
}

/// Runs the whole benchmark and writes its report.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let env = Environment::discover(settings.artifact.clone())?;
    let tmp = tempfile::Builder::new()
        .prefix("squall-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let dir = tmp.path().to_path_buf();
    let started = Instant::now();
    let nats_server = NatsServer::start(&env, &dir).await?;
    let client = async_nats::ConnectOptions::new()
        .name("squall-bench")
        .connect(nats_server.url.as_str())
        .await
        .context("cannot connect to the benchmark's nats-server")?;
    let nats = Nats {
        js: async_nats::jetstream::new(client.clone()),
        client,
    };
    let cluster = Cluster::start(&env, &nats_server.url, dir.clone()).await?;
    let artifact = std::fs::read(&env.artifact)
        .with_context(|| format!("cannot read {}", env.artifact.display()))?;
    let spec = json!({ "concurrency": settings.concurrency });
    cluster.deploy(FUNCTION, artifact.clone(), &spec).await?;
    bare::setup(&nats.js, FUNCTION).await?;
    let mut machine = Machine::describe(version_of(&env.nats_server), &env.root);
    let mut bench = Bench {
        report: Report {
            settings: settings.to_json(),
            ..Default::default()
        },
        payload: Bytes::from(vec![b'x'; settings.payload]),
        ticks_per_second: clock_ticks_per_second(),
        nats_url: nats_server.url.clone(),
        nats_pid: nats_server.process.pid(),
        settings,
        env,
        dir,
        nats,
        cluster,
        artifact,
        started,
    };
    bench.progress(&format!(
        "nats-server at {}, dispatcher at {}; {} run(s) of n={}",
        bench.nats_url, bench.cluster.url, bench.settings.runs, bench.settings.n
    ));
    let dispatcher_idle = mib(Watch::process(bench.cluster.dispatcher.pid()).rss_kib()?);
    bench.report.add(
        S5,
        "res.dispatcher.rss.idle",
        "dispatcher RSS, idle (started, one function deployed)",
        "MiB",
        dispatcher_idle,
    );
    if let Err(error) = measure_all(&mut bench).await {
        // Keep every log for the post-mortem and show the end of the Squall processes' logs.
        eprintln!(
            "--- dispatcher log (end) ---\n{}",
            bench.cluster.dispatcher.log_tail(15)
        );
        for worker in &bench.cluster.workers {
            eprintln!("--- {} log (end) ---\n{}", worker.name, worker.log_tail(15));
        }
        bench.cluster.stop_workers().await;
        let kept = tmp.keep();
        return Err(error.context(format!("logs kept in {}", kept.display())));
    }
    bench.cluster.stop_workers().await;
    machine.load_after = crate::report::load_average();
    add_targets(&mut bench.report);
    print!("{}", bench.report.table(&machine));
    write_json(&bench.settings.json, &bench.report.json(&machine))?;
    println!("\nJSON written to {}", bench.settings.json.display());
    if let Some(path) = &bench.settings.markdown {
        write_text(path, &bench.report.markdown(&machine))?;
        println!("Markdown written to {}", path.display());
    }
    if bench.settings.keep {
        let kept = tmp.keep();
        println!("logs kept in {}", kept.display());
    }
    drop(nats_server);
    Ok(())
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
    }
    if bench.settings.runs_phase(Phase::Cold) {
        bench.progress("cold paths");
        cold::measure(bench).await.context("cold paths")?;
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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
    let submit = Submit::JetStream {
        subject: bare::JOBS_SUBJECT.into(),
    };
    let results = format!("{}.>", bare::RESULTS_PREFIX);
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

    bench
        .measure_throughput(&results, Completion::Any, &submit, s.warmup())
        .await?;
    drive::quiesce(&bench.nats, bare::JOBS_STREAM, bare::CONSUMER).await?;
    let cpu = CpuMeter::start(
        bench.ticks_per_second,
        &[Watch::process(first.pid()), Watch::process(bench.nats_pid)],
    )?;
    let one = bench
        .measure_throughput(&results, Completion::Any, &submit, s.n)
        .await?;
    let usage = cpu.usage(s.n)?;
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
    drive::quiesce(&bench.nats, bare::JOBS_STREAM, bare::CONSUMER).await?;

    let mut second = bare::spawn_worker(
        &bench.env,
        &bench.nats_url,
        &bench.dir,
        &format!("bare-{run}-2"),
        s.concurrency,
    )
    .await?;
    bench
        .measure_throughput(&results, Completion::Any, &submit, s.warmup())
        .await?;
    drive::quiesce(&bench.nats, bare::JOBS_STREAM, bare::CONSUMER).await?;
    let two = bench
        .measure_throughput(&results, Completion::Any, &submit, s.n)
        .await?;
    bench.report.add(
        S1,
        "bare.tput.2",
        "bare pipeline throughput, 2 worker connections",
        "jobs/s",
        two.per_second,
    );
    drive::quiesce(&bench.nats, bare::JOBS_STREAM, bare::CONSUMER).await?;
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
    bench: &mut Bench,
    run: usize,
    key: &str,
    label: &str,
    bare_key: &str,
    value: f64,
) {
    bench.report.add(S2, key, label, "inv/s", value);
    if let Some(bare) = bench.bare_figure(bare_key, run) {
        let bare_label = match bare_key {
            "bare.tput.1" => "1 connection",
            _ => "2 connections",
        };
        bench.report.add(
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
    let results = format!("results.{FUNCTION}.>");
    let raw = Submit::JetStream {
        subject: jobs_subject(FUNCTION),
    };
    let http = Submit::Http {
        http: bench.cluster.http.clone(),
        url: format!("{}?async=true", bench.cluster.invoke_url(FUNCTION)),
        submitters: s.http_submitters,
    };
    let consumer = consumer_name(FUNCTION);
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
    let sampler = RssSampler::start(vec![dispatcher, worker], Duration::from_millis(20));

    // Raw NATS publishes, one worker.
    bench
        .measure_throughput(&results, Completion::Succeeded, &raw, s.warmup())
        .await?;
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;
    let cpu = CpuMeter::start(bench.ticks_per_second, &[worker, dispatcher, nats])?;
    let t = bench
        .measure_throughput(&results, Completion::Succeeded, &raw, s.n)
        .await?;
    let usage = cpu.usage(s.n)?;
    add_usage(
        &mut bench.report,
        "raw NATS",
        &[
            ("nats.worker", "worker", true),
            ("nats.dispatcher", "dispatcher", false),
            ("nats.nats", "nats-server", false),
        ],
        &usage,
    );
    add_throughput(
        bench,
        run,
        "squall.tput.nats.1",
        "raw NATS publishes, 1 worker",
        "bare.tput.1",
        t.per_second,
    );
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;

    // Through the dispatcher, one worker.
    bench
        .measure_throughput(&results, Completion::Succeeded, &http, s.warmup())
        .await?;
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;
    let cpu = CpuMeter::start(bench.ticks_per_second, &[worker, dispatcher, nats, own])?;
    let t = bench
        .measure_throughput(&results, Completion::Succeeded, &http, s.n)
        .await?;
    let usage = cpu.usage(s.n)?;
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
        bench,
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
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;

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
    if let Some(bare) = bench.bare_figure("bare.rt.seq.p50", run) {
        bench.report.add(
            S3,
            "squall.sync.seq.p50.ratio",
            "  … p50 ÷ bare sequential round trip p50",
            "×",
            latency.p50 / bare,
        );
    }
    if let Some(bare) = bench.bare_figure("bare.rt.seq.p99", run) {
        bench.report.add(
            S3,
            "squall.sync.seq.p99.ratio",
            "  … p99 ÷ bare sequential round trip p99",
            "×",
            latency.p99 / bare,
        );
    }
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
    if let Some(bare) = bench.bare_figure("bare.rt.conc.p50", run) {
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
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;

    // Two workers.
    bench.cluster.add_worker(FUNCTION).await?;
    bench
        .measure_throughput(&results, Completion::Succeeded, &raw, s.warmup())
        .await?;
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;
    let t = bench
        .measure_throughput(&results, Completion::Succeeded, &raw, s.n)
        .await?;
    add_throughput(
        bench,
        run,
        "squall.tput.nats.2",
        "raw NATS publishes, 2 workers",
        "bare.tput.2",
        t.per_second,
    );
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;
    let t = bench
        .measure_throughput(&results, Completion::Succeeded, &http, s.n)
        .await?;
    add_throughput(
        bench,
        run,
        "squall.tput.http.2",
        "through the dispatcher (HTTP async), 2 workers",
        "bare.tput.2",
        t.per_second,
    );
    drive::quiesce(&bench.nats, JOBS_STREAM, &consumer).await?;
    bench.cluster.stop_workers().await;
    drive::purge(&bench.nats, RESULTS_STREAM).await?;
    Ok(())
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

/// The targets for a 2-core machine.
fn add_targets(report: &mut Report) {
    for (key, what) in [
        ("squall.tput.nats.1.ratio", "raw NATS, 1 worker"),
        ("squall.tput.nats.2.ratio", "raw NATS, 2 workers"),
        ("squall.tput.http.1.ratio", "HTTP async, 1 worker"),
        ("squall.tput.http.2.ratio", "HTTP async, 2 workers"),
    ] {
        report.target(
            &format!("async throughput >= 50% of the bare pipeline ({what})"),
            key,
            |v| v >= 50.0,
        );
    }
    report.target(
        "sync p50 within 2x the bare round trip (sequential)",
        "squall.sync.seq.p50.ratio",
        |v| v <= 2.0,
    );
    report.target(
        "sync p50 within 2x the bare round trip (concurrent clients)",
        "squall.sync.conc.p50.ratio",
        |v| v <= 2.0,
    );
    report.target(
        "a new version's cold start < 5 ms beyond a warm call",
        "cold.version.extra",
        |v| v < 5.0,
    );
    report.target("scale-from-zero < 100 ms", "cold.zero", |v| v < 100.0);
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
