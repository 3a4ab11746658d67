//! One blob from several sources at once (PROTOCOL §5.3, v2), as pure logic (sans-IO).
//!
//! A blob whose size the manifest states is cut into *pieces*: byte ranges aligned to
//! iroh-blobs' 16 KiB chunk groups, the unit the BLAKE3 tree verifies, so every piece is
//! verified on its own and written beside the others. Each source works through pieces one at
//! a time: it claims the next piece nobody holds, asks for exactly that range, and marks it
//! done or gives it back. Fast sources thus take more pieces and slow ones fewer, without any
//! rate bookkeeping; a stalled request gives its piece back to the others.
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

use std::{ops::Range, time::Duration};

use crate::select::{busy_backoff, Failure, MAX_BUSY_IN_A_ROW};

/// iroh-blobs verifies and stores 16 KiB chunk groups (BLAKE3 chunks of 1 KiB, block size 4).
pub const CHUNK_GROUP: u64 = 16 * 1024;
/// The smallest piece worth a request of its own.
pub const MIN_PIECE: u64 = 256 * 1024;
/// The largest piece: small enough that a stalled source holds little, large enough that the
/// per-request cost (a stream, a header, the tree's parent hashes) stays small.
pub const MAX_PIECE: u64 = 4 * 1024 * 1024;
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

/// The pieces of one blob and who holds which.
#[derive(Debug, Clone)]
pub struct Pieces {
    size: u64,
    len: u64,
    state: Vec<State>,
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

    /// The next piece nobody holds, now held by `source`.
    pub fn claim(&mut self, source: usize) -> Option<usize> {
        self.claim_within(source, |_| true)
    }

    /// The next piece nobody holds that the source has (`offers(range)`: a partial mirror
    /// serves only the chunk groups it has verified, PROTOCOL §5.3), now held by `source`.
    pub fn claim_within(
        &mut self,
        source: usize,
        offers: impl Fn(Range<u64>) -> bool,
    ) -> Option<usize> {
        let i = (0..self.state.len())
            .find(|&i| self.state[i] == State::Missing && offers(self.range(i)))?;
        self.state[i] = State::Claimed(source);
        Some(i)
    }

    /// Whether a piece nobody holds is one the source has (what a partial mirror waits for).
    pub fn any_missing_within(&self, offers: impl Fn(Range<u64>) -> bool) -> bool {
        (0..self.state.len()).any(|i| self.state[i] == State::Missing && offers(self.range(i)))
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

    #[test]
    fn claims_go_to_missing_pieces_and_released_ones_come_back() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |r| r.start == MIN_PIECE);
        assert_eq!(p.missing(), 3, "a piece held locally is not fetched again");
        assert_eq!(p.claim(0), Some(0));
        assert_eq!(p.claim(1), Some(2));
        assert_eq!(p.claim(0), Some(3));
        assert_eq!(p.claim(1), None, "every piece is held or claimed");
        p.release(2);
        assert_eq!(p.claim(1), Some(2), "a released piece is claimed again");
        for i in [0, 2, 3] {
            p.done(i);
        }
        p.release(0);
        assert!(
            p.is_complete(),
            "releasing a finished piece does not undo it"
        );
        assert_eq!(p.claim(0), None);
    }

    #[test]
    fn a_partial_source_claims_only_the_pieces_it_has() {
        let mut p = Pieces::new(4 * MIN_PIECE, MIN_PIECE, |_| false);
        // The partial mirror has verified the second half only.
        let offers = |r: Range<u64>| r.start >= 2 * MIN_PIECE;
        assert_eq!(p.claim_within(1, offers), Some(2));
        assert_eq!(
            p.claim(0),
            Some(0),
            "the origin takes the first missing piece"
        );
        assert_eq!(p.claim_within(1, offers), Some(3));
        assert_eq!(
            p.claim_within(1, offers),
            None,
            "piece 1 is missing but the mirror does not have it"
        );
        assert!(!p.any_missing_within(offers));
        assert!(p.any_missing_within(|_| true));
        p.release(3);
        assert!(p.any_missing_within(offers), "a piece it has came back");
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
