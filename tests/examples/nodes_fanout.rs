//! Fan-out across real nodes (issue 16, item 5): N `archy node run` processes on loopback, each
//! with its own home, iroh endpoint and blob store, fetch the same blob from one origin at the
//! same moment, through one real relay (the embedded relay, over WebSocket) for the mirror
//! announcements.
//!
//! Set-up, stated: every node (origin and consumers) has the same upload cap (`CAP` MB/s,
//! standing in for a home uplink) and `[swarm] max_uploads = MAX`; each consumer runs `archy blob
//! get --from <origin> --size <size> --find-mirrors --mirror`, so it is announced as a partial
//! mirror when it starts and as a mirror when it is complete, and watches the relay for the
//! others. Trust: every consumer anchors the origin's key and every other consumer's, so all
//! mirrors stand in one tier, and `blob get` (like an install) takes mirrors by tier, at random
//! within one (PROTOCOL §5.3): the consumers do not all crowd the same three peers.
//!
//! It reports origin egress (the bytes every consumer's report says came from the origin), the
//! bytes each node got from each source, the total time, and the time of one node alone under
//! the same cap (measured first, on its own relay so the fan-out does not see it) as a ratio.
//! With `--kill-origin-at C`, the origin is killed (SIGKILL) once the consumers' progress shows
//! C copies received from it, and the rest must come from the peers.
//!
//! With `--layered`, what moves is an app's layered image (PROTOCOL §2.1) instead of one raw
//! blob: the origin builds a MIB-MiB image of four random layers with Podman and publishes a
//! release of it (`archy app publish --image`), and each consumer syncs the catalog and runs
//! `archy apps fetch APP --confirm`: the install's path (trust gate, mirrors by tier, every
//! part spread over the origin and the peers, every sha256 checked, a partial mirror from the
//! moment the root is known) without Podman.
//!
//!   cargo run --release -p archy-tests --example nodes_fanout -- MIB N [CAP_MB_S] [MAX] [--kill-origin-at C] [--layered]
//!
//! `ARCHY_BIN` names the archy binary (default: built from this workspace).

use anyhow::{bail, Context, Result};
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig};
use archy_tests::cli::{api_post, archy, archy_json, NodeProc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn home(dir: &Path, name: &str, relay: &str, cap: u64, max: usize) -> Result<PathBuf> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[relays]\nembedded = false\nurls = [{relay:?}]\nquorum = 1\nsync_interval_secs = 3600\n\
             [swarm]\nupload_rate_bytes_per_sec = {cap}\nmax_uploads = {max}\n"
        ),
    )?;
    Ok(home)
}

