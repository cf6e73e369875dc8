//! A function's pull loop: pulls only as many jobs as it has free call slots and hands each to
//! `attempt::run_job`.

use crate::jobs::attempt::run_job;
use crate::jobs::context::{Jobs, Serving};
use crate::jobs::executor::Executor;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use squall_broker::names::consumer_name;
use std::sync::Arc;
use std::time::Duration;

/// Serves `function` until the task is aborted or the worker stops: re-subscribes after any
/// consumer error.
pub async fn serve_function(jobs: Arc<Jobs>, function: String) {
    let mut stopping = jobs.lifecycle.stopping();
    while !*stopping.borrow() {
        if let Err(error) = pull_jobs(&jobs, &function).await {
            tracing::warn!(message = "job consumer failed; resubscribing", function = %function, error = %error);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Most jobs asked for in one pull request.
const MAX_BATCH: usize = 256;
/// How long one pull request waits for jobs before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Pulls only as many jobs as there are free slots, so that no job waits in this process
/// unstarted (where it could outlive its ack deadline and run twice).
async fn pull_jobs(jobs: &Arc<Jobs>, function: &str) -> anyhow::Result<()> {
    let Some(state) = jobs.functions.get(function) else {
        return Ok(());
    };
    let consumer: jetstream::consumer::PullConsumer = jobs
        .outlet
        .topology
        .jobs
        .get_consumer(&consumer_name(function))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open consumer {}: {e}", consumer_name(function)))?;
    let progress_every =
        (consumer.cached_info().config.ack_wait / 3).max(Duration::from_millis(100));
    let threads = jobs.call_threads(state.spec.concurrency);
    let limit = Arc::new(tokio::sync::Semaphore::new(threads));
    let serving = Arc::new(Serving {
        executor: Executor::new(function, threads),
        progress_every,
        metrics: jobs.metrics.function(function),
    });
    let mut stopping = jobs.lifecycle.stopping();
    loop {
        let first = tokio::select! {
            permit = limit.clone().acquire_owned() => permit?,
            _ = stopping.changed() => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match limit.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let mut batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await?;
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = stopping.changed() => return Ok(()),
            };
            let Some(message) = next else { break };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::debug!(message = "transient pull error", function = %function, error = %error);
                    break;
                }
            };
            let Some(permit) = permits.pop() else {
                // The server never sends more than asked; hand back anything extra.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            let in_flight = jobs.in_flight.enter().await?;
            let jobs = jobs.clone();
            let serving = serving.clone();
            tokio::spawn(async move {
                run_job(&jobs, &serving, message, permit).await;
                drop(in_flight);
            });
        }
    }
}
