//! Python functions through real workers: bundles deployed and checked at deploy, Lambda's `handler(event, context)` with the context, logs, errors, typed retries and host services, C extensions and numpy from requirements.txt, and a new version in a fresh process.

use futures::StreamExt as _;
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_tests::{bundle, check_web_function, eventually, Cluster};
use std::time::Duration;

const PROBE: &str = r#"
import json, math, logging
import squall

def handler(event, context):
    op = event.get("op") if isinstance(event, dict) else None
    if op == "context":
        return {
            "function": context.function_name,
            "invocation": context.invocation_id,
            "attempt": context.attempt,
            "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 5000,
            "config": context.config.get("greeting"),
            "secret_names": sorted(context.secrets.keys()),
            "sqrt": math.sqrt(16.0),
        }
    if op == "log":
        print("printed line")
        context.logger.info("logged line")
        logging.getLogger("app").warning("warned line")
        return "ok"
    if op == "raise":
        raise ValueError("bad input " + str(event.get("n")))
    if op == "retry":
        if context.attempt == 1:
            raise squall.Retry(after_ms=50)
        return {"attempt": context.attempt}
    if op == "kv":
        context.kv_put("greeting", "hello", ttl_ms=60000)
        got = context.kv_get("greeting")
        context.kv_delete("greeting")
        return {"got": got.decode(), "after_delete": context.kv_get("greeting")}
    if op == "publish":
        context.publish("events.py.done", json.dumps({"from": context.function_name}))
        return "published"
    if isinstance(event, (bytes, bytearray)):
        return bytes(reversed(event))
    return {"echo": event}
"#;

