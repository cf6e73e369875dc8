//! The bare reference, once per run: the round trip's latency, sequential and with concurrent
//! clients, and the bare pipeline's throughput with one and two worker connections.

use crate::bare;
use crate::context::{Context, Server, S1};
use crate::drive;
use crate::measure::Load;
use crate::record::{add_latency, add_usage};
use crate::report::Report;
use crate::resources::Watch;
use crate::stats::Latency;
use std::time::Duration;

/// Measures the bare reference of run `run` (numbered from 1).
pub async fn measure(
    cx: &Context,
    server: &Server,
    report: &mut Report,
    run: usize,
) -> anyhow::Result<()> {
    let s = cx.settings.clone();
    let load = Load::bare();
    let mut first = bare::spawn_worker(
        &cx.env,
        &server.url,
        &cx.dir,
        &format!("bare-{run}-1"),
        s.concurrency,
    )
    .await?;

    drive::bare_round_trips(&server.nats, 1, s.latency_warmup(), &cx.payload).await?;
    let sequential = drive::bare_round_trips(&server.nats, 1, s.latency_n, &cx.payload).await?;
    add_latency(
        report,
        S1,
        "bare.rt.seq",
        "bare round trip, sequential",
        &Latency::of(&sequential),
    );
    let per_client = (s.latency_n / s.clients).max(1);
    let concurrent =
        drive::bare_round_trips(&server.nats, s.clients, per_client, &cx.payload).await?;
    add_latency(
        report,
        S1,
        "bare.rt.conc",
        &format!("bare round trip, {} concurrent clients", s.clients),
        &Latency::of(&concurrent),
    );

    let watched = [Watch::process(first.pid()), Watch::process(server.pid)];
    let (one, usage) = cx
        .driver(&server.nats)
        .warm_then_measure(&load, s.n, &watched)
        .await?;
    add_usage(
        report,
        "bare pipeline",
        &[
            ("bare.worker", "bare worker", true),
            ("bare.nats", "nats-server", false),
        ],
        &usage,
    );
    report.add(
        S1,
        "bare.tput.1",
        "bare pipeline throughput, 1 worker connection",
        "jobs/s",
        one.per_second,
    );
    cx.driver(&server.nats).quiesce(&load).await?;

    let mut second = bare::spawn_worker(
        &cx.env,
        &server.url,
        &cx.dir,
        &format!("bare-{run}-2"),
        s.concurrency,
    )
    .await?;
    let driver = cx.driver(&server.nats);
    driver.warm_up(&load).await?;
    let two = driver.throughput(&load, s.n).await?;
    report.add(
        S1,
        "bare.tput.2",
        "bare pipeline throughput, 2 worker connections",
        "jobs/s",
        two.per_second,
    );
    cx.driver(&server.nats).quiesce(&load).await?;
    first.terminate(Duration::from_secs(5)).await;
    second.terminate(Duration::from_secs(5)).await;
    drive::purge(&server.nats, bare::RESULTS_STREAM).await?;
    Ok(())
}
