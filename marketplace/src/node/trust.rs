//! Trust in the node: collects signals from the relays, adds what the catalog knows, and keeps
//! the latest [`Scores`] of the `archy-trust` engine for the CLI, search results and installs.
//!
//! - **Anchors** are the node's own Nostr key plus `[trust] anchors`; **blocks** are
//!   `[trust] blocked` (on top of the engine's built-in denylist). `trust anchor add|rm` and
//!   `trust block|unblock` change the live graph and persist to `config.toml`, so the
//!   [`TrustState`] (not `NodeCore::config`) is the live truth for these two lists.
//! - **Collection** ([`refresh`]) is bounded in depth and count: contact lists (kind 3) and
//!   `archy.trust` labels (kind 1985) *authored* by the keys within [`MAX_DEPTH`] hops of the
//!   anchors (at most [`MAX_KEYS`] authors, from the engine's `collection_targets`), plus labels
//!   and reports (kind 1984) *about* the publishers in the catalog. Every REQ carries a `limit`.
//!   The relay layer hands events over unverified: each one's id and signature are checked
//!   here before it becomes a signal, and events dated in the future are dropped (a contact
//!   list from the future would otherwise pin its author's list until then).
//! - **Catalog evidence**: equivocations per publisher key (from the rejected list) and
//!   history (oldest accepted release, number of accepted releases).
//! - The signal set is kept in `<home>/trust/signals.json`, so a restart or a one-shot CLI
//!   command (no node running) scores with what the last refresh collected.
//!
//! Keys on the command line may be an npub, 64-hex or a DID; a DID stands for the Nostr
//! key(s) that signed its releases in the catalog.

use super::config::NodeConfig;
use super::NodeCore;
use crate::catalog::{AppRecord, Catalog};
use crate::home::Home;
use crate::identity::Identity;
use crate::reason::Reason;
use crate::unix_now;
use anyhow::{bail, Context, Result};
use archy_trust::{
    Decision, EvidenceCounts, History, Key, RawEvent, Report, Scores, Signal, Tier, TrustConfig,
    TrustGraph, KIND_CONTACTS, KIND_LABEL, KIND_REPORT, LABEL_NAMESPACE,
};
use nostr_sdk::prelude::{Alphabet, Event, Filter, Kind, PublicKey, SingleLetterTag, ToBech32};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Hops from the anchors whose authors' contact lists and labels are fetched (0 = the anchors
/// themselves). Two hops give edges up to three hops out: beyond that a path carries at most
/// (1−α)³ ≈ 0.42 of a walk times three transition shares, too little to move a tier.
pub const MAX_DEPTH: usize = 2;
/// At most this many authors are asked for their signals per refresh.
pub const MAX_KEYS: usize = 1_000;
/// `limit` of every REQ: what one relay may return for one filter.
const MAX_EVENTS_PER_REQ: usize = 2_000;
/// Authors or `#p` values per REQ (relays cap filter sizes).
const CHUNK: usize = 250;
/// Events dated further ahead than this are ignored until their time comes (the release
/// rule of PROTOCOL §4.1, for the same reason).
use crate::release::MAX_FUTURE_SECS;
/// The persisted signal set, inside the home.
const SIGNALS_FILE: &str = "trust/signals.json";

/// The node's trust graph and its latest scores. Shared by every task of the node.
pub struct TrustState {
    inner: Mutex<Inner>,
    /// One refresh at a time (the discovery loop and `archy trust refresh` may overlap).
    refreshing: tokio::sync::Mutex<()>,
    own: Key,
    required: Tier,
    signals_path: PathBuf,
}

struct Inner {
    graph: TrustGraph,
    scores: Scores,
    last_refresh: Option<RefreshReport>,
}

/// What one [`refresh`] collected and computed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshReport {
    /// Authors whose contact lists and labels were asked for.
    pub authors: usize,
    /// Publishers (from the catalog) whose labels and reports were asked for.
    pub publishers: usize,
    /// Events the relays returned (de-duplicated per request).
    pub received: usize,
    /// Events whose id or signature did not verify (ignored).
    pub invalid: usize,
    /// Events dated in the future (ignored).
    pub future: usize,
    /// Signals that changed the graph.
    pub changed: usize,
    /// Keys and positive edges in the graph after the computation.
    pub keys: usize,
    pub edges: usize,
    /// Whether the computation was incremental, and its work.
    pub incremental: bool,
    pub iterations: u32,
    pub pushes: u64,
    /// Unix seconds when it finished.
    pub at: u64,
}

