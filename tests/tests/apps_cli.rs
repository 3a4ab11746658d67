//! `archy apps …` against real Podman, rootless as the unprivileged user `archy` (set up by
//! tests/setup/podman.sh): install from a local manifest, list, stop/start, restart, logs,
//! uninstall keeping data, purge, and `app render --quadlet`.

use archy_tests::cli::{
    archy, archy_json, have_tool, repo, rootless_podman, ROOTLESS_PREFIX as PREFIX,
};
use std::path::Path;
use std::process::Command;

fn podman_ready() -> bool {
    Command::new("id")
        .arg("archy")
        .output()
        .is_ok_and(|o| o.status.success())
        && rootless_podman(&["image", "exists", "localhost/archy/busybox:latest"])
            .status
            .success()
}

/// Writes `<dir>/<id>.yaml`: a v1 manifest for the rootless busybox test image, with `rest`
/// (YAML lines) after its required fields.
fn write_busybox_manifest(dir: &Path, id: &str, rest: &str) -> String {
    let image_id = String::from_utf8(
        rootless_podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "localhost/archy/busybox:latest",
        ])
        .stdout,
    )
    .unwrap();
    let text = format!(
        r#"schema: archy.app/v1
id: {id}
version: 1.0.0
name: CLI test
summary: apps CLI test
origin: {{endpoint: "{zero}", addrs: []}}
image:
  name: localhost/archy/busybox:latest
  id: "sha256:{image_id}"
  archive: {{blake3: "{zero}", size: 0, format: oci-archive}}
{rest}"#,
        zero = "0".repeat(64),
        image_id = image_id.trim()
    );
    let path = dir.join(format!("{id}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A manifest for the busybox test image, on a given host port, with a volume.
fn write_manifest(dir: &Path, id: &str, port: u16) -> String {
    write_busybox_manifest(
        dir,
        id,
        &format!(
            r#"command: ["/bin/busybox", "sh", "-c", "mkdir -p /data/www && echo hello > /data/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /data/www"]
ports: [{{container: 8080, host: {port}}}]
volumes: [{{name: data, target: /data}}]
generated_secrets: [{{name: token, kind: hex32, env: APP_TOKEN}}]
health_check: {{type: http, port: 8080, path: /, interval_s: 1, timeout_s: 2, retries: 20}}
stop_grace_secs: 3
"#
        ),
    )
}

#[test]
fn apps_lifecycle_through_the_cli_rootless() {
    if !have_tool(
        podman_ready(),
        "rootless Podman for user archy (tests/setup/podman.sh)",
    ) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(
        h.join("config.toml"),
        format!("[apps]\npodman_prefix = {PREFIX}\n"),
    )
    .unwrap();
    let app = format!("cli-{}", std::process::id());
    let port = 20_000 + (std::process::id() % 10_000) as u16;
    let manifest = write_manifest(h, &app, port);

    // A policy violation never reaches Podman.
    let evil = h.join("evil.yaml");
    std::fs::write(
        &evil,
        std::fs::read_to_string(&manifest).unwrap() + "privileged: true\n",
    )
    .unwrap();
    let out = archy(h, &["apps", "install", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("privileged"),
        "{out:?}"
    );

    let out = archy_json(h, &["apps", "install", &manifest, "--json"]);
    assert_eq!(out["result"], "running", "{out}");
    let body = Command::new("busybox")
        .args(["wget", "-qO-", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&body.stdout).trim(), "hello");

    let list = archy_json(h, &["apps", "list", "--json"]);
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["state"], "running");
    // The container runs rootless: it is in archy's store, not root's.
    assert!(
        rootless_podman(&["container", "exists", &format!("archy_{app}")])
            .status
            .success()
            || rootless_podman(&["ps", "-a", "--format", "{{.Names}}"])
                .stdout
                .windows(app.len())
                .any(|w| w == app.as_bytes())
    );

    assert!(archy(h, &["apps", "stop", &app]).status.success());
    let list = archy_json(h, &["apps", "list", "--json"]);
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["intent"], "stopped");
    assert_ne!(me["state"], "running");
    // A reconcile pass does not start what the user stopped.
    assert!(archy(h, &["apps", "reconcile"]).status.success());
    let list = archy_json(h, &["apps", "list", "--json"]);
    assert_ne!(
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["app"] == app.as_str())
            .unwrap()["state"],
        "running"
    );
    assert!(archy(h, &["apps", "start", &app]).status.success());
    assert!(archy(h, &["apps", "restart", &app]).status.success());
    assert!(archy(h, &["apps", "logs", &app]).status.success());

    // The generated secret never shows in the CLI's output.
    let secret_dir = h.join("apps/secrets").join(&app);
    let secrets: Vec<String> = std::fs::read_dir(&secret_dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !secrets.is_empty(),
        "no secret file in {}",
        secret_dir.display()
    );
    let listing =
        String::from_utf8_lossy(&archy(h, &["apps", "list", "--json"]).stdout).into_owned();
    for s in &secrets {
        assert!(!listing.contains(s.trim()));
    }

    // Uninstall keeps the volume; purge removes it.
    assert!(archy(h, &["apps", "uninstall", &app]).status.success());
    let volume = format!("archy_{app}_data");
    assert!(
        rootless_podman(&["volume", "exists", &volume])
            .status
            .success(),
        "uninstall must keep {volume}"
    );
    let out = archy_json(h, &["apps", "install", &manifest, "--json"]);
    assert_eq!(out["result"], "running", "{out}");
    assert!(archy(h, &["apps", "uninstall", "--purge", &app])
        .status
        .success());
    assert!(
        !rootless_podman(&["volume", "exists", &volume])
            .status
            .success(),
        "purge must remove {volume}"
    );
}

