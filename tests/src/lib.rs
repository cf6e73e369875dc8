//! Test harness: a real nats-server per test, real dispatcher and worker processes, and the
//! example function libraries built once per test run. Each module owns one job; the items
//! tests use most are re-exported here.

pub mod broker;
pub mod build;
pub mod cluster;
pub mod http;
pub mod in_process;
pub mod process;
pub mod wait;

pub use broker::{
    auth_env, consumers_settled, nats_server_binary, AuthUser, NatsServer, AUTH_CLIENT,
    AUTH_DISPATCHER, AUTH_WORKER,
};
pub use build::{built, compile_c, workspace_root, Built};
pub use cluster::{wait_workers_ready, Cluster, ClusterOptions};
pub use http::{decode_response, http_get_blocking, json_response};
pub use process::{children, free_port, Process};
pub use wait::{
    eventually, eventually_blocking, eventually_every, poll, poll_blocking, poll_every, Text,
};
