//! Validates a function bundle at deploy: unpacks it into a scratch folder and has its runtime check it, without running its code, in a `squall-worker check-bundle` process of its own.

use squall_bundle::{Limits, Manifest, Runtime};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a bundle's check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a good bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub runtime: Runtime,
    pub handler: String,
}

/// Why a bundle was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BundleRefusal {
    /// The bundle is bad: the message names the file and line where it can.
    #[error("{0}")]
    Invalid(String),
    /// This dispatcher could not check it (no worker binary, no runtime, no scratch space).
    #[error("{0}")]
    Unavailable(String),
}

/// The `squall-worker` binary a dispatcher runs checks with when none is configured: the one
/// beside the dispatcher's executable (or its parent folder, for test binaries), else `PATH`'s.
pub fn default_worker_binary() -> PathBuf {
    let beside = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.to_path_buf();
        [
            dir.join("squall-worker"),
            dir.parent()?.join("squall-worker"),
        ]
        .into_iter()
        .find(|p| p.is_file())
    });
    beside.unwrap_or_else(|| PathBuf::from("squall-worker"))
}

/// Unpacks `bytes` beneath `scratch` and checks it with `worker check-bundle`; the scratch
/// folder is removed before this returns.
pub async fn check(
    worker: &Path,
    scratch: &Path,
    bytes: bytes::Bytes,
) -> Result<BundleInfo, BundleRefusal> {
    let manifest =
        squall_bundle::read_manifest(&bytes).map_err(|e| BundleRefusal::Invalid(e.to_string()))?;
    let runtime = manifest
        .validate()
        .map_err(|e| BundleRefusal::Invalid(e.to_string()))?;
    std::fs::create_dir_all(scratch).map_err(|e| {
        BundleRefusal::Unavailable(format!(
            "cannot create the scratch folder {}: {e}",
            scratch.display()
        ))
    })?;
    let dir = scratch.join(format!("check-{}", uuid::Uuid::new_v4().simple()));
    let outcome = unpack_and_check(worker, &dir, bytes, &manifest).await;
    let cleanup = dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(cleanup)).await;
    outcome.map(|()| BundleInfo {
        runtime,
        handler: manifest.handler,
    })
}

async fn unpack_and_check(
    worker: &Path,
    dir: &Path,
    bytes: bytes::Bytes,
    manifest: &Manifest,
) -> Result<(), BundleRefusal> {
    let target = dir.to_path_buf();
    tokio::task::spawn_blocking(move || squall_bundle::unpack(&bytes, &target, Limits::default()))
        .await
        .map_err(|e| BundleRefusal::Unavailable(format!("the bundle unpacker failed: {e}")))?
        .map_err(|e| BundleRefusal::Invalid(e.to_string()))?;
    let child = tokio::process::Command::new(worker)
        .arg("check-bundle")
        .arg(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            BundleRefusal::Unavailable(format!(
                "cannot run {} to check the {} bundle: {e} (set --worker-binary)",
                worker.display(),
                manifest.runtime
            ))
        })?;
    let output = tokio::time::timeout(CHECK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            BundleRefusal::Invalid(format!(
                "checking the bundle took longer than {} s",
                CHECK_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| BundleRefusal::Unavailable(format!("the bundle check failed: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(BundleRefusal::Invalid(if stdout.is_empty() {
            "the bundle is not valid".to_string()
        } else {
            stdout
        })),
        _ => Err(BundleRefusal::Unavailable(format!(
            "this dispatcher cannot check {} bundles: {}",
            manifest.runtime,
            if stderr.is_empty() { stdout } else { stderr }
        ))),
    }
}
