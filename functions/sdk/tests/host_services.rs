//! `Context::kv`, `Context::publish`, `Context::cancelled` and `Context::stream_write` through a real `squall_host`, and
//! against hosts that predate them.

mod common;

use common::{
    invoke, invoke_with, Call, CANCELLED, HOST_SIZE_BEFORE_CANCELLED, HOST_SIZE_BEFORE_SERVICES,
    HOST_SIZE_BEFORE_STREAM_WRITE, PUBLISHED, STATE, STREAMED,
};
use serde::{Deserialize, Serialize};
use squall_sdk::abi::{FreeFn, InvokeFn, SQUALL_ERROR, SQUALL_OK};
use squall_sdk::{export_function, Context, FnError, HostError};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Visits {
    count: u64,
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Action {
    Visit,
    Forget,
    Announce { subject: String },
    Probe,
    Cancelled,
    Stream { chunks: Vec<String> },
}

fn handle(ctx: &Context, action: Action) -> Result<String, FnError> {
    match action {
        Action::Visit => {
            let kv = ctx.kv();
            let mut visits = kv
                .get_json::<Visits>("visits")?
                .unwrap_or(Visits { count: 0 });
            visits.count += 1;
            kv.put_json("visits", &visits)?;
            Ok(visits.count.to_string())
        }
        Action::Forget => {
            ctx.kv().delete("visits")?;
            Ok(format!("{:?}", ctx.kv().get("visits")?))
        }
        Action::Announce { subject } => {
            ctx.publish(&subject, b"hello")?;
            Ok("sent".into())
        }
        Action::Probe => match ctx.kv().get("visits") {
            Err(HostError::Unsupported) => Ok("unsupported".into()),
            other => Ok(format!("{other:?}")),
        },
        Action::Cancelled => Ok(ctx.cancelled().to_string()),
        Action::Stream { chunks } => {
            for chunk in &chunks {
                match ctx.stream_write(chunk.as_bytes()) {
                    Err(HostError::Unsupported) => return Ok("unsupported".into()),
                    other => other?,
                }
            }
            Ok("last".into())
        }
    }
}

export_function!(handle);

const INVOKE: InvokeFn = squall_invoke;
const FREE: FreeFn = squall_free;

#[test]
fn state_round_trips_as_json_through_the_host() {
    for expected in ["1", "2", "3"] {
        let out = invoke(INVOKE, FREE, br#"{"action": "visit"}"#);
        assert_eq!(
            (out.status, out.text()),
            (SQUALL_OK, format!("\"{expected}\"").as_str())
        );
    }
    let stored = STATE
        .with(|s| s.borrow().get(&b"visits"[..]).cloned())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Visits>(&stored).unwrap(),
        Visits { count: 3 }
    );
    let out = invoke(INVOKE, FREE, br#"{"action": "forget"}"#);
    assert_eq!(out.text(), "\"None\"");
}

#[test]
fn a_denied_publish_is_a_permanent_error() {
    let out = invoke(
        INVOKE,
        FREE,
        br#"{"action": "announce", "subject": "events.a"}"#,
    );
    assert_eq!(out.status, SQUALL_OK);
    assert_eq!(
        PUBLISHED.with(|p| p.borrow().clone()),
        vec![("events.a".to_string(), b"hello".to_vec())]
    );
    let out = invoke(
        INVOKE,
        FREE,
        br#"{"action": "announce", "subject": "jobs.a"}"#,
    );
    assert_eq!(out.status, SQUALL_ERROR);
    assert_eq!(out.text(), "not allowed");
}

#[test]
fn a_host_from_before_the_services_answers_unsupported_without_crashing() {
    let call = Call {
        host_size: Some(HOST_SIZE_BEFORE_SERVICES),
        ..Call::default()
    };
    let out = invoke_with(INVOKE, FREE, br#"{"action": "probe"}"#, &call);
    assert_eq!((out.status, out.text()), (SQUALL_OK, "\"unsupported\""));
    let out = invoke_with(INVOKE, FREE, br#"{"action": "visit"}"#, &call);
    assert_eq!(out.status, SQUALL_ERROR);
    assert!(
        out.text().contains("no state or event services"),
        "{}",
        out.text()
    );
}

#[test]
fn cancelled_reports_the_hosts_answer_and_false_on_an_older_host() {
    let ask = br#"{"action": "cancelled"}"#;
    CANCELLED.with(|c| c.set(false));
    assert_eq!(invoke(INVOKE, FREE, ask).text(), "\"false\"");
    CANCELLED.with(|c| c.set(true));
    assert_eq!(invoke(INVOKE, FREE, ask).text(), "\"true\"");
    // A host built before `cancelled` was appended: the field is never read.
    let call = Call {
        host_size: Some(HOST_SIZE_BEFORE_CANCELLED),
        ..Call::default()
    };
    assert_eq!(invoke_with(INVOKE, FREE, ask, &call).text(), "\"false\"");
    CANCELLED.with(|c| c.set(false));
}

#[test]
fn streamed_chunks_reach_the_host_in_order_and_an_older_host_is_unsupported() {
    let ask = br#"{"action": "stream", "chunks": ["a", "bc", "d"]}"#;
    STREAMED.with(|s| s.borrow_mut().clear());
    let out = invoke(INVOKE, FREE, ask);
    assert_eq!((out.status, out.text()), (SQUALL_OK, "\"last\""));
    assert_eq!(
        STREAMED.with(|s| s.borrow().clone()),
        vec![b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]
    );
    // A host built before `stream_write` was appended: the field is never read.
    STREAMED.with(|s| s.borrow_mut().clear());
    let call = Call {
        host_size: Some(HOST_SIZE_BEFORE_STREAM_WRITE),
        ..Call::default()
    };
    let out = invoke_with(INVOKE, FREE, ask, &call);
    assert_eq!(out.text(), "\"unsupported\"");
    assert!(STREAMED.with(|s| s.borrow().is_empty()));
}
