//! The `squall-worker` binary: parses configuration and runs the worker library.

mod fleet;
mod signal;
mod supervisor;

use clap::Parser;
use squall_broker::env;
use std::path::PathBuf;
use std::time::Duration;

/// Pulls jobs from JetStream and runs deployed functions.
#[derive(Parser, Debug)]
#[command(name = "squall-worker", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// NATS server URL.
    #[arg(long, global = true, env = env::ENV_NATS_URL, default_value = env::DEFAULT_NATS_URL)]
    nats_url: String,
    #[command(flatten)]
    nats_auth: squall_broker::connect::NatsAuth,
    /// Folder for local state; the artifact cache lives in `<data-dir>/artifacts`.
    #[arg(long, global = true, env = env::ENV_DATA_DIR, default_value = ".squall/worker")]
    data_dir: PathBuf,
    /// Serve only these functions (repeatable); all by default.
    #[arg(long = "function", global = true)]
    functions: Vec<String>,
    /// Most threads running function code at once.
    #[arg(long, global = true, default_value_t = 256)]
    max_threads: usize,
    /// Bytes of function log lines kept per invocation.
    #[arg(long, global = true, default_value_t = 16 * 1024)]
    log_capture_bytes: usize,
    /// Seconds to wait for in-flight jobs at shutdown.
    #[arg(long, global = true, default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Longest a function's state or publish call waits for the broker (within the
    /// invocation's deadline) before it answers SQUALL_HOST_UNAVAILABLE.
    #[arg(
        long,
        global = true,
        env = "SQUALL_HOST_CALL_TIMEOUT_MS",
        default_value_t = 5000
    )]
    host_call_timeout_ms: u64,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (off by default). A worker serves
    /// its own; `fleet --metrics-addr` serves one endpoint for all the host's workers.
    #[arg(long, global = true, env = env::ENV_METRICS_ADDR)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The fleet supervisor's Unix socket this worker reports its metrics to (set by
    /// `squall-worker fleet --metrics-addr` for the workers it starts).
    #[arg(long, hide = true)]
    metrics_report: Option<PathBuf>,
    /// Run the worker in this process instead of under a supervisor that restarts it when it
    /// crashes or recycles itself (for orchestrators that restart processes themselves).
    #[arg(long)]
    no_supervise: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Run an autoscaling fleet of worker processes on this host, sized from the backlog of the
    /// functions it serves; several hosts' fleets share `--max` through the broker.
    Fleet(FleetArgs),
}

#[derive(clap::Args, Debug)]
struct FleetArgs {
    /// Workers this host keeps running even when there is no work (0 scales to zero).
    #[arg(long, default_value_t = 1)]
    min: u32,
    /// Workers the whole fleet may run, shared with the other hosts' fleets.
    #[arg(long, default_value_t = 4)]
    max: u32,
    /// Seconds the work must stay below the running workers before the fleet scales down.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Milliseconds between two readings of the backlog.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(error) = squall_broker::connect::servers(&args.nats_url) {
        eprintln!("squall-worker: {error}");
        return std::process::ExitCode::from(64);
    }
    if args.max_threads == 0 {
        eprintln!("squall-worker: --max-threads must be at least 1");
        return std::process::ExitCode::from(64);
    }
    if let Some(Sub::Fleet(fleet)) = &args.command {
        if fleet.max == 0 || fleet.min > fleet.max {
            eprintln!(
                "squall-worker fleet: need 0 <= --min <= --max and --max >= 1, got --min {} --max {}",
                fleet.min, fleet.max
            );
            return std::process::ExitCode::from(64);
        }
        if fleet.interval_ms < 50 {
            eprintln!(
                "squall-worker fleet: --interval-ms must be at least 50, got {}",
                fleet.interval_ms
            );
            return std::process::ExitCode::from(64);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(args.max_threads)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("squall-worker: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _runtime = runtime.enter();
        match squall_telemetry::init("squall-worker") {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("squall-worker: {error}");
                return std::process::ExitCode::from(64);
            }
        }
    };
    let config = squall_worker::WorkerConfig {
        nats_url: args.nats_url,
        nats_auth: args.nats_auth,
        cache_dir: args.data_dir.join("artifacts"),
        functions: args.functions,
        log_capture_bytes: args.log_capture_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        metrics_addr: args.metrics_addr,
        metrics_report: args.metrics_report,
        host_call_timeout: Duration::from_millis(args.host_call_timeout_ms.max(1)),
    };
    if let Some(Sub::Fleet(fleet)) = args.command {
        let config = fleet::FleetConfig {
            nats_url: config.nats_url.clone(),
            nats_auth: config.nats_auth.clone(),
            data_dir: args.data_dir.clone(),
            functions: config.functions.clone(),
            policy: squall_worker::scale::Policy {
                min: fleet.min,
                max: fleet.max,
                idle_ms: fleet.idle_secs * 1000,
            },
            interval: Duration::from_millis(fleet.interval_ms),
            worker_args: vec![
                "--max-threads".into(),
                args.max_threads.to_string(),
                "--log-capture-bytes".into(),
                args.log_capture_bytes.to_string(),
                "--shutdown-grace-secs".into(),
                args.shutdown_grace_secs.to_string(),
                "--host-call-timeout-ms".into(),
                args.host_call_timeout_ms.to_string(),
            ],
            grace_secs: args.shutdown_grace_secs,
            metrics_addr: config.metrics_addr,
        };
        let code = runtime.block_on(fleet::run(config));
        runtime.shutdown_timeout(Duration::from_millis(500));
        telemetry.shutdown();
        return code;
    }
    if !args.no_supervise {
        let code = runtime.block_on(supervisor::supervise(args.shutdown_grace_secs));
        runtime.shutdown_timeout(Duration::from_millis(500));
        telemetry.shutdown();
        return code;
    }
    let result = runtime.block_on(async move {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal::wait_for_signal().await;
            let _ = stop.send(true);
        });
        squall_worker::run(config, shutdown).await
    });
    // A call thread or a blocking task still waiting for the broker must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    telemetry.shutdown();
    match result {
        Ok(squall_worker::Exit::Stopped) => std::process::ExitCode::SUCCESS,
        Ok(squall_worker::Exit::Recycle) => {
            std::process::ExitCode::from(squall_worker::EXIT_RECYCLE)
        }
        Err(error) => {
            eprintln!("squall-worker: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
