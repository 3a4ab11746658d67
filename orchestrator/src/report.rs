//! What the reconciler reports: the status of an app, the outcome of each action of a pass,
//! the answer of an install and of the naming migration. Pure data, serialised as the CLI's
//! `--json` output, so every field name and value here is part of that output (golden files
//! check it): rename nothing without changing them.

use serde::{Deserialize, Serialize};

use crate::spec::{Intent, PortSpec};
use crate::store::RolledBack;

/// What a user sees for one app (`archy apps list --json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
    /// A stack's services (PROTOCOL §2.2), in start order; empty for one container. The app
    /// is running when every service is; `healthy` is the whole app's (an unhealthy service
    /// is named in `last_error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
}

/// One service of a stack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub service: String,
    pub state: AppState,
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeStatus {
    Done,
    Failed,
    Blocked,
    RolledBack,
}

/// Which action an [`Outcome`] is the result of: the planned [`crate::Action`], or the
/// rollback an update's failure led to. Serialised (and displayed) as the lowercase verb.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Adopt,
    Create,
    Start,
    Stop,
    Remove,
    Purge,
    Blocked,
    /// An update failed and the previous spec was brought back (or that failed too).
    Rollback,
}

impl ActionKind {
    /// The verb as it appears in the JSON output and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Adopt => "adopt",
            ActionKind::Create => "create",
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
            ActionKind::Remove => "remove",
            ActionKind::Purge => "purge",
            ActionKind::Blocked => "blocked",
            ActionKind::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `outcome.action == "adopt"`: callers that compared the verb as a string keep working.
impl PartialEq<str> for ActionKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ActionKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The result of one action of a pass.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    pub app: String,
    pub action: ActionKind,
    pub status: OutcomeStatus,
    pub message: String,
}

/// Everything one pass did; failures are per app, a pass itself fails only if Podman or the
/// store cannot be read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
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

/// The answer of [`crate::Reconciler::install`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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

/// What the naming migration did in one call.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationReport {
    /// Apps now on the injective names.
    pub migrated: Vec<String>,
    /// `old -> new` for every volume copied in this call.
    pub volumes_copied: Vec<String>,
    /// Apps held until the operator acts.
    pub held: Vec<HeldApp>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldApp {
    pub app: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The verbs are the strings the `action` field carried when it was a `String`.
    #[test]
    fn action_kinds_serialise_as_the_old_strings() {
        let all = [
            (ActionKind::Adopt, "adopt"),
            (ActionKind::Create, "create"),
            (ActionKind::Start, "start"),
            (ActionKind::Stop, "stop"),
            (ActionKind::Remove, "remove"),
            (ActionKind::Purge, "purge"),
            (ActionKind::Blocked, "blocked"),
            (ActionKind::Rollback, "rollback"),
        ];
        for (kind, text) in all {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(text));
            assert_eq!(kind.to_string(), text);
            assert_eq!(kind, text);
        }
        assert!(ActionKind::Adopt != "create");
    }

    #[test]
    fn a_report_serialises_field_for_field() {
        let report = ReconcileReport {
            outcomes: vec![
                Outcome {
                    app: "web".into(),
                    action: ActionKind::Rollback,
                    status: OutcomeStatus::RolledBack,
                    message: "m".into(),
                },
                Outcome {
                    app: "db".into(),
                    action: ActionKind::Blocked,
                    status: OutcomeStatus::Blocked,
                    message: "held".into(),
                },
            ],
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            json!({"outcomes": [
                {"app": "web", "action": "rollback", "status": "rolled-back", "message": "m"},
                {"app": "db", "action": "blocked", "status": "blocked", "message": "held"},
            ]})
        );
        assert_eq!(report.failures().count(), 1);
        assert_eq!(report.for_app("web").count(), 1);
        let install = InstallOutcome::RolledBack {
            version: "1".into(),
            reason: "r".into(),
        };
        assert_eq!(
            serde_json::to_value(install).unwrap(),
            json!({"result": "rolled-back", "version": "1", "reason": "r"})
        );
    }
}
