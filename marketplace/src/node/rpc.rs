//! The operations of a node, as requests: the local API's body and the CLI's in-process calls.

use super::blobs;
use super::discovery;
use super::publish;
use super::NodeCore;
use crate::envelope::Envelope;
use crate::unix_now;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One request to a node. The JSON form is `{"method": "...", "params": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    content = "params",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Request {
    /// Identity, relays and their health.
    Status,
    /// The effective configuration.
    ConfigShow,
    /// One discovery pass (over `relays`, or the node's own when empty).
    MarketSync {
        relays: Vec<String>,
    },
    MarketSearch {
        text: String,
    },
    MarketShow {
        app: String,
    },
    MarketRejected,
    /// Score, tier and explanation of a key (npub, hex or a DID in the catalog).
    TrustShow {
        key: String,
    },
    /// Add or remove a trust anchor (persisted to config.toml).
    TrustAnchor {
        key: String,
        add: bool,
    },
    /// Block or unblock a key (persisted to config.toml).
    TrustBlock {
        key: String,
        block: bool,
    },
    /// Collect trust signals from the relays and recompute.
    TrustRefresh,
    /// Apps on this machine (install, update, start, stop, …).
    Apps(super::apps::AppsRequest),
    /// Publish a signed envelope (made by this node's identity) as a release event.
    Publish {
        envelope: Value,
        relays: Vec<String>,
    },
    /// Add a file (an absolute path on the node's machine) to the blob store.
    BlobAdd {
        path: std::path::PathBuf,
    },
    /// Complete blobs in the store.
    BlobLs,
    /// Fetch a blob: `from[0]` as the origin, the rest as peers; `find_mirrors` adds the §4.3
    /// mirrors; `mirror` serves and announces it afterwards; `out` exports it to a file.
    BlobGet {
        hash: String,
        from: Vec<String>,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        find_mirrors: bool,
        #[serde(default)]
        mirror: bool,
        #[serde(default)]
        out: Option<std::path::PathBuf>,
    },
    /// Verified bytes of a blob held locally (progress of a fetch the node runs).
    BlobHave {
        hash: String,
    },
    /// Serve a complete blob and publish its mirror announcement.
    BlobMirror {
        hash: String,
    },
    /// This node's swarm address (what others pass to `--from`).
    SwarmAddr,
    /// Export a Podman image into the store; returns the manifest fields (`image`, `origin`).
    ImageExport {
        image: String,
        format: archy_swarm::ArchiveFormat,
    },
}

/// Handles a request. Errors are for a person to read.
pub async fn handle(core: &NodeCore, req: Request) -> Result<Value> {
    match req {
        Request::Status => {
            let mut relays = Vec::new();
            if !core.relay_urls().is_empty() {
                if let Ok(pool) = core.pool().await {
                    relays = pool.health().await;
                }
            }
            let swarm = match core.swarm_if_started() {
                Some(s) => serde_json::to_value(s.addr())?,
                None => Value::Null,
            };
            Ok(json!({
                "home": core.home.root(),
                "identity": core.identity.public(),
                "relays": relays,
                "swarm": swarm,
                // Counted even when a record was pruned (`market rejected` keeps the newest).
                "rejections": core.catalog.rejection_counts()?,
            }))
        }
        Request::ConfigShow => Ok(serde_json::to_value(&core.config)?),
        Request::MarketSync { relays } => {
            let now = unix_now();
            let report = if relays.is_empty() {
                discovery::sync_once(core.pool().await?, &core.catalog, &core.config.policy, now)
                    .await?
            } else {
                let pool = core.pool_for(&relays).await?;
                let r = discovery::sync_once(&pool, &core.catalog, &core.config.policy, now).await;
                pool.shutdown().await;
                r?
            };
            Ok(serde_json::to_value(report)?)
        }
        Request::MarketSearch { text } => {
            super::trust::annotate_apps(core, core.catalog.search(&text)?).await
        }
        Request::MarketShow { app } => {
            let rec = core.resolve_app(&app)?;
            let releases = core.catalog.releases(&rec.did, &rec.app)?;
            let expired: Vec<_> = core
                .catalog
                .rejected()?
                .into_iter()
                .filter(|r| {
                    r.reason == crate::reason::Reason::Expired
                        && r.app
                            .as_ref()
                            .is_some_and(|(d, a, _)| d == &rec.did && a == &rec.app)
                })
                .collect();
            let latest = releases.first().map(|r| r.envelope["manifest"].clone());
            let trust = super::trust::app_trust(core, &rec).await?;
            let mut app = serde_json::to_value(&rec)?;
            app["tier"] = trust["tier"].clone();
            Ok(json!({
                "app": app,
                "trust": trust,
                "latest_manifest": latest,
                "releases": releases.iter().map(|r| json!({
                    "version": r.version, "event_id": r.event_id, "created_at": r.created_at,
                    "latest": r.version == rec.latest,
                })).collect::<Vec<_>>(),
                "expired": expired,
            }))
        }
        Request::MarketRejected => Ok(serde_json::to_value(core.catalog.rejected()?)?),
        Request::TrustShow { key } => super::trust::show(core, &key).await,
        Request::TrustAnchor { key, add } => super::trust::set_anchor(core, &key, add).await,
        Request::TrustBlock { key, block } => super::trust::set_blocked(core, &key, block).await,
        Request::TrustRefresh => Ok(serde_json::to_value(super::trust::refresh(core).await?)?),
        Request::Apps(req) => super::apps::handle(core, req).await,
        Request::BlobAdd { path } => Ok(serde_json::to_value(blobs::add(core, &path).await?)?),
        Request::BlobLs => Ok(serde_json::to_value(blobs::list(core).await?)?),
        Request::BlobGet {
            hash,
            from,
            size,
            find_mirrors,
            mirror,
            out,
        } => {
            let args = blobs::GetArgs {
                hash,
                from,
                size,
                find_mirrors,
                mirror,
                out,
            };
            blobs::get(core, args, None).await
        }
        Request::BlobHave { hash } => blobs::have(core, &hash).await,
        Request::BlobMirror { hash } => Ok(serde_json::to_value(
            blobs::announce_mirror(core, &hash).await?,
        )?),
        Request::SwarmAddr => Ok(json!({"addr": core.swarm().await?.addr().to_string()})),
        Request::ImageExport { image, format } => Ok(serde_json::to_value(
            blobs::export_image(core, &image, format).await?,
        )?),
        Request::Publish { envelope, relays } => {
            let env = Envelope::from_value(envelope).map_err(|v| anyhow::anyhow!("{v}"))?;
            let outcome = if relays.is_empty() {
                publish::publish_release(
                    core.pool().await?,
                    &core.home,
                    &core.identity,
                    &env,
                    unix_now(),
                )
                .await?
            } else {
                let pool = core.pool_for(&relays).await?;
                let r =
                    publish::publish_release(&pool, &core.home, &core.identity, &env, unix_now())
                        .await;
                pool.shutdown().await;
                r?
            };
            Ok(serde_json::to_value(outcome)?)
        }
    }
}
