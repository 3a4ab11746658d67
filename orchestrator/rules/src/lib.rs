//! Archy's rule book: every limit and lexical rule an app must keep (PROTOCOL.md §2), defined
//! once, for the two places that enforce them.
//!
//! - The manifest validator (`archy-protocol`) checks a signed manifest field by field and then
//!   runs [`check`] over the runtime view of it, so a release the container runtime would refuse
//!   never enters a catalog.
//! - The orchestrator runs the same [`check`] over its own input (`AppSpec::validate`), as a
//!   defensive re-check just before Podman: nothing that could give a container more power than
//!   its spec says reaches Podman even if the caller has a bug.
//!
//! This crate has no dependencies and does no I/O, so neither of its users depends on the
//! other. Every limit is a `pub const` here; `tests/no_stray_limits.rs` fails if one of their
//! values is compared against anywhere else in product code.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;

// ---- limits ---------------------------------------------------------------------------------

/// At most this many published ports per app.
pub const MAX_PORTS: usize = 16;
/// At most this many volumes per app.
pub const MAX_VOLUMES: usize = 16;
/// At most this many environment variables per app.
pub const MAX_ENV: usize = 64;
/// At most this many generated secrets per app.
pub const MAX_SECRETS: usize = 16;
/// At most this many items in a command (the app's or an exec health check's).
pub const MAX_COMMAND: usize = 64;
/// Host ports below this are privileged and refused.
pub const MIN_HOST_PORT: u16 = 1024;
/// The longest stop grace period (seconds between SIGTERM and SIGKILL).
pub const MAX_STOP_GRACE_SECS: u64 = 3600;
/// The longest health-check interval and timeout, in seconds.
pub const MAX_HEALTH_SECS: u64 = 3600;
/// The most health-check retries a manifest may ask for.
pub const MAX_HEALTH_RETRIES: u32 = 100;
/// The most CPUs an app may ask for.
pub const MAX_CPUS: u32 = 1024;
/// Podman's minimum memory limit, in MiB.
pub const MIN_MEMORY_MB: u64 = 6;
/// App ids (and so container names): `^[a-z][a-z0-9-]{1,62}$`, so 2 to 63 characters.
pub const APP_ID_LEN: (usize, usize) = (2, 63);
/// Volume and secret names: `^[a-z][a-z0-9-]{0,62}$`, so 1 to 63 characters.
pub const PART_NAME_LEN: (usize, usize) = (1, 63);
/// The longest publisher string the runtime keeps (a DID).
pub const MAX_PUBLISHER_LEN: usize = 512;
/// The longest version string.
pub const MAX_VERSION_LEN: usize = 128;
/// The longest image reference.
pub const MAX_IMAGE_NAME_LEN: usize = 255;
/// The longest tag of an image reference (the OCI distribution spec's).
pub const MAX_IMAGE_TAG_LEN: usize = 128;
/// The largest manifest, in bytes of its JCS form (PROTOCOL §2).
pub const MAX_MANIFEST_BYTES: usize = 48 * 1024;
/// The largest integer a manifest may hold (2^53: JSON numbers beyond it lose precision).
pub const MAX_SAFE_INTEGER: u64 = 1 << 53;
/// The most layers a layered image (PROTOCOL §2.1 v2) may have: its HashSeq has 2 + L children.
pub const MAX_IMAGE_LAYERS: usize = 127;
/// The largest image manifest or image config of a layered image (children 0 and 1, §2.1).
pub const MAX_IMAGE_META_BYTES: u64 = 4 * 1024 * 1024;

/// §2's health-check defaults, where a manifest leaves them out.
pub const DEFAULT_HEALTH_INTERVAL_SECS: u32 = 2;
/// See [`DEFAULT_HEALTH_INTERVAL_SECS`].
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u32 = 3;
/// See [`DEFAULT_HEALTH_INTERVAL_SECS`].
pub const DEFAULT_HEALTH_RETRIES: u32 = 10;

/// Capabilities allowed by default (PROTOCOL.md §2 default allowlist).
pub const DEFAULT_ALLOWED_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
];

/// Capabilities that amount to `--privileged` (escape or host control). Refused even if an
/// operator puts them in the allowlist.
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

