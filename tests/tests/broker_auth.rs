//! The `auth` broker profile: each role logs in as its own user and can do its job, nothing more.

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, Event, ServerError};
use futures::StreamExt;
use squall_api::invocations::{Accepted, Invocation};
use squall_api::operations::{CreatedKey, DeadLetter, Fleet};
use squall_api::queries::{InvocationPage, UsageReport};
use squall_api::{ErrorBody, InvocationStatus};
use squall_broker::names::{
    artifact_key, consumer_name, ARTIFACT_BUCKET, FLEET_BUCKET, JOBS_STREAM, REGISTRY_BUCKET,
    RESULTS_STREAM,
};
use squall_broker::record::FunctionRecord;
use squall_tests::{
    assert_login_refused, built, eventually, AuthUser, Cluster, ClusterOptions, Text, AUTH_CLIENT,
    AUTH_DISPATCHER, AUTH_WORKER,
};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The dispatchers' admin API key where a test configures one.
const ADMIN_KEY: &str = "admin-key-for-auth-tests-0123456789";
/// How long a request the server drops is waited for.
const REFUSED_TIMEOUT: Duration = Duration::from_millis(1500);

/// A plain async-nats connection logged in as one user, with the errors the server sent it.
struct Login {
    client: async_nats::Client,
    /// For requests that must succeed.
    js: jetstream::Context,
    /// For requests the server is expected to drop: they fail after `REFUSED_TIMEOUT`.
    js_refused: jetstream::Context,
    errors: mpsc::UnboundedReceiver<ServerError>,
}

fn options(user: &AuthUser, password: &str) -> ConnectOptions {
    ConnectOptions::new()
        .user_and_password(user.user.into(), password.into())
        .custom_inbox_prefix(user.inbox)
}

async fn login(cluster: &Cluster, user: &AuthUser) -> Login {
    let (tx, errors) = mpsc::unbounded_channel();
    let client = options(user, user.password)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(error) = event {
                    let _ = tx.send(error);
                }
            }
        })
        .connect(&cluster.nats.url)
        .await
        .unwrap_or_else(|e| panic!("{} cannot log in: {e}", user.user));
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    let js_refused = jetstream::ContextBuilder::new()
        .timeout(REFUSED_TIMEOUT)
        .build(client.clone());
    Login {
        client,
        js,
        js_refused,
        errors,
    }
}

impl Login {
    /// Waits for the server's permissions violation for `action` ("Publish" or
    /// "Subscription") on `subject` (a prefix when it ends with `*`), which must be the next
    /// error this connection got.
    async fn refused(&mut self, action: &str, subject: &str) {
        let error = tokio::time::timeout(Duration::from_secs(5), self.errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no permissions violation for {action} to {subject}"))
            .expect("event channel open");
        let ServerError::Other(message) = &error else {
            panic!("expected a permissions violation for {subject}, got {error:?}");
        };
        let expected = format!("Permissions Violation for {action} to \"{subject}");
        match expected.strip_suffix('*') {
            Some(prefix) => assert!(message.starts_with(prefix), "{message}"),
            None => assert_eq!(message, &format!("{expected}\""), "{message}"),
        }
    }

    /// Checks that the server sent this connection no error (after a round trip).
    async fn no_errors(&mut self) {
        self.client.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(error) = self.errors.try_recv() {
            panic!("unexpected server error: {error:?}");
        }
    }
}

/// Permission violations the server logged (it logs every refused publish and subscription).
fn violations(cluster: &Cluster) -> Vec<String> {
    cluster
        .nats
        .process
        .output()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_string)
        .collect()
}

fn auth_cluster(workers: usize) -> ClusterOptions {
    ClusterOptions {
        workers,
        ..Default::default()
    }
    .with_auth()
}

async fn invoke_async(cluster: &Cluster, function: &str, body: &str) -> String {
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/{function}/invocations?async=true",
            cluster.url
        ))
        .body(body.to_string())
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 202);
    let (_, body) = squall_tests::decode_response::<Accepted>(response).await;
    body.invocation_id
}

async fn jobs_pending(admin: &Login) -> u64 {
    let mut jobs = admin.js.get_stream(JOBS_STREAM).await.expect("JOBS");
    jobs.info().await.expect("JOBS info").state.messages
}

