//! Discovery: reading release events from relays into the catalog (PROTOCOL.md §4.1).
//!
//! One pass (`sync_once`) asks every relay for `{"kinds":[30078],"#t":["archy-app"]}` since the
//! catalog's cursor, and ingests what comes back in (`created_at`, id) order. The node runs a pass
//! at start and every `sync_interval_secs`, plus a live subscription in between. The relay layer
//! hands events over unverified, so invalid ones are recorded as `event-invalid`.

use crate::catalog::{Catalog, Outcome};
use crate::manifest::PolicyConfig;
use crate::side_events::release_filter;
use anyhow::Result;
use archy_relays::nostr::prelude::{Event, Timestamp};
use archy_relays::RelayPool;
use serde::Serialize;

/// The cursor key under which the catalog remembers how far discovery got.
const CURSOR: &str = "releases";
/// Re-ask this far back on each pass: authors pick `created_at`, so events can arrive late.
const OVERLAP_SECS: u64 = 3600;

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncReport {
    pub received: usize,
    pub accepted: usize,
    pub history: usize,
    pub duplicates: usize,
    pub already_seen: usize,
    pub rejected: usize,
    /// Per relay: events returned, or why it failed.
    pub relays: Vec<(String, Result<usize, String>)>,
}

impl SyncReport {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Latest => self.accepted += 1,
            Outcome::History => self.history += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::AlreadySeen => self.already_seen += 1,
            Outcome::Rejected(_) => self.rejected += 1,
        }
    }
}

/// Ingests a batch of events (from a pass or a subscription) and counts the outcomes.
pub fn ingest(
    catalog: &Catalog,
    events: Vec<Event>,
    policy: &PolicyConfig,
    now: u64,
    report: &mut SyncReport,
) -> Result<()> {
    report.received += events.len();
    let newest = events.iter().map(|e| e.created_at.as_secs()).max();
    for (_, outcome) in catalog.ingest_all(events, policy, now)? {
        report.count(&outcome);
    }
    if let Some(newest) = newest {
        // Never advance past "now": an event from the future must be asked for again later.
        catalog.advance_cursor(CURSOR, newest.min(now))?;
    }
    Ok(())
}

/// One discovery pass over every relay of the pool.
pub async fn sync_once(
    pool: &RelayPool,
    catalog: &Catalog,
    policy: &PolicyConfig,
    now: u64,
) -> Result<SyncReport> {
    let since = catalog
        .cursor(CURSOR)?
        .map(|c| Timestamp::from(c.saturating_sub(OVERLAP_SECS)));
    let fetched = pool.fetch_report(release_filter(), since).await?;
    let mut report = SyncReport {
        relays: fetched
            .per_relay
            .iter()
            .map(|(url, r)| (url.to_string(), r.clone()))
            .collect(),
        ..SyncReport::default()
    };
    off_the_workers(|| ingest(catalog, fetched.events, policy, now, &mut report))?;
    Ok(report)
}

/// Runs `f`, which blocks (signature checks and redb commits of a whole pass), without stalling
/// the other tasks of this worker thread, the local API among them: on a multi-thread runtime
/// the worker first hands its queue to another thread.
pub fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The `since` a live subscription should start from.
pub fn subscription_since(catalog: &Catalog) -> Result<Option<Timestamp>> {
    Ok(catalog
        .cursor(CURSOR)?
        .map(|c| Timestamp::from(c.saturating_sub(OVERLAP_SECS))))
}
