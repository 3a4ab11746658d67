//! The schema and policy validator of PROTOCOL.md §2.
//!
//! It never stops at the first problem: an author fixing a manifest wants the whole list, each
//! entry naming the field (`ports[1].bind`), the rule and what was found.

use super::policy::PolicyConfig;
use super::{kind_name, SCHEMA_V1, SCHEMA_V2};
use crate::reason::Reason;
use archy_rules::{
    is_app_id, is_env_key, is_hex64, is_loopback, is_part_name, is_service_name,
    normalize_capability, volume_target_problem, MAX_COMMAND, MAX_CPUS, MAX_DEPENDENCIES,
    MAX_DEPENDS_ON, MAX_ENV, MAX_HEALTH_RETRIES, MAX_HEALTH_SECS, MAX_IMAGE_NAME_LEN,
    MAX_IMAGE_TAG_LEN, MAX_MANIFEST_BYTES, MAX_PORTS, MAX_SAFE_INTEGER, MAX_SECRETS, MAX_SERVICES,
    MAX_STOP_GRACE_SECS, MAX_VOLUMES, MIN_HOST_PORT,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One violated rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `schema`, `policy`, `manifest-too-large` or `expired`.
    pub reason: Reason,
    /// The field, as a path: `publisher.did`, `ports[0].host`, `(manifest)` for the whole.
    pub field: String,
    /// A short, stable name of the rule, e.g. `host-port-privileged`.
    pub rule: &'static str,
    /// What was wrong, for a person.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}/{}]: {}",
            self.field, self.reason, self.rule, self.message
        )
    }
}

/// Largest magnitude of a manifest number (§2: integers within ±2^53).
const MAX_SAFE: f64 = MAX_SAFE_INTEGER as f64;

/// The fields of one container: at the top level in the single-container form, in each
/// service with `services` (and then absent from the top level, §2.2). `image` is checked
/// with the required fields.
const SERVICE_FIELDS: [&str; 9] = [
    "command",
    "ports",
    "volumes",
    "env",
    "health_check",
    "security",
    "resources",
    "stop_grace_secs",
    "backup",
];

/// Top-level fields that must never reach the container runtime (§2 "forbidden fields").
const FORBIDDEN_ANY: [&str; 6] = [
    "privileged",
    "devices",
    "host_mounts",
    "binds",
    "security_opt",
    "cap_add",
];
/// Namespace fields: only "host" is named by §2; any other way of joining a foreign namespace
/// (`container:x`, `ns:/path`) is refused too, since the node cannot reason about it.
const NAMESPACE_FIELDS: [&str; 5] = ["pid", "ipc", "userns", "uts", "cgroupns"];

/// Checks a manifest against §2 with the operator's policy; `now` is unix seconds (for
/// `expires_at`). Returns every violation; an empty list means the manifest passes.
pub fn validate(manifest: &Map<String, Value>, policy: &PolicyConfig, now: u64) -> Vec<Violation> {
    validate_sized(manifest, policy, now, None)
}

/// [`validate`] for a caller that already holds the manifest's JCS bytes (a verified
/// signature covers them) and passes their length, so they are not computed again.
pub fn validate_sized(
    manifest: &Map<String, Value>,
    policy: &PolicyConfig,
    now: u64,
    jcs_len: Option<usize>,
) -> Vec<Violation> {
    let mut c = Checker {
        out: Vec::new(),
        policy,
    };
    for (key, value) in manifest {
        c.numbers(key, value);
    }
    // A number JCS cannot write (e.g. `1e999`) has no size; `numbers` reported it above.
    let size = jcs_len.unwrap_or_else(|| {
        crate::jcs::try_canonical_bytes(&Value::Object(manifest.clone())).map_or(0, |b| b.len())
    });
    if size > MAX_MANIFEST_BYTES {
        c.push(
            Reason::ManifestTooLarge,
            "(manifest)",
            "size",
            format!("{size} bytes of JCS, the limit is {MAX_MANIFEST_BYTES}"),
        );
    }
    c.required(manifest);
    c.optional(manifest);
    c.forbidden(manifest, "");
    if let Some(expires) = manifest.get("expires_at").and_then(Value::as_i64) {
        if expires < now as i64 {
            c.push(
                Reason::Expired,
                "expires_at",
                "expired",
                format!("the release expired at {expires} (now {now}); nothing installs or updates to it"),
            );
        }
    }
    if c.out.is_empty() {
        c.out.extend(orchestrator_agrees(manifest, policy));
    }
    c.out
}