fn key_of(pk: &PublicKey) -> Key {
    Key::from_bytes(pk.to_bytes())
}

fn npub(key: &Key) -> String {
    PublicKey::from_byte_array(*key.as_bytes())
        .to_bech32()
        .unwrap_or_else(|_| key.to_hex())
}

/// Parses the install threshold of `[trust] install_tier`.
pub fn parse_install_tier(text: &str) -> Result<Tier> {
    match text.parse::<Tier>() {
        Ok(Tier::Blocked) | Err(_) => bail!(
            "[trust] install_tier = {text:?}: use \"trusted\", \"known\" or \"unknown\" \
             (the lowest tier whose publishers install without confirmation)"
        ),
        Ok(t) => Ok(t),
    }
}

/// Every Nostr key that published releases of `did` in the catalog, sorted.
fn keys_of_did(catalog: &Catalog, did: &str) -> Result<Vec<Key>> {
    let mut keys = BTreeSet::new();
    for app in catalog.apps()?.into_iter().filter(|a| a.did == did) {
        if let Ok(k) = Key::from_hex(&app.publisher_nostr) {
            keys.insert(k);
        }
        for r in catalog.releases(&app.did, &app.app)? {
            if let Ok(k) = Key::from_hex(&r.pubkey) {
                keys.insert(k);
            }
        }
    }
    Ok(keys.into_iter().collect())
}

/// Resolves a key as written by a person: npub, 64-hex, `nostr:` URI, or a DID (to the keys
/// that signed its releases in the catalog).
pub fn resolve_key(catalog: &Catalog, text: &str) -> Result<Vec<Key>> {
    let text = text.trim();
    if text.starts_with("did:") {
        crate::did::key_from_did(text).map_err(|e| anyhow::anyhow!("{text}: {e}"))?;
        let keys = keys_of_did(catalog, text)?;
        if keys.is_empty() {
            bail!(
                "no release of {text} is in the catalog, so its Nostr key is unknown: \
                 run `archy market sync`, or give the publisher's npub or hex key"
            );
        }
        return Ok(keys);
    }
    let pk = PublicKey::parse(text).map_err(|_| {
        anyhow::anyhow!("{text:?} is not a key: give an npub, a 64-hex Nostr public key or a DID")
    })?;
    Ok(vec![key_of(&pk)])
}

