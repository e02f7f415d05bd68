//! The description of how a table was released (`NoisyTable.mechanism`): the guarantee, the
//! contribution bounds, the split of the amount, and one note per release.

use sluice_policy::PrivacyMeasure;

use super::accountant::{ZCDP_REPORT_DELTA, zcdp_epsilon};
use super::calibrate::{Calibrated, Mechanism};
use super::design::Statistic;
use super::mechanisms::{ALPHA, Additive};
use super::validate::ValidatedQuery;

/// The text of a released table's `mechanism`.
pub(crate) fn describe(
    c: &Calibrated,
    q: &ValidatedQuery,
    ds: &sluice_policy::Dataset,
    min_group_count: Option<u64>,
) -> String {
    let (unit, composition, family) = match c.design.measure {
        PrivacyMeasure::Pure => (
            "ε",
            "basic composition",
            "discrete Laplace noise (OpenDP make_laplace)",
        ),
        PrivacyMeasure::Zcdp => (
            "ρ",
            "zCDP composition: ρ adds up",
            "discrete Gaussian noise calibrated to L2 sensitivity (OpenDP make_gaussian)",
        ),
    };
    let b = &c.design.bounds;
    let mut text = format!(
        "{}; contribution bounds per {}: {} group(s), {} row(s), {} per group, chosen at random; {unit}={} split evenly over {} release(s) ({composition}); additive releases use {family}:",
        guarantee(c),
        ds.privacy_unit,
        b.l0,
        b.l1,
        b.linf,
        c.amount.value,
        c.design.releases.len()
    );
    for (r, m) in c.design.releases.iter().zip(&c.mechanisms) {
        if let Mechanism::Select(sel, _) = m {
            let (e, d) = sel.spent();
            let how = match c.design.measure {
                PrivacyMeasure::Pure => "make_laplace_threshold",
                PrivacyMeasure::Zcdp => "make_gaussian_threshold",
            };
            text.push_str(&format!(
                " the values of {} are not public: a key tuple is released only when its noisy COUNT(*) reaches {} (DP partition selection, OpenDP {how}, scale {:.4}, {unit}={e}, δ={d:e} by OpenDP's map);",
                q.selected().join(", "),
                sel.threshold(),
                sel.scale()
            ));
        }
        match (m, &r.stat) {
            (
                Mechanism::Quantile(m),
                Statistic::Quantile {
                    column, q, lo, hi, ..
                },
            ) => text.push_str(&format!(
                " {q}-quantile of {column}: at 95% the released value's rank is within ±{:.1} rows of the requested rank among the group's bounded rows (how far that is in {column} depends on how densely values lie there, so no value interval is given); OpenDP private quantile (make_quantile_score_candidates + make_noisy_max, permute-and-flip) over {} candidates in [{lo}, {hi}], {} rows per unit, score scale {:.4} ({} score units per row);",
                m.rank_accuracy(ALPHA),
                m.candidates().len(),
                b.l1,
                m.scale(),
                m.alpha_fraction().1,
            )),
            (m, stat) => {
                let what = statistic(stat, &ds.privacy_unit);
                match m.additive() {
                    Some(a @ Additive::Laplace(_)) => text.push_str(&format!(
                        " {what}: sensitivity {}, scale {:.4};",
                        r.l1,
                        a.scale()
                    )),
                    Some(a @ Additive::Gaussian(_)) => text.push_str(&format!(
                        " {what}: L2 sensitivity {:.4}, σ {:.4};",
                        r.l2,
                        a.scale()
                    )),
                    None => {}
                }
            }
        }
    }
    if let Some(min) = min_group_count {
        text.push_str(&format!(
            " groups with noisy count below {min} are suppressed;"
        ));
    }
    // A row function's column is named by its call, as the query wrote it (the last first, so
    // that `__sluice_row_1` never replaces the start of `__sluice_row_10`).
    for call in q.row_calls.iter().rev() {
        let named = format!("{}({})", call.function.name, call.args.join(", "));
        text = text.replace(&call.column, &named);
    }
    text
}

/// The guarantee the table carries alone.
fn guarantee(c: &Calibrated) -> String {
    let rho = c.amount.rho();
    let delta = c.delta;
    match (c.design.measure, delta > 0.0) {
        (PrivacyMeasure::Pure, false) => "pure ε-DP".to_string(),
        (PrivacyMeasure::Pure, true) => format!("(ε, δ)-DP with δ={delta}"),
        (PrivacyMeasure::Zcdp, d) => format!(
            "{}ρ-zCDP with ρ={rho}{}, which alone implies (ε={:.4}, δ={:e})-DP",
            if d { "δ-approximate " } else { "" },
            if d {
                format!(" and δ={delta}")
            } else {
                String::new()
            },
            zcdp_epsilon(rho, ZCDP_REPORT_DELTA).unwrap_or(f64::INFINITY),
            ZCDP_REPORT_DELTA + delta,
        ),
    }
}

/// What a release measures, as the description names it.
fn statistic(stat: &Statistic, unit: &str) -> String {
    match stat {
        Statistic::Count => "COUNT(*)".to_string(),
        Statistic::Units => format!("COUNT(DISTINCT {unit})"),
        Statistic::NonNullCount(c) => format!("COUNT({c}) of non-null values"),
        Statistic::FixedSum {
            column,
            lo,
            hi,
            center,
            power,
            scale,
        } => {
            let x = format!("clamp({column}, {lo}, {hi})");
            let term = match (*center == 0.0, power) {
                (true, 1) => x,
                (false, 1) => format!("({x} - {center})"),
                _ => format!("({x} - {center})^{power}"),
            };
            format!("SUM({term}) in units of {}", 1.0 / scale)
        }
        Statistic::Quantile { column, q, .. } => format!("{q}-quantile of {column}"),
    }
}
