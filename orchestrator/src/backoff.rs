//! The error policy (kube-runtime's `error_policy`), pure: what a failure, a user's start, a
//! stable container or a purge does to an app's crash-loop back-off; when the loop wakes for
//! a back-off that ends; and what an action's outcome means for the app's last error and its
//! dependents. No clock and no I/O: `now` is an input, so each rule is unit-tested.
//!
//! The rules, as the reconciler has always applied them:
//! - each failure to bring an app up (and each exit of a container that should run) doubles
//!   its delay, from [`BackoffPolicy::base_ms`] up to [`BackoffPolicy::max_ms`];
//! - a healthy start does not end a crash loop (a container that passes its check and then
//!   dies would otherwise be restarted at once, forever); staying up for `stable_after` does;
//! - a user's start (install, start, restart) and a purge clear it.

use std::collections::HashMap;
use std::time::Duration;

use crate::podman::{ContainerState, ObservedContainer};
use crate::report::{ActionKind, Outcome, OutcomeStatus};

/// Crash-loop back-off for one app, kept by the reconciler (in memory) and passed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive failed starts or crashes.
    pub failures: u32,
    /// No start or create before this time (same clock as `now_ms`).
    pub not_before_ms: u64,
}

/// Back-off tuning: the delay after `n` failures is `min(base * 2^(n-1), max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base_ms: 2_000,
            max_ms: 300_000,
        }
    }
}

impl BackoffPolicy {
    /// The state after one more failure at `now_ms`.
    pub fn after_failure(&self, prev: Backoff, now_ms: u64) -> Backoff {
        let failures = prev.failures.saturating_add(1);
        let shift = (failures - 1).min(30);
        let delay = self.base_ms.saturating_mul(1u64 << shift).min(self.max_ms);
        Backoff {
            failures,
            not_before_ms: now_ms.saturating_add(delay),
        }
    }
}

/// What happened to an app that bears on its back-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bringing it up failed (image missing, `podman run` or `start` failed, unhealthy with no
    /// update to roll back, or the rollback failed too), or its container exited on its own.
    Failed,
    /// It came up healthy (created, started, or rolled back).
    Healthy,
    /// Its container has been running for `stable_after`: the crash loop is over.
    Stable,
    /// The user asked for it to run (install, start, restart).
    UserStarted,
    /// Its volumes, secrets and record were removed.
    Purged,
}

/// The back-off after `event` at `now_ms` (`None`: no back-off).
pub fn after(
    policy: &BackoffPolicy,
    event: Event,
    prev: Option<Backoff>,
    now_ms: u64,
) -> Option<Backoff> {
    match event {
        Event::Failed => Some(policy.after_failure(prev.unwrap_or_default(), now_ms)),
        // Only time up ends a crash loop: a crash right after a healthy start is still one.
        Event::Healthy => prev,
        Event::Stable | Event::UserStarted | Event::Purged => None,
    }
}

/// [`after`], applied to the reconciler's map of back-offs.
pub(crate) fn note(
    backoffs: &mut HashMap<String, Backoff>,
    policy: &BackoffPolicy,
    app: &str,
    event: Event,
    now_ms: u64,
) {
    match after(policy, event, backoffs.get(app).copied(), now_ms) {
        Some(b) => {
            backoffs.insert(app.to_string(), b);
        }
        None => {
            backoffs.remove(app);
        }
    }
}

/// Has this container stayed up long enough (`stable_after`, by its start time in Unix
/// seconds) to end its app's crash loop?
pub fn is_stable(c: &ObservedContainer, now_unix: i64, stable_after: Duration) -> bool {
    c.state == ContainerState::Running
        && c.started_at > 0
        && now_unix - c.started_at >= stable_after.as_secs() as i64
}

/// How long the loop sleeps: `interval`, or until just after (50 ms) the first back-off that
/// ends sooner, so a failed app is retried on time even with a long period.
pub fn next_wake<'a>(
    backoffs: impl IntoIterator<Item = &'a Backoff>,
    now_ms: u64,
    interval: Duration,
) -> Duration {
    backoffs
        .into_iter()
        .filter(|b| b.not_before_ms > now_ms)
        .map(|b| Duration::from_millis(b.not_before_ms - now_ms + 50))
        .fold(interval, Duration::min)
}

/// Does this outcome make the app's dependents wait for the rest of the pass?
pub fn holds_dependents(o: &Outcome) -> bool {
    matches!(o.status, OutcomeStatus::Failed | OutcomeStatus::Blocked)
}

/// What an outcome does to the app's last error (`archy apps list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LastError {
    /// The failure is the new last error.
    Set(String),
    /// A success clears it.
    Clear,
    /// Left as it is: a block (a back-off notice must not hide the failure that caused it) or
    /// an adoption (keeping a running container says nothing new).
    Keep,
}

