//! A committed v1 release still installs (issue 15): `tests/vectors/v1/release.json` is a
//! signed release event of schema `archy.app/v1` whose image is one archive
//! (`tests/vectors/v1/image.tar`, a static 1 KB program, `tiny.c`). Made once by the ignored
//! `regenerate` test; any node of any later version must keep accepting and installing it.
//! The archive is put in the consumer's store first (so no origin is needed), the event goes to
//! a real relay, and the node discovers, checks and installs it under rootless Podman.

use archy_marketplace::home::Home;
use archy_marketplace::identity::Identity;
use archy_relays::{PoolConfig, RelayPool};
use archy_tests::cli::{
    archy_async as cli, archy_json_async as cli_json, embedded_relay, have_tool, repo,
    rootless_podman, NodeProc, ROOTLESS_PREFIX,
};
use nostr_sdk::prelude::{Event, JsonUtil};
use std::path::PathBuf;
use std::process::Command;

fn vectors() -> PathBuf {
    repo().join("tests/vectors/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_v1_release_still_installs() {
    let podman = rootless_podman(&["info", "--format", "{{.Host.Arch}}"]);
    if !have_tool(
        podman.status.success(),
        "rootless podman (tests/setup/podman.sh)",
    ) {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIPPED: the committed image is an x86_64 program");
        return;
    }
    let event =
        Event::from_json(std::fs::read_to_string(vectors().join("release.json")).unwrap()).unwrap();
    let (relay, _db) = embedded_relay().await;
    let pool = RelayPool::connect([relay.url().as_str()], PoolConfig::default())
        .await
        .unwrap();
    assert_eq!(pool.publish(&event).await.unwrap().accepted, 1);
    pool.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("consumer");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("config.toml"),
        format!("[relays]\nembedded = false\nurls = [{:?}]\n\n[apps]\npodman_prefix = {ROOTLESS_PREFIX}\n", relay.url().to_string()),
    )
    .unwrap();
    let archive = vectors().join("image.tar");
    let added = cli_json(&c, &["blob", "add", archive.to_str().unwrap(), "--json"]).await;
    let h = c.clone();
    let node = tokio::task::spawn_blocking(move || NodeProc::start(&h).unwrap())
        .await
        .unwrap();
    // The node syncs at start; a pass more does no harm.
    let mut show = serde_json::Value::Null;
    for _ in 0..100 {
        cli(&c, &["market", "sync"]).await;
        let out = cli(&c, &["market", "show", "tiny-v1", "--json"]).await;
        if out.status.success() {
            show = serde_json::from_slice(&out.stdout).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let m = &show["latest_manifest"];
    assert_eq!(m["schema"], "archy.app/v1", "{m}");
    assert_eq!(m["image"]["archive"]["blake3"], added["hash"], "{m}");
    let inst = cli_json(&c, &["apps", "install", "tiny-v1", "--confirm", "--json"]).await;
    assert_eq!(
        inst["outcome"]["result"],
        "running",
        "{inst}\n{}",
        node.log()
    );
    assert_eq!(
        inst["fetch"]["source"], "already in the local store",
        "{inst}"
    );
    let out = cli(&c, &["apps", "uninstall", "--purge", "tiny-v1"]).await;
    assert!(out.status.success(), "{out:?}");
    drop(node);
    relay.shutdown().await;
}

/// Makes the vector again (a new key and event: the committed one is what later versions must
/// accept, so regenerate only deliberately): `cargo test --test v1_vector -- --ignored`.
#[tokio::test]
#[ignore]
async fn regenerate() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("root/tiny");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("gcc")
        .args(["-static", "-nostdlib", "-Os", "-s", "-o"])
        .arg(&bin)
        .arg(vectors().join("tiny.c")));
    let tar = dir.path().join("rootfs.tar");
    ok(Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-C",
        ])
        .arg(dir.path().join("root"))
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let name = "localhost/archy/tiny:1.0.0";
    ok(Command::new("podman")
        .args(["import", "--change", "CMD [\"/tiny\"]"])
        .arg(&tar)
        .arg(name));
    let id = String::from_utf8(
        Command::new("podman")
            .args(["image", "inspect", "--format", "{{.Id}}", name])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let archive = vectors().join("image.tar");
    let out = std::fs::File::create(&archive).unwrap();
    ok(Command::new("podman")
        .args(["save", "--format", "oci-archive", name])
        .stdout(out));
    let bytes = std::fs::read(&archive).unwrap();
    let home = Home::at(dir.path().join("home"));
    home.ensure().unwrap();
    let identity = Identity::create(&home).unwrap();
    let mut manifest = archy_marketplace::manifest::parse(&format!(
        r#"{{"schema": "archy.app/v1", "id": "tiny-v1", "version": "1.0.0", "name": "Tiny v1",
        "summary": "A committed v1 release: every later node must still install it.",
        "origin": {{"endpoint": "{endpoint}", "addrs": []}},
        "image": {{"name": "{name}", "id": "sha256:{id}",
                  "archive": {{"blake3": "{b3}", "size": {size}, "format": "oci-archive"}}}},
        "command": ["/tiny"], "stop_grace_secs": 1}}"#,
        endpoint = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
        id = id.trim(),
        b3 = blake3::hash(&bytes).to_hex(),
        size = bytes.len(),
    ))
    .unwrap();
    archy_marketplace::envelope::fill_publisher(
        &mut manifest,
        &identity,
        archy_marketplace::unix_now(),
    )
    .unwrap();
    let env = archy_marketplace::envelope::sign(manifest, &identity);
    let event =
        archy_marketplace::release::build_release_event(&env, identity.nostr_keys()).unwrap();
    std::fs::write(vectors().join("release.json"), event.as_json()).unwrap();
    let _ = Command::new("podman").args(["rmi", name]).status();
}
