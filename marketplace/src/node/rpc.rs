//! The operations of a node, as requests with typed replies: the local API's body and the CLI's
//! in-process calls.
//!
//! Each request is a type that implements [`Operation`]: it names its reply type and runs
//! itself against a [`NodeCore`], the way iroh-blobs' `api/proto.rs` declares the reply of
//! every request. The CLI calls an operation through `cli::call`, which runs it in-process or
//! sends it to the running node; either way it gets the typed reply back. [`Request`] is the
//! wire form, `{"method": "...", "params": {...}}`, and [`handle`] is the only place a reply
//! becomes JSON (the local API's edge).

use super::apps::AppsRequest;
use super::blobs::{self, BlobEntry, BlobGetReply, BlobHave, ImageFields, MirrorAnnounced};
use super::discovery::{self, SyncReport};
use super::publish::{self, PublishOutcome};
use super::trust::{AnchorReply, AppListing, BlockReply, PublisherTrust, RefreshReport, TrustShow};
use super::NodeCore;
use crate::catalog::{AppRecord, RejectedRecord};
use crate::envelope::Envelope;
use crate::identity::PublicIdentity;
use crate::manifest::RawManifest;
use crate::unix_now;
use anyhow::Result;
use archy_relays::RelayHealth;
use archy_swarm::{BlobInfo, PeerAddr};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

/// A request that a node runs; `Reply` is what it answers.
pub trait Operation: Into<Request> + Send {
    /// The typed answer (the local API sends it as JSON; `--json` prints it).
    type Reply: Serialize + DeserializeOwned + Send;
    /// Runs the operation against this node.
    fn run(self, core: &NodeCore) -> impl Future<Output = Result<Self::Reply>> + Send;
}

/// One request to a node. The JSON form is `{"method": "...", "params": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    content = "params",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Request {
    /// Identity, relays and their health ([`Status`]).
    Status,
    /// The effective configuration ([`ConfigShow`]).
    ConfigShow,
    MarketSync(MarketSync),
    MarketSearch(MarketSearch),
    MarketShow(MarketShow),
    /// Rejected events ([`MarketRejected`]).
    MarketRejected,
    TrustShow(TrustShowRequest),
    TrustAnchor(TrustAnchor),
    TrustBlock(TrustBlock),
    /// Collect trust signals from the relays and recompute ([`TrustRefresh`]).
    TrustRefresh,
    /// Apps on this machine (install, update, start, stop, …).
    Apps(AppsRequest),
    Publish(Publish),
    BlobAdd(BlobAdd),
    /// Complete blobs in the store ([`BlobLs`]).
    BlobLs,
    BlobGet(BlobGet),
    BlobHave(BlobHaveRequest),
    BlobMirror(BlobMirror),
    /// Garbage collection ([`BlobGc`]).
    BlobGc(BlobGc),
    /// Pin or unpin a blob ([`BlobPin`]).
    BlobPin(BlobPin),
    /// This node's swarm address ([`SwarmAddr`]).
    SwarmAddr,
    /// The fetches in flight, with their progress ([`Transfers`]).
    Transfers,
    ImageExport(ImageExport),
}

/// Runs a wire request and serialises its typed reply: the local API's edge.
pub async fn handle(core: &NodeCore, req: Request) -> Result<serde_json::Value> {
    match req {
        Request::Status => wire(core, Status).await,
        Request::ConfigShow => wire(core, ConfigShow).await,
        Request::MarketSync(op) => wire(core, op).await,
        Request::MarketSearch(op) => wire(core, op).await,
        Request::MarketShow(op) => wire(core, op).await,
        Request::MarketRejected => wire(core, MarketRejected).await,
        Request::TrustShow(op) => wire(core, op).await,
        Request::TrustAnchor(op) => wire(core, op).await,
        Request::TrustBlock(op) => wire(core, op).await,
        Request::TrustRefresh => wire(core, TrustRefresh).await,
        Request::Apps(req) => super::apps::handle(core, req).await,
        Request::Publish(op) => wire(core, op).await,
        Request::BlobAdd(op) => wire(core, op).await,
        Request::BlobLs => wire(core, BlobLs).await,
        Request::BlobGet(op) => wire(core, op).await,
        Request::BlobHave(op) => wire(core, op).await,
        Request::BlobMirror(op) => wire(core, op).await,
        Request::BlobGc(op) => wire(core, op).await,
        Request::BlobPin(op) => wire(core, op).await,
        Request::SwarmAddr => wire(core, SwarmAddr).await,
        Request::Transfers => wire(core, Transfers).await,
        Request::ImageExport(op) => wire(core, op).await,
    }
}

