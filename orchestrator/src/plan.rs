//! The pure planner: (desired apps + intents, observed containers, back-off state, now) →
//! ordered actions. No I/O and no clock: `now_ms` and the back-off state are inputs, so every
//! decision is unit-tested without Podman.
//!
//! Ordering: first everything that takes containers away (stop / remove / purge), dependents
//! before their dependencies; then everything that brings them up (adopt / start / create),
//! dependencies before their dependents. An app whose dependency is blocked (missing, stopped,
//! in a cycle, backing off) is itself blocked; other apps are unaffected.

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use crate::backoff::{Backoff, BackoffPolicy};
use crate::podman::{ContainerState, ObservedContainer};
use crate::spec::{AppSpec, Intent};

/// One app as the store wants it.
#[derive(Clone, Debug)]
pub struct DesiredApp {
    pub spec: AppSpec,
    pub spec_hash: String,
    pub intent: Intent,
}

impl DesiredApp {
    pub fn new(spec: AppSpec, intent: Intent) -> Self {
        let spec_hash = spec.spec_hash();
        DesiredApp {
            spec,
            spec_hash,
            intent,
        }
    }
}

/// Why a container is being (re)created; reported to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateReason {
    /// No container exists.
    Missing,
    /// The container was created from another spec (update, or edited behind our back).
    Drift,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A container matching the spec is running: keep it (no restart, same id).
    Adopt { app: String, container_id: String },
    /// Remove `replaces` (after a graceful stop) and create + start a container for the spec.
    /// The executor checks the image before touching the old containers.
    Create {
        app: String,
        reason: CreateReason,
        replaces: Vec<String>,
    },
    /// Start the existing matching container. `crashed` when it exited while it should run.
    Start {
        app: String,
        container_id: String,
        crashed: bool,
    },
    /// Graceful stop, container kept (the user stopped the app).
    Stop {
        app: String,
        container_id: String,
        grace_secs: u32,
    },
    /// Graceful stop and removal of a container (uninstall, purge, orphan).
    Remove {
        app: String,
        container_id: String,
        grace_secs: u32,
    },
    /// Delete volumes, secrets and the app's record (after its containers are removed).
    Purge {
        app: String,
        volumes: Vec<String>,
        secrets: Vec<String>,
    },
    /// Nothing can be done now; the reason is reported.
    Blocked { app: String, reason: String },
}

impl Action {
    pub fn app(&self) -> &str {
        match self {
            Action::Adopt { app, .. }
            | Action::Create { app, .. }
            | Action::Start { app, .. }
            | Action::Stop { app, .. }
            | Action::Remove { app, .. }
            | Action::Purge { app, .. }
            | Action::Blocked { app, .. } => app,
        }
    }
}

/// Grace used for containers with no desired spec (orphans).
const ORPHAN_GRACE_SECS: u32 = 10;

/// Removes of an app's stale containers (other spec hash, other name, extra copies).
fn remove_all<'a>(
    app: &'a str,
    ids: Vec<String>,
    d: &'a DesiredApp,
) -> impl Iterator<Item = Action> + 'a {
    ids.into_iter().map(move |id| Action::Remove {
        app: app.to_owned(),
        container_id: id,
        grace_secs: d.spec.stop_grace_secs(),
    })
}

