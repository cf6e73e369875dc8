//! The JetStream topology is created idempotently and deploy keeps each function's consumer in
//! step with its spec (through the dispatcher in process: none of it needs a worker).

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};
use axum::body::Body;
use axum::http::Method;
use squall_broker::{ensure_topology, open_topology, TopologyConfig};
use squall_tests::in_process::App;
use squall_tests::{built, eventually_every, NatsServer};
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
    // In process: the consumer is the dispatcher's doing; no worker is needed.
    let app = App::start().await;
    let answer = app
        .deploy(
            "hello",
            &hello(),
            Some(&serde_json::json!({"max_attempts": 4, "concurrency": 7, "max_concurrency": 9, "timeout_ms": 1000})),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    let js = async_nats::jetstream::new(app.state.broker.client.clone());
    let stream = js.get_stream("JOBS").await.unwrap();
    let info = stream.consumer_info("fn-hello").await.unwrap();
    assert_eq!(info.config.filter_subject, "jobs.hello");
    assert_eq!(info.config.max_deliver, 4);
    assert_eq!(
        info.config.max_ack_pending, 9,
        "max_concurrency caps the fleet"
    );
    assert_eq!(info.config.ack_wait, Duration::from_secs(5));

    let answer = app
        .deploy(
            "hello",
            &hello(),
            Some(&serde_json::json!({"max_attempts": 2, "concurrency": 3})),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    let info = stream.consumer_info("fn-hello").await.unwrap();
    assert_eq!(info.config.max_deliver, 2);
    assert_eq!(
        info.config.max_ack_pending, -1,
        "no fleet-wide cap without max_concurrency"
    );

    let answer = app
        .send(Method::DELETE, "/v1/functions/hello", &[], Body::empty())
        .await;
    assert_eq!(answer.status, 204);
    assert!(
        stream.consumer_info("fn-hello").await.is_err(),
        "delete removes the consumer"
    );
    assert_eq!(app.get("/v1/functions/hello").await.status, 404);
    let answer = app
        .send(Method::POST, "/v1/functions/hello/invocations", &[], "")
        .await;
    assert_eq!(answer.status, 404);
}

/// The hello example's library.
fn hello() -> Vec<u8> {
    std::fs::read(built().library("hello")).unwrap()
}

/// Waits until `stream` holds the durable consumer `name`, and returns its configuration.
async fn consumer_config(
    js: &async_nats::jetstream::Context,
    stream: &str,
    name: &str,
) -> async_nats::jetstream::consumer::Config {
    eventually_every(
        Duration::from_secs(10),
        Duration::from_millis(100),
        format_args!("a consumer {name} on {stream}"),
        async || {
            let stream = js.get_stream(stream).await.ok()?;
            stream
                .consumer_info(name)
                .await
                .ok()
                .map(|info| info.config)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatchers_shared_consumers_keep_their_names_on_the_broker() {
    // In process: the shared consumers are the dispatcher's; no worker is needed.
    let app = App::start().await;
    let js = async_nats::jetstream::new(app.state.broker.client.clone());
    let mover = consumer_config(&js, "SQUALL_ADVISORIES", "dlq-mover").await;
    assert_eq!(mover.ack_wait, Duration::from_secs(30));
    let cron = consumer_config(&js, "SCHEDULES", "cron-dispatch").await;
    assert_eq!(cron.filter_subject, "cron.*");

    assert_eq!(app.deploy("hello", &hello(), None).await.status, 201);
    let answer = app
        .put_json(
            "/v1/triggers/orders",
            &serde_json::json!({"function": "hello", "subject": "shop.orders.>"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let trigger = consumer_config(&js, "EVENTS", "trigger-orders").await;
    assert_eq!(trigger.filter_subject, "shop.orders.>");
    let mut events = js.get_stream("EVENTS").await.unwrap();
    let subjects = events.info().await.unwrap().config.subjects.clone();
    assert_eq!(subjects, ["shop.orders.>", "squall.events.unbound"]);
}

/// JetStream's file store limit is the config's, not the server's default (75 % of the disk
/// space free when it starts): on a nearly full disk a derived limit refuses the streams'
/// reservations ("insufficient storage resources") and no dispatcher ever becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_config_fixes_the_file_store_limit_whatever_the_disk_has_free() {
    // Every config with a JetStream block (found, so that a new one cannot be missed).
    let root = squall_tests::workspace_root();
    let mut configs = vec![root.join("deploy/kubernetes/nats.yaml")];
    let mut dirs = vec![root.join("broker-config/nats")];
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
            match path.is_dir() {
                true => dirs.push(path),
                false => configs.push(path),
            }
        }
    }
    let mut checked = 0;
    for config in configs {
        let text = std::fs::read_to_string(&config).unwrap();
        if !text.lines().any(|line| line.trim() == "jetstream {") {
            continue;
        }
        checked += 1;
        assert!(
            text.lines()
                .any(|line| line.trim() == "max_file_store: 8GB"),
            "{} sets max_file_store",
            config.display()
        );
    }
    assert!(
        checked >= 6,
        "only {checked} configs with a JetStream block found"
    );

    let nats = NatsServer::start();
    let varz: serde_json::Value = reqwest::get(format!("{}/varz", nats.monitoring_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        varz["jetstream"]["config"]["max_storage"],
        serde_json::json!(8u64 << 30),
        "the running server's limit: {}",
        varz["jetstream"]["config"]
    );
}

/// A broker whose store cannot hold the streams' limits stops a starting dispatcher at once,
/// with what to change, instead of two minutes of retries that cannot succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_store_too_small_for_the_streams_is_a_clear_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.conf");
    std::fs::write(
        &config,
        "max_payload: 8MB\njetstream {\n  max_memory_store: 256MB\n  max_file_store: 512MB\n}\n",
    )
    .unwrap();
    let nats = NatsServer::start_profile(config.to_str().unwrap());
    let config = squall_dispatcher::DispatcherConfig {
        nats_url: nats.url.clone(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("dispatcher"),
        replicas: Some(1),
        ..squall_dispatcher::DispatcherConfig::default()
    };
    let error = tokio::time::timeout(Duration::from_secs(60), squall_dispatcher::connect(config))
        .await
        .expect("the dispatcher gives up at once, not after its retries")
        .err()
        .expect("the dispatcher refuses to start");
    let text = format!("{error:#}");
    assert!(
        text.contains("JetStream file store is too small") && text.contains("max_file_store"),
        "{text}"
    );
}