/// Runs one operation and serialises its reply (for [`handle`]).
pub(crate) async fn wire<O: Operation>(core: &NodeCore, op: O) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(op.run(core).await?)?)
}

/// Declares `From<$op> for Request` for a request that is a unit variant.
macro_rules! unit_request {
    ($($op:ident),*) => {$(
        impl From<$op> for Request {
            fn from(_: $op) -> Request {
                Request::$op
            }
        }
    )*};
}

/// Declares `From<$op> for Request` for a request that is a variant holding it.
macro_rules! struct_request {
    ($($variant:ident($op:ident)),*) => {$(
        impl From<$op> for Request {
            fn from(op: $op) -> Request {
                Request::$variant(op)
            }
        }
    )*};
}

unit_request!(
    Status,
    ConfigShow,
    MarketRejected,
    TrustRefresh,
    BlobLs,
    SwarmAddr,
    Transfers
);
struct_request!(
    MarketSync(MarketSync),
    MarketSearch(MarketSearch),
    MarketShow(MarketShow),
    TrustShow(TrustShowRequest),
    TrustAnchor(TrustAnchor),
    TrustBlock(TrustBlock),
    Publish(Publish),
    BlobAdd(BlobAdd),
    BlobGet(BlobGet),
    BlobHave(BlobHaveRequest),
    BlobMirror(BlobMirror),
    BlobGc(BlobGc),
    BlobPin(BlobPin),
    ImageExport(ImageExport)
);

// ---- node -----------------------------------------------------------------------------------

/// Identity, relays and their health.
#[derive(Debug, Clone, Copy)]
pub struct Status;

/// The reply of [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReply {
    pub home: PathBuf,
    pub identity: PublicIdentity,
    pub relays: Vec<RelayHealth>,
    /// The swarm's address, when the blob store was started.
    pub swarm: Option<PeerAddr>,
    /// The OCI registry's address (`host:port`, plain HTTP on loopback), when it was started:
    /// `skopeo copy --src-tls-verify=false docker://<it>/<any name>@<digest> …` pulls any image
    /// the node holds.
    pub registry: Option<String>,
    /// Rejections per reason code, counted even when a record was pruned (`market rejected`
    /// keeps the newest).
    pub rejections: BTreeMap<String, u64>,
}

impl Operation for Status {
    type Reply = StatusReply;
    async fn run(self, core: &NodeCore) -> Result<StatusReply> {
        let mut relays = Vec::new();
        if !core.relay_urls().is_empty() {
            if let Ok(pool) = core.pool().await {
                relays = pool.health().await;
            }
        }
        Ok(StatusReply {
            home: core.home.root().to_path_buf(),
            identity: core.identity.public(),
            relays,
            swarm: core.swarm_if_started().map(|s| s.addr()),
            registry: core.registry_if_started().map(|r| r.addr().to_string()),
            rejections: core.catalog.rejection_counts()?,
        })
    }
}

/// The effective configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConfigShow;

impl Operation for ConfigShow {
    type Reply = super::config::NodeConfig;
    async fn run(self, core: &NodeCore) -> Result<Self::Reply> {
        Ok(core.config.clone())
    }
}

// ---- market ---------------------------------------------------------------------------------

/// One discovery pass (over `relays`, or the node's own when empty). Also the arguments of
/// `archy market sync`, as the other request types below are of their commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct MarketSync {
    /// Relays to read (default: the node's own relays).
    #[arg(long = "relay", value_name = "URL")]
    pub relays: Vec<String>,
}

impl Operation for MarketSync {
    type Reply = SyncReport;
    async fn run(self, core: &NodeCore) -> Result<SyncReport> {
        let now = unix_now();
        if self.relays.is_empty() {
            return discovery::sync_once(
                core.pool().await?,
                &core.catalog,
                &core.config.policy,
                now,
            )
            .await;
        }
        let pool = core.pool_for(&self.relays).await?;
        let r = discovery::sync_once(&pool, &core.catalog, &core.config.policy, now).await;
        pool.shutdown().await;
        r
    }
}

/// Catalog apps whose id, name or summary contain `text`, each with its publisher's trust.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct MarketSearch {
    /// Empty: every app.
    #[arg(default_value = "")]
    pub text: String,
}

impl Operation for MarketSearch {
    type Reply = Vec<AppListing>;
    async fn run(self, core: &NodeCore) -> Result<Vec<AppListing>> {
        super::trust::annotate_apps(core, core.catalog.search(&self.text)?).await
    }
}

/// One app of the catalog: its releases, expired ones and its publisher's trust.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct MarketShow {
    pub app: String,
}

