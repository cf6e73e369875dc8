//! A plain NATS client (the broker's `client` role) cannot forge what decides which code a job
//! runs, which invocation its result belongs to, or when the invocation was made.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::HeaderMap;
use squall_api::invocations::Invocation;
use squall_api::queries::InvocationPage;
use squall_api::{ErrorKind, InvocationStatus};
use squall_tests::{built, consumers_settled, eventually, Cluster, ClusterOptions, AUTH_CLIENT};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A fresh invocation id, as a client would make one.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A cluster whose broker has users, so that the forged jobs come from the role a plain NATS
/// application has.
async fn start() -> Cluster {
    Cluster::start_with(ClusterOptions::default().with_auth()).await
}

/// A plain NATS application's connection: the `client` role.
async fn client_role(cluster: &Cluster) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(
        AUTH_CLIENT.user.into(),
        AUTH_CLIENT.password.into(),
    )
    .custom_inbox_prefix(AUTH_CLIENT.inbox)
    .connect(&cluster.nats.url)
    .await
    .expect("the client role logs in")
}

/// Publishes a raw job to `jobs.<function>` through JetStream and waits for the stream to store
/// it; returns whether the stream dropped it as a duplicate.
async fn publish_job(
    client: &async_nats::Client,
    function: &str,
    headers: HeaderMap,
    payload: &str,
) -> bool {
    let js = async_nats::jetstream::new(client.clone());
    js.publish_with_headers(
        format!("jobs.{function}"),
        headers,
        payload.to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("the JOBS stream acknowledges the job")
    .duplicate
}

/// The invocation `id` once it ended: a raw job is unknown to the API until its first result.
async fn ended(cluster: &Cluster, id: &str) -> Invocation {
    eventually(
        Duration::from_secs(20),
        format_args!("invocation {id} to end"),
        async || {
            let (status, body) = cluster.get_json(&format!("/v1/invocations/{id}")).await;
            match status {
                200 => {
                    let view: Invocation = serde_json::from_value(body).expect("an invocation");
                    match view.status.is_terminal() {
                        true => Ok(view),
                        false => Err(format!("{:?}", view.status)),
                    }
                }
                _ => Err(body.to_string()),
            }
        },
    )
    .await
}

async fn deployed_version(cluster: &Cluster, name: &str, example: &str) -> String {
    let (status, body) = cluster.deploy(name, built().library(example), None).await;
    assert_eq!(status, 201, "deploy {name}: {body}");
    body["version"].as_str().expect("a version").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_naming_another_functions_version_fails_and_runs_nothing() {
    let cluster = start().await;
    // Two functions with different code: pa greets, pb counts words.
    let pa_v1 = deployed_version(&cluster, "pa", "hello").await;
    let pb = deployed_version(&cluster, "pb", "wordcount").await;
    assert_ne!(pa_v1, pb);
    let client = client_role(&cluster).await;

    // A job for pa stamped with pb's artifact.
    let forged = new_id();
    let mut headers = HeaderMap::new();
    headers.insert("Squall-Invocation-Id", forged.as_str());
    headers.insert("Squall-Version", pb.as_str());
    publish_job(&client, "pa", headers, r#"{"name": "one two"}"#).await;
    let view = ended(&cluster, &forged).await;
    assert_eq!(view.status, InvocationStatus::Failed, "{view:?}");
    assert_eq!(view.function, "pa");
    assert_eq!(view.attempts, 1, "a refused version is not retried");
    assert_eq!(view.output, None, "pb's code did not run: {view:?}");
    let error = view.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Error);
    assert!(
        error.message.contains(&format!(
            "names version \"{pb}\", which is not a version of function pa"
        )),
        "{}",
        error.message
    );

    // Text that is no version at all is refused the same way.
    let garbage = new_id();
    let mut headers = HeaderMap::new();
    headers.insert("Squall-Invocation-Id", garbage.as_str());
    headers.insert("Squall-Version", "latest-please");
    publish_job(&client, "pa", headers, r#"{"name": "x"}"#).await;
    let view = ended(&cluster, &garbage).await;
    assert_eq!(view.status, InvocationStatus::Failed, "{view:?}");

    // A job naming no version runs the current one.
    let current = new_id();
    let mut headers = HeaderMap::new();
    headers.insert("Squall-Invocation-Id", current.as_str());
    publish_job(&client, "pa", headers, r#"{"name": "Now"}"#).await;
    let view = ended(&cluster, &current).await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    assert_eq!(view.version.as_deref(), Some(pa_v1.as_str()));
    assert_eq!(
        view.output.as_deref(),
        Some(r#"{"greeting":"Hello, Now!"}"#)
    );

    // A version deployed a moment ago runs, even before the worker's registry watch has
    // delivered it (the worker then reads the record itself) …
    let pa_v2 = deployed_version(&cluster, "pa", "echo").await;
    assert_ne!(pa_v1, pa_v2);
    let newest = new_id();
    let mut headers = HeaderMap::new();
    headers.insert("Squall-Invocation-Id", newest.as_str());
    headers.insert("Squall-Version", pa_v2.as_str());
    publish_job(&client, "pa", headers, "as it is").await;
    let view = ended(&cluster, &newest).await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    assert_eq!(view.version.as_deref(), Some(pa_v2.as_str()));
    // … and the function's earlier version still runs when a job names it.
    let pinned = new_id();
    let mut headers = HeaderMap::new();
    headers.insert("Squall-Invocation-Id", pinned.as_str());
    headers.insert("Squall-Version", pa_v1.as_str());
    publish_job(&client, "pa", headers, r#"{"name": "Old"}"#).await;
    let view = ended(&cluster, &pinned).await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    assert_eq!(view.version.as_deref(), Some(pa_v1.as_str()));
    assert_eq!(
        view.output.as_deref(),
        Some(r#"{"greeting":"Hello, Old!"}"#)
    );
}

/// The count `counter` answers for `name`, through a synchronous invoke.
async fn count(cluster: &Cluster, name: &str) -> (String, u64) {
    let response = cluster
        .invoke("counter", format!(r#"{{"name": "{name}"}}"#))
        .await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .expect("invocation id")
        .to_string();
    let output: serde_json::Value = response.json().await.expect("JSON output");
    (id, output["count"].as_u64().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reusing_an_earlier_invocations_id_is_refused_unrun() {
    let mut cluster = start().await;
    cluster.deploy_example("counter", None).await;
    cluster.deploy_example("hello", None).await;
    let (earlier, first) = count(&cluster, "forge").await;
    assert_eq!(first, 1);
    let client = client_role(&cluster).await;

    // The finished invocation's id, set by a plain client, on a job for the same function
    // and on one for another function.
    for function in ["counter", "hello"] {
        let mut headers = HeaderMap::new();
        headers.insert("Squall-Invocation-Id", earlier.as_str());
        publish_job(&client, function, headers, r#"{"name": "forge"}"#).await;
    }
    // As `Nats-Msg-Id` too, once JetStream's duplicate window (1 s here) no longer drops it.
    cluster
        .restart_dispatcher(&["--idempotency-window-secs", "1"])
        .await;
    eventually(
        Duration::from_secs(20),
        "a repeated Nats-Msg-Id to be stored",
        async || {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", earlier.as_str());
            match publish_job(&client, "counter", headers, r#"{"name": "forge"}"#).await {
                true => Err("dropped as a duplicate"),
                false => Ok(()),
            }
        },
    )
    .await;
    let operator = cluster.nats_client().await;
    consumers_settled(&operator, &[("JOBS", "fn-counter"), ("JOBS", "fn-hello")]).await;

    // None of them ran: the counter went from 1 to 2 with the next call, not to 4.
    let (_, next) = count(&cluster, "forge").await;
    assert_eq!(next, 2, "a forged job ran the function");
    // The earlier invocation keeps its own result, and the other function stored none.
    let (status, view): (u16, Invocation) =
        cluster.get_as(&format!("/v1/invocations/{earlier}")).await;
    assert_eq!(status, 200);
    assert_eq!(view.function, "counter");
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(view.attempts, 1);
    let output: serde_json::Value =
        serde_json::from_str(view.output.as_deref().expect("output")).expect("JSON output");
    assert_eq!(output["count"], 1, "{view:?}");
    let results = async_nats::jetstream::new(operator)
        .get_stream("RESULTS")
        .await
        .expect("RESULTS");
    let stored = results
        .get_last_raw_message_by_subject(&format!("results.hello.{earlier}"))
        .await;
    assert_eq!(
        stored.err().map(|e| e.kind()),
        Some(LastRawMessageErrorKind::NoMessageFound),
        "hello stored a result under counter's invocation id"
    );
    let (_, answer) = cluster
        .get_json(&format!("/v1/invocations/{earlier}/output"))
        .await;
    assert_eq!(answer["count"], 1, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_creation_time_is_replaced_by_the_brokers() {
    let cluster = start().await;
    cluster.deploy_example("hello", None).await;
    let client = client_role(&cluster).await;
    let before = now_ms();
    let id = new_id();
    let mut headers = HeaderMap::new();
    headers.insert("Squall-Invocation-Id", id.as_str());
    // 2100-01-01T00:00:00Z.
    headers.insert("Squall-Created-At", "4102444800000");
    publish_job(&client, "hello", headers, r#"{"name": "Later"}"#).await;
    let view = ended(&cluster, &id).await;
    assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
    assert!(!view.created_at.starts_with("2100"), "{view:?}");

    // The index files it at the broker's time: within the minutes around the publish, and not
    // in the far future.
    let around = format!(
        "/v1/invocations?function=hello&since={}&until={}",
        before - 60_000,
        now_ms() + 60_000
    );
    let page: InvocationPage = eventually(
        Duration::from_secs(10),
        "the index to list the invocation",
        async || {
            let (_, page): (u16, InvocationPage) = cluster.get_as(&around).await;
            match page.items.iter().any(|item| item.invocation_id == id) {
                true => Ok(page),
                false => Err(page),
            }
        },
    )
    .await;
    let item = page
        .items
        .iter()
        .find(|item| item.invocation_id == id)
        .expect("listed");
    assert_eq!(item.created_at, view.created_at);
    let later = format!(
        "/v1/invocations?function=hello&since={}",
        now_ms() + 24 * 3600 * 1000
    );
    let (status, page): (u16, InvocationPage) = cluster.get_as(&later).await;
    assert_eq!(status, 200);
    assert!(page.items.is_empty(), "{page:?}");
}
