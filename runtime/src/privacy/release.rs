//! Release: the cells of a query's table, the noise on each release in each cell, suppression,
//! and each aggregate's value and accuracy from its releases. Everything after the noise is
//! post-processing.

use std::collections::HashMap;

use super::accountant::Settled;
use super::calibrate::{Calibrated, Mechanism};
use super::design::Reads;
use super::execute::Truth;
use super::mechanisms::ALPHA;
use super::selection::PartitionSelection;
use super::validate::{OutputSource, ValidatedQuery};
use crate::QueryError;
use crate::report::Value;

/// One release's noisy values, one per released cell.
pub(crate) enum Noisy {
    /// Additive releases (and the selecting count), in released units.
    Counts(Vec<i64>),
    /// Quantile releases: the chosen candidates.
    Quantiles(Vec<f64>),
}

impl Noisy {
    fn count(&self, cell: usize) -> Option<i64> {
        match self {
            Self::Counts(v) => v.get(cell).copied(),
            Self::Quantiles(_) => None,
        }
    }

    fn quantile(&self, cell: usize) -> Option<f64> {
        match self {
            Self::Quantiles(v) => v.get(cell).copied(),
            Self::Counts(_) => None,
        }
    }
}

/// A released table's rows and the 95% half-width of each value (`None` for keys, suppressed
/// cells and values whose accuracy depends on the data).
pub(crate) struct Released {
    pub rows: Vec<Vec<Value>>,
    pub accuracy: Vec<Vec<Option<f64>>>,
}

/// Everything after the charge that is not DataFusion's: cells, noise, suppression, values.
pub(crate) fn release(
    q: &ValidatedQuery,
    c: &Calibrated,
    truth: &Truth,
    min_group_count: Option<u64>,
    _settled: &Settled,
) -> Result<Released, QueryError> {
    let (cells, selected) = cells(q, c, truth)?;
    let noisy = noise(c, &cells, truth, &selected)?;
    let suppressed: Vec<bool> = (0..cells.len())
        .map(|cell| match (c.design.suppress_with, min_group_count) {
            (Some(s), Some(min)) => noisy[s].count(cell).is_some_and(|n| n < min as i64),
            _ => false,
        })
        .collect();
    let mut released = Released {
        rows: Vec::with_capacity(cells.len()),
        accuracy: Vec::with_capacity(cells.len()),
    };
    for (i, tuple) in cells.iter().enumerate() {
        let mut row = Vec::with_capacity(q.outputs.len());
        let mut acc = Vec::with_capacity(q.outputs.len());
        for (_, src) in &q.outputs {
            let (v, e) = match src {
                OutputSource::Key(k) => (Value::Text(tuple[*k].clone()), None),
                OutputSource::Agg(_) if suppressed[i] => (Value::Null, None),
                OutputSource::Agg(a) => finish_cell(&c.design.reads[*a], c, &noisy, i)?,
            };
            row.push(v);
            acc.push(e);
        }
        released.rows.push(row);
        released.accuracy.push(acc);
    }
    Ok(released)
}

/// Key tuples as released, with the noisy count that selected each (partition selection only).
type Cells = (Vec<Vec<String>>, HashMap<Vec<String>, i64>);

/// The released cells: every combination of the keys' public domains, or, with partition
/// selection, the key tuples whose noisy count passes the threshold. Sorted either way.
fn cells(q: &ValidatedQuery, c: &Calibrated, truth: &Truth) -> Result<Cells, QueryError> {
    let selection = c.design.select_with.and_then(|s| match &c.mechanisms[s] {
        Mechanism::Select(sel, _) => Some((s, sel)),
        _ => None,
    });
    match selection {
        Some((s, sel)) => selected_cells(q, sel, s, truth),
        None => {
            let domains = q
                .keys
                .iter()
                .map(|k| k.domain.public().cloned())
                .collect::<Option<Vec<_>>>()
                .ok_or(QueryError::ExecutionFailed)?;
            Ok((cartesian(&domains), HashMap::new()))
        }
    }
}

