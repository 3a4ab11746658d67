//! Source selection for one fetch, as a pure state machine (sans-IO).
//!
//! PROTOCOL §5: the origin is asked first and used while it answers; peers (in the order the
//! caller gives, most trusted first) only when the origin cannot be reached or stalls; a source
//! that sends bytes that do not verify is dropped for the rest of the fetch. The driver in
//! [`crate::fetch`] feeds this machine events and the current time, and does what it says;
//! keeping time and I/O out of here makes every rule unit-testable.

use std::time::{Duration, Instant};

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
    /// The source sent bytes that did not verify against the expected hash. Final for this fetch.
    Corrupt(String),
    /// Any other transfer error (reset, closed, does not have the blob...).
    Transfer(String),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Unreachable(r) => format!("unreachable: {r}"),
            Failure::Stalled => "stalled: no verified progress within the stall timeout".into(),
            Failure::Corrupt(r) => format!("sent bytes that do not verify: {r}"),
            Failure::Transfer(r) => format!("transfer failed: {r}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Waiting,
    Active,
    Failed,
    Bad,
}

#[derive(Debug, Clone)]
struct Source {
    id: String,
    role: SourceRole,
    status: Status,
    attempts: u32,
    bytes: u64,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect to source `index` and request the missing ranges.
    Try { index: usize },
    /// Every source is exhausted; the fetch fails.
    GiveUp,
}

/// The selector for one fetch.
#[derive(Debug, Clone)]
pub struct Selector {
    sources: Vec<Source>,
    stall_timeout: Duration,
    max_attempts: u32,
    current: Option<usize>,
    last_progress: Option<Instant>,
    /// (source id, reason) for every failed attempt, in order.
    failures: Vec<(String, String)>,
}

impl Selector {
    /// `origin` first (if any), then `peers` in the caller's order. A peer repeated (or equal to
    /// the origin) is ignored so it cannot jump the queue or be counted twice. Each source gets
    /// at most `max_attempts` tries per fetch; a second round lets a source that dropped out
    /// (e.g. the origin restarting) be retried before the fetch gives up.
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
            });
        }
        Selector {
            sources,
            stall_timeout,
            max_attempts: max_attempts.max(1),
            current: None,
            last_progress: None,
            failures: Vec::new(),
        }
    }

    /// Picks the next source: the first waiting one in order; when none is waiting, the first
    /// failed (not bad) one that still has attempts left. The origin is first in the list, so it
    /// is always the one tried first and the first one retried.
    pub fn next_action(&mut self, now: Instant) -> Action {
        let pick = self
            .sources
            .iter()
            .position(|s| s.status == Status::Waiting)
            .or_else(|| {
                self.sources
                    .iter()
                    .position(|s| s.status == Status::Failed && s.attempts < self.max_attempts)
            });
        match pick {
            Some(index) => {
                let s = &mut self.sources[index];
                s.status = Status::Active;
                s.attempts += 1;
                self.current = Some(index);
                self.last_progress = Some(now);
                Action::Try { index }
            }
            None => {
                self.current = None;
                Action::GiveUp
            }
        }
    }

    /// The current source delivered verified bytes; `delta` is the new payload bytes.
    pub fn on_progress(&mut self, now: Instant, delta: u64) {
        if let Some(i) = self.current {
            self.sources[i].bytes += delta;
            if delta > 0 {
                self.last_progress = Some(now);
            }
        }
    }

    /// When the current attempt counts as stalled if no progress arrives before it.
    pub fn deadline(&self) -> Option<Instant> {
        self.current?;
        self.last_progress.map(|t| t + self.stall_timeout)
    }

    /// True if the current attempt has had no progress for the stall timeout at `now`.
    pub fn is_stalled(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// The current attempt ended with `failure`.
    pub fn on_failure(&mut self, failure: Failure) {
        let Some(i) = self.current.take() else { return };
        let s = &mut self.sources[i];
        s.status = match failure {
            Failure::Corrupt(_) => Status::Bad,
            _ => Status::Failed,
        };
        self.failures.push((s.id.clone(), failure.describe()));
    }

    /// The current attempt completed the blob.
    pub fn on_complete(&mut self) {
        self.current = None;
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

    /// Sources dropped for sending bytes that do not verify, with the reason.
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
            Action::GiveUp => None,
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
}
