//! Go functions: a folder with `runtime = "go"` built by the Go toolchain into an ABI v1 library, against the SDK's Go package that ships inside this binary.
//!
//! The SDK's package (`squall.dev/sdk`, in `functions/sdk/go`) and the C header it includes are
//! written beside the build, in `<folder>/.squall/`, and joined to the function's module by a
//! Go workspace file there: no module proxy is asked for anything (`GOPROXY=off`), and no other
//! toolchain is fetched (`GOTOOLCHAIN=local`).

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The SDK's Go package: (path below `.squall/sdk/`, text).
const SDK: &[(&str, &str)] = &[
    ("go/go.mod", include_str!("../../functions/sdk/go/go.mod")),
    ("go/abi.c", include_str!("../../functions/sdk/go/abi.c")),
    (
        "go/export.go",
        include_str!("../../functions/sdk/go/export.go"),
    ),
    ("go/host.go", include_str!("../../functions/sdk/go/host.go")),
    (
        "go/context.go",
        include_str!("../../functions/sdk/go/context.go"),
    ),
    (
        "go/errors.go",
        include_str!("../../functions/sdk/go/errors.go"),
    ),
    ("go/json.go", include_str!("../../functions/sdk/go/json.go")),
    ("go/web.go", include_str!("../../functions/sdk/go/web.go")),
    (
        "go/testing.go",
        include_str!("../../functions/sdk/go/testing.go"),
    ),
    (
        "include/squall.h",
        include_str!("../../functions/sdk/include/squall.h"),
    ),
];

/// The folder, below a function's, where the SDK and the build's output go. Go ignores folders
/// whose names start with a dot, so `./...` never reaches into it.
const WORK_DIR: &str = ".squall";

/// The `go` to run: `$SQUALL_GO`, else `go` on PATH; or how to get one.
pub fn toolchain() -> anyhow::Result<PathBuf> {
    if let Some(go) = std::env::var_os("SQUALL_GO") {
        let go = PathBuf::from(go);
        if !go.is_file() {
            bail!("SQUALL_GO names {}, which is not a file", go.display());
        }
        return Ok(go);
    }
    on_path("go").context(
        "the Go toolchain is missing: Go functions build with Go 1.21 or newer and cgo. \
         `scripts/install-go` installs it into .tools/ and prints its path; set SQUALL_GO to \
         that path (or put `go` on PATH)",
    )
}

/// The function's folder as an absolute path: go resolves `GOWORK` and `-o` from it.
fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The first `program` in a folder of `PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Writes the SDK into `<dir>/.squall/sdk` and a workspace file that uses the function's
/// module and the SDK's; returns the workspace file.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.join("go.mod").is_file() {
        bail!(
            "{} has no go.mod; a Go function is a module whose package main registers its \
             handler (`squall init --runtime go NAME` makes one)",
            dir.display()
        );
    }
    let work = dir.join(WORK_DIR);
    let sdk = work.join("sdk");
    for (path, text) in SDK {
        let path = sdk.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let workspace = work.join("go.work");
    let text = format!(
        "go 1.21\n\nuse (\n\t{}\n\t{}\n)\n",
        go_path(dir)?,
        go_path(&sdk.join("go").canonicalize().context("the SDK's folder")?)?,
    );
    std::fs::write(&workspace, text)
        .with_context(|| format!("cannot write {}", workspace.display()))?;
    Ok(workspace)
}

/// A path as a go.work line takes it (quoted when it has spaces).
fn go_path(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(match text.contains(char::is_whitespace) {
        true => format!("{text:?}"),
        false => text.to_string(),
    })
}

/// A `go` command in `dir` with the workspace and an offline, local toolchain.
fn go_command(go: &Path, dir: &Path, workspace: &Path) -> Command {
    let mut command = Command::new(go);
    command
        .current_dir(dir)
        .env("GOWORK", workspace)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "1")
        .stdin(Stdio::null());
    command
}

/// Builds the Go function in `dir` into `<dir>/.squall/lib<name>.so` and returns its path.
pub fn build(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let go = toolchain()?;
    let dir = &absolute(dir)?;
    let workspace = prepare(dir)?;
    let library = dir
        .join(WORK_DIR)
        .join(format!("lib{}.so", name.replace('-', "_")));
    eprintln!(
        "building: go build -buildmode=c-shared -trimpath -ldflags='-s -w' (in {})",
        dir.display()
    );
    // The build's own output goes to stderr so that stdout stays clean for `--json`.
    let status = go_command(&go, dir, &workspace)
        // No symbol table or DWARF: a third smaller, so quicker to upload, fetch and load.
        .args([
            "build",
            "-buildmode=c-shared",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
        ])
        .arg(&library)
        .arg(".")
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {}", go.display()))?;
    if !status.success() {
        bail!("`go build` failed ({status}) in {}", dir.display());
    }
    // The C header go writes beside the library is of no use here.
    let _ = std::fs::remove_file(library.with_extension("h"));
    Ok(library)
}

/// Runs the Go function's own tests (`go test .`) with the SDK; true when they passed.
pub fn test(dir: &Path) -> anyhow::Result<bool> {
    let go = toolchain()?;
    let dir = &absolute(dir)?;
    let workspace = prepare(dir)?;
    let status = go_command(&go, dir, &workspace)
        .args(["test", "-count=1", "."])
        .status()
        .with_context(|| format!("cannot run {}", go.display()))?;
    Ok(status.success())
}
