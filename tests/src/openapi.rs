//! The API contract against a running broker: every operation in `GET /v1/openapi.json` is
//! served (none falls through to "no such endpoint" or "method not allowed"), every error body
//! the broker answers matches the contract's error schema, and the document validates as
//! OpenAPI 3.1 (`openapi-spec-validator`, in the Python environment `.ci/run` prepares).

use serde_json::{Value, json};

use crate::{TestBroker, http};

/// The validator's version, installed beside componentize-py.
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

/// `path` with its `{…}` segments filled with values the broker parses.
fn concrete(path: &str) -> String {
    path.replace("{id}", "job-0123456789abcdef")
        .replace("{name}", "health_visits")
        .replace("{decision}", "approve")
        .replace("{party}", "analyst")
        .replace("{month}", "2026-11")
        .replace("{number}", "DR-2026-000001")
        .replace("{step}", "change")
        .replace("{kind}", "datasets")
        .replace("/v1/admin/{action}", "/v1/admin/freeze")
        .replace("{action}", "suspend")
}

/// Checks `v` against `schema` (the subset of JSON Schema the contract uses: `$ref`, `type`,
/// `properties`, `required`, `additionalProperties`, `enum`, `items`, `oneOf`/`anyOf`/`allOf`);
/// the first mismatch.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], v, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array()
            && !options.iter().any(|s| check(doc, s, v, at).is_ok())
        {
            return Err(format!("{at}: matches none of {key}"));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, v, at)?;
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return Err(format!("{at}: {v} is not {types:?}"));
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        return Err(format!("{at}: {v} is not one of the schema's values"));
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or("");
            if !obj.contains_key(r) {
                return Err(format!("{at}: `{r}` is missing"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, x, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == json!(false) => {
                    return Err(format!("{at}: `{k}` is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(xs)) = (schema.get("items"), v.as_array()) {
        for (i, x) in xs.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// A request the broker must refuse, and the status it must refuse it with.
struct Bad<'a> {
    method: &'a str,
    path: &'a str,
    token: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
    status: u16,
}

impl<'a> Bad<'a> {
    fn new(method: &'a str, path: &'a str, token: Option<&'a str>, status: u16) -> Self {
        Self {
            method,
            path,
            token,
            content_type: None,
            body: b"",
            status,
        }
    }

    fn body(self, content_type: Option<&'a str>, body: &'a [u8]) -> Self {
        Self {
            content_type,
            body,
            ..self
        }
    }
}

#[test]
fn the_broker_serves_its_contract_and_every_error_body_matches_it() {
    let b = TestBroker::start_with(
        "openapi",
        |p| p,
        |mut c| {
            c.public_register = true;
            c
        },
    );
    let url = b.url().to_string();
    let (status, served) = http(&url, "GET", "/v1/openapi.json", None, None, b"");
    assert_eq!(status, 200);
    assert_eq!(
        served,
        sluice_broker::openapi(),
        "the served contract is the built one"
    );
    let error_schema = json!({"$ref": "#/components/schemas/ErrorBody"});
    let mut errors = Vec::new();

    // Every operation is served: without a token it is refused by its handler (401), or handled
    // (public operations: answered, or refused for their empty body), never routed to the
    // fallbacks.
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let target = concrete(path);
            let (status, body) = http(&url, &method.to_uppercase(), &target, None, None, b"");
            let public = op.get("security").is_none();
            let fallback = status == 405
                || body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no such endpoint"));
            assert!(!fallback, "{method} {target} is not served: {body}");
            if public {
                assert_ne!(status, 401, "{method} {target} is public: {body}");
                if status >= 400 {
                    errors.push((format!("{method} {target}"), status, body));
                }
            } else {
                assert_eq!(status, 401, "{method} {target} without a token: {body}");
                errors.push((format!("{method} {target}"), status, body));
            }
        }
    }

    // Errors of every kind the API answers, with tokens: each body must match the schema.
    let (analyst, reviewer) = (Some(b.analyst.as_str()), Some(b.reviewer.as_str()));
    let json = Some("application/json");
    let cases = [
        Bad::new("GET", "/v1/nowhere", analyst, 404),
        Bad::new("DELETE", "/v1/jobs", analyst, 405),
        Bad::new("GET", "/v1/admin/usage", analyst, 403),
        Bad::new("GET", "/v1/jobs/job-0123456789abcdef", analyst, 404),
        Bad::new(
            "GET",
            "/v1/jobs/job-0123456789abcdef/result?format=xml",
            analyst,
            404,
        ),
        Bad::new("GET", "/v1/audit?limit=x", reviewer, 400),
        Bad::new(
            "GET",
            "/v1/datasets/health_visits/spend?days=0",
            reviewer,
            400,
        ),
        Bad::new("POST", "/v1/estimate", analyst, 415).body(Some("text/plain"), b"{}"),
        Bad::new("POST", "/v1/estimate", analyst, 400).body(json, b"{"),
        Bad::new("POST", "/v1/estimate", analyst, 400).body(json, br#"{"sql": "SELECT 1"}"#),
        Bad::new(
            "POST",
            "/v1/reviews/job-0123456789abcdef/approve",
            reviewer,
            400,
        )
        .body(json, br#"{"reason": ""}"#),
    ];
    for c in cases {
        let (status, v) = http(&url, c.method, c.path, c.token, c.content_type, c.body);
        assert_eq!(status, c.status, "{} {}: {v}", c.method, c.path);
        errors.push((format!("{} {}", c.method, c.path), status, v));
    }
    let codes: std::collections::BTreeSet<String> = errors
        .iter()
        .map(|(_, _, v)| v["error"]["code"].as_str().unwrap_or("?").to_string())
        .collect();
    assert!(codes.len() >= 8, "a spread of codes was checked: {codes:?}");
    for (what, status, v) in &errors {
        assert!((400..600).contains(status));
        check(&served, &error_schema, v, "body").unwrap_or_else(|e| {
            panic!("{what} answered {status} with a body outside the contract: {e}\n{v}")
        });
    }

    // The schema check can fail: a body with an unknown code, or without a message, does not
    // pass (a power check on the checker).
    for bad in [
        json!({"error": {"code": "no_such_code", "message": "x"}}),
        json!({"error": {"code": "not_found"}}),
        json!({"message": "x"}),
    ] {
        assert!(
            check(&served, &error_schema, &bad, "body").is_err(),
            "{bad}"
        );
    }
}

#[test]
fn the_contract_validates_as_openapi_3_1() {
    let venv = sluice_broker::build::python_venv();
    let validator = venv.join("bin/openapi-spec-validator");
    if !validator.exists() {
        // As for componentize-py: the tests install what they need where .ci/run would.
        if !venv.join("bin/pip").exists() {
            let made = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(
                made.success(),
                "cannot make the Python environment {}",
                venv.display()
            );
        }
        let installed = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", VALIDATOR])
            .status()
            .expect("pip runs");
        assert!(installed.success(), "cannot install {VALIDATOR}");
    }
    let file = crate::temp_dir("openapi").join("openapi.json");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&sluice_broker::openapi()).unwrap(),
    )
    .expect("write the document");
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .expect("the validator runs");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the contract does not validate:\n{said}"
    );
    assert!(said.contains("OK"), "{said}");

    // And the validator can fail: two operations with one id do not pass.
    let mut broken = sluice_broker::openapi();
    broken["paths"]["/v1/me"]["get"]["operationId"] = json!("list_jobs");
    std::fs::write(&file, serde_json::to_vec(&broken).unwrap()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .expect("the validator runs");
    assert!(
        !out.status.success(),
        "a broken document passed the validator"
    );
}
