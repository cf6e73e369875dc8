//! Events in and out: schedules fired by the broker, triggers on subjects and buckets,
//! destinations and callbacks, and the dead-letter mover.
//!
//! Invariant: nothing here imports a handler (`api`, `compat`).

pub mod destinations;
pub mod dlq;
pub mod schedules;
pub mod triggers;
