//! The other Archy events of PROTOCOL.md §4: the publisher profile (§4.2) and the mirror
//! announcement (§4.3). Pure builders and parsers.

use crate::did;
use crate::jcs::canonical_bytes;
use crate::jws;
use crate::keys::PublisherKeys;
use crate::release::KIND_APP_DATA;
use nostr::{Alphabet, Event, EventBuilder, Filter, Keys, Kind, SingleLetterTag, Tag};
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
}

/// `d` tag of the publisher profile.
pub const PROFILE_D: &str = "archy:publisher";
/// `t` tag of publisher profiles.
pub const PROFILE_TOPIC: &str = "archy-publisher";
/// `t` tag of mirror announcements.
pub const MIRROR_TOPIC: &str = "archy-mirror";

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
}

/// Builds the withdrawal of this node's mirror announcement of `blake3` (PROTOCOL §4.3 v2):
/// the same address (`d`), content `{"withdrawn": true}`, so it replaces the announcement.
pub fn build_mirror_withdrawal(keys: &Keys, blake3: &str) -> Result<Event, BuildError> {
    Ok(EventBuilder::new(
        Kind::Custom(KIND_APP_DATA),
        serde_json::json!({"withdrawn": true}).to_string(),
    )
    .tags([
        Tag::parse(["d", &format!("archy:mirror:{blake3}")])?,
        Tag::parse(["t", MIRROR_TOPIC])?,
        Tag::parse(["x", blake3])?,
    ])
    .sign_with_keys(keys)?)
}

/// Builds a mirror announcement for `blake3`, signed by the mirroring node's Nostr key.
pub fn build_mirror_event(
    keys: &Keys,
    blake3: &str,
    announcement: &MirrorAnnouncement,
) -> Result<Event, BuildError> {
    Ok(EventBuilder::new(
        Kind::Custom(KIND_APP_DATA),
        serde_json::to_string(announcement)?,
    )
    .tags([
        Tag::parse(["d", &format!("archy:mirror:{blake3}")])?,
        Tag::parse(["t", MIRROR_TOPIC])?,
        Tag::parse(["x", blake3])?,
    ])
    .sign_with_keys(keys)?)
}

/// The look-up filter of §4.3: `{"kinds":[30078],"#t":["archy-mirror"],"#x":[blake3]}`.
pub fn mirror_filter(blake3: &str) -> Filter {
    Filter::new()
        .kind(Kind::Custom(KIND_APP_DATA))
        .custom_tag(SingleLetterTag::lowercase(Alphabet::T), MIRROR_TOPIC)
        .custom_tag(SingleLetterTag::lowercase(Alphabet::X), blake3)
}

/// Checks and reads a mirror announcement for `blake3`: a valid event whose `d`, `t` and `x`
/// tags say so and whose content has the right shape. The announcer's key is the event pubkey.
pub fn parse_mirror_event(event: &Event, blake3: &str) -> Result<MirrorAnnouncement, MirrorError> {
    event.verify().map_err(MirrorError::Invalid)?;
    let has = |name: &str, value: &str| {
        event.tags.iter().any(|t| {
            let s = t.as_slice();
            s.len() >= 2 && s[0] == name && s[1] == value
        })
    };
    if !(has("d", &format!("archy:mirror:{blake3}")) && has("t", MIRROR_TOPIC) && has("x", blake3))
    {
        return Err(MirrorError::NotFor(blake3.to_owned()));
    }
    let a: MirrorAnnouncement =
        serde_json::from_str(&event.content).map_err(MirrorError::Content)?;
    if !archy_rules::is_hex64(&a.endpoint) {
        return Err(MirrorError::Endpoint);
    }
    Ok(a)
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
        };
        let e = build_mirror_event(&keys, &"cd".repeat(32), &a).unwrap();
        assert_eq!(parse_mirror_event(&e, &"cd".repeat(32)).unwrap(), a);
        assert!(parse_mirror_event(&e, &"ef".repeat(32)).is_err());
    }
}
