//! The node's fetches drawn on stderr while a command runs: one line of bytes, rate and what
//! each source has sent, from the node's [`Transfer`] list (the local API's `transfers`, or the
//! in-process core's). The same list is what the web page will read.

use crate::home::Home;
use crate::node::api::{self, Owner};
use crate::node::rpc::{Operation, Transfers};
use anyhow::Result;
use archy_swarm::{SourceRole, SourceState, Transfer};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Runs an operation like [`super::call`], drawing the fetches it starts while it runs when
/// `show` (redrawn in place on a terminal, a line every two seconds otherwise).
pub(crate) async fn call_showing<O: Operation>(home: &Home, op: O, show: bool) -> Result<O::Reply> {
    let _lock = match api::claim(home).await? {
        Owner::Node(client) => {
            return watch(show, || client.call(Transfers), client.call(op)).await;
        }
        Owner::Free(lock) => lock,
    };
    let config = crate::node::config::NodeConfig::load(home)?;
    let relays = config.relays.urls.clone();
    let core = crate::node::NodeCore::open(home.clone(), config, relays)?;
    let out = watch(show, || async { Ok(core.transfers.list()) }, op.run(&core)).await;
    // Flush the blob store before the process exits (a request may have written to it).
    core.close().await;
    out
}

async fn watch<T, P, F>(show: bool, poll: P, work: impl Future<Output = T>) -> T
where
    P: Fn() -> F,
    F: Future<Output = Result<Vec<Transfer>>>,
{
    if !show {
        return work.await;
    }
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(if tty { 250 } else { 2000 }));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(work);
    let (mut last, mut drew) = (String::new(), false);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                let Ok(list) = poll().await else { continue };
                let line = describe(&list);
                if line.is_empty() || line == last {
                    continue;
                }
                if tty {
                    eprint!("\r{line}\x1b[K");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
                drew = true;
                last = line;
            }
        }
    };
    if drew && tty {
        eprintln!();
    }
    out
}

/// One line for the fetches in flight (empty when there are none): bytes held of the total,
/// the rate, and each source's share and state, e.g.
/// `fetching 12.0 / 40.0 MiB (30%) at 8.2 MiB/s: origin 3f2a1b2c3d 6.0 MiB, peer 9c1e0a7b4f 6.0 MiB busy`.
pub(crate) fn describe(list: &[Transfer]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let have: u64 = list.iter().map(|t| t.have).sum();
    let size: Option<u64> = list.iter().map(|t| t.size).sum();
    let rate: f64 = list.iter().map(|t| t.rate_bytes_per_sec).sum();
    let mut line = match size {
        Some(s) if s > 0 => format!(
            "fetching {:.1} / {:.1} MiB ({:.0}%)",
            mib(have),
            mib(s),
            100.0 * have as f64 / s as f64
        ),
        _ => format!("fetching {:.1} MiB", mib(have)),
    };
    line += &format!(" at {:.1} MiB/s", rate / (1024.0 * 1024.0));
    // Sources over all fetches in flight, in the order they first appeared.
    let mut sources: Vec<(String, SourceRole, u64, SourceState)> = Vec::new();
    for s in list.iter().flat_map(|t| &t.sources) {
        match sources.iter_mut().find(|(id, ..)| *id == s.endpoint) {
            Some(e) => {
                e.2 += s.bytes;
                e.3 = s.state.clone();
            }
            None => sources.push((s.endpoint.clone(), s.role, s.bytes, s.state.clone())),
        }
    }
    let parts: Vec<String> = sources
        .iter()
        .map(|(id, role, bytes, state)| {
            let role = match role {
                SourceRole::Origin => "origin",
                SourceRole::Peer => "peer",
            };
            let state = match state {
                SourceState::Connecting => " connecting",
                SourceState::Sending => "",
                SourceState::Busy { .. } => " busy",
                SourceState::Failed { bad: true, .. } => " dropped (bad bytes)",
                SourceState::Failed { .. } => " failed",
            };
            format!(
                "{role} {} {:.1} MiB{state}",
                &id[..id.len().min(10)],
                mib(*bytes)
            )
        })
        .collect();
    if !parts.is_empty() {
        line += ": ";
        line += &parts.join(", ");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use archy_swarm::SourceTally;

    fn tally(endpoint: &str, role: SourceRole, mib: u64, state: SourceState) -> SourceTally {
        SourceTally {
            endpoint: endpoint.into(),
            role,
            bytes: mib << 20,
            state,
        }
    }

    #[test]
    fn one_line_names_every_source_with_its_share() {
        assert_eq!(describe(&[]), "");
        let t = Transfer {
            hash: "h".into(),
            size: Some(40 << 20),
            have: 12 << 20,
            transferred: 12 << 20,
            rate_bytes_per_sec: (8 << 20) as f64,
            sources: vec![
                tally("3f2a1b2c3d4e", SourceRole::Origin, 6, SourceState::Sending),
                tally(
                    "9c1e0a7b4f00",
                    SourceRole::Peer,
                    6,
                    SourceState::Busy { retry_in_ms: 1 },
                ),
            ],
        };
        assert_eq!(
            describe(std::slice::from_ref(&t)),
            "fetching 12.0 / 40.0 MiB (30%) at 8.0 MiB/s: origin 3f2a1b2c3d 6.0 MiB, \
             peer 9c1e0a7b4f 6.0 MiB busy"
        );
        // Two fetches at once (two layers): totals add up, a source shows once.
        let mut u = t.clone();
        u.size = None;
        u.sources.truncate(1);
        let two = describe(&[t, u]);
        assert!(
            two.starts_with("fetching 24.0 MiB at 16.0 MiB/s: origin 3f2a1b2c3d 12.0 MiB"),
            "{two}"
        );
    }
}
