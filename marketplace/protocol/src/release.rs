//! The app-release event of PROTOCOL.md §4.1: building it, and checks 1–4 (everything that
//! can be decided from the event alone). Check 5 needs the catalog's history; see [`rule5`].
//!
//! Pure code: no network, no storage, the clock passed in.

use crate::envelope::{self, Envelope, Verified};
use crate::manifest::{PolicyConfig, Violation};
use crate::reason::Reason;
use nostr::{Event, EventBuilder, Keys, Kind, Tag, Timestamp};
use serde::Serialize;

/// NIP-78 application-specific data, addressable.
pub const KIND_APP_DATA: u16 = 30078;
/// The largest event content (§4.1).
pub const MAX_CONTENT_BYTES: usize = 96 * 1024;
/// The most tags an event may carry (§4.1).
pub const MAX_TAGS: usize = 64;
/// How far in the future `created_at` may be (§4.1: 15 minutes).
pub const MAX_FUTURE_SECS: u64 = 15 * 60;
/// The discovery `t` tag of releases.
pub const RELEASE_TOPIC: &str = "archy-app";

/// A rejected event: the reason code, the field or tag, and text for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub reason: Reason,
    pub field: String,
    pub message: String,
}

impl Rejection {
    fn new(reason: Reason, field: &str, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl From<Violation> for Rejection {
    fn from(v: Violation) -> Self {
        Rejection {
            reason: v.reason,
            field: v.field,
            message: format!("{} ({})", v.message, v.rule),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]: {}", self.reason, self.field, self.message)
    }
}

/// The `d` tag of a release.
pub fn d_tag(id: &str, version: &str) -> String {
    format!("archy:app:{id}@{version}")
}

/// The image root a release's `x` tag names (§4.1): `image.layers.blake3` of a layered image
/// (§2.1), else `image.archive.blake3`.
pub fn image_root(manifest: &crate::manifest::RawManifest) -> Option<&str> {
    str_path(manifest, &["image", "layers", "blake3"])
        .or_else(|| str_path(manifest, &["image", "archive", "blake3"]))
}

/// Builds the signed release event for an envelope (§4.1). The envelope must be one this
/// identity signed; the Nostr signature then covers the DID signature.
pub fn build_release_event(
    env: &Envelope,
    keys: &Keys,
) -> Result<Event, crate::events::BuildError> {
    let get = |path: &[&str]| str_path(&env.manifest, path).unwrap_or_default().to_owned();
    let (id, version) = (get(&["id"]), get(&["version"]));
    let tags = vec![
        Tag::parse(["d", &d_tag(&id, &version)])?,
        Tag::parse(["t", RELEASE_TOPIC])?,
        Tag::parse(["version", &version])?,
        Tag::parse(["did", &get(&["publisher", "did"])])?,
        Tag::parse(["x", image_root(&env.manifest).unwrap_or_default()])?,
        Tag::parse([
            "alt",
            &format!("Archy app release: {} {version}", get(&["name"])),
        ])?,
    ];
    EventBuilder::new(Kind::Custom(KIND_APP_DATA), env.to_json())
        .tags(tags)
        .sign_with_keys(keys)
        .map_err(Into::into)
}

/// The string at a path of nested objects, e.g. `["publisher", "did"]`.
pub fn str_path<'m>(
    map: &'m serde_json::Map<String, serde_json::Value>,
    path: &[&str],
) -> Option<&'m str> {
    let (first, rest) = path.split_first()?;
    let mut v = map.get(*first)?;
    for p in rest {
        v = v.get(*p)?;
    }
    v.as_str()
}

/// The single value of a tag that must appear exactly once.
fn single_tag<'e>(event: &'e Event, name: &str) -> Result<&'e str, Rejection> {
    let mut found = event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| t.first().map(String::as_str) == Some(name));
    let first = found.next().ok_or_else(|| {
        Rejection::new(
            Reason::TagMissing,
            name,
            format!("the `{name}` tag is missing"),
        )
    })?;
    if found.next().is_some() {
        return Err(Rejection::new(
            Reason::TagDuplicate,
            name,
            format!("the `{name}` tag appears more than once"),
        ));
    }
    first.get(1).map(String::as_str).ok_or_else(|| {
        Rejection::new(
            Reason::TagMissing,
            name,
            format!("the `{name}` tag has no value"),
        )
    })
}

