//! Estimates and accuracy-first queries: what a query costs and how accurate it is, known before
//! it runs; a target accuracy instead of an ε.

use sluice_runtime::{Accountant, Budget, QueryError};

use crate::{asker, op, sandbox};

const BY_DISTRICT: &str =
    "SELECT district, COUNT(*) AS n, SUM(cost) AS s FROM health_visits GROUP BY district";

fn spent(a: &dyn Accountant, job: &str) -> f64 {
    a.spent(
        &op("analyst"),
        &"health_visits".parse().unwrap(),
        job,
        std::time::Duration::from_secs(86_400),
    )
    .period
    .epsilon
}

#[test]
fn an_estimate_charges_nothing_and_matches_the_answer() {
    let (s, accountant) = sandbox();
    let a = asker("analyst", "est");
    let e = s
        .block_on(s.engine().estimate(&a, BY_DISTRICT, Budget::Epsilon(0.8)))
        .unwrap();
    assert_eq!(
        spent(accountant.as_ref(), "est"),
        0.0,
        "an estimate is free"
    );
    assert_eq!(e.epsilon, 0.8);
    assert_eq!(e.releases, 2);
    let (t, record) = s.block_on(s.engine().query(&a, BY_DISTRICT, 0.8)).unwrap();
    assert_eq!(record.cost.epsilon, 0.8);
    for (name, acc) in &e.accuracy {
        let c = t.column_index(name).unwrap();
        let stated = t.accuracy[0][c].unwrap();
        assert!(
            (stated - acc.unwrap()).abs() < 1e-9,
            "{name}: {stated} vs {acc:?}"
        );
    }
    // Estimates are refused exactly as queries are.
    let refused = s.block_on(s.engine().estimate(
        &a,
        "SELECT name, COUNT(*) FROM health_visits GROUP BY name",
        Budget::Epsilon(1.0),
    ));
    assert!(
        matches!(refused, Err(QueryError::ColumnDenied(_))),
        "{refused:?}"
    );
}

#[test]
fn a_target_accuracy_is_met_with_the_least_epsilon() {
    let (s, accountant) = sandbox();
    let a = asker("analyst", "acc");
    let sql = "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district";
    let (t, record) = s
        .block_on(s.engine().query_with(&a, sql, Budget::Accuracy(50.0)))
        .unwrap();
    let eps = record.cost.epsilon;
    assert!(
        t.accuracy.iter().all(|r| r[1].unwrap() <= 50.0),
        "{:?}",
        t.accuracy
    );
    assert!(
        (spent(accountant.as_ref(), "acc") - eps).abs() < 1e-12,
        "charged what it solved"
    );
    // Any less ε would miss the target.
    let tighter = s
        .block_on(s.engine().estimate(&a, sql, Budget::Epsilon(eps * 0.99)))
        .unwrap();
    assert!(tighter.accuracy[0].1.unwrap() > 50.0, "{tighter:?}");
    // A sum's target is in the column's units.
    let e = s
        .block_on(s.engine().estimate(
            &a,
            "SELECT SUM(cost) AS s FROM health_visits",
            Budget::Accuracy(250_000.0),
        ))
        .unwrap();
    assert!(
        e.accuracy[0].1.unwrap() <= 250_000.0 && e.epsilon < 5.0,
        "{e:?}"
    );

    for (sql, budget) in [
        (
            "SELECT AVG(cost) FROM health_visits",
            Budget::Accuracy(10.0),
        ),
        (
            "SELECT COUNT(*) FROM health_visits",
            Budget::Accuracy(0.001),
        ),
        ("SELECT COUNT(*) FROM health_visits", Budget::Accuracy(-1.0)),
    ] {
        let r = s.block_on(s.engine().query_with(&a, sql, budget));
        assert!(
            matches!(r, Err(QueryError::InvalidOptions(_))),
            "{sql} {budget:?}: {r:?}"
        );
    }
}

#[test]
fn a_job_estimates_then_queries_at_a_target_accuracy_through_the_wit_boundary() {
    use sluice_runtime::JobRequest;
    let (s, accountant) = sandbox();
    let wasm = crate::guest(env!("GUEST_HOSTILE"));
    let out = s
        .run_job(&JobRequest::new(
            op("analyst"),
            "accuracy-job",
            &wasm,
            "accuracy:SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district",
        ))
        .map_err(|f| f.error)
        .expect("the job runs");
    let scalar = |name: &str| {
        out.report
            .scalars
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("scalar {name}"))
            .value
    };
    let (estimated, charged) = (scalar("estimated epsilon"), scalar("charged epsilon"));
    assert!(estimated > 0.0 && (estimated - charged).abs() < 1e-12);
    assert!(scalar("estimated half-width") <= 50.0);
    assert!((scalar("estimated half-width") - scalar("released half-width")).abs() < 1e-9);
    // Only the query was charged, not the estimate.
    assert!((spent(accountant.as_ref(), "accuracy-job") - charged).abs() < 1e-12);
}
