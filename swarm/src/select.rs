//! Source selection for one fetch, as a pure state machine (sans-IO).
//!
//! PROTOCOL §5: the origin is asked first and used while it answers; peers (in the order the
//! caller gives, most trusted first) only when the origin cannot be reached, stalls or is too
//! slow; a source that sends bytes that do not verify is dropped for the rest of the fetch. The
//! driver in [`crate::fetch`] feeds this machine events and the current time, and does what it
//! says; keeping time and I/O out of here makes every rule unit-testable.
//!
//! Two rules end an attempt that is still connected, both measured on *verified* bytes:
//! - **stall**: no verified progress for the stall timeout;
//! - **minimum rate** (when a floor is set): once the attempt has been transferring for a full
//!   window (the stall timeout), the bytes verified within the last window must be at least
//!   `floor × window`. A source that trickles (a chunk group now and then, just often enough
//!   never to stall) is abandoned as [`Failure::TooSlow`]. A source that *finishes* is never
//!   judged: one that would have met the floor but had less than `floor × window` left simply
//!   completes inside the window. A slow source is not evidence of malice: it is not a bad
//!   source, and it is retried as a last resort (below).
//!
//! Order of attempts: every source once, in order (origin first); then a second chance for
//! sources that failed for other reasons (unreachable, stalled, reset), origin first; then, as
//! a last resort, the sources found too slow, fastest measured first, **with the rate floor
//! lifted** (only the stall rule applies): when nobody faster has the blob, a slow origin's
//! bytes beat no blob, and a client whose own link is below the floor still completes. Each
//! source gets at most `max_attempts` attempts per fetch, so the fetch always ends: by
//! completion, or by [`Action::GiveUp`] with every attempt's failure recorded. The verified
//! bytes of every attempt are kept, so each attempt (and a later fetch) resumes where the last
//! one stopped.
//!
//! **Busy** (PROTOCOL §5.2, v2): a source that refuses with busy (every upload slot in use) has
//! not failed. Its attempt is given back, and it is retried after an exponential back-off (1 s
//! doubling to 60 s, ±50 % jitter: [`busy_backoff`]). Meanwhile the other sources are used;
//! when nothing else is left the driver is told to [`Action::Wait`] until the earliest busy
//! source may be asked again, so a fetch whose only source is a busy origin still completes.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Rate samples per stall window (see [`Selector::on_progress`]).
const RATE_BUCKETS: u32 = 32;
/// Whether a source is the manifest's origin or a mirror peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceRole {
    Origin,
    Peer,
}

/// Why an attempt on a source ended without completing the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be established (or timed out).
    Unreachable(String),
    /// No verified progress for the stall timeout.
    Stalled,
    /// Verified throughput over the last `window` was below the floor (both in bytes/s).
    TooSlow {
        rate: u64,
        floor: u64,
        window: Duration,
    },
    /// The source sent bytes that did not verify against the expected hash. Final for this fetch.
    Corrupt(String),
    /// Any other transfer error (reset, closed, does not have the blob...).
    Transfer(String),
    /// The source refused with busy (QUIC code 2). Not a failed attempt: report it with
    /// [`Selector::on_busy`] (given to [`Selector::on_failure`] it counts as a failure).
    Busy,
}

impl Failure {
    /// The failure for people (and for reports).
    pub fn describe(&self) -> String {
        match self {
            Failure::Unreachable(r) => format!("unreachable: {r}"),
            Failure::Stalled => "stalled: no verified progress within the stall timeout".into(),
            Failure::TooSlow {
                rate,
                floor,
                window,
            } => format!(
                "too slow: {} verified over the last {:.1} s, below the minimum rate of {}",
                rate_str(*rate),
                window.as_secs_f64(),
                rate_str(*floor)
            ),
            Failure::Corrupt(r) => format!("sent bytes that do not verify: {r}"),
            Failure::Transfer(r) => format!("transfer failed: {r}"),
            Failure::Busy => "busy: every upload slot is in use".into(),
        }
    }
}

