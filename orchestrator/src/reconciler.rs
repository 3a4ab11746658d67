//! The reconciler: the user-facing functions and the loop. A pass observes Podman (through
//! `runtime`), plans ([`plan`](mod@crate::plan), pure) and applies each action (`apply`, with the
//! back-off rules of [`crate::backoff`]); what it reports is in [`crate::report`].
//!
//! Level-triggered: every pass compares the whole desired state with the whole observed state,
//! so a missed event, a crash or a container removed behind our back is repaired by the next
//! pass. Passes are serialized by a mutex; they run on a timer and immediately when an intent
//! changes ([`tokio::sync::Notify`]). The user-facing functions commit the intent first, then
//! run a pass themselves so they can report the result.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::apply::{Applier, Memory, Pass};
use crate::audit::{self, AuditReport};
use crate::backoff::{self, BackoffPolicy, Event, LastError};
use crate::migrate;
use crate::names::{Owner, Role};
use crate::plan::{plan, DesiredApp};
use crate::podman::{image_ref, ContainerState, ObservedContainer, PodmanCmd};
use crate::report::ActionKind;
pub use crate::report::{
    AppState, AppStatus, HeldApp, InstallOutcome, MigrationReport, Outcome, OutcomeStatus,
    ReconcileReport, ServiceStatus,
};
use crate::runtime::{Containers, PodmanRuntime, QUICK};
use crate::spec::{AppSpec, Intent, Policy};
use crate::store::{AppRecord, Naming, Store};
use crate::Error;

/// How a [`Reconciler`] runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds `orchestrator.redb` and `secrets/<app>/`.
    pub state_dir: PathBuf,
    pub podman: PodmanCmd,
    /// Value of the `archy.owner` label: this reconciler only sees and manages its own
    /// containers, so several instances (or test runs) can share one Podman.
    pub owner: String,
    /// Period of the level-triggered loop.
    pub interval: Duration,
    pub policy: Policy,
    pub backoff: BackoffPolicy,
    /// A container running this long resets its crash-loop back-off.
    pub stable_after: Duration,
    /// For the naming migration of records written before apps had a publisher: app → its
    /// publisher. Apps not listed get [`legacy_default_publisher`](Self::legacy_default_publisher).
    pub legacy_publishers: std::collections::BTreeMap<String, String>,
    pub legacy_default_publisher: String,
}

impl Config {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            podman: PodmanCmd::new(),
            owner: "default".into(),
            interval: Duration::from_secs(10),
            policy: Policy::default(),
            backoff: BackoffPolicy::default(),
            stable_after: Duration::from_secs(60),
            legacy_publishers: Default::default(),
            legacy_default_publisher: String::new(),
        }
    }
}

/// Owns the desired-state store and drives Podman. Share it with `Arc`.
pub struct Reconciler {
    cfg: Config,
    /// The Podman verbs, for `cfg.owner` (a copy of what they need from `cfg`).
    rt: PodmanRuntime,
    store: Store,
    notify: Notify,
    pass: Mutex<()>,
    mem: StdMutex<Memory>,
    epoch: Instant,
}

