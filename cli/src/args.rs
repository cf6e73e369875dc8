//! The command line of `squall`: global flags and subcommands.

use clap::{Parser, Subcommand};
use squall_broker::env;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default API URL, where `squall up` serves it.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Squall: deploy and invoke serverless functions, or run a local cluster.
#[derive(Parser, Debug)]
#[command(name = "squall", version)]
pub struct Cli {
    /// The dispatcher's API URL.
    #[arg(long, global = true, env = env::ENV_URL, default_value = DEFAULT_URL)]
    pub url: String,
    /// API key sent as `Authorization: Bearer`; without one, `.squall/admin.key` (written by
    /// `squall up`) is used when it exists.
    #[arg(long, global = true, env = "SQUALL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) to trust for an https:// API URL, besides the system's.
    #[arg(long, global = true, env = "SQUALL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print the API's JSON instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a local cluster: nats-server, a dispatcher and a worker.
    Up(UpArgs),
    /// Build and deploy a function directory (with squall.toml), a Python or JavaScript source
    /// file, or a built library.
    Deploy(DeployArgs),
    /// Make a new function folder: its handler, a test and squall.toml, ready to deploy.
    Init(InitArgs),
    /// Run a Python, JavaScript or Go function folder's own tests in the runtime it deploys to.
    Test(TestArgs),
    /// Invoke a function and print its output.
    Invoke(InvokeArgs),
    /// Show an invocation: status, attempts, error, output and timings.
    Get(GetArgs),
    /// Print the log lines an invocation's function wrote.
    Logs(GetArgs),
    /// Cancel an invocation (queued, retrying or running), or a function's queued backlog.
    Cancel(CancelArgs),
    /// List deployed functions.
    Ls,
    /// Remove a deployed function.
    Rm(RmArgs),
    /// List invocations (newest first), optionally filtered.
    Invocations(InvocationsArgs),
    /// Show a function's count, error rate and duration percentiles over a window.
    Stats(StatsArgs),
    /// Show metered usage (invocations, CPU-ms, wall-ms) by function or by hour.
    Usage(UsageArgs),
    /// Inspect, replay and remove dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Set, list and remove a function's secrets (it reads them in ctx.config.secrets).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Set, list and remove cron schedules that invoke a function.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Bind NATS subjects or key-value keys to a function; list and remove bindings.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Show the fleet: supervisors, worker processes, per-function backlog and in-flight jobs.
    Fleet,
    /// List a function's numbered versions (`*` marks $LATEST) and the aliases on them.
    Versions {
        /// The function.
        name: String,
    },
    /// Point aliases at versions (optionally weighted), list and remove them.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Move an alias back to its previous target.
    Rollback {
        /// The function.
        name: String,
        /// The alias.
        alias: String,
    },
}

/// `squall alias …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AliasCommand {
    /// Point ALIAS of NAME at VERSION; `--weight 4=0.1` sends 10% of its calls to version 4.
    Set {
        name: String,
        alias: String,
        version: u32,
        /// VERSION=FRACTION (repeatable).
        #[arg(long)]
        weight: Vec<String>,
    },
    /// List a function's aliases.
    Ls { name: String },
    /// Remove an alias.
    Rm { name: String, alias: String },
}

/// `squall keys …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KeysCommand {
    /// Create a key; it is printed once.
    Create {
        /// The key's name.
        name: String,
        /// A scope: admin, invoke or read (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Also usable as an AWS secret access key (SigV4) for the Lambda-compatible API; the
        /// dispatcher then keeps the key itself, not only its hash.
        #[arg(long)]
        sigv4: bool,
        /// Limit the key to these functions: a name, or a prefix ending in `*` (`orders-*`);
        /// repeatable or comma-separated. By default it reaches every function.
        #[arg(long = "functions", value_delimiter = ',')]
        functions: Vec<String>,
        /// The most requests per second the key may make, per dispatcher.
        #[arg(long)]
        rate_per_s: Option<f64>,
        /// How many requests the key may make at once above its rate (with --rate-per-s).
        #[arg(long, requires = "rate_per_s")]
        burst: Option<u32>,
    },
    /// List keys: names, scopes and limits.
    Ls,
    /// Revoke a key.
    Rm {
        /// The key's name.
        name: String,
    },
}

