//! A schemathesis run against the live OpenAPI document with an admin key: no input may cause a
//! server error or a response the document does not describe.

use squall_tests::{workspace_root, Cluster, ClusterOptions};
use std::process::Command;

const ADMIN: &str = "fuzz-admin-key-0123456789abcdef";

/// The schemathesis binary: `$SCHEMATHESIS` (set by scripts/test) or `.tools/venv`.
fn schemathesis() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return path.into();
    }
    let local = workspace_root().join(".tools/venv/bin/schemathesis");
    assert!(
        local.exists(),
        "schemathesis is missing: run scripts/install-schemathesis (scripts/test does), or set SCHEMATHESIS"
    );
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzzed_api_gives_no_server_error_and_no_response_outside_its_schema() {
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    })
    .await;
    // A function that never fails: a failing function's own 500 is its answer, not a server
    // error of the platform.
    cluster.deploy_example("echo", None).await;
    let workdir = cluster.dir.path().to_path_buf();
    let url = format!("{}/v1/openapi.json", cluster.url);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis())
            .current_dir(&workdir)
            .args(["run", &url])
            .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "25", "--seed", "20261127", "--request-timeout", "20"])
            .args(["--no-color"])
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    assert!(
        text.contains("passed") && !text.contains(" failed"),
        "{text}"
    );
}
