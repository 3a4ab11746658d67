//! Detached JWS (PROTOCOL §3): parsing hostile compact strings, and the sign → parse → verify
//! round trip for any payload and any `kid` (header JSON escaping included).
#![no_main]

use archy_protocol::jws::{sign_detached, DetachedJws};
use archy_marketplace_fuzz::publisher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = publisher().did_signing_key();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(jws) = DetachedJws::parse(text) {
            let _ = jws.check_kid("did:key:z#z");
            let _ = jws.verify(b"{}", &key.verifying_key());
        }
        let signed = sign_detached(data, key, text);
        let parsed = DetachedJws::parse(&signed).expect("our own JWS parses");
        assert_eq!(parsed.kid, text);
        parsed.check_kid(text).expect("kid round-trips");
        parsed
            .verify(data, &key.verifying_key())
            .expect("our own signature verifies");
    }
});
