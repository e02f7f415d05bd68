//! Row functions: a job's wasm over the rows of one privacy unit at a time, feeding DP
//! aggregates. What must hold (docs/architecture.md, "Row functions"): one unit's outputs depend
//! on that unit's rows alone; nothing but the clamped value leaves; the policy decides; the
//! accounting is the same as for a column.

use std::sync::Arc;

use sluice_runtime::rows::{RowEngine, RowModule};
use sluice_runtime::{QueryError, Sandbox, Value};

use crate::{World, asker};

/// The hostile rows module, shipped inside a job binary (here: inside itself, any binary will
/// do) and compiled.
fn hostile() -> Arc<RowModule> {
    let rows = crate::guest(env!("GUEST_ROWS_HOSTILE"));
    let job = sluice_runtime::rows::embed(&rows, &rows).expect("embed");
    RowModule::from_job(&job, &RowEngine::new().unwrap())
        .expect("the hostile rows module loads")
        .expect("it carries row functions")
}

fn policy(extra_grant: &str, extra_dataset: &str) -> String {
    format!(
        r#"
[dataset.visits]
source = "data/visits.csv"
holder = "test"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
{extra_dataset}
columns.grp = {{ kind = "category", public_values = ["a", "b", "y", "z"] }}
columns.v = {{ kind = "int", bounds = [0, 100], row_functions = true }}
columns.w = {{ kind = "int", bounds = [0, 100] }}
columns.name = {{ kind = "hidden" }}
"#
    ) + &crate::stats_grant("visits", "row functions", r#""count", "sum", "mean""#).replace(
        "review = \"none\"",
        &format!("review = \"none\"\n{extra_grant}"),
    )
}

/// A world whose persons each have `rows` rows (person p: group `grp(p)`, v = `v(p, r)`).
fn csv(persons: &[(u32, &str, Vec<i64>)]) -> String {
    let mut out = String::from("person_id,grp,v,w,name\n");
    for (p, grp, vs) in persons {
        for v in vs {
            out += &format!("{p},{grp},{v},1,n{p}\n");
        }
    }
    out
}

fn sandbox(name: &str, data: &str, extra_grant: &str) -> Sandbox {
    World::csv(name, "visits", data, &policy(extra_grant, "")).unlimited()
}

fn rows_asker(module: &Arc<RowModule>) -> sluice_runtime::privacy::Asker {
    let mut a = asker("stats", "rows");
    a.rows = Some(module.clone());
    a
}

fn query(s: &Sandbox, module: &Arc<RowModule>, sql: &str, epsilon: f64) -> Vec<Vec<Value>> {
    s.block_on(s.engine().query(&rows_asker(module), sql, epsilon))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .0
        .rows
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        other => panic!("{other:?}"),
    }
}

const GRANT: &str = "row_functions = true";

#[test]
fn each_unit_runs_in_a_fresh_instance_in_an_order_set_by_its_own_values() {
    // Persons of 1 to 5 rows (none above the bound): `carry` returns how many calls its
    // instance saw before, so a unit of n rows sums to n(n-1)/2 only if no state crosses units.
    let persons: Vec<(u32, &str, Vec<i64>)> = (0..60)
        .map(|p| (p, "a", vec![1; 1 + (p as usize % 5)]))
        .collect();
    let expected: f64 = persons
        .iter()
        .map(|(_, _, v)| (v.len() * (v.len() - 1) / 2) as f64)
        .sum();
    let s = sandbox("rows-carry", &csv(&persons), GRANT);
    let m = hostile();
    // ε 100 on a sum of sensitivity 5 · 10: noise of scale 0.5.
    let got = number(&query(&s, &m, "SELECT SUM(carry(v)) AS s FROM visits", 100.0)[0][0]);
    assert!(
        (got - expected).abs() < 5.0,
        "released {got}, expected {expected}"
    );
    // `last` returns the previous row's argument in its instance: 0 at every unit's first row.
    // Every person's rows hold one value, their id mod 90 + 1, so a unit's sum is (n-1)·value;
    // a value handed from one unit to the next would show.
    let persons: Vec<(u32, &str, Vec<i64>)> = (0..60)
        .map(|p| (p, "a", vec![i64::from(p % 90) + 1; 1 + (p as usize % 5)]))
        .collect();
    let expected: f64 = persons
        .iter()
        .map(|(_, _, v)| ((v.len() - 1) as i64 * v[0]) as f64)
        .sum();
    let s = sandbox("rows-last", &csv(&persons), GRANT);
    let got = number(&query(&s, &m, "SELECT SUM(last(v)) AS s FROM visits", 100.0)[0][0]);
    assert!(
        (got - expected).abs() < 50.0,
        "released {got}, expected {expected}"
    );
}

