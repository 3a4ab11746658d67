//! The Podman verbs of the reconciler: containers (run, start, stop, remove, inspect by
//! name), volumes (inspect, check the owner, create, copy, remove), secrets (create from the
//! 0600 files, inspect, remove), images (present, with the pinned id) and health checks.
//!
//! [`PodmanRuntime`] holds only what these verbs need — the [`PodmanCmd`], the `archy.owner`
//! value and the state directory where the secret files live — and never sees the store or
//! the reconciler, so what decides (apply, the planner) stays apart from what acts. Every
//! check that a pass should make once ("is this image there?", "whose is this volume?") takes
//! the pass's [`Seen`], which remembers the answers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::health;
use crate::names::{self, ObjectName, Owner, Role};
use crate::podman::{
    image_ref, name_in_use, parse_ps, podman_secret_name, run_args, ObservedContainer, PodmanCmd,
    LABEL_OWNER, LABEL_SPEC_HASH,
};
use crate::secrets;
use crate::spec::{AppSpec, ServiceSpec};
use crate::Error;

/// Rebuilds the isolation chains for the bridges given as arguments (see
/// [`PodmanRuntime::hold_isolation`]); idempotent.
const ISOLATION_SCRIPT: &str = r#"set -e
t="iptables -t mangle"
$t -N ARCHY_ISO_1 2>/dev/null || $t -F ARCHY_ISO_1
$t -N ARCHY_ISO_2 2>/dev/null || $t -F ARCHY_ISO_2
for b in "$@"; do
  $t -A ARCHY_ISO_1 -i "$b" ! -o "$b" -j ARCHY_ISO_2
  $t -A ARCHY_ISO_2 -o "$b" -j DROP
done
$t -C FORWARD -j ARCHY_ISO_1 2>/dev/null || $t -I FORWARD 1 -j ARCHY_ISO_1"#;

/// Podman's answer when `unshare --rootless-netns` is asked of a rootful Podman.
const ROOTFUL_UNSHARE: &str = "please use unshare with rootless";

/// Deadline for quick Podman calls (ps, inspect, create, rm). Generous: shared, slow hosts.
pub(crate) const QUICK: Duration = Duration::from_secs(120);
/// Extra time beyond an app's grace that we wait for `podman stop` to return.
const STOP_SLACK: Duration = Duration::from_secs(60);

/// What Podman already answered in this pass. Every Podman process costs 30–150 ms on these
/// hosts, so a pass asks each question once.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Image references found in Podman in this pass, or by `install` just before it under the
    /// same lock. Should an image vanish after its check, `podman run` fails, and a failed update
    /// rolls back as on any other failure.
    pub(crate) images_ok: HashSet<String>,
    /// App networks found or created in this pass.
    pub(crate) networks_ok: HashSet<String>,
    /// Volume names checked in this pass (or by `install` just before it, under the same lock)
    /// → whether Podman has them (with the app's labels): not inspected again before `run`.
    pub(crate) volumes_ok: HashMap<String, bool>,
}

