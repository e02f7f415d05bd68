//! Public oversight over HTTP: the public register without a token (opt-in, no data value),
//! objections from filing to resolution, and operators' credit records.

use serde_json::{Value, json};

use crate::{TestBroker, guest, http, this_month};

fn published(name: &str) -> TestBroker {
    TestBroker::start_with(
        name,
        |p| p,
        |mut c| {
            c.public_register = true;
            c
        },
    )
}

/// Every string and every number in `v`.
fn leaves(v: &Value, texts: &mut Vec<String>, figures: &mut Vec<f64>) {
    match v {
        Value::String(s) => texts.push(s.clone()),
        Value::Number(n) => figures.extend(n.as_f64()),
        Value::Array(items) => items.iter().for_each(|x| leaves(x, texts, figures)),
        Value::Object(m) => m.values().for_each(|x| leaves(x, texts, figures)),
        _ => {}
    }
}

#[test]
fn the_public_register_is_off_unless_published() {
    let b = TestBroker::start("register-off", |p| p);
    for (method, path, body) in [
        ("GET", "/public/register", &b""[..]),
        (
            "POST",
            "/public/objections",
            br#"{"subject": "x", "text": "y"}"#,
        ),
        ("GET", "/public/objections/obj-0123456789abcdef", b""),
    ] {
        let (status, v) = http(b.url(), method, path, None, Some("application/json"), body);
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("public_register"),
            "the refusal says how to publish: {v}"
        );
    }
}

