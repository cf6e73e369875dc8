//! The `ml-inference` example through real workers: held-out accuracy, one init per worker
//! process, and the cost of the first invocation against warm ones (printed as figures).

use squall_api::invocations::{BatchAccepted, Invocation};
use squall_api::InvocationStatus;
use squall_tests::{built, workspace_root, Cluster, ClusterOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The accuracy the example promises on its held-out rows.
const ACCURACY_THRESHOLD: f64 = 0.95;

const FUNCTION: &str = "ml-inference";

/// Deploys the example's library as `ml-inference`.
async fn deploy(cluster: &Cluster) {
    let library = built().library("ml_inference");
    let (status, body) = cluster.deploy(FUNCTION, library, None).await;
    assert_eq!(status, 201, "{body}");
}

/// The held-out rows as (input JSON, expected label).
fn held_out_rows() -> Vec<(serde_json::Value, String)> {
    let path = workspace_root().join("functions/examples/ml-inference/data/heldout.csv");
    let text = std::fs::read_to_string(path).expect("read heldout.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let mut input = serde_json::Map::new();
            for (name, cell) in header.iter().zip(&cells).take(4) {
                let value: f64 = cell.parse().expect("a number");
                input.insert(name.to_string(), value.into());
            }
            (input.into(), cells[4].to_string())
        })
        .collect()
}

async fn submit_batch(cluster: &Cluster, function: &str, lines: &[String]) -> Vec<String> {
    let response = cluster
        .http
        .post(format!("{}/v1/functions/{function}/batch", cluster.url))
        .body(lines.join("\n"))
        .send()
        .await
        .expect("batch request");
    let (status, accepted) = squall_tests::decode_response::<BatchAccepted>(response).await;
    assert_eq!(status, 202);
    accepted.invocation_ids
}

fn output(view: &Invocation) -> serde_json::Value {
    serde_json::from_str(view.output.as_deref().unwrap_or("null")).expect("JSON output")
}

/// Unix ms of an RFC 3339 UTC time like `2026-01-01T00:00:01.5Z`.
fn time_ms(text: &str) -> f64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]) * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_out_rows_are_classified_above_the_threshold_with_init_once_per_worker() {
    let cluster = Cluster::start_with(ClusterOptions {
        workers: 2,
        ..ClusterOptions::default()
    })
    .await;
    deploy(&cluster).await;
    squall_tests::wait_workers_ready(&cluster, FUNCTION).await;

    let rows = held_out_rows();
    assert_eq!(rows.len(), 225);
    let lines: Vec<String> = rows.iter().map(|(input, _)| input.to_string()).collect();
    let ids = submit_batch(&cluster, FUNCTION, &lines).await;
    let mut right = 0;
    // Per worker process: the pid its outputs report, and the `served` numbers they carry.
    let mut served: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u64>)> = BTreeMap::new();
    for (id, (_, label)) in ids.iter().zip(&rows) {
        let view = cluster.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
        let out = output(&view);
        let probabilities = out["probabilities"].as_object().expect("probabilities");
        assert_eq!(probabilities.len(), 3, "{out}");
        let total: f64 = probabilities.values().map(|p| p.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{out}");
        let best = probabilities
            .iter()
            .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap())
            .unwrap();
        assert_eq!(out["label"], best.0.as_str(), "{out}");
        right += usize::from(out["label"] == label.as_str());
        assert_eq!(out["worker"]["init_calls"], 1, "init ran once: {out}");
        let entry = served.entry(view.worker.expect("worker")).or_default();
        entry
            .0
            .insert(out["worker"]["pid"].as_u64().unwrap() as u32);
        entry.1.insert(out["worker"]["served"].as_u64().unwrap());
    }
    let accuracy = right as f64 / rows.len() as f64;
    assert!(
        accuracy >= ACCURACY_THRESHOLD,
        "held-out accuracy {accuracy:.4} below {ACCURACY_THRESHOLD}"
    );
    // Each worker is one process whose one loaded model served its share in sequence: its
    // `served` numbers are 1..=n without a gap (no second load reset them).
    let mut total = 0;
    for (worker, (pids, numbers)) in &served {
        assert_eq!(pids.len(), 1, "{worker} answered from {pids:?}");
        let n = numbers.len() as u64;
        assert_eq!(
            numbers.iter().copied().collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>()
        );
        total += n;
    }
    assert_eq!(total, 225);
    for worker in &cluster.workers {
        let loads = worker.output().matches("model loaded").count();
        assert!(loads <= 1, "{} loaded the model {loads} times", worker.name);
    }

    // Input that is not the four features fails permanently, naming the problem.
    let response = cluster.invoke(FUNCTION, r#"{"height_cm": 1}"#).await;
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let view = cluster.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(view.status, InvocationStatus::Failed);
    let message = view.error.expect("an error").message;
    assert!(message.contains("missing field"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_inference_is_cheaper_than_the_first_and_figures_are_printed() {
    let cluster = Cluster::start().await;
    let rows = held_out_rows();
    let input = rows[0].0.to_string();

    // The first invocation, sent the moment the deploy answers: the worker fetches the
    // artifact, loads it, runs init, then the call.
    deploy(&cluster).await;
    let started = Instant::now();
    let response = cluster.invoke(FUNCTION, input.clone()).await;
    assert_eq!(response.status(), 200);
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    let out: serde_json::Value = response.json().await.unwrap();
    assert_eq!(out["worker"]["served"], 1, "{out}");
    let init_us = out["worker"]["init_us"].as_u64().unwrap();

    // Warm: sequential synchronous calls to the same loaded model.
    let mut warm = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let response = cluster.invoke(FUNCTION, input.clone()).await;
        assert_eq!(response.status(), 200);
        let out: serde_json::Value = response.json().await.unwrap();
        assert_eq!(out["worker"]["init_calls"], 1);
        warm.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    warm.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let warm_median = warm[warm.len() / 2];
    assert!(
        warm_median < first_ms,
        "warm {warm_median:.1} ms, first {first_ms:.1} ms"
    );

    // Throughput: 2,000 inferences through the batch endpoint, from the first one's creation
    // to the last one's finish (the servers' clocks).
    let lines: Vec<String> = (0..2000)
        .map(|i| rows[i % rows.len()].0.to_string())
        .collect();
    let ids = submit_batch(&cluster, FUNCTION, &lines).await;
    let (mut first_created, mut last_finished) = (f64::MAX, 0f64);
    for id in &ids {
        let view = cluster.wait_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
        first_created = first_created.min(time_ms(&view.created_at));
        last_finished = last_finished.max(time_ms(view.finished_at.as_deref().unwrap()));
    }
    let per_s = ids.len() as f64 / ((last_finished - first_created) / 1000.0);
    println!(
        "BENCH ml-inference: first invocation, sent when the deploy answered, {first_ms:.1} ms (init itself \
         {init_us} us); warm sync median {warm_median:.2} ms (p90 {:.2} ms); batch of {} \
         async: {per_s:.0} inferences/s on one worker",
        warm[warm.len() * 9 / 10],
        ids.len()
    );
}
