//! The `etl` example through real workers: 10,000 generated CSV records pass extract, transform
//! and load over subject triggers; every good record is loaded once despite forced retries,
//! every bad one is reported with its line number, and the run prints its records per second.

use squall_api::operations::Trigger;
use squall_api::queries::InvocationPage;
use squall_api::InvocationStatus;
use squall_tests::{built, eventually, Cluster};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RECORDS: usize = 10_000;
const HEADER: &str = "order_id,customer,email,amount,currency,date";

/// What the test expects of a generated upload.
struct Upload {
    csv: String,
    /// File line numbers of the valid records.
    good: Vec<u64>,
    /// File line numbers of the bad rows, with a word their reason must contain.
    bad: BTreeMap<u64, &'static str>,
    amount_cents: BTreeMap<String, i64>,
}

/// SplitMix64, for a reproducible upload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `RECORDS` data lines (and one blank line, which is not a record): about 3% bad in ten
/// ways, the rest valid but often messy (spacing, case, date formats, quoted commas), with
/// one `retry-transform` and one `retry-load` marker among the valid ones.
fn generate_upload() -> Upload {
    const NAMES: [&str; 6] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"];
    const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];
    const BAD: [(&str, &str); 10] = [
        ("o{n},Ada,ada@example.com,12.00,EUR", "expected 6 fields"),
        (
            "o {n},Ada,ada@example.com,12.00,EUR,2026-01-02",
            "invalid order_id",
        ),
        (
            "o{n}, ,ada@example.com,12.00,EUR,2026-01-02",
            "empty customer",
        ),
        (
            "o{n},Ada,ada-at-example.com,12.00,EUR,2026-01-02",
            "invalid email",
        ),
        (
            "o{n},Ada,ada@example.com,twelve,EUR,2026-01-02",
            "invalid amount",
        ),
        (
            "o{n},Ada,ada@example.com,-3.00,EUR,2026-01-02",
            "invalid amount",
        ),
        (
            "o{n},Ada,ada@example.com,12.00,XBT,2026-01-02",
            "unknown currency",
        ),
        (
            "o{n},Ada,ada@example.com,12.00,EUR,2026-02-30",
            "invalid date",
        ),
        (
            "o{n},Ada,ada@example.com,12.00,EUR,yesterday",
            "invalid date",
        ),
        (
            "o{n},\"Ada,ada@example.com,12.00,EUR,2026-01-02",
            "unterminated quote",
        ),
    ];
    let mut rng = Rng(0xe71_2026);
    let mut upload = Upload {
        csv: format!("{HEADER}\n"),
        good: Vec::new(),
        bad: BTreeMap::new(),
        amount_cents: BTreeMap::new(),
    };
    let mut line = 1u64;
    for n in 0..RECORDS {
        if n == 5000 {
            upload.csv.push('\n');
            line += 1;
        }
        line += 1;
        let marker = n == 1234 || n == 7777;
        if !marker && rng.below(100) < 3 {
            let (template, reason) = BAD[rng.below(BAD.len() as u64) as usize];
            upload
                .csv
                .push_str(&template.replace("{n}", &n.to_string()));
            upload.csv.push('\n');
            upload.bad.insert(line, reason);
            continue;
        }
        let customer = match n {
            1234 => "retry-transform".to_string(),
            7777 => "retry-load".to_string(),
            _ if rng.below(4) == 0 => format!("\"  Smith,  {} \"", NAMES[n % 6]),
            _ => NAMES[n % 6].to_string(),
        };
        let email = match rng.below(3) {
            0 => format!(" {}@Example.COM ", NAMES[n % 6].to_uppercase()),
            _ => format!("{}{n}@example.com", NAMES[n % 6].to_lowercase()),
        };
        let cents = rng.below(100_000) as i64;
        let amount = match (cents % 100, cents % 10) {
            (0, _) => format!("{}", cents / 100),
            (_, 0) => format!("{}.{}", cents / 100, (cents % 100) / 10),
            _ => format!("{}.{:02}", cents / 100, cents % 100),
        };
        let currency = CURRENCIES[rng.below(4) as usize];
        let shown = match rng.below(2) {
            0 => currency.to_lowercase(),
            _ => currency.to_string(),
        };
        let (month, day) = (1 + rng.below(12), 1 + rng.below(28));
        let date = match rng.below(3) {
            0 => format!("2026-{month:02}-{day:02}"),
            1 => format!("2026/{month:02}/{day:02}"),
            _ => format!("{day:02}.{month:02}.2026"),
        };
        upload.csv.push_str(&format!(
            "o{n},{customer},{email},{amount},{shown},{date}\n"
        ));
        upload.good.push(line);
        *upload.amount_cents.entry(currency.to_string()).or_default() += cents;
    }
    upload
}

async fn deploy(cluster: &Cluster, name: &str, spec: serde_json::Value) {
    let (status, body) = cluster
        .deploy(name, built().library("etl"), Some(spec))
        .await;
    assert_eq!(status, 201, "deploy {name}: {body}");
}

