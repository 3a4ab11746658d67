//! Scale check: 100k keys / ~1M edges in memory, a full computation, then single-signal
//! incremental updates. Prints times and peak RSS (VmHWM).
//!
//! `cargo run --release -p archy-trust --example scale [keys] [follows-per-key] [edits]`
//!
//! After the single-signal updates, `edits` (default 200) random edits (endorsements, new
//! contact lists, reports, distrust labels), each followed by an incremental update, are
//! compared with a full recompute: the largest score difference against the stated ε of the
//! crate doc, and every tier difference with its distance to the nearest threshold.

use std::time::Instant;

use archy_sim::{measure, AttackKind, Rng, SocialGraph, SybilRegion, World};
use archy_trust::{Label, Signal, Tier, TrustConfig};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::{median, vm_hwm};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = *args.first().unwrap_or(&100_000);
    let per_key = *args.get(1).unwrap_or(&10);
    let edits = *args.get(2).unwrap_or(&200);
    // A seeded world with heavy-tailed degrees (archy-sim): mean `per_key` follows, a few hubs
    // followed by many, 10 % of keys endorsing 2 others, 5 % reporting one.
    let t = Instant::now();
    let world = SocialGraph {
        keys: n,
        mean_follows: per_key as f64,
        ..Default::default()
    }
    .generate(42);
    let keys = world.honest.clone();
    let anchors = world.anchors.clone();
    let defaults = TrustConfig::default();
    let incremental_epsilon = std::env::var("TRUST_EPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(defaults.incremental_epsilon);
    let mut graph = world
        .graph_with(TrustConfig {
            incremental_epsilon,
            ..defaults
        })
        .expect("valid config");
    let signals = world.signals.len();
    let mut rng = Rng(7);
    println!(
        "build: {n} keys, {signals} signals ({} positive edges) generated and applied in {:.2?}",
        world.edges,
        t.elapsed()
    );
    drop(world);

    let t = Instant::now();
    let scores = graph.compute_at(1_800_000_000);
    let full_time = t.elapsed();
    let st = scores.stats();
    println!(
        "full compute: {} keys, {} edges, {} iterations, {:.2?}; VmHWM {}",
        st.keys,
        st.edges,
        st.iterations,
        full_time,
        vm_hwm()
    );
    let tiers = scores
        .all()
        .into_iter()
        .fold([0usize; 4], |mut acc, (_, _, tier)| {
            acc[tier as usize] += 1;
            acc
        });
    println!(
        "tiers: blocked {} unknown {} known {} trusted {}",
        tiers[0], tiers[1], tiers[2], tiers[3]
    );

    let t = Instant::now();
    let report = scores.get(&keys[rng.below(n)]);
    println!(
        "explain one key (first call builds the path tree): {:.2?}, {} paths",
        t.elapsed(),
        report.explanation.paths.len()
    );
    let t = Instant::now();
    let _ = scores.get(&keys[rng.below(n)]);
    println!("explain another key: {:.2?}", t.elapsed());

    // The fixed cost of an incremental update (no change: scores, tiers, penalties only).
    drop(scores);
    let t = Instant::now();
    let mut latest = graph.compute_incremental_at(1_800_000_000);
    println!(
        "incremental with nothing changed (fixed cost over {} keys): {:.2?}",
        latest.stats().keys,
        t.elapsed()
    );

    // Incremental: one new endorsement by a random (typical) key, 25 times.
    let mut times = Vec::new();
    let mut pushes = Vec::new();
    for i in 0..25u64 {
        let (author, target) = (keys[3 + rng.below(n - 3)], keys[rng.below(n)]);
        graph.apply_signal(Signal::Label {
            author,
            target,
            created_at: 2 + i,
            label: Label::Endorse,
        });
        let t = Instant::now();
        latest = graph.compute_incremental_at(1_800_000_000);
        times.push(t.elapsed());
        pushes.push(latest.stats().pushes);
    }
    pushes.sort();
    println!(
        "incremental (one endorsement by a typical key): median {:.2?}, max {:.2?}; pushes median {}",
        median(times.clone()),
        times.iter().max().unwrap(),
        pushes[pushes.len() / 2]
    );

    // A replaced contact list of a typical key.
    let author = keys[7];
    let follows = (0..per_key).map(|_| keys[rng.below(n)]).collect();
    graph.apply_signal(Signal::Follows {
        author,
        created_at: 5,
        follows,
    });
    let t = Instant::now();
    latest = graph.compute_incremental_at(1_800_000_000);
    println!(
        "incremental (new contact list): {:.2?}, {} pushes, {} warm iterations",
        t.elapsed(),
        latest.stats().pushes,
        latest.stats().iterations
    );

    // Worst case: an anchor endorses someone new (the anchor holds ~8 % of all mass).
    graph.apply_signal(Signal::Label {
        author: keys[0],
        target: keys[n / 2],
        created_at: 9,
        label: Label::Endorse,
    });
    let t = Instant::now();
    latest = graph.compute_incremental_at(1_800_000_000);
    println!(
        "incremental (an anchor endorses): {:.2?}, {} pushes, {} warm iterations",
        t.elapsed(),
        latest.stats().pushes,
        latest.stats().iterations
    );

    let t = Instant::now();
    let full = graph.compute_at(1_800_000_000);
    println!("full recompute for comparison: {:.2?}", t.elapsed());
    let max_diff = full
        .all()
        .iter()
        .map(|(k, s, _)| (latest.score(k) - s).abs())
        .fold(0.0f64, f64::max);
    let tier_diffs = full
        .all()
        .iter()
        .filter(|(k, _, t)| latest.tier(k) != *t)
        .count();
    println!(
        "incremental vs full: max score difference {max_diff:.2e}, tier differences {tier_diffs}"
    );
    println!("peak RSS (VmHWM): {}", vm_hwm());

    // Random edits, each followed by an incremental update; then one full recompute.
    let mut times = Vec::new();
    let mut changed = Vec::new();
    for i in 0..edits as u64 {
        let author = keys[3 + rng.below(n - 3)];
        let target = keys[rng.below(n)];
        let at = 1_000 + i;
        match rng.below(10) {
            0..=5 => graph.apply_signal(Signal::Label {
                author,
                target,
                created_at: at,
                label: Label::Endorse,
            }),
            6 | 7 => graph.apply_signal(Signal::Follows {
                author,
                created_at: at,
                follows: (0..per_key).map(|_| keys[rng.below(n)]).collect(),
            }),
            8 => graph.apply_signal(Signal::Report {
                author,
                target,
                created_at: at,
                reason: archy_trust::ReportReason::Malware,
            }),
            _ => graph.apply_signal(Signal::Label {
                author,
                target,
                created_at: at,
                label: Label::Distrust,
            }),
        };
        let t = Instant::now();
        latest = graph.compute_incremental_at(1_800_000_000);
        times.push(t.elapsed());
        changed.push(latest.stats().changed);
    }
    changed.sort_unstable();
    let mut sorted = times.clone();
    sorted.sort();
    let full = graph.compute_at(1_800_000_000);
    let eps = archy_trust::INCREMENTAL_SCORE_EPSILON;
    let th = graph.config().thresholds;
    let mut max_diff = 0.0f64;
    let mut tier_diffs = 0;
    let mut far_tier_diffs = 0;
    for (k, s, t) in full.all() {
        max_diff = max_diff.max((latest.score(&k) - s).abs());
        if latest.tier(&k) != t {
            tier_diffs += 1;
            let near = [th.trusted, th.known]
                .iter()
                .any(|x| (s - x).abs() <= 2.0 * eps);
            if !near {
                far_tier_diffs += 1;
            }
        }
    }
    println!(
        "{edits} random edits, incremental each: median {:.2?}, p90 {:.2?}, max {:.2?}; keys re-derived median {}",
        median(times),
        sorted[sorted.len() * 9 / 10],
        sorted.last().unwrap(),
        changed[changed.len() / 2]
    );
    println!(
        "after {edits} edits vs full recompute: max |score difference| {max_diff:.2e} (stated epsilon {eps:.0e}); \
         tier differences {tier_diffs}, of which {far_tier_diffs} farther than 2 epsilon from a threshold; \
         certified mass error bound {:.2e}",
        latest.stats().mass_error_bound
    );
    println!(
        "RATIO trust.incremental-vs-epsilon {:.3} (max score difference / epsilon, must be <= 1)",
        max_diff / eps
    );
    println!("peak RSS after the edits (VmHWM): {}", vm_hwm());

    // Sybil regions of 10,000 keys joined by fooled honest keys (archy-sim): three follows
    // (each fooled key's contact list becomes that one sybil), then two endorsements.
    for (i, (kind, k)) in [(AttackKind::Follow, 3), (AttackKind::Endorse, 2)]
        .into_iter()
        .enumerate()
    {
        let mut stub = World {
            anchors: anchors.clone(),
            honest: keys.clone(),
            ..Default::default()
        };
        let attack = SybilRegion {
            size: 10_000,
            first: (1 << 40) + i as u64 * 100_000,
            density: 10,
            attack_edges: k,
            kind,
        }
        .attach(&mut stub, 9 + i as u64);
        for signal in stub.signals {
            graph.apply_signal(signal);
        }
        let (scores, took) = measure(|| graph.compute_incremental_at(1_800_000_000));
        let r = scores.get(&attack.publisher);
        let best = attack
            .sybils
            .iter()
            .map(|k| scores.score(k))
            .fold(0.0f64, f64::max);
        assert!(attack
            .sybils
            .iter()
            .all(|k| scores.tier(k) != Tier::Trusted));
        println!(
            "sybil region of 10,000 by {k} {kind:?} attack edge(s): publisher score {:.3} tier {} ({:?}), \
             best sybil score {best:.3}, none trusted; update {took}",
            r.score, r.tier, r.explanation.rule
        );
    }

    // Ingestion through the node's path: RawEvent (hex tags) -> signals -> graph.
    let events: Vec<archy_trust::RawEvent> = (0..10_000)
        .map(|i| archy_trust::RawEvent {
            pubkey: keys[i].to_hex(),
            kind: archy_trust::KIND_CONTACTS,
            created_at: 100,
            tags: (0..per_key)
                .map(|_| vec!["p".to_string(), keys[rng.below(n)].to_hex()])
                .collect(),
        })
        .collect();
    let t = Instant::now();
    let changed: usize = events.iter().map(|e| graph.apply_event(e)).sum();
    let dt = t.elapsed();
    println!(
        "apply_event: 10,000 contact lists ({per_key} p tags each, {changed} changed) in {dt:.2?} ({:.0} events/s)",
        10_000.0 / dt.as_secs_f64()
    );
}
