//! `archy blob add|ls|get|serve`: the node's BLAKE3 blob store over iroh.
//!
//! `get` shows progress: in-process from the fetch's own events; through a running node by
//! polling how many verified bytes the node holds (the local API answers once per request).

use super::{call, print_json};
use crate::home::Home;
use crate::node::api;
use crate::node::blobs::{self, BlobGetReply};
use crate::node::config::NodeConfig;
use crate::node::rpc::{BlobAdd, BlobGc, BlobGet, BlobHaveRequest, BlobLs, BlobPin, SwarmAddr};
use crate::node::run::Components;
use crate::node::NodeCore;
use anyhow::Result;
use archy_swarm::FetchEvent;
use clap::Subcommand;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

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

/// A short-lived core for this process (no node runs for the home).
fn local_core(home: &Home) -> Result<NodeCore> {
    let config = NodeConfig::load(home)?;
    let relays = config.relays.urls.clone();
    NodeCore::open(home.clone(), config, relays)
}

async fn get(home: &Home, args: BlobGet, show: bool) -> Result<BlobGetReply> {
    let owner = api::claim(home).await?;
    if let api::Owner::Node(client) = &owner {
        let have = BlobHaveRequest {
            hash: args.hash.clone(),
        };
        let size = args.size;
        let fetch = client.call(args);
        tokio::pin!(fetch);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                r = &mut fetch => break r,
                _ = tick.tick(), if show => {
                    if let Ok(h) = client.call(have.clone()).await {
                        let rate = h.have as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        draw(h.have, size, rate, "the node");
                    }
                }
            }
        };
        if show {
            eprintln!();
        }
        return result;
    }
    let core = local_core(home)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FetchEvent>(64);
    // Drained even when nothing is shown: a full channel would slow the transfer.
    let printer = tokio::spawn(async move {
        let mut drew = false;
        while let Some(ev) = rx.recv().await {
            if !show {
                continue;
            }
            match ev {
                FetchEvent::Progress(p) => {
                    let who = format!("{} ({:?})", short(&p.source), p.role).to_lowercase();
                    draw(p.have, p.size, p.rate_bytes_per_sec, &who);
                    drew = true;
                }
                FetchEvent::SourceFailed { source, reason, .. } => {
                    eprintln!("\n{}: {reason}", short(&source));
                }
                FetchEvent::Busy {
                    source,
                    retry_in_ms,
                    ..
                } => {
                    eprintln!(
                        "\n{}: busy, asking again in {:.1} s",
                        short(&source),
                        retry_in_ms as f64 / 1000.0
                    );
                }
                FetchEvent::Trying { .. } => {}
            }
        }
        if drew {
            eprintln!();
        }
    });
    let result = blobs::get(&core, args, Some(tx)).await;
    core.close().await;
    let _ = printer.await;
    result
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

/// One progress line on stderr, redrawn in place.
fn draw(have: u64, size: Option<u64>, rate: f64, source: &str) {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let total = match size {
        Some(s) if s > 0 => format!(
            " / {:.1} MiB ({:.0}%)",
            mib(s as f64),
            100.0 * have as f64 / s as f64
        ),
        _ => String::new(),
    };
    eprint!(
        "\r{:.1} MiB{total}  {:.1} MiB/s  from {source}   ",
        mib(have as f64),
        mib(rate)
    );
    let _ = std::io::stderr().flush();
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
