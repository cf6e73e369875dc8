//! Raw handlers called through the C ABI: bytes pass through untouched.

mod common;

use common::invoke;
use squall_sdk::abi::{
    SquallBuf, SquallBytes, SquallCtx, SquallOutput, SQUALL_ERROR, SQUALL_OK, SQUALL_PANIC,
};
use squall_sdk::{Context, FnError};

unsafe extern "C" fn free(buf: SquallBuf) {
    // SAFETY: the test host frees each returned buffer once.
    unsafe { squall_sdk::__free(buf) }
}

fn reverse(_ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    match input {
        b"panic" => panic!("raw panic"),
        b"fail" => Err(FnError::permanent("raw failure")),
        _ => Ok(input.iter().rev().copied().collect()),
    }
}

unsafe extern "C" fn reverse_entry(
    ctx: *const SquallCtx,
    input: SquallBytes,
    out: *mut SquallOutput,
) -> i32 {
    // SAFETY: the test host upholds ABI v1 for the duration of the call.
    unsafe { squall_sdk::__invoke_raw(ctx, input, out, reverse) }
}

#[test]
fn raw_bytes_pass_through_untouched() {
    let outcome = invoke(reverse_entry, free, &[0xff, 0x00, b'a']);
    assert_eq!(outcome.status, SQUALL_OK);
    assert_eq!(outcome.body, vec![b'a', 0x00, 0xff]);
}

#[test]
fn raw_empty_input_gives_empty_output() {
    let outcome = invoke(reverse_entry, free, b"");
    assert_eq!(outcome.status, SQUALL_OK);
    assert!(outcome.body.is_empty());
}

#[test]
fn raw_errors_and_panics_map_to_their_statuses() {
    let outcome = invoke(reverse_entry, free, b"fail");
    assert_eq!(
        (outcome.status, outcome.text()),
        (SQUALL_ERROR, "raw failure")
    );
    let outcome = invoke(reverse_entry, free, b"panic");
    assert_eq!(
        (outcome.status, outcome.text()),
        (SQUALL_PANIC, "raw panic")
    );
}
