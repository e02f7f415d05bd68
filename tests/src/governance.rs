//! Governance: the privacy promise is per dataset, whoever asks. A dataset-wide budget caps every
//! operator together; a repeat of a release is answered from the cache for any operator granted
//! the dataset (under the same release terms), at no charge; suspension stops cached answers too.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_broker::store::{Role, Store};
use sluice_runtime::{InMemoryAccountant, Sandbox, SandboxConfig};

use crate::{TestBroker, asker, data_root, guest, http, policy};

/// The test policy with a dataset-wide cap of ε 1.0 per 30 days on `health_visits`.
fn capped(text: String) -> String {
    text.replacen(
        "[dataset.health_visits]\n",
        "[dataset.health_visits]\nbudget = { epsilon_per_period = 1.0, period = \"30d\" }\n",
        1,
    )
}

/// Submits the hostile guest running one ε 0.1 query, as `token`; returns the job id.
fn submit(url: &str, token: &str, sql: &str) -> String {
    submit_params(url, token, &format!("sql:{sql}"))
}

/// Submits `wasm` with `params` on `dataset`, as `token`: the broker's status and answer.
fn post_job(url: &str, token: &str, dataset: &str, params: &str, wasm: &[u8]) -> (u16, Value) {
    let body = json!({
        "purpose": "tests: governance",
        "params": params,
        "datasets": [dataset],
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
    });
    http(
        url,
        "POST",
        "/v1/jobs",
        Some(token),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// Submits the hostile guest with `params` on `health_visits`, as `token`; returns the job id.
fn submit_params(url: &str, token: &str, params: &str) -> String {
    let hostile = guest(env!("GUEST_HOSTILE"));
    let (status, v) = post_job(url, token, "health_visits", params, &hostile);
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().expect("an id").to_string()
}

/// A token for the second operator of the test policy, `counter`.
fn counter_token(b: &TestBroker) -> String {
    Store::open(&b.dir)
        .and_then(|s| s.create_token(Role::Operator, "counter", "test"))
        .expect("a token for counter")
}

/// Follows a job to its end; returns its final state.
fn final_state(b: &TestBroker, token: &str, id: &str) -> String {
    b.client(token)
        .follow(id, |_, _| {})
        .expect("the event stream");
    let (status, v) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(token),
        None,
        b"",
    );
    assert_eq!(status, 200, "{v}");
    v["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn two_operators_under_concurrency_never_exceed_the_dataset_wide_cap() {
    let mut b = TestBroker::start("dataset-cap", capped);
    let counter = counter_token(&b);
    // 2 × 8 jobs of one ε 0.1 query each, all different (no cached answers): each operator's own
    // caps allow all of its jobs, the dataset's allows 10 queries in all.
    let threads: Vec<_> = [b.analyst.clone(), counter.clone()]
        .into_iter()
        .enumerate()
        .map(|(o, token)| {
            let url = b.url().to_string();
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| {
                        let sql = format!(
                            "SELECT COUNT(*) AS n FROM health_visits WHERE age > {}",
                            o * 10 + i
                        );
                        submit(&url, &token, &sql)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<(usize, String)> = threads
        .into_iter()
        .enumerate()
        .flat_map(|(o, t)| t.join().unwrap().into_iter().map(move |id| (o, id)))
        .collect();
    let tokens = [b.analyst.clone(), counter.clone()];
    let mut succeeded = [0usize; 2];
    for (o, id) in &ids {
        if final_state(&b, &tokens[*o], id) == "succeeded" {
            succeeded[*o] += 1;
        }
    }
    let usage = Store::open(&b.dir).unwrap().usage().unwrap();
    let total: f64 = usage
        .iter()
        .filter(|u| u.dataset == "health_visits")
        .map(|u| u.epsilon)
        .sum();
    assert!(total <= 1.0 + 1e-9, "charged ε {total} in all: {usage:?}");
    assert_eq!(succeeded[0] + succeeded[1], 10, "{succeeded:?}");
    assert!(succeeded[0] > 0 && succeeded[1] > 0, "{succeeded:?}");
    // Both operators see the dataset as spent, beside their own remaining.
    for token in &tokens {
        let (status, v) = http(b.url(), "GET", "/v1/budget", Some(token), None, b"");
        assert_eq!(status, 200, "{v}");
        let h = v["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["dataset"] == "health_visits")
            .expect("health_visits is granted")
            .clone();
        assert_eq!(h["dataset_cap_per_period"], 1.0, "{h}");
        assert!(
            h["dataset_remaining_this_period"].as_f64().unwrap() < 1e-9,
            "{h}"
        );
        assert!(h["available_this_period"].as_f64().unwrap() < 1e-9, "{h}");
        assert!(h["remaining_this_period"].as_f64().unwrap() > 0.5, "{h}");
    }
    // Holders watch the dataset as a whole in /metrics, ρ included.
    let (status, metrics) = http(b.url(), "GET", "/metrics", Some(&b.admin), None, b"");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let line = "sluice_dataset_charged_total{dataset=\"health_visits\",unit=\"epsilon\"} ";
    let charged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .unwrap_or_else(|| panic!("no per-dataset line in {metrics}"))
        .parse()
        .unwrap();
    assert!((charged - total).abs() < 1e-9, "{charged} vs {total}");
    assert!(metrics.contains("sluice_rho_charged_total 0"), "{metrics}");
    b.stop();
}

#[test]
fn a_repeat_by_another_operator_is_answered_from_the_cache_at_no_charge() {
    let accountant = Arc::new(InMemoryAccountant::new());
    let s = Sandbox::new(SandboxConfig::new(
        policy(),
        data_root(),
        accountant.clone(),
    ))
    .expect("the sandbox starts");
    let sql = "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district";
    let (first, r1) = s
        .block_on(s.engine().query(&asker("analyst", "a1"), sql, 0.5))
        .unwrap();
    let (again, r2) = s
        .block_on(s.engine().query(&asker("counter", "c1"), sql, 0.5))
        .unwrap();
    assert_eq!(first.rows, again.rows, "the same release, not a new one");
    assert_eq!((r1.cost.epsilon, r2.cost.epsilon), (0.5, 0.0));
    // A different amount is a different release, charged to whoever asks.
    let (_, r3) = s
        .block_on(s.engine().query(&asker("counter", "c1"), sql, 0.25))
        .unwrap();
    assert_eq!(r3.cost.epsilon, 0.25);
}

#[test]
fn a_job_suspended_while_it_runs_is_held_until_a_reviewer_releases_it() {
    use sluice_broker::keys::{Receipt, public_key};
    let mut b = TestBroker::start("held", |t| t);
    let id = submit_params(b.url(), &b.analyst, "until-refused");
    // The data holder suspends the dataset as soon as the job's first query is charged; the job
    // catches the refusal of its next query and returns a report built from earlier answers.
    let (url, admin) = (b.url().to_string(), b.admin.clone());
    let mut suspended = false;
    b.client(&b.analyst)
        .follow(&id, |kind, _| {
            if kind == "query" && !suspended {
                suspended = true;
                let (status, v) = http(
                    &url,
                    "POST",
                    "/v1/admin/datasets/health_visits/suspend",
                    Some(&admin),
                    Some("application/json"),
                    br#"{"reason":"incident drill"}"#,
                );
                assert_eq!(status, 200, "{v}");
            }
        })
        .expect("the event stream");
    assert!(suspended, "the job asked no query");
    let get = |path: &str, token: &str| http(b.url(), "GET", path, Some(token), None, b"");
    let (_, job) = get(&format!("/v1/jobs/{id}"), &b.analyst);
    assert_eq!(job["state"], "held", "{job}");
    for what in ["result", "receipt"] {
        let (status, v) = get(&format!("/v1/jobs/{id}/{what}"), &b.analyst);
        assert_eq!(status, 409, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("suspended, or its releases held, while it ran"),
            "{v}"
        );
    }
    let (_, queue) = get("/v1/reviews", &b.reviewer);
    assert_eq!(queue["held"][0]["id"], id.as_str(), "{queue}");
    // Not while the suspension is in force.
    let decide = |decision: &str| {
        http(
            b.url(),
            "POST",
            &format!("/v1/reviews/{id}/{decision}"),
            Some(&b.reviewer),
            Some("application/json"),
            br#"{"reason":"the incident is closed; the report is aggregate only"}"#,
        )
    };
    let (status, v) = decide("release");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let (status, v) = http(
        b.url(),
        "POST",
        "/v1/admin/datasets/health_visits/resume",
        Some(&b.admin),
        None,
        b"",
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = decide("release");
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("succeeded")),
        "{v}"
    );
    let (_, report) = get(&format!("/v1/jobs/{id}/result"), &b.analyst);
    let report = report.to_string();
    assert!(report.contains("answers before"), "{report}");
    let receipt = b
        .client(&b.analyst)
        .get_text(&format!("/v1/jobs/{id}/receipt"))
        .unwrap();
    let receipt: Receipt = serde_json::from_str(&receipt).unwrap();
    assert_eq!(receipt.version, 2);
    assert_eq!(receipt.purpose.as_deref(), Some("tests: governance"));
    assert_eq!(receipt.reviewers, ["rita"], "the reviewer who released it");
    let text = b
        .client(&b.analyst)
        .get_text(&format!("/v1/jobs/{id}/result"))
        .unwrap();
    receipt
        .verify(&public_key(&b.public_key).unwrap(), text.as_bytes())
        .expect("the receipt signed at release verifies");
    // The audit log says who held and who released, and still verifies.
    b.stop();
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM audit WHERE job = ?1 ORDER BY seq")
        .unwrap()
        .query_map([&id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let tail: Vec<&str> = kinds
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["job.held", "job.released"], "{kinds:?}");
    sluice_broker::audit::verify(
        &conn,
        &public_key(&b.public_key).unwrap(),
        Some(&sluice_broker::store::checkpoint_path(&b.dir)),
    )
    .unwrap()
    .expect("the log verifies");
}

#[test]
fn reviewers_see_a_jobs_parameters_in_full_before_they_decide() {
    let mut b = TestBroker::start("params", |t| t);
    let params = "sql:SELECT spot, COUNT(*) AS n FROM tourism_trips GROUP BY spot";
    let hostile = guest(env!("GUEST_HOSTILE"));
    let (status, v) = post_job(b.url(), &b.tourism, "tourism_trips", params, &hostile);
    assert_eq!(
        (status, v["state"].as_str()),
        (202, Some("pending_review")),
        "{v}"
    );
    let (status, queue) = http(b.url(), "GET", "/v1/reviews", Some(&b.reviewer), None, b"");
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["pending"][0]["params"], params, "{queue}");
    b.stop();
}

#[test]
fn a_grant_pins_or_forbids_a_jobs_parameters() {
    let pinned = "sql:SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district";
    let mut b = TestBroker::start("params-pinned", |t| {
        t.replacen(
            "operator = \"analyst\"\n",
            &format!("operator = \"analyst\"\nparams = [\"{pinned}\"]\n"),
            1,
        )
        .replacen(
            "operator = \"tourism-lab\"\n",
            "operator = \"tourism-lab\"\nparams = \"none\"\n",
            1,
        )
    });
    let hostile = guest(env!("GUEST_HOSTILE"));
    // Any other SQL from the parameters is refused at the door, naming what the grant allows.
    let other = "sql:SELECT sex, COUNT(*) AS n FROM health_visits GROUP BY sex";
    let (status, v) = post_job(b.url(), &b.analyst, "health_visits", other, &hostile);
    assert_eq!(status, 403, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("on `health_visits`: the grant pins the job's parameters to one of:")
            && message.contains(pinned),
        "{v}"
    );
    let (status, v) = post_job(b.url(), &b.analyst, "health_visits", pinned, &hostile);
    assert_eq!(status, 202, "{v}");
    // A grant that forbids parameters takes none.
    let (status, v) = post_job(b.url(), &b.tourism, "tourism_trips", "rho=1", &hostile);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("forbids job parameters"),
        "{v}"
    );
    let (status, v) = post_job(b.url(), &b.tourism, "tourism_trips", "", &hostile);
    assert_eq!(status, 202, "{v}");
    b.stop();
}

#[test]
fn a_freeze_refuses_every_submission_and_the_audit_log_still_verifies() {
    use sluice_broker::keys::public_key;
    let mut b = TestBroker::start("freeze", |t| t);
    let post = |path: &str, token: &str, body: &str| {
        http(
            b.url(),
            "POST",
            path,
            Some(token),
            Some("application/json"),
            body.as_bytes(),
        )
    };
    // Only admins freeze, and only with a reason.
    let (status, _) = post("/v1/admin/freeze", &b.reviewer, r#"{"reason":"drill"}"#);
    assert_eq!(status, 403);
    let (status, v) = post("/v1/admin/freeze", &b.admin, "{}");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_reason")),
        "{v}"
    );
    let (status, v) = post("/v1/admin/freeze", &b.admin, r#"{"reason":"drill"}"#);
    assert_eq!((status, v["frozen"].as_bool()), (200, Some(true)), "{v}");
    for (token, dataset) in [(&b.analyst, "health_visits"), (&b.tourism, "tourism_trips")] {
        let (status, v) = post_job(b.url(), token, dataset, "", &guest(env!("GUEST_HOSTILE")));
        assert_eq!(status, 403, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("frozen"),
            "{v}"
        );
    }
    // A holder's freeze covers its datasets only.
    let (status, _) = post("/v1/admin/unfreeze", &b.admin, r#"{"reason":"drill over"}"#);
    assert_eq!(status, 200);
    let (status, v) = post(
        "/v1/admin/freeze",
        &b.admin,
        r#"{"reason":"incident at the health commission","holder":"city-health-commission"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "health_visits"),
        "{v}"
    );
    for (token, dataset, expected) in [
        (&b.analyst, "health_visits", 403),
        (&b.tourism, "tourism_trips", 202),
    ] {
        let (status, v) = post_job(b.url(), token, dataset, "", &guest(env!("GUEST_HOSTILE")));
        assert_eq!(status, expected, "{dataset}: {v}");
    }
    b.stop();
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    sluice_broker::audit::verify(
        &conn,
        &public_key(&b.public_key).unwrap(),
        Some(&sluice_broker::store::checkpoint_path(&b.dir)),
    )
    .unwrap()
    .expect("the log verifies after freezes");
}

#[test]
fn a_holder_acts_on_its_own_datasets_only_and_every_refusal_is_audited() {
    let mut b = TestBroker::start("holder", |t| t);
    let holder = Store::open(&b.dir)
        .and_then(|s| s.create_token(Role::Holder, "city-health-commission", "test"))
        .expect("a holder token");
    let post = |path: &str, body: &str| {
        http(
            b.url(),
            "POST",
            path,
            Some(&holder),
            Some("application/json"),
            body.as_bytes(),
        )
    };
    let get = |path: &str| http(b.url(), "GET", path, Some(&holder), None, b"");
    let reason = r#"{"reason":"records under correction"}"#;
    let (status, v) = post("/v1/admin/datasets/health_visits/suspend", reason);
    assert_eq!(status, 200, "{v}");
    let (status, v) = post("/v1/admin/datasets/tourism_trips/suspend", reason);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not held by"),
        "{v}"
    );
    let (status, _) = post("/v1/admin/operators/analyst/suspend", reason);
    assert_eq!(status, 403, "operators are the platform admin's to suspend");
    let (status, _) = post("/v1/admin/policy/reload", "");
    assert_eq!(status, 403);
    // It sees its own datasets, usage and audit entries only.
    let (_, v) = get("/v1/datasets");
    let names: Vec<&str> = v["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"health_visits") && !names.contains(&"tourism_trips"),
        "{names:?}"
    );
    let (status, v) = get("/v1/admin/usage");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["usage"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["holder"] == "city-health-commission"),
        "{v}"
    );
    let (status, v) = get("/v1/audit?dataset=health_visits");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "suspended"),
        "{v}"
    );
    for path in ["/v1/audit?dataset=tourism_trips", "/v1/audit"] {
        let (status, v) = get(path);
        assert_eq!(status, 403, "{path}: {v}");
    }
    // A freeze by a holder covers its own datasets, whatever it names.
    let (status, v) = post(
        "/v1/admin/freeze",
        r#"{"reason":"drill","holder":"city-culture-tourism-bureau"}"#,
    );
    assert_eq!(status, 403, "{v}");
    let (status, v) = post("/v1/admin/freeze", r#"{"reason":"drill"}"#);
    assert_eq!(
        (status, v["scope"].as_str()),
        (200, Some("holder city-health-commission")),
        "{v}"
    );
    b.stop();
    // Every refusal above is in the audit log, with the holder as the principal.
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    let denied: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kind LIKE 'access.denied%'
             AND json_extract(body, '$.actor') = 'city-health-commission'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(denied >= 1, "the holder's refusals are audited");
}

#[test]
fn an_unlisted_build_waits_for_review_and_an_approval_with_allow_lists_it() {
    use sluice_broker::keys::sha256_hex;
    let listed = guest(env!("GUEST_HOSTILE"));
    let listed_sha = sha256_hex(&listed);
    // The analyst's grant allows one build (the hostile guest) without review; everything else
    // (here: a sample job) waits for a reviewer.
    let mut b = TestBroker::start("allow-list", move |t| {
        t.replacen(
            "purpose = \"tests\"\naggregations = [\"count\", \"sum\", \"mean\", \"quantile\", \"variance\"]\nepsilon_per_job = 50.0\nepsilon_per_period = 100.0\nperiod = \"30d\"\nexpires = 2099-12-31\nreview = \"none\"",
            &format!("purpose = \"tests\"\naggregations = [\"count\", \"sum\", \"mean\", \"quantile\", \"variance\"]\nepsilon_per_job = 50.0\nepsilon_per_period = 100.0\nperiod = \"30d\"\nexpires = 2099-12-31\nreview = \"unlisted\"\nallowed_wasm = [\"{listed_sha}\"]"),
            1,
        )
    });
    let submit = |wasm: &[u8]| {
        let sql = "sql:SELECT COUNT(*) AS n FROM health_visits";
        let (status, v) = post_job(b.url(), &b.analyst, "health_visits", sql, wasm);
        assert_eq!(status, 202, "{v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["state"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        submit(&listed).1,
        "queued",
        "a listed build runs without review"
    );
    let unlisted = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let (id, state) = submit(&unlisted);
    assert_eq!(
        state, "pending_review",
        "an unlisted build waits for a reviewer"
    );
    let (status, v) = http(
        b.url(),
        "POST",
        &format!("/v1/reviews/{id}/approve"),
        Some(&b.reviewer),
        Some("application/json"),
        br#"{"reason":"build reviewed: aggregates only","allow":true}"#,
    );
    assert_eq!((status, v["state"].as_str()), (200, Some("queued")), "{v}");
    assert_eq!(
        submit(&unlisted).1,
        "queued",
        "approved with allow: listed next time"
    );
    b.stop();
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    let allowed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kind = 'build.allowed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(allowed, 1);
}

#[test]
fn an_alert_rule_suspends_an_operator_whose_spending_crosses_its_share() {
    // `counter` may spend ε 2.0 a period; the rule suspends it at a quarter of that. Its job
    // asks ε 0.01 queries until one is refused, and returns what it had.
    let mut b = TestBroker::start("alert", |t| {
        t + r#"
[[alert]]
name = "counter-quarter"
when = "budget_share"
threshold = 0.25
datasets = ["health_visits"]
action = "suspend"
"#
    });
    let counter = counter_token(&b);
    let id = submit_params(b.url(), &counter, "until-refused");
    b.client(&counter)
        .follow(&id, |_, _| {})
        .expect("the event stream");
    let (_, job) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&counter),
        None,
        b"",
    );
    // 50 answers of ε 0.01 reach the quarter; the 51st is refused as suspended, and the report
    // built meanwhile is held.
    assert_eq!(job["state"], "held", "{job}");
    assert_eq!(job["queries"], 50, "{job}");
    let (status, v) = http(
        b.url(),
        "GET",
        "/v1/admin/alerts",
        Some(&b.admin),
        None,
        b"",
    );
    assert_eq!(status, 200, "{v}");
    let a = &v["alerts"][0];
    assert_eq!(
        (
            a["rule"].as_str(),
            a["operator"].as_str(),
            a["action"].as_str()
        ),
        (Some("counter-quarter"), Some("counter"), Some("suspend")),
        "{v}"
    );
    assert!(a["share"].as_f64().unwrap() >= 0.25, "{v}");
    let (_, s) = http(
        b.url(),
        "GET",
        "/v1/admin/suspensions",
        Some(&b.admin),
        None,
        b"",
    );
    assert_eq!(s["suspensions"][0]["name"], "counter", "{s}");
    b.stop();
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM audit WHERE kind IN ('alert.raised', 'suspended') ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds, ["alert.raised", "suspended"]);
}

#[test]
fn a_dataset_share_alert_suspends_the_dataset_when_all_operators_together_cross_it() {
    // `health_visits` may give out ε 1.0 a period to everyone together; the rule suspends the
    // dataset at a fifth of that. One operator's job asks ε 0.01 queries until one is refused.
    let mut b = TestBroker::start("alert-dataset", |t| {
        capped(t)
            + r#"
[[alert]]
name = "visits-fifth"
when = "dataset_share"
threshold = 0.2
datasets = ["health_visits"]
action = "suspend"
"#
    });
    let counter = counter_token(&b);
    let id = submit_params(b.url(), &counter, "until-refused");
    assert_eq!(final_state(&b, &counter, &id), "held");
    let (_, job) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&counter),
        None,
        b"",
    );
    // 20 answers of ε 0.01 reach a fifth of ε 1.0; the 21st is refused as suspended.
    assert_eq!(job["queries"], 20, "{job}");
    let alerts = get_ok(&b, &b.admin, "/v1/admin/alerts");
    let a = &alerts["alerts"][0];
    assert_eq!(
        (
            a["rule"].as_str(),
            a["operator"].as_str(),
            a["action"].as_str()
        ),
        (Some("visits-fifth"), Some("*"), Some("suspend")),
        "{alerts}"
    );
    let share = a["share"].as_f64().unwrap();
    assert!((share - 0.2).abs() < 1e-9, "{alerts}");
    let s = get_ok(&b, &b.admin, "/v1/admin/suspensions");
    assert_eq!(
        (
            s["suspensions"][0]["kind"].as_str(),
            s["suspensions"][0]["name"].as_str()
        ),
        (Some("dataset"), Some("health_visits")),
        "{s}"
    );
    b.stop();
    assert_eq!(
        audit_kinds(&b, &["alert.raised", "suspended"]),
        ["alert.raised", "suspended"]
    );
}

