//! Every binary takes a comma-separated list of NATS servers and refuses a bad entry by name.

use squall_tests::{built, free_port, Cluster, ClusterOptions};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_list_with_a_dead_node_still_serves_invocations() {
    // The first node of the list has no server: clients move on to the next one.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let options = ClusterOptions {
        extra_servers: vec![dead],
        ..Default::default()
    };
    let cluster = Cluster::start_with(options).await;
    cluster.deploy_example("hello", None).await;
    let response = cluster.invoke("hello", r#"{"name": "list"}"#).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"greeting": "Hello, list!"}));
}

#[test]
fn an_invalid_server_list_entry_is_an_exit_64_naming_it() {
    let built = built();
    for (binary, args) in [
        (&built.dispatcher, vec![]),
        (&built.worker, vec![]),
        (&built.worker, vec!["fleet"]),
    ] {
        let output = Command::new(binary)
            .args(&args)
            .args(["--nats-url", "nats://127.0.0.1:4222,nats://[::1:bad"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{binary:?} {args:?}: {stderr}"
        );
        assert!(stderr.contains("\"nats://[::1:bad\""), "{stderr}");
        let output = Command::new(binary)
            .args(&args)
            .args(["--nats-url", "nats://127.0.0.1:4222,,nats://127.0.0.1:4223"])
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(64));
        assert!(String::from_utf8_lossy(&output.stderr).contains("empty entry"));
    }
}