/// The key tuples seen in the data (minus those with a value outside a public domain) whose
/// noisy count, release `s`, passes the threshold of `sel`.
fn selected_cells(
    q: &ValidatedQuery,
    sel: &PartitionSelection,
    s: usize,
    truth: &Truth,
) -> Result<Cells, QueryError> {
    let mut by_name = HashMap::new();
    let mut counts = HashMap::new();
    for (tuple, v) in &truth.additive {
        let public_ok = tuple.iter().zip(&q.keys).all(|(value, k)| {
            k.domain
                .public()
                .is_none_or(|d| d.binary_search(value).is_ok())
        });
        if public_ok {
            let name = serde_json::to_string(tuple)
                .map_err(super::after_charge(QueryError::ExecutionFailed))?;
            counts.insert(name.clone(), v[s]);
            by_name.insert(name, tuple.clone());
        }
    }
    let released = sel
        .release(&counts)
        .map_err(super::after_charge(QueryError::ExecutionFailed))?;
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(released.len());
    let mut selected = HashMap::new();
    for (name, noisy) in released {
        let tuple = by_name.remove(&name).ok_or(QueryError::ExecutionFailed)?;
        selected.insert(tuple.clone(), noisy);
        cells.push(tuple);
    }
    cells.sort();
    Ok((cells, selected))
}

/// Each release's noisy values over `cells`.
fn noise(
    c: &Calibrated,
    cells: &[Vec<String>],
    truth: &Truth,
    selected: &HashMap<Vec<String>, i64>,
) -> Result<Vec<Noisy>, QueryError> {
    c.mechanisms
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            Mechanism::Select(..) => cells
                .iter()
                .map(|cell| {
                    selected
                        .get(cell)
                        .copied()
                        .ok_or(QueryError::ExecutionFailed)
                })
                .collect::<Result<_, _>>()
                .map(Noisy::Counts),
            Mechanism::Additive(m) => {
                let exact: Vec<i64> = cells
                    .iter()
                    .map(|cell| truth.additive.get(cell).map_or(0, |v| v[i]))
                    .collect();
                m.release(&exact)
                    .map(Noisy::Counts)
                    .map_err(super::after_charge(QueryError::ExecutionFailed))
            }
            Mechanism::Quantile(m) => {
                let empty = vec![0u64; 2 * m.candidates().len() + 1];
                let histograms = truth.histograms.get(&i);
                cells
                    .iter()
                    .map(|cell| {
                        let h = histograms.and_then(|h| h.get(cell)).unwrap_or(&empty);
                        m.release(h)
                            .map_err(super::after_charge(QueryError::ExecutionFailed))
                    })
                    .collect::<Result<_, _>>()
                    .map(Noisy::Quantiles)
            }
        })
        .collect()
}

/// The released value of an aggregate reading `reads` in `cell`, and the half-width of its 95%
/// interval (`None` when that depends on the data, as for quantiles).
fn finish_cell(
    reads: &Reads,
    c: &Calibrated,
    noisy: &[Noisy],
    cell: usize,
) -> Result<(Value, Option<f64>), QueryError> {
    // The noisy value of additive release `i` in its statistic's units, and its half-width at
    // confidence 1 - alpha.
    let additive = |i: usize, alpha: f64| -> Result<(f64, f64), QueryError> {
        let scale = c.design.releases[i].stat.scale();
        let n = noisy[i].count(cell).ok_or(QueryError::ExecutionFailed)?;
        let m = c.mechanisms[i]
            .additive()
            .ok_or(QueryError::ExecutionFailed)?;
        Ok((n as f64 / scale, m.accuracy(alpha) / scale))
    };
    Ok(match reads {
        Reads::Count(i) => {
            let (_, acc) = additive(*i, ALPHA)?;
            let n = noisy[*i].count(cell).ok_or(QueryError::ExecutionFailed)?;
            (Value::Int(n), Some(acc))
        }
        Reads::Sum { sum, exact_int } => {
            let (v, acc) = additive(*sum, ALPHA)?;
            let v = if *exact_int {
                Value::Int(noisy[*sum].count(cell).unwrap_or(0))
            } else {
                Value::Float(v)
            };
            (v, Some(acc))
        }
        Reads::Mean { sum, n, lo, hi } => {
            // A 95% interval by a union bound over two 97.5% intervals.
            let (s, a_s) = additive(*sum, ALPHA / 2.0)?;
            let (n, a_n) = additive(*n, ALPHA / 2.0)?;
            let (mean, acc) = mean_interval(s, a_s, n, a_n, *lo, *hi);
            (Value::Float(mean), Some(acc))
        }
        Reads::Variance {
            s,
            ss,
            n,
            range,
            sample,
            stddev,
        } => {
            // A 95% interval by a union bound over three 98.33% intervals.
            let (v, acc) = variance_interval(
                additive(*s, ALPHA / 3.0)?,
                additive(*ss, ALPHA / 3.0)?,
                additive(*n, ALPHA / 3.0)?,
                *range,
                *sample,
                *stddev,
            );
            (Value::Float(v), Some(acc))
        }
        Reads::Quantile { release, integer } => {
            let v = noisy[*release]
                .quantile(cell)
                .ok_or(QueryError::ExecutionFailed)?;
            let v = if *integer {
                Value::Int(v as i64)
            } else {
                Value::Float(v)
            };
            (v, None)
        }
    })
}

