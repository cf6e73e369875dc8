//! The HTTP API contract of Squall: every request and response body as a serde type with its
//! OpenAPI schema, served by the dispatcher and decoded by the CLI and the tests.
//!
//! Invariant: this crate depends on serde (and serde_json for free-form JSON values) and the
//! schema derive only; it holds data and pure checks, never IO.

pub mod error;
pub mod functions;
pub mod invocations;
pub mod operations;
pub mod queries;
pub mod spec;
pub mod status;
pub mod versions;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use spec::{Backoff, FunctionSpec, SpecError, WebAuth, WebSpec};
pub use status::{ErrorKind, InvocationStatus};
