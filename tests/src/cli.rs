//! The `squall` CLI run as a user runs it: one command, its exit code and what it printed.

use crate::{built, workspace_root};
use std::path::Path;
use std::process::Command;

/// What one run of the CLI did.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Whether the CLI exited 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything the CLI said unless it exited 0.
    pub fn ok(self) -> CliRun {
        assert!(self.succeeded(), "squall failed: {self:#?}");
        self
    }
}

/// Runs `squall --url <url> <args>` from the workspace root.
pub async fn squall(url: &str, args: &[&str]) -> CliRun {
    squall_in(None, url, args).await
}

/// Runs `squall --url <url> <args>` in `dir` (the workspace root when `None`), without the
/// `SQUALL_URL` and `SQUALL_API_KEY` of the environment the tests run in.
pub async fn squall_in(dir: Option<&Path>, url: &str, args: &[&str]) -> CliRun {
    let mut command = Command::new(&built().squall);
    // A Go function builds with the suite's toolchain (the Go tests install it first).
    if let Some(go) = crate::build::installed_go() {
        command.env("SQUALL_GO", go);
    }
    command
        .current_dir(dir.map_or_else(workspace_root, Path::to_path_buf))
        .env_remove("SQUALL_URL")
        .env_remove("SQUALL_API_KEY")
        .arg("--url")
        .arg(url)
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run squall");
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
