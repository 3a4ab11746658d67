//! Publishers and events for tests: honest releases, and every kind of hostile event the
//! checks of PROTOCOL.md §4.1 must reject.

use archy_marketplace::envelope::{self, Envelope};
use archy_marketplace::identity::Identity;
use archy_marketplace::release::{self, KIND_APP_DATA};
use ed25519_dalek::SigningKey;
use nostr_sdk::prelude::{Event, EventBuilder, Keys, Kind, SecretKey, Tag, Timestamp};
use serde_json::{json, Map, Value};

/// A publisher with fixed keys derived from a seed byte (deterministic tests).
pub struct Publisher {
    pub identity: Identity,
}

impl Publisher {
    pub fn new(seed: u8) -> Publisher {
        let nostr_secret = hex::encode(blake3::hash(&[b'n', seed]).as_bytes());
        Publisher {
            identity: Identity::from_keys(
                SigningKey::from_bytes(blake3::hash(&[b'd', seed]).as_bytes()),
                Keys::new(SecretKey::from_hex(&nostr_secret).expect("a valid secp256k1 key")),
            ),
        }
    }

    pub fn keys(&self) -> &Keys {
        self.identity.nostr_keys()
    }

    pub fn did(&self) -> String {
        self.identity.did()
    }

    /// A valid manifest of app `id` at `version`.
    pub fn manifest(&self, id: &str, version: &str) -> Map<String, Value> {
        json!({
            "schema": "archy.app/v1",
            "id": id,
            "version": version,
            "name": format!("App {id}"),
            "summary": format!("Test app {id} {version}"),
            "publisher": {"did": self.did(), "nostr": self.identity.nostr_hex()},
            "origin": {"endpoint": "ab".repeat(32), "addrs": ["127.0.0.1:4433"]},
            "image": {
                "name": format!("localhost/test/{id}:{version}"),
                "id": format!("sha256:{}", "cd".repeat(32)),
                "archive": {"blake3": "ef".repeat(32), "size": 1024, "format": "oci-archive"}
            },
            "ports": [{"container": 8080, "host": 18080}],
            "published_at": 1_700_000_000u64
        })
        .as_object()
        .expect("object")
        .clone()
    }

    pub fn sign(&self, manifest: Map<String, Value>) -> Envelope {
        envelope::sign(manifest, &self.identity)
    }

    /// The honest release event of a manifest.
    pub fn release(&self, manifest: Map<String, Value>) -> Event {
        release::build_release_event(&self.sign(manifest), self.keys()).expect("signing works")
    }

    /// The release event of `id@version`.
    pub fn release_of(&self, id: &str, version: &str) -> Event {
        self.release(self.manifest(id, version))
    }

    /// A correctly signed kind-30078 event with arbitrary content, tags and time.
    pub fn raw_event(&self, content: String, tags: Vec<Vec<String>>, created_at: u64) -> Event {
        let tags: Vec<Tag> = tags
            .into_iter()
            .map(|t| Tag::parse(t).expect("a non-empty tag"))
            .collect();
        EventBuilder::new(Kind::Custom(KIND_APP_DATA), content)
            .tags(tags)
            .custom_created_at(Timestamp::from(created_at))
            .sign_with_keys(self.keys())
            .expect("signing works")
    }

    /// The honest tags of an envelope, as strings, for tests that change one of them.
    pub fn tags_of(env: &Envelope) -> Vec<Vec<String>> {
        let m = &env.manifest;
        let s = |p: &[&str]| release::str_path(m, p).unwrap_or_default().to_owned();
        vec![
            vec!["d".into(), release::d_tag(&s(&["id"]), &s(&["version"]))],
            vec!["t".into(), "archy-app".into()],
            vec!["version".into(), s(&["version"])],
            vec!["did".into(), s(&["publisher", "did"])],
            vec![
                "x".into(),
                release::image_root(m).unwrap_or_default().to_owned(),
            ],
        ]
    }
}

/// The JSON of an event whose content was changed after signing: its id and signature no
/// longer match. Only a relay that stores anything will pass it on.
pub fn with_bad_signature(event: &Event) -> String {
    let mut v: Value =
        serde_json::from_str(&nostr_sdk::prelude::JsonUtil::as_json(event)).expect("json");
    let sig = v["sig"].as_str().expect("sig").to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    v["sig"] = Value::from(format!("{flipped}{}", &sig[1..]));
    v.to_string()
}

/// A signed event of `kind` with these tags (as strings) at `created_at`.
pub fn signed(keys: &Keys, kind: u16, tags: Vec<Vec<String>>, created_at: u64) -> Event {
    let tags: Vec<Tag> = tags
        .into_iter()
        .map(|t| Tag::parse(t).expect("a non-empty tag"))
        .collect();
    EventBuilder::new(Kind::from(kind), "")
        .tags(tags)
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(keys)
        .expect("signing works")
}

/// A NIP-32 label `value` (endorse, distrust) in the `archy.trust` namespace about `targets`
/// (64-hex keys).
pub fn trust_label(keys: &Keys, value: &str, targets: &[String], created_at: u64) -> Event {
    let mut tags = vec![
        vec!["L".to_string(), "archy.trust".to_string()],
        vec![
            "l".to_string(),
            value.to_string(),
            "archy.trust".to_string(),
        ],
    ];
    tags.extend(targets.iter().map(|t| vec!["p".to_string(), t.clone()]));
    signed(keys, 1985, tags, created_at)
}
