//! zero-concentrated DP accounting (`privacy_measure = "zcdp"`): discrete Gaussian noise
//! calibrated to L2 sensitivity, budgets in ρ, and refusals of the wrong unit.
//!
//! The statistical checks compare the released errors with the discrete Gaussian whose σ this
//! file derives on its own from the policy (not read back from the engine), by a
//! Kolmogorov–Smirnov test at α = 0.001; the same samples must reject σ 30% too large or too
//! small (the test's power).

use std::collections::HashMap;
use std::sync::Arc;

use sluice_runtime::privacy::Budget;
use sluice_runtime::privacy::accountant::InMemoryAccountant;
use sluice_runtime::{NoisyTable, QueryError, Sandbox, Value};

use crate::{World, asker};

const K: i64 = 3;
const DISTRICTS: [(&str, i64); 4] = [("a", 40), ("b", 25), ("c", 10), ("d", 0)];

fn policy(extra_grant: &str) -> String {
    format!(
        r#"
[dataset.visits]
source = "data/visits.csv"
holder = "test"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = {K}
privacy_measure = "zcdp"
columns.district = {{ kind = "category", public_values = ["a", "b", "c", "d"] }}
columns.v = {{ kind = "int", bounds = [0, 10] }}
columns.code = {{ kind = "category", partition_selection = true }}

[[grant]]
operator = "stats"
datasets = ["visits"]
purpose = "tests: zCDP"
aggregations = ["count", "sum", "quantile"]
rho_per_job = 1.0
rho_per_period = 1.5
period = "30d"
expires = 2099-12-31
review = "none"
{extra_grant}
"#
    )
}

/// District `a` has 40 people, `b` 25, `c` 10, `d` none; person p has 1 + p % 3 rows (never more
/// than K), each with v = 7. Code `common` on every row, code `lone` on one person's rows.
fn visits() -> (String, HashMap<String, (i64, i64)>) {
    let mut csv = String::from("person_id,district,v,code\n");
    let mut exact = HashMap::new();
    let mut p = 0;
    for (district, people) in DISTRICTS {
        let (mut n, mut s) = (0, 0);
        for _ in 0..people {
            let rows = 1 + p % K;
            for _ in 0..rows {
                let code = if p == 0 { "lone" } else { "common" };
                csv.push_str(&format!("{p},{district},7,{code}\n"));
                n += 1;
                s += 7;
            }
            p += 1;
        }
        exact.insert(district.to_string(), (n, s));
    }
    (csv, exact)
}

fn world(name: &str, extra_grant: &str) -> (Sandbox, HashMap<String, (i64, i64)>) {
    let (csv, exact) = visits();
    let world = World::csv(name, "visits", &csv, &policy(extra_grant));
    (world.unlimited(), exact)
}

fn query(s: &Sandbox, sql: &str, budget: Budget) -> Result<NoisyTable, QueryError> {
    s.block_on(s.engine().query_with(&asker("stats", "zcdp"), sql, budget))
        .map(|(t, _)| t)
}

/// P(X ≤ x) for the discrete Gaussian with parameter σ (pmf ∝ exp(-x²/2σ²)), by summing the
/// lattice far into both tails.
fn discrete_gaussian_cdf(sigma: f64) -> impl Fn(i64) -> f64 {
    let reach = (sigma * 12.0).ceil() as i64 + 2;
    let w = |x: i64| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp();
    let norm: f64 = (-reach..=reach).map(w).sum();
    let mut cdf = HashMap::new();
    let mut acc = 0.0;
    for x in -reach..=reach {
        acc += w(x) / norm;
        cdf.insert(x, acc);
    }
    move |x| {
        if x < -reach {
            0.0
        } else if x > reach {
            1.0
        } else {
            cdf[&x]
        }
    }
}

fn ks(samples: &[i64], cdf: impl Fn(i64) -> f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let n = s.len() as f64;
    let (mut d, mut i) = (0.0f64, 0);
    while i < s.len() {
        let v = s[i];
        let below = i as f64 / n;
        while i < s.len() && s[i] == v {
            i += 1;
        }
        d = d
            .max((i as f64 / n - cdf(v)).abs())
            .max((below - cdf(v - 1)).abs());
    }
    d
}

