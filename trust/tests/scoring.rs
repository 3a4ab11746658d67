//! Behaviour of the scoring engine through its public API: replacement rules, evidence,
//! denylist, blocking, reporter weighting, explanations, history, incremental updates.

mod common;

use archy_trust::{
    builtin_denylist, BlockReason, Decision, Evidence, EvidenceCounts, History, Key,
    NegativeSignal, ReportReason, Tier, TierRule, TrustConfig, TrustError, TrustGraph,
};
use common::*;

const NOW: u64 = 1_800_000_000;

fn graph_with_anchor(anchor: Key) -> TrustGraph {
    TrustGraph::new(TrustConfig {
        anchors: vec![anchor],
        ..Default::default()
    })
    .unwrap()
}

/// anchor -> a, b, c (follows); a -> p; b -> p; c -> q. p and q are publishers.
fn small_world() -> (TrustGraph, [Key; 6]) {
    let [anchor, a, b, c, p, q] = [key(0), key(1), key(2), key(3), key(4), key(5)];
    let mut g = graph_with_anchor(anchor);
    g.apply_event(&follows(anchor, &[a, b, c], 10));
    g.apply_event(&follows(a, &[p, b], 10));
    g.apply_event(&follows(b, &[p], 10));
    g.apply_event(&follows(c, &[q, a, b, key(6), key(7)], 10));
    (g, [anchor, a, b, c, p, q])
}

#[test]
fn newer_contact_list_replaces_older_and_older_is_ignored() {
    let (mut g, [_, a, _, _, p, _]) = small_world();
    let before = g.compute_at(NOW).score(&p);
    // An older list without p changes nothing.
    assert_eq!(g.apply_event(&follows(a, &[], 5)), 0);
    assert_eq!(g.compute_at(NOW).score(&p), before);
    // A newer list without p removes the edge and lowers p.
    assert_eq!(g.apply_event(&follows(a, &[], 20)), 1);
    let after = g.compute_at(NOW).score(&p);
    assert!(after < before, "{after} < {before}");
}

#[test]
fn newest_label_wins_and_ties_go_to_distrust() {
    let [anchor, x, t] = [key(0), key(1), key(2)];
    let mut g = graph_with_anchor(anchor);
    g.apply_event(&follows(anchor, &[x], 1));
    g.apply_event(&endorse(x, &[t], 10));
    let endorsed = g.compute_at(NOW).score(&t);
    assert!(endorsed > 0.0);
    g.apply_event(&distrust(x, &[t], 9)); // older: ignored
    assert_eq!(g.compute_at(NOW).score(&t), endorsed);
    g.apply_event(&distrust(x, &[t], 10)); // same time: distrust wins
    let distrusted = g.compute_at(NOW).get(&t);
    assert_eq!(distrusted.score, 0.0, "no edge left, only a penalty");
    assert_eq!(distrusted.explanation.penalties.len(), 1);
    g.apply_event(&endorse(x, &[t], 11)); // newer: endorse again
    assert!((g.compute_at(NOW).score(&t) - endorsed).abs() < 1e-12);
}

#[test]
fn equivocation_evidence_lowers_the_score() {
    let (mut g, [_, _, _, _, p, _]) = small_world();
    let clean = g.compute_at(NOW).get(&p);
    assert!(clean.score > 0.0 && clean.score < 1.0, "{}", clean.score);
    g.add_evidence(p, Evidence::Equivocation);
    let once = g.compute_at(NOW).get(&p);
    assert!(once.score < clean.score, "{} < {}", once.score, clean.score);
    assert_eq!(
        once.explanation.evidence,
        EvidenceCounts {
            equivocations: 1,
            bad_bytes: 0
        }
    );
    assert!(once.explanation.evidence_factor < 1.0);
    g.add_evidence(p, Evidence::Equivocation);
    let twice = g.compute_at(NOW).score(&p);
    assert!(twice < once.score);
    g.set_evidence(
        p,
        EvidenceCounts {
            equivocations: 0,
            bad_bytes: 1,
        },
    );
    let bad_bytes = g.compute_at(NOW).score(&p);
    assert!(bad_bytes < clean.score && bad_bytes > twice);
}

