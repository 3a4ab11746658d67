//! The orchestrator's own input type, [`AppSpec`], its validation, and the spec hash.
//!
//! The node converts a verified manifest into an `AppSpec`; the orchestrator never sees Nostr,
//! DIDs or iroh. Validation here is *defensive*: the caller has already enforced the operator's
//! policy, but nothing that could give a container more power than the spec says may reach
//! Podman even if the caller has a bug. Unknown fields are refused (`deny_unknown_fields`), so a
//! `"privileged": true` smuggled into the JSON fails to parse instead of being silently dropped.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Capabilities the orchestrator accepts by default (PROTOCOL.md §2 default allowlist).
pub const DEFAULT_ALLOWED_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
];

/// Capabilities that amount to `--privileged` (escape or host control). Refused even if an
/// operator puts them in the allowlist: the orchestrator is the last line before Podman.
pub const NEVER_ALLOWED_CAPS: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PTRACE",
    "SYS_BOOT",
    "SYS_TIME",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "NET_ADMIN",
    "BPF",
    "PERFMON",
    "SYSLOG",
    "LINUX_IMMUTABLE",
];

/// What an app needs to run. Serialized with serde; unknown fields are an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// App name, `^[a-z][a-z0-9-]{1,62}$` (container, volume and secret names derive from it).
    pub name: String,
    /// Who publishes the app (the node passes the publisher's DID; opaque here). The app's
    /// data belongs to (`publisher`, `name`): its volumes and secrets carry both as labels, and
    /// another publisher's app of the same name never mounts them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub publisher: String,
    /// Version shown to the user and put on the `archy.version` label.
    pub version: String,
    /// Image reference the caller loaded into Podman, e.g. `localhost/acme/web:1.2.0`.
    pub image: String,
    /// Expected image id (`sha256:<64-hex>` or bare hex). When set, the container is created
    /// from exactly this id, so a re-tagged reference can never swap the code under an app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated_secrets: Vec<SecretSpec>,
    /// Linux capabilities added after `--cap-drop=ALL` (normalised: upper case, no `CAP_`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub read_only_root: bool,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u32,
    /// Apps (by name) that must be running before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Overrides the image's command when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

fn default_grace() -> u32 {
    30
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub container: u16,
    pub host: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// Host address the port is published on; loopback unless the operator allows more.
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
}

fn default_bind() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// App-scoped storage: Podman named volume `archy_<app>_<name>` ([`crate::names`]) at `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    pub target: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    /// 16 random bytes, hex (32 characters).
    Hex16,
    /// 32 random bytes, hex (64 characters).
    Hex32,
    /// 32 random bytes, standard base64.
    Base64,
}

/// A secret the orchestrator generates once per app and hands to the container as `env`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    pub kind: SecretKind,
    pub env: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU quota as a decimal string ("0.5", "2"), kept as text so the spec hash is exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.memory_mb.is_none() && self.cpus.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// GET `path` on the host side of the published `port`; 2xx/3xx is healthy.
    Http,
    /// A TCP connect to the host side of the published `port`.
    Tcp,
    /// `podman exec <container> <command>` exits 0.
    Exec,
}

/// Run by the reconciler (not Podman's timer) after each create/start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthKind,
    /// Container port (must be published in `ports`) for http/tcp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_interval() -> u32 {
    1
}
fn default_timeout() -> u32 {
    3
}
fn default_retries() -> u32 {
    10
}

/// The user's wish for an app. Persisted before it is acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    Running,
    /// The user stopped it: the reconciler never starts it again on its own.
    Stopped,
    /// No container; volumes and secrets are kept for a reinstall.
    Uninstalled,
    /// No container, volumes or secrets; the record is deleted once done.
    Purged,
}

/// Operator policy the orchestrator re-checks before anything reaches Podman.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Normalised capability names an app may declare.
    pub allowed_capabilities: Vec<String>,
    /// Allow publishing ports on non-loopback addresses.
    pub allow_non_loopback_bind: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_capabilities: DEFAULT_ALLOWED_CAPS.iter().map(|s| s.to_string()).collect(),
            allow_non_loopback_bind: false,
        }
    }
}

/// Upper case, without the `CAP_` prefix.
pub fn normalize_capability(cap: &str) -> String {
    let up = cap.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
}

