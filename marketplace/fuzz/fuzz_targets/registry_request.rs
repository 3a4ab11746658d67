//! The node's OCI registry's request parsing and the layered-image checks of child 0 (issue
//! 15): hostile bytes give a clean refusal, never a panic. Input: `METHOD\nPATH\nRANGE\n` then
//! the rest as an image manifest. A route that parses names a valid repository and digest and
//! re-parses from its canonical path to itself; a range that parses lies inside the blob.
#![no_main]

use archy_oci::registry::{self, is_name, Route};
use archy_oci::LayerPlan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let method = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let range = lines.next();
    let rest = lines.next().unwrap_or_default();
    if let Ok((m, route)) = registry::route(method, path) {
        let canonical = match &route {
            Route::Base => "/v2/".to_owned(),
            Route::Manifest { name, digest } => {
                assert!(is_name(name));
                format!("/v2/{name}/manifests/{digest}")
            }
            Route::Blob { name, digest } => {
                assert!(is_name(name));
                format!("/v2/{name}/blobs/{digest}")
            }
        };
        let again = registry::route(method, &canonical).expect("a canonical path routes");
        assert_eq!(again, (m, route));
    }
    let size = data.len() as u64;
    if let Ok(Some(r)) = registry::parse_range(range, size) {
        assert!(r.start < r.end && r.end <= size, "{r:?} of {size}");
    }
    let children = data.first().map_or(2, |b| usize::from(*b));
    let _ = LayerPlan::from_manifest(rest.as_bytes(), children, "sha256:00", size);
    let _ = LayerPlan::from_held(rest.as_bytes(), children);
});