fn ks_critical(n: usize) -> f64 {
    (-0.5 * (0.001f64 / 2.0).ln()).sqrt() / (n as f64).sqrt()
}

#[test]
fn gaussian_noise_on_counts_and_sums_has_the_sigma_the_l2_sensitivity_gives() {
    let (s, exact) = world("zcdp-ks", "");
    let sql = "SELECT district, COUNT(*) AS n, SUM(v) AS total FROM visits GROUP BY district";
    // ρ = 0.5 over two releases: 0.25 each. A person adds at most K rows to one district, so
    // the count vector moves by at most K in L2 (and the sum by 10·K); σ = Δ₂/√(2·0.25).
    let sigma_n = K as f64 / 0.5f64.sqrt();
    let sigma_s = 10.0 * K as f64 / 0.5f64.sqrt();
    let runs = 1000;
    let (mut err_n, mut err_s) = (Vec::new(), Vec::new());
    let mut covered = 0;
    for _ in 0..runs {
        let t = query(&s, sql, Budget::Rho(0.5)).unwrap();
        assert_eq!(t.cost.rho, 0.5);
        assert_eq!(t.cost.epsilon, 0.0);
        for (row, acc) in t.rows.iter().zip(&t.accuracy) {
            let Value::Text(d) = &row[0] else { panic!() };
            let (n, total) = exact[d];
            let (Value::Int(nn), Value::Int(ns)) = (&row[1], &row[2]) else {
                panic!("integer releases: {row:?}")
            };
            err_n.push(nn - n);
            err_s.push(ns - total);
            covered += usize::from((nn - n).abs() as f64 <= acc[1].unwrap());
        }
    }
    let crit = ks_critical(err_n.len());
    for (name, errors, sigma) in [("COUNT", &err_n, sigma_n), ("SUM", &err_s, sigma_s)] {
        let d = ks(errors, discrete_gaussian_cdf(sigma));
        println!("{name}: KS D = {d:.4} against σ {sigma:.3} (critical {crit:.4})");
        assert!(d < crit, "{name}: D = {d} ≥ {crit} against σ {sigma}");
        for wrong in [1.3, 0.7] {
            let d = ks(errors, discrete_gaussian_cdf(sigma * wrong));
            assert!(d > crit, "{name}: σ×{wrong} not rejected (D = {d})");
        }
    }
    // The stated 95% half-width (OpenDP's conservative discrete Gaussian tail bound) covers at
    // least 95% of the count errors, and is not grossly wide.
    let rate = covered as f64 / err_n.len() as f64;
    println!("coverage of the stated 95% interval: {rate:.4}");
    assert!((0.94..=0.99).contains(&rate), "coverage {rate}");
}

#[test]
fn the_wrong_unit_is_refused_with_the_right_one_named() {
    let (s, _) = world("zcdp-unit", "");
    let sql = "SELECT COUNT(*) AS n FROM visits";
    match query(&s, sql, Budget::Epsilon(1.0)) {
        Err(QueryError::InvalidOptions(m)) => {
            assert!(m.contains("zero-concentrated") && m.contains("rho"), "{m}")
        }
        other => panic!("ε on a zCDP dataset: {other:?}"),
    }
    for bad in [0.0, -1.0, f64::NAN, 51.0] {
        assert!(matches!(
            query(&s, sql, Budget::Rho(bad)),
            Err(QueryError::InvalidOptions(_))
        ));
    }
    // And ρ on a pure-ε dataset.
    let (pure, _) = crate::stats_sandbox();
    let r = pure.block_on(pure.engine().query_with(
        &asker("stats", "zcdp"),
        "SELECT COUNT(*) AS n FROM health_stats",
        Budget::Rho(0.5),
    ));
    match r {
        Err(QueryError::InvalidOptions(m)) => assert!(m.contains("epsilon"), "{m}"),
        other => panic!("ρ on a pure dataset: {other:?}"),
    }
}

