//! Collecting trust signals from the relays: the bounded filters (contact lists and labels
//! authored near the anchors, labels and reports about catalog publishers) and [`refresh`].

use crate::node::NodeCore;
use crate::unix_now;
use anyhow::Result;
use archy_trust::{Key, RawEvent, KIND_CONTACTS, KIND_LABEL, KIND_REPORT, LABEL_NAMESPACE};
use nostr_sdk::prelude::{Alphabet, Event, Filter, Kind, PublicKey, SingleLetterTag};
use std::collections::BTreeSet;

use super::state::*;

/// Hops from the anchors whose authors' contact lists and labels are fetched (0 = the anchors
/// themselves). Two hops give edges up to three hops out: beyond that a path carries at most
/// (1−α)³ ≈ 0.42 of a walk times three transition shares, too little to move a tier.
pub const MAX_DEPTH: usize = 2;
/// At most this many authors are asked for their signals per refresh.
pub const MAX_KEYS: usize = 1_000;
/// `limit` of every REQ: what one relay may return for one filter.
pub(super) const MAX_EVENTS_PER_REQ: usize = 2_000;
/// Authors or `#p` values per REQ (relays cap filter sizes).
pub(super) const CHUNK: usize = 250;
/// Events dated further ahead than this are ignored until their time comes (the release
/// rule of PROTOCOL §4.1, for the same reason).
use crate::release::MAX_FUTURE_SECS;
pub(super) fn raw_event(e: &Event) -> RawEvent {
    RawEvent {
        pubkey: e.pubkey.to_hex(),
        kind: e.kind.as_u16(),
        created_at: e.created_at.as_secs(),
        tags: e.tags.iter().map(|t| t.as_slice().to_vec()).collect(),
    }
}

pub(super) fn pubkeys(keys: &[Key]) -> Vec<PublicKey> {
    keys.iter()
        .map(|k| PublicKey::from_byte_array(*k.as_bytes()))
        .collect()
}

pub(super) fn trust_namespace() -> (SingleLetterTag, &'static str) {
    (SingleLetterTag::uppercase(Alphabet::L), LABEL_NAMESPACE)
}

/// `limit`-bounded filters, two per chunk of at most [`CHUNK`] keys: what `per_chunk` makes of
/// each chunk's public keys.
fn chunked(keys: &[Key], per_chunk: impl Fn(Vec<PublicKey>) -> [Filter; 2]) -> Vec<Filter> {
    keys.chunks(CHUNK)
        .flat_map(|chunk| per_chunk(pubkeys(chunk)))
        .map(|f| f.limit(MAX_EVENTS_PER_REQ))
        .collect()
}

/// Contact lists and trust labels written by `authors`.
pub(super) fn authored_filters(authors: &[Key]) -> Vec<Filter> {
    let (l, ns) = trust_namespace();
    chunked(authors, |pks| {
        [
            Filter::new()
                .kind(Kind::from(KIND_CONTACTS))
                .authors(pks.clone()),
            Filter::new()
                .kind(Kind::from(KIND_LABEL))
                .authors(pks)
                .custom_tag(l, ns),
        ]
    })
}

/// Trust labels and reports about `targets`, by anyone (an untrusted author's word weighs
/// nothing in the engine, so collecting it is harmless).
pub(super) fn about_filters(targets: &[Key]) -> Vec<Filter> {
    let (l, ns) = trust_namespace();
    chunked(targets, |pks| {
        [
            Filter::new()
                .kind(Kind::from(KIND_LABEL))
                .pubkeys(pks.clone())
                .custom_tag(l, ns),
            Filter::new().kind(Kind::from(KIND_REPORT)).pubkeys(pks),
        ]
    })
}

/// Collects signals from the node's relays (bounded, see the module doc), adds the catalog's
/// evidence and history, recomputes incrementally and persists the signal set.
pub async fn refresh(core: &NodeCore) -> Result<RefreshReport> {
    let state = core.trust()?;
    let _one_at_a_time = state.refreshing.lock().await;
    let pool = core.pool().await?;
    let now = unix_now();
    let mut report = RefreshReport::default();

    let apply = |events: Vec<Event>, report: &mut RefreshReport| {
        report.received += events.len();
        let mut inner = state.lock();
        for e in events {
            if e.verify().is_err() {
                report.invalid += 1;
                continue;
            }
            if e.created_at.as_secs() > now + MAX_FUTURE_SECS {
                report.future += 1;
                continue;
            }
            report.changed += inner.graph.apply_event(&raw_event(&e));
        }
    };

    // Authors, breadth first: each round's targets come from the lists fetched before it.
    let mut asked: BTreeSet<Key> = BTreeSet::new();
    for depth in 0..=MAX_DEPTH {
        let targets = state.lock().graph.collection_targets(depth, MAX_KEYS);
        let mut new: Vec<Key> = targets.into_iter().filter(|k| !asked.contains(k)).collect();
        new.truncate(MAX_KEYS.saturating_sub(asked.len()));
        if new.is_empty() {
            continue;
        }
        asked.extend(new.iter().copied());
        for filter in authored_filters(&new) {
            let events = pool.fetch(filter, None).await?;
            apply(events, &mut report);
        }
    }
    report.authors = asked.len();

    // About the publishers the catalog knows.
    let obs = observations(&core.catalog)?;
    let publishers: Vec<Key> = obs.evidence.keys().copied().collect();
    report.publishers = publishers.len();
    for filter in about_filters(&publishers) {
        let events = pool.fetch(filter, None).await?;
        apply(events, &mut report);
    }

    let signals = {
        let mut inner = state.lock();
        apply_observations(&mut inner.graph, &obs);
        let scores = inner.graph.compute_incremental();
        let stats = scores.stats();
        report.keys = stats.keys;
        report.edges = stats.edges;
        report.incremental = stats.incremental;
        report.iterations = stats.iterations;
        report.pushes = stats.pushes;
        report.at = unix_now();
        inner.scores = scores;
        inner.last_refresh = Some(report.clone());
        inner.graph.export_signals()
    };
    state.persist(&signals)?;
    tracing::debug!(?report, "trust refreshed");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_request_is_bounded_and_chunked() {
        let keys: Vec<Key> = (0..600u16)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..2].copy_from_slice(&i.to_be_bytes());
                Key::from_bytes(b)
            })
            .collect();
        for filters in [authored_filters(&keys), about_filters(&keys)] {
            assert_eq!(
                filters.len(),
                6,
                "3 chunks of at most {CHUNK}, two filters each"
            );
            for f in &filters {
                assert_eq!(f.limit, Some(MAX_EVENTS_PER_REQ));
                let n = f.authors.as_ref().map_or(0, |a| a.len())
                    + f.generic_tags.values().map(|v| v.len()).sum::<usize>();
                assert!(n <= CHUNK + 1, "{n} values in one filter");
            }
        }
        let kinds: BTreeSet<u16> = authored_filters(&keys[..1])
            .iter()
            .flat_map(|f| f.kinds.clone().unwrap_or_default())
            .map(|k| k.as_u16())
            .collect();
        assert_eq!(kinds, BTreeSet::from([KIND_CONTACTS, KIND_LABEL]));
    }
}
