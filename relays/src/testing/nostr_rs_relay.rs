//! Launches the third-party relay `nostr-rs-relay` (installed by tests/setup/nostr-rs-relay.sh)
//! on a free loopback port with a temporary data directory. The process is killed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nostr_sdk::RelayUrl;
use tempfile::TempDir;

/// Why the third-party relay could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NostrRsRelayError {
    /// The binary is not installed.
    #[error("nostr-rs-relay binary not found (looked at $NOSTR_RS_RELAY, $ARCHY_TOOLS/bin, ~/.cache/archy-tools/bin and PATH); run tests/setup/nostr-rs-relay.sh")]
    NotInstalled,
    /// Files or processes could not be set up.
    #[error("cannot start nostr-rs-relay: {0}")]
    Io(#[from] std::io::Error),
    /// The process exited or never listened.
    #[error("nostr-rs-relay did not come up on {addr}: {reason}; its log:\n{log}")]
    NotListening {
        /// The address it was given.
        addr: SocketAddr,
        /// What was seen.
        reason: String,
        /// The tail of its log.
        log: String,
    },
}

/// A running `nostr-rs-relay`. Keeps its data directory for [`NostrRsRelay::restart`].
#[derive(Debug)]
pub struct NostrRsRelay {
    binary: PathBuf,
    dir: TempDir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl NostrRsRelay {
    /// Where the binary is, if installed: `$NOSTR_RS_RELAY`, then
    /// `${ARCHY_TOOLS:-~/.cache/archy-tools}/bin/nostr-rs-relay`, then `PATH`.
    pub fn binary() -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("NOSTR_RS_RELAY") {
            candidates.push(PathBuf::from(p));
        }
        let tools = std::env::var_os("ARCHY_TOOLS")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/archy-tools")));
        if let Some(tools) = tools {
            candidates.push(tools.join("bin/nostr-rs-relay"));
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("nostr-rs-relay")));
        }
        candidates.into_iter().find(|p| p.is_file())
    }

    /// Starts the relay on a free loopback port and waits until it accepts connections.
    pub async fn start() -> Result<Self, NostrRsRelayError> {
        let binary = Self::binary().ok_or(NostrRsRelayError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("nostr-rs-relay-")
            .tempdir()?;
        let addr = {
            let probe = StdListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            probe.local_addr()?
        };
        std::fs::create_dir_all(dir.path().join("db"))?;
        std::fs::write(
            dir.path().join("config.toml"),
            config_toml(addr, &dir.path().join("db")),
        )?;
        let mut relay = Self {
            binary,
            dir,
            addr,
            child: None,
        };
        relay.spawn().await?;
        Ok(relay)
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> RelayUrl {
        RelayUrl::parse(&format!("ws://{}", self.addr)).expect("loopback ws URL parses")
    }

    /// Kills the process (its data stays). Connected clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<(), NostrRsRelayError> {
        self.stop();
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), NostrRsRelayError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("relay.log"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--db")
            .arg(self.dir.path().join("db"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        // Safety net only: a cold start takes well under a second here.
        for _ in 0..600 {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(self.not_listening(format!("process exited with {status}")));
                }
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop();
        Err(self.not_listening("no listener after 60s".into()))
    }

    fn not_listening(&self, reason: String) -> NostrRsRelayError {
        let log = std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        NostrRsRelayError::NotListening {
            addr: self.addr,
            reason,
            log: tail,
        }
    }
}

impl Drop for NostrRsRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_toml(addr: SocketAddr, db: &Path) -> String {
    format!(
        r#"[info]
relay_url = "ws://{addr}/"
name = "archy-test-nostr-rs-relay"
description = "started by archy-relays tests"

[database]
engine = "sqlite"
data_directory = "{db}"

[network]
address = "{ip}"
port = {port}

[limits]
max_event_bytes = 524288
max_ws_message_bytes = 1048576
max_ws_frame_bytes = 1048576

[authorization]
nip42_auth = false
"#,
        db = db.display(),
        ip = addr.ip(),
        port = addr.port(),
    )
}
