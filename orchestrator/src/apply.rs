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
use crate::podman::{ContainerState, ObservedContainer};
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
    /// App → (container id, spec hash) this pass left running and healthy, or adopted running
    /// (a stack's first service in start order).
    pub(crate) up: HashMap<String, (String, String)>,
    /// Containers removed in this pass: what `observed` still lists of them is gone.
    pub(crate) removed: HashSet<String>,
    /// Apps that came up in this pass: their dependencies' exports are connected into their
    /// network, and their own exports into their dependents' ([`Applier::wire`]).
    pub(crate) wire: Vec<String>,
}

impl Pass {
    pub(crate) fn new(observed: Vec<ObservedContainer>) -> Self {
        Pass {
            observed,
            failed: HashSet::new(),
            seen: Seen::default(),
            up: HashMap::new(),
            removed: HashSet::new(),
            wire: Vec::new(),
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
                Ok(()) => {
                    pass.removed.insert(container_id.clone());
                    out(
                        ActionKind::Remove,
                        OutcomeStatus::Done,
                        format!("removed {}", short(&container_id)),
                    )
                }
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
                if rec.update_pending && rec.current.is_stack() {
                    return self.up_stack(rec, ActionKind::Adopt, pass).await;
                }
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
                if let Err(e) = self.wire_dependencies(&rec.current, pass).await {
                    tracing::warn!(app = %app, "connecting its dependencies: {e}");
                }
                if let Err(e) = self.rt.start_container(&container_id).await {
                    return self
                        .bring_up_failed(
                            rec,
                            vec![container_id],
                            ActionKind::Start,
                            e.to_string(),
                            pass,
                        )
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
                    .map(AppSpec::stop_grace_secs)
                    .unwrap_or(0)
                    .max(rec.current.stop_grace_secs());
                for id in &replaces {
                    if let Err(e) = self.rt.remove_container(id, old_grace).await {
                        return out(
                            ActionKind::Create,
                            OutcomeStatus::Failed,
                            format!("removing the old container: {e}"),
                        );
                    }
                    pass.removed.insert(id.clone());
                }
                if let Err(e) = self.wire_dependencies(&rec.current, pass).await {
                    self.record_failure(&app);
                    return out(
                        ActionKind::Create,
                        OutcomeStatus::Failed,
                        format!("connecting its dependencies: {e}"),
                    );
                }
                if rec.current.is_stack() {
                    tracing::info!(app = %app, version = %rec.current.version, ?reason, "bringing the stack up");
                    return self.up_stack(rec, ActionKind::Create, pass).await;
                }
                tracing::info!(app = %app, version = %rec.current.version, ?reason, "creating container");
                match self.rt.run_container(&rec.current, 0, &mut pass.seen).await {
                    Ok(id) => {
                        self.verify_or_roll_back(rec, &id, ActionKind::Create, pass)
                            .await
                    }
                    Err((id, e)) => {
                        let ids = id.into_iter().collect();
                        self.bring_up_failed(rec, ids, ActionKind::Create, e.to_string(), pass)
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
        match self.rt.wait_healthy(&rec.current, 0, container_id).await {
            Ok(()) => {
                self.came_up(&rec, container_id, pass);
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
                    vec![container_id.to_owned()],
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
        ids: Vec<String>,
        verb: ActionKind,
        reason: String,
        pass: &mut Pass,
    ) -> Outcome {
        let app = rec.current.name.clone();
        let grace = rec.current.stop_grace_secs();
        let prev = match rollback_target(&rec) {
            Some(p) => p.clone(),
            None => {
                self.record_failure(&app);
                for id in ids.iter().rev().filter(|id| !id.is_empty()) {
                    let _ = self.rt.stop_container(id, grace).await;
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
        // The whole app goes back: every container of the failed spec, last started first.
        for id in ids.iter().rev().filter(|id| !id.is_empty()) {
            if let Err(e) = self.rt.remove_container(id, grace).await {
                return Outcome {
                    app,
                    action: ActionKind::Rollback,
                    status: OutcomeStatus::Failed,
                    message: format!("update failed ({reason}); removing it failed: {e}"),
                };
            }
            pass.removed.insert(id.clone());
        }
        let result = match self.rt.check_image(&mut pass.seen, &prev).await {
            Err(e) => Err(e.to_string()),
            Ok(()) => self
                .bring_up(&prev, pass)
                .await
                .map(|ids| ids.into_iter().next().unwrap_or_default())
                .map_err(|(_, e)| e),
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

    /// The app came up healthy with `first` as its (first) container: noted, and a pending
    /// update is settled.
    fn came_up(&self, rec: &AppRecord, first: &str, pass: &mut Pass) {
        let app = rec.current.name.clone();
        pass.wire.push(app.clone());
        self.healthy(&app);
        let hash = rec.current.spec_hash();
        pass.up
            .insert(app.clone(), (first.to_string(), hash.clone()));
        if rec.update_pending {
            let _ = self.store.update(&app, |old| match old {
                Some(mut r) if r.current.spec_hash() == hash => {
                    r.update_pending = false;
                    Ok((Some(r), ()))
                }
                other => Ok((other, ())),
            });
        }
    }

    /// Brings a whole stack up ([`Applier::bring_up`]); a failure rolls the whole app back
    /// during an update, or stops what came up and backs off.
    async fn up_stack(&self, rec: AppRecord, verb: ActionKind, pass: &mut Pass) -> Outcome {
        match self.bring_up(&rec.current, pass).await {
            Ok(ids) => {
                self.came_up(&rec, ids.first().map_or("", String::as_str), pass);
                Outcome {
                    app: rec.current.name.clone(),
                    action: verb,
                    status: OutcomeStatus::Done,
                    message: format!(
                        "{} {} running and healthy ({} services)",
                        rec.current.name,
                        rec.current.version,
                        ids.len()
                    ),
                }
            }
            Err((ids, reason)) => {
                self.mem().healthy.insert(rec.current.name.clone(), false);
                self.bring_up_failed(rec, ids, verb, reason, pass).await
            }
        }
    }

    /// Every service of `spec` up and healthy, in start order (PROTOCOL §2.2: a service starts
    /// after those it depends on are healthy): a running container of the spec is kept, a
    /// stopped one started, a missing one run. The containers' ids in start order, or those
    /// this left (to clean up) with the reason.
    async fn bring_up(
        &self,
        spec: &AppSpec,
        pass: &mut Pass,
    ) -> Result<Vec<String>, (Vec<String>, String)> {
        let hash = spec.spec_hash();
        let mut ids: Vec<String> = Vec::new();
        for i in spec.start_order() {
            let svc = &spec.services[i];
            let name = spec.container_of(svc);
            let what = if svc.name.is_empty() {
                spec.name.clone()
            } else {
                format!("service `{}`", svc.name)
            };
            let found = pass
                .observed
                .iter()
                .find(|c| c.name == name && c.spec_hash == hash && !pass.removed.contains(&c.id))
                .map(|c| (c.id.clone(), c.state == ContainerState::Running));
            let id = match found {
                Some((id, true)) => id,
                Some((id, false)) => {
                    if let Err(e) = self.rt.start_container(&id).await {
                        ids.push(id);
                        return Err((ids, format!("{what}: {e}")));
                    }
                    id
                }
                None => match self.rt.run_container(spec, i, &mut pass.seen).await {
                    Ok(id) => id,
                    Err((left, e)) => {
                        ids.extend(left);
                        return Err((ids, format!("{what}: {e}")));
                    }
                },
            };
            ids.push(id.clone());
            if let Err(e) = self.rt.wait_healthy(spec, i, &id).await {
                return Err((ids, format!("{what} unhealthy: {e}")));
            }
        }
        Ok(ids)
    }

    /// Before `spec`'s containers start: its network exists and each running dependency's
    /// exported services are connected into it as `<service>.<dependency>` (PROTOCOL §2.2),
    /// so the app reaches them from its first health check.
    async fn wire_dependencies(&self, spec: &AppSpec, pass: &mut Pass) -> Result<(), Error> {
        if spec.dependencies.is_empty() {
            return Ok(());
        }
        self.rt.ensure_network(spec, &mut pass.seen).await?;
        for dep in
            self.store.all()?.iter().filter(|r| {
                r.intent == Intent::Running && spec.dependencies.contains(&r.current.name)
            })
        {
            for (container, alias) in dep.current.exported() {
                self.rt
                    .connect(&spec.network_name(), &container, &alias)
                    .await?;
            }
        }
        Ok(())
    }

    /// After `app` came up (a new container has no connections): its exported services into
    /// each running dependent's network. A failure is logged; the app keeps running.
    pub(crate) async fn wire_dependents(&self, app: &str) {
        let Ok(records) = self.store.all() else {
            return;
        };
        let Some(me) = records.iter().find(|r| r.current.name == app) else {
            return;
        };
        for dependent in records.iter().filter(|r| {
            r.intent == Intent::Running && r.current.dependencies.iter().any(|d| d == app)
        }) {
            for (container, alias) in me.current.exported() {
                let network = dependent.current.network_name();
                if let Err(e) = self.rt.connect(&network, &container, &alias).await {
                    tracing::warn!(app, %network, %container, "connecting an export: {e}");
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
            volumes.extend(prev.volumes().iter().map(|v| prev.volume_name(&v.name)));
            secret_names.extend(prev.secrets().iter().map(|s| s.name.clone()));
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

#[cfg(test)]
mod tests {
    //! Apply driven through a scripted runtime and a real store in a temporary directory:
    //! which verbs run in which order, which outcome follows, when a rollback is chosen and
    //! what it commits, and when a failure counts towards the back-off.

    use std::collections::VecDeque;

    use super::*;
    use crate::plan::CreateReason;
    use crate::spec::VolumeSpec;

    /// What the scripted runtime answers.
    #[derive(Default)]
    struct Script {
        /// Versions whose image is not in "Podman".
        missing_images: HashSet<String>,
        /// The answers of successive `run`s: the new id, or the id left behind and an error.
        runs: VecDeque<Result<String, (Option<String>, String)>>,
        start_fails: bool,
        /// Container ids whose health check fails.
        unhealthy: HashSet<String>,
    }

    /// A runtime that records every verb (`"run 2"`, `"stop c1"`, …) and answers from a script.
    #[derive(Default)]
    struct Fake {
        script: StdMutex<Script>,
        calls: StdMutex<Vec<String>>,
    }

    impl Fake {
        fn call(&self, c: String) {
            self.calls.lock().unwrap().push(c);
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    fn podman_error(message: &str) -> Error {
        Error::Podman {
            command: "podman fake".into(),
            message: message.into(),
        }
    }

    impl Containers for Fake {
        async fn check_image(&self, _: &mut Seen, spec: &AppSpec) -> Result<(), Error> {
            self.call(format!("image {}", spec.version));
            if self
                .script
                .lock()
                .unwrap()
                .missing_images
                .contains(&spec.version)
            {
                return Err(Error::ImageMissing {
                    image: spec.service().image.clone(),
                    expected: None,
                });
            }
            Ok(())
        }

        async fn run_container(
            &self,
            spec: &AppSpec,
            svc: usize,
            _: &mut Seen,
        ) -> Result<String, (Option<String>, Error)> {
            match spec.services[svc].name.as_str() {
                "" => self.call(format!("run {}", spec.version)),
                name => self.call(format!("run {} {name}", spec.version)),
            }
            let next = self.script.lock().unwrap().runs.pop_front();
            match next.expect("an unscripted run") {
                Ok(id) => Ok(id),
                Err((left, message)) => Err((left, podman_error(&message))),
            }
        }

        async fn start_container(&self, id: &str) -> Result<(), Error> {
            self.call(format!("start {id}"));
            if self.script.lock().unwrap().start_fails {
                return Err(podman_error("cannot start"));
            }
            Ok(())
        }

        async fn wait_healthy(&self, _: &AppSpec, _: usize, id: &str) -> Result<(), String> {
            self.call(format!("health {id}"));
            if self.script.lock().unwrap().unhealthy.contains(id) {
                return Err("health check failed 3 times".into());
            }
            Ok(())
        }

        async fn ensure_network(&self, spec: &AppSpec, _: &mut Seen) -> Result<(), Error> {
            self.call(format!("network {}", spec.name));
            Ok(())
        }

        async fn connect(&self, network: &str, container: &str, alias: &str) -> Result<(), Error> {
            self.call(format!("connect {network} {container} {alias}"));
            Ok(())
        }

        async fn stop_container(&self, id: &str, grace_secs: u32) -> Result<(), Error> {
            self.call(format!("stop {id} {grace_secs}"));
            Ok(())
        }

        async fn remove_container(&self, id: &str, grace_secs: u32) -> Result<(), Error> {
            self.call(format!("remove {id} {grace_secs}"));
            Ok(())
        }

        async fn purge_objects(
            &self,
            app: &str,
            publisher: &str,
            volumes: Vec<String>,
            secret_names: Vec<String>,
        ) -> Result<(), Error> {
            self.call(format!(
                "purge {app} {publisher} {volumes:?} {secret_names:?}"
            ));
            Ok(())
        }
    }

    const POLICY: BackoffPolicy = BackoffPolicy {
        base_ms: 2_000,
        max_ms: 300_000,
    };

    struct Env {
        _dir: tempfile::TempDir,
        store: Store,
        mem: StdMutex<Memory>,
        rt: Fake,
    }

    impl Env {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            Env {
                _dir: dir,
                store,
                mem: StdMutex::default(),
                rt: Fake::default(),
            }
        }

        fn script(&self) -> std::sync::MutexGuard<'_, Script> {
            self.rt.script.lock().unwrap()
        }

        fn put(&self, rec: AppRecord) {
            let name = rec.current.name.clone();
            self.store.update(&name, |_| Ok((Some(rec), ()))).unwrap();
        }

        fn record(&self, app: &str) -> Option<AppRecord> {
            self.store.get(app).unwrap()
        }

        fn failures(&self, app: &str) -> u32 {
            Memory::lock(&self.mem)
                .backoff
                .get(app)
                .map_or(0, |b| b.failures)
        }

        async fn apply(&self, action: Action, pass: &mut Pass) -> Outcome {
            let applier = Applier {
                rt: &self.rt,
                store: &self.store,
                mem: &self.mem,
                policy: &POLICY,
                epoch: Instant::now(),
            };
            applier.apply(action, pass).await
        }
    }

    fn spec(version: &str) -> AppSpec {
        AppSpec::new("web", version, format!("localhost/web:{version}"))
    }

    /// `web` updated from 1 to 2, the update not yet healthy.
    fn update() -> AppRecord {
        AppRecord {
            previous: Some(spec("1")),
            update_pending: true,
            ..AppRecord::new(spec("2"))
        }
    }

    fn create(replaces: &[&str]) -> Action {
        Action::Create {
            app: "web".into(),
            reason: if replaces.is_empty() {
                CreateReason::Missing
            } else {
                CreateReason::Drift
            },
            replaces: replaces.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn start(id: &str, crashed: bool) -> Action {
        Action::Start {
            app: "web".into(),
            container_id: id.into(),
            crashed,
        }
    }

    fn pass() -> Pass {
        Pass::new(vec![])
    }

    #[tokio::test]
    async fn adopting_keeps_a_running_container_and_asks_podman_nothing() {
        let env = Env::new();
        env.put(AppRecord::new(spec("1")));
        let mut pass = pass();
        let action = Action::Adopt {
            app: "web".into(),
            container_id: "c1".into(),
        };
        let o = env.apply(action, &mut pass).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Adopt, OutcomeStatus::Done)
        );
        assert_eq!(o.message, "kept c1");
        assert_eq!(pass.up["web"], ("c1".into(), spec("1").spec_hash()));
        assert!(env.rt.calls().is_empty());
    }

    #[tokio::test]
    async fn an_adopted_update_still_owes_its_health_check() {
        let env = Env::new();
        env.put(update());
        let action = Action::Adopt {
            app: "web".into(),
            container_id: "c2".into(),
        };
        let o = env.apply(action, &mut pass()).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Adopt, OutcomeStatus::Done)
        );
        assert_eq!(env.rt.calls(), ["health c2"]);
        // Healthy: the update is done, the previous spec kept for a later rollback.
        let rec = env.record("web").unwrap();
        assert!(!rec.update_pending);
        assert_eq!(rec.previous, Some(spec("1")));
    }

    #[tokio::test]
    async fn a_missing_image_fails_before_the_old_container_is_touched() {
        let env = Env::new();
        env.put(update());
        env.script().missing_images.insert("2".into());
        let o = env.apply(create(&["c1"]), &mut pass()).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Create, OutcomeStatus::Failed)
        );
        assert!(o.message.contains("is not in Podman"), "{o:?}");
        assert_eq!(env.rt.calls(), ["image 2"]);
        assert_eq!(env.failures("web"), 1);
        // Not a failed bring-up: nothing is rolled back, the update waits for its image.
        assert_eq!(env.record("web"), Some(update()));
    }

    #[tokio::test]
    async fn an_unhealthy_update_rolls_back_to_the_previous_spec() {
        let env = Env::new();
        env.put(update());
        {
            let mut s = env.script();
            s.runs.extend([Ok("new".into()), Ok("old".into())]);
            s.unhealthy.insert("new".into());
        }
        let mut pass = pass();
        let o = env.apply(create(&["c1"]), &mut pass).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Rollback, OutcomeStatus::RolledBack)
        );
        assert_eq!(
            o.message,
            "update to 2 failed (unhealthy: health check failed 3 times); rolled back to 1"
        );
        assert_eq!(
            env.rt.calls(),
            [
                "image 2",
                "remove c1 30",
                "run 2",
                "health new",
                "remove new 30",
                "image 1",
                "run 1",
                "health old"
            ]
        );
        // Committed before the old spec was brought back.
        let rec = env.record("web").unwrap();
        assert_eq!(rec.current, spec("1"));
        assert_eq!((rec.previous, rec.update_pending), (None, false));
        let rb = rec.rolled_back.unwrap();
        assert_eq!(
            (rb.from_version.as_str(), rb.to_version.as_str()),
            ("2", "1")
        );
        assert_eq!(rb.from_spec_hash, spec("2").spec_hash());
        assert_eq!(pass.up["web"], ("old".into(), spec("1").spec_hash()));
        // A rollback that worked is not a crash loop.
        assert_eq!(env.failures("web"), 0);
        assert!(Memory::lock(&env.mem).healthy["web"]);
    }

    #[tokio::test]
    async fn a_rollback_that_fails_too_backs_off() {
        let env = Env::new();
        env.put(update());
        {
            let mut s = env.script();
            s.runs.extend([Ok("new".into()), Ok("old".into())]);
            s.unhealthy.extend(["new".into(), "old".into()]);
        }
        let mut pass = pass();
        let o = env.apply(create(&[]), &mut pass).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Rollback, OutcomeStatus::Failed)
        );
        assert!(o.message.contains("rollback to 1 failed too"), "{o:?}");
        assert_eq!(env.failures("web"), 1);
        assert!(pass.up.is_empty());
        // The rollback stays committed: the next pass retries the previous spec, not the update.
        assert_eq!(env.record("web").unwrap().current, spec("1"));
    }

    #[tokio::test]
    async fn a_failed_start_of_an_update_rolls_back() {
        let env = Env::new();
        env.put(update());
        {
            let mut s = env.script();
            s.start_fails = true;
            s.runs.push_back(Ok("old".into()));
        }
        let o = env.apply(start("c2", false), &mut pass()).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Rollback, OutcomeStatus::RolledBack)
        );
        assert_eq!(
            env.rt.calls(),
            ["start c2", "remove c2 30", "image 1", "run 1", "health old"]
        );
    }

    #[tokio::test]
    async fn an_unhealthy_first_install_is_stopped_and_backs_off() {
        let env = Env::new();
        env.put(AppRecord::new(spec("1")));
        {
            let mut s = env.script();
            s.runs.push_back(Ok("c1".into()));
            s.unhealthy.insert("c1".into());
        }
        let mut pass = pass();
        let o = env.apply(create(&[]), &mut pass).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Create, OutcomeStatus::Failed)
        );
        assert_eq!(o.message, "web 1: unhealthy: health check failed 3 times");
        // Stopped, not removed: it is not adopted as healthy, and the next try reuses it.
        assert_eq!(
            env.rt.calls(),
            ["image 1", "run 1", "health c1", "stop c1 30"]
        );
        assert_eq!(env.failures("web"), 1);
        assert!(!Memory::lock(&env.mem).healthy["web"]);
        assert!(pass.up.is_empty());
        assert_eq!(env.record("web"), Some(AppRecord::new(spec("1"))));
    }

    #[tokio::test]
    async fn a_failed_run_stops_only_a_container_it_left_behind() {
        let env = Env::new();
        env.put(AppRecord::new(spec("1")));
        env.script().runs.extend([
            Err((Some("half".into()), "port is taken".into())),
            Err((None, "no such image".into())),
        ]);
        let o = env.apply(create(&[]), &mut pass()).await;
        assert_eq!(o.status, OutcomeStatus::Failed);
        assert!(o.message.ends_with("port is taken"), "{o:?}");
        assert_eq!(env.rt.calls(), ["image 1", "run 1", "stop half 30"]);
        let o = env.apply(create(&[]), &mut pass()).await;
        assert_eq!(o.status, OutcomeStatus::Failed);
        assert_eq!(env.rt.calls(), ["image 1", "run 1"]);
        assert_eq!(env.failures("web"), 2);
    }

    #[tokio::test]
    async fn a_crash_counts_towards_the_back_off_a_user_start_does_not() {
        let env = Env::new();
        env.put(AppRecord::new(spec("1")));
        let o = env.apply(start("c1", true), &mut pass()).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Start, OutcomeStatus::Done)
        );
        assert_eq!(env.rt.calls(), ["start c1", "health c1"]);
        // Counted before the start; the healthy start does not end the loop.
        assert_eq!(env.failures("web"), 1);
        Memory::lock(&env.mem).user_started.insert("web".into());
        let o = env.apply(start("c1", true), &mut pass()).await;
        assert_eq!(o.status, OutcomeStatus::Done);
        assert_eq!(env.failures("web"), 1);
        assert!(Memory::lock(&env.mem).user_started.is_empty());
        // A container that was never started did not crash.
        env.apply(start("c1", false), &mut pass()).await;
        assert_eq!(env.failures("web"), 1);
    }

    #[tokio::test]
    async fn dependents_of_a_failed_app_wait_running_ones_are_kept() {
        let env = Env::new();
        let mut api = AppSpec::new("api", "1", "localhost/api:1");
        api.dependencies = vec!["db".into()];
        env.put(AppRecord::new(api));
        let mut pass = pass();
        pass.failed.insert("db".into());
        let on_api = |a: Action| match a {
            Action::Create {
                reason, replaces, ..
            } => Action::Create {
                app: "api".into(),
                reason,
                replaces,
            },
            Action::Start {
                container_id,
                crashed,
                ..
            } => Action::Start {
                app: "api".into(),
                container_id,
                crashed,
            },
            other => other,
        };
        for (action, verb) in [
            (on_api(create(&[])), ActionKind::Create),
            (on_api(start("c1", true)), ActionKind::Start),
        ] {
            let o = env.apply(action, &mut pass).await;
            assert_eq!((o.action, o.status.clone()), (verb, OutcomeStatus::Blocked));
            assert_eq!(o.message, "dependency `db` failed in this pass");
        }
        let adopt = Action::Adopt {
            app: "api".into(),
            container_id: "c1".into(),
        };
        let o = env.apply(adopt, &mut pass).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Adopt, OutcomeStatus::Done)
        );
        assert!(env.rt.calls().is_empty());
        assert_eq!(env.failures("api"), 0);
    }

