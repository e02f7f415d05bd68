//! Contribution bounding both ways (groups per unit, L0; rows per unit per group, L∞) and the
//! response-time padding policy option, on small CSV worlds where every row is visible.

use std::time::{Duration, Instant};

use sluice_runtime::{Sandbox, Value};

use crate::{World, asker};

fn world(name: &str, csv: &str, extra: &str) -> Sandbox {
    world_k(name, csv, 5, extra)
}

fn world_k(name: &str, csv: &str, k: u32, extra: &str) -> Sandbox {
    World::csv(name, "visits", csv, &policy_k(k, extra)).unlimited()
}

fn policy_k(k: u32, extra: &str) -> String {
    format!(
        r#"
[dataset.visits]
source = "data/visits.csv"
holder = "test"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = {k}
{extra}
columns.grp = {{ kind = "category", public_values = ["a", "b", "c", "d"] }}
columns.v = {{ kind = "int", bounds = [0, 10] }}
"#
    ) + &crate::stats_grant("visits", "bounding", r#""count", "sum""#)
}

/// Person 1: one row in each of a, b, c, d. Person 2: five rows in a.
const CSV: &str =
    "person_id,grp,v\n1,a,1\n1,b,1\n1,c,1\n1,d,1\n2,a,1\n2,a,1\n2,a,1\n2,a,1\n2,a,1\n";

fn query(s: &Sandbox, sql: &str) -> sluice_runtime::NoisyTable {
    // ε = 100 over every release: the noise is almost surely 0 at these sensitivities.
    s.block_on(s.engine().query(&asker("stats", "bound"), sql, 100.0))
        .unwrap()
        .0
}

fn column(t: &sluice_runtime::NoisyTable, c: usize) -> Vec<i64> {
    t.rows
        .iter()
        .map(|r| match r[c] {
            Value::Int(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn groups_per_unit_and_rows_per_group_are_bounded_and_sensitivities_follow() {
    let s = world(
        "bound-both",
        CSV,
        "max_groups_per_unit = 2\nmax_rows_per_group = 2",
    );
    let t = query(
        &s,
        "SELECT grp, COUNT(DISTINCT person_id) AS people FROM visits GROUP BY grp",
    );
    // Person 1 keeps 2 of its 4 groups, chosen at random; person 2 is in a.
    let people = column(&t, 1);
    assert_eq!(people.iter().sum::<i64>(), 3, "{people:?}");
    assert!(
        t.mechanism
            .contains("COUNT(DISTINCT person_id): sensitivity 2"),
        "{}",
        t.mechanism
    );
    let t = query(&s, "SELECT grp, COUNT(*) AS n FROM visits GROUP BY grp");
    let n = column(&t, 1);
    // Person 2 keeps 2 of its 5 rows in a; person 1 two rows in two groups.
    assert_eq!(n.iter().sum::<i64>(), 4, "{n:?}");
    // L1 = min(k = 5, l0 · l∞ = 2 · 2) = 4.
    assert!(
        t.mechanism.contains("COUNT(*): sensitivity 4"),
        "{}",
        t.mechanism
    );
    // Which groups person 1 keeps is random: over many queries, every group is kept sometimes.
    let mut seen = [false; 4];
    for _ in 0..40 {
        let t = query(
            &s,
            "SELECT grp, COUNT(DISTINCT person_id) AS p FROM visits WHERE v = 1 GROUP BY grp",
        );
        for (i, row) in t.rows.iter().enumerate() {
            // Group a always has person 2; b, c, d have person 1 only when chosen.
            if i > 0 && row[1] == Value::Int(1) {
                seen[i] = true;
            }
        }
    }
    assert!(seen[1] && seen[2] && seen[3], "{seen:?}");
}

#[test]
fn without_group_bounds_only_the_row_bound_applies() {
    let s = world("bound-rows", CSV, "");
    let t = query(&s, "SELECT grp, COUNT(*) AS n FROM visits GROUP BY grp");
    assert_eq!(column(&t, 1), [6, 1, 1, 1]);
    assert!(
        t.mechanism.contains("COUNT(*): sensitivity 5"),
        "{}",
        t.mechanism
    );
    // Ungrouped, the per-group bound is the per-unit bound for the one group: 3 + 3 rows.
    let s = world("bound-ungrouped", CSV, "max_rows_per_group = 3");
    let t = query(&s, "SELECT COUNT(*) AS n FROM visits");
    assert_eq!(column(&t, 0), [6]);
    assert!(
        t.mechanism.contains("COUNT(*): sensitivity 3"),
        "{}",
        t.mechanism
    );
}

#[test]
fn responses_are_padded_to_the_policy_time_bucket() {
    let s = world("bound-pad", CSV, "response_time_bucket_ms = 400");
    for sql in [
        "SELECT grp, COUNT(*) AS n FROM visits GROUP BY grp",
        "SELECT grp, SUM(v) AS s FROM visits GROUP BY grp",
    ] {
        let started = Instant::now();
        query(&s, sql);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(800),
            "{sql}: answered after {took:?}, not in the first 400 ms bucket"
        );
    }
}

#[test]
fn random_group_choices_are_consistent_with_the_row_bound() {
    // One person: 5 rows in a, 1 in b. With one group kept and up to 5 rows per group, the
    // per-unit bound k = 3 must still hold whichever group is chosen: never more than 3 rows.
    let csv = "person_id,grp,v\n1,a,1\n1,a,1\n1,a,1\n1,a,1\n1,a,1\n1,b,1\n";
    let s3 = world_k(
        "bound-consistent",
        csv,
        3,
        "max_groups_per_unit = 1\nmax_rows_per_group = 5",
    );
    let mut totals = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let t = query(&s3, "SELECT grp, COUNT(*) AS n FROM visits GROUP BY grp");
        totals.insert(column(&t, 1).iter().sum::<i64>());
    }
    assert!(
        totals.iter().all(|t| [1, 3].contains(t)),
        "a unit contributed beyond its bounds: totals {totals:?}"
    );
}

#[test]
fn rows_without_a_unit_are_bounded_together_as_one_unit() {
    // Eight rows with no person in a, and person 1 with one row in b: k = 5.
    let csv = "person_id,grp,v\n,a,1\n,a,1\n,a,1\n,a,1\n,a,1\n,a,1\n,a,1\n,a,1\n1,b,1\n";
    let s = world("bound-null", csv, "");
    let t = query(&s, "SELECT grp, COUNT(*) AS n FROM visits GROUP BY grp");
    assert_eq!(column(&t, 1), [5, 1, 0, 0]);
}

/// Persons 1 and 2 stay above k = 2 rows after `v > 0`; person 4 has three rows in the dataset
/// (so the index lists it) but one after the filter; person 3 has one row; three rows have no
/// person. Person 1 spans groups a, b and c, person 2 groups a and b.
const INDEX_CSV: &str = "person_id,grp,v\n\
    1,a,1\n1,b,2\n1,c,3\n1,a,4\n1,b,5\n\
    2,a,0\n2,a,3\n2,b,6\n2,b,9\n\
    3,a,7\n\
    4,b,0\n4,b,0\n4,c,8\n\
    ,a,2\n,b,4\n,c,10\n";

/// Per run, every released cell of `sql` as (its key, its value), in key order.
fn released_cells(s: &Sandbox, sql: &str, runs: usize) -> Vec<Vec<(String, f64)>> {
    (0..runs)
        .map(|_| {
            let t = query(s, sql);
            let last = t.columns.len() - 1;
            t.rows
                .iter()
                .map(|r| {
                    let key = match &r[0] {
                        Value::Text(k) if last > 0 => k.clone(),
                        _ => String::new(),
                    };
                    let value = match r[last] {
                        Value::Int(v) => v as f64,
                        Value::Float(v) => v,
                        ref other => panic!("{other:?}"),
                    };
                    (key, value)
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_contribution_index_releases_the_same_distribution_as_bounding_every_row() {
    // Each query is released `RUNS` times on the index path and on the path that sends every row
    // through the random choice; for each released cell a two-sample KS test at α = 0.001
    // (critical distance 1.95·√(2/RUNS), conservative on these discrete sums) must not tell
    // them apart: 4 cells, so a false failure has probability below 0.4%. Power check: the same
    // test must tell the index path from every-row bounding at k = 4 on every cell that holds
    // rows (group d holds none: its releases are noise alone, the same at any k).
    const RUNS: usize = 200;
    let extra = "max_groups_per_unit = 2";
    let k2 = World::csv("index-k2", "visits", INDEX_CSV, &policy_k(2, extra));
    let k4 = World::csv("index-k4", "visits", INDEX_CSV, &policy_k(4, extra));
    let (indexed, full, wider) = (
        k2.unlimited(),
        k2.unlimited_without_index(),
        k4.unlimited_without_index(),
    );
    let critical = 1.95 * (2.0 / RUNS as f64).sqrt();
    for sql in [
        "SELECT SUM(v) AS s FROM visits WHERE v > 0",
        "SELECT grp, SUM(v) AS s FROM visits GROUP BY grp",
    ] {
        let runs = [&indexed, &full, &wider].map(|s| released_cells(s, sql, RUNS));
        // Every run picks afresh (a query shape's kept plan is rerun, never its answer): the
        // first cell's releases take many values, more than the noise alone gives at ε = 100.
        let mut first: Vec<i64> = runs[0].iter().map(|cells| cells[0].1 as i64).collect();
        first.sort_unstable();
        first.dedup();
        assert!(
            first.len() >= 5,
            "{sql}: the index path released only {first:?}"
        );
        let cells = runs[0][0].len();
        for c in 0..cells {
            let key = runs[0][0][c].0.clone();
            let [a, b, w] = runs
                .each_ref()
                .map(|r| r.iter().map(|cells| cells[c].1).collect::<Vec<f64>>());
            let same = crate::ks_two_sample(&a, &b);
            let power = crate::ks_two_sample(&a, &w);
            println!(
                "{sql}, cell {key:?}: KS {same:.3} (index vs every row), {power:.3} (vs k = 4); critical {critical:.3}"
            );
            assert!(
                same < critical,
                "{sql}, cell {key:?}: the index path's releases differ from every-row bounding (KS {same:.3} ≥ {critical:.3})"
            );
            assert!(
                key == "d" || power > critical,
                "{sql}, cell {key:?}: the test cannot tell k = 2 from k = 4 (KS {power:.3} ≤ {critical:.3})"
            );
        }
    }
}

#[test]
fn a_source_that_changes_after_registration_is_refused_before_any_charge() {
    // The version every receipt names, the answer cache and the contribution index all describe
    // the registered bytes: a person added to the file afterwards must not be read unbounded.
    let world = World::csv("index-stale", "visits", CSV, &policy_k(5, ""));
    let accountant = std::sync::Arc::new(sluice_runtime::InMemoryAccountant::new());
    let s = world.sandbox(accountant.clone());
    let sql = "SELECT COUNT(*) AS n FROM visits";
    let asker = asker("stats", "stale");
    s.block_on(s.engine().query(&asker, sql, 1.0))
        .expect("the registered version answers");
    let heavy: String = (0..50).map(|_| "3,a,1\n").collect();
    std::fs::write(world.root.join("data/visits.csv"), format!("{CSV}{heavy}")).unwrap();
    let visits = "visits".parse().unwrap();
    let day = std::time::Duration::from_secs(86_400);
    let spent = || {
        use sluice_runtime::Accountant;
        accountant.dataset_spent(&visits, day).epsilon
    };
    let before = spent();
    assert!(before > 0.0, "the first query was charged");
    let err = s
        .block_on(s.engine().query(&asker, sql, 1.0))
        .expect_err("a changed source is refused");
    assert!(
        matches!(err, sluice_runtime::QueryError::NotGranted(_))
            && err.to_string().contains("changed after version")
            && err.to_string().contains("restarts"),
        "{err}"
    );
    assert_eq!(spent(), before, "nothing charged");
}

#[test]
fn a_small_source_held_in_memory_answers_as_its_file_does() {
    // Rows of 40 persons, two of them above the bound, so that bounding has work to do.
    let mut csv = String::from("person_id,grp,v\n");
    for p in 0..40 {
        for r in 0..if p % 20 == 0 { 9 } else { 2 } {
            csv += &format!(
                "{p},{},{}\n",
                ["a", "b", "c", "d"][(p + r) % 4],
                (p * r) % 11
            );
        }
    }
    let world = World::csv("held", "visits", &csv, &policy_k(3, ""));
    let start = |memory_bytes| {
        let config = sluice_runtime::SandboxConfig::new(
            world.policy().unwrap(),
            &world.root,
            std::sync::Arc::new(crate::Unlimited),
        )
        .without_answer_cache()
        .with_memory_bytes(memory_bytes);
        Sandbox::new(config).unwrap()
    };
    let (held, scanned) = (start(sluice_runtime::data::DEFAULT_MEMORY_BYTES), start(0));
    let id = "visits".parse().unwrap();
    let rows = held.engine().catalog().get(&id).unwrap().held;
    assert_eq!(rows.map(|h| h.rows), Some(csv.lines().count() - 1));
    assert!(rows.is_some_and(|h| h.narrow() && h.bytes > 0), "{rows:?}");
    assert_eq!(scanned.engine().catalog().get(&id).unwrap().held, None);
    // A limit below the file's size keeps it a file scan.
    assert_eq!(start(64).engine().catalog().get(&id).unwrap().held, None);
    // Light persons' rows are all kept and heavy ones keep exactly 3, whichever: the noise-free
    // answers (ε = 100) agree, and a changed file is refused by both.
    for sql in [
        "SELECT grp, COUNT(*) AS n FROM visits GROUP BY grp",
        "SELECT COUNT(*) AS n FROM visits WHERE v > 2",
        "SELECT grp, COUNT(DISTINCT person_id) AS n FROM visits GROUP BY grp",
    ] {
        let total = |s: &Sandbox| column(&query(s, sql), usize::from(sql.contains("grp,")));
        if sql.contains("WHERE") {
            // Which 3 rows a heavy person keeps decides how many pass the filter: compare ranges.
            let (h, f) = (total(&held)[0], total(&scanned)[0]);
            assert!((h - f).abs() <= 6, "{sql}: held {h}, scanned {f}");
        } else if sql.contains("DISTINCT") {
            // Only the two heavy persons' groups depend on the pick.
            for (h, f) in total(&held).into_iter().zip(total(&scanned)) {
                assert!((h - f).abs() <= 2, "{sql}: held {h}, scanned {f}");
            }
        } else {
            let sum = |v: Vec<i64>| v.iter().sum::<i64>();
            assert_eq!(sum(total(&held)), 38 * 2 + 2 * 3, "{sql}");
            assert_eq!(sum(total(&scanned)), 38 * 2 + 2 * 3, "{sql}");
        }
    }
    std::fs::write(world.root.join("data/visits.csv"), format!("{csv}1,a,1\n")).unwrap();
    for s in [&held, &scanned] {
        let err = s
            .block_on(s.engine().query(
                &asker("stats", "x"),
                "SELECT COUNT(*) AS n FROM visits",
                1.0,
            ))
            .expect_err("a changed source is refused");
        assert!(err.to_string().contains("changed after version"), "{err}");
    }
}
