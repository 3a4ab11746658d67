//! Apps on this machine: a verified manifest becomes the orchestrator's `AppSpec`, and the
//! user's commands (install, update, start, stop, …) become reconciler calls.

use super::install::{FetchImageReport, InstallReport, UpdateReply};
use super::rpc::{Operation, Request};
use super::NodeCore;
use crate::manifest::{self, AppManifest, RawManifest};
use anyhow::{bail, Context, Result};
use archy_orchestrator::{
    AppSpec, AppStatus, AuditReport, HealthCheck, HealthKind, InstallOutcome, PortSpec, Protocol,
    ReconcileReport, Reconciler, Resources, SecretKind, SecretSpec, ServiceSpec, VolumeSpec,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The app operations of the node API: `{"method": "apps", "params": {"op": "...", ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppsRequest {
    List,
    Install(Install),
    Fetch(Fetch),
    InstallManifest(InstallManifest),
    Update(Update),
    Start(Start),
    Stop(Stop),
    Restart(Restart),
    Uninstall(Uninstall),
    Logs(Logs),
    Reconcile,
    Audit,
}

/// Runs a wire app request and serialises its typed reply (the local API's edge).
pub async fn handle(core: &NodeCore, req: AppsRequest) -> Result<serde_json::Value> {
    use super::rpc::wire;
    match req {
        AppsRequest::List => wire(core, List).await,
        AppsRequest::Install(op) => wire(core, op).await,
        AppsRequest::Fetch(op) => wire(core, op).await,
        AppsRequest::InstallManifest(op) => wire(core, op).await,
        AppsRequest::Update(op) => wire(core, op).await,
        AppsRequest::Start(op) => wire(core, op).await,
        AppsRequest::Stop(op) => wire(core, op).await,
        AppsRequest::Restart(op) => wire(core, op).await,
        AppsRequest::Uninstall(op) => wire(core, op).await,
        AppsRequest::Logs(op) => wire(core, op).await,
        AppsRequest::Reconcile => wire(core, Reconcile).await,
        AppsRequest::Audit => wire(core, Audit).await,
    }
}

macro_rules! app_request {
    (unit: $($u:ident),*; holding: $($h:ident),*) => {
        $(impl From<$u> for Request {
            fn from(_: $u) -> Request {
                Request::Apps(AppsRequest::$u)
            }
        })*
        $(impl From<$h> for Request {
            fn from(op: $h) -> Request {
                Request::Apps(AppsRequest::$h(op))
            }
        })*
    };
}
app_request!(unit: List, Reconcile, Audit;
    holding: Install, Fetch, InstallManifest, Update, Start, Stop, Restart, Uninstall, Logs);

/// Installed apps: version, intent, state, health, last error.
#[derive(Debug, Clone, Copy)]
pub struct List;

/// One app in `apps list`: its status and, for a catalog install, the publisher's DID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListedApp {
    #[serde(flatten)]
    pub status: AppStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
    /// Installed because this app needed it (it stays when that app goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_of: Option<String>,
}

impl Operation for List {
    type Reply = Vec<ListedApp>;
    async fn run(self, core: &NodeCore) -> Result<Vec<ListedApp>> {
        let r = core.reconciler().await?;
        let installed = core.catalog.installed()?;
        Ok(r.list()
            .await?
            .into_iter()
            .map(|status| {
                let rec = installed.iter().find(|i| i.app == status.app);
                ListedApp {
                    did: rec.map(|i| i.did.clone()),
                    dependency_of: rec.and_then(|i| i.dependency_of.clone()),
                    status,
                }
            })
            .collect())
    }
}

/// Install the latest release of a catalog app (`id` or `did/id`). Also the arguments of
/// `archy apps install` (one definition for the CLI and the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub app: String,
    /// Install even though the publisher is below the install tier (never when blocked).
    #[arg(long)]
    pub confirm: bool,
}

impl Operation for Install {
    type Reply = InstallReport;
    async fn run(self, core: &NodeCore) -> Result<InstallReport> {
        let _exclusive = core.app_ops.lock().await;
        super::install::install_from_catalog(core, &self.app, self.confirm).await
    }
}

/// Fetch the latest release of a catalog app's image into the blob store, verified, without
/// installing it (a later install or update of that release moves nothing). Also the
/// arguments of `archy apps fetch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    pub app: String,
    /// Fetch even though the publisher is below the install tier (never when blocked).
    #[arg(long)]
    pub confirm: bool,
}

impl Operation for Fetch {
    type Reply = FetchImageReport;
    /// Podman is not touched, so no app operation is held up by it.
    async fn run(self, core: &NodeCore) -> Result<FetchImageReport> {
        super::install::fetch_from_catalog(core, &self.app, self.confirm).await
    }
}

