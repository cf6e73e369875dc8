//! Cold paths: a new function's first result (its artifact new, or already loaded), a new
//! version's first result, and the artifact fetch a first load starts with.

use crate::cluster::Cluster;
use crate::context::{Context, Server, S4};
use crate::drive;
use crate::measure::FUNCTION;
use crate::report::Report;
use crate::stats::Latency;
use anyhow::{bail, Context as _};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A function kept warm, then redeployed with a new version in every run.
const VERSIONED: &str = "coldver";
/// Warm calls that set the reference a cold call is compared with.
const WARM_CALLS: usize = 50;
/// The longest a cold path may take before the measurement fails.
const COLD_LIMIT: Duration = Duration::from_secs(30);

/// The artifact with `nonce` appended: an ELF file ignores trailing bytes, so this is the same
/// code under a new sha256, i.e. a new version that no worker has loaded.
pub fn with_nonce(artifact: &[u8], nonce: &str) -> Vec<u8> {
    let mut bytes = artifact.to_vec();
    bytes.extend_from_slice(b"\0squall-bench-nonce:");
    bytes.extend_from_slice(nonce.as_bytes());
    bytes
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One synchronous call, which must answer 200.
async fn invoke(cx: &Context, squall: &Cluster, function: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}?wait={}",
        squall.invoke_url(function),
        COLD_LIMIT.as_secs()
    );
    let response = squall
        .http
        .post(url)
        .body(cx.payload.clone())
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status != reqwest::StatusCode::OK {
        bail!(
            "invoking {function} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Deploys `artifact` as `function` and times the deploy and the first result after it.
/// Returns (deploy, 201 → first result).
async fn deploy_then_invoke(
    cx: &Context,
    squall: &Cluster,
    function: &str,
    artifact: Vec<u8>,
) -> anyhow::Result<(Duration, Duration)> {
    let spec = serde_json::json!({ "concurrency": cx.settings.concurrency });
    let started = Instant::now();
    squall.deploy(function, artifact, &spec).await?;
    let deployed = Instant::now();
    invoke(cx, squall, function).await?;
    Ok((deployed - started, deployed.elapsed()))
}

/// Fetches an artifact from the object store and checks its sha256, as a worker's first load
/// does before it writes the file and loads it. Returns (fetch, sha256 check).
async fn fetch_artifact(server: &Server, artifact: &[u8]) -> anyhow::Result<(Duration, Duration)> {
    let sha = hex::encode(Sha256::digest(artifact));
    let store = server
        .nats
        .js
        .get_object_store(squall_broker::names::ARTIFACT_BUCKET)
        .await?;
    let started = Instant::now();
    let mut object = store
        .get(squall_broker::names::artifact_key(&sha))
        .await
        .context("cannot fetch the artifact")?;
    let mut bytes = Vec::with_capacity(artifact.len());
    object.read_to_end(&mut bytes).await?;
    let fetched = started.elapsed();
    let started = Instant::now();
    if hex::encode(Sha256::digest(&bytes)) != sha {
        bail!("the fetched artifact does not match its sha256");
    }
    Ok((fetched, started.elapsed()))
}

/// Deploys a new version of the warm function `VERSIONED` and returns the time from the
/// deploy's answer to the first result produced by the new version, while a client keeps
/// invoking it one call at a time.
async fn new_version(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    artifact: Vec<u8>,
) -> anyhow::Result<Duration> {
    let mut results = server
        .nats
        .client
        .subscribe(format!("results.{VERSIONED}.>"))
        .await?;
    server.nats.client.flush().await?;
    let spec = serde_json::json!({ "concurrency": cx.settings.concurrency });
    let answer = squall.deploy(VERSIONED, artifact, &spec).await?;
    let deployed = Instant::now();
    let version = answer["version"]
        .as_str()
        .context("the deploy answer has no version")?
        .to_string();
    let watcher = tokio::spawn(async move {
        while let Some(message) = results.next().await {
            let produced_by = message
                .headers
                .as_ref()
                .and_then(|h| h.get(squall_broker::headers::VERSION))
                .map(|v| v.as_str().to_string());
            if produced_by.as_deref() == Some(version.as_str()) {
                return Some(deployed.elapsed());
            }
        }
        None
    });
    while !watcher.is_finished() {
        if deployed.elapsed() > COLD_LIMIT {
            watcher.abort();
            bail!("the new version produced no result within {COLD_LIMIT:?}");
        }
        invoke(cx, squall, VERSIONED).await?;
    }
    watcher
        .await
        .context("the version watcher panicked")?
        .context("the result subscription ended")
}

/// Measures every cold path once per run, with one worker serving every function (`--shared`):
/// a running process that picks up each new function and version as it is deployed. (A fleet
/// starting a process for a new function is scale-from-zero, measured in `zero`.)
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    squall.add_shared_worker(FUNCTION).await?;
    let spec = serde_json::json!({ "concurrency": cx.settings.concurrency });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    squall
        .deploy(
            VERSIONED,
            with_nonce(&cx.artifact, &format!("{stamp}-v0")),
            &spec,
        )
        .await?;
    invoke(cx, squall, VERSIONED).await?;
    for run in 1..=cx.settings.runs {
        let mut warm = Vec::with_capacity(WARM_CALLS);
        for _ in 0..WARM_CALLS {
            let started = Instant::now();
            invoke(cx, squall, VERSIONED).await?;
            warm.push(started.elapsed());
        }
        let warm_ms = Latency::of(&warm).p50 / 1e3;

        // A new function whose artifact no worker has seen: deploy, fetch, load, subscribe.
        let fresh = with_nonce(&cx.artifact, &format!("{stamp}-new-{run}"));
        let new_name = format!("cold-new-{run}");
        let (deploy, first) = deploy_then_invoke(cx, squall, &new_name, fresh.clone()).await?;
        let (fetch, hash) = fetch_artifact(server, &fresh).await?;

        // The same artifact under another name: everything but the first load.
        let cached_name = format!("cold-cached-{run}");
        let (_, cached) = deploy_then_invoke(cx, squall, &cached_name, fresh).await?;

        // A new version of a function that is serving.
        let version = new_version(
            cx,
            server,
            squall,
            with_nonce(&cx.artifact, &format!("{stamp}-v{run}")),
        )
        .await?;

        let r = &mut *report;
        r.add(
            S4,
            "cold.warm",
            "warm sync call (the reference), p50 of 50",
            "ms",
            warm_ms,
        );
        r.add(
            S4,
            "cold.deploy",
            "deploy request, PUT → 201",
            "ms",
            ms(deploy),
        );
        r.add(
            S4,
            "cold.version.first",
            "new version of a serving function: 201 → its first result",
            "ms",
            ms(version),
        );
        r.add(
            S4,
            "cold.version.extra",
            "  … beyond a warm call",
            "ms",
            ms(version) - warm_ms,
        );
        r.add(
            S4,
            "cold.new.first",
            "new function, new artifact: 201 → first result",
            "ms",
            ms(first),
        );
        r.add(
            S4,
            "cold.new.extra",
            "  … beyond a warm call",
            "ms",
            ms(first) - warm_ms,
        );
        r.add(
            S4,
            "cold.cached.first",
            "new function, artifact already loaded: 201 → first result",
            "ms",
            ms(cached),
        );
        r.add(
            S4,
            "cold.load",
            "first load of an artifact (the difference of the two)",
            "ms",
            ms(first) - ms(cached),
        );
        r.add(
            S4,
            "cold.fetch",
            "  … of which object-store fetch (replayed by the benchmark)",
            "ms",
            ms(fetch),
        );
        r.add(
            S4,
            "cold.sha",
            "  … of which sha256 check (replayed by the benchmark)",
            "ms",
            ms(hash),
        );
        squall.delete(&new_name).await?;
        squall.delete(&cached_name).await?;
    }
    squall.delete(VERSIONED).await?;
    drive::quiesce(
        &server.nats,
        squall_broker::names::JOBS_STREAM,
        &squall_broker::names::consumer_name(FUNCTION),
    )
    .await?;
    squall.stop_workers().await;
    Ok(())
}
