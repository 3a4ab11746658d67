//! Blobs and images on the node (issue 5, items 3–5): the store (`archy blob add|ls|get`), the
//! publisher side of images (`archy app publish --image`), and mirrors (PROTOCOL §4.3).
//!
//! - [`fetch_blob`]: what the install flow calls with a verified manifest's hash, size and
//!   origin. It looks mirrors up on the relays, ranks them (the caller's `rank_mirrors`; trust
//!   scoring plugs in there), and fetches by the §5 rules: pieces from the origin and the
//!   first mirrors at once, the rest origin-first.
//! - [`announce_mirror`]: serve a complete blob and publish the §4.3 announcement;
//!   [`mirror_if_configured`] does it after a verified fetch when `[swarm] mirror` is on.
//! - [`export_image`]: `podman save` to a scratch file, added to the store; [`ImageFields::fill`]
//!   writes the result into a manifest before it is signed. (The swarm only moves files; the
//!   node's Podman client, from the orchestrator, makes and loads the archives.)
//!
//! The pure parts ([`mirror_candidates`], [`ImageFields::fill`]) are apart from
//! the I/O so they are unit-tested without relays or iroh.

use super::NodeCore;
use crate::events::{build_mirror_event, mirror_filter, parse_mirror_event, MirrorAnnouncement};
use anyhow::{bail, Context, Result};
use archy_orchestrator::{ArchiveFormat, Images};
use archy_swarm::{
    BlobInfo, FetchEvent, FetchReport, FetchRequest, PeerAddr, SwarmError, Transfer,
};
use nostr_sdk::prelude::Event;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// A peer that announced (§4.3) that it serves a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCandidate {
    /// The announcer's Nostr key (hex): whom trust evidence is recorded against.
    pub nostr: String,
    pub peer: PeerAddr,
    /// The announcement's `created_at` (unix seconds).
    pub created_at: u64,
    /// Announced while still fetching (§4.3 v2): it serves what it has verified so far.
    #[serde(default)]
    pub partial: bool,
}

/// Whom a source's bad bytes count against (PROTOCOL §5.4): the publisher's key for the
/// release's origin, the announcer's key for a mirror. Sources given by hand (`--from`) are
/// nobody's: their bad bytes are reported, not recorded.
#[derive(Debug, Clone, Default)]
pub struct Accountable {
    /// The publisher's Nostr key (hex), when the request's origin is a release's origin.
    pub origin_key: Option<String>,
    /// The announcements the peers came from.
    pub announcers: Vec<MirrorCandidate>,
}

/// The evidence records for a fetch's bad sources: one per (key, endpoint), against the
/// publisher when the source is `origin` (the request's origin endpoint) and against every
/// key whose announcement named the source's endpoint.
pub fn blame(
    bad: &[(String, String)],
    hash: &str,
    origin: Option<&str>,
    who: &Accountable,
    at: u64,
) -> Vec<crate::catalog::BadSourceRecord> {
    let mut out: Vec<crate::catalog::BadSourceRecord> = Vec::new();
    for (endpoint, reason) in bad {
        let from_origin = who
            .origin_key
            .iter()
            .filter(|_| origin == Some(endpoint.as_str()));
        let from_announcements = who
            .announcers
            .iter()
            .filter(|c| &c.peer.endpoint == endpoint)
            .map(|c| &c.nostr);
        for key in from_origin.chain(from_announcements) {
            if out
                .iter()
                .any(|r| &r.nostr == key && &r.endpoint == endpoint)
            {
                continue;
            }
            out.push(crate::catalog::BadSourceRecord {
                nostr: key.clone(),
                endpoint: endpoint.clone(),
                hash: hash.to_owned(),
                reason: reason.clone(),
                at,
            });
        }
    }
    out
}

/// Records a fetch's bad sources as trust evidence and re-scores (a failure to record is
/// logged: the fetch's own result stands).
async fn record_blame(
    core: &NodeCore,
    report: &FetchReport,
    origin: Option<&str>,
    who: &Accountable,
) {
    if report.bad_sources.is_empty() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let records = blame(&report.bad_sources, &report.hash, origin, who, now);
    if let Err(e) = super::trust::record_bad_sources(core, &records) {
        tracing::warn!("bad-bytes evidence not recorded: {e:#}");
    }
}

/// Reads §4.3 announcements for `hash` into candidates: invalid events, other hashes and our own
/// key (`own_nostr`) are skipped; per announcer only the newest announcement counts.
pub fn mirror_candidates(events: &[Event], hash: &str, own_nostr: &str) -> Vec<MirrorCandidate> {
    let mut by_author: std::collections::BTreeMap<String, MirrorCandidate> = Default::default();
    for event in events {
        let nostr = event.pubkey.to_hex();
        // An announcement past its NIP-40 expiration is gone, whether or not a relay kept it.
        if nostr == own_nostr || event.is_expired() {
            continue;
        }
        let ann = match parse_mirror_event(event, hash) {
            Ok(offer) => offer.announcement,
            Err(e) => {
                tracing::debug!(event = %event.id, "ignoring mirror announcement: {e:#}");
                continue;
            }
        };
        let addrs = ann.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let Ok(peer) = PeerAddr::new(&ann.endpoint, addrs) else {
            continue;
        };
        let cand = MirrorCandidate {
            nostr: nostr.clone(),
            peer,
            created_at: event.created_at.as_secs(),
            partial: ann.partial,
        };
        match by_author.get(&nostr) {
            Some(old) if old.created_at >= cand.created_at => {}
            _ => {
                by_author.insert(nostr, cand);
            }
        }
    }
    by_author.into_values().collect()
}

