//! Dead letters: the record kept for an invocation that exhausted its attempts, and how it is
//! assembled from the attempt history in RESULTS.

use crate::headers as h;
use crate::names::{dlq_subject, results_subject};
use crate::record::ResultMeta;
use crate::status::{ErrorKind, InvocationStatus};
use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};

/// One attempt of an invocation, as the DLQ shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    /// `None` when the attempt succeeded.
    pub kind: Option<ErrorKind>,
    pub message: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub duration_us: u64,
    pub worker: String,
}

/// What the DLQ stream holds for one dead invocation (bincode in the message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub invocation_id: String,
    pub function: String,
    pub version: String,
    /// `dead_lettered` or `timed_out`.
    pub status: InvocationStatus,
    pub created_at_ms: u64,
    pub dead_lettered_at_ms: u64,
    pub attempts: Vec<AttemptRecord>,
    /// The original job's headers, in order.
    pub headers: Vec<(String, String)>,
    /// The original job's payload.
    pub payload: Vec<u8>,
}

/// Why a dead letter could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("corrupt dead-letter record: {0}")]
    Decode(String),
    #[error("cannot publish the dead letter: {0}")]
    Publish(String),
}

impl DeadLetter {
    /// Encodes the record for the DLQ stream.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a DeadLetter always encodes")
    }

    /// Decodes a DLQ message body.
    pub fn decode(bytes: &[u8]) -> Result<DeadLetter, DlqError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(record, _)| record)
            .map_err(|e| DlqError::Decode(e.to_string()))
    }

    /// The most recent attempt's error kind.
    pub fn last_kind(&self) -> Option<ErrorKind> {
        self.attempts.last().and_then(|a| a.kind)
    }
}

impl AttemptRecord {
    /// The attempt a result record describes; `body` is the error message for failures.
    pub fn from_result(meta: &ResultMeta, body: &[u8]) -> AttemptRecord {
        AttemptRecord {
            attempt: meta.attempt,
            kind: meta.error_kind,
            message: if meta.error_kind.is_some() {
                String::from_utf8_lossy(body).into_owned()
            } else {
                String::new()
            },
            started_at_ms: meta.started_at_ms,
            finished_at_ms: meta.finished_at_ms,
            duration_us: meta.duration_us,
            worker: meta.worker.clone(),
        }
    }
}

/// Assembles a [`DeadLetter`]: the one way the worker and the dispatchers' dead-letter mover
/// build the record, so that both store the same thing.
#[derive(Debug, Clone)]
pub struct DeadLetterBuilder {
    letter: DeadLetter,
}

impl DeadLetter {
    /// Starts the dead letter of invocation `invocation_id` of `function` (at `version`,
    /// accepted at `created_at_ms`), with status `dead_lettered` until told otherwise.
    pub fn builder(
        invocation_id: &str,
        function: &str,
        version: &str,
        created_at_ms: u64,
    ) -> DeadLetterBuilder {
        DeadLetterBuilder {
            letter: DeadLetter {
                invocation_id: invocation_id.to_string(),
                function: function.to_string(),
                version: version.to_string(),
                status: InvocationStatus::DeadLettered,
                created_at_ms,
                dead_lettered_at_ms: 0,
                attempts: Vec::new(),
                headers: Vec::new(),
                payload: Vec::new(),
            },
        }
    }
}

impl DeadLetterBuilder {
    /// The dead end the invocation reached: `dead_lettered` or `timed_out`.
    pub fn status(mut self, status: InvocationStatus) -> Self {
        self.letter.status = status;
        self
    }

    /// The original job: its headers, every value in order (less credentials: see
    /// [`kept_header`]), and its payload.
    pub fn job(mut self, headers: Option<&async_nats::HeaderMap>, payload: &[u8]) -> Self {
        self.letter.headers = headers
            .iter()
            .flat_map(|hs| hs.iter())
            .flat_map(|(name, values)| {
                let name = name.to_string();
                values
                    .iter()
                    .filter_map(move |v| kept_header(&name, v.as_str()))
            })
            .collect();
        self.letter.payload = payload.to_vec();
        self
    }

    /// The failed attempts among the invocation's result records (see [`result_history`]).
    pub fn history(mut self, history: &[(ResultMeta, Vec<u8>)]) -> Self {
        self.letter.attempts.extend(
            history
                .iter()
                .filter(|(meta, _)| meta.error_kind.is_some())
                .map(|(meta, body)| AttemptRecord::from_result(meta, body)),
        );
        self
    }

    /// A failed attempt the caller knows of that the history may lack; where the history has
    /// the same attempt, the history's record is kept.
    pub fn attempt(mut self, record: AttemptRecord) -> Self {
        self.letter.attempts.push(record);
        self
    }

