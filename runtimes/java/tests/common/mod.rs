//! Test helpers: Java sources compiled into bundles, and contexts whose host collects the log
//! lines and keeps state and events in memory.

#![allow(dead_code)]

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(unused_imports)] // each test binary uses some of them
pub use squall_sdk::testing::{call, call_with, Call, Logs, Services};
use tempfile::TempDir;

/// Compiles Java `sources` (path under `src/`, text) against the SDK into a jar, once per
/// distinct set of sources: the jar lives under cargo's target temporary folder, named by a hash
/// of the sources and the SDK, and is made in a folder of this process's own then renamed into
/// place, so test processes running at once never see a half-written jar.
pub fn jar(sources: &[(&str, &str)]) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    sources.hash(&mut hasher);
    squall_runtime_java::SDK_JAR.hash(&mut hasher);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-tests");
    let done = root.join(format!("{:016x}", hasher.finish()));
    let jar = done.join("app.jar");
    if jar.exists() {
        return jar;
    }
    let work = root.join(format!(
        "work-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    let mut files = Vec::new();
    for (name, text) in sources {
        let path = work.join("src").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).expect("source folder");
        std::fs::write(&path, text).expect("source file");
        files.push(path);
    }
    let classes = work.join("classes");
    std::fs::create_dir_all(&classes).expect("classes folder");
    let javac = Command::new("javac")
        .args(["--release", "17", "-encoding", "UTF-8", "-nowarn", "-cp"])
        .arg(squall_runtime_java::SDK_CLASSES_DIR)
        .arg("-d")
        .arg(&classes)
        .args(&files)
        .output()
        .expect("javac on PATH (install a JDK 17: apt-get install openjdk-17-jdk-headless)");
    assert!(
        javac.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let packed = Command::new("jar")
        .arg("--create")
        .arg("--file")
        .arg(work.join("app.jar"))
        .arg("-C")
        .arg(&classes)
        .arg(".")
        .status()
        .expect("jar on PATH");
    assert!(packed.success(), "jar failed");
    std::fs::remove_dir_all(work.join("src")).expect("clearing sources");
    // Another process may have won the race; its jar is the same.
    if std::fs::rename(&work, &done).is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(jar.exists(), "{} was not made", jar.display());
    jar
}

/// A bundle for the java17 runtime with `handler`, holding `jar` as `app.jar`.
pub fn bundle(handler: &str, jar: &Path) -> TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let manifest = format!(r#"{{"format": 1, "runtime": "java17", "handler": "{handler}"}}"#);
    write(dir.path(), "squall-bundle.json", &manifest);
    std::fs::copy(jar, dir.path().join("app.jar")).expect("copying the jar");
    dir
}

pub fn write(root: &Path, name: &str, text: &str) {
    let path = root.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("bundle subdirectory");
    }
    std::fs::write(path, text).expect("bundle file");
}
