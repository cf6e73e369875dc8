//! Scale-from-zero: a synchronous call to a function whose fleet supervisor (`squall-worker
//! fleet --min 0`) runs no worker, timed from sending the request to its 200, and split into
//! steps by what the benchmark sees on the wire and the timestamps in the fleet's log; first
//! with a fleet serving that function alone, then with one serving every deployed function
//! among many idle ones (each in a pool of its own), and the idle size of the process it starts.

use crate::broker::Role;
use crate::cluster::Cluster;
use crate::context::{Context, Server, S4, S5};
use crate::procs::Proc;
use crate::record::{bare_figure, mib};
use crate::report::Report;
use crate::resources::{process_tree, Watch};
use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use squall_broker::names::jobs_subject;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The function the fleet serves: the trivial library under its own name, so the fleet serves
/// nothing else and no other measurement's worker serves it.
const ZERO_FUNCTION: &str = "zero";
/// The fleet's reading interval: short, so it reaps a stopped worker soon after it exited.
const INTERVAL_MS: u64 = 100;
/// Idle seconds before the fleet stops its worker; its smallest setting.
const IDLE_SECS: u64 = 1;
/// The longest one cold call, or reaching zero workers, may take before the measurement fails.
const ZERO_LIMIT: Duration = Duration::from_secs(30);
/// How long the worker's last log lines may trail the 200 (the job's log line follows its ack).
const LOG_GRACE: Duration = Duration::from_secs(2);
/// Idle functions deployed beside `ZERO_FUNCTION` for the measurement among many.
const IDLE_FUNCTIONS: usize = 20;
/// The fleet-wide process cap of the fleet serving every function: room for a process per
/// idle function, so that any it started would show.
const MANY_MAX: u32 = 20;

/// Which fleet serves the cold calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fleet {
    /// `--function zero --max 1`: the function alone.
    Alone,
    /// No `--function` filter, `--max MANY_MAX`: every deployed function, each in its own pool,
    /// with `IDLE_FUNCTIONS` idle ones (and the benchmark's main function) beside it.
    Many,
}

impl Fleet {
    /// The figures' key prefix.
    fn key(self) -> &'static str {
        match self {
            Fleet::Alone => "cold.zero",
            Fleet::Many => "cold.zero.many",
        }
    }
}

/// The name of idle function `i`.
fn idle_name(i: usize) -> String {
    format!("zero-idle-{i:02}")
}

/// The wall-clock time at the start of a log line of the Squall processes (tracing's default
/// format: `2026-01-02T03:04:05.123456Z  INFO …`, in UTC).
pub fn parse_log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, clock) = stamp.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(str::parse::<u32>);
    let (year, month, day) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut parts = hms.splitn(3, ':').map(str::parse::<u8>);
    let (hour, minute, second) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    if fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = format!("{fraction:0<9}").parse().ok()?;
    let utc = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_nano_opt(hour.into(), minute.into(), second.into(), nanos)?
        .and_utc();
    Some(utc.into())
}

/// When the fleet's log says each step of one cold start happened.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LogSteps {
    /// The supervisor started the worker process.
    pub spawned: Option<SystemTime>,
    /// The worker's NATS connection is up (async-nats's own line, the first after the spawn).
    pub connected: Option<SystemTime>,
    /// The worker opened the topology.
    pub started: Option<SystemTime>,
    /// The worker loaded the function.
    pub ready: Option<SystemTime>,
    /// The worker published the job's result and acknowledged the job ("job done").
    pub done: Option<SystemTime>,
    /// The job's attempt as the worker timed it (`duration_us` of its "job done" line).
    pub call: Option<Duration>,
}

