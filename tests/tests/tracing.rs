//! End-to-end traces: the dispatcher and worker processes export OTLP spans to an in-process
//! collector, and one invocation is one trace with correct parent links, across retries and
//! from raw NATS publishers too.

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use squall_tests::{eventually, Cluster, ClusterOptions};
use std::time::Duration;

/// Collects spans until `done` holds for the spans of trace `trace_id`.
async fn spans_of(
    collector: &mut FakeCollectorServer,
    seen: &mut Vec<ExportedSpan>,
    trace_id: &str,
    done: impl Fn(&[&ExportedSpan]) -> bool,
) -> Vec<ExportedSpan> {
    eventually(
        Duration::from_secs(30),
        format_args!("trace {trace_id} to be complete"),
        async || {
            // Drain often: the collector's queue is small and blocks exporters when full.
            seen.extend(
                collector
                    .exported_spans(1, Duration::from_millis(200))
                    .await,
            );
            let trace: Vec<&ExportedSpan> =
                seen.iter().filter(|s| s.trace_id == trace_id).collect();
            match done(&trace) {
                true => Ok(trace.into_iter().cloned().collect::<Vec<_>>()),
                false => Err(trace
                    .iter()
                    .map(|s| (s.name.clone(), s.span_id.clone(), s.parent_span_id.clone()))
                    .collect::<Vec<_>>()),
            }
        },
    )
    .await
}

fn named<'a>(spans: &'a [ExportedSpan], name: &str) -> Vec<&'a ExportedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one {name} span: {found:#?}");
    found[0]
}

/// The attribute's value as exported (the collector renders values with Debug).
fn attribute(span: &ExportedSpan, key: &str) -> String {
    span.attributes.get(key).cloned().unwrap_or_default()
}

fn count(spans: &[&ExportedSpan], name: &str) -> usize {
    spans.iter().filter(|s| s.name == name).count()
}

