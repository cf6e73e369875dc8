//! Credentials per function: tokens the fleet mints for the processes it starts, and the NATS auth callout service that turns such a token into a broker user allowed only that function's subjects.
//!
//! How it fits together (see broker-config/nats/users.conf):
//! - nats-server runs `auth_callout` in server-config mode with the role users as `auth_users`
//!   (they log in with their passwords as before) and the public key of an account nkey, the
//!   *issuer*, from `SQUALL_CALLOUT_ISSUER`. Every other connection is handed to the callout.
//! - The fleet holds the issuer's seed (`SQUALL_CALLOUT_SEED`, never given to a function's
//!   process). For each process it starts it calls [`Issuer::mint`]: a token naming the function
//!   and a fresh process id, signed with the issuer key, handed to the child as its NATS token
//!   (`SQUALL_NATS_TOKEN`) with an inbox prefix of its own.
//! - [`serve`] answers `$SYS.REQ.USER.AUTH` (as the `worker` role, in a queue group, so any
//!   fleet of any host answers): it checks the token's signature and answers with a user JWT,
//!   signed by the issuer, in the global account, with [`permissions`] of that function only.
//!   The token is stateless: any supervisor holding the seed verifies what any other minted.
//!
//! Invariants: a token names exactly one valid function name; a user minted from it may
//! subscribe only to its own inbox prefix and publish only the subjects of [`permissions`].

use crate::names::{
    consumer_name, dlq_subject, results_subject, CANCELS_BUCKET, JOBS_STREAM, REGISTRY_BUCKET,
    STATE_BUCKET,
};
use async_nats::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The subject nats-server sends authorization requests on.
pub const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The queue group of the callout responders: one of them answers each request.
pub const QUEUE_GROUP: &str = "squall-callout";
/// The variable nats-server reads the issuer's public key from (`A…`).
pub const ISSUER_ENV: &str = "SQUALL_CALLOUT_ISSUER";
/// The variable the fleet reads the issuer's seed from (`SA…`); only the fleet has it.
pub const SEED_ENV: &str = "SQUALL_CALLOUT_SEED";
/// The root of the function processes' inbox prefixes: `_INBOX_fn.<process>`.
pub const INBOX_ROOT: &str = "_INBOX_fn";
/// The account the minted users belong to: the server's global account, where JetStream and
/// the role users live (no `accounts` block).
pub const ACCOUNT: &str = "$G";
/// The first part of a token, naming its format (and keeping its signature apart from JWTs').
const TOKEN_TAG: &str = "sqfn1";
/// The JOSE header of every JWT NATS reads.
const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Why a token or a callout request was refused, or a key unusable.
#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    #[error("the callout issuer seed is not an account nkey seed (SA…): {0}")]
    Seed(String),
    #[error("not a function token")]
    Malformed,
    #[error("the function token's signature does not verify")]
    Signature,
    #[error("the function token names an invalid function: {0}")]
    Function(#[from] crate::NameError),
    #[error("unreadable authorization request: {0}")]
    Request(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The key that signs function tokens and the users the callout mints (an account nkey).
pub struct Issuer {
    key: nkeys::KeyPair,
}

impl Clone for Issuer {
    fn clone(&self) -> Issuer {
        Issuer::from_seed(&self.seed()).expect("an issuer's own seed")
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// What a process needs to log in as one function: its NATS token and its inbox prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct FunctionToken {
    pub function: String,
    /// The process's id (also the last token of its inbox prefix).
    pub process: String,
    pub token: String,
}

impl std::fmt::Debug for FunctionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionToken")
            .field("function", &self.function)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl FunctionToken {
    /// The inbox prefix the process must use (`_INBOX_fn.<process>`): the only one it may read.
    pub fn inbox_prefix(&self) -> String {
        format!("{INBOX_ROOT}.{}", self.process)
    }

    /// The environment a Squall process logs in with (see `connect::NatsAuth`). The child must
    /// get no other NATS credential (no `SQUALL_NATS_USER` / `SQUALL_NATS_PASSWORD`).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SQUALL_NATS_TOKEN", self.token.clone()),
            ("SQUALL_NATS_INBOX_PREFIX", self.inbox_prefix()),
        ]
    }
}

/// What a verified token grants: one function, for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub function: String,
    pub process: String,
}

