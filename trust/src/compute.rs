//! Turning the signal store into [`Scores`]: the full computation, and the incremental one that
//! touches only what changed.
//!
//! Both end in [`TrustGraph::output`], the one function that turns a key's mass, penalty and
//! observations into its score, tier and rule, so the two paths cannot disagree on anything but
//! the mass itself. The cached state ([`Cache`]) is made of persistent collections (`imbl`):
//! a [`Scores`] shares them, and an incremental update copies only the chunks it changes, so
//! publishing a new `Scores` costs nothing per key that did not change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{HashMap as PMap, OrdMap, Vector};

use crate::engine::{Row, Walk};
use crate::graph::{TrustGraph, KEY_MAX, KEY_MIN};
use crate::key::Key;
use crate::score::{
    BlockReason, ComputeStats, Corroboration, NegativeSignal, NodeOut, Scores, Snapshot, Tier,
    TierRule,
};
use crate::signal::{Label, ReportReason};

/// See [`TrustGraph::push_threshold`].
const PUSH_REFERENCE_KEYS: usize = 100_000;

/// The state of the last computation, reused by incremental updates and shared with the
/// [`Scores`] it produced.
pub(crate) struct Cache {
    pub keys: Vector<Key>,
    pub index: PMap<Key, u32>,
    pub walk: Walk,
    /// `walk.p`, persistent (what a snapshot holds).
    pub p: Vector<f64>,
    pub nodes: Vector<NodeOut>,
    /// Per (target, reporter): the stronger of its distrust label and report, with its λ.
    /// Blocked reporters are left out (their word does not count).
    pub negatives: OrdMap<(u32, u32), (f64, NegativeSignal)>,
    /// The same entries as (reporter, target).
    pub by_reporter: BTreeSet<(u32, u32)>,
    /// Corroboration of every non-anchor, unblocked key whose score reaches `trusted`.
    pub corroboration: PMap<u32, Corroboration>,
    pub denylist: Arc<BTreeMap<Key, BlockReason>>,
    pub reference_mass: f64,
    /// Keys added since the last computation (their outputs are due).
    pub fresh: Vec<u32>,
}

/// A computation's constants for [`TrustGraph::output`].
struct Consts {
    reference_mass: f64,
    now: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Cache {
    fn ensure(&mut self, key: Key) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push_back(key);
        self.index.insert(key, i);
        self.walk.grow(self.keys.len());
        self.p.push_back(0.0);
        self.nodes.push_back(NodeOut::UNSEEN);
        self.fresh.push(i);
        i
    }
}

impl TrustGraph {
    fn restart(&self, index: &PMap<Key, u32>) -> Vec<(u32, f64)> {
        let live: Vec<u32> = self
            .anchors
            .iter()
            .filter(|a| !self.is_denylisted(a))
            .map(|a| index[a])
            .collect();
        let share = 1.0 / live.len() as f64;
        live.into_iter().map(|i| (i, share)).collect()
    }

