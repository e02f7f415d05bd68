//! Reviewers: the queue of jobs waiting for a decision, the decision, and the audit log (which
//! holders' admins read too).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::auth::{Approvers, Only, Overseers, QueueReaders};
use super::jobs::StateChanged;
use super::{ApiResult, JsonBody, QueryString};
use crate::audit;
use crate::error::{ApiError, ErrorCode};
use crate::server::{Shared, current, notify};
use crate::store::{JobId, JobInfo, Role};

/// Jobs waiting for a reviewer, oldest first: pending review, and held at release.
#[derive(Serialize)]
pub(crate) struct Pending {
    pending: Vec<JobInfo>,
    held: Vec<JobInfo>,
}

/// `GET /v1/reviews`.
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

#[derive(Deserialize)]
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
    if r.reason.trim().is_empty() || r.reason.len() > 2000 {
        return Err(ApiError::new(
            ErrorCode::BadReason,
            "give a reason (1 to 2000 bytes)",
        ));
    }
    let (store, who, role, reason) = (&s.store, &auth.0.name, auth.0.role, r.reason.trim());
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

#[derive(Deserialize)]
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
#[derive(Serialize)]
pub(crate) struct AuditPage {
    entries: Vec<audit::Entry>,
    next_after: Option<i64>,
}

/// `GET /v1/audit?job=&operator=&dataset=&after=&limit=`.
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
