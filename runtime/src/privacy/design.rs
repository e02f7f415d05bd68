//! A query's design: the noisy releases it needs, their sensitivities, and which of them each
//! aggregate reads. Everything here follows from the validated query and the policy alone.
//!
//! Sensitivities (L1 over the whole table of one release; L2 for zCDP datasets), with the
//! contribution [`Bounds`] l0 cells, l1 rows in all and l∞ rows per cell:
//! - `COUNT(*)`, `COUNT(col)`: each kept row moves its cell by 1, so l1 (L2: [`Bounds::l2_rows`]).
//! - `COUNT(DISTINCT unit)`: a unit counts once in each cell it keeps a row in: min(l0, l1)
//!   (L2: its square root).
//! - `SUM`: each value is clamped to the public bounds and encoded as
//!   `round(((x - center)^power)·scale)`, so a row moves its cell by at most
//!   m = round(range·scale) and the release by l1·m (L2: l2_rows·m); rounding is monotone.
//! - Quantiles are calibrated by their own mechanism from l1 (see [`super::quantile`]).

use sluice_policy::{ColumnKind, Grant, PrivacyMeasure};

use super::amount::Amount;
use super::mechanisms::{ALPHA, Additive, DiscreteGaussian, DiscreteLaplace, MechanismError};
use super::validate::{AggSpec, ValidatedQuery};
use super::{Budget, MAX_QUERY_EPSILON, MAX_QUERY_RHO};
use crate::QueryError;

/// What one noisy release measures.
#[derive(Clone, Debug)]
pub(crate) enum Statistic {
    Count,
    /// Distinct privacy units (after bounding).
    Units,
    NonNullCount(String),
    /// `Σ round(((clamp(x, lo, hi) - center)^power) · scale)` over non-null values.
    FixedSum {
        column: String,
        lo: f64,
        hi: f64,
        center: f64,
        power: i32,
        scale: f64,
    },
    /// One candidate by OpenDP's private quantile (not additive noise).
    Quantile {
        column: String,
        q: f64,
        lo: f64,
        hi: f64,
        integer: bool,
    },
}

impl Statistic {
    /// Units of the released integer per unit of the statistic: the fixed-point scale of a sum,
    /// 1 for counts.
    pub(crate) fn scale(&self) -> f64 {
        match self {
            Self::FixedSum { scale, .. } => *scale,
            _ => 1.0,
        }
    }
}

/// One noisy release and its sensitivities.
#[derive(Clone, Debug)]
pub(crate) struct Release {
    pub stat: Statistic,
    /// L1 sensitivity, in released units.
    pub l1: i64,
    /// L2 sensitivity, in released units (zCDP datasets).
    pub l2: f64,
}

/// Which releases an aggregate is computed from (indices into [`Design::releases`]), with what
/// post-processing needs to know of them.
#[derive(Clone, Debug)]
pub(crate) enum Reads {
    /// `COUNT(*)` or `COUNT(DISTINCT unit)`.
    Count(usize),
    /// `SUM(col)`; `exact_int` when the column is an integer kept at scale 1.
    Sum { sum: usize, exact_int: bool },
    /// `AVG(col)` = sum / count of non-null values, clamped to `[lo, hi]`.
    Mean {
        sum: usize,
        n: usize,
        lo: f64,
        hi: f64,
    },
    /// `VARIANCE`/`STDDEV` from sums of `x - c` and `(x - c)²` and a count; `range` is the
    /// bounds minus c.
    Variance {
        s: usize,
        ss: usize,
        n: usize,
        range: (f64, f64),
        sample: bool,
        stddev: bool,
    },
    /// A quantile; `integer` when the column is.
    Quantile { release: usize, integer: bool },
}

impl Reads {
    /// The release whose additive accuracy states the aggregate's, for those whose accuracy is
    /// public.
    fn first(&self) -> usize {
        match self {
            Self::Count(i) | Self::Sum { sum: i, .. } | Self::Mean { sum: i, .. } => *i,
            Self::Variance { s, .. } => *s,
            Self::Quantile { release, .. } => *release,
        }
    }
}

