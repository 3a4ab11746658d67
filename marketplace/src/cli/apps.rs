//! `archy apps …`: apps on this machine.

use super::{call, print_json};
use crate::home::Home;
use crate::node::apps::{
    Audit, Fetch, Install, InstallManifest, List, Logs, Reconcile, Restart, Start, Stop, Uninstall,
    Update,
};
use crate::node::install::{ImageSource, InstallReport, ServiceImage, UpdateReply};
use anyhow::{Context, Result};
use archy_orchestrator::{AppStatus, InstallOutcome};
use clap::Subcommand;
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
        #[command(flatten)]
        req: Install,
        #[arg(long)]
        json: bool,
    },
    /// Update an installed app to the latest release of the publisher it came from.
    Update {
        #[command(flatten)]
        req: Update,
        #[arg(long)]
        json: bool,
    },
    /// Fetch the latest release of a catalog app's image into this node's store, every check
    /// of an install done, without installing it: a later `install` or `update` to that
    /// release moves nothing (fetch ahead of a maintenance window, or seed it for others).
    Fetch {
        #[command(flatten)]
        req: Fetch,
        #[arg(long)]
        json: bool,
    },
    Start(Start),
    Stop(Stop),
    Restart(Restart),
    /// Remove the app's container; its volumes and secrets stay unless --purge.
    Uninstall(Uninstall),
    /// The app container's logs.
    Logs(Logs),
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

/// The serde name of a unit enum value (`running`, `stopped`, …), as `--json` writes it.
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Where an image came from, and whether this node now mirrors it.
fn show_fetch(fetch: &ImageSource, mirrored: bool) {
    match fetch {
        ImageSource::Fetched(f) => {
            for (source, bytes) in &f.bytes_per_source {
                println!("  image: {bytes} bytes over iroh from {source}, every chunk verified");
            }
        }
        ImageSource::AlreadyLocal { source } => println!("  image: {source}"),
        ImageSource::Layered(l) => {
            println!(
                "  image: {} of {} parts already held ({} bytes); {} bytes moved over iroh, \
                 every chunk verified, every sha256 checked",
                l.held, l.children, l.held_bytes, l.transferred
            );
            for (source, bytes) in &l.bytes_per_source {
                println!("    {bytes} bytes from {source}");
            }
        }
    }
    if mirrored {
        println!("  now mirroring the image for other nodes (announced on the relays)");
    }
}

/// The image of one container, or each service's of a stack.
fn show_fetches(fetch: &ImageSource, services: &[ServiceImage], mirrored: bool) {
    if services.is_empty() {
        return show_fetch(fetch, mirrored);
    }
    for s in services {
        println!("  service {}:", s.service);
        show_fetch(&s.fetch, false);
    }
    if mirrored {
        println!("  now mirroring the images for other nodes (announced on the relays)");
    }
}

/// The human form of an install's answer; a rollback or a failure exits 1.
fn show_outcome(app: &str, outcome: &InstallOutcome, report: Option<&InstallReport>) -> Result<()> {
    match outcome {
        InstallOutcome::Running { version, .. } => {
            println!(
                "{app} {version} is running{}",
                report
                    .map(|r| format!(" (publisher: {})", r.tier))
                    .unwrap_or_default()
            );
            let Some(r) = report else { return Ok(()) };
            if r.confirmed {
                println!(
                    "  its publisher is below this node's install tier: accepted by --confirm"
                );
            }
            for d in &r.dependencies {
                println!(
                    "  installed its dependency {} {} first (publisher: {}{})",
                    d.app,
                    d.version,
                    d.tier,
                    if d.confirmed {
                        ", below the install tier: accepted by --confirm"
                    } else {
                        ""
                    }
                );
            }
            show_fetches(&r.fetch, &r.services, r.mirrored);
            for url in &r.urls {
                println!("  {url}");
            }
            Ok(())
        }
        InstallOutcome::RolledBack { version, reason } => {
            println!(
                "the update failed its health check and was rolled back to {version}: {reason}"
            );
            Err(super::Rejected.into())
        }
        InstallOutcome::Failed { reason } => {
            println!("the app does not run: {reason}");
            Err(super::Rejected.into())
        }
    }
}