/// The reply of [`MarketShow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarketShowReply {
    pub app: AppWithTier,
    pub trust: PublisherTrust,
    /// The latest release's manifest, as signed.
    pub latest_manifest: Option<RawManifest>,
    pub releases: Vec<ReleaseLine>,
    /// `expired` rejections of this app.
    pub expired: Vec<RejectedRecord>,
}

/// A catalog app with its publisher's tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppWithTier {
    #[serde(flatten)]
    pub app: AppRecord,
    pub tier: archy_trust::Tier,
}

/// One release in [`MarketShowReply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseLine {
    pub version: String,
    pub event_id: String,
    pub created_at: u64,
    pub latest: bool,
}

impl Operation for MarketShow {
    type Reply = MarketShowReply;
    async fn run(self, core: &NodeCore) -> Result<MarketShowReply> {
        let rec = core.resolve_app(&self.app)?;
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
        let latest_manifest = releases
            .first()
            .and_then(|r| r.envelope.get("manifest"))
            .and_then(|m| m.as_object())
            .cloned();
        let trust = super::trust::app_trust(core, &rec).await?;
        Ok(MarketShowReply {
            releases: releases
                .iter()
                .map(|r| ReleaseLine {
                    version: r.version.clone(),
                    event_id: r.event_id.clone(),
                    created_at: r.created_at,
                    latest: r.version == rec.latest,
                })
                .collect(),
            app: AppWithTier {
                app: rec,
                tier: trust.tier,
            },
            trust,
            latest_manifest,
            expired,
        })
    }
}

/// Rejected events, newest kept.
#[derive(Debug, Clone, Copy)]
pub struct MarketRejected;

impl Operation for MarketRejected {
    type Reply = Vec<RejectedRecord>;
    async fn run(self, core: &NodeCore) -> Result<Vec<RejectedRecord>> {
        core.catalog.rejected()
    }
}

// ---- trust ----------------------------------------------------------------------------------

/// Score, tier and explanation of a key (npub, hex or a DID in the catalog).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct TrustShowRequest {
    pub key: String,
}

impl Operation for TrustShowRequest {
    type Reply = TrustShow;
    async fn run(self, core: &NodeCore) -> Result<TrustShow> {
        super::trust::show(core, &self.key).await
    }
}

/// Add or remove a trust anchor (persisted to config.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAnchor {
    pub key: String,
    pub add: bool,
}

impl Operation for TrustAnchor {
    type Reply = AnchorReply;
    async fn run(self, core: &NodeCore) -> Result<AnchorReply> {
        super::trust::set_anchor(core, &self.key, self.add).await
    }
}

/// Block or unblock a key (persisted to config.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBlock {
    pub key: String,
    pub block: bool,
}

impl Operation for TrustBlock {
    type Reply = BlockReply;
    async fn run(self, core: &NodeCore) -> Result<BlockReply> {
        super::trust::set_blocked(core, &self.key, self.block).await
    }
}

/// Collect trust signals from the relays and recompute.
#[derive(Debug, Clone, Copy)]
pub struct TrustRefresh;

impl Operation for TrustRefresh {
    type Reply = RefreshReport;
    async fn run(self, core: &NodeCore) -> Result<RefreshReport> {
        super::trust::refresh(core).await
    }
}

// ---- publish --------------------------------------------------------------------------------

/// Publish a signed envelope (made by this node's identity) as a release event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub envelope: Envelope,
    pub relays: Vec<String>,
}

impl Operation for Publish {
    type Reply = PublishOutcome;
    async fn run(self, core: &NodeCore) -> Result<PublishOutcome> {
        if self.relays.is_empty() {
            return publish::publish_release(
                core.pool().await?,
                &core.home,
                &core.identity,
                &self.envelope,
                unix_now(),
            )
            .await;
        }
        let pool = core.pool_for(&self.relays).await?;
        let r = publish::publish_release(
            &pool,
            &core.home,
            &core.identity,
            &self.envelope,
            unix_now(),
        )
        .await;
        pool.shutdown().await;
        r
    }
}

// ---- blobs ----------------------------------------------------------------------------------

/// Add a file (an absolute path on the node's machine) to the blob store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobAdd {
    pub path: PathBuf,
}

impl Operation for BlobAdd {
    type Reply = BlobInfo;
    async fn run(self, core: &NodeCore) -> Result<BlobInfo> {
        blobs::add(core, &self.path).await
    }
}

/// Complete blobs in the store.
#[derive(Debug, Clone, Copy)]
pub struct BlobLs;

impl Operation for BlobLs {
    type Reply = Vec<BlobEntry>;
    async fn run(self, core: &NodeCore) -> Result<Vec<BlobEntry>> {
        blobs::list(core).await
    }
}

