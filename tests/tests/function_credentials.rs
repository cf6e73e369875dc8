//! Credentials per function: a process logged in with a token the fleet minted for function F
//! (through the broker's auth callout) reaches F's subjects and nothing of other functions.

use async_nats::jetstream::{self, consumer::pull};
use async_nats::ConnectOptions;
use futures::StreamExt;
use squall_broker::callout::{self, FunctionToken, Issuer};
use squall_broker::names::{
    consumer_name, JOBS_STREAM, KEYS_BUCKET, REGISTRY_BUCKET, STATE_BUCKET,
};
use squall_tests::{
    built, test_issuer, workspace_root, Cluster, ClusterOptions, Process, AUTH_WORKER,
};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// How long a request the server drops (a permissions violation) is waited for.
const REFUSED: Duration = Duration::from_millis(1500);

/// An authenticated cluster without workers, with functions `fa` and `fb` deployed.
async fn start() -> Cluster {
    let cluster = Cluster::start_with(
        ClusterOptions {
            workers: 0,
            ..Default::default()
        }
        .with_auth(),
    )
    .await;
    for function in ["fa", "fb"] {
        let (status, body) = cluster
            .deploy(function, built().library("hello"), None)
            .await;
        assert_eq!(status, 201, "deploy {function}: {body}");
    }
    cluster
}

/// Answers the broker's auth callout the way a fleet supervisor does: logged in as `worker`.
pub(crate) async fn serve_callout(cluster: &Cluster) -> async_nats::Client {
    let client = ConnectOptions::with_user_and_password(
        AUTH_WORKER.user.into(),
        AUTH_WORKER.password.into(),
    )
    .custom_inbox_prefix(AUTH_WORKER.inbox)
    .connect(&cluster.nats.url)
    .await
    .expect("the worker role logs in");
    let issuer = Issuer::from_seed(&test_issuer().seed()).expect("issuer");
    callout::serve(client.clone(), Arc::new(issuer))
        .await
        .expect("serve the callout");
    client
}

async fn login(cluster: &Cluster, token: &FunctionToken) -> async_nats::Client {
    ConnectOptions::with_token(token.token.clone())
        .custom_inbox_prefix(token.inbox_prefix())
        .connect(&cluster.nats.url)
        .await
        .unwrap_or_else(|e| panic!("{token:?} cannot log in: {e}"))
}