/// Checks 1–4 of §4.1, in order; the first failure is the reason. `now` is unix seconds.
///
/// [`Reason::EventInvalid`] is the only rejection made before the event id and signature are
/// verified: any other result (accepted or rejected) is about a genuinely signed event.
pub fn check_release(
    event: &Event,
    policy: &PolicyConfig,
    now: u64,
) -> Result<Verified, Rejection> {
    // 1. Event integrity first (PROTOCOL order), then limits and clock. Every other outcome
    // therefore means the id and signature verified: the catalog marks an event id seen only
    // then (an `event-invalid` copy must not hide the genuine event with that id).
    if event.verify().is_err() {
        return Err(Rejection::new(
            Reason::EventInvalid,
            "id/sig",
            "the event id or its BIP-340 signature is invalid",
        ));
    }
    if event.kind != Kind::Custom(KIND_APP_DATA) {
        return Err(Rejection::new(
            Reason::ContentShape,
            "kind",
            format!("kind {} is not 30078", event.kind),
        ));
    }
    if event.content.len() > MAX_CONTENT_BYTES {
        return Err(Rejection::new(
            Reason::ContentTooLarge,
            "content",
            format!(
                "{} bytes, the limit is {MAX_CONTENT_BYTES}",
                event.content.len()
            ),
        ));
    }
    if event.tags.len() > MAX_TAGS {
        return Err(Rejection::new(
            Reason::TooManyTags,
            "tags",
            format!("{} tags, the limit is {MAX_TAGS}", event.tags.len()),
        ));
    }
    if event.created_at.as_secs() > now + MAX_FUTURE_SECS {
        return Err(Rejection::new(
            Reason::CreatedAtFuture,
            "created_at",
            format!(
                "created_at {} is {} s ahead of this node's clock (limit {MAX_FUTURE_SECS} s)",
                event.created_at.as_secs(),
                event.created_at.as_secs() - now
            ),
        ));
    }
    let env = Envelope::from_json(&event.content).map_err(Rejection::from)?;
    let has_topic = event.tags.iter().any(|t| {
        let s = t.as_slice();
        s.len() >= 2 && s[0] == "t" && s[1] == RELEASE_TOPIC
    });
    if !has_topic {
        return Err(Rejection::new(
            Reason::TagMissing,
            "t",
            "the [\"t\",\"archy-app\"] tag is missing",
        ));
    }
    let d = single_tag(event, "d")?;
    let version_tag = single_tag(event, "version")?;
    let did_tag = single_tag(event, "did")?;
    let x = single_tag(event, "x")?;

    // 2. Key binding: Nostr key, DID, kid.
    let str_at = |path: &[&str]| str_path(&env.manifest, path);
    let pubkey = event.pubkey.to_hex();
    if str_at(&["publisher", "nostr"]) != Some(pubkey.as_str()) {
        return Err(Rejection::new(
            Reason::PubkeyMismatch,
            "publisher.nostr",
            format!(
                "the event is signed by {pubkey} but the manifest names {:?}",
                str_at(&["publisher", "nostr"])
            ),
        ));
    }
    if str_at(&["publisher", "did"]) != Some(did_tag) {
        return Err(Rejection::new(
            Reason::DidMismatch,
            "did",
            format!(
                "the `did` tag {did_tag} is not the manifest's publisher.did {:?}",
                str_at(&["publisher", "did"])
            ),
        ));
    }
    // 3. The JWS (its kid check comes first, as rule 2), then the tags against the manifest.
    let jcs = envelope::verify_signature(&env).map_err(Rejection::from)?;
    let id = str_at(&["id"]).unwrap_or_default();
    let version = str_at(&["version"]).unwrap_or_default();
    let expected_d = d_tag(id, version);
    if d != expected_d {
        return Err(Rejection::new(
            Reason::TagMismatch,
            "d",
            format!("`d` is {d:?}, the manifest says {expected_d:?}"),
        ));
    }
    if version_tag != version {
        return Err(Rejection::new(
            Reason::TagMismatch,
            "version",
            format!("`version` is {version_tag:?}, the manifest says {version:?}"),
        ));
    }
    let blake3 = image_root(&env.manifest).unwrap_or_default();
    if x != blake3 {
        return Err(Rejection::new(
            Reason::TagMismatch,
            "x",
            format!("`x` is {x:?}, the manifest's image blake3 (image.archive or image.layers) is {blake3:?}"),
        ));
    }
    // 4. Schema and policy (all violations in the text, the first one's code as the reason).
    let verified = envelope::check_contents(&env, jcs, policy, now).map_err(|violations| {
        let first = violations[0].clone();
        let all: Vec<String> = violations.iter().map(ToString::to_string).collect();
        Rejection {
            reason: first.reason,
            field: first.field,
            message: all.join("; "),
        }
    })?;
    Ok(verified)
}

/// `created_at` of an event as unix seconds.
pub fn created_at(event: &Event) -> u64 {
    event.created_at.as_secs()
}

