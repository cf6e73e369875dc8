//! The query index as a role: the processes that hold it answer queries over NATS
//! request/reply as the `squall-index` service (NATS service conventions, so `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` find it), and every dispatcher asks it when it holds none.
//!
//! Invariants: a query is answered the same way locally and remotely (both run `answer`); a
//! dispatcher without the index does no work per result; while no index answers, queries fail
//! with 503 `index_unavailable` and nothing else is affected.

use crate::core::view::rfc3339;
use crate::index::store::{self, GroupBy, GroupKey, QueryIndex};
use async_nats::service::ServiceExt as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use squall_api::queries::{FunctionStats, InvocationPage, Usage, UsageReport, UsageRow};
use squall_broker::time::now_ms;
use squall_broker::InvocationStatus;
use std::time::Duration;

/// The service's name, as `$SRV.PING.squall-index` finds it.
pub const SERVICE_NAME: &str = "squall-index";
/// The version of the query contract below.
pub const SERVICE_VERSION: &str = "1.0.0";
/// The subject queries are sent to; index holders share it in one queue group.
pub const QUERY_SUBJECT: &str = "squall.index.query";
/// How long a dispatcher waits for an index's answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A query, validated by the dispatcher that received the HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum IndexQuery {
    /// `GET /v1/invocations`.
    List {
        function: Option<String>,
        status: Option<InvocationStatus>,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        cursor: Option<Vec<u8>>,
    },
    /// `GET /v1/functions/{name}/stats`.
    Stats {
        function: String,
        since_ms: u64,
        until_ms: u64,
    },
    /// `GET /v1/usage`; `by_hour` groups by hour instead of by function.
    Usage {
        since_ms: u64,
        until_ms: u64,
        by_hour: bool,
        /// Each deployed function's `memory_mb`, for GB-seconds; a function missing here
        /// (deleted since) counts with the default.
        #[serde(default)]
        memory_mb: std::collections::BTreeMap<String, u32>,
    },
}

/// The end of a window as shown: now when it is open.
fn shown_until(until_ms: u64) -> String {
    if until_ms == u64::MAX {
        rfc3339(now_ms())
    } else {
        rfc3339(until_ms)
    }
}

/// An index's answer: the API type of the query's route. Untagged, so the wire carries the
/// API type's own JSON and the asker decodes the type it expects.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum IndexAnswer {
    List(InvocationPage),
    Stats(FunctionStats),
    Usage(UsageReport),
}

/// An API type an index answers with.
pub trait Answered: serde::de::DeserializeOwned + Send + 'static {
    /// The answer, if it is of this type.
    fn from_answer(answer: IndexAnswer) -> Option<Self>;
}

impl Answered for InvocationPage {
    fn from_answer(answer: IndexAnswer) -> Option<Self> {
        match answer {
            IndexAnswer::List(page) => Some(page),
            _ => None,
        }
    }
}

impl Answered for FunctionStats {
    fn from_answer(answer: IndexAnswer) -> Option<Self> {
        match answer {
            IndexAnswer::Stats(stats) => Some(stats),
            _ => None,
        }
    }
}

impl Answered for UsageReport {
    fn from_answer(answer: IndexAnswer) -> Option<Self> {
        match answer {
            IndexAnswer::Usage(report) => Some(report),
            _ => None,
        }
    }
}

fn usage_view(usage: &store::Usage) -> Usage {
    Usage {
        invocations: usage.invocations,
        attempts: usage.attempts,
        cpu_ms: usage.cpu_ms,
        wall_ms: usage.wall_ms,
        gb_s: usage.gb_s,
        kv_ops: usage.kv_ops,
        kv_bytes: usage.kv_bytes,
    }
}

/// Answers `query` from the index; blocking (sled), so run it off the async threads. Every
/// answer says whether the index is still catching up with RESULTS, and how far it is.
pub fn answer(index: &QueryIndex, query: &IndexQuery) -> Result<IndexAnswer, String> {
    let failed = |e: crate::index::IndexError| e.to_string();
    // Read before the answer, so a flag that says "caught up" is true of the data below.
    let catching_up = index.catching_up();
    let applied_sequence = index.sequence().map_err(failed)?;
    Ok(match query {
        IndexQuery::List {
            function,
            status,
            since_ms,
            until_ms,
            limit,
            cursor,
        } => {
            let filter = store::Filter {
                function: function.clone(),
                status: *status,
                since_ms: Some(*since_ms),
                until_ms: Some(*until_ms),
            };
            let page = index
                .list(&filter, *limit, cursor.as_deref())
                .map_err(failed)?;
            IndexAnswer::List(InvocationPage {
                items: page
                    .items
                    .iter()
                    .map(|(id, entry)| crate::core::view::summary_view(id, entry))
                    .collect(),
                next_cursor: page.next_cursor,
                catching_up,
                applied_sequence,
            })
        }
        IndexQuery::Stats {
            function,
            since_ms,
            until_ms,
        } => {
            let stats = index
                .stats(function, *since_ms, *until_ms, now_ms())
                .map_err(failed)?;
            IndexAnswer::Stats(FunctionStats {
                function: function.clone(),
                since: rfc3339(*since_ms),
                until: shown_until(*until_ms),
                count: stats.count,
                succeeded: stats.succeeded,
                errors: stats.errors,
                error_rate: stats.error_rate,
                in_progress: stats.in_progress,
                p50_ms: stats.p50_ms,
                p95_ms: stats.p95_ms,
                p99_ms: stats.p99_ms,
                catching_up,
                applied_sequence,
            })
        }
        IndexQuery::Usage {
            since_ms,
            until_ms,
            by_hour,
            memory_mb,
        } => {
            let group_by = if *by_hour {
                GroupBy::Hour
            } else {
                GroupBy::Function
            };
            let groups = index
                .usage(*since_ms, *until_ms, group_by, now_ms(), &|function| {
                    memory_mb
                        .get(function)
                        .copied()
                        .unwrap_or(squall_broker::spec::DEFAULT_MEMORY_MB)
                })
                .map_err(failed)?;
            let mut total = Usage::default();
            let rows = groups
                .iter()
                .map(|(key, usage)| {
                    total.invocations += usage.invocations;
                    total.attempts += usage.attempts;
                    total.cpu_ms += usage.cpu_ms;
                    total.wall_ms += usage.wall_ms;
                    total.gb_s += usage.gb_s;
                    total.kv_ops += usage.kv_ops;
                    total.kv_bytes += usage.kv_bytes;
                    let (function, hour) = match key {
                        GroupKey::Function(f) => (Some(f.clone()), None),
                        GroupKey::Hour(ms) => (None, Some(rfc3339(*ms))),
                    };
                    UsageRow {
                        function,
                        hour,
                        usage: usage_view(usage),
                    }
                })
                .collect();
            IndexAnswer::Usage(UsageReport {
                group_by: if *by_hour {
                    squall_api::queries::GroupBy::Hour
                } else {
                    squall_api::queries::GroupBy::Function
                },
                since: rfc3339(*since_ms),
                until: shown_until(*until_ms),
                groups: rows,
                total,
                catching_up,
                applied_sequence,
            })
        }
    })
}

