//! `archy blob add|ls|get|serve`: the node's BLAKE3 blob store over iroh.
//!
//! `get` shows progress: in-process from the fetch's own events; through a running node by
//! polling how many verified bytes the node holds (the local API answers once per request).

use super::{call, print_json};
use crate::home::Home;
use crate::node::api::{self, NodeInfo};
use crate::node::blobs::{self, GetArgs};
use crate::node::config::NodeConfig;
use crate::node::rpc::Request;
use crate::node::NodeCore;
use anyhow::Result;
use archy_swarm::FetchEvent;
use clap::Subcommand;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
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
        hash: String,
        /// Endpoint addresses as `archy blob serve` prints them (`<id>@ip:port,...`). The first
        /// is dialled as the origin (tried first, used while it answers), the others as peers.
        #[arg(long = "from", value_name = "ENDPOINT_ADDR", num_args = 1..)]
        from: Vec<String>,
        /// The expected size in bytes (from a manifest); the fetch fails on any other size.
        #[arg(long)]
        size: Option<u64>,
        /// Also look up mirrors announced on the relays (used when the origin fails).
        #[arg(long)]
        find_mirrors: bool,
        /// Afterwards, serve the blob and announce this node as a mirror on the relays.
        #[arg(long)]
        mirror: bool,
        /// Write the blob to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Serve this home's blob store until Ctrl-C / SIGTERM; prints the endpoint address others
    /// pass to `--from`. When a node runs for this home, it already serves the store: its
    /// address is printed instead.
    Serve,
}

pub async fn run(home: &Home, cmd: BlobCmd) -> Result<()> {
    match cmd {
        BlobCmd::Add { file, json } => {
            let path = std::path::absolute(&file)?;
            let v = call(home, Request::BlobAdd { path }).await?;
            if json {
                return print_json(&v);
            }
            println!("{} {}", v["hash"].as_str().unwrap_or(""), v["size"]);
            Ok(())
        }
        BlobCmd::Ls { json } => {
            let v = call(home, Request::BlobLs).await?;
            if json {
                return print_json(&v);
            }
            for b in v.as_array().into_iter().flatten() {
                println!(
                    "{} {:>12}{}",
                    b["hash"].as_str().unwrap_or(""),
                    b["size"],
                    if b["mirrored"] == true {
                        "  mirrored"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        BlobCmd::Get {
            hash,
            from,
            size,
            find_mirrors,
            mirror,
            out,
            json,
        } => {
            let args = GetArgs {
                hash,
                from,
                size,
                find_mirrors,
                mirror,
                out: out.map(std::path::absolute).transpose()?,
            };
            let v = get(home, args, !json && std::io::stderr().is_terminal()).await?;
            if json {
                return print_json(&v);
            }
            print_get(&v);
            Ok(())
        }
        BlobCmd::Serve => serve(home).await,
    }
}

/// A short-lived core for this process (no node runs for the home).
fn local_core(home: &Home) -> Result<NodeCore> {
    let config = NodeConfig::load(home)?;
    let relays = config.relays.urls.clone();
    NodeCore::open(home.clone(), config, relays)
}

/// Closes the swarm so the store is flushed before the process exits.
async fn close(core: &NodeCore) {
    if let Some(s) = core.swarm_if_started() {
        if let Err(e) = s.shutdown().await {
            tracing::warn!("closing the blob store: {e}");
        }
    }
}

async fn get(home: &Home, args: GetArgs, show: bool) -> Result<Value> {
    let owner = api::claim(home).await?;
    if let api::Owner::Node(client) = &owner {
        let req = Request::BlobGet {
            hash: args.hash.clone(),
            from: args.from.clone(),
            size: args.size,
            find_mirrors: args.find_mirrors,
            mirror: args.mirror,
            out: args.out.clone(),
        };
        let have = Request::BlobHave {
            hash: args.hash.clone(),
        };
        let fetch = client.call(&req);
        tokio::pin!(fetch);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                r = &mut fetch => break r,
                _ = tick.tick(), if show => {
                    if let Ok(h) = client.call(&have).await {
                        let bytes = h["have"].as_u64().unwrap_or(0);
                        let rate = bytes as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        draw(bytes, args.size, rate, "the node");
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
                FetchEvent::Trying { .. } => {}
            }
        }
        if drew {
            eprintln!();
        }
    });
    let result = blobs::get(&core, args, Some(tx)).await;
    close(&core).await;
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

fn print_get(v: &Value) {
    let r = &v["report"];
    println!(
        "{} {} bytes{}{}",
        v["hash"].as_str().unwrap_or(""),
        v["size"],
        if r["already_local"] == true {
            " (already local)"
        } else {
            ""
        },
        v["out"]
            .as_str()
            .map(|o| format!(" -> {o}"))
            .unwrap_or_default()
    );
    for s in r["bytes_per_source"].as_array().into_iter().flatten() {
        println!(
            "  {}: {} bytes",
            s[0].as_str().map(short).unwrap_or(""),
            s[1]
        );
    }
    for s in r["bad_sources"].as_array().into_iter().flatten() {
        println!(
            "  dropped {}: {}",
            s[0].as_str().map(short).unwrap_or(""),
            s[1].as_str().unwrap_or("")
        );
    }
    if let Some(id) = v["mirror"]["event_id"].as_str() {
        println!("  mirroring; announced as event {id}");
    }
}

/// `archy blob serve`. While it runs, it also answers the local API, so other `archy`
/// commands for this home work (the home's databases allow one process at a time).
async fn serve(home: &Home) -> Result<()> {
    let _lock = match api::claim(home).await? {
        api::Owner::Node(client) => {
            let v = client.call(&Request::SwarmAddr).await?;
            eprintln!("a node already runs for this home and serves its blob store at:");
            println!("{}", v["addr"].as_str().unwrap_or(""));
            return Ok(());
        }
        api::Owner::Free(lock) => lock,
    };
    api::remove_node_info(home);
    let core = Arc::new(local_core(home)?);
    let addr = core.swarm().await?.addr();
    let token = api::ensure_token(home)?;
    let listener = api::bind(&core.config.api.bind).await?;
    let api_addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let api_task = tokio::spawn(api::serve(listener, core.clone(), token, async move {
        let _ = stop_rx.changed().await;
    }));
    api::write_node_info(
        home,
        &NodeInfo {
            api: api_addr,
            pid: std::process::id(),
        },
    )?;
    if !core.relay_urls().is_empty() {
        let c = core.clone();
        tokio::spawn(async move { blobs::reannounce_mirrors(&c).await });
    }
    println!("{addr}");
    eprintln!(
        "serving the blob store of {} until Ctrl-C; others fetch with: archy blob get HASH --from {addr}",
        home.root().display()
    );
    wait_for_signal().await;
    let _ = stop_tx.send(true);
    let _ = api_task.await;
    close(&core).await;
    api::remove_node_info(home);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