fn show_status(v: &AppStatus) -> Result<()> {
    println!(
        "{} {}: {} (intent {}){}",
        v.app,
        v.version,
        word(&v.state),
        word(&v.intent),
        v.last_error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    );
    for s in &v.services {
        println!("  service {}: {}", s.service, word(&s.state));
    }
    Ok(())
}

pub async fn run(home: &Home, cmd: AppsCmd) -> Result<()> {
    match cmd {
        AppsCmd::List { json } => {
            let list = call(home, List).await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no apps installed");
            }
            for a in &list {
                show_status(&a.status)?;
                if let Some(of) = &a.dependency_of {
                    println!("  installed as a dependency of {of}");
                }
            }
            Ok(())
        }
        AppsCmd::Install { req, json } => {
            let app = &req.app;
            if Path::new(app).is_file() {
                let text =
                    std::fs::read_to_string(app).with_context(|| format!("reading {app}"))?;
                let manifest =
                    crate::manifest::parse(&text).map_err(|e| anyhow::anyhow!("{app}: {e}"))?;
                let id = manifest
                    .get("id")
                    .and_then(|v| v.as_str())
                    .unwrap_or(app.as_str())
                    .to_owned();
                let outcome = call(home, InstallManifest { manifest }).await?;
                if json {
                    return print_json(&outcome);
                }
                return show_outcome(&id, &outcome, None);
            }
            let report = super::progress::call_showing(home, req, !json).await?;
            if json {
                return print_json(&report);
            }
            show_outcome(&report.app, &report.outcome, Some(&report))
        }
        AppsCmd::Update { req, json } => {
            let reply = super::progress::call_showing(home, req, !json).await?;
            if json {
                return print_json(&reply);
            }
            match reply {
                UpdateReply::UpToDate { app, .. } => {
                    println!("{app} is up to date");
                    Ok(())
                }
                UpdateReply::Installed(r) => show_outcome(&r.app, &r.outcome, Some(&r)),
            }
        }
        AppsCmd::Fetch { req, json } => {
            let r = super::progress::call_showing(home, req, !json).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "{} {} fetched and verified, not installed (publisher: {})",
                r.app, r.version, r.tier
            );
            show_fetches(&r.fetch, &r.services, r.mirrored);
            Ok(())
        }
        AppsCmd::Start(req) => show_status(&call(home, req).await?),
        AppsCmd::Stop(req) => show_status(&call(home, req).await?),
        AppsCmd::Restart(req) => show_status(&call(home, req).await?),
        AppsCmd::Uninstall(req) => {
            let (app, purge) = (req.app.clone(), req.purge);
            call(home, req).await?;
            if purge {
                println!("{app} uninstalled; its volumes and secrets were removed");
            } else {
                println!(
                    "{app} uninstalled; its volumes and secrets are kept (--purge removes them)"
                );
            }
            Ok(())
        }
        AppsCmd::Logs(req) => {
            print!("{}", call(home, req).await?);
            Ok(())
        }
        AppsCmd::Audit { json } => {
            let report = call(home, Audit).await?;
            if json {
                print_json(&report)?;
            } else {
                if report.objects.is_empty() {
                    println!("no Podman objects of Archy's");
                }
                for e in &report.objects {
                    println!(
                        "{:<9} {:<40} {:<10} {}{}",
                        e.kind.as_str(),
                        e.name,
                        word(&e.status),
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
            let report = call(home, Reconcile).await?;
            if json {
                print_json(&report)?;
            } else {
                for o in &report.outcomes {
                    println!("{} {}: {} {}", o.app, o.action, word(&o.status), o.message);
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
