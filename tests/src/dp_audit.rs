//! A black-box privacy audit: the same query, many times, on neighbouring datasets D and D′ (D
//! without every row of one person who is at the contribution cap). For a family of output
//! events E ("the released value of the person's district is at least t"), the empirical privacy
//! loss ln(P_D[E] / P_D′[E]) (and the reverse) must stay within the ε each aggregate was released
//! with. Each probability gets a Wilson score interval at z = 4.5; over the family of 108 events
//! (Bonferroni) the test wrongly fails with probability below 0.001. Quantiles are not released
//! yet, so they are not audited yet.

use std::collections::HashMap;
use std::path::PathBuf;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sluice_runtime::{Sandbox, Value};

use crate::{asker, data_root, temp_dir, unlimited_sandbox, wilson};

const RUNS: usize = 1500;
/// ε of the whole query; it has four releases (count, sum, and a sum and a count for AVG).
const EPSILON: f64 = 2.0;

/// Writes D′: the test data without `person`'s rows. Returns its data root.
fn without_person(s: &Sandbox, person: i64) -> PathBuf {
    let root = temp_dir("audit");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let out = root.join("data/health_visits.parquet");
    // The policy's other datasets must exist too (the sandbox refuses to start otherwise).
    std::fs::copy(
        data_root().join("data/tourism_trips.parquet"),
        root.join("data/tourism_trips.parquet"),
    )
    .unwrap();
    s.block_on(async {
        let ctx = SessionContext::new();
        let src = data_root().join("data/health_visits.parquet");
        ctx.register_parquet("t", src.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx.sql(&format!("SELECT * FROM t WHERE person_id <> {person}"))
            .await
            .unwrap()
            .write_parquet(out.to_str().unwrap(), Default::default(), None)
            .await
            .unwrap();
    });
    root
}

/// The person with the most rows in one district, and that district.
fn heavy_person(s: &Sandbox) -> (i64, String, i64) {
    let batches = s.block_on(async {
        let ctx = SessionContext::new();
        let src = data_root().join("data/health_visits.parquet");
        ctx.register_parquet("t", src.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx.sql(
            "SELECT CAST(person_id AS BIGINT) AS p, CAST(district AS VARCHAR) AS d, COUNT(*) AS c FROM t
             GROUP BY person_id, district ORDER BY c DESC, person_id LIMIT 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
    });
    use datafusion::arrow::array::{Int64Array, StringArray};
    let b = &batches[0];
    let p = b
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let d = datafusion::arrow::compute::cast(
        b.column(1),
        &datafusion::arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let d = d
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    let c = b
        .column(2)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    (p, d, c)
}

/// Released (count, sum, mean) of `district`, `RUNS` times.
fn releases(s: &Sandbox, district: &str) -> Vec<[f64; 3]> {
    let sql = "SELECT district, COUNT(*) AS n, SUM(cost) AS s, AVG(cost) AS m FROM health_visits GROUP BY district";
    let a = asker("analyst", "audit");
    (0..RUNS)
        .map(|_| {
            let (t, _) = s.block_on(s.engine().query(&a, sql, EPSILON)).unwrap();
            let row = t
                .rows
                .iter()
                .find(|r| r[0] == Value::Text(district.into()))
                .expect("every district is released");
            [1, 2, 3].map(|i| row[i].as_f64().expect("numeric"))
        })
        .collect()
}

#[test]
fn empirical_privacy_loss_of_count_sum_and_mean_stays_within_epsilon() {
    let d = unlimited_sandbox(data_root());
    let (person, district, rows) = heavy_person(&d);
    assert!(
        rows >= 3,
        "the audit needs a person with several rows in one district"
    );
    let d_prime = unlimited_sandbox(&without_person(&d, person));
    let on_d = releases(&d, &district);
    let on_d_prime = releases(&d_prime, &district);

    // Per-aggregate ε: the query's ε split over its 4 releases; AVG uses two of them.
    let eps = [EPSILON / 4.0, EPSILON / 4.0, EPSILON / 2.0];
    let names = ["COUNT", "SUM", "AVG"];
    // 3 aggregates x 9 thresholds x 2 directions x 2 (≥ t and < t) = 108 events.
    // One-sided normal tail at 4.5 is 3.4e-6 per bound; two bounds per event and 108 events give
    // a family-wise error below 0.001.
    let z = 4.5;
    let mut report = HashMap::new();
    for a in 0..3 {
        let mut pooled: Vec<f64> = on_d.iter().chain(&on_d_prime).map(|r| r[a]).collect();
        pooled.sort_by(f64::total_cmp);
        let mut max_point = 0.0f64;
        for q in 1..10 {
            let t = pooled[pooled.len() * q / 10];
            for above in [true, false] {
                let hit = |r: &&[f64; 3]| (r[a] >= t) == above;
                let k1 = on_d.iter().filter(hit).count();
                let k2 = on_d_prime.iter().filter(hit).count();
                for (x, y) in [(k1, k2), (k2, k1)] {
                    let (x_lo, _) = wilson(x, RUNS, z);
                    let (_, y_hi) = wilson(y, RUNS, z);
                    if x_lo > 0.0 {
                        let lower = (x_lo / y_hi).ln();
                        assert!(
                            lower <= eps[a] + 1e-9,
                            "{}: event value {} t={t}: privacy loss at least {lower:.3} > ε={} ({x} vs {y} of {RUNS})",
                            names[a],
                            if above { ">=" } else { "<" },
                            eps[a]
                        );
                    }
                    if x > 0 && y > 0 {
                        max_point = max_point.max((x as f64 / y as f64).ln());
                    }
                }
            }
        }
        report.insert(names[a], max_point);
    }
    // The audit has power: removing the person visibly moves the count.
    assert!(
        report["COUNT"] > 0.1,
        "the neighbouring datasets look identical to the count: {report:?}"
    );
    println!("largest point estimates of the privacy loss: {report:?} (ε per aggregate {eps:?})");
}
