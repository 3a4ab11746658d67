//! Helpers shared by the integration tests: deterministic keys and event builders.
#![allow(dead_code)]

use archy_trust::{Key, RawEvent, KIND_CONTACTS, KIND_LABEL, KIND_REPORT};

/// The simulation harness's deterministic generator and keys (the same numbers always give the
/// same keys, never a denylisted one).
#[allow(unused_imports)]
pub use archy_sim::{key, Rng};

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
