//! Building a function directory into the shared library that gets deployed.

use crate::manifest::{BuildSection, Manifest};
use anyhow::{bail, Context as _};
use serde::Deserialize;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds the function in `dir` as its manifest says and returns the library's path.
pub fn build(dir: &Path, manifest: &Manifest) -> anyhow::Result<PathBuf> {
    match &manifest.build {
        Some(section) => run_build_command(dir, section),
        None if manifest.go => crate::golang::build(dir, &manifest.name),
        None => cargo_build(dir),
    }
}

/// Shows a command line the way a user would type it.
fn shown(program: &OsString, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args)
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the `[build]` command in `dir` and checks its artifact exists.
fn run_build_command(dir: &Path, section: &BuildSection) -> anyhow::Result<PathBuf> {
    let program = OsString::from(&section.command[0]);
    let args: Vec<OsString> = section.command[1..].iter().map(OsString::from).collect();
    let command_line = shown(&program, &args);
    eprintln!("building: {command_line} (in {})", dir.display());
    // The build's own output goes to stderr so that stdout stays clean for `--json`.
    let status = Command::new(&program)
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run the build command `{command_line}`"))?;
    if !status.success() {
        bail!(
            "the build command `{command_line}` failed ({status}) in {}",
            dir.display()
        );
    }
    let artifact = dir.join(&section.artifact);
    if !artifact.is_file() {
        bail!(
            "the build command `{command_line}` succeeded but did not produce the artifact {} named in [build]",
            artifact.display()
        );
    }
    Ok(artifact)
}

/// Runs `cargo build --release` for the crate in `dir` and returns its cdylib.
fn cargo_build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml and squall.toml has no [build] table; add [build] with `command` and `artifact` to build it another way",
            dir.display()
        );
    }
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.display()))?;
    // Under cargo (e.g. in tests) use the same cargo; otherwise the one on PATH.
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let args: Vec<OsString> = vec![
        "build".into(),
        "--release".into(),
        "--message-format=json-render-diagnostics".into(),
        "--manifest-path".into(),
        manifest.clone().into(),
    ];
    let command_line = shown(&program, &args);
    eprintln!("building: {command_line}");
    let mut child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run `{command_line}`"))?;
    let stdout = child.stdout.take().context("cargo's stdout is not piped")?;
    let found = cdylib_from_messages(BufReader::new(stdout), &manifest);
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{command_line}`"))?;
    if !status.success() {
        bail!("`{command_line}` failed ({status})");
    }
    match found? {
        Some(library) => Ok(library),
        None => bail!(
            "`{command_line}` built no cdylib for {}; add `crate-type = [\"cdylib\"]` under [lib]",
            manifest.display()
        ),
    }
}

/// The fields this module reads of one of cargo's JSON messages; other messages (and the
/// lines that are not JSON) are skipped.
#[derive(Debug, Deserialize)]
struct CargoMessage {
    reason: String,
    #[serde(default)]
    manifest_path: Option<PathBuf>,
    #[serde(default)]
    target: Option<CargoTarget>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct CargoTarget {
    #[serde(default)]
    kind: Vec<String>,
}

/// Finds, in cargo's JSON messages, the `.so` of the cdylib target of the crate at `manifest`.
pub fn cdylib_from_messages(
    messages: impl BufRead,
    manifest: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    let mut found = None;
    for line in messages.lines() {
        let line = line.context("cannot read cargo's output")?;
        let Ok(message) = serde_json::from_str::<CargoMessage>(&line) else {
            continue;
        };
        if message.reason != "compiler-artifact" {
            continue;
        }
        let is_cdylib = message
            .target
            .is_some_and(|target| target.kind.iter().any(|k| k == "cdylib"));
        let same_crate = message
            .manifest_path
            .is_some_and(|p| same_file(&p, manifest));
        if !(is_cdylib && same_crate) {
            continue;
        }
        let library = message
            .filenames
            .into_iter()
            .find(|f| f.extension().is_some_and(|e| e == "so"));
        if let Some(library) = library {
            found = Some(library);
        }
    }
    Ok(found)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cdylib_of_the_named_crate_only() {
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/w/sdk/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/w/target/release/libsdk.so"]}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/hello/Cargo.toml","target":{"kind":["lib"]},"filenames":["/w/target/release/libhello.rlib"]}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/hello/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/w/target/release/libhello.so"]}"#,
            "not json",
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        let found = cdylib_from_messages(messages.as_bytes(), Path::new("/w/hello/Cargo.toml"));
        assert_eq!(
            found.unwrap(),
            Some(PathBuf::from("/w/target/release/libhello.so"))
        );
        let none = cdylib_from_messages(messages.as_bytes(), Path::new("/w/other/Cargo.toml"));
        assert_eq!(none.unwrap(), None);
    }
}
