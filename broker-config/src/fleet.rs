//! Fleet records in the fleet bucket: each supervisor's heartbeat, and the allocation of
//! worker slots that keeps all supervisors together under the fleet's maximum.
//!
//! Invariant: a supervisor runs at most as many workers as the allocation grants it, and the
//! allocation is only changed by compare-and-set, so the sum of all grants never exceeds the
//! maximum the supervisors share.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The key of the shared allocation.
pub const ALLOCATION_KEY: &str = "allocation";
/// The key prefix of heartbeats (`supervisor.<id>`).
pub const HEARTBEAT_PREFIX: &str = "supervisor.";

/// The heartbeat key of supervisor `id`.
pub fn heartbeat_key(id: &str) -> String {
    format!("{HEARTBEAT_PREFIX}{id}")
}

/// What a supervisor reports about itself, every few seconds (JSON, so fields can be added with
/// a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Functions served; empty means all.
    pub functions: Vec<String>,
    pub min: u32,
    pub max: u32,
    /// Process ids of its running workers.
    pub workers: Vec<u32>,
    /// What its last scaling decision asked for, all pools together.
    pub desired: u32,
    pub updated_at_ms: u64,
    /// Its pools by function: each function's processes run only that function. Heartbeats
    /// of supervisors before pools have none.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolBeat>,
}

/// One function's pool on one supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolBeat {
    /// Process ids of the function's running worker processes.
    pub processes: Vec<u32>,
    /// What the last scaling decision asked for.
    pub desired: u32,
}

impl Heartbeat {
    /// Whether the heartbeat is recent enough to count the supervisor as alive.
    pub fn is_alive(&self, now_ms: u64, ttl_ms: u64) -> bool {
        now_ms.saturating_sub(self.updated_at_ms) <= ttl_ms
    }
}

/// Worker slots granted per supervisor id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub granted: BTreeMap<String, u32>,
    /// The fleet-wide maximum the grants share.
    pub max: u32,
}

impl Allocation {
    /// Slots granted to everyone.
    pub fn total(&self) -> u32 {
        self.granted.values().sum()
    }

    /// Slots granted to everyone but `id`.
    pub fn others(&self, id: &str) -> u32 {
        self.granted
            .iter()
            .filter(|(k, _)| k.as_str() != id)
            .map(|(_, v)| *v)
            .sum()
    }
}

/// Decodes a JSON value of the fleet bucket.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Encodes a value of the fleet bucket as JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("fleet records always encode")
}

/// The key prefix of worker processes' heartbeats (`worker.<id>`).
pub const WORKER_PREFIX: &str = "worker.";

/// The heartbeat key of worker process `id`.
pub fn worker_key(id: &str) -> String {
    format!("{WORKER_PREFIX}{id}")
}

/// What a worker process reports about itself, every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBeat {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Functions served; empty means all.
    pub functions: Vec<String>,
    /// Jobs running now.
    pub in_flight: u32,
    pub updated_at_ms: u64,
    /// Its limits and sandbox, once it serves one function with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Confinement>,
}

pub use squall_api::operations::{Confinement, SandboxFeature};

/// How often supervisors and workers refresh their heartbeats.
pub const HEARTBEAT_EVERY_MS: u64 = 2000;
