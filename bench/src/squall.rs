//! Squall, once per run: raw-NATS and HTTP async throughput with one and two workers (a
//! gateway dispatcher without the query index beside the first during raw NATS), the probes
//! that split a synchronous invocation, sync and web latency, and the processes' resources.

use crate::bare;
use crate::cluster::{lacks_query_index_flag, Cluster};
use crate::context::{Context, Server, S2, S3, S5};
use crate::drive::{self, Submit};
use crate::measure::{Load, FUNCTION};
use crate::procs::Proc;
use crate::record::{add_latency, add_throughput, add_usage, bare_figure, mib};
use crate::report::Report;
use crate::resources::{process_tree, CpuMeter, RssSampler, Watch};
use crate::stats::Latency;
use anyhow::Context as _;
use squall_broker::names::RESULTS_STREAM;
use std::time::{Duration, Instant};

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

/// Measures Squall in run `run` (numbered from 1). `gateway_missing` is set once the dispatcher
/// turned out to have no `--query-index`: the later runs start no gateway (the report already
/// says why).
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
    gateway_missing: &mut bool,
    run: usize,
) -> anyhow::Result<()> {
    let s = cx.settings.clone();
    let raw = Load::squall_raw();
    let http = Load::squall(Submit::Http {
        http: squall.http.clone(),
        url: format!("{}?async=true", squall.invoke_url(FUNCTION)),
        submitters: s.http_submitters,
    });
    let sync_url = squall.invoke_url(FUNCTION);

    squall.add_worker(FUNCTION).await?;
    // A worker is measured with its children: by default it is a supervisor running the
    // worker proper as a child process.
    let dispatcher = Watch::process(squall.dispatcher.pid());
    let worker = Watch::tree(squall.workers[0].pid());
    let nats = Watch::process(server.pid);
    let own = Watch::process(std::process::id());
    report.add(
        S5,
        "res.worker.rss.idle",
        "worker RSS, idle (started, function loaded; with its supervisor)",
        "MiB",
        mib(worker.rss_kib()?),
    );
    // The worker proper alone: what every added worker process costs, where the supervisor is
    // one per host (or absent under an orchestrator that restarts processes itself).
    let alone: u64 = process_tree(squall.workers[0].pid())
        .into_iter()
        .skip(1)
        .filter_map(|pid| Watch::process(pid).rss_kib().ok())
        .sum();
    if alone > 0 {
        report.add(
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
    let gateway = start_gateway(cx, squall, report, gateway_missing, run).await?;
    let gateway_watch = gateway.as_ref().map(|g| Watch::process(g.pid()));
    let gateway_sampler =
        gateway_watch.map(|w| RssSampler::start(vec![w], Duration::from_millis(20)));
    let mut watched = vec![worker, dispatcher, nats];
    watched.extend(gateway_watch);
    let (t, usage) = cx
        .driver(&server.nats)
        .warm_then_measure(&raw, s.n, &watched)
        .await?;
    add_usage(
        report,
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
        report.add(
            S5,
            cpu_key,
            cpu_label,
            cpu_unit,
            gateway_usage.cpu_ms_per_1000,
        );
        report.add(
            S5,
            ctx_key,
            ctx_label,
            ctx_unit,
            gateway_usage.switches_per_unit,
        );
    }
    // The key is the one the dispatcher's raw-NATS CPU always had (it held the index then too),
    // so the baseline still compares.
    report.add(
        S5,
        "res.cpu.nats.dispatcher",
        "  … the index holder's CPU per result, raw NATS (the index's own cost)",
        "µs/inv",
        usage[1].cpu_ms_per_1000,
    );
    report.add(
        S5,
        "res.ctx.nats.dispatcher",
        "  … the index holder's context switches per result, raw NATS",
        "/inv",
        usage[1].switches_per_unit,
    );
    if let (Some(mut process), Some(sampler)) = (gateway, gateway_sampler) {
        let (key, label, unit) = GATEWAY_FIGURES[3];
        report.add(S5, key, label, unit, mib(sampler.stop()[0]));
        process.terminate(Duration::from_secs(10)).await;
    }
    add_throughput(
        report,
        run,
        "squall.tput.nats.1",
        "raw NATS publishes, 1 worker",
        "bare.tput.1",
        t.per_second,
    );
    cx.driver(&server.nats).quiesce(&raw).await?;

    // Through the dispatcher, one worker.
    let (t, usage) = cx
        .driver(&server.nats)
        .warm_then_measure(&http, s.n, &[worker, dispatcher, nats, own])
        .await?;
    add_usage(
        report,
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
        report,
        run,
        "squall.tput.http.1",
        "through the dispatcher (HTTP async), 1 worker",
        "bare.tput.1",
        t.per_second,
    );
    report.add(
        S2,
        "squall.submit.http.1",
        "  … of which HTTP submission alone (202s per second)",
        "inv/s",
        s.n as f64 / t.submitted_in.as_secs_f64(),
    );
    cx.driver(&server.nats).quiesce(&http).await?;

    // Probes that split a synchronous invocation into parts.
    probes(cx, server, squall, report).await?;

    // Synchronous invocations over HTTP.
    drive::http_round_trips(&squall.http, &sync_url, 1, s.latency_warmup(), &cx.payload).await?;
    let cpu = CpuMeter::start(cx.ticks_per_second, &[worker, dispatcher])?;
    let sequential =
        drive::http_round_trips(&squall.http, &sync_url, 1, s.latency_n, &cx.payload).await?;
    let usage = cpu.usage(s.latency_n)?;
    add_usage(
        report,
        "sync, sequential",
        &[
            ("sync.worker", "worker", true),
            ("sync.dispatcher", "dispatcher", true),
        ],
        &usage,
    );
    let latency = Latency::of(&sequential);
    add_latency(
        report,
        S3,
        "squall.sync.seq",
        "sync invoke, sequential",
        &latency,
    );
    if let Some(bare) = bare_figure(report, "bare.rt.seq.p50", run) {
        report.add(
            S3,
            "squall.sync.seq.p50.ratio",
            "  … p50 ÷ bare sequential round trip p50",
            "×",
            latency.p50 / bare,
        );
    }
    if let Some(bare) = bare_figure(report, "bare.rt.seq.p99", run) {
        report.add(
            S3,
            "squall.sync.seq.p99.ratio",
            "  … p99 ÷ bare sequential round trip p99",
            "×",
            latency.p99 / bare,
        );
    }
    web_latency(cx, squall, report, run).await?;
    let per_client = (s.latency_n / s.clients).max(1);
    let started = Instant::now();
    let concurrent =
        drive::http_round_trips(&squall.http, &sync_url, s.clients, per_client, &cx.payload)
            .await?;
    let rate = concurrent.len() as f64 / started.elapsed().as_secs_f64();
    let latency = Latency::of(&concurrent);
    let label = format!("sync invoke, {} concurrent clients", s.clients);
    add_latency(report, S3, "squall.sync.conc", &label, &latency);
    if let Some(bare) = bare_figure(report, "bare.rt.conc.p50", run) {
        report.add(
            S3,
            "squall.sync.conc.p50.ratio",
            &format!("  … p50 ÷ bare round trip p50 with {} clients", s.clients),
            "×",
            latency.p50 / bare,
        );
    }
    report.add(
        S3,
        "squall.sync.conc.rate",
        &format!("{label}, completed requests per second"),
        "req/s",
        rate,
    );
    let peaks = sampler.stop();
    report.add(
        S5,
        "res.dispatcher.rss.load",
        "dispatcher RSS, peak under load",
        "MiB",
        mib(peaks[0]),
    );
    report.add(
        S5,
        "res.worker.rss.load",
        "worker RSS, peak under load (with its supervisor)",
        "MiB",
        mib(peaks[1]),
    );
    cx.driver(&server.nats).quiesce(&raw).await?;

    // Two workers.
    let driver = cx.driver(&server.nats);
    let t = driver.with_workers(squall, &raw, 2, s.n).await?;
    add_throughput(
        report,
        run,
        "squall.tput.nats.2",
        "raw NATS publishes, 2 workers",
        "bare.tput.2",
        t.per_second,
    );
    let t = cx.driver(&server.nats).throughput(&http, s.n).await?;
    add_throughput(
        report,
        run,
        "squall.tput.http.2",
        "through the dispatcher (HTTP async), 2 workers",
        "bare.tput.2",
        t.per_second,
    );
    cx.driver(&server.nats).quiesce(&http).await?;
    squall.stop_workers().await;
    drive::purge(&server.nats, RESULTS_STREAM).await?;
    Ok(())
}

/// Starts this run's gateway dispatcher (`--query-index false`) and records its idle RSS; `None`
/// when the dispatcher has no such flag (recorded as n/a the first time).
async fn start_gateway(
    cx: &Context,
    squall: &Cluster,
    report: &mut Report,
    gateway_missing: &mut bool,
    run: usize,
) -> anyhow::Result<Option<Proc>> {
    if *gateway_missing {
        return Ok(None);
    }
    match squall.start_gateway(&format!("gateway-{run}")).await {
        Ok(process) => {
            let (key, label, unit) = GATEWAY_FIGURES[2];
            let idle = mib(Watch::process(process.pid()).rss_kib()?);
            report.add(S5, key, label, unit, idle);
            Ok(Some(process))
        }
        Err(error) if lacks_query_index_flag(&format!("{error:#}")) => {
            let why = "n/a: the dispatcher has no --query-index";
            cx.progress(why);
            for (key, label, unit) in GATEWAY_FIGURES {
                report.missing(S5, key, label, unit, why);
            }
            *gateway_missing = true;
            Ok(None)
        }
        Err(error) => Err(error.context("cannot start the gateway dispatcher")),
    }
}

/// Times, one at a time, the steps a synchronous invocation adds to the bare round trip or
/// shares with it: an HTTP exchange with the dispatcher that touches no broker, one broker
/// request/response (a KV get of the function's record, what a registry read costs), and one
/// JetStream publish with its ack.
async fn probes(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = cx.settings.latency_n.min(2000);
    let warmup = cx.settings.latency_warmup();
    let http = squall.http.clone();
    let healthz = format!("{}/healthz", squall.url);
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
    report.add(
        S3,
        "probe.http",
        "probe: HTTP exchange alone (GET /healthz), p50",
        "µs",
        Latency::of(&samples).p50,
    );
    let registry = server
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
    report.add(
        S3,
        "probe.kv",
        "probe: one broker request/response (KV get of the record), p50",
        "µs",
        Latency::of(&samples).p50,
    );
    let js = server.nats.js.clone();
    let payload = cx.payload.clone();
    let publish_step = || {
        let (js, payload) = (js.clone(), payload.clone());
        async move {
            js.publish(bare::PROBE_SUBJECT, payload).await?.await?;
            Ok(())
        }
    };
    drive::probe(warmup, publish_step).await?;
    let samples = drive::probe(count, publish_step).await?;
    report.add(
        S3,
        "probe.publish",
        &format!(
            "probe: one JetStream publish + ack ({} B), p50",
            cx.settings.payload
        ),
        "µs",
        Latency::of(&samples).p50,
    );
    Ok(())
}

/// Sequential web requests (`POST /function/noop`, the same payload) against the bare round
/// trip: the sync path's targets apply to web functions too. On the web listener, or at the
/// API's address for a commit older than it; skipped by a dispatcher without web functions
/// (an older commit in an A/B run).
async fn web_latency(
    cx: &Context,
    squall: &Cluster,
    report: &mut Report,
    run: usize,
) -> anyhow::Result<()> {
    let mut url = format!("{}/function/{FUNCTION}", squall.web_url);
    let on_web = squall.http.post(&url).body("x").send().await;
    if on_web.is_err() {
        url = format!("{}/function/{FUNCTION}", squall.url);
    }
    let probe = squall.http.post(&url).body("x").send().await?;
    if probe.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    let samples =
        drive::http_round_trips(&squall.http, &url, 1, cx.settings.latency_n, &cx.payload)
            .await
            .context("web requests")?;
    let latency = Latency::of(&samples);
    add_latency(
        report,
        S3,
        "squall.web.seq",
        "web request (/function/noop), sequential",
        &latency,
    );
    if let Some(bare) = bare_figure(report, "bare.rt.seq.p50", run) {
        report.add(
            S3,
            "squall.web.seq.p50.ratio",
            "  … p50 ÷ bare sequential round trip p50",
            "×",
            latency.p50 / bare,
        );
    }
    Ok(())
}
