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

/// The one rule book (PROTOCOL.md §2 limits, capability lists, the operator's policy).
pub use archy_rules::{normalize_capability, Policy, DEFAULT_ALLOWED_CAPS, NEVER_ALLOWED_CAPS};

/// What an app needs to run: who it is and its services. Serialized with serde; unknown fields
/// are an error.
///
/// Today an app has exactly one service (`validate` refuses more); the multi-service apps of
/// PROTOCOL §2.2 fill `services` without reshaping this type. A spec stored before `services`
/// existed (every service field at the top level, [`FlatSpec`]) still reads, as one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
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
    /// What runs: one service today.
    pub services: Vec<ServiceSpec>,
    /// Apps (by name) that must be running before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Services a dependent app may reach (PROTOCOL §2.2 `exports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
}

/// One container of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name in a stack (PROTOCOL §2.2): its host name on the app's network.
    /// Empty in the single-container form, whose one service is the app itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Services of the same app that must be healthy before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
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
    /// Overrides the image's command when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl ServiceSpec {
    /// A service of `image` with the secure defaults and nothing else.
    pub fn new(image: impl Into<String>) -> Self {
        ServiceSpec {
            name: String::new(),
            depends_on: vec![],
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
            command: vec![],
        }
    }

    /// The host port and bind address that publish `container_port` (tcp).
    pub fn published(&self, container_port: u16) -> Option<&PortSpec> {
        self.ports
            .iter()
            .find(|p| p.container == container_port && p.protocol == Protocol::Tcp)
    }
}

/// The form of a one-service spec before `services` existed: what older nodes stored, and what
/// the spec hash of a one-service app is computed over (so containers made by an older node
/// are adopted, not recreated). Field for field the old `AppSpec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatSpec {
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    publisher: String,
    version: String,
    image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<VolumeSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    generated_secrets: Vec<SecretSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    capabilities: Vec<String>,
    #[serde(default)]
    read_only_root: bool,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_check: Option<HealthCheck>,
    #[serde(default = "default_grace")]
    stop_grace_secs: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
}

impl From<FlatSpec> for AppSpec {
    fn from(f: FlatSpec) -> AppSpec {
        AppSpec {
            name: f.name,
            publisher: f.publisher,
            version: f.version,
            services: vec![ServiceSpec {
                name: String::new(),
                depends_on: vec![],
                image: f.image,
                image_id: f.image_id,
                ports: f.ports,
                volumes: f.volumes,
                env: f.env,
                generated_secrets: f.generated_secrets,
                capabilities: f.capabilities,
                read_only_root: f.read_only_root,
                resources: f.resources,
                health_check: f.health_check,
                stop_grace_secs: f.stop_grace_secs,
                command: f.command,
            }],
            dependencies: f.dependencies,
            exports: vec![],
        }
    }
}

/// The current form, `{name, publisher, version, services, dependencies}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesForm {
    name: String,
    #[serde(default)]
    publisher: String,
    version: String,
    services: Vec<ServiceSpec>,
    #[serde(default)]
    dependencies: Vec<String>,
    #[serde(default)]
    exports: Vec<String>,
}

impl TryFrom<serde_json::Value> for AppSpec {
    type Error = serde_json::Error;
    fn try_from(v: serde_json::Value) -> Result<AppSpec, serde_json::Error> {
        if v.get("services").is_some() {
            let f: ServicesForm = serde_json::from_value(v)?;
            Ok(AppSpec {
                name: f.name,
                publisher: f.publisher,
                version: f.version,
                services: f.services,
                dependencies: f.dependencies,
                exports: f.exports,
            })
        } else {
            Ok(serde_json::from_value::<FlatSpec>(v)?.into())
        }
    }
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

impl AppSpec {
    /// A minimal spec of one service; fill the other fields directly.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        image: impl Into<String>,
    ) -> Self {
        AppSpec {
            name: name.into(),
            publisher: String::new(),
            version: version.into(),
            services: vec![ServiceSpec::new(image)],
            dependencies: vec![],
            exports: vec![],
        }
    }

    /// The app's service. Apps have exactly one until multi-service apps land (`validate`
    /// refuses any other count, and every spec the node makes has one).
    pub fn service(&self) -> &ServiceSpec {
        &self.services[0]
    }

    /// [`AppSpec::service`], to fill in.
    pub fn service_mut(&mut self) -> &mut ServiceSpec {
        &mut self.services[0]
    }

    /// Podman container name of the single-container form (of a stack's first service, use
    /// [`AppSpec::container_of`] for a stack).
    pub fn container_name(&self) -> String {
        self.container_of(self.service())
    }

