//! The catalog: accepted releases per (DID, app id) with their history, every rejected event with
//! its reason, equivocation evidence, and per-relay sync cursors — in one redb file.
//!
//! [`Catalog::ingest`] applies check 5 of PROTOCOL.md §4.1 (version monotonicity) on top of
//! [`crate::release::check_release`], in one write transaction per event, so a crash leaves
//! either all of an event's effects or none.

use crate::manifest::{AppManifest, PolicyConfig};
use crate::reason::Reason;
use crate::release::{self, Rejection};
use anyhow::{Context, Result};
use nostr_sdk::prelude::Event;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::path::Path;

/// "did\0id\0version-without-build" → ReleaseRecord (JSON).
const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");
/// "did\0id" → AppRecord (JSON).
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// event id → RejectedRecord (JSON).
const REJECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("rejected");
/// event id → unix seconds when first processed (de-duplication across relays and restarts).
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
/// app id → InstalledRecord (JSON): which DID an installed app came from (it updates only
/// from that DID, PROTOCOL §4.1).
const INSTALLED: TableDefinition<&str, &[u8]> = TableDefinition::new("installed");
/// relay URL → newest `created_at` seen from it (discovery resumes from there).
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

/// An accepted release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub did: String,
    pub app: String,
    pub version: String,
    pub event_id: String,
    pub pubkey: String,
    pub created_at: u64,
    /// BLAKE3 of the manifest's JCS bytes: equal hashes = the same release.
    pub jcs_blake3: String,
    /// The envelope `{"manifest","signature"}` exactly as received.
    pub envelope: serde_json::Value,
}

impl ReleaseRecord {
    pub fn manifest(&self) -> Result<AppManifest> {
        let raw = self.envelope["manifest"]
            .as_object()
            .context("stored envelope has no manifest")?;
        Ok(AppManifest::from_raw(raw)?)
    }
}

/// One app (DID, id): its latest version and what it says of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    pub did: String,
    pub app: String,
    pub latest: String,
    pub name: String,
    pub summary: String,
    /// The Nostr key that signed the latest release (trust is computed on Nostr keys).
    pub publisher_nostr: String,
}

/// A rejected event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub event_id: String,
    pub reason: Reason,
    pub field: String,
    pub text: String,
    pub pubkey: String,
    pub created_at: u64,
    /// For equivocations: the event id of the release it contradicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts_with: Option<String>,
    /// For `expired` and `equivocation`: which app and version it was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<(String, String, String)>,
}

/// An app installed on this machine from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    pub app: String,
    pub did: String,
    pub version: String,
    /// The Nostr key that signed the installed release.
    pub publisher_nostr: String,
}

/// What ingesting an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new release that is now the latest of its app.
    Latest,
    /// A new release lower than the latest: kept as history, never offered.
    History,
    /// The same release again (identical JCS bytes): ignored.
    Duplicate,
    /// This event id was processed before.
    AlreadySeen,
    Rejected(Rejection),
}

/// The node's catalog database.
pub struct Catalog {
    db: Database,
}

fn release_key(did: &str, app: &str, version: &semver::Version) -> String {
    let mut v = version.clone();
    v.build = semver::BuildMetadata::EMPTY;
    format!("{did}\0{app}\0{v}")
}

fn app_key(did: &str, app: &str) -> String {
    format!("{did}\0{app}")
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog records are JSON")
}

impl Catalog {
    /// Opens (or creates) the catalog file.
    pub fn open(path: &Path) -> Result<Catalog> {
        let db = Database::create(path)
            .with_context(|| format!("opening the catalog {}", path.display()))?;
        let tx = db.begin_write()?;
        for t in [RELEASES, APPS, REJECTED] {
            tx.open_table(t)?;
        }
        tx.open_table(SEEN)?;
        tx.open_table(CURSORS)?;
        tx.open_table(INSTALLED)?;
        tx.commit()?;
        Ok(Catalog { db })
    }