/// Mirrors of `hash` announced on the node's relays (excluding this node), unordered.
pub async fn find_mirrors(core: &NodeCore, hash: &str) -> Result<Vec<MirrorCandidate>> {
    let hash = archy_swarm::parse_hash(hash)?.to_hex();
    let pool = core.pool().await?;
    let events = pool
        .fetch(mirror_filter(&hash), None)
        .await
        .context("looking up mirror announcements")?;
    Ok(mirror_candidates(
        &events,
        &hash,
        &core.identity.nostr_hex(),
    ))
}

/// The stall timeout configured for this node.
fn stall_timeout(core: &NodeCore) -> Duration {
    Duration::from_secs(core.config.swarm.stall_timeout_secs.max(1))
}

/// Fetches a blob named by a verified manifest (§5): `hash` and `size` from the manifest, the
/// manifest's `origin` first, then mirrors announced on the relays in the order `rank_mirrors`
/// gives (a ranker may also drop candidates below the trust threshold), and those announced
/// while it runs. A failed mirror look-up (relays down) only loses the mirrors. Bad sources
/// are recorded as trust evidence against the `publisher` (the origin) or their announcers;
/// the report names them and the bytes each source sent. With `[swarm] mirror` on, the node
/// serves the blob as a partial mirror while it fetches, and as a mirror once it is complete.
pub async fn fetch_blob(
    core: &NodeCore,
    hash: &str,
    size: u64,
    origin: PeerAddr,
    rank_mirrors: impl Fn(Vec<MirrorCandidate>) -> Vec<MirrorCandidate>,
    publisher: Option<&str>,
) -> Result<FetchReport> {
    let mut req = FetchRequest::new(hash, size);
    req.origin = Some(origin);
    let who = Accountable {
        origin_key: publisher.map(str::to_owned),
        announcers: Vec::new(),
    };
    start_partial(core, hash, &[]).await;
    match fetch_with_mirrors(core, req, true, rank_mirrors, who).await {
        Ok(report) => {
            mirror_if_configured(core, hash).await;
            Ok(report)
        }
        Err(e) => {
            end_partial(core, hash).await;
            Err(e)
        }
    }
}

/// How often the relays are asked for new mirrors while a fetch runs (partial mirrors announce
/// themselves when they start, so a fetch that began with the origin alone finds them).
const WATCH_MIRRORS_EVERY: Duration = Duration::from_secs(2);
/// The first looks during a fetch come quicker: [`WATCH_EARLY_LOOKS`] of them, this far apart.
const WATCH_MIRRORS_EARLY: Duration = Duration::from_millis(250);
const WATCH_EARLY_LOOKS: u32 = 8;

