//! Cancelling invocations through real workers: a queued, retrying or backlogged invocation
//! never runs afterwards, a running cooperative C function stops early through the
//! `cancelled` host call, every cancelled invocation ends in exactly one terminal state (raced
//! against completion 1,000 times), and bad requests get clear answers.

use async_nats::jetstream;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use futures::StreamExt;
use squall_api::invocations::{CancelledBacklog, Invocation};
use squall_api::status::InvocationStatus;
use squall_tests::in_process::App;
use squall_tests::{compile_c, eventually, workspace_root, Cluster};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

async fn deploy_probe(cluster: &Cluster, spec: serde_json::Value) {
    let source = std::fs::read_to_string(workspace_root().join("tests/fixtures/cancel_probe.c"))
        .expect("read cancel_probe.c");
    let library = compile_c(cluster.dir.path(), "cancel_probe", &source);
    let (status, body) = cluster.deploy("probe", &library, Some(spec)).await;
    assert_eq!(status, 201, "{body}");
}

/// The folder the probe writes its run markers into.
fn runs_dir(cluster: &Cluster) -> PathBuf {
    let dir = cluster.dir.path().join("runs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How often invocation `id` ran (bytes of its marker file).
fn runs(dir: &Path, id: &str) -> usize {
    std::fs::read(dir.join(format!("{id}.ran"))).map_or(0, |b| b.len())
}

/// Waits for the probe's marker that invocation `id`'s cooperative run saw its cancellation
/// and stopped (within 10 s of its 30 s of work).
async fn wait_stopped_early(dir: &Path, id: &str) {
    let stopped = dir.join(format!("{id}.stopped"));
    eventually(
        Duration::from_secs(10),
        "the function to stop early",
        async || stopped.exists().then_some(()),
    )
    .await;
}

async fn submit(cluster: &Cluster, input: &str) -> String {
    cluster.submit_async("probe", input, 1).await.remove(0)
}

async fn cancel(cluster: &Cluster, id: &str) -> (u16, serde_json::Value) {
    let response = cluster
        .http
        .delete(format!("{}/v1/invocations/{id}", cluster.url))
        .send()
        .await
        .expect("DELETE");
    squall_tests::json_response(response).await
}

/// Every terminal record RESULTS holds for the probe's invocations, by id.
async fn terminal_records(cluster: &Cluster) -> HashMap<String, Vec<InvocationStatus>> {
    let js = jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("RESULTS").await.unwrap();
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "results.probe.>".into(),
            headers_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.info().await.unwrap().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut out: HashMap<String, Vec<InvocationStatus>> = HashMap::new();
    for _ in 0..pending {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a result")
            .unwrap()
            .unwrap();
        let headers = message.headers.as_ref().unwrap();
        let status =
            InvocationStatus::parse(headers.get("Squall-Status").unwrap().as_str()).unwrap();
        let id = headers.get("Squall-Invocation-Id").unwrap().to_string();
        let entry = out.entry(id).or_default();
        if status.is_terminal() {
            entry.push(status);
        }
    }
    out
}

/// Waits until the probe's consumer has delivered at least `deliveries` jobs (redeliveries
/// count) and every delivery is acknowledged.
async fn wait_deliveries_acknowledged(cluster: &Cluster, deliveries: u64) {
    let js = jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("JOBS").await.unwrap();
    eventually(
        Duration::from_secs(20),
        format_args!("{deliveries} deliveries of the probe's jobs, all acknowledged"),
        async || {
            let info = stream.consumer_info("fn-probe").await.unwrap();
            let (delivered, acknowledged) = (
                info.delivered.consumer_sequence,
                info.ack_floor.consumer_sequence,
            );
            match delivered >= deliveries && acknowledged == delivered {
                true => Ok(()),
                false => Err(format!(
                    "{delivered} delivered, acknowledged up to {acknowledged}"
                )),
            }
        },
    )
    .await
}

/// Waits until the probe's consumer holds no job: every job was run or dropped and acked.
async fn wait_jobs_drained(cluster: &Cluster) {
    let js = jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("JOBS").await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the probe's jobs to drain",
        async || {
            let info = stream.consumer_info("fn-probe").await.unwrap();
            match (info.num_pending, info.num_ack_pending) {
                (0, 0) => Ok(()),
                (pending, unacknowledged) => Err(format!(
                    "{pending} pending, {unacknowledged} unacknowledged"
                )),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_invocation_is_cancelled_at_once_and_never_runs() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, serde_json::json!({"concurrency": 1})).await;
    let dir = runs_dir(&cluster);
    let d = dir.display();
    let blocker = submit(&cluster, &format!("sleep 1500 {d}")).await;
    eventually(Duration::from_secs(20), "the blocker to run", async || {
        (runs(&dir, &blocker) == 1).then_some(())
    })
    .await;
    let victim = submit(&cluster, &format!("quick {d}")).await;

    let (status, body) = cancel(&cluster, &victim).await;
    assert_eq!(status, 200, "{body}");
    let view: Invocation = serde_json::from_value(body).unwrap();
    assert_eq!(view.status, InvocationStatus::Cancelled);
    assert_eq!(view.invocation_id, victim);
    assert!(view.error.is_none() && view.output.is_none(), "{view:?}");
    let (_, shown) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{victim}"))
        .await;
    assert_eq!(shown.status, InvocationStatus::Cancelled);

    // The blocker finishes, the worker reaches the victim's job and drops it.
    let done = cluster
        .wait_terminal(&blocker, Duration::from_secs(20))
        .await;
    assert_eq!(done.status, InvocationStatus::Succeeded);
    wait_jobs_drained(&cluster).await;
    assert_eq!(runs(&dir, &victim), 0, "a cancelled queued invocation ran");
    let records = terminal_records(&cluster).await;
    assert_eq!(records[&victim], vec![InvocationStatus::Cancelled]);

    // Cancelling it again says how it ended.
    let (status, body) = cancel(&cluster, &victim).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_finished");
    assert_eq!(body["error"]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cooperative_function_stops_early_and_its_waiting_caller_hears_cancelled() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, serde_json::json!({"timeout_ms": 60000})).await;
    let dir = runs_dir(&cluster);
    let input = format!("coop 30000 {}", dir.display());
    let caller = {
        let (http, url) = (cluster.http.clone(), cluster.url.clone());
        tokio::spawn(async move {
            let response = http
                .post(format!("{url}/v1/functions/probe/invocations"))
                .body(input)
                .send()
                .await
                .unwrap();
            let id = response.headers()["squall-invocation-id"]
                .to_str()
                .unwrap()
                .to_string();
            (
                response.status().as_u16(),
                id,
                response.text().await.unwrap(),
            )
        })
    };
    // Find the running invocation by its marker file.
    let id = eventually(Duration::from_secs(20), "the function to run", async || {
        std::fs::read_dir(&dir).unwrap().flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".ran").map(str::to_string)
        })
    })
    .await;
    let started = Instant::now();
    let (status, body) = cancel(&cluster, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");

    let (status, caller_id, text) = caller.await.unwrap();
    assert_eq!(caller_id, id);
    assert_eq!(status, 409, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "invocation_cancelled");
    // The function saw the cancellation and stopped long before its 30 s of work.
    wait_stopped_early(&dir, &id).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_jobs_drained(&cluster).await;
    // It answered "stopped early" with SQUALL_OK, yet the invocation stays cancelled.
    let records = terminal_records(&cluster).await;
    assert_eq!(records[&id], vec![InvocationStatus::Cancelled]);
    let (_, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(view.status, InvocationStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_ignores_cancellation_still_ends_cancelled_and_a_retry_never_comes() {
    let cluster = Cluster::start().await;
    deploy_probe(
        &cluster,
        serde_json::json!({"max_attempts": 3,
            "backoff": {"initial_ms": 1500, "multiplier": 1.0, "max_ms": 1500, "jitter": false}}),
    )
    .await;
    let dir = runs_dir(&cluster);
    let d = dir.display();

    // Running, and never asking: its "finished" is not stored.
    let running = submit(&cluster, &format!("sleep 800 {d}")).await;
    eventually(Duration::from_secs(20), "it to run", async || {
        (runs(&dir, &running) == 1).then_some(())
    })
    .await;
    let (status, body) = cancel(&cluster, &running).await;
    assert_eq!(status, 200, "{body}");

    // Waiting for its retry: the retry never runs.
    let retrying = submit(&cluster, &format!("retry {d}")).await;
    eventually(
        Duration::from_secs(20),
        "a retry to be waiting",
        async || {
            let (_, view) = cluster
                .get_as::<Invocation>(&format!("/v1/invocations/{retrying}"))
                .await;
            (view.status == InvocationStatus::Retrying)
                .then_some(())
                .ok_or(view)
        },
    )
    .await;
    let (status, body) = cancel(&cluster, &retrying).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attempts"], 1);
    // The redelivery comes after the backoff and is dropped: three deliveries in all (the
    // running one, the retrying one and its redelivery), every one of them acknowledged.
    wait_deliveries_acknowledged(&cluster, 3).await;
    wait_jobs_drained(&cluster).await;
    assert_eq!(
        runs(&dir, &retrying),
        1,
        "a cancelled invocation was retried"
    );

    let records = terminal_records(&cluster).await;
    for id in [&running, &retrying] {
        assert_eq!(records[id], vec![InvocationStatus::Cancelled], "{id}");
        let (_, view) = cluster
            .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
            .await;
        assert_eq!(view.status, InvocationStatus::Cancelled, "{id}");
    }
    let (status, listed) = cluster
        .get_json("/v1/invocations?function=probe&status=cancelled")
        .await;
    assert_eq!(status, 200, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_functions_backlog_is_cancelled_in_one_request_and_none_of_it_runs() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, serde_json::json!({"concurrency": 1})).await;
    let dir = runs_dir(&cluster);
    let d = dir.display();
    let blocker = submit(&cluster, &format!("sleep 1500 {d}")).await;
    eventually(Duration::from_secs(20), "the blocker to run", async || {
        (runs(&dir, &blocker) == 1).then_some(())
    })
    .await;
    let backlog = cluster
        .submit_async("probe", &format!("quick {d}"), 30)
        .await;

    let url = format!("{}/v1/functions/probe/invocations", cluster.url);
    for (query, code) in [("", 400), ("?status=running", 400), ("?state=queued", 400)] {
        let response = cluster
            .http
            .delete(format!("{url}{query}"))
            .send()
            .await
            .unwrap();
        let (status, body) = squall_tests::json_response(response).await;
        assert_eq!(status, code, "{query}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let response = cluster
        .http
        .delete(format!(
            "{}/v1/functions/nobody/invocations?status=queued",
            cluster.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let response = cluster
        .http
        .delete(format!("{url}?status=queued"))
        .send()
        .await
        .unwrap();
    let (status, done) = squall_tests::decode_response::<CancelledBacklog>(response).await;
    assert_eq!(status, 200);
    assert_eq!((done.cancelled, done.already_finished), (30, 0), "{done:?}");

    assert_eq!(
        cluster
            .wait_terminal(&blocker, Duration::from_secs(20))
            .await
            .status,
        InvocationStatus::Succeeded
    );
    wait_jobs_drained(&cluster).await;
    let records = terminal_records(&cluster).await;
    for id in &backlog {
        assert_eq!(runs(&dir, id), 0, "cancelled {id} ran");
        assert_eq!(records[id], vec![InvocationStatus::Cancelled], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_ended_invocation_is_refused_with_how_it_ended() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, serde_json::json!({})).await;
    let dir = runs_dir(&cluster);
    let response = cluster
        .invoke("probe", format!("quick {}", dir.display()))
        .await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = cancel(&cluster, &id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["status"], "succeeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{body}"
    );
}

/// Needs no worker: the dispatcher in process answers an unknown id 404 and a malformed one 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_or_malformed_invocation_is_refused_clearly() {
    let app = App::start().await;
    let unknown = app
        .send(
            Method::DELETE,
            "/v1/invocations/0193a2b4-0000-7000-8000-000000000000",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::NOT_FOUND,
        "{:?}",
        unknown.json()
    );
    assert_eq!(unknown.error().code, "invocation_not_found");
    let malformed = app
        .send(
            Method::DELETE,
            "/v1/invocations/not-an-id",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_completion_a_thousand_times_ends_each_invocation_in_exactly_one_state() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, serde_json::json!({})).await;
    let dir = runs_dir(&cluster);
    let input = format!("quick {}", dir.display());
    let verdicts: Vec<(String, u16, serde_json::Value)> = futures::stream::iter(0..1000)
        .map(|_| {
            let (cluster, input) = (&cluster, input.clone());
            async move {
                let id = submit(cluster, &input).await;
                let (status, body) = cancel(cluster, &id).await;
                (id, status, body)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    wait_jobs_drained(&cluster).await;
    let records = terminal_records(&cluster).await;
    let (mut cancelled, mut completed) = (0, 0);
    for (id, status, body) in &verdicts {
        let terminal = records.get(id).cloned().unwrap_or_default();
        assert_eq!(terminal.len(), 1, "{id}: terminal records {terminal:?}");
        match status {
            200 => {
                assert_eq!(terminal[0], InvocationStatus::Cancelled, "{id}");
                cancelled += 1;
            }
            409 => {
                assert_eq!(
                    body["error"]["status"],
                    terminal[0].as_str(),
                    "{id}: {body}"
                );
                assert_eq!(terminal[0], InvocationStatus::Succeeded, "{id}");
                completed += 1;
            }
            other => panic!("{id}: cancel answered {other}: {body}"),
        }
    }
    eprintln!("1000 races: {cancelled} cancelled first, {completed} completed first");
    assert_eq!(cancelled + completed, 1000);
}

/// After a broker restart, a function process (logged in with its function's credentials)
/// watches the cancellations again, so a running cooperative function still hears its
/// cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_a_function_process_still_hears_its_cancellation() {
    let mut cluster = Cluster::start_with(
        squall_tests::ClusterOptions {
            workers: 0,
            ..Default::default()
        }
        .with_auth(),
    )
    .await;
    deploy_probe(&cluster, serde_json::json!({"timeout_ms": 60000})).await;
    // Without the sandbox, so that the probe may write its markers into the test's folder.
    let fleet = cluster.start_fleet(
        "fleet",
        &[
            "--min",
            "1",
            "--max",
            "1",
            "--interval-ms",
            "200",
            "--sandbox",
            "off",
        ],
    );
    let dir = runs_dir(&cluster);
    let quick = format!("quick {}", dir.display());
    let answered = async |cluster: &Cluster| {
        eventually(
            Duration::from_secs(60),
            "a quick call to succeed",
            async || {
                let response = cluster.invoke("probe", quick.clone()).await;
                match response.status().as_u16() {
                    200 => Ok(()),
                    status => Err((status, response.text().await.unwrap_or_default())),
                }
            },
        )
        .await
    };
    answered(&cluster).await;
    let process = fleet.live_children();

    cluster.nats.restart_after(Duration::from_millis(500));
    answered(&cluster).await;
    assert_eq!(
        fleet.live_children(),
        process,
        "the same function process serves"
    );

    let id = submit(&cluster, &format!("coop 30000 {}", dir.display())).await;
    eventually(
        Duration::from_secs(20),
        "the function to run",
        async || match runs(&dir, &id) {
            0 => Err(squall_tests::Text(fleet.output())),
            _ => Ok(()),
        },
    )
    .await;
    let (status, body) = cancel(&cluster, &id).await;
    assert_eq!(status, 200, "{body}");
    wait_stopped_early(&dir, &id).await;
    // Refused deletes of old watches are harmless (async-nats goes on to create the new one);
    // a refused create leaves a watch dead.
    let log = cluster.nats.process.output();
    assert!(
        !log.contains("Publish Violation - Subject \"$JS.API.CONSUMER.CREATE"),
        "the broker refused to recreate a watch:\n{log}"
    );
}
