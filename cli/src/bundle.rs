//! Building Python, JavaScript and Java functions into bundles: the user's files, the dependencies `requirements.txt` names installed as binary wheels for the worker's platform, a Java folder's compiled classes, and the manifest naming runtime and handler.

use anyhow::{bail, Context as _};
use squall_bundle::{Manifest, Runtime, PYTHON_PACKAGES_DIR};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Python interpreter whose pip installs `requirements.txt` (its version need not match:
/// pip is told the worker's version and platform).
const PYTHON_ENV: &str = "SQUALL_PYTHON";

/// The glibc minor versions of the manylinux wheels pip may pick: up to the worker image's
/// glibc (2.36, Debian bookworm). pip takes the platforms it is given literally.
const GLIBC_MINORS: &[u32] = &[
    5, 12, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36,
];

/// The runtime and handler of a function folder, from `squall.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub runtime: Runtime,
    pub handler: String,
}

/// A bundle made of a single source file: `app.py` is `app.handler` in Python 3.11, `app.mjs`
/// or `app.js` the same in JavaScript.
pub fn pack_file(path: &Path, handler: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let runtime = Runtime::of_source_file(path).with_context(|| {
        format!(
            "{} is not a source file Squall runs (.py, .mjs, .js or .jar)",
            path.display()
        )
    })?;
    let file_name = path
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|f| f.to_str())
        .context("the file has no name")?;
    let handler = match (runtime, handler) {
        (_, Some(handler)) => handler.to_string(),
        (Runtime::Java17, None) => bail!(
            "a jar needs --handler naming its handler class (for example --handler com.example.Hello)"
        ),
        (_, None) => format!("{stem}.handler"),
    };
    let manifest = Manifest::new(runtime, &handler);
    manifest
        .validate()
        .with_context(|| format!("the handler {handler:?} derived from {}", path.display()))?;
    Ok(squall_bundle::pack(
        &manifest,
        &[(file_name.to_string(), path.to_path_buf())],
    )?)
}

/// A bundle of the function folder `dir`: its files and, for Python, the packages of its
/// `requirements.txt`.
pub fn pack_dir(dir: &Path, source: &Source) -> anyhow::Result<Vec<u8>> {
    pack_dir_with(dir, source, false)
}

/// A bundle of the function folder `dir`; with `tests`, a Java folder's test sources are
/// compiled into it too.
fn pack_dir_with(dir: &Path, source: &Source, tests: bool) -> anyhow::Result<Vec<u8>> {
    let manifest = Manifest::new(source.runtime, &source.handler);
    manifest.validate().context("squall.toml")?;
    let staging = tempdir()?;
    let files = collect_with_dependencies(dir, source.runtime, staging.path(), tests)?;
    Ok(squall_bundle::pack(&manifest, &files)?)
}

/// Writes the bundle of `dir`, with its tests, unpacked into `into` (for `squall test`).
pub fn stage_dir(dir: &Path, source: &Source, into: &Path) -> anyhow::Result<()> {
    let bytes = pack_dir_with(dir, source, true)?;
    squall_bundle::unpack(&bytes, into, squall_bundle::Limits::default())?;
    Ok(())
}

fn collect_with_dependencies(
    dir: &Path,
    runtime: Runtime,
    staging: &Path,
    tests: bool,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = squall_bundle::collect(dir)?;
    let classes = staging.join(crate::java::CLASSES);
    if runtime == Runtime::Java17 && crate::java::compile(dir, tests, &classes)? {
        // The compiled classes replace any folder of that name in the source.
        let prefix = format!("{}/", crate::java::CLASSES);
        files.retain(|(inner, _)| !inner.starts_with(&prefix));
        files.extend(
            squall_bundle::collect(&classes)?
                .into_iter()
                .map(|(inner, path)| (format!("{prefix}{inner}"), path)),
        );
    }
    let requirements = dir.join("requirements.txt");
    if runtime == Runtime::Python311 && names_packages(&requirements)? {
        let target = staging.join(PYTHON_PACKAGES_DIR);
        pip_install(&requirements, &target)?;
        // The installed packages replace any folder of that name in the source.
        let prefix = format!("{PYTHON_PACKAGES_DIR}/");
        files.retain(|(inner, _)| !inner.starts_with(&prefix));
        files.extend(
            squall_bundle::collect(&target)?
                .into_iter()
                .map(|(inner, path)| (format!("{prefix}{inner}"), path)),
        );
    }
    Ok(files)
}

