//! Go functions through real workers: a folder built by `squall deploy` with the Go toolchain against the SDK's Go package, with the context, logs, errors, typed retries, host services and web responses; panics and faults reported; one Go library per process.

use futures::StreamExt as _;
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_tests::{check_web_answers, eventually, go_function, go_toolchain, squall, Cluster};
use std::time::Duration;

const PROBE: &str = r#"package main

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	squall "squall.dev/sdk"
)

type event struct {
	Op string `json:"op"`
	N  int    `json:"n"`
}

var crashes *int

func probe(ctx *squall.Context, in event) (any, error) {
	switch in.Op {
	case "context":
		secrets := ctx.Secrets()
		return map[string]any{
			"function":     ctx.FunctionName(),
			"invocation":   ctx.InvocationID(),
			"attempt":      ctx.Attempt(),
			"remaining_ok": ctx.Remaining() > 0 && ctx.Remaining() <= 5*time.Second,
			"config":       ctx.ConfigString("greeting"),
			"secrets":      len(secrets),
			"source":       ctx.Trigger()["source"],
			"cancelled":    ctx.Cancelled(),
		}, nil
	case "log":
		ctx.Info("logged line")
		ctx.Log(squall.LevelWarn, "warned line")
		return "ok", nil
	case "error":
		return nil, fmt.Errorf("bad input %d", in.N)
	case "retry":
		if ctx.Attempt() == 1 {
			return nil, squall.Retry(50*time.Millisecond, "not yet")
		}
		return map[string]int{"attempt": ctx.Attempt()}, nil
	case "kv":
		if err := ctx.KVPut("greeting", []byte("hello"), time.Minute); err != nil {
			return nil, err
		}
		got, _, err := ctx.KVGet("greeting")
		if err != nil {
			return nil, err
		}
		if err := ctx.KVDelete("greeting"); err != nil {
			return nil, err
		}
		_, found, err := ctx.KVGet("greeting")
		bad := ctx.KVPut("bad key!", nil, 0)
		var hostErr *squall.HostError
		return map[string]any{"got": string(got), "after_delete": found, "err": err,
			"bad_key": errors.As(bad, &hostErr) && hostErr.Code == "invalid"}, nil
	case "publish":
		return "published", ctx.Publish("events.go.done", []byte(`{"from":"`+ctx.FunctionName()+`"}`))
	case "panic":
		panic("the probe panics")
	case "nil":
		return *crashes, nil
	case "fault":
		// Not a nil dereference: the Go runtime cannot recover it and the process dies.
		return *(*int)(unsafe.Pointer(uintptr(0xdead0000))), nil
	}
	return map[string]any{"echo": in}, nil
}

func init() { squall.HandleJSON(probe) }

func main() {}
"#;

