//! Quantiles (MEDIAN, PERCENTILE_CONT) by OpenDP's private quantile mechanism.
//!
//! # Privacy
//! **What is released:** for each output cell, one of a public, finite set of candidates: a grid
//! over the column's policy bounds (every integer for an integer column whose range has at most
//! [`MAX_CANDIDATES`] values, otherwise [`MAX_CANDIDATES`] evenly spaced points). Never a value
//! read from the data.
//!
//! **Mechanism:** OpenDP's `make_private_quantile`, which is `make_quantile_score_candidates`
//! (Smith 2011's score: how far each candidate's rank is from the requested one) chained with
//! `make_noisy_max` (permute-and-flip, McKenna & Sheldon 2020, under `MaxDivergence`). The score
//! transformation needs every row in memory; the engine instead lets DataFusion count, per cell, the
//! rows below and equal to each candidate (one hash aggregate) and computes the identical scores from
//! those counts ([`scores`], checked against OpenDP's own transformation in the tests). The noisy max
//! is OpenDP's measurement, invoked on those scores.
//!
//! **Sensitivity and privacy map:** removing one privacy unit removes at most k = `max_rows_per_unit`
//! rows (symmetric distance k), which moves each score by at most k·max(a, d - a) where a/d is the
//! quantile as OpenDP's fraction. The map of the chained OpenDP measurement gives ε at distance k;
//! the noise scale is solved in closed form and then checked against that map before any release.
//! Cells of a grouped query are disjoint: a unit's k rows spread over cells with distances d_g
//! summing to at most k, and the map is linear in d, so the whole table costs ε(k).
//!
//! **Accuracy:** with probability ≥ 95% the released candidate's score is within
//! scale·ln(m/0.05) of the best (each worse candidate is chosen with probability at most
//! exp(-gap/scale); a union bound over the m candidates), i.e. its rank is within
//! [`QuantileMechanism::rank_accuracy`] rows of the requested rank. The error in the column's units
//! depends on the data and is not stated.
//!
//! **zCDP datasets:** the same ε-DP mechanism, at the ε whose ρ = ε²/2 (Bun & Steinke 2016,
//! Prop. 1.4; OpenDP `make_pureDP_to_zCDP`) is the ρ the query spends on it.

use opendp::combinators::make_pureDP_to_zCDP;
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_noisy_max;
use opendp::measures::MaxDivergence;
use opendp::metrics::{LInfDistance, SymmetricDistance};
use opendp::transformations::make_quantile_score_candidates;

use super::mechanisms::MechanismError;

/// Most candidates of one quantile.
pub const MAX_CANDIDATES: usize = 1001;

/// The public candidates of a quantile of a column with bounds `[lo, hi]`: strictly increasing.
pub fn candidates(lo: f64, hi: f64, integer: bool) -> Vec<f64> {
    if integer && hi - lo < MAX_CANDIDATES as f64 {
        let (lo, hi) = (lo.ceil() as i64, hi.floor() as i64);
        return (lo..=hi).map(|v| v as f64).collect();
    }
    let steps = (MAX_CANDIDATES - 1) as f64;
    let mut out: Vec<f64> = (0..MAX_CANDIDATES)
        .map(|j| {
            let v = lo + (hi - lo) * (j as f64 / steps);
            if integer { v.round() } else { v }
        })
        .collect();
    out.dedup();
    out
}

/// OpenDP's score of every candidate from a histogram of [`sluice_kernels::rank_code`]s
/// (`hist[code]` = rows with that code; length `2·m + 1`). Lower is better. This is
/// `score_candidates` of OpenDP's `quantile_score_candidates` for a dataset of unknown size,
/// computed from counts.
pub fn scores(hist: &[u64], m: usize, alpha_num: u64, alpha_den: u64) -> Vec<u64> {
    // (-inf, c1), [c1, c2), …: rows whose first candidate ≥ x is c_i, by equality.
    let mut hist_ro = vec![0u64; m + 1];
    // (-inf, c1], (c1, c2], …
    let mut hist_lo = vec![0u64; m + 1];
    for (code, &n) in hist.iter().enumerate() {
        let (lt, eq) = (code / 2, code % 2);
        if lt > m {
            continue;
        }
        hist_lo[lt] += n;
        hist_ro[(lt + eq).min(m)] += n;
    }
    let n: u64 = hist_lo.iter().sum();
    let size_limit = u64::MAX / alpha_den;
    let (mut lt, mut le) = (0u64, 0u64);
    (0..m)
        .map(|i| {
            lt += hist_ro[i];
            le += hist_lo[i];
            let gt = n - le;
            let (lt_lim, gt_lim) = (lt.min(size_limit), gt.min(size_limit));
            ((alpha_den - alpha_num) * lt_lim).abs_diff(alpha_num * gt_lim)
        })
        .collect()
}