/// A mean from a noisy sum `s` (±`a_s`) and a noisy count `n` (±`a_n`) of values within
/// `[lo, hi]`: the estimate and the half-width of the interval the two intervals imply.
fn mean_interval(s: f64, a_s: f64, n: f64, a_n: f64, lo: f64, hi: f64) -> (f64, f64) {
    if n < 1.0 {
        return ((lo + hi) / 2.0, hi - lo);
    }
    let mean = (s / n).clamp(lo, hi);
    if n - a_n < 1.0 {
        return (mean, hi - lo);
    }
    let corners = [
        (s - a_s) / (n - a_n),
        (s - a_s) / (n + a_n),
        (s + a_s) / (n - a_n),
        (s + a_s) / (n + a_n),
    ];
    let min = corners.iter().copied().fold(f64::INFINITY, f64::min);
    let max = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The true mean always lies within the bounds: an interval wholly outside them means the
    // noise landed in its 5% tail, and the release says nothing beyond the bounds. (Clamping
    // such an interval would claim a half-width of 0.)
    if max < lo || min > hi {
        return (mean, hi - lo);
    }
    let (min, max) = (min.clamp(lo, hi), max.clamp(lo, hi));
    (mean, (mean - min).max(max - mean))
}

/// A variance (or standard deviation) from noisy sums of centered values `s`, of their squares
/// `ss`, and a noisy count `n`, each with its half-width, for centered values within `[clo, chi]`:
/// the estimate and the half-width of the interval the three intervals imply.
fn variance_interval(
    (s, a_s): (f64, f64),
    (ss, a_ss): (f64, f64),
    (n, a_n): (f64, f64),
    (clo, chi): (f64, f64),
    sample: bool,
    stddev: bool,
) -> (f64, f64) {
    // The largest possible variance of values within the bounds: half the range, squared.
    let vmax = ((chi - clo) / 2.0).powi(2);
    let finish = |v: f64| if stddev { v.sqrt() } else { v };
    let unknown = (finish(vmax / 2.0), finish(vmax));
    if n < 2.0 {
        return unknown;
    }
    let correct = |v: f64, n: f64| if sample { v * n / (n - 1.0) } else { v };
    let mean = (s / n).clamp(clo, chi);
    let var = correct((ss / n - mean * mean).clamp(0.0, vmax), n).min(vmax);
    if n - a_n < 2.0 {
        return (finish(var), finish(vmax));
    }
    let (n_lo, n_hi) = (n - a_n, n + a_n);
    let ratios = |x: f64, a: f64| {
        let c = [
            (x - a) / n_lo,
            (x - a) / n_hi,
            (x + a) / n_lo,
            (x + a) / n_hi,
        ];
        (
            c.iter().copied().fold(f64::INFINITY, f64::min),
            c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (m_lo, m_hi) = ratios(s, a_s);
    let (m_lo, m_hi) = (m_lo.clamp(clo, chi), m_hi.clamp(clo, chi));
    let (e2_lo, e2_hi) = ratios(ss, a_ss);
    let sq_hi = (m_lo * m_lo).max(m_hi * m_hi);
    let sq_lo = if m_lo <= 0.0 && m_hi >= 0.0 {
        0.0
    } else {
        (m_lo * m_lo).min(m_hi * m_hi)
    };
    let v_lo = correct((e2_lo - sq_hi).max(0.0), n_hi).min(vmax);
    let v_hi = correct((e2_hi - sq_lo).max(0.0), n_lo).min(vmax);
    if v_hi < v_lo || v_lo > vmax {
        return (finish(var), finish(vmax));
    }
    let (lo, hi, v) = (finish(v_lo), finish(v_hi), finish(var));
    (v, (v - lo).max(hi - v))
}

/// The GROUP BY expressions of the DP rewrite, each under a name of its own.
fn cartesian(domains: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    for d in domains {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                d.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cartesian_enumerates_every_cell_in_order() {
        let d = vec![vec!["a".into(), "b".into()], vec!["x".into(), "y".into()]];
        let c = cartesian(&d);
        assert_eq!(c.len(), 4);
        assert_eq!(c[1], vec!["a".to_string(), "y".to_string()]);
    }
}