/// Room kept free beyond a blob's own bytes: for its verification data (about 1/256 of the
/// blob; 1/64 is counted) plus this reserve for the store's metadata. iroh-blobs' store can stop
/// for good (until the node restarts) when a write fails for lack of space, so a fetch that
/// cannot fit is refused before it starts.
const DISK_RESERVE: u64 = 16 << 20;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Bytes this user may still write on the file system holding `dir`.
fn free_space(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir)
        .with_context(|| format!("reading the free disk space at {}", dir.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Disk space a blob needs while `missing` of its bytes are still to be written.
fn space_needed(missing: u64) -> u64 {
    missing + missing / 64 + DISK_RESERVE
}

/// Refuses a fetch whose `missing` bytes would not fit on the disk of the blob store at `dir`.
fn check_disk_space(dir: &Path, hash: &str, missing: u64) -> Result<()> {
    let needed = space_needed(missing);
    let free = free_space(dir)?;
    if free < needed {
        bail!(
            "not enough disk space at {}: blob {hash} needs {} ({missing} bytes still missing, \
             their verification data and a reserve for the store), only {} are free; free some \
             space and fetch again",
            dir.display(),
            mib(needed),
            mib(free)
        );
    }
    Ok(())
}

/// A fetch that failed while the disk filled up says so, and where: the store reports a
/// write that ran out of space as the source's failed transfer ("No space left on device"),
/// or, once its database stopped, only as a closed channel; so the free space is checked too.
async fn name_disk_full(
    swarm: &archy_swarm::Swarm,
    e: SwarmError,
    hash: &str,
    size: Option<u64>,
) -> anyhow::Error {
    let text = e.to_string();
    let said = text.contains("No space left on device") || text.contains("os error 28");
    let free = free_space(swarm.dir()).ok();
    let short = match (size, free) {
        (Some(size), Some(free)) => {
            let have = swarm.local_bytes(hash).await.unwrap_or(0);
            free < space_needed(size.saturating_sub(have))
        }
        _ => false,
    };
    if !(said || short) {
        return e.into();
    }
    let free = free.map(mib).unwrap_or_else(|| "unknown".into());
    anyhow::Error::new(e).context(format!(
        "not enough disk space at {}: the disk filled up while blob {hash} was written ({free} \
         free now); nothing incomplete is kept as complete. Free some space and fetch again; if \
         blob commands keep failing, restart the node (the blob store may have stopped)",
        swarm.dir().display()
    ))
}

/// The general fetch behind [`fetch_blob`] and `archy blob get`: `req.origin`/`req.peers` as
/// given, plus (when `lookup_mirrors`) the announced mirrors ranked by `rank_mirrors`, looked
/// up at the start and every [`WATCH_MIRRORS_EVERY`] while the fetch runs (new ones join it).
/// Duplicates (and the origin among the peers) are dropped, first mention wins. Sources that
/// send bytes that do not verify are recorded against `who` (and the announcers looked up).
pub async fn fetch_with_mirrors(
    core: &NodeCore,
    mut req: FetchRequest,
    lookup_mirrors: bool,
    rank_mirrors: impl Fn(Vec<MirrorCandidate>) -> Vec<MirrorCandidate>,
    mut who: Accountable,
) -> Result<FetchReport> {
    let swarm = core.swarm().await?;
    req.stall_timeout = stall_timeout(core);
    req.min_rate = core.config.swarm.min_rate_bytes_per_sec;
    // Asked of the store once: a complete blob needs no space, no mirrors and no watch.
    let missing = !swarm.has(&req.hash).await?;
    if let Some(size) = req.size.filter(|_| missing) {
        let have = swarm.local_bytes(&req.hash).await?;
        check_disk_space(swarm.dir(), &req.hash, size.saturating_sub(have))?;
    }
    let watching = lookup_mirrors && missing;
    if watching {
        match find_mirrors(core, &req.hash).await {
            Ok(found) => {
                let ranked = rank_mirrors(found);
                tracing::info!(hash = %req.hash, mirrors = ranked.len(), "mirror look-up");
                req.peers.extend(ranked.iter().map(|c| c.peer.clone()));
                who.announcers.extend(ranked);
            }
            Err(e) => tracing::warn!("mirror look-up failed, fetching without mirrors: {e:#}"),
        }
    }
    let mut seen: std::collections::HashSet<String> =
        req.origin.iter().map(|o| o.endpoint.clone()).collect();
    req.peers.retain(|p| seen.insert(p.endpoint.clone()));
    let (hash, size) = (req.hash.clone(), req.size);
    let origin = req.origin.as_ref().map(|o| o.endpoint.clone());
    // Every event is folded into the node's list of fetches in flight (what the CLI and the
    // local API show).
    let live = core.transfers.start(&hash, size);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FetchEvent>(64);
    let fold = async {
        while let Some(ev) = rx.recv().await {
            live.apply(&ev);
        }
    };
    // Mirrors announced while the fetch runs (partial ones, started after us) join it.
    let (more_tx, more_rx) = tokio::sync::watch::channel(Vec::new());
    if watching {
        req.more_peers = Some(more_rx);
    }
    let late = std::sync::Mutex::new(Vec::<MirrorCandidate>::new());
    let watch = async {
        if !watching {
            return std::future::pending::<()>().await;
        }
        let mut look = 0u32;
        loop {
            // Often at first, so fetchers that start together find each other (and share the
            // origin's pieces out, PROTOCOL §5.3) before they ask it for much.
            let wait = if look < WATCH_EARLY_LOOKS {
                WATCH_MIRRORS_EARLY
            } else {
                WATCH_MIRRORS_EVERY
            };
            look = look.saturating_add(1);
            tokio::time::sleep(wait).await;
            match find_mirrors(core, &hash).await {
                Ok(found) => {
                    let ranked = rank_mirrors(found);
                    more_tx.send_replace(ranked.iter().map(|c| c.peer.clone()).collect());
                    let mut late = late.lock().expect("late mirrors lock");
                    for c in ranked {
                        if !late.contains(&c) {
                            late.push(c);
                        }
                    }
                }
                Err(e) => tracing::debug!("mirror look-up during the fetch failed: {e:#}"),
            }
        }
    };
    let fetch = async {
        tokio::select! {
            r = swarm.fetch(req, Some(tx)) => r,
            () = watch => unreachable!("the mirror watch never ends"),
        }
    };
    let (result, ()) = tokio::join!(fetch, fold);
    drop(live);
    // Bad bytes from a mirror that joined late count against its announcer too.
    who.announcers
        .extend(late.into_inner().expect("late mirrors lock"));
    match result {
        Ok(report) => {
            record_blame(core, &report, origin.as_deref(), &who).await;
            Ok(report)
        }
        Err(e) => {
            if let SwarmError::Exhausted { report, .. } = &e {
                record_blame(core, report, origin.as_deref(), &who).await;
            }
            Err(name_disk_full(swarm, e, &hash, size).await)
        }
    }
}

/// The reply of `archy blob get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobGetReply {
    pub hash: String,
    pub size: u64,
    /// The file it was exported to.
    pub out: Option<std::path::PathBuf>,
    pub report: FetchReport,
    /// The mirror announcement, with `--mirror`.
    pub mirror: Option<MirrorAnnounced>,
}

/// `archy blob get`: fetch (origin = first `--from`), optionally export to a file and become a
/// mirror.
pub async fn get(core: &NodeCore, args: super::rpc::BlobGet) -> Result<BlobGetReply> {
    let mut addrs = Vec::new();
    for f in &args.from {
        addrs.push(f.parse::<PeerAddr>()?);
    }
    if addrs.is_empty() && !args.find_mirrors {
        bail!("no source: pass --from ENDPOINT_ADDR (what `archy blob serve` prints), or --find-mirrors to look mirrors up on the relays");
    }
    let mut addrs = addrs.into_iter();
    let origin = addrs.next();
    let peers: Vec<PeerAddr> = addrs.collect();
    if args.mirror {
        // Pinned before the fetch, so no GC pass can take it between the fetch and the mirror;
        // served (and announced) as a partial mirror while it is fetched.
        core.swarm().await?.set_pin(&args.hash, true)?;
        serve_partial(core, &args.hash, &[]).await;
    }
    // With a size, an origin and --find-mirrors this is the install flow's path (what a
    // verified manifest gives), minus a publisher to hold bad bytes against.
    let mut req = match args.size {
        Some(size) => FetchRequest::new(&args.hash, size),
        None => FetchRequest::hash_only(&args.hash),
    };
    req.origin = origin;
    req.peers = peers;
    // Mirrors by trust tier, at random within a tier, as for an install (PROTOCOL §5.3).
    let scores = core.trust()?.scores();
    let report = match fetch_with_mirrors(
        core,
        req,
        args.find_mirrors,
        |c| super::install::rank_mirrors(c, &scores),
        Accountable::default(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            end_partial(core, &args.hash).await;
            return Err(e);
        }
    };
    if let Some(out) = &args.out {
        core.swarm().await?.export(&report.hash, out).await?;
    }
    let announced = if args.mirror {
        Some(mirror_by_operator(core, &report.hash).await?)
    } else {
        None
    };
    Ok(BlobGetReply {
        hash: report.hash.clone(),
        size: report.size,
        out: args.out,
        report,
        mirror: announced,
    })
}

/// `archy blob add`: a file into the store, served from now on (it is ours).
pub async fn add(core: &NodeCore, path: &Path) -> Result<BlobInfo> {
    Ok(core.swarm().await?.add_file(path).await?)
}

/// A blob in `archy blob ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    pub hash: String,
    pub size: u64,
    pub mirrored: bool,
}

