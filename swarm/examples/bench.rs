//! Loopback transfer rate of `Swarm::fetch`, side by side with its ceiling — one raw QUIC
//! stream between two iroh endpoints of the same kind pushing the same bytes from memory —,
//! with iroh-blobs' own get (`Remote::fetch` into a fresh `FsStore`, from the same origin
//! endpoint, runs interleaved with ours), and with `sendme` (iroh's own tool) on the same file
//! when it is installed (tests/setup/sendme.sh).
//!
//!   cargo run -p archy-swarm --example bench [--release] -- [MiB=100] [runs=5]
//!
//! Each run uses a fresh receiving node (nothing cached); the median of the runs is printed
//! after one warm-up run. Numbers are for comparison on one machine, never test assertions.

use std::{path::PathBuf, process::Stdio, time::Instant};

use archy_swarm::{FetchRequest, Swarm, SwarmConfig};
use iroh::endpoint::{presets, RelayMode};
use iroh::Endpoint;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::{median, vm_hwm};

/// The custom ALPN of the raw-QUIC ceiling: no protocol, just bytes on one bi stream.
const RAW_ALPN: &[u8] = b"archy/bench-raw/0";

async fn raw_endpoint(alpns: Vec<Vec<u8>>) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .alpns(alpns)
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await?)
}

/// The full dialable address of a loopback endpoint (id + bound sockets).
fn loopback_addr(ep: &Endpoint) -> iroh::EndpointAddr {
    let mut addr = iroh::EndpointAddr::new(ep.id());
    for a in ep.bound_sockets() {
        addr = addr.with_ip_addr(a);
    }
    addr
}

/// Ceiling: the sender pushes `size` bytes from memory on one bi stream; the receiver reads
/// them into a buffer and counts, then answers one byte. Returns the median MB/s (receiver's
/// view: connect to last byte acknowledged), measured like `fetch` (fresh receiver each run).
async fn raw_quic(content: std::sync::Arc<Vec<u8>>, runs: usize) -> anyhow::Result<f64> {
    let size = content.len();
    let server = raw_endpoint(vec![RAW_ALPN.to_vec()]).await?;
    let server_addr = loopback_addr(&server);
    let srv = server.clone();
    let serve = tokio::spawn(async move {
        while let Some(incoming) = srv.accept().await {
            let content = content.clone();
            tokio::spawn(async move {
                let conn = incoming.await?;
                let (mut send, mut recv) = conn.accept_bi().await?;
                // The receiver asks with one byte; the server pushes the payload.
                let mut ask = [0u8; 1];
                recv.read_exact(&mut ask).await?;
                for chunk in content.chunks(1 << 20) {
                    send.write_all(chunk).await?;
                }
                send.finish()?;
                send.stopped().await?;
                anyhow::Ok(())
            });
        }
    });
    let mut rates = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    for run in 0..=runs {
        let client = raw_endpoint(vec![]).await?;
        let t = Instant::now();
        let conn = client.connect(server_addr.clone(), RAW_ALPN).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[1]).await?;
        send.finish()?;
        let mut got = 0usize;
        while let Some(n) = recv.read(&mut buf).await? {
            got += n;
        }
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(got == size, "raw stream delivered {got} of {size} bytes");
        conn.close(0u32.into(), b"done");
        client.close().await;
        if run > 0 {
            rates.push(size as f64 / secs / 1e6);
        }
    }
    server.close().await;
    serve.abort();
    Ok(median(rates))
}

/// iroh-blobs' own get of one blob, from `origin` into a fresh `FsStore` in `dir` over a fresh
/// endpoint, as an iroh-blobs user would write it: connect, `Remote::fetch`. Returns seconds
/// (connect to the store holding the whole blob).
async fn iroh_blobs_get(
    origin: &iroh::EndpointAddr,
    hash: iroh_blobs::Hash,
    size: u64,
    dir: PathBuf,
) -> anyhow::Result<f64> {
    let store = iroh_blobs::store::fs::FsStore::load(&dir).await?;
    let ep = raw_endpoint(vec![]).await?;
    let t = Instant::now();
    let conn = ep.connect(origin.clone(), iroh_blobs::ALPN).await?;
    let stats = store
        .remote()
        .fetch(conn.clone(), iroh_blobs::HashAndFormat::raw(hash))
        .await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        stats.payload_bytes_read == size,
        "iroh-blobs get read {} of {size} bytes",
        stats.payload_bytes_read
    );
    conn.close(0u32.into(), b"done");
    ep.close().await;
    store.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(secs)
}

