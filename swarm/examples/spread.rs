//! One blob from two sources at once vs from one (PROTOCOL §5.3, v2), each source capped at
//! the same upload rate standing in for a home uplink, in one run:
//! - one source: the blob from the origin alone (`sources_at_once = 1`);
//! - two sources: origin and a mirror, each with the same cap.
//!
//! Reports both times, bytes per source and the throughput ratio (goal ≥ 1.8). Each run uses a
//! fresh receiver. Numbers are for comparison on one machine, never test assertions.
//!
//!   cargo run --release -p archy-swarm --example spread -- [MiB=256] [cap MiB/s=40] [runs=3]

use std::time::{Duration, Instant};

use archy_swarm::{FetchReport, FetchRequest, Swarm, SwarmConfig, UploadLimits};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::{median, vm_hwm};

async fn open(dir: std::path::PathBuf, limits: UploadLimits) -> anyhow::Result<Swarm> {
    Ok(Swarm::open(SwarmConfig::local(dir, "127.0.0.1:0".parse()?).with_uploads(limits)).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(256);
    let cap_mib = args.get(1).copied().unwrap_or(40);
    let runs = args.get(2).copied().unwrap_or(3).max(1);
    let size = mib * 1024 * 1024;
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("blob.bin");
    let mut content = vec![0u8; size as usize];
    blake3::Hasher::new()
        .update(b"spread")
        .finalize_xof()
        .fill(&mut content);
    std::fs::write(&file, &content)?;
    drop(content);
    let cap = UploadLimits {
        max_uploads: Some(8),
        rate: Some(cap_mib * 1024 * 1024),
    };
    let origin = open(tmp.path().join("origin"), cap).await?;
    let mirror = open(tmp.path().join("mirror"), cap).await?;
    let blob = origin.add_file(&file).await?;
    mirror.add_file(&file).await?;
    println!("spread: {mib} MiB, every source capped at {cap_mib} MiB/s, {runs} runs each");

    let mut times = [Vec::new(), Vec::new()];
    let mut last: [Option<FetchReport>; 2] = [None, None];
    for run in 0..runs {
        for (k, two) in [false, true].into_iter().enumerate() {
            // The caps are token buckets with one second of burst: let them refill.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let client = open(
                tmp.path().join(format!("client-{run}-{k}")),
                UploadLimits::default(),
            )
            .await?;
            let mut req = FetchRequest::new(&blob.hash, blob.size);
            req.origin = Some(origin.addr());
            if two {
                req.peers = vec![mirror.addr()];
            } else {
                req.sources_at_once = 1;
            }
            let t = Instant::now();
            let report = client.fetch(req, None).await?;
            times[k].push(t.elapsed().as_secs_f64());
            last[k] = Some(report);
            client.shutdown().await?;
            std::fs::remove_dir_all(tmp.path().join(format!("client-{run}-{k}")))?;
        }
    }
    let rate = |secs: f64| size as f64 / secs / 1e6;
    let (one, two) = (median(times[0].clone()), median(times[1].clone()));
    for (k, label) in ["one source ", "two sources"].iter().enumerate() {
        let t = median(times[k].clone());
        let report = last[k].as_ref().expect("a run");
        println!(
            "  {label}: {:.2} s median ({:.0} MB/s); bytes per source (last run): origin {}, mirror {}",
            t,
            rate(t),
            report.bytes_from(&origin.endpoint_id()),
            report.bytes_from(&mirror.endpoint_id())
        );
    }
    // Each cap lets one second of burst through at once, which favours the shorter fetch:
    // what two perfectly shared caps would give against one, burst included.
    let nominal = size as f64 / cap.rate.unwrap() as f64;
    let ideal = if nominal > 2.5 {
        format!("{:.2}", (nominal - 1.0) / (nominal / 2.0 - 1.0))
    } else {
        "n/a: the blob is about one burst, a size to check it runs, not to measure".into()
    };
    println!(
        "RATIO spread two_sources/one_source throughput {:.2} (goal >= 1.8; two perfectly shared caps with their 1 s burst: {ideal})",
        one / two
    );
    println!("PEAK spread VmHWM {}", vm_hwm());
    origin.shutdown().await?;
    mirror.shutdown().await?;
    Ok(())
}
