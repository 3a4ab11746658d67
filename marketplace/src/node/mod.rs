//! The node: one long-running process per home that wires relays, discovery, the catalog,
//! trust, the swarm and the reconciler together, and serves the local API.
//!
//! Every operation is a [`rpc::Request`] handled by [`NodeCore`]. The CLI sends requests to
//! the running node through the local API ([`api`]) and, when no node runs, handles them
//! in-process with a short-lived `NodeCore` — so there is one implementation of each operation.
//! (redb allows one process per database: while a node runs, only the node opens it.)

pub mod api;
pub mod apps;
pub mod blobs;
pub mod config;
pub mod discovery;
pub mod gc;
pub mod install;
pub mod layers;
pub mod publish;
pub mod registry;
pub mod rpc;
pub mod run;
pub mod trust;

use crate::catalog::{AppRecord, Catalog};
use crate::home::Home;
use crate::identity::Identity;
use anyhow::{bail, Context, Result};
use archy_relays::{PoolConfig, RelayPool};
use archy_swarm::{Swarm, SwarmConfig};
use config::NodeConfig;
use tokio::sync::OnceCell;

/// Where the swarm's chosen local address is remembered.
const SWARM_ADDR_FILE: &str = "swarm/addr";
/// Where the OCI registry's chosen address is remembered.
const REGISTRY_ADDR_FILE: &str = "registry.addr";

/// The catalog file inside the home.
pub const CATALOG_FILE: &str = "catalog.redb";

