//! A node killed with SIGKILL comes back and converges: during a blob fetch (the fetch resumes
//! and the bytes are exactly the signed hash) and during an app install (the app ends up
//! running once, in one container).

use archy_tests::cli::{api_post, archy, archy_json, build_hello_web, have_tool, repo, NodeProc};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn have(home: &Path, hash: &str) -> Value {
    let (code, body) = api_post(
        home,
        true,
        &format!(r#"{{"method":"blob_have","params":{{"hash":"{hash}"}}}}"#),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["ok"].clone()
}

#[test]
fn sigkill_during_a_fetch_resumes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = (dir.path().join("p"), dir.path().join("c"));
    for h in [&p, &c] {
        std::fs::create_dir_all(h).unwrap();
        std::fs::write(h.join("config.toml"), "[relays]\nembedded = true\n").unwrap();
    }
    // 256 MiB of random bytes: large enough that the kill lands mid-transfer.
    let file = dir.path().join("big.bin");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 268435456 /dev/urandom > {}",
            file.display()
        ))
        .status()
        .unwrap();
    assert!(ok.success());
    let pn = NodeProc::start(&p).unwrap();
    let added = archy_json(&p, &["blob", "add", file.to_str().unwrap(), "--json"]);
    let (hash, size) = (
        added["hash"].as_str().unwrap().to_owned(),
        added["size"].as_u64().unwrap(),
    );
    let from = archy_json(&p, &["node", "status", "--json"])["swarm"].clone();
    let from = format!(
        "{}@{}",
        from["endpoint"].as_str().unwrap(),
        from["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(",")
    );

    let mut cn = NodeProc::start(&c).unwrap();
    let size_s = size.to_string();
    let mut get = Command::new(archy_tests::cli::archy_bin())
        .args([
            "--home",
            c.to_str().unwrap(),
            "blob",
            "get",
            &hash,
            "--from",
            &from,
            "--size",
            &size_s,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the consumer node as soon as part of the blob has arrived (verified bytes on disk).
    let mut killed_at = None;
    for _ in 0..2000 {
        let h = have(&c, &hash);
        let n = h["have"].as_u64().unwrap_or(0);
        if n > 0 && h["complete"] != true {
            cn.kill();
            killed_at = Some(n);
            break;
        }
        if h["complete"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = get.wait();
    if killed_at.is_none() {
        cn.kill();
        eprintln!(
            "note: the fetch completed before the kill landed; checking a clean restart only"
        );
    }

    // Back up: the same request completes, resuming what was verified before the kill.
    let cn = NodeProc::start(&c).unwrap();
    let out = dir.path().join("out.bin");
    let report = archy_json(
        &c,
        &[
            "blob",
            "get",
            &hash,
            "--from",
            &from,
            "--size",
            &size_s,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len() as u64, size);
    assert_eq!(
        blake3::hash(&got).to_hex().to_string(),
        hash,
        "the restarted fetch must give exactly the signed bytes"
    );
    if let Some(before) = killed_at {
        let transferred: u64 = report["report"]["bytes_per_source"]
            .as_array()
            .or(report["bytes_per_source"].as_array())
            .map(|a| a.iter().map(|s| s[1].as_u64().unwrap_or(0)).sum())
            .unwrap_or(size);
        assert!(
            transferred <= size - before + 16 * 1024 * 1024,
            "resumed: {before} bytes were kept, then {transferred} moved ({report})"
        );
    }
    drop((pn, cn));
}

#[test]
fn sigkill_during_an_install_converges_after_restart() {
    let podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_tool(podman, "Podman (tests/setup/podman.sh)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = (dir.path().join("p"), dir.path().join("c"));
    let tag = format!("crash{}", std::process::id());
    build_hello_web(&tag);
    std::fs::create_dir_all(&p).unwrap();
    let pn = NodeProc::start(&p).unwrap();
    let relay = pn.relay_url();
    let npub = archy_json(&p, &["id", "show", "--json"])["npub"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = 20_000 + (std::process::id() % 9_000) as u16 + 7;
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        std::fs::read_to_string(repo().join("apps/hello-web/manifest.yaml"))
            .unwrap()
            .replace("host: 18080", &format!("host: {port}"))
            .replace("id: hello-web", &format!("id: {tag}")),
    )
    .unwrap();
    let image = format!("localhost/archy/hello-web:{tag}");
    let out = archy_json(
        &p,
        &[
            "app",
            "publish",
            manifest.to_str().unwrap(),
            "--image",
            &image,
            "--json",
        ],
    );
    assert_eq!(out["accepted"], 1);

    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("config.toml"),
        format!(
            "[relays]\nembedded = false\nurls = [\"{relay}\"]\n\n[trust]\nanchors = [\"{npub}\"]\n"
        ),
    )
    .unwrap();
    let mut cn = NodeProc::start(&c).unwrap();
    assert!(archy(&c, &["market", "sync"]).status.success());
    let mut install = Command::new(archy_tests::cli::archy_bin())
        .args(["--home", c.to_str().unwrap(), "apps", "install", &tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the node once the install is under way: the intent is committed, or the image is in.
    for _ in 0..3000 {
        let state = std::fs::metadata(c.join("apps")).is_ok()
            || std::fs::metadata(c.join("swarm/blobs")).is_ok();
        if state {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    cn.kill();
    let _ = install.wait();

    // Back up: whatever the kill interrupted, installing again converges to one running app.
    let cn = NodeProc::start(&c).unwrap();
    let out = archy_json(&c, &["apps", "install", &tag, "--json"]);
    assert_eq!(out["outcome"]["result"], "running", "{out}\n{}", cn.log());
    let list = archy_json(&c, &["apps", "list", "--json"]);
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["app"] == tag.as_str())
            .count(),
        1,
        "{list}"
    );
    let names = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&names.stdout)
        .lines()
        .filter(|l| *l == format!("archy_{tag}"))
        .count();
    assert_eq!(n, 1, "exactly one container for the app");
    let body = Command::new("curl")
        .args(["-fsS", "-m", "10", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&body.stdout).contains("Hello from Archy"));
    assert!(archy(&c, &["apps", "uninstall", "--purge", &tag])
        .status
        .success());
    drop((pn, cn));
}
