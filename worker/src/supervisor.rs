//! The simplest supervisor: runs the worker as a child process and restarts it when it crashes
//! (a function segfaulted or aborted) or recycles itself (a function hung past its timeout).

use squall_broker::backoff::Doubling;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Longest pause between restarts of a worker that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long is healthy again: the backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// How a supervisor of one function's process logs that process in: the broker it answers
/// authorization requests on, and the issuer of the function's credentials.
pub struct FunctionLogin {
    pub function: String,
    pub issuer: squall_broker::callout::Issuer,
    pub nats_url: String,
    pub nats_auth: squall_broker::connect::NatsAuth,
}

/// Runs `squall-worker --no-supervise` with this process's arguments until a stop signal. With
/// `login`, the child serves one function and logs in with that function's credentials, which
/// this supervisor mints and vouches for (the broker's auth callout); never its own.
pub async fn supervise(grace_secs: u64, login: Option<FunctionLogin>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("squall-worker: cannot find my own executable to supervise: {error}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _callout = match &login {
        Some(login) => match answer_callout(login).await {
            Ok(handle) => Some(handle),
            Err(error) => {
                eprintln!("squall-worker: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut pauses = Doubling::new(Duration::from_millis(100), MAX_BACKOFF);
    let signal = crate::signal::wait_for_signal();
    tokio::pin!(signal);
    loop {
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&exe);
        command.args(&args).arg("--no-supervise").kill_on_drop(true);
        if let Some(login) = &login {
            if let Err(error) = squall_worker::credentials::hand_login(
                &mut command,
                Some(&login.issuer),
                &login.function,
                &login.nats_auth,
            ) {
                eprintln!("squall-worker: cannot mint the function's credentials: {error}");
                return ExitCode::FAILURE;
            }
        }
        squall_worker::process::chain_jvm_signals(&mut command);
        squall_worker::process::die_with_parent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                eprintln!("squall-worker: cannot start the worker process: {error}");
                return ExitCode::FAILURE;
            }
        };
        let pid = child.id().unwrap_or_default();
        tracing::info!(message = "worker process started", pid);
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut signal => {
                stop_child(&mut child, pid, grace_secs).await;
                return ExitCode::SUCCESS;
            }
        };
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                eprintln!("squall-worker: lost the worker process: {error}");
                return ExitCode::FAILURE;
            }
        };
        if started.elapsed() > HEALTHY_AFTER {
            pauses.reset();
        }
        let pause = match status.code() {
            Some(0) => return ExitCode::SUCCESS,
            Some(code) if code == i32::from(squall_worker::EXIT_RECYCLE) => {
                tracing::info!(
                    message = "worker recycled itself; starting a fresh one",
                    pid
                );
                continue;
            }
            _ => {
                let pause = pauses.fail();
                tracing::warn!(message = "worker process died; restarting it", pid, status = %status,
                    restart_in_ms = pause.as_millis() as u64);
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = &mut signal => return ExitCode::SUCCESS,
        }
    }
}

/// Asks the child to stop gracefully, and kills it if it outlives its grace period.
async fn stop_child(child: &mut tokio::process::Child, pid: u32, grace_secs: u64) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let grace = Duration::from_secs(grace_secs + 5);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Connects with the supervisor's own login and answers the broker's authorization requests
/// for its child's logins.
async fn answer_callout(login: &FunctionLogin) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = squall_broker::connect::connect(
        &login.nats_auth,
        "squall-worker-supervisor",
        &login.nats_url,
    )
    .await?;
    let handle =
        squall_broker::callout::serve(client, std::sync::Arc::new(login.issuer.clone())).await?;
    Ok(handle)
}
