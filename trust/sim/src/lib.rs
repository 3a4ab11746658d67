//! # archy-sim: seeded worlds for the trust engine's tests and benchmarks
//!
//! Everything here is a pure function of a seed, so a test that fails can be replayed and a
//! benchmark measures the same world every time.
//!
//! | item | what |
//! |---|---|
//! | [`Rng`] | SplitMix64 with the few draws the generators need |
//! | [`key`] | a distinct, well-spread key per number (never a denylisted one) |
//! | [`SocialGraph`] | honest keys with heavy-tailed out- and in-degrees, endorsements, reports |
//! | [`SybilRegion`] | an attacker's region of any size and density, joined by k attack edges |
//! | [`World`] | the signals of both, to feed a [`TrustGraph`] |
//! | [`Measured`] | wall time and this process's peak memory (VmHWM) of one step |
//!
//! Degrees: a key's out-degree is drawn from a discrete power law (exponent `out_exponent`,
//! scaled to the requested mean), and each follow picks its target by a Zipf law over the keys
//! (`popularity`), so a few keys are followed by many and most by few, as in real follow
//! graphs. The synthetic *signed releases* of the node's benchmarks live with the node
//! (`marketplace/examples/releases.rs`), which can sign; this crate knows no Nostr.

use std::time::{Duration, Instant};

use archy_trust::{Key, Label, ReportReason, Signal, TrustConfig, TrustError, TrustGraph};

/// SplitMix64: tiny, deterministic, good enough for simulations.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A distinct, well-spread key per number (never one of the denylisted k·G keys, whose bytes
/// are mostly zero).
pub fn key(n: u64) -> Key {
    let mut rng = Rng(n.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5151);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Key::from_bytes(bytes)
}

/// Draws from a Zipf law over `0..n`: P(i) ∝ 1/(i+1)^s, by binary search in the cumulative
/// weights (O(log n) per draw).
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// The law over `0..n` with exponent `s` (0 is uniform).
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("n >= 1");
        let x = rng.unit() * total;
        self.cumulative
            .partition_point(|c| *c <= x)
            .min(self.cumulative.len() - 1)
    }
}

/// The signals of a simulated world, and who is who in it.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// The operator's anchors.
    pub anchors: Vec<Key>,
    /// Honest keys (anchors included).
    pub honest: Vec<Key>,
    /// Every signal, contact lists first.
    pub signals: Vec<Signal>,
    /// Positive edges in the signals (follows and endorsements, each counted once).
    pub edges: usize,
}

impl World {
    /// A graph with the default configuration and these anchors, holding every signal.
    pub fn graph(&self) -> Result<TrustGraph, TrustError> {
        self.graph_with(TrustConfig::default())
    }

    /// The same with `config` (its anchors replaced by the world's).
    pub fn graph_with(&self, config: TrustConfig) -> Result<TrustGraph, TrustError> {
        let mut g = TrustGraph::new(TrustConfig {
            anchors: self.anchors.clone(),
            ..config
        })?;
        for s in &self.signals {
            g.apply_signal(s.clone());
        }
        Ok(g)
    }
}

/// Honest keys with heavy-tailed degrees. Keys are `key(first..first + keys)`; the first
/// `anchors` of them are the anchors.
#[derive(Debug, Clone)]
pub struct SocialGraph {
    /// Number of honest keys.
    pub keys: usize,
    /// Number of `key(i)` to start at (to keep several worlds apart).
    pub first: u64,
    /// How many of the first keys are anchors.
    pub anchors: usize,
    /// Mean number of follows per key.
    pub mean_follows: f64,
    /// Exponent of the out-degree power law (2.0–2.5 is typical of follow graphs).
    pub out_exponent: f64,
    /// Zipf exponent of whom a follow picks (0 uniform; ~0.8 gives a few very popular keys).
    pub popularity: f64,
    /// Share of keys that also endorse, and how many each endorses.
    pub endorsers: f64,
    /// Endorsements per endorsing key.
    pub endorsements: usize,
    /// Share of keys that report one random key (spam).
    pub reporters: f64,
}

impl Default for SocialGraph {
    fn default() -> Self {
        SocialGraph {
            keys: 10_000,
            first: 0,
            anchors: 3,
            mean_follows: 10.0,
            out_exponent: 2.2,
            popularity: 0.8,
            endorsers: 0.1,
            endorsements: 2,
            reporters: 0.05,
        }
    }
}