/// `archy blob ls`: complete blobs in the store.
pub async fn list(core: &NodeCore) -> Result<Vec<BlobEntry>> {
    let swarm = core.swarm().await?;
    Ok(swarm
        .list()
        .await?
        .into_iter()
        .map(|b| BlobEntry {
            mirrored: swarm.is_mirrored(&b.hash),
            hash: b.hash,
            size: b.size,
        })
        .collect())
}

/// The fetches in flight on this node, each as its [`Transfer`] so far: what the CLI draws while
/// an install or `blob get` runs, and what the local API lists (`transfers`).
#[derive(Debug, Default)]
pub struct Transfers {
    next: std::sync::atomic::AtomicU64,
    live: std::sync::Mutex<std::collections::BTreeMap<u64, Transfer>>,
}

impl Transfers {
    /// The fetches in flight, oldest first.
    pub fn list(&self) -> Vec<Transfer> {
        self.live
            .lock()
            .expect("transfers lock")
            .values()
            .cloned()
            .collect()
    }

    /// Lists a new fetch until the returned guard is dropped (however the fetch ends).
    fn start(&self, hash: &str, size: Option<u64>) -> LiveTransfer<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live
            .lock()
            .expect("transfers lock")
            .insert(id, Transfer::new(hash, size));
        LiveTransfer { list: self, id }
    }
}

/// One listed fetch; dropping it takes the fetch off the list.
struct LiveTransfer<'a> {
    list: &'a Transfers,
    id: u64,
}

impl LiveTransfer<'_> {
    fn apply(&self, ev: &FetchEvent) {
        if let Some(t) = self
            .list
            .live
            .lock()
            .expect("transfers lock")
            .get_mut(&self.id)
        {
            t.apply(ev);
        }
    }
}

impl Drop for LiveTransfer<'_> {
    fn drop(&mut self) {
        self.list
            .live
            .lock()
            .expect("transfers lock")
            .remove(&self.id);
    }
}

