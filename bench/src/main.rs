//! `squall-bench`: measures Squall against the bare JetStream pipeline, side by side in one run,
//! on a private nats-server (or, in the cluster phase, a private three-node cluster), and prints
//! a table and writes JSON (see BENCHMARKS.md).

mod bare;
mod baseline;
mod batch;
mod broker;
mod celery;
mod cluster;
mod cold;
mod compiled;
mod context;
mod drive;
mod many;
mod measure;
mod payloads;
mod procs;
mod record;
mod reference;
mod replicated;
mod report;
mod resources;
mod run;
mod runtimes;
mod scale;
mod squall;
mod state;
mod stats;
mod targets;
mod zero;

use clap::{Parser, Subcommand};
use context::{Phase, Settings};
use std::path::PathBuf;
use std::process::ExitCode;

/// Benchmarks Squall against a minimal async-nats pipeline on its own nats-server.
#[derive(Parser, Debug)]
#[command(name = "squall-bench", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A tiny run (one repetition, few invocations) that only proves the harness works.
    #[arg(long)]
    smoke: bool,
    /// Repetitions of every measurement; each figure is the median over them [default: 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Invocations per throughput measurement [default: 50000].
    #[arg(long)]
    n: Option<usize>,
    /// Requests per latency measurement [default: 5000].
    #[arg(long)]
    latency_n: Option<usize>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// Input size of every invocation, in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// The function's concurrency (its consumer's max_ack_pending); the bare pipeline gets the
    /// same consumer settings.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Concurrent HTTP clients submitting asynchronous invocations.
    #[arg(long, default_value_t = 32)]
    http_submitters: usize,
    /// Concurrent clients in the concurrent latency measurements.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Parts to run (comma-separated). `cluster` (raw-NATS throughput on a three-node loopback
    /// cluster, R3 against R1), `scale` (the query index with a million results) and `runtimes`
    /// (Python and JavaScript noops beside the native one, and Celery) are not in the default
    /// set: ask for them by name.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bare,squall,batch,cold,zero,many,state,payloads"
    )]
    phases: Vec<Phase>,
    /// Invocations per request in the HTTP batch measurement (`POST …/batch`, NDJSON).
    #[arg(long, default_value_t = 500)]
    batch_lines: usize,
    /// Compare every figure with this earlier JSON report [default: bench/baseline.json in the
    /// workspace]; a missing file means no comparison.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Also write the JSON report to this file as the new baseline (for example
    /// bench/baseline.json when BENCHMARKS.md is refreshed); not with --smoke.
    #[arg(long)]
    write_baseline: Option<PathBuf>,
    /// The trivial function's library [default: libnoop.so beside this program].
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// Also write the tables as Markdown (for BENCHMARKS.md) to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// A note on what was measured (for example a commit or a change), kept in the report.
    #[arg(long)]
    label: Option<String>,
    /// Synthetic results the `scale` phase publishes into RESULTS [default: 1000000; 5000
    /// with --smoke].
    #[arg(long)]
    scale_n: Option<usize>,
    /// Keep the temporary folder with every process's log and print where it is.
    #[arg(long)]
    keep: bool,
    /// Run every broker without users (the tests' open profile) instead of the shipped users:
    /// only for the A/B that prices authentication (BENCHMARKS.md).
    #[arg(long)]
    open_broker: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The bare reference worker; the benchmark runs it as a child process.
    #[command(hide = true)]
    BareWorker {
        #[arg(long)]
        nats_url: String,
        #[arg(long)]
        concurrency: usize,
        /// The broker user and password (none on an open broker).
        #[arg(long, env = squall_broker::env::ENV_NATS_USER)]
        nats_user: Option<String>,
        #[arg(long, env = squall_broker::env::ENV_NATS_PASSWORD, hide_env_values = true)]
        nats_password: Option<String>,
    },
}

fn settings(args: Args) -> anyhow::Result<Settings> {
    let (runs, n, latency_n) = if args.smoke {
        (1, 300, 100)
    } else {
        (5, 50_000, 5_000)
    };
    let settings = Settings {
        smoke: args.smoke,
        runs: args.runs.unwrap_or(runs),
        n: args.n.unwrap_or(n),
        latency_n: args.latency_n.unwrap_or(latency_n),
        payload: args.payload,
        concurrency: args.concurrency,
        http_submitters: args.http_submitters,
        clients: args.clients,
        phases: args.phases,
        json: args.json,
        markdown: args.markdown,
        artifact: args.artifact,
        keep: args.keep,
        open_broker: args.open_broker,
        label: args.label,
        batch_lines: args.batch_lines,
        baseline: args.baseline,
        write_baseline: args.write_baseline,
        scale_n: args
            .scale_n
            .unwrap_or(if args.smoke { 5_000 } else { 1_000_000 }),
    };
    if settings.runs == 0 || settings.n == 0 || settings.latency_n == 0 || settings.scale_n < 2 {
        anyhow::bail!("--runs, --n and --latency-n must be at least 1, --scale-n at least 2");
    }
    if settings.concurrency == 0
        || settings.http_submitters == 0
        || settings.clients == 0
        || settings.batch_lines == 0
    {
        anyhow::bail!(
            "--concurrency, --http-submitters, --clients and --batch-lines must be at least 1"
        );
    }
    if settings.smoke && settings.write_baseline.is_some() {
        anyhow::bail!("a --smoke run's figures mean nothing: it cannot --write-baseline");
    }
    Ok(settings)
}

/// Resolves on Ctrl-C or SIGTERM, so the child processes are stopped on the way out.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("squall-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if let Some(Command::BareWorker {
            nats_url,
            concurrency,
            nats_user,
            nats_password,
        }) = args.command
        {
            let login = nats_user.zip(nats_password);
            return bare::worker_main(nats_url, concurrency, login).await;
        }
        let settings = settings(args)?;
        tokio::select! {
            result = run::run(settings) => result,
            _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("squall-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
