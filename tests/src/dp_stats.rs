//! Statistical checks of the noise the engine adds, end to end through SQL.
//!
//! The exact answers come from plain DataFusion SQL over the same Parquet file, on the
//! `health_stats` declaration whose contribution bound (7) no person in the data exceeds, so that the
//! bounded answer equals the plain one. Each check is a Kolmogorov–Smirnov test of the errors
//! against the discrete Laplace distribution with the scale the engine declares, at α = 0.001
//! (a correct mechanism fails it one run in a thousand; the asymptotic KS critical value is
//! conservative for a discrete distribution). The same test must *reject* noise whose scale is 30%
//! off, drawn from OpenDP's sampler with a wrong calibration: that is the test's power.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sluice_runtime::Value;
use sluice_runtime::privacy::mechanisms::{ALPHA, DiscreteLaplace};

use sluice_runtime::Sandbox;

use crate::{data_root, stats_sandbox as sandbox};

const KS_ALPHA: f64 = 0.001;

/// P(X ≤ x) for the discrete Laplace distribution with `scale` (pmf ∝ exp(-|x|/scale)).
fn discrete_laplace_cdf(x: i64, scale: f64) -> f64 {
    let q = (-1.0 / scale).exp();
    if x < 0 {
        q.powf(-x as f64) / (1.0 + q)
    } else {
        1.0 - q.powf((x + 1) as f64) / (1.0 + q)
    }
}

/// The KS statistic of integer samples against the discrete Laplace(`scale`) CDF, evaluated on
/// both sides of every jump.
fn ks_statistic(samples: &[i64], scale: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let n = s.len() as f64;
    let mut d: f64 = 0.0;
    let mut i = 0;
    while i < s.len() {
        let v = s[i];
        let below = i as f64 / n;
        while i < s.len() && s[i] == v {
            i += 1;
        }
        let upto = i as f64 / n;
        d = d
            .max((upto - discrete_laplace_cdf(v, scale)).abs())
            .max((below - discrete_laplace_cdf(v - 1, scale)).abs());
    }
    d
}

fn ks_critical(n: usize) -> f64 {
    (-0.5 * (KS_ALPHA / 2.0).ln()).sqrt() / (n as f64).sqrt()
}

/// Runs `sql` with plain DataFusion over the raw test file registered as `t`.
fn plain(s: &Sandbox, sql: &str) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    s.block_on(async {
        let ctx = SessionContext::new();
        let path = data_root().join("data/health_visits.parquet");
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    })
}

/// Exact per-group answers of `sql` over the raw file registered as `t` (first columns keys, last
/// column an integer), by plain DataFusion SQL.
fn exact(s: &Sandbox, sql: &str, nkeys: usize) -> HashMap<Vec<String>, i64> {
    let batches = plain(s, sql);
    let mut out = HashMap::new();
    for b in batches {
        let keys: Vec<_> = (0..nkeys)
            .map(|i| cast(b.column(i), &DataType::Utf8).unwrap())
            .collect();
        let v = cast(b.column(nkeys), &DataType::Int64).unwrap();
        let v = v.as_any().downcast_ref::<Int64Array>().unwrap();
        for r in 0..b.num_rows() {
            let key = keys
                .iter()
                .map(|k| {
                    k.as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .value(r)
                        .to_string()
                })
                .collect();
            out.insert(key, v.value(r));
        }
    }
    out
}

/// Runs `sql` `runs` times at `epsilon` and returns the errors of the last column against `truth`
/// (multiplied by `unit` and rounded, so that fixed-point sums compare as integers), with the 95%
/// accuracy the engine stated for each cell (in the same units).
fn errors(
    s: &Sandbox,
    sql: &str,
    nkeys: usize,
    runs: usize,
    epsilon: f64,
    truth: &HashMap<Vec<String>, i64>,
    unit: f64,
) -> (Vec<i64>, Vec<f64>) {
    let asker = crate::asker("stats", "stats");
    let mut errs = Vec::new();
    let mut accs = Vec::new();
    for _ in 0..runs {
        let (t, _) = s
            .block_on(s.engine().query(&asker, sql, epsilon))
            .expect("query answered");
        for (r, row) in t.rows.iter().enumerate() {
            let key: Vec<String> = row[..nkeys]
                .iter()
                .map(|v| match v {
                    Value::Text(s) => s.clone(),
                    other => panic!("key {other:?}"),
                })
                .collect();
            let noisy = row[nkeys].as_f64().expect("numeric aggregate");
            let exact = *truth.get(&key).unwrap_or(&0) as f64;
            errs.push(((noisy - exact) * unit).round() as i64);
            accs.push(t.accuracy[r][nkeys].expect("aggregate accuracy") * unit);
        }
    }
    (errs, accs)
}

