//! Fetches artifacts from the object store into a local cache, verifies them and loads each
//! version once.

use crate::loader::Loaded;
use async_nats::jetstream::object_store::ObjectStore;
use sha2::{Digest, Sha256};
use squall_broker::names::artifact_key;
use squall_broker::FunctionRecord;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

/// A version's load outcome, shared by every function record that points at it.
pub type LoadOutcome = Result<Arc<Loaded>, String>;

/// The local artifact cache. Each version (sha256) is fetched and loaded at most once per process.
pub struct ArtifactCache {
    dir: PathBuf,
    /// Where loads are counted, if anywhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The confinement applied before the first load, in a process that serves one function.
    pub confiner: Option<Arc<crate::confine::Confiner>>,
    /// Where the language runtimes' libraries are (`--runtimes`).
    pub runtimes: PathBuf,
    loaded: Mutex<HashMap<String, LoadOutcome>>,
    /// The version of a one-per-process runtime (a Python bundle, a Go library) this process
    /// loaded first.
    exclusive: std::sync::Mutex<Option<String>>,
    /// Set once a second such bundle was loaded: the process should be replaced.
    exclusive_conflict: std::sync::atomic::AtomicBool,
}

/// What to load for a version: a native library, or a runtime library and its bundle.
struct Target {
    library: PathBuf,
    bundle: Option<(squall_bundle::Runtime, PathBuf)>,
}

impl ArtifactCache {
    /// A cache that keeps files in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        ArtifactCache {
            dir,
            metrics: None,
            confiner: None,
            runtimes: default_runtimes_dir(),
            loaded: Mutex::new(HashMap::new()),
            exclusive: std::sync::Mutex::new(None),
            exclusive_conflict: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this process was asked for a second bundle of a runtime that allows one per
    /// process (a new version of a Python function): it did not load it, and should be
    /// replaced by a fresh process as soon as it can.
    pub fn wants_fresh_process(&self) -> bool {
        self.exclusive_conflict
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns the loaded library of `record`'s version, fetching and loading it on first use.
    pub async fn load(&self, store: &ObjectStore, record: &FunctionRecord) -> LoadOutcome {
        let mut loaded = self.loaded.lock().await;
        if let Some(outcome) = loaded.get(&record.sha256) {
            return outcome.clone();
        }
        match self.fetch_and_load(store, record).await {
            // Loading is deterministic for a given file: remember the outcome, good or bad.
            Ok(outcome) => {
                if let Some(metrics) = &self.metrics {
                    metrics.artifact_loaded(&record.name, outcome.is_ok());
                }
                loaded.insert(record.sha256.clone(), outcome.clone());
                outcome
            }
            // Fetching can fail for a moment (the broker restarting): try again next time.
            Err(transient) => Err(transient),
        }
    }

    /// Fetches the artifact (an `Err` is a transient fetch or disk failure) and loads it (the
    /// inner outcome).
    async fn fetch_and_load(
        &self,
        store: &ObjectStore,
        record: &FunctionRecord,
    ) -> Result<LoadOutcome, String> {
        let path = self.dir.join(format!("{}.so", record.sha256));
        let cached = match tokio::fs::read(&path).await {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == record.sha256 => Some(bytes),
            _ => None,
        };
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let key = artifact_key(&record.sha256);
                let mut object = store
                    .get(&key)
                    .await
                    .map_err(|e| format!("cannot fetch artifact {key}: {e}"))?;
                let mut bytes = Vec::with_capacity(record.artifact_size as usize);
                object
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| format!("cannot read artifact {key}: {e}"))?;
                let actual = hex::encode(Sha256::digest(&bytes));
                if actual != record.sha256 {
                    return Err(format!(
                        "artifact sha256 mismatch: expected {}, fetched {actual}",
                        record.sha256
                    ));
                }
                // Write under a temporary name and rename, so a crash never leaves a half file
                // under the name a later load would trust.
                let tmp = self
                    .dir
                    .join(format!("{}.so.tmp-{}", record.sha256, std::process::id()));
                tokio::fs::write(&tmp, &bytes)
                    .await
                    .map_err(|e| format!("cannot write artifact cache file: {e}"))?;
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| format!("cannot write artifact cache file: {e}"))?;
                bytes
            }
        };
        let go = !squall_bundle::is_bundle(&bytes) && crate::golang::is_go_library(&bytes);
        let target = if squall_bundle::is_bundle(&bytes) {
            match self.prepare_bundle(&record.sha256, bytes).await? {
                Ok(target) => target,
                Err(refused) => return Ok(Err(refused)),
            }
        } else {
            Target {
                library: path,
                bundle: None,
            }
        };
        let exclusive = match &target.bundle {
            Some((runtime, _)) if runtime.one_bundle_per_process() => Some(runtime.id()),
            None if go => Some("Go"),
            _ => None,
        };
        if let Some(runtime) = exclusive {
            let mut first = self.exclusive.lock().expect("exclusive lock");
            match first.as_deref() {
                None => *first = Some(record.sha256.clone()),
                Some(sha) if sha == record.sha256 => {}
                // Not loaded here and not remembered: a fresh process loads it.
                Some(_) => {
                    self.exclusive_conflict
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return Err(format!(
                        "this worker process runs another version of a {runtime} function, \
                         and its runtime cannot be unloaded or share the process: a fresh \
                         process serves version {} (a process per function: `squall-worker \
                         fleet`)",
                        record.version
                    ));
                }
            }
        }
        let loaded = match &self.confiner {
            // Limits and sandbox first: the function's code never runs without them.
            Some(confiner) => {
                if let Err(error) = confiner.before_load(record) {
                    tracing::error!(message = "cannot confine this process; the function is not loaded",
                        function = %record.name, %error);
                    return Ok(Err(format!("cannot confine the worker process: {error}")));
                }
                crate::confine::load_confined(target.library, target.bundle).await?
            }
            None => tokio::task::spawn_blocking(move || {
                Loaded::load_target(&target.library, &target.bundle)
            })
            .await
            .map_err(|e| format!("library loader panicked: {e}"))?,
        };
        Ok(loaded.map(Arc::new).map_err(|e| e.to_string()))
    }

    /// Unpacks a bundle into `<sha>.bundle/` (once: a crash mid-way leaves only a temporary
    /// folder) and copies its runtime's library to `<sha>.runtime.so`, a file name of its own
    /// (a library is loaded once per file name). The outer `Err` is transient; the inner one a
    /// bundle this worker cannot serve, which stays refused.
    async fn prepare_bundle(
        &self,
        sha: &str,
        bytes: Vec<u8>,
    ) -> Result<Result<Target, String>, String> {
        let dir = self.dir.clone();
        let runtimes = self.runtimes.clone();
        let sha = sha.to_string();
        tokio::task::spawn_blocking(move || prepare_bundle_files(&dir, &runtimes, &sha, &bytes))
            .await
            .map_err(|e| format!("the bundle unpacker panicked: {e}"))?
    }
}