fn addr(home: &Path) -> Result<String> {
    let out = archy(home, &["blob", "serve"]);
    if !out.status.success() {
        bail!("blob serve: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn endpoint(addr: &str) -> &str {
    addr.split('@').next().unwrap_or(addr)
}

fn bytes_from(report: &Value, endpoint: &str) -> u64 {
    report["bytes_per_source"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s[0] == endpoint)
                .filter_map(|s| s[1].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes the node on `home` has received from `origin` in each of its fetches in flight, by
/// blob (its local API's `transfers`; a layered image's parts come one after another, so the
/// caller keeps the last count of each).
fn live_from(home: &Path, origin: &str) -> Vec<(String, u64)> {
    let (code, body) = api_post(home, true, r#"{"method":"transfers"}"#);
    if code != 200 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let ts = v["ok"].as_array().cloned().unwrap_or_default();
    ts.iter()
        .map(|t| {
            let sources = t["sources"].as_array().cloned().unwrap_or_default();
            let bytes = (sources.iter())
                .filter(|s| s["endpoint"] == origin)
                .filter_map(|s| s["bytes"].as_u64())
                .sum();
            (t["hash"].as_str().unwrap_or_default().to_owned(), bytes)
        })
        .collect()
}

/// `archy blob get` as every consumer runs it (a partial mirror while it fetches, watching the
/// relay for the others).
fn get(home: &Path, hash: &str, origin: &str, size: u64) -> std::process::Output {
    let size = size.to_string();
    archy(
        home,
        &[
            "blob",
            "get",
            hash,
            "--from",
            origin,
            "--size",
            &size,
            "--find-mirrors",
            "--mirror",
            "--json",
        ],
    )
}

/// `archy apps fetch` as every consumer runs it in `--layered` mode.
fn fetch_app(home: &Path, app: &str) -> std::process::Output {
    archy(home, &["apps", "fetch", app, "--confirm", "--json"])
}

/// Runs a command, failing with its output.
fn run(cmd: &mut std::process::Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A `mib`-MiB image of four random layers (a base imported from a tar, three COPYs on top),
/// in the Podman of whoever runs this; returns its tag.
fn build_image(dir: &Path, mib: u64) -> Result<String> {
    use std::io::Write;
    let ctx = dir.join("image");
    std::fs::create_dir_all(ctx.join("base"))?;
    let quarter = mib / 4;
    let mut xof = blake3::Hasher::new()
        .update(b"fan-out layers")
        .finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..4 {
        let path = if i == 0 {
            ctx.join("base/pad0.bin")
        } else {
            ctx.join(format!("pad{i}.bin"))
        };
        let mut f = std::fs::File::create(path)?;
        for _ in 0..quarter {
            xof.fill(&mut buf);
            f.write_all(&buf)?;
        }
    }
    let tag = format!("localhost/archy/fanout:{}", std::process::id());
    let base = format!("{tag}-base");
    let tar = ctx.join("base.tar");
    run(std::process::Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(ctx.join("base"))
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    run(std::process::Command::new("podman")
        .args(["import", "--change", "CMD [\"/pad0.bin\"]"])
        .arg(&tar)
        .arg(&base))?;
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM {base}\nCOPY pad1.bin /pad1.bin\nCOPY pad2.bin /pad2.bin\nCOPY pad3.bin /pad3.bin\n"),
    )?;
    run(std::process::Command::new("podman")
        .args(["build", "--pull=never", "--quiet", "--tag", &tag])
        .arg(&ctx))?;
    Ok(tag)
}

/// Publishes app `app` 1.0.0 with image `tag` from the origin's home.
fn publish(dir: &Path, origin: &Path, app: &str, tag: &str) -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(repo.join("apps/hello-web/manifest.yaml"))?
        .replace("id: hello-web", &format!("id: {app}"));
    let path = dir.join("fanout-app.yaml");
    std::fs::write(&path, text)?;
    let out = archy(
        origin,
        &[
            "app",
            "publish",
            path.to_str().unwrap(),
            "--image",
            tag,
            "--json",
        ],
    );
    if !out.status.success() {
        bail!("app publish: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Syncs the catalog of `home` until it lists `app`.
fn sync_until(home: &Path, app: &str) -> Result<()> {
    for _ in 0..100 {
        archy(home, &["market", "sync"]);
        if archy(home, &["market", "show", app, "--json"])
            .status
            .success()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{app} never reached {}", home.display())
}

/// Where a consumer's command reports the bytes per source: `blob get`'s report, or the
/// image's (all its parts) for `apps fetch`.
fn report_of(v: &Value) -> &Value {
    if v.get("fetch").is_some() {
        &v["fetch"]
    } else {
        &v["report"]
    }
}

async fn relay(dir: &Path) -> Result<EmbeddedRelay> {
    EmbeddedRelay::start(EmbeddedRelayConfig {
        db_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .await
    .context("starting a relay")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kill_at = args
        .iter()
        .position(|a| a == "--kill-origin-at")
        .map(|i| args[i + 1].parse::<f64>())
        .transpose()?;
    let layered = args.iter().any(|a| a == "--layered");
    let nums: Vec<&String> = args.iter().take_while(|a| !a.starts_with("--")).collect();
    let num = |i: usize, d: u64| nums.get(i).map_or(Ok(d), |v| v.parse::<u64>());
    let (mib, n, cap_mb, max) = (num(0, 64)?, num(1, 4)? as usize, num(2, 20)?, num(3, 8)?);
    let cap = cap_mb * 1_000_000;
    let size = mib << 20;
    let dir = tempfile::Builder::new().prefix("archy-fanout-").tempdir()?;
    let main_relay = relay(&dir.path().join("relay")).await?;
    let alone_relay = relay(&dir.path().join("relay-alone")).await?;
    let url = main_relay.url().to_string();
    println!(
        "fan-out across real nodes: {n} consumers x {mib} MiB {}, every node's upload capped at \
         {cap_mb} MB/s with max_uploads = {max}; mirrors announced on one relay; every consumer \
         anchors the origin and the other consumers (one tier: random order)",
        if layered {
            "layered image (4 layers, `apps fetch`)"
        } else {
            "blob (`blob get`)"
        }
    );

    // The origin publishes on both relays (the node alone reads the second).
    let o = home(dir.path(), "origin", &url, cap, max as usize)?;
    std::fs::write(
        o.join("config.toml"),
        std::fs::read_to_string(o.join("config.toml"))?.replace(
            &format!("urls = [{url:?}]"),
            &format!("urls = [{url:?}, {:?}]", alone_relay.url().to_string()),
        ),
    )?;
    let mut origin = NodeProc::start(&o)?;
    let app = format!("fanout-{}", std::process::id());
    let hash = if layered {
        let tag = build_image(dir.path(), mib)?;
        publish(dir.path(), &o, &app, &tag)?;
        app.clone()
    } else {
        use std::io::Write;
        let data = o.join("blob.bin");
        let mut f = std::fs::File::create(&data)?;
        let mut xof = blake3::Hasher::new().update(b"fan-out").finalize_xof();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            xof.fill(&mut buf);
            f.write_all(&buf)?;
        }
        let added = archy_json(&o, &["blob", "add", data.to_str().unwrap(), "--json"]);
        added["hash"].as_str().context("blob add hash")?.to_owned()
    };
    // What each consumer runs: `blob get` of the blob, or `apps fetch` of the app.
    let get = move |home: &Path, what: &str, origin: &str, size: u64| {
        if layered {
            fetch_app(home, what)
        } else {
            get(home, what, origin, size)
        }
    };
    let o_addr = addr(&o)?;
    let o_id = endpoint(&o_addr).to_owned();

    // One node alone under the same cap, on a relay of its own.
    let alone_home = home(
        dir.path(),
        "alone",
        &alone_relay.url().to_string(),
        cap,
        max as usize,
    )?;
    let alone_node = NodeProc::start(&alone_home)?;
    if layered {
        sync_until(&alone_home, &hash)?;
    }
    let t = Instant::now();
    let alone = get(&alone_home, &hash, &o_addr, size);
    if !alone.status.success() {
        bail!("one node alone: {}", String::from_utf8_lossy(&alone.stderr));
    }
    let alone: Value = serde_json::from_slice(&alone.stdout)?;
    let alone_secs = t.elapsed().as_secs_f64();
    drop(alone_node);
    println!(
        "one node alone: {alone_secs:.2} s, {} bytes from the origin",
        bytes_from(report_of(&alone), &o_id)
    );

    let mut homes = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let h = home(dir.path(), &format!("node-{i:02}"), &url, cap, max as usize)?;
        nodes.push(NodeProc::start(&h)?);
        homes.push(h);
    }
    let ids: Vec<String> = homes
        .iter()
        .map(|h| addr(h).map(|a| endpoint(&a).to_owned()))
        .collect::<Result<_>>()?;
    // The trust set-up: each consumer anchors the origin's key and every other consumer's.
    let keys: Vec<String> = std::iter::once(&o)
        .chain(&homes)
        .map(|h| {
            archy_json(h, &["id", "show", "--json"])["nostr"]
                .as_str()
                .map(str::to_owned)
                .context("id show: nostr key")
        })
        .collect::<Result<_>>()?;
    for (i, h) in homes.iter().enumerate() {
        for (j, key) in keys.iter().enumerate() {
            if j != i + 1 {
                archy_json(h, &["trust", "anchor", "add", key, "--json"]);
            }
        }
    }
    if layered {
        for h in &homes {
            sync_until(h, &hash)?;
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(std::sync::Mutex::new(None::<f64>));
    let start = Instant::now();
    let monitor = kill_at.map(|copies| {
        let (homes, done, killed, o_id) =
            (homes.clone(), done.clone(), killed.clone(), o_id.clone());
        let threshold = (copies * size as f64) as u64;
        std::thread::spawn(move || {
            // The last count of each node's fetch of each blob.
            let mut seen = std::collections::HashMap::new();
            while !done.load(Ordering::Relaxed) {
                for (i, h) in homes.iter().enumerate() {
                    for (blob, bytes) in live_from(h, &o_id) {
                        let b = seen.entry((i, blob)).or_insert(0u64);
                        *b = (*b).max(bytes);
                    }
                }
                let sent: u64 = seen.values().sum();
                if sent >= threshold {
                    *killed.lock().unwrap() = Some(sent as f64 / size as f64);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    });
    let fetches: Vec<_> = homes
        .iter()
        .map(|h| {
            let (h, hash, o_addr) = (h.clone(), hash.clone(), o_addr.clone());
            std::thread::spawn(move || {
                let t = Instant::now();
                let out = get(&h, &hash, &o_addr, size);
                (t.elapsed().as_secs_f64(), out)
            })
        })
        .collect();
    if let Some(m) = monitor {
        // Kill from here (the monitor only says when), while the fetches run.
        let hit = std::thread::spawn(move || m.join().unwrap_or(false));
        while !hit.is_finished() {
            if fetches.iter().all(|f| f.is_finished()) {
                done.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if hit.join().unwrap_or(false) {
            origin.kill();
            println!(
                "origin killed after {:.2} s, at {:.2} copies sent",
                start.elapsed().as_secs_f64(),
                killed.lock().unwrap().unwrap_or(0.0)
            );
        } else {
            // The monitor polls the consumers' fetches in flight every 20 ms; a part whose last
            // bytes arrive between two polls is counted short, so an origin that sends exactly
            // one copy can end without the threshold seen.
            println!("origin NOT killed: the consumers' live reports never showed the threshold");
        }
    }
    let mut origin_egress = 0u64;
    let mut ok = 0;
    for (i, f) in fetches.into_iter().enumerate() {
        let (secs, out) = f.join().expect("fetch thread");
        if !out.status.success() {
            println!(
                "node-{i:02}: FAILED after {secs:.2} s: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let r = report_of(&v);
        ok += 1;
        origin_egress += bytes_from(r, &o_id);
        let by: Vec<String> = r["bytes_per_source"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let id = s[0].as_str().unwrap_or("");
                let who = if id == o_id {
                    "origin".to_owned()
                } else {
                    ids.iter().position(|x| x == id).map_or_else(
                        || id[..8.min(id.len())].to_owned(),
                        |j| format!("node-{j:02}"),
                    )
                };
                format!(
                    "{who} {:.1} MiB",
                    s[1].as_u64().unwrap_or(0) as f64 / 1048576.0
                )
            })
            .collect();
        println!("node-{i:02}: {secs:.2} s, verified; {}", by.join(", "));
    }
    done.store(true, Ordering::Relaxed);
    let total = start.elapsed().as_secs_f64();
    println!(
        "{ok}/{n} complete and verified; origin egress {:.1} MiB = {:.2} copies; total {total:.2} s \
         = {:.2}x one node alone ({alone_secs:.2} s)",
        origin_egress as f64 / 1048576.0,
        origin_egress as f64 / size as f64,
        total / alone_secs
    );
    drop(nodes);
    drop(origin);
    Ok(())
}
