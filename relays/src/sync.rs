//! Read-side bookkeeping (pure: no I/O, unit-tested here): de-duplication across relays, the
//! per-relay resume cursor of a live subscription, and the paging rule of a one-pass fetch.

use std::collections::{HashSet, VecDeque};

use nostr_sdk::{EventId, Timestamp};

/// Remembers the ids already delivered, so an event that several relays hold is delivered once.
///
/// Bounded: a long-running node sees an unbounded stream; past `capacity` the oldest ids are
/// forgotten. A forgotten id that shows up again is delivered again, which the node tolerates
/// (its catalog treats an identical release as a duplicate).
#[derive(Debug)]
pub struct SeenIds {
    set: HashSet<EventId>,
    order: VecDeque<EventId>,
    capacity: usize,
}

impl SeenIds {
    /// An empty set that remembers at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records `id`; true when it was not seen before.
    pub fn insert(&mut self, id: EventId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Number of ids currently remembered.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Where a live subscription resumes after a reconnect (one per relay).
///
/// The cursor follows the newest `created_at` seen from that relay, but never past the local
/// clock: an event dated a day ahead (hostile or a skewed clock) must not make the next REQ skip
/// a day of real events. `overlap` re-asks a little before the cursor, because `created_at` is
/// chosen by the author and an event can arrive later than a newer one; the duplicates this
/// brings are removed by [`SeenIds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeCursor {
    initial: Option<Timestamp>,
    last_seen: Option<Timestamp>,
    overlap_secs: u64,
}

impl ResumeCursor {
    /// A cursor that starts at `initial` (None: from the beginning).
    pub fn new(initial: Option<Timestamp>, overlap_secs: u64) -> Self {
        Self {
            initial,
            last_seen: None,
            overlap_secs,
        }
    }

    /// Records an event's `created_at`, as seen at local time `now`.
    pub fn observe(&mut self, created_at: Timestamp, now: Timestamp) {
        let clamped = std::cmp::min(created_at, now);
        self.last_seen = Some(match self.last_seen {
            Some(prev) => std::cmp::max(prev, clamped),
            None => clamped,
        });
    }

    /// The newest (clamped) `created_at` seen so far, if any.
    pub fn last_seen(&self) -> Option<Timestamp> {
        self.last_seen
    }

    /// The `since` of the next REQ.
    pub fn since(&self) -> Option<Timestamp> {
        match self.last_seen {
            None => self.initial,
            Some(seen) => {
                let resumed =
                    Timestamp::from_secs(seen.as_secs().saturating_sub(self.overlap_secs));
                Some(match self.initial {
                    Some(initial) => std::cmp::max(initial, resumed),
                    None => resumed,
                })
            }
        }
    }
}

/// The paging rule of a one-pass fetch: relays cap how many events one REQ returns, and the
/// cap is not announced. We therefore walk backwards with `until` = the oldest `created_at` of
/// the last page (inclusive, so events sharing that second are not lost) and stop when a page
/// brings nothing new.
///
/// Returns the `until` of the next page, or None when the fetch is complete.
pub fn next_page_until(page: &[(EventId, Timestamp)], new_in_page: usize) -> Option<Timestamp> {
    if page.is_empty() || new_in_page == 0 {
        return None;
    }
    page.iter().map(|(_, t)| *t).min_by_key(|t| t.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EventId {
        EventId::from_byte_array([n; 32])
    }

    #[test]
    fn seen_ids_dedups_and_forgets_oldest() {
        let mut seen = SeenIds::new(2);
        assert!(seen.insert(id(1)));
        assert!(!seen.insert(id(1)));
        assert!(seen.insert(id(2)));
        assert!(seen.insert(id(3)));
        assert_eq!(seen.len(), 2);
        // id(1) was forgotten, id(3) is still known.
        assert!(seen.insert(id(1)));
        assert!(!seen.insert(id(3)));
    }

    #[test]
    fn cursor_starts_at_initial_and_follows_newest() {
        let now = Timestamp::from_secs(10_000);
        let mut c = ResumeCursor::new(Some(Timestamp::from_secs(100)), 0);
        assert_eq!(c.since(), Some(Timestamp::from_secs(100)));
        c.observe(Timestamp::from_secs(500), now);
        c.observe(Timestamp::from_secs(300), now);
        assert_eq!(c.since(), Some(Timestamp::from_secs(500)));
    }

    #[test]
    fn cursor_never_moves_past_local_clock() {
        let now = Timestamp::from_secs(10_000);
        let mut c = ResumeCursor::new(None, 0);
        c.observe(Timestamp::from_secs(10_000 + 86_400), now);
        assert_eq!(c.since(), Some(now));
    }

    #[test]
    fn cursor_overlap_does_not_go_below_initial() {
        let now = Timestamp::from_secs(10_000);
        let mut c = ResumeCursor::new(Some(Timestamp::from_secs(1_000)), 600);
        c.observe(Timestamp::from_secs(1_200), now);
        assert_eq!(c.since(), Some(Timestamp::from_secs(1_000)));
        c.observe(Timestamp::from_secs(5_000), now);
        assert_eq!(c.since(), Some(Timestamp::from_secs(4_400)));
        let mut c = ResumeCursor::new(None, 600);
        c.observe(Timestamp::from_secs(100), now);
        assert_eq!(c.since(), Some(Timestamp::from_secs(0)));
    }

    #[test]
    fn paging_stops_on_empty_or_stale_page() {
        let page = [
            (id(1), Timestamp::from_secs(50)),
            (id(2), Timestamp::from_secs(40)),
        ];
        assert_eq!(next_page_until(&page, 2), Some(Timestamp::from_secs(40)));
        assert_eq!(next_page_until(&page, 0), None);
        assert_eq!(next_page_until(&[], 0), None);
    }
}
