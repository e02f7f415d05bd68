//! DP partition selection: keys without a public domain, released only past a noisy threshold.
//!
//! - **δ-level release of a lone key (mechanism).** A key held by one privacy unit at its
//!   contribution cap is absent from the neighbouring dataset, so it may be released with
//!   probability at most δ. Over 20,000 releases at δ = 0.01 (too large for any policy, which caps
//!   δ at 1e-3, but measurable), the release rate must not be significantly above δ (Wilson
//!   interval at z = 4.5: a correct mechanism fails one run in 300,000).
//! - **End to end** on a small CSV: with the policy's δ = 1e-6 a lone key is never released in
//!   300 queries (a correct engine fails with probability below 300·1e-6), frequent keys always
//!   are; a column without `partition_selection` is never a key; a grant without δ is refused;
//!   values outside a public domain stay unreleased when another key is selected; δ is charged and
//!   capped per period.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_runtime::privacy::selection::{PartitionSelection, Reach};
use sluice_runtime::{Accountant, InMemoryAccountant, QueryError, Sandbox, Value};

use crate::{Unlimited, World, asker, op, wilson};

/// Contribution bound of the test dataset.
const K: i64 = 3;

fn policy(delta: &str) -> String {
    format!(
        r#"
[dataset.clinic]
source = "data/clinic.csv"
holder = "test"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = {K}
columns.code = {{ kind = "category", partition_selection = true }}
columns.region = {{ kind = "category", public_values = ["north", "south"] }}
columns.note = {{ kind = "category" }}
"#
    ) + &crate::stats_grant("clinic", "partition selection", r#""count""#)
        + delta
}

/// 200 people: codes `common-0..3` shared by many, one person at the cap with `rare-x` only,
/// and region `west` (outside the public domain) on many rows.
fn clinic_csv() -> String {
    let mut csv = String::from("person_id,code,region,note\n");
    for p in 0..200 {
        for r in 0..(1 + p % 3) {
            let region = ["north", "south", "west"][(p + r) as usize % 3];
            csv.push_str(&format!("{p},common-{},{region},n{p}\n", p % 4));
        }
    }
    for _ in 0..K {
        csv.push_str("999,rare-x,north,secret\n");
    }
    csv
}

fn clinic(name: &str, delta: &str, accountant: Arc<dyn Accountant>) -> Sandbox {
    let world = World::csv(name, "clinic", &clinic_csv(), &policy(delta));
    world.sandbox(accountant)
}

const DELTA: &str = "delta_per_query = 1e-6\ndelta_per_period = 1e-3";

#[test]
fn a_key_held_by_one_unit_is_released_at_most_at_the_delta_level() {
    let delta = 0.01;
    // Both families: discrete Laplace at ε 1 (pure datasets) and discrete Gaussian at ρ 0.5
    // (zCDP datasets). The lone key holds `count` rows of its one unit.
    for (family, l0, count) in [
        ("laplace", 1u32, 1i64),
        ("laplace", K as u32, K),
        ("gaussian", 1, 1),
        ("gaussian", K as u32, K),
    ] {
        let reach = Reach {
            l0,
            l1: K.min(count.max(1)),
            l2: count as f64,
            linf: count,
        };
        let sel = if family == "laplace" {
            PartitionSelection::laplace(reach, 1.0, delta)
        } else {
            PartitionSelection::gaussian(reach, 0.5, delta)
        }
        .unwrap();
        let input = HashMap::from([("rare".to_string(), count), ("big".to_string(), 5_000)]);
        let runs = 20_000;
        let mut released = 0;
        for _ in 0..runs {
            let out = sel.release(&input).unwrap();
            assert!(out.contains_key("big"));
            released += usize::from(out.contains_key("rare"));
        }
        let (lo, _) = wilson(released, runs, 4.5);
        assert!(
            lo <= delta,
            "{family} l0 {l0}: the lone key was released {released} times in {runs} (rate significantly above δ={delta})"
        );
        println!(
            "{family} l0 {l0}: lone key released {released}/{runs} (δ {delta}), threshold {}",
            sel.threshold()
        );
    }
}

#[test]
fn lone_keys_stay_unreleased_and_frequent_keys_are_released() {
    let s = clinic("sel-e2e", DELTA, Arc::new(Unlimited));
    let a = asker("stats", "sel");
    let sql = "SELECT code, COUNT(*) AS n FROM clinic GROUP BY code";
    for _ in 0..300 {
        let (t, _) = s.block_on(s.engine().query(&a, sql, 1.0)).unwrap();
        let keys: Vec<&Value> = t.rows.iter().map(|r| &r[0]).collect();
        assert_eq!(
            keys,
            ["common-0", "common-1", "common-2", "common-3"]
                .map(|k| Value::Text(k.into()))
                .iter()
                .collect::<Vec<_>>(),
            "only the frequent codes, sorted"
        );
        assert_eq!(t.cost.delta, 1e-6);
    }
    let (t, _) = s.block_on(s.engine().query(&a, sql, 1.0)).unwrap();
    assert!(
        t.mechanism.contains("DP partition selection"),
        "{}",
        t.mechanism
    );
}

#[test]
fn selection_respects_public_domains_of_the_other_keys() {
    let s = clinic("sel-mixed", DELTA, Arc::new(Unlimited));
    let (t, _) = s
        .block_on(s.engine().query(
            &asker("stats", "sel"),
            "SELECT region, code, COUNT(*) AS n FROM clinic GROUP BY region, code",
            5.0,
        ))
        .unwrap();
    assert!(!t.rows.is_empty());
    for row in &t.rows {
        assert!(
            row[0] == Value::Text("north".into()) || row[0] == Value::Text("south".into()),
            "a region outside the public domain was released: {row:?}"
        );
    }
    let mut sorted = t.rows.clone();
    sorted.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(sorted, t.rows, "released rows are sorted by key");
}

#[test]
fn keys_without_selection_or_without_delta_are_refused() {
    let s = clinic("sel-refuse", DELTA, Arc::new(Unlimited));
    let a = asker("stats", "sel");
    match s.block_on(
        s.engine()
            .query(&a, "SELECT note, COUNT(*) FROM clinic GROUP BY note", 1.0),
    ) {
        Err(QueryError::ColumnDenied(m)) => assert!(m.contains("partition selection"), "{m}"),
        other => panic!("{other:?}"),
    }
    let no_delta = clinic("sel-nodelta", "", Arc::new(Unlimited));
    assert_eq!(
        no_delta
            .block_on(no_delta.engine().query(
                &a,
                "SELECT code, COUNT(*) FROM clinic GROUP BY code",
                1.0
            ))
            .unwrap_err(),
        QueryError::NotGranted(
            "column `code` has no public value domain: its values are released only by DP partition selection, which spends δ, and the grant of operator `stats` on dataset `clinic` allows no δ (delta_per_query)".into()
        )
    );
}

#[test]
fn delta_is_charged_and_capped_per_period() {
    let accountant = Arc::new(InMemoryAccountant::new());
    let s = clinic(
        "sel-cap",
        "delta_per_query = 1e-6\ndelta_per_period = 3e-6",
        accountant.clone(),
    );
    let a = asker("stats", "sel");
    let sql = "SELECT code, COUNT(*) FROM clinic GROUP BY code";
    for _ in 0..3 {
        s.block_on(s.engine().query(&a, sql, 0.1)).unwrap();
    }
    match s.block_on(s.engine().query(&a, sql, 0.1)) {
        Err(QueryError::BudgetExhausted(m)) => assert!(m.contains("δ"), "{m}"),
        other => panic!("the δ cap must refuse the 4th query: {other:?}"),
    }
    // A query without selection spends no δ and still runs.
    s.block_on(s.engine().query(
        &a,
        "SELECT region, COUNT(*) FROM clinic GROUP BY region",
        0.1,
    ))
    .unwrap();
    let spent = accountant.spent(
        &op("stats"),
        &sluice_policy::DatasetId::new("clinic").unwrap(),
        "sel",
        std::time::Duration::from_secs(86_400),
    );
    assert!((spent.period.delta - 3e-6).abs() < 1e-12, "{spent:?}");
}
