//! Whole-job plans: a dry run on mock data predicts the real run's queries and costs, refuses an
//! over-cap job or an undeclared dataset before anything is spent, says when a job's queries
//! depend on its answers, and is shown to the reviewer beside a pending job.

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_runtime::JobRequest;

use crate::{TestBroker, guest, http, op, sandbox};

fn body(dataset: &str, params: &str, wasm: &[u8]) -> Vec<u8> {
    json!({
        "purpose": "tests: plans",
        "params": params,
        "datasets": [dataset],
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
    })
    .to_string()
    .into_bytes()
}

fn post(b: &TestBroker, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    http(
        b.url(),
        "POST",
        path,
        Some(token),
        Some("application/json"),
        body,
    )
}

/// What the analyst has spent on `health_visits` this period, by the broker's budget view.
fn spent(b: &TestBroker) -> f64 {
    let (status, v) = http(b.url(), "GET", "/v1/budget", Some(&b.analyst), None, b"");
    assert_eq!(status, 200, "{v}");
    v["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "health_visits")
        .map(|d| d["spent_this_period"].as_f64().unwrap())
        .unwrap_or_else(|| panic!("no health_visits budget in {v}"))
}

#[test]
fn a_plan_predicts_the_queries_and_costs_of_the_real_run() {
    let (sb, _) = sandbox();
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let mut req = JobRequest::new(op("analyst"), "j", &wasm, "epsilon=0.4&min_age=18");
    req.datasets = Some(vec!["health_visits".parse().unwrap()]);
    let plan = sb.plan_job(&req).expect("the plan runs");
    assert!(plan.would_complete(), "{plan:?}");
    assert!(!plan.adaptive, "{plan:?}");
    let out = sb.run_job(&req).expect("the job runs");
    let planned: Vec<_> = plan
        .queries
        .iter()
        .map(|q| (q.normalized.clone(), q.cost))
        .collect();
    let ran: Vec<_> = out
        .queries
        .iter()
        .map(|q| (q.normalized.clone(), q.cost))
        .collect();
    assert_eq!(planned, ran);
    assert_eq!(plan.datasets.len(), 1);
    assert!((plan.datasets[0].total - 0.8).abs() < 1e-9, "{plan:?}");
    // A plan is not a run: the real ledger saw only the run's charges (the plan's ledger is
    // its own), so planning again still finds the same room.
    let again = sb.plan_job(&req).unwrap();
    assert!(
        (again.datasets[0].period_left - (plan.datasets[0].period_left - 0.8)).abs() < 1e-9,
        "{again:?} after {plan:?}"
    );
}

#[test]
fn a_plan_says_when_the_queries_depend_on_the_answers() {
    let (sb, _) = sandbox();
    let wasm = guest(env!("GUEST_HOSTILE"));
    let mut req = JobRequest::new(op("analyst"), "j", &wasm, "adaptive");
    req.datasets = Some(vec!["health_visits".parse().unwrap()]);
    let plan = sb.plan_job(&req).expect("the plan runs");
    // The second query's literal is the first (continuous, noisy) answer: two mock runs
    // never ask the same one.
    assert!(plan.adaptive, "{plan:?}");
    assert!(plan.would_complete(), "{plan:?}");
    // Power: a job that asks the same queries whatever the answers is not flagged.
    let mut fixed = JobRequest::new(
        op("analyst"),
        "j",
        &wasm,
        "sql:SELECT COUNT(*) AS n FROM health_visits",
    );
    fixed.datasets = req.datasets.clone();
    assert!(!sb.plan_job(&fixed).unwrap().adaptive);
}

#[test]
fn a_plan_refuses_an_over_cap_job_before_anything_is_spent() {
    let mut b = TestBroker::start("plan-over-cap", |t| t);
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    // Two queries of ε=30 against a per-job cap of 50: the second would be refused.
    let over = body("health_visits", "epsilon=30&min_age=18", &wasm);
    let (status, plan) = post(&b, "/v1/plan", &b.analyst, &over);
    assert_eq!(status, 200, "{plan}");
    let problems = plan["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("query 2 would be refused")),
        "{plan}"
    );
    assert_eq!(plan["queries"][0]["refused"], Value::Null, "{plan}");
    assert_eq!(plan["datasets"][0]["total"], 60.0, "{plan}");
    assert_eq!(plan["datasets"][0]["per_job_cap"], 50.0, "{plan}");
    // Nothing was charged or submitted.
    assert_eq!(spent(&b), 0.0);
    let (_, jobs) = http(b.url(), "GET", "/v1/jobs", Some(&b.analyst), None, b"");
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
    // A job that touches a dataset it did not declare is refused by its plan, at no cost.
    let undeclared = body("health_raw", "epsilon=0.4", &wasm);
    let (status, plan) = post(&b, "/v1/plan", &b.analyst, &undeclared);
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["queries"].as_array().unwrap().len(), 0, "{plan}");
    let text = plan["problems"][0].as_str().unwrap();
    assert!(
        text.contains("not among the datasets this job declared"),
        "{plan}"
    );
    assert_eq!(spent(&b), 0.0);
    // The real run of the over-cap job does what the plan said: its first query is charged,
    // its second refused, and the job fails with nothing released.
    let (status, v) = post(&b, "/v1/jobs", &b.analyst, &over);
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    b.client(&b.analyst).follow(&id, |_, _| {}).unwrap();
    let (_, job) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(spent(&b), 30.0);
    b.stop();
}

