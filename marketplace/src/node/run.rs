//! `archy node run`: start every component, serve the API, run the loops, stop cleanly on
//! SIGTERM/SIGINT. A SIGKILL loses nothing: every state change was committed when it happened.

use super::api::{self, NodeInfo};
use super::config::NodeConfig;
use super::discovery::{self, SyncReport};
use super::NodeCore;
use crate::events::release_filter;
use crate::home::Home;
use crate::unix_now;
use anyhow::{Context, Result};
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, StreamItem};
use std::net::SocketAddr;

/// How often a running node re-announces its mirrors (their announcements expire after
/// [`crate::events::MIRROR_TTL_SECS`], 7 days).
const MIRROR_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the embedded relay's chosen address is remembered, so its URL survives restarts.
const RELAY_ADDR_FILE: &str = "relay/addr";

/// Resolves a bind address whose port may be 0 ("pick one"), reusing the one picked last time.
///
/// A fresh pick comes from below the kernel's ephemeral range (32768+): a port from that range
/// can be taken by any outgoing connection while the node is down, and the relay's URL (or the
/// origin address in published manifests) must survive restarts.
pub(crate) fn sticky_addr(home: &Home, file: &str, configured: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = configured
        .parse()
        .with_context(|| format!("{configured:?} is not an ip:port"))?;
    if addr.port() != 0 {
        return Ok(addr);
    }
    if let Some(saved) = std::fs::read_to_string(home.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Ok(saved);
    }
    Ok(SocketAddr::new(addr.ip(), pick_port(addr.ip())))
}

/// A port in 20000..32000 that is free for both TCP and UDP right now (0 if none is found,
/// which lets the OS choose).
pub fn pick_port(ip: std::net::IpAddr) -> u16 {
    for _ in 0..200 {
        let mut b = [0u8; 2];
        rand::fill(&mut b);
        let port = 20_000 + u16::from_le_bytes(b) % 12_000;
        let free = std::net::TcpListener::bind((ip, port)).is_ok()
            && std::net::UdpSocket::bind((ip, port)).is_ok();
        if free {
            return port;
        }
    }
    0
}

pub(crate) fn remember_addr(home: &Home, file: &str, addr: SocketAddr) -> Result<()> {
    let path = home.join(file);
    std::fs::create_dir_all(path.parent().expect("file in a folder"))?;
    std::fs::write(path, addr.to_string())?;
    Ok(())
}

async fn start_embedded_relay(home: &Home, config: &NodeConfig) -> Result<EmbeddedRelay> {
    let bind = sticky_addr(home, RELAY_ADDR_FILE, &config.relays.embedded_bind)?;
    let cfg = EmbeddedRelayConfig {
        bind,
        db_dir: Some(home.join("relay/db")),
        ..EmbeddedRelayConfig::default()
    };
    let relay = match EmbeddedRelay::start(cfg.clone()).await {
        Ok(r) => r,
        // The remembered port may have been taken meanwhile: pick a new one.
        Err(e) if bind.port() != 0 && config.relays.embedded_bind.ends_with(":0") => {
            tracing::warn!("embedded relay could not reuse {bind}: {e}; picking a new port");
            EmbeddedRelay::start(EmbeddedRelayConfig {
                bind: SocketAddr::new(bind.ip(), 0),
                ..cfg
            })
            .await?
        }
        Err(e) => return Err(e).context("starting the embedded relay"),
    };
    remember_addr(home, RELAY_ADDR_FILE, relay.local_addr())?;
    Ok(relay)
}

/// Which parts of the node a process runs. Both entry points share [`serve`], so there is one
/// start-up and one shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Components {
    /// The embedded relay, when the configuration asks for it.
    pub embedded_relay: bool,
    /// The discovery loop (passes, live subscription, trust refresh, auto-update) and the
    /// reconciler loop.
    pub loops: bool,
}

impl Components {
    /// `archy node run`: everything.
    pub const NODE: Components = Components {
        embedded_relay: true,
        loops: true,
    };
    /// `archy blob serve`: the blob store and the local API only.
    pub const BLOBS: Components = Components {
        embedded_relay: false,
        loops: false,
    };
}

/// What a started node tells its entry point (for the lines it prints).
pub struct Started<'a> {
    pub core: &'a NodeCore,
    pub api: SocketAddr,
    pub swarm: archy_swarm::PeerAddr,
    /// The OCI registry (pull-only, loopback).
    pub registry: SocketAddr,
    /// The embedded relay's URL, when it runs.
    pub relay: Option<String>,
}

/// `archy node run`: runs the whole node until SIGTERM or SIGINT.
pub async fn run(home: Home) -> Result<()> {
    let lock = match api::claim(&home).await? {
        api::Owner::Free(lock) => lock,
        api::Owner::Node(_) => anyhow::bail!(
            "a node already runs for {} (see node.json)",
            home.root().display()
        ),
    };
    let started = |s: &Started<'_>| {
        println!("archy node running (pid {})", std::process::id());
        println!("  home:  {}", s.core.home.root().display());
        println!("  did:   {}", s.core.identity.did());
        println!("  nostr: {}", s.core.identity.nostr_hex());
        println!("  api:   http://{}/v1/rpc", s.api);
        if let Some(r) = &s.relay {
            println!("  relay: {r}");
        }
        println!("  swarm: {}", s.swarm);
        println!("  registry: {} (OCI, pull-only)", s.registry);
        for url in &s.core.config.relays.urls {
            println!("  relay: {url} (external)");
        }
    };
    let stopping = || {
        // Not println!: a closed stdout must not turn a clean stop into a panic.
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "archy node stopping");
    };
    serve(home, lock, Components::NODE, started, stopping).await
}

