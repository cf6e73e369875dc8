//! API keys and scopes, secure defaults, function secrets and request limits, against real
//! dispatchers and workers (and the router in process where no worker is needed).

use axum::body::Body;
use axum::http::Method;
use squall_api::functions::{Function, Secrets};
use squall_api::operations::{CreatedKey, KeyList, Scope};
use squall_api::ErrorBody;
use squall_tests::in_process::App;
use squall_tests::{
    built, eventually, eventually_blocking, eventually_every, free_port, http_get_blocking,
    json_response, Cluster, ClusterOptions, Process, Text,
};
use std::process::Command;
use std::time::Duration;

const ADMIN: &str = "admin-key-for-tests-0123456789";

fn with_admin_key(workers: usize, dispatchers: usize) -> ClusterOptions {
    ClusterOptions {
        workers,
        dispatchers,
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    }
}

/// Sends `method path` to `base` with an optional key; returns status and JSON.
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_response(request.send().await.unwrap()).await
}

async fn create_key(base: &str, name: &str, scopes: &[&str]) -> String {
    let (status, body) = call(
        base,
        reqwest::Method::POST,
        "/v1/keys",
        Some(ADMIN),
        Some(serde_json::json!({"name": name, "scopes": scopes})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    decode::<CreatedKey>(&body).key
}

/// Decodes a JSON body as one of the API's types, panicking with the body when it does not.
fn decode<T: serde::de::DeserializeOwned>(body: &serde_json::Value) -> T {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not a {} ({e}): {body}", std::any::type_name::<T>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_scopes_guard_every_route_and_revocation_reaches_every_dispatcher() {
    let mut cluster = Cluster::start_with(with_admin_key(1, 1)).await;
    let other = cluster.add_dispatcher().await;
    let url = cluster.url.clone();
    cluster.deploy_example("hello", None).await;
    use reqwest::Method as M;

    // Scoped keys work across processes: an invoke key runs a function on a worker. (Which
    // route needs which scope is tested in process, in api.rs.)
    let invoke = create_key(&url, "ci", &["invoke"]).await;
    let read = create_key(&url, "dashboard", &["read"]).await;
    let (status, _) = call(
        &url,
        M::POST,
        "/v1/functions/hello/invocations",
        Some(&invoke),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&url, M::GET, "/v1/functions", None, None).await;
    assert_eq!(status, 401);

    // Listing shows names and scopes, never keys or their hashes.
    let (status, listed) = call(&url, M::GET, "/v1/keys", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let keys = decode::<KeyList>(&listed);
    assert!(
        keys.keys
            .iter()
            .any(|k| k.name == "ci" && k.scopes == [Scope::Invoke]),
        "{keys:?}"
    );
    // The raw text too: no key, nor part of one, nor a hash, anywhere in the answer.
    let text = listed.to_string();
    assert!(text.contains("\"ci\"") && text.contains("invoke"), "{text}");
    assert!(
        !text.contains(&invoke) && !text.contains(&invoke[3..20]),
        "{text}"
    );
    assert!(!text.contains("sha256"), "{text}");

    // The other dispatcher knows the new key, and forgets it when it is revoked.
    eventually(
        Duration::from_secs(5),
        "the key to reach the other dispatcher",
        async || match call(&other, M::GET, "/v1/functions", Some(&read), None).await {
            (200, _) => Ok(()),
            seen => Err(seen),
        },
    )
    .await;
    assert_eq!(
        call(&url, M::DELETE, "/v1/keys/dashboard", Some(ADMIN), None)
            .await
            .0,
        204
    );
    eventually(
        Duration::from_secs(5),
        "the revocation to reach the other dispatcher",
        async || match call(&other, M::GET, "/v1/functions", Some(&read), None).await {
            (401, _) => Ok(()),
            seen => Err(seen),
        },
    )
    .await;
    assert_eq!(
        call(&url, M::DELETE, "/v1/keys/dashboard", Some(ADMIN), None)
            .await
            .0,
        404
    );
}

/// Starts a dispatcher listening on `0.0.0.0:<port>` with `args` and `env` against a fresh
/// nats-server; returns it and its exit status if it exits, or `None` once it serves.
fn dispatcher_alone(
    nats: &squall_tests::NatsServer,
    dir: &std::path::Path,
    port: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Process, Option<std::process::ExitStatus>) {
    let mut command = Command::new(&built().dispatcher);
    command
        .env_remove("SQUALL_ADMIN_KEY")
        .env_remove("SQUALL_ADMIN_KEY_FILE")
        .envs(env.iter().copied())
        .arg("--nats-url")
        .arg(&nats.url)
        .arg("--data-dir")
        .arg(dir.join(format!("d-{}", free_port())))
        .arg("--http-addr")
        .arg(format!("0.0.0.0:{port}"))
        .arg("--web-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(args);
    let mut process = Process::spawn("dispatcher", command, dir.join("alone.log")).unwrap();
    // It either refuses its configuration and exits, or serves: wait for whichever comes.
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let exited = eventually_blocking(
        Duration::from_secs(20),
        "the dispatcher to exit or to serve",
        || {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Ok(Some(status));
            }
            match http_get_blocking(&readyz) {
                Some((200, _)) => Ok(None),
                answer => Err((answer, Text(process.output()))),
            }
        },
    );
    (process, exited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_dispatcher_refuses_a_non_loopback_address_unless_told() {
    tokio::task::spawn_blocking(built).await.unwrap();
    let nats = squall_tests::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (process, status) = dispatcher_alone(&nats, dir.path(), free_port(), &[], &[]);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(64),
        "{}",
        process.output()
    );
    let said = process.output();
    assert!(
        said.contains("SQUALL_ADMIN_KEY") && said.contains("--allow-anonymous"),
        "{said}"
    );

    let (process, status) = dispatcher_alone(
        &nats,
        dir.path(),
        free_port(),
        &[],
        &[("SQUALL_ADMIN_KEY", "short")],
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(64),
        "{}",
        process.output()
    );
    assert!(
        process.output().contains("at least 16"),
        "{}",
        process.output()
    );

    for (args, env) in [
        (vec!["--allow-anonymous"], vec![]),
        (vec![], vec![("SQUALL_ADMIN_KEY", ADMIN)]),
    ] {
        let (mut process, status) = dispatcher_alone(&nats, dir.path(), free_port(), &args, &env);
        assert!(status.is_none(), "it should run: {}", process.output());
        process.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_read_key_unless_the_dispatcher_is_told_to_open_them() {
    tokio::task::spawn_blocking(built).await.unwrap();
    let nats = squall_tests::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (args, anonymous) in [(vec![], 401), (vec!["--metrics-open"], 200)] {
        let port = free_port();
        let env = [("SQUALL_ADMIN_KEY", ADMIN)];
        let (mut process, status) = dispatcher_alone(&nats, dir.path(), port, &args, &env);
        assert!(status.is_none(), "it should run: {}", process.output());
        let url = format!("http://127.0.0.1:{port}/metrics");
        let answer = reqwest::get(&url).await.unwrap();
        assert_eq!(answer.status(), anonymous, "{args:?}");
        let keyed = reqwest::Client::new()
            .get(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(keyed.status(), 200, "{args:?}");
        process.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_function_and_never_show_in_responses_or_logs() {
    let cluster = Cluster::start_with(with_admin_key(1, 1)).await;
    cluster.deploy_example("echo", None).await;
    let secret = "s3cr3t-value-that-must-not-leak";
    let (status, body) = json_response(
        cluster
            .http
            .put(format!("{}/v1/functions/echo/secrets", cluster.url))
            .json(&serde_json::json!({"API_TOKEN": secret}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let secrets = decode::<Secrets>(&body);
    assert_eq!(
        secrets.secrets.get("API_TOKEN").map(String::as_str),
        Some("[redacted]")
    );
    squall_tests::wait_workers_ready(&cluster, "echo").await;

    // The function sees it (echo reports each secret's length, never its value).
    let id = eventually_every(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "the worker to see the secret",
        async || {
            let response = cluster.invoke("echo", "hi").await;
            let id = response.headers()["squall-invocation-id"]
                .to_str()
                .unwrap()
                .to_string();
            let out: serde_json::Value = response.json().await.unwrap();
            (out["secret_lengths"]["API_TOKEN"] == secret.len())
                .then_some(id)
                .ok_or(out)
        },
    )
    .await;
    // A redeploy keeps it.
    cluster.deploy_example("echo", None).await;
    let (_, function) = cluster.get_json("/v1/functions/echo").await;
    assert_eq!(decode::<Function>(&function).secrets, ["API_TOKEN"]);

    let mut seen = vec![function.to_string(), body.to_string()];
    for path in [
        "/v1/functions".to_string(),
        "/v1/functions/echo/secrets".to_string(),
        format!("/v1/invocations/{id}"),
        format!("/v1/invocations/{id}/logs"),
        "/v1/invocations".to_string(),
    ] {
        let (status, body) = cluster.get_json(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.push(body.to_string());
    }
    seen.push(cluster.dispatcher.output());
    seen.push(cluster.workers[0].output());
    for text in seen {
        assert!(!text.contains(secret), "the secret leaked: {text}");
    }
    assert_eq!(
        json_response(
            cluster
                .http
                .delete(format!("{}/v1/functions/echo/secrets", cluster.url))
                .send()
                .await
                .unwrap()
        )
        .await
        .0,
        204
    );
    let (_, after) = cluster
        .get_as::<Secrets>("/v1/functions/echo/secrets")
        .await;
    assert!(after.secrets.is_empty(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_limit_refuses_a_request_just_over_it() {
    // In process: the limits are the router's, and no worker is needed.
    let app = App::start_with(|config| config.max_payload = 1000).await;
    let hello = std::fs::read(built().library("hello")).unwrap();
    assert_eq!(app.deploy("hello", &hello, None).await.status, 201);
    // Body: the payload limit.
    let answer = app
        .send(
            Method::POST,
            "/v1/functions/hello/invocations",
            &[],
            vec![b'x'; 1001],
        )
        .await;
    assert_eq!(answer.status, 413);
    // Headers: 16 KiB in total.
    let big = "v".repeat(16 * 1024);
    let answer = app
        .send(
            Method::GET,
            "/v1/functions",
            &[("x-big", &big)],
            Body::empty(),
        )
        .await;
    let body = answer.decode::<ErrorBody>();
    assert_eq!(
        (answer.status.as_u16(), body.error.code.as_str()),
        (431, "headers_too_large"),
        "{body:?}"
    );
    // Headers: 64 at most.
    let names: Vec<String> = (0..70).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
    let answer = app
        .send(Method::GET, "/v1/functions", &many, Body::empty())
        .await;
    assert_eq!(answer.status, 431);
    // Names: 64 characters.
    let long = "f".repeat(65);
    let answer = app.get(&format!("/v1/functions/{long}")).await;
    let body = answer.decode::<ErrorBody>();
    assert_eq!(
        (answer.status.as_u16(), body.error.code.as_str()),
        (400, "invalid_name"),
        "{body:?}"
    );
    // JSON depth: 128 levels.
    let deep = format!("{}1{}", "[".repeat(129), "]".repeat(129));
    let answer = app
        .send(
            Method::PUT,
            "/v1/schedules/deep",
            &[("content-type", "application/json")],
            format!(r#"{{"function": "hello", "cron": "* * * * *", "payload": {deep}}}"#),
        )
        .await;
    let body = answer.decode::<ErrorBody>();
    assert_eq!(answer.status, 400, "{body:?}");
    assert!(body.error.message.contains("recursion limit"), "{body:?}");
    // Just under each limit is fine (and an absurd wait is clamped, not a crash).
    let answer = app
        .send(
            Method::POST,
            "/v1/functions/hello/invocations?async=true&wait=1e300",
            &[],
            vec![b' '; 1000],
        )
        .await;
    assert_eq!(answer.status, 202);
}
