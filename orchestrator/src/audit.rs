//! `archy apps audit`: every Podman object of the node with its owner, orphans flagged.
//!
//! [`classify`] is pure: (an object's kind, name and labels; the app records; this node's owner
//! id) → an [`AuditEntry`], or nothing for an object that is not Archy's. The reconciler lists
//! the objects ([`Reconciler::audit`](crate::Reconciler::audit)).

use serde::{Deserialize, Serialize};

use crate::names::{self, Owner, Role};
use crate::spec::Intent;
use crate::store::{AppRecord, Naming};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditStatus {
    /// Named and labelled for an app this node has installed (or keeps the data of).
    Owned,
    /// Labelled by this node for an app it has no record of: left by a crash or by hand.
    Orphan,
    /// Under a name of the old scheme (before injective names): the migration moves it.
    Legacy,
    /// Its name says one app, its labels another owner: never mounted or reused.
    Mismatch,
    /// Made by another Archy node sharing this Podman (its `archy.owner` label).
    OtherNode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub kind: Role,
    pub name: String,
    /// The app the name stands for (`None` when it does not parse).
    pub app: Option<String>,
    /// Who the labels say owns it.
    pub owner: Owner,
    pub status: AuditStatus,
    /// Why, in a sentence.
    pub note: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub objects: Vec<AuditEntry>,
}

impl AuditReport {
    /// Entries that need the operator's attention (everything but `owned` and `other-node`).
    pub fn problems(&self) -> impl Iterator<Item = &AuditEntry> {
        self.objects
            .iter()
            .filter(|e| !matches!(e.status, AuditStatus::Owned | AuditStatus::OtherNode))
    }
}

/// Classifies one Podman object; `None` when it is neither named nor labelled as Archy's.
pub fn classify(
    kind: Role,
    name: &str,
    owner: Owner,
    records: &[AppRecord],
    node: &str,
) -> Option<AuditEntry> {
    let parsed = names::parse(kind, name);
    let labelled = owner.node.is_some();
    let legacy = parsed.is_none() && names::legacy::looks_like(name);
    if parsed.is_none() && !legacy && !labelled {
        return None;
    }
    let entry = |app: Option<String>, status, note: String| AuditEntry {
        kind,
        name: name.to_string(),
        app,
        owner: owner.clone(),
        status,
        note,
    };
    if owner.node.as_deref().is_some_and(|n| n != node) {
        return Some(entry(
            owner.app.clone(),
            AuditStatus::OtherNode,
            "made by another Archy node on this Podman".into(),
        ));
    }
    if legacy {
        let app = legacy_app(kind, name, records);
        let note = match &app {
            Some(a) => format!("old-scheme name of app `{a}`: the naming migration moves it"),
            None => "old-scheme name no installed app accounts for".into(),
        };
        return Some(entry(app, AuditStatus::Legacy, note));
    }
    let Some(parsed) = parsed else {
        return Some(entry(
            owner.app.clone(),
            AuditStatus::Orphan,
            "labelled by this node but not named by its scheme".into(),
        ));
    };
    let app = Some(parsed.app.clone());
    let Some(rec) = records.iter().find(|r| r.current.name == parsed.app) else {
        return Some(entry(
            app,
            AuditStatus::Orphan,
            "no app of this name is installed or kept here".into(),
        ));
    };
    if let Err(e) = names::check_owner(name, &parsed, &rec.current.publisher, node, &owner) {
        return Some(entry(app, AuditStatus::Mismatch, e));
    }
    let part_known = match (&parsed.part, kind) {
        (Some(p), Role::Volume) => mentions(rec, |s| s.volumes().iter().any(|v| &v.name == p)),
        (Some(p), Role::Secret) => mentions(rec, |s| s.secrets().iter().any(|x| &x.name == p)),
        _ => true,
    };
    let note = match (rec.intent, part_known) {
        (_, false) => "its app no longer declares it (kept: only a purge removes data)".into(),
        (Intent::Uninstalled, _) => "kept from an uninstall without --purge".into(),
        (Intent::Purged, _) => "being purged".into(),
        _ => format!("app `{}` {}", parsed.app, rec.current.version),
    };
    Some(entry(app, AuditStatus::Owned, note))
}