/// The orchestrator re-checks every spec before Podman sees it with the rule book's runtime
/// rules, which relate fields (a health check on an unpublished port, a secret's variable also
/// in `env`, Podman's memory minimum, …). The validator runs the same [`archy_rules::check`]
/// over the manifest's runtime view, with the same reason: otherwise a signed release would
/// enter the catalog and fail only at install time. The `manifest` fuzz target
/// (marketplace/fuzz) checks that the node's conversion to the orchestrator's spec agrees.
fn orchestrator_agrees(manifest: &Map<String, Value>, policy: &PolicyConfig) -> Option<Violation> {
    let refused = |field: String, message: String| Violation {
        reason: Reason::Policy,
        field,
        rule: "orchestrator",
        message: format!("{message} (the node's container runtime would refuse this app)"),
    };
    let typed = match super::AppManifest::from_raw(manifest) {
        Ok(m) => m,
        Err(e) => return Some(refused("(manifest)".into(), e.to_string())),
    };
    let services = typed.stack();
    let view = match typed.rules_view(&services) {
        Ok(v) => v,
        Err(e) => return Some(refused("(manifest)".into(), e)),
    };
    archy_rules::check(&view, policy)
        .err()
        .map(|r| refused(r.field, r.reason))
}

struct Checker<'a> {
    out: Vec<Violation>,
    policy: &'a PolicyConfig,
}

/// The formats of a `BlobRef` that is one blob (PROTOCOL §2).
const ARCHIVE_FORMATS: &[&str] = &["oci-archive", "docker-archive", "raw"];
/// The format of `image.layers` (§2.1): the root of a HashSeq.
pub const LAYERS_FORMAT: &str = "oci-layers";

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Whether a JSON number is an integer within ±2^53 (`1.0` counts as 1: JCS writes it so).
fn safe_integer(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() <= MAX_SAFE as u64).then_some(i);
    }
    if n.as_u64().is_some() {
        return None;
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE).then_some(f as i64)
}

/// An empty value, which the forbidden-field rule tolerates (`false`, `null`, `""`, `[]`, `{}`).
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// An OCI image reference `name[:tag]` (lower-case path components, optional registry host:port).
fn is_image_name(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_IMAGE_NAME_LEN || s.contains('@') {
        return false;
    }
    let (path, tag) = match s.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (s, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= MAX_IMAGE_TAG_LEN
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return false;
        }
    }
    let mut parts = path.split('/').peekable();
    let mut first = true;
    while let Some(part) = parts.next() {
        let is_host = first
            && parts.peek().is_some()
            && (part.contains('.') || part.contains(':') || part == "localhost");
        first = false;
        let ok = if is_host {
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        } else {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        };
        if !ok {
            return false;
        }
    }
    true
}

