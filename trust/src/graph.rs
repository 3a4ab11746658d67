//! [`TrustGraph`]: the signal store (with the replacement rules), what changed since the last
//! computation, and the vouch graph; `compute` turns it into [`crate::Scores`].
//!
//! Replacement rules (kept simple, all order-independent so the same set of events gives the
//! same graph whatever order they arrive in):
//! - kind 3: the newest contact list per author replaces the older one; on equal `created_at`
//!   the lexicographically larger list wins (an arbitrary but order-independent rule).
//! - labels: the newest label per (author, target) wins; on a tie `distrust` wins.
//! - reports: NIP-56 reports are not replaceable, so every report an author made stands and
//!   the most severe one per (author, target) counts (a later, milder report does not withdraw
//!   an earlier one; otherwise a report could raise its target's score).
//!   A label and a report are independent; for the penalty the stronger of the two counts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::compute::Cache;
use crate::config::{ConfigError, TrustConfig};
use crate::corroborate::independent_paths;
use crate::engine::{Edge, EdgeKinds, Row};
use crate::key::{builtin_denylist, Key};
use crate::score::{BlockReason, Corroboration};
use crate::signal::{
    signals_from_event, Evidence, EvidenceCounts, History, Label, RawEvent, ReportReason, Signal,
};

/// The bounds of every key, for ranges over (author, target) maps.
pub(crate) const KEY_MIN: Key = Key::from_bytes([0; 32]);
pub(crate) const KEY_MAX: Key = Key::from_bytes([0xff; 32]);

/// Errors of graph operations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrustError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Built-in denylist entries are keys whose private key is public; they cannot be unblocked.
    #[error("{0} is on the built-in denylist of keys with a publicly known private key and cannot be unblocked")]
    BuiltinDenylisted(Key),
}

/// What changed in the vouch graph since the last computation (for the corroboration cache).
#[derive(Default)]
pub(crate) struct VouchChanges {
    /// A vouch edge may have appeared (flows can only grow from this).
    pub added: bool,
    /// Keys whose out-going vouch edges may have gone (a path through one may be broken).
    pub changed_from: BTreeSet<Key>,
}

/// All trust signals the node knows, and the engine that scores them.
pub struct TrustGraph {
    pub(crate) config: TrustConfig,
    pub(crate) anchors: BTreeSet<Key>,
    pub(crate) builtin_deny: BTreeSet<Key>,
    pub(crate) operator_deny: BTreeSet<Key>,
    pub(crate) follows: BTreeMap<Key, (u64, Vec<Key>)>,
    pub(crate) labels: BTreeMap<(Key, Key), (u64, Label)>,
    /// Who endorses each key (the `endorse` entries of `labels`, indexed by target).
    pub(crate) endorsed_by: BTreeMap<Key, BTreeSet<Key>>,
    pub(crate) reports: BTreeMap<(Key, Key), (u64, ReportReason)>,
    /// Keys an anchor distrusts or reported, with those anchors (what `anchor_negative_blocks`
    /// looks at), kept beside `labels` and `reports`.
    pub(crate) negated_by_anchor: BTreeMap<Key, BTreeSet<Key>>,
    /// Shared with the last [`crate::Scores`] until one of them changes (copy on write).
    pub(crate) evidence: Arc<BTreeMap<Key, EvidenceCounts>>,
    pub(crate) history: Arc<BTreeMap<Key, History>>,
    pub(crate) cache: Option<Cache>,
    /// Keys whose out-row (or blocked state) may have changed since the last computation.
    pub(crate) dirty_rows: BTreeSet<Key>,
    /// Keys whose own outputs (evidence, history, negative signals about them) changed.
    pub(crate) dirty_keys: BTreeSet<Key>,
    /// (author, target) pairs whose negative signal may have changed.
    pub(crate) dirty_pairs: BTreeSet<(Key, Key)>,
    pub(crate) vouch: VouchChanges,
    /// Anchors, denylist or config changed: the next computation starts from scratch.
    pub(crate) dirty_full: bool,
}