#[test]
fn builtin_denylisted_keys_are_blocked_and_pass_nothing_on() {
    let leaked = builtin_denylist()[0]; // private key 1
    let [anchor, friend, target] = [key(0), key(1), key(2)];
    let mut g = graph_with_anchor(anchor);
    g.apply_event(&follows(anchor, &[leaked, friend], 1));
    g.apply_event(&endorse(leaked, &[target], 1));
    let s = g.compute_at(NOW);
    let r = s.get(&leaked);
    assert_eq!((r.score, r.tier), (0.0, Tier::Blocked));
    assert_eq!(r.explanation.blocked, Some(BlockReason::BuiltinDenylist));
    assert_eq!(s.score(&target), 0.0, "anyone can sign as private key 1");
    assert_eq!(s.decide(&leaked), Decision::Deny);
    // A denylisted key the graph never saw is still blocked.
    assert_eq!(s.tier(&builtin_denylist()[2]), Tier::Blocked);
    assert_eq!(
        g.unblock(&leaked),
        Err(TrustError::BuiltinDenylisted(leaked))
    );
}

#[test]
fn operator_block_and_unblock() {
    let (mut g, [_, a, _, _, p, _]) = small_world();
    let before = g.compute_at(NOW);
    assert!(g.block(a));
    let blocked = g.compute_at(NOW);
    assert_eq!(blocked.tier(&a), Tier::Blocked);
    assert_eq!(
        blocked.get(&a).explanation.blocked,
        Some(BlockReason::OperatorDenylist)
    );
    assert!(
        blocked.score(&p) < before.score(&p),
        "a's follow of p no longer counts"
    );
    assert_eq!(g.unblock(&a), Ok(true));
    assert_eq!(g.compute_at(NOW).score(&p), before.score(&p));
}

#[test]
fn anchor_distrust_or_report_blocks() {
    let (mut g, [anchor, _, _, _, p, q]) = small_world();
    g.apply_event(&distrust(anchor, &[p], 20));
    g.apply_event(&report(anchor, q, "spam", 20));
    let s = g.compute_at(NOW);
    assert_eq!(
        s.get(&p).explanation.blocked,
        Some(BlockReason::AnchorNegative { anchor })
    );
    assert_eq!(s.tier(&q), Tier::Blocked);
    assert_eq!(s.score(&q), 0.0);
}

#[test]
fn untrusted_reporters_cannot_sink_an_honest_key_but_a_trusted_one_can() {
    let (mut g, [_, a, b, _, p, _]) = small_world();
    g.apply_event(&endorse(key(0), &[p], 10)); // the anchor vouches for p
    let before = g.compute_at(NOW).get(&p);
    assert_eq!(before.tier, Tier::Trusted);
    assert_eq!(before.explanation.rule, TierRule::Corroborated);
    // 1,000 fresh keys (no one trusts them) report p for malware and follow each other.
    for i in 0..1000u64 {
        let s = key(10_000 + i);
        g.apply_event(&report(s, p, "malware", 30));
        g.apply_event(&follows(s, &[key(10_000 + (i + 1) % 1000)], 30));
    }
    let after = g.compute_at(NOW).get(&p);
    assert!(
        (after.score - before.score).abs() < 1e-12,
        "sybil reporters have zero mass"
    );
    assert_eq!(after.tier, Tier::Trusted);
    // b is trusted by the anchor: its report counts.
    g.apply_event(&report(b, p, "malware", 30));
    let reported = g.compute_at(NOW).get(&p);
    assert!(reported.score < before.score);
    let item = reported
        .explanation
        .penalties
        .iter()
        .find(|i| i.from == b)
        .expect("b's report is listed");
    assert_eq!(
        item.signal,
        NegativeSignal::Report {
            reason: ReportReason::Malware
        }
    );
    assert!(item.penalty_mass > 0.0);
    // The explanation shows the strongest paths, anchor first, with edge kinds.
    let path = &reported.explanation.paths[0];
    assert_eq!(path.hops[0].from, key(0));
    assert_eq!(path.hops.last().unwrap().to, p);
    assert!(path.hops[0].kinds.endorse, "{path:?}");
    assert!(reported.explanation.endorsers.iter().any(|c| c.from == a));
    let text = reported.to_string();
    assert!(text.contains("report malware"), "{text}");
}