/// How much one privacy unit can change a query's table after contribution bounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Cells (key tuples) it can reach.
    pub l0: i64,
    /// Rows it can contribute in all.
    pub l1: i64,
    /// Rows it can contribute to one cell.
    pub linf: i64,
}

impl Bounds {
    /// The bounds the policy's `max_rows_per_unit` (k), `max_groups_per_unit` (g) and
    /// `max_rows_per_group` (r) give a query releasing `cells` cells (`i64::MAX` when unknown).
    /// An ungrouped query has one group, so r bounds the unit's rows there too.
    pub fn of(ds: &sluice_policy::Dataset, grouped: bool, cells: i64) -> Self {
        let k = i64::from(ds.max_rows_per_unit);
        let g = ds.max_groups_per_unit.map_or(k, i64::from);
        let r = ds.max_rows_per_group.map_or(k, i64::from).min(k);
        if !grouped {
            return Self {
                l0: 1,
                l1: r,
                linf: r,
            };
        }
        let l0 = k.min(g).min(cells.max(1));
        Self {
            l0,
            l1: k.min(l0.saturating_mul(r)),
            linf: r,
        }
    }

    /// The largest L2 norm of the change one unit makes to a vector of per-cell row counts:
    /// l∞ rows in each of m = min(l0, ⌊l1/l∞⌋) cells and the rest of l1 (at most l∞) in one more
    /// cell, if a cell is left (concentrating rows maximises the norm).
    pub fn l2_rows(&self) -> f64 {
        let (l0, l1, linf) = (self.l0 as f64, self.l1 as f64, self.linf.max(1) as f64);
        let full = l0.min((l1 / linf).floor());
        let rest = if full < l0 {
            (l1 - full * linf).clamp(0.0, linf)
        } else {
            0.0
        };
        (full * linf * linf + rest * rest).sqrt()
    }
}

/// A query's noisy releases, which of them each aggregate reads, and the bounds they rest on.
#[derive(Clone, Debug)]
pub(crate) struct Design {
    pub releases: Vec<Release>,
    /// One per aggregate of the query, in its order.
    pub reads: Vec<Reads>,
    /// The count that decides suppression, when the grant sets `min_group_count`.
    pub suppress_with: Option<usize>,
    /// The count that selects key tuples, when some keys have no public domain.
    pub select_with: Option<usize>,
    pub bounds: Bounds,
    pub measure: PrivacyMeasure,
}

/// The releases being laid out, before sensitivities are known.
#[derive(Default)]
struct Layout {
    stats: Vec<Statistic>,
    reads: Vec<Reads>,
}

impl Layout {
    fn push(&mut self, s: Statistic) -> usize {
        self.stats.push(s);
        self.stats.len() - 1
    }

    /// The query's `COUNT(*)` release, added if it has none.
    fn count(&mut self) -> usize {
        match self
            .stats
            .iter()
            .position(|s| matches!(s, Statistic::Count))
        {
            Some(i) => i,
            None => self.push(Statistic::Count),
        }
    }

