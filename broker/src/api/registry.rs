//! The registry over HTTP ([`crate::registry`]): register resources, licences and products,
//! take them through their life cycle, and issue signed certificates.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_policy::{Classification, DatasetId, Denial, OperatorId, Policy};

use super::auth::Auth;
use super::{ApiResult, JsonBody, first_line};
use crate::error::{ApiError, ErrorCode};
use crate::registry::{Certificate, Record, RecordKind, Step};
use crate::server::{Shared, current};
use crate::store::{JobState, Role};

/// What to register.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRecord {
    /// `resource`, `licence` or `product`.
    kind: String,
    /// The dataset (resources, licences).
    #[serde(default)]
    dataset: Option<String>,
    /// The operator the licence is for (licences).
    #[serde(default)]
    operator: Option<String>,
    /// The scenario (licences, when the operator holds several on the dataset).
    #[serde(default)]
    scenario: Option<String>,
    /// The released jobs whose reports make the product (products).
    #[serde(default)]
    jobs: Vec<String>,
    /// Why (recorded).
    #[serde(default)]
    reason: String,
}

/// A dataset of the policy in force, refused when it is core data.
fn registrable<'p>(policy: &'p Policy, name: &str) -> ApiResult<&'p sluice_policy::Dataset> {
    let d = DatasetId::new(name)
        .ok()
        .and_then(|id| policy.datasets.get(&id))
        .ok_or_else(|| {
            ApiError::not_found(format!("no dataset `{}` in the policy", first_line(name)))
        })?;
    if d.classification == Classification::Core {
        return Err(ApiError::forbidden(format!(
            "dataset `{name}` is graded core: core data (核心数据, GB/T 43697-2024) is not opened for authorized operation, so it is neither granted nor registered"
        )));
    }
    Ok(d)
}

/// A resource record: the dataset's holder, grade, public schema and current version.
fn resource(s: &Shared, name: &str) -> ApiResult<(String, Value)> {
    let cur = current(s);
    let engine = cur.sandbox.engine();
    let d = registrable(engine.policy(), name)?;
    let view = sluice_runtime::views::DatasetView::of(d, engine.policy());
    let schema = serde_json::to_vec(&view).map_err(ApiError::internal)?;
    let version = engine
        .catalog()
        .get(&d.id)
        .map(|r| r.content_hash.clone())
        .ok_or_else(|| ApiError::not_found(format!("dataset `{name}` is not loaded")))?;
    Ok((
        d.holder.clone(),
        json!({
            "dataset": d.id.as_str(),
            "holder": d.holder,
            "classification": d.classification.as_str(),
            "schema_sha256": crate::keys::sha256_hex(&schema),
            "version_sha256": version,
        }),
    ))
}

/// A licence record: the grant of `operator` on `dataset` (for `scenario`).
fn licence(
    s: &Shared,
    operator: &str,
    dataset: &str,
    scenario: Option<&str>,
) -> ApiResult<(String, Value)> {
    let cur = current(s);
    let policy = cur.sandbox.engine().policy();
    let d = registrable(policy, dataset)?;
    let op = OperatorId::new(operator).map_err(|e| ApiError::new(ErrorCode::BadName, e))?;
    let grant = policy
        .grant_in(&op, &d.id, scenario)
        .map_err(|denial| match denial {
            Denial::ScenarioRequired { .. } => {
                ApiError::new(ErrorCode::BadName, denial.to_string())
            }
            _ => ApiError::not_found(denial.to_string()),
        })?;
    Ok((
        d.holder.clone(),
        json!({
            "holder": d.holder,
            "operator": operator,
            "dataset": dataset,
            "scenario": grant.scenario,
            "purpose": grant.purpose,
            "usage": grant.usage.as_str(),
            "legal_basis": grant.legal_basis,
            "caps": {
                "epsilon_per_job": grant.epsilon_per_job,
                "epsilon_per_period": grant.epsilon_per_period,
                "rho_per_job": grant.rho_per_job,
                "rho_per_period": grant.rho_per_period,
                "period_secs": grant.period_secs,
            },
            "expires": grant.expires.describe(&policy.time_zone),
        }),
    ))
}

