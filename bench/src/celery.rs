//! The peer a Python user would pick instead of Squall: Celery with a no-op task, a Redis
//! broker and result backend on this machine, its worker one process (`--pool solo`). Measured
//! by a Python client in Celery's own venv: throughput of N tasks submitted at once and awaited
//! (`.delay()` each, then `.get()` each), and the sequential round trip `.delay().get()`.
//! Never fails the benchmark: when Celery or redis-server is missing, or Celery fails, its
//! figures are recorded as not measured with the reason, which is also printed.

use crate::context::{Context, S9};
use crate::procs::{free_port, Proc};
use crate::report::Report;
use crate::resources::{CpuMeter, Watch};
use crate::stats::Latency;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the install script puts Celery, beneath the workspace.
pub const VENV: &str = ".tools/celery-venv";
/// How Celery's worker runs: one process, one task at a time.
const POOL: &str = "solo";
/// Most tasks per throughput measurement whatever `--n` says: Celery is slower than Squall.
const MAX_N: usize = 2_000;
/// Most runs of Celery whatever `--runs` says, so that the phase stays short.
const MAX_RUNS: usize = 3;
/// Most sequential round trips per latency measurement.
const MAX_LATENCY_N: usize = 1_000;
/// The longest the worker may take to start, or one client run to finish.
const LIMIT: Duration = Duration::from_secs(120);

/// The Celery app: one task that returns its argument.
const TASKS_PY: &str = r#""""The benchmark's Celery app: one task that returns its argument."""
import os

from celery import Celery

