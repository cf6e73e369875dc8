//! `RuntimeError`: why a bundle cannot be opened, checked or tested.

use crate::bundle::BundleError;

/// A failure of the runtime itself or of the bundle it was given, with the message the worker
/// or the CLI shows.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bundle's manifest is missing or wrong.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The interpreter could not be started or prepared.
    #[error("cannot start Python: {0}")]
    Start(String),
    /// Importing the handler failed: the module or the handler is missing, or the module
    /// raised while it was imported (the message carries the traceback).
    #[error("{0}")]
    Load(String),
    /// The runtime's own Python code failed; a bug of the runtime, not of the bundle.
    #[error("the Python runtime failed: {0}")]
    Internal(String),
}
