//! Registry reads: an in-memory copy of the function registry, kept current by a KV watch, so an
//! invoke does not pay a registry round trip. The KV bucket stays the source of truth: a miss
//! falls back to reading it.

use crate::core::broker::Broker;
use crate::core::names::FunctionName;
use async_nats::jetstream::kv;
use futures::StreamExt;
use squall_broker::FunctionRecord;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Function records by name, each with the KV revision it came from.
#[derive(Default)]
pub struct RegistryCache {
    records: RwLock<HashMap<String, (u64, Arc<FunctionRecord>)>>,
}

impl RegistryCache {
    /// The cached record of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<FunctionRecord>> {
        self.records
            .read()
            .expect("registry cache lock")
            .get(name)
            .map(|(_, record)| record.clone())
    }

    /// The names of every cached function.
    pub fn names(&self) -> Vec<String> {
        self.records
            .read()
            .expect("registry cache lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Records `record` at `revision`, unless a newer revision is already known.
    pub fn put(&self, revision: u64, record: FunctionRecord) {
        let mut records = self.records.write().expect("registry cache lock");
        match records.get(&record.name) {
            Some((known, _)) if *known >= revision => {}
            _ => {
                records.insert(record.name.clone(), (revision, Arc::new(record)));
            }
        }
    }

    /// Forgets `name` as of `revision`.
    pub fn remove(&self, name: &str, revision: u64) {
        let mut records = self.records.write().expect("registry cache lock");
        if records
            .get(name)
            .is_some_and(|(known, _)| *known < revision)
        {
            records.remove(name);
        }
    }

    /// Follows the registry bucket until the process ends.
    pub async fn follow(self: Arc<Self>, registry: kv::Store) {
        loop {
            if let Err(error) = self.watch(&registry).await {
                tracing::warn!(message = "registry watch failed; the cache may lag until it resumes", error = %error);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn watch(&self, registry: &kv::Store) -> anyhow::Result<()> {
        let mut entries = registry.watch_with_history(">").await?;
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            match entry.operation {
                kv::Operation::Put => match FunctionRecord::decode(&entry.value) {
                    Ok(record) => self.put(entry.revision, record),
                    Err(error) => {
                        tracing::error!(message = "unreadable registry record", key = %entry.key, %error)
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    self.remove(&entry.key, entry.revision)
                }
            }
        }
        anyhow::bail!("registry watch ended")
    }
}

/// The registry as the services use it: the cache, and the bucket behind it.
#[derive(Clone)]
pub struct Registry {
    cache: Arc<RegistryCache>,
    broker: Broker,
}

/// Why a function's record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("function {0:?} is not deployed")]
    NotDeployed(String),
    #[error("cannot read the function registry: {0}")]
    Broker(String),
    #[error("the registry record of {name:?} is unreadable: {error}")]
    Corrupt { name: String, error: String },
}

impl Registry {
    /// An empty cache over the broker's registry bucket.
    pub fn new(broker: Broker) -> Registry {
        Registry {
            cache: Arc::new(RegistryCache::default()),
            broker,
        }
    }

    /// The cache, which `follow` keeps current.
    pub fn cache(&self) -> &Arc<RegistryCache> {
        &self.cache
    }

    /// The registry bucket.
    pub fn bucket(&self) -> &kv::Store {
        &self.broker.topology.registry
    }

    /// The number of `function`'s version `version` (`sha256:<hex>`), from the cache; `None`
    /// when the function or the version is gone.
    pub fn version_number(&self, function: &str, version: &str) -> Option<u32> {
        self.cache.get(function)?.version_number(version)
    }

    /// Every deployed function's record, by name. A function deleted between the listing and
    /// its read is left out.
    pub async fn list(&self) -> Result<Vec<FunctionRecord>, RegistryError> {
        let failed = |e: &dyn std::fmt::Display| {
            RegistryError::Broker(format!("cannot list the function registry: {e}"))
        };
        let mut keys = self.bucket().keys().await.map_err(|e| failed(&e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| failed(&e))?);
        }
        names.sort();
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            let Ok(name) = FunctionName::parse(name) else {
                continue;
            };
            match self.load(&name).await {
                Ok(record) => records.push(record),
                Err(RegistryError::NotDeployed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }

    /// The deployed record of `name`: from the cache, else from the bucket.
    pub async fn load(&self, name: &FunctionName) -> Result<FunctionRecord, RegistryError> {
        let name = name.as_str();
        if let Some(record) = self.cache.get(name) {
            return Ok((*record).clone());
        }
        match self.bucket().entry(name).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                let record =
                    FunctionRecord::decode(&entry.value).map_err(|e| RegistryError::Corrupt {
                        name: name.to_string(),
                        error: e.to_string(),
                    })?;
                self.cache.put(entry.revision, record.clone());
                Ok(record)
            }
            Ok(_) => Err(RegistryError::NotDeployed(name.to_string())),
            Err(e) => Err(RegistryError::Broker(e.to_string())),
        }
    }
}

impl std::ops::Deref for Registry {
    type Target = RegistryCache;

    fn deref(&self) -> &RegistryCache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_broker::FunctionSpec;

    fn record(name: &str, sha: &str) -> FunctionRecord {
        FunctionRecord::new(name, sha, 1, 0, &FunctionSpec::default())
    }

    #[test]
    fn an_older_revision_never_replaces_a_newer_one() {
        let cache = RegistryCache::default();
        cache.put(5, record("f", "new"));
        cache.put(4, record("f", "old"));
        assert_eq!(cache.get("f").unwrap().sha256, "new");
        cache.remove("f", 3);
        assert!(cache.get("f").is_some(), "a stale delete is ignored");
        cache.remove("f", 6);
        assert!(cache.get("f").is_none());
    }
}
