//! Errors of the relay layer. Each message names what to change.

use std::net::SocketAddr;
use std::path::PathBuf;

use nostr_sdk::RelayUrl;

use crate::report::PublishReport;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A configured relay address does not parse.
    #[error("relay URL `{url}` is invalid ({reason}); use ws://host:port or wss://host")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The pool was given no relay.
    #[error(
        "no relay configured: give at least one relay URL (the embedded relay's url() will do)"
    )]
    NoRelays,
    /// `quorum` is 0 or larger than the number of relays.
    #[error(
        "quorum {quorum} is impossible with {relays} relay(s): set `quorum` between 1 and {relays}"
    )]
    InvalidQuorum {
        /// Requested quorum.
        quorum: usize,
        /// Number of relays in the pool.
        relays: usize,
    },
    /// Fewer relays accepted the event than the quorum requires. The full report is attached:
    /// some relays may have accepted it anyway.
    #[error("published to {} of the {} relays required by the quorum: {}", .0.accepted, .0.quorum, .0.summary())]
    QuorumNotMet(Box<PublishReport>),
    /// Every relay failed a fetch (none answered up to EOSE).
    #[error("no relay answered the query: {}", summarise(.0))]
    NoRelayAnswered(Vec<(RelayUrl, String)>),
    /// The embedded relay cannot listen on its address.
    #[error("embedded relay cannot listen on {addr}: {source}; choose another `bind` address or port (port 0 picks a free one)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The embedded relay's database cannot be opened.
    #[error("embedded relay cannot open its database in {path}: {reason}; check that `db_dir` is writable and not used by another process")]
    Database {
        /// The `db_dir` given.
        path: PathBuf,
        /// The backend's error.
        reason: String,
    },
    /// nostr-sdk refused an operation (e.g. adding a relay).
    #[error("nostr client: {0}")]
    Client(String),
}

fn summarise(errors: &[(RelayUrl, String)]) -> String {
    errors
        .iter()
        .map(|(u, e)| format!("{u}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}
