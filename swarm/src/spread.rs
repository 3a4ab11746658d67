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
//! mirrors), or the origin is clearly slower than the peers, the origin yields: it is asked only
//! for pieces no peer holds, so its uplink sends each piece about once, not once per fetcher.
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

use std::{collections::BTreeMap, ops::Range, time::Duration};

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
/// Sources asked at once for one blob; further sources replace those that drop out.
pub const MAX_SOURCES_AT_ONCE: usize = 4;
/// Failures other than busy and bad bytes after which a source leaves the spread.
const MAX_FAILURES: u32 = 2;

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

/// The pieces of one blob, who is fetching which, and which peers hold which.
#[derive(Debug, Clone)]
pub struct Pieces {
    size: u64,
    len: u64,
    state: Vec<State>,
    /// The pieces each peer in the spread holds, by source index, as its observe answers said
    /// ([`Pieces::offer`]). The origin is not listed: it holds every piece.
    offers: BTreeMap<usize, Vec<bool>>,
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

    /// Records what peer `source` holds (`holds(range)`: a partial mirror serves only the chunk
    /// groups it has verified, PROTOCOL §5.3; a complete one holds every range). Called again
    /// as the peer's holdings grow. Returns whether it now holds a piece it did not before.
    pub fn offer(&mut self, source: usize, holds: impl Fn(Range<u64>) -> bool) -> bool {
        let now: Vec<bool> = (0..self.state.len())
            .map(|i| holds(self.range(i)))
            .collect();
        let gained = match self.offers.get(&source) {
            Some(before) => now.iter().zip(before).any(|(n, b)| *n && !b),
            None => now.iter().any(|n| *n),
        };
        self.offers.insert(source, now);
        gained
    }

    /// What peer `source` holds changed within the bytes `span` only: only the pieces that
    /// overlap it are looked at again (a peer sends a change per verified chunk group). A peer
    /// not listed yet is listed whole.
    pub fn offer_span(
        &mut self,
        source: usize,
        span: Range<u64>,
        holds: impl Fn(Range<u64>) -> bool,
    ) {
        if !self.offers.contains_key(&source) {
            self.offer(source, holds);
            return;
        }
        let n = self.state.len();
        let first = ((span.start / self.len) as usize).min(n);
        let last = (span.end.div_ceil(self.len).min(n as u64)) as usize;
        let now: Vec<bool> = (first..last.max(first))
            .map(|i| holds(self.range(i)))
            .collect();
        let have = self.offers.get_mut(&source).expect("listed above");
        for (i, h) in (first..).zip(now) {
            have[i] = h;
        }
    }

    /// Peer `source` is no longer asked for pieces (it left the spread, backs off while busy,
    /// or is reconnecting after a failure): what it holds stops counting, so the origin may
    /// send those pieces itself.
    pub fn withdraw(&mut self, source: usize) {
        self.offers.remove(&source);
    }

    /// Whether `source` can be asked for piece `i`.
    fn holds(&self, source: Source, i: usize) -> bool {
        match source {
            Source::Origin { .. } => true,
            Source::Peer(s) => self.offers.get(&s).is_some_and(|o| o[i]),
        }
    }

    /// How many peers other than `source` hold piece `i`.
    fn others_holding(&self, source: Source, i: usize) -> usize {
        let me = source.index();
        self.offers
            .iter()
            .filter(|(s, o)| **s != me && o[i])
            .count()
    }