/// Audit entry kinds among `kinds`, in log order, from the stopped broker's database.
fn audit_kinds(b: &TestBroker, kinds: &[&str]) -> Vec<String> {
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    let list = kinds
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    conn.prepare(&format!(
        "SELECT kind FROM audit WHERE kind IN ({list}) ORDER BY seq"
    ))
    .unwrap()
    .query_map([], |r| r.get(0))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// `GET path` as `token`: the JSON answer, asserting 200.
fn get_ok(b: &TestBroker, token: &str, path: &str) -> Value {
    let (status, v) = http(b.url(), "GET", path, Some(token), None, b"");
    assert_eq!(status, 200, "{path}: {v}");
    v
}

#[test]
fn a_burn_rate_alert_holds_releases_until_the_hold_is_lifted() {
    // `counter` may spend ε 2.0 a period; the rule fires when it spends 5% of that (ε 0.1)
    // within an hour, and holds its releases: queries are still answered.
    let mut b = TestBroker::start("burn-rate", |t| {
        t + r#"
[[alert]]
name = "counter-burn"
when = "burn_rate"
threshold = 0.05
window = "1h"
action = "hold_releases"
"#
    });
    let counter = counter_token(&b);
    let sql = "SELECT COUNT(*) AS n FROM health_visits";
    // The job whose ε 0.1 query fires the rule, and the next one, run while the hold stands.
    let first = submit(b.url(), &counter, sql);
    assert_eq!(final_state(&b, &counter, &first), "held");
    let second = submit(b.url(), &counter, &format!("{sql} WHERE age > 30"));
    assert_eq!(final_state(&b, &counter, &second), "held");
    let job = get_ok(&b, &counter, &format!("/v1/jobs/{second}"));
    assert_eq!(job["queries"], 1, "queries are still answered: {job}");
    let (status, v) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{second}/result"),
        Some(&counter),
        None,
        b"",
    );
    assert_eq!(status, 409, "a held report is not readable: {v}");
    let alerts = get_ok(&b, &b.admin, "/v1/admin/alerts");
    assert_eq!(
        alerts["alerts"].as_array().map(Vec::len),
        Some(1),
        "{alerts}"
    );
    let a = &alerts["alerts"][0];
    assert_eq!(
        (a["when"].as_str(), a["action"].as_str()),
        (Some("burn_rate"), Some("hold_releases")),
        "{a}"
    );
    let holds = get_ok(&b, &b.admin, "/v1/admin/suspensions");
    assert_eq!(holds["suspensions"][0]["kind"], "hold:operator", "{holds}");
    // A reviewer releases a held report while the hold stands; lifting the hold lets the
    // next job's report out on its own.
    let (status, v) = http(
        b.url(),
        "POST",
        &format!("/v1/reviews/{first}/release"),
        Some(&b.reviewer),
        Some("application/json"),
        br#"{"reason":"checked"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        get_ok(&b, &counter, &format!("/v1/jobs/{first}"))["state"],
        "succeeded"
    );
    let (status, v) = http(
        b.url(),
        "POST",
        "/v1/admin/operators/counter/unhold",
        Some(&b.admin),
        Some("application/json"),
        br#"{"reason":"burn explained"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scope"], "releases", "{v}");
    let third = submit(b.url(), &counter, &format!("{sql} WHERE age > 40"));
    assert_eq!(final_state(&b, &counter, &third), "succeeded");
    b.stop();
    assert_eq!(
        audit_kinds(
            &b,
            &[
                "alert.raised",
                "releases.held",
                "job.held",
                "releases.unheld",
                "job.released"
            ]
        ),
        [
            "alert.raised",
            "releases.held",
            "job.held",
            "job.held",
            "job.released",
            "releases.unheld",
            "job.released"
        ]
    );
}

#[test]
fn a_burst_of_refused_queries_raises_a_denials_alert_that_suspends_the_operator() {
    let mut b = TestBroker::start("denials", |t| {
        t + r#"
[[alert]]
name = "probing"
when = "denials"
count = 5
window = "10m"
action = "suspend"
"#
    });
    let counter = counter_token(&b);
    // SUM is not among counter's aggregations: every one of the eight is refused, before any
    // charge; the fifth raises the alert.
    let id = submit_params(
        b.url(),
        &counter,
        "probe:8:SELECT SUM(age) AS s FROM health_visits",
    );
    assert_eq!(
        final_state(&b, &counter, &id),
        "held",
        "suspended while it ran"
    );
    let alerts = get_ok(&b, &b.admin, "/v1/admin/alerts");
    let a = &alerts["alerts"][0];
    assert_eq!(
        (
            a["rule"].as_str(),
            a["when"].as_str(),
            a["operator"].as_str(),
            a["share"].as_f64()
        ),
        (Some("probing"), Some("denials"), Some("counter"), Some(5.0)),
        "{alerts}"
    );
    assert_eq!(
        alerts["alerts"].as_array().map(Vec::len),
        Some(1),
        "once per window: {alerts}"
    );
    let job = get_ok(&b, &counter, &format!("/v1/jobs/{id}"));
    assert_eq!(job["queries"], 0, "nothing was charged: {job}");
    // Suspended: the next submission is refused.
    let hostile = guest(env!("GUEST_HOSTILE"));
    let (status, v) = post_job(
        b.url(),
        &counter,
        "health_visits",
        "sql:SELECT COUNT(*) AS n FROM health_visits",
        &hostile,
    );
    assert_eq!(status, 403, "{v}");
    b.stop();
    assert_eq!(
        audit_kinds(&b, &["alert.raised", "suspended"]),
        ["alert.raised", "suspended"]
    );
}

/// One request read from `stream`: its headers (lowercase names) and body.
fn read_request(stream: &mut std::net::TcpStream) -> (Vec<(String, String)>, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a request line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("the body");
    (headers, String::from_utf8(body).expect("utf-8"))
}

#[test]
fn alerts_are_streamed_and_posted_signed_to_the_webhook_which_may_fail_first() {
    use std::io::Write;
    let hook = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the webhook");
    let url = format!("http://{}/alerts", hook.local_addr().unwrap());
    let mut b = TestBroker::start_with(
        "webhook",
        |t| {
            t + r#"
[[alert]]
name = "counter-first-tenth"
when = "budget_share"
threshold = 0.05
action = "notify"
"#
        },
        |mut c| {
            c.alert_webhook = Some(url.clone());
            c
        },
    );
    let counter = counter_token(&b);
    // An admin watches the stream from before the alert.
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = b.client(&b.admin);
    std::thread::spawn(move || {
        let _ = watcher.stream("/v1/admin/alerts/stream", |kind, v| {
            let _ = tx.send((kind.to_string(), v.clone()));
            false
        });
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = submit(b.url(), &counter, "SELECT COUNT(*) AS n FROM health_visits");
    assert_eq!(final_state(&b, &counter, &id), "succeeded");
    let (kind, streamed) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the alert on the stream");
    assert_eq!(
        (kind.as_str(), streamed["rule"].as_str()),
        ("alert", Some("counter-first-tenth")),
        "{streamed}"
    );
    // The receiver fails the first delivery; the broker tries again and the second succeeds.
    let mut bodies = Vec::new();
    for answer in ["500 Internal Server Error", "200 OK"] {
        let (mut conn, _) = hook.accept().expect("a delivery");
        let (headers, body) = read_request(&mut conn);
        let sig = headers
            .iter()
            .find(|(k, _)| k == "x-sluice-signature")
            .map(|(_, v)| v.clone())
            .expect("a signature header");
        let key = sluice_broker::keys::public_key(&b.public_key).unwrap();
        assert!(
            sluice_broker::keys::verify(&key, body.as_bytes(), &sig),
            "signed by the broker"
        );
        write!(
            conn,
            "HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1], "the same alert, again");
    let posted: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(posted["alert"]["id"], streamed["id"], "{posted}");
    assert_eq!(posted["alert"]["operator"], "counter", "{posted}");
    b.stop();
    let conn = Store::open_conn_readonly(&b.dir).unwrap();
    let delivered: Option<i64> = conn
        .query_row("SELECT delivered_ms FROM alerts WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(delivered.is_some(), "marked delivered after the 200");
}

#[test]
fn a_scenarios_recipient_fetches_its_released_reports_and_no_other_operator_does() {
    // analyst's grant names `counter` as a recipient of its reports (the product-operation
    // right); tourism-lab is named nowhere.
    let mut b = TestBroker::start("recipients", |t| {
        t.replacen(
            "operator = \"analyst\"\n",
            "operator = \"analyst\"\nrecipients = [\"counter\"]\n",
            1,
        )
    });
    let counter = counter_token(&b);
    let id = submit(
        b.url(),
        &b.analyst,
        "SELECT COUNT(*) AS n FROM health_visits",
    );
    assert_eq!(final_state(&b, &b.analyst, &id), "succeeded");
    let (status, report) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/result"),
        Some(&counter),
        None,
        b"",
    );
    assert_eq!(status, 200, "the recipient reads the report: {report}");
    let (_, own) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}/result"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(report, own, "the same report");
    let receipt = get_ok(&b, &counter, &format!("/v1/jobs/{id}/receipt"));
    assert_eq!(receipt["recipients"], json!(["counter"]), "{receipt}");
    let listed = get_ok(&b, &counter, "/v1/jobs");
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str()),
        "the recipient finds it in its list: {listed}"
    );
    for path in [
        format!("/v1/jobs/{id}/result"),
        format!("/v1/jobs/{id}/receipt"),
        format!("/v1/jobs/{id}"),
    ] {
        let (status, v) = http(b.url(), "GET", &path, Some(&b.tourism), None, b"");
        // Another operator's job is answered as no job at all.
        assert_eq!(status, 404, "{path}: {v}");
    }
    let (status, v) = http(
        b.url(),
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&counter),
        None,
        b"",
    );
    assert_eq!(status, 403, "a recipient cannot act on the job: {v}");
    b.stop();
    assert_eq!(audit_kinds(&b, &["report.delivered"]), ["report.delivered"]);
}

#[test]
fn an_auditor_reads_everything_that_oversight_needs_and_changes_nothing() {
    let mut b = TestBroker::start("auditor", |t| t);
    let auditor = Store::open(&b.dir)
        .and_then(|s| s.create_token(Role::Auditor, "city-audit-office", "test"))
        .expect("an auditor token");
    let id = submit(
        b.url(),
        &b.analyst,
        "SELECT COUNT(*) AS n FROM health_visits",
    );
    assert_eq!(final_state(&b, &b.analyst, &id), "succeeded");
    for path in [
        "/v1/audit".to_string(),
        "/v1/jobs".to_string(),
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/receipt"),
        "/v1/reviews".to_string(),
        "/v1/datasets".to_string(),
        "/v1/admin/usage".to_string(),
        "/v1/admin/alerts".to_string(),
        "/v1/admin/suspensions".to_string(),
    ] {
        let (status, v) = http(b.url(), "GET", &path, Some(&auditor), None, b"");
        assert_eq!(status, 200, "{path}: {v}");
    }
    let (status, metrics) = http(b.url(), "GET", "/metrics", Some(&auditor), None, b"");
    assert_eq!(status, 200, "{metrics}");
    // No report, no decision, no change.
    let json = Some("application/json");
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}/result")),
        ("POST", format!("/v1/reviews/{id}/approve")),
        ("POST", "/v1/admin/operators/analyst/suspend".to_string()),
        ("POST", "/v1/admin/datasets/health_visits/hold".to_string()),
        ("POST", "/v1/admin/freeze".to_string()),
        ("POST", "/v1/admin/policy/reload".to_string()),
        ("POST", "/v1/jobs".to_string()),
        ("POST", "/v1/estimate".to_string()),
    ] {
        let (status, v) = http(
            b.url(),
            method,
            &path,
            Some(&auditor),
            json,
            br#"{"reason":"x"}"#,
        );
        assert_eq!(status, 403, "{method} {path}: {v}");
    }
    b.stop();
}

