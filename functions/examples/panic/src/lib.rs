//! Example function: always panics; for testing that panics come back as `SQUALL_PANIC`.

use squall_sdk::{export_raw_function, Context, FnError};

/// The panic message.
pub const PANIC_MESSAGE: &str = "panic: deliberate panic for testing";

/// Panics, whatever the input.
pub fn deliberate_panic(_ctx: &Context, _input: &[u8]) -> Result<Vec<u8>, FnError> {
    panic!("{PANIC_MESSAGE}");
}

export_raw_function!(deliberate_panic);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_with_the_documented_message() {
        let payload = std::panic::catch_unwind(|| {
            let _ = deliberate_panic(&Context::new("panic", "1"), b"");
        })
        .unwrap_err();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some(PANIC_MESSAGE)
        );
    }
}
