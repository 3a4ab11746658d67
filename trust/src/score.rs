//! Results: [`Scores`] (one computation, cheap to clone and share), per-key [`Report`]s with an
//! [`Explanation`], and [`Tier`]s.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use imbl::{HashMap as PMap, OrdMap, Vector};
use serde::{Deserialize, Serialize};

use crate::config::TrustConfig;
use crate::engine::{EdgeKinds, Row};
use crate::key::Key;
use crate::policy::{decide, Decision};
use crate::signal::{EvidenceCounts, History, ReportReason};

/// How far a key is trusted. Ordered: `Blocked < Unknown < Known < Trusted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Denylisted, or a distrust/report by an anchor: never installed.
    Blocked,
    /// Below the `known` threshold (including keys the graph has never seen).
    Unknown,
    /// At or above `thresholds.known`.
    Known,
    /// At or above `thresholds.trusted`, or an anchor.
    Trusted,
}

impl Tier {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Blocked => "blocked",
            Tier::Unknown => "unknown",
            Tier::Known => "known",
            Tier::Trusted => "trusted",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trust tier {0:?}: expected trusted, known, unknown or blocked")]
pub struct TierError(pub String);

impl FromStr for Tier {
    type Err = TierError;
    fn from_str(s: &str) -> Result<Self, TierError> {
        match s.to_ascii_lowercase().as_str() {
            "blocked" => Ok(Tier::Blocked),
            "unknown" => Ok(Tier::Unknown),
            "known" => Ok(Tier::Known),
            "trusted" => Ok(Tier::Trusted),
            _ => Err(TierError(s.to_string())),
        }
    }
}

/// Why a key is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum BlockReason {
    /// On the built-in list of keys with public private keys.
    BuiltinDenylist,
    /// Blocked by the operator (config or `block`).
    OperatorDenylist,
    /// An anchor labelled it `distrust` or reported it.
    AnchorNegative {
        /// The anchor.
        anchor: Key,
    },
}

/// Which rule put a key in its tier (see "Sybil-resistant tier" in the crate doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierRule {
    /// `blocked`: denylisted, or distrusted or reported by an anchor.
    Blocked,
    /// `trusted`: an anchor of this node.
    Anchor,
    /// `trusted`: the score reaches `thresholds.trusted` and the key is corroborated (an anchor
    /// endorses it, or enough independent vouch paths reach it).
    Corroborated,
    /// `known`: the score reaches `thresholds.trusted`, but the key is not corroborated. Mass a
    /// region amplifies inside itself counts for nothing here.
    Uncorroborated,
    /// `known`: the score reaches `thresholds.known` (and not `thresholds.trusted`).
    Score,
    /// `unknown`: the score is below `thresholds.known`.
    BelowKnown,
}

impl TierRule {
    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            TierRule::Blocked => "blocked: denylisted, or distrusted or reported by an anchor",
            TierRule::Anchor => "trusted: an anchor of this node",
            TierRule::Corroborated => {
                "trusted: the score reaches the trusted threshold and an anchor endorses the key \
                 or enough independent vouch paths reach it"
            }
            TierRule::Uncorroborated => {
                "known, not trusted: the score reaches the trusted threshold, but no anchor \
                 endorses the key and too few independent vouch paths reach it (follows of \
                 non-anchor keys do not vouch)"
            }
            TierRule::Score => "known: the score reaches the known threshold",
            TierRule::BelowKnown => "unknown: the score is below the known threshold",
        }
    }
}

/// The evidence for `trusted` that a sybil region cannot make for itself: an anchor's
/// endorsement, or independent paths through the vouch graph (anchors' follows and
/// endorsements, and the endorsements of other unblocked keys) that share no key but their
/// anchor and this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corroboration {
    /// A (live) anchor endorses the key.
    pub anchor_endorsed: bool,
    /// Independent vouch paths found (the search stops at `needed`).
    pub independent_paths: u32,
    /// `thresholds.independent_paths`.
    pub needed: u32,
    /// The paths found, anchor first, each ending with the key.
    pub paths: Vec<Vec<Key>>,
}

