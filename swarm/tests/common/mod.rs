//! Shared helpers for the swarm integration tests: real nodes on loopback, test data, a
//! hostile provider that serves the real iroh-blobs protocol but flips bytes on the wire, a
//! silent one, and a trickling one that proxies a real provider slowly.
#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use archy_swarm::{PeerAddr, ServePolicy, Swarm, SwarmConfig};
use bytes::Bytes;
use iroh::{
    endpoint::{presets, Connection, RelayMode, VarInt},
    protocol::{AcceptError, ProtocolHandler, Router},
    Endpoint, EndpointAddr, EndpointId,
};
use iroh_blobs::{
    api::Store,
    provider::{events::EventSender, handle_stream, StreamPair},
    store::mem::MemStore,
    util::SendStream,
};

/// Generous safety net against hangs; never a performance assertion.
pub const SAFETY: Duration = Duration::from_secs(120);

pub async fn node(dir: &Path) -> Swarm {
    node_with(dir, ServePolicy::OwnAndMirrored).await
}

pub async fn node_with(dir: &Path, serve: ServePolicy) -> Swarm {
    Swarm::open(SwarmConfig::local(dir, "127.0.0.1:0".parse().unwrap()).with_serve(serve))
        .await
        .expect("open swarm node")
}

/// Reopens a node's directory on the same socket, as a restarted origin would be.
pub async fn reopen(dir: &Path, bind: SocketAddr) -> Swarm {
    Swarm::open(SwarmConfig::local(dir, bind))
        .await
        .expect("reopen swarm node")
}

/// Deterministic pseudo-random test data (BLAKE3 XOF of a seed).
pub fn data(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A peer that runs the real iroh-blobs provider over a store holding the right data, but
/// XORs every byte it sends after `flip_after` bytes of a response (at the earliest after
/// [`HONEST_PREFIX`] bytes: its answer to an observe request, a few bytes, is honest — it lies
/// about the data, not about what it holds). The receiver's verified streaming must reject it
/// at the first corrupted chunk group.
#[derive(Debug, Clone)]
pub struct Hostile {
    store: Store,
    flip_after: u64,
}

impl ProtocolHandler for Hostile {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let writer = FlipWriter {
                inner: send,
                written: 0,
                flip_after: self.flip_after,
            };
            let pair = StreamPair::new(conn.stable_id() as u64, recv, writer, EventSender::DEFAULT);
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = handle_stream(pair, store).await;
            });
        }
        Ok(())
    }
}

struct FlipWriter {
    inner: iroh::endpoint::SendStream,
    written: u64,
    flip_after: u64,
}

impl FlipWriter {
    fn corrupt(&mut self, buf: &[u8]) -> Bytes {
        let start = self.written;
        self.written += buf.len() as u64;
        let mut v = buf.to_vec();
        for (i, b) in v.iter_mut().enumerate() {
            if start + i as u64 >= self.flip_after {
                *b ^= 0xA5;
            }
        }
        Bytes::from(v)
    }
}

impl SendStream for FlipWriter {
    async fn send_bytes(&mut self, bytes: Bytes) -> std::io::Result<()> {
        let b = self.corrupt(&bytes);
        SendStream::send_bytes(&mut self.inner, b).await
    }
    async fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let b = self.corrupt(buf);
        SendStream::send_bytes(&mut self.inner, b).await
    }
    async fn sync(&mut self) -> std::io::Result<()> {
        SendStream::sync(&mut self.inner).await
    }
    fn reset(&mut self, code: VarInt) -> std::io::Result<()> {
        SendStream::reset(&mut self.inner, code)
    }
    async fn stopped(&mut self) -> std::io::Result<Option<VarInt>> {
        SendStream::stopped(&mut self.inner).await
    }
    fn id(&self) -> u64 {
        SendStream::id(&self.inner)
    }
}

/// Bytes of every response a [`Hostile`] peer sends unaltered: more than an observe answer
/// (a length, a size and a few range boundaries), less than a get response's first parent
/// hashes (its 8-byte size, then 64 bytes per parent pair), so a get fails at once.
pub const HONEST_PREFIX: u64 = 40;

