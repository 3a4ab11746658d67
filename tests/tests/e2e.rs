//! The whole flow with three real nodes (`archy node run` processes) and a real relay:
//! publisher P, consumers A and B.
//! - A (anchors P) installs from the origin; A mirrors and announces the image;
//! - the origin goes away; B (no anchors: P is unknown to it) is refused until it confirms,
//!   then installs from A's mirror;
//! - P publishes a new version, A updates; a version whose health check fails is rolled back;
//! - a consumer killed with SIGKILL during an install comes back and converges.
//!
//! All three share this machine's loopback, and an app's host port is fixed by its manifest,
//! so only one consumer runs the app at a time (the other stops it first). A runs apps with
//! rootful Podman, B rootless as the user `archy`: separate image stores, so each fetches the
//! image itself.

use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig};
use archy_tests::cli::{
    archy, archy_json, build_hello_web, have_tool, repo, rootless_podman, NodeProc, ROOTLESS_PREFIX,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn podman_ready() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("id")
            .arg("archy")
            .output()
            .is_ok_and(|o| o.status.success())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Names of the rootless user's containers whose name matches `name` exactly.
fn rootless_containers(name: &str) -> Vec<String> {
    let filter = format!("name=^{name}$");
    let out = rootless_podman(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn config(home: &Path, relay: &str, extra: &str) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[relays]\nembedded = false\nurls = [\"{relay}\"]\nsync_interval_secs = 2\n\n{extra}"
        ),
    )
    .unwrap();
}

/// A hello-web manifest at `version` using image `image`, optionally with a command that never
/// serves (so its health check fails).
fn manifest(dir: &Path, version: &str, port: u16, broken: bool) -> String {
    let mut text = std::fs::read_to_string(repo().join("apps/hello-web/manifest.yaml"))
        .unwrap()
        .replace("version: 1.0.0", &format!("version: {version}"))
        .replace("id: hello-web", &format!("id: {}", app_id()))
        .replace("host: 18080", &format!("host: {port}"))
        .replace("retries: 10", "retries: 5");
    if broken {
        text = text.replace(
            r#"command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]"#,
            r#"command: ["/bin/busybox", "sleep", "100000"]"#,
        );
    }
    let path = dir.join(format!("hello-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A per-run app id, so a run that died half-way leaves nothing that blocks the next one.
fn app_id() -> String {
    format!("e2e-{}", std::process::id())
}

fn get(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "-m", "10", &format!("http://127.0.0.1:{port}/")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for_release(home: &Path, version: &str) {
    for _ in 0..600 {
        let out = archy(home, &["market", "show", &app_id(), "--json"]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["app"]["latest"] == version {
                return;
            }
        }
        let _ = archy(home, &["market", "sync"]);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{version} never reached {}", home.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_install_mirror_update_rollback_and_confirm() {
    if !have_tool(
        podman_ready(),
        "Podman with the rootless user archy (tests/setup/podman.sh)",
    ) {
        return;
    }
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (p, a, b) = (
        dir.path().join("p"),
        dir.path().join("a"),
        dir.path().join("b"),
    );
    let port = 20_000 + (std::process::id() % 9_000) as u16;
    let tag = format!("e2e{}", std::process::id());
    let image = blocking(move || build_hello_web(&tag)).await;

    config(&p, &url, "");
    let p_id = blocking({
        let p = p.clone();
        move || archy_json(&p, &["id", "new", "--json"])
    })
    .await;
    let p_npub = p_id["npub"].as_str().unwrap().to_owned();
    config(
        &a,
        &url,
        &format!("[trust]\nanchors = [\"{p_npub}\"]\n\n[swarm]\nmirror = true\n"),
    );
    config(
        &b,
        &url,
        &format!("[apps]\npodman_prefix = {ROOTLESS_PREFIX}\n"),
    );
    let (mut pn, an, bn) = blocking({
        let (p, a, b) = (p.clone(), a.clone(), b.clone());
        move || {
            (
                NodeProc::start(&p).unwrap(),
                NodeProc::start(&a).unwrap(),
                NodeProc::start(&b).unwrap(),
            )
        }
    })
    .await;

    // P publishes 1.0.0 with its image; A installs it from the origin.
    let m1 = manifest(dir.path(), "1.0.0", port, false);
    let out = blocking({
        let (p, m1, image) = (p.clone(), m1.clone(), image.clone());
        move || archy_json(&p, &["app", "publish", &m1, "--image", &image, "--json"])
    })
    .await;
    assert_eq!(out["accepted"], 1, "{out}");
    blocking({
        let a = a.clone();
        move || wait_for_release(&a, "1.0.0")
    })
    .await;
    let inst = blocking({
        let a = a.clone();
        move || archy_json(&a, &["apps", "install", &app_id(), "--json"])
    })
    .await;
    assert_eq!(inst["outcome"]["result"], "running", "{inst}\n{}", an.log());
    assert_eq!(inst["tier"], "trusted", "{inst}");
    // Every byte came from the origin named in the signed manifest.
    let show = blocking({
        let a = a.clone();
        move || archy_json(&a, &["market", "show", &app_id(), "--json"])
    })
    .await;
    let origin = show["latest_manifest"]["origin"]["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let sources = inst["fetch"]["bytes_per_source"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(sources.len(), 1, "{inst}");
    assert_eq!(sources[0][0], origin.as_str(), "{inst}");
    assert!(sources[0][1].as_u64().unwrap() > 0);
    assert_eq!(inst["mirrored"], true, "{inst}");
    assert!(get(port).unwrap().contains("Hello from Archy"));

    // The origin goes away. A stops its copy (same host port); B, to which P is unknown, is
    // refused until it confirms, then installs from A's mirror.
    pn.stop();
    assert!(blocking({
        let a = a.clone();
        move || archy(&a, &["apps", "stop", &app_id()])
    })
    .await
    .status
    .success());
    blocking({
        let b = b.clone();
        move || wait_for_release(&b, "1.0.0")
    })
    .await;
    let refused = blocking({
        let b = b.clone();
        move || archy(&b, &["apps", "install", &app_id()])
    })
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--confirm"),
        "{refused:?}"
    );
    let inst = blocking({
        let b = b.clone();
        move || archy_json(&b, &["apps", "install", &app_id(), "--confirm", "--json"])
    })
    .await;
    assert_eq!(inst["outcome"]["result"], "running", "{inst}\n{}", bn.log());
    // Every byte came from A, the mirror (the origin is down).
    let a_status = blocking({
        let a = a.clone();
        move || archy_json(&a, &["node", "status", "--json"])
    })
    .await;
    let a_endpoint = a_status["swarm"]["endpoint"].as_str().unwrap().to_owned();
    let from: Vec<(String, u64)> = inst["fetch"]["bytes_per_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_str().unwrap().to_owned(), s[1].as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(from.len(), 1, "{inst}");
    assert_eq!(from[0].0, a_endpoint, "{inst}");
    assert!(get(port).unwrap().contains("Hello from Archy"));
    assert!(blocking({
        let b = b.clone();
        move || archy(&b, &["apps", "uninstall", &app_id()])
    })
    .await
    .status
    .success());

    // P comes back and publishes 1.1.0; A updates.
    pn = blocking({
        let p = p.clone();
        move || NodeProc::start(&p).unwrap()
    })
    .await;
    let m2 = manifest(dir.path(), "1.1.0", port, false);
    blocking({
        let (p, m2, image) = (p.clone(), m2.clone(), image.clone());
        move || archy_json(&p, &["app", "publish", &m2, "--image", &image, "--json"])
    })
    .await;
    blocking({
        let a = a.clone();
        move || wait_for_release(&a, "1.1.0")
    })
    .await;
    let up = blocking({
        let a = a.clone();
        move || archy_json(&a, &["apps", "update", &app_id(), "--json"])
    })
    .await;
    assert_eq!(up["outcome"]["result"], "running", "{up}");
    assert_eq!(up["version"], "1.1.0");
    assert!(get(port).is_some());

    // 1.2.0 never serves: its health check fails and A rolls back to 1.1.0.
    let m3 = manifest(dir.path(), "1.2.0", port, true);
    blocking({
        let (p, m3, image) = (p.clone(), m3.clone(), image.clone());
        move || archy_json(&p, &["app", "publish", &m3, "--image", &image, "--json"])
    })
    .await;
    blocking({
        let a = a.clone();
        move || wait_for_release(&a, "1.2.0")
    })
    .await;
    let up = blocking({
        let a = a.clone();
        move || archy(&a, &["apps", "update", &app_id(), "--json"])
    })
    .await;
    let v: Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(v["outcome"]["result"], "rolled-back", "{v}");
    assert_eq!(v["outcome"]["version"], "1.1.0");
    let list = blocking({
        let a = a.clone();
        move || archy_json(&a, &["apps", "list", "--json"])
    })
    .await;
    assert_eq!(list[0]["version"], "1.1.0", "{list}");
    assert!(get(port).is_some(), "the rolled-back app must answer");

    // Clean up the apps (the nodes stop when dropped).
    for home in [a.clone(), b.clone()] {
        blocking(move || archy(&home, &["apps", "uninstall", "--purge", &app_id()])).await;
    }
    drop((pn, an, bn));
    relay.shutdown().await;
}

/// With `[trust] auto_update = true`, a node applies a trusted publisher's new version by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_update_applies_a_trusted_publishers_new_version() {
    if !have_tool(
        podman_ready(),
        "Podman with the rootless user archy (tests/setup/podman.sh)",
    ) {
        return;
    }
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = (dir.path().join("p"), dir.path().join("c"));
    let port = 20_000 + (std::process::id() % 9_000) as u16 + 3;
    let tag = format!("auto{}", std::process::id());
    let app = format!("auto-{}", std::process::id());
    let image = blocking(move || build_hello_web(&tag)).await;
    config(&p, &url, "");
    let npub = blocking({
        let p = p.clone();
        move || archy_json(&p, &["id", "new", "--json"])
    })
    .await["npub"]
        .as_str()
        .unwrap()
        .to_owned();
    config(&c, &url, &format!("[trust]\nanchors = [\"{npub}\"]\nauto_update = true\n\n[apps]\npodman_prefix = {ROOTLESS_PREFIX}\n"));
    let (pn, cn) = blocking({
        let (p, c) = (p.clone(), c.clone());
        move || (NodeProc::start(&p).unwrap(), NodeProc::start(&c).unwrap())
    })
    .await;
    let publish = |version: &'static str| {
        let (p, image, dir, app) = (
            p.clone(),
            image.clone(),
            dir.path().to_path_buf(),
            app.clone(),
        );
        blocking(move || {
            let m = manifest(&dir, version, port, false);
            let text = std::fs::read_to_string(&m)
                .unwrap()
                .replace(&format!("id: {}", app_id()), &format!("id: {app}"));
            std::fs::write(&m, text).unwrap();
            archy_json(&p, &["app", "publish", &m, "--image", &image, "--json"])
        })
    };
    publish("1.0.0").await;
    let inst = blocking({
        let (c, app) = (c.clone(), app.clone());
        move || {
            for _ in 0..300 {
                let _ = archy(&c, &["market", "sync"]);
                if archy(&c, &["market", "show", &app]).status.success() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            archy_json(&c, &["apps", "install", &app, "--json"])
        }
    })
    .await;
    assert_eq!(inst["outcome"]["result"], "running", "{inst}");

    publish("1.1.0").await;
    // No command: the node's own loop (discovery → trust → auto-update) must move to 1.1.0.
    let version = blocking({
        let (c, app) = (c.clone(), app.clone());
        move || {
            for _ in 0..600 {
                let list = archy_json(&c, &["apps", "list", "--json"]);
                let v = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["app"] == app.as_str())
                    .map(|a| a["version"].clone());
                if v == Some(Value::from("1.1.0")) {
                    return "1.1.0".to_owned();
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            "never updated".to_owned()
        }
    })
    .await;
    assert_eq!(version, "1.1.0", "{}", cn.log());
    assert!(get(port).is_some());
    let removed = blocking({
        let (c, app) = (c.clone(), app.clone());
        move || archy(&c, &["apps", "uninstall", "--purge", &app])
    })
    .await;
    assert!(removed.status.success(), "{removed:?}");
    // Nothing may bring it back: the node's own loop keeps running after the uninstall.
    let name = format!("archy_{app}");
    let left = blocking(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        rootless_containers(&name)
    })
    .await;
    assert!(
        left.is_empty(),
        "container(s) left after uninstall: {left:?}\n{}",
        cn.log()
    );
    drop((pn, cn));
    relay.shutdown().await;
}
