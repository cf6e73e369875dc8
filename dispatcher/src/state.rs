//! The dispatcher's configuration and the state its requests share.

use crate::core::broker::Broker;
use crate::core::invoke::Invoker;
use crate::core::submit::Submitter;
use crate::core::{metrics, rate_limit, registry, versions};
use crate::events::destinations;
use crate::http::extract::PayloadLimit;
use crate::http::limits::BatchLimits;
use crate::index;
use axum::extract::FromRef;
use squall_broker::TopologyConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The web listener's address when none is given and the API's is the default: the API's
/// port + 1 (`web_addr_beside`).
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:8081";

/// The web listener's address beside the API's `http_addr`: the same host, the next port (0
/// stays 0: any free port).
pub fn web_addr_beside(http_addr: SocketAddr) -> SocketAddr {
    let port = match http_addr.port() {
        0 => 0,
        port => port.wrapping_add(1).max(1),
    };
    SocketAddr::new(http_addr.ip(), port)
}

/// Everything the dispatcher needs; built by `main` from flags and environment.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub nats_url: String,
    /// NATS credentials and TLS.
    pub nats_auth: squall_broker::connect::NatsAuth,
    pub http_addr: SocketAddr,
    /// Where web functions are served: a listener of their own, so that no function's answer
    /// shares an origin with the console and the API.
    pub web_addr: SocketAddr,
    /// Folder of the local sled index.
    pub data_dir: PathBuf,
    /// Largest invocation payload (and output), in bytes.
    pub max_payload: usize,
    /// Largest payload carried inside its message (and batch line); larger ones go to the
    /// function's payload bucket. The streams' largest message is this plus `HEADER_ROOM`.
    pub inline_payload: usize,
    /// Largest artifact, in bytes.
    pub max_artifact: usize,
    /// The `squall-worker` binary that checks function bundles at deploy.
    pub worker_binary: PathBuf,
    /// Most lines and bytes of one batch request.
    pub batch: BatchLimits,
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
    /// Serve `/metrics` without a key even when keys are required (off by default: it names
    /// every function).
    pub metrics_open: bool,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How destination and callback deliveries to URLs are tried.
    pub destinations: destinations::DeliveryConfig,
    /// The trace viewer's link for a trace id (`{trace_id}` is replaced), shown by the console.
    pub trace_url: Option<String>,
    /// How many of a function's newest versions a deploy keeps (aliased ones are always kept).
    pub keep_versions: usize,
    /// The HTTP listener's header and body deadlines and its connection limit.
    pub server: crate::http::server::ServerLimits,
}

impl Default for DispatcherConfig {
    /// The binary's defaults: a local broker, loopback HTTP, no keys, the default limits.
    fn default() -> Self {
        let max_payload = squall_broker::env::DEFAULT_MAX_PAYLOAD;
        let inline_payload = squall_broker::env::DEFAULT_INLINE_PAYLOAD;
        let topology = TopologyConfig {
            max_message_size: (inline_payload + squall_broker::payloads::HEADER_ROOM) as i32,
            ..TopologyConfig::default()
        };
        Self {
            nats_url: squall_broker::env::DEFAULT_NATS_URL.to_string(),
            nats_auth: squall_broker::connect::NatsAuth::default(),
            http_addr: squall_broker::env::DEFAULT_HTTP_ADDR
                .parse()
                .expect("the default HTTP address parses"),
            web_addr: DEFAULT_WEB_ADDR
                .parse()
                .expect("the default web address parses"),
            data_dir: PathBuf::from(".squall/dispatcher"),
            max_payload,
            inline_payload,
            max_artifact: squall_broker::env::DEFAULT_MAX_ARTIFACT,
            worker_binary: crate::core::bundle::default_worker_binary(),
            batch: BatchLimits::default(),
            max_wait: Duration::from_secs(300),
            publish: squall_broker::publish::PublishPolicy::default(),
            replicas: None,
            topology,
            rebuild_index: false,
            query_index: true,
            bucket_retention: Duration::from_secs(30 * 24 * 3600),
            admin_key: None,
            metrics_open: false,
            tls: None,
            destinations: destinations::DeliveryConfig::default(),
            trace_url: None,
            keep_versions: versions::DEFAULT_KEEP_VERSIONS,
            server: Default::default(),
        }
    }
}

/// State shared by every request.
pub struct AppState {
    pub config: DispatcherConfig,
    /// The connection, the topology's handles and the publish policy.
    pub broker: Broker,
    pub index: index::Index,
    /// The registry as of the last watch event or local change, over its bucket.
    pub registry: registry::Registry,
    /// This process's metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The invoke core: job submission (the broker, the index and the metrics above, in one
    /// handle) and this dispatcher's result waiter.
    pub invoker: Invoker,
    /// The API keys this dispatcher accepts.
    pub keys: Arc<crate::core::keys::Keys>,
    pub keys_bucket: async_nats::jetstream::kv::Store,
    /// The OpenAPI document this dispatcher serves, rendered once.
    pub openapi: bytes::Bytes,
    /// The web functions' rate limits, per client address and function.
    pub web_limits: rate_limit::RateLimiter,
    /// The Lambda API's SigV4 signatures already accepted, refused if sent again.
    pub sigv4_replays: crate::compat::sigv4::ReplayCache,
    /// Destinations and callbacks: their buckets, stream and HTTP client.
    pub destinations: destinations::Destinations,
}