#[test]
fn render_quadlet_from_a_manifest() {
    let home = tempfile::tempdir().unwrap();
    let out = archy(
        home.path(),
        &[
            "app",
            "render",
            "--quadlet",
            repo().join("apps/notes/manifest.yaml").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let unit = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "[Container]",
        "Image=",
        "PublishPort=127.0.0.1:18081:8080",
        "DropCapability=all",
        "NoNewPrivileges=true",
        "ReadOnly=true",
    ] {
        assert!(unit.contains(needle), "missing {needle} in:\n{unit}");
    }
}

/// A manifest with one volume and one generated secret whose names are given; the app writes
/// nothing itself and keeps running.
fn write_quiet_manifest(dir: &Path, id: &str, volume: &str, secret: &str) -> String {
    write_busybox_manifest(
        dir,
        id,
        &format!(
            r#"command: ["/bin/busybox", "sleep", "100000"]
volumes: [{{name: {volume}, target: /data}}]
generated_secrets: [{{name: {secret}, kind: hex32, env: APP_TOKEN}}]
stop_grace_secs: 1
"#
        ),
    )
}

fn exec_in(app: &str, script: &str) -> String {
    let out = rootless_podman(&["exec", &format!("archy_{app}"), "sh", "-c", script]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Issue 13's reproduction, through `archy apps install FILE` as a user runs it: app `X` with
/// volume `bar-data` and secret `bar-key`, app `X-bar` with volume `data` and secret `key`
/// (the old names gave both one Podman volume and one secret). Installed in either order, each
/// app sees only its own data and its own secret, and `apps audit` finds every object owned.
#[test]
fn two_apps_whose_old_names_collided_stay_apart_through_the_cli() {
    if !have_tool(
        podman_ready(),
        "rootless Podman for user archy (tests/setup/podman.sh)",
    ) {
        return;
    }
    for (round, short_first) in [(0, true), (1, false)] {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::write(
            h.join("config.toml"),
            format!("[apps]\npodman_prefix = {PREFIX}\n"),
        )
        .unwrap();
        let short = format!("iso{round}-{}", std::process::id());
        let long = format!("{short}-bar");
        let a = write_quiet_manifest(h, &short, "bar-data", "bar-key");
        let b = write_quiet_manifest(h, &long, "data", "key");
        let order = if short_first {
            [(&a, &short), (&b, &long)]
        } else {
            [(&b, &long), (&a, &short)]
        };
        for (manifest, app) in order {
            let out = archy_json(h, &["apps", "install", manifest, "--json"]);
            assert_eq!(out["result"], "running", "{out}");
            exec_in(app, &format!("echo {app} > /data/owner"));
        }
        for app in [&short, &long] {
            assert_eq!(
                exec_in(app, "ls /data"),
                "owner",
                "{app} sees only its own files"
            );
            assert_eq!(exec_in(app, "cat /data/owner"), *app);
        }
        let (ta, tb) = (
            exec_in(&short, "echo $APP_TOKEN"),
            exec_in(&long, "echo $APP_TOKEN"),
        );
        assert_eq!((ta.len(), tb.len()), (64, 64));
        assert_ne!(ta, tb, "each app has its own generated secret");

        let out = archy(h, &["apps", "audit", "--json"]);
        let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mine: Vec<&serde_json::Value> = audit["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["app"] == short.as_str() || o["app"] == long.as_str())
            .collect();
        assert_eq!(
            mine.len(),
            6,
            "2 containers, 2 volumes, 2 secrets: {mine:?}"
        );
        assert!(mine.iter().all(|o| o["status"] == "owned"), "{mine:?}");
        for app in [&short, &long] {
            assert!(archy(h, &["apps", "uninstall", "--purge", app])
                .status
                .success());
        }
    }
}
