//! Fixtures for tests in other crates (feature `testing`).

use serde_json::{json, Map, Value};

/// A valid v1 manifest (every required field, nothing optional), as a raw object.
pub fn manifest() -> Map<String, Value> {
    let v = json!({
        "schema": "archy.app/v1",
        "id": "hello-web",
        "version": "1.2.3",
        "name": "Hello",
        "summary": "A test app",
        "publisher": {
            "did": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "nostr": "a".repeat(64)
        },
        "origin": {"endpoint": "b".repeat(64), "addrs": ["127.0.0.1:4433", "[::1]:4433"]},
        "image": {
            "name": "localhost/acme/web:1.2.0",
            "id": format!("sha256:{}", "c".repeat(64)),
            "archive": {"blake3": "d".repeat(64), "size": 1024, "format": "oci-archive"}
        },
        "published_at": 1_700_000_000u64
    });
    v.as_object().unwrap().clone()
}