    fn aggregate(&mut self, a: &AggSpec, ds: &sluice_policy::Dataset) -> Reads {
        let column = |c: &str| {
            let kind = &ds.column(c).expect("validated column").kind;
            let (lo, hi) = kind.bounds_f64().expect("validated bounds");
            (kind.clone(), lo, hi)
        };
        match a {
            AggSpec::Count => Reads::Count(self.push(Statistic::Count)),
            AggSpec::CountUnits => Reads::Count(self.push(Statistic::Units)),
            AggSpec::Sum(c) | AggSpec::Mean(c) => {
                let (kind, lo, hi) = column(c);
                let scale = fixed_scale(&kind, lo, hi);
                let sum = self.push(Statistic::FixedSum {
                    column: c.clone(),
                    lo,
                    hi,
                    center: 0.0,
                    power: 1,
                    scale,
                });
                if matches!(a, AggSpec::Mean(_)) {
                    let n = self.push(Statistic::NonNullCount(c.clone()));
                    Reads::Mean { sum, n, lo, hi }
                } else {
                    let exact_int = matches!(kind, ColumnKind::Int { .. }) && scale == 1.0;
                    Reads::Sum { sum, exact_int }
                }
            }
            AggSpec::Variance {
                column: c,
                sample,
                stddev,
            } => {
                // Centered at the middle of the bounds, which halves the sums' sensitivity.
                let (_, lo, hi) = column(c);
                let center = (lo + hi) / 2.0;
                let float = ColumnKind::Float { bounds: None };
                let sums = [1, 2].map(|power| {
                    let r = encoded_range(lo, hi, center, power);
                    self.push(Statistic::FixedSum {
                        column: c.clone(),
                        lo,
                        hi,
                        center,
                        power,
                        scale: fixed_scale(&float, -r, r),
                    })
                });
                let n = self.push(Statistic::NonNullCount(c.clone()));
                Reads::Variance {
                    s: sums[0],
                    ss: sums[1],
                    n,
                    range: (lo - center, hi - center),
                    sample: *sample,
                    stddev: *stddev,
                }
            }
            AggSpec::Quantile { column: c, q } => {
                let (kind, lo, hi) = column(c);
                let integer = matches!(kind, ColumnKind::Int { .. });
                let release = self.push(Statistic::Quantile {
                    column: c.clone(),
                    q: *q,
                    lo,
                    hi,
                    integer,
                });
                Reads::Quantile { release, integer }
            }
        }
    }
}

impl Design {
    /// The design of `q` on `ds` under `grant`.
    pub(crate) fn new(q: &ValidatedQuery, ds: &sluice_policy::Dataset, grant: &Grant) -> Self {
        let mut layout = Layout::default();
        for a in &q.aggregates {
            let reads = layout.aggregate(a, ds);
            layout.reads.push(reads);
        }
        // Suppression by noisy count and partition selection each need a count; the query's own
        // if it has one (part of ε goes to one otherwise).
        let suppress_with = grant.min_group_count.map(|_| layout.count());
        let select_with = (!q.selected().is_empty()).then(|| layout.count());
        // Released cells: the product of the keys' public domain sizes (unbounded with selection).
        let cells: i64 = q
            .keys
            .iter()
            .map(|k| k.domain.public().map_or(i64::MAX, |v| v.len() as i64))
            .fold(1i64, |a, n| a.saturating_mul(n.max(1)));
        let bounds = Bounds::of(ds, !q.keys.is_empty(), cells);
        let releases = layout
            .stats
            .into_iter()
            .map(|stat| sensitivities(stat, &bounds))
            .collect();
        Self {
            releases,
            reads: layout.reads,
            suppress_with,
            select_with,
            bounds,
            measure: ds.measure,
        }
    }

    /// The amount (ε or ρ) each release spends when the query spends `amount`: an even split.
    pub(crate) fn each(&self, amount: f64) -> f64 {
        amount / self.releases.len() as f64
    }

    /// The 95% half-width of every cell of aggregate `a` of `q` at total `amount` (ε or ρ);
    /// `None` where it depends on the data (AVG, VARIANCE, STDDEV, quantiles).
    pub(crate) fn accuracy(&self, q: &ValidatedQuery, a: usize, amount: f64) -> Option<f64> {
        if !q.aggregates[a].accuracy_is_public() {
            return None;
        }
        let r = &self.releases[self.reads[a].first()];
        let acc = additive(self.measure, r.l1, r.l2, self.each(amount))
            .ok()?
            .accuracy(ALPHA);
        Some(acc / r.stat.scale())
    }

