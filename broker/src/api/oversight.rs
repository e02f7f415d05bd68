//! Public oversight (社会监督、信用体系、公共数据目录): the public register and objections, which
//! need no token when the broker publishes them (`public_register` in its configuration), and,
//! for staff, objections to resolve and each operator's credit record.
//!
//! The register is built from the policy (scenarios), the ledger (spending per month), the jobs
//! (releases per month) and the suspensions: nothing in it is derived from a row of data, and
//! spending figures are what the operators' queries were charged, which depends only on what
//! they asked, never on the answers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{Moderators, Only, Overseers, Reviewers};
use super::{ApiResult, JsonBody, QueryString, first_line};
use crate::error::{ApiError, ErrorCode};
use crate::oversight::{
    CreditRecord, MAX_CONTACT, MAX_OPEN, MAX_SUBJECT, MAX_TEXT, MonthReleases, MonthSpend,
    NewObjection, Objection, ObjectionStatusView,
};
use crate::server::{Shared, current};
use crate::store::Role;

/// One active scenario (a grant in force): who may use which data for what, until when.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PublicScenario {
    operator: String,
    /// The scenario's name, if the grant names one.
    scenario: Option<String>,
    datasets: Vec<String>,
    purpose: String,
    /// `public-interest`, `commercial`, … as the policy says.
    usage: String,
    /// When the grant ends, in the policy's time zone.
    expires: String,
    /// `none`, `required` or `unlisted`: whether each job waits for a reviewer.
    review: String,
    /// Operators its reports are delivered to besides its own.
    recipients: Vec<String>,
}

/// A suspension in force, with its reason.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PublicSuspension {
    /// `operator`, `dataset`, `hold:operator`, `hold:dataset` or `platform`.
    kind: String,
    name: String,
    reason: String,
}

/// Objections by state.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ObjectionCounts {
    open: i64,
    upheld: i64,
    dismissed: i64,
}

/// The public register: what the platform does with the data it holds, without a data value.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PublicRegister {
    /// When this was made (Unix ms).
    generated_ms: i64,
    /// The broker's public key (hex ed25519): its receipts and audit checkpoints verify with it.
    public_key: String,
    /// The time zone months are counted in.
    time_zone: String,
    /// Grants in force.
    scenarios: Vec<PublicScenario>,
    /// Privacy loss charged per dataset and month.
    spend: Vec<MonthSpend>,
    /// Reports released per dataset and month.
    releases: Vec<MonthReleases>,
    /// Suspensions and release holds in force.
    suspensions: Vec<PublicSuspension>,
    /// Objections by state.
    objections: ObjectionCounts,
    /// Registered records (resources, licences, products) and whether each still stands.
    registrations: Vec<PublicRecord>,
}

/// A registered record as the public register lists it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PublicRecord {
    number: String,
    kind: String,
    owner: String,
    /// `active`, `objected` or `cancelled` (its certificates revoked).
    status: String,
    version: i64,
}

/// Refuses public requests unless the broker publishes its register.
pub(crate) fn published(s: &Shared) -> ApiResult<()> {
    if s.config.public_register {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "this broker does not publish a public register; its operator turns it on with `sluice init --public-register` or `\"public_register\": true` in config.json",
        ))
    }
}

/// `GET /public/register`: the public register (no token).
#[utoipa::path(
    get, path = "/public/register", tag = "public", operation_id = "public_register",
    responses((status = 200, description = "The register", body = PublicRegister))
)]
pub(crate) async fn register(State(s): State<Arc<Shared>>) -> ApiResult<Json<PublicRegister>> {
    published(&s)?;
    let (zone, scenarios) = {
        let cur = current(&s);
        let policy = cur.sandbox.engine().policy();
        let now = crate::audit::now_ms() / 1000;
        let zone = policy.time_zone.clone();
        let scenarios = policy
            .grants
            .iter()
            .filter(|g| g.expires.valid_at(&zone, now))
            .map(|g| PublicScenario {
                operator: g.operator.to_string(),
                scenario: g.scenario.clone(),
                datasets: g.datasets.iter().map(ToString::to_string).collect(),
                purpose: g.purpose.clone(),
                usage: g.usage.as_str().to_string(),
                expires: g.expires.describe(&zone),
                review: g.review.as_str().to_string(),
                recipients: g.recipients.iter().map(ToString::to_string).collect(),
            })
            .collect();
        (zone, scenarios)
    };
    let (open, upheld, dismissed) = s.store.objection_counts()?;
    Ok(Json(PublicRegister {
        generated_ms: crate::audit::now_ms(),
        public_key: s.store.public_key(),
        time_zone: zone.name.clone(),
        scenarios,
        spend: s.store.monthly_spend(zone.offset_minutes)?,
        releases: s.store.monthly_releases(zone.offset_minutes)?,
        suspensions: s
            .store
            .suspensions()?
            .into_iter()
            .map(|(kind, name, reason)| PublicSuspension { kind, name, reason })
            .collect(),
        objections: ObjectionCounts {
            open,
            upheld,
            dismissed,
        },
        registrations: s
            .store
            .registrations()?
            .into_iter()
            .map(|r| PublicRecord {
                number: r.number,
                kind: r.kind.as_str().into(),
                owner: r.owner,
                status: r.status,
                version: r.version,
            })
            .collect(),
    }))
}