    fn denylist_map(&self) -> Arc<BTreeMap<Key, BlockReason>> {
        Arc::new(
            self.builtin_deny
                .iter()
                .map(|k| (*k, BlockReason::BuiltinDenylist))
                .chain(
                    self.operator_deny
                        .iter()
                        .map(|k| (*k, BlockReason::OperatorDenylist)),
                )
                .collect(),
        )
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
        let index: PMap<Key, u32> = keys
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
        let n = keys.len();
        let stats = ComputeStats {
            keys: n,
            edges: walk.edge_count(),
            iterations,
            pushes: 0,
            incremental: false,
            changed: n,
            mass_error_bound: walk.r_l1 / walk.alpha,
        };
        tracing::debug!(
            keys = stats.keys,
            edges = stats.edges,
            iterations,
            "trust scores computed"
        );
        let alpha = self.config.restart_probability;
        let live_anchors = walk.restart.len();
        let reference_mass = if live_anchors == 0 {
            f64::INFINITY
        } else {
            alpha * (1.0 - alpha) / (live_anchors as f64 * self.config.reference_fanout)
        };
        let mut cache = Cache {
            keys: Vector::from(keys),
            index,
            p: Vector::from(walk.p.clone()),
            nodes: Vector::new(),
            walk,
            negatives: OrdMap::new(),
            by_reporter: BTreeSet::new(),
            corroboration: PMap::new(),
            denylist: self.denylist_map(),
            reference_mass,
            fresh: Vec::new(),
        };
        let blocked = self.blocked_vector(&cache);
        for (a, t) in self.labels.keys().chain(self.reports.keys()) {
            let (ai, ti) = (cache.index[a], cache.index[t]);
            if blocked[ai as usize].is_none() {
                if let Some(entry) = self.negative(a, t) {
                    cache.negatives.insert((ti, ai), entry);
                    cache.by_reporter.insert((ai, ti));
                }
            }
        }
        let mut penalty = vec![0.0; n];
        for (&(t, r), &(lambda, _)) in cache.negatives.iter() {
            penalty[t as usize] += lambda * cache.walk.p[r as usize];
        }
        let consts = Consts {
            reference_mass,
            now,
        };
        let mut corroboration = PMap::new();
        let nodes: Vector<NodeOut> = (0..n)
            .map(|i| {
                self.output(
                    &cache.keys[i],
                    i as u32,
                    cache.walk.p[i],
                    penalty[i],
                    blocked[i],
                    &consts,
                    &mut corroboration,
                )
            })
            .collect();
        cache.nodes = nodes;
        cache.corroboration = corroboration;
        self.clear_dirty();
        self.publish(cache, stats)
    }

    fn clear_dirty(&mut self) {
        self.dirty_rows.clear();
        self.dirty_keys.clear();
        self.dirty_pairs.clear();
        self.vouch = Default::default();
        self.dirty_full = false;
    }

    /// Incremental computation at the current wall-clock time.
    pub fn compute_incremental(&mut self) -> Scores {
        self.compute_incremental_at(unix_now())
    }

