//! Creates or updates the streams, buckets and consumers Squall relies on, idempotently.

use crate::events::{TriggerRecord, TriggerSource};
use crate::names::{
    consumer_name, jobs_subject, trigger_consumer_name, ADVISORY_STREAM, ARTIFACT_BUCKET,
    CALLBACKS_BUCKET, CANCELS_BUCKET, CRON_DISPATCH, DELIVERIES_BUCKET, DESTINATIONS_CONSUMER,
    DESTINATIONS_PLACEHOLDER_FILTER, DESTINATION_DLQ_STREAM, DLQ_MOVER, DLQ_STREAM,
    EVENTS_PLACEHOLDER_SUBJECT, EVENTS_STREAM, FLEET_BUCKET, IDEMPOTENCY_BUCKET, JOBS_STREAM,
    KEYS_BUCKET, MAX_DELIVERIES_SUBJECTS, REGISTRY_BUCKET, RESULTS_STREAM, SCHEDULES_STREAM,
    STATE_BUCKET, STATE_MAX_VALUE, TRIGGERS_BUCKET,
};
use crate::spec::FunctionSpec;
use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use std::time::Duration;

/// How long the JetStream API may take to answer before topology setup gives up.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivered job may go without an acknowledgement or a progress signal before
/// JetStream redelivers it. Workers send progress every `ack_wait / 3` while a job runs, so a
/// live job is never redelivered, and a job held by a dead worker comes back within this time.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);

/// How long RESULTS remembers a result's `Nats-Msg-Id`: longer than a worker keeps trying to
/// store one result (30 s).
pub const RESULTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(40);

/// The most jobs one function may have in JOBS unless the dispatcher is told otherwise.
pub const DEFAULT_MAX_BACKLOG: i64 = 100_000;

/// Limits of the streams; every one is configurable, the defaults follow DESIGN.md.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// Replicas of every stream and bucket (1 on a single node, 3 in a cluster).
    pub replicas: usize,
    /// JOBS refuses new publishes beyond this many bytes (it never discards accepted jobs).
    pub jobs_max_bytes: i64,
    /// The most jobs one function may have queued (or running) in JOBS: the stream's
    /// per-subject limit, beyond which it refuses that function's new jobs and no other's. A
    /// function's spec may set a lower `max_backlog`, never a higher one.
    pub max_backlog: i64,
    /// The window within which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// How long results are kept.
    pub results_max_age: Duration,
    /// RESULTS discards its oldest results beyond this many bytes.
    pub results_max_bytes: i64,
    /// How long dead letters are kept.
    pub dlq_max_age: Duration,
    /// DLQ discards its oldest dead letters beyond this many bytes. (JetStream reserves a
    /// stream's `max_bytes` in the server's store when the stream is made: the sum of the
    /// bounded streams must fit the server's `max_file_store`.)
    pub dlq_max_bytes: i64,
    /// DESTINATION_DLQ discards its oldest letters beyond this many bytes.
    pub destination_dlq_max_bytes: i64,
    /// `squall_state` refuses new writes beyond this many bytes (it never drops a function's
    /// stored value to make room).
    pub state_max_bytes: i64,
    /// The largest single message (job or result) a stream accepts.
    pub max_message_size: i32,
    /// Redelivery delay of a job whose worker went silent; see `DEFAULT_ACK_WAIT`.
    pub ack_wait: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            replicas: 1,
            jobs_max_bytes: 1 << 30,
            max_backlog: DEFAULT_MAX_BACKLOG,
            duplicate_window: Duration::from_secs(120),
            results_max_age: Duration::from_secs(24 * 3600),
            results_max_bytes: 1 << 30,
            dlq_max_age: Duration::from_secs(14 * 24 * 3600),
            dlq_max_bytes: 256 << 20,
            destination_dlq_max_bytes: 64 << 20,
            state_max_bytes: 256 << 20,
            max_message_size: 8 * 1024 * 1024,
            ack_wait: DEFAULT_ACK_WAIT,
        }
    }
}

/// Why the topology could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        name: &'static str,
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot create or update key-value bucket {name}: {source}")]
    KeyValue {
        name: &'static str,
        source: jetstream::context::CreateKeyValueError,
    },
    #[error("cannot create object store {name}: {source}")]
    ObjectStore {
        name: &'static str,
        source: jetstream::context::CreateObjectStoreError,
    },
    #[error("cannot create the payload store of function {function}: {source}")]
    PayloadStore {
        function: String,
        source: jetstream::context::CreateObjectStoreError,
    },
    #[error("cannot open the payload store of function {function}: {source}")]
    OpenPayloadStore {
        function: String,
        source: jetstream::context::ObjectStoreError,
    },
    #[error("cannot create or update consumer {name}: {source}")]
    Consumer {
        name: String,
        source: jetstream::stream::ConsumerError,
    },
    #[error("cannot open consumer {name}: {source}")]
    OpenConsumer {
        name: String,
        source: jetstream::stream::ConsumerError,
    },
    #[error("cannot open key-value bucket {name}: {source}")]
    OpenKeyValue {
        name: &'static str,
        source: jetstream::context::KeyValueError,
    },
    #[error("cannot open object store {name}: {source}")]
    OpenObjectStore {
        name: &'static str,
        source: jetstream::context::ObjectStoreError,
    },
    #[error("cannot raise the replicas of {name}: {source}")]
    UpdateStream {
        name: &'static str,
        source: jetstream::context::UpdateStreamError,
    },
    #[error("cannot open stream {name}: {source}")]
    GetStream {
        name: &'static str,
        source: jetstream::context::GetStreamError,
    },
}

