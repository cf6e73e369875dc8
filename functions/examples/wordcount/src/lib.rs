//! Example function: counts the words of a UTF-8 text, as raw bytes in and JSON out.

use std::collections::BTreeMap;

use serde::Serialize;
use squall_sdk::{export_raw_function, Context, FnError};

/// `{"words": 3, "counts": {"a": 2, "b": 1}}`; a `BTreeMap` keeps the keys sorted so the same
/// text always gives the same bytes.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// How many words the text has in all.
    pub words: u64,
    /// How often each lowercased word occurs.
    pub counts: BTreeMap<String, u64>,
}

/// Counts lowercased maximal runs of alphanumeric characters.
pub fn count_words(text: &str) -> Counts {
    let mut counts = Counts::default();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        counts.words += 1;
        *counts.counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// The handler: invalid UTF-8 is a permanent error, since the same bytes never improve.
pub fn wordcount(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let text = std::str::from_utf8(input)
        .map_err(|error| FnError::permanent(format!("wordcount: input is not UTF-8: {error}")))?;
    let counts = count_words(text);
    ctx.debug(&format!("wordcount: {} words", counts.words));
    Ok(serde_json::to_vec(&counts)?)
}

export_raw_function!(wordcount);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lowercased_alphanumeric_runs() {
        let counts = count_words("The cat, the HAT; the-end 42x!");
        assert_eq!(counts.words, 7);
        assert_eq!(counts.counts["the"], 3);
        assert_eq!(counts.counts["42x"], 1);
        assert_eq!(counts.counts.len(), 5);
    }

    #[test]
    fn output_is_sorted_json() {
        let output = wordcount(&Context::new("wordcount", "1"), "b a B".as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            r#"{"words":3,"counts":{"a":1,"b":2}}"#
        );
    }

    #[test]
    fn empty_text_has_no_words() {
        let output = wordcount(&Context::new("wordcount", "1"), b"").unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            r#"{"words":0,"counts":{}}"#
        );
    }

    #[test]
    fn non_alphabetic_scripts_count_too() {
        assert_eq!(count_words("Ünïcödé straße ÜNÏCÖDÉ").counts["ünïcödé"], 2);
    }

    #[test]
    fn invalid_utf8_is_a_permanent_error() {
        let error = wordcount(&Context::new("wordcount", "1"), &[0x66, 0xff]).unwrap_err();
        assert!(!error.is_retry());
        assert!(
            error.message().starts_with("wordcount: input is not UTF-8"),
            "{error}"
        );
    }
}
