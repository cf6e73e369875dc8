//! The JetStream topology is created idempotently and deploy keeps each function's consumer in
//! step with its spec.

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};
use squall_broker::{ensure_topology, open_topology, TopologyConfig};
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

    // The keys bucket is part of the topology; a worker's view of it leaves the bucket out.
    assert!(
        topology.keys.is_some(),
        "ensure_topology opens the keys bucket"
    );
    let keys = topology
        .jetstream
        .get_stream("KV_squall_keys")
        .await
        .expect("the keys bucket")
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(keys.max_messages_per_subject, 1, "one value per key");
    assert_eq!(keys.num_replicas, config.replicas);
    let opened = open_topology(client.clone()).await.expect("open");
    assert!(opened.keys.is_none());

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

/// Waits until `stream` holds the durable consumer `name`, and returns its configuration.
async fn consumer_config(
    js: &async_nats::jetstream::Context,
    stream: &str,
    name: &str,
) -> async_nats::jetstream::consumer::Config {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = match js.get_stream(stream).await {
            Ok(stream) => stream.consumer_info(name).await.ok(),
            Err(_) => None,
        };
        match found {
            Some(info) => return info.config,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            None => panic!("no consumer {name} on {stream}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatchers_shared_consumers_keep_their_names_on_the_broker() {
    let cluster = Cluster::start().await;
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let mover = consumer_config(&js, "SQUALL_ADVISORIES", "dlq-mover").await;
    assert_eq!(mover.ack_wait, Duration::from_secs(30));
    let cron = consumer_config(&js, "SCHEDULES", "cron-dispatch").await;
    assert_eq!(cron.filter_subject, "cron.*");

    cluster.deploy_example("hello", None).await;
    let (status, body) = cluster
        .put_json(
            "/v1/triggers/orders",
            serde_json::json!({"function": "hello", "subject": "shop.orders.>"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let trigger = consumer_config(&js, "EVENTS", "trigger-orders").await;
    assert_eq!(trigger.filter_subject, "shop.orders.>");
    let mut events = js.get_stream("EVENTS").await.unwrap();
    let subjects = events.info().await.unwrap().config.subjects.clone();
    assert_eq!(subjects, ["shop.orders.>", "squall.events.unbound"]);
}
