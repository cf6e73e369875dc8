//! Fault tests on real processes: hung functions, killed workers, a restarted broker, and
//! idempotent resubmits. Every accepted invocation reaches exactly one terminal state.

use futures::StreamExt;
use squall_api::invocations::Invocation;
use squall_api::operations::DeadLetter;
use squall_api::{ErrorBody, ErrorKind, InvocationStatus};
use squall_tests::{eventually, Cluster, ClusterOptions};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Reads every result record of `function` from RESULTS until each id in `ids` has a terminal
/// one; returns the number of terminal records per id.
async fn terminal_results(
    cluster: &Cluster,
    function: &str,
    ids: &HashSet<String>,
    timeout: Duration,
) -> HashMap<String, usize> {
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("RESULTS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("results.{function}.*"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut terminal: HashMap<String, usize> = HashMap::new();
    eventually(
        timeout,
        "every invocation to reach a terminal state",
        async || {
            // Reads what has arrived, then counts who is still missing.
            while let Ok(Some(next)) =
                tokio::time::timeout(Duration::from_millis(100), messages.next()).await
            {
                let Ok(message) = next else { continue };
                let headers = message.headers.clone().unwrap();
                let status = headers.get("Squall-Status").unwrap().as_str().to_string();
                if InvocationStatus::parse(&status).is_some_and(InvocationStatus::is_terminal) {
                    let id = headers.get("Squall-Invocation-Id").unwrap().to_string();
                    *terminal.entry(id).or_default() += 1;
                }
            }
            match ids.iter().filter(|id| !terminal.contains_key(*id)).count() {
                0 => Ok(()),
                missing => Err(format!("{missing} invocations without a terminal state")),
            }
        },
    )
    .await;
    // Anything still arriving shortly after is a duplicate too.
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        let headers = message.headers.clone().unwrap();
        if headers.get("Squall-Status").unwrap().as_str() == "succeeded" {
            *terminal
                .entry(headers.get("Squall-Invocation-Id").unwrap().to_string())
                .or_default() += 1;
        }
    }
    terminal
}

