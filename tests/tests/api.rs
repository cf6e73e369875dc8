//! The HTTP API in process (the dispatcher's router over a real nats-server, no port): every
//! validation error, status code and key scope, decoded as the shared `squall-api` types.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use squall_api::functions::{Function, FunctionList};
use squall_api::invocations::Accepted;
use squall_api::operations::{CreatedKey, KeyList, Schedule, Trigger};
use squall_api::InvocationStatus;
use squall_tests::in_process::App;
use squall_tests::{built, compile_c, eventually, workspace_root};

const ADMIN: &str = "in-process-admin-key-0123456789";

fn hello() -> Vec<u8> {
    std::fs::read(built().library("hello")).unwrap()
}

async fn bare_deploy(app: &App, name: &str, bytes: Vec<u8>) -> squall_tests::in_process::Answer {
    app.send(
        Method::PUT,
        &format!("/v1/functions/{name}"),
        &[("content-type", "application/octet-stream")],
        bytes,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_artifacts_are_refused_with_the_problem_named_and_register_nothing() {
    let app = App::start().await;
    let dir = tempfile::tempdir().unwrap();
    let answer = bare_deploy(&app, "text", b"#!/bin/sh\necho hi\n".to_vec()).await;
    assert_eq!(answer.status, 400);
    let error = answer.error();
    assert_eq!(error.code, "invalid_artifact");
    assert!(
        error.message.contains("not an ELF shared library"),
        "{error:?}"
    );

    let whole = hello();
    let answer = bare_deploy(&app, "truncated", whole[..whole.len() / 2].to_vec()).await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().message.contains("truncated"));

    let cases = [
        (
            "nosym",
            "int add(int a, int b) { return a + b; }\n",
            "artifact does not export the required symbol squall_abi_version",
        ),
        (
            "nofree",
            "#include <squall.h>\nconst uint32_t squall_abi_version = 1;\n\
             int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) { (void)c; (void)i; (void)o; return 0; }\n",
            "artifact does not export the required symbol squall_free",
        ),
        (
            "abi2",
            "#include <squall.h>\nconst uint32_t squall_abi_version = 2;\n\
             int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) { (void)c; (void)i; (void)o; return 0; }\n\
             void squall_free(squall_buf b) { (void)b; }\n",
            "ABI version 2",
        ),
    ];
    for (name, source, expected) in cases {
        let library = std::fs::read(compile_c(dir.path(), name, source)).unwrap();
        let answer = app.deploy(name, &library, None).await;
        assert_eq!(answer.status, 400, "{name}");
        assert!(
            answer.error().message.contains(expected),
            "{name}: {:?}",
            answer.error()
        );
    }
    let answer = bare_deploy(&app, "empty", Vec::new()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error().message, "artifact is empty");

    let listed: FunctionList = app.get("/v1/functions").await.decode();
    assert!(listed.functions.is_empty(), "{listed:?}");
    let answer = app.deploy("hello", &hello(), None).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let deployed: Function = answer.decode();
    assert_eq!(deployed.config, squall_api::FunctionSpec::default());
    assert!(deployed.version.starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_422_and_register_nothing() {
    let app = App::start().await;
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
        let answer = app.deploy("hello", &hello(), Some(&spec)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{spec}");
        let error = answer.error();
        assert_eq!(error.code, "invalid_spec");
        assert!(error.message.contains(expected), "{spec}: {error:?}");
    }
    assert_eq!(app.get("/v1/functions/hello").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_ids_and_routes_are_checked_before_anything_runs() {
    let app = App::start().await;
    for (name, expected) in [
        ("a.b", "contains '.'"),
        ("a*", "contains '*'"),
        (
            &"x".repeat(65) as &str,
            "65 characters long; the limit is 64",
        ),
    ] {
        let encoded = name.replace('*', "%2A");
        let answer = app.deploy(&encoded, &hello(), None).await;
        assert_eq!(answer.status, 400, "{name}");
        let error = answer.error();
        assert_eq!(error.code, "invalid_name");
        assert!(error.message.contains(expected), "{name}: {error:?}");
        for (method, path) in [
            (Method::POST, format!("/v1/functions/{encoded}/invocations")),
            (Method::POST, format!("/v1/functions/{encoded}/batch")),
            (Method::GET, format!("/v1/functions/{encoded}")),
            (Method::GET, format!("/v1/functions/{encoded}/stats")),
            (Method::GET, format!("/v1/functions/{encoded}/secrets")),
            (Method::PUT, format!("/v1/schedules/{encoded}")),
            (Method::DELETE, format!("/v1/triggers/{encoded}")),
            (Method::DELETE, format!("/v1/keys/{encoded}")),
        ] {
            let answer = app.send(method.clone(), &path, &[], "{}").await;
            assert_eq!(answer.status, 400, "{method} {path}");
            assert_eq!(answer.error().code, "invalid_name", "{method} {path}");
        }
    }
    let answer = app.get("/v1/schedules/a.b").await;
    assert!(
        answer.error().message.contains("schedule name"),
        "{:?}",
        answer.error()
    );

    for path in [
        "/v1/invocations/not-a-uuid",
        "/v1/invocations/not-a-uuid/output",
        "/v1/dlq/not-a-uuid",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.error().code, "invalid_invocation_id", "{path}");
    }
    let unknown = "0193a5c2-0000-7000-8000-000000000000";
    let answer = app.get(&format!("/v1/invocations/{unknown}")).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error().code, "invocation_not_found");
    assert_eq!(
        app.get(&format!("/v1/invocations/{unknown}/output"))
            .await
            .status,
        404
    );
    let answer = app.get(&format!("/v1/dlq/{unknown}")).await;
    assert_eq!(answer.error().code, "dead_letter_not_found");

    let answer = app.get("/v1/nothing").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error().code, "route_not_found");
    let answer = app
        .send(Method::POST, "/v1/functions/nobody/invocations", &[], "x")
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error().code, "function_not_found");
    assert_eq!(
        answer.error().message,
        "function \"nobody\" is not deployed"
    );
    assert_eq!(app.get("/v1/functions/nobody").await.status, 404);
    let answer = app
        .send(Method::DELETE, "/v1/functions/nobody", &[], Body::empty())
        .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_limit_is_413_and_one_at_it_is_accepted() {
    let app = App::start_with(|config| config.max_payload = 1000).await;
    assert_eq!(app.deploy("wordcount", &hello(), None).await.status, 201);
    let path = "/v1/functions/wordcount/invocations?async=true";
    let answer = app.send(Method::POST, path, &[], "a ".repeat(501)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let error = answer.error();
    assert_eq!(error.code, "payload_too_large");
    assert_eq!(
        error.message,
        "payload is larger than the limit of 1000 bytes"
    );
    let answer = app.send(Method::POST, path, &[], "a ".repeat(500)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let accepted: Accepted = answer.decode();
    assert_eq!(accepted.status, InvocationStatus::Queued);
    assert_eq!(
        answer.headers["location"],
        format!("/v1/invocations/{}", accepted.invocation_id).as_str()
    );
    let queued: squall_api::invocations::Invocation = app.get(&accepted.location).await.decode();
    assert_eq!(queued.status, InvocationStatus::Queued);
    assert_eq!(queued.worker, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_payload_limit_is_a_hundred_mebibytes_and_above_one_it_is_stored_apart() {
    let app = App::start().await;
    assert_eq!(app.deploy("f", &hello(), None).await.status, 201);
    let path = "/v1/functions/f/invocations?async=true";
    let over = app
        .send(Method::POST, path, &[], vec![b'a'; 100 * 1024 * 1024 + 1])
        .await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Inline up to 1 MiB; above it, stored in the function's payload bucket.
    let at = app
        .send(Method::POST, path, &[], vec![b'a'; 1024 * 1024])
        .await;
    assert_eq!(at.status, StatusCode::ACCEPTED);
    let stored = app
        .send(Method::POST, path, &[], vec![b'a'; 1024 * 1024 + 1])
        .await;
    assert_eq!(stored.status, StatusCode::ACCEPTED);
    let store = async_nats::jetstream::new(app.state.broker.client.clone())
        .get_object_store("squall_payloads_f")
        .await
        .expect("f's payload bucket");
    let info = store.info(&first_object(&store).await).await.unwrap();
    assert_eq!(info.size, 1024 * 1024 + 1);
}

async fn first_object(store: &async_nats::jetstream::object_store::ObjectStore) -> String {
    use futures::StreamExt;
    let mut list = store.list().await.unwrap();
    list.next().await.expect("one object").unwrap().name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_refused_with_precise_errors() {
    let app = App::start().await;
    assert_eq!(app.deploy("hello", &hello(), None).await.status, 201);
    for (path, code) in [
        ("/v1/invocations?status=done", "invalid_status"),
        ("/v1/invocations?limit=0", "invalid_limit"),
        ("/v1/invocations?limit=1001", "invalid_limit"),
        ("/v1/invocations?cursor=zz", "invalid_cursor"),
        ("/v1/invocations?since=yesterday", "invalid_time"),
        ("/v1/invocations?since=2000&until=1000", "invalid_time"),
        ("/v1/invocations?function=no%20such", "invalid_name"),
        ("/v1/invocations?colour=red", "invalid_query"),
        ("/v1/usage?group_by=week", "invalid_group_by"),
        ("/v1/usage?by=hour", "invalid_query"),
        ("/v1/functions/hello/stats?window=-1", "invalid_window"),
        (
            "/v1/functions/hello/stats?window=60&since=0",
            "invalid_query",
        ),
        ("/v1/dlq?fn=hello", "invalid_query"),
        ("/v1/dlq?function=a.b", "invalid_name"),
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.json());
        assert_eq!(answer.error().code, code, "{path}");
    }
    let answer = app.get("/v1/invocations?colour=red").await;
    assert!(
        answer.error().message.contains("colour"),
        "{:?}",
        answer.error()
    );
    for (path, code) in [
        ("/v1/functions/hello/invocations?wait=soon", "invalid_query"),
        (
            "/v1/functions/hello/invocations?async=maybe",
            "invalid_query",
        ),
        (
            "/v1/functions/hello/invocations?colour=red",
            "invalid_query",
        ),
        ("/v1/dlq/replay", "missing_function"),
    ] {
        let answer = app.send(Method::POST, path, &[], "x").await;
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.json());
        assert_eq!(answer.error().code, code, "{path}");
    }
    let answer = app.get("/v1/functions/nosuch/stats").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error().code, "function_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_with_the_body_named() {
    let app = App::start().await;
    assert_eq!(app.deploy("hello", &hello(), None).await.status, 201);
    for (path, body, code) in [
        ("/v1/schedules/s", "not json", "invalid_schedule"),
        (
            "/v1/schedules/s",
            r#"{"function": "hello"}"#,
            "invalid_schedule",
        ),
        (
            "/v1/schedules/s",
            r#"{"function": "hello", "cron": "x", "colour": 1}"#,
            "invalid_schedule",
        ),
        (
            "/v1/schedules/s",
            r#"{"function": "hello", "cron": "nope"}"#,
            "invalid_cron",
        ),
        (
            "/v1/schedules/s",
            r#"{"function": "hello", "cron": "@hourly", "timezone": "Mars/Base"}"#,
            "invalid_timezone",
        ),
        ("/v1/triggers/t", "[]", "invalid_trigger"),
        (
            "/v1/triggers/t",
            r#"{"function": "hello", "subject": "a", "bucket": "b"}"#,
            "invalid_trigger",
        ),
        (
            "/v1/triggers/t",
            r#"{"function": "hello", "subject": "a b"}"#,
            "invalid_subject",
        ),
        ("/v1/functions/hello/secrets", r#"["x"]"#, "invalid_secrets"),
        (
            "/v1/functions/hello/secrets",
            r#"{"A": 1}"#,
            "invalid_secrets",
        ),
        (
            "/v1/functions/hello/secrets",
            r#"{"a b": "x"}"#,
            "invalid_secrets",
        ),
    ] {
        let answer = app
            .send(
                Method::PUT,
                path,
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(answer.status, 400, "{path} {body}: {:?}", answer.json());
        assert_eq!(answer.error().code, code, "{path} {body}");
    }
    for body in [
        "{}",
        r#"{"name": "k", "scopes": []}"#,
        r#"{"name": "k", "scopes": ["root"]}"#,
    ] {
        let answer = app.send(Method::POST, "/v1/keys", &[], body).await;
        assert_eq!(answer.status, 400, "{body}");
        assert!(
            ["invalid_key", "invalid_scope"].contains(&answer.error().code.as_str()),
            "{body}: {:?}",
            answer.error()
        );
    }
    let oversized = format!(r#"{{"A": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let answer = app
        .send(Method::PUT, "/v1/functions/hello/secrets", &[], oversized)
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // The function schedules and triggers name must be deployed.
    let answer = app
        .put_json(
            "/v1/schedules/s",
            &serde_json::json!({"function": "ghost", "cron": "@hourly"}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.error().code.as_str()),
        (StatusCode::NOT_FOUND, "function_not_found")
    );
    // Good bodies decode as their types.
    let schedule: Schedule = app
        .put_json(
            "/v1/schedules/s",
            &serde_json::json!({"function": "hello", "cron": "@hourly"}),
        )
        .await
        .decode();
    assert_eq!((schedule.name.as_str(), schedule.next.len()), ("s", 5));
    let trigger: Trigger = app
        .put_json(
            "/v1/triggers/t",
            &serde_json::json!({"function": "hello", "subject": "orders.>"}),
        )
        .await
        .decode();
    assert_eq!(trigger.subject.as_deref(), Some("orders.>"));
}

/// Every route and the access it needs, as the issue of keys and scopes names them.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "open"),
    ("GET", "/readyz", "open"),
    ("GET", "/v1/openapi.json", "open"),
    ("GET", "/ui", "open"),
    ("GET", "/ui/app.js", "open"),
    // Any valid key, whatever its scopes.
    ("GET", "/v1/whoami", "any"),
    ("GET", "/v1/functions", "read"),
    ("GET", "/v1/functions/f", "read"),
    ("GET", "/v1/functions/f/stats", "read"),
    ("GET", "/v1/functions/f/versions", "read"),
    ("GET", "/v1/functions/f/aliases", "read"),
    ("GET", "/v1/functions/f/aliases/live", "read"),
    ("GET", "/v1/fleet", "read"),
    ("GET", "/v1/usage", "read"),
    ("GET", "/metrics", "read"),
    ("POST", "/v1/functions/f/invocations", "invoke"),
    ("POST", "/v1/functions/f/batch", "invoke"),
    ("DELETE", "/v1/functions/f/invocations", "admin"),
    // Web functions, on the web listener: a key with the invoke scope unless the function's
    // spec says `"auth": "none"` (none is deployed here, so every caller without a key is
    // refused).
    ("GET", "/function/f", "invoke"),
    ("POST", "/function/f", "invoke"),
    ("GET", "/function/f/a", "invoke"),
    ("POST", "/function/f/a", "invoke"),
    ("GET", "/v1/invocations", "invoke"),
    (
        "GET",
        "/v1/invocations/0193a5c2-0000-7000-8000-000000000000",
        "invoke",
    ),
    (
        "DELETE",
        "/v1/invocations/0193a5c2-0000-7000-8000-000000000000",
        "invoke",
    ),
    (
        "GET",
        "/v1/invocations/0193a5c2-0000-7000-8000-000000000000/output",
        "invoke",
    ),
    (
        "GET",
        "/v1/invocations/0193a5c2-0000-7000-8000-000000000000/logs",
        "invoke",
    ),
    ("PUT", "/v1/functions/f", "admin"),
    ("DELETE", "/v1/functions/f", "admin"),
    ("DELETE", "/v1/functions/f/versions/1", "admin"),
    ("PUT", "/v1/functions/f/aliases/live", "admin"),
    ("DELETE", "/v1/functions/f/aliases/live", "admin"),
    ("POST", "/v1/functions/f/aliases/live/rollback", "admin"),
    ("PUT", "/v1/functions/f/secrets", "admin"),
    ("GET", "/v1/functions/f/secrets", "admin"),
    ("DELETE", "/v1/functions/f/secrets", "admin"),
    ("GET", "/v1/dlq", "admin"),
    ("POST", "/v1/dlq/replay", "admin"),
    ("GET", "/v1/dlq/destinations", "admin"),
    (
        "POST",
        "/v1/dlq/destinations/0193a5c2-0000-7000-8000-000000000000/replay",
        "admin",
    ),
    (
        "GET",
        "/v1/dlq/0193a5c2-0000-7000-8000-000000000000",
        "admin",
    ),
    (
        "DELETE",
        "/v1/dlq/0193a5c2-0000-7000-8000-000000000000",
        "admin",
    ),
    (
        "POST",
        "/v1/dlq/0193a5c2-0000-7000-8000-000000000000/replay",
        "admin",
    ),
    ("GET", "/v1/schedules", "admin"),
    ("PUT", "/v1/schedules/s", "admin"),
    ("GET", "/v1/schedules/s", "admin"),
    ("DELETE", "/v1/schedules/s", "admin"),
    ("GET", "/v1/triggers", "admin"),
    ("PUT", "/v1/triggers/t", "admin"),
    ("GET", "/v1/triggers/t", "admin"),
    ("DELETE", "/v1/triggers/t", "admin"),
    ("POST", "/v1/keys", "admin"),
    ("GET", "/v1/keys", "admin"),
    ("DELETE", "/v1/keys/k", "admin"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_scope_and_the_document_says_which() {
    let app = App::start_with(|config| {
        config.admin_key = Some(ADMIN.into());
        config.metrics_open = false;
    })
    .await;
    let admin = format!("Bearer {ADMIN}");
    let mut keys = Vec::new();
    for scope in ["read", "invoke"] {
        let body = serde_json::json!({"name": scope, "scopes": [scope]}).to_string();
        let answer = app
            .send(Method::POST, "/v1/keys", &[("authorization", &admin)], body)
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
        let created: CreatedKey = answer.decode();
        assert!(created.key.starts_with("sq_"));
        keys.push((scope, format!("Bearer {}", created.key)));
    }
    // The bucket's watch delivers the new keys to this dispatcher's cache.
    eventually(
        std::time::Duration::from_secs(5),
        "the keys to reach the dispatcher",
        async || {
            let answer = app
                .send(
                    Method::GET,
                    "/v1/functions",
                    &[("authorization", &keys[0].1)],
                    Body::empty(),
                )
                .await;
            (answer.status != 401).then_some(()).ok_or(answer.status)
        },
    )
    .await;
    let document: serde_json::Value = app.get("/v1/openapi.json").await.decode();
    let refused = |status: StatusCode| status == 401 || status == 403;
    for &(method, path, needs) in ROUTES {
        let method: Method = method.parse().unwrap();
        let anonymous = send_to(&app, method.clone(), path, &[]).await;
        assert_eq!(
            refused(anonymous.status),
            needs != "open",
            "{method} {path} without a key"
        );
        if needs != "open" {
            assert_eq!(anonymous.status, 401, "{method} {path}");
            assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
        }
        for (scope, key) in &keys {
            let answer = send_to(&app, method.clone(), path, &[("authorization", key)]).await;
            let allowed = needs == "open" || needs == "any" || needs == *scope;
            assert_eq!(
                !refused(answer.status),
                allowed,
                "{method} {path} with {scope}"
            );
            if !allowed {
                assert_eq!(answer.status, 403);
                assert_eq!(answer.error().extra_str("scope"), Some(needs));
            }
        }
        let with_admin = send_to(&app, method.clone(), path, &[("authorization", &admin)]).await;
        assert!(!refused(with_admin.status), "{method} {path} with admin");
        // The document's template path of this route lists the same scope.
        let template = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(template, item)| {
                item.get(method.as_str().to_lowercase()).is_some()
                    && template_matches(template, path)
            })
            .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
        let security = &template.1[method.as_str().to_lowercase()]["security"];
        let listed = if needs == "open" {
            serde_json::json!([{}])
        } else if needs == "any" {
            serde_json::json!([{ "bearer": [] }])
        } else if path.starts_with("/function/") {
            // A key, or none for a function deployed with `"auth": "none"`.
            serde_json::json!([{ "bearer": [needs] }, {}])
        } else {
            serde_json::json!([{ "bearer": [needs] }])
        };
        assert_eq!(security, &listed, "{method} {path}");
    }
    // Unknown routes tell a caller without a key nothing.
    assert_eq!(app.get("/v1/nowhere").await.status, 401);
    let answer = app
        .send(
            Method::GET,
            "/v1/nowhere",
            &[("authorization", &admin)],
            Body::empty(),
        )
        .await;
    assert_eq!(answer.status, 404);
    let listed: KeyList = app
        .send(
            Method::GET,
            "/v1/keys",
            &[("authorization", &admin)],
            Body::empty(),
        )
        .await
        .decode();
    assert_eq!(listed.keys.len(), 2);
    assert!(!listed.keys.iter().any(|k| k.name.contains("sq_")));
}

/// A route's answer from the listener that serves it: web functions on the web listener, the
/// rest on the API's.
async fn send_to(
    app: &App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> squall_tests::in_process::Answer {
    match path.starts_with("/function/") {
        true => app.send_web(method, path, headers, Body::empty()).await,
        false => app.send(method, path, headers, Body::empty()).await,
    }
}

fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_route_is_in_the_scope_table() {
    let document = serde_json::to_value(squall_dispatcher::routes::document(false)).unwrap();
    let mut declared = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            declared.push((method.to_uppercase(), template.clone()));
        }
    }
    for (method, template) in &declared {
        assert!(
            ROUTES
                .iter()
                .any(|(m, p, _)| m == method && template_matches(template, p)),
            "{method} {template} has no row in ROUTES"
        );
    }
    assert_eq!(declared.len(), ROUTES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1() {
    let validator = std::env::var_os("OPENAPI_SPEC_VALIDATOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/openapi-venv/bin/openapi-spec-validator"));
    assert!(
        validator.exists(),
        "openapi-spec-validator is missing: run scripts/install-openapi-validator (scripts/test does), or set OPENAPI_SPEC_VALIDATOR"
    );
    let dir = tempfile::tempdir().unwrap();
    for metrics_open in [true, false] {
        let document = squall_dispatcher::routes::document(metrics_open);
        let file = dir.path().join(format!("openapi-{metrics_open}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
        let output = std::process::Command::new(&validator)
            .arg(&file)
            .output()
            .expect("run openapi-spec-validator");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "the document is not valid:\n{text}"
        );
        let value = serde_json::to_value(&document).unwrap();
        assert_eq!(value["openapi"], "3.1.0");
    }
}
