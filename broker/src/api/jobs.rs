//! Jobs: submission (with admission by policy, shared with the worker), and what their operator
//! (or staff) may read of them afterwards.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sluice_policy::{DatasetId, OperatorId, Policy, Review};
use sluice_runtime::Limits;

use super::auth::{Auth, Only, Operators};
use super::{
    ApiResult, MAX_SUBMIT_BODY, QueryString, content_type, first_line, parse_json, read_body,
};
use crate::error::{ApiError, ErrorCode};
use crate::keys::sha256_hex;
use crate::server::{MAX_WASM_BYTES, Shared, current, notify};
use crate::store::{JobId, JobInfo, JobState, NewJob, Role};

/// Loads a job the caller may see: its operator, or any reviewer/admin when `staff_ok`.
/// Who besides a job's own operator may see it.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Readers {
    /// Only its operator (cancelling).
    Owner,
    /// Its operator and the staff who oversee it: reviewers, admins, its datasets' holders
    /// (events).
    Staff,
    /// Its operator and its scenario's recipients once it succeeded (the report itself).
    Recipients,
    /// All of them (status, receipt).
    All,
}

/// The job, if `auth` may see it as `readers` says; 403 otherwise.
pub(crate) fn visible_job(
    s: &Shared,
    auth: &Auth,
    id: &JobId,
    readers: Readers,
) -> ApiResult<JobInfo> {
    let job = s
        .store
        .job(id.as_str())?
        .ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))?;
    let mine = auth.0.role == Role::Operator && job.operator == auth.0.name;
    let cur = current(s);
    let policy = cur.sandbox.engine().policy();
    let staff = match auth.0.role {
        Role::Operator => false,
        Role::Reviewer | Role::Admin | Role::Auditor => true,
        // A holder sees the jobs that declared one of its datasets.
        Role::Holder => auth
            .held(policy)
            .is_some_and(|held| job.datasets.iter().any(|d| held.contains(d))),
    };
    let recipient = || {
        auth.0.role == Role::Operator
            && job.state == JobState::Succeeded
            && recipients_of_job(policy, &job)
                .iter()
                .any(|r| r.as_str() == auth.0.name)
    };
    let allowed = mine
        || match readers {
            Readers::Owner => false,
            Readers::Staff => staff,
            Readers::Recipients => recipient(),
            Readers::All => staff || recipient(),
        };
    if allowed {
        Ok(job)
    } else if staff || recipient() {
        // The caller sees the job, just not this part of it.
        Err(ApiError::forbidden(format!(
            "your role may not read this of job `{id}`"
        )))
    } else {
        // The same answer as for a job that does not exist: ids show no one else's jobs.
        Err(ApiError::hidden(format!("no job `{id}`")))
    }
}