async fn node(dir: PathBuf) -> anyhow::Result<Swarm> {
    Ok(Swarm::open(SwarmConfig::local(dir, "127.0.0.1:0".parse()?)).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let runs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let size = mib * 1024 * 1024;
    let tmp = tempfile::tempdir()?;
    let mut content = vec![0u8; size];
    blake3::Hasher::new()
        .update(b"bench")
        .finalize_xof()
        .fill(&mut content);
    let file = tmp.path().join("payload.bin");
    std::fs::write(&file, &content)?;
    let raw = raw_quic(std::sync::Arc::new(content), runs).await?;

    let origin = node(tmp.path().join("origin")).await?;
    let blob = origin.add_file(&file).await?;
    let mut ours = Vec::new();
    let mut ours_export = Vec::new();
    let mut theirs_get = Vec::new();
    let origin_addr = origin.addr().to_endpoint_addr()?;
    let hash: iroh_blobs::Hash = blob.hash.parse()?;
    for run in 0..=runs {
        let secs = iroh_blobs_get(
            &origin_addr,
            hash,
            blob.size,
            tmp.path().join(format!("iroh-blobs{run}")),
        )
        .await?;
        if run > 0 {
            theirs_get.push(size as f64 / secs / 1e6);
        }
        let client = node(tmp.path().join(format!("client{run}"))).await?;
        let mut req = FetchRequest::new(&blob.hash, blob.size);
        req.origin = Some(origin.addr());
        let t = Instant::now();
        let report = client.fetch(req, None).await?;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(report.transferred(), blob.size);
        let out = tmp.path().join(format!("out{run}.bin"));
        client.export(&blob.hash, &out).await?;
        let secs_export = t.elapsed().as_secs_f64();
        std::fs::remove_file(&out)?;
        if run > 0 {
            ours.push(size as f64 / secs / 1e6);
            ours_export.push(size as f64 / secs_export / 1e6);
        }
        client.shutdown().await?;
        std::fs::remove_dir_all(tmp.path().join(format!("client{run}")))?;
    }
    let ours = median(ours);
    let ours_export = median(ours_export);
    println!("archy-swarm fetch: {mib} MiB, median of {runs}: {ours:.0} MB/s ({ours_export:.0} MB/s including export to a file)");
    let theirs_get = median(theirs_get);
    println!(
        "iroh-blobs' own get (Remote::fetch into a fresh FsStore, same origin, runs interleaved): {theirs_get:.0} MB/s"
    );
    println!(
        "RATIO transfer.{mib}MiB fetch/iroh_blobs_get {:.2}",
        ours / theirs_get
    );
    println!("raw QUIC stream (iroh endpoints, memory to memory): {raw:.0} MB/s");
    println!("RATIO transfer.{mib}MiB fetch/raw_quic {:.2}", ours / raw);
    println!("PEAK transfer VmHWM {} (after archy + raw rows)", vm_hwm());

    let sendme = std::env::var_os("SENDME").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/archy-tools/bin/sendme"))
    });
    let Some(sendme) = sendme.filter(|p| p.is_file()) else {
        println!("sendme not installed: no side-by-side number (tests/setup/sendme.sh)");
        origin.shutdown().await?;
        return Ok(());
    };
    let offline = [
        "--relay",
        "disabled",
        "--magic-ipv4-addr",
        "127.0.0.1:0",
        "--magic-ipv6-addr",
        "[::1]:0",
        "--no-progress",
    ];
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share)?;
    std::fs::rename(&file, share.join("payload.bin"))?;
    let mut sender = tokio::process::Command::new(&sendme)
        .args(["send", "payload.bin"])
        .args(offline)
        .current_dir(&share)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(sender.stdout.take().expect("piped")).lines();
    let mut ticket = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("blob")) {
            ticket = Some(t.to_string());
            break;
        }
    }
    let ticket = ticket.ok_or_else(|| anyhow::anyhow!("sendme printed no ticket"))?;
    let mut theirs = Vec::new();
    for run in 0..=runs {
        let dir = tmp.path().join(format!("recv{run}"));
        std::fs::create_dir_all(&dir)?;
        let t = Instant::now();
        let status = tokio::process::Command::new(&sendme)
            .arg("receive")
            .arg(&ticket)
            .args(offline)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "sendme receive failed");
        if run > 0 {
            theirs.push(size as f64 / secs / 1e6);
        }
        std::fs::remove_dir_all(&dir)?;
    }
    let theirs = median(theirs);
    println!(
        "sendme receive (process start + fetch + write file): median {theirs:.0} MB/s; archy (fetch + export) / sendme = {:.2}",
        ours_export / theirs
    );
    println!(
        "RATIO transfer.{mib}MiB fetch+export/sendme {:.2}",
        ours_export / theirs
    );
    sender.kill().await.ok();
    origin.shutdown().await?;
    Ok(())
}
