//! The `shoal` binary: parse flags, set up logging, run the node.

use std::process::ExitCode;

use clap::Parser;
use shoal_node::{init_tracing, run, shutdown_signal, Cli, CliCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(CliCommand::Serve(args)) => args,
        None => cli.serve,
    };
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shoal: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format, &config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shoal: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("shoal: {error:#}");
            ExitCode::FAILURE
        }
    }
}
