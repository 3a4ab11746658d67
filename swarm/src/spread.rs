//! One blob from several sources at once (PROTOCOL §5.3, v2), as pure logic (sans-IO).
//!
//! A blob whose size the manifest states is cut into *pieces*: byte ranges aligned to
//! iroh-blobs' 16 KiB chunk groups, the unit the BLAKE3 tree verifies, so every piece is
//! verified on its own and written beside the others. Each source works through pieces one at
//! a time: it claims a piece nobody is fetching, asks for exactly that range, and marks it
//! done or gives it back. Fast sources thus take more pieces and slow ones fewer (rates are
//! kept only to tell a slow origin, [`origin_is_slow`]); a stalled request gives its piece back
//! to the others.
//!
//! Which piece ([`Pieces::claim`]): peers say what they hold (partial mirrors hold what they
//! have verified so far, and say more as they get it). Every source is asked for its rarest
//! piece, at random among equals, so fetchers that start together ask the origin for different
//! pieces and then trade them. While other fetchers of the blob are in the spread (partial
//! mirrors that still grow: the *crowd*), or the origin is clearly slower than the peers, the
//! origin yields: it is asked only for pieces no peer holds or has started. In a crowd the
//! pieces nobody has are also shared out without a word between the fetchers: each piece falls
//! to the fetcher whose key scores highest for it ([`designee`], rendezvous hashing), and a
//! fetcher asks the origin only for its own. Fetchers that see the same crowd thus ask the
//! origin for disjoint pieces, so its uplink sends each piece once, not once per fetcher, and
//! the peers trade the rest. What this does not see: a crowd member whose own origin requests
//! stopped (it was told busy [`MAX_BUSY_IN_A_ROW`] times) still grows from its peers and so
//! keeps its share, which then comes from the origin in that member's sequential phase; and
//! members a fetcher does not know may take the same pieces (a crowd larger than the peers it
//! lists).
//!
//! What ends a source's part in the spread ([`Worker::on_outcome`]):
//! - bytes that do not verify: dropped at once, and evidence (the caller records it);
//! - busy (§5.2): not a failure; the piece goes back and the source is asked again after the
//!   busy back-off, until [`crate::select::MAX_BUSY_IN_A_ROW`] answers in a row;
//! - anything else (unreachable, stalled, reset) twice.
//!
//! The spread only speeds a fetch up. What it leaves missing (every source ended, or a piece
//! kept failing) is finished by the origin-first sequential fetch of [`crate::select`], which
//! has the last word: the origin alone can always complete a fetch.

use std::{
    collections::BTreeMap,
    ops::Range,
    time::{Duration, Instant},
};

use crate::select::{busy_backoff, Failure, MAX_BUSY_IN_A_ROW};

/// iroh-blobs verifies and stores 16 KiB chunk groups (BLAKE3 chunks of 1 KiB, block size 4).
pub const CHUNK_GROUP: u64 = 16 * 1024;
/// The smallest piece worth a request of its own.
pub const MIN_PIECE: u64 = 256 * 1024;
/// The largest piece: small enough that a stalled source holds little and that a partial
/// mirror can offer a piece soon after it started on it (a piece is offered only once whole:
/// with 4 MiB, ten fetchers sharing one origin took 1.9× the time of one alone, and the
/// origin sent 1.81 copies), large enough that the per-request cost (a stream, a header, the
/// tree's parent hashes) stays small.
pub const MAX_PIECE: u64 = 1024 * 1024;
/// Pieces asked for at once in one blob's spread (the origin's request and three peer
/// requests; every known peer is observed and they take turns).
pub const MAX_SOURCES_AT_ONCE: usize = 4;
/// Failures other than busy and bad bytes after which a source leaves the spread.
const MAX_FAILURES: u32 = 2;
/// A partial mirror whose holdings grew within this long is a fetcher of the blob right now
/// (in the crowd); one that stopped growing longer ago is not (it gave up, or is gone without
/// a word), and what it has started stops holding the others back.
pub const FETCHER_IDLE: Duration = Duration::from_secs(5);
/// How long after a fetcher was listed we assume it may not know us yet unless it observes us
/// ([`Pieces::aware`]); past it, that it does (a lost word must not stall a piece for ever).
pub const UNAWARE_GRACE: Duration = Duration::from_secs(5);

/// How much of a piece a peer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Held {
    Nothing,
    /// Some chunk groups: a fetcher is receiving the piece now (or stopped mid-way).
    Part,
    /// Every chunk group: the piece can be asked of it.
    Whole,
}

impl From<bool> for Held {
    fn from(whole: bool) -> Self {
        if whole {
            Held::Whole
        } else {
            Held::Nothing
        }
    }
}