#[test]
fn another_units_rows_do_not_change_a_units_released_distribution() {
    // Neighbouring datasets: D has person 1 alone in group z; D' adds person 2 (in group y,
    // many rows, read before and after person 1 by any scan). A stateful function's release
    // for z must have the same distribution on both (two-sample KS, α = 0.001), while it tells
    // D from D'' where person 1 has one more row (power).
    let d = csv(&[(1, "z", vec![5, 6, 7])]);
    let d_prime = csv(&[
        (2, "y", vec![9, 9, 9, 9]),
        (1, "z", vec![5, 6, 7]),
        (3, "y", vec![1]),
    ]);
    let d_other = csv(&[(1, "z", vec![5, 6, 7, 8])]);
    let m = hostile();
    let sql = "SELECT grp, SUM(carry(v)) AS s FROM visits GROUP BY grp";
    const RUNS: usize = 200;
    let releases = |name: &str, data: &str| -> Vec<f64> {
        let s = sandbox(name, data, GRANT);
        (0..RUNS)
            .map(|_| {
                // ε 40 on a sensitivity of 5 · 10: noise of scale 1.25, so one more row shows.
                let rows = query(&s, &m, sql, 40.0);
                let z = rows
                    .iter()
                    .find(|r| r[0] == Value::Text("z".into()))
                    .expect("group z is released");
                number(&z[1])
            })
            .collect()
    };
    let (a, b, c) = (
        releases("rows-n-d", &d),
        releases("rows-n-dprime", &d_prime),
        releases("rows-n-dother", &d_other),
    );
    let critical = 1.95 * (2.0 / RUNS as f64).sqrt();
    let same = crate::ks_two_sample(&a, &b);
    let power = crate::ks_two_sample(&a, &c);
    assert!(
        same < critical,
        "another unit's rows changed unit 1's release: KS {same:.3} ≥ {critical:.3}"
    );
    assert!(
        power > critical,
        "the test cannot tell one more row of unit 1 (sum 3 → 6): KS {power:.3} ≤ {critical:.3}"
    );
}

