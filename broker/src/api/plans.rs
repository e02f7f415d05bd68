//! Whole-job plans ([`sluice_runtime::plan`]): a dry run of a job on mock data drawn from the
//! policy's public metadata, against what the real ledger has left. For an operator before
//! submitting (`POST /v1/plan`, the body of a submission), and for the staff who review a job
//! (`GET /v1/jobs/{id}/plan`). Nothing is charged, no data is read and nothing is released.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sluice_policy::{DatasetId, OperatorId};
use sluice_runtime::JobRequest;
use sluice_runtime::plan::JobPlan;
use tokio::sync::Semaphore;

use super::ApiResult;
use super::auth::{Auth, Only, Operators};
use super::jobs::{Readers, Submission, admit, visible_job};
use crate::error::{ApiError, ErrorCode};
use crate::server::{Shared, current};
use crate::store::JobId;

/// Plans asked for that run at once: each runs a job twice, on a blocking thread.
const MAX_PLANS: usize = 2;

/// A broker's plan permits: [`MAX_PLANS`] for plans asked for, which are refused (429) when
/// none is free, and one for risk reports made in the background, which wait their turn, so
/// that background work never refuses an operator or a reviewer.
pub(crate) struct PlanPermits {
    asked: Semaphore,
    background: Semaphore,
}

impl Default for PlanPermits {
    fn default() -> Self {
        Self {
            asked: Semaphore::new(MAX_PLANS),
            background: Semaphore::new(1),
        }
    }
}

/// What a plan runs: a job and its declarations.
struct Planned {
    operator: OperatorId,
    wasm: Vec<u8>,
    params: String,
    datasets: Vec<String>,
    max_epsilon: Option<f64>,
    scenario: Option<String>,
}

impl Planned {
    /// What a submitted job runs: its stored wasm and its declarations.
    fn of_job(s: &Shared, job: &crate::store::JobInfo) -> ApiResult<Self> {
        let wasm = s.store.wasm(&job.wasm_sha256)?.ok_or_else(|| {
            ApiError::not_found(format!("job `{}` no longer holds its wasm", job.id))
        })?;
        let operator = job
            .operator
            .parse()
            .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?;
        Ok(Self {
            operator,
            wasm,
            params: job.params.clone(),
            datasets: job.datasets.clone(),
            max_epsilon: job.max_epsilon,
            scenario: job.scenario.clone(),
        })
    }
}

/// `POST /v1/plan`: the plan of a job not yet submitted (the body of `POST /v1/jobs`). Refused
/// at the door as a submission would be (grants, scenario, ε cap); a job that would fail or
/// overspend gets a plan whose `problems` say why.
#[utoipa::path(
    post, path = "/v1/plan", tag = "plans",
    request_body(content((super::jobs::SubmitJson = "application/json"), (Vec<u8> = "application/wasm"))),
    responses((status = 200, description = "The job's plan on mock data: its queries, costs and problems; no charge", body = Object))
)]
pub(crate) async fn plan(
    State(s): State<Arc<Shared>>,
    auth: Only<Operators>,
    job: Submission,
) -> ApiResult<Json<JobPlan>> {
    job.check(&s.limits)?;
    let operator = auth.operator()?;
    {
        let cur = current(&s);
        let policy = cur.sandbox.engine().policy();
        admit(
            policy,
            &operator,
            &super::jobs::Declaration::of(
                &job,
                job.wasm == sluice_runtime::sql_job::SQL_JOB.as_bytes(),
            ),
            &|_, _| false,
        )
        .map_err(super::jobs::Refusal::into_api)?;
    }
    let planned = Planned {
        operator,
        wasm: job.wasm,
        params: job.params,
        datasets: job.datasets,
        max_epsilon: job.max_epsilon,
        scenario: job.scenario,
    };
    run(&s, planned, false).await.map(Json)
}

/// `GET /v1/jobs/{id}/plan`: a submitted job's plan, against what its operator's grants have
/// left now (its operator, reviewers, admins, auditors and its datasets' holders).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/plan", tag = "plans", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "A submitted job's plan", body = Object))
)]
pub(crate) async fn of_job(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<JobPlan>> {
    let job = visible_job(&s, &auth, &id, Readers::Staff)?;
    run(&s, Planned::of_job(&s, &job)?, false).await.map(Json)
}

/// How much a reviewer should worry about a job, from its risk report.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RiskLevel {
    /// Nothing stood out.
    Low,
    /// Read the reasons before approving.
    Medium,
    /// The job would not complete within its caps, or would take much of what its datasets
    /// have left.
    High,
}

