//! The JetStream topology is created idempotently and deploy keeps each function's consumer in
//! step with its spec.

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};
use squall_broker::{ensure_topology, TopologyConfig};
use squall_tests::{Cluster, NatsServer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topology_is_idempotent_and_follows_the_design() {
    let nats = NatsServer::start();
    let client = async_nats::connect(&nats.url).await.unwrap();
    let config = TopologyConfig::default();
    ensure_topology(client.clone(), &config)
        .await
        .expect("first ensure");
    let topology = ensure_topology(client.clone(), &config)
        .await
        .expect("second ensure is a no-op");

    let jobs = topology.jobs.clone().info().await.unwrap().config.clone();
    assert_eq!(jobs.subjects, vec!["jobs.*".to_string()]);
    assert_eq!(jobs.retention, RetentionPolicy::WorkQueue);
    assert_eq!(
        jobs.discard,
        DiscardPolicy::New,
        "a full JOBS refuses, never discards"
    );
    assert_eq!(jobs.duplicate_window, Duration::from_secs(120));

    let results = topology
        .results
        .clone()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(results.subjects, vec!["results.*.*".to_string()]);
    assert_eq!(results.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(results.max_bytes, 1 << 30);
    assert_eq!(results.discard, DiscardPolicy::Old);

    let dlq = topology.dlq.clone().info().await.unwrap().config.clone();
    assert_eq!(dlq.max_age, Duration::from_secs(14 * 24 * 3600));

    // A changed limit is applied to the existing stream.
    let bigger = TopologyConfig {
        results_max_bytes: 2 << 30,
        ..TopologyConfig::default()
    };
    let topology = ensure_topology(client, &bigger).await.expect("update");
    let results = topology
        .results
        .clone()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(results.max_bytes, 2 << 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_creates_and_updates_the_function_consumer() {
    let cluster = Cluster::start().await;
    cluster
        .deploy_example(
            "hello",
            Some(serde_json::json!({"max_attempts": 4, "concurrency": 7, "max_concurrency": 9, "timeout_ms": 1000})),
        )
        .await;
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("JOBS").await.unwrap();
    let info = stream.consumer_info("fn-hello").await.unwrap();
    assert_eq!(info.config.filter_subject, "jobs.hello");
    assert_eq!(info.config.max_deliver, 4);
    assert_eq!(
        info.config.max_ack_pending, 9,
        "max_concurrency caps the fleet"
    );
    assert_eq!(info.config.ack_wait, Duration::from_secs(5));

    cluster
        .deploy_example(
            "hello",
            Some(serde_json::json!({"max_attempts": 2, "concurrency": 3})),
        )
        .await;
    let info = stream.consumer_info("fn-hello").await.unwrap();
    assert_eq!(info.config.max_deliver, 2);
    assert_eq!(
        info.config.max_ack_pending, -1,
        "no fleet-wide cap without max_concurrency"
    );

    let response = cluster
        .http
        .delete(format!("{}/v1/functions/hello", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        stream.consumer_info("fn-hello").await.is_err(),
        "delete removes the consumer"
    );
    let (status, _) = cluster.get_json("/v1/functions/hello").await;
    assert_eq!(status, 404);
    assert_eq!(cluster.invoke("hello", "").await.status(), 404);
}
