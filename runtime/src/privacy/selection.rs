//! DP partition selection: releasing group keys that are not public.
//!
//! # Privacy
//! **What is released:** the key tuples found in the data whose noisy row count reaches a
//! threshold, each with that noisy count. Keys below the threshold are not released, nor is how
//! many there were.
//!
//! **Mechanism:** OpenDP's `make_laplace_threshold` (Rogers 2023's unknown-domain analysis) over
//! `MapDomain<AtomDomain<String>, AtomDomain<i64>>`: discrete Laplace noise on each count, then a
//! threshold. Approximate DP: `Approximate<MaxDivergence>`, i.e. (ε, δ). On zCDP datasets,
//! `make_gaussian_threshold` instead: discrete Gaussian noise, `Approximate<ZeroConcentratedDivergence>`
//! (δ-approximate ρ-zCDP), with the L2 norm of a unit's changes in place of l1.
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
use opendp::measurements::{make_gaussian_threshold, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L01InfDistance, L02InfDistance};

use super::mechanisms::MechanismError;

type Counts = MapDomain<AtomDomain<String>, AtomDomain<i64>>;
type Out = HashMap<String, i64>;

/// The OpenDP measurement of either family.
enum Threshold {
    Laplace(
        Measurement<Counts, L01InfDistance<AbsoluteDistance<i64>>, Approximate<MaxDivergence>, Out>,
    ),
    Gaussian(
        Measurement<
            Counts,
            L02InfDistance<AbsoluteDistance<f64>>,
            Approximate<ZeroConcentratedDivergence>,
            Out,
        >,
    ),
}

/// A calibrated partition-selection mechanism.
pub struct PartitionSelection {
    measurement: Threshold,
    scale: f64,
    threshold: i64,
    spent: (f64, f64),
}

/// How much one privacy unit can change the counts: the tuples it reaches (l0), its rows in all
/// (l1), the L2 norm of its changes (l2) and its rows in one tuple (l∞).
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    /// Key tuples.
    pub l0: u32,
    /// Rows in all.
    pub l1: i64,
    /// L2 norm of the changes to the count vector.
    pub l2: f64,
    /// Rows in one tuple.
    pub linf: i64,
}