/// Verified bytes of a blob held locally.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobHave {
    pub hash: String,
    pub have: u64,
    pub complete: bool,
}

/// Verified bytes of `hash` held locally (for progress while a running node fetches).
pub async fn have(core: &NodeCore, hash: &str) -> Result<BlobHave> {
    let swarm = core.swarm().await?;
    Ok(BlobHave {
        hash: hash.to_owned(),
        have: swarm.local_bytes(hash).await?,
        complete: swarm.has(hash).await?,
    })
}

/// The result of [`announce_mirror`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorAnnounced {
    pub hash: String,
    pub event_id: String,
    pub endpoint: PeerAddr,
    pub accepted: usize,
}

/// Serves a complete local blob to others and publishes the §4.3 announcement (replaceable:
/// a newer one from this node replaces the older on the relays, a partial one too). A layered
/// image's root is announced with an `x` tag for each of its parts.
pub async fn announce_mirror(core: &NodeCore, hash: &str) -> Result<MirrorAnnounced> {
    let swarm = core.swarm().await?;
    let hash = archy_swarm::parse_hash(hash)?.to_hex();
    swarm
        .mirror_add(&hash)
        .await
        .with_context(|| format!("mirroring {hash}"))?;
    publish_announcement(core, &hash, &swarm.served_children(&hash), false).await
}

/// Publishes this node's §4.3 announcement of `hash` (`partial` while it is still fetching).
async fn publish_announcement(
    core: &NodeCore,
    hash: &str,
    children: &[String],
    partial: bool,
) -> Result<MirrorAnnounced> {
    let addr = core.swarm().await?.addr();
    let ann = MirrorAnnouncement {
        endpoint: addr.endpoint.clone(),
        addrs: addr.addrs.iter().map(ToString::to_string).collect(),
        partial,
    };
    let at = core.event_time(hash);
    let event = build_mirror_event(core.identity.nostr_keys(), hash, children, &ann, at)?;
    let report = core
        .pool()
        .await?
        .publish(&event)
        .await
        .with_context(|| format!("publishing the mirror announcement of {hash}"))?;
    tracing::info!(%hash, event = %event.id, partial, parts = children.len(), "mirror announced");
    Ok(MirrorAnnounced {
        hash: hash.to_owned(),
        event_id: event.id.to_hex(),
        endpoint: addr,
        accepted: report.accepted,
    })
}

/// When the node mirrors what it fetches (`[swarm] mirror`): serves `hash` while it is still
/// being fetched, what it has verified (`children`: a layered image's parts, served under their
/// own hashes too), and announces it `"partial": true` (§4.3 v2) so that nodes fetching the
/// same release at the same time share the load. Best effort: a failure is logged.
pub async fn start_partial(core: &NodeCore, hash: &str, children: &[archy_swarm::Hash]) {
    if core.config.swarm.mirror {
        serve_partial(core, hash, children).await;
    }
}

/// [`start_partial`] whatever the configuration (the operator asked to mirror the blob).
async fn serve_partial(core: &NodeCore, hash: &str, children: &[archy_swarm::Hash]) {
    let started = async {
        let swarm = core.swarm().await?;
        // A layered image's root is complete before its parts are fetched: what is partial
        // then is the image, so only a plain blob held whole is no partial mirror.
        if swarm.is_mirrored(hash) || (children.is_empty() && swarm.has(hash).await?) {
            return Ok(());
        }
        swarm.serve_partial(hash, children)?;
        let children: Vec<String> = children.iter().map(|c| c.to_hex()).collect();
        publish_announcement(core, hash, &children, true).await?;
        anyhow::Ok(())
    };
    if let Err(e) = started.await {
        tracing::warn!("not announced as a partial mirror of {hash}: {e:#}");
    }
}

/// A fetch that failed: stop serving its partial blob and withdraw the partial announcement
/// (best effort; the verified part stays for the next attempt).
pub async fn end_partial(core: &NodeCore, hash: &str) {
    let Ok(swarm) = core.swarm().await else {
        return;
    };
    if !swarm.stop_partial(hash) {
        return;
    }
    if let Err(e) = super::gc::withdraw(core, hash).await {
        tracing::warn!("partial mirror announcement of {hash} not withdrawn: {e:#}");
    }
}

/// A mirror the operator asked for (`archy blob get --mirror`, `archy blob mirror`): pinned,
/// so GC keeps it (a mirror made because an app is installed goes with the app).
pub async fn mirror_by_operator(core: &NodeCore, hash: &str) -> Result<MirrorAnnounced> {
    core.swarm().await?.set_pin(hash, true)?;
    announce_mirror(core, hash).await
}

/// After a verified fetch: become a mirror when the node is configured to (`[swarm] mirror`,
/// on by default). A failure (relays down) is logged, not returned: the fetch itself succeeded.
pub async fn mirror_if_configured(core: &NodeCore, hash: &str) -> Option<MirrorAnnounced> {
    if !core.config.swarm.mirror {
        return None;
    }
    match announce_mirror(core, hash).await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("not announced as a mirror of {hash}: {e:#}");
            None
        }
    }
}

