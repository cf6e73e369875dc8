//! Destinations and callbacks: a real HTTP receiver gets the signed CloudEvent of each terminal
//! state, a three-stage pipeline chains functions through destinations and subject triggers, and
//! an unreachable URL ends as a recorded failure and a destination dead letter that replays once
//! the receiver is up.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use squall_api::invocations::{
    DeliveryOutcome, DestinationDeadLetterList, DestinationReplay, DestinationTarget,
};
use squall_api::queries::InvocationPage;
use squall_tests::{eventually, Cluster, ClusterOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// A plain HTTP server on 127.0.0.1 that answers 200 to every POST and keeps what it got.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = got.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: bytes::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(Received {
                        path: uri.path().to_string(),
                        headers,
                        body,
                    });
                    "ok"
                }
            },
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, got, server }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn at(&self, path: &str) -> Vec<Received> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until `path` got `n` POSTs, returning them.
    async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, format_args!("{n} POSTs to {path}"), async || {
            let got = self.at(path);
            match got.len() >= n {
                true => Ok(got),
                false => Err(format!("{} POSTs", got.len())),
            }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// HMAC-SHA256 (RFC 2104), written here apart from the dispatcher's, to check its signatures.
fn hmac(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(inner)
        .chain_update(message)
        .finalize();
    let mac = Sha256::new()
        .chain_update(outer)
        .chain_update(inner)
        .finalize();
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", received.headers))
        .to_str()
        .unwrap()
}

/// Checks the `Squall-Signature` of a POST against the function's destination secret.
fn assert_signed(received: &Received, secret: &str) {
    let expected = format!("sha256={}", hmac(secret.as_bytes(), &received.body));
    assert_eq!(header(received, "squall-signature"), expected);
}

fn data(received: &Received) -> serde_json::Value {
    serde_json::from_slice(&received.body).expect("the event's data is JSON")
}

/// Deploys an example under `name` with `spec`, returning its destination secret.
async fn deploy(cluster: &Cluster, name: &str, example: &str, spec: serde_json::Value) -> String {
    let (status, body) = cluster
        .deploy(name, squall_tests::built().library(example), Some(spec))
        .await;
    assert_eq!(status, 201, "deploy {name}: {body}");
    body["destination_secret"]
        .as_str()
        .expect("a deploy shows the destination secret")
        .to_string()
}

async fn metrics(cluster: &Cluster) -> String {
    cluster
        .http
        .get(format!("{}/metrics", cluster.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls an invocation until its view shows `n` destination outcomes.
async fn outcomes(cluster: &Cluster, id: &str, n: usize) -> squall_api::invocations::Invocation {
    eventually(
        Duration::from_secs(20),
        format_args!("{n} destination outcomes of {id}"),
        async || {
            let view = cluster.wait_terminal(id, Duration::from_secs(20)).await;
            match view.destinations.len() >= n {
                true => Ok(view),
                false => Err(view),
            }
        },
    )
    .await
}

/// Waits until each `(stream, consumer)` named, upstream first, and then the destinations
/// consumer on RESULTS have settled: every delivery that will happen has happened.
async fn deliveries_settled(cluster: &Cluster, upstream: &[(&str, &str)]) {
    let mut consumers = upstream.to_vec();
    consumers.push(("RESULTS", "destinations"));
    squall_tests::consumers_settled(&cluster.nats_client().await, &consumers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_states_and_callbacks_are_posted_signed_to_urls() {
    let cluster = Cluster::start().await;
    let receiver = Receiver::start(0).await;
    let echo_secret = deploy(
        &cluster,
        "echo",
        "echo",
        serde_json::json!({"destinations": {
            "on_success": receiver.url("/ok"), "on_failure": receiver.url("/bad")}}),
    )
    .await;
    let fail_secret = deploy(
        &cluster,
        "fail",
        "fail",
        serde_json::json!({"max_attempts": 1, "destinations": {"on_failure": receiver.url("/failed")}}),
    )
    .await;
    let hello_secret = deploy(&cluster, "hello", "hello", serde_json::json!({})).await;
    assert_ne!(echo_secret, fail_secret);
    // A redeploy keeps the secret; the function's own view never shows it.
    let again = deploy(
        &cluster,
        "echo",
        "echo",
        serde_json::json!({"destinations": {
            "on_success": receiver.url("/ok"), "on_failure": receiver.url("/bad")}}),
    )
    .await;
    assert_eq!(again, echo_secret);
    let (_, view) = cluster.get_json("/v1/functions/echo").await;
    assert!(view.get("destination_secret").is_none(), "{view}");
    assert_eq!(
        view["config"]["destinations"]["on_success"],
        receiver.url("/ok")
    );
    for name in ["echo", "fail", "hello"] {
        squall_tests::wait_workers_ready(&cluster, name).await;
    }

    let response = cluster.invoke("echo", "ping").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let got = receiver.wait_for("/ok", 1, Duration::from_secs(20)).await;
    let post = &got[0];
    assert_signed(post, &echo_secret);
    assert_eq!(header(post, "ce-specversion"), "1.0");
    assert_eq!(header(post, "ce-type"), "io.squall.invocation.succeeded");
    assert_eq!(header(post, "ce-source"), "/squall/functions/echo");
    assert_eq!(header(post, "ce-id"), format!("{id}:succeeded"));
    assert_eq!(header(post, "ce-subject"), id);
    assert_eq!(header(post, "content-type"), "application/json");
    let event = data(post);
    assert_eq!(event["invocation_id"], id.as_str());
    assert_eq!(event["function"], "echo");
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["attempts"], 1);
    assert!(event["version"].as_str().unwrap().starts_with("sha256:"));
    assert!(event["duration_ms"].is_number() && event["finished_at"].is_string());
    let output: serde_json::Value =
        serde_json::from_str(event["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["input"], "ping");
    let view = outcomes(&cluster, &id, 1).await;
    let delivery = &view.destinations[0];
    assert_eq!(delivery.target, DestinationTarget::OnSuccess);
    assert_eq!(delivery.outcome, DeliveryOutcome::Delivered);
    assert_eq!(delivery.destination, receiver.url("/ok"));
    assert!(receiver.at("/bad").is_empty());

    let response = cluster.invoke("fail", "x").await;
    assert_eq!(response.status(), 500);
    let post = &receiver
        .wait_for("/failed", 1, Duration::from_secs(20))
        .await[0];
    assert_signed(post, &fail_secret);
    assert_eq!(header(post, "ce-type"), "io.squall.invocation.failed");
    let event = data(post);
    assert_eq!(event["status"], "failed");
    assert_eq!(event["error"]["kind"], "error");
    assert!(event["error"]["message"]
        .as_str()
        .unwrap()
        .contains("always fails"));

    // A call of its own: an async invoke of a function without destinations.
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/hello/invocations?async=true",
            cluster.url
        ))
        .header("X-Callback-Url", receiver.url("/callback"))
        .body(r#"{"name": "callback"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let hello_id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let post = &receiver
        .wait_for("/callback", 1, Duration::from_secs(20))
        .await[0];
    assert_signed(post, &hello_secret);
    assert_eq!(header(post, "ce-id"), format!("{hello_id}:succeeded"));
    let view = outcomes(&cluster, &hello_id, 1).await;
    assert_eq!(view.destinations[0].target, DestinationTarget::Callback);

    // A subject no stream captures gets a plain publish, in binary mode.
    deploy(
        &cluster,
        "plain",
        "echo",
        serde_json::json!({"destinations": {"on_success": "notify.plain"}}),
    )
    .await;
    squall_tests::wait_workers_ready(&cluster, "plain").await;
    let client = cluster.nats_client().await;
    let mut notes = client.subscribe("notify.plain").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(cluster.invoke("plain", "note").await.status(), 200);
    let note = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut notes),
    )
    .await
    .expect("the subject destination got the event")
    .unwrap();
    let headers = note.headers.expect("binary mode headers");
    assert_eq!(
        headers.get("ce-type").map(|v| v.as_str()),
        Some("io.squall.invocation.succeeded")
    );
    assert_eq!(
        headers.get("ce-source").map(|v| v.as_str()),
        Some("/squall/functions/plain")
    );
    let event: serde_json::Value = serde_json::from_slice(&note.payload).unwrap();
    assert_eq!(event["function"], "plain");

    let text = metrics(&cluster).await;
    assert!(
        text.contains(
            r#"squall_destination_deliveries_total{function="echo",target="on_success",outcome="delivered"} 1"#
        ),
        "{text}"
    );

    // Bad input: a callback that is not an http(s) URL, destinations that are neither.
    let response = cluster
        .http
        .post(format!("{}/v1/functions/hello/invocations", cluster.url))
        .header("X-Callback-Url", "ftp://example.com/x")
        .send()
        .await
        .unwrap();
    let (status, body) = squall_tests::json_response(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_callback_url");
    for (destinations, field) in [
        (serde_json::json!({"on_success": "jobs.echo"}), "on_success"),
        (
            serde_json::json!({"on_failure": "ftp://example.com"}),
            "on_failure",
        ),
        (serde_json::json!({"on_success": "events.*"}), "on_success"),
    ] {
        let (status, body) = cluster
            .deploy(
                "bad",
                squall_tests::built().library("hello"),
                Some(serde_json::json!({"destinations": destinations})),
            )
            .await;
        assert_eq!(status, 422, "{destinations}: {body}");
        assert_eq!(body["error"]["code"], "invalid_spec");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("destinations.{field}: ")),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_url_is_recorded_dead_lettered_and_replays_once_it_is_up() {
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: vec![("SQUALL_DESTINATION_RETRY_MS".into(), "1000".into())],
        ..Default::default()
    })
    .await;
    let port = squall_tests::free_port();
    let url = format!("http://127.0.0.1:{port}/late");
    let secret = deploy(
        &cluster,
        "echo",
        "echo",
        serde_json::json!({"destinations": {"on_success": url}}),
    )
    .await;
    squall_tests::wait_workers_ready(&cluster, "echo").await;
    let response = cluster.invoke("echo", "late").await;
    assert_eq!(
        response.status(),
        200,
        "the invocation does not wait for delivery"
    );
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();

    let view = outcomes(&cluster, &id, 1).await;
    assert_eq!(
        view.status.as_str(),
        "succeeded",
        "delivery never changes the invocation"
    );
    let failed = &view.destinations[0];
    assert_eq!(failed.outcome, DeliveryOutcome::Failed, "{failed:?}");
    assert!(failed.tries >= 2, "it was tried again: {failed:?}");
    assert!(
        failed.error.as_deref().unwrap().contains(&port.to_string()),
        "{failed:?}"
    );
    let (status, list) = cluster
        .get_as::<DestinationDeadLetterList>("/v1/dlq/destinations")
        .await;
    assert_eq!(status, 200);
    assert_eq!(list.dead_letters.len(), 1, "{list:?}");
    assert_eq!(list.dead_letters[0].invocation_id, id);
    assert_eq!(list.dead_letters[0].target, DestinationTarget::OnSuccess);
    assert_eq!(
        list.dead_letters[0].event_type,
        "io.squall.invocation.succeeded"
    );
    let text = metrics(&cluster).await;
    assert!(
        text.contains(
            r#"squall_destination_deliveries_total{function="echo",target="on_success",outcome="failed"} 1"#
        ),
        "{text}"
    );

    // The receiver comes up; the replay delivers the same event, signed, without rerunning.
    let receiver = Receiver::start(port).await;
    let response = cluster
        .http
        .post(format!("{}/v1/dlq/destinations/{id}/replay", cluster.url))
        .send()
        .await
        .unwrap();
    let (status, replay) = squall_tests::decode_response::<DestinationReplay>(response).await;
    assert_eq!(status, 200);
    assert_eq!(replay.deliveries.len(), 1);
    assert_eq!(replay.deliveries[0].outcome, DeliveryOutcome::Delivered);
    assert!(replay.deliveries[0].replayed);
    let got = receiver.at("/late");
    assert_eq!(got.len(), 1, "delivered once");
    assert_signed(&got[0], &secret);
    assert_eq!(header(&got[0], "ce-id"), format!("{id}:succeeded"));
    assert_eq!(data(&got[0])["invocation_id"], id.as_str());

    let (_, list) = cluster
        .get_as::<DestinationDeadLetterList>("/v1/dlq/destinations")
        .await;
    assert!(list.dead_letters.is_empty(), "{list:?}");
    let response = cluster
        .http
        .post(format!("{}/v1/dlq/destinations/{id}/replay", cluster.url))
        .send()
        .await
        .unwrap();
    let (status, body) = squall_tests::json_response(response).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "destination_dead_letter_not_found");
    let view = outcomes(&cluster, &id, 2).await;
    assert_eq!(view.attempts, 1, "the function did not run again");
    assert_eq!(view.destinations[1].outcome, DeliveryOutcome::Delivered);
    let (_, page) = cluster
        .get_as::<InvocationPage>("/v1/invocations?function=echo")
        .await;
    assert_eq!(page.items.len(), 1, "{page:?}");
    // Every result the destinations consumer holds is handled: no delivery is still coming.
    deliveries_settled(&cluster, &[]).await;
    assert_eq!(receiver.at("/late").len(), 1);
}

/// The record a pipeline's last event carries: stage c's output echoes stage b's event, whose
/// output echoes stage a's event, whose output echoes the record.
fn record_of(received: &Received) -> String {
    let parse = |text: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str(text.as_str().expect("a string")).expect("JSON")
    };
    let c_event = data(received);
    let c_out = parse(&c_event["output"]);
    assert_eq!(
        c_out["event"]["cloudevent"]["source"],
        "/squall/functions/stage-b"
    );
    let b_event = parse(&c_out["input"]);
    let b_out = parse(&b_event["output"]);
    assert_eq!(
        b_out["event"]["cloudevent"]["type"],
        "io.squall.invocation.succeeded"
    );
    let a_event = parse(&b_out["input"]);
    let a_out = parse(&a_event["output"]);
    a_out["input"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_stage_pipeline_chained_by_destinations_delivers_every_record_once() {
    let cluster = Cluster::start().await;
    let receiver = Receiver::start(0).await;
    deploy(
        &cluster,
        "stage-c",
        "echo",
        serde_json::json!({"destinations": {"on_success": receiver.url("/done")}}),
    )
    .await;
    deploy(
        &cluster,
        "stage-b",
        "echo",
        serde_json::json!({"destinations": {"on_success": "events.pipe.c"}}),
    )
    .await;
    deploy(
        &cluster,
        "stage-a",
        "echo",
        serde_json::json!({"destinations": {"on_success": "events.pipe.b"}}),
    )
    .await;
    for (trigger, function, subject) in [
        ("pipe-b", "stage-b", "events.pipe.b"),
        ("pipe-c", "stage-c", "events.pipe.c"),
    ] {
        let (status, body) = cluster
            .put_json(
                &format!("/v1/triggers/{trigger}"),
                serde_json::json!({"function": function, "subject": subject}),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    for name in ["stage-a", "stage-b", "stage-c"] {
        squall_tests::wait_workers_ready(&cluster, name).await;
    }
    const RECORDS: usize = 20;
    for i in 0..RECORDS {
        cluster
            .submit_async("stage-a", &format!("record-{i}"), 1)
            .await;
    }
    let got = receiver
        .wait_for("/done", RECORDS, Duration::from_secs(60))
        .await;
    // Once every stage's jobs, every trigger's events and every result's deliveries are
    // handled, nothing is in flight that could still arrive.
    deliveries_settled(
        &cluster,
        &[
            ("JOBS", "fn-stage-a"),
            ("EVENTS", "trigger-pipe-b"),
            ("JOBS", "fn-stage-b"),
            ("EVENTS", "trigger-pipe-c"),
            ("JOBS", "fn-stage-c"),
        ],
    )
    .await;
    let got_now = receiver.at("/done");
    assert_eq!(
        got_now.len(),
        got.len(),
        "more than one delivery per record"
    );
    let mut records: Vec<String> = got_now.iter().map(record_of).collect();
    records.sort();
    let mut expected: Vec<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
    expected.sort();
    assert_eq!(records, expected, "every record exactly once");
}
