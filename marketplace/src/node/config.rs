//! The node's configuration: one TOML file in the home (`config.toml`), every setting documented
//! with a safe default. `archy config show` prints the effective values.

use crate::home::Home;
use crate::manifest::PolicyConfig;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name of the configuration inside the home.
pub const CONFIG_FILE: &str = "config.toml";

/// Everything a node can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub relays: RelaysConfig,
    pub swarm: SwarmSection,
    pub trust: TrustSection,
    #[serde(with = "crate::manifest::policy_serde")]
    pub policy: PolicyConfig,
    pub apps: AppsSection,
    pub api: ApiSection,
    pub registry: RegistrySection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaysConfig {
    /// Run the node's own relay on loopback (the offline default; it serves releases publicly).
    pub embedded: bool,
    /// Where the embedded relay listens. Port 0 picks a free port once and keeps it.
    pub embedded_bind: String,
    /// Other relays to publish to and discover from (ws:// or wss://).
    pub urls: Vec<String>,
    /// How many relays must accept a published event.
    pub quorum: usize,
    /// Seconds between discovery passes (a live subscription runs in between).
    pub sync_interval_secs: u64,
}

impl Default for RelaysConfig {
    fn default() -> Self {
        RelaysConfig {
            embedded: true,
            embedded_bind: "127.0.0.1:0".into(),
            urls: Vec::new(),
            quorum: 1,
            sync_interval_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmSection {
    /// `local`: no iroh relays, direct loopback/LAN addresses (tests, offline). `internet`:
    /// iroh's defaults (public relays and discovery).
    pub network: String,
    /// Local mode's bind address (port 0 = a free port, kept across restarts).
    pub bind: String,
    /// After a verified fetch, serve the blob to others and announce it (PROTOCOL §4.3).
    pub mirror: bool,
    /// Seconds without progress after which a source counts as stalled.
    pub stall_timeout_secs: u64,
    /// Verified bytes/s a source must keep up over the stall window, or it is left for the
    /// next source (tried again last, without the floor). 0 turns the floor off.
    pub min_rate_bytes_per_sec: u64,
    /// Requests this node serves at once, as an origin or a mirror (PROTOCOL §5.2); past it a
    /// request is refused busy and its fetcher backs off and uses other sources meanwhile.
    /// At least 1. The default, [`DEFAULT_MAX_UPLOADS`], keeps every served fetcher above the
    /// fetchers' minimum rate on a modest uplink.
    pub max_uploads: usize,
    /// This node's total upload rate in bytes/s, all requests together (a home uplink's share
    /// it may use); 0 (the default) is no cap.
    pub upload_rate_bytes_per_sec: u64,
}

/// 8 uploads at once: on a 10 Mbit/s uplink (1.25 MB/s) each gets about 150 KiB/s, above
/// the 64 KiB/s minimum rate fetchers hold a source to ([`archy_swarm::DEFAULT_MIN_RATE`]), so
/// nobody served is dropped as too slow; a ninth fetcher is told busy and takes its bytes from
/// mirrors instead of pushing all nine under the floor.
pub const DEFAULT_MAX_UPLOADS: usize = 8;

impl SwarmSection {
    /// The upload limits for the swarm, refusing a `max_uploads` of 0 (an origin must always be
    /// able to finish a fetch, PROTOCOL §5.2).
    pub fn upload_limits(&self) -> anyhow::Result<archy_swarm::UploadLimits> {
        if self.max_uploads == 0 {
            anyhow::bail!(
                "[swarm] max_uploads = 0: it must be at least 1 (an origin always serves at least \
                 one request, PROTOCOL §5.2); the default is {DEFAULT_MAX_UPLOADS}"
            );
        }
        Ok(archy_swarm::UploadLimits {
            max_uploads: Some(self.max_uploads),
            rate: (self.upload_rate_bytes_per_sec > 0).then_some(self.upload_rate_bytes_per_sec),
        })
    }
}

impl Default for SwarmSection {
    fn default() -> Self {
        SwarmSection {
            network: "local".into(),
            bind: "127.0.0.1:0".into(),
            mirror: true,
            stall_timeout_secs: 10,
            min_rate_bytes_per_sec: archy_swarm::DEFAULT_MIN_RATE,
            max_uploads: DEFAULT_MAX_UPLOADS,
            upload_rate_bytes_per_sec: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustSection {
    /// Keys (npub, hex or DID) this operator trusts besides the node's own key.
    pub anchors: Vec<String>,
    /// Keys never to install from (added to the shipped denylist).
    pub blocked: Vec<String>,
    /// The lowest tier that installs without confirmation: trusted | known | unknown.
    pub install_tier: String,
    /// Apply new versions of installed apps automatically (only for publishers at
    /// `install_tier` or above); otherwise they are offered by `archy apps update`.
    pub auto_update: bool,
    /// Independent vouch paths from the anchors that make a key `trusted` when no anchor
    /// endorses it (besides its score). k fooled endorsers never make a key `trusted` while
    /// this is more than k; follows never vouch. See archy-trust's crate doc. Default 3.
    pub independent_paths: u32,
}

impl Default for TrustSection {
    fn default() -> Self {
        TrustSection {
            anchors: Vec::new(),
            blocked: Vec::new(),
            install_tier: "trusted".into(),
            auto_update: false,
            independent_paths: archy_trust::Thresholds::default().independent_paths,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsSection {
    /// Seconds between reconcile passes (a change of intent triggers one at once).
    pub reconcile_interval_secs: u64,
    /// Prefix of every podman call, e.g. ["runuser", "-u", "archy", "--"] to run apps as
    /// another (unprivileged) user. Empty: podman as the user running the node (rootless
    /// unless that user is root).
    pub podman_prefix: Vec<String>,
}

impl AppsSection {
    /// The node's one Podman client: `podman_prefix` then `podman`, each word one argument as
    /// written (never split again). The reconciler and the image exports and imports share it.
    pub fn podman(&self) -> archy_orchestrator::PodmanCmd {
        let mut argv = self.podman_prefix.clone();
        argv.push("podman".into());
        archy_orchestrator::PodmanCmd::from_argv(argv)
    }
}

impl Default for AppsSection {
    fn default() -> Self {
        AppsSection {
            reconcile_interval_secs: 15,
            podman_prefix: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Where the local API listens. Only loopback addresses are accepted.
    pub bind: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            bind: "127.0.0.1:0".into(),
        }
    }
}

/// The node's pull-only OCI registry (layered images, PROTOCOL §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// Where it listens. Only loopback addresses are accepted; port 0 picks a free port once
    /// and keeps it.
    pub bind: String,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            bind: "127.0.0.1:0".into(),
        }
    }
}

impl NodeConfig {
    /// Reads `config.toml` from the home; a missing file means all defaults.
    pub fn load(home: &Home) -> Result<NodeConfig> {
        let path = home.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not a valid Archy configuration", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the configuration (used by commands that change it, e.g. `trust anchor add`).
    pub fn save(&self, home: &Home) -> Result<()> {
        home.ensure()?;
        let path = home.join(CONFIG_FILE);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, self.to_toml())?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration is TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_limits_refuse_zero_slots_and_map_a_zero_rate_to_no_cap() {
        let mut s = SwarmSection::default();
        let l = s.upload_limits().unwrap();
        assert_eq!(l.max_uploads, Some(DEFAULT_MAX_UPLOADS));
        assert_eq!(l.rate, None);
        s.upload_rate_bytes_per_sec = 2_500_000;
        assert_eq!(s.upload_limits().unwrap().rate, Some(2_500_000));
        s.max_uploads = 0;
        let err = s.upload_limits().unwrap_err().to_string();
        assert!(err.contains("[swarm] max_uploads = 0"), "{err}");
    }

    #[test]
    fn defaults_round_trip_and_unknown_keys_are_errors() {
        let c = NodeConfig::default();
        assert_eq!(toml::from_str::<NodeConfig>(&c.to_toml()).unwrap(), c);
        assert!(toml::from_str::<NodeConfig>("[relays]\nembeded = true\n").is_err());
        let partial: NodeConfig = toml::from_str("[trust]\nauto_update = true\n").unwrap();
        assert!(partial.trust.auto_update);
        assert_eq!(partial.trust.install_tier, "trusted");
        assert!(partial.relays.embedded);
    }
}