    /// Updates the previous computation for the signals applied since, by pushing the residual
    /// of the changed rows through the graph (see the crate doc), and re-deriving the outputs
    /// of only the keys whose mass, signals or observations changed. Falls back to
    /// [`TrustGraph::compute_at`] when there is no previous computation or anchors, denylist
    /// or config changed. The result is within the configured accuracy of a full computation
    /// but not bit-identical to it, and may depend on the order of updates.
    pub fn compute_incremental_at(&mut self, now: u64) -> Scores {
        if self.cache.is_none() || self.dirty_full {
            return self.compute_at(now);
        }
        let mut cache = self.cache.take().expect("checked above");
        let dirty_rows: Vec<Key> = std::mem::take(&mut self.dirty_rows).into_iter().collect();
        let dirty_keys = std::mem::take(&mut self.dirty_keys);
        let dirty_pairs = std::mem::take(&mut self.dirty_pairs);
        let vouch = std::mem::take(&mut self.vouch);
        let mut changed: Vec<u32> = Vec::new();

        // 1. Rows, and the residual they leave.
        let mut touched = Vec::new();
        for key in &dirty_rows {
            let u = cache.ensure(*key) as usize;
            changed.push(u as u32);
            let row = self.build_row(key, &mut |k| cache.ensure(k));
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
        let mut pushed = Vec::new();
        let (pushes, done) = cache.walk.push(
            &touched,
            self.push_threshold(cache.keys.len()),
            budget,
            &mut pushed,
        );
        let iterations = if done {
            0
        } else {
            cache
                .walk
                .solve_warm(self.config.tolerance, self.config.max_iterations)
        };
        if done {
            pushed.sort_unstable();
            pushed.dedup();
            for &x in &pushed {
                cache.p.set(x as usize, cache.walk.p[x as usize]);
            }
            changed.extend_from_slice(&pushed);
        } else {
            cache.p = Vector::from(cache.walk.p.clone());
            changed.extend(0..cache.keys.len() as u32);
        }

        // 2. Negative signals: the pairs that changed, and every pair of a key whose blocked
        //    state may have changed (its word counts or not).
        let mut pairs: BTreeSet<(Key, Key)> = dirty_pairs;
        for key in &dirty_rows {
            let by_label = self.labels.range((*key, KEY_MIN)..=(*key, KEY_MAX));
            let by_report = self.reports.range((*key, KEY_MIN)..=(*key, KEY_MAX));
            pairs.extend(by_label.map(|(pair, _)| *pair));
            pairs.extend(by_report.map(|(pair, _)| *pair));
        }
        for (a, t) in &pairs {
            let (ai, ti) = (cache.ensure(*a), cache.ensure(*t));
            let entry = if self.block_reason(a).is_some() {
                None
            } else {
                self.negative(a, t)
            };
            match entry {
                Some(e) => {
                    cache.negatives.insert((ti, ai), e);
                    cache.by_reporter.insert((ai, ti));
                }
                None => {
                    cache.negatives.remove(&(ti, ai));
                    cache.by_reporter.remove(&(ai, ti));
                }
            }
            changed.push(ti);
        }
        // A reporter whose mass moved moves its targets' penalties.
        for &r in &pushed {
            changed.extend(
                cache
                    .by_reporter
                    .range((r, 0)..=(r, u32::MAX))
                    .map(|&(_, t)| t),
            );
        }
        // Observations, and the history discount, which depends on `now`.
        for key in dirty_keys.iter().chain(self.history.keys()) {
            changed.push(cache.ensure(*key));
        }

        // 3. Corroboration that may no longer hold, or may hold now.
        if vouch.added || !vouch.changed_from.is_empty() {
            let anchor_changed = vouch.changed_from.iter().any(|k| self.anchors.contains(k));
            let stale: Vec<u32> = cache
                .corroboration
                .iter()
                .filter(|(_, c)| {
                    (vouch.added && !c.holds())
                        || (c.anchor_endorsed && anchor_changed)
                        || c.paths.iter().any(|p| {
                            p[..p.len() - 1]
                                .iter()
                                .any(|k| vouch.changed_from.contains(k))
                        })
                })
                .map(|(i, _)| *i)
                .collect();
            for i in stale {
                cache.corroboration.remove(&i);
                changed.push(i);
            }
        }

        // 4. The outputs of the keys that changed.
        changed.append(&mut cache.fresh);
        let deny_changed = dirty_rows
            .iter()
            .any(|k| self.is_denylisted(k) != cache.denylist.contains_key(k));
        if deny_changed {
            cache.denylist = self.denylist_map();
        }
        changed.sort_unstable();
        changed.dedup();
        let consts = Consts {
            reference_mass: cache.reference_mass,
            now,
        };
        let mut corroboration = std::mem::take(&mut cache.corroboration);
        for &i in &changed {
            let key = cache.keys[i as usize];
            let penalty: f64 = cache
                .negatives
                .range((i, 0)..=(i, u32::MAX))
                .map(|(&(_, r), &(lambda, _))| lambda * cache.walk.p[r as usize])
                .sum();
            let out = self.output(
                &key,
                i,
                cache.walk.p[i as usize],
                penalty,
                self.block_reason(&key),
                &consts,
                &mut corroboration,
            );
            cache.nodes.set(i as usize, out);
        }
        cache.corroboration = corroboration;
        let stats = ComputeStats {
            keys: cache.keys.len(),
            edges: cache.walk.edge_count(),
            iterations,
            pushes,
            incremental: true,
            changed: changed.len(),
            mass_error_bound: cache.walk.r_l1 / cache.walk.alpha,
        };
        tracing::debug!(
            keys = stats.keys,
            pushes,
            changed = stats.changed,
            "trust scores updated incrementally"
        );
        self.publish(cache, stats)
    }

    /// The residual each key may keep after an incremental update: `incremental_epsilon` up to
    /// [`PUSH_REFERENCE_KEYS`] keys, and beyond that shrinking as 1/n, so that what a key may
    /// keep stays the same fraction of the average mass 1/n (and the error in score units,
    /// which is relative to a fixed reference mass, does not grow with the graph).
    fn push_threshold(&self, keys: usize) -> f64 {
        let scale = (keys as f64 / PUSH_REFERENCE_KEYS as f64).max(1.0);
        self.config.incremental_epsilon / scale
    }

    /// The stronger of `author`'s distrust label and report about `target`, with its λ.
    fn negative(&self, author: &Key, target: &Key) -> Option<(f64, NegativeSignal)> {
        let pen = &self.config.penalties;
        let label = match self.labels.get(&(*author, *target)) {
            Some((_, Label::Distrust)) => Some((pen.distrust, NegativeSignal::Distrust)),
            _ => None,
        };
        let report = self.reports.get(&(*author, *target)).map(|(_, reason)| {
            let lambda = match reason {
                ReportReason::Malware => pen.malware,
                ReportReason::Impersonation => pen.impersonation,
                ReportReason::Spam => pen.spam,
                ReportReason::Other => pen.other,
            };
            (lambda, NegativeSignal::Report { reason: *reason })
        });
        match (label, report) {
            (Some(l), Some(r)) => Some(if r.0 > l.0 { r } else { l }),
            (l, r) => l.or(r),
        }
    }

    /// One key's score, tier and rule from its mass and penalty, the node's observations and,
    /// for a key whose score reaches `trusted`, its corroboration (taken from `corroboration`
    /// or computed into it; removed when the score does not reach `trusted`).
    #[allow(clippy::too_many_arguments)]
    fn output(
        &self,
        key: &Key,
        i: u32,
        p: f64,
        penalty: f64,
        blocked: Option<BlockReason>,
        consts: &Consts,
        corroboration: &mut PMap<u32, Corroboration>,
    ) -> NodeOut {
        let cfg = &self.config;
        let evidence_factor = self.evidence.get(key).map_or(1.0, |e| {
            let x = cfg.evidence.equivocation * e.equivocations as f64
                + cfg.evidence.bad_bytes * e.bad_bytes as f64;
            (-x).exp()
        });
        let history_factor = self.history.get(key).map_or(1.0, |hist| {
            let h = &cfg.history;
            let age_days = consts.now.saturating_sub(hist.first_seen) as f64 / 86_400.0;
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
            h.new_key_factor + (1.0 - h.new_key_factor) * maturity
        });
        let anchor = self.anchors.contains(key);
        let (score, tier, rule) = if blocked.is_some() {
            (0.0, Tier::Blocked, TierRule::Blocked)
        } else if anchor {
            (1.0, Tier::Trusted, TierRule::Anchor)
        } else {
            let x =
                (p - penalty).max(0.0) * evidence_factor * history_factor / consts.reference_mass;
            let score = -(-x).exp_m1();
            let (tier, rule) = if score >= cfg.thresholds.trusted {
                let c = corroboration
                    .entry(i)
                    .or_insert_with(|| self.corroborate(key));
                if c.holds() {
                    (Tier::Trusted, TierRule::Corroborated)
                } else {
                    (Tier::Known, TierRule::Uncorroborated)
                }
            } else if score >= cfg.thresholds.known {
                (Tier::Known, TierRule::Score)
            } else {
                (Tier::Unknown, TierRule::BelowKnown)
            };
            (score, tier, rule)
        };
        if rule != TierRule::Corroborated && rule != TierRule::Uncorroborated {
            corroboration.remove(&i);
        }
        NodeOut {
            score,
            tier,
            rule,
            penalty,
            evidence_factor,
            history_factor,
            blocked,
            anchor,
        }
    }

    /// `block_reason` for every key, visiting only the (small) denylists and the index of
    /// anchors' negative signals rather than all keys; same precedence as `block_reason`.
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
            for (t, by) in &self.negated_by_anchor {
                if self.anchors.contains(t) {
                    continue;
                }
                if let Some(a) = by.iter().find(|a| !self.is_denylisted(a)) {
                    set(t, BlockReason::AnchorNegative { anchor: *a });
                }
            }
        }
        blocked
    }

    /// Keeps `cache` for the next update and hands out a [`Scores`] sharing it.
    fn publish(&mut self, cache: Cache, stats: ComputeStats) -> Scores {
        let snapshot = Snapshot {
            config: self.config.clone(),
            keys: cache.keys.clone(),
            index: cache.index.clone(),
            rows: cache.walk.rows.clone(),
            restart: cache.walk.restart.clone(),
            alpha: cache.walk.alpha,
            reference_mass: cache.reference_mass,
            p: cache.p.clone(),
            nodes: cache.nodes.clone(),
            negatives: cache.negatives.clone(),
            evidence: self.evidence.clone(),
            history: self.history.clone(),
            denylist: cache.denylist.clone(),
            stats,
            corroboration: cache.corroboration.clone(),
            paths: Default::default(),
        };
        self.cache = Some(cache);
        Scores {
            inner: Arc::new(snapshot),
        }
    }
}
