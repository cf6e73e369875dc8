//! Finding and running the processes under test: nats-server (one, or a loopback cluster of
//! several), the dispatcher, workers and the bare reference worker, each a child process with its
//! output in a log file.

use crate::broker::Broker;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The command that builds everything the benchmark runs.
pub const BUILD_COMMAND: &str = "cargo build --release -p squall-dispatcher -p squall-worker \
                                 -p squall-bench -p squall-example-noop \
                                 -p squall-example-statebench -p squall-runtime-python \
                                 -p squall-runtime-javascript -p squall-runtime-java";

/// Where everything the benchmark runs lives.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The workspace root (holds `broker-config/nats/default.conf`).
    pub root: PathBuf,
    pub nats_server: PathBuf,
    /// How every process logs in to the benchmark's brokers.
    pub broker: Broker,
    /// This binary, re-run as the bare reference worker.
    pub bench: PathBuf,
    pub dispatcher: PathBuf,
    pub worker: PathBuf,
    /// The trivial function's library.
    pub artifact: PathBuf,
    /// The state phase's function (`libstatebench.so`), which times its own `kv_get` calls;
    /// checked when that phase runs.
    pub state_artifact: PathBuf,
}

const NATS_CONFIG: &str = "broker-config/nats/default.conf";

impl Environment {
    /// Finds the workspace, nats-server, and the binaries beside this one.
    pub fn discover(artifact: Option<PathBuf>, open_broker: bool) -> anyhow::Result<Environment> {
        let bench = std::env::current_exe().context("cannot find this program's path")?;
        let bin_dir = bench
            .parent()
            .context("this program's path has no folder")?
            .to_path_buf();
        let cwd = std::env::current_dir().context("cannot read the current folder")?;
        let root = bin_dir
            .ancestors()
            .chain(cwd.ancestors())
            .find(|dir| dir.join(NATS_CONFIG).is_file())
            .map(Path::to_path_buf)
            .with_context(|| {
                format!(
                    "cannot find {NATS_CONFIG} above {} or the current folder; run the benchmark \
                     from the Squall workspace",
                    bin_dir.display()
                )
            })?;
        let sibling = |name: &str| {
            let path = bin_dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} is missing; build it with: {BUILD_COMMAND}",
                    path.display()
                )
            }
        };
        let artifact = match artifact {
            Some(path) if path.is_file() => path,
            Some(path) => bail!("--artifact {} is not a file", path.display()),
            None => sibling("libnoop.so")?,
        };
        Ok(Environment {
            nats_server: nats_server_binary(&root)?,
            broker: Broker::new(open_broker)?,
            dispatcher: sibling("squall-dispatcher")?,
            worker: sibling("squall-worker")?,
            bench,
            artifact,
            state_artifact: bin_dir.join("libstatebench.so"),
            root,
        })
    }
}

/// nats-server: `$NATS_SERVER`, then `PATH`, then the project's `.tools/bin`.
fn nats_server_binary(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "NATS_SERVER is set to {}, which is not a file",
            path.display()
        );
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let local = root.join(".tools/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    bail!(
        "nats-server (>= 2.14) is not installed; install it with scripts/install-nats-server \
         (it prints its path on the last line), or set NATS_SERVER to its path"
    )
}