impl TrustGraph {
    /// An empty graph. The config is validated (see [`TrustConfig::validate`]).
    pub fn new(config: TrustConfig) -> Result<Self, TrustError> {
        config.validate()?;
        Ok(TrustGraph {
            anchors: config.anchors.iter().copied().collect(),
            builtin_deny: builtin_denylist().into_iter().collect(),
            operator_deny: config.denylist.iter().copied().collect(),
            config,
            follows: BTreeMap::new(),
            labels: BTreeMap::new(),
            endorsed_by: BTreeMap::new(),
            reports: BTreeMap::new(),
            negated_by_anchor: BTreeMap::new(),
            evidence: Arc::default(),
            history: Arc::default(),
            cache: None,
            dirty_rows: BTreeSet::new(),
            dirty_keys: BTreeSet::new(),
            dirty_pairs: BTreeSet::new(),
            vouch: VouchChanges::default(),
            dirty_full: true,
        })
    }

    /// The configuration (anchors and denylist as given at construction).
    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    /// The current anchors, sorted.
    pub fn anchors(&self) -> Vec<Key> {
        self.anchors.iter().copied().collect()
    }

    /// Adds a trust root. Returns false if it already was one.
    pub fn add_anchor(&mut self, key: Key) -> bool {
        let added = self.anchors.insert(key);
        self.dirty_full |= added;
        self.index_anchor_negatives();
        added
    }

    /// Removes a trust root. Returns false if it was not one.
    pub fn remove_anchor(&mut self, key: &Key) -> bool {
        let removed = self.anchors.remove(key);
        self.dirty_full |= removed;
        self.index_anchor_negatives();
        removed
    }

    /// Rebuilds `negated_by_anchor` from the anchors' labels and reports.
    fn index_anchor_negatives(&mut self) {
        self.negated_by_anchor.clear();
        for a in self.anchors.clone() {
            let targets: Vec<Key> = self
                .labels
                .range((a, KEY_MIN)..=(a, KEY_MAX))
                .filter(|(_, (_, l))| *l == Label::Distrust)
                .map(|((_, t), _)| *t)
                .chain(
                    self.reports
                        .range((a, KEY_MIN)..=(a, KEY_MAX))
                        .map(|((_, t), _)| *t),
                )
                .collect();
            for t in targets {
                self.negated_by_anchor.entry(t).or_default().insert(a);
            }
        }
    }

    /// Keeps `negated_by_anchor` for one (author, target) pair.
    fn index_anchor_negative(&mut self, author: Key, target: Key) {
        if !self.anchors.contains(&author) {
            return;
        }
        let negative = matches!(
            self.labels.get(&(author, target)),
            Some((_, Label::Distrust))
        ) || self.reports.contains_key(&(author, target));
        if negative {
            self.negated_by_anchor
                .entry(target)
                .or_default()
                .insert(author);
        } else if let Some(set) = self.negated_by_anchor.get_mut(&target) {
            set.remove(&author);
            if set.is_empty() {
                self.negated_by_anchor.remove(&target);
            }
        }
    }

    /// Adds `key` to the operator denylist (score 0, tier blocked, its edges ignored).
    pub fn block(&mut self, key: Key) -> bool {
        let added = self.operator_deny.insert(key);
        self.mark_block_change(key, added);
        added
    }

    /// Removes `key` from the operator denylist. Built-in entries cannot be removed.
    pub fn unblock(&mut self, key: &Key) -> Result<bool, TrustError> {
        if self.builtin_deny.contains(key) {
            return Err(TrustError::BuiltinDenylisted(*key));
        }
        let removed = self.operator_deny.remove(key);
        self.mark_block_change(*key, removed);
        Ok(removed)
    }

    fn mark_block_change(&mut self, key: Key, changed: bool) {
        if !changed {
            return;
        }
        if self.anchors.contains(&key) {
            self.dirty_full = true;
        } else {
            self.mark_row(key);
        }
    }

