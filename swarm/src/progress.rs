//! One fetch's progress as a value: the [`FetchEvent`]s of a fetch folded into a [`Transfer`]
//! (bytes, rate, and what each source has sent and is doing). Pure: the CLI draws it, the node
//! keeps one per fetch in flight for its local API (and the web page), and nothing here does I/O.

use crate::fetch::FetchEvent;
use crate::select::SourceRole;
use serde::{Deserialize, Serialize};

/// A fetch so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub hash: String,
    /// The expected size, or the size a source announced; `None` until one is known.
    pub size: Option<u64>,
    /// Verified bytes of the blob held locally (includes data from earlier fetches).
    pub have: u64,
    /// Payload bytes this fetch received, all sources together.
    pub transferred: u64,
    /// `transferred` over the time since the fetch started.
    pub rate_bytes_per_sec: f64,
    /// Every source the fetch has tried, in the order it first appeared.
    pub sources: Vec<SourceTally>,
}

/// One source of a fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTally {
    /// Endpoint id (hex).
    pub endpoint: String,
    pub role: SourceRole,
    /// Verified payload bytes it sent in this fetch.
    pub bytes: u64,
    pub state: SourceState,
}

/// What a source is doing, as of its last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SourceState {
    Connecting,
    Sending,
    /// It answered busy (PROTOCOL §5.2); asked again later.
    Busy {
        retry_in_ms: u64,
    },
    /// Its last attempt ended without the blob; `bad`: it sent bytes that do not verify.
    Failed {
        reason: String,
        bad: bool,
    },
}

impl Transfer {
    pub fn new(hash: impl Into<String>, size: Option<u64>) -> Self {
        Transfer {
            hash: hash.into(),
            size,
            ..Transfer::default()
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, ev: &FetchEvent) {
        match ev {
            FetchEvent::Trying { source, role } => {
                self.source(source, *role).state = SourceState::Connecting;
            }
            FetchEvent::Progress(p) => {
                self.size = p.size.or(self.size);
                self.have = self.have.max(p.have);
                self.transferred = self.transferred.max(p.transferred);
                self.rate_bytes_per_sec = p.rate_bytes_per_sec;
                let s = self.source(&p.source, p.role);
                s.bytes += p.delta;
                s.state = SourceState::Sending;
            }
            FetchEvent::Busy {
                source,
                role,
                retry_in_ms,
            } => {
                self.source(source, *role).state = SourceState::Busy {
                    retry_in_ms: *retry_in_ms,
                };
            }
            FetchEvent::SourceFailed {
                source,
                role,
                reason,
                bad,
            } => {
                self.source(source, *role).state = SourceState::Failed {
                    reason: reason.clone(),
                    bad: *bad,
                };
            }
        }
    }

    /// Sources that sent bytes and are still in the fetch.
    pub fn sending(&self) -> impl Iterator<Item = &SourceTally> {
        self.sources
            .iter()
            .filter(|s| s.bytes > 0 && !matches!(s.state, SourceState::Failed { .. }))
    }

    fn source(&mut self, endpoint: &str, role: SourceRole) -> &mut SourceTally {
        let i = match self.sources.iter().position(|s| s.endpoint == endpoint) {
            Some(i) => i,
            None => {
                self.sources.push(SourceTally {
                    endpoint: endpoint.to_string(),
                    role,
                    bytes: 0,
                    state: SourceState::Connecting,
                });
                self.sources.len() - 1
            }
        };
        &mut self.sources[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchProgress;

    fn progress(source: &str, role: SourceRole, delta: u64, transferred: u64) -> FetchEvent {
        FetchEvent::Progress(FetchProgress {
            hash: "h".into(),
            size: Some(100),
            have: transferred,
            transferred,
            rate_bytes_per_sec: 1.0,
            source: source.into(),
            role,
            delta,
        })
    }

    #[test]
    fn bytes_are_counted_per_source_and_states_follow_the_events() {
        let mut t = Transfer::new("h", None);
        t.apply(&FetchEvent::Trying {
            source: "o".into(),
            role: SourceRole::Origin,
        });
        t.apply(&progress("o", SourceRole::Origin, 10, 10));
        t.apply(&progress("p", SourceRole::Peer, 30, 40));
        t.apply(&progress("o", SourceRole::Origin, 5, 45));
        t.apply(&FetchEvent::Busy {
            source: "o".into(),
            role: SourceRole::Origin,
            retry_in_ms: 250,
        });
        t.apply(&FetchEvent::SourceFailed {
            source: "q".into(),
            role: SourceRole::Peer,
            reason: "bad bytes".into(),
            bad: true,
        });
        assert_eq!(t.size, Some(100));
        assert_eq!(t.transferred, 45);
        let by: Vec<(&str, u64)> = t
            .sources
            .iter()
            .map(|s| (&s.endpoint[..], s.bytes))
            .collect();
        assert_eq!(by, [("o", 15), ("p", 30), ("q", 0)]);
        assert_eq!(t.sources[0].state, SourceState::Busy { retry_in_ms: 250 });
        assert!(matches!(
            t.sources[2].state,
            SourceState::Failed { bad: true, .. }
        ));
        // Busy is still in the fetch; a failed source is not.
        assert_eq!(t.sending().count(), 2);
    }

    #[test]
    fn events_out_of_order_never_move_totals_back() {
        let mut t = Transfer::new("h", Some(100));
        t.apply(&progress("p", SourceRole::Peer, 20, 50));
        t.apply(&progress("o", SourceRole::Origin, 30, 30));
        assert_eq!((t.transferred, t.have), (50, 50));
        assert_eq!(t.sources.iter().map(|s| s.bytes).sum::<u64>(), 50);
    }
}
