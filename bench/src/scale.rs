//! The scale phase: synthetic results published straight into RESULTS (the real header format,
//! as a worker writes them), then a fresh dispatcher that holds the query index catches up on
//! them; reports the catch-up rate, the index's size on disk per invocation, the index
//! process's RSS, and the time of stats, usage and list queries against the full index.

use crate::cluster::Cluster;
use crate::context::{Context, Server};
use crate::measure::FUNCTION;
use crate::report::Report;
use crate::resources::{RssSampler, Watch};
use crate::stats::Latency;
use anyhow::{bail, Context as _};
use squall_broker::headers as h;
use squall_broker::names::{results_subject, RESULTS_STREAM};
use squall_broker::{ErrorKind, InvocationStatus, ResultMeta};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

/// The section of the report.
pub const S8: &str = "8. query index at scale";
/// Functions the synthetic results belong to; the first is the deployed one, so its stats
/// can be asked for.
const FUNCTIONS: usize = 10;
/// The creation times of the synthetic invocations spread over this much of the past.
const SPREAD_MS: u64 = 23 * 3600 * 1000;
/// Publishes in flight at once.
const WINDOW: usize = 4096;
/// How long the index may take to catch up before the phase fails.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(900);

/// A deterministic pseudo-random sequence (xorshift), so every run publishes the same results.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn function_name(i: usize) -> String {
    if i == 0 {
        FUNCTION.to_string()
    } else {
        format!("scale-{i}")
    }
}

/// The synthetic results, in the order a fleet would publish them: creation time ascending,
/// one in 50 invocations retried once (a `retrying` result, then its terminal one), a few
/// failures and timeouts, latencies with a long tail. Exactly `n` results.
fn synthetic(n: usize, now_ms: u64) -> Vec<ResultMeta> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let start = now_ms.saturating_sub(SPREAD_MS);
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let created = start + i * SPREAD_MS / n as u64;
        let r = rng.next();
        let id = format!(
            "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
            created >> 16,
            created & 0xffff,
            (r >> 52) & 0xfff,
            (r >> 40) & 0xfff,
            i
        );
        let function = function_name((r % FUNCTIONS as u64) as usize);
        // Mostly around a millisecond, one in a hundred up to a second.
        let duration_us = if r.is_multiple_of(100) {
            1_000 + (r >> 8) % 1_000_000
        } else {
            100 + (r >> 8) % 3_000
        };
        let base = ResultMeta {
            invocation_id: id,
            function,
            version: "sha256:5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e"
                .into(),
            status: InvocationStatus::Succeeded,
            attempt: 1,
            error_kind: None,
            created_at_ms: created,
            started_at_ms: created + 1,
            finished_at_ms: created + 1 + duration_us / 1000,
            duration_us,
            cpu_us: duration_us * 9 / 10,
            kv_ops: if r.is_multiple_of(7) { 3 } else { 0 },
            kv_bytes: if r.is_multiple_of(7) { 120 } else { 0 },
            logs: Vec::new(),
            worker: "bench-worker-1".into(),
            trace_id: String::new(),
        };
        if i % 50 == 7 && out.len() + 1 < n {
            out.push(ResultMeta {
                status: InvocationStatus::Retrying,
                error_kind: Some(ErrorKind::Error),
                ..base.clone()
            });
            out.push(ResultMeta { attempt: 2, ..base });
        } else {
            let (status, error_kind) = match r % 100 {
                1..=3 => (InvocationStatus::Failed, Some(ErrorKind::Error)),
                4 => (InvocationStatus::TimedOut, Some(ErrorKind::Timeout)),
                _ => (InvocationStatus::Succeeded, None),
            };
            out.push(ResultMeta {
                status,
                error_kind,
                ..base
            });
        }
        i += 1;
    }
    out
}