    /// What to spend, in the dataset's measure (ε or ρ): as given, or the least amount (found
    /// by bisection; the half-width falls as the amount grows) at which every aggregate meets
    /// the target.
    pub(crate) fn solve(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
        budget: Budget,
    ) -> Result<Amount, QueryError> {
        let (max, unit) = match self.measure {
            PrivacyMeasure::Pure => (MAX_QUERY_EPSILON, "ε"),
            PrivacyMeasure::Zcdp => (MAX_QUERY_RHO, "ρ"),
        };
        let target = match target_accuracy(budget, self.measure, ds)? {
            Target::Amount(a) => return Ok(Amount::new(self.measure, a)),
            Target::HalfWidth(t) => t,
        };
        if !q.aggregates.iter().all(AggSpec::accuracy_is_public) {
            return Err(QueryError::InvalidOptions(format!(
                "a target accuracy works for COUNT, COUNT(DISTINCT) and SUM; the accuracy of AVG, VARIANCE, STDDEV and quantiles depends on the data, so give {}",
                if self.measure == PrivacyMeasure::Zcdp {
                    "rho"
                } else {
                    "epsilon"
                }
            )));
        }
        let worst = |amount: f64| {
            (0..q.aggregates.len())
                .filter_map(|a| self.accuracy(q, a, amount))
                .fold(0.0f64, f64::max)
        };
        if worst(max) > target {
            return Err(QueryError::InvalidOptions(format!(
                "a 95% half-width of {target} needs more than the largest {unit} a query may spend ({max})"
            )));
        }
        let (mut lo, mut hi) = (0.0f64, max);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if mid > 0.0 && worst(mid) <= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(Amount::new(self.measure, hi))
    }
}

/// A budget as an amount to spend, or a half-width to solve for.
enum Target {
    Amount(f64),
    HalfWidth(f64),
}

/// Checks `budget` against the dataset's measure.
fn target_accuracy(
    budget: Budget,
    measure: PrivacyMeasure,
    ds: &sluice_policy::Dataset,
) -> Result<Target, QueryError> {
    match (budget, measure) {
        (Budget::Epsilon(e), PrivacyMeasure::Pure) => check_epsilon(e).map(|()| Target::Amount(e)),
        (Budget::Rho(r), PrivacyMeasure::Zcdp) => check_rho(r).map(|()| Target::Amount(r)),
        (Budget::Epsilon(_), PrivacyMeasure::Zcdp) => Err(QueryError::InvalidOptions(format!(
            "dataset `{}` accounts privacy in zero-concentrated DP (privacy_measure = \"zcdp\"): give rho (e.g. 0.05) or a target accuracy instead of epsilon",
            ds.id
        ))),
        (Budget::Rho(_), PrivacyMeasure::Pure) => Err(QueryError::InvalidOptions(format!(
            "dataset `{}` accounts privacy in pure ε-DP: give epsilon (e.g. 0.5) or a target accuracy instead of rho",
            ds.id
        ))),
        (Budget::Accuracy(a), _) if a.is_finite() && a > 0.0 => Ok(Target::HalfWidth(a)),
        (Budget::Accuracy(_), _) => Err(QueryError::InvalidOptions(
            "the target accuracy must be a number greater than 0".into(),
        )),
    }
}

/// `stat` with its sensitivities under `bounds`.
fn sensitivities(stat: Statistic, bounds: &Bounds) -> Release {
    let k = bounds.l1;
    let (l1, l2) = match &stat {
        // A unit is counted once in each group it has a (kept) row in: at most l0 groups, never
        // more than it has rows nor more than are released.
        Statistic::Units => (bounds.l0.min(k), (bounds.l0.min(k) as f64).sqrt()),
        // Each kept row moves its cell by at most m: 1 for counts (quantiles: the mechanism is
        // calibrated from the rows itself), round(range·scale) for fixed-point sums.
        _ => {
            let m = match &stat {
                Statistic::FixedSum {
                    lo,
                    hi,
                    center,
                    power,
                    scale,
                    ..
                } => (encoded_range(*lo, *hi, *center, *power) * scale)
                    .round()
                    .max(1.0),
                _ => 1.0,
            };
            (k.saturating_mul(m as i64), bounds.l2_rows() * m)
        }
    };
    Release { stat, l1, l2 }
}

