//! The node's trust state: the graph and its latest scores, built from the configuration, the
//! persisted signals and the catalog's evidence; and how keys on the command line resolve.

use crate::catalog::Catalog;
use crate::home::Home;
use crate::identity::Identity;
use crate::node::config::NodeConfig;
use crate::reason::Reason;
use anyhow::{bail, Context, Result};
use archy_trust::{
    Decision, EvidenceCounts, History, Key, Report, Scores, Signal, Tier, TrustConfig, TrustGraph,
};
use nostr_sdk::prelude::{PublicKey, ToBech32};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// The persisted signal set, inside the home.
const SIGNALS_FILE: &str = "trust/signals.json";

/// The node's trust graph and its latest scores. Shared by every task of the node.
pub struct TrustState {
    pub(super) inner: Mutex<Inner>,
    /// One refresh at a time (the discovery loop and `archy trust refresh` may overlap).
    pub(super) refreshing: tokio::sync::Mutex<()>,
    pub(super) own: Key,
    pub(super) required: Tier,
    pub(super) signals_path: PathBuf,
}

pub(super) struct Inner {
    pub(super) graph: TrustGraph,
    pub(super) scores: Scores,
    pub(super) last_refresh: Option<RefreshReport>,
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

pub(super) fn key_of(pk: &PublicKey) -> Key {
    Key::from_bytes(pk.to_bytes())
}

pub(super) fn npub(key: &Key) -> String {
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
pub(super) fn keys_of_did(catalog: &Catalog, did: &str) -> Result<Vec<Key>> {
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
pub(super) fn resolve_entries(catalog: &Catalog, entries: &[String], what: &str) -> Vec<Key> {
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

/// What the catalog knows about publishers and mirrors: equivocation and bad-bytes counts and
/// history per Nostr key.
pub(super) struct Observations {
    pub(super) evidence: BTreeMap<Key, EvidenceCounts>,
    pub(super) history: BTreeMap<Key, History>,
}

pub(super) fn observations(catalog: &Catalog) -> Result<Observations> {
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
    for b in catalog.bad_sources()? {
        if let Ok(k) = Key::from_hex(&b.nostr) {
            let e = evidence.entry(k).or_default();
            e.bad_bytes = e.bad_bytes.saturating_add(1);
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

pub(super) fn apply_observations(graph: &mut TrustGraph, obs: &Observations) {
    for (k, counts) in &obs.evidence {
        graph.set_evidence(*k, *counts);
    }
    for (k, h) in &obs.history {
        graph.set_history(*k, *h);
    }
}

/// A verified Nostr event as the engine's input.
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
            thresholds: archy_trust::Thresholds {
                independent_paths: config.trust.independent_paths,
                ..Default::default()
            },
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

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
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
    /// One key's report. Its corroboration (the vouch paths) is filled in even when the score
    /// alone decided the tier, so `trust show` can always say how far the key is from `trusted`.
    pub fn report(&self, key: &Key) -> Report {
        let inner = self.lock();
        let mut report = inner.scores.get(key);
        let e = &mut report.explanation;
        if e.corroboration.is_none() && !e.anchor && e.blocked.is_none() {
            e.corroboration = Some(inner.graph.corroboration(key));
        }
        report
    }

    /// The current anchors (the node's key first is not guaranteed: sorted).
    pub fn anchors(&self) -> Vec<Key> {
        self.lock().graph.anchors()
    }

    pub(super) fn persist(&self, signals: &[Signal]) -> Result<()> {
        let dir = self.signals_path.parent().expect("a file in a folder");
        std::fs::create_dir_all(dir)?;
        let tmp = self.signals_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(signals)?)?;
        std::fs::rename(&tmp, &self.signals_path)
            .with_context(|| format!("writing {}", self.signals_path.display()))
    }
}
