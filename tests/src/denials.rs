//! Queries that must be refused: each with a message that depends only on the query and the policy
//! (pinned here as golden text), and none of them spending any budget.

use std::time::Duration;

use sluice_policy::DatasetId;
use sluice_runtime::privacy::Asker;
use sluice_runtime::{Accountant, QueryError};

use crate::{op, sandbox};

fn asker(operator: &str) -> Asker {
    crate::asker(operator, "denials")
}

/// Runs `sql` as `operator` and returns the refusal, checking that nothing was charged anywhere.
fn refused(operator: &str, sql: &str, epsilon: f64) -> QueryError {
    let (s, accountant) = sandbox();
    let err = s
        .block_on(s.engine().query(&asker(operator), sql, epsilon))
        .expect_err("query must be refused");
    for ds in ["health_visits", "health_raw", "tourism_trips"] {
        let spent = accountant.spent(
            &op(operator),
            &DatasetId::new(ds).unwrap(),
            "denials",
            Duration::from_secs(86_400 * 30),
        );
        assert_eq!(
            spent.period.epsilon, 0.0,
            "a refused query spent budget on {ds}: {sql}"
        );
    }
    err
}

#[test]
fn hidden_column_in_select_is_refused() {
    assert_eq!(
        refused(
            "analyst",
            "SELECT name, COUNT(*) FROM health_visits GROUP BY name",
            1.0
        ),
        QueryError::ColumnDenied(
            "column `name` of dataset `health_visits` is hidden by policy".into()
        )
    );
}

#[test]
fn hidden_column_in_where_is_refused() {
    assert_eq!(
        refused(
            "analyst",
            "SELECT COUNT(*) FROM health_visits WHERE id_card = '32100000000001'",
            1.0
        ),
        QueryError::ColumnDenied(
            "column `id_card` of dataset `health_visits` is hidden by policy".into()
        )
    );
}

#[test]
fn hidden_column_inside_an_aggregate_is_refused() {
    assert_eq!(
        refused("analyst", "SELECT AVG(name) FROM health_visits", 1.0),
        QueryError::ColumnDenied(
            "column `name` of dataset `health_visits` is hidden by policy".into()
        )
    );
}

#[test]
fn privacy_unit_and_undeclared_columns_do_not_exist_for_jobs() {
    let expected = QueryError::ColumnDenied(
        "unknown column `person_id` in dataset `health_visits`; public columns are: district, sex, diagnosis_group, age, cost".into(),
    );
    assert_eq!(
        refused(
            "analyst",
            "SELECT COUNT(*) FROM health_visits WHERE person_id = 1",
            1.0
        ),
        expected
    );
}

#[test]
fn dataset_not_granted_and_unknown_dataset_get_the_same_answer() {
    assert_eq!(
        refused("analyst", "SELECT COUNT(*) FROM tourism_trips", 1.0),
        QueryError::NotGranted(
            "dataset `tourism_trips` is not granted to operator `analyst`".into()
        )
    );
    assert_eq!(
        refused("analyst", "SELECT COUNT(*) FROM secret_registry", 1.0),
        QueryError::NotGranted(
            "dataset `secret_registry` is not granted to operator `analyst`".into()
        )
    );
}

#[test]
fn expired_grant_is_refused() {
    assert!(matches!(
        refused("expired-op", "SELECT COUNT(*) FROM health_visits", 0.1),
        QueryError::NotGranted(m) if m.contains("ran through 2020-01-01 23:59:59 Asia/Shanghai")
    ));
}

#[test]
fn group_by_a_column_without_public_domain_is_refused() {
    assert_eq!(
        refused("analyst", "SELECT district, COUNT(*) FROM health_raw GROUP BY district", 1.0),
        QueryError::ColumnDenied(
            "column `district` cannot be a GROUP BY key: the policy declares no public value domain, bins or partition selection for it (bucket it with CASE WHEN … THEN '<label>' … END instead)".into()
        )
    );
}

#[test]
fn sum_of_an_unbounded_column_is_refused() {
    assert_eq!(
        refused("analyst", "SELECT SUM(cost) FROM health_raw", 1.0),
        QueryError::AggregationDenied(
            "column `cost` cannot be aggregated with SUM: the policy declares no bounds for it"
                .into()
        )
    );
}

#[test]
fn a_query_without_aggregate_is_refused() {
    assert!(matches!(
        refused("analyst", "SELECT district FROM health_visits", 1.0),
        QueryError::Unsupported(m) if m.starts_with("the query has no aggregate")
    ));
    assert!(matches!(
        refused("analyst", "SELECT district FROM health_visits GROUP BY district", 1.0),
        QueryError::Unsupported(m) if m.starts_with("the query has no aggregate")
    ));
}

