//! The `squall-worker` binary: parses configuration and runs the worker library.

mod supervisor;

use clap::Parser;
use squall_broker::env;
use std::path::PathBuf;
use std::time::Duration;

/// Pulls jobs from JetStream and runs deployed functions.
#[derive(Parser, Debug)]
#[command(name = "squall-worker", version)]
struct Args {
    /// NATS server URL.
    #[arg(long, env = env::ENV_NATS_URL, default_value = env::DEFAULT_NATS_URL)]
    nats_url: String,
    /// Folder for local state; the artifact cache lives in `<data-dir>/artifacts`.
    #[arg(long, env = env::ENV_DATA_DIR, default_value = ".squall/worker")]
    data_dir: PathBuf,
    /// Serve only these functions (repeatable); all by default.
    #[arg(long = "function")]
    functions: Vec<String>,
    /// Most threads running function code at once.
    #[arg(long, default_value_t = 256)]
    max_threads: usize,
    /// Bytes of function log lines kept per invocation.
    #[arg(long, default_value_t = 16 * 1024)]
    log_capture_bytes: usize,
    /// Seconds to wait for in-flight jobs at shutdown.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (one port per worker; off by default).
    #[arg(long, env = env::ENV_METRICS_ADDR)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Run the worker in this process instead of under a supervisor that restarts it when it
    /// crashes or recycles itself (for orchestrators that restart processes themselves).
    #[arg(long)]
    no_supervise: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.max_threads == 0 {
        eprintln!("squall-worker: --max-threads must be at least 1");
        return std::process::ExitCode::from(64);
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
        cache_dir: args.data_dir.join("artifacts"),
        functions: args.functions,
        log_capture_bytes: args.log_capture_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        metrics_addr: args.metrics_addr,
    };
    if !args.no_supervise {
        let code = runtime.block_on(supervisor::supervise(args.shutdown_grace_secs));
        telemetry.shutdown();
        return code;
    }
    let result = runtime.block_on(async move {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        squall_worker::run(config, shutdown).await
    });
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

pub(crate) async fn wait_for_signal() {
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
