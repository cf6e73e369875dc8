//! Function errors, panics and load failures become failed results, never worker crashes.

use squall_api::invocations::Invocation;
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_api::ErrorBody;
use squall_tests::{compile_c, decode_response, eventually, Cluster};
use std::time::Duration;

/// The attempts an error body reports.
fn attempts(body: &ErrorBody) -> Option<u64> {
    body.error
        .extra
        .get("attempts")
        .and_then(serde_json::Value::as_u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_and_panic_give_failed_results_while_the_worker_keeps_serving_hello() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    cluster
        .deploy_example("fail", Some(serde_json::json!({"max_attempts": 1})))
        .await;
    cluster
        .deploy_example("panic", Some(serde_json::json!({"max_attempts": 1})))
        .await;

    let response = cluster.invoke("fail", "").await;
    assert_eq!(response.status(), 500);
    let (_, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(body.error.code, "function_failed");
    assert_eq!(body.error.extra_str("kind"), Some("error"));
    assert_eq!(body.error.extra_str("status"), Some("failed"));
    assert_eq!(body.error.message, "fail: this function always fails");
    let id = body.error.extra_str("invocation_id").unwrap().to_string();
    let (_, view) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(view.status, InvocationStatus::Failed);
    assert_eq!(view.error.as_ref().map(|e| e.kind), Some(ErrorKind::Error));
    let (status, out) = cluster
        .get_as::<ErrorBody>(&format!("/v1/invocations/{id}/output"))
        .await;
    assert_eq!(status, 409, "{out:?}");
    assert_eq!(out.error.code, "no_output");

    let response = cluster.invoke("panic", "").await;
    assert_eq!(response.status(), 500);
    let (_, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(body.error.extra_str("kind"), Some("panic"));
    assert_eq!(body.error.extra_str("status"), Some("dead_lettered"));
    assert_eq!(body.error.message, "panic: deliberate panic for testing");

    // The same, single worker process is alive and serving.
    let response = cluster.invoke("hello", r#"{"name": "again"}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"greeting":"Hello, again!"}"#
    );
    assert_eq!(cluster.workers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_up_to_max_attempts() {
    let cluster = Cluster::start().await;
    let spec = serde_json::json!({"max_attempts": 3, "backoff": {"initial_ms": 20, "max_ms": 100}});
    cluster.deploy_example("panic", Some(spec.clone())).await;
    cluster.deploy_example("fail", Some(spec)).await;

    let response = cluster.invoke("panic", "").await;
    let (status, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(status, 500, "{body:?}");
    assert_eq!(body.error.extra_str("status"), Some("dead_lettered"));
    assert_eq!(attempts(&body), Some(3));

    // A function-requested retry also follows the policy; a permanent error does not retry.
    let response = cluster.invoke("fail", r#"{"retry": true}"#).await;
    let (_, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(body.error.extra_str("kind"), Some("retry"));
    assert_eq!(attempts(&body), Some(3));
    let response = cluster.invoke("fail", "").await;
    let (_, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(body.error.extra_str("kind"), Some("error"));
    assert_eq!(attempts(&body), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_that_fails_to_load_gives_load_errors_and_others_keep_working() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Valid as a file, so the dispatcher accepts it; its init refuses to start in the worker.
    let bad_init = compile_c(
        dir.path(),
        "badinit",
        "#include <squall.h>\nconst uint32_t squall_abi_version = 1;\n\
         int32_t squall_init(const squall_host *h) { (void)h; return 7; }\n\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) { (void)c; (void)i; (void)o; return 0; }\n\
         void squall_free(squall_buf b) { (void)b; }\n",
    );
    let (status, body) = cluster
        .deploy(
            "badinit",
            &bad_init,
            Some(serde_json::json!({"max_attempts": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    cluster.deploy_example("hello", None).await;

    let response = cluster.invoke("badinit", "").await;
    let (status, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(status, 500, "{body:?}");
    assert_eq!(body.error.extra_str("kind"), Some("load"));
    assert!(
        body.error
            .message
            .contains("squall_init failed with status 7"),
        "{body:?}"
    );
    let response = cluster.invoke("hello", "").await;
    assert_eq!(response.status(), 200);

    // Redeploying a good library under the same name replaces the broken version.
    cluster
        .deploy("badinit", squall_tests::built().library("c-hello"), None)
        .await;
    let text = eventually(
        Duration::from_secs(10),
        "the redeploy to take effect",
        async || {
            let response = cluster.invoke("badinit", "fixed").await;
            match response.status().as_u16() {
                200 => Ok(response.text().await.unwrap()),
                status => Err(status),
            }
        },
    )
    .await;
    assert_eq!(text, "Hello from C, fixed!");
}