impl SocialGraph {
    /// The world of this graph, from `seed`.
    pub fn generate(&self, seed: u64) -> World {
        let mut rng = Rng(seed);
        let n = self.keys.max(1);
        let honest: Vec<Key> = (0..n as u64).map(|i| key(self.first + i)).collect();
        // Out-degrees: a power law over 1..=n-1 scaled to the mean.
        let out = Zipf::new(n.clamp(2, 100_000) - 1, self.out_exponent);
        let raw_mean = {
            let mut probe = Rng(seed ^ 0xabcd);
            (0..4096)
                .map(|_| (out.sample(&mut probe) + 1) as f64)
                .sum::<f64>()
                / 4096.0
        };
        let scale = self.mean_follows / raw_mean;
        let targets = Zipf::new(n, self.popularity);
        // Popularity ranks are a shuffle of the keys, so the anchors are not the hubs.
        let mut rank: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            rank.swap(i, rng.below(i + 1));
        }
        let mut world = World {
            anchors: honest[..self.anchors.min(n)].to_vec(),
            honest: honest.clone(),
            ..Default::default()
        };
        for (i, author) in honest.iter().enumerate() {
            let d = ((out.sample(&mut rng) + 1) as f64 * scale).round().max(1.0) as usize;
            let follows: Vec<Key> = (0..d.min(n - 1))
                .map(|_| honest[rank[targets.sample(&mut rng)]])
                .filter(|k| k != author)
                .collect();
            world.edges += follows.len();
            world.signals.push(Signal::Follows {
                author: *author,
                created_at: 1,
                follows,
            });
            if i < self.anchors || rng.chance(self.endorsers) {
                for _ in 0..self.endorsements {
                    let target = honest[rng.below(n)];
                    if target != *author {
                        world.edges += 1;
                        world.signals.push(Signal::Label {
                            author: *author,
                            target,
                            created_at: 1,
                            label: Label::Endorse,
                        });
                    }
                }
            }
            if i >= self.anchors && rng.chance(self.reporters) {
                world.signals.push(Signal::Report {
                    author: *author,
                    target: honest[rng.below(n)],
                    created_at: 1,
                    reason: ReportReason::Spam,
                });
            }
        }
        world
    }
}

/// Which edge an attack buys from a fooled honest key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// The fooled key follows a sybil.
    Follow,
    /// The fooled key endorses a sybil.
    Endorse,
}

/// An attacker's region: `size` sybils (keys `key(first..)`), each following and endorsing
/// `density` others, all endorsing the attacker's publisher (the first sybil), joined to the
/// honest world by `attack_edges` edges from distinct honest non-anchor keys.
#[derive(Debug, Clone)]
pub struct SybilRegion {
    /// Sybils, the attacker's publisher included.
    pub size: usize,
    /// Number of `key(i)` the sybils start at.
    pub first: u64,
    /// Out-edges per sybil inside the region.
    pub density: usize,
    /// Attack edges, each from a distinct honest non-anchor key.
    pub attack_edges: usize,
    /// What each attack edge is.
    pub kind: AttackKind,
}

/// What [`SybilRegion::attach`] did.
#[derive(Debug, Clone)]
pub struct Attack {
    /// The attacker's publisher.
    pub publisher: Key,
    /// All sybils, the publisher first.
    pub sybils: Vec<Key>,
    /// The attack edges (fooled honest key, sybil).
    pub edges: Vec<(Key, Key)>,
}