/// The node's state and components. Components start on first use, so a one-shot CLI command
/// only pays for what it touches.
pub struct NodeCore {
    pub home: Home,
    pub config: NodeConfig,
    pub identity: Identity,
    pub catalog: Catalog,
    /// The one Podman client, from `[apps] podman_prefix`: the reconciler drives apps with it,
    /// and images are saved and loaded with it ([`archy_orchestrator::Images`]).
    pub podman: archy_orchestrator::PodmanCmd,
    relay_urls: Vec<String>,
    pool: OnceCell<RelayPool>,
    swarm: OnceCell<Swarm>,
    registry: OnceCell<registry::Registry>,
    reconciler: OnceCell<std::sync::Arc<archy_orchestrator::Reconciler>>,
    trust: OnceCell<trust::TrustState>,
    /// Held by every operation that changes installed apps (install, update, auto-update,
    /// start/stop, uninstall), so they run one at a time: an auto-update that started before an
    /// uninstall must not put the app back after it.
    pub(crate) app_ops: tokio::sync::Mutex<()>,
    /// Every fetch in flight, as its progress so far (the local API's `transfers`).
    pub(crate) transfers: blobs::Transfers,
    /// The `created_at` of this node's last mirror event per blob (see [`NodeCore::event_time`]).
    mirror_events: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Opens the catalog, waiting a little if another `archy` process holds it (a one-shot command
/// that started just before the node): redb allows one process per database.
fn open_catalog(home: &Home) -> Result<Catalog> {
    let mut attempts = 0;
    loop {
        match Catalog::open(&home.join(CATALOG_FILE)) {
            Ok(c) => return Ok(c),
            Err(e) if attempts < 50 && already_open(&e) => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether opening failed because another process holds the database (redb's own error, not
/// its text).
fn already_open(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<redb::DatabaseError>(),
            Some(redb::DatabaseError::DatabaseAlreadyOpen)
        )
    })
}

impl NodeCore {
    /// The `created_at` for this node's next mirror event about `blob` (§4.3): now, or one
    /// second after the last one when that is not earlier. The events of one blob share an
    /// address (`d`), and a relay keeps only the newest, refusing one that is not newer: a
    /// complete announcement right after the partial one (a fetch under a second) must win.
    pub(crate) fn event_time(&self, blob: &str) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut last = self.mirror_events.lock().expect("mirror events lock");
        let at = last.get(blob).map_or(now, |t| now.max(t + 1));
        last.insert(blob.to_owned(), at);
        at
    }

    /// Opens the home: configuration, identity (created on first use), catalog.
    /// `relay_urls` are the relays this core talks to (the embedded relay's URL first, if any).
    pub fn open(home: Home, config: NodeConfig, relay_urls: Vec<String>) -> Result<NodeCore> {
        home.ensure()?;
        let identity = Identity::load_or_create(&home)?;
        let catalog = open_catalog(&home)?;
        let podman = config.apps.podman();
        Ok(NodeCore {
            home,
            config,
            identity,
            catalog,
            podman,
            relay_urls,
            pool: OnceCell::new(),
            swarm: OnceCell::new(),
            registry: OnceCell::new(),
            reconciler: OnceCell::new(),
            trust: OnceCell::new(),
            app_ops: tokio::sync::Mutex::new(()),
            transfers: blobs::Transfers::default(),
            mirror_events: Default::default(),
        })
    }

    /// The relays this node uses.
    pub fn relay_urls(&self) -> &[String] {
        &self.relay_urls
    }

    /// The relay pool (connected on first use).
    pub async fn pool(&self) -> Result<&RelayPool> {
        self.pool
            .get_or_try_init(|| async {
                if self.relay_urls.is_empty() {
                    bail!("no relays configured: pass --relay URL, or set [relays] urls / embedded in config.toml");
                }
                let config = PoolConfig {
                    quorum: self.config.relays.quorum.clamp(1, self.relay_urls.len()),
                    ..PoolConfig::default()
                };
                RelayPool::connect(&self.relay_urls, config)
                    .await
                    .context("connecting to the relays")
            })
            .await
    }

    /// The trust graph and latest scores (built on first use from config, the persisted
    /// signals and the catalog; `trust::refresh` collects new signals from the relays).
    /// The install flow asks `core.trust()?.decide(&publisher_nostr_hex)`. Synchronous: opening
    /// reads local files only (two racing first calls both open; one result is kept).
    pub fn trust(&self) -> Result<&trust::TrustState> {
        if let Some(t) = self.trust.get() {
            return Ok(t);
        }
        let state =
            trust::TrustState::open(&self.home, &self.config, &self.identity, &self.catalog)?;
        let _ = self.trust.set(state);
        Ok(self.trust.get().expect("set above or by a racing call"))
    }

    /// The iroh swarm: endpoint + blob store in `<home>/swarm` (opened on first use). In local
    /// mode its UDP port is sticky, so the origin address in published manifests stays valid.
    pub async fn swarm(&self) -> Result<&Swarm> {
        self.swarm
            .get_or_try_init(|| async {
                let dir = self.home.join("swarm");
                let config = match self.config.swarm.network.as_str() {
                    "local" => {
                        let bind =
                            run::sticky_addr(&self.home, SWARM_ADDR_FILE, &self.config.swarm.bind)?;
                        SwarmConfig::local(dir, bind)
                    }
                    "internet" => SwarmConfig::internet(dir),
                    other => bail!("[swarm] network = {other:?}: use \"local\" or \"internet\""),
                };
                let config = config.with_uploads(self.config.swarm.upload_limits()?);
                let swarm = Swarm::open(config)
                    .await
                    .context("starting the iroh swarm")?;
                if let Some(addr) = swarm.addr().addrs.first() {
                    run::remember_addr(&self.home, SWARM_ADDR_FILE, *addr)?;
                }
                Ok(swarm)
            })
            .await
    }

    /// The node's OCI registry on loopback (started on first use, after the swarm; its port is
    /// sticky). It serves the layered images the store keeps.
    pub async fn registry(&self) -> Result<&registry::Registry> {
        self.registry
            .get_or_try_init(|| async {
                let swarm = self.swarm().await?;
                let bind =
                    run::sticky_addr(&self.home, REGISTRY_ADDR_FILE, &self.config.registry.bind)?;
                let reg = registry::Registry::start(bind, swarm.reader()).await?;
                run::remember_addr(&self.home, REGISTRY_ADDR_FILE, reg.addr())?;
                let images = reg.reindex(swarm).await?;
                tracing::debug!(images, "registry index built");
                Ok(reg)
            })
            .await
    }

    /// The registry, if it was started.
    pub fn registry_if_started(&self) -> Option<&registry::Registry> {
        self.registry.get()
    }

    /// The swarm, if it was started (for shutdown).
    pub fn swarm_if_started(&self) -> Option<&Swarm> {
        self.swarm.get()
    }

    /// Closes what was started: the relay pool, and the blob store (flushed to disk). Every
    /// process that opened a core calls it before it exits.
    pub async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            pool.shutdown().await;
        }
        if let Some(swarm) = self.swarm.get() {
            if let Err(e) = swarm.shutdown().await {
                tracing::warn!("closing the blob store: {e}");
            }
        }
    }

    /// A pool over other relays than the node's own (for `--relay` on a running node).
    pub async fn pool_for(&self, urls: &[String]) -> Result<RelayPool> {
        let config = PoolConfig {
            quorum: self.config.relays.quorum.clamp(1, urls.len().max(1)),
            ..PoolConfig::default()
        };
        Ok(RelayPool::connect(urls, config).await?)
    }

    /// Finds an app by `id` or `did/id` (PROTOCOL §4.1 "Which app is hello").
    pub fn resolve_app(&self, name: &str) -> Result<AppRecord> {
        let apps = self.catalog.apps()?;
        if let Some((did, id)) = name.rsplit_once('/') {
            return apps
                .into_iter()
                .find(|a| a.did == did && a.app == id)
                .with_context(|| format!("no app {id} from {did} in the catalog"));
        }
        let matching: Vec<AppRecord> = apps.into_iter().filter(|a| a.app == name).collect();
        match matching.len() {
            0 => bail!("no app {name:?} in the catalog (try `archy market sync`, then `archy market search`)"),
            1 => Ok(matching.into_iter().next().expect("one")),
            _ => {
                let names: Vec<String> = matching.iter().map(|a| format!("{}/{}", a.did, a.app)).collect();
                bail!(
                    "several publishers have an app {name:?}; name one of them:\n  {}",
                    names.join("\n  ")
                )
            }
        }
    }
}
