//! Every bad input to deploy and invoke gets a precise error and crashes nothing.

use squall_tests::{built, compile_c, Cluster, ClusterOptions};

async fn deploy_bytes(cluster: &Cluster, name: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let response = cluster
        .http
        .put(format!("{}/v1/functions/{name}", cluster.url))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    squall_tests::json_response(response).await
}

fn message(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_artifacts_are_refused_with_the_problem_named() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();

    let (status, body) = deploy_bytes(&cluster, "text", b"#!/bin/sh\necho hi\n".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_artifact");
    assert!(
        message(&body).contains("not an ELF shared library"),
        "{body}"
    );

    let whole = std::fs::read(built().library("hello")).unwrap();
    let (status, body) =
        deploy_bytes(&cluster, "truncated", whole[..whole.len() / 2].to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("truncated"), "{body}");

    let no_symbols = compile_c(
        dir.path(),
        "nosym",
        "int add(int a, int b) { return a + b; }\n",
    );
    let (status, body) = cluster.deploy("nosym", &no_symbols, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        message(&body),
        "artifact does not export the required symbol squall_abi_version"
    );

    let no_free = compile_c(
        dir.path(),
        "nofree",
        "#include <squall.h>\nconst uint32_t squall_abi_version = 1;\n\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) { (void)c; (void)i; (void)o; return 0; }\n",
    );
    let (status, body) = cluster.deploy("nofree", &no_free, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        message(&body),
        "artifact does not export the required symbol squall_free"
    );

    let v2 = compile_c(
        dir.path(),
        "abi2",
        "#include <squall.h>\nconst uint32_t squall_abi_version = 2;\n\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) { (void)c; (void)i; (void)o; return 0; }\n\
         void squall_free(squall_buf b) { (void)b; }\n",
    );
    let (status, body) = cluster.deploy("abi2", &v2, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("ABI version 2"), "{body}");

    let (status, body) = deploy_bytes(&cluster, "empty", Vec::new()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(message(&body), "artifact is empty");

    // None of the refused artifacts was registered, and the cluster still works.
    let (status, body) = cluster.get_json("/v1/functions").await;
    assert_eq!(status, 200);
    assert_eq!(body["functions"], serde_json::json!([]));
    cluster.deploy_example("hello", None).await;
    assert_eq!(cluster.invoke("hello", "").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_function_is_404() {
    let cluster = Cluster::start().await;
    let response = cluster.invoke("nobody", "x").await;
    assert_eq!(response.status(), 404);
    let (_, body) = squall_tests::json_response(response).await;
    assert_eq!(body["error"]["code"], "function_not_found");
    assert_eq!(message(&body), "function \"nobody\" is not deployed");
    let (status, _) = cluster.get_json("/v1/functions/nobody").await;
    assert_eq!(status, 404);
    let response = cluster
        .http
        .delete(format!("{}/v1/functions/nobody", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_function_names_are_400() {
    let cluster = Cluster::start().await;
    let hello = built().library("hello");
    for (name, expected) in [
        ("a.b", "contains '.'"),
        ("a*", "contains '*'"),
        (
            &"x".repeat(65) as &str,
            "65 characters long; the limit is 64",
        ),
    ] {
        let (status, body) = cluster.deploy(name, hello, None).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_name");
        assert!(message(&body).contains(expected), "{name}: {body}");
        let response = cluster.invoke(name, "x").await;
        assert_eq!(response.status(), 400, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_413() {
    let cluster = Cluster::start_with(ClusterOptions {
        max_payload: Some(1000),
        ..Default::default()
    })
    .await;
    cluster.deploy_example("wordcount", None).await;
    let response = cluster.invoke("wordcount", "a ".repeat(501)).await;
    assert_eq!(response.status(), 413);
    let (_, body) = squall_tests::json_response(response).await;
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(
        message(&body),
        "payload is larger than the limit of 1000 bytes"
    );
    // Exactly at the limit is fine.
    let response = cluster.invoke("wordcount", "a ".repeat(500)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_payload_limit_is_one_mebibyte() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("wordcount", None).await;
    let response = cluster
        .invoke("wordcount", vec![b'a'; 1024 * 1024 + 1])
        .await;
    assert_eq!(response.status(), 413);
    let response = cluster.invoke("wordcount", vec![b'a'; 1024 * 1024]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_422() {
    let cluster = Cluster::start().await;
    let hello = built().library("hello");
    for (spec, expected) in [
        (serde_json::json!({"timeout": 5}), "unknown field `timeout`"),
        (
            serde_json::json!({"timeout_ms": 0}),
            "timeout_ms must be between 1 and",
        ),
        (
            serde_json::json!({"max_attempts": 0}),
            "max_attempts must be between 1 and",
        ),
        (
            serde_json::json!({"concurrency": 0}),
            "concurrency must be between 1 and",
        ),
        (serde_json::json!({"config": "text"}), "invalid spec"),
    ] {
        let (status, body) = cluster.deploy("hello", hello, Some(spec.clone())).await;
        assert_eq!(status, 422, "{spec}: {body}");
        assert_eq!(body["error"]["code"], "invalid_spec");
        assert!(message(&body).contains(expected), "{spec}: {body}");
    }
    let (status, _) = cluster.get_json("/v1/functions/hello").await;
    assert_eq!(status, 404, "a refused spec registers nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_invocation_ids() {
    let cluster = Cluster::start().await;
    let (status, body) = cluster.get_json("/v1/invocations/not-a-uuid").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_invocation_id");
    let (status, body) = cluster
        .get_json("/v1/invocations/0193a5c2-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "invocation_not_found");
    let (status, _) = cluster
        .get_json("/v1/invocations/0193a5c2-0000-7000-8000-000000000000/output")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_answer_json_404() {
    let cluster = Cluster::start().await;
    let (status, body) = cluster.get_json("/v1/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "route_not_found");
}