/// Handles on everything `ensure_topology` created.
#[derive(Clone)]
pub struct Topology {
    pub jetstream: jetstream::Context,
    pub jobs: stream::Stream,
    pub results: stream::Stream,
    pub dlq: stream::Stream,
    pub registry: kv::Store,
    pub artifacts: object_store::ObjectStore,
    pub advisories: stream::Stream,
    pub idempotency: kv::Store,
    /// Schedules and their ticks.
    pub schedules: stream::Stream,
    /// Messages on subjects bound by subject triggers.
    pub events: stream::Stream,
    pub triggers: kv::Store,
    /// Fleet supervisors' heartbeats and their shared worker allocation.
    pub fleet: kv::Store,
    /// Functions' own state (the host services' `kv_*` calls), with per-key TTLs.
    pub state: kv::Store,
    /// Cancellation requests by invocation id, which every worker follows.
    pub cancels: kv::Store,
    /// The API keys' hashes: `Some` from `ensure_topology`, `None` from `open_topology`
    /// (workers have no use for keys, and `auth.conf` does not let them read the bucket).
    pub keys: Option<kv::Store>,
}

/// The most replicas Squall asks for on its own: three survive the loss of any one node.
const MAX_DEFAULT_REPLICAS: usize = 3;
/// How long a dispatcher waits for a forming cluster to show all its members before it
/// creates the streams with the replicas it can see.
const CLUSTER_FORMING_WAIT: Duration = Duration::from_secs(5);

/// The number of servers in the broker's cluster, from what the connected server reports: a
/// clustered server lists the client URL of every member it has a route to, itself included.
pub fn cluster_size(info: &async_nats::ServerInfo) -> usize {
    if info.cluster.as_deref().unwrap_or_default().is_empty() {
        return 1;
    }
    let members: std::collections::BTreeSet<&str> =
        info.connect_urls.iter().map(String::as_str).collect();
    members.len().max(1)
}

