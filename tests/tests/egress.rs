//! The egress guard over real HTTP: callbacks and destinations to loopback, link-local and
//! private addresses are refused where they are given (a 400 that says why) and again where
//! they are sent (nothing is dialled, and the recorded outcome does not tell an open port from
//! a closed one); the operator's allowlist opens them on purpose; and a receiver that never
//! answers cannot hold up deliveries to the others.

use squall_api::invocations::{DeliveryOutcome, DestinationReplay, DestinationTarget};
use squall_tests::{Blackhole, Cluster, ClusterOptions, Receiver};
use std::time::Duration;

/// An asynchronous invoke of `function` with `X-Callback-Url: url`: its status and body.
async fn invoke_with_callback(
    cluster: &Cluster,
    function: &str,
    url: &str,
) -> (u16, serde_json::Value, Option<String>) {
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/{function}/invocations?async=true",
            cluster.url
        ))
        .header("X-Callback-Url", url)
        .body("{}")
        .send()
        .await
        .unwrap();
    let id = response
        .headers()
        .get("squall-invocation-id")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = squall_tests::json_response(response).await;
    (status, body, id)
}

/// Deploys `example` as `name` with `spec`: the status and body.
async fn deploy(
    cluster: &Cluster,
    name: &str,
    example: &str,
    spec: serde_json::Value,
) -> (u16, serde_json::Value) {
    cluster
        .deploy(name, squall_tests::built().library(example), Some(spec))
        .await
}

