//! Ad-hoc SQL: the built-in SQL job (`POST /v1/query`, `sluice query`) answers one query with
//! the same engine, grant, ledger, review and receipt as any job, only where a grant allows it.

use serde_json::{Value, json};
use sluice_runtime::sql_job::SQL_JOB_SHA256;

use crate::{TestBroker, http};

fn ask(b: &TestBroker, token: &str, body: Value) -> (u16, Value) {
    http(
        b.url(),
        "POST",
        "/v1/query",
        Some(token),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn get(b: &TestBroker, token: &str, path: &str) -> (u16, Value) {
    http(b.url(), "GET", path, Some(token), None, b"")
}

/// The test policy with ad-hoc SQL allowed on the analyst's grant and on the tourism lab's
/// (which requires review).
fn allowing(t: String) -> String {
    t.replacen(
        "operator = \"analyst\"\n",
        "operator = \"analyst\"\nadhoc_sql = true\n",
        1,
    )
    .replacen(
        "operator = \"tourism-lab\"\n",
        "operator = \"tourism-lab\"\nadhoc_sql = true\n",
        1,
    )
}

#[test]
fn a_query_runs_as_the_built_in_sql_job_with_a_receipt() {
    let mut b = TestBroker::start("adhoc", allowing);
    let sql = "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district";
    let (status, v) = ask(
        &b,
        &b.analyst,
        json!({"purpose": "tests: ad-hoc", "sql": sql, "epsilon": 0.5}),
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["wasm_sha256"], *SQL_JOB_SHA256, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    b.client(&b.analyst).follow(&id, |_, _| {}).unwrap();
    let (_, job) = get(&b, &b.analyst, &format!("/v1/jobs/{id}"));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["spent"][0]["epsilon"], 0.5, "{job}");
    let (status, report) = get(&b, &b.analyst, &format!("/v1/jobs/{id}/result"));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["tables"][0]["name"], "answer", "{report}");
    assert_eq!(
        report["tables"][0]["table"]["rows"]
            .as_array()
            .unwrap()
            .len(),
        9
    );
    let (_, receipt) = get(&b, &b.analyst, &format!("/v1/jobs/{id}/receipt"));
    assert_eq!(receipt["wasm_sha256"], *SQL_JOB_SHA256, "{receipt}");
    // The audit log records the SQL as parameters, as a reviewer reads them.
    let (_, audit) = get(&b, &b.reviewer, &format!("/v1/audit?job={id}"));
    let submitted = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "job.submitted")
        .unwrap();
    assert!(
        submitted["detail"]["params"]
            .as_str()
            .unwrap()
            .contains(sql),
        "{submitted}"
    );
    // A refused query submits nothing and costs nothing.
    let (status, v) = ask(
        &b,
        &b.analyst,
        json!({"purpose": "p", "sql": "SELECT name, COUNT(*) AS n FROM health_visits GROUP BY name", "epsilon": 0.5}),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("query_refused")),
        "{v}"
    );
    let (status, v) = ask(&b, &b.analyst, json!({"purpose": "p", "sql": sql}));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_budget")),
        "{v}"
    );
    let (_, jobs) = get(&b, &b.analyst, "/v1/jobs");
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    b.stop();
}

#[test]
fn ad_hoc_sql_needs_a_grant_that_allows_it_and_review_where_the_grant_says() {
    let mut b = TestBroker::start("adhoc-grants", |t| {
        t.replacen(
            "operator = \"tourism-lab\"\n",
            "operator = \"tourism-lab\"\nadhoc_sql = true\n",
            1,
        )
    });
    let (status, v) = ask(
        &b,
        &b.analyst,
        json!({"purpose": "p", "sql": "SELECT COUNT(*) AS n FROM health_visits", "epsilon": 0.5}),
    );
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not allow ad-hoc SQL"),
        "{v}"
    );
    // Under a grant that requires review, the query waits for a reviewer, who sees it whole
    // and can read its plan.
    let sql = "SELECT spot, COUNT(*) AS n FROM tourism_trips GROUP BY spot";
    let (status, v) = ask(
        &b,
        &b.tourism,
        json!({"purpose": "spots", "sql": sql, "epsilon": 1.0}),
    );
    assert_eq!(
        (status, v["state"].as_str()),
        (202, Some("pending_review")),
        "{v}"
    );
    let id = v["id"].as_str().unwrap();
    let (_, queue) = get(&b, &b.reviewer, "/v1/reviews");
    assert!(
        queue["pending"][0]["params"]
            .as_str()
            .unwrap()
            .contains(sql),
        "{queue}"
    );
    let (status, plan) = get(&b, &b.reviewer, &format!("/v1/jobs/{id}/plan"));
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["queries"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["datasets"][0]["total"], 1.0, "{plan}");
    assert_eq!(plan["problems"], json!([]), "{plan}");
    b.stop();
}
