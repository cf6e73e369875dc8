//! Example function that does no work: it returns its input unchanged, so a benchmark measures
//! the platform around a call rather than the call.

use squall_sdk::{export_raw_function, Context, FnError};

/// The handler: echoes the input bytes.
pub fn noop(_ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    Ok(input.to_vec())
}

export_raw_function!(noop);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_input() {
        let ctx = Context::new("noop", "1");
        assert_eq!(noop(&ctx, b"abc").unwrap(), b"abc");
        assert!(noop(&ctx, b"").unwrap().is_empty());
    }
}
