//! The `shoal` binary: parse flags, set up logging, run the node (or a client command).

use std::process::ExitCode;

use clap::Parser;
use shoal_node::{cli, init_tracing, run, shutdown_signal, Cli, CliCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shoal: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let args = match cli.command {
        Some(CliCommand::Serve(args)) => *args,
        None => cli.serve,
        Some(CliCommand::Status { node }) => return print(runtime.block_on(cli::status(&node))),
        Some(CliCommand::Health { node, timeout_ms }) => {
            let node = node.unwrap_or_else(cli::local_node_url);
            let timeout = std::time::Duration::from_millis(timeout_ms);
            return print(runtime.block_on(cli::health(&node, timeout)));
        }
        Some(CliCommand::ResetReplica { data_dir }) => return print(cli::reset_replica(&data_dir)),
        Some(CliCommand::RemoveNode { node_id, node, admin_token }) => {
            return print(runtime.block_on(cli::remove_node(
                &node,
                node_id,
                admin_token.as_deref(),
            )))
        }
    };
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shoal: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format, &config.log);
    match runtime.block_on(async { run(config, shutdown_signal()).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("shoal: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(outcome: anyhow::Result<String>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("shoal: {error:#}");
            ExitCode::FAILURE
        }
    }
}
