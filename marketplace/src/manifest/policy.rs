//! The operator's side of the policy of PROTOCOL.md §2: which capabilities and binds are allowed.

use serde::{Deserialize, Serialize};

/// What the operator allows beyond the secure defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Capabilities an app may ask for in `security.capabilities` (upper case, no `CAP_` prefix).
    pub capability_allowlist: Vec<String>,
    /// Allow `ports[].bind` addresses that are not loopback (exposes apps beyond this machine).
    pub allow_non_loopback_binds: bool,
}

impl Default for PolicyConfig {
    /// PROTOCOL §2's default allowlist; the orchestrator re-checks against the same list.
    fn default() -> Self {
        PolicyConfig {
            capability_allowlist: archy_orchestrator::spec::DEFAULT_ALLOWED_CAPS
                .iter()
                .map(|c| c.to_string())
                .collect(),
            allow_non_loopback_binds: false,
        }
    }
}

impl PolicyConfig {
    /// Whether a capability (already normalised by [`normalise_capability`]) is allowed.
    pub fn allows_capability(&self, normalised: &str) -> bool {
        self.capability_allowlist
            .iter()
            .any(|c| normalise_capability(c) == normalised)
    }
}

/// Capability names are case-insensitive and the `CAP_` prefix is optional (§2).
pub fn normalise_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned()
}

/// Loopback per §2: IPv4 127.0.0.0/8 or `::1`; an IPv4-mapped IPv6 address is *not* loopback.
pub fn is_loopback(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => *v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}