/// Noise drawn from OpenDP's sampler at `scale` (for the power checks).
fn opendp_noise(n: usize, scale: f64) -> Vec<i64> {
    // sensitivity 1 and ε = 1/scale gives exactly `scale`.
    let m = DiscreteLaplace::new(1, 1.0 / scale).unwrap();
    m.release(&vec![0; n]).unwrap()
}

#[test]
fn count_noise_matches_the_declared_scale_and_a_30_percent_error_is_detected() {
    let (s, _) = sandbox();
    let truth = exact(
        &s,
        "SELECT district, sex, COUNT(*) FROM t GROUP BY district, sex",
        2,
    );
    // 500 runs x 18 cells = 9,000 errors; ε = 0.1 per query, sensitivity 7 → scale 70.
    let sql = "SELECT district, sex, COUNT(*) AS n FROM health_stats GROUP BY district, sex";
    let (errs, accs) = errors(&s, sql, 2, 500, 0.1, &truth, 1.0);
    assert_eq!(errs.len(), 9_000);
    let scale = 7.0 / 0.1;
    let crit = ks_critical(errs.len());
    let d = ks_statistic(&errs, scale);
    assert!(
        d < crit,
        "KS statistic {d:.4} exceeds {crit:.4}: noise does not match scale {scale}"
    );

    // The same test rejects noise 30% too wide or too narrow (power).
    for wrong in [scale * 1.3, scale * 0.7] {
        let d = ks_statistic(&opendp_noise(errs.len(), wrong), scale);
        assert!(
            d > crit,
            "KS failed to reject scale {wrong} (D={d:.4}, critical {crit:.4})"
        );
    }

    // The stated 95% accuracy covers about 95% of the errors (discreteness makes it a bit more).
    let expected = DiscreteLaplace::new(7, 0.1).unwrap().accuracy(ALPHA);
    assert!(accs.iter().all(|a| (a - expected).abs() < 1e-9));
    let covered = errs
        .iter()
        .zip(&accs)
        .filter(|(e, a)| (e.abs() as f64) < **a)
        .count() as f64
        / errs.len() as f64;
    assert!((0.94..=0.965).contains(&covered), "coverage {covered}");
}

#[test]
fn distinct_unit_count_noise_matches_its_scale_and_a_30_percent_error_is_detected() {
    let (s, _) = sandbox();
    let truth = exact(
        &s,
        "SELECT district, COUNT(DISTINCT person_id) FROM t GROUP BY district",
        1,
    );
    // 900 runs x 9 districts = 8,100 errors (ε 90 of the grant's 100). A person counts once in
    // each district they visited, at most min(k = 7, 9 districts) = 7: ε = 0.1 gives scale 70.
    let sql =
        "SELECT district, COUNT(DISTINCT person_id) AS people FROM health_stats GROUP BY district";
    let (errs, accs) = errors(&s, sql, 1, 900, 0.1, &truth, 1.0);
    assert_eq!(errs.len(), 8_100);
    let scale = 7.0 / 0.1;
    let crit = ks_critical(errs.len());
    let d = ks_statistic(&errs, scale);
    assert!(
        d < crit,
        "KS statistic {d:.4} exceeds {crit:.4} at scale {scale}"
    );
    for wrong in [scale * 1.3, scale * 0.7] {
        let d = ks_statistic(&errs, wrong);
        assert!(
            d > crit,
            "KS failed to reject scale {wrong} (D={d:.4}, critical {crit:.4})"
        );
    }
    let expected = DiscreteLaplace::new(7, 0.1).unwrap().accuracy(ALPHA);
    assert!(accs.iter().all(|a| (a - expected).abs() < 1e-9));

    // Without GROUP BY a person counts once: sensitivity 1.
    let (t, _) = s
        .block_on(s.engine().query(
            &crate::asker("stats", "distinct-total"),
            "SELECT COUNT(DISTINCT person_id) FROM health_stats",
            0.1,
        ))
        .unwrap();
    let one = DiscreteLaplace::new(1, 0.1).unwrap().accuracy(ALPHA);
    assert!((t.accuracy[0][0].unwrap() - one).abs() < 1e-9);
    assert!(
        t.mechanism
            .contains("COUNT(DISTINCT person_id): sensitivity 1"),
        "{}",
        t.mechanism
    );
}

