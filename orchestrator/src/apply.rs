//! Applying one planned [`Action`]: the container verbs it takes, the health check after a
//! create or start, and on failure the rollback of an update or the back-off of the app.
//!
//! [`Applier`] borrows what an action needs — the container verbs ([`Containers`]), the store,
//! the in-memory state of the apps and the back-off tuning — and the [`Pass`] is handed in,
//! so applying knows nothing of the loop or the lock around it. [`Containers`] is the small
//! seam that lets the unit tests below drive apply with a scripted runtime; the real proof
//! stays the real-Podman test (`tests/podman.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex as StdMutex, MutexGuard};
use std::time::Instant;

use crate::backoff::{self, Backoff, BackoffPolicy, Event};
use crate::plan::Action;
use crate::podman::ObservedContainer;
use crate::report::{ActionKind, Outcome, OutcomeStatus};
use crate::runtime::{Containers, Seen};
use crate::spec::{AppSpec, Intent};
use crate::store::{AppRecord, RolledBack, Store};
use crate::Error;

/// What the reconciler remembers of each app between passes (in memory: a restart forgets it).
#[derive(Default)]
pub(crate) struct Memory {
    pub(crate) backoff: HashMap<String, Backoff>,
    pub(crate) healthy: HashMap<String, bool>,
    pub(crate) last_error: HashMap<String, String>,
    /// Apps the user just started: their exited container is not a crash.
    pub(crate) user_started: HashSet<String>,
}

impl Memory {
    /// The lock, even if a panic poisoned it (every update leaves it consistent).
    pub(crate) fn lock(m: &StdMutex<Memory>) -> MutexGuard<'_, Memory> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the actions of one pass share. Every Podman process costs 30–150 ms on these hosts, so
/// a pass asks each question once.
pub(crate) struct Pass {
    /// The one `podman ps` the plan was made from.
    pub(crate) observed: Vec<ObservedContainer>,
    /// Apps that failed or were blocked in this pass: their dependents wait.
    pub(crate) failed: HashSet<String>,
    /// Images and volumes Podman was already asked about in this pass (or by `install` just
    /// before it, under the same lock).
    pub(crate) seen: Seen,
    /// App → (container id, spec hash) this pass left running and healthy, or adopted running.
    pub(crate) up: HashMap<String, (String, String)>,
}

impl Pass {
    pub(crate) fn new(observed: Vec<ObservedContainer>) -> Self {
        Pass {
            observed,
            failed: HashSet::new(),
            seen: Seen::default(),
            up: HashMap::new(),
        }
    }
}

/// What applying an action borrows.
pub(crate) struct Applier<'a, C> {
    pub(crate) rt: &'a C,
    pub(crate) store: &'a Store,
    pub(crate) mem: &'a StdMutex<Memory>,
    pub(crate) policy: &'a BackoffPolicy,
    /// The back-off clock's zero (`now_ms` is the time since).
    pub(crate) epoch: Instant,
}

