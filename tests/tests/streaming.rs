//! Streamed responses: a function writes its output chunk by chunk through the `stream_write`
//! host call and a caller that asked for a stream receives each chunk as it is written; a web
//! function streams in Lambda's function-URL streaming format; a stream cut short by a crash
//! ends the invocation failed, with what was streamed recorded. Real processes, an
//! authenticated broker, and a fleet running each function in its own process.

use crate::lambda::{aws_env, run_python};
use crate::payloads::{deploy, start, ADMIN};
use squall_api::{ErrorKind, InvocationStatus};
use squall_tests::{compile_c, squall, Cluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// C helpers of the functions below: sleep, and write a string as one chunk.
const PRELUDE: &str = "#define _POSIX_C_SOURCE 199309L\n\
    #include <squall.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <time.h>\n\
    const uint32_t squall_abi_version = 1;\n\
    static void nap(long ms) { struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}; nanosleep(&t, NULL); }\n\
    static int put(const squall_ctx *c, const char *s) { return squall_stream_write(c, s, strlen(s)); }\n\
    static int32_t answer(squall_output *o, const char *s, int32_t status) {\n\
      size_t n = strlen(s); o->body.ptr = malloc(n ? n : 1); memcpy(o->body.ptr, s, n);\n\
      o->body.len = n; o->body.cap = n ? n : 1; o->retry_after_ms = 0; return status; }\n\
    void squall_free(squall_buf b) { free(b.ptr); }\n";

/// Its first byte (after a JSON string's quote) picks: `S`: ten lines 100 ms apart, then `end` returned as the last chunk. `C`: three lines,
/// then the process aborts. `W`: nothing streamed, `whole` returned. `T`: two lines, then
/// past the timeout. `B`: mebibyte chunks until one is refused, then an error naming the code.
fn streamer(dir: &Path) -> PathBuf {
    let source = format!(
        "{PRELUDE}\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {{\n\
           char line[64];\n\
           char m = i.len ? (char)i.ptr[0] : 0; if (m == '\"' && i.len > 1) m = (char)i.ptr[1];\n\
           if (m == 'W') return answer(o, \"whole\", SQUALL_OK);\n\
           if (m == 'T') {{ put(c, \"a\\n\"); put(c, \"b\\n\"); nap(3000); return answer(o, \"late\", SQUALL_OK); }}\n\
           if (m == 'B') {{\n\
             static char big[1 << 20]; memset(big, 'x', sizeof big); int rc = 0;\n\
             for (int k = 0; k < 64 && rc == 0; k++) rc = squall_stream_write(c, big, sizeof big);\n\
             snprintf(line, sizeof line, \"stream_write answered %d\", rc);\n\
             return answer(o, line, SQUALL_ERROR);\n\
           }}\n\
           int n = (m == 'C') ? 3 : 10;\n\
           for (int k = 0; k < n; k++) {{\n\
             snprintf(line, sizeof line, \"{{\\\"chunk\\\":%d}}\\n\", k);\n\
             if (put(c, line) != 0) return answer(o, \"stream_write failed\", SQUALL_ERROR);\n\
             if (k + 1 < n) nap(100);\n\
           }}\n\
           if (m == 'C') {{ nap(50); abort(); }}\n\
           return answer(o, \"{{\\\"end\\\":true}}\\n\", SQUALL_OK);\n\
         }}\n"
    );
    compile_c(dir, "streamer", &source)
}

/// A web function that streams: a prelude (201, a header, a cookie), then three body chunks
/// 100 ms apart.
fn web_streamer(dir: &Path) -> PathBuf {
    let source = format!(
        "{PRELUDE}\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {{\n\
           (void)i;\n\
           const char *p = \"{{\\\"statusCode\\\":201,\\\"headers\\\":{{\\\"content-type\\\":\\\"text/event-stream\\\",\\\"x-stream\\\":\\\"yes\\\"}},\\\"cookies\\\":[\\\"seen=1; Path=/\\\"]}}\";\n\
           squall_stream_write(c, p, strlen(p));\n\
           squall_stream_write(c, \"\\0\\0\\0\\0\\0\\0\\0\\0\", 8);\n\
           for (int k = 0; k < 3; k++) {{\n\
             char line[32]; snprintf(line, sizeof line, \"data: %d\\n\\n\", k);\n\
             put(c, line); nap(100);\n\
           }}\n\
           return answer(o, \"\", SQUALL_OK);\n\
         }}\n"
    );
    compile_c(dir, "webstreamer", &source)
}

/// A synchronous invoke of `function` with `input` and one request header.
async fn ask(
    cluster: &Cluster,
    function: &str,
    header: (&str, &str),
    input: &str,
) -> reqwest::Response {
    cluster
        .http
        .post(format!(
            "{}/v1/functions/{function}/invocations",
            cluster.url
        ))
        .header(header.0, header.1)
        .body(input.to_string())
        .send()
        .await
        .unwrap()
}

/// Calls InvokeWithResponseStream through boto3 (signed with the admin key) and returns what
/// the event stream carried: the chunks' text, the seconds from the first chunk to the last,
/// and the `InvokeComplete` event.
fn boto3_stream(cluster: &Cluster, function: &str, payload: &str) -> serde_json::Value {
    let script = r#"
import json, os, time, boto3, botocore.config
cfg = botocore.config.Config(retries={"max_attempts": 0, "mode": "standard"}, read_timeout=60)
lam = boto3.client("lambda", endpoint_url=os.environ["SQUALL_ENDPOINT"], config=cfg)
t0 = time.monotonic()
r = lam.invoke_with_response_stream(FunctionName=os.environ["FUNCTION"], Payload=os.environ["PAYLOAD"].encode())
t1 = time.monotonic()
assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, r
chunks, times, complete = [], [], None
for event in r["EventStream"]:
    if "PayloadChunk" in event:
        chunks.append(event["PayloadChunk"]["Payload"].decode())
        times.append(time.monotonic())
    elif "InvokeComplete" in event:
        complete = event["InvokeComplete"]
print(json.dumps({"text": "".join(chunks), "pieces": len(chunks), "t_answer": t1 - t0, "t_end": time.monotonic() - t0,
                  "spread": (times[-1] - times[0]) if times else 0, "complete": complete}))
"#;
    let mut env = aws_env(cluster, "admin", ADMIN);
    env.push(("FUNCTION".into(), function.into()));
    env.push(("PAYLOAD".into(), payload.into()));
    let out = run_python(&env, script);
    let answer: serde_json::Value = serde_json::from_str(&out).expect("the script's JSON");
    println!("boto3 {function} {payload}: {answer}");
    answer
}

/// The invocation id an answer names.
fn id_of(response: &reqwest::Response) -> String {
    response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Reads a streamed response to its end: each piece with the time it arrived since `sent`,
/// and whether the body ended cleanly (a cut-short stream ends with an error).
async fn read_stream(
    mut response: reqwest::Response,
    sent: Instant,
) -> (Vec<(Duration, Vec<u8>)>, bool) {
    let mut pieces = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(piece)) => pieces.push((sent.elapsed(), piece.to_vec())),
            Ok(None) => return (pieces, true),
            Err(_) => return (pieces, false),
        }
    }
}