#[test]
fn accuracy_targets_solve_for_rho_and_estimates_cost_nothing() {
    let (s, _) = world("zcdp-acc", "");
    let a = asker("stats", "zcdp");
    let sql = "SELECT district, COUNT(*) AS n FROM visits GROUP BY district";
    let e = s
        .block_on(s.engine().estimate(&a, sql, Budget::Accuracy(10.0)))
        .unwrap();
    assert_eq!(e.epsilon, 0.0);
    assert!(e.rho > 0.0);
    let half = e.accuracy[0].1.unwrap();
    assert!(
        half <= 10.0 && half > 9.0,
        "the least ρ meets the target tightly: {half}"
    );
    // σ for a 95% half-width of 10 is at most 10/1.96 (continuous Gaussian), so ρ ≥ K²/(2σ²);
    // OpenDP's discrete tail bound is a little conservative, so ρ is somewhat above that.
    let rho = (K * K) as f64 / (2.0 * (10.0f64 / 1.96).powi(2));
    assert!((1.0..1.25).contains(&(e.rho / rho)), "{} vs {rho}", e.rho);
    let t = query(&s, sql, Budget::Accuracy(10.0)).unwrap();
    assert!((t.cost.rho - e.rho).abs() < 1e-12);
    assert!(t.mechanism.contains("ρ-zCDP") && t.mechanism.contains("discrete Gaussian"));
    assert!(t.mechanism.contains("(ε="), "the implied (ε, δ) is stated");
}

#[test]
fn rho_is_charged_and_capped_per_job() {
    let (csv, _) = visits();
    let world = World::csv("zcdp-cap", "visits", &csv, &policy(""));
    let acct = Arc::new(InMemoryAccountant::new());
    let s = world.sandbox(acct.clone());
    let sql = |i: i32| format!("SELECT COUNT(*) AS n FROM visits WHERE v > {i}");
    query(&s, &sql(1), Budget::Rho(0.6)).unwrap();
    match query(&s, &sql(2), Budget::Rho(0.6)) {
        Err(QueryError::BudgetExhausted(m)) => assert!(m.contains("ρ"), "{m}"),
        other => panic!("over the per-job ρ: {other:?}"),
    }
    query(&s, &sql(3), Budget::Rho(0.4)).unwrap();
    let spent = s.engine().accountant().spent(
        &crate::op("stats"),
        &sluice_policy::DatasetId::new("visits").unwrap(),
        "zcdp",
        std::time::Duration::from_secs(86_400),
    );
    assert!((spent.job.rho - 1.0).abs() < 1e-9 && spent.job.epsilon == 0.0);
}

#[test]
fn quantiles_and_partition_selection_run_under_zcdp() {
    let (s, _) = world(
        "zcdp-sel",
        "delta_per_query = 1e-6\ndelta_per_period = 1e-4",
    );
    let t = query(&s, "SELECT MEDIAN(v) AS m FROM visits", Budget::Rho(0.5)).unwrap();
    let Value::Int(m) = t.rows[0][0] else {
        panic!("{:?}", t.rows)
    };
    assert!((0..=10).contains(&m));
    assert!(t.mechanism.contains("ρ-zCDP"));
    // The lone code (one person) stays unreleased; the common one is released.
    for _ in 0..100 {
        let t = query(
            &s,
            "SELECT code, COUNT(*) AS n FROM visits GROUP BY code",
            Budget::Rho(0.5),
        )
        .unwrap();
        let keys: Vec<&Value> = t.rows.iter().map(|r| &r[0]).collect();
        assert_eq!(keys, [&Value::Text("common".into())]);
        assert_eq!((t.cost.rho, t.cost.delta), (0.5, 1e-6));
        assert!(t.mechanism.contains("make_gaussian_threshold"));
    }
}

/// A zCDP dataset over the health data, granted to `analyst` alone (no ε cap of its own).
const ZCDP_HTTP: &str = r#"
[dataset.visits_z]
source = "data/health_visits.parquet"
holder = "city-health-commission"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
privacy_measure = "zcdp"
columns.sex = { kind = "category", public_values = ["F", "M"] }

