//! The reconciler: observe Podman, plan (pure), apply; the loop; and the user-facing functions.
//!
//! Level-triggered: every pass compares the whole desired state with the whole observed state,
//! so a missed event, a crash or a container removed behind our back is repaired by the next
//! pass. Passes are serialized by a mutex; they run on a timer and immediately when an intent
//! changes ([`tokio::sync::Notify`]). The user-facing functions commit the intent first, then
//! run a pass themselves so they can report the result.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::health;
use crate::plan::{plan, Action, Backoff, BackoffPolicy, DesiredApp};
use crate::podman::{
    image_ref, name_in_use, parse_ps, podman_secret_name, run_args, ContainerState,
    ObservedContainer, PodmanCmd, LABEL_OWNER, LABEL_SPEC_HASH,
};
use crate::secrets;
use crate::spec::{AppSpec, Intent, Policy, PortSpec};
use crate::store::{AppRecord, RolledBack, Store};
use crate::Error;

/// Deadline for quick Podman calls (ps, inspect, create, rm). Generous: shared, slow hosts.
const QUICK: Duration = Duration::from_secs(120);
/// Extra time beyond an app's grace that we wait for `podman stop` to return.
const STOP_SLACK: Duration = Duration::from_secs(60);

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
        }
    }
}

/// What a user sees for one app (`archy apps list --json`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AppStatus {
    pub app: String,
    pub version: String,
    pub intent: Intent,
    pub state: AppState,
    pub container_id: Option<String>,
    pub spec_hash: String,
    /// Result of the last health check this process ran (None: not checked since start).
    pub healthy: Option<bool>,
    pub last_error: Option<String>,
    pub rolled_back: Option<RolledBack>,
    pub ports: Vec<PortSpec>,
    pub restarts_backing_off: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    Running,
    /// Container exists but is not running.
    Stopped,
    /// Created, never started.
    Created,
    /// No container.
    Absent,
    Paused,
    Unknown,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeStatus {
    Done,
    Failed,
    Blocked,
    RolledBack,
}

/// The result of one action of a pass.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub app: String,
    /// adopt, create, start, stop, remove, purge, blocked.
    pub action: String,
    pub status: OutcomeStatus,
    pub message: String,
}

/// Everything one pass did; failures are per app, a pass itself fails only if Podman or the
/// store cannot be read.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    pub outcomes: Vec<Outcome>,
}

impl ReconcileReport {
    pub fn for_app<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Outcome> + 'a {
        self.outcomes.iter().filter(move |o| o.app == app)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, OutcomeStatus::Failed | OutcomeStatus::Blocked))
    }
}

/// The answer of [`Reconciler::install`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum InstallOutcome {
    /// The spec runs and passed its health check.
    Running {
        container_id: String,
        version: String,
    },
    /// The update failed its health check; the previous version runs again.
    RolledBack { version: String, reason: String },
    /// It does not run; the reconciler keeps retrying with back-off.
    Failed { reason: String },
}

#[derive(Default)]
struct Memory {
    backoff: HashMap<String, Backoff>,
    healthy: HashMap<String, bool>,
    last_error: HashMap<String, String>,
    /// Apps the user just started: their exited container is not a crash.
    user_started: HashSet<String>,
}

/// What the actions of one pass share. Every Podman process costs 30–150 ms on these hosts, so
/// a pass asks each question once.
struct Pass {
    /// The one `podman ps` the plan was made from.
    observed: Vec<ObservedContainer>,
    /// Apps that failed or were blocked in this pass: their dependents wait.
    failed: HashSet<String>,
    /// Image references found in Podman in this pass, or by `install` just before it under the
    /// same lock. Should an image vanish after its check, `podman run` fails, and a failed update
    /// rolls back as on any other failure.
    images_ok: HashSet<String>,
    /// App → (container id, spec hash) this pass left running and healthy, or adopted running.
    up: HashMap<String, (String, String)>,
}

impl Pass {
    fn new(observed: Vec<ObservedContainer>) -> Self {
        Pass {
            observed,
            failed: HashSet::new(),
            images_ok: HashSet::new(),
            up: HashMap::new(),
        }
    }
}

/// A container found by name, with the labels that say whose it is.
struct NamedContainer {
    id: String,
    owner: Option<String>,
    spec_hash: Option<String>,
}