/// A product record: released jobs of one operator, with what their receipts vouch for.
fn product(s: &Shared, jobs: &[String]) -> ApiResult<(String, Value)> {
    if jobs.is_empty() || jobs.len() > 100 {
        return Err(ApiError::new(
            ErrorCode::BadName,
            "a product names 1 to 100 released jobs",
        ));
    }
    let mut operator: Option<String> = None;
    let mut datasets: Vec<String> = Vec::new();
    let mut reports = Vec::new();
    for id in jobs {
        let job = s
            .store
            .job(id)?
            .ok_or_else(|| ApiError::not_found(format!("no job `{}`", first_line(id))))?;
        if job.state != JobState::Succeeded {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "job `{id}` is {}; a product is made of released reports",
                    job.state.as_str()
                ),
            ));
        }
        if operator.get_or_insert_with(|| job.operator.clone()) != &job.operator {
            return Err(ApiError::new(
                ErrorCode::BadName,
                "a product's reports are all one operator's",
            ));
        }
        let Some((_, receipt)) = s.store.result(id, false)? else {
            return Err(ApiError::new(
                ErrorCode::NotReleased,
                format!("job `{id}` has no receipt"),
            ));
        };
        let r: crate::keys::Receipt = serde_json::from_str(&receipt).map_err(ApiError::internal)?;
        datasets.extend(job.datasets.iter().cloned());
        reports.push(json!({
            "job": id,
            "scenario": job.scenario,
            "wasm_sha256": r.wasm_sha256,
            "report_sha256": r.report_sha256,
            "report_csv_sha256": r.report_csv_sha256,
            "receipt_audit_seq": r.audit_seq,
        }));
    }
    datasets.sort();
    datasets.dedup();
    let operator = operator.unwrap_or_default();
    Ok((
        operator.clone(),
        json!({ "operator": operator, "datasets": datasets, "reports": reports }),
    ))
}

/// Whether `auth` may act for `owner`'s record: admins, and the owner itself.
fn may_act(auth: &Auth, owner: &str) -> bool {
    auth.0.role == Role::Admin
        || (matches!(auth.0.role, Role::Holder | Role::Operator) && auth.0.name == owner)
}

/// `POST /v1/registry`: registers a record and answers its certificate (a resource or
/// licence: admins and the dataset's holder; a product: its operator and admins).
#[utoipa::path(
    post, path = "/v1/registry", tag = "registry", operation_id = "register_record", request_body = NewRecord,
    responses((status = 201, description = "Registered: its certificate", body = Certificate))
)]
pub(crate) async fn register(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    JsonBody(r): JsonBody<NewRecord>,
) -> ApiResult<Response> {
    let need = |v: &Option<String>, what: &str| {
        v.clone().ok_or_else(|| {
            ApiError::new(ErrorCode::BadName, format!("a {} names its {what}", r.kind))
        })
    };
    let (kind, (owner, record)) = match r.kind.as_str() {
        "resource" => (
            RecordKind::Resource,
            resource(&s, &need(&r.dataset, "dataset")?)?,
        ),
        "licence" => (
            RecordKind::Licence,
            licence(
                &s,
                &need(&r.operator, "operator")?,
                &need(&r.dataset, "dataset")?,
                r.scenario.as_deref(),
            )?,
        ),
        "product" => (RecordKind::Product, product(&s, &r.jobs)?),
        other => {
            return Err(ApiError::new(
                ErrorCode::BadName,
                format!(
                    "no record kind `{}`: resource, licence or product",
                    first_line(other)
                ),
            ));
        }
    };
    if !may_act(&auth, &owner) {
        return Err(ApiError::forbidden(format!(
            "a {} of `{owner}` is registered by `{owner}` or an admin",
            kind.as_str()
        )));
    }
    let reason = if r.reason.trim().is_empty() {
        "initial registration"
    } else {
        r.reason.trim()
    };
    let registered = s
        .store
        .register(kind, &owner, &record, &auth.0.name, reason)?;
    Ok((StatusCode::CREATED, Json(s.store.certificate(registered))).into_response())
}

/// Every record, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Records {
    records: Vec<Record>,
}

/// `GET /v1/registry`: every record (any signed-in caller: the registry names data, never
/// shows it).
#[utoipa::path(
    get, path = "/v1/registry", tag = "registry", operation_id = "list_records",
    responses((status = 200, description = "Every record, newest first", body = Records))
)]
pub(crate) async fn list(State(s): State<Arc<Shared>>, _: Auth) -> ApiResult<Json<Records>> {
    Ok(Json(Records {
        records: s.store.registrations()?,
    }))
}