#[derive(Serialize, Deserialize)]
struct TokenClaims {
    #[serde(rename = "fn")]
    function: String,
    #[serde(rename = "p")]
    process: String,
    iat: u64,
}

impl Issuer {
    /// A new random issuer.
    pub fn generate() -> Issuer {
        Issuer {
            key: nkeys::KeyPair::new_account(),
        }
    }

    /// The issuer of this account seed (`SA…`).
    pub fn from_seed(seed: &str) -> Result<Issuer, CalloutError> {
        let key = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|error| CalloutError::Seed(error.to_string()))?;
        if !matches!(key.key_pair_type(), nkeys::KeyPairType::Account) {
            return Err(CalloutError::Seed("a seed of another kind of nkey".into()));
        }
        Ok(Issuer { key })
    }

    /// The issuer from `SQUALL_CALLOUT_SEED`, if set.
    pub fn from_env() -> Result<Option<Issuer>, CalloutError> {
        match std::env::var(SEED_ENV) {
            Ok(seed) if !seed.trim().is_empty() => Issuer::from_seed(&seed).map(Some),
            _ => Ok(None),
        }
    }

    /// The public key nats-server's `auth_callout.issuer` names (`A…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The seed, to store (a secret).
    pub fn seed(&self) -> String {
        self.key
            .seed()
            .expect("a generated or parsed key has its seed")
    }

    /// A token for one new process of `function`.
    pub fn mint(&self, function: &str) -> Result<FunctionToken, CalloutError> {
        crate::validate_function_name(function)?;
        let process = uuid::Uuid::new_v4().simple().to_string();
        let claims = TokenClaims {
            function: function.to_string(),
            process: process.clone(),
            iat: now(),
        };
        let body = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signed = format!("{TOKEN_TAG}.{body}");
        let signature = self
            .key
            .sign(signed.as_bytes())
            .map_err(|error| CalloutError::Sign(error.to_string()))?;
        Ok(FunctionToken {
            function: function.to_string(),
            process,
            token: format!("{signed}.{}", B64.encode(signature)),
        })
    }

    /// Checks a token this issuer (or another fleet's, holding the same seed) minted.
    pub fn verify(&self, token: &str) -> Result<Grant, CalloutError> {
        let mut parts = token.split('.');
        let (Some(TOKEN_TAG), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CalloutError::Malformed);
        };
        let signature = B64.decode(signature).map_err(|_| CalloutError::Malformed)?;
        self.key
            .verify(format!("{TOKEN_TAG}.{body}").as_bytes(), &signature)
            .map_err(|_| CalloutError::Signature)?;
        let claims: TokenClaims = B64
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(CalloutError::Malformed)?;
        crate::validate_function_name(&claims.function)?;
        let process_ok = !claims.process.is_empty()
            && claims.process.len() <= 64
            && claims.process.chars().all(|c| c.is_ascii_alphanumeric());
        if !process_ok {
            return Err(CalloutError::Malformed);
        }
        Ok(Grant {
            function: claims.function,
            process: claims.process,
        })
    }

    /// The answer to one authorization request (a JWT nats-server signed): an authorization
    /// response JWT holding either a user JWT for the token's function or an error. `Err` only
    /// when the request cannot be read (then nobody can be answered; the server times out and
    /// refuses the connection).
    pub fn authorize(&self, request: &[u8]) -> Result<Vec<u8>, CalloutError> {
        let request = read_request(request)?;
        let outcome = request
            .token
            .as_deref()
            .ok_or(CalloutError::Malformed)
            .and_then(|token| self.verify(token));
        let nats = match outcome {
            Ok(grant) => json!({
                "jwt": self.user_jwt(&request.user_nkey, &grant)?,
                "type": "authorization_response",
                "version": 2,
            }),
            Err(error) => json!({
                "error": error.to_string(),
                "type": "authorization_response",
                "version": 2,
            }),
        };
        let claims = json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "iat": now(),
            "iss": self.public_key(),
            "sub": request.user_nkey,
            "aud": request.server_id,
            "nats": nats,
        });
        Ok(self.sign_jwt(&claims)?.into_bytes())
    }

    /// A user JWT for the connection `user_nkey` (the server's) with `grant`'s permissions.
    fn user_jwt(&self, user_nkey: &str, grant: &Grant) -> Result<String, CalloutError> {
        let permissions = permissions(&grant.function, &grant.process);
        let claims = json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "iat": now(),
            "iss": self.public_key(),
            "sub": user_nkey,
            "name": format!("fn:{}:{}", grant.function, grant.process),
            "aud": ACCOUNT,
            "nats": {
                "pub": { "allow": permissions.publish },
                "sub": { "allow": permissions.subscribe },
                "subs": -1,
                "data": -1,
                "payload": -1,
                "type": "user",
                "version": 2,
            },
        });
        self.sign_jwt(&claims)
    }

    fn sign_jwt(&self, claims: &serde_json::Value) -> Result<String, CalloutError> {
        let signed = format!(
            "{}.{}",
            B64.encode(JWT_HEADER),
            B64.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let signature = self
            .key
            .sign(signed.as_bytes())
            .map_err(|error| CalloutError::Sign(error.to_string()))?;
        Ok(format!("{signed}.{}", B64.encode(signature)))
    }
}

