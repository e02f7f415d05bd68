//! The broker's HTTP API end to end: submit, review, events, results, receipts, budgets,
//! suspension and policy reload; the authorization matrix; malformed requests.

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_broker::client::Submission;
use sluice_broker::keys::{Receipt, public_key};
use sluice_broker::store::Role;
use std::time::Duration;

use crate::{TestBroker, guest, http};

/// Method, path, content type, body, and which of [operator A, operator B, reviewer, admin] may
/// use it.
type Endpoint<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, [bool; 4]);

/// Name, method, path, token, content type, body, expected status.
type BadCase<'a> = (
    &'a str,
    &'a str,
    String,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    u16,
);

fn b64(wasm: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(wasm)
}

fn submit_json(datasets: &[&str], wasm: &[u8], params: &str) -> Vec<u8> {
    json!({
        "purpose": "tests",
        "params": params,
        "datasets": datasets,
        "wasm_base64": b64(wasm),
    })
    .to_string()
    .into_bytes()
}

/// Follows a job to its end and returns the event kinds seen.
fn follow(b: &TestBroker, token: &str, id: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    b.client(token)
        .follow(id, |k, _| kinds.push(k.to_string()))
        .expect("event stream");
    kinds
}

#[test]
fn a_job_goes_from_submission_to_a_verified_receipt_over_http() {
    let mut b = TestBroker::start("e2e", |p| p);
    let c = b.client(&b.analyst);
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let r = c
        .submit(&Submission {
            wasm: &wasm,
            purpose: "district planning",
            params: "epsilon=0.4&min_age=18",
            datasets: &["health_visits".into()],
            max_epsilon: None,
            scenario: None,
        })
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["state"], "queued");
    let kinds = follow(&b, &b.analyst, &id);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("queued"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"running".to_string()), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| *k == "query").count() >= 1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("released"),
        "{kinds:?}"
    );

    let job = c.get_json(&format!("/v1/jobs/{id}")).unwrap();
    assert_eq!(job["state"], "succeeded");
    let report = c.get_text(&format!("/v1/jobs/{id}/result")).unwrap();
    let csv = c
        .get_text(&format!("/v1/jobs/{id}/result?format=csv"))
        .unwrap();
    let receipt: Receipt =
        serde_json::from_str(&c.get_text(&format!("/v1/jobs/{id}/receipt")).unwrap()).unwrap();
    let key = public_key(&b.public_key).unwrap();
    receipt.verify(&key, report.as_bytes()).unwrap();
    receipt.verify(&key, csv.as_bytes()).unwrap();
    assert!(receipt.verify(&key, b"{\"forged\": 1}").is_err());
    assert_eq!(receipt.job, id);
    assert!((receipt.epsilon - job["epsilon_spent"].as_f64().unwrap()).abs() < 1e-9);
    assert!(
        (receipt.epsilon - 0.8).abs() < 1e-9,
        "two queries of ε 0.4: {}",
        receipt.epsilon
    );
    assert_eq!(receipt.datasets.len(), 1);

    // The budget endpoint shows the spend.
    let budget = c.get_json("/v1/budget").unwrap();
    let hv = budget["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "health_visits")
        .unwrap()
        .clone();
    assert!((hv["spent_this_period"].as_f64().unwrap() - receipt.epsilon).abs() < 1e-9);

    // An estimate over HTTP costs nothing.
    let e = c
        .post_json(
            "/v1/estimate",
            &json!({"sql": "SELECT COUNT(*) AS n FROM health_visits", "accuracy": 100.0}),
        )
        .unwrap();
    assert!(e["epsilon"].as_f64().unwrap() > 0.0);
    assert!(e["accuracy"][0][1].as_f64().unwrap() <= 100.0);
    let after = c.get_json("/v1/budget").unwrap();
    assert_eq!(after["budgets"], budget["budgets"], "an estimate is free");
    // It says how the cost compares with the grant: within, or above and by how much.
    assert_eq!(e["budget"]["unit"], "epsilon", "{e}");
    assert_eq!(e["budget"]["over_per_job"], 0.0, "{e}");
    let big = c
        .post_json(
            "/v1/estimate",
            &json!({"sql": "SELECT COUNT(*) AS n FROM health_visits", "epsilon": 60.0}),
        )
        .unwrap();
    assert_eq!(big["budget"]["per_job"], 50.0, "{big}");
    assert!(
        (big["budget"]["over_per_job"].as_f64().unwrap() - 10.0).abs() < 1e-9,
        "{big}"
    );

    // The audit log holds the submission, the queries and the release, and verifies.
    let audit = b
        .client(&b.reviewer)
        .get_json(&format!("/v1/audit?job={id}"))
        .unwrap();
    let kinds: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"job.submitted"));
    assert!(kinds.contains(&"query"));
    assert_eq!(kinds.last(), Some(&"job.released"));
    b.stop();
    let conn = sluice_broker::store::Store::open_conn_readonly(&b.dir).unwrap();
    let v = sluice_broker::audit::verify(
        &conn,
        &key,
        Some(&sluice_broker::store::checkpoint_path(&b.dir)),
    )
    .unwrap()
    .expect("the log verifies");
    assert_eq!(
        v.last_checkpoint,
        Some(v.entries),
        "shutdown checkpoints the head"
    );
}

