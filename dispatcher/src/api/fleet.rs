//! `GET /v1/fleet`: the fleet supervisors, the live worker processes, and per-function backlog
//! and in-flight work, read from the fleet bucket and the function consumers.

use crate::core::view::rfc3339;
use crate::http::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use futures::StreamExt as _;
use squall_api::operations::{Fleet, FleetWorker, FunctionLoad, Supervisor};
use squall_broker::fleet::{
    self, Allocation, Heartbeat, WorkerBeat, ALLOCATION_KEY, HEARTBEAT_PREFIX, WORKER_PREFIX,
};
use squall_broker::names::consumer_name;
use squall_broker::time::now_ms;
use squall_broker::topology::FLEET_HEARTBEAT_TTL;
use std::sync::Arc;

/// What the fleet bucket says now: live supervisors, live workers and the allocation.
pub struct FleetView {
    pub supervisors: Vec<Heartbeat>,
    pub workers: Vec<WorkerBeat>,
    pub allocation: Allocation,
}

/// Reads the fleet bucket, leaving out heartbeats older than the heartbeat TTL.
pub async fn read(state: &AppState) -> Result<FleetView, ApiError> {
    let bucket = &state.topology.fleet;
    let broker = |e: &dyn std::fmt::Display| ApiError::broker("cannot read the fleet", e);
    let mut keys = bucket.keys().await.map_err(|e| broker(&e))?;
    let (now, ttl) = (now_ms(), FLEET_HEARTBEAT_TTL.as_millis() as u64);
    let mut view = FleetView {
        supervisors: Vec::new(),
        workers: Vec::new(),
        allocation: Allocation::default(),
    };
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| broker(&e))?;
        let Some(bytes) = bucket.get(&key).await.map_err(|e| broker(&e))? else {
            continue;
        };
        if key == ALLOCATION_KEY {
            view.allocation = fleet::decode(&bytes).unwrap_or_default();
        } else if key.starts_with(HEARTBEAT_PREFIX) {
            if let Ok(beat) = fleet::decode::<Heartbeat>(&bytes) {
                if beat.is_alive(now, ttl) {
                    view.supervisors.push(beat);
                }
            }
        } else if key.starts_with(WORKER_PREFIX) {
            if let Ok(beat) = fleet::decode::<WorkerBeat>(&bytes) {
                if now.saturating_sub(beat.updated_at_ms) <= ttl {
                    view.workers.push(beat);
                }
            }
        }
    }
    view.supervisors.sort_by(|a, b| a.id.cmp(&b.id));
    view.workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(view)
}

/// Fleet supervisors and their workers, live worker processes, and per-function backlog and
/// in-flight jobs.
#[utoipa::path(get, path = "/v1/fleet", tag = "fleet", responses(
    (status = 200, description = "The fleet.", body = Fleet)))]
pub async fn get(State(state): State<Arc<AppState>>) -> Result<Json<Fleet>, ApiError> {
    let view = read(&state).await?;
    let mut functions = Vec::new();
    let mut names = state.registry.names();
    names.sort();
    for name in names {
        if let Ok(info) = state
            .topology
            .jobs
            .consumer_info(consumer_name(&name))
            .await
        {
            functions.push(FunctionLoad {
                name,
                backlog: info.num_pending,
                in_flight: info.num_ack_pending as u64,
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
        })
        .collect();
    Ok(Json(Fleet {
        supervisors,
        workers,
        functions,
        allocation: view.allocation.granted,
    }))
}
