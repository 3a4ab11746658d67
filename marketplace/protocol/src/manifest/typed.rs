//! The typed view of a manifest that has passed [`super::validate`], with §2's defaults filled in.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    pub did: String,
    pub nostr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub endpoint: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub blake3: String,
    pub size: u64,
    pub format: String,
}

/// `image`: exactly one of `archive` (one blob, v1 and v2) and `layers` (a HashSeq of the
/// image's OCI parts, v2 §2.1); the validator guarantees it, [`Image::content`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<BlobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<BlobRef>,
}

/// How an image travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageContent<'a> {
    /// One `podman save` archive (`image.archive`).
    Archive(&'a BlobRef),
    /// The OCI parts as a HashSeq (`image.layers`, §2.1).
    Layers(&'a BlobRef),
}

impl Image {
    /// The image's blob: `layers` if present, else `archive`. A validated manifest has exactly
    /// one; a typed view made without validation and with neither reads as an archive of
    /// nothing, so it is refused by the fetch (hash of no blob), never run.
    pub fn content(&self) -> ImageContent<'_> {
        match (&self.layers, &self.archive) {
            (Some(l), _) => ImageContent::Layers(l),
            (None, Some(a)) => ImageContent::Archive(a),
            (None, None) => ImageContent::Archive(&NO_BLOB),
        }
    }

    /// The root hash the node fetches and keeps for this image.
    pub fn blob(&self) -> &BlobRef {
        match self.content() {
            ImageContent::Archive(b) | ImageContent::Layers(b) => b,
        }
    }
}

static NO_BLOB: BlobRef = BlobRef {
    blake3: String::new(),
    size: 0,
    format: String::new(),
};

fn default_protocol() -> String {
    "tcp".into()
}
fn default_bind() -> String {
    "127.0.0.1".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub container: u16,
    pub host: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default = "default_bind")]
    pub bind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedSecret {
    pub name: String,
    pub kind: String,
    pub env: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: String,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub command: Option<Vec<String>>,
    pub interval_s: Option<u64>,
    pub timeout_s: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub app: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub read_only_root: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_mb: Option<u64>,
    /// Either an integer or a decimal string ("0.5"), kept as text.
    #[serde(default, deserialize_with = "cpus_as_text")]
    pub cpus: Option<String>,
}

fn cpus_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn default_grace() -> u64 {
    30
}

/// A validated manifest, typed. Unknown fields stay in the raw object only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppManifest {
    pub schema: String,
    pub id: String,
    pub version: String,
    pub name: String,
    pub summary: String,
    pub publisher: Publisher,
    pub origin: Origin,
    pub image: Image,
    pub published_at: u64,
    pub description: Option<String>,
    pub license: Option<String>,
    pub homepage: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    pub icon: Option<BlobRef>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub generated_secrets: Vec<GeneratedSecret>,
    #[serde(default)]
    pub command: Vec<String>,
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u64,
    pub expires_at: Option<u64>,
}

impl AppManifest {
    /// The typed view of a raw manifest. Call only after [`super::validate`] passed: the
    /// validator gives the precise errors, this gives a single summary.
    pub fn from_raw(raw: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        // Numbers like `1.0` are integers by §2; normalise them so serde's integer fields accept them.
        serde_json::from_value(normalise_numbers(Value::Object(raw.clone())))
    }

    /// The parsed SemVer version (validated).
    /// The runtime view the rule book checks (the orchestrator checks the same view of the
    /// spec the node makes from this manifest; §2's defaults are the rule book's). Fails only
    /// on a field the validator should already have refused (a bind that is not an IP).
    pub fn rules_view(&self) -> Result<archy_rules::App<'_>, String> {
        let ports = self
            .ports
            .iter()
            .map(|p| {
                Ok(archy_rules::Port {
                    container: p.container,
                    host: p.host,
                    udp: p.protocol == "udp",
                    bind: p
                        .bind
                        .parse()
                        .map_err(|_| format!("port bind {:?} is not an IP address", p.bind))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let health_check = match &self.health_check {
            None => None,
            Some(h) => Some(archy_rules::Health {
                kind: match h.kind.as_str() {
                    "http" => archy_rules::HealthKind::Http,
                    "tcp" => archy_rules::HealthKind::Tcp,
                    "exec" => archy_rules::HealthKind::Exec,
                    other => return Err(format!("health_check.type: unknown {other:?}")),
                },
                port: h.port,
                path: h.path.as_deref(),
                command_len: h.command.as_ref().map_or(0, Vec::len),
                timeout_secs: h
                    .timeout_s
                    .unwrap_or(u64::from(archy_rules::DEFAULT_HEALTH_TIMEOUT_SECS)),
                retries: h.retries.unwrap_or(archy_rules::DEFAULT_HEALTH_RETRIES),
            }),
        };
        Ok(archy_rules::App {
            name: &self.id,
            publisher: &self.publisher.did,
            version: &self.version,
            image: &self.image.name,
            image_id: Some(&self.image.id),
            ports,
            volumes: self
                .volumes
                .iter()
                .map(|v| (v.name.as_str(), v.target.as_str()))
                .collect(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            secrets: self
                .generated_secrets
                .iter()
                .map(|s| (s.name.as_str(), s.env.as_str()))
                .collect(),
            capabilities: self
                .security
                .capabilities
                .iter()
                .map(String::as_str)
                .collect(),
            memory_mb: self.resources.memory_mb,
            cpus: self.resources.cpus.as_deref(),
            health_check,
            stop_grace_secs: self.stop_grace_secs,
            dependencies: self.dependencies.iter().map(|d| d.app.as_str()).collect(),
            command: self.command.iter().map(String::as_str).collect(),
        })
    }

    pub fn semver(&self) -> semver::Version {
        semver::Version::parse(&self.version).expect("validated manifests have SemVer versions")
    }
}

/// Rewrites integral floats (`1.0`) as integers, leaving everything else alone.
pub(crate) fn normalise_numbers(v: Value) -> Value {
    match v {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.1e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(normalise_numbers).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, normalise_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}
