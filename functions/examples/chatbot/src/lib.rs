//! Example web function: a Slack Events API webhook that checks Slack's request signature, answers
//! the URL-verification challenge and replies to messages with per-user memory kept in state.
//!
//! The reply is the HTTP answer's body (`{"channel", "text", "turn"}`, the arguments a real bot
//! would hand to Slack's `chat.postMessage`): functions make no outbound calls here.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use squall_sdk::http::{Method, StatusCode};
use squall_sdk::serde_json::{json, Value};
use squall_sdk::{export_web_function, Context, FnError, WebRequest, WebResponse};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Slack's signature header: `v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The Unix time (seconds) at which Slack signed the request.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// The function's secret that holds the app's signing secret.
pub const SECRET_NAME: &str = "SLACK_SIGNING_SECRET";
/// Requests signed further than this from our clock are refused, so a captured request cannot
/// be replayed later (Slack's own recommendation is five minutes).
pub const MAX_SKEW_S: u64 = 5 * 60;
/// How long the bot remembers a user after their last message, unless `memory_ttl_s` says.
const DEFAULT_MEMORY_TTL_S: u64 = 60 * 60;
/// How long an event id is remembered to drop Slack's retries of it (Slack retries for about
/// an hour at most; a retry after that is answered again).
const SEEN_TTL: Duration = Duration::from_secs(60 * 60);
/// The longest name the bot keeps.
const MAX_NAME_CHARS: usize = 40;

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `X-Slack-Signature` value Slack sends for `body` signed at `timestamp`.
pub fn slack_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    let digest = hmac_sha256(secret.as_bytes(), &base);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// Compares without stopping at the first difference, so timing does not reveal the prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What the signature check concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by Slack, recently.
    Valid,
    /// No signature, no timestamp, or a signature that does not match.
    BadSignature,
    /// Correctly signed, but at a time too far from ours: a replay, or a clock far off.
    Stale,
}

/// Checks a request's signature and its timestamp against `now_s` (Unix seconds). The
/// signature is checked first, so `Stale` is only ever said of a request Slack really signed.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: u64,
) -> Verdict {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Verdict::BadSignature;
    };
    let expected = slack_signature(secret, timestamp, body);
    if !same(expected.as_bytes(), signature.as_bytes()) {
        return Verdict::BadSignature;
    }
    match timestamp.parse::<u64>() {
        Ok(signed_at) if signed_at.abs_diff(now_s) <= MAX_SKEW_S => Verdict::Valid,
        Ok(_) => Verdict::Stale,
        Err(_) => Verdict::BadSignature,
    }
}

/// What the bot remembers of one user, under `user/<team>/<user>` with a TTL.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// The name the user gave ("my name is …").
    pub name: Option<String>,
    /// The user's messages so far, this one included.
    pub turns: u64,
}

/// One turn of the conversation: the memory after `text` (`None`: forget the user) and the
/// reply. Pure, so the bot's manners are tested without a host.
pub fn converse(memory: Memory, text: &str) -> (Option<Memory>, String) {
    let text = text.trim();
    let lower = text.to_lowercase();
    let mut memory = Memory {
        turns: memory.turns + 1,
        ..memory
    };
    if lower == "forget me" {
        return (None, "Done: I have forgotten everything about you.".into());
    }
    const NAME_PREFIX: &str = "my name is ";
    let given_name = text
        .get(..NAME_PREFIX.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(NAME_PREFIX))
        .map(|_| &text[NAME_PREFIX.len()..]);
    let reply = if let Some(name) = given_name {
        let name = name
            .trim()
            .trim_end_matches(['.', '!'])
            .chars()
            .take(MAX_NAME_CHARS)
            .collect::<String>();
        let reply = format!("Nice to meet you, {name}!");
        memory.name = Some(name);
        reply
    } else if lower.contains("what is my name") || lower.contains("what's my name") {
        match &memory.name {
            Some(name) => format!("You are {name}."),
            None => "You have not told me your name yet. Say \"my name is …\".".into(),
        }
    } else {
        let who = memory.name.as_deref().unwrap_or("there");
        format!(
            "Hello {who}! That is message {} from you. You said: \"{text}\"",
            memory.turns
        )
    };
    (Some(memory), reply)
}

