//! Apps on this machine: a verified manifest becomes the orchestrator's `AppSpec`, and the
//! user's commands (install, update, start, stop, …) become reconciler calls.

use super::NodeCore;
use crate::manifest::{self, AppManifest};
use anyhow::{bail, Context, Result};
use archy_orchestrator::{
    AppSpec, HealthCheck, HealthKind, PortSpec, Protocol, Reconciler, Resources, SecretKind,
    SecretSpec, VolumeSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The app operations of the node API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppsRequest {
    List,
    /// Install the latest release of a catalog app (`id` or `did/id`).
    Install {
        app: String,
        confirm: bool,
    },
    /// Install from a local manifest whose image is already in Podman (no catalog, no swarm).
    InstallManifest {
        manifest: Value,
    },
    /// Update an installed app to the latest release of the DID it came from.
    Update {
        app: String,
        confirm: bool,
    },
    Start {
        app: String,
    },
    Stop {
        app: String,
    },
    Restart {
        app: String,
    },
    Uninstall {
        app: String,
        purge: bool,
    },
    Logs {
        app: String,
        tail: Option<u32>,
    },
    Reconcile,
    /// Every Podman object of the node with its owner; orphans flagged.
    Audit,
}

/// Handles an app request.
pub async fn handle(core: &NodeCore, req: AppsRequest) -> Result<Value> {
    let r = core.reconciler().await?;
    let _exclusive = match req {
        AppsRequest::List | AppsRequest::Logs { .. } | AppsRequest::Audit => None,
        _ => Some(core.app_ops.lock().await),
    };
    Ok(match req {
        AppsRequest::List => {
            let installed = core.catalog.installed()?;
            let mut out = Vec::new();
            for status in r.list().await? {
                let mut v = serde_json::to_value(&status)?;
                if let Some(rec) = installed.iter().find(|i| i.app == status.app) {
                    v["did"] = json!(rec.did);
                }
                out.push(v);
            }
            Value::Array(out)
        }
        AppsRequest::Install { app, confirm } => {
            super::install::install_from_catalog(core, &app, confirm).await?
        }
        AppsRequest::Update { app, confirm } => super::install::update(core, &app, confirm).await?,
        AppsRequest::InstallManifest { manifest } => {
            let Value::Object(mut raw) = manifest else {
                bail!("the manifest must be a JSON object");
            };
            crate::envelope::fill_publisher(&mut raw, &core.identity, crate::unix_now())
                .map_err(|v| anyhow::anyhow!("{v}"))?;
            let violations = manifest::validate(&raw, &core.config.policy, crate::unix_now());
            if !violations.is_empty() {
                let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
                bail!("the manifest is refused:\n{}", lines.join("\n"));
            }
            let typed = AppManifest::from_raw(&raw)?;
            let outcome = r.install(spec_from_manifest(&typed)?).await?;
            serde_json::to_value(outcome)?
        }
        AppsRequest::Start { app } => serde_json::to_value(r.start(&app).await?)?,
        AppsRequest::Stop { app } => serde_json::to_value(r.stop(&app).await?)?,
        AppsRequest::Restart { app } => serde_json::to_value(r.restart(&app).await?)?,
        AppsRequest::Uninstall { app, purge } => {
            let report = r.uninstall(&app, purge).await?;
            core.catalog.remove_installed(&app)?;
            serde_json::to_value(report)?
        }
        AppsRequest::Logs { app, tail } => json!(r.logs(&app, tail).await?),
        AppsRequest::Reconcile => serde_json::to_value(r.reconcile_once().await?)?,
        AppsRequest::Audit => serde_json::to_value(r.audit().await?)?,
    })
}

/// Converts a validated manifest into the orchestrator's spec (PROTOCOL §2 defaults applied).
/// Pure: the manifest already passed the schema and policy checks.
pub fn spec_from_manifest(m: &AppManifest) -> Result<AppSpec> {
    let ports = m
        .ports
        .iter()
        .map(|p| {
            Ok(PortSpec {
                container: p.container,
                host: p.host,
                protocol: if p.protocol == "udp" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                bind: p
                    .bind
                    .parse()
                    .with_context(|| format!("port bind {:?}", p.bind))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let generated_secrets = m
        .generated_secrets
        .iter()
        .map(|s| {
            let kind = match s.kind.as_str() {
                "hex16" => SecretKind::Hex16,
                "hex32" => SecretKind::Hex32,
                "base64" => SecretKind::Base64,
                other => bail!("generated_secrets: unknown kind {other:?}"),
            };
            Ok(SecretSpec {
                name: s.name.clone(),
                kind,
                env: s.env.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let health_check = m
        .health_check
        .as_ref()
        .map(|h| {
            let kind = match h.kind.as_str() {
                "http" => HealthKind::Http,
                "tcp" => HealthKind::Tcp,
                "exec" => HealthKind::Exec,
                other => bail!("health_check.type: unknown {other:?}"),
            };
            Ok(HealthCheck {
                kind,
                port: h.port,
                path: h.path.clone(),
                command: h.command.clone().unwrap_or_default(),
                interval_secs: h.interval_s.unwrap_or(2) as u32,
                timeout_secs: h.timeout_s.unwrap_or(3) as u32,
                retries: h.retries.unwrap_or(10),
            })
        })
        .transpose()?;
    Ok(AppSpec {
        name: m.id.clone(),
        publisher: m.publisher.did.clone(),
        version: m.version.clone(),
        image: m.image.name.clone(),
        image_id: Some(m.image.id.clone()),
        ports,
        volumes: m
            .volumes
            .iter()
            .map(|v| VolumeSpec {
                name: v.name.clone(),
                target: v.target.clone(),
            })
            .collect(),
        env: m.env.clone(),
        generated_secrets,
        capabilities: m
            .security
            .capabilities
            .iter()
            .map(|c| archy_rules::normalize_capability(c))
            .collect(),
        read_only_root: m.security.read_only_root,
        resources: Resources {
            memory_mb: m.resources.memory_mb,
            cpus: m.resources.cpus.clone(),
        },
        health_check,
        stop_grace_secs: m.stop_grace_secs.min(u32::MAX as u64) as u32,
        dependencies: m.dependencies.iter().map(|d| d.app.clone()).collect(),
        command: m.command.clone(),
    })
}

impl NodeCore {
    /// The reconciler of this home (opened on first use). Its state lives in `<home>/apps`;
    /// it only sees containers labelled with this node's owner id, so several nodes can share
    /// one Podman.
    pub async fn reconciler(&self) -> Result<&Arc<Reconciler>> {
        self.reconciler
            .get_or_try_init(|| async {
                let mut cfg = archy_orchestrator::Config::new(self.home.join("apps"));
                let mut argv = self.config.apps.podman_prefix.clone();
                argv.push("podman".into());
                cfg.podman = archy_orchestrator::PodmanCmd::from_argv(argv);
                cfg.owner = format!("node-{}", &self.identity.nostr_hex()[..16]);
                // Apps installed before apps had a publisher: catalog installs name theirs; a
                // local manifest was filled in with this node's own identity.
                cfg.legacy_publishers = self
                    .catalog
                    .installed()?
                    .into_iter()
                    .map(|i| (i.app, i.did))
                    .collect();
                cfg.legacy_default_publisher = self.identity.did();
                cfg.interval =
                    std::time::Duration::from_secs(self.config.apps.reconcile_interval_secs.max(1));
                // The one policy type: the validator checked releases with this same value.
                cfg.policy = self.config.policy.clone();
                Ok(Arc::new(
                    Reconciler::open(cfg).context("opening the app state")?,
                ))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifest_to_spec_keeps_every_field_and_defaults() {
        let mut m = archy_protocol::testing::manifest();
        m.insert("ports".into(), json!([{"container": 8080, "host": 18080}]));
        m.insert(
            "volumes".into(),
            json!([{"name": "data", "target": "/data"}]),
        );
        m.insert(
            "generated_secrets".into(),
            json!([{"name": "tok", "kind": "hex32", "env": "TOKEN"}]),
        );
        m.insert(
            "security".into(),
            json!({"capabilities": ["cap_chown"], "read_only_root": true}),
        );
        m.insert(
            "health_check".into(),
            json!({"type": "http", "port": 8080, "path": "/"}),
        );
        m.insert("resources".into(), json!({"memory_mb": 64, "cpus": "0.5"}));
        let typed = AppManifest::from_raw(&m).unwrap();
        let spec = spec_from_manifest(&typed).unwrap();
        assert_eq!(spec.name, "hello-web");
        assert_eq!(spec.image_id.as_deref(), Some(typed.image.id.as_str()));
        assert_eq!(spec.ports[0].bind.to_string(), "127.0.0.1");
        assert_eq!(spec.capabilities, ["CHOWN"]);
        assert!(spec.read_only_root);
        assert_eq!(spec.stop_grace_secs, 30);
        assert_eq!(spec.generated_secrets[0].kind, SecretKind::Hex32);
        assert_eq!(spec.health_check.as_ref().unwrap().kind, HealthKind::Http);
        assert_eq!(spec.resources.cpus.as_deref(), Some("0.5"));
        spec.validate(&archy_orchestrator::Policy::default())
            .unwrap();
    }
}