fn record(s: &Shared, number: &str) -> ApiResult<Record> {
    s.store.registration(number)?.ok_or_else(|| {
        ApiError::not_found(format!("no registered record `{}`", first_line(number)))
    })
}

/// `GET /v1/registry/{number}`: a record as it stands, with its history and status (`active`,
/// `objected`, `cancelled`: a cancelled record's certificates are revoked).
#[utoipa::path(
    get, path = "/v1/registry/{number}", tag = "registry", operation_id = "get_record",
    params(("number" = String, Path, description = "The record's number, `DR-<year>-<n>`")),
    responses((status = 200, description = "The record", body = Record))
)]
pub(crate) async fn one(
    State(s): State<Arc<Shared>>,
    _: Auth,
    Path(number): Path<String>,
) -> ApiResult<Json<Record>> {
    Ok(Json(record(&s, &number)?))
}

/// `GET /public/registry/{number}`: the same, without a token, where the broker publishes its
/// register.
#[utoipa::path(
    get, path = "/public/registry/{number}", tag = "public", operation_id = "public_record",
    params(("number" = String, Path, description = "The record's number")),
    responses((status = 200, description = "The record", body = Record))
)]
pub(crate) async fn public(
    State(s): State<Arc<Shared>>,
    Path(number): Path<String>,
) -> ApiResult<Json<Record>> {
    super::oversight::published(&s)?;
    Ok(Json(record(&s, &number)?))
}

/// `GET /v1/registry/{number}/certificate`: a signed certificate of the record as it stands.
#[utoipa::path(
    get, path = "/v1/registry/{number}/certificate", tag = "registry", operation_id = "get_certificate",
    params(("number" = String, Path, description = "The record's number")),
    responses((status = 200, description = "Its certificate", body = Certificate))
)]
pub(crate) async fn certificate(
    State(s): State<Arc<Shared>>,
    _: Auth,
    Path(number): Path<String>,
) -> ApiResult<Json<Certificate>> {
    let r = record(&s, &number)?;
    Ok(Json(s.store.certificate(r)))
}

/// A step on a record.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepBody {
    /// Why (recorded).
    reason: String,
    /// The new owner (a transfer).
    #[serde(default)]
    to: Option<String>,
}

/// `POST /v1/registry/{number}/{change|transfer|objection|cancel}` with a reason: a change
/// refreshes the record from the broker's state (its owner or an admin); a transfer passes it to
/// `to` (admins); an objection disputes it (reviewers, holders, admins); a cancel revokes it (its
/// owner or an admin).
#[utoipa::path(
    post, path = "/v1/registry/{number}/{step}", tag = "registry", operation_id = "record_step", request_body = StepBody,
    params(("number" = String, Path, description = "The record's number"),
           ("step" = String, Path, description = "`change`, `transfer`, `objection` or `cancel`")),
    responses((status = 200, description = "The record after the step", body = Record))
)]
pub(crate) async fn step(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    Path((number, step)): Path<(String, String)>,
    JsonBody(b): JsonBody<StepBody>,
) -> ApiResult<Json<Record>> {
    let step = Step::parse(&step)
        .ok_or_else(|| ApiError::not_found("the step is change, transfer, objection or cancel"))?;
    let reason = super::reason(&b.reason)?;
    let r = record(&s, &number)?;
    let allowed = match step {
        Step::Change | Step::Cancel => may_act(&auth, &r.owner),
        Step::Transfer => auth.0.role == Role::Admin,
        Step::Objection => matches!(auth.0.role, Role::Reviewer | Role::Holder | Role::Admin),
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "the {} role may not {} record `{number}`",
            auth.0.role.as_str(),
            step.as_str()
        )));
    }
    let content = match (step, r.kind) {
        (Step::Change, RecordKind::Resource) => {
            Some(resource(&s, r.record["dataset"].as_str().unwrap_or(""))?.1)
        }
        (Step::Change, RecordKind::Licence) => Some(
            licence(
                &s,
                r.record["operator"].as_str().unwrap_or(""),
                r.record["dataset"].as_str().unwrap_or(""),
                r.record["scenario"].as_str(),
            )?
            .1,
        ),
        _ => None,
    };
    let to = match step {
        Step::Transfer => Some(
            b.to.as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::BadName, "a transfer names the new owner in `to`")
                })?,
        ),
        _ => None,
    };
    Ok(Json(s.store.registry_step(
        &number,
        step,
        content.as_ref(),
        to,
        &auth.0.name,
        reason,
    )?))
}
