//! The fleet as the broker knows it: supervisors, live worker processes, and per-function backlog.

use crate::core::broker::{Broker, BrokerError};
use futures::StreamExt as _;
use squall_broker::fleet::{
    self, Allocation, Heartbeat, WorkerBeat, ALLOCATION_KEY, HEARTBEAT_PREFIX, WORKER_PREFIX,
};
use squall_broker::time::now_ms;
use squall_broker::topology::FLEET_HEARTBEAT_TTL;

/// What the fleet bucket says now: live supervisors, live workers and the allocation.
pub struct FleetView {
    pub supervisors: Vec<Heartbeat>,
    pub workers: Vec<WorkerBeat>,
    pub allocation: Allocation,
}

/// Reads the fleet bucket, leaving out heartbeats older than the heartbeat TTL.
pub async fn read(broker: &Broker) -> Result<FleetView, BrokerError> {
    let bucket = &broker.topology.fleet;
    let broker = |e: &dyn std::fmt::Display| BrokerError::new("cannot read the fleet", e);
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
