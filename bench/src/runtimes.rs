//! Language runtimes beside native: a Python, a JavaScript, a Go and a Java noop against the native noop in
//! the same worker setup (a supervised worker process per function, the same spec), for the
//! sync call's cost beyond native and the worker's CPU per call, and async throughput, in every
//! run; then a new function's first result, in a running worker and from zero; then the peer a
//! Python user would pick, Celery (`celery`).

use crate::broker::Role;
use crate::celery;
use crate::cluster::Cluster;
use crate::cold::with_nonce;
use crate::context::{Context, Server, S9};
use crate::drive::{self, Completion, Submit};
use crate::measure::{Driver, Load, FUNCTION};
use crate::procs::{Proc, BUILD_COMMAND};
use crate::report::Report;
use crate::resources::{CpuMeter, Watch};
use crate::stats::Latency;
use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use squall_broker::names::{consumer_name, jobs_subject, JOBS_STREAM, RESULTS_STREAM};
use squall_bundle::{Manifest, Runtime};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Most jobs per throughput measurement whatever `--n` says, so the phase stays short.
const MAX_N: usize = 20_000;
/// Most sequential calls per latency measurement whatever `--latency-n` says.
const MAX_LATENCY_N: usize = 3_000;
/// Most first-result measurements per language and mode whatever `--runs` says.
const MAX_FIRST_RUNS: usize = 5;
/// The longest a first result, or a fleet's start, may take before the measurement fails.
const FIRST_LIMIT: Duration = Duration::from_secs(30);
/// Every bundle's handler: `handler` of `app.py` or `app.mjs`.
const HANDLER: &str = "app.handler";

/// A language of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// The native noop example library (the reference).
    Native,
    Python,
    JavaScript,
    /// A Go library (native, built with the SDK's Go package).
    Go,
    Java,
}

impl Lang {
    pub const ALL: [Lang; 5] = [
        Lang::Native,
        Lang::Python,
        Lang::JavaScript,
        Lang::Go,
        Lang::Java,
    ];

    /// The figures' key part.
    pub fn key(self) -> &'static str {
        match self {
            Lang::Native => "native",
            Lang::Python => "python",
            Lang::JavaScript => "js",
            Lang::Go => "go",
            Lang::Java => "java",
        }
    }

    /// The name in the figures' labels.
    pub fn title(self) -> &'static str {
        match self {
            Lang::Native => "native",
            Lang::Python => "Python",
            Lang::JavaScript => "JavaScript",
            Lang::Go => "Go",
            Lang::Java => "Java",
        }
    }

    /// The bundle runtime, `None` for a native library (the native and the Go noop).
    pub fn runtime(self) -> Option<Runtime> {
        match self {
            Lang::Native | Lang::Go => None,
            Lang::Python => Some(Runtime::Python311),
            Lang::JavaScript => Some(Runtime::JavaScript),
            Lang::Java => Some(Runtime::Java17),
        }
    }
}

/// The noop handler's file and source for `runtime`, with `nonce` in a comment: each nonce
/// packs to a new bundle (a new sha256, a version no worker has loaded). The JavaScript one is
/// `async`, as the template writes handlers. Java's is compiled (`compiled::java_noop`); its
/// file here carries only the nonce.
pub fn noop_source(runtime: Runtime, nonce: &str) -> (&'static str, String) {
    match runtime {
        Runtime::Java17 => ("nonce.txt", format!("{nonce}\n")),
        Runtime::Python311 => (
            "app.py",
            format!("# {nonce}\ndef handler(event, context):\n    return event\n"),
        ),
        Runtime::JavaScript => (
            "app.mjs",
            format!(
                "// {nonce}\nexport async function handler(event, context) {{\n  return event;\n}}\n"
            ),
        ),
    }
}

