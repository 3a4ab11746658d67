//! Fan-out: how many bytes the origin sends when 5 nodes fetch the same image, with mirroring
//! on (each node mirrors what it fetched and later fetchers list the earlier ones as peers) vs.
//! off (no peers). Two scenarios, both in one run:
//! - origin up: a fetch spreads its pieces over the origin and up to three earlier fetchers
//!   at once (PROTOCOL §5.3, v2), so with mirroring on the origin sends a share of each later
//!   fetch instead of all of it. The fetchers run one after another and mirror only complete
//!   blobs (partial mirrors are not built yet), so this is not yet the concurrent fan-out of
//!   issue 16;
//! - origin leaves after the first fetch: mirrors carry the rest (egress = one copy), without
//!   mirroring the later fetches fail.
//!
//!   cargo run --release -p archy-swarm --example fanout -- [MiB=256] [fetchers=5]

use std::time::{Duration, Instant};

use archy_swarm::{FetchRequest, PeerAddr, Swarm, SwarmConfig};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::vm_hwm;

struct Outcome {
    origin_egress: u64,
    completed: usize,
    secs: f64,
}

/// `fetchers` fresh nodes fetch the blob one after another; with `mirror`, each mirrors it and
/// is offered as a peer to the next ones. With `origin_leaves`, the origin shuts down after the
/// first fetch completes.
async fn scenario(
    root: &std::path::Path,
    file: &std::path::Path,
    fetchers: usize,
    mirror: bool,
    origin_leaves: bool,
) -> anyhow::Result<Outcome> {
    let origin = Swarm::open(SwarmConfig::local(
        root.join("origin"),
        "127.0.0.1:0".parse()?,
    ))
    .await?;
    let blob = origin.add_file(file).await?;
    let origin_id = origin.endpoint_id();
    let origin_addr = origin.addr();
    let mut origin = Some(origin);
    let mut nodes: Vec<Swarm> = Vec::new();
    let mut peers: Vec<PeerAddr> = Vec::new();
    let (mut egress, mut completed) = (0u64, 0usize);
    let t = Instant::now();
    for i in 0..fetchers {
        let node = Swarm::open(SwarmConfig::local(
            root.join(format!("n{i}")),
            "127.0.0.1:0".parse()?,
        ))
        .await?;
        let mut req = FetchRequest::new(&blob.hash, blob.size);
        req.origin = Some(origin_addr.clone());
        req.peers = peers.iter().rev().cloned().collect();
        req.stall_timeout = Duration::from_secs(3);
        match node.fetch(req, None).await {
            Ok(report) => {
                egress += report.bytes_from(&origin_id);
                completed += 1;
                if mirror {
                    node.mirror_add(&blob.hash).await?;
                    peers.push(node.addr());
                }
            }
            Err(e) => println!("    fetcher {i}: {e}"),
        }
        nodes.push(node);
        if origin_leaves && i == 0 {
            if let Some(o) = origin.take() {
                o.shutdown().await?;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for n in nodes {
        n.shutdown().await?;
    }
    if let Some(o) = origin {
        o.shutdown().await?;
    }
    std::fs::remove_dir_all(root)?;
    Ok(Outcome {
        origin_egress: egress,
        completed,
        secs,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(256);
    let fetchers = args.get(1).copied().unwrap_or(5);
    let size = mib * 1024 * 1024;
    let tmp = tempfile::tempdir()?;
    let mut content = vec![0u8; size];
    blake3::Hasher::new()
        .update(b"fanout")
        .finalize_xof()
        .fill(&mut content);
    let file = tmp.path().join("image.oci");
    std::fs::write(&file, &content)?;
    drop(content);
    println!("fan-out: {fetchers} fetchers of {mib} MiB, one after another");
    for origin_leaves in [false, true] {
        let mut row = Vec::new();
        for mirror in [false, true] {
            let o = scenario(
                &tmp.path().join(format!("s{origin_leaves}{mirror}")),
                &file,
                fetchers,
                mirror,
                origin_leaves,
            )
            .await?;
            println!(
                "  origin {} | mirroring {}: origin egress {:.0} MiB ({:.2} copies), {} of {fetchers} complete, {:.2} s",
                if origin_leaves { "leaves after fetch 1" } else { "up" },
                if mirror { "on " } else { "off" },
                o.origin_egress as f64 / 1048576.0,
                o.origin_egress as f64 / size as f64,
                o.completed,
                o.secs
            );
            row.push(o);
        }
        let scope = if origin_leaves {
            "origin_leaves"
        } else {
            "origin_up"
        };
        println!(
            "RATIO fanout.{scope} egress mirroring_on/off {:.2}  completed on {} / off {}",
            row[1].origin_egress as f64 / row[0].origin_egress.max(1) as f64,
            row[1].completed,
            row[0].completed
        );
    }
    println!("PEAK fanout VmHWM {}", vm_hwm());
    Ok(())
}