/// Resolves configured entries; entries that cannot be resolved yet are skipped with a warning.
fn resolve_entries(catalog: &Catalog, entries: &[String], what: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for e in entries {
        match resolve_key(catalog, e) {
            Ok(keys) => out.extend(keys),
            Err(err) => tracing::warn!("[trust] {what}: {err:#}; ignored for now"),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the catalog knows about publishers: equivocation counts and history per Nostr key.
struct Observations {
    evidence: BTreeMap<Key, EvidenceCounts>,
    history: BTreeMap<Key, History>,
}

fn observations(catalog: &Catalog) -> Result<Observations> {
    let mut history: BTreeMap<Key, History> = BTreeMap::new();
    let mut evidence: BTreeMap<Key, EvidenceCounts> = BTreeMap::new();
    for app in catalog.apps()? {
        if let Ok(k) = Key::from_hex(&app.publisher_nostr) {
            evidence.entry(k).or_default();
        }
        for r in catalog.releases(&app.did, &app.app)? {
            let Ok(k) = Key::from_hex(&r.pubkey) else {
                continue;
            };
            let h = history.entry(k).or_insert(History {
                first_seen: r.created_at,
                accepted_releases: 0,
            });
            h.first_seen = h.first_seen.min(r.created_at);
            h.accepted_releases = h.accepted_releases.saturating_add(1);
            evidence.entry(k).or_default();
        }
    }
    for r in catalog.rejected()? {
        if r.reason != Reason::Equivocation {
            continue;
        }
        if let Ok(k) = Key::from_hex(&r.pubkey) {
            let e = evidence.entry(k).or_default();
            e.equivocations = e.equivocations.saturating_add(1);
        }
    }
    Ok(Observations { evidence, history })
}

fn apply_observations(graph: &mut TrustGraph, obs: &Observations) {
    for (k, counts) in &obs.evidence {
        graph.set_evidence(*k, *counts);
    }
    for (k, h) in &obs.history {
        graph.set_history(*k, *h);
    }
}

/// A verified Nostr event as the engine's input.
fn raw_event(e: &Event) -> RawEvent {
    RawEvent {
        pubkey: e.pubkey.to_hex(),
        kind: e.kind.as_u16(),
        created_at: e.created_at.as_secs(),
        tags: e.tags.iter().map(|t| t.as_slice().to_vec()).collect(),
    }
}

fn pubkeys(keys: &[Key]) -> Vec<PublicKey> {
    keys.iter()
        .map(|k| PublicKey::from_byte_array(*k.as_bytes()))
        .collect()
}

fn trust_namespace() -> (SingleLetterTag, &'static str) {
    (SingleLetterTag::uppercase(Alphabet::L), LABEL_NAMESPACE)
}

/// Contact lists and trust labels written by `authors`.
fn authored_filters(authors: &[Key]) -> Vec<Filter> {
    let (l, ns) = trust_namespace();
    authors
        .chunks(CHUNK)
        .flat_map(|chunk| {
            let pks = pubkeys(chunk);
            [
                Filter::new()
                    .kind(Kind::from(KIND_CONTACTS))
                    .authors(pks.clone())
                    .limit(MAX_EVENTS_PER_REQ),
                Filter::new()
                    .kind(Kind::from(KIND_LABEL))
                    .authors(pks)
                    .custom_tag(l, ns)
                    .limit(MAX_EVENTS_PER_REQ),
            ]
        })
        .collect()
}

/// Trust labels and reports about `targets`, by anyone (an untrusted author's word weighs
/// nothing in the engine, so collecting it is harmless).
fn about_filters(targets: &[Key]) -> Vec<Filter> {
    let (l, ns) = trust_namespace();
    targets
        .chunks(CHUNK)
        .flat_map(|chunk| {
            let pks = pubkeys(chunk);
            [
                Filter::new()
                    .kind(Kind::from(KIND_LABEL))
                    .pubkeys(pks.clone())
                    .custom_tag(l, ns)
                    .limit(MAX_EVENTS_PER_REQ),
                Filter::new()
                    .kind(Kind::from(KIND_REPORT))
                    .pubkeys(pks)
                    .limit(MAX_EVENTS_PER_REQ),
            ]
        })
        .collect()
}

impl TrustState {
    /// Builds the graph from the configuration, the persisted signals and the catalog.
    pub fn open(
        home: &Home,
        config: &NodeConfig,
        identity: &Identity,
        catalog: &Catalog,
    ) -> Result<TrustState> {
        let required = parse_install_tier(&config.trust.install_tier)?;
        let own = Key::from_hex(&identity.nostr_hex()).context("the node's own Nostr key")?;
        let mut anchors = resolve_entries(catalog, &config.trust.anchors, "anchors");
        anchors.push(own);
        anchors.sort_unstable();
        anchors.dedup();
        let denylist = resolve_entries(catalog, &config.trust.blocked, "blocked");
        let mut graph = TrustGraph::new(TrustConfig {
            anchors,
            denylist,
            install_tier: required,
            ..TrustConfig::default()
        })
        .context("the trust engine's configuration")?;
        let signals_path = home.join(SIGNALS_FILE);
        match std::fs::read(&signals_path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Signal>>(&bytes) {
                Ok(signals) => {
                    for s in signals {
                        graph.apply_signal(s);
                    }
                }
                // A cache: the next refresh collects everything again.
                Err(e) => tracing::warn!(
                    "{} is unreadable ({e}); trust signals start empty until the next refresh",
                    signals_path.display()
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", signals_path.display())),
        }
        apply_observations(&mut graph, &observations(catalog)?);
        let scores = graph.compute();
        Ok(TrustState {
            inner: Mutex::new(Inner {
                graph,
                scores,
                last_refresh: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            own,
            required,
            signals_path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent graph (every mutation is one
        // call into the engine), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tier of a publisher's Nostr key (64-hex) and what the install policy says about it
    /// at `[trust] install_tier`: `Allow` installs and auto-updates without asking,
    /// `NeedsConfirmation` only after the user's explicit confirmation (never automatically),
    /// `Deny` never. A string that is not a key is `Unknown`.
    pub fn decide(&self, nostr_hex: &str) -> (Tier, Decision) {
        let tier = match Key::from_hex(nostr_hex) {
            Ok(k) => self.lock().scores.tier(&k),
            Err(_) => Tier::Unknown,
        };
        (tier, archy_trust::decide(tier, self.required))
    }

    /// The configured install threshold.
    pub fn required_tier(&self) -> Tier {
        self.required
    }

    /// The latest scores (cheap to clone; never changes once taken).
    pub fn scores(&self) -> Scores {
        self.lock().scores.clone()
    }

    /// Score, tier and explanation of one key.
    pub fn report(&self, key: &Key) -> Report {
        self.lock().scores.get(key)
    }

    /// The current anchors (the node's key first is not guaranteed: sorted).
    pub fn anchors(&self) -> Vec<Key> {
        self.lock().graph.anchors()
    }

    fn persist(&self, signals: &[Signal]) -> Result<()> {
        let dir = self.signals_path.parent().expect("a file in a folder");
        std::fs::create_dir_all(dir)?;
        let tmp = self.signals_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(signals)?)?;
        std::fs::rename(&tmp, &self.signals_path)
            .with_context(|| format!("writing {}", self.signals_path.display()))
    }
}

/// Collects signals from the node's relays (bounded, see the module doc), adds the catalog's
/// evidence and history, recomputes incrementally and persists the signal set.
pub async fn refresh(core: &NodeCore) -> Result<RefreshReport> {
    let state = core.trust()?;
    let _one_at_a_time = state.refreshing.lock().await;
    let pool = core.pool().await?;
    let now = unix_now();
    let mut report = RefreshReport::default();

    let apply = |events: Vec<Event>, report: &mut RefreshReport| {
        report.received += events.len();
        let mut inner = state.lock();
        for e in events {
            if e.verify().is_err() {
                report.invalid += 1;
                continue;
            }
            if e.created_at.as_secs() > now + MAX_FUTURE_SECS {
                report.future += 1;
                continue;
            }
            report.changed += inner.graph.apply_event(&raw_event(&e));
        }
    };

    // Authors, breadth first: each round's targets come from the lists fetched before it.
    let mut asked: BTreeSet<Key> = BTreeSet::new();
    for depth in 0..=MAX_DEPTH {
        let targets = state.lock().graph.collection_targets(depth, MAX_KEYS);
        let mut new: Vec<Key> = targets.into_iter().filter(|k| !asked.contains(k)).collect();
        new.truncate(MAX_KEYS.saturating_sub(asked.len()));
        if new.is_empty() {
            continue;
        }
        asked.extend(new.iter().copied());
        for filter in authored_filters(&new) {
            let events = pool.fetch(filter, None).await?;
            apply(events, &mut report);
        }
    }
    report.authors = asked.len();

    // About the publishers the catalog knows.
    let obs = observations(&core.catalog)?;
    let publishers: Vec<Key> = obs.evidence.keys().copied().collect();
    report.publishers = publishers.len();
    for filter in about_filters(&publishers) {
        let events = pool.fetch(filter, None).await?;
        apply(events, &mut report);
    }

    let signals = {
        let mut inner = state.lock();
        apply_observations(&mut inner.graph, &obs);
        let scores = inner.graph.compute_incremental();
        let stats = scores.stats();
        report.keys = stats.keys;
        report.edges = stats.edges;
        report.incremental = stats.incremental;
        report.iterations = stats.iterations;
        report.pushes = stats.pushes;
        report.at = unix_now();
        inner.scores = scores;
        inner.last_refresh = Some(report.clone());
        inner.graph.export_signals()
    };
    state.persist(&signals)?;
    tracing::debug!(?report, "trust refreshed");
    Ok(report)
}

/// Recomputes after a local change (anchors, blocks, catalog evidence), without the network.
fn recompute(core: &NodeCore, state: &TrustState) -> Result<()> {
    let obs = observations(&core.catalog)?;
    let mut inner = state.lock();
    apply_observations(&mut inner.graph, &obs);
    inner.scores = inner.graph.compute_incremental();
    Ok(())
}

/// Short readable names for keys in an explanation: this node, anchors, catalog DIDs.
fn names(
    core: &NodeCore,
    state: &TrustState,
    keys: &BTreeSet<Key>,
) -> Result<BTreeMap<String, String>> {
    let anchors: BTreeSet<Key> = state.anchors().into_iter().collect();
    let mut dids: BTreeMap<Key, String> = BTreeMap::new();
    for app in core.catalog.apps()? {
        if let Ok(k) = Key::from_hex(&app.publisher_nostr) {
            dids.entry(k).or_insert(app.did);
        }
    }
    Ok(keys
        .iter()
        .map(|k| {
            let name = if *k == state.own {
                "this node".to_owned()
            } else if let Some(did) = dids.get(k) {
                did.clone()
            } else if anchors.contains(k) {
                "anchor".to_owned()
            } else {
                let n = npub(k);
                format!("{}…{}", &n[..12], &n[n.len() - 6..])
            };
            (k.to_hex(), name)
        })
        .collect())
}

/// One key's trust report, as `trust show` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyReport {
    #[serde(flatten)]
    pub report: Report,
    pub npub: String,
    /// What installing from this key needs under the node's install tier.
    pub decision: archy_trust::Decision,
    pub required_tier: Tier,
    /// Whether the key is an anchor of this node (also in `explanation`).
    pub anchor: bool,
}

fn key_report(state: &TrustState, r: &Report) -> KeyReport {
    KeyReport {
        npub: npub(&r.key),
        decision: archy_trust::decide(r.tier, state.required),
        required_tier: state.required,
        anchor: r.explanation.anchor,
        report: r.clone(),
    }
}

/// The reply of `trust show`: the report of the key (for a DID, of each of its keys: the
/// first here, the others under `other_keys`), with names for the keys it mentions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustShow {
    #[serde(flatten)]
    pub first: KeyReport,
    /// What was asked (npub, hex or DID).
    pub query: String,
    pub other_keys: Vec<KeyReport>,
    /// Hex key → a name a person can read (a DID, "this node", "anchor", a short npub).
    pub names: BTreeMap<String, String>,
    pub last_refresh: Option<RefreshReport>,
}

/// `trust show KEY`: the report of the key (for a DID, of each of its keys: the first in
/// the top-level fields, the others under `other_keys`), with names for the keys it mentions.
pub async fn show(core: &NodeCore, key: &str) -> Result<TrustShow> {
    let state = core.trust()?;
    let keys = resolve_key(&core.catalog, key)?;
    recompute(core, state)?;
    let reports: Vec<Report> = keys.iter().map(|k| state.report(k)).collect();
    let mut mentioned: BTreeSet<Key> = BTreeSet::new();
    for r in &reports {
        mentioned.insert(r.key);
        for p in &r.explanation.paths {
            for h in &p.hops {
                mentioned.insert(h.from);
                mentioned.insert(h.to);
            }
        }
        mentioned.extend(r.explanation.endorsers.iter().map(|c| c.from));
        mentioned.extend(r.explanation.penalties.iter().map(|c| c.from));
    }
    let last_refresh = state.lock().last_refresh.clone();
    Ok(TrustShow {
        first: key_report(state, &reports[0]),
        query: key.to_owned(),
        other_keys: reports[1..].iter().map(|r| key_report(state, r)).collect(),
        names: names(core, state, &mentioned)?,
        last_refresh,
    })
}

/// Rewrites `[trust] anchors` or `[trust] blocked` in config.toml: `keys` added, or every entry
/// that resolves to one of them (and the literal `text`) removed.
fn persist_list(
    core: &NodeCore,
    text: &str,
    keys: &[Key],
    add: bool,
    pick: impl Fn(&mut NodeConfig) -> &mut Vec<String>,
) -> Result<()> {
    let mut config = NodeConfig::load(&core.home)?;
    let list = pick(&mut config);
    let resolves_to_one = |entry: &String| {
        entry == text
            || resolve_key(&core.catalog, entry)
                .map(|ks| ks.iter().any(|k| keys.contains(k)))
                .unwrap_or(false)
    };
    if add {
        for k in keys {
            let present = list.iter().any(|e| {
                resolve_key(&core.catalog, e)
                    .map(|ks| ks.contains(k))
                    .unwrap_or(false)
            });
            if !present {
                list.push(k.to_hex());
            }
        }
    } else {
        list.retain(|e| !resolves_to_one(e));
    }
    config.save(&core.home)
}

/// `trust anchor add|rm KEY`.
/// The reply of `trust anchor add|rm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnchorReply {
    pub keys: Vec<Key>,
    /// How many of `keys` changed (0: already so).
    pub changed: usize,
    pub anchors: Vec<Key>,
    /// For a new anchor: fetching its signals, or why that failed.
    pub refresh: Option<Refreshed>,
}

/// Whether the refresh after adding an anchor worked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refreshed {
    Ok(RefreshReport),
    Error(String),
}

pub async fn set_anchor(core: &NodeCore, key: &str, add: bool) -> Result<AnchorReply> {
    let state = core.trust()?;
    let keys = resolve_key(&core.catalog, key)?;
    if !add && keys.contains(&state.own) {
        bail!("{key} is this node's own key, which is always an anchor");
    }
    persist_list(core, key, &keys, add, |c| &mut c.trust.anchors)?;
    let changed = {
        let mut inner = state.lock();
        let mut changed = 0;
        for k in &keys {
            changed += usize::from(if add {
                inner.graph.add_anchor(*k)
            } else {
                inner.graph.remove_anchor(k)
            });
        }
        changed
    };
    recompute(core, state)?;
    // A new anchor's own contact list and labels are what make it useful: fetch them now.
    let refreshed = if add && changed > 0 && !core.relay_urls().is_empty() {
        match refresh(core).await {
            Ok(r) => Some(Refreshed::Ok(r)),
            Err(e) => Some(Refreshed::Error(format!("{e:#}"))),
        }
    } else {
        None
    };
    Ok(AnchorReply {
        keys,
        changed,
        anchors: state.anchors(),
        refresh: refreshed,
    })
}

/// `trust block|unblock KEY`.
/// The reply of `trust block|unblock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockReply {
    pub keys: Vec<Key>,
    /// How many of `keys` changed (0: already so).
    pub changed: usize,
    /// Each key's tier and score now.
    pub tiers: Vec<KeyTier>,
}

/// A key with its tier and score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyTier {
    pub key: Key,
    pub tier: Tier,
    pub score: f64,
}

pub async fn set_blocked(core: &NodeCore, key: &str, block: bool) -> Result<BlockReply> {
    let state = core.trust()?;
    let keys = resolve_key(&core.catalog, key)?;
    if block && keys.contains(&state.own) {
        bail!("{key} is this node's own key; it cannot be blocked");
    }
    let changed = {
        let mut inner = state.lock();
        let mut changed = 0;
        for k in &keys {
            changed += usize::from(if block {
                inner.graph.block(*k)
            } else {
                inner.graph.unblock(k)?
            });
        }
        changed
    };
    persist_list(core, key, &keys, block, |c| &mut c.trust.blocked)?;
    recompute(core, state)?;
    let scores = state.scores();
    Ok(BlockReply {
        tiers: keys
            .iter()
            .map(|k| KeyTier {
                key: *k,
                tier: scores.tier(k),
                score: scores.score(k),
            })
            .collect(),
        keys,
        changed,
    })
}

/// The tier and score of an app's publisher.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PublisherTrust {
    pub tier: Tier,
    pub score: f64,
}

/// A catalog app with its publisher's trust, as `market search` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppListing {
    #[serde(flatten)]
    pub app: AppRecord,
    #[serde(flatten)]
    pub trust: PublisherTrust,
}

/// The tier and score of an app's publisher (unknown for a key that does not parse).
pub fn publisher_trust(scores: &Scores, app: &AppRecord) -> PublisherTrust {
    match Key::from_hex(&app.publisher_nostr) {
        Ok(k) => PublisherTrust {
            tier: scores.tier(&k),
            score: scores.score(&k),
        },
        Err(_) => PublisherTrust {
            tier: Tier::Unknown,
            score: 0.0,
        },
    }
}

/// The trust of one app's publisher, for `market show`.
pub async fn app_trust(core: &NodeCore, app: &AppRecord) -> Result<PublisherTrust> {
    let state = core.trust()?;
    recompute(core, state)?;
    Ok(publisher_trust(&state.scores(), app))
}

/// Apps, each with its publisher's `tier` and `score`.
pub async fn annotate_apps(core: &NodeCore, apps: Vec<AppRecord>) -> Result<Vec<AppListing>> {
    let state = core.trust()?;
    recompute(core, state)?;
    let scores = state.scores();
    Ok(apps
        .into_iter()
        .map(|app| AppListing {
            trust: publisher_trust(&scores, &app),
            app,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_bounded_and_chunked() {
        let keys: Vec<Key> = (0..600u16)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..2].copy_from_slice(&i.to_be_bytes());
                Key::from_bytes(b)
            })
            .collect();
        for filters in [authored_filters(&keys), about_filters(&keys)] {
            assert_eq!(
                filters.len(),
                6,
                "3 chunks of at most {CHUNK}, two filters each"
            );
            for f in &filters {
                assert_eq!(f.limit, Some(MAX_EVENTS_PER_REQ));
                let n = f.authors.as_ref().map_or(0, |a| a.len())
                    + f.generic_tags.values().map(|v| v.len()).sum::<usize>();
                assert!(n <= CHUNK + 1, "{n} values in one filter");
            }
        }
        let kinds: BTreeSet<u16> = authored_filters(&keys[..1])
            .iter()
            .flat_map(|f| f.kinds.clone().unwrap_or_default())
            .map(|k| k.as_u16())
            .collect();
        assert_eq!(kinds, BTreeSet::from([KIND_CONTACTS, KIND_LABEL]));
    }

    /// History and equivocation evidence come from the catalog's accepted and rejected events.
    #[test]
    fn catalog_observations() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let id = Identity::from_keys(
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
            nostr_sdk::prelude::Keys::generate(),
        );
        let event =
            |version: &str, summary: &str| crate::catalog::tests::release(&id, version, summary);
        let policy = crate::manifest::PolicyConfig::default();
        let now = unix_now();
        for e in [
            event("1.0.0", "a"),
            event("1.1.0", "a"),
            event("1.0.0", "other bytes"),
        ] {
            catalog.ingest(&e, &policy, now).unwrap();
        }
        let obs = observations(&catalog).unwrap();
        let k = Key::from_hex(&id.nostr_hex()).unwrap();
        assert_eq!(obs.evidence[&k].equivocations, 1);
        assert_eq!(obs.history[&k].accepted_releases, 2);
        assert_eq!(resolve_key(&catalog, &id.did()).unwrap(), vec![k]);
    }

    #[test]
    fn install_tier_names() {
        assert_eq!(parse_install_tier("trusted").unwrap(), Tier::Trusted);
        assert_eq!(parse_install_tier("Known").unwrap(), Tier::Known);
        assert_eq!(parse_install_tier("unknown").unwrap(), Tier::Unknown);
        let e = parse_install_tier("blocked").unwrap_err().to_string();
        assert!(e.contains("install_tier"), "{e}");
        assert!(parse_install_tier("trustd").is_err());
    }

    #[test]
    fn keys_parse_as_hex_npub_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let hex = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d";
        let k = resolve_key(&catalog, hex).unwrap();
        assert_eq!(k[0].to_hex(), hex);
        let n = npub(&k[0]);
        assert!(n.starts_with("npub1"));
        assert_eq!(resolve_key(&catalog, &n).unwrap(), k);
        assert!(resolve_key(&catalog, "npub1nope").is_err());
        // A well-formed DID that the catalog has never seen.
        let id = Identity::from_keys(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            nostr_sdk::prelude::Keys::generate(),
        );
        let e = resolve_key(&catalog, &id.did()).unwrap_err().to_string();
        assert!(e.contains("archy market sync"), "{e}");
    }
}