fn joined(pieces: &[(Duration, Vec<u8>)]) -> String {
    let bytes: Vec<u8> = pieces.iter().flat_map(|(_, p)| p.clone()).collect();
    String::from_utf8(bytes).expect("UTF-8 output")
}

fn expected_lines(n: usize) -> String {
    (0..n).map(|k| format!("{{\"chunk\":{k}}}\n")).collect()
}

/// A function writing ten chunks 100 ms apart: a caller that asked for NDJSON sees the first
/// within 150 ms and the rest as they are written, with chunked transfer encoding; the stored
/// output is the concatenation, the returned body its last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_asks_for_a_stream_gets_each_chunk_as_it_is_written() {
    let (cluster, _fleet) = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    deploy(
        &cluster,
        "streamer",
        &streamer(dir.path()),
        serde_json::json!({"timeout_ms": 10000}),
    )
    .await;
    // Warm: the function's process is started and its library loaded.
    let warm = cluster.invoke("streamer", b"W".to_vec()).await;
    assert_eq!(warm.status(), 200);
    assert_eq!(warm.bytes().await.unwrap(), "whole");

    let sent = Instant::now();
    let response = ask(
        &cluster,
        "streamer",
        ("accept", "application/x-ndjson"),
        "S",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert!(response.headers().get("content-length").is_none());
    let id = id_of(&response);
    let (pieces, clean) = read_stream(response, sent).await;
    assert!(clean, "the stream was cut short");
    let text = joined(&pieces);
    assert_eq!(text, format!("{}{{\"end\":true}}\n", expected_lines(10)));
    let first = pieces[0].0;
    let last = pieces.last().unwrap().0;
    println!(
        "first chunk after {first:?}, last after {last:?}, {} pieces",
        pieces.len()
    );
    assert!(
        first <= Duration::from_millis(150),
        "the first chunk came after {first:?}"
    );
    // Ten chunks 100 ms apart arrive spread over at least 0.8 s, not all at the end.
    assert!(
        last - first >= Duration::from_millis(800),
        "the chunks arrived within {:?}",
        last - first
    );
    assert!(pieces.len() >= 5, "{} pieces", pieces.len());

    // The stored output is the concatenation.
    let view = cluster.finished(&id).await;
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(view.output_stored_bytes, Some(text.len() as u64));
    let stored = cluster
        .http
        .get(format!("{}/v1/invocations/{id}/output", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.text().await.unwrap(), text);

    // `Squall-Stream: true` asks for bytes; SSE is asked for by its own type.
    for (name, value, content_type) in [
        ("squall-stream", "true", "application/octet-stream"),
        ("accept", "text/event-stream", "text/event-stream"),
    ] {
        let response = ask(&cluster, "streamer", (name, value), "S").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], content_type);
        let (pieces, clean) = read_stream(response, Instant::now()).await;
        assert!(clean);
        assert_eq!(joined(&pieces), text);
    }

    // The CLI prints a stream as it comes.
    let cli = squall(
        &cluster.url,
        &[
            "--api-key",
            ADMIN,
            "invoke",
            "streamer",
            "--stream",
            "-d",
            "S",
        ],
    )
    .await;
    assert!(cli.succeeded(), "{cli:#?}");
    assert_eq!(cli.stdout, text);

    // The Lambda API's InvokeWithResponseStream, through boto3: the chunks as PayloadChunk
    // events as they are written, then InvokeComplete without an error.
    let lambda = boto3_stream(&cluster, "streamer", "\"S\"");
    assert_eq!(lambda["text"], text.as_str(), "{lambda}");
    assert!(lambda["pieces"].as_u64().unwrap() >= 5, "{lambda}");
    assert!(lambda["spread"].as_f64().unwrap() >= 0.5, "{lambda}");
    assert_eq!(lambda["complete"], serde_json::json!({}), "{lambda}");
    let whole = boto3_stream(&cluster, "streamer", "\"W\"");
    assert_eq!(whole["text"], "whole", "{whole}");

    // Without asking, the same function's answer is whole, with its length.
    let whole = cluster.invoke("streamer", b"S".to_vec()).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(
        whole.headers()["content-length"],
        text.len().to_string().as_str()
    );
    assert_eq!(whole.text().await.unwrap(), text);

    // Asking for a stream of a function that does not stream gets its whole answer.
    let response = ask(
        &cluster,
        "streamer",
        ("accept", "application/x-ndjson"),
        "W",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "whole");
}

