//! The local API's request body (`POST /v1/rpc`): hostile bytes must give a clean error, and a
//! request that parses must survive serialise → parse unchanged (the CLI sends what the node
//! reads back).
#![no_main]

use archy_marketplace::node::api::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        let again = serde_json::to_vec(&req).expect("a request serialises");
        let back = parse_request(&again)
            .unwrap_or_else(|e| panic!("a serialised request does not parse: {e}"));
        assert_eq!(back, req);
    }
});
