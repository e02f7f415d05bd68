//! Quantiles, end to end through SQL, on a small dataset where every row matters.
//!
//! - **Distribution.** OpenDP's permute-and-flip releases candidate i with probability
//!   p_i·∫₀¹ Π_{j≠i}(1 - t·p_j) dt, where p_i = exp(-(score_i - min score)/scale) (candidate i
//!   is accepted when it is drawn, and a random order puts each other candidate before it
//!   independently with probability t, its uniform arrival time). The test computes every score
//!   from the raw rows with its own code, takes the scale the engine declares
//!   (2·k·max(a, d - a)/ε), and runs a chi-square goodness-of-fit test of the engine's releases
//!   at α = 0.001 over 1,000 runs per query. The same samples must be rejected against the distribution at a scale 30% too
//!   wide or too narrow (power).
//! - **Privacy audit.** D holds one person at the contribution cap, with every row at the top of
//!   the bounds; D′ lacks that person. For the family of events "released median ≥ t" and "< t",
//!   the empirical privacy loss must stay within ε (Wilson intervals at z = 4.5, family-wise error
//!   below 0.001; 2,000 runs on each dataset).

use sluice_runtime::{Sandbox, Value};

use crate::{World, asker, wilson};

/// Contribution bound of the small dataset.
const K: u32 = 3;
/// Upper bound of `v` (lower is 0): 41 candidates.
const HI: i64 = 40;

/// A data root and policy with dataset `small` (`person_id`, `grp` in {a, b}, `v` in [0, HI]).
fn small_world(name: &str, rows: &[(i64, &str, i64)]) -> World {
    let mut csv = String::from("person_id,grp,v\n");
    for (p, g, v) in rows {
        csv.push_str(&format!("{p},{g},{v}\n"));
    }
    let policy = format!(
        r#"
[dataset.small]
source = "data/small.csv"
holder = "test"
classification = "internal"
privacy_unit = "person_id"
max_rows_per_unit = {K}
columns.grp = {{ kind = "category", public_values = ["a", "b"] }}
columns.v = {{ kind = "int", bounds = [0, {HI}] }}
"#
    ) + &crate::stats_grant("small", "quantiles", r#""count", "quantile""#);
    World::csv(name, "small", &csv, &policy)
}

/// `runs` releases of the single aggregate of `sql` (no GROUP BY), as integers.
fn releases(s: &Sandbox, sql: &str, epsilon: f64, runs: usize) -> Vec<i64> {
    let a = asker("stats", "quantiles");
    (0..runs)
        .map(|_| {
            let (t, _) = s.block_on(s.engine().query(&a, sql, epsilon)).unwrap();
            match &t.rows[0][0] {
                Value::Int(v) => *v,
                other => panic!("a quantile of an integer column is an integer: {other:?}"),
            }
        })
        .collect()
}

/// Smith's score of each candidate 0..=HI for the `num/den`-quantile: |(den-num)·#(x<c) - num·#(x>c)|.
fn scores(values: &[i64], num: u64, den: u64) -> Vec<f64> {
    (0..=HI)
        .map(|c| {
            let lt = values.iter().filter(|v| **v < c).count() as f64;
            let gt = values.iter().filter(|v| **v > c).count() as f64;
            ((den - num) as f64 * lt - num as f64 * gt).abs()
        })
        .collect()
}

/// Permute-and-flip output probabilities for `scores` (lower is better) at `scale`.
fn permute_and_flip(scores: &[f64], scale: f64) -> Vec<f64> {
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let p: Vec<f64> = scores.iter().map(|s| (-(s - best) / scale).exp()).collect();
    // Simpson's rule on [0, 1]; the integrand is a polynomial of degree < 41, smooth.
    let steps = 4000;
    let h = 1.0 / steps as f64;
    (0..p.len())
        .map(|i| {
            let f = |t: f64| {
                p.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, pj)| 1.0 - t * pj)
                    .product::<f64>()
            };
            let mut acc = f(0.0) + f(1.0);
            for s in 1..steps {
                acc += f(s as f64 * h) * if s % 2 == 1 { 4.0 } else { 2.0 };
            }
            p[i] * acc * h / 3.0
        })
        .collect()
}

