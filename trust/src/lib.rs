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
//! | `corroborate` | independent vouch paths: a unit-capacity max-flow from the anchors (private) |
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
//! increasing, in [0, 1), and ≤ x. Anchors score 1.
//!
//! **Tiers** (each key's [`Explanation::rule`] names the one that applied): `blocked` (score 0)
//! for the built-in denylist (keys with public private keys), the operator denylist, and (if
//! `anchor_negative_blocks`) a distrust label or report by an anchor — a blocked key's
//! out-edges are dropped; `trusted` for anchors, and for a key whose score reaches
//! `thresholds.trusted` (0.5) **and** that is *corroborated* (below); `known` for a score
//! ≥ `thresholds.known` (0.1), including a score ≥ 0.5 without corroboration; else `unknown`.
//!
//! ## Sybil-resistant tier (stated and proved here; tested in `tests/tier_rule.rs`)
//! The score reads aggregate mass, and mass is what a sybil region multiplies: a region that
//! one fooled key follows can keep the (1−α)/α-fold of what enters it and funnel it onto one
//! key (the bound below limits the region's total, not how it is concentrated). So `trusted`
//! also asks for evidence a region cannot make inside itself.
//!
//! The **vouch graph** V has the positive edges of the live (not denylisted) anchors — their
//! follows and endorsements, the operator's own word — and the *endorsement* edges of every
//! other unblocked key. A follow by a non-anchor key is not in V: a follow says "I read this
//! key", is given freely and back to anyone, and is the edge an attacker most easily obtains;
//! an endorsement says "I vouch for this publisher". A key v is **corroborated** if a live
//! anchor endorses it, or V holds m = `thresholds.independent_paths` (default 3) paths from
//! the anchors to v that share no key except their anchor and v ([`Corroboration`]; counted
//! as a unit-capacity max-flow, at most m augmenting searches over v's ancestors in V).
//!
//! > **Theorem.** Let S be a set of keys that holds no anchor and into which no anchor has an
//! > edge. Let k_e be the number of distinct keys outside S that endorse a key of S. Then
//! > every key of S has at most k_e independent vouch paths, and if k_e < m no key of S is
//! > `trusted` and no key of S is anchor-endorsed — whatever the size of S, whatever edges S
//! > has inside itself or back out, however many keys outside S *follow* keys of S, and
//! > whatever the scores of S.
//!
//! *Proof.* A vouch path from an anchor a ∉ S to v ∈ S has a first edge (x, y) with x ∉ S,
//! y ∈ S. It is in V; it is not an anchor's edge (none enters S), so it is an endorsement
//! by x, a non-anchor key, one of the k_e endorsers; x ≠ a and x ≠ v, so x is an inner key
//! of the path. Independent paths have distinct inner keys, hence distinct such x: at most
//! k_e paths. Anchor-endorsed needs an anchor's edge into S. `trusted` needs one of the two. ∎
//!
//! What k attack edges from non-anchor keys buy, then: **follows, any number of them,
//! nothing** toward `trusted` (they still carry mass, so the region's *total* score stays
//! under the sybil bound below, and a key of it may be `known`); **endorsements from fewer
//! than m distinct keys, nothing**; endorsements from m distinct keys the anchors reach
//! independently make the attacker's key look exactly like an honest publisher that m
//! independent keys vouch for. No rule that reads only the graph can tell those two apart
//! (the graphs are the same), which is why m is the operator's knob: with m = k + 1, k
//! fooled endorsers buy nothing. The theorem needs no assumption on the honest region's
//! shape; it assumes that anchors are not fooled (an anchor's edge is the operator's own
//! word) and that signatures hold (nobody writes another key's edges).
//!
//! An honest publisher keeps `trusted` when an anchor endorses it, or when m keys that the
//! anchors reach through vouch paths of their own endorse it, and its score reaches
//! `thresholds.trusted` (a penalty or evidence against it still lowers it). Adding an
//! endorsement never shrinks a flow, and never lowers its target's score (Monotonicity,
//! below), so it never lowers its target's tier.
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
//! **total score of S is at most that bound / R**, and no key of S reaches the `trusted`
//! score while bound/R < −ln(1 − thresholds.trusted) (≈ 0.69 at the default 0.5). Honest keys
//! that point into S spend their own trust: the attack is bounded by the standing of the keys
//! it fools, not by its size. This bounds the region's total; the tier rule above is what
//! keeps one of its keys from `trusted` when the total is large enough to lift one.
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
//! |r_x| ≤ τ (`incremental_epsilon`, 1e-9; divided by n/100,000 above 100,000 keys). Work is
//! proportional to how far the change spreads, and unpushed residual stays on the books, so
//! errors do not accumulate over many updates: |r_x| ≤ τ holds for every key after every
//! update. When a change at a heavy key (an anchor, a popular key) would need more than ~2
//! sweeps' worth of pushes, the rest is finished by power iteration warm-started from the
//! current estimate (rescaled to mass 1). Changes of anchors, denylist or config recompute
//! from scratch.
//!
//! **Touching only what changed.** After the pushes, only these keys get their score, tier
//! and rule re-derived (one function, `compute::output`, serves both paths): keys whose mass
//! was pushed, keys whose row or signals changed, the targets of reporters whose mass moved,
//! keys with history (its discount depends on the date), and candidates whose corroboration
//! may have changed — uncorroborated ones when a vouch edge appeared, and those whose stored
//! paths run through a key whose vouch edges changed. The state lives in persistent
//! collections (`imbl`) that a [`Scores`] shares: handing out the new `Scores` copies only the
//! chunks that changed, so an update that changes nothing costs microseconds at any size.
//!
//! **Accuracy.** Proved: ‖p − p_exact‖₁ ≤ Σ|r|/α, reported per result as
//! [`ComputeStats::mass_error_bound`]. Stated and measured: every score within
//! [`INCREMENTAL_SCORE_EPSILON`] (1e-4) of a full recompute, tiers equal except within 2ε of
//! a threshold (`tests/properties.rs` on small graphs after every single update; `examples/scale.rs`
//! after hundreds of random edits at 100k and 1M keys).
//!
//! Measured (`target/release/examples/scale 100000 10 500`: an archy-sim world of 100k keys
//! with heavy-tailed degrees, 1.02M edges; 2 shared cores): full computation 1.0–1.1 s (29
//! iterations); with nothing changed 5–90 µs; one new endorsement by a typical key 0.55–0.68 ms
//! median (48 pushes); 500 random edits 0.53 ms median, 4 ms p90, max |score difference| to a
//! full recompute 6e-6, no tier difference. At 1M keys / 10.5M edges (`scale 1000000 10
//! 200`): full computation 11 s, peak RSS 1.5 GiB after it and 2.0 GiB over the whole run
//! (about 200 bytes per edge with the signal store); one typical endorsement 0.55 ms median,
//! random edits 0.74 ms median; an anchor's new endorsement 2.5 s (it moves every key).
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

mod compute;
pub mod config;
mod corroborate;
mod engine;
pub mod graph;
pub mod key;
pub mod policy;
pub mod score;
pub mod signal;

pub use config::{
    ConfigError, EvidenceWeights, HistoryWeights, Penalties, Thresholds, TrustConfig,
    INCREMENTAL_SCORE_EPSILON,
};
pub use engine::EdgeKinds;
pub use graph::{TrustError, TrustGraph};
pub use key::{builtin_denylist, Key, KeyError, BUILTIN_DENYLIST};
pub use policy::{decide, Decision};
pub use score::{
    BlockReason, ComputeStats, Contribution, Corroboration, Explanation, Hop, NegativeSignal,
    PenaltyItem, Report, Scores, Tier, TierError, TierRule, TrustPath,
};
pub use signal::{
    signals_from_event, Evidence, EvidenceCounts, History, Label, RawEvent, ReportReason, Signal,
    KIND_CONTACTS, KIND_LABEL, KIND_REPORT, LABEL_NAMESPACE,
};