/// A timestamp from unix seconds.
pub fn timestamp(secs: u64) -> Timestamp {
    Timestamp::from(secs)
}

/// A release that passed checks 1–4, as check 5 (§4.1 rule 5) sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The app id.
    pub app: &'a str,
    /// Its version, as signed and parsed.
    pub version_text: &'a str,
    pub version: &'a semver::Version,
    /// A hash of the signed manifest's JCS bytes: two releases of one version are the same
    /// release exactly when these are equal.
    pub jcs_hash: &'a str,
}

/// What a catalog already holds for the candidate's (DID, id).
#[derive(Debug, Clone, Copy, Default)]
pub struct Held<'a> {
    /// The accepted release of the same version, if any: (its JCS hash, its event id).
    pub same_version: Option<(&'a str, &'a str)>,
    /// The latest accepted version, if any.
    pub latest: Option<&'a semver::Version>,
}

/// Check 5's decision, which the catalog then applies (in the manner of nostr-database's
/// `index_event`, which decides and leaves the writing to the backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule5 {
    /// The same release again (another copy, another relay): nothing to write.
    Duplicate,
    /// A second body for one version: refuse it and keep it as evidence against the publisher.
    Equivocation {
        rejection: Rejection,
        /// The event id of the release it conflicts with.
        conflicts_with: String,
    },
    /// A new version below the latest: kept as history, the latest does not move.
    History,
    /// A new version above the latest (or the first): it becomes the latest.
    Latest,
}

/// §4.1 rule 5: never backwards, never two bodies for one version. Pure: the catalog reads
/// `held` from its tables and writes what the decision says.
pub fn rule5(candidate: Candidate<'_>, held: Held<'_>) -> Rule5 {
    if let Some((jcs_hash, event_id)) = held.same_version {
        if jcs_hash == candidate.jcs_hash {
            return Rule5::Duplicate;
        }
        return Rule5::Equivocation {
            rejection: Rejection::new(
                Reason::Equivocation,
                "version",
                format!(
                    "{} {} was already published with other content (event {event_id}): the publisher signed two different releases of one version",
                    candidate.app, candidate.version_text
                ),
            ),
            conflicts_with: event_id.to_owned(),
        };
    }
    match held.latest {
        Some(latest) if candidate.version.cmp_precedence(latest) != std::cmp::Ordering::Greater => {
            Rule5::History
        }
        _ => Rule5::Latest,
    }
}

#[cfg(test)]
mod rule5_tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn decide(version: &str, hash: &str, held: Held<'_>) -> Rule5 {
        let parsed = v(version);
        rule5(
            Candidate {
                app: "web",
                version_text: version,
                version: &parsed,
                jcs_hash: hash,
            },
            held,
        )
    }

    #[test]
    fn the_first_release_is_the_latest() {
        assert_eq!(decide("1.0.0", "a", Held::default()), Rule5::Latest);
    }

    #[test]
    fn higher_moves_up_lower_and_equal_precedence_are_history() {
        let latest = v("1.2.0");
        let held = Held {
            same_version: None,
            latest: Some(&latest),
        };
        assert_eq!(decide("1.3.0", "a", held), Rule5::Latest);
        assert_eq!(decide("1.1.9", "a", held), Rule5::History);
        // A pre-release sorts below its release; build metadata does not count in precedence.
        assert_eq!(decide("1.2.0-rc.1", "a", held), Rule5::History);
        assert_eq!(decide("1.2.0+other", "a", held), Rule5::History);
    }

    #[test]
    fn one_version_one_body() {
        let latest = v("1.0.0");
        let held = Held {
            same_version: Some(("hash-1", "event-1")),
            latest: Some(&latest),
        };
        assert_eq!(decide("1.0.0", "hash-1", held), Rule5::Duplicate);
        match decide("1.0.0", "hash-2", held) {
            Rule5::Equivocation {
                rejection,
                conflicts_with,
            } => {
                assert_eq!(conflicts_with, "event-1");
                assert_eq!(rejection.reason, Reason::Equivocation);
                assert_eq!(rejection.field, "version");
                assert!(
                    rejection.message.contains("event-1"),
                    "{}",
                    rejection.message
                );
            }
            other => panic!("expected equivocation, got {other:?}"),
        }
    }

    #[test]
    fn an_equivocation_of_an_old_version_is_still_one() {
        let latest = v("2.0.0");
        let held = Held {
            same_version: Some(("old", "e")),
            latest: Some(&latest),
        };
        assert!(matches!(
            decide("1.0.0", "new", held),
            Rule5::Equivocation { .. }
        ));
    }
}