/// `squall secrets …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SecretsCommand {
    /// Replace a function's secrets with NAME=VALUE pairs (VALUE `@path` reads a file).
    Set {
        /// The function.
        function: String,
        /// NAME=VALUE, or NAME=@path to read the value from a file.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// List a function's secret names.
    Ls {
        /// The function.
        function: String,
    },
    /// Remove all of a function's secrets.
    Rm {
        /// The function.
        function: String,
    },
}

/// `squall schedule …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ScheduleCommand {
    /// Create or replace a schedule.
    Set {
        /// The schedule's name (its ticks go to `cron.<name>`).
        name: String,
        /// The function each tick invokes.
        #[arg(long)]
        function: String,
        /// Cron expression: 5 fields, or 6 with seconds first, or @hourly, @daily, ….
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Input of each invocation, as JSON.
        #[arg(long)]
        payload: Option<String>,
    },
    /// List schedules with their next fire time.
    Ls,
    /// Delete a schedule: its ticks stop.
    Rm {
        /// The schedule's name.
        name: String,
    },
}

/// `squall trigger …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TriggerCommand {
    /// Create or replace a trigger: `--subject`, or `--bucket` with an optional `--key`.
    Set {
        /// The trigger's name.
        name: String,
        /// The function each event invokes.
        #[arg(long)]
        function: String,
        /// NATS subject pattern, e.g. `events.orders.>`.
        #[arg(long, required_unless_present = "bucket", conflicts_with_all = ["bucket", "key"])]
        subject: Option<String>,
        /// Key-value bucket whose puts and deletes invoke the function.
        #[arg(long)]
        bucket: Option<String>,
        /// Key pattern inside the bucket (default: every key).
        #[arg(long, requires = "bucket")]
        key: Option<String>,
    },
    /// List triggers.
    Ls,
    /// Delete a trigger.
    Rm {
        /// The trigger's name.
        name: String,
    },
}

/// `squall dlq …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DlqCommand {
    /// List dead letters, optionally of one function.
    Ls {
        /// Only this function's dead letters.
        #[arg(long)]
        function: Option<String>,
    },
    /// Show a dead letter: payload, headers and every attempt's error.
    Show {
        /// The dead invocation's id.
        id: String,
    },
    /// Submit dead letters again as new invocations: one by id, or all of `--function`.
    Replay {
        /// The dead invocation's id.
        #[arg(required_unless_present = "function", conflicts_with = "function")]
        id: Option<String>,
        /// Replay every dead letter of this function.
        #[arg(long)]
        function: Option<String>,
    },
    /// Remove a dead letter.
    Rm {
        /// The dead invocation's id.
        id: String,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Folder for the cluster's data and logs.
    #[arg(long, default_value = ".squall")]
    pub state_dir: PathBuf,
    /// Address the dispatcher's HTTP API listens on.
    #[arg(long, default_value = env::DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// Address web functions are served on, an origin apart from the API and the console; by
    /// default the --http-addr host with the next port (127.0.0.1:8081).
    #[arg(long)]
    pub web_addr: Option<SocketAddr>,
    /// Port nats-server listens on (on 127.0.0.1).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Most worker processes the fleet runs, all functions together: each function runs in
    /// processes of its own, started with its backlog and stopped when it is idle.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_workers: u32,
    /// Serve the Prometheus metrics of all the fleet's worker processes, summed, at
    /// `http://<addr>/metrics` (for example 127.0.0.1:9090). The dispatcher's own are at the
    /// API's `/metrics`.
    #[arg(long)]
    pub worker_metrics_addr: Option<SocketAddr>,
    /// nats-servers to run as one JetStream cluster on this machine: node N listens on
    /// --nats-port + N - 1, its routes 2000 and its monitoring 4000 ports above that (6222 and
    /// 8222 for node 1 by default). With 3, every stream, bucket and durable consumer is
    /// replicated three ways and survives the loss of one node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub cluster: u16,
    /// Also accept MQTT clients (devices) on this port of 127.0.0.1, through nats-server's own
    /// MQTT listener: topic `devices/7/telemetry` arrives as NATS subject
    /// `devices.7.telemetry`, which a subject trigger turns into invocations. Node N of a
    /// cluster listens on this port + N - 1. Off by default.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub mqtt_port: Option<u16>,
}

