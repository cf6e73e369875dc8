//! The native API's route handlers, one file per resource.
//!
//! Invariant: a handler never imports another handler (of `api` or `compat`); what two
//! handlers share lives in `core`, `events`, `index` or `http`.

pub mod batch;
pub mod cancel;
pub mod destinations;
pub mod dlq;
pub mod fleet;
pub mod functions;
pub mod health;
pub mod invocations;
pub mod keys;
pub mod queries;
pub mod schedules;
pub mod secrets;
pub mod triggers;
pub mod versions;
