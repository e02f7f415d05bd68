//! Joins with a public lookup table declared in policy (district → region): the lookup's columns
//! become GROUP BY keys whose domain is the lookup's values; nothing else about the join is open.

use std::sync::Arc;

use sluice_runtime::{QueryError, Sandbox, Value};

use crate::{Unlimited, World, asker};

const DATASET: &str = r#"
[dataset.visits]
source = "data/visits.csv"
holder = "test"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 3
columns.district = { kind = "category", public_values = ["east-1", "east-2", "west-1", "nowhere"] }
columns.v = { kind = "int", bounds = [0, 10] }
columns.secret = { kind = "hidden" }

[lookup.district_region]
source = "data/district_region.csv"
key = "district"

"#;

fn policy() -> String {
    DATASET.to_string() + &crate::stats_grant("visits", "lookups", r#""count", "sum""#)
}

/// 30 people in east-1, 20 in east-2, 10 in west-1, 5 in `nowhere` (absent from the lookup).
fn visits() -> String {
    let mut csv = String::from("person_id,district,v,secret\n");
    let mut p = 0;
    for (district, n) in [
        ("east-1", 30),
        ("east-2", 20),
        ("west-1", 10),
        ("nowhere", 5),
    ] {
        for _ in 0..n {
            csv.push_str(&format!("{p},{district},1,x{p}\n"));
            p += 1;
        }
    }
    csv
}

fn world(name: &str, lookup_csv: &str) -> Result<Sandbox, String> {
    let world = World::csv(name, "visits", &visits(), &policy());
    std::fs::write(world.root.join("data/district_region.csv"), lookup_csv).unwrap();
    world.try_sandbox(Arc::new(Unlimited))
}

const LOOKUP: &str = "district,region,population\neast-1,East,100\neast-2,East,200\nwest-1,West,300\nnorth-1,North,400\n";

fn query(s: &Sandbox, sql: &str) -> Result<sluice_runtime::NoisyTable, QueryError> {
    s.block_on(s.engine().query(&asker("stats", "lookups"), sql, 100.0))
        .map(|(t, _)| t)
}

#[test]
fn a_lookup_column_groups_the_dataset_with_every_lookup_value_released() {
    let s = world("lookup-ok", LOOKUP).unwrap();
    let t = query(
        &s,
        "SELECT r.region, COUNT(*) AS n, SUM(v.v) AS s FROM visits v \
         JOIN district_region r ON v.district = r.district GROUP BY r.region",
    )
    .unwrap();
    assert_eq!(t.columns, ["region", "n", "s"]);
    let rows: Vec<(Value, i64)> = t
        .rows
        .iter()
        .map(|r| (r[0].clone(), r[1].as_f64().unwrap().round() as i64))
        .collect();
    // ε = 100 over two releases, sensitivity 3: the noise is almost surely within ±1.
    let expected = [("East", 50), ("North", 0), ("West", 10)];
    assert_eq!(
        rows.len(),
        3,
        "every region of the lookup, empty North too: {rows:?}"
    );
    for ((k, n), (ek, en)) in rows.iter().zip(expected) {
        assert_eq!(*k, Value::Text(ek.into()));
        assert!((n - en).abs() <= 1, "{ek}: {n} vs {en}");
    }
    // Unaliased, and the lookup on the left, plan the same way.
    query(
        &s,
        "SELECT district_region.region, COUNT(*) FROM district_region \
         JOIN visits ON district_region.district = visits.district GROUP BY district_region.region",
    )
    .unwrap();
}

#[test]
fn lookup_columns_are_only_keys_and_only_inner_equi_joins_on_the_key_are_accepted() {
    let s = world("lookup-refuse", LOOKUP).unwrap();
    for (sql, needle) in [
        (
            "SELECT r.region, COUNT(DISTINCT r.population) FROM visits v JOIN district_region r ON v.district = r.district GROUP BY r.region",
            "only be GROUP BY keys",
        ),
        (
            "SELECT COUNT(*) FROM visits v JOIN district_region r ON v.district = r.district WHERE r.region = 'East'",
            "only be GROUP BY keys",
        ),
        (
            "SELECT r.region, COUNT(*) FROM visits v LEFT JOIN district_region r ON v.district = r.district GROUP BY r.region",
            "JOIN <lookup>",
        ),
        (
            "SELECT r.region, COUNT(*) FROM visits v JOIN district_region r ON v.district = r.region GROUP BY r.region",
            "its key `district`",
        ),
        (
            "SELECT COUNT(*) FROM visits a JOIN visits b ON a.district = b.district",
            "public lookup table",
        ),
        (
            "SELECT CASE WHEN r.region = 'East' THEN 'e' END AS b, COUNT(*) FROM visits v JOIN district_region r ON v.district = r.district GROUP BY b",
            "plain columns",
        ),
    ] {
        match query(&s, sql) {
            Err(QueryError::Unsupported(m)) | Err(QueryError::InvalidSql(m)) => {
                assert!(m.contains(needle), "{sql}: {m}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert!(matches!(
        query(
            &s,
            "SELECT r.region, COUNT(*) FROM visits v JOIN district_region r ON v.secret = r.district GROUP BY r.region",
        ),
        Err(QueryError::ColumnDenied(m)) if m.contains("hidden")
    ));
}

#[test]
fn a_lookup_whose_key_repeats_is_refused_at_start() {
    let Err(err) = world("lookup-dup", "district,region\neast-1,East\neast-1,West\n") else {
        panic!("a lookup with a repeated key must be refused");
    };
    assert!(err.contains("not unique"), "{err}");
    let Err(err) = world("lookup-nokey", "code,region\neast-1,East\n") else {
        panic!("a lookup without its key column must be refused");
    };
    assert!(err.contains("lookup key `district`"), "{err}");
}