impl Corroboration {
    /// Whether this is enough for `trusted` (with the score).
    pub fn holds(&self) -> bool {
        self.anchor_endorsed || self.independent_paths >= self.needed
    }
}

/// A negative signal against a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NegativeSignal {
    /// A `distrust` label.
    Distrust,
    /// A NIP-56 report.
    Report {
        /// Its reason.
        reason: ReportReason,
    },
}

/// One hop of a trust path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// From (an anchor on the first hop).
    pub from: Key,
    /// To.
    pub to: Key,
    /// Follow and/or endorsement.
    pub kinds: EdgeKinds,
}

/// A path from an anchor to the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustPath {
    /// The hops, anchor first.
    pub hops: Vec<Hop>,
    /// Product of (1−α)·transition probability along the path: the share of a walk that
    /// starts at the first anchor and follows exactly this path.
    pub strength: f64,
}

/// An incoming positive edge and the PageRank mass it carries into the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The endorser or follower.
    pub from: Key,
    /// Follow and/or endorsement.
    pub kinds: EdgeKinds,
    /// Mass carried: (1−α)·p(from)·W(from→key).
    pub mass: f64,
}

/// A negative signal that lowered the key's mass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PenaltyItem {
    /// The reporter.
    pub from: Key,
    /// The stronger of its distrust label and its report.
    pub signal: NegativeSignal,
    /// The reporter's own PageRank mass p(from).
    pub reporter_mass: f64,
    /// Mass subtracted: λ·p(from).
    pub penalty_mass: f64,
}

/// Why a key has its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The rule that put the key in its tier.
    pub rule: TierRule,
    /// Evidence for `trusted` beyond the score; computed for keys whose score reaches
    /// `thresholds.trusted` (for the others the score alone decides).
    pub corroboration: Option<Corroboration>,
    /// The key is an anchor (score 1 by definition).
    pub anchor: bool,
    /// Set when the key is blocked.
    pub blocked: Option<BlockReason>,
    /// Personalised PageRank mass p(key).
    pub mass: f64,
    /// The strongest paths from the anchors (up to 3, strongest first, each ending with a
    /// different incoming edge).
    pub paths: Vec<TrustPath>,
    /// The strongest incoming edges (up to 5).
    pub endorsers: Vec<Contribution>,
    /// Every negative signal that counted, largest first.
    pub penalties: Vec<PenaltyItem>,
    /// Sum of penalty masses.
    pub penalty_mass: f64,
    /// Catalog evidence against the key.
    pub evidence: EvidenceCounts,
    /// exp(−(weights·evidence)), in (0, 1].
    pub evidence_factor: f64,
    /// What the node knows of the key's past.
    pub history: Option<History>,
    /// The new-key discount, in [new_key_factor, 1].
    pub history_factor: f64,
}

/// The result for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The key.
    pub key: Key,
    /// Score in [0, 1].
    pub score: f64,
    /// Tier.
    pub tier: Tier,
    /// Why.
    pub explanation: Explanation,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.explanation;
        writeln!(
            f,
            "{}  score {:.3}  tier {}",
            self.key, self.score, self.tier
        )?;
        if e.anchor {
            writeln!(f, "  anchor (configured trust root)")?;
        }
        if let Some(b) = &e.blocked {
            match b {
                BlockReason::BuiltinDenylist => {
                    writeln!(f, "  blocked: built-in denylist (leaked/trivial key)")?
                }
                BlockReason::OperatorDenylist => writeln!(f, "  blocked: operator denylist")?,
                BlockReason::AnchorNegative { anchor } => {
                    writeln!(f, "  blocked: distrusted or reported by anchor {anchor}")?
                }
            }
        }
        for p in &e.paths {
            write!(f, "  path ({:.2e}):", p.strength)?;
            for (i, h) in p.hops.iter().enumerate() {
                if i == 0 {
                    write!(f, " {}", &h.from.to_hex()[..12])?;
                }
                let via = match (h.kinds.follow, h.kinds.endorse) {
                    (true, true) => "follows+endorses",
                    (false, true) => "endorses",
                    _ => "follows",
                };
                write!(f, " -{via}-> {}", &h.to.to_hex()[..12])?;
            }
            writeln!(f)?;
        }
        for p in &e.penalties {
            let what = match p.signal {
                NegativeSignal::Distrust => "distrust".to_string(),
                NegativeSignal::Report { reason } => format!("report {reason:?}").to_lowercase(),
            };
            writeln!(
                f,
                "  {what} by {} (penalty {:.2e} of mass {:.2e})",
                p.from, p.penalty_mass, e.mass
            )?;
        }
        if e.evidence_factor < 1.0 {
            writeln!(
                f,
                "  evidence: {} equivocation(s), {} bad-bytes fetch(es): x{:.2}",
                e.evidence.equivocations, e.evidence.bad_bytes, e.evidence_factor
            )?;
        }
        if e.history_factor < 1.0 {
            writeln!(f, "  new key discount: x{:.2}", e.history_factor)?;
        }
        Ok(())
    }
}