/// A 64-bit key for a source's identity (its endpoint id), for [`designee`].
pub fn key_of(id: &str) -> u64 {
    let h = blake3::hash(id.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// How strongly the fetcher with `key` is meant to take piece `i` from the origin (rendezvous
/// hashing: every fetcher computes the same scores, so those that know the same crowd agree
/// on who takes which piece, and a fetcher that leaves moves only its own pieces).
fn score(key: u64, i: usize) -> u64 {
    // splitmix64's finaliser over the key and the piece.
    let mut z = key ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which of `keys` takes piece `i` from the origin: the highest score (the lowest key on a tie).
pub fn designee(keys: impl IntoIterator<Item = u64>, i: usize) -> Option<u64> {
    keys.into_iter()
        .max_by(|a, b| score(*a, i).cmp(&score(*b, i)).then(b.cmp(a)))
}

/// Whether spreading a blob of `size` bytes over `sources` sources is worth it.
pub fn worth_spreading(size: u64, sources: usize) -> bool {
    sources >= 2 && size >= 2 * MIN_PIECE
}

/// The piece length for a blob: about four pieces per source, so the faster sources can take
/// more, within [`MIN_PIECE`]..=[`MAX_PIECE`], a multiple of [`CHUNK_GROUP`].
pub fn piece_len(size: u64, sources: usize) -> u64 {
    let target = size / (4 * sources.max(1) as u64);
    let clamped = target.clamp(MIN_PIECE, MAX_PIECE);
    clamped / CHUNK_GROUP * CHUNK_GROUP
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    Claimed(usize),
    Done,
}

/// What one peer in the spread holds.
#[derive(Debug, Clone)]
struct Offer {
    held: Vec<Held>,
    /// When its holdings last grew (or it was listed): a partial peer that grew within
    /// [`FETCHER_IDLE`] is a fetcher now.
    grew: Instant,
    /// When it was listed.
    listed: Instant,
    /// Whether it observes us, i.e. knows us as one of its sources ([`Pieces::aware`]).
    aware: bool,
}

/// The pieces of one blob, who is fetching which, and which peers hold which.
#[derive(Debug, Clone)]
pub struct Pieces {
    size: u64,
    len: u64,
    state: Vec<State>,
    /// What each peer in the spread holds, by source index, as its observe answers said
    /// ([`Pieces::offer`]). The origin is not listed: it holds every piece.
    offers: BTreeMap<usize, Offer>,
    /// Each source's [`key_of`], by index ([`Pieces::name`]); an unnamed source's key is its
    /// index.
    keys: BTreeMap<usize, u64>,
    /// This fetcher's own key.
    me: u64,
    /// Whether other fetchers can learn of us (we serve the blob as a partial mirror while we
    /// fetch it); a fetcher nobody can know of never counts on them knowing it.
    visible: bool,
}

impl Pieces {
    /// Cuts `size` bytes into pieces of `len` (a multiple of [`CHUNK_GROUP`]); `have(range)`
    /// says whether a range is already held locally and verified (a resumed fetch).
    pub fn new(size: u64, len: u64, have: impl Fn(Range<u64>) -> bool) -> Self {
        assert!(
            len > 0 && len.is_multiple_of(CHUNK_GROUP),
            "piece length {len} is not a multiple of the chunk group"
        );
        let n = size.div_ceil(len) as usize;
        let mut pieces = Pieces {
            size,
            len,
            state: vec![State::Missing; n],
            offers: BTreeMap::new(),
            keys: BTreeMap::new(),
            me: 0,
            visible: true,
        };
        for i in 0..n {
            if have(pieces.range(i)) {
                pieces.state[i] = State::Done;
            }
        }
        pieces
    }

    /// Bytes of piece `i`: `start..end`, `end` ≤ the blob's size.
    pub fn range(&self, i: usize) -> Range<u64> {
        let start = i as u64 * self.len;
        start..(start + self.len).min(self.size)
    }

    /// Whether piece `i` is the blob's last (its request runs to the end of the blob, so the
    /// source proves the size with the last chunk).
    pub fn is_last(&self, i: usize) -> bool {
        i + 1 == self.state.len()
    }

    /// This fetcher's key ([`key_of`] its endpoint id), for sharing out the origin's pieces.
    pub fn set_me(&mut self, key: u64) {
        self.me = key;
    }

    /// Whether other fetchers can learn of us (we announce and serve the blob as a partial
    /// mirror while we fetch it). Default: yes.
    pub fn set_visible(&mut self, visible: bool) {
        self.visible = visible;
    }

    /// Whether peer `source` observes us (knows us as one of its sources). Until one does, or
    /// until [`UNAWARE_GRACE`] after it was listed (for a visible fetcher), it may take from
    /// the origin what it would take without us, so we leave that to it. Default: yes.
    pub fn aware(&mut self, source: usize, aware: bool) {
        if let Some(o) = self.offers.get_mut(&source) {
            o.aware = aware;
        }
    }

    /// Source `source`'s key ([`key_of`] its endpoint id).
    pub fn name(&mut self, source: usize, key: u64) {
        self.keys.insert(source, key);
    }

    fn key(&self, source: usize) -> u64 {
        self.keys.get(&source).copied().unwrap_or(source as u64)
    }

    /// Records what peer `source` holds at `now` (`holds(range)`: a partial mirror serves only
    /// the chunk groups it has verified, PROTOCOL §5.3; a complete one holds every range).
    /// Called again as the peer's holdings grow. Returns whether it now holds whole a piece it
    /// did not before.
    pub fn offer<H: Into<Held>>(
        &mut self,
        source: usize,
        now: Instant,
        holds: impl Fn(Range<u64>) -> H,
    ) -> bool {
        let held: Vec<Held> = (0..self.state.len())
            .map(|i| holds(self.range(i)).into())
            .collect();
        let (gained, grew) = match self.offers.get(&source) {
            Some(before) => {
                let gained = (held.iter().zip(&before.held))
                    .any(|(n, b)| *n == Held::Whole && *b != Held::Whole);
                let grew = held.iter().zip(&before.held).any(|(n, b)| n > b);
                (gained, if grew { now } else { before.grew })
            }
            None => (held.contains(&Held::Whole), now),
        };
        let (listed, aware) = self
            .offers
            .get(&source)
            .map_or((now, true), |o| (o.listed, o.aware));
        let offer = Offer {
            held,
            grew,
            listed,
            aware,
        };
        self.offers.insert(source, offer);
        gained
    }

    /// What peer `source` holds changed within the bytes `span` only, at `now`: only the
    /// pieces that overlap it are looked at again (a peer sends a change per verified chunk
    /// group). A peer not listed yet is listed whole.
    pub fn offer_span<H: Into<Held>>(
        &mut self,
        source: usize,
        span: Range<u64>,
        now: Instant,
        holds: impl Fn(Range<u64>) -> H,
    ) {
        if !self.offers.contains_key(&source) {
            self.offer(source, now, holds);
            return;
        }
        let n = self.state.len();
        let first = ((span.start / self.len) as usize).min(n);
        let last = (span.end.div_ceil(self.len).min(n as u64)) as usize;
        let fresh: Vec<Held> = (first..last.max(first))
            .map(|i| holds(self.range(i)).into())
            .collect();
        let offer = self.offers.get_mut(&source).expect("listed above");
        for (i, h) in (first..).zip(fresh) {
            if h > offer.held[i] {
                offer.grew = now;
            }
            offer.held[i] = h;
        }
    }

    /// Peer `source` is gone from the spread (it left, or is reconnecting after a failure):
    /// what it holds stops counting, so the origin may send those pieces itself. A busy peer
    /// is not withdrawn: what it holds is still there, and it is asked again after its back-off.
    pub fn withdraw(&mut self, source: usize) {
        self.offers.remove(&source);
    }

    /// Whether `source` can be asked for piece `i`.
    fn holds(&self, source: Source, i: usize) -> bool {
        match source {
            Source::Origin { .. } => true,
            Source::Peer(s) => self
                .offers
                .get(&s)
                .is_some_and(|o| o.held[i] == Held::Whole),
        }
    }

    /// How many peers other than `source` hold piece `i` whole.
    fn others_holding(&self, source: Source, i: usize) -> usize {
        let me = source.index();
        (self.offers.iter())
            .filter(|(s, o)| **s != me && o.held[i] == Held::Whole)
            .count()
    }

    /// The peers fetching this blob right now (the crowd): partial ones whose holdings grew
    /// within [`FETCHER_IDLE`] of `now`.
    fn fetchers(&self, now: Instant) -> impl Iterator<Item = (usize, &Offer)> {
        self.offers
            .iter()
            .filter(move |(_, o)| {
                now.saturating_duration_since(o.grew) < FETCHER_IDLE
                    && o.held.iter().any(|h| *h != Held::Whole)
            })
            .map(|(s, o)| (*s, o))
    }

    /// How many peers have said what they hold.
    pub fn peers_listed(&self) -> usize {
        self.offers.len()
    }

    /// Whether other fetchers of this blob are in the spread (the partial peers that grew within [`FETCHER_IDLE`]).
    pub fn crowd(&self, now: Instant) -> bool {
        self.fetchers(now).next().is_some()
    }

    /// Whether the origin, yielding at `now`, leaves piece `i` to others: a peer holds it
    /// whole, a fetcher has started it, or in a crowd it is another fetcher's to take
    /// ([`designee`] over this fetcher and the crowd) — or would be, to a fetcher that does
    /// not know us yet (the runner-up, when it does not observe us).
    fn left_to_others(&self, i: usize, now: Instant) -> bool {
        if self.offers.values().any(|o| o.held[i] == Held::Whole) {
            return true;
        }
        let fetchers: Vec<(usize, &Offer)> = self.fetchers(now).collect();
        if fetchers.iter().any(|(_, o)| o.held[i] == Held::Part) {
            return true;
        }
        let crowd = || fetchers.iter().map(|(s, _)| self.key(*s));
        if designee(crowd().chain([self.me]), i) != Some(self.me) {
            return true;
        }
        let Some(runner_up) = designee(crowd(), i) else {
            return false;
        };
        fetchers.iter().any(|(s, o)| {
            self.key(*s) == runner_up
                && !o.aware
                && (!self.visible || now.saturating_duration_since(o.listed) < UNAWARE_GRACE)
        })
    }

    /// The piece `source` asks for next at `now`, now claimed by it, rarest first (PROTOCOL
    /// §5.3): a missing piece it holds, those the fewest peers (other than itself) hold first.
    ///
    /// The origin yields — gets only a piece no peer holds or another fetcher is meant to
    /// take, so it sends what nobody else can and the peers trade
    /// the rest — while other fetchers of the blob are in the spread ([`Pieces::crowd`]: a
    /// crowd on the origin's uplink, which §5 saves) or while it is slow ([`origin_is_slow`]).
    /// Otherwise (complete mirrors only, an origin as fast as they are) it takes its share of
    /// every piece, so two sources fetch in about half the time. A peer that leaves is
    /// withdrawn, and its pieces fall to the origin again.
    ///
    /// Among the rarest, `pick(n)` chooses one of `n` (at random in a fetch: fetchers of one
    /// blob then ask the origin for different pieces and trade them, instead of all walking
    /// the blob in the same order).
    pub fn claim(
        &mut self,
        source: Source,
        now: Instant,
        pick: impl FnOnce(usize) -> usize,
    ) -> Option<usize> {
        let candidates = (0..self.state.len())
            .filter(|&i| self.state[i] == State::Missing && self.holds(source, i))
            .map(|i| (self.others_holding(source, i), i));
        let candidates: Vec<(usize, usize)> = match source {
            Source::Origin { slow, .. } if slow || self.crowd(now) => candidates
                .filter(|(_, i)| !self.left_to_others(*i, now))
                .collect(),
            _ => candidates.collect(),
        };
        let rarest = candidates.iter().map(|(others, _)| *others).min()?;
        let rarest: Vec<usize> = candidates
            .into_iter()
            .filter(|(others, _)| *others == rarest)
            .map(|(_, i)| i)
            .collect();
        let i = rarest[pick(rarest.len()).min(rarest.len() - 1)];
        self.state[i] = State::Claimed(source.index());
        Some(i)
    }

    pub fn done(&mut self, i: usize) {
        self.state[i] = State::Done;
    }

    /// Piece `i` goes back to the pool (its verified bytes stay in the store; asking again
    /// costs at most the part already received).
    pub fn release(&mut self, i: usize) {
        if self.state[i] != State::Done {
            self.state[i] = State::Missing;
        }
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    pub fn missing(&self) -> usize {
        self.state.iter().filter(|s| **s != State::Done).count()
    }

    pub fn is_complete(&self) -> bool {
        self.missing() == 0
    }
}

/// A source in the spread, by its index in the fetch's list of sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The release's origin: it holds every piece. It yields — is asked only for pieces no
    /// peer holds — while it is `slow` ([`origin_is_slow`]) or a partial mirror is in the
    /// spread ([`Pieces::claim`]); otherwise it takes its rarest piece like a peer.
    Origin { index: usize, slow: bool },
    /// A mirror: it is asked only for the pieces it has said it holds ([`Pieces::offer`]).
    Peer(usize),
}

impl Source {
    pub fn index(self) -> usize {
        match self {
            Source::Origin { index, .. } | Source::Peer(index) => index,
        }
    }
}

/// The origin counts as slow while it delivers to us at less than this share of the fastest
/// peer's rate.
pub const ORIGIN_SLOW_BELOW: f64 = 0.5;

/// Whether the origin is clearly slower than the fastest peer (rates in bytes/s over the last
/// pieces): what an origin shared by many fetchers looks like from each of them, while its
/// peers serve few. Unknown rates: it is not.
pub fn origin_is_slow(origin_rate: Option<f64>, fastest_peer_rate: Option<f64>) -> bool {
    matches!((origin_rate, fastest_peer_rate), (Some(o), Some(p)) if o < ORIGIN_SLOW_BELOW * p)
}

/// What a source's worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Claim another piece.
    Claim,
    /// Ask again after this back-off (the source was busy).
    Wait(Duration),
    /// Leave the spread; `bad` when the source sent bytes that do not verify.
    Stop { reason: String, bad: bool },
}

/// One source's standing in the spread.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    busy_in_a_row: u32,
    failures: u32,
}

impl Worker {
    /// What to do after a piece request ended: `Ok` with the piece verified, or a failure.
    /// `jitter` (0.5–1.5, drawn by the caller) spreads the busy back-off.
    pub fn on_outcome(&mut self, outcome: Result<(), Failure>, jitter: f64) -> Next {
        match outcome {
            Ok(()) => {
                self.busy_in_a_row = 0;
                Next::Claim
            }
            Err(Failure::Busy) => {
                self.busy_in_a_row += 1;
                if self.busy_in_a_row >= MAX_BUSY_IN_A_ROW {
                    Next::Stop {
                        reason: format!("busy {MAX_BUSY_IN_A_ROW} times in a row"),
                        bad: false,
                    }
                } else {
                    Next::Wait(busy_backoff(self.busy_in_a_row, jitter))
                }
            }
            Err(bad @ Failure::Corrupt(_)) => Next::Stop {
                reason: bad.describe(),
                bad: true,
            },
            Err(other) => {
                self.failures += 1;
                if self.failures >= MAX_FAILURES {
                    Next::Stop {
                        reason: other.describe(),
                        bad: false,
                    }
                } else {
                    Next::Claim
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_chunk_group_aligned_and_cover_the_blob_exactly() {
        for (size, sources) in [(600_000u64, 2), (1 << 30, 2), (10_000_000, 3), (524_288, 4)] {
            let len = piece_len(size, sources);
            assert!(len.is_multiple_of(CHUNK_GROUP), "{size}");
            assert!((MIN_PIECE..=MAX_PIECE).contains(&len), "{size}: {len}");
            let p = Pieces::new(size, len, |_| false);
            let mut next = 0;
            for i in 0..p.len() {
                let r = p.range(i);
                assert_eq!(
                    r.start, next,
                    "{size}: piece {i} starts where the last ended"
                );
                assert!(r.start.is_multiple_of(CHUNK_GROUP));
                assert!(r.end > r.start);
                next = r.end;
            }
            assert_eq!(next, size, "the pieces end at the blob's end");
            assert!(p.is_last(p.len() - 1) && !p.is_last(0));
        }
        assert_eq!(piece_len(1 << 30, 2), MAX_PIECE);
        assert_eq!(piece_len(600_000, 2), MIN_PIECE);
    }

    /// One fixed moment: these tests do not let time pass unless they say so.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    /// Past [`FETCHER_IDLE`]: a peer that has not grown since [`t0`] is no fetcher now.
    fn later() -> Instant {
        t0() + FETCHER_IDLE
    }

    /// A key that takes piece `i` from the origin against the keys `others`.
    fn key_taking(others: &[u64], i: usize) -> u64 {
        (1000..)
            .find(|k| designee(others.iter().copied().chain([*k]), i) == Some(*k))
            .expect("some key wins")
    }

    /// The first candidate (a fetch picks at random).
    fn first(_: usize) -> usize {
        0
    }

    const ORIGIN: Source = Source::Origin {
        index: 0,
        slow: true,
    };
    const SHARING_ORIGIN: Source = Source::Origin {
        index: 0,
        slow: false,
    };

    #[test]
    fn claims_go_to_missing_pieces_and_released_ones_come_back() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |r| r.start == MIN_PIECE);
        assert_eq!(p.missing(), 3, "a piece held locally is not fetched again");
        let (origin, peer) = (ORIGIN, Source::Peer(1));
        p.offer(1, t0(), |_| true);
        assert_eq!(p.claim(peer, t0(), first), Some(0));
        assert_eq!(
            p.claim(origin, t0(), first),
            None,
            "the origin leaves to a peer what the peer holds"
        );
        assert_eq!(p.claim(peer, t0(), first), Some(2));
        p.withdraw(1);
        assert_eq!(
            p.claim(origin, t0(), first),
            Some(3),
            "a withdrawn peer's pieces fall to the origin"
        );
        assert_eq!(
            p.claim(origin, t0(), first),
            None,
            "every piece is done or claimed"
        );
        p.release(2);
        assert_eq!(
            p.claim(origin, t0(), first),
            Some(2),
            "a released piece is claimed again"
        );
        for i in [0, 2, 3] {
            p.done(i);
        }
        p.release(0);
        assert!(
            p.is_complete(),
            "releasing a finished piece does not undo it"
        );
        assert_eq!(p.claim(origin, t0(), first), None);
    }

    #[test]
    fn a_partial_source_claims_only_the_pieces_it_has() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |_| false);
        let peer = Source::Peer(1);
        assert_eq!(
            p.claim(peer, t0(), first),
            None,
            "a peer that has said nothing is asked nothing"
        );
        // The partial mirror has verified the second half only.
        assert!(p.offer(1, t0(), |r| r.start >= 2 * MIN_PIECE));
        assert_eq!(p.claim(peer, t0(), first), Some(2));
        // (Once the mirror has stopped growing it is no fetcher: the origin yields to what
        // it holds only, not to a share of its own.)
        assert_eq!(
            p.claim(ORIGIN, later(), first),
            Some(0),
            "the origin takes what no peer holds"
        );
        assert_eq!(p.claim(peer, t0(), first), Some(3));
        assert_eq!(
            p.claim(peer, t0(), first),
            None,
            "piece 1 is missing but the mirror does not have it"
        );
        assert!(
            !p.offer(1, t0(), |r| r.start >= 2 * MIN_PIECE),
            "the same holdings again are no news"
        );
        assert!(
            p.offer(1, t0(), |r| r.start >= MIN_PIECE),
            "it got piece 1 meanwhile"
        );
        assert_eq!(p.claim(peer, t0(), first), Some(1));
    }

    #[test]
    fn a_change_within_a_span_updates_only_the_pieces_it_touches() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |_| false);
        let peer = Source::Peer(1);
        // Not listed yet: listed whole from what it holds.
        p.offer_span(1, 0..1, t0(), |r| r.start == 0);
        assert_eq!(p.claim(peer, t0(), first), Some(0));
        // It verified piece 2 (the span covers piece 2 only); `holds` would say yes for piece 3
        // too, but piece 3 is outside the span and stays as it was.
        p.offer_span(1, 2 * MIN_PIECE..3 * MIN_PIECE, t0(), |r| {
            r.start >= 2 * MIN_PIECE
        });
        assert_eq!(p.claim(peer, t0(), first), Some(2));
        assert_eq!(p.claim(peer, t0(), first), None);
        // A span running to the end of the blob (an open range) is held to the last piece.
        p.offer_span(1, 3 * MIN_PIECE..u64::MAX, t0(), |_| true);
        assert_eq!(p.claim(peer, t0(), first), Some(3));
    }

    #[test]
    fn the_origin_sends_only_what_no_peer_holds_and_peers_the_rarest_first() {
        let mut p = Pieces::new(6 * MIN_PIECE, MIN_PIECE, |_| false);
        let piece = |i: u64| move |r: Range<u64>| r.start / MIN_PIECE == i;
        // Peer 1 holds pieces 0 and 1, peer 2 pieces 1 and 2; nobody holds 3, 4, 5.
        p.offer(1, t0(), |r| piece(0)(r.clone()) || piece(1)(r));
        p.offer(2, t0(), |r| piece(1)(r.clone()) || piece(2)(r));
        let mut origin_got = Vec::new();
        // Neither peer is fetching any more (they stopped growing): no crowd to share with.
        while let Some(i) = p.claim(ORIGIN, later(), |n| n - 1) {
            origin_got.push(i);
        }
        origin_got.sort();
        assert_eq!(origin_got, [3, 4, 5], "only the pieces no peer holds");
        assert_eq!(
            p.claim(Source::Peer(1), t0(), first),
            Some(0),
            "peer 1: piece 0 is held by no other peer, piece 1 by peer 2 too"
        );
        assert_eq!(p.claim(Source::Peer(2), t0(), first), Some(2));
        assert_eq!(p.claim(Source::Peer(1), t0(), first), Some(1));
        assert_eq!(p.claim(Source::Peer(2), t0(), first), None);
    }

    #[test]
    fn beside_complete_mirrors_only_a_fast_origin_takes_its_share_rarest_first() {
        let mut p = Pieces::new(3 * MIN_PIECE, MIN_PIECE, |_| false);
        // Two complete mirrors; piece 2 is done here already.
        p.offer(1, t0(), |_| true);
        p.offer(2, t0(), |_| true);
        p.done(2);
        assert!(!p.crowd(t0()), "complete mirrors are no crowd");
        assert_eq!(p.claim(ORIGIN, t0(), first), None, "a slow origin yields");
        assert_eq!(
            p.claim(SHARING_ORIGIN, t0(), first),
            Some(0),
            "a fast one takes a share"
        );
        assert_eq!(p.claim(Source::Peer(1), t0(), first), Some(1));
    }

    #[test]
    fn a_partial_mirror_in_the_spread_makes_even_a_fast_origin_yield() {
        let mut p = Pieces::new(3 * MIN_PIECE, MIN_PIECE, |_| false);
        // Peers 1 and 2 hold piece 0, peer 1 piece 1 too; nobody holds piece 2.
        p.offer(1, t0(), |r| r.start < 2 * MIN_PIECE);
        p.offer(2, t0(), |r| r.start < MIN_PIECE);
        p.set_me(key_taking(&[1, 2], 2));
        assert!(p.crowd(t0()));
        assert_eq!(
            p.claim(SHARING_ORIGIN, t0(), first),
            Some(2),
            "what no peer holds"
        );
        assert_eq!(
            p.claim(SHARING_ORIGIN, t0(), first),
            None,
            "and nothing else"
        );
        p.done(2);
        p.withdraw(1);
        p.withdraw(2);
        assert!(!p.crowd(t0()));
        assert_eq!(
            p.claim(SHARING_ORIGIN, t0(), first),
            Some(0),
            "the crowd left"
        );
    }

    #[test]
    fn a_crowd_shares_out_the_origins_pieces_once_each() {
        // Four fetchers start together, each sees the other three (nothing held yet) and asks
        // the origin for pieces until it has none left to ask: every piece is asked for by
        // exactly one of them.
        let ids = ["a", "b", "c", "d"];
        let mut asked = vec![0u32; 64];
        for (me, id) in ids.iter().enumerate() {
            let mut p = Pieces::new(64 * MIN_PIECE, MIN_PIECE, |_| false);
            p.set_me(key_of(id));
            for (s, other) in ids.iter().enumerate().filter(|(s, _)| *s != me) {
                p.name(s + 1, key_of(other));
                p.offer(s + 1, t0(), |_| false);
            }
            let mut mine = 0;
            while let Some(i) = p.claim(SHARING_ORIGIN, t0(), first) {
                asked[i] += 1;
                mine += 1;
            }
            assert!(mine > 4, "{id} took {mine} of 64: a share, not none");
        }
        assert!(asked.iter().all(|n| *n == 1), "{asked:?}");
    }

    #[test]
    fn a_piece_another_fetcher_has_started_is_left_to_it_until_it_stops() {
        let mut p = Pieces::new(2 * MIN_PIECE, MIN_PIECE, |_| false);
        // Piece 0 is ours to take from the origin, but peer 1 has begun it (some chunk groups).
        p.set_me(key_taking(&[1], 0));
        p.offer(1, t0(), |r: Range<u64>| {
            if r.start == 0 {
                Held::Part
            } else {
                Held::Nothing
            }
        });
        assert_ne!(p.claim(SHARING_ORIGIN, t0(), first), Some(0));
        // It stopped growing: it is no fetcher now, and what it began does not count.
        let mut q = p.clone();
        q.release(1);
        assert_eq!(q.claim(SHARING_ORIGIN, later(), first), Some(0));
        // Growing again (piece 1 begun) it is back in the crowd.
        q.release(0);
        q.offer_span(1, MIN_PIECE..2 * MIN_PIECE, later(), |_| Held::Part);
        assert!(q.crowd(later()));
        assert_eq!(q.claim(SHARING_ORIGIN, later(), first), None);
    }

    #[test]
    fn a_fetcher_that_does_not_know_us_yet_keeps_what_it_would_take_without_us() {
        let mut p = Pieces::new(64 * MIN_PIECE, MIN_PIECE, |_| false);
        p.set_me(key_of("late"));
        p.name(1, key_of("early"));
        p.offer(1, t0(), |_| false);
        let take_all = |p: &Pieces, now| {
            let mut p = p.clone();
            let mut got = Vec::new();
            while let Some(i) = p.claim(SHARING_ORIGIN, now, first) {
                got.push(i);
            }
            got
        };
        let knows_us = {
            let mut q = p.clone();
            q.aware(1, true);
            take_all(&q, t0())
        };
        p.aware(1, false);
        // The early fetcher takes every piece from the origin until it learns of us: our share
        // waits for it to observe us.
        assert_eq!(take_all(&p, t0()), Vec::<usize>::new());
        assert!(!knows_us.is_empty());
        // A visible fetcher assumes it is known after the grace (the peer keeps growing).
        let mut q = p.clone();
        q.offer_span(1, 0..MIN_PIECE, t0() + UNAWARE_GRACE, |r: Range<u64>| {
            Held::from(r.start == 0)
        });
        let after = take_all(&q, t0() + UNAWARE_GRACE);
        assert!(!after.is_empty() && !after.contains(&0));
        // One nobody can learn of (not a partial mirror) never does.
        q.set_visible(false);
        assert!(take_all(&q, t0() + UNAWARE_GRACE).is_empty());
    }

    #[test]
    fn a_fetcher_that_leaves_hands_its_share_to_the_rest() {
        let mut p = Pieces::new(32 * MIN_PIECE, MIN_PIECE, |_| false);
        p.set_me(key_of("me"));
        p.name(1, key_of("peer"));
        p.offer(1, t0(), |_| false);
        let mut first_share = 0;
        while p.claim(SHARING_ORIGIN, t0(), first).is_some() {
            first_share += 1;
        }
        assert!(first_share < 32, "the peer has a share");
        p.withdraw(1);
        assert!(!p.crowd(t0()));
        let mut rest = 0;
        while p.claim(SHARING_ORIGIN, t0(), first).is_some() {
            rest += 1;
        }
        assert_eq!(first_share + rest, 32, "the peer's share falls to us");
    }

    #[test]
    fn the_origin_is_slow_only_when_clearly_slower_than_a_peer() {
        assert!(
            !origin_is_slow(None, Some(10e6)),
            "its rate is not known yet"
        );
        assert!(!origin_is_slow(Some(1e6), None), "no peer has a rate yet");
        assert!(!origin_is_slow(Some(40e6), Some(40e6)), "as fast");
        assert!(!origin_is_slow(Some(6e6), Some(10e6)));
        assert!(origin_is_slow(Some(2e6), Some(6.7e6)));
    }

    #[test]
    fn fetchers_starting_together_ask_the_origin_for_different_pieces() {
        // Two fetchers with no peers yet, picking at random (here: two fixed draws), take
        // different first pieces from the origin; walking in order, both would take piece 0.
        let mut a = Pieces::new(64 * MIN_PIECE, MIN_PIECE, |_| false);
        let mut b = a.clone();
        let (ia, ib) = (
            a.claim(ORIGIN, t0(), |n| n / 3),
            b.claim(ORIGIN, t0(), |n| 2 * n / 3),
        );
        assert_ne!(ia, ib);
        // A `pick` beyond the candidates is held to the last one rather than panicking.
        assert_eq!(a.claim(ORIGIN, t0(), |n| n + 5), Some(63));
    }

    #[test]
    fn small_blobs_and_single_sources_are_not_spread() {
        assert!(!worth_spreading(1 << 30, 1));
        assert!(!worth_spreading(2 * MIN_PIECE - 1, 4));
        assert!(worth_spreading(2 * MIN_PIECE, 2));
    }

    #[test]
    fn bad_bytes_stop_a_source_at_once_and_other_failures_on_the_second() {
        let mut w = Worker::default();
        assert!(matches!(
            w.on_outcome(Err(Failure::Corrupt("leaf".into())), 1.0),
            Next::Stop { bad: true, .. }
        ));
        let mut w = Worker::default();
        assert_eq!(w.on_outcome(Err(Failure::Stalled), 1.0), Next::Claim);
        assert_eq!(w.on_outcome(Ok(()), 1.0), Next::Claim);
        assert_eq!(
            w.on_outcome(Err(Failure::Transfer("reset".into())), 1.0),
            Next::Stop {
                reason: "transfer failed: reset".into(),
                bad: false
            },
            "failures add up across pieces: a flaky source leaves"
        );
    }

    #[test]
    fn busy_backs_off_doubling_resets_on_progress_and_ends_after_the_limit() {
        let mut w = Worker::default();
        assert_eq!(
            w.on_outcome(Err(Failure::Busy), 1.0),
            Next::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            w.on_outcome(Err(Failure::Busy), 1.0),
            Next::Wait(Duration::from_secs(2))
        );
        assert_eq!(w.on_outcome(Ok(()), 1.0), Next::Claim);
        assert_eq!(
            w.on_outcome(Err(Failure::Busy), 1.0),
            Next::Wait(Duration::from_secs(1)),
            "a verified piece resets the back-off"
        );
        for _ in 1..MAX_BUSY_IN_A_ROW - 1 {
            assert!(matches!(
                w.on_outcome(Err(Failure::Busy), 1.0),
                Next::Wait(_)
            ));
        }
        assert!(matches!(
            w.on_outcome(Err(Failure::Busy), 1.0),
            Next::Stop { bad: false, .. }
        ));
    }
}