/// Re-publishes the announcement of every mirrored blob (at node start: the address may have
/// changed, and relays may have dropped old events). Returns how many were announced.
pub async fn reannounce_mirrors(core: &NodeCore) -> usize {
    let hashes = match core.swarm().await {
        Ok(s) => s.mirrors(),
        Err(e) => {
            tracing::warn!("mirrors not re-announced: {e:#}");
            return 0;
        }
    };
    let mut done = 0;
    for hash in hashes {
        match announce_mirror(core, &hash).await {
            Ok(_) => done += 1,
            Err(e) => tracing::warn!("re-announcing mirror {hash}: {e:#}"),
        }
    }
    done
}

/// What `archy app publish --image` writes into the manifest before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFields {
    /// The image reference that was exported (the manifest's `image.name` unless it names one).
    pub name: String,
    /// `sha256:<64 hex>`
    pub id: String,
    /// `"archive": {…}` (one blob) or `"layers": {…}` (a HashSeq of the OCI parts, §2.1).
    #[serde(flatten)]
    pub content: ImageBlob,
    pub origin: OriginRef,
    /// A layered image's OCI manifest digest: what an OCI client pulls from a node's registry
    /// (`<registry>/<any name>@<it>`). Not written into the manifest (child 0 is that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// How the exported image travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageBlob {
    #[serde(rename = "archive")]
    Archive(ArchiveRef),
    #[serde(rename = "layers")]
    Layers(crate::manifest::BlobRef),
}

impl ImageBlob {
    pub fn blake3(&self) -> &str {
        match self {
            ImageBlob::Archive(a) => &a.blake3,
            ImageBlob::Layers(l) => &l.blake3,
        }
    }
}

/// How `archy app publish --image` ships the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFormat {
    /// The OCI parts with uncompressed layers, as a §2.1 HashSeq (schema v2; the default).
    #[serde(rename = "oci-layers")]
    Layers,
    #[serde(rename = "oci-archive")]
    OciArchive,
    #[serde(rename = "docker-archive")]
    DockerArchive,
}

/// A manifest `BlobRef` for the image archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    pub blake3: String,
    pub size: u64,
    pub format: ArchiveFormat,
}

/// The manifest's `origin`: this node's swarm address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRef {
    pub endpoint: String,
    pub addrs: Vec<String>,
}

impl ImageFields {
    /// Sets `origin`, `image.id` and `image.archive` or `image.layers` (removing the other);
    /// `image.name` only when the manifest has no non-empty one. Other `image` keys are kept.
    /// A layered image needs schema v2: a v1 manifest is upgraded, and the note saying so is
    /// returned.
    pub fn fill(&self, manifest: &mut Map<String, Value>) -> Option<String> {
        let mut note = None;
        if matches!(self.content, ImageBlob::Layers(_))
            && manifest.get("schema").and_then(Value::as_str) != Some(crate::manifest::SCHEMA_V2)
        {
            let old = manifest
                .get("schema")
                .and_then(Value::as_str)
                .unwrap_or("no schema")
                .to_owned();
            manifest.insert("schema".into(), json!(crate::manifest::SCHEMA_V2));
            note = Some(format!(
                "the manifest's schema was {old:?}: upgraded to {:?}, which layered images (PROTOCOL §2.1) need",
                crate::manifest::SCHEMA_V2
            ));
        }
        manifest.insert("origin".into(), json!(self.origin));
        self.fill_image(manifest.entry("image").or_insert(Value::Null));
        note
    }

    /// [`ImageFields::fill`] for service `service` of a stack (PROTOCOL §2.2): its `image`,
    /// the manifest's `origin` and schema v2 (which stacks need). An error names a service
    /// the manifest does not list.
    pub fn fill_service(
        &self,
        manifest: &mut Map<String, Value>,
        service: &str,
    ) -> anyhow::Result<Option<String>> {
        let Some(Value::Array(services)) = manifest.get_mut("services") else {
            anyhow::bail!("--image {service}=…: the manifest lists no `services`");
        };
        let Some(svc) = services
            .iter_mut()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(service))
            .and_then(Value::as_object_mut)
        else {
            anyhow::bail!("--image {service}=…: the manifest has no service named {service:?}");
        };
        self.fill_image(svc.entry("image").or_insert(Value::Null));
        manifest.insert("origin".into(), json!(self.origin));
        let was = manifest.insert("schema".into(), json!(crate::manifest::SCHEMA_V2));
        Ok(match was.as_ref().and_then(Value::as_str) {
            Some(crate::manifest::SCHEMA_V2) => None,
            other => Some(format!(
                "the manifest's schema was {:?}: upgraded to {:?}, which multi-service apps (PROTOCOL §2.2) need",
                other.unwrap_or("no schema"),
                crate::manifest::SCHEMA_V2
            )),
        })
    }

    /// Writes `id`, the content and (when it names none) `name` into an `image` object.
    fn fill_image(&self, image: &mut Value) {
        if !image.is_object() {
            *image = Value::Object(Map::new());
        }
        let image = image.as_object_mut().expect("an object");
        let named = image
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.trim().is_empty());
        if !named {
            image.insert("name".into(), json!(self.name));
        }
        image.insert("id".into(), json!(self.id));
        match &self.content {
            ImageBlob::Archive(a) => {
                image.remove("layers");
                image.insert("archive".into(), json!(a));
            }
            ImageBlob::Layers(l) => {
                image.remove("archive");
                image.insert("layers".into(), json!(l));
            }
        }
    }
}

