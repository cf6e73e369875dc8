//! Checks every language runtime must pass, written once and run against each runtime's tests.

use crate::{wait_workers_ready, Cluster};

/// Deploys `bundle` as `name`, a public web function whose handler answers 201 with an
/// `x-path` header of the request's path, the cookie `seen=1; Path=/` and a JSON body of the
/// request's `method`, `query`, `body` and `user-agent` header as `agent`; then checks that a
/// POST reaches the handler as the request event and its answer comes back as the response,
/// with the cookie's path kept to the function's own by the dispatcher.
pub async fn check_web_function(cluster: &Cluster, name: &str, bundle: Vec<u8>) {
    let (status, body) = cluster
        .deploy_bytes(
            name,
            bundle,
            Some(serde_json::json!({"web": {"auth": "none"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    check_web_answers(cluster, name).await;
}

/// The checks of [`check_web_function`] on a web function `name` deployed already (public,
/// with the handler it describes).
pub async fn check_web_answers(cluster: &Cluster, name: &str) {
    wait_workers_ready(cluster, name).await;
    let response = reqwest::Client::new()
        .post(format!("{}/function/{name}/orders/7?x=1", cluster.web_url))
        .header("user-agent", "probe")
        .body("hello")
        .send()
        .await
        .expect("POST to the web function");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-path"], "/orders/7");
    // The dispatcher keeps a function's cookies to its own path.
    assert_eq!(
        response.headers()["set-cookie"],
        format!("seen=1; Path=/function/{name}").as_str()
    );
    let answer: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(answer["method"], "POST");
    assert_eq!(answer["body"], "hello");
    assert_eq!(answer["agent"], "probe");
    assert_eq!(answer["query"]["x"], serde_json::json!("1"), "{answer}");
}
