//! `faultline`: the CLI and coordinator binary. Parses flags, sets up tracing
//! (stderr; reports go to stdout) and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = faultline_coordinator::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG").unwrap_or_else(|_| {
                // The CLI prints its own progress; serve logs at info.
                match cli.command {
                    faultline_coordinator::cli::app::Command::Serve(_) => "info".into(),
                    _ => "warn".into(),
                }
            }),
        )
        .init();
    let code = faultline_coordinator::cli::main_with(cli).await;
    std::process::exit(code);
}
