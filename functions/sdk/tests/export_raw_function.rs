//! `export_raw_function!` without an init function, and `squall_free` returning memory.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::invoke;
use squall_sdk::abi::{FreeFn, InvokeFn, SquallBuf, SquallBytes, SquallOutput, SQUALL_OK};
use squall_sdk::{export_raw_function, Context, FnError};

/// Counts the bytes live on the current thread, so a test can tell whether `squall_free`
/// gave back what `squall_invoke` handed out while other tests run on other threads.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with` because the allocator also runs while thread-locals are torn down.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect on it.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn shout(_ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let text = std::str::from_utf8(input).map_err(|_| FnError::permanent("not UTF-8"))?;
    Ok(text.to_uppercase().into_bytes())
}

export_raw_function!(shout);

const INVOKE: InvokeFn = squall_invoke;
const FREE: FreeFn = squall_free;

#[test]
fn raw_export_returns_bytes() {
    let outcome = invoke(INVOKE, FREE, b"quiet");
    assert_eq!(outcome.status, SQUALL_OK);
    assert_eq!(outcome.text(), "QUIET");
    assert_eq!(squall_abi_version, 1);
}

#[test]
fn squall_free_returns_the_output_buffer() {
    let mut out = SquallOutput {
        body: SquallBuf::EMPTY,
        retry_after_ms: 0,
    };
    let input = b"a fairly long input so the output buffer is easy to see".to_vec();
    let before = live_bytes();
    // SAFETY: ctx may be null; input and out are valid for the call.
    let status = unsafe { INVOKE(std::ptr::null(), SquallBytes::from_slice(&input), &mut out) };
    assert_eq!(status, SQUALL_OK);
    assert_eq!(
        live_bytes() - before,
        out.body.cap as isize,
        "only the output stays allocated"
    );
    // SAFETY: the buffer came from squall_invoke and is freed once.
    unsafe { FREE(out.body) };
    assert_eq!(live_bytes(), before);
}

#[test]
fn squall_free_ignores_empty_buffers() {
    // SAFETY: an empty buffer is a documented no-op.
    unsafe { FREE(SquallBuf::EMPTY) };
}
