//! `archy node run` and `archy config show`.

use super::{call, print_json};
use crate::home::Home;
use crate::node::rpc::Request;
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
            let v = call(home, Request::Status).await?;
            if json {
                return print_json(&v);
            }
            println!("did:   {}", v["identity"]["did"].as_str().unwrap_or(""));
            println!("nostr: {}", v["identity"]["nostr"].as_str().unwrap_or(""));
            for r in v["relays"].as_array().into_iter().flatten() {
                println!(
                    "relay {}: {} rtt {} ms{}",
                    r["url"].as_str().unwrap_or(""),
                    if r["connected"].as_bool() == Some(true) {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    r["rtt_ms"],
                    r["last_error"]
                        .as_str()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
            }
            if let Some(counts) = v["rejections"].as_object().filter(|c| !c.is_empty()) {
                let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
                println!("rejected events: {}", parts.join(", "));
            }
            Ok(())
        }
    }
}

/// `archy config show`: the effective configuration, TOML or JSON.
pub async fn config_show(home: &Home, json: bool) -> Result<()> {
    let v = call(home, Request::ConfigShow).await?;
    if json {
        return print_json(&v);
    }
    let config: crate::node::config::NodeConfig = serde_json::from_value(v)?;
    print!("{}", config.to_toml());
    Ok(())
}
