//! `POST /v1/functions/{name}/batch`: many invocations from one NDJSON body (one JSON input per
//! line), validated whole before any job is published, then published with pipelined acks.

use crate::core::registry::Registry;
use crate::core::submit::Submitter;
use crate::core::submit::{
    checked_idempotency_key, forwarded_headers, is_valid_traceparent, job_headers, new_traceparent,
    Job, IDEMPOTENCY_KEY,
};
use crate::core::versions::{job_version, resolve, Qualified};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::limits::read_limited;
use crate::http::limits::BatchLimits;
use crate::state::Limits;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use squall_api::invocations::Binary;
use squall_api::invocations::{BatchAccepted, QualifierParams};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::headers as h;
use squall_broker::names::jobs_subject;
use squall_broker::time::now_ms;
use std::collections::VecDeque;
use tracing::Instrument as _;

/// Publishes in flight before the oldest one's acknowledgement is awaited.
const ACK_WINDOW: usize = 256;
/// What the jobs of a batch carry as `Squall-Source`: a batch is an HTTP submission, and the
/// function sees the same `ctx.event.source` as for a single invoke.
const SOURCE: &str = "http";

/// Why a body is not a batch. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batch is empty: send one JSON value per line")]
    Empty,
    #[error("the batch has more than {limit} lines, the limit per request; split it")]
    TooManyLines { limit: usize },
    #[error("line {line} is blank; every line must hold one JSON value")]
    BlankLine { line: usize },
    #[error("line {line} is not valid JSON ({reason})")]
    InvalidJson { line: usize, reason: String },
    #[error("line {line} is {size} bytes, larger than the payload limit of {limit} bytes")]
    LineTooLarge {
        line: usize,
        size: usize,
        limit: usize,
    },
}

impl From<BatchError> for ApiError {
    fn from(error: BatchError) -> ApiError {
        let message = error.to_string();
        match error {
            BatchError::Empty => ApiError::bad_request(ErrorCode::EmptyBatch, message),
            BatchError::TooManyLines { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooManyLines,
                message,
            )
            .with("limit", limit),
            BatchError::BlankLine { line } | BatchError::InvalidJson { line, .. } => {
                ApiError::bad_request(ErrorCode::InvalidLine, message).with("line", line)
            }
            BatchError::LineTooLarge { line, limit, .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::LineTooLarge,
                message,
            )
            .with("line", line)
            .with("limit", limit),
        }
    }
}

/// Splits an NDJSON body into its lines' payloads (each without its `\n` or `\r\n`), checking
/// every line before returning any: each one JSON value, none blank, none larger than
/// `max_payload`, at most `limits.max_lines` of them. One final line ending is allowed.
pub fn split_lines(
    body: &Bytes,
    limits: &BatchLimits,
    max_payload: usize,
) -> Result<Vec<Bytes>, BatchError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BatchError::Empty);
    }
    let content = body.strip_suffix(b"\n").unwrap_or(body);
    let count = content.iter().filter(|&&b| b == b'\n').count() + 1;
    if count > limits.max_lines {
        return Err(BatchError::TooManyLines {
            limit: limits.max_lines,
        });
    }
    let mut lines = Vec::with_capacity(count);
    let mut start = 0;
    for (index, raw) in content.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let end = start + raw.len();
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        if text.iter().all(u8::is_ascii_whitespace) {
            return Err(BatchError::BlankLine { line });
        }
        if text.len() > max_payload {
            return Err(BatchError::LineTooLarge {
                line,
                size: text.len(),
                limit: max_payload,
            });
        }
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            return Err(BatchError::InvalidJson {
                line,
                reason: json_reason(&error),
            });
        }
        lines.push(body.slice(start..start + text.len()));
        start = end + 1;
    }
    Ok(lines)
}

/// serde_json's message without its "at line 1": within one NDJSON line only the column means
/// anything.
fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let what = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    format!("{what} at column {}", error.column())
}

/// The invocation ids of a batch's `count` lines, in line order. Each is a UUIDv7 with the
/// batch's creation time; its counter bits hold the line's index (so a batch's ids sort in line
/// order), and its last 48 bits come from the batch id (so two batches created in the same
/// millisecond get different ids). The same batch id and time give the same ids: that is what
/// makes a repeated Idempotency-Key publish the same jobs again.
pub fn line_ids(batch: &uuid::Uuid, created_at_ms: u64, count: usize) -> Vec<String> {
    let salt = Sha256::digest(batch.as_bytes());
    (0..count)
        .map(|index| line_id(&salt[..6], created_at_ms, index).to_string())
        .collect()
}

