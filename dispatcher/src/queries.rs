//! Invocation queries, function stats and usage (validated here, answered by the query index
//! role in `index_service`), and the task that feeds this process's index from RESULTS.

use crate::error::ApiError;
use crate::extract::{ApiQuery, FunctionName};
use crate::index_service::{ask, IndexQuery};
use crate::query;
use crate::registry::load_record;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use futures::StreamExt;
use squall_api::queries::{
    FunctionStats, InvocationPage, ListParams, StatsParams, UsageParams, UsageReport,
    DEFAULT_LIMIT, DEFAULT_STATS_WINDOW_SECS, MAX_LIMIT, MAX_STATS_WINDOW_SECS,
};
use squall_api::ErrorBody;
use squall_broker::time::now_ms;
use squall_broker::{InvocationStatus, ResultMeta};
use std::sync::Arc;
use std::time::Duration;

type Shared = State<Arc<AppState>>;

/// Keeps the query index up to date with RESULTS, forever; restarts after broker errors.
pub async fn run_indexer(state: Arc<AppState>) {
    loop {
        if let Err(error) = index_results(&state).await {
            tracing::warn!(message = "result indexer failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn index_results(state: &AppState) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let Some(index) = state.query_index() else {
        return Ok(());
    };
    let mut results = state.topology.results.clone();
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
                    finish(state, index, in_flight.take()).await?;
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
                        state
                            .metrics
                            .indexed_result(&meta.function, meta.status, meta.duration_us);
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
        finish(state, index, in_flight.take()).await?;
        if batch.len() < OVERLAP_FROM {
            // A trickle (one synchronous call's result, say): written here, at once, without
            // a hand-off to a blocking thread and back, which would cost more than the write.
            index.apply_all(&batch)?;
            state.metrics.indexed(batch.len());
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
    finish(state, index, in_flight.take()).await?;
    Ok(())
}

/// A batch of results being written to the index, and the RESULTS sequence it reaches.
struct Applying {
    task: tokio::task::JoinHandle<Result<usize, crate::index::IndexError>>,
    through: u64,
}

/// Waits for the batch being written, then counts it and notes how far the index is.
async fn finish(
    state: &AppState,
    index: &query::QueryIndex,
    applying: Option<Applying>,
) -> anyhow::Result<()> {
    let Some(applying) = applying else {
        return Ok(());
    };
    let applied = applying.task.await??;
    state.metrics.indexed(applied);
    progressed(index, applying.through);
    Ok(())
}

/// Notes that the index holds RESULTS up to `through`.
fn progressed(index: &query::QueryIndex, through: u64) {
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

/// Parses a time bound: RFC 3339 or Unix milliseconds.
fn parse_time(name: &str, value: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_time",
                format!("{name}={value:?} is neither an RFC 3339 time nor Unix milliseconds"),
            )
        })
}

fn time_bound(value: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    value.map(|v| parse_time(name, v)).transpose()
}

/// `since` and `until` of a query, checked to be in order.
fn window(
    since: Option<&str>,
    until: Option<&str>,
    default_since: u64,
) -> Result<(u64, u64), ApiError> {
    let since = time_bound(since, "since")?.unwrap_or(default_since);
    let until = time_bound(until, "until")?.unwrap_or(u64::MAX);
    if since >= until {
        return Err(ApiError::bad_request(
            "invalid_time",
            "since must be before until",
        ));
    }
    Ok((since, until))
}

/// The index's answer as the API type `T`.
async fn ask_typed<T: serde::de::DeserializeOwned>(
    state: &AppState,
    query: IndexQuery,
) -> Result<Json<T>, ApiError> {
    let answer = ask(state, query).await?;
    serde_json::from_value(answer)
        .map(Json)
        .map_err(|e| ApiError::internal("query index answer", e))
}

/// Invocations that have a result (retrying or terminal), newest first by creation time, a
/// page at a time.
#[utoipa::path(get, path = "/v1/invocations", tag = "queries", params(ListParams), responses(
    (status = 200, description = "One page.", body = InvocationPage),
    (status = 400, description = "An invalid parameter.", body = ErrorBody),
    (status = 503, description = "No query index answered.", body = ErrorBody)))]
