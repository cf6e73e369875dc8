//! Host services through real workers: a C function drives every `kv_*` and `publish` call and
//! error code, a Rust function keeps a count; state is per function, expires, stays coherent
//! across workers' caches, is metered in usage, and a retried attempt's events are stored once.

use futures::StreamExt as _;
use squall_api::invocations::Invocation;
use squall_api::queries::UsageReport;
use squall_api::status::InvocationStatus;
use squall_tests::{
    built, compile_c, eventually, eventually_every, workspace_root, Cluster, ClusterOptions,
};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Compiles the C probe (tests/fixtures/host_probe.c) against squall.h alone.
fn probe_library(dir: &std::path::Path) -> PathBuf {
    let source = std::fs::read_to_string(workspace_root().join("tests/fixtures/host_probe.c"))
        .expect("read host_probe.c");
    compile_c(dir, "host_probe", &source)
}

/// Runs one probe command synchronously: the function's output and the worker that ran it.
async fn run(cluster: &Cluster, function: &str, command: &str) -> (String, String) {
    let response = cluster.invoke(function, command.to_string()).await;
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("squall-invocation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{function} {command:?}: {text}");
    let id = id.expect("invocation id header");
    let (_, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    (text, view.worker.unwrap_or_default())
}

async fn probe(cluster: &Cluster, function: &str, command: &str) -> String {
    run(cluster, function, command).await.0
}

async fn deploy_probe(cluster: &Cluster, name: &str, spec: Option<serde_json::Value>) {
    let library = probe_library(cluster.dir.path());
    let (status, body) = cluster.deploy(name, &library, spec).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_call_answers_its_documented_code_through_the_real_worker() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, "probe", None).await;

    assert_eq!(probe(&cluster, "probe", "fields").await, "1");
    // No invocation runs during squall_init.
    assert_eq!(probe(&cluster, "probe", "init").await, "-4");
    assert_eq!(probe(&cluster, "probe", "get missing").await, "1");
    assert_eq!(probe(&cluster, "probe", "put greeting hi 0").await, "0");
    assert_eq!(probe(&cluster, "probe", "get greeting").await, "0 hi");
    assert_eq!(probe(&cluster, "probe", "put greeting hello 0").await, "0");
    assert_eq!(probe(&cluster, "probe", "get greeting").await, "0 hello");
    assert_eq!(probe(&cluster, "probe", "del greeting").await, "0");
    assert_eq!(probe(&cluster, "probe", "get greeting").await, "1");
    assert_eq!(probe(&cluster, "probe", "del greeting").await, "0");
    assert_eq!(
        probe(&cluster, "probe", "put user/42.name=x_y-z v 0").await,
        "0"
    );
    assert_eq!(
        probe(&cluster, "probe", "get user/42.name=x_y-z").await,
        "0 v"
    );
    // Too large: a value over 1 MiB, a key over 256 bytes.
    assert_eq!(probe(&cluster, "probe", "big k").await, "-3");
    assert_eq!(probe(&cluster, "probe", "longkey").await, "-3");
    // Malformed keys.
    for key in [".dot", "dot.", "a..b", "star*", "semi;colon"] {
        assert_eq!(
            probe(&cluster, "probe", &format!("get {key}")).await,
            "-4",
            "{key}"
        );
    }
    // Publishing: only under events., only literal subjects.
    assert_eq!(probe(&cluster, "probe", "pub jobs.probe x").await, "-2");
    assert_eq!(probe(&cluster, "probe", "pub results.a.b x").await, "-2");
    assert_eq!(probe(&cluster, "probe", "pub events.a.* x").await, "-4");
    assert_eq!(
        probe(&cluster, "probe", "pub events.nobody.listens x").await,
        "0"
    );
    // Only from the invocation's own thread, with its own ctx.
    assert_eq!(probe(&cluster, "probe", "thread k").await, "-4");
    assert_eq!(probe(&cluster, "probe", "otherctx k").await, "-4");

    // The state traffic is metered in usage.
    let (kv, total_kv_ops) = eventually(
        Duration::from_secs(10),
        "usage to show the state traffic",
        async || {
            let (status, report) = cluster
                .get_as::<UsageReport>("/v1/usage?group_by=function")
                .await;
            assert_eq!(status, 200);
            let row = report
                .groups
                .iter()
                .find(|g| g.function.as_deref() == Some("probe"));
            let kv = row.map_or((0, 0), |r| (r.usage.kv_ops, r.usage.kv_bytes));
            (kv.0 >= 10).then_some((kv, report.total.kv_ops)).ok_or(kv)
        },
    )
    .await;
    // Ten operations reached the store above (five gets, three puts and two deletes; not the
    // refused ones); "hi", "hello" and "v" were written and read back.
    assert_eq!(kv, (10, 2 * (2 + 5 + 1)));
    assert!(total_kv_ops >= kv.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_function_never_sees_another_functions_keys() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, "probe-a", None).await;
    deploy_probe(&cluster, "probe-b", None).await;
    assert_eq!(probe(&cluster, "probe-a", "put secret s1 0").await, "0");
    assert_eq!(probe(&cluster, "probe-b", "get secret").await, "1");
    // A key spelled like the other function's namespace is still in this one's.
    assert_eq!(probe(&cluster, "probe-b", "get probe-a.secret").await, "1");
    assert_eq!(probe(&cluster, "probe-b", "put secret s2 0").await, "0");
    assert_eq!(probe(&cluster, "probe-a", "get secret").await, "0 s1");
    assert_eq!(probe(&cluster, "probe-b", "get secret").await, "0 s2");

    // The same from Rust: two deployments of the counter count apart.
    let library = built().library("counter");
    for name in ["counter-a", "counter-b"] {
        let (status, body) = cluster.deploy(name, library, None).await;
        assert_eq!(status, 201, "{body}");
    }
    let count = |name: &'static str| {
        let cluster = &cluster;
        async move {
            let response = cluster.invoke(name, r#"{"name": "alice"}"#).await;
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            body["count"].as_u64().unwrap()
        }
    };
    assert_eq!(count("counter-a").await, 1);
    assert_eq!(count("counter-a").await, 2);
    assert_eq!(count("counter-a").await, 3);
    assert_eq!(count("counter-b").await, 1);
    assert_eq!(count("counter-a").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_put_with_a_ttl_expires() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, "probe", None).await;
    let put_at = Instant::now();
    assert_eq!(probe(&cluster, "probe", "put session v 1000").await, "0");
    assert_eq!(probe(&cluster, "probe", "put kept v 0").await, "0");
    assert_eq!(probe(&cluster, "probe", "get session").await, "0 v");
    eventually_every(
        Duration::from_secs(10).saturating_sub(put_at.elapsed()),
        Duration::from_millis(100),
        "the key to expire",
        async || match probe(&cluster, "probe", "get session").await {
            gone if gone == "1" => Ok(()),
            seen => Err(seen),
        },
    )
    .await;
    assert!(put_at.elapsed() >= Duration::from_millis(900));
    assert_eq!(probe(&cluster, "probe", "get kept").await, "0 v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_one_worker_is_seen_by_every_workers_next_get() {
    let cluster = Cluster::start_with(ClusterOptions {
        workers: 2,
        ..ClusterOptions::default()
    })
    .await;
    deploy_probe(&cluster, "probe", None).await;
    squall_tests::wait_workers_ready(&cluster, "probe").await;
    assert_eq!(probe(&cluster, "probe", "put shared v1 0").await, "0");
    for round in ["v1", "v2", "v3"] {
        if round != "v1" {
            let (out, _) = run(&cluster, "probe", &format!("put shared {round} 0")).await;
            assert_eq!(out, "0");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Reads until both workers have answered at least twice (so each read once from its
        // cache): every read sees the latest put.
        let mut served: Vec<String> = Vec::new();
        eventually(
            Duration::from_secs(30),
            "both workers to serve reads twice",
            async || {
                let (out, worker) = run(&cluster, "probe", "get shared").await;
                assert_eq!(
                    out,
                    format!("0 {round}"),
                    "worker {worker} read a stale value"
                );
                served.push(worker);
                let workers: HashSet<&String> = served.iter().collect();
                let twice = workers
                    .iter()
                    .all(|w| served.iter().filter(|s| s == w).count() >= 2);
                (workers.len() == 2 && twice)
                    .then_some(())
                    .ok_or_else(|| format!("served by {served:?}"))
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempt_that_publishes_the_same_events_is_stored_once() {
    let cluster = Cluster::start().await;
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "PROBE_EVENTS".into(),
            subjects: vec!["events.probe.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let spec = serde_json::json!({"max_attempts": 3, "backoff": {"initial_ms": 10, "max_ms": 20}});
    deploy_probe(&cluster, "probe", Some(spec)).await;

    let response = cluster.invoke("probe", "pubtwice events.probe.dedup").await;
    let id = response
        .headers()
        .get("squall-invocation-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.text().await.unwrap(), "0");
    let (_, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(view.attempts, 2);
    // Two attempts published two events each: the stream kept the first two only.
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2);
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(&first.payload[..], b"one");
    assert_eq!(
        first
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string()),
        Some(format!("{id}:pub:0"))
    );
    let second = stream.get_raw_message(2).await.unwrap();
    assert_eq!(&second.payload[..], b"two");

    // A second invocation is not a duplicate of the first.
    assert_eq!(
        probe(&cluster, "probe", "pubtwice events.probe.other").await,
        "0"
    );
    assert_eq!(stream.info().await.unwrap().state.messages, 4);
}

/// A function written against ABI v1 as it was before the host services: its own copy of the
/// structs, with `squall_host` ending at `log`.
const BUILT_BEFORE_THE_SERVICES: &str = r#"
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
typedef struct { const uint8_t *ptr; size_t len; } squall_bytes;
typedef struct { uint8_t *ptr; size_t len; size_t cap; } squall_buf;
typedef struct squall_host {
  uint32_t size; void *data; void (*log)(void *data, uint32_t level, squall_bytes message);
} squall_host;
typedef struct {
  uint32_t size; squall_bytes function; squall_bytes invocation_id; squall_bytes traceparent;
  squall_bytes config; squall_bytes event; uint32_t attempt; uint64_t deadline_unix_ms;
  const squall_host *host;
} squall_ctx;
typedef struct { squall_buf body; uint64_t retry_after_ms; } squall_output;
const uint32_t squall_abi_version = 1;
int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
  squall_bytes line = {(const uint8_t *)"old function ran", 16};
  ctx->host->log(ctx->host->data, 3, line);
  uint8_t *copy = malloc(input.len + 1);
  memcpy(copy, input.ptr, input.len);
  out->body.ptr = copy; out->body.len = input.len; out->body.cap = input.len;
  out->retry_after_ms = 0;
  return 0;
}
void squall_free(squall_buf buf) { free(buf.ptr); }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_built_before_the_host_services_still_runs() {
    let cluster = Cluster::start().await;
    let library = compile_c(cluster.dir.path(), "old_abi", BUILT_BEFORE_THE_SERVICES);
    let (status, body) = cluster.deploy("old-abi", &library, None).await;
    assert_eq!(status, 201, "{body}");
    let response = cluster.invoke("old-abi", "still here").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.text().await.unwrap(), "still here");
    let (_, logs) = cluster
        .get_json(&format!("/v1/invocations/{id}/logs"))
        .await;
    assert_eq!(logs["logs"][0]["message"], "old function ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_answer_in_time_is_unavailable_and_retryable() {
    let cluster = Cluster::start_with(ClusterOptions {
        worker_env: vec![("SQUALL_HOST_CALL_TIMEOUT_MS".into(), "300".into())],
        ..ClusterOptions::default()
    })
    .await;
    deploy_probe(&cluster, "probe", None).await;
    assert_eq!(probe(&cluster, "probe", "get warm").await, "1");
    // The function reads an uncached key while the broker is frozen for 1.5 s.
    let call = cluster.invoke("probe", "sleepget 400 frozen");
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let pid = cluster.nats.process.child.id().to_string();
        let stop = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status();
        assert!(stop.unwrap().success());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let cont = std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status();
        assert!(cont.unwrap().success());
    };
    let (response, ()) = tokio::join!(call, freeze);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "-1");
    // The broker is back: the same read answers again.
    assert_eq!(probe(&cluster, "probe", "get frozen").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_stream_captures_reaches_a_plain_subscriber_and_answers_0() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, "probe", None).await;
    let client = cluster.nats_client().await;
    let mut subscriber = client.subscribe("events.plain.>").await.unwrap();
    client.flush().await.unwrap();
    // A plain subscriber never acknowledges: the publish must not wait for an answer.
    assert_eq!(
        probe(&cluster, "probe", "pub events.plain.hello hi").await,
        "0"
    );
    let message = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
        .await
        .expect("the subscriber gets the event")
        .unwrap();
    assert_eq!(&message.payload[..], b"hi");
    assert_eq!(message.subject.as_str(), "events.plain.hello");
}
