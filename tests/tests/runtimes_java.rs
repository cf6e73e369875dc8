//! Java functions through real workers: a folder compiled by `squall deploy` with javac and a jar deployed as it is, with the context, logs, exceptions, typed retries, host services, web responses, a refused `System.exit`, and the JVM's signals chained beside the worker's.

use futures::StreamExt as _;
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_tests::{check_web_answers, squall, workspace_root, Cluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PROBE: &str = r#"package probe;

import java.util.List;
import java.util.Map;
import squall.Context;
import squall.JsonHandler;
import squall.Retry;

public class Probe implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) throws Exception {
        String op = event instanceof Map<?, ?> m && m.get("op") instanceof String s ? s : "";
        switch (op) {
            case "context":
                return Map.of(
                    "function", ctx.functionName(),
                    "invocation", ctx.invocationId(),
                    "attempt", ctx.attempt(),
                    "remaining_ok", ctx.remainingTimeMillis() > 0 && ctx.remainingTimeMillis() <= 5000,
                    "config", ctx.config().get("greeting"),
                    "secrets", ctx.secrets().size(),
                    "source", ctx.trigger().get("source"));
            case "log":
                ctx.info("logged line");
                System.out.println("printed line");
                return "ok";
            case "throw":
                throw new IllegalStateException("bad input " + ((Map<?, ?>) event).get("n"));
            case "npe":
                String nothing = null;
                return nothing.length();
            case "retry":
                if (ctx.attempt() == 1) {
                    throw new Retry(50, "not yet");
                }
                return Map.of("attempt", ctx.attempt());
            case "kv":
                ctx.kvPut("greeting", "hello", 60_000);
                String got = ctx.kvGetText("greeting");
                ctx.kvDelete("greeting");
                return Map.of("got", got, "after_delete", ctx.kvGet("greeting") == null);
            case "publish":
                ctx.publish("events.java.done", "{\"from\":\"" + ctx.functionName() + "\"}");
                return "published";
            case "exit":
                System.exit(3);
                return "still here";
            default:
                return Map.of("echo", event == null ? "" : event);
        }
    }
}
"#;

/// Writes a Java function folder (`src/` with `files`) named `name` into `dir`.
fn java_folder(
    dir: &Path,
    name: &str,
    handler: &str,
    extra: &str,
    files: &[(&str, &str)],
) -> PathBuf {
    let folder = dir.join(name);
    for (path, text) in files {
        let path = folder.join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(
        folder.join("squall.toml"),
        format!("[function]\nname = \"{name}\"\nruntime = \"java17\"\nhandler = \"{handler}\"\n{extra}\n"),
    )
    .unwrap();
    folder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_java_handler_gets_the_context_logs_exceptions_retries_and_host_services() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "timeout_ms = 5000\nmax_attempts = 3\n[function.config]\ngreeting = \"hi\"\n[function.config.secrets]\nTOKEN = \"t\"";
    let folder = java_folder(
        dir.path(),
        "java-probe",
        "probe.Probe",
        extra,
        &[("probe/Probe.java", PROBE)],
    );
    let deployed = squall(&cluster.url, &["deploy", folder.to_str().unwrap()]).await;
    assert!(deployed.succeeded(), "{deployed:#?}");
    squall_tests::wait_workers_ready(&cluster, "java-probe").await;

    let (status, id, text) = cluster
        .call_json("java-probe", serde_json::json!({"op": "context"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["function"], "java-probe");
    assert_eq!(answer["invocation"], id.as_str());
    assert_eq!(answer["attempt"], 1);
    assert_eq!(answer["remaining_ok"], true, "{answer}");
    assert_eq!(answer["config"], "hi");
    assert_eq!(answer["secrets"], 1);
    assert_eq!(answer["source"], "http");

    let (status, id, _) = cluster
        .call_json("java-probe", serde_json::json!({"op": "log"}))
        .await;
    assert_eq!(status, 200);
    let logs = cluster.finished(&id).await.logs;
    let text: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    for line in ["logged line", "printed line"] {
        assert!(text.iter().any(|t| t.contains(line)), "{line} in {text:?}");
    }

    // An exception is a function error with its class and message, the stack in the logs; a
    // NullPointerException (the JVM's own SIGSEGV handling) is one too.
    for (input, message) in [
        (
            serde_json::json!({"op": "throw", "n": 7}),
            "java.lang.IllegalStateException: bad input 7",
        ),
        (
            serde_json::json!({"op": "npe"}),
            "java.lang.NullPointerException",
        ),
    ] {
        let (status, id, _) = cluster.call_json("java-probe", input).await;
        assert_ne!(status, 200);
        let failed = cluster.finished(&id).await;
        assert_eq!(failed.status, InvocationStatus::Failed);
        assert_eq!(failed.attempts, 1, "an exception is not retried");
        let error = failed.error.expect("an error");
        assert_eq!(error.kind, ErrorKind::Error);
        assert!(error.message.starts_with(message), "{}", error.message);
        let logs: Vec<&str> = failed.logs.iter().map(|l| l.message.as_str()).collect();
        assert!(
            logs.iter().any(|l| l.contains("at probe.Probe.handle")),
            "the stack in {logs:?}"
        );
    }

    let (_, id, _) = cluster
        .call_json("java-probe", serde_json::json!({"op": "retry"}))
        .await;
    let retried = cluster.finished(&id).await;
    assert_eq!(retried.status, InvocationStatus::Succeeded);
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.output.as_deref(), Some(r#"{"attempt":2}"#));

    let (status, _, text) = cluster
        .call_json("java-probe", serde_json::json!({"op": "kv"}))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"got": "hello", "after_delete": true})
    );

    let client = cluster.nats_client().await;
    let mut events = client.subscribe("events.java.done").await.unwrap();
    // The subscription is the server's before the function publishes.
    client.flush().await.unwrap();
    let (status, _, _) = cluster
        .call_json("java-probe", serde_json::json!({"op": "publish"}))
        .await;
    assert_eq!(status, 200);
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the publish arrives")
        .unwrap();
    assert_eq!(&event.payload[..], br#"{"from":"java-probe"}"#);

    // System.exit is refused, not obeyed: the call fails and the process serves on.
    let (status, id, _) = cluster
        .call_json("java-probe", serde_json::json!({"op": "exit"}))
        .await;
    assert_ne!(status, 200);
    let refused = cluster.finished(&id).await.error.expect("an error");
    assert!(refused.message.contains("SecurityException"), "{refused:?}");
    let (status, _, text) = cluster
        .call_json("java-probe", serde_json::json!({"op": "echo"}))
        .await;
    assert_eq!(
        status, 200,
        "the process lives on after System.exit: {text}"
    );

    // The JVM chains its signals through libjsig, preloaded into the function's process.
    let worker = cluster.workers[0].children();
    let chained = worker.iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|maps| maps.contains("libjsig.so") && maps.contains("libjvm.so"))
    });
    assert!(
        chained,
        "a worker process with the JVM and libjsig: {worker:?}"
    );
}

