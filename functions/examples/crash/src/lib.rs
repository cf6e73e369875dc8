//! Example function: aborts its process; for testing crash containment and the dead-letter queue.

use squall_sdk::{export_raw_function, Context, FnError};

/// Aborts the worker process, unless the input is `ok` (so a test can tell a healthy call apart).
pub fn crash(_ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    if input == b"ok" {
        return Ok(b"not crashed".to_vec());
    }
    std::process::abort();
}

export_raw_function!(crash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_input_does_not_crash() {
        assert_eq!(
            crash(&Context::new("crash", "1"), b"ok").unwrap(),
            b"not crashed"
        );
    }
}
