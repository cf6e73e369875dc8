//! The `squall-worker` binary: parses configuration and runs the worker library.

#![deny(clippy::undocumented_unsafe_blocks)]

// glibc's allocator under its `__libc_` names: the hook exists where those do.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod alloc_hook;
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
    /// The function this worker process serves. Repeatable only with `--shared`; `fleet`
    /// serves these (all by default), each in processes of its own.
    #[arg(long = "function", global = true)]
    functions: Vec<String>,
    /// Serve several functions in this one process (every function, without `--function`).
    /// Functions sharing a process can read each other's memory, secrets and the worker's
    /// broker credentials: only for functions that trust each other. Without it a worker
    /// process serves exactly one function, and `fleet` runs a process per function.
    #[arg(long)]
    shared: bool,
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
    /// Sandbox of a worker that serves exactly one function (no_new_privs, landlock, seccomp):
    /// `required` refuses to start on a kernel that lacks a feature, `auto` uses what the
    /// kernel offers and reports the rest, `off` runs without. The fleet passes it down.
    #[arg(long, global = true, value_enum, default_value_t = squall_worker::sandbox::Mode::Auto)]
    sandbox: squall_worker::sandbox::Mode,
    /// The folder that holds the language runtimes' libraries (`libsquall_runtime_*.so`);
    /// by default the folder of this executable.
    #[arg(long, global = true, env = "SQUALL_RUNTIMES")]
    runtimes: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Run an autoscaling fleet of worker processes on this host, sized from the backlog of the
    /// functions it serves; several hosts' fleets share `--max` through the broker.
    Fleet(FleetArgs),
    /// Validate an unpacked function bundle without running its code (the dispatcher runs
    /// this at deploy): prints "FILE:LINE: problem" and exits 1 when it is not valid.
    CheckBundle {
        /// The bundle's folder (with squall-bundle.json).
        dir: PathBuf,
    },
    /// Run an unpacked function bundle's own tests in its runtime (`squall test`): prints the
    /// report; exits 0 when all passed, 1 when one failed, 2 when they could not run.
    TestBundle {
        /// The bundle's folder (with squall-bundle.json).
        dir: PathBuf,
    },
}