/// Per-key numbers kept by a computation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeOut {
    pub score: f64,
    pub tier: Tier,
    pub rule: TierRule,
    pub penalty: f64,
    pub evidence_factor: f64,
    pub history_factor: f64,
    pub blocked: Option<BlockReason>,
    pub anchor: bool,
}

impl NodeOut {
    /// A key that was just added and has no mass or signal yet.
    pub const UNSEEN: NodeOut = NodeOut {
        score: 0.0,
        tier: Tier::Unknown,
        rule: TierRule::BelowKnown,
        penalty: 0.0,
        evidence_factor: 1.0,
        history_factor: 1.0,
        blocked: None,
        anchor: false,
    };
}

/// How a computation went.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ComputeStats {
    /// Keys in the graph.
    pub keys: usize,
    /// Positive edges.
    pub edges: usize,
    /// Power iterations (for an incremental update: warm-started ones, 0 unless the push
    /// budget of about two sweeps ran out).
    pub iterations: u32,
    /// Residual pushes (incremental update only).
    pub pushes: u64,
    /// Whether this was an incremental update.
    pub incremental: bool,
    /// Keys whose outputs were re-derived (all of them for a full computation).
    #[serde(default)]
    pub changed: usize,
    /// Certified bound on ‖p − p_exact‖₁, the L1 distance of this mass vector from the exact
    /// solution (Σ|residual|/α): no key's mass is further off than this.
    #[serde(default)]
    pub mass_error_bound: f64,
}

pub(crate) struct Snapshot {
    pub config: TrustConfig,
    pub keys: Vector<Key>,
    pub index: PMap<Key, u32>,
    pub rows: Vector<Row>,
    pub restart: Arc<[(u32, f64)]>,
    pub alpha: f64,
    pub reference_mass: f64,
    pub p: Vector<f64>,
    pub nodes: Vector<NodeOut>,
    /// Per (target, reporter): λ and the signal that counted.
    pub negatives: OrdMap<(u32, u32), (f64, NegativeSignal)>,
    pub evidence: Arc<BTreeMap<Key, EvidenceCounts>>,
    pub history: Arc<BTreeMap<Key, History>>,
    /// Denylist entries, so that keys the graph never saw still report as blocked.
    pub denylist: Arc<BTreeMap<Key, BlockReason>>,
    pub stats: ComputeStats,
    /// Corroboration of every non-anchor, unblocked key whose score reaches `trusted`.
    pub corroboration: PMap<u32, Corroboration>,
    /// Strongest-path tree from the anchors (distance, predecessor), built on first explain.
    pub paths: OnceLock<Vec<(f64, u32)>>,
}

/// The scores of one computation. Cloning is cheap (shared); a `Scores` never changes.
#[derive(Clone)]
pub struct Scores {
    pub(crate) inner: Arc<Snapshot>,
}

impl fmt::Debug for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scores")
            .field("stats", &self.inner.stats)
            .finish()
    }
}

#[derive(PartialEq)]
struct MinCost(f64);
impl Eq for MinCost {}
impl PartialOrd for MinCost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MinCost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Scores {
    fn idx(&self, key: &Key) -> Option<usize> {
        self.inner.index.get(key).map(|&i| i as usize)
    }

