//! The state phase: a function's own `kv_get` calls through the real worker and the C ABI,
//! cached and not, beside a bare async-nats KV get of the same keys, in the same run.
//!
//! The benchmark writes the keys straight into the `squall_state` bucket (as any NATS client
//! with the rights could), so no worker has them cached; the `statebench` function then reads
//! them twice and times each call itself: the first round misses the worker's cache and goes
//! to the broker, the second is served from memory.

use crate::cluster::Cluster;
use crate::context::{Context, Server, S7};
use crate::procs::BUILD_COMMAND;
use crate::report::Report;
use crate::stats::Latency;
use anyhow::{bail, Context as _};
use serde::Deserialize;
use squall_broker::names::STATE_BUCKET;
use std::time::Instant;

/// The function (and so the state namespace) of the phase.
const FUNCTION: &str = "statebench";
/// A small value, as a counter or a session would be.
const VALUE: &[u8] = b"{\"count\": 12345, \"user\": \"someone\"}";

#[derive(Deserialize)]
struct Round {
    p50_us: f64,
    p99_us: f64,
    found: usize,
}

#[derive(Deserialize)]
struct Timings {
    rounds: Vec<Round>,
}

/// Deploys the state function with a worker of its own, measures every run, and removes both.
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let path = &cx.env.state_artifact;
    let artifact = std::fs::read(path).with_context(|| {
        format!(
            "{} is missing; build it with: {BUILD_COMMAND}",
            path.display()
        )
    })?;
    let spec = serde_json::json!({"timeout_ms": 60000, "max_attempts": 1});
    squall.deploy(FUNCTION, artifact, &spec).await?;
    squall.add_worker(FUNCTION).await?;
    for run in 1..=cx.settings.runs {
        measure_run(cx, server, squall, report, run).await?;
    }
    squall.stop_workers().await;
    squall.delete(FUNCTION).await
}

/// Measures one run and adds its figures to the report.
async fn measure_run(
    cx: &Context,
    server: &Server,
    squall: &Cluster,
    report: &mut Report,
    run: usize,
) -> anyhow::Result<()> {
    let n = if cx.settings.smoke { 200 } else { 5_000 };
    let bucket = server
        .nats
        .js
        .get_key_value(STATE_BUCKET)
        .await
        .context("cannot open the state bucket")?;
    let prefix = format!("run{run}/key");
    let key = |i: usize| format!("{FUNCTION}.{prefix}{i}");
    for i in 0..n {
        bucket
            .put(key(i), VALUE.into())
            .await
            .context("cannot write the keys")?;
    }

    // Bare: async-nats's own KV get, one at a time.
    let mut bare = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let value = bucket.get(key(i)).await.context("bare get")?;
        bare.push(started.elapsed());
        if value.as_deref() != Some(VALUE) {
            bail!("the bare get of {} read {value:?}", key(i));
        }
    }
    let bare = Latency::of(&bare);

    let plan = serde_json::json!({"prefix": prefix, "keys": n, "rounds": 2});
    let response = squall
        .http
        .post(format!("{}?wait=120", squall.invoke_url(FUNCTION)))
        .body(plan.to_string())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if status != reqwest::StatusCode::OK {
        bail!("statebench answered {status}: {text}");
    }
    let timings: Timings =
        serde_json::from_str(&text).with_context(|| format!("statebench answered {text}"))?;
    let [uncached, cached] = &timings.rounds[..] else {
        bail!("statebench answered {} rounds, not 2", timings.rounds.len());
    };
    if uncached.found != n || cached.found != n {
        bail!(
            "statebench found {} and {} of {n} keys",
            uncached.found,
            cached.found
        );
    }
    let r = &mut *report;
    r.add(
        S7,
        "state.bare.p50",
        "bare async-nats KV get, sequential, p50",
        "µs",
        bare.p50,
    );
    r.add(
        S7,
        "state.uncached.p50",
        "a function's kv_get, not cached (a broker round trip), p50",
        "µs",
        uncached.p50_us,
    );
    r.add(
        S7,
        "state.uncached.ratio",
        "  … against the bare KV get",
        "x",
        uncached.p50_us / bare.p50,
    );
    r.add(
        S7,
        "state.cached.p50",
        "a function's kv_get, cached (kept coherent by the bucket's watch), p50",
        "µs",
        cached.p50_us,
    );
    r.add(
        S7,
        "state.cached.p99",
        "a function's kv_get, cached, p99",
        "µs",
        cached.p99_us,
    );
    Ok(())
}