/// Starts a hostile provider holding `content` on loopback; returns its router and address.
pub async fn hostile(content: &[u8], flip_after: u64) -> (Router, PeerAddr) {
    let mem = MemStore::new();
    mem.blobs()
        .add_slice(content)
        .await
        .expect("add to mem store");
    let ep = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .expect("bind hostile endpoint");
    let addrs: Vec<SocketAddr> = ep.bound_sockets();
    let peer = PeerAddr::new(&ep.id().to_string(), addrs).unwrap();
    let store: Store = mem.into();
    let handler = Arc::new(Hostile {
        store,
        flip_after: flip_after.max(HONEST_PREFIX),
    });
    let router = Router::builder(ep)
        .accept(iroh_blobs::ALPN, handler)
        .spawn();
    (router, peer)
}

/// A peer that accepts iroh-blobs connections and streams but never answers: a stalled source.
#[derive(Debug, Clone)]
pub struct Silent;

impl ProtocolHandler for Silent {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let mut held = Vec::new();
        while let Ok(pair) = conn.accept_bi().await {
            held.push(pair);
        }
        Ok(())
    }
}

pub async fn silent() -> (Router, PeerAddr) {
    let ep = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .expect("bind silent endpoint");
    let peer = PeerAddr::new(&ep.id().to_string(), ep.bound_sockets()).unwrap();
    let router = Router::builder(ep).accept(iroh_blobs::ALPN, Silent).spawn();
    (router, peer)
}

/// A peer that answers iroh-blobs requests with the real, verifiable bytes of an upstream
/// provider, but trickles them: it forwards each request stream to `upstream` (its own
/// connection, a bi stream per request) and copies the response back `piece` bytes at a time
/// with a `pause` after each write. Its rate is therefore at most `piece / pause`, however fast
/// the machine is (a loaded machine only makes it slower); it never stalls as long as a chunk
/// group (16 KiB) takes less than the stall timeout.
#[derive(Debug, Clone)]
pub struct Trickle {
    endpoint: Endpoint,
    upstream: EndpointAddr,
    piece: usize,
    pause: Duration,
}

impl ProtocolHandler for Trickle {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let up = self
            .endpoint
            .connect(self.upstream.clone(), iroh_blobs::ALPN)
            .await
            .map_err(AcceptError::from_err)?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Ok((mut up_send, mut up_recv)) = up.open_bi().await else {
                break;
            };
            let (piece, pause) = (self.piece, self.pause);
            tokio::spawn(async move {
                // The client finishes its side after the request: forward it whole.
                let Ok(request) = recv.read_to_end(64 * 1024).await else {
                    return;
                };
                if up_send.write_all(&request).await.is_err() || up_send.finish().is_err() {
                    return;
                }
                while let Ok(Some(bytes)) = up_recv.read_chunk(piece).await {
                    if send.write_all(&bytes).await.is_err() {
                        return; // the client gave up on us
                    }
                    tokio::time::sleep(pause).await;
                }
                let _ = send.finish();
            });
        }
        up.close(0u32.into(), b"done");
        Ok(())
    }
}

/// Starts a trickling proxy in front of `upstream` (a node that serves the blob) on loopback;
/// returns its router and address. The proxy has its own endpoint id: to the client it is a
/// distinct source.
pub async fn trickle(upstream: &PeerAddr, piece: usize, pause: Duration) -> (Router, PeerAddr) {
    let id: EndpointId = upstream.endpoint.parse().expect("upstream endpoint id");
    let upstream = upstream
        .addrs
        .iter()
        .fold(EndpointAddr::new(id), |a, s| a.with_ip_addr(*s));
    let ep = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .expect("bind trickle endpoint");
    let peer = PeerAddr::new(&ep.id().to_string(), ep.bound_sockets()).unwrap();
    let handler = Trickle {
        endpoint: ep.clone(),
        upstream,
        piece,
        pause,
    };
    let router = Router::builder(ep)
        .accept(iroh_blobs::ALPN, handler)
        .spawn();
    (router, peer)
}
