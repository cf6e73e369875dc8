//! The dispatcher's local sled database: invocations it accepted, and the query index.
//!
//! JetStream is the source of truth; the `accepted` tree only answers "was this id accepted,
//! and for which function" while no result exists yet, and the query trees (`query`) are a
//! rebuildable view of RESULTS. One process owns a sled directory.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// sled's page cache: bounded, since the index is small and only a cache of JetStream.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// What the index keeps for an accepted invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub function: String,
    pub created_at_ms: u64,
}

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot open the invocation index at {path}: {source} (is another dispatcher using this data directory?)")]
    Open { path: String, source: sled::Error },
    #[error("invocation index error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt invocation index entry: {0}")]
    Decode(String),
}

/// The sled-backed index.
#[derive(Clone)]
pub struct Index {
    accepted: sled::Tree,
    /// Every invocation RESULTS reported, for listing, stats and usage.
    pub query: crate::query::QueryIndex,
}

impl Index {
    /// Opens (or creates) the index under `dir`.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| IndexError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Index {
            accepted: db.open_tree("accepted")?,
            query: crate::query::QueryIndex::open(&db)?,
        })
    }

    /// Records that `id` was accepted for `function`.
    pub fn insert(&self, id: &str, accepted: &Accepted) -> Result<(), IndexError> {
        let value = bincode::serde::encode_to_vec(accepted, bincode::config::standard())
            .map_err(|e| IndexError::Decode(e.to_string()))?;
        self.accepted.insert(id.as_bytes(), value)?;
        Ok(())
    }

    /// Forgets an invocation once it has a terminal result (RESULTS answers for it from then on).
    pub fn remove(&self, id: &str) -> Result<(), IndexError> {
        self.accepted.remove(id.as_bytes())?;
        Ok(())
    }

    /// Forgets every invocation accepted before `cutoff_ms`: by then its result is in RESULTS
    /// or gone with RESULTS' retention. Returns how many were removed.
    pub fn prune_before(&self, cutoff_ms: u64) -> Result<usize, IndexError> {
        let mut removed = 0;
        for entry in self.accepted.iter() {
            let (key, value) = entry?;
            let old = bincode::serde::decode_from_slice::<Accepted, _>(
                &value,
                bincode::config::standard(),
            )
            .map(|(a, _)| a.created_at_ms < cutoff_ms)
            .unwrap_or(true);
            if old {
                self.accepted.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Looks up an accepted invocation.
    pub fn get(&self, id: &str) -> Result<Option<Accepted>, IndexError> {
        match self.accepted.get(id.as_bytes())? {
            None => Ok(None),
            Some(value) => bincode::serde::decode_from_slice(&value, bincode::config::standard())
                .map(|(a, _)| Some(a))
                .map_err(|e| IndexError::Decode(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_forgets_only_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let entry = |ms| Accepted {
            function: "f".into(),
            created_at_ms: ms,
        };
        index.insert("old", &entry(10)).unwrap();
        index.insert("new", &entry(1000)).unwrap();
        assert_eq!(index.prune_before(500).unwrap(), 1);
        assert!(index.get("old").unwrap().is_none());
        assert_eq!(index.get("new").unwrap(), Some(entry(1000)));
        index.remove("new").unwrap();
        assert!(index.get("new").unwrap().is_none());
    }
}
