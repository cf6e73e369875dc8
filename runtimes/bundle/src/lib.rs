//! Function bundles: a gzipped tar of the user's files and dependencies with `squall-bundle.json` naming the runtime and the handler, packed deterministically and unpacked without trusting a path.
//!
//! Invariants:
//! - The same files pack to the same bytes (sorted entries, fixed times, owners and modes), so
//!   deploying unchanged code makes no new version.
//! - Unpacking writes only regular files and folders beneath the destination: an absolute path,
//!   a `..`, a link or a device is refused, as is a bundle past the size or file-count limits.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The manifest's file name at the bundle's root.
pub const MANIFEST_FILE: &str = "squall-bundle.json";
/// The bundle format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Where a Python bundle's installed dependencies live, beneath its root.
pub const PYTHON_PACKAGES_DIR: &str = "site-packages";

/// A language runtime Squall runs: its identity in a manifest and the library that embeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// CPython 3.11, embedded through pyo3.
    Python311,
    /// QuickJS, embedded through rquickjs.
    JavaScript,
    /// OpenJDK 17, embedded through JNI: the handler is a class implementing `squall.Handler`
    /// or `squall.JsonHandler`.
    Java17,
}

impl Runtime {
    /// Every runtime, in the order the docs list them.
    pub const ALL: [Runtime; 3] = [Runtime::Python311, Runtime::JavaScript, Runtime::Java17];

    /// The identity written in manifests and `squall.toml`.
    pub fn id(self) -> &'static str {
        match self {
            Runtime::Python311 => "python3.11",
            Runtime::JavaScript => "javascript",
            Runtime::Java17 => "java17",
        }
    }

    /// The runtime named `id`, or an error listing the supported ones.
    pub fn from_id(id: &str) -> Result<Runtime, BundleError> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.id() == id)
            .ok_or_else(|| BundleError::UnknownRuntime(id.to_string()))
    }

    /// The file name of the runtime library the worker loads for this runtime.
    pub fn library_file(self) -> &'static str {
        match self {
            Runtime::Python311 => "libsquall_runtime_python.so",
            Runtime::JavaScript => "libsquall_runtime_javascript.so",
            Runtime::Java17 => "libsquall_runtime_java.so",
        }
    }

    /// The file extensions of this runtime's source files.
    pub fn source_extensions(self) -> &'static [&'static str] {
        match self {
            Runtime::Python311 => &["py"],
            Runtime::JavaScript => &["mjs", "js"],
            Runtime::Java17 => &["jar"],
        }
    }

    /// The runtime of a single source file, from its extension.
    pub fn of_source_file(path: &Path) -> Option<Runtime> {
        let extension = path.extension()?.to_str()?;
        Runtime::ALL
            .into_iter()
            .find(|r| r.source_extensions().contains(&extension))
    }

    /// Whether the runtime ends a running call itself at the call's deadline (QuickJS's
    /// interrupt handler), so the worker need not replace the process after a timeout.
    pub fn interrupts_at_deadline(self) -> bool {
        matches!(self, Runtime::JavaScript)
    }

    /// Whether the engine is one per process and a process must not load a second bundle of
    /// it (Python's modules imported by name would be shared between versions; a JVM's class
    /// path is fixed when it starts).
    pub fn one_bundle_per_process(self) -> bool {
        matches!(self, Runtime::Python311 | Runtime::Java17)
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// `squall-bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub runtime: String,
    /// `MODULE.FUNCTION`: function `FUNCTION` of the module file `MODULE`.
    pub handler: String,
}

impl Manifest {
    /// A manifest of the current format.
    pub fn new(runtime: Runtime, handler: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            runtime: runtime.id().to_string(),
            handler: handler.to_string(),
        }
    }

    /// Checks the format, the runtime and the handler's shape; returns the runtime.
    pub fn validate(&self) -> Result<Runtime, BundleError> {
        if self.format != FORMAT {
            return Err(BundleError::Format(self.format));
        }
        let runtime = Runtime::from_id(&self.runtime)?;
        check_handler(&self.handler)?;
        Ok(runtime)
    }
}