/// Computes the actions that move `observed` towards `desired`.
pub fn plan(
    desired: &[DesiredApp],
    observed: &[ObservedContainer],
    backoff: &HashMap<String, Backoff>,
    now_ms: u64,
) -> Vec<Action> {
    let by_name: BTreeMap<&str, &DesiredApp> =
        desired.iter().map(|d| (d.spec.name.as_str(), d)).collect();
    let mut containers: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in observed {
        containers.entry(c.app.as_str()).or_default().push(c);
    }

    let order = topo_order(desired);
    let mut down = Vec::new();
    let mut up = Vec::new();

    // Orphans: our containers for apps we have no record of.
    for (app, cs) in &containers {
        if !by_name.contains_key(app) {
            for c in cs {
                down.push(Action::Remove {
                    app: app.to_string(),
                    container_id: c.id.clone(),
                    grace_secs: ORPHAN_GRACE_SECS,
                });
            }
        }
    }

    // Take-down actions, dependents first (reverse dependency order).
    let mut down_apps: Vec<&DesiredApp> = Vec::new();
    for name in order.order.iter().rev() {
        down_apps.push(by_name[name.as_str()]);
    }
    for d in desired {
        if !order.order.contains(&d.spec.name) {
            down_apps.push(d);
        }
    }
    for d in &down_apps {
        let cs = containers
            .get(d.spec.name.as_str())
            .cloned()
            .unwrap_or_default();
        let grace = d.spec.stop_grace_secs();
        match d.intent {
            Intent::Running => {}
            Intent::Stopped => {
                for c in cs {
                    if matches!(c.state, ContainerState::Running | ContainerState::Paused) {
                        down.push(Action::Stop {
                            app: d.spec.name.clone(),
                            container_id: c.id.clone(),
                            grace_secs: grace,
                        });
                    }
                }
            }
            Intent::Uninstalled | Intent::Purged => {
                for c in cs {
                    down.push(Action::Remove {
                        app: d.spec.name.clone(),
                        container_id: c.id.clone(),
                        grace_secs: grace,
                    });
                }
                if d.intent == Intent::Purged {
                    down.push(Action::Purge {
                        app: d.spec.name.clone(),
                        volumes: d
                            .spec
                            .volumes()
                            .iter()
                            .map(|v| d.spec.volume_name(&v.name))
                            .collect(),
                        secrets: d.spec.secrets().iter().map(|s| s.name.clone()).collect(),
                    });
                }
            }
        }
    }

    // Bring-up actions, dependencies first.
    let mut blocked: BTreeMap<String, String> = order.blocked.clone();
    for name in &order.order {
        let d = by_name[name.as_str()];
        if d.intent != Intent::Running {
            continue;
        }
        if let Some(reason) =
            d.spec
                .dependencies
                .iter()
                .find_map(|dep| match by_name.get(dep.as_str()) {
                    None => Some(format!("dependency `{dep}` is not installed")),
                    Some(dd) if dd.intent != Intent::Running => Some(format!(
                        "dependency `{dep}` is not set to run (it is {:?})",
                        dd.intent
                    )),
                    Some(_) if blocked.contains_key(dep) => {
                        Some(format!("dependency `{dep}` is blocked"))
                    }
                    Some(_) => None,
                })
        {
            blocked.insert(name.clone(), reason);
            continue;
        }
        let cs = containers.get(name.as_str()).cloned().unwrap_or_default();
        if d.spec.is_stack() {
            match plan_stack(d, cs, backoff, now_ms) {
                Action::Blocked { reason, .. } => {
                    blocked.insert(name.clone(), reason);
                }
                a => up.push(a),
            }
            continue;
        }
        let (matching, stale): (Vec<_>, Vec<_>) = cs
            .into_iter()
            .partition(|c| c.spec_hash == d.spec_hash && c.name == d.spec.container_name());
        let backing_off = backoff
            .get(name)
            .filter(|b| b.not_before_ms > now_ms)
            .map(|b| {
                format!(
                    "crash-loop back-off after {} failures: next try in {}s",
                    b.failures,
                    (b.not_before_ms - now_ms).div_ceil(1000)
                )
            });
        // Exactly one matching container is kept; extra copies count as stale.
        let keep = matching.first().copied();
        let mut replaces: Vec<String> = stale.iter().map(|c| c.id.clone()).collect();
        replaces.extend(matching.iter().skip(1).map(|c| c.id.clone()));
        match keep {
            Some(c) if c.state == ContainerState::Running && replaces.is_empty() => {
                up.push(Action::Adopt {
                    app: name.clone(),
                    container_id: c.id.clone(),
                });
            }
            Some(c) if c.state == ContainerState::Running => {
                up.extend(remove_all(name, replaces, d));
                up.push(Action::Adopt {
                    app: name.clone(),
                    container_id: c.id.clone(),
                });
            }
            Some(c) => {
                if let Some(reason) = backing_off {
                    blocked.insert(name.clone(), reason);
                    continue;
                }
                up.extend(remove_all(name, replaces, d));
                up.push(Action::Start {
                    app: name.clone(),
                    container_id: c.id.clone(),
                    // Never started (died inside `podman run`, or its start failed) is not a crash.
                    crashed: c.state != ContainerState::Created,
                });
            }
            None => {
                if let Some(reason) = backing_off {
                    blocked.insert(name.clone(), reason);
                    continue;
                }
                up.push(Action::Create {
                    app: name.clone(),
                    reason: if replaces.is_empty() {
                        CreateReason::Missing
                    } else {
                        CreateReason::Drift
                    },
                    replaces,
                });
            }
        }
    }

    let mut out = down;
    out.extend(up);
    for (app, reason) in blocked {
        if by_name.get(app.as_str()).map(|d| d.intent) == Some(Intent::Running) {
            out.push(Action::Blocked { app, reason });
        }
    }
    out
}