#[test]
fn releases_from_important_data_are_filed_and_the_signed_export_verifies_offline() {
    let mut b = TestBroker::start("filings", |t| {
        t.replacen(
            "[dataset.health_visits]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"sensitive\"",
            "[grade.important]\nreview = \"none\"\nmax_epsilon_per_period = 100.0\n\n[dataset.health_visits]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"important\"",
            1,
        )
    });
    let store = Store::open(&b.dir).unwrap();
    let holder = store
        .create_token(Role::Holder, "city-health-commission", "test")
        .unwrap();
    let other_holder = store
        .create_token(Role::Holder, "city-culture-tourism-bureau", "test")
        .unwrap();
    let auditor = store
        .create_token(Role::Auditor, "regulator", "test")
        .unwrap();
    drop(store);
    let filed = submit(
        b.url(),
        &b.analyst,
        "SELECT COUNT(*) AS n FROM health_visits",
    );
    assert_eq!(final_state(&b, &b.analyst, &filed), "succeeded");
    // health_raw stays `sensitive`: nothing to file.
    let hostile = guest(env!("GUEST_HOSTILE"));
    let (status, v) = post_job(
        b.url(),
        &b.analyst,
        "health_raw",
        "sql:SELECT COUNT(*) AS n FROM health_raw",
        &hostile,
    );
    assert_eq!(status, 202, "{v}");
    let unfiled = v["id"].as_str().unwrap().to_string();
    assert_eq!(final_state(&b, &b.analyst, &unfiled), "succeeded");
    for token in [&b.admin, &auditor, &holder] {
        let export = get_ok(&b, token, "/v1/filings");
        let filings = export["filings"].as_array().unwrap();
        assert_eq!(filings.len(), 1, "{export}");
        let f = &filings[0];
        assert_eq!(f["receipt"]["job"], filed.as_str(), "{f}");
        assert_eq!(f["datasets"][0]["classification"], "important", "{f}");
        assert_eq!(f["datasets"][0]["holder"], "city-health-commission", "{f}");
    }
    let theirs = get_ok(&b, &other_holder, "/v1/filings");
    assert_eq!(
        theirs["filings"],
        json!([]),
        "another holder's export is empty: {theirs}"
    );
    let (status, v) = http(b.url(), "GET", "/v1/filings", Some(&b.analyst), None, b"");
    assert_eq!(status, 403, "{v}");
    let (status, v) = http(
        b.url(),
        "GET",
        "/v1/filings?since=2026-13-01",
        Some(&b.admin),
        None,
        b"",
    );
    assert_eq!(status, 400, "{v}");
    // The export verifies with the broker's key alone; any change to it does not.
    let export: sluice_broker::filings::FilingExport =
        serde_json::from_value(get_ok(&b, &auditor, "/v1/filings?since=2000-01-01")).unwrap();
    let key = sluice_broker::keys::public_key(&b.public_key).unwrap();
    assert_eq!(export.verify(&key).unwrap(), 1);
    let mut forged = export.clone();
    forged.filings[0].terms.datasets[0].classification = "general".into();
    assert!(
        forged
            .verify(&key)
            .unwrap_err()
            .to_string()
            .contains("signature is invalid")
    );
    let mut forged = export.clone();
    forged.filings[0].receipt.epsilon = 0.0;
    assert!(forged.verify(&key).is_err(), "a receipt changed inside");
    b.stop();
    assert_eq!(audit_kinds(&b, &["filing"]), ["filing"]);
}