#[test]
fn a_second_statement_is_refused() {
    assert_eq!(
        refused(
            "analyst",
            "SELECT COUNT(*) FROM health_visits; SELECT COUNT(*) FROM health_visits",
            1.0
        ),
        QueryError::InvalidSql("expected exactly one SELECT statement, found 2".into())
    );
}

#[test]
fn a_function_outside_the_subset_is_refused() {
    assert_eq!(
        refused("analyst", "SELECT MAX(age) FROM health_visits", 1.0),
        QueryError::Unsupported(
            "aggregate `max` is not supported; supported: COUNT(*), COUNT(DISTINCT <privacy unit>), SUM(column), AVG(column), VARIANCE(column), STDDEV(column) (and _POP), MEDIAN(column), PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY column)"
                .into()
        )
    );
    // Either refused by the validator or unknown to the planner (the function set is trimmed).
    assert!(matches!(
        refused("analyst", "SELECT COUNT(*) FROM health_visits WHERE abs(age) > 3", 1.0),
        QueryError::Unsupported(m) | QueryError::InvalidSql(m) if m.contains("abs")
    ));
}

#[test]
fn an_aggregation_the_grant_does_not_allow_is_refused() {
    assert_eq!(
        refused("counter", "SELECT SUM(age) FROM health_visits", 0.5),
        QueryError::AggregationDenied("the grant does not allow `sum`; it allows: count".into())
    );
    for (sql, needed) in [
        ("SELECT MEDIAN(age) FROM health_visits", "quantile"),
        (
            "SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY age) FROM health_visits",
            "quantile",
        ),
        ("SELECT STDDEV(age) FROM health_visits", "variance"),
        ("SELECT VARIANCE(age) FROM health_visits", "variance"),
    ] {
        assert_eq!(
            refused("counter", sql, 0.5),
            QueryError::AggregationDenied(format!(
                "the grant does not allow `{needed}`; it allows: count"
            )),
            "{sql}"
        );
    }
}

