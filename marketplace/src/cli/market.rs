//! `archy market sync|search|show|rejected`: the catalog of discovered releases.

use super::{call, print_json};
use crate::home::Home;
use crate::node::rpc::{MarketRejected, MarketSearch, MarketShow, MarketSync};
use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum MarketCmd {
    /// One discovery pass: fetch releases from the relays, check them, update the catalog.
    Sync {
        #[command(flatten)]
        req: MarketSync,
        #[arg(long)]
        json: bool,
    },
    /// List apps in the catalog whose id, name or summary contains TEXT.
    Search {
        #[command(flatten)]
        req: MarketSearch,
        #[arg(long)]
        json: bool,
    },
    /// One app: its latest manifest and every accepted release (APP is `id` or `did/id`).
    Show {
        #[command(flatten)]
        req: MarketShow,
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

pub async fn run(home: &Home, cmd: MarketCmd) -> Result<()> {
    match cmd {
        MarketCmd::Sync { req, json } => {
            let report = call(home, req).await?;
            if json {
                return print_json(&report);
            }
            for (url, r) in &report.relays {
                match r {
                    Ok(n) => println!("{url}: {n} events"),
                    Err(e) => println!("{url}: failed: {e}"),
                }
            }
            println!(
                "received {}, new latest {}, history {}, duplicates {}, rejected {}",
                report.received,
                report.accepted,
                report.history,
                report.duplicates,
                report.rejected
            );
            Ok(())
        }
        MarketCmd::Search { req, json } => {
            let apps = call(home, req).await?;
            if json {
                return print_json(&apps);
            }
            if apps.is_empty() {
                println!("no apps (try `archy market sync`)");
            }
            for a in apps {
                println!(
                    "{:<20} {:<10} {:<8} {:<28} {}",
                    a.app.app,
                    a.app.latest,
                    a.trust.tier.as_str(),
                    a.app.name,
                    a.app.did
                );
            }
            Ok(())
        }
        MarketCmd::Show { req, json } => {
            let v = call(home, req).await?;
            if json {
                return print_json(&v);
            }
            let a = &v.app.app;
            println!("{} {} — {}", a.app, a.latest, a.name);
            println!("  {}", a.summary);
            println!("  publisher: {} (nostr {})", a.did, a.publisher_nostr);
            println!(
                "  trust: {} (score {})",
                v.trust.tier,
                serde_json::json!(v.trust.score)
            );
            println!("  releases:");
            for r in &v.releases {
                let mark = if r.latest { " (latest)" } else { "" };
                println!("    {}{mark}  event {}", r.version, r.event_id);
            }
            for r in &v.expired {
                println!(
                    "    {} (expired)  event {}",
                    r.app
                        .as_ref()
                        .map_or("?", |(_, _, version)| version.as_str()),
                    r.event_id
                );
            }
            Ok(())
        }
        MarketCmd::Rejected { json } => {
            let v = call(home, MarketRejected).await?;
            if json {
                return print_json(&v);
            }
            for r in v {
                println!(
                    "{} {:<18} {}: {}",
                    r.event_id,
                    r.reason.to_string(),
                    r.field,
                    r.text
                );
            }
            Ok(())
        }
    }
}