// ---- lexical rules --------------------------------------------------------------------------

/// `^[a-z][a-z0-9-]*$` with a total length in `len.0..=len.1`.
pub fn is_id_like(s: &str, len: (usize, usize)) -> bool {
    let b = s.as_bytes();
    (len.0..=len.1).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// An app id: [`APP_ID_LEN`].
pub fn is_app_id(s: &str) -> bool {
    is_id_like(s, APP_ID_LEN)
}

/// A volume or secret name: [`PART_NAME_LEN`].
pub fn is_part_name(s: &str) -> bool {
    is_id_like(s, PART_NAME_LEN)
}

/// An environment variable name: `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn is_env_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// 64 lowercase hex characters (a BLAKE3 hash, a Nostr key, an iroh endpoint id).
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Loopback per §2: IPv4 127.0.0.0/8 or `::1`; an IPv4-mapped IPv6 address is *not* loopback.
pub fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Capability names are case-insensitive and the `CAP_` prefix is optional (§2): upper case,
/// without the prefix.
pub fn normalize_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned()
}

/// Why a volume target is not absolute, not `/`, without empty, `.` or `..` segments.
pub fn volume_target_problem(target: &str) -> Option<&'static str> {
    if !target.starts_with('/') {
        return Some("must be an absolute path");
    }
    if target == "/" {
        return Some("must not be `/`");
    }
    for seg in target[1..].split('/') {
        match seg {
            "" => return Some("must not have an empty segment (`//` or a trailing `/`)"),
            "." | ".." => return Some("must not have a `.` or `..` segment"),
            _ => {}
        }
    }
    None
}

/// A CPU quota as text: a positive decimal such as "0.5", at most [`MAX_CPUS`].
pub fn is_cpus(c: &str) -> bool {
    !c.is_empty()
        && c.split('.').count() <= 2
        && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.')
        && c.parse::<f64>()
            .is_ok_and(|f| f > 0.0 && f <= f64::from(MAX_CPUS))
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

// ---- policy ---------------------------------------------------------------------------------

/// What the operator allows beyond the secure defaults: the one policy type, read from
/// `config.toml [policy]` by the node and handed to both checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Capabilities an app may ask for (any case, `CAP_` optional).
    pub capability_allowlist: Vec<String>,
    /// Allow publishing ports on non-loopback addresses (exposes apps beyond this machine).
    pub allow_non_loopback_binds: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            capability_allowlist: DEFAULT_ALLOWED_CAPS.iter().map(|c| c.to_string()).collect(),
            allow_non_loopback_binds: false,
        }
    }
}

impl Policy {
    /// Whether a capability (already normalised by [`normalize_capability`]) is allowed.
    pub fn allows_capability(&self, normalized: &str) -> bool {
        self.capability_allowlist
            .iter()
            .any(|c| normalize_capability(c) == normalized)
    }
}

// ---- the runtime view and its check ---------------------------------------------------------

/// What the runtime rules look at, borrowed from whichever input type holds it (the typed
/// manifest or the orchestrator's `AppSpec`).
#[derive(Clone, Debug, Default)]
pub struct App<'a> {
    pub name: &'a str,
    pub publisher: &'a str,
    pub version: &'a str,
    pub image: &'a str,
    pub image_id: Option<&'a str>,
    pub ports: Vec<Port>,
    /// (name, target)
    pub volumes: Vec<(&'a str, &'a str)>,
    /// (key, value), in the order the check reports them (sorted by key).
    pub env: Vec<(&'a str, &'a str)>,
    /// (name, env)
    pub secrets: Vec<(&'a str, &'a str)>,
    pub capabilities: Vec<&'a str>,
    pub memory_mb: Option<u64>,
    pub cpus: Option<&'a str>,
    pub health_check: Option<Health<'a>>,
    pub stop_grace_secs: u64,
    pub dependencies: Vec<&'a str>,
    pub command: Vec<&'a str>,
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub container: u16,
    pub host: u16,
    pub udp: bool,
    pub bind: IpAddr,
}

/// The kind of a health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthKind {
    Http,
    Tcp,
    Exec,
}

