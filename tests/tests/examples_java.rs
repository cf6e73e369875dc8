//! The Java examples end to end, each deployed from its folder by the `squall` CLI (javac compiles it) and invoked over real HTTP: `java-hello` and `java-inference`.

use squall_tests::{check_hello_example, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_hello_greets_from_config_counts_visits_per_name_and_logs() {
    let cluster = Cluster::start().await;
    check_hello_example(
        &cluster,
        "java-hello",
        "java-hello",
        "java.lang.IllegalArgumentException: a name is at most 64 bytes of UTF-8",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_inference_scores_tickets_one_at_a_time_and_in_batches_and_refuses_bad_input() {
    let cluster = Cluster::start().await;
    cluster.deploy_folder("java-inference").await;
    squall_tests::wait_workers_ready(&cluster, "java-inference").await;

    let (status, _, text) = cluster
        .call_json(
            "java-inference",
            serde_json::json!({"text": "Production is DOWN, outage since 9am"}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"label": "urgent", "score": 0.993, "top": ["outage", "down", "production"]})
    );

    let (status, id, text) = cluster
        .call_json(
            "java-inference",
            serde_json::json!({"texts": ["a question about the docs, thanks", "security breach asap"]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let labels: Vec<&str> = answer["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["normal", "urgent"]);
    let logs = cluster.finished(&id).await.logs;
    assert!(
        logs.iter().any(|l| l.message == "triage: scored 2 texts"),
        "{logs:?}"
    );

    let (status, id, _) = cluster
        .call_json("java-inference", serde_json::json!({"texts": [1, 2]}))
        .await;
    assert_ne!(status, 200);
    let error = cluster.finished(&id).await.error.expect("an error");
    assert_eq!(
        error.message,
        "java.lang.IllegalArgumentException: every text is a string"
    );
}
