//! The steps every throughput phase takes, single-node or cluster: a load (the bare pipeline or
//! Squall's raw-NATS path), warmed up and then measured with the processes' CPU read around it,
//! on a Squall dispatcher started, deployed to and stopped the same way.

use crate::bare;
use crate::cluster::Cluster;
use crate::drive::{self, Completion, Nats, Submit, Throughput};
use crate::resources::{CpuMeter, Usage, Watch};
use anyhow::Context as _;
use bytes::Bytes;
use squall_broker::names::{consumer_name, jobs_subject, JOBS_STREAM};
use std::time::Duration;

/// The trivial function every Squall measurement invokes.
pub const FUNCTION: &str = "noop";

/// What one throughput measurement submits, where it counts completions and which queue it
/// waits to drain.
pub struct Load {
    pub submit: Submit,
    pub completion: Completion,
    /// The subject its results arrive on.
    pub results: String,
    pub stream: &'static str,
    pub consumer: String,
}

impl Load {
    /// The bare pipeline: JetStream publishes to the bare worker's stream.
    pub fn bare() -> Load {
        Load {
            submit: Submit::JetStream {
                subject: bare::JOBS_SUBJECT.into(),
            },
            completion: Completion::Any,
            results: format!("{}.>", bare::RESULTS_PREFIX),
            stream: bare::JOBS_STREAM,
            consumer: bare::CONSUMER.into(),
        }
    }

    /// Squall's jobs submitted by `submit` (raw NATS publishes to the function's subject by
    /// default), counted on the function's results subject.
    pub fn squall(submit: Submit) -> Load {
        Load {
            submit,
            completion: Completion::Succeeded,
            results: format!("results.{FUNCTION}.>"),
            stream: JOBS_STREAM,
            consumer: consumer_name(FUNCTION),
        }
    }

    /// Raw NATS publishes to the function's subject.
    pub fn squall_raw() -> Load {
        Load::squall(Submit::JetStream {
            subject: jobs_subject(FUNCTION),
        })
    }
}

/// What drives a load: the benchmark's connection, the payload, the warm-up size and the time
/// limit of one measurement.
pub struct Driver<'a> {
    pub nats: &'a Nats,
    pub payload: &'a Bytes,
    pub warmup: usize,
    pub limit: Duration,
    pub ticks_per_second: u64,
}

impl Driver<'_> {
    /// Submits `n` invocations of `load` and waits for their results.
    pub async fn throughput(&self, load: &Load, n: usize) -> anyhow::Result<Throughput> {
        drive::throughput(
            self.nats,
            &load.results,
            load.completion,
            &load.submit,
            n,
            self.payload,
            self.limit,
        )
        .await
    }

    /// Waits until the load's queue is drained.
    pub async fn quiesce(&self, load: &Load) -> anyhow::Result<()> {
        drive::quiesce(self.nats, load.stream, &load.consumer).await
    }

    /// Runs the warm-up and waits for its queue to drain.
    pub async fn warm_up(&self, load: &Load) -> anyhow::Result<()> {
        self.throughput(load, self.warmup).await?;
        self.quiesce(load).await
    }

    /// Measures `n` invocations with the CPU of `watched` read around them (per invocation, in
    /// their order).
    pub async fn measure(
        &self,
        load: &Load,
        n: usize,
        watched: &[Watch],
    ) -> anyhow::Result<(Throughput, Vec<Usage>)> {
        let cpu = CpuMeter::start(self.ticks_per_second, watched)?;
        let t = self.throughput(load, n).await?;
        Ok((t, cpu.usage(n)?))
    }

    /// Warms up, then measures `n` with `watched`'s CPU read around them.
    pub async fn warm_then_measure(
        &self,
        load: &Load,
        n: usize,
        watched: &[Watch],
    ) -> anyhow::Result<(Throughput, Vec<Usage>)> {
        self.warm_up(load).await?;
        self.measure(load, n, watched).await
    }

    /// Adds Squall workers up to `count`, warms up and measures `n` of `load` (no CPU read),
    /// then waits for the queue to drain.
    pub async fn with_workers(
        &self,
        squall: &mut Cluster,
        load: &Load,
        count: usize,
        n: usize,
    ) -> anyhow::Result<Throughput> {
        while squall.workers.len() < count {
            squall.add_worker(FUNCTION).await?;
        }
        self.warm_up(load).await?;
        let t = self.throughput(load, n).await?;
        self.quiesce(load).await?;
        Ok(t)
    }
}

/// Connects the benchmark to `servers`.
pub async fn connect(
    options: async_nats::ConnectOptions,
    servers: impl async_nats::ToServerAddrs,
    what: &str,
) -> anyhow::Result<Nats> {
    let client = options
        .name("squall-bench")
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to the benchmark's {what}"))?;
    Ok(Nats {
        js: async_nats::jetstream::new(client.clone()),
        client,
    })
}

/// Deploys the benchmark's function with `spec` and creates the bare pipeline's streams.
pub async fn deploy(
    squall: &Cluster,
    nats: &Nats,
    artifact: &[u8],
    spec: &serde_json::Value,
) -> anyhow::Result<()> {
    squall.deploy(FUNCTION, artifact.to_vec(), spec).await?;
    bare::setup(&nats.js, FUNCTION).await
}

/// Stops the dispatcher and its workers; after a failed measurement, first shows the end of
/// their logs.
pub async fn stop(squall: &mut Cluster, failed: bool) {
    if failed {
        eprintln!(
            "--- dispatcher log (end) ---\n{}",
            squall.dispatcher.log_tail(15)
        );
        for worker in &squall.workers {
            eprintln!("--- {} log (end) ---\n{}", worker.name, worker.log_tail(15));
        }
    }
    squall.stop_workers().await;
    squall.dispatcher.terminate(Duration::from_secs(10)).await;
}
