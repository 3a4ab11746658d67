//! The signal model: what the graph learns from Nostr events and from the node's own catalog.
//!
//! Events arrive as [`RawEvent`], a plain struct the node fills from its (already
//! signature-checked) Nostr events, so this crate needs no Nostr dependency.
//! [`signals_from_event`] is a pure function from one event to the [`Signal`]s it carries:
//!
//! | event | signal |
//! |---|---|
//! | NIP-02 kind 3 | one [`Signal::Follows`] with the whole contact list (`p` tags) |
//! | NIP-32 kind 1985 with `["L","archy.trust"]` and `["l","endorse"\|"distrust","archy.trust"]` | one [`Signal::Label`] per `p` tag |
//! | NIP-56 kind 1984 | one [`Signal::Report`] per `p` tag, reason from the tag's third element |
//!
//! Malformed parts are skipped, not fatal: an invalid `p` tag drops that target only, a
//! self-reference is ignored (nobody vouches for or against themselves), an event whose
//! author is not a key yields nothing. Replacement rules (which signal wins) live in the graph.

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::key::Key;

/// NIP-02 contact list.
pub const KIND_CONTACTS: u16 = 3;
/// NIP-56 report.
pub const KIND_REPORT: u16 = 1984;
/// NIP-32 label.
pub const KIND_LABEL: u16 = 1985;
/// The NIP-32 label namespace of trust labels.
pub const LABEL_NAMESPACE: &str = "archy.trust";

/// A Nostr event reduced to what trust needs. The node checks id and signature before it
/// builds one; this crate trusts that check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEvent {
    /// Author, 64-hex x-only key.
    pub pubkey: String,
    /// Event kind.
    pub kind: u16,
    /// Unix seconds, as signed by the author.
    pub created_at: u64,
    /// Tags, each a list of strings.
    pub tags: Vec<Vec<String>>,
}

/// A NIP-32 trust label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Label {
    /// "I vouch for this publisher."
    Endorse,
    /// "Do not trust this publisher." Orders after `Endorse`: on a tie, distrust wins.
    Distrust,
}

/// A NIP-56 report reason, ordered by severity (a tie between two reports keeps the worse one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportReason {
    /// Any other NIP-56 type (nudity, profanity, illegal, …) or none given.
    Other,
    /// Spam.
    Spam,
    /// Pretends to be someone else.
    Impersonation,
    /// Ships malware.
    Malware,
}

impl ReportReason {
    /// Maps a NIP-56 report type; unknown or missing types are `Other`.
    pub fn from_nip56(text: Option<&str>) -> Self {
        match text {
            Some("malware") => ReportReason::Malware,
            Some("spam") => ReportReason::Spam,
            Some("impersonation") => ReportReason::Impersonation,
            _ => ReportReason::Other,
        }
    }
}

/// One trust statement by one author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Signal {
    /// A complete contact list: replaces the author's previous one if newer.
    Follows {
        /// Who follows.
        author: Key,
        /// Event time.
        created_at: u64,
        /// Everyone followed (sorted, deduplicated, without the author).
        follows: Vec<Key>,
    },
    /// An endorse/distrust label: replaces the author's previous label on `target` if newer.
    Label {
        /// Who labels.
        author: Key,
        /// Who is labelled.
        target: Key,
        /// Event time.
        created_at: u64,
        /// The label.
        label: Label,
    },
    /// A report: replaces the author's previous report on `target` if newer.
    Report {
        /// Who reports.
        author: Key,
        /// Who is reported.
        target: Key,
        /// Event time.
        created_at: u64,
        /// Why.
        reason: ReportReason,
    },
}

impl Signal {
    /// The key that made the statement.
    pub fn author(&self) -> Key {
        match self {
            Signal::Follows { author, .. }
            | Signal::Label { author, .. }
            | Signal::Report { author, .. } => *author,
        }
    }
}

/// What the catalog observed about a key (counts since the node first saw it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceCounts {
    /// Releases rejected as equivocation (same version, different signed bytes).
    pub equivocations: u32,
    /// Fetches where this key's peer served bytes that failed BLAKE3 verification.
    pub bad_bytes: u32,
}

/// One observation from the catalog or the blob layer, counted against a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// The key signed two different manifests for one version.
    Equivocation,
    /// The key's peer served bytes that did not verify.
    BadBytes,
}

/// What the node knows about a publisher's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Unix seconds when the node first saw an accepted release (or any event) of the key.
    pub first_seen: u64,
    /// Releases accepted from the key so far.
    pub accepted_releases: u32,
}

