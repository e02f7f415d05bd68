//! The sample jobs, end to end: real components, real data, real noise.

use sluice_runtime::{JobRequest, Value};

use crate::{guest, op, sandbox};

#[test]
fn visits_by_district_releases_every_district_with_accuracy_and_charges_its_queries() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let out = s
        .run_job(&JobRequest::new(
            op("analyst"),
            "visits-1",
            &wasm,
            "epsilon=0.3&min_age=18",
        ))
        .expect("sample job runs");
    let (name, t) = &out.report.tables[0];
    assert_eq!(name, "visits by district");
    assert_eq!(t.columns, vec!["district", "visits", "mean_cost"]);
    let mut districts: Vec<_> = sluice_datagen::DISTRICTS
        .iter()
        .map(|(d, _)| d.to_string())
        .collect();
    districts.sort();
    let keys: Vec<_> = t.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        keys,
        districts.into_iter().map(Value::Text).collect::<Vec<_>>()
    );
    for (row, acc) in t.rows.iter().zip(&t.accuracy) {
        assert!(matches!(row[1], Value::Int(_)));
        let mean = row[2].as_f64().unwrap();
        assert!(
            (0.0..=20_000.0).contains(&mean),
            "mean cost {mean} outside the policy bounds"
        );
        assert!(
            acc[0].is_none() && acc[1].unwrap() > 0.0 && acc[2].unwrap() > 0.0,
            "{row:?} {acc:?}"
        );
    }
    assert_eq!(out.queries.len(), 2);
    assert!(
        out.queries
            .iter()
            .all(|q| q.cost.epsilon == 0.3 && q.dataset == "health_visits")
    );
    assert_eq!(out.queries[0].dataset_hash.len(), 64);
    assert!(out.log.iter().any(|l| l.message == "9 districts released"));
    assert!(out.report.to_json().contains("\"visits by district\""));
    assert!(
        out.report
            .to_csv()
            .starts_with("# table: visits by district\ndistrict,visits,visits_accuracy95,")
    );
    assert!(!out.cached);

    // A second run of the same wasm skips compilation.
    let again = s
        .run_job(&JobRequest::new(op("analyst"), "visits-2", &wasm, ""))
        .expect("second run");
    assert!(again.cached);
}

#[test]
fn visits_by_district_reports_bad_parameters_clearly() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let err = s
        .run_job(&JobRequest::new(
            op("analyst"),
            "visits-bad",
            &wasm,
            "min_age=abc",
        ))
        .expect_err("bad params")
        .error;
    assert_eq!(
        err.to_string(),
        "the job returned an error: invalid parameters: `min_age` must be a number, got `abc`"
    );
}

#[test]
fn tourism_spend_releases_every_spot_and_month_and_suppresses_small_groups() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    let out = s
        .run_job(&JobRequest::new(
            op("tourism-lab"),
            "tourism-1",
            &wasm,
            "epsilon=2",
        ))
        .expect("sample job runs");
    let (_, t) = &out.report.tables[0];
    assert_eq!(t.rows.len(), 8 * 12);
    assert_eq!(t.key_columns, 2);
    // Rows are sorted by (spot, month).
    let keys: Vec<(String, String)> = t
        .rows
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(a), Value::Text(b)) => (a.clone(), b.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // The grant sets min_group_count = 5: a suppressed row has no aggregates at all.
    for row in &t.rows {
        let suppressed = row[2] == Value::Null;
        assert_eq!(suppressed, row[3] == Value::Null);
    }
    assert!(t.mechanism.contains("suppressed"));
    assert_eq!(out.queries.len(), 1);
    assert_eq!(out.queries[0].cost.epsilon, 2.0);
}

#[test]
fn a_job_cannot_spend_more_than_its_grant_allows() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    // tourism-lab may spend ε 5 per job; one run asking 6 is refused before anything is charged.
    let failure = s
        .run_job(&JobRequest::new(
            op("tourism-lab"),
            "tourism-greedy",
            &wasm,
            "epsilon=6",
        ))
        .expect_err("over budget");
    assert!(
        failure.error.to_string().contains("budget exhausted"),
        "{}",
        failure.error
    );
    assert!(failure.queries.is_empty());
}
