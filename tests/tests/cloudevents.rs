//! CloudEvents in: the Python CloudEvents SDK sends events to the invoke endpoint in binary,
//! structured and batch modes, NATS clients publish them to subject triggers in both modes,
//! and malformed events are refused with a 400 that names the attribute (in process: no worker
//! is needed for that).

use axum::http::Method;
use squall_api::invocations::CloudEventBatchAccepted;
use squall_api::queries::InvocationPage;
use squall_api::ErrorBody;
use squall_tests::in_process::App;
use squall_tests::{eventually, Cluster};
use std::time::Duration;

/// A Python with the CloudEvents SDK and requests: `$SQUALL_CLOUDEVENTS_PYTHON`, else what
/// `scripts/install-cloudevents` prints last.
fn cloudevents_python() -> String {
    std::env::var("SQUALL_CLOUDEVENTS_PYTHON").unwrap_or_else(|_| {
        let script = squall_tests::workspace_root().join("scripts/install-cloudevents");
        let out = std::process::Command::new(script)
            .output()
            .expect("run scripts/install-cloudevents");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string()
    })
}

/// Sends events with the SDK's HTTP binding and prints one JSON line per request:
/// `{"mode", "status", "id", "body"}`.
const CLIENT: &str = r#"
import datetime, json, sys
import requests
from cloudevents.core.v1.event import CloudEvent
from cloudevents.core.bindings import http

url = sys.argv[1]
when = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.timezone.utc)

def event(id, data, **extra):
    attributes = {"type": "com.example.order.created", "source": "/shop", "id": id,
                  "datacontenttype": "application/json"}
    attributes.update(extra)
    return CloudEvent(attributes=attributes, data=data)

def send(mode, message):
    response = requests.post(url, headers=message.headers, data=message.body, timeout=30)
    print(json.dumps({"mode": mode, "status": response.status_code,
                      "id": response.headers.get("squall-invocation-id"),
                      "body": response.text}), flush=True)

binary = event("o-1", {"n": 1}, subject="order 1", time=when, traceid="abc", priority=5)
send("binary", http.to_binary_event(binary))
send("binary-again", http.to_binary_event(binary))
send("structured", http.to_structured_event(event("o-2", {"n": 2}, subject="order 2")))
batch = [json.loads(http.to_structured_event(event("b-%d" % i, {"i": i})).body) for i in range(3)]
response = requests.post(url, data=json.dumps(batch),
                         headers={"content-type": "application/cloudevents-batch+json"}, timeout=30)
print(json.dumps({"mode": "batch", "status": response.status_code, "id": None,
                  "body": response.text}), flush=True)
"#;