    /// The piece `source` asks for next, now claimed by it, rarest first (PROTOCOL §5.3): a
    /// missing piece it holds, those the fewest peers (other than itself) hold first.
    ///
    /// The origin yields — gets only a piece no peer in the spread holds, so it sends what
    /// nobody else can and the peers trade the rest — while a partial mirror is in the spread
    /// (another fetcher of this blob right now: a crowd on the origin's uplink, which §5 saves)
    /// or while it is slow ([`origin_is_slow`]). Otherwise (complete mirrors only, an origin as
    /// fast as they are) it takes its share of every piece, so two sources fetch in about half
    /// the time. A peer that leaves or backs off is withdrawn, and its pieces fall to the origin
    /// again.
    ///
    /// Among the rarest, `pick(n)` chooses one of `n` (at random in a fetch: fetchers of one
    /// blob then ask the origin for different pieces and trade them, instead of all walking
    /// the blob in the same order).
    pub fn claim(&mut self, source: Source, pick: impl FnOnce(usize) -> usize) -> Option<usize> {
        let candidates = (0..self.state.len())
            .filter(|&i| self.state[i] == State::Missing && self.holds(source, i))
            .map(|i| (self.others_holding(source, i), i));
        let candidates: Vec<(usize, usize)> = match source {
            Source::Origin { slow, .. } if slow || self.crowd() => {
                candidates.filter(|(others, _)| *others == 0).collect()
            }
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

    /// Whether a partial mirror is in the spread: a peer that holds some missing piece and
    /// not all of them.
    fn crowd(&self) -> bool {
        self.offers.values().any(|holds| {
            let missing = |i: &usize| self.state[*i] != State::Done;
            let (mut some, mut all) = (false, true);
            for i in (0..holds.len()).filter(missing) {
                some |= holds[i];
                all &= holds[i];
            }
            some && !all
        })
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
        p.offer(1, |_| true);
        assert_eq!(p.claim(peer, first), Some(0));
        assert_eq!(
            p.claim(origin, first),
            None,
            "the origin leaves to a peer what the peer holds"
        );
        assert_eq!(p.claim(peer, first), Some(2));
        p.withdraw(1);
        assert_eq!(
            p.claim(origin, first),
            Some(3),
            "a withdrawn peer's pieces fall to the origin"
        );
        assert_eq!(
            p.claim(origin, first),
            None,
            "every piece is done or claimed"
        );
        p.release(2);
        assert_eq!(
            p.claim(origin, first),
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
        assert_eq!(p.claim(origin, first), None);
    }

    #[test]
    fn a_partial_source_claims_only_the_pieces_it_has() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |_| false);
        let peer = Source::Peer(1);
        assert_eq!(
            p.claim(peer, first),
            None,
            "a peer that has said nothing is asked nothing"
        );
        // The partial mirror has verified the second half only.
        assert!(p.offer(1, |r| r.start >= 2 * MIN_PIECE));
        assert_eq!(p.claim(peer, first), Some(2));
        assert_eq!(
            p.claim(ORIGIN, first),
            Some(0),
            "the origin takes what no peer holds"
        );
        assert_eq!(p.claim(peer, first), Some(3));
        assert_eq!(
            p.claim(peer, first),
            None,
            "piece 1 is missing but the mirror does not have it"
        );
        assert!(
            !p.offer(1, |r| r.start >= 2 * MIN_PIECE),
            "the same holdings again are no news"
        );
        assert!(
            p.offer(1, |r| r.start >= MIN_PIECE),
            "it got piece 1 meanwhile"
        );
        assert_eq!(p.claim(peer, first), Some(1));
    }

    #[test]
    fn a_change_within_a_span_updates_only_the_pieces_it_touches() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |_| false);
        let peer = Source::Peer(1);
        // Not listed yet: listed whole from what it holds.
        p.offer_span(1, 0..1, |r| r.start == 0);
        assert_eq!(p.claim(peer, first), Some(0));
        // It verified piece 2 (the span covers piece 2 only); `holds` would say yes for piece 3
        // too, but piece 3 is outside the span and stays as it was.
        p.offer_span(1, 2 * MIN_PIECE..3 * MIN_PIECE, |r| {
            r.start >= 2 * MIN_PIECE
        });
        assert_eq!(p.claim(peer, first), Some(2));
        assert_eq!(p.claim(peer, first), None);
        // A span running to the end of the blob (an open range) is held to the last piece.
        p.offer_span(1, 3 * MIN_PIECE..u64::MAX, |_| true);
        assert_eq!(p.claim(peer, first), Some(3));
    }

    #[test]
    fn the_origin_sends_only_what_no_peer_holds_and_peers_the_rarest_first() {
        let mut p = Pieces::new(6 * MIN_PIECE, MIN_PIECE, |_| false);
        let piece = |i: u64| move |r: Range<u64>| r.start / MIN_PIECE == i;
        // Peer 1 holds pieces 0 and 1, peer 2 pieces 1 and 2; nobody holds 3, 4, 5.
        p.offer(1, |r| piece(0)(r.clone()) || piece(1)(r));
        p.offer(2, |r| piece(1)(r.clone()) || piece(2)(r));
        let mut origin_got = Vec::new();
        while let Some(i) = p.claim(ORIGIN, |n| n - 1) {
            origin_got.push(i);
        }
        origin_got.sort();
        assert_eq!(origin_got, [3, 4, 5], "only the pieces no peer holds");
        assert_eq!(
            p.claim(Source::Peer(1), first),
            Some(0),
            "peer 1: piece 0 is held by no other peer, piece 1 by peer 2 too"
        );
        assert_eq!(p.claim(Source::Peer(2), first), Some(2));
        assert_eq!(p.claim(Source::Peer(1), first), Some(1));
        assert_eq!(p.claim(Source::Peer(2), first), None);
    }

    #[test]
    fn beside_complete_mirrors_only_a_fast_origin_takes_its_share_rarest_first() {
        let mut p = Pieces::new(3 * MIN_PIECE, MIN_PIECE, |_| false);
        // Two complete mirrors; piece 2 is done here already.
        p.offer(1, |_| true);
        p.offer(2, |_| true);
        p.done(2);
        assert!(!p.crowd(), "complete mirrors are no crowd");
        assert_eq!(p.claim(ORIGIN, first), None, "a slow origin yields");
        assert_eq!(
            p.claim(SHARING_ORIGIN, first),
            Some(0),
            "a fast one takes a share"
        );
        assert_eq!(p.claim(Source::Peer(1), first), Some(1));
    }

    #[test]
    fn a_partial_mirror_in_the_spread_makes_even_a_fast_origin_yield() {
        let mut p = Pieces::new(3 * MIN_PIECE, MIN_PIECE, |_| false);
        // Peers 1 and 2 hold piece 0, peer 1 piece 1 too; nobody holds piece 2.
        p.offer(1, |r| r.start < 2 * MIN_PIECE);
        p.offer(2, |r| r.start < MIN_PIECE);
        assert!(p.crowd());
        assert_eq!(
            p.claim(SHARING_ORIGIN, first),
            Some(2),
            "what no peer holds"
        );
        assert_eq!(p.claim(SHARING_ORIGIN, first), None, "and nothing else");
        p.done(2);
        p.withdraw(1);
        p.withdraw(2);
        assert!(!p.crowd());
        assert_eq!(p.claim(SHARING_ORIGIN, first), Some(0), "the crowd left");
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
        let (ia, ib) = (a.claim(ORIGIN, |n| n / 3), b.claim(ORIGIN, |n| 2 * n / 3));
        assert_ne!(ia, ib);
        // A `pick` beyond the candidates is held to the last one rather than panicking.
        assert_eq!(a.claim(ORIGIN, |n| n + 5), Some(63));
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
