//! The operator's side of the policy of PROTOCOL.md §2: which capabilities and binds are
//! allowed. The one policy type is the rule book's [`archy_rules::Policy`] (the orchestrator
//! re-checks with the same value); this module gives it its `config.toml [policy]` form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the operator allows beyond the secure defaults (`config.toml [policy]`).
pub type PolicyConfig = archy_rules::Policy;

/// The TOML/JSON shape of [`PolicyConfig`]: `#[serde(with = "archy_protocol::manifest::policy_serde")]`.
pub mod policy_serde {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Form {
        /// Capabilities an app may ask for in `security.capabilities` (any case, `CAP_` optional).
        capability_allowlist: Vec<String>,
        /// Allow `ports[].bind` addresses that are not loopback.
        allow_non_loopback_binds: bool,
    }

    impl Default for Form {
        fn default() -> Self {
            let p = PolicyConfig::default();
            Form {
                capability_allowlist: p.capability_allowlist,
                allow_non_loopback_binds: p.allow_non_loopback_binds,
            }
        }
    }

    pub fn serialize<S: Serializer>(p: &PolicyConfig, s: S) -> Result<S::Ok, S::Error> {
        Form {
            capability_allowlist: p.capability_allowlist.clone(),
            allow_non_loopback_binds: p.allow_non_loopback_binds,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PolicyConfig, D::Error> {
        let f = Form::deserialize(d)?;
        Ok(PolicyConfig {
            capability_allowlist: f.capability_allowlist,
            allow_non_loopback_binds: f.allow_non_loopback_binds,
        })
    }
}
