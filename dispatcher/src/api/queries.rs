//! Invocation queries, function stats and usage (validated here, answered by the query index
//! role in `index_service`), and the task that feeds this process's index from RESULTS.

use crate::core::registry::Registry;
use crate::http::auth::{allow_function, Caller};
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, FunctionName};
use crate::index::service::{Answered, IndexClient, IndexQuery};
use crate::index::store;
use axum::extract::State;
use axum::Json;
use squall_api::queries::{
    FunctionStats, InvocationPage, ListParams, StatsParams, UsageParams, UsageReport,
    DEFAULT_LIMIT, DEFAULT_STATS_WINDOW_SECS, MAX_LIMIT, MAX_STATS_WINDOW_SECS,
};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::time::now_ms;
use squall_broker::InvocationStatus;

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
                ErrorCode::InvalidTime,
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
            ErrorCode::InvalidTime,
            "since must be before until",
        ));
    }
    Ok((since, until))
}

/// The index's answer as the API type `T`.
async fn ask_typed<T: Answered>(
    index: &IndexClient,
    query: IndexQuery,
) -> Result<Json<T>, ApiError> {
    Ok(Json(index.ask(query).await?))
}

/// Invocations that have a result (retrying or terminal), newest first by creation time, a
/// page at a time.
#[utoipa::path(get, path = "/v1/invocations", tag = "queries", params(ListParams), responses(
    (status = 200, description = "One page.", body = InvocationPage),
    (status = 400, description = "An invalid parameter.", body = ErrorBody),
    (status = 503, description = "No query index answered.", body = ErrorBody)))]
pub async fn list(
    State(index): State<IndexClient>,
    State(registry): State<Registry>,
    Caller(grant): Caller,
    ApiQuery(query): ApiQuery<ListParams>,
) -> Result<Json<InvocationPage>, ApiError> {
    let function = query
        .function
        .map(FunctionName::parse)
        .transpose()?
        .map(FunctionName::into_string);
    // A key limited to some functions lists one of them at a time.
    match &function {
        Some(function) => {
            if let Err(refused) = allow_function(&grant, function) {
                return Err(refused.into());
            }
        }
        None if !grant.functions.is_all() => {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this key is limited to some functions: list one of them at a time with ?function=",
            ))
        }
        None => {}
    }
    let status = match query.status.as_deref() {
        Some(s) => Some(InvocationStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidStatus,
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
                    ErrorCode::InvalidLimit,
                    format!("limit={l:?} must be a number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(store::decode_cursor(c).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidCursor,
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
    let Json(mut page): Json<InvocationPage> = ask_typed(&index, query).await?;
    for item in &mut page.items {
        item.version_number = registry.version_number(&item.function, &item.version);
    }
    Ok(Json(page))
}

/// Count, error rate and latest-attempt duration percentiles of a function's invocations
/// created in a window (the last hour by default).
#[utoipa::path(get, path = "/v1/functions/{name}/stats", tag = "queries",
    params(("name" = String, Path, description = crate::http::extract::NAME, pattern = "^[A-Za-z0-9_-]{1,64}$"), StatsParams),
    responses(
        (status = 200, description = "The stats.", body = FunctionStats),
        (status = 400, description = "An invalid parameter.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 503, description = "No query index answered.", body = ErrorBody)))]
pub async fn stats(
    State(index): State<IndexClient>,
    State(registry): State<Registry>,
    name: FunctionName,
    ApiQuery(query): ApiQuery<StatsParams>,
) -> Result<Json<FunctionStats>, ApiError> {
    let now = now_ms();
    let default_since = match query.window.as_deref() {
        None => now.saturating_sub(DEFAULT_STATS_WINDOW_SECS * 1000),
        Some(_) if query.since.is_some() => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
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
                        ErrorCode::InvalidWindow,
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
    registry.load(&name).await?;
    let query = IndexQuery::Stats {
        function: name.into_string(),
        since_ms: since,
        until_ms: until,
    };
    ask_typed(&index, query).await
}

/// Metered usage of invocations created in a window: invocations, attempts, CPU-ms, wall-ms
/// and GB-seconds, grouped by function or by hour.
#[utoipa::path(get, path = "/v1/usage", tag = "queries", params(UsageParams), responses(
    (status = 200, description = "Usage per group and in total.", body = UsageReport),
    (status = 400, description = "An invalid parameter.", body = ErrorBody),
    (status = 503, description = "No query index answered.", body = ErrorBody)))]
pub async fn usage(
    State(index): State<IndexClient>,
    State(registry): State<Registry>,
    ApiQuery(query): ApiQuery<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let by_hour = match query.group_by.as_deref() {
        None | Some("function") => false,
        Some("hour") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidGroupBy,
                format!("group_by={other:?} must be function or hour"),
            ))
        }
    };
    let (since, until) = window(query.since.as_deref(), query.until.as_deref(), 0)?;
    // GB-seconds price each function's wall time at its memory as deployed now; without the
    // registry, at the default.
    let memory_mb = registry
        .list()
        .await
        .map(|records| {
            records
                .into_iter()
                .map(|record| (record.name, record.memory_mb))
                .collect()
        })
        .unwrap_or_default();
    let query = IndexQuery::Usage {
        since_ms: since,
        until_ms: until,
        by_hour,
        memory_mb,
    };
    ask_typed(&index, query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_ms() {
        assert_eq!(parse_time("since", "1500").unwrap(), 1500);
        assert_eq!(parse_time("since", "1970-01-01T00:00:01.5Z").unwrap(), 1500);
        let e = parse_time("since", "yesterday").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTime);
        assert!(e.message.contains("yesterday"));
    }
}