    /// Score in [0, 1]; 0 for keys never seen.
    pub fn score(&self, key: &Key) -> f64 {
        self.idx(key).map_or(0.0, |i| self.inner.nodes[i].score)
    }

    /// Tier; `Unknown` for keys never seen (or `Blocked` if denylisted).
    pub fn tier(&self, key: &Key) -> Tier {
        match self.idx(key) {
            Some(i) => self.inner.nodes[i].tier,
            None if self.inner.denylist.contains_key(key) => Tier::Blocked,
            None => Tier::Unknown,
        }
    }

    /// The policy decision for installing or auto-updating from `key` at the configured
    /// `install_tier`.
    pub fn decide(&self, key: &Key) -> Decision {
        decide(self.tier(key), self.inner.config.install_tier)
    }

    /// Personalised PageRank mass p(key) (before penalties and factors); sums to 1 over all keys.
    pub fn mass(&self, key: &Key) -> f64 {
        self.idx(key).map_or(0.0, |i| self.inner.p[i])
    }

    /// Transition probability W(from→to) of the positive graph (0 when there is no edge).
    pub fn transition(&self, from: &Key, to: &Key) -> f64 {
        let (Some(u), Some(v)) = (self.idx(from), self.idx(to)) else {
            return 0.0;
        };
        self.inner.rows[u]
            .iter()
            .find(|e| e.to as usize == v)
            .map_or(0.0, |e| e.w)
    }

    /// The sybil bound of the crate doc for a set of attack edges (honest source → attacker):
    /// `(1−α)/α · Σ p(u)·W(u→v)`. The total mass of any key set S that holds no anchor and is
    /// entered only through these edges is at most this, and the sum of the scores of S is at
    /// most this divided by [`Scores::reference_mass`].
    pub fn escape_bound(&self, attack_edges: &[(Key, Key)]) -> f64 {
        let a = self.inner.alpha;
        let flow = attack_edges
            .iter()
            .map(|(u, v)| self.mass(u) * self.transition(u, v))
            .sum::<f64>()
            + 0.0; // an empty sum is -0.0
        (1.0 - a) / a * flow
    }

    /// The mass that counts as x = 1 (score 1 − 1/e): α(1−α)/(anchors·reference_fanout).
    pub fn reference_mass(&self) -> f64 {
        self.inner.reference_mass
    }

    /// The restart probability α used.
    pub fn restart_probability(&self) -> f64 {
        self.inner.alpha
    }

    /// How the computation went.
    pub fn stats(&self) -> ComputeStats {
        self.inner.stats
    }

    /// Every key the graph knows, sorted, with score and tier.
    pub fn all(&self) -> Vec<(Key, f64, Tier)> {
        let s = &self.inner;
        let mut out: Vec<(Key, f64, Tier)> = s
            .keys
            .iter()
            .zip(s.nodes.iter())
            .map(|(k, n)| (*k, n.score, n.tier))
            .collect();
        out.sort_unstable_by_key(|a| a.0);
        out
    }

    fn path_tree(&self) -> &[(f64, u32)] {
        self.inner.paths.get_or_init(|| {
            let s = &self.inner;
            let n = s.keys.len();
            let c = 1.0 - s.alpha;
            let mut best = vec![(f64::INFINITY, u32::MAX); n];
            let mut heap = BinaryHeap::new();
            for &(a, _) in s.restart.iter() {
                best[a as usize] = (0.0, u32::MAX);
                heap.push(Reverse((MinCost(0.0), a)));
            }
            while let Some(Reverse((MinCost(d), u))) = heap.pop() {
                if d > best[u as usize].0 {
                    continue;
                }
                for e in s.rows[u as usize].iter() {
                    let nd = d - (c * e.w).ln();
                    let slot = &mut best[e.to as usize];
                    if nd < slot.0 || (nd == slot.0 && u < slot.1) {
                        *slot = (nd, u);
                        heap.push(Reverse((MinCost(nd), e.to)));
                    }
                }
            }
            best
        })
    }