fn refused_js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(REFUSED)
        .build(client.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_token_reaches_its_own_jobs_results_and_registry_entry_only() {
    let cluster = start().await;
    let _callout = serve_callout(&cluster).await;
    let admin = cluster.nats_client().await;
    let admin_js = jetstream::new(admin.clone());
    for function in ["fa", "fb"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Squall-Invocation-Id",
            format!("0193a5c2-3333-7000-8000-00000000000{}", function.len()),
        );
        admin_js
            .publish_with_headers(format!("jobs.{function}"), headers, "{}".into())
            .await
            .expect("publish a job")
            .await
            .expect("JOBS acknowledges");
    }

    let token = test_issuer().mint("fa").expect("mint");
    let fa = login(&cluster, &token).await;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(fa.clone());

    // Its own jobs: pull one and acknowledge it.
    let jobs = js.get_stream(JOBS_STREAM).await.expect("JOBS info");
    let consumer: jetstream::consumer::PullConsumer = jobs
        .get_consumer(&consumer_name("fa"))
        .await
        .expect("fa's consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let job = batch
        .next()
        .await
        .expect("fa's job")
        .expect("a job message");
    assert_eq!(job.subject.as_str(), "jobs.fa");
    job.ack().await.expect("ack");

    // Its own results.
    js.publish(
        "results.fa.0193a5c2-3333-7000-8000-000000000009",
        "ok".into(),
    )
    .await
    .expect("publish")
    .await
    .expect("RESULTS stores fa's result");

    // Its own registry entry.
    let registry = js.get_key_value(REGISTRY_BUCKET).await.expect("registry");
    let entry = registry.entry("fa").await.expect("get fa's entry");
    assert!(entry.is_some(), "fa's registry entry");

    // Its own state namespace.
    let state = js.get_key_value(STATE_BUCKET).await.expect("state");
    state
        .put("fa.count", "1".into())
        .await
        .expect("put fa's state");
    let value = state.get("fa.count").await.expect("get fa's state");
    assert_eq!(value.as_deref(), Some(&b"1"[..]));

    // Nothing of fb: not its jobs, its registry entry (secrets), its state or its results.
    let refused = refused_js(&fa);
    let jobs = refused.get_stream(JOBS_STREAM).await.expect("JOBS info");
    assert!(
        jobs.get_consumer::<pull::Config>(&consumer_name("fb"))
            .await
            .is_err(),
        "fb's consumer info"
    );
    let next = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{}",
        consumer_name("fb")
    );
    let pull = fa.request(next, r#"{"batch":1,"expires":500000000}"#.into());
    assert!(
        !matches!(tokio::time::timeout(REFUSED, pull).await, Ok(Ok(_))),
        "a pull of fb's jobs"
    );
    let registry = refused
        .get_key_value(REGISTRY_BUCKET)
        .await
        .expect("registry");
    assert!(registry.entry("fb").await.is_err(), "fb's registry entry");
    assert!(
        registry.watch_all().await.is_err(),
        "a watch of the whole registry"
    );
    let state = refused.get_key_value(STATE_BUCKET).await.expect("state");
    assert!(state.get("fb.count").await.is_err(), "fb's state");
    assert!(
        state.put("fb.count", "1".into()).await.is_err(),
        "a put into fb's state"
    );
    assert!(state.watch_all().await.is_err(), "a watch of all state");
    assert!(
        refused
            .publish(
                "results.fb.0193a5c2-3333-7000-8000-000000000010",
                "x".into()
            )
            .await
            .expect("publish")
            .await
            .is_err(),
        "fb's results"
    );
    // Nor API keys, jobs of anyone, or the administration of streams.
    assert!(
        refused.get_key_value(KEYS_BUCKET).await.is_err(),
        "API keys"
    );
    assert!(
        refused
            .publish("jobs.fb", "{}".into())
            .await
            .expect("publish")
            .await
            .is_err(),
        "a job"
    );
    assert!(
        refused.delete_stream(JOBS_STREAM).await.is_err(),
        "a stream delete"
    );
    // Its subscriptions: its own inbox only.
    let _other = fa.subscribe("results.>").await.expect("subscribe");
    fa.flush().await.expect("flush");
    squall_tests::eventually(
        Duration::from_secs(5),
        "the server to refuse fa's subscription to results.>",
        async || {
            let log = cluster.nats.process.output();
            match log.contains("Subscription Violation - Subject \"results.>\"") {
                true => Ok(()),
                false => Err(squall_tests::Text(log)),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_a_garbage_token_or_another_issuers_token_logs_in() {
    let cluster = start().await;
    let _callout = serve_callout(&cluster).await;
    let url = cluster.nats.url.clone();
    assert!(
        ConnectOptions::new().connect(&url).await.is_err(),
        "anonymous"
    );
    for token in ["garbage", "sqfn1.e30.AAAA", "worker-test-password"] {
        assert!(
            ConnectOptions::with_token(token.into())
                .connect(&url)
                .await
                .is_err(),
            "token {token}"
        );
    }
    let forged = Issuer::generate().mint("fa").expect("mint");
    assert!(
        ConnectOptions::with_token(forged.token)
            .connect(&url)
            .await
            .is_err(),
        "a token of another issuer"
    );
    // An unknown user name with the worker's password goes to the callout too, and is refused.
    assert!(
        ConnectOptions::with_user_and_password("fa".into(), AUTH_WORKER.password.into())
            .connect(&url)
            .await
            .is_err(),
        "a made-up user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_with_only_its_functions_token_serves_its_invocations() {
    let cluster = start().await;
    // A function with state and events: its process reaches its registry entry, its state
    // namespace (gets, puts, the cache's watch), `events.` and its results, nothing more.
    let (status, body) = cluster.deploy("fc", built().library("counter"), None).await;
    assert_eq!(status, 201, "deploy fc: {body}");
    let _callout = serve_callout(&cluster).await;
    let token = test_issuer().mint("fc").expect("mint");
    let mut command = Command::new(&built().worker);
    command
        .env("RUST_LOG", "info")
        .env_remove("SQUALL_NATS_USER")
        .env_remove("SQUALL_NATS_PASSWORD")
        .envs(token.to_env())
        .args(["--no-supervise", "--function", "fc", "--nats-url"])
        .arg(&cluster.nats.url)
        .arg("--data-dir")
        .arg(cluster.dir.path().join("worker-fc"));
    let worker = Process::spawn(
        "worker-fc",
        command,
        cluster.dir.path().join("worker-fc.log"),
    )
    .expect("start the worker");
    for expected in [1, 2] {
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            cluster.invoke("fc", r#"{"name": "alice"}"#),
        )
        .await
        .expect("fc answers within 30 s");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(
            status,
            200,
            "{body}\n--- worker ---\n{}\n--- nats ---\n{}",
            worker.output(),
            cluster.nats.process.output()
        );
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["count"], expected, "{body}");
    }
    let log = cluster.nats.process.output();
    assert!(
        !log.contains("Violation"),
        "the worker needed a subject its credentials lack:\n{log}"
    );
}

#[test]
fn the_issuer_script_prints_a_seed_and_its_public_key() {
    let output = Command::new(workspace_root().join("scripts/callout-issuer"))
        .output()
        .expect("run scripts/callout-issuer");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("text");
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    let issuer = Issuer::from_seed(&value(callout::SEED_ENV)).expect("an account seed");
    assert_eq!(issuer.public_key(), value(callout::ISSUER_ENV));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_worker_of_one_function_hands_its_process_that_functions_token_only() {
    // As Kubernetes runs a function's pods: `squall-worker --function F` with the worker role's
    // login and the issuer's seed. Its worker process gets F's token, not the role's password.
    let mut cluster = start().await;
    let (status, body) = cluster.deploy("fd", built().library("counter"), None).await;
    assert_eq!(status, 201, "deploy fd: {body}");
    let mut command = Command::new(&built().worker);
    command
        .env("RUST_LOG", "info")
        .envs(cluster.options.worker_env.iter().map(|(k, v)| (k, v)))
        .args(["--function", "fd", "--nats-url"])
        .arg(&cluster.nats.url)
        .arg("--data-dir")
        .arg(cluster.dir.path().join("worker-fd"));
    let supervisor = Process::spawn(
        "worker-fd",
        command,
        cluster.dir.path().join("worker-fd.log"),
    )
    .expect("start the worker");
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        cluster.invoke("fd", r#"{"name": "bob"}"#),
    )
    .await
    .expect("fd answers within 30 s");
    assert_eq!(response.status(), 200, "{}", supervisor.output());
    let children = supervisor.live_children();
    assert_eq!(children.len(), 1, "{}", supervisor.output());
    squall_tests::assert_function_login_only(children[0]);
    cluster.workers.push(supervisor);
}

/// Creates an ordered consumer named as async-nats names a watch it recreates after a gap (a
/// broker restart, a leader change): `<name>_<n>`, with the filter in the request's subject.
async fn recreate_watch(js: &jetstream::Context, stream: &str, filter: &str) -> Result<(), String> {
    let config = jetstream::consumer::push::OrderedConfig {
        name: Some("watch_1".into()),
        deliver_subject: js.client().new_inbox(),
        filter_subject: filter.into(),
        ..Default::default()
    };
    js.create_consumer_on_stream(config, stream)
        .await
        .map(|_| ())
        .map_err(|e| format!("{stream} {filter}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_recreated_after_a_broker_gap_are_allowed_to_functions_and_workers() {
    let cluster = start().await;
    let worker = serve_callout(&cluster).await;
    let fa = login(&cluster, &test_issuer().mint("fa").expect("mint")).await;
    // A function's process: its cancellation watch and an artifact's chunks.
    let js = refused_js(&fa);
    recreate_watch(&js, "KV_squall_cancels", "$KV.squall_cancels.>")
        .await
        .unwrap();
    recreate_watch(&js, "OBJ_squall_artifacts", "$O.squall_artifacts.C.>")
        .await
        .unwrap();
    // A supervisor (the worker role): its listings of the fleet bucket, the cancellations and
    // artifacts a worker of several functions reads.
    let js = refused_js(&worker);
    for (stream, filter) in [
        ("KV_squall_fleet", "$KV.squall_fleet.>"),
        ("KV_squall_cancels", "$KV.squall_cancels.>"),
        ("OBJ_squall_artifacts", "$O.squall_artifacts.C.>"),
    ] {
        recreate_watch(&js, stream, filter).await.unwrap();
    }
}
