//! Golden `--json` outputs: every command that prints JSON runs once in one scenario (a
//! publisher node P with a real relay and a real image, a consumer C that discovers, scores,
//! installs, fetches blobs and audits), and its output's *shape* is compared with
//! `tests/golden/<command>.json`.
//!
//! The shape keeps every key, every type, every stable string (states, tiers, reason codes,
//! versions) and every boolean; it masks what differs between runs (keys, DIDs, hashes, paths,
//! addresses, numbers, a relay connection's state) and sorts arrays. So a refactor that renames, drops, re-nests or
//! re-types a field fails here, and a change in behaviour is left to the tests that assert it.
//!
//! `ARCHY_BLESS=1 cargo test -p archy-tests --test golden` rewrites the files; a diff of them in
//! a commit is then a deliberate change of the CLI's JSON, to be listed in its note.

use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig};
use archy_tests::cli::{archy, archy_json, build_hello_web, have_tool, repo, NodeProc};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn podman_ready() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A per-run app id, masked as `<app>` in the shapes.
fn app_id() -> String {
    format!("golden-{}", std::process::id())
}

/// The shape of a JSON value (see the file's doc).
fn shape(v: &Value, app: &str) -> Value {
    match v {
        Value::Null | Value::Bool(_) => v.clone(),
        Value::Number(_) => Value::String("<number>".into()),
        Value::String(s) => Value::String(mask(s, app)),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|i| shape(i, app)).collect();
            items.sort_by_key(|i| i.to_string());
            items.dedup();
            Value::Array(items)
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            // A relay's health is the state of a connection at that instant (connecting,
            // connected, a probe's round trip or none): its keys are the interface, not its values.
            let health = map.contains_key("url") && map.contains_key("rtt_ms");
            for k in keys {
                if health && ["connected", "status", "rtt_ms", "last_error"].contains(&k.as_str()) {
                    out.insert(k.clone(), Value::String("<connection state>".into()));
                    continue;
                }
                // Keys that are themselves data (a hash, a DID, an app id) are masked too.
                out.insert(mask(k, app), shape(&map[k], app));
            }
            Value::Object(out)
        }
    }
}

fn mask(s: &str, app: &str) -> String {
    let s = s.replace(app, "<app>");
    let hexlike = |t: &str| t.len() >= 16 && t.chars().all(|c| c.is_ascii_hexdigit());
    if s.starts_with("did:") {
        return "<did>".into();
    } else if s.starts_with("npub1") {
        return "<npub>".into();
    } else if s.starts_with("nsec1") {
        return "<nsec>".into();
    } else if s.starts_with("sha256:") {
        return "<image-id>".into();
    } else if hexlike(&s) {
        return "<hex>".into();
    } else if s.starts_with('/') {
        return "<path>".into();
    } else if s.starts_with("ws://") || s.starts_with("wss://") || s.starts_with("http") {
        return "<url>".into();
    }
    // Ids inside a text ("kept 5a75dcf17fae", "node-7b68fd9ceddb3ab4"): a run of 12 or more hex
    // characters with a digit in it.
    let s = mask_hex_runs(&s);
    let digits = s
        .as_bytes()
        .windows(3)
        .any(|w| w.iter().all(u8::is_ascii_digit));
    if digits || (s.len() > 40 && !s.contains(' ')) {
        "<opaque>".into()
    } else {
        s
    }
}

fn mask_hex_runs(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 12 && run.chars().any(|c| c.is_ascii_digit()) {
            out.push_str("<hex>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The golden files' folder.
fn golden_dir() -> PathBuf {
    repo().join("tests/golden")
}

/// Compares (or, with ARCHY_BLESS=1, writes) the shape of one command's output.
struct Golden {
    bless: bool,
    app: String,
    diffs: Vec<String>,
    seen: Vec<String>,
}

impl Golden {
    fn check(&mut self, name: &str, v: &Value) {
        let got = serde_json::to_string_pretty(&shape(v, &self.app)).unwrap() + "\n";
        let path = golden_dir().join(format!("{name}.json"));
        self.seen.push(format!("{name}.json"));
        if self.bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, got).unwrap();
            return;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == got => {}
            Ok(want) => self.diffs.push(format!(
                "{name}: the shape changed\n--- {}\n{want}\n+++ now\n{got}",
                path.display()
            )),
            Err(e) => self.diffs.push(format!(
                "{name}: no golden file {} ({e}); bless with ARCHY_BLESS=1",
                path.display()
            )),
        }
    }

    /// Runs `archy --home h ARGS` (which must succeed and print JSON) and checks it as `name`.
    fn run(&mut self, name: &str, h: &Path, args: &[&str]) -> Value {
        let v = archy_json(h, args);
        self.check(name, &v);
        v
    }

    /// Runs a command that prints JSON and may exit 1 (a listing that flags something); its
    /// output is returned unchecked, for the caller to narrow first.
    fn run_unchecked(&self, h: &Path, args: &[&str]) -> Value {
        let out = archy(h, args);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "archy {args:?} printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        v
    }

    fn finish(self) {
        if self.bless {
            return;
        }
        // A golden file no command produced any more is a dropped command.
        let mut stale = Vec::new();
        for e in std::fs::read_dir(golden_dir()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !self.seen.contains(&name) {
                stale.push(name);
            }
        }
        assert!(
            self.diffs.is_empty() && stale.is_empty(),
            "{}\nnot produced any more: {stale:?}",
            self.diffs.join("\n")
        );
    }
}

fn write_config(home: &Path, relay: &str, extra: &str) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!("[relays]\nembedded = false\nurls = [\"{relay}\"]\n\n{extra}"),
    )
    .unwrap();
}

