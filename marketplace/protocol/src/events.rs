//! The other Archy events of PROTOCOL.md §4: the publisher profile (§4.2) and the mirror
//! announcement (§4.3). Pure builders and parsers.

use crate::did;
use crate::jcs::canonical_bytes;
use crate::jws;
use crate::keys::PublisherKeys;
use crate::release::KIND_APP_DATA;
use nostr::{Alphabet, Event, EventBuilder, Filter, Keys, Kind, SingleLetterTag, Tag, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

/// Why an event could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("building a tag: {0}")]
    Tag(#[from] nostr::event::tag::Error),
    #[error("signing the event: {0}")]
    Sign(#[from] nostr::event::builder::Error),
    #[error("encoding the content: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why an event is not a usable mirror announcement (§4.3).
#[derive(Debug, Error)]
pub enum MirrorError {
    #[error("invalid event id or signature: {0}")]
    Invalid(nostr::event::Error),
    #[error("not a mirror announcement for {0}")]
    NotFor(String),
    #[error("mirror announcement content: {0}")]
    Content(serde_json::Error),
    #[error("mirror endpoint is not a 64-hex EndpointId")]
    Endpoint,
    #[error("the mirror announcement was withdrawn")]
    Withdrawn,
}

/// `d` tag of the publisher profile.
pub const PROFILE_D: &str = "archy:publisher";
/// `t` tag of publisher profiles.
pub const PROFILE_TOPIC: &str = "archy-publisher";
/// `t` tag of mirror announcements.
pub const MIRROR_TOPIC: &str = "archy-mirror";
/// How long a mirror announcement stands (its NIP-40 `expiration` tag, PROTOCOL §4.3: at most
/// 7 days ahead): a node that vanishes drops out of look-ups a week later at most, and a
/// running node re-announces its mirrors well before (every day).
pub const MIRROR_TTL_SECS: u64 = 7 * 24 * 3600;

/// Builds the signed publisher profile (§4.2): the profile object is signed with the DID key
/// (detached JWS over its JCS bytes), the event with the Nostr key.
pub fn build_profile_event(
    identity: &PublisherKeys,
    name: &str,
    about: &str,
    website: &str,
    now: u64,
) -> Result<Event, BuildError> {
    let did = identity.did();
    let profile = json!({
        "did": did,
        "nostr": identity.nostr_hex(),
        "name": name,
        "about": about,
        "website": website,
        "created_at": now,
    });
    let signature = jws::sign_detached(
        &canonical_bytes(&profile),
        identity.did_signing_key(),
        &did::verification_method(&did),
    );
    let content = json!({"profile": profile, "signature": signature}).to_string();
    Ok(EventBuilder::new(Kind::Custom(KIND_APP_DATA), content)
        .tags([
            Tag::parse(["d", PROFILE_D])?,
            Tag::parse(["t", PROFILE_TOPIC])?,
            Tag::parse(["did", &did])?,
        ])
        .sign_with_keys(identity.nostr_keys())?)
}

/// Where a mirror serves a blob (the content of a §4.3 announcement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorAnnouncement {
    pub endpoint: String,
    pub addrs: Vec<String>,
    /// (v2) The mirror is still fetching: it serves the chunk groups it has verified (a
    /// fetcher asks which with an observe request) and re-announces without it when complete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// The most `x` tags an announcement carries: the root and up to 62 children (§4.3 v2).
pub const MAX_MIRROR_X: usize = 63;

/// A checked mirror announcement: where, and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorOffer {
    pub announcement: MirrorAnnouncement,
    /// The blob the announcement is about (its `d` tag): a layered image's HashSeq root.
    pub root: String,
    /// Every blob it is found under (its `x` tags): the root and, for a layered image, each
    /// child.
    pub blobs: Vec<String>,
}

/// Builds the withdrawal of this node's mirror announcement of `blake3` (PROTOCOL §4.3 v2):
/// the same address (`d`), content `{"withdrawn": true}`, so it replaces the announcement
/// (`at`, unix seconds, must be later than the announcement's: a relay keeps one event per
/// address and refuses one that is not newer).
pub fn build_mirror_withdrawal(keys: &Keys, blake3: &str, at: u64) -> Result<Event, BuildError> {
    Ok(EventBuilder::new(
        Kind::Custom(KIND_APP_DATA),
        serde_json::json!({"withdrawn": true}).to_string(),
    )
    .tags([
        Tag::parse(["d", &format!("archy:mirror:{blake3}")])?,
        Tag::parse(["t", MIRROR_TOPIC])?,
        Tag::parse(["x", blake3])?,
    ])
    .custom_created_at(Timestamp::from_secs(at))
    .sign_with_keys(keys)?)
}

/// Builds a mirror announcement for `blake3`, signed by the mirroring node's Nostr key.
/// `children` are a layered image's parts when `blake3` is its HashSeq root (§4.3 v2: an `x`
/// tag for each, so a shared layer is found under either image); repeats are written once and
/// at most [`MAX_MIRROR_X`] `x` tags in all. `at` (unix seconds) must be later than this
/// node's previous event for the blob (the partial announcement a complete one replaces).
pub fn build_mirror_event(
    keys: &Keys,
    blake3: &str,
    children: &[String],
    announcement: &MirrorAnnouncement,
    at: u64,
) -> Result<Event, BuildError> {
    let mut xs: Vec<&str> = vec![blake3];
    for c in children {
        if xs.len() == MAX_MIRROR_X {
            break;
        }
        if !xs.contains(&c.as_str()) {
            xs.push(c);
        }
    }
    let mut tags = vec![
        Tag::parse(["d", &format!("archy:mirror:{blake3}")])?,
        Tag::parse(["t", MIRROR_TOPIC])?,
    ];
    for x in xs {
        tags.push(Tag::parse(["x", x])?);
    }
    tags.push(Tag::expiration(Timestamp::from_secs(
        at.saturating_add(MIRROR_TTL_SECS),
    )));
    Ok(EventBuilder::new(
        Kind::Custom(KIND_APP_DATA),
        serde_json::to_string(announcement)?,
    )
    .tags(tags)
    .custom_created_at(Timestamp::from_secs(at))
    .sign_with_keys(keys)?)
}

/// The look-up filter of §4.3: `{"kinds":[30078],"#t":["archy-mirror"],"#x":[blake3]}`.
pub fn mirror_filter(blake3: &str) -> Filter {
    mirror_filter_any([blake3])
}

/// One look-up for several blobs (a layered image's root and parts): announcements whose `x`
/// tags name any of them.
pub fn mirror_filter_any<'a>(blobs: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::new()
        .kind(Kind::Custom(KIND_APP_DATA))
        .custom_tag(SingleLetterTag::lowercase(Alphabet::T), MIRROR_TOPIC)
        .custom_tags(SingleLetterTag::lowercase(Alphabet::X), blobs)
}

/// Checks and reads a mirror announcement for `blake3`: a valid event tagged `t` archy-mirror
/// with an `x` tag for `blake3` and a `d` tag `archy:mirror:<root>` (the blob itself, or the
/// HashSeq root it is a part of, §4.3 v2), whose content has the right shape. The announcer's
/// key is the event pubkey. A withdrawal (`{"withdrawn": true}`) is not an offer.
pub fn parse_mirror_event(event: &Event, blake3: &str) -> Result<MirrorOffer, MirrorError> {
    event.verify().map_err(MirrorError::Invalid)?;
    let values = |name: &str| -> Vec<String> {
        event
            .tags
            .iter()
            .filter_map(|t| {
                let s = t.as_slice();
                (s.len() >= 2 && s[0] == name).then(|| s[1].clone())
            })
            .collect()
    };
    let blobs = values("x");
    let root = values("d")
        .into_iter()
        .find_map(|d| d.strip_prefix("archy:mirror:").map(str::to_owned));
    let root = match root {
        Some(r)
            if values("t").iter().any(|t| t == MIRROR_TOPIC)
                && blobs.iter().any(|x| x == blake3)
                && archy_rules::is_hex64(&r)
                && blobs.contains(&r) =>
        {
            r
        }
        _ => return Err(MirrorError::NotFor(blake3.to_owned())),
    };
    if serde_json::from_str::<serde_json::Value>(&event.content)
        .is_ok_and(|v| v.get("withdrawn") == Some(&serde_json::Value::Bool(true)))
    {
        return Err(MirrorError::Withdrawn);
    }
    let announcement: MirrorAnnouncement =
        serde_json::from_str(&event.content).map_err(MirrorError::Content)?;
    if !archy_rules::is_hex64(&announcement.endpoint) {
        return Err(MirrorError::Endpoint);
    }
    Ok(MirrorOffer {
        announcement,
        root,
        blobs,
    })
}

/// The discovery filter of releases: `{"kinds":[30078],"#t":["archy-app"]}`.
pub fn release_filter() -> Filter {
    Filter::new().kind(Kind::Custom(KIND_APP_DATA)).custom_tag(
        SingleLetterTag::lowercase(Alphabet::T),
        crate::release::RELEASE_TOPIC,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_round_trip_and_wrong_hash() {
        let keys = Keys::generate();
        let a = MirrorAnnouncement {
            endpoint: "ab".repeat(32),
            addrs: vec!["127.0.0.1:1".into()],
            partial: false,
        };
        let e = build_mirror_event(&keys, &"cd".repeat(32), &[], &a, 1).unwrap();
        assert!(
            !e.content.contains("partial"),
            "a complete mirror's content is the v1 shape"
        );
        assert_eq!(
            e.tags.expiration(),
            Some(&Timestamp::from_secs(1 + MIRROR_TTL_SECS)),
            "a NIP-40 expiration, 7 days after the event"
        );
        let offer = parse_mirror_event(&e, &"cd".repeat(32)).unwrap();
        assert_eq!(offer.announcement, a);
        assert_eq!(offer.root, "cd".repeat(32));
        assert!(parse_mirror_event(&e, &"ef".repeat(32)).is_err());
    }

    #[test]
    fn a_layered_announcement_is_found_under_each_part_and_says_partial() {
        let keys = Keys::generate();
        let (root, layer) = ("11".repeat(32), "22".repeat(32));
        let a = MirrorAnnouncement {
            endpoint: "ab".repeat(32),
            addrs: vec![],
            partial: true,
        };
        // A repeated child (a layer that appears twice) is tagged once.
        let e = build_mirror_event(&keys, &root, &[layer.clone(), layer.clone()], &a, 1).unwrap();
        let xs: Vec<_> = e
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] == "x")
            .map(|t| t.as_slice()[1].clone())
            .collect();
        assert_eq!(xs, [root.clone(), layer.clone()]);
        let by_layer = parse_mirror_event(&e, &layer).unwrap();
        assert_eq!(by_layer.root, root, "the d tag names the root");
        assert!(by_layer.announcement.partial);
        assert!(e.content.contains(r#""partial":true"#));
        let many: Vec<String> = (0..100).map(|i| format!("{i:064x}")).collect();
        let e = build_mirror_event(&keys, &root, &many, &a, 1).unwrap();
        assert_eq!(
            e.tags.iter().filter(|t| t.as_slice()[0] == "x").count(),
            MAX_MIRROR_X
        );
    }

    #[test]
    fn a_withdrawal_is_no_offer() {
        let keys = Keys::generate();
        let e = build_mirror_withdrawal(&keys, &"cd".repeat(32), 1).unwrap();
        assert!(matches!(
            parse_mirror_event(&e, &"cd".repeat(32)),
            Err(MirrorError::Withdrawn)
        ));
    }
}