/// A health check, as far as the rules look at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health<'a> {
    pub kind: HealthKind,
    pub port: Option<u16>,
    pub path: Option<&'a str>,
    pub command_len: usize,
    pub timeout_secs: u64,
    pub retries: u32,
}

/// Why the runtime refuses an app: the field (as the runtime names it) and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal {
        field: field.into(),
        reason: reason.into(),
    }
}

impl App<'_> {
    /// Whether `container_port` is published over tcp.
    pub fn publishes_tcp(&self, container_port: u16) -> bool {
        self.ports
            .iter()
            .any(|p| p.container == container_port && !p.udp)
    }
}

/// The runtime rules, in a fixed order; the first broken one is returned.
pub fn check(app: &App<'_>, policy: &Policy) -> Result<(), Refusal> {
    if !is_app_id(app.name) {
        return Err(refuse(
            "name",
            format!(
                "`{}` must match ^[a-z][a-z0-9-]{{1,62}}$ (it names the container)",
                app.name
            ),
        ));
    }
    if app.publisher.len() > MAX_PUBLISHER_LEN
        || app
            .publisher
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(refuse(
            "publisher",
            format!("must be at most {MAX_PUBLISHER_LEN} characters without spaces"),
        ));
    }
    if app.version.is_empty() || app.version.len() > MAX_VERSION_LEN || has_control(app.version) {
        return Err(refuse(
            "version",
            format!("must be 1-{MAX_VERSION_LEN} printable characters"),
        ));
    }
    if app.image.is_empty()
        || app.image.starts_with('-')
        || app
            .image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(refuse("image", "must be an image reference without spaces"));
    }
    if let Some(id) = app.image_id {
        if !is_hex64(id.strip_prefix("sha256:").unwrap_or(id)) {
            return Err(refuse("image_id", "must be sha256:<64 lowercase hex>"));
        }
    }
    check_ports(app, policy)?;
    check_volumes(app)?;
    check_env_and_secrets(app)?;
    check_capabilities(app, policy)?;
    check_resources(app)?;
    check_health(app)?;
    if app.stop_grace_secs > MAX_STOP_GRACE_SECS {
        return Err(refuse(
            "stop_grace_secs",
            format!("at most {MAX_STOP_GRACE_SECS}"),
        ));
    }
    for (i, d) in app.dependencies.iter().enumerate() {
        if !is_app_id(d) {
            return Err(refuse(format!("dependencies[{i}]"), "not a valid app name"));
        }
        if *d == app.name {
            return Err(refuse(
                format!("dependencies[{i}]"),
                "an app cannot depend on itself",
            ));
        }
    }
    if app.command.len() > MAX_COMMAND {
        return Err(refuse("command", format!("at most {MAX_COMMAND} items")));
    }
    if app.command.iter().any(|a| a.contains('\0')) {
        return Err(refuse("command", "contains NUL"));
    }
    Ok(())
}

fn check_ports(app: &App<'_>, policy: &Policy) -> Result<(), Refusal> {
    if app.ports.len() > MAX_PORTS {
        return Err(refuse("ports", format!("at most {MAX_PORTS}")));
    }
    let mut host_ports = BTreeSet::new();
    for (i, p) in app.ports.iter().enumerate() {
        if p.container == 0 {
            return Err(refuse(format!("ports[{i}].container"), "must be 1-65535"));
        }
        if p.host < MIN_HOST_PORT {
            return Err(refuse(
                format!("ports[{i}].host"),
                format!("must be {MIN_HOST_PORT}-65535"),
            ));
        }
        if !host_ports.insert((p.host, p.udp, p.bind)) {
            return Err(refuse(format!("ports[{i}].host"), "published twice"));
        }
        if !is_loopback(&p.bind) && !policy.allow_non_loopback_binds {
            return Err(refuse(
                format!("ports[{i}].bind"),
                format!(
                    "{} is not loopback and the operator allows only loopback",
                    p.bind
                ),
            ));
        }
    }
    Ok(())
}

