//! Registration and certificates over HTTP: resources, licences and products get numbers and
//! signed certificates that verify offline; one changed byte breaks them; core data is refused;
//! a cancelled record is reported revoked; every step is on the audit record.

use serde_json::{Value, json};
use sluice_broker::registry::Certificate;

use crate::{TestBroker, guest, http};

fn certificate(v: &Value) -> Certificate {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a certificate: {e}: {v}"))
}

#[test]
fn records_are_registered_certified_changed_and_cancelled() {
    // health_raw graded core: never registered.
    let b = TestBroker::start_with(
        "registry",
        |p| {
            p.replacen(
                "[dataset.health_raw]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"sensitive\"",
                "[dataset.health_raw]\nsource = \"data/health_visits.parquet\"\nholder = \"city-health-commission\"\nclassification = \"core\"",
                1,
            )
            // Core data is never granted either.
            .replacen(
                r#"datasets = ["health_visits", "health_raw"]"#,
                r#"datasets = ["health_visits"]"#,
                1,
            )
        },
        |mut c| {
            c.public_register = true;
            c
        },
    );
    let url = b.url().to_string();
    let admin = b.client(&b.admin);
    let key = sluice_broker::keys::public_key(&b.public_key).unwrap();
    let holder = b.token("holder", "city-health-commission");

    // A resource, by its holder: numbered, signed, naming the dataset's version.
    let resource = certificate(
        &b.client(&holder)
            .post_json(
                "/v1/registry",
                &json!({"kind": "resource", "dataset": "health_visits"}),
            )
            .unwrap(),
    );
    let r = &resource.registration;
    assert!(
        r.number.starts_with("DR-") && r.number.len() == 14,
        "{}",
        r.number
    );
    assert_eq!(
        (r.status.as_str(), r.version, r.owner.as_str()),
        ("active", 1, "city-health-commission")
    );
    assert_eq!(r.record["classification"], "sensitive");
    assert_eq!(r.record["version_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(resource.issuer.public_key, b.public_key);
    resource.verify(&key).unwrap();
    let mut altered = serde_json::to_string(&resource).unwrap();
    altered = altered.replacen("health_visits", "health_visitz", 1);
    let altered: Certificate = serde_json::from_str(&altered).unwrap();
    let e = altered.verify(&key).unwrap_err().to_string();
    assert!(e.contains("signature is invalid"), "{e}");

    // Core data is refused, naming the rule; others may not register what is not theirs.
    let (status, v) = http(
        &url,
        "POST",
        "/v1/registry",
        Some(&holder),
        Some("application/json"),
        br#"{"kind": "resource", "dataset": "health_raw"}"#,
    );
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("core data"),
        "{v}"
    );
    let (status, _) = http(
        &url,
        "POST",
        "/v1/registry",
        Some(&b.analyst),
        Some("application/json"),
        br#"{"kind": "resource", "dataset": "health_visits"}"#,
    );
    assert_eq!(status, 403);

    // A licence: the analyst's grant on health_visits, its caps and expiry.
    let licence = certificate(
        &admin
            .post_json(
                "/v1/registry",
                &json!({"kind": "licence", "operator": "analyst", "dataset": "health_visits"}),
            )
            .unwrap(),
    );
    let l = &licence.registration.record;
    assert_eq!(
        (l["operator"].as_str(), l["holder"].as_str()),
        (Some("analyst"), Some("city-health-commission"))
    );
    assert_eq!(l["caps"]["epsilon_per_job"], 50.0);

    // A product: a released report, whose receipt's hashes the certificate carries.
    let c = b.client(&b.analyst);
    let job = b.run_to_end(
        &b.analyst,
        &guest(env!("GUEST_VISITS_BY_DISTRICT")),
        "epsilon=0.4",
        "health_visits",
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let product = certificate(
        &c.post_json("/v1/registry", &json!({"kind": "product", "jobs": [job]}))
            .unwrap(),
    );
    let report = c.get_text(&format!("/v1/jobs/{job}/result")).unwrap();
    let listed = &product.registration.record["reports"][0];
    assert_eq!(
        listed["report_sha256"].as_str().unwrap(),
        sluice_broker::keys::sha256_hex(report.as_bytes()),
        "the product lists the report its receipt covers"
    );
    let receipt: sluice_broker::keys::Receipt =
        serde_json::from_str(&c.get_text(&format!("/v1/jobs/{job}/receipt")).unwrap()).unwrap();
    receipt.verify(&key, report.as_bytes()).unwrap();

    // Life cycle: an objection, a change that lifts it, a transfer only an admin makes, a
    // cancel that revokes; a cancelled record takes no further step.
    let number = resource.registration.number.clone();
    let step = |token: &str, step: &str, body: Value| {
        http(
            &url,
            "POST",
            &format!("/v1/registry/{number}/{step}"),
            Some(token),
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    };
    let (status, v) = step(
        &b.reviewer,
        "objection",
        json!({"reason": "the schema hides a column"}),
    );
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("objected")),
        "{v}"
    );
    let (status, v) = step(&holder, "change", json!({"reason": "schema reviewed"}));
    assert_eq!(
        (status, v["status"].clone(), v["version"].clone()),
        (200, json!("active"), json!(2)),
        "{v}"
    );
    let (status, _) = step(&holder, "transfer", json!({"reason": "x", "to": "someone"}));
    assert_eq!(status, 403);
    let (status, _) = step(&b.analyst, "cancel", json!({"reason": "x"}));
    assert_eq!(status, 403);
    let (status, v) = step(&holder, "cancel", json!({"reason": "dataset withdrawn"}));
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("cancelled")),
        "{v}"
    );
    let (status, v) = step(&holder, "change", json!({"reason": "again"}));
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("conflict")),
        "{v}"
    );

    // Its status is served, with and without a token; the public register lists it.
    let now = admin.get_json(&format!("/v1/registry/{number}")).unwrap();
    assert_eq!(now["status"], "cancelled");
    let steps: Vec<&str> = crate::strings(&now["events"], "kind");
    assert_eq!(steps, ["initial", "objection", "change", "cancel"]);
    let (status, public) = http(
        &url,
        "GET",
        &format!("/public/registry/{number}"),
        None,
        None,
        b"",
    );
    assert_eq!(
        (status, public["status"].clone()),
        (200, json!("cancelled"))
    );
    let (_, register) = http(&url, "GET", "/public/register", None, None, b"");
    let listed: Vec<(&str, &str)> = register["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["number"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert!(
        listed.contains(&(number.as_str(), "cancelled")),
        "{listed:?}"
    );
    assert_eq!(listed.len(), 3);

    // Every step is an audit entry, and the log verifies.
    let log = admin.get_json("/v1/audit?limit=1000").unwrap();
    let registry_entries = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("registry."))
        .count();
    assert_eq!(registry_entries, 3 + 3, "three registrations, three steps");
    assert_eq!(
        b.client(&b.reviewer).get_json("/v1/audit/verify").unwrap()["ok"],
        true
    );
}