    /// The dead letter of an invocation that ran `attempts` times, written at
    /// `dead_lettered_at_ms`: an attempt without a record is one whose worker died during it.
    pub fn build(mut self, attempts: u32, dead_lettered_at_ms: u64) -> DeadLetter {
        self.letter.attempts = fill_crashed_attempts(self.letter.attempts, attempts);
        self.letter.dead_lettered_at_ms = dead_lettered_at_ms;
        self.letter
    }
}

/// Request headers that carry a caller's credentials: a dead letter, kept for days and shown
/// to whoever reads the DLQ, never keeps them.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// A job header as its dead letter keeps it: a credential header is dropped, and a web job's
/// request description (`Squall-Web`) loses its credential headers.
pub fn kept_header(name: &str, value: &str) -> Option<(String, String)> {
    if CREDENTIAL_HEADERS
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
    {
        return None;
    }
    if !name.eq_ignore_ascii_case(h::WEB) {
        return Some((name.to_string(), value.to_string()));
    }
    // Unreadable: kept whole is no worse than the job itself, but dropping it is safer.
    let mut request = crate::web::WebRequest::from_header(value)?;
    request.headers.retain(|name, _| {
        !CREDENTIAL_HEADERS
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c))
    });
    Some((name.to_string(), request.to_header()))
}

/// The message recorded for an attempt whose worker died before reporting it.
pub const CRASH_MESSAGE: &str =
    "the worker died during this attempt (crash, kill or lost broker connection)";

/// Fills the gaps in a history up to `attempts` with crash records: an attempt that left no
/// result record is one whose worker died while running it.
pub fn fill_crashed_attempts(mut history: Vec<AttemptRecord>, attempts: u32) -> Vec<AttemptRecord> {
    history.sort_by_key(|a| a.attempt);
    history.dedup_by_key(|a| a.attempt);
    let mut filled = Vec::with_capacity(attempts as usize);
    let mut known = history.into_iter().peekable();
    for n in 1..=attempts.max(1) {
        match known.peek() {
            Some(a) if a.attempt == n => filled.push(known.next().expect("peeked")),
            _ => filled.push(AttemptRecord {
                attempt: n,
                kind: Some(ErrorKind::Crash),
                message: CRASH_MESSAGE.to_string(),
                started_at_ms: 0,
                finished_at_ms: 0,
                duration_us: 0,
                worker: String::new(),
            }),
        }
    }
    filled.extend(known);
    filled
}

/// Reads every result record of an invocation from RESULTS, oldest first.
pub async fn result_history(
    results: &stream::Stream,
    function: &str,
    id: &str,
) -> Vec<(ResultMeta, Vec<u8>)> {
    let subject = results_subject(function, id);
    let mut out = Vec::new();
    let mut next = results.get_first_raw_message_by_subject(&subject, 1).await;
    // An invocation has at most a few hundred records (max_attempts ≤ 100).
    while let Ok(message) = next {
        if let Ok(meta) = ResultMeta::from_headers(&message.headers) {
            out.push((meta, message.payload.to_vec()));
        }
        if out.len() > 1000 {
            break;
        }
        // The first message on the subject at or after this sequence.
        next = results
            .get_first_raw_message_by_subject(&subject, message.sequence + 1)
            .await;
    }
    out
}

