//! Twenty functions busy at once against one: the same jobs spread over 20 functions (a pool of
//! one process each) or all sent to one function (a pool of 20 processes), each under a fleet
//! supervisor with the same process cap, in every run.
//!
//! The comparison holds everything but the number of functions equal: the same jobs (raw NATS
//! publishes, as in section 2), the same fleet cap (`--max 20`), the same number of worker
//! processes (20: floors keep them up, so neither side waits for its pools to grow) and the
//! same concurrency per process (`--concurrency`), hence the same jobs in flight at most. What
//! differs is what 20 functions cost: 20 JetStream consumers instead of one, 20 loaded
//! functions, 20 pools for the supervisor to read.

use crate::broker::Role;
use crate::cluster::Cluster;
use crate::context::{Context, Server, S2, S5};
use crate::drive::{self, Completion, Submit};
use crate::measure::Load;
use crate::procs::Proc;
use crate::record::mib;
use crate::report::Report;
use crate::resources::{process_tree, Usage, Watch};
use anyhow::bail;
use squall_broker::names::{consumer_name, jobs_subject, JOBS_STREAM};
use std::process::Command;
use std::time::{Duration, Instant};

/// Functions busy at once, and the processes of either side.
const FUNCTIONS: usize = 20;
/// The function that gets every job on the other side.
const ONE: &str = "busy-one";
/// Most jobs per measurement whatever `--n` says, so the phase stays under a minute on 2 cores.
const MAX_N: usize = 20_000;
/// The longest a fleet may take to have its processes ready.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Every function's results.
const RESULTS: &str = "results.*.*";

/// The name of busy function `i`.
fn busy_name(i: usize) -> String {
    format!("busy-{i:02}")
}

/// Which side of the comparison a fleet serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Every job to `ONE`, its pool floored at `FUNCTIONS` processes.
    One,
    /// Jobs spread over `FUNCTIONS` functions, a pool of one process each.
    Spread,
}

/// What one side measured.
struct Measured {
    per_second: f64,
    /// The fleet with its processes, then nats-server.
    usage: Vec<Usage>,
}

/// Deploys the functions, measures both sides in every run (alternating which goes first) and
/// removes the functions.
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let spec = serde_json::json!({ "concurrency": cx.settings.concurrency });
    let names: Vec<String> = (0..FUNCTIONS).map(busy_name).collect();
    for name in names.iter().map(String::as_str).chain([ONE]) {
        squall.deploy(name, cx.artifact.clone(), &spec).await?;
    }
    let n = cx.settings.n.min(MAX_N);
    for run in 1..=cx.settings.runs {
        let order = if run % 2 == 1 {
            [Side::One, Side::Spread]
        } else {
            [Side::Spread, Side::One]
        };
        let (mut one, mut spread) = (None, None);
        for side in order {
            let measured = measure_side(cx, server, report, side, &names, n).await?;
            cx.progress(&format!(
                "{FUNCTIONS} functions against one {run}/{}: {side:?} {:.0} jobs/s",
                cx.settings.runs, measured.per_second
            ));
            match side {
                Side::One => one = Some(measured),
                Side::Spread => spread = Some(measured),
            }
        }
        if let (Some(one), Some(spread)) = (one, spread) {
            record(report, &one, &spread);
        }
    }
    for name in names.iter().map(String::as_str).chain([ONE]) {
        squall.delete(name).await?;
    }
    Ok(())
}

fn record(report: &mut Report, one: &Measured, spread: &Measured) {
    report.add(
        S2,
        "squall.tput.fn1",
        "raw NATS publishes, all to one function, a pool of 20 processes (fleet --max 20)",
        "inv/s",
        one.per_second,
    );
    report.add(
        S2,
        "squall.tput.fn20",
        "raw NATS publishes, the same jobs spread over 20 functions, a pool of 1 process each \
         (same fleet cap, processes and per-process concurrency)",
        "inv/s",
        spread.per_second,
    );
    report.add(
        S2,
        "squall.tput.fn20.ratio",
        "  … 20 functions busy at once as % of one function",
        "%",
        100.0 * spread.per_second / one.per_second,
    );
    for (key, who, measured) in [
        ("fn1", "one function", one),
        ("fn20", "20 functions", spread),
    ] {
        report.add(
            S5,
            &format!("res.cpu.{key}.fleet"),
            &format!("fleet supervisor and its 20 processes CPU per 1,000 invocations, {who} busy"),
            "ms/1k",
            measured.usage[0].cpu_ms_per_1000,
        );
        report.add(
            S5,
            &format!("res.cpu.{key}.nats"),
            &format!("nats-server CPU per 1,000 invocations, {who} busy"),
            "ms/1k",
            measured.usage[1].cpu_ms_per_1000,
        );
    }
}

