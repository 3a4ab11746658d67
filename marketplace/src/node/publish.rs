//! Publishing: a signed envelope becomes a release event (§4.1), preceded once by the
//! publisher profile (§4.2), and goes to every relay of the pool with a quorum.

use crate::envelope::Envelope;
use crate::events::build_profile_event;
use crate::home::Home;
use crate::identity::Identity;
use crate::release::build_release_event;
use anyhow::Result;
use archy_relays::{PublishReport, RelayOutcome, RelayPool};
use serde::{Deserialize, Serialize};

/// Marker file: the profile was accepted by a quorum once, so it is not re-sent every time.
const PROFILE_SENT: &str = "profile-published";

/// What `archy app publish` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutcome {
    pub event_id: String,
    pub app: String,
    pub version: String,
    pub relays: Vec<RelayAnswer>,
    pub accepted: usize,
    pub quorum: usize,
    pub profile_event_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayAnswer {
    pub relay: String,
    pub outcome: String,
    pub message: Option<String>,
}

fn answers(report: &PublishReport) -> Vec<RelayAnswer> {
    report
        .per_relay
        .iter()
        .map(|(url, o)| {
            let (outcome, message) = match o {
                RelayOutcome::Accepted => ("accepted", None),
                RelayOutcome::Refused(m) => ("refused", Some(m.clone())),
                RelayOutcome::Failed(m) => ("failed", Some(m.clone())),
            };
            RelayAnswer {
                relay: url.to_string(),
                outcome: outcome.into(),
                message,
            }
        })
        .collect()
}

/// Publishes the profile (first time only) and the release. Fails when the quorum was not met,
/// with every relay's answer in the error.
pub async fn publish_release(
    pool: &RelayPool,
    home: &Home,
    identity: &Identity,
    env: &Envelope,
    now: u64,
) -> Result<PublishOutcome> {
    let mut profile_event_id = None;
    if !home.join(PROFILE_SENT).exists() {
        let name = crate::release::str_path(&env.manifest, &["name"]).unwrap_or_default();
        let profile = build_profile_event(identity, &format!("Publisher of {name}"), "", "", now)?;
        match pool.publish(&profile).await {
            Ok(_) => {
                std::fs::write(home.join(PROFILE_SENT), profile.id.to_hex())?;
                profile_event_id = Some(profile.id.to_hex());
            }
            Err(e) => tracing::warn!("publisher profile not published: {e}"),
        }
    }
    let event = build_release_event(env, identity.nostr_keys())?;
    let report = match pool.publish(&event).await {
        Ok(r) => r,
        Err(archy_relays::RelayError::QuorumNotMet(report)) => {
            let lines: Vec<String> = answers(&report)
                .iter()
                .map(|a| {
                    format!(
                        "  {}: {} {}",
                        a.relay,
                        a.outcome,
                        a.message.clone().unwrap_or_default()
                    )
                })
                .collect();
            anyhow::bail!(
                "only {} of the required {} relays accepted release {}:\n{}",
                report.accepted,
                report.quorum,
                event.id.to_hex(),
                lines.join("\n")
            );
        }
        Err(e) => return Err(e.into()),
    };
    let get = |p: &[&str]| {
        crate::release::str_path(&env.manifest, p)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(PublishOutcome {
        event_id: event.id.to_hex(),
        app: get(&["id"]),
        version: get(&["version"]),
        relays: answers(&report),
        accepted: report.accepted,
        quorum: report.quorum,
        profile_event_id,
    })
}
