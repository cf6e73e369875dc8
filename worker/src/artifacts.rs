//! Fetches artifacts from the object store into a local cache, verifies them and loads each
//! version once.

use crate::loader::Loaded;
use async_nats::jetstream::object_store::ObjectStore;
use sha2::{Digest, Sha256};
use squall_broker::names::artifact_key;
use squall_broker::FunctionRecord;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

/// A version's load outcome, shared by every function record that points at it.
pub type LoadOutcome = Result<Arc<Loaded>, String>;

/// The local artifact cache. Each version (sha256) is fetched and loaded at most once per process.
pub struct ArtifactCache {
    dir: PathBuf,
    /// Where loads are counted, if anywhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    loaded: Mutex<HashMap<String, LoadOutcome>>,
}

impl ArtifactCache {
    /// A cache that keeps files in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        ArtifactCache {
            dir,
            metrics: None,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the loaded library of `record`'s version, fetching and loading it on first use.
    pub async fn load(&self, store: &ObjectStore, record: &FunctionRecord) -> LoadOutcome {
        let mut loaded = self.loaded.lock().await;
        if let Some(outcome) = loaded.get(&record.sha256) {
            return outcome.clone();
        }
        match self.fetch_and_load(store, record).await {
            // Loading is deterministic for a given file: remember the outcome, good or bad.
            Ok(outcome) => {
                if let Some(metrics) = &self.metrics {
                    metrics.artifact_loaded(&record.name, outcome.is_ok());
                }
                loaded.insert(record.sha256.clone(), outcome.clone());
                outcome
            }
            // Fetching can fail for a moment (the broker restarting): try again next time.
            Err(transient) => Err(transient),
        }
    }

    /// Fetches the artifact (an `Err` is a transient fetch or disk failure) and loads it (the
    /// inner outcome).
    async fn fetch_and_load(
        &self,
        store: &ObjectStore,
        record: &FunctionRecord,
    ) -> Result<LoadOutcome, String> {
        let path = self.dir.join(format!("{}.so", record.sha256));
        let cached_ok = match tokio::fs::read(&path).await {
            Ok(bytes) => hex::encode(Sha256::digest(&bytes)) == record.sha256,
            Err(_) => false,
        };
        if !cached_ok {
            let key = artifact_key(&record.sha256);
            let mut object = store
                .get(&key)
                .await
                .map_err(|e| format!("cannot fetch artifact {key}: {e}"))?;
            let mut bytes = Vec::with_capacity(record.artifact_size as usize);
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("cannot read artifact {key}: {e}"))?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != record.sha256 {
                return Err(format!(
                    "artifact sha256 mismatch: expected {}, fetched {actual}",
                    record.sha256
                ));
            }
            // Write under a temporary name and rename, so a crash never leaves a half file
            // under the name a later load would trust.
            let tmp = self
                .dir
                .join(format!("{}.so.tmp-{}", record.sha256, std::process::id()));
            tokio::fs::write(&tmp, &bytes)
                .await
                .map_err(|e| format!("cannot write artifact cache file: {e}"))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| format!("cannot write artifact cache file: {e}"))?;
        }
        let loaded = tokio::task::spawn_blocking(move || Loaded::load(&path))
            .await
            .map_err(|e| format!("library loader panicked: {e}"))?;
        Ok(loaded.map(Arc::new).map_err(|e| e.to_string()))
    }
}
