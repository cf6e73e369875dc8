//! The autoscaling fleet (`squall-worker fleet`) against a real cluster: scaling up with the
//! backlog, down after the idle time, from zero, and two supervisors sharing one maximum.

use futures::StreamExt as _;
use squall_api::invocations::Invocation;
use squall_api::operations::Fleet;
use squall_api::InvocationStatus;
use squall_broker::fleet::{self, Heartbeat, HEARTBEAT_PREFIX};
use squall_broker::names::FLEET_BUCKET;
use squall_tests::{eventually, Cluster, ClusterOptions, Process, Text};
use std::process::Command;
use std::time::{Duration, Instant};

/// Waits until `count(supervisors)` equals `want`, checking it never exceeds `max`.
async fn wait_workers(
    supervisors: &[&Process],
    want: usize,
    max: usize,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    eventually(within, format_args!("{want} workers"), async || {
        let now: usize = supervisors.iter().map(|s| s.live_children().len()).sum();
        assert!(now <= max, "{now} workers, more than the max {max}");
        match now == want {
            true => Ok(()),
            false => Err(Text(format!(
                "{now} workers:\n{}",
                supervisors
                    .iter()
                    .map(|s| s.output())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            ))),
        }
    })
    .await;
    start.elapsed()
}

/// The time now, in milliseconds since the Unix epoch (the clock heartbeats are stamped with).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

/// Waits for a heartbeat of the (only) fleet supervisor written after `after_ms`, from the
/// fleet bucket, and returns it: the sign that the supervisor went on deciding after then.
async fn heartbeat_after(cluster: &Cluster, after_ms: u64) -> Heartbeat {
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let bucket = js
        .get_key_value(FLEET_BUCKET)
        .await
        .expect("the fleet bucket");
    eventually(
        Duration::from_secs(10),
        format_args!("a supervisor heartbeat written after {after_ms}"),
        async || {
            let mut keys = bucket.keys().await.map_err(|e| e.to_string())?;
            let mut beats = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| e.to_string())?;
                if !key.starts_with(HEARTBEAT_PREFIX) {
                    continue;
                }
                if let Ok(Some(bytes)) = bucket.get(&key).await {
                    beats.push(fleet::decode::<Heartbeat>(&bytes).map_err(|e| e.to_string())?);
                }
            }
            match beats.as_slice() {
                [beat] if beat.updated_at_ms > after_ms => Ok(beat.clone()),
                _ => Err(format!("{beats:?}")),
            }
        },
    )
    .await
}

