//! Subject, stream and bucket names, and validation of function names.

/// The work-queue stream that holds pending jobs.
pub const JOBS_STREAM: &str = "JOBS";
/// The stream that holds invocation results.
pub const RESULTS_STREAM: &str = "RESULTS";
/// The stream that holds dead letters.
pub const DLQ_STREAM: &str = "DLQ";
/// The KV bucket of function records (name → `FunctionRecord`).
pub const REGISTRY_BUCKET: &str = "squall_registry";
/// The object store bucket of artifacts, keyed by `sha256-<hex>`.
pub const ARTIFACT_BUCKET: &str = "squall_artifacts";
/// The longest accepted function name.
pub const MAX_FUNCTION_NAME: usize = 64;

/// The subject a job for `function` is published to.
pub fn jobs_subject(function: &str) -> String {
    format!("jobs.{function}")
}

/// The subject a result of `function`'s invocation `id` is published to.
pub fn results_subject(function: &str, id: &str) -> String {
    format!("results.{function}.{id}")
}

/// The subjects of every result of invocation `id`, whichever function it belongs to: what a
/// lookup by id reads the latest of.
pub fn any_results_subject(id: &str) -> String {
    format!("results.*.{id}")
}

/// The longest invocation id a job may claim.
pub const MAX_INVOCATION_ID: usize = 128;

/// Whether a client-set invocation id can name an invocation: one literal subject token (1 to
/// `MAX_INVOCATION_ID` printable ASCII characters, none of them `.`, `*` or `>`), so that
/// `results.<fn>.<id>` is one invocation's subject and `results.*.<id>` matches no other's.
pub fn is_invocation_id(id: &str) -> bool {
    (1..=MAX_INVOCATION_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}

/// The token that marks a direct-reply subject: `<inbox prefix>.squall-reply.<waiter>.<id>`.
pub const REPLY_TOKEN: &str = "squall-reply";

/// The subjects one waiting dispatcher receives direct replies on (its subscription is
/// `<root>.*`), under its own inbox prefix so that only its role may read them.
pub fn reply_root(inbox_prefix: &str, waiter: &str) -> String {
    format!("{inbox_prefix}.{REPLY_TOKEN}.{waiter}")
}

/// Whether a worker may send invocation `id`'s terminal result to `subject`: only a direct
/// reply subject for that id, never a system, JetStream API or wildcard subject (a plain NATS
/// client sets this header too, and must not steer a worker's publishes elsewhere).
pub fn is_reply_subject(subject: &str, id: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.len() >= 4
        && !subject.starts_with('$')
        && tokens[tokens.len() - 1] == id
        && tokens[tokens.len() - 3] == REPLY_TOKEN
        && tokens
            .iter()
            .all(|t| !t.is_empty() && *t != "*" && *t != ">" && !t.contains(char::is_whitespace))
}

/// The subject the dead letter of `function`'s invocation `id` is published to.
pub fn dlq_subject(function: &str, id: &str) -> String {
    format!("dlq.{function}.{id}")
}

/// The stream that captures JetStream's MAX_DELIVERIES advisories for JOBS consumers.
pub const ADVISORY_STREAM: &str = "SQUALL_ADVISORIES";
/// The subjects of those advisories (one per function consumer).
pub const MAX_DELIVERIES_SUBJECTS: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBS.*";
/// The durable consumer, shared by all dispatchers, that moves exhausted jobs to the DLQ.
pub const DLQ_MOVER: &str = "dlq-mover";
/// The KV bucket mapping idempotency keys to invocation ids.
pub const IDEMPOTENCY_BUCKET: &str = "squall_idempotency";

/// The stream holding schedules (`schedules.<name>`, fired by the broker) and their ticks
/// (`cron.<name>`).
pub const SCHEDULES_STREAM: &str = "SCHEDULES";
/// The durable consumer, shared by all dispatchers, that turns ticks into invocations.
pub const CRON_DISPATCH: &str = "cron-dispatch";
/// The stream that captures the subjects bound by subject triggers.
pub const EVENTS_STREAM: &str = "EVENTS";
/// A subject EVENTS always holds, so it has one before any trigger exists.
pub const EVENTS_PLACEHOLDER_SUBJECT: &str = "squall.events.unbound";
/// The KV bucket of triggers (name → JSON `TriggerRecord`).
pub const TRIGGERS_BUCKET: &str = "squall_triggers";
/// The KV bucket where fleet supervisors keep their heartbeats and the shared allocation.
pub const FLEET_BUCKET: &str = "squall_fleet";
/// The KV bucket of API keys (key name → JSON record holding the key's SHA-256, never the key).
pub const KEYS_BUCKET: &str = "squall_keys";
/// Functions' own key-value state, one namespace per function (`<function>.<key>`).
pub const STATE_BUCKET: &str = "squall_state";
/// The largest value a function may store in its state.
pub const STATE_MAX_VALUE: usize = 1 << 20;
/// Cancellation requests: one key per cancelled invocation id, which every worker follows.
pub const CANCELS_BUCKET: &str = "squall_cancels";

/// The `Nats-Msg-Id` of an invocation's terminal result, whoever stores it (a worker, the
/// dead-letter mover or a cancellation): RESULTS keeps the first and drops any other within its
/// duplicate window, so an invocation ends in exactly one state.
pub fn terminal_message_id(id: &str) -> String {
    format!("final-{id}")
}

/// The durable consumer on RESULTS, shared by every dispatcher, that delivers the CloudEvent of
/// each terminal result to the function's destinations and the call's callback.
pub const DESTINATIONS_CONSUMER: &str = "destinations";
/// The destinations consumer's filter when no function needs it: a RESULTS subject no result
/// can have (`~` is not allowed in a function name), since an empty filter would mean all.
pub const DESTINATIONS_PLACEHOLDER_FILTER: &str = "results.~.~";
/// Each invocation's destination outcomes (and a call's callback URL), by invocation id.
pub const DELIVERIES_BUCKET: &str = "squall_deliveries";
/// Functions that had a call with `X-Callback-Url` lately (key: function name), so the
/// destinations consumer follows their results.
pub const CALLBACKS_BUCKET: &str = "squall_callbacks";
/// Dead letters of destination deliveries that finally failed.
pub const DESTINATION_DLQ_STREAM: &str = "DESTINATION_DLQ";

/// Where a destination delivery's dead letter lives: `dlq-destinations.<fn>.<id>.<target>`.
pub fn destination_dlq_subject(function: &str, id: &str, target: &str) -> String {
    format!("dlq-destinations.{function}.{id}.{target}")
}

/// The RESULTS filter of one function's results.
pub fn results_filter(function: &str) -> String {
    format!("results.{function}.*")
}

/// The subject holding schedule `name`.
pub fn schedule_subject(name: &str) -> String {
    format!("schedules.{name}")
}

/// The subject schedule `name`'s ticks are stored on.
pub fn tick_subject(name: &str) -> String {
    format!("cron.{name}")
}

/// The durable consumer that turns trigger `name`'s events into invocations.
pub fn trigger_consumer_name(name: &str) -> String {
    format!("trigger-{name}")
}

/// The durable pull consumer that serves `function`'s jobs.
pub fn consumer_name(function: &str) -> String {
    format!("fn-{function}")
}

/// The object store key of an artifact with the given hex sha256.
pub fn artifact_key(sha256_hex: &str) -> String {
    format!("sha256-{sha256_hex}")
}

/// Why a function name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("function name is empty")]
    Empty,
    #[error("function name is {0} characters long; the limit is {MAX_FUNCTION_NAME}")]
    TooLong(usize),
    #[error("function name {name:?} contains {ch:?}; use only ASCII letters, digits, '-' and '_'")]
    BadChar { name: String, ch: char },
}

