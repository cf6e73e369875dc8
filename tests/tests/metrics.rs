//! Prometheus metrics of the dispatcher and the workers.

use squall_tests::{eventually, Cluster, Text};
use std::time::Duration;

async fn scrape(cluster: &Cluster, url: &str) -> String {
    let response = cluster.http.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_and_worker_metrics_count_invocations_by_function_and_status() {
    let cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    cluster
        .deploy_example("fail", Some(serde_json::json!({"max_attempts": 1})))
        .await;
    for _ in 0..3 {
        assert_eq!(cluster.invoke("hello", "").await.status(), 200);
    }
    assert_eq!(cluster.invoke("fail", "").await.status(), 500);

    let dispatcher = scrape(&cluster, &format!("{}/metrics", cluster.url)).await;
    let accepted =
        "squall_dispatcher_invocations_accepted_total{function=\"hello\",source=\"http\"}";
    assert_eq!(sample(&dispatcher, accepted), Some(3.0), "{dispatcher}");
    let failed = "squall_dispatcher_sync_outcomes_total{function=\"fail\",status=\"failed\"}";
    assert_eq!(sample(&dispatcher, failed), Some(1.0), "{dispatcher}");
    assert_eq!(
        sample(&dispatcher, "squall_function_backlog{function=\"hello\"}"),
        Some(0.0),
        "{dispatcher}"
    );
    assert!(dispatcher.contains("# TYPE squall_function_in_flight gauge"));
    // Live worker processes, from their heartbeats in the fleet bucket.
    assert_eq!(
        sample(&dispatcher, "squall_workers"),
        Some(1.0),
        "{dispatcher}"
    );

    // The worker counts after publishing the result; give it a moment to settle.
    let url = cluster.worker_metrics[0].clone();
    let done = "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}";
    let worker = squall_tests::poll(Duration::from_secs(10), async || {
        let text = scrape(&cluster, &url).await;
        match sample(&text, done) == Some(3.0) {
            true => Ok(text),
            false => Err(Text(text)),
        }
    })
    .await
    // The assertions below name what the last scrape lacked.
    .unwrap_or_else(|last| last);
    let ok = "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}";
    assert_eq!(sample(&worker, ok), Some(3.0), "{worker}");
    let failed = "squall_worker_invocations_total{function=\"fail\",status=\"failed\"}";
    assert_eq!(sample(&worker, failed), Some(1.0), "{worker}");
    assert_eq!(
        sample(
            &worker,
            "squall_worker_execution_seconds_count{function=\"hello\"}"
        ),
        Some(3.0),
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            "squall_worker_queue_wait_seconds_count{function=\"hello\"}"
        ),
        Some(3.0),
        "{worker}"
    );
    assert_eq!(
        sample(&worker, "squall_worker_in_flight{function=\"hello\"}"),
        Some(0.0),
        "{worker}"
    );
    let loads = "squall_worker_artifact_loads_total{function=\"hello\",outcome=\"ok\"}";
    assert_eq!(sample(&worker, loads), Some(1.0), "{worker}");
}

/// The Python with `prometheus-client` (scripts/install-console-clients).
fn console_python() -> String {
    std::env::var("SQUALL_CONSOLE_PYTHON").unwrap_or_else(|_| {
        let script = squall_tests::workspace_root().join("scripts/install-console-clients");
        let out = std::process::Command::new(script)
            .output()
            .expect("run scripts/install-console-clients");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string()
    })
}

/// Parses an exposition with the Prometheus client library's own parser
/// (`text_string_to_metric_families`): every sample as `{name, labels, value}`, and each family's
/// type. A text it cannot parse fails the test.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps({"families": families, "samples": samples}))
"#;

/// An exposition as the Prometheus client library reads it.
struct Parsed {
    families: serde_json::Map<String, serde_json::Value>,
    samples: Vec<serde_json::Value>,
}

impl Parsed {
    fn of(text: &str) -> Parsed {
        use std::io::Write as _;
        let mut child = std::process::Command::new(console_python())
            .arg("-c")
            .arg(PARSE)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the Prometheus parser");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "prometheus-client cannot parse the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Parsed {
            families: parsed["families"].as_object().unwrap().clone(),
            samples: parsed["samples"]
                .as_array_mut()
                .unwrap()
                .drain(..)
                .collect(),
        }
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s["name"] == name
                    && labels
                        .iter()
                        .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
            })
            .and_then(|s| s["value"].as_f64())
    }

    fn kind(&self, family: &str) -> Option<&str> {
        self.families.get(family).and_then(|k| k.as_str())
    }
}