/// The first line `program --version` prints, or "unknown".
pub fn version_of(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// A child process with its output in a log file; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `ready` holds for the log, failing when the process exits or `timeout` passes.
    pub async fn wait_for_log(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(&self.log_text()) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited with {status} before {what}:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not report {what} within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asks the process to stop (SIGTERM), waits up to `timeout`, then kills it and everything
    /// it started.
    pub async fn terminate(&mut self, timeout: Duration) {
        if self.exited().is_some() {
            return;
        }
        let tree = crate::resources::process_tree(self.pid());
        signal(self.pid(), "-TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for &pid in tree.iter().skip(1) {
            signal(pid, "-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    /// Asks the process to stop, then kills it and everything it started: a supervised worker's
    /// child must not outlive the benchmark.
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let tree = crate::resources::process_tree(self.pid());
        signal(self.pid(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.exited().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        for &pid in tree.iter().skip(1) {
            signal(pid, "-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` (such as `-TERM`) to `pid` with kill(1); the benchmark has no unsafe code.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A nats-server on a dynamic loopback port with its store in the benchmark's folder.
pub struct NatsServer {
    pub url: String,
    pub process: Proc,
}

impl NatsServer {
    /// Starts nats-server with the project's broker config and waits for its client URL.
    pub async fn start(env: &Environment, dir: &Path) -> anyhow::Result<NatsServer> {
        let ports = dir.join("ports");
        std::fs::create_dir_all(&ports)?;
        let config = env.broker.config(&env.root, &dir.join("config"))?;
        let mut command = Command::new(&env.nats_server);
        command
            .envs(env.broker.server_env())
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports);
        let mut process = Proc::spawn("nats-server", command, dir.join("nats-server.log"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(url) = read_ports_file(&ports) {
                return Ok(NatsServer { url, process });
            }
            if let Some(status) = process.exited() {
                bail!(
                    "nats-server exited with {status}:\n{}",
                    process.log_tail(20)
                );
            }
            if Instant::now() > deadline {
                bail!("nats-server did not start:\n{}", process.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One node of a loopback JetStream cluster: its client URL, monitoring URL and process.
pub struct ClusterNode {
    /// The node's server name (`node-1` …), as stream and consumer infos name their leader.
    pub name: String,
    pub url: String,
    pub monitor: String,
    pub process: Proc,
}

/// nats-servers on loopback that form one JetStream cluster (`squall-bench`): each node with
/// its own client, route and monitoring port and store folder, and the project's broker config.
pub struct NatsCluster {
    pub nodes: Vec<ClusterNode>,
}

impl NatsCluster {
    /// Starts `count` nodes with their folders under `dir` and waits until every node's
    /// `/healthz` answers 200 (its JetStream is ready and, in a cluster, current with a known
    /// meta leader).
    pub async fn start(
        env: &Environment,
        dir: &Path,
        count: usize,
        http: &reqwest::Client,
    ) -> anyhow::Result<NatsCluster> {
        let ports = (0..count)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<Vec<(u16, u16, u16)>>>()?;
        let login = env.broker.route_login();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://{login}127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let config = env.broker.config(&env.root, &dir.join("config"))?;
        let config = env.broker.node_config(&config, &dir.join("config"))?;
        let mut nodes = Vec::with_capacity(count);
        for (i, &(client, route, monitor)) in ports.iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store)
                .with_context(|| format!("cannot create {}", store.display()))?;
            let mut command = Command::new(&env.nats_server);
            command
                .envs(env.broker.server_env())
                .arg("-c")
                .arg(&config)
                .args(["--name", &name, "--cluster_name", "squall-bench"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{route}"))
                .arg("--routes")
                .arg(&routes)
                .arg("-m")
                .arg(monitor.to_string())
                .args(["-js", "-sd"])
                .arg(&store)
                .args(["-a", "127.0.0.1", "-p"])
                .arg(client.to_string());
            let process = Proc::spawn(&name, command, dir.join(format!("{name}.log")))?;
            nodes.push(ClusterNode {
                url: format!("nats://127.0.0.1:{client}"),
                monitor: format!("http://127.0.0.1:{monitor}"),
                name,
                process,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &mut nodes {
            let healthz = format!("{}/healthz", node.monitor);
            loop {
                let healthy = http
                    .get(&healthz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                if healthy {
                    break;
                }
                if let Some(status) = node.process.exited() {
                    bail!(
                        "{} exited with {status}:\n{}",
                        node.name,
                        node.process.log_tail(20)
                    );
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} was not healthy within 30 s:\n{}",
                        node.name,
                        node.process.log_tail(20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(NatsCluster { nodes })
    }

    /// Every node's client URL, comma-separated: the `--nats-url` of a clustered process.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops every node at once (SIGTERM, then SIGKILL after `timeout`).
    pub async fn stop(&mut self, timeout: Duration) {
        futures::future::join_all(
            self.nodes
                .iter_mut()
                .map(|node| node.process.terminate(timeout)),
        )
        .await;
    }
}

/// The client URL from nats-server's ports file, once it exists.
fn read_ports_file(dir: &Path) -> Option<String> {
    for entry in std::fs::read_dir(dir).ok()? {
        let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        if let Some(url) = json["nats"].get(0).and_then(|u| u.as_str()) {
            return Some(url.to_string());
        }
    }
    None
}

/// A loopback port that was free a moment ago.
///
/// Chosen below the kernel's ephemeral range (32768 and up by default), from a random start: a
/// port from that range can be taken by any outgoing connection between this check and the
/// server's bind (a dispatcher once failed to listen on a port that had become some client's
/// local port), while ports below it are handed out only by a listen.
pub fn free_port() -> anyhow::Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let mut seed = [0u8; 4];
    getrandom::fill(&mut seed).context("no random start for a port")?;
    let start = u32::from_le_bytes(seed) % SPAN;
    // Handed out once per run: two calls before either port is bound must differ.
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let port = (0..SPAN)
        .map(|i| (LOW + (start + i) % SPAN) as u16)
        .filter(|port| !handed_out.contains(port))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .context("no free loopback port below the ephemeral range")?;
    handed_out.push(port);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;

    fn environment(open: bool) -> Environment {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let nowhere = PathBuf::from("/nonexistent");
        Environment {
            nats_server: nats_server_binary(&root).expect("nats-server"),
            broker: Broker::new(open).unwrap(),
            dispatcher: nowhere.clone(),
            worker: nowhere.clone(),
            bench: nowhere.clone(),
            artifact: nowhere.clone(),
            state_artifact: nowhere,
            root,
        }
    }

    #[tokio::test]
    async fn the_benchmarks_broker_refuses_a_connection_without_credentials() {
        let env = environment(false);
        let dir = tempfile::tempdir().unwrap();
        let server = NatsServer::start(&env, dir.path()).await.unwrap();
        let anonymous = async_nats::ConnectOptions::new()
            .connect(server.url.as_str())
            .await;
        assert!(
            anonymous.is_err(),
            "a connection without credentials was accepted"
        );
        let bench = env.broker.options().connect(server.url.as_str()).await;
        assert!(bench.is_ok(), "the benchmark's own user was refused");
    }
}
