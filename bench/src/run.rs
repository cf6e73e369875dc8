//! The benchmark's order of work: set up one nats-server and dispatcher, then in every run
//! measure the bare reference, Squall (with a gateway dispatcher without the query index beside
//! the first during raw NATS) and its batch submission back to back, then the cold paths,
//! scale-from-zero and 20 functions busy at once against one (and, when asked for, the language
//! runtimes beside native and the query index at scale); then, when asked for, the cluster
//! phase on clusters of its own (`replicated`); then report (with each figure's change against
//! the baseline). It only orchestrates: every phase lives in a module of its own below it, and
//! none imports it.

use crate::baseline::{self, Baseline};
use crate::cluster::Cluster;
use crate::context::{Context, Phase, Server, Settings, S5};
use crate::measure;
use crate::procs::{version_of, Environment, NatsServer};
use crate::record::mib;
use crate::report::{Machine, Report};
use crate::resources::{clock_ticks_per_second, Watch};
use crate::targets::add_targets;
use crate::{batch, cold, many, payloads, reference, replicated};
use crate::{runtimes, scale, squall, state, zero};
use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// Runs the whole benchmark and writes its report.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let env = Environment::discover(settings.artifact.clone(), settings.open_broker)?;
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
    let nats = measure::connect(
        env.broker.options(),
        nats_server.url.as_str(),
        "nats-server",
    )
    .await?;
    let cluster = Cluster::start(env, &nats_server.url, dir.to_path_buf()).await?;
    // Also a web function (`/function/noop`, no key), for the web requests' sync latency.
    let spec = json!({ "concurrency": settings.concurrency, "web": { "auth": "none" } });
    measure::deploy(&cluster, &nats, artifact, &spec).await?;
    let cx = Context {
        payload: Bytes::from(vec![b'x'; settings.payload]),
        ticks_per_second: clock_ticks_per_second(),
        settings: settings.clone(),
        env: env.clone(),
        dir: dir.to_path_buf(),
        artifact: artifact.to_vec(),
        started,
    };
    let server = Server {
        url: nats_server.url.clone(),
        pid: nats_server.process.pid(),
        nats,
    };
    let mut squall = cluster;
    cx.progress(&format!(
        "nats-server at {}, dispatcher at {}; {} run(s) of n={}",
        server.url, squall.url, cx.settings.runs, cx.settings.n
    ));
    let measured = async {
        let dispatcher_idle = mib(Watch::process(squall.dispatcher.pid()).rss_kib()?);
        report.add(
            S5,
            "res.dispatcher.rss.idle",
            "dispatcher RSS, idle (started, one function deployed)",
            "MiB",
            dispatcher_idle,
        );
        measure_all(&cx, &server, &mut squall, report).await
    }
    .await;
    // After a failure, shows the end of the Squall processes' logs.
    measure::stop(&mut squall, measured.is_err()).await;
    drop(nats_server);
    measured
}

/// Runs every selected single-node phase in its order: the per-run phases run by run, then
/// the others once each.
async fn measure_all(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let settings = &cx.settings;
    // Set once the dispatcher turned out to have no batch endpoint: the later runs skip the
    // batch measurement (the report already says why).
    let mut batch_missing = false;
    // Set once the dispatcher turned out to have no `--query-index`: the later runs start no
    // gateway (the report already says why).
    let mut gateway_missing = false;
    for run in 1..=settings.runs {
        if settings.runs_phase(Phase::Bare) {
            cx.progress(&format!("run {run}/{}: bare reference", settings.runs));
            reference::measure(cx, server, report, run)
                .await
                .context("bare reference")?;
        }
        if settings.runs_phase(Phase::Squall) {
            cx.progress(&format!("run {run}/{}: Squall", settings.runs));
            squall::measure(cx, server, squall, report, &mut gateway_missing, run)
                .await
                .context("Squall")?;
        }
        if settings.runs_phase(Phase::Batch) && !batch_missing {
            cx.progress(&format!("run {run}/{}: HTTP batch", settings.runs));
            batch_missing = !batch::measure(cx, server, squall, report, run)
                .await
                .context("HTTP batch")?;
        }
    }
    if settings.runs_phase(Phase::Cold) {
        cx.progress("cold paths");
        cold::measure(cx, server, squall, report)
            .await
            .context("cold paths")?;
    }
    if settings.runs_phase(Phase::State) {
        cx.progress("function state");
        state::measure(cx, server, squall, report)
            .await
            .context("function state")?;
    }
    if settings.runs_phase(Phase::Payloads) {
        cx.progress("large payloads");
        payloads::measure(cx, server, squall, report)
            .await
            .context("large payloads")?;
    }
    if settings.runs_phase(Phase::Zero) {
        cx.progress("scale-from-zero");
        zero::measure(cx, server, squall, report)
            .await
            .context("scale-from-zero")?;
    }
    if settings.runs_phase(Phase::Many) {
        cx.progress("20 functions busy at once against one");
        many::measure(cx, server, squall, report)
            .await
            .context("20 functions against one")?;
    }
    if settings.runs_phase(Phase::Runtimes) {
        cx.progress("language runtimes beside native");
        runtimes::measure(cx, server, squall, report)
            .await
            .context("language runtimes")?;
    }
    if settings.runs_phase(Phase::Scale) {
        cx.progress("query index at scale");
        scale::measure(cx, server, squall, report)
            .await
            .context("query index at scale")?;
    }
    Ok(())
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
