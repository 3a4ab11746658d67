use std::path::PathBuf;

use crate::fetch::FetchReport;

/// Everything the swarm can fail with. Messages name the input or rule at fault so the user
/// (or the node's log) can act on them.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("invalid endpoint id `{input}`: {reason}")]
    InvalidEndpointId { input: String, reason: String },
    #[error(
        "invalid peer address `{input}` (expected <64-hex endpoint id>@ip:port,...): {reason}"
    )]
    InvalidPeerAddr { input: String, reason: String },
    #[error("invalid blob hash `{input}`: expected 64 hex characters (BLAKE3)")]
    InvalidHash { input: String },
    #[error("{what} at {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret key file {path} is corrupt: expected 32 bytes, found {len}; move it away to create a new identity")]
    CorruptKey { path: PathBuf, len: usize },
    #[error("could not bind the iroh endpoint on {bind}: {reason}")]
    Bind { bind: String, reason: String },
    #[error("blob store ({op}): {reason}")]
    Store { op: &'static str, reason: String },
    #[error("blob {hash} is not complete in the local store")]
    NotFound { hash: String },
    #[error("blob {hash}: fetched {actual} bytes but the manifest says size {expected}")]
    SizeMismatch {
        hash: String,
        expected: u64,
        actual: u64,
    },
    #[error("fetch of blob {hash} failed: no source delivered it ({})", describe_failures(.report))]
    Exhausted {
        hash: String,
        report: Box<FetchReport>,
    },
    #[error("mirror list {path}: {reason}")]
    MirrorList { path: PathBuf, reason: String },
    #[error("invalid ticket: {reason}")]
    InvalidTicket { reason: String },
    #[error("blob {hash} is {actual} bytes, more than the {max} its role allows")]
    TooLarge { hash: String, max: u64, actual: u64 },
    #[error("blob {hash} is not a HashSeq: {reason}")]
    NotHashSeq { hash: String, reason: String },
}

fn describe_failures(report: &FetchReport) -> String {
    if report.failures.is_empty() {
        return "no sources were given".into();
    }
    report
        .failures
        .iter()
        .map(|(id, why)| format!("{}: {why}", short(id)))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

impl SwarmError {
    pub(crate) fn store(op: &'static str, e: impl std::fmt::Display) -> Self {
        SwarmError::Store {
            op,
            reason: e.to_string(),
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SwarmError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