async fn trigger(cluster: &Cluster, name: &str, function: &str, subject: &str) {
    let (status, view) = cluster
        .put_as::<Trigger>(
            &format!("/v1/triggers/{name}"),
            serde_json::json!({"function": function, "subject": subject}),
        )
        .await;
    assert_eq!(status, 200, "{view:?}");
}

/// Load's report for `upload`.
async fn report(cluster: &Cluster, upload: &str) -> serde_json::Value {
    let response = cluster
        .invoke(
            "etl-load",
            serde_json::json!({"report": upload}).to_string(),
        )
        .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// How many messages the EVENTS stream holds on `subject`.
async fn stored_on(cluster: &Cluster, subject: &str) -> u64 {
    use futures::StreamExt as _;
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("EVENTS").await.unwrap();
    let mut info = stream.info_with_subjects(subject).await.unwrap();
    let mut total = 0;
    while let Some(Ok((_, n))) = info.next().await {
        total += n as u64;
    }
    total
}

/// The most attempts any succeeded invocation of `function` took, and whether all succeeded.
async fn attempts_of(cluster: &Cluster, function: &str) -> (u32, bool) {
    let (status, page) = cluster
        .get_as::<InvocationPage>(&format!("/v1/invocations?function={function}&limit=1000"))
        .await;
    assert_eq!(status, 200);
    let most = page.items.iter().map(|i| i.attempts).max().unwrap_or(0);
    let all = page
        .items
        .iter()
        .all(|i| i.status == InvocationStatus::Succeeded);
    (most, all)
}

/// The language of the transform stage: the example's Rust library, or its Python port
/// (functions/examples/python-etl) between the same Rust extract and load.
#[derive(Clone, Copy, PartialEq)]
enum Transform {
    Rust,
    Python,
}

/// The Python transform stage, bundled as `squall deploy` bundles its folder.
fn python_transform() -> Vec<u8> {
    let dir = squall_tests::workspace_root().join("functions/examples/python-etl");
    let manifest =
        squall_bundle::Manifest::new(squall_bundle::Runtime::Python311, "transform.handler");
    squall_bundle::pack(&manifest, &squall_bundle::collect(&dir).unwrap()).unwrap()
}

/// A cluster with the three stages deployed and their triggers bound.
async fn start_pipeline(transform: Transform) -> Cluster {
    let cluster = Cluster::start().await;
    let backoff =
        serde_json::json!({"initial_ms": 20, "multiplier": 2.0, "max_ms": 200, "jitter": false});
    deploy(
        &cluster,
        "etl-extract",
        serde_json::json!({"config": {"stage": "extract", "batch_size": 500}}),
    )
    .await;
    let spec = serde_json::json!({"config": {"stage": "transform"}, "max_attempts": 5, "backoff": backoff});
    match transform {
        Transform::Rust => deploy(&cluster, "etl-transform", spec).await,
        Transform::Python => {
            let (status, body) = cluster
                .deploy_bytes("etl-transform", python_transform(), Some(spec))
                .await;
            assert_eq!(status, 201, "deploy the Python transform: {body}");
        }
    }
    deploy(
        &cluster,
        "etl-load",
        serde_json::json!({"config": {"stage": "load"}, "max_attempts": 5, "backoff": backoff,
                           "concurrency": 1, "max_concurrency": 1}),
    )
    .await;
    trigger(
        &cluster,
        "etl-extracted",
        "etl-transform",
        "events.etl.extracted",
    )
    .await;
    trigger(
        &cluster,
        "etl-transformed",
        "etl-load",
        "events.etl.transformed",
    )
    .await;
    trigger(&cluster, "etl-rejected", "etl-load", "events.etl.rejected").await;
    squall_tests::wait_workers_ready(&cluster, "etl-load").await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_are_loaded_once_and_every_bad_row_is_reported_by_line() {
    ten_thousand_records_through(Transform::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_transform_stage_between_rust_stages_loads_the_same_records_once() {
    ten_thousand_records_through(Transform::Python).await;
}

async fn ten_thousand_records_through(transform: Transform) {
    let cluster = start_pipeline(transform).await;

    let upload = generate_upload();
    assert!(
        upload.csv.len() < 1 << 20,
        "one upload under the payload limit"
    );
    assert!(upload.bad.len() > 200, "{} bad rows", upload.bad.len());
    let started = Instant::now();
    let response = cluster.invoke("etl-extract", upload.csv.clone()).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let extracted: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(extracted["rows"], RECORDS);
    assert_eq!(extracted["batches"], RECORDS / 500);
    let id = extracted["upload"].as_str().unwrap().to_string();

    // Wait until load has counted every line, one way or the other.
    let done = eventually(
        Duration::from_secs(90),
        "every line to be accounted for",
        async || {
            let report = report(&cluster, &id).await;
            let seen = report["records"].as_u64().unwrap() + report["rejected"].as_u64().unwrap();
            (seen >= RECORDS as u64)
                .then_some(report)
                .ok_or(format!("only {seen} lines accounted for"))
        },
    )
    .await;
    let elapsed = started.elapsed();

    // Every good record loaded exactly once, every bad one reported with its line and why.
    let loaded: Vec<u64> = serde_json::from_value(done["loaded_lines"].clone()).unwrap();
    assert_eq!(loaded.len(), upload.good.len(), "no record loaded twice");
    assert_eq!(loaded, upload.good);
    assert_eq!(done["records"], upload.good.len());
    let rejected = done["rejected_rows"].as_array().unwrap();
    assert_eq!(done["rejected"], upload.bad.len());
    assert_eq!(rejected.len(), upload.bad.len());
    for (row, (line, reason)) in rejected.iter().zip(&upload.bad) {
        assert_eq!(row["line"], *line, "{row}");
        let said = row["reason"].as_str().unwrap();
        assert!(said.contains(reason), "line {line}: {said}");
        assert!(!row["text"].as_str().unwrap().is_empty());
    }
    let amounts: BTreeMap<String, i64> =
        serde_json::from_value(done["amount_cents"].clone()).unwrap();
    assert_eq!(amounts, upload.amount_cents);

    // The forced retries happened, and the retried transform's publishes were stored once.
    let (transform_attempts, transform_ok) = attempts_of(&cluster, "etl-transform").await;
    assert_eq!(
        transform_attempts, 2,
        "retry-transform failed its first attempt"
    );
    assert!(transform_ok);
    let (load_attempts, _) = attempts_of(&cluster, "etl-load").await;
    assert_eq!(load_attempts, 2, "retry-load failed its first attempt");
    assert_eq!(stored_on(&cluster, "events.etl.extracted").await, 20);
    assert_eq!(stored_on(&cluster, "events.etl.transformed").await, 20);
    assert_eq!(stored_on(&cluster, "events.etl.rejected").await, 20);

    // Nothing arrives late to count twice: once every trigger's events and every stage's jobs
    // are handled, upstream first, nothing is in flight.
    squall_tests::consumers_settled(
        &cluster.nats_client().await,
        &[
            ("JOBS", "fn-etl-extract"),
            ("EVENTS", "trigger-etl-extracted"),
            ("JOBS", "fn-etl-transform"),
            ("EVENTS", "trigger-etl-transformed"),
            ("EVENTS", "trigger-etl-rejected"),
            ("JOBS", "fn-etl-load"),
        ],
    )
    .await;
    let again = report(&cluster, &id).await;
    assert_eq!(again["records"], done["records"]);
    assert_eq!(again["rejected"], done["rejected"]);

    let stage = match transform {
        Transform::Rust => "Rust",
        Transform::Python => "Python",
    };
    println!(
        "BENCH etl ({stage} transform): {RECORDS} records (20 batches of 500, {} bad) upload to \
         last load in {:.2} s: {:.0} records/s end to end, one worker",
        upload.bad.len(),
        elapsed.as_secs_f64(),
        RECORDS as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_without_the_expected_header_fails_permanently() {
    let cluster = Cluster::start().await;
    deploy(
        &cluster,
        "etl-extract",
        serde_json::json!({"config": {"stage": "extract"}}),
    )
    .await;
    let response = cluster.invoke("etl-extract", "id,name\n1,ada\n").await;
    let id = response.headers()["squall-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let view = cluster.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(view.status, InvocationStatus::Failed);
    assert_eq!(view.attempts, 1);
    let message = view.error.unwrap().message;
    assert!(message.contains("the header must be"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_sample_loads_four_orders_and_reports_four_bad_lines() {
    let cluster = start_pipeline(Transform::Rust).await;
    let path = squall_tests::workspace_root().join("functions/examples/etl/sample.csv");
    let csv = std::fs::read_to_string(path).unwrap();
    let response = cluster.invoke("etl-extract", csv).await;
    assert_eq!(response.status(), 200);
    let extracted: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (extracted["rows"].as_u64(), extracted["batches"].as_u64()),
        (Some(8), Some(1))
    );
    let id = extracted["upload"].as_str().unwrap().to_string();
    let done = eventually(Duration::from_secs(30), "the upload to load", async || {
        let report = report(&cluster, &id).await;
        match report["records"].as_u64().unwrap() + report["rejected"].as_u64().unwrap() >= 8 {
            true => Ok(report),
            false => Err(report),
        }
    })
    .await;
    assert_eq!(done["records"], 4);
    assert_eq!(done["loaded_lines"], serde_json::json!([2, 3, 4, 10]));
    assert_eq!(
        done["amount_cents"],
        serde_json::json!({"EUR": 1250, "GBP": 320, "JPY": 150000, "USD": 700})
    );
    let rejected: Vec<(u64, String)> = done["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (5, "invalid email `edsger-at-example.com`".to_string()),
            (6, "invalid amount `ten`".to_string()),
            (8, "invalid date `2026-02-30`".to_string()),
            (9, "unknown currency `XBT`".to_string()),
        ]
    );
}
