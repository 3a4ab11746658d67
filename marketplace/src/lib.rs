//! Archy's node and its `archy` command line: everything that does I/O.
//!
//! Code map (the pure protocol is the `archy-protocol` crate, re-exported here by module):
//! - [`catalog`]: the redb catalog of releases; it applies the decisions of
//!   [`release::rule5`] and keeps what hostile relays can grow bounded.
//! - [`home`], [`identity`]: the node's home directory and its two keys (0600 files).
//! - [`node`]: `NodeCore` and its components, every operation as an `rpc::Request` with a typed
//!   reply, the local API, `archy node run` and its loops.
//! - [`cli`]: the `archy` command line.

pub mod catalog;
pub mod cli;
pub mod home;
pub mod identity;
pub mod node;

// The protocol lives in its own pure crate; the node and its users name it through here.
pub use archy_protocol::{did, envelope, events, jcs, jws, manifest, reason, release};

/// Unix seconds now. The one place the crate reads the clock, so tests can pass their own `now`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
