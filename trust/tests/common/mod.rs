//! Helpers shared by the integration tests: deterministic keys and event builders.
#![allow(dead_code)]

use archy_trust::{Key, RawEvent, KIND_CONTACTS, KIND_LABEL, KIND_REPORT};

/// SplitMix64: a tiny deterministic generator, so tests need no RNG crate and never vary.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A distinct, well-spread key per number (never one of the denylisted k·G keys).
pub fn key(n: u64) -> Key {
    let mut rng = Rng(n.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5151);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    Key::from_bytes(bytes)
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn follows(author: Key, targets: &[Key], created_at: u64) -> RawEvent {
    RawEvent {
        pubkey: author.to_hex(),
        kind: KIND_CONTACTS,
        created_at,
        tags: targets.iter().map(|t| tag(&["p", &t.to_hex()])).collect(),
    }
}

pub fn label(author: Key, targets: &[Key], which: &str, created_at: u64) -> RawEvent {
    let mut tags = vec![
        tag(&["L", "archy.trust"]),
        tag(&["l", which, "archy.trust"]),
    ];
    tags.extend(targets.iter().map(|t| tag(&["p", &t.to_hex()])));
    RawEvent {
        pubkey: author.to_hex(),
        kind: KIND_LABEL,
        created_at,
        tags,
    }
}

pub fn endorse(author: Key, targets: &[Key], created_at: u64) -> RawEvent {
    label(author, targets, "endorse", created_at)
}

pub fn distrust(author: Key, targets: &[Key], created_at: u64) -> RawEvent {
    label(author, targets, "distrust", created_at)
}

pub fn report(author: Key, target: Key, reason: &str, created_at: u64) -> RawEvent {
    RawEvent {
        pubkey: author.to_hex(),
        kind: KIND_REPORT,
        created_at,
        tags: vec![tag(&["p", &target.to_hex(), reason])],
    }
}
