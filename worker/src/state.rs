//! The worker's shared state, at the bottom of the crate: the functions it serves, its stop
//! signal and its count of jobs in flight. Each is its own type, so a module holds only the ones
//! it uses; none of them starts a task or knows about jobs.

use crate::artifacts::ArtifactCache;
use crate::loader::Loaded;
use async_nats::jetstream::object_store::ObjectStore;
use squall_broker::versions::VersionEntry;
use squall_broker::{FunctionRecord, FunctionSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, AcquireError, OwnedSemaphorePermit, Semaphore};

/// A deployed function as this worker knows it: its record and its loaded library, if loading worked.
pub struct FunctionState {
    pub record: FunctionRecord,
    pub spec: FunctionSpec,
    pub library: Result<Arc<Loaded>, String>,
    /// The config JSON the function receives, with its secrets under `"secrets"`.
    pub call_config: String,
}

/// The functions this worker serves, as the registry last described them, and the artifact
/// cache their libraries are loaded from.
pub struct Functions {
    table: Mutex<HashMap<String, Arc<FunctionState>>>,
    artifacts: ArtifactCache,
    store: ObjectStore,
}

impl Functions {
    pub fn new(artifacts: ArtifactCache, store: ObjectStore) -> Functions {
        Functions {
            table: Mutex::new(HashMap::new()),
            artifacts,
            store,
        }
    }

    /// The current state of `function`, if this worker serves it.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Arc<FunctionState>> {
        self.table
            .lock()
            .expect("functions lock")
            .get(name)
            .cloned()
    }

    /// Fetches and loads `record`'s library (once per version) into the function's state.
    pub async fn load(&self, record: FunctionRecord) -> FunctionState {
        let library = self.artifacts.load(&self.store, &record).await;
        FunctionState {
            spec: record.spec(),
            call_config: record.call_config(),
            record,
            library,
        }
    }

    /// Whether this process should be replaced by a fresh one: it loaded a second bundle of a
    /// runtime that keeps one per process (a new version of a Python function).
    pub fn wants_fresh_process(&self) -> bool {
        self.artifacts.wants_fresh_process()
    }

    /// Makes `state` the function's current state; returns the concurrency of the one it
    /// replaced, if any.
    pub fn insert(&self, name: String, state: FunctionState) -> Option<u32> {
        self.table
            .lock()
            .expect("functions lock")
            .insert(name, Arc::new(state))
            .map(|old| old.spec.concurrency)
    }

    /// Forgets `name`: the function was deleted.
    pub fn remove(&self, name: &str) {
        self.table.lock().expect("functions lock").remove(name);
    }

    /// The function's state for a job pinned to version `pinned` (one of the function's own, as
    /// the job's admission found it; `None`: the current one): `current` when it is that version
    /// and loaded; otherwise that version's library, loaded once (a transient fetch failure is
    /// retried here). The current spec applies.
    pub async fn for_job(
        &self,
        current: Arc<FunctionState>,
        pinned: Option<&VersionEntry>,
    ) -> Arc<FunctionState> {
        let record = match pinned {
            Some(entry) if entry.sha256 != current.record.sha256 => {
                let mut record = current.record.clone();
                record.set_current(entry);
                record
            }
            _ if current.library.is_ok() => return current,
            _ => current.record.clone(),
        };
        let library = self.artifacts.load(&self.store, &record).await;
        Arc::new(FunctionState {
            spec: current.spec.clone(),
            call_config: current.call_config.clone(),
            record,
            library,
        })
    }
}

/// Whether the worker still takes jobs: a stop signal, and whether stopping means the process
/// must be replaced.
pub struct Lifecycle {
    /// Turns true when the worker must stop pulling jobs: at shutdown, or to recycle itself.
    stop: watch::Sender<bool>,
    /// Set when a stuck function thread means this process must be replaced.
    recycle: AtomicBool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            stop: watch::channel(false).0,
            recycle: AtomicBool::new(false),
        }
    }
}

impl Lifecycle {
    /// Asks the worker to stop taking jobs, let the others finish and exit to be restarted:
    /// a function thread is stuck past its timeout and cannot be killed.
    pub fn request_recycle(&self, reason: &str) {
        if !self.recycle.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                message = "recycling this worker: no new jobs; exiting after in-flight jobs finish",
                reason
            );
        }
        let _ = self.stop.send(true);
    }

    /// Stops pulling jobs (the caller asked the worker to shut down).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// A receiver that turns true when the worker stops pulling jobs.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Whether the worker stopped to be replaced by a fresh process.
    pub fn recycling(&self) -> bool {
        self.recycle.load(Ordering::SeqCst)
    }
}

/// Most jobs a worker counts in flight; the count is this minus the free permits.
const MAX_IN_FLIGHT: u32 = 1 << 20;

/// The jobs in flight across all functions, so shutdown can wait for them; clones count the
/// same jobs.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl Default for InFlight {
    fn default() -> Self {
        InFlight(Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)))
    }
}

impl InFlight {
    /// Counts one job in flight until the permit is dropped.
    #[inline]
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.0.clone().acquire_owned().await
    }

    /// How many jobs are in flight now.
    pub fn count(&self) -> u32 {
        MAX_IN_FLIGHT - self.0.available_permits() as u32
    }

    /// Waits until no job is in flight (and lets none start after).
    pub async fn drained(&self) {
        let _ = self.0.acquire_many(MAX_IN_FLIGHT).await;
    }
}