/// Owns the desired-state store and drives Podman. Share it with `Arc`.
pub struct Reconciler {
    cfg: Config,
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
        Ok(Reconciler {
            cfg,
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
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
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
        // Both read-only, so side by side: a slow host pays for one Podman start-up, not two.
        let (image, observed) = tokio::join!(self.ensure_image(&spec), self.observe());
        image?;
        let observed = observed?;
        self.store.update(&name, |old| {
            let rec = match old {
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
                        intent: Intent::Running,
                        update_pending: was_live,
                        rolled_back: None,
                    }
                }
                None => AppRecord {
                    current: spec.clone(),
                    previous: None,
                    intent: Intent::Running,
                    update_pending: false,
                    rolled_back: None,
                },
            };
            Ok((Some(rec), ()))
        })?;
        tracing::info!(app = %name, version = %spec.version, "install: intent committed");
        {
            let mut m = self.mem();
            m.backoff.remove(&name);
            m.user_started.insert(name.clone());
        }
        self.notify.notify_one();
        let mut pass = Pass::new(observed);
        pass.images_ok.insert(image_ref(&spec));
        let (report, pass) = self.run_pass(&held, pass).await?;
        drop(held);
        let rec = self
            .store
            .get(&name)?
            .ok_or_else(|| Error::UnknownApp(name.clone()))?;
        if let Some(rb) = &rec.rolled_back {
            if rb.from_spec_hash == hash {
                return Ok(InstallOutcome::RolledBack {
                    version: rb.to_version.clone(),
                    reason: rb.reason.clone(),
                });
            }
        }
        // The pass saw it running (adopted) or made it healthy: no second `podman ps`.
        let running = pass.up.get(&name).filter(|(_, h)| *h == hash);
        let failure = report
            .for_app(&name)
            .find(|o| matches!(o.status, OutcomeStatus::Failed | OutcomeStatus::Blocked));
        match (running, failure) {
            (Some((id, _)), None) => Ok(InstallOutcome::Running {
                container_id: id.clone(),
                version: spec.version,
            }),
            (_, Some(f)) => {
                let mut reason = f.message.clone();
                if f.status == OutcomeStatus::Blocked {
                    if let Some(last) = self.last_error(&name) {
                        reason = format!("{reason}; last failure: {last}");
                    }
                }
                Ok(InstallOutcome::Failed { reason })
            }
            (None, None) => Ok(InstallOutcome::Failed {
                reason: "no container is running after the pass".into(),
            }),
        }
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
            m.backoff.remove(app);
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
                    self.stop_container(&c.id, rec.current.stop_grace_secs)
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
        args.push(crate::spec::container_name(app));
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
        let c = observed
            .iter()
            .filter(|c| &c.app == app)
            .max_by_key(|c| (c.spec_hash == hash, c.state == ContainerState::Running));
        let m = self.mem();
        AppStatus {
            app: app.clone(),
            version: rec.current.version.clone(),
            intent: rec.intent,
            state: match c.map(|c| &c.state) {
                None => AppState::Absent,
                Some(ContainerState::Running) => AppState::Running,
                Some(ContainerState::Exited) => AppState::Stopped,
                Some(ContainerState::Created) => AppState::Created,
                Some(ContainerState::Paused) => AppState::Paused,
                Some(ContainerState::Other(_)) => AppState::Unknown,
            },
            container_id: c.map(|c| c.id.clone()),
            spec_hash: hash,
            healthy: m.healthy.get(app).copied(),
            last_error: m.last_error.get(app).cloned(),
            rolled_back: rec.rolled_back.clone(),
            ports: rec.current.ports.clone(),
            restarts_backing_off: m.backoff.get(app).map(|b| b.failures).unwrap_or(0),
        }
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
        let m = self.mem();
        m.backoff
            .values()
            .filter(|b| b.not_before_ms > now)
            .map(|b| Duration::from_millis(b.not_before_ms - now + 50))
            .fold(self.cfg.interval, Duration::min)
    }

    /// The containers this reconciler owns (`archy.owner` label).
    pub async fn observe(&self) -> Result<Vec<ObservedContainer>, Error> {
        let out = self
            .cfg
            .podman
            .ok(
                &[
                    "ps".into(),
                    "-a".into(),
                    "--format".into(),
                    "json".into(),
                    "--filter".into(),
                    format!("label={LABEL_OWNER}={}", self.cfg.owner),
                ],
                None,
                QUICK,
            )
            .await?;
        parse_ps(&out)
    }

    /// One level-triggered pass: observe, plan, apply. Per-app failures are in the report.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, Error> {
        let held = self.pass.lock().await;
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
                if c.state == ContainerState::Running
                    && c.started_at > 0
                    && now_unix - c.started_at >= self.cfg.stable_after.as_secs() as i64
                {
                    m.backoff.remove(&c.app);
                }
            }
            m.backoff.clone()
        };
        let desired: Vec<DesiredApp> = records
            .iter()
            .map(|r| DesiredApp::new(r.current.clone(), r.intent))
            .collect();
        let actions = plan(&desired, &pass.observed, &backoff, now_ms);
        let mut report = ReconcileReport::default();
        for action in actions {
            let app = action.app().to_string();
            let outcome = self.apply(action, &mut pass).await;
            if matches!(
                outcome.status,
                OutcomeStatus::Failed | OutcomeStatus::Blocked
            ) {
                pass.failed.insert(app.clone());
                // A back-off notice must not hide the failure that caused it.
                if outcome.status == OutcomeStatus::Failed {
                    self.mem().last_error.insert(app, outcome.message.clone());
                }
            } else if outcome.action != "adopt" {
                self.mem().last_error.remove(&app);
            }
            if outcome.action != "adopt" {
                tracing::info!(app = %outcome.app, action = %outcome.action, status = ?outcome.status, "{}", outcome.message);
            }
            report.outcomes.push(outcome);
        }
        Ok((report, pass))
    }

    // ------------------------------------------------------------------ apply

    async fn apply(&self, action: Action, pass: &mut Pass) -> Outcome {
        let app = action.app().to_string();
        let out = |action: &str, status, message: String| Outcome {
            app: app.clone(),
            action: action.into(),
            status,
            message,
        };
        // Failure isolation: only dependents of a failed app wait.
        if matches!(
            action,
            Action::Create { .. } | Action::Start { .. } | Action::Adopt { .. }
        ) {
            if let Ok(Some(rec)) = self.store.get(&app) {
                if let Some(dep) = rec
                    .current
                    .dependencies
                    .iter()
                    .find(|d| pass.failed.contains(*d))
                {
                    let verb = match &action {
                        Action::Create { .. } => "create",
                        Action::Start { .. } => "start",
                        _ => "adopt",
                    };
                    if verb != "adopt" {
                        return out(
                            verb,
                            OutcomeStatus::Blocked,
                            format!("dependency `{dep}` failed in this pass"),
                        );
                    }
                }
            }
        }
        match action {
            Action::Blocked { reason, .. } => out("blocked", OutcomeStatus::Blocked, reason),
            Action::Stop {
                container_id,
                grace_secs,
                ..
            } => match self.stop_container(&container_id, grace_secs).await {
                Ok(()) => out(
                    "stop",
                    OutcomeStatus::Done,
                    format!("stopped {}", short(&container_id)),
                ),
                Err(e) => out("stop", OutcomeStatus::Failed, e.to_string()),
            },
            Action::Remove {
                container_id,
                grace_secs,
                ..
            } => match self.remove_container(&container_id, grace_secs).await {
                Ok(()) => out(
                    "remove",
                    OutcomeStatus::Done,
                    format!("removed {}", short(&container_id)),
                ),
                Err(e) => out("remove", OutcomeStatus::Failed, e.to_string()),
            },
            Action::Purge {
                volumes, secrets, ..
            } => match self.purge(&app, volumes, secrets).await {
                Ok(()) => out(
                    "purge",
                    OutcomeStatus::Done,
                    "volumes, secrets and record removed".into(),
                ),
                Err(e) => out("purge", OutcomeStatus::Failed, e.to_string()),
            },
            Action::Adopt { container_id, .. } => {
                // An update whose container came up before a crash still owes its health check.
                let rec = match self.store.get(&app) {
                    Ok(Some(r)) => r,
                    Ok(None) => return out("adopt", OutcomeStatus::Done, "record gone".into()),
                    Err(e) => return out("adopt", OutcomeStatus::Failed, e.to_string()),
                };
                if rec.update_pending {
                    return self
                        .verify_or_roll_back(rec, &container_id, "adopt", pass)
                        .await;
                }
                pass.up
                    .insert(app.clone(), (container_id.clone(), rec.current.spec_hash()));
                out(
                    "adopt",
                    OutcomeStatus::Done,
                    format!("kept {}", short(&container_id)),
                )
            }
            Action::Start {
                container_id,
                crashed,
                ..
            } => {
                let rec = match self.store.get(&app) {
                    Ok(Some(r)) => r,
                    Ok(None) => return out("start", OutcomeStatus::Done, "record gone".into()),
                    Err(e) => return out("start", OutcomeStatus::Failed, e.to_string()),
                };
                let user_started = self.mem().user_started.remove(&app);
                if crashed && !user_started {
                    let code = pass
                        .observed
                        .iter()
                        .find(|c| c.id == container_id)
                        .map(|c| c.exit_code)
                        .unwrap_or(0);
                    tracing::warn!(app = %app, exit_code = code, "container exited on its own; restarting");
                    self.record_failure(&app);
                }
                if let Err(e) = self
                    .cfg
                    .podman
                    .ok(&["start".into(), container_id.clone()], None, QUICK)
                    .await
                {
                    return self
                        .bring_up_failed(rec, &container_id, "start", e.to_string(), pass)
                        .await;
                }
                self.verify_or_roll_back(rec, &container_id, "start", pass)
                    .await
            }
            Action::Create {
                replaces, reason, ..
            } => {
                let rec = match self.store.get(&app) {
                    Ok(Some(r)) => r,
                    Ok(None) => return out("create", OutcomeStatus::Done, "record gone".into()),
                    Err(e) => return out("create", OutcomeStatus::Failed, e.to_string()),
                };
                self.mem().user_started.remove(&app);
                // Check the image BEFORE touching the old container: a missing image must never
                // take a running app down.
                if let Err(e) = self.check_image(pass, &rec.current).await {
                    self.record_failure(&app);
                    return out("create", OutcomeStatus::Failed, e.to_string());
                }
                let old_grace = rec
                    .previous
                    .as_ref()
                    .map(|p| p.stop_grace_secs)
                    .unwrap_or(0)
                    .max(rec.current.stop_grace_secs);
                for id in &replaces {
                    if let Err(e) = self.remove_container(id, old_grace).await {
                        return out(
                            "create",
                            OutcomeStatus::Failed,
                            format!("removing the old container: {e}"),
                        );
                    }
                }
                tracing::info!(app = %app, version = %rec.current.version, ?reason, "creating container");
                match self.run_container(&rec.current).await {
                    Ok(id) => self.verify_or_roll_back(rec, &id, "create", pass).await,
                    Err((id, e)) => {
                        let id = id.unwrap_or_default();
                        self.bring_up_failed(rec, &id, "create", e.to_string(), pass)
                            .await
                    }
                }
            }
        }
    }

    /// Health check after create/start/adopt-of-an-update; on failure roll back or back off.
    async fn verify_or_roll_back(
        &self,
        rec: AppRecord,
        container_id: &str,
        verb: &str,
        pass: &mut Pass,
    ) -> Outcome {
        let app = rec.current.name.clone();
        match health::wait_healthy(&rec.current, container_id, &self.cfg.podman).await {
            Ok(()) => {
                self.mem().healthy.insert(app.clone(), true);
                pass.up.insert(
                    app.clone(),
                    (container_id.to_string(), rec.current.spec_hash()),
                );
                if rec.update_pending {
                    let hash = rec.current.spec_hash();
                    let _ = self.store.update(&app, |old| match old {
                        Some(mut r) if r.current.spec_hash() == hash => {
                            r.update_pending = false;
                            Ok((Some(r), ()))
                        }
                        other => Ok((other, ())),
                    });
                }
                Outcome {
                    app,
                    action: verb.into(),
                    status: OutcomeStatus::Done,
                    message: format!(
                        "{} {} running and healthy ({})",
                        rec.current.name,
                        rec.current.version,
                        short(container_id)
                    ),
                }
            }
            Err(reason) => {
                self.mem().healthy.insert(app.clone(), false);
                self.bring_up_failed(
                    rec,
                    container_id,
                    verb,
                    format!("unhealthy: {reason}"),
                    pass,
                )
                .await
            }
        }
    }

    /// The new container did not come up. During an update: roll back to the previous spec
    /// (committed first). Otherwise: stop it (so it is not adopted as healthy) and back off.
    async fn bring_up_failed(
        &self,
        rec: AppRecord,
        container_id: &str,
        verb: &str,
        reason: String,
        pass: &mut Pass,
    ) -> Outcome {
        let app = rec.current.name.clone();
        let prev = match (&rec.previous, rec.update_pending) {
            (Some(p), true) => p.clone(),
            _ => {
                self.record_failure(&app);
                if !container_id.is_empty() {
                    let _ = self
                        .stop_container(container_id, rec.current.stop_grace_secs)
                        .await;
                }
                return Outcome {
                    app,
                    action: verb.into(),
                    status: OutcomeStatus::Failed,
                    message: format!("{} {}: {reason}", rec.current.name, rec.current.version),
                };
            }
        };
        let failed_hash = rec.current.spec_hash();
        let rb = RolledBack {
            from_version: rec.current.version.clone(),
            from_spec_hash: failed_hash.clone(),
            to_version: prev.version.clone(),
            reason: reason.clone(),
        };
        tracing::warn!(app = %app, from = %rb.from_version, to = %rb.to_version, %reason, "update failed; rolling back");
        let committed = self.store.update(&app, |old| match old {
            Some(r) if r.current.spec_hash() == failed_hash => Ok((
                Some(AppRecord {
                    current: prev.clone(),
                    previous: None,
                    intent: r.intent,
                    update_pending: false,
                    rolled_back: Some(rb.clone()),
                }),
                true,
            )),
            other => Ok((other, false)),
        });
        if !matches!(committed, Ok(true)) {
            return Outcome {
                app,
                action: verb.into(),
                status: OutcomeStatus::Failed,
                message: format!("{reason}; the app's record changed meanwhile, not rolling back"),
            };
        }
        if !container_id.is_empty() {
            if let Err(e) = self
                .remove_container(container_id, rec.current.stop_grace_secs)
                .await
            {
                return Outcome {
                    app,
                    action: "rollback".into(),
                    status: OutcomeStatus::Failed,
                    message: format!("update failed ({reason}); removing it failed: {e}"),
                };
            }
        }
        let result = match self.check_image(pass, &prev).await {
            Err(e) => Err(e.to_string()),
            Ok(()) => match self.run_container(&prev).await {
                Err((_, e)) => Err(e.to_string()),
                Ok(id) => health::wait_healthy(&prev, &id, &self.cfg.podman)
                    .await
                    .map(|()| id),
            },
        };
        match result {
            Ok(id) => {
                self.mem().healthy.insert(app.clone(), true);
                pass.up.insert(app.clone(), (id, prev.spec_hash()));
                Outcome {
                    app,
                    action: "rollback".into(),
                    status: OutcomeStatus::RolledBack,
                    message: format!(
                        "update to {} failed ({reason}); rolled back to {}",
                        rb.from_version, rb.to_version
                    ),
                }
            }
            Err(e) => {
                self.record_failure(&app);
                Outcome {
                    app,
                    action: "rollback".into(),
                    status: OutcomeStatus::Failed,
                    message: format!(
                        "update to {} failed ({reason}); rollback to {} failed too: {e}",
                        rb.from_version, rb.to_version
                    ),
                }
            }
        }
    }

    fn record_failure(&self, app: &str) {
        let now = self.now_ms();
        let mut m = self.mem();
        let prev = m.backoff.get(app).copied().unwrap_or_default();
        let next = self.cfg.backoff.after_failure(prev, now);
        m.backoff.insert(app.to_string(), next);
    }

    // ------------------------------------------------------------------ podman operations

    /// The image the spec names is present (and has the expected id).
    async fn ensure_image(&self, spec: &AppSpec) -> Result<(), Error> {
        let reference = image_ref(spec);
        let out = self
            .cfg
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
            image: spec.image.clone(),
            expected: spec.image_id.clone(),
        };
        if !out.success {
            return Err(missing());
        }
        if spec.image_id.is_some() && !out.stdout.trim().starts_with(&reference) {
            return Err(missing());
        }
        Ok(())
    }

    /// [`ensure_image`](Self::ensure_image), once per image and pass.
    async fn check_image(&self, pass: &mut Pass, spec: &AppSpec) -> Result<(), Error> {
        let reference = image_ref(spec);
        if !pass.images_ok.contains(&reference) {
            self.ensure_image(spec).await?;
            pass.images_ok.insert(reference);
        }
        Ok(())
    }

    /// Creates the Podman secrets, then creates and starts the container (one `podman run`).
    /// On error returns the id of a container the run left behind (created, but its start
    /// failed), if any, so the caller can clean it up.
    async fn run_container(&self, spec: &AppSpec) -> Result<String, (Option<String>, Error)> {
        self.ensure_podman_secrets(spec)
            .await
            .map_err(|e| (None, e))?;
        let args = run_args(spec, &self.cfg.owner);
        let name = spec.container_name();
        let mut out = self
            .cfg
            .podman
            .run(&args, None, QUICK)
            .await
            .map_err(|e| (None, e))?;
        if !out.success && name_in_use(&out.stderr) {
            // Left over from a run interrupted by a crash: remove it if it is ours.
            self.remove_stale_name(&name).await.map_err(|e| (None, e))?;
            out = self
                .cfg
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
                    if c.owner.as_deref() == Some(self.cfg.owner.as_str())
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
        Ok(id)
    }

    /// The container called `name`, if Podman has one.
    async fn named(&self, name: &str) -> Result<Option<NamedContainer>, Error> {
        let out = self
            .cfg
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
            if c.owner.as_deref() != Some(self.cfg.owner.as_str()) {
                return Err(Error::Podman {
                    command: "podman run".into(),
                    message: format!("a container named {name} exists and is not managed by this node; remove or rename it"),
                });
            }
        }
        let rm = self
            .cfg
            .podman
            .run(&["rm".into(), "-f".into(), name.into()], None, QUICK)
            .await?;
        if !rm.success {
            // A run killed half-way can leave storage without a libpod container.
            self.cfg
                .podman
                .run(&["rm".into(), "--storage".into(), name.into()], None, QUICK)
                .await?;
        }
        Ok(())
    }

    async fn ensure_podman_secrets(&self, spec: &AppSpec) -> Result<(), Error> {
        for s in &spec.generated_secrets {
            let (value, fresh) = secrets::ensure(&self.cfg.state_dir, &spec.name, s)?;
            let name = podman_secret_name(&spec.name, &s.name);
            let exists = self
                .cfg
                .podman
                .run(
                    &["secret".into(), "inspect".into(), name.clone()],
                    None,
                    QUICK,
                )
                .await?
                .success;
            if exists && !fresh {
                continue;
            }
            if exists {
                // Our file is new, so the Podman copy is stale: replace it.
                self.cfg
                    .podman
                    .ok(&["secret".into(), "rm".into(), name.clone()], None, QUICK)
                    .await?;
            }
            self.cfg
                .podman
                .ok(
                    &["secret".into(), "create".into(), name.clone(), "-".into()],
                    Some(value.expose().as_bytes()),
                    QUICK,
                )
                .await?;
        }
        Ok(())
    }

    /// `podman stop -t grace`: SIGTERM, SIGKILL after the grace. We wait longer than the grace.
    async fn stop_container(&self, id: &str, grace_secs: u32) -> Result<(), Error> {
        let deadline = Duration::from_secs(grace_secs as u64) + STOP_SLACK;
        let out = self
            .cfg
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
        match health::container_running(&self.cfg.podman, id).await {
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
            .cfg
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

    async fn purge(
        &self,
        app: &str,
        mut volumes: Vec<String>,
        mut secret_names: Vec<String>,
    ) -> Result<(), Error> {
        // Also the volumes and secrets of the previous spec.
        if let Some(rec) = self.store.get(app)? {
            if let Some(prev) = &rec.previous {
                volumes.extend(prev.volumes.iter().map(|v| prev.volume_name(&v.name)));
                secret_names.extend(prev.generated_secrets.iter().map(|s| s.name.clone()));
            }
        }
        volumes.sort();
        volumes.dedup();
        secret_names.sort();
        secret_names.dedup();
        for v in &volumes {
            let out = self
                .cfg
                .podman
                .run(
                    &["volume".into(), "rm".into(), "-f".into(), v.clone()],
                    None,
                    QUICK,
                )
                .await?;
            if !out.success && !out.stderr.contains("no such volume") {
                return Err(Error::Podman {
                    command: "podman volume rm".into(),
                    message: out.stderr.trim().to_string(),
                });
            }
        }
        for s in &secret_names {
            let name = podman_secret_name(app, s);
            let out = self
                .cfg
                .podman
                .run(&["secret".into(), "rm".into(), name], None, QUICK)
                .await?;
            if !out.success && !out.stderr.contains("no such secret") {
                return Err(Error::Podman {
                    command: "podman secret rm".into(),
                    message: out.stderr.trim().to_string(),
                });
            }
        }
        secrets::remove_all(&self.cfg.state_dir, app)?;
        // Delete the record only if the user did not change their mind meanwhile.
        self.store.update(app, |old| match old {
            Some(r) if r.intent == Intent::Purged => Ok((None, ())),
            other => Ok((other, ())),
        })?;
        let mut m = self.mem();
        m.backoff.remove(app);
        m.healthy.remove(app);
        m.last_error.remove(app);
        Ok(())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
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