    /// Ingests a batch in PROTOCOL order: by (`created_at`, `id`).
    pub fn ingest_all(
        &self,
        mut events: Vec<Event>,
        policy: &PolicyConfig,
        now: u64,
    ) -> Result<Vec<(Event, Outcome)>> {
        events.sort_by_key(|e| (e.created_at, e.id));
        events.dedup_by(|a, b| a.id == b.id);
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let o = self.ingest(&e, policy, now)?;
            out.push((e, o));
        }
        Ok(out)
    }

    /// Checks one release event against §4.1 (all five rules) and records the result.
    pub fn ingest(&self, event: &Event, policy: &PolicyConfig, now: u64) -> Result<Outcome> {
        let event_id = event.id.to_hex();
        let tx = self.db.begin_write()?;
        let outcome = {
            let mut seen = tx.open_table(SEEN)?;
            if seen.get(event_id.as_str())?.is_some() {
                return Ok(Outcome::AlreadySeen);
            }
            match release::check_release(event, policy, now) {
                Err(rejection) => {
                    // A release from the future may become valid once the clock catches up: it
                    // is recorded, but not marked seen, so a later sync checks it again.
                    if rejection.reason != Reason::CreatedAtFuture {
                        seen.insert(event_id.as_str(), now)?;
                    }
                    let app = matches!(rejection.reason, Reason::Expired)
                        .then(|| app_of(event))
                        .flatten();
                    self.reject(&tx, event, rejection.clone(), None, app)?;
                    Outcome::Rejected(rejection)
                }
                Ok(verified) => {
                    seen.insert(event_id.as_str(), now)?;
                    tx.open_table(REJECTED)?.remove(event_id.as_str())?;
                    self.apply_monotonicity(&tx, event, verified)?
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn reject(
        &self,
        tx: &redb::WriteTransaction,
        event: &Event,
        r: Rejection,
        conflicts_with: Option<String>,
        app: Option<(String, String, String)>,
    ) -> Result<()> {
        let record = RejectedRecord {
            event_id: event.id.to_hex(),
            reason: r.reason,
            field: r.field,
            text: r.message,
            pubkey: event.pubkey.to_hex(),
            created_at: release::created_at(event),
            conflicts_with,
            app,
        };
        tx.open_table(REJECTED)?
            .insert(record.event_id.as_str(), to_json(&record).as_slice())?;
        Ok(())
    }

    /// Rule 5: duplicate, equivocation, history or new latest.
    fn apply_monotonicity(
        &self,
        tx: &redb::WriteTransaction,
        event: &Event,
        verified: crate::envelope::Verified,
    ) -> Result<Outcome> {
        let m = &verified.manifest;
        let version = m.semver();
        let key = release_key(&m.publisher.did, &m.id, &version);
        let jcs_blake3 = blake3::hash(&verified.jcs).to_hex().to_string();
        let mut releases = tx.open_table(RELEASES)?;
        let existing = releases
            .get(key.as_str())?
            .map(|v| serde_json::from_slice::<ReleaseRecord>(v.value()))
            .transpose()?;
        if let Some(existing) = existing {
            if existing.jcs_blake3 == jcs_blake3 {
                return Ok(Outcome::Duplicate);
            }
            let r = Rejection {
                reason: Reason::Equivocation,
                field: "version".into(),
                message: format!(
                    "{} {} was already published with other content (event {}): the publisher signed two different releases of one version",
                    m.id, m.version, existing.event_id
                ),
            };
            drop(releases);
            self.reject(
                tx,
                event,
                r.clone(),
                Some(existing.event_id),
                Some((m.publisher.did.clone(), m.id.clone(), m.version.clone())),
            )?;
            return Ok(Outcome::Rejected(r));
        }
        let record = ReleaseRecord {
            did: m.publisher.did.clone(),
            app: m.id.clone(),
            version: m.version.clone(),
            event_id: event.id.to_hex(),
            pubkey: event.pubkey.to_hex(),
            created_at: release::created_at(event),
            jcs_blake3,
            envelope: serde_json::to_value(&verified.envelope)?,
        };
        releases.insert(key.as_str(), to_json(&record).as_slice())?;
        let mut apps = tx.open_table(APPS)?;
        let akey = app_key(&m.publisher.did, &m.id);
        let current = apps
            .get(akey.as_str())?
            .map(|v| serde_json::from_slice::<AppRecord>(v.value()))
            .transpose()?;
        let is_latest = match &current {
            None => true,
            Some(app) => {
                let latest = semver::Version::parse(&app.latest)?;
                version.cmp_precedence(&latest) == Ordering::Greater
            }
        };
        if !is_latest {
            return Ok(Outcome::History);
        }
        let app = AppRecord {
            did: m.publisher.did.clone(),
            app: m.id.clone(),
            latest: m.version.clone(),
            name: m.name.clone(),
            summary: m.summary.clone(),
            publisher_nostr: m.publisher.nostr.clone(),
        };
        apps.insert(akey.as_str(), to_json(&app).as_slice())?;
        Ok(Outcome::Latest)
    }

    /// Every app, sorted by (id, DID).
    pub fn apps(&self) -> Result<Vec<AppRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(APPS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice::<AppRecord>(v.value())?);
        }
        out.sort_by(|a, b| (&a.app, &a.did).cmp(&(&b.app, &b.did)));
        Ok(out)
    }

    /// Apps whose id, name or summary contains `text` (case-insensitive); all when empty.
    pub fn search(&self, text: &str) -> Result<Vec<AppRecord>> {
        let needle = text.to_lowercase();
        Ok(self
            .apps()?
            .into_iter()
            .filter(|a| {
                needle.is_empty()
                    || [&a.app, &a.name, &a.summary]
                        .iter()
                        .any(|s| s.to_lowercase().contains(&needle))
            })
            .collect())
    }

    /// Every accepted release of (DID, id), highest version first.
    pub fn releases(&self, did: &str, app: &str) -> Result<Vec<ReleaseRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(RELEASES)?;
        let prefix = format!("{}\0", app_key(did, app));
        let mut out = Vec::new();
        for row in table.range(prefix.as_str()..)? {
            let (k, v) = row?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push(serde_json::from_slice::<ReleaseRecord>(v.value())?);
        }
        out.sort_by(|a, b| {
            let (va, vb) = (
                semver::Version::parse(&a.version).ok(),
                semver::Version::parse(&b.version).ok(),
            );
            match (va, vb) {
                (Some(va), Some(vb)) => vb.cmp_precedence(&va),
                _ => Ordering::Equal,
            }
        });
        Ok(out)
    }

    /// The latest accepted release of (DID, id).
    pub fn latest(&self, did: &str, app: &str) -> Result<Option<ReleaseRecord>> {
        let tx = self.db.begin_read()?;
        let apps = tx.open_table(APPS)?;
        let Some(rec) = apps.get(app_key(did, app).as_str())? else {
            return Ok(None);
        };
        let rec: AppRecord = serde_json::from_slice(rec.value())?;
        let version = semver::Version::parse(&rec.latest)?;
        let releases = tx.open_table(RELEASES)?;
        let r = releases.get(release_key(did, app, &version).as_str())?;
        Ok(r.map(|v| serde_json::from_slice(v.value())).transpose()?)
    }

    /// Every rejected event, oldest first.
    pub fn rejected(&self) -> Result<Vec<RejectedRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REJECTED)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice::<RejectedRecord>(v.value())?);
        }
        out.sort_by(|a, b| (a.created_at, &a.event_id).cmp(&(b.created_at, &b.event_id)));
        Ok(out)
    }

    /// Equivocations signed by a Nostr key: evidence for the trust engine.
    pub fn equivocations_by(&self, pubkey: &str) -> Result<usize> {
        Ok(self
            .rejected()?
            .iter()
            .filter(|r| r.reason == Reason::Equivocation && r.pubkey == pubkey)
            .count())
    }

    /// Records an installed app (replacing an older record of the same app).
    pub fn set_installed(&self, rec: &InstalledRecord) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(INSTALLED)?
            .insert(rec.app.as_str(), to_json(rec).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets an installed app (after uninstall).
    pub fn remove_installed(&self, app: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(INSTALLED)?.remove(app)?;
        tx.commit()?;
        Ok(())
    }

    /// Every installed app.
    pub fn installed(&self) -> Result<Vec<InstalledRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(INSTALLED)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(serde_json::from_slice(row?.1.value())?);
        }
        Ok(out)
    }

    /// The newest `created_at` seen from a relay.
    pub fn cursor(&self, relay: &str) -> Result<Option<u64>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CURSORS)?;
        Ok(t.get(relay)?.map(|v| v.value()))
    }

    /// Advances a relay's cursor (never moves it back).
    pub fn advance_cursor(&self, relay: &str, created_at: u64) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CURSORS)?;
            let old = t.get(relay)?.map(|v| v.value()).unwrap_or(0);
            if created_at > old {
                t.insert(relay, created_at)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// (did, id, version) named by an event's content, when it parses that far.
fn app_of(event: &Event) -> Option<(String, String, String)> {
    let env = crate::envelope::Envelope::from_json(&event.content).ok()?;
    let m = &env.manifest;
    Some((
        release::str_path(m, &["publisher", "did"])?.to_owned(),
        release::str_path(m, &["id"])?.to_owned(),
        release::str_path(m, &["version"])?.to_owned(),
    ))
}