/// The folder of the language runtimes' libraries when `--runtimes` is not given: the worker
/// executable's own folder, where the build and the install put them.
pub fn default_runtimes_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The path of `runtime`'s library in `runtimes`, or why it cannot be used.
pub fn runtime_library(
    runtimes: &std::path::Path,
    runtime: squall_bundle::Runtime,
) -> Result<PathBuf, String> {
    let library = runtimes.join(runtime.library_file());
    if library.is_file() {
        Ok(library)
    } else {
        Err(format!(
            "the {runtime} runtime is not installed on this worker: {} is missing \
             (build the workspace, or pass --runtimes with the folder that holds it)",
            library.display()
        ))
    }
}

fn prepare_bundle_files(
    dir: &std::path::Path,
    runtimes: &std::path::Path,
    sha: &str,
    bytes: &[u8],
) -> Result<Result<Target, String>, String> {
    let bundle_dir = dir.join(format!("{sha}.bundle"));
    if !bundle_dir.join(squall_bundle::MANIFEST_FILE).is_file() {
        let tmp = dir.join(format!("{sha}.bundle.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(refused) = squall_bundle::unpack(bytes, &tmp, squall_bundle::Limits::default()) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(Err(refused.to_string()));
        }
        let _ = std::fs::remove_dir_all(&bundle_dir);
        std::fs::rename(&tmp, &bundle_dir)
            .map_err(|e| format!("cannot write the unpacked bundle: {e}"))?;
    }
    let manifest = match std::fs::read(bundle_dir.join(squall_bundle::MANIFEST_FILE)) {
        Ok(text) => squall_bundle::parse_manifest(&text),
        Err(e) => return Err(format!("cannot read the unpacked bundle: {e}")),
    };
    let runtime = match manifest.and_then(|m| m.validate()) {
        Ok(runtime) => runtime,
        Err(refused) => return Ok(Err(refused.to_string())),
    };
    let source = match runtime_library(runtimes, runtime) {
        Ok(source) => source,
        Err(missing) => return Ok(Err(missing)),
    };
    let library = dir.join(format!("{sha}.runtime.so"));
    if !library.is_file() {
        let tmp = dir.join(format!("{sha}.runtime.so.tmp-{}", std::process::id()));
        std::fs::copy(&source, &tmp)
            .and_then(|_| std::fs::rename(&tmp, &library))
            .map_err(|e| format!("cannot copy the {runtime} runtime library: {e}"))?;
    }
    Ok(Ok(Target {
        library,
        bundle: Some((runtime, bundle_dir)),
    }))
}