/// The event every call of the phase sends: a JSON object of `size` bytes (11 at least), as a
/// Python or JavaScript handler's event usually is; the native noop echoes it as bytes.
pub fn json_event(size: usize) -> bytes::Bytes {
    const EMPTY: &str = r#"{"data":""}"#;
    let padding = "x".repeat(size.saturating_sub(EMPTY.len()));
    bytes::Bytes::from(format!(r#"{{"data":"{padding}"}}"#))
}

/// `value` as a percentage of `reference`; `None` without a positive reference.
pub fn share_pct(value: f64, reference: f64) -> Option<f64> {
    (reference > 0.0).then(|| 100.0 * value / reference)
}

/// A noop bundle of `runtime` packed from a folder of its own under `dir` (with Java's
/// compiled classes from `compiled`).
fn noop_bundle(
    dir: &Path,
    compiled: &Compiled,
    runtime: Runtime,
    nonce: &str,
) -> anyhow::Result<Vec<u8>> {
    let folder = dir.join(format!("bundle-{}-{nonce}", runtime.id()));
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let (file, source) = noop_source(runtime, nonce);
    std::fs::write(folder.join(file), source)
        .with_context(|| format!("cannot write {}", folder.join(file).display()))?;
    let mut files = squall_bundle::collect(&folder)?;
    let handler = match runtime {
        Runtime::Java17 => {
            files.extend(squall_bundle::collect(&compiled.java)?);
            files.sort();
            crate::compiled::JAVA_HANDLER
        }
        _ => HANDLER,
    };
    Ok(squall_bundle::pack(
        &Manifest::new(runtime, handler),
        &files,
    )?)
}

/// The noops that are compiled once per run: the Go library and the Java classes' folder.
pub struct Compiled {
    go: Vec<u8>,
    java: std::path::PathBuf,
}

impl Compiled {
    fn build(cx: &Context) -> anyhow::Result<Compiled> {
        let dir = cx.dir.join("compiled");
        std::fs::create_dir_all(&dir)?;
        Ok(Compiled {
            go: crate::compiled::go_noop(&dir)?,
            java: crate::compiled::java_noop(&dir)?,
        })
    }
}

/// The artifact of `lang`'s noop: a native library, or a bundle; `nonce` makes it new.
fn noop_artifact(
    cx: &Context,
    compiled: &Compiled,
    lang: Lang,
    nonce: &str,
) -> anyhow::Result<Vec<u8>> {
    match (lang, lang.runtime()) {
        (Lang::Go, _) => Ok(with_nonce(&compiled.go, nonce)),
        (_, None) => Ok(with_nonce(&cx.artifact, nonce)),
        (_, Some(runtime)) => noop_bundle(&cx.dir.join("bundles"), compiled, runtime, nonce),
    }
}

/// The function `lang`'s noop is deployed as for the warm measurements.
fn warm_name(lang: Lang) -> String {
    format!("rt-{}", lang.key())
}

/// Every function deploy of the phase: the concurrency set explicitly, since a bundle's
/// default is 1 and the native function's is not.
fn spec(cx: &Context) -> serde_json::Value {
    serde_json::json!({ "concurrency": cx.settings.concurrency })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A nonce no earlier run of the benchmark used.
fn stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Fails with the build command when the worker has no runtime libraries beside it.
fn check_runtimes(cx: &Context) -> anyhow::Result<()> {
    let folder = cx
        .env
        .worker
        .parent()
        .context("the worker's path has no folder")?;
    for runtime in Runtime::ALL {
        let library = folder.join(runtime.library_file());
        if !library.is_file() {
            bail!(
                "{} is missing; build it with: {BUILD_COMMAND}",
                library.display()
            );
        }
    }
    Ok(())
}

/// Measures the warm paths in every run, the first results, then Celery.
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    check_runtimes(cx)?;
    let compiled = Compiled::build(cx)?;
    warm(cx, &compiled, server, squall, report).await?;
    cx.progress("runtimes: a new function's first result");
    first_results(cx, &compiled, server, squall, report).await?;
    celery::measure(cx, report).await;
    Ok(())
}

/// What one language measured warm in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warm {
    /// Sequential sync invocations over HTTP, interleaved with the other languages'.
    pub sync: Latency,
    /// The call inside the worker, as its result's `Squall-Duration-Us` says.
    pub call: Latency,
    /// The CPU time of the call's thread during the call (`Squall-Cpu-Us`): near `call` when
    /// the call computes, far below it when it waits.
    pub call_cpu: Latency,
    /// The worker's (supervisor and process) CPU per sync invocation, in µs.
    pub sync_cpu_us: f64,
    /// Async throughput, raw NATS publishes.
    pub per_second: f64,
    /// The worker's CPU per async invocation, in µs.
    pub async_cpu_us: f64,
    /// The call inside the worker during the throughput measurement (hot).
    pub async_call: Latency,
    /// Its thread's CPU time during that call.
    pub async_call_cpu: Latency,
}

/// One language's sync figures of a run, before its throughput.
struct Sync {
    sync: Latency,
    call: Latency,
    call_cpu: Latency,
    cpu_us: f64,
}

/// Deploys the three noops, starts a worker for each, measures them in every run (sync calls
/// interleaved, one call of each in turn; then each one's throughput, the order rotating),
/// then stops the workers and removes the functions.
async fn warm(
    cx: &Context,
    compiled: &Compiled,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let first_worker = squall.workers.len();
    for lang in Lang::ALL {
        let artifact = noop_artifact(cx, compiled, lang, &format!("{}-warm", stamp()))?;
        squall.deploy(&warm_name(lang), artifact, &spec(cx)).await?;
    }
    for lang in Lang::ALL {
        squall.add_worker(&warm_name(lang)).await?;
    }
    let workers: Vec<Watch> = squall.workers[first_worker..]
        .iter()
        .map(|w| Watch::tree(w.pid()))
        .collect();
    let event = json_event(cx.settings.payload);
    for run in 1..=cx.settings.runs {
        let order: Vec<usize> = (0..Lang::ALL.len())
            .map(|i| (i + run - 1) % Lang::ALL.len())
            .collect();
        let syncs = sync_calls(cx, server, squall, &workers, &order, &event).await?;
        let mut measured = Vec::with_capacity(Lang::ALL.len());
        for (&at, sync) in order.iter().zip(syncs) {
            let lang = Lang::ALL[at];
            let measured_async = throughput(cx, server, lang, workers[at], &event).await?;
            cx.progress(&format!(
                "runtimes {run}/{}: {} noop sync p50 {:.0} µs (call {:.0} µs), {:.0} inv/s",
                cx.settings.runs,
                lang.title(),
                sync.sync.p50,
                sync.call.p50,
                measured_async.per_second
            ));
            let warm = Warm {
                sync: sync.sync,
                call: sync.call,
                call_cpu: sync.call_cpu,
                sync_cpu_us: sync.cpu_us,
                per_second: measured_async.per_second,
                async_cpu_us: measured_async.cpu_us,
                async_call: measured_async.call,
                async_call_cpu: measured_async.call_cpu,
            };
            measured.push((lang, warm));
        }
        measured.sort_by_key(|(lang, _)| Lang::ALL.iter().position(|l| l == lang));
        record_warm(report, cx.settings.concurrency, &measured);
    }
    squall.stop_workers().await;
    for lang in Lang::ALL {
        squall.delete(&warm_name(lang)).await?;
    }
    drive::purge(&server.nats, RESULTS_STREAM).await
}

/// Sequential sync calls of the languages at `order` (indexes into `Lang::ALL`), one of each in
/// turn, so that whatever else the machine does weighs on all alike; with each worker's CPU
/// and each call's time inside the worker (from the results' headers).
async fn sync_calls(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    workers: &[Watch],
    order: &[usize],
    event: &bytes::Bytes,
) -> anyhow::Result<Vec<Sync>> {
    let urls: Vec<String> = order
        .iter()
        .map(|&at| squall.invoke_url(&warm_name(Lang::ALL[at])))
        .collect();
    let calls = cx.settings.latency_n.min(MAX_LATENCY_N);
    interleaved_round_trips(&squall.http, &urls, cx.settings.latency_warmup(), event).await?;
    let mut durations = Vec::with_capacity(order.len());
    for &at in order {
        let name = warm_name(Lang::ALL[at]);
        let results = server
            .nats
            .client
            .subscribe(format!("results.{name}.>"))
            .await?;
        durations.push(collect_durations(results, calls));
    }
    server.nats.client.flush().await?;
    let watched: Vec<Watch> = order.iter().map(|&at| workers[at]).collect();
    let cpu = CpuMeter::start(cx.ticks_per_second, &watched)?;
    let samples = interleaved_round_trips(&squall.http, &urls, calls, event).await?;
    let usage = cpu.usage(calls)?;
    let mut syncs = Vec::with_capacity(order.len());
    for ((samples, usage), durations) in samples.iter().zip(&usage).zip(durations) {
        let times = durations.await.context("the result watcher panicked")?;
        syncs.push(Sync {
            sync: Latency::of(samples),
            call: Latency::of(&times.wall),
            call_cpu: Latency::of(&times.cpu),
            // ms per 1,000 invocations is µs per invocation.
            cpu_us: usage.cpu_ms_per_1000,
        });
    }
    Ok(syncs)
}

/// The calls' own times, as their results' headers say.
#[derive(Debug, Default)]
struct CallTimes {
    /// `Squall-Duration-Us`: the call's wall time inside the worker.
    wall: Vec<Duration>,
    /// `Squall-Cpu-Us`: its thread's CPU time during the call.
    cpu: Vec<Duration>,
}

/// Reads the `Squall-Duration-Us` and `Squall-Cpu-Us` headers of up to `count` results, until
/// they are in or no result came for a few seconds.
fn collect_durations(
    mut results: async_nats::Subscriber,
    count: usize,
) -> tokio::task::JoinHandle<CallTimes> {
    tokio::spawn(async move {
        let mut times = CallTimes::default();
        let micros = |headers: Option<&async_nats::HeaderMap>, name: &str| {
            headers
                .and_then(|h| h.get(name))
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .map(Duration::from_micros)
        };
        while times.wall.len() < count {
            match tokio::time::timeout(Duration::from_secs(5), results.next()).await {
                Ok(Some(message)) => {
                    let headers = message.headers.as_ref();
                    if let Some(wall) = micros(headers, squall_broker::headers::DURATION_US) {
                        times.wall.push(wall);
                    }
                    if let Some(cpu) = micros(headers, squall_broker::headers::CPU_US) {
                        times.cpu.push(cpu);
                    }
                }
                _ => break,
            }
        }
        times
    })
}

/// `per_url` rounds of one synchronous call to each of `urls` in turn; the answers must be
/// 200. Returns each URL's round trips.
async fn interleaved_round_trips(
    http: &reqwest::Client,
    urls: &[String],
    per_url: usize,
    payload: &bytes::Bytes,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut samples = vec![Vec::with_capacity(per_url); urls.len()];
    for _ in 0..per_url {
        for (url, samples) in urls.iter().zip(samples.iter_mut()) {
            let started = Instant::now();
            let response = tokio::time::timeout(
                FIRST_LIMIT,
                http.post(url.as_str()).body(payload.clone()).send(),
            )
            .await
            .context("a synchronous invoke timed out")?
            .context("synchronous invoke request failed")?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != reqwest::StatusCode::OK {
                bail!(
                    "synchronous invoke of {url} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// One language's async figures of a run.
struct Async {
    per_second: f64,
    /// The worker's CPU per invocation, in µs.
    cpu_us: f64,
    /// The call inside the worker, as the results' `Squall-Duration-Us` say.
    call: Latency,
    /// Its thread's CPU time during the call (`Squall-Cpu-Us`).
    call_cpu: Latency,
}

/// `lang`'s async throughput, warmed up, with its worker's CPU per invocation and the calls'
/// time inside the worker.
async fn throughput(
    cx: &Context,
    server: &Server,
    lang: Lang,
    worker: Watch,
    event: &bytes::Bytes,
) -> anyhow::Result<Async> {
    let name = warm_name(lang);
    let load = Load {
        submit: Submit::JetStream {
            subject: jobs_subject(&name),
        },
        completion: Completion::Succeeded,
        results: format!("results.{name}.>"),
        stream: JOBS_STREAM,
        consumer: consumer_name(&name),
    };
    let driver = Driver {
        payload: event,
        ..cx.driver(&server.nats)
    };
    let n = cx.settings.n.min(MAX_N);
    driver.warm_up(&load).await?;
    let results = server.nats.client.subscribe(load.results.clone()).await?;
    server.nats.client.flush().await?;
    let durations = collect_durations(results, n);
    let (t, usage) = driver
        .measure(&load, n, &[worker])
        .await
        .with_context(|| format!("throughput of the {} noop", lang.title()))?;
    driver.quiesce(&load).await?;
    let times = durations.await.context("the result watcher panicked")?;
    Ok(Async {
        per_second: t.per_second,
        cpu_us: usage[0].cpu_ms_per_1000,
        call: Latency::of(&times.wall),
        call_cpu: Latency::of(&times.cpu),
    })
}

/// Records one run's warm figures: each language's, and the runtimes' beyond native's.
pub fn record_warm(report: &mut Report, concurrency: u32, measured: &[(Lang, Warm)]) {
    let native = measured
        .iter()
        .find(|(lang, _)| *lang == Lang::Native)
        .map(|(_, warm)| *warm);
    for &(lang, warm) in measured {
        let (key, title) = (lang.key(), lang.title());
        for (suffix, value, native_value) in [
            ("p50", warm.sync.p50, native.map(|n| n.sync.p50)),
            ("p99", warm.sync.p99, native.map(|n| n.sync.p99)),
        ] {
            report.add(
                S9,
                &format!("rt.sync.{key}.{suffix}"),
                &format!("{title} noop: sync invoke, sequential, {suffix}"),
                "µs",
                value,
            );
            if let (Some(native_value), true) = (native_value, lang != Lang::Native) {
                report.add(
                    S9,
                    &format!("rt.sync.{key}.{suffix}.extra"),
                    &format!("  … {title} beyond the native noop, {suffix}"),
                    "µs",
                    value - native_value,
                );
            }
        }
        report.add(
            S9,
            &format!("rt.call.{key}.p50"),
            &format!("{title} noop: the call inside the worker (Squall-Duration-Us), p50"),
            "µs",
            warm.call.p50,
        );
        if let (Some(native), true) = (native, lang != Lang::Native) {
            report.add(
                S9,
                &format!("rt.call.{key}.p50.extra"),
                &format!("  … {title} beyond the native noop"),
                "µs",
                warm.call.p50 - native.call.p50,
            );
        }
        report.add(
            S9,
            &format!("rt.call.cpu.{key}.p50"),
            &format!("{title} noop: the call's own CPU time (Squall-Cpu-Us), p50"),
            "µs",
            warm.call_cpu.p50,
        );
        report.add(
            S9,
            &format!("rt.cpu.sync.{key}"),
            &format!("{title} noop: worker CPU per sync invocation (supervisor and process)"),
            "µs/inv",
            warm.sync_cpu_us,
        );
        if let (Some(native), true) = (native, lang != Lang::Native) {
            report.add(
                S9,
                &format!("rt.cpu.sync.{key}.extra"),
                &format!("  … {title} beyond the native noop"),
                "µs/inv",
                warm.sync_cpu_us - native.sync_cpu_us,
            );
        }
    }
    for &(lang, warm) in measured {
        let (key, title) = (lang.key(), lang.title());
        report.add(
            S9,
            &format!("rt.tput.{key}"),
            &format!(
                "{title} noop: async throughput, raw NATS publishes, 1 worker process, \
                 concurrency {concurrency}"
            ),
            "inv/s",
            warm.per_second,
        );
        if let (Some(share), true) = (
            native.and_then(|n| share_pct(warm.per_second, n.per_second)),
            lang != Lang::Native,
        ) {
            report.add(
                S9,
                &format!("rt.tput.{key}.share"),
                &format!("  … {title} as % of the native noop"),
                "%",
                share,
            );
        }
        report.add(
            S9,
            &format!("rt.cpu.tput.{key}"),
            &format!("{title} noop: worker CPU per async invocation"),
            "µs/inv",
            warm.async_cpu_us,
        );
        report.add(
            S9,
            &format!("rt.call.tput.{key}.p50"),
            &format!("{title} noop: the call inside the worker during throughput, p50"),
            "µs",
            warm.async_call.p50,
        );
        if let (Some(native), true) = (native, lang != Lang::Native) {
            report.add(
                S9,
                &format!("rt.call.tput.{key}.p50.extra"),
                &format!("  … {title} beyond the native noop"),
                "µs",
                warm.async_call.p50 - native.async_call.p50,
            );
        }
        report.add(
            S9,
            &format!("rt.call.cpu.tput.{key}.p50"),
            &format!("{title} noop: the call's own CPU time during throughput, p50"),
            "µs",
            warm.async_call_cpu.p50,
        );
    }
}

/// One synchronous call, which must answer 200.
async fn invoke(cx: &Context, squall: &Cluster, function: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}?wait={}",
        squall.invoke_url(function),
        FIRST_LIMIT.as_secs()
    );
    let response = squall
        .http
        .post(url)
        .body(json_event(cx.settings.payload))
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status != reqwest::StatusCode::OK {
        bail!(
            "invoking {function} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// A new function's first result for each language, `MAX_FIRST_RUNS` times at most: in a
/// running worker, and from zero.
async fn first_results(
    cx: &Context,
    compiled: &Compiled,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let runs = cx.settings.runs.min(MAX_FIRST_RUNS);
    let stamp = stamp();
    for run in 1..=runs {
        for lang in Lang::ALL {
            let nonce = format!("{stamp}-running-{run}");
            let name = format!("rt-new-{}-{run}", lang.key());
            let (deploy, first) = in_running_worker(
                cx,
                squall,
                &name,
                noop_artifact(cx, compiled, lang, &nonce)?,
            )
            .await?;
            let title = lang.title();
            let key = lang.key();
            report.add(
                S9,
                &format!("rt.deploy.{key}"),
                &format!("{title}: deploy request, PUT → 201 (a bundle is checked)"),
                "ms",
                ms(deploy),
            );
            report.add(
                S9,
                &format!("rt.first.{key}"),
                &format!(
                    "{title}: new function, running worker process (--shared, fresh): 201 → \
                     first result"
                ),
                "ms",
                ms(first),
            );
        }
        for lang in Lang::ALL {
            let nonce = format!("{stamp}-zero-{run}");
            let name = format!("rt-zero-{}-{run}", lang.key());
            let artifact = noop_artifact(cx, compiled, lang, &nonce)?;
            let first = from_zero(cx, server, squall, &name, artifact).await?;
            report.add(
                S9,
                &format!("rt.zero.{}", lang.key()),
                &format!(
                    "{}: new function, fleet at zero (--min 0): request → first result",
                    lang.title()
                ),
                "ms",
                ms(first),
            );
        }
        cx.progress(&format!("runtimes: first results {run}/{runs}"));
    }
    for lang in Lang::ALL {
        report.list_values(&format!("rt.first.{}", lang.key()));
        report.list_values(&format!("rt.zero.{}", lang.key()));
    }
    Ok(())
}

/// Starts a fresh `--shared` worker (serving the benchmark's function, so that it is running
/// and has loaded no bundle), deploys `artifact` as `name` and times the deploy and the first
/// result after it. A fresh process each time: a process loads one Python bundle at most.
/// Returns (PUT → 201, 201 → first result).
async fn in_running_worker(
    cx: &Context,
    squall: &mut Cluster,
    name: &str,
    artifact: Vec<u8>,
) -> anyhow::Result<(Duration, Duration)> {
    squall.add_shared_worker(FUNCTION).await?;
    let outcome = async {
        let started = Instant::now();
        squall.deploy(name, artifact, &spec(cx)).await?;
        let deployed = Instant::now();
        invoke(cx, squall, name).await?;
        anyhow::Ok((deployed - started, deployed.elapsed()))
    }
    .await;
    if outcome.is_err() {
        for worker in &squall.workers {
            eprintln!("--- {} log (end) ---\n{}", worker.name, worker.log_tail(20));
        }
    }
    squall.stop_workers().await;
    squall.delete(name).await?;
    outcome
}

/// Deploys `artifact` as `name`, starts a fleet supervisor for it with no minimum, waits for
/// its heartbeat and times a synchronous call from the request to its 200: the process start,
/// the load and the call.
async fn from_zero(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    name: &str,
    artifact: Vec<u8>,
) -> anyhow::Result<Duration> {
    squall.deploy(name, artifact, &spec(cx)).await?;
    let mut command = Command::new(&cx.env.worker);
    command
        .env("RUST_LOG", "info")
        .envs(cx.env.broker.login(Role::Worker))
        .arg("fleet")
        .arg("--nats-url")
        .arg(&server.url)
        .arg("--data-dir")
        .arg(cx.dir.join(format!("fleet-{name}")))
        .arg("--function")
        .arg(name)
        .args(["--min", "0", "--max", "1", "--idle-secs", "600"])
        .args(["--interval-ms", "100"]);
    let log = cx.dir.join(format!("fleet-{name}.log"));
    let mut fleet = Proc::spawn(&format!("fleet-{name}"), command, log)?;
    let outcome = async {
        wait_heartbeat(squall, &mut fleet).await?;
        let started = Instant::now();
        invoke(cx, squall, name).await?;
        anyhow::Ok(started.elapsed())
    }
    .await;
    if outcome.is_err() {
        eprintln!("--- {} log (end) ---\n{}", fleet.name, fleet.log_tail(20));
    }
    fleet.terminate(Duration::from_secs(10)).await;
    squall.delete(name).await?;
    outcome
}

/// Waits until `GET /v1/fleet` lists the supervisor `fleet` (by its pid): before its heartbeat
/// it does not scale, and an earlier supervisor's must not be taken for it.
async fn wait_heartbeat(squall: &Cluster, fleet: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + FIRST_LIMIT;
    loop {
        let view: serde_json::Value = squall
            .http
            .get(format!("{}/v1/fleet", squall.url))
            .send()
            .await?
            .json()
            .await
            .context("GET /v1/fleet is not JSON")?;
        let listed = view["supervisors"].as_array().is_some_and(|supervisors| {
            supervisors
                .iter()
                .any(|s| s["pid"].as_u64() == Some(u64::from(fleet.pid())))
        });
        if listed {
            return Ok(());
        }
        if let Some(status) = fleet.exited() {
            bail!(
                "the fleet supervisor exited with {status}:\n{}",
                fleet.log_tail(20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the fleet supervisor never appeared in GET /v1/fleet:\n{}",
                fleet.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The targets of the runtimes phase, when it ran.
pub fn add_targets(report: &mut Report) {
    report.target(
        "Python noop sync p50 <= 20 µs beyond the native noop",
        "rt.sync.python.p50.extra",
        |v| v <= 20.0,
    );
    report.beside_last_target("p99 beyond native", "rt.sync.python.p99.extra");
    report.beside_last_target("the call inside the worker", "rt.call.python.p50.extra");
    report.target(
        "JavaScript noop sync p50 <= 10 µs beyond the native noop",
        "rt.sync.js.p50.extra",
        |v| v <= 10.0,
    );
    report.beside_last_target("p99 beyond native", "rt.sync.js.p99.extra");
    report.beside_last_target("the call inside the worker", "rt.call.js.p50.extra");
    report.target(
        "a new Python function's first result <= 150 ms (running worker, 201 → result)",
        "rt.first.python",
        |v| v <= 150.0,
    );
    report.beside_last_target("deploy PUT → 201", "rt.deploy.python");
    report.beside_last_target("from zero", "rt.zero.python");
    report.target(
        "a new JavaScript function's first result <= 10 ms (running worker, 201 → result)",
        "rt.first.js",
        |v| v <= 10.0,
    );
    report.beside_last_target("deploy PUT → 201", "rt.deploy.js");
    report.beside_last_target("from zero", "rt.zero.js");
    // Go's and Java's per-call cost is a few µs: it is read inside the worker (the call's own
    // time beyond the native noop's), where HTTP round trips do not blur it.
    for (title, key, per_call, first) in [("Go", "go", 2.0, 20.0), ("Java", "java", 5.0, 300.0)] {
        report.target(
            &format!("{title} noop call <= {per_call} µs beyond the native noop (inside the worker, warm)"),
            &format!("rt.call.{key}.p50.extra"),
            move |v| v <= per_call,
        );
        report.beside_last_target(
            "sync p50 beyond native",
            &format!("rt.sync.{key}.p50.extra"),
        );
        report.beside_last_target(
            "during throughput",
            &format!("rt.call.tput.{key}.p50.extra"),
        );
        report.target(
            &format!("a new {title} function's first result <= {first} ms (running worker, 201 → result)"),
            &format!("rt.first.{key}"),
            move |v| v <= first,
        );
        report.beside_last_target("deploy PUT → 201", &format!("rt.deploy.{key}"));
        report.beside_last_target("from zero", &format!("rt.zero.{key}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(p50: f64, p99: f64, cpu: f64, per_second: f64) -> Warm {
        Warm {
            sync: Latency {
                p50,
                p99,
                p999: p99,
                count: 100,
            },
            call: Latency {
                p50: p50 / 10.0,
                p99: p99 / 10.0,
                p999: p99 / 10.0,
                count: 100,
            },
            call_cpu: Latency {
                p50: p50 / 12.0,
                p99: p99 / 12.0,
                p999: p99 / 12.0,
                count: 100,
            },
            sync_cpu_us: cpu,
            per_second,
            async_cpu_us: cpu / 2.0,
            async_call: Latency {
                p50: p50 / 20.0,
                p99: p99 / 20.0,
                p999: p99 / 20.0,
                count: 100,
            },
            async_call_cpu: Latency {
                p50: p50 / 24.0,
                p99: p99 / 24.0,
                p999: p99 / 24.0,
                count: 100,
            },
        }
    }

    fn value(report: &Report, key: &str) -> Option<f64> {
        report
            .figures
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| f.values.first().copied())
    }

    #[test]
    fn a_runtimes_overhead_is_its_latency_minus_the_native_noops() {
        let mut report = Report::default();
        let measured = [
            (Lang::Native, warm(100.0, 200.0, 30.0, 40_000.0)),
            (Lang::Python, warm(118.0, 260.0, 45.0, 10_000.0)),
            (Lang::JavaScript, warm(107.0, 230.0, 36.0, 30_000.0)),
        ];
        record_warm(&mut report, 64, &measured);
        assert_eq!(value(&report, "rt.sync.python.p50.extra"), Some(18.0));
        assert_eq!(value(&report, "rt.sync.python.p99.extra"), Some(60.0));
        assert_eq!(value(&report, "rt.sync.js.p50.extra"), Some(7.0));
        assert_eq!(value(&report, "rt.cpu.sync.python.extra"), Some(15.0));
        assert!((value(&report, "rt.call.python.p50.extra").unwrap() - 1.8).abs() < 1e-9);
        assert!((value(&report, "rt.call.tput.js.p50.extra").unwrap() - 0.35).abs() < 1e-9);
        assert_eq!(value(&report, "rt.tput.python.share"), Some(25.0));
        assert_eq!(value(&report, "rt.tput.js.share"), Some(75.0));
        assert_eq!(value(&report, "rt.sync.native.p50.extra"), None);
        assert_eq!(value(&report, "rt.tput.native.share"), None);
    }

    #[test]
    fn without_the_native_noop_nothing_is_compared() {
        let mut report = Report::default();
        record_warm(
            &mut report,
            1,
            &[(Lang::Python, warm(118.0, 260.0, 45.0, 10_000.0))],
        );
        assert_eq!(value(&report, "rt.sync.python.p50"), Some(118.0));
        assert_eq!(value(&report, "rt.sync.python.p50.extra"), None);
        assert_eq!(value(&report, "rt.tput.python.share"), None);
        let label = &report
            .figures
            .iter()
            .find(|f| f.key == "rt.tput.python")
            .unwrap()
            .label;
        assert!(label.contains("concurrency 1"), "{label}");
    }

    #[test]
    fn the_event_is_a_json_object_of_the_payload_size() {
        for size in [256, 11, 12, 4096] {
            let event = json_event(size);
            assert_eq!(event.len(), size, "size {size}");
            let parsed: serde_json::Value = serde_json::from_slice(&event).unwrap();
            assert!(parsed["data"].is_string(), "{parsed}");
        }
        assert_eq!(&json_event(0)[..], br#"{"data":""}"#);
    }

    #[test]
    fn a_share_needs_a_positive_reference() {
        assert_eq!(share_pct(50.0, 200.0), Some(25.0));
        assert_eq!(share_pct(50.0, 0.0), None);
    }

    #[test]
    fn each_nonce_packs_a_new_bundle_with_the_noop_handler() {
        let dir = tempfile::tempdir().unwrap();
        let java = dir.path().join("java");
        std::fs::create_dir_all(java.join("classes/bench")).unwrap();
        std::fs::write(java.join("classes/bench/Noop.class"), b"\xca\xfe").unwrap();
        let compiled = Compiled {
            go: Vec::new(),
            java,
        };
        for runtime in Runtime::ALL {
            let a = noop_bundle(dir.path(), &compiled, runtime, "a").unwrap();
            let b = noop_bundle(dir.path(), &compiled, runtime, "b").unwrap();
            assert_ne!(a, b, "{runtime}: two nonces packed the same bytes");
            let manifest = squall_bundle::read_manifest(&a).unwrap();
            assert_eq!(manifest.validate().unwrap(), runtime);
            let handler = match runtime {
                Runtime::Java17 => crate::compiled::JAVA_HANDLER,
                _ => HANDLER,
            };
            assert_eq!(manifest.handler, handler);
        }
    }

    #[test]
    fn the_noop_handlers_return_the_event() {
        let (file, python) = noop_source(Runtime::Python311, "n1");
        assert_eq!(file, "app.py");
        assert!(python.contains("def handler(event, context):\n    return event\n"));
        assert!(python.contains("n1"));
        let (file, js) = noop_source(Runtime::JavaScript, "n2");
        assert_eq!(file, "app.mjs");
        assert!(js.contains("export async function handler(event, context)"));
        assert!(js.contains("return event;"));
        assert!(js.contains("n2"));
    }
}