/// The period over which a risk report sums every operator's spend on a dataset that sets no
/// dataset-wide cap: 30 days.
const DEFAULT_SPEND_PERIOD_SECS: u64 = 30 * 86_400;

/// What one dataset has left across every operator, beside what the job would take of it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct DatasetRisk {
    dataset: String,
    unit: String,
    /// What the job would spend.
    job_total: f64,
    /// What the dataset-wide cap has left this period, every operator together (`None`: the
    /// policy sets no dataset-wide cap).
    dataset_left: Option<f64>,
    /// What every operator together spent on the dataset in the last `period_days`, in `unit`
    /// (the dataset-wide cap's period, 30 days where the policy sets none).
    spent_by_all_operators: f64,
    /// The period of that sum, in days.
    period_days: f64,
}

/// A job's risk report (风险评估): its plan on mock data, what it would take of its datasets,
/// how often its build was approved before, and a level with its reasons. Made once per job,
/// before its review; the approval's audit entry names its sha256.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct RiskReport {
    job: String,
    wasm_sha256: String,
    pub(crate) level: RiskLevel,
    reasons: Vec<String>,
    datasets: Vec<DatasetRisk>,
    /// Reviewer approvals of jobs with the same build, before this one.
    past_approvals_of_build: i64,
    plan: serde_json::Value,
    /// Not part of the hashed body: the sha256 of the body as kept.
    #[serde(skip_deserializing, default, skip_serializing_if = "String::is_empty")]
    pub(crate) sha256: String,
}

impl RiskReport {
    /// The level and its reasons, from the plan and the build's history.
    fn assess(plan: &JobPlan, datasets: &[DatasetRisk], past: i64) -> (RiskLevel, Vec<String>) {
        let mut reasons = Vec::new();
        let mut level = RiskLevel::Low;
        let mut raise = |to: RiskLevel, why: String, reasons: &mut Vec<String>| {
            level = level.max(to);
            reasons.push(why);
        };
        for p in &plan.problems {
            raise(
                RiskLevel::High,
                format!("the plan finds a problem: {p}"),
                &mut reasons,
            );
        }
        for d in datasets {
            if let Some(left) = d.dataset_left
                && d.job_total > 0.5 * left
            {
                raise(
                    RiskLevel::High,
                    format!(
                        "the job would take {unit}={} of the {unit}={} that `{}` has left this period for every operator together",
                        sluice_runtime::sig(d.job_total),
                        sluice_runtime::sig(left),
                        d.dataset,
                        unit = d.unit
                    ),
                    &mut reasons,
                );
            }
        }
        if plan.adaptive {
            raise(
                RiskLevel::Medium,
                "its queries depend on its answers (two mock runs asked different ones): a real run may ask others than the plan shows".into(),
                &mut reasons,
            );
        }
        if past == 0 {
            raise(
                RiskLevel::Medium,
                "no reviewer has approved this build before".into(),
                &mut reasons,
            );
        }
        (level, reasons)
    }
}