/// The [`LastError`] rule for one outcome.
pub fn last_error_after(o: &Outcome) -> LastError {
    match o.status {
        OutcomeStatus::Failed => LastError::Set(o.message.clone()),
        OutcomeStatus::Blocked => LastError::Keep,
        _ if o.action == ActionKind::Adopt => LastError::Keep,
        _ => LastError::Clear,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BackoffPolicy = BackoffPolicy {
        base_ms: 2_000,
        max_ms: 300_000,
    };

    #[test]
    fn a_first_failure_waits_the_base_delay() {
        assert_eq!(
            after(&P, Event::Failed, None, 1_000),
            Some(Backoff {
                failures: 1,
                not_before_ms: 3_000
            })
        );
    }

    #[test]
    fn failures_double_the_delay_up_to_the_cap() {
        let mut b = None;
        let mut delays = Vec::new();
        for _ in 0..10 {
            b = after(&P, Event::Failed, b, 10_000);
            delays.push(b.unwrap().not_before_ms - 10_000);
        }
        assert_eq!(
            delays,
            [2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000]
        );
        assert_eq!(b.unwrap().failures, 10);
        // No overflow, however long the loop and however late the clock.
        let worn = Backoff {
            failures: u32::MAX,
            not_before_ms: 0,
        };
        assert_eq!(
            after(&P, Event::Failed, Some(worn), u64::MAX - 1),
            Some(Backoff {
                failures: u32::MAX,
                not_before_ms: u64::MAX
            })
        );
    }

    #[test]
    fn a_healthy_start_keeps_the_loop_time_up_ends_it() {
        let b = after(&P, Event::Failed, None, 0);
        assert_eq!(after(&P, Event::Healthy, b, 5_000), b);
        assert_eq!(after(&P, Event::Healthy, None, 5_000), None);
        assert_eq!(after(&P, Event::Stable, b, 5_000), None);
    }

    #[test]
    fn a_user_start_or_a_purge_clears_it() {
        let b = after(&P, Event::Failed, None, 0);
        assert_eq!(after(&P, Event::UserStarted, b, 0), None);
        assert_eq!(after(&P, Event::Purged, b, 0), None);
        let mut map = HashMap::new();
        note(&mut map, &P, "web", Event::Failed, 0);
        note(&mut map, &P, "web", Event::Failed, 0);
        assert_eq!(map["web"].failures, 2);
        note(&mut map, &P, "web", Event::Healthy, 0);
        assert_eq!(map["web"].failures, 2);
        note(&mut map, &P, "web", Event::UserStarted, 0);
        assert!(map.is_empty());
    }

    #[test]
    fn only_a_container_running_long_enough_is_stable() {
        let c = |state, started_at| ObservedContainer {
            id: "c1".into(),
            name: "archy_web".into(),
            app: "web".into(),
            spec_hash: "h".into(),
            version: "1".into(),
            state,
            exit_code: 0,
            started_at,
        };
        let minute = Duration::from_secs(60);
        assert!(is_stable(&c(ContainerState::Running, 1_000), 1_060, minute));
        assert!(!is_stable(
            &c(ContainerState::Running, 1_000),
            1_059,
            minute
        ));
        assert!(!is_stable(&c(ContainerState::Exited, 1_000), 9_999, minute));
        // Never started: no start time to count from.
        assert!(!is_stable(&c(ContainerState::Running, 0), 9_999, minute));
    }

    #[test]
    fn the_loop_wakes_just_after_the_first_back_off_ends() {
        let interval = Duration::from_secs(10);
        assert_eq!(next_wake([], 0, interval), interval);
        let soon = Backoff {
            failures: 1,
            not_before_ms: 3_000,
        };
        let later = Backoff {
            failures: 4,
            not_before_ms: 9_000,
        };
        let over = Backoff {
            failures: 2,
            not_before_ms: 500,
        };
        assert_eq!(
            next_wake([&later, &soon, &over], 1_000, interval),
            Duration::from_millis(2_050)
        );
        // One ending after the period does not delay the tick; an ended one does not hurry it.
        assert_eq!(
            next_wake([&later], 0, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(next_wake([&over], 1_000, interval), interval);
    }

    #[test]
    fn outcomes_set_keep_or_clear_the_last_error() {
        let o = |action, status| Outcome {
            app: "web".into(),
            action,
            status,
            message: "why".into(),
        };
        let failed = o(ActionKind::Create, OutcomeStatus::Failed);
        assert_eq!(last_error_after(&failed), LastError::Set("why".into()));
        assert!(holds_dependents(&failed));
        let blocked = o(ActionKind::Blocked, OutcomeStatus::Blocked);
        assert_eq!(last_error_after(&blocked), LastError::Keep);
        assert!(holds_dependents(&blocked));
        for done in [
            o(ActionKind::Create, OutcomeStatus::Done),
            o(ActionKind::Start, OutcomeStatus::Done),
            o(ActionKind::Rollback, OutcomeStatus::RolledBack),
        ] {
            assert_eq!(last_error_after(&done), LastError::Clear);
            assert!(!holds_dependents(&done));
        }
        assert_eq!(
            last_error_after(&o(ActionKind::Adopt, OutcomeStatus::Done)),
            LastError::Keep
        );
        // A failed health check of an adopted update is a failure like any other.
        assert_eq!(
            last_error_after(&o(ActionKind::Adopt, OutcomeStatus::Failed)),
            LastError::Set("why".into())
        );
    }
}
