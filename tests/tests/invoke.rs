//! Deploying example functions and invoking them through the HTTP API.

use squall_api::invocations::{Accepted, Invocation, InvocationLogs, LogLevel, LogLine};
use squall_api::InvocationStatus;
use squall_tests::Cluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_sync_returns_hello_greeting() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    let response = cluster.invoke("hello", r#"{"name": "Ada"}"#).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"greeting": "Hello, Ada!"}));
    let (status, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(view.attempts, 1);
    assert_eq!(view.function, "hello");
    assert!(view.version.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(view.logs[0].message, "hello: greeting Ada");
    assert!(view.cpu_ms.unwrap() >= 0.0);
    assert!(view.duration_ms.unwrap() > 0.0);
    assert_eq!(uuid_version(&id), 7);

    let (status, logs) = cluster
        .get_as::<InvocationLogs>(&format!("/v1/invocations/{id}/logs"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        logs.logs,
        vec![LogLine {
            level: LogLevel::Info,
            message: "hello: greeting Ada".to_string()
        }]
    );
    // The worker's own log carries the line with the invocation id.
    let worker_log = cluster.workers[0].output();
    assert!(
        worker_log.lines().any(|l| l.contains("function log")
            && l.contains(&id)
            && l.contains("hello: greeting Ada")),
        "{worker_log}"
    );
}

fn uuid_version(id: &str) -> u32 {
    // The 13th hex digit of a UUID is its version.
    id.replace('-', "")
        .chars()
        .nth(12)
        .and_then(|c| c.to_digit(16))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_sync_counts_words() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("wordcount", None).await;
    let response = cluster.invoke("wordcount", "the cat and the hat").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["words"], 5);
    assert_eq!(body["counts"]["the"], 2);
    assert_eq!(body["counts"]["hat"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_sync_runs_a_function_written_in_c() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("c-hello", None).await;
    let response = cluster.invoke("c-hello", "Grace").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello from C, Grace!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_config_reaches_the_function() {
    let cluster = Cluster::start().await;
    let spec = serde_json::json!({"config": {"greeting": "Howdy"}});
    cluster.deploy_example("hello", Some(spec)).await;
    let response = cluster.invoke("hello", "").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["greeting"], "Howdy, world!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_async_returns_202_and_can_be_polled() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    let response = cluster
        .http
        .post(format!("{}/v1/functions/hello/invocations", cluster.url))
        .header("Prefer", "respond-async")
        .body(r#"{"name": "Lin"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let (_, body) = squall_tests::decode_response::<Accepted>(response).await;
    let id = body.invocation_id;
    assert_eq!(location, format!("/v1/invocations/{id}"));
    let view = cluster.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(
        view.output.as_deref(),
        Some(r#"{"greeting":"Hello, Lin!"}"#)
    );
    let output = cluster
        .http
        .get(format!("{}/v1/invocations/{id}/output", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(output.status(), 200);
    assert_eq!(
        output.text().await.unwrap(),
        r#"{"greeting":"Hello, Lin!"}"#
    );

    // The query-string form is accepted too.
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/hello/invocations?async=true",
            cluster.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}
