//! Scale-from-zero: a synchronous call to a function whose fleet supervisor (`squall-worker
//! fleet --min 0`) runs no worker, timed from sending the request to its 200, and split into
//! steps by what the benchmark sees on the wire and the timestamps in the fleet's log.

use crate::cluster::Cluster;
use crate::context::{Context, Server, S4};
use crate::procs::Proc;
use crate::report::Report;
use crate::resources::process_tree;
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

/// The first line of each step in `log` (the part written since the call was sent).
pub fn log_steps(log: &str, function: &str) -> LogSteps {
    let mut steps = LogSteps::default();
    let needle = format!("function={function}");
    let serves = |line: &str| line.split_whitespace().any(|word| word == needle.as_str());
    for line in log.lines() {
        let first = |slot: &mut Option<SystemTime>| {
            if slot.is_none() {
                *slot = parse_log_time(line);
            }
        };
        if line.contains("worker process started") {
            first(&mut steps.spawned);
        } else if line.contains("connected successfully") && steps.spawned.is_some() {
            first(&mut steps.connected);
        } else if line.contains("worker started") {
            first(&mut steps.started);
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

/// Starts the fleet supervisor for `ZERO_FUNCTION` with no minimum.
fn start_fleet(cx: &Context, server: &Server) -> anyhow::Result<Proc> {
    let mut command = Command::new(&cx.env.worker);
    command
        // The job's own line ("job done", with the attempt's duration) is a debug line.
        .env("RUST_LOG", "info,squall_worker::jobs::settle=debug")
        .arg("fleet")
        .arg("--nats-url")
        .arg(&server.url)
        .arg("--data-dir")
        .arg(cx.dir.join("fleet"))
        .arg("--function")
        .arg(ZERO_FUNCTION)
        .args(["--min", "0", "--max", "1"])
        .arg("--idle-secs")
        .arg(IDLE_SECS.to_string())
        .arg("--interval-ms")
        .arg(INTERVAL_MS.to_string());
    Proc::spawn("fleet", command, cx.dir.join("fleet.log"))
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
    let client = async_nats::ConnectOptions::new()
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

/// Measures scale-from-zero once per run with one fleet supervisor.
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
    let mut fleet = start_fleet(cx, server)?;
    let outcome = measure_with(cx, server, squall, report, &mut fleet).await;
    if outcome.is_err() {
        eprintln!("--- fleet log (end) ---\n{}", fleet.log_tail(20));
    }
    fleet.terminate(Duration::from_secs(10)).await;
    outcome?;
    squall.delete(ZERO_FUNCTION).await
}

async fn measure_with(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    report: &mut Report,
    fleet: &mut Proc,
) -> anyhow::Result<()> {
    wait_supervisor(squall, fleet).await?;
    for run in 1..=cx.settings.runs {
        wait_zero(fleet).await?;
        // A few readings at zero, so the call finds the supervisor idle, not just done reaping.
        tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
        let call = cold_call(cx, server, squall, fleet).await?;
        let (exec, connect, topology) = replay_start(cx, server).await?;
        cx.progress(&format!(
            "scale-from-zero {run}/{}: {:.1} ms",
            cx.settings.runs,
            ms(call.total)
        ));
        record(cx, report, &call, (exec, connect, topology));
    }
    for key in [
        "cold.zero",
        "cold.zero.published",
        "cold.zero.spawn",
        "cold.zero.connected",
        "cold.zero.started",
        "cold.zero.ready",
        "cold.zero.result",
        "cold.zero.answer",
    ] {
        report.list_values(key);
    }
    Ok(())
}

/// Adds one run's figures: the total, then each step from the previous milestone, when every
/// milestone was seen (a partial chain would attribute one step's time to another).
fn record(
    cx: &Context,
    report: &mut Report,
    call: &ColdCall,
    replay: (Duration, Duration, Duration),
) {
    let r = &mut *report;
    r.add(
        S4,
        "cold.zero",
        "scale-from-zero → first result (sync call, fleet at 0 workers: request → 200)",
        "ms",
        ms(call.total),
    );
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
                "cold.zero.published",
                "  … request → job published (seen on its subject)",
                published,
            ),
            (
                "cold.zero.spawn",
                "  … → worker process spawned (supervisor woken, slot taken; fleet log)",
                spawned.saturating_sub(published),
            ),
            (
                "cold.zero.connected",
                "  … → worker connected (exec, runtime and logging set up, NATS connect; its log)",
                connected.saturating_sub(spawned),
            ),
            (
                "cold.zero.started",
                "  … → worker started (topology opened; its log)",
                started.saturating_sub(connected),
            ),
            (
                "cold.zero.ready",
                "  … → function ready (registry watch, artifact fetched or cached, loaded)",
                ready.saturating_sub(started),
            ),
            (
                "cold.zero.result",
                "  … → result published (consumer opened, first pull, call, result stored)",
                result.saturating_sub(ready),
            ),
            (
                "cold.zero.answer",
                "  … → 200 read (the dispatcher's wait ends, HTTP answer)",
                call.total.saturating_sub(result),
            ),
        ];
        for (key, label, step) in steps {
            r.add(S4, key, label, "ms", ms(step));
        }
    } else {
        cx.progress(&format!(
            "scale-from-zero: not every step was seen (job, spawn, connect, start, ready, result: \
             {milestones:?}); no breakdown for this run"
        ));
    }
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
2026-11-27T08:30:01.000100Z  INFO squall_worker::fleet: worker process started slot=0 pid=7 running=1
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
}