#[test]
fn the_public_register_lists_scenarios_spending_and_releases_and_no_data_value() {
    let b = published("register");
    let job = b.run_to_end(
        &b.analyst,
        &guest(env!("GUEST_VISITS_BY_DISTRICT")),
        "epsilon=0.4",
        "health_visits",
    );
    let report = b
        .client(&b.analyst)
        .get_text(&format!("/v1/jobs/{}/result", job["id"].as_str().unwrap()))
        .unwrap();
    let (status, reg) = http(b.url(), "GET", "/public/register", None, None, b"");
    assert_eq!(status, 200, "{reg}");

    // Exactly the documented sections.
    let mut keys: Vec<&str> = reg
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "generated_ms",
            "objections",
            "public_key",
            "registrations",
            "releases",
            "scenarios",
            "spend",
            "suspensions",
            "time_zone"
        ]
    );
    let operators: Vec<&str> = crate::strings(&reg["scenarios"], "operator");
    for op in ["analyst", "tourism-lab", "counter"] {
        assert!(operators.contains(&op), "{op} in {operators:?}");
    }
    assert!(
        !operators.contains(&"expired-op"),
        "an expired grant is not in force: {operators:?}"
    );

    // This month's spending on health_visits is what the job was charged; one release.
    let month = this_month();
    let spent = reg["spend"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["dataset"] == "health_visits" && m["month"] == month.as_str())
        .unwrap_or_else(|| panic!("no spend for health_visits in {month}: {reg}"));
    let charged = job["epsilon_spent"].as_f64().unwrap();
    assert!(charged > 0.0);
    assert!(
        (spent["epsilon"].as_f64().unwrap() - charged).abs() < 1e-12,
        "{spent} vs {charged}"
    );
    assert_eq!(spent["jobs"], 1);
    let released = reg["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["dataset"] == "health_visits" && m["month"] == month.as_str())
        .unwrap_or_else(|| panic!("no releases for health_visits in {month}: {reg}"));
    assert_eq!(released["releases"], 1);

    // No value of the report appears: no key of its tables in any text of the register, no
    // figure of its cells among the register's figures (compared as values: a noisy 2026 is
    // not the year in a month's name).
    let (mut texts, mut figures) = (Vec::new(), Vec::new());
    leaves(&reg, &mut texts, &mut figures);
    assert!(
        texts.iter().any(|t| t.contains("health_visits")) && figures.contains(&1.0),
        "the check sees the register's own values"
    );
    let report: Value = serde_json::from_str(&report).unwrap();
    let mut cells = 0;
    for t in report["tables"].as_array().unwrap() {
        for row in t["table"]["rows"].as_array().unwrap() {
            for cell in row.as_array().unwrap() {
                match cell {
                    Value::String(key) => {
                        cells += 1;
                        assert!(
                            !texts.iter().any(|t| t.contains(key.as_str())),
                            "the register shows `{key}`: {reg}"
                        );
                    }
                    // Small numbers (0, 1, …) are what the register does hold (jobs,
                    // releases): look for figures of 10 or more.
                    Value::Number(n) if n.as_f64().is_some_and(|x| x.abs() >= 10.0) => {
                        cells += 1;
                        let x = n.as_f64().unwrap();
                        assert!(!figures.contains(&x), "the register shows {x}: {reg}");
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(
        cells >= 5,
        "the check looked at the report's cells ({cells})"
    );
}

#[test]
fn objections_go_from_filed_to_resolved_and_count_on_the_credit_record() {
    let b = published("objections");
    let url = b.url().to_string();
    let json_ct = Some("application/json");
    let contact = "resident-4711@example.org";
    let body = json!({
        "subject": "analyst's district study",
        "text": "I was not told my clinic visits are analysed.",
        "contact": contact,
    })
    .to_string();
    let (status, filed) = http(
        &url,
        "POST",
        "/public/objections",
        None,
        json_ct,
        body.as_bytes(),
    );
    assert_eq!(status, 202, "{filed}");
    assert_eq!(filed["status"], "open");
    let id = filed["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("obj-") && id.len() == 20, "{id}");

    // Bad objections are refused with one code.
    for bad in [
        json!({"subject": "x", "text": "  "}),
        json!({"subject": "", "text": "y"}),
        json!({"subject": "x".repeat(201), "text": "y"}),
        json!({"subject": "x", "text": "y".repeat(4001)}),
        json!({"subject": "x", "text": "y", "contact": "c".repeat(201)}),
    ] {
        let (status, v) = http(
            &url,
            "POST",
            "/public/objections",
            None,
            json_ct,
            bad.to_string().as_bytes(),
        );
        assert_eq!(
            (status, v["error"]["code"].clone()),
            (400, json!("bad_objection")),
            "{bad}"
        );
    }
    let (status, v) = http(
        &url,
        "POST",
        "/public/objections",
        None,
        json_ct,
        br#"{"subject":"x","text":"y","to":"z"}"#,
    );
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("bad_json"))
    );

    // The filer's view: the state, not the text or the contact.
    let (status, seen) = http(
        &url,
        "GET",
        &format!("/public/objections/{id}"),
        None,
        None,
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(seen["status"], "open");
    assert!(
        seen.get("text").is_none() && !seen.to_string().contains(contact),
        "{seen}"
    );

    // Staff read it (not operators); only reviewers resolve it, with a reason and a known
    // operator.
    let reviewer = b.client(&b.reviewer);
    let (status, _) = http(&url, "GET", "/v1/objections", Some(&b.analyst), None, b"");
    assert_eq!(status, 403);
    let open = reviewer.get_json("/v1/objections").unwrap();
    let listed = &open["objections"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(
        listed["text"],
        "I was not told my clinic visits are analysed."
    );
    assert!(
        !open.to_string().contains(contact),
        "the contact is not listed: {open}"
    );
    let path = format!("/v1/objections/{id}/uphold");
    for (token, body, want) in [
        (&b.admin, json!({"reason": "x"}), 403),
        (&b.reviewer, json!({"reason": " "}), 400),
        (
            &b.reviewer,
            json!({"reason": "x", "operator": "nobody"}),
            400,
        ),
    ] {
        let (status, v) = http(
            &url,
            "POST",
            &path,
            Some(token),
            json_ct,
            body.to_string().as_bytes(),
        );
        assert_eq!(status, want, "{body}: {v}");
    }
    let resolved = reviewer
        .post_json(
            &path,
            &json!({"reason": "the notice was missing from the clinic's leaflet", "operator": "analyst"}),
        )
        .unwrap();
    assert_eq!(resolved["status"], "upheld");
    let (status, again) = http(
        &url,
        "POST",
        &path,
        Some(&b.reviewer),
        json_ct,
        br#"{"reason": "twice"}"#,
    );
    assert_eq!(
        (status, again["error"]["code"].clone()),
        (409, json!("conflict")),
        "{again}"
    );
    let (_, seen) = http(
        &url,
        "GET",
        &format!("/public/objections/{id}"),
        None,
        None,
        b"",
    );
    assert_eq!(seen["status"], "upheld");
    assert_eq!(
        seen["reason"],
        "the notice was missing from the clinic's leaflet"
    );

    // The credit record: the upheld objection, a suspension and its repair.
    let admin = b.client(&b.admin);
    admin
        .post_json(
            "/v1/admin/operators/analyst/suspend",
            &json!({"reason": "leaflet audit"}),
        )
        .unwrap();
    admin
        .post_json(
            "/v1/admin/operators/analyst/resume",
            &json!({"reason": "leaflet fixed"}),
        )
        .unwrap();
    let credit = reviewer.get_json("/v1/operators/analyst").unwrap();
    assert_eq!(credit["objections_upheld"], 1, "{credit}");
    assert_eq!(credit["suspensions"], 1, "{credit}");
    assert_eq!(credit["repairs"], 1, "{credit}");
    assert_eq!(credit["suspended_now"], false, "{credit}");
    let kinds: Vec<&str> = crate::strings(&credit["events"], "kind");
    assert_eq!(
        kinds,
        ["resumed", "suspended", "objection.resolved"],
        "{credit}"
    );

    // Holders see the records of operators granted their datasets, and no others.
    let holder = b.token("holder", "city-culture-tourism-bureau");
    let (status, _) = http(
        &url,
        "GET",
        "/v1/operators/analyst",
        Some(&holder),
        None,
        b"",
    );
    assert_eq!(status, 404);
    let (status, v) = http(&url, "GET", "/v1/operators", Some(&holder), None, b"");
    assert_eq!(status, 200);
    let seen: Vec<&str> = crate::strings(&v["operators"], "operator");
    assert_eq!(seen, ["tourism-lab"], "{v}");

    // Both steps are on the record, the contact never is, and the log verifies.
    let log = admin.get_json("/v1/audit?limit=1000").unwrap();
    let text = log.to_string();
    assert!(
        !text.contains(contact),
        "the contact is not in the audit log"
    );
    let kinds: Vec<&str> = crate::strings(&log["entries"], "kind");
    assert!(kinds.contains(&"objection.filed") && kinds.contains(&"objection.resolved"));
    let verdict = reviewer.get_json("/v1/audit/verify").unwrap();
    assert_eq!(verdict["ok"], true, "{verdict}");
}

#[test]
fn one_address_cannot_fill_the_objection_queue() {
    // From one address, the first MAX_PER_ADDRESS_PER_HOUR objections are filed and the next is
    // refused with its own code (429, a Retry-After); nothing of the address is kept.
    let b = published("objection-rate");
    let url = b.url().to_string();
    let limit = sluice_broker::oversight::MAX_PER_ADDRESS_PER_HOUR;
    let file = |i: usize| {
        let body = json!({"subject": format!("study {i}"), "text": "I object."}).to_string();
        http(
            &url,
            "POST",
            "/public/objections",
            None,
            Some("application/json"),
            body.as_bytes(),
        )
    };
    for i in 0..limit {
        let (status, v) = file(i);
        assert_eq!(status, 202, "objection {i}: {v}");
    }
    let (status, v) = file(limit);
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (429, json!("too_many_objections")),
        "{v}"
    );
    // Reviewers see exactly the ones filed.
    let (_, open) = http(&url, "GET", "/v1/objections", Some(&b.reviewer), None, b"");
    assert_eq!(
        open["objections"].as_array().map(Vec::len),
        Some(limit),
        "{open}"
    );
}