/// What the callout reads of an authorization request.
struct Request {
    user_nkey: String,
    server_id: String,
    token: Option<String>,
}

/// Decodes an authorization request JWT and checks it is signed by the server it names.
fn read_request(jwt: &[u8]) -> Result<Request, CalloutError> {
    let bad = |why: &str| CalloutError::Request(why.to_string());
    let text = std::str::from_utf8(jwt).map_err(|_| bad("not text"))?;
    let mut parts = text.trim().split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWT"));
    };
    let claims: serde_json::Value = B64
        .decode(body)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| bad("unreadable claims"))?;
    let issuer = claims["iss"].as_str().ok_or_else(|| bad("no issuer"))?;
    let signature = B64.decode(signature).map_err(|_| bad("bad signature"))?;
    nkeys::KeyPair::from_public_key(issuer)
        .and_then(|server| server.verify(format!("{header}.{body}").as_bytes(), &signature))
        .map_err(|_| bad("the signature does not verify"))?;
    let nats = &claims["nats"];
    if nats["type"] != "authorization_request" {
        return Err(bad("not an authorization request"));
    }
    let user_nkey = nats["user_nkey"]
        .as_str()
        .ok_or_else(|| bad("no user_nkey"))?;
    let server_id = nats["server_id"]["id"]
        .as_str()
        .ok_or_else(|| bad("no server id"))?;
    let token = nats["connect_opts"]["auth_token"]
        .as_str()
        .map(str::to_string);
    Ok(Request {
        user_nkey: user_nkey.to_string(),
        server_id: server_id.to_string(),
        token,
    })
}