#[test]
fn sum_noise_matches_the_declared_scale_on_clamped_values() {
    let (s, _) = sandbox();
    // Ages in the data go up to 104; the policy clamps them to [0, 100] before summing.
    let truth = exact(
        &s,
        "SELECT sex, SUM(CASE WHEN age > 100 THEN 100 ELSE age END) FROM t GROUP BY sex",
        1,
    );
    // Integer column with bounds [0, 100] is summed exactly (unit 1): sensitivity 7 x 100 = 700,
    // ε = 0.25 → scale 2800. 350 runs x 2 cells = 700 errors (ε 87.5 of the grant's 100).
    let sql = "SELECT sex, SUM(age) AS s FROM health_stats GROUP BY sex";
    let (errs, _) = errors(&s, sql, 1, 350, 0.25, &truth, 1.0);
    let scale = 700.0 / 0.25;
    let crit = ks_critical(errs.len());
    let d = ks_statistic(&errs, scale);
    eprintln!("sum: n={} KS D={d:.4} critical={crit:.4}", errs.len());
    assert!(
        d < crit,
        "KS statistic {d:.4} exceeds {crit:.4}: sum noise does not match scale {scale}"
    );
    let d_wrong = ks_statistic(&opendp_noise(errs.len(), scale * 0.5), scale);
    assert!(
        d_wrong > crit,
        "KS failed to reject half the scale (D={d_wrong:.4})"
    );
}

#[test]
fn every_declared_key_is_released_sorted_even_when_empty() {
    let (s, _) = sandbox();
    let asker = crate::asker("stats", "keys");
    let (t, _) = s
        .block_on(s.engine().query(
            &asker,
            "SELECT district, COUNT(*) AS n FROM health_stats WHERE district = 'Guangling' GROUP BY district",
            1.0,
        ))
        .unwrap();
    let keys: Vec<_> = t.rows.iter().map(|r| r[0].clone()).collect();
    let mut expected: Vec<_> = sluice_datagen::DISTRICTS
        .iter()
        .map(|(d, _)| d.to_string())
        .collect();
    expected.sort();
    assert_eq!(
        keys,
        expected.into_iter().map(Value::Text).collect::<Vec<_>>()
    );
    assert_eq!(t.key_columns, 1);
    assert_eq!(t.cost.epsilon, 1.0);
}

#[test]
fn key_columns_come_first_whatever_the_select_order() {
    let (s, _) = sandbox();
    let asker = crate::asker("stats", "order");
    let (t, _) = s
        .block_on(s.engine().query(
            &asker,
            "SELECT COUNT(*) AS n, sex FROM health_stats GROUP BY sex",
            1.0,
        ))
        .unwrap();
    assert_eq!(t.columns, vec!["sex", "n"]);
    assert_eq!(t.key_columns, 1);
    assert_eq!(t.rows[0][0], Value::Text("F".into()));
}

/// A Laplace(`scale`) sample (a reference distribution for the test, not privacy noise).
fn laplace(rng: &mut impl rand::Rng, scale: f64) -> f64 {
    let u: f64 = rng.random_range(-0.5..0.5);
    -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln()
}

/// Two-sample Kolmogorov–Smirnov statistic.
#[test]
fn variance_releases_follow_the_declared_noisy_sums_and_a_30_percent_error_is_detected() {
    // The engine releases VARIANCE(age) from three noisy sums over ages clamped to [0, 100] and
    // centered at 50: Σ(x-50) (sensitivity 7·50), Σ(x-50)² (7·2500) and the count (7), each at
    // ε/3. The test simulates that construction with its own estimator and compares the
    // engine's releases with the simulation by a two-sample KS test at α = 0.001; a simulation
    // with every scale 30% too wide or too narrow must be rejected (power).
    let s = crate::unlimited_sandbox(crate::data_root());
    let ages = {
        let batches = plain(
            &s,
            "SELECT CAST(age AS BIGINT) FROM t WHERE age IS NOT NULL",
        );
        let mut v = Vec::new();
        for b in batches {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            v.extend(a.iter().flatten().map(|x| (x.clamp(0, 100) - 50) as f64));
        }
        v
    };
    let n = ages.len() as f64;
    let sum: f64 = ages.iter().sum();
    let sum_sq: f64 = ages.iter().map(|x| x * x).sum();
    let true_var = (sum_sq - sum * sum / n) / (n - 1.0);

    let epsilon = 0.3;
    let each = epsilon / 3.0;
    let runs = 1500;
    let asker = crate::asker("stats", "variance");
    let mut released = Vec::with_capacity(runs);
    let mut covered = 0;
    for _ in 0..runs {
        let (t, _) = s
            .block_on(s.engine().query(
                &asker,
                "SELECT VARIANCE(age) AS v FROM health_stats",
                epsilon,
            ))
            .unwrap();
        let v = t.rows[0][0].as_f64().unwrap();
        let acc = t.accuracy[0][0].expect("variance states an accuracy");
        covered += usize::from((v - true_var).abs() <= acc);
        released.push(v);
    }

    let estimate = |rng: &mut rand::rngs::StdRng, widen: f64| {
        let noisy_n = n
            + (DiscreteLaplace::new(7, each / widen)
                .unwrap()
                .release(&[0])
                .unwrap()[0]) as f64;
        let s = sum + laplace(rng, 7.0 * 50.0 / each * widen);
        let ss = sum_sq + laplace(rng, 7.0 * 2500.0 / each * widen);
        let mean = (s / noisy_n).clamp(-50.0, 50.0);
        ((ss / noisy_n - mean * mean).clamp(0.0, 2500.0) * noisy_n / (noisy_n - 1.0)).min(2500.0)
    };
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let reference: Vec<f64> = (0..20_000).map(|_| estimate(&mut rng, 1.0)).collect();
    let crit = |a: usize, b: usize| 1.949 * ((a + b) as f64 / (a * b) as f64).sqrt();
    let d = crate::ks_two_sample(&released, &reference);
    assert!(
        d < crit(runs, reference.len()),
        "KS {d:.4} > {:.4}: variance releases differ from the declared construction",
        crit(runs, reference.len())
    );
    for widen in [1.3, 0.7] {
        let wrong: Vec<f64> = (0..runs).map(|_| estimate(&mut rng, widen)).collect();
        let d = crate::ks_two_sample(&wrong, &reference);
        assert!(
            d > crit(runs, reference.len()),
            "KS failed to reject scales x{widen} (D={d:.4})"
        );
    }
    // The stated 95% interval (a union bound over the three sums) covers at least 95%.
    let coverage = covered as f64 / runs as f64;
    assert!(coverage >= 0.94, "coverage {coverage}");
    eprintln!("variance: KS D={d:.4}, coverage {coverage:.3}, true {true_var:.1}");
}