/// The languages `squall init` makes folders for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitRuntime {
    Python,
    Javascript,
    Go,
    Java,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// The function's name; also the folder made (which must not exist yet).
    pub name: String,
    /// The language of the function.
    #[arg(long, value_enum)]
    pub runtime: InitRuntime,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TestArgs {
    /// The function folder (with squall.toml naming a runtime).
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    /// A function directory holding squall.toml, a Python (.py) or JavaScript (.mjs, .js)
    /// file, a Java jar (with --handler), or a built shared library (.so).
    pub path: PathBuf,
    /// The function name; overrides squall.toml or the library's file name.
    #[arg(long)]
    pub name: Option<String>,
    /// With a jar: its runtime (`java17`, the only one a jar runs in).
    #[arg(long, value_parser = ["java17"])]
    pub runtime: Option<String>,
    /// With a jar: the handler class, fully qualified (`com.example.Hello`).
    #[arg(long)]
    pub handler: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InvokeArgs {
    /// The function to invoke.
    pub name: String,
    /// The input, as a string.
    #[arg(long, short, conflicts_with = "file")]
    pub data: Option<String>,
    /// Read the input from a file (`-` for standard input).
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Return at once with the invocation id instead of waiting for the output.
    #[arg(long = "async", conflicts_with = "wait")]
    pub respond_async: bool,
    /// Wait at most this many seconds for the outcome before answering with the invocation id.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
    /// Submit each line of this NDJSON file (`-` for standard input) as one asynchronous
    /// invocation; prints the invocation ids in line order.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data", "file", "respond_async", "wait"])]
    pub batch: Option<PathBuf>,
    /// Lines sent per request with --batch.
    #[arg(long, value_name = "LINES", requires = "batch", default_value_t = crate::batch::DEFAULT_CHUNK_LINES)]
    pub batch_size: usize,
    /// Idempotency-Key of the request: the same key runs the function once. With --batch, the
    /// Nth request (from 0) sends `KEY-N`, so rerunning the same command is safe.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the output as the function streams it (`Squall-Stream: true`), chunk by chunk; a
    /// function that does not stream prints its whole output as without it.
    #[arg(long, conflicts_with_all = ["respond_async", "batch"])]
    pub stream: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    /// The invocation id.
    pub id: String,
}

#[derive(clap::Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["id", "queued"]))]
pub struct CancelArgs {
    /// The invocation id.
    pub id: Option<String>,
    /// Cancel every queued (not yet started) invocation of this function instead.
    #[arg(long, value_name = "FUNCTION", conflicts_with = "id")]
    pub queued: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InvocationsArgs {
    /// Only this function's invocations.
    #[arg(long)]
    pub function: Option<String>,
    /// Only invocations in this status (retrying, succeeded, failed, timed_out, dead_lettered, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Created at or after (RFC 3339 or Unix milliseconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (RFC 3339 or Unix milliseconds).
    #[arg(long)]
    pub until: Option<String>,
    /// Most invocations to show per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Start after this cursor (printed by the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatsArgs {
    /// The function.
    pub name: String,
    /// The window: this many seconds back from now.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub window: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UsageArgs {
    /// Created at or after (RFC 3339 or Unix milliseconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (RFC 3339 or Unix milliseconds).
    #[arg(long)]
    pub until: Option<String>,
    /// Group by function or by hour.
    #[arg(long, default_value = "function", value_parser = ["function", "hour"])]
    pub group_by: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RmArgs {
    /// The function to remove.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn data_and_file_are_exclusive() {
        let parsed = Cli::try_parse_from(["squall", "invoke", "f", "--data", "x", "--file", "y"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn batch_excludes_single_input_and_waiting() {
        for extra in [["--data", "x"], ["--file", "y"], ["--wait", "1"]] {
            let mut args = vec!["squall", "invoke", "f", "--batch", "in.ndjson"];
            args.extend(extra);
            assert!(Cli::try_parse_from(args).is_err(), "{extra:?}");
        }
        let cli = Cli::try_parse_from([
            "squall",
            "invoke",
            "f",
            "--batch",
            "-",
            "--idempotency-key",
            "k",
        ])
        .unwrap();
        let Command::Invoke(args) = cli.command else {
            panic!("not invoke");
        };
        assert_eq!(args.batch.as_deref(), Some(std::path::Path::new("-")));
        assert_eq!(args.batch_size, crate::batch::DEFAULT_CHUNK_LINES);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["squall", "ls", "--json", "--url", "http://h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.url, "http://h:1");
    }
}
