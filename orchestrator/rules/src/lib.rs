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

/// At most this many services in an app (PROTOCOL §2.2).
pub const MAX_SERVICES: usize = 8;
/// At most this many names in a service's `depends_on`.
pub const MAX_DEPENDS_ON: usize = 8;
/// At most this many `dependencies` (other apps).
pub const MAX_DEPENDENCIES: usize = 16;
/// Service names: `^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$`, so 1 to 32 characters.
pub const SERVICE_NAME_LEN: (usize, usize) = (1, 32);
/// At most this many published ports per app (across its services).
pub const MAX_PORTS: usize = 16;
/// At most this many distinct volumes per app, and mounts per service.
pub const MAX_VOLUMES: usize = 16;
/// At most this many environment variables per service.
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
    /// Whether the app lists `services` (PROTOCOL §2.2: refusals name `services[i].…`); `false`
    /// for the single-container form, one service named after the app with its fields at the
    /// top level.
    pub listed: bool,
    pub services: Vec<Service<'a>>,
    /// The app's generated secrets (app-wide), by name.
    pub secrets: Vec<&'a str>,
    pub dependencies: Vec<&'a str>,
}

/// One container of an app.
#[derive(Clone, Debug, Default)]
pub struct Service<'a> {
    /// `^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$` when listed; the app's id in the single form.
    pub name: &'a str,
    pub image: &'a str,
    pub image_id: Option<&'a str>,
    pub ports: Vec<Port>,
    /// (name, target)
    pub volumes: Vec<(&'a str, &'a str)>,
    /// (key, value), in the order the check reports them (sorted by key).
    pub env: Vec<(&'a str, &'a str)>,
    /// (generated secret's name, the variable it is delivered as)
    pub secrets: Vec<(&'a str, &'a str)>,
    pub capabilities: Vec<&'a str>,
    pub memory_mb: Option<u64>,
    pub cpus: Option<&'a str>,
    pub health_check: Option<Health<'a>>,
    pub stop_grace_secs: u64,
    pub command: Vec<&'a str>,
    /// Services of the same app that must be healthy before this one starts.
    pub depends_on: Vec<&'a str>,
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

impl Service<'_> {
    /// Whether `container_port` is published over tcp.
    pub fn publishes_tcp(&self, container_port: u16) -> bool {
        self.ports
            .iter()
            .any(|p| p.container == container_port && !p.udp)
    }
}

/// A service name of PROTOCOL §2.2: `^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$` (it is also a DNS
/// label on the app's network, so it neither ends with `-` nor exceeds 32 characters).
pub fn is_service_name(s: &str) -> bool {
    is_id_like(s, SERVICE_NAME_LEN) && !s.ends_with('-')
}

/// Where a service's field is reported: `services[i].<rest>` when the app lists services, the
/// bare `<rest>` in the single-container form.
struct At {
    listed: bool,
    index: usize,
}

impl At {
    fn field(&self, rest: &str) -> String {
        if self.listed {
            format!("services[{}].{rest}", self.index)
        } else {
            rest.to_owned()
        }
    }