/// A stack to run (PROTOCOL §2.2) is one unit: adopted when each service has exactly one
/// container of the spec and it runs; otherwise (re)brought up as a whole by a `Create` that
/// removes what is stale, keeps what runs, starts what stopped and runs what is missing, in
/// the services' start order; blocked while it backs off.
fn plan_stack(
    d: &DesiredApp,
    cs: Vec<&ObservedContainer>,
    backoff: &HashMap<String, Backoff>,
    now_ms: u64,
) -> Action {
    let name = &d.spec.name;
    let wanted: Vec<String> = d
        .spec
        .services
        .iter()
        .map(|s| d.spec.container_of(s))
        .collect();
    let mut kept: Vec<&ObservedContainer> = Vec::new();
    let mut stale: Vec<String> = Vec::new();
    for c in cs {
        let fits = c.spec_hash == d.spec_hash
            && wanted.contains(&c.name)
            && !kept.iter().any(|k| k.name == c.name);
        if fits {
            kept.push(c);
        } else {
            stale.push(c.id.clone());
        }
    }
    let all_run =
        kept.len() == wanted.len() && kept.iter().all(|c| c.state == ContainerState::Running);
    if all_run && stale.is_empty() {
        let first = d.spec.start_order().first().map(|&i| wanted[i].clone());
        let id = kept
            .iter()
            .find(|c| Some(&c.name) == first.as_ref())
            .map(|c| c.id.clone())
            .unwrap_or_default();
        return Action::Adopt {
            app: name.clone(),
            container_id: id,
        };
    }
    if let Some(b) = backoff.get(name).filter(|b| b.not_before_ms > now_ms) {
        return Action::Blocked {
            app: name.clone(),
            reason: format!(
                "crash-loop back-off after {} failures: next try in {}s",
                b.failures,
                (b.not_before_ms - now_ms).div_ceil(1000)
            ),
        };
    }
    Action::Create {
        app: name.clone(),
        reason: if stale.is_empty() {
            CreateReason::Missing
        } else {
            CreateReason::Drift
        },
        replaces: stale,
    }
}

struct TopoOrder {
    /// Apps in dependency order (dependencies first), excluding blocked ones.
    order: Vec<String>,
    /// Apps in a dependency cycle, with the reason.
    blocked: BTreeMap<String, String>,
}

