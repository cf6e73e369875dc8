//! Scenarios an example keeps in every language it is written in, checked once for each port.

use crate::{wait_workers_ready, Cluster};
use squall_api::status::InvocationStatus;

/// Deploys the hello example `folder` (named `function` in its squall.toml) with the CLI and
/// checks it greets by name from its config, counts visits per name in state, logs each
/// greeting with its invocation, and fails a name too long for a state key with `too_long`, the
/// error message its language names.
pub async fn check_hello_example(cluster: &Cluster, folder: &str, function: &str, too_long: &str) {
    cluster.deploy_folder(folder).await;
    wait_workers_ready(cluster, function).await;

    let mut visits = Vec::new();
    for name in ["Ada", "Ada", "Bob", "Ada"] {
        let (status, _, body) = cluster
            .call_json(function, serde_json::json!({"name": name}))
            .await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(answer["greeting"], format!("Hello, {name}!"), "{answer}");
        visits.push(answer["visits"].as_u64().expect("a visit count"));
    }
    assert_eq!(visits, [1, 2, 1, 3], "a counter per name");
    let count = cluster.state_entry(function, "visits/Ada").await;
    assert_eq!(&count.payload[..], b"3");

    // Without a name the world is greeted; the greeting is logged with the invocation.
    let (status, id, body) = cluster.call_json(function, serde_json::json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("a JSON answer"),
        serde_json::json!({"greeting": "Hello, world!", "visits": 1})
    );
    let done = cluster.finished(&id).await;
    let logs: Vec<&str> = done.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        logs.contains(&"hello: greeting world (visit 1)"),
        "{logs:?}"
    );

    // A name too long for a state key is the function's error, named by its language's type.
    let (status, id, body) = cluster
        .call_json(function, serde_json::json!({"name": "x".repeat(65)}))
        .await;
    assert_ne!(status, 200, "{body}");
    let failed = cluster.finished(&id).await;
    assert_eq!(failed.status, InvocationStatus::Failed);
    assert_eq!(failed.error.expect("an error").message, too_long);
}