fn mentions(rec: &AppRecord, f: impl Fn(&crate::AppSpec) -> bool) -> bool {
    f(&rec.current) || rec.previous.as_ref().is_some_and(f)
}

/// The legacy-named app an old-scheme name belongs to, if exactly one record accounts for it.
fn legacy_app(kind: Role, name: &str, records: &[AppRecord]) -> Option<String> {
    let mut apps = records
        .iter()
        .filter(|r| r.names == Naming::Legacy)
        .filter(|r| {
            let app = &r.current.name;
            match kind {
                Role::Container | Role::Network => names::legacy::container(app) == name,
                Role::Volume => {
                    legacy_parts(r, |s| s.service().volumes.iter().map(|v| v.name.clone()))
                        .any(|v| names::legacy::volume(app, &v) == name)
                }
                Role::Secret => legacy_parts(r, |s| {
                    s.service().generated_secrets.iter().map(|x| x.name.clone())
                })
                .any(|x| names::legacy::secret(app, &x) == name),
            }
        })
        .map(|r| r.current.name.clone());
    let first = apps.next()?;
    apps.next().is_none().then_some(first)
}

fn legacy_parts<'a, I: Iterator<Item = String> + 'a>(
    r: &'a AppRecord,
    f: impl Fn(&'a crate::AppSpec) -> I + 'a,
) -> impl Iterator<Item = String> + 'a {
    f(&r.current).chain(r.previous.iter().flat_map(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AppSpec, VolumeSpec};
    use std::collections::HashMap;

    fn labelled(app: &str, publisher: &str, role: Role, node: &str) -> Owner {
        let mut m = HashMap::new();
        for l in names::labels(role, app, publisher, node) {
            let (k, v) = l.split_once('=').unwrap();
            m.insert(k.to_string(), v.to_string());
        }
        Owner::from_labels(&m)
    }

    fn record(app: &str, publisher: &str) -> AppRecord {
        let mut s = AppSpec::new(app, "1.0.0", "img");
        s.publisher = publisher.into();
        s.service_mut().volumes.push(VolumeSpec {
            name: "data".into(),
            target: "/data".into(),
        });
        AppRecord::new(s)
    }

    #[test]
    fn each_kind_of_object_gets_its_status() {
        let recs = vec![record("web", "did:A")];
        let c = |kind, name: &str, owner| classify(kind, name, owner, &recs, "n1");
        let ok = c(
            Role::Volume,
            "archy_web_data",
            labelled("web", "did:A", Role::Volume, "n1"),
        )
        .unwrap();
        assert_eq!(ok.status, AuditStatus::Owned, "{ok:?}");
        let orphan = c(
            Role::Volume,
            "archy_gone_data",
            labelled("gone", "did:A", Role::Volume, "n1"),
        )
        .unwrap();
        assert_eq!(orphan.status, AuditStatus::Orphan);
        let stolen = c(
            Role::Volume,
            "archy_web_data",
            labelled("web", "did:B", Role::Volume, "n1"),
        )
        .unwrap();
        assert_eq!(stolen.status, AuditStatus::Mismatch);
        assert!(stolen.note.contains("did:B") && stolen.note.contains("did:A"));
        let unlabelled = c(Role::Volume, "archy_web_data", Owner::default()).unwrap();
        assert_eq!(unlabelled.status, AuditStatus::Mismatch);
        let other = c(
            Role::Container,
            "archy_web",
            labelled("web", "did:A", Role::Container, "n2"),
        )
        .unwrap();
        assert_eq!(other.status, AuditStatus::OtherNode);
        assert!(c(Role::Volume, "postgres-data", Owner::default()).is_none());
        let legacy = c(Role::Volume, "archy-web-data", Owner::default()).unwrap();
        assert_eq!(legacy.status, AuditStatus::Legacy);
    }
}