/// The operators that the grants a job of `operator` under `scenario` on `datasets` ran under
/// name as recipients (under the policy in force: a recipient the holder removes loses access).
pub(crate) fn recipients_of(
    policy: &Policy,
    operator: &str,
    scenario: Option<&str>,
    datasets: &[String],
) -> Vec<OperatorId> {
    let mut out: Vec<OperatorId> = policy
        .grants
        .iter()
        .filter(|g| g.operator.as_str() == operator && g.scenario.as_deref() == scenario)
        .filter(|g| {
            g.datasets
                .iter()
                .any(|d| datasets.iter().any(|n| n == d.as_str()))
        })
        .flat_map(|g| g.recipients.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// [`recipients_of`] a stored job.
fn recipients_of_job(policy: &Policy, job: &JobInfo) -> Vec<OperatorId> {
    recipients_of(
        policy,
        &job.operator,
        job.scenario.as_deref(),
        &job.datasets,
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitJson {
    purpose: String,
    #[serde(default)]
    params: String,
    datasets: Vec<String>,
    #[serde(default)]
    max_epsilon: Option<f64>,
    #[serde(default)]
    scenario: Option<String>,
    wasm_base64: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitQuery {
    purpose: Option<String>,
    #[serde(default)]
    params: String,
    datasets: Option<String>,
    max_epsilon: Option<f64>,
    scenario: Option<String>,
}

/// What a submission answers: the job's id, its first state and the sha256 of its wasm.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Submitted {
    #[schema(value_type = String)]
    id: JobId,
    state: JobState,
    wasm_sha256: String,
}

/// The body of `POST /v1/query`: the built-in SQL job's query, what to spend on it (one of
/// `epsilon`, `rho`, `accuracy`), and the declarations of any job.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryJson {
    purpose: String,
    sql: String,
    #[serde(default)]
    epsilon: Option<f64>,
    #[serde(default)]
    rho: Option<f64>,
    #[serde(default)]
    accuracy: Option<f64>,
    #[serde(default)]
    max_epsilon: Option<f64>,
    #[serde(default)]
    scenario: Option<String>,
}

/// `POST /v1/query`: one SQL query as a job of its own (the built-in SQL job,
/// [`sluice_runtime::sql_job`]), where a grant allows ad-hoc SQL. The query is planned first
/// (a refusal costs nothing and submits nothing); the job then takes the path of any job:
/// review where the grant says, the queue, the ledger, the audit log and a receipt.
#[utoipa::path(
    post, path = "/v1/query", tag = "jobs", request_body = QueryJson,
    responses((status = 202, description = "The query, accepted as a job of the built-in SQL job", body = Submitted))
)]
pub(crate) async fn query(
    State(s): State<Arc<Shared>>,
    auth: Only<Operators>,
    super::JsonBody(q): super::JsonBody<QueryJson>,
) -> ApiResult<Response> {
    use sluice_runtime::sql_job::{SQL_JOB, SqlParams};
    let operator = auth.operator()?;
    let sql_params = SqlParams {
        sql: q.sql,
        epsilon: q.epsilon,
        rho: q.rho,
        accuracy: q.accuracy,
    };
    let budget = sql_params
        .budget()
        .map_err(|m| ApiError::new(ErrorCode::BadBudget, m))?;
    // Which dataset it reads, and whether it is refused, from the query and the policy alone.
    let asker = sluice_runtime::privacy::Asker {
        scenario: q.scenario.clone(),
        ..sluice_runtime::privacy::Asker::new(operator.clone(), "query")
    };
    let (s2, sql) = (s.clone(), sql_params.sql.clone());
    let estimate =
        tokio::task::spawn_blocking(move || current(&s2).sandbox.estimate(asker, sql, budget))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::new(ErrorCode::QueryRefused, e.to_string()))?;
    let job = Submission {
        purpose: q.purpose,
        params: sql_params.to_params(),
        datasets: vec![estimate.dataset],
        max_epsilon: q.max_epsilon,
        scenario: q.scenario,
        wasm: SQL_JOB.as_bytes().to_vec(),
    };
    job.check(&s.limits)?;
    let admitted = admission(
        &s,
        &auth,
        &operator,
        &Declaration::of(&job, true),
        &|_, _| false,
    )?;
    let sha = sluice_runtime::sql_job::SQL_JOB_SHA256.clone();
    accepted(&s, &auth.0.name, &job, sha, &admitted)
}

/// What admission decided about a submission.
struct Admitted {
    /// Whether a reviewer must approve it first.
    needs_review: bool,
    /// Holders who must approve it too.
    holders_to_approve: Vec<String>,
}

/// A submission at the door: admitted by policy (whether it needs review, and which holders
/// must approve it too), then room for it in the queues.
fn admission(
    s: &Shared,
    auth: &Auth,
    operator: &OperatorId,
    job: &Declaration<'_>,
    listed: &dyn Fn(&sluice_policy::Grant, &DatasetId) -> bool,
) -> ApiResult<Admitted> {
    let admitted = {
        let cur = current(s);
        let policy = cur.sandbox.engine().policy();
        Admitted {
            needs_review: admit(policy, operator, job, listed).map_err(Refusal::into_api)?,
            holders_to_approve: holders_to_approve(policy, job.datasets),
        }
    };
    room_for(s, auth, job.datasets, admitted.needs_review)?;
    Ok(admitted)
}