/// Checks that `name` is usable as a NATS subject token, consumer name and KV key.
pub fn validate_function_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let chars = name.chars().count();
    if chars > MAX_FUNCTION_NAME {
        return Err(NameError::TooLong(chars));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadChar {
            name: name.to_string(),
            ch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_id_is_one_literal_subject_token() {
        for id in [
            "0193a5c2-1111-7000-8000-000000000001",
            "order-17",
            "a:b",
            "x",
        ] {
            assert!(is_invocation_id(id), "{id}");
        }
        let long = "a".repeat(MAX_INVOCATION_ID + 1);
        for id in ["", "a.b", "*", ">", "a b", "a\tb", "ü", long.as_str()] {
            assert!(!is_invocation_id(id), "{id:?}");
        }
    }

    #[test]
    fn only_direct_reply_subjects_for_the_same_invocation_are_replied_to() {
        let root = reply_root("_INBOX_dispatcher", "abc");
        assert!(is_reply_subject(&format!("{root}.id1"), "id1"));
        assert!(!is_reply_subject(&format!("{root}.id1"), "id2"));
        assert!(!is_reply_subject("$JS.API.squall-reply.x.id1", "id1"));
        assert!(!is_reply_subject("_INBOX.squall-reply.*.id1", "id1"));
        assert!(!is_reply_subject("jobs.hello", "hello"));
        assert!(!is_reply_subject("squall-reply.x.id1", "id1"));
    }

    #[test]
    fn plain_names_are_accepted() {
        assert_eq!(validate_function_name("hello"), Ok(()));
        assert_eq!(validate_function_name("c-hello_2"), Ok(()));
    }

    #[test]
    fn subject_metacharacters_are_refused() {
        for bad in ["a.b", "a*", "a>", "a b", "ä"] {
            assert!(
                matches!(validate_function_name(bad), Err(NameError::BadChar { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_and_long_names_are_refused() {
        assert_eq!(validate_function_name(""), Err(NameError::Empty));
        let long = "x".repeat(65);
        assert_eq!(validate_function_name(&long), Err(NameError::TooLong(65)));
        assert_eq!(validate_function_name(&"x".repeat(64)), Ok(()));
    }
}
