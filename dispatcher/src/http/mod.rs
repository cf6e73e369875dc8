//! The HTTP edge: the API's error shape, extractors that answer in it, request limits, TLS,
//! the accept loop and its connection limits, the auth layer and the console's static files.
//!
//! Invariant: nothing here imports a handler (`api`, `compat`).

pub mod answer;
pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod payload;
pub mod server;
pub mod stream;
pub mod tls;
pub mod ui;
