//! Multi-service apps and app dependencies (PROTOCOL §2.2) through three real nodes and a real
//! relay. Publisher 1 publishes a stack A (a web service, exported, and its private database;
//! one image per service: `app publish --image SERVICE=IMAGE`); publisher 2 publishes B, which
//! depends on A. The consumer, who trusts only publisher 2, installs B: A's publisher is below
//! its install tier, so that is refused until `--confirm`, and then A installs first. A's web
//! service reaches its database by name on A's network; B reaches A's exported service as
//! `web.<A>` and not its database; A cannot be uninstalled while B needs it; when B goes, A
//! stays, listed as B's dependency; a purge leaves nothing behind.

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
exports: [web]
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

/// B: one container that only waits; it depends on A (publisher 1's DID, `^1`).
fn dependent_manifest(app: &str, dep: &str, did: &str) -> String {
    format!(
        r#"schema: archy.app/v2
id: {app}
version: 1.0.0
name: Dependent test
summary: Needs the stack's web service
origin: {{endpoint: "{zero}", addrs: []}}
command: ["/bin/busybox", "sleep", "100000"]
stop_grace_secs: 1
dependencies:
  - {{app: {dep}, version: "^1", did: "{did}"}}
"#,
        zero = "0".repeat(64)
    )
}

fn new_identity(home: &Path) -> Value {
    archy_json(home, &["id", "new", "--json"])
}