[[grant]]
operator = "analyst"
datasets = ["visits_z"]
purpose = "tests: zCDP over HTTP"
aggregations = ["count"]
rho_per_job = 0.5
rho_per_period = 2.0
period = "30d"
expires = 2099-12-31
review = "none"
"#;

#[test]
fn the_http_api_estimates_in_rho_and_reports_the_implied_epsilon() {
    let mut b = crate::TestBroker::start("zcdp-http", |p| p + ZCDP_HTTP);
    let c = b.client(&b.analyst);
    let sql = "SELECT sex, COUNT(*) AS n FROM visits_z GROUP BY sex";
    let e = c
        .post_json(
            "/v1/estimate",
            &serde_json::json!({ "sql": sql, "rho": 0.1 }),
        )
        .unwrap();
    assert_eq!(
        (e["rho"].as_f64(), e["epsilon"].as_f64()),
        (Some(0.1), Some(0.0))
    );
    let refused = c
        .post_json(
            "/v1/estimate",
            &serde_json::json!({ "sql": sql, "epsilon": 1.0 }),
        )
        .unwrap_err()
        .to_string();
    assert!(refused.contains("rho"), "{refused}");
    let budget = c.get_json("/v1/budget").unwrap();
    let z = budget["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "visits_z")
        .unwrap();
    assert_eq!(z["privacy_measure"], "zcdp");
    assert_eq!(z["rho_per_period"], 2.0);
    assert_eq!(z["remaining_this_period"], 2.0, "an estimate is free");
    assert_eq!(z["implied_epsilon_this_period"], 0.0);
    b.stop();
}

#[test]
fn a_jobs_epsilon_cap_works_on_a_zcdp_only_grant_as_its_rho_cap() {
    let mut b = crate::TestBroker::start("zcdp-max-eps", |p| p + ZCDP_HTTP);
    let wasm = crate::guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let submit = |max_epsilon: f64| {
        crate::http(
            b.url(),
            "POST",
            &format!("/v1/jobs?purpose=zcdp-cap&datasets=visits_z&max_epsilon={max_epsilon}"),
            Some(&b.analyst),
            Some("application/wasm"),
            &wasm,
        )
    };
    // ε 1.0 caps ρ at 0.5, exactly the grant's per-job ρ: accepted.
    let (status, body) = submit(1.0);
    assert_eq!(status, 202, "{body}");
    // ε 1.2 would allow ρ 0.72, above the grant's 0.5: refused, in ρ.
    let (status, body) = submit(1.2);
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ρ") && message.contains("0.5"),
        "{message}"
    );
    b.stop();
}

#[test]
fn the_tourism_sample_asks_in_rho_under_the_example_policy() {
    // The example policy accounts `tourism_trips` in zCDP; the sample job reads the measure and
    // asks for ρ.
    let policy = sluice_policy::load(&crate::manifest_dir().join("../policies/examples")).unwrap();
    let s = sluice_runtime::Sandbox::new(
        sluice_runtime::SandboxConfig::new(
            policy,
            crate::data_root(),
            Arc::new(InMemoryAccountant::new()),
        )
        .without_answer_cache(),
    )
    .unwrap();
    let wasm = crate::guest(env!("GUEST_TOURISM_SPEND"));
    let out = s
        .run_job(&sluice_runtime::JobRequest::new(
            crate::op("yangzhou-tourism-lab"),
            "tourism-z",
            &wasm,
            "rho=0.5",
        ))
        .expect("the sample runs");
    assert_eq!(out.queries.len(), 1);
    assert_eq!(out.queries[0].cost.rho, 0.5);
    assert_eq!(out.queries[0].cost.epsilon, 0.0);
    let (_, t) = &out.report.tables[0];
    assert!(t.mechanism.contains("discrete Gaussian"), "{}", t.mechanism);
    assert!(out.report.text.contains("ρ=0.5"), "{}", out.report.text);
    assert!(
        out.log.iter().any(|l| l.message.contains("ρ 0.50 of 1.00")),
        "{:?}",
        out.log
    );
}