app = Celery(
    "noop_tasks",
    broker=os.environ["SQUALL_BENCH_BROKER"],
    backend=os.environ["SQUALL_BENCH_BACKEND"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(payload):
    return payload
"#;

/// The client: `tput N PAYLOAD` or `latency N PAYLOAD`; prints one JSON line.
const CLIENT_PY: &str = r#""""The benchmark's Celery client: prints one JSON line with what it measured."""
import json
import sys
import time

from noop_tasks import noop


def main():
    mode, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    payload = "x" * size
    noop.delay(payload).get(timeout=60)
    if mode == "tput":
        warm = [noop.delay(payload) for _ in range(max(n // 10, 50))]
        for result in warm:
            result.get(timeout=60)
        started = time.perf_counter()
        pending = [noop.delay(payload) for _ in range(n)]
        for result in pending:
            if result.get(timeout=120) != payload:
                sys.exit("a task returned something else than its argument")
        print(json.dumps({"per_second": n / (time.perf_counter() - started)}))
    else:
        for _ in range(max(n // 10, 10)):
            noop.delay(payload).get(timeout=30)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            noop.delay(payload).get(timeout=30)
            samples.append((time.perf_counter() - started) * 1e6)
        print(json.dumps({"latency_us": samples}))


main()
"#;

/// Celery's python and redis-server, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub python: PathBuf,
    pub redis_server: PathBuf,
}

/// Why Celery is not measured, or where it is: `python` is the venv's interpreter if it
/// exists, `redis_server` redis-server if on PATH.
pub fn availability(
    smoke: bool,
    python: Option<PathBuf>,
    redis_server: Option<PathBuf>,
) -> Result<Peer, String> {
    if smoke {
        return Err("skipped in a --smoke run".into());
    }
    let install = "install it with scripts/install-celery";
    match (python, redis_server) {
        (Some(python), Some(redis_server)) => Ok(Peer {
            python,
            redis_server,
        }),
        (None, None) => Err(format!(
            "skipped: Celery ({VENV}) and redis-server are not installed; {install} and \
             apt-get install -y redis-server"
        )),
        (None, Some(_)) => Err(format!("skipped: Celery is not in {VENV}; {install}")),
        (Some(_), None) => Err(
            "skipped: redis-server is not on PATH; install it with apt-get install -y redis-server"
                .into(),
        ),
    }
}

/// The first `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What one client run printed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ClientLine {
    #[serde(default)]
    pub per_second: Option<f64>,
    #[serde(default)]
    pub latency_us: Option<Vec<f64>>,
}

/// The client's JSON line: the last non-empty line of its output.
pub fn parse_client_output(stdout: &str) -> anyhow::Result<ClientLine> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("the Celery client printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("the Celery client printed {line:?}"))
}

/// The figures Celery fills, (key, label, unit).
fn figures(tasks: usize) -> [(String, String, &'static str); 5] {
    [
        (
            "celery.tput".into(),
            format!(
                "Celery no-op task: throughput of {tasks} tasks (.delay() all, then .get() \
                 each), Redis broker and backend, worker --pool {POOL}"
            ),
            "inv/s",
        ),
        (
            "celery.tput.vs.python".into(),
            "  … Squall's Python noop throughput ÷ Celery's".into(),
            "×",
        ),
        (
            "celery.cpu".into(),
            "Celery worker CPU per task, throughput".into(),
            "µs/inv",
        ),
        (
            "celery.rt.p50".into(),
            "Celery no-op task: round trip .delay().get(), sequential, p50".into(),
            "µs",
        ),
        (
            "celery.rt.p99".into(),
            "Celery no-op task: round trip .delay().get(), sequential, p99".into(),
            "µs",
        ),
    ]
}

/// Measures Celery in every run, or records why not.
pub async fn measure(cx: &Context, report: &mut Report) {
    let venv_python = cx.env.root.join(VENV).join("bin/python");
    let peer = availability(
        cx.settings.smoke,
        venv_python.is_file().then_some(venv_python),
        on_path("redis-server"),
    );
    let tasks = cx.settings.n.min(MAX_N);
    let outcome = match peer {
        Ok(peer) => {
            cx.progress(&format!(
                "Celery (worker --pool {POOL}, Redis broker and backend)"
            ));
            measure_peer(cx, &peer, tasks, report)
                .await
                .map_err(|error| format!("failed: {error:#}"))
        }
        Err(why) => Err(why),
    };
    if let Err(why) = outcome {
        cx.progress(&format!("Celery not measured: {why}"));
        for (key, label, unit) in figures(tasks) {
            report.figures.retain(|f| f.key != key);
            report.missing(S9, &key, &label, unit, &why);
        }
    }
}

/// Starts redis-server and a Celery worker, runs the client in every run and stops them.
async fn measure_peer(
    cx: &Context,
    peer: &Peer,
    tasks: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let dir = cx.dir.join("celery");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("noop_tasks.py"), TASKS_PY)?;
    std::fs::write(dir.join("client.py"), CLIENT_PY)?;
    let port = free_port()?;
    let mut redis = Command::new(&peer.redis_server);
    redis
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir);
    let mut redis = Proc::spawn("redis-server", redis, dir.join("redis.log"))?;
    redis
        .wait_for_log("that it is ready", LIMIT, |log| {
            log.contains("Ready to accept connections")
        })
        .await?;
    let env = [
        (
            "SQUALL_BENCH_BROKER".to_string(),
            format!("redis://127.0.0.1:{port}/0"),
        ),
        (
            "SQUALL_BENCH_BACKEND".to_string(),
            format!("redis://127.0.0.1:{port}/1"),
        ),
    ];
    let mut worker = Command::new(&peer.python);
    worker
        .current_dir(&dir)
        .envs(env.iter().cloned())
        .args(["-m", "celery", "-A", "noop_tasks", "worker", "--pool", POOL])
        .args(["--loglevel", "INFO", "--without-gossip", "--without-mingle"])
        .args(["--without-heartbeat", "--hostname", "bench@localhost"]);
    let mut worker = Proc::spawn("celery worker", worker, dir.join("celery-worker.log"))?;
    let outcome = async {
        worker
            .wait_for_log("that it is ready", LIMIT, |log| log.contains("ready."))
            .await?;
        let watch = Watch::tree(worker.pid());
        let runs = cx.settings.runs.min(MAX_RUNS);
        for run in 1..=runs {
            let cpu = CpuMeter::start(cx.ticks_per_second, &[watch])?;
            let tput = client(cx, peer, &dir, &env, "tput", tasks).await?;
            let usage = cpu.usage(tasks)?;
            let per_second = tput
                .per_second
                .context("no throughput in the client's line")?;
            let latency = client(cx, peer, &dir, &env, "latency", MAX_LATENCY_N).await?;
            let samples = latency
                .latency_us
                .context("no latencies in the client's line")?;
            let durations: Vec<Duration> = samples
                .iter()
                .map(|&us| Duration::from_secs_f64(us.max(0.0) / 1e6))
                .collect();
            let latency = Latency::of(&durations);
            record(
                report,
                tasks,
                run,
                per_second,
                usage[0].cpu_ms_per_1000,
                &latency,
            );
            cx.progress(&format!(
                "Celery {run}/{runs}: {per_second:.0} tasks/s, round trip p50 {:.0} µs",
                latency.p50
            ));
        }
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        eprintln!("--- celery worker log (end) ---\n{}", worker.log_tail(20));
    }
    worker.terminate(Duration::from_secs(10)).await;
    redis.terminate(Duration::from_secs(5)).await;
    outcome
}

/// Records one run of Celery, with Squall's Python noop throughput of the same run beside it.
fn record(
    report: &mut Report,
    tasks: usize,
    run: usize,
    per_second: f64,
    cpu_us: f64,
    latency: &Latency,
) {
    let [tput, vs_python, cpu, p50, p99] = figures(tasks);
    report.add(S9, &tput.0, &tput.1, tput.2, per_second);
    if let Some(python) = crate::record::bare_figure(report, "rt.tput.python", run) {
        if per_second > 0.0 {
            report.add(
                S9,
                &vs_python.0,
                &vs_python.1,
                vs_python.2,
                python / per_second,
            );
        }
    }
    report.add(S9, &cpu.0, &cpu.1, cpu.2, cpu_us);
    report.add(S9, &p50.0, &p50.1, p50.2, latency.p50);
    report.add(S9, &p99.0, &p99.1, p99.2, latency.p99);
}

/// Runs the client once in `mode` and reads its line.
async fn client(
    cx: &Context,
    peer: &Peer,
    dir: &Path,
    env: &[(String, String)],
    mode: &str,
    n: usize,
) -> anyhow::Result<ClientLine> {
    let output = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new(&peer.python)
            .current_dir(dir)
            .envs(env.iter().cloned())
            .arg("client.py")
            .arg(mode)
            .arg(n.to_string())
            .arg(cx.settings.payload.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("the Celery client ({mode}) did not finish within {LIMIT:?}"))?
    .context("cannot run the Celery client")?;
    if !output.status.success() {
        bail!(
            "the Celery client ({mode}) exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_client_output(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smoke_run_skips_celery_even_when_it_is_installed() {
        let why = availability(
            true,
            Some("/p/python".into()),
            Some("/r/redis-server".into()),
        )
        .unwrap_err();
        assert!(why.contains("--smoke"), "{why}");
    }

    #[test]
    fn a_missing_peer_says_what_to_install() {
        let why = availability(false, None, Some("/r/redis-server".into())).unwrap_err();
        assert!(why.contains("scripts/install-celery"), "{why}");
        let why = availability(false, Some("/p/python".into()), None).unwrap_err();
        assert!(why.contains("apt-get install -y redis-server"), "{why}");
        let why = availability(false, None, None).unwrap_err();
        assert!(
            why.contains("scripts/install-celery") && why.contains("redis-server"),
            "{why}"
        );
        let peer = availability(
            false,
            Some("/p/python".into()),
            Some("/r/redis-server".into()),
        )
        .unwrap();
        assert_eq!(peer.python, PathBuf::from("/p/python"));
    }

    #[test]
    fn the_client_line_is_the_last_one_printed() {
        let line = parse_client_output("warming up\n{\"per_second\": 1234.5}\n\n").unwrap();
        assert_eq!(line.per_second, Some(1234.5));
        assert_eq!(line.latency_us, None);
        let line = parse_client_output("{\"latency_us\": [1.0, 2.0]}").unwrap();
        assert_eq!(line.latency_us, Some(vec![1.0, 2.0]));
        assert!(parse_client_output("").is_err());
        assert!(parse_client_output("Traceback (most recent call last):").is_err());
    }

    #[test]
    fn celery_throughput_is_compared_with_the_python_noop_of_the_same_run() {
        let mut report = Report::default();
        report.add(S9, "rt.tput.python", "python", "inv/s", 9_000.0);
        let latency = Latency {
            p50: 900.0,
            p99: 2_000.0,
            p999: 3_000.0,
            count: 10,
        };
        record(&mut report, 100, 1, 1_500.0, 400.0, &latency);
        fn value(report: &Report, key: &str) -> Option<Vec<f64>> {
            report
                .figures
                .iter()
                .find(|f| f.key == key)
                .map(|f| f.values.clone())
        }
        assert_eq!(value(&report, "celery.tput.vs.python"), Some(vec![6.0]));
        assert_eq!(value(&report, "celery.rt.p50"), Some(vec![900.0]));
        // A second run without a Python figure of its own is not compared.
        record(&mut report, 100, 2, 1_000.0, 400.0, &latency);
        assert_eq!(value(&report, "celery.tput.vs.python"), Some(vec![6.0]));
        assert_eq!(value(&report, "celery.tput"), Some(vec![1_500.0, 1_000.0]));
    }
}
