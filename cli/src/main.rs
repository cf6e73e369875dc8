//! The `squall` command: parses the command line and runs one command.

mod access;
mod api_client;
mod args;
mod artifact;
mod batch;
mod bundle;
mod commands;
mod credentials;
mod events;
mod golang;
mod java;
mod local;
mod manifest;
mod queries;
mod render;
mod up;
mod versions;

use anyhow::Context as _;
use api_client::ApiClient;
use args::{Cli, Command};
use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Up(args) => return up::up(args).await,
        Command::Init(args) => return local::init(args),
        Command::Test(args) => {
            let args = args.clone();
            return tokio::task::spawn_blocking(move || local::test(&args))
                .await
                .context("the test task failed")?;
        }
        _ => {}
    }
    let api_key = cli.api_key.clone().or_else(|| {
        std::fs::read_to_string(up::ADMIN_KEY_PATH)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
    });
    let client = ApiClient::new(&cli.url, api_key.as_deref(), cli.ca_cert.as_deref())?;
    match &cli.command {
        Command::Up(_) | Command::Init(_) | Command::Test(_) => unreachable!("handled above"),
        Command::Deploy(args) => commands::deploy(&client, cli.json, args).await,
        Command::Invoke(args) => commands::invoke(&client, cli.json, args).await,
        Command::Get(args) => commands::get(&client, cli.json, args).await,
        Command::Logs(args) => commands::logs(&client, cli.json, args).await,
        Command::Cancel(args) => commands::cancel(&client, cli.json, args).await,
        Command::Ls => commands::ls(&client, cli.json).await,
        Command::Rm(args) => commands::rm(&client, cli.json, args).await,
        Command::Invocations(args) => queries::invocations(&client, cli.json, args).await,
        Command::Stats(args) => queries::stats(&client, cli.json, args).await,
        Command::Usage(args) => queries::usage(&client, cli.json, args).await,
        Command::Schedule(command) => events::schedule(&client, cli.json, command).await,
        Command::Trigger(command) => events::trigger(&client, cli.json, command).await,
        Command::Keys(command) => access::keys(&client, cli.json, command).await,
        Command::Secrets(command) => access::secrets(&client, cli.json, command).await,
        Command::Fleet => events::fleet(&client, cli.json).await,
        Command::Dlq(command) => commands::dlq(&client, cli.json, command).await,
        Command::Versions { name } => versions::versions(&client, cli.json, name).await,
        Command::Alias(command) => versions::alias(&client, cli.json, command).await,
        Command::Rollback { name, alias } => {
            versions::rollback(&client, cli.json, name, alias).await
        }
    }
}
