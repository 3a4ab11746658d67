//! The other Archy events of PROTOCOL.md §4: the publisher profile (§4.2) and the mirror
//! announcement (§4.3). Pure builders and parsers.

use crate::did;
use crate::identity::Identity;
use crate::jcs::canonical_bytes;
use crate::jws;
use crate::release::KIND_APP_DATA;
use anyhow::{bail, Context, Result};
use nostr_sdk::prelude::{Alphabet, Event, EventBuilder, Filter, Keys, Kind, SingleLetterTag, Tag};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `d` tag of the publisher profile.
pub const PROFILE_D: &str = "archy:publisher";
/// `t` tag of publisher profiles.
pub const PROFILE_TOPIC: &str = "archy-publisher";
/// `t` tag of mirror announcements.
pub const MIRROR_TOPIC: &str = "archy-mirror";

/// Builds the signed publisher profile (§4.2): the profile object is signed with the DID key
/// (detached JWS over its JCS bytes), the event with the Nostr key.
pub fn build_profile_event(
    identity: &Identity,
    name: &str,
    about: &str,
    website: &str,
    now: u64,
) -> Result<Event> {
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

/// Builds a mirror announcement for `blake3`, signed by the mirroring node's Nostr key.
pub fn build_mirror_event(
    keys: &Keys,
    blake3: &str,
    announcement: &MirrorAnnouncement,
) -> Result<Event> {
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
pub fn parse_mirror_event(event: &Event, blake3: &str) -> Result<MirrorAnnouncement> {
    event.verify().context("invalid event id or signature")?;
    let has = |name: &str, value: &str| {
        event.tags.iter().any(|t| {
            let s = t.as_slice();
            s.len() >= 2 && s[0] == name && s[1] == value
        })
    };
    if !(has("d", &format!("archy:mirror:{blake3}")) && has("t", MIRROR_TOPIC) && has("x", blake3))
    {
        bail!("not a mirror announcement for {blake3}");
    }
    let a: MirrorAnnouncement =
        serde_json::from_str(&event.content).context("mirror announcement content")?;
    if !crate::manifest::is_hex64(&a.endpoint) {
        bail!("mirror endpoint is not a 64-hex EndpointId");
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
