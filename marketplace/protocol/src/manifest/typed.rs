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

/// `generated_secrets[]`: app-wide. In the single-container form each carries the `env` it is
/// delivered as; with `services` (§2.2) none does, and a service names the ones it receives in
/// its `secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedSecret {
    pub name: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// `services[].secrets[]` (§2.2): a generated secret of the app, delivered as `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSecret {
    pub name: String,
    pub env: String,
}

/// `backup` (§2.2): how a service's data is made consistent, captured and restored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Runs inside the service before its volumes are captured (e.g. `pg_dump`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Where `command` writes, inside one of the service's volume targets.
    #[serde(default)]
    pub output: Option<String>,
    /// Runs inside the service after its volumes are filled, before it is marked healthy.
    #[serde(default)]
    pub restore: Vec<String>,
    /// The volumes captured; `None` is all the service's.
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
}

/// One container of an app (§2.2). The single-container form reads as one of these, named
/// after the app ([`AppManifest::stack`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub image: Image,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u64,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<ServiceSecret>,
    pub backup: Option<Backup>,
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
    /// A SemVer range.
    pub version: String,
    /// The dependency's publisher (v2); `None` is the dependent's own publisher or its §4.5
    /// successor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
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
    /// The single-container form's image; `None` when the app lists `services` (§2.2).
    pub image: Option<Image>,
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
    /// The containers of a multi-service app (§2.2, v2); empty in the single-container form,
    /// whose fields are the top-level ones. [`AppManifest::stack`] reads both alike.
    #[serde(default)]
    pub services: Vec<Service>,
    /// The services a dependent app may reach (§2.2, v2).
    #[serde(default)]
    pub exports: Vec<String>,
    /// The single-container form's backup hook (v2).
    pub backup: Option<Backup>,
}

impl AppManifest {
    /// The typed view of a raw manifest. Call only after [`super::validate`] passed: the
    /// validator gives the precise errors, this gives a single summary. In a v1 manifest the
    /// fields v2 introduced without changing what runs (`backup`, `exports`,
    /// `dependencies[].did`) are unknown fields and ignored, so they are left out here.
    pub fn from_raw(raw: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        let mut raw = raw.clone();
        if raw.get("schema").and_then(Value::as_str) == Some(super::SCHEMA_V1) {
            raw.remove("backup");
            raw.remove("exports");
            if let Some(Value::Array(deps)) = raw.get_mut("dependencies") {
                for d in deps.iter_mut().filter_map(Value::as_object_mut) {
                    d.remove("did");
                }
            }
        }
        // Numbers like `1.0` are integers by §2; normalise them so serde's integer fields accept them.
        serde_json::from_value(normalise_numbers(Value::Object(raw)))
    }

    /// Whether the app lists `services` (§2.2) rather than being one container.
    pub fn is_stack(&self) -> bool {
        !self.services.is_empty()
    }

    /// What runs: the listed services, or the single-container form as one service named
    /// after the app that receives every generated secret.
    pub fn stack(&self) -> Vec<Service> {
        if self.is_stack() {
            return self.services.clone();
        }
        vec![Service {
            name: self.id.clone(),
            image: self.image.clone().unwrap_or_else(|| Image {
                name: String::new(),
                id: String::new(),
                archive: None,
                layers: None,
            }),
            command: self.command.clone(),
            env: self.env.clone(),
            ports: self.ports.clone(),
            volumes: self.volumes.clone(),
            health_check: self.health_check.clone(),
            security: self.security.clone(),
            resources: self.resources.clone(),
            stop_grace_secs: self.stop_grace_secs,
            depends_on: vec![],
            secrets: self
                .generated_secrets
                .iter()
                .map(|g| ServiceSecret {
                    name: g.name.clone(),
                    env: g.env.clone().unwrap_or_default(),
                })
                .collect(),
            backup: self.backup.clone(),
        }]
    }

    /// Every image the app runs, one per service, in the services' order.
    pub fn images(&self) -> Vec<&Image> {
        if self.is_stack() {
            self.services.iter().map(|s| &s.image).collect()
        } else {
            self.image.iter().collect()
        }
    }

    /// The runtime view the rule book checks, of `services` = [`AppManifest::stack`] (the
    /// orchestrator checks the same view of the spec the node makes from this manifest; §2's
    /// defaults are the rule book's). Fails only on a field the validator should already have
    /// refused (a bind that is not an IP).
    pub fn rules_view<'a>(
        &'a self,
        services: &'a [Service],
    ) -> Result<archy_rules::App<'a>, String> {
        Ok(archy_rules::App {
            name: &self.id,
            publisher: &self.publisher.did,
            version: &self.version,
            listed: self.is_stack(),
            services: services
                .iter()
                .map(Service::rules_view)
                .collect::<Result<_, _>>()?,
            secrets: self
                .generated_secrets
                .iter()
                .map(|s| s.name.as_str())
                .collect(),
            dependencies: self.dependencies.iter().map(|d| d.app.as_str()).collect(),
        })
    }

    /// The parsed SemVer version (validated).
    pub fn semver(&self) -> semver::Version {
        semver::Version::parse(&self.version).expect("validated manifests have SemVer versions")
    }
}

impl Service {
    /// The rule book's view of this service.
    fn rules_view(&self) -> Result<archy_rules::Service<'_>, String> {
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
        Ok(archy_rules::Service {
            name: &self.name,
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
                .secrets
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
            command: self.command.iter().map(String::as_str).collect(),
            depends_on: self.depends_on.iter().map(String::as_str).collect(),
        })
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
