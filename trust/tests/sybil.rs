//! The sybil test of issue 4: 2,000 honest keys, 10,000 attacker keys that endorse each other
//! (and concentrate on one "boss" key, and follow honest keys to look legitimate), joined by k
//! attack edges from randomly chosen honest keys that the attacker fooled.
//!
//! Checks, for k = 0, 1, 10, 100, the bound stated in the crate doc:
//!   p(S) ≤ (1−α)/α · Σ_{(u,v)∈A} p(u)·W(u→v)      (mass of the attacker region)
//!   Σ_{v∈S} score(v) ≤ that bound / R               (total attacker score)
//! that k = 0 gives the attacker exactly nothing, that no attacker key is `trusted`, and that
//! attacker reports lower no honest key's mass by more than λ_max·p(S).

mod common;

use archy_trust::{Key, Scores, Tier, TrustConfig, TrustGraph};
use common::*;

const HONEST: u64 = 2_000;
const SYBILS: u64 = 10_000;
const SYBIL_BASE: u64 = 1_000_000;

fn honest(i: u64) -> Key {
    key(i)
}
fn sybil(i: u64) -> Key {
    key(SYBIL_BASE + i)
}

fn build() -> TrustGraph {
    let mut rng = Rng(2026);
    let anchor = honest(0);
    let mut g = TrustGraph::new(TrustConfig {
        anchors: vec![anchor],
        ..Default::default()
    })
    .unwrap();
    // Honest region: every key follows 10 random honest keys; 1 in 10 also endorses 2.
    for u in 0..HONEST {
        let n = if u == 0 { 20 } else { 10 };
        let targets: Vec<Key> = (0..n)
            .map(|_| honest(rng.below(HONEST as usize) as u64))
            .collect();
        g.apply_event(&follows(honest(u), &targets, 1));
        if u % 10 == 0 {
            let picks: Vec<Key> = (0..2)
                .map(|_| honest(rng.below(HONEST as usize) as u64))
                .collect();
            g.apply_event(&endorse(honest(u), &picks, 1));
        }
    }
    // Attacker region: everyone endorses the boss and 9 random sybils, and follows 2 honest keys.
    for s in 0..SYBILS {
        let mut targets: Vec<Key> = vec![sybil(0)];
        targets.extend((0..9).map(|_| sybil(rng.below(SYBILS as usize) as u64)));
        g.apply_event(&endorse(sybil(s), &targets, 1));
        let decoys: Vec<Key> = (0..2)
            .map(|_| honest(rng.below(HONEST as usize) as u64))
            .collect();
        g.apply_event(&follows(sybil(s), &decoys, 1));
    }
    g
}

fn sybil_totals(scores: &Scores) -> (f64, f64, f64) {
    let mut mass = 0.0;
    let mut score = 0.0;
    let mut max = 0.0f64;
    for s in 0..SYBILS {
        let k = sybil(s);
        mass += scores.mass(&k);
        score += scores.score(&k);
        max = max.max(scores.score(&k));
        assert_ne!(scores.tier(&k), Tier::Trusted, "sybil {s} reached trusted");
    }
    (mass, score, max)
}

