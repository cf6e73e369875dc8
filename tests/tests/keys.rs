//! What a key may do beyond its scopes, in process over a real nats-server: the functions it is
//! limited to, on every route that names, lists or reads one; its request rate; cancelling a
//! backlog needs admin; `/metrics` needs a read key by default.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use squall_api::functions::FunctionList;
use squall_api::operations::{CreatedKey, KeyList, WhoAmI};
use squall_tests::in_process::{Answer, App};
use squall_tests::{built, eventually};
use std::time::Duration;

const ADMIN: &str = "keys-test-admin-key-0123456789";

/// A dispatcher with an admin key whose synchronous calls give up quickly (no worker runs).
async fn start() -> App {
    App::start_with(|config| {
        config.admin_key = Some(ADMIN.into());
        config.max_wait = Duration::from_millis(300);
    })
    .await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn as_key(app: &App, key: &str, method: Method, path: &str) -> Answer {
    app.send(method, path, &[("authorization", key)], Body::empty())
        .await
}

/// Makes a key with `body` as admin; returns its `Authorization` value once this dispatcher
/// knows it (the one `whoami` that proves it counts against the key's rate).
async fn make_key(app: &App, body: serde_json::Value) -> String {
    let answer = app
        .send(
            Method::POST,
            "/v1/keys",
            &[("authorization", &bearer(ADMIN))],
            body.to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json());
    let key = bearer(&answer.decode::<CreatedKey>().key);
    eventually(
        Duration::from_secs(5),
        "the key to reach the dispatcher",
        async || {
            let answer = as_key(app, &key, Method::GET, "/v1/whoami").await;
            (answer.status == StatusCode::OK)
                .then_some(())
                .ok_or(answer.status)
        },
    )
    .await;
    key
}

async fn deploy(app: &App, name: &str, library: &str, spec: Option<serde_json::Value>) {
    let artifact = std::fs::read(built().library(library)).unwrap();
    let answer = app
        .deploy_with(
            name,
            &artifact,
            spec.as_ref(),
            &[("authorization", &bearer(ADMIN))],
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json());
}

/// Queues an invocation of `function` as admin; its id.
async fn queue(app: &App, function: &str) -> String {
    let answer = as_key(
        app,
        &bearer(ADMIN),
        Method::POST,
        &format!("/v1/functions/{function}/invocations?async=true"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.json());
    answer.json()["invocation_id"].as_str().unwrap().to_string()
}

/// A 403 that names the function the key may not reach.
fn refused_function(answer: &Answer, function: &str, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "{what}: {:?}",
        answer.json()
    );
    assert_eq!(answer.error().code, "forbidden", "{what}");
    assert_eq!(
        answer.error().extra_str("function"),
        Some(function),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_functions_reaches_only_those_on_every_route() {
    let app = start().await;
    deploy(&app, "orders-eu", "hello", None).await;
    deploy(&app, "billing", "hello", None).await;
    deploy(
        &app,
        "orders-web",
        "web_hello",
        Some(serde_json::json!({"web": {}})),
    )
    .await;
    deploy(
        &app,
        "billing-web",
        "web_hello",
        Some(serde_json::json!({"web": {}})),
    )
    .await;
    let key = make_key(
        &app,
        serde_json::json!({"name": "orders", "scopes": ["invoke", "read"], "functions": ["orders-*"]}),
    )
    .await;
    let whoami: WhoAmI = as_key(&app, &key, Method::GET, "/v1/whoami").await.decode();
    assert_eq!(whoami.functions, ["orders-*"]);

    // Invoking: the native invoke, async or not, a batch, a CloudEvent; a function that does
    // not exist is refused alike, so the answer tells nothing about which exist.
    for function in ["billing", "nothing-here"] {
        for path in [
            format!("/v1/functions/{function}/invocations?async=true"),
            format!("/v1/functions/{function}:live/invocations"),
            format!("/v1/functions/{function}/batch"),
        ] {
            let answer = as_key(&app, &key, Method::POST, &path).await;
            let name = path.split('/').nth(3).unwrap();
            refused_function(&answer, name, &path);
        }
    }
    let event = serde_json::json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let answer = app
        .send(
            Method::POST,
            "/v1/functions/billing/invocations",
            &[
                ("authorization", &key),
                ("content-type", "application/cloudevents+json"),
            ],
            event.to_string(),
        )
        .await;
    refused_function(&answer, "billing", "a CloudEvent");
    let allowed = as_key(
        &app,
        &key,
        Method::POST,
        "/v1/functions/orders-eu/invocations?async=true",
    )
    .await;
    assert_eq!(allowed.status, StatusCode::ACCEPTED, "{:?}", allowed.json());
    let own = allowed.json()["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Reading: the function list shows only its functions; a function of another is refused.
    let listed: FunctionList = as_key(&app, &key, Method::GET, "/v1/functions")
        .await
        .decode();
    let names: Vec<&str> = listed.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["orders-eu", "orders-web"]);
    for path in [
        "/v1/functions/billing",
        "/v1/functions/billing/stats",
        "/v1/functions/billing/versions",
        "/v1/functions/billing/aliases",
    ] {
        refused_function(
            &as_key(&app, &key, Method::GET, path).await,
            "billing",
            path,
        );
    }
    assert_eq!(
        as_key(&app, &key, Method::GET, "/v1/functions/orders-eu")
            .await
            .status,
        StatusCode::OK
    );
    // Another function's invocation is unknown to it, by every route that takes an id.
    let theirs = queue(&app, "billing").await;
    for (method, path) in [
        (Method::GET, format!("/v1/invocations/{theirs}")),
        (Method::GET, format!("/v1/invocations/{theirs}/output")),
        (Method::GET, format!("/v1/invocations/{theirs}/logs")),
        (Method::DELETE, format!("/v1/invocations/{theirs}")),
    ] {
        let answer = as_key(&app, &key, method.clone(), &path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            answer.error().code,
            "invocation_not_found",
            "{method} {path}"
        );
    }
    let view = as_key(&app, &key, Method::GET, &format!("/v1/invocations/{own}")).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.json());
    let admin_view = as_key(
        &app,
        &bearer(ADMIN),
        Method::GET,
        &format!("/v1/invocations/{theirs}"),
    )
    .await;
    assert_eq!(admin_view.status, StatusCode::OK, "the admin still sees it");
    // Listing invocations: one allowed function at a time.
    let answer = as_key(&app, &key, Method::GET, "/v1/invocations").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = as_key(&app, &key, Method::GET, "/v1/invocations?function=billing").await;
    refused_function(&answer, "billing", "listing billing");
    let answer = as_key(
        &app,
        &key,
        Method::GET,
        "/v1/invocations?function=orders-eu",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    // What shows every function at once is not for it.
    for path in ["/v1/fleet", "/v1/usage", "/metrics"] {
        let answer = as_key(&app, &key, Method::GET, path).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(answer.error().code, "forbidden", "{path}");
    }

    // Web functions that take a key.
    let answer = app
        .send_web(
            Method::GET,
            "/function/billing-web/x",
            &[("authorization", &key)],
            Body::empty(),
        )
        .await;
    refused_function(&answer, "billing-web", "a web function");
    let answer = app
        .send_web(
            Method::GET,
            "/function/orders-web/x",
            &[("authorization", &key)],
            Body::empty(),
        )
        .await;
    // Allowed, queued, and unanswered: no worker runs here.
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{:?}",
        answer.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limits_are_checked_at_creation_and_listed() {
    let app = start().await;
    for (body, says) in [
        (
            serde_json::json!({"name": "a", "scopes": ["invoke"], "functions": ["a*b"]}),
            "\"a*b\" is neither a function name",
        ),
        (
            serde_json::json!({"name": "a", "scopes": ["invoke"], "functions": ["*"]}),
            "\"*\" is neither",
        ),
        (
            serde_json::json!({"name": "a", "scopes": ["admin"], "functions": ["a"]}),
            "an admin key cannot be limited",
        ),
        (
            serde_json::json!({"name": "a", "scopes": ["read"], "rate_per_s": 0}),
            "rate_per_s must be",
        ),
        (
            serde_json::json!({"name": "a", "scopes": ["read"], "burst": 3}),
            "burst needs rate_per_s",
        ),
        (
            serde_json::json!({"name": "a", "scopes": ["read"], "rate_per_s": 1, "burst": 0}),
            "burst must be",
        ),
    ] {
        let answer = app
            .send(
                Method::POST,
                "/v1/keys",
                &[("authorization", &bearer(ADMIN))],
                body.to_string(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error().code, "invalid_key", "{body}");
        assert!(
            answer.error().message.contains(says),
            "{body}: {}",
            answer.error().message
        );
    }
    make_key(
        &app,
        serde_json::json!({"name": "limited", "scopes": ["invoke"], "functions": ["orders-*", "billing"],
            "rate_per_s": 2.5, "burst": 10}),
    )
    .await;
    let listed: KeyList = as_key(&app, &bearer(ADMIN), Method::GET, "/v1/keys")
        .await
        .decode();
    let limited = &listed.keys[0];
    assert_eq!(limited.limits.functions, ["orders-*", "billing"]);
    assert_eq!(limited.limits.rate_per_s, Some(2.5));
    assert_eq!(limited.limits.burst, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let app = start().await;
    // 0.01 a second refills nothing during the test: the burst is all it has.
    let slow = make_key(
        &app,
        serde_json::json!({"name": "slow", "scopes": ["read"], "rate_per_s": 0.01, "burst": 3}),
    )
    .await;
    let other = make_key(
        &app,
        serde_json::json!({"name": "other", "scopes": ["read"]}),
    )
    .await;
    // `make_key`'s whoami took one token; two are left.
    for _ in 0..2 {
        let answer = as_key(&app, &slow, Method::GET, "/v1/functions").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let refused = as_key(&app, &slow, Method::GET, "/v1/functions").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error().code, "rate_limited");
    assert_eq!(refused.headers["retry-after"], "100");
    // Every route counts, and the key's other requests are refused too.
    let refused = as_key(&app, &slow, Method::GET, "/v1/whoami").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..10 {
        let answer = as_key(&app, &other, Method::GET, "/v1/functions").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_backlog_needs_the_admin_scope() {
    let app = start().await;
    deploy(&app, "f", "hello", None).await;
    queue(&app, "f").await;
    let invoke = make_key(
        &app,
        serde_json::json!({"name": "ci", "scopes": ["invoke"]}),
    )
    .await;
    let path = "/v1/functions/f/invocations?status=queued";
    let answer = as_key(&app, &invoke, Method::DELETE, path).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.error().extra_str("scope"), Some("admin"));
    let answer = as_key(&app, &bearer(ADMIN), Method::DELETE, path).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    assert_eq!(answer.json()["cancelled"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_read_key_by_default() {
    let app = start().await;
    assert_eq!(app.get("/metrics").await.status, StatusCode::UNAUTHORIZED);
    let read = make_key(
        &app,
        serde_json::json!({"name": "scraper", "scopes": ["read"]}),
    )
    .await;
    let answer = as_key(&app, &read, Method::GET, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    let invoke = make_key(
        &app,
        serde_json::json!({"name": "ci", "scopes": ["invoke"]}),
    )
    .await;
    let answer = as_key(&app, &invoke, Method::GET, "/metrics").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}
