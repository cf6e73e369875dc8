//! The Squall dispatcher: the HTTP API gateway in front of JetStream.
//!
//! Architecture invariant: the dispatcher never loads a function; it reads artifacts as data
//! (`core::artifact`) and talks to workers only through the broker.
//!
//! The folders, each imported downward only (ARCHITECTURE.md has the map and its invariants):
//! `core/` (submission, waiting, the outcome of an invocation, registry, versions, keys),
//! `index/` (the accepted map, the query store and its service and feed), `events/`
//! (schedules, triggers, destinations, the dead-letter mover), `http/` (extractors, limits, TLS,
//! the auth layer, errors, the console's files), `api/` (the native routes, one file per
//! resource), `compat/` (the Lambda API, SigV4, web functions); on top, `state`,
//! `start` and `routes`.

pub mod api;
pub mod compat;
pub mod core;
pub mod events;
pub mod http;
pub mod index;
pub mod routes;
pub mod start;
pub mod state;

pub use routes::{app, web_app};
pub use start::{connect, serve};
pub use state::{AppState, DispatcherConfig};
