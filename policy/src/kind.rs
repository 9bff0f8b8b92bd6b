//! The one list of MARLLB's policies: every way of weighting and choosing
//! backends that the simulator (`--policy`), the controller (`agent =`) and the
//! testbed (`--policy`) name, with what each one means.
//!
//! A policy is a source of backend weights plus the data plane's placement
//! method that uses them ([`PolicyKind::placement`]):
//!
//! | policy | placement | the controller's `agent` for it | that agent publishes, every cycle |
//! |---|---|---|---|
//! | `ecmp` | alias draw | `ecmp` | equal weights |
//! | `wcmp` | alias draw | `wcmp` | the configured weights |
//! | `static` | alias draw | `static` | the weights at its start, never recomputed |
//! | `lsq` | SED | `ecmp` | (as `lsq` agent: 1 / (active + 1)) |
//! | `sed` | SED: argmin (active + 1) / weight | `wcmp` | (as `sed` agent: configured / (active + 1)) |
//! | `adaptive-sed` | SED | `adaptive-sed` | configured × a correction from completion times ([`crate::AdaptiveSed`]) |
//! | `maglev` | the consistent Maglev table | `wcmp` | (the table is built from the configured weights) |
//! | `p2c-ewma` | two choices by peak-EWMA completion time × (active + 1) / configured weight | simulator only | |
//! | `oracle` | least expected slowdown from true speeds and every node's jobs | simulator only | |
//! | `es`, `qmix`, `sac-gru` | SED | the same | a trained model's weights |
//!
//! The `lsq` and `sed` *agents* recompute SED's quotient in the controller
//! once a cycle from the active-flow gauges summed over workers: that is SED
//! for a data plane that places by alias draw. Where every VIP a backend
//! serves places by SED (which adds the active flows itself, per packet), the
//! agents leave that term to the data plane and publish the configured
//! (`sed`) or equal (`lsq`) weights, so the flows are not counted twice
//! (`marllb_ctrl::cycle::dp_counts_active`); SED over a SED data plane is then
//! the `wcmp` agent's weights, and [`PolicyKind::agent`] pairs them that way;
//! the testbed and the simulator too.
//!
//! What each consumer runs: the controller runs the weight sources
//! ([`PolicyKind::runs_in_controller`]: not `maglev`, a data-plane table, nor
//! the two simulator-only ones); the simulator runs every one (`static` is
//! `wcmp` there: nothing recomputes); the testbed pairs each with the data
//! plane's method and the controller's agent.

use core::fmt;
use core::str::FromStr;

use marllb_core::select::Method;

/// A named policy (see the [module](self) table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Equal weights, alias draw.
    Ecmp,
    /// Configured weights, alias draw.
    Wcmp,
    /// The weights at the controller's start, never recomputed.
    Static,
    /// Least active flows: SED over equal weights.
    Lsq,
    /// Shortest expected delay over the configured weights.
    Sed,
    /// SED whose weights are re-estimated every cycle from the filtered
    /// per-backend flow completion times (no model, no learning).
    AdaptiveSed,
    /// Power of two choices by peak-EWMA completion time (simulator only).
    P2cEwma,
    /// The consistent Maglev table over the configured weights.
    Maglev,
    /// True job counts and speeds (simulator only).
    Oracle,
    /// The `es` model: log-step corrections of the configured weights from
    /// completion-time features, one network shared by backends and LB nodes.
    Es,
    /// A QMIX agent network (one per LB node; the mixer is training-only).
    Qmix,
    /// SAC with a GRU (one LB node).
    SacGru,
}

impl PolicyKind {
    /// Every policy, in the table's order.
    pub const ALL: [Self; 12] = [
        Self::Ecmp,
        Self::Wcmp,
        Self::Static,
        Self::Lsq,
        Self::Sed,
        Self::AdaptiveSed,
        Self::P2cEwma,
        Self::Maglev,
        Self::Oracle,
        Self::Es,
        Self::Qmix,
        Self::SacGru,
    ];

    /// Its name on every command line, in configuration files and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ecmp => "ecmp",
            Self::Wcmp => "wcmp",
            Self::Static => "static",
            Self::Lsq => "lsq",
            Self::Sed => "sed",
            Self::AdaptiveSed => "adaptive-sed",
            Self::P2cEwma => "p2c-ewma",
            Self::Maglev => "maglev",
            Self::Oracle => "oracle",
            Self::Es => "es",
            Self::Qmix => "qmix",
            Self::SacGru => "sac-gru",
        }
    }

    /// The policy called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `true` for the trained models (they need an ONNX file).
    pub fn is_learned(self) -> bool {
        matches!(self, Self::Es | Self::Qmix | Self::SacGru)
    }

    /// `true` for the ones the controller can run as its `agent`: weight
    /// sources. `maglev` is the data plane's table (the controller's weights
    /// do not move it), `p2c-ewma` and `oracle` exist in the simulator only.
    pub fn runs_in_controller(self) -> bool {
        !matches!(self, Self::Maglev | Self::P2cEwma | Self::Oracle)
    }

    /// The controller agent that gives this policy on its
    /// [`placement`](Self::placement) (the module table's third column);
    /// `None` for the simulator-only ones.
    pub fn agent(self) -> Option<Self> {
        match self {
            Self::Lsq => Some(Self::Ecmp),
            Self::Sed | Self::Maglev => Some(Self::Wcmp),
            Self::P2cEwma | Self::Oracle => None,
            other => Some(other),
        }
    }

    /// The data plane's placement method for it; `None` for the
    /// simulator-only policies, whose placement the data plane does not have.
    pub fn placement(self) -> Option<Method> {
        match self {
            Self::Ecmp | Self::Wcmp | Self::Static => Some(Method::Alias),
            Self::Maglev => Some(Method::Maglev),
            Self::Lsq | Self::Sed | Self::AdaptiveSed | Self::Es | Self::Qmix | Self::SacGru => {
                Some(Method::Sed)
            }
            Self::P2cEwma | Self::Oracle => None,
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no policy; its message lists the names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {name:?} (one of: {})", PolicyKind::ALL.map(PolicyKind::name).join(", "))]
pub struct UnknownPolicy {
    /// What was given.
    pub name: String,
}

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownPolicy {
            name: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_agree_with_serde() {
        for k in PolicyKind::ALL {
            assert_eq!(k.name().parse::<PolicyKind>(), Ok(k));
            let json = serde_json::to_string(&k).expect("serializes");
            assert_eq!(json, format!("\"{}\"", k.name()));
            let back: PolicyKind = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, k);
        }
        let e = "adaptive_sed"
            .parse::<PolicyKind>()
            .expect_err("snake case");
        assert!(e.to_string().contains("adaptive-sed"), "{e}");
    }

    #[test]
    fn learned_ones_run_on_sed_in_the_controller() {
        for k in PolicyKind::ALL {
            if k.is_learned() {
                assert_eq!(k.placement(), Some(Method::Sed));
                assert_eq!(k.agent(), Some(k));
            }
            // Every agent a policy maps to is one the controller runs, and
            // maps to itself.
            if let Some(a) = k.agent() {
                assert!(a.runs_in_controller(), "{k}");
                assert_eq!(a.agent(), Some(a), "{k}");
                assert!(k.placement().is_some(), "{k}");
            }
        }
        assert_eq!(PolicyKind::Oracle.placement(), None);
    }
}
