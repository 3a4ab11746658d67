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

mod collect;
mod state;

pub use collect::{refresh, MAX_DEPTH, MAX_KEYS};
use state::*;
pub use state::{parse_install_tier, resolve_key, RefreshReport, TrustState};

use crate::catalog::AppRecord;
use crate::node::config::NodeConfig;
use crate::node::NodeCore;
use anyhow::{bail, Result};
use archy_trust::{Key, Report, Scores, Tier};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Recomputes after a local change (anchors, blocks, catalog evidence), without the network.
fn recompute(core: &NodeCore, state: &TrustState) -> Result<()> {
    let obs = observations(&core.catalog)?;
    let mut inner = state.lock();
    apply_observations(&mut inner.graph, &obs);
    inner.scores = inner.graph.compute_incremental();
    Ok(())
}

/// Records bad-bytes evidence (PROTOCOL §5.4) in the catalog and re-scores when any of it is
/// new. Returns how many records were new.
pub fn record_bad_sources(
    core: &NodeCore,
    records: &[crate::catalog::BadSourceRecord],
) -> Result<usize> {
    let mut new = 0;
    for r in records {
        if core.catalog.record_bad_source(r)? {
            tracing::warn!(key = %r.nostr, endpoint = %r.endpoint, hash = %r.hash, reason = %r.reason, "bad-bytes evidence recorded against the key that named this source");
            new += 1;
        }
    }
    if new > 0 {
        recompute(core, core.trust()?)?;
    }
    Ok(new)
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
        if let Some(c) = &r.explanation.corroboration {
            mentioned.extend(c.paths.iter().flatten().copied());
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
    use crate::catalog::Catalog;
    use crate::identity::Identity;
    use crate::unix_now;

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
        let mirror = "ab".repeat(32);
        catalog
            .record_bad_source(&crate::catalog::BadSourceRecord {
                nostr: mirror.clone(),
                endpoint: "cd".repeat(32),
                hash: "ef".repeat(32),
                reason: "leaf hash mismatch".into(),
                at: now,
            })
            .unwrap();
        let obs = observations(&catalog).unwrap();
        let k = Key::from_hex(&id.nostr_hex()).unwrap();
        assert_eq!(obs.evidence[&k].equivocations, 1);
        let m = Key::from_hex(&mirror).unwrap();
        assert_eq!(
            obs.evidence[&m].bad_bytes, 1,
            "a mirror's bad bytes count against it"
        );
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
