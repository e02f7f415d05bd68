//! Reviewers: the queue of jobs waiting for a decision, the decision, and the audit log (which
//! holders' admins read too).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use serde::{Deserialize, Serialize};

use super::auth::{Approvers, Only, Overseers, QueueReaders};
use super::jobs::StateChanged;
use super::{ApiResult, JsonBody, QueryString};
use crate::audit;
use crate::error::ApiError;
use crate::server::{Shared, current, notify};
use crate::store::{JobId, JobInfo, Role};

/// Jobs waiting for a reviewer, oldest first: pending review, and held at release.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Pending {
    pending: Vec<JobInfo>,
    held: Vec<JobInfo>,
}

/// `GET /v1/reviews`.
#[utoipa::path(
    get, path = "/v1/reviews", tag = "reviews",
    responses((status = 200, description = "Jobs waiting for review, and jobs held at release", body = Pending))
)]
pub(crate) async fn pending(
    State(s): State<Arc<Shared>>,
    auth: Only<QueueReaders>,
) -> ApiResult<Json<Pending>> {
    // A holder sees the jobs that wait for its approval.
    if auth.0.role == Role::Holder {
        let mut pending = s.store.pending_reviews()?;
        pending.retain(|j| j.holders_to_approve.contains(&auth.0.name));
        return Ok(Json(Pending {
            pending,
            held: vec![],
        }));
    }
    Ok(Json(Pending {
        pending: s.store.pending_reviews()?,
        held: s.store.held_jobs()?,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewBody {
    reason: String,
    /// With `approve`: also allow this build for the job's operator and datasets, so that under
    /// `review = "unlisted"` it runs without review next time.
    #[serde(default)]
    allow: bool,
}

/// What a reviewer decides about a job.
enum Decision {
    /// A pending job may run.
    Approve,
    /// A pending job may not.
    Reject,
    /// A held job's report is released, with its receipt.
    Release,
    /// A held job's report is deleted.
    Discard,
}

/// `POST /v1/reviews/{id}/{approve|reject|release|discard}` with a reason.
#[utoipa::path(
    post, path = "/v1/reviews/{id}/{decision}", tag = "reviews", request_body = ReviewBody,
    params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`"), ("decision" = String, Path, description = "`approve` or `reject` (pending jobs), `release` or `discard` (held jobs)")),
    responses((status = 200, description = "The job's new state", body = StateChanged))
)]
pub(crate) async fn decide(
    State(s): State<Arc<Shared>>,
    auth: Only<Approvers>,
    Path((id, decision)): Path<(String, String)>,
    JsonBody(r): JsonBody<ReviewBody>,
) -> ApiResult<Json<StateChanged>> {
    let decision = match decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        "release" => Decision::Release,
        "discard" => Decision::Discard,
        _ => {
            return Err(ApiError::not_found(
                "the decision is approve or reject (pending jobs), release or discard (held jobs)",
            ));
        }
    };
    let id: JobId = id.parse().map_err(ApiError::not_found)?;
    let reason = super::reason(&r.reason)?;
    let (store, who, role) = (&s.store, &auth.0.name, auth.0.role);
    if role == Role::Holder && matches!(decision, Decision::Release | Decision::Discard) {
        return Err(ApiError::forbidden(
            "held jobs are released or discarded by a reviewer",
        ));
    }
    let state = match decision {
        Decision::Approve | Decision::Reject => {
            let approve = matches!(decision, Decision::Approve);
            // An approval names the risk report it was made on, when one was made (reading it,
            // `GET /v1/jobs/{id}/risk`, makes and keeps it; `sluice review approve` does so
            // first). Making one here could run the job for longer than a request may take.
            let risk = if approve {
                super::plans::kept_risk(&s, &id)?
                    .map(|r| serde_json::json!({ "level": r.level, "sha256": r.sha256 }))
            } else {
                None
            };
            let verdict = crate::store::Verdict {
                who,
                role,
                approve,
                allow: approve && r.allow,
                reason,
                risk: risk.as_ref(),
            };
            store.decide(id.as_str(), &verdict)?
        }
        Decision::Release => store.release_held(id.as_str(), who, reason)?,
        Decision::Discard => store.discard_held(id.as_str(), who, reason)?,
    };
    notify(&s);
    Ok(Json(StateChanged { id, state }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    job: Option<String>,
    operator: Option<String>,
    dataset: Option<String>,
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

/// One page of the audit log, and where the next one starts.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<audit::Entry>,
    next_after: Option<i64>,
}

/// `GET /v1/audit?job=&operator=&dataset=&after=&limit=`.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "A page of the audit log, oldest first", body = AuditPage))
)]
pub(crate) async fn audit_log(
    State(s): State<Arc<Shared>>,
    auth: Only<Overseers>,
    QueryString(q): QueryString<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    // A holder reads the entries about one of its own datasets.
    if auth.0.role == Role::Holder {
        let Some(dataset) = q.dataset.as_deref() else {
            return Err(ApiError::forbidden(
                "a holder reads the audit log of one of its datasets: add ?dataset=<name>",
            ));
        };
        auth.may_act_on(current(&s).sandbox.engine().policy(), dataset)?;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = s.store.audit_entries(
        q.job.as_deref(),
        q.operator.as_deref(),
        q.dataset.as_deref(),
        q.after,
        limit,
    )?;
    let next_after = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

/// The audit log as the broker verifies it: the hash chain from the first entry and every
/// signed checkpoint, with the broker's public key.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditVerdict {
    /// Whether the whole log verified.
    ok: bool,
    /// Entries checked (up to the first bad one).
    entries: i64,
    /// Signed checkpoints checked.
    checkpoints: usize,
    /// The last checkpointed sequence number.
    last_checkpoint: Option<i64>,
    /// The first bad sequence number, when the log is broken.
    broken_at: Option<i64>,
    /// What is wrong there.
    problem: Option<String>,
    /// The key the checkpoints were checked with (hex ed25519). An independent check uses the
    /// key given at `sluice init`: `sluice audit verify --public-key`.
    public_key: String,
}

/// `GET /v1/audit/verify`: verifies the whole audit log now (reviewers, admins, auditors and
/// holders: the answer names no entry's contents).
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The verdict on the whole log", body = AuditVerdict))
)]
pub(crate) async fn audit_verify(
    State(s): State<Arc<Shared>>,
    _: Only<Overseers>,
) -> ApiResult<Json<AuditVerdict>> {
    let public_key = s.store.public_key();
    let dir = s.store.dir().to_path_buf();
    let key = crate::keys::public_key(&public_key).map_err(ApiError::internal)?;
    // A read-only connection of its own: verifying a long log never holds up the writers.
    let verdict = tokio::task::spawn_blocking(move || {
        let conn = crate::store::Store::open_conn_readonly(&dir)?;
        audit::verify(&conn, &key, Some(&crate::store::checkpoint_path(&dir)))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(match verdict {
        Ok(v) => AuditVerdict {
            ok: true,
            entries: v.entries,
            checkpoints: v.checkpoints,
            last_checkpoint: v.last_checkpoint,
            broken_at: None,
            problem: None,
            public_key,
        },
        Err(b) => AuditVerdict {
            ok: false,
            entries: b.seq - 1,
            checkpoints: 0,
            last_checkpoint: None,
            broken_at: Some(b.seq),
            problem: Some(b.problem),
            public_key,
        },
    }))
}

/// A receipt to verify, with the report it should cover.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiptCheck {
    /// The receipt, as `GET /v1/jobs/{id}/receipt` gave it.
    receipt: serde_json::Value,
    /// The report's bytes as text (JSON or CSV), to check that the receipt covers it.
    report: Option<String>,
}

/// What verifying a receipt found.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReceiptVerdict {
    /// Whether the signature is this broker's and (when a report was given) covers the report.
    valid: bool,
    /// Why not, when not.
    problem: Option<String>,
    /// Whether a report was checked against it.
    report_checked: bool,
    /// The receipt's job, operator, cost and release entry, when it parsed.
    job: Option<String>,
    operator: Option<String>,
    epsilon: Option<f64>,
    rho: Option<f64>,
    audit_seq: Option<i64>,
    /// The key it was checked with (hex ed25519).
    public_key: String,
}

/// Largest receipt check: a receipt and its report.
const MAX_RECEIPT_CHECK: usize = 8 << 20;

/// `POST /v1/receipts/verify`: checks a receipt's signature against this broker's key and,
/// given the report, that it covers it (any signed-in caller; nothing is stored). Offline, the
/// same check is `sluice receipt verify` with the broker's public key.
#[utoipa::path(
    post, path = "/v1/receipts/verify", tag = "audit", request_body = ReceiptCheck,
    responses((status = 200, description = "Whether the receipt is this broker's and covers the report", body = ReceiptVerdict))
)]
pub(crate) async fn receipt_verify(
    State(s): State<Arc<Shared>>,
    _: super::auth::Auth,
    req: Request,
) -> ApiResult<Json<ReceiptVerdict>> {
    let (headers, body) = super::read_body(req, &(), MAX_RECEIPT_CHECK).await?;
    let check: ReceiptCheck = super::parse_json(&headers, &body)?;
    let public_key = s.store.public_key();
    let key = crate::keys::public_key(&public_key).map_err(ApiError::internal)?;
    let receipt: Result<crate::keys::Receipt, _> = serde_json::from_value(check.receipt);
    let mut verdict = ReceiptVerdict {
        valid: false,
        problem: None,
        report_checked: check.report.is_some(),
        job: None,
        operator: None,
        epsilon: None,
        rho: None,
        audit_seq: None,
        public_key,
    };
    let receipt = match receipt {
        Ok(r) => r,
        Err(e) => {
            verdict.problem = Some(format!(
                "this is not a Sluice receipt: {}",
                super::first_line(&e.to_string())
            ));
            return Ok(Json(verdict));
        }
    };
    let checked = match &check.report {
        Some(report) => receipt.verify(&key, report.as_bytes()),
        None => receipt.verify_signature(&key),
    };
    verdict.valid = checked.is_ok();
    verdict.problem = checked.err().map(|e| e.to_string());
    verdict.job = Some(receipt.job);
    verdict.operator = Some(receipt.operator);
    verdict.epsilon = Some(receipt.epsilon);
    verdict.rho = Some(receipt.rho);
    verdict.audit_seq = Some(receipt.audit_seq);
    Ok(Json(verdict))
}
