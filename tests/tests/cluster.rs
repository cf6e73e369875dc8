//! Squall on a real three-node nats-server cluster on loopback: replication by default, the
//! JOBS leader killed under load, and a lost quorum.

use futures::StreamExt as _;
use squall_api::invocations::{Accepted, Invocation};
use squall_api::ErrorBody;
use squall_tests::{eventually, wait_workers_ready, Cluster, ClusterOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn three_nodes(workers: usize) -> ClusterOptions {
    ClusterOptions {
        nats_nodes: 3,
        workers,
        ..Default::default()
    }
}

/// Which node (0-based, in `Cluster::nats_nodes` order) leads `stream`, from the server's own
/// stream info.
async fn stream_leader(cluster: &Cluster, stream: &str) -> usize {
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let leader = eventually(
        Duration::from_secs(20),
        format_args!("a leader of {stream}"),
        async || {
            let mut handle = js.get_stream(stream).await.ok()?;
            let info = handle.info().await.ok()?;
            info.cluster.as_ref().and_then(|c| c.leader.clone())
        },
    )
    .await;
    let n: usize = leader
        .trim_start_matches("node-")
        .parse()
        .expect("node name");
    n - 1
}

/// Submits `n` asynchronous invocations of hello, 16 at a time, counting each answer's status;
/// returns the accepted ids and every refusal's status with its Retry-After header.
async fn submit(
    cluster: &Cluster,
    n: usize,
    accepted: Arc<Mutex<Vec<String>>>,
) -> Vec<(u16, Option<String>, String)> {
    submit_to(cluster.url.clone(), cluster.http.clone(), n, accepted).await
}

async fn submit_to(
    api: String,
    http: reqwest::Client,
    n: usize,
    accepted: Arc<Mutex<Vec<String>>>,
) -> Vec<(u16, Option<String>, String)> {
    let url = format!("{api}/v1/functions/hello/invocations");
    let refused = Arc::new(Mutex::new(Vec::new()));
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let (url, http) = (url.clone(), http.clone());
            let (accepted, refused) = (accepted.clone(), refused.clone());
            async move {
                let response = http
                    .post(&url)
                    .header("Prefer", "respond-async")
                    .body(format!(r#"{{"name": "load {i}"}}"#))
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("the dispatcher answers");
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = response.text().await.unwrap_or_default();
                match (status, serde_json::from_str::<Accepted>(&body)) {
                    (202, Ok(answer)) => accepted.lock().unwrap().push(answer.invocation_id),
                    _ => refused.lock().unwrap().push((status, retry_after, body)),
                }
            }
        })
        .await;
    let refused = refused.lock().unwrap().clone();
    refused
}

/// Polls an invocation until it is terminal, taking a 503 (its RESULTS read fell into an
/// election while the cluster heals) as "not yet".
async fn wait_terminal_through_elections(cluster: &Cluster, id: &str) -> Invocation {
    eventually(
        Duration::from_secs(90),
        format_args!("invocation {id} to end"),
        async || {
            let (status, body) = cluster.get_json(&format!("/v1/invocations/{id}")).await;
            match status {
                200 => {
                    let view: Invocation =
                        serde_json::from_value(body.clone()).unwrap_or_else(|e| {
                            panic!("invocation {id} does not decode ({e}): {body}")
                        });
                    view.status.is_terminal().then_some(view).ok_or(body)
                }
                503 => Err(body),
                _ => panic!("invocation {id}: {status} {body}"),
            }
        },
    )
    .await
}

/// Waits until every id is terminal; returns how many ended in each status and how many ran
/// more than once.
async fn outcomes(cluster: &Cluster, ids: &[String]) -> (HashMap<String, usize>, usize) {
    let mut statuses = HashMap::new();
    let mut repeated = 0;
    for id in ids {
        let view = wait_terminal_through_elections(cluster, id).await;
        *statuses
            .entry(view.status.as_str().to_string())
            .or_insert(0) += 1;
        if view.attempts > 1 {
            repeated += 1;
        }
    }
    (statuses, repeated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stream_bucket_and_durable_consumer_is_replicated_three_ways_by_default() {
    let cluster = Cluster::start_with(three_nodes(1)).await;
    cluster.deploy_example("hello", None).await;
    let (status, _) = cluster
        .put_json(
            "/v1/schedules/nightly",
            serde_json::json!({"function": "hello", "cron": "0 0 3 * * *"}),
        )
        .await;
    assert_eq!(status, 200);
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let names: Vec<String> = js.stream_names().map(|n| n.expect("name")).collect().await;
    for expected in [
        "JOBS",
        "RESULTS",
        "DLQ",
        "SCHEDULES",
        "EVENTS",
        "KV_squall_registry",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(names.iter().any(|n| n.starts_with("OBJ_")), "{names:?}");
    for name in &names {
        let mut stream = js.get_stream(name).await.expect("stream");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "stream {name}");
        let peers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
        assert_eq!(peers, 2, "stream {name} has a leader and two followers");
        let mut consumers = stream.consumers();
        while let Some(consumer) = consumers.next().await {
            let consumer = consumer.expect("consumer info");
            if consumer.config.durable_name.is_none() {
                // Ephemeral consumers (the query index's ordered reader) are rebuilt from their
                // own last sequence on any node; they hold nothing that must survive.
                continue;
            }
            let peers = consumer.cluster.as_ref().map_or(0, |c| c.replicas.len());
            assert_eq!(peers, 2, "durable consumer {} on {name}", consumer.name);
        }
    }
    let (status, body) = cluster
        .get_as::<squall_api::functions::Function>("/v1/functions/hello")
        .await;
    assert_eq!(status, 200, "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_jobs_leader_under_load_refuses_nothing_and_loses_nothing() {
    let mut cluster = Cluster::start_with(three_nodes(2)).await;
    cluster
        .deploy_example("hello", Some(serde_json::json!({"timeout_ms": 2000})))
        .await;
    wait_workers_ready(&cluster, "hello").await;
    let leader = stream_leader(&cluster, "JOBS").await;

    let accepted = Arc::new(Mutex::new(Vec::new()));
    let total = 1200;
    let load = tokio::spawn(submit_to(
        cluster.url.clone(),
        cluster.http.clone(),
        total,
        accepted.clone(),
    ));
    // Kill the leader once a quarter of the load is in.
    eventually(
        Duration::from_secs(60),
        "a quarter of the load",
        async || {
            let accepted = accepted.lock().unwrap().len();
            (accepted >= total / 4).then_some(()).ok_or(accepted)
        },
    )
    .await;
    cluster.nats_nodes()[leader].kill();
    let refused = load.await.expect("the load ran");
    assert!(
        refused.is_empty(),
        "{} submissions refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    let ids = accepted.lock().unwrap().clone();
    assert_eq!(ids.len(), total);
    let new_leader = stream_leader(&cluster, "JOBS").await;
    assert_ne!(new_leader, leader, "another node leads JOBS");

    let (statuses, repeated) = outcomes(&cluster, &ids).await;
    assert_eq!(statuses.get("succeeded"), Some(&total), "{statuses:?}");
    // Only jobs that were in flight when the node died may have run twice: at most the
    // workers' in-flight window, far below the load.
    assert!(repeated <= 64, "{repeated} invocations ran more than once");

    // The query index's feed (an ordered consumer, on whichever node) lost nothing either.
    eventually(
        Duration::from_secs(60),
        format_args!("the index to hold all {total}"),
        async || {
            let (status, stats) = cluster
                .get_as::<squall_api::queries::FunctionStats>("/v1/functions/hello/stats")
                .await;
            assert_eq!(status, 200, "{stats:?}");
            (stats.count == total as u64).then_some(()).ok_or(stats)
        },
    )
    .await;

    // The killed node comes back and catches up: its JOBS replica is current again.
    cluster.nats_nodes()[leader].start_again();
    cluster.nats_nodes()[leader].wait_healthy(Duration::from_secs(60));
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let name = format!("node-{}", leader + 1);
    eventually(
        Duration::from_secs(60),
        "the restarted node to catch up",
        async || {
            let mut jobs = js.get_stream("JOBS").await.expect("JOBS");
            let info = jobs.info().await.expect("JOBS info");
            let cluster_info = info.cluster.clone().expect("clustered");
            let current = cluster_info
                .replicas
                .iter()
                .any(|r| r.name == name && r.current);
            current.then_some(()).ok_or(cluster_info)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_quorum_is_a_503_with_retry_after_and_service_resumes_by_itself() {
    let mut options = three_nodes(1);
    options.dispatcher_env = vec![("SQUALL_PUBLISH_BUDGET_MS".into(), "3000".into())];
    let mut cluster = Cluster::start_with(options).await;
    cluster
        .deploy_example("hello", Some(serde_json::json!({"timeout_ms": 2000})))
        .await;
    wait_workers_ready(&cluster, "hello").await;
    let before = Arc::new(Mutex::new(Vec::new()));
    assert!(submit(&cluster, 50, before.clone()).await.is_empty());

    // Two of three nodes down: no stream can elect a leader.
    cluster.nats_nodes()[1].kill();
    cluster.nats_nodes()[2].kill();
    let during = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let refused = submit(&cluster, 20, during.clone()).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refusals took {:?}",
        started.elapsed()
    );
    assert!(!refused.is_empty(), "nothing was refused without a quorum");
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert!(retry_after.is_some(), "a 503 without Retry-After: {body}");
        let refusal: ErrorBody = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("a refusal that is not an error body ({e}): {body}"));
        assert_eq!(refusal.error.code, "broker_unavailable", "{body}");
    }

    // One node back: quorum again, and the same dispatcher accepts without a restart.
    cluster.nats_nodes()[1].start_again();
    let after = Arc::new(Mutex::new(Vec::new()));
    eventually(
        Duration::from_secs(60),
        "a submission accepted after a node returned",
        async || {
            let refused = submit(&cluster, 1, after.clone()).await;
            refused.is_empty().then_some(()).ok_or(refused)
        },
    )
    .await;
    assert!(submit(&cluster, 20, after.clone()).await.is_empty());
    let mut ids = before.lock().unwrap().clone();
    ids.extend(during.lock().unwrap().iter().cloned());
    ids.extend(after.lock().unwrap().iter().cloned());
    let (statuses, _) = outcomes(&cluster, &ids).await;
    assert_eq!(statuses.get("succeeded"), Some(&ids.len()), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_in_lame_duck_mode_is_left_at_once_and_invocations_go_on() {
    let mut cluster = Cluster::start_with(three_nodes(1)).await;
    cluster.deploy_example("hello", None).await;
    wait_workers_ready(&cluster, "hello").await;
    // The node the dispatcher is connected to, from the nodes' own connection lists.
    let monitors: Vec<String> = cluster
        .nats_nodes()
        .iter()
        .map(|n| n.monitoring_url())
        .collect();
    let node = eventually(
        Duration::from_secs(10),
        "the dispatcher to be connected to one node",
        async || match dispatcher_nodes(&monitors).await.as_slice() {
            [node] => Ok(*node),
            nodes => Err(nodes.to_vec()),
        },
    )
    .await;
    let pid = cluster.nats_nodes()[node].process.child.id();
    let signalled = std::process::Command::new("kill")
        .args(["-USR2", &pid.to_string()])
        .status()
        .expect("kill -USR2");
    assert!(signalled.success());
    // A node in lame-duck mode closes its clients' connections only after its grace period
    // (10 s by default): a dispatcher connected to another node before then left by itself.
    eventually(
        LAME_DUCK_GRACE.saturating_sub(Duration::from_secs(2)),
        "the dispatcher to move to another node",
        async || match dispatcher_nodes(&monitors).await.as_slice() {
            [now] if *now != node => Ok(()),
            nodes => Err(nodes.to_vec()),
        },
    )
    .await;
    // Well before the node's lame-duck period ends, the dispatcher serves from another node.
    let response = cluster.invoke("hello", r#"{"name": "duck"}"#).await;
    assert_eq!(response.status(), 200);
    let nodes = dispatcher_nodes(&monitors).await;
    assert!(
        nodes.len() == 1 && nodes[0] != node,
        "still on the lame-duck node: {nodes:?}"
    );
}

/// nats-server's default `lame_duck_grace_period`: how long a node in lame-duck mode waits
/// before it closes client connections (the test profiles do not change it).
const LAME_DUCK_GRACE: Duration = Duration::from_secs(10);

/// The nodes (by index in `monitors`) whose `/connz` lists the dispatcher's connection.
async fn dispatcher_nodes(monitors: &[String]) -> Vec<usize> {
    let mut nodes = Vec::new();
    for (i, monitor) in monitors.iter().enumerate() {
        let Ok(answer) = reqwest::get(format!("{monitor}/connz?limit=1024")).await else {
            continue;
        };
        let Ok(connz) = answer.json::<serde_json::Value>().await else {
            continue;
        };
        let connections = connz["connections"].as_array().cloned().unwrap_or_default();
        if connections.iter().any(|c| c["name"] == "squall-dispatcher") {
            nodes.push(i);
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_made_at_one_replica_is_raised_to_three_by_the_default() {
    let mut options = three_nodes(1);
    options.dispatcher_env = vec![("SQUALL_REPLICAS".into(), "1".into())];
    let mut cluster = Cluster::start_with(options).await;
    cluster.deploy_example("hello", None).await;
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let mut events = js.get_stream("EVENTS").await.expect("EVENTS");
    assert_eq!(events.info().await.expect("info").config.num_replicas, 1);

    // The same dispatcher started again without a replica count sees three nodes.
    cluster.options.dispatcher_env.clear();
    cluster.restart_dispatcher(&[]).await;
    let names: Vec<String> = js.stream_names().map(|n| n.expect("name")).collect().await;
    for name in &names {
        let mut stream = js.get_stream(name).await.expect("stream");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "stream {name}");
    }
    let response = cluster.invoke("hello", r#"{"name": "grown"}"#).await;
    assert_eq!(response.status(), 200);
}