    /// Podman container name of one of the app's services: `archy_<app>`, or
    /// `archy_<app>_<service>` in a stack.
    pub fn container_of(&self, svc: &ServiceSpec) -> String {
        if svc.name.is_empty() {
            container_name(&self.name)
        } else {
            crate::names::service_container(&self.name, &svc.name)
        }
    }

    /// Whether the app's containers run on the app's own network: a stack's (its services
    /// find each other there), a dependent's (its dependencies' exported services are
    /// connected there, PROTOCOL §2.2) and an exporter's (Podman connects only containers on
    /// a bridge network to another network).
    pub fn has_network(&self) -> bool {
        self.is_stack() || !self.dependencies.is_empty() || !self.exports.is_empty()
    }

    /// The name under which service `svc` (empty: the single container, named after the app)
    /// of this app is reached from a dependent app: `<service>.<app id>` (PROTOCOL §2.2).
    pub fn export_alias(&self, svc: &str) -> String {
        let svc = if svc.is_empty() {
            self.name.as_str()
        } else {
            svc
        };
        format!("{svc}.{}", self.name)
    }

    /// The containers of the services a dependent may reach, with the name it reaches each by.
    pub fn exported(&self) -> Vec<(String, String)> {
        self.exports
            .iter()
            .filter_map(|e| {
                let svc = self
                    .services
                    .iter()
                    .find(|s| s.name == *e || (s.name.is_empty() && *e == self.name))?;
                Some((self.container_of(svc), self.export_alias(e)))
            })
            .collect()
    }

    /// The app's Podman network (a stack's services find each other on it by name).
    pub fn network_name(&self) -> String {
        crate::names::network(&self.name)
    }

    /// The service whose container has this name.
    pub fn service_named(&self, container: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|s| self.container_of(s) == container)
    }

    /// Service indices in start order: each after the services in its `depends_on` (ties in
    /// listed order). A cycle (refused by [`AppSpec::validate`]) falls back to listed order.
    pub fn start_order(&self) -> Vec<usize> {
        let view = self.rules_view();
        match archy_rules::start_order(&view) {
            Ok(names) => names
                .iter()
                .filter_map(|n| view.services.iter().position(|s| s.name == *n))
                .collect(),
            Err(_) => (0..self.services.len()).collect(),
        }
    }

    /// The app's volumes, each name once (services that mount one name share it).
    pub fn volumes(&self) -> Vec<&VolumeSpec> {
        let mut out: Vec<&VolumeSpec> = Vec::new();
        for v in self.services.iter().flat_map(|s| &s.volumes) {
            if !out.iter().any(|o| o.name == v.name) {
                out.push(v);
            }
        }
        out
    }

    /// The app's generated secrets, each name once (services that receive one share its value).
    pub fn secrets(&self) -> Vec<&SecretSpec> {
        let mut out: Vec<&SecretSpec> = Vec::new();
        for v in self.services.iter().flat_map(|s| &s.generated_secrets) {
            if !out.iter().any(|o| o.name == v.name) {
                out.push(v);
            }
        }
        out
    }

    /// The longest stop grace of the app's services.
    pub fn stop_grace_secs(&self) -> u32 {
        self.services
            .iter()
            .map(|s| s.stop_grace_secs)
            .max()
            .unwrap_or(0)
    }

    /// Podman volume name for one of this app's volumes.
    pub fn volume_name(&self, volume: &str) -> String {
        volume_name(&self.name, volume)
    }

    /// BLAKE3 (hex) of the canonical JSON of the spec (object keys sorted, no whitespace).
    /// Keys are sorted by our own serializer, not serde_json's map type, so the hash does not
    /// change if another crate in the build enables serde_json's `preserve_order`. A
    /// one-service spec is hashed in its [`FlatSpec`] form, as before `services` existed, so a
    /// container an older node made is adopted, not recreated.
    pub fn spec_hash(&self) -> String {
        let value = match self.flat() {
            Some(flat) => serde_json::to_value(flat),
            None => serde_json::to_value(self),
        }
        .expect("AppSpec serializes");
        let mut out = String::new();
        canonical_json(&value, &mut out);
        blake3::hash(out.as_bytes()).to_hex().to_string()
    }

    /// The one-service spec in its flat form.
    fn flat(&self) -> Option<FlatSpec> {
        let [s] = self.services.as_slice() else {
            return None;
        };
        if !s.name.is_empty() || !s.depends_on.is_empty() || !self.exports.is_empty() {
            return None;
        }
        Some(FlatSpec {
            name: self.name.clone(),
            publisher: self.publisher.clone(),
            version: self.version.clone(),
            image: s.image.clone(),
            image_id: s.image_id.clone(),
            ports: s.ports.clone(),
            volumes: s.volumes.clone(),
            env: s.env.clone(),
            generated_secrets: s.generated_secrets.clone(),
            capabilities: s.capabilities.clone(),
            read_only_root: s.read_only_root,
            resources: s.resources.clone(),
            health_check: s.health_check.clone(),
            stop_grace_secs: s.stop_grace_secs,
            dependencies: self.dependencies.clone(),
            command: s.command.clone(),
        })
    }

    /// The host port and bind address that publish `container_port` (tcp) in the service.
    pub fn published(&self, container_port: u16) -> Option<&PortSpec> {
        self.service().published(container_port)
    }

    /// Whether the app lists named services (a stack, PROTOCOL §2.2) rather than being one
    /// container.
    pub fn is_stack(&self) -> bool {
        self.services.iter().any(|s| !s.name.is_empty())
    }

    /// The runtime view the rule book checks.
    fn rules_view(&self) -> archy_rules::App<'_> {
        let mut secrets: Vec<&str> = Vec::new();
        for s in self.services.iter().flat_map(|s| &s.generated_secrets) {
            if !secrets.contains(&s.name.as_str()) {
                secrets.push(&s.name);
            }
        }
        archy_rules::App {
            name: &self.name,
            publisher: &self.publisher,
            version: &self.version,
            listed: self.is_stack(),
            secrets,
            services: self
                .services
                .iter()
                .map(|svc| svc.rules_view(&self.name))
                .collect(),
            dependencies: self.dependencies.iter().map(String::as_str).collect(),
        }
    }

    /// Defensive policy re-check, by the rule book the manifest validator also applies; the
    /// error names the offending field.
    pub fn validate(&self, rules: &Policy) -> Result<(), Error> {
        let refuse = |field: String, reason: String| Error::Policy { field, reason };
        if self.is_stack() {
            if let Some(i) = self.services.iter().position(|s| s.name.is_empty()) {
                return Err(refuse(
                    format!("services[{i}].name"),
                    "every service of a stack is named".into(),
                ));
            }
        }
        // One generated secret has one value: services that receive it agree on its kind.
        let mut kinds: BTreeMap<&str, SecretKind> = BTreeMap::new();
        for (i, svc) in self.services.iter().enumerate() {
            for (j, s) in svc.generated_secrets.iter().enumerate() {
                if *kinds.entry(&s.name).or_insert(s.kind) != s.kind {
                    return Err(refuse(
                        format!("services[{i}].generated_secrets[{j}].kind"),
                        format!("secret `{}` is generated with two kinds", s.name),
                    ));
                }
            }
        }
        for (i, e) in self.exports.iter().enumerate() {
            if !self
                .services
                .iter()
                .any(|s| s.name == *e || (s.name.is_empty() && *e == self.name))
            {
                return Err(refuse(
                    format!("exports[{i}]"),
                    format!("`{e}` is not a service of this app"),
                ));
            }
        }
        archy_rules::check(&self.rules_view(), rules).map_err(|r| Error::Policy {
            field: r.field,
            reason: r.reason,
        })
    }
}

