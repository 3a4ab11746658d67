//! The catalog: accepted releases per (DID, app id) with their history, every rejected event with
//! its reason, equivocation evidence, and per-relay sync cursors — in one redb file.
//!
//! [`Catalog::ingest_all`] applies check 5 of PROTOCOL.md §4.1 (version monotonicity) on top of
//! [`crate::release::check_release`], in one write transaction per batch of events: a crash
//! leaves either all of a batch's effects or none (nothing is marked seen that was not recorded),
//! and a sync pays one durable commit per batch instead of one fsync per event.
//!
//! An event id is marked seen only once its id and signature verified (whatever the later
//! checks said: they depend only on what the id covers). A copy that fails them
//! (`event-invalid`) is remembered under its own key, `<id>:<sig>:<recomputed id>`, so the
//! same junk is checked and counted once, while a valid copy of that id is still checked:
//! otherwise a relay serving a forged copy under a genuine id first would censor the genuine
//! release for good (issue 13).
//!
//! What hostile relays can make grow is capped ([`Caps`]): the `seen` de-duplication table and
//! the junk part of `rejected` drop their oldest rows past the cap. Equivocation and expiry
//! records are evidence about signed releases and are kept.

use crate::manifest::{AppManifest, PolicyConfig};
use crate::reason::Reason;
use crate::release::{self, Rejection, Rule5};
use anyhow::{Context, Result};
use nostr_sdk::prelude::Event;
use rayon::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::path::Path;
use std::sync::atomic::{self, AtomicU64};

/// "did\0id\0version-without-build" → ReleaseRecord (JSON).
const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");
/// "did\0id" → AppRecord (JSON).
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// event id → RejectedRecord (JSON).
const REJECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("rejected");
/// De-duplication across relays and restarts → unix seconds when first processed. Two kinds
/// of key: an event id (64 hex digits), for an event whose id and signature verified; and
/// `<claimed id>:<sig>:<recomputed id>` ([`invalid_copy_key`]) for an `event-invalid` copy,
/// which must not occupy the id of the genuine event it may imitate. Both count against
/// [`Caps::seen`].
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
/// app id → InstalledRecord (JSON): which DID an installed app came from (it updates only
/// from that DID, PROTOCOL §4.1).
const INSTALLED: TableDefinition<&str, &[u8]> = TableDefinition::new("installed");
/// reason code → rejections made since the catalog was created (kept when records are pruned).
const REJECTION_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("rejection_counts");
/// "<nostr key>\0<blob hash>\0<endpoint>" → BadSourceRecord (JSON): a source that sent bytes
/// that did not verify, counted against the key whose announcement (or release) named it
/// (PROTOCOL §5.4). One row per key, blob and endpoint: fetching that blob again from the same
/// source does not count twice.
const BAD_SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("bad_sources");
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

/// A source that sent bytes that did not verify (PROTOCOL §5.4), and whom it counts against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadSourceRecord {
    /// The Nostr key (hex) whose mirror announcement named the source, or the publisher's key
    /// when the source was the release's origin.
    pub nostr: String,
    /// The source's iroh endpoint id.
    pub endpoint: String,
    /// The blob whose bytes failed verification.
    pub hash: String,
    /// What the verification said.
    pub reason: String,
    /// Unix seconds when it was recorded.
    pub at: u64,
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
    /// When this node recorded it (unix seconds; 0 in records from before the field existed).
    /// The cap on junk drops the oldest first, by this and not by the author-chosen `created_at`.
    #[serde(default)]
    pub recorded_at: u64,
}

impl RejectedRecord {
    /// Evidence about a validly signed release, kept whatever the cap (trust and `market show`
    /// read it); everything else is junk a relay can produce at will.
    fn is_evidence(&self) -> bool {
        matches!(self.reason, Reason::Equivocation | Reason::Expired)
    }
}

/// An app installed on this machine from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    pub app: String,
    pub did: String,
    pub version: String,
    /// The Nostr key that signed the installed release.
    pub publisher_nostr: String,
    /// Set when the app was installed because another needed it (PROTOCOL §2.2
    /// `dependencies`): that app's id. It stays installed when its dependent goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_of: Option<String>,
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
    /// This event id was processed before (its id and signature verified then), or this very
    /// invalid copy was.
    AlreadySeen,
    Rejected(Rejection),
}