/// The container verbs apply takes: [`crate::runtime::PodmanRuntime`] in production, a script
/// in the unit tests.
pub(crate) trait Containers: Sync {
    /// The images of the spec's services are in Podman (with their pinned ids), each asked
    /// once per pass.
    fn check_image(
        &self,
        seen: &mut Seen,
        spec: &AppSpec,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Volumes, secrets, a stack's network, then one `podman run` of service `svc` (an index
    /// into `spec.services`): the new container's id, or the error with the id of a container
    /// the run left behind (created, its start failed), if any.
    fn run_container(
        &self,
        spec: &AppSpec,
        svc: usize,
        seen: &mut Seen,
    ) -> impl Future<Output = Result<String, (Option<String>, Error)>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Service `svc`'s container `id` passes its health check.
    fn wait_healthy(
        &self,
        spec: &AppSpec,
        svc: usize,
        id: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    fn stop_container(
        &self,
        id: &str,
        grace_secs: u32,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn remove_container(
        &self,
        id: &str,
        grace_secs: u32,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// The app's own network exists (created when missing) and is the app's.
    fn ensure_network(
        &self,
        spec: &AppSpec,
        seen: &mut Seen,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Connects `container` to `network` under `alias` (an exported service of a dependency
    /// into its dependent's network); already connected is fine.
    fn connect(
        &self,
        network: &str,
        container: &str,
        alias: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Removes the app's own (by their labels) volumes and secrets, and its secret files.
    fn purge_objects(
        &self,
        app: &str,
        publisher: &str,
        volumes: Vec<String>,
        secret_names: Vec<String>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A container found by name, with the labels that say whose it is.
struct NamedContainer {
    id: String,
    owner: Option<String>,
    spec_hash: Option<String>,
}

/// The Podman side of the reconciler, for one owner.
#[derive(Clone, Debug)]
pub(crate) struct PodmanRuntime {
    podman: PodmanCmd,
    /// Value of the `archy.owner` label on everything created here.
    owner: String,
    /// Holds `secrets/<app>/`, the source of truth of the generated secrets.
    state_dir: PathBuf,
}

impl PodmanRuntime {
    pub(crate) fn new(podman: PodmanCmd, owner: String, state_dir: PathBuf) -> Self {
        PodmanRuntime {
            podman,
            owner,
            state_dir,
        }
    }

    /// The containers this reconciler owns (`archy.owner` label).
    pub(crate) async fn observe(&self) -> Result<Vec<ObservedContainer>, Error> {
        let out = self
            .podman
            .ok(
                &[
                    "ps".into(),
                    "-a".into(),
                    "--format".into(),
                    "json".into(),
                    "--filter".into(),
                    format!("label={LABEL_OWNER}={}", self.owner),
                ],
                None,
                QUICK,
            )
            .await?;
        parse_ps(&out)
    }

    /// The image of every service of the spec is present (with the expected id).
    pub(crate) async fn ensure_image(&self, spec: &AppSpec) -> Result<(), Error> {
        for svc in &spec.services {
            self.ensure_service_image(svc).await?;
        }
        Ok(())
    }

    /// One service's image is present (and has the expected id).
    async fn ensure_service_image(&self, svc: &ServiceSpec) -> Result<(), Error> {
        let reference = image_ref(svc);
        let out = self
            .podman
            .run(
                &[
                    "image".into(),
                    "inspect".into(),
                    "--format".into(),
                    "{{.Id}}".into(),
                    reference.clone(),
                ],
                None,
                QUICK,
            )
            .await?;
        let missing = || Error::ImageMissing {
            image: svc.image.clone(),
            expected: svc.image_id.clone(),
        };
        if !out.success {
            return Err(missing());
        }
        if svc.image_id.is_some() && !out.stdout.trim().starts_with(&reference) {
            return Err(missing());
        }
        Ok(())
    }

    /// The container called `name`, if Podman has one.
    async fn named(&self, name: &str) -> Result<Option<NamedContainer>, Error> {
        let out = self
            .podman
            .run(
                &["container".into(), "inspect".into(), name.into()],
                None,
                QUICK,
            )
            .await?;
        if !out.success {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim())?;
        let c = &v[0];
        let label = |k: &str| c["Config"]["Labels"][k].as_str().map(str::to_string);
        Ok(c["Id"].as_str().map(|id| NamedContainer {
            id: id.to_string(),
            owner: label(LABEL_OWNER),
            spec_hash: label(LABEL_SPEC_HASH),
        }))
    }

    async fn remove_stale_name(&self, name: &str) -> Result<(), Error> {
        if let Some(c) = self.named(name).await? {
            if c.owner.as_deref() != Some(self.owner.as_str()) {
                return Err(Error::Podman {
                    command: "podman run".into(),
                    message: format!("a container named {name} exists and is not managed by this node; remove or rename it"),
                });
            }
        }
        let rm = self
            .podman
            .run(&["rm".into(), "-f".into(), name.into()], None, QUICK)
            .await?;
        if !rm.success {
            // A run killed half-way can leave storage without a libpod container.
            self.podman
                .run(&["rm".into(), "--storage".into(), name.into()], None, QUICK)
                .await?;
        }
        Ok(())
    }

    /// Creates the app's Podman secrets that are missing, labelled with their owner, from the
    /// 0600 files (the source of truth); replaces a copy whose file is new; refuses one that
    /// belongs to someone else. One `secret inspect` for all of them.
    async fn ensure_podman_secrets(&self, spec: &AppSpec) -> Result<(), Error> {
        let all = spec.secrets();
        if all.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(ObjectName, String)> = all
            .iter()
            .map(|s| {
                let o = ObjectName::secret(&spec.name, &s.name);
                let n = o.render();
                (o, n)
            })
            .collect();
        let found = self.inspect_secrets(wanted.iter().map(|(_, n)| n)).await?;
        for (s, (object, name)) in all.iter().zip(&wanted) {
            let (value, fresh) = secrets::ensure(&self.state_dir, &spec.name, s)?;
            if let Some(owner) = found.get(name) {
                names::check_owner(name, object, &spec.publisher, &self.owner, owner)
                    .map_err(Error::Owner)?;
                if !fresh {
                    continue;
                }
                // Our file is new, so the Podman copy is stale: replace it.
                self.podman
                    .ok(&["secret".into(), "rm".into(), name.clone()], None, QUICK)
                    .await?;
            }
            let mut args = vec!["secret".to_string(), "create".into()];
            for l in names::labels(Role::Secret, &spec.name, &spec.publisher, &self.owner) {
                args.push("--label".into());
                args.push(l);
            }
            args.extend([name.clone(), "-".into()]);
            self.podman
                .ok(&args, Some(value.expose().as_bytes()), QUICK)
                .await?;
        }
        Ok(())
    }

    /// The app's network exists and is the app's (by its labels); created when missing, with
    /// netavark's `isolate` so no other app's network reaches it (PROTOCOL §2.2: nothing else
    /// on the machine reaches a stack's services except through published ports).
    async fn app_network(&self, spec: &AppSpec, seen: &mut Seen) -> Result<(), Error> {
        let name = spec.network_name();
        if seen.networks_ok.contains(&name) {
            return Ok(());
        }
        let found = self.inspect_network(&name).await?;
        if let Some(owner) = found.get(&name) {
            names::check_owner(
                &name,
                &ObjectName::network(&spec.name),
                &spec.publisher,
                &self.owner,
                owner,
            )
            .map_err(Error::Owner)?;
        } else {
            let mut args = vec![
                "network".to_string(),
                "create".into(),
                "--opt".into(),
                "isolate=true".into(),
            ];
            for l in names::labels(Role::Network, &spec.name, &spec.publisher, &self.owner) {
                args.push("--label".into());
                args.push(l);
            }
            args.push(name.clone());
            self.podman.ok(&args, None, QUICK).await?;
        }
        seen.networks_ok.insert(name);
        Ok(())
    }

    /// Holds the isolation of every isolated network, in our own firewall chains of the rootless
    /// network namespace: traffic forwarded from one isolated bridge to another is dropped.
    ///
    /// netavark's `isolate=true` alone does not hold on this Podman (4.3, netavark 1.4): when
    /// any isolated network is torn down (its last container stopped), netavark removes the
    /// isolation rules of all of them, and a container of one app reaches the services of
    /// every other (measured: `tests/podman.rs::a_dependent_reaches_only_…`). These chains
    /// (`ARCHY_ISO_1`, `ARCHY_ISO_2`, the same shape as netavark's) are ours and live in the
    /// `mangle` table, which netavark never touches and which the kernel runs before the
    /// `filter` table's FORWARD, where netavark's own rules accept its subnets' traffic (a
    /// jump of ours in `filter` ended up behind them whenever netavark re-inserted its rules,
    /// and a parallel test run reached the private service again). They are rebuilt from
    /// `podman network ls` after each `run` and `start` (a new network has a new bridge; a
    /// namespace created afresh has no rules). Between bridges nothing legitimate is forwarded:
    /// a dependency's export is on the dependent's own bridge, DNS is the bridge's gateway,
    /// published ports and the internet go through the namespace's own interfaces. Rootful
    /// Podman has no rootless namespace: skipped there (Archy runs apps rootless).
    pub(crate) async fn hold_isolation(&self) -> Result<(), Error> {
        let out = self
            .podman
            .ok(
                &[
                    "network".into(),
                    "ls".into(),
                    "--format".into(),
                    "json".into(),
                ],
                None,
                QUICK,
            )
            .await?;
        let list: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap_or_default();
        let bridges: Vec<String> = list
            .iter()
            .filter(|n| n["options"]["isolate"].as_str() == Some("true"))
            .filter_map(|n| n["network_interface"].as_str())
            .filter(|b| {
                b.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .map(str::to_owned)
            .collect();
        let mut args: Vec<String> = [
            "unshare",
            "--rootless-netns",
            "bash",
            "-c",
            ISOLATION_SCRIPT,
            "archy-isolation",
        ]
        .map(String::from)
        .to_vec();
        args.extend(bridges);
        let out = self.podman.run(&args, None, QUICK).await?;
        if out.success || out.stderr.contains(ROOTFUL_UNSHARE) {
            return Ok(());
        }
        Err(Error::Podman {
            command: "podman unshare --rootless-netns iptables".into(),
            message: out.stderr.trim().to_string(),
        })
    }

    /// The named network, with its owner, if Podman has it.
    async fn inspect_network(&self, name: &str) -> Result<HashMap<String, Owner>, Error> {
        let out = self
            .podman
            .run(
                &["network".into(), "inspect".into(), name.into()],
                None,
                QUICK,
            )
            .await?;
        parse_inspect(&out, "network", |v| {
            (v["name"].as_str().map(str::to_string), &v["labels"])
        })
    }

    /// The named secrets Podman has, with their owners (absent names are simply missing).
    pub(crate) async fn inspect_secrets<'a>(
        &self,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<HashMap<String, Owner>, Error> {
        let mut args = vec!["secret".to_string(), "inspect".into()];
        args.extend(names.cloned());
        if args.len() == 2 {
            return Ok(HashMap::new());
        }
        let out = self.podman.run(&args, None, QUICK).await?;
        parse_inspect(&out, "secret", |v| {
            (
                v["Spec"]["Name"].as_str().map(str::to_string),
                &v["Spec"]["Labels"],
            )
        })
    }

    /// The spec's volumes that Podman has, with their owners. One `volume inspect`.
    pub(crate) async fn inspect_volumes(
        &self,
        spec: &AppSpec,
    ) -> Result<HashMap<String, Owner>, Error> {
        let volumes = spec.volumes();
        if volumes.is_empty() {
            return Ok(HashMap::new());
        }
        let mut args = vec!["volume".to_string(), "inspect".into()];
        args.extend(volumes.iter().map(|v| spec.volume_name(&v.name)));
        let out = self.podman.run(&args, None, QUICK).await?;
        parse_inspect(&out, "volume", |v| {
            (v["Name"].as_str().map(str::to_string), &v["Labels"])
        })
    }

    /// Every volume of the spec that exists is this app's (by its labels).
    pub(crate) fn check_volumes(
        &self,
        spec: &AppSpec,
        found: &HashMap<String, Owner>,
    ) -> Result<(), Error> {
        for v in spec.volumes() {
            let name = spec.volume_name(&v.name);
            if let Some(owner) = found.get(&name) {
                names::check_owner(
                    &name,
                    &ObjectName::volume(&spec.name, &v.name),
                    &spec.publisher,
                    &self.owner,
                    owner,
                )
                .map_err(Error::Owner)?;
            }
        }
        Ok(())
    }

    /// Creates the spec's missing volumes explicitly, labelled with their owner, after checking
    /// that the existing ones are the app's: Podman would otherwise create (or reuse) them
    /// silently at `run`.
    async fn ensure_volumes(&self, spec: &AppSpec, seen: &mut Seen) -> Result<(), Error> {
        let all_checked = spec
            .volumes()
            .iter()
            .all(|v| seen.volumes_ok.contains_key(&spec.volume_name(&v.name)));
        if !all_checked {
            let found = self.inspect_volumes(spec).await?;
            self.check_volumes(spec, &found)?;
            for v in spec.volumes() {
                let name = spec.volume_name(&v.name);
                let present = found.contains_key(&name);
                seen.volumes_ok.insert(name, present);
            }
        }
        for v in spec.volumes() {
            let name = spec.volume_name(&v.name);
            if seen.volumes_ok.get(&name) == Some(&false) {
                self.create_volume(spec, &name).await?;
                seen.volumes_ok.insert(name, true);
            }
        }
        Ok(())
    }

    pub(crate) async fn create_volume(&self, spec: &AppSpec, name: &str) -> Result<(), Error> {
        let mut args = vec!["volume".to_string(), "create".into()];
        for l in names::labels(Role::Volume, &spec.name, &spec.publisher, &self.owner) {
            args.push("--label".into());
            args.push(l);
        }
        args.push(name.into());
        self.podman.ok(&args, None, QUICK).await.map(|_| ())
    }

    pub(crate) async fn volume_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .podman
            .run(
                &["volume".into(), "exists".into(), name.into()],
                None,
                QUICK,
            )
            .await?
            .success)
    }

    pub(crate) async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let out = self
            .podman
            .run(
                &["volume".into(), "rm".into(), "-f".into(), name.into()],
                None,
                QUICK,
            )
            .await?;
        if out.success || out.stderr.contains("no such volume") {
            Ok(())
        } else {
            Err(Error::Podman {
                command: "podman volume rm".into(),
                message: out.stderr.trim().to_string(),
            })
        }
    }

    pub(crate) async fn remove_secret(&self, name: &str) -> Result<(), Error> {
        let out = self
            .podman
            .run(&["secret".into(), "rm".into(), name.into()], None, QUICK)
            .await?;
        if out.success || out.stderr.contains("no such secret") {
            Ok(())
        } else {
            Err(Error::Podman {
                command: "podman secret rm".into(),
                message: out.stderr.trim().to_string(),
            })
        }
    }

    /// `podman volume export FROM | podman volume import TO`, streamed (no temporary file).
    pub(crate) async fn copy_volume(&self, from: &str, to: &str) -> Result<(), Error> {
        self.podman
            .pipe(
                &["volume".into(), "export".into(), from.into()],
                &["volume".into(), "import".into(), to.into(), "-".into()],
                Duration::from_secs(3600),
            )
            .await
    }
}

impl Containers for PodmanRuntime {
    /// [`ensure_image`](Self::ensure_image), once per image and pass.
    async fn check_image(&self, seen: &mut Seen, spec: &AppSpec) -> Result<(), Error> {
        for svc in &spec.services {
            let reference = image_ref(svc);
            if !seen.images_ok.contains(&reference) {
                self.ensure_service_image(svc).await?;
                seen.images_ok.insert(reference);
            }
        }
        Ok(())
    }

    /// Creates the Podman secrets, then creates and starts the container (one `podman run`).
    /// On error returns the id of a container the run left behind (created, but its start
    /// failed), if any, so the caller can clean it up.
    async fn run_container(
        &self,
        spec: &AppSpec,
        svc: usize,
        seen: &mut Seen,
    ) -> Result<String, (Option<String>, Error)> {
        let service = &spec.services[svc];
        self.ensure_volumes(spec, seen)
            .await
            .map_err(|e| (None, e))?;
        self.ensure_podman_secrets(spec)
            .await
            .map_err(|e| (None, e))?;
        if spec.has_network() {
            self.app_network(spec, seen).await.map_err(|e| (None, e))?;
        }
        let args = run_args(spec, service, &self.owner);
        let name = spec.container_of(service);
        let mut out = self
            .podman
            .run(&args, None, QUICK)
            .await
            .map_err(|e| (None, e))?;
        if !out.success && name_in_use(&out.stderr) {
            // Left over from a run interrupted by a crash: remove it if it is ours.
            self.remove_stale_name(&name).await.map_err(|e| (None, e))?;
            out = self
                .podman
                .run(&args, None, QUICK)
                .await
                .map_err(|e| (None, e))?;
        }
        if !out.success {
            let error = Error::Podman {
                command: "podman run".into(),
                message: out.stderr.trim().to_string(),
            };
            // `run` prints no id when the start fails; find what it created by name and labels.
            let hash = spec.spec_hash();
            let left = match self.named(&name).await {
                Ok(Some(c))
                    if c.owner.as_deref() == Some(self.owner.as_str())
                        && c.spec_hash.as_deref() == Some(hash.as_str()) =>
                {
                    Some(c.id)
                }
                _ => None,
            };
            return Err((left, error));
        }
        let id = out
            .stdout
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        if spec.has_network() {
            self.hold_isolation()
                .await
                .map_err(|e| (Some(id.clone()), e))?;
        }
        Ok(id)
    }

    /// `podman start ID`.
    async fn start_container(&self, id: &str) -> Result<(), Error> {
        self.podman
            .ok(&["start".into(), id.to_string()], None, QUICK)
            .await?;
        // The namespace may be new (every rootless container had stopped): no rules in it.
        self.hold_isolation().await
    }

    /// Waits until service `svc`'s container passes its health check ([`health::wait_healthy`]).
    async fn wait_healthy(&self, spec: &AppSpec, svc: usize, id: &str) -> Result<(), String> {
        health::wait_healthy(spec, svc, id, &self.podman).await
    }

    /// `podman stop -t grace`: SIGTERM, SIGKILL after the grace. We wait longer than the grace.
    async fn stop_container(&self, id: &str, grace_secs: u32) -> Result<(), Error> {
        let deadline = Duration::from_secs(grace_secs as u64) + STOP_SLACK;
        let out = self
            .podman
            .run(
                &[
                    "stop".into(),
                    "-t".into(),
                    grace_secs.to_string(),
                    id.into(),
                ],
                None,
                deadline,
            )
            .await?;
        if out.success || out.stderr.contains("no such container") {
            return Ok(());
        }
        // `podman stop` may report the SIGKILL fallback as an error; what counts is the state.
        match health::container_running(&self.podman, id).await {
            Err(_) => Ok(()),
            Ok(()) => Err(Error::Podman {
                command: "podman stop".into(),
                message: out.stderr.trim().to_string(),
            }),
        }
    }

    async fn remove_container(&self, id: &str, grace_secs: u32) -> Result<(), Error> {
        self.stop_container(id, grace_secs).await?;
        let out = self
            .podman
            .run(&["rm".into(), "-f".into(), id.into()], None, QUICK)
            .await?;
        if out.success || out.stderr.contains("no such container") {
            Ok(())
        } else {
            Err(Error::Podman {
                command: "podman rm".into(),
                message: out.stderr.trim().to_string(),
            })
        }
    }

    async fn ensure_network(&self, spec: &AppSpec, seen: &mut Seen) -> Result<(), Error> {
        self.app_network(spec, seen).await
    }

    async fn connect(&self, network: &str, container: &str, alias: &str) -> Result<(), Error> {
        let out = self
            .podman
            .run(
                &[
                    "network".into(),
                    "connect".into(),
                    format!("--alias={alias}"),
                    network.into(),
                    container.into(),
                ],
                None,
                QUICK,
            )
            .await?;
        if out.success || out.stderr.contains("already") {
            Ok(())
        } else {
            Err(Error::Podman {
                command: "podman network connect".into(),
                message: out.stderr.trim().to_string(),
            })
        }
    }

    /// Removes an app's volumes and Podman secrets, and its secret files. Only what is ours by
    /// its labels: a foreign object under our name is left alone. `volumes` are Podman volume
    /// names, `secret_names` the spec's names of the generated secrets.
    async fn purge_objects(
        &self,
        app: &str,
        publisher: &str,
        mut volumes: Vec<String>,
        mut secret_names: Vec<String>,
    ) -> Result<(), Error> {
        let ours = |name: &str, object: &ObjectName, found: &HashMap<String, Owner>| match found
            .get(name)
        {
            None => true,
            Some(o) => match names::check_owner(name, object, publisher, &self.owner, o) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(app, "purge: {e}");
                    false
                }
            },
        };
        let mut probe = AppSpec::new(app, "0", "-");
        probe.service_mut().volumes = volumes
            .iter()
            .filter_map(|v| names::parse(Role::Volume, v)?.part)
            .map(|name| crate::spec::VolumeSpec {
                name,
                target: "/x".into(),
            })
            .collect();
        let found_volumes = self.inspect_volumes(&probe).await?;
        volumes
            .retain(|v| names::parse(Role::Volume, v).is_some_and(|o| ours(v, &o, &found_volumes)));
        let full: Vec<String> = secret_names
            .iter()
            .map(|s| podman_secret_name(app, s))
            .collect();
        let found_secrets = self.inspect_secrets(full.iter()).await?;
        secret_names.retain(|s| {
            ours(
                &podman_secret_name(app, s),
                &ObjectName::secret(app, s),
                &found_secrets,
            )
        });
        for v in &volumes {
            self.remove_volume(v).await?;
        }
        for s in &secret_names {
            self.remove_secret(&podman_secret_name(app, s)).await?;
        }
        let network = names::network(app);
        if let Some(owner) = self.inspect_network(&network).await?.get(&network) {
            match names::check_owner(
                &network,
                &ObjectName::network(app),
                publisher,
                &self.owner,
                owner,
            ) {
                Ok(()) => {
                    // A dependency's exported services are connected here too: disconnect
                    // them (never `rm -f`, which would remove those containers).
                    let attached = self
                        .podman
                        .ok(
                            &[
                                "ps".into(),
                                "-a".into(),
                                "--filter".into(),
                                format!("network={network}"),
                                "--format".into(),
                                "{{.ID}}".into(),
                            ],
                            None,
                            QUICK,
                        )
                        .await?;
                    for id in attached.split_whitespace() {
                        self.podman
                            .run(
                                &[
                                    "network".into(),
                                    "disconnect".into(),
                                    network.clone(),
                                    id.into(),
                                ],
                                None,
                                QUICK,
                            )
                            .await?;
                    }
                    self.podman
                        .ok(
                            &["network".into(), "rm".into(), network.clone()],
                            None,
                            QUICK,
                        )
                        .await?;
                }
                Err(e) => tracing::warn!(app, "purge: {e}"),
            }
        }
        secrets::remove_all(&self.state_dir, app)
    }
}

/// Parses `podman volume|secret inspect NAME…` output: the objects found (missing names are
/// errors on stderr and simply absent here), each with the owner its labels name.
fn parse_inspect(
    out: &crate::PodmanOutput,
    what: &str,
    fields: impl Fn(&serde_json::Value) -> (Option<String>, &serde_json::Value),
) -> Result<HashMap<String, Owner>, Error> {
    let text = out.stdout.trim();
    if text.is_empty() || text == "[]" {
        if !out.success && !out.stderr.contains("no such") && !out.stderr.contains("not found") {
            return Err(Error::Podman {
                command: format!("podman {what} inspect"),
                message: out.stderr.trim().to_string(),
            });
        }
        return Ok(HashMap::new());
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(text)?;
    Ok(list
        .iter()
        .filter_map(|v| {
            let (name, labels) = fields(v);
            let labels: HashMap<String, String> =
                serde_json::from_value(labels.clone()).unwrap_or_default();
            Some((name?, Owner::from_labels(&labels)))
        })
        .collect())
}