/// Checks a handler string: `MODULE.FUNCTION`, where MODULE may name a file in a folder
/// (`pkg/app.handler`) and FUNCTION is an identifier.
pub fn check_handler(handler: &str) -> Result<(), BundleError> {
    let bad = || BundleError::Handler(handler.to_string());
    let (module, function) = handler.rsplit_once('.').ok_or_else(bad)?;
    let identifier = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let module_ok = !module.is_empty()
        && module.split('/').all(|part| {
            !part.is_empty()
                && part != ".."
                && part != "."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if module_ok && identifier(function) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Why a bundle could not be made, read or unpacked; each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is corrupt: {0}")]
    Corrupt(String),
    #[error("the bundle has no {MANIFEST_FILE} at its root")]
    NoManifest,
    #[error("the bundle's {MANIFEST_FILE} is invalid: {0}")]
    BadManifest(String),
    #[error("the bundle has format {0}; this platform reads format {FORMAT}")]
    Format(u32),
    #[error("unknown runtime {0:?}; this platform runs {list}", list = supported())]
    UnknownRuntime(String),
    #[error("the handler {0:?} is not of the form MODULE.FUNCTION (for example \"app.handler\")")]
    Handler(String),
    #[error("the bundle holds an unsafe path {0:?} (absolute, or with ..)")]
    UnsafePath(String),
    #[error("the bundle holds {path:?}, which is a {kind}; only files and folders are allowed")]
    NotAFile { path: String, kind: &'static str },
    #[error("the bundle unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the bundle holds more than {limit} files")]
    TooManyFiles { limit: usize },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn supported() -> String {
    Runtime::ALL
        .iter()
        .map(|r| r.id())
        .collect::<Vec<_>>()
        .join(", ")
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Io { context, source }
}

/// Limits on what unpacking writes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_files: usize,
}

impl Default for Limits {
    /// 512 MiB in at most 50,000 files: room for numeric packages, none for a bomb.
    fn default() -> Self {
        Limits {
            max_bytes: 512 * 1024 * 1024,
            max_files: 50_000,
        }
    }
}

/// Whether `bytes` look like a bundle (gzip) rather than a native library (ELF).
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Folders and files a pack leaves out: build output, caches and version control.
fn skipped(name: &str) -> bool {
    matches!(
        name,
        ".git" | "__pycache__" | "target" | "node_modules" | ".squall" | MANIFEST_FILE
    ) || name.ends_with(".pyc")
}

/// The files beneath `root` a pack takes, as (path in the bundle, path on disk), sorted.
pub fn collect(root: &Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let mut files = Vec::new();
    walk(root, "", &mut files, 0)?;
    files.sort();
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<(String, PathBuf)>,
    depth: usize,
) -> Result<(), BundleError> {
    if depth > 64 {
        return Err(BundleError::Corrupt(format!(
            "{} is nested more than 64 folders deep",
            dir.display()
        )));
    }
    let entries = std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if skipped(&name) {
            continue;
        }
        let path = entry.path();
        let metadata =
            std::fs::metadata(&path).map_err(io(format!("cannot read {}", path.display())))?;
        let inner = format!("{prefix}{name}");
        if metadata.is_dir() {
            walk(&path, &format!("{inner}/"), files, depth + 1)?;
        } else if metadata.is_file() {
            files.push((inner, path));
        }
    }
    Ok(())
}

/// Packs `files` (path in the bundle, path on disk) and `manifest` into a bundle.
pub fn pack(manifest: &Manifest, files: &[(String, PathBuf)]) -> Result<Vec<u8>, BundleError> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    let manifest_bytes =
        serde_json::to_vec_pretty(manifest).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    append(&mut builder, MANIFEST_FILE, &manifest_bytes, false)?;
    let mut sorted: Vec<&(String, PathBuf)> = files.iter().collect();
    sorted.sort();
    for (inner, path) in sorted {
        if inner == MANIFEST_FILE {
            continue;
        }
        safe_relative(inner)?;
        let bytes = std::fs::read(path).map_err(io(format!("cannot read {}", path.display())))?;
        let executable = std::fs::metadata(path)
            .map(|m| {
                use std::os::unix::fs::PermissionsExt as _;
                m.permissions().mode() & 0o111 != 0
            })
            .unwrap_or(false);
        append(&mut builder, inner, &bytes, executable)?;
    }
    let encoder = builder
        .into_inner()
        .map_err(io("cannot finish the bundle"))?;
    encoder.finish().map_err(io("cannot compress the bundle"))
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    executable: bool,
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(if executable { 0o755 } else { 0o644 });
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, bytes)
        .map_err(io(format!("cannot add {path} to the bundle")))
}