/// Stores an admitted job and answers `202` with its id, first state and wasm sha256, and
/// where to follow it.
fn accepted(
    s: &Arc<Shared>,
    operator: &str,
    job: &Submission,
    wasm_sha256: String,
    admitted: &Admitted,
) -> ApiResult<Response> {
    let needs_review = admitted.needs_review;
    let (id, state) = s.store.submit(&NewJob {
        operator,
        purpose: &job.purpose,
        params: &job.params,
        wasm: &job.wasm,
        wasm_sha256: &wasm_sha256,
        datasets: &job.datasets,
        max_epsilon: job.max_epsilon,
        needs_review,
        holders_to_approve: &admitted.holders_to_approve,
        scenario: job.scenario.as_deref(),
    })?;
    notify(s);
    if needs_review {
        // Its risk report is ready when a reviewer comes.
        super::plans::risk_report_in_background(s.clone(), id.to_string());
    }
    let location = format!("/v1/jobs/{id}");
    let body = Submitted {
        id,
        state,
        wasm_sha256,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// `POST /v1/jobs`.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body(description = "The job: JSON with the component in base64, or the component itself as application/wasm with its metadata in the query string (purpose, params, datasets, max_epsilon, scenario)", content(
        (SubmitJson = "application/json"),
        (Vec<u8> = "application/wasm"),
    )),
    params(SubmitQuery),
    responses(
        (status = 202, description = "Accepted: queued, or waiting for review (`Location` names the job)", body = Submitted),
    )
)]
pub(crate) async fn submit(
    State(s): State<Arc<Shared>>,
    auth: Only<Operators>,
    job: Submission,
) -> ApiResult<Response> {
    job.check(&s.limits)?;
    let operator = auth.operator()?;
    let sha = sha256_hex(&job.wasm);
    let listed = |grant: &sluice_policy::Grant, d: &DatasetId| {
        grant.allowed_wasm.contains(&sha)
            || s.store
                .build_allowed(operator.as_str(), d.as_str(), &sha)
                .unwrap_or(false)
    };
    let admitted = admission(&s, &auth, &operator, &Declaration::of(&job, false), &listed)?;
    // Compile now: an invalid job is refused at the door, and the first run skips compilation.
    let s2 = s.clone();
    let job = tokio::task::spawn_blocking(move || {
        current(&s2).sandbox.precompile(&job.wasm).map(|_| job)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::new(ErrorCode::InvalidWasm, e.to_string()))?;
    accepted(&s, &auth.0.name, &job, sha, &admitted)
}

/// A job as submitted: application/wasm with its metadata in the query string, or
/// application/json with the wasm in base64.
pub(crate) struct Submission {
    pub(crate) purpose: String,
    pub(crate) params: String,
    pub(crate) datasets: Vec<String>,
    pub(crate) max_epsilon: Option<f64>,
    pub(crate) scenario: Option<String>,
    pub(crate) wasm: Vec<u8>,
}

impl<S: Send + Sync> FromRequest<S> for Submission {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let (mut parts, body) = req.into_parts();
        let q =
            <QueryString<SubmitQuery> as axum::extract::FromRequestParts<S>>::from_request_parts(
                &mut parts, state,
            )
            .await;
        let (headers, b) = read_body(Request::from_parts(parts, body), state, MAX_SUBMIT_BODY)
            .await
            .map_err(|e| match e.code() {
                ErrorCode::BodyTooLarge => ApiError::new(
                    ErrorCode::BodyTooLarge,
                    format!(
                        "the submission is larger than {MAX_SUBMIT_BODY} bytes: a job is at most {MAX_WASM_BYTES} bytes (40 MiB) of wasm, which is about {MAX_SUBMIT_BODY} bytes as base64 in JSON"
                    ),
                ),
                _ => e,
            })?;
        let ct = content_type(&headers);
        let job = if ct.starts_with("application/json") {
            let j: SubmitJson = parse_json(&headers, &b)?;
            let wasm = base64::engine::general_purpose::STANDARD
                .decode(j.wasm_base64.as_bytes())
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::BadWasmEncoding,
                        format!("wasm_base64 is not valid base64: {e}"),
                    )
                })?;
            Self {
                purpose: j.purpose,
                params: j.params,
                datasets: j.datasets,
                max_epsilon: j.max_epsilon,
                scenario: j.scenario,
                wasm,
            }
        } else if ct.starts_with("application/wasm") || ct.starts_with("application/octet-stream") {
            let QueryString(q) = q?;
            Self {
                purpose: q.purpose.unwrap_or_default(),
                params: q.params,
                datasets: q
                    .datasets
                    .unwrap_or_default()
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect(),
                max_epsilon: q.max_epsilon,
                scenario: q.scenario,
                wasm: b.to_vec(),
            }
        } else {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "submit the job as application/wasm (metadata in the query string) or as application/json with wasm_base64",
            ));
        };
        Ok(Self {
            purpose: job.purpose.trim().to_string(),
            ..job
        })
    }
}

