//! Java functions: a folder with `runtime = "java17"` whose sources (`src/`, and `test/` for `squall test`) are compiled with javac against the SDK's classes, which ship inside this binary as sources.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The SDK's package `squall`: (file name, source). The runtime holds the same classes; these
/// are compiled only to resolve the function's references (`-implicit:none`).
const SDK: &[(&str, &str)] = &[
    (
        "CallContext.java",
        include_str!("../../runtimes/java/java/squall/CallContext.java"),
    ),
    (
        "Context.java",
        include_str!("../../runtimes/java/java/squall/Context.java"),
    ),
    (
        "Engine.java",
        include_str!("../../runtimes/java/java/squall/Engine.java"),
    ),
    (
        "ExitGuard.java",
        include_str!("../../runtimes/java/java/squall/ExitGuard.java"),
    ),
    (
        "Handler.java",
        include_str!("../../runtimes/java/java/squall/Handler.java"),
    ),
    (
        "HostException.java",
        include_str!("../../runtimes/java/java/squall/HostException.java"),
    ),
    (
        "Json.java",
        include_str!("../../runtimes/java/java/squall/Json.java"),
    ),
    (
        "JsonHandler.java",
        include_str!("../../runtimes/java/java/squall/JsonHandler.java"),
    ),
    (
        "LogStream.java",
        include_str!("../../runtimes/java/java/squall/LogStream.java"),
    ),
    (
        "Retry.java",
        include_str!("../../runtimes/java/java/squall/Retry.java"),
    ),
    (
        "TestContext.java",
        include_str!("../../runtimes/java/java/squall/TestContext.java"),
    ),
    (
        "WebResponse.java",
        include_str!("../../runtimes/java/java/squall/WebResponse.java"),
    ),
];

/// Where a folder's Java sources are, and its tests' sources.
pub const SOURCES: &str = "src";
pub const TESTS: &str = "test";
/// The folder of compiled classes in a bundle (the runtime puts it on the class path).
pub const CLASSES: &str = "classes";

/// The `javac` to run: `$SQUALL_JAVAC`, else `javac` on PATH; or what is missing.
fn javac() -> anyhow::Result<PathBuf> {
    if let Some(javac) = std::env::var_os("SQUALL_JAVAC") {
        return Ok(PathBuf::from(javac));
    }
    crate::golang::on_path("javac").context(
        "javac is missing: Java functions compile with JDK 17's javac (Debian: apt-get install \
             openjdk-17-jdk-headless); or set SQUALL_JAVAC",
    )
}

/// The `.java` files beneath `dir` as a bundle takes them, sorted (none when it does not exist).
fn sources(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(squall_bundle::collect(dir)?
        .into_iter()
        .map(|(_, path)| path)
        .filter(|path| path.extension().is_some_and(|e| e == "java"))
        .collect())
}

/// Compiles the folder's `src/` (and `test/` with `tests`) into `out`, against the jars at the
/// folder's root and the SDK; returns whether there was anything to compile.
pub fn compile(dir: &Path, tests: bool, out: &Path) -> anyhow::Result<bool> {
    let mut files = sources(&dir.join(SOURCES))?;
    if tests {
        files.extend(sources(&dir.join(TESTS))?);
    }
    if files.is_empty() {
        return Ok(false);
    }
    let javac = javac()?;
    let sdk = crate::bundle::tempdir()?;
    let package = sdk.path().join("squall");
    std::fs::create_dir_all(&package).context("cannot write the SDK's sources")?;
    for (name, text) in SDK {
        std::fs::write(package.join(name), text).context("cannot write the SDK's sources")?;
    }
    let mut class_path = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jar") {
            class_path.push(path);
        }
    }
    let class_path = std::env::join_paths(&class_path).context("a class path entry has a ':'")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!(
        "building: javac --release 17 ({} files in {})",
        files.len(),
        dir.display()
    );
    // The compiler's own output goes to stderr so that stdout stays clean for `--json`.
    let status = Command::new(&javac)
        .args([
            "--release",
            "17",
            "-implicit:none",
            "-encoding",
            "UTF-8",
            "-d",
        ])
        .arg(out)
        .arg("-sourcepath")
        .arg(sdk.path())
        .arg("-cp")
        .arg(class_path)
        .args(&files)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {}", javac.display()))?;
    if !status.success() {
        bail!("javac failed ({status}) in {}", dir.display());
    }
    Ok(true)
}