fn check_volumes(app: &App<'_>) -> Result<(), Refusal> {
    if app.volumes.len() > MAX_VOLUMES {
        return Err(refuse("volumes", format!("at most {MAX_VOLUMES}")));
    }
    let mut names = BTreeSet::new();
    for (i, (name, target)) in app.volumes.iter().enumerate() {
        // A name with '/' would make Podman bind-mount a host path: refuse it here.
        if !is_part_name(name) {
            return Err(refuse(
                format!("volumes[{i}].name"),
                "must match ^[a-z][a-z0-9-]{0,62}$ (host paths are not allowed)",
            ));
        }
        if !names.insert(name) {
            return Err(refuse(
                format!("volumes[{i}].name"),
                "duplicate volume name",
            ));
        }
        if volume_target_problem(target).is_some() || target.contains(':') || has_control(target) {
            return Err(refuse(
                format!("volumes[{i}].target"),
                "must be absolute, not `/`, without empty, `.` or `..` segments or `:`",
            ));
        }
    }
    Ok(())
}

fn check_env_and_secrets(app: &App<'_>) -> Result<(), Refusal> {
    if app.env.len() > MAX_ENV {
        return Err(refuse("env", format!("at most {MAX_ENV} variables")));
    }
    for (k, v) in &app.env {
        if !is_env_key(k) {
            return Err(refuse(
                format!("env.{k}"),
                "key must match ^[A-Za-z_][A-Za-z0-9_]*$",
            ));
        }
        if v.contains('\0') {
            return Err(refuse(format!("env.{k}"), "value contains NUL"));
        }
    }
    if app.secrets.len() > MAX_SECRETS {
        return Err(refuse(
            "generated_secrets",
            format!("at most {MAX_SECRETS}"),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, (name, env)) in app.secrets.iter().enumerate() {
        if !is_part_name(name) {
            return Err(refuse(
                format!("generated_secrets[{i}].name"),
                "must match ^[a-z][a-z0-9-]{0,62}$",
            ));
        }
        if !names.insert(name) {
            return Err(refuse(format!("generated_secrets[{i}].name"), "duplicate"));
        }
        if !is_env_key(env) {
            return Err(refuse(
                format!("generated_secrets[{i}].env"),
                "must match ^[A-Za-z_][A-Za-z0-9_]*$",
            ));
        }
        if app.env.iter().any(|(k, _)| k == env) {
            return Err(refuse(
                format!("generated_secrets[{i}].env"),
                "also set in `env`; a secret must not be overridden",
            ));
        }
    }
    Ok(())
}

fn check_capabilities(app: &App<'_>, policy: &Policy) -> Result<(), Refusal> {
    for (i, cap) in app.capabilities.iter().enumerate() {
        let n = normalize_capability(cap);
        if NEVER_ALLOWED_CAPS.contains(&n.as_str()) {
            return Err(refuse(
                format!("capabilities[{i}]"),
                format!("{n} is equivalent to privileged mode and is never granted"),
            ));
        }
        if !policy.allows_capability(&n) {
            return Err(refuse(
                format!("capabilities[{i}]"),
                format!("{n} is not in the operator's allowlist"),
            ));
        }
    }
    Ok(())
}

fn check_resources(app: &App<'_>) -> Result<(), Refusal> {
    if let Some(m) = app.memory_mb {
        if m < MIN_MEMORY_MB {
            return Err(refuse(
                "resources.memory_mb",
                format!("must be at least {MIN_MEMORY_MB} (Podman's minimum)"),
            ));
        }
    }
    if let Some(c) = app.cpus {
        if !is_cpus(c) {
            return Err(refuse(
                "resources.cpus",
                "must be a positive decimal such as \"0.5\"",
            ));
        }
    }
    Ok(())
}

fn check_health(app: &App<'_>) -> Result<(), Refusal> {
    let Some(h) = &app.health_check else {
        return Ok(());
    };
    match h.kind {
        HealthKind::Http | HealthKind::Tcp => {
            let Some(port) = h.port else {
                return Err(refuse(
                    "health_check.port",
                    "required for http and tcp checks",
                ));
            };
            if !app.publishes_tcp(port) {
                return Err(refuse(
                    "health_check.port",
                    format!("container port {port} is not published over tcp in `ports`"),
                ));
            }
            if let Some(path) = h.path {
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(refuse(
                        "health_check.path",
                        "must start with `/`, no spaces",
                    ));
                }
            }
        }
        HealthKind::Exec => {
            if h.command_len == 0 {
                return Err(refuse("health_check.command", "required for exec checks"));
            }
        }
    }
    if h.timeout_secs == 0 || h.retries == 0 {
        return Err(refuse(
            "health_check",
            "timeout_secs and retries must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> App<'static> {
        App {
            name: "web",
            version: "1.0.0",
            image: "localhost/web:1",
            ports: vec![Port {
                container: 8080,
                host: 18080,
                udp: false,
                bind: IpAddr::from([127, 0, 0, 1]),
            }],
            stop_grace_secs: 30,
            ..App::default()
        }
    }

    #[track_caller]
    fn refused(app: &App<'_>, field: &str) {
        match check(app, &Policy::default()) {
            Err(r) => assert_eq!(r.field, field, "{r:?}"),
            Ok(()) => panic!("accepted; expected a refusal of {field}"),
        }
    }

    #[test]
    fn a_plain_app_passes() {
        check(&web(), &Policy::default()).unwrap();
    }

    #[test]
    fn ids_have_one_meaning_of_their_bounds() {
        assert!(is_app_id("ab") && !is_app_id("a") && !is_app_id(&"a".repeat(64)));
        assert!(is_part_name("a") && is_part_name(&"a".repeat(63)));
        assert!(!is_part_name(&"a".repeat(64)) && !is_part_name("") && !is_part_name("A"));
        assert!(!is_part_name("a_b") && !is_part_name("1a"));
    }

    #[test]
    fn capabilities_are_normalized_and_the_dangerous_ones_never_granted() {
        assert_eq!(normalize_capability(" cap_chown "), "CHOWN");
        let mut app = web();
        app.capabilities = vec!["cap_chown"];
        check(&app, &Policy::default()).unwrap();
        app.capabilities = vec!["SYS_ADMIN"];
        let open = Policy {
            capability_allowlist: vec!["sys_admin".into()],
            allow_non_loopback_binds: false,
        };
        assert!(check(&app, &open).is_err());
        app.capabilities = vec!["NET_RAW"];
        refused(&app, "capabilities[0]");
    }

    #[test]
    fn each_limit_refuses_one_more() {
        let mut app = web();
        app.ports = (0..=MAX_PORTS as u16)
            .map(|i| Port {
                container: 1 + i,
                host: 20000 + i,
                udp: false,
                bind: IpAddr::from([127, 0, 0, 1]),
            })
            .collect();
        refused(&app, "ports");
        let mut app = web();
        app.command = vec!["x"; MAX_COMMAND + 1];
        refused(&app, "command");
        let mut app = web();
        app.stop_grace_secs = MAX_STOP_GRACE_SECS + 1;
        refused(&app, "stop_grace_secs");
        let mut app = web();
        app.memory_mb = Some(MIN_MEMORY_MB - 1);
        refused(&app, "resources.memory_mb");
    }

    #[test]
    fn relations_between_fields() {
        let mut app = web();
        app.health_check = Some(Health {
            kind: HealthKind::Http,
            port: Some(9999),
            path: Some("/"),
            command_len: 0,
            timeout_secs: 3,
            retries: 3,
        });
        refused(&app, "health_check.port");
        let mut app = web();
        app.env = vec![("TOKEN", "x")];
        app.secrets = vec![("tok", "TOKEN")];
        refused(&app, "generated_secrets[0].env");
        let mut app = web();
        app.dependencies = vec!["web"];
        refused(&app, "dependencies[0]");
        let mut app = web();
        app.ports[0].bind = "::ffff:127.0.0.1".parse().unwrap();
        refused(&app, "ports[0].bind");
    }

    #[test]
    fn volume_targets() {
        assert!(volume_target_problem("/data").is_none());
        for bad in ["data", "/", "/a//b", "/a/", "/a/../b", "/./a"] {
            assert!(volume_target_problem(bad).is_some(), "{bad}");
        }
        let mut app = web();
        app.volumes = vec![("data", "/data:ro")];
        refused(&app, "volumes[0].target");
    }
}