/// Publishes `count` jobs with their own ids through JetStream and returns the acknowledged ids.
async fn publish_jobs(
    cluster: &Cluster,
    function: &str,
    count: usize,
    body: &str,
) -> HashSet<String> {
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let mut acks = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..count {
        let id = format!("0193a5c2-{:04x}-7000-8000-{:012x}", i / 65536, i);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Squall-Invocation-Id", id.as_str());
        headers.insert("Nats-Msg-Id", id.as_str());
        acks.push((
            id,
            js.publish_with_headers(format!("jobs.{function}"), headers, body.to_string().into())
                .await
                .unwrap(),
        ));
    }
    for (id, ack) in acks {
        ack.await.expect("JetStream acknowledges the job");
        ids.insert(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_function_times_out_its_worker_recycles_and_other_jobs_complete() {
    let cluster = Cluster::start().await;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"timeout_ms": 300, "max_attempts": 1})),
        )
        .await;
    cluster.deploy_example("hello", None).await;
    let before = cluster.workers[0].children();

    let response = cluster.invoke("sleep", "20000").await;
    let (status, body) = squall_tests::decode_response::<ErrorBody>(response).await;
    assert_eq!(status, 504, "{body:?}");
    assert_eq!(body.error.code, "function_timed_out");
    assert_eq!(body.error.extra_str("kind"), Some("timeout"));
    assert_eq!(body.error.extra_str("status"), Some("timed_out"));
    assert_eq!(
        body.error.message,
        "function did not return within its timeout of 300 ms"
    );

    // Other jobs still complete: the worker is replaced by a fresh process.
    for _ in 0..5 {
        let response = cluster.invoke("hello", "").await;
        assert_eq!(response.status(), 200);
    }
    let response = cluster.invoke("sleep", "10").await;
    assert_eq!(response.text().await.unwrap(), "slept 10 ms");
    // The supervisor starts a new worker process once the old one recycled itself.
    eventually(
        Duration::from_secs(10),
        "a new worker process to run",
        async || {
            let now = cluster.workers[0].live_children();
            (!now.is_empty() && now != before).then_some(()).ok_or(now)
        },
    )
    .await;
    assert!(
        cluster.workers[0]
            .output()
            .contains("worker recycled itself"),
        "the worker did not recycle"
    );
    // A terminal timeout is a dead letter.
    let id = body.error.extra_str("invocation_id").unwrap();
    let (status, letter) = cluster.get_as::<DeadLetter>(&format!("/v1/dlq/{id}")).await;
    assert_eq!(status, 200, "{letter:?}");
    assert_eq!(letter.summary.status, InvocationStatus::TimedOut);
    assert_eq!(letter.summary.kind, Some(ErrorKind::Timeout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_within_its_timeout_is_never_redelivered() {
    let cluster = Cluster::start().await;
    // Longer than the consumer's 5 s ack wait: progress acks must keep it alive.
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"timeout_ms": 20000, "max_attempts": 3})),
        )
        .await;
    let response = cluster.invoke("sleep", "7000").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(view.attempts, 1, "{view:?}");
    let counts = terminal_results(
        &cluster,
        "sleep",
        &HashSet::from([id.clone()]),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(counts[&id], 1, "ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_under_load_loses_nothing() {
    let cluster = Cluster::start().await;
    let concurrency = 8;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"timeout_ms": 10000, "concurrency": concurrency})),
        )
        .await;
    squall_tests::wait_workers_ready(&cluster, "sleep").await;
    // 1,200 jobs of 20 ms at 8 at a time: several seconds of work, queued up front.
    let ids = publish_jobs(&cluster, "sleep", 1200, "20").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victims = cluster.workers[0].children();
    assert_eq!(victims.len(), 1, "one worker process under the supervisor");
    std::process::Command::new("kill")
        .arg("-KILL")
        .arg(victims[0].to_string())
        .status()
        .unwrap();

    let counts = terminal_results(&cluster, "sleep", &ids, Duration::from_secs(120)).await;
    assert!(
        ids.iter()
            .all(|id| counts.get(id).copied().unwrap_or(0) >= 1),
        "every job finished"
    );
    // Only jobs in flight at the kill may have run twice, and at most `concurrency` were.
    let duplicates = counts.values().filter(|&&n| n > 1).count();
    assert!(
        duplicates <= concurrency as usize,
        "{duplicates} duplicates"
    );
    assert!(cluster.workers[0]
        .output()
        .contains("worker process died; restarting it"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_broker_under_the_strict_profile_loses_no_acknowledged_job() {
    let mut cluster = Cluster::start_with(
        ClusterOptions {
            profile: "strict",
            ..Default::default()
        }
        .with_auth(),
    )
    .await;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"timeout_ms": 10000, "concurrency": 8})),
        )
        .await;
    squall_tests::wait_workers_ready(&cluster, "sleep").await;
    // About 2 s of work, so the broker goes down in the middle of it.
    let ids = publish_jobs(&cluster, "sleep", 800, "20").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Down hard in the middle of the load, then back on the same port and store.
    let nats = &mut cluster.nats;
    tokio::task::block_in_place(|| nats.restart_after(Duration::from_secs(1)));
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let pending = js
        .get_stream("JOBS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert!(
        pending > 0,
        "jobs were still queued when the broker came back"
    );
    let counts = terminal_results(&cluster, "sleep", &ids, Duration::from_secs(120)).await;
    assert_eq!(counts.len(), ids.len());
    assert!(ids.iter().all(|id| counts.contains_key(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_resubmit_returns_the_first_invocation() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    let post = |key: &'static str, body: &'static str, asynchronous: bool| {
        let mut request = cluster
            .http
            .post(format!("{}/v1/functions/hello/invocations", cluster.url))
            .header("Idempotency-Key", key)
            .body(body);
        if asynchronous {
            request = request.header("Prefer", "respond-async");
        }
        request.send()
    };
    let first = post("order-1", r#"{"name": "first"}"#, false)
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let id = first.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let output = first.text().await.unwrap();
    // The same key with another body: the same invocation and result, no second run.
    let again = post("order-1", r#"{"name": "second"}"#, false)
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.headers()["squall-invocation-id"].to_str().unwrap(),
        id
    );
    assert_eq!(again.text().await.unwrap(), output);
    let counts = terminal_results(
        &cluster,
        "hello",
        &HashSet::from([id.clone()]),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(counts[&id], 1, "the function ran once");

    // A different key is a different invocation; an async first call is joined by a sync one.
    let other = post("order-2", r#"{"name": "other"}"#, true).await.unwrap();
    assert_eq!(other.status(), 202);
    let other_id = other.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(other_id, id);
    let joined = post("order-2", "", false).await.unwrap();
    assert_eq!(
        joined.headers()["squall-invocation-id"].to_str().unwrap(),
        other_id
    );
    assert_eq!(
        joined.text().await.unwrap(),
        r#"{"greeting":"Hello, other!"}"#
    );

    let bad = cluster
        .http
        .post(format!("{}/v1/functions/hello/invocations", cluster.url))
        .header("Idempotency-Key", "k".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