/// Compiles `source` (class `class`, in package `pkg`) against the SDK and packs it into a jar.
fn jar(dir: &Path, class: &str, source: &str) -> PathBuf {
    let src = dir.join("jar-src");
    let path = src.join(class.replace('.', "/") + ".java");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, source).unwrap();
    let classes = dir.join("jar-classes");
    let status = Command::new("javac")
        .args(["--release", "17", "-implicit:none", "-d"])
        .arg(&classes)
        .arg("-sourcepath")
        .arg(workspace_root().join("runtimes/java/java"))
        .arg(&path)
        .status()
        .expect("run javac");
    assert!(status.success(), "javac");
    let jar = dir.join("app.jar");
    let status = Command::new("jar")
        .arg("cf")
        .arg(&jar)
        .arg("-C")
        .arg(&classes)
        .arg(".")
        .status()
        .expect("run jar");
    assert!(status.success(), "jar");
    jar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jar_deploys_with_its_handler_class_and_a_web_function_answers_with_status_headers_and_cookies(
) {
    // Two Java functions: each in processes of its own (one JVM per process).
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let _fleet = cluster.start_fleet("fleet", &["--interval-ms", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let source = r#"package app;

import squall.Context;
import squall.Handler;

public class Upper implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        return new String(input, java.nio.charset.StandardCharsets.UTF_8).toUpperCase().getBytes();
    }
}
"#;
    let jar = jar(dir.path(), "app.Upper", source);
    let jar = jar.to_str().unwrap();
    // A jar needs its handler class; the deploy says so.
    let refused = squall(&cluster.url, &["deploy", jar, "--name", "java-jar"]).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("--handler"), "{refused:#?}");
    // A class that is not there is refused at deploy, naming it.
    let args = |handler: &'static str| {
        [
            "deploy",
            jar,
            "--name",
            "java-jar",
            "--runtime",
            "java17",
            "--handler",
            handler,
        ]
    };
    let missing = squall(&cluster.url, &args("app.Nope")).await;
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(missing.stderr.contains("app.Nope"), "{missing:#?}");
    let deployed = squall(&cluster.url, &args("app.Upper")).await;
    assert!(deployed.succeeded(), "{deployed:#?}");
    squall_tests::wait_workers_ready(&cluster, "java-jar").await;
    let response = cluster.invoke("java-jar", "shout").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "SHOUT");

    let site = r#"package web;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;
import squall.WebResponse;

public class Site implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        Map<?, ?> request = (Map<?, ?>) event;
        Map<?, ?> headers = (Map<?, ?>) request.get("headers");
        return WebResponse.status(201)
            .header("content-type", "application/json")
            .header("x-path", (String) request.get("path"))
            .cookie("seen=1; Path=/")
            .body(squall.Json.write(Map.of(
                "method", request.get("method"),
                "query", request.get("query"),
                "body", request.get("body"),
                "agent", headers.get("user-agent"))));
    }
}
"#;
    let folder = java_folder(
        dir.path(),
        "java-web",
        "web.Site",
        "[function.web]\nauth = \"none\"",
        &[("web/Site.java", site)],
    );
    let deployed = squall(&cluster.url, &["deploy", folder.to_str().unwrap()]).await;
    assert!(deployed.succeeded(), "{deployed:#?}");
    check_web_answers(&cluster, "java-web").await;
}