/// Publishes a dead letter, de-duplicated by invocation id, and waits for JetStream's ack,
/// trying again through a leader election.
pub async fn publish_dead_letter(
    js: &jetstream::Context,
    letter: &DeadLetter,
) -> Result<(), DlqError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(h::INVOCATION_ID, letter.invocation_id.as_str());
    headers.insert(h::FUNCTION, letter.function.as_str());
    headers.insert(h::STATUS, letter.status.as_str());
    headers.insert(
        h::NATS_MSG_ID,
        format!("dlq-{}", letter.invocation_id).as_str(),
    );
    crate::publish::publish_acked(
        js,
        &dlq_subject(&letter.function, &letter.invocation_id),
        headers,
        letter.encode().into(),
        &crate::publish::PublishPolicy::default(),
    )
    .await
    .map_err(|e| DlqError::Publish(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_keeps_no_credentials_of_a_web_request_or_a_job() {
        let request = crate::web::WebRequest {
            method: "POST".into(),
            path: "/form".into(),
            headers: [
                ("cookie".to_string(), "session=s3cret".to_string()),
                ("authorization".to_string(), "Bearer sq_x".to_string()),
                ("Proxy-Authorization".to_string(), "Basic x".to_string()),
                ("content-type".to_string(), "text/plain".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(h::WEB, request.to_header().as_str());
        headers.insert("Authorization", "Bearer sq_y");
        headers.insert("X-Tenant", "t1");
        let letter = DeadLetter::builder("id", "f", "v", 1)
            .job(Some(&headers), b"body")
            .build(1, 2);
        let text = format!("{:?}", letter.headers);
        assert!(!text.contains("s3cret") && !text.contains("sq_"), "{text}");
        assert!(letter
            .headers
            .iter()
            .any(|(n, v)| n == "X-Tenant" && v == "t1"));
        let (_, web) = letter.headers.iter().find(|(n, _)| n == h::WEB).unwrap();
        let kept = crate::web::WebRequest::from_header(web).unwrap();
        assert_eq!(kept.path, "/form");
        assert_eq!(
            kept.headers.keys().collect::<Vec<_>>(),
            vec!["content-type"]
        );
    }

    fn failed(attempt: u32) -> AttemptRecord {
        AttemptRecord {
            attempt,
            kind: Some(ErrorKind::Panic),
            message: "boom".into(),
            started_at_ms: 1,
            finished_at_ms: 2,
            duration_us: 3,
            worker: "w".into(),
        }
    }

    #[test]
    fn missing_attempts_are_crashes() {
        let filled = fill_crashed_attempts(vec![failed(2)], 3);
        let kinds: Vec<_> = filled.iter().map(|a| (a.attempt, a.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, Some(ErrorKind::Crash)),
                (2, Some(ErrorKind::Panic)),
                (3, Some(ErrorKind::Crash))
            ]
        );
    }

    #[test]
    fn a_complete_history_is_kept_as_is() {
        let history = vec![failed(1), failed(2)];
        assert_eq!(fill_crashed_attempts(history.clone(), 2), history);
    }

    fn result(attempt: u32, status: InvocationStatus, kind: Option<ErrorKind>) -> ResultMeta {
        ResultMeta {
            invocation_id: "id".into(),
            function: "f".into(),
            version: "sha256:00".into(),
            status,
            attempt,
            error_kind: kind,
            created_at_ms: 1,
            started_at_ms: 1,
            finished_at_ms: 2,
            duration_us: 3,
            cpu_us: 0,
            kv_ops: 0,
            kv_bytes: 0,
            logs: Vec::new(),
            worker: "w".into(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_job_and_every_failed_attempt() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Tenant", "acme");
        headers.append("X-Tag", "a");
        headers.append("X-Tag", "b");
        let history = vec![
            (
                result(1, InvocationStatus::Running, None),
                b"ignored".to_vec(),
            ),
            (
                result(1, InvocationStatus::Retrying, Some(ErrorKind::Panic)),
                b"boom".to_vec(),
            ),
        ];
        let letter = DeadLetter::builder("id", "f", "sha256:00", 1)
            .status(InvocationStatus::TimedOut)
            .job(Some(&headers), b"payload")
            .history(&history)
            .build(3, 9);
        assert_eq!(letter.status, InvocationStatus::TimedOut);
        assert_eq!(letter.dead_lettered_at_ms, 9);
        assert_eq!(letter.payload, b"payload");
        let mut names: Vec<_> = letter.headers.clone();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("X-Tag".to_string(), "a".to_string()),
                ("X-Tag".to_string(), "b".to_string()),
                ("X-Tenant".to_string(), "acme".to_string()),
            ]
        );
        let attempts: Vec<_> = letter
            .attempts
            .iter()
            .map(|a| (a.attempt, a.kind, a.message.as_str()))
            .collect();
        assert_eq!(
            attempts,
            vec![
                (1, Some(ErrorKind::Panic), "boom"),
                (2, Some(ErrorKind::Crash), CRASH_MESSAGE),
                (3, Some(ErrorKind::Crash), CRASH_MESSAGE),
            ]
        );
    }

    #[test]
    fn an_attempt_the_history_lacks_is_added_and_one_it_has_is_not_doubled() {
        let history = vec![(
            result(1, InvocationStatus::Retrying, Some(ErrorKind::Panic)),
            b"from history".to_vec(),
        )];
        let known = |attempt: u32, message: &str| AttemptRecord {
            message: message.into(),
            ..failed(attempt)
        };
        let letter = DeadLetter::builder("id", "f", "sha256:00", 1)
            .history(&history)
            .attempt(known(1, "known"))
            .attempt(known(2, "last"))
            .build(2, 9);
        let messages: Vec<_> = letter.attempts.iter().map(|a| a.message.as_str()).collect();
        assert_eq!(messages, vec!["from history", "last"]);
        assert_eq!(letter.status, InvocationStatus::DeadLettered);
        assert!(letter.headers.is_empty() && letter.payload.is_empty());
    }

    #[test]
    fn dead_letters_round_trip() {
        let letter = DeadLetter {
            invocation_id: "id".into(),
            function: "f".into(),
            version: "sha256:00".into(),
            status: InvocationStatus::DeadLettered,
            created_at_ms: 1,
            dead_lettered_at_ms: 2,
            attempts: vec![failed(1)],
            headers: vec![("X-Tenant".into(), "acme".into())],
            payload: vec![0, 1, 2],
        };
        assert_eq!(DeadLetter::decode(&letter.encode()).unwrap(), letter);
    }
}
