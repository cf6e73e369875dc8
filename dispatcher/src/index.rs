//! The dispatcher's local sled index of invocations it accepted.
//!
//! JetStream is the source of truth; this index only answers "was this id accepted, and for
//! which function" while no result exists yet. One process owns a sled directory.

use serde::{Deserialize, Serialize};
use std::path::Path;

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
}

impl Index {
    /// Opens (or creates) the index under `dir`.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        let db = sled::open(dir).map_err(|source| IndexError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Index {
            accepted: db.open_tree("accepted")?,
        })
    }

    /// Records that `id` was accepted for `function`.
    pub fn insert(&self, id: &str, accepted: &Accepted) -> Result<(), IndexError> {
        let value = bincode::serde::encode_to_vec(accepted, bincode::config::standard())
            .map_err(|e| IndexError::Decode(e.to_string()))?;
        self.accepted.insert(id.as_bytes(), value)?;
        Ok(())
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