/// The replicas to use when none are configured: min(3, the cluster's size), and never fewer
/// than the JOBS stream already has (a dispatcher started while a node is down must not shrink
/// the streams). On a cluster still forming, waits briefly for its members to show.
pub async fn default_replicas(client: &async_nats::Client) -> usize {
    let js = jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(client.clone());
    let existing = match js.get_stream(JOBS_STREAM).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) => info.config.num_replicas,
            Err(_) => 0,
        },
        Err(_) => 0,
    };
    let deadline = tokio::time::Instant::now() + CLUSTER_FORMING_WAIT;
    loop {
        let seen = cluster_size(&client.server_info()).min(MAX_DEFAULT_REPLICAS);
        let clustered = client.server_info().cluster.is_some_and(|c| !c.is_empty());
        if seen >= MAX_DEFAULT_REPLICAS
            || existing >= seen && existing > 0
            || !clustered
            || tokio::time::Instant::now() >= deadline
        {
            if clustered && client.server_info().connect_urls.is_empty() {
                // `no_advertise` hides the members: the size cannot be read.
                tracing::warn!(
                    message = "the NATS cluster does not advertise its members (no_advertise);                                give --replicas to replicate streams",
                    replicas = existing.max(1)
                );
            }
            return seen.max(existing).max(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long a fleet supervisor's heartbeat counts as alive.
pub const FLEET_HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// The SCHEDULES stream: schedule messages fired by the broker (`schedules.<name>`, the last
/// message of a subject is the schedule) and the ticks they produce (`cron.<name>`).
pub fn schedules_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: SCHEDULES_STREAM.to_string(),
        description: Some("Squall schedules and their ticks".into()),
        subjects: vec!["schedules.*".into(), "cron.*".into()],
        retention: stream::RetentionPolicy::Limits,
        allow_message_schedules: true,
        allow_message_ttl: true,
        allow_rollup: true,
        max_message_size: cfg.max_message_size,
        duplicate_window: cfg.duplicate_window,
        num_replicas: cfg.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The EVENTS stream with no trigger bound yet; triggers add their subjects to it.
pub fn events_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.to_string(),
        description: Some("Squall: messages on subjects bound by subject triggers".into()),
        subjects: vec![EVENTS_PLACEHOLDER_SUBJECT.into()],
        retention: stream::RetentionPolicy::Limits,
        max_age: cfg.results_max_age,
        max_message_size: cfg.max_message_size,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// The JOBS stream definition.
pub fn jobs_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: JOBS_STREAM.to_string(),
        description: Some("Squall pending jobs, one subject per function".into()),
        subjects: vec!["jobs.*".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_bytes: cfg.jobs_max_bytes,
        // One subject per function: a function whose backlog is full is refused on its own
        // (`maximum messages per subject exceeded`) while the others' jobs are still stored.
        max_messages_per_subject: cfg.max_backlog,
        // The server takes it only with a limit (`max_backlog` -1: none).
        discard_new_per_subject: cfg.max_backlog > 0,
        max_message_size: cfg.max_message_size,
        duplicate_window: cfg.duplicate_window,
        num_replicas: cfg.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The RESULTS stream definition.
pub fn results_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: RESULTS_STREAM.to_string(),
        description: Some("Squall invocation results and status changes".into()),
        subjects: vec!["results.*.*".into()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: cfg.results_max_age,
        max_bytes: cfg.results_max_bytes,
        max_message_size: cfg.max_message_size,
        // Results carry a `Nats-Msg-Id` only so that a retried publish is stored once: the
        // window needs to cover a result's publish budget and no more (the server's cost of
        // deduplication grows with the ids it keeps).
        duplicate_window: RESULTS_DUPLICATE_WINDOW,
        num_replicas: cfg.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The DLQ stream definition.
pub fn dlq_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.to_string(),
        description: Some("Squall dead letters".into()),
        subjects: vec!["dlq.*.*".into()],
        retention: stream::RetentionPolicy::Limits,
        // When full, the oldest dead letters go first: the newest failures matter most.
        discard: stream::DiscardPolicy::Old,
        max_age: cfg.dlq_max_age,
        max_bytes: cfg.dlq_max_bytes,
        max_message_size: cfg.max_message_size,
        num_replicas: cfg.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The stream that captures MAX_DELIVERIES advisories of JOBS consumers, consumed by the
/// dispatchers' dead-letter mover (work queue: each advisory is handled once).
pub fn advisory_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: ADVISORY_STREAM.to_string(),
        description: Some("Squall: jobs that exhausted their deliveries".into()),
        subjects: vec![MAX_DELIVERIES_SUBJECTS.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        max_age: cfg.dlq_max_age,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    name: &'static str,
) -> Result<stream::Stream, TopologyError> {
    js.create_or_update_stream(config)
        .await
        .map_err(|source| TopologyError::Stream { name, source })?;
    js.get_stream(name)
        .await
        .map_err(|source| TopologyError::GetStream { name, source })
}

/// The most jobs any one function has in JOBS now (0 when JOBS does not exist or cannot be
/// read).
async fn largest_backlog(js: &jetstream::Context) -> i64 {
    use futures::StreamExt as _;
    let Ok(jobs) = js.get_stream(JOBS_STREAM).await else {
        return 0;
    };
    let Ok(subjects) = jobs.info_with_subjects("jobs.*").await else {
        return 0;
    };
    subjects
        .filter_map(|entry| async move { entry.ok().map(|(_, count)| count as i64) })
        .fold(0, |largest, count| async move { largest.max(count) })
        .await
}

/// The per-subject limit to give JOBS: the configured one, unless a function already has more
/// jobs queued. The server drops a subject's oldest messages when its limit is lowered below
/// what it holds, and accepted jobs are never dropped: the limit stays at that function's
/// backlog (which refuses its new jobs until it drains) until a later start lowers it.
pub fn backlog_limit(configured: i64, largest: i64) -> i64 {
    if configured > 0 && largest > configured {
        tracing::warn!(
            message = "a function has more jobs queued than --max-backlog; the limit stays at its backlog until it drains and a dispatcher starts again",
            max_backlog = configured,
            backlog = largest
        );
        largest
    } else {
        configured
    }
}

/// Raises a stream that is kept as it is (EVENTS, the artifact store's) to `replicas` when it
/// has fewer: a deployment that grows from one node to a cluster gets everything replicated.
async fn raise_replicas(
    js: &jetstream::Context,
    mut stream: stream::Stream,
    replicas: usize,
    name: &'static str,
) -> Result<stream::Stream, TopologyError> {
    // Unreadable now: left as it is; the next start tries again.
    let current = match stream.info().await {
        Ok(info) => info.config.clone(),
        Err(_) => return Ok(stream),
    };
    if current.num_replicas >= replicas {
        return Ok(stream);
    }
    let config = stream::Config {
        num_replicas: replicas,
        ..current
    };
    js.update_stream(config)
        .await
        .map_err(|source| TopologyError::UpdateStream { name, source })?;
    tracing::info!(message = "stream replicas raised", stream = name, replicas);
    js.get_stream(stream.cached_info().config.name.clone())
        .await
        .map_err(|source| TopologyError::GetStream { name, source })
}

/// Creates or updates every stream and bucket, and creates the artifact store.
pub async fn ensure_topology(
    client: async_nats::Client,
    cfg: &TopologyConfig,
) -> Result<Topology, TopologyError> {
    let js = jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(client);
    let jobs_config = jobs_stream_config(&TopologyConfig {
        max_backlog: backlog_limit(cfg.max_backlog, largest_backlog(&js).await),
        ..cfg.clone()
    });
    let jobs = ensure_stream(&js, jobs_config, JOBS_STREAM).await?;
    let results = ensure_stream(&js, results_stream_config(cfg), RESULTS_STREAM).await?;
    let dlq = ensure_stream(&js, dlq_stream_config(cfg), DLQ_STREAM).await?;
    let advisories = ensure_stream(&js, advisory_stream_config(cfg), ADVISORY_STREAM).await?;
    let schedules = ensure_stream(&js, schedules_stream_config(cfg), SCHEDULES_STREAM).await?;
    // EVENTS' subjects are the triggers' patterns: create it, never reset it (only its
    // replicas follow the configuration).
    let events = match js.get_stream(EVENTS_STREAM).await {
        Ok(stream) => raise_replicas(&js, stream, cfg.replicas, EVENTS_STREAM).await?,
        Err(_) => ensure_stream(&js, events_stream_config(cfg), EVENTS_STREAM).await?,
    };
    let triggers = js
        .create_or_update_key_value(kv::Config {
            bucket: TRIGGERS_BUCKET.into(),
            description: "Squall triggers: subject and key-value bindings".into(),
            history: 1,
            num_replicas: cfg.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: TRIGGERS_BUCKET,
            source,
        })?;
    let fleet = js
        .create_or_update_key_value(kv::Config {
            bucket: FLEET_BUCKET.into(),
            description: "Squall fleet supervisors and their worker allocation".into(),
            history: 1,
            // Stale heartbeats of vanished supervisors go away on their own.
            max_age: Duration::from_secs(24 * 3600),
            num_replicas: cfg.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: FLEET_BUCKET,
            source,
        })?;
    let idempotency = js
        .create_or_update_key_value(kv::Config {
            bucket: IDEMPOTENCY_BUCKET.into(),
            description: "Squall idempotency keys → invocation ids".into(),
            history: 1,
            max_age: cfg.duplicate_window,
            num_replicas: cfg.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: IDEMPOTENCY_BUCKET,
            source,
        })?;
    let registry = js
        .create_or_update_key_value(kv::Config {
            bucket: REGISTRY_BUCKET.into(),
            description: "Squall function registry".into(),
            history: 5,
            num_replicas: cfg.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: REGISTRY_BUCKET,
            source,
        })?;
    let state = js
        .create_or_update_key_value(state_bucket_config(cfg))
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: STATE_BUCKET,
            source,
        })?;
    let cancels = js
        .create_or_update_key_value(cancels_bucket_config(cfg))
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: CANCELS_BUCKET,
            source,
        })?;
    let keys = js
        .create_or_update_key_value(kv::Config {
            bucket: KEYS_BUCKET.into(),
            description: "Squall API keys (hashes only)".into(),
            history: 1,
            num_replicas: cfg.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: KEYS_BUCKET,
            source,
        })?;
    let artifacts = match js.get_object_store(ARTIFACT_BUCKET).await {
        Ok(store) => {
            // The store's settings are fixed at creation; its stream's replicas can grow.
            let name = format!("OBJ_{ARTIFACT_BUCKET}");
            if let Ok(stream) = js.get_stream(&name).await {
                raise_replicas(&js, stream, cfg.replicas, ARTIFACT_BUCKET).await?;
            }
            store
        }
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: ARTIFACT_BUCKET.into(),
                description: Some("Squall function artifacts by content hash".into()),
                num_replicas: cfg.replicas,
                ..Default::default()
            })
            .await
            .map_err(|source| TopologyError::ObjectStore {
                name: ARTIFACT_BUCKET,
                source,
            })?,
    };
    Ok(Topology {
        jetstream: js,
        jobs,
        results,
        dlq,
        registry,
        artifacts,
        advisories,
        idempotency,
        schedules,
        events,
        triggers,
        fleet,
        state,
        cancels,
        keys: Some(keys),
    })
}