/// The node's catalog database.
pub struct Catalog {
    db: Database,
    caps: Caps,
    /// Release checks run (each verifies the event's id and signature, then the JWS): how the
    /// "each event is verified once" claim is measured.
    verifications: AtomicU64,
}

/// The result of rules 1–4 for one event. Boxed: a pass keeps one per event until it applies
/// them, and the verified manifest is large beside a rejection (unboxed, a flood of 50,000
/// junk events took ~250 MiB more).
pub type Checked = std::result::Result<Box<crate::envelope::Verified>, Rejection>;

/// Row limits on the tables a hostile relay can make grow without signing anything valid.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// `seen` rows (event ids and invalid copies together). Forgetting one only means a
    /// re-check if the event comes again.
    pub seen: usize,
    /// `rejected` rows that are not evidence ([`RejectedRecord::is_evidence`]).
    pub junk_rejections: usize,
}

impl Default for Caps {
    /// ~200k seen ids (~20 MB) and 20k junk records: far above what honest relays produce, a
    /// small bound on disk for a node flooded for months.
    fn default() -> Self {
        Caps {
            seen: 200_000,
            junk_rejections: 20_000,
        }
    }
}

/// The tables ingesting writes, opened once per batch: opening and closing a redb table
/// writes its root back: per event, that was ~3/4 of the catalog write (74 → 18 µs per release
/// in `examples/releases.rs`).
struct IngestTables<'txn> {
    seen: redb::Table<'txn, &'static str, u64>,
    rejected: redb::Table<'txn, &'static str, &'static [u8]>,
    releases: redb::Table<'txn, &'static str, &'static [u8]>,
    apps: redb::Table<'txn, &'static str, &'static [u8]>,
    counts: redb::Table<'txn, &'static str, u64>,
}

impl<'txn> IngestTables<'txn> {
    fn open(tx: &'txn redb::WriteTransaction) -> Result<Self> {
        Ok(IngestTables {
            seen: tx.open_table(SEEN)?,
            rejected: tx.open_table(REJECTED)?,
            releases: tx.open_table(RELEASES)?,
            apps: tx.open_table(APPS)?,
            counts: tx.open_table(REJECTION_COUNTS)?,
        })
    }
}

/// Events per write transaction: one fsync per batch; big enough to amortise it, small enough
/// that a batch commits within a fraction of a second and other writers are not held up.
const BATCH: usize = 1_000;

