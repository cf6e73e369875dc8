//! A Python, a JavaScript, a Go and a Java user with the `squall` CLI alone: `squall init`, `squall test`, `squall deploy` and `squall invoke`, one command per step; a handler file deployed as it is; numpy from requirements.txt; and clear refusals.

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
async fn a_go_user_goes_from_init_to_a_tested_deployed_invoked_function() {
    squall_tests::go_toolchain();
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();

    let made = squall_in(Some(here), url, &["init", "--runtime", "go", "hi-go"])
        .await
        .ok();
    assert!(made.stdout.contains("created hi-go/"), "{made:#?}");
    for file in ["squall.toml", "go.mod", "main.go", "main_test.go"] {
        assert!(here.join("hi-go").join(file).is_file(), "{file}");
    }
    let tested = squall_in(Some(here), url, &["test", "hi-go"]).await.ok();
    assert!(tested.stdout.contains("ok"), "{tested:#?}");
    let deployed = squall_in(Some(here), url, &["deploy", "hi-go"]).await.ok();
    assert!(
        deployed.stdout.starts_with("deployed hi-go sha256:"),
        "{deployed:#?}"
    );
    for visits in [1, 2] {
        let answer = squall_in(
            Some(here),
            url,
            &["invoke", "hi-go", "--data", r#"{"name":"Ada"}"#],
        )
        .await
        .ok();
        assert_eq!(
            answer.stdout,
            format!(r#"{{"message":"Hello, Ada!","visits":{visits}}}"#)
        );
    }

    // A failing test fails `squall test`, naming the test; code that does not compile fails
    // the deploy with the compiler's message and deploys nothing.
    let main = here.join("hi-go/main.go");
    let code = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, code.replace("\"%s, %s!\"", "\"%s: %s!\"")).unwrap();
    let failed = squall_in(Some(here), url, &["test", "hi-go"]).await;
    assert_eq!(failed.code, Some(1), "{failed:#?}");
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(said.contains("TestGreetsByNameAndCountsVisits"), "{said}");
    std::fs::write(
        &main,
        code.replace("func main() {}", "func main() { undefined() }"),
    )
    .unwrap();
    let refused = squall_in(Some(here), url, &["deploy", "hi-go"]).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("undefined"), "{refused:#?}");
    assert!(refused.stderr.contains("go build"), "{refused:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_java_user_goes_from_init_to_a_tested_deployed_invoked_function() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();

    let made = squall_in(Some(here), url, &["init", "--runtime", "java", "hi-java"])
        .await
        .ok();
    assert!(made.stdout.contains("created hi-java/"), "{made:#?}");
    for file in [
        "squall.toml",
        "src/app/Hello.java",
        "test/app/HelloTest.java",
    ] {
        assert!(here.join("hi-java").join(file).is_file(), "{file}");
    }
    let tested = squall_in(Some(here), url, &["test", "hi-java"]).await.ok();
    let said = format!("{}{}", tested.stdout, tested.stderr);
    assert!(
        said.contains("PASS HelloTest.testGreetsByNameAndCountsVisits"),
        "{said}"
    );
    let deployed = squall_in(Some(here), url, &["deploy", "hi-java"])
        .await
        .ok();
    assert!(
        deployed.stdout.starts_with("deployed hi-java "),
        "{deployed:#?}"
    );
    let answer = squall_in(
        Some(here),
        url,
        &["invoke", "hi-java", "--data", r#"{"name":"Ada"}"#],
    )
    .await
    .ok();
    let answer: serde_json::Value = serde_json::from_str(&answer.stdout).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"message": "Hello, Ada!", "visits": 1})
    );

    // A failing test fails `squall test`, naming it; code javac refuses fails the deploy.
    let main = here.join("hi-java/src/app/Hello.java");
    let code = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        code.replace("\" + name + \"!\"", "\" + name + \"?\""),
    )
    .unwrap();
    let failed = squall_in(Some(here), url, &["test", "hi-java"]).await;
    assert_eq!(failed.code, Some(1), "{failed:#?}");
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        said.contains("FAIL HelloTest.testGreetsByNameAndCountsVisits"),
        "{said}"
    );
    std::fs::write(&main, code.replace("return Map.of(", "return Map.off(")).unwrap();
    let refused = squall_in(Some(here), url, &["deploy", "hi-java"]).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("javac failed"), "{refused:#?}");
    assert!(refused.stderr.contains("Hello.java"), "{refused:#?}");
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