/// Slack ids (`T0123`, `U0456`, `Ev0789`) are short runs of letters and digits; anything else
/// is refused before it becomes part of a state key.
fn slack_id(value: Option<&str>) -> Option<&str> {
    value.filter(|id| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn error(status: StatusCode, message: &str) -> Result<WebResponse, FnError> {
    WebResponse::json(status, &json!({"error": message}))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves Slack's POSTs to the app's Request URL.
pub fn chatbot(ctx: &Context, request: WebRequest) -> Result<WebResponse, FnError> {
    if request.method != Method::POST {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "POST only")?.with_header("allow", "POST"));
    }
    let Some(secret) = ctx
        .config()
        .pointer(&format!("/secrets/{SECRET_NAME}"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        ctx.error(&format!("chatbot: the secret {SECRET_NAME} is not set"));
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the bot is not configured",
        );
    };
    match verify(
        secret,
        request.header(TIMESTAMP_HEADER),
        request.header(SIGNATURE_HEADER),
        &request.body,
        now_s(),
    ) {
        Verdict::Valid => {}
        Verdict::BadSignature => {
            ctx.warn("chatbot: a request with a bad signature");
            return error(StatusCode::UNAUTHORIZED, "bad signature");
        }
        Verdict::Stale => {
            ctx.warn("chatbot: a signed request with a stale timestamp (a replay?)");
            return error(StatusCode::FORBIDDEN, "stale timestamp");
        }
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&request.body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    match payload["type"].as_str() {
        Some("url_verification") => match payload["challenge"].as_str() {
            Some(challenge) => Ok(WebResponse::text(StatusCode::OK, challenge)),
            None => error(StatusCode::BAD_REQUEST, "no challenge"),
        },
        Some("event_callback") => on_event(ctx, &payload),
        _ => error(StatusCode::BAD_REQUEST, "not an Events API payload"),
    }
}

/// Answers an `event_callback`: a user's message gets a reply; anything else an acknowledgement.
fn on_event(ctx: &Context, payload: &Value) -> Result<WebResponse, FnError> {
    let event = &payload["event"];
    // Only plain messages from people: the bot's own messages (`bot_id`) and edits or joins
    // (a `subtype`) would otherwise make it talk to itself.
    if event["type"] != "message" || event.get("bot_id").is_some() || event.get("subtype").is_some()
    {
        return WebResponse::json(StatusCode::OK, &json!({"ok": true, "ignored": true}));
    }
    let (Some(team), Some(user), Some(event_id)) = (
        slack_id(payload["team_id"].as_str().or(Some("none"))),
        slack_id(event["user"].as_str()),
        slack_id(payload["event_id"].as_str()),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing or malformed team_id, event.user or event_id",
        );
    };
    let text = event["text"].as_str().unwrap_or_default();
    let kv = ctx.kv();
    // Slack retries an event it got no timely 200 for, with the same event id: answer the
    // retry without counting the message twice.
    let seen = format!("seen/{event_id}");
    if kv.get(&seen)?.is_some() {
        return WebResponse::json(StatusCode::OK, &json!({"ok": true, "duplicate": true}));
    }
    let key = format!("user/{team}/{user}");
    let memory = kv.get_json::<Memory>(&key)?.unwrap_or_default();
    let turn = memory.turns + 1;
    let (memory, reply) = converse(memory, text);
    match memory {
        Some(memory) => {
            let ttl = ctx.config()["memory_ttl_s"]
                .as_u64()
                .filter(|s| *s > 0)
                .unwrap_or(DEFAULT_MEMORY_TTL_S);
            let value = serde_json::to_vec(&memory)?;
            kv.put_with_ttl(&key, &value, Duration::from_secs(ttl))?;
        }
        None => kv.delete(&key)?,
    }
    kv.put_with_ttl(&seen, b"1", SEEN_TTL)?;
    WebResponse::json(
        StatusCode::OK,
        &json!({"channel": event["channel"], "text": reply, "turn": turn}),
    )
}

export_web_function!(chatbot);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_is_valid_only_when_it_matches_and_is_recent() {
        let body = br#"{"type":"url_verification","challenge":"c"}"#;
        let signed = slack_signature("s3", "1000", body);
        let check = |sig: Option<&str>, ts: Option<&str>, now| verify("s3", ts, sig, body, now);
        assert_eq!(check(Some(&signed), Some("1000"), 1000), Verdict::Valid);
        assert_eq!(
            check(Some(&signed), Some("1000"), 1000 + MAX_SKEW_S),
            Verdict::Valid
        );
        assert_eq!(
            check(Some(&signed), Some("1000"), 1001 + MAX_SKEW_S),
            Verdict::Stale
        );
        // A clock behind Slack's by up to five minutes is fine; further is not.
        assert_eq!(
            check(Some(&signed), Some("1000"), 1000 - MAX_SKEW_S),
            Verdict::Valid
        );
        assert_eq!(
            check(Some(&signed), Some("1000"), 999 - MAX_SKEW_S),
            Verdict::Stale
        );
        // The timestamp is part of what is signed: moving it breaks the signature.
        assert_eq!(
            check(Some(&signed), Some("1001"), 1000),
            Verdict::BadSignature
        );
        assert_eq!(
            check(Some("v0=00"), Some("1000"), 1000),
            Verdict::BadSignature
        );
        assert_eq!(check(None, Some("1000"), 1000), Verdict::BadSignature);
        assert_eq!(check(Some(&signed), None, 1000), Verdict::BadSignature);
        let other = verify("other", Some("1000"), Some(&signed), body, 1000);
        assert_eq!(other, Verdict::BadSignature);
    }

    #[test]
    fn the_bot_remembers_a_name_and_counts_turns() {
        let (memory, reply) = converse(Memory::default(), "hi");
        assert!(reply.contains("Hello there! That is message 1"), "{reply}");
        let (memory, reply) = converse(memory.unwrap(), "My name is Ada Lovelace.");
        assert_eq!(reply, "Nice to meet you, Ada Lovelace!");
        let (memory, reply) = converse(memory.unwrap(), "What's my name?");
        assert_eq!(reply, "You are Ada Lovelace.");
        let memory = memory.unwrap();
        assert_eq!(memory.turns, 3);
        let (memory, reply) = converse(memory, "Forget me");
        assert!(memory.is_none() && reply.contains("forgotten"), "{reply}");
        let (_, reply) = converse(Memory::default(), "what is my name");
        assert!(reply.contains("not told me"), "{reply}");
    }

    fn request(method: &str, headers: Value, body: &[u8]) -> WebRequest {
        let event = json!({"source": "web", "method": method, "path": "/", "headers": headers});
        WebRequest::from_event(&event, body)
    }

    #[test]
    fn the_challenge_is_answered_only_when_signed() {
        let ctx = Context::new("chatbot", "1")
            .with_config(br#"{"secrets": {"SLACK_SIGNING_SECRET": "s3"}}"#);
        let body = br#"{"type":"url_verification","challenge":"abc123"}"#;
        let ts = now_s().to_string();
        let headers =
            json!({TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: slack_signature("s3", &ts, body)});
        let answer = chatbot(&ctx, request("POST", headers, body)).unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, b"abc123");
        let forged =
            json!({TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: slack_signature("x", &ts, body)});
        let answer = chatbot(&ctx, request("POST", forged, body)).unwrap();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        let answer = chatbot(&ctx, request("GET", json!({}), b"")).unwrap();
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        let unconfigured = Context::new("chatbot", "1");
        let answer = chatbot(&unconfigured, request("POST", json!({}), body)).unwrap();
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