/// Bytes per second for people: `512 B/s`, `20.0 KiB/s`, `1.5 MiB/s`.
fn rate_str(bytes_per_sec: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes_per_sec as f64;
    if b < KIB {
        format!("{bytes_per_sec} B/s")
    } else if b < KIB * KIB {
        format!("{:.1} KiB/s", b / KIB)
    } else {
        format!("{:.1} MiB/s", b / (KIB * KIB))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Active,
    Failed,
    /// The last attempt was below the rate floor; retried only as a last resort.
    Slow,
    Bad,
    /// Answered busy; asked again from this time on.
    Busy(Instant),
}

#[derive(Debug, Clone)]
struct Source {
    id: String,
    role: SourceRole,
    status: Status,
    attempts: u32,
    bytes: u64,
    /// Measured rate (bytes/s) of the attempt that was found too slow.
    slow_rate: u64,
    /// Busy answers in a row (the back-off grows with them; progress resets it).
    busy: u32,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect to source `index` and request the missing ranges.
    Try { index: usize },
    /// Only busy sources are left: ask again at this time.
    Wait { until: Instant },
    /// Every source is exhausted; the fetch fails.
    GiveUp,
}

/// Busy answers in a row (no progress between) after which a source counts as failed: with
/// the back-off that is about half an hour of asking (1+2+…+32 s, then 60 s each).
pub const MAX_BUSY_IN_A_ROW: u32 = 36;

/// The first busy back-off, and the longest.
pub const BUSY_BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The wait after the `n`-th busy answer in a row (n ≥ 1): 1 s doubling to 60 s, times
/// `jitter`, clamped to 0.5–1.5 (the caller draws it at random, so fetchers spread out).
pub fn busy_backoff(n: u32, jitter: f64) -> Duration {
    let base = BUSY_BACKOFF_FIRST
        .saturating_mul(1u32 << n.saturating_sub(1).min(6))
        .min(BUSY_BACKOFF_MAX);
    base.mul_f64(jitter.clamp(0.5, 1.5))
}

/// The selector for one fetch.
#[derive(Debug, Clone)]
pub struct Selector {
    sources: Vec<Source>,
    stall_timeout: Duration,
    max_attempts: u32,
    /// Minimum verified rate in bytes/s over a window of `stall_timeout`; 0 disables the rule.
    min_rate: u64,
    current: Option<usize>,
    last_progress: Option<Instant>,
    /// When the current attempt's rate window opened (its start, or when it connected).
    window_start: Option<Instant>,
    /// (bucket start, verified bytes) of the current attempt's progress within the last
    /// window, oldest first.
    samples: VecDeque<(Instant, u64)>,
    /// The current attempt is a last resort: the rate floor does not apply to it.
    floor_lifted: bool,
    /// (source id, reason) for every failed attempt, in order.
    failures: Vec<(String, String)>,
}

impl Selector {
    /// `origin` first (if any), then `peers` in the caller's order. A peer repeated (or equal to
    /// the origin) is ignored so it cannot jump the queue or be counted twice. Each source gets
    /// at most `max_attempts` tries per fetch; a second round lets a source that dropped out
    /// (e.g. the origin restarting) be retried before the fetch gives up. No rate floor until
    /// [`Selector::with_min_rate`].
    pub fn new(
        origin: Option<String>,
        peers: impl IntoIterator<Item = String>,
        stall_timeout: Duration,
        max_attempts: u32,
    ) -> Self {
        let mut sources: Vec<Source> = Vec::new();
        let all = origin
            .into_iter()
            .map(|id| (id, SourceRole::Origin))
            .chain(peers.into_iter().map(|id| (id, SourceRole::Peer)));
        for (id, role) in all {
            if sources.iter().any(|s| s.id == id) {
                continue;
            }
            sources.push(Source {
                id,
                role,
                status: Status::Waiting,
                attempts: 0,
                bytes: 0,
                slow_rate: 0,
                busy: 0,
            });
        }
        Selector {
            sources,
            stall_timeout,
            max_attempts: max_attempts.max(1),
            min_rate: 0,
            current: None,
            last_progress: None,
            window_start: None,
            samples: VecDeque::new(),
            floor_lifted: false,
            failures: Vec::new(),
        }
    }

    /// Sets the minimum verified rate (bytes/s) a source must sustain over each window of the
    /// stall timeout; 0 disables the rule.
    pub fn with_min_rate(mut self, bytes_per_sec: u64) -> Self {
        self.min_rate = bytes_per_sec;
        self
    }

    /// Picks the next source: the first waiting one in order; then the first busy one whose
    /// back-off has passed; when none, the first failed (not bad, not slow) one that still has
    /// attempts left; when none, the fastest source found too slow that still has attempts
    /// left, with the rate floor lifted; when none, [`Action::Wait`] for the earliest busy
    /// source. The origin is first in the list, so it is always the one tried first and the
    /// first one retried.
    pub fn next_action(&mut self, now: Instant) -> Action {
        let left = |s: &Source| s.attempts < self.max_attempts;
        let by_status = |st: Status| {
            self.sources
                .iter()
                .position(|s| s.status == st && (st == Status::Waiting || left(s)))
        };
        let ready_busy = self
            .sources
            .iter()
            .position(|s| matches!(s.status, Status::Busy(t) if t <= now));
        let mut last_resort = false;
        let pick = by_status(Status::Waiting)
            .or(ready_busy)
            .or_else(|| by_status(Status::Failed))
            .or_else(|| {
                last_resort = true;
                self.sources
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status == Status::Slow && left(s))
                    // max_by_key keeps the last maximum; reverse so ties go to the earlier source.
                    .rev()
                    .max_by_key(|(_, s)| s.slow_rate)
                    .map(|(i, _)| i)
            });
        self.samples.clear();
        match pick {
            Some(index) => {
                let s = &mut self.sources[index];
                s.status = Status::Active;
                s.attempts += 1;
                self.current = Some(index);
                self.last_progress = Some(now);
                self.window_start = Some(now);
                self.floor_lifted = last_resort;
                Action::Try { index }
            }
            None => {
                self.current = None;
                self.last_progress = None;
                self.window_start = None;
                self.floor_lifted = false;
                let earliest = self
                    .sources
                    .iter()
                    .filter_map(|s| match s.status {
                        Status::Busy(t) => Some(t),
                        _ => None,
                    })
                    .min();
                match earliest {
                    Some(until) => Action::Wait { until },
                    None => Action::GiveUp,
                }
            }
        }
    }

    /// The current source answered busy at `now`: its attempt is given back and it is asked
    /// again after [`busy_backoff`] (with the caller's random `jitter`). Returns the wait.
    pub fn on_busy(&mut self, now: Instant, jitter: f64) -> Duration {
        let Some(i) = self.current.take() else {
            return Duration::ZERO;
        };
        self.samples.clear();
        self.floor_lifted = false;
        let s = &mut self.sources[i];
        s.busy = s.busy.saturating_add(1);
        if s.busy > MAX_BUSY_IN_A_ROW {
            // Busy for about half an hour: a failed attempt after all, so a source that is
            // always busy cannot hold a fetch forever.
            s.status = Status::Failed;
            self.failures
                .push((s.id.clone(), format!("busy {} times in a row", s.busy)));
            return Duration::ZERO;
        }
        s.attempts = s.attempts.saturating_sub(1);
        let wait = busy_backoff(s.busy, jitter);
        s.status = Status::Busy(now + wait);
        wait
    }

    /// The current attempt is connected and its request sent: the rate window opens now
    /// (connecting is bounded by its own timeout and is not the source's throughput).
    pub fn on_connected(&mut self, now: Instant) {
        if self.current.is_some() {
            self.window_start = Some(now);
        }
    }

    /// The current source delivered verified bytes; `delta` is the new payload bytes.
    pub fn on_progress(&mut self, now: Instant, delta: u64) {
        let Some(i) = self.current else { return };
        self.sources[i].bytes += delta;
        if delta > 0 {
            self.sources[i].busy = 0;
        }
        if delta > 0 {
            self.last_progress = Some(now);
            // One sample per 1/RATE_BUCKETS of the window, not one per verified chunk group:
            // the rate checks scan the samples on every turn of the fetch, and a fast source
            // made that O(n²) (170k samples in a 10 s window at 280 MB/s; 11 % of a transfer's
            // CPU in `perf`). A bucket counts until its start leaves the window, so the rule is
            // lenient to the source by at most one bucket (1/32 of the window).
            let bucket = self.stall_timeout / RATE_BUCKETS;
            match self.samples.back_mut() {
                Some((start, bytes)) if now < *start + bucket => *bytes += delta,
                _ => self.samples.push_back((now, delta)),
            }
        }
        // Samples that left the window can never count again.
        let w = self.stall_timeout;
        while self.samples.front().is_some_and(|(t, _)| *t + w <= now) {
            self.samples.pop_front();
        }
    }

    /// The driver was held for `d` by something other than the source (the caller's progress
    /// consumer): that time counts neither as a stall nor against the source's rate.
    pub fn on_held(&mut self, d: Duration) {
        if self.current.is_none() || d.is_zero() {
            return;
        }
        for t in [&mut self.last_progress, &mut self.window_start]
            .into_iter()
            .flatten()
        {
            *t += d;
        }
        for (t, _) in &mut self.samples {
            *t += d;
        }
    }

    /// True if the current attempt is a last resort, exempt from the rate floor.
    pub fn floor_lifted(&self) -> bool {
        self.floor_lifted
    }

    /// Bytes the current attempt must verify per window to meet the floor (0: no rate rule).
    fn required_per_window(&self) -> u64 {
        if self.floor_lifted {
            return 0;
        }
        let r = u128::from(self.min_rate) * self.stall_timeout.as_nanos() / 1_000_000_000;
        u64::try_from(r).unwrap_or(u64::MAX)
    }

    /// Verified bytes of the current attempt within the window ending at `now`.
    fn window_bytes(&self, now: Instant) -> u64 {
        let w = self.stall_timeout;
        self.samples
            .iter()
            .filter(|(t, _)| *t + w > now)
            .map(|(_, b)| b)
            .sum()
    }

    /// The earliest time at which the rate rule fails if no more bytes arrive (more bytes can
    /// only push it later), or `None` when the rule does not apply.
    fn rate_deadline(&self) -> Option<Instant> {
        self.current?;
        let required = self.required_per_window();
        if required == 0 {
            return None;
        }
        let first_check = self.window_start? + self.stall_timeout;
        // The window sum only drops when a sample leaves it, at its time + window.
        let mut left: u64 = self.samples.iter().map(|(_, b)| b).sum();
        let mut at = first_check;
        for (t, b) in &self.samples {
            if at >= *t + self.stall_timeout {
                left -= b; // already out of the window at `at`
                continue;
            }
            if left < required {
                return Some(at);
            }
            at = *t + self.stall_timeout;
            left -= b;
        }
        Some(at)
    }

    /// When the current attempt must next be judged with [`Selector::check`] if no progress
    /// arrives before: the stall deadline or the moment the rate floor would be missed.
    pub fn deadline(&self) -> Option<Instant> {
        self.current?;
        let stall = self.last_progress.map(|t| t + self.stall_timeout);
        match (stall, self.rate_deadline()) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (s, r) => s.or(r),
        }
    }

    /// Judges the current attempt at `now`: `Some(Stalled)` if no verified progress for the
    /// stall timeout, `Some(TooSlow)` if, a full window into the transfer, the last window's
    /// verified bytes are below the floor; `None` while it may go on.
    pub fn check(&self, now: Instant) -> Option<Failure> {
        self.current?;
        let w = self.stall_timeout;
        if self.last_progress.is_some_and(|t| now >= t + w) {
            return Some(Failure::Stalled);
        }
        let required = self.required_per_window();
        let judged = self.window_start.is_some_and(|t| now >= t + w);
        if required > 0 && judged {
            let got = self.window_bytes(now);
            if got < required {
                let rate = u128::from(got) * 1_000_000_000 / w.as_nanos().max(1);
                return Some(Failure::TooSlow {
                    rate: u64::try_from(rate).unwrap_or(u64::MAX),
                    floor: self.min_rate,
                    window: w,
                });
            }
        }
        None
    }

    /// True if the current attempt has had no progress for the stall timeout at `now`.
    pub fn is_stalled(&self, now: Instant) -> bool {
        matches!(self.check(now), Some(Failure::Stalled))
    }

    /// The current attempt ended with `failure`.
    pub fn on_failure(&mut self, failure: Failure) {
        let Some(i) = self.current.take() else { return };
        self.samples.clear();
        self.floor_lifted = false;
        let s = &mut self.sources[i];
        s.status = match failure {
            Failure::Corrupt(_) => Status::Bad,
            Failure::TooSlow { rate, .. } => {
                s.slow_rate = rate;
                Status::Slow
            }
            _ => Status::Failed,
        };
        self.failures.push((s.id.clone(), failure.describe()));
    }

    /// The current attempt completed the blob.
    pub fn on_complete(&mut self) {
        self.current = None;
        self.samples.clear();
        self.floor_lifted = false;
    }

    pub fn source_id(&self, index: usize) -> &str {
        &self.sources[index].id
    }

    pub fn source_role(&self, index: usize) -> SourceRole {
        self.sources[index].role
    }

    /// Verified payload bytes each source delivered, for sources that delivered any.
    pub fn bytes_per_source(&self) -> Vec<(String, u64)> {
        self.sources
            .iter()
            .filter(|s| s.bytes > 0)
            .map(|s| (s.id.clone(), s.bytes))
            .collect()
    }

    /// Sources dropped for sending bytes that do not verify, with the reason. Slow, stalled or
    /// unreachable sources are not here: none of that is evidence of malice.
    pub fn bad_sources(&self) -> Vec<(String, String)> {
        self.failures
            .iter()
            .filter(|(id, _)| {
                self.sources
                    .iter()
                    .any(|s| &s.id == id && s.status == Status::Bad)
            })
            .cloned()
            .collect()
    }

    pub fn failures(&self) -> &[(String, String)] {
        &self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn sel(origin: Option<&str>, peers: &[&str]) -> Selector {
        Selector::new(
            origin.map(String::from),
            peers.iter().map(|p| p.to_string()),
            T,
            2,
        )
    }

    fn tried(s: &mut Selector, now: Instant) -> Option<String> {
        match s.next_action(now) {
            Action::Try { index } => Some(s.source_id(index).to_string()),
            Action::Wait { .. } | Action::GiveUp => None,
        }
    }

    #[test]
    fn origin_is_tried_first_and_kept_while_it_answers() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &["p1", "p2"]);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        assert_eq!(s.source_role(0), SourceRole::Origin);
        s.on_progress(t0 + Duration::from_secs(4), 100);
        // progress pushed the deadline out: not stalled 8s after start
        assert!(!s.is_stalled(t0 + Duration::from_secs(8)));
        s.on_progress(t0 + Duration::from_secs(8), 100);
        s.on_complete();
        assert_eq!(s.bytes_per_source(), vec![("o".to_string(), 200)]);
        assert!(s.bad_sources().is_empty());
    }

    #[test]
    fn peers_in_order_only_after_origin_fails() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &["p1", "p2"]);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        s.on_failure(Failure::Unreachable("refused".into()));
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p1"));
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p2"));
    }

    #[test]
    fn stall_is_detected_from_last_progress() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &[]);
        tried(&mut s, t0);
        assert!(!s.is_stalled(t0 + Duration::from_secs(4)));
        assert!(s.is_stalled(t0 + T));
        s.on_progress(t0 + T, 0); // zero-byte progress does not count
        assert!(s.is_stalled(t0 + T));
        s.on_progress(t0 + T, 1);
        assert_eq!(s.deadline(), Some(t0 + T + T));
    }

    #[test]
    fn corrupt_source_is_never_retried_but_failed_origin_is() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &["bad", "good"]);
        tried(&mut s, t0);
        s.on_failure(Failure::Unreachable("x".into()));
        assert_eq!(tried(&mut s, t0).as_deref(), Some("bad"));
        s.on_progress(t0, 10);
        s.on_failure(Failure::Corrupt("leaf hash mismatch".into()));
        assert_eq!(tried(&mut s, t0).as_deref(), Some("good"));
        s.on_failure(Failure::Transfer("reset".into()));
        // second round: origin first again, then good; bad never again
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("good"));
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0), None);
        let bad = s.bad_sources();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "bad");
        assert!(bad[0].1.contains("do not verify"));
        assert_eq!(s.failures().len(), 5);
        assert_eq!(s.bytes_per_source(), vec![("bad".to_string(), 10)]);
    }

    #[test]
    fn duplicates_are_ignored_and_no_sources_gives_up() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &["o", "p", "p"]);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p"));
        assert_eq!(s.source_role(1), SourceRole::Peer);
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p"));
        s.on_failure(Failure::Stalled);
        assert_eq!(tried(&mut s, t0), None);

        let mut empty = sel(None, &[]);
        assert_eq!(empty.next_action(t0), Action::GiveUp);
        assert_eq!(empty.deadline(), None);
    }

    #[test]
    fn without_origin_peers_go_in_order() {
        let t0 = Instant::now();
        let mut s = sel(None, &["p1", "p2"]);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p1"));
        assert_eq!(s.source_role(0), SourceRole::Peer);
    }

    const S: Duration = Duration::from_secs(1);

    fn slow_sel(origin: Option<&str>, peers: &[&str], min_rate: u64) -> Selector {
        sel(origin, peers).with_min_rate(min_rate)
    }

    fn too_slow(f: Option<Failure>) -> u64 {
        match f {
            Some(Failure::TooSlow { rate, .. }) => rate,
            other => panic!("expected TooSlow, got {other:?}"),
        }
    }

    #[test]
    fn trickler_that_never_stalls_is_too_slow_after_one_window() {
        // Floor 1000 B/s over T = 5 s: 5000 verified bytes per window.
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &["p"], 1000);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        s.on_connected(t0);
        // 1000 bytes every 2 s (500 B/s): always well inside the stall timeout.
        s.on_progress(t0 + 2 * S, 1000);
        assert_eq!(s.check(t0 + 4 * S), None, "not judged before a full window");
        s.on_progress(t0 + 4 * S, 1000);
        // The floor is missed when the first window closes, long before the stall deadline.
        assert_eq!(s.deadline(), Some(t0 + T));
        assert!(!s.is_stalled(t0 + T));
        let f = s.check(t0 + T);
        assert_eq!(
            f,
            Some(Failure::TooSlow {
                rate: 400,
                floor: 1000,
                window: T
            })
        );
        s.on_failure(f.unwrap());
        assert!(s.bad_sources().is_empty(), "slow is not malicious");
        assert!(s.failures()[0].1.contains("too slow"), "{:?}", s.failures());
        // The verified bytes stay counted; the fetch goes on with the next source.
        assert_eq!(s.bytes_per_source(), vec![("o".to_string(), 2000)]);
        assert_eq!(tried(&mut s, t0 + T).as_deref(), Some("p"));
        assert!(!s.floor_lifted());
    }

    #[test]
    fn a_fast_source_keeps_a_bounded_number_of_rate_samples() {
        // One progress event per millisecond for a whole window: buckets, not events.
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &[], 1000);
        tried(&mut s, t0);
        s.on_connected(t0);
        let ms = Duration::from_millis(1);
        for i in 1..=5_000u32 {
            s.on_progress(t0 + ms * i, 16 * 1024);
        }
        assert!(
            s.samples.len() <= RATE_BUCKETS as usize + 1,
            "{}",
            s.samples.len()
        );
        assert_eq!(s.check(t0 + T), None, "80 MB/s is well above the floor");
        assert_eq!(
            s.bytes_per_source(),
            vec![("o".to_string(), 5_000 * 16 * 1024)]
        );
    }

    #[test]
    fn the_window_slides_and_the_deadline_is_when_the_floor_would_be_missed() {
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &[], 1000);
        tried(&mut s, t0);
        s.on_connected(t0);
        s.on_progress(t0 + S, 3000);
        s.on_progress(t0 + 3 * S, 3000);
        // 6000 in the first window: fine at 5 s; at 6 s the first sample leaves (3000 < 5000).
        assert_eq!(s.check(t0 + T), None);
        assert_eq!(s.deadline(), Some(t0 + 6 * S));
        assert_eq!(s.check(t0 + 6 * S - Duration::from_millis(1)), None);
        // More bytes push the deadline out.
        s.on_progress(t0 + 5 * S, 3000);
        assert_eq!(s.deadline(), Some(t0 + 8 * S));
        assert_eq!(s.check(t0 + 7 * S), None);
        assert_eq!(too_slow(s.check(t0 + 8 * S)), 600);
        // A fast source never hits the floor while it keeps going.
        let mut f = slow_sel(Some("o"), &[], 1000);
        tried(&mut f, t0);
        f.on_connected(t0);
        for i in 1..=40u32 {
            let now = t0 + Duration::from_millis(250) * i;
            f.on_progress(now, 2000);
            assert_eq!(f.check(now), None);
            assert!(f.deadline().unwrap() > now);
        }
        f.on_complete();
        assert_eq!(
            f.check(t0 + 60 * S),
            None,
            "a finished attempt is not judged"
        );
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn silence_is_a_stall_not_slowness_and_zero_disables_the_floor() {
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &[], 1000);
        tried(&mut s, t0);
        s.on_connected(t0);
        assert_eq!(s.check(t0 + T), Some(Failure::Stalled));

        let mut off = slow_sel(Some("o"), &[], 0);
        tried(&mut off, t0);
        off.on_connected(t0);
        for i in 1..=20u32 {
            off.on_progress(t0 + 4 * S * i, 1);
            assert_eq!(off.check(t0 + 4 * S * i + 4 * S), None);
        }
        assert_eq!(off.deadline(), Some(t0 + 85 * S));
    }

    #[test]
    fn connecting_and_a_held_consumer_do_not_count_against_the_rate() {
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &[], 1000);
        tried(&mut s, t0);
        // Connecting took 3 s: the rate window opens when the request is out.
        s.on_connected(t0 + 3 * S);
        s.on_progress(t0 + 4 * S, 6000);
        assert_eq!(s.check(t0 + 7 * S), None);
        // The caller's progress consumer held the driver for 10 s: that time is paused.
        s.on_held(10 * S);
        s.on_progress(t0 + 15 * S, 100);
        // Window opened at 13 (3 + 10 held) and is first judged at 18, when it holds 6100.
        assert_eq!(s.check(t0 + 18 * S), None);
        // At 19 the 6000 (received at 4, shifted to 14) leave it: 100 bytes in 5 s.
        assert_eq!(s.deadline(), Some(t0 + 19 * S));
        assert_eq!(too_slow(s.check(t0 + 19 * S)), 20);
    }

    #[test]
    fn slow_sources_are_retried_last_fastest_first_without_the_floor_then_give_up() {
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &["p1", "p2", "p3"], 1000);
        let slow = |s: &mut Selector, rate| {
            s.on_failure(Failure::TooSlow {
                rate,
                floor: 1000,
                window: T,
            })
        };
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        slow(&mut s, 100);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p1"));
        s.on_failure(Failure::Unreachable("refused".into()));
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p2"));
        slow(&mut s, 500);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p3"));
        s.on_failure(Failure::Stalled);
        // Second chances for sources that were not slow come first...
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p1"));
        assert!(!s.floor_lifted());
        s.on_failure(Failure::Unreachable("refused".into()));
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p3"));
        s.on_failure(Failure::Stalled);
        // ...then the slow ones as a last resort, fastest first, with only the stall rule.
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p2"));
        assert!(s.floor_lifted());
        s.on_connected(t0);
        for i in 1..=10u32 {
            s.on_progress(t0 + 4 * S * i, 10);
            assert_eq!(s.check(t0 + 4 * S * i + 4 * S), None);
        }
        s.on_failure(Failure::Transfer("reset".into()));
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        assert!(s.floor_lifted());
        s.on_failure(Failure::Stalled);
        // Every source had its two attempts: the fetch ends, each failure on record.
        assert_eq!(s.next_action(t0), Action::GiveUp);
        assert!(!s.floor_lifted());
        assert_eq!(s.failures().len(), 8);
        assert_eq!(
            s.failures()
                .iter()
                .filter(|f| f.1.contains("too slow"))
                .count(),
            2
        );
        assert!(s.bad_sources().is_empty());
        assert_eq!(s.bytes_per_source(), vec![("p2".to_string(), 100)]);
    }

    #[test]
    fn equally_slow_sources_go_in_order_and_the_origin_comes_back_last_resort() {
        let t0 = Instant::now();
        let mut s = slow_sel(Some("o"), &["p"], 1000);
        for id in ["o", "p"] {
            assert_eq!(tried(&mut s, t0).as_deref(), Some(id));
            s.on_connected(t0);
            s.on_progress(t0 + S, 10);
            s.on_failure(s.check(t0 + T).unwrap());
        }
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        assert!(s.floor_lifted());
        s.on_progress(t0 + S, 10);
        s.on_complete();
        assert_eq!(
            s.bytes_per_source(),
            vec![("o".to_string(), 20), ("p".to_string(), 10)]
        );
    }

    #[test]
    fn too_slow_names_the_measured_rate_and_the_floor() {
        let f = Failure::TooSlow {
            rate: 20 * 1024,
            floor: 64 * 1024,
            window: Duration::from_secs(10),
        };
        assert_eq!(
            f.describe(),
            "too slow: 20.0 KiB/s verified over the last 10.0 s, below the minimum rate of 64.0 KiB/s"
        );
        assert_eq!(rate_str(512), "512 B/s");
        assert_eq!(rate_str(3 * 1024 * 1024 / 2), "1.5 MiB/s");
    }

    #[test]
    fn busy_backoff_doubles_from_one_second_to_sixty_with_jitter() {
        let secs = |n| busy_backoff(n, 1.0).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(6), secs(7), secs(40)],
            [1, 2, 4, 32, 60, 60]
        );
        assert_eq!(
            busy_backoff(1, 0.0),
            Duration::from_millis(500),
            "jitter clamped"
        );
        assert_eq!(busy_backoff(2, 9.0), Duration::from_secs(3));
    }

    #[test]
    fn a_busy_origin_is_no_failure_peers_go_meanwhile_and_then_we_wait_for_it() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &["p"]);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        assert_eq!(s.on_busy(t0, 1.0), Duration::from_secs(1));
        // The peer meanwhile; it fails.
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p"));
        s.on_failure(Failure::Stalled);
        // The peer's second chance comes before waiting on the busy origin's back-off...
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p"));
        s.on_failure(Failure::Stalled);
        // ...then only the busy origin is left: wait for it, then ask it again, many times
        // (busy answers use no attempts), with a growing back-off.
        assert_eq!(
            s.next_action(t0),
            Action::Wait {
                until: t0 + Duration::from_secs(1)
            }
        );
        let mut now = t0 + Duration::from_secs(1);
        for n in 2..=8u32 {
            assert_eq!(tried(&mut s, now).as_deref(), Some("o"), "busy answer {n}");
            let wait = s.on_busy(now, 1.0);
            assert_eq!(wait, busy_backoff(n, 1.0));
            now += wait;
        }
        assert_eq!(tried(&mut s, now).as_deref(), Some("o"));
        s.on_progress(now, 5);
        s.on_complete();
        assert!(
            s.failures().iter().all(|(id, _)| id == "p"),
            "busy is not a failure"
        );
        assert!(s.bad_sources().is_empty());
    }

    #[test]
    fn a_busy_source_whose_back_off_passed_goes_before_a_failed_one() {
        let t0 = Instant::now();
        let mut s = sel(Some("o"), &["p"]);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("o"));
        s.on_busy(t0, 1.0);
        assert_eq!(tried(&mut s, t0).as_deref(), Some("p"));
        s.on_failure(Failure::Transfer("reset".into()));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(tried(&mut s, later).as_deref(), Some("o"));
        // Progress resets the back-off: a new busy answer waits 1 s again.
        s.on_progress(later, 1);
        assert_eq!(s.on_busy(later, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn a_source_busy_for_ever_fails_after_max_busy_in_a_row() {
        let t0 = Instant::now();
        let mut s = Selector::new(Some("o".into()), Vec::<String>::new(), T, 1);
        let mut now = t0;
        for _ in 0..MAX_BUSY_IN_A_ROW {
            assert_eq!(tried(&mut s, now).as_deref(), Some("o"));
            now += s.on_busy(now, 1.0);
        }
        assert_eq!(tried(&mut s, now).as_deref(), Some("o"));
        assert_eq!(s.on_busy(now, 1.0), Duration::ZERO);
        assert_eq!(s.next_action(now), Action::GiveUp, "no attempts left");
        assert!(s.failures()[0].1.contains("busy"), "{:?}", s.failures());
    }
}