impl Submission {
    /// Refuses fields out of range, before anything is looked up.
    pub(crate) fn check(&self, limits: &Limits) -> ApiResult<()> {
        if self.purpose.is_empty() || self.purpose.chars().count() > 500 {
            return Err(ApiError::new(
                ErrorCode::BadPurpose,
                "state the job's purpose (1 to 500 characters)",
            ));
        }
        if self.params.len() > limits.max_params_bytes {
            return Err(ApiError::new(
                ErrorCode::ParamsTooLarge,
                format!(
                    "the parameters are {} bytes; at most {} are accepted",
                    self.params.len(),
                    limits.max_params_bytes
                ),
            ));
        }
        if self.wasm.is_empty() || self.wasm.len() > MAX_WASM_BYTES {
            return Err(ApiError::new(
                ErrorCode::BadWasm,
                format!("a job is 1 byte to {MAX_WASM_BYTES} bytes of wasm"),
            ));
        }
        if self.datasets.is_empty() || self.datasets.len() > 16 {
            return Err(ApiError::new(
                ErrorCode::BadDatasets,
                "name the datasets the job will use (1 to 16)",
            ));
        }
        if let Some(m) = self.max_epsilon
            && !(m.is_finite() && m > 0.0)
        {
            return Err(ApiError::new(
                ErrorCode::BadEpsilon,
                "max_epsilon must be a number above 0",
            ));
        }
        Ok(())
    }
}

/// What a job declares, as admission reads it.
#[derive(Clone, Copy)]
pub(crate) struct Declaration<'a> {
    /// The datasets it will use.
    pub(crate) datasets: &'a [String],
    /// The scenario it runs under.
    pub(crate) scenario: Option<&'a str>,
    /// Its ε cap per dataset.
    pub(crate) max_epsilon: Option<f64>,
    /// Its parameter string.
    pub(crate) params: &'a str,
    /// Whether it is the built-in SQL job (`sluice query`).
    pub(crate) sql_job: bool,
}

impl<'a> Declaration<'a> {
    /// What a submission declares.
    pub(crate) fn of(job: &'a Submission, sql_job: bool) -> Self {
        Self {
            datasets: &job.datasets,
            scenario: job.scenario.as_deref(),
            max_epsilon: job.max_epsilon,
            params: &job.params,
            sql_job,
        }
    }
}

/// Why a job may not run, from the policy alone.
pub(crate) enum Refusal {
    /// No grant covers a dataset for the operator today.
    NotGranted(String),
    /// The job's ε cap exceeds a grant's.
    Epsilon(String),
    /// A grant pins or forbids the job's parameters.
    Params(String),
}

impl Refusal {
    pub(crate) fn into_api(self) -> ApiError {
        match self {
            Self::NotGranted(m) | Self::Params(m) => ApiError::forbidden(m),
            Self::Epsilon(m) => ApiError::new(ErrorCode::BadEpsilon, m),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotGranted(m) | Self::Epsilon(m) | Self::Params(m) => f.write_str(m),
        }
    }
}

/// The holders who must approve a job on `datasets`: those of datasets whose grade says so.
fn holders_to_approve(policy: &Policy, datasets: &[String]) -> Vec<String> {
    let mut holders: Vec<String> = datasets
        .iter()
        .filter_map(|d| policy.datasets.get(&DatasetId::new(d).ok()?))
        .filter(|d| policy.grade(d.classification).holder_approval)
        .map(|d| d.holder.clone())
        .collect();
    holders.sort();
    holders.dedup();
    holders
}