    /// `key`'s out-row, blocked state or vouch edges may have changed.
    fn mark_row(&mut self, key: Key) {
        self.dirty_rows.insert(key);
        self.vouch.added = true;
        self.vouch.changed_from.insert(key);
    }

    /// Whether `key` is on the built-in or operator denylist.
    pub fn is_denylisted(&self, key: &Key) -> bool {
        self.builtin_deny.contains(key) || self.operator_deny.contains(key)
    }

    /// The operator denylist, sorted.
    pub fn operator_denylist(&self) -> Vec<Key> {
        self.operator_deny.iter().copied().collect()
    }

    /// Converts an event with [`signals_from_event`] and applies its signals. Returns how many
    /// changed the graph (0 for duplicates, older replaceable events and unrelated kinds).
    pub fn apply_event(&mut self, event: &RawEvent) -> usize {
        signals_from_event(event)
            .into_iter()
            .filter(|s| self.apply_signal(s.clone()))
            .count()
    }

    /// Applies one signal under the replacement rules. Returns whether it changed the graph.
    pub fn apply_signal(&mut self, signal: Signal) -> bool {
        match signal {
            Signal::Follows {
                author,
                created_at,
                mut follows,
            } => {
                follows.retain(|k| *k != author);
                follows.sort_unstable();
                follows.dedup();
                let replace = match self.follows.get(&author) {
                    None => true,
                    Some((t, old)) => created_at > *t || (created_at == *t && follows > *old),
                };
                if !replace {
                    return false;
                }
                let old = self.follows.insert(author, (created_at, follows));
                let changed_edges = old.is_none_or(|(_, o)| o != self.follows[&author].1);
                if changed_edges {
                    self.mark_row(author);
                }
                changed_edges
            }
            Signal::Label {
                author,
                target,
                created_at,
                label,
            } => {
                if author == target {
                    return false;
                }
                let entry = self.labels.get(&(author, target));
                let replace = match entry {
                    None => true,
                    Some(&(t, l)) => created_at > t || (created_at == t && label > l),
                };
                if !replace {
                    return false;
                }
                let old = self.labels.insert((author, target), (created_at, label));
                let changed = old.is_none_or(|(_, l)| l != label);
                if changed {
                    self.mark_row(author);
                    if self.anchors.contains(&author) {
                        self.mark_row(target); // an anchor's distrust blocks it
                    }
                    self.dirty_keys.insert(target);
                    self.dirty_pairs.insert((author, target));
                    self.index_anchor_negative(author, target);
                    if label == Label::Endorse {
                        self.endorsed_by.entry(target).or_default().insert(author);
                    } else if let Some(set) = self.endorsed_by.get_mut(&target) {
                        set.remove(&author);
                        if set.is_empty() {
                            self.endorsed_by.remove(&target);
                        }
                    }
                }
                changed
            }
            Signal::Report {
                author,
                target,
                created_at,
                reason,
            } => {
                if author == target {
                    return false;
                }
                let replace = match self.reports.get(&(author, target)) {
                    None => true,
                    Some(&(t, r)) => reason > r || (reason == r && created_at > t),
                };
                if !replace {
                    return false;
                }
                let old = self.reports.insert((author, target), (created_at, reason));
                let changed = old.is_none_or(|(_, r)| r != reason);
                if changed {
                    // Only an anchor's report changes a row: it blocks the target.
                    if self.anchors.contains(&author) {
                        self.mark_row(target);
                    }
                    self.dirty_keys.insert(target);
                    self.dirty_pairs.insert((author, target));
                    self.index_anchor_negative(author, target);
                }
                changed
            }
        }
    }

