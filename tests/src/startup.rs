//! The sandbox starts only over data that matches its policy (fail closed), and reads CSV as well
//! as Parquet.

use std::sync::Arc;

use sluice_policy::Date;
use sluice_runtime::privacy::Asker;
use sluice_runtime::{InMemoryAccountant, Sandbox, SandboxConfig, SandboxError, Value};

use crate::op;

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

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-startup-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    let asker = Asker {
        operator: op("analyst"),
        job: "csv".into(),
        today: Date::today_utc(),
    };
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
