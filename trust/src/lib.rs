//! # archy-trust: publisher reputation that resists sybils and explains itself
//!
//! Turns trust signals about Nostr keys into a score in [0, 1], a [`Tier`] and an
//! [`Explanation`] per key, personalised to the operator's anchors. Knows nothing of Nostr
//! transport: the node converts its (signature-checked) events into [`RawEvent`]s.
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`key`] | [`Key`] (32-byte x-only key as 64-hex), the built-in denylist |
//! | [`signal`] | [`RawEvent`] → [`Signal`] ([`signals_from_event`]), evidence and history types |
//! | [`config`] | [`TrustConfig`] with documented defaults and validation |
//! | [`graph`] | [`TrustGraph`]: signal store, replacement rules, full and incremental computation |
//! | [`score`] | [`Scores`], [`Report`], [`Explanation`], [`Tier`], the sybil bound helper |
//! | [`policy`] | [`decide`]: tier → [`Decision`] |
//! | `engine` | power iteration and residual push (private) |
//!
//! ```
//! use archy_trust::{TrustConfig, TrustGraph, RawEvent, Key, Tier};
//! let node: Key = "11".repeat(32).parse().unwrap();
//! let publisher: Key = "22".repeat(32).parse().unwrap();
//! let mut graph = TrustGraph::new(TrustConfig { anchors: vec![node], ..Default::default() }).unwrap();
//! graph.apply_event(&RawEvent {
//!     pubkey: node.to_hex(), kind: 1985, created_at: 1,
//!     tags: vec![vec!["L".into(), "archy.trust".into()],
//!                vec!["l".into(), "endorse".into(), "archy.trust".into()],
//!                vec!["p".into(), publisher.to_hex()]],
//! });
//! let scores = graph.compute();
//! assert_eq!(scores.get(&publisher).tier, Tier::Trusted);
//! ```
//!
//! ## Algorithm
//! **Positive graph.** An edge u→v has weight `follow_weight` (NIP-02 follow, default 1) plus
//! `endorse_weight` (NIP-32 `endorse`, default 3: an explicit statement about a publisher
//! says more than a social follow). Rows are normalised: W(u→v) = weight/Σ weights of u.
//! A key with no out-edge, and every blocked key, is *dangling*: its walk restarts.
//!
//! **Personalised PageRank** with restart probability α (default 0.25) to the anchor
//! distribution s (uniform over the non-denylisted anchors):
//! `p = α·s + (1−α)·p·W`. p(v) is the probability that a walk that starts at an anchor and
//! at each step stops with probability α, or else follows a random weighted out-edge, is at v.
//! This is EigenTrust with pre-trusted peers, i.e. the personalised PageRank used by
//! SybilRank-style defences: trust only ever *originates* at the anchors, so a cluster of
//! keys that endorse each other gains nothing unless someone trusted points into it.
//! Solved by power iteration from s until the L1 change is below `tolerance` (1e-10; the
//! change shrinks at least by (1−α) per iteration, so at most ~80 iterations at α = 0.25,
//! 21 on the 100k-key test graph); every sum runs in key order, keys are indexed sorted, so
//! the result is a pure function of the signal set.
//!
//! *Why α = 0.25:* the sybil bound below scales with (1−α)/α (3 at 0.25, 5.7 at the web's
//! 0.15), and the penalty cap α/(1−α) (1/3) leaves room for strong penalties; each hop still
//! passes on 75 % of the mass, so friends of friends of friends are reachable.
//!
//! **Negative signals** are penalties in mass units weighted by the reporter's own trust:
//! a `distrust` label or a report by r against v subtracts λ·p(r) from p(v), with λ from
//! [`config::Penalties`] (distrust/malware/impersonation 0.3, spam 0.15, other 0.1); per
//! (reporter, target) only the stronger of label and report counts. An untrusted reporter
//! has p(r) ≈ 0, so a thousand sybil reports cost an honest key nothing; a reporter with
//! the same standing as the target removes 30 % of it. Negative signals do not cut the
//! target's out-edges (that would make the result depend on them in a circle).
//!
//! **Evidence and history** (the node's own observations) multiply: by
//! exp(−1.5·equivocations − 0.5·bad-bytes fetches), and for publishers the node has
//! history for, by a new-key discount rising from 0.5 to 1 over 30 days or 5 accepted
//! releases. Both factors are ≤ 1, so they never help an attacker.
//!
//! **Score.** x(v) = max(0, p(v) − penalties)·factors / R with the reference mass
//! R = α(1−α)/(|anchors|·reference_fanout), i.e. x = 1 for a key endorsed by a sole anchor
//! that endorses `reference_fanout` (20) keys; score = 1 − e^(−x), which is strictly
//! increasing, in [0, 1), and ≤ x. Anchors score 1. Tiers: `trusted` ≥ 0.5, `known` ≥ 0.1,
//! else `unknown`; `blocked` (score 0) for the built-in denylist (keys with public private
//! keys), the operator denylist, and (if `anchor_negative_blocks`) a distrust label or
//! report by an anchor. A blocked key's out-edges are dropped.
//!
//! ## Sybil bound (stated, proved here, tested in `tests/sybil.rs`)
//! Let S be a set of keys holding no anchor, and A the *attack edges*: edges u→v with u ∉ S,
//! v ∈ S. Because s(S) = 0 and dangling/blocked keys restart at anchors (outside S),
//! summing the fixed-point equation over S gives
//! p(S) = (1−α)·[Σ_{u∈S} p(u)·W(u→S) + Σ_{(u,v)∈A} p(u)·W(u→v)] ≤ (1−α)·p(S) + (1−α)·F_A,
//! with F_A = Σ_{(u,v)∈A} p(u)·W(u→v), hence
//!
//! > **p(S) ≤ (1−α)/α · Σ_{(u,v)∈A} p(u)·W(u→v)**  ([`Scores::escape_bound`])
//!
//! whatever S does inside (any number of keys, any edges, edges back into the honest
//! region). With k attack edges from sources of mass at most p̄ and out-weight share at
//! most w̄ (= 1/d for a source with d equal out-edges): **p(S) ≤ k·(1−α)/α·p̄·w̄**; with
//! k = 0, p(S) = 0. Penalties and factors only lower mass and 1 − e^(−x) ≤ x, so the
//! **total score of S is at most that bound / R**, and no key of S can be `trusted` while
//! bound/R < −ln(1 − thresholds.trusted) (≈ 0.69 at the default 0.5). Honest keys that point into S spend their own trust:
//! the attack is bounded by the standing of the keys it fools, not by its size.
//!
//! ## Monotonicity (tested with proptest in `tests/properties.rs`)
//! Adding an edge u→v raises p(v) (Δp(v) ≥ 0, by the row-update formula
//! Δp = (1−α)·p(u)·(W'_u − W_u)·Z' and Z'_vv ≥ Z'_jv). Other keys can gain too, and if they
//! reported v their penalty grows; but by first-passage decomposition Δp(r) ≤
//! (Z'_vr/Z'_vv)·Δp(v), and Σ_{r≠v} Z'_vr/Z'_vv ≤ (1−α)/α, so the extra penalty is at most
//! λ_max·(1−α)/α·Δp(v) ≤ Δp(v) because every λ ≤ α/(1−α) ([`TrustConfig::validate`]
//! enforces it). Hence an endorsement never lowers its target's score, and symmetrically a
//! distrust label or report never raises it. (The cap is sufficient, not necessary: since
//! p(r) ≥ (Z_vr/Z_vv)·p(v) as well, a target whose mass survives its penalties is hard to
//! push down this way even with larger λ; the cap makes it a proof.)
//!
//! ## Incremental update
//! [`TrustGraph::compute_incremental`] keeps the last (p, r) where r = α·s + (1−α)·p·W − p is
//! the residual. When a row changes, r += (1−α)·p(u)·(W'_u − W_u) keeps r exact for the new
//! matrix; residual is then pushed (p_x += r_x; neighbours get (1−α)·r_x·W_x) until every
//! |r_x| ≤ `incremental_epsilon`. Work is proportional to how far the change spreads, and
//! unpushed residual stays on the books, so errors do not accumulate over many updates.
//! When a change at a heavy key (an anchor, a popular key) would need more than ~2 sweeps'
//! worth of pushes, the rest is finished by power iteration warm-started from the current
//! estimate (rescaled to mass 1), which needs far fewer iterations than a cold start and no
//! rebuild. Changes of anchors, denylist or config recompute from scratch.
//!
//! Measured (`cargo run --release -p archy-trust --example scale`, 100k keys, 1.02M edges,
//! 2 shared cores): full computation 0.34–0.55 s including the graph build (21 iterations),
//! peak RSS ~133 MB after it; one new endorsement by a typical key 24–29 ms median (of which
//! ~15 ms is the fixed cost of re-deriving 100k scores), a new contact list of a popular key
//! or an anchor's endorsement ~55 ms; incremental and full results differ by < 1e-10.
//!
//! ## Using it from the node
//! Build one [`TrustGraph`] at start-up (anchors = node key + configured keys), feed it every
//! verified kind 3/1984/1985 event with [`TrustGraph::apply_event`], catalog observations with
//! [`TrustGraph::add_evidence`] / [`TrustGraph::set_history`], then call
//! [`TrustGraph::compute_incremental`] after each batch (it falls back to a full computation
//! when needed) and keep the returned [`Scores`]: [`Scores::tier`] and [`Scores::decide`] are
//! O(1); [`Scores::get`] explains one key. [`TrustGraph::collection_targets`] says whose
//! contact lists and labels to fetch; [`TrustGraph::export_signals`] gives the current
//! signal set for persistence.

pub mod config;
mod engine;
pub mod graph;
pub mod key;
pub mod policy;
pub mod score;
pub mod signal;

pub use config::{
    ConfigError, EvidenceWeights, HistoryWeights, Penalties, Thresholds, TrustConfig,
};
pub use engine::EdgeKinds;
pub use graph::{TrustError, TrustGraph};
pub use key::{builtin_denylist, Key, KeyError, BUILTIN_DENYLIST};
pub use policy::{decide, Decision};
pub use score::{
    BlockReason, ComputeStats, Contribution, Explanation, Hop, NegativeSignal, PenaltyItem, Report,
    Scores, Tier, TierError, TrustPath,
};
pub use signal::{
    signals_from_event, Evidence, EvidenceCounts, History, Label, RawEvent, ReportReason, Signal,
    KIND_CONTACTS, KIND_LABEL, KIND_REPORT, LABEL_NAMESPACE,
};
