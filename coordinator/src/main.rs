//! `faultline`: the CLI and coordinator binary. Parses flags, sets up tracing
//! (stderr; reports go to stdout) and hands over to the library.

use std::io::IsTerminal;

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = faultline_coordinator::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in files and CI logs.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG").unwrap_or_else(|_| cli.log_level().into()),
        )
        .init();
    let code = faultline_coordinator::cli::main_with(cli).await;
    std::process::exit(code);
}