/// A process that dies mid-stream: the caller got what was streamed, then a cut-short body;
/// the invocation ends failed (kind `crash`, not run again), with the streamed bytes stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_fails_the_invocation_with_what_was_streamed_recorded() {
    let (cluster, _fleet) = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    deploy(
        &cluster,
        "streamer",
        &streamer(dir.path()),
        serde_json::json!({"timeout_ms": 10000, "max_attempts": 3}),
    )
    .await;
    let sent = Instant::now();
    let response = ask(
        &cluster,
        "streamer",
        ("accept", "application/x-ndjson"),
        "C",
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = id_of(&response);
    let (pieces, clean) = read_stream(response, sent).await;
    assert!(!clean, "a stream cut short by a crash must not end cleanly");
    assert_eq!(joined(&pieces), expected_lines(3));

    let view = cluster.finished(&id).await;
    assert_eq!(view.status, InvocationStatus::Failed, "{view:?}");
    let error = view.error.clone().expect("an error");
    assert_eq!(error.kind, ErrorKind::Crash, "{view:?}");
    assert_eq!(view.attempts, 2, "not run again after the crash: {view:?}");
    let streamed = expected_lines(3);
    assert_eq!(view.output_stored_bytes, Some(streamed.len() as u64));
    assert!(
        error.message.contains("after streaming"),
        "{}",
        error.message
    );
    let stored = cluster
        .http
        .get(format!("{}/v1/invocations/{id}/output", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.headers()["squall-status"], "failed");
    assert_eq!(stored.text().await.unwrap(), streamed);

    // Through the Lambda API: the chunks, then InvokeComplete naming the failure.
    let lambda = boto3_stream(&cluster, "streamer", "\"C\"");
    assert_eq!(lambda["text"], streamed.as_str(), "{lambda}");
    assert_eq!(lambda["complete"]["ErrorCode"], "Unhandled", "{lambda}");
    let details = lambda["complete"]["ErrorDetails"]
        .as_str()
        .unwrap_or_default();
    assert!(details.contains("after streaming"), "{lambda}");
}

/// A web function that streams answers in Lambda's streaming format for function URLs: its
/// prelude's status, headers and (confined) cookies first, then the body as it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_function_streams_its_prelude_then_its_body() {
    let (cluster, _fleet) = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    deploy(
        &cluster,
        "webstreamer",
        &web_streamer(dir.path()),
        serde_json::json!({"timeout_ms": 10000, "web": {"auth": "none"}}),
    )
    .await;
    let sent = Instant::now();
    let response = cluster
        .http
        .get(format!("{}/function/webstreamer/events", cluster.web_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-stream"], "yes");
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Path=/function/webstreamer"), "{cookie}");
    let (pieces, clean) = read_stream(response, sent).await;
    assert!(clean);
    assert_eq!(joined(&pieces), "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    let spread = pieces.last().unwrap().0 - pieces[0].0;
    assert!(
        spread >= Duration::from_millis(150),
        "the body arrived at once ({spread:?})"
    );
}

/// A failure after the first chunk ends the invocation at once, whatever the retry policy: a
/// timeout is `timed_out`, a chunk past the output limit is refused (`SQUALL_HOST_TOO_LARGE`)
/// and the function's error ends it `failed`; both after one attempt, with what was streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_streaming_ends_the_invocation_without_a_retry() {
    let (cluster, _fleet) = start(&[("SQUALL_MAX_PAYLOAD", "4194304")]).await;
    let dir = tempfile::tempdir().unwrap();
    deploy(
        &cluster,
        "streamer",
        &streamer(dir.path()),
        serde_json::json!({"timeout_ms": 1000, "max_attempts": 3}),
    )
    .await;
    let response = ask(
        &cluster,
        "streamer",
        ("accept", "application/x-ndjson"),
        "T",
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = id_of(&response);
    let (pieces, clean) = read_stream(response, Instant::now()).await;
    assert!(!clean, "a stream that timed out must not end cleanly");
    assert_eq!(joined(&pieces), "a\nb\n");
    let view = cluster.finished(&id).await;
    assert_eq!(view.status, InvocationStatus::TimedOut, "{view:?}");
    assert_eq!(view.attempts, 1, "{view:?}");
    assert_eq!(view.output_stored_bytes, Some(4));

    let response = ask(&cluster, "streamer", ("squall-stream", "true"), "B").await;
    assert_eq!(response.status(), 200);
    let id = id_of(&response);
    let (pieces, clean) = read_stream(response, Instant::now()).await;
    assert!(!clean);
    let streamed: usize = pieces.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(streamed, 4 << 20, "the limit's worth, no more");
    let view = cluster.finished(&id).await;
    assert_eq!(view.status, InvocationStatus::Failed, "{view:?}");
    assert_eq!(view.attempts, 1, "{view:?}");
    let error = view.error.expect("an error");
    assert!(
        error.message.contains("stream_write answered -3"),
        "{}",
        error.message
    );
    assert_eq!(view.output_stored_bytes, Some(4 << 20));
}
