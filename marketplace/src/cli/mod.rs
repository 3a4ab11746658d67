//! The `archy` command line (clap derive). Exit status: 0 success, 1 rejected input or failure,
//! 2 usage error (clap's own).

mod app;
mod apps;
mod blob;
mod id;
mod market;
mod node;
mod progress;
mod trust;

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
    /// Discover, search and inspect releases.
    #[command(subcommand)]
    Market(market::MarketCmd),
    /// Apps on this machine: install, update, start, stop, uninstall, logs.
    #[command(subcommand)]
    Apps(apps::AppsCmd),
    /// The BLAKE3 blob store: add, list, fetch (verified), serve over iroh.
    #[command(subcommand)]
    Blob(blob::BlobCmd),
    /// Publisher trust: scores, tiers and why; anchors and blocks.
    #[command(subcommand)]
    Trust(trust::TrustCmd),
    /// Run the node.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Show the node's configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print every setting with its effective value.
    Show {
        #[arg(long)]
        json: bool,
    },
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
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let home = Home::resolve(cli.home)?;
        match cli.command {
            Command::Id(cmd) => id::run(&home, cmd),
            Command::App(cmd) => app::run(&home, cmd).await,
            Command::Market(cmd) => market::run(&home, cmd).await,
            Command::Node(cmd) => node::run(&home, cmd).await,
            Command::Trust(cmd) => trust::run(&home, cmd).await,
            Command::Blob(cmd) => blob::run(&home, cmd).await,
            Command::Apps(cmd) => apps::run(&home, cmd).await,
            Command::Config(ConfigCmd::Show { json }) => node::config_show(&home, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Rejected>() => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs an operation on this home's running node, or in-process when none runs; either way
/// the reply is the operation's typed reply.
pub(crate) async fn call<O: crate::node::rpc::Operation>(
    home: &Home,
    op: O,
) -> anyhow::Result<O::Reply> {
    progress::call_showing(home, op, false).await
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap checks a command tree only when it is used: check all of it, every subcommand.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