fn run_client(url: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let out = std::process::Command::new(cloudevents_python())
        .arg(&script)
        .arg(url)
        .output()
        .expect("run the CloudEvents client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn by_mode<'a>(lines: &'a [serde_json::Value], mode: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["mode"] == mode)
        .unwrap_or_else(|| panic!("no {mode} line in {lines:?}"))
}

/// The echo function's output of a line: `{"input", "event"}`.
fn echoed(line: &serde_json::Value) -> serde_json::Value {
    assert_eq!(line["status"], 200, "{line}");
    serde_json::from_str(line["body"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_events_reach_the_function_in_binary_structured_and_batch_modes() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("echo", None).await;
    squall_tests::wait_workers_ready(&cluster, "echo").await;
    let url = format!("{}/v1/functions/echo/invocations", cluster.url);
    let lines = tokio::task::spawn_blocking(move || run_client(&url))
        .await
        .unwrap();

    let binary = by_mode(&lines, "binary");
    let out = echoed(binary);
    assert_eq!(out["input"], r#"{"n": 1}"#, "the data is the input: {out}");
    let ce = &out["event"]["cloudevent"];
    assert_eq!(ce["id"], "o-1", "{out}");
    assert_eq!(ce["source"], "/shop");
    assert_eq!(ce["type"], "com.example.order.created");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["subject"], "order 1", "percent-decoded: {ce}");
    assert_eq!(ce["time"], "2026-12-01T10:00:00Z");
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(ce["extensions"]["traceid"], "abc");
    assert_eq!(ce["extensions"]["priority"], "5");
    assert_eq!(out["event"]["source"], "http");

    // No Idempotency-Key: the event's source and id make the second delivery the same invocation.
    let again = by_mode(&lines, "binary-again");
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(
        again["id"], binary["id"],
        "the same event ran twice: {lines:?}"
    );

    let structured = echoed(by_mode(&lines, "structured"));
    assert_eq!(structured["input"], r#"{"n":2}"#, "{structured}");
    assert_eq!(structured["event"]["cloudevent"]["id"], "o-2");
    assert_eq!(structured["event"]["cloudevent"]["subject"], "order 2");

    let batch = by_mode(&lines, "batch");
    assert_eq!(batch["status"], 202, "{batch}");
    let accepted: CloudEventBatchAccepted =
        serde_json::from_str(batch["body"].as_str().unwrap()).unwrap();
    assert_eq!(accepted.count, 3);
    for (i, one) in accepted.invocations.iter().enumerate() {
        let view = cluster
            .wait_terminal(&one.invocation_id, Duration::from_secs(20))
            .await;
        let out: serde_json::Value =
            serde_json::from_str(view.output.as_deref().expect("an output")).unwrap();
        assert_eq!(out["input"], format!(r#"{{"i":{i}}}"#), "{out}");
        assert_eq!(out["event"]["cloudevent"]["id"], format!("b-{i}"));
    }
}

/// Submits an event to `function` through the in-process router; returns status and JSON.
async fn post(
    app: &App,
    function: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let answer = app
        .send(
            Method::POST,
            &format!("/v1/functions/{function}/invocations?async=true"),
            headers,
            body.to_string(),
        )
        .await;
    (answer.status.as_u16(), answer.json())
}

/// A refused request: its headers, its body and the attribute the answer names.
type Case<'a> = (Vec<(&'a str, &'a str)>, String, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_a_400_naming_the_attribute_and_unknown_functions_a_404() {
    let app = App::start().await;
    let echo = std::fs::read(squall_tests::built().library("echo")).unwrap();
    assert_eq!(app.deploy("echo", &echo, None).await.status, 201);
    let required = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];
    let without = |name: &str| -> Vec<(&str, &str)> {
        required
            .iter()
            .copied()
            .filter(|(n, _)| *n != name)
            .collect()
    };
    let mut cases: Vec<Case> = Vec::new();
    for (name, _) in required {
        cases.push((without(name), String::new(), name.trim_start_matches("ce-")));
    }
    let mut old = without("ce-specversion");
    old.push(("ce-specversion", "0.3"));
    cases.push((old, String::new(), "specversion"));
    let mut bad_time = required.to_vec();
    bad_time.push(("ce-time", "yesterday at noon"));
    cases.push((bad_time, String::new(), "time"));
    let mut bad_name = required.to_vec();
    bad_name.push(("ce-Bad_Name", "x"));
    cases.push((bad_name, String::new(), "bad_name"));
    let structured = vec![("content-type", "application/cloudevents+json")];
    cases.push((
        structured.clone(),
        r#"{"specversion":"1.0","source":"/s","type":"t"}"#.into(),
        "id",
    ));
    cases.push((structured.clone(), "not json".into(), "event"));
    cases.push((
        vec![("content-type", "application/cloudevents-batch+json")],
        r#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},
            {"specversion":"1.0","id":"2","source":"/s","type":"t","time":"2026-02-30T00:00:00Z"}]"#
            .into(),
        "time",
    ));
    for (headers, body, attribute) in cases {
        let (status, answer) = post(&app, "echo", &headers, &body).await;
        assert_eq!(status, 400, "{headers:?} {body}: {answer}");
        let error: ErrorBody = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(error.error.code, "invalid_cloudevent", "{answer}");
        assert_eq!(answer["error"]["attribute"], attribute, "{answer}");
        assert!(
            error
                .error
                .message
                .contains(attribute.split('_').next().unwrap())
                || attribute == "event",
            "{answer}"
        );
    }
    // Nothing was accepted by the refused batch.
    let page: InvocationPage = app.get("/v1/invocations?function=echo").await.decode();
    assert!(page.items.is_empty(), "{page:?}");
    let (status, answer) = post(&app, "nope", &required, "").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "function_not_found", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_events_on_a_trigger_subject_reach_the_function_in_both_modes() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("echo", None).await;
    let (status, body) = cluster
        .put_json(
            "/v1/triggers/orders",
            serde_json::json!({"function": "echo", "subject": "events.orders.>"}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let client = cluster.nats_client().await;
    let js = async_nats::jetstream::new(client);
    let mut binary = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "n-1"),
        ("ce-source", "/nats"),
        ("ce-type", "order.created"),
        ("ce-subject", "order%207"),
        ("content-type", "text/plain"),
    ] {
        binary.insert(name, value);
    }
    // Twice: the same event runs once.
    for _ in 0..2 {
        js.publish_with_headers("events.orders.binary", binary.clone(), "seven".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut structured = async_nats::HeaderMap::new();
    structured.insert("Content-Type", "application/cloudevents+json");
    let event = r#"{"specversion":"1.0","id":"n-2","source":"/nats","type":"order.paid","data":{"paid":true}}"#;
    js.publish_with_headers("events.orders.structured", structured, event.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let items = eventually(
        Duration::from_secs(30),
        "both events' invocations",
        async || {
            let (_, page) = cluster
                .get_as::<InvocationPage>("/v1/invocations?function=echo&status=succeeded")
                .await;
            match page.items.len() >= 2 {
                true => Ok(page.items),
                false => Err(page),
            }
        },
    )
    .await;
    let mut seen = std::collections::BTreeMap::new();
    for item in &items {
        let view = cluster
            .wait_terminal(&item.invocation_id, Duration::from_secs(5))
            .await;
        let out: serde_json::Value = serde_json::from_str(view.output.as_deref().unwrap()).unwrap();
        let ce = out["event"]["cloudevent"].clone();
        seen.insert(ce["id"].as_str().unwrap().to_string(), out);
    }
    let binary = &seen["n-1"];
    assert_eq!(binary["input"], "seven");
    assert_eq!(binary["event"]["cloudevent"]["subject"], "order 7");
    assert_eq!(
        binary["event"]["cloudevent"]["datacontenttype"],
        "text/plain"
    );
    assert_eq!(binary["event"]["subject"], "events.orders.binary");
    let structured = &seen["n-2"];
    assert_eq!(structured["input"], r#"{"paid":true}"#);
    assert_eq!(structured["event"]["cloudevent"]["type"], "order.paid");
    // The repeated binary event did not run a second time: once the trigger has acknowledged
    // all three messages and echo's consumer has nothing left, it delivered exactly two jobs.
    let events = js.get_stream("EVENTS").await.unwrap();
    let jobs = js.get_stream("JOBS").await.unwrap();
    let delivered = eventually(
        Duration::from_secs(20),
        "the trigger's three messages handled and echo's jobs done",
        async || {
            let trigger = events.consumer_info("trigger-orders").await.unwrap();
            let function = jobs.consumer_info("fn-echo").await.unwrap();
            let settled = trigger.delivered.stream_sequence >= 3
                && trigger.num_pending == 0
                && trigger.num_ack_pending == 0
                && function.num_pending == 0
                && function.num_ack_pending == 0;
            match settled {
                true => Ok(function.delivered.consumer_sequence),
                false => Err(format!(
                    "trigger: {} pending, {} unacknowledged; echo: {} pending, {} unacknowledged",
                    trigger.num_pending,
                    trigger.num_ack_pending,
                    function.num_pending,
                    function.num_ack_pending
                )),
            }
        },
    )
    .await;
    assert_eq!(
        delivered, 2,
        "echo's consumer delivered a job per distinct event"
    );
    let (_, page) = cluster
        .get_as::<InvocationPage>("/v1/invocations?function=echo")
        .await;
    assert_eq!(page.items.len(), 2, "{page:?}");
}