fn random_hex(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&format!(
            "{:032x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ));
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_invocation_from_http_through_every_attempt() {
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let cluster = Cluster::start_with(ClusterOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Default::default()
    })
    .await;
    cluster.deploy_example("sleep", None).await;
    let mut seen = Vec::new();

    // A client's traceparent is continued through dispatcher and worker.
    let (trace_id, client_span) = (random_hex(32), random_hex(16));
    let response = cluster
        .http
        .post(format!("{}/v1/functions/sleep/invocations", cluster.url))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .body("0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let spans = spans_of(&mut collector, &mut seen, &trace_id, |t| {
        [
            "squall.invoke",
            "squall.publish",
            "squall.queue_wait",
            "squall.attempt",
            "squall.result",
        ]
        .iter()
        .all(|n| count(t, n) == 1)
    })
    .await;
    let invoke = one(&spans, "squall.invoke");
    let publish = one(&spans, "squall.publish");
    let queue_wait = one(&spans, "squall.queue_wait");
    let attempt = one(&spans, "squall.attempt");
    let result = one(&spans, "squall.result");
    assert_eq!(
        invoke.parent_span_id, client_span,
        "continues the client's trace"
    );
    assert_eq!(publish.parent_span_id, invoke.span_id);
    assert_eq!(queue_wait.parent_span_id, publish.span_id);
    assert_eq!(attempt.parent_span_id, publish.span_id);
    assert_eq!(result.parent_span_id, attempt.span_id);
    assert!(attribute(invoke, "squall.function").contains("sleep"));
    assert!(attribute(attempt, "squall.invocation_id").contains(&id));
    assert!(attribute(attempt, "squall.outcome").contains("succeeded"));
    assert!(attribute(attempt, "squall.attempt").contains('1'));
    assert!(attribute(attempt, "squall.version").contains("sha256:"));
    assert!(queue_wait.start_time_unix_nano <= queue_wait.end_time_unix_nano);
    // The function ran under the attempt span and saw it as its traceparent.
    let (_, logs) = cluster
        .get_json(&format!("/v1/invocations/{id}/logs"))
        .await;
    let line = logs["logs"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(&format!("00-{trace_id}-{}-01", attempt.span_id)),
        "function saw the attempt's trace context: {line}"
    );

    // Without a client traceparent, every attempt of a retried invocation shares one trace,
    // each under the one publish span, ending in a dead letter.
    cluster
        .deploy_example(
            "fail",
            Some(serde_json::json!({
                "max_attempts": 3,
                "backoff": { "initial_ms": 10, "max_ms": 10, "multiplier": 1.0 }
            })),
        )
        .await;
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/fail/invocations?async=true",
            cluster.url
        ))
        .body(r#"{"retry": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let done = cluster.wait_terminal(&id, Duration::from_secs(30)).await;
    let trace_id = eventually(
        Duration::from_secs(30),
        format_args!("an invoke span for {id}"),
        async || {
            seen.extend(
                collector
                    .exported_spans(1, Duration::from_millis(200))
                    .await,
            );
            seen.iter()
                .find(|s| {
                    s.name == "squall.invoke" && attribute(s, "squall.invocation_id").contains(&id)
                })
                .map(|s| s.trace_id.clone())
        },
    )
    .await;
    let spans = spans_of(&mut collector, &mut seen, &trace_id, |t| {
        count(t, "squall.attempt") == 3 && count(t, "squall.dead_letter") == 1
    })
    .await;
    let publish = one(&spans, "squall.publish");
    let mut attempts = named(&spans, "squall.attempt");
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(
            attempt.parent_span_id, publish.span_id,
            "attempt {n} under the publish"
        );
        assert!(attribute(attempt, "squall.attempt").contains(&(n + 1).to_string()));
    }
    assert!(attribute(attempts[0], "squall.outcome").contains("retrying"));
    assert!(attribute(attempts[2], "squall.outcome").contains(done.status.as_str()));
    let dead = one(&spans, "squall.dead_letter");
    assert_eq!(dead.parent_span_id, attempts[2].span_id);

    // A raw NATS publisher's traceparent is continued by the worker.
    let (trace_id, publisher_span) = (random_hex(32), random_hex(16));
    let client = cluster.nats_client().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-{publisher_span}-01").as_str(),
    );
    let js = async_nats::jetstream::new(client);
    js.publish_with_headers("jobs.sleep", headers, "0".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let spans = spans_of(&mut collector, &mut seen, &trace_id, |t| {
        count(t, "squall.attempt") == 1 && count(t, "squall.result") == 1
    })
    .await;
    assert_eq!(one(&spans, "squall.attempt").parent_span_id, publisher_span);
    assert_eq!(
        one(&spans, "squall.queue_wait").parent_span_id,
        publisher_span
    );

    // Host calls (state and events) are spans of the attempt.
    cluster.deploy_example("counter", None).await;
    let trace_id = random_hex(32);
    let response = cluster
        .http
        .post(format!("{}/v1/functions/counter/invocations", cluster.url))
        .header(
            "traceparent",
            format!("00-{trace_id}-{}-01", random_hex(16)),
        )
        .body(r#"{"name": "traced"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spans = spans_of(&mut collector, &mut seen, &trace_id, |t| {
        [
            "squall.host.kv_get",
            "squall.host.kv_put",
            "squall.host.publish",
        ]
        .iter()
        .all(|n| count(t, n) == 1)
            && count(t, "squall.attempt") == 1
    })
    .await;
    let attempt = one(&spans, "squall.attempt");
    for name in [
        "squall.host.kv_get",
        "squall.host.kv_put",
        "squall.host.publish",
    ] {
        let call = one(&spans, name);
        assert_eq!(
            call.parent_span_id, attempt.span_id,
            "{name} under the attempt"
        );
        assert!(attribute(call, "squall.outcome").contains("ok"), "{name}");
    }
}

/// Reads one HTTP request's head from `stream` and answers 200 with an empty body.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_http_protobuf_by_default() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let cluster = Cluster::start_with(ClusterOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Default::default()
    })
    .await;
    cluster.deploy_example("hello", None).await;
    assert_eq!(cluster.invoke("hello", "{}").await.status(), 200);
    let head = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let head = read_request_head(&mut stream).await;
            if !head.is_empty() {
                return head;
            }
        }
    })
    .await
    .expect("an OTLP/HTTP export request");
    assert!(head.starts_with("post /v1/traces "), "{head}");
    assert!(
        head.contains("content-type: application/x-protobuf"),
        "{head}"
    );
}