impl SybilRegion {
    /// Adds the region and its attack edges to `world`, from `seed`. A fooled key keeps its
    /// contact list and adds the sybil to it (a follow attack), or adds an endorsement.
    pub fn attach(&self, world: &mut World, seed: u64) -> Attack {
        let mut rng = Rng(seed);
        let size = self.size.max(1);
        let sybils: Vec<Key> = (0..size as u64).map(|i| key(self.first + i)).collect();
        let publisher = sybils[0];
        for (i, s) in sybils.iter().enumerate() {
            let others: Vec<Key> = (0..self.density.min(size - 1))
                .map(|_| sybils[rng.below(size)])
                .filter(|k| k != s)
                .collect();
            world.edges += others.len() * 2;
            world.signals.push(Signal::Follows {
                author: *s,
                created_at: 1,
                follows: others.clone(),
            });
            for t in others.into_iter().chain((i > 0).then_some(publisher)) {
                world.signals.push(Signal::Label {
                    author: *s,
                    target: t,
                    created_at: 1,
                    label: Label::Endorse,
                });
            }
        }
        let candidates: Vec<Key> = world
            .honest
            .iter()
            .filter(|k| !world.anchors.contains(k))
            .copied()
            .collect();
        let mut fooled: Vec<Key> = Vec::new();
        while fooled.len() < self.attack_edges.min(candidates.len()) {
            let k = candidates[rng.below(candidates.len())];
            if !fooled.contains(&k) {
                fooled.push(k);
            }
        }
        let mut edges = Vec::new();
        for u in fooled {
            let v = sybils[rng.below(size)];
            edges.push((u, v));
            world.edges += 1;
            match self.kind {
                AttackKind::Endorse => world.signals.push(Signal::Label {
                    author: u,
                    target: v,
                    created_at: 2,
                    label: Label::Endorse,
                }),
                AttackKind::Follow => {
                    let mut follows: Vec<Key> = world
                        .signals
                        .iter()
                        .rev()
                        .find_map(|s| match s {
                            Signal::Follows {
                                author, follows, ..
                            } if *author == u => Some(follows.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    follows.push(v);
                    world.signals.push(Signal::Follows {
                        author: u,
                        created_at: 2,
                        follows,
                    });
                }
            }
        }
        Attack {
            publisher,
            sybils,
            edges,
        }
    }
}

/// This process's peak resident set in KiB (VmHWM), if /proc tells.
pub fn vm_hwm_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Wall time of one step and the peak memory after it.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// How long the step took.
    pub elapsed: Duration,
    /// VmHWM after it, KiB (0 if unknown).
    pub peak_kib: u64,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2?}, peak memory {:.1} MiB",
            self.elapsed,
            self.peak_kib as f64 / 1024.0
        )
    }
}

/// Runs `f` and measures it.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Measured) {
    let t = Instant::now();
    let out = f();
    let elapsed = t.elapsed();
    (
        out,
        Measured {
            elapsed,
            peak_kib: vm_hwm_kib().unwrap_or(0),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_are_a_function_of_the_seed() {
        let g = SocialGraph {
            keys: 500,
            ..Default::default()
        };
        let (a, b, c) = (g.generate(1), g.generate(1), g.generate(2));
        assert_eq!(format!("{:?}", a.signals), format!("{:?}", b.signals));
        assert_ne!(format!("{:?}", a.signals), format!("{:?}", c.signals));
    }

    #[test]
    fn degrees_are_heavy_tailed_with_the_requested_mean() {
        let world = SocialGraph {
            keys: 20_000,
            ..Default::default()
        }
        .generate(7);
        let mut out: Vec<usize> = Vec::new();
        let mut indeg = std::collections::HashMap::<Key, usize>::new();
        for s in &world.signals {
            if let Signal::Follows { follows, .. } = s {
                out.push(follows.len());
                for f in follows {
                    *indeg.entry(*f).or_default() += 1;
                }
            }
        }
        let mean = out.iter().sum::<usize>() as f64 / out.len() as f64;
        assert!((7.0..13.0).contains(&mean), "mean out-degree {mean}");
        out.sort_unstable();
        let median = out[out.len() / 2];
        let max_out = *out.last().unwrap();
        assert!(
            median < 10 && max_out > 100,
            "median {median}, max {max_out}"
        );
        let max_in = *indeg.values().max().unwrap();
        assert!(
            max_in > 1_000,
            "the most followed key has {max_in} followers"
        );
    }

    #[test]
    fn an_attack_adds_its_region_and_edges() {
        let mut world = SocialGraph {
            keys: 200,
            ..Default::default()
        }
        .generate(3);
        let attack = SybilRegion {
            size: 50,
            first: 1_000_000,
            density: 5,
            attack_edges: 3,
            kind: AttackKind::Follow,
        }
        .attach(&mut world, 4);
        assert_eq!(attack.sybils.len(), 50);
        assert_eq!(attack.edges.len(), 3);
        let sources: std::collections::BTreeSet<Key> = attack.edges.iter().map(|e| e.0).collect();
        assert_eq!(sources.len(), 3, "distinct fooled keys");
        assert!(sources.iter().all(|k| !world.anchors.contains(k)));
        let g = world.graph().unwrap();
        assert!(g.corroboration(&attack.publisher).independent_paths == 0);
    }
}