#[test]
fn stddev_and_population_forms_agree_with_plain_sql_at_high_epsilon() {
    let s = crate::unlimited_sandbox(crate::data_root());
    let exact: f64 = {
        let b = plain(
            &s,
            "SELECT STDDEV_POP(CASE WHEN age > 100 THEN 100 ELSE age END) FROM t",
        );
        b[0].column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .unwrap()
            .value(0)
    };
    let (t, _) = s
        .block_on(s.engine().query(
            &crate::asker("stats", "stddev"),
            "SELECT sex, STDDEV_POP(age) AS sd, STDDEV(age) AS sd_s, VAR_POP(age) AS v FROM health_stats GROUP BY sex",
            100.0,
        ))
        .unwrap();
    assert_eq!(t.columns, ["sex", "sd", "sd_s", "v"]);
    for row in &t.rows {
        let sd = row[1].as_f64().unwrap();
        let v = row[3].as_f64().unwrap();
        // Per sex the spread is close to the overall one; ε = 100 makes the noise negligible.
        assert!((sd - exact).abs() < 0.1 * exact, "{sd} vs {exact}");
        assert!((v.sqrt() - sd).abs() < 0.1 * exact);
    }
    assert!(
        t.mechanism.contains("SUM((clamp(age, 0, 100) - 50)^2)"),
        "{}",
        t.mechanism
    );
}

#[test]
fn case_buckets_release_every_label_and_match_plain_sql() {
    // A histogram of a bounded column into query-declared bins: the domain is the labels, every
    // label is released (the empty '200+' too), rows matching no branch are dropped.
    let (s, _) = sandbox();
    let buckets = "CASE WHEN age < 18 THEN 'child' WHEN age BETWEEN 18 AND 64 THEN 'adult' \
                   WHEN age > 200 THEN '200+' WHEN age >= 65 AND sex = 'F' THEN 'senior-f' END";
    let truth = exact(
        &s,
        &format!("SELECT {buckets} AS band, COUNT(*) FROM t GROUP BY band"),
        1,
    );
    let (t, _) = s
        .block_on(s.engine().query(
            &crate::asker("stats", "buckets"),
            &format!("SELECT {buckets} AS band, COUNT(*) AS n FROM health_stats GROUP BY band"),
            50.0,
        ))
        .unwrap();
    assert_eq!(t.columns, ["band", "n"]);
    let labels: Vec<&Value> = t.rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        labels,
        ["200+", "adult", "child", "senior-f"]
            .map(|l| Value::Text(l.into()))
            .iter()
            .collect::<Vec<_>>()
    );
    for row in &t.rows {
        let Value::Text(label) = &row[0] else {
            unreachable!()
        };
        let exact = *truth.get(&vec![label.clone()]).unwrap_or(&0) as f64;
        let noisy = row[1].as_f64().unwrap();
        // ε = 50, sensitivity 7: scale 0.14, so the noise is almost always 0 or ±1.
        assert!((noisy - exact).abs() <= 3.0, "{label}: {noisy} vs {exact}");
    }
    assert!(!truth.contains_key(&vec!["200+".to_string()]));
}