/// Deploys the probe from a folder with `squall deploy`, as a user does.
async fn deploy_probe(cluster: &Cluster, dir: &std::path::Path, name: &str) {
    go_toolchain();
    let extra = "timeout_ms = 5000\nmax_attempts = 2\n[function.config]\ngreeting = \"hi\"\n[function.config.secrets]\nTOKEN = \"t\"";
    let folder = go_function(dir, name, extra, PROBE);
    let deployed = squall(&cluster.url, &["deploy", folder.to_str().unwrap()]).await;
    assert!(deployed.succeeded(), "{deployed:#?}");
    squall_tests::wait_workers_ready(cluster, name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_go_function_gets_the_context_logs_errors_retries_and_host_services() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    deploy_probe(&cluster, dir.path(), "go-probe").await;

    let (status, id, text) = cluster
        .call_json("go-probe", serde_json::json!({"op": "context"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["function"], "go-probe");
    assert_eq!(answer["invocation"], id.as_str());
    assert_eq!(answer["attempt"], 1);
    assert_eq!(answer["remaining_ok"], true, "{answer}");
    assert_eq!(answer["config"], "hi");
    assert_eq!(answer["secrets"], 1);
    assert_eq!(answer["source"], "http");
    assert_eq!(answer["cancelled"], false);

    let (status, id, _) = cluster
        .call_json("go-probe", serde_json::json!({"op": "log"}))
        .await;
    assert_eq!(status, 200);
    let logs = cluster.finished(&id).await.logs;
    let text: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    for line in ["logged line", "warned line"] {
        assert!(text.contains(&line), "{line} in {text:?}");
    }

    let (status, id, _) = cluster
        .call_json("go-probe", serde_json::json!({"op": "error", "n": 7}))
        .await;
    assert_ne!(status, 200);
    let failed = cluster.finished(&id).await;
    assert_eq!(failed.status, InvocationStatus::Failed);
    let error = failed.error.expect("an error");
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::Error, "bad input 7")
    );
    assert_eq!(failed.attempts, 1, "an error is not retried");

    let (_, id, _) = cluster
        .call_json("go-probe", serde_json::json!({"op": "retry"}))
        .await;
    let retried = cluster.finished(&id).await;
    assert_eq!(retried.status, InvocationStatus::Succeeded);
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.output.as_deref(), Some(r#"{"attempt":2}"#));

    let (status, _, text) = cluster
        .call_json("go-probe", serde_json::json!({"op": "kv"}))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"got": "hello", "after_delete": false, "err": null, "bad_key": true})
    );

    let client = cluster.nats_client().await;
    let mut events = client.subscribe("events.go.done").await.unwrap();
    // The subscription is the server's before the function publishes.
    client.flush().await.unwrap();
    let (status, _, text) = cluster
        .call_json("go-probe", serde_json::json!({"op": "publish"}))
        .await;
    assert_eq!((status, text.as_str()), (200, r#""published""#));
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the publish arrives")
        .unwrap();
    assert_eq!(&event.payload[..], br#"{"from":"go-probe"}"#);

    // A panic and a nil dereference are recovered at the boundary: a panic with its message,
    // the stack in the logs, and the process serves on.
    for (op, message) in [
        ("panic", "panic: the probe panics"),
        (
            "nil",
            "panic: runtime error: invalid memory address or nil pointer dereference",
        ),
    ] {
        let (status, id, _) = cluster
            .call_json("go-probe", serde_json::json!({"op": op}))
            .await;
        assert_ne!(status, 200);
        let failed = cluster.finished(&id).await;
        let error = failed.error.expect("an error");
        assert_eq!(
            (error.kind, error.message.as_str()),
            (ErrorKind::Panic, message),
            "{op}"
        );
        let logs: Vec<&str> = failed.logs.iter().map(|l| l.message.as_str()).collect();
        assert!(
            logs.iter()
                .any(|l| l.contains("goroutine") && l.contains("main.probe")),
            "the stack of {op} in {logs:?}"
        );
    }
    let (status, _, text) = cluster
        .call_json("go-probe", serde_json::json!({"op": "echo"}))
        .await;
    assert_eq!(status, 200, "the process serves on after panics: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fault_the_go_runtime_cannot_recover_is_a_crash_of_its_own_process_only() {
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let _fleet = cluster.start_fleet("fleet", &["--interval-ms", "100"]);
    let dir = tempfile::tempdir().unwrap();
    deploy_probe(&cluster, dir.path(), "go-fault").await;
    cluster.deploy_example("hello", None).await;
    squall_tests::wait_workers_ready(&cluster, "hello").await;

    let (_, id, _) = cluster
        .call_json("go-fault", serde_json::json!({"op": "fault"}))
        .await;
    let view = cluster.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(view.status, InvocationStatus::DeadLettered, "{view:?}");
    assert_eq!(view.error.as_ref().map(|e| e.kind), Some(ErrorKind::Crash));
    assert_eq!(view.attempts, 2);
    // Another function never noticed, and the Go function serves again from a fresh process.
    let response = cluster.invoke("hello", r#"{"name": "still here"}"#).await;
    assert_eq!(response.status(), 200);
    eventually(
        Duration::from_secs(30),
        "the Go function to answer again",
        async || match cluster
            .call_json("go-fault", serde_json::json!({"op": "log"}))
            .await
        {
            (200, _, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_of_a_go_function_runs_in_a_fresh_process() {
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let _fleet = cluster.start_fleet("fleet", &["--min", "1", "--interval-ms", "100"]);
    go_toolchain();
    let dir = tempfile::tempdir().unwrap();
    let version = |n: u32| {
        format!(
            "package main\n\nimport squall \"squall.dev/sdk\"\n\nfunc init() {{\n\tsquall.Handle(func(ctx *squall.Context, in []byte) ([]byte, error) {{ return []byte(\"{n}\"), nil }})\n}}\n\nfunc main() {{}}\n"
        )
    };
    for n in [1, 2] {
        let folder = go_function(dir.path(), "go-versions", "", &version(n));
        let deployed = squall(&cluster.url, &["deploy", folder.to_str().unwrap()]).await;
        assert!(deployed.succeeded(), "{deployed:#?}");
        eventually(
            Duration::from_secs(30),
            "the version to answer",
            async || match cluster
                .call_json("go-versions", serde_json::json!({}))
                .await
            {
                (200, _, text) if text == n.to_string() => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_go_web_function_gets_the_request_and_answers_with_status_headers_and_cookies() {
    let cluster = Cluster::start().await;
    go_toolchain();
    let dir = tempfile::tempdir().unwrap();
    let source = r#"package main

import squall "squall.dev/sdk"

func init() {
	squall.HandleWeb(func(ctx *squall.Context, r *squall.WebRequest) (*squall.WebResponse, error) {
		answer, err := squall.JSONResponse(201, map[string]any{
			"method": r.Method, "query": r.Query, "body": string(r.Body), "agent": r.Header("User-Agent"),
		})
		if err != nil {
			return nil, err
		}
		return answer.WithHeader("x-path", r.Path).WithCookie("seen=1; Path=/"), nil
	})
}

func main() {}
"#;
    let folder = go_function(
        dir.path(),
        "go-web",
        "[function.web]\nauth = \"none\"",
        source,
    );
    let deployed = squall(&cluster.url, &["deploy", folder.to_str().unwrap()]).await;
    assert!(deployed.succeeded(), "{deployed:#?}");
    check_web_answers(&cluster, "go-web").await;
}

/// The Go SDK's own tests (its test context, `StreamWrite` through a real cgo host call) pass
/// with the toolchain functions build with, offline.
#[test]
fn the_go_sdks_own_tests_pass() {
    let go = go_toolchain();
    let sdk = squall_tests::workspace_root().join("functions/sdk/go");
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(go)
        .args(["test", "-count=1", "."])
        .current_dir(&sdk)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "1")
        .env("GOCACHE", cache.path().join("build"))
        .env("GOPATH", cache.path().join("path"))
        .output()
        .expect("run go test");
    assert!(
        out.status.success(),
        "go test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