impl ServiceSpec {
    /// The rule book's view of this service of app `app`.
    fn rules_view<'a>(&'a self, app: &'a str) -> archy_rules::Service<'a> {
        archy_rules::Service {
            name: if self.name.is_empty() {
                app
            } else {
                &self.name
            },
            image: &self.image,
            image_id: self.image_id.as_deref(),
            ports: self
                .ports
                .iter()
                .map(|p| archy_rules::Port {
                    container: p.container,
                    host: p.host,
                    udp: p.protocol == Protocol::Udp,
                    bind: p.bind,
                })
                .collect(),
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
            capabilities: self.capabilities.iter().map(String::as_str).collect(),
            memory_mb: self.resources.memory_mb,
            cpus: self.resources.cpus.as_deref(),
            health_check: self.health_check.as_ref().map(|h| archy_rules::Health {
                kind: match h.kind {
                    HealthKind::Http => archy_rules::HealthKind::Http,
                    HealthKind::Tcp => archy_rules::HealthKind::Tcp,
                    HealthKind::Exec => archy_rules::HealthKind::Exec,
                },
                port: h.port,
                path: h.path.as_deref(),
                command_len: h.command.len(),
                timeout_secs: u64::from(h.timeout_secs),
                retries: h.retries,
            }),
            stop_grace_secs: u64::from(self.stop_grace_secs),
            command: self.command.iter().map(String::as_str).collect(),
            depends_on: self.depends_on.iter().map(String::as_str).collect(),
        }
    }
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

