//! Batch submission (`POST /v1/functions/{name}/batch` and `squall invoke --batch`): lines become
//! invocations in order, bad input is refused whole, and an Idempotency-Key covers the batch.

use axum::http::Method;
use squall_api::invocations::BatchAccepted;
use squall_api::{ErrorBody, InvocationStatus};
use squall_broker::names::JOBS_STREAM;
use squall_tests::in_process::App;
use squall_tests::{built, json_response, squall, workspace_root, Cluster, ClusterOptions};
use std::process::Command;
use std::time::Duration;

/// POSTs `body` to the batch endpoint of `function`, with an optional Idempotency-Key.
async fn batch(
    cluster: &Cluster,
    function: &str,
    body: impl Into<reqwest::Body>,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = cluster
        .http
        .post(format!("{}/v1/functions/{function}/batch", cluster.url))
        .header("content-type", "application/x-ndjson")
        .body(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    json_response(request.send().await.expect("batch request")).await
}

/// A 202 answer to a batch, decoded.
fn accepted(body: &serde_json::Value) -> BatchAccepted {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not a batch answer ({e}): {body}"))
}

/// A refused batch's error body, decoded.
fn refusal(body: &serde_json::Value) -> ErrorBody {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not an error body ({e}): {body}"))
}

fn ids_of(body: &serde_json::Value) -> Vec<String> {
    accepted(body).invocation_ids
}

/// The line number a refused batch's error names.
fn line(body: &serde_json::Value) -> Option<u64> {
    refusal(body)
        .error
        .extra
        .get("line")
        .and_then(serde_json::Value::as_u64)
}

/// How many messages JOBS has ever stored (its last sequence): consumed jobs count too.
async fn jobs_stored(cluster: &Cluster) -> u64 {
    jobs_stored_in(cluster.nats_client().await).await
}

/// `jobs_stored` through a client of the broker.
async fn jobs_stored_in(client: async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(JOBS_STREAM).await.expect("JOBS stream");
    stream.info().await.expect("JOBS info").state.last_sequence
}

/// `batch` through the in-process router.
async fn batch_in(
    app: &App,
    function: &str,
    body: impl Into<axum::body::Body>,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut headers = vec![("content-type", "application/x-ndjson")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let answer = app
        .send(
            Method::POST,
            &format!("/v1/functions/{function}/batch"),
            &headers,
            body,
        )
        .await;
    (answer.status.as_u16(), answer.json())
}

/// What the `echo` example answered for an invocation: its input text and event.
async fn echoed(cluster: &Cluster, id: &str) -> serde_json::Value {
    let view = cluster.wait_terminal(id, Duration::from_secs(30)).await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    serde_json::from_str(view.output.as_deref().expect("text output")).expect("echo output")
}

fn message(body: &serde_json::Value) -> String {
    refusal(body).error.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_one_invocation_per_line_in_line_order() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("echo", None).await;
    let lines: Vec<String> = (0..40)
        .map(|i| match i % 3 {
            0 => format!("{{\"n\": {i}}}"),
            1 => format!(" [{i}, \"x\"] "),
            _ => format!("\"line {i}\""),
        })
        .collect();
    // Mixed line endings and a final newline are all fine.
    let mut body = String::new();
    for (i, line) in lines.iter().enumerate() {
        body.push_str(line);
        body.push_str(if i % 2 == 0 { "\n" } else { "\r\n" });
    }
    let (status, answer) = batch(&cluster, "echo", body, None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(accepted(&answer).count, 40);
    let ids = ids_of(&answer);
    assert_eq!(ids.len(), 40);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted, ids,
        "UUIDv7 ids, distinct and sorting in line order"
    );
    for (id, line) in ids.iter().zip(&lines) {
        let out = echoed(&cluster, id).await;
        assert_eq!(
            out["input"],
            line.as_str(),
            "the payload is the line as sent"
        );
        assert_eq!(out["event"]["source"], "http");
    }
    assert_eq!(jobs_stored(&cluster).await, 40);
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "squall_dispatcher_invocations_accepted_total{function=\"echo\",source=\"http\"} 40"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_whole_and_publish_nothing() {
    // In process, with no worker: every job published stays in JOBS, so the count below sees
    // all of them.
    let app = App::start_with(|config| {
        config.max_payload = 1000;
        config.batch.max_lines = 5;
        config.batch.max_bytes = 65536;
    })
    .await;
    let echo = std::fs::read(built().library("echo")).unwrap();
    assert_eq!(app.deploy("echo", &echo, None).await.status, 201);

    for empty in ["", "\n", " \r\n\n"] {
        let (status, body) = batch_in(&app, "echo", empty, None).await;
        assert_eq!(status, 400, "{empty:?}: {body}");
        assert_eq!(refusal(&body).error.code, "empty_batch");
    }

    let (status, body) = batch_in(&app, "echo", "{\"a\": 1}\n2\n{\"b\": \n4\n", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(refusal(&body).error.code, "invalid_line");
    assert_eq!(line(&body), Some(3));
    assert!(
        message(&body).starts_with("line 3 is not valid JSON"),
        "{body}"
    );

    let (status, body) = batch_in(&app, "echo", "1\n\n3\n", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(refusal(&body).error.code, "invalid_line");
    assert_eq!(
        message(&body),
        "line 2 is blank; every line must hold one JSON value"
    );

    let (status, body) = batch_in(&app, "echo", "1\n2\n3\n4\n5\n6\n", None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(refusal(&body).error.code, "too_many_lines");
    assert!(message(&body).contains("more than 5 lines"), "{body}");

    let long = format!("1\n\"{}\"\n3\n", "x".repeat(1200));
    let (status, body) = batch_in(&app, "echo", long, None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(refusal(&body).error.code, "line_too_large");
    assert_eq!(line(&body), Some(2));
    assert!(
        message(&body).contains("larger than the payload limit of 1000 bytes"),
        "{body}"
    );

    let huge = format!("\"{}\"\n", "y".repeat(100_000));
    let (status, body) = batch_in(&app, "echo", huge, None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(refusal(&body).error.code, "payload_too_large");
    assert!(message(&body).contains("65536 bytes"), "{body}");

    let (status, body) = batch_in(&app, "nosuch", "1\n", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(refusal(&body).error.code, "function_not_found");

    let (status, body) = batch_in(&app, "echo", "1\n", Some("")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(refusal(&body).error.code, "invalid_idempotency_key");

    assert_eq!(
        jobs_stored_in(app.state.broker.client.clone()).await,
        0,
        "a refused batch publishes nothing"
    );
    // The count does see published jobs.
    let (status, body) = batch_in(&app, "echo", "1\n2\n3\n4\n5", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(jobs_stored_in(app.state.broker.client.clone()).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_ids_and_runs_each_line_once() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("echo", None).await;
    let body = "\"a\"\n\"b\"\n\"c\"\n";
    let (status, first) = batch(&cluster, "echo", body, Some("import-1")).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = batch(&cluster, "echo", body, Some("import-1")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(ids_of(&first), ids_of(&again));
    for (id, input) in ids_of(&first).iter().zip(["\"a\"", "\"b\"", "\"c\""]) {
        assert_eq!(echoed(&cluster, id).await["input"], input);
    }
    // A third time, after they ran: still the same ids, and still no new job.
    let (_, third) = batch(&cluster, "echo", body, Some("import-1")).await;
    assert_eq!(ids_of(&first), ids_of(&third));
    assert_eq!(jobs_stored(&cluster).await, 3, "each line was stored once");

    let (status, other) = batch(&cluster, "echo", "\"z\"\n", Some("import-1")).await;
    assert_eq!(status, 422, "{other}");
    assert_eq!(refusal(&other).error.code, "idempotency_key_reused");

    // A single invoke with the same key is another invocation.
    let response = cluster
        .http
        .post(format!("{}/v1/functions/echo/invocations", cluster.url))
        .header("idempotency-key", "import-1")
        .body("\"single\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let single = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!ids_of(&first).contains(&single));
    let (_, fresh) = batch(&cluster, "echo", body, Some("import-2")).await;
    assert!(ids_of(&fresh).iter().all(|id| !ids_of(&first).contains(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_invoke_batch_submits_a_file_in_chunks_and_names_bad_lines_by_file_line() {
    let cluster = Cluster::start_with(ClusterOptions {
        max_payload: Some(1000),
        ..Default::default()
    })
    .await;
    cluster.deploy_example("echo", None).await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=25).map(|i| format!("{{\"row\": {i}}}")).collect();
    let file = dir.path().join("rows.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let path = file.to_str().unwrap();

    let run = squall(
        &cluster.url,
        &[
            "invoke",
            "echo",
            "--batch",
            path,
            "--batch-size",
            "10",
            "--idempotency-key",
            "rows",
        ],
    )
    .await;
    assert!(run.succeeded(), "{}", run.stderr);
    let ids: Vec<String> = run.stdout.lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 25, "{}", run.stdout);
    for (id, line) in ids.iter().zip(&lines) {
        assert_eq!(echoed(&cluster, id).await["input"], line.as_str());
    }
    // Rerunning the same command maps every chunk to its first invocations.
    let again = squall(
        &cluster.url,
        &[
            "--json",
            "invoke",
            "echo",
            "--batch",
            path,
            "--batch-size",
            "10",
            "--idempotency-key",
            "rows",
        ],
    )
    .await;
    assert!(again.succeeded(), "{}", again.stderr);
    let json: Vec<String> = serde_json::from_str(&again.stdout).expect("a JSON array of ids");
    assert_eq!(json, ids);
    assert_eq!(jobs_stored(&cluster).await, 25);

    // A line that is not JSON is found before anything is sent.
    let mut bad = lines.clone();
    bad[16] = "{\"row\": ".into();
    std::fs::write(&file, bad.join("\n")).unwrap();
    let run = squall(
        &cluster.url,
        &["invoke", "echo", "--batch", path, "--batch-size", "10"],
    )
    .await;
    assert!(!run.succeeded());
    assert!(
        run.stderr.contains("line 17 is not valid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was submitted"),
        "{}",
        run.stderr
    );
    assert_eq!(jobs_stored(&cluster).await, 25);

    // A line the server refuses (over its payload limit) is named by its line in the file.
    let mut long = lines.clone();
    long[14] = format!("\"{}\"", "x".repeat(1500));
    std::fs::write(&file, long.join("\n")).unwrap();
    let run = squall(
        &cluster.url,
        &["invoke", "echo", "--batch", path, "--batch-size", "10"],
    )
    .await;
    assert!(!run.succeeded());
    assert!(
        run.stderr
            .contains(&format!("line 15 of {path} is 1502 bytes")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("lines 1 to 10 were submitted"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stdout.lines().count(),
        10,
        "the first chunk's ids: {}",
        run.stdout
    );

    // Standard input works too.
    let mut command = Command::new(&built().squall);
    command
        .current_dir(workspace_root())
        .env_remove("SQUALL_API_KEY")
        .args(["--url", &cluster.url, "invoke", "echo", "--batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = command.spawn().expect("run squall");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"\"in\"\n\"put\"\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(echoed(&cluster, &ids[1]).await["input"], "\"put\"");
}
