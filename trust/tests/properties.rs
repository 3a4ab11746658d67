//! Property tests over random small signal graphs (follows, endorse/distrust labels, reports
//! with every reason, operator blocks, one or two anchors, replacement ties):
//! - an endorsement from a trusted key never lowers its target's score;
//! - a distrust label or report from a trusted key never raises it;
//! - blocked keys score 0;
//! - results are deterministic: bit-identical for any order of the same events;
//! - an incremental update agrees with a full computation.

mod common;

use archy_trust::{
    Key, RawEvent, Scores, Tier, TrustConfig, TrustGraph, INCREMENTAL_SCORE_EPSILON,
};
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;

const NOW: u64 = 1_800_000_000;
/// Numerical slack: the engine solves to 1e-14 here; the properties are exact in real numbers.
const SLACK: f64 = 1e-9;

#[derive(Debug, Clone)]
enum Ev {
    Follows(u8, Vec<u8>, u64),
    Label(u8, u8, bool, u64),
    Report(u8, u8, u8, u64),
}

const REASONS: [&str; 5] = ["malware", "spam", "impersonation", "other", "nudity"];

fn raw(ev: &Ev) -> RawEvent {
    let k = |i: u8| key(i as u64);
    match ev {
        Ev::Follows(a, ts, t) => follows(k(*a), &ts.iter().map(|i| k(*i)).collect::<Vec<_>>(), *t),
        Ev::Label(a, b, true, t) => endorse(k(*a), &[k(*b)], *t),
        Ev::Label(a, b, false, t) => distrust(k(*a), &[k(*b)], *t),
        Ev::Report(a, b, r, t) => report(k(*a), k(*b), REASONS[*r as usize % REASONS.len()], *t),
    }
}

fn ev(n: u8) -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..n, prop::collection::vec(0..n, 0..5), 1..4u64).prop_map(|(a, ts, t)| Ev::Follows(a, ts, t)),
        3 => (0..n, 0..n, any::<bool>(), 1..4u64).prop_map(|(a, b, e, t)| Ev::Label(a, b, e, t)),
        1 => (0..n, 0..n, any::<u8>(), 1..4u64).prop_map(|(a, b, r, t)| Ev::Report(a, b, r, t)),
    ]
}

#[derive(Debug, Clone)]
struct World {
    n: u8,
    events: Vec<Ev>,
    blocked: Vec<u8>,
    two_anchors: bool,
}

fn world() -> impl Strategy<Value = World> {
    (3u8..14).prop_flat_map(|n| {
        (
            prop::collection::vec(ev(n), 0..40),
            prop::collection::vec(0..n, 0..2),
            any::<bool>(),
        )
            .prop_map(move |(events, blocked, two_anchors)| World {
                n,
                events,
                blocked,
                two_anchors,
            })
    })
}

fn config(w: &World) -> TrustConfig {
    let mut anchors = vec![key(0)];
    if w.two_anchors {
        anchors.push(key(1));
    }
    TrustConfig {
        anchors,
        tolerance: 1e-14,
        max_iterations: 10_000,
        incremental_epsilon: 1e-16,
        ..Default::default()
    }
}

fn build(w: &World, events: &[Ev]) -> TrustGraph {
    let mut g = TrustGraph::new(config(w)).unwrap();
    for b in &w.blocked {
        g.block(key(*b as u64));
    }
    for e in events {
        g.apply_event(&raw(e));
    }
    g
}

