//! The core of the dispatcher: submitting jobs, waiting for their outcome, the registry,
//! versions and keys. It serves every front (native API, web functions, the Lambda API).
//!
//! Invariant: nothing here imports `api`, `compat`, `events`, `http` handlers or the HTTP
//! error type's routes; services return their own error types.

pub mod artifact;
pub mod broker;
pub mod bundle;
pub mod cancel;
pub mod cloudevents;
pub mod fleet;
pub mod invoke;
pub mod keys;
pub mod metrics;
pub mod names;
pub mod payloads;
pub mod rate_limit;
pub mod registry;
pub mod state;
pub mod stream;
pub mod submit;
pub mod versions;
pub mod view;
pub mod waiter;
