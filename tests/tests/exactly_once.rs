//! With several workers, every job runs exactly once.

use futures::StreamExt;
use squall_tests::{wait_workers_ready, Cluster, ClusterOptions};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_200_jobs_exactly_once() {
    let cluster = Cluster::start_with(ClusterOptions {
        workers: 2,
        ..Default::default()
    })
    .await;
    cluster
        .deploy_example("wordcount", Some(serde_json::json!({"concurrency": 8})))
        .await;
    wait_workers_ready(&cluster, "wordcount").await;

    let mut ids = Vec::new();
    for i in 0..200 {
        let response = cluster
            .http
            .post(format!(
                "{}/v1/functions/wordcount/invocations?async=true",
                cluster.url
            ))
            .body(format!("job {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let (_, body) =
            squall_tests::decode_response::<squall_api::invocations::Accepted>(response).await;
        ids.push(body.invocation_id);
    }
    for id in &ids {
        let view = cluster.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(
            view.status,
            squall_api::InvocationStatus::Succeeded,
            "{view:?}"
        );
        assert_eq!(view.attempts, 1, "{view:?}");
    }

    // Read every result record from the stream: exactly one per invocation.
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("RESULTS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "results.wordcount.*".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    let mut seen = 0;
    while seen < 200 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("all results readable")
            .unwrap()
            .unwrap();
        let headers = message.headers.clone().unwrap();
        *per_id
            .entry(headers.get("Squall-Invocation-Id").unwrap().to_string())
            .or_default() += 1;
        *per_worker
            .entry(headers.get("Squall-Worker").unwrap().to_string())
            .or_default() += 1;
        seen += 1;
    }
    // Nothing beyond the 200 arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), messages.next())
            .await
            .is_err()
    );
    assert_eq!(per_id.len(), 200);
    assert!(per_id.values().all(|&n| n == 1));
    for id in &ids {
        assert_eq!(per_id.get(id), Some(&1), "{id}");
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers took jobs: {per_worker:?}"
    );
}
