//! The sandbox starts only over data that matches its policy (fail closed), and reads CSV as well
//! as Parquet.

use std::sync::Arc;

use sluice_runtime::{InMemoryAccountant, Sandbox, SandboxConfig, SandboxError, Value};

use crate::temp_dir;

fn start(dir: &std::path::Path, policy: &str) -> Result<Sandbox, SandboxError> {
    let policy = sluice_policy::parse_str("startup.toml", policy).expect("valid policy text");
    Sandbox::new(SandboxConfig::new(
        policy,
        dir,
        Arc::new(InMemoryAccountant::new()),
    ))
}

fn policy(source: &str, columns: &str) -> String {
    format!(
        r#"
[dataset.energy]
source = "{source}"
holder = "grid"
classification = "internal"
privacy_unit = "meter_id"
max_rows_per_unit = 2
{columns}

[[grant]]
operator = "analyst"
datasets = ["energy"]
purpose = "tests"
aggregations = ["count", "sum", "mean"]
epsilon_per_job = 10.0
epsilon_per_period = 10.0
period = "1d"
expires = 2099-12-31
review = "none"
"#
    )
}

const CSV: &str =
    "meter_id,zone,kwh\n1,north,10.5\n1,north,11.0\n1,north,900.0\n2,south,7.25\n3,south,\n";

#[test]
fn a_csv_source_is_queried_like_parquet() {
    let dir = temp_dir("csv");
    std::fs::write(dir.join("energy.csv"), CSV).unwrap();
    let s = start(
        &dir,
        &policy(
            "energy.csv",
            r#"columns.zone = { kind = "category", public_values = ["north", "south", "east"] }
columns.kwh = { kind = "float", bounds = [0.0, 100.0] }"#,
        ),
    )
    .expect("starts over a matching CSV");
    let asker = crate::asker("analyst", "csv");
    let (t, record) = s
        .block_on(s.engine().query(
            &asker,
            "SELECT zone, COUNT(*) AS n FROM energy GROUP BY zone",
            1.0,
        ))
        .expect("answered");
    let keys: Vec<_> = t.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        keys,
        ["east", "north", "south"]
            .map(|k| Value::Text(k.into()))
            .to_vec()
    );
    assert_eq!(record.dataset, "energy");
    assert_eq!(record.dataset_hash.len(), 64);
}

#[test]
fn a_missing_source_stops_the_sandbox_from_starting() {
    let dir = temp_dir("missing");
    let err = start(
        &dir,
        &policy("nowhere.parquet", r#"columns.zone = { kind = "category" }"#),
    )
    .err()
    .expect("must not start");
    let msg = err.to_string();
    assert!(
        msg.starts_with("dataset `energy`: cannot read source"),
        "{msg}"
    );
    assert!(msg.contains("nowhere.parquet"), "{msg}");
}

#[test]
fn one_start_lists_every_source_problem() {
    let dir = temp_dir("several");
    std::fs::write(dir.join("energy.csv"), CSV).unwrap();
    let two = policy(
        "energy.csv",
        r#"columns.zone = { kind = "category" }
columns.volts = { kind = "float" }"#,
    ) + r#"
[dataset.water]
source = "water.parquet"
holder = "grid"
classification = "internal"
privacy_unit = "meter_id"
max_rows_per_unit = 2
columns.litres = { kind = "float" }
"#;
    let err = start(&dir, &two).err().expect("must not start");
    let msg = err.to_string();
    assert!(
        msg.starts_with("2 problem(s) with the policy's sources:\n  - dataset `energy`: column `volts` is declared in policy but missing from the source"),
        "{msg}"
    );
    assert!(
        msg.contains("\n  - dataset `water`: cannot read source"),
        "{msg}"
    );
}

#[test]
fn a_declared_column_missing_from_the_source_stops_the_sandbox() {
    let dir = temp_dir("column");
    std::fs::write(dir.join("energy.csv"), CSV).unwrap();
    let err = start(
        &dir,
        &policy("energy.csv", r#"columns.tariff = { kind = "category" }"#),
    )
    .err()
    .expect("must not start");
    assert_eq!(
        err.to_string(),
        "dataset `energy`: column `tariff` is declared in policy but missing from the source"
    );
}

#[test]
fn a_column_of_the_wrong_type_stops_the_sandbox() {
    let dir = temp_dir("type");
    std::fs::write(dir.join("energy.csv"), CSV).unwrap();
    let err = start(
        &dir,
        &policy(
            "energy.csv",
            r#"columns.zone = { kind = "int", bounds = [0, 10] }"#,
        ),
    )
    .err()
    .expect("must not start");
    assert_eq!(
        err.to_string(),
        "dataset `energy`: column `zone` is declared `int` but the source holds Utf8"
    );
}

#[test]
fn a_source_without_the_privacy_unit_stops_the_sandbox() {
    let dir = temp_dir("unit");
    std::fs::write(dir.join("energy.csv"), "zone,kwh\nnorth,1.0\n").unwrap();
    let err = start(
        &dir,
        &policy("energy.csv", r#"columns.zone = { kind = "category" }"#),
    )
    .err()
    .expect("must not start");
    assert_eq!(
        err.to_string(),
        "dataset `energy`: privacy unit column `meter_id` is missing from the source"
    );
}

/// One heavy unit (1,000 rows, values far above the bounds) among ten light ones. With ε = 50 the
/// noise scale is 0.04 (count) and 0.4 (sum): |noise| ≥ 1 has probability about 1e-11 and 0.15,
/// and |noise| ≥ 10 about 1e-11 for the sum, so the bounds below fail only if bounding or clamping
/// is broken.
#[test]
fn a_heavy_privacy_unit_contributes_at_most_its_bound_and_values_are_clamped() {
    let dir = temp_dir("heavy");
    let mut csv = String::from("meter_id,zone,kwh\n");
    for _ in 0..1000 {
        csv.push_str("1,north,1000000.0\n");
    }
    for m in 2..=11 {
        csv.push_str(&format!("{m},north,5.0\n"));
    }
    std::fs::write(dir.join("energy.csv"), csv).unwrap();
    let text = policy(
        "energy.csv",
        r#"columns.zone = { kind = "category", public_values = ["north"] }
columns.kwh = { kind = "float", bounds = [0.0, 10.0] }"#,
    )
    .replace(
        "epsilon_per_job = 10.0\nepsilon_per_period = 10.0",
        "epsilon_per_job = 100.0\nepsilon_per_period = 100.0",
    );
    let s = start(&dir, &text).expect("starts");
    let asker = crate::asker("analyst", "heavy");
    let (t, _) = s
        .block_on(
            s.engine()
                .query(&asker, "SELECT COUNT(*) AS n FROM energy", 50.0),
        )
        .expect("answered");
    let n = t.rows[0][0].as_f64().unwrap();
    // max_rows_per_unit = 2: the heavy meter counts twice, the ten light ones once each.
    assert!(
        (n - 12.0).abs() <= 1.0,
        "count {n}: contribution bounding failed"
    );
    let (t, _) = s
        .block_on(
            s.engine()
                .query(&asker, "SELECT SUM(kwh) AS total FROM energy", 50.0),
        )
        .expect("answered");
    let total = t.rows[0][0].as_f64().unwrap();
    // 2 rows clamped to 10 + 10 rows of 5 = 70.
    assert!(
        (total - 70.0).abs() <= 10.0,
        "sum {total}: bounding or clamping failed"
    );
}
