//! [`TrustConfig`]: every tunable of the engine, with documented defaults, loadable from TOML/JSON.
//!
//! Defaults are chosen in the crate doc ("Parameters and why"). [`TrustConfig::validate`]
//! rejects values that would break a guarantee, naming the field and the rule.

use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::score::Tier;

/// Engine configuration. All fields have defaults (`#[serde(default)]`); unknown fields are
/// rejected so a typo in the operator's config file is an error, not a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Keys trust flows from: the node's own Nostr key plus operator-chosen keys. Anchors score 1
    /// and are `trusted` (unless denylisted). With no anchors nobody is trusted.
    pub anchors: Vec<Key>,
    /// Operator additions to the built-in denylist.
    pub denylist: Vec<Key>,
    /// Restart (teleport) probability α of the personalised PageRank. Default 0.25.
    pub restart_probability: f64,
    /// Weight of a NIP-02 follow edge. Default 1.
    pub follow_weight: f64,
    /// Weight of an `endorse` label edge (added to a follow of the same pair). Default 3.
    pub endorse_weight: f64,
    /// Penalty per negative signal, as a fraction of the reporter's own PageRank mass.
    pub penalties: Penalties,
    /// Multiplicative discounts from the node's own observations.
    pub evidence: EvidenceWeights,
    /// Discount for keys the node has only just met.
    pub history: HistoryWeights,
    /// Calibration of the score: a key endorsed by a sole anchor that endorses
    /// `reference_fanout` keys (and nothing else) has x = 1, i.e. score 1 − 1/e ≈ 0.63. Default 20.
    pub reference_fanout: f64,
    /// Tier thresholds on the score.
    pub thresholds: Thresholds,
    /// A distrust label or a report *by an anchor* blocks the target (the operator's own word).
    /// Default true.
    pub anchor_negative_blocks: bool,
    /// Minimum tier for installs and automatic updates without confirmation. Default `trusted`.
    pub install_tier: Tier,
    /// Power iteration stops when the L1 change of one step is below this. Default 1e-10.
    pub tolerance: f64,
    /// Safety cap on power iterations. Default 1000 (α = 0.25 needs ~80 at 1e-10).
    pub max_iterations: u32,
    /// Incremental updates push residual until every key's residual is at most this (divided by
    /// n/100,000 for graphs of n > 100,000 keys, so it stays the same share of the average
    /// mass). Default 1e-9 (see [`INCREMENTAL_SCORE_EPSILON`] for what it gives).
    pub incremental_epsilon: f64,
}

/// The most independent vouch paths `thresholds.independent_paths` may ask for (each is one
/// augmenting search per candidate key).
pub const MAX_INDEPENDENT_PATHS: u32 = 64;

/// The accuracy the incremental update is measured against, in score units: after any sequence
/// of incremental updates with the default `incremental_epsilon`, every score is within this of
/// a full recompute (`examples/scale.rs` checks it over random edits at 100k keys, and
/// `tests/properties.rs` on small graphs). A measured property of the default, not a proof: the
/// proved bound is [`crate::ComputeStats::mass_error_bound`], on the L1 norm of the mass.
pub const INCREMENTAL_SCORE_EPSILON: f64 = 1e-4;

/// Penalty weights λ (see the crate doc): a negative signal from reporter r lowers the target's
/// mass by λ·p(r). Each must be ≤ α/(1−α) so that an endorsement can never lower a score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Penalties {
    /// `distrust` label. Default 0.3.
    pub distrust: f64,
    /// Report `malware`. Default 0.3.
    pub malware: f64,
    /// Report `impersonation`. Default 0.3.
    pub impersonation: f64,
    /// Report `spam`. Default 0.15.
    pub spam: f64,
    /// Any other report. Default 0.1.
    pub other: f64,
}

/// Evidence discounts: the score mass is multiplied by exp(−(equivocation·n_eq + bad_bytes·n_bad)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceWeights {
    /// Per equivocation. Default 1.5 (one equivocation keeps 22 %).
    pub equivocation: f64,
    /// Per failed-verification fetch. Default 0.5 (one keeps 61 %).
    pub bad_bytes: f64,
}

/// History discount: factor = new_key_factor + (1 − new_key_factor)·maturity, where maturity is
/// the larger of age/maturity_days and releases/maturity_releases, capped at 1. Applies only to
/// keys the node has a [`crate::History`] for (publishers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryWeights {
    /// Factor for a key seen for the first time just now with no release. Default 0.5.
    pub new_key_factor: f64,
    /// Age at which a key counts as mature. Default 30 days.
    pub maturity_days: f64,
    /// Accepted releases at which a key counts as mature. Default 5.
    pub maturity_releases: f64,
}

/// Score thresholds of the tiers (blocked is not a threshold: denylist or an anchor's word).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// At or above: `trusted`. Default 0.5.
    pub trusted: f64,
    /// At or above: `known`. Default 0.1.
    pub known: f64,
    /// Independent vouch paths from the anchors a key needs, besides the `trusted` score, to
    /// be `trusted` when no anchor endorses it directly (see "Sybil-resistant tier" in the
    /// crate doc: fewer fooled endorsers than this never make a key `trusted`). Default 3.
    pub independent_paths: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            anchors: Vec::new(),
            denylist: Vec::new(),
            restart_probability: 0.25,
            follow_weight: 1.0,
            endorse_weight: 3.0,
            penalties: Penalties::default(),
            evidence: EvidenceWeights::default(),
            history: HistoryWeights::default(),
            reference_fanout: 20.0,
            thresholds: Thresholds::default(),
            anchor_negative_blocks: true,
            install_tier: Tier::Trusted,
            tolerance: 1e-10,
            max_iterations: 1000,
            incremental_epsilon: 1e-9,
        }
    }
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties {
            distrust: 0.3,
            malware: 0.3,
            impersonation: 0.3,
            spam: 0.15,
            other: 0.1,
        }
    }
}

