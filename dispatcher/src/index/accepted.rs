//! The dispatcher's local sled database: invocations it accepted, and the query index.
//!
//! JetStream is the source of truth; the `accepted` tree only answers "was this id accepted,
//! and for which function" while no result exists yet, and the query trees (`query`) are a
//! rebuildable view of RESULTS. One process owns a sled directory.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// sled's page cache: bounded, since the index is small and only a cache of JetStream.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// What the index keeps for an accepted invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub function: String,
    pub created_at_ms: u64,
}

pub use crate::index::store::IndexError;

/// Accepted invocations not yet written to sled: the request path only adds them here, and a
/// writer thread stores them in batches, so most synchronous invocations finish (and are
/// forgotten) before they ever reach the disk.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
}

#[derive(Default)]
struct PendingState {
    /// Added since the writer last took them.
    new: HashMap<String, Accepted>,
    /// Being written now: still answered from here until sled has them.
    writing: HashMap<String, Accepted>,
}

/// How long the writer gathers entries before it writes a batch.
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// The sled-backed index.
#[derive(Clone)]
pub struct Index {
    accepted: sled::Tree,
    pending: Arc<Pending>,
    /// Every invocation RESULTS reported, for listing, stats and usage.
    pub query: crate::index::store::QueryIndex,
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
        let index = Index {
            accepted: db.open_tree("accepted")?,
            pending: Arc::default(),
            query: crate::index::store::QueryIndex::open(&db)?,
        };
        let (tree, pending) = (index.accepted.clone(), Arc::downgrade(&index.pending));
        std::thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || write_pending(tree, pending))
            .map_err(|e| IndexError::Decode(format!("cannot start the index writer: {e}")))?;
        Ok(index)
    }

    /// Records that `id` was accepted for `function`. Costs the request a map insert: the
    /// entry reaches sled within `WRITE_EVERY`, unless it is removed first.
    pub fn insert(&self, id: &str, accepted: &Accepted) -> Result<(), IndexError> {
        // No wake-up: the writer looks every `WRITE_EVERY`, so a request costs no thread
        // hand-off, and an invocation that finishes within that time never reaches sled.
        let mut state = self.pending.state.lock().expect("index lock");
        state.new.insert(id.to_string(), accepted.clone());
        Ok(())
    }

    /// Forgets an invocation once it has a terminal result (RESULTS answers for it from then on).
    pub fn remove(&self, id: &str) -> Result<(), IndexError> {
        let known = {
            let mut state = self.pending.state.lock().expect("index lock");
            state.new.remove(id).is_some() | state.writing.remove(id).is_some()
        };
        // One that never left the pending map was never written.
        if !known {
            self.accepted.remove(id.as_bytes())?;
        }
        Ok(())
    }

    /// Writes everything pending now, for tests and shutdown.
    pub fn flush_pending(&self) -> Result<(), IndexError> {
        let batch = {
            let mut state = self.pending.state.lock().expect("index lock");
            std::mem::take(&mut state.new)
        };
        write_batch(&self.accepted, &batch)
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
        {
            let state = self.pending.state.lock().expect("index lock");
            if let Some(found) = state.new.get(id).or_else(|| state.writing.get(id)) {
                return Ok(Some(found.clone()));
            }
        }
        match self.accepted.get(id.as_bytes())? {
            None => Ok(None),
            Some(value) => bincode::serde::decode_from_slice(&value, bincode::config::standard())
                .map(|(a, _)| Some(a))
                .map_err(|e| IndexError::Decode(e.to_string())),
        }
    }
}

/// Stores entries in one sled batch.
fn write_batch(tree: &sled::Tree, entries: &HashMap<String, Accepted>) -> Result<(), IndexError> {
    let mut batch = sled::Batch::default();
    for (id, accepted) in entries {
        let value = bincode::serde::encode_to_vec(accepted, bincode::config::standard())
            .map_err(|e| IndexError::Decode(e.to_string()))?;
        batch.insert(id.as_bytes(), value);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// The writer thread: every `WRITE_EVERY`, writes what is pending in one batch; ends when the
/// index is dropped.
fn write_pending(tree: sled::Tree, pending: Weak<Pending>) {
    loop {
        std::thread::sleep(WRITE_EVERY);
        let Some(shared) = pending.upgrade() else {
            return;
        };
        if shared.state.lock().expect("index lock").new.is_empty() {
            continue;
        }
        let batch = {
            let mut state = shared.state.lock().expect("index lock");
            let taken = std::mem::take(&mut state.new);
            state.writing = taken.clone();
            taken
        };
        if let Err(error) = write_batch(&tree, &batch) {
            tracing::warn!(message = "cannot index accepted invocations", count = batch.len(), %error);
        }
        let mut state = shared.state.lock().expect("index lock");
        // What was removed meanwhile was removed from `writing`: remove it from sled too.
        for id in batch.keys().filter(|id| !state.writing.contains_key(*id)) {
            let _ = tree.remove(id.as_bytes());
        }
        state.writing.clear();
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
        index.flush_pending().unwrap();
        assert_eq!(index.prune_before(500).unwrap(), 1);
        assert!(index.get("old").unwrap().is_none());
        assert_eq!(index.get("new").unwrap(), Some(entry(1000)));
        index.remove("new").unwrap();
        assert!(index.get("new").unwrap().is_none());
    }

    #[test]
    fn accepted_invocations_are_found_before_and_after_the_writer_stores_them() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let entry = Accepted {
            function: "f".into(),
            created_at_ms: 5,
        };
        index.insert("a", &entry).unwrap();
        index.insert("b", &entry).unwrap();
        assert_eq!(index.get("a").unwrap(), Some(entry.clone()));
        // A finished invocation removed before the writer ran never reaches sled.
        index.remove("b").unwrap();
        std::thread::sleep(WRITE_EVERY * 10);
        assert!(index.pending.state.lock().unwrap().new.is_empty());
        assert!(index.accepted.get(b"a").unwrap().is_some());
        assert!(index.accepted.get(b"b").unwrap().is_none());
        assert_eq!(index.get("a").unwrap(), Some(entry));
        index.remove("a").unwrap();
        assert!(index.get("a").unwrap().is_none());
    }
}