fn line_id(salt: &[u8], created_at_ms: u64, index: usize) -> uuid::Uuid {
    debug_assert!(index < 1 << 26, "a line index has 26 bits");
    let i = index as u32;
    let mut bytes = [0u8; 10];
    // The index goes around the version nibble and the variant bits the builder sets.
    bytes[0] = ((i >> 22) & 0x0f) as u8;
    bytes[1] = (i >> 14) as u8;
    bytes[2] = ((i >> 8) & 0x3f) as u8;
    bytes[3] = i as u8;
    bytes[4..].copy_from_slice(salt);
    uuid::Builder::from_unix_timestamp_millis(created_at_ms, &bytes).into_uuid()
}

/// Submit many asynchronous invocations at once: one JSON input per line (NDJSON), validated
/// whole before any is queued. Runs inside the `squall.batch` span, which continues the
/// caller's trace when the request carries a valid `traceparent`.
#[utoipa::path(post, path = "/v1/functions/{name}/batch", tag = "invocations",
    params(("name" = String, Path, description = crate::http::extract::QUALIFIED_NAME, pattern = "^[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]{1,64})?$"), QualifierParams,
        ("Idempotency-Key" = Option<String>, Header, description = "Same key and body, same invocations.")),
    request_body(description = "One JSON input per line (lines end in \\n or \\r\\n).", content(
        (String = "application/x-ndjson"),
        (Binary = "application/octet-stream"))),
    responses(
        (status = 202, description = "Accepted: every line is one queued invocation.", body = BatchAccepted),
        (status = 400, description = "Invalid name or Idempotency-Key; an empty batch (empty_batch), or a line that is not JSON (invalid_line, with its number).", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 413, description = "The body is larger than the batch limit (default 16 MiB); more lines than the line limit; a line larger than the payload limit.", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for a different batch of this function.", body = ErrorBody),
        (status = 503, description = "The broker did not accept every job; retry with the same Idempotency-Key.", body = ErrorBody)))]
pub async fn submit(
    State(registry): State<Registry>,
    State(submitter): State<Submitter>,
    State(limits): State<Limits>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<QualifierParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "squall.batch",
        otel.kind = "server",
        squall.function = %name,
        squall.batch_size = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let client_trace = headers.get(h::TRACEPARENT).and_then(|v| v.to_str().ok());
    squall_telemetry::set_parent(
        &span,
        squall_telemetry::context_from_traceparent(client_trace),
    );
    let response = submit_traced(
        &registry,
        &submitter,
        limits,
        &name,
        query.qualifier.as_deref(),
        &headers,
        body,
    )
    .instrument(span.clone())
    .await;
    let status = match &response {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    span.record("http.response.status_code", status.as_u16());
    response
}

async fn submit_traced(
    registry: &Registry,
    submitter: &Submitter,
    limits: Limits,
    name: &str,
    qualifier: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Batch lines travel inline.
    let max_payload = limits.inline_payload;
    let limits = limits.batch;
    let body = read_limited(body, limits.max_bytes).await.map_err(|_| {
        ApiError::too_large(format!(
            "the batch is larger than the limit of {} bytes; split it",
            limits.max_bytes
        ))
    })?;
    // The body is read before the name is judged, so a client still sending gets an answer.
    let qualified = Qualified::parse(name, qualifier)?;
    let name = qualified.name;
    let record = registry.load(&name).await?;
    if qualified.qualifier.is_some() {
        resolve(&record, qualified.qualifier.as_deref(), "")?;
    }
    let name = name.as_str();
    let lines = split_lines(&body, &limits, max_payload)?;
    tracing::Span::current().record("squall.batch_size", lines.len());
    let (batch, created_at_ms) = match headers.get(IDEMPOTENCY_KEY) {
        None => (uuid::Uuid::now_v7(), now_ms()),
        Some(key) => claim_batch_key(submitter, name, key, &body).await?,
    };
    let ids = line_ids(&batch, created_at_ms, lines.len());
    // Each line draws its own version, so an alias's weights hold within a batch too.
    let versions = ids
        .iter()
        .map(|id| resolve(&record, qualified.qualifier.as_deref(), id).map(|v| job_version(&v)))
        .collect::<Result<Vec<_>, _>>()?;
    let traceparent = headers
        .get(h::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_traceparent(v))
        .map(str::to_string)
        .unwrap_or_else(new_traceparent);
    let template = Job {
        function: name,
        version: &record.version,
        id: "",
        created_at_ms,
        traceparent: &traceparent,
        source: SOURCE,
        extra_headers: forwarded_headers(headers),
        reply_to: None,
    };
    submitter.check_backlog(name, lines.len()).await?;
    publish(submitter, &template, &lines, &ids, &versions).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAccepted {
            count: ids.len(),
            invocation_ids: ids.iter().map(ToString::to_string).collect(),
        }),
    )
        .into_response())
}

