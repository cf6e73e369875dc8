//! `export_function!` with an init function: the exported symbols and their behaviour.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{host, invoke, Recorder};
use serde::{Deserialize, Serialize};
use squall_sdk::abi::{
    FreeFn, InitFn, InvokeFn, SquallHost, LOG_INFO, SQUALL_ABI_VERSION, SQUALL_ERROR, SQUALL_OK,
    SQUALL_PANIC, SQUALL_RETRY,
};
use squall_sdk::{export_function, Context, FnError, Host};

static INITIALISED: AtomicBool = AtomicBool::new(false);

fn init(host: &Host) -> Result<(), String> {
    host.info("warming up");
    INITIALISED.store(true, Ordering::SeqCst);
    Ok(())
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Action {
    Add { a: i64, b: i64 },
    Fail,
    Retry,
    Panic,
}

#[derive(Serialize)]
struct Sum {
    sum: i64,
}

fn handle(ctx: &Context, action: Option<Action>) -> Result<Sum, FnError> {
    ctx.info("handling");
    match action {
        None => Ok(Sum { sum: 0 }),
        Some(Action::Add { a, b }) => Ok(Sum { sum: a + b }),
        Some(Action::Fail) => Err(FnError::permanent("asked to fail")),
        Some(Action::Retry) => Err(FnError::retry_after(
            "asked to retry",
            std::time::Duration::from_millis(10),
        )),
        Some(Action::Panic) => panic!("asked to panic"),
    }
}

export_function!(handle, init = init);

const INVOKE: InvokeFn = squall_invoke;
const FREE: FreeFn = squall_free;
const INIT: InitFn = squall_init;

#[test]
fn abi_version_is_exported_as_one() {
    assert_eq!(squall_abi_version, SQUALL_ABI_VERSION);
    assert_eq!(squall_abi_version, 1);
}

#[test]
fn init_runs_the_init_function_with_the_host() {
    let recorder = Recorder::default();
    let host: SquallHost = host(&recorder);
    // SAFETY: the host and its recorder outlive the call.
    let status = unsafe { INIT(&host) };
    assert_eq!(status, 0);
    assert!(INITIALISED.load(Ordering::SeqCst));
    assert_eq!(recorder.lines(), vec![(LOG_INFO, "warming up".to_owned())]);
}

#[test]
fn init_accepts_a_null_host() {
    // SAFETY: a null host is allowed.
    assert_eq!(unsafe { INIT(std::ptr::null()) }, 0);
}

#[test]
fn exported_invoke_returns_json_output_and_logs() {
    let outcome = invoke(INVOKE, FREE, br#"{"action": "add", "a": 2, "b": 40}"#);
    assert_eq!(outcome.status, SQUALL_OK);
    assert_eq!(outcome.text(), r#"{"sum":42}"#);
    assert_eq!(outcome.logs, vec![(LOG_INFO, "handling".to_owned())]);
}

#[test]
fn exported_invoke_accepts_no_input_for_an_option() {
    let outcome = invoke(INVOKE, FREE, b"");
    assert_eq!(
        (outcome.status, outcome.text()),
        (SQUALL_OK, r#"{"sum":0}"#)
    );
}

#[test]
fn exported_invoke_maps_each_outcome_to_its_status() {
    let outcome = invoke(INVOKE, FREE, br#"{"action": "fail"}"#);
    assert_eq!(
        (outcome.status, outcome.text()),
        (SQUALL_ERROR, "asked to fail")
    );

    let outcome = invoke(INVOKE, FREE, br#"{"action": "retry"}"#);
    assert_eq!(
        (outcome.status, outcome.text()),
        (SQUALL_RETRY, "asked to retry")
    );
    assert_eq!(outcome.retry_after_ms, 10);

    let outcome = invoke(INVOKE, FREE, br#"{"action": "panic"}"#);
    assert_eq!(
        (outcome.status, outcome.text()),
        (SQUALL_PANIC, "asked to panic")
    );

    let outcome = invoke(INVOKE, FREE, br#"{"action": "dance"}"#);
    assert_eq!(outcome.status, SQUALL_ERROR);
    assert!(
        outcome
            .text()
            .starts_with("invalid input: unknown variant `dance`"),
        "{}",
        outcome.text()
    );
}
