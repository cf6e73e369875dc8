//! What stored records cannot be made to do: a forged dead letter cannot steer a replay, a
//! stale cache cannot resurrect a function, a trigger cannot watch Squall's own buckets, a
//! deleted function leaves no state behind, and a web job's dead letter keeps no credentials.

use axum::body::Body;
use axum::http::Method;
use squall_tests::in_process::App;
use squall_tests::{built, eventually, Cluster};
use std::time::Duration;

/// The hello example's library.
fn hello() -> Vec<u8> {
    std::fs::read(built().library("hello")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_destination_dead_letter_is_not_replayed_to_a_reserved_subject() {
    let app = App::start().await;
    let spec = serde_json::json!({"destinations": {"on_success": "events.done"}});
    assert_eq!(app.deploy("f", &hello(), Some(&spec)).await.status, 201);
    // Written straight into the destination dead letters' subject by a connection allowed to
    // (the dispatcher's own; clients are denied it in the auth profile).
    let id = uuid::Uuid::now_v7().to_string();
    let forged = |destination: &str, target: &str| {
        serde_json::json!({
            "invocation_id": id,
            "function": "f",
            "target": target,
            "destination": destination,
            "tries": 1,
            "error": "forged",
            "failed_at_ms": 1,
            "attributes": {
                "specversion": "1.0",
                "id": format!("{id}-event"),
                "source": "/squall/functions/f",
                "type": "io.squall.invocation.succeeded",
            },
            "data_base64": "e30=",
        })
        .to_string()
    };
    let js = async_nats::jetstream::new(app.state.broker.client.clone());
    js.publish(
        format!("dlq-destinations.f.{id}.on_success"),
        forged("$KV.squall_keys.x", "on_success").into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let listed = app.get("/v1/dlq/destinations").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json()["dead_letters"][0]["destination"],
        "$KV.squall_keys.x"
    );

    let replay = app
        .send(
            Method::POST,
            &format!("/v1/dlq/destinations/{id}/replay"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(replay.status, 409, "{:?}", replay.json());
    let error = replay.error();
    assert_eq!(error.code, "replay_refused");
    assert!(
        error.message.contains("$KV.squall_keys.x") && error.message.contains("nothing"),
        "{}",
        error.message
    );
    // The refusal came before any publish: the keys bucket has no such key, and the letter
    // is still there.
    let keys = js.get_key_value("squall_keys").await.unwrap();
    assert_eq!(keys.get("x").await.unwrap(), None);
    assert_eq!(
        app.get("/v1/dlq/destinations").await.json()["dead_letters"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // A callback letter naming a subject, or an on_success letter naming another subject
    // than the spec's, is refused the same way.
    for (destination, target) in [("events.stolen", "on_success"), ("events.done", "callback")] {
        let other = uuid::Uuid::now_v7().to_string();
        let letter = forged(destination, target).replace(&id, &other);
        js.publish(
            format!("dlq-destinations.f.{other}.{target}"),
            letter.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let replay = app
            .send(
                Method::POST,
                &format!("/v1/dlq/destinations/{other}/replay"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(replay.status, 409, "{destination}: {:?}", replay.json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cached_record_cannot_bring_back_a_deleted_function_through_its_secrets() {
    let app = App::start().await;
    assert_eq!(app.deploy("f", &hello(), None).await.status, 201);
    let registry = &app.state.registry;
    let stale = (*registry.get("f").expect("cached after the deploy")).clone();
    // Another dispatcher deletes the function; this one's cache has not caught up (kept so
    // here by a revision above the delete's).
    registry.bucket().delete("f").await.unwrap();
    registry.put(u64::MAX, stale);
    assert!(registry.get("f").is_some());

    let answer = app
        .put_json(
            "/v1/functions/f/secrets",
            &serde_json::json!({"TOKEN": "s3cret"}),
        )
        .await;
    assert_eq!(answer.status, 404, "{:?}", answer.json());
    let entry = registry.bucket().entry("f").await.unwrap();
    assert!(
        entry.is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put),
        "the deleted function stays deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cached_record_cannot_undo_a_deploy_through_its_secrets() {
    let app = App::start().await;
    let first = serde_json::json!({"timeout_ms": 1000});
    assert_eq!(app.deploy("f", &hello(), Some(&first)).await.status, 201);
    let registry = &app.state.registry;
    let stale = (*registry.get("f").unwrap()).clone();
    let second = serde_json::json!({"timeout_ms": 2000});
    assert_eq!(app.deploy("f", &hello(), Some(&second)).await.status, 201);
    registry.put(u64::MAX, stale);

    let answer = app
        .put_json("/v1/functions/f/secrets", &serde_json::json!({"A": "1"}))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let entry = registry.bucket().get("f").await.unwrap().unwrap();
    let stored = squall_broker::FunctionRecord::decode(&entry).unwrap();
    assert_eq!(stored.timeout_ms, 2000, "the second deploy stays");
    assert_eq!(stored.secret_names(), ["A"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_trigger_cannot_watch_squalls_own_buckets() {
    let app = App::start().await;
    assert_eq!(app.deploy("f", &hello(), None).await.status, 201);
    for bucket in ["squall_keys", "squall_registry", "squall_state", "a.b"] {
        let answer = app
            .put_json(
                "/v1/triggers/steal",
                &serde_json::json!({"function": "f", "bucket": bucket}),
            )
            .await;
        assert_eq!(answer.status, 400, "{bucket}: {:?}", answer.json());
        assert_eq!(answer.error().code, "invalid_trigger");
    }
    assert_eq!(app.get("/v1/triggers/steal").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_function_purges_its_state_and_no_other_functions() {
    let app = App::start().await;
    assert_eq!(app.deploy("f", &hello(), None).await.status, 201);
    let state = app.state.broker.topology.state.clone();
    state.put("f.counter", "41".into()).await.unwrap();
    state.put("f.a.b", "x".into()).await.unwrap();
    state.put("fg.counter", "7".into()).await.unwrap();
    let answer = app
        .send(Method::DELETE, "/v1/functions/f", &[], Body::empty())
        .await;
    assert_eq!(answer.status, 204);
    assert_eq!(app.deploy("f", &hello(), None).await.status, 201);
    assert_eq!(state.get("f.counter").await.unwrap(), None);
    assert_eq!(state.get("f.a.b").await.unwrap(), None);
    assert_eq!(
        state.get("fg.counter").await.unwrap(),
        Some("7".into()),
        "another function's state stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_jobs_dead_letter_keeps_no_cookie_or_authorization() {
    let cluster = Cluster::start().await;
    let spec = serde_json::json!({"web": {"auth": "none"}, "max_attempts": 1});
    cluster.deploy_example("fail", Some(spec)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/function/fail/form", cluster.web_url))
        .header("Cookie", "session=s3cret-cookie")
        .header("Authorization", "Bearer s3cret-token")
        .header("X-Form", "kept")
        .body(r#"{"retry": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let letters = eventually(
        Duration::from_secs(20),
        "the web job's dead letter",
        async || {
            let (_, body) = cluster.get_json("/v1/dlq?function=fail").await;
            let id = body["dead_letters"][0]["id"].as_str()?.to_string();
            let (status, letter) = cluster.get_json(&format!("/v1/dlq/{id}")).await;
            (status == 200).then_some(letter)
        },
    )
    .await;
    let headers = letters["headers"].to_string();
    assert!(headers.contains("x-form"), "{headers}");
    assert!(
        !headers.contains("s3cret") && !headers.to_ascii_lowercase().contains("cookie"),
        "{headers}"
    );
}
