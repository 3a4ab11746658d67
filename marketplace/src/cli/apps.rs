//! `archy apps …`: apps on this machine.

use super::{call, print_json};
use crate::home::Home;
use crate::node::apps::AppsRequest;
use crate::node::rpc::Request;
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum AppsCmd {
    /// Installed apps: version, intent, state, health, last error.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Install an app from the catalog (`id` or `did/id`), or from a local manifest FILE whose
    /// image is already in Podman. Returns once the app runs (or failed, with the reason).
    Install {
        app: String,
        /// Install even though the publisher is below the install tier (never when blocked).
        #[arg(long)]
        confirm: bool,
        #[arg(long)]
        json: bool,
    },
    /// Update an installed app to the latest release of the publisher it came from.
    Update {
        app: String,
        #[arg(long)]
        confirm: bool,
        #[arg(long)]
        json: bool,
    },
    Start {
        app: String,
    },
    Stop {
        app: String,
    },
    Restart {
        app: String,
    },
    /// Remove the app's container; its volumes and secrets stay unless --purge.
    Uninstall {
        app: String,
        #[arg(long)]
        purge: bool,
    },
    /// The app container's logs.
    Logs {
        app: String,
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Every Podman object of this node (containers, volumes, secrets) with the app and
    /// publisher that own it; orphans, old-scheme names and label mismatches flagged. Exits 1
    /// when something needs attention.
    Audit {
        #[arg(long)]
        json: bool,
    },
    /// One reconcile pass (or, with --watch, the loop until interrupted).
    Reconcile {
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
}

fn apps(req: AppsRequest) -> Request {
    Request::Apps(req)
}

fn show_outcome(v: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(v);
    }
    let outcome = v.get("outcome").unwrap_or(v);
    match outcome.get("result").and_then(Value::as_str) {
        Some("running") => {
            println!(
                "{} {} is running{}",
                v["app"].as_str().unwrap_or(""),
                outcome["version"].as_str().unwrap_or(""),
                v["tier"]
                    .as_str()
                    .map(|t| format!(" (publisher: {t})"))
                    .unwrap_or_default()
            );
            for (source, bytes) in v["fetch"]["bytes_per_source"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s[0].as_str()?, s[1].as_u64()?)))
            {
                println!("  image: {bytes} bytes over iroh from {source}, every chunk verified");
            }
            if let Some(from) = v["fetch"]["source"].as_str() {
                println!("  image: {from}");
            }
            if v["mirrored"] == true {
                println!("  now mirroring the image for other nodes (announced on the relays)");
            }
            for url in v["urls"].as_array().into_iter().flatten() {
                println!("  {}", url.as_str().unwrap_or(""));
            }
            Ok(())
        }
        Some("rolled-back") => {
            println!(
                "the update failed its health check and was rolled back to {}: {}",
                outcome["version"].as_str().unwrap_or("?"),
                outcome["reason"].as_str().unwrap_or("")
            );
            Err(super::Rejected.into())
        }
        Some("failed") => {
            println!(
                "the app does not run: {}",
                outcome["reason"].as_str().unwrap_or("")
            );
            Err(super::Rejected.into())
        }
        _ => print_json(v),
    }
}

fn show_status(v: &Value) -> Result<()> {
    println!(
        "{} {}: {} (intent {}){}",
        v["app"].as_str().unwrap_or(""),
        v["version"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["intent"].as_str().unwrap_or(""),
        v["last_error"]
            .as_str()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn run(home: &Home, cmd: AppsCmd) -> Result<()> {
    match cmd {
        AppsCmd::List { json } => {
            let v = call(home, apps(AppsRequest::List)).await?;
            if json {
                return print_json(&v);
            }
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no apps installed");
            }
            for a in &list {
                show_status(a)?;
            }
            Ok(())
        }
        AppsCmd::Install { app, confirm, json } => {
            let req = if Path::new(&app).is_file() {
                let text =
                    std::fs::read_to_string(&app).with_context(|| format!("reading {app}"))?;
                let manifest =
                    crate::manifest::parse(&text).map_err(|e| anyhow::anyhow!("{app}: {e}"))?;
                AppsRequest::InstallManifest {
                    manifest: Value::Object(manifest),
                }
            } else {
                AppsRequest::Install { app, confirm }
            };
            show_outcome(&call(home, apps(req)).await?, json)
        }
        AppsCmd::Update { app, confirm, json } => {
            let v = call(home, apps(AppsRequest::Update { app, confirm })).await?;
            if v["result"] == "up to date" && !json {
                println!("{} is up to date", v["app"].as_str().unwrap_or(""));
                return Ok(());
            }
            show_outcome(&v, json)
        }
        AppsCmd::Start { app } => show_status(&call(home, apps(AppsRequest::Start { app })).await?),
        AppsCmd::Stop { app } => show_status(&call(home, apps(AppsRequest::Stop { app })).await?),
        AppsCmd::Restart { app } => {
            show_status(&call(home, apps(AppsRequest::Restart { app })).await?)
        }
        AppsCmd::Uninstall { app, purge } => {
            call(
                home,
                apps(AppsRequest::Uninstall {
                    app: app.clone(),
                    purge,
                }),
            )
            .await?;
            if purge {
                println!("{app} uninstalled; its volumes and secrets were removed");
            } else {
                println!(
                    "{app} uninstalled; its volumes and secrets are kept (--purge removes them)"
                );
            }
            Ok(())
        }
        AppsCmd::Logs { app, tail } => {
            let v = call(home, apps(AppsRequest::Logs { app, tail })).await?;
            print!("{}", v.as_str().unwrap_or(""));
            Ok(())
        }
        AppsCmd::Audit { json } => {
            let v = call(home, apps(AppsRequest::Audit)).await?;
            if json {
                print_json(&v)?;
            }
            let report: archy_orchestrator::AuditReport =
                serde_json::from_value(v).context("reading the audit")?;
            if !json {
                if report.objects.is_empty() {
                    println!("no Podman objects of Archy's");
                }
                for e in &report.objects {
                    println!(
                        "{:<9} {:<40} {:<10} {}{}",
                        e.kind.as_str(),
                        e.name,
                        serde_json::to_value(e.status)?.as_str().unwrap_or(""),
                        e.owner
                            .publisher
                            .as_deref()
                            .map(|p| format!("[{p}] "))
                            .unwrap_or_default(),
                        e.note
                    );
                }
            }
            if report.problems().next().is_some() {
                return Err(super::Rejected.into());
            }
            Ok(())
        }
        AppsCmd::Reconcile { watch, json } => loop {
            let v = call(home, apps(AppsRequest::Reconcile)).await?;
            if json {
                print_json(&v)?;
            } else {
                for o in v["outcomes"].as_array().into_iter().flatten() {
                    println!(
                        "{} {}: {} {}",
                        o["app"].as_str().unwrap_or(""),
                        o["action"].as_str().unwrap_or(""),
                        o["status"].as_str().unwrap_or(""),
                        o["message"].as_str().unwrap_or("")
                    );
                }
            }
            if !watch {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            }
        },
    }
}