    /// The current signal set after replacement (one contact list per author, one label and
    /// one report per (author, target)), sorted: enough to rebuild an equal graph with
    /// [`TrustGraph::apply_signal`], e.g. after persisting it as JSON.
    pub fn export_signals(&self) -> Vec<Signal> {
        let follows = self
            .follows
            .iter()
            .map(|(author, (created_at, follows))| Signal::Follows {
                author: *author,
                created_at: *created_at,
                follows: follows.clone(),
            });
        let labels = self
            .labels
            .iter()
            .map(|((author, target), (created_at, label))| Signal::Label {
                author: *author,
                target: *target,
                created_at: *created_at,
                label: *label,
            });
        let reports = self
            .reports
            .iter()
            .map(|((author, target), (created_at, reason))| Signal::Report {
                author: *author,
                target: *target,
                created_at: *created_at,
                reason: *reason,
            });
        follows.chain(labels).chain(reports).collect()
    }

    /// Counts one observation against `key`.
    pub fn add_evidence(&mut self, key: Key, evidence: Evidence) {
        self.dirty_keys.insert(key);
        let e = Arc::make_mut(&mut self.evidence).entry(key).or_default();
        match evidence {
            Evidence::Equivocation => e.equivocations = e.equivocations.saturating_add(1),
            Evidence::BadBytes => e.bad_bytes = e.bad_bytes.saturating_add(1),
        }
    }

    /// Replaces the evidence counts of `key` (e.g. when rebuilding from the catalog).
    pub fn set_evidence(&mut self, key: Key, counts: EvidenceCounts) {
        if self.evidence.get(&key) != Some(&counts) {
            self.dirty_keys.insert(key);
            Arc::make_mut(&mut self.evidence).insert(key, counts);
        }
    }

    /// Records what the node knows of `key`'s past.
    pub fn set_history(&mut self, key: Key, history: History) {
        if self.history.get(&key) != Some(&history) {
            self.dirty_keys.insert(key);
            Arc::make_mut(&mut self.history).insert(key, history);
        }
    }

    /// Which keys' signals the node should fetch from its relays: a breadth-first walk from the
    /// anchors over follows and endorsements, at most `max_depth` hops and `max_keys` keys,
    /// anchors first, then by depth, then by key. Fetch their kind-3 lists and labels; fetch
    /// labels and reports *about* the publishers in the catalog separately.
    pub fn collection_targets(&self, max_depth: usize, max_keys: usize) -> Vec<Key> {
        let mut seen: BTreeSet<Key> = BTreeSet::new();
        let mut out = Vec::new();
        let mut frontier: Vec<Key> = self
            .anchors
            .iter()
            .filter(|k| !self.is_denylisted(k))
            .copied()
            .collect();
        for depth in 0..=max_depth {
            let mut next = BTreeSet::new();
            for k in &frontier {
                if out.len() >= max_keys {
                    return out;
                }
                if !seen.insert(*k) {
                    continue;
                }
                out.push(*k);
                if depth < max_depth {
                    for (t, _, _) in self.row_targets(k) {
                        if !seen.contains(&t) {
                            next.insert(t);
                        }
                    }
                }
            }
            frontier = next.into_iter().collect();
        }
        out
    }

    pub(crate) fn block_reason(&self, key: &Key) -> Option<BlockReason> {
        if self.builtin_deny.contains(key) {
            return Some(BlockReason::BuiltinDenylist);
        }
        if self.operator_deny.contains(key) {
            return Some(BlockReason::OperatorDenylist);
        }
        if self.config.anchor_negative_blocks && !self.anchors.contains(key) {
            if let Some(by) = self.negated_by_anchor.get(key) {
                if let Some(a) = by.iter().find(|a| !self.is_denylisted(a)) {
                    return Some(BlockReason::AnchorNegative { anchor: *a });
                }
            }
        }
        None
    }

