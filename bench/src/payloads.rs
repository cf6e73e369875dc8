//! The payloads phase: a 10 MiB echo through Squall (a synchronous HTTP invoke whose input and
//! output go through the function's payload bucket) beside a bare object-store put and get of
//! the same bytes, in the same run, as MB/s of the round trip (10 MiB in and 10 MiB out).

use crate::cluster::Cluster;
use crate::context::{Context, Server, S7B};
use crate::report::Report;
use anyhow::{bail, Context as _};
use async_nats::jetstream::object_store;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;

/// The function of the phase: the trivial library (it answers its input) under its own name.
const FUNCTION: &str = "payloadecho";
/// The bare side's throwaway bucket.
const BARE_BUCKET: &str = "bench_payloads";
/// The size of one payload.
const SIZE: usize = 10 * 1024 * 1024;

/// Deploys the echo with a worker of its own, measures every run, and removes both.
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
) -> anyhow::Result<()> {
    let artifact = std::fs::read(&cx.env.artifact)
        .with_context(|| format!("cannot read {}", cx.env.artifact.display()))?;
    let spec = serde_json::json!({"timeout_ms": 60000, "max_attempts": 1, "memory_mb": 512});
    squall.deploy(FUNCTION, artifact, &spec).await?;
    squall.add_worker(FUNCTION).await?;
    let bare = server
        .nats
        .js
        .create_object_store(object_store::Config {
            bucket: BARE_BUCKET.into(),
            ..Default::default()
        })
        .await
        .context("cannot create the bare bucket")?;
    let input = bytes::Bytes::from(noise(SIZE));
    let rounds = if cx.settings.smoke { 2 } else { 10 };
    for _ in 0..cx.settings.runs {
        let mut bare_times = Vec::with_capacity(rounds);
        let mut squall_times = Vec::with_capacity(rounds);
        for round in 0..rounds {
            bare_times.push(bare_round(&bare, &input, round).await?);
            squall_times.push(squall_round(squall, &input).await?);
        }
        let mbps = |times: &[Duration]| {
            let total: Duration = times.iter().sum();
            (2 * SIZE * times.len()) as f64 / 1e6 / total.as_secs_f64()
        };
        let (bare_mbps, squall_mbps) = (mbps(&bare_times), mbps(&squall_times));
        report.add(
            S7B,
            "payloads.bare.mbps",
            "bare object store: put then get of 10 MiB (in + out)",
            "MB/s",
            bare_mbps,
        );
        report.add(
            S7B,
            "payloads.echo.mbps",
            "10 MiB echo, synchronous HTTP invoke, stored in and out (in + out)",
            "MB/s",
            squall_mbps,
        );
        report.add(
            S7B,
            "payloads.echo.pct",
            "  … against the bare put and get",
            "%",
            100.0 * squall_mbps / bare_mbps,
        );
    }
    let _ = server.nats.js.delete_object_store(BARE_BUCKET).await;
    squall.stop_workers().await;
    squall.delete(FUNCTION).await
}

/// One bare put and get of `input`; checks the bytes read back.
async fn bare_round(
    store: &object_store::ObjectStore,
    input: &bytes::Bytes,
    round: usize,
) -> anyhow::Result<Duration> {
    let name = format!("round-{round}");
    let started = Instant::now();
    let mut reader = input.as_ref();
    store
        .put(name.as_str(), &mut reader)
        .await
        .context("bare put")?;
    let mut object = store.get(&name).await.context("bare get")?;
    let mut output = Vec::with_capacity(SIZE);
    object.read_to_end(&mut output).await.context("bare read")?;
    let elapsed = started.elapsed();
    if output.len() != input.len() || output[..] != input[..] {
        bail!("the bare get read {} other bytes", output.len());
    }
    Ok(elapsed)
}

/// One synchronous 10 MiB echo through Squall; checks the bytes it answered.
async fn squall_round(squall: &Cluster, input: &bytes::Bytes) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = squall
        .http
        .post(format!("{}?wait=120", squall.invoke_url(FUNCTION)))
        .body(input.clone())
        .send()
        .await?;
    let status = response.status();
    let output = response.bytes().await?;
    let elapsed = started.elapsed();
    if status != reqwest::StatusCode::OK {
        bail!(
            "the echo answered {status}: {}",
            String::from_utf8_lossy(&output)
        );
    }
    if output.len() != input.len() || output != *input {
        bail!("the echo answered {} other bytes", output.len());
    }
    Ok(elapsed)
}

/// Pseudo-random bytes (xorshift): nothing a compressing layer could shorten.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
