//! A whole local cluster: nats-server, dispatchers and worker processes, and its HTTP client.

use crate::{
    auth_env, authenticated, built, callout_seed_env, decode_response, eventually, free_port,
    json_response, squall, workspace_root, NatsServer, Process, Text, AUTH_DISPATCHER, AUTH_WORKER,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    /// The first dispatcher's web listener, where web functions are served.
    pub web_url: String,
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

/// Starts the first dispatcher on `port`, its web listener on `web_port`, with its data in
/// `dir/dispatcher`.
fn spawn_dispatcher(
    nats_url: &str,
    (port, web_port): (u16, u16),
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
        .arg("--web-addr")
        .arg(format!("127.0.0.1:{web_port}"))
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
    /// The broker config profile: `open` (the tests' own, without users), or one Squall ships
    /// (`default`, `strict`, `mqtt`: with users, so use `with_auth`).
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
            profile: "open",
            env: Vec::new(),
            dispatcher_env: Vec::new(),
            worker_env: Vec::new(),
            nats_env: Vec::new(),
            extra_servers: Vec::new(),
            nats_nodes: 1,
        }
    }
}

impl ClusterOptions {
    /// A broker profile with users (`default` unless another one Squall ships is set), with the
    /// dispatchers logged in as `dispatcher` and the workers and fleet supervisors as `worker`
    /// (added to any environment already set).
    pub fn with_auth(mut self) -> ClusterOptions {
        if !authenticated(self.profile) {
            self.profile = "default";
        }
        self.dispatcher_env.extend(AUTH_DISPATCHER.login_env());
        self.worker_env.extend(AUTH_WORKER.login_env());
        self.worker_env.extend(callout_seed_env());
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
        let (port, web_port) = (free_port(), free_port());
        let dispatcher = spawn_dispatcher(&list, (port, web_port), dir.path(), &options, &[]);
        let mut cluster = Cluster {
            nats,
            nats_peers,
            dispatcher,
            more_dispatchers: Vec::new(),
            workers: Vec::new(),
            worker_metrics: Vec::new(),
            url: format!("http://127.0.0.1:{port}"),
            web_url: format!("http://127.0.0.1:{web_port}"),
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
        let port_of = |url: &str| -> u16 {
            url.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port of the dispatcher URL")
        };
        self.dispatcher = spawn_dispatcher(
            &self.broker_list(),
            (port_of(&self.url), port_of(&self.web_url)),
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
            .arg("--web-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("dispatcher-{n}")))
            .args(extra_args);
        let log = self.dir.path().join(format!("dispatcher-{n}.log"));
        let mut process =
            Process::spawn(&format!("dispatcher-{n}"), command, log).expect("dispatcher");
        let url = format!("http://127.0.0.1:{port}");
        eventually(
            Duration::from_secs(20),
            format_args!("dispatcher-{n} to be ready"),
            async || readyz(&self.http, &url, &mut process).await,
        )
        .await;
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
            .arg(self.dir.path().join(format!("worker-{n}")))
            // The suite's plain workers serve every function it deploys in one process: its
            // functions trust each other. The fleet tests run a process per function.
            .arg("--shared");
        let log = self.dir.path().join(format!("worker-{n}.log"));
        self.workers
            .push(Process::spawn(&format!("worker-{n}"), command, log).expect("worker"));
    }

    /// Starts a worker process that serves `function` alone, without a supervisor (so it
    /// confines itself: memory limit, sandbox), with `args` after the usual ones; returns its
    /// log file.
    pub fn add_function_worker(&mut self, function: &str, args: &[&str]) -> PathBuf {
        let n = self.workers.len();
        let mut command = Command::new(&built().worker);
        command
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .envs(self.options.worker_env.iter().map(|(k, v)| (k, v)))
            .arg("--no-supervise")
            .arg("--function")
            .arg(function)
            .arg("--nats-url")
            .arg(server_list(&self.broker_list(), &self.options))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("worker-{n}")))
            .args(args);
        let log = self.dir.path().join(format!("worker-{n}.log"));
        self.workers.push(
            Process::spawn(&format!("worker-{n}-{function}"), command, log.clone())
                .expect("worker"),
        );
        log
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
        let dispatcher = &mut self.dispatcher;
        eventually(
            Duration::from_secs(20),
            "the dispatcher to be ready",
            async || readyz(&self.http, &self.url, dispatcher).await,
        )
        .await;
    }

    /// Deploys `library` as `name` with an optional JSON spec, returning status and body.
    pub async fn deploy(
        &self,
        name: &str,
        library: &Path,
        spec: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let bytes = std::fs::read(library).expect("read library");
        self.deploy_bytes(name, bytes, spec).await
    }

    /// Deploys an artifact's bytes (a library or a bundle) as `name` with an optional JSON
    /// spec, returning status and body.
    pub async fn deploy_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        spec: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
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

    /// `squall deploy functions/examples/<folder>` with the real CLI, as a user deploys an
    /// example: the folder's squall.toml names the function, its runtime, handler and config.
    /// Panics with what the CLI said unless it succeeds.
    pub async fn deploy_folder(&self, folder: &str) {
        let path = workspace_root().join("functions/examples").join(folder);
        let path = path.to_str().expect("a UTF-8 workspace path");
        squall(&self.url, &["deploy", path]).await.ok();
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

    /// Invokes `name` synchronously with `input` as JSON: the status, the invocation id and the
    /// body as text.
    pub async fn call_json(&self, name: &str, input: serde_json::Value) -> (u16, String, String) {
        let response = self.invoke(name, input.to_string()).await;
        let status = response.status().as_u16();
        let id = response.headers()["squall-invocation-id"]
            .to_str()
            .expect("an ASCII invocation id")
            .to_string();
        (status, id, response.text().await.expect("a text body"))
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
        eventually(
            timeout,
            format_args!("invocation {id} to end"),
            async || {
                let (status, body) = self.get_json(&format!("/v1/invocations/{id}")).await;
                assert_eq!(status, 200, "{body}");
                let view: squall_api::invocations::Invocation =
                    serde_json::from_value(body.clone()).unwrap_or_else(|e| {
                        panic!("invocation {id} does not decode ({e}): {body}")
                    });
                match view.status.is_terminal() {
                    true => Ok(view),
                    false => Err(view.status),
                }
            },
        )
        .await
    }

    /// The invocation once it has ended, waiting at most 30 s.
    pub async fn finished(&self, id: &str) -> squall_api::invocations::Invocation {
        self.wait_terminal(id, Duration::from_secs(30)).await
    }

    /// The last message stored under `key` in function `function`'s state (its payload and
    /// headers, such as `Nats-TTL`), read from the state stream directly.
    pub async fn state_entry(
        &self,
        function: &str,
        key: &str,
    ) -> async_nats::jetstream::message::StreamMessage {
        let jetstream = async_nats::jetstream::new(self.nats_client().await);
        let stream = jetstream
            .get_stream("KV_squall_state")
            .await
            .expect("the state stream");
        stream
            .direct_get_last_for_subject(format!("$KV.squall_state.{function}.{key}"))
            .await
            .unwrap_or_else(|e| panic!("{function}'s state has {key}: {e}"))
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

    /// A plain NATS client connected to this cluster's server; with users, logged in as the
    /// dispatcher (the role with the JetStream API the tests inspect streams through).
    pub async fn nats_client(&self) -> async_nats::Client {
        let servers: Vec<async_nats::ServerAddr> = std::iter::once(&self.nats)
            .chain(&self.nats_peers)
            .map(|n| n.url.parse().expect("server address"))
            .collect();
        let options = match authenticated(self.options.profile) {
            true => async_nats::ConnectOptions::with_user_and_password(
                AUTH_DISPATCHER.user.into(),
                AUTH_DISPATCHER.password.into(),
            )
            .custom_inbox_prefix(AUTH_DISPATCHER.inbox),
            false => async_nats::ConnectOptions::new(),
        };
        options.connect(servers).await.expect("connect to nats")
    }
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

/// Waits until every worker pulls `function`'s jobs: its consumer holds a pull request from each
/// of them, and a worker pulls a function's jobs only once it has loaded the function.
pub async fn wait_workers_ready(cluster: &Cluster, function: &str) {
    use squall_broker::names::{consumer_name, JOBS_STREAM};
    let jetstream = async_nats::jetstream::new(cluster.nats_client().await);
    let jobs = jetstream
        .get_stream(JOBS_STREAM)
        .await
        .expect("the jobs stream");
    let workers = cluster.workers.len();
    // Generous: on a loaded two-core machine a worker may take a while to load the function;
    // a worker that never pulls shows in its log, which the observation carries.
    eventually(
        Duration::from_secs(45),
        format_args!("{workers} workers to pull the jobs of {function}"),
        async || match jobs.consumer_info(consumer_name(function)).await {
            Ok(info) if info.num_waiting >= workers => Ok(()),
            Ok(info) => Err(format!(
                "{} pull requests waiting; worker logs:\n{}",
                info.num_waiting,
                worker_log_tails(cluster)
            )),
            Err(error) => Err(error.to_string()),
        },
    )
    .await
}

/// The last lines of every worker's log, for a failure message.
fn worker_log_tails(cluster: &Cluster) -> String {
    cluster
        .workers
        .iter()
        .map(|w| {
            let output = w.output();
            let lines: Vec<&str> = output.lines().rev().take(15).collect();
            let tail: Vec<&str> = lines.into_iter().rev().collect();
            format!("--- {} ---\n{}", w.name, tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the dispatcher at `url` answers `/readyz` with success; a dispatcher that exited
/// fails the test at once with its log.
async fn readyz(http: &reqwest::Client, url: &str, dispatcher: &mut Process) -> Result<(), Text> {
    if let Ok(Some(status)) = dispatcher.child.try_wait() {
        panic!(
            "{} exited with {status}:\n{}",
            dispatcher.name,
            dispatcher.output()
        );
    }
    match http.get(format!("{url}/readyz")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        answer => Err(Text(format!("{answer:?}\n{}", dispatcher.output()))),
    }
}
