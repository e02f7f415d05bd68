//! Date columns: date literals in WHERE, and `date_trunc`/`EXTRACT` keys whose domains come
//! from the policy's bounds (every unit released, empty ones too; dates outside dropped).

use sluice_runtime::{QueryError, Sandbox, Value};

use crate::{World, asker};

fn world(name: &str) -> Sandbox {
    let policy = r#"
[dataset.trips]
source = "data/trips.csv"
holder = "test"
classification = "internal"
privacy_unit = "visitor_id"
max_rows_per_unit = 1
columns.day = { kind = "date", bounds = [2025-01-01, 2025-06-30] }
columns.booked = { kind = "date" }
columns.spend = { kind = "int", bounds = [0, 100] }
"#
    .to_string()
        + &crate::stats_grant("trips", "dates", r#""count", "sum""#);
    // Jan: 2, Feb: 0, Mar: 3, Apr: 1, May: 0, Jun: 1; one trip in 2024 (outside the bounds).
    let days = [
        "2025-01-05",
        "2025-01-31",
        "2025-03-01",
        "2025-03-15",
        "2025-03-31",
        "2025-04-30",
        "2025-06-30",
        "2024-12-31",
    ];
    let mut csv = String::from("visitor_id,day,booked,spend\n");
    for (i, d) in days.iter().enumerate() {
        csv.push_str(&format!("{i},{d},2024-11-01,10\n"));
    }
    let world = World::csv(name, "trips", &csv, &policy);
    world.unlimited()
}

fn rows(s: &Sandbox, sql: &str) -> Result<Vec<Vec<Value>>, QueryError> {
    // ε 50, one row per visitor: counts are exact except with probability below 1e-20.
    s.block_on(s.engine().query(&asker("stats", "dates"), sql, 50.0))
        .map(|(t, _)| t.rows)
}

fn counts(r: &[Vec<Value>]) -> Vec<(String, i64)> {
    r.iter()
        .map(|row| match (&row[0], &row[1]) {
            (Value::Text(k), Value::Int(n)) => (k.clone(), *n),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn date_trunc_releases_every_unit_within_the_bounds() {
    let s = world("dates-trunc");
    let r = rows(
        &s,
        "SELECT date_trunc('month', day) AS month, COUNT(*) AS n FROM trips GROUP BY date_trunc('month', day)",
    )
    .unwrap();
    assert_eq!(
        counts(&r),
        pairs(&[
            ("2025-01-01", 2),
            ("2025-02-01", 0),
            ("2025-03-01", 3),
            ("2025-04-01", 1),
            ("2025-05-01", 0),
            ("2025-06-01", 1),
        ])
    );
    let r = rows(
        &s,
        "SELECT date_trunc('quarter', day) AS q, COUNT(*) AS n FROM trips GROUP BY 1",
    )
    .unwrap();
    assert_eq!(counts(&r), pairs(&[("2025-01-01", 5), ("2025-04-01", 2)]));
}

#[test]
fn a_where_date_range_narrows_the_released_dates() {
    let s = world("dates-narrow");
    // The query's own literals are public: only the months it keeps are released (not the six
    // of the bounds, four of them pure noise).
    let r = rows(
        &s,
        "SELECT date_trunc('month', day) AS month, COUNT(*) AS n FROM trips WHERE day >= DATE '2025-03-01' AND day < DATE '2025-05-01' GROUP BY 1",
    )
    .unwrap();
    assert_eq!(counts(&r), pairs(&[("2025-03-01", 3), ("2025-04-01", 1)]));
    // BETWEEN, reversed comparisons and a range wider than the bounds narrow as well, to the
    // bounds at most.
    let r = rows(
        &s,
        "SELECT date_trunc('month', day) AS month, COUNT(*) AS n FROM trips WHERE DATE '2025-05-15' >= day AND day BETWEEN DATE '2024-01-01' AND DATE '2025-12-31' GROUP BY 1",
    )
    .unwrap();
    assert_eq!(
        counts(&r),
        pairs(&[
            ("2025-01-01", 2),
            ("2025-02-01", 0),
            ("2025-03-01", 3),
            ("2025-04-01", 1),
            ("2025-05-01", 0),
        ])
    );
    // An OR does not narrow (either side may keep any date).
    let r = rows(
        &s,
        "SELECT date_trunc('month', day) AS month, COUNT(*) AS n FROM trips WHERE day < DATE '2025-02-01' OR spend > 5 GROUP BY 1",
    )
    .unwrap();
    assert_eq!(r.len(), 6);
    // A range that keeps no date of the bounds is refused before anything is charged.
    let e = rows(
        &s,
        "SELECT date_trunc('month', day) AS month, COUNT(*) AS n FROM trips WHERE day > DATE '2026-01-01' GROUP BY 1",
    )
    .unwrap_err();
    assert!(e.to_string().contains("keeps no date of `day`"), "{e}");
}

#[test]
fn extract_keys_have_fixed_calendar_domains() {
    let s = world("dates-extract");
    let r = rows(
        &s,
        "SELECT EXTRACT(MONTH FROM day) AS m, COUNT(*) AS n FROM trips GROUP BY EXTRACT(MONTH FROM day)",
    )
    .unwrap();
    // Twelve months, zero-padded so that they sort in calendar order; December holds the 2024
    // trip (EXTRACT ignores the year).
    let c = counts(&r);
    let months: Vec<&str> = c.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        months,
        [
            "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"
        ]
    );
    assert_eq!(c[0], ("01".to_string(), 2));
    assert_eq!(c[11], ("12".to_string(), 1));
    let r = rows(
        &s,
        "SELECT EXTRACT(YEAR FROM day) AS y, COUNT(*) AS n FROM trips GROUP BY 1",
    )
    .unwrap();
    assert_eq!(
        counts(&r),
        pairs(&[("2025", 7)]),
        "2024 is outside the bounds"
    );
    // Day of week: 2025-01-05 was a Sunday (0).
    let r = rows(
        &s,
        "SELECT date_part('dow', day) AS d, COUNT(*) AS n FROM trips WHERE day = DATE '2025-01-05' GROUP BY 1",
    )
    .unwrap();
    assert_eq!(counts(&r)[0], ("0".to_string(), 1));
}

#[test]
fn date_literals_filter_and_malformed_ones_are_refused_before_anything_runs() {
    let s = world("dates-where");
    let r = rows(
        &s,
        "SELECT COUNT(*) AS n FROM trips WHERE day >= DATE '2025-03-01' AND day < '2025-05-01'",
    )
    .unwrap();
    assert_eq!(r[0][0], Value::Int(4));
    let r = rows(
        &s,
        "SELECT COUNT(*) AS n FROM trips WHERE day BETWEEN '2025-01-01' AND '2025-01-31' OR booked IS NULL",
    )
    .unwrap();
    assert_eq!(r[0][0], Value::Int(2));
    for sql in [
        "SELECT COUNT(*) AS n FROM trips WHERE day > '2025-02-30'",
        "SELECT COUNT(*) AS n FROM trips WHERE day > 'soon'",
        "SELECT COUNT(*) AS n FROM trips WHERE day > 5",
        "SELECT COUNT(*) AS n FROM trips WHERE day > DATE '2025-13-01'",
    ] {
        assert!(
            matches!(rows(&s, sql), Err(QueryError::Unsupported(_))),
            "{sql}"
        );
    }
}

#[test]
fn date_keys_without_a_public_domain_are_refused_with_the_reason() {
    let s = world("dates-denied");
    let cases = [
        (
            "SELECT date_trunc('month', booked) AS m, COUNT(*) AS n FROM trips GROUP BY 1",
            "bounds",
        ),
        (
            "SELECT date_trunc('hour', day) AS h, COUNT(*) AS n FROM trips GROUP BY 1",
            "date_trunc('year'",
        ),
        (
            "SELECT day, COUNT(*) AS n FROM trips GROUP BY day",
            "unit of time",
        ),
        (
            "SELECT date_trunc('month', spend) AS m, COUNT(*) AS n FROM trips GROUP BY 1",
            "applies to date columns",
        ),
        (
            "SELECT date_trunc('day', day) AS d, COUNT(*) AS n FROM trips WHERE date_trunc('day', day) = DATE '2025-01-05' GROUP BY 1",
            "WHERE",
        ),
    ];
    for (sql, why) in cases {
        match rows(&s, sql) {
            Err(e) => assert!(e.to_string().contains(why), "{sql}: {e}"),
            Ok(r) => panic!("{sql} answered {r:?}"),
        }
    }
    // EXTRACT of a bounded field needs no bounds.
    let r = rows(
        &s,
        "SELECT EXTRACT(QUARTER FROM booked) AS q, COUNT(*) AS n FROM trips GROUP BY 1",
    )
    .unwrap();
    assert_eq!(counts(&r), pairs(&[("1", 0), ("2", 0), ("3", 0), ("4", 8)]));
}
