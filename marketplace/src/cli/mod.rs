//! The `archy` command line (clap derive). Exit status: 0 success, 1 rejected input or failure,
//! 2 usage error (clap's own).

mod app;
mod id;

use crate::home::Home;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "archy",
    version,
    about = "Archy: a decentralized app-marketplace node"
)]
pub struct Cli {
    /// The node's home directory (default: $ARCHY_HOME, else ~/.local/share/archy).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or show this home's identity (did:key + Nostr key).
    #[command(subcommand)]
    Id(id::IdCmd),
    /// Validate, sign, verify and publish app manifests.
    #[command(subcommand)]
    App(app::AppCmd),
}

/// A failure that should exit with status 1 after its message was printed.
#[derive(Debug)]
pub struct Rejected;

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rejected")
    }
}
impl std::error::Error for Rejected {}

/// Runs the CLI and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARCHY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = (|| {
        let home = Home::resolve(cli.home)?;
        match cli.command {
            Command::Id(cmd) => id::run(&home, cmd),
            Command::App(cmd) => app::run(&home, cmd),
        }
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Rejected>() => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
