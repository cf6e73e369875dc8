//! Quotas and bounded storage: one function's backlog cannot fill JOBS for the others, and the
//! dead-letter streams and the state bucket have a size, with a documented behaviour when full.

use axum::http::Method;
use squall_broker::{ensure_topology, TopologyConfig};
use squall_tests::in_process::App;
use squall_tests::{built, NatsServer};

/// The hello example's library.
fn hello() -> Vec<u8> {
    std::fs::read(built().library("hello")).unwrap()
}

/// Submits one asynchronous invocation of `function` (no worker runs it: it stays queued).
async fn submit(app: &App, function: &str) -> squall_tests::in_process::Answer {
    app.send(
        Method::POST,
        &format!("/v1/functions/{function}/invocations?async=true"),
        &[],
        "{}",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_function_backlog_answers_429_and_other_functions_are_still_accepted() {
    // In process, without a worker: every accepted job stays queued.
    let app = App::start().await;
    let spec = serde_json::json!({"max_backlog": 3});
    assert_eq!(app.deploy("slow", &hello(), Some(&spec)).await.status, 201);
    assert_eq!(app.deploy("other", &hello(), None).await.status, 201);
    for _ in 0..3 {
        let answer = submit(&app, "slow").await;
        assert_eq!(answer.status, 202, "{:?}", answer.json());
    }
    let full = submit(&app, "slow").await;
    assert_eq!(full.status, 429, "{:?}", full.json());
    assert_eq!(full.error().code, "function_backlog_full");
    assert!(
        full.headers.contains_key("retry-after"),
        "{:?}",
        full.headers
    );
    // A batch that would pass the limit is refused whole.
    let batch = app
        .send(
            Method::POST,
            "/v1/functions/slow/batch",
            &[("content-type", "application/x-ndjson")],
            "{}\n",
        )
        .await;
    assert_eq!(batch.status, 429, "{:?}", batch.json());
    // Another function is not held back by the first one's backlog.
    for _ in 0..5 {
        let answer = submit(&app, "other").await;
        assert_eq!(answer.status, 202, "{:?}", answer.json());
    }
    // A spec cannot promise more than the dispatcher's limit.
    let too_high = serde_json::json!({"max_backlog": 100_001});
    let answer = app.deploy("slow", &hello(), Some(&too_high)).await;
    assert_eq!(answer.status, 422, "{:?}", answer.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_refuses_a_functions_jobs_beyond_the_dispatchers_limit_and_no_others() {
    // The stream's per-subject limit holds for every publisher, plain NATS clients included.
    let app = App::start_with(|config| config.topology.max_backlog = 2).await;
    assert_eq!(app.deploy("flood", &hello(), None).await.status, 201);
    assert_eq!(app.deploy("calm", &hello(), None).await.status, 201);
    for _ in 0..2 {
        assert_eq!(submit(&app, "flood").await.status, 202);
    }
    let full = submit(&app, "flood").await;
    assert_eq!(full.status, 429, "{:?}", full.json());
    assert_eq!(full.error().code, "function_backlog_full");
    assert!(full.headers.contains_key("retry-after"));
    let js = async_nats::jetstream::new(app.state.broker.client.clone());
    let raw = js.publish("jobs.flood", "raw".into()).await.unwrap().await;
    assert!(
        raw.is_err(),
        "a plain client's job beyond the limit is refused"
    );
    assert_eq!(submit(&app, "calm").await.status, 202);
    js.publish("jobs.calm", "raw".into())
        .await
        .unwrap()
        .await
        .expect("another function's subject still takes jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_bucket_refuses_writes_when_full_and_the_dlq_drops_its_oldest() {
    let nats = NatsServer::start();
    let client = async_nats::connect(&nats.url).await.unwrap();
    // A deployment made before the bounds: unbounded streams and bucket.
    let unbounded = TopologyConfig {
        dlq_max_bytes: -1,
        destination_dlq_max_bytes: -1,
        state_max_bytes: -1,
        ..TopologyConfig::default()
    };
    ensure_topology(client.clone(), &unbounded).await.unwrap();
    // The update path bounds them.
    let bounded = TopologyConfig {
        dlq_max_bytes: 64 * 1024,
        state_max_bytes: 64 * 1024,
        ..TopologyConfig::default()
    };
    let topology = ensure_topology(client.clone(), &bounded).await.unwrap();
    let dlq = topology.dlq.clone().info().await.unwrap().config.clone();
    assert_eq!(dlq.max_bytes, 64 * 1024);
    let destinations =
        squall_broker::topology::ensure_destination_topology(&topology.jetstream, &bounded)
            .await
            .unwrap();
    let letters = destinations
        .dead_letters
        .clone()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(letters.max_bytes, 64 << 20);

    // State: writes fail once the bucket is full, and what it holds stays.
    let value = bytes::Bytes::from(vec![b'x'; 8 * 1024]);
    topology
        .state
        .put("f.first", value.clone())
        .await
        .expect("room for the first value");
    let mut refused = None;
    for n in 0..32 {
        if let Err(error) = topology.state.put(format!("f.k{n}"), value.clone()).await {
            refused = Some(error);
            break;
        }
    }
    let refused = refused.expect("a full state bucket refuses a write");
    assert!(refused.to_string().contains("maximum bytes"), "{refused}");
    assert_eq!(
        topology.state.get("f.first").await.unwrap(),
        Some(value.clone()),
        "a full bucket drops nothing it holds"
    );

    // DLQ: the oldest dead letters go to make room for new ones.
    let js = &topology.jetstream;
    let letter = bytes::Bytes::from(vec![b'd'; 8 * 1024]);
    let mut first = None;
    for n in 0..32 {
        let ack = js
            .publish(format!("dlq.f.id{n}"), letter.clone())
            .await
            .unwrap()
            .await
            .expect("a full DLQ still takes new letters");
        first.get_or_insert(ack.sequence);
    }
    let mut dlq = topology.dlq.clone();
    let state = dlq.info().await.unwrap().state.clone();
    assert!(state.bytes <= 64 * 1024, "{state:?}");
    assert!(state.first_sequence > first.unwrap(), "{state:?}");
    assert!(dlq
        .get_last_raw_message_by_subject("dlq.f.id31")
        .await
        .is_ok());
    assert!(dlq
        .get_last_raw_message_by_subject("dlq.f.id0")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounding_the_backlog_of_an_existing_deployment_drops_no_queued_job() {
    let nats = NatsServer::start();
    let client = async_nats::connect(&nats.url).await.unwrap();
    // An earlier release's JOBS: no per-subject limit, and one function with 5 jobs queued.
    let unlimited = TopologyConfig {
        max_backlog: -1,
        ..TopologyConfig::default()
    };
    let topology = ensure_topology(client.clone(), &unlimited).await.unwrap();
    for _ in 0..5 {
        let ack = topology
            .jetstream
            .publish("jobs.a", "x".into())
            .await
            .unwrap();
        ack.await.unwrap();
    }
    let limited = TopologyConfig {
        max_backlog: 2,
        ..TopologyConfig::default()
    };
    let topology = ensure_topology(client.clone(), &limited).await.unwrap();
    let info = topology.jobs.clone().info().await.unwrap().clone();
    assert_eq!(info.state.messages, 5, "every queued job is kept");
    assert_eq!(info.config.max_messages_per_subject, 5);
    assert!(info.config.discard_new_per_subject);
    let refused = topology
        .jetstream
        .publish("jobs.a", "x".into())
        .await
        .unwrap()
        .await;
    assert!(refused.is_err(), "the full function takes no more");
    // Once it drained, the next start sets the configured limit.
    topology.jobs.purge().await.unwrap();
    let topology = ensure_topology(client, &limited).await.unwrap();
    let info = topology.jobs.clone().info().await.unwrap().clone();
    assert_eq!(info.config.max_messages_per_subject, 2);
}