/// Whether `requirements.txt` exists and names at least one package.
fn names_packages(requirements: &Path) -> anyhow::Result<bool> {
    if !requirements.is_file() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    Ok(text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    }))
}

/// Installs `requirements` into `target` as binary wheels for the worker's platform: CPython
/// 3.11 on this machine's architecture with glibc, pure-Python and C-extension packages alike.
fn pip_install(requirements: &Path, target: &Path) -> anyhow::Result<()> {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
    let arch = std::env::consts::ARCH;
    eprintln!(
        "installing {} for CPython 3.11 on Linux {arch} (glibc 2.36)",
        requirements.display()
    );
    // The legacy names of glibc 2.5, 2.12 and 2.17 too: some wheels carry only those.
    let legacy =
        ["manylinux1", "manylinux2010", "manylinux2014"].map(|tag| format!("{tag}_{arch}"));
    let platforms = GLIBC_MINORS
        .iter()
        .map(|minor| format!("manylinux_2_{minor}_{arch}"))
        .chain(legacy)
        .flat_map(|platform| ["--platform".to_string(), platform]);
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--root-user-action=ignore"])
        .args(["--only-binary=:all:", "--implementation", "cp"])
        .args(["--python-version", "3.11"])
        .args(platforms)
        .arg("--target")
        .arg(target)
        .arg("-r")
        .arg(requirements)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => bail!(
            "cannot run `{python} -m pip` to install {} ({e}): install Python 3 with pip, \
             or point {PYTHON_ENV} at an interpreter that has it",
            requirements.display()
        ),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("No module named pip") {
            format!(" (pip is missing: install python3-pip, or set {PYTHON_ENV})")
        } else if stderr.contains("No matching distribution") {
            " (Squall installs binary wheels only: every package needs a wheel for \
             CPython 3.11 on Linux, or a pure-Python one)"
                .to_string()
        } else {
            String::new()
        };
        bail!(
            "installing {} failed{hint}:\n{}",
            requirements.display(),
            stderr.trim()
        );
    }
    Ok(())
}

/// A temporary folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh temporary folder.
pub fn tempdir() -> anyhow::Result<TempDir> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = std::env::temp_dir().join(format!("squall-bundle-{name}"));
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(TempDir(path))
}

/// The `squall-worker` binary beside this executable, else the one on PATH.
pub fn worker_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("squall-worker")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("squall-worker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_python_file_is_its_own_module_with_a_handler_function() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("greet.py");
        std::fs::write(&path, "def handler(event, context):\n    return 1\n").unwrap();
        let bytes = pack_file(&path, None).unwrap();
        let manifest = squall_bundle::read_manifest(&bytes).unwrap();
        assert_eq!(manifest.runtime, "python3.11");
        assert_eq!(manifest.handler, "greet.handler");
    }

    #[test]
    fn a_file_in_no_known_language_is_refused_by_name() {
        let error = pack_file(Path::new("notes.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a source file Squall runs"), "{error}");
    }

    #[test]
    fn comments_alone_name_no_packages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requirements.txt");
        std::fs::write(&path, "# none yet\n\n").unwrap();
        assert!(!names_packages(&path).unwrap());
        std::fs::write(&path, "# one\nrequests==2.31.0\n").unwrap();
        assert!(names_packages(&path).unwrap());
        assert!(!names_packages(&dir.path().join("missing.txt")).unwrap());
    }
}
