//! Desired state in redb: one record per app (current spec, previous spec for rollback, intent).
//!
//! Every change is committed (durably) before the reconciler acts on it, so a crash at any
//! point leaves a record that the next pass converges from.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::spec::{AppSpec, Intent};
use crate::Error;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// The naming migration's journal: `<app>/<volume>` → `copying` | `copied` (see
/// `Reconciler::migrate_names`). Survives SIGKILL; every step is idempotent.
const MIGRATION: TableDefinition<&str, &str> = TableDefinition::new("names-migration");

/// Which scheme an app's Podman objects are named by ([`crate::names`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// `archy-<app>-<part>`, written by the code before issue 13 (records without the field):
    /// not injective, no owner labels. Migrated before the app runs again.
    #[default]
    Legacy,
    /// `archy_<app>_<part>`, created with owner labels.
    Injective,
}

/// The persisted desired state of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub current: AppSpec,
    /// The spec that ran before `current`; the rollback target of a failed update.
    pub previous: Option<AppSpec>,
    pub intent: Intent,
    /// `current` replaced `previous` and has not yet passed its health check: a failure now
    /// rolls back instead of retrying.
    #[serde(default)]
    pub update_pending: bool,
    /// Set when an update was rolled back: the hash that failed and why (so the loop does not
    /// retry it, and the user is told).
    #[serde(default)]
    pub rolled_back: Option<RolledBack>,
    #[serde(default)]
    pub names: Naming,
    /// The app is held (never started) until the operator acts, and why: e.g. its data sat in
    /// a volume that another app shared under the legacy names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl AppRecord {
    /// A first install: `spec` wanted running, named by the injective scheme.
    pub fn new(spec: AppSpec) -> Self {
        AppRecord {
            current: spec,
            previous: None,
            intent: Intent::Running,
            update_pending: false,
            rolled_back: None,
            names: Naming::Injective,
            held: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub from_version: String,
    pub from_spec_hash: String,
    pub to_version: String,
    pub reason: String,
}

/// redb allows one open handle per file per process; the reconciler owns this.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) `<state_dir>/orchestrator.redb`.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
        let path = state_dir.join("orchestrator.redb");
        let db = Database::create(&path).map_err(|e| Error::Store(e.into()))?;
        let tx = db.begin_write().map_err(store)?;
        tx.open_table(APPS).map_err(store)?;
        tx.open_table(MIGRATION).map_err(store)?;
        tx.commit().map_err(store)?;
        Ok(Store { db })
    }

    pub fn get(&self, app: &str) -> Result<Option<AppRecord>, Error> {
        let tx = self.db.begin_read().map_err(store)?;
        let table = tx.open_table(APPS).map_err(store)?;
        match table.get(app).map_err(store)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn all(&self) -> Result<Vec<AppRecord>, Error> {
        let tx = self.db.begin_read().map_err(store)?;
        let table = tx.open_table(APPS).map_err(store)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(store)? {
            let (_, v) = item.map_err(store)?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Read-modify-write of one record in a single committed transaction. `f` returns the new
    /// record (or `None` to delete it); its result is passed back.
    pub fn update<T>(
        &self,
        app: &str,
        f: impl FnOnce(Option<AppRecord>) -> Result<(Option<AppRecord>, T), Error>,
    ) -> Result<T, Error> {
        let tx = self.db.begin_write().map_err(store)?;
        let out;
        {
            let mut table = tx.open_table(APPS).map_err(store)?;
            let old = match table.get(app).map_err(store)? {
                Some(v) => Some(serde_json::from_slice::<AppRecord>(v.value())?),
                None => None,
            };
            let (new, t) = f(old)?;
            out = t;
            match new {
                Some(rec) => {
                    let bytes = serde_json::to_vec(&rec)?;
                    table.insert(app, bytes.as_slice()).map_err(store)?;
                }
                None => {
                    table.remove(app).map_err(store)?;
                }
            }
        }
        tx.commit().map_err(store)?;
        Ok(out)
    }
}

impl Store {
    /// Every journal entry of the naming migration.
    pub fn journal(&self) -> Result<Vec<(String, String)>, Error> {
        let tx = self.db.begin_read().map_err(store)?;
        let table = tx.open_table(MIGRATION).map_err(store)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(store)? {
            let (k, v) = item.map_err(store)?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Sets (`Some`) or clears (`None`) one journal entry, durably.
    pub fn set_journal(&self, key: &str, value: Option<&str>) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(store)?;
        {
            let mut table = tx.open_table(MIGRATION).map_err(store)?;
            match value {
                Some(v) => {
                    table.insert(key, v).map_err(store)?;
                }
                None => {
                    table.remove(key).map_err(store)?;
                }
            }
        }
        tx.commit().map_err(store)
    }
}

fn store(e: impl Into<redb::Error>) -> Error {
    Error::Store(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spec = AppSpec::new("web", "1", "img");
        {
            let s = Store::open(dir.path()).unwrap();
            s.update("web", |_| {
                Ok((
                    Some(AppRecord {
                        intent: Intent::Stopped,
                        ..AppRecord::new(spec.clone())
                    }),
                    (),
                ))
            })
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let rec = s.get("web").unwrap().unwrap();
        assert_eq!(rec.intent, Intent::Stopped);
        assert_eq!(rec.current, spec);
        assert_eq!(s.all().unwrap().len(), 1);
        s.update("web", |_| Ok((None, ()))).unwrap();
        assert!(s.get("web").unwrap().is_none());
    }

    #[test]
    fn records_of_the_old_code_read_as_legacy_naming() {
        let old = r#"{"current":{"name":"web","version":"1","image":"img"},"previous":null,
            "intent":"running","update_pending":false,"rolled_back":null}"#;
        let rec: AppRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec.names, Naming::Legacy);
        assert_eq!(rec.current.publisher, "");
        assert!(rec.held.is_none());
        let new: AppRecord =
            serde_json::from_slice(&serde_json::to_vec(&AppRecord::new(rec.current)).unwrap())
                .unwrap();
        assert_eq!(new.names, Naming::Injective);
    }
}