/// Past a cap, prune down to this fraction of it, so pruning (a scan) happens once per many
/// inserts instead of on every one.
fn prune_target(cap: usize) -> usize {
    cap - cap / 10
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
        Self::open_with_caps(path, Caps::default())
    }

    /// [`Catalog::open`] with other row limits (tests use small ones).
    pub fn open_with_caps(path: &Path, caps: Caps) -> Result<Catalog> {
        let db = Database::create(path)
            .with_context(|| format!("opening the catalog {}", path.display()))?;
        let tx = db.begin_write()?;
        for t in [RELEASES, APPS, REJECTED] {
            tx.open_table(t)?;
        }
        tx.open_table(SEEN)?;
        tx.open_table(CURSORS)?;
        tx.open_table(INSTALLED)?;
        tx.open_table(REJECTION_COUNTS)?;
        tx.open_table(BAD_SOURCES)?;
        tx.commit()?;
        Ok(Catalog {
            db,
            caps,
            verifications: AtomicU64::new(0),
        })
    }

    /// Ingests a batch in PROTOCOL order: by (`created_at`, `id`), [`BATCH`] events per write
    /// transaction. Within a batch, rules 1–4 (pure: id, signatures, key binding, schema and
    /// policy) run over all cores for the events not seen before; then each event is applied
    /// in order inside the one transaction, exactly as if it had been checked there (an event
    /// that an earlier one of the same batch made "seen" is seen, its check unused).
    pub fn ingest_all(
        &self,
        events: Vec<Event>,
        policy: &PolicyConfig,
        now: u64,
    ) -> Result<Vec<(Event, Outcome)>> {
        self.ingest_checked(events.into_iter().map(|e| (e, None)).collect(), policy, now)
    }

    /// [`Catalog::ingest_all`] of events some of which already went through rules 1–4
    /// ([`Catalog::precheck`]): those results are used instead of checking again.
    pub fn ingest_checked(
        &self,
        mut events: Vec<(Event, Option<Checked>)>,
        policy: &PolicyConfig,
        now: u64,
    ) -> Result<Vec<(Event, Outcome)>> {
        events.sort_by_key(|(e, _)| (e.created_at, e.id));
        // Only exact copies: a forged copy sharing a genuine event's id must not replace it.
        events.dedup_by(|a, b| a.0 == b.0);
        let mut out = Vec::with_capacity(events.len());
        let mut rest = events.into_iter().peekable();
        while rest.peek().is_some() {
            let batch: Vec<(Event, Option<Checked>)> = rest.by_ref().take(BATCH).collect();
            let tx = self.db.begin_write()?;
            {
                let mut t = IngestTables::open(&tx)?;
                let mut due = Vec::with_capacity(batch.len());
                for (e, pre) in &batch {
                    due.push(pre.is_none() && !Self::seen(&t, e)?);
                }
                let events: Vec<&Event> = batch.iter().map(|(e, _)| e).collect();
                let fresh = self.check_due(&events, &due, policy, now);
                for ((e, pre), fresh) in batch.into_iter().zip(fresh) {
                    let o = Self::ingest_in(&mut t, &e, pre.or(fresh), policy, now)?;
                    out.push((e, o));
                }
                self.prune(&mut t)?;
            }
            tx.commit()?;
        }
        Ok(out)
    }

    /// How many release checks (each verifying an event's signatures) this catalog has run
    /// since it was opened.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(atomic::Ordering::Relaxed)
    }

    /// Checks one release event against §4.1 (all five rules) and records the result.
    pub fn ingest(&self, event: &Event, policy: &PolicyConfig, now: u64) -> Result<Outcome> {
        let mut out = self.ingest_all(vec![event.clone()], policy, now)?;
        Ok(out.pop().expect("one event in, one outcome out").1)
    }

    fn check(event: &Event, policy: &PolicyConfig, now: u64) -> Checked {
        release::check_release(event, policy, now).map(Box::new)
    }

    /// Whether this event's id was done with, or this very invalid copy was processed.
    fn seen(t: &IngestTables, event: &Event) -> Result<bool> {
        Self::seen_in(&t.seen, event)
    }

    fn seen_in(seen: &impl ReadableTable<&'static str, u64>, event: &Event) -> Result<bool> {
        Ok(
            seen.get(event.id.to_hex().as_str())?.is_some()
                || Self::invalid_copy_seen(seen, event)?,
        )
    }

    /// Rules 1–4 (pure) of the events this catalog has not seen, over all cores, counted in
    /// [`Catalog::verifications`]; `None` for the others. Read-only: what a sync pass runs on
    /// each page while the rest of the pass is still arriving, before
    /// [`Catalog::ingest_checked`] applies them in order.
    pub fn precheck(
        &self,
        events: Vec<Event>,
        policy: &PolicyConfig,
        now: u64,
    ) -> Result<Vec<(Event, Option<Checked>)>> {
        let unseen = {
            let tx = self.db.begin_read()?;
            let seen = tx.open_table(SEEN)?;
            events
                .iter()
                .map(|e| Ok(!Self::seen_in(&seen, e)?))
                .collect::<Result<Vec<bool>>>()?
        };
        let refs: Vec<&Event> = events.iter().collect();
        let checked = self.check_due(&refs, &unseen, policy, now);
        Ok(events.into_iter().zip(checked).collect())
    }

    /// Rules 1–4 of the events whose `due` is set, over all cores, counted in
    /// [`Catalog::verifications`]; `None` for the others.
    fn check_due(
        &self,
        events: &[&Event],
        due: &[bool],
        policy: &PolicyConfig,
        now: u64,
    ) -> Vec<Option<Checked>> {
        let checked: Vec<Option<Checked>> = events
            .par_iter()
            .zip(due)
            .map(|(e, due)| due.then(|| Self::check(e, policy, now)))
            .collect();
        let ran = checked.iter().filter(|c| c.is_some()).count();
        self.verifications
            .fetch_add(ran as u64, atomic::Ordering::Relaxed);
        checked
    }

    /// One event's checks and effects, inside the batch's transaction. `checked` is the result
    /// of rules 1–4 if the batch already ran them (they depend on the event alone).
    fn ingest_in(
        t: &mut IngestTables,
        event: &Event,
        checked: Option<Checked>,
        policy: &PolicyConfig,
        now: u64,
    ) -> Result<Outcome> {
        let event_id = event.id.to_hex();
        if Self::seen(t, event)? {
            return Ok(Outcome::AlreadySeen);
        }
        let checked = checked.unwrap_or_else(|| Self::check(event, policy, now));
        match checked {
            Err(rejection) => {
                match rejection.reason {
                    // The id or signature failed: this copy says nothing about the event its
                    // id names (anyone can forge one under a genuine id), so it is remembered
                    // by its own key and the id stays free for a valid copy.
                    Reason::EventInvalid => {
                        t.seen.insert(invalid_copy_key(event).as_str(), now)?;
                    }
                    // A release from the future may become valid once the clock catches up:
                    // it is recorded, but not marked seen, so a later sync checks it again.
                    Reason::CreatedAtFuture => {}
                    // Any other rejection comes after the id and signature verified
                    // (`check_release` checks them first) and depends only on what the id
                    // covers: the id is done with.
                    _ => {
                        t.seen.insert(event_id.as_str(), now)?;
                    }
                }
                let app = matches!(rejection.reason, Reason::Expired)
                    .then(|| app_of(event))
                    .flatten();
                Self::reject(t, event, rejection.clone(), None, app, now)?;
                Ok(Outcome::Rejected(rejection))
            }
            Ok(verified) => {
                t.seen.insert(event_id.as_str(), now)?;
                // A record left under this id by an invalid copy (or by this event while it
                // was from the future) is not about this release.
                t.rejected.remove(event_id.as_str())?;
                Self::apply_monotonicity(t, event, *verified, now)
            }
        }
    }

    /// Whether this very invalid copy (same claimed id, signature and fields) was processed.
    /// Looks for any copy with this id and signature first, so the common case (none) costs one
    /// B-tree lookup and no id recomputation.
    fn invalid_copy_seen(
        seen: &impl ReadableTable<&'static str, u64>,
        event: &Event,
    ) -> Result<bool> {
        let prefix = invalid_copy_prefix(event);
        let any = match seen.range(prefix.as_str()..)?.next() {
            Some(row) => row?.0.value().starts_with(&prefix),
            None => false,
        };
        if !any {
            return Ok(false);
        }
        Ok(seen.get(invalid_copy_key(event).as_str())?.is_some())
    }

    /// Keeps the hostile-growable tables within [`Caps`], dropping the oldest rows first.
    fn prune(&self, t: &mut IngestTables) -> Result<()> {
        let seen = &mut t.seen;
        if seen.len()? as usize > self.caps.seen {
            let mut rows = Vec::new();
            for row in seen.iter()? {
                let (k, v) = row?;
                rows.push((v.value(), k.value().to_owned()));
            }
            rows.sort_unstable();
            let excess = rows.len() - prune_target(self.caps.seen);
            for (_, id) in &rows[..excess] {
                seen.remove(id.as_str())?;
            }
        }
        let rejected = &mut t.rejected;
        if rejected.len()? as usize <= self.caps.junk_rejections {
            return Ok(());
        }
        let mut junk = Vec::new();
        for row in rejected.iter()? {
            let (k, v) = row?;
            let r: RejectedRecord = serde_json::from_slice(v.value())?;
            if !r.is_evidence() {
                junk.push((r.recorded_at, k.value().to_owned()));
            }
        }
        if junk.len() > self.caps.junk_rejections {
            junk.sort_unstable();
            let excess = junk.len() - prune_target(self.caps.junk_rejections);
            for (_, id) in &junk[..excess] {
                rejected.remove(id.as_str())?;
            }
        }
        Ok(())
    }

    fn reject(
        t: &mut IngestTables,
        event: &Event,
        r: Rejection,
        conflicts_with: Option<String>,
        app: Option<(String, String, String)>,
        now: u64,
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
            recorded_at: now,
        };
        t.rejected
            .insert(record.event_id.as_str(), to_json(&record).as_slice())?;
        let code = record.reason.to_string();
        let n = t.counts.get(code.as_str())?.map_or(0, |v| v.value());
        t.counts.insert(code.as_str(), n + 1)?;
        Ok(())
    }

    /// Rule 5: duplicate, equivocation, history or new latest.
    fn apply_monotonicity(
        t: &mut IngestTables,
        event: &Event,
        verified: crate::envelope::Verified,
        now: u64,
    ) -> Result<Outcome> {
        let m = &verified.manifest;
        let version = m.semver();
        let key = release_key(&m.publisher.did, &m.id, &version);
        let jcs_blake3 = blake3::hash(&verified.jcs).to_hex().to_string();
        let existing = t
            .releases
            .get(key.as_str())?
            .map(|v| serde_json::from_slice::<ReleaseRecord>(v.value()))
            .transpose()?;
        let akey = app_key(&m.publisher.did, &m.id);
        let current = t
            .apps
            .get(akey.as_str())?
            .map(|v| serde_json::from_slice::<AppRecord>(v.value()))
            .transpose()?;
        let latest = current
            .as_ref()
            .map(|app| semver::Version::parse(&app.latest))
            .transpose()?;
        let decision = release::rule5(
            release::Candidate {
                app: &m.id,
                version_text: &m.version,
                version: &version,
                jcs_hash: &jcs_blake3,
            },
            release::Held {
                same_version: existing
                    .as_ref()
                    .map(|r| (r.jcs_blake3.as_str(), r.event_id.as_str())),
                latest: latest.as_ref(),
            },
        );
        let is_latest = match decision {
            Rule5::Duplicate => return Ok(Outcome::Duplicate),
            Rule5::Equivocation {
                rejection,
                conflicts_with,
            } => {
                Self::reject(
                    t,
                    event,
                    rejection.clone(),
                    Some(conflicts_with),
                    Some((m.publisher.did.clone(), m.id.clone(), m.version.clone())),
                    now,
                )?;
                return Ok(Outcome::Rejected(rejection));
            }
            Rule5::History => false,
            Rule5::Latest => true,
        };
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
        t.releases
            .insert(key.as_str(), to_json(&record).as_slice())?;
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
        t.apps.insert(akey.as_str(), to_json(&app).as_slice())?;
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

    /// The rejected events on record (all evidence, the newest junk within [`Caps`]), oldest
    /// first by `created_at`.
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

    /// Rejections made so far, per reason code: every one is counted, even when its record was
    /// pruned ([`Caps`]).
    pub fn rejection_counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REJECTION_COUNTS)?;
        let mut out = std::collections::BTreeMap::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.insert(k.value().to_owned(), v.value());
        }
        Ok(out)
    }

    /// Records that `rec.endpoint` sent bytes of `rec.hash` that did not verify, against
    /// `rec.nostr`. Returns false when that key, blob and endpoint were already on record.
    pub fn record_bad_source(&self, rec: &BadSourceRecord) -> Result<bool> {
        let key = format!("{}\0{}\0{}", rec.nostr, rec.hash, rec.endpoint);
        let tx = self.db.begin_write()?;
        let new = {
            let mut t = tx.open_table(BAD_SOURCES)?;
            let new = t.get(key.as_str())?.is_none();
            if new {
                t.insert(key.as_str(), to_json(rec).as_slice())?;
            }
            new
        };
        tx.commit()?;
        Ok(new)
    }

    /// Every bad-bytes record (evidence for the trust engine), by key.
    pub fn bad_sources(&self) -> Result<Vec<BadSourceRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BAD_SOURCES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice::<BadSourceRecord>(v.value())?);
        }
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