    #[test]
    fn a_flat_spec_of_an_older_node_reads_as_one_service_and_keeps_its_hash() {
        // What the store of a node from before `services` holds.
        let flat = serde_json::json!({
            "name": "web",
            "version": "1.0.0",
            "image": "localhost/archy/busybox:latest",
            "ports": [{"container": 8080, "host": 18080, "protocol": "tcp", "bind": "127.0.0.1"}],
            "read_only_root": false,
            "stop_grace_secs": 30
        });
        let spec: AppSpec = serde_json::from_value(flat.clone()).unwrap();
        assert_eq!(spec.services.len(), 1);
        assert_eq!(spec.service().ports[0].host, 18080);
        // The hash older nodes put on the container's label: of exactly that flat form.
        let mut canonical = String::new();
        canonical_json(&flat, &mut canonical);
        assert_eq!(
            spec.spec_hash(),
            blake3::hash(canonical.as_bytes()).to_hex().to_string()
        );
        // Written back in the current form, it reads as the same spec.
        let now = serde_json::to_value(&spec).unwrap();
        assert!(now.get("services").is_some() && now.get("image").is_none());
        assert_eq!(serde_json::from_value::<AppSpec>(now).unwrap(), spec);
    }

    #[test]
    fn unknown_fields_are_refused_in_either_form_and_one_service_is_required() {
        let smuggled = serde_json::json!({
            "name": "web", "version": "1", "image": "x", "privileged": true
        });
        assert!(serde_json::from_value::<AppSpec>(smuggled).is_err());
        let smuggled = serde_json::json!({
            "name": "web", "version": "1", "services": [{"image": "x", "privileged": true}]
        });
        assert!(serde_json::from_value::<AppSpec>(smuggled).is_err());
        let mut two = AppSpec::new("web", "1.0.0", "localhost/a:1");
        two.services.push(ServiceSpec::new("localhost/b:1"));
        assert!(matches!(
            two.validate(&Policy::default()),
            Err(Error::Policy { field, .. }) if field == "services"
        ));
    }

    fn web() -> AppSpec {
        let mut s = AppSpec::new("web", "1.0.0", "localhost/archy/busybox:latest");
        s.service_mut().ports.push(PortSpec {
            container: 8080,
            host: 18080,
            protocol: Protocol::Tcp,
            bind: default_bind(),
        });
        s.service_mut().volumes.push(VolumeSpec {
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
        b.service_mut().env.insert("A".into(), "1".into());
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
        assert_eq!(s.service().ports[0].bind, default_bind());
        assert_eq!(s.service().ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.service().stop_grace_secs, 30);
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
        s.service_mut().capabilities = vec!["cap_sys_admin".into()];
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "capabilities[0]");
        s.service_mut().capabilities = vec!["NET_RAW".into()];
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "capabilities[0]");
        s.service_mut().capabilities = vec!["cap_net_bind_service".into(), "chown".into()];
        s.validate(&p).unwrap();

        let mut s = web();
        s.service_mut().volumes[0].name = "/etc".into();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "volumes[0].name");
        for bad in ["/data/../etc", "/data//x", "/data/", "/", "data", "/a:b"] {
            let mut s = web();
            s.service_mut().volumes[0].target = bad.into();
            assert_eq!(
                field_of(s.validate(&p).unwrap_err()),
                "volumes[0].target",
                "{bad}"
            );
        }
        let mut s = web();
        s.service_mut().volumes[0].target = "/data/..foo".into();
        s.validate(&p).unwrap();

        let mut s = web();
        s.service_mut().ports[0].bind = "0.0.0.0".parse().unwrap();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "ports[0].bind");
        s.service_mut().ports[0].bind = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "ports[0].bind");
        let open = Policy {
            allow_non_loopback_binds: true,
            ..Policy::default()
        };
        s.validate(&open).unwrap();

        let mut s = web();
        s.service_mut().ports[0].host = 80;
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "ports[0].host");

        let mut s = web();
        s.name = "Bad_Name".into();
        assert_eq!(field_of(s.validate(&p).unwrap_err()), "name");

        let mut s = web();
        s.service_mut().health_check = Some(HealthCheck {
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
        s.service_mut().generated_secrets.push(SecretSpec {
            name: "key".into(),
            kind: SecretKind::Hex32,
            env: "KEY".into(),
        });
        s.service_mut().env.insert("KEY".into(), "x".into());
        assert_eq!(
            field_of(s.validate(&p).unwrap_err()),
            "generated_secrets[0].env"
        );
    }

    #[test]
    fn never_allowed_caps_beat_the_allowlist() {
        let p = Policy {
            capability_allowlist: vec!["SYS_ADMIN".into()],
            allow_non_loopback_binds: false,
        };
        let mut s = web();
        s.service_mut().capabilities = vec!["SYS_ADMIN".into()];
        assert!(s.validate(&p).is_err());
    }
}
