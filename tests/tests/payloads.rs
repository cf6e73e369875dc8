//! Large inputs and outputs through the payload store (claim checks): above the inline limit a
//! body is stored in the function's own payload bucket and the job or result carries a
//! reference; functions still see bytes. Real processes, an authenticated broker and a fleet
//! that runs each function in its own process with that function's credentials.

use crate::lambda::{aws_env, run_python};
use async_nats::jetstream;
use sha2::{Digest, Sha256};
use squall_api::InvocationStatus;
use squall_tests::{compile_c, eventually, test_issuer, Cluster, ClusterOptions, Process};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const ADMIN: &str = "payloads-admin-key-0123456789abcdef";
const MIB: usize = 1024 * 1024;

/// A C function: input `F…` fails (to be retried, so its last attempt is dead-lettered), `G…` answers the input four times over, anything else is
/// answered as it came.
fn mirror(dir: &Path) -> PathBuf {
    compile_c(
        dir,
        "mirror",
        "#include <squall.h>\n#include <stdlib.h>\n#include <string.h>\n\
         const uint32_t squall_abi_version = 1;\n\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {\n\
           (void)c; o->retry_after_ms = 0;\n\
           size_t times = (i.len && i.ptr[0] == 'G') ? 4 : 1;\n\
           size_t n = i.len * times;\n\
           uint8_t *p = malloc(n ? n : 1);\n\
           for (size_t k = 0; k < times; k++) if (i.len) memcpy(p + k * i.len, i.ptr, i.len);\n\
           o->body.ptr = p; o->body.len = n; o->body.cap = n ? n : 1;\n\
           if (i.len && i.ptr[0] == 'F') { memcpy(p, \"F\", 1); o->body.len = 1; return SQUALL_RETRY; }\n\
           return SQUALL_OK;\n\
         }\n\
         void squall_free(squall_buf b) { free(b.ptr); }\n",
    )
}

/// A C web function answering the request's body, base64, in the function-URL envelope.
fn web_mirror(dir: &Path) -> PathBuf {
    compile_c(
        dir,
        "webmirror",
        "#include <squall.h>\n#include <stdlib.h>\n#include <string.h>\n\
         const uint32_t squall_abi_version = 1;\n\
         static const char T[] = \"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\";\n\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {\n\
           (void)c; o->retry_after_ms = 0;\n\
           const char *head = \"{\\\"statusCode\\\":200,\\\"headers\\\":{\\\"content-type\\\":\\\"application/octet-stream\\\"},\\\"isBase64Encoded\\\":true,\\\"body\\\":\\\"\";\n\
           size_t h = strlen(head), b = 4 * ((i.len + 2) / 3), n = h + b + 2;\n\
           char *p = malloc(n); memcpy(p, head, h); char *q = p + h;\n\
           for (size_t k = 0; k < i.len; k += 3) {\n\
             uint32_t v = (uint32_t)i.ptr[k] << 16;\n\
             if (k + 1 < i.len) v |= (uint32_t)i.ptr[k + 1] << 8;\n\
             if (k + 2 < i.len) v |= i.ptr[k + 2];\n\
             *q++ = T[(v >> 18) & 63]; *q++ = T[(v >> 12) & 63];\n\
             *q++ = k + 1 < i.len ? T[(v >> 6) & 63] : '=';\n\
             *q++ = k + 2 < i.len ? T[v & 63] : '=';\n\
           }\n\
           *q++ = '\"'; *q++ = '}';\n\
           o->body.ptr = (uint8_t *)p; o->body.len = n; o->body.cap = n;\n\
           return SQUALL_OK;\n\
         }\n\
         void squall_free(squall_buf b) { free(b.ptr); }\n",
    )
}