impl DispatcherConfig {
    /// What travels inline: the inline limit, or the largest payload when that is lower.
    pub fn inline_limit(&self) -> usize {
        self.inline_payload.min(self.max_payload)
    }
}

impl AppState {
    /// The query index, when this process holds that role.
    pub fn query_index(&self) -> Option<&index::store::QueryIndex> {
        self.config.query_index.then_some(&self.index.query)
    }
}

impl FromRef<Arc<AppState>> for PayloadLimit {
    fn from_ref(state: &Arc<AppState>) -> PayloadLimit {
        PayloadLimit(state.config.inline_limit())
    }
}

/// The narrow states handlers take instead of the whole `AppState`.
impl FromRef<Arc<AppState>> for destinations::Destinations {
    fn from_ref(state: &Arc<AppState>) -> destinations::Destinations {
        state.destinations.clone()
    }
}

impl FromRef<Arc<AppState>> for crate::core::registry::Registry {
    fn from_ref(state: &Arc<AppState>) -> crate::core::registry::Registry {
        state.registry.clone()
    }
}

impl FromRef<Arc<AppState>> for Broker {
    fn from_ref(state: &Arc<AppState>) -> Broker {
        state.broker.clone()
    }
}

impl FromRef<Arc<AppState>> for Invoker {
    fn from_ref(state: &Arc<AppState>) -> Invoker {
        state.invoker.clone()
    }
}

impl FromRef<Arc<AppState>> for Submitter {
    fn from_ref(state: &Arc<AppState>) -> Submitter {
        state.invoker.submitter.clone()
    }
}

impl FromRef<Arc<AppState>> for crate::index::service::IndexClient {
    fn from_ref(state: &Arc<AppState>) -> crate::index::service::IndexClient {
        crate::index::service::IndexClient {
            local: state.query_index().cloned(),
            client: state.broker.client.clone(),
        }
    }
}

impl FromRef<Arc<AppState>> for crate::core::keys::KeyRing {
    fn from_ref(state: &Arc<AppState>) -> crate::core::keys::KeyRing {
        crate::core::keys::KeyRing(state.keys.clone())
    }
}

impl FromRef<Arc<AppState>> for crate::core::keys::KeysBucket {
    fn from_ref(state: &Arc<AppState>) -> crate::core::keys::KeysBucket {
        crate::core::keys::KeysBucket(state.keys_bucket.clone())
    }
}

impl FromRef<Arc<AppState>> for crate::core::keys::TraceUrl {
    fn from_ref(state: &Arc<AppState>) -> crate::core::keys::TraceUrl {
        crate::core::keys::TraceUrl(state.config.trace_url.clone())
    }
}

impl FromRef<Arc<AppState>> for metrics::SharedMetrics {
    fn from_ref(state: &Arc<AppState>) -> metrics::SharedMetrics {
        metrics::SharedMetrics(state.metrics.clone())
    }
}

/// The OpenAPI document this dispatcher serves, rendered once.
#[derive(Clone)]
pub struct OpenApiDocument(pub bytes::Bytes);

impl FromRef<Arc<AppState>> for OpenApiDocument {
    fn from_ref(state: &Arc<AppState>) -> OpenApiDocument {
        OpenApiDocument(state.openapi.clone())
    }
}

/// The limits a handler applies, copied out of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload: usize,
    /// What travels inline (and the largest batch line).
    pub inline_payload: usize,
    pub max_artifact: usize,
    pub max_wait: Duration,
    pub batch: BatchLimits,
    pub keep_versions: usize,
}

impl FromRef<Arc<AppState>> for Limits {
    fn from_ref(state: &Arc<AppState>) -> Limits {
        let config = &state.config;
        Limits {
            max_payload: config.max_payload,
            inline_payload: config.inline_limit(),
            max_artifact: config.max_artifact,
            max_wait: config.max_wait,
            batch: config.batch,
            keep_versions: config.keep_versions,
        }
    }
}

/// How a deploy checks a function bundle: the worker binary that runs the check and the
/// scratch folder it unpacks into.
#[derive(Debug, Clone)]
pub struct BundleChecking {
    pub worker_binary: PathBuf,
    pub scratch: PathBuf,
}

impl FromRef<Arc<AppState>> for BundleChecking {
    fn from_ref(state: &Arc<AppState>) -> BundleChecking {
        BundleChecking {
            worker_binary: state.config.worker_binary.clone(),
            scratch: state.config.data_dir.join("scratch"),
        }
    }
}

/// The streams' definitions, as a deploy takes them (a function's consumer follows them).
#[derive(Debug, Clone)]
pub struct TopologySettings(pub TopologyConfig);

impl FromRef<Arc<AppState>> for TopologySettings {
    fn from_ref(state: &Arc<AppState>) -> TopologySettings {
        TopologySettings(state.config.topology.clone())
    }
}