/// The value of field `name` in a log line (`name=value`, the value up to the next space).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// The first line of each step in `log` (the part written since the call was sent). The
/// fleet's line for the process it started for `function` names its pid; the worker's own
/// "worker started" line is the one whose worker id (`host-pid`) ends with that pid, so other
/// processes' lines in the same log are not taken for this one's.
pub fn log_steps(log: &str, function: &str) -> LogSteps {
    let mut steps = LogSteps::default();
    let needle = format!("function={function}");
    let serves = |line: &str| line.split_whitespace().any(|word| word == needle.as_str());
    let mut pid: Option<String> = None;
    for line in log.lines() {
        let first = |slot: &mut Option<SystemTime>| {
            if slot.is_none() {
                *slot = parse_log_time(line);
            }
        };
        if line.contains("worker process started") && serves(line) {
            if steps.spawned.is_none() {
                pid = field(line, "pid").map(str::to_string);
            }
            first(&mut steps.spawned);
        } else if line.contains("connected successfully") && steps.spawned.is_some() {
            first(&mut steps.connected);
        } else if line.contains("worker started") && steps.spawned.is_some() {
            let ours = match (&pid, field(line, "worker")) {
                (Some(pid), Some(worker)) => worker.rsplit('-').next() == Some(pid.as_str()),
                _ => true,
            };
            if ours {
                first(&mut steps.started);
            }
        } else if line.contains("function ready") && serves(line) {
            first(&mut steps.ready);
        } else if line.contains("job done") && serves(line) && steps.done.is_none() {
            steps.done = parse_log_time(line);
            steps.call = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("duration_us="))
                .and_then(|us| us.parse().ok())
                .map(Duration::from_micros);
        }
    }
    steps
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Starts a fleet supervisor with no minimum: for `ZERO_FUNCTION` alone, or for every
/// deployed function.
fn start_fleet(cx: &Context, server: &Server, fleet: Fleet) -> anyhow::Result<Proc> {
    let mut command = Command::new(&cx.env.worker);
    let name = match fleet {
        Fleet::Alone => "fleet",
        Fleet::Many => "fleet-many",
    };
    command
        // The job's own line ("job done", with the attempt's duration) is a debug line.
        .env("RUST_LOG", "info,squall_worker::jobs::settle=debug")
        .envs(cx.env.broker.login(Role::Worker))
        .arg("fleet")
        .arg("--nats-url")
        .arg(&server.url)
        .arg("--data-dir")
        .arg(cx.dir.join(name));
    match fleet {
        Fleet::Alone => command
            .arg("--function")
            .arg(ZERO_FUNCTION)
            .args(["--min", "0", "--max", "1"]),
        Fleet::Many => command
            .args(["--min", "0", "--max"])
            .arg(MANY_MAX.to_string()),
    };
    command
        .arg("--idle-secs")
        .arg(IDLE_SECS.to_string())
        .arg("--interval-ms")
        .arg(INTERVAL_MS.to_string());
    Proc::spawn(name, command, cx.dir.join(format!("{name}.log")))
}

/// Waits until the supervisor's heartbeat is in the fleet bucket: before it, it does not scale.
async fn wait_supervisor(squall: &Cluster, fleet: &mut Proc) -> anyhow::Result<()> {
    fleet
        .wait_for_log("its start", ZERO_LIMIT, |log| {
            log.contains("fleet supervisor started")
        })
        .await?;
    let deadline = Instant::now() + ZERO_LIMIT;
    loop {
        let view: serde_json::Value = squall
            .http
            .get(format!("{}/v1/fleet", squall.url))
            .send()
            .await?
            .json()
            .await
            .context("GET /v1/fleet is not JSON")?;
        if view["supervisors"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the fleet supervisor never appeared in GET /v1/fleet: {view}\n{}",
                fleet.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the supervisor has no child process at all, running or exited but not yet
/// collected: then it has reaped its last worker and watches for jobs again.
async fn wait_zero(fleet: &mut Proc) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if process_tree(fleet.pid()).len() == 1 {
            return Ok(started.elapsed());
        }
        if let Some(status) = fleet.exited() {
            bail!(
                "the fleet supervisor exited with {status}:\n{}",
                fleet.log_tail(20)
            );
        }
        if started.elapsed() > ZERO_LIMIT {
            bail!(
                "the fleet still runs a worker {ZERO_LIMIT:?} after its last call:\n{}",
                fleet.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Times a subscription's first message matching `keep`, from `started`.
fn first_message(
    mut subscription: async_nats::Subscriber,
    started: Instant,
    keep: fn(&async_nats::Message) -> bool,
) -> tokio::task::JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if keep(&message) {
                return Some(started.elapsed());
            }
        }
        None
    })
}

fn succeeded(message: &async_nats::Message) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(squall_broker::headers::STATUS))
        .is_some_and(|v| v.as_str() == "succeeded")
}

