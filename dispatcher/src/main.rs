//! The `squall-dispatcher` binary: parses configuration and serves the HTTP API.

use clap::Parser;
use squall_broker::env;
use squall_dispatcher::http::limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The web listener's address (`--web-addr`).
const ENV_WEB_ADDR: &str = "SQUALL_WEB_ADDR";

/// Serve /metrics without a key (`--metrics-open`).
const ENV_METRICS_OPEN: &str = "SQUALL_METRICS_OPEN";

/// The Squall HTTP API gateway.
#[derive(Parser, Debug)]
#[command(name = "squall-dispatcher", version)]
struct Args {
    /// NATS server URL.
    #[arg(long, env = env::ENV_NATS_URL, default_value = env::DEFAULT_NATS_URL)]
    nats_url: String,
    #[command(flatten)]
    nats_auth: squall_broker::connect::NatsAuth,
    /// Address the API (and the console) listens on.
    #[arg(long, env = env::ENV_HTTP_ADDR, default_value = env::DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,
    /// Address web functions (`/function/{name}`) are served on: an origin of their own, apart
    /// from the console and the API. By default the --http-addr host with the next port
    /// (127.0.0.1:8081 beside the default API address).
    #[arg(long, env = ENV_WEB_ADDR)]
    web_addr: Option<SocketAddr>,
    /// Folder for local state (the invocation index).
    #[arg(long, env = env::ENV_DATA_DIR, default_value = ".squall/dispatcher")]
    data_dir: PathBuf,
    /// Largest invocation payload (and function output), in bytes; above the inline limit it
    /// is stored in the function's payload bucket.
    #[arg(long, env = env::ENV_MAX_PAYLOAD, default_value_t = env::DEFAULT_MAX_PAYLOAD)]
    max_payload: usize,
    /// Largest payload carried inside its job or result message, in bytes (and the largest
    /// batch line); the streams' largest message is this plus 64 KiB for headers.
    #[arg(long, env = env::ENV_INLINE_PAYLOAD, default_value_t = env::DEFAULT_INLINE_PAYLOAD)]
    inline_payload: usize,
    /// Largest function artifact, in bytes.
    #[arg(long, env = env::ENV_MAX_ARTIFACT, default_value_t = env::DEFAULT_MAX_ARTIFACT)]
    max_artifact: usize,
    /// The `squall-worker` binary that checks Python and JavaScript bundles at deploy (by
    /// default the one beside this executable, else the one on PATH).
    #[arg(long, env = "SQUALL_WORKER_BINARY")]
    worker_binary: Option<std::path::PathBuf>,
    /// Most lines (invocations) of one batch request.
    #[arg(long, env = env::ENV_MAX_BATCH_LINES, default_value_t = limits::DEFAULT_MAX_BATCH_LINES)]
    max_batch_lines: usize,
    /// Largest batch request body, in bytes.
    #[arg(long, env = env::ENV_MAX_BATCH_BYTES, default_value_t = limits::DEFAULT_MAX_BATCH_BYTES)]
    max_batch_bytes: usize,
    /// Longest a synchronous invoke waits, in seconds, before answering 202.
    #[arg(long, default_value_t = 300)]
    max_wait_secs: u64,
    /// Seconds an Idempotency-Key keeps mapping to its first invocation (also JetStream's
    /// duplicate window for jobs).
    #[arg(long, default_value_t = 120)]
    idempotency_window_secs: u64,
    /// Drop the local query index and rebuild it from the RESULTS stream.
    #[arg(long)]
    rebuild_index: bool,
    /// Hold the query index: feed it from RESULTS and answer every dispatcher's queries
    /// (`/v1/invocations`, stats, usage) as the `squall-index` NATS service. With `false`, this
    /// dispatcher asks the processes that hold it and does no work per result.
    #[arg(long, env = "SQUALL_QUERY_INDEX", default_value_t = true, action = clap::ArgAction::Set)]
    query_index: bool,
    /// Days the query index keeps its hourly buckets (usage and stats beyond RESULTS'
    /// retention); its invocation entries follow RESULTS' max_age.
    #[arg(long, env = "SQUALL_USAGE_RETENTION_DAYS", default_value_t = 30)]
    usage_retention_days: u64,
    /// Serve the API without keys even on a non-loopback address (no SQUALL_ADMIN_KEY).
    #[arg(long)]
    allow_anonymous: bool,
    /// Serve /metrics without a key (by default it needs a key with the `read` scope not
    /// limited to some functions, as it names every function): for a Prometheus scraping
    /// over loopback or a private network only.
    #[arg(long, env = ENV_METRICS_OPEN)]
    metrics_open: bool,
    /// The trace viewer's link for a trace id, which the console shows beside an invocation:
    /// `{trace_id}` is replaced by the id, e.g. `http://127.0.0.1:16686/trace/{trace_id}`
    /// for Jaeger.
    #[arg(long, env = "SQUALL_TRACE_URL")]
    trace_url: Option<String>,
    /// PEM certificate chain: serve the API over HTTPS (with --tls-key).
    #[arg(long, env = "SQUALL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SQUALL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Replicas of every stream, bucket and durable consumer; by default min(3, the number of
    /// nodes in the broker's cluster as the server reports it), so 1 on a single node.
    #[arg(long, env = "SQUALL_REPLICAS")]
    replicas: Option<usize>,
    /// How long a job publish keeps trying through a broker leader election or reconnect
    /// before the invocation is refused with 503 and Retry-After.
    #[arg(long, env = "SQUALL_PUBLISH_BUDGET_MS", default_value_t = 15_000)]
    publish_budget_ms: u64,
    /// How long a destination or callback POST keeps trying (with backoff) before the
    /// delivery fails and becomes a destination dead letter.
    #[arg(long, env = "SQUALL_DESTINATION_RETRY_MS", default_value_t = 60_000)]
    destination_retry_ms: u64,
    /// The longest one destination or callback POST may take (connecting takes at most 3 s
    /// of it).
    #[arg(long, env = "SQUALL_DESTINATION_TIMEOUT_MS", default_value_t = 5_000)]
    destination_timeout_ms: u64,
    /// Destination and callback POSTs in flight at once to one host from this dispatcher;
    /// the others wait their turn outside the delivery slots, so a dead receiver cannot hold
    /// them all.
    #[arg(long, env = "SQUALL_DESTINATION_PER_HOST", default_value_t = 4)]
    destination_per_host: usize,
    /// Internal targets destinations and callbacks may reach on purpose: comma-separated CIDR
    /// blocks, addresses and host names (`10.1.0.0/16,127.0.0.1,hooks.internal`). Everything
    /// else that is or resolves to a loopback, link-local, private, unique-local, unspecified,
    /// multicast or broadcast address is refused.
    #[arg(long, env = squall_dispatcher::events::egress::ENV_EGRESS_ALLOW, default_value = "")]
    egress_allow: String,
    /// The signing secrets of destination and callback POSTs (`whsec_<base64>`, 24 to 64
    /// bytes), the current one first; two during a rotation, both signing. Each function's key
    /// is derived from them; without any, from its own random key alone.
    #[arg(long, env = squall_dispatcher::events::webhook::ENV_WEBHOOK_SECRETS, default_value = "", hide_env_values = true)]
    webhook_secret: String,
    /// How many of a function's newest versions are kept; older ones are deleted at a deploy
    /// unless an alias points at them.
    #[arg(long, env = "SQUALL_KEEP_VERSIONS", default_value_t = squall_dispatcher::core::versions::DEFAULT_KEEP_VERSIONS)]
    keep_versions: usize,
    /// The most jobs one function may have waiting or running; beyond it that function's
    /// submissions are answered 429 function_backlog_full and no other function's. A spec's
    /// `max_backlog` may lower it for one function.
    #[arg(long, env = "SQUALL_MAX_BACKLOG", default_value_t = squall_broker::topology::DEFAULT_MAX_BACKLOG)]
    max_backlog: i64,
    /// Bytes the dead-letter queue keeps; when full, the oldest dead letters are dropped.
    #[arg(long, env = "SQUALL_DLQ_MAX_BYTES", default_value_t = 256 << 20)]
    dlq_max_bytes: i64,
    /// Bytes the destination dead letters keep; when full, the oldest are dropped.
    #[arg(long, env = "SQUALL_DESTINATION_DLQ_MAX_BYTES", default_value_t = 64 << 20)]
    destination_dlq_max_bytes: i64,
    /// Bytes the functions' state bucket holds; when full, new writes fail (the function's
    /// `kv_put` gets an error) and nothing stored is dropped.
    #[arg(long, env = "SQUALL_STATE_MAX_BYTES", default_value_t = 256 << 20)]
    state_max_bytes: i64,
    /// Seconds a client may take to send a request's headers before its connection is closed.
    #[arg(long, env = "SQUALL_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    header_timeout_secs: u64,
    /// Seconds a request body may stall (no bytes arriving) before it is answered 408.
    #[arg(long, env = "SQUALL_BODY_TIMEOUT_SECS", default_value_t = 30)]
    body_timeout_secs: u64,
    /// The most HTTP connections open at once; a connection beyond is closed as it arrives.
    #[arg(long, env = "SQUALL_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(error) = squall_broker::connect::servers(&args.nats_url) {
        eprintln!("squall-dispatcher: {error}");
        return std::process::ExitCode::from(64);
    }
    // Stream messages must hold the inline payload plus headers; the broker config allows 8 MiB.
    const INLINE_PAYLOAD_LIMIT: usize = 7 * 1024 * 1024;
    if args.inline_payload == 0 || args.inline_payload > INLINE_PAYLOAD_LIMIT {
        eprintln!("squall-dispatcher: --inline-payload must be between 1 and {INLINE_PAYLOAD_LIMIT} bytes, got {}", args.inline_payload);
        return std::process::ExitCode::from(64);
    }
    // Larger payloads are stored in chunks; a payload is still read whole by the function.
    const MAX_PAYLOAD_LIMIT: usize = 1 << 30;
    if args.max_payload == 0 || args.max_payload > MAX_PAYLOAD_LIMIT {
        eprintln!("squall-dispatcher: --max-payload must be between 1 and {MAX_PAYLOAD_LIMIT} bytes, got {}", args.max_payload);
        return std::process::ExitCode::from(64);
    }
    if args.max_batch_lines == 0 || args.max_batch_lines > limits::MAX_BATCH_LINES_LIMIT {
        eprintln!(
            "squall-dispatcher: --max-batch-lines must be between 1 and {}, got {}",
            limits::MAX_BATCH_LINES_LIMIT,
            args.max_batch_lines
        );
        return std::process::ExitCode::from(64);
    }
    if args.max_batch_bytes == 0 || args.max_batch_bytes > limits::MAX_BATCH_BYTES_LIMIT {
        eprintln!(
            "squall-dispatcher: --max-batch-bytes must be between 1 and {} bytes, got {}",
            limits::MAX_BATCH_BYTES_LIMIT,
            args.max_batch_bytes
        );
        return std::process::ExitCode::from(64);
    }
    if let Some(url) = &args.trace_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            eprintln!(
                "squall-dispatcher: --trace-url must be an http:// or https:// URL, got {url}"
            );
            return std::process::ExitCode::from(64);
        }
    }
    if let Some(replicas @ (0 | 6..)) = args.replicas {
        eprintln!("squall-dispatcher: --replicas must be between 1 and 5, got {replicas}");
        return std::process::ExitCode::from(64);
    }
    if !(100..=120_000).contains(&args.publish_budget_ms) {
        eprintln!(
            "squall-dispatcher: --publish-budget-ms must be between 100 and 120000, got {}",
            args.publish_budget_ms
        );
        return std::process::ExitCode::from(64);
    }
    if !(1..=3_600_000).contains(&args.destination_retry_ms) {
        eprintln!(
            "squall-dispatcher: --destination-retry-ms must be between 1 and 3600000, got {}",
            args.destination_retry_ms
        );
        return std::process::ExitCode::from(64);
    }
    if !(1..=300_000).contains(&args.destination_timeout_ms) {
        eprintln!(
            "squall-dispatcher: --destination-timeout-ms must be between 1 and 300000, got {}",
            args.destination_timeout_ms
        );
        return std::process::ExitCode::from(64);
    }
    if !(1..=64).contains(&args.destination_per_host) {
        eprintln!(
            "squall-dispatcher: --destination-per-host must be between 1 and 64, got {}",
            args.destination_per_host
        );
        return std::process::ExitCode::from(64);
    }
    let egress_allow = match squall_dispatcher::events::egress::Allowlist::parse(&args.egress_allow)
    {
        Ok(allow) => allow,
        Err(error) => {
            eprintln!("squall-dispatcher: --egress-allow: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let webhook_secrets =
        match squall_dispatcher::events::webhook::Secrets::parse(&args.webhook_secret) {
            Ok(secrets) => secrets,
            Err(error) => {
                eprintln!("squall-dispatcher: --webhook-secret: {error}");
                return std::process::ExitCode::from(64);
            }
        };
    if args.idempotency_window_secs == 0 || args.idempotency_window_secs > 7 * 24 * 3600 {
        eprintln!(
            "squall-dispatcher: --idempotency-window-secs must be between 1 and {}, got {}",
            7 * 24 * 3600,
            args.idempotency_window_secs
        );
        return std::process::ExitCode::from(64);
    }
    if args.usage_retention_days == 0 || args.usage_retention_days > 3660 {
        eprintln!(
            "squall-dispatcher: --usage-retention-days must be between 1 and 3660, got {}",
            args.usage_retention_days
        );
        return std::process::ExitCode::from(64);
    }
    let admin_key = match admin_key() {
        Ok(key) => key,
        Err(message) => {
            eprintln!("squall-dispatcher: {message}");
            return std::process::ExitCode::from(64);
        }
    };
    let web_addr = args
        .web_addr
        .unwrap_or_else(|| squall_dispatcher::state::web_addr_beside(args.http_addr));
    if web_addr == args.http_addr && web_addr.port() != 0 {
        eprintln!(
            "squall-dispatcher: --web-addr {web_addr} is the API's address; web functions need an origin of their own"
        );
        return std::process::ExitCode::from(64);
    }
    if admin_key.is_none() && !args.http_addr.ip().is_loopback() && !args.allow_anonymous {
        eprintln!(
            "squall-dispatcher: refusing to serve the API without keys on {}, a non-loopback address: \
             anyone who reaches it could deploy native code to every worker. Either configure an admin key \
             (SQUALL_ADMIN_KEY, or SQUALL_ADMIN_KEY_FILE naming a file that holds it), or pass --allow-anonymous \
             to serve it open on purpose.",
            args.http_addr
        );
        return std::process::ExitCode::from(64);
    }
    if admin_key.is_none() && !web_addr.ip().is_loopback() && !args.allow_anonymous {
        eprintln!(
            "squall-dispatcher: refusing to serve web functions without keys on {web_addr}, a non-loopback \
             address: a web function that asks for a key would answer anyone. Configure an admin key \
             (SQUALL_ADMIN_KEY or SQUALL_ADMIN_KEY_FILE), or pass --allow-anonymous."
        );
        return std::process::ExitCode::from(64);
    }
    for (flag, value) in [
        ("--max-backlog", args.max_backlog),
        ("--dlq-max-bytes", args.dlq_max_bytes),
        (
            "--destination-dlq-max-bytes",
            args.destination_dlq_max_bytes,
        ),
        ("--state-max-bytes", args.state_max_bytes),
    ] {
        if value < 1 {
            eprintln!("squall-dispatcher: {flag} must be at least 1, got {value}");
            return std::process::ExitCode::from(64);
        }
    }
    for (flag, value) in [
        ("--header-timeout-secs", args.header_timeout_secs),
        ("--body-timeout-secs", args.body_timeout_secs),
    ] {
        if !(1..=3600).contains(&value) {
            eprintln!("squall-dispatcher: {flag} must be between 1 and 3600, got {value}");
            return std::process::ExitCode::from(64);
        }
    }
    if args.max_connections == 0 {
        eprintln!("squall-dispatcher: --max-connections must be at least 1");
        return std::process::ExitCode::from(64);
    }
    let mut topology = squall_broker::TopologyConfig {
        duplicate_window: Duration::from_secs(args.idempotency_window_secs),
        max_backlog: args.max_backlog,
        dlq_max_bytes: args.dlq_max_bytes,
        destination_dlq_max_bytes: args.destination_dlq_max_bytes,
        state_max_bytes: args.state_max_bytes,
        ..Default::default()
    };
    topology.max_message_size = (args.inline_payload + squall_broker::payloads::HEADER_ROOM) as i32;
    let config = squall_dispatcher::DispatcherConfig {
        nats_url: args.nats_url,
        nats_auth: args.nats_auth,
        http_addr: args.http_addr,
        web_addr,
        data_dir: args.data_dir,
        max_payload: args.max_payload,
        inline_payload: args.inline_payload,
        max_artifact: args.max_artifact,
        worker_binary: args
            .worker_binary
            .unwrap_or_else(squall_dispatcher::core::bundle::default_worker_binary),
        batch: limits::BatchLimits {
            max_lines: args.max_batch_lines,
            max_bytes: args.max_batch_bytes,
        },
        max_wait: Duration::from_secs(args.max_wait_secs),
        publish: squall_broker::publish::PublishPolicy::with_budget(Duration::from_millis(
            args.publish_budget_ms,
        )),
        replicas: args.replicas,
        topology,
        rebuild_index: args.rebuild_index,
        query_index: args.query_index,
        bucket_retention: Duration::from_secs(args.usage_retention_days * 24 * 3600),
        admin_key,
        metrics_open: args.metrics_open,
        tls: args.tls_cert.zip(args.tls_key),
        destinations: squall_dispatcher::events::destinations::DeliveryConfig {
            retry_for: Duration::from_millis(args.destination_retry_ms),
            try_timeout: Duration::from_millis(args.destination_timeout_ms),
            per_host: args.destination_per_host,
            allow: egress_allow,
            secrets: webhook_secrets,
            ..Default::default()
        },
        trace_url: args.trace_url,
        keep_versions: args.keep_versions,
        server: squall_dispatcher::http::server::ServerLimits {
            header_timeout: Duration::from_secs(args.header_timeout_secs),
            body_timeout: Duration::from_secs(args.body_timeout_secs),
            max_connections: args.max_connections,
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("squall-dispatcher: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _runtime = runtime.enter();
        match squall_telemetry::init("squall-dispatcher") {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("squall-dispatcher: {error}");
                return std::process::ExitCode::from(64);
            }
        }
    };
    let served = runtime.block_on(squall_dispatcher::serve(config, shutdown_signal()));
    telemetry.shutdown();
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("squall-dispatcher: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The admin key from SQUALL_ADMIN_KEY or the file SQUALL_ADMIN_KEY_FILE names.
fn admin_key() -> Result<Option<String>, String> {
    let from_env = std::env::var("SQUALL_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let from_file = match std::env::var_os("SQUALL_ADMIN_KEY_FILE") {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map(|k| k.trim().to_string())
                .map_err(|e| {
                    format!(
                        "cannot read SQUALL_ADMIN_KEY_FILE {}: {e}",
                        path.to_string_lossy()
                    )
                })?,
        ),
        None => None,
    };
    let key = match (from_env, from_file) {
        (Some(_), Some(_)) => {
            return Err("set SQUALL_ADMIN_KEY or SQUALL_ADMIN_KEY_FILE, not both".into())
        }
        (key, None) | (None, key) => key,
    };
    match key {
        Some(key) if key.len() < squall_dispatcher::core::keys::MIN_KEY_LEN => Err(format!(
            "the admin key is {} characters long; use at least {} (for example `openssl rand -hex 32`)",
            key.len(),
            squall_dispatcher::core::keys::MIN_KEY_LEN
        )),
        key => Ok(key),
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
