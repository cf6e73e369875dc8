//! Other platforms' wire formats over the same core: the Lambda API (with SigV4), web
//! functions.
//!
//! Invariant: a front renders the core's outcome in its own format; it never calls a native
//! handler or re-parses its HTTP answer.

pub mod eventstream;
pub mod lambda;
pub mod sigv4;
pub mod web;
pub mod web_stream;
