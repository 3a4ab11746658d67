//! Verified ingest: `Swarm::add_bytes` / `Swarm::add_file` of one blob vs BLAKE3 alone over the
//! same bytes: single-thread, and on all cores (the data split into one BLAKE3 subtree per
//! core on std threads — the same compression work as a multi-threaded tree hash, without
//! turning on blake3's `rayon` feature, which would change the build of every crate that
//! depends on blake3 for this crate's dev targets only).
//!
//!   cargo run --release -p archy-swarm --example ingest -- [MiB=1024] [runs=3]
//!
//! Layered images (PROTOCOL §2.1): the same bytes as the four layer files of an OCI layout
//! plus a small manifest and config, added as one HashSeq (`Swarm::add_hashseq`) with the
//! layer files referenced in place (what `app publish --image` does with files it unpacked
//! itself) and copied, vs single-thread BLAKE3 reading (1 MiB at a time, from the page cache)
//! and hashing the same files. The store imports two parts at once, so it may beat one thread.
//!
//! Each store run uses a fresh node (nothing deduplicated); medians after one warm-up run.
//! Ratios are the claim (ours / BLAKE3 alone); absolute rates are printed for context only.

use std::time::Instant;

use archy_swarm::{Part, Swarm, SwarmConfig};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::{median, vm_hwm};

/// Runs `f` once as a warm-up, then `runs` times; returns the median rate in MB/s.
async fn rate<F, Fut>(size: usize, runs: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut v = Vec::new();
    for run in 0..=runs {
        let secs = f(run).await?;
        if run > 0 {
            v.push(size as f64 / secs / 1e6);
        }
    }
    Ok(median(v))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let runs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let size = mib * 1024 * 1024;
    let tmp = tempfile::tempdir()?;
    let mut data = vec![0u8; size];
    blake3::Hasher::new()
        .update(b"ingest")
        .finalize_xof()
        .fill(&mut data);
    let expected = blake3::hash(&data).to_hex().to_string();
    let file = tmp.path().join("payload.bin");
    std::fs::write(&file, &data)?;

    let single = rate(size, runs, |_| {
        let t = Instant::now();
        let h = blake3::hash(&data);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(h.to_hex().as_str(), expected);
        async move { Ok(secs) }
    })
    .await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One equal share per core, in whole 1 KiB BLAKE3 chunks.
    let part = size.div_ceil(cores).div_ceil(1024).max(1) * 1024;
    let parallel = rate(size, runs, |_| {
        let t = Instant::now();
        std::thread::scope(|s| {
            let hashes: Vec<_> = data
                .chunks(part)
                .map(|c| s.spawn(move || blake3::hash(c)))
                .collect();
            for h in hashes {
                std::hint::black_box(h.join().expect("hash thread"));
            }
        });
        let secs = t.elapsed().as_secs_f64();
        async move { Ok(secs) }
    })
    .await?;

    let root = tmp.path().to_path_buf();
    let add_bytes = rate(size, runs, |run| {
        let copy = data.clone();
        let dir = root.join(format!("bytes{run}"));
        let expected = expected.clone();
        async move {
            let node = Swarm::open(SwarmConfig::local(&dir, "127.0.0.1:0".parse()?)).await?;
            let t = Instant::now();
            let info = node.add_bytes(copy).await?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(info.hash == expected, "add_bytes hashed differently");
            node.shutdown().await?;
            std::fs::remove_dir_all(&dir)?;
            Ok(secs)
        }
    })
    .await?;
    let add_file = rate(size, runs, |run| {
        let dir = root.join(format!("file{run}"));
        let file = file.clone();
        let expected = expected.clone();
        async move {
            let node = Swarm::open(SwarmConfig::local(&dir, "127.0.0.1:0".parse()?)).await?;
            let t = Instant::now();
            let info = node.add_file(&file).await?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(info.hash == expected, "add_file hashed differently");
            node.shutdown().await?;
            std::fs::remove_dir_all(&dir)?;
            Ok(secs)
        }
    })
    .await?;

    // A layout: four layer files (the payload in quarters) in a private directory.
    let layout = tmp.path().join("layout");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&layout)?;
        std::fs::set_permissions(&layout, std::fs::Permissions::from_mode(0o700))?;
    }
    let quarter = size.div_ceil(4);
    let mut layer_files = Vec::new();
    for (i, part) in data.chunks(quarter).enumerate() {
        let p = layout.join(format!("layer{i}"));
        std::fs::write(&p, part)?;
        layer_files.push(p);
    }
    drop(data);
    let meta = (
        br#"{"schemaVersion":2}"#.to_vec(),
        br#"{"os":"linux"}"#.to_vec(),
    );
    let files_blake3 = rate(size, runs, |_| {
        let t = Instant::now();
        // Read in 1 MiB pieces into one buffer (no allocation per file), hashed as read.
        let mut buf = vec![0u8; 1 << 20];
        for f in &layer_files {
            use std::io::Read;
            let mut file = std::fs::File::open(f).expect("a layer file");
            let mut h = blake3::Hasher::new();
            loop {
                let n = file.read(&mut buf).expect("reading a layer file");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            std::hint::black_box(h.finalize());
        }
        std::hint::black_box(blake3::hash(&meta.0));
        std::hint::black_box(blake3::hash(&meta.1));
        let secs = t.elapsed().as_secs_f64();
        async move { Ok(secs) }
    })
    .await?;
    let mut layered = Vec::new();
    for reference in [true, false] {
        let r = rate(size, runs, |run| {
            let dir = root.join(format!("seq{reference}{run}"));
            let mut parts = vec![Part::Bytes(meta.0.clone()), Part::Bytes(meta.1.clone())];
            parts.extend(layer_files.iter().map(|p| Part::File {
                path: p.clone(),
                reference,
            }));
            async move {
                let node = Swarm::open(SwarmConfig::local(&dir, "127.0.0.1:0".parse()?)).await?;
                let t = Instant::now();
                let info = node.add_hashseq(parts).await?;
                let secs = t.elapsed().as_secs_f64();
                anyhow::ensure!(info.children.len() == 6, "a HashSeq of six parts");
                node.shutdown().await?;
                std::fs::remove_dir_all(&dir)?;
                Ok(secs)
            }
        })
        .await?;
        layered.push(r);
    }

    println!("ingest {mib} MiB, median of {runs} after a warm-up (MB/s, context only):");
    println!("  blake3 single-thread {single:.0} | blake3 on {cores} cores {parallel:.0} | add_bytes {add_bytes:.0} | add_file {add_file:.0}");
    println!(
        "RATIO ingest.add_bytes/blake3_single {:.2}  add_bytes/blake3_all_cores {:.2}",
        add_bytes / single,
        add_bytes / parallel
    );
    println!(
        "RATIO ingest.add_file/blake3_single {:.2}  add_file/blake3_all_cores {:.2}",
        add_file / single,
        add_file / parallel
    );
    println!(
        "  layered (4 layer files + manifest + config): blake3 single-thread over the files {files_blake3:.0} | add_hashseq referenced {:.0} | copied {:.0}",
        layered[0], layered[1]
    );
    println!(
        "RATIO ingest.layered_referenced/blake3_files {:.2}  layered_copied/blake3_files {:.2}",
        layered[0] / files_blake3,
        layered[1] / files_blake3
    );
    println!("PEAK ingest VmHWM {}", vm_hwm());
    Ok(())
}
