//! Poison jobs, crashes and exhausted retries end in the dead-letter queue, exactly once, and
//! can be inspected, replayed and removed.

use squall_api::invocations::Accepted;
use squall_api::operations::{DeadLetter, DeadLetterList, ReplayedAll};
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_api::ErrorBody;
use squall_tests::{built, eventually, Cluster, ClusterOptions};
use std::time::{Duration, Instant};

async fn invoke_async(cluster: &Cluster, function: &str, body: &str) -> String {
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/{function}/invocations?async=true",
            cluster.url
        ))
        .header("X-Tenant", "acme")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (_, accepted) = squall_tests::decode_response::<Accepted>(response).await;
    accepted.invocation_id
}

async fn dlq_ids(cluster: &Cluster, function: &str) -> Vec<String> {
    let (status, body) = cluster
        .get_as::<DeadLetterList>(&format!("/v1/dlq?function={function}"))
        .await;
    assert_eq!(status, 200, "{body:?}");
    body.dead_letters.into_iter().map(|d| d.id).collect()
}

/// Waits until the DLQ has a record for `id` (the worker or the mover writes it right after the
/// terminal result).
async fn wait_dead_letter(cluster: &Cluster, id: &str) -> DeadLetter {
    eventually(
        Duration::from_secs(20),
        format_args!("a dead letter for {id}"),
        async || match cluster.get_json(&format!("/v1/dlq/{id}")).await {
            (200, body) => Ok(serde_json::from_value(body.clone())
                .unwrap_or_else(|e| panic!("dead letter {id} does not decode ({e}): {body}"))),
            (_, body) => Err(body),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_lands_in_dlq_once_while_a_healthy_function_keeps_completing() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        dispatchers: 2,
        ..Default::default()
    })
    .await;
    cluster
        .deploy_example("crash", Some(serde_json::json!({"max_attempts": 2})))
        .await;
    cluster.deploy_example("hello", None).await;
    let worker_pid = cluster.workers[0].children();
    let id = invoke_async(&cluster, "crash", "boom").await;

    // The healthy function keeps completing while the poison job kills worker processes.
    let started = Instant::now();
    let mut completed = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let response = cluster.invoke("hello", r#"{"name": "still here"}"#).await;
        assert_eq!(response.status(), 200);
        completed += 1;
    }
    assert!(completed > 0);

    let view = cluster.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(view.status, InvocationStatus::DeadLettered, "{view:?}");
    assert_eq!(view.error.as_ref().map(|e| e.kind), Some(ErrorKind::Crash));
    assert_eq!(view.attempts, 2);
    let letter = wait_dead_letter(&cluster, &id).await;
    assert_eq!(letter.summary.function, "crash");
    assert_eq!(letter.payload.as_deref(), Some("boom"));
    assert_eq!(
        letter.headers.get("X-Tenant").map(String::as_str),
        Some("acme")
    );
    assert!(letter.summary.version.starts_with("sha256:"));
    let history = &letter.attempt_history;
    assert_eq!(history.len(), 2, "{letter:?}");
    assert!(history.iter().all(|a| a.kind == Some(ErrorKind::Crash)));

    // Both dispatchers run the mover; the record exists once.
    let (_, second) = {
        let url = cluster.more_dispatchers[0].1.clone();
        let r = cluster
            .http
            .get(format!("{url}/v1/dlq?function=crash"))
            .send()
            .await
            .unwrap();
        squall_tests::decode_response::<DeadLetterList>(r).await
    };
    assert_eq!(second.dead_letters.len(), 1, "{second:?}");
    assert_eq!(dlq_ids(&cluster, "crash").await, vec![id.clone()]);

    // The supervisor restarted the worker process it lost.
    assert_ne!(cluster.workers[0].children(), worker_pid);
    assert!(cluster.workers[0]
        .output()
        .contains("worker process died; restarting it"));
    cluster.add_worker();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_shows_between_attempts_and_exhausted_retries_are_dead_lettered() {
    let cluster = Cluster::start().await;
    let spec =
        serde_json::json!({"max_attempts": 2, "backoff": {"initial_ms": 1500, "jitter": false}});
    cluster.deploy_example("panic", Some(spec)).await;
    let id = invoke_async(&cluster, "panic", "").await;
    let view = eventually(
        Duration::from_secs(20),
        "a retry to be waiting",
        async || {
            let (_, view) = cluster
                .get_as::<squall_api::invocations::Invocation>(&format!("/v1/invocations/{id}"))
                .await;
            match view.status == InvocationStatus::Retrying {
                true => Ok(view),
                false => Err(view),
            }
        },
    )
    .await;
    assert_eq!(view.attempts, 1);
    assert_eq!(view.error.as_ref().map(|e| e.kind), Some(ErrorKind::Panic));
    let view = cluster.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(view.status, InvocationStatus::DeadLettered);
    assert_eq!(view.attempts, 2);
    let letter = wait_dead_letter(&cluster, &id).await;
    let history = &letter.attempt_history;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|a| a.kind == Some(ErrorKind::Panic)));
    assert_eq!(history[0].message, "panic: deliberate panic for testing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_redeploying_a_fixed_function_succeeds() {
    let cluster = Cluster::start().await;
    // "flaky" is first the always-failing library, asked to retry, with one attempt.
    cluster
        .deploy(
            "flaky",
            built().library("fail"),
            Some(serde_json::json!({"max_attempts": 1})),
        )
        .await;
    let first = invoke_async(&cluster, "flaky", r#"{"retry": true}"#).await;
    let second = invoke_async(&cluster, "flaky", r#"{"retry": true}"#).await;
    let third = invoke_async(&cluster, "flaky", r#"{"retry": true}"#).await;
    for id in [&first, &second, &third] {
        let view = cluster.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(view.status, InvocationStatus::DeadLettered);
        wait_dead_letter(&cluster, id).await;
    }

    // Fixed: the same name now runs the hello library.
    let (status, _) = cluster
        .deploy("flaky", built().library("hello"), None)
        .await;
    assert_eq!(status, 201);
    let response = cluster
        .http
        .post(format!("{}/v1/dlq/{first}/replay", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (_, body) = squall_tests::decode_response::<Accepted>(response).await;
    assert_eq!(body.replay_of.as_deref(), Some(first.as_str()));
    let new_id = body.invocation_id;
    assert_ne!(new_id, first);
    let view = cluster
        .wait_terminal(&new_id, Duration::from_secs(20))
        .await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    assert_eq!(
        view.output.as_deref(),
        Some(r#"{"greeting":"Hello, world!"}"#)
    );
    let (status, _) = cluster.get_json(&format!("/v1/dlq/{first}")).await;
    assert_eq!(status, 404, "a replayed dead letter leaves the queue");

    // Remove one, bulk-replay the rest.
    let response = cluster
        .http
        .delete(format!("{}/v1/dlq/{second}", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(dlq_ids(&cluster, "flaky").await, vec![third.clone()]);
    let response = cluster
        .http
        .post(format!("{}/v1/dlq/replay?function=flaky", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (_, body) = squall_tests::decode_response::<ReplayedAll>(response).await;
    let replayed = &body.replayed;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].replay_of, third);
    let view = cluster
        .wait_terminal(&replayed[0].invocation_id, Duration::from_secs(20))
        .await;
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert!(dlq_ids(&cluster, "flaky").await.is_empty());

    // Precise errors.
    let (status, body) = cluster.get_as::<ErrorBody>("/v1/dlq/not-an-id").await;
    assert_eq!(status, 400, "{body:?}");
    let response = cluster
        .http
        .post(format!("{}/v1/dlq/replay", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_function_dead_letters_its_queued_jobs_and_lets_running_ones_finish() {
    let cluster = Cluster::start().await;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"concurrency": 1, "timeout_ms": 10000})),
        )
        .await;
    squall_tests::wait_workers_ready(&cluster, "sleep").await;
    let running = invoke_async(&cluster, "sleep", "1500").await;
    // Wait until the first job runs, so the others queue behind it (concurrency 1).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(invoke_async(&cluster, "sleep", "10").await);
    }
    let response = cluster
        .http
        .delete(format!("{}/v1/functions/sleep", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let view = cluster
        .wait_terminal(&running, Duration::from_secs(20))
        .await;
    assert_eq!(
        view.status,
        InvocationStatus::Succeeded,
        "the running job finished: {view:?}"
    );
    for id in &queued {
        let view = cluster.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(view.status, InvocationStatus::DeadLettered, "{view:?}");
        let error = view.error.as_ref().expect("an error");
        assert_eq!(error.kind, ErrorKind::Load);
        assert_eq!(
            error.message,
            "function sleep was deleted before this invocation ran"
        );
    }
    let mut listed = dlq_ids(&cluster, "sleep").await;
    listed.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(listed, expected);

    // After a redeploy the dead letters replay.
    cluster.deploy_example("sleep", None).await;
    let response = cluster
        .http
        .post(format!("{}/v1/dlq/replay?function=sleep", cluster.url))
        .send()
        .await
        .unwrap();
    let (_, body) = squall_tests::decode_response::<ReplayedAll>(response).await;
    for item in &body.replayed {
        let view = cluster
            .wait_terminal(&item.invocation_id, Duration::from_secs(20))
            .await;
        assert_eq!(view.status, InvocationStatus::Succeeded);
    }
}
