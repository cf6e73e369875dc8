//! The Go and Java noops of the runtimes phase, built once per run: a Go library with the Go toolchain against the SDK's Go package, and a Java class with javac against the runtime's SDK.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace the benchmark was built in (its SDKs are read from there).
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Go toolchain: `$SQUALL_GO`, else the one `scripts/install-go` put into `.tools/go`.
fn go() -> anyhow::Result<PathBuf> {
    if let Some(go) = std::env::var_os("SQUALL_GO") {
        return Ok(PathBuf::from(go));
    }
    let tools = workspace().join(".tools/go");
    let stamp = std::fs::read_dir(&tools)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with(".version-"));
    match stamp {
        Some(stamp) => Ok(PathBuf::from(std::fs::read_to_string(stamp.path())?.trim())),
        None => bail!(
            "the Go toolchain is missing: run scripts/install-go (it installs Go into .tools/go) \
             or set SQUALL_GO"
        ),
    }
}

/// Runs `command`, failing with what it printed.
fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Builds the Go noop (it returns its input) into `dir`; returns the library's bytes.
pub fn go_noop(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let module = dir.join("go-noop");
    std::fs::create_dir_all(&module)?;
    std::fs::write(module.join("go.mod"), "module gonoop\n\ngo 1.21\n")?;
    std::fs::write(
        module.join("main.go"),
        "package main\n\nimport squall \"squall.dev/sdk\"\n\nfunc init() {\n\tsquall.Handle(func(ctx *squall.Context, in []byte) ([]byte, error) { return in, nil })\n}\n\nfunc main() {}\n",
    )?;
    let work = dir.join("go-noop.work");
    std::fs::write(
        &work,
        format!(
            "go 1.21\n\nuse (\n\t{}\n\t{}\n)\n",
            module.display(),
            workspace()
                .join("functions/sdk/go")
                .canonicalize()?
                .display()
        ),
    )?;
    let library = dir.join("libgonoop.so");
    let mut command = Command::new(go()?);
    command
        .current_dir(&module)
        .env("GOWORK", &work)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "1")
        // As `squall deploy` builds a Go function: no symbol table or DWARF.
        .args([
            "build",
            "-buildmode=c-shared",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
        ])
        .arg(&library)
        .arg(".");
    run(command, "go build of the Go noop")?;
    Ok(std::fs::read(&library)?)
}

/// The Java noop's handler class.
pub const JAVA_HANDLER: &str = "bench.Noop";

/// Compiles the Java noop (a `squall.Handler` returning its input) into `<dir>/java-noop/`;
/// returns that folder, whose `classes/` a bundle takes.
pub fn java_noop(dir: &Path) -> anyhow::Result<PathBuf> {
    let folder = dir.join("java-noop");
    let source = folder.join("src/bench/Noop.java");
    std::fs::create_dir_all(source.parent().context("a folder")?)?;
    std::fs::write(
        &source,
        "package bench;\n\npublic class Noop implements squall.Handler {\n    @Override\n    public byte[] handle(squall.Context ctx, byte[] input) {\n        return input;\n    }\n}\n",
    )?;
    let mut command = Command::new("javac");
    command
        .args(["--release", "17", "-implicit:none", "-d"])
        .arg(folder.join("bundle/classes"))
        .arg("-sourcepath")
        .arg(workspace().join("runtimes/java/java"))
        .arg(&source);
    run(command, "javac of the Java noop (JDK 17's javac on PATH)")?;
    Ok(folder.join("bundle"))
}