/// Opens the topology that a dispatcher created, without creating or changing anything.
///
/// Workers use this: the dispatcher owns the definitions, so a worker never races it with a
/// different configuration.
pub async fn open_topology(client: async_nats::Client) -> Result<Topology, TopologyError> {
    let js = jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(client);
    let get = |name: &'static str| {
        let js = js.clone();
        async move {
            js.get_stream(name)
                .await
                .map_err(|source| TopologyError::GetStream { name, source })
        }
    };
    let open_kv = |name: &'static str| {
        let js = js.clone();
        async move {
            js.get_key_value(name)
                .await
                .map_err(|source| TopologyError::OpenKeyValue { name, source })
        }
    };
    // Every lookup at once: a worker starting from zero waits for one round trip, not eleven.
    let streams = futures::future::try_join3(
        futures::future::try_join3(get(JOBS_STREAM), get(RESULTS_STREAM), get(DLQ_STREAM)),
        futures::future::try_join3(
            get(ADVISORY_STREAM),
            get(SCHEDULES_STREAM),
            get(EVENTS_STREAM),
        ),
        futures::future::try_join(
            futures::future::try_join5(
                open_kv(TRIGGERS_BUCKET),
                open_kv(FLEET_BUCKET),
                open_kv(IDEMPOTENCY_BUCKET),
                open_kv(REGISTRY_BUCKET),
                open_kv(STATE_BUCKET),
            ),
            open_kv(CANCELS_BUCKET),
        ),
    );
    let artifacts = async {
        js.get_object_store(ARTIFACT_BUCKET)
            .await
            .map_err(|source| TopologyError::OpenObjectStore {
                name: ARTIFACT_BUCKET,
                source,
            })
    };
    let (
        (
            (jobs, results, dlq),
            (advisories, schedules, events),
            ((triggers, fleet, idempotency, registry, state), cancels),
        ),
        artifacts,
    ) = futures::future::try_join(streams, artifacts).await?;
    Ok(Topology {
        jetstream: js,
        jobs,
        results,
        dlq,
        registry,
        artifacts,
        advisories,
        idempotency,
        schedules,
        events,
        triggers,
        fleet,
        state,
        cancels,
        keys: None,
    })
}