/// `<claimed id>:<sig>:`, the start of [`invalid_copy_key`].
fn invalid_copy_prefix(event: &Event) -> String {
    format!("{}:{}:", event.id.to_hex(), event.sig)
}

/// The `seen` key of an `event-invalid` copy: its claimed id, its signature and the id
/// recomputed from its fields. It never equals a genuine event's key (a bare id), and never
/// another copy's unless the two are the same event field for field: a copy with the genuine
/// id and signature but other content differs in the recomputed id; one with the genuine fields
/// but another signature differs in the signature.
fn invalid_copy_key(event: &Event) -> String {
    let computed = archy_relays::sync::recomputed_id(event);
    format!("{}{}", invalid_copy_prefix(event), computed.to_hex())
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;
    use nostr_sdk::prelude::{EventBuilder, Keys, Kind, Tag};
    use serde_json::json;

    /// A kind-30078 event whose content is not an envelope: junk anyone can mint for free.
    fn junk(n: usize) -> Event {
        EventBuilder::new(Kind::Custom(30078), format!("junk {n}"))
            .tag(Tag::identifier(format!("junk-{n}")))
            .tag(Tag::hashtag("archy-app"))
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    /// A signed release of app `hello` (valid for the default policy) by `id`.
    pub(crate) fn release(id: &Identity, version: &str, summary: &str) -> Event {
        let manifest = json!({
            "schema": "archy.app/v1", "id": "hello", "version": version,
            "name": "Hello", "summary": summary,
            "publisher": {"did": id.did(), "nostr": id.nostr_hex()},
            "origin": {"endpoint": "ab".repeat(32), "addrs": ["127.0.0.1:4433"]},
            "image": {
                "name": "localhost/test/hello:1", "id": format!("sha256:{}", "cd".repeat(32)),
                "archive": {"blake3": "ef".repeat(32), "size": 1024, "format": "oci-archive"}
            },
            "ports": [{"container": 8080, "host": 18080}],
            "published_at": 1_700_000_000u64
        });
        let env = crate::envelope::sign(manifest.as_object().unwrap().clone(), id);
        release::build_release_event(&env, id.nostr_keys()).unwrap()
    }

    fn seen_rows(c: &Catalog) -> u64 {
        c.db.begin_read()
            .unwrap()
            .open_table(SEEN)
            .unwrap()
            .len()
            .unwrap()
    }

    /// A flood of junk keeps `seen` and the junk rejections within their caps, the newest rows
    /// survive, and equivocation evidence is never pruned.
    #[test]
    fn caps_bound_what_a_flood_can_grow_and_keep_the_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let caps = Caps {
            seen: 50,
            junk_rejections: 20,
        };
        let c = Catalog::open_with_caps(&dir.path().join("c.redb"), caps).unwrap();
        let policy = PolicyConfig::default();
        let now = crate::unix_now();
        let id = Identity::from_keys(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            Keys::generate(),
        );
        c.ingest_all(
            vec![release(&id, "1.0.0", "a"), release(&id, "1.0.0", "b")],
            &policy,
            now,
        )
        .unwrap();
        // Several passes, each "later" than the one before.
        let mut last = Vec::new();
        for pass in 0..10u64 {
            last = (0..30).map(|i| junk(pass as usize * 100 + i)).collect();
            let out = c.ingest_all(last.clone(), &policy, now + pass).unwrap();
            assert!(out.iter().all(|(_, o)| matches!(o, Outcome::Rejected(_))));
        }
        assert!(seen_rows(&c) <= caps.seen as u64, "{}", seen_rows(&c));
        let rejected = c.rejected().unwrap();
        let junk_kept: Vec<_> = rejected.iter().filter(|r| !r.is_evidence()).collect();
        assert!(
            junk_kept.len() <= caps.junk_rejections,
            "{}",
            junk_kept.len()
        );
        assert!(
            junk_kept.iter().all(|r| r.recorded_at == now + 9),
            "only the newest pass's junk is left"
        );
        assert_eq!(c.equivocations_by(&id.nostr_hex()).unwrap(), 1);
        let counts = c.rejection_counts().unwrap();
        assert_eq!(counts.values().sum::<u64>(), 301, "{counts:?}");
        assert_eq!(counts["equivocation"], 1, "{counts:?}");
        // The newest junk is still known as seen; a re-sent old one is checked (and refused) again.
        assert_eq!(
            c.ingest(&last[0], &policy, now + 10).unwrap(),
            Outcome::AlreadySeen
        );
        assert!(c.latest(&id.did(), "hello").unwrap().is_some());
    }

    /// `event` as a relay could serve it: its JSON changed by `f`, the id and signature kept.
    pub(crate) fn forged(event: &Event, f: impl FnOnce(&mut serde_json::Value)) -> Event {
        use nostr_sdk::prelude::JsonUtil;
        let mut v: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
        f(&mut v);
        let copy = Event::from_json(v.to_string()).unwrap();
        assert_eq!(copy.id, event.id);
        copy
    }

    fn is_invalid(o: &Outcome) -> bool {
        matches!(o, Outcome::Rejected(r) if r.reason == Reason::EventInvalid)
    }

    pub(crate) fn publisher(seed: u8) -> Identity {
        Identity::from_keys(
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
            Keys::generate(),
        )
    }

    /// Censorship by a forged duplicate (issue 13): a copy of a genuine release under its id,
    /// with other content (or another kind, time or tag list), is rejected as `event-invalid`
    /// first; the genuine release that comes after it is still checked and accepted, and the
    /// copy's rejection record under that id goes (its count stays).
    #[test]
    fn an_altered_copy_under_a_genuine_id_does_not_censor_the_genuine_release() {
        let policy = PolicyConfig::default();
        let now = crate::unix_now();
        let id = publisher(9);
        let genuine = release(&id, "1.0.0", "a");
        let alterations: [fn(&mut serde_json::Value); 4] = [
            |v| {
                let c = v["content"]
                    .as_str()
                    .unwrap()
                    .replace("\"a\"", "\"forged\"");
                v["content"] = c.into();
            },
            |v| v["kind"] = 1.into(),
            |v| v["created_at"] = (v["created_at"].as_u64().unwrap() - 1).into(),
            |v| v["tags"].as_array_mut().unwrap().truncate(1),
        ];
        for alter in alterations {
            let dir = tempfile::tempdir().unwrap();
            let c = Catalog::open(&dir.path().join("c.redb")).unwrap();
            let copy = forged(&genuine, alter);
            assert_ne!(copy, genuine);
            let first = c.ingest(&copy, &policy, now).unwrap();
            assert!(is_invalid(&first), "{first:?}");
            assert_eq!(c.rejected().unwrap().len(), 1);
            assert_eq!(c.ingest(&genuine, &policy, now).unwrap(), Outcome::Latest);
            assert!(c.latest(&id.did(), "hello").unwrap().is_some());
            assert_eq!(c.rejected().unwrap().len(), 0, "the copy's record is gone");
            assert_eq!(c.rejection_counts().unwrap()["event-invalid"], 1);
            // The id is now seen: neither the genuine event nor a copy is checked again.
            assert_eq!(
                c.ingest(&genuine, &policy, now).unwrap(),
                Outcome::AlreadySeen
            );
            assert_eq!(c.ingest(&copy, &policy, now).unwrap(), Outcome::AlreadySeen);
        }
    }

    /// The genuine id and content with a garbage signature first: the genuine release after it
    /// is accepted. And in one batch, in either order.
    #[test]
    fn a_bad_signature_copy_first_does_not_censor_the_genuine_release() {
        let policy = PolicyConfig::default();
        let now = crate::unix_now();
        let id = publisher(10);
        let genuine = release(&id, "1.0.0", "a");
        let bad_sig = forged(&genuine, |v| v["sig"] = "00".repeat(64).into());
        assert!(bad_sig.verify_id() && !bad_sig.verify_signature());
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("c.redb")).unwrap();
        assert!(is_invalid(&c.ingest(&bad_sig, &policy, now).unwrap()));
        assert_eq!(c.ingest(&genuine, &policy, now).unwrap(), Outcome::Latest);
        assert_eq!(c.rejected().unwrap().len(), 0);

        // One batch (one sync pass holding both copies): exact copies only are merged.
        let other = release(&id, "1.1.0", "b");
        let copy = forged(&other, |v| v["sig"] = "00".repeat(64).into());
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let out = c
            .ingest_all(
                vec![copy.clone(), copy.clone(), other.clone()],
                &policy,
                now,
            )
            .unwrap();
        let outcomes: Vec<&Outcome> = out.iter().map(|(_, o)| o).collect();
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert!(is_invalid(outcomes[0]), "{outcomes:?}");
        assert_eq!(*outcomes[1], Outcome::Latest);
        assert_eq!(c.rejection_counts().unwrap()["event-invalid"], 1);
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let out = c.ingest_all(vec![other, copy], &policy, now).unwrap();
        let outcomes: Vec<&Outcome> = out.iter().map(|(_, o)| o).collect();
        assert_eq!(outcomes, [&Outcome::Latest, &Outcome::AlreadySeen]);
        assert_eq!(c.rejection_counts().unwrap().get("event-invalid"), None);
    }

    /// The same invalid copy twice is checked and counted once; another invalid copy of the
    /// same id is a new one; their rows count against the `seen` cap like ids do.
    #[test]
    fn the_same_invalid_copy_is_counted_once_and_its_rows_are_capped() {
        let policy = PolicyConfig::default();
        let now = crate::unix_now();
        let id = publisher(11);
        let genuine = release(&id, "1.0.0", "a");
        let copy = forged(&genuine, |v| v["content"] = "forged".into());
        let dir = tempfile::tempdir().unwrap();
        let caps = Caps {
            seen: 20,
            junk_rejections: 20,
        };
        let c = Catalog::open_with_caps(&dir.path().join("c.redb"), caps).unwrap();
        assert!(is_invalid(&c.ingest(&copy, &policy, now).unwrap()));
        assert_eq!(c.ingest(&copy, &policy, now).unwrap(), Outcome::AlreadySeen);
        assert_eq!(c.rejection_counts().unwrap()["event-invalid"], 1);
        assert_eq!(seen_rows(&c), 1);
        let other_copy = forged(&genuine, |v| v["content"] = "forged again".into());
        assert!(is_invalid(&c.ingest(&other_copy, &policy, now).unwrap()));
        assert_eq!(c.rejection_counts().unwrap()["event-invalid"], 2);

        // A flood of invalid copies, each distinct: the rows stay within the cap.
        for pass in 0..5u64 {
            let flood: Vec<Event> = (0..10)
                .map(|i| {
                    forged(&genuine, |v| {
                        v["content"] = format!("junk {pass} {i}").into()
                    })
                })
                .collect();
            let out = c.ingest_all(flood, &policy, now + pass).unwrap();
            assert!(out.iter().all(|(_, o)| is_invalid(o)));
        }
        assert!(seen_rows(&c) <= caps.seen as u64, "{}", seen_rows(&c));
        assert_eq!(c.rejection_counts().unwrap()["event-invalid"], 52);
        // And the genuine release still goes through.
        assert_eq!(
            c.ingest(&genuine, &policy, now + 5).unwrap(),
            Outcome::Latest
        );
    }

    /// More events than one transaction takes: every one gets its own outcome, in order, and
    /// a release repeated across the batch boundary is a duplicate, not a second release.
    #[test]
    fn batches_span_transactions_without_changing_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let policy = PolicyConfig::default();
        let now = crate::unix_now();
        let id = Identity::from_keys(
            ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
            Keys::generate(),
        );
        let mut events: Vec<Event> = (0..BATCH + 5).map(junk).collect();
        events.push(release(&id, "1.0.0", "a"));
        let out = c.ingest_all(events.clone(), &policy, now).unwrap();
        assert_eq!(out.len(), BATCH + 6);
        assert_eq!(out.iter().filter(|(_, o)| *o == Outcome::Latest).count(), 1);
        let again = c.ingest_all(events, &policy, now).unwrap();
        assert!(again.iter().all(|(_, o)| *o == Outcome::AlreadySeen));
    }
}
