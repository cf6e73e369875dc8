//! The Squall dispatcher: the HTTP API gateway in front of JetStream.
//!
//! Architecture invariant: the dispatcher never loads a function; it reads artifacts as data
//! (`artifact`) and talks to workers only through the broker.

pub mod artifact;
pub mod auth;
pub mod batch;
pub mod cancel;
pub mod cloudevents;
pub mod destinations;
pub mod dlq;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod functions;
pub mod health;
pub mod index;
pub mod index_service;
pub mod invocations;
pub mod lambda;
pub mod limits;
pub mod metrics;
pub mod queries;
pub mod query;
pub mod rate_limit;
pub mod registry;
pub mod routes;
pub mod schedules;
pub mod secrets;
pub mod sigv4;
pub mod sketch;
pub mod submit;
pub mod tls;
pub mod triggers;
pub mod ui;
pub mod versions;
pub mod view;
pub mod waiter;
pub mod web;

pub use routes::app;

use anyhow::Context as _;
use squall_broker::backoff::Doubling;
use squall_broker::{Topology, TopologyConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the dispatcher needs; built by `main` from flags and environment.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub nats_url: String,
    /// NATS credentials and TLS.
    pub nats_auth: squall_broker::connect::NatsAuth,
    pub http_addr: SocketAddr,
    /// Folder of the local sled index.
    pub data_dir: PathBuf,
    /// Largest invocation payload, in bytes.
    pub max_payload: usize,
    /// Largest artifact, in bytes.
    pub max_artifact: usize,
    /// Most lines and bytes of one batch request.
    pub batch: batch::BatchLimits,
    /// Longest a synchronous invoke waits before answering 202.
    pub max_wait: Duration,
    /// How long a job publish keeps trying through a leader election before a 503.
    pub publish: squall_broker::publish::PublishPolicy,
    /// Replicas of everything in JetStream; `None`: min(3, the broker cluster's size).
    pub replicas: Option<usize>,
    /// The streams' definitions; `replicas` there is set from `replicas` at connect.
    pub topology: TopologyConfig,
    /// Drop the query index at startup and replay RESULTS into it.
    pub rebuild_index: bool,
    /// Hold the query index (feed it from RESULTS and serve it to every dispatcher); without
    /// it, queries are asked of the processes that hold one.
    pub query_index: bool,
    /// How long the query index keeps its hourly usage and stats buckets; its entries and
    /// minute buckets follow RESULTS' `max_age`.
    pub bucket_retention: Duration,
    /// The admin API key; `None` leaves the API open (loopback only, unless allowed).
    pub admin_key: Option<String>,
    /// Serve `/metrics` without a key even when keys are required.
    pub metrics_open: bool,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How destination and callback deliveries to URLs are tried.
    pub destinations: destinations::DeliveryConfig,
    /// The trace viewer's link for a trace id (`{trace_id}` is replaced), shown by the console.
    pub trace_url: Option<String>,
    /// How many of a function's newest versions a deploy keeps (aliased ones are always kept).
    pub keep_versions: usize,
}

impl Default for DispatcherConfig {
    /// The binary's defaults: a local broker, loopback HTTP, no keys, the default limits.
    fn default() -> Self {
        let max_payload = squall_broker::env::DEFAULT_MAX_PAYLOAD;
        let topology = TopologyConfig {
            max_message_size: (max_payload + 64 * 1024) as i32,
            ..TopologyConfig::default()
        };
        Self {
            nats_url: squall_broker::env::DEFAULT_NATS_URL.to_string(),
            nats_auth: squall_broker::connect::NatsAuth::default(),
            http_addr: squall_broker::env::DEFAULT_HTTP_ADDR
                .parse()
                .expect("the default HTTP address parses"),
            data_dir: PathBuf::from(".squall/dispatcher"),
            max_payload,
            max_artifact: squall_broker::env::DEFAULT_MAX_ARTIFACT,
            batch: batch::BatchLimits::default(),
            max_wait: Duration::from_secs(300),
            publish: squall_broker::publish::PublishPolicy::default(),
            replicas: None,
            topology,
            rebuild_index: false,
            query_index: true,
            bucket_retention: Duration::from_secs(30 * 24 * 3600),
            admin_key: None,
            metrics_open: true,
            tls: None,
            destinations: destinations::DeliveryConfig::default(),
            trace_url: None,
            keep_versions: versions::DEFAULT_KEEP_VERSIONS,
        }
    }
}

