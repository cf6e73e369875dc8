//! `GET /v1/fleet`: the fleet supervisors, the live worker processes, and per-function backlog
//! and in-flight work, read from the fleet bucket and the function consumers.

use crate::core::broker::Broker;
use crate::core::fleet::read;
use crate::core::registry::Registry;
use crate::core::view::rfc3339;
use crate::http::error::ApiError;
use axum::extract::State;
use axum::Json;
use squall_api::operations::{Fleet, FleetWorker, FunctionLoad, Pool, Supervisor};
use squall_broker::names::consumer_name;

/// Fleet supervisors and their workers, live worker processes, and per-function backlog and
/// in-flight jobs.
#[utoipa::path(get, path = "/v1/fleet", tag = "fleet", responses(
    (status = 200, description = "The fleet.", body = Fleet)))]
pub async fn get(
    State(registry): State<Registry>,
    State(broker): State<Broker>,
) -> Result<Json<Fleet>, ApiError> {
    let view = read(&broker).await?;
    let mut functions = Vec::new();
    let mut names = registry.names();
    names.sort();
    for name in names {
        if let Ok(info) = broker
            .topology
            .jobs
            .consumer_info(consumer_name(&name))
            .await
        {
            let processes = view
                .supervisors
                .iter()
                .filter_map(|s| s.pools.get(&name))
                .map(|p| p.processes.len() as u32)
                .sum();
            functions.push(FunctionLoad {
                name,
                backlog: info.num_pending,
                in_flight: info.num_ack_pending as u64,
                processes,
            });
        }
    }
    let supervisors = view
        .supervisors
        .into_iter()
        .map(|s| Supervisor {
            updated_at: rfc3339(s.updated_at_ms),
            id: s.id,
            host: s.host,
            pid: s.pid,
            functions: s.functions,
            min: s.min,
            max: s.max,
            desired: s.desired,
            workers: s.workers,
            pools: s
                .pools
                .into_iter()
                .map(|(function, p)| Pool {
                    function,
                    processes: p.processes,
                    desired: p.desired,
                })
                .collect(),
        })
        .collect();
    let workers = view
        .workers
        .into_iter()
        .map(|w| FleetWorker {
            updated_at: rfc3339(w.updated_at_ms),
            id: w.id,
            host: w.host,
            pid: w.pid,
            functions: w.functions,
            in_flight: w.in_flight,
            confinement: w.confinement,
        })
        .collect();
    Ok(Json(Fleet {
        supervisors,
        workers,
        functions,
        allocation: view.allocation.granted,
    }))
}