    /// A service's `j`th secret: `services[i].secrets[j]`, or in the single form the app's
    /// `generated_secrets[j]` (the single service receives them all, in order).
    fn secret(&self, j: usize, rest: &str) -> String {
        if self.listed {
            format!("services[{}].secrets[{j}].{rest}", self.index)
        } else {
            format!("generated_secrets[{j}].{rest}")
        }
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
    check_service_list(app)?;
    check_app_secrets(app)?;
    for (index, svc) in app.services.iter().enumerate() {
        let at = At {
            listed: app.listed,
            index,
        };
        check_service(app, svc, &at, policy)?;
    }
    check_ports(app)?;
    check_volumes(app)?;
    check_depends_on(app)?;
    if app.dependencies.len() > MAX_DEPENDENCIES {
        return Err(refuse(
            "dependencies",
            format!("at most {MAX_DEPENDENCIES}"),
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
    Ok(())
}

fn check_service_list(app: &App<'_>) -> Result<(), Refusal> {
    if app.services.is_empty() || app.services.len() > MAX_SERVICES {
        return Err(refuse(
            "services",
            format!(
                "{} services; an app has 1 to {MAX_SERVICES}",
                app.services.len()
            ),
        ));
    }
    if !app.listed {
        if app.services.len() != 1 || app.services[0].name != app.name {
            return Err(refuse(
                "services",
                "the single-container form is one service named after the app",
            ));
        }
        return Ok(());
    }
    let mut names = BTreeSet::new();
    for (i, s) in app.services.iter().enumerate() {
        if !is_service_name(s.name) {
            return Err(refuse(
                format!("services[{i}].name"),
                format!(
                    "`{}` must match ^[a-z]([a-z0-9-]{{0,30}}[a-z0-9])?$ (it is a host name on the app's network)",
                    s.name
                ),
            ));
        }
        if !names.insert(s.name) {
            return Err(refuse(
                format!("services[{i}].name"),
                format!("`{}` names two services", s.name),
            ));
        }
    }
    Ok(())
}

fn check_app_secrets(app: &App<'_>) -> Result<(), Refusal> {
    if app.secrets.len() > MAX_SECRETS {
        return Err(refuse(
            "generated_secrets",
            format!("at most {MAX_SECRETS}"),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, name) in app.secrets.iter().enumerate() {
        if !is_part_name(name) {
            return Err(refuse(
                format!("generated_secrets[{i}].name"),
                "must match ^[a-z][a-z0-9-]{0,62}$",
            ));
        }
        if !names.insert(name) {
            return Err(refuse(format!("generated_secrets[{i}].name"), "duplicate"));
        }
    }
    Ok(())
}

fn check_service(app: &App<'_>, s: &Service<'_>, at: &At, policy: &Policy) -> Result<(), Refusal> {
    if s.image.is_empty()
        || s.image.starts_with('-')
        || s.image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(refuse(
            at.field("image"),
            "must be an image reference without spaces",
        ));
    }
    if let Some(id) = s.image_id {
        if !is_hex64(id.strip_prefix("sha256:").unwrap_or(id)) {
            return Err(refuse(
                at.field("image_id"),
                "must be sha256:<64 lowercase hex>",
            ));
        }
    }
    for (i, p) in s.ports.iter().enumerate() {
        if p.container == 0 {
            return Err(refuse(
                at.field(&format!("ports[{i}].container")),
                "must be 1-65535",
            ));
        }
        if p.host < MIN_HOST_PORT {
            return Err(refuse(
                at.field(&format!("ports[{i}].host")),
                format!("must be {MIN_HOST_PORT}-65535"),
            ));
        }
        if !is_loopback(&p.bind) && !policy.allow_non_loopback_binds {
            return Err(refuse(
                at.field(&format!("ports[{i}].bind")),
                format!(
                    "{} is not loopback and the operator allows only loopback",
                    p.bind
                ),
            ));
        }
    }
    check_mounts(s, at)?;
    check_env_and_secrets(app, s, at)?;
    for (i, cap) in s.capabilities.iter().enumerate() {
        let n = normalize_capability(cap);
        let field = at.field(&format!("capabilities[{i}]"));
        if NEVER_ALLOWED_CAPS.contains(&n.as_str()) {
            return Err(refuse(
                field,
                format!("{n} is equivalent to privileged mode and is never granted"),
            ));
        }
        if !policy.allows_capability(&n) {
            return Err(refuse(
                field,
                format!("{n} is not in the operator's allowlist"),
            ));
        }
    }
    if let Some(m) = s.memory_mb {
        if m < MIN_MEMORY_MB {
            return Err(refuse(
                at.field("resources.memory_mb"),
                format!("must be at least {MIN_MEMORY_MB} (Podman's minimum)"),
            ));
        }
    }
    if let Some(c) = s.cpus {
        if !is_cpus(c) {
            return Err(refuse(
                at.field("resources.cpus"),
                "must be a positive decimal such as \"0.5\"",
            ));
        }
    }
    check_health(app, s, at)?;
    if s.stop_grace_secs > MAX_STOP_GRACE_SECS {
        return Err(refuse(
            at.field("stop_grace_secs"),
            format!("at most {MAX_STOP_GRACE_SECS}"),
        ));
    }
    if s.command.len() > MAX_COMMAND {
        return Err(refuse(
            at.field("command"),
            format!("at most {MAX_COMMAND} items"),
        ));
    }
    if s.command.iter().any(|a| a.contains('\0')) {
        return Err(refuse(at.field("command"), "contains NUL"));
    }
    Ok(())
}

/// Ports across the whole app: at most [`MAX_PORTS`], each (host, protocol, bind) once.
fn check_ports(app: &App<'_>) -> Result<(), Refusal> {
    let total: usize = app.services.iter().map(|s| s.ports.len()).sum();
    if total > MAX_PORTS {
        return Err(refuse(
            if app.listed { "services" } else { "ports" },
            format!("{total} published ports, at most {MAX_PORTS} in the whole app"),
        ));
    }
    let mut host_ports = BTreeSet::new();
    for (index, s) in app.services.iter().enumerate() {
        let at = At {
            listed: app.listed,
            index,
        };
        for (i, p) in s.ports.iter().enumerate() {
            if !host_ports.insert((p.host, p.udp, p.bind)) {
                return Err(refuse(
                    at.field(&format!("ports[{i}].host")),
                    format!(
                        "{}:{}/{} is published twice in the app",
                        p.bind,
                        p.host,
                        if p.udp { "udp" } else { "tcp" }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// One service's mounts: at most [`MAX_VOLUMES`], each name once, safe targets.
fn check_mounts(s: &Service<'_>, at: &At) -> Result<(), Refusal> {
    if s.volumes.len() > MAX_VOLUMES {
        return Err(refuse(
            at.field("volumes"),
            format!("at most {MAX_VOLUMES}"),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, (name, target)) in s.volumes.iter().enumerate() {
        // A name with '/' would make Podman bind-mount a host path: refuse it here.
        if !is_part_name(name) {
            return Err(refuse(
                at.field(&format!("volumes[{i}].name")),
                "must match ^[a-z][a-z0-9-]{0,62}$ (host paths are not allowed)",
            ));
        }
        if !names.insert(name) {
            return Err(refuse(
                at.field(&format!("volumes[{i}].name")),
                "duplicate volume name",
            ));
        }
        if volume_target_problem(target).is_some() || target.contains(':') || has_control(target) {
            return Err(refuse(
                at.field(&format!("volumes[{i}].target")),
                "must be absolute, not `/`, without empty, `.` or `..` segments or `:`",
            ));
        }
    }
    Ok(())
}

/// Volumes are app-wide (two services mounting one name share it): at most [`MAX_VOLUMES`]
/// distinct names in the app.
fn check_volumes(app: &App<'_>) -> Result<(), Refusal> {
    let names: BTreeSet<&str> = app
        .services
        .iter()
        .flat_map(|s| s.volumes.iter().map(|(n, _)| *n))
        .collect();
    if names.len() > MAX_VOLUMES {
        return Err(refuse(
            if app.listed { "services" } else { "volumes" },
            format!(
                "{} distinct volumes, at most {MAX_VOLUMES} in the whole app",
                names.len()
            ),
        ));
    }
    Ok(())
}

fn check_env_and_secrets(app: &App<'_>, s: &Service<'_>, at: &At) -> Result<(), Refusal> {
    if s.env.len() > MAX_ENV {
        return Err(refuse(
            at.field("env"),
            format!("at most {MAX_ENV} variables"),
        ));
    }
    for (k, v) in &s.env {
        if !is_env_key(k) {
            return Err(refuse(
                at.field(&format!("env.{k}")),
                "key must match ^[A-Za-z_][A-Za-z0-9_]*$",
            ));
        }
        if v.contains('\0') {
            return Err(refuse(at.field(&format!("env.{k}")), "value contains NUL"));
        }
    }
    let mut vars = BTreeSet::new();
    for (j, (name, env)) in s.secrets.iter().enumerate() {
        if !app.secrets.contains(name) {
            return Err(refuse(
                at.secret(j, "name"),
                format!("`{name}` is not one of the app's generated_secrets"),
            ));
        }
        if !is_env_key(env) {
            return Err(refuse(
                at.secret(j, "env"),
                "must match ^[A-Za-z_][A-Za-z0-9_]*$",
            ));
        }
        if s.env.iter().any(|(k, _)| k == env) {
            return Err(refuse(
                at.secret(j, "env"),
                "also set in `env`; a secret must not be overridden",
            ));
        }
        if !vars.insert(*env) {
            return Err(refuse(
                at.secret(j, "env"),
                format!("`{env}` receives two secrets"),
            ));
        }
    }
    Ok(())
}

fn check_health(app: &App<'_>, s: &Service<'_>, at: &At) -> Result<(), Refusal> {
    let Some(h) = &s.health_check else {
        return Ok(());
    };
    match h.kind {
        HealthKind::Http | HealthKind::Tcp => {
            let Some(port) = h.port else {
                return Err(refuse(
                    at.field("health_check.port"),
                    "required for http and tcp checks",
                ));
            };
            // A stack's services are probed from inside the app's network (§2.2); the single
            // container form is probed on its published port from the host.
            if !app.listed && !s.publishes_tcp(port) {
                return Err(refuse(
                    at.field("health_check.port"),
                    format!("container port {port} is not published over tcp in `ports`"),
                ));
            }
            if let Some(path) = h.path {
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(refuse(
                        at.field("health_check.path"),
                        "must start with `/`, no spaces",
                    ));
                }
            }
        }
        HealthKind::Exec => {
            if h.command_len == 0 {
                return Err(refuse(
                    at.field("health_check.command"),
                    "required for exec checks",
                ));
            }
        }
    }
    if h.timeout_secs == 0 || h.retries == 0 {
        return Err(refuse(
            at.field("health_check"),
            "timeout_secs and retries must be at least 1",
        ));
    }
    Ok(())
}

/// `depends_on`: at most [`MAX_DEPENDS_ON`] names per service, each another service of the
/// app, and no cycle.
fn check_depends_on(app: &App<'_>) -> Result<(), Refusal> {
    for (i, s) in app.services.iter().enumerate() {
        let field = |rest: &str| {
            if app.listed {
                format!("services[{i}].depends_on{rest}")
            } else {
                format!("depends_on{rest}")
            }
        };
        if s.depends_on.len() > MAX_DEPENDS_ON {
            return Err(refuse(field(""), format!("at most {MAX_DEPENDS_ON}")));
        }
        for (j, d) in s.depends_on.iter().enumerate() {
            if *d == s.name {
                return Err(refuse(
                    field(&format!("[{j}]")),
                    "a service cannot depend on itself",
                ));
            }
            if !app.services.iter().any(|o| o.name == *d) {
                return Err(refuse(
                    field(&format!("[{j}]")),
                    format!("`{d}` is not a service of this app"),
                ));
            }
        }
    }
    if let Err(cycle) = start_order(app) {
        let i = app
            .services
            .iter()
            .position(|s| s.name == cycle[0])
            .unwrap_or(0);
        return Err(refuse(
            format!("services[{i}].depends_on"),
            format!("a cycle: {}", cycle.join(" → ")),
        ));
    }
    Ok(())
}

/// The services' start order: every service after those in its `depends_on` (ties in listed
/// order). Names in `depends_on` that are no service are ignored here ([`check`] refuses
/// them). A cycle is returned as the names along it, the first repeated at the end.
pub fn start_order<'a>(app: &App<'a>) -> Result<Vec<&'a str>, Vec<&'a str>> {
    let mut order: Vec<&'a str> = Vec::with_capacity(app.services.len());
    let mut left: Vec<&Service<'a>> = app.services.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|s| {
            s.depends_on
                .iter()
                .all(|d| order.contains(d) || !app.services.iter().any(|o| o.name == *d))
        });
        match ready {
            Some(k) => order.push(left.remove(k).name),
            None => return Err(find_cycle(&left)),
        }
    }
    Ok(order)
}

/// A cycle among services none of which can start: walk `depends_on` from the first until a
/// name repeats.
fn find_cycle<'a>(stuck: &[&Service<'a>]) -> Vec<&'a str> {
    let mut path: Vec<&'a str> = vec![stuck[0].name];
    loop {
        let cur = path[path.len() - 1];
        let svc = stuck.iter().find(|s| s.name == cur).expect("on the path");
        let next = svc
            .depends_on
            .iter()
            .find(|d| stuck.iter().any(|s| s.name == **d))
            .expect("a stuck service waits on another stuck one");
        if let Some(at) = path.iter().position(|p| p == next) {
            let mut cycle = path[at..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn web_service(name: &'static str) -> Service<'static> {
        Service {
            name,
            image: "localhost/web:1",
            ports: vec![Port {
                container: 8080,
                host: 18080,
                udp: false,
                bind: lo(),
            }],
            stop_grace_secs: 30,
            ..Service::default()
        }
    }

    fn web() -> App<'static> {
        App {
            name: "web",
            version: "1.0.0",
            services: vec![web_service("web")],
            ..App::default()
        }
    }

    /// A web service and its database, as PROTOCOL §2.2 lists them.
    fn stack() -> App<'static> {
        let mut db = web_service("db");
        db.ports.clear();
        db.volumes = vec![("pgdata", "/var/lib/postgresql")];
        db.secrets = vec![("db-password", "POSTGRES_PASSWORD")];
        db.health_check = Some(Health {
            kind: HealthKind::Tcp,
            port: Some(5432),
            path: None,
            command_len: 0,
            timeout_secs: 3,
            retries: 3,
        });
        let mut app = web_service("app");
        app.secrets = vec![("db-password", "DB_PASSWORD")];
        app.depends_on = vec!["db"];
        App {
            name: "notes-pg",
            version: "1.0.0",
            listed: true,
            services: vec![app, db],
            secrets: vec!["db-password"],
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
    fn a_plain_app_and_a_stack_pass() {
        check(&web(), &Policy::default()).unwrap();
        check(&stack(), &Policy::default()).unwrap();
        assert_eq!(start_order(&stack()).unwrap(), ["db", "app"]);
    }

    #[test]
    fn ids_have_one_meaning_of_their_bounds() {
        assert!(is_app_id("ab") && !is_app_id("a") && !is_app_id(&"a".repeat(64)));
        assert!(is_part_name("a") && is_part_name(&"a".repeat(63)));
        assert!(!is_part_name(&"a".repeat(64)) && !is_part_name("") && !is_part_name("A"));
        assert!(!is_part_name("a_b") && !is_part_name("1a"));
        assert!(is_service_name("a") && is_service_name(&"a".repeat(32)));
        assert!(!is_service_name(&"a".repeat(33)) && !is_service_name("db-"));
        assert!(is_service_name("db-1") && !is_service_name("1db"));
    }

    #[test]
    fn capabilities_are_normalized_and_the_dangerous_ones_never_granted() {
        assert_eq!(normalize_capability(" cap_chown "), "CHOWN");
        let mut app = web();
        app.services[0].capabilities = vec!["cap_chown"];
        check(&app, &Policy::default()).unwrap();
        app.services[0].capabilities = vec!["SYS_ADMIN"];
        let open = Policy {
            capability_allowlist: vec!["sys_admin".into()],
            allow_non_loopback_binds: false,
        };
        assert!(check(&app, &open).is_err());
        app.services[0].capabilities = vec!["NET_RAW"];
        refused(&app, "capabilities[0]");
        let mut s = stack();
        s.services[1].capabilities = vec!["NET_RAW"];
        refused(&s, "services[1].capabilities[0]");
    }

    #[test]
    fn each_limit_refuses_one_more() {
        let mut app = web();
        app.services[0].ports = (0..=MAX_PORTS as u16)
            .map(|i| Port {
                container: 1 + i,
                host: 20000 + i,
                udp: false,
                bind: lo(),
            })
            .collect();
        refused(&app, "ports");
        let mut app = web();
        app.services[0].command = vec!["x"; MAX_COMMAND + 1];
        refused(&app, "command");
        let mut app = web();
        app.services[0].stop_grace_secs = MAX_STOP_GRACE_SECS + 1;
        refused(&app, "stop_grace_secs");
        let mut app = web();
        app.services[0].memory_mb = Some(MIN_MEMORY_MB - 1);
        refused(&app, "resources.memory_mb");
        let mut s = stack();
        let extra: Vec<Service<'static>> = ["c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .map(|n| {
                let mut x = web_service(n);
                x.ports.clear();
                x
            })
            .collect();
        s.services.extend(extra);
        assert_eq!(s.services.len(), MAX_SERVICES + 1);
        refused(&s, "services");
    }

    #[test]
    fn ports_count_and_clash_across_the_services_of_an_app() {
        let mut s = stack();
        s.services[1].ports = (0..MAX_PORTS as u16)
            .map(|i| Port {
                container: 1 + i,
                host: 20000 + i,
                udp: false,
                bind: lo(),
            })
            .collect();
        // 16 on the database plus the web service's one.
        refused(&s, "services");
        let mut s = stack();
        s.services[1].ports = s.services[0].ports.clone();
        refused(&s, "services[1].ports[0].host");
        // The same host port on another address or protocol is no clash.
        s.services[1].ports[0].udp = true;
        check(&s, &Policy::default()).unwrap();
    }

    #[test]
    fn service_names_depends_on_and_secrets() {
        let mut s = stack();
        s.services[1].name = "app";
        refused(&s, "services[1].name");
        let mut s = stack();
        s.services[1].name = "Db";
        refused(&s, "services[1].name");
        let mut s = stack();
        s.services[1].depends_on = vec!["app"];
        refused(&s, "services[0].depends_on");
        let mut s = stack();
        s.services[0].depends_on = vec!["cache"];
        refused(&s, "services[0].depends_on[0]");
        let mut s = stack();
        s.services[0].depends_on = vec!["app"];
        refused(&s, "services[0].depends_on[0]");
        let mut s = stack();
        s.services[0].secrets = vec![("api-key", "API_KEY")];
        refused(&s, "services[0].secrets[0].name");
        let mut s = stack();
        s.services[0].env = vec![("DB_PASSWORD", "x")];
        refused(&s, "services[0].secrets[0].env");
        // A stack's health check probes inside the app's network: no published port needed.
        let mut single = web();
        single.services[0].health_check = stack().services[1].health_check.clone();
        refused(&single, "health_check.port");
    }

    #[test]
    fn cycles_are_named_along_their_path() {
        let mut s = stack();
        let mut cache = web_service("cache");
        cache.ports.clear();
        cache.depends_on = vec!["app"];
        s.services[1].depends_on = vec!["cache"];
        s.services.push(cache);
        let cycle = start_order(&s).unwrap_err();
        assert_eq!(cycle, ["app", "db", "cache", "app"]);
        refused(&s, "services[0].depends_on");
    }

    #[test]
    fn relations_between_fields() {
        let mut app = web();
        app.services[0].health_check = Some(Health {
            kind: HealthKind::Http,
            port: Some(9999),
            path: Some("/"),
            command_len: 0,
            timeout_secs: 3,
            retries: 3,
        });
        refused(&app, "health_check.port");
        let mut app = web();
        app.services[0].env = vec![("TOKEN", "x")];
        app.secrets = vec!["tok"];
        app.services[0].secrets = vec![("tok", "TOKEN")];
        refused(&app, "generated_secrets[0].env");
        let mut app = web();
        app.dependencies = vec!["web"];
        refused(&app, "dependencies[0]");
        let mut app = web();
        app.services[0].ports[0].bind = "::ffff:127.0.0.1".parse().unwrap();
        refused(&app, "ports[0].bind");
    }

    #[test]
    fn volume_targets() {
        assert!(volume_target_problem("/data").is_none());
        for bad in ["data", "/", "/a//b", "/a/", "/a/../b", "/./a"] {
            assert!(volume_target_problem(bad).is_some(), "{bad}");
        }
        let mut app = web();
        app.services[0].volumes = vec![("data", "/data:ro")];
        refused(&app, "volumes[0].target");
    }
}