/// State shared by every request.
pub struct AppState {
    pub config: DispatcherConfig,
    pub client: async_nats::Client,
    pub topology: Topology,
    pub waiter: waiter::ResultWaiter,
    pub index: index::Index,
    /// The registry as of the last watch event or local change.
    pub registry: Arc<registry::RegistryCache>,
    /// This process's metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The API keys this dispatcher accepts.
    pub keys: auth::Keys,
    pub keys_bucket: async_nats::jetstream::kv::Store,
    /// The OpenAPI document this dispatcher serves, rendered once.
    pub openapi: bytes::Bytes,
    /// The web functions' rate limits, per client address and function.
    pub web_limits: rate_limit::RateLimiter,
    /// Destinations and callbacks: their buckets, stream and HTTP client.
    pub destinations: destinations::Service,
}

impl AppState {
    /// The query index, when this process holds that role.
    pub fn query_index(&self) -> Option<&query::QueryIndex> {
        self.config.query_index.then_some(&self.index.query)
    }
}

/// How long a starting dispatcher keeps trying to set up the topology: a cluster that is still
/// electing its metadata leader, or another dispatcher creating the same streams at the same
/// moment, makes JetStream requests time out for a while.
const TOPOLOGY_SETUP_BUDGET: Duration = Duration::from_secs(120);

/// Creates or updates the streams and buckets (the keys bucket among them), trying again until
/// `TOPOLOGY_SETUP_BUDGET` has passed (every step is idempotent).
async fn set_up_topology(
    client: &async_nats::Client,
    config: &TopologyConfig,
) -> anyhow::Result<(Topology, async_nats::jetstream::kv::Store)> {
    let mut pauses = Doubling::new(Duration::from_millis(250), Duration::from_secs(4))
        .until(Instant::now() + TOPOLOGY_SETUP_BUDGET);
    loop {
        let attempt = async {
            let topology = squall_broker::ensure_topology(client.clone(), config)
                .await
                .context("cannot set up the JetStream topology")?;
            let keys = topology
                .keys
                .clone()
                .context("the topology has no keys bucket")?;
            anyhow::Ok((topology, keys))
        };
        let error = match attempt.await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        let Some(pause) = pauses.fail_at(Instant::now()) else {
            return Err(error);
        };
        tracing::warn!(
            message = "the JetStream topology is not ready yet; trying again",
            error = format!("{error:#}"),
            retry_in_ms = pause.as_millis() as u64
        );
        tokio::time::sleep(pause).await;
    }
}

/// Connects to NATS, ensures the topology, opens the index and builds the shared state.
pub async fn connect(mut config: DispatcherConfig) -> anyhow::Result<Arc<AppState>> {
    let client =
        squall_broker::connect::connect(&config.nats_auth, "squall-dispatcher", &config.nats_url)
            .await?;
    config.topology.replicas = match config.replicas {
        Some(replicas) => replicas,
        None => squall_broker::topology::default_replicas(&client).await,
    };
    tracing::info!(
        message = "connected to NATS",
        server = %client.server_info().server_name,
        replicas = config.topology.replicas
    );
    // Boxed, like the next: these futures are large, and tests poll `connect` on a test
    // thread's stack.
    let (topology, keys_bucket) = Box::pin(set_up_topology(&client, &config.topology)).await?;
    let destination_topology = Box::pin(squall_broker::topology::ensure_destination_topology(
        &topology.jetstream,
        &config.topology,
    ))
    .await
    .context("cannot set up the destinations' buckets and stream")?;
    let inbox_prefix = config
        .nats_auth
        .nats_inbox_prefix
        .clone()
        .unwrap_or_else(|| "_INBOX".to_string());
    let waiter = waiter::ResultWaiter::start(&client, &inbox_prefix)
        .await
        .context("cannot subscribe to results")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let index = index::Index::open(&config.data_dir.join("index"))?;
    let keys = auth::Keys::new(config.admin_key.as_deref(), config.metrics_open);
    index.query.set_retention(
        config.topology.results_max_age.as_millis() as u64,
        config.bucket_retention.as_millis() as u64,
    );
    if config.rebuild_index && config.query_index {
        index.query.clear()?;
        tracing::info!(message = "query index cleared; rebuilding it from RESULTS");
    }
    let state = Arc::new(AppState {
        config,
        client,
        topology,
        waiter,
        index,
        registry: Arc::new(registry::RegistryCache::default()),
        metrics: Arc::new(metrics::Metrics::new()),
        openapi: serde_json::to_vec(&routes::document(keys.metrics_open))
            .context("cannot render the OpenAPI document")?
            .into(),
        keys,
        keys_bucket,
        web_limits: rate_limit::RateLimiter::default(),
        destinations: destinations::Service::new(destination_topology),
    });
    tokio::spawn(auth::follow(state.clone()));
    tokio::spawn(
        state
            .registry
            .clone()
            .follow(state.topology.registry.clone()),
    );
    tokio::spawn(dlq::run_mover(state.clone()));
    tokio::spawn(prune_index(state.clone()));
    if state.config.query_index {
        tokio::spawn(prune_query_index(state.clone()));
        tokio::spawn(queries::run_indexer(state.clone()));
        tokio::spawn(index_service::serve(state.clone()));
    }
    tokio::spawn(schedules::run_ticks(state.clone()));
    tokio::spawn(triggers::run(state.clone()));
    tokio::spawn(destinations::run(state.clone()));
    Ok(state)
}