impl Checker<'_> {
    fn push(&mut self, reason: Reason, field: &str, rule: &'static str, message: String) {
        self.out.push(Violation {
            reason,
            field: field.to_owned(),
            rule,
            message,
        });
    }

    fn schema(&mut self, field: &str, rule: &'static str, message: impl Into<String>) {
        self.push(Reason::Schema, field, rule, message.into());
    }

    fn policy(&mut self, field: &str, rule: &'static str, message: impl Into<String>) {
        self.push(Reason::Policy, field, rule, message.into());
    }

    fn type_error(&mut self, field: &str, want: &str, got: &Value) {
        self.schema(
            field,
            "type",
            format!("must be {want}, found {}", kind_name(got)),
        );
    }

    /// Every number, in known and unknown fields, must be a safe integer.
    fn numbers(&mut self, path: &str, v: &Value) {
        match v {
            Value::Number(n) if safe_integer(n).is_none() => self.schema(
                if path.is_empty() { "(manifest)" } else { path },
                "integer",
                format!("{n} is not an integer within ±2^53 (manifest numbers are integers)"),
            ),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.numbers(&format!("{path}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    self.numbers(&join(path, k), item);
                }
            }
            _ => {}
        }
    }

    fn get<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'v Value> {
        match obj.get(key) {
            Some(v) => Some(v),
            None => {
                if required {
                    self.schema(&join(path, key), "required", "is required but missing");
                }
                None
            }
        }
    }

    fn string<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'v str> {
        let v = self.get(obj, path, key, required)?;
        match v {
            Value::String(s) => Some(s),
            other => {
                self.type_error(&join(path, key), "a string", other);
                None
            }
        }
    }

    fn integer(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let v = self.get(obj, path, key, required)?;
        let field = join(path, key);
        match v {
            Value::Number(n) => {
                // Non-integers were already reported by `numbers`.
                let i = safe_integer(n)?;
                if !range.contains(&i) {
                    self.schema(
                        &field,
                        "range",
                        format!("{i} is outside {}..={}", range.start(), range.end()),
                    );
                    return None;
                }
                Some(i)
            }
            other => {
                self.type_error(&field, "an integer", other);
                None
            }
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, path: &str, key: &str) -> Option<bool> {
        match self.get(obj, path, key, false)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.type_error(&join(path, key), "a boolean", other);
                None
            }
        }
    }

    fn object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'v Map<String, Value>> {
        match self.get(obj, path, key, required)? {
            Value::Object(m) => Some(m),
            other => {
                self.type_error(&join(path, key), "an object", other);
                None
            }
        }
    }

    /// An array of at most `max` items (over the limit is `policy`).
    fn array<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        key: &str,
        max: Option<usize>,
    ) -> Option<&'v [Value]> {
        let field = join(path, key);
        match self.get(obj, path, key, false)? {
            Value::Array(items) => {
                if let Some(max) = max {
                    if items.len() > max {
                        self.policy(
                            &field,
                            "limit",
                            format!("{} items, at most {max} are allowed", items.len()),
                        );
                    }
                }
                Some(items)
            }
            other => {
                self.type_error(&field, "an array", other);
                None
            }
        }
    }

    fn text_len(&mut self, field: &str, s: &str, min: usize, max: usize) {
        let n = s.chars().count();
        if n < min || n > max {
            self.schema(
                field,
                "length",
                format!("{n} characters, must be {min}–{max}"),
            );
        }
    }

    fn hex64(&mut self, obj: &Map<String, Value>, path: &str, key: &str, what: &str) {
        if let Some(s) = self.string(obj, path, key, true) {
            if !is_hex64(s) {
                self.schema(
                    &join(path, key),
                    "hex64",
                    format!("must be {what} as 64 lowercase hex characters, found {s:?}"),
                );
            }
        }
    }

    fn semver(&mut self, field: &str, s: &str) {
        if semver::Version::parse(s).is_err() {
            self.schema(
                field,
                "semver",
                format!("{s:?} is not a SemVer 2.0.0 version (e.g. 1.2.3)"),
            );
        }
    }

    /// A `BlobRef` whose `format` is one of `formats`.
    fn blob_ref(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
        formats: &[&str],
    ) {
        let Some(blob) = self.object(obj, path, key, required) else {
            return;
        };
        let p = join(path, key);
        self.hex64(blob, &p, "blake3", "a BLAKE3 hash");
        self.integer(blob, &p, "size", true, 0..=i64::MAX);
        if let Some(f) = self.string(blob, &p, "format", true) {
            if !formats.contains(&f) {
                self.schema(
                    &join(&p, "format"),
                    "enum",
                    format!("{f:?} is not one of {}", formats.join(", ")),
                );
            }
        }
    }

    /// `image.archive` (v1 and v2) or `image.layers` (v2, §2.1): exactly one of the two.
    fn image_content(&mut self, image: &Map<String, Value>, p: &str, schema: Option<&str>) {
        match (image.get("archive"), image.get("layers")) {
            (Some(_), Some(_)) => self.schema(
                p,
                "one-of",
                "has both \"archive\" and \"layers\": an image is exactly one of the two",
            ),
            (None, None) => self.schema(
                &join(p, "archive"),
                "required",
                "is required but missing (or, with schema archy.app/v2, \"layers\")",
            ),
            (Some(_), None) => self.blob_ref(image, p, "archive", true, ARCHIVE_FORMATS),
            (None, Some(_)) => {
                if schema == Some(SCHEMA_V1) {
                    self.schema(
                        &join(p, "layers"),
                        "needs-v2",
                        format!("layered images (PROTOCOL §2.1) need \"schema\": {SCHEMA_V2:?}"),
                    );
                }
                self.blob_ref(image, p, "layers", true, &[LAYERS_FORMAT]);
            }
        }
    }

    /// An `image` object (top level, or a service's): a reference, an id and its content.
    fn image(&mut self, obj: &Map<String, Value>, base: &str, schema: Option<&str>) {
        let Some(image) = self.object(obj, base, "image", true) else {
            return;
        };
        let p = join(base, "image");
        if let Some(name) = self.string(image, &p, "name", true) {
            if !is_image_name(name) {
                self.schema(
                    &join(&p, "name"),
                    "oci-reference",
                    format!("{name:?} is not an OCI reference name[:tag], e.g. localhost/acme/web:1.2.0"),
                );
            }
        }
        if let Some(id) = self.string(image, &p, "id", true) {
            if !id.strip_prefix("sha256:").is_some_and(is_hex64) {
                self.schema(
                    &join(&p, "id"),
                    "image-id",
                    format!("{id:?} must be \"sha256:\" + 64 lowercase hex"),
                );
            }
        }
        self.image_content(image, &p, schema);
    }

    fn required(&mut self, m: &Map<String, Value>) {
        let schema = self.string(m, "", "schema", true);
        if let Some(s) = schema {
            if s != SCHEMA_V1 && s != SCHEMA_V2 {
                self.schema(
                    "schema",
                    "value",
                    format!("must be {SCHEMA_V1:?} or {SCHEMA_V2:?}, found {s:?}"),
                );
            }
        }
        if let Some(id) = self.string(m, "", "id", true) {
            if !is_app_id(id) {
                self.schema(
                    "id",
                    "pattern",
                    format!("{id:?} must match ^[a-z][a-z0-9-]{{1,62}}$"),
                );
            }
        }
        if let Some(v) = self.string(m, "", "version", true) {
            self.semver("version", v);
        }
        if let Some(s) = self.string(m, "", "name", true) {
            self.text_len("name", s, 1, 80);
        }
        if let Some(s) = self.string(m, "", "summary", true) {
            self.text_len("summary", s, 1, 280);
        }
        if let Some(publisher) = self.object(m, "", "publisher", true) {
            if let Some(did) = self.string(publisher, "publisher", "did", true) {
                if let Err(e) = crate::did::key_from_did(did) {
                    self.schema("publisher.did", "did-key-ed25519", e.to_string());
                }
            }
            self.hex64(publisher, "publisher", "nostr", "the Nostr public key");
        }
        if let Some(origin) = self.object(m, "", "origin", true) {
            self.hex64(origin, "origin", "endpoint", "the iroh EndpointId");
            match self.get(origin, "origin", "addrs", true) {
                Some(Value::Array(addrs)) => {
                    for (i, a) in addrs.iter().enumerate() {
                        let field = format!("origin.addrs[{i}]");
                        match a {
                            Value::String(s) if s.parse::<SocketAddr>().is_ok() => {}
                            Value::String(s) => self.schema(
                                &field,
                                "socket-addr",
                                format!("{s:?} is not \"ip:port\" or \"[ipv6]:port\""),
                            ),
                            other => self.type_error(&field, "a string", other),
                        }
                    }
                }
                Some(other) => self.type_error("origin.addrs", "an array", other),
                None => {}
            }
        }
        if m.contains_key("services") {
            if m.contains_key("image") {
                self.schema(
                    "image",
                    "services-exclusive",
                    "must be absent when `services` lists the app's containers (PROTOCOL §2.2)",
                );
            }
        } else {
            self.image(m, "", schema);
        }
        self.integer(m, "", "published_at", true, 0..=i64::MAX);
    }

    fn optional(&mut self, m: &Map<String, Value>) {
        let schema = m.get("schema").and_then(Value::as_str);
        let v2 = schema == Some(SCHEMA_V2);
        for key in ["description", "license", "homepage"] {
            self.string(m, "", key, false);
        }
        if let Some(items) = self.array(m, "", "categories", None) {
            for (i, c) in items.iter().enumerate() {
                if !c.is_string() {
                    self.type_error(&format!("categories[{i}]"), "a string", c);
                }
            }
        }
        self.blob_ref(m, "", "icon", false, ARCHIVE_FORMATS);
        let stack = m.contains_key("services");
        if stack {
            // §2.2: with `services`, what runs is described per service only.
            for key in SERVICE_FIELDS {
                if m.contains_key(key) {
                    self.schema(
                        key,
                        "services-exclusive",
                        "must be absent when `services` lists the app's containers: it belongs in a service (PROTOCOL §2.2)",
                    );
                }
            }
            self.services(m, schema);
        } else {
            self.service_fields(m, "");
            if v2 {
                self.backup(m, "");
            }
        }
        if v2 && m.contains_key("secrets") {
            self.schema(
                "secrets",
                "misplaced",
                if stack {
                    "a service lists the secrets it receives in `services[i].secrets`"
                } else {
                    "the single-container form delivers each generated secret through its own `env` (generated_secrets[i].env)"
                },
            );
        }
        self.secrets(m, stack);
        self.dependencies(m, v2);
        if v2 {
            self.exports(m);
        }
        self.integer(m, "", "expires_at", false, 0..=i64::MAX);
    }

    /// The fields of one container: the top level of the single-container form, or one item
    /// of `services` (`base` = `services[i]`).
    fn service_fields(&mut self, m: &Map<String, Value>, base: &str) {
        self.ports(m, base);
        self.volumes(m, base);
        self.env(m, base);
        if let Some(items) = self.array(m, base, "command", Some(MAX_COMMAND)) {
            for (i, c) in items.iter().enumerate() {
                if !c.is_string() {
                    self.type_error(&join(base, &format!("command[{i}]")), "a string", c);
                }
            }
        }
        self.health_check(m, base);
        let sec_path = join(base, "security");
        if let Some(sec) = self.object(m, base, "security", false) {
            if let Some(caps) = self.array(sec, &sec_path, "capabilities", None) {
                for (i, cap) in caps.iter().enumerate() {
                    let field = join(&sec_path, &format!("capabilities[{i}]"));
                    match cap {
                        Value::String(name) => {
                            let norm = normalize_capability(name);
                            if !self.policy.allows_capability(&norm) {
                                self.policy(
                                    &field,
                                    "capability",
                                    format!(
                                        "capability {norm} is not in the operator's allowlist ({})",
                                        self.policy.capability_allowlist.join(", ")
                                    ),
                                );
                            }
                        }
                        other => self.type_error(&field, "a string", other),
                    }
                }
            }
            self.boolean(sec, &sec_path, "read_only_root");
        }
        let res_path = join(base, "resources");
        if let Some(res) = self.object(m, base, "resources", false) {
            self.integer(res, &res_path, "memory_mb", false, 1..=i64::MAX);
            let cpus = join(&res_path, "cpus");
            match res.get("cpus") {
                None | Some(Value::Number(_)) => {
                    self.integer(res, &res_path, "cpus", false, 1..=i64::from(MAX_CPUS));
                }
                Some(Value::String(s)) => {
                    if !s.parse::<f64>().is_ok_and(|f| f.is_finite() && f > 0.0) {
                        self.schema(
                            &cpus,
                            "cpus",
                            format!("{s:?} is not a positive decimal number of CPUs"),
                        );
                    }
                }
                Some(other) => self.type_error(&cpus, "a string or an integer", other),
            }
        }
        self.integer(
            m,
            base,
            "stop_grace_secs",
            false,
            0..=MAX_STOP_GRACE_SECS as i64,
        );
    }

    /// `services` (§2.2): 1–8 containers, each checked as the single-container form is, plus
    /// what relates them (names, `depends_on`, secrets, ports and volumes across the app).
    fn services(&mut self, m: &Map<String, Value>, schema: Option<&str>) {
        if schema == Some(SCHEMA_V1) {
            self.schema(
                "services",
                "needs-v2",
                format!("multi-service apps (PROTOCOL §2.2) need \"schema\": {SCHEMA_V2:?}"),
            );
        }
        let Some(items) = self.array(m, "", "services", Some(MAX_SERVICES)) else {
            return;
        };
        if items.is_empty() {
            self.schema(
                "services",
                "length",
                "lists no service: an app has at least one",
            );
        }
        let generated: Vec<&str> = match m.get("generated_secrets") {
            Some(Value::Array(g)) => g
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect(),
            _ => vec![],
        };
        let mut names: Vec<Option<&str>> = Vec::with_capacity(items.len());
        for (i, svc) in items.iter().enumerate() {
            let base = format!("services[{i}]");
            let Value::Object(svc) = svc else {
                self.type_error(&base, "an object", svc);
                names.push(None);
                continue;
            };
            let name = self.string(svc, &base, "name", true);
            if let Some(n) = name {
                if !is_service_name(n) {
                    self.schema(
                        &join(&base, "name"),
                        "pattern",
                        format!("{n:?} must match ^[a-z]([a-z0-9-]{{0,30}}[a-z0-9])?$"),
                    );
                } else if names.contains(&Some(n)) {
                    self.schema(
                        &join(&base, "name"),
                        "unique",
                        format!("{n:?} names two services"),
                    );
                }
            }
            names.push(name);
            self.image(svc, &base, schema);
            self.service_fields(svc, &base);
            self.forbidden(svc, &base);
            self.service_secrets(svc, &base, &generated);
            self.backup(svc, &base);
        }
        let known: Vec<&str> = names.iter().flatten().copied().collect();
        let mut graph: Vec<archy_rules::Service<'_>> = Vec::new();
        for (i, svc) in items.iter().enumerate() {
            let Value::Object(svc) = svc else { continue };
            let base = format!("services[{i}]");
            let Some(deps) = self.array(svc, &base, "depends_on", Some(MAX_DEPENDS_ON)) else {
                continue;
            };
            let mut edges = Vec::new();
            for (j, d) in deps.iter().enumerate() {
                let field = format!("{base}.depends_on[{j}]");
                match d.as_str() {
                    None => self.type_error(&field, "a string", d),
                    Some(d) if Some(d) == names[i] => self.schema(
                        &field,
                        "self-reference",
                        "a service cannot depend on itself",
                    ),
                    Some(d) if !known.contains(&d) => self.schema(
                        &field,
                        "unknown-service",
                        format!("{d:?} is not a service of this app"),
                    ),
                    Some(d) => edges.push(d),
                }
            }
            if let Some(name) = names[i] {
                graph.push(archy_rules::Service {
                    name,
                    depends_on: edges,
                    ..Default::default()
                });
            }
        }
        let app = archy_rules::App {
            services: graph,
            ..Default::default()
        };
        if let Err(cycle) = archy_rules::start_order(&app) {
            let i = names.iter().position(|n| *n == Some(cycle[0])).unwrap_or(0);
            self.schema(
                &format!("services[{i}].depends_on"),
                "cycle",
                format!("a cycle: {}", cycle.join(" → ")),
            );
        }
        self.across_services(items);
    }

    /// What §2.2 limits across the whole app: published ports (at most 16, each (protocol,
    /// bind, host) once) and distinct volume names (at most 16).
    fn across_services(&mut self, items: &[Value]) {
        let mut seen: Vec<(String, String, i64)> = Vec::new();
        let mut volumes: Vec<&str> = Vec::new();
        let mut total = 0;
        for (i, svc) in items.iter().enumerate() {
            if let Some(Value::Array(ports)) = svc.get("ports") {
                for (j, p) in ports.iter().enumerate() {
                    total += 1;
                    let Some(host) = p.get("host").and_then(Value::as_i64) else {
                        continue;
                    };
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
                    let bind = p.get("bind").and_then(Value::as_str).unwrap_or("127.0.0.1");
                    // Compare addresses, not spellings (`::1` and `0:0::1` are one).
                    let bind = bind
                        .parse::<IpAddr>()
                        .map_or_else(|_| bind.to_owned(), |ip| ip.to_string());
                    let key = (proto.to_owned(), bind, host);
                    if seen.contains(&key) {
                        self.policy(
                            &format!("services[{i}].ports[{j}].host"),
                            "port-clash",
                            format!(
                                "{}:{host}/{} is already published by another port of the app",
                                key.1, key.0
                            ),
                        );
                    } else {
                        seen.push(key);
                    }
                }
            }
            if let Some(Value::Array(vols)) = svc.get("volumes") {
                for v in vols {
                    if let Some(n) = v.get("name").and_then(Value::as_str) {
                        if !volumes.contains(&n) {
                            volumes.push(n);
                        }
                    }
                }
            }
        }
        if total > MAX_PORTS {
            self.policy(
                "services",
                "limit",
                format!(
                    "{total} published ports across the services, at most {MAX_PORTS} in an app"
                ),
            );
        }
        if volumes.len() > MAX_VOLUMES {
            self.policy(
                "services",
                "limit",
                format!(
                    "{} distinct volumes across the services, at most {MAX_VOLUMES} in an app",
                    volumes.len()
                ),
            );
        }
    }

    /// `services[i].secrets`: generated secrets of the app, each delivered as one variable.
    fn service_secrets(&mut self, svc: &Map<String, Value>, base: &str, generated: &[&str]) {
        let Some(items) = self.array(svc, base, "secrets", Some(MAX_SECRETS)) else {
            return;
        };
        let env = svc.get("env").and_then(Value::as_object);
        for (j, s) in items.iter().enumerate() {
            let p = format!("{base}.secrets[{j}]");
            let Value::Object(s) = s else {
                self.type_error(&p, "an object", s);
                continue;
            };
            if let Some(name) = self.string(s, &p, "name", true) {
                if !generated.contains(&name) {
                    self.schema(
                        &join(&p, "name"),
                        "unknown-secret",
                        format!("{name:?} is not one of the app's generated_secrets"),
                    );
                }
            }
            if let Some(var) = self.string(s, &p, "env", true) {
                if !is_env_key(var) {
                    self.schema(
                        &join(&p, "env"),
                        "env-key",
                        format!("{var:?} must match ^[A-Za-z_][A-Za-z0-9_]*$"),
                    );
                } else if env.is_some_and(|e| e.contains_key(var)) {
                    self.policy(
                        &join(&p, "env"),
                        "secret-overridden",
                        format!("{var} is also a key of the service's `env`: a secret must not be overridden"),
                    );
                }
            }
        }
    }

    /// `backup` (§2.2, v2) of one container; `base` is `services[i]` or the top level.
    fn backup(&mut self, obj: &Map<String, Value>, base: &str) {
        let Some(b) = self.object(obj, base, "backup", false) else {
            return;
        };
        let p = join(base, "backup");
        for key in ["command", "restore"] {
            if let Some(items) = self.array(b, &p, key, Some(MAX_COMMAND)) {
                for (i, c) in items.iter().enumerate() {
                    if !c.is_string() {
                        self.type_error(&join(&p, &format!("{key}[{i}]")), "a string", c);
                    }
                }
            }
        }
        let mounts: Vec<(&str, &str)> = match obj.get("volumes") {
            Some(Value::Array(v)) => v
                .iter()
                .filter_map(|v| Some((v.get("name")?.as_str()?, v.get("target")?.as_str()?)))
                .collect(),
            _ => vec![],
        };
        if let Some(out) = self.string(b, &p, "output", false) {
            let inside = volume_target_problem(out).is_none()
                && mounts.iter().any(|(_, t)| {
                    out.strip_prefix(t)
                        .is_some_and(|rest| rest.starts_with('/'))
                });
            if !inside {
                self.schema(
                    &join(&p, "output"),
                    "backup-output",
                    format!("{out:?} is not an absolute path inside one of the service's volume targets"),
                );
            }
        }
        if let Some(vols) = self.array(b, &p, "volumes", None) {
            for (i, v) in vols.iter().enumerate() {
                let field = join(&p, &format!("volumes[{i}]"));
                match v.as_str() {
                    None => self.type_error(&field, "a string", v),
                    Some(n) if !mounts.iter().any(|(m, _)| *m == n) => self.schema(
                        &field,
                        "unknown-volume",
                        format!("{n:?} is not one of the service's volumes"),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    /// `exports` (§2.2, v2): services of this app a dependent app may reach.
    fn exports(&mut self, m: &Map<String, Value>) {
        let Some(items) = self.array(m, "", "exports", Some(MAX_SERVICES)) else {
            return;
        };
        let names: Vec<&str> = match m.get("services") {
            Some(Value::Array(s)) => s
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect(),
            _ => m.get("id").and_then(Value::as_str).into_iter().collect(),
        };
        for (i, e) in items.iter().enumerate() {
            let field = format!("exports[{i}]");
            match e.as_str() {
                None => self.type_error(&field, "a string", e),
                Some(n) if !names.contains(&n) => self.schema(
                    &field,
                    "unknown-service",
                    format!("{n:?} is not a service of this app"),
                ),
                Some(_) => {}
            }
        }
    }

    fn dependencies(&mut self, m: &Map<String, Value>, v2: bool) {
        let Some(deps) = self.array(m, "", "dependencies", Some(MAX_DEPENDENCIES)) else {
            return;
        };
        for (i, d) in deps.iter().enumerate() {
            let p = format!("dependencies[{i}]");
            let Value::Object(d) = d else {
                self.type_error(&p, "an object", d);
                continue;
            };
            if let Some(app) = self.string(d, &p, "app", true) {
                if !is_app_id(app) {
                    self.schema(
                        &join(&p, "app"),
                        "pattern",
                        format!("{app:?} is not an app id"),
                    );
                }
            }
            if let Some(req) = self.string(d, &p, "version", true) {
                if semver::VersionReq::parse(req).is_err() {
                    self.schema(
                        &join(&p, "version"),
                        "semver-range",
                        format!("{req:?} is not a SemVer range (e.g. ^1.2)"),
                    );
                }
            }
            if v2 {
                if let Some(did) = self.string(d, &p, "did", false) {
                    if let Err(e) = crate::did::key_from_did(did) {
                        self.schema(&join(&p, "did"), "did-key-ed25519", e.to_string());
                    }
                }
            }
        }
    }

    fn ports(&mut self, m: &Map<String, Value>, base: &str) {
        let Some(ports) = self.array(m, base, "ports", Some(MAX_PORTS)) else {
            return;
        };
        for (i, port) in ports.iter().enumerate() {
            let p = join(base, &format!("ports[{i}]"));
            let Value::Object(port) = port else {
                self.type_error(&p, "an object", port);
                continue;
            };
            self.integer(port, &p, "container", true, 1..=65535);
            if let Some(host) = self.integer(port, &p, "host", true, 1..=65535) {
                if host < i64::from(MIN_HOST_PORT) {
                    self.policy(
                        &join(&p, "host"),
                        "host-port-privileged",
                        format!("host port {host} is below {MIN_HOST_PORT}"),
                    );
                }
            }
            if let Some(proto) = self.string(port, &p, "protocol", false) {
                if !matches!(proto, "tcp" | "udp") {
                    self.schema(
                        &join(&p, "protocol"),
                        "enum",
                        format!("{proto:?} is not tcp or udp"),
                    );
                }
            }
            if let Some(bind) = self.string(port, &p, "bind", false) {
                match bind.parse::<IpAddr>() {
                    Err(_) => self.schema(
                        &join(&p, "bind"),
                        "ip",
                        format!("{bind:?} is not an IP address"),
                    ),
                    Ok(ip) if !is_loopback(&ip) && !self.policy.allow_non_loopback_binds => self
                        .policy(
                            &join(&p, "bind"),
                            "bind-not-loopback",
                            format!(
                            "{bind} is not loopback and the operator does not allow other binds"
                        ),
                        ),
                    Ok(_) => {}
                }
            }
        }
    }

    fn volumes(&mut self, m: &Map<String, Value>, base: &str) {
        let Some(volumes) = self.array(m, base, "volumes", Some(MAX_VOLUMES)) else {
            return;
        };
        for (i, vol) in volumes.iter().enumerate() {
            let p = join(base, &format!("volumes[{i}]"));
            let Value::Object(vol) = vol else {
                self.type_error(&p, "an object", vol);
                continue;
            };
            if let Some(name) = self.string(vol, &p, "name", true) {
                if !is_part_name(name) {
                    self.schema(
                        &join(&p, "name"),
                        "pattern",
                        format!("{name:?} must match ^[a-z][a-z0-9-]{{0,62}}$"),
                    );
                }
            }
            if let Some(target) = self.string(vol, &p, "target", true) {
                if let Some(problem) = volume_target_problem(target) {
                    self.policy(
                        &join(&p, "target"),
                        "volume-target",
                        format!("{target:?} {problem}"),
                    );
                }
            }
        }
    }

    fn env(&mut self, m: &Map<String, Value>, base: &str) {
        let Some(env) = self.object(m, base, "env", false) else {
            return;
        };
        if env.len() > MAX_ENV {
            self.policy(
                &join(base, "env"),
                "limit",
                format!("{} variables, at most {MAX_ENV} are allowed", env.len()),
            );
        }
        for (key, value) in env {
            let field = join(base, &format!("env.{key}"));
            if !is_env_key(key) {
                self.schema(
                    &field,
                    "env-key",
                    "variable names must match ^[A-Za-z_][A-Za-z0-9_]*$",
                );
            }
            if !value.is_string() {
                self.type_error(&field, "a string", value);
            }
        }
    }

    fn secrets(&mut self, m: &Map<String, Value>, stack: bool) {
        let Some(secrets) = self.array(m, "", "generated_secrets", Some(MAX_SECRETS)) else {
            return;
        };
        for (i, s) in secrets.iter().enumerate() {
            let p = format!("generated_secrets[{i}]");
            let Value::Object(s) = s else {
                self.type_error(&p, "an object", s);
                continue;
            };
            if let Some(name) = self.string(s, &p, "name", true) {
                if !is_part_name(name) {
                    self.schema(
                        &join(&p, "name"),
                        "pattern",
                        format!("{name:?} must match ^[a-z][a-z0-9-]{{0,62}}$"),
                    );
                }
            }
            if let Some(kind) = self.string(s, &p, "kind", true) {
                if !matches!(kind, "hex16" | "hex32" | "base64") {
                    self.schema(
                        &join(&p, "kind"),
                        "enum",
                        format!("{kind:?} is not hex16, hex32 or base64"),
                    );
                }
            }
            if stack {
                if s.contains_key("env") {
                    self.schema(
                        &join(&p, "env"),
                        "misplaced",
                        "with `services`, a service names the variable in its own `secrets` list",
                    );
                }
            } else if let Some(env) = self.string(s, &p, "env", true) {
                if !is_env_key(env) {
                    self.schema(
                        &join(&p, "env"),
                        "env-key",
                        format!("{env:?} must match ^[A-Za-z_][A-Za-z0-9_]*$"),
                    );
                }
            }
        }
    }

    fn health_check(&mut self, m: &Map<String, Value>, base: &str) {
        let Some(hc) = self.object(m, base, "health_check", false) else {
            return;
        };
        let p = &join(base, "health_check");
        let kind = self.string(hc, p, "type", true);
        if let Some(kind) = kind {
            if !matches!(kind, "http" | "tcp" | "exec") {
                self.schema(
                    &join(p, "type"),
                    "enum",
                    format!("{kind:?} is not http, tcp or exec"),
                );
            }
        }
        let needs_port = matches!(kind, Some("http" | "tcp"));
        self.integer(hc, p, "port", needs_port, 1..=65535);
        if let Some(path) = self.string(hc, p, "path", false) {
            if !path.starts_with('/') {
                self.schema(
                    &join(p, "path"),
                    "http-path",
                    format!("{path:?} must start with `/`"),
                );
            }
        }
        let cmd = self.array(hc, p, "command", Some(MAX_COMMAND));
        if let Some(cmd) = cmd {
            for (i, c) in cmd.iter().enumerate() {
                if !c.is_string() {
                    self.type_error(&join(p, &format!("command[{i}]")), "a string", c);
                }
            }
        }
        if kind == Some("exec") && cmd.is_none_or(|c| c.is_empty()) {
            self.schema(
                &join(p, "command"),
                "required",
                "an exec health check needs a non-empty command",
            );
        }
        self.integer(hc, p, "interval_s", false, 1..=MAX_HEALTH_SECS as i64);
        self.integer(hc, p, "timeout_s", false, 1..=MAX_HEALTH_SECS as i64);
        self.integer(hc, p, "retries", false, 0..=i64::from(MAX_HEALTH_RETRIES));
    }

    fn forbidden(&mut self, m: &Map<String, Value>, base: &str) {
        for key in FORBIDDEN_ANY {
            if let Some(v) = m.get(key).filter(|v| !is_empty_value(v)) {
                let hint = if key == "cap_add" {
                    "; capabilities go through security.capabilities"
                } else {
                    ""
                };
                self.policy(
                    &join(base, key),
                    "forbidden-field",
                    format!("`{key}` is forbidden (found {v}){hint}"),
                );
            }
        }
        for key in ["network", "network_mode"] {
            if let Some(v) = m.get(key).filter(|v| !is_empty_value(v)) {
                if !matches!(v.as_str(), Some("bridge" | "none")) {
                    self.policy(
                        &join(base, key),
                        "forbidden-field",
                        format!("`{key}` = {v} is refused: only \"bridge\" or \"none\""),
                    );
                }
            }
        }
        for key in NAMESPACE_FIELDS {
            if let Some(v) = m.get(key).filter(|v| !is_empty_value(v)) {
                if v.as_str() != Some("private") {
                    self.policy(
                        &join(base, key),
                        "forbidden-field",
                        format!("`{key}` = {v} is refused: sharing a host or foreign namespace is not allowed"),
                    );
                }
            }
        }
    }
}