/// Admission by policy, at submission and again when a worker starts the job: every dataset
/// granted to `operator` now, the job's parameters as each grant allows, and its ε cap within each grant's per-job cap in the
/// dataset's own measure (on zCDP datasets it caps ρ at ε²/2, as the runtime applies it).
/// Returns whether a reviewer must approve the job first: a grant requires review, or allows
/// only listed builds and `listed` says this one is not (on that grant and dataset).
pub(crate) fn admit(
    policy: &Policy,
    operator: &OperatorId,
    job: &Declaration<'_>,
    listed: &dyn Fn(&sluice_policy::Grant, &DatasetId) -> bool,
) -> std::result::Result<bool, Refusal> {
    let Declaration {
        datasets,
        scenario,
        max_epsilon,
        params,
        sql_job,
    } = *job;
    let now = std::time::SystemTime::now();
    let mut review = false;
    for d in datasets {
        // A name that cannot be a dataset's is granted to no one: the same answer as any other.
        let id = DatasetId::new(d).map_err(|_| {
            Refusal::NotGranted(format!(
                "dataset `{}` is not granted to operator `{operator}`",
                first_line(d)
            ))
        })?;
        let grant = policy
            .authorize_in(operator, &id, scenario, now)
            .map_err(|d| Refusal::NotGranted(d.to_string()))?;
        grant
            .params
            .check(params)
            .map_err(|why| Refusal::Params(format!("on `{id}`: {why}")))?;
        if sql_job && !grant.adhoc_sql {
            return Err(Refusal::NotGranted(format!(
                "the grant of operator `{operator}` on `{id}` does not allow ad-hoc SQL (the policy sets `adhoc_sql = true` on grants that do); submit a job instead"
            )));
        }
        let zcdp = policy
            .datasets
            .get(&id)
            .is_some_and(|d| d.measure == sluice_policy::PrivacyMeasure::Zcdp);
        match max_epsilon {
            Some(m) if zcdp && m * m / 2.0 > grant.rho_per_job => {
                return Err(Refusal::Epsilon(format!(
                    "max_epsilon {m} caps ρ at {} (ε²/2) on the zCDP dataset `{id}`, above the grant's per-job ρ cap of {}",
                    m * m / 2.0,
                    grant.rho_per_job
                )));
            }
            Some(m) if !zcdp && m > grant.epsilon_per_job => {
                return Err(Refusal::Epsilon(format!(
                    "max_epsilon {m} exceeds the grant's per-job cap of {} on `{id}`",
                    grant.epsilon_per_job
                )));
            }
            _ => {}
        }
        review |= match grant.review {
            Review::Required => true,
            Review::Unlisted => !listed(grant, &id),
            Review::None => false,
        };
    }
    Ok(review)
}

/// Refuses a submission when its operator or a dataset is suspended, or the queue it would wait
/// in is full: the review queue (per operator and in total) or the run queue.
pub(crate) fn room_for(
    s: &Shared,
    auth: &Auth,
    datasets: &[String],
    needs_review: bool,
) -> ApiResult<()> {
    if let Some(why) = s.store.suspensions()?.iter().find(|(k, n, _)| {
        k == "all"
            || (k == "operator" && *n == auth.0.name)
            || (k == "dataset" && datasets.contains(n))
    }) {
        return Err(ApiError::forbidden(if why.0 == "all" {
            format!("the platform is frozen ({}); no job is accepted", why.2)
        } else {
            format!("{} `{}` is suspended", why.0, why.1)
        }));
    }
    let (code, message, retry_after) = if needs_review {
        // Jobs waiting for review hold their wasm in the database: bounded per operator and in
        // total, like the run queue.
        let (mine, all) = s.store.pending_review_counts(&auth.0.name)?;
        let message = if mine >= s.config.max_pending_reviews_per_operator {
            format!(
                "{mine} of your jobs are waiting for review (at most {} per operator); wait for decisions or cancel some",
                s.config.max_pending_reviews_per_operator
            )
        } else if all >= s.config.max_pending_reviews {
            format!(
                "{all} jobs are waiting for review (at most {}); try again later",
                s.config.max_pending_reviews
            )
        } else {
            return Ok(());
        };
        (ErrorCode::ReviewQueueFull, message, 60)
    } else if s.store.queued()? >= s.config.max_queued {
        (
            ErrorCode::QueueFull,
            format!("{} jobs are queued; try again later", s.config.max_queued),
            5,
        )
    } else {
        return Ok(());
    };
    Err(ApiError::new(code, message).retry_after(retry_after))
}

