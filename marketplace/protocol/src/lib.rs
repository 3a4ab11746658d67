//! Archy's wire protocol (PROTOCOL.md), pure: no I/O, no clock, no runtime. Everything here
//! takes its inputs (including `now`) and returns values, so the node's I/O layers above it can
//! be thin and every rule is unit-tested without a network.
//!
//! Module map:
//! - [`reason`]: the rejection reason codes of §4.1.
//! - [`jcs`], [`jws`], [`did`]: RFC 8785 canonical JSON, the detached EdDSA JWS, `did:key`.
//! - [`manifest`]: the app manifest of §2: parsing, the schema and policy validator (its limits
//!   and runtime rules come from the rule book, `archy-rules`) and the typed view.
//! - [`keys`]: a publisher's two keys, held in memory (the node's `Identity` loads them).
//! - [`envelope`]: `{"manifest", "signature"}`: signing with the keys, verifying with the DID.
//! - [`release`]: the release event of §4.1, checks 1–4, and [`release::rule5`], check 5 as a
//!   decision over what a catalog already holds.
//! - [`events`]: the profile (§4.2) and mirror (§4.3) events and the discovery filters.
//!
//! Deliberately absent: files, sockets, databases and async. The crate depends on rust-nostr's
//! pure `nostr` crate, never on `nostr-sdk`.

#![forbid(unsafe_code)]

pub mod did;
pub mod envelope;
pub mod events;
pub mod jcs;
pub mod jws;
pub mod keys;
pub mod manifest;
pub mod reason;
pub mod release;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
