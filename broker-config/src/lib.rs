//! The broker contract shared by every Squall process: names, headers, records and topology.
//!
//! Architecture invariant: this crate knows nothing about HTTP, function loading or the CLI; it
//! describes what lives in NATS and how to create it.

pub mod backoff;
pub mod callout;
pub mod connect;
pub mod dlq;
pub mod env;
pub mod events;
pub mod fleet;
pub mod headers;
pub mod names;
pub mod payloads;
pub mod publish;
pub mod record;
pub mod retry;
pub mod time;
pub mod topology;
pub mod versions;
pub mod watch;
pub mod web;

pub use names::{validate_function_name, NameError};
pub use record::{FunctionRecord, RecordError, ResultMeta};
pub use spec::{Backoff, FunctionSpec, SpecError};
pub use squall_api::{spec, status};
pub use status::{ErrorKind, InvocationStatus};
pub use topology::{
    ensure_function_consumer, ensure_topology, open_topology, Topology, TopologyConfig,
    TopologyError,
};