    /// Score, tier and explanation of one key. The first call builds the strongest-path tree
    /// (one Dijkstra over the graph); every call scans the edges once for incoming
    /// contributions, so this is meant for showing a few keys, not for ranking all of them.
    pub fn get(&self, key: &Key) -> Report {
        let s = &self.inner;
        let evidence = s.evidence.get(key).copied().unwrap_or_default();
        let history = s.history.get(key).copied();
        let Some(v) = self.idx(key) else {
            let blocked = s.denylist.get(key).copied();
            return Report {
                key: *key,
                score: 0.0,
                tier: if blocked.is_some() {
                    Tier::Blocked
                } else {
                    Tier::Unknown
                },
                explanation: Explanation {
                    rule: if blocked.is_some() {
                        TierRule::Blocked
                    } else {
                        TierRule::BelowKnown
                    },
                    corroboration: None,
                    anchor: false,
                    blocked,
                    mass: 0.0,
                    paths: Vec::new(),
                    endorsers: Vec::new(),
                    penalties: Vec::new(),
                    penalty_mass: 0.0,
                    evidence,
                    evidence_factor: 1.0,
                    history,
                    history_factor: 1.0,
                },
            };
        };
        let node = s.nodes[v];
        let c = 1.0 - s.alpha;
        let mut incoming: Vec<(usize, EdgeKinds, f64, f64)> = Vec::new();
        for (u, row) in s.rows.iter().enumerate() {
            for e in row.iter().filter(|e| e.to as usize == v) {
                incoming.push((u, e.kinds, c * s.p[u] * e.w, e.w));
            }
        }
        incoming.sort_by(|a, b| b.2.total_cmp(&a.2).then(s.keys[a.0].cmp(&s.keys[b.0])));
        let endorsers = incoming
            .iter()
            .take(5)
            .map(|&(u, kinds, mass, _)| Contribution {
                from: s.keys[u],
                kinds,
                mass,
            })
            .collect();
        let mut paths = Vec::new();
        if !node.anchor {
            let tree = self.path_tree();
            for &(u, kinds, _, w) in &incoming {
                if paths.len() == 3 {
                    break;
                }
                let (dist, _) = tree[u];
                if !dist.is_finite() {
                    continue;
                }
                let mut chain = vec![u];
                let mut cur = u;
                while tree[cur].1 != u32::MAX {
                    cur = tree[cur].1 as usize;
                    chain.push(cur);
                }
                if chain.contains(&v) {
                    continue;
                }
                chain.reverse();
                let mut hops: Vec<Hop> = chain
                    .windows(2)
                    .map(|pair| {
                        let kinds = s.rows[pair[0]]
                            .iter()
                            .find(|e| e.to as usize == pair[1])
                            .map(|e| e.kinds)
                            .unwrap_or_default();
                        Hop {
                            from: s.keys[pair[0]],
                            to: s.keys[pair[1]],
                            kinds,
                        }
                    })
                    .collect();
                hops.push(Hop {
                    from: s.keys[u],
                    to: *key,
                    kinds,
                });
                paths.push(TrustPath {
                    hops,
                    strength: (-dist).exp() * c * w,
                });
            }
        }
        let mut penalties: Vec<PenaltyItem> = s
            .negatives
            .range((v as u32, 0)..=(v as u32, u32::MAX))
            .map(|(&(_, r), &(lambda, signal))| PenaltyItem {
                from: s.keys[r as usize],
                signal,
                reporter_mass: s.p[r as usize],
                penalty_mass: lambda * s.p[r as usize],
            })
            .collect();
        penalties.sort_by(|a, b| {
            b.penalty_mass
                .total_cmp(&a.penalty_mass)
                .then(a.from.cmp(&b.from))
        });
        Report {
            key: *key,
            score: node.score,
            tier: node.tier,
            explanation: Explanation {
                rule: node.rule,
                corroboration: s.corroboration.get(&(v as u32)).cloned(),
                anchor: node.anchor,
                blocked: node.blocked,
                mass: s.p[v],
                paths,
                endorsers,
                penalties,
                penalty_mass: node.penalty,
                evidence,
                evidence_factor: node.evidence_factor,
                history,
                history_factor: node.history_factor,
            },
        }
    }
}
