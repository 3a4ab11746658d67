//! Manifest parse (JSON or YAML) + schema/policy validation.
//!
//! Beyond "never panics": a manifest the validator passes must have a typed view, convert to
//! the orchestrator's `AppSpec`, and pass the orchestrator's own defensive re-check — the two
//! validators must agree, or a signed manifest could be accepted and then fail at install time
//! (or worse, the marketplace could pass something the orchestrator's rules exist to stop).
#![no_main]

use archy_protocol::manifest::{self, AppManifest};
use archy_marketplace::node::apps::spec_from_manifest;
use archy_marketplace_fuzz::{policy, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = manifest::parse(text) else {
        return;
    };
    let violations = manifest::validate(&raw, policy(), NOW);
    for v in &violations {
        assert!(!v.field.is_empty() && !v.rule.is_empty(), "{v:?}");
        let _ = v.to_string();
    }
    if !violations.is_empty() {
        return;
    }
    let typed = AppManifest::from_raw(&raw)
        .unwrap_or_else(|e| panic!("validated manifest has no typed view: {e}"));
    let _ = typed.semver();
    let spec = spec_from_manifest(&typed)
        .unwrap_or_else(|e| panic!("validated manifest gives no AppSpec: {e:#}"));
    spec.validate(&archy_orchestrator::Policy::default())
        .unwrap_or_else(|e| panic!("the orchestrator refuses a validated manifest: {e}"));
});
