//! Destinations and callbacks: a real HTTP receiver gets the CloudEvent of each terminal state,
//! signed the Standard Webhooks way (checked by an independent verifier, across a secret
//! rotation), a three-stage pipeline chains functions through destinations and subject
//! triggers, and an unreachable URL ends as a recorded failure and a destination dead letter
//! that replays once the receiver is up. The receivers listen on loopback, which the
//! dispatchers here allow on purpose (`SQUALL_EGRESS_ALLOW`).

use base64::Engine as _;
use squall_api::invocations::{
    DeliveryOutcome, DestinationDeadLetterList, DestinationReplay, DestinationTarget,
};
use squall_api::queries::InvocationPage;
use squall_tests::{eventually, Cluster, ClusterOptions, Received, Receiver};
use std::time::Duration;

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", received.headers))
        .to_str()
        .unwrap()
}

/// The loopback receivers' allowance, for every dispatcher of these tests.
fn allow_loopback() -> Vec<(String, String)> {
    vec![("SQUALL_EGRESS_ALLOW".into(), "127.0.0.1/32".into())]
}

/// Whether a POST's Standard Webhooks signature verifies with `secret`, asked of the verifier
/// in `fixtures/verify_webhook.py` (written from the specification, apart from the
/// dispatcher's code); `Err` says why not.
fn verify(received: &Received, secret: &str) -> Result<(), String> {
    let delivery = serde_json::json!({
        "id": header(received, "webhook-id"),
        "timestamp": header(received, "webhook-timestamp"),
        "signature": header(received, "webhook-signature"),
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&received.body),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/verify_webhook.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the webhook verifier");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(delivery.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    match output.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&output.stdout).trim().to_string()),
    }
}

/// Checks a POST's Standard Webhooks headers against the function's destination secret; the
/// body-only signature of earlier releases is gone.
fn assert_signed(received: &Received, secret: &str) {
    assert!(secret.starts_with("whsec_"), "{secret}");
    if let Err(why) = verify(received, secret) {
        panic!("the POST does not verify: {why}: {:?}", received.headers);
    }
    assert_eq!(header(received, "webhook-id"), header(received, "ce-id"));
    assert!(received.headers.get("squall-signature").is_none());
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
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: allow_loopback(),
        ..Default::default()
    })
    .await;
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
    let mut dispatcher_env = allow_loopback();
    dispatcher_env.push(("SQUALL_DESTINATION_RETRY_MS".into(), "1000".into()));
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env,
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
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: allow_loopback(),
        ..Default::default()
    })
    .await;
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

/// An operator secret for the rotation test.
fn operator_secret(fill: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([fill; 32])
    )
}

/// Invokes `echo` and returns the POST its `on_success` destination got at `path`.
async fn delivered(cluster: &Cluster, receiver: &Receiver, path: &str, n: usize) -> Received {
    assert_eq!(cluster.invoke("echo", "signed").await.status(), 200);
    receiver
        .wait_for(path, n, Duration::from_secs(20))
        .await
        .pop()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_follow_standard_webhooks_and_survive_a_secret_rotation() {
    let (old, new) = (operator_secret(0xa1), operator_secret(0xb2));
    let mut dispatcher_env = allow_loopback();
    dispatcher_env.push(("SQUALL_WEBHOOK_SECRETS".into(), old.clone()));
    let mut cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env,
        ..Default::default()
    })
    .await;
    let receiver = Receiver::start(0).await;
    let spec = serde_json::json!({"destinations": {"on_success": receiver.url("/hook")}});
    let key_old = deploy(&cluster, "echo", "echo", spec.clone()).await;
    // The function's key is derived from the operator's secret, never the secret itself.
    assert_ne!(key_old, old);
    squall_tests::wait_workers_ready(&cluster, "echo").await;
    let post = delivered(&cluster, &receiver, "/hook", 1).await;
    assert_signed(&post, &key_old);
    let signatures = header(&post, "webhook-signature");
    assert_eq!(signatures.split(' ').count(), 1, "{signatures}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent: u64 = header(&post, "webhook-timestamp").parse().unwrap();
    assert!(sent.abs_diff(now) < 120, "{sent} vs {now}");
    // A tampered body or another key does not verify.
    let mut tampered = post.clone();
    tampered.body = bytes::Bytes::from_static(br#"{"status":"forged"}"#);
    assert!(verify(&tampered, &key_old).is_err());
    assert!(verify(&post, &operator_secret(0xc3)).is_err());

    // A rotation: the new secret first, the old one still signing. The deploy answer shows
    // the function's new key; receivers holding the old one keep verifying meanwhile.
    let rotating = format!("{new},{old}");
    cluster
        .restart_dispatcher(&["--webhook-secret", &rotating])
        .await;
    let key_new = deploy(&cluster, "echo", "echo", spec.clone()).await;
    assert_ne!(key_new, key_old);
    let post = delivered(&cluster, &receiver, "/hook", 2).await;
    assert_eq!(header(&post, "webhook-signature").split(' ').count(), 2);
    assert_signed(&post, &key_old);
    assert_signed(&post, &key_new);

    // The rotation ends: only the new key signs.
    cluster
        .restart_dispatcher(&["--webhook-secret", &new])
        .await;
    let post = delivered(&cluster, &receiver, "/hook", 3).await;
    assert_signed(&post, &key_new);
    assert!(verify(&post, &key_old).is_err());
}