#[test]
fn a_reviewer_sees_the_plan_of_a_pending_job() {
    let mut b = TestBroker::start("plan-review", |t| t);
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    let (status, v) = post(
        &b,
        "/v1/jobs",
        &b.tourism,
        &body("tourism_trips", "epsilon=0.5", &wasm),
    );
    assert_eq!(
        (status, v["state"].as_str()),
        (202, Some("pending_review")),
        "{v}"
    );
    let id = v["id"].as_str().unwrap();
    let path = format!("/v1/jobs/{id}/plan");
    let (status, plan) = http(b.url(), "GET", &path, Some(&b.reviewer), None, b"");
    assert_eq!(status, 200, "{plan}");
    assert!(!plan["queries"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(plan["problems"], json!([]), "{plan}");
    assert_eq!(plan["outcome"]["state"], "completed", "{plan}");
    // The reviewer can fetch the exact bytes to rebuild and compare.
    let bytes = b
        .client(&b.reviewer)
        .get_bytes(&format!("/v1/jobs/{id}/wasm"))
        .unwrap();
    assert!(bytes == wasm, "the wasm that runs is the wasm submitted");
    // Another operator may not see it (the same answer as for a job that does not exist).
    let (status, v) = http(b.url(), "GET", &path, Some(&b.analyst), None, b"");
    assert!(status == 403 || status == 404, "{status} {v}");
    // Planning charged nothing: the job is still pending and its operator's ledger is empty.
    let (_, budget) = http(b.url(), "GET", "/v1/budget", Some(&b.tourism), None, b"");
    for d in budget["budgets"].as_array().unwrap() {
        assert_eq!(d["spent_this_period"], 0.0, "{budget}");
    }
    b.stop();
}

#[test]
fn a_plan_does_not_wait_out_response_time_padding() {
    // Real answers on health_visits are padded to 10 s; a plan's mock answers are about no one
    // and come at once (with padding, two runs of two queries would take 40 s).
    let dir = crate::temp_dir("plan-padding");
    let pdir = crate::write_policy(&dir, |p| {
        p.replacen(
            "max_rows_per_unit = 5\n",
            "max_rows_per_unit = 5\nresponse_time_bucket_ms = 10000\n",
            1,
        )
    });
    let policy = sluice_policy::load(&pdir).unwrap();
    let s = sluice_runtime::Sandbox::new(sluice_runtime::SandboxConfig::new(
        policy,
        crate::data_root(),
        std::sync::Arc::new(sluice_runtime::InMemoryAccountant::new()),
    ))
    .unwrap();
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let mut req = JobRequest::new(op("analyst"), "j", &wasm, "epsilon=0.3&min_age=18");
    req.datasets = Some(vec!["health_visits".parse().unwrap()]);
    let started = std::time::Instant::now();
    let plan = s.plan_job(&req).expect("the plan runs");
    assert!(plan.would_complete(), "{plan:?}");
    assert_eq!(plan.queries.len(), 2);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_risk_report_is_made_once_before_review_and_the_approval_names_it() {
    let mut b = TestBroker::start("risk", |t| t);
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    let submit = |params: &str| {
        let (status, v) = post(
            &b,
            "/v1/jobs",
            &b.tourism,
            &body("tourism_trips", params, &wasm),
        );
        assert_eq!(
            (status, v["state"].as_str()),
            (202, Some("pending_review")),
            "{v}"
        );
        v["id"].as_str().unwrap().to_string()
    };
    let risk = |id: &str| {
        let (status, r) = http(
            b.url(),
            "GET",
            &format!("/v1/jobs/{id}/risk"),
            Some(&b.reviewer),
            None,
            b"",
        );
        assert_eq!(status, 200, "{r}");
        r
    };
    let first = submit("epsilon=1");
    let r = risk(&first);
    assert_eq!(r["level"], "medium", "{r}");
    assert_eq!(r["past_approvals_of_build"], 0, "{r}");
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no reviewer has approved this build before"),
        "{r}"
    );
    let sha = r["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    // Made once: what the reviewer read is what the approval records.
    assert_eq!(risk(&first)["sha256"], sha.as_str());
    let (status, v) = post(
        &b,
        &format!("/v1/reviews/{first}/approve"),
        &b.reviewer,
        br#"{"reason":"read the risk report"}"#,
    );
    assert_eq!(status, 200, "{v}");
    let (_, audit) = http(
        b.url(),
        "GET",
        &format!("/v1/audit?job={first}"),
        Some(&b.reviewer),
        None,
        b"",
    );
    let approved = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "review.approved")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(
        approved["detail"]["risk_report"],
        json!({"level": "medium", "sha256": sha}),
        "{approved}"
    );
    // The receipt names it too, signed.
    b.client(&b.tourism).follow(&first, |_, _| {}).unwrap();
    let (status, receipt) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{first}/receipt"),
        Some(&b.tourism),
        None,
        b"",
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["risk_report_sha256"], sha.as_str(), "{receipt}");
    // The same build again, within its caps: approved before, nothing stands out.
    let second = submit("epsilon=1");
    let r = risk(&second);
    assert_eq!(
        (r["level"].as_str(), r["past_approvals_of_build"].as_i64()),
        (Some("low"), Some(1)),
        "{r}"
    );
    // What every operator spent on the dataset: the first job's charge, over 30 days (the test
    // policy sets no dataset-wide cap on it).
    assert_eq!(
        r["datasets"][0]["spent_by_all_operators"], receipt["epsilon"],
        "{r}"
    );
    assert_eq!(r["datasets"][0]["period_days"], 30.0, "{r}");
    // Over its per-job cap (5): the plan's problem makes it high.
    let third = submit("epsilon=10");
    let r = risk(&third);
    assert_eq!(r["level"], "high", "{r}");
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("the plan finds a problem"),
        "{r}"
    );
    // Another operator may not read it.
    let (status, _) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{third}/risk"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(status, 404);
    b.stop();
}