impl Default for EvidenceWeights {
    fn default() -> Self {
        EvidenceWeights {
            equivocation: 1.5,
            bad_bytes: 0.5,
        }
    }
}

impl Default for HistoryWeights {
    fn default() -> Self {
        HistoryWeights {
            new_key_factor: 0.5,
            maturity_days: 30.0,
            maturity_releases: 5.0,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            trusted: 0.5,
            known: 0.1,
            independent_paths: 3,
        }
    }
}

/// A configuration value that would break the engine or one of its guarantees.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("trust config: `{field}` {rule} (got {value})")]
pub struct ConfigError {
    /// The offending field, dotted (`penalties.spam`).
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: String,
    /// The value given.
    pub value: String,
}

fn check(
    ok: bool,
    field: &'static str,
    rule: impl Into<String>,
    value: impl ToString,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            rule: rule.into(),
            value: value.to_string(),
        })
    }
}

fn non_negative(v: f64, field: &'static str) -> Result<(), ConfigError> {
    check(
        v.is_finite() && v >= 0.0,
        field,
        "must be a finite number >= 0",
        v,
    )
}

impl TrustConfig {
    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = self.restart_probability;
        check(
            a.is_finite() && (0.05..=0.95).contains(&a),
            "restart_probability",
            "must be between 0.05 and 0.95",
            a,
        )?;
        non_negative(self.follow_weight, "follow_weight")?;
        non_negative(self.endorse_weight, "endorse_weight")?;
        let cap = a / (1.0 - a);
        let p = &self.penalties;
        for (v, field) in [
            (p.distrust, "penalties.distrust"),
            (p.malware, "penalties.malware"),
            (p.impersonation, "penalties.impersonation"),
            (p.spam, "penalties.spam"),
            (p.other, "penalties.other"),
        ] {
            non_negative(v, field)?;
            check(
                v <= cap,
                field,
                format!(
                    "must be at most restart_probability/(1-restart_probability) = {cap:.4}, \
                     or an endorsement could lower its target's score"
                ),
                v,
            )?;
        }
        non_negative(self.evidence.equivocation, "evidence.equivocation")?;
        non_negative(self.evidence.bad_bytes, "evidence.bad_bytes")?;
        let h = &self.history;
        check(
            (0.0..=1.0).contains(&h.new_key_factor),
            "history.new_key_factor",
            "must be between 0 and 1",
            h.new_key_factor,
        )?;
        non_negative(h.maturity_days, "history.maturity_days")?;
        non_negative(h.maturity_releases, "history.maturity_releases")?;
        check(
            self.reference_fanout.is_finite() && self.reference_fanout > 0.0,
            "reference_fanout",
            "must be > 0",
            self.reference_fanout,
        )?;
        let t = &self.thresholds;
        check(
            t.known > 0.0 && t.known <= 1.0,
            "thresholds.known",
            "must be in (0, 1]",
            t.known,
        )?;
        check(
            t.trusted >= t.known && t.trusted <= 1.0,
            "thresholds.trusted",
            format!("must be in [thresholds.known = {}, 1]", t.known),
            t.trusted,
        )?;
        check(
            (1..=MAX_INDEPENDENT_PATHS).contains(&t.independent_paths),
            "thresholds.independent_paths",
            format!("must be between 1 and {MAX_INDEPENDENT_PATHS}"),
            t.independent_paths,
        )?;
        check(
            self.tolerance > 0.0 && self.tolerance <= 1e-3,
            "tolerance",
            "must be in (0, 1e-3]",
            self.tolerance,
        )?;
        check(
            self.max_iterations >= 1,
            "max_iterations",
            "must be >= 1",
            self.max_iterations,
        )?;
        check(
            self.incremental_epsilon > 0.0 && self.incremental_epsilon <= 1e-6,
            "incremental_epsilon",
            "must be in (0, 1e-6]",
            self.incremental_epsilon,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = TrustConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrustConfig>(&json).unwrap(), c);
        // A partial document fills the rest from defaults.
        let partial: TrustConfig =
            serde_json::from_str(r#"{"thresholds":{"trusted":0.7}}"#).unwrap();
        assert_eq!(partial.thresholds.trusted, 0.7);
        assert_eq!(partial.thresholds.known, 0.1);
        assert!(serde_json::from_str::<TrustConfig>(r#"{"tresholds":{}}"#).is_err());
    }

    #[test]
    fn penalty_above_the_monotonicity_cap_is_rejected_by_name() {
        let mut c = TrustConfig::default();
        c.penalties.spam = 0.5;
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, "penalties.spam");
        assert!(err.to_string().contains("at most"), "{err}");
        let mut c = TrustConfig::default();
        c.thresholds.trusted = 0.05;
        assert_eq!(c.validate().unwrap_err().field, "thresholds.trusted");
    }
}