#[test]
fn review_gates_jobs_and_suspension_and_reload_take_effect() {
    let b = TestBroker::start("review", |p| p);
    let tourism = b.client(&b.tourism);
    let reviewer = b.client(&b.reviewer);
    let admin = b.client(&b.admin);
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    let sub = |params: &str| {
        let r = tourism
            .submit(&Submission {
                wasm: &wasm,
                purpose: "seasonal spend",
                params,
                datasets: &["tourism_trips".into()],
                max_epsilon: Some(2.0),
                scenario: None,
            })
            .unwrap();
        assert_eq!(r["state"], "pending_review");
        r["id"].as_str().unwrap().to_string()
    };
    let (keep, drop_) = (sub("epsilon=1.0"), sub("epsilon=1.0"));
    let pending = reviewer.get_json("/v1/reviews").unwrap();
    let listed: Vec<&str> = pending["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&keep.as_str()) && listed.contains(&drop_.as_str()));
    assert_eq!(pending["pending"][0]["max_epsilon"], 2.0);
    reviewer
        .post_json(
            &format!("/v1/reviews/{drop_}/reject"),
            &json!({"reason": "purpose too broad"}),
        )
        .unwrap();
    reviewer
        .post_json(
            &format!("/v1/reviews/{keep}/approve"),
            &json!({"reason": "ok"}),
        )
        .unwrap();
    let kinds = follow(&b, &b.tourism, &keep);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("released"),
        "{kinds:?}"
    );
    let rejected = tourism.get_json(&format!("/v1/jobs/{drop_}")).unwrap();
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["review_reason"], "purpose too broad");
    assert_eq!(rejected["epsilon_spent"], 0.0);
    // A decided job cannot be decided again.
    let (status, body) = http(
        b.url(),
        "POST",
        &format!("/v1/reviews/{drop_}/approve"),
        Some(&b.reviewer),
        Some("application/json"),
        br#"{"reason":"changed my mind"}"#,
    );
    assert_eq!(status, 409, "{body}");

    // Suspension stops new submissions at once; resume restores them.
    admin
        .post_json(
            "/v1/admin/operators/analyst/suspend",
            &json!({"reason": "incident 42"}),
        )
        .unwrap();
    let hostile = guest(env!("GUEST_HOSTILE"));
    let body = submit_json(&["health_visits"], &hostile, "big-report-bytes:10");
    let (status, err) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        &body,
    );
    assert_eq!(status, 403, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
    admin
        .post_json("/v1/admin/operators/analyst/resume", &json!({}))
        .unwrap();
    let (status, ok) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        &body,
    );
    assert_eq!(status, 202, "{ok}");

    // A bad policy never replaces a good one.
    let file = b.policy_dir.join("test.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        good.replace("privacy_unit = \"person_id\"", "privacy_unit = 7"),
    )
    .unwrap();
    let (status, err) = http(
        b.url(),
        "POST",
        "/v1/admin/policy/reload",
        Some(&b.admin),
        None,
        b"",
    );
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "invalid_policy");
    let (status, _) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        &body,
    );
    assert_eq!(status, 202, "the old policy stays in force");
    std::fs::write(&file, good).unwrap();
    let (status, _) = http(
        b.url(),
        "POST",
        "/v1/admin/policy/reload",
        Some(&b.admin),
        None,
        b"",
    );
    assert_eq!(status, 200);

    let usage = admin.get_json("/v1/admin/usage").unwrap();
    let row = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["dataset"] == "tourism_trips")
        .cloned()
        .expect("usage of tourism_trips");
    assert_eq!(row["holder"], "city-culture-tourism-bureau");
    assert!(row["epsilon"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_role_reaches_only_its_endpoints_and_every_denial_is_audited() {
    let mut b = TestBroker::start("authz", |p| p);
    let hostile = guest(env!("GUEST_HOSTILE"));
    let body = submit_json(&["health_visits"], &hostile, "big-report-bytes:10");
    let (s, r) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        &body,
    );
    assert_eq!(s, 202, "{r}");
    let job = r["id"].as_str().unwrap().to_string();
    follow(&b, &b.analyst, &job);
    let missing = "job-0123456789abcdef";

    // (principal, token)
    let who: Vec<(&str, Option<String>)> = vec![
        ("anonymous", None),
        ("bad token", Some("sluice_not-a-real-token".into())),
        ("operator A", Some(b.analyst.clone())),
        ("operator B", Some(b.tourism.clone())),
        ("reviewer", Some(b.reviewer.clone())),
        ("admin", Some(b.admin.clone())),
    ];
    // (method, path, content type, body, which of [A, B, reviewer, admin] may use it)
    let reason = br#"{"reason":"r"}"#.to_vec();
    let endpoints: Vec<Endpoint> = vec![
        (
            "POST",
            "/v1/jobs".into(),
            Some("application/json"),
            body.clone(),
            [true, false, false, false],
        ),
        (
            "GET",
            "/v1/jobs".into(),
            None,
            vec![],
            [true, true, true, true],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}"),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}/result"),
            None,
            vec![],
            [true, false, false, false],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}/receipt"),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}/events"),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}/wasm"),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}/plan"),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "GET",
            format!("/v1/jobs/{job}/risk"),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "POST",
            format!("/v1/jobs/{job}/cancel"),
            None,
            vec![],
            [true, false, false, false],
        ),
        (
            "GET",
            "/v1/datasets".into(),
            None,
            vec![],
            [true, true, true, true],
        ),
        (
            "GET",
            "/v1/datasets/health_visits".into(),
            None,
            vec![],
            [true, false, true, true],
        ),
        (
            "GET",
            "/v1/datasets/tourism_trips".into(),
            None,
            vec![],
            [false, true, true, true],
        ),
        (
            "GET",
            "/v1/budget".into(),
            None,
            vec![],
            [true, true, false, false],
        ),
        (
            "POST",
            "/v1/estimate".into(),
            Some("application/json"),
            br#"{"sql":"SELECT COUNT(*) FROM health_visits","epsilon":1.0}"#.to_vec(),
            [true, false, false, false],
        ),
        (
            "GET",
            "/v1/reviews".into(),
            None,
            vec![],
            [false, false, true, false],
        ),
        (
            "POST",
            format!("/v1/reviews/{missing}/approve"),
            Some("application/json"),
            reason.clone(),
            [false, false, true, false],
        ),
        (
            "POST",
            format!("/v1/reviews/{missing}/reject"),
            Some("application/json"),
            reason.clone(),
            [false, false, true, false],
        ),
        (
            "GET",
            "/v1/audit".into(),
            None,
            vec![],
            [false, false, true, true],
        ),
        (
            "POST",
            "/v1/admin/policy/reload".into(),
            None,
            vec![],
            [false, false, false, true],
        ),
        (
            "POST",
            "/v1/admin/datasets/nothing/suspend".into(),
            None,
            vec![],
            [false, false, false, true],
        ),
        (
            "POST",
            "/v1/admin/datasets/nothing/resume".into(),
            None,
            vec![],
            [false, false, false, true],
        ),
        (
            "POST",
            "/v1/admin/tokens".into(),
            Some("application/json"),
            br#"{"role":"reviewer","principal":"matrix-made"}"#.to_vec(),
            [false, false, false, true],
        ),
        (
            "GET",
            "/v1/admin/usage".into(),
            None,
            vec![],
            [false, false, false, true],
        ),
        (
            "GET",
            "/v1/admin/suspensions".into(),
            None,
            vec![],
            [false, false, false, true],
        ),
        (
            "GET",
            "/metrics".into(),
            None,
            vec![],
            [false, false, false, true],
        ),
    ];
    // Each denial is an entry of its own or counted in an `access.denied.repeated` entry
    // (written once the source's window has passed, or at shutdown).
    let state_dir = b.dir.clone();
    let count_denials = || -> i64 {
        let conn = sluice_broker::store::Store::open_conn_readonly(&state_dir).unwrap();
        conn.query_row(
            "SELECT COUNT(*) FILTER (WHERE kind = 'access.denied')
                  + COALESCE(SUM(json_extract(body, '$.detail.count'))
                             FILTER (WHERE kind = 'access.denied.repeated'), 0)
               FROM audit",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let before = count_denials();
    let mut denials = 0;
    let mut failures = Vec::new();
    for (method, path, ct, body, allowed) in &endpoints {
        for (i, (name, token)) in who.iter().enumerate() {
            let (status, resp) = http(b.url(), method, path, token.as_deref(), *ct, body);
            let may = i >= 2 && allowed[i - 2];
            // Someone else's job is answered as no job (404), and audited as the denial it is.
            let hidden = status == 404 && path.starts_with(&format!("/v1/jobs/{job}"));
            let denied = status == 401 || status == 403 || hidden;
            if denied {
                denials += 1;
                assert!(
                    resp["error"]["code"].is_string(),
                    "{method} {path} as {name}: {resp}"
                );
            }
            let expected_status_ok = if may {
                !denied && status < 500
            } else if i < 2 {
                status == 401
            } else {
                status == 403 || hidden
            };
            if !expected_status_ok {
                failures.push(format!("{method} {path} as {name}: {status} {resp}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix failures:\n{}",
        failures.join("\n")
    );
    let (status, _) = http(b.url(), "GET", "/healthz", None, None, b"");
    assert_eq!(status, 200, "health checks need no token");

    // A revoked token stops working at once, even though another process revoked it.
    let other = sluice_broker::store::Store::open(&b.dir).unwrap();
    let id = other
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.principal == "tourism-lab")
        .unwrap()
        .id;
    other.revoke_token(&id, "test").unwrap();
    let (status, _) = http(b.url(), "GET", "/v1/jobs", Some(&b.tourism), None, b"");
    assert_eq!(status, 401);
    denials += 1;

    // Tokens expire: one valid for a second works, then is refused like an unknown one.
    let brief = other
        .create_token_valid_for(Role::Operator, "analyst", "test", Duration::from_secs(1))
        .unwrap();
    let (status, _) = http(b.url(), "GET", "/v1/jobs", Some(&brief), None, b"");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(1_100));
    let (status, _) = http(b.url(), "GET", "/v1/jobs", Some(&brief), None, b"");
    assert_eq!(status, 401, "an expired token is refused");
    denials += 1;
    assert!(
        other
            .create_token_valid_for(
                Role::Operator,
                "analyst",
                "test",
                Duration::from_secs(400 * 86_400)
            )
            .is_err(),
        "at most 366 days"
    );
    b.stop();
    assert_eq!(
        count_denials() - before,
        denials,
        "every 401/403 is in the audit log"
    );
}

#[test]
fn an_admin_makes_tokens_over_the_api_and_they_work_at_once() {
    let mut b = TestBroker::start("tokens", |p| p);
    let post = |body: &str| {
        http(
            b.url(),
            "POST",
            "/v1/admin/tokens",
            Some(&b.admin),
            Some("application/json"),
            body.as_bytes(),
        )
    };
    let (status, v) = post(r#"{"role":"operator","principal":"analyst","valid_for_days":7}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["role"].as_str(), v["valid_for_days"].as_u64()),
        (Some("operator"), Some(7))
    );
    assert!(v["warning"].is_null(), "a granted operator: {v}");
    let token = v["token"].as_str().unwrap();
    let (status, _) = http(b.url(), "GET", "/v1/budget", Some(token), None, b"");
    assert_eq!(status, 200, "the new token works");
    // A typo'd principal is made but warned about; a bad role or lifetime is refused.
    let (status, v) = post(r#"{"role":"operator","principal":"analsyt"}"#);
    assert_eq!(status, 200, "{v}");
    assert!(
        v["warning"]
            .as_str()
            .unwrap()
            .contains("no grant names operator `analsyt`"),
        "{v}"
    );
    let (status, v) = post(r#"{"role":"superuser","principal":"x"}"#);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_name")),
        "{v}"
    );
    let (status, _) = post(r#"{"role":"reviewer","principal":"x","valid_for_days":400}"#);
    assert_eq!(status, 400);
    // Every token made is an audit entry naming the admin who made it.
    let (_, audit) = http(
        b.url(),
        "GET",
        "/v1/audit?limit=1000",
        Some(&b.reviewer),
        None,
        b"",
    );
    let made = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "token.created" && e["actor"] == "root")
        .count();
    assert_eq!(made, 2, "{audit}");
    b.stop();
}

#[test]
fn malformed_requests_get_clear_4xx_answers_and_the_broker_carries_on() {
    let b = TestBroker::start("bad", |p| p);
    let t = Some(b.analyst.as_str());
    let hostile = guest(env!("GUEST_HOSTILE"));
    let json_ct = Some("application/json");
    let huge_params = submit_json(&["health_visits"], &hostile, &"p".repeat(100 << 10));
    // Past the submit body cap (the largest job as base64 JSON), and a raw job past the wasm cap.
    let oversized = vec![b'x'; 54 << 20];
    let too_big_wasm = vec![b'x'; (40 << 20) + 1];
    let cases: Vec<BadCase> = vec![
        ("malformed JSON", "POST", "/v1/jobs".into(), t, json_ct, br#"{"purpose": "#.to_vec(), 400),
        ("unknown field", "POST", "/v1/jobs".into(), t, json_ct, br#"{"purpose":"p","datasets":["health_visits"],"wasm_base64":"","extra":1}"#.to_vec(), 400),
        ("wrong content type", "POST", "/v1/jobs".into(), t, Some("text/plain"), b"hello".to_vec(), 415),
        ("no content type", "POST", "/v1/jobs".into(), t, None, b"hello".to_vec(), 415),
        ("oversized body", "POST", "/v1/jobs".into(), t, Some("application/wasm"), oversized, 413),
        ("oversized wasm", "POST", "/v1/jobs?purpose=p&datasets=health_visits".into(), t, Some("application/wasm"), too_big_wasm, 413),
        ("invalid wasm", "POST", "/v1/jobs".into(), t, json_ct, submit_json(&["health_visits"], b"not wasm at all", ""), 400),
        ("invalid wasm, raw", "POST", "/v1/jobs?purpose=p&datasets=health_visits".into(), t, Some("application/wasm"), b"\0asm\x01\0\0\0garbage".to_vec(), 400),
        ("bad base64", "POST", "/v1/jobs".into(), t, json_ct, br#"{"purpose":"p","datasets":["health_visits"],"wasm_base64":"***"}"#.to_vec(), 400),
        ("huge parameters", "POST", "/v1/jobs".into(), t, json_ct, huge_params, 413),
        ("no purpose", "POST", "/v1/jobs".into(), t, json_ct, json!({"purpose":" ","datasets":["health_visits"],"wasm_base64":b64(&hostile)}).to_string().into_bytes(), 400),
        ("no datasets", "POST", "/v1/jobs".into(), t, json_ct, submit_json(&[], &hostile, ""), 400),
        ("ungranted dataset", "POST", "/v1/jobs".into(), t, json_ct, submit_json(&["tourism_trips"], &hostile, ""), 403),
        ("negative epsilon", "POST", "/v1/jobs".into(), t, json_ct, json!({"purpose":"p","datasets":["health_visits"],"max_epsilon":-1,"wasm_base64":b64(&hostile)}).to_string().into_bytes(), 400),
        ("unknown job id", "GET", "/v1/jobs/job-0000000000000000".into(), t, None, vec![], 404),
        ("malformed job id", "GET", "/v1/jobs/..%2F..%2Fetc".into(), t, None, vec![], 404),
        ("unknown job result", "GET", "/v1/jobs/job-0000000000000000/result".into(), t, None, vec![], 404),
        ("bad result format", "GET", "/v1/jobs/job-0000000000000000/result?format=xml".into(), t, None, vec![], 404),
        ("bad audit paging", "GET", "/v1/audit?after=abc".into(), Some(b.reviewer.as_str()), None, vec![], 400),
        ("review without reason", "POST", "/v1/reviews/job-0000000000000000/approve".into(), Some(b.reviewer.as_str()), json_ct, b"{}".to_vec(), 400),
        ("unknown endpoint", "GET", "/v2/everything".into(), t, None, vec![], 404),
        ("wrong method", "DELETE", "/v1/jobs".into(), t, None, vec![], 405),
        ("preflight", "OPTIONS", "/v1/jobs".into(), None, None, vec![], 405),
    ];
    let mut failures = Vec::new();
    for (name, method, path, token, ct, body, want) in cases {
        let (status, resp) = http(b.url(), method, &path, token, ct, &body);
        if status != want {
            failures.push(format!("{name}: expected {want}, got {status} {resp}"));
        } else if resp["error"]["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{name}: no error message in {resp}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Still healthy, and a good job still runs.
    let (status, _) = http(b.url(), "GET", "/healthz", None, None, b"");
    assert_eq!(status, 200);
    let (status, r) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        t,
        json_ct,
        &submit_json(&["health_visits"], &hostile, "big-report-bytes:10"),
    );
    assert_eq!(status, 202, "{r}");
    let kinds = follow(&b, &b.analyst, r["id"].as_str().unwrap());
    assert_eq!(kinds.last().map(String::as_str), Some("released"));
}

#[test]
fn a_hostile_job_fails_with_its_error_and_the_queue_is_bounded() {
    let b = TestBroker::start("queue", |p| p);
    let hostile = guest(env!("GUEST_HOSTILE"));
    let (status, r) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        &submit_json(&["health_visits"], &hostile, "memory"),
    );
    assert_eq!(status, 202, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let kinds = follow(&b, &b.analyst, &id);
    assert_eq!(kinds.last().map(String::as_str), Some("failed"));
    let job: Value = b
        .client(&b.analyst)
        .get_json(&format!("/v1/jobs/{id}"))
        .unwrap();
    assert!(
        job["error"].as_str().unwrap().contains("memory limit"),
        "{job}"
    );
    let (status, _) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/result"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(status, 409, "a failed job has no report");

    // Fill the queue with slow jobs: beyond 64 queued, submissions get 429 with Retry-After.
    let slow = submit_json(&["health_visits"], &hostile, "loop");
    let mut saw_429 = false;
    for _ in 0..80 {
        let (status, r) = http(
            b.url(),
            "POST",
            "/v1/jobs",
            Some(&b.analyst),
            Some("application/json"),
            &slow,
        );
        if status == 429 {
            assert_eq!(r["error"]["code"], "queue_full");
            saw_429 = true;
            break;
        }
        assert_eq!(status, 202, "{r}");
    }
    assert!(saw_429, "the queue is bounded");
    // Cancel what is still queued so the test ends quickly.
    let jobs = b.client(&b.analyst).get_json("/v1/jobs").unwrap();
    for j in jobs["jobs"].as_array().unwrap() {
        if j["state"] == "queued" {
            let id = j["id"].as_str().unwrap();
            let (status, _) = http(
                b.url(),
                "POST",
                &format!("/v1/jobs/{id}/cancel"),
                Some(&b.analyst),
                None,
                b"",
            );
            assert!(status == 200 || status == 409);
        }
    }
}

#[test]
fn shutdown_ends_open_event_streams_and_signs_the_head() {
    let mut b = TestBroker::start("shutdown", |p| p);
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    let r = b
        .client(&b.tourism)
        .submit(&Submission {
            wasm: &wasm,
            purpose: "waits for a review that never comes",
            params: "",
            datasets: &["tourism_trips".into()],
            max_epsilon: None,
            scenario: None,
        })
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let c = b.client(&b.tourism);
    let follower = std::thread::spawn(move || {
        let mut kinds = Vec::new();
        let _ = c.follow(&id, |k, _| kinds.push(k.to_string()));
        kinds
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    b.stop();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(follower.join().unwrap(), vec!["pending_review".to_string()]);
}

#[test]
fn the_datasets_endpoint_lists_public_lookups_with_their_values() {
    std::fs::write(
        crate::data_root().join("data/district_region_api.csv"),
        "district,region\nGuangling,Central\nHanjiang,Central\nGaoyou,North\n",
    )
    .unwrap();
    let b = TestBroker::start("lookups", |p| {
        p + "\n[lookup.district_region]\nsource = \"data/district_region_api.csv\"\nkey = \"district\"\n"
    });
    let (status, body) = http(b.url(), "GET", "/v1/datasets", Some(&b.analyst), None, b"");
    assert_eq!(status, 200, "{body}");
    let lookup = &body["lookups"][0];
    assert_eq!(lookup["name"], "district_region");
    assert_eq!(lookup["key"], "district");
    assert_eq!(lookup["columns"]["region"], json!(["Central", "North"]));
}

#[test]
fn a_jobs_log_and_its_panic_message_reach_its_operator_through_the_broker() {
    let mut b = TestBroker::start("job-log", |t| t);
    let hostile = guest(env!("GUEST_HOSTILE"));
    let submit = |params: &str| -> String {
        let (status, v) = http(
            b.url(),
            "POST",
            "/v1/jobs",
            Some(&b.analyst),
            Some("application/json"),
            &submit_json(&["health_visits"], &hostile, params),
        );
        assert_eq!(status, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    // A panic: the job fails, and its log says why (the SDK logs the panic message first).
    let id = submit("panic");
    let kinds = follow(&b, &b.analyst, &id);
    assert_eq!(
        kinds.iter().rev().take(2).collect::<Vec<_>>(),
        ["failed", "log"],
        "{kinds:?}"
    );
    let (status, log) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/log"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(status, 200, "{log}");
    let lines = log["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l["level"] == "error"
            && l["message"]
                .as_str()
                .unwrap()
                .contains("hostile job panicked on purpose")),
        "{log}"
    );
    // The staff read it too; another operator does not.
    let (status, _) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/log"),
        Some(&b.reviewer),
        None,
        b"",
    );
    assert_eq!(status, 200);
    let (status, v) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/log"),
        Some(&b.tourism),
        None,
        b"",
    );
    assert_eq!(status, 404, "the same answer as for no job: {v}");
    // A flood is capped; what the cap dropped is counted.
    let id = submit("log-spam");
    follow(&b, &b.analyst, &id);
    let (_, log) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/log"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert!(log["dropped"].as_u64().unwrap() > 0, "{}", log["dropped"]);
    assert_eq!(
        log["lines"][0]["message"],
        "line 0 ".to_string() + &"y".repeat(100)
    );
    b.stop();
}

#[test]
fn a_refusal_decided_before_the_body_is_read_still_reaches_the_client() {
    // A reviewer may not submit: the broker answers 403 before reading the 8 MiB body and
    // closes; the answer must still be readable (the test client reads it as curl does).
    let mut b = TestBroker::start("early-refusal", |t| t);
    let body = vec![b'x'; 8 << 20];
    let (status, v) = http(
        b.url(),
        "POST",
        "/v1/jobs?purpose=p&datasets=health_visits",
        Some(&b.reviewer),
        Some("application/wasm"),
        &body,
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    b.stop();
}

#[test]
fn the_client_submits_the_component_as_is_and_long_parameters_as_json() {
    let b = TestBroker::start("client-forms", |p| p);
    let c = b.client(&b.analyst);
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    // Characters a query string must escape; then parameters too long for one (JSON).
    let awkward = "epsilon=0.1&note=a+b c#d?e%f/市区";
    let long = format!("epsilon=0.1&pad={}", "x".repeat(20 << 10));
    for (purpose, params) in [
        ("planning & budgets: 100% of #districts?", awkward),
        ("long", &long),
    ] {
        let r = c
            .submit(&Submission {
                wasm: &wasm,
                purpose,
                params,
                datasets: &["health_visits".into()],
                max_epsilon: Some(0.5),
                scenario: None,
            })
            .unwrap();
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["wasm_sha256"], sluice_broker::keys::sha256_hex(&wasm));
        let job = c.get_json(&format!("/v1/jobs/{id}")).unwrap();
        assert_eq!(
            (&job["purpose"], &job["params"], &job["max_epsilon"]),
            (&json!(purpose), &json!(params), &json!(0.5)),
            "the declarations arrive as written"
        );
    }
}