    #[tokio::test]
    async fn a_purge_takes_the_previous_specs_objects_and_the_record() {
        let env = Env::new();
        let mut old = spec("1");
        old.service_mut().volumes.push(VolumeSpec {
            name: "cache".into(),
            target: "/cache".into(),
        });
        let mut rec = AppRecord {
            previous: Some(old),
            intent: Intent::Purged,
            ..AppRecord::new(spec("2"))
        };
        rec.current.publisher = "did:key:pub".into();
        rec.previous.as_mut().unwrap().publisher = "did:key:pub".into();
        env.put(rec);
        {
            let mut m = Memory::lock(&env.mem);
            m.healthy.insert("web".into(), true);
            m.last_error.insert("web".into(), "old".into());
            backoff::note(&mut m.backoff, &POLICY, "web", Event::Failed, 0);
        }
        let action = Action::Purge {
            app: "web".into(),
            volumes: vec!["archy_web_data".into(), "archy_web_cache".into()],
            secrets: vec!["token".into()],
        };
        let o = env.apply(action, &mut pass()).await;
        assert_eq!(
            (o.action, o.status.clone()),
            (ActionKind::Purge, OutcomeStatus::Done)
        );
        assert_eq!(
            env.rt.calls(),
            [r#"purge web did:key:pub ["archy_web_cache", "archy_web_data"] ["token"]"#]
        );
        assert_eq!(env.record("web"), None);
        let m = Memory::lock(&env.mem);
        assert!(m.backoff.is_empty() && m.healthy.is_empty() && m.last_error.is_empty());
    }

    #[tokio::test]
    async fn a_purge_keeps_the_record_of_a_user_who_changed_their_mind() {
        let env = Env::new();
        env.put(AppRecord::new(spec("1")));
        let action = Action::Purge {
            app: "web".into(),
            volumes: vec![],
            secrets: vec![],
        };
        let o = env.apply(action, &mut pass()).await;
        assert_eq!(o.status, OutcomeStatus::Done);
        assert_eq!(env.record("web"), Some(AppRecord::new(spec("1"))));
    }

    #[tokio::test]
    async fn a_vanished_record_is_not_brought_up() {
        let env = Env::new();
        for action in [create(&["c1"]), start("c1", true)] {
            let o = env.apply(action, &mut pass()).await;
            assert_eq!(
                (o.status.clone(), o.message.as_str()),
                (OutcomeStatus::Done, "record gone")
            );
        }
        assert!(env.rt.calls().is_empty());
        assert_eq!(env.failures("web"), 0);
    }

    #[test]
    fn only_an_update_rolls_back() {
        assert_eq!(rollback_target(&update()), Some(&spec("1")));
        // A reinstall after uninstall keeps the old spec but has nothing running to go back to.
        let reinstall = AppRecord {
            update_pending: false,
            ..update()
        };
        assert_eq!(rollback_target(&reinstall), None);
        assert_eq!(rollback_target(&AppRecord::new(spec("1"))), None);
    }
}