/// Runs `check-bundle` or `test-bundle`: loads the bundle's runtime library and calls it.
fn run_bundle_tool(
    runtimes: &std::path::Path,
    tool: squall_worker::loader::RuntimeTool,
    dir: &std::path::Path,
) -> std::process::ExitCode {
    let manifest = std::fs::read(dir.join(squall_bundle::MANIFEST_FILE))
        .map_err(|_| squall_bundle::BundleError::NoManifest)
        .and_then(|text| squall_bundle::parse_manifest(&text))
        .and_then(|manifest| manifest.validate());
    let runtime = match manifest {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("{error}");
            return std::process::ExitCode::from(1);
        }
    };
    let library = match squall_worker::artifacts::runtime_library(runtimes, runtime) {
        Ok(library) => library,
        Err(missing) => {
            eprintln!("squall-worker: {missing}");
            return std::process::ExitCode::from(2);
        }
    };
    match squall_worker::loader::run_runtime_tool(&library, tool, dir) {
        Ok((status, report)) => {
            if !report.is_empty() {
                println!("{}", report.trim_end());
            }
            match status {
                0 => std::process::ExitCode::SUCCESS,
                1 => std::process::ExitCode::from(1),
                _ => std::process::ExitCode::from(2),
            }
        }
        Err(error) => {
            eprintln!("squall-worker: cannot load the {runtime} runtime: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

#[derive(clap::Args, Debug)]
struct FleetArgs {
    /// Worker processes this host keeps for each function served even when it has no work,
    /// below the function's own `min_instances` (0, the default, scales idle functions to zero).
    #[arg(long, default_value_t = 0)]
    min: u32,
    /// Worker processes the whole fleet may run, all functions together, shared with the other
    /// hosts' fleets and fairly among busy functions.
    #[arg(long, default_value_t = 16)]
    max: u32,
    /// Seconds a function's work must stay below its running processes before its pool scales
    /// down.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Milliseconds between two readings of the backlog.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtimes_dir = args
        .runtimes
        .clone()
        .unwrap_or_else(squall_worker::artifacts::default_runtimes_dir);
    match &args.command {
        Some(Sub::CheckBundle { dir }) => {
            return run_bundle_tool(
                &runtimes_dir,
                squall_worker::loader::RuntimeTool::Check,
                dir,
            )
        }
        Some(Sub::TestBundle { dir }) => {
            return run_bundle_tool(&runtimes_dir, squall_worker::loader::RuntimeTool::Test, dir)
        }
        _ => {}
    }
    if let Err(error) = squall_broker::connect::servers(&args.nats_url) {
        eprintln!("squall-worker: {error}");
        return std::process::ExitCode::from(64);
    }
    if args.max_threads == 0 {
        eprintln!("squall-worker: --max-threads must be at least 1");
        return std::process::ExitCode::from(64);
    }
    if args.command.is_none() && !args.shared && args.functions.len() != 1 {
        eprintln!(
            "squall-worker: a worker process serves one function: name it with --function NAME, \
             or run `squall-worker fleet`, which runs a process per function; --shared serves \
             several functions in one process (only for functions that trust each other)"
        );
        return std::process::ExitCode::from(64);
    }
    if let Some(Sub::Fleet(fleet)) = &args.command {
        if args.shared {
            eprintln!(
                "squall-worker fleet: --shared is for a single worker process; the fleet runs \
                 a process per function"
            );
            return std::process::ExitCode::from(64);
        }
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
    if let Err(error) =
        squall_worker::sandbox::check_required(args.sandbox, &squall_worker::sandbox::probe())
    {
        eprintln!("squall-worker: {error}");
        return std::process::ExitCode::from(64);
    }
    // A process that serves exactly one function is confined: limits and sandbox, and a
    // private temporary folder, set before any thread starts.
    let confine =
        (args.command.is_none() && args.no_supervise && args.functions.len() == 1).then(|| {
            let tmp_dir = args
                .data_dir
                .join("tmp")
                .join(std::process::id().to_string());
            if let Err(error) = std::fs::create_dir_all(&tmp_dir) {
                eprintln!(
                    "squall-worker: cannot create the temporary folder {}: {error}",
                    tmp_dir.display()
                );
            }
            std::env::set_var("TMPDIR", &tmp_dir);
            squall_worker::confine::ConfineConfig {
                sandbox: args.sandbox,
                max_threads: args.max_threads,
                tmp_dir,
            }
        });
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
        runtimes_dir: runtimes_dir.clone(),
        functions: args.functions,
        log_capture_bytes: args.log_capture_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        metrics_addr: args.metrics_addr,
        metrics_report: args.metrics_report,
        host_call_timeout: Duration::from_millis(args.host_call_timeout_ms.max(1)),
        confine: confine.clone(),
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
                "--sandbox".into(),
                args.sandbox.as_str().into(),
                "--runtimes".into(),
                runtimes_dir.display().to_string(),
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
        // A supervisor of one function's process hands it that function's credentials when it
        // holds the issuer's seed (the broker hands function logins to the auth callout).
        let login = match (config.functions.as_slice(), args.shared) {
            ([function], false) => match squall_broker::callout::Issuer::from_env() {
                Ok(issuer) => issuer.map(|issuer| supervisor::FunctionLogin {
                    function: function.clone(),
                    issuer,
                    nats_url: config.nats_url.clone(),
                    nats_auth: config.nats_auth.clone(),
                }),
                Err(error) => {
                    eprintln!("squall-worker: cannot read the callout issuer's seed: {error}");
                    return std::process::ExitCode::from(64);
                }
            },
            _ => None,
        };
        let code = runtime.block_on(supervisor::supervise(args.shutdown_grace_secs, login));
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
    if let Some(confine) = &confine {
        let _ = std::fs::remove_dir_all(&confine.tmp_dir);
    }
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