/// Where a query is answered: this process's index when it holds one, else whichever index
/// holder answers first over NATS.
#[derive(Clone)]
pub struct IndexClient {
    pub local: Option<QueryIndex>,
    pub client: async_nats::Client,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no query index is reachable ({0}); invocations are unaffected, and queries work again once a dispatcher holding the index runs")]
    Unavailable(String),
    #[error("query index: {0}")]
    Failed(String),
}

impl IndexClient {
    /// Answers `query` with the API type `T` its route answers.
    pub async fn ask<T: Answered>(&self, query: IndexQuery) -> Result<T, AskError> {
        let failed = |e: &dyn std::fmt::Display| AskError::Failed(e.to_string());
        if let Some(index) = &self.local {
            let index = index.clone();
            let answer = tokio::task::spawn_blocking(move || answer(&index, &query))
                .await
                .map_err(|e| failed(&e))?
                .map_err(|e| failed(&e))?;
            return T::from_answer(answer)
                .ok_or_else(|| failed(&"the index answered with another type"));
        }
        let body = serde_json::to_vec(&query).map_err(|e| failed(&e))?;
        let asked = tokio::time::timeout(
            QUERY_TIMEOUT,
            self.client.request(QUERY_SUBJECT, body.into()),
        )
        .await;
        let reply = match asked {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return Err(AskError::Unavailable(error.to_string())),
            Err(_) => {
                return Err(AskError::Unavailable(format!(
                    "no query index answered within {} s",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
        };
        let service_error = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR))
            .map(|v| v.as_str().to_string());
        if let Some(error) = service_error {
            return Err(AskError::Failed(error));
        }
        serde_json::from_slice(&reply.payload).map_err(|e| failed(&e))
    }
}

/// Serves this process's index as the `squall-index` service, forever; restarts after errors.
pub async fn serve(index: QueryIndex, client: async_nats::Client) {
    loop {
        if let Err(error) = serve_once(&index, &client).await {
            tracing::warn!(message = "query index service failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve_once(
    index: &QueryIndex,
    client: &async_nats::Client,
) -> Result<(), async_nats::Error> {
    let service = client
        .service_builder()
        .description("Squall's query index: invocations, stats and usage from RESULTS")
        .start(SERVICE_NAME, SERVICE_VERSION)
        .await?;
    let mut endpoint = service.endpoint(QUERY_SUBJECT).await?;
    while let Some(request) = endpoint.next().await {
        let index = index.clone();
        tokio::spawn(async move {
            let answered = match serde_json::from_slice::<IndexQuery>(&request.message.payload) {
                Err(error) => Err(async_nats::service::error::Error {
                    status: format!("malformed query: {error}"),
                    code: 400,
                }),
                Ok(query) => tokio::task::spawn_blocking(move || answer(&index, &query))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string()))
                    .map(Into::into)
                    .map_err(|status| async_nats::service::error::Error { status, code: 500 }),
            };
            if let Err(error) = request.respond(answered).await {
                tracing::debug!(message = "cannot answer a query", %error);
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_says_whether_the_index_is_catching_up_and_how_far_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let index = QueryIndex::open(&db).unwrap();
        let queries = [
            IndexQuery::List {
                function: None,
                status: None,
                since_ms: 0,
                until_ms: u64::MAX,
                limit: 10,
                cursor: None,
            },
            IndexQuery::Stats {
                function: "f".into(),
                since_ms: 0,
                until_ms: u64::MAX,
            },
            IndexQuery::Usage {
                since_ms: 0,
                until_ms: u64::MAX,
                by_hour: true,
                memory_mb: Default::default(),
            },
        ];
        index.start_catch_up(0, 5);
        for query in &queries {
            let view = serde_json::to_value(answer(&index, query).unwrap()).unwrap();
            assert_eq!(view["catching_up"], true, "{view}");
            assert_eq!(view["applied_sequence"], 0);
        }
        index.progressed(5);
        for query in &queries {
            let view = serde_json::to_value(answer(&index, query).unwrap()).unwrap();
            assert_eq!(view["catching_up"], false, "{view}");
        }
    }
}