fn no_workers() -> ClusterOptions {
    ClusterOptions {
        workers: 0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_scales_the_fleet_to_max_and_back_to_min_after_the_idle_time() {
    let cluster = Cluster::start_with(no_workers()).await;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"concurrency": 1, "timeout_ms": 10000})),
        )
        .await;
    let fleet = cluster.start_fleet(
        "fleet",
        &[
            "--min",
            "1",
            "--max",
            "3",
            "--idle-secs",
            "2",
            "--interval-ms",
            "200",
        ],
    );
    wait_workers(&[&fleet], 1, 3, Duration::from_secs(15)).await;
    // A crashed worker is replaced.
    let victim = fleet.children()[0];
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    eventually(
        Duration::from_secs(15),
        "the killed worker to be replaced",
        async || match fleet.live_children().len() == 1 && !fleet.children().contains(&victim) {
            true => Ok(()),
            false => Err(Text(fleet.output())),
        },
    )
    .await;
    let ids = cluster.submit_async("sleep", "1500", 9).await;
    let reaction = wait_workers(&[&fleet], 3, 3, Duration::from_secs(10)).await;
    eprintln!("scale-up 1 -> 3 took {reaction:?}");
    let (_, view) = cluster.get_as::<Fleet>("/v1/fleet").await;
    let supervisor = &view.supervisors[0];
    assert_eq!(supervisor.max, 3, "{view:?}");
    assert!(view.functions.iter().any(|f| f.name == "sleep"), "{view:?}");
    for id in &ids {
        let done = cluster.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(done.status, InvocationStatus::Succeeded, "{done:?}");
    }
    // Idle for 2 s: back to the minimum, never below it. A heartbeat written after that shows
    // the supervisor still deciding, still asking for the minimum and running it.
    wait_workers(&[&fleet], 1, 3, Duration::from_secs(20)).await;
    let at_min = now_ms();
    let beat = heartbeat_after(&cluster, at_min).await;
    assert_eq!((beat.desired, beat.workers.len()), (1, 1), "{beat:?}");
    assert_eq!(fleet.live_children().len(), 1, "min is kept");
    // The killed worker's heartbeat counts until it is older than the heartbeat TTL (10 s).
    eventually(
        Duration::from_secs(20),
        "the killed worker to leave the fleet",
        async || {
            let (_, view) = cluster.get_as::<Fleet>("/v1/fleet").await;
            (view.workers.len() == 1).then_some(()).ok_or(view)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_scaled_to_zero_cold_starts_and_completes_the_first_job() {
    let cluster = Cluster::start_with(no_workers()).await;
    cluster.deploy_example("hello", None).await;
    let fleet = cluster.start_fleet(
        "fleet",
        &[
            "--min",
            "0",
            "--max",
            "2",
            "--idle-secs",
            "1",
            "--interval-ms",
            "200",
        ],
    );
    // The first heartbeat comes before any decision; the one after it reports one.
    let first = heartbeat_after(&cluster, 0).await;
    let beat = heartbeat_after(&cluster, first.updated_at_ms).await;
    assert_eq!((beat.desired, beat.workers.len()), (0, 0), "{beat:?}");
    assert_eq!(fleet.live_children().len(), 0, "nothing runs without work");
    let started = Instant::now();
    let response = cluster.invoke("hello", r#"{"name": "cold"}"#).await;
    let cold = started.elapsed();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["greeting"], "Hello, cold!");
    eprintln!("scale-from-zero first call took {cold:?}");
    // And back to zero once idle.
    wait_workers(&[&fleet], 0, 2, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_together_never_exceed_the_shared_max() {
    let cluster = Cluster::start_with(no_workers()).await;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"concurrency": 1, "timeout_ms": 10000})),
        )
        .await;
    let args = [
        "--min",
        "0",
        "--max",
        "3",
        "--idle-secs",
        "2",
        "--interval-ms",
        "100",
    ];
    let a = cluster.start_fleet("fleet-a", &args);
    let b = cluster.start_fleet("fleet-b", &args);
    let ids = cluster.submit_async("sleep", "1000", 12).await;
    // Sampled every 50 ms while the backlog drains: never more than 3 between the two.
    let reached = wait_workers(&[&a, &b], 3, 3, Duration::from_secs(15)).await;
    eprintln!("two supervisors reached 3 workers in {reached:?}");
    let drain = Instant::now();
    for id in &ids {
        // One time budget for the whole backlog.
        eventually(
            Duration::from_secs(60).saturating_sub(drain.elapsed()),
            format_args!("{id} to succeed"),
            async || {
                let total = a.live_children().len() + b.live_children().len();
                assert!(total <= 3, "{total} workers across both supervisors");
                let (_, view) = cluster
                    .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
                    .await;
                (view.status == InvocationStatus::Succeeded)
                    .then_some(())
                    .ok_or(view)
            },
        )
        .await;
    }
    eprintln!("drained in {:?}", drain.elapsed());
    let (_, view) = cluster.get_as::<Fleet>("/v1/fleet").await;
    assert_eq!(view.supervisors.len(), 2, "{view:?}");
    let granted: u64 = view.allocation.values().map(|&v| u64::from(v)).sum();
    assert!(granted <= 3, "{view:?}");
}

/// Whether a process is gone: not running, or only a zombie nobody reaped yet.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pids: &[u32], within: Duration) {
    eventually(within, "the worker processes to be gone", async || {
        let running: Vec<u32> = pids.iter().copied().filter(|pid| !gone(*pid)).collect();
        match running.is_empty() {
            true => Ok(()),
            false => Err(format!("orphaned worker processes still run: {running:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_die_with_a_supervisor_killed_by_sigkill() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    cluster.deploy_example("hello", None).await;
    let fleet = cluster.start_fleet("fleet", &["--min", "2", "--max", "2"]);
    wait_workers(&[&fleet], 2, 2, Duration::from_secs(20)).await;

    // A supervised worker: the supervisor's child goes with it.
    let supervised = cluster.workers[0].live_children();
    assert_eq!(supervised.len(), 1);
    cluster.workers[0].kill();
    wait_gone(&supervised, Duration::from_secs(3)).await;

    // A fleet supervisor: both of its workers go with it.
    let mut fleet = fleet;
    let fleet_workers = fleet.live_children();
    assert_eq!(fleet_workers.len(), 2);
    fleet.kill();
    wait_gone(&fleet_workers, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_without_a_reachable_broker_exits_within_its_grace() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    cluster.deploy_example("sleep", None).await;
    let mut worker = cluster.start_fleet(
        "grace",
        &["--min", "1", "--max", "1", "--shutdown-grace-secs", "3"],
    );
    wait_workers(&[&worker], 1, 1, Duration::from_secs(20)).await;
    squall_tests::wait_workers_ready(&cluster, "sleep").await;
    // A job in flight whose result can never be delivered, then no broker at all.
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/sleep/invocations?async=true",
            cluster.url
        ))
        .body("1000")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nats.process.kill();
    let started = Instant::now();
    let status = worker.terminate(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        status.is_some(),
        "the fleet did not exit:\n{}",
        worker.output()
    );
    // Within the grace (3 s): nothing that can no longer be delivered is waited for.
    assert!(
        took < Duration::from_secs(3),
        "{took:?}:\n{}",
        worker.output()
    );
}