fn trusted(scores: &Scores, n: u8) -> Vec<u8> {
    (0..n)
        .filter(|i| scores.tier(&key(*i as u64)) == Tier::Trusted)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn endorsement_from_a_trusted_key_never_lowers_the_target(w in world(), pick in any::<Index>(), target in any::<Index>()) {
        let mut g = build(&w, &w.events);
        let before = g.compute_at(NOW);
        let candidates = trusted(&before, w.n);
        prop_assume!(!candidates.is_empty());
        let u = key(*pick.get(&candidates) as u64);
        let v = key(target.index(w.n as usize) as u64);
        g.apply_event(&endorse(u, &[v], 10));
        let after = g.compute_at(NOW);
        prop_assert!(after.score(&v) >= before.score(&v) - SLACK,
            "endorsement lowered {:?}: {} -> {}", v, before.score(&v), after.score(&v));
        prop_assert!(after.tier(&v) >= before.tier(&v) || before.score(&v) - after.score(&v) <= SLACK);
    }

    #[test]
    fn distrust_or_report_from_a_trusted_key_never_raises_the_target(
        w in world(), pick in any::<Index>(), target in any::<Index>(), kind in 0u8..6,
    ) {
        let mut g = build(&w, &w.events);
        let before = g.compute_at(NOW);
        let candidates = trusted(&before, w.n);
        prop_assume!(!candidates.is_empty());
        let u = key(*pick.get(&candidates) as u64);
        let v = key(target.index(w.n as usize) as u64);
        let event = if kind == 5 { distrust(u, &[v], 10) } else { report(u, v, REASONS[kind as usize], 10) };
        g.apply_event(&event);
        let after = g.compute_at(NOW);
        prop_assert!(after.score(&v) <= before.score(&v) + SLACK,
            "negative signal raised {:?}: {} -> {}", v, before.score(&v), after.score(&v));
    }

    #[test]
    fn blocked_keys_score_zero(w in world()) {
        let mut g = build(&w, &w.events);
        let scores = g.compute_at(NOW);
        for b in &w.blocked {
            prop_assert_eq!(scores.tier(&key(*b as u64)), Tier::Blocked);
        }
        for (k, score, tier) in scores.all() {
            prop_assert!((0.0..=1.0).contains(&score));
            if tier == Tier::Blocked {
                prop_assert_eq!(score, 0.0, "{:?}", k);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_event_order(
        (w, shuffled) in world().prop_flat_map(|w| { let e = w.events.clone(); (Just(w), Just(e).prop_shuffle()) }),
    ) {
        let a = build(&w, &w.events).compute_at(NOW);
        let b = build(&w, &shuffled).compute_at(NOW);
        let again = build(&w, &w.events).compute_at(NOW);
        let bits = |s: &Scores| -> Vec<(Key, u64, u64, Tier)> {
            s.all().into_iter().map(|(k, sc, t)| (k, sc.to_bits(), s.mass(&k).to_bits(), t)).collect()
        };
        prop_assert_eq!(bits(&a), bits(&b));
        prop_assert_eq!(bits(&a), bits(&again));
    }

    #[test]
    fn incremental_update_agrees_with_full(w in world(), split in any::<Index>(), block in any::<Index>()) {
        let at = split.index(w.events.len() + 1);
        let mut g = build(&w, &w.events[..at]);
        g.compute_at(NOW);
        // One event at a time, an incremental update after each (and a block and an unblock on
        // the way), so every cache the update keeps is exercised.
        let b = key(block.index(w.n as usize) as u64);
        for (i, e) in w.events[at..].iter().enumerate() {
            g.apply_event(&raw(e));
            match i {
                2 => { g.block(b); }
                5 => { let _ = g.unblock(&b); }
                _ => {}
            }
            let inc = g.compute_incremental_at(NOW);
            consistent(&inc)?;
            let full = rebuilt(&g).compute_at(NOW);
            agree(&inc, &full, 1e-7)?;
        }
        let inc = g.compute_incremental_at(NOW);
        let full = g.compute_at(NOW);
        agree(&inc, &full, 1e-7)?;
    }

    /// With the default accuracy, incremental updates stay within the stated ε.
    #[test]
    fn incremental_updates_stay_within_the_stated_epsilon(w in world(), split in any::<Index>()) {
        let config = TrustConfig { incremental_epsilon: TrustConfig::default().incremental_epsilon, ..config(&w) };
        let at = split.index(w.events.len() + 1);
        let mut g = TrustGraph::new(config).unwrap();
        for e in &w.events[..at] {
            g.apply_event(&raw(e));
        }
        g.compute_at(NOW);
        for e in &w.events[at..] {
            g.apply_event(&raw(e));
            g.compute_incremental_at(NOW);
        }
        let inc = g.compute_incremental_at(NOW);
        let full = g.compute_at(NOW);
        agree(&inc, &full, INCREMENTAL_SCORE_EPSILON)?;
    }
}

/// Every score is what its own explanation implies: 1 − e^(−max(0, mass − Σ penalties)·factors/R)
/// from the mass of this very `Scores` (nothing left stale by an incremental update).
fn consistent(s: &Scores) -> Result<(), TestCaseError> {
    for (k, score, _) in s.all() {
        let e = s.get(&k).explanation;
        if e.anchor || e.blocked.is_some() {
            continue;
        }
        let penalty: f64 = e.penalties.iter().map(|p| p.penalty_mass).sum();
        let x =
            (e.mass - penalty).max(0.0) * e.evidence_factor * e.history_factor / s.reference_mass();
        let expected = -(-x).exp_m1();
        prop_assert!(
            (score - expected).abs() <= 1e-12,
            "{:?}: score {} but its explanation says {}",
            k,
            score,
            expected
        );
        prop_assert!(
            (e.penalty_mass - penalty).abs() <= 1e-15,
            "{:?}: penalty {} vs {}",
            k,
            e.penalty_mass,
            penalty
        );
    }
    Ok(())
}

/// A fresh graph with the same configuration, blocks and signals (a full computation on it
/// leaves `g`'s incremental state alone).
fn rebuilt(g: &TrustGraph) -> TrustGraph {
    let mut fresh = TrustGraph::new(g.config().clone()).unwrap();
    for k in g.operator_denylist() {
        fresh.block(k);
    }
    for s in g.export_signals() {
        fresh.apply_signal(s);
    }
    fresh
}

/// Scores within `eps`; tiers equal unless the score is within 2·eps of a threshold.
fn agree(inc: &Scores, full: &Scores, eps: f64) -> Result<(), TestCaseError> {
    let th = TrustConfig::default().thresholds;
    for (k, score, tier) in full.all() {
        prop_assert!(
            (inc.score(&k) - score).abs() <= eps,
            "{:?}: {} vs {}",
            k,
            inc.score(&k),
            score
        );
        let near = [th.trusted, th.known]
            .iter()
            .any(|t| (score - t).abs() <= 2.0 * eps);
        prop_assert!(
            inc.tier(&k) == tier || near,
            "{:?}: tier {} vs {} (score {})",
            k,
            inc.tier(&k),
            tier,
            score
        );
        prop_assert_eq!(
            inc.get(&k).explanation.rule == full.get(&k).explanation.rule || near,
            true
        );
    }
    Ok(())
}