#[test]
fn traps_on_chosen_rows_give_the_default_and_hostile_functions_end() {
    let m = hostile();
    let args = |v: &[f64]| [datafusion::arrow::array::Float64Array::from(v.to_vec())];
    let fuel = sluice_policy::RowFuel::default();
    let run = |name: &str, v: &[f64]| {
        let (i, _) = m.function(name).unwrap();
        m.run_unit(i, &args(v), v.len(), fuel).unwrap()
    };
    let values = [10.0, 60.0, 20.0, 99.0, 51.0, 50.0];
    // A trap on a row is that row's default; the instance goes on with the next rows.
    assert_eq!(run("trap_above", &values), run("default_above", &values));
    assert_eq!(
        run("trap_above", &values),
        [10.0, 7.0, 20.0, 7.0, 7.0, 50.0]
    );
    // A loop burns the row's fuel: the default, on every row, in bounded time.
    let t = std::time::Instant::now();
    assert_eq!(run("spin", &[1.0, 2.0, 3.0]), [3.0, 3.0, 3.0]);
    // Spinning rows spend the unit's fuel: after per_unit / per_row of them, every later row
    // gets the default without a call, even those that would not spin.
    let mut v = vec![60.0; (fuel.per_unit / fuel.per_row) as usize + 1];
    v.push(10.0);
    let out = run("spin_above", &v);
    assert_eq!(out.last(), Some(&3.0), "the unit's fuel ran out");
    assert_eq!(
        run("spin_above", &[10.0]),
        [10.0],
        "a fresh unit has its own fuel"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    // Memory runs out at the instance's cap: the default.
    assert_eq!(run("grow", &[1.0]), [5.0]);
    // NaN and infinities are the default, a huge number is clamped.
    assert_eq!(run("wild", &[0.5, 1.5, 2.5]), [1.0, 1.0, 100.0]);
}

#[test]
fn trapping_rows_release_as_the_default_would() {
    // The same data through `trap_above` and `default_above` (equal outputs per row): their
    // releases are the same distribution (KS), so a trap is not a channel.
    let persons: Vec<(u32, &str, Vec<i64>)> = (0..40)
        .map(|p| (p, "a", vec![i64::from(p * 7 % 100), 55]))
        .collect();
    let s = sandbox("rows-traps", &csv(&persons), GRANT);
    let m = hostile();
    let releases = |f: &str| -> Vec<f64> {
        (0..150)
            .map(|_| {
                let sql = format!("SELECT SUM({f}(v)) AS s FROM visits");
                number(&query(&s, &m, &sql, 1.0)[0][0])
            })
            .collect()
    };
    let (a, b) = (releases("trap_above"), releases("default_above"));
    let critical = 1.95 * (2.0 / 150.0f64).sqrt();
    let ks = crate::ks_two_sample(&a, &b);
    assert!(ks < critical, "KS {ks:.3} ≥ {critical:.3}");
}

#[test]
fn the_policy_decides_before_any_charge() {
    let data = csv(&[(1, "a", vec![1, 2]), (2, "b", vec![3])]);
    let m = hostile();
    let refused = |s: &Sandbox, sql: &str| -> QueryError {
        s.block_on(s.engine().query(&rows_asker(&m), sql, 1.0))
            .expect_err(sql)
    };
    // A grant without `row_functions`.
    let s = sandbox("rows-no-grant", &data, "");
    let e = refused(&s, "SELECT SUM(carry(v)) AS s FROM visits");
    assert!(
        matches!(e, QueryError::NotGranted(_)) && e.to_string().contains("row functions"),
        "{e}"
    );
    let s = sandbox("rows-grant", &data, GRANT);
    // A column the policy does not let row functions read, and a hidden one.
    let e = refused(&s, "SELECT SUM(carry(w)) AS s FROM visits");
    assert!(
        matches!(e, QueryError::ColumnDenied(_)) && e.to_string().contains("row_functions = true"),
        "{e}"
    );
    let e = refused(&s, "SELECT SUM(carry(name)) AS s FROM visits");
    assert!(e.to_string().contains("name"), "{e}");
    // The privacy unit is no column at all.
    let e = refused(&s, "SELECT SUM(carry(person_id)) AS s FROM visits");
    assert!(matches!(e, QueryError::ColumnDenied(_)), "{e}");
    // Row functions only inside aggregates.
    let e = refused(&s, "SELECT COUNT(*) AS n FROM visits WHERE carry(v) > 1");
    assert!(!e.to_string().is_empty());
    // A job without row functions has none to call.
    let plain = s
        .block_on(s.engine().query(
            &asker("stats", "x"),
            "SELECT SUM(carry(v)) AS s FROM visits",
            1.0,
        ))
        .expect_err("no row functions");
    assert!(
        matches!(
            plain,
            QueryError::InvalidSql(_) | QueryError::Unsupported(_)
        ),
        "{plain}"
    );
    // Nothing of the above was charged: the unlimited accountant saw no charge to refuse, and
    // the refusals came before execution (no ExecutionFailed).
    for e in [&e, &plain] {
        assert!(!matches!(e, QueryError::ExecutionFailed), "{e}");
    }
}

#[test]
fn a_grade_may_forbid_row_functions() {
    let text = policy(GRANT, "").replace("\"sensitive\"", "\"important\"");
    let err = sluice_policy::parse_str("p.toml", &text).expect_err("important data forbids them");
    assert!(
        err.to_string().contains("does not allow row functions"),
        "{err}"
    );
    let allowed = text + "\n[grade.important]\nrow_functions = true\n";
    sluice_policy::parse_str("p.toml", &allowed).expect("its grade can allow them");
    let err = sluice_policy::parse_str(
        "p.toml",
        &policy(GRANT, "").replace(
            "kind = \"category\", public_values = [\"a\", \"b\", \"y\", \"z\"] }",
            "kind = \"category\", public_values = [\"a\", \"b\", \"y\", \"z\"], row_functions = true }",
        ),
    )
    .expect_err("row functions take numbers");
    assert!(err.to_string().contains("int and float columns"), "{err}");
}

#[test]
fn a_rows_module_that_imports_anything_or_cannot_be_instantiated_is_refused_at_load() {
    // Each module: its sections, then the manifest section "f 0 1 0", shipped inside itself.
    let load = |sections: &[(u8, &[u8])]| {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let manifest: &[u8] = b"\x14sluice-row-functionsf 0 1 0\n";
        for (id, body) in sections.iter().chain([&(0, manifest)]) {
            m.push(*id);
            m.push(body.len() as u8);
            m.extend_from_slice(body);
        }
        let job = sluice_runtime::rows::embed(&m, &m).unwrap();
        RowModule::from_job(&job, &RowEngine::new().unwrap())
    };
    // (func (export "sluice_row_f") (param f64) (result f64) local.get 0)
    let (one_type, one_func): (&[u8], &[u8]) = (b"\x01\x60\x01\x7c\x01\x7c", b"\x01\x00");
    let (export, code): (&[u8], &[u8]) =
        (b"\x01\x0csluice_row_f\x00\x00", b"\x01\x04\x00\x20\x00\x0b");
    // The same function beside an import `env::clock: () -> f64` (function 0).
    let err = load(&[
        (1, b"\x02\x60\x01\x7c\x01\x7c\x60\x00\x01\x7c"),
        (2, b"\x01\x03env\x05clock\x00\x01"),
        (3, one_func),
        (7, b"\x01\x0csluice_row_f\x00\x01"),
        (10, code),
    ])
    .expect_err("imports");
    assert!(err.to_string().contains("imports `env::clock`"), "{err}");
    // Without the import, it loads.
    let loaded = load(&[(1, one_type), (3, one_func), (7, export), (10, code)])
        .unwrap()
        .unwrap();
    assert_eq!(loaded.functions()[0].name, "f");
    assert_eq!(loaded.functions()[0].arity, 1);
    // A memory of 300 pages (18.75 MiB, above the 16 MiB cap) would fail every unit's
    // instance after the charge: refused at load.
    let err = load(&[
        (1, one_type),
        (3, one_func),
        (5, b"\x01\x00\xac\x02"),
        (7, export),
        (10, code),
    ])
    .expect_err("memory");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // A start function (function 1: `unreachable`) that traps would give every row the
    // default: refused at load.
    let err = load(&[
        (1, b"\x02\x60\x01\x7c\x01\x7c\x60\x00\x00"),
        (3, b"\x02\x00\x01"),
        (7, export),
        (8, b"\x01"),
        (10, b"\x02\x04\x00\x20\x00\x0b\x03\x00\x00\x0b"),
    ])
    .expect_err("start traps");
    assert!(err.to_string().contains("cannot be instantiated"), "{err}");
}

#[test]
fn the_sample_runs_locally_with_accurate_answers() {
    // The tourism sample's `per_person(spend, group_size)` on a world where every trip spends
    // 300 in a group of 3: the mean per person is 100, within the release's stated accuracy.
    let job = sluice_runtime::rows::embed(
        &crate::guest(env!("GUEST_TOURISM_PER_PERSON")),
        &crate::guest(env!("GUEST_TOURISM_PER_PERSON_ROWS")),
    )
    .unwrap();
    let module = RowModule::from_job(&job, &RowEngine::new().unwrap())
        .unwrap()
        .unwrap();
    let persons: Vec<(u32, &str, Vec<i64>)> = (0..400).map(|p| (p, "a", vec![300, 300])).collect();
    let data = csv(&persons).replace(",1,n", ",3,n");
    let text = policy(GRANT, "")
        .replace(
            "columns.w = { kind = \"int\", bounds = [0, 100] }",
            "columns.w = { kind = \"int\", bounds = [1, 20], row_functions = true }",
        )
        .replace(
            "bounds = [0, 100], row_functions = true }",
            "bounds = [0, 1000], row_functions = true }",
        );
    let s = World::csv("rows-sample", "visits", &data, &text).unlimited();
    let t = s
        .block_on(s.engine().query(
            &rows_asker(&module),
            "SELECT AVG(per_person(v, w)) AS m FROM visits",
            50.0,
        ))
        .unwrap()
        .0;
    let (m, acc) = (
        number(&t.rows[0][0]),
        t.accuracy[0][0].unwrap_or(f64::INFINITY),
    );
    // Within twice its stated 95% half-width (a failure rate far below 5%).
    assert!(
        (m - 100.0).abs() <= 2.0 * acc,
        "mean per person {m} (±{acc})"
    );
    assert!(
        acc < 20.0,
        "the answer is too noisy to test anything: ±{acc}"
    );
    assert!(t.mechanism.contains("per_person"), "{}", t.mechanism);
}

#[test]
fn the_sample_runs_through_the_broker_and_its_audit_names_the_function() {
    let mut b = crate::TestBroker::start("rows-broker", |p| {
        p.replace(
            "columns.spend = { kind = \"float\", bounds = [0.0, 5000.0] }",
            "columns.spend = { kind = \"float\", bounds = [0.0, 5000.0], row_functions = true }",
        )
        .replace(
            "columns.group_size = { kind = \"int\", bounds = [1, 20] }",
            "columns.group_size = { kind = \"int\", bounds = [1, 20], row_functions = true }",
        )
        .replacen(
            "operator = \"tourism-lab\"",
            "operator = \"tourism-lab\"\nrow_functions = true",
            1,
        )
    });
    let job = sluice_runtime::rows::embed(
        &crate::guest(env!("GUEST_TOURISM_PER_PERSON")),
        &crate::guest(env!("GUEST_TOURISM_PER_PERSON_ROWS")),
    )
    .unwrap();
    let c = b.client(&b.tourism);
    let r = c
        .submit(&sluice_broker::client::Submission {
            wasm: &job,
            purpose: "spend per person",
            params: "epsilon=0.5",
            datasets: &["tourism_trips".into()],
            max_epsilon: None,
            scenario: None,
        })
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    b.client(&b.reviewer)
        .post_json(
            &format!("/v1/reviews/{id}/approve"),
            &serde_json::json!({"reason": "bounds 0-2000 per person are public"}),
        )
        .unwrap();
    c.follow(&id, |_, _| {}).unwrap();
    let state = c.get_json(&format!("/v1/jobs/{id}")).unwrap();
    assert_eq!(state["state"], "succeeded", "{state}");
    let report = c.get_text(&format!("/v1/jobs/{id}/result")).unwrap();
    assert!(report.contains("spend_per_person"), "{report}");
    // Every charge's audit entry names the function, its bounds and its module's sha256.
    let audit = b
        .client(&b.reviewer)
        .get_json(&format!("/v1/audit?job={id}"))
        .unwrap();
    let queries: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "query")
        .map(|e| e["detail"]["sql"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(queries.len(), 2, "{audit}");
    let module = RowModule::from_job(&job, &RowEngine::new().unwrap())
        .unwrap()
        .unwrap();
    assert!(
        queries[0].contains("row function per_person(spend, group_size)")
            && queries[0].contains(&module.sha256)
            && queries[0].contains("[0, 2000]"),
        "{}",
        queries[0]
    );
    assert!(
        queries[1].contains("row function repeat_trip(spend)"),
        "{}",
        queries[1]
    );
    // The signed receipt names both functions with their bounds and the module.
    let receipt: sluice_broker::keys::Receipt =
        serde_json::from_str(&c.get_text(&format!("/v1/jobs/{id}/receipt")).unwrap()).unwrap();
    receipt
        .verify(
            &sluice_broker::keys::public_key(&b.public_key).unwrap(),
            report.as_bytes(),
        )
        .unwrap();
    let sha = &module.sha256;
    assert_eq!(
        receipt.row_functions,
        [
            format!(
                "per_person(spend, group_size) in [0, 2000] default 0, rows module sha256 {sha}"
            ),
            format!("repeat_trip(spend) in [0, 1] default 0, rows module sha256 {sha}"),
        ]
    );
    b.stop();
}

#[test]
fn response_time_padding_covers_what_a_row_function_burns() {
    // A function that spins on every row takes longer than one that returns at once; with the
    // dataset's padding both answers leave at the same bucket boundary.
    let persons: Vec<(u32, &str, Vec<i64>)> = (0..200).map(|p| (p, "a", vec![60, 70])).collect();
    let world = World::csv(
        "rows-padding",
        "visits",
        &csv(&persons),
        &policy(GRANT, "response_time_bucket_ms = 1500"),
    );
    let s = world.unlimited();
    let m = hostile();
    let timed = |f: &str| {
        let t = std::time::Instant::now();
        query(&s, &m, &format!("SELECT SUM({f}(v)) AS s FROM visits"), 1.0);
        t.elapsed()
    };
    let bucket = std::time::Duration::from_millis(1500);
    for f in ["spin", "default_above"] {
        let took = timed(f);
        assert!(
            took >= bucket && took < bucket * 2,
            "{f}: answered after {took:?}, not in the first 1.5 s bucket"
        );
    }
}

#[test]
fn row_functions_compose_with_group_bounds_and_several_readers() {
    // Group bounds (a random choice of groups per unit), several aggregates of one call (one
    // column, read by two releases) and a quantile reader (a second reader, so the bounded
    // relation is materialized): each plans and answers.
    let persons: Vec<(u32, &str, Vec<i64>)> = (0..50)
        .map(|p| (p, ["a", "b", "y", "z"][p as usize % 4], vec![10, 20, 30]))
        .collect();
    let world = World::csv(
        "rows-compose",
        "visits",
        &csv(&persons),
        &policy(GRANT, "max_groups_per_unit = 2\nmax_rows_per_group = 2").replace(
            "\"count\", \"sum\", \"mean\"",
            "\"count\", \"sum\", \"mean\", \"quantile\"",
        ),
    );
    let s = world.unlimited();
    let m = hostile();
    let rows = query(
        &s,
        &m,
        "SELECT grp, COUNT(*) AS n, SUM(default_above(v)) AS s, AVG(default_above(v)) AS a FROM visits GROUP BY grp",
        50.0,
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in &rows {
        // Each person keeps at most 2 rows in its one group: the mean of 10, 20, 30 picks.
        let a = number(&r[3]);
        assert!((5.0..=35.0).contains(&a), "{r:?}");
    }
    let rows = query(
        &s,
        &m,
        "SELECT COUNT(*) AS n, MEDIAN(default_above(v)) AS med FROM visits",
        50.0,
    );
    let med = number(&rows[0][1]);
    assert!((0.0..=100.0).contains(&med), "{rows:?}");
}