/// A calibrated quantile mechanism for one aggregate.
pub struct QuantileMechanism {
    candidates: Vec<f64>,
    alpha_num: u64,
    alpha_den: u64,
    scale: f64,
    /// The ρ of this ε-DP mechanism in zero-concentrated DP (ε²/2, OpenDP `make_pureDP_to_zCDP`).
    rho: f64,
    noisy_max: Measurement<VectorDomain<AtomDomain<u64>>, LInfDistance<u64>, MaxDivergence, usize>,
}

impl QuantileMechanism {
    /// The `alpha`-quantile over `candidates`, at `epsilon` for units of at most `k` rows.
    pub fn new(
        candidates: Vec<f64>,
        alpha: f64,
        k: u32,
        epsilon: f64,
    ) -> Result<Self, MechanismError> {
        let err = |e: opendp::error::Error| MechanismError::new(e.to_string());
        if !(epsilon.is_finite() && epsilon > 0.0) || k == 0 || candidates.is_empty() {
            return Err(MechanismError::new(format!(
                "invalid calibration: k {k}, ε {epsilon}"
            )));
        }
        let domain = || VectorDomain::new(AtomDomain::<f64>::new_non_nan());
        let score = |c: Vec<f64>| {
            make_quantile_score_candidates(domain(), SymmetricDistance, c, alpha).map_err(err)
        };
        // OpenDP's own rational approximation of alpha, read off its score function: one row
        // below a single candidate scores (d - a), one row above scores a.
        let probe = score(vec![0.0])?;
        let below = probe.invoke(&vec![-1.0]).map_err(err)?[0];
        let above = probe.invoke(&vec![1.0]).map_err(err)?[0];
        let (alpha_num, alpha_den) = (above, above + below);

        let m = candidates.len();
        // ε = 2·k·max(a, d - a) / scale (LInf distance on scores, not monotonic).
        let sens = f64::from(k) * alpha_num.max(alpha_den - alpha_num) as f64;
        let scale = 2.0 * sens / epsilon;
        let noisy_max = make_noisy_max(
            VectorDomain::new(AtomDomain::<u64>::default()).with_size(m),
            LInfDistance::default(),
            MaxDivergence,
            scale,
            true,
        )
        .map_err(err)?;
        let chained = (score(candidates.clone())? >> noisy_max.clone()).map_err(err)?;
        let spent = chained.map(&k).map_err(err)?;
        let rho = make_pureDP_to_zCDP(chained)
            .map_err(err)?
            .map(&k)
            .map_err(err)?;
        if spent > epsilon * (1.0 + 1e-9) {
            return Err(MechanismError::new(format!(
                "privacy map gives ε={spent}, above the intended ε={epsilon}"
            )));
        }
        Ok(Self {
            candidates,
            alpha_num,
            alpha_den,
            scale,
            rho,
            noisy_max,
        })
    }

    /// The same mechanism for a zCDP dataset: at the ε whose ρ = ε²/2 is `rho`, checked
    /// against OpenDP's pure-to-zCDP map.
    pub fn zcdp(
        candidates: Vec<f64>,
        alpha: f64,
        k: u32,
        rho: f64,
    ) -> Result<Self, MechanismError> {
        let m = Self::new(candidates, alpha, k, (2.0 * rho).sqrt())?;
        if m.rho > rho * (1.0 + 1e-9) {
            return Err(MechanismError::new(format!(
                "privacy map gives ρ={}, above the intended ρ={rho}",
                m.rho
            )));
        }
        Ok(m)
    }

