//! A Python user and a JavaScript user with the `squall` CLI alone: `squall init`, `squall test`, `squall deploy` and `squall invoke`, one command per step; a handler file deployed as it is; numpy from requirements.txt; and clear refusals.

use squall_tests::{squall_in, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_user_goes_from_init_to_a_tested_deployed_invoked_function() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();

    let made = squall_in(Some(here), url, &["init", "--runtime", "python", "greeter"])
        .await
        .ok();
    assert!(made.stdout.contains("created greeter/"), "{made:#?}");
    for file in ["squall.toml", "app.py", "test_app.py", "requirements.txt"] {
        assert!(here.join("greeter").join(file).is_file(), "{file}");
    }
    let tested = squall_in(Some(here), url, &["test", "greeter"]).await.ok();
    assert!(
        format!("{}{}", tested.stdout, tested.stderr).contains("OK"),
        "{tested:#?}"
    );
    let deployed = squall_in(Some(here), url, &["deploy", "greeter"])
        .await
        .ok();
    assert!(
        deployed.stdout.starts_with("deployed greeter sha256:"),
        "{deployed:#?}"
    );
    let answer = squall_in(
        Some(here),
        url,
        &["invoke", "greeter", "--data", r#"{"name":"Ada"}"#],
    )
    .await
    .ok();
    assert_eq!(answer.stdout, r#"{"message":"Hello, Ada!"}"#);

    // A failing test fails `squall test`, naming the test.
    let app = here.join("greeter/app.py");
    let code = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, code.replace("Hello", "Goodbye")).unwrap();
    let failed = squall_in(Some(here), url, &["test", "greeter"]).await;
    assert_eq!(failed.code, Some(1), "{failed:#?}");
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(said.contains("test_greets_by_name"), "{said}");
    assert!(said.contains("tests failed"), "{said}");

    // An existing folder is not overwritten.
    let again = squall_in(Some(here), url, &["init", "--runtime", "python", "greeter"]).await;
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("exists already"), "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_javascript_user_goes_from_init_to_a_tested_deployed_invoked_function() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();

    squall_in(
        Some(here),
        url,
        &["init", "--runtime", "javascript", "hi-js"],
    )
    .await
    .ok();
    let tested = squall_in(Some(here), url, &["test", "hi-js"]).await.ok();
    assert!(tested.stdout.contains("2 passed"), "{tested:#?}");
    let deployed = squall_in(Some(here), url, &["deploy", "hi-js"]).await.ok();
    assert!(
        deployed.stdout.starts_with("deployed hi-js "),
        "{deployed:#?}"
    );
    let answer = squall_in(
        Some(here),
        url,
        &["invoke", "hi-js", "--data", r#"{"name":"Lin"}"#],
    )
    .await
    .ok();
    assert_eq!(answer.stdout, r#"{"message":"Hello, Lin!"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_file_deploys_as_it_is_and_a_bad_one_is_refused_with_its_line() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    std::fs::write(
        here.join("handler.py"),
        "def handler(event, context):\n    return {'sum': sum(event)}\n",
    )
    .unwrap();
    let deployed = squall_in(Some(here), url, &["deploy", "handler.py"])
        .await
        .ok();
    assert!(
        deployed.stdout.starts_with("deployed handler sha256:"),
        "{deployed:#?}"
    );
    let answer = squall_in(
        Some(here),
        url,
        &["invoke", "handler", "--data", "[1, 2, 3]"],
    )
    .await
    .ok();
    assert_eq!(answer.stdout, r#"{"sum":6}"#);

    std::fs::write(
        here.join("echo.mjs"),
        "export const handler = (event) => ({ echo: event });\n",
    )
    .unwrap();
    squall_in(Some(here), url, &["deploy", "echo.mjs"])
        .await
        .ok();
    let answer = squall_in(Some(here), url, &["invoke", "echo", "--data", "7"])
        .await
        .ok();
    assert_eq!(answer.stdout, r#"{"echo":7}"#);

    std::fs::write(
        here.join("broken.py"),
        "def handler(event, context):\n    return (\n",
    )
    .unwrap();
    let refused = squall_in(Some(here), url, &["deploy", "broken.py"]).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("broken.py:2"), "{refused:#?}");
    let unknown = squall_in(Some(here), url, &["invoke", "broken"]).await;
    assert_eq!(unknown.code, Some(1), "nothing was deployed: {unknown:#?}");

    std::fs::write(here.join("notes.txt"), "hello").unwrap();
    let refused = squall_in(Some(here), url, &["deploy", "notes.txt"]).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numpy_from_requirements_txt_imports_and_computes_in_a_deployed_function() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let function = dir.path().join("numeric");
    std::fs::create_dir_all(&function).unwrap();
    std::fs::write(
        function.join("squall.toml"),
        "[function]\nname = \"numeric\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         timeout_ms = 30000\nmemory_mb = 512\n",
    )
    .unwrap();
    std::fs::write(function.join("requirements.txt"), "numpy\n").unwrap();
    std::fs::write(
        function.join("app.py"),
        "import numpy as np\n\ndef handler(event, context):\n    \
         a = np.arange(event['n'], dtype=np.int64)\n    \
         return {'sum': int(a.sum()), 'mean': float(a.mean()), 'version': np.__version__}\n",
    )
    .unwrap();
    let deployed = squall_in(Some(dir.path()), url, &["deploy", "numeric"])
        .await
        .ok();
    assert!(deployed.stderr.contains("installing"), "{deployed:#?}");
    let answer = squall_in(
        Some(dir.path()),
        url,
        &["invoke", "numeric", "--data", r#"{"n": 10}"#],
    )
    .await
    .ok();
    let answer: serde_json::Value = serde_json::from_str(&answer.stdout).unwrap();
    assert_eq!(answer["sum"], 45, "{answer}");
    assert_eq!(answer["mean"], 4.5, "{answer}");
}
