//! Schedules fired by the broker, subject and key-value triggers fed by plain NATS clients,
//! and fleet-wide max concurrency, against a real cluster (refusals in process).

use axum::body::Body;
use axum::http::Method;
use squall_api::invocations::Invocation;
use squall_api::operations::{Schedule, ScheduleList, Trigger, TriggerKind, TriggerList};
use squall_api::queries::{InvocationPage, InvocationSummary};
use squall_api::{ErrorBody, InvocationStatus};
use squall_tests::in_process::App;
use squall_tests::{built, eventually, Cluster, ClusterOptions};
use std::time::Duration;

async fn delete(cluster: &Cluster, path: &str) -> u16 {
    cluster
        .http
        .delete(format!("{}{path}", cluster.url))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every invocation of `function` in the query index, oldest first, with its full view.
async fn invocations_of(cluster: &Cluster, function: &str) -> Vec<InvocationSummary> {
    let (status, page) = cluster
        .get_as::<InvocationPage>(&format!("/v1/invocations?function={function}&limit=1000"))
        .await;
    assert_eq!(status, 200, "{page:?}");
    let mut items = page.items;
    items.reverse();
    items
}

/// Polls until `function` has `count` succeeded invocations; returns their full views.
async fn wait_succeeded(cluster: &Cluster, function: &str, count: usize) -> Vec<Invocation> {
    let done = eventually(
        Duration::from_secs(30),
        format_args!("{count} succeeded invocations of {function}"),
        async || {
            let items = invocations_of(cluster, function).await;
            let done: Vec<_> = items
                .iter()
                .filter(|i| i.status == InvocationStatus::Succeeded)
                .cloned()
                .collect();
            (done.len() >= count).then_some(done).ok_or(items)
        },
    )
    .await;
    let mut views = Vec::new();
    for item in done {
        let id = &item.invocation_id;
        let (_, view) = cluster
            .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
            .await;
        views.push(view);
    }
    views
}

/// The echo function's output, which is free-form JSON of the function's own.
fn output(view: &Invocation) -> serde_json::Value {
    serde_json::from_str(view.output.as_deref().unwrap_or("null")).unwrap()
}

/// How many ticks the broker stored on `cron.<name>`.
async fn ticks(cluster: &Cluster, name: &str) -> usize {
    let js = async_nats::jetstream::new(cluster.nats_client().await);
    let stream = js.get_stream("SCHEDULES").await.unwrap();
    let subject = format!("cron.{name}");
    match stream.get_last_raw_message_by_subject(&subject).await {
        Err(_) => 0,
        Ok(_) => {
            let mut info = stream.info_with_subjects(subject.as_str()).await.unwrap();
            use futures::StreamExt as _;
            let mut total = 0;
            while let Some(Ok((_, n))) = info.next().await {
                total += n;
            }
            total
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_second_schedule_fires_once_per_tick_with_two_dispatchers() {
    let cluster = Cluster::start_with(ClusterOptions {
        dispatchers: 2,
        ..Default::default()
    })
    .await;
    cluster.deploy_example("echo", None).await;
    let (status, view) = cluster
        .put_as::<Schedule>(
            "/v1/schedules/every-second",
            serde_json::json!({"function": "echo", "cron": "* * * * * *", "payload": {"hi": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{view:?}");
    assert_eq!(view.cron, "* * * * * *");
    assert_eq!(view.timezone, "UTC");
    assert_eq!(view.subject, "cron.every-second");
    assert_eq!(view.next.len(), 5);
    let (_, listed) = cluster.get_as::<ScheduleList>("/v1/schedules").await;
    assert_eq!(listed.schedules[0].name, "every-second");

    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(delete(&cluster, "/v1/schedules/every-second").await, 204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fired = ticks(&cluster, "every-second").await;
    assert!((3..=6).contains(&fired), "{fired} ticks in about 4.5 s");
    // Each tick is exactly one invocation, whichever dispatcher took it.
    let views = wait_succeeded(&cluster, "echo", fired).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        invocations_of(&cluster, "echo").await.len(),
        fired,
        "one invocation per tick"
    );
    for view in &views {
        let out = output(view);
        assert_eq!(out["input"], r#"{"hi":1}"#);
        assert_eq!(out["event"]["source"], "cron");
        assert_eq!(out["event"]["schedule"], "every-second");
    }
    // Deleted: no more ticks.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        ticks(&cluster, "every-second").await,
        fired,
        "ticks stopped"
    );
    let (status, _) = cluster.get_json("/v1/schedules/every-second").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_and_triggers_are_refused_with_precise_errors() {
    // In process: refusals need no worker.
    let app = App::start().await;
    let echo = std::fs::read(built().library("echo")).unwrap();
    assert_eq!(app.deploy("echo", &echo, None).await.status, 201);
    let js = async_nats::jetstream::new(app.state.broker.client.clone());
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: "config".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let answer = app
        .put_json(
            "/v1/triggers/orders",
            &serde_json::json!({"function": "echo", "subject": "events.orders.>"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let cases = [
        (
            "/v1/schedules/s",
            serde_json::json!({"function": "echo", "cron": "61 * * * *"}),
            400,
            "invalid_cron",
        ),
        (
            "/v1/schedules/s",
            serde_json::json!({"function": "echo", "cron": "* * *"}),
            400,
            "invalid_cron",
        ),
        (
            "/v1/schedules/s",
            serde_json::json!({"function": "echo", "cron": "* * * * *", "timezone": "Mars/Base"}),
            400,
            "invalid_timezone",
        ),
        (
            "/v1/schedules/s",
            serde_json::json!({"function": "nope", "cron": "* * * * *"}),
            404,
            "function_not_found",
        ),
        (
            "/v1/schedules/s",
            serde_json::json!({"function": "echo", "cron": "* * * * *", "when": 1}),
            400,
            "invalid_schedule",
        ),
        (
            "/v1/schedules/bad%20name",
            serde_json::json!({"function": "echo", "cron": "* * * * *"}),
            400,
            "invalid_name",
        ),
        (
            "/v1/triggers/all",
            serde_json::json!({"function": "echo", "subject": "events.>"}),
            409,
            "trigger_overlap",
        ),
        (
            "/v1/triggers/mine",
            serde_json::json!({"function": "echo", "subject": "jobs.echo"}),
            400,
            "invalid_subject",
        ),
        (
            "/v1/triggers/t",
            serde_json::json!({"function": "echo", "subject": "a..b"}),
            400,
            "invalid_subject",
        ),
        (
            "/v1/triggers/t",
            serde_json::json!({"function": "nope", "subject": "x.y"}),
            404,
            "function_not_found",
        ),
        (
            "/v1/triggers/t",
            serde_json::json!({"function": "echo", "bucket": "missing"}),
            404,
            "bucket_not_found",
        ),
        (
            "/v1/triggers/t",
            serde_json::json!({"function": "echo", "subject": "x.y", "bucket": "config"}),
            400,
            "invalid_trigger",
        ),
    ];
    for (path, body, code, error) in cases {
        let answer = app.put_json(path, &body).await;
        let status = answer.status;
        let answer = answer.decode::<ErrorBody>();
        assert_eq!(status, code, "{path} {body}: {answer:?}");
        assert_eq!(answer.error.code, error, "{path} {body}: {answer:?}");
    }
    let answer = app
        .put_json(
            "/v1/triggers/all",
            &serde_json::json!({"function": "echo", "subject": "events.>"}),
        )
        .await
        .decode::<ErrorBody>();
    assert!(answer.error.message.contains("orders"), "{answer:?}");
    for path in ["/v1/triggers/nope", "/v1/schedules/nope"] {
        let answer = app.send(Method::DELETE, path, &[], Body::empty()).await;
        assert_eq!(answer.status, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_and_kv_triggers_fire_for_plain_nats_clients_even_with_no_worker_running() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    cluster.deploy_example("echo", None).await;
    let (status, view) = cluster
        .put_as::<Trigger>(
            "/v1/triggers/orders",
            serde_json::json!({"function": "echo", "subject": "events.orders.>"}),
        )
        .await;
    assert_eq!(status, 200, "{view:?}");
    assert_eq!(view.kind, TriggerKind::Subject);
    let client = cluster.nats_client().await;
    let js = async_nats::jetstream::new(client.clone());
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "config".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, view) = cluster
        .put_as::<Trigger>(
            "/v1/triggers/settings",
            serde_json::json!({"function": "echo", "bucket": "config", "key": "app.*"}),
        )
        .await;
    assert_eq!(status, 200, "{view:?}");
    assert_eq!(view.kind, TriggerKind::Kv);

    // A plain core-NATS publish, with a header, while no worker runs.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Tenant", "acme");
    client
        .publish_with_headers("events.orders.created", headers, "order 1".into())
        .await
        .unwrap();
    client
        .publish("events.orders.paid", "order 2".into())
        .await
        .unwrap();
    client
        .publish("events.users.created", "not bound".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    kv.put("app.color", "blue".into()).await.unwrap();
    kv.delete("app.color").await.unwrap();
    kv.put("other.key", "ignored".into()).await.unwrap();
    // The four bound events became four jobs, waiting: nothing ran without a worker.
    let jobs = js.get_stream("JOBS").await.unwrap();
    eventually(
        Duration::from_secs(20),
        "four jobs of echo queued by the triggers",
        async || {
            let info = jobs.consumer_info("fn-echo").await.unwrap();
            match info.num_pending {
                4 => Ok(()),
                pending => Err(format!("{pending} pending")),
            }
        },
    )
    .await;
    assert!(
        invocations_of(&cluster, "echo").await.is_empty(),
        "nothing ran without a worker"
    );

    // A worker arrives: every kept event runs.
    cluster.add_worker();
    let views = wait_succeeded(&cluster, "echo", 4).await;
    // Every event the triggers hold is handled and every job run: no fifth invocation is coming.
    squall_tests::consumers_settled(
        &client,
        &[
            ("EVENTS", "trigger-orders"),
            ("KV_config", "trigger-settings"),
            ("JOBS", "fn-echo"),
        ],
    )
    .await;
    assert_eq!(invocations_of(&cluster, "echo").await.len(), 4);
    let outputs: Vec<serde_json::Value> = views.iter().map(output).collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        outputs
            .iter()
            .find(|o| pred(o))
            .unwrap_or_else(|| panic!("missing in {outputs:#?}"))
            .clone()
    };
    let created = find(&|o| o["event"]["subject"] == "events.orders.created");
    assert_eq!(created["input"], "order 1");
    assert_eq!(created["event"]["source"], "nats");
    assert_eq!(created["event"]["trigger"], "orders");
    assert_eq!(created["event"]["headers"]["X-Tenant"], "acme");
    find(&|o| o["event"]["subject"] == "events.orders.paid" && o["input"] == "order 2");
    let put = find(&|o| o["event"]["op"] == "put");
    assert_eq!(put["input"], "blue");
    assert_eq!(put["event"]["key"], "app.color");
    assert_eq!(put["event"]["bucket"], "config");
    assert_eq!(put["event"]["source"], "kv");
    let deleted = find(&|o| o["event"]["op"] == "delete");
    assert_eq!(deleted["event"]["key"], "app.color");
    assert_eq!(deleted["input"], "");

    let (_, listed) = cluster.get_as::<TriggerList>("/v1/triggers").await;
    assert_eq!(listed.triggers.len(), 2);
    assert_eq!(delete(&cluster, "/v1/triggers/orders").await, 204);
    client
        .publish("events.orders.late", "after".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    // Unbound, the subject is captured by no stream (a JetStream publish there finds none), so
    // the plain publish above was stored nowhere and can run nothing.
    let stored = js
        .publish("events.orders.late", "probe".into())
        .await
        .unwrap()
        .await;
    assert!(
        stored.is_err(),
        "events.orders.late is still captured: {stored:?}"
    );
    assert_eq!(
        invocations_of(&cluster, "echo").await.len(),
        4,
        "unbound: no more invocations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_holds_across_the_whole_fleet() {
    let cluster = Cluster::start_with(ClusterOptions {
        workers: 2,
        ..Default::default()
    })
    .await;
    cluster
        .deploy_example(
            "sleep",
            Some(serde_json::json!({"concurrency": 4, "max_concurrency": 2})),
        )
        .await;
    squall_tests::wait_workers_ready(&cluster, "sleep").await;
    let ids = cluster.submit_async("sleep", "400", 6).await;
    let mut spans = Vec::new();
    for id in &ids {
        let view = cluster.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
        let (_, page) = cluster
            .get_as::<Invocation>(&format!("/v1/invocations/{id}"))
            .await;
        let finished = time_ms(page.finished_at.as_deref().unwrap());
        let started = finished - page.duration_ms.unwrap();
        spans.push((started, finished));
    }
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert!(
        most <= 2,
        "at most 2 at once across both workers, saw {most}: {spans:?}"
    );
    assert_eq!(most, 2, "the cap is reached, not undercut");
}

/// Unix ms of an RFC 3339 UTC time like `2026-01-01T00:00:01.5Z`.
fn time_ms(text: &str) -> f64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]) * 1000.0
}