/// The subjects a process of one function may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The subjects of function `function`'s process `process`: its own jobs, results, dead
/// letters, state namespace and registry entry, events, its inbox; read-only lookups that
/// cannot be narrowed by subject are named below.
pub fn permissions(function: &str, process: &str) -> Permissions {
    let consumer = consumer_name(function);
    let registry_key = format!("$KV.{REGISTRY_BUCKET}.{function}");
    let state_keys = format!("$KV.{STATE_BUCKET}.{function}.>");
    let mut publish: Vec<String> = [
        // open_topology: stream info (configuration and counts, no messages).
        "JOBS",
        "RESULTS",
        "DLQ",
        "SQUALL_ADVISORIES",
        "SCHEDULES",
        "EVENTS",
        "KV_squall_registry",
        "KV_squall_idempotency",
        "KV_squall_triggers",
        "KV_squall_fleet",
        "KV_squall_state",
        "KV_squall_cancels",
        "OBJ_squall_artifacts",
    ]
    .iter()
    .map(|stream| format!("$JS.API.STREAM.INFO.{stream}"))
    .collect();
    let payload_stream = crate::payloads::payload_stream(function);
    let payload_bucket = crate::payloads::payload_bucket(function);
    publish.extend([
        // Its own payload bucket (inputs and outputs above the inline limit): info, object
        // metadata, chunks through an ordered consumer (also recreated named), puts, and the
        // purge of an unfinished put's chunks. Another function's bucket stays out of reach.
        format!("$JS.API.STREAM.INFO.{payload_stream}"),
        format!("$JS.API.DIRECT.GET.{payload_stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{payload_stream}"),
        format!("$JS.API.CONSUMER.CREATE.{payload_stream}.>"),
        format!("$JS.API.STREAM.PURGE.{payload_stream}"),
        format!("$JS.FC.{payload_stream}.>"),
        format!("$O.{payload_bucket}.>"),
        // Its own jobs: consumer info, pulls, acks (and naks, progress, terminations).
        format!("$JS.API.CONSUMER.INFO.{JOBS_STREAM}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer}"),
        format!("$JS.ACK.{JOBS_STREAM}.{consumer}.>"),
        // Its own results and dead letters.
        results_subject(function, "*"),
        dlq_subject(function, "*"),
        // A synchronous job's terminal result, to the dispatcher waiting for it. Not narrowed:
        // the reply subject names the waiting dispatcher and the invocation, not the function.
        "_INBOX_dispatcher.squall-reply.>".into(),
        // RESULTS lookups: an invocation's latest record whichever function stored it (the
        // forged-id check) and a duplicate's stored record by sequence. Not narrowed: both
        // name an id or a sequence, not a function (read-only).
        "$JS.API.STREAM.MSG.GET.RESULTS".into(),
        "$JS.API.DIRECT.GET.RESULTS".into(),
        "$JS.API.DIRECT.GET.RESULTS.>".into(),
        // Its own registry entry: a get, and a watch through a named ordered consumer whose
        // filter is part of the subject (the server checks it is the consumer's filter).
        format!("$JS.API.DIRECT.GET.KV_{REGISTRY_BUCKET}.{registry_key}"),
        format!("$JS.API.CONSUMER.CREATE.KV_{REGISTRY_BUCKET}.*.{registry_key}"),
        format!("$JS.FC.KV_{REGISTRY_BUCKET}.>"),
        // Its own state namespace: gets, puts and deletes, and the cache's named watch.
        format!("$JS.API.DIRECT.GET.KV_{STATE_BUCKET}.{state_keys}"),
        format!("$JS.API.CONSUMER.CREATE.KV_{STATE_BUCKET}.*.{state_keys}"),
        format!("$JS.FC.KV_{STATE_BUCKET}.>"),
        state_keys,
        // Cancellations (invocation ids only): watch and gets, read-only. Not narrowed: the
        // keys are invocation ids.
        format!("$JS.API.CONSUMER.CREATE.KV_{CANCELS_BUCKET}"),
        // The same watch recreated after a gap (a broker restart, a leader change): async-nats
        // names the replacement `<name>_<n>`, with its filter in the subject.
        format!("$JS.API.CONSUMER.CREATE.KV_{CANCELS_BUCKET}.>"),
        format!("$JS.API.DIRECT.GET.KV_{CANCELS_BUCKET}.>"),
        format!("$JS.FC.KV_{CANCELS_BUCKET}.>"),
        // Artifacts (function libraries, no secrets): object info and chunks, read-only. Not
        // narrowed: chunks are named by a random id, not by function.
        "$JS.API.CONSUMER.CREATE.OBJ_squall_artifacts".into(),
        "$JS.API.CONSUMER.CREATE.OBJ_squall_artifacts.>".into(),
        "$JS.API.DIRECT.GET.OBJ_squall_artifacts.>".into(),
        "$JS.FC.OBJ_squall_artifacts.>".into(),
        // Worker heartbeats in the fleet bucket (keys `worker.<host>-<pid>`). Not narrowed to
        // this process: the pid is known only once it runs. A forged heartbeat misleads the
        // fleet's view, not the data; the fleet allocation and supervisors' keys stay out.
        format!("$KV.squall_fleet.{}>", crate::fleet::WORKER_PREFIX),
        // Functions' events (host services' publish), and which stream (if any) captures an
        // event's subject (stream names only).
        "events.>".into(),
        "$JS.API.STREAM.NAMES".into(),
    ]);
    Permissions {
        publish,
        subscribe: vec![format!("{INBOX_ROOT}.{process}.>")],
    }
}

