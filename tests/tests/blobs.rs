//! Blobs and images between real `archy` processes (issue 5, items 3–5): iroh endpoints on
//! loopback, a real relay over WebSocket for releases and mirror announcements, real Podman.
//!
//! - `archy blob add` → `archy blob serve` → `archy blob get --from` on another home;
//! - `archy app publish --image` fills `image.id`, `image.archive` and `origin` in the signed
//!   release, and a consumer fetches the archive by the manifest's hash and size from the origin;
//! - mirrors: a consumer fetches and announces; with the origin down, another consumer finds
//!   the mirror through the relay and fetches from it; with the origin back, the origin serves.

use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig};
use archy_tests::cli::{api_post, archy, archy_json, have_tool, repo, NodeProc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use archy_tests::cli::{archy_async as cli, archy_json_async as cli_json};

async fn start_node(home: &Path) -> NodeProc {
    let h = home.to_path_buf();
    tokio::task::spawn_blocking(move || NodeProc::start(&h).unwrap())
        .await
        .unwrap()
}

/// A home that uses `relay` only (no embedded relay) and gives up on a silent source after
/// a few seconds (a safety bound for the dead-origin case, not a timing assertion).
fn home_with_relay(dir: &Path, name: &str, relay: Option<&str>) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let urls = relay.map(|r| format!("{r:?}")).unwrap_or_default();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[relays]\nembedded = false\nurls = [{urls}]\nquorum = 1\nsync_interval_secs = 3600\n\
             [swarm]\nstall_timeout_secs = 3\n"
        ),
    )
    .unwrap();
    home
}

