//! Jobs published by a plain NATS client run, and their results appear on plain subjects.

use futures::StreamExt;
use squall_tests::Cluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_nats_publish_runs_the_function_and_publishes_the_result() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    let client = cluster.nats_client().await;
    let mut results = client.subscribe("results.hello.>").await.unwrap();
    client.flush().await.unwrap();

    // A bare core-NATS publish: no headers, no JetStream API, just a body.
    client
        .publish("jobs.hello", r#"{"name": "Nats"}"#.into())
        .await
        .unwrap();
    client.flush().await.unwrap();

    let message = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result within 20 s")
        .expect("subscription open");
    let headers = message.headers.clone().expect("result headers");
    assert_eq!(headers.get("Squall-Status").unwrap().as_str(), "succeeded");
    let id = headers
        .get("Squall-Invocation-Id")
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(message.subject.as_str(), format!("results.hello.{id}"));
    assert_eq!(&message.payload[..], br#"{"greeting":"Hello, Nats!"}"#);

    // The API finds the invocation by id even though no dispatcher accepted it.
    let view = cluster.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(view.status, squall_api::InvocationStatus::Succeeded);
    assert_eq!(view.function, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_publish_with_own_invocation_id_keeps_it() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("wordcount", None).await;
    let client = cluster.nats_client().await;
    let js = async_nats::jetstream::new(client.clone());
    let id = "0193a5c2-1111-7000-8000-000000000001";
    let mut results = client
        .subscribe(format!("results.wordcount.{id}"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Squall-Invocation-Id", id);
    headers.insert("X-Tenant", "acme");
    js.publish_with_headers("jobs.wordcount", headers, "one two two".into())
        .await
        .unwrap()
        .await
        .expect("the JOBS stream acknowledges the job");
    let message = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result within 20 s")
        .unwrap();
    let output: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(output["words"], 3);
    assert_eq!(output["counts"]["two"], 2);
}
