//! The Go examples end to end, each deployed from its folder by the `squall` CLI as a user deploys it: `go-hello` over real HTTP, and `go-iot-ingest` fed by its subject trigger.

use futures::StreamExt as _;
use squall_tests::{check_hello_example, eventually, go_toolchain, Cluster, AUTH_CLIENT};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_hello_greets_from_config_counts_visits_per_name_and_logs() {
    go_toolchain();
    let cluster = Cluster::start().await;
    check_hello_example(
        &cluster,
        "go-hello",
        "go-hello",
        "a name is at most 64 bytes of UTF-8",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_iot_ingest_folds_triggered_readings_into_windows_once_and_publishes_them() {
    go_toolchain();
    let cluster = Cluster::start().await;
    cluster.deploy_folder("go-iot-ingest").await;
    squall_tests::wait_workers_ready(&cluster, "go-iot-ingest").await;
    let watcher = cluster.nats_client().await;
    let mut windows = watcher.subscribe("events.iot.window").await.unwrap();
    // The subscription is the server's before the function publishes.
    watcher.flush().await.unwrap();
    // Devices publish as a plain NATS application (the `client` role).
    let client = async_nats::ConnectOptions::with_user_and_password(
        AUTH_CLIENT.user.into(),
        AUTH_CLIENT.password.into(),
    )
    .custom_inbox_prefix(AUTH_CLIENT.inbox)
    .connect(&cluster.nats.url)
    .await
    .expect("a device logs in");
    let base: u64 = 1_767_225_600_000;
    // Reading 2 arrives twice (a redelivery): it is applied once.
    for (seq, value) in [(1, 20.0), (2, 10.0), (2, 10.0), (3, 30.0)] {
        let reading = serde_json::json!({"seq": seq, "value": value, "ts_ms": base + seq * 1000});
        client
            .publish("devices.d7.telemetry", reading.to_string().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let window = eventually(
        Duration::from_secs(30),
        "d7's window to hold three readings",
        async || {
            let (status, _, text) = cluster
                .call_json("go-iot-ingest", serde_json::json!({"device": "d7"}))
                .await;
            let answer: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match (status, answer["windows"][0]["count"].as_u64()) {
                (200, Some(3)) => Ok(answer["windows"][0].clone()),
                other => Err(format!("{other:?} {text}")),
            }
        },
    )
    .await;
    assert_eq!(window["device"], "d7");
    assert_eq!(window["minute_ms"], base);
    let number = |field: &str| window[field].as_f64();
    assert_eq!(
        (number("min"), number("max"), number("mean")),
        (Some(10.0), Some(30.0), Some(20.0))
    );
    assert_eq!(window["seqs"], serde_json::json!([1, 2, 3]));
    let published = tokio::time::timeout(Duration::from_secs(10), windows.next())
        .await
        .expect("a window is published")
        .unwrap();
    let first: serde_json::Value = serde_json::from_slice(&published.payload).unwrap();
    assert_eq!(first["device"], "d7");

    // A subject that names no device is the function's error, not a lost reading.
    let (status, id, _) = cluster
        .call_json(
            "go-iot-ingest",
            serde_json::json!({"seq": 1, "value": 1.0, "ts_ms": base}),
        )
        .await;
    assert_ne!(status, 200);
    let failed = cluster.finished(&id).await;
    assert_eq!(
        failed.error.expect("an error").message,
        r#"not a device telemetry subject: "jobs.go-iot-ingest""#
    );
}
