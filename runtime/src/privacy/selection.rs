//! DP partition selection: releasing group keys that are not public.
//!
//! # Privacy
//! **What is released:** the key tuples found in the data whose noisy row count reaches a
//! threshold, each with that noisy count. Keys below the threshold are not released, nor is how
//! many there were.
//!
//! **Mechanism:** OpenDP's `make_laplace_threshold` (Rogers 2023's unknown-domain analysis) over
//! `MapDomain<AtomDomain<String>, AtomDomain<i64>>`: discrete Laplace noise on each count, then a
//! threshold. Approximate DP: `Approximate<MaxDivergence>`, i.e. (ε, δ).
//!
//! **Sensitivity:** `L01InfDistance`: removing a privacy unit changes at most `l0` key tuples
//! (the number of groups it can reach), the counts by at most `l1` in total and `l∞` in any one
//! tuple. With k = `max_rows_per_unit` rows kept per unit, (l0, l1, l∞) = (min(k, cells), k, k).
//!
//! **Privacy map:** OpenDP's map gives ε = l1/scale and δ from the tail of the noise at and beyond
//! `threshold - l∞`, for each of the l0 tuples that may appear or vanish. The engine solves the
//! scale from ε and the smallest threshold whose δ is within the grant's `delta_per_query`, then
//! checks both against OpenDP's map before anything is released. OpenDP 0.16's map leaves out the
//! probability mass exactly at the threshold (opendp/opendp#2922, found by this crate's
//! statistical test); the engine corrects for it by reading δ off the map one row further out.

use std::collections::HashMap;

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, MapDomain};
use opendp::measurements::make_laplace_threshold;
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L01InfDistance};

use super::mechanisms::MechanismError;

type Counts = MapDomain<AtomDomain<String>, AtomDomain<i64>>;
type Distance = L01InfDistance<AbsoluteDistance<i64>>;

/// A calibrated partition-selection mechanism.
pub struct PartitionSelection {
    measurement: Measurement<Counts, Distance, Approximate<MaxDivergence>, HashMap<String, i64>>,
    scale: f64,
    threshold: i64,
    spent: (f64, f64),
}

impl PartitionSelection {
    /// Selection at `epsilon` and at most `delta`, for units that change at most `l0` tuples, by
    /// at most `l1` rows in all and `linf` in one.
    pub fn new(
        (l0, l1, linf): (u32, i64, i64),
        epsilon: f64,
        delta: f64,
    ) -> Result<Self, MechanismError> {
        if !(epsilon.is_finite() && epsilon > 0.0 && delta > 0.0 && delta < 1.0)
            || l0 == 0
            || l1 <= 0
            || linf <= 0
        {
            return Err(MechanismError::new(format!(
                "invalid calibration: ({l0}, {l1}, {linf}), ε {epsilon}, δ {delta}"
            )));
        }
        let scale = l1 as f64 / epsilon;
        let build = |threshold: i64| {
            let m = make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
                MapDomain::new(
                    AtomDomain::<String>::default(),
                    AtomDomain::<i64>::default(),
                ),
                Distance::default(),
                scale,
                threshold,
                None,
            )
            .map_err(|e| MechanismError::new(e.to_string()))?;
            let map =
                |d: (u32, i64, i64)| m.map(&d).map_err(|e| MechanismError::new(e.to_string()));
            // OpenDP 0.16 keeps noisy counts *at* the threshold but its map bounds only the
            // tail *beyond* it (opendp/opendp#2922), understating δ by the mass at the
            // threshold. Asking the map about a unit one row heavier shifts its tail by exactly
            // that one value, so δ is taken from there; ε from the true distance.
            let epsilon = map((l0, l1, linf))?.0;
            let delta = map((l0, l1 + 1, linf + 1))?.1;
            Ok::<_, MechanismError>((m, (epsilon, delta)))
        };
        // δ falls as the threshold rises: find the smallest threshold within δ by bisection.
        let (mut lo, mut hi) = (linf, linf.saturating_add(1));
        while build(hi)?.1.1 > delta {
            lo = hi;
            hi = hi.saturating_mul(2);
            if hi == i64::MAX {
                return Err(MechanismError::new("no threshold reaches the δ".into()));
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if build(mid)?.1.1 > delta {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (measurement, spent) = build(hi)?;
        if spent.0 > epsilon * (1.0 + 1e-9) || spent.1 > delta {
            return Err(MechanismError::new(format!(
                "privacy map gives (ε={}, δ={}), above the intended (ε={epsilon}, δ={delta})",
                spent.0, spent.1
            )));
        }
        Ok(Self {
            measurement,
            scale,
            threshold: hi,
            spent,
        })
    }

    /// The noise scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Noisy counts below this are not released.
    pub fn threshold(&self) -> i64 {
        self.threshold
    }

    /// (ε, δ) as OpenDP's privacy map states them.
    pub fn spent(&self) -> (f64, f64) {
        self.spent
    }

    /// The selected keys and their noisy counts.
    pub fn release(
        &self,
        counts: &HashMap<String, i64>,
    ) -> Result<HashMap<String, i64>, MechanismError> {
        self.measurement
            .invoke(counts)
            .map_err(|_| MechanismError::new("sampling failed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_smallest_within_delta() {
        let s = PartitionSelection::new((5, 5, 5), 1.0, 1e-6).unwrap();
        assert!((s.scale() - 5.0).abs() < 1e-12);
        assert!(s.spent().1 <= 1e-6);
        let looser = PartitionSelection::new((5, 5, 5), 1.0, 1e-3).unwrap();
        assert!(looser.threshold() < s.threshold());
        // δ is the exact probability that a lone key at count 5 reaches the threshold:
        // P(Z ≥ t - 5) = q^(t-5) / (1 + q) for discrete Laplace with q = exp(-1/scale), at most
        // one key of each of l0 = 5 (union bound, as OpenDP's 1 - (1 - p)^l0 is close to).
        let q = (-1.0f64 / s.scale()).exp();
        let p = |t: i64| q.powi((t - 5) as i32) / (1.0 + q);
        let exact = 1.0 - (1.0 - p(s.threshold())).powi(5);
        assert!(exact <= 1e-6 * (1.0 + 1e-9), "{exact}");
        // One lower would exceed δ: the threshold is the smallest.
        assert!(1.0 - (1.0 - p(s.threshold() - 1)).powi(5) > 1e-6);
    }

    #[test]
    fn large_counts_pass_and_a_lone_small_key_rarely_does() {
        let s = PartitionSelection::new((1, 1, 1), 1.0, 1e-6).unwrap();
        let counts = HashMap::from([("big".to_string(), 10_000), ("one".to_string(), 1)]);
        let out = s.release(&counts).unwrap();
        assert!(out.contains_key("big"));
        assert!(!out.contains_key("one"));
    }
}
