//! Go function libraries in the loader: the first loads as any ABI v1 library; a second Go library in the same process is refused with the reason (Go runtimes cannot share a process).

use squall_worker::loader::{LoadError, Loaded};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// `$SQUALL_GO`, else what `scripts/install-go` prints last (installing Go into `.tools/`).
fn go() -> PathBuf {
    if let Some(go) = std::env::var_os("SQUALL_GO") {
        return PathBuf::from(go);
    }
    let out = Command::new(workspace_root().join("scripts/install-go"))
        .output()
        .expect("run scripts/install-go");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
}

/// Builds a Go function answering `answer` against the SDK's Go package, into `dir`.
fn build(dir: &Path, name: &str, answer: &str) -> PathBuf {
    let module = dir.join(name);
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("go.mod"), format!("module {name}\n\ngo 1.21\n")).unwrap();
    std::fs::write(
        module.join("main.go"),
        format!(
            "package main\n\nimport squall \"squall.dev/sdk\"\n\nfunc init() {{\n\tsquall.Handle(func(ctx *squall.Context, in []byte) ([]byte, error) {{ return []byte({answer:?}), nil }})\n}}\n\nfunc main() {{}}\n"
        ),
    )
    .unwrap();
    let work = dir.join(format!("{name}.work"));
    std::fs::write(
        &work,
        format!(
            "go 1.21\n\nuse (\n\t{}\n\t{}\n)\n",
            module.display(),
            workspace_root().join("functions/sdk/go").display()
        ),
    )
    .unwrap();
    let library = dir.join(format!("lib{name}.so"));
    let status = Command::new(go())
        .current_dir(&module)
        .env("GOWORK", &work)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "1")
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&library)
        .arg(".")
        .status()
        .expect("run go build");
    assert!(status.success(), "go build {name}");
    library
}

#[test]
fn a_second_go_library_in_one_process_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path(), "first", "1");
    let second = build(dir.path(), "second", "2");
    assert!(squall_worker::golang::is_go_library(
        &std::fs::read(&first).unwrap()
    ));
    Loaded::load(&first).expect("the first Go library loads");
    match Loaded::load(&second) {
        Err(LoadError::SecondGoRuntime(reason)) => {
            assert!(
                reason.contains("Go runtimes cannot share a process"),
                "{reason}"
            );
            assert!(reason.contains("libfirst.so"), "{reason}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second Go runtime was loaded into the process"),
    }
}
