//! A bundle's manifest, `squall-bundle.json`: which runtime it needs and where its handler is.

use std::path::Path;

use serde::Deserialize;

/// The manifest's file name at the bundle root.
pub const MANIFEST_FILE: &str = "squall-bundle.json";
/// The manifest format this runtime reads.
pub const FORMAT: u32 = 1;
/// The runtime name a bundle must ask for.
pub const RUNTIME: &str = "python3.11";

/// Why a bundle's manifest is unusable; each message starts with the manifest's file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("{MANIFEST_FILE}: cannot read it: {0}")]
    Unreadable(String),
    #[error("{MANIFEST_FILE}: {0}")]
    Invalid(String),
    #[error("{MANIFEST_FILE}: format {0} is not supported (this runtime reads format {FORMAT})")]
    Format(u32),
    #[error("{MANIFEST_FILE}: this platform runs {RUNTIME}; the bundle asks for {0}")]
    Runtime(String),
    #[error("{MANIFEST_FILE}: handler {0:?} must be MODULE.FUNCTION, like app.handler")]
    Handler(String),
}

/// The manifest as written.
#[derive(Deserialize)]
struct RawManifest {
    format: u32,
    runtime: String,
    handler: String,
}

/// Where the handler lives: `function` of the (dotted) Python `module`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub module: String,
    pub function: String,
}

impl Handler {
    /// Parses Lambda's handler string `MODULE.FUNCTION` (`app.handler`, `pkg.app.handler`).
    pub fn parse(text: &str) -> Result<Handler, BundleError> {
        let invalid = || BundleError::Handler(text.to_owned());
        let (module, function) = text.rsplit_once('.').ok_or_else(invalid)?;
        if !module.split('.').all(is_identifier) || !is_identifier(function) {
            return Err(invalid());
        }
        Ok(Handler {
            module: module.to_owned(),
            function: function.to_owned(),
        })
    }
}

/// Whether `name` is a Python identifier in the ASCII subset (what a handler string may use).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads and validates `<dir>/squall-bundle.json`.
pub fn read_manifest(dir: &Path) -> Result<Handler, BundleError> {
    let text = std::fs::read(dir.join(MANIFEST_FILE))
        .map_err(|error| BundleError::Unreadable(error.to_string()))?;
    parse_manifest(&text)
}

/// Validates the text of a manifest and returns its handler.
pub fn parse_manifest(text: &[u8]) -> Result<Handler, BundleError> {
    let raw: RawManifest =
        serde_json::from_slice(text).map_err(|error| BundleError::Invalid(error.to_string()))?;
    if raw.format != FORMAT {
        return Err(BundleError::Format(raw.format));
    }
    if raw.runtime != RUNTIME {
        return Err(BundleError::Runtime(raw.runtime));
    }
    Handler::parse(&raw.handler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_string_names_a_module_and_a_function() {
        let handler = Handler::parse("app.handler").unwrap();
        assert_eq!(
            (handler.module.as_str(), handler.function.as_str()),
            ("app", "handler")
        );
        let nested = Handler::parse("pkg.app.main").unwrap();
        assert_eq!(
            (nested.module.as_str(), nested.function.as_str()),
            ("pkg.app", "main")
        );
        for bad in [
            "app",
            "app.",
            ".handler",
            "my-app.handler",
            "app.1st",
            "a..b",
        ] {
            assert_eq!(
                Handler::parse(bad),
                Err(BundleError::Handler(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_manifest_for_another_runtime_is_refused_with_both_names() {
        let error =
            parse_manifest(br#"{"format": 1, "runtime": "javascript", "handler": "app.handler"}"#)
                .unwrap_err();
        assert_eq!(
            error.to_string(),
            "squall-bundle.json: this platform runs python3.11; the bundle asks for javascript"
        );
    }

    #[test]
    fn a_manifest_of_another_format_or_shape_is_refused() {
        let error = parse_manifest(br#"{"format": 2, "runtime": "python3.11", "handler": "a.b"}"#);
        assert_eq!(error, Err(BundleError::Format(2)));
        let error = parse_manifest(br#"{"format": 1, "runtime": "python3.11"}"#).unwrap_err();
        assert!(error.to_string().contains("handler"), "{error}");
    }
}
