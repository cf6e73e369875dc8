//! A process per function under the fleet: one function's crashes cost another nothing, and
//! only busy functions (and warm floors) run processes, each pool scaling to zero and back.

use futures::StreamExt as _;
use squall_api::invocations::Invocation;
use squall_api::operations::Fleet;
use squall_api::InvocationStatus;
use squall_tests::{
    built, compile_c, eventually, test_issuer, workspace_root, Cluster, ClusterOptions, Process,
    Text, AUTH_WORKER,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn no_workers() -> ClusterOptions {
    ClusterOptions {
        workers: 0,
        ..Default::default()
    }
}

/// Submits `n` asynchronous invocations of `function`, 16 at a time, and returns their ids.
async fn submit_many(cluster: &Cluster, function: &str, input: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|_| async {
            let response = cluster
                .http
                .post(format!(
                    "{}/v1/functions/{function}/invocations?async=true",
                    cluster.url
                ))
                .body(input.to_string())
                .send()
                .await
                .expect("invoke request");
            assert_eq!(response.status(), 202, "async invoke of {function}");
            response.headers()["squall-invocation-id"]
                .to_str()
                .expect("invocation id")
                .to_string()
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Running processes per function, summed over the fleet's supervisors.
async fn pools(cluster: &Cluster) -> BTreeMap<String, usize> {
    let (_, fleet) = cluster.get_as::<Fleet>("/v1/fleet").await;
    let mut pools = BTreeMap::new();
    for supervisor in &fleet.supervisors {
        for pool in &supervisor.pools {
            if !pool.processes.is_empty() {
                *pools.entry(pool.function.clone()).or_default() += pool.processes.len();
            }
        }
    }
    pools
}

/// Waits until the functions with running processes are exactly `busy`.
async fn wait_pools(cluster: &Cluster, fleet: &Process, busy: &[&str], within: Duration) {
    let want: BTreeSet<String> = busy.iter().map(|s| s.to_string()).collect();
    eventually(
        within,
        format_args!("pools for {busy:?} only"),
        async || {
            let now = pools(cluster).await;
            let running: BTreeSet<String> = now.keys().cloned().collect();
            match running == want {
                true => Ok(()),
                false => Err(Text(format!("{now:?}\n{}", fleet.output()))),
            }
        },
    )
    .await
}

/// A function written against ABI v1 alone that segfaults on every call.
const SEGFAULT: &str = r#"
#include <stdlib.h>
#include "squall.h"
const uint32_t squall_abi_version = SQUALL_ABI_VERSION;
int32_t squall_init(const squall_host *host) { (void)host; return 0; }
int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
  (void)ctx; (void)input; (void)out;
  volatile int *nowhere = NULL;
  *nowhere = 1;
  return SQUALL_OK;
}
void squall_free(squall_buf buf) { free(buf.ptr); }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_segfaulting_on_every_call_costs_another_function_nothing() {
    let cluster = Cluster::start_with(no_workers()).await;
    // A: a C function that dereferences a null pointer on every call (SIGSEGV).
    let segfault = compile_c(cluster.dir.path(), "segfault", SEGFAULT);
    let (status, body) = cluster
        .deploy(
            "crash",
            &segfault,
            Some(serde_json::json!({"timeout_ms": 2000, "max_attempts": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    cluster.deploy_example("hello", None).await;
    let fleet = cluster.start_fleet(
        "fleet",
        &["--max", "4", "--idle-secs", "5", "--interval-ms", "100"],
    );
    // A crashes on every call while B's thousand invocations run.
    let crashes = submit_many(&cluster, "crash", "", 30).await;
    let greetings = submit_many(&cluster, "hello", r#"{"name": "B"}"#, 1000).await;
    let mut workers = BTreeSet::new();
    for id in &greetings {
        let view = cluster.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
        assert_eq!(view.attempts, 1, "B spent a retry: {view:?}");
        workers.extend(view.worker);
    }
    let mut crash_workers = BTreeSet::new();
    for id in &crashes {
        let view = cluster.wait_terminal(id, Duration::from_secs(90)).await;
        assert_eq!(view.status, InvocationStatus::DeadLettered, "{view:?}");
        crash_workers.extend(view.worker);
    }
    assert!(
        fleet.output().contains("worker process died"),
        "A's processes crashed:\n{}",
        fleet.output()
    );
    assert!(
        workers.is_disjoint(&crash_workers),
        "B ran in A's processes: {workers:?} {crash_workers:?}"
    );
    eprintln!(
        "B ran in {} processes, A's dead letters name {} processes",
        workers.len(),
        crash_workers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_deployed_and_three_busy_run_three_pools_and_a_floor_each_scaling_to_zero_and_back() {
    let cluster = Cluster::start_with(no_workers()).await;
    let hello = built().library("hello");
    let sleep = built().library("sleep");
    for i in 0..46 {
        let (status, body) = cluster.deploy(&format!("idle-{i}"), hello, None).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = cluster
        .deploy("warm", hello, Some(serde_json::json!({"min_instances": 1})))
        .await;
    assert_eq!(status, 201, "{body}");
    for name in ["busy-a", "busy-b", "busy-c"] {
        let (status, body) = cluster
            .deploy(name, sleep, Some(serde_json::json!({"concurrency": 2})))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let fleet = cluster.start_fleet(
        "fleet",
        &["--max", "8", "--idle-secs", "1", "--interval-ms", "100"],
    );
    // Idle: only the warm floor runs.
    wait_pools(&cluster, &fleet, &["warm"], Duration::from_secs(20)).await;
    let mut ids = Vec::new();
    for name in ["busy-a", "busy-b", "busy-c"] {
        ids.extend(submit_many(&cluster, name, "1500", 4).await);
    }
    wait_pools(
        &cluster,
        &fleet,
        &["busy-a", "busy-b", "busy-c", "warm"],
        Duration::from_secs(20),
    )
    .await;
    for id in &ids {
        let view = cluster.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    }
    // Each busy pool goes back to zero once idle; the floor stays.
    wait_pools(&cluster, &fleet, &["warm"], Duration::from_secs(30)).await;
    // And one comes back from zero for a single call.
    let response = cluster.invoke("busy-b", "10").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    assert!(
        fleet.live_children().len() <= 8,
        "the fleet's cap holds: {:?}",
        fleet.live_children()
    );
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_finds_neither_anothers_secret_nor_the_fleets_credentials_in_its_memory() {
    let cluster = Cluster::start_with(no_workers().with_auth()).await;
    let scanner = compile_c(
        cluster.dir.path(),
        "memory_scan",
        &std::fs::read_to_string(workspace_root().join("tests/fixtures/memory_scan.c")).unwrap(),
    );
    let (status, body) = cluster.deploy("scanner", &scanner, None).await;
    assert_eq!(status, 201, "{body}");
    cluster.deploy_example("echo", None).await;
    let secret = format!("b-secret-{}", std::process::id());
    let response = cluster
        .http
        .put(format!("{}/v1/functions/echo/secrets", cluster.url))
        .json(&serde_json::json!({"DB_PASSWORD": secret}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    // The sandbox would refuse the scanner's reads of /proc/self: off, so the scan can run.
    let fleet = cluster.start_fleet(
        "fleet",
        &["--max", "4", "--interval-ms", "100", "--sandbox", "off"],
    );
    // B runs (its process loads its secret) while A scans.
    let echoed = cluster.invoke("echo", "B is here").await;
    assert_eq!(echoed.status(), 200);
    // The last needle is a control: the scanner's own function name is in its memory (its
    // record, its job's subject), so the scan does read the process's memory.
    let needles = format!(
        "{} {} {} {}",
        hex(&secret),
        hex(AUTH_WORKER.password),
        hex(&test_issuer().seed()),
        hex("jobs.scanner")
    );
    let response = cluster.invoke("scanner", needles).await;
    assert_eq!(response.status(), 200);
    let found = response.text().await.unwrap();
    let counts: Vec<&str> = found.split(' ').collect();
    assert!(
        counts.len() == 4 && counts[3].parse::<u32>().is_ok_and(|n| n > 0),
        "the scan found its own function's subject: {found}"
    );
    assert_eq!(
        counts[..3].join(" "),
        "0 0 0",
        "B's secret, the worker role's password and the issuer's seed, found in A's memory:\n{}",
        fleet.output()
    );
    // Nor does any function process's environment carry the fleet's login.
    let processes = fleet.live_children();
    assert!(processes.len() >= 2, "{processes:?}\n{}", fleet.output());
    for pid in processes {
        squall_tests::assert_function_login_only(pid);
    }
}