fn write_manifest(dir: &Path, port: u16) -> String {
    let text = std::fs::read_to_string(repo().join("apps/hello-web/manifest.yaml"))
        .unwrap()
        .replace("id: hello-web", &format!("id: {}", app_id()))
        .replace("host: 18080", &format!("host: {port}"));
    let path = dir.join("golden.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_output_keeps_its_shape() {
    if !have_tool(podman_ready(), "Podman (tests/setup/deps.sh)") {
        return;
    }
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_string();
    blocking(move || scenario(&url)).await;
    relay.shutdown().await;
}

fn scenario(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = (dir.path().join("p"), dir.path().join("c"));
    let mut g = Golden {
        bless: std::env::var_os("ARCHY_BLESS").is_some(),
        app: app_id(),
        diffs: Vec::new(),
        seen: Vec::new(),
    };
    let port = 21_000 + (std::process::id() % 9_000) as u16;
    let image = build_hello_web(&format!("golden{}", std::process::id()));
    let app = app_id();

    // The publisher: identity, config, a manifest checked, signed, verified, published.
    write_config(&p, url, "");
    let id = g.run("id-new", &p, &["id", "new", "--json"]);
    let npub = id["npub"].as_str().unwrap().to_owned();
    g.run("id-show", &p, &["id", "show", "--json"]);
    g.run("config-show", &p, &["config", "show", "--json"]);
    g.run("node-status-offline", &p, &["node", "status", "--json"]);
    let manifest = write_manifest(dir.path(), port);
    g.run(
        "app-validate",
        &p,
        &["app", "validate", &manifest, "--json"],
    );
    let signed = dir.path().join("signed.json");
    let out = archy(
        &p,
        &["app", "sign", &manifest, "--out", signed.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let envelope: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    g.check("app-sign", &envelope);
    g.run(
        "app-verify",
        &p,
        &["app", "verify", signed.to_str().unwrap(), "--json"],
    );
    let mut pn = NodeProc::start(&p).unwrap();
    g.run("node-status", &p, &["node", "status", "--json"]);
    let published = g.run(
        "app-publish",
        &p,
        &["app", "publish", &manifest, "--image", &image, "--json"],
    );
    assert_eq!(published["accepted"], 1, "{published}");
    let file = dir.path().join("blob.txt");
    std::fs::write(&file, "golden blob\n").unwrap();
    let added = g.run(
        "blob-add",
        &p,
        &["blob", "add", file.to_str().unwrap(), "--json"],
    );
    let hash = added["hash"].as_str().unwrap().to_owned();
    g.run("blob-ls", &p, &["blob", "ls", "--json"]);
    // With a node running, `blob serve` prints its address.
    let out = archy(&p, &["blob", "serve"]);
    assert!(out.status.success(), "{out:?}");
    let from = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // The consumer, in-process (no node): discover, look, score, install, fetch, audit.
    write_config(&c, url, "");
    archy_json(&c, &["id", "new", "--json"]);
    g.run("market-sync", &c, &["market", "sync", "--json"]);
    g.run(
        "market-search",
        &c,
        &["market", "search", "golden", "--json"],
    );
    g.run("market-show", &c, &["market", "show", &app, "--json"]);
    g.run("market-rejected", &c, &["market", "rejected", "--json"]);
    g.run("trust-show", &c, &["trust", "show", &npub, "--json"]);
    g.run("trust-block", &c, &["trust", "block", &npub, "--json"]);
    g.run("trust-unblock", &c, &["trust", "unblock", &npub, "--json"]);
    g.run(
        "trust-anchor-add",
        &c,
        &["trust", "anchor", "add", &npub, "--json"],
    );
    g.run("trust-refresh", &c, &["trust", "refresh", "--json"]);
    let inst = g.run("apps-install", &c, &["apps", "install", &app, "--json"]);
    assert_eq!(inst["outcome"]["result"], "running", "{inst}");
    g.run("apps-list", &c, &["apps", "list", "--json"]);
    g.run("apps-update", &c, &["apps", "update", &app, "--json"]);
    g.run("apps-reconcile", &c, &["apps", "reconcile", "--json"]);
    // Other tests' objects may share this Podman, so the audit may flag something (exit 1);
    // only this scenario's objects are compared.
    let mut audit = g.run_unchecked(&c, &["apps", "audit", "--json"]);
    if let Some(objects) = audit["objects"].as_array_mut() {
        objects.retain(|o| o["app"] == app.as_str());
    }
    g.check("apps-audit", &audit);
    assert!(archy(&c, &["apps", "uninstall", "--purge", &app])
        .status
        .success());
    g.run(
        "trust-anchor-rm",
        &c,
        &["trust", "anchor", "rm", &npub, "--json"],
    );
    g.run(
        "blob-get",
        &c,
        &["blob", "get", &hash, "--from", &from, "--json"],
    );
    pn.stop();
    g.finish();
}