/// Starts `parts` of the node of `home` (whose lock the caller holds), serves the local API,
/// calls `started` once everything answers, and runs until SIGTERM or SIGINT; then calls
/// `stopping`, stops in order and removes `node.json`.
pub async fn serve(
    home: Home,
    _lock: api::HomeLock,
    parts: Components,
    started: impl FnOnce(&Started<'_>),
    stopping: impl FnOnce(),
) -> Result<()> {
    // A node killed with SIGKILL leaves its node.json behind.
    api::remove_node_info(&home);
    let config = NodeConfig::load(&home)?;
    let embedded = if parts.embedded_relay && config.relays.embedded {
        Some(start_embedded_relay(&home, &config).await?)
    } else {
        None
    };
    let mut relay_urls: Vec<String> = embedded.iter().map(|r| r.url().to_string()).collect();
    relay_urls.extend(config.relays.urls.iter().cloned());
    let core = Arc::new(NodeCore::open(home.clone(), config.clone(), relay_urls)?);

    // The swarm serves this node's blobs (it is the origin of what it publishes); the OCI
    // registry serves the images among them to Podman and other OCI clients on loopback.
    let swarm_addr = core.swarm().await?.addr();
    let registry_addr = core.registry().await?.addr();
    let token = api::ensure_token(&home)?;
    let listener = api::bind(&config.api.bind).await?;
    let api_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut stop = stop_rx.clone();
    let api_task = tokio::spawn(api::serve(listener, core.clone(), token, async move {
        let _ = stop.changed().await;
    }));
    let mut loops = Vec::new();
    if parts.loops {
        loops.push(tokio::spawn(discovery_loop(core.clone(), stop_rx.clone())));
        // The reconciler loop: level-triggered on a timer and at once on every intent change;
        // at start it adopts healthy containers (same spec hash) instead of recreating them.
        let reconciler = core.reconciler().await?.clone();
        let mut stop = stop_rx.clone();
        loops.push(tokio::spawn(async move {
            reconciler
                .run(async move {
                    let _ = stop.changed().await;
                })
                .await
        }));
    }
    // Mirrored blobs are announced again at start (the address may have changed, relays may
    // have lost them) and every day after, well before their NIP-40 expiration (7 days).
    if !core.relay_urls().is_empty() {
        let mirrors_core = core.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let n = super::blobs::reannounce_mirrors(&mirrors_core).await;
                if n > 0 {
                    tracing::info!(mirrors = n, "mirror announcements re-published");
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(MIRROR_REFRESH) => {}
                }
            }
        });
    }

    api::write_node_info(
        &home,
        &NodeInfo {
            api: api_addr,
            pid: std::process::id(),
        },
    )?;
    started(&Started {
        core: &core,
        api: api_addr,
        swarm: swarm_addr,
        registry: registry_addr,
        relay: embedded.as_ref().map(|r| r.url().to_string()),
    });

    wait_for_signal().await;
    stopping();
    let _ = stop_tx.send(true);
    for task in loops {
        let _ = task.await;
    }
    let _ = api_task.await;
    core.close().await;
    if let Some(r) = embedded {
        r.shutdown().await;
    }
    api::remove_node_info(&home);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A discovery pass at start and every `sync_interval_secs`, and a live subscription between.
async fn discovery_loop(core: Arc<NodeCore>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_secs(core.config.relays.sync_interval_secs.max(1));
    let pool = match core.pool().await {
        Ok(p) => p.clone(),
        Err(e) => {
            tracing::warn!("discovery is off: {e:#}");
            return;
        }
    };
    let since = discovery::subscription_since(&core.catalog).unwrap_or(None);
    let mut sub = pool.subscribe(release_filter(), since);
    let mut tick = tokio::time::interval(interval);
    // Relays whose live connection is down: an outage is logged once, and so is the return.
    let mut down = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                match discovery::sync_once(&pool, &core.catalog, &core.config.policy, unix_now()).await {
                    Ok(r) if r.accepted + r.rejected + r.history > 0 => tracing::info!(?r, "discovery pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("discovery pass failed: {e:#}"),
                }
                // Trust signals about the (possibly new) publishers, after each pass.
                if let Err(e) = super::trust::refresh(&core).await {
                    tracing::warn!("trust refresh failed: {e:#}");
                }
                // New versions of installed apps from trusted publishers, if the operator wants.
                super::install::auto_update(&core).await;
            }
            item = sub.recv() => match item {
                Some(StreamItem::Event { event, .. }) => {
                    let mut r = SyncReport::default();
                    let ingest = || discovery::ingest(&core.catalog, vec![*event], &core.config.policy, unix_now(), &mut r);
                    if let Err(e) = discovery::off_the_workers(ingest) {
                        tracing::warn!("ingesting a live event failed: {e:#}");
                    }
                }
                Some(StreamItem::Disconnected { relay, error }) => {
                    if down.insert(relay.clone()) {
                        tracing::warn!(%relay, "relay connection lost: {error}; the live subscription retries");
                    } else {
                        tracing::debug!(%relay, "relay still unreachable: {error}");
                    }
                }
                Some(StreamItem::CaughtUp { relay }) => {
                    let after = if down.remove(&relay) { " again after an outage" } else { "" };
                    tracing::info!(%relay, "relay caught up{after}: live subscription on");
                }
                None => {
                    tracing::warn!("the live subscription ended; passes continue");
                    sub = pool.subscribe(release_filter(), discovery::subscription_since(&core.catalog).unwrap_or(None));
                }
            }
        }
    }
}
