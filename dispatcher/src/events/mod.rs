//! Events in and out: schedules fired by the broker, triggers on subjects and buckets,
//! destinations and callbacks (with the egress guard, their signatures and their pacing), and
//! the dead-letter mover.
//!
//! Invariant: nothing here imports a handler (`api`, `compat`).

pub mod destinations;
pub mod dlq;
pub mod egress;
pub mod pacing;
pub mod schedules;
pub mod triggers;
pub mod webhook;