    /// The candidates, in increasing order.
    pub fn candidates(&self) -> &[f64] {
        &self.candidates
    }

    /// OpenDP's fraction for the quantile: (numerator, denominator).
    pub fn alpha_fraction(&self) -> (u64, u64) {
        (self.alpha_num, self.alpha_den)
    }

    /// The permute-and-flip scale, in score units (`alpha_den` per row).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Releases one candidate from a histogram of [`sluice_kernels::rank_code`]s.
    pub fn release(&self, hist: &[u64]) -> Result<f64, MechanismError> {
        let s = scores(hist, self.candidates.len(), self.alpha_num, self.alpha_den);
        let i = self
            .noisy_max
            .invoke(&s)
            .map_err(super::mechanisms::sampling_failed)?;
        Ok(self.candidates[i])
    }

    /// Rows by which the released value's rank may miss the requested rank, at confidence
    /// 1 - `alpha`.
    pub fn rank_accuracy(&self, alpha: f64) -> f64 {
        self.scale * (self.candidates.len() as f64 / alpha).ln() / self.alpha_den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn histogram(c: &[f64], xs: &[f64]) -> Vec<u64> {
        let mut h = vec![0u64; 2 * c.len() + 1];
        for &x in xs {
            h[sluice_kernels::rank_code(c, x).unwrap() as usize] += 1;
        }
        h
    }

    #[test]
    fn scores_from_counts_equal_opendps_scores() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for alpha in [0.5, 0.1, 0.9, 0.25, 0.0, 1.0, 0.333] {
            for integer in [true, false] {
                let c = candidates(0.0, 50.0, integer);
                let xs: Vec<f64> = (0..500)
                    .map(|_| {
                        let v: f64 = rng.random_range(-10.0..60.0);
                        // Plenty of ties with candidates, and values outside the bounds.
                        if rng.random_bool(0.5) { v.round() } else { v }
                    })
                    .collect();
                let m = QuantileMechanism::new(c.clone(), alpha, 3, 1.0).unwrap();
                let (num, den) = m.alpha_fraction();
                let ours = scores(&histogram(&c, &xs), c.len(), num, den);
                let t = make_quantile_score_candidates(
                    VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
                    SymmetricDistance,
                    c.clone(),
                    alpha,
                )
                .unwrap();
                assert_eq!(ours, t.invoke(&xs).unwrap(), "alpha {alpha}");
            }
        }
    }

    #[test]
    fn candidates_are_strictly_increasing_within_bounds() {
        for (lo, hi, int) in [
            (0.0, 100.0, true),
            (0.0, 20000.0, false),
            (0.0, 5000.0, true),
        ] {
            let c = candidates(lo, hi, int);
            assert!(c.windows(2).all(|w| w[0] < w[1]));
            assert_eq!((c[0], *c.last().unwrap()), (lo, hi));
            assert!(c.len() <= MAX_CANDIDATES);
        }
        assert_eq!(candidates(0.0, 100.0, true).len(), 101);
    }

    #[test]
    fn the_median_of_a_clear_dataset_is_found_at_high_epsilon() {
        let c = candidates(0.0, 100.0, true);
        let xs: Vec<f64> = (0..1001).map(|i| f64::from(i % 101)).collect();
        let m = QuantileMechanism::new(c.clone(), 0.5, 1, 50.0).unwrap();
        let v = m.release(&histogram(&c, &xs)).unwrap();
        assert!((v - 50.0).abs() <= 2.0, "{v}");
    }

    #[test]
    fn opendp_map_accepts_the_calibration_and_rank_accuracy_is_stated() {
        let c = candidates(0.0, 100.0, true);
        let m = QuantileMechanism::new(c, 0.5, 5, 1.0).unwrap();
        // median: a/d = 1/2, ε = 2·5·1/scale.
        assert_eq!(m.alpha_fraction(), (1, 2));
        assert!((m.scale() - 10.0).abs() < 1e-9);
        let r = m.rank_accuracy(0.05);
        assert!(
            (r - 10.0 * (101.0f64 / 0.05).ln() / 2.0).abs() < 1e-9,
            "{r}"
        );
    }
}