async fn artifact_messages(admin: &Login) -> u64 {
    let mut stream = admin
        .js
        .get_stream(format!("OBJ_{ARTIFACT_BUCKET}"))
        .await
        .expect("artifact stream");
    stream.info().await.expect("artifact info").state.messages
}

/// The registry entry of `function` as the dispatcher user sees it: revision and value.
async fn registry_entry(admin: &Login, function: &str) -> (u64, Vec<u8>) {
    let registry = admin
        .js
        .get_key_value(REGISTRY_BUCKET)
        .await
        .expect("registry");
    let entry = registry
        .entry(function)
        .await
        .expect("registry entry")
        .expect("function registered");
    (entry.revision, entry.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_and_worker_logged_in_as_their_users_serve_http_and_plain_nats_clients() {
    let cluster = Cluster::start_with(auth_cluster(1)).await;
    cluster.deploy_example("hello", None).await;

    let response = cluster.invoke("hello", "{}").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"greeting": "Hello, world!"}));

    // A plain NATS application logged in as `client` publishes a job with a JetStream
    // acknowledgement and reads its result.
    let mut client = login(&cluster, &AUTH_CLIENT).await;
    let id = "0193a5c2-2222-7000-8000-000000000001";
    let mut results = client
        .client
        .subscribe(format!("results.hello.{id}"))
        .await
        .expect("subscribe");
    client.client.flush().await.expect("flush");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Squall-Invocation-Id", id);
    let ack = client
        .js
        .publish_with_headers("jobs.hello", headers, r#"{"name": "Client"}"#.into())
        .await
        .expect("publish")
        .await
        .expect("the JOBS stream acknowledges the client's job");
    assert_eq!(ack.stream, JOBS_STREAM);
    let message = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result within 20 s")
        .expect("subscription open");
    let headers = message.headers.clone().expect("result headers");
    assert_eq!(headers.get("Squall-Status").unwrap().as_str(), "succeeded");
    assert_eq!(&message.payload[..], br#"{"greeting":"Hello, Client!"}"#);
    client.no_errors().await;

    // Nothing any process did was refused: the roles' permissions cover what Squall needs.
    let view = cluster.wait_terminal(id, Duration::from_secs(5)).await;
    assert_eq!(view.status, InvocationStatus::Succeeded);
    assert_eq!(violations(&cluster), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_user_cannot_write_the_registry_or_artifacts_change_streams_or_publish_jobs() {
    // No worker process: the job queued below stays in JOBS.
    let cluster = Cluster::start_with(auth_cluster(0)).await;
    cluster.deploy_example("hello", None).await;
    invoke_async(&cluster, "hello", "{}").await;
    let admin = login(&cluster, &AUTH_DISPATCHER).await;
    let mut worker = login(&cluster, &AUTH_WORKER).await;
    assert_eq!(jobs_pending(&admin).await, 1);
    let (revision, value) = registry_entry(&admin, "hello").await;
    let record = FunctionRecord::decode(&value).expect("registry record");
    let key = artifact_key(&record.sha256);
    let artifacts_before = artifact_messages(&admin).await;

    // What a worker needs works: it reads the registry and the artifact.
    let registry = worker
        .js
        .get_key_value(REGISTRY_BUCKET)
        .await
        .expect("worker opens the registry");
    let seen = registry
        .get("hello")
        .await
        .expect("worker reads the registry");
    assert_eq!(seen.as_deref(), Some(&value[..]));
    let artifacts = worker
        .js
        .get_object_store(ARTIFACT_BUCKET)
        .await
        .expect("worker opens the artifacts");
    let mut object = artifacts
        .get(&key)
        .await
        .expect("worker reads the artifact");
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .expect("artifact bytes");
    assert!(bytes == std::fs::read(built().library("hello")).expect("library"));
    worker.no_errors().await;

    // Registry writes are refused and the record is untouched.
    let registry = worker
        .js_refused
        .get_key_value(REGISTRY_BUCKET)
        .await
        .expect("worker opens the registry");
    let put = registry.put("hello", "forged".into()).await;
    assert!(put.is_err(), "registry put: {put:?}");
    worker
        .refused("Publish", &format!("$KV.{REGISTRY_BUCKET}.hello"))
        .await;
    let delete = registry.delete("hello").await;
    assert!(delete.is_err(), "registry delete: {delete:?}");
    worker
        .refused("Publish", &format!("$KV.{REGISTRY_BUCKET}.hello"))
        .await;
    assert_eq!(
        registry_entry(&admin, "hello").await,
        (revision, value.clone())
    );

    // Artifact writes and deletes are refused; the store holds what it held.
    let refused_store = worker
        .js_refused
        .get_object_store(ARTIFACT_BUCKET)
        .await
        .expect("worker opens the artifacts");
    let put = refused_store
        .put("forged", &mut &b"not a library"[..])
        .await;
    assert!(put.is_err(), "object put: {put:?}");
    worker
        .refused("Publish", &format!("$O.{ARTIFACT_BUCKET}.C.*"))
        .await;
    let delete = refused_store.delete(&key).await;
    assert!(delete.is_err(), "object delete: {delete:?}");
    worker
        .refused("Publish", &format!("$O.{ARTIFACT_BUCKET}.M.*"))
        .await;
    assert_eq!(artifact_messages(&admin).await, artifacts_before);
    let admin_store = admin
        .js
        .get_object_store(ARTIFACT_BUCKET)
        .await
        .expect("artifacts");
    assert!(admin_store.info("forged").await.is_err());
    assert!(!admin_store.info(&key).await.expect("artifact").deleted);

    // Stream and consumer administration is refused.
    let delete = worker.js_refused.delete_stream(JOBS_STREAM).await;
    assert!(delete.is_err(), "delete stream succeeded");
    worker
        .refused("Publish", &format!("$JS.API.STREAM.DELETE.{JOBS_STREAM}"))
        .await;
    let mut jobs = worker
        .js_refused
        .get_stream(JOBS_STREAM)
        .await
        .expect("worker reads JOBS' info");
    let purge = jobs.purge().await;
    assert!(purge.is_err(), "purge: {purge:?}");
    worker
        .refused("Publish", &format!("$JS.API.STREAM.PURGE.{JOBS_STREAM}"))
        .await;
    let mut config = jobs.info().await.expect("JOBS info").config.clone();
    config.max_age = Duration::from_secs(1);
    let update = worker.js_refused.update_stream(config).await;
    assert!(update.is_err(), "update stream: {update:?}");
    worker
        .refused("Publish", &format!("$JS.API.STREAM.UPDATE.{JOBS_STREAM}"))
        .await;
    let create = worker
        .js_refused
        .create_stream(stream::Config {
            name: "FORGED".into(),
            subjects: vec!["forged.>".into()],
            ..Default::default()
        })
        .await;
    assert!(create.is_err(), "create stream: {create:?}");
    worker
        .refused("Publish", "$JS.API.STREAM.CREATE.FORGED")
        .await;
    let delete = jobs.delete_consumer(&consumer_name("hello")).await;
    assert!(delete.is_err(), "delete consumer succeeded");
    worker
        .refused(
            "Publish",
            &format!(
                "$JS.API.CONSUMER.DELETE.{JOBS_STREAM}.{}",
                consumer_name("hello")
            ),
        )
        .await;
    let mut admin_jobs = admin
        .js
        .get_stream(JOBS_STREAM)
        .await
        .expect("JOBS still exists");
    let info = admin_jobs.info().await.expect("JOBS info");
    assert_eq!(info.config.max_age, Duration::ZERO);
    assert_eq!(info.state.messages, 1, "the queued job survived the purge");
    admin_jobs
        .consumer_info(consumer_name("hello"))
        .await
        .expect("fn-hello still exists");
    assert!(admin.js.get_stream("FORGED").await.is_err());

    // Publishing a job is refused: no acknowledgement, and JOBS holds only the queued job.
    let publish = async {
        worker
            .js_refused
            .publish("jobs.hello", "{}".into())
            .await?
            .await
    }
    .await;
    assert!(publish.is_err(), "job publish: {publish:?}");
    worker.refused("Publish", "jobs.hello").await;
    assert_eq!(jobs_pending(&admin).await, 1);
    // The server attributes the refusals to the worker user.
    let logged = violations(&cluster);
    assert!(
        logged
            .iter()
            .any(|l| l.contains("\"$G/user:worker\" - Publish Violation - Subject \"jobs.hello\"")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_user_cannot_touch_the_registry_artifacts_streams_or_results() {
    let cluster = Cluster::start_with(auth_cluster(0)).await;
    cluster.deploy_example("hello", None).await;
    let admin = login(&cluster, &AUTH_DISPATCHER).await;
    let mut client = login(&cluster, &AUTH_CLIENT).await;
    let (revision, value) = registry_entry(&admin, "hello").await;
    let record = FunctionRecord::decode(&value).expect("registry record");
    let key = artifact_key(&record.sha256);

    // What a client needs works: its job is acknowledged, and an event on a subject Squall does
    // not reserve goes through.
    client
        .js
        .publish("jobs.hello", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("the JOBS stream acknowledges the client's job");
    assert_eq!(jobs_pending(&admin).await, 1);
    client
        .client
        .publish("orders.created", "{}".into())
        .await
        .expect("publish event");
    client.no_errors().await;

    // The registry: no bucket handle (the JetStream API is closed), no raw write.
    let open = client.js_refused.get_key_value(REGISTRY_BUCKET).await;
    assert!(open.is_err(), "open registry: {:?}", open.err());
    client
        .refused(
            "Publish",
            &format!("$JS.API.STREAM.INFO.KV_{REGISTRY_BUCKET}"),
        )
        .await;
    let put = async {
        client
            .js_refused
            .publish(format!("$KV.{REGISTRY_BUCKET}.hello"), "forged".into())
            .await?
            .await
    }
    .await;
    assert!(put.is_err(), "registry write: {put:?}");
    client
        .refused("Publish", &format!("$KV.{REGISTRY_BUCKET}.hello"))
        .await;
    assert_eq!(registry_entry(&admin, "hello").await, (revision, value));

    // Dead letters and destination dead letters: a forged letter would be replayed with the
    // dispatcher's rights, so a client may publish neither.
    for subject in ["dlq.hello.forged", "dlq-destinations.hello.forged.x"] {
        client
            .client
            .publish(subject, "forged".into())
            .await
            .expect("publish is sent");
        client.client.flush().await.expect("flush");
        client.refused("Publish", subject).await;
    }

    // The artifacts: no store handle, no direct get of an object's metadata, and no
    // eavesdropping on the replies others get when they read it.
    let open = client.js_refused.get_object_store(ARTIFACT_BUCKET).await;
    assert!(open.is_err(), "open artifacts: {:?}", open.err());
    client
        .refused(
            "Publish",
            &format!("$JS.API.STREAM.INFO.OBJ_{ARTIFACT_BUCKET}"),
        )
        .await;
    // The metadata subject of the deployed artifact, as stored (names are base64-encoded).
    let artifact_stream = admin
        .js
        .get_stream(format!("OBJ_{ARTIFACT_BUCKET}"))
        .await
        .expect("artifact stream");
    let mut subjects = artifact_stream
        .info_with_subjects(format!("$O.{ARTIFACT_BUCKET}.M.>"))
        .await
        .expect("artifact subjects");
    let (meta, _) = subjects
        .next()
        .await
        .expect("one artifact")
        .expect("subject");
    let direct = format!("$JS.API.DIRECT.GET.OBJ_{ARTIFACT_BUCKET}.{meta}");
    // The dispatcher gets the object's info with this request; the client does not.
    let info = admin
        .client
        .request(direct.clone(), "".into())
        .await
        .expect("the dispatcher's direct get");
    assert!(info.status.is_none(), "{info:?}");
    assert!(String::from_utf8_lossy(&info.payload).contains(&key));
    let get = client
        .client
        .send_request(
            direct.clone(),
            async_nats::Request::new().timeout(Some(REFUSED_TIMEOUT)),
        )
        .await;
    assert!(get.is_err(), "direct get: {:?}", get.map(|m| m.payload));
    client.refused("Publish", &direct).await;
    let mut snoop = client
        .client
        .subscribe("_INBOX.>")
        .await
        .expect("subscribe");
    client.refused("Subscription", "_INBOX.>").await;
    let mut object = admin
        .js
        .get_object_store(ARTIFACT_BUCKET)
        .await
        .expect("artifacts")
        .get(&key)
        .await
        .expect("the dispatcher reads the artifact");
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .expect("artifact bytes");
    assert_eq!(bytes.len() as u64, record.artifact_size);
    let snooped = tokio::time::timeout(Duration::from_secs(1), snoop.next()).await;
    assert!(
        snooped.is_err(),
        "the client saw another connection's reply"
    );

    // Stream administration is refused.
    let delete = client.js_refused.delete_stream(JOBS_STREAM).await;
    assert!(delete.is_err(), "delete stream succeeded");
    client
        .refused("Publish", &format!("$JS.API.STREAM.DELETE.{JOBS_STREAM}"))
        .await;
    assert_eq!(
        jobs_pending(&admin).await,
        1,
        "JOBS and its job still exist"
    );

    // Publishing a result is refused: RESULTS holds nothing on that subject.
    let id = "0193a5c2-3333-7000-8000-000000000001";
    let subject = format!("results.hello.{id}");
    let publish = async {
        client
            .js_refused
            .publish(subject.clone(), "forged".into())
            .await?
            .await
    }
    .await;
    assert!(publish.is_err(), "result publish: {publish:?}");
    client.refused("Publish", &subject).await;
    let results = admin.js.get_stream(RESULTS_STREAM).await.expect("RESULTS");
    let stored = results.direct_get_last_for_subject(&subject).await;
    assert!(stored.is_err(), "a forged result was stored");
    let (status, view) = cluster
        .get_as::<ErrorBody>(&format!("/v1/invocations/{id}"))
        .await;
    assert_eq!(status, 404, "{view:?}");
    let logged = violations(&cluster);
    assert!(
        logged
            .iter()
            .any(|l| l
                .contains("\"$G/user:client\" - Subscription Violation - Subject \"_INBOX.>\"")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_user_cannot_delete_streams_or_write_the_fleet_bucket() {
    let cluster = Cluster::start_with(auth_cluster(0)).await;
    let mut admin = login(&cluster, &AUTH_DISPATCHER).await;
    // It administers JetStream, yet deletes no stream, not even one it created.
    admin
        .js
        .create_stream(stream::Config {
            name: "SCRATCH".into(),
            subjects: vec!["scratch.>".into()],
            ..Default::default()
        })
        .await
        .expect("the dispatcher creates a stream");
    admin.no_errors().await;
    for name in ["SCRATCH", JOBS_STREAM] {
        let delete = admin.js_refused.delete_stream(name).await;
        assert!(delete.is_err(), "{name} deleted");
        admin
            .refused("Publish", &format!("$JS.API.STREAM.DELETE.{name}"))
            .await;
        admin
            .js
            .get_stream(name)
            .await
            .expect("the stream still exists");
    }
    // The fleet bucket belongs to the workers; the dispatcher only reads it.
    let fleet = admin
        .js_refused
        .get_key_value(FLEET_BUCKET)
        .await
        .expect("fleet");
    let put = fleet.put("allocation", "{}".into()).await;
    assert!(put.is_err(), "fleet put: {put:?}");
    admin
        .refused("Publish", &format!("$KV.{FLEET_BUCKET}.allocation"))
        .await;
    let entry = admin.js.get_key_value(FLEET_BUCKET).await.expect("fleet");
    assert!(entry.get("allocation").await.expect("fleet get").is_none());
}

/// PUTs JSON to `path`, which must succeed.
async fn put_json(cluster: &Cluster, path: &str, body: serde_json::Value) -> u16 {
    let (status, answer) = cluster.put_json(path, body).await;
    assert!(status < 300, "PUT {path}: {status} {answer}");
    status
}

async fn delete(cluster: &Cluster, path: &str) -> u16 {
    cluster
        .http
        .delete(format!("{}{path}", cluster.url))
        .send()
        .await
        .expect("DELETE")
        .status()
        .as_u16()
}

/// Waits until `function` has a succeeded invocation whose output satisfies `pred`.
async fn wait_output(
    cluster: &Cluster,
    function: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(
        Duration::from_secs(30),
        format_args!("a succeeded invocation of {function} with the expected output"),
        async || {
            let (status, page) = cluster
                .get_as::<InvocationPage>(&format!(
                    "/v1/invocations?function={function}&limit=1000"
                ))
                .await;
            assert_eq!(status, 200, "{page:?}");
            for item in &page.items {
                let id = &item.invocation_id;
                let (_, view) = cluster
                    .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
                    .await;
                // The echo function's output is its own free-form JSON.
                let output = serde_json::from_str(view.output.as_deref().unwrap_or("null"))
                    .unwrap_or(serde_json::Value::Null);
                if view.status == InvocationStatus::Succeeded && pred(&output) {
                    return Ok(output);
                }
            }
            Err(page)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_schedules_retries_dead_letters_and_api_keys_need_nothing_beyond_the_roles() {
    // With an admin key, so the dispatcher keeps API keys in its bucket (the cluster's HTTP
    // client sends the admin key).
    let cluster = Cluster::start_with(
        ClusterOptions {
            workers: 1,
            dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN_KEY.into())],
            ..Default::default()
        }
        .with_auth(),
    )
    .await;
    cluster.deploy_example("echo", None).await;
    cluster
        .deploy_example("fail", Some(serde_json::json!({"max_attempts": 2})))
        .await;

    // A subject trigger fed by the `client` user.
    put_json(
        &cluster,
        "/v1/triggers/orders",
        serde_json::json!({"function": "echo", "subject": "events.orders.>"}),
    )
    .await;
    let mut client = login(&cluster, &AUTH_CLIENT).await;
    client
        .client
        .publish("events.orders.created", "order 1".into())
        .await
        .expect("publish event");
    client.no_errors().await;
    let out = wait_output(&cluster, "echo", |o| {
        o["event"]["subject"] == "events.orders.created"
    })
    .await;
    assert_eq!(out["input"], "order 1");
    assert_eq!(delete(&cluster, "/v1/triggers/orders").await, 204);

    // A schedule fired by the broker, turned into a job by the dispatcher.
    put_json(
        &cluster,
        "/v1/schedules/tick",
        serde_json::json!({"function": "echo", "cron": "* * * * * *", "payload": {"hi": 1}}),
    )
    .await;
    let out = wait_output(&cluster, "echo", |o| o["event"]["source"] == "cron").await;
    assert_eq!(out["event"]["schedule"], "tick");
    assert_eq!(delete(&cluster, "/v1/schedules/tick").await, 204);

    // Retries (nak with delay) and the worker's dead letter.
    let id = invoke_async(&cluster, "fail", r#"{"retry": true}"#).await;
    let view = cluster.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(view.status, InvocationStatus::DeadLettered, "{view:?}");
    assert_eq!(view.attempts, 2, "{view:?}");
    // The worker writes the dead letter right after the terminal result.
    let letter: DeadLetter = eventually(
        Duration::from_secs(20),
        format_args!("the dead letter of {id}"),
        async || match cluster.get_json(&format!("/v1/dlq/{id}")).await {
            (200, letter) => Ok(serde_json::from_value(letter.clone())
                .unwrap_or_else(|e| panic!("dead letter does not decode ({e}): {letter}"))),
            (_, letter) => Err((letter, violations(&cluster))),
        },
    )
    .await;
    assert_eq!(letter.summary.function, "fail", "{letter:?}");
    // The worker read both attempts back from RESULTS.
    assert_eq!(letter.attempt_history.len(), 2, "{letter:?}");
    assert_eq!(delete(&cluster, "/v1/functions/fail").await, 204);

    // An API key is created, used and revoked.
    let response = cluster
        .http
        .post(format!("{}/v1/keys", cluster.url))
        .json(&serde_json::json!({"name": "ci", "scopes": ["invoke"]}))
        .send()
        .await
        .expect("POST /v1/keys");
    let (status, body) = squall_tests::decode_response::<CreatedKey>(response).await;
    assert_eq!(status, 201, "{body:?}");
    let key = body.key;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/functions/echo/invocations", cluster.url))
        .bearer_auth(&key)
        .body("with a key")
        .send()
        .await
        .expect("invoke with the key");
    assert_eq!(response.status(), 200);
    assert_eq!(delete(&cluster, "/v1/keys/ci").await, 204);

    assert_eq!(violations(&cluster), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_wrong_passwords_cannot_connect() {
    let cluster = Cluster::start_with(auth_cluster(0)).await;
    let stranger = AuthUser {
        user: "stranger",
        password: "stranger-password",
        password_env: "UNUSED",
        inbox: "_INBOX_stranger",
    };
    for (user, password) in [
        (&stranger, stranger.password),
        (&AUTH_WORKER, AUTH_DISPATCHER.password),
        (&AUTH_DISPATCHER, "wrong-password"),
        (&AUTH_CLIENT, ""),
    ] {
        assert_login_refused(options(user, password), &cluster.nats.url, user.user).await;
    }
    assert_login_refused(
        async_nats::ConnectOptions::new(),
        &cluster.nats.url,
        "a connection without credentials",
    )
    .await;
    // The right password still works.
    let mut worker = login(&cluster, &AUTH_WORKER).await;
    worker.no_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_supervisor_logged_in_as_worker_scales_a_worker_that_completes_a_job() {
    let cluster = Cluster::start_with(auth_cluster(0)).await;
    cluster.deploy_example("hello", None).await;
    let fleet = cluster.start_fleet(
        "fleet",
        &["--min", "0", "--max", "1", "--interval-ms", "200"],
    );
    // The supervisor is up once it shows in /v1/fleet (it wrote its heartbeat as `worker`).
    eventually(
        Duration::from_secs(20),
        "the supervisor's heartbeat",
        async || {
            let (_, view) = cluster.get_as::<Fleet>("/v1/fleet").await;
            match view.supervisors.len() {
                1 => Ok(()),
                _ => Err((view, Text(fleet.output()))),
            }
        },
    )
    .await;
    assert_eq!(fleet.live_children().len(), 0, "min 0 starts no worker");

    let id = invoke_async(&cluster, "hello", r#"{"name": "Fleet"}"#).await;
    let view = cluster.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(
        view.status,
        InvocationStatus::Succeeded,
        "{view:?}\n{}",
        fleet.output()
    );
    assert_eq!(
        view.output.as_deref(),
        Some(r#"{"greeting":"Hello, Fleet!"}"#)
    );
    assert_eq!(fleet.live_children().len(), 1, "{}", fleet.output());
    assert_eq!(
        violations(&cluster),
        Vec::<String>::new(),
        "{}",
        fleet.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_replies_reach_only_the_waiting_dispatcher_and_the_index_answers_other_dispatchers()
{
    let mut cluster = Cluster::start_with(auth_cluster(1)).await;
    let gateway = cluster
        .add_dispatcher_with(&["--query-index", "false"])
        .await;
    cluster.deploy_example("hello", None).await;

    // Neither the worker nor a plain client may listen where results are sent directly.
    let mut worker = login(&cluster, &AUTH_WORKER).await;
    let _snoop = worker
        .client
        .subscribe("_INBOX_dispatcher.squall-reply.>")
        .await
        .expect("subscribe");
    worker
        .refused("Subscription", "_INBOX_dispatcher.squall-reply.>")
        .await;
    let mut client = login(&cluster, &AUTH_CLIENT).await;
    let _snoop = client
        .client
        .subscribe("_INBOX_dispatcher.squall-reply.>")
        .await
        .expect("subscribe");
    client
        .refused("Subscription", "_INBOX_dispatcher.squall-reply.>")
        .await;
    // Nor may a client forge a reply, or ask the query index itself.
    client
        .client
        .publish("_INBOX_dispatcher.squall-reply.x.y", "forged".into())
        .await
        .expect("publish");
    client
        .refused("Publish", "_INBOX_dispatcher.squall-reply.x.y")
        .await;
    client
        .client
        .publish("squall.index.query", "{}".into())
        .await
        .expect("publish");
    client.refused("Publish", "squall.index.query").await;

    // Through either dispatcher, the sync answer comes at once (a lost reply would take the
    // whole wait, 2 s, before RESULTS is read).
    for url in [cluster.url.clone(), gateway.clone()] {
        let started = Instant::now();
        let response = cluster
            .http
            .post(format!("{url}/v1/functions/hello/invocations?wait=2"))
            .body("{}")
            .send()
            .await
            .expect("invoke");
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    // The gateway without the index asks the index holder over NATS.
    eventually(
        Duration::from_secs(10),
        "the gateway's usage to count both invocations",
        async || {
            let response = cluster
                .http
                .get(format!("{gateway}/v1/usage"))
                .send()
                .await
                .expect("usage");
            let (_, usage) = squall_tests::decode_response::<UsageReport>(response).await;
            (usage.total.invocations == 2).then_some(()).ok_or(usage)
        },
    )
    .await;
    // Only the refusals provoked above were logged (the test's own connections carry no
    // client name): the roles cover everything the Squall processes did.
    let all = violations(&cluster);
    let unexpected: Vec<_> = all
        .iter()
        .filter(|v| !v.contains(":rust\" - \"$G/user:"))
        .collect();
    assert_eq!(unexpected, Vec::<&String>::new());
    assert_eq!(all.len(), 4, "{all:?}");
}
