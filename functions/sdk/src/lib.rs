//! The Squall function SDK: ABI v1 types, export macros, `Context` and `FnError`.
//!
//! A function is a `cdylib` that exports the C ABI described in `include/squall.h`. In Rust,
//! write a handler and let a macro export it:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use squall_sdk::{export_function, Context, FnError};
//!
//! #[derive(Deserialize)]
//! struct Input { name: String }
//!
//! #[derive(Serialize)]
//! struct Output { greeting: String }
//!
//! fn hello(ctx: &Context, input: Input) -> Result<Output, FnError> {
//!     ctx.info("greeting someone");
//!     Ok(Output { greeting: format!("Hello, {}!", input.name) })
//! }
//!
//! export_function!(hello);
//! ```
//!
//! A web function (served at `/function/{name}`) takes a [`WebRequest`] and answers a
//! [`WebResponse`]; export it with [`export_web_function!`].
//!
//! This crate knows nothing about NATS, tokio or how the host loads libraries: it depends on
//! serde, serde_json and `http` (for the web types) only.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
mod context;
mod error;
mod export;
pub mod runtime;
mod services;
#[cfg(feature = "testing")]
pub mod testing;
mod web;

pub use context::{Context, Host, Level};
pub use error::FnError;
#[doc(hidden)]
pub use export::{__free, __init, __invoke_json, __invoke_raw, __invoke_web};
pub use services::{HostError, Kv};
pub use web::{WebRequest, WebResponse};

/// Re-exported so that web functions can name `StatusCode`, `Method` and `HeaderMap` without a
/// separate dependency.
pub use http;

/// Re-exported so that functions can name `serde_json::Value` (what [`Context::config`] returns)
/// without a separate dependency.
pub use serde_json;