/// Maps `(function, key)` to one batch (its id, creation time and body digest) for the
/// idempotency window, in the bucket single invokes use, under a key of its own namespace.
/// A repeat with a different body is refused: its lines would not be the ones the ids name.
async fn claim_batch_key(
    submitter: &Submitter,
    function: &str,
    key: &HeaderValue,
    body: &[u8],
) -> Result<(uuid::Uuid, u64), ApiError> {
    let key = checked_idempotency_key(key)?;
    let kv_key = hex::encode(Sha256::digest(
        format!("batch\n{function}\n{key}").as_bytes(),
    ));
    let digest = hex::encode(Sha256::digest(body));
    let value = format!("{} {} {digest}", uuid::Uuid::now_v7(), now_ms());
    let (value, _repeated) = submitter.claim_idempotency_value(&kv_key, value).await?;
    let mut words = value.split(' ');
    let (Some(batch), Some(created), Some(stored_digest)) =
        (words.next(), words.next(), words.next())
    else {
        return Err(ApiError::internal(
            "idempotency key",
            format!("unreadable batch record {value:?}"),
        ));
    };
    if stored_digest != digest {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            format!("Idempotency-Key {key:?} was used for a different batch of {function}; use a new key for new input"),
        ));
    }
    let batch =
        uuid::Uuid::parse_str(batch).map_err(|e| ApiError::internal("idempotency key", e))?;
    Ok((batch, created.parse().unwrap_or(0)))
}

