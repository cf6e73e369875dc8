//! The result path: direct replies to the waiting dispatcher only, RESULTS as the fallback,
//! and the query index as a role that dispatchers without it ask over NATS.

use futures::StreamExt;
use squall_api::ErrorBody;
use squall_tests::{eventually_every, Cluster, ClusterOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Sends a synchronous invoke of `function` to the dispatcher at `url`.
async fn invoke_at(
    cluster: &Cluster,
    url: &str,
    function: &str,
    query: &str,
    body: &str,
) -> reqwest::Response {
    cluster
        .http
        .post(format!("{url}/v1/functions/{function}/invocations{query}"))
        .body(body.to_string())
        .send()
        .await
        .expect("invoke")
}

fn invocation_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("squall-invocation-id")
        .expect("Squall-Invocation-Id header")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_whose_direct_reply_is_lost_is_answered_from_results() {
    // The default profile's users, except that workers may not send direct replies: every reply
    // is lost (the server refuses it), while the result is still stored in RESULTS.
    let profile = squall_tests::workspace_root().join("broker-config/nats/users.conf");
    let text = std::fs::read_to_string(profile).expect("users.conf");
    let (head, worker_part) = text.split_once("user: worker").expect("worker user");
    let reply_rule = "\"_INBOX_dispatcher.squall-reply.>\"";
    assert!(worker_part.contains(reply_rule), "the worker may reply");
    let lossy = format!(
        "max_payload: 8MB\njetstream {{\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}}\n{head}user: worker{}",
        worker_part.replacen(reply_rule, "", 1)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-replies.conf");
    std::fs::write(&path, lossy).expect("write config");
    let path: &'static str = Box::leak(path.display().to_string().into_boxed_str());
    let mut options = ClusterOptions::default().with_auth();
    options.profile = path;
    let cluster = Cluster::start_with(options).await;
    cluster.deploy_example("hello", None).await;

    let started = Instant::now();
    let response = invoke_at(&cluster, &cluster.url, "hello", "?wait=1.5", "{}").await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"greeting": "Hello, world!"}));
    // It was answered when the wait ended, from RESULTS: the reply never came.
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    let log = cluster.nats.process.output();
    assert!(
        log.lines()
            .any(|l| l.contains("Violation") && l.contains("_INBOX_dispatcher.squall-reply.")),
        "the worker's reply was refused:\n{log}"
    );
}

