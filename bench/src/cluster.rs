//! The Squall side: a dispatcher process (the one that holds the query index), a gateway
//! dispatcher without the index when a measurement asks for one, worker processes, and the
//! HTTP calls the benchmark makes to deploy functions.

use crate::broker::{Broker, Role};
use crate::procs::{free_port, Environment, Proc};
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A dispatcher and its workers on the benchmark's nats-server.
pub struct Cluster {
    /// The dispatcher's base URL.
    pub url: String,
    /// Where the dispatcher serves web functions: its web listener, the API's port + 1 by
    /// default (a dispatcher older than the web listener serves them at `url`).
    pub web_url: String,
    pub http: reqwest::Client,
    /// The dispatcher every HTTP measurement talks to; it holds the query index (the default).
    pub dispatcher: Proc,
    pub workers: Vec<Proc>,
    dispatcher_binary: PathBuf,
    worker_binary: PathBuf,
    /// How the dispatchers and workers log in.
    broker: Broker,
    nats_url: String,
    dir: PathBuf,
    started_workers: usize,
}

/// Whether a dispatcher's log says it predates `--query-index` (and so cannot be a gateway).
pub fn lacks_query_index_flag(log: &str) -> bool {
    log.contains("unexpected argument '--query-index'")
}

/// Starts a dispatcher serving on a free loopback port with its data in `data_dir` and its log
/// in `log`; `extra` comes after the flags every dispatcher of the benchmark gets.
fn spawn_dispatcher(
    binary: &Path,
    login: &[(String, String)],
    name: &str,
    nats_url: &str,
    data_dir: PathBuf,
    log: PathBuf,
    extra: &[&str],
) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let mut command = Command::new(binary);
    command
        .env("RUST_LOG", "info")
        .envs(login.iter().map(|(k, v)| (k, v)))
        .arg("--nats-url")
        .arg(nats_url)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra);
    let process = Proc::spawn(name, command, log)?;
    Ok((process, format!("http://127.0.0.1:{port}")))
}

/// The dispatcher's default web listener beside its API at `url`: the next port.
fn web_url_beside(url: &str) -> String {
    match url
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
    {
        Some((host, port)) => format!("{host}:{}", port.wrapping_add(1)),
        None => url.to_string(),
    }
}

/// Waits until the dispatcher at `url` answers `/readyz`, failing when it exits or after 20 s.
async fn wait_ready(http: &reqwest::Client, url: &str, process: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if let Some(status) = process.exited() {
            bail!(
                "the {} exited with {status}:\n{}",
                process.name,
                process.log_tail(20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the {} was not ready within 20 s:\n{}",
                process.name,
                process.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cluster {
    /// Starts a dispatcher and waits until it is ready.
    pub async fn start(env: &Environment, nats_url: &str, dir: PathBuf) -> anyhow::Result<Cluster> {
        Cluster::start_with(env, nats_url, dir, &[]).await
    }

    /// Starts a dispatcher with `extra` flags (such as `--replicas 3`) after the usual ones and
    /// waits until it is ready. `nats_url` may list several servers, comma-separated: the
    /// workers get the same list.
    pub async fn start_with(
        env: &Environment,
        nats_url: &str,
        dir: PathBuf,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        let (mut dispatcher, url) = spawn_dispatcher(
            &env.dispatcher,
            &env.broker.login(Role::Dispatcher),
            "dispatcher",
            nats_url,
            dir.join("dispatcher"),
            dir.join("dispatcher.log"),
            extra,
        )?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        wait_ready(&http, &url, &mut dispatcher).await?;
        let web_url = web_url_beside(&url);
        Ok(Cluster {
            web_url,
            url,
            http,
            dispatcher,
            workers: Vec::new(),
            dispatcher_binary: env.dispatcher.clone(),
            worker_binary: env.worker.clone(),
            broker: env.broker.clone(),
            nats_url: nats_url.to_string(),
            dir,
            started_workers: 0,
        })
    }

    /// Starts a gateway dispatcher beside the first one: `--query-index false`, so it does no
    /// work per result and asks the index holder for queries; its own port, data folder and log
    /// (`name`), the same other flags. Waits until it is ready.
    pub async fn start_gateway(&self, name: &str) -> anyhow::Result<Proc> {
        let (mut process, url) = spawn_dispatcher(
            &self.dispatcher_binary,
            &self.broker.login(Role::Dispatcher),
            "gateway dispatcher",
            &self.nats_url,
            self.dir.join(name),
            self.dir.join(format!("{name}.log")),
            &["--query-index", "false"],
        )?;
        wait_ready(&self.http, &url, &mut process).await?;
        Ok(process)
    }

    /// Starts one more worker (with its own artifact cache) serving `function` alone, as the
    /// fleet runs it, and waits until it has loaded it.
    pub async fn add_worker(&mut self, function: &str) -> anyhow::Result<()> {
        self.spawn_worker(&["--function", function], function).await
    }

    /// Starts one more worker (with its own artifact cache) serving every deployed function in
    /// one process (`--shared`), so that it also picks up functions deployed after it started,
    /// and waits until it has loaded `function`.
    pub async fn add_shared_worker(&mut self, function: &str) -> anyhow::Result<()> {
        self.spawn_worker(&["--shared"], function).await
    }

    async fn spawn_worker(&mut self, serves: &[&str], function: &str) -> anyhow::Result<()> {
        self.started_workers += 1;
        let name = format!("worker-{}", self.started_workers);
        let mut command = Command::new(&self.worker_binary);
        command
            .env("RUST_LOG", "info")
            .envs(self.broker.login(Role::Worker))
            .arg("--nats-url")
            .arg(&self.nats_url)
            .arg("--data-dir")
            .arg(self.dir.join(&name))
            .args(serves);
        let mut worker = Proc::spawn(&name, command, self.dir.join(format!("{name}.log")))?;
        let needle = format!("function={function} ");
        worker
            .wait_for_log(
                &format!("that {function} is ready"),
                Duration::from_secs(20),
                |log| {
                    log.lines()
                        .any(|l| l.contains("function ready") && l.contains(&needle))
                },
            )
            .await?;
        self.workers.push(worker);
        Ok(())
    }

    /// Stops every worker gracefully.
    pub async fn stop_workers(&mut self) {
        for mut worker in self.workers.drain(..) {
            worker.terminate(Duration::from_secs(10)).await;
        }
    }

    /// Deploys `artifact` as `name` with the JSON `spec`; returns the 201 answer's JSON.
    pub async fn deploy(
        &self,
        name: &str,
        artifact: Vec<u8>,
        spec: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let form = reqwest::multipart::Form::new()
            .part(
                "artifact",
                reqwest::multipart::Part::bytes(artifact).file_name("libnoop.so"),
            )
            .part("config", reqwest::multipart::Part::text(spec.to_string()));
        let response = self
            .http
            .put(format!("{}/v1/functions/{name}", self.url))
            .multipart(form)
            .send()
            .await
            .with_context(|| format!("deploy of {name} failed"))?;
        let status = response.status();
        let text = response.text().await?;
        if status != reqwest::StatusCode::CREATED {
            bail!("deploy of {name} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("deploy answer is not JSON: {text}"))
    }

    /// Removes function `name`.
    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/v1/functions/{name}", self.url))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("delete of {name} answered {}", response.status());
        }
        Ok(())
    }

    /// The URL that invokes `name`.
    pub fn invoke_url(&self, name: &str) -> String {
        format!("{}/v1/functions/{name}/invocations", self.url)
    }
}