/// How long the marker of an expired state key stays, telling watchers it went away.
const STATE_MARKER_TTL: Duration = Duration::from_secs(60);

/// The functions' state bucket: one value per key, per-key TTLs (`Nats-TTL`) with a delete
/// marker when a key expires, so that every worker's cache hears of it.
pub fn state_bucket_config(cfg: &TopologyConfig) -> kv::Config {
    kv::Config {
        bucket: STATE_BUCKET.into(),
        description: "Squall functions' own state, one namespace per function".into(),
        history: 1,
        // The value plus its key and headers.
        max_value_size: (STATE_MAX_VALUE + 4096) as i32,
        limit_markers: Some(STATE_MARKER_TTL),
        // A key-value bucket discards new writes when full: a function's `kv_put` fails
        // (the host service reports the broker's refusal) and nothing stored is lost.
        max_bytes: cfg.state_max_bytes,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// The cancellation bucket: one key per cancelled invocation id, kept as long as results are
/// (a job cancelled while queued may wait that long before a worker pulls and drops it).
pub fn cancels_bucket_config(cfg: &TopologyConfig) -> kv::Config {
    kv::Config {
        bucket: CANCELS_BUCKET.into(),
        description: "Squall cancellation requests, by invocation id".into(),
        history: 1,
        max_age: cfg.results_max_age,
        max_value_size: 1024,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// The durable pull consumer definition for a function.
pub fn function_consumer_config(
    function: &str,
    spec: &FunctionSpec,
    cfg: &TopologyConfig,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(consumer_name(function)),
        description: Some(format!("Squall jobs of function {function}")),
        filter_subject: jobs_subject(function),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        max_deliver: i64::from(spec.max_attempts),
        // Fleet-wide cap; each worker also caps itself at `concurrency`.
        max_ack_pending: spec.max_concurrency.map_or(-1, i64::from),
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// The payload bucket of `function` (claim checks, `crate::payloads`): kept as long as a dead
/// letter can be replayed (and at least as long as results), replicated like the rest, with no
/// byte limit of its own (JetStream would reserve one per function in the server's store); the
/// server's `max_file_store` bounds it.
pub fn payload_store_config(cfg: &TopologyConfig, function: &str) -> object_store::Config {
    object_store::Config {
        bucket: crate::payloads::payload_bucket(function),
        description: Some(format!(
            "Squall inputs and outputs of function {function} above the inline limit"
        )),
        max_age: cfg.dlq_max_age.max(cfg.results_max_age),
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// Creates `function`'s payload bucket unless it exists (a deploy does, and a large input of a
/// function deployed before payload buckets existed).
pub async fn ensure_payload_store(
    js: &jetstream::Context,
    cfg: &TopologyConfig,
    function: &str,
) -> Result<object_store::ObjectStore, TopologyError> {
    if let Ok(store) = js
        .get_object_store(crate::payloads::payload_bucket(function))
        .await
    {
        // The store's settings are fixed at creation; its stream's replicas can grow.
        if let Ok(stream) = js
            .get_stream(crate::payloads::payload_stream(function))
            .await
        {
            raise_replicas(js, stream, cfg.replicas, "a payload bucket").await?;
        }
        return Ok(store);
    }
    js.create_object_store(payload_store_config(cfg, function))
        .await
        .map_err(|source| TopologyError::PayloadStore {
            function: function.to_string(),
            source,
        })
}

/// Opens `function`'s payload bucket, which a dispatcher created.
pub async fn open_payload_store(
    js: &jetstream::Context,
    function: &str,
) -> Result<object_store::ObjectStore, TopologyError> {
    js.get_object_store(crate::payloads::payload_bucket(function))
        .await
        .map_err(|source| TopologyError::OpenPayloadStore {
            function: function.to_string(),
            source,
        })
}

/// Deletes the durable consumer that serves `function`'s jobs (when the function is deleted).
pub async fn delete_function_consumer(
    jobs: &stream::Stream,
    function: &str,
) -> Result<(), async_nats::jetstream::stream::ConsumerError> {
    jobs.delete_consumer(&consumer_name(function))
        .await
        .map(|_| ())
}

/// Creates or updates the durable pull consumer that serves `function`'s jobs.
pub async fn ensure_function_consumer(
    jobs: &stream::Stream,
    function: &str,
    spec: &FunctionSpec,
    cfg: &TopologyConfig,
) -> Result<consumer::PullConsumer, TopologyError> {
    jobs.create_consumer(function_consumer_config(function, spec, cfg))
        .await
        .map_err(|source| TopologyError::Consumer {
            name: consumer_name(function),
            source,
        })
}

/// How long a dispatcher-side consumer (the dead-letter mover, cron ticks, triggers) may hold a
/// message before JetStream hands it to another dispatcher: longer than a job publish may take.
pub const DISPATCH_ACK_WAIT: Duration = Duration::from_secs(30);

/// The dead-letter mover's durable consumer on `SQUALL_ADVISORIES`, shared by every dispatcher
/// (the stream is a work queue, so each advisory is handled by one of them).
pub fn dlq_mover_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(DLQ_MOVER.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: DISPATCH_ACK_WAIT,
        ..Default::default()
    }
}

/// Opens the dead-letter mover's consumer, creating it when it does not exist.
pub async fn dlq_mover_consumer(
    advisories: &stream::Stream,
) -> Result<consumer::PullConsumer, TopologyError> {
    open_consumer(advisories, DLQ_MOVER, dlq_mover_consumer_config()).await
}

/// The durable consumer, shared by every dispatcher, that turns each cron tick (`cron.<name>`
/// in SCHEDULES) into one invocation; ticks fired before it existed are not run.
pub fn cron_dispatch_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CRON_DISPATCH.into()),
        description: Some("Squall: cron ticks → invocations".into()),
        filter_subject: "cron.*".into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: DISPATCH_ACK_WAIT,
        deliver_policy: consumer::DeliverPolicy::New,
        ..Default::default()
    }
}

/// Opens the cron tick consumer on SCHEDULES, creating it when it does not exist.
pub async fn cron_dispatch_consumer(
    schedules: &stream::Stream,
) -> Result<consumer::PullConsumer, TopologyError> {
    open_consumer(schedules, CRON_DISPATCH, cron_dispatch_consumer_config()).await
}

/// The durable consumer, shared by every dispatcher, that carries trigger `record`'s events:
/// on EVENTS for a subject trigger, on the bucket's own stream for a key-value trigger.
pub fn trigger_consumer_config(record: &TriggerRecord) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(trigger_consumer_name(&record.name)),
        description: Some(format!(
            "Squall trigger {} → function {}",
            record.name, record.function
        )),
        filter_subject: record.filter_subject(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: DISPATCH_ACK_WAIT,
        deliver_policy: match record.source {
            // Only changes made after the binding.
            TriggerSource::Kv { .. } => consumer::DeliverPolicy::New,
            // The subject was just added to EVENTS: whatever it holds came after the binding.
            TriggerSource::Subject { .. } => consumer::DeliverPolicy::All,
        },
        ..Default::default()
    }
}

/// Opens trigger `record`'s consumer on `stream`, creating it when it does not exist.
pub async fn trigger_consumer(
    stream: &stream::Stream,
    record: &TriggerRecord,
) -> Result<consumer::PullConsumer, TopologyError> {
    let name = trigger_consumer_name(&record.name);
    open_consumer(stream, &name, trigger_consumer_config(record)).await
}

/// Gives trigger `record` a fresh consumer on `stream`: a changed binding must not inherit the
/// old one's position or filter.
pub async fn replace_trigger_consumer(
    stream: &stream::Stream,
    record: &TriggerRecord,
) -> Result<consumer::PullConsumer, TopologyError> {
    delete_trigger_consumer(stream, &record.name).await;
    stream
        .create_consumer(trigger_consumer_config(record))
        .await
        .map_err(|source| TopologyError::Consumer {
            name: trigger_consumer_name(&record.name),
            source,
        })
}

/// Deletes trigger `name`'s consumer from `stream`, if it has one (best effort: a consumer that
/// is already gone, or cannot be reached now, is left to the next change).
pub async fn delete_trigger_consumer(stream: &stream::Stream, name: &str) {
    let _ = stream.delete_consumer(&trigger_consumer_name(name)).await;
}

async fn open_consumer(
    stream: &stream::Stream,
    name: &str,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, TopologyError> {
    stream
        .get_or_create_consumer(name, config)
        .await
        .map_err(|source| TopologyError::OpenConsumer {
            name: name.to_string(),
            source,
        })
}

/// The subjects EVENTS captures: its placeholder and every subject trigger's pattern, sorted,
/// each once.
pub fn events_subjects(patterns: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut subjects = vec![EVENTS_PLACEHOLDER_SUBJECT.to_string()];
    subjects.extend(patterns);
    subjects.sort();
    subjects.dedup();
    subjects
}

/// Why EVENTS' subjects could not be set.
#[derive(Debug, thiserror::Error)]
pub enum EventsSubjectsError {
    #[error("cannot read the EVENTS stream: {0}")]
    Read(#[source] jetstream::stream::InfoError),
    /// The broker refused the new subjects, most often because another stream captures one.
    #[error("the broker refused the subjects: {0}")]
    Refused(#[source] jetstream::context::UpdateStreamError),
}

/// Sets EVENTS' subjects to the placeholder plus `patterns` (the subject triggers' patterns),
/// leaving every other setting of the stream as it is. Does nothing when they are already set.
pub async fn set_events_subjects(
    js: &jetstream::Context,
    events: &stream::Stream,
    patterns: impl IntoIterator<Item = String>,
) -> Result<(), EventsSubjectsError> {
    let mut events = events.clone();
    let mut config = events
        .info()
        .await
        .map_err(EventsSubjectsError::Read)?
        .config
        .clone();
    let subjects = events_subjects(patterns);
    if config.subjects == subjects {
        return Ok(());
    }
    config.subjects = subjects;
    js.update_stream(config)
        .await
        .map(|_| ())
        .map_err(EventsSubjectsError::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(source: TriggerSource) -> TriggerRecord {
        TriggerRecord {
            name: "orders".into(),
            function: "hello".into(),
            source,
            created_at_ms: 1,
        }
    }

    #[test]
    fn dispatcher_consumers_keep_their_durable_names_and_filters() {
        let mover = dlq_mover_consumer_config();
        assert_eq!(mover.durable_name.as_deref(), Some("dlq-mover"));
        assert_eq!(mover.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(mover.ack_wait, Duration::from_secs(30));
        // Replicas 0: the consumer has as many as its stream.
        assert_eq!(mover.num_replicas, 0);

        let cron = cron_dispatch_consumer_config();
        assert_eq!(cron.durable_name.as_deref(), Some("cron-dispatch"));
        assert_eq!(cron.filter_subject, "cron.*");
        assert_eq!(cron.deliver_policy, consumer::DeliverPolicy::New);
    }

    #[test]
    fn a_subject_trigger_reads_all_of_its_subject_and_a_kv_trigger_only_new_changes() {
        let subject = trigger_consumer_config(&trigger(TriggerSource::Subject {
            subject: "orders.*".into(),
        }));
        assert_eq!(subject.durable_name.as_deref(), Some("trigger-orders"));
        assert_eq!(subject.filter_subject, "orders.*");
        assert_eq!(subject.deliver_policy, consumer::DeliverPolicy::All);

        let kv = trigger_consumer_config(&trigger(TriggerSource::Kv {
            bucket: "config".into(),
            key: "app.>".into(),
        }));
        assert_eq!(kv.filter_subject, "$KV.config.app.>");
        assert_eq!(kv.deliver_policy, consumer::DeliverPolicy::New);
    }

    #[test]
    fn the_backlog_limit_never_drops_queued_jobs() {
        assert_eq!(backlog_limit(100, 0), 100);
        assert_eq!(backlog_limit(100, 100), 100);
        assert_eq!(backlog_limit(100, 250), 250);
        assert_eq!(backlog_limit(-1, 250), -1);
    }

    #[test]
    fn events_keeps_its_placeholder_and_each_pattern_once() {
        assert_eq!(events_subjects([]), [EVENTS_PLACEHOLDER_SUBJECT]);
        assert_eq!(
            events_subjects(["orders.*".to_string(), "a.b".into(), "orders.*".into()]),
            ["a.b", "orders.*", EVENTS_PLACEHOLDER_SUBJECT]
        );
    }
}

/// What destinations and callbacks need besides the core topology: created by the
/// dispatchers only (`ensure_destination_topology`).
#[derive(Clone)]
pub struct DestinationTopology {
    /// Each invocation's destination outcomes and its call's callback URL, by invocation id.
    pub deliveries: kv::Store,
    /// Functions with recent callbacks (the key is the function name).
    pub callbacks: kv::Store,
    /// Destination deliveries that finally failed.
    pub dead_letters: stream::Stream,
}

/// The destination dead letters' stream: `dlq-destinations.<fn>.<id>.<target>`, kept as long
/// as the DLQ keeps its letters.
pub fn destination_dlq_stream_config(cfg: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: DESTINATION_DLQ_STREAM.to_string(),
        description: Some("Squall destination deliveries that finally failed".into()),
        subjects: vec!["dlq-destinations.*.*.*".into()],
        retention: stream::RetentionPolicy::Limits,
        // When full, the oldest letters go first, as in DLQ.
        discard: stream::DiscardPolicy::Old,
        max_age: cfg.dlq_max_age,
        max_bytes: cfg.destination_dlq_max_bytes,
        max_message_size: cfg.max_message_size,
        num_replicas: cfg.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates or updates the deliveries and callbacks buckets (kept as long as RESULTS keeps
/// results) and the destination dead letters' stream.
pub async fn ensure_destination_topology(
    js: &jetstream::Context,
    cfg: &TopologyConfig,
) -> Result<DestinationTopology, TopologyError> {
    let bucket = |bucket: &'static str, description: &str| kv::Config {
        bucket: bucket.into(),
        description: description.into(),
        history: 1,
        max_age: cfg.results_max_age,
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    let deliveries = js
        .create_or_update_key_value(bucket(
            DELIVERIES_BUCKET,
            "Squall destination outcomes and callback URLs by invocation",
        ))
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: DELIVERIES_BUCKET,
            source,
        })?;
    let callbacks = js
        .create_or_update_key_value(bucket(
            CALLBACKS_BUCKET,
            "Squall functions with recent callbacks",
        ))
        .await
        .map_err(|source| TopologyError::KeyValue {
            name: CALLBACKS_BUCKET,
            source,
        })?;
    let dead_letters = ensure_stream(
        js,
        destination_dlq_stream_config(cfg),
        DESTINATION_DLQ_STREAM,
    )
    .await?;
    Ok(DestinationTopology {
        deliveries,
        callbacks,
        dead_letters,
    })
}

/// How long a dispatcher may hold a terminal result while it delivers its event before
/// JetStream hands it to another dispatcher (deliveries send progress acks meanwhile).
pub const DESTINATIONS_ACK_WAIT: Duration = Duration::from_secs(30);

/// The destinations consumer's filter: one subject per function that needs it (sorted, each
/// once), or the placeholder when none does.
pub fn destinations_filter(functions: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut filters: Vec<String> = functions
        .into_iter()
        .map(|f| crate::names::results_filter(&f))
        .collect();
    filters.sort();
    filters.dedup();
    if filters.is_empty() {
        filters.push(DESTINATIONS_PLACEHOLDER_FILTER.to_string());
    }
    filters
}

/// The durable consumer on RESULTS shared by the dispatchers that turns terminal results into
/// destination events. It reads only the results of functions with destinations or recent
/// callbacks (`filters`), from the moment it exists.
pub fn destinations_consumer_config(filters: Vec<String>) -> consumer::pull::Config {
    let (filter_subject, filter_subjects) = match filters.len() {
        1 => (filters[0].clone(), Vec::new()),
        _ => (String::new(), filters),
    };
    consumer::pull::Config {
        durable_name: Some(DESTINATIONS_CONSUMER.into()),
        description: Some("Squall: terminal results → destinations and callbacks".into()),
        filter_subject,
        filter_subjects,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: DESTINATIONS_ACK_WAIT,
        deliver_policy: consumer::DeliverPolicy::New,
        max_ack_pending: 1024,
        ..Default::default()
    }
}

/// Creates the destinations consumer or changes its filter to `filters`; its position stays.
pub async fn set_destinations_filter(
    results: &stream::Stream,
    filters: Vec<String>,
) -> Result<consumer::PullConsumer, TopologyError> {
    results
        .create_consumer(destinations_consumer_config(filters))
        .await
        .map_err(|source| TopologyError::Consumer {
            name: DESTINATIONS_CONSUMER.to_string(),
            source,
        })
}

/// The destinations consumer's current filter, when it exists.
pub async fn destinations_filter_now(results: &stream::Stream) -> Option<Vec<String>> {
    let mut consumer: consumer::PullConsumer =
        results.get_consumer(DESTINATIONS_CONSUMER).await.ok()?;
    let info = consumer.info().await.ok()?;
    let config = &info.config;
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    filters.sort();
    Some(filters)
}

/// Opens the destinations consumer (with the placeholder filter when it does not exist yet).
pub async fn destinations_consumer(
    results: &stream::Stream,
) -> Result<consumer::PullConsumer, TopologyError> {
    open_consumer(
        results,
        DESTINATIONS_CONSUMER,
        destinations_consumer_config(destinations_filter(Vec::new())),
    )
    .await
}