async fn deploy_probe(cluster: &Cluster, name: &str) {
    let (status, body) = cluster
        .deploy_bytes(
            name,
            bundle("python3.11", "app.handler", &[("app.py", PROBE)]),
            Some(serde_json::json!({
                "timeout_ms": 5000, "max_attempts": 3,
                "config": {"greeting": "hi"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["config"]["concurrency"], 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_handler_gets_the_context_logs_errors_retries_and_host_services() {
    let cluster = Cluster::start().await;
    deploy_probe(&cluster, "py-probe").await;
    squall_tests::wait_workers_ready(&cluster, "py-probe").await;

    let (status, id, text) = cluster
        .call_json("py-probe", serde_json::json!({"op": "context"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["function"], "py-probe");
    assert_eq!(answer["invocation"], id.as_str());
    assert_eq!(answer["attempt"], 1);
    assert_eq!(answer["remaining_ok"], true, "{answer}");
    assert_eq!(answer["config"], "hi");
    assert_eq!(answer["sqrt"], 4.0, "a C extension module imports");

    let (status, id, _) = cluster
        .call_json("py-probe", serde_json::json!({"op": "log"}))
        .await;
    assert_eq!(status, 200);
    let logs = cluster.finished(&id).await.logs;
    let text: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    for line in ["printed line", "logged line", "warned line"] {
        assert!(text.iter().any(|t| t.contains(line)), "{line} in {text:?}");
    }

    let (status, id, text) = cluster
        .call_json("py-probe", serde_json::json!({"op": "raise", "n": 7}))
        .await;
    assert_ne!(status, 200, "{text}");
    let failed = cluster.finished(&id).await;
    assert_eq!(failed.status, InvocationStatus::Failed);
    let error = failed.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Error);
    assert_eq!(error.message, "ValueError: bad input 7");
    assert_eq!(
        failed.attempts, 1,
        "an exception is a function error, as SQUALL_ERROR is"
    );
    let traceback = failed
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(traceback.contains("Traceback"), "{traceback}");
    assert!(traceback.contains("app.py"), "{traceback}");

    let (status, id, text) = cluster
        .call_json("py-probe", serde_json::json!({"op": "retry"}))
        .await;
    let retried = cluster.finished(&id).await;
    assert_eq!(
        retried.status,
        InvocationStatus::Succeeded,
        "{status} {text}"
    );
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.output.as_deref(), Some(r#"{"attempt":2}"#));

    let (status, _, text) = cluster
        .call_json("py-probe", serde_json::json!({"op": "kv"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let kv: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        kv,
        serde_json::json!({"got": "hello", "after_delete": null})
    );

    let client = cluster.nats_client().await;
    let mut events = client.subscribe("events.py.done").await.unwrap();
    // The subscription is the server's before the function publishes.
    client.flush().await.unwrap();
    let (status, _, text) = cluster
        .call_json("py-probe", serde_json::json!({"op": "publish"}))
        .await;
    assert_eq!((status, text.as_str()), (200, "published"));
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the publish arrives")
        .unwrap();
    assert_eq!(&event.payload[..], br#"{"from": "py-probe"}"#);

    // Bytes that are not JSON arrive as bytes and bytes go back as they are.
    let response = cluster.invoke("py-probe", vec![0xffu8, 0x00, 0x01]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], &[0x01, 0x00, 0xff]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_with_a_syntax_error_or_no_handler_is_refused_at_deploy_naming_file_and_line() {
    let cluster = Cluster::start().await;
    let cases = [
        (
            bundle(
                "python3.11",
                "app.handler",
                &[
                    ("app.py", "import lib\n"),
                    ("lib.py", "def f(:\n    pass\n"),
                ],
            ),
            "lib.py:1",
        ),
        (
            bundle(
                "python3.11",
                "app.handler",
                &[("app.py", "def other(e, c):\n    return 1\n")],
            ),
            "handler",
        ),
        (
            bundle(
                "python3.11",
                "main.handler",
                &[("app.py", "def handler(e, c): pass\n")],
            ),
            "main.py",
        ),
    ];
    for (bytes, names) in cases {
        let (status, body) = cluster.deploy_bytes("py-bad", bytes, None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_artifact", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{names} in {message}");
    }
    let (status, _) = cluster.get_json("/v1/functions/py-bad").await;
    assert_eq!(status, 404, "nothing was deployed");
    // A corrupt bundle is refused as one.
    let (status, body) = cluster
        .deploy_bytes("py-bad", vec![0x1f, 0x8b, 8, 0, 1, 2, 3], None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("corrupt"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_of_a_python_function_runs_its_own_modules_in_a_fresh_process() {
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let _fleet = cluster.start_fleet("fleet", &["--min", "1", "--interval-ms", "100"]);
    let version = |n: u32| {
        bundle(
            "python3.11",
            "app.handler",
            &[
                (
                    "app.py",
                    "import lib\n\ndef handler(event, context):\n    return lib.VALUE\n",
                ),
                ("lib.py", &format!("VALUE = {n}\n")),
            ],
        )
    };
    let (status, body) = cluster.deploy_bytes("py-versions", version(1), None).await;
    assert_eq!(status, 201, "{body}");
    squall_tests::wait_workers_ready(&cluster, "py-versions").await;
    let (status, _, text) = cluster
        .call_json("py-versions", serde_json::json!({}))
        .await;
    assert_eq!((status, text.as_str()), (200, "1"));
    let (status, body) = cluster.deploy_bytes("py-versions", version(2), None).await;
    assert_eq!(status, 201, "{body}");
    eventually(
        Duration::from_secs(30),
        "version 2's module to answer",
        async || {
            let (status, _, text) = cluster
                .call_json("py-versions", serde_json::json!({}))
                .await;
            match (status, text.as_str()) {
                (200, "2") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_web_function_gets_the_request_and_answers_with_status_headers_and_cookies() {
    let cluster = Cluster::start().await;
    let app = r#"
import json

def handler(event, context):
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-path": event["path"]},
        "cookies": ["seen=1; Path=/"],
        "body": json.dumps({"method": event["method"], "query": event["query"],
                            "body": event["body"], "agent": event["headers"].get("user-agent")}),
    }
"#;
    check_web_function(
        &cluster,
        "py-web",
        bundle("python3.11", "app.handler", &[("app.py", app)]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_function_past_its_memory_ends_out_of_memory_in_a_confined_process() {
    let mut cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let app = "def handler(event, context):\n    \
               if event.get('hog'):\n        blocks = [bytearray(16 << 20) for _ in range(64)]\n        \
               return len(blocks)\n    return 'fine'\n";
    let (status, body) = cluster
        .deploy_bytes(
            "py-hog",
            bundle("python3.11", "app.handler", &[("app.py", app)]),
            Some(serde_json::json!({"memory_mb": 128, "max_attempts": 3})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    cluster.add_function_worker("py-hog", &["--sandbox", "auto"]);
    squall_tests::wait_workers_ready(&cluster, "py-hog").await;
    let (_, id, _) = cluster
        .call_json("py-hog", serde_json::json!({"hog": true}))
        .await;
    let view = cluster.finished(&id).await;
    let error = view.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::OutOfMemory, "{}", error.message);
    assert_eq!(view.attempts, 1, "out_of_memory is not retried");
}

/// A Python handler that streams: a caller that asks for NDJSON gets each line as the handler
/// writes it, and what the handler returns comes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_handler_streams_its_output_to_a_caller_that_asks_for_a_stream() {
    let cluster = Cluster::start().await;
    let app = r#"
import json, time

def handler(event, context):
    for k in range(3):
        context.stream_write(json.dumps({"k": k}) + "\n")
        time.sleep(0.2)
    return b'{"done":true}\n'
"#;
    let (status, body) = cluster
        .deploy_bytes(
            "py-stream",
            bundle("python3.11", "app.handler", &[("app.py", app)]),
            Some(serde_json::json!({"timeout_ms": 10000})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/py-stream/invocations",
            cluster.url
        ))
        .header("accept", "application/x-ndjson")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut pieces = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        pieces.push((std::time::Instant::now(), piece.expect("a clean stream")));
    }
    let text: String = pieces
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(
        text,
        "{\"k\": 0}\n{\"k\": 1}\n{\"k\": 2}\n{\"done\":true}\n"
    );
    let spread = pieces.last().unwrap().0 - pieces[0].0;
    assert!(
        spread >= Duration::from_millis(300),
        "the lines arrived at once ({spread:?})"
    );
}
