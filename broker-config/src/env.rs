//! Environment variable names read by Squall binaries, in one place.

/// NATS server URL(s), comma separated.
pub const ENV_NATS_URL: &str = "SQUALL_NATS_URL";
/// The broker user a process logs in as (broker-config/nats/users.conf).
pub const ENV_NATS_USER: &str = "SQUALL_NATS_USER";
/// That user's password.
pub const ENV_NATS_PASSWORD: &str = "SQUALL_NATS_PASSWORD";
/// The prefix of a process's reply inboxes (each role may read only its own).
pub const ENV_NATS_INBOX_PREFIX: &str = "SQUALL_NATS_INBOX_PREFIX";
/// Address the dispatcher's HTTP API listens on.
pub const ENV_HTTP_ADDR: &str = "SQUALL_HTTP_ADDR";
/// Folder for a process's local state (sled index, artifact cache).
pub const ENV_DATA_DIR: &str = "SQUALL_DATA_DIR";
/// Largest accepted invocation payload (and function output), in bytes.
pub const ENV_MAX_PAYLOAD: &str = "SQUALL_MAX_PAYLOAD";
/// Largest payload that travels inside its job or result message; a larger one goes to the
/// function's payload bucket (a claim check).
pub const ENV_INLINE_PAYLOAD: &str = "SQUALL_INLINE_PAYLOAD";
/// Most lines (invocations) of one batch request to the dispatcher.
pub const ENV_MAX_BATCH_LINES: &str = "SQUALL_MAX_BATCH_LINES";
/// Largest batch request body the dispatcher accepts, in bytes.
pub const ENV_MAX_BATCH_BYTES: &str = "SQUALL_MAX_BATCH_BYTES";
/// Largest accepted function artifact, in bytes.
pub const ENV_MAX_ARTIFACT: &str = "SQUALL_MAX_ARTIFACT";
/// Where a worker serves its Prometheus metrics.
pub const ENV_METRICS_ADDR: &str = "SQUALL_METRICS_ADDR";
/// The dispatcher URL the CLI talks to.
pub const ENV_URL: &str = "SQUALL_URL";
/// Path of the nats-server binary used by `squall up` and the tests.
pub const ENV_NATS_SERVER: &str = "NATS_SERVER";
/// Overrides where `squall up` finds the dispatcher binary.
pub const ENV_DISPATCHER_BIN: &str = "SQUALL_DISPATCHER_BIN";
/// Overrides where `squall up` finds the worker binary.
pub const ENV_WORKER_BIN: &str = "SQUALL_WORKER_BIN";

/// The default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The default HTTP listen address of the dispatcher.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// The default largest invocation payload and output: 100 MiB (HTTP invocations, the Lambda
/// API, web functions and results; batch lines stay within the inline limit).
pub const DEFAULT_MAX_PAYLOAD: usize = 100 * 1024 * 1024;
/// The default inline limit: 1 MiB.
pub const DEFAULT_INLINE_PAYLOAD: usize = 1024 * 1024;
/// The default largest artifact: 64 MiB.
pub const DEFAULT_MAX_ARTIFACT: usize = 64 * 1024 * 1024;