/// Fetch a blob: `from[0]` as the origin, the rest as peers; `find_mirrors` adds the §4.3
/// mirrors; `mirror` serves and announces it afterwards; `out` exports it to a file. Also the
/// arguments of `archy blob get` (one definition for the CLI and the API).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct BlobGet {
    pub hash: String,
    /// Endpoint addresses as `archy blob serve` prints them (`<id>@ip:port,...`). The first
    /// is dialled as the origin (tried first, used while it answers), the others as peers.
    #[arg(long = "from", value_name = "ENDPOINT_ADDR", num_args = 1..)]
    pub from: Vec<String>,
    /// The expected size in bytes (from a manifest); the fetch fails on any other size.
    #[arg(long)]
    #[serde(default)]
    pub size: Option<u64>,
    /// Also look up mirrors announced on the relays (used when the origin fails).
    #[arg(long)]
    #[serde(default)]
    pub find_mirrors: bool,
    /// Afterwards, serve the blob and announce this node as a mirror on the relays.
    #[arg(long)]
    #[serde(default)]
    pub mirror: bool,
    /// Write the blob to this file.
    #[arg(long)]
    #[serde(default)]
    pub out: Option<PathBuf>,
}

impl Operation for BlobGet {
    type Reply = BlobGetReply;
    async fn run(self, core: &NodeCore) -> Result<BlobGetReply> {
        blobs::get(core, self).await
    }
}

/// Verified bytes of a blob held locally (progress of a fetch the node runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobHaveRequest {
    pub hash: String,
}

impl Operation for BlobHaveRequest {
    type Reply = BlobHave;
    async fn run(self, core: &NodeCore) -> Result<BlobHave> {
        blobs::have(core, &self.hash).await
    }
}

/// Serve a complete blob and publish its mirror announcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobMirror {
    pub hash: String,
}

impl Operation for BlobMirror {
    type Reply = MirrorAnnounced;
    async fn run(self, core: &NodeCore) -> Result<MirrorAnnounced> {
        blobs::mirror_by_operator(core, &self.hash).await
    }
}

/// Garbage collection by the one definition of live (`node::gc`): what goes, what stays and
/// why. Without `dry_run`, it waits for the store's sweep and rebuilds the registry's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobGc {
    pub dry_run: bool,
}

impl Operation for BlobGc {
    type Reply = super::gc::GcReport;
    async fn run(self, core: &NodeCore) -> Result<super::gc::GcReport> {
        let mut report = {
            let _exclusive = core.app_ops.lock().await;
            super::gc::run(core, self.dry_run).await?
        };
        if !self.dry_run {
            super::gc::settle(core, &mut report).await?;
        }
        Ok(report)
    }
}

/// Pin (`pinned`) or unpin a blob: a pinned blob is live whatever else holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobPin {
    pub hash: String,
    pub pinned: bool,
}

/// The reply of [`BlobPin`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobPinReply {
    pub hash: String,
    pub pinned: bool,
    /// Whether this changed anything.
    pub changed: bool,
}

impl Operation for BlobPin {
    type Reply = BlobPinReply;
    async fn run(self, core: &NodeCore) -> Result<BlobPinReply> {
        let swarm = core.swarm().await?;
        let hash = archy_swarm::parse_hash(&self.hash)?.to_hex();
        let changed = swarm.set_pin(&hash, self.pinned)?;
        Ok(BlobPinReply {
            hash,
            pinned: self.pinned,
            changed,
        })
    }
}

/// This node's swarm address (what others pass to `--from`).
#[derive(Debug, Clone, Copy)]
pub struct SwarmAddr;

/// The reply of [`SwarmAddr`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwarmAddrReply {
    /// `<endpoint id>@ip:port,…`
    pub addr: String,
}

impl Operation for SwarmAddr {
    type Reply = SwarmAddrReply;
    async fn run(self, core: &NodeCore) -> Result<SwarmAddrReply> {
        Ok(SwarmAddrReply {
            addr: core.swarm().await?.addr().to_string(),
        })
    }
}

/// The fetches this node runs now (installs, updates, `blob get`), each with its bytes, rate
/// and what every source has sent: one typed progress stream, read by polling.
#[derive(Debug, Clone, Copy)]
pub struct Transfers;

impl Operation for Transfers {
    type Reply = Vec<archy_swarm::Transfer>;
    async fn run(self, core: &NodeCore) -> Result<Vec<archy_swarm::Transfer>> {
        Ok(core.transfers.list())
    }
}

/// Export a Podman image into the store; replies with the manifest fields it fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageExport {
    pub image: String,
    pub format: blobs::ExportFormat,
}

impl Operation for ImageExport {
    type Reply = ImageFields;
    async fn run(self, core: &NodeCore) -> Result<ImageFields> {
        blobs::export_image(core, &self.image, self.format).await
    }
}
