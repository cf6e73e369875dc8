//! Test harness: a real nats-server per test, real dispatcher and worker processes, and the
//! example function libraries built once per test run. Each module owns one job; the items
//! tests use most are re-exported here.

pub mod broker;
pub mod build;
pub mod cli;
pub mod cluster;
pub mod examples;
pub mod http;
pub mod in_process;
pub mod process;
pub mod receiver;
pub mod runtimes;
pub mod wait;

pub use broker::{
    assert_login_refused, auth_env, authenticated, callout_seed_env, consumers_settled,
    nats_server_binary, test_issuer, AuthUser, NatsServer, AUTH_CLIENT, AUTH_DISPATCHER,
    AUTH_WORKER,
};
pub use build::{built, bundle, compile_c, go_function, go_toolchain, workspace_root, Built};
pub use cli::{squall, squall_in, CliRun};
pub use cluster::{wait_workers_ready, Cluster, ClusterOptions};
pub use examples::check_hello_example;
pub use http::{decode_response, http_get_blocking, json_response};
pub use process::{assert_function_login_only, children, free_port, Process};
pub use receiver::{Blackhole, Received, Receiver};
pub use runtimes::{check_web_answers, check_web_function};
pub use wait::{
    eventually, eventually_blocking, eventually_every, poll, poll_blocking, poll_every, Text,
};
