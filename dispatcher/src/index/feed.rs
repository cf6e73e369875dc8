//! The query index's feed: every result RESULTS stores, applied to the query store in batches.

use crate::core::broker::Broker;
use crate::core::metrics::Metrics;
use crate::index::store;
use futures::StreamExt;
use squall_broker::ResultMeta;
use std::sync::Arc;
use std::time::Duration;

/// Keeps the query index up to date with RESULTS, forever; restarts after broker errors.
pub async fn run_indexer(index: store::QueryIndex, broker: Broker, metrics: Arc<Metrics>) {
    loop {
        if let Err(error) = index_results(&index, &broker, &metrics).await {
            tracing::warn!(message = "result indexer failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn index_results(
    index: &store::QueryIndex,
    broker: &Broker,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let mut results = broker.topology.results.clone();
    let last_in_stream = results.info().await?.state.last_sequence;
    let mut applied = index.sequence()?;
    if applied > last_in_stream {
        // RESULTS was recreated: its sequences start over, so the index must too.
        tracing::warn!(
            message = "RESULTS is behind the query index; rebuilding the index",
            index_sequence = applied,
            stream_sequence = last_in_stream
        );
        index.clear()?;
        applied = 0;
    }
    // Until the feed reaches what the stream holds now, answers say they may be partial.
    index.start_catch_up(applied, last_in_stream);
    if applied < last_in_stream {
        tracing::info!(
            message = "the query index is catching up with RESULTS",
            applied_sequence = applied,
            stream_sequence = last_in_stream
        );
    }
    let deliver_policy = match applied {
        0 => DeliverPolicy::All,
        n => DeliverPolicy::ByStartSequence {
            start_sequence: n + 1,
        },
    };
    let consumer = results
        .create_consumer(OrderedConfig {
            deliver_policy,
            headers_only: true,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut batch = Vec::with_capacity(INDEX_BATCH);
    let mut last_seen = applied;
    // The batch being written while the next one is read: sled and the feed overlap.
    let mut in_flight: Option<Applying> = None;
    loop {
        let first = if in_flight.is_some() {
            match futures::FutureExt::now_or_never(messages.next()) {
                Some(Some(first)) => first,
                Some(None) => break,
                None => {
                    // Nothing more has arrived: finish the write before waiting for more.
                    finish(metrics, index, in_flight.take()).await?;
                    continue;
                }
            }
        } else {
            // The feed is an unreplicated consumer: when the node holding it dies it can go
            // silent. Quiet while RESULTS has moved on means stalled, so start it again from
            // the last applied sequence (on whichever node answers).
            match tokio::time::timeout(FEED_QUIET, messages.next()).await {
                Ok(Some(first)) => first,
                Ok(None) => break,
                Err(_) => {
                    let last = results.info().await?.state.last_sequence;
                    if last > last_seen {
                        anyhow::bail!(
                            "the RESULTS feed went quiet at sequence {last_seen} while the stream is at {last}"
                        );
                    }
                    continue;
                }
            }
        };
        // Take whatever else has already arrived, and apply it all in one sled batch.
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let message = message?;
            let sequence = message
                .info()
                .map_err(|e| anyhow::anyhow!("result without stream info: {e}"))?
                .stream_sequence;
            last_seen = sequence;
            match message.headers.as_ref().map(ResultMeta::from_headers) {
                Some(Ok(meta)) => {
                    // Only results that arrived while this feed runs: a replay of what the
                    // stream held before is not new latency to report.
                    if sequence > last_in_stream {
                        metrics.indexed_result(&meta.function, meta.status, meta.duration_us);
                    }
                    batch.push((sequence, meta))
                }
                Some(Err(error)) => {
                    tracing::warn!(message = "skipping an unreadable result", sequence, error = %error)
                }
                None => {}
            }
            if batch.len() < INDEX_BATCH {
                next = futures::FutureExt::now_or_never(messages.next()).flatten();
            }
        }
        // Batches are written in stream order: the previous one first.
        finish(metrics, index, in_flight.take()).await?;
        if batch.len() < OVERLAP_FROM {
            // A trickle (one synchronous call's result, say): written here, at once, without
            // a hand-off to a blocking thread and back, which would cost more than the write.
            index.apply_all(&batch)?;
            metrics.indexed(batch.len());
            batch.clear();
            progressed(index, last_seen);
            continue;
        }
        let applying = index.clone();
        let taken = std::mem::replace(&mut batch, Vec::with_capacity(INDEX_BATCH));
        // sled blocks: off the async threads, so queries and the HTTP API keep answering
        // while the next batch is read.
        let task =
            tokio::task::spawn_blocking(move || applying.apply_all(&taken).map(|_| taken.len()));
        in_flight = Some(Applying {
            task,
            through: last_seen,
        });
    }
    finish(metrics, index, in_flight.take()).await?;
    Ok(())
}

/// A batch of results being written to the index, and the RESULTS sequence it reaches.
struct Applying {
    task: tokio::task::JoinHandle<Result<usize, crate::index::IndexError>>,
    through: u64,
}

/// Waits for the batch being written, then counts it and notes how far the index is.
async fn finish(
    metrics: &Metrics,
    index: &store::QueryIndex,
    applying: Option<Applying>,
) -> anyhow::Result<()> {
    let Some(applying) = applying else {
        return Ok(());
    };
    let applied = applying.task.await??;
    metrics.indexed(applied);
    progressed(index, applying.through);
    Ok(())
}

/// Notes that the index holds RESULTS up to `through`.
fn progressed(index: &store::QueryIndex, through: u64) {
    let was_catching_up = index.catching_up();
    index.progressed(through);
    if was_catching_up && !index.catching_up() {
        tracing::info!(
            message = "the query index caught up with RESULTS",
            applied_sequence = through
        );
    }
}

/// Batches at least this large are written on a blocking thread while the next is read;
/// smaller ones are written at once (the hand-off would cost more than it saves).
const OVERLAP_FROM: usize = 32;

/// How long the RESULTS feed may stay quiet before the stream is asked whether it is behind.
const FEED_QUIET: Duration = Duration::from_secs(3);

/// Most results applied to the index in one batch (one atomic sled batch): large, so that a
/// replay writes each touched bucket once per few thousand results.
const INDEX_BATCH: usize = 4096;
