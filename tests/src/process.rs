//! Child processes killed on drop, their children from `/proc`, and free loopback ports.

use anyhow::Context as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Process> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Process {
            child,
            name: name.to_string(),
            log,
        })
    }

    /// Sends SIGKILL to the process and everything it started, and waits.
    pub fn kill(&mut self) {
        for pid in descendants(self.child.id()) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The pids of this process's direct children (a supervised worker's worker process).
    pub fn children(&self) -> Vec<u32> {
        children(self.child.id())
    }

    /// Sends SIGTERM (a graceful stop) and waits up to `timeout`, then kills.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        match crate::poll_blocking(timeout, || self.child.try_wait().ok().flatten()) {
            Ok(status) => Some(status),
            Err(_) => {
                self.kill();
                None
            }
        }
    }

    /// Its child processes that are running (exited but unreaped ones do not count).
    pub fn live_children(&self) -> Vec<u32> {
        self.children()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit_once(')')
                            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                    })
                    == Some(false)
            })
            .collect()
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The direct children of `pid`, from `/proc`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    for child in children(pid) {
        all.extend(descendants(child));
        all.push(child);
    }
    all
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (the listener is closed before returning).
///
/// Chosen below the kernel's ephemeral range (32768 and up by default), from a random start:
/// a port from that range can be taken by any outgoing connection on the machine between this
/// check and the server's bind (a cluster node once failed to start on a route port that had
/// become some client's local port), while ports below it are handed out only by a listen.
///
/// A port is handed out once per test process: two calls before either port is bound (a
/// cluster's client and route ports) must not get the same one, as a node once did.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let start = uuid::Uuid::new_v4().as_u128() as u32 % SPAN;
    let port = (0..SPAN)
        .map(|i| (LOW + (start + i) % SPAN) as u16)
        .filter(|port| !handed_out.contains(port))
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free loopback port below the ephemeral range");
    handed_out.push(port);
    port
}

/// Asserts that running process `pid` logs in to the broker with a function's token and
/// inherited none of its supervisor's login (role user and password, the callout issuer's seed).
pub fn assert_function_login_only(pid: u32) {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    let vars: Vec<&str> = environ.split('\0').collect();
    assert!(
        vars.iter().any(|v| v.starts_with("SQUALL_NATS_TOKEN=")),
        "{pid} logs in with its function's token: {vars:?}"
    );
    for var in [
        "SQUALL_NATS_PASSWORD=",
        "SQUALL_NATS_USER=",
        "SQUALL_CALLOUT_SEED=",
    ] {
        assert!(
            !vars.iter().any(|v| v.starts_with(var)),
            "{pid} inherited {var}"
        );
    }
}
