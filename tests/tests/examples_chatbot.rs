//! The `chatbot` example and its JavaScript port `js-chatbot` end to end: a Slack webhook on a
//! real dispatcher and worker that answers only requests Slack signed recently, and keeps each
//! user's conversation in state. Each scenario runs against both.

use sha2::{Digest, Sha256};
use squall_tests::{eventually, Cluster};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// Which implementation of the bot a scenario drives.
#[derive(Clone, Copy)]
enum Impl {
    /// The Rust library, deployed through the API.
    Rust,
    /// `js-chatbot`, deployed from its folder by the CLI.
    JavaScript,
}

impl Impl {
    /// The function's name.
    fn name(self) -> &'static str {
        match self {
            Impl::Rust => "chatbot",
            Impl::JavaScript => "js-chatbot",
        }
    }

    /// The bot's URL on the cluster's web front.
    fn url(self, cluster: &Cluster) -> String {
        format!("{}/function/{}", cluster.web_url, self.name())
    }

    /// How long the bot remembers a user: the Rust test's spec, the JavaScript folder's
    /// squall.toml.
    fn memory_ttl_s(self) -> u64 {
        match self {
            Impl::Rust => 600,
            Impl::JavaScript => 3600,
        }
    }
}

/// `v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`, as Slack signs its requests.
fn slack_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut block = [0u8; 64];
    block[..secret.len()].copy_from_slice(secret.as_bytes());
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(format!("v0:{timestamp}:{body}"))
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A POST to the bot as Slack sends it: signed with `secret` at `timestamp`.
async fn post(
    cluster: &Cluster,
    bot: Impl,
    secret: &str,
    timestamp: u64,
    body: &str,
) -> reqwest::Response {
    let timestamp = timestamp.to_string();
    reqwest::Client::new()
        .post(bot.url(cluster))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &timestamp)
        .header(
            "x-slack-signature",
            slack_signature(secret, &timestamp, body),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A cluster with the bot deployed as a public web function and its signing secret set; returns
/// once a worker answers a signed challenge (the secret reaches the workers shortly after).
async fn start(bot: Impl) -> Cluster {
    let cluster = Cluster::start().await;
    match bot {
        Impl::Rust => {
            let spec = serde_json::json!({"timeout_ms": 5000, "max_attempts": 1,
                "web": {"auth": "none"}, "config": {"memory_ttl_s": bot.memory_ttl_s()}});
            cluster.deploy_example(bot.name(), Some(spec)).await;
        }
        Impl::JavaScript => cluster.deploy_folder("js-chatbot").await,
    }
    let (status, body) = cluster
        .put_json(
            &format!("/v1/functions/{}/secrets", bot.name()),
            serde_json::json!({"SLACK_SIGNING_SECRET": SIGNING_SECRET}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let challenge = r#"{"token":"t","challenge":"ready","type":"url_verification"}"#;
    eventually(Duration::from_secs(30), "the bot to be ready", async || {
        let response = post(&cluster, bot, SIGNING_SECRET, now_s(), challenge).await;
        match response.status() {
            reqwest::StatusCode::OK => Ok(()),
            status => Err((status, response.text().await.unwrap_or_default())),
        }
    })
    .await;
    cluster
}

/// A message event from `user`, as Slack's Events API wraps it.
fn message(event_id: &str, user: &str, text: &str) -> String {
    serde_json::json!({
        "token": "t", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": event_id, "event_time": now_s(),
        "event": {"type": "message", "channel": "D0001", "user": user, "text": text,
            "ts": "1700000000.000100", "channel_type": "im"}
    })
    .to_string()
}

/// Sends a signed message and returns the bot's reply.
async fn say(
    cluster: &Cluster,
    bot: Impl,
    event_id: &str,
    user: &str,
    text: &str,
) -> serde_json::Value {
    let body = message(event_id, user, text);
    let response = post(cluster, bot, SIGNING_SECRET, now_s(), &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Answers a challenge signed with the secret recently; refuses one signed with another
/// secret, unsigned, changed after signing or replayed later, and any method but POST.
async fn answers_only_requests_slack_signed_recently(bot: Impl) {
    let cluster = start(bot).await;
    let challenge = r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;

    // A good signature: the URL-verification challenge is answered with the challenge.
    let good = post(&cluster, bot, SIGNING_SECRET, now_s(), challenge).await;
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.text().await.unwrap(),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    // Signed with another secret: 401.
    let bad = post(&cluster, bot, "not-the-signing-secret", now_s(), challenge).await;
    assert_eq!(bad.status(), 401);
    let said: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(said, serde_json::json!({"error": "bad signature"}));

    // No signature at all: 401.
    let unsigned = reqwest::Client::new()
        .post(bot.url(&cluster))
        .body(challenge)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    // A body changed after signing: 401.
    let timestamp = now_s().to_string();
    let tampered = reqwest::Client::new()
        .post(bot.url(&cluster))
        .header("x-slack-request-timestamp", &timestamp)
        .header(
            "x-slack-signature",
            slack_signature(SIGNING_SECRET, &timestamp, challenge),
        )
        .body(challenge.replace("3eZ", "4eZ"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);

    // A request Slack really signed ten minutes ago, replayed now: 403.
    let replayed = post(&cluster, bot, SIGNING_SECRET, now_s() - 600, challenge).await;
    assert_eq!(replayed.status(), 403);
    let said: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(said, serde_json::json!({"error": "stale timestamp"}));
    // Nor is a replayed message answered or counted.
    let old_message = message("Ev0OLD", "U0ADA", "hi");
    let replayed = post(&cluster, bot, SIGNING_SECRET, now_s() - 600, &old_message).await;
    assert_eq!(replayed.status(), 403);
    let reply = say(&cluster, bot, "Ev0NEW", "U0ADA", "hi").await;
    assert_eq!(reply["turn"], 1, "{reply}");

    // Only POST.
    let get = reqwest::get(bot.url(&cluster)).await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
}

/// Keeps a conversation per user in state with the configured TTL, acknowledges Slack's
/// retries without counting them, ignores the bot's own messages and forgets on request.
async fn carries_each_users_memory_across_messages(bot: Impl) {
    let cluster = start(bot).await;

    let first = say(&cluster, bot, "Ev001", "U0ADA", "hello bot").await;
    assert_eq!(first["channel"], "D0001");
    assert_eq!(first["turn"], 1);
    assert_eq!(
        first["text"],
        "Hello there! That is message 1 from you. You said: \"hello bot\""
    );
    let second = say(&cluster, bot, "Ev002", "U0ADA", "My name is Ada").await;
    assert_eq!(second["turn"], 2);
    assert_eq!(second["text"], "Nice to meet you, Ada!");
    let third = say(&cluster, bot, "Ev003", "U0ADA", "what's my name?").await;
    assert_eq!(third["turn"], 3);
    assert_eq!(third["text"], "You are Ada.");

    // Another user has a conversation of their own.
    let other = say(&cluster, bot, "Ev004", "U0BOB", "what's my name?").await;
    assert_eq!(other["turn"], 1);
    assert!(
        other["text"].as_str().unwrap().contains("not told me"),
        "{other}"
    );

    // Slack's retry of an event (same event id) is acknowledged without counting it again.
    let retried = say(&cluster, bot, "Ev003", "U0ADA", "what's my name?").await;
    assert_eq!(retried, serde_json::json!({"ok": true, "duplicate": true}));
    let fourth = say(&cluster, bot, "Ev005", "U0ADA", "still there?").await;
    assert_eq!(fourth["turn"], 4);
    assert_eq!(
        fourth["text"],
        "Hello Ada! That is message 4 from you. You said: \"still there?\""
    );

    // The bot's own messages are not answered.
    let own = serde_json::json!({"type": "event_callback", "team_id": "T0001", "event_id": "Ev006",
        "event": {"type": "message", "channel": "D0001", "bot_id": "B0001", "text": "Hello Ada!"}});
    let ignored = post(&cluster, bot, SIGNING_SECRET, now_s(), &own.to_string()).await;
    assert_eq!(ignored.status(), 200);
    let said: serde_json::Value = ignored.json().await.unwrap();
    assert_eq!(said, serde_json::json!({"ok": true, "ignored": true}));

    // The memory is kept with the configured TTL, in the function's own state.
    let stored = cluster.state_entry(bot.name(), "user/T0001/U0ADA").await;
    assert_eq!(
        stored.headers.get("Nats-TTL").map(|v| v.as_str()),
        Some(bot.memory_ttl_s().to_string().as_str())
    );
    let memory: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(memory, serde_json::json!({"name": "Ada", "turns": 4}));

    // "forget me" ends it: the next message starts again at 1.
    let forgotten = say(&cluster, bot, "Ev007", "U0ADA", "forget me").await;
    assert!(
        forgotten["text"].as_str().unwrap().contains("forgotten"),
        "{forgotten}"
    );
    let again = say(&cluster, bot, "Ev008", "U0ADA", "hi").await;
    assert_eq!(again["turn"], 1);
    assert!(
        again["text"].as_str().unwrap().starts_with("Hello there!"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_slack_signed_recently_are_answered() {
    answers_only_requests_slack_signed_recently(Impl::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_port_answers_only_requests_slack_signed_recently() {
    answers_only_requests_slack_signed_recently(Impl::JavaScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_carries_each_users_memory_across_messages() {
    carries_each_users_memory_across_messages(Impl::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_port_carries_each_users_memory_across_messages() {
    carries_each_users_memory_across_messages(Impl::JavaScript).await;
}