fn p_targets<'a>(
    author: &'a Key,
    tags: &'a [Vec<String>],
) -> impl Iterator<Item = (Key, &'a [String])> + 'a {
    tags.iter()
        .filter(|t| t.first().map(String::as_str) == Some("p"))
        .filter_map(move |t| {
            let text = t.get(1)?;
            match Key::from_hex(text) {
                Ok(k) if k != *author => Some((k, t.as_slice())),
                Ok(_) => None,
                Err(e) => {
                    debug!(%author, tag = %text, error = %e, "skipping p tag that is not a key");
                    None
                }
            }
        })
}

/// Converts one (already verified) event into the trust signals it carries. Pure; events of
/// other kinds, or without the `archy.trust` namespace, yield nothing.
pub fn signals_from_event(event: &RawEvent) -> Vec<Signal> {
    let author = match Key::from_hex(&event.pubkey) {
        Ok(k) => k,
        Err(e) => {
            debug!(pubkey = %event.pubkey, error = %e, "event author is not a key; ignored");
            return Vec::new();
        }
    };
    let created_at = event.created_at;
    match event.kind {
        KIND_CONTACTS => {
            let mut follows: Vec<Key> = p_targets(&author, &event.tags).map(|(k, _)| k).collect();
            follows.sort_unstable();
            follows.dedup();
            vec![Signal::Follows {
                author,
                created_at,
                follows,
            }]
        }
        KIND_LABEL => {
            let has_namespace = event.tags.iter().any(|t| {
                t.first().map(String::as_str) == Some("L")
                    && t.get(1).map(String::as_str) == Some(LABEL_NAMESPACE)
            });
            if !has_namespace {
                return Vec::new();
            }
            // NIP-32: an `l` tag without a mark is in the "ugc" namespace, so the mark is required.
            let label = event
                .tags
                .iter()
                .filter(|t| {
                    t.first().map(String::as_str) == Some("l")
                        && t.get(2).map(String::as_str) == Some(LABEL_NAMESPACE)
                })
                .filter_map(|t| match t.get(1).map(String::as_str) {
                    Some("endorse") => Some(Label::Endorse),
                    Some("distrust") => Some(Label::Distrust),
                    _ => None,
                })
                .max(); // contradictory labels in one event: distrust wins
            let Some(label) = label else {
                return Vec::new();
            };
            let mut targets: Vec<Key> = p_targets(&author, &event.tags).map(|(k, _)| k).collect();
            targets.sort_unstable();
            targets.dedup();
            targets
                .into_iter()
                .map(|target| Signal::Label {
                    author,
                    target,
                    created_at,
                    label,
                })
                .collect()
        }
        KIND_REPORT => {
            let mut reports: Vec<(Key, ReportReason)> = p_targets(&author, &event.tags)
                .map(|(k, tag)| (k, ReportReason::from_nip56(tag.get(2).map(String::as_str))))
                .collect();
            // One report per target: the most severe reason the event gives.
            reports.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            reports.dedup_by_key(|r| r.0);
            reports
                .into_iter()
                .map(|(target, reason)| Signal::Report {
                    author,
                    target,
                    created_at,
                    reason,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }
    fn tag(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }
    fn event(author: u8, kind: u16, tags: Vec<Vec<String>>) -> RawEvent {
        RawEvent {
            pubkey: key(author).to_hex(),
            kind,
            created_at: 100,
            tags,
        }
    }

    #[test]
    fn contact_list_becomes_one_follows_signal() {
        let k2 = key(2).to_hex();
        let k3 = key(3).to_hex();
        let e = event(
            1,
            KIND_CONTACTS,
            vec![
                tag(&["p", &k3, "wss://relay"]),
                tag(&["p", &k2]),
                tag(&["p", &k2]),
                tag(&["p", "not-a-key"]),
                tag(&["p", &key(1).to_hex()]),
                tag(&["e", &k2]),
            ],
        );
        assert_eq!(
            signals_from_event(&e),
            vec![Signal::Follows {
                author: key(1),
                created_at: 100,
                follows: vec![key(2), key(3)]
            }]
        );
    }

    #[test]
    fn labels_need_the_namespace_and_a_marked_l_tag() {
        let k2 = key(2).to_hex();
        let good = event(
            1,
            KIND_LABEL,
            vec![
                tag(&["L", "archy.trust"]),
                tag(&["l", "endorse", "archy.trust"]),
                tag(&["p", &k2]),
            ],
        );
        assert_eq!(
            signals_from_event(&good),
            vec![Signal::Label {
                author: key(1),
                target: key(2),
                created_at: 100,
                label: Label::Endorse
            }]
        );
        let no_namespace = event(
            1,
            KIND_LABEL,
            vec![tag(&["l", "endorse", "archy.trust"]), tag(&["p", &k2])],
        );
        assert!(signals_from_event(&no_namespace).is_empty());
        let unmarked = event(
            1,
            KIND_LABEL,
            vec![
                tag(&["L", "archy.trust"]),
                tag(&["l", "endorse"]),
                tag(&["p", &k2]),
            ],
        );
        assert!(signals_from_event(&unmarked).is_empty());
        let both = event(
            1,
            KIND_LABEL,
            vec![
                tag(&["L", "archy.trust"]),
                tag(&["l", "endorse", "archy.trust"]),
                tag(&["l", "distrust", "archy.trust"]),
                tag(&["p", &k2]),
            ],
        );
        assert!(matches!(
            signals_from_event(&both)[..],
            [Signal::Label {
                label: Label::Distrust,
                ..
            }]
        ));
    }

    #[test]
    fn reports_map_nip56_reasons() {
        let e = event(
            1,
            KIND_REPORT,
            vec![
                tag(&["p", &key(2).to_hex(), "malware"]),
                tag(&["p", &key(3).to_hex(), "nudity"]),
                tag(&["p", &key(4).to_hex()]),
                tag(&["p", &key(2).to_hex(), "spam"]),
            ],
        );
        let reasons: Vec<(Key, ReportReason)> = signals_from_event(&e)
            .into_iter()
            .map(|s| match s {
                Signal::Report { target, reason, .. } => (target, reason),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (key(2), ReportReason::Malware),
                (key(3), ReportReason::Other),
                (key(4), ReportReason::Other)
            ]
        );
    }

    #[test]
    fn bad_author_or_other_kind_yields_nothing() {
        let mut e = event(1, KIND_CONTACTS, vec![]);
        e.pubkey = "xyz".into();
        assert!(signals_from_event(&e).is_empty());
        assert!(signals_from_event(&event(1, 1, vec![tag(&["p", &key(2).to_hex()])])).is_empty());
    }
}