/// Install from a local manifest whose image is already in Podman (no catalog, no swarm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallManifest {
    pub manifest: RawManifest,
}

impl Operation for InstallManifest {
    type Reply = InstallOutcome;
    async fn run(self, core: &NodeCore) -> Result<InstallOutcome> {
        let r = core.reconciler().await?;
        let _exclusive = core.app_ops.lock().await;
        let mut raw = self.manifest;
        crate::envelope::fill_publisher(&mut raw, &core.identity, crate::unix_now())
            .map_err(|v| anyhow::anyhow!("{v}"))?;
        let violations = manifest::validate(&raw, &core.config.policy, crate::unix_now());
        if !violations.is_empty() {
            let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
            bail!("the manifest is refused:\n{}", lines.join("\n"));
        }
        let typed = AppManifest::from_raw(&raw)?;
        Ok(r.install(spec_from_manifest(&typed)?).await?)
    }
}

/// Update an installed app to the latest release of the DID it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub app: String,
    /// Update even though the publisher is below the install tier (never when blocked).
    #[arg(long)]
    pub confirm: bool,
}

impl Operation for Update {
    type Reply = UpdateReply;
    async fn run(self, core: &NodeCore) -> Result<UpdateReply> {
        let _exclusive = core.app_ops.lock().await;
        super::install::update(core, &self.app, self.confirm).await
    }
}

/// Declares an app verb `{app}` that replies with the app's status.
macro_rules! status_verb {
    ($($(#[$doc:meta])* $op:ident => $method:ident),*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct $op {
            pub app: String,
        }

        impl Operation for $op {
            type Reply = AppStatus;
            async fn run(self, core: &NodeCore) -> Result<AppStatus> {
                let r = core.reconciler().await?;
                let _exclusive = core.app_ops.lock().await;
                Ok(r.$method(&self.app).await?)
            }
        }
    )*};
}
status_verb!(
    /// Start a stopped app.
    Start => start,
    /// Stop an app; the reconciler never starts it again on its own.
    Stop => stop,
    /// Stop and start an app.
    Restart => restart
);

/// Remove the app's container; its volumes and secrets stay unless `purge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Uninstall {
    pub app: String,
    /// Also remove its volumes and secrets.
    #[arg(long)]
    pub purge: bool,
}

impl Operation for Uninstall {
    type Reply = ReconcileReport;
    async fn run(self, core: &NodeCore) -> Result<ReconcileReport> {
        let r = core.reconciler().await?;
        let _exclusive = core.app_ops.lock().await;
        let report = r.uninstall(&self.app, self.purge).await?;
        core.catalog.remove_installed(&self.app)?;
        super::gc::after_change(core).await;
        Ok(report)
    }
}

/// The app container's logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    pub app: String,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<u32>,
}

impl Operation for Logs {
    type Reply = String;
    async fn run(self, core: &NodeCore) -> Result<String> {
        let r = core.reconciler().await?;
        Ok(r.logs(&self.app, self.tail).await?)
    }
}

/// One reconcile pass.
#[derive(Debug, Clone, Copy)]
pub struct Reconcile;

impl Operation for Reconcile {
    type Reply = ReconcileReport;
    async fn run(self, core: &NodeCore) -> Result<ReconcileReport> {
        let r = core.reconciler().await?;
        let _exclusive = core.app_ops.lock().await;
        Ok(r.reconcile_once().await?)
    }
}

/// Every Podman object of the node with its owner; orphans flagged.
#[derive(Debug, Clone, Copy)]
pub struct Audit;

impl Operation for Audit {
    type Reply = AuditReport;
    async fn run(self, core: &NodeCore) -> Result<AuditReport> {
        let r = core.reconciler().await?;
        Ok(r.audit().await?)
    }
}

/// Converts a validated manifest into the orchestrator's spec (PROTOCOL §2 defaults applied):
/// one service per listed service, or the single-container form as the app's one unnamed
/// service. Pure: the manifest already passed the schema and policy checks.
pub fn spec_from_manifest(m: &AppManifest) -> Result<AppSpec> {
    let kinds: std::collections::BTreeMap<&str, SecretKind> = m
        .generated_secrets
        .iter()
        .map(|s| {
            let kind = match s.kind.as_str() {
                "hex16" => SecretKind::Hex16,
                "hex32" => SecretKind::Hex32,
                "base64" => SecretKind::Base64,
                other => bail!("generated_secrets: unknown kind {other:?}"),
            };
            Ok((s.name.as_str(), kind))
        })
        .collect::<Result<_>>()?;
    let services = m
        .stack()
        .iter()
        .map(|svc| service_spec(m, svc, &kinds))
        .collect::<Result<Vec<_>>>()?;
    Ok(AppSpec {
        name: m.id.clone(),
        publisher: m.publisher.did.clone(),
        version: m.version.clone(),
        services,
        dependencies: m.dependencies.iter().map(|d| d.app.clone()).collect(),
        exports: m.exports.clone(),
    })
}

