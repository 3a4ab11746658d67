//! Running the real `archy` binary: one-shot commands and long-running nodes.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The `archy` binary (`$ARCHY_BIN`, else `target/<profile>/archy`, built on first use).
pub fn archy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ARCHY_BIN") {
            return PathBuf::from(p);
        }
        // The test binary lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let bin = profile_dir.join("archy");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "archy-marketplace", "--bin", "archy"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the archy binary failed");
        assert!(bin.exists(), "no archy binary at {}", bin.display());
        bin
    })
    .clone()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `archy --home HOME ARGS…` to completion.
pub fn archy(home: &Path, args: &[&str]) -> Output {
    Command::new(archy_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("archy runs")
}

/// Runs a command that must succeed and prints JSON; returns the JSON.
pub fn archy_json(home: &Path, args: &[&str]) -> Value {
    let out = archy(home, args);
    assert!(
        out.status.success(),
        "archy {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "archy {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A running `archy node run` process.
pub struct NodeProc {
    pub home: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts a node on `home` and waits until its API answers.
    pub fn start(home: &Path) -> Result<NodeProc> {
        let log = std::fs::File::create(home.join("node.log")).context("node log")?;
        let child = Command::new(archy_bin())
            .arg("--home")
            .arg(home)
            .args(["node", "run"])
            .env(
                "ARCHY_LOG",
                std::env::var("ARCHY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting archy node run")?;
        let mut node = NodeProc {
            home: home.to_path_buf(),
            child: Some(child),
        };
        node.wait_ready()?;
        Ok(node)
    }

    /// [`NodeProc::start`] from async code (on a blocking thread, so the runtime keeps going),
    /// panicking if the node does not come up.
    pub async fn start_async(home: &Path) -> NodeProc {
        let h = home.to_path_buf();
        tokio::task::spawn_blocking(move || NodeProc::start(&h).expect("the node starts"))
            .await
            .expect("the start task ran")
    }

    fn wait_ready(&mut self) -> Result<()> {
        // A generous safety net, not a performance bound: the node normally answers at once.
        for _ in 0..1200 {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("the node exited ({status}): {}", self.log());
                }
            }
            // Only ask once this node wrote node.json: before that, `archy` would open the
            // databases itself and race the starting node for them. (A node killed with
            // SIGKILL leaves its node.json behind, so the pid must be this child's.)
            if self.node_json_pid() == self.child.as_ref().map(|c| c.id())
                && archy(&self.home, &["node", "status", "--json"])
                    .status
                    .success()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the node did not become ready: {}", self.log())
    }

    /// The pid recorded in the home's node.json, if there is one.
    fn node_json_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home.join("node.json")).ok()?;
        let info: Value = serde_json::from_str(&text).ok()?;
        info["pid"].as_u64().map(|p| p as u32)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("node.log")).unwrap_or_default()
    }

    /// The embedded relay's URL (from the node's log).
    pub fn relay_url(&self) -> String {
        let addr = std::fs::read_to_string(self.home.join("relay/addr"))
            .expect("the node runs an embedded relay");
        format!("ws://{}", addr.trim())
    }

    /// Stops the node with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the node with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address for a server that must restart on the same port (below the ephemeral
/// range, so no outgoing connection takes it meanwhile).
pub fn sticky_loopback() -> std::net::SocketAddr {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    std::net::SocketAddr::new(ip, archy_marketplace::node::run::pick_port(ip))
}

/// Whether tests must fail (not skip) when an external tool is missing (`tests/run.sh` sets it).
pub fn tools_required() -> bool {
    std::env::var_os("ARCHY_REQUIRE_TOOLS").is_some()
}

/// Skips (returns false) or fails when a tool is missing, per [`tools_required`].
pub fn have_tool(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        !tools_required(),
        "{what} is missing and ARCHY_REQUIRE_TOOLS is set (run tests/run.sh)"
    );
    eprintln!("SKIPPED: {what} is missing (tests/run.sh installs it)");
    false
}

/// Sends one raw request to a running node's local API (`POST /v1/rpc`), with or without the
/// home's token; returns the HTTP status and the body.
pub fn api_post(home: &Path, with_token: bool, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("node.json")).expect("node.json"))
            .expect("node.json is JSON");
    let addr = info["api"].as_str().expect("api address").to_owned();
    let auth = if with_token {
        let token = std::fs::read_to_string(home.join("api.token")).expect("api.token");
        format!("Authorization: Bearer {}\r\n", token.trim())
    } else {
        String::new()
    };
    let mut s = std::net::TcpStream::connect(&addr).expect("the API answers");
    write!(
        s,
        "POST /v1/rpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// [`archy`] off the async runtime, for tests whose relays run in-process on that runtime.
pub async fn archy_async(home: &Path, args: &[&str]) -> Output {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        archy(&home, &a)
    })
    .await
    .expect("the CLI task ran")
}

/// [`archy_json`] off the async runtime.
pub async fn archy_json_async(home: &Path, args: &[&str]) -> Value {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        archy_json(&home, &a)
    })
    .await
    .expect("the CLI task ran")
}

/// The rootless Podman user `tests/setup/podman.sh` creates, as a node's `[apps] podman_prefix`
/// (TOML/JSON array).
pub const ROOTLESS_PREFIX: &str = r#"["runuser", "-u", "archy", "--", "env", "XDG_RUNTIME_DIR=/tmp/archy-run", "HOME=/home/archy"]"#;

/// Runs `podman ARGS…` as that rootless user.
pub fn rootless_podman(args: &[&str]) -> Output {
    let prefix: Vec<String> = serde_json::from_str(ROOTLESS_PREFIX).expect("a JSON array");
    Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg("podman")
        .args(args)
        .output()
        .expect("runuser runs")
}

/// Builds the sample app's image (`apps/hello-web/build.sh TAG`) and returns its name,
/// `localhost/archy/hello-web:TAG`; panics with the script's output if the build fails.
pub fn build_hello_web(tag: &str) -> String {
    let built = Command::new("bash")
        .arg(repo().join("apps/hello-web/build.sh"))
        .arg(tag)
        .output()
        .expect("bash runs");
    assert!(built.status.success(), "{built:?}");
    format!("localhost/archy/hello-web:{tag}")
}

/// A real relay (nostr-relay-builder over LMDB) on a loopback port, with its store in a
/// temporary directory that lives as long as the returned guard.
pub async fn embedded_relay() -> (archy_relays::EmbeddedRelay, tempfile::TempDir) {
    let db = tempfile::tempdir().expect("a temporary directory");
    let relay = archy_relays::EmbeddedRelay::start(archy_relays::EmbeddedRelayConfig {
        db_dir: Some(db.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .expect("the embedded relay starts");
    (relay, db)
}
