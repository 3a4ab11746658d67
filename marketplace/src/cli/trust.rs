//! `archy trust show|anchor|block|unblock|refresh`: whom this node trusts, and why.

use super::{call, print_json};
use crate::home::Home;
use crate::node::rpc::Request;
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Score, tier and explanation of a key: an npub, a 64-hex Nostr key, or a DID whose
    /// releases are in the catalog.
    Show {
        key: String,
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
        TrustCmd::Show { key, json } => {
            let v = call(home, Request::TrustShow { key }).await?;
            if json {
                return print_json(&v);
            }
            print_report(&v, &v["names"]);
            for other in v["other_keys"].as_array().into_iter().flatten() {
                println!();
                print_report(other, &v["names"]);
            }
            if v["last_refresh"].is_null() {
                println!(
                    "(signals as of the last refresh; `archy trust refresh` fetches new ones)"
                );
            }
            Ok(())
        }
        TrustCmd::Anchor(AnchorCmd::Add { key, json }) => {
            let v = call(home, Request::TrustAnchor { key, add: true }).await?;
            changed(&v, json, "anchor added", "already an anchor")?;
            if !json {
                if let Some(e) = v["refresh"]["error"].as_str() {
                    println!("fetching its signals failed ({e}); try `archy trust refresh`");
                }
            }
            Ok(())
        }
        TrustCmd::Anchor(AnchorCmd::Rm { key, json }) => {
            let v = call(home, Request::TrustAnchor { key, add: false }).await?;
            changed(&v, json, "anchor removed", "was not an anchor")
        }
        TrustCmd::Block { key, json } => {
            let v = call(home, Request::TrustBlock { key, block: true }).await?;
            changed(&v, json, "blocked", "already blocked")
        }
        TrustCmd::Unblock { key, json } => {
            let v = call(home, Request::TrustBlock { key, block: false }).await?;
            changed(&v, json, "unblocked", "was not blocked")
        }
        TrustCmd::Refresh { json } => {
            let v = call(home, Request::TrustRefresh).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "asked {} authors and about {} publishers: {} events ({} invalid, {} from the future), {} signals changed",
                v["authors"], v["publishers"], v["received"], v["invalid"], v["future"], v["changed"]
            );
            println!("graph: {} keys, {} edges", v["keys"], v["edges"]);
            Ok(())
        }
    }
}

fn changed(v: &Value, json: bool, done: &str, nothing: &str) -> Result<()> {
    if json {
        return print_json(v);
    }
    let n = v["changed"].as_u64().unwrap_or(0);
    for k in v["keys"].as_array().into_iter().flatten() {
        println!(
            "{}: {}",
            k.as_str().unwrap_or("?"),
            if n > 0 { done } else { nothing }
        );
    }
    for t in v["tiers"].as_array().into_iter().flatten() {
        println!(
            "  now {} (score {:.4})",
            t["tier"].as_str().unwrap_or("?"),
            t["score"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn name(names: &Value, key: &Value) -> String {
    let hex = key.as_str().unwrap_or("?");
    match names.get(hex).and_then(Value::as_str) {
        Some(n) => format!("{n} ({})", &hex[..hex.len().min(8)]),
        None => hex.to_owned(),
    }
}

fn kinds(k: &Value) -> String {
    let mut out = Vec::new();
    if k["endorse"].as_bool() == Some(true) {
        out.push("endorses");
    }
    if k["follow"].as_bool() == Some(true) {
        out.push("follows");
    }
    out.join("+")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The human form of one report: the verdict first, then the reasons.
fn print_report(v: &Value, names: &Value) {
    let e = &v["explanation"];
    println!("key:      {}", v["key"].as_str().unwrap_or("?"));
    println!("npub:     {}", v["npub"].as_str().unwrap_or("?"));
    println!(
        "score:    {:.4}   tier: {}   install: {} (required tier: {})",
        f(&v["score"]),
        v["tier"].as_str().unwrap_or("?"),
        match v["decision"].as_str() {
            Some("allow") => "allowed",
            Some("needs-confirmation") => "asks for confirmation",
            Some("deny") => "refused",
            _ => "?",
        },
        v["required_tier"].as_str().unwrap_or("?")
    );
    if e["anchor"].as_bool() == Some(true) {
        println!("why:      it is an anchor of this node");
    }
    if let Some(b) = e["blocked"].as_object() {
        let why = match b.get("type").and_then(Value::as_str) {
            Some("builtin-denylist") => "its private key is public (built-in denylist)".to_owned(),
            Some("operator-denylist") => {
                "blocked by the operator (`archy trust unblock` undoes it)".to_owned()
            }
            Some("anchor-negative") => format!(
                "an anchor, {}, distrusts or reported it",
                name(names, &b["anchor"])
            ),
            other => format!("{other:?}"),
        };
        println!("blocked:  {why}");
    }
    let paths = e["paths"].as_array().cloned().unwrap_or_default();
    if paths.is_empty() && e["anchor"].as_bool() != Some(true) {
        println!("paths:    none: no anchor reaches this key through follows or endorsements");
    } else if !paths.is_empty() {
        println!("strongest paths from the anchors:");
        for p in paths {
            let hops = p["hops"].as_array().cloned().unwrap_or_default();
            let mut line = hops
                .first()
                .map(|h| name(names, &h["from"]))
                .unwrap_or_default();
            for h in &hops {
                line.push_str(&format!(
                    " -{}-> {}",
                    kinds(&h["kinds"]),
                    name(names, &h["to"])
                ));
            }
            println!("  {line}   (strength {:.4})", f(&p["strength"]));
        }
    }
    for c in e["endorsers"].as_array().into_iter().flatten() {
        println!(
            "  in:  {} {} it (+{:.5} mass)",
            name(names, &c["from"]),
            kinds(&c["kinds"]),
            f(&c["mass"])
        );
    }
    for p in e["penalties"].as_array().into_iter().flatten() {
        let what = match p["signal"]["type"].as_str() {
            Some("report") => format!(
                "reported it ({})",
                p["signal"]["reason"].as_str().unwrap_or("other")
            ),
            _ => "distrusts it".to_owned(),
        };
        println!(
            "  out: {} {what} (−{:.5} mass)",
            name(names, &p["from"]),
            f(&p["penalty_mass"])
        );
    }
    let ev = &e["evidence"];
    let eq = ev["equivocations"].as_u64().unwrap_or(0);
    let bad = ev["bad_bytes"].as_u64().unwrap_or(0);
    if eq + bad > 0 {
        println!(
            "evidence: {eq} equivocation(s), {bad} bad-bytes fetch(es): score ×{:.3}",
            f(&e["evidence_factor"])
        );
    }
    if let Some(h) = e["history"].as_object() {
        println!(
            "history:  {} accepted release(s), first seen at {}: new-key factor ×{:.3}",
            h.get("accepted_releases").cloned().unwrap_or_default(),
            h.get("first_seen").cloned().unwrap_or_default(),
            f(&e["history_factor"])
        );
    }
    println!(
        "mass:     {:.6} (penalties −{:.6})",
        f(&e["mass"]),
        f(&e["penalty_mass"])
    );
}