pub async fn list(
    State(state): Shared,
    ApiQuery(query): ApiQuery<ListParams>,
) -> Result<Json<InvocationPage>, ApiError> {
    let function = query
        .function
        .map(FunctionName::parse)
        .transpose()?
        .map(FunctionName::into_string);
    let status = match query.status.as_deref() {
        Some(s) => Some(InvocationStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                format!("status={s:?} is not one of retrying, succeeded, failed, timed_out, dead_lettered"),
            )
        })?),
        None => None,
    };
    let (since, until) = window(query.since.as_deref(), query.until.as_deref(), 0)?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit={l:?} must be a number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(query::decode_cursor(c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor value from an earlier page",
            )
        })?),
    };
    let query = IndexQuery::List {
        function,
        status,
        since_ms: since,
        until_ms: until,
        limit,
        cursor,
    };
    let Json(mut page): Json<InvocationPage> = ask_typed(&state, query).await?;
    for item in &mut page.items {
        item.version_number =
            crate::registry::version_number(&state, &item.function, &item.version);
    }
    Ok(Json(page))
}

/// Count, error rate and latest-attempt duration percentiles of a function's invocations
/// created in a window (the last hour by default).
#[utoipa::path(get, path = "/v1/functions/{name}/stats", tag = "queries",
    params(("name" = String, Path, description = crate::functions::NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"), StatsParams),
    responses(
        (status = 200, description = "The stats.", body = FunctionStats),
        (status = 400, description = "An invalid parameter.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 503, description = "No query index answered.", body = ErrorBody)))]
pub async fn stats(
    State(state): Shared,
    name: FunctionName,
    ApiQuery(query): ApiQuery<StatsParams>,
) -> Result<Json<FunctionStats>, ApiError> {
    let now = now_ms();
    let default_since = match query.window.as_deref() {
        None => now.saturating_sub(DEFAULT_STATS_WINDOW_SECS * 1000),
        Some(_) if query.since.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either window or since, not both",
            ))
        }
        Some(w) => {
            let secs = w
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_STATS_WINDOW_SECS).contains(s))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_window",
                        format!("window={w:?} must be a number of seconds from 1 to {MAX_STATS_WINDOW_SECS}"),
                    )
                })?;
            now.saturating_sub(secs * 1000)
        }
    };
    let (since, until) = window(
        query.since.as_deref(),
        query.until.as_deref(),
        default_since,
    )?;
    load_record(&state, &name).await?;
    let query = IndexQuery::Stats {
        function: name.into_string(),
        since_ms: since,
        until_ms: until,
    };
    ask_typed(&state, query).await
}

/// Metered usage of invocations created in a window: invocations, attempts, CPU-ms and
/// wall-ms, grouped by function or by hour.
#[utoipa::path(get, path = "/v1/usage", tag = "queries", params(UsageParams), responses(
    (status = 200, description = "Usage per group and in total.", body = UsageReport),
    (status = 400, description = "An invalid parameter.", body = ErrorBody),
    (status = 503, description = "No query index answered.", body = ErrorBody)))]
pub async fn usage(
    State(state): Shared,
    ApiQuery(query): ApiQuery<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let by_hour = match query.group_by.as_deref() {
        None | Some("function") => false,
        Some("hour") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_group_by",
                format!("group_by={other:?} must be function or hour"),
            ))
        }
    };
    let (since, until) = window(query.since.as_deref(), query.until.as_deref(), 0)?;
    let query = IndexQuery::Usage {
        since_ms: since,
        until_ms: until,
        by_hour,
    };
    ask_typed(&state, query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_ms() {
        assert_eq!(parse_time("since", "1500").unwrap(), 1500);
        assert_eq!(parse_time("since", "1970-01-01T00:00:01.5Z").unwrap(), 1500);
        let e = parse_time("since", "yesterday").unwrap_err();
        assert_eq!(e.code, "invalid_time");
        assert!(e.message.contains("yesterday"));
    }
}
