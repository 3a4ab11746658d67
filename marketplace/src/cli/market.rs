//! `archy market sync|search|show|rejected`: the catalog of discovered releases.

use super::{call, print_json};
use crate::home::Home;
use crate::node::rpc::Request;
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum MarketCmd {
    /// One discovery pass: fetch releases from the relays, check them, update the catalog.
    Sync {
        /// Relays to read (default: the node's own relays).
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List apps in the catalog whose id, name or summary contains TEXT.
    Search {
        text: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One app: its latest manifest and every accepted release (APP is `id` or `did/id`).
    Show {
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Rejected events with their reason code and text: all evidence (equivocations, expiries)
    /// and the newest 20 000 others (`archy node status` counts every rejection).
    Rejected {
        #[arg(long)]
        json: bool,
    },
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub async fn run(home: &Home, cmd: MarketCmd) -> Result<()> {
    match cmd {
        MarketCmd::Sync { relays, json } => {
            let report = call(home, Request::MarketSync { relays }).await?;
            if json {
                return print_json(&report);
            }
            for r in report["relays"].as_array().into_iter().flatten() {
                match (&r[1]["Ok"], &r[1]["Err"]) {
                    (Value::Number(n), _) => {
                        println!("{}: {n} events", r[0].as_str().unwrap_or(""))
                    }
                    (_, Value::String(e)) => {
                        println!("{}: failed: {e}", r[0].as_str().unwrap_or(""))
                    }
                    _ => {}
                }
            }
            println!(
                "received {}, new latest {}, history {}, duplicates {}, rejected {}",
                report["received"],
                report["accepted"],
                report["history"],
                report["duplicates"],
                report["rejected"]
            );
            Ok(())
        }
        MarketCmd::Search { text, json } => {
            let apps = call(
                home,
                Request::MarketSearch {
                    text: text.unwrap_or_default(),
                },
            )
            .await?;
            if json {
                return print_json(&apps);
            }
            let list = apps.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no apps (try `archy market sync`)");
            }
            for a in list {
                let tier = a.get("tier").and_then(Value::as_str).unwrap_or("-");
                println!(
                    "{:<20} {:<10} {:<8} {:<28} {}",
                    s(&a, "app"),
                    s(&a, "latest"),
                    tier,
                    s(&a, "name"),
                    s(&a, "did")
                );
            }
            Ok(())
        }
        MarketCmd::Show { app, json } => {
            let v = call(home, Request::MarketShow { app }).await?;
            if json {
                return print_json(&v);
            }
            let a = &v["app"];
            println!("{} {} — {}", s(a, "app"), s(a, "latest"), s(a, "name"));
            println!("  {}", s(a, "summary"));
            println!(
                "  publisher: {} (nostr {})",
                s(a, "did"),
                s(a, "publisher_nostr")
            );
            if let Some(t) = v.get("trust") {
                println!("  trust: {} (score {})", s(t, "tier"), t["score"]);
            }
            println!("  releases:");
            for r in v["releases"].as_array().into_iter().flatten() {
                let mark = if r["latest"].as_bool() == Some(true) {
                    " (latest)"
                } else {
                    ""
                };
                println!("    {}{mark}  event {}", s(r, "version"), s(r, "event_id"));
            }
            for r in v["expired"].as_array().into_iter().flatten() {
                println!(
                    "    {} (expired)  event {}",
                    r["app"][2].as_str().unwrap_or("?"),
                    s(r, "event_id")
                );
            }
            Ok(())
        }
        MarketCmd::Rejected { json } => {
            let v = call(home, Request::MarketRejected).await?;
            if json {
                return print_json(&v);
            }
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{} {:<18} {}: {}",
                    s(r, "event_id"),
                    s(r, "reason"),
                    s(r, "field"),
                    s(r, "text")
                );
            }
            Ok(())
        }
    }
}