#[test]
fn endorsement_paths_carry_the_edge_kind() {
    let [anchor, mid, publ] = [key(0), key(1), key(2)];
    let mut g = graph_with_anchor(anchor);
    g.apply_event(&follows(anchor, &[mid], 1));
    g.apply_event(&endorse(mid, &[publ], 1));
    g.apply_event(&follows(mid, &[publ], 1));
    let r = g.compute_at(NOW).get(&publ);
    let hops = &r.explanation.paths[0].hops;
    assert_eq!(hops.len(), 2);
    assert!(hops[0].kinds.follow && !hops[0].kinds.endorse);
    assert!(hops[1].kinds.follow && hops[1].kinds.endorse);
    let json = serde_json::to_value(&r).unwrap();
    assert!(r.score >= 0.5, "{r}");
    // One vouch path is not enough for `trusted`, whatever the score says.
    assert_eq!(json["tier"], "known");
    assert_eq!(json["explanation"]["rule"], "uncorroborated");
    assert_eq!(json["explanation"]["corroboration"]["independent_paths"], 1);
    assert_eq!(json["explanation"]["corroboration"]["needed"], 3);
    assert_eq!(
        json["explanation"]["paths"][0]["hops"][1]["kinds"]["endorse"],
        true
    );
    // Two more endorsers the anchor follows make three independent paths.
    let (mid2, mid3) = (key(3), key(4));
    g.apply_event(&follows(anchor, &[mid, mid2, mid3], 2));
    g.apply_event(&endorse(mid2, &[publ], 1));
    g.apply_event(&endorse(mid3, &[publ], 1));
    let r = g.compute_at(NOW).get(&publ);
    assert_eq!(r.tier, Tier::Trusted, "{r}");
    assert_eq!(r.explanation.rule, TierRule::Corroborated);
    let c = r.explanation.corroboration.unwrap();
    assert_eq!((c.anchor_endorsed, c.independent_paths), (false, 3));
    for path in &c.paths {
        assert_eq!((path[0], path.len()), (anchor, 3), "{path:?}");
    }
}

#[test]
fn new_publishers_are_discounted_until_mature() {
    let (mut g, [_, _, _, _, p, _]) = small_world();
    let unknown_history = g.compute_at(NOW).score(&p);
    g.set_history(
        p,
        History {
            first_seen: NOW - 3600,
            accepted_releases: 1,
        },
    );
    let fresh = g.compute_at(NOW).get(&p);
    assert!(fresh.score < unknown_history);
    assert!(fresh.explanation.history_factor < 0.7);
    g.set_history(
        p,
        History {
            first_seen: NOW - 40 * 86_400,
            accepted_releases: 1,
        },
    );
    assert_eq!(g.compute_at(NOW).score(&p), unknown_history);
    g.set_history(
        p,
        History {
            first_seen: NOW,
            accepted_releases: 5,
        },
    );
    assert_eq!(g.compute_at(NOW).score(&p), unknown_history);
}

#[test]
fn anchors_unknown_keys_and_policy() {
    let (mut g, [anchor, _, _, c, p, q]) = small_world();
    let follows_only = g.compute_at(NOW);
    assert_eq!(
        follows_only.tier(&p),
        Tier::Known,
        "follows alone never vouch"
    );
    assert_eq!(follows_only.decide(&p), Decision::NeedsConfirmation);
    g.apply_event(&endorse(anchor, &[p], 11));
    let s = g.compute_at(NOW);
    assert_eq!((s.score(&anchor), s.tier(&anchor)), (1.0, Tier::Trusted));
    assert!(s.get(&anchor).explanation.anchor);
    let stranger = key(999);
    assert_eq!(
        (s.score(&stranger), s.tier(&stranger)),
        (0.0, Tier::Unknown)
    );
    assert_eq!(s.decide(&stranger), Decision::NeedsConfirmation);
    assert_eq!(s.decide(&p), Decision::Allow);
    // q hangs off c, who follows five keys: lower than p.
    assert!(s.score(&q) < s.score(&p));
    assert!(s.score(&c) > s.score(&q));
    let total: f64 = s.all().iter().map(|(k, _, _)| s.mass(k)).sum();
    assert!((total - 1.0).abs() < 1e-9, "mass is conserved: {total}");
    // No anchors: nobody is trusted.
    assert!(g.remove_anchor(&anchor));
    let none = g.compute_at(NOW);
    assert_eq!(none.tier(&p), Tier::Unknown);
    assert_eq!(none.score(&p), 0.0);
}

