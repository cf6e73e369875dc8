//! Example function: sleeps for the number of milliseconds it is given; for testing timeouts.

use squall_sdk::{export_raw_function, Context, FnError};
use std::time::Duration;

/// The longest sleep accepted: one hour.
pub const MAX_MS: u64 = 3_600_000;

/// Input: a number of milliseconds as text (`"250"`); empty means 0. Output: `slept <ms> ms`.
pub fn sleep(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let text = std::str::from_utf8(input)
        .map_err(|e| FnError::permanent(format!("sleep: input is not UTF-8: {e}")))?
        .trim();
    let ms: u64 = if text.is_empty() {
        0
    } else {
        text.parse().map_err(|_| {
            FnError::permanent(format!("sleep: {text:?} is not a number of milliseconds"))
        })?
    };
    if ms > MAX_MS {
        return Err(FnError::permanent(format!(
            "sleep: {ms} ms is longer than {MAX_MS} ms"
        )));
    }
    let trace = ctx.traceparent().unwrap_or("none");
    ctx.debug(&format!("sleep: sleeping {ms} ms (trace {trace})"));
    std::thread::sleep(Duration::from_millis(ms));
    Ok(format!("slept {ms} ms").into_bytes())
}

export_raw_function!(sleep);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_the_given_milliseconds() {
        let out = sleep(&Context::new("sleep", "1"), b"5").unwrap();
        assert_eq!(out, b"slept 5 ms");
    }

    #[test]
    fn non_numbers_are_permanent_errors() {
        let err = sleep(&Context::new("sleep", "1"), b"soon").unwrap_err();
        assert_eq!(
            err.message(),
            "sleep: \"soon\" is not a number of milliseconds"
        );
        assert!(!err.is_retry());
    }
}