/// The jobs a caller may see, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobList {
    jobs: Vec<JobInfo>,
}

/// `GET /v1/jobs`: an operator's own jobs, or every recent job for staff.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", operation_id = "list_jobs",
    responses((status = 200, description = "An operator's own jobs (and those its scenarios deliver to it), or every recent job for staff; newest first, at most 200", body = JobList))
)]
pub(crate) async fn list(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<JobList>> {
    let jobs = match auth.0.role {
        Role::Operator => {
            let mut jobs = s.store.jobs_of(&auth.0.name, 200)?;
            jobs.extend(received(&s, &auth.0.name)?);
            jobs.sort_by_key(|j| std::cmp::Reverse(j.created_ms));
            jobs
        }
        Role::Reviewer | Role::Admin | Role::Auditor => s.store.jobs_recent(200)?,
        Role::Holder => {
            let held = auth
                .held(current(&s).sandbox.engine().policy())
                .unwrap_or_default();
            let mut jobs = s.store.jobs_recent(200)?;
            jobs.retain(|j| j.datasets.iter().any(|d| held.contains(d)));
            jobs
        }
    };
    Ok(Json(JobList { jobs }))
}

/// The succeeded jobs of other operators whose scenario names `recipient`.
fn received(s: &Shared, recipient: &str) -> Result<Vec<JobInfo>, ApiError> {
    let cur = current(s);
    let policy = cur.sandbox.engine().policy();
    let mut out = Vec::new();
    let mut senders: Vec<&OperatorId> = policy
        .grants
        .iter()
        .filter(|g| g.recipients.iter().any(|r| r.as_str() == recipient))
        .map(|g| &g.operator)
        .collect();
    senders.sort();
    senders.dedup();
    for op in senders {
        let mut jobs = s.store.jobs_of(op.as_str(), 200)?;
        jobs.retain(|j| {
            j.state == JobState::Succeeded
                && recipients_of_job(policy, j)
                    .iter()
                    .any(|r| r.as_str() == recipient)
        });
        out.extend(jobs);
    }
    Ok(out)
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "The job", body = crate::store::JobInfo))
)]
pub(crate) async fn status(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<JobInfo>> {
    Ok(Json(visible_job(&s, &auth, &id, Readers::All)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultQuery {
    format: Option<String>,
}

/// `GET /v1/jobs/{id}/result`: the released report, as JSON or CSV (its operator, and its
/// scenario's recipients: each of their fetches is an audit entry).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/result", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`"), ResultQuery),
    responses((status = 200, description = "The released report: JSON (title, text, tables with 95% half-widths, scalars) or CSV", content(
        (serde_json::Value = "application/json"),
        (String = "text/csv"),
    )))
)]
pub(crate) async fn result(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
    QueryString(q): QueryString<ResultQuery>,
) -> ApiResult<Response> {
    let job = visible_job(&s, &auth, &id, Readers::Recipients)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::new(ErrorCode::BadFormat, "format is json or csv")),
    };
    let Some((report, _)) = s.store.result(id.as_str(), csv)? else {
        return Err(ApiError::new(
            ErrorCode::NotReleased,
            format!(
                "job `{id}` is {}; only succeeded jobs have a report{}",
                job.state.as_str(),
                held_note(job.state)
            ),
        ));
    };
    // The product-operation right, used: a recipient's fetch is on the record.
    if job.operator != auth.0.name {
        s.store.record(
            crate::audit::NewEntry::new("report.delivered", &auth.0.name)
                .job(id.as_str())
                .operator(&auth.0.name)
                .detail(
                    serde_json::json!({ "from_operator": job.operator, "scenario": job.scenario }),
                ),
        )?;
    }
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    Ok(([(header::CONTENT_TYPE, ct)], report).into_response())
}

