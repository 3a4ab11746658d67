//! `archy trust show|anchor|block|unblock|refresh`: whom this node trusts, and why.

use super::{call, print_json};
use crate::home::Home;
use crate::node::rpc::{TrustAnchor, TrustBlock, TrustRefresh, TrustShowRequest};
use crate::node::trust::{KeyReport, KeyTier, Refreshed};
use anyhow::Result;
use archy_trust::{BlockReason, Decision, EdgeKinds, Key, NegativeSignal};
use clap::Subcommand;
use std::collections::BTreeMap;

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Score, tier and explanation of a key: an npub, a 64-hex Nostr key, or a DID whose
    /// releases are in the catalog.
    Show {
        #[command(flatten)]
        req: TrustShowRequest,
        #[arg(long)]
        json: bool,
    },
    /// Add or remove a trust anchor (a key whose judgement this node adopts).
    #[command(subcommand)]
    Anchor(AnchorCmd),
    /// Never install from KEY (score 0, tier blocked); its endorsements stop counting.
    Block {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Undo `block` (keys on the built-in denylist stay blocked).
    Unblock {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Fetch trust signals from the relays now and recompute the scores.
    Refresh {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnchorCmd {
    /// Trust KEY's follows and endorsements as your own.
    Add {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop using KEY as an anchor.
    Rm {
        key: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(home: &Home, cmd: TrustCmd) -> Result<()> {
    match cmd {
        TrustCmd::Show { req, json } => {
            let v = call(home, req).await?;
            if json {
                return print_json(&v);
            }
            print_report(&v.first, &v.names);
            for other in &v.other_keys {
                println!();
                print_report(other, &v.names);
            }
            if v.last_refresh.is_none() {
                println!(
                    "(signals as of the last refresh; `archy trust refresh` fetches new ones)"
                );
            }
            Ok(())
        }
        TrustCmd::Anchor(AnchorCmd::Add { key, json }) => {
            let v = call(home, TrustAnchor { key, add: true }).await?;
            if json {
                return print_json(&v);
            }
            changed(&v.keys, v.changed, &[], "anchor added", "already an anchor");
            if let Some(Refreshed::Error(e)) = &v.refresh {
                println!("fetching its signals failed ({e}); try `archy trust refresh`");
            }
            Ok(())
        }
        TrustCmd::Anchor(AnchorCmd::Rm { key, json }) => {
            let v = call(home, TrustAnchor { key, add: false }).await?;
            if json {
                return print_json(&v);
            }
            changed(
                &v.keys,
                v.changed,
                &[],
                "anchor removed",
                "was not an anchor",
            );
            Ok(())
        }
        TrustCmd::Block { key, json } => {
            let v = call(home, TrustBlock { key, block: true }).await?;
            if json {
                return print_json(&v);
            }
            changed(&v.keys, v.changed, &v.tiers, "blocked", "already blocked");
            Ok(())
        }
        TrustCmd::Unblock { key, json } => {
            let v = call(home, TrustBlock { key, block: false }).await?;
            if json {
                return print_json(&v);
            }
            changed(&v.keys, v.changed, &v.tiers, "unblocked", "was not blocked");
            Ok(())
        }
        TrustCmd::Refresh { json } => {
            let v = call(home, TrustRefresh).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "asked {} authors and about {} publishers: {} events ({} invalid, {} from the future), {} signals changed",
                v.authors, v.publishers, v.received, v.invalid, v.future, v.changed
            );
            println!("graph: {} keys, {} edges", v.keys, v.edges);
            Ok(())
        }
    }
}

fn changed(keys: &[Key], n: usize, tiers: &[KeyTier], done: &str, nothing: &str) {
    for k in keys {
        println!("{k}: {}", if n > 0 { done } else { nothing });
    }
    for t in tiers {
        println!("  now {} (score {:.4})", t.tier, t.score);
    }
}

fn name(names: &BTreeMap<String, String>, key: &Key) -> String {
    let hex = key.to_hex();
    match names.get(&hex) {
        Some(n) => format!("{n} ({})", &hex[..8]),
        None => hex,
    }
}

fn kinds(k: &EdgeKinds) -> String {
    let mut out = Vec::new();
    if k.endorse {
        out.push("endorses");
    }
    if k.follow {
        out.push("follows");
    }
    out.join("+")
}

/// The human form of one report: the verdict first, then the reasons.
fn print_report(v: &KeyReport, names: &BTreeMap<String, String>) {
    let e = &v.report.explanation;
    println!("key:      {}", v.report.key);
    println!("npub:     {}", v.npub);
    println!(
        "score:    {:.4}   tier: {}   install: {} (required tier: {})",
        v.report.score,
        v.report.tier,
        match v.decision {
            Decision::Allow => "allowed",
            Decision::NeedsConfirmation => "asks for confirmation",
            Decision::Deny => "refused",
        },
        v.required_tier
    );
    println!("rule:     {}", e.rule.describe());
    if let Some(c) = &e.corroboration {
        let endorsed = if c.anchor_endorsed {
            "an anchor endorses it; "
        } else {
            ""
        };
        println!(
            "vouches:  {endorsed}{} of {} independent vouch path(s) needed for trusted",
            c.independent_paths, c.needed
        );
        for p in &c.paths {
            let line: Vec<String> = p.iter().map(|k| name(names, k)).collect();
            println!("  {}", line.join(" -> "));
        }
    }
    if e.anchor {
        println!("why:      it is an anchor of this node");
    }
    if let Some(b) = &e.blocked {
        let why = match b {
            BlockReason::BuiltinDenylist => {
                "its private key is public (built-in denylist)".to_owned()
            }
            BlockReason::OperatorDenylist => {
                "blocked by the operator (`archy trust unblock` undoes it)".to_owned()
            }
            BlockReason::AnchorNegative { anchor } => format!(
                "an anchor, {}, distrusts or reported it",
                name(names, anchor)
            ),
        };
        println!("blocked:  {why}");
    }
    if e.paths.is_empty() && !e.anchor {
        println!("paths:    none: no anchor reaches this key through follows or endorsements");
    } else if !e.paths.is_empty() {
        println!("strongest paths from the anchors:");
        for p in &e.paths {
            let mut line = p
                .hops
                .first()
                .map(|h| name(names, &h.from))
                .unwrap_or_default();
            for h in &p.hops {
                line.push_str(&format!(" -{}-> {}", kinds(&h.kinds), name(names, &h.to)));
            }
            println!("  {line}   (strength {:.4})", p.strength);
        }
    }
    for c in &e.endorsers {
        println!(
            "  in:  {} {} it (+{:.5} mass)",
            name(names, &c.from),
            kinds(&c.kinds),
            c.mass
        );
    }
    for p in &e.penalties {
        let what = match &p.signal {
            NegativeSignal::Report { reason } => format!(
                "reported it ({})",
                serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "other".into())
            ),
            NegativeSignal::Distrust => "distrusts it".to_owned(),
        };
        println!(
            "  out: {} {what} (−{:.5} mass)",
            name(names, &p.from),
            p.penalty_mass
        );
    }
    let (eq, bad) = (e.evidence.equivocations, e.evidence.bad_bytes);
    if eq + bad > 0 {
        println!(
            "evidence: {eq} equivocation(s), {bad} bad-bytes fetch(es): score ×{:.3}",
            e.evidence_factor
        );
    }
    if let Some(h) = &e.history {
        println!(
            "history:  {} accepted release(s), first seen at {}: new-key factor ×{:.3}",
            h.accepted_releases, h.first_seen, e.history_factor
        );
    }
    println!("mass:     {:.6} (penalties −{:.6})", e.mass, e.penalty_mass);
}
