//! The local sled database: the invocations this dispatcher accepted, and the query index
//! (its store, latency sketches and the NATS service that answers every dispatcher).
//!
//! Invariant: nothing here imports a handler (`api`, `compat`).

pub mod accepted;
pub mod feed;
pub mod service;
pub mod sketch;

pub use accepted::{Accepted, Index, IndexError};
pub mod store;
