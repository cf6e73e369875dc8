//! Prometheus metrics of the dispatcher and the workers.

use squall_tests::Cluster;
use std::time::{Duration, Instant};

async fn scrape(cluster: &Cluster, url: &str) -> String {
    let response = cluster.http.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_and_worker_metrics_count_invocations_by_function_and_status() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    cluster
        .deploy_example("fail", Some(serde_json::json!({"max_attempts": 1})))
        .await;
    for _ in 0..3 {
        assert_eq!(cluster.invoke("hello", "").await.status(), 200);
    }
    assert_eq!(cluster.invoke("fail", "").await.status(), 500);

    let dispatcher = scrape(&cluster, &format!("{}/metrics", cluster.url)).await;
    let accepted =
        "squall_dispatcher_invocations_accepted_total{function=\"hello\",source=\"http\"}";
    assert_eq!(sample(&dispatcher, accepted), Some(3.0), "{dispatcher}");
    let failed = "squall_dispatcher_sync_outcomes_total{function=\"fail\",status=\"failed\"}";
    assert_eq!(sample(&dispatcher, failed), Some(1.0), "{dispatcher}");
    assert_eq!(
        sample(&dispatcher, "squall_function_backlog{function=\"hello\"}"),
        Some(0.0),
        "{dispatcher}"
    );
    assert!(dispatcher.contains("# TYPE squall_function_in_flight gauge"));
    // Live worker processes, from their heartbeats in the fleet bucket.
    assert_eq!(
        sample(&dispatcher, "squall_workers"),
        Some(1.0),
        "{dispatcher}"
    );

    // The worker counts after publishing the result; give it a moment to settle.
    let url = cluster.worker_metrics[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let worker = loop {
        let text = scrape(&cluster, &url).await;
        let done = "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}";
        if sample(&text, done) == Some(3.0) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ok = "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}";
    assert_eq!(sample(&worker, ok), Some(3.0), "{worker}");
    let failed = "squall_worker_invocations_total{function=\"fail\",status=\"failed\"}";
    assert_eq!(sample(&worker, failed), Some(1.0), "{worker}");
    assert_eq!(
        sample(
            &worker,
            "squall_worker_execution_seconds_count{function=\"hello\"}"
        ),
        Some(3.0),
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            "squall_worker_queue_wait_seconds_count{function=\"hello\"}"
        ),
        Some(3.0),
        "{worker}"
    );
    assert_eq!(
        sample(&worker, "squall_worker_in_flight{function=\"hello\"}"),
        Some(0.0),
        "{worker}"
    );
    let loads = "squall_worker_artifact_loads_total{function=\"hello\",outcome=\"ok\"}";
    assert_eq!(sample(&worker, loads), Some(1.0), "{worker}");
}