/// Checks that `path` is relative and stays beneath the root; returns it as a path.
fn safe_relative(path: &str) -> Result<PathBuf, BundleError> {
    let candidate = Path::new(path);
    let mut clean = PathBuf::new();
    for component in candidate.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(BundleError::UnsafePath(path.to_string())),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(BundleError::UnsafePath(path.to_string()));
    }
    Ok(clean)
}

/// Reads a bundle's manifest without unpacking the rest.
pub fn read_manifest(bytes: &[u8]) -> Result<Manifest, BundleError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = archive
        .entries()
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| BundleError::Corrupt(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| BundleError::Corrupt(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if path.trim_start_matches("./") == MANIFEST_FILE {
            let mut text = Vec::new();
            entry
                .by_ref()
                .take(64 * 1024)
                .read_to_end(&mut text)
                .map_err(|e| BundleError::Corrupt(e.to_string()))?;
            return parse_manifest(&text);
        }
    }
    Err(BundleError::NoManifest)
}

/// Parses the text of `squall-bundle.json`.
pub fn parse_manifest(text: &[u8]) -> Result<Manifest, BundleError> {
    serde_json::from_slice(text).map_err(|e| BundleError::BadManifest(e.to_string()))
}

/// Unpacks `bytes` into `dest` (created; it should be empty) within `limits`, and returns the
/// validated manifest and its runtime.
pub fn unpack(
    bytes: &[u8],
    dest: &Path,
    limits: Limits,
) -> Result<(Manifest, Runtime), BundleError> {
    std::fs::create_dir_all(dest).map_err(io(format!("cannot create {}", dest.display())))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = archive
        .entries()
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    let (mut written, mut count) = (0u64, 0usize);
    for entry in entries {
        let mut entry = entry.map_err(|e| BundleError::Corrupt(e.to_string()))?;
        let raw_path = entry
            .path()
            .map_err(|e| BundleError::Corrupt(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let relative = safe_relative(&raw_path)?;
        let kind = entry.header().entry_type();
        let target = dest.join(&relative);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(io(format!("cannot create {}", target.display())))?;
            continue;
        }
        if !kind.is_file() {
            let kind = match kind {
                tar::EntryType::Symlink => "symbolic link",
                tar::EntryType::Link => "hard link",
                tar::EntryType::Char | tar::EntryType::Block => "device",
                tar::EntryType::Fifo => "pipe",
                _ => "special entry",
            };
            return Err(BundleError::NotAFile {
                path: raw_path,
                kind,
            });
        }
        count += 1;
        if count > limits.max_files {
            return Err(BundleError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        let mut file = std::fs::File::create(&target)
            .map_err(io(format!("cannot write {}", target.display())))?;
        let room = limits.max_bytes.saturating_sub(written);
        let copied = std::io::copy(&mut entry.by_ref().take(room + 1), &mut file)
            .map_err(|e| BundleError::Corrupt(format!("{raw_path}: {e}")))?;
        written += copied;
        if written > limits.max_bytes {
            return Err(BundleError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        if mode & 0o111 != 0 {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o755));
        }
    }
    let text = std::fs::read(dest.join(MANIFEST_FILE)).map_err(|_| BundleError::NoManifest)?;
    let manifest = parse_manifest(&text)?;
    let runtime = manifest.validate()?;
    Ok((manifest, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn raw_tar(path: &str, kind: tar::EntryType, body: &[u8]) -> Vec<u8> {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        // `set_path` refuses `..`; write the name field directly, as a hostile packer would.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, body).unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_folder_packs_and_unpacks_with_its_manifest_and_without_caches() {
        let source = folder(&[
            ("app.py", "def handler(e, c): return 1\n"),
            ("lib/util.py", "X = 1\n"),
            ("__pycache__/app.cpython-311.pyc", "junk"),
        ]);
        let manifest = Manifest::new(Runtime::Python311, "app.handler");
        let bytes = pack(&manifest, &collect(source.path()).unwrap()).unwrap();
        assert!(is_bundle(&bytes));
        assert_eq!(read_manifest(&bytes).unwrap(), manifest);
        let dest = tempfile::tempdir().unwrap();
        let (read, runtime) = unpack(&bytes, dest.path(), Limits::default()).unwrap();
        assert_eq!((read, runtime), (manifest, Runtime::Python311));
        assert_eq!(
            std::fs::read_to_string(dest.path().join("lib/util.py")).unwrap(),
            "X = 1\n"
        );
        assert!(!dest.path().join("__pycache__").exists());
    }

    #[test]
    fn the_same_files_pack_to_the_same_bytes() {
        let source = folder(&[("a.mjs", "export const handler = () => 1;\n")]);
        let manifest = Manifest::new(Runtime::JavaScript, "a.handler");
        let files = collect(source.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(
            pack(&manifest, &files).unwrap(),
            pack(&manifest, &files).unwrap()
        );
    }

    #[test]
    fn a_path_leaving_the_root_is_refused() {
        let bytes = raw_tar("../evil.py", tar::EntryType::Regular, b"x");
        let dest = tempfile::tempdir().unwrap();
        let error = unpack(&bytes, &dest.path().join("b"), Limits::default()).unwrap_err();
        assert!(matches!(error, BundleError::UnsafePath(_)), "{error}");
        assert!(!dest.path().join("evil.py").exists());
    }

    #[test]
    fn a_link_is_refused() {
        let bytes = raw_tar("link", tar::EntryType::Symlink, b"");
        let dest = tempfile::tempdir().unwrap();
        let error = unpack(&bytes, dest.path(), Limits::default()).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }

    #[test]
    fn a_bundle_past_the_size_limit_is_refused() {
        let source = folder(&[("big.py", &"#".repeat(10_000))]);
        let manifest = Manifest::new(Runtime::Python311, "big.handler");
        let bytes = pack(&manifest, &collect(source.path()).unwrap()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 1_000,
            max_files: 10,
        };
        let error = unpack(&bytes, dest.path(), limits).unwrap_err();
        assert!(matches!(error, BundleError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn corrupt_bytes_are_named_corrupt() {
        let error = unpack(
            &[0x1f, 0x8b, 1, 2, 3],
            tempfile::tempdir().unwrap().path(),
            Limits::default(),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("the bundle is corrupt"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_runtime_lists_the_supported_ones() {
        let manifest = Manifest {
            format: 1,
            runtime: "ruby3".into(),
            handler: "app.handler".into(),
        };
        let error = manifest.validate().unwrap_err().to_string();
        assert!(error.contains("python3.11, javascript"), "{error}");
    }

    #[test]
    fn handlers_are_module_dot_function() {
        for good in ["app.handler", "pkg/app.handler", "my-mod.run_1"] {
            assert!(check_handler(good).is_ok(), "{good}");
        }
        for bad in [
            "handler",
            "app.",
            ".handler",
            "../app.handler",
            "app.1x",
            "/app.h",
        ] {
            assert!(check_handler(bad).is_err(), "{bad}");
        }
    }
}