#[test]
fn incremental_update_matches_full_recompute() {
    let mut rng = Rng(7);
    let n = 400u64;
    let mut g = graph_with_anchor(key(0));
    for u in 0..n {
        let targets: Vec<Key> = (0..5).map(|_| key(rng.below(n as usize) as u64)).collect();
        g.apply_event(&follows(key(u), &targets, 1));
    }
    g.compute_at(NOW);
    let mut last = None;
    for step in 0..20u64 {
        let (u, v) = (
            key(rng.below(n as usize) as u64),
            key(rng.below(n as usize + 50) as u64),
        );
        match step % 4 {
            0 => g.apply_event(&endorse(u, &[v], 2 + step)),
            1 => g.apply_event(&follows(u, &[v, key(1)], 2 + step)),
            2 => g.apply_event(&report(u, v, "spam", 2 + step)),
            _ => g.apply_event(&distrust(u, &[v], 2 + step)),
        };
        let inc = g.compute_incremental_at(NOW);
        assert!(inc.stats().incremental);
        last = Some(inc);
    }
    let inc = last.unwrap();
    let full = g.compute_at(NOW);
    assert!(!full.stats().incremental);
    assert_eq!(full.all().len(), inc.all().len());
    for (k, score, _) in full.all() {
        assert!(
            (inc.score(&k) - score).abs() < 1e-6,
            "{k}: {} vs {score}",
            inc.score(&k)
        );
        assert!((inc.mass(&k) - full.mass(&k)).abs() < 1e-9);
    }
}

#[test]
fn collection_targets_walk_out_from_the_anchors() {
    let (g, [anchor, a, b, c, p, q]) = small_world();
    assert_eq!(g.collection_targets(0, 100), vec![anchor]);
    let one = g.collection_targets(1, 100);
    assert_eq!(one[0], anchor);
    let mut rest = one[1..].to_vec();
    rest.sort();
    let mut expected = vec![a, b, c];
    expected.sort();
    assert_eq!(rest, expected);
    let two = g.collection_targets(2, 100);
    assert!(two.contains(&p) && two.contains(&q));
    assert_eq!(g.collection_targets(5, 3).len(), 3);
}

#[test]
fn exported_signals_rebuild_an_identical_graph() {
    let (mut g, [anchor, a, _, _, p, _]) = small_world();
    g.apply_event(&endorse(a, &[p], 11));
    g.apply_event(&report(anchor, key(7), "impersonation", 12));
    let exported = g.export_signals();
    let json = serde_json::to_string(&exported).unwrap();
    let mut rebuilt = TrustGraph::new(g.config().clone()).unwrap();
    for s in serde_json::from_str::<Vec<archy_trust::Signal>>(&json).unwrap() {
        assert!(rebuilt.apply_signal(s));
    }
    let (x, y) = (g.compute_at(NOW), rebuilt.compute_at(NOW));
    assert_eq!(x.all(), y.all());
    assert_eq!(rebuilt.export_signals(), exported);
}

#[test]
fn graph_and_scores_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TrustGraph>();
    assert_send_sync::<archy_trust::Scores>();
}

#[test]
fn incremental_update_keeps_edge_kinds_current() {
    let [anchor, v] = [key(0), key(1)];
    let mut g = graph_with_anchor(anchor);
    g.apply_event(&follows(anchor, &[v], 1));
    g.compute_at(NOW);
    // Same single target, same normalised weight, but now an endorsement only.
    g.apply_event(&follows(anchor, &[], 2));
    g.apply_event(&endorse(anchor, &[v], 2));
    let r = g.compute_incremental_at(NOW).get(&v);
    let kinds = r.explanation.endorsers[0].kinds;
    assert!(kinds.endorse && !kinds.follow, "{kinds:?}");
}
