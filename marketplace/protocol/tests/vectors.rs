//! Committed test vectors (`tests/vectors/`): a fixed Ed25519 key, a manifest, its JCS bytes and
//! its JWS. Ed25519 is deterministic, so any implementation can check itself against these files.
//! Regenerate with `ARCHY_WRITE_VECTORS=1 cargo test -p archy-protocol --test vectors`.

use archy_protocol::keys::PublisherKeys as Identity;
use archy_protocol::{did, envelope, jcs, manifest};
use ed25519_dalek::SigningKey;
use nostr::{Keys, SecretKey};
use serde_json::{json, Value};
use std::path::PathBuf;

/// RFC 8032 §7.1 TEST 1 secret key.
const ED25519_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const NOSTR_SECRET: &str = "5c0c523f52a5b6fad39ed2403092df8cebc36318b39383bca6c00808626fab3a";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn identity() -> Identity {
    let seed: [u8; 32] = hex::decode(ED25519_SEED).unwrap().try_into().unwrap();
    Identity::new(
        SigningKey::from_bytes(&seed),
        Keys::new(SecretKey::from_hex(NOSTR_SECRET).unwrap()),
    )
}

fn vector_manifest(id: &Identity) -> serde_json::Map<String, Value> {
    json!({
        "schema": "archy.app/v1",
        "id": "hello-web",
        "version": "1.2.0",
        "name": "Hello Wörld 👋",
        "summary": "Test vector: unicode, key order and numbers must canonicalise identically",
        "publisher": {"did": id.did(), "nostr": id.nostr_hex()},
        "origin": {"endpoint": "4b".repeat(32), "addrs": ["127.0.0.1:4433"]},
        "image": {
            "name": "localhost/acme/web:1.2.0",
            "id": format!("sha256:{}", "ab".repeat(32)),
            "archive": {"blake3": "cd".repeat(32), "size": 1048576, "format": "oci-archive"}
        },
        "ports": [{"container": 8080, "host": 18080}],
        "published_at": 1767225600,
        "x-unknown": {"€": 1, "\r": 2, "1": 3, "ö": [true, null, "\u{0007}"]}
    })
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn vectors_match_committed_files() {
    let id = identity();
    let manifest = vector_manifest(&id);
    let jcs_bytes = jcs::canonical_bytes(&Value::Object(manifest.clone()));
    let env = envelope::sign(manifest.clone(), &id);
    let key = json!({
        "ed25519_seed_hex": ED25519_SEED,
        "ed25519_public_hex": hex::encode(id.did_signing_key().verifying_key().as_bytes()),
        "did": id.did(),
        "kid": did::verification_method(&id.did()),
        "nostr_secret_hex": NOSTR_SECRET,
        "nostr_public_hex": id.nostr_hex(),
    });
    let files: [(&str, Vec<u8>); 5] = [
        (
            "key.json",
            format!("{}\n", serde_json::to_string_pretty(&key).unwrap()).into_bytes(),
        ),
        (
            "manifest.json",
            format!("{}\n", serde_json::to_string_pretty(&manifest).unwrap()).into_bytes(),
        ),
        ("manifest.jcs", jcs_bytes.clone()),
        ("signature.jws", env.signature.clone().into_bytes()),
        (
            "envelope.json",
            format!("{}\n", env.to_json_pretty()).into_bytes(),
        ),
    ];
    if std::env::var_os("ARCHY_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir().join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &files {
        let committed =
            std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("tests/vectors/{name}: {e}"));
        assert_eq!(
            &committed, bytes,
            "tests/vectors/{name} differs from what the code makes"
        );
    }
    // The committed manifest.json, re-canonicalised, gives the committed JCS bytes.
    let reread: Value =
        serde_json::from_slice(&std::fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(jcs::canonical_bytes(&reread), jcs_bytes);
    // And the envelope verifies under the full check.
    let parsed =
        envelope::Envelope::from_json(&String::from_utf8(files[4].1.clone()).unwrap()).unwrap();
    envelope::verify(&parsed, &manifest::PolicyConfig::default(), 1767225600).unwrap();
}
