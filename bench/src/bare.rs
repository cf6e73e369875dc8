//! The bare reference: a minimal async-nats pipeline doing exactly what one invocation needs
//! (publish the job, pull it, run a no-op, publish the result and await its ack, ack the job),
//! on streams and a consumer configured exactly like Squall's own.

use crate::broker::Role;
use crate::procs::{Environment, Proc};
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The stream of bare jobs (a copy of Squall's JOBS definition).
pub const JOBS_STREAM: &str = "BENCH_JOBS";
/// The subject bare jobs are published to.
pub const JOBS_SUBJECT: &str = "bench.jobs";
/// The stream of bare results (a copy of Squall's RESULTS definition).
pub const RESULTS_STREAM: &str = "BENCH_RESULTS";
/// Bare results go to `bench.results.<id>`.
pub const RESULTS_PREFIX: &str = "bench.results";
/// A stream that only the probes publish to, to time one JetStream publish and its ack.
pub const PROBE_STREAM: &str = "BENCH_PROBE";
/// The subject of `PROBE_STREAM`.
pub const PROBE_SUBJECT: &str = "bench.probe";
/// The durable pull consumer every bare worker process shares.
pub const CONSUMER: &str = "bench-worker";
/// The header that carries a job's id when the client needs to match its result.
pub const ID_HEADER: &str = "Bench-Id";
/// What a bare worker prints once it is pulling.
const READY_LINE: &str = "bare worker ready";

/// Creates the bare streams and consumer as copies of Squall's `JOBS`, `RESULTS` and the
/// function's consumer, as the dispatcher created them, so both pipelines store, retain and
/// deliver alike; and a small stream (a copy of `RESULTS` capped at 10,000 messages) for the
/// publish probe.
pub async fn setup(js: &jetstream::Context, function: &str) -> anyhow::Result<()> {
    let mut jobs = js
        .get_stream(squall_broker::names::JOBS_STREAM)
        .await
        .context("cannot read Squall's JOBS stream")?
        .info()
        .await?
        .config
        .clone();
    jobs.name = JOBS_STREAM.into();
    jobs.subjects = vec![JOBS_SUBJECT.into()];
    jobs.description = Some("squall-bench: bare reference jobs".into());
    let mut results = js
        .get_stream(squall_broker::names::RESULTS_STREAM)
        .await
        .context("cannot read Squall's RESULTS stream")?
        .info()
        .await?
        .config
        .clone();
    results.name = RESULTS_STREAM.into();
    results.subjects = vec![format!("{RESULTS_PREFIX}.*")];
    results.description = Some("squall-bench: bare reference results".into());
    let mut consumer_config = js
        .get_stream(squall_broker::names::JOBS_STREAM)
        .await?
        .consumer_info(squall_broker::names::consumer_name(function))
        .await
        .context("cannot read the function's consumer")?
        .config;
    consumer_config.durable_name = Some(CONSUMER.into());
    consumer_config.name = None;
    consumer_config.filter_subject = JOBS_SUBJECT.into();
    consumer_config.filter_subjects = Vec::new();
    consumer_config.description = Some("squall-bench: bare reference worker".into());
    js.create_or_update_stream(jobs)
        .await
        .context("cannot create the bare jobs stream")?;
    let mut probe = results.clone();
    probe.name = PROBE_STREAM.into();
    probe.subjects = vec![PROBE_SUBJECT.into()];
    probe.description = Some("squall-bench: publish probes".into());
    probe.max_messages = 10_000;
    js.create_or_update_stream(results)
        .await
        .context("cannot create the bare results stream")?;
    js.create_or_update_stream(probe)
        .await
        .context("cannot create the probe stream")?;
    js.get_stream(JOBS_STREAM)
        .await?
        .create_consumer(consumer_config)
        .await
        .context("cannot create the bare consumer")?;
    Ok(())
}

/// Starts a bare worker process (this program re-run) and waits until it pulls.
pub async fn spawn_worker(
    env: &Environment,
    nats_url: &str,
    dir: &Path,
    name: &str,
    concurrency: u32,
) -> anyhow::Result<Proc> {
    let mut command = Command::new(&env.bench);
    command
        .envs(env.broker.login(Role::Bench))
        .arg("bare-worker")
        .arg("--nats-url")
        .arg(nats_url)
        .arg("--concurrency")
        .arg(concurrency.to_string());
    let mut process = Proc::spawn(name, command, dir.join(format!("{name}.log")))?;
    process
        .wait_for_log("readiness", Duration::from_secs(15), |log| {
            log.contains(READY_LINE)
        })
        .await?;
    Ok(process)
}

/// The bare worker's main loop: the same shape as Squall's pull loop (a permit per in-flight
/// job, a task per job, result published and acknowledged before the job is acked), minus
/// everything Squall adds around the call.
pub async fn worker_main(
    nats_url: String,
    concurrency: usize,
    login: Option<(String, String)>,
) -> anyhow::Result<()> {
    // One URL, or a cluster's nodes separated by commas.
    let servers = squall_broker::connect::servers(&nats_url)?;
    let options = match login {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .name("squall-bench-bare-worker")
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to {nats_url}"))?;
    let js = jetstream::new(client);
    let consumer: consumer::PullConsumer = js
        .get_stream(JOBS_STREAM)
        .await?
        .get_consumer(CONSUMER)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the bare consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency.clamp(1, 256))
        .messages()
        .await?;
    println!("{READY_LINE}");
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    loop {
        let permit = limit.clone().acquire_owned().await?;
        let message = match messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                eprintln!("bare worker: transient pull error: {error}");
                continue;
            }
            None => anyhow::bail!("the job stream ended"),
        };
        let js = js.clone();
        tokio::spawn(async move {
            if let Err(error) = run_job(&js, message).await {
                eprintln!("bare worker: job failed: {error:#}");
            }
            drop(permit);
        });
    }
}

async fn run_job(js: &jetstream::Context, message: jetstream::Message) -> anyhow::Result<()> {
    let id = match message.headers.as_ref().and_then(|h| h.get(ID_HEADER)) {
        Some(id) => id.as_str().to_string(),
        None => message
            .info()
            .map(|info| info.stream_sequence.to_string())
            .map_err(|e| anyhow::anyhow!("job without delivery info: {e}"))?,
    };
    // The no-op: the output is the input.
    let output = message.payload.clone();
    js.publish(format!("{RESULTS_PREFIX}.{id}"), output)
        .await?
        .await
        .context("result not stored")?;
    message
        .ack()
        .await
        .map_err(|e| anyhow::anyhow!("cannot ack: {e}"))?;
    Ok(())
}