/// The additive mechanism of a release with L1 sensitivity `l1` and L2 sensitivity `l2`
/// spending `each` (ε or ρ, by the dataset's measure).
pub(crate) fn additive(
    measure: PrivacyMeasure,
    l1: i64,
    l2: f64,
    each: f64,
) -> Result<Additive, MechanismError> {
    Ok(match measure {
        PrivacyMeasure::Pure => Additive::Laplace(DiscreteLaplace::new(l1, each)?),
        PrivacyMeasure::Zcdp => Additive::Gaussian(DiscreteGaussian::new(l2, each)?),
    })
}

/// The largest |encoded value| of a fixed-point release, before scaling.
fn encoded_range(lo: f64, hi: f64, center: f64, power: i32) -> f64 {
    (lo - center).abs().max((hi - center).abs()).powi(power)
}

/// Fixed-point scale 2^p for a column with bounds `(lo, hi)`: as fine as possible while every
/// encoded value stays within ±2^31, so that sums of up to 2^32 rows fit in an i64. Integer
/// columns are kept exact (scale 1) whenever they fit.
pub(crate) fn fixed_scale(kind: &ColumnKind, lo: f64, hi: f64) -> f64 {
    let max_abs = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
    let limit = 2f64.powi(31);
    let p = (limit / max_abs).log2().floor().clamp(-40.0, 24.0) as i32;
    match kind {
        ColumnKind::Int { .. } if p >= 0 => 1.0,
        _ => 2f64.powi(p),
    }
}

pub(crate) fn check_rho(rho: f64) -> Result<(), QueryError> {
    if rho.is_finite() && rho > 0.0 && rho <= MAX_QUERY_RHO {
        Ok(())
    } else {
        Err(QueryError::InvalidOptions(format!(
            "rho must be a number greater than 0 and at most {MAX_QUERY_RHO}"
        )))
    }
}

pub(crate) fn check_epsilon(epsilon: f64) -> Result<(), QueryError> {
    if epsilon.is_finite() && epsilon > 0.0 && epsilon <= MAX_QUERY_EPSILON {
        Ok(())
    } else {
        Err(QueryError::InvalidOptions(format!(
            "epsilon must be a number greater than 0 and at most {MAX_QUERY_EPSILON}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_scale_keeps_integers_exact_and_floats_fine() {
        let int = ColumnKind::Int {
            bounds: Some((0, 100)),
        };
        assert_eq!(fixed_scale(&int, 0.0, 100.0), 1.0);
        let float = ColumnKind::Float {
            bounds: Some((0.0, 20000.0)),
        };
        let s = fixed_scale(&float, 0.0, 20000.0);
        assert!(20000.0 * s <= 2f64.powi(31) && 20000.0 * s * 2.0 > 2f64.powi(31));
    }

    #[test]
    fn the_l2_bound_is_the_norm_of_the_most_concentrated_contribution() {
        // Brute force over every way to spread at most l1 rows over l0 cells, at most l∞ each.
        fn brute(l0: i64, l1: i64, linf: i64) -> f64 {
            fn go(cells: i64, left: i64, linf: i64) -> i64 {
                if cells == 0 {
                    return 0;
                }
                (0..=left.min(linf))
                    .map(|c| c * c + go(cells - 1, left - c, linf))
                    .max()
                    .unwrap_or(0)
            }
            (go(l0, l1, linf) as f64).sqrt()
        }
        for l0 in 1..=4 {
            for linf in 1..=5 {
                for l1 in linf..=(l0 * linf) {
                    let b = Bounds { l0, l1, linf };
                    assert!(
                        (b.l2_rows() - brute(l0, l1, linf)).abs() < 1e-9,
                        "{b:?}: {} vs {}",
                        b.l2_rows(),
                        brute(l0, l1, linf)
                    );
                }
            }
        }
    }
}