fn policy(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Policy {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `^[a-z][a-z0-9-]{min-1,max-1}$`
fn is_id_like(s: &str, min: usize, max: usize) -> bool {
    let b = s.as_bytes();
    b.len() >= min
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_env_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // `::ffff:127.0.0.1` is deliberately not loopback (PROTOCOL.md §2).
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Absolute, not `/`, no empty, `.` or `..` segment.
fn valid_target(t: &str) -> bool {
    t.starts_with('/')
        && t.len() > 1
        && t[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

impl AppSpec {
    /// A minimal spec; fill the other fields directly.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        image: impl Into<String>,
    ) -> Self {
        AppSpec {
            name: name.into(),
            publisher: String::new(),
            version: version.into(),
            image: image.into(),
            image_id: None,
            ports: vec![],
            volumes: vec![],
            env: BTreeMap::new(),
            generated_secrets: vec![],
            capabilities: vec![],
            read_only_root: false,
            resources: Resources::default(),
            health_check: None,
            stop_grace_secs: default_grace(),
            dependencies: vec![],
            command: vec![],
        }
    }

    /// Podman container name.
    pub fn container_name(&self) -> String {
        container_name(&self.name)
    }

    /// Podman volume name for one of this app's volumes.
    pub fn volume_name(&self, volume: &str) -> String {
        volume_name(&self.name, volume)
    }

    /// BLAKE3 (hex) of the canonical JSON of the spec (object keys sorted, no whitespace).
    /// Keys are sorted by our own serializer, not serde_json's map type, so the hash does not
    /// change if another crate in the build enables serde_json's `preserve_order`.
    pub fn spec_hash(&self) -> String {
        let value = serde_json::to_value(self).expect("AppSpec serializes");
        let mut out = String::new();
        canonical_json(&value, &mut out);
        blake3::hash(out.as_bytes()).to_hex().to_string()
    }

    /// The host port and bind address that publish `container_port` (tcp).
    pub fn published(&self, container_port: u16) -> Option<&PortSpec> {
        self.ports
            .iter()
            .find(|p| p.container == container_port && p.protocol == Protocol::Tcp)
    }

    /// Defensive policy re-check; the error names the offending field.
    pub fn validate(&self, rules: &Policy) -> Result<(), Error> {
        if !is_id_like(&self.name, 2, 63) {
            return Err(policy_err_name(&self.name));
        }
        if self.publisher.len() > 512
            || self
                .publisher
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(policy(
                "publisher",
                "must be at most 512 characters without spaces",
            ));
        }
        if self.version.is_empty() || self.version.len() > 128 || has_control(&self.version) {
            return Err(policy("version", "must be 1-128 printable characters"));
        }
        if self.image.is_empty()
            || self.image.starts_with('-')
            || self
                .image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(policy("image", "must be an image reference without spaces"));
        }
        if let Some(id) = &self.image_id {
            let hex = id.strip_prefix("sha256:").unwrap_or(id);
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            {
                return Err(policy("image_id", "must be sha256:<64 lowercase hex>"));
            }
        }
        if self.ports.len() > 16 {
            return Err(policy("ports", "at most 16"));
        }
        let mut host_ports = std::collections::BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.container == 0 {
                return Err(policy(format!("ports[{i}].container"), "must be 1-65535"));
            }
            if p.host < 1024 {
                return Err(policy(format!("ports[{i}].host"), "must be 1024-65535"));
            }
            if !host_ports.insert((p.host, p.protocol.as_str(), p.bind)) {
                return Err(policy(format!("ports[{i}].host"), "published twice"));
            }
            if !is_loopback(&p.bind) && !rules.allow_non_loopback_bind {
                return Err(policy(
                    format!("ports[{i}].bind"),
                    format!(
                        "{} is not loopback and the operator allows only loopback",
                        p.bind
                    ),
                ));
            }
        }
        if self.volumes.len() > 16 {
            return Err(policy("volumes", "at most 16"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            // A name with '/' would make Podman bind-mount a host path: refuse it here.
            if !is_id_like(&v.name, 1, 63) {
                return Err(policy(
                    format!("volumes[{i}].name"),
                    "must match ^[a-z][a-z0-9-]{0,62}$ (host paths are not allowed)",
                ));
            }
            if !names.insert(&v.name) {
                return Err(policy(
                    format!("volumes[{i}].name"),
                    "duplicate volume name",
                ));
            }
            if !valid_target(&v.target) || v.target.contains(':') || has_control(&v.target) {
                return Err(policy(
                    format!("volumes[{i}].target"),
                    "must be absolute, not `/`, without empty, `.` or `..` segments or `:`",
                ));
            }
        }
        if self.env.len() > 64 {
            return Err(policy("env", "at most 64 variables"));
        }
        for (k, v) in &self.env {
            if !is_env_key(k) {
                return Err(policy(
                    format!("env.{k}"),
                    "key must match ^[A-Za-z_][A-Za-z0-9_]*$",
                ));
            }
            if v.contains('\0') {
                return Err(policy(format!("env.{k}"), "value contains NUL"));
            }
        }
        if self.generated_secrets.len() > 16 {
            return Err(policy("generated_secrets", "at most 16"));
        }
        let mut secret_names = std::collections::BTreeSet::new();
        for (i, s) in self.generated_secrets.iter().enumerate() {
            if !is_id_like(&s.name, 1, 63) {
                return Err(policy(
                    format!("generated_secrets[{i}].name"),
                    "must match ^[a-z][a-z0-9-]{0,62}$",
                ));
            }
            if !secret_names.insert(&s.name) {
                return Err(policy(format!("generated_secrets[{i}].name"), "duplicate"));
            }
            if !is_env_key(&s.env) {
                return Err(policy(
                    format!("generated_secrets[{i}].env"),
                    "must match ^[A-Za-z_][A-Za-z0-9_]*$",
                ));
            }
            if self.env.contains_key(&s.env) {
                return Err(policy(
                    format!("generated_secrets[{i}].env"),
                    "also set in `env`; a secret must not be overridden",
                ));
            }
        }
        for (i, cap) in self.capabilities.iter().enumerate() {
            let n = normalize_capability(cap);
            if NEVER_ALLOWED_CAPS.contains(&n.as_str()) {
                return Err(policy(
                    format!("capabilities[{i}]"),
                    format!("{n} is equivalent to privileged mode and is never granted"),
                ));
            }
            if !rules
                .allowed_capabilities
                .iter()
                .any(|a| normalize_capability(a) == n)
            {
                return Err(policy(
                    format!("capabilities[{i}]"),
                    format!("{n} is not in the operator's allowlist"),
                ));
            }
        }
        if let Some(m) = self.resources.memory_mb {
            if m < 6 {
                return Err(policy(
                    "resources.memory_mb",
                    "must be at least 6 (Podman's minimum)",
                ));
            }
        }
        if let Some(c) = &self.resources.cpus {
            let ok = !c.is_empty()
                && c.split('.').count() <= 2
                && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.')
                && c.parse::<f64>()
                    .map(|f| f > 0.0 && f <= 1024.0)
                    .unwrap_or(false);
            if !ok {
                return Err(policy(
                    "resources.cpus",
                    "must be a positive decimal such as \"0.5\"",
                ));
            }
        }
        if let Some(h) = &self.health_check {
            match h.kind {
                HealthKind::Http | HealthKind::Tcp => {
                    let Some(port) = h.port else {
                        return Err(policy(
                            "health_check.port",
                            "required for http and tcp checks",
                        ));
                    };
                    if self.published(port).is_none() {
                        return Err(policy(
                            "health_check.port",
                            format!("container port {port} is not published over tcp in `ports`"),
                        ));
                    }
                    if let Some(path) = &h.path {
                        if !path.starts_with('/')
                            || path.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(policy(
                                "health_check.path",
                                "must start with `/`, no spaces",
                            ));
                        }
                    }
                }
                HealthKind::Exec => {
                    if h.command.is_empty() {
                        return Err(policy("health_check.command", "required for exec checks"));
                    }
                }
            }
            if h.timeout_secs == 0 || h.retries == 0 {
                return Err(policy(
                    "health_check",
                    "timeout_secs and retries must be at least 1",
                ));
            }
        }
        if self.stop_grace_secs > 3600 {
            return Err(policy("stop_grace_secs", "at most 3600"));
        }
        for (i, d) in self.dependencies.iter().enumerate() {
            if !is_id_like(d, 2, 63) {
                return Err(policy(format!("dependencies[{i}]"), "not a valid app name"));
            }
            if d == &self.name {
                return Err(policy(
                    format!("dependencies[{i}]"),
                    "an app cannot depend on itself",
                ));
            }
        }
        if self.command.len() > 64 {
            return Err(policy("command", "at most 64 items"));
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(policy("command", "contains NUL"));
        }
        Ok(())
    }
}

fn policy_err_name(name: &str) -> Error {
    policy(
        "name",
        format!("`{name}` must match ^[a-z][a-z0-9-]{{1,62}}$ (it names the container)"),
    )
}

/// Podman container name of an app ([`crate::names::container`]).
pub fn container_name(app: &str) -> String {
    crate::names::container(app)
}

/// Podman volume name of an app's volume ([`crate::names::volume`]): outlives the container,
/// removed only by a purge.
pub fn volume_name(app: &str, volume: &str) -> String {
    crate::names::volume(app, volume)
}

/// Compact JSON with object keys sorted by their UTF-8 bytes.
fn canonical_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serializes"));
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> AppSpec {
        let mut s = AppSpec::new("web", "1.0.0", "localhost/archy/busybox:latest");
        s.ports.push(PortSpec {
            container: 8080,
            host: 18080,
            protocol: Protocol::Tcp,
            bind: default_bind(),
        });
        s.volumes.push(VolumeSpec {
            name: "data".into(),
            target: "/data".into(),
        });
        s
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = web();
        let mut b = web();
        assert_eq!(a.spec_hash(), b.spec_hash());
        b.env.insert("A".into(), "1".into());
        assert_ne!(a.spec_hash(), b.spec_hash());
        // Round trip through JSON keeps the hash.
        let back: AppSpec = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back.spec_hash(), b.spec_hash());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,"x"],"c":null}}"#).unwrap();
        let mut out = String::new();
        canonical_json(&v, &mut out);
        assert_eq!(out, r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(web()).unwrap();
        v["privileged"] = serde_json::Value::Bool(true);
        let err = serde_json::from_value::<AppSpec>(v).unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let s: AppSpec = serde_json::from_str(
            r#"{"name":"ab","version":"1","image":"x","ports":[{"container":80,"host":8080}]}"#,
        )
        .unwrap();
        assert_eq!(s.ports[0].bind, default_bind());
        assert_eq!(s.ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.stop_grace_secs, 30);
        s.validate(&Policy::default()).unwrap();
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::Policy { field, .. } => field,
            other => panic!("not a policy error: {other}"),
        }
    }

    #[test]
    fn policy_violations_name_the_field() {
        let p = Policy::default();
        let mut s = web();
        s.capabilities = vec!["cap_sys_admin".into()];
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "capabilities[0]");
        s.capabilities = vec!["NET_RAW".into()];
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "capabilities[0]");
        s.capabilities = vec!["cap_net_bind_service".into(), "chown".into()];
        s.validate(&p).unwrap();

        let mut s = web();
        s.volumes[0].name = "/etc".into();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "volumes[0].name");
        for bad in ["/data/../etc", "/data//x", "/data/", "/", "data", "/a:b"] {
            let mut s = web();
            s.volumes[0].target = bad.into();
            assert_eq!(
                field_of(s.validate(&p).unwrap_err()),
                "volumes[0].target",
                "{bad}"
            );
        }
        let mut s = web();
        s.volumes[0].target = "/data/..foo".into();
        s.validate(&p).unwrap();

        let mut s = web();
        s.ports[0].bind = "0.0.0.0".parse().unwrap();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "ports[0].bind");
        s.ports[0].bind = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "ports[0].bind");
        let open = Policy {
            allow_non_loopback_bind: true,
            ..Policy::default()
        };
        s.validate(&open).unwrap();

        let mut s = web();
        s.ports[0].host = 80;
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "ports[0].host");

        let mut s = web();
        s.name = "Bad_Name".into();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "name");

        let mut s = web();
        s.health_check = Some(HealthCheck {
            kind: HealthKind::Http,
            port: Some(9999),
            path: None,
            command: vec![],
            interval_secs: 1,
            timeout_secs: 1,
            retries: 1,
        });
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "health_check.port");

        let mut s = web();
        s.generated_secrets.push(SecretSpec {
            name: "key".into(),
            kind: SecretKind::Hex32,
            env: "KEY".into(),
        });
        s.env.insert("KEY".into(), "x".into());
        assert_eq!(
            field_of(s.validate(&p).unwrap_err()),
            "generated_secrets[0].env"
        );
    }

    #[test]
    fn never_allowed_caps_beat_the_allowlist() {
        let p = Policy {
            allowed_capabilities: vec!["SYS_ADMIN".into()],
            allow_non_loopback_bind: false,
        };
        let mut s = web();
        s.capabilities = vec!["SYS_ADMIN".into()];
        assert!(s.validate(&p).is_err());
    }
}