/// Starts a fleet for `side`, waits for its 20 processes, warms up, measures `n` jobs and
/// stops the fleet.
async fn measure_side(
    cx: &Context,
    server: &Server,
    report: &mut Report,
    side: Side,
    names: &[String],
    n: usize,
) -> anyhow::Result<Measured> {
    let functions: Vec<String> = match side {
        Side::One => vec![ONE.to_string()],
        Side::Spread => names.to_vec(),
    };
    let mut fleet = start_fleet(cx, server, side, &functions)?;
    let outcome = async {
        wait_ready(&mut fleet).await?;
        if side == Side::Spread {
            // Each process serves its own function, loaded and never called yet.
            let children: Vec<u32> = process_tree(fleet.pid()).into_iter().skip(1).collect();
            let kib: u64 = children
                .iter()
                .filter_map(|&pid| Watch::process(pid).rss_kib().ok())
                .sum();
            report.add(
                S5,
                "res.worker.rss.function.many",
                "a function's worker process RSS, idle (mean of the 20 pools' processes, each \
                 its function loaded, before any call)",
                "MiB",
                mib(kib) / children.len().max(1) as f64,
            );
        }
        let load = Load {
            submit: Submit::JetStreamSpread {
                subjects: functions.iter().map(|f| jobs_subject(f)).collect(),
            },
            completion: Completion::Succeeded,
            results: RESULTS.to_string(),
            stream: JOBS_STREAM,
            consumer: consumer_name(&functions[0]),
        };
        let driver = cx.driver(&server.nats);
        driver.throughput(&load, driver.warmup).await?;
        quiesce(server, &functions).await?;
        let (t, usage) = driver
            .measure(
                &load,
                n,
                &[Watch::tree(fleet.pid()), Watch::process(server.pid)],
            )
            .await?;
        quiesce(server, &functions).await?;
        anyhow::Ok(Measured {
            per_second: t.per_second,
            usage,
        })
    }
    .await;
    if outcome.is_err() {
        eprintln!("--- {} log (end) ---\n{}", fleet.name, fleet.log_tail(20));
    }
    fleet.terminate(Duration::from_secs(20)).await;
    outcome
}

/// Starts a fleet supervisor serving `functions`, each pool floored so that the fleet runs
/// `FUNCTIONS` processes in all, under a cap of as many.
fn start_fleet(
    cx: &Context,
    server: &Server,
    side: Side,
    functions: &[String],
) -> anyhow::Result<Proc> {
    let name = match side {
        Side::One => "fleet-one",
        Side::Spread => "fleet-spread",
    };
    let floor = FUNCTIONS / functions.len();
    let mut command = Command::new(&cx.env.worker);
    command
        .env("RUST_LOG", "info")
        .envs(cx.env.broker.login(Role::Worker))
        .arg("fleet")
        .arg("--nats-url")
        .arg(&server.url)
        .arg("--data-dir")
        .arg(cx.dir.join(name));
    for function in functions {
        command.arg("--function").arg(function);
    }
    command
        .arg("--min")
        .arg(floor.to_string())
        .arg("--max")
        .arg(FUNCTIONS.to_string())
        // Nothing scales down during the measurement.
        .args(["--idle-secs", "600", "--interval-ms", "100"]);
    Proc::spawn(name, command, cx.dir.join(format!("{name}.log")))
}

/// Waits until the fleet runs `FUNCTIONS` processes that all said their function is ready.
async fn wait_ready(fleet: &mut Proc) -> anyhow::Result<()> {
    fleet
        .wait_for_log(
            &format!("{FUNCTIONS} functions ready"),
            READY_LIMIT,
            |log| log.lines().filter(|l| l.contains("function ready")).count() >= FUNCTIONS,
        )
        .await?;
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let running = process_tree(fleet.pid()).len() - 1;
        if running == FUNCTIONS {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the fleet runs {running} processes, not {FUNCTIONS}:\n{}",
                fleet.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every one of `functions` has nothing pending or unacknowledged.
async fn quiesce(server: &Server, functions: &[String]) -> anyhow::Result<()> {
    for function in functions {
        drive::quiesce(&server.nats, JOBS_STREAM, &consumer_name(function)).await?;
    }
    Ok(())
}
