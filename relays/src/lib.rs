//! Archy's relay layer: it moves Nostr events and knows nothing of manifests.
//!
//! Module map:
//! - [`embedded`]: [`EmbeddedRelay`], the node's own relay on loopback (nostr-relay-builder,
//!   LMDB storage so a restart keeps its events; serves kind 30078 without AUTH).
//! - [`pool`]: [`RelayPool`], the set of relays a node uses: per-relay [`RelayHealth`],
//!   [`RelayPool::publish`] with a quorum, [`RelayPool::fetch`] (one pass to EOSE, de-duplicated)
//!   and [`RelayPool::subscribe`] (live, resumes after reconnects).
//! - [`report`]: [`PublishReport`] and [`RelayOutcome`] (pure).
//! - [`sync`]: de-duplication, resume cursor and paging rules (pure, sans-IO).
//! - `wire`: the raw NIP-01 reader behind fetch and subscribe (events are handed over
//!   unverified: the node checks them, PROTOCOL.md §4.1 rule 1).
//! - [`testing`] (feature `test-relay`): a relay that stores anything, and a launcher for the
//!   third-party `nostr-rs-relay`.
//! - [`error`]: the crate's [`RelayError`].
//!
//! The nostr types (`Event`, `Filter`, `Timestamp`, `RelayUrl`, …) are re-exported as
//! [`nostr`] so callers use the same versions.

pub mod embedded;
pub mod error;
pub mod pool;
pub mod report;
pub mod sync;
#[cfg(feature = "test-relay")]
pub mod testing;
mod wire;

pub use embedded::{EmbeddedRelay, EmbeddedRelayConfig};
pub use error::RelayError;
pub use pool::{
    parse_relay_urls, FetchReport, PoolConfig, RelayHealth, RelayPool, StreamItem, Subscription,
    Timeouts,
};
pub use report::{PublishReport, RelayOutcome};

/// The nostr-sdk this crate is built on (its `Event`, `Filter`, `Keys`, … are the ones to use).
pub use nostr_sdk as nostr;
