//! `archy blob add|ls|get|serve`: the node's BLAKE3 blob store over iroh.
//!
//! `get` shows progress: the node's fetches in flight, per source (`super::progress`).

use super::{call, print_json};
use crate::home::Home;
use crate::node::api;
use crate::node::blobs::BlobGetReply;
use crate::node::rpc::{BlobAdd, BlobGc, BlobGet, BlobLs, BlobPin, SwarmAddr};
use crate::node::run::Components;
use anyhow::Result;
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BlobCmd {
    /// Add a file to this home's blob store (served to others from now on); prints its BLAKE3
    /// hash and size.
    Add {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the complete blobs in the store.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Fetch a blob by hash; every chunk is verified before it is stored.
    Get {
        #[command(flatten)]
        req: BlobGet,
        #[arg(long)]
        json: bool,
    },
    /// Garbage collection: drop what no installed app (current or previous version), no
    /// release of this node, no pin and no fetch in flight needs, from the store and from
    /// Podman; mirror announcements of what goes are withdrawn. Shows what goes and what stays
    /// and why.
    Gc {
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Keep a blob whatever else holds (a pinned blob is live for GC).
    Pin { hash: String },
    /// Undo `pin`.
    Unpin { hash: String },
    /// Serve this home's blob store until Ctrl-C / SIGTERM; prints the endpoint address others
    /// pass to `--from`. When a node runs for this home, it already serves the store: its
    /// address is printed instead.
    Serve,
}

pub async fn run(home: &Home, cmd: BlobCmd) -> Result<()> {
    match cmd {
        BlobCmd::Add { file, json } => {
            let path = std::path::absolute(&file)?;
            let b = call(home, BlobAdd { path }).await?;
            if json {
                return print_json(&b);
            }
            println!("{} {}", b.hash, b.size);
            Ok(())
        }
        BlobCmd::Ls { json } => {
            let list = call(home, BlobLs).await?;
            if json {
                return print_json(&list);
            }
            for b in list {
                println!(
                    "{} {:>12}{}",
                    b.hash,
                    b.size,
                    if b.mirrored { "  mirrored" } else { "" }
                );
            }
            Ok(())
        }
        BlobCmd::Get { mut req, json } => {
            req.out = req.out.map(std::path::absolute).transpose()?;
            let v = get(home, req, !json && std::io::stderr().is_terminal()).await?;
            if json {
                return print_json(&v);
            }
            print_get(&v);
            Ok(())
        }
        BlobCmd::Gc { dry_run, json } => {
            let r = call(home, BlobGc { dry_run }).await?;
            if json {
                return print_json(&r);
            }
            print_gc(&r);
            Ok(())
        }
        BlobCmd::Pin { hash } => pin(home, hash, true).await,
        BlobCmd::Unpin { hash } => pin(home, hash, false).await,
        BlobCmd::Serve => serve(home).await,
    }
}

async fn pin(home: &Home, hash: String, pinned: bool) -> Result<()> {
    let r = call(home, BlobPin { hash, pinned }).await?;
    let what = if r.pinned { "pinned" } else { "not pinned" };
    let change = if r.changed { "" } else { " (already)" };
    println!("{} {what}{change}", r.hash);
    Ok(())
}

fn print_gc(r: &crate::node::gc::GcReport) {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let verb = if r.dry_run { "would go" } else { "gone" };
    for b in &r.removed {
        println!("{verb}: {} ({})", b.hash, mib(b.size));
    }
    for b in &r.kept {
        let why: Vec<String> = b
            .why
            .iter()
            .map(|w| match w {
                crate::node::gc::Keep::Installed { app, version } => {
                    format!("{app} {version} installed")
                }
                crate::node::gc::Keep::Rollback { app, version } => {
                    format!("{app} {version} (rollback target)")
                }
                crate::node::gc::Keep::Own => "published by this node".into(),
                crate::node::gc::Keep::OtherTool => "tagged by another tool".into(),
                crate::node::gc::Keep::Pinned => "pinned".into(),
                crate::node::gc::Keep::InFlight => "a fetch in flight".into(),
            })
            .collect();
        println!("kept: {} ({}): {}", b.hash, mib(b.size), why.join(", "));
    }
    for i in &r.images_removed {
        println!("image {verb}: {i}");
    }
    for i in &r.images_kept {
        println!("image kept: {i}");
    }
    for m in &r.unmirrored {
        println!("mirror withdrawn: {m}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    println!("{} {verb} from the store", mib(r.freed_bytes));
}

async fn get(home: &Home, args: BlobGet, show: bool) -> Result<BlobGetReply> {
    super::progress::call_showing(home, args, show).await
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

fn print_get(v: &BlobGetReply) {
    let r = &v.report;
    println!(
        "{} {} bytes{}{}",
        v.hash,
        v.size,
        if r.already_local {
            " (already local)"
        } else {
            ""
        },
        v.out
            .as_ref()
            .map(|o| format!(" -> {}", o.display()))
            .unwrap_or_default()
    );
    for (source, bytes) in &r.bytes_per_source {
        println!("  {}: {bytes} bytes", short(source));
    }
    for (source, why) in &r.bad_sources {
        println!("  dropped {}: {why}", short(source));
    }
    if let Some(m) = &v.mirror {
        println!("  mirroring; announced as event {}", m.event_id);
    }
}

/// `archy blob serve`: the node's own start-up with only the blob store and the local API
/// (so other `archy` commands for this home work while it runs: the home's databases allow one
/// process at a time). When a node already runs for the home, its address is printed instead.
async fn serve(home: &Home) -> Result<()> {
    let lock = match api::claim(home).await? {
        api::Owner::Node(client) => {
            let v = client.call(SwarmAddr).await?;
            eprintln!("a node already runs for this home and serves its blob store at:");
            println!("{}", v.addr);
            return Ok(());
        }
        api::Owner::Free(lock) => lock,
    };
    let started = |s: &crate::node::run::Started<'_>| {
        println!("{}", s.swarm);
        eprintln!(
            "serving the blob store of {} until Ctrl-C; others fetch with: archy blob get HASH --from {}",
            s.core.home.root().display(),
            s.swarm
        );
    };
    crate::node::run::serve(home.clone(), lock, Components::BLOBS, started, || {}).await
}