/// Answers authorization requests on `client` (logged in as a role user allowed to subscribe
/// to `$SYS.REQ.USER.AUTH`) until the connection closes. Every fleet may run one: they share a
/// queue group.
pub async fn serve(
    client: Client,
    issuer: Arc<Issuer>,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let mut requests = client
        .queue_subscribe(AUTH_SUBJECT, QUEUE_GROUP.into())
        .await?;
    // The subscription is live once the server has it: flush so a caller may rely on it.
    let _ = client.flush().await;
    Ok(tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply.clone() else {
                continue;
            };
            match issuer.authorize(&request.payload) {
                Ok(answer) => {
                    if let Err(error) = client.publish(reply, answer.into()).await {
                        tracing::warn!(message = "cannot answer an authorization request", error = %error);
                    }
                }
                Err(error) => {
                    tracing::warn!(message = "unreadable authorization request", error = %error)
                }
            }
        }
    }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_function_and_verifies_only_with_its_issuer() {
        let issuer = Issuer::generate();
        let token = issuer.mint("hello").unwrap();
        let grant = issuer.verify(&token.token).unwrap();
        assert_eq!(grant.function, "hello");
        assert_eq!(grant.process, token.process);
        let same = Issuer::from_seed(&issuer.seed()).unwrap();
        assert_eq!(same.verify(&token.token).unwrap(), grant);
        let other = Issuer::generate();
        assert!(matches!(
            other.verify(&token.token),
            Err(CalloutError::Signature)
        ));
    }

    #[test]
    fn a_token_with_another_function_does_not_verify() {
        let issuer = Issuer::generate();
        let token = issuer.mint("hello").unwrap().token;
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        claims["fn"] = "other".into();
        parts[1] = B64.encode(serde_json::to_vec(&claims).unwrap());
        assert!(matches!(
            issuer.verify(&parts.join(".")),
            Err(CalloutError::Signature)
        ));
        for garbage in [
            "",
            "x",
            "sqfn1.a.b",
            "sqfn1..",
            "a.b.c.d",
            "secret-password",
        ] {
            assert!(issuer.verify(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn no_token_for_an_invalid_function_name() {
        let issuer = Issuer::generate();
        for name in ["", "a.b", "a*", ">", "a b"] {
            assert!(issuer.mint(name).is_err(), "{name}");
        }
    }

    /// An authorization request as nats-server signs it, for `token`.
    fn request(token: Option<&str>) -> (Vec<u8>, String, String) {
        let server = nkeys::KeyPair::new_server();
        let user = nkeys::KeyPair::new_user();
        let claims = json!({
            "iss": server.public_key(),
            "aud": "nats-authorization-request",
            "nats": {
                "type": "authorization_request",
                "version": 2,
                "server_id": { "id": server.public_key(), "name": "n1" },
                "user_nkey": user.public_key(),
                "connect_opts": { "auth_token": token },
            },
        });
        let signed = format!(
            "{}.{}",
            B64.encode(JWT_HEADER),
            B64.encode(serde_json::to_vec(&claims).unwrap())
        );
        let signature = B64.encode(server.sign(signed.as_bytes()).unwrap());
        (
            format!("{signed}.{signature}").into_bytes(),
            server.public_key(),
            user.public_key(),
        )
    }

    /// The claims of a JWT `issuer` signed.
    fn claims(jwt: &str, issuer: &Issuer) -> serde_json::Value {
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        issuer
            .key
            .verify(signed.as_bytes(), &B64.decode(signature).unwrap())
            .expect("signed by the issuer");
        let body = signed.split('.').nth(1).unwrap();
        serde_json::from_slice(&B64.decode(body).unwrap()).unwrap()
    }

    #[test]
    fn a_valid_token_is_answered_with_a_user_of_its_function_for_that_connection() {
        let issuer = Issuer::generate();
        let token = issuer.mint("hello").unwrap();
        let (request, server, user) = request(Some(&token.token));
        let answer = issuer.authorize(&request).unwrap();
        let response = claims(std::str::from_utf8(&answer).unwrap(), &issuer);
        assert_eq!(response["aud"], server);
        assert_eq!(response["sub"], user);
        assert_eq!(response["iss"], issuer.public_key());
        assert_eq!(response["nats"]["type"], "authorization_response");
        assert!(response["nats"]["error"].is_null());
        let jwt = claims(response["nats"]["jwt"].as_str().unwrap(), &issuer);
        assert_eq!(jwt["sub"], user);
        assert_eq!(jwt["aud"], ACCOUNT);
        let expected = permissions("hello", &token.process);
        assert_eq!(jwt["nats"]["pub"]["allow"], json!(expected.publish));
        assert_eq!(jwt["nats"]["sub"]["allow"], json!(expected.subscribe));
    }

    #[test]
    fn a_missing_or_foreign_token_is_answered_with_an_error_and_no_user() {
        let issuer = Issuer::generate();
        let foreign = Issuer::generate().mint("hello").unwrap().token;
        for token in [None, Some("garbage"), Some(foreign.as_str())] {
            let (request, _, _) = request(token);
            let answer = issuer.authorize(&request).unwrap();
            let response = claims(std::str::from_utf8(&answer).unwrap(), &issuer);
            assert!(response["nats"]["jwt"].is_null(), "{token:?}");
            assert!(response["nats"]["error"].is_string(), "{token:?}");
        }
    }

    #[test]
    fn a_request_not_signed_by_its_server_is_not_answered() {
        let issuer = Issuer::generate();
        let (mut request, _, _) = request(Some("x"));
        let last = request.len() - 2;
        request[last] = if request[last] == b'A' { b'B' } else { b'A' };
        assert!(issuer.authorize(&request).is_err());
        assert!(issuer.authorize(b"not a jwt").is_err());
    }

    #[test]
    fn only_account_seeds_are_issuers() {
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        assert!(Issuer::from_seed(&user).is_err());
        assert!(Issuer::from_seed("not a seed").is_err());
    }

    #[test]
    fn a_function_reaches_its_own_payload_bucket_only() {
        let p = permissions("hello", "p1");
        assert!(p
            .publish
            .contains(&"$O.squall_payloads_hello.>".to_string()));
        assert!(p
            .publish
            .contains(&"$JS.API.CONSUMER.CREATE.OBJ_squall_payloads_hello".to_string()));
        for subject in &p.publish {
            if subject.contains("squall_payloads") {
                assert!(subject.contains("squall_payloads_hello"), "{subject}");
                assert!(!subject.contains('*'), "{subject}");
            }
        }
    }

    #[test]
    fn permissions_name_only_the_function_and_its_process() {
        let p = permissions("hello", "p1");
        assert_eq!(p.subscribe, vec!["_INBOX_fn.p1.>".to_string()]);
        assert!(p
            .publish
            .contains(&"$JS.API.CONSUMER.MSG.NEXT.JOBS.fn-hello".to_string()));
        assert!(p.publish.contains(&"results.hello.*".to_string()));
        for subject in &p.publish {
            assert!(!subject.starts_with("jobs."), "{subject}");
            assert!(!subject.contains("squall_keys"), "{subject}");
            assert!(!subject.starts_with("$KV.squall_registry"), "{subject}");
            assert!(!subject.contains(".DELETE."), "{subject}");
            assert_ne!(
                subject, "$JS.API.CONSUMER.CREATE.KV_squall_state",
                "{subject}"
            );
            assert_ne!(subject, "$JS.API.CONSUMER.CREATE.KV_squall_registry");
        }
    }
}
