//! The heuristic agents, used when no model is configured or usable.
//!
//! All produce Q16.16 weights normalized so the largest is 1.0
//! ([`WEIGHT_ONE`]); a positive real weight never rounds down to 0.
//!
//! What each agent publishes is in the one list of policies,
//! [`marllb_policy::kind`]; `wcmp`'s configured weight is `wcmp_weights` when
//! set, else the region's base weight.
//!
//! `lsq` and `sed` are recomputed every cycle from the active-flow gauges summed
//! over workers, so between two cycles new flows lean toward the backends that
//! were least loaded (relative to their capacity for `sed`) at the last one:
//! SED for a data plane that places by alias draw. A data plane that places by
//! SED adds the active flows itself, per packet; for a backend whose every VIP
//! does, [`crate::cycle`] passes its gauge to [`weights`] as 0 so the flows are
//! not counted twice ([`crate::cycle::dp_counts_active`]).
//!
//! `adaptive-sed` ([`marllb_policy::AdaptiveSed`], run by [`crate::cycle`] rather
//! than by [`weights`]) corrects the configured weights by what the data plane
//! measures: each cycle backend i's log correction c_i moves a fraction `RATE`
//! of the way toward −`GAIN`·ln(fct_i / pool), fct_i its filtered flow
//! completion time and pool the geometric mean over the backends; the step is
//! clamped to ±`MAX_STEP` per cycle, c_i to ±`CLAMP`, and the corrections are
//! centred (the constants, tuned in the simulator, are in
//! `marllb_policy::adaptive`). A backend whose flows complete later than the
//! pool's loses weight in proportion, and regains it when they no longer do;
//! the corrections start at 0 (the configured weights) whenever it becomes the
//! active agent. Its weights are meant for the data plane's SED selection,
//! which adds the active-flow term. It is a heuristic: no model, no learning.

use marllb_core::{Weight, WEIGHT_ONE};

use crate::config::PolicyKind;

/// Scales positive reals so the largest is [`WEIGHT_ONE`]; zeros stay zero.
pub fn normalize(real: impl Iterator<Item = f64> + Clone, out: &mut Vec<Weight>) {
    out.clear();
    let max = real.clone().fold(0.0f64, f64::max);
    for v in real {
        let w = if max > 0.0 && v > 0.0 {
            ((v / max) * f64::from(WEIGHT_ONE)).round().max(1.0) as Weight
        } else {
            0
        };
        out.push(w);
    }
}

/// Computes a heuristic's weights into `out`. `base` are the configured
/// (Q16.16) weights, `active` the active-flow gauges; both by backend.
pub fn weights(kind: PolicyKind, base: &[Weight], active: &[u32], out: &mut Vec<Weight>) {
    let n = base.len();
    match kind {
        PolicyKind::Ecmp => {
            out.clear();
            out.resize(n, WEIGHT_ONE);
        }
        // Adaptive SED and the learned agents start at the configured weights;
        // their per-cycle weights are computed by the control. The policies
        // that are not agents (refused by `parse_agent`) would get the
        // configured weights too: their placement is the data plane's own.
        PolicyKind::Wcmp
        | PolicyKind::Maglev
        | PolicyKind::P2cEwma
        | PolicyKind::Oracle
        | PolicyKind::Static
        | PolicyKind::AdaptiveSed
        | PolicyKind::Qmix
        | PolicyKind::SacGru
        | PolicyKind::Es => {
            normalize(base.iter().map(|&b| f64::from(b)), out);
        }
        PolicyKind::Lsq => normalize(
            (0..n).map(|i| 1.0 / (f64::from(active.get(i).copied().unwrap_or(0)) + 1.0)),
            out,
        ),
        PolicyKind::Sed => normalize(
            base.iter().enumerate().map(|(i, &b)| {
                f64::from(b) / (f64::from(active.get(i).copied().unwrap_or(0)) + 1.0)
            }),
            out,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristics() {
        let base = [WEIGHT_ONE, 2 * WEIGHT_ONE, WEIGHT_ONE];
        let active = [0, 3, 9];
        let mut w = Vec::new();
        weights(PolicyKind::Ecmp, &base, &active, &mut w);
        assert_eq!(w, vec![WEIGHT_ONE; 3]);
        weights(PolicyKind::Wcmp, &base, &active, &mut w);
        assert_eq!(w, vec![WEIGHT_ONE / 2, WEIGHT_ONE, WEIGHT_ONE / 2]);
        weights(PolicyKind::Lsq, &base, &active, &mut w);
        assert_eq!(w, vec![WEIGHT_ONE, WEIGHT_ONE / 4, WEIGHT_ONE / 10 + 1]);
        weights(PolicyKind::Sed, &base, &active, &mut w);
        // 1/1, 2/4, 1/10.
        assert_eq!(w[0], WEIGHT_ONE);
        assert_eq!(w[1], WEIGHT_ONE / 2);
        normalize([0.0, 1e-9, 1.0].into_iter(), &mut w);
        assert_eq!(w, vec![0, 1, WEIGHT_ONE]);
    }
}
