//! Test helpers: bundles written to temporary directories, and contexts whose host collects
//! the log lines.

#![allow(dead_code)]

use std::path::Path;

#[allow(unused_imports)] // each test binary uses some of them
pub use squall_sdk::testing::{call, call_with, Call, Logs, Services};
use tempfile::TempDir;

/// Writes a bundle (manifest plus `files`) for the python3.11 runtime with `handler`.
pub fn bundle(handler: &str, files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let manifest = format!(r#"{{"format": 1, "runtime": "python3.11", "handler": "{handler}"}}"#);
    write(dir.path(), "squall-bundle.json", &manifest);
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

pub fn write(root: &Path, name: &str, text: &str) {
    let path = root.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("bundle subdirectory");
    }
    std::fs::write(path, text).expect("bundle file");
}