/// `GET /v1/jobs/{id}/receipt`: the signed receipt of a released report.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/receipt", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "The signed receipt of the released report", body = crate::keys::Receipt))
)]
pub(crate) async fn receipt(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Response> {
    let job = visible_job(&s, &auth, &id, Readers::All)?;
    let Some((_, receipt)) = s.store.result(id.as_str(), false)? else {
        return Err(ApiError::new(
            ErrorCode::NotReleased,
            format!(
                "job `{id}` is {}; only succeeded jobs have a receipt{}",
                job.state.as_str(),
                held_note(job.state)
            ),
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], receipt).into_response())
}

/// `GET /v1/jobs/{id}/wasm`: the exact bytes that run (its operator, reviewers, admins,
/// auditors and its datasets' holders), to rebuild the job from source and compare.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/wasm", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "The exact component that runs", content((Vec<u8> = "application/wasm"))))
)]
pub(crate) async fn wasm(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Response> {
    let job = visible_job(&s, &auth, &id, Readers::Staff)?;
    let bytes = s
        .store
        .wasm(&job.wasm_sha256)?
        .ok_or_else(|| ApiError::not_found(format!("job `{id}` no longer holds its wasm")))?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

/// `GET /v1/jobs/{id}/log`: the job's log lines (its operator, and the staff who oversee it).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/log", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "The job's log lines", body = crate::store::JobLog))
)]
pub(crate) async fn log(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<crate::store::JobLog>> {
    visible_job(&s, &auth, &id, Readers::Staff)?;
    let log = s
        .store
        .job_log(id.as_str())?
        .ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))?;
    Ok(Json(log))
}

/// What a held job's operator is told: why there is no report yet.
fn held_note(state: JobState) -> &'static str {
    if state == JobState::Held {
        " (its operator or a dataset was suspended, or its releases held, while it ran: a reviewer decides whether the report is released)"
    } else {
        ""
    }
}

/// A job's state after a change a caller asked for.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StateChanged {
    #[schema(value_type = String)]
    pub(crate) id: JobId,
    pub(crate) state: JobState,
}

/// `POST /v1/jobs/{id}/cancel`: cancels a job that has not started (its operator only).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "Cancelled", body = StateChanged))
)]
pub(crate) async fn cancel(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<StateChanged>> {
    visible_job(&s, &auth, &id, Readers::Owner)?;
    s.store.cancel(id.as_str(), &auth.0.name)?;
    Ok(Json(StateChanged {
        id,
        state: JobState::Cancelled,
    }))
}

/// The data of one server-sent event.
#[derive(Serialize)]
struct EventData<'a> {
    at_ms: i64,
    kind: &'a str,
    detail: &'a serde_json::Value,
}

/// `GET /v1/jobs/{id}/events`: the job's events as server-sent events, until it ends.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "Server-sent events, one per step (`queued`, `running`, `query`, `log`, `released`, ...), each `data` a JSON object with `at_ms`, `kind` and `detail`; the stream ends with the job", content((String = "text/event-stream"))))
)]
pub(crate) async fn events(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<
    Sse<impl futures_util::Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>>,
> {
    visible_job(&s, &auth, &id, Readers::Staff)?;
    let following = s.store.follow(id.as_str())?;
    let stream = futures_util::stream::unfold(
        (s, following, 0i64, false, std::collections::VecDeque::new()),
        |(s, following, mut after, mut done, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    let e: crate::store::Event = e;
                    let ev = SseEvent::default()
                        .event(e.kind.clone())
                        .id(e.id.to_string())
                        .json_data(EventData {
                            at_ms: e.at_ms,
                            kind: &e.kind,
                            detail: &e.detail,
                        })
                        .unwrap_or_else(|err| SseEvent::default().comment(err.to_string()));
                    return Some((Ok(ev), (s, following, after, done, pending)));
                }
                if done || s.closing.load(Ordering::SeqCst) {
                    return None;
                }
                let woken = following.woken().notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let (store, job) = (s.store.clone(), following.job().to_string());
                let found = tokio::task::spawn_blocking(move || store.events(&job, after)).await;
                match found {
                    Ok(Ok(evs)) if !evs.is_empty() => {
                        after = evs.last().map_or(after, |e| e.id);
                        done = evs.iter().any(|e| {
                            matches!(
                                e.kind.as_str(),
                                "released" | "failed" | "rejected" | "cancelled" | "held"
                            )
                        });
                        pending.extend(evs);
                    }
                    Ok(Ok(_)) => {
                        // Another process (e.g. `sluice token create`) may write without waking
                        // us: look again every second regardless.
                        let _ = tokio::time::timeout(Duration::from_secs(1), woken).await;
                    }
                    _ => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
