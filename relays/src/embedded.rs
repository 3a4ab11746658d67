//! The embedded relay: a NIP-01 relay (nostr-relay-builder) that a node runs on loopback, so a
//! node works offline and serves kind 30078 publicly (no NIP-42 AUTH, see PROTOCOL.md §6).
//!
//! We own the TCP listener ourselves instead of `LocalRelay::run`: it lets port 0 pick a free
//! port without a race, reports the real address, and lets `shutdown` close every open
//! connection at once (so clients notice, and the database is released for a restart).
//! Connections are upgraded here and handed to the relay with `LocalRelay::take_connection`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use nostr_lmdb::NostrLMDB;
use nostr_relay_builder::prelude::{
    LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase, RateLimit, RelayBuilder,
};
use nostr_sdk::RelayUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::RelayError;

/// Largest HTTP upgrade request we read before giving up on a client.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Settings of the embedded relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedRelayConfig {
    /// Where to listen. Default 127.0.0.1:0 (loopback, a free port). To restart on the same
    /// URL, pass the previous [`EmbeddedRelay::local_addr`].
    pub bind: SocketAddr,
    /// Directory of the persistent event store (LMDB). None keeps events in memory only.
    pub db_dir: Option<PathBuf>,
    /// Events one connection may publish per minute (the relay answers `rate-limited:` beyond).
    pub notes_per_minute: u32,
    /// Events returned by a REQ without `limit` (clients page with `until` beyond this).
    pub default_filter_limit: usize,
}

impl Default for EmbeddedRelayConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            db_dir: None,
            notes_per_minute: 6_000,
            default_filter_limit: 5_000,
        }
    }
}

/// A running embedded relay. Dropping it stops it too (without waiting).
#[derive(Debug)]
pub struct EmbeddedRelay {
    addr: SocketAddr,
    url: RelayUrl,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EmbeddedRelay {
    /// Opens the store (if `db_dir`), binds `bind` and starts serving.
    pub async fn start(config: EmbeddedRelayConfig) -> Result<Self, RelayError> {
        let database: Arc<dyn NostrDatabase> = match &config.db_dir {
            Some(dir) => {
                let db = NostrLMDB::open(dir).map_err(|e| RelayError::Database {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
                Arc::new(db)
            }
            None => Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
                events: true,
                max_events: None,
            })),
        };
        let builder = RelayBuilder::default()
            .database(database)
            .rate_limit(RateLimit {
                max_reqs: 500,
                notes_per_minute: config.notes_per_minute,
            })
            .default_filter_limit(config.default_filter_limit);
        let relay = LocalRelay::new(builder);

        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| RelayError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RelayError::Bind {
            addr: config.bind,
            source,
        })?;
        let url = RelayUrl::parse(&format!("ws://{addr}")).map_err(|e| RelayError::InvalidUrl {
            url: format!("ws://{addr}"),
            reason: e.to_string(),
        })?;

        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, relay, stop_rx));
        tracing::info!(%url, persistent = config.db_dir.is_some(), "embedded relay started");
        Ok(Self {
            addr,
            url,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> RelayUrl {
        self.url.clone()
    }

    /// The address actually bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening, closes every client connection and releases the store. When this
    /// returns, the same `db_dir` and address can be used by a new relay.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        tracing::info!(url = %self.url, "embedded relay stopped");
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn accept_loop(listener: TcpListener, relay: LocalRelay, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let relay = relay.clone();
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(stream, peer, relay).await {
                            tracing::debug!(%peer, error = %e, "embedded relay connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "embedded relay cannot accept a connection"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting the connection tasks drops their sockets (clients see the close at once) and
    // their handles on the relay, so the database is released when `relay` goes below.
    connections.shutdown().await;
    relay.shutdown();
}

/// Upgrades one HTTP connection to a WebSocket and hands it to the relay. Plain HTTP requests
/// with `Accept: application/nostr+json` get a NIP-11 document.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    relay: LocalRelay,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let head = read_request_head(&mut stream).await?;
    match upgrade_key(&head) {
        Some(key) => {
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream
                .write_all(response.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            relay
                .take_connection(stream, peer)
                .await
                .map_err(|e| e.to_string())
        }
        None => {
            let body = r#"{"name":"archy embedded relay","description":"Archy node relay (serves kind 30078 publicly)","supported_nips":[1,9,11,33,40,42,45,50,70],"software":"archy-relays (nostr-relay-builder)"}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/nostr+json\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream
                .write_all(response.as_bytes())
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// Reads up to the blank line ending the HTTP request head. A WebSocket client sends nothing
/// else before the 101 answer, so no frame bytes are consumed here.
async fn read_request_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("client closed before the request ended".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 != head.len() {
                return Err("client sent data before the upgrade completed".into());
            }
            return String::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string());
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err("request head too large".into());
        }
    }
}

/// The `Sec-WebSocket-Key` of a WebSocket upgrade request, or None for a plain HTTP request.
fn upgrade_key(head: &str) -> Option<String> {
    let mut key = None;
    let mut upgrade = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("upgrade") && value.eq_ignore_ascii_case("websocket") {
            upgrade = true;
        }
    }
    if upgrade {
        key
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_key_needs_upgrade_header() {
        let ws = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(upgrade_key(ws).as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        let http = "GET / HTTP/1.1\r\nHost: x\r\nAccept: application/nostr+json\r\n\r\n";
        assert_eq!(upgrade_key(http), None);
    }
}