/// Scrapes `url` until `ready` holds for the parsed exposition (workers report every second).
async fn scrape_until(
    cluster: &Cluster,
    url: &str,
    within: Duration,
    ready: impl Fn(&Parsed) -> bool,
) -> (String, Parsed) {
    eventually(within, format_args!("metrics at {url}"), async || {
        let text = scrape(cluster, url).await;
        let parsed = Parsed::of(&text);
        match ready(&parsed) {
            true => Ok((text, parsed)),
            false => Err(Text(text)),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_serves_its_workers_metrics_on_one_port_and_the_index_serves_latency_by_function() {
    let cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let addr = format!("127.0.0.1:{}", squall_tests::free_port());
    let mut fleet = cluster.start_fleet(
        "fleet",
        // One process per function, each kept warm: three processes report to one port.
        &[
            "--min",
            "1",
            "--max",
            "3",
            "--interval-ms",
            "200",
            "--metrics-addr",
            &addr,
        ],
    );
    let fleet_url = format!("http://{addr}/metrics");
    cluster.deploy_example("hello", None).await;
    cluster
        .deploy_example("fail", Some(serde_json::json!({"max_attempts": 1})))
        .await;
    cluster
        .deploy_example(
            "panic",
            Some(serde_json::json!({"max_attempts": 2, "backoff": {"initial_ms": 100, "jitter": false}})),
        )
        .await;
    for _ in 0..4 {
        assert_eq!(cluster.invoke("hello", "").await.status(), 200);
    }
    assert_eq!(cluster.invoke("fail", "").await.status(), 500);
    assert_eq!(cluster.invoke("panic", "").await.status(), 500);
    let ok = [("function", "hello"), ("status", "succeeded")];

    // One port for the fleet's processes: their counts add up, whichever of them ran each job.
    let (_, first) = scrape_until(&cluster, &fleet_url, Duration::from_secs(15), |p| {
        p.value("squall_worker_invocations_total", &ok) == Some(4.0)
            && p.value("squall_worker_dead_letters_total", &[("function", "panic")]) == Some(1.0)
    })
    .await;
    assert_eq!(first.kind("squall_worker_invocations"), Some("counter"));
    assert_eq!(
        first.kind("squall_worker_execution_seconds"),
        Some("histogram")
    );
    assert_eq!(first.kind("squall_worker_in_flight"), Some("gauge"));
    let hello = [("function", "hello")];
    assert_eq!(
        first.value("squall_worker_execution_seconds_count", &hello),
        Some(4.0)
    );
    assert_eq!(
        first.value(
            "squall_worker_execution_seconds_bucket",
            &[("function", "hello"), ("le", "+Inf")]
        ),
        Some(4.0)
    );
    assert_eq!(
        first.value("squall_worker_queue_wait_seconds_count", &hello),
        Some(4.0)
    );
    assert_eq!(
        first.value(
            "squall_worker_invocations_total",
            &[("function", "fail"), ("status", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        first.value(
            "squall_worker_retries_total",
            &[("function", "panic"), ("kind", "panic")]
        ),
        Some(1.0)
    );
    assert_eq!(first.value("squall_worker_in_flight", &hello), Some(0.0));
    // Each worker process loaded the artifacts it ran: cold starts, summed.
    let loads = first
        .value(
            "squall_worker_artifact_loads_total",
            &[("function", "hello"), ("outcome", "ok")],
        )
        .unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&loads), "{loads} cold starts");
    assert_eq!(first.value("squall_fleet_workers", &[]), Some(3.0));

    // A worker that dies leaves its counts behind: the host's counters never go backwards.
    let victims = fleet.children();
    assert_eq!(victims.len(), 3, "{}", fleet.output());
    for victim in &victims {
        assert!(std::process::Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap()
            .success());
    }
    let (_, after) = scrape_until(&cluster, &fleet_url, Duration::from_secs(20), |p| {
        p.value("squall_fleet_worker_crashes_total", &[]) == Some(3.0)
            && p.value("squall_fleet_workers", &[]) == Some(3.0)
    })
    .await;
    assert_eq!(
        after.value("squall_worker_invocations_total", &ok),
        Some(4.0)
    );
    assert_eq!(
        after.value("squall_worker_execution_seconds_count", &hello),
        Some(4.0)
    );

    // The query index's holder (the dispatcher) answers latency by function from one scrape.
    let dispatcher_url = format!("{}/metrics", cluster.url);
    let (_, index) = scrape_until(&cluster, &dispatcher_url, Duration::from_secs(10), |p| {
        p.value("squall_index_invocation_duration_seconds_count", &ok) == Some(4.0)
    })
    .await;
    assert_eq!(
        index.kind("squall_index_invocation_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        index.value(
            "squall_index_invocation_duration_seconds_count",
            &[("function", "panic"), ("status", "dead_lettered")]
        ),
        Some(1.0),
        "a retried invocation counts once, at its end"
    );
    assert_eq!(
        index.value(
            "squall_index_invocation_duration_seconds_count",
            &[("function", "fail"), ("status", "failed")]
        ),
        Some(1.0)
    );
    // Requests by the route they matched, never by their raw path.
    assert_eq!(
        index.value(
            "squall_http_request_duration_seconds_count",
            &[
                ("route", "/v1/functions/{name}/invocations"),
                ("method", "POST"),
                ("status_class", "2xx")
            ]
        ),
        Some(4.0)
    );
    assert_eq!(
        index.value(
            "squall_http_request_duration_seconds_count",
            &[
                ("route", "/v1/functions/{name}/invocations"),
                ("method", "POST"),
                ("status_class", "5xx")
            ]
        ),
        Some(2.0)
    );
    assert!(
        index.samples.iter().all(|s| !s["labels"]["route"]
            .as_str()
            .unwrap_or("")
            .contains("hello")),
        "a raw path became a label"
    );
    // The shipped Prometheus rules name only metrics that these endpoints export.
    let exported: std::collections::HashSet<String> = [&first, &after, &index]
        .iter()
        .flat_map(|p| {
            p.samples
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .chain(p.families.keys().cloned())
        })
        .collect();
    let rules =
        std::fs::read_to_string(squall_tests::workspace_root().join("deploy/prometheus/rules.yml"))
            .expect("deploy/prometheus/rules.yml");
    let named = metric_names(&rules);
    assert!(named.len() >= 8, "{named:?}");
    for name in &named {
        assert!(
            exported.contains(name),
            "rules.yml uses {name}, which nothing exports"
        );
    }
    fleet.terminate(Duration::from_secs(20));
}

/// The `squall_…` metric names in `text` (recording rules, named `level:metric:op`, are not).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices("squall_") {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| at + n);
        if text[end..].starts_with(':') {
            continue;
        }
        names.insert(text[at..end].to_string());
    }
    names
}