/// An objection as filed.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectionBody {
    /// What it is about: a job id, a scenario, a dataset or an operator.
    subject: String,
    /// The objection.
    text: String,
    /// How to reach you, if you want to be (kept with the objection for reviewers; never
    /// published or written to the audit log).
    #[serde(default)]
    contact: Option<String>,
}

/// `POST /public/objections`: files an objection (no token); answers its tracking id.
#[utoipa::path(
    post, path = "/public/objections", tag = "public", operation_id = "file_objection", request_body = ObjectionBody,
    responses((status = 202, description = "Filed: keep the id to follow it", body = ObjectionStatusView))
)]
pub(crate) async fn file(
    State(s): State<Arc<Shared>>,
    peer: Option<axum::Extension<crate::listener::Peer>>,
    JsonBody(o): JsonBody<ObjectionBody>,
) -> ApiResult<Response> {
    published(&s)?;
    let (subject, text) = (o.subject.trim(), o.text.trim());
    let contact = o
        .contact
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT
        || text.is_empty()
        || text.len() > MAX_TEXT
        || contact.is_some_and(|c| c.len() > MAX_CONTACT)
    {
        return Err(ApiError::new(
            ErrorCode::BadObjection,
            ErrorCode::BadObjection.meaning(),
        ));
    }
    if let Some(axum::Extension(crate::listener::Peer(addr))) = peer {
        let allowed = s
            .objection_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(addr.ip(), std::time::Instant::now());
        if let Err(wait) = allowed {
            return Err(ApiError::new(
                ErrorCode::TooManyObjections,
                format!(
                    "this address filed {} objections in the last hour; try again later",
                    crate::oversight::MAX_PER_ADDRESS_PER_HOUR
                ),
            )
            .retry_after(wait));
        }
    }
    if s.store.objection_counts()?.0 >= MAX_OPEN {
        return Err(ApiError::new(
            ErrorCode::QueueFull,
            format!("{MAX_OPEN} objections are waiting for reviewers; try again later"),
        )
        .retry_after(3600));
    }
    let filed = s.store.file_objection(&NewObjection {
        subject,
        text,
        contact,
    })?;
    Ok((StatusCode::ACCEPTED, Json(ObjectionStatusView::from(filed))).into_response())
}

/// `GET /public/objections/{id}`: an objection's state, for whoever holds its tracking id.
#[utoipa::path(
    get, path = "/public/objections/{id}", tag = "public", operation_id = "objection_status",
    params(("id" = String, Path, description = "The tracking id `POST /public/objections` gave")),
    responses((status = 200, description = "Its state", body = ObjectionStatusView))
)]
pub(crate) async fn status(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ObjectionStatusView>> {
    published(&s)?;
    Ok(Json(objection(&s, &id)?.into()))
}

fn objection(s: &Shared, id: &str) -> ApiResult<Objection> {
    s.store
        .objection(id)?
        .ok_or_else(|| ApiError::not_found(format!("no objection `{}`", first_line(id))))
}

/// Which objections to list.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectionQuery {
    /// `open` (the default) or `all`.
    status: Option<String>,
}

/// Objections, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Objections {
    objections: Vec<Objection>,
}

/// `GET /v1/objections?status=open|all` (reviewers, admins, auditors).
#[utoipa::path(
    get, path = "/v1/objections", tag = "oversight", operation_id = "list_objections", params(ObjectionQuery),
    responses((status = 200, description = "Objections, newest first (at most 500)", body = Objections))
)]
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    _: Only<Moderators>,
    QueryString(q): QueryString<ObjectionQuery>,
) -> ApiResult<Json<Objections>> {
    let open_only = match q.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(_) => return Err(ApiError::new(ErrorCode::BadQuery, "status is open or all")),
    };
    Ok(Json(Objections {
        objections: s.store.objections(open_only, 500)?,
    }))
}