/// Pseudo-random bytes (xorshift), not text: a payload that no encoding step may alter.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// The dispatcher streams uploads into the payload store: ten concurrent 100 MiB uploads (a
/// gibibyte in all) leave its peak resident memory far below one upload's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_hundred_mebibyte_uploads_keep_the_dispatcher_small() {
    let (cluster, fleet) = start(&[]).await;
    // Nothing runs the jobs: this measures the dispatcher alone.
    drop(fleet);
    let dir = tempfile::tempdir().unwrap();
    deploy(&cluster, "sink", &mirror(dir.path()), serde_json::json!({})).await;
    let body = bytes::Bytes::from(noise(100 * MIB, 17));
    let before = peak_rss(cluster.dispatcher.child.id());
    let uploads = (0..10).map(|_| {
        let request = cluster
            .http
            .post(format!(
                "{}/v1/functions/sink/invocations?async=true",
                cluster.url
            ))
            .body(body.clone());
        async move { request.send().await.expect("upload").status().as_u16() }
    });
    let statuses = futures::future::join_all(uploads).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let peak = peak_rss(cluster.dispatcher.child.id());
    println!(
        "dispatcher peak RSS: {} MiB before, {} MiB after ten concurrent 100 MiB uploads",
        before / MIB as u64,
        peak / MIB as u64
    );
    assert!(
        peak < 200 * MIB as u64,
        "the dispatcher's peak RSS reached {} MiB",
        peak / MIB as u64
    );
    let store = jetstream::new(cluster.nats_client().await)
        .get_object_store("squall_payloads_sink")
        .await
        .expect("sink's payload bucket");
    assert_eq!(count_objects(&store).await, 10);
}

/// An authenticated cluster with an admin key, no plain worker, and a fleet that runs each
/// function in its own process with its own credentials.
pub(crate) async fn start(extra_env: &[(&str, &str)]) -> (Cluster, Process) {
    let mut options = ClusterOptions {
        workers: 0,
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    }
    .with_auth();
    options.env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let cluster = Cluster::start_with(options).await;
    let fleet = cluster.start_fleet(
        "fleet",
        &["--min", "1", "--max", "4", "--interval-ms", "200"],
    );
    (cluster, fleet)
}

pub(crate) async fn deploy(cluster: &Cluster, name: &str, library: &Path, spec: serde_json::Value) {
    let (status, body) = cluster.deploy(name, library, Some(spec)).await;
    assert_eq!(status, 201, "deploy {name}: {body}");
}