/// Hourly, forgets accepted invocations older than RESULTS' retention, so the local index
/// stays small even for invocations nobody asked about.
async fn prune_index(state: Arc<AppState>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let now = squall_broker::time::now_ms();
        let cutoff = now.saturating_sub(state.config.topology.results_max_age.as_millis() as u64);
        match state.index.prune_before(cutoff) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(message = "pruned accepted invocations", removed),
            Err(error) => tracing::warn!(message = "cannot prune accepted invocations", %error),
        }
    }
}

/// How often the query index is pruned, and how many keys one step removes at most: small
/// steps, so the feed and the queries never wait long behind a prune.
const QUERY_PRUNE_EVERY: Duration = Duration::from_secs(10);
const QUERY_PRUNE_STEP: usize = 2000;

/// Forgets query index entries (and minute buckets) as RESULTS' retention lets results go,
/// and hour buckets past their own retention: continuously, a bounded step at a time.
async fn prune_query_index(state: Arc<AppState>) {
    let mut every = tokio::time::interval(QUERY_PRUNE_EVERY);
    let mut removed_since_log = 0;
    loop {
        every.tick().await;
        loop {
            let index = state.index.query.clone();
            let now = squall_broker::time::now_ms();
            let step =
                tokio::task::spawn_blocking(move || index.prune_step(now, QUERY_PRUNE_STEP)).await;
            match step {
                Ok(Ok(removed)) => {
                    removed_since_log += removed;
                    if removed < QUERY_PRUNE_STEP {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(message = "cannot prune the query index", %error);
                    break;
                }
                Err(error) => {
                    tracing::warn!(message = "the query index pruner failed", %error);
                    break;
                }
            }
        }
        if removed_since_log >= 100_000 {
            tracing::info!(
                message = "pruned the query index",
                removed = removed_since_log
            );
            removed_since_log = 0;
        }
    }
}

/// Serves the API until `shutdown` completes.
pub async fn serve(
    config: DispatcherConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = config.http_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let state = connect(config).await?;
    let local = listener.local_addr()?;
    let served = match tls {
        None => {
            tracing::info!(message = "dispatcher listening", addr = %local, scheme = "http");
            axum::serve(
                listener,
                app(state.clone()).into_make_service_with_connect_info::<web::ClientAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Some(config) => {
            tracing::info!(message = "dispatcher listening", addr = %local, scheme = "https");
            axum::serve(
                tls::TlsListener::new(listener, config)?,
                app(state.clone()).into_make_service_with_connect_info::<web::ClientAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    }
    .context("HTTP server failed");
    // Accepted invocations still waiting for the index writer would be forgotten otherwise.
    if let Err(error) = state.index.flush_pending() {
        tracing::warn!(message = "cannot store the last accepted invocations", %error);
    }
    if let Err(error) = state.index.query.flush() {
        tracing::warn!(message = "cannot flush the query index", %error);
    }
    served
}