    /// Positive out-edges of `key` as (target, weight, kinds), sorted by target; empty for a
    /// blocked key (its walk restarts at the anchors: a blocked key passes no trust on).
    pub(crate) fn row_targets(&self, key: &Key) -> Vec<(Key, f64, EdgeKinds)> {
        if self.block_reason(key).is_some() {
            return Vec::new();
        }
        let fw = self.config.follow_weight;
        let ew = self.config.endorse_weight;
        let follows = self
            .follows
            .get(key)
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[]);
        let mut endorsed = self
            .labels
            .range((*key, KEY_MIN)..=(*key, KEY_MAX))
            .filter(|(_, (_, l))| *l == Label::Endorse)
            .peekable();
        let follow_kinds = EdgeKinds {
            follow: true,
            endorse: false,
        };
        if endorsed.peek().is_none() {
            if fw == 0.0 {
                return Vec::new();
            }
            return follows.iter().map(|t| (*t, fw, follow_kinds)).collect();
        }
        let mut merged: BTreeMap<Key, (f64, EdgeKinds)> = BTreeMap::new();
        if fw > 0.0 {
            for t in follows {
                merged.insert(*t, (fw, follow_kinds));
            }
        }
        if ew > 0.0 {
            for ((_, t), _) in endorsed {
                let e = merged.entry(*t).or_insert((0.0, EdgeKinds::default()));
                e.0 += ew;
                e.1.endorse = true;
            }
        }
        merged.into_iter().map(|(t, (w, k))| (t, w, k)).collect()
    }

    pub(crate) fn is_live_anchor(&self, key: &Key) -> bool {
        self.anchors.contains(key) && !self.is_denylisted(key)
    }

    /// The keys with a vouch edge into `key`: live anchors with any positive edge to it, and
    /// other unblocked keys that endorse it (a follow by a non-anchor key does not vouch).
    /// Sorted. Edges the positive graph lacks (a weight of 0) do not vouch either.
    fn vouchers(&self, key: &Key) -> Vec<Key> {
        let mut out: Vec<Key> = Vec::new();
        if self.config.endorse_weight > 0.0 {
            if let Some(set) = self.endorsed_by.get(key) {
                out.extend(
                    set.iter()
                        .filter(|u| *u != key && self.block_reason(u).is_none()),
                );
            }
        }
        if self.config.follow_weight > 0.0 {
            for a in self.anchors.iter().filter(|a| self.is_live_anchor(a)) {
                let follows = self.follows.get(a).map_or(&[][..], |(_, f)| f.as_slice());
                if a != key && follows.binary_search(key).is_ok() {
                    out.push(*a);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The evidence for `trusted` beyond the score (see [`Corroboration`]), for any key and
    /// the current signals (a computation records it only for keys whose score reaches
    /// `thresholds.trusted`). An anchor is its own evidence: no paths are searched for it.
    pub fn corroboration(&self, key: &Key) -> Corroboration {
        if self.is_live_anchor(key) {
            return Corroboration {
                anchor_endorsed: false,
                independent_paths: 0,
                needed: self.config.thresholds.independent_paths,
                paths: Vec::new(),
            };
        }
        self.corroborate(key)
    }

    pub(crate) fn corroborate(&self, key: &Key) -> Corroboration {
        let needed = self.config.thresholds.independent_paths;
        let anchor_endorsed = self.config.endorse_weight > 0.0
            && self
                .endorsed_by
                .get(key)
                .is_some_and(|set| set.iter().any(|a| self.is_live_anchor(a)));
        let mut paths = independent_paths(
            *key,
            needed,
            |k| self.is_live_anchor(k),
            |k| self.vouchers(k),
        );
        paths.sort();
        Corroboration {
            anchor_endorsed,
            independent_paths: paths.len() as u32,
            needed,
            paths,
        }
    }

    pub(crate) fn build_row(&self, key: &Key, cache_index: &mut impl FnMut(Key) -> u32) -> Row {
        let targets = self.row_targets(key);
        let total: f64 = targets.iter().map(|t| t.1).sum();
        targets
            .into_iter()
            .map(|(t, w, kinds)| Edge {
                to: cache_index(t),
                w: w / total,
                kinds,
            })
            .collect()
    }
}