fn sync_until_listed(home: &Path, apps: &[&str]) {
    for _ in 0..300 {
        let _ = archy(home, &["market", "sync"]);
        if apps
            .iter()
            .all(|a| archy(home, &["market", "show", a]).status.success())
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{apps:?} never reached {}", home.display());
}

/// What a command inside the dependent's container reads from `host:port`, as reached/refused.
fn from_b(b: &str, host: &str, port: u16, marker: &str) -> String {
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | grep -q {marker} && echo reached || echo refused"
    );
    let out = rootless_podman(&["exec", &format!("archy_{b}"), "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_and_an_app_that_depends_on_it_install_from_two_publishers() {
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
    let (p1, p2, c) = (
        dir.path().join("p1"),
        dir.path().join("p2"),
        dir.path().join("c"),
    );
    let port = 20_000 + (std::process::id() % 9_000) as u16 + 5;
    let a = format!("stack-{}", std::process::id());
    let b = format!("needs-{}", std::process::id());
    let tag = format!("stack{}", std::process::id());
    let web_image = blocking(move || build_hello_web(&tag)).await;
    config(&p1, &url, "");
    config(&p2, &url, "");
    let (id1, id2) = blocking({
        let (p1, p2) = (p1.clone(), p2.clone());
        move || (new_identity(&p1), new_identity(&p2))
    })
    .await;
    let did1 = id1["did"].as_str().unwrap().to_owned();
    // The consumer trusts publisher 2 only.
    config(
        &c,
        &url,
        &format!(
            "[trust]\nanchors = [\"{}\"]\n\n[apps]\npodman_prefix = {ROOTLESS_PREFIX}\n",
            id2["npub"].as_str().unwrap()
        ),
    );
    let nodes = blocking({
        let (p1, p2, c) = (p1.clone(), p2.clone(), c.clone());
        move || {
            (
                NodeProc::start(&p1).unwrap(),
                NodeProc::start(&p2).unwrap(),
                NodeProc::start(&c).unwrap(),
            )
        }
    })
    .await;
    let stack = dir.path().join("stack.yaml");
    std::fs::write(&stack, stack_manifest(&a, port)).unwrap();
    let dependent = dir.path().join("dependent.yaml");
    std::fs::write(&dependent, dependent_manifest(&b, &a, &did1)).unwrap();
    let published = blocking({
        let (p1, p2, stack, dependent, web) = (
            p1.clone(),
            p2.clone(),
            stack.clone(),
            dependent.clone(),
            web_image.clone(),
        );
        move || {
            let one = archy_json(
                &p1,
                &[
                    "app",
                    "publish",
                    stack.to_str().unwrap(),
                    "--image",
                    &format!("web={web}"),
                    "--image",
                    "db=localhost/archy/base:busybox",
                    "--json",
                ],
            );
            archy_json(
                &p2,
                &[
                    "app",
                    "publish",
                    dependent.to_str().unwrap(),
                    "--image",
                    &web,
                    "--json",
                ],
            );
            one
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

    // A's publisher is unknown to the consumer: B's install stops at A's trust gate.
    let refused = blocking({
        let (c, a, b) = (c.clone(), a.clone(), b.clone());
        move || {
            sync_until_listed(&c, &[&a, &b]);
            archy(&c, &["apps", "install", &b])
        }
    })
    .await;
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains(&a) && said.contains("--confirm"), "{said}");
    let inst = blocking({
        let (c, b) = (c.clone(), b.clone());
        move || archy_json(&c, &["apps", "install", &b, "--confirm", "--json"])
    })
    .await;
    let cn_log = nodes.2.log();
    assert_eq!(inst["outcome"]["result"], "running", "{inst}\n{cn_log}");
    let dep = &inst["dependencies"][0];
    assert_eq!(dep["app"], a.as_str(), "{inst}");
    assert_eq!(dep["confirmed"], true, "{inst}");
    assert_eq!(dep["services"].as_array().map(Vec::len), Some(2), "{inst}");

    // The stack: both services run, web answers, web reaches db by name.
    let list = blocking({
        let c = c.clone();
        move || archy_json(&c, &["apps", "list", "--json"])
    })
    .await;
    let entry = |list: &Value, app: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["app"] == app)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let states: Vec<(String, String)> = entry(&list, &a)["services"]
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
        "{list}"
    );
    assert_eq!(entry(&list, &a)["dependency_of"], b.as_str(), "{list}");
    let page = Command::new("curl")
        .args(["-fsS", "-m", "10", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    assert!(page.status.success(), "{page:?}");
    let reached = rootless_podman(&[
        "exec",
        &format!("archy_{a}_web"),
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 db 5432",
    ]);
    assert!(
        String::from_utf8_lossy(&reached.stdout).contains("db-page"),
        "{reached:?}"
    );

    // B reaches A's exported web service by name, and not A's database.
    assert_eq!(from_b(&b, &format!("web.{a}"), 8080, "Archy"), "reached");
    assert_eq!(from_b(&b, &format!("db.{a}"), 5432, "db-page"), "refused");
    assert_eq!(from_b(&b, "db", 5432, "db-page"), "refused");

    // A cannot go while B needs it; when B goes, A stays.
    let kept = blocking({
        let (c, a) = (c.clone(), a.clone());
        move || archy(&c, &["apps", "uninstall", &a])
    })
    .await;
    assert!(!kept.status.success(), "{kept:?}");
    assert!(
        String::from_utf8_lossy(&kept.stderr).contains(&b),
        "{kept:?}"
    );
    let list = blocking({
        let (c, b) = (c.clone(), b.clone());
        move || {
            let out = archy(&c, &["apps", "uninstall", "--purge", &b]);
            assert!(out.status.success(), "{out:?}");
            archy_json(&c, &["apps", "list", "--json"])
        }
    })
    .await;
    assert_eq!(entry(&list, &a)["state"], "running", "{list}");
    assert_eq!(entry(&list, &b), Value::Null, "{list}");

    let removed = blocking({
        let (c, a) = (c.clone(), a.clone());
        move || archy(&c, &["apps", "uninstall", "--purge", &a])
    })
    .await;
    assert!(removed.status.success(), "{removed:?}");
    let left = rootless_podman(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=archy_{a}"),
    ]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "{left:?}"
    );
    assert!(
        !rootless_podman(&["network", "exists", &format!("archy_{a}")])
            .status
            .success()
    );
    drop(nodes);
    relay.shutdown().await;
}