impl<C: Containers> Applier<'_, C> {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn mem(&self) -> MutexGuard<'_, Memory> {
        Memory::lock(self.mem)
    }

    pub(crate) async fn apply(&self, action: Action, pass: &mut Pass) -> Outcome {
        let app = action.app().to_string();
        let out = |action: ActionKind, status, message: String| Outcome {
            app: app.clone(),
            action,
            status,
            message,
        };
        // Failure isolation: only dependents of a failed app wait.
        if let Some(verb) = held_back_verb(&action) {
            if let Ok(Some(rec)) = self.store.get(&app) {
                if let Some(dep) = failed_dependency(&rec.current, &pass.failed) {
                    return out(
                        verb,
                        OutcomeStatus::Blocked,
                        format!("dependency `{dep}` failed in this pass"),
                    );
                }
            }
        }
        match action {
            Action::Blocked { reason, .. } => {
                out(ActionKind::Blocked, OutcomeStatus::Blocked, reason)
            }
            Action::Stop {
                container_id,
                grace_secs,
                ..
            } => match self.rt.stop_container(&container_id, grace_secs).await {
                Ok(()) => out(
                    ActionKind::Stop,
                    OutcomeStatus::Done,
                    format!("stopped {}", short(&container_id)),
                ),
                Err(e) => out(ActionKind::Stop, OutcomeStatus::Failed, e.to_string()),
            },
            Action::Remove {
                container_id,
                grace_secs,
                ..
            } => match self.rt.remove_container(&container_id, grace_secs).await {
                Ok(()) => out(
                    ActionKind::Remove,
                    OutcomeStatus::Done,
                    format!("removed {}", short(&container_id)),
                ),
                Err(e) => out(ActionKind::Remove, OutcomeStatus::Failed, e.to_string()),
            },
            Action::Purge {
                volumes, secrets, ..
            } => match self.purge(&app, volumes, secrets).await {
                Ok(()) => out(
                    ActionKind::Purge,
                    OutcomeStatus::Done,
                    "volumes, secrets and record removed".into(),
                ),
                Err(e) => out(ActionKind::Purge, OutcomeStatus::Failed, e.to_string()),
            },
            Action::Adopt { container_id, .. } => {
                // An update whose container came up before a crash still owes its health check.
                let rec = match self.store.get(&app) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return out(ActionKind::Adopt, OutcomeStatus::Done, "record gone".into())
                    }
                    Err(e) => return out(ActionKind::Adopt, OutcomeStatus::Failed, e.to_string()),
                };
                if rec.update_pending {
                    return self
                        .verify_or_roll_back(rec, &container_id, ActionKind::Adopt, pass)
                        .await;
                }
                pass.up
                    .insert(app.clone(), (container_id.clone(), rec.current.spec_hash()));
                out(
                    ActionKind::Adopt,
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
                    Ok(None) => {
                        return out(ActionKind::Start, OutcomeStatus::Done, "record gone".into())
                    }
                    Err(e) => return out(ActionKind::Start, OutcomeStatus::Failed, e.to_string()),
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
                if let Err(e) = self.rt.start_container(&container_id).await {
                    return self
                        .bring_up_failed(rec, &container_id, ActionKind::Start, e.to_string(), pass)
                        .await;
                }
                self.verify_or_roll_back(rec, &container_id, ActionKind::Start, pass)
                    .await
            }
            Action::Create {
                replaces, reason, ..
            } => {
                let rec = match self.store.get(&app) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return out(
                            ActionKind::Create,
                            OutcomeStatus::Done,
                            "record gone".into(),
                        )
                    }
                    Err(e) => return out(ActionKind::Create, OutcomeStatus::Failed, e.to_string()),
                };
                self.mem().user_started.remove(&app);
                // Check the image BEFORE touching the old container: a missing image must never
                // take a running app down.
                if let Err(e) = self.rt.check_image(&mut pass.seen, &rec.current).await {
                    self.record_failure(&app);
                    return out(ActionKind::Create, OutcomeStatus::Failed, e.to_string());
                }
                let old_grace = rec
                    .previous
                    .as_ref()
                    .map(|p| p.stop_grace_secs)
                    .unwrap_or(0)
                    .max(rec.current.stop_grace_secs);
                for id in &replaces {
                    if let Err(e) = self.rt.remove_container(id, old_grace).await {
                        return out(
                            ActionKind::Create,
                            OutcomeStatus::Failed,
                            format!("removing the old container: {e}"),
                        );
                    }
                }
                tracing::info!(app = %app, version = %rec.current.version, ?reason, "creating container");
                match self.rt.run_container(&rec.current, &mut pass.seen).await {
                    Ok(id) => {
                        self.verify_or_roll_back(rec, &id, ActionKind::Create, pass)
                            .await
                    }
                    Err((id, e)) => {
                        let id = id.unwrap_or_default();
                        self.bring_up_failed(rec, &id, ActionKind::Create, e.to_string(), pass)
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
        verb: ActionKind,
        pass: &mut Pass,
    ) -> Outcome {
        let app = rec.current.name.clone();
        match self.rt.wait_healthy(&rec.current, container_id).await {
            Ok(()) => {
                self.healthy(&app);
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
                    action: verb,
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
        verb: ActionKind,
        reason: String,
        pass: &mut Pass,
    ) -> Outcome {
        let app = rec.current.name.clone();
        let prev = match rollback_target(&rec) {
            Some(p) => p.clone(),
            None => {
                self.record_failure(&app);
                if !container_id.is_empty() {
                    let _ = self
                        .rt
                        .stop_container(container_id, rec.current.stop_grace_secs)
                        .await;
                }
                return Outcome {
                    app,
                    action: verb,
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
            Some(r) if r.current.spec_hash() == failed_hash => {
                Ok((Some(rolled_back(r, prev.clone(), rb.clone())), true))
            }
            other => Ok((other, false)),
        });
        if !matches!(committed, Ok(true)) {
            return Outcome {
                app,
                action: verb,
                status: OutcomeStatus::Failed,
                message: format!("{reason}; the app's record changed meanwhile, not rolling back"),
            };
        }
        if !container_id.is_empty() {
            if let Err(e) = self
                .rt
                .remove_container(container_id, rec.current.stop_grace_secs)
                .await
            {
                return Outcome {
                    app,
                    action: ActionKind::Rollback,
                    status: OutcomeStatus::Failed,
                    message: format!("update failed ({reason}); removing it failed: {e}"),
                };
            }
        }
        let result = match self.rt.check_image(&mut pass.seen, &prev).await {
            Err(e) => Err(e.to_string()),
            Ok(()) => match self.rt.run_container(&prev, &mut pass.seen).await {
                Err((_, e)) => Err(e.to_string()),
                Ok(id) => self.rt.wait_healthy(&prev, &id).await.map(|()| id),
            },
        };
        match result {
            Ok(id) => {
                self.healthy(&app);
                pass.up.insert(app.clone(), (id, prev.spec_hash()));
                Outcome {
                    app,
                    action: ActionKind::Rollback,
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
                    action: ActionKind::Rollback,
                    status: OutcomeStatus::Failed,
                    message: format!(
                        "update to {} failed ({reason}); rollback to {} failed too: {e}",
                        rb.from_version, rb.to_version
                    ),
                }
            }
        }
    }

    /// It came up healthy: noted, and (by the policy) its back-off is left as it is.
    fn healthy(&self, app: &str) {
        let now = self.now_ms();
        let mut m = self.mem();
        m.healthy.insert(app.to_string(), true);
        backoff::note(&mut m.backoff, self.policy, app, Event::Healthy, now);
    }

    fn record_failure(&self, app: &str) {
        let now = self.now_ms();
        backoff::note(
            &mut self.mem().backoff,
            self.policy,
            app,
            Event::Failed,
            now,
        );
    }

    async fn purge(
        &self,
        app: &str,
        mut volumes: Vec<String>,
        mut secret_names: Vec<String>,
    ) -> Result<(), Error> {
        // Also the volumes and secrets of the previous spec.
        let rec = self.store.get(app)?;
        if let Some(prev) = rec.as_ref().and_then(|r| r.previous.as_ref()) {
            volumes.extend(prev.volumes.iter().map(|v| prev.volume_name(&v.name)));
            secret_names.extend(prev.generated_secrets.iter().map(|s| s.name.clone()));
        }
        volumes.sort();
        volumes.dedup();
        secret_names.sort();
        secret_names.dedup();
        let publisher = rec.map(|r| r.current.publisher).unwrap_or_default();
        self.rt
            .purge_objects(app, &publisher, volumes, secret_names)
            .await?;
        // Delete the record only if the user did not change their mind meanwhile.
        self.store.update(app, |old| match old {
            Some(r) if r.intent == Intent::Purged => Ok((None, ())),
            other => Ok((other, ())),
        })?;
        let mut m = self.mem();
        backoff::note(&mut m.backoff, self.policy, app, Event::Purged, 0);
        m.healthy.remove(app);
        m.last_error.remove(app);
        Ok(())
    }
}

/// The verb of an action that waits when a dependency failed in this pass: creating or
/// starting a container. Keeping (adopting) one that runs is never held back.
fn held_back_verb(action: &Action) -> Option<ActionKind> {
    match action {
        Action::Create { .. } => Some(ActionKind::Create),
        Action::Start { .. } => Some(ActionKind::Start),
        _ => None,
    }
}

/// The first of the spec's dependencies that failed (or was blocked) in this pass.
fn failed_dependency<'a>(spec: &'a AppSpec, failed: &HashSet<String>) -> Option<&'a str> {
    spec.dependencies
        .iter()
        .find(|d| failed.contains(*d))
        .map(String::as_str)
}

/// What a failed bring-up rolls back to: the previous spec, during an update. A first install,
/// or a reinstall after uninstall (nothing ran to roll back to), backs off instead.
fn rollback_target(rec: &AppRecord) -> Option<&AppSpec> {
    match (&rec.previous, rec.update_pending) {
        (Some(p), true) => Some(p),
        _ => None,
    }
}

/// The record after a rollback to `prev`: no update pending and nothing left to roll back to;
/// intent, naming and hold unchanged.
fn rolled_back(r: AppRecord, prev: AppSpec, rb: RolledBack) -> AppRecord {
    AppRecord {
        current: prev,
        previous: None,
        intent: r.intent,
        update_pending: false,
        rolled_back: Some(rb),
        names: r.names,
        held: r.held,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