fn refusal(body: &serde_json::Value) -> &str {
    assert_eq!(body["error"]["code"], "invalid_callback_url", "{body}");
    body["error"]["message"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_and_destinations_to_internal_addresses_are_refused_when_given() {
    let cluster = Cluster::start().await;
    let receiver = Receiver::start(0).await;
    let port = receiver.addr.port();
    let (status, body) = deploy(&cluster, "hello", "hello", serde_json::json!({})).await;
    assert_eq!(status, 201, "{body}");
    squall_tests::wait_workers_ready(&cluster, "hello").await;

    for (url, why) in [
        (
            format!("http://127.0.0.1:{port}/internal/admin?x=1"),
            "resolves to a loopback address 127.0.0.1".to_string(),
        ),
        (
            format!("http://localhost:{port}/"),
            "resolves to a loopback address".to_string(),
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "resolves to a loopback address 127.0.0.1".to_string(),
        ),
        (
            format!("http://0x7f.1:{port}/"),
            "resolves to a loopback address 127.0.0.1".to_string(),
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "resolves to a link-local address 169.254.169.254".to_string(),
        ),
        (
            "http://10.0.0.7/hook".to_string(),
            "resolves to a private address 10.0.0.7".to_string(),
        ),
        (
            "http://100.64.0.1/hook".to_string(),
            "resolves to a shared (carrier-grade NAT) address 100.64.0.1".to_string(),
        ),
        (
            "http://[fd00::1]/hook".to_string(),
            "resolves to a unique-local address fd00::1".to_string(),
        ),
        (
            "http://0.0.0.0:80/".to_string(),
            "resolves to an unspecified address 0.0.0.0".to_string(),
        ),
    ] {
        let (status, body, id) = invoke_with_callback(&cluster, "hello", &url).await;
        assert_eq!(status, 400, "{url}: {body}");
        let message = refusal(&body);
        assert!(
            message.starts_with("X-Callback-Url ") && message.contains(&why),
            "{url}: {message}"
        );
        assert!(message.contains("--egress-allow"), "{message}");
        assert!(id.is_none(), "a refused call is no invocation: {url}");
    }
    let (status, body, _) = invoke_with_callback(&cluster, "hello", "file:///etc/passwd").await;
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("http:// or https://"), "{body}");

    // Destinations are judged at deploy; a refused deploy changes nothing.
    for (field, url) in [
        ("on_success", format!("http://localhost:{port}/d")),
        ("on_failure", "http://192.168.1.10/hook".to_string()),
    ] {
        let (status, body) = deploy(
            &cluster,
            "internal",
            "hello",
            serde_json::json!({"destinations": {field: url}}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let message = refusal(&body);
        assert!(
            message.starts_with(&format!("destinations.{field}: ")),
            "{message}"
        );
    }
    let (status, _) = cluster.get_json("/v1/functions/internal").await;
    assert_eq!(status, 404);

    // Nothing was published, so nothing can reach the receiver later: every job and every
    // result the deliveries follow is handled.
    squall_tests::consumers_settled(
        &cluster.nats_client().await,
        &[("JOBS", "fn-hello"), ("RESULTS", "destinations")],
    )
    .await;
    assert!(receiver.all().is_empty(), "{:?}", receiver.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_target_is_not_dialled_at_send_time_unless_allowed() {
    // No worker yet: the jobs wait while the dispatcher changes.
    let mut cluster = Cluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let receiver = Receiver::start(0).await;
    let closed = squall_tests::free_port();
    let open_url = receiver.url("/callback");
    let closed_url = format!("http://127.0.0.1:{closed}/callback");
    let destination = format!("http://localhost:{}/destination", receiver.addr.port());

    // Allowed when given, by an operator who then takes the allowance back.
    let allow = ["--egress-allow", "127.0.0.1/32,localhost"];
    cluster.restart_dispatcher(&allow).await;
    let (status, body) = deploy(
        &cluster,
        "echo",
        "echo",
        serde_json::json!({"destinations": {"on_success": destination}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut ids = Vec::new();
    for url in [&open_url, &closed_url] {
        let (status, body, id) = invoke_with_callback(&cluster, "echo", url).await;
        assert_eq!(status, 202, "{body}");
        ids.push(id.unwrap());
    }
    cluster.restart_dispatcher(&[]).await;
    cluster.add_worker();

    let mut errors = Vec::new();
    for (id, url) in ids.iter().zip([&open_url, &closed_url]) {
        let view = eventually_delivered(&cluster, id, 2).await;
        assert_eq!(view.status.as_str(), "succeeded");
        for delivery in &view.destinations {
            assert_eq!(delivery.outcome, DeliveryOutcome::Failed, "{delivery:?}");
            let error = delivery.error.as_deref().unwrap();
            assert!(
                error.contains("is refused: resolves to a loopback address"),
                "{error}"
            );
            assert_eq!(delivery.tries, 1, "a refusal is not tried again");
        }
        let callback = view
            .destinations
            .iter()
            .find(|d| d.target == DestinationTarget::Callback)
            .unwrap();
        errors.push(
            callback
                .error
                .clone()
                .unwrap()
                .replace(url.as_str(), "<url>"),
        );
    }
    // The lookup reads the same whether a service listens on the refused port or not.
    assert_eq!(errors[0], errors[1]);
    assert_eq!(
        errors[0],
        "<url> is refused: resolves to a loopback address 127.0.0.1"
    );
    squall_tests::consumers_settled(
        &cluster.nats_client().await,
        &[("JOBS", "fn-echo"), ("RESULTS", "destinations")],
    )
    .await;
    assert!(
        receiver.all().is_empty(),
        "nothing was dialled: {:?}",
        receiver.all()
    );

    // With the allowance back, the dead letters replay to the receiver that listens.
    cluster.restart_dispatcher(&allow).await;
    let response = cluster
        .http
        .post(format!(
            "{}/v1/dlq/destinations/{}/replay",
            cluster.url, ids[0]
        ))
        .send()
        .await
        .unwrap();
    let (status, replay) = squall_tests::decode_response::<DestinationReplay>(response).await;
    assert_eq!(status, 200);
    assert_eq!(replay.deliveries.len(), 2, "{replay:?}");
    assert!(replay
        .deliveries
        .iter()
        .all(|d| d.outcome == DeliveryOutcome::Delivered));
    assert_eq!(receiver.at("/callback").len(), 1);
    assert_eq!(receiver.at("/destination").len(), 1);
}

/// Waits until invocation `id` shows `n` ended deliveries.
async fn eventually_delivered(
    cluster: &Cluster,
    id: &str,
    n: usize,
) -> squall_api::invocations::Invocation {
    squall_tests::eventually(
        Duration::from_secs(30),
        format_args!("{n} ended deliveries of {id}"),
        async || {
            let view = cluster.wait_terminal(id, Duration::from_secs(30)).await;
            match view.destinations.len() >= n {
                true => Ok(view),
                false => Err(view.destinations),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_up_other_callbacks() {
    let cluster = Cluster::start_with(ClusterOptions {
        dispatcher_env: vec![("SQUALL_EGRESS_ALLOW".into(), "127.0.0.1/32".into())],
        ..Default::default()
    })
    .await;
    let blackhole = Blackhole::start().await;
    let receiver = Receiver::start(0).await;
    let (status, body) = deploy(&cluster, "hello", "hello", serde_json::json!({})).await;
    assert_eq!(status, 201, "{body}");
    squall_tests::wait_workers_ready(&cluster, "hello").await;
    // More callbacks to the dead receiver than the dispatcher has delivery slots.
    const DEAD: usize = 80;
    for _ in 0..DEAD {
        let (status, body, _) =
            invoke_with_callback(&cluster, "hello", &blackhole.url("/hang")).await;
        assert_eq!(status, 202, "{body}");
    }
    squall_tests::eventually(
        Duration::from_secs(20),
        "the dead receiver to hold connections",
        async || match blackhole.accepted() {
            0 => Err(0),
            n => Ok(n),
        },
    )
    .await;
    const ALIVE: usize = 5;
    for _ in 0..ALIVE {
        let (status, body, _) =
            invoke_with_callback(&cluster, "hello", &receiver.url("/alive")).await;
        assert_eq!(status, 202, "{body}");
    }
    // Well within one try's timeout of the dead receiver, many times over for all of them.
    receiver
        .wait_for("/alive", ALIVE, Duration::from_secs(15))
        .await;
}