impl PartitionSelection {
    /// Pure-DP family: discrete Laplace counts at `epsilon` and a threshold within `delta`
    /// (OpenDP `make_laplace_threshold`, (ε, δ)-DP).
    pub fn laplace(r: Reach, epsilon: f64, delta: f64) -> Result<Self, MechanismError> {
        check(r, epsilon, delta)?;
        let scale = r.l1 as f64 / epsilon;
        Self::calibrate(scale, epsilon, delta, r.linf, |threshold| {
            let m = make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
                counts(),
                L01InfDistance::default(),
                scale,
                threshold,
                None,
            )
            .map_err(opendp_error)?;
            let map = |d: (u32, i64, i64)| m.map(&d).map_err(opendp_error);
            // OpenDP 0.16 keeps noisy counts *at* the threshold but its map bounds only the
            // tail *beyond* it (opendp/opendp#2922), understating δ by the mass at the
            // threshold. Asking the map about a unit one row heavier shifts its tail by exactly
            // that one value, so δ is taken from there; ε from the true distance.
            let epsilon = map((r.l0, r.l1, r.linf))?.0;
            let delta = map((r.l0, r.l1 + 1, r.linf + 1))?.1;
            Ok((Threshold::Laplace(m), (epsilon, delta)))
        })
    }

    /// zCDP family: discrete Gaussian counts at `rho` and a threshold within `delta` (OpenDP
    /// `make_gaussian_threshold`, δ-approximate ρ-zCDP). The cost is (ρ, δ).
    pub fn gaussian(r: Reach, rho: f64, delta: f64) -> Result<Self, MechanismError> {
        check(r, rho, delta)?;
        let scale = r.l2 / (2.0 * rho).sqrt();
        Self::calibrate(scale, rho, delta, r.linf, |threshold| {
            let m = make_gaussian_threshold::<_, _, Approximate<ZeroConcentratedDivergence>>(
                counts(),
                L02InfDistance::default(),
                scale,
                threshold,
                None,
            )
            .map_err(opendp_error)?;
            let map = |d: (u32, f64, f64)| m.map(&d).map_err(opendp_error);
            // The same correction as for the Laplace map (opendp/opendp#2922): the map's tail
            // starts one value beyond the threshold.
            let (linf, l2) = (r.linf as f64, r.l2);
            let rho = map((r.l0, l2, linf))?.0;
            let delta = map((r.l0, l2.max(linf + 1.0), linf + 1.0))?.1;
            Ok((Threshold::Gaussian(m), (rho, delta)))
        })
    }

    /// The smallest threshold (δ falls as it rises; found by bisection) whose δ by `build`'s
    /// map is within `delta`, checked against the intended cost.
    fn calibrate(
        scale: f64,
        cost: f64,
        delta: f64,
        linf: i64,
        build: impl Fn(i64) -> Result<(Threshold, (f64, f64)), MechanismError>,
    ) -> Result<Self, MechanismError> {
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
        if spent.0 > cost * (1.0 + 1e-9) || spent.1 > delta {
            return Err(MechanismError::new(format!(
                "privacy map gives ({}, δ={}), above the intended ({cost}, δ={delta})",
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

    /// (ε, δ) (or (ρ, δ) for the Gaussian family) as OpenDP's privacy map states them.
    pub fn spent(&self) -> (f64, f64) {
        self.spent
    }

    /// The selected keys and their noisy counts.
    pub fn release(
        &self,
        counts: &HashMap<String, i64>,
    ) -> Result<HashMap<String, i64>, MechanismError> {
        match &self.measurement {
            Threshold::Laplace(m) => m.invoke(counts),
            Threshold::Gaussian(m) => m.invoke(counts),
        }
        .map_err(super::mechanisms::sampling_failed)
    }
}

fn counts() -> Counts {
    MapDomain::new(
        AtomDomain::<String>::default(),
        AtomDomain::<i64>::default(),
    )
}

fn opendp_error(e: opendp::error::Error) -> MechanismError {
    MechanismError::new(e.to_string())
}

fn check(r: Reach, cost: f64, delta: f64) -> Result<(), MechanismError> {
    if !(cost.is_finite() && cost > 0.0 && delta > 0.0 && delta < 1.0)
        || r.l0 == 0
        || r.l1 <= 0
        || r.linf <= 0
        || !(r.l2.is_finite() && r.l2 > 0.0)
    {
        return Err(MechanismError::new(format!(
            "invalid calibration: {r:?}, cost {cost}, δ {delta}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_smallest_within_delta() {
        let r = Reach {
            l0: 5,
            l1: 5,
            l2: 5.0,
            linf: 5,
        };
        let s = PartitionSelection::laplace(r, 1.0, 1e-6).unwrap();
        assert!((s.scale() - 5.0).abs() < 1e-12);
        assert!(s.spent().1 <= 1e-6);
        let looser = PartitionSelection::laplace(r, 1.0, 1e-3).unwrap();
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
        let r = Reach {
            l0: 1,
            l1: 1,
            l2: 1.0,
            linf: 1,
        };
        for s in [
            PartitionSelection::laplace(r, 1.0, 1e-6).unwrap(),
            PartitionSelection::gaussian(r, 0.5, 1e-6).unwrap(),
        ] {
            let counts = HashMap::from([("big".to_string(), 10_000), ("one".to_string(), 1)]);
            let out = s.release(&counts).unwrap();
            assert!(out.contains_key("big"));
            assert!(!out.contains_key("one"));
        }
    }

    #[test]
    fn the_gaussian_threshold_bounds_a_lone_key_by_the_exact_discrete_gaussian_tail() {
        // One unit with one row: δ must cover P(1 + Z ≥ t), Z discrete Gaussian(σ), summed
        // exactly here over the lattice.
        let r = Reach {
            l0: 1,
            l1: 1,
            l2: 1.0,
            linf: 1,
        };
        let s = PartitionSelection::gaussian(r, 0.125, 1e-6).unwrap();
        assert!((s.scale() - 2.0).abs() < 1e-12);
        let sigma = s.scale();
        let w = |x: i64| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp();
        let norm: f64 = (-200..=200).map(w).sum();
        let tail = |t: i64| (t - 1..=200).map(w).sum::<f64>() / norm;
        assert!(tail(s.threshold()) <= 1e-6, "{}", tail(s.threshold()));
        assert!(s.spent().0 <= 0.125 * (1.0 + 1e-9));
    }
}