/// `GET /v1/jobs/{id}/risk`: the job's risk report, made on first request (or at approval) and
/// kept (its operator, reviewers, admins, auditors and its datasets' holders).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/risk", tag = "plans", params(("id" = String, Path, description = "The job's id, e.g. `job-3f9c2a61b0d4e87a`")),
    responses((status = 200, description = "The job's risk report", body = RiskReport))
)]
pub(crate) async fn risk(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<RiskReport>> {
    risk_report(&s, &auth, &id).await.map(Json)
}

/// A kept risk report `(sha256, body)` as a report.
fn parse_kept((sha, body): (String, String)) -> ApiResult<RiskReport> {
    let mut r: RiskReport = serde_json::from_str(&body).map_err(ApiError::internal)?;
    r.sha256 = sha;
    Ok(r)
}

/// Job `id`'s kept risk report, if one was made.
pub(crate) fn kept_risk(s: &Shared, id: &JobId) -> ApiResult<Option<RiskReport>> {
    s.store
        .risk_report(id.as_str())?
        .map(parse_kept)
        .transpose()
}

/// Job `id`'s risk report: the one kept, or a new one, made from its plan now and kept.
async fn risk_report(s: &Arc<Shared>, auth: &Auth, id: &JobId) -> ApiResult<RiskReport> {
    let job = visible_job(s, auth, id, Readers::Staff)?;
    if let Some(kept) = kept_risk(s, id)? {
        return Ok(kept);
    }
    make_risk_report(s, job, false).await
}

/// Makes job `id`'s risk report in the background, before anyone reads it: a job waiting for
/// review has its report ready when the reviewer comes (waiting its turn among plans).
pub(crate) fn risk_report_in_background(s: Arc<Shared>, id: String) {
    tokio::spawn(async move {
        let made = match s.store.job(&id) {
            Ok(Some(job)) => make_risk_report(&s, job, true).await.map(drop),
            Ok(None) => Ok(()),
            Err(e) => Err(ApiError::internal(e)),
        };
        if let Err(e) = made {
            tracing::warn!("job {id}: no risk report yet ({e:?}); it is made when first read");
        }
    });
}

/// Makes `job`'s risk report from its plan now and keeps it (unless one was kept meanwhile,
/// which is then the one returned). `wait`: wait for a plan's turn rather than refuse.
async fn make_risk_report(
    s: &Arc<Shared>,
    job: crate::store::JobInfo,
    wait: bool,
) -> ApiResult<RiskReport> {
    let id = job.id.clone();
    let plan = run(s, Planned::of_job(s, &job)?, wait).await?;
    let periods: std::collections::BTreeMap<String, u64> = current(s)
        .sandbox
        .engine()
        .policy()
        .datasets
        .values()
        .map(|d| {
            let secs = d
                .budget
                .map_or(DEFAULT_SPEND_PERIOD_SECS, |b| b.period_secs);
            (d.id.to_string(), secs)
        })
        .collect();
    let datasets: Vec<DatasetRisk> = plan
        .datasets
        .iter()
        .map(|d| {
            let secs = periods
                .get(&d.dataset)
                .copied()
                .unwrap_or(DEFAULT_SPEND_PERIOD_SECS);
            let all = s
                .store
                .dataset_spent(&d.dataset, std::time::Duration::from_secs(secs));
            DatasetRisk {
                dataset: d.dataset.clone(),
                unit: d.unit.to_string(),
                job_total: d.total,
                dataset_left: d.dataset_left,
                spent_by_all_operators: if d.unit == "ρ" { all.rho } else { all.epsilon },
                period_days: secs as f64 / 86_400.0,
            }
        })
        .collect();
    let past = s.store.build_approvals(&job.wasm_sha256, &id)?;
    let (level, reasons) = RiskReport::assess(&plan, &datasets, past);
    let report = RiskReport {
        job: id.clone(),
        wasm_sha256: job.wasm_sha256.clone(),
        level,
        reasons,
        datasets,
        past_approvals_of_build: past,
        plan: serde_json::to_value(&plan).map_err(ApiError::internal)?,
        sha256: String::new(),
    };
    let body = serde_json::to_string(&report).map_err(ApiError::internal)?;
    parse_kept(s.store.keep_risk_report(&id, &body)?)
}

/// Compiles the job (refusing invalid wasm as a submission would) and plans it, on a blocking
/// thread: with `wait`, in the background pool (waiting for its turn); else among the
/// [`MAX_PLANS`] asked for (refused when none is free).
async fn run(s: &Arc<Shared>, p: Planned, wait: bool) -> ApiResult<JobPlan> {
    let _permit = if wait {
        s.plans
            .background
            .acquire()
            .await
            .map_err(ApiError::internal)?
    } else {
        s.plans.asked.try_acquire().map_err(|_| {
            ApiError::new(
                ErrorCode::QueueFull,
                format!("{MAX_PLANS} plans are running; retry in a few seconds"),
            )
            .retry_after(5)
        })?
    };
    let datasets = p
        .datasets
        .iter()
        .map(|d| DatasetId::new(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(ErrorCode::BadDatasets, e))?;
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let cur = current(&s2);
        // The built-in SQL job has no wasm to compile.
        if p.wasm != sluice_runtime::sql_job::SQL_JOB.as_bytes() {
            cur.sandbox
                .precompile(&p.wasm)
                .map_err(|e| ApiError::new(ErrorCode::InvalidWasm, e.to_string()))?;
        }
        let mut req = JobRequest::new(p.operator, "plan", &p.wasm, &p.params);
        req.datasets = Some(datasets);
        req.max_epsilon = p.max_epsilon;
        req.scenario = p.scenario;
        cur.sandbox.plan_job(&req).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}
