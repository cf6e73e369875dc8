//! Starting a dispatcher: connecting, setting up the topology, spawning the background loops
//! (the registry and key watches, the dead-letter mover, schedules, triggers, destinations, the
//! query index's feed and pruning) and serving HTTP.

use crate::compat::web;
use crate::core::broker::Broker;
use crate::core::invoke::Invoker;
use crate::core::submit::Submitter;
use crate::core::{metrics, rate_limit, registry, waiter};
use crate::events::{destinations, dlq, schedules, triggers};
use crate::http::{server, tls};
use crate::index;
use crate::routes::{self, app, web_app};
use crate::state::{AppState, DispatcherConfig};
use anyhow::Context as _;
use squall_broker::backoff::Doubling;
use squall_broker::{Topology, TopologyConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a starting dispatcher keeps trying to set up the topology: a cluster that is still
/// electing its metadata leader, or another dispatcher creating the same streams at the same
/// moment, makes JetStream requests time out for a while.
const TOPOLOGY_SETUP_BUDGET: Duration = Duration::from_secs(120);

/// What a dispatcher says when the broker cannot reserve the streams' limits.
const NO_STORAGE: &str = "the broker's JetStream file store is too small for Squall's streams \
    (JOBS and RESULTS reserve 1 GiB each, the dead letters and state about 0.6 GiB more): free \
    disk space on the broker, or give nats-server a max_file_store that fits them (the broker \
    configs Squall ships set 8GB; without it, the limit is 75 % of the disk space free when the \
    server started)";

/// Whether JetStream refused a stream or bucket because its store cannot hold the limits
/// asked for (API error 10047, "insufficient storage resources available").
fn lacks_storage(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("error code 10047")
}

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
        if lacks_storage(&error) {
            // Not something waiting mends: say what to change, now.
            return Err(error.context(NO_STORAGE));
        }
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
    let keys = Arc::new(crate::core::keys::Keys::new(
        config.admin_key.as_deref(),
        config.metrics_open,
    ));
    index.query.set_retention(
        config.topology.results_max_age.as_millis() as u64,
        config.bucket_retention.as_millis() as u64,
    );
    if config.rebuild_index && config.query_index {
        index.query.clear()?;
        tracing::info!(message = "query index cleared; rebuilding it from RESULTS");
    }
    let broker = Broker::new(client, topology, config.publish);
    let payloads = crate::core::payloads::Payloads::new(
        broker.topology.jetstream.clone(),
        config.topology.clone(),
        config.inline_limit(),
        config.max_payload,
    );
    let metrics = Arc::new(metrics::Metrics::new());
    let registry = registry::Registry::new(broker.clone());
    let submitter = Submitter {
        broker: broker.clone(),
        index: index.clone(),
        metrics: metrics.clone(),
        registry: registry.cache().clone(),
    };
    let destinations = destinations::Destinations {
        service: Arc::new(destinations::Service::new(
            destination_topology,
            &config.destinations,
        )),
        broker: broker.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        delivery: config.destinations.clone(),
    };
    let openapi = serde_json::to_vec(&routes::document(keys.metrics_open))
        .context("cannot render the OpenAPI document")?
        .into();
    let state = Arc::new(AppState {
        config,
        registry,
        broker,
        invoker: Invoker {
            submitter,
            waiter,
            payloads,
        },
        index,
        metrics,
        openapi,
        keys,
        keys_bucket,
        web_limits: rate_limit::RateLimiter::default(),
        sigv4_replays: crate::compat::sigv4::ReplayCache::default(),
        destinations,
    });
    tokio::spawn(crate::core::keys::follow(
        state.keys.clone(),
        state.keys_bucket.clone(),
    ));
    tokio::spawn(
        state
            .registry
            .cache()
            .clone()
            .follow(state.registry.bucket().clone()),
    );
    tokio::spawn(dlq::run_mover(state.broker.clone(), state.registry.clone()));
    // Before serving: a worker may store a large output as soon as a job runs.
    ensure_payload_buckets(&state).await;
    tokio::spawn(prune_index(state.clone()));
    if state.config.query_index {
        tokio::spawn(prune_query_index(state.clone()));
        tokio::spawn(index::feed::run_indexer(
            state.index.query.clone(),
            state.broker.clone(),
            state.metrics.clone(),
        ));
        tokio::spawn(index::service::serve(
            state.index.query.clone(),
            state.broker.client.clone(),
        ));
    }
    tokio::spawn(schedules::run_ticks(
        state.registry.clone(),
        state.invoker.submitter.clone(),
    ));
    tokio::spawn(triggers::run(
        state.registry.clone(),
        state.invoker.submitter.clone(),
    ));
    tokio::spawn(destinations::run(state.destinations.clone()));
    Ok(state)
}

/// Gives every deployed function its payload bucket (a deploy makes it; functions deployed
/// before payload buckets existed get theirs here), so a worker can store a large output.
async fn ensure_payload_buckets(state: &AppState) {
    let records = match state.registry.list().await {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(message = "cannot list functions to give them payload buckets", %error);
            return;
        }
    };
    use futures::StreamExt as _;
    futures::stream::iter(records)
        .for_each_concurrent(16, |record| async move {
            if let Err(error) = state.invoker.payloads.store(&record.name).await {
                tracing::warn!(message = "cannot make a function's payload bucket",
                    function = %record.name, %error);
            }
        })
        .await;
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

/// Serves the API on `http_addr` and web functions on `web_addr` until `shutdown` completes.
pub async fn serve(
    config: DispatcherConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let api_listener = bind(config.http_addr).await?;
    let web_listener = bind(config.web_addr).await?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let limits = config.server;
    let state = connect(config).await?;
    // One shutdown signal for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let api = listen(
        api_listener,
        tls.clone(),
        app(state.clone()),
        "API",
        limits,
        until_stopped(),
    );
    let web = listen(
        web_listener,
        tls,
        web_app(state.clone()),
        "web functions",
        limits,
        until_stopped(),
    );
    let (api, web) = tokio::join!(api, web);
    let served = api.and(web);
    // Accepted invocations still waiting for the index writer would be forgotten otherwise.
    if let Err(error) = state.index.flush_pending() {
        tracing::warn!(message = "cannot store the last accepted invocations", %error);
    }
    if let Err(error) = state.index.query.flush() {
        tracing::warn!(message = "cannot flush the query index", %error);
    }
    served
}

/// Serves `router` on `listener` (HTTPS with `tls`) until `shutdown` completes, within the
/// listener's `limits` (header and body deadlines, its own connection limit).
async fn listen(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::rustls::ServerConfig>,
    router: axum::Router,
    what: &'static str,
    limits: server::ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    match tls {
        None => {
            tracing::info!(message = "dispatcher listening", serves = what, addr = %local, scheme = "http");
            // No Nagle delay: a streamed answer's chunks go out as they are written.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            server::serve(listener, router, limits, web::ClientAddr, shutdown).await;
        }
        Some(config) => {
            tracing::info!(message = "dispatcher listening", serves = what, addr = %local, scheme = "https");
            let listener = tls::TlsListener::new(listener, config)
                .with_context(|| format!("the {what} HTTPS listener failed"))?;
            server::serve(listener, router, limits, web::ClientAddr, shutdown).await;
        }
    }
    Ok(())
}
