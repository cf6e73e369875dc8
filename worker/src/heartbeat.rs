//! This process's identity and its heartbeat in the fleet bucket.

use crate::confine::Confiner;
use crate::state::InFlight;
use async_nats::jetstream::kv;
use squall_broker::fleet::{encode, worker_key, WorkerBeat, HEARTBEAT_EVERY_MS};
use std::sync::Arc;
use std::time::Duration;

/// This machine's host name and this process's id.
pub fn host_and_pid() -> (String, u32) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    (host, std::process::id())
}

/// This process's name in results and heartbeats: `<host>-<pid>`.
pub fn worker_id() -> String {
    let (host, pid) = host_and_pid();
    format!("{host}-{pid}")
}

/// Tells the fleet bucket this process is alive and how busy it is, every few seconds, until
/// the task is aborted.
pub async fn beat(
    id: String,
    functions: Vec<String>,
    in_flight: InFlight,
    fleet: kv::Store,
    confiner: Option<Arc<Confiner>>,
) {
    let key = worker_key(&id);
    let (host, pid) = host_and_pid();
    let mut every = tokio::time::interval(Duration::from_millis(HEARTBEAT_EVERY_MS));
    loop {
        every.tick().await;
        let beat = WorkerBeat {
            id: id.clone(),
            host: host.clone(),
            pid,
            functions: functions.clone(),
            in_flight: in_flight.count(),
            updated_at_ms: squall_broker::time::now_ms(),
            confinement: confiner.as_ref().and_then(|c| c.report()),
        };
        if let Err(error) = fleet.put(&key, encode(&beat).into()).await {
            tracing::debug!(message = "cannot write the worker heartbeat", %error);
        }
    }
}