/// One service of the orchestrator's spec.
fn service_spec(
    m: &AppManifest,
    svc: &manifest::Service,
    kinds: &std::collections::BTreeMap<&str, SecretKind>,
) -> Result<ServiceSpec> {
    let ports = svc
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
    let generated_secrets = svc
        .secrets
        .iter()
        .map(|s| {
            let kind = *kinds
                .get(s.name.as_str())
                .with_context(|| format!("secret {:?} is not a generated secret", s.name))?;
            Ok(SecretSpec {
                name: s.name.clone(),
                kind,
                env: s.env.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let health_check = svc
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
                interval_secs: h
                    .interval_s
                    .unwrap_or(u64::from(archy_rules::DEFAULT_HEALTH_INTERVAL_SECS))
                    as u32,
                timeout_secs: h
                    .timeout_s
                    .unwrap_or(u64::from(archy_rules::DEFAULT_HEALTH_TIMEOUT_SECS))
                    as u32,
                retries: h.retries.unwrap_or(archy_rules::DEFAULT_HEALTH_RETRIES),
            })
        })
        .transpose()?;
    Ok(ServiceSpec {
        // The single-container form's one service is the app itself.
        name: if m.is_stack() {
            svc.name.clone()
        } else {
            String::new()
        },
        depends_on: svc.depends_on.clone(),
        image: svc.image.name.clone(),
        image_id: Some(svc.image.id.clone()),
        ports,
        volumes: svc
            .volumes
            .iter()
            .map(|v| VolumeSpec {
                name: v.name.clone(),
                target: v.target.clone(),
            })
            .collect(),
        env: svc.env.clone(),
        generated_secrets,
        capabilities: svc
            .security
            .capabilities
            .iter()
            .map(|c| archy_rules::normalize_capability(c))
            .collect(),
        read_only_root: svc.security.read_only_root,
        resources: Resources {
            memory_mb: svc.resources.memory_mb,
            cpus: svc.resources.cpus.clone(),
        },
        health_check,
        stop_grace_secs: svc.stop_grace_secs.min(u32::MAX as u64) as u32,
        command: svc.command.clone(),
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
                cfg.podman = self.podman.clone();
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
    fn a_stack_becomes_one_named_service_per_service() {
        let raw = archy_protocol::testing::stack_manifest();
        let typed = AppManifest::from_raw(&raw).unwrap();
        let spec = spec_from_manifest(&typed).unwrap();
        assert!(spec.is_stack());
        let names: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "db"]);
        assert_eq!(spec.services[0].depends_on, ["db"]);
        // One generated secret reaches both services, each under its own variable.
        assert_eq!(spec.services[0].generated_secrets[0].env, "DB_PASSWORD");
        assert_eq!(
            spec.services[1].generated_secrets[0].env,
            "POSTGRES_PASSWORD"
        );
        assert_eq!(
            spec.services[1].generated_secrets[0].kind,
            SecretKind::Hex32
        );
        assert_eq!(spec.exports, ["db"]);
        spec.validate(&archy_orchestrator::Policy::default())
            .unwrap();
        // The single-container form stays one unnamed service, hashed as before.
        let single = spec_from_manifest(
            &AppManifest::from_raw(&archy_protocol::testing::manifest()).unwrap(),
        )
        .unwrap();
        assert!(!single.is_stack() && single.services[0].name.is_empty());
    }

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
        assert_eq!(
            spec.service().image_id.as_deref(),
            Some(typed.images()[0].id.as_str())
        );
        assert_eq!(spec.service().ports[0].bind.to_string(), "127.0.0.1");
        assert_eq!(spec.service().capabilities, ["CHOWN"]);
        assert!(spec.service().read_only_root);
        assert_eq!(spec.service().stop_grace_secs, 30);
        assert_eq!(spec.service().generated_secrets[0].kind, SecretKind::Hex32);
        assert_eq!(
            spec.service().health_check.as_ref().unwrap().kind,
            HealthKind::Http
        );
        assert_eq!(spec.service().resources.cpus.as_deref(), Some("0.5"));
        spec.validate(&archy_orchestrator::Policy::default())
            .unwrap();
    }
}