/// What one cold call took, from sending the request.
struct ColdCall {
    total: Duration,
    /// The job seen on its subject: the dispatcher accepted and published it.
    published: Option<Duration>,
    /// The successful result published: the earlier of its arrival on the benchmark's
    /// subscription and the worker's "job done" line, both a little after it.
    result: Option<Duration>,
    /// The fleet log's steps, relative to the request.
    spawned: Option<Duration>,
    connected: Option<Duration>,
    started: Option<Duration>,
    ready: Option<Duration>,
    call: Option<Duration>,
}

/// One synchronous call to the function with no worker running.
async fn cold_call(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    fleet: &Proc,
) -> anyhow::Result<ColdCall> {
    let offset = fleet.log_text().len();
    let client = &server.nats.client;
    let jobs = client.subscribe(jobs_subject(ZERO_FUNCTION)).await?;
    let results = client
        .subscribe(format!("results.{ZERO_FUNCTION}.>"))
        .await?;
    client.flush().await?;
    let url = format!(
        "{}?wait={}",
        squall.invoke_url(ZERO_FUNCTION),
        ZERO_LIMIT.as_secs()
    );
    let wall = SystemTime::now();
    let started = Instant::now();
    let published = first_message(jobs, started, |_| true);
    let result = first_message(results, started, succeeded);
    let response = squall
        .http
        .post(url)
        .body(cx.payload.clone())
        .send()
        .await
        .context("the cold call failed")?;
    let status = response.status();
    let body = response.bytes().await?;
    let total = started.elapsed();
    if status != reqwest::StatusCode::OK {
        bail!(
            "the cold call answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let seen = |handle: tokio::task::JoinHandle<Option<Duration>>| async move {
        match tokio::time::timeout(Duration::from_secs(1), handle).await {
            Ok(Ok(seen)) => seen,
            _ => None,
        }
    };
    let (published, result) = (seen(published).await, seen(result).await);
    // The worker logs the job after acknowledging it, which may come after the 200.
    let deadline = Instant::now() + LOG_GRACE;
    let steps = loop {
        let log = fleet.log_text();
        let steps = log_steps(log.get(offset..).unwrap_or_default(), ZERO_FUNCTION);
        if steps.done.is_some() || Instant::now() > deadline {
            break steps;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let since = |t: Option<SystemTime>| t.map(|t| t.duration_since(wall).unwrap_or_default());
    let result = match (result, since(steps.done)) {
        (Some(seen), Some(done)) => Some(seen.min(done)),
        (seen, done) => seen.or(done),
    };
    Ok(ColdCall {
        total,
        published,
        result,
        spawned: since(steps.spawned),
        connected: since(steps.connected),
        started: since(steps.started),
        ready: since(steps.ready),
        call: steps.call,
    })
}

/// Replays, from the benchmark's own (warm) process, what a new worker does before it can
/// load a function: start the program, connect, open the topology. Returns (program start and
/// exit of `squall-worker --version`, connect, topology open).
async fn replay_start(
    cx: &Context,
    server: &Server,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let started = Instant::now();
    let status = tokio::process::Command::new(&cx.env.worker)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("cannot run squall-worker --version")?;
    let exec = started.elapsed();
    if !status.success() {
        bail!("squall-worker --version exited with {status}");
    }
    let started = Instant::now();
    let client = cx
        .env
        .broker
        .options()
        .name("squall-bench-replay")
        .connect(server.url.as_str())
        .await
        .context("cannot connect to the benchmark's nats-server")?;
    let connect = started.elapsed();
    let started = Instant::now();
    squall_broker::open_topology(client)
        .await
        .context("cannot open the topology")?;
    Ok((exec, connect, started.elapsed()))
}

/// The functions the fleet started processes for, from its "worker process started" lines.
fn started_functions(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("worker process started"))
        .map(|line| field(line, "function").unwrap_or("?").to_string())
        .collect()
}

/// Fails unless the fleet serving every function runs exactly one process, and has only ever
/// started processes for `ZERO_FUNCTION`: the idle functions (and the benchmark's main one,
/// also deployed and idle) must stay at zero.
fn check_only_zero_started(fleet: &Proc) -> anyhow::Result<()> {
    let others: Vec<String> = started_functions(&fleet.log_text())
        .into_iter()
        .filter(|f| f != ZERO_FUNCTION)
        .collect();
    if !others.is_empty() {
        bail!(
            "the fleet started processes for idle functions during scale-from-zero: {others:?}\n{}",
            fleet.log_tail(20)
        );
    }
    let children = process_tree(fleet.pid()).len() - 1;
    if children != 1 {
        bail!(
            "the fleet runs {children} processes after a cold call of {ZERO_FUNCTION} alone, not 1:\n{}",
            fleet.log_tail(20)
        );
    }
    Ok(())
}

/// Measures scale-from-zero once per run with a fleet serving the function alone, then once
/// per run with a fleet serving it among `IDLE_FUNCTIONS` idle functions.
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let spec = serde_json::json!({ "concurrency": cx.settings.concurrency });
    squall
        .deploy(ZERO_FUNCTION, cx.artifact.clone(), &spec)
        .await?;
    with_fleet(cx, server, squall, report, Fleet::Alone).await?;
    // The same artifact under other names: registry entries and consumers, no work.
    for i in 0..IDLE_FUNCTIONS {
        squall
            .deploy(&idle_name(i), cx.artifact.clone(), &spec)
            .await?;
    }
    with_fleet(cx, server, squall, report, Fleet::Many).await?;
    for i in 0..IDLE_FUNCTIONS {
        squall.delete(&idle_name(i)).await?;
    }
    squall.delete(ZERO_FUNCTION).await
}

/// Starts `which` fleet, measures every run with it and stops it.
async fn with_fleet(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    report: &mut Report,
    which: Fleet,
) -> anyhow::Result<()> {
    let mut fleet = start_fleet(cx, server, which)?;
    let outcome = measure_with(cx, server, squall, report, &mut fleet, which).await;
    if outcome.is_err() {
        eprintln!("--- {} log (end) ---\n{}", fleet.name, fleet.log_tail(20));
    }
    fleet.terminate(Duration::from_secs(10)).await;
    outcome
}

async fn measure_with(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    report: &mut Report,
    fleet: &mut Proc,
    which: Fleet,
) -> anyhow::Result<()> {
    wait_supervisor(squall, fleet).await?;
    for run in 1..=cx.settings.runs {
        wait_zero(fleet).await?;
        // A few readings at zero, so the call finds the supervisor idle, not just done reaping.
        tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
        let call = cold_call(cx, server, squall, fleet).await?;
        // The process it started, idle after its first call (it stops after IDLE_SECS).
        let rss = process_tree(fleet.pid())
            .get(1)
            .and_then(|&pid| Watch::process(pid).rss_kib().ok());
        let what = match which {
            Fleet::Alone => "scale-from-zero",
            Fleet::Many => "scale-from-zero among many",
        };
        cx.progress(&format!(
            "{what} {run}/{}: {:.1} ms",
            cx.settings.runs,
            ms(call.total)
        ));
        record(cx, report, &call, which, run);
        match which {
            Fleet::Alone => {
                let replay = replay_start(cx, server).await?;
                record_replay(report, &call, replay);
            }
            Fleet::Many => {
                check_only_zero_started(fleet)?;
                if let Some(kib) = rss {
                    report.add(
                        S5,
                        "res.worker.rss.function",
                        "a function's worker process RSS, idle after its first call (started by \
                         the fleet serving every function; the process alone)",
                        "MiB",
                        mib(kib),
                    );
                }
            }
        }
    }
    let key = which.key();
    for step in [
        "",
        ".published",
        ".spawn",
        ".connected",
        ".started",
        ".ready",
        ".result",
        ".answer",
    ] {
        report.list_values(&format!("{key}{step}"));
    }
    Ok(())
}

/// Adds one run's figures: the total, then each step from the previous milestone, when every
/// milestone was seen (a partial chain would attribute one step's time to another).
fn record(cx: &Context, report: &mut Report, call: &ColdCall, which: Fleet, run: usize) {
    let r = &mut *report;
    let key = which.key();
    let total_label = match which {
        Fleet::Alone => {
            "scale-from-zero → first result (sync call, fleet at 0 workers: request → 200)"
        }
        Fleet::Many => {
            "scale-from-zero → first result, fleet serving every function (this one among 21 \
             idle, each in a pool of its own, all at 0: request → 200)"
        }
    };
    r.add(S4, key, total_label, "ms", ms(call.total));
    if which == Fleet::Many {
        if let Some(alone) = bare_figure(r, Fleet::Alone.key(), run) {
            r.add(
                S4,
                "cold.zero.many.ratio",
                "  … ÷ the same call with the fleet serving that function alone",
                "×",
                ms(call.total) / alone,
            );
        }
    }
    let milestones = [
        call.published,
        call.spawned,
        call.connected,
        call.started,
        call.ready,
        call.result,
    ];
    if let [Some(published), Some(spawned), Some(connected), Some(started), Some(ready), Some(result)] =
        milestones
    {
        let steps = [
            (
                ".published",
                "  … request → job published (seen on its subject)",
                published,
            ),
            (
                ".spawn",
                "  … → worker process spawned (supervisor woken, slot taken; fleet log)",
                spawned.saturating_sub(published),
            ),
            (
                ".connected",
                "  … → worker connected (exec, runtime and logging set up, NATS connect; its log)",
                connected.saturating_sub(spawned),
            ),
            (
                ".started",
                "  … → worker started (topology opened; its log)",
                started.saturating_sub(connected),
            ),
            (
                ".ready",
                "  … → function ready (registry watch, artifact fetched or cached, loaded)",
                ready.saturating_sub(started),
            ),
            (
                ".result",
                "  … → result published (consumer opened, first pull, call, result stored)",
                result.saturating_sub(ready),
            ),
            (
                ".answer",
                "  … → 200 read (the dispatcher's wait ends, HTTP answer)",
                call.total.saturating_sub(result),
            ),
        ];
        for (step, label, value) in steps {
            let label = match which {
                Fleet::Alone => label.to_string(),
                Fleet::Many => format!("{label} [among many]"),
            };
            r.add(S4, &format!("{key}{step}"), &label, "ms", ms(value));
        }
    } else {
        cx.progress(&format!(
            "scale-from-zero: not every step was seen (job, spawn, connect, start, ready, result: \
             {milestones:?}); no breakdown for this run"
        ));
    }
}

/// Adds the job's attempt as the worker timed it and the replayed start steps (with the fleet
/// serving the function alone).
fn record_replay(report: &mut Report, call: &ColdCall, replay: (Duration, Duration, Duration)) {
    let r = &mut *report;
    if let Some(call) = call.call {
        r.add(
            S4,
            "cold.zero.call",
            "  … of which the job's attempt, as the worker timed it",
            "ms",
            ms(call),
        );
    }
    let (exec, connect, topology) = replay;
    r.add(
        S4,
        "cold.zero.exec",
        "  replayed: squall-worker --version, spawn → exit",
        "ms",
        ms(exec),
    );
    r.add(
        S4,
        "cold.zero.connect",
        "  replayed: a new NATS connection",
        "ms",
        ms(connect),
    );
    r.add(
        S4,
        "cold.zero.topology",
        "  replayed: open the topology (one JetStream API call per stream and bucket)",
        "ms",
        ms(topology),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn log_times_are_utc_with_their_fraction() {
        let t = parse_log_time("2026-11-27T08:30:01.123456Z  INFO squall_worker: worker started")
            .unwrap();
        let since = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(since.as_secs(), 1_795_768_201);
        assert_eq!(since.subsec_micros(), 123_456);
        assert!(parse_log_time("worker started").is_none());
        assert!(parse_log_time("2026-11-27T08:30:01.12a456Z x").is_none());
        assert!(parse_log_time("2026-13-27T08:30:01Z x").is_none());
    }

    #[test]
    fn steps_are_the_first_of_each_line() {
        let log = "\
2026-11-27T08:30:01.000000Z  INFO async_nats::connector: connected successfully server=1
2026-11-27T08:30:01.000100Z  INFO squall_worker::fleet: worker process started function=zero pid=7 running=1
2026-11-27T08:30:01.010000Z  INFO async_nats::connector: connected successfully server=1
2026-11-27T08:30:01.020000Z  INFO squall_worker: worker started nats_url=nats://x worker=h-7
2026-11-27T08:30:01.025000Z  INFO squall_worker: function ready function=other version=v1
2026-11-27T08:30:01.030000Z  INFO squall_worker: function ready function=zero version=v1
2026-11-27T08:30:01.032000Z DEBUG squall.attempt{squall.function=zero}: squall_worker::jobs::settle: job done function=zero invocation_id=i status=\"succeeded\" attempt=1 duration_us=42
2026-11-27T08:30:02.000000Z  INFO squall_worker: worker started nats_url=nats://x worker=h-8
";
        let steps = log_steps(log, "zero");
        let at = |line: &str| parse_log_time(line);
        assert_eq!(steps.spawned, at("2026-11-27T08:30:01.000100Z"));
        assert_eq!(steps.connected, at("2026-11-27T08:30:01.010000Z"));
        assert_eq!(steps.done, at("2026-11-27T08:30:01.032000Z"));
        assert_eq!(steps.started, at("2026-11-27T08:30:01.020000Z"));
        assert_eq!(steps.ready, at("2026-11-27T08:30:01.030000Z"));
        assert_eq!(steps.call, Some(Duration::from_micros(42)));
        assert_eq!(log_steps("", "zero"), LogSteps::default());
    }

    #[test]
    fn among_many_the_steps_are_those_of_the_functions_own_process() {
        let log = "\
2026-11-27T08:30:01.000000Z  INFO squall_worker::fleet: worker process started function=other pid=6 running=1
2026-11-27T08:30:01.000100Z  INFO squall_worker::fleet: worker process started function=zero pid=7 running=1
2026-11-27T08:30:01.010000Z  INFO async_nats::connector: connected successfully server=1
2026-11-27T08:30:01.015000Z  INFO squall_worker: worker started nats_url=nats://x worker=h-6
2026-11-27T08:30:01.020000Z  INFO squall_worker: worker started nats_url=nats://x worker=h-7
2026-11-27T08:30:01.025000Z  INFO squall_worker::registry: function ready function=other version=v1
2026-11-27T08:30:01.030000Z  INFO squall_worker::registry: function ready function=zero version=v1
";
        let steps = log_steps(log, "zero");
        let at = |line: &str| parse_log_time(line);
        assert_eq!(steps.spawned, at("2026-11-27T08:30:01.000100Z"));
        assert_eq!(steps.started, at("2026-11-27T08:30:01.020000Z"));
        assert_eq!(steps.ready, at("2026-11-27T08:30:01.030000Z"));
        assert_eq!(started_functions(log), ["other", "zero"]);
    }

    #[test]
    fn a_field_is_read_by_its_whole_name() {
        let line = "x worker process started function=zero pid=7 running=1";
        assert_eq!(field(line, "pid"), Some("7"));
        assert_eq!(field(line, "function"), Some("zero"));
        assert_eq!(field(line, "fun"), None);
    }
}
