//! Shared fixtures of the fuzz targets: a fixed clock, a fixed publisher, the default policy.
//!
//! Fixed keys and a fixed `now` keep every input's outcome reproducible from the input alone
//! (a crash file replays the same way on any machine, at any date).

use archy_marketplace::identity::Identity;
use archy_protocol::manifest::PolicyConfig;
use ed25519_dalek::SigningKey;
use nostr_sdk::prelude::{Keys, SecretKey};
use std::sync::OnceLock;

/// The fuzzers' clock (2025-06-15), for `expires_at` and `created_at` checks.
pub const NOW: u64 = 1_750_000_000;

/// A publisher with fixed keys.
pub fn publisher() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| {
        let secret = SecretKey::from_slice(&[7u8; 32]).expect("a valid secp256k1 key");
        Identity::from_keys(SigningKey::from_bytes(&[9u8; 32]), Keys::new(secret))
    })
}

/// The secure default policy (what a node runs with unless its operator widens it).
pub fn policy() -> &'static PolicyConfig {
    static P: OnceLock<PolicyConfig> = OnceLock::new();
    P.get_or_init(PolicyConfig::default)
}