/// Depth-first topological sort over the desired apps (only edges to desired apps count).
/// Members of a cycle are reported blocked; apps depending on them are blocked later by the
/// dependency check, so unrelated apps keep running.
fn topo_order(desired: &[DesiredApp]) -> TopoOrder {
    let deps: BTreeMap<&str, Vec<&str>> = desired
        .iter()
        .map(|d| {
            (
                d.spec.name.as_str(),
                d.spec.dependencies.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    let mut blocked = BTreeMap::new();
    let mut stack: Vec<&str> = Vec::new();

    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<String>,
        blocked: &mut BTreeMap<String, String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(pos) = stack.iter().position(|s| *s == n) {
            let cycle: Vec<&str> = stack[pos..].to_vec();
            let text = format!("dependency cycle: {} -> {}", cycle.join(" -> "), n);
            for m in cycle {
                blocked.entry(m.to_string()).or_insert_with(|| text.clone());
            }
            return;
        }
        stack.push(n);
        for d in deps.get(n).into_iter().flatten() {
            if deps.contains_key(d) {
                visit(d, deps, done, stack, order, blocked);
            }
        }
        stack.pop();
        done.insert(n);
        if !blocked.contains_key(n) {
            order.push(n.to_string());
        }
    }

    for n in deps.keys() {
        visit(n, &deps, &mut done, &mut stack, &mut order, &mut blocked);
    }
    TopoOrder { order, blocked }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, deps: &[&str], intent: Intent) -> DesiredApp {
        let mut s = AppSpec::new(name, "1.0.0", "localhost/img:1");
        s.dependencies = deps.iter().map(|d| d.to_string()).collect();
        DesiredApp::new(s, intent)
    }

    fn ctr(d: &DesiredApp, id: &str, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            name: d.spec.container_name(),
            app: d.spec.name.clone(),
            spec_hash: d.spec_hash.clone(),
            version: d.spec.version.clone(),
            state,
            exit_code: 0,
            started_at: 1,
        }
    }

    fn none() -> HashMap<String, Backoff> {
        HashMap::new()
    }

    #[test]
    fn adopts_a_matching_running_container() {
        let a = app("web", &[], Intent::Running);
        let obs = vec![ctr(&a, "c1", ContainerState::Running)];
        assert_eq!(
            plan(&[a], &obs, &none(), 0),
            vec![Action::Adopt {
                app: "web".into(),
                container_id: "c1".into()
            }]
        );
    }

    #[test]
    fn creates_when_missing_and_recreates_on_drift() {
        let a = app("web", &[], Intent::Running);
        assert_eq!(
            plan(std::slice::from_ref(&a), &[], &none(), 0),
            vec![Action::Create {
                app: "web".into(),
                reason: CreateReason::Missing,
                replaces: vec![]
            }]
        );
        let mut old = ctr(&a, "c1", ContainerState::Running);
        old.spec_hash = "other".into();
        assert_eq!(
            plan(&[a], &[old], &none(), 0),
            vec![Action::Create {
                app: "web".into(),
                reason: CreateReason::Drift,
                replaces: vec!["c1".into()]
            }]
        );
    }

    #[test]
    fn never_restarts_a_stopped_app() {
        let a = app("web", &[], Intent::Stopped);
        let exited = vec![ctr(&a, "c1", ContainerState::Exited)];
        assert!(plan(std::slice::from_ref(&a), &exited, &none(), 0).is_empty());
        assert!(plan(std::slice::from_ref(&a), &[], &none(), 0).is_empty());
        let running = vec![ctr(&a, "c1", ContainerState::Running)];
        assert_eq!(
            plan(&[a], &running, &none(), 0),
            vec![Action::Stop {
                app: "web".into(),
                container_id: "c1".into(),
                grace_secs: 30
            }]
        );
    }

    #[test]
    fn restarts_a_crashed_app_and_starts_a_created_one() {
        let a = app("web", &[], Intent::Running);
        let p = plan(
            std::slice::from_ref(&a),
            &[ctr(&a, "c1", ContainerState::Exited)],
            &none(),
            0,
        );
        assert_eq!(
            p,
            vec![Action::Start {
                app: "web".into(),
                container_id: "c1".into(),
                crashed: true
            }]
        );
        let p = plan(
            &[a],
            &[ctr(
                &app("web", &[], Intent::Running),
                "c1",
                ContainerState::Created,
            )],
            &none(),
            0,
        );
        assert!(matches!(p[0], Action::Start { crashed: false, .. }));
    }

    #[test]
    fn backs_off_from_crash_loops() {
        let a = app("web", &[], Intent::Running);
        let b = app("api", &["web"], Intent::Running);
        let obs = vec![ctr(&a, "c1", ContainerState::Exited)];
        let policy = BackoffPolicy::default();
        let st = policy.after_failure(Backoff::default(), 1_000);
        assert_eq!(st.not_before_ms, 3_000);
        let st2 = policy.after_failure(st, 3_000);
        assert_eq!(st2.not_before_ms, 7_000);
        let backoff = HashMap::from([("web".to_string(), st2)]);
        let p = plan(&[a.clone(), b.clone()], &obs, &backoff, 5_000);
        assert_eq!(p.len(), 2);
        assert!(
            p.iter().all(|x| matches!(x, Action::Blocked { .. })),
            "{p:?}"
        );
        // Once the time has passed, it is started again (and then its dependent).
        let p = plan(&[a, b], &obs, &backoff, 7_000);
        assert!(matches!(p[0], Action::Start { ref app, .. } if app == "web"));
        assert!(matches!(p[1], Action::Create { ref app, .. } if app == "api"));
        // The delay is capped.
        let mut s = Backoff::default();
        for _ in 0..100 {
            s = policy.after_failure(s, 0);
        }
        assert_eq!(s.not_before_ms, policy.max_ms);
    }

    #[test]
    fn dependencies_start_first_and_stop_last() {
        let db = app("db", &[], Intent::Running);
        let api = app("api", &["db"], Intent::Running);
        let web = app("web", &["api"], Intent::Running);
        let p = plan(&[web.clone(), api.clone(), db.clone()], &[], &none(), 0);
        let names: Vec<&str> = p.iter().map(Action::app).collect();
        assert_eq!(names, ["db", "api", "web"]);

        let all = [
            app("db", &[], Intent::Uninstalled),
            app("api", &["db"], Intent::Uninstalled),
        ];
        let obs = vec![
            ctr(&db, "c-db", ContainerState::Running),
            ctr(&api, "c-api", ContainerState::Running),
        ];
        let names: Vec<String> = plan(&all, &obs, &none(), 0)
            .iter()
            .map(|a| a.app().to_string())
            .collect();
        assert_eq!(names, ["api", "db"]);
    }

    #[test]
    fn a_cycle_blocks_only_its_members_and_dependents() {
        let a = app("aa", &["bb"], Intent::Running);
        let b = app("bb", &["aa"], Intent::Running);
        let c = app("cc", &["aa"], Intent::Running);
        let free = app("free", &[], Intent::Running);
        let p = plan(&[a, b, c, free], &[], &none(), 0);
        assert!(p.contains(&Action::Create {
            app: "free".into(),
            reason: CreateReason::Missing,
            replaces: vec![]
        }));
        let blocked: BTreeMap<&str, &str> = p
            .iter()
            .filter_map(|x| match x {
                Action::Blocked { app, reason } => Some((app.as_str(), reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(blocked.len(), 3, "{p:?}");
        assert!(blocked["aa"].contains("cycle"));
        assert!(blocked["bb"].contains("cycle"));
        assert!(blocked["cc"].contains("blocked"));
    }

    #[test]
    fn missing_or_stopped_dependency_blocks() {
        let a = app("api", &["db"], Intent::Running);
        let p = plan(std::slice::from_ref(&a), &[], &none(), 0);
        assert!(
            matches!(&p[0], Action::Blocked { reason, .. } if reason.contains("not installed"))
        );
        let db = app("db", &[], Intent::Stopped);
        let p = plan(&[a, db], &[], &none(), 0);
        assert!(
            matches!(&p[0], Action::Blocked { reason, .. } if reason.contains("not set to run"))
        );
    }

    #[test]
    fn uninstall_keeps_data_purge_removes_it() {
        let mut s = AppSpec::new("web", "1", "img");
        s.service_mut().volumes.push(crate::spec::VolumeSpec {
            name: "data".into(),
            target: "/data".into(),
        });
        let u = DesiredApp::new(s.clone(), Intent::Uninstalled);
        let obs = vec![ctr(&u, "c1", ContainerState::Running)];
        let p = plan(std::slice::from_ref(&u), &obs, &none(), 0);
        assert_eq!(
            p,
            vec![Action::Remove {
                app: "web".into(),
                container_id: "c1".into(),
                grace_secs: 30
            }]
        );
        let pg = DesiredApp::new(s, Intent::Purged);
        let p = plan(&[pg], &obs, &none(), 0);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1],
            Action::Purge {
                app: "web".into(),
                volumes: vec!["archy_web_data".into()],
                secrets: vec![]
            }
        );
        // Nothing observed: purge still runs (idempotent), uninstall is a no-op.
        assert!(plan(&[u], &[], &none(), 0).is_empty());
    }

    #[test]
    fn orphans_are_removed_and_duplicates_collapse() {
        let a = app("web", &[], Intent::Running);
        let orphan = ctr(
            &app("gone", &[], Intent::Running),
            "c9",
            ContainerState::Running,
        );
        let mut dup = ctr(&a, "c2", ContainerState::Exited);
        dup.name = "archy-web-old".into();
        let obs = vec![ctr(&a, "c1", ContainerState::Running), dup, orphan];
        let p = plan(&[a], &obs, &none(), 0);
        assert_eq!(
            p,
            vec![
                Action::Remove {
                    app: "gone".into(),
                    container_id: "c9".into(),
                    grace_secs: ORPHAN_GRACE_SECS
                },
                Action::Remove {
                    app: "web".into(),
                    container_id: "c2".into(),
                    grace_secs: 30
                },
                Action::Adopt {
                    app: "web".into(),
                    container_id: "c1".into()
                },
            ]
        );
    }
}
