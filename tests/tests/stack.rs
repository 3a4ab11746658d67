//! A multi-service app (PROTOCOL §2.2) through two real nodes and a real relay: the publisher
//! exports one image per service (`app publish --image SERVICE=IMAGE`), the consumer installs
//! the stack rootless, its web service reaches its database by name on the app's network, the
//! status lists both services, and a purge leaves nothing behind.

use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig};
use archy_tests::cli::{
    archy, archy_json, build_hello_web, have_tool, rootless_podman, NodeProc, ROOTLESS_PREFIX,
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

/// `db` serves a page from its volume on 5432, published nowhere (a tcp check probed inside
/// the app's network); `web` depends on it and serves hello-web's page on loopback.
fn stack_manifest(app: &str, port: u16) -> String {
    format!(
        r#"schema: archy.app/v2
id: {app}
version: 1.0.0
name: Stack test
summary: A web service and its database
origin: {{endpoint: "{zero}", addrs: []}}
generated_secrets:
  - {{name: db-password, kind: hex32}}
exports: [db]
services:
  - name: web
    depends_on: [db]
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{{container: 8080, host: {port}}}]
    secrets: [{{name: db-password, env: DB_PASSWORD}}]
    health_check: {{type: http, port: 8080, path: /, interval_s: 1, retries: 20}}
    stop_grace_secs: 2
  - name: db
    command: ["/bin/busybox", "sh", "-c", "mkdir -p /data/www && echo db-page > /data/www/index.html && exec /bin/busybox httpd -f -p 5432 -h /data/www"]
    volumes: [{{name: data, target: /data}}]
    secrets: [{{name: db-password, env: POSTGRES_PASSWORD}}]
    health_check: {{type: tcp, port: 5432, interval_s: 1, retries: 20}}
    stop_grace_secs: 2
"#,
        zero = "0".repeat(64)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_stack_installs_rootless_and_its_services_find_each_other() {
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
    let port = 20_000 + (std::process::id() % 9_000) as u16 + 5;
    let app = format!("stack-{}", std::process::id());
    let tag = format!("stack{}", std::process::id());
    let web_image = blocking(move || build_hello_web(&tag)).await;
    config(&p, &url, "");
    let npub = blocking({
        let p = p.clone();
        move || archy_json(&p, &["id", "new", "--json"])
    })
    .await["npub"]
        .as_str()
        .unwrap()
        .to_owned();
    config(
        &c,
        &url,
        &format!("[trust]\nanchors = [\"{npub}\"]\n\n[apps]\npodman_prefix = {ROOTLESS_PREFIX}\n"),
    );
    let (pn, cn) = blocking({
        let (p, c) = (p.clone(), c.clone());
        move || (NodeProc::start(&p).unwrap(), NodeProc::start(&c).unwrap())
    })
    .await;
    let manifest = dir.path().join("stack.yaml");
    std::fs::write(&manifest, stack_manifest(&app, port)).unwrap();
    let published = blocking({
        let (p, m, web) = (p.clone(), manifest.clone(), web_image.clone());
        move || {
            archy_json(
                &p,
                &[
                    "app",
                    "publish",
                    m.to_str().unwrap(),
                    "--image",
                    &format!("web={web}"),
                    "--image",
                    "db=localhost/archy/base:busybox",
                    "--json",
                ],
            )
        }
    })
    .await;
    let services: Vec<&str> = published["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["web", "db"], "{published}");

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
    assert_eq!(inst["outcome"]["result"], "running", "{inst}\n{}", cn.log());
    assert_eq!(inst["services"].as_array().map(Vec::len), Some(2), "{inst}");

    let list = blocking({
        let c = c.clone();
        move || archy_json(&c, &["apps", "list", "--json"])
    })
    .await;
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let states: Vec<(String, String)> = entry["services"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| (s["service"].to_string(), s["state"].to_string()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        states,
        [
            ("\"db\"".to_owned(), "\"running\"".to_owned()),
            ("\"web\"".to_owned(), "\"running\"".to_owned())
        ],
        "{entry}"
    );
    let page = Command::new("curl")
        .args(["-fsS", "-m", "10", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    assert!(page.status.success(), "{page:?}");
    let web = format!("archy_{app}_web");
    let reached = rootless_podman(&[
        "exec",
        &web,
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 db 5432",
    ]);
    assert!(
        String::from_utf8_lossy(&reached.stdout).contains("db-page"),
        "{reached:?}"
    );

    let removed = blocking({
        let (c, app) = (c.clone(), app.clone());
        move || archy(&c, &["apps", "uninstall", "--purge", &app])
    })
    .await;
    assert!(removed.status.success(), "{removed:?}");
    let left = rootless_podman(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=archy_{app}"),
    ]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "{left:?}"
    );
    assert!(
        !rootless_podman(&["network", "exists", &format!("archy_{app}")])
            .status
            .success()
    );
    drop((pn, cn));
    relay.shutdown().await;
}
