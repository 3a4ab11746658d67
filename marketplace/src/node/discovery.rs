//! Discovery: reading release events from relays into the catalog (PROTOCOL.md §4.1).
//!
//! One pass (`sync_once`) asks every relay for `{"kinds":[30078],"#t":["archy-app"]}` since the
//! catalog's cursor, and ingests what comes back in (`created_at`, id) order. The node runs a pass
//! at start and every `sync_interval_secs`, plus a live subscription in between. The relay layer
//! hands events over unverified, so invalid ones are recorded as `event-invalid`.

use crate::catalog::{Catalog, Checked, Outcome};
use crate::events::release_filter;
use crate::manifest::PolicyConfig;
use anyhow::Result;
use archy_relays::nostr::prelude::{Event, Timestamp};
use archy_relays::RelayPool;
use serde::{Deserialize, Serialize};

/// The cursor key under which the catalog remembers how far discovery got.
const CURSOR: &str = "releases";
/// Verified releases a pass checks ahead while it is still fetching (see `sync_once`).
const PRECHECK_HELD: usize = 2_000;
/// Re-ask this far back on each pass: authors pick `created_at`, so events can arrive late.
const OVERLAP_SECS: u64 = 3600;

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SyncReport {
    pub received: usize,
    pub accepted: usize,
    pub history: usize,
    pub duplicates: usize,
    pub already_seen: usize,
    pub rejected: usize,
    /// Release checks run (each verifies an event's signatures once): with many relays holding
    /// the same events, this stays at the number of distinct new events.
    #[serde(default)]
    pub verified: u64,
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
    let events = events.into_iter().map(|e| (e, None)).collect();
    ingest_checked(catalog, events, policy, now, report)
}

/// [`ingest`] of events some of which went through rules 1–4 already ([`Catalog::precheck`]).
fn ingest_checked(
    catalog: &Catalog,
    events: Vec<(Event, Option<Checked>)>,
    policy: &PolicyConfig,
    now: u64,
    report: &mut SyncReport,
) -> Result<()> {
    report.received += events.len();
    // Only events whose id and signature verified move the cursor: a forged `created_at` on a
    // copy that does not verify must not make later passes skip an honest relay's older events.
    let mut newest: Option<u64> = None;
    let mut seen_before = Vec::new();
    let verifications = catalog.verifications();
    let outcomes = catalog.ingest_checked(events, policy, now)?;
    report.verified += catalog.verifications() - verifications;
    for (event, outcome) in outcomes {
        match &outcome {
            Outcome::Rejected(r) if r.reason == crate::reason::Reason::EventInvalid => {}
            // Seen before: verified once, or remembered as an invalid copy.
            Outcome::AlreadySeen => seen_before.push(event),
            _ => newest = newest.max(Some(event.created_at.as_secs())),
        }
        report.count(&outcome);
    }
    // The signature is checked again only for seen events newer than the rest, newest first,
    // until one verifies: a pass re-reads the last hour, so this is rarely more than a few.
    seen_before.sort_unstable_by_key(|e| std::cmp::Reverse(e.created_at));
    for e in seen_before {
        if Some(e.created_at.as_secs()) <= newest {
            break;
        }
        if e.verify().is_ok() {
            newest = Some(e.created_at.as_secs());
            break;
        }
    }
    if let Some(newest) = newest {
        // Never advance past "now": an event from the future must be asked for again later.
        catalog.advance_cursor(CURSOR, newest.min(now))?;
    }
    Ok(())
}

/// One discovery pass over every relay of the pool. The fetch runs as its own task; each page
/// it hands over is checked (rules 1–4, over all cores, for events the catalog has not seen)
/// while the next pages are still arriving — up to [`PRECHECK_HELD`] verified releases, whose
/// results the pass must keep — and once every relay is done the whole pass is applied in
/// PROTOCOL order (rule 5 and the catalog writes, one transaction per batch, checking there
/// what was not checked ahead).
pub async fn sync_once(
    pool: &RelayPool,
    catalog: &Catalog,
    policy: &PolicyConfig,
    now: u64,
) -> Result<SyncReport> {
    let since = catalog
        .cursor(CURSOR)?
        .map(|c| Timestamp::from(c.saturating_sub(OVERLAP_SECS)));
    let (pages, mut arriving) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<Event>)>();
    let fetch = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.fetch_pages(release_filter(), since, move |relay, page| {
                // The receiver lives until the fetch ends (it is awaited below).
                let _ = pages.send((relay, page));
            })
            .await
        }
    });
    let verifications = catalog.verifications();
    // Per relay, so that copies with the same time and id keep the relays' configuration
    // order after the (stable) sort: the pass is the same whatever order pages arrive in.
    let mut per_relay_events: Vec<Vec<(Event, Option<Checked>)>> = Vec::new();
    let mut held = 0;
    while let Some((relay, page)) = arriving.recv().await {
        // A verified release is large (~11 KB with its parsed manifest) beside its event: only
        // the first PRECHECK_HELD of a pass are checked ahead, the rest in the ordered pass,
        // so what a pass holds beyond its events stays bounded.
        let checked = if held < PRECHECK_HELD {
            let checked = off_the_workers(|| catalog.precheck(page, policy, now))?;
            held += checked
                .iter()
                .filter(|(_, c)| matches!(c, Some(Ok(_))))
                .count();
            checked
        } else {
            page.into_iter().map(|e| (e, None)).collect()
        };
        if per_relay_events.len() <= relay {
            per_relay_events.resize_with(relay + 1, Vec::new);
        }
        per_relay_events[relay].extend(checked);
    }
    let events: Vec<(Event, Option<Checked>)> = per_relay_events.into_iter().flatten().collect();
    let per_relay = fetch
        .await
        .map_err(|e| anyhow::anyhow!("the fetch task failed: {e}"))??;
    let mut report = SyncReport {
        relays: per_relay
            .iter()
            .map(|(url, r)| (url.to_string(), r.clone()))
            .collect(),
        verified: catalog.verifications() - verifications,
        ..SyncReport::default()
    };
    off_the_workers(|| ingest_checked(catalog, events, policy, now, &mut report))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::{forged, publisher, release};

    /// A copy that does not verify, dated now, must not move the cursor (later passes would
    /// skip an honest relay's older events); a verified event does; the same copy re-sent
    /// (seen before) does not either.
    #[test]
    fn only_verified_events_move_the_cursor() {
        let policy = PolicyConfig::default();
        // A minute ahead of the events' own time, so "dated now" is newer than the genuine one.
        let now = crate::unix_now() + 60;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let genuine = release(&publisher(21), "1.0.0", "a");
        let copy = forged(&genuine, |v| v["created_at"] = now.into());
        let mut report = SyncReport::default();
        ingest(&catalog, vec![copy.clone()], &policy, now, &mut report).unwrap();
        assert_eq!(report.rejected, 1);
        assert_eq!(catalog.cursor(CURSOR).unwrap(), None);
        ingest(&catalog, vec![genuine.clone()], &policy, now, &mut report).unwrap();
        let at = genuine.created_at.as_secs();
        assert!(at < now);
        assert_eq!(catalog.cursor(CURSOR).unwrap(), Some(at));
        ingest(&catalog, vec![copy, genuine], &policy, now, &mut report).unwrap();
        assert_eq!(report.already_seen, 2);
        assert_eq!(catalog.cursor(CURSOR).unwrap(), Some(at));
    }
}