/// `GET /v1/objections/{id}` (reviewers, admins, auditors).
#[utoipa::path(
    get, path = "/v1/objections/{id}", tag = "oversight", operation_id = "get_objection",
    params(("id" = String, Path, description = "The objection's id")),
    responses((status = 200, description = "The objection", body = Objection))
)]
pub(crate) async fn one(
    State(s): State<Arc<Shared>>,
    _: Only<Moderators>,
    Path(id): Path<String>,
) -> ApiResult<Json<Objection>> {
    Ok(Json(objection(&s, &id)?))
}

/// A reviewer's resolution.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resolution {
    /// Why (recorded in the audit log and shown to the filer).
    reason: String,
    /// The operator it concerns, if any: an upheld objection counts on its credit record.
    #[serde(default)]
    operator: Option<String>,
}

/// `POST /v1/objections/{id}/{uphold|dismiss}` with a reason (reviewers).
#[utoipa::path(
    post, path = "/v1/objections/{id}/{decision}", tag = "oversight", operation_id = "resolve_objection", request_body = Resolution,
    params(("id" = String, Path, description = "The objection's id"),
           ("decision" = String, Path, description = "`uphold` or `dismiss`")),
    responses((status = 200, description = "The objection, resolved", body = Objection))
)]
pub(crate) async fn resolve(
    State(s): State<Arc<Shared>>,
    auth: Only<Reviewers>,
    Path((id, decision)): Path<(String, String)>,
    JsonBody(r): JsonBody<Resolution>,
) -> ApiResult<Json<Objection>> {
    let uphold = match decision.as_str() {
        "uphold" => true,
        "dismiss" => false,
        _ => return Err(ApiError::not_found("the decision is uphold or dismiss")),
    };
    let reason = super::reason(&r.reason)?;
    if let Some(op) = r.operator.as_deref() {
        let known = current(&s)
            .sandbox
            .engine()
            .policy()
            .grants
            .iter()
            .any(|g| g.operator.as_str() == op);
        if !known {
            return Err(ApiError::new(
                ErrorCode::BadName,
                format!("no grant names operator `{}`", first_line(op)),
            ));
        }
    }
    Ok(Json(s.store.resolve_objection(
        &id,
        uphold,
        r.operator.as_deref(),
        &auth.0.name,
        reason,
    )?))
}

/// Operators' credit records.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreditRecords {
    operators: Vec<CreditRecord>,
}

/// The operators a caller may see the records of: every operator with a grant, or for a
/// holder those granted one of its datasets.
fn operators_for(s: &Shared, auth: &super::auth::Auth) -> Vec<String> {
    let cur = current(s);
    let policy = cur.sandbox.engine().policy();
    let held = auth.held(policy);
    let mut ops: Vec<String> = policy
        .grants
        .iter()
        .filter(|g| {
            held.as_ref()
                .is_none_or(|h| g.datasets.iter().any(|d| h.contains(&d.to_string())))
        })
        .map(|g| g.operator.to_string())
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

/// `GET /v1/operators`: the credit record of every operator the caller oversees (reviewers,
/// admins, auditors; holders: operators granted their datasets).
#[utoipa::path(
    get, path = "/v1/operators", tag = "oversight", operation_id = "list_credit_records",
    responses((status = 200, description = "Credit records", body = CreditRecords))
)]
pub(crate) async fn credit_records(
    State(s): State<Arc<Shared>>,
    auth: Only<Overseers>,
) -> ApiResult<Json<CreditRecords>> {
    let operators = operators_for(&s, &auth)
        .iter()
        .map(|op| s.store.credit(op))
        .collect::<anyhow::Result<_>>()?;
    Ok(Json(CreditRecords { operators }))
}

/// `GET /v1/operators/{id}`: one operator's credit record (the same readers).
#[utoipa::path(
    get, path = "/v1/operators/{id}", tag = "oversight", operation_id = "get_credit_record",
    params(("id" = String, Path, description = "The operator id")),
    responses((status = 200, description = "Its credit record", body = CreditRecord))
)]
pub(crate) async fn credit_record(
    State(s): State<Arc<Shared>>,
    auth: Only<Overseers>,
    Path(id): Path<String>,
) -> ApiResult<Json<CreditRecord>> {
    if !operators_for(&s, &auth).contains(&id) {
        let why = if auth.0.role == Role::Holder {
            format!(
                "operator `{}` holds no grant on a dataset of `{}`",
                first_line(&id),
                auth.0.name
            )
        } else {
            format!("no grant names operator `{}`", first_line(&id))
        };
        return Err(ApiError::not_found(why));
    }
    Ok(Json(s.store.credit(&id)?))
}
