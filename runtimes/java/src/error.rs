//! `RuntimeError`: why a bundle cannot be opened, checked or tested.

use crate::bundle::BundleError;

/// A failure of the runtime itself or of the bundle it was given, with the message the worker
/// or the CLI shows.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bundle's manifest or layout is wrong.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The JVM could not be found, loaded, started or prepared.
    #[error("cannot start Java: {0}")]
    Start(String),
    /// Loading the handler failed: the class is missing or unfit, or its static initialiser or
    /// constructor threw (the message carries the stack trace).
    #[error("{0}")]
    Load(String),
    /// The runtime's own Java code failed; a bug of the runtime, not of the bundle.
    #[error("the Java runtime failed: {0}")]
    Internal(String),
}