/// Subscriptions of the connections named `name`, from the server's own report.
async fn subscriptions(cluster: &Cluster, name: &str) -> Vec<Vec<String>> {
    let url = format!("{}/connz?subs=1", cluster.nats.monitoring_url());
    let connz: serde_json::Value = reqwest::get(url)
        .await
        .expect("connz")
        .json()
        .await
        .expect("connz json");
    connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| {
            c["subscriptions_list"]
                .as_array()
                .map(|subs| {
                    subs.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_dispatchers_each_sync_call_gets_only_its_own_replies() {
    let mut cluster = Cluster::start().await;
    let second = cluster.add_dispatcher().await;
    cluster.deploy_example("hello", None).await;

    // Watch every direct reply on the (unrestricted) default profile.
    let client = cluster.nats_client().await;
    let mut replies = client
        .subscribe("_INBOX.squall-reply.>")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");

    let mut sent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..6 {
        for url in [cluster.url.clone(), second.clone()] {
            let body = format!(r#"{{"name": "n{round}"}}"#);
            let response = invoke_at(&cluster, &url, "hello", "", &body).await;
            assert_eq!(response.status(), 200);
            sent.entry(url)
                .or_default()
                .insert(invocation_id(&response));
        }
    }
    // Async calls get no direct reply at all.
    let response = invoke_at(&cluster, &cluster.url, "hello", "?async=true", "{}").await;
    assert_eq!(response.status(), 202);
    let async_id = invocation_id(&response);
    cluster
        .wait_terminal(&async_id, Duration::from_secs(10))
        .await;

    let mut by_waiter: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), replies.next()).await
    {
        let subject = message.subject.to_string();
        let (root, id) = subject.rsplit_once('.').expect("reply subject");
        assert_eq!(
            message
                .headers
                .as_ref()
                .unwrap()
                .get("Squall-Invocation-Id")
                .unwrap()
                .as_str(),
            id
        );
        by_waiter
            .entry(root.to_string())
            .or_default()
            .insert(id.to_string());
    }
    // One reply subject root per dispatcher, carrying exactly the calls made through it.
    let mut got: Vec<_> = by_waiter.values().cloned().collect();
    let mut want: Vec<_> = sent.values().cloned().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Each dispatcher subscribes to its own reply root and to no results wildcard.
    let subs = subscriptions(&cluster, "squall-dispatcher").await;
    assert_eq!(subs.len(), 2, "{subs:?}");
    let mut roots = BTreeSet::new();
    for list in &subs {
        assert!(!list.iter().any(|s| s.starts_with("results.")), "{list:?}");
        let own: Vec<_> = list
            .iter()
            .filter(|s| s.contains(".squall-reply."))
            .collect();
        assert_eq!(own.len(), 1, "{list:?}");
        roots.insert(own[0].trim_end_matches(".*").to_string());
    }
    assert_eq!(roots, by_waiter.keys().cloned().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_through_another_dispatcher_waits_for_the_same_result() {
    let mut cluster = Cluster::start().await;
    let second = cluster.add_dispatcher().await;
    cluster.deploy_example("sleep", None).await;

    let first = {
        let (http, url) = (cluster.http.clone(), cluster.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/functions/sleep/invocations"))
                .header("Idempotency-Key", "order-17")
                .body("800")
                .send()
                .await
                .expect("invoke")
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The job carries the first dispatcher's reply subject; the second follows the result.
    let started = Instant::now();
    let repeat = cluster
        .http
        .post(format!("{second}/v1/functions/sleep/invocations"))
        .header("Idempotency-Key", "order-17")
        .body("800")
        .send()
        .await
        .expect("invoke");
    let repeat_waited = started.elapsed();
    let first = first.await.expect("first request");
    assert_eq!(first.status(), 200);
    assert_eq!(repeat.status(), 200);
    assert_eq!(invocation_id(&first), invocation_id(&repeat));
    assert_eq!(repeat.text().await.unwrap(), "slept 800 ms");
    assert!(repeat_waited < Duration::from_secs(3), "{repeat_waited:?}");
}

/// A view without the fields that name the moment it was made.
fn timeless(mut view: serde_json::Value) -> serde_json::Value {
    if let Some(object) = view.as_object_mut() {
        object.remove("until");
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_through_a_dispatcher_without_the_index_match_the_index_holder() {
    let mut cluster = Cluster::start().await;
    let gateway = cluster
        .add_dispatcher_with(&["--query-index", "false"])
        .await;
    cluster.deploy_example("hello", None).await;
    cluster.deploy_example("fail", None).await;
    for i in 0..5 {
        let body = format!(r#"{{"name": "q{i}"}}"#);
        assert_eq!(
            invoke_at(&cluster, &gateway, "hello", "", &body)
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        invoke_at(&cluster, &gateway, "fail", "", "{}")
            .await
            .status(),
        500
    );

    // The index holder sees them once RESULTS is applied.
    eventually_every(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "the index to catch up",
        async || {
            let (_, usage) = cluster
                .get_as::<squall_api::queries::UsageReport>("/v1/usage")
                .await;
            (usage.total.invocations == 6).then_some(()).ok_or(usage)
        },
    )
    .await;
    for path in [
        "/v1/invocations",
        "/v1/invocations?function=hello&limit=2",
        "/v1/invocations?status=failed",
        "/v1/functions/hello/stats?since=0",
        "/v1/usage?group_by=function",
        "/v1/usage?group_by=hour",
    ] {
        let (status, held) = cluster.get_json(path).await;
        assert_eq!(status, 200, "{path}: {held}");
        let asked: serde_json::Value = cluster
            .http
            .get(format!("{gateway}{path}"))
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(timeless(asked), timeless(held), "{path}");
    }
    // Bad queries are refused by the gateway itself, in the same words.
    let (status, held) = cluster.get_as::<ErrorBody>("/v1/invocations?limit=0").await;
    let asked = cluster
        .http
        .get(format!("{gateway}/v1/invocations?limit=0"))
        .send()
        .await
        .expect("query");
    assert_eq!((status, asked.status().as_u16()), (400, 400));
    assert_eq!(asked.json::<ErrorBody>().await.unwrap(), held);

    // The index is a NATS service: `$SRV.PING` finds it.
    let client = cluster.nats_client().await;
    let pong = client
        .request("$SRV.PING.squall-index", "".into())
        .await
        .expect("a squall-index service answers $SRV.PING");
    let pong: serde_json::Value = serde_json::from_slice(&pong.payload).expect("ping json");
    assert_eq!(pong["name"], "squall-index");

    // Without any index: a clear 503 for queries, and invocations are unaffected.
    cluster.dispatcher.terminate(Duration::from_secs(10));
    let response = cluster
        .http
        .get(format!("{gateway}/v1/usage"))
        .send()
        .await
        .expect("query");
    assert_eq!(response.status(), 503);
    let (_, body) = squall_tests::decode_response::<ErrorBody>(response).await;
    assert_eq!(body.error.code, "index_unavailable", "{body:?}");
    let response = invoke_at(&cluster, &gateway, "hello", "", "{}").await;
    assert_eq!(response.status(), 200);
}
