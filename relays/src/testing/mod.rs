//! Test-only relays (feature `test-relay`): never part of a node build.
//!
//! - [`StoreAnythingRelay`]: a minimal NIP-01 relay without any checks, to feed a node hostile
//!   events (bad signatures, tampered content) an honest relay would refuse.
//! - [`NostrRsRelay`]: the third-party `nostr-rs-relay` binary on a free loopback port, to show
//!   the node works with a relay that is not ours.

mod nostr_rs_relay;
mod store_anything;

pub use nostr_rs_relay::{NostrRsRelay, NostrRsRelayError};
pub use store_anything::{matches_filter, select, StoreAnythingRelay};
