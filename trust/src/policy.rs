//! Install policy: what a tier allows.
//!
//! Installs and automatic updates go ahead without asking only from publishers at or above the
//! operator's install tier; below it the user must confirm explicitly (an automatic update must
//! therefore not happen); a blocked publisher is refused whatever the user says.

use serde::{Deserialize, Serialize};

use crate::score::Tier;

/// The answer to "may I install or update from this publisher?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// At or above the required tier.
    Allow,
    /// Below the required tier: only with the user's explicit confirmation, never automatically.
    NeedsConfirmation,
    /// Blocked: never.
    Deny,
}

/// Decides for a publisher at `tier` when the operator requires `required`.
/// `Blocked` is always denied, even if `required` is `Blocked`.
pub fn decide(tier: Tier, required: Tier) -> Decision {
    if tier == Tier::Blocked {
        Decision::Deny
    } else if tier >= required {
        Decision::Allow
    } else {
        Decision::NeedsConfirmation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Decision::*;
        use Tier::*;
        let tiers = [Blocked, Unknown, Known, Trusted];
        for required in tiers {
            for tier in tiers {
                let expected = if tier == Blocked {
                    Deny
                } else if tier >= required {
                    Allow
                } else {
                    NeedsConfirmation
                };
                assert_eq!(decide(tier, required), expected, "{tier} at {required}");
            }
        }
        assert_eq!(decide(Known, Trusted), NeedsConfirmation);
        assert_eq!(decide(Trusted, Known), Allow);
        assert_eq!(decide(Blocked, Blocked), Deny);
    }
}
