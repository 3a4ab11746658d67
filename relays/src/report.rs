//! Publish outcomes and the quorum rule (pure: no I/O, unit-tested here).

use nostr_sdk::{EventId, RelayUrl};
use serde::Serialize;

/// What one relay said about one published event.
///
/// `Refused` and `Failed` are kept apart on purpose: a refusal is the relay's policy (it answered
/// `OK false` with a reason, e.g. `invalid: bad signature`), a failure is transport (not
/// connected, no answer before the timeout). An operator fixes them differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "message", rename_all = "snake_case")]
pub enum RelayOutcome {
    /// The relay answered `OK true` (this includes `duplicate:`: it already had the event).
    Accepted,
    /// The relay answered `OK false` with this message.
    Refused(String),
    /// No answer: not connected, timeout, or a transport error.
    Failed(String),
}

impl RelayOutcome {
    /// True for [`RelayOutcome::Accepted`].
    pub fn is_accepted(&self) -> bool {
        matches!(self, RelayOutcome::Accepted)
    }
}

/// Every relay's answer to one publish, and whether the quorum was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    /// Id of the published event.
    pub event_id: EventId,
    /// One entry per relay of the pool, in the pool's order.
    pub per_relay: Vec<(RelayUrl, RelayOutcome)>,
    /// How many relays accepted the event.
    pub accepted: usize,
    /// The quorum that was required.
    pub quorum: usize,
    /// `accepted >= quorum`.
    pub quorum_met: bool,
}

impl PublishReport {
    /// Builds the report and applies the quorum rule.
    pub fn new(event_id: EventId, per_relay: Vec<(RelayUrl, RelayOutcome)>, quorum: usize) -> Self {
        let accepted = per_relay.iter().filter(|(_, o)| o.is_accepted()).count();
        Self {
            event_id,
            per_relay,
            accepted,
            quorum,
            quorum_met: accepted >= quorum,
        }
    }

    /// One line per relay, for error messages and CLI output.
    pub fn summary(&self) -> String {
        self.per_relay
            .iter()
            .map(|(url, outcome)| match outcome {
                RelayOutcome::Accepted => format!("{url}: accepted"),
                RelayOutcome::Refused(m) => format!("{url}: refused ({m})"),
                RelayOutcome::Failed(e) => format!("{url}: failed ({e})"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RelayUrl {
        RelayUrl::parse(s).unwrap()
    }

    #[test]
    fn quorum_counts_only_accepted() {
        let id = EventId::all_zeros();
        let per_relay = vec![
            (url("ws://127.0.0.1:1"), RelayOutcome::Accepted),
            (
                url("ws://127.0.0.1:2"),
                RelayOutcome::Refused("blocked: no".into()),
            ),
            (
                url("ws://127.0.0.1:3"),
                RelayOutcome::Failed("not connected".into()),
            ),
        ];
        let r = PublishReport::new(id, per_relay.clone(), 1);
        assert_eq!(r.accepted, 1);
        assert!(r.quorum_met);
        let r = PublishReport::new(id, per_relay, 2);
        assert!(!r.quorum_met);
        assert!(r
            .summary()
            .contains("ws://127.0.0.1:2: refused (blocked: no)"));
        assert!(r
            .summary()
            .contains("ws://127.0.0.1:3: failed (not connected)"));
    }

    #[test]
    fn outcome_serialises_with_status_tag() {
        let json = serde_json::to_string(&RelayOutcome::Refused("invalid: sig".into())).unwrap();
        assert_eq!(json, r#"{"status":"refused","message":"invalid: sig"}"#);
        let json = serde_json::to_string(&RelayOutcome::Accepted).unwrap();
        assert_eq!(json, r#"{"status":"accepted"}"#);
    }
}
