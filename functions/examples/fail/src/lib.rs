//! Example function: always fails, permanently, or with a retry when asked; for testing the
//! platform's failure paths.

use std::time::Duration;

use serde_json::Value;
use squall_sdk::{export_raw_function, Context, FnError};

/// The message of the permanent failure.
pub const FAIL_MESSAGE: &str = "fail: this function always fails";
/// The message of the retryable failure.
pub const RETRY_MESSAGE: &str = "fail: asked to retry";
/// The delay suggested with the retryable failure.
pub const RETRY_AFTER: Duration = Duration::from_millis(10);

/// Fails with a retryable error when the input is a JSON object with `"retry": true`, and with a
/// permanent error for any other input (including input that is not JSON at all).
pub fn fail(_ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let retry = serde_json::from_slice::<Value>(input)
        .is_ok_and(|input| input.get("retry") == Some(&Value::Bool(true)));
    if retry {
        Err(FnError::retry_after(RETRY_MESSAGE, RETRY_AFTER))
    } else {
        Err(FnError::permanent(FAIL_MESSAGE))
    }
}

export_raw_function!(fail);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> FnError {
        fail(&Context::new("fail", "1"), input).unwrap_err()
    }

    #[test]
    fn fails_permanently_by_default() {
        for input in [&b""[..], b"{}", b"not json", br#"{"retry": false}"#] {
            assert_eq!(run(input), FnError::permanent(FAIL_MESSAGE));
        }
    }

    #[test]
    fn asks_for_a_retry_when_told_to() {
        assert_eq!(
            run(br#"{"retry": true}"#),
            FnError::retry_after("fail: asked to retry", Duration::from_millis(10))
        );
    }
}