async fn start_relay() -> (EmbeddedRelay, tempfile::TempDir) {
    let db = tempfile::tempdir().unwrap();
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig {
        db_dir: Some(db.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    (relay, db)
}

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode).
fn test_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

fn endpoint_of(addr: &str) -> &str {
    addr.split('@').next().unwrap()
}

/// Verified bytes a fetch report says came from `endpoint`.
fn bytes_from(report: &Value, endpoint: &str) -> u64 {
    report["bytes_per_source"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == endpoint)
        .map(|s| s[1].as_u64().unwrap())
        .sum()
}

/// What `archy blob serve` prints for a home whose node runs: the node's swarm address.
async fn node_addr(home: &Path) -> String {
    let out = cli(home, &["blob", "serve"]).await;
    assert!(out.status.success(), "{out:?}");
    let addr = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(addr.contains('@'), "not an endpoint address: {addr}");
    addr
}

/// A node on `home` that added `data` as a blob: the node, the blob's hash, its swarm address.
async fn origin_serving(home: &Path, data: &[u8]) -> (NodeProc, String, String) {
    let file = home.join("origin-data.bin");
    std::fs::write(&file, data).unwrap();
    let node = start_node(home).await;
    let added = cli_json(home, &["blob", "add", file.to_str().unwrap(), "--json"]).await;
    let hash = added["hash"].as_str().unwrap().to_owned();
    (node, hash, node_addr(home).await)
}

/// An origin node serving `data` and a mirror node (on `mirror`) that fetched it from the
/// origin and announced itself on the relay: (origin, mirror, hash, origin address, mirror
/// address).
async fn origin_and_mirror(
    origin_home: &Path,
    mirror: &Path,
    data: &[u8],
) -> (NodeProc, NodeProc, String, String, String) {
    let size = data.len().to_string();
    let (origin, hash, o_addr) = origin_serving(origin_home, data).await;
    let node = start_node(mirror).await;
    let m_addr = node_addr(mirror).await;
    let got = cli_json(
        mirror,
        &[
            "blob", "get", &hash, "--from", &o_addr, "--size", &size, "--mirror", "--json",
        ],
    )
    .await;
    assert_eq!(
        bytes_from(&got["report"], endpoint_of(&o_addr)),
        data.len() as u64
    );
    assert!(got["mirror"]["accepted"].as_u64().unwrap() >= 1, "{got}");
    (origin, node, hash, o_addr, m_addr)
}

/// A running `archy blob serve`, stopped with SIGTERM on drop.
struct BlobServe {
    child: Child,
    addr: String,
}

impl BlobServe {
    fn start(home: &Path) -> BlobServe {
        use std::io::BufRead;
        let mut child = Command::new(archy_tests::cli::archy_bin())
            .arg("--home")
            .arg(home)
            .args(["blob", "serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().to_owned();
        assert!(addr.contains('@'), "blob serve printed {line:?}");
        BlobServe { child, addr }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "blob serve exited with {status}");
    }
}

impl Drop for BlobServe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn blob_add_serve_and_get_on_another_home() {
    let dir = tempfile::tempdir().unwrap();
    let a = home_with_relay(dir.path(), "a", None);
    let b = home_with_relay(dir.path(), "b", None);
    let data = test_bytes("round trip", 3 * 1024 * 1024 + 17);
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let hash = blake3::hash(&data).to_hex().to_string();

    let added = archy_json(&a, &["blob", "add", file.to_str().unwrap(), "--json"]);
    assert_eq!(added["hash"], hash.as_str());
    assert_eq!(added["size"], data.len() as u64);

    let mut serve = BlobServe::start(&a);
    // While it serves, other commands for the home go through it (and see the store)...
    let ls = archy_json(&a, &["blob", "ls", "--json"]);
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|b| b["hash"] == hash.as_str()),
        "{ls}"
    );
    // ...and a second `blob serve` names the running one's address.
    let again = archy(&a, &["blob", "serve"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), serve.addr);

    let out = dir.path().join("got.bin");
    let got = archy_json(
        &b,
        &[
            "blob",
            "get",
            &hash,
            "--from",
            &serve.addr,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(std::fs::read(&out).unwrap(), data, "the bytes differ");
    let origin = endpoint_of(&serve.addr);
    assert_eq!(
        bytes_from(&got["report"], origin),
        data.len() as u64,
        "{got}"
    );
    assert_eq!(got["report"]["completed_by"], origin);
    let ls = archy_json(&b, &["blob", "ls", "--json"]);
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|e| e["hash"] == hash.as_str() && e["size"] == data.len() as u64),
        "{ls}"
    );
    serve.stop();
    assert!(
        !a.join("node.json").exists(),
        "blob serve left node.json behind"
    );
    // A wrong expected size is refused (the size comes from the caller, never the peer).
    let mut serve = BlobServe::start(&a);
    let c = home_with_relay(dir.path(), "c", None);
    let bad = archy(
        &c,
        &[
            "blob",
            "get",
            &hash,
            "--from",
            &serve.addr,
            "--size",
            "5",
            "--json",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("size"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    serve.stop();
}

/// A unique tag of the test image, removed on drop (the image itself stays).
struct ImageTag(String);

impl ImageTag {
    fn new(base: &str) -> Option<ImageTag> {
        let ok = Command::new("podman")
            .args(["image", "exists", base])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!(
            "localhost/archy/busybox:blobs-{}-{nanos}",
            std::process::id()
        );
        let st = Command::new("podman")
            .args(["tag", base, &tag])
            .status()
            .unwrap();
        assert!(st.success(), "podman tag failed");
        Some(ImageTag(tag))
    }

    fn id(&self) -> String {
        let out = Command::new("podman")
            .args(["image", "inspect", "--format", "{{.Id}}", &self.0])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["untag", &self.0, &self.0])
            .output();
    }
}

fn hello_manifest(dir: &Path) -> String {
    let path = dir.join("hello.yaml");
    std::fs::copy(repo().join("apps/hello-web/manifest.yaml"), &path).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `origin` of a manifest as the CLI's `--from` form.
fn origin_addr(origin: &Value) -> String {
    let addrs: Vec<&str> = origin["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    format!(
        "{}@{}",
        origin["endpoint"].as_str().unwrap(),
        addrs.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_image_fills_the_release_and_the_consumer_fetches_the_archive() {
    let Some(tag) = ImageTag::new("localhost/archy/busybox:latest") else {
        have_tool(
            false,
            "podman with localhost/archy/busybox:latest (tests/setup/podman.sh)",
        );
        return;
    };
    let image_id = tag.id();
    let (relay, _db) = start_relay().await;
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let p = home_with_relay(dir.path(), "publisher", Some(&url));
    let c = home_with_relay(dir.path(), "consumer", Some(&url));
    let node = start_node(&p).await;
    let p_addr = node_addr(&p).await;

    let m = hello_manifest(dir.path());
    // One archive (the v1 way, still supported): layered images are tests/tests/layers.rs.
    let out = cli_json(
        &p,
        &[
            "app",
            "publish",
            &m,
            "--image",
            &tag.0,
            "--format",
            "oci-archive",
            "--json",
        ],
    )
    .await;
    assert_eq!(out["accepted"], 1, "{out}");
    assert_eq!(out["image"]["id"], format!("sha256:{image_id}"), "{out}");

    let sync = cli_json(&c, &["market", "sync", "--json"]).await;
    assert_eq!(sync["accepted"], 1, "{sync}");
    let show = cli_json(&c, &["market", "show", "hello-web", "--json"]).await;
    let manifest = &show["latest_manifest"];
    let image = &manifest["image"];
    assert_eq!(image["id"], format!("sha256:{image_id}"), "{manifest}");
    // The file names the image, so its name stays; the archive and origin are this node's.
    assert_eq!(image["name"], "localhost/archy/hello-web:1.0.0");
    assert_eq!(image["archive"]["format"], "oci-archive");
    let blake = image["archive"]["blake3"].as_str().unwrap().to_owned();
    let size = image["archive"]["size"].as_u64().unwrap();
    assert!(size > 0);
    assert_eq!(manifest["origin"]["endpoint"], endpoint_of(&p_addr));
    assert_eq!(origin_addr(&manifest["origin"]), p_addr);

    // The consumer fetches by the manifest's hash and size, from the manifest's origin.
    let file = dir.path().join("image.tar");
    let got = cli_json(
        &c,
        &[
            "blob",
            "get",
            &blake,
            "--from",
            &origin_addr(&manifest["origin"]),
            "--size",
            &size.to_string(),
            "--out",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), blake);
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(bytes_from(&got["report"], endpoint_of(&p_addr)), size);
    drop(node);

    // Publishing without a running node works too, with a warning that nothing serves it then.
    let q = home_with_relay(dir.path(), "offline-publisher", Some(&url));
    let out = cli(
        &q,
        &[
            "app",
            "publish",
            &m,
            "--image",
            &tag.0,
            "--format",
            "docker-archive",
            "--json",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no node runs"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"]["archive"]["format"], "docker-archive");
    assert_eq!(v["image"]["id"], format!("sha256:{image_id}"));
    // The archive is in q's store, ready for when q serves.
    let ls = cli_json(&q, &["blob", "ls", "--json"]).await;
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|b| b["hash"] == v["image"]["archive"]["blake3"]),
        "{ls}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_found_through_the_relay_serves_while_the_origin_is_down() {
    let (relay, _db) = start_relay().await;
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = home_with_relay(dir.path(), "origin", Some(&url));
    let a = home_with_relay(dir.path(), "mirror-a", Some(&url));
    let b = home_with_relay(dir.path(), "consumer-b", Some(&url));
    let c = home_with_relay(dir.path(), "consumer-c", Some(&url));
    let data = test_bytes("mirrored", 1024 * 1024 + 5);
    let size = data.len().to_string();
    // A fetches from the origin (through its running node) and becomes a mirror.
    let (mut origin, node_a, hash, o_addr, a_addr) = origin_and_mirror(&o, &a, &data).await;
    let ls = cli_json(&a, &["blob", "ls", "--json"]).await;
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|e| e["hash"] == hash.as_str() && e["mirrored"] == true),
        "{ls}"
    );

    // The origin goes away: B is told only the origin, finds A through the relay.
    origin.stop();
    let out = dir.path().join("b.bin");
    let got = cli_json(
        &b,
        &[
            "blob",
            "get",
            &hash,
            "--from",
            &o_addr,
            "--size",
            &size,
            "--find-mirrors",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let report = &got["report"];
    assert_eq!(
        bytes_from(report, endpoint_of(&a_addr)),
        data.len() as u64,
        "{report}"
    );
    assert_eq!(bytes_from(report, endpoint_of(&o_addr)), 0, "{report}");
    assert_eq!(report["completed_by"], endpoint_of(&a_addr));

    // The origin is back (same address): the next fetch spreads over it and the mirror
    // (PROTOCOL §5.3, v2: peers share the load), the origin among the sources.
    let origin = start_node(&o).await;
    assert_eq!(node_addr(&o).await, o_addr, "the origin's address changed");
    let got = cli_json(
        &c,
        &[
            "blob",
            "get",
            &hash,
            "--from",
            &o_addr,
            "--size",
            &size,
            "--find-mirrors",
            "--json",
        ],
    )
    .await;
    let report = &got["report"];
    let (from_o, from_a) = (
        bytes_from(report, endpoint_of(&o_addr)),
        bytes_from(report, endpoint_of(&a_addr)),
    );
    assert!(from_o > 0 && from_a > 0, "{report}");
    assert_eq!(from_o + from_a, data.len() as u64, "{report}");

    // At start a node announces its mirrors again: A, restarted with a second relay, appears
    // there without fetching anything.
    let (relay2, _db2) = start_relay().await;
    let url2 = relay2.url().to_string();
    drop(node_a);
    std::fs::write(
        a.join("config.toml"),
        format!(
            "[relays]\nembedded = false\nurls = [{url:?}, {url2:?}]\nquorum = 1\n\
             sync_interval_secs = 3600\n"
        ),
    )
    .unwrap();
    let node_a = start_node(&a).await;
    let pool = archy_relays::RelayPool::connect([url2.as_str()], Default::default())
        .await
        .unwrap();
    let filter = archy_marketplace::events::mirror_filter(&hash);
    let mut found = Vec::new();
    // A safety net, not a timing bound: the announcement goes out as the node starts.
    for _ in 0..600 {
        found = pool.fetch(filter.clone(), None).await.unwrap();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found.len(), 1, "A did not re-announce on the new relay");
    let ann = archy_marketplace::events::parse_mirror_event(&found[0], &hash)
        .unwrap()
        .announcement;
    assert_eq!(ann.endpoint, endpoint_of(&a_addr));
    assert!(
        !ann.partial,
        "a complete mirror is re-announced as complete"
    );
    pool.shutdown().await;
    drop(origin);
    drop(node_a);
    relay2.shutdown().await;
    relay.shutdown().await;
}

/// The origin node is SIGKILLed while a consumer's node fetches from it (issue 9, faults, end to
/// end): the consumer's fetch goes on from a mirror found through the relay, keeps the bytes
/// the origin already sent (the mirror serves only the rest), and the blob verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_killed_mid_transfer_leaves_the_rest_to_a_mirror() {
    let (relay, _db) = start_relay().await;
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = home_with_relay(dir.path(), "origin", Some(&url));
    let a = home_with_relay(dir.path(), "mirror", Some(&url));
    let b = home_with_relay(dir.path(), "consumer", Some(&url));
    // Large enough that the transfer is still running when the test sees its first bytes.
    let data = test_bytes("killed-mid-transfer", 256 << 20);
    let size = data.len().to_string();
    let (mut origin, hash, o_addr) = origin_serving(&o, &data).await;
    let mirror = start_node(&a).await;
    let a_addr = node_addr(&a).await;
    let got = cli_json(
        &a,
        &[
            "blob", "get", &hash, "--from", &o_addr, "--size", &size, "--mirror", "--json",
        ],
    )
    .await;
    assert!(got["mirror"]["accepted"].as_u64().unwrap() >= 1, "{got}");

    // The consumer's node fetches; the test watches its verified bytes through the API and
    // kills the origin as soon as some have arrived.
    let consumer = start_node(&b).await;
    let out = dir.path().join("b.bin");
    let fetch = {
        let (b, hash, o_addr, size, out) = (
            b.clone(),
            hash.clone(),
            o_addr.clone(),
            size.clone(),
            out.to_str().unwrap().to_owned(),
        );
        tokio::spawn(async move {
            cli_json(
                &b,
                &[
                    "blob",
                    "get",
                    &hash,
                    "--from",
                    &o_addr,
                    "--size",
                    &size,
                    "--find-mirrors",
                    "--out",
                    &out,
                    "--json",
                ],
            )
            .await
        })
    };
    let have_req = format!(r#"{{"method":"blob_have","params":{{"hash":"{hash}"}}}}"#);
    let seen = tokio::task::spawn_blocking({
        let b = b.clone();
        move || {
            // A safety net, not a timing bound.
            for _ in 0..60_000 {
                let (code, body) = api_post(&b, true, &have_req);
                if code == 200 {
                    let have = serde_json::from_str::<Value>(&body).unwrap()["ok"]["have"]
                        .as_u64()
                        .unwrap_or(0);
                    if have > 0 {
                        return have;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            0
        }
    })
    .await
    .unwrap();
    origin.kill();
    assert!(seen > 0, "the consumer never received a byte");
    let got = fetch.await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data, "the blob verifies");
    let report = &got["report"];
    let (from_origin, from_mirror) = (
        bytes_from(report, endpoint_of(&o_addr)),
        bytes_from(report, endpoint_of(&a_addr)),
    );
    assert!(from_origin > 0, "{report}");
    assert!(
        from_mirror > 0 && from_mirror < data.len() as u64,
        "the mirror serves only what the origin did not: {report}"
    );
    assert_eq!(from_origin + from_mirror, data.len() as u64, "{report}");
    assert_eq!(report["completed_by"], endpoint_of(&a_addr), "{report}");
    drop((consumer, mirror));
    relay.shutdown().await;
}

/// The swarm's hostile provider: the real iroh-blobs protocol with its bytes flipped.
#[path = "../../swarm/tests/common/mod.rs"]
mod swarm_common;

/// PROTOCOL §5.4: a mirror announced on the relay that sends bytes that do not verify is
/// dropped, the fetch completes from an honest mirror and verifies, and the key that announced
/// the hostile source carries the evidence in `archy trust show`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_mirror_is_dropped_and_its_announcer_carries_the_evidence() {
    let (relay, _db) = start_relay().await;
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = home_with_relay(dir.path(), "origin", Some(&url));
    let a = home_with_relay(dir.path(), "mirror", Some(&url));
    let b = home_with_relay(dir.path(), "consumer", Some(&url));
    let data = test_bytes("hostile-mirror", 1024 * 1024 + 9);
    let size = data.len().to_string();
    let (mut origin, _node_a, hash, _, a_addr) = origin_and_mirror(&o, &a, &data).await;
    origin.stop();

    // A hostile provider holding the same blob, announced after the honest mirror (a newer
    // announcement is tried first among keys of equal trust), by a key of its own.
    let (_hostile, hostile_addr) = swarm_common::hostile(&data, 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let hostile_keys = nostr_sdk::Keys::generate();
    let ann = archy_marketplace::events::MirrorAnnouncement {
        endpoint: hostile_addr.endpoint.clone(),
        addrs: hostile_addr.addrs.iter().map(ToString::to_string).collect(),
        partial: false,
    };
    let event = archy_marketplace::events::build_mirror_event(
        &hostile_keys,
        &hash,
        &[],
        &ann,
        nostr_sdk::Timestamp::now().as_secs(),
    )
    .unwrap();
    let pool = archy_relays::RelayPool::connect([url.as_str()], Default::default())
        .await
        .unwrap();
    assert_eq!(pool.publish(&event).await.unwrap().accepted, 1);
    pool.shutdown().await;

    let out = dir.path().join("b.bin");
    let got = cli_json(
        &b,
        &[
            "blob",
            "get",
            &hash,
            "--size",
            &size,
            "--find-mirrors",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), data, "verified and complete");
    let report = &got["report"];
    let bad = report["bad_sources"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0][0], hostile_addr.endpoint.as_str(), "{report}");
    assert_eq!(
        bytes_from(report, endpoint_of(&a_addr)),
        data.len() as u64,
        "the honest mirror sent every verified byte: {report}"
    );
    let hostile_hex = hostile_keys.public_key().to_hex();
    let shown = cli_json(&b, &["trust", "show", &hostile_hex, "--json"]).await;
    assert_eq!(
        shown["explanation"]["evidence"]["bad_bytes"], 1,
        "the announcer carries the evidence: {shown}"
    );
    let a_id = cli_json(&a, &["id", "show", "--json"]).await;
    let a_nostr = a_id["nostr"].as_str().unwrap();
    let shown = cli_json(&b, &["trust", "show", a_nostr, "--json"]).await;
    assert_eq!(
        shown["explanation"]["evidence"]["bad_bytes"], 0,
        "the honest mirror carries none: {shown}"
    );
}

/// Verified bytes of `hash` on the node of `home`, through its local API (0 until it answers).
fn have_bytes(home: &Path, hash: &str) -> u64 {
    let req = format!(r#"{{"method":"blob_have","params":{{"hash":"{hash}"}}}}"#);
    let (code, body) = api_post(home, true, &req);
    if code != 200 {
        return 0;
    }
    serde_json::from_str::<Value>(&body).unwrap()["ok"]["have"]
        .as_u64()
        .unwrap_or(0)
}

/// PROTOCOL §4.3/§5.3 (v2) between real nodes and a real relay: two consumers fetch the same
/// blob from an origin on a capped uplink. The first announces itself as a partial mirror when
/// it starts; the second, started once the first holds part of the blob, finds that
/// announcement and takes the first one's verified pieces from it, so the origin sends less
/// than two copies; both blobs verify, and once complete the first re-announces without
/// `partial`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_at_once_share_the_blob_through_a_partial_mirror() {
    let (relay, _db) = start_relay().await;
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = home_with_relay(dir.path(), "origin", Some(&url));
    // A home uplink: the origin sends 4 MiB/s in all.
    let mut cfg = std::fs::read_to_string(o.join("config.toml")).unwrap();
    cfg.push_str("upload_rate_bytes_per_sec = 4194304\n");
    std::fs::write(o.join("config.toml"), cfg).unwrap();
    let a = home_with_relay(dir.path(), "consumer-a", Some(&url));
    let b = home_with_relay(dir.path(), "consumer-b", Some(&url));
    let data = test_bytes("partial-mirrors", 24 << 20);
    let size = data.len().to_string();
    let (_origin, hash, o_addr) = origin_serving(&o, &data).await;
    let _node_a = start_node(&a).await;
    let _node_b = start_node(&b).await;
    let (a_addr, b_addr) = (node_addr(&a).await, node_addr(&b).await);
    let get = |home: PathBuf, out: PathBuf| {
        let (hash, o_addr, size) = (hash.clone(), o_addr.clone(), size.clone());
        tokio::spawn(async move {
            cli_json(
                &home,
                &[
                    "blob",
                    "get",
                    &hash,
                    "--from",
                    &o_addr,
                    "--size",
                    &size,
                    "--find-mirrors",
                    "--mirror",
                    "--out",
                    out.to_str().unwrap(),
                    "--json",
                ],
            )
            .await
        })
    };
    let (out_a, out_b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    let fetch_a = get(a.clone(), out_a.clone());
    // B starts once A holds a few MiB (A is then announced as a partial mirror).
    let a_held = tokio::task::spawn_blocking({
        let (a, hash) = (a.clone(), hash.clone());
        move || {
            // A safety net, not a timing bound.
            for _ in 0..60_000 {
                let have = have_bytes(&a, &hash);
                if have >= 4 << 20 {
                    return have;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            0
        }
    })
    .await
    .unwrap();
    assert!(a_held > 0, "A never received its first MiBs");
    let fetch_b = get(b.clone(), out_b.clone());
    let (got_a, got_b) = (fetch_a.await.unwrap(), fetch_b.await.unwrap());
    eprintln!("A: {}\nB: {}", got_a["report"], got_b["report"]);
    assert_eq!(std::fs::read(&out_a).unwrap(), data, "A's blob verifies");
    assert_eq!(std::fs::read(&out_b).unwrap(), data, "B's blob verifies");
    let b_from_a = bytes_from(&got_b["report"], endpoint_of(&a_addr));
    let a_from_b = bytes_from(&got_a["report"], endpoint_of(&b_addr));
    assert!(
        b_from_a > 0,
        "B took pieces from A, a partial mirror when B started: {}",
        got_b["report"]
    );
    let from_origin = bytes_from(&got_a["report"], endpoint_of(&o_addr))
        + bytes_from(&got_b["report"], endpoint_of(&o_addr));
    eprintln!(
        "origin sent {from_origin} bytes for two copies of {} ({:.2} copies); B from A {b_from_a}, A from B {a_from_b}",
        data.len(),
        from_origin as f64 / data.len() as f64
    );
    assert!(
        from_origin < 2 * data.len() as u64,
        "the origin sent less than two copies"
    );
    for r in [&got_a, &got_b] {
        assert!(
            r["report"]["bad_sources"].as_array().unwrap().is_empty(),
            "{r}"
        );
    }
    // Complete now: A's announcement on the relay is the complete one.
    let pool = archy_relays::RelayPool::connect([url.as_str()], Default::default())
        .await
        .unwrap();
    let found = pool
        .fetch(archy_marketplace::events::mirror_filter(&hash), None)
        .await
        .unwrap();
    let a_endpoint = endpoint_of(&a_addr);
    let offers: Vec<_> = found
        .iter()
        .filter_map(|e| archy_marketplace::events::parse_mirror_event(e, &hash).ok())
        .filter(|o| o.announcement.endpoint == a_endpoint)
        .collect();
    assert_eq!(offers.len(), 1, "one announcement of A's (replaceable)");
    assert!(!offers[0].announcement.partial, "re-announced as complete");
    pool.shutdown().await;
}
