//! The operator console at `/ui` in a real browser: headless Chromium from the system's
//! packages, driven by selenium (scripts/install-console-clients), against a running cluster
//! with successes, failures and a dead letter.

use squall_api::invocations::Invocation;
use squall_api::operations::DeadLetterList;
use squall_api::InvocationStatus;
use squall_tests::{eventually, Cluster, ClusterOptions};
use std::time::Duration;

const ADMIN: &str = "console-admin-key-0123456789";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_URL: &str = "http://traces.example.test/trace/{trace_id}";

/// The Python with selenium, after making sure Chromium and chromedriver are installed.
fn console_python() -> String {
    let script = squall_tests::workspace_root().join("scripts/install-console-clients");
    let out = std::process::Command::new(script)
        .arg("--browser")
        .output()
        .expect("run scripts/install-console-clients");
    assert!(
        out.status.success(),
        "cannot set up the browser test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_reads_charts_and_invocations_and_replays_a_dead_letter() {
    let python = tokio::task::spawn_blocking(console_python).await.unwrap();
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: vec![
            ("SQUALL_ADMIN_KEY".into(), ADMIN.into()),
            ("SQUALL_TRACE_URL".into(), TRACE_URL.into()),
        ],
        ..Default::default()
    })
    .await;
    cluster.deploy_example("hello", None).await;
    cluster
        .deploy_example("fail", Some(serde_json::json!({"max_attempts": 1})))
        .await;
    cluster
        .deploy_example("panic", Some(serde_json::json!({"max_attempts": 1})))
        .await;
    // The first call continues a caller's trace: its result records the trace id.
    let traced = cluster
        .http
        .post(format!("{}/v1/functions/hello/invocations", cluster.url))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body("{\"name\": \"traced\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    let ok_id = traced.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, invocation) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{ok_id}"))
        .await;
    assert_eq!(invocation.trace_id.as_deref(), Some(TRACE_ID));
    for n in 0..4 {
        let response = cluster
            .invoke("hello", format!("{{\"name\": \"n{n}\"}}"))
            .await;
        assert_eq!(response.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(cluster.invoke("fail", "").await.status(), 500);
    }
    let panicked = cluster.invoke("panic", "{\"boom\": true}").await;
    let dead_id = panicked.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(15),
        format_args!("a dead letter for {dead_id}"),
        async || {
            let (_, list) = cluster.get_as::<DeadLetterList>("/v1/dlq").await;
            match list.dead_letters.iter().any(|d| d.id == dead_id) {
                true => Ok(()),
                false => Err(list),
            }
        },
    )
    .await;
    let created = cluster
        .http
        .post(format!("{}/v1/keys", cluster.url))
        .json(&serde_json::json!({"name": "viewer", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let read_key = created["key"].as_str().expect("the new key").to_string();

    let shots = squall_tests::workspace_root().join("target/test-output/console");
    let _ = std::fs::remove_dir_all(&shots);
    let trace_prefix = TRACE_URL.replace("{trace_id}", "");
    let script = include_str!("console/drive.py");
    let run = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args([
            &cluster.url,
            ADMIN,
            "viewer",
            &read_key,
            &dead_id,
            &ok_id,
            &trace_prefix,
            &shots.to_string_lossy(),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser run took over 3 minutes")
        .expect("run the browser driver");
    assert!(
        out.status.success(),
        "the console failed in the browser (screenshots in {}):\n{}\n{}",
        shots.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "functions.png",
        "invocation.png",
        "dead-letters.png",
        "fleet.png",
        "read-only.png",
    ] {
        let bytes = std::fs::read(shots.join(name)).unwrap_or_default();
        assert!(bytes.starts_with(b"\x89PNG"), "no screenshot {name}");
    }

    // What the browser did, seen through the API: the dead letter is gone, replayed as a new
    // invocation of the same function.
    let (_, list) = cluster.get_as::<DeadLetterList>("/v1/dlq").await;
    assert!(
        list.dead_letters.iter().all(|d| d.id != dead_id),
        "{list:?}"
    );
    eventually(
        Duration::from_secs(15),
        "the replayed invocation",
        async || {
            let (_, page) = cluster
                .get_json("/v1/invocations?function=panic&limit=10")
                .await;
            (page["items"].as_array().map_or(0, Vec::len) == 2)
                .then_some(())
                .ok_or(page)
        },
    )
    .await;
    let (_, original) = cluster
        .get_as::<Invocation>(&format!("/v1/invocations/{dead_id}"))
        .await;
    assert_eq!(original.status, InvocationStatus::DeadLettered);
}
