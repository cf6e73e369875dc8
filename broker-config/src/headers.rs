//! NATS header names that carry invocation metadata beside the raw payload bytes.

/// The invocation id (UUIDv7). Optional on jobs from plain NATS clients: the worker derives one.
pub const INVOCATION_ID: &str = "Squall-Invocation-Id";
/// The function name, on results.
pub const FUNCTION: &str = "Squall-Function";
/// The function version (`sha256:<hex>`) that ran, on results.
pub const VERSION: &str = "Squall-Version";
/// The 1-based attempt number, on results.
pub const ATTEMPT: &str = "Squall-Attempt";
/// The invocation status, on results: see `InvocationStatus`.
pub const STATUS: &str = "Squall-Status";
/// The error kind on a failed result: see `ErrorKind`.
pub const ERROR_KIND: &str = "Squall-Error-Kind";
/// When the invocation was accepted, in Unix milliseconds.
pub const CREATED_AT: &str = "Squall-Created-At";
/// When the attempt that produced the result started, in Unix milliseconds.
pub const STARTED_AT: &str = "Squall-Started-At";
/// When the result was produced, in Unix milliseconds.
pub const FINISHED_AT: &str = "Squall-Finished-At";
/// How long the function ran, in microseconds.
pub const DURATION_US: &str = "Squall-Duration-Us";
/// The function's captured log lines, as a JSON array of `{level, message}`.
pub const LOGS: &str = "Squall-Logs";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// JetStream de-duplication id.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// What kind of event created the job (`http`, `nats`, …); absent on plain NATS publishes.
pub const SOURCE: &str = "Squall-Source";
/// Which worker process produced a result (`<host>-<pid>`).
pub const WORKER: &str = "Squall-Worker";
/// On a result: the W3C trace id (32 hex digits) of the invocation's trace, so a reader of the
/// result can link to it; absent when unknown.
pub const TRACE_ID: &str = "Squall-Trace-Id";
/// On a result a worker stored: the `JOBS` stream sequence of the job message whose attempt it
/// records, so that a later delivery of that message tells its own earlier records from those
/// of another job that claimed the same invocation id.
pub const JOB_SEQUENCE: &str = "Squall-Job-Sequence";
/// On a replayed job: the invocation id of the dead letter it replays.
pub const REPLAY_OF: &str = "Squall-Replay-Of";
/// On a job made from a cron tick: the schedule's name.
pub const SCHEDULE: &str = "Squall-Schedule";
/// On a job made from a trigger: the trigger's name.
pub const TRIGGER: &str = "Squall-Trigger";
/// On a job made from an event: the subject the event was published to.
pub const EVENT_SUBJECT: &str = "Squall-Event-Subject";
/// On a job made from a key-value change: the bucket, key and operation (`put`, `delete`).
pub const KV_BUCKET: &str = "Squall-Kv-Bucket";
pub const KV_KEY: &str = "Squall-Kv-Key";
pub const KV_OP: &str = "Squall-Kv-Op";
/// CPU time the function used on its thread, in microseconds (for metering).
pub const CPU_US: &str = "Squall-Cpu-Us";
/// A result's state operations and the bytes they moved (absent when none).
pub const KV_OPS: &str = "Squall-Kv-Ops";
pub const KV_BYTES: &str = "Squall-Kv-Bytes";
/// On a synchronous job: the subject of the dispatcher waiting for it, under that dispatcher's
/// own inbox prefix. The worker sends the terminal result there as well as storing it.
pub const REPLY_TO: &str = "Squall-Reply-To";

/// On a job made from a web request (`Squall-Source: web`): the request's method, path, query,
/// headers and client address, as the JSON of `web::WebRequest`.
pub const WEB: &str = "Squall-Web";

/// On a job made from a CloudEvent: its context attributes (`id`, `source`, `type`, …,
/// `extensions`) as single-line JSON, which the worker puts in `ctx.event.cloudevent`.
pub const CLOUDEVENT: &str = "Squall-Cloudevent";
/// On a job or result whose input or output is above the inline limit: `<size> <object>`,
/// the object in the function's payload bucket that holds it (the body is then empty).
pub const PAYLOAD: &str = "Squall-Payload";
/// On a synchronous job: `true` when the caller asked for the output as it is streamed; the
/// worker then sends each chunk to the job's `Squall-Reply-To` as well as storing it.
pub const STREAM: &str = "Squall-Stream";
/// On a streamed chunk sent to a reply subject: the chunk's byte offset in the output.
pub const CHUNK_OFFSET: &str = "Squall-Chunk-Offset";

/// The prefix of every header Squall itself sets.
pub const SQUALL_PREFIX: &str = "Squall-";
/// The prefix of the headers NATS and JetStream interpret (`Nats-Msg-Id`, `Nats-Schedule`, …).
pub const NATS_PREFIX: &str = "Nats-";

/// Whether `name` is a header Squall or NATS gives a meaning to. Such headers are never copied
/// from an event, a dead letter or a job into another message or into a function's view of its
/// caller's headers: a copied `Nats-Msg-Id` or `Squall-Reply-To` would change what the copy does.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(SQUALL_PREFIX) || name.starts_with(NATS_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squall_and_nats_headers_are_reserved_and_others_are_not() {
        for name in [NATS_MSG_ID, REPLY_TO, INVOCATION_ID, WEB, "Nats-Schedule"] {
            assert!(is_reserved(name), "{name}");
        }
        for name in [
            "X-Tenant-Id",
            TRACEPARENT,
            "Content-Type",
            "Squall",
            "Natsy-Thing",
        ] {
            assert!(!is_reserved(name), "{name}");
        }
    }
}