#[test]
fn attacker_region_is_bounded_by_its_attack_edges() {
    let mut g = build();
    let mut rng = Rng(99);
    let mut attack: Vec<(Key, Key)> = Vec::new();
    let mut last = None;
    for k in [0usize, 1, 10, 100] {
        while attack.len() < k {
            let u = honest(1 + rng.below(HONEST as usize - 1) as u64);
            if attack.iter().any(|(a, _)| *a == u) {
                continue;
            }
            let v = sybil(rng.below(SYBILS as usize) as u64);
            g.apply_event(&endorse(u, &[v], 2));
            attack.push((u, v));
        }
        let scores = g.compute_at(1_800_000_000);
        let (mass, total_score, max_score) = sybil_totals(&scores);
        let bound = scores.escape_bound(&attack);
        let r = scores.reference_mass();
        let alpha = scores.restart_probability();
        // The function of k alone: k · (1−α)/α · max p(u)·W(u→v).
        let worst_edge = attack
            .iter()
            .map(|(u, v)| scores.mass(u) * scores.transition(u, v))
            .fold(0.0, f64::max);
        let bound_k = k as f64 * (1.0 - alpha) / alpha * worst_edge;
        eprintln!(
            "k={k:3}: attacker mass {mass:.3e} <= bound {bound:.3e} <= k-bound {bound_k:.3e}; \
             total score {total_score:.4} <= {:.4}; max sybil score {max_score:.4}",
            bound / r
        );
        if k == 0 {
            assert_eq!(mass, 0.0, "no attack edge, no trust");
            assert_eq!(total_score, 0.0);
        }
        // Slack: the power iteration's own error, ‖r‖₁/α with ‖r‖₁ < tolerance.
        let slack = 1e-9;
        assert!(mass <= bound + slack, "k={k}: mass {mass} > bound {bound}");
        assert!(bound <= bound_k + slack);
        assert!(
            total_score <= bound / r + 1e-6,
            "k={k}: total score {total_score} > {}",
            bound / r
        );
        last = Some(scores);
    }

    // The attacker now reports every honest key for malware. Each honest key loses at most
    // λ_max·p(S) of mass, whatever the number of reporters.
    let before = last.unwrap();
    let (attacker_mass, _, _) = sybil_totals(&before);
    for s in 0..SYBILS {
        g.apply_event(&report(sybil(s), honest(s % HONEST), "malware", 3));
    }
    let after = g.compute_at(1_800_000_000);
    let lambda_max = g.config().penalties.malware;
    let r = after.reference_mass();
    let mut worst = 0.0f64;
    for u in 0..HONEST {
        let h = honest(u);
        assert_eq!(before.mass(&h), after.mass(&h), "reports do not move mass");
        let drop = before.score(&h) - after.score(&h);
        worst = worst.max(drop);
        // score = 1 − e^(−x) has slope ≤ 1, so a score drop ≤ the x drop = penalty / R.
        assert!(
            drop <= lambda_max * attacker_mass / r + 1e-9,
            "honest {u} dropped {drop}"
        );
    }
    eprintln!("largest honest score drop from 10,000 attacker reports: {worst:.2e}");
}

/// Worst case for the defender: the attacker fools the k honest keys with the *most* trust
/// (excluding the anchor). The bound still holds; attacker keys can then rise, as they
/// should, since the best-trusted keys vouched for them, but only in proportion to that trust.
#[test]
fn bound_holds_when_the_best_trusted_keys_are_fooled() {
    let mut g = build();
    let base = g.compute_at(1_800_000_000);
    let mut ranked: Vec<(f64, u64)> = (1..HONEST).map(|u| (base.mass(&honest(u)), u)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut rng = Rng(5);
    let attack: Vec<(Key, Key)> = ranked
        .iter()
        .take(10)
        .map(|(_, u)| (honest(*u), sybil(rng.below(SYBILS as usize) as u64)))
        .collect();
    for (u, v) in &attack {
        g.apply_event(&endorse(*u, &[*v], 2));
    }
    let scores = g.compute_at(1_800_000_000);
    let mass: f64 = (0..SYBILS).map(|s| scores.mass(&sybil(s))).sum();
    let total: f64 = (0..SYBILS).map(|s| scores.score(&sybil(s))).sum();
    let bound = scores.escape_bound(&attack);
    eprintln!(
        "top-10 sources: attacker mass {mass:.3e} <= bound {bound:.3e}; total score {total:.3} <= {:.3}",
        bound / scores.reference_mass()
    );
    assert!(mass > 0.0);
    assert!(mass <= bound + 1e-9);
    assert!(total <= bound / scores.reference_mass() + 1e-6);
}
