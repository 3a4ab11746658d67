//! Rejection reason codes of PROTOCOL.md §4.1.
//!
//! Every rejection a node records carries exactly one of these codes, so independent
//! implementations can compare their verdicts event by event.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One reason code of PROTOCOL.md §4.1, written in kebab-case on the wire and in `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    EventInvalid,
    ContentJson,
    ContentShape,
    ContentTooLarge,
    TooManyTags,
    TagMissing,
    TagDuplicate,
    TagMismatch,
    CreatedAtFuture,
    PubkeyMismatch,
    DidMismatch,
    KidMismatch,
    JwsInvalid,
    ManifestTooLarge,
    Schema,
    Policy,
    Expired,
    Equivocation,
}

impl Reason {
    /// The code as PROTOCOL.md writes it, e.g. `jws-invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EventInvalid => "event-invalid",
            Reason::ContentJson => "content-json",
            Reason::ContentShape => "content-shape",
            Reason::ContentTooLarge => "content-too-large",
            Reason::TooManyTags => "too-many-tags",
            Reason::TagMissing => "tag-missing",
            Reason::TagDuplicate => "tag-duplicate",
            Reason::TagMismatch => "tag-mismatch",
            Reason::CreatedAtFuture => "created-at-future",
            Reason::PubkeyMismatch => "pubkey-mismatch",
            Reason::DidMismatch => "did-mismatch",
            Reason::KidMismatch => "kid-mismatch",
            Reason::JwsInvalid => "jws-invalid",
            Reason::ManifestTooLarge => "manifest-too-large",
            Reason::Schema => "schema",
            Reason::Policy => "policy",
            Reason::Expired => "expired",
            Reason::Equivocation => "equivocation",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
