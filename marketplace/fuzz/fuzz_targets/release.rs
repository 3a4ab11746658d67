//! Release events (PROTOCOL §4.1): decode + checks 1–4, from three angles chosen by the first
//! input byte, so the fuzzer gets past the signatures instead of dying at check 1:
//! 0. the input is event JSON from a relay (anything goes: bad ids, bad signatures, odd shapes);
//! 1. the input is the content of a correctly signed kind-30078 event (envelope parsing, JWS,
//!    key binding, tags derived from the content when it parses);
//! 2. the input is a manifest, honestly signed and published: then `check_release` must accept
//!    it exactly when the validator passes it (no check may disagree with the validator).
#![no_main]

use archy_protocol::envelope::{self, Envelope};
use archy_protocol::manifest;
use archy_protocol::release::{self, check_release, KIND_APP_DATA};
use archy_marketplace_fuzz::{policy, publisher, NOW};
use libfuzzer_sys::fuzz_target;
use nostr_sdk::prelude::{Event, EventBuilder, JsonUtil, Kind, Tag, Timestamp};
use serde_json::Value;

fn honest_tags(env: &Envelope) -> Vec<Tag> {
    let s = |p: &[&str]| {
        release::str_path(&env.manifest, p)
            .unwrap_or_default()
            .to_owned()
    };
    [
        vec![
            "d".to_owned(),
            release::d_tag(&s(&["id"]), &s(&["version"])),
        ],
        vec!["t".into(), release::RELEASE_TOPIC.into()],
        vec!["version".into(), s(&["version"])],
        vec!["did".into(), s(&["publisher", "did"])],
        vec!["x".into(), s(&["image", "archive", "blake3"])],
    ]
    .into_iter()
    .map(|t| Tag::parse(t).expect("non-empty tag"))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(event) = Event::from_json(text) {
                if let Ok(v) = check_release(&event, policy(), NOW) {
                    // Only a real signature by the named publisher gets here.
                    assert_eq!(
                        release::str_path(&v.envelope.manifest, &["publisher", "nostr"]),
                        Some(event.pubkey.to_hex().as_str())
                    );
                }
            }
        }
        1 => {
            let tags = match Envelope::from_json(text) {
                Ok(env) => honest_tags(&env),
                Err(_) => vec![Tag::parse(["t", release::RELEASE_TOPIC]).expect("tag")],
            };
            let event = EventBuilder::new(Kind::Custom(KIND_APP_DATA), text)
                .tags(tags)
                .custom_created_at(Timestamp::from(NOW))
                .sign_with_keys(publisher().nostr_keys())
                .expect("signing works");
            let _ = check_release(&event, policy(), NOW);
        }
        _ => {
            let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(text) else {
                return;
            };
            // `envelope::sign` is for manifests the CLI validated: one JCS cannot write
            // (a number like 1e999) is refused before signing, as `archy app publish` does.
            if archy_protocol::jcs::try_canonical_bytes(&Value::Object(m.clone())).is_err() {
                return;
            }
            let id = publisher();
            m.insert(
                "publisher".into(),
                serde_json::json!({"did": id.did(), "nostr": id.nostr_hex()}),
            );
            let env = envelope::sign(m, id);
            let Ok(event) = release::build_release_event(&env, id.nostr_keys()) else {
                return;
            };
            let now = release::created_at(&event);
            let violations = manifest::validate(&env.manifest, policy(), now);
            let outcome = check_release(&event, policy(), now);
            assert_eq!(
                outcome.is_ok(),
                violations.is_empty(),
                "check_release and the validator disagree: {:?} vs {violations:?}",
                outcome.err()
            );
        }
    }
});