/// Publishes `results` into RESULTS with a window of acknowledgements in flight.
async fn publish(server: &Server, results: &[ResultMeta]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(WINDOW);
    for meta in results {
        let mut headers = meta.to_headers();
        headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
        let body = if meta.status == InvocationStatus::Succeeded {
            &b"{\"ok\":true}"[..]
        } else {
            &b"synthetic failure"[..]
        };
        let ack = server
            .nats
            .js
            .publish_with_headers(
                results_subject(&meta.function, &meta.invocation_id),
                headers,
                bytes::Bytes::from_static(body),
            )
            .await
            .context("cannot publish a synthetic result")?;
        pending.push_back(ack);
        if pending.len() >= WINDOW {
            if let Some(ack) = pending.pop_front() {
                ack.await.context("a synthetic result was not stored")?;
            }
        }
    }
    for ack in pending {
        ack.await.context("a synthetic result was not stored")?;
    }
    Ok(started.elapsed())
}

/// Bytes the files under `dir` take on disk (allocated blocks) and their apparent length.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let (mut blocks, mut len) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            let (b, l) = disk_usage(&entry.path());
            blocks += b;
            len += l;
        } else {
            blocks += meta.blocks() * 512;
            len += meta.len();
        }
    }
    (blocks, len)
}

/// `squall_dispatcher_index_applied_total` of the dispatcher at `url`.
async fn applied(cluster: &Cluster) -> anyhow::Result<u64> {
    let text = cluster
        .http
        .get(format!("{}/metrics", cluster.url))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("squall_dispatcher_index_applied_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Times `count` sequential GETs of `path`, each of which must answer 200.
async fn time_query(cluster: &Cluster, path: &str, count: usize) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = cluster
            .http
            .get(format!("{}{path}", cluster.url))
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        samples.push(started.elapsed());
        if !status.is_success() {
            bail!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(Latency::of(&samples))
}

/// Runs the phase once: stops the benchmark's dispatcher (so that only the fresh one indexes),
/// publishes the results, starts a dispatcher with an empty data folder and measures it. The
/// fresh dispatcher then replaces the benchmark's (the phase runs last).
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = cx.settings.scale_n;
    let queries = if cx.settings.smoke { 5 } else { 30 };
    squall.dispatcher.terminate(Duration::from_secs(10)).await;
    crate::drive::purge(&server.nats, RESULTS_STREAM).await?;
    let now = squall_broker::time::now_ms();
    let results = synthetic(n, now);
    cx.progress(&format!("scale: publishing {n} synthetic results"));
    let published = publish(server, &results).await?;
    drop(results);
    report.add(
        S8,
        "scale.publish.rate",
        "synthetic results published into RESULTS",
        "results/s",
        n as f64 / published.as_secs_f64(),
    );

    cx.progress("scale: starting a fresh index holder");
    let dir = cx.dir.join("scale");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut fresh = Cluster::start(&cx.env, &server.url, dir.clone()).await?;
    let started = Instant::now();
    let pid = fresh.dispatcher.pid();
    let rss = RssSampler::start(vec![Watch::process(pid)], Duration::from_millis(50));
    loop {
        let done = applied(&fresh).await?;
        if done >= n as u64 {
            break;
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            bail!("the index applied {done} of {n} results within {CATCH_UP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = started.elapsed();
    let peak_catch_up = rss.stop()[0];
    cx.progress(&format!(
        "scale: caught up with {n} results in {:.1} s",
        caught_up.as_secs_f64()
    ));
    report.add(
        S8,
        "scale.catchup.rate",
        "index catch-up from an empty index (ready to all applied)",
        "results/s",
        n as f64 / caught_up.as_secs_f64(),
    );
    report.add(
        S8,
        "scale.rss.catchup",
        "index holder (dispatcher) RSS, peak during catch-up",
        "MiB",
        peak_catch_up as f64 / 1024.0,
    );

    let queries_started = Instant::now();
    let rss = RssSampler::start(vec![Watch::process(pid)], Duration::from_millis(50));
    let day_ago = now.saturating_sub(24 * 3600 * 1000);
    let stats = time_query(
        &fresh,
        &format!("/v1/functions/{FUNCTION}/stats?window=86400"),
        queries,
    )
    .await?;
    let usage = time_query(
        &fresh,
        &format!("/v1/usage?since={day_ago}&group_by=function"),
        queries,
    )
    .await?;
    let usage_hour = time_query(
        &fresh,
        &format!("/v1/usage?since={day_ago}&group_by=hour"),
        queries,
    )
    .await?;
    let list = time_query(&fresh, "/v1/invocations?limit=50", queries).await?;
    let list_fn = time_query(
        &fresh,
        &format!("/v1/invocations?limit=50&function={FUNCTION}&status=failed"),
        queries,
    )
    .await?;
    let peak_queries = rss.stop()[0];
    cx.progress(&format!(
        "scale: queries timed in {:.1} s",
        queries_started.elapsed().as_secs_f64()
    ));
    let r = &mut *report;
    for (key, label, latency) in [
        ("scale.stats", "stats of one function over 24 h", &stats),
        ("scale.usage.fn", "usage over 24 h by function", &usage),
        ("scale.usage.hour", "usage over 24 h by hour", &usage_hour),
        ("scale.list", "a 50-row page of /v1/invocations", &list),
        (
            "scale.list.filtered",
            "a 50-row page of one function's failures",
            &list_fn,
        ),
    ] {
        r.add(
            S8,
            &format!("{key}.p50"),
            &format!("{label}, p50"),
            "ms",
            latency.p50 / 1000.0,
        );
        r.add(
            S8,
            &format!("{key}.p99"),
            &format!("{label}, p99"),
            "ms",
            latency.p99 / 1000.0,
        );
    }
    r.add(
        S8,
        "scale.rss.queries",
        "index holder RSS, peak while answering the queries",
        "MiB",
        peak_queries as f64 / 1024.0,
    );

    // The size once sled has written everything down: stop the dispatcher (it flushes).
    let index_dir = dir.join("dispatcher").join("index");
    fresh.dispatcher.terminate(Duration::from_secs(30)).await;
    let (blocks, len) = disk_usage(&index_dir);
    let r = &mut *report;
    r.add(
        S8,
        "scale.disk.total",
        "index on disk (allocated), after catch-up and shutdown",
        "MB",
        blocks as f64 / 1e6,
    );
    r.add(
        S8,
        "scale.disk.per_inv",
        "index on disk per invocation (allocated)",
        "B",
        blocks as f64 / n as f64,
    );
    r.add(
        S8,
        "scale.disk.apparent.per_inv",
        "index files' apparent size per invocation",
        "B",
        len as f64 / n as f64,
    );
    // Restart it on the same folder so the phases' shared teardown finds a live dispatcher.
    let restarted = Cluster::start(&cx.env, &server.url, dir).await?;
    fresh = restarted;
    std::mem::swap(squall, &mut fresh);
    Ok(())
}

/// The targets at 1,000,000 indexed invocations (the disk target as bytes per
/// invocation, so a smaller run is judged by the same measure).
pub fn add_targets(report: &mut Report) {
    report.target(
        "index catch-up >= 50,000 results/s",
        "scale.catchup.rate",
        |v| v >= 50_000.0,
    );
    report.target(
        "index on disk <= 200 B per invocation (200 MB at 1,000,000)",
        "scale.disk.per_inv",
        |v| v <= 200.0,
    );
    report.target(
        "index holder RSS <= 150 MiB during catch-up",
        "scale.rss.catchup",
        |v| v <= 150.0,
    );
    report.target(
        "index holder RSS <= 150 MiB while answering queries",
        "scale.rss.queries",
        |v| v <= 150.0,
    );
    report.target("stats query p50 < 20 ms", "scale.stats.p50", |v| v < 20.0);
    report.target(
        "usage over 24 h (by function) p50 < 20 ms",
        "scale.usage.fn.p50",
        |v| v < 20.0,
    );
    report.target("a 50-row list page p50 < 10 ms", "scale.list.p50", |v| {
        v < 10.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_results_are_exactly_n_in_creation_order() {
        let results = synthetic(1000, 100_000_000);
        assert_eq!(results.len(), 1000);
        assert!(results
            .windows(2)
            .all(|w| w[0].created_at_ms <= w[1].created_at_ms));
        let retried = results
            .iter()
            .filter(|r| r.status == InvocationStatus::Retrying)
            .count();
        assert!(retried > 10, "{retried}");
        assert!(results.iter().any(|r| r.function == FUNCTION));
    }
}