/// Publishes one job per line without awaiting each acknowledgement: up to `ACK_WINDOW` are in
/// flight, the oldest awaited before the next publish. Each stored job is counted and indexed
/// like a single invoke's. If the broker fails, no more are published, the outstanding acks are
/// still awaited (so what was stored is indexed), and the answer is a 503.
async fn publish(
    submitter: &Submitter,
    template: &Job<'_>,
    lines: &[Bytes],
    ids: &[String],
    versions: &[String],
) -> Result<(), ApiError> {
    let span = tracing::info_span!(
        "squall.publish",
        otel.kind = "producer",
        squall.function = %template.function,
        squall.source = %template.source,
        squall.batch_size = lines.len(),
    );
    let traceparent =
        squall_telemetry::traceparent_of(&span).unwrap_or_else(|| template.traceparent.to_string());
    let job = |index: usize| Job {
        function: template.function,
        version: &versions[index],
        id: &ids[index],
        created_at_ms: template.created_at_ms,
        traceparent: template.traceparent,
        source: template.source,
        extra_headers: template.extra_headers.clone(),
        reply_to: None,
    };
    async {
        let jetstream = &submitter.broker.topology.jetstream;
        let subject = async_nats::Subject::from(jobs_subject(template.function));
        let mut pending = VecDeque::with_capacity(ACK_WINDOW);
        let mut failure: Option<squall_broker::publish::PublishError> = None;
        let mut stored = 0usize;
        // A job whose pipelined publish failed is sent again on its own, with the same id,
        // through the publish policy (an election delays the batch instead of cutting it).
        let resend = |index: usize| {
            let headers = job_headers(&job(index), &traceparent);
            squall_broker::publish::publish_acked(
                jetstream,
                &subject,
                headers,
                lines[index].clone(),
                &submitter.broker.publish,
            )
        };
        for (index, payload) in lines.iter().enumerate() {
            if pending.len() >= ACK_WINDOW {
                let Some((done, ack)) = pending.pop_front() else {
                    break;
                };
                let acked = match ack.await {
                    Ok(_) => Ok(()),
                    Err(_) => resend(done).await.map(|_| ()),
                };
                match acked {
                    Ok(()) => {
                        submitter.record_accepted(&job(done));
                        stored += 1;
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            let headers = job_headers(&job(index), &traceparent);
            match jetstream
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await
            {
                Ok(ack) => pending.push_back((index, ack)),
                Err(_) => match resend(index).await {
                    Ok(_) => {
                        submitter.record_accepted(&job(index));
                        stored += 1;
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                },
            }
        }
        for (done, ack) in pending {
            let acked = match ack.await {
                Ok(_) => true,
                // After a failure nothing is sent again; what was stored is still indexed.
                Err(_) if failure.is_some() => false,
                Err(_) => match resend(done).await {
                    Ok(_) => true,
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                },
            };
            if acked {
                submitter.record_accepted(&job(done));
                stored += 1;
            }
        }
        match failure {
            None => Ok(()),
            Some(error) => Err(ApiError::publish(
                &format!(
                    "the batch was accepted only in part ({stored} of {} jobs stored; \
                     retry with the same Idempotency-Key to submit the rest without duplicates)",
                    lines.len()
                ),
                error,
            )),
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::limits::DEFAULT_MAX_BATCH_BYTES;

    fn limits(max_lines: usize) -> BatchLimits {
        BatchLimits {
            max_lines,
            max_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }

    fn split(body: &str) -> Result<Vec<String>, BatchError> {
        split_lines(&Bytes::from(body.to_string()), &limits(5), 20).map(|lines| {
            lines
                .iter()
                .map(|l| String::from_utf8(l.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn each_line_is_one_payload_exactly_as_sent() {
        assert_eq!(
            split("{\"a\": 1}\n 2 \n\"x\"").unwrap(),
            ["{\"a\": 1}", " 2 ", "\"x\""]
        );
    }

    #[test]
    fn a_final_newline_and_crlf_line_endings_are_fine() {
        assert_eq!(split("1\n2\n").unwrap(), ["1", "2"]);
        assert_eq!(split("1\r\n2\r\n").unwrap(), ["1", "2"]);
    }

    #[test]
    fn an_empty_or_blank_body_is_an_empty_batch() {
        assert_eq!(split(""), Err(BatchError::Empty));
        assert_eq!(split("\n \r\n"), Err(BatchError::Empty));
    }

    #[test]
    fn a_blank_line_is_named_by_its_number() {
        assert_eq!(split("1\n\n3"), Err(BatchError::BlankLine { line: 2 }));
        assert_eq!(split("1\n2\n\n"), Err(BatchError::BlankLine { line: 3 }));
    }

    #[test]
    fn a_line_that_is_not_json_is_named_with_the_column() {
        let error = split("1\n{\"a\":}\n3").unwrap_err();
        assert_eq!(
            error,
            BatchError::InvalidJson {
                line: 2,
                reason: "expected value at column 6".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "line 2 is not valid JSON (expected value at column 6)"
        );
        assert!(matches!(
            split("1 2"),
            Err(BatchError::InvalidJson { line: 1, .. })
        ));
    }

    #[test]
    fn too_many_lines_is_refused_before_any_line_is_read() {
        assert_eq!(split("1\n2\n3\n4\n5\n").unwrap().len(), 5);
        assert_eq!(
            split("1\n2\n3\n4\n5\nnot json"),
            Err(BatchError::TooManyLines { limit: 5 })
        );
    }

    #[test]
    fn a_line_over_the_payload_limit_is_named() {
        assert_eq!(
            split("1\n\"0123456789012345678901\""),
            Err(BatchError::LineTooLarge {
                line: 2,
                size: 24,
                limit: 20
            })
        );
    }

    #[test]
    fn errors_map_to_the_documented_statuses_and_codes() {
        let cases = [
            (BatchError::Empty, 400, "empty_batch"),
            (BatchError::TooManyLines { limit: 1 }, 413, "too_many_lines"),
            (BatchError::BlankLine { line: 1 }, 400, "invalid_line"),
            (
                BatchError::LineTooLarge {
                    line: 1,
                    size: 2,
                    limit: 1,
                },
                413,
                "line_too_large",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code.as_str()), (status, code));
        }
    }

    #[test]
    fn line_ids_are_uuidv7_in_line_order_and_the_same_for_the_same_batch() {
        let batch = uuid::Uuid::now_v7();
        let created = 1_750_000_000_000;
        let ids = line_ids(&batch, created, 3000);
        assert_eq!(ids, line_ids(&batch, created, 3000));
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "ids sort in line order");
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "ids are distinct");
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 7);
            let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
            assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, created);
        }
        let other = line_ids(&uuid::Uuid::now_v7(), created, 1);
        assert_ne!(other[0], ids[0], "another batch gets other ids");
        // Every bit of the index counts, across the version and variant bits.
        let salt = [7u8; 6];
        let mut previous = line_id(&salt, created, 0);
        for bit in 0..26 {
            for index in [(1usize << bit) - 1, 1 << bit] {
                let id = line_id(&salt, created, index);
                assert!(id >= previous, "index {index}");
                assert_eq!(id.get_version_num(), 7);
                previous = id;
            }
        }
    }
}
