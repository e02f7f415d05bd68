//! Golden files for what people read: query refusals, mechanism descriptions and the HTTP API's
//! error bodies, pinned before the engine and broker are reshaped. `SLUICE_BLESS=1` rewrites
//! them (`tests/golden/*.expected`); the inputs are `tests/golden/*.sql` and the list below.

use sluice_runtime::privacy::Budget;

use crate::{TestBroker, asker, golden, golden_cases, http, sandbox};

#[test]
fn query_refusals_read_as_before() {
    let (s, _) = sandbox();
    let mut out = String::new();
    for (operator, sql) in golden_cases("refusals.sql") {
        let outcome = match s.estimate(
            asker(&operator, "golden"),
            sql.clone(),
            Budget::Epsilon(0.5),
        ) {
            Ok(e) => format!(
                "estimated: ε {} ρ {} δ {} in {} release(s)",
                e.epsilon, e.rho, e.delta, e.releases
            ),
            Err(e) => format!("refused: {e}"),
        };
        out.push_str(&format!("-- {operator}: {sql}\n{outcome}\n\n"));
    }
    golden("refusals.expected", &out);
}

#[test]
fn mechanism_descriptions_read_as_before() {
    let (s, _) = sandbox();
    let mut out = String::new();
    for (i, (epsilon, sql)) in golden_cases("descriptions.sql").into_iter().enumerate() {
        let epsilon: f64 = epsilon.parse().expect("an ε");
        let who = asker("analyst", &format!("golden-{i}"));
        let answer = s.block_on(s.engine().query(&who, &sql, epsilon));
        let text = match answer {
            Ok((table, _)) => format!(
                "columns: {}\ncost: ε {} ρ {} δ {}\n{}",
                table.columns.join(", "),
                table.cost.epsilon,
                table.cost.rho,
                table.cost.delta,
                table.mechanism
            ),
            Err(e) => format!("refused: {e}"),
        };
        out.push_str(&format!("-- ε {epsilon}: {sql}\n{text}\n\n"));
    }
    golden("descriptions.expected", &out);
}

#[test]
fn api_error_bodies_read_as_before() {
    let mut b = TestBroker::start("golden-api", |p| p);
    let (analyst, tourism, reviewer, admin) = (
        Some(b.analyst.clone()),
        Some(b.tourism.clone()),
        Some(b.reviewer.clone()),
        Some(b.admin.clone()),
    );
    let json = Some("application/json");
    let wasm = Some("application/wasm");
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a Option<String>,
        Option<&'a str>,
        &'a [u8],
    );
    let no_token: Option<String> = None;
    let bad_token = Some("not-a-token".to_string());
    let cases: Vec<Case> = vec![
        ("GET", "/v1/jobs", &no_token, None, b""),
        ("GET", "/v1/jobs", &bad_token, None, b""),
        ("GET", "/v1/nothing", &analyst, None, b""),
        ("GET", "/v1/jobs/job-0000000000000000", &analyst, None, b""),
        ("GET", "/v1/jobs/not-a-job", &analyst, None, b""),
        (
            "GET",
            "/v1/jobs/job-0000000000000000/result?format=xml",
            &analyst,
            None,
            b"",
        ),
        ("POST", "/v1/jobs", &reviewer, json, b"{}"),
        ("POST", "/v1/jobs", &analyst, Some("text/plain"), b"x"),
        ("POST", "/v1/jobs", &analyst, json, b"{not json"),
        (
            "POST",
            "/v1/jobs",
            &analyst,
            json,
            br#"{"purpose":"p","datasets":["health_visits"],"wasm_base64":"***"}"#,
        ),
        (
            "POST",
            "/v1/jobs?purpose=&datasets=health_visits",
            &analyst,
            wasm,
            b"\0asm",
        ),
        ("POST", "/v1/jobs?purpose=p", &analyst, wasm, b"\0asm"),
        (
            "POST",
            "/v1/jobs?purpose=p&datasets=tourism_trips",
            &analyst,
            wasm,
            b"\0asm",
        ),
        (
            "POST",
            "/v1/jobs?purpose=p&datasets=health_visits&max_epsilon=-1",
            &analyst,
            wasm,
            b"\0asm",
        ),
        (
            "POST",
            "/v1/jobs?purpose=p&datasets=health_visits&max_epsilon=500",
            &analyst,
            wasm,
            b"\0asm",
        ),
        (
            "POST",
            "/v1/jobs?purpose=p&datasets=health_visits",
            &analyst,
            wasm,
            b"\0asm\x01\0\0\0\xff",
        ),
        (
            "POST",
            "/v1/jobs?purpose=p&datasets=health_visits&bogus=1",
            &analyst,
            wasm,
            b"\0asm",
        ),
        (
            "POST",
            "/v1/estimate",
            &analyst,
            json,
            br#"{"sql":"SELECT COUNT(*) FROM health_visits"}"#,
        ),
        (
            "POST",
            "/v1/estimate",
            &analyst,
            json,
            br#"{"sql":"SELECT name FROM health_visits","epsilon":1}"#,
        ),
        (
            "POST",
            "/v1/estimate",
            &tourism,
            json,
            br#"{"sql":"SELECT COUNT(*) FROM health_visits","epsilon":1}"#,
        ),
        (
            "POST",
            "/v1/estimate",
            &reviewer,
            json,
            br#"{"sql":"SELECT 1","epsilon":1}"#,
        ),
        ("GET", "/v1/budget", &admin, None, b""),
        ("GET", "/v1/datasets/tourism_trips", &analyst, None, b""),
        ("GET", "/v1/reviews", &analyst, None, b""),
        (
            "POST",
            "/v1/reviews/job-0000000000000000/maybe",
            &reviewer,
            json,
            br#"{"reason":"r"}"#,
        ),
        (
            "POST",
            "/v1/reviews/job-0000000000000000/approve",
            &reviewer,
            json,
            br#"{"reason":""}"#,
        ),
        (
            "POST",
            "/v1/reviews/job-0000000000000000/approve",
            &reviewer,
            json,
            br#"{"reason":"ok"}"#,
        ),
        ("GET", "/v1/audit?limit=x", &reviewer, None, b""),
        ("POST", "/v1/admin/policy/reload", &analyst, None, b""),
        ("POST", "/v1/admin/things/x/suspend", &admin, None, b""),
        ("POST", "/v1/admin/datasets/x/pause", &admin, None, b""),
        ("GET", "/metrics", &reviewer, None, b""),
    ];
    let mut out = String::new();
    for (method, path, token, content_type, body) in cases {
        let (status, resp) = http(b.url(), method, path, token.as_deref(), content_type, body);
        let who = match token {
            t if t == &analyst => "analyst",
            t if t == &tourism => "tourism-lab",
            t if t == &reviewer => "reviewer",
            t if t == &admin => "admin",
            t if t == &bad_token => "a bad token",
            _ => "no token",
        };
        out.push_str(&format!("{method} {path} as {who}\n{status} {resp}\n\n"));
    }
    b.stop();
    golden("api_errors.expected", &out);
}

#[test]
fn bounded_plans_read_as_before() {
    let (s, _) = sandbox();
    let mut out = String::new();
    for (operator, sql) in golden_cases("plans.sql") {
        let plan = s
            .block_on(s.engine().rewritten_plan(&asker(&operator, "golden"), &sql))
            .unwrap_or_else(|e| format!("refused: {e}"));
        out.push_str(&format!("-- {operator}: {sql}\n{plan}\n\n"));
    }
    golden("plans.expected", &out);
}
