//! Tampering with any byte of a signed envelope (manifest, JWS header or signature) makes
//! verification fail with a reason; a non-Ed25519 did:key is refused.

use archy_protocol::envelope::{self, Envelope};
use archy_protocol::keys::PublisherKeys as Identity;
use archy_protocol::manifest::PolicyConfig;
use archy_protocol::reason::Reason;
use ed25519_dalek::SigningKey;
use nostr::{Keys, SecretKey};
use serde_json::{json, Value};

fn identity() -> Identity {
    Identity::new(
        SigningKey::from_bytes(&[42u8; 32]),
        Keys::new(SecretKey::from_hex(&"11".repeat(32)).unwrap()),
    )
}

fn signed() -> Envelope {
    let id = identity();
    let m = json!({
        "schema": "archy.app/v1", "id": "tamper", "version": "1.0.0", "name": "T",
        "summary": "tamper test é", "publisher": {"did": id.did(), "nostr": id.nostr_hex()},
        "origin": {"endpoint": "ab".repeat(32), "addrs": []},
        "image": {"name": "localhost/t:1", "id": format!("sha256:{}", "cd".repeat(32)),
                  "archive": {"blake3": "ef".repeat(32), "size": 7, "format": "raw"}},
        "published_at": 1700000000
    });
    envelope::sign(m.as_object().unwrap().clone(), &id)
}

fn check(text: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    let env = Envelope::from_json(text).map_err(|v| v.to_string())?;
    envelope::verify(&env, &PolicyConfig::default(), 1700000000)
        .map(|_| ())
        .map_err(|v| {
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
}

#[test]
fn untouched_envelope_verifies() {
    check(signed().to_json().as_bytes()).unwrap();
}

#[test]
fn every_single_byte_change_is_detected() {
    let text = signed().to_json().into_bytes();
    for i in 0..text.len() {
        let mut bad = text.clone();
        bad[i] ^= 0x01;
        let err = check(&bad).expect_err(&format!(
            "a change at byte {i} ({:?}) went unnoticed",
            String::from_utf8_lossy(&bad[i.saturating_sub(10)..(i + 10).min(bad.len())])
        ));
        assert!(!err.is_empty());
    }
}

#[test]
fn tampering_gives_clear_reasons() {
    let env = signed();
    let verify =
        |e: &Envelope| envelope::verify(e, &PolicyConfig::default(), 1700000000).unwrap_err();

    let mut manifest_changed = env.clone();
    manifest_changed
        .manifest
        .insert("version".into(), json!("1.0.1"));
    let v = verify(&manifest_changed);
    assert_eq!(v[0].reason, Reason::JwsInvalid);
    assert!(v[0].message.contains("does not verify"), "{}", v[0].message);

    let mut kid_changed = env.clone();
    let other = Identity::new(
        SigningKey::from_bytes(&[7u8; 32]),
        Keys::new(SecretKey::from_hex(&"22".repeat(32)).unwrap()),
    );
    kid_changed.manifest["publisher"]["did"] = Value::from(other.did());
    let v = verify(&kid_changed);
    assert_eq!(v[0].reason, Reason::KidMismatch, "{v:?}");

    let mut not_ed25519 = env.clone();
    not_ed25519.manifest["publisher"]["did"] =
        json!("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme");
    let v = verify(&not_ed25519);
    assert_eq!(v[0].reason, Reason::Schema);
    assert!(v[0].message.contains("not Ed25519"), "{}", v[0].message);

    let mut sig_changed = env.clone();
    let (head, sig) = env.signature.split_once("..").unwrap();
    let mut sig_bytes = sig.as_bytes().to_vec();
    sig_bytes[3] = if sig_bytes[3] == b'A' { b'B' } else { b'A' };
    sig_changed.signature = format!("{head}..{}", String::from_utf8(sig_bytes).unwrap());
    assert_eq!(verify(&sig_changed)[0].reason, Reason::JwsInvalid);
}
