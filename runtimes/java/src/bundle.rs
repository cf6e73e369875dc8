//! A bundle's manifest, `squall-bundle.json`, and its class path: the jars at its root and its
//! `classes/` folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The manifest's file name at the bundle root.
pub const MANIFEST_FILE: &str = "squall-bundle.json";
/// The manifest format this runtime reads.
pub const FORMAT: u32 = 1;
/// The runtime name a bundle must ask for.
pub const RUNTIME: &str = "java17";
/// The optional folder of loose class files at the bundle root.
pub const CLASSES_DIR: &str = "classes";

/// Why a bundle is unusable; each message starts with the file it is about.
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
    #[error("{MANIFEST_FILE}: handler {0:?} must be a fully qualified class name, like com.example.Hello")]
    Handler(String),
    #[error("{MANIFEST_FILE}: the bundle has no classes: put *.jar files or a {CLASSES_DIR}/ folder beside it")]
    NoClasses,
    #[error("{0}: the bundle directory cannot be read: {1}")]
    Unlistable(String, String),
}

/// The manifest as written.
#[derive(Deserialize)]
struct RawManifest {
    format: u32,
    runtime: String,
    handler: String,
}

/// Whether `name` is a Java identifier (letters, digits, `_` and `$`, not starting with a digit).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// Reads and validates `<dir>/squall-bundle.json`; returns the handler's class name.
pub fn read_manifest(dir: &Path) -> Result<String, BundleError> {
    let text = std::fs::read(dir.join(MANIFEST_FILE))
        .map_err(|error| BundleError::Unreadable(error.to_string()))?;
    parse_manifest(&text)
}

/// Validates the text of a manifest and returns its handler's fully qualified class name.
pub fn parse_manifest(text: &[u8]) -> Result<String, BundleError> {
    let raw: RawManifest =
        serde_json::from_slice(text).map_err(|error| BundleError::Invalid(error.to_string()))?;
    if raw.format != FORMAT {
        return Err(BundleError::Format(raw.format));
    }
    if raw.runtime != RUNTIME {
        return Err(BundleError::Runtime(raw.runtime));
    }
    if !raw.handler.split('.').all(is_identifier) {
        return Err(BundleError::Handler(raw.handler));
    }
    Ok(raw.handler)
}

/// The bundle's class path: its root's `*.jar` files sorted by name, then `classes/` if present.
pub fn class_path(dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let unlistable = |error: std::io::Error| {
        BundleError::Unlistable(dir.display().to_string(), error.to_string())
    };
    let mut jars = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unlistable)? {
        let path = entry.map_err(unlistable)?.path();
        if path.extension().is_some_and(|ext| ext == "jar") && path.is_file() {
            jars.push(path);
        }
    }
    jars.sort();
    let classes = dir.join(CLASSES_DIR);
    if classes.is_dir() {
        jars.push(classes);
    }
    if jars.is_empty() {
        return Err(BundleError::NoClasses);
    }
    Ok(jars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_is_a_fully_qualified_class_name() {
        let manifest = |handler: &str| {
            format!(r#"{{"format": 1, "runtime": "java17", "handler": "{handler}"}}"#)
        };
        for good in ["com.example.Hello", "Hello", "a.b$Inner", "_x.Y1"] {
            assert_eq!(
                parse_manifest(manifest(good).as_bytes()),
                Ok(good.to_owned())
            );
        }
        for bad in [
            "",
            "com..Hello",
            "com.example.",
            "1st.Hello",
            "com.exa-mple.Hello",
            "a b",
        ] {
            assert_eq!(
                parse_manifest(manifest(bad).as_bytes()),
                Err(BundleError::Handler(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_manifest_for_another_runtime_is_refused_with_both_names() {
        let error = parse_manifest(br#"{"format": 1, "runtime": "python3.11", "handler": "a.B"}"#)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "squall-bundle.json: this platform runs java17; the bundle asks for python3.11"
        );
        let error = parse_manifest(br#"{"format": 2, "runtime": "java17", "handler": "a.B"}"#);
        assert_eq!(error, Err(BundleError::Format(2)));
    }

    #[test]
    fn the_class_path_is_the_sorted_jars_then_the_classes_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jar", "a.jar", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("classes")).unwrap();
        let names: Vec<String> = class_path(dir.path())
            .unwrap()
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jar", "b.jar", "classes"]);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(class_path(empty.path()), Err(BundleError::NoClasses));
    }
}