impl Reconciler {
    /// Opens the state in `config.state_dir` (one process at a time: redb locks the file).
    pub fn open(cfg: Config) -> Result<Self, Error> {
        let store = Store::open(&cfg.state_dir)?;
        let rt = PodmanRuntime::new(cfg.podman.clone(), cfg.owner.clone(), cfg.state_dir.clone());
        Ok(Reconciler {
            cfg,
            rt,
            store,
            notify: Notify::new(),
            pass: Mutex::new(()),
            mem: StdMutex::new(Memory::default()),
            epoch: Instant::now(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn podman(&self) -> &PodmanCmd {
        &self.cfg.podman
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        Memory::lock(&self.mem)
    }

    /// What applying an action borrows from the reconciler.
    fn applier(&self) -> Applier<'_, PodmanRuntime> {
        Applier {
            rt: &self.rt,
            store: &self.store,
            mem: &self.mem,
            policy: &self.cfg.backoff,
            epoch: self.epoch,
        }
    }

    // ------------------------------------------------------------------ user-facing API

    /// Installs or updates an app and waits until it runs (health check passed), rolled back,
    /// or failed. The image must already be in Podman. Policy violations return `Err` before
    /// anything is written or sent to Podman; a missing image, before anything is written.
    pub async fn install(&self, spec: AppSpec) -> Result<InstallOutcome, Error> {
        spec.validate(&self.cfg.policy)?;
        let hash = spec.spec_hash();
        let name = spec.name.clone();
        // Held from the image check to the end of the pass, so the pass can use that check and
        // the observation taken beside it instead of asking Podman again.
        let held = self.pass.lock().await;
        self.migrate_locked(&held).await?;
        // Read-only, so side by side: a slow host pays for one Podman start-up, not three.
        let (image, observed, volumes) = tokio::join!(
            self.rt.ensure_image(&spec),
            self.observe(),
            self.rt.inspect_volumes(&spec)
        );
        image?;
        let observed = observed?;
        // Kept volumes of another publisher's app of this name are refused before anything is
        // committed (the record check below catches the same case when the record is kept).
        let volumes = volumes?;
        self.rt.check_volumes(&spec, &volumes)?;
        self.store.update(&name, |old| {
            let rec = match old {
                Some(old) if old.current.publisher != spec.publisher => {
                    return Err(takeover(&name, &old.current.publisher, &spec.publisher));
                }
                Some(old) if old.names == Naming::Legacy || old.held.is_some() => {
                    return Err(Error::Owner(format!(
                        "app `{name}` is held: {}",
                        old.held
                            .as_deref()
                            .unwrap_or("its Podman objects still use the legacy names")
                    )));
                }
                Some(old) if old.current.spec_hash() == hash => AppRecord {
                    intent: Intent::Running,
                    rolled_back: None,
                    ..old
                },
                Some(old) => {
                    // A reinstall after uninstall is not an update: nothing runs to roll back to.
                    let was_live = matches!(old.intent, Intent::Running | Intent::Stopped);
                    AppRecord {
                        current: spec.clone(),
                        previous: Some(old.current),
                        update_pending: was_live,
                        ..AppRecord::new(spec.clone())
                    }
                }
                None => AppRecord::new(spec.clone()),
            };
            Ok((Some(rec), ()))
        })?;
        tracing::info!(app = %name, version = %spec.version, "install: intent committed");
        {
            let mut m = self.mem();
            backoff::note(
                &mut m.backoff,
                &self.cfg.backoff,
                &name,
                Event::UserStarted,
                0,
            );
            m.user_started.insert(name.clone());
        }
        self.notify.notify_one();
        let mut pass = Pass::new(observed);
        pass.seen
            .images_ok
            .extend(spec.services.iter().map(image_ref));
        for v in spec.volumes() {
            let name = spec.volume_name(&v.name);
            let present = volumes.contains_key(&name);
            pass.seen.volumes_ok.insert(name, present);
        }
        let (report, pass) = self.run_pass(&held, pass).await?;
        drop(held);
        let rec = self
            .store
            .get(&name)?
            .ok_or_else(|| Error::UnknownApp(name.clone()))?;
        Ok(install_outcome(&rec, spec, &report, &pass.up, || {
            self.last_error(&name)
        }))
    }

    /// Sets an app's intent, commits it and wakes the loop (does not wait for the result).
    pub fn set_intent(&self, app: &str, intent: Intent) -> Result<(), Error> {
        self.store.update(app, |old| {
            let mut rec = old.ok_or_else(|| Error::UnknownApp(app.to_string()))?;
            rec.intent = intent;
            Ok((Some(rec), ()))
        })?;
        tracing::info!(app, ?intent, "intent committed");
        if intent == Intent::Running {
            let mut m = self.mem();
            backoff::note(
                &mut m.backoff,
                &self.cfg.backoff,
                app,
                Event::UserStarted,
                0,
            );
            m.user_started.insert(app.to_string());
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Starts a stopped app and waits for the pass; returns its status.
    pub async fn start(&self, app: &str) -> Result<AppStatus, Error> {
        self.set_intent(app, Intent::Running)?;
        let report = self.reconcile_once().await?;
        self.status_after(app, &report).await
    }

    /// Stops an app (graceful, the app's own grace) and keeps it stopped across restarts.
    pub async fn stop(&self, app: &str) -> Result<AppStatus, Error> {
        self.set_intent(app, Intent::Stopped)?;
        let report = self.reconcile_once().await?;
        self.status_after(app, &report).await
    }

    /// Stops the app's container (graceful) and starts it again.
    pub async fn restart(&self, app: &str) -> Result<AppStatus, Error> {
        self.set_intent(app, Intent::Running)?;
        {
            let _pass = self.pass.lock().await;
            let rec = self
                .store
                .get(app)?
                .ok_or_else(|| Error::UnknownApp(app.into()))?;
            for c in self.observe().await?.iter().filter(|c| c.app == app) {
                if c.state == ContainerState::Running {
                    self.rt
                        .stop_container(&c.id, rec.current.stop_grace_secs())
                        .await?;
                }
            }
            self.mem().user_started.insert(app.to_string());
        }
        let report = self.reconcile_once().await?;
        self.status_after(app, &report).await
    }

    /// Removes the app's container. Volumes and secrets stay unless `purge`; with `purge` the
    /// app's record is deleted too.
    pub async fn uninstall(&self, app: &str, purge: bool) -> Result<ReconcileReport, Error> {
        let by: Vec<String> = self
            .store
            .all()?
            .into_iter()
            .filter(|r| matches!(r.intent, Intent::Running | Intent::Stopped))
            .filter(|r| r.current.dependencies.iter().any(|d| d == app))
            .map(|r| r.current.name)
            .collect();
        if !by.is_empty() {
            return Err(Error::Needed {
                app: app.into(),
                by,
            });
        }
        self.set_intent(
            app,
            if purge {
                Intent::Purged
            } else {
                Intent::Uninstalled
            },
        )?;
        let report = self.reconcile_once().await?;
        if let Some(f) = report
            .for_app(app)
            .find(|o| o.status == OutcomeStatus::Failed)
        {
            return Err(Error::Podman {
                command: format!("uninstall {app}"),
                message: f.message.clone(),
            });
        }
        Ok(report)
    }

    /// The container's recent output (stdout then stderr), at most `tail` lines of each.
    pub async fn logs(&self, app: &str, tail: Option<u32>) -> Result<String, Error> {
        if self.store.get(app)?.is_none() {
            return Err(Error::UnknownApp(app.into()));
        }
        let mut args = vec!["logs".to_string()];
        if let Some(t) = tail {
            args.push(format!("--tail={t}"));
        }
        // By what Podman reports for the app (labels), so a container of either naming works.
        let observed = self.observe().await?;
        args.push(
            observed
                .iter()
                .filter(|c| c.app == app)
                .max_by_key(|c| c.state == ContainerState::Running)
                .map(|c| c.id.clone())
                .unwrap_or_else(|| crate::spec::container_name(app)),
        );
        let out = self.cfg.podman.run(&args, None, QUICK).await?;
        if !out.success {
            return Err(Error::Podman {
                command: "podman logs".into(),
                message: out.stderr.trim().to_string(),
            });
        }
        Ok(format!("{}{}", out.stdout, out.stderr))
    }

    /// Status of every app in the store, joined with what Podman reports.
    pub async fn list(&self) -> Result<Vec<AppStatus>, Error> {
        let records = self.store.all()?;
        let observed = self.observe().await?;
        Ok(records
            .iter()
            .map(|r| self.status_of(r, &observed))
            .collect())
    }

    /// One app's status.
    pub async fn status(&self, app: &str) -> Result<AppStatus, Error> {
        let rec = self
            .store
            .get(app)?
            .ok_or_else(|| Error::UnknownApp(app.into()))?;
        let observed = self.observe().await?;
        Ok(self.status_of(&rec, &observed))
    }

    /// The last failure this process saw for an app (cleared by a later success).
    pub fn last_error(&self, app: &str) -> Option<String> {
        self.mem().last_error.get(app).cloned()
    }

    /// The stored record (current/previous spec, intent).
    pub fn record(&self, app: &str) -> Result<Option<AppRecord>, Error> {
        self.store.get(app)
    }

    async fn status_after(&self, app: &str, report: &ReconcileReport) -> Result<AppStatus, Error> {
        let mut st = self.status(app).await?;
        if let Some(f) = report
            .for_app(app)
            .find(|o| o.status != OutcomeStatus::Done)
        {
            st.last_error = Some(f.message.clone());
        }
        Ok(st)
    }

    fn status_of(&self, rec: &AppRecord, observed: &[ObservedContainer]) -> AppStatus {
        let hash = rec.current.spec_hash();
        let app = &rec.current.name;
        let best = |name: Option<&str>| {
            observed
                .iter()
                .filter(|c| &c.app == app && name.is_none_or(|n| c.name == n))
                .max_by_key(|c| (c.spec_hash == hash, c.state == ContainerState::Running))
        };
        let state_of = |c: Option<&ObservedContainer>| match c.map(|c| &c.state) {
            None => AppState::Absent,
            Some(ContainerState::Running) => AppState::Running,
            Some(ContainerState::Exited) => AppState::Stopped,
            Some(ContainerState::Created) => AppState::Created,
            Some(ContainerState::Paused) => AppState::Paused,
            Some(ContainerState::Other(_)) => AppState::Unknown,
        };
        let services: Vec<ServiceStatus> = if rec.current.is_stack() {
            rec.current
                .start_order()
                .into_iter()
                .map(|i| {
                    let svc = &rec.current.services[i];
                    let c = best(Some(&rec.current.container_of(svc)));
                    ServiceStatus {
                        service: svc.name.clone(),
                        state: state_of(c),
                        container_id: c.map(|c| c.id.clone()),
                    }
                })
                .collect()
        } else {
            vec![]
        };
        let c = match services.first() {
            Some(first) => observed
                .iter()
                .find(|c| Some(&c.id) == first.container_id.as_ref()),
            None => best(None),
        };
        // A stack runs when every service runs; otherwise it is as its first service that
        // does not.
        let state = match services.iter().find(|s| s.state != AppState::Running) {
            Some(s) => s.state.clone(),
            None if !services.is_empty() => AppState::Running,
            None => state_of(c),
        };
        let m = self.mem();
        AppStatus {
            app: app.clone(),
            version: rec.current.version.clone(),
            intent: rec.intent,
            state,
            container_id: c.map(|c| c.id.clone()),
            spec_hash: hash,
            healthy: m.healthy.get(app).copied(),
            last_error: m.last_error.get(app).cloned(),
            rolled_back: rec.rolled_back.clone(),
            ports: rec
                .current
                .services
                .iter()
                .flat_map(|s| s.ports.iter().cloned())
                .collect(),
            restarts_backing_off: m.backoff.get(app).map(|b| b.failures).unwrap_or(0),
            services,
        }
    }

    // ------------------------------------------------------------------ audit

    /// Every container, volume and secret in this Podman that is named or labelled as Archy's,
    /// with its owner and status ([`crate::audit::classify`]).
    pub async fn audit(&self) -> Result<AuditReport, Error> {
        let records = self.store.all()?;
        let node = self.cfg.owner.as_str();
        let (ps, vols, secrets) = tokio::join!(
            self.cfg.podman.output(&["ps", "-a", "--format", "json"]),
            self.cfg
                .podman
                .output(&["volume", "ls", "--format", "json"]),
            self.cfg
                .podman
                .output(&["secret", "ls", "--noheading", "--format", "{{.Name}}"]),
        );
        let mut objects = Vec::new();
        let labels_of = |v: &serde_json::Value| -> Owner {
            let map: HashMap<String, String> =
                serde_json::from_value(v.clone()).unwrap_or_default();
            Owner::from_labels(&map)
        };
        let listed =
            |out: crate::PodmanOutput, what: &str| -> Result<Vec<serde_json::Value>, Error> {
                if !out.success {
                    return Err(Error::Podman {
                        command: format!("podman {what}"),
                        message: out.stderr.trim().to_string(),
                    });
                }
                let t = out.stdout.trim();
                Ok(if t.is_empty() {
                    vec![]
                } else {
                    serde_json::from_str(t)?
                })
            };
        for c in listed(ps?, "ps")? {
            let name = c["Names"][0].as_str().unwrap_or_default().to_string();
            if let Some(e) = audit::classify(
                Role::Container,
                &name,
                labels_of(&c["Labels"]),
                &records,
                node,
            ) {
                objects.push(e);
            }
        }
        for v in listed(vols?, "volume ls")? {
            let name = v["Name"].as_str().unwrap_or_default().to_string();
            if let Some(e) =
                audit::classify(Role::Volume, &name, labels_of(&v["Labels"]), &records, node)
            {
                objects.push(e);
            }
        }
        let secrets = secrets?;
        let secret_names: Vec<String> = secrets
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if !secret_names.is_empty() {
            let found = self.rt.inspect_secrets(secret_names.iter()).await?;
            for name in &secret_names {
                let owner = found.get(name).cloned().unwrap_or_default();
                if let Some(e) = audit::classify(Role::Secret, name, owner, &records, node) {
                    objects.push(e);
                }
            }
        }
        objects.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(AuditReport { objects })
    }

    // ------------------------------------------------------------------ naming migration

    /// Moves apps installed by the code before the injective names onto them, losing no data
    /// (the steps are in the crate's `migrate` module). Passes run it themselves; this is for
    /// callers that want the report.
    pub async fn migrate_names(&self) -> Result<MigrationReport, Error> {
        let held = self.pass.lock().await;
        self.migrate_locked(&held).await
    }

    /// The naming migration ([`migrate::run`]), under the pass lock.
    async fn migrate_locked(&self, _held: &MutexGuard<'_, ()>) -> Result<MigrationReport, Error> {
        let owners = migrate::LegacyOwners {
            publishers: &self.cfg.legacy_publishers,
            default_publisher: &self.cfg.legacy_default_publisher,
        };
        migrate::run(&self.rt, &self.store, &owners).await
    }

    // ------------------------------------------------------------------ the loop

    /// Runs passes until `shutdown` completes: one at once, then on every timer tick and
    /// immediately after an intent change. A pass in progress is finished before returning.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.reconcile_once().await {
                Ok(report) => {
                    for f in report.failures() {
                        tracing::warn!(app = %f.app, action = %f.action, "{}", f.message);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(self.next_wake()) => {}
            }
        }
        tracing::info!("reconciler stopped");
    }

    /// The timer period, or sooner when a crash-loop back-off ends (so a failed app is retried
    /// on time even with a long period).
    fn next_wake(&self) -> Duration {
        let now = self.now_ms();
        backoff::next_wake(self.mem().backoff.values(), now, self.cfg.interval)
    }

    /// The containers this reconciler owns (`archy.owner` label).
    pub async fn observe(&self) -> Result<Vec<ObservedContainer>, Error> {
        self.rt.observe().await
    }

    /// One level-triggered pass: observe, plan, apply. Per-app failures are in the report.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, Error> {
        let held = self.pass.lock().await;
        self.migrate_locked(&held).await?;
        let observed = self.observe().await?;
        Ok(self.run_pass(&held, Pass::new(observed)).await?.0)
    }

    /// Plans from `pass.observed` and the store, and applies. `_held` is the pass lock: passes
    /// never overlap.
    async fn run_pass(
        &self,
        _held: &MutexGuard<'_, ()>,
        mut pass: Pass,
    ) -> Result<(ReconcileReport, Pass), Error> {
        let records = self.store.all()?;
        let now_ms = self.now_ms();
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let backoff = {
            let mut m = self.mem();
            // A container that has stayed up long enough ends its crash loop.
            for c in &pass.observed {
                if backoff::is_stable(c, now_unix, self.cfg.stable_after) {
                    backoff::note(&mut m.backoff, &self.cfg.backoff, &c.app, Event::Stable, 0);
                }
            }
            m.backoff.clone()
        };
        let mut report = ReconcileReport::default();
        let desired: Vec<DesiredApp> = records
            .iter()
            .map(|r| {
                let (desired, held) = desired_of(r);
                report.outcomes.extend(held);
                desired
            })
            .collect();
        let actions = plan(&desired, &pass.observed, &backoff, now_ms);
        let applier = self.applier();
        for action in actions {
            let app = action.app().to_string();
            let outcome = applier.apply(action, &mut pass).await;
            if backoff::holds_dependents(&outcome) {
                pass.failed.insert(app.clone());
            }
            match backoff::last_error_after(&outcome) {
                LastError::Set(message) => {
                    self.mem().last_error.insert(app, message);
                }
                LastError::Clear => {
                    self.mem().last_error.remove(&app);
                }
                LastError::Keep => {}
            }
            if outcome.action != ActionKind::Adopt {
                tracing::info!(app = %outcome.app, action = %outcome.action, status = ?outcome.status, "{}", outcome.message);
            }
            report.outcomes.push(outcome);
        }
        for app in std::mem::take(&mut pass.wire) {
            applier.wire_dependents(&app).await;
        }
        Ok((report, pass))
    }
}

/// What the store wants of one record, for the planner. A held app (or one still named by the
/// legacy scheme) is never started: it is planned as stopped, and if the user wants it running
/// the pass reports it blocked; a purge or an uninstall of it still goes ahead.
fn desired_of(r: &AppRecord) -> (DesiredApp, Option<Outcome>) {
    let parked = r.held.is_some() || r.names == Naming::Legacy;
    let intent = match r.intent {
        Intent::Running | Intent::Stopped if parked => Intent::Stopped,
        i => i,
    };
    let blocked = (parked && r.intent == Intent::Running).then(|| Outcome {
        app: r.current.name.clone(),
        action: ActionKind::Blocked,
        status: OutcomeStatus::Blocked,
        message: format!(
            "held: {}",
            r.held
                .as_deref()
                .unwrap_or("its Podman objects still use the legacy names")
        ),
    });
    (DesiredApp::new(r.current.clone(), intent), blocked)
}

/// The answer of [`Reconciler::install`] from the record after its pass, that pass's report,
/// and what the pass left up (app → (container id, spec hash)): rolled back if the record says
/// this spec was; running if the pass left this spec up and reported no failure; else failed,
/// with the reason of the failure (and, when the app was only blocked, `last_error`: the
/// failure that caused the back-off).
fn install_outcome(
    rec: &AppRecord,
    spec: AppSpec,
    report: &ReconcileReport,
    up: &HashMap<String, (String, String)>,
    last_error: impl FnOnce() -> Option<String>,
) -> InstallOutcome {
    let hash = spec.spec_hash();
    if let Some(rb) = &rec.rolled_back {
        if rb.from_spec_hash == hash {
            return InstallOutcome::RolledBack {
                version: rb.to_version.clone(),
                reason: rb.reason.clone(),
            };
        }
    }
    // The pass saw it running (adopted) or made it healthy: no second `podman ps`.
    let running = up.get(&spec.name).filter(|(_, h)| *h == hash);
    let failure = report
        .for_app(&spec.name)
        .find(|o| matches!(o.status, OutcomeStatus::Failed | OutcomeStatus::Blocked));
    match (running, failure) {
        (Some((id, _)), None) => InstallOutcome::Running {
            container_id: id.clone(),
            version: spec.version,
        },
        (_, Some(f)) => {
            let mut reason = f.message.clone();
            if f.status == OutcomeStatus::Blocked {
                if let Some(last) = last_error() {
                    reason = format!("{reason}; last failure: {last}");
                }
            }
            InstallOutcome::Failed { reason }
        }
        (None, None) => InstallOutcome::Failed {
            reason: "no container is running after the pass".into(),
        },
    }
}

/// The error for another publisher's app taking over a name whose data is kept here.
fn takeover(app: &str, owner: &str, newcomer: &str) -> Error {
    Error::Owner(format!(
        "app `{app}` on this node belongs to publisher {owner} (its volumes and secrets are \
         kept); publisher {newcomer}'s app of the same id is refused and never mounts them. To \
         replace it, remove the old app's data first: `archy apps uninstall {app} --purge`"
    ))
}

/// Compile-time check: the node spawns these futures on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(r: &'static Reconciler, spec: AppSpec) {
    fn is_send<T: Send>(_: T) {}
    is_send(r.install(spec));
    is_send(r.reconcile_once());
    is_send(r.run(std::future::pending::<()>()));
    is_send(r.start("x"));
    is_send(r.stop("x"));
    is_send(r.restart("x"));
    is_send(r.uninstall("x", true));
    is_send(r.logs("x", None));
    is_send(r.list());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RolledBack;

    fn spec(version: &str) -> AppSpec {
        AppSpec::new("web", version, "localhost/web:1")
    }

    fn outcome(status: OutcomeStatus, message: &str) -> Outcome {
        Outcome {
            app: "web".into(),
            action: ActionKind::Create,
            status,
            message: message.into(),
        }
    }

    fn report(outcomes: Vec<Outcome>) -> ReconcileReport {
        ReconcileReport { outcomes }
    }

    fn up(id: &str, spec: &AppSpec) -> HashMap<String, (String, String)> {
        HashMap::from([("web".to_string(), (id.to_string(), spec.spec_hash()))])
    }

    fn no_last_error() -> Option<String> {
        panic!("the last error is read only for a blocked app")
    }

    #[test]
    fn an_install_runs_only_if_the_pass_left_this_spec_up_without_failure() {
        let rec = AppRecord::new(spec("2"));
        let done = report(vec![outcome(OutcomeStatus::Done, "ok")]);
        assert_eq!(
            install_outcome(&rec, spec("2"), &done, &up("c2", &spec("2")), no_last_error),
            InstallOutcome::Running {
                container_id: "c2".into(),
                version: "2".into()
            }
        );
        // Up, but another spec (the pass kept the old one): not this install.
        assert_eq!(
            install_outcome(&rec, spec("2"), &done, &up("c1", &spec("1")), no_last_error),
            InstallOutcome::Failed {
                reason: "no container is running after the pass".into()
            }
        );
        let failed = report(vec![outcome(OutcomeStatus::Failed, "podman run failed")]);
        assert_eq!(
            install_outcome(
                &rec,
                spec("2"),
                &failed,
                &up("c2", &spec("2")),
                no_last_error
            ),
            InstallOutcome::Failed {
                reason: "podman run failed".into()
            }
        );
    }

    #[test]
    fn a_blocked_install_names_the_failure_behind_it() {
        let rec = AppRecord::new(spec("2"));
        let blocked = report(vec![outcome(OutcomeStatus::Blocked, "crash-loop back-off")]);
        let none = HashMap::new();
        assert_eq!(
            install_outcome(&rec, spec("2"), &blocked, &none, || Some("exit 1".into())),
            InstallOutcome::Failed {
                reason: "crash-loop back-off; last failure: exit 1".into()
            }
        );
        assert_eq!(
            install_outcome(&rec, spec("2"), &blocked, &none, || None),
            InstallOutcome::Failed {
                reason: "crash-loop back-off".into()
            }
        );
    }

    #[test]
    fn a_rolled_back_install_says_to_what_and_why() {
        let rb = |from: &AppSpec| RolledBack {
            from_version: from.version.clone(),
            from_spec_hash: from.spec_hash(),
            to_version: "1".into(),
            reason: "unhealthy".into(),
        };
        let rec = AppRecord {
            rolled_back: Some(rb(&spec("2"))),
            ..AppRecord::new(spec("1"))
        };
        let rolled = report(vec![outcome(OutcomeStatus::RolledBack, "rolled back")]);
        assert_eq!(
            install_outcome(
                &rec,
                spec("2"),
                &rolled,
                &up("c1", &spec("1")),
                no_last_error
            ),
            InstallOutcome::RolledBack {
                version: "1".into(),
                reason: "unhealthy".into()
            }
        );
        // An older rollback (of another spec) is not this install's.
        let rec = AppRecord {
            rolled_back: Some(rb(&spec("3"))),
            ..AppRecord::new(spec("2"))
        };
        let done = report(vec![outcome(OutcomeStatus::Done, "ok")]);
        assert!(matches!(
            install_outcome(&rec, spec("2"), &done, &up("c2", &spec("2")), no_last_error),
            InstallOutcome::Running { .. }
        ));
    }

    #[test]
    fn a_held_or_legacy_app_is_planned_stopped_and_reported_blocked() {
        let held = AppRecord {
            held: Some("volume `archy-foo-bar-data` was shared".into()),
            ..AppRecord::new(spec("1"))
        };
        let (d, blocked) = desired_of(&held);
        assert_eq!(d.intent, Intent::Stopped);
        let blocked = blocked.unwrap();
        assert_eq!(
            (blocked.action, blocked.status),
            (ActionKind::Blocked, OutcomeStatus::Blocked)
        );
        assert_eq!(
            blocked.message,
            "held: volume `archy-foo-bar-data` was shared"
        );
        let legacy = AppRecord {
            names: Naming::Legacy,
            ..AppRecord::new(spec("1"))
        };
        let (d, blocked) = desired_of(&legacy);
        assert_eq!(d.intent, Intent::Stopped);
        assert_eq!(
            blocked.unwrap().message,
            "held: its Podman objects still use the legacy names"
        );
        // Stopped by the user: nothing to report. Uninstalled or purged: that still happens.
        for (intent, planned) in [
            (Intent::Stopped, Intent::Stopped),
            (Intent::Uninstalled, Intent::Uninstalled),
            (Intent::Purged, Intent::Purged),
        ] {
            let (d, blocked) = desired_of(&AppRecord {
                intent,
                ..legacy.clone()
            });
            assert_eq!((d.intent, blocked), (planned, None));
        }
        let (d, blocked) = desired_of(&AppRecord::new(spec("1")));
        assert_eq!((d.intent, blocked), (Intent::Running, None));
    }
}