/// Publisher side of images: `podman save` of `image_ref` into the store (served as ours) and
/// the manifest fields that describe it, with this node as the origin.
pub async fn export_image(
    core: &NodeCore,
    image_ref: &str,
    format: ExportFormat,
) -> Result<ImageFields> {
    let swarm = core.swarm().await?;
    let format = match format {
        ExportFormat::Layers => {
            let l = super::layers::export_layered(core, image_ref).await?;
            let addr = swarm.addr();
            return Ok(ImageFields {
                name: image_ref.to_owned(),
                id: l.id,
                content: ImageBlob::Layers(l.layers),
                origin: OriginRef {
                    endpoint: addr.endpoint,
                    addrs: addr.addrs.iter().map(ToString::to_string).collect(),
                },
                manifest_digest: Some(l.manifest_digest),
            });
        }
        ExportFormat::OciArchive => ArchiveFormat::OciArchive,
        ExportFormat::DockerArchive => ArchiveFormat::DockerArchive,
    };
    let (image_id, archive) = async {
        let image_id = core.podman.image_id(image_ref).await?;
        let tmp = swarm.tmp_dir()?;
        let path = tmp.path().join("image.tar");
        core.podman.save(image_ref, format, &path).await?;
        let archive = swarm.add_file(&path).await?;
        tracing::info!(
            %image_ref,
            %image_id,
            archive = %archive.hash,
            size = archive.size,
            "image exported"
        );
        anyhow::Ok((image_id, archive))
    }
    .await
    .with_context(|| format!("exporting image {image_ref}"))?;
    let addr = swarm.addr();
    Ok(ImageFields {
        name: image_ref.to_owned(),
        id: image_id,
        content: ImageBlob::Archive(ArchiveRef {
            blake3: archive.hash,
            size: archive.size,
            format,
        }),
        origin: OriginRef {
            endpoint: addr.endpoint,
            addrs: addr.addrs.iter().map(ToString::to_string).collect(),
        },
        manifest_digest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::prelude::Keys;

    fn ann(keys: &Keys, hash: &str, port: u16) -> Event {
        let endpoint = iroh_id(port as u8);
        build_mirror_event(
            keys,
            hash,
            &[],
            &MirrorAnnouncement {
                endpoint,
                addrs: vec![format!("127.0.0.1:{port}"), "not an addr".into()],
                partial: false,
            },
            nostr_sdk::Timestamp::now().as_secs(),
        )
        .unwrap()
    }

    /// A valid Ed25519 public key in hex (an iroh endpoint id).
    fn iroh_id(seed: u8) -> String {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        hex::encode(sk.verifying_key().to_bytes())
    }

    #[test]
    fn candidates_skip_own_key_other_hashes_and_keep_one_per_author() {
        let hash = "ab".repeat(32);
        let (me, a, b) = (Keys::generate(), Keys::generate(), Keys::generate());
        let events = vec![
            ann(&me, &hash, 1001),
            ann(&a, &hash, 1002),
            ann(&a, &hash, 1003),
            ann(&b, &"cd".repeat(32), 1004),
            ann(&b, &hash, 1005),
        ];
        let got = mirror_candidates(&events, &hash, &me.public_key().to_hex());
        let authors: Vec<&str> = got.iter().map(|c| c.nostr.as_str()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        // An announcement of eight days ago has expired (NIP-40): it is not a candidate.
        let old = build_mirror_event(
            &Keys::generate(),
            &hash,
            &[],
            &MirrorAnnouncement {
                endpoint: iroh_id(9),
                addrs: vec!["127.0.0.1:1009".into()],
                partial: false,
            },
            nostr_sdk::Timestamp::now().as_secs() - 8 * 24 * 3600,
        )
        .unwrap();
        assert!(mirror_candidates(&[old], &hash, &me.public_key().to_hex()).is_empty());
        assert!(authors.contains(&a.public_key().to_hex().as_str()));
        assert!(authors.contains(&b.public_key().to_hex().as_str()));
        let bc = got
            .iter()
            .find(|c| c.nostr == b.public_key().to_hex())
            .unwrap();
        assert_eq!(bc.peer.addrs, vec!["127.0.0.1:1005".parse().unwrap()]);
        assert_eq!(bc.peer.endpoint, iroh_id(1005u16 as u8));
    }

    #[test]
    fn a_blob_that_cannot_fit_is_refused_naming_the_place() {
        let dir = std::env::temp_dir();
        let err = check_disk_space(&dir, "ab", u64::MAX / 2).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("not enough disk space at"), "{text}");
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(space_needed(1 << 30) > 1 << 30);
    }

    #[test]
    fn bad_bytes_count_against_the_announcers_of_the_source_and_the_publisher_for_the_origin() {
        let cand = |nostr: &str, seed: u8| MirrorCandidate {
            nostr: nostr.into(),
            peer: PeerAddr::new(&iroh_id(seed), vec![]).unwrap(),
            created_at: 1,
            partial: false,
        };
        let who = Accountable {
            origin_key: Some("publisher".into()),
            // Two keys announced the hostile endpoint 7, one an honest endpoint 8.
            announcers: vec![cand("a", 7), cand("b", 7), cand("c", 8)],
        };
        let bad = vec![
            (iroh_id(7), "leaf hash mismatch".to_string()),
            (iroh_id(9), "parent hash mismatch".to_string()),
            (iroh_id(7), "again".to_string()),
        ];
        let got = blame(&bad, "h", Some(&iroh_id(9)), &who, 5);
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|r| (r.nostr.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a", "leaf hash mismatch"),
                ("b", "leaf hash mismatch"),
                ("publisher", "parent hash mismatch")
            ]
        );
        assert!(got.iter().all(|r| r.hash == "h" && r.at == 5));
        // A source given by hand is nobody's.
        assert!(blame(&bad, "h", None, &Accountable::default(), 5).is_empty());
    }

    #[test]
    fn the_catalog_keeps_one_bad_bytes_record_per_key_blob_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = crate::catalog::Catalog::open(&dir.path().join("c.redb")).unwrap();
        let rec = crate::catalog::BadSourceRecord {
            nostr: "aa".repeat(32),
            endpoint: iroh_id(7),
            hash: "bb".repeat(32),
            reason: "leaf hash mismatch".into(),
            at: 1,
        };
        assert!(catalog.record_bad_source(&rec).unwrap());
        assert!(!catalog.record_bad_source(&rec).unwrap(), "counted once");
        let other = crate::catalog::BadSourceRecord {
            hash: "cc".repeat(32),
            ..rec.clone()
        };
        assert!(catalog.record_bad_source(&other).unwrap());
        assert_eq!(catalog.bad_sources().unwrap().len(), 2);
    }

    #[test]
    fn fill_sets_origin_id_archive_and_keeps_a_named_image() {
        let fields = ImageFields {
            name: "localhost/x:1".into(),
            id: format!("sha256:{}", "11".repeat(32)),
            content: ImageBlob::Archive(ArchiveRef {
                blake3: "22".repeat(32),
                size: 42,
                format: ArchiveFormat::OciArchive,
            }),
            origin: OriginRef {
                endpoint: "33".repeat(32),
                addrs: vec!["127.0.0.1:5".into()],
            },
            manifest_digest: None,
        };
        let mut named: Map<String, Value> = serde_json::from_value(json!({
            "image": {"name": "localhost/acme/web:1.0", "id": "old"},
            "origin": {"endpoint": "00", "addrs": []}
        }))
        .unwrap();
        assert_eq!(fields.fill(&mut named), None);
        assert_eq!(named["image"]["name"], "localhost/acme/web:1.0");
        assert_eq!(named["image"]["id"], json!(fields.id));
        assert_eq!(
            named["image"]["archive"],
            json!({"blake3": "22".repeat(32), "size": 42, "format": "oci-archive"})
        );
        assert_eq!(named["origin"]["addrs"], json!(["127.0.0.1:5"]));
        let mut bare = Map::new();
        fields.fill(&mut bare);
        assert_eq!(bare["image"]["name"], "localhost/x:1");
    }

    #[test]
    fn a_layered_image_upgrades_a_v1_manifest_and_replaces_its_archive() {
        let layers = crate::manifest::BlobRef {
            blake3: "44".repeat(32),
            size: 7,
            format: "oci-layers".into(),
        };
        let fields = ImageFields {
            name: "localhost/x:1".into(),
            id: format!("sha256:{}", "11".repeat(32)),
            content: ImageBlob::Layers(layers),
            origin: OriginRef {
                endpoint: "33".repeat(32),
                addrs: vec![],
            },
            manifest_digest: None,
        };
        let mut m: Map<String, Value> = serde_json::from_value(json!({
            "schema": "archy.app/v1",
            "image": {"name": "n", "id": "old", "archive": {"blake3": "00", "size": 1, "format": "raw"}},
        }))
        .unwrap();
        let note = fields.fill(&mut m).expect("says it upgraded");
        assert!(note.contains("archy.app/v2"), "{note}");
        assert_eq!(m["schema"], "archy.app/v2");
        assert!(m["image"].get("archive").is_none());
        assert_eq!(m["image"]["layers"]["format"], "oci-layers");
        assert_eq!(fields.fill(&mut m), None, "already v2");
        assert_eq!(
            serde_json::to_value(&fields).unwrap()["layers"]["size"],
            json!(7),
            "flattened as the manifest spells it"
        );
    }
}