/// 50 MiB in and 50 MiB out, byte for byte, through a synchronous HTTP invoke, the Lambda API
/// (boto3) and a web function; the stored output is also read back at `/output`, and the
/// invocation's view names its size instead of carrying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_go_in_and_come_out_intact_through_http_the_lambda_api_and_the_web() {
    let (cluster, _fleet) = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({"memory_mb": 1024, "timeout_ms": 60000, "max_attempts": 1});
    deploy(&cluster, "mirror", &mirror(dir.path()), spec.clone()).await;
    let mut web_spec = spec.clone();
    web_spec["web"] = serde_json::json!({"auth": "none"});
    deploy(&cluster, "webmirror", &web_mirror(dir.path()), web_spec).await;

    // HTTP: the answer streams out of the payload bucket.
    let input = noise(50 * MIB, 7);
    let response = cluster.invoke("mirror", input.clone()).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let output = response.bytes().await.unwrap();
    assert_eq!(output.len(), input.len());
    assert_eq!(sha(&output), sha(&input), "HTTP: the output differs");
    let view = cluster.finished(&id).await;
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(view.output_stored_bytes, Some(50 * MIB as u64));
    assert_eq!(view.output, None);
    let again = cluster
        .http
        .get(format!("{}/v1/invocations/{id}/output", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(sha(&again.bytes().await.unwrap()), sha(&input));

    // A web function: the request body in, the response body out.
    let web_input = noise(50 * MIB, 11);
    let response = cluster
        .http
        .post(format!("{}/function/webmirror", cluster.web_url))
        .body(web_input.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(sha(&body), sha(&web_input), "web: the body differs");

    // The Lambda API through boto3, signed with the admin key (the payload must be JSON: a
    // 50 MiB JSON string).
    let script = r#"
import hashlib, json, os, boto3, botocore.config
cfg = botocore.config.Config(retries={"max_attempts": 0, "mode": "standard"}, read_timeout=120)
lam = boto3.client("lambda", endpoint_url=os.environ["SQUALL_ENDPOINT"], config=cfg)
payload = json.dumps("x" * (50 * 1024 * 1024 - 2)).encode()
assert len(payload) == 50 * 1024 * 1024
r = lam.invoke(FunctionName="mirror", Payload=payload)
assert r["StatusCode"] == 200, r
assert "FunctionError" not in r, r
out = r["Payload"].read()
assert hashlib.sha256(out).hexdigest() == hashlib.sha256(payload).hexdigest(), len(out)
print("ok")
"#;
    let out = run_python(&aws_env(&cluster, "admin", ADMIN), script);
    assert_eq!(out.trim(), "ok");
}

/// Over the largest payload: a declared length is refused at once, an output over it fails
/// the invocation with the sizes named (and is not retried into a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_and_outputs_over_the_largest_payload_are_clear_errors() {
    let (cluster, _fleet) = start(&[("SQUALL_MAX_PAYLOAD", &(3 * MIB).to_string())]).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({"memory_mb": 256, "timeout_ms": 30000, "max_attempts": 1});
    deploy(&cluster, "mirror", &mirror(dir.path()), spec).await;

    let response = cluster.invoke("mirror", noise(3 * MIB + 1, 3)).await;
    assert_eq!(response.status(), 413);
    let error: squall_api::ErrorBody = response.json().await.unwrap();
    assert_eq!(error.error.code, "payload_too_large");
    assert!(
        error.error.message.contains(&(3 * MIB).to_string()),
        "{error:?}"
    );

    // 2 MiB in (stored), 8 MiB out: over the limit, so the invocation fails.
    let mut grow = noise(2 * MIB, 5);
    grow[0] = b'G';
    let response = cluster.invoke("mirror", grow).await;
    assert_eq!(response.status(), 500);
    let error: squall_api::ErrorBody = response.json().await.unwrap();
    assert!(
        error
            .error
            .message
            .contains("output of 8388608 bytes is larger than the limit of 3145728"),
        "{error:?}"
    );
}

/// A dead letter whose input is stored replays with that same input, and removing a dead
/// letter removes its stored input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_with_a_stored_input_replays_with_it() {
    let (cluster, _fleet) = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({"memory_mb": 256, "timeout_ms": 30000, "max_attempts": 1});
    deploy(&cluster, "mirror", &mirror(dir.path()), spec.clone()).await;
    let mut input = noise(3 * MIB, 9);
    input[0] = b'F';
    let response = cluster.invoke("mirror", input.clone()).await;
    assert_eq!(response.status(), 500);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The dead letter is written after the result the caller heard.
    eventually(Duration::from_secs(20), "the dead letter", async || {
        (cluster.get_json(&format!("/v1/dlq/{id}")).await.0 == 200).then_some(())
    })
    .await;

    // The same function name, now answering its input: the replay reads the stored input.
    let (status, body) = cluster
        .deploy(
            "mirror",
            &compile_c(
                dir.path(),
                "plainmirror",
                "#include <squall.h>\n#include <stdlib.h>\n#include <string.h>\n\
                 const uint32_t squall_abi_version = 1;\n\
                 int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {\n\
                   (void)c; o->retry_after_ms = 0; uint8_t *p = malloc(i.len ? i.len : 1);\n\
                   if (i.len) memcpy(p, i.ptr, i.len);\n\
                   o->body.ptr = p; o->body.len = i.len; o->body.cap = i.len ? i.len : 1;\n\
                   return SQUALL_OK;\n\
                 }\n\
                 void squall_free(squall_buf b) { free(b.ptr); }\n",
            ),
            Some(spec.clone()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let replayed = cluster
        .http
        .post(format!("{}/v1/dlq/{id}/replay", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 202);
    let accepted: squall_api::invocations::Accepted = replayed.json().await.unwrap();
    let view = cluster.finished(&accepted.invocation_id).await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    let output = cluster
        .http
        .get(format!(
            "{}/v1/invocations/{}/output",
            cluster.url, accepted.invocation_id
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        sha(&output),
        sha(&input),
        "the replay ran with another input"
    );

    // A second dead letter, removed: its stored input goes with it.
    let response = cluster.invoke("mirror", b"small".to_vec()).await;
    assert_eq!(response.status(), 200);
    let store = jetstream::new(cluster.nats_client().await)
        .get_object_store("squall_payloads_mirror")
        .await
        .expect("mirror's payload bucket");
    let inputs_before = count_objects(&store).await;
    let mut failing = noise(2 * MIB, 13);
    failing[0] = b'F';
    let spec = serde_json::json!({"memory_mb": 256, "timeout_ms": 30000, "max_attempts": 1});
    deploy(&cluster, "mirror", &mirror(dir.path()), spec).await;
    let response = cluster.invoke("mirror", failing).await;
    assert_eq!(response.status(), 500);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(20),
        "the second dead letter",
        async || (cluster.get_json(&format!("/v1/dlq/{id}")).await.0 == 200).then_some(()),
    )
    .await;
    assert_eq!(count_objects(&store).await, inputs_before + 1);
    let removed = cluster
        .http
        .delete(format!("{}/v1/dlq/{id}", cluster.url))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(count_objects(&store).await, inputs_before);
}

async fn count_objects(store: &jetstream::object_store::ObjectStore) -> usize {
    use futures::StreamExt;
    let mut list = store.list().await.expect("list objects");
    let mut n = 0;
    while let Some(object) = list.next().await {
        if !object.expect("an object").deleted {
            n += 1;
        }
    }
    n
}

/// A function process's credentials reach its own payload bucket and not another function's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_reaches_its_own_payloads_and_no_other_functions() {
    let (cluster, fleet) = start(&[]).await;
    drop(fleet);
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({"max_attempts": 1});
    deploy(&cluster, "pa", &mirror(dir.path()), spec.clone()).await;
    deploy(&cluster, "pb", &mirror(dir.path()), spec).await;
    // A large input of pb is stored (nothing runs it: no worker serves here any more).
    let accepted = cluster
        .http
        .post(format!(
            "{}/v1/functions/pb/invocations?async=true",
            cluster.url
        ))
        .body(noise(2 * MIB, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);

    let _callout = crate::function_credentials::serve_callout(&cluster).await;
    let token = test_issuer().mint("pa").expect("mint");
    let pa = async_nats::ConnectOptions::with_token(token.token.clone())
        .custom_inbox_prefix(token.inbox_prefix())
        .connect(&cluster.nats.url)
        .await
        .expect("pa logs in");
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(1500))
        .build(pa.clone());
    // Its own bucket: a put and a get.
    let own = js
        .get_object_store("squall_payloads_pa")
        .await
        .expect("pa opens its own payload bucket");
    let reference = squall_broker::payloads::put(
        &js,
        "squall_payloads_pa",
        "out/test/1-x",
        bytes::Bytes::from(noise(MIB + 5, 2)),
        &mut tokio::io::empty(),
        8 * MIB,
    )
    .await
    .expect("pa stores an output");
    let read = squall_broker::payloads::get(&own, &reference, 8 * MIB)
        .await
        .expect("pa reads it back");
    assert_eq!(sha(&read), sha(&noise(MIB + 5, 2)));
    // Another function's bucket: neither opened nor written nor read through a consumer.
    assert!(
        js.get_object_store("squall_payloads_pb").await.is_err(),
        "pa opened pb's payload bucket"
    );
    let written = squall_broker::payloads::put(
        &js,
        "squall_payloads_pb",
        "out/forged/1-x",
        bytes::Bytes::from_static(b"forged"),
        &mut tokio::io::empty(),
        MIB,
    )
    .await;
    assert!(written.is_err(), "pa wrote into pb's payload bucket");
    let consumer = js
        .create_consumer_on_stream(
            jetstream::consumer::pull::OrderedConfig {
                filter_subject: "$O.squall_payloads_pb.C.>".into(),
                ..Default::default()
            },
            "OBJ_squall_payloads_pb",
        )
        .await;
    assert!(consumer.is_err(), "pa read pb's chunks");
}
