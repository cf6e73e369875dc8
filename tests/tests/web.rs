//! Web functions at `/function/{name}[/…]`: a real dispatcher and worker answering HTTP requests
//! in the function's own format, their access, rate limit and failures; and, in process, what
//! the dispatcher decides before any job exists.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use sha2::{Digest, Sha256};
use squall_api::functions::Function;
use squall_api::{ErrorBody, ErrorKind, InvocationStatus};
use squall_dispatcher::compat::web::ClientAddr;
use squall_tests::in_process::App;
use squall_tests::{built, Cluster, ClusterOptions};
use std::time::Duration;

const ADMIN: &str = "web-test-admin-key-0123456789";
const SECRET: &str = "webhook-secret";

/// The web-hello example as a web function with `web`, and its webhook secret.
fn spec(web: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"timeout_ms": 5000, "max_attempts": 1, "web": web,
        "config": {"webhook_secret": SECRET}})
}

/// `sha256=<hex HMAC-SHA256(key, body)>`, as web-hello expects in `x-signature`.
fn signature(key: &[u8], body: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn anonymous() -> reqwest::Client {
    reqwest::Client::new()
}

fn invocation_id(response: &reqwest::Response) -> String {
    response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_function_answers_with_its_own_status_headers_cookies_and_checks() {
    let cluster = Cluster::start().await;
    let (status, deployed) = cluster
        .deploy(
            "web-hello",
            built().library("web_hello"),
            Some(spec(serde_json::json!({"auth": "none"}))),
        )
        .await;
    assert_eq!(status, 201, "{deployed}");
    let deployed: Function = serde_json::from_value(deployed).unwrap();
    assert_eq!(deployed.warnings.len(), 1, "{:?}", deployed.warnings);
    assert!(deployed.warnings[0].contains("without a key"));

    let url = format!(
        "{}/function/web-hello/greet/you?name=Ada%20L&tag=a&tag=b",
        cluster.web_url
    );
    let response = anonymous()
        .get(&url)
        .header("x-custom", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-web-hello"], "hello");
    assert_eq!(
        response.headers()["set-cookie"],
        "visit=1; Path=/function/web-hello; HttpOnly"
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let id = invocation_id(&response);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/greet/you");
    assert_eq!(echo["raw_query"], "name=Ada%20L&tag=a&tag=b");
    assert_eq!(echo["query"]["name"], "Ada L");
    assert_eq!(echo["query"]["tag"], "a,b");
    assert_eq!(echo["remote_addr"], "127.0.0.1");
    let headers = echo["headers"].as_array().unwrap();
    assert!(headers.contains(&"x-custom".into()), "{echo}");
    // Only the web listener serves it: the API's origin does not, and it serves no console.
    let on_api = anonymous()
        .get(format!("{}/function/web-hello/greet/you", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
    let console = anonymous()
        .get(format!("{}/ui", cluster.web_url))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 404);
    // It was an ordinary invocation, through the queue.
    let view = cluster.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(view.status, InvocationStatus::Succeeded);

    // The root, with a body and another method.
    let response = anonymous()
        .put(format!("{}/function/web-hello", cluster.web_url))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("PUT"), Some("/"))
    );
    assert_eq!(echo["body"], "payload");

    // The function checks the webhook's signature itself.
    let hook = format!("{}/function/web-hello/hook", cluster.web_url);
    let body = br#"{"event": "push"}"#;
    let bad = anonymous()
        .post(&hook)
        .header("x-signature", signature(b"wrong", body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let said: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(said, serde_json::json!({"error": "bad signature"}));
    let good = anonymous()
        .post(&hook)
        .header("x-signature", signature(SECRET.as_bytes(), body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let said: serde_json::Value = good.json().await.unwrap();
    assert_eq!(said["accepted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_web_function_is_a_502_without_detail() {
    let cluster = Cluster::start().await;
    cluster
        .deploy(
            "web-hello",
            built().library("web_hello"),
            Some(spec(serde_json::json!({"auth": "none"}))),
        )
        .await;
    let response = anonymous()
        .get(format!("{}/function/web-hello/panic", cluster.web_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let id = invocation_id(&response);
    let text = response.text().await.unwrap();
    assert!(!text.contains("4711") && !text.contains("panic"), "{text}");
    let error: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(error.error.code, "function_failed");
    assert_eq!(error.error.message, "the function failed");
    assert!(error.error.extra.is_empty(), "{text}");
    // The invocation keeps the detail.
    let view = cluster.wait_terminal(&id, Duration::from_secs(5)).await;
    let failure = view.error.expect("the panic is recorded");
    assert_eq!(failure.kind, ErrorKind::Panic);
    assert!(
        failure.message.contains("internal detail 4711"),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_web_function_needs_a_key_and_the_rate_limit_answers_429() {
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    })
    .await;
    let library = built().library("web_hello");
    let (status, deployed) = cluster
        .deploy("web-keyed", library, Some(spec(serde_json::json!({}))))
        .await;
    assert_eq!(status, 201, "{deployed}");
    assert!(deployed.get("warnings").is_none(), "{deployed}");
    let (status, _) = cluster
        .deploy(
            "web-limited",
            library,
            Some(spec(serde_json::json!({"auth": "none", "rate_per_s": 1}))),
        )
        .await;
    assert_eq!(status, 201);

    let keyed = format!("{}/function/web-keyed/x", cluster.web_url);
    let refused = anonymous().get(&keyed).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let error: ErrorBody = refused.json().await.unwrap();
    assert_eq!(error.error.code, "unauthorized");
    // The cluster's client sends the admin key; the function never sees it.
    let allowed = cluster.http.get(&keyed).send().await.unwrap();
    assert_eq!(allowed.status(), 201);
    let echo: serde_json::Value = allowed.json().await.unwrap();
    assert!(
        !echo["headers"]
            .as_array()
            .unwrap()
            .contains(&"authorization".into()),
        "{echo}"
    );
    // A caller without a key learns nothing about other functions either.
    for path in ["/function/nothing", "/function/web-keyed"] {
        let answer = anonymous()
            .post(format!("{}{path}", cluster.web_url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{path}");
    }

    // An open function sees a caller's own Authorization, never a Squall key.
    let (status, _) = cluster
        .deploy(
            "web-open",
            library,
            Some(spec(serde_json::json!({"auth": "none"}))),
        )
        .await;
    assert_eq!(status, 201);
    let open = format!("{}/function/web-open/x", cluster.web_url);
    for (authorization, forwarded) in [
        (format!("Bearer {ADMIN}"), false),
        (
            "Bearer sq_revoked_or_another_dispatchers".to_string(),
            false,
        ),
        ("Basic dXNlcjpwYXNz".to_string(), true),
    ] {
        let answer = anonymous()
            .get(&open)
            .header("authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let echo: serde_json::Value = answer.json().await.unwrap();
        let seen = echo["headers"]
            .as_array()
            .unwrap()
            .contains(&"authorization".into());
        assert_eq!(seen, forwarded, "{authorization}: {echo}");
    }

    // One request per second per address: the second at once is refused.
    let limited = format!("{}/function/web-limited", cluster.web_url);
    let first = anonymous().get(&limited).send().await.unwrap();
    assert_eq!(first.status(), 201);
    let second = anonymous().get(&limited).send().await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let error: ErrorBody = second.json().await.unwrap();
    assert_eq!(error.error.code, "rate_limited");
    // Another function keeps its own budget.
    assert_eq!(cluster.http.get(&keyed).send().await.unwrap().status(), 201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        anonymous().get(&limited).send().await.unwrap().status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_routes_refuse_what_is_not_a_web_request_before_any_job() {
    let app = App::start_with(|config| config.max_payload = 1024).await;
    let web_hello = std::fs::read(built().library("web_hello")).unwrap();
    let hello = std::fs::read(built().library("hello")).unwrap();
    // Spec errors name the field.
    for (web, says) in [
        (
            serde_json::json!({"auth": "public"}),
            "unknown variant `public`",
        ),
        (
            serde_json::json!({"rate_per_s": 0}),
            "web.rate_per_s must be",
        ),
        (serde_json::json!({"rate": 5}), "unknown field `rate`"),
    ] {
        let answer = app.deploy("w", &web_hello, Some(&spec(web))).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.error().code, "invalid_spec");
        assert!(
            answer.error().message.contains(says),
            "{}",
            answer.error().message
        );
    }
    let answer = app
        .deploy(
            "w",
            &web_hello,
            Some(&spec(serde_json::json!({"auth": "none"}))),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let answer = app.deploy("plain", &hello, None).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert!(answer.decode::<Function>().warnings.is_empty());

    for path in ["/function/plain", "/function/plain/", "/function/plain/a/b"] {
        let answer = app.get_web(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.error().code, "not_a_web_function");
    }
    let answer = app.get_web("/function/nobody/x").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error().code, "function_not_found");
    let answer = app.get_web("/function/bad%20name").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // Over the payload limit: 413, and nothing was queued.
    let answer = app
        .send_web(Method::POST, "/function/w/upload", &[], vec![b'x'; 1025])
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error().code, "payload_too_large");
    let long = format!("/function/w/{}", "a".repeat(5000));
    assert_eq!(app.get_web(&long).await.status, StatusCode::URI_TOO_LONG);
    let mut jobs = app.state.broker.topology.jobs.clone();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_rate_limit_counts_an_ipv6_client_by_its_64() {
    // No worker runs here: a request let through is queued and unanswered (504) after the wait.
    let app = App::start_with(|config| config.max_wait = Duration::from_millis(200)).await;
    let web_hello = std::fs::read(built().library("web_hello")).unwrap();
    let spec = spec(serde_json::json!({"auth": "none", "rate_per_s": 0.01}));
    let answer = app.deploy("w", &web_hello, Some(&spec)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let from = |address: &str| {
        let mut request = Request::get("/function/w").body(Body::empty()).unwrap();
        let peer = std::net::SocketAddr::new(address.parse().unwrap(), 40000);
        request
            .extensions_mut()
            .insert(ConnectInfo(ClientAddr(peer)));
        request
    };
    let first = app.call_web(from("2001:db8:0:1::1")).await;
    assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT);
    // Another address of the same /64 shares its budget.
    let refused = app.call_web(from("2001:db8:0:1:ffff:ffff:ffff:2")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error().code, "rate_limited");
    // Another /64 has its own, and so has an IPv4 client.
    let other = app.call_web(from("2001:db8:0:2::1")).await;
    assert_eq!(other.status, StatusCode::GATEWAY_TIMEOUT);
    let v4 = app.call_web(from("192.0.2.1")).await;
    assert_eq!(v4.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_functions_are_not_served_on_the_api_origin_nor_anything_else_on_theirs() {
    let app = App::start().await;
    let web_hello = std::fs::read(built().library("web_hello")).unwrap();
    let spec = spec(serde_json::json!({"auth": "none"}));
    assert_eq!(
        app.deploy("w", &web_hello, Some(&spec)).await.status,
        StatusCode::CREATED
    );
    for path in [
        "/function/w",
        "/function/w/",
        "/function/w/a/b",
        "/function/nobody",
    ] {
        for method in [Method::GET, Method::POST, Method::PUT] {
            let answer = app.send(method.clone(), path, &[], Body::empty()).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(answer.error().code, "route_not_found", "{method} {path}");
            assert!(
                answer.error().message.contains("--web-addr"),
                "{}",
                answer.error().message
            );
        }
    }
    let mut jobs = app.state.broker.topology.jobs.clone();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0, "nothing ran");
    for path in [
        "/ui",
        "/ui/app.js",
        "/v1/functions",
        "/v1/openapi.json",
        "/v1/whoami",
        "/healthz",
        "/metrics",
        "/2015-03-31/functions",
    ] {
        let answer = app.get_web(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.error().code, "route_not_found", "{path}");
    }
}
