//! The `squall` CLI driving real clusters: deploy, invoke, get, ls, errors, and `squall up`.

use futures::StreamExt as _;
use squall_tests::{
    built, eventually, free_port, nats_server_binary, squall, workspace_root, Cluster, Process,
    Text,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The id in `invocation <id> is <status>; see: squall get <id>`.
fn invocation_id(line: &str) -> String {
    let id = line
        .strip_prefix("invocation ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no invocation id in {line:?}"));
    assert!(
        line.trim_end().ends_with(&format!("see: squall get {id}")),
        "{line:?}"
    );
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_builds_and_deploys_a_function_directory_then_invokes_it() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let hello = workspace_root().join("functions/examples/hello");

    let deployed = squall(url, &["deploy", hello.to_str().unwrap()]).await.ok();
    assert!(
        deployed.stdout.starts_with("deployed hello sha256:"),
        "{deployed:#?}"
    );

    // Stdout is not a terminal here, so the output comes back byte for byte.
    let greeting = squall(url, &["invoke", "hello", "--data", r#"{"name":"Ada"}"#])
        .await
        .ok();
    assert_eq!(greeting.stdout, r#"{"greeting":"Hello, Ada!"}"#);

    // `--json` wraps the output in an invocation record.
    let json = squall(url, &["--json", "invoke", "hello"]).await.ok();
    let record = parse_json(&json.stdout);
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["output"], r#"{"greeting":"Hello, world!"}"#);
    assert!(record["invocation_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));

    let accepted = squall(
        url,
        &["invoke", "hello", "--async", "--data", r#"{"name":"Lin"}"#],
    )
    .await
    .ok();
    let id = invocation_id(&accepted.stdout);
    let shown = eventually(
        Duration::from_secs(20),
        "the invocation to succeed",
        async || {
            let shown = squall(url, &["get", &id]).await.ok();
            match shown.stdout.contains("status      succeeded") {
                true => Ok(shown),
                false => Err(shown),
            }
        },
    )
    .await;
    assert!(
        shown.stdout.contains(&format!("invocation  {id}")),
        "{shown:#?}"
    );
    assert!(shown.stdout.contains("function    hello"), "{shown:#?}");
    assert!(shown.stdout.contains("attempts    1"), "{shown:#?}");
    assert!(
        shown
            .stdout
            .contains(r#"output      {"greeting":"Hello, Lin!"}"#),
        "{shown:#?}"
    );
    let view = parse_json(&squall(url, &["--json", "get", &id]).await.ok().stdout);
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["function"], "hello");

    let listed = squall(url, &["ls"]).await.ok();
    let mut lines = listed.stdout.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{listed:#?}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "hello", "{listed:#?}");
    assert_eq!(row[1].len(), 12, "{listed:#?}");
    let list = parse_json(&squall(url, &["ls", "--json"]).await.ok().stdout);
    assert_eq!(list["functions"][0]["name"], "hello");
    // The `[function.config]` of squall.toml was deployed with it.
    assert_eq!(
        list["functions"][0]["config"]["config"]["greeting"],
        "Hello"
    );
    assert_eq!(list["functions"][0]["config"]["timeout_ms"], 30000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploys_a_library_file_under_the_given_name() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let library = built().library("c-hello").to_str().unwrap().to_string();

    let deployed = squall(url, &["--json", "deploy", &library, "--name", "c-hello"])
        .await
        .ok();
    let answer = parse_json(&deployed.stdout);
    assert_eq!(answer["name"], "c-hello");
    assert!(answer["version"].as_str().unwrap().starts_with("sha256:"));

    let greeting = squall(url, &["invoke", "c-hello", "--data", "Grace"])
        .await
        .ok();
    assert_eq!(greeting.stdout, "Hello from C, Grace!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_an_unknown_function_with_the_api_message() {
    let cluster = Cluster::start().await;
    let run = squall(&cluster.url, &["invoke", "nobody", "--data", "x"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(
        run.stderr
            .contains(r#"error: function "nobody" is not deployed (function_not_found)"#),
        "{run:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_a_failed_invocation_and_exits_non_zero() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let library = built().library("fail").to_str().unwrap().to_string();
    squall(url, &["deploy", &library]).await.ok();

    let run = squall(url, &["invoke", "fail"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("fail: this function always fails"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("kind: error"), "{run:#?}");

    let run = squall(url, &["--json", "invoke", "fail"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let record = parse_json(&run.stdout);
    assert_eq!(record["status"], "failed");
    assert_eq!(record["error"]["kind"], "error");
    let id = record["invocation_id"].as_str().unwrap();
    let shown = squall(url, &["get", id]).await.ok();
    assert!(shown.stdout.contains("status      failed"), "{shown:#?}");
    assert!(
        shown
            .stdout
            .contains("error       error: fail: this function always fails"),
        "{shown:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_without_a_cluster_names_the_url_and_suggests_squall_up() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = squall(&url, &["ls"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(&url), "{run:#?}");
    assert!(run.stderr.contains("squall up"), "{run:#?}");
}

/// A function directory holding only `squall.toml` with `text`.
fn function_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("squall.toml"), text).expect("write squall.toml");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_a_malformed_squall_toml_naming_the_line() {
    let dir = function_dir("[function]\nname = \"broken\"\ntimeout_ms = = 5\n");
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = squall(&url, &["deploy", dir.path().to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("squall.toml"), "{run:#?}");
    assert!(run.stderr.contains("line 3"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_an_unknown_function_field_naming_it() {
    let dir = function_dir("[function]\nname = \"typo\"\ntimeout = 5\n");
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = squall(&url, &["deploy", dir.path().to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("unknown field `timeout`"), "{run:#?}");
}

/// Processes whose command line mentions `needle`, by pid.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .filter(|pid| *pid != std::process::id())
        .collect()
}

/// Kills what `squall up` started if the test fails before it stops them itself.
struct KillLeftovers(PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.0.to_string_lossy()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn wait_exit(process: &mut Process, timeout: Duration) -> Option<std::process::ExitStatus> {
    squall_tests::poll_blocking(timeout, || process.child.try_wait().ok().flatten()).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squall_up_runs_a_local_cluster_and_stops_cleanly_on_ctrl_c() {
    let built = tokio::task::spawn_blocking(built).await.expect("build");
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let _leftovers = KillLeftovers(state.clone());
    let http_port = free_port();
    let nats_port = loop {
        let port = free_port();
        if port != http_port {
            break port;
        }
    };
    let web_port = free_port();
    let mut command = Command::new(&built.squall);
    command
        .env("NATS_SERVER", nats_server_binary())
        .env("SQUALL_DISPATCHER_BIN", &built.dispatcher)
        .env("SQUALL_WORKER_BIN", &built.worker)
        .arg("up")
        .arg("--state-dir")
        .arg(&state)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--web-addr")
        .arg(format!("127.0.0.1:{web_port}"))
        .arg("--nats-port")
        .arg(nats_port.to_string());
    let mut up = Process::spawn("squall up", command, dir.path().join("up.log")).expect("spawn");
    let url = format!("http://127.0.0.1:{http_port}");

    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(40),
        "squall up to be ready",
        async || {
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("squall up exited with {status}:\n{}", up.output());
            }
            match http.get(format!("{url}/readyz")).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                answer => Err((answer, Text(up.output()), Text(logs(&state)))),
            }
        },
    )
    .await;
    // The banner comes after readiness; give it a moment to reach the log.
    eventually(Duration::from_secs(5), "the banner", async || {
        let output = up.output();
        match output.contains("press Ctrl-C to stop") {
            true => Ok(()),
            false => Err(Text(output)),
        }
    })
    .await;
    assert!(up.output().contains(&url), "{}", up.output());
    // Web functions have their own origin, which serves nothing of the API's.
    let web = format!("http://127.0.0.1:{web_port}");
    assert!(
        up.output()
            .contains(&format!("web functions: {web}/function/<name>")),
        "{}",
        up.output()
    );
    let answer = http
        .get(format!("{web}/v1/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);

    // `squall up` made an admin key: the API refuses callers without it.
    let key_file = state.join("admin.key");
    assert!(
        up.output().contains(&key_file.display().to_string()),
        "{}",
        up.output()
    );
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    let refused = squall(&url, &["--api-key", "wrong-key", "ls"]).await;
    assert!(
        !refused.succeeded() && refused.stderr.contains("unauthorized"),
        "{refused:#?}"
    );
    let library = built.library("c-hello").to_str().unwrap().to_string();
    let deployed = squall(
        &url,
        &["--api-key", &key, "deploy", &library, "--name", "c-hello"],
    )
    .await;
    assert!(
        deployed.succeeded(),
        "{deployed:#?}\n{}\n{}",
        up.output(),
        logs(&state)
    );
    let greeting = squall(
        &url,
        &["--api-key", &key, "invoke", "c-hello", "--data", "Ada"],
    )
    .await;
    assert!(greeting.succeeded(), "{greeting:#?}\n{}", logs(&state));
    assert_eq!(greeting.stdout, "Hello from C, Ada!");
    assert!(!processes_mentioning(&state.to_string_lossy()).is_empty());
    let nats = format!("nats://127.0.0.1:{nats_port}").parse().unwrap();
    broker_admits_only_its_users(&state, vec![nats], "c-hello").await;

    let status = Command::new("kill")
        .args(["-INT", &up.child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut up, Duration::from_secs(15));
        (status, up.output())
    })
    .await
    .expect("join");
    let (status, output) = exited;
    let status = status.unwrap_or_else(|| panic!("squall up did not stop:\n{output}"));
    assert!(
        status.success(),
        "squall up exited with {status}:\n{output}"
    );
    assert!(port_is_free(http_port), "the HTTP port is still taken");
    assert!(port_is_free(nats_port), "the NATS port is still taken");
    let left = processes_mentioning(&state.to_string_lossy());
    assert!(left.is_empty(), "children still running: {left:?}");
    for log in ["nats-server.log", "dispatcher.log", "worker.log"] {
        assert!(state.join("logs").join(log).is_file(), "no {log}");
    }
}

/// The broker passwords `squall up` generated in `state` (`broker.env`), by variable; the file
/// must be owner-only.
fn broker_passwords(state: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = state.join("broker.env");
    let mode = std::fs::metadata(&path)
        .expect("broker.env")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "broker.env is not owner-only");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A `squall up` broker refuses a connection without credentials (and with a wrong password),
/// and admits the client role with the generated password: it submits a job to `function` over
/// plain NATS and the worker runs it (the result arrives on `results.>`). Returns a connection
/// logged in as the dispatcher, which has the JetStream API.
async fn broker_admits_only_its_users(
    state: &Path,
    servers: Vec<async_nats::ServerAddr>,
    function: &str,
) -> async_nats::Client {
    let passwords = broker_passwords(state);
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new().connect(servers.clone()),
    )
    .await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a connection without credentials was accepted"
    );
    let wrong = async_nats::ConnectOptions::with_user_and_password("client".into(), "nope".into())
        .connect(servers.clone())
        .await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    let client = async_nats::ConnectOptions::with_user_and_password(
        "client".into(),
        passwords["SQUALL_CLIENT_PASSWORD"].clone(),
    )
    .custom_inbox_prefix("_INBOX_client")
    .connect(servers.clone())
    .await
    .expect("the client role logs in");
    let mut results = client
        .subscribe(format!("results.{function}.>"))
        .await
        .expect("subscribe to results");
    client.flush().await.expect("flush");
    let js = async_nats::jetstream::new(client.clone());
    js.publish(format!("jobs.{function}"), "Grace".into())
        .await
        .expect("publish a job")
        .await
        .expect("JetStream stored the job");
    let result = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result within 20 s")
        .expect("a result");
    assert_eq!(&result.payload[..], b"Hello from C, Grace!");
    async_nats::ConnectOptions::with_user_and_password(
        "dispatcher".into(),
        passwords["SQUALL_DISPATCHER_PASSWORD"].clone(),
    )
    .custom_inbox_prefix("_INBOX_dispatcher")
    .connect(servers)
    .await
    .expect("the dispatcher role logs in")
}

/// The logs of a `squall up` state folder, for failure messages.
fn logs(state: &Path) -> String {
    ["nats-server.log", "dispatcher.log", "worker.log"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(state.join("logs").join(name)).unwrap_or_default();
            format!("--- {name} ---\n{text}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_shows_replays_and_removes_dead_letters() {
    let cluster = Cluster::start().await;
    cluster
        .deploy(
            "flaky",
            built().library("fail"),
            Some(serde_json::json!({"max_attempts": 1})),
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = squall(
            &cluster.url,
            &["--json", "invoke", "flaky", "--data", r#"{"retry": true}"#],
        )
        .await;
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        ids.push(
            parse_json(&run.stdout)["invocation_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // The worker writes the dead letter right after the terminal result.
    eventually(
        Duration::from_secs(20),
        "both dead letters listed",
        async || {
            let run = squall(
                &cluster.url,
                &["--json", "dlq", "ls", "--function", "flaky"],
            )
            .await;
            assert_eq!(run.code, Some(0), "{}", run.stderr);
            let listed = parse_json(&run.stdout)["dead_letters"].clone();
            (listed.as_array().unwrap().len() == 2)
                .then_some(())
                .ok_or(listed)
        },
    )
    .await;
    let table = squall(&cluster.url, &["dlq", "ls"]).await;
    assert!(
        table.stdout.contains(&ids[0]) && table.stdout.contains("retry"),
        "{}",
        table.stdout
    );
    let show = squall(&cluster.url, &["dlq", "show", &ids[0]]).await;
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    assert!(
        show.stdout.contains("attempt 1:") && show.stdout.contains("fail: asked to retry"),
        "{}",
        show.stdout
    );

    let rm = squall(&cluster.url, &["dlq", "rm", &ids[1]]).await;
    assert_eq!(rm.code, Some(0), "{}", rm.stderr);
    cluster
        .deploy("flaky", built().library("hello"), None)
        .await;
    let replay = squall(&cluster.url, &["--json", "dlq", "replay", &ids[0]]).await;
    assert_eq!(replay.code, Some(0), "{}", replay.stderr);
    let new_id = parse_json(&replay.stdout)["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = cluster
        .wait_terminal(&new_id, Duration::from_secs(20))
        .await;
    assert_eq!(view.status, squall_api::InvocationStatus::Succeeded);
    let empty = squall(&cluster.url, &["dlq", "ls"]).await;
    assert_eq!(empty.stdout, "no dead letters\n");
    let missing = squall(&cluster.url, &["dlq", "show", &ids[1]]).await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("no dead letter for invocation"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_an_invocations_function_logs() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    let run = squall(
        &cluster.url,
        &["--json", "invoke", "hello", "--data", r#"{"name":"Logs"}"#],
    )
    .await
    .ok();
    let id = parse_json(&run.stdout)["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let logs = squall(&cluster.url, &["logs", &id]).await.ok();
    assert_eq!(logs.stdout, "INFO  hello: greeting Logs\n");
    let missing = squall(
        &cluster.url,
        &["logs", "0193a5c2-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(missing.code, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cancels_a_queued_invocation_and_a_backlog_and_says_why_it_cannot_cancel_a_finished_one(
) {
    // No worker: everything submitted stays queued.
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    cluster.deploy_example("hello", None).await;
    let ids = cluster.submit_async("hello", r#"{"name":"x"}"#, 3).await;
    let run = squall(&cluster.url, &["cancel", &ids[0]]).await.ok();
    assert_eq!(run.stdout, format!("cancelled {} (hello)\n", ids[0]));
    let shown = squall(&cluster.url, &["get", &ids[0]]).await.ok();
    assert!(shown.stdout.contains("status      cancelled"), "{shown:#?}");
    let again = squall(&cluster.url, &["cancel", &ids[0]]).await;
    assert_eq!(again.code, Some(1), "{again:#?}");
    assert!(
        again.stderr.contains("already ended as cancelled"),
        "{again:#?}"
    );
    let run = squall(&cluster.url, &["cancel", "--queued", "hello"])
        .await
        .ok();
    assert_eq!(
        run.stdout,
        "cancelled 2 queued invocation(s) of hello (1 had already finished)\n"
    );
    let usage = squall(&cluster.url, &["cancel"]).await;
    assert_eq!(usage.code, Some(2), "{usage:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploys_schedules_and_triggers_from_squall_toml_and_manages_them() {
    let cluster = Cluster::start().await;
    let url = cluster.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let library = built().library("echo");
    std::fs::write(
        dir.path().join("squall.toml"),
        format!(
            r#"
[function]
name = "echo"

[[schedules]]
name = "hourly-echo"
cron = "0 * * * *"
timezone = "Europe/Paris"
payload = {{ from = "toml" }}

[[triggers]]
name = "orders"
subject = "events.orders.>"

[build]
command = ["cp", "{}", "libecho.so"]
artifact = "libecho.so"
"#,
            library.display()
        ),
    )
    .unwrap();
    let deployed = squall(url, &["deploy", dir.path().to_str().unwrap()])
        .await
        .ok();
    assert!(
        deployed.stdout.starts_with("deployed echo sha256:"),
        "{deployed:#?}"
    );
    assert!(
        deployed.stdout.contains("schedule hourly-echo set"),
        "{deployed:#?}"
    );
    assert!(
        deployed.stdout.contains("trigger orders set"),
        "{deployed:#?}"
    );

    let schedules = squall(url, &["schedule", "ls"]).await.ok();
    assert!(schedules.stdout.contains("hourly-echo"), "{schedules:#?}");
    assert!(schedules.stdout.contains("0 0 * * * *"), "{schedules:#?}");
    assert!(schedules.stdout.contains("Europe/Paris"), "{schedules:#?}");
    let set = squall(
        url,
        &[
            "--json",
            "schedule",
            "set",
            "minutely",
            "--function",
            "echo",
            "--cron",
            "* * * * *",
        ],
    )
    .await
    .ok();
    let view = parse_json(&set.stdout);
    assert_eq!(view["next"].as_array().unwrap().len(), 5);
    let bad = squall(
        url,
        &[
            "schedule",
            "set",
            "x",
            "--function",
            "echo",
            "--cron",
            "99 * * * *",
        ],
    )
    .await;
    assert!(!bad.succeeded());
    assert!(bad.stderr.contains("invalid_cron"), "{bad:#?}");

    let triggers = squall(url, &["trigger", "ls"]).await.ok();
    assert!(triggers.stdout.contains("events.orders.>"), "{triggers:#?}");
    let overlap = squall(
        url,
        &[
            "trigger",
            "set",
            "all",
            "--function",
            "echo",
            "--subject",
            "events.>",
        ],
    )
    .await;
    assert!(!overlap.succeeded());
    assert!(overlap.stderr.contains("trigger_overlap"), "{overlap:#?}");

    let fleet = squall(url, &["fleet"]).await.ok();
    assert!(fleet.stdout.contains("worker processes"), "{fleet:#?}");
    assert!(fleet.stdout.contains("echo"), "{fleet:#?}");

    squall(url, &["schedule", "rm", "hourly-echo"]).await.ok();
    squall(url, &["schedule", "rm", "minutely"]).await.ok();
    squall(url, &["trigger", "rm", "orders"]).await.ok();
    assert!(squall(url, &["schedule", "ls"])
        .await
        .ok()
        .stdout
        .contains("no schedules"));
    assert!(squall(url, &["trigger", "ls"])
        .await
        .ok()
        .stdout
        .contains("no triggers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_keys_and_secrets_and_sends_its_key() {
    let admin = "cli-admin-key-0123456789abcdef";
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), admin.into())],
        ..Default::default()
    })
    .await;
    let url = cluster.url.as_str();
    cluster.deploy_example("echo", None).await;

    let refused = squall(url, &["ls"]).await;
    assert!(
        !refused.succeeded() && refused.stderr.contains("unauthorized"),
        "{refused:#?}"
    );
    let created = squall(
        url,
        &[
            "--api-key",
            admin,
            "keys",
            "create",
            "reader",
            "--scope",
            "read",
        ],
    )
    .await
    .ok();
    let key = created.stdout.trim().to_string();
    assert!(key.starts_with("sq_"), "{created:#?}");
    let listed = squall(url, &["--api-key", &key, "ls"]).await.ok();
    assert!(listed.stdout.contains("echo"), "{listed:#?}");
    let forbidden = squall(url, &["--api-key", &key, "rm", "echo"]).await;
    assert!(forbidden.stderr.contains("forbidden"), "{forbidden:#?}");
    let keys = squall(url, &["--api-key", admin, "keys", "ls"]).await.ok();
    assert!(
        keys.stdout.contains("reader") && keys.stdout.contains("read"),
        "{keys:#?}"
    );
    assert!(!keys.stdout.contains(&key), "{keys:#?}");
    // A key limited to some functions and a rate.
    let limited = squall(
        url,
        &[
            "--api-key",
            admin,
            "keys",
            "create",
            "echoes",
            "--scope",
            "invoke",
            "--scope",
            "read",
            "--functions",
            "ech*,other",
            "--rate-per-s",
            "50",
            "--burst",
            "100",
        ],
    )
    .await
    .ok();
    let limited = limited.stdout.trim().to_string();
    let keys = squall(url, &["--api-key", admin, "keys", "ls"]).await.ok();
    assert!(
        keys.stdout
            .contains("functions=ech*,other rate=50/s burst=100"),
        "{keys:#?}"
    );
    let invoked = eventually(Duration::from_secs(10), "the key to work", async || {
        let out = squall(url, &["--api-key", &limited, "invoke", "echo"]).await;
        match out.succeeded() {
            true => Ok(out),
            false => Err(out),
        }
    })
    .await;
    assert!(invoked.stdout.contains("input"), "{invoked:#?}");
    let refused = squall(url, &["--api-key", &limited, "invoke", "billing"]).await;
    assert!(
        !refused.succeeded() && refused.stderr.contains("forbidden"),
        "{refused:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let set = squall(
        url,
        &[
            "--api-key",
            admin,
            "secrets",
            "set",
            "echo",
            "PLAIN=abc",
            &format!("FILED=@{}", file.display()),
        ],
    )
    .await
    .ok();
    assert_eq!(set.stdout, "FILED\nPLAIN\n", "{set:#?}");
    let view = eventually(
        Duration::from_secs(10),
        "the secrets to reach echo",
        async || {
            let out = squall(url, &["--api-key", admin, "invoke", "echo"])
                .await
                .ok();
            let view = parse_json(&out.stdout);
            match view["secret_lengths"]["FILED"] == "from-a-file".len() {
                true => Ok(view),
                false => Err(out),
            }
        },
    )
    .await;
    assert_eq!(view["secret_lengths"]["PLAIN"], 3);
    squall(url, &["--api-key", admin, "secrets", "rm", "echo"])
        .await
        .ok();
    let none = squall(url, &["--api-key", admin, "secrets", "ls", "echo"])
        .await
        .ok();
    assert_eq!(none.stdout, "echo has no secrets\n");
    squall(url, &["--api-key", admin, "keys", "rm", "reader"])
        .await
        .ok();
    let revoked = squall(url, &["--api-key", &key, "ls"]).await;
    assert!(revoked.stderr.contains("unauthorized"), "{revoked:#?}");
}

/// A base port whose three client, route (+2000) and monitoring (+4000) ports are all free.
fn free_cluster_base(avoid: u16) -> u16 {
    let mut candidate = 21000 + (std::process::id() % 8000) as u16;
    loop {
        let ports: Vec<u16> = (0..3)
            .flat_map(|i| [candidate + i, candidate + 2000 + i, candidate + 4000 + i])
            .collect();
        if !ports.contains(&avoid) && ports.iter().all(|p| port_is_free(*p)) {
            return candidate;
        }
        candidate += 7;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squall_up_cluster_3_runs_three_replicating_nodes_that_survive_losing_one() {
    let built = tokio::task::spawn_blocking(built).await.expect("build");
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let _leftovers = KillLeftovers(state.clone());
    let http_port = free_port();
    let nats_port = free_cluster_base(http_port);
    let mut command = Command::new(&built.squall);
    command
        .env("NATS_SERVER", nats_server_binary())
        .env("SQUALL_DISPATCHER_BIN", &built.dispatcher)
        .env("SQUALL_WORKER_BIN", &built.worker)
        .args(["up", "--cluster", "3", "--state-dir"])
        .arg(&state)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--web-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--nats-port")
        .arg(nats_port.to_string());
    let mut up = Process::spawn("squall up", command, dir.path().join("up.log")).expect("spawn");
    let url = format!("http://127.0.0.1:{http_port}");
    eventually(Duration::from_secs(60), "squall up to be up", async || {
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("squall up exited with {status}:\n{}", up.output());
        }
        let output = up.output();
        match output.contains("press Ctrl-C to stop") {
            true => Ok(()),
            false => Err(Text(output)),
        }
    })
    .await;
    assert!(up.output().contains("3 nodes"), "{}", up.output());
    let key = std::fs::read_to_string(state.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let library = built.library("c-hello").to_str().unwrap().to_string();
    let deployed = squall(
        &url,
        &["--api-key", &key, "deploy", &library, "--name", "c-hello"],
    )
    .await;
    assert!(deployed.succeeded(), "{deployed:#?}");

    // The dispatcher chose three replicas on its own, as the servers report three nodes.
    let servers: Vec<async_nats::ServerAddr> = (0..3)
        .map(|i| {
            format!("nats://127.0.0.1:{}", nats_port + i)
                .parse()
                .unwrap()
        })
        .collect();
    let js =
        async_nats::jetstream::new(broker_admits_only_its_users(&state, servers, "c-hello").await);
    let mut jobs = js.get_stream("JOBS").await.expect("JOBS");
    let info = jobs.info().await.expect("JOBS info");
    assert_eq!(info.config.num_replicas, 3);

    // Losing node 2 leaves a quorum: invocations go on.
    let node_2 = state.join("nats-2");
    for pid in processes_mentioning(&node_2.to_string_lossy()) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let greeting = squall(
        &url,
        &["--api-key", &key, "invoke", "c-hello", "--data", "Ada"],
    )
    .await;
    assert!(greeting.succeeded(), "{greeting:#?}");
    assert_eq!(greeting.stdout, "Hello from C, Ada!");

    // The dead node is started again and catches up; Ctrl-C then stops everything.
    let restart = Duration::from_secs(30);
    eventually(restart, "the restart notice", async || {
        let output = up.output();
        match output.contains("nats-server-2 exited") {
            true => Ok(()),
            false => Err(Text(output)),
        }
    })
    .await;
    eventually(
        restart,
        "node 2 to run again",
        async || match processes_mentioning(&node_2.to_string_lossy()).is_empty() {
            true => Err(Text(up.output())),
            false => Ok(()),
        },
    )
    .await;
    Command::new("kill")
        .args(["-INT", &up.child.id().to_string()])
        .status()
        .expect("kill -INT");
    let exited = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut up, Duration::from_secs(30));
        (status, up.output())
    })
    .await
    .expect("join");
    let (status, output) = exited;
    let status = status.unwrap_or_else(|| panic!("squall up did not stop:\n{output}"));
    assert!(status.success(), "{output}");
    let left = processes_mentioning(&state.to_string_lossy());
    assert!(left.is_empty(), "children still running: {left:?}");
}
