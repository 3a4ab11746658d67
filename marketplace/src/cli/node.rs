//! `archy node run` and `archy config show`.

use super::{call, print_json};
use crate::home::Home;
use crate::node::rpc::{ConfigShow, Status};
use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Run the node in the foreground until SIGTERM/SIGINT.
    Run,
    /// Identity, relays and their health, rejections counted per reason.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(home: &Home, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Run => crate::node::run::run(home.clone()).await,
        NodeCmd::Status { json } => {
            let v = call(home, Status).await?;
            if json {
                return print_json(&v);
            }
            println!("did:   {}", v.identity.did);
            println!("nostr: {}", v.identity.nostr);
            if let Some(s) = &v.swarm {
                println!("swarm: {s}");
            }
            if let Some(r) = &v.registry {
                println!("registry: {r} (OCI, pull-only, plain HTTP on loopback)");
            }
            for r in &v.relays {
                println!(
                    "relay {}: {} rtt {} ms{}",
                    r.url,
                    if r.connected {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    r.rtt_ms.map_or("-".to_owned(), |ms| ms.to_string()),
                    r.last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
            }
            if !v.rejections.is_empty() {
                let parts: Vec<String> = v
                    .rejections
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                println!("rejected events: {}", parts.join(", "));
            }
            Ok(())
        }
    }
}

/// `archy config show`: the effective configuration, TOML or JSON.
pub async fn config_show(home: &Home, json: bool) -> Result<()> {
    let config = call(home, ConfigShow).await?;
    if json {
        return print_json(&config);
    }
    print!("{}", config.to_toml());
    Ok(())
}
