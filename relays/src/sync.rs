//! Read-side bookkeeping (pure: no I/O, unit-tested here): de-duplication across relays, the
//! per-relay resume cursor of a live subscription, and the paging rule of a one-pass fetch.

use std::collections::{HashSet, VecDeque};

use nostr_sdk::hashes::{sha256, Hash};
use nostr_sdk::secp256k1::schnorr::Signature;
use nostr_sdk::{Event, EventId, Timestamp};

/// What de-duplication across relays keys an event on: SHA-256 of its claimed id, the id
/// recomputed from its fields (NIP-01: `[0, pubkey, created_at, kind, tags, content]`) and its
/// signature. Two events share a key only when they are the same event, field for field.
///
/// Why not the claimed id: a relay can serve a copy of a genuine event under the genuine id
/// with other content, or with a garbage signature. Keyed by id, that copy, arriving first,
/// would take the genuine event's place and the genuine one would be dropped as a duplicate:
/// censorship by a forged duplicate. Keyed like this, the copy is handed over too (the node
/// records it as `event-invalid`) and the genuine event still comes through. Recomputing the
/// id is one hash of the event; the signature (the expensive part) is not checked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey([u8; 32]);

impl DedupKey {
    /// The key of `event` (recomputes its id).
    pub fn of(event: &Event) -> DedupKey {
        Self::from_parts(&event.id, &recomputed_id(event), &event.sig)
    }

    /// The key of an event claiming id `claimed`, whose fields hash to `computed`, signed `sig`.
    pub fn from_parts(claimed: &EventId, computed: &EventId, sig: &Signature) -> DedupKey {
        let mut bytes = [0u8; 32 + 32 + 64];
        bytes[..32].copy_from_slice(claimed.as_bytes());
        bytes[32..64].copy_from_slice(computed.as_bytes());
        bytes[64..].copy_from_slice(&sig.serialize());
        DedupKey(sha256::Hash::hash(&bytes).to_byte_array())
    }
}

/// The id `event`'s fields hash to (NIP-01), whatever id it claims. One SHA-256; no signature
/// check.
pub fn recomputed_id(event: &Event) -> EventId {
    EventId::new(
        &event.pubkey,
        &event.created_at,
        &event.kind,
        &event.tags,
        &event.content,
    )
}

/// Remembers the keys already delivered ([`DedupKey`] in the pool), so an event that several
/// relays hold is delivered once.
///
/// Bounded: a long-running node sees an unbounded stream; past `capacity` the oldest keys are
/// forgotten. A forgotten event that shows up again is delivered again, which the node
/// tolerates (its catalog treats an identical release as a duplicate).
#[derive(Debug)]
pub struct SeenIds<K = DedupKey> {
    set: HashSet<K>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Copy + Eq + std::hash::Hash> SeenIds<K> {
    /// An empty set that remembers at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records `key`; true when it was not seen before.
    pub fn insert(&mut self, key: K) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Number of keys currently remembered.
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

    fn signed(content: &str) -> Event {
        nostr_sdk::EventBuilder::new(nostr_sdk::Kind::Custom(30078), content)
            .custom_created_at(Timestamp::from_secs(1_000))
            .sign_with_keys(&nostr_sdk::Keys::generate())
            .unwrap()
    }

    /// `event` with its JSON changed by `f` (id and signature kept as they were).
    fn altered(event: &Event, f: impl FnOnce(&mut serde_json::Value)) -> Event {
        use nostr_sdk::JsonUtil;
        let mut v: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
        f(&mut v);
        Event::from_json(v.to_string()).unwrap()
    }

    #[test]
    fn dedup_key_is_the_whole_event_not_the_claimed_id() {
        let genuine = signed("genuine");
        let same = altered(&genuine, |_| {});
        assert_eq!(DedupKey::of(&genuine), DedupKey::of(&same));
        // Same id and signature, other content: the id no longer recomputes.
        let content = altered(&genuine, |v| v["content"] = "forged".into());
        assert_eq!(content.id, genuine.id);
        assert!(!content.verify_id());
        // Same id and fields, a garbage signature: the id recomputes, the signature differs.
        let sig = altered(&genuine, |v| v["sig"] = "00".repeat(64).into());
        assert!(sig.verify_id());
        // Another event's fields (and signature) under the genuine id: its recomputed id is
        // another event's, its claimed id still differs from that one.
        let other = signed("other");
        let swapped = altered(&other, |v| v["id"] = genuine.id.to_hex().into());
        let keys = [&genuine, &content, &sig, &swapped, &other].map(DedupKey::of);
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Whichever copy comes first, the genuine event is still fresh.
        let mut seen = SeenIds::new(10);
        for copy in [&content, &sig, &swapped] {
            assert!(seen.insert(DedupKey::of(copy)));
        }
        assert!(seen.insert(DedupKey::of(&genuine)));
        assert!(
            !seen.insert(DedupKey::of(&same)),
            "an exact copy is a duplicate"
        );
        assert!(!seen.insert(DedupKey::of(&content)));
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
