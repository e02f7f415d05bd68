//! Histograms over policy-declared bins: `GROUP BY <numeric column>` on a column whose policy
//! declares `bins` releases every bin, empty ones too, with edges assigned as labelled.

use sluice_runtime::{QueryError, Sandbox, Value};

use crate::{World, asker};

fn world(name: &str) -> Sandbox {
    let policy = r#"
[dataset.readings]
source = "data/readings.csv"
holder = "test"
classification = "internal"
privacy_unit = "meter_id"
max_rows_per_unit = 1
columns.zone = { kind = "category", public_values = ["n", "s"] }
columns.v = { kind = "int", bounds = [0, 30], bins = [0, 10, 20, 30] }
columns.w = { kind = "float", bins = [0.0, 0.5, 1.0] }
columns.u = { kind = "int", bounds = [0, 30] }
"#
    .to_string()
        + &crate::stats_grant("readings", "bins", r#""count", "sum""#);
    // v: 0, 9 → [0, 10); 10, 19, 19 → [10, 20); 20, 30 → [20, 30]; 31 and -1 → no bin.
    // w: 0.2 → [0, 0.5); 0.5 → [0.5, 1]; 1.5 → no bin (NULL-free data).
    let mut csv = String::from("meter_id,zone,v,w,u\n");
    for (i, (zone, v, w)) in [
        ("n", 0, 0.2),
        ("n", 9, 0.2),
        ("n", 10, 0.5),
        ("s", 19, 0.5),
        ("s", 19, 1.5),
        ("s", 20, 0.2),
        ("s", 30, 0.5),
        ("n", 31, 0.5),
        ("n", -1, 0.2),
    ]
    .iter()
    .enumerate()
    {
        csv.push_str(&format!("{i},{zone},{v},{w},{v}\n"));
    }
    let world = World::csv(name, "readings", &csv, &policy);
    world.unlimited()
}

fn rows(s: &Sandbox, sql: &str) -> Result<Vec<Vec<Value>>, QueryError> {
    // ε 50 with one row per meter: discrete Laplace of scale 0.02, so every count is exact
    // except with probability below 1e-20.
    s.block_on(s.engine().query(&asker("stats", "bins"), sql, 50.0))
        .map(|(t, _)| t.rows)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[test]
fn a_binned_column_groups_into_every_bin_with_edges_as_labelled() {
    let s = world("bins-int");
    let r = rows(&s, "SELECT v, COUNT(*) AS n FROM readings GROUP BY v").unwrap();
    assert_eq!(
        r,
        vec![
            vec![text("[0, 10)"), Value::Int(2)],
            vec![text("[10, 20)"), Value::Int(3)],
            vec![text("[20, 30]"), Value::Int(2)],
        ]
    );
    let r = rows(&s, "SELECT w, COUNT(*) AS n FROM readings GROUP BY w").unwrap();
    assert_eq!(
        r,
        vec![
            vec![text("[0, 0.5)"), Value::Int(4)],
            vec![text("[0.5, 1]"), Value::Int(4)],
        ]
    );
}

#[test]
fn bins_combine_with_other_keys_where_and_sums_and_empty_bins_are_released() {
    let s = world("bins-mixed");
    let r = rows(
        &s,
        "SELECT zone, v, COUNT(*) AS n, SUM(u) AS total FROM readings WHERE w < 1.0 GROUP BY zone, v",
    )
    .unwrap();
    // Counts are exact at this ε; the sums (sensitivity 30, ε 25 each: scale 1.2) within ±25
    // except with probability about 1e-9 per cell.
    let expected = [
        ("n", "[0, 10)", 2, 9),
        ("n", "[10, 20)", 1, 10),
        ("n", "[20, 30]", 0, 0),
        ("s", "[0, 10)", 0, 0),
        ("s", "[10, 20)", 1, 19),
        ("s", "[20, 30]", 2, 50),
    ];
    assert_eq!(r.len(), expected.len());
    for (row, (zone, bin, n, total)) in r.iter().zip(expected) {
        assert_eq!(row[..3], [text(zone), text(bin), Value::Int(n)]);
        let got = row[3].as_f64().unwrap();
        assert!((got - total as f64).abs() <= 25.0, "{row:?}");
    }
}

#[test]
fn a_numeric_column_without_bins_is_not_a_key() {
    let s = world("bins-none");
    match rows(&s, "SELECT u, COUNT(*) AS n FROM readings GROUP BY u") {
        Err(QueryError::ColumnDenied(m)) => assert!(m.contains("bins"), "{m}"),
        other => panic!("{other:?}"),
    }
}