/// Chi-square statistic of `samples` (candidate values) against `probs`, pooling candidates with
/// an expected count below 5 into one bin; returns (statistic, degrees of freedom).
fn chi_square(samples: &[i64], probs: &[f64]) -> (f64, usize) {
    let n = samples.len() as f64;
    let mut observed = vec![0f64; probs.len()];
    for s in samples {
        observed[*s as usize] += 1.0;
    }
    let (mut stat, mut bins) = (0.0, 0);
    let (mut pooled_o, mut pooled_e) = (0.0, 0.0);
    for (o, p) in observed.iter().zip(probs) {
        let e = p * n;
        if e < 5.0 {
            pooled_o += o;
            pooled_e += e;
        } else {
            stat += (o - e).powi(2) / e;
            bins += 1;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e.max(1e-12);
        bins += 1;
    }
    (stat, bins - 1)
}

/// The chi-square critical value at α = 0.001 (Wilson–Hilferty).
fn chi_critical(df: usize) -> f64 {
    let (k, z) = (df as f64, 3.0902);
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// 80 people with one to three rows each, values spread over the lower part of the bounds.
fn spread_rows() -> Vec<(i64, &'static str, i64)> {
    let mut rows = Vec::new();
    for p in 0..80i64 {
        for r in 0..(1 + p % 3) {
            let v = (p * 7 + r * 11) % 30;
            rows.push((p, if p % 2 == 0 { "a" } else { "b" }, v));
        }
    }
    rows
}

#[test]
fn median_and_percentile_releases_follow_the_declared_permute_and_flip_distribution() {
    let rows = spread_rows();
    let s = small_world("quantile-stats", &rows).unlimited();
    let values: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let runs = 1000;
    for (sql, num, den) in [
        ("SELECT MEDIAN(v) FROM small", 1u64, 2u64),
        (
            "SELECT PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY v) FROM small",
            3,
            4,
        ),
    ] {
        let epsilon = 1.0;
        let scale = 2.0 * f64::from(K) * num.max(den - num) as f64 / epsilon;
        // The engine states that scale.
        let (t, _) = s
            .block_on(s.engine().query(&asker("stats", "q"), sql, epsilon))
            .unwrap();
        assert!(
            t.mechanism.contains(&format!("scale {scale:.4}")),
            "{sql}: {}",
            t.mechanism
        );
        assert_eq!(
            t.accuracy[0][0], None,
            "a quantile's error is data-dependent"
        );

        let sc = scores(&values, num, den);
        let samples = releases(&s, sql, epsilon, runs);
        let (stat, df) = chi_square(&samples, &permute_and_flip(&sc, scale));
        let crit = chi_critical(df);
        println!("{sql}: chi-square {stat:.1}, critical {crit:.1}, df {df}");
        assert!(
            stat < crit,
            "{sql}: chi-square {stat:.1} > {crit:.1} (df {df}): releases do not follow scale {scale}"
        );
        for wrong in [scale * 1.3, scale * 0.7] {
            let (stat, df) = chi_square(&samples, &permute_and_flip(&sc, wrong));
            let crit = chi_critical(df);
            println!("  at scale {wrong}: chi-square {stat:.1}, critical {crit:.1}");
            assert!(
                stat > crit,
                "{sql}: the test failed to reject scale {wrong} (chi-square {stat:.1}, critical {crit:.1})"
            );
        }
    }
}

#[test]
fn grouped_quantiles_release_every_declared_key_within_the_bounds() {
    let s = small_world("quantile-groups", &spread_rows()).unlimited();
    let (t, _) = s
        .block_on(s.engine().query(
            &asker("stats", "q"),
            "SELECT grp, MEDIAN(v) AS m, COUNT(*) AS n FROM small WHERE grp = 'a' GROUP BY grp",
            2.0,
        ))
        .unwrap();
    assert_eq!(t.columns, ["grp", "m", "n"]);
    assert_eq!(t.rows.len(), 2, "empty group b is released too");
    for row in &t.rows {
        let Value::Int(m) = row[1] else {
            panic!("{row:?}")
        };
        assert!((0..=HI).contains(&m));
    }
    assert!(t.mechanism.contains("0.5-quantile of v"), "{}", t.mechanism);
}

#[test]
fn empirical_privacy_loss_of_the_median_stays_within_epsilon() {
    // D: 60 people with one row each at 10..=29, and one person at the cap with every row at HI.
    let mut rows: Vec<(i64, &str, i64)> = (0..60).map(|p| (p, "a", 10 + p % 20)).collect();
    let with = {
        let mut r = rows.clone();
        for _ in 0..K {
            r.push((999, "a", HI));
        }
        r
    };
    let (world_d, world_dp) = (
        small_world("audit-d", &with),
        small_world("audit-dp", &rows),
    );
    rows.clear();
    let (d, dp) = (world_d.unlimited(), world_dp.unlimited());
    let sql = "SELECT MEDIAN(v) FROM small";
    let (epsilon, runs) = (1.0, 2000);
    let on_d = releases(&d, sql, epsilon, runs);
    let on_dp = releases(&dp, sql, epsilon, runs);

    // 20 thresholds x 2 event kinds x 2 directions = 80 events; two one-sided bounds at z = 4.5
    // each (3.4e-6) give a family-wise error below 0.001.
    let z = 4.5;
    let mut max_point = 0.0f64;
    for t in 10..30 {
        for above in [true, false] {
            let hit = |v: &&i64| (**v >= t) == above;
            let k1 = on_d.iter().filter(hit).count();
            let k2 = on_dp.iter().filter(hit).count();
            for (x, y) in [(k1, k2), (k2, k1)] {
                let (x_lo, _) = wilson(x, runs, z);
                let (_, y_hi) = wilson(y, runs, z);
                if x_lo > 0.0 {
                    let lower = (x_lo / y_hi).ln();
                    assert!(
                        lower <= epsilon + 1e-9,
                        "median ≥/< {t}: privacy loss at least {lower:.3} > ε={epsilon} ({x} vs {y} of {runs})"
                    );
                }
                if x > 0 && y > 0 {
                    max_point = max_point.max((x as f64 / y as f64).ln());
                }
            }
        }
    }
    // Power: the person's rows visibly move the median's distribution.
    assert!(
        max_point > 0.1,
        "D and D′ look identical to the median: {max_point}"
    );
    println!("median: largest point estimate of the privacy loss {max_point:.3} (ε {epsilon})");
}