#[test]
fn a_grant_without_review_on_an_important_dataset_still_waits_for_a_reviewer() {
    let mut b = TestBroker::start("grade", |t| {
        t.replacen(
            "[dataset.health_visits]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"sensitive\"",
            "[grade.important]\nreview = \"required\"\nmax_epsilon_per_period = 100.0\n\n[dataset.health_visits]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"important\"",
            1,
        )
    });
    let (status, v) = post_job(
        b.url(),
        &b.analyst,
        "health_visits",
        "",
        &guest(env!("GUEST_HOSTILE")),
    );
    assert_eq!(
        (status, v["state"].as_str()),
        (202, Some("pending_review")),
        "{v}"
    );
    let (_, d) = http(
        b.url(),
        "GET",
        "/v1/datasets/health_visits",
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(d["classification"], "important", "{d}");
    assert_eq!(d["grade"]["review"], "required", "{d}");
    assert_eq!(d["grade"]["max_epsilon_per_period"], 100.0, "{d}");
    b.stop();
}

#[test]
fn a_job_on_important_data_waits_for_the_reviewer_and_its_holder() {
    use sluice_broker::keys::Receipt;
    let mut b = TestBroker::start("holder-approval", |t| {
        t.replacen(
            "[dataset.health_visits]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"sensitive\"",
            "[grade.important]\nholder_approval = true\n\n[dataset.health_visits]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"important\"",
            1,
        )
    });
    let store = Store::open(&b.dir).unwrap();
    let health = store
        .create_token(Role::Holder, "city-health-commission", "test")
        .unwrap();
    let tourism = store
        .create_token(Role::Holder, "city-culture-tourism-bureau", "test")
        .unwrap();
    drop(store);
    let id = {
        let sql = "sql:SELECT COUNT(*) AS n FROM health_visits";
        let (status, v) = post_job(
            b.url(),
            &b.analyst,
            "health_visits",
            sql,
            &guest(env!("GUEST_HOSTILE")),
        );
        assert_eq!(
            (status, v["state"].as_str()),
            (202, Some("pending_review")),
            "{v}"
        );
        v["id"].as_str().unwrap().to_string()
    };
    let decide = |token: &str, decision: &str| {
        http(
            b.url(),
            "POST",
            &format!("/v1/reviews/{id}/{decision}"),
            Some(token),
            Some("application/json"),
            br#"{"reason":"counts by district only"}"#,
        )
    };
    let (status, v) = decide(&b.reviewer, "approve");
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("pending_review")),
        "{v}"
    );
    let (status, v) = decide(&tourism, "approve");
    assert_eq!(status, 403, "another holder has no say: {v}");
    let (_, queue) = http(b.url(), "GET", "/v1/reviews", Some(&health), None, b"");
    assert_eq!(queue["pending"][0]["id"], id.as_str(), "{queue}");
    let (status, v) = decide(&health, "approve");
    assert_eq!((status, v["state"].as_str()), (200, Some("queued")), "{v}");
    b.client(&b.analyst).follow(&id, |_, _| {}).unwrap();
    let receipt: Receipt = serde_json::from_str(
        &b.client(&b.analyst)
            .get_text(&format!("/v1/jobs/{id}/receipt"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(receipt.reviewers, ["rita", "city-health-commission"]);
    b.stop();
}

#[test]
fn scenarios_of_one_operator_on_one_dataset_keep_separate_ledgers() {
    let mut b = TestBroker::start("scenarios", |t| {
        t.replacen(
            "operator = \"analyst\"\ndatasets = [\"health_visits\", \"health_raw\"]\npurpose = \"tests\"",
            "operator = \"analyst\"\nscenario = \"planning\"\ndatasets = [\"health_visits\", \"health_raw\"]\npurpose = \"tests\"",
            1,
        ) + r#"
[[grant]]
operator = "analyst"
scenario = "research"
legal_basis = "consent form HV-2026-3"
use = "commercial"
datasets = ["health_visits"]
purpose = "tests: a second scenario"
aggregations = ["count"]
epsilon_per_job = 1.0
epsilon_per_period = 1.0
period = "30d"
expires = 2099-12-31
review = "none"
"#
    });
    let hostile = guest(env!("GUEST_HOSTILE"));
    let sql = "sql:SELECT COUNT(*) AS n FROM health_visits";
    let (status, v) = post_job(b.url(), &b.analyst, "health_visits", sql, &hostile);
    assert_eq!(status, 403, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("name one (planning, research)"),
        "{message}"
    );
    let body = json!({
        "purpose": "tests: research",
        "params": sql,
        "datasets": ["health_visits"],
        "scenario": "research",
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&hostile),
    });
    let (status, v) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(final_state(&b, &b.analyst, &id), "succeeded");
    let (_, budget) = http(b.url(), "GET", "/v1/budget", Some(&b.analyst), None, b"");
    let of = |scenario: &str| {
        budget["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["dataset"] == "health_visits" && x["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} budget in {budget}"))
            .clone()
    };
    let (research, planning) = (of("research"), of("planning"));
    assert!(
        (research["spent_this_period"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{research}"
    );
    assert_eq!(research["usage"], "commercial");
    assert_eq!(planning["spent_this_period"], 0.0, "{planning}");
    let receipt: sluice_broker::keys::Receipt = serde_json::from_str(
        &b.client(&b.analyst)
            .get_text(&format!("/v1/jobs/{id}/receipt"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(receipt.scenario.as_deref(), Some("research"));
    b.stop();
}
