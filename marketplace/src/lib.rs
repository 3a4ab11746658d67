//! Archy's marketplace crate: the `archy` binary, the node, and the protocol code they share.
//!
//! Code map (pure protocol code at the top, I/O below it):
//! - [`reason`]: the rejection reason codes of PROTOCOL.md §4.1.
//! - [`jcs`], [`jws`], [`did`]: RFC 8785 canonical JSON, the detached EdDSA JWS, `did:key`.
//! - [`manifest`]: the app manifest of §2, its schema + policy validator and typed view.
//! - [`envelope`]: `{"manifest", "signature"}`: signing with an identity, verifying with the DID.
//! - [`home`], [`identity`]: the node's home directory and its two keys (0600 files).
//! - [`cli`]: the `archy` command line.

pub mod catalog;
pub mod cli;
pub mod did;
pub mod envelope;
pub mod home;
pub mod identity;
pub mod jcs;
pub mod jws;
pub mod manifest;
pub mod node;
pub mod reason;
pub mod release;
pub mod side_events;

/// Unix seconds now. The one place the crate reads the clock, so tests can pass their own `now`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
