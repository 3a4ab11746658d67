//! [`TrustGraph`]: the signal store (with the replacement rules) and the glue that turns it
//! into [`Scores`].
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, TrustConfig};
use crate::corroborate::independent_paths;
use crate::engine::{Edge, EdgeKinds, Row, Walk};
use crate::key::{builtin_denylist, Key};
use crate::score::{
    BlockReason, ComputeStats, Corroboration, NegEntry, NegativeSignal, NodeOut, Scores, Snapshot,
    Tier, TierRule,
};
use crate::signal::{
    signals_from_event, Evidence, EvidenceCounts, History, Label, RawEvent, ReportReason, Signal,
};

const KEY_MIN: Key = Key::from_bytes([0; 32]);
const KEY_MAX: Key = Key::from_bytes([0xff; 32]);

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

/// The cached numeric state of the last computation, reused by incremental updates.
struct Cache {
    keys: Arc<Vec<Key>>,
    index: Arc<HashMap<Key, u32>>,
    walk: Walk,
}

/// All trust signals the node knows, and the engine that scores them.
pub struct TrustGraph {
    config: TrustConfig,
    anchors: BTreeSet<Key>,
    builtin_deny: BTreeSet<Key>,
    operator_deny: BTreeSet<Key>,
    follows: BTreeMap<Key, (u64, Vec<Key>)>,
    labels: BTreeMap<(Key, Key), (u64, Label)>,
    /// Who endorses each key (the `endorse` entries of `labels`, indexed by target).
    endorsed_by: BTreeMap<Key, BTreeSet<Key>>,
    reports: BTreeMap<(Key, Key), (u64, ReportReason)>,
    evidence: BTreeMap<Key, EvidenceCounts>,
    history: BTreeMap<Key, History>,
    cache: Option<Cache>,
    /// Keys whose out-row (or blocked state) may have changed since the last computation.
    dirty_rows: BTreeSet<Key>,
    /// Anchors, denylist or config changed: the next computation starts from scratch.
    dirty_full: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
            evidence: BTreeMap::new(),
            history: BTreeMap::new(),
            cache: None,
            dirty_rows: BTreeSet::new(),
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
        added
    }

    /// Removes a trust root. Returns false if it was not one.
    pub fn remove_anchor(&mut self, key: &Key) -> bool {
        let removed = self.anchors.remove(key);
        self.dirty_full |= removed;
        removed
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
            self.dirty_rows.insert(key);
        }
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
                    self.dirty_rows.insert(author);
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
                    self.dirty_rows.insert(author);
                    self.dirty_rows.insert(target);
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
                    // Only the blocked state of the target can change a row (anchor reports).
                    self.dirty_rows.insert(target);
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
        let e = self.evidence.entry(key).or_default();
        match evidence {
            Evidence::Equivocation => e.equivocations = e.equivocations.saturating_add(1),
            Evidence::BadBytes => e.bad_bytes = e.bad_bytes.saturating_add(1),
        }
    }

    /// Replaces the evidence counts of `key` (e.g. when rebuilding from the catalog).
    pub fn set_evidence(&mut self, key: Key, counts: EvidenceCounts) {
        self.evidence.insert(key, counts);
    }

    /// Records what the node knows of `key`'s past.
    pub fn set_history(&mut self, key: Key, history: History) {
        self.history.insert(key, history);
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

    fn block_reason(&self, key: &Key) -> Option<BlockReason> {
        if self.builtin_deny.contains(key) {
            return Some(BlockReason::BuiltinDenylist);
        }
        if self.operator_deny.contains(key) {
            return Some(BlockReason::OperatorDenylist);
        }
        if self.config.anchor_negative_blocks && !self.anchors.contains(key) {
            for a in &self.anchors {
                if self.is_denylisted(a) {
                    continue;
                }
                let distrust = matches!(self.labels.get(&(*a, *key)), Some((_, Label::Distrust)));
                if distrust || self.reports.contains_key(&(*a, *key)) {
                    return Some(BlockReason::AnchorNegative { anchor: *a });
                }
            }
        }
        None
    }

    /// Positive out-edges of `key` as (target, weight, kinds), sorted by target; empty for a
    /// blocked key (its walk restarts at the anchors: a blocked key passes no trust on).
    fn row_targets(&self, key: &Key) -> Vec<(Key, f64, EdgeKinds)> {
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

    fn is_live_anchor(&self, key: &Key) -> bool {
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

    fn corroborate(&self, key: &Key) -> Corroboration {
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

    fn build_row(&self, key: &Key, cache_index: &mut impl FnMut(Key) -> u32) -> Row {
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

    fn restart(&self, index: &HashMap<Key, u32>) -> Vec<(u32, f64)> {
        let live: Vec<u32> = self
            .anchors
            .iter()
            .filter(|a| !self.is_denylisted(a))
            .map(|a| index[a])
            .collect();
        let share = 1.0 / live.len() as f64;
        live.into_iter().map(|i| (i, share)).collect()
    }

    /// Full computation at the current wall-clock time (used only for the history age).
    pub fn compute(&mut self) -> Scores {
        self.compute_at(unix_now())
    }

    /// Full computation from scratch; `now` (unix seconds) dates the history discount.
    /// Deterministic: the same set of signals gives bit-identical scores whatever the order
    /// in which they were applied (keys are indexed in sorted order and every sum runs in
    /// index order).
    pub fn compute_at(&mut self, now: u64) -> Scores {
        let mut keys: Vec<Key> = Vec::new();
        keys.extend(self.anchors.iter().copied());
        for (a, (_, f)) in &self.follows {
            keys.push(*a);
            keys.extend(f.iter().copied());
        }
        for (a, t) in self.labels.keys().chain(self.reports.keys()) {
            keys.push(*a);
            keys.push(*t);
        }
        keys.extend(self.evidence.keys().copied());
        keys.extend(self.history.keys().copied());
        keys.sort_unstable();
        keys.dedup();
        let index: HashMap<Key, u32> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        let mut lookup = |k: Key| index[&k];
        let rows: Vec<Row> = keys
            .iter()
            .map(|k| self.build_row(k, &mut lookup))
            .collect();
        let restart = self.restart(&index);
        let mut walk = Walk::new(self.config.restart_probability, rows, restart);
        let iterations = walk.solve(self.config.tolerance, self.config.max_iterations);
        let stats = ComputeStats {
            keys: keys.len(),
            edges: walk.edge_count(),
            iterations,
            pushes: 0,
            incremental: false,
        };
        tracing::debug!(
            keys = stats.keys,
            edges = stats.edges,
            iterations,
            "trust scores computed"
        );
        self.cache = Some(Cache {
            keys: Arc::new(keys),
            index: Arc::new(index),
            walk,
        });
        self.dirty_rows.clear();
        self.dirty_full = false;
        self.finish(now, stats)
    }

    /// Incremental computation at the current wall-clock time.
    pub fn compute_incremental(&mut self) -> Scores {
        self.compute_incremental_at(unix_now())
    }

    /// Updates the previous computation for the signals applied since, by pushing the residual
    /// of the changed rows through the graph (see the crate doc). Falls back to
    /// [`TrustGraph::compute_at`] when there is no previous computation or anchors, denylist
    /// or config changed. The result is within the configured accuracy of a full computation
    /// but not bit-identical to it, and may depend on the order of updates.
    pub fn compute_incremental_at(&mut self, now: u64) -> Scores {
        if self.cache.is_none() || self.dirty_full {
            return self.compute_at(now);
        }
        let dirty: Vec<Key> = std::mem::take(&mut self.dirty_rows).into_iter().collect();
        let mut cache = self.cache.take().expect("checked above");
        let mut touched = Vec::new();
        for key in &dirty {
            let u = Self::ensure(&mut cache, *key) as usize;
            let row = {
                let mut lookup = |k: Key| Self::ensure_keys(&mut cache.keys, &mut cache.index, k);
                self.build_row(key, &mut lookup)
            };
            cache.walk.grow(cache.keys.len());
            let same = row.len() == cache.walk.rows[u].len()
                && row
                    .iter()
                    .zip(cache.walk.rows[u].iter())
                    .all(|(a, b)| a.to == b.to && a.w == b.w && a.kinds == b.kinds);
            if !same {
                cache.walk.replace_row(u, row, &mut touched);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        // Push while it is cheaper than sweeping: a budget of about two full sweeps of edge
        // work. A change at a heavy key (an anchor, a popular key) spreads everywhere; then a
        // warm-started power iteration finishes the job in fewer sweeps than from scratch.
        let budget = 2 * cache.keys.len().max(1) as u64;
        let (pushes, done) = cache
            .walk
            .push(&touched, self.config.incremental_epsilon, budget);
        let iterations = if done {
            0
        } else {
            cache
                .walk
                .solve_warm(self.config.tolerance, self.config.max_iterations)
        };
        let stats = ComputeStats {
            keys: cache.keys.len(),
            edges: cache.walk.edge_count(),
            iterations,
            pushes,
            incremental: true,
        };
        tracing::debug!(
            keys = stats.keys,
            pushes,
            changed = dirty.len(),
            "trust scores updated incrementally"
        );
        self.cache = Some(cache);
        self.finish(now, stats)
    }

    fn ensure_keys(keys: &mut Arc<Vec<Key>>, index: &mut Arc<HashMap<Key, u32>>, key: Key) -> u32 {
        if let Some(&i) = index.get(&key) {
            return i;
        }
        let i = keys.len() as u32;
        Arc::make_mut(keys).push(key);
        Arc::make_mut(index).insert(key, i);
        i
    }

    fn ensure(cache: &mut Cache, key: Key) -> u32 {
        let i = Self::ensure_keys(&mut cache.keys, &mut cache.index, key);
        cache.walk.grow(cache.keys.len());
        i
    }

    /// `block_reason` for every key, visiting only the (small) denylists and anchors' signals
    /// rather than all keys; same precedence as `block_reason`.
    fn blocked_vector(&self, cache: &Cache) -> Vec<Option<BlockReason>> {
        let mut blocked = vec![None; cache.keys.len()];
        let mut set = |k: &Key, reason: BlockReason| {
            if let Some(&i) = cache.index.get(k) {
                blocked[i as usize].get_or_insert(reason);
            }
        };
        self.builtin_deny
            .iter()
            .for_each(|k| set(k, BlockReason::BuiltinDenylist));
        self.operator_deny
            .iter()
            .for_each(|k| set(k, BlockReason::OperatorDenylist));
        if self.config.anchor_negative_blocks {
            for a in self.anchors.iter().filter(|a| !self.is_denylisted(a)) {
                let reason = BlockReason::AnchorNegative { anchor: *a };
                let distrusted = self
                    .labels
                    .range((*a, KEY_MIN)..=(*a, KEY_MAX))
                    .filter(|(_, (_, l))| *l == Label::Distrust)
                    .map(|((_, t), _)| t);
                let reported = self
                    .reports
                    .range((*a, KEY_MIN)..=(*a, KEY_MAX))
                    .map(|((_, t), _)| t);
                distrusted
                    .chain(reported)
                    .filter(|t| !self.anchors.contains(t))
                    .for_each(|t| set(t, reason));
            }
        }
        blocked
    }

    /// Turns the PageRank mass of the cache into scores, tiers and penalty records.
    fn finish(&mut self, now: u64, stats: ComputeStats) -> Scores {
        let mut cache = self.cache.take().expect("finish is called with a cache");
        // Keys that appeared only in negative signals, evidence or history since the last build.
        let extra: Vec<Key> = self
            .labels
            .keys()
            .chain(self.reports.keys())
            .flat_map(|(a, t)| [*a, *t])
            .chain(self.evidence.keys().copied())
            .chain(self.history.keys().copied())
            .filter(|k| !cache.index.contains_key(k))
            .collect();
        for k in extra {
            Self::ensure(&mut cache, k);
        }
        let cfg = &self.config;
        let n = cache.keys.len();
        let p = &cache.walk.p;
        let blocked = self.blocked_vector(&cache);
        let mut is_anchor = vec![false; n];
        for a in &self.anchors {
            if let Some(&i) = cache.index.get(a) {
                is_anchor[i as usize] = true;
            }
        }

        // Negative signals: per (target, reporter) the stronger of distrust label and report.
        let mut strongest: BTreeMap<(u32, u32), (f64, NegativeSignal)> = BTreeMap::new();
        let pen = &cfg.penalties;
        let labels = self
            .labels
            .iter()
            .filter(|(_, (_, l))| *l == Label::Distrust)
            .map(|(pair, _)| (pair, pen.distrust, NegativeSignal::Distrust));
        let reports = self.reports.iter().map(|(pair, (_, reason))| {
            let lambda = match reason {
                ReportReason::Malware => pen.malware,
                ReportReason::Impersonation => pen.impersonation,
                ReportReason::Spam => pen.spam,
                ReportReason::Other => pen.other,
            };
            (pair, lambda, NegativeSignal::Report { reason: *reason })
        });
        for ((a, t), lambda, signal) in labels.chain(reports) {
            let (ai, ti) = (cache.index[a], cache.index[t]);
            if blocked[ai as usize].is_some() {
                continue; // a blocked key's word does not count
            }
            let slot = strongest.entry((ti, ai)).or_insert((lambda, signal));
            if lambda > slot.0 {
                *slot = (lambda, signal);
            }
        }
        let mut penalty = vec![0.0; n];
        let mut negatives: Vec<NegEntry> = strongest
            .into_iter()
            .map(|((t, r), (lambda, signal))| {
                let amount = lambda * p[r as usize];
                penalty[t as usize] += amount;
                NegEntry {
                    target: t,
                    reporter: r,
                    signal,
                    penalty: amount,
                }
            })
            .collect();
        negatives.sort_by(|a, b| {
            a.target
                .cmp(&b.target)
                .then(b.penalty.total_cmp(&a.penalty))
                .then(a.reporter.cmp(&b.reporter))
        });

        let mut evidence_factor = vec![1.0; n];
        for (k, e) in &self.evidence {
            let x = cfg.evidence.equivocation * e.equivocations as f64
                + cfg.evidence.bad_bytes * e.bad_bytes as f64;
            evidence_factor[cache.index[k] as usize] = (-x).exp();
        }
        let mut history_factor = vec![1.0; n];
        let h = &cfg.history;
        for (k, hist) in &self.history {
            let age_days = now.saturating_sub(hist.first_seen) as f64 / 86_400.0;
            let by_age = if h.maturity_days > 0.0 {
                age_days / h.maturity_days
            } else {
                1.0
            };
            let by_releases = if h.maturity_releases > 0.0 {
                hist.accepted_releases as f64 / h.maturity_releases
            } else {
                1.0
            };
            let maturity = by_age.max(by_releases).min(1.0);
            history_factor[cache.index[k] as usize] =
                h.new_key_factor + (1.0 - h.new_key_factor) * maturity;
        }

        let alpha = cfg.restart_probability;
        let live_anchors = cache.walk.restart.len();
        let reference_mass = if live_anchors == 0 {
            f64::INFINITY
        } else {
            alpha * (1.0 - alpha) / (live_anchors as f64 * cfg.reference_fanout)
        };
        let mut corroboration = HashMap::new();
        let nodes: Vec<NodeOut> = (0..n)
            .map(|i| {
                let anchor = is_anchor[i];
                let (score, tier, rule) = if blocked[i].is_some() {
                    (0.0, Tier::Blocked, TierRule::Blocked)
                } else if anchor {
                    (1.0, Tier::Trusted, TierRule::Anchor)
                } else {
                    let x = (p[i] - penalty[i]).max(0.0) * evidence_factor[i] * history_factor[i]
                        / reference_mass;
                    let score = -(-x).exp_m1();
                    let (tier, rule) = if score >= cfg.thresholds.trusted {
                        let c = self.corroborate(&cache.keys[i]);
                        let rule = if c.holds() {
                            (Tier::Trusted, TierRule::Corroborated)
                        } else {
                            (Tier::Known, TierRule::Uncorroborated)
                        };
                        corroboration.insert(i as u32, c);
                        rule
                    } else if score >= cfg.thresholds.known {
                        (Tier::Known, TierRule::Score)
                    } else {
                        (Tier::Unknown, TierRule::BelowKnown)
                    };
                    (score, tier, rule)
                };
                NodeOut {
                    score,
                    tier,
                    rule,
                    penalty: penalty[i],
                    evidence_factor: evidence_factor[i],
                    history_factor: history_factor[i],
                    blocked: blocked[i],
                    anchor,
                }
            })
            .collect();
        let denylist = self
            .builtin_deny
            .iter()
            .map(|k| (*k, BlockReason::BuiltinDenylist))
            .chain(
                self.operator_deny
                    .iter()
                    .map(|k| (*k, BlockReason::OperatorDenylist)),
            )
            .collect();
        let snapshot = Snapshot {
            config: cfg.clone(),
            keys: cache.keys.clone(),
            index: cache.index.clone(),
            rows: cache.walk.rows.clone(),
            restart: cache.walk.restart.clone(),
            alpha,
            reference_mass,
            p: p.clone(),
            nodes,
            negatives,
            evidence: self.evidence.clone(),
            history: self.history.clone(),
            denylist,
            stats,
            corroboration,
            paths: Default::default(),
        };
        self.cache = Some(cache);
        Scores {
            inner: Arc::new(snapshot),
        }
    }
}
