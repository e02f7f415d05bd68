//! The API's contract as OpenAPI 3.1, derived from the handlers' own types (`utoipa`) and
//! served at `GET /v1/openapi.json`.
//!
//! Every operation answers errors with one body, [`ErrorBody`], whose `code` is one of
//! [`ErrorCode::ALL`]; [`Contract`] adds that answer (4XX and 5XX) and the bearer-token scheme
//! to every operation, so neither can be forgotten on a new endpoint. The list of what the router
//! serves ([`super::SERVED`]) is written once, beside the router, and a test holds the spec to it
//! both ways.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{admin, auth, datasets, jobs, oversight, plans, registry, reviews, statements};
use crate::error::ErrorCode;

/// Every error the API answers: `{"error": {"code": …, "message": …}}`.
#[derive(serde::Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// An error's code and message.
#[derive(serde::Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorDetail {
    /// What went wrong, for programs (the status follows from it; docs/operator.md lists each).
    code: ErrorCode,
    /// What went wrong and what to do, for people. Never carries a value derived from data.
    message: String,
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some("One of the codes in docs/operator.md's table"))
            .into()
    }
}

impl ToSchema for ErrorCode {}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| serde::de::Error::custom(format!("no error code `{s}`")))
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The contract.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice broker API",
        description = "Submit WebAssembly analysis jobs that see only differentially private answers; review them; read budgets, the audit log and signed receipts. Every call but `/healthz`, `/v1/openapi.json`, the console's files and `/public/*` (when the broker publishes its register) needs `Authorization: Bearer <token>` (`sluice token create`). Guides: docs/operator.md, docs/reviewer.md, docs/holder.md.",
        license(name = "Apache-2.0"),
    ),
    paths(
        jobs::submit, jobs::list, jobs::status, jobs::query, jobs::result, jobs::receipt,
        jobs::log, jobs::wasm, jobs::cancel, jobs::events,
        datasets::list, datasets::one, datasets::spend, datasets::budget, datasets::estimate,
        reviews::pending, reviews::decide, reviews::audit_log, reviews::audit_verify,
        reviews::receipt_verify,
        admin::reload, admin::create_token, admin::freeze, admin::suspend, admin::usage,
        admin::alerts, admin::alert_stream, admin::suspensions, admin::filings, admin::metrics,
        plans::plan, plans::of_job, plans::risk,
        oversight::register, oversight::file, oversight::status, oversight::list,
        oversight::one, oversight::resolve, oversight::credit_records, oversight::credit_record,
        statements::statement,
        registry::register, registry::list, registry::one, registry::certificate, registry::step,
        registry::public,
        auth::me, healthz, spec,
        crate::console::index, crate::console::script, crate::console::style,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&Contract),
    tags(
        (name = "jobs", description = "Submit jobs, follow them, fetch reports and receipts (operators; staff read)"),
        (name = "datasets", description = "Datasets, budgets, spending and estimates"),
        (name = "plans", description = "Whole-job plans and risk reports on mock data (no charge)"),
        (name = "reviews", description = "The review queue and decisions (reviewers, holders)"),
        (name = "audit", description = "The audit log, its verification, receipt verification"),
        (name = "admin", description = "Policy, tokens, suspensions, freezes, usage, alerts, filings"),
        (name = "oversight", description = "Objections to resolve and operators' credit records"),
        (name = "registry", description = "Registration of resources, licences and products, and their signed certificates"),
        (name = "statements", description = "Signed monthly statements: a holder's earnings, an operator's invoice"),
        (name = "public", description = "The public register and objections: no token, when the broker publishes them"),
        (name = "meta", description = "Who am I, health, metrics, this contract"),
        (name = "console", description = "The web console's page and files"),
    ),
)]
pub(crate) struct ApiDoc;

/// Operations anyone may call: no token.
const PUBLIC: &[&str] = &[
    "/healthz",
    "/v1/openapi.json",
    "/",
    "/console/app.js",
    "/console/app.css",
    "/public/register",
    "/public/objections",
    "/public/objections/{id}",
    "/public/registry/{number}",
];

/// Adds the bearer scheme, the token requirement (outside [`PUBLIC`]) and the error answers to
/// every operation.
struct Contract;

impl Modify for Contract {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `sluice token create` or `POST /v1/admin/tokens`",
                    ))
                    .build(),
            ),
        );
        let error = |what: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .into()
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            for op in operations(item) {
                if !public {
                    op.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                }
                op.responses.responses.insert(
                    "4XX".into(),
                    error("Refused: the code says why (401 no valid token, 403 not allowed, 404 no such thing, 400/413/415/422 bad input, 409 wrong state, 429 busy)"),
                );
                op.responses
                    .responses
                    .insert("5XX".into(), error("A fault in the broker, or a timeout"));
            }
        }
    }
}

/// Every operation of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The contract as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// `GET /v1/openapi.json`: this contract (no token needed).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn spec() -> Json<serde_json::Value> {
    Json(document())
}

/// `GET /healthz`: `ok` while the broker serves.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "`ok`", content((String = "text/plain")))))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_contract_lists_exactly_what_the_router_serves() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "{}",
            doc["openapi"]
        );
        let mut in_spec = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if [
                    "get", "put", "post", "delete", "patch", "head", "options", "trace",
                ]
                .contains(&method.as_str())
                {
                    in_spec.insert((method.clone(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = super::super::served()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let missing: Vec<_> = served.difference(&in_spec).collect();
        let extra: Vec<_> = in_spec.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not in the contract: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "in the contract but not served: {extra:?}"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().unwrap_or("");
                assert!(seen.insert(id.to_string()), "{method} {path}: `{id}` twice");
            }
        }
    }

    #[test]
    fn every_operation_answers_errors_with_the_error_body_and_names_its_security() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                for status in ["4XX", "5XX"] {
                    assert_eq!(
                        op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
                let public = PUBLIC.contains(&path.as_str());
                assert_eq!(op["security"].is_array(), !public, "{method} {path}");
            }
        }
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        assert_eq!(
            codes.as_array().map(Vec::len),
            Some(ErrorCode::ALL.len()),
            "{codes}"
        );
    }
}