#[test]
fn quantiles_and_variances_need_bounds_and_a_plain_ascending_column() {
    assert_eq!(
        refused("analyst", "SELECT MEDIAN(cost) FROM health_raw", 1.0),
        QueryError::AggregationDenied(
            "column `cost` cannot be aggregated with MEDIAN: the policy declares no bounds for it"
                .into()
        )
    );
    for (sql, needle) in [
        (
            "SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY age DESC) FROM health_visits",
            "ascending",
        ),
        (
            "SELECT PERCENTILE_CONT(1.5) WITHIN GROUP (ORDER BY age) FROM health_visits",
            "[0, 1]",
        ),
        ("SELECT MEDIAN(age + 1) FROM health_visits", "plain column"),
        ("SELECT STDDEV(age) * 2 FROM health_visits", "arithmetic"),
    ] {
        match refused("analyst", sql, 1.0) {
            QueryError::Unsupported(m) | QueryError::InvalidSql(m) => {
                assert!(m.contains(needle), "{sql}: {m}")
            }
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
}

#[test]
fn a_query_beyond_the_job_budget_is_refused_without_charge() {
    assert_eq!(
        refused("counter", "SELECT COUNT(*) FROM health_visits", 1.5),
        QueryError::BudgetExhausted(
            "query needs ε=1.5 but the job has ε=1 left on dataset `health_visits` (per-job cap 1)"
                .into()
        )
    );
}

#[test]
fn shapes_outside_the_subset_are_refused() {
    for (sql, needle) in [
        (
            "SELECT district, COUNT(*) FROM health_visits GROUP BY district ORDER BY district",
            "ORDER BY",
        ),
        ("SELECT COUNT(*) FROM health_visits LIMIT 1", "LIMIT"),
        (
            "SELECT district, COUNT(*) FROM health_visits GROUP BY district HAVING COUNT(*) > 3",
            "HAVING",
        ),
        ("SELECT COUNT(*) * 2 FROM health_visits", "arithmetic"),
        (
            "SELECT COUNT(*) FROM health_visits WHERE CAST(age AS VARCHAR) = '3'",
            "CAST",
        ),
        (
            "SELECT COUNT(*) FROM health_visits WHERE age = 'old'",
            "integer literal",
        ),
        (
            "SELECT COUNT(*) FROM health_visits WHERE age > (SELECT 1)",
            "literal",
        ),
        ("SELECT COUNT(DISTINCT age) FROM health_visits", "DISTINCT"),
        (
            "SELECT COUNT(*) FROM health_visits a JOIN health_raw b ON a.age = b.age",
            "exactly one dataset",
        ),
        ("DELETE FROM health_visits", "only SELECT"),
    ] {
        match refused("analyst", sql, 1.0) {
            QueryError::Unsupported(m) | QueryError::InvalidSql(m) => {
                assert!(m.contains(needle), "{sql}: {m}")
            }
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
}

#[test]
fn case_buckets_must_be_labelled_searched_cases_over_allowed_columns() {
    for (sql, needle) in [
        (
            "SELECT CASE WHEN age < 18 THEN 1 ELSE 2 END AS b, COUNT(*) FROM health_visits GROUP BY b",
            "text literal",
        ),
        (
            "SELECT CASE WHEN age < 18 THEN district ELSE 'x' END AS b, COUNT(*) FROM health_visits GROUP BY b",
            "text literal",
        ),
        (
            "SELECT CASE sex WHEN 'F' THEN 'f' END AS b, COUNT(*) FROM health_visits GROUP BY b",
            "CASE WHEN",
        ),
        (
            "SELECT CASE WHEN abs(age) < 18 THEN 'c' END AS b, COUNT(*) FROM health_visits GROUP BY b",
            "abs",
        ),
        (
            "SELECT age + 1 AS b, COUNT(*) FROM health_visits GROUP BY b",
            "CASE WHEN",
        ),
    ] {
        match refused("analyst", sql, 1.0) {
            QueryError::Unsupported(m) | QueryError::InvalidSql(m) => {
                assert!(m.contains(needle), "{sql}: {m}")
            }
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        refused(
            "analyst",
            "SELECT CASE WHEN name = 'x' THEN 'a' END AS b, COUNT(*) FROM health_visits GROUP BY b",
            1.0
        ),
        QueryError::ColumnDenied(
            "column `name` of dataset `health_visits` is hidden by policy".into()
        )
    );
}

#[test]
fn the_privacy_unit_is_usable_only_inside_count_distinct() {
    for sql in [
        "SELECT person_id, COUNT(*) FROM health_visits GROUP BY person_id",
        "SELECT COUNT(*) FROM health_visits WHERE person_id = 17",
        "SELECT SUM(person_id) FROM health_visits",
    ] {
        match refused("analyst", sql, 1.0) {
            QueryError::ColumnDenied(m) => assert!(m.contains("person_id"), "{sql}: {m}"),
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
    match refused(
        "analyst",
        "SELECT COUNT(DISTINCT sex) FROM health_visits",
        1.0,
    ) {
        QueryError::Unsupported(m) => assert!(m.contains("COUNT(DISTINCT person_id)"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn invalid_epsilon_is_refused() {
    for eps in [0.0, -1.0, f64::NAN, f64::INFINITY, 1000.0] {
        assert!(matches!(
            refused("analyst", "SELECT COUNT(*) FROM health_visits", eps),
            QueryError::InvalidOptions(_)
        ));
    }
}

#[test]
fn deeply_nested_sql_is_refused_without_crashing() {
    let sql = format!(
        "SELECT COUNT(*) FROM health_visits WHERE {}age > 1{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(matches!(
        refused("analyst", &sql, 1.0),
        QueryError::InvalidSql(_)
    ));
    let ors = vec!["age = 1"; 1500].join(" OR ");
    let sql = format!("SELECT COUNT(*) FROM health_visits WHERE {ors}");
    assert!(matches!(
        refused("analyst", &sql, 1.0),
        QueryError::Unsupported(_) | QueryError::InvalidSql(_)
    ));
}

#[test]
fn a_refusal_reaches_the_guest_with_the_same_message_through_the_wit_boundary() {
    let (s, _) = sandbox();
    let wasm = crate::guest(env!("GUEST_HOSTILE"));
    let params = "sql:SELECT name, COUNT(*) AS n FROM health_visits GROUP BY name";
    let failure = s
        .run_job(&sluice_runtime::JobRequest::new(
            op("analyst"),
            "denied-via-wasm",
            &wasm,
            params,
        ))
        .expect_err("hidden column");
    assert_eq!(
        failure.error.to_string(),
        "the job returned an error: query refused: column denied: column `name` of dataset `health_visits` is hidden by policy"
    );
    assert!(failure.queries.is_empty());
}

#[test]
fn a_query_kept_after_one_grant_validated_it_is_still_refused_under_another() {
    // The engine keeps a validated query (and its plan) per SQL text; the grant's aggregations
    // are part of that key, and authorization runs on every query.
    let (s, _) = sandbox();
    let sql = "SELECT SUM(age) AS s FROM health_visits";
    for _ in 0..2 {
        s.block_on(s.engine().query(&asker("analyst"), sql, 0.5))
            .expect("the analyst's grant allows SUM");
    }
    let err = s
        .block_on(s.engine().query(&asker("counter"), sql, 0.5))
        .expect_err("the counter's grant does not");
    assert_eq!(
        err,
        QueryError::AggregationDenied("the grant does not allow `sum`; it allows: count".into())
    );
    let err = s
        .block_on(s.engine().query(&asker("tourism-lab"), sql, 0.5))
        .expect_err("not granted at all");
    assert!(matches!(err, QueryError::NotGranted(_)), "{err}");
}
