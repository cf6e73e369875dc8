//! The binaries and example function libraries, built once per test run, and C test functions.

use anyhow::{bail, Context as _};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Paths of the binaries and function libraries built for the tests.
#[derive(Debug, Clone)]
pub struct Built {
    pub dispatcher: PathBuf,
    pub worker: PathBuf,
    pub squall: PathBuf,
    /// Function libraries by example name (`hello`, `wordcount`, `fail`, `panic`, `web_hello`,
    /// `c-hello`, …).
    pub libraries: HashMap<String, PathBuf>,
}

impl Built {
    /// The library of example `name`.
    pub fn library(&self, name: &str) -> &Path {
        self.libraries
            .get(name)
            .unwrap_or_else(|| panic!("example {name} was not built"))
    }
}

static BUILT: OnceLock<Built> = OnceLock::new();

/// Builds the binaries and example functions once per test process.
pub fn built() -> &'static Built {
    BUILT.get_or_init(|| build().expect("build binaries and example functions"))
}

fn build() -> anyhow::Result<Built> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The same selection as `scripts/test` and nextest (the whole workspace, every target), so
    // features unify alike and this build is a no-op after theirs, instead of rebuilding the
    // dependencies with another feature set (and making their next build rebuild them back).
    let mut command = Command::new(cargo);
    // Cargo gives a test process the variables of the test's own package (`CARGO_PKG_NAME`,
    // `CARGO_MANIFEST_DIR`, `OUT_DIR`, …). Build scripts that watch them (ring's does) would see
    // them changed and rebuild everything above them, so the child cargo must not inherit them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_TARGET_TMPDIR"
        {
            command.env_remove(name.as_ref());
        }
    }
    command.current_dir(&root).args([
        "build",
        "--workspace",
        "--all-targets",
        "--message-format=json-render-diagnostics",
    ]);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut executables = HashMap::new();
    let mut libraries = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        // Test harnesses of bins share the bins' names; only the real artifacts count.
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] == true {
            continue;
        }
        let name = message["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(exe) = message["executable"].as_str() {
            executables.insert(name.clone(), PathBuf::from(exe));
        }
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if is_cdylib {
            for file in message["filenames"].as_array().into_iter().flatten() {
                if let Some(file) = file.as_str().filter(|f| f.ends_with(".so")) {
                    libraries.insert(name.clone(), PathBuf::from(file));
                }
            }
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build failed");
    }
    // The C example is built with the system C compiler against squall.h alone.
    let c_dir = root.join("functions/examples/c-hello");
    let c_out = std::env::temp_dir().join(format!("squall-test-c-hello-{}.so", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .current_dir(&c_dir)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-shared",
            "-fPIC",
            "-I../../sdk/include",
            "-o",
        ])
        .arg(&c_out)
        .arg("hello.c")
        .status()
        .context("cannot run cc to build the C example")?;
    if !status.success() {
        bail!("cc failed to build functions/examples/c-hello");
    }
    libraries.insert("c-hello".into(), c_out);
    let exe = |name: &str| {
        executables
            .get(name)
            .cloned()
            .with_context(|| format!("cargo did not report the {name} binary"))
    };
    Ok(Built {
        dispatcher: exe("squall-dispatcher")?,
        worker: exe("squall-worker")?,
        squall: exe("squall")?,
        libraries,
    })
}

/// Compiles C `source` against `squall.h` into a shared library in `dir`.
pub fn compile_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(format!("lib{name}.so"));
    std::fs::write(&src, source).expect("write C source");
    let include = workspace_root().join("functions/sdk/include");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c99", "-O2", "-shared", "-fPIC"])
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    out
}

/// A bundle of `runtime` (`python3.11`, `javascript`) with `handler` and the files given as
/// (path in the bundle, text), packed as `squall deploy` packs a folder.
pub fn bundle(runtime: &str, handler: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folder");
        std::fs::write(path, text).expect("write a bundle file");
    }
    let runtime = squall_bundle::Runtime::from_id(runtime).expect("a known runtime");
    let manifest = squall_bundle::Manifest::new(runtime, handler);
    let files = squall_bundle::collect(dir.path()).expect("collect");
    squall_bundle::pack(&manifest, &files).expect("pack")
}

/// The Go toolchain the Go functions build with: `$SQUALL_GO`, else what `scripts/install-go`
/// prints last (it installs Go into `.tools/` when it has to).
pub fn go_toolchain() -> PathBuf {
    static GO: OnceLock<PathBuf> = OnceLock::new();
    GO.get_or_init(|| {
        if let Some(go) = std::env::var_os("SQUALL_GO") {
            return PathBuf::from(go);
        }
        let out = Command::new(workspace_root().join("scripts/install-go"))
            .output()
            .expect("run scripts/install-go");
        assert!(
            out.status.success(),
            "scripts/install-go failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("a UTF-8 path");
        PathBuf::from(text.lines().last().expect("a path").trim())
    })
    .clone()
}

/// The Go toolchain when one is installed for the suite (`$SQUALL_GO`, or the one
/// `scripts/install-go` put into `.tools/`), without installing one.
pub fn installed_go() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os("SQUALL_GO") {
        return Some(PathBuf::from(go));
    }
    let tools = workspace_root().join(".tools/go");
    std::fs::read_dir(&tools)
        .ok()?
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with(".version-"))
        .and_then(|stamp| std::fs::read_to_string(stamp.path()).ok())
        .map(|text| PathBuf::from(text.trim()))
}

/// Writes a Go function folder into `dir/name`: `squall.toml` (`runtime = "go"`, with `extra`
/// lines after the name), `go.mod` and `main.go` holding `main_go`; returns the folder.
pub fn go_function(dir: &Path, name: &str, extra: &str, main_go: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("create the function folder");
    let files = [
        (
            "squall.toml",
            format!("[function]\nname = \"{name}\"\nruntime = \"go\"\n{extra}\n"),
        ),
        ("go.mod", format!("module {name}\n\ngo 1.21\n")),
        ("main.go", main_go.to_string()),
    ];
    for (file, text) in files {
        std::fs::write(folder.join(file), text).expect("write a Go function file");
    }
    folder
}
