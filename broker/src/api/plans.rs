//! Whole-job plans ([`sluice_runtime::plan`]): a dry run of a job on mock data drawn from the
//! policy's public metadata, against what the real ledger has left. For an operator before
//! submitting (`POST /v1/plan`, the body of a submission), and for the staff who review a job
//! (`GET /v1/jobs/{id}/plan`). Nothing is charged, no data is read and nothing is released.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
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

/// Plans run at once, broker-wide: each runs a job twice, on a blocking thread.
const MAX_PLANS: usize = 2;

static RUNNING: Semaphore = Semaphore::const_new(MAX_PLANS);

/// What a plan runs: a job and its declarations.
struct Planned {
    operator: OperatorId,
    wasm: Vec<u8>,
    params: String,
    datasets: Vec<String>,
    max_epsilon: Option<f64>,
    scenario: Option<String>,
}

/// `POST /v1/plan`: the plan of a job not yet submitted (the body of `POST /v1/jobs`). Refused
/// at the door as a submission would be (grants, scenario, ε cap); a job that would fail or
/// overspend gets a plan whose `problems` say why.
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
    run(&s, planned).await.map(Json)
}

/// `GET /v1/jobs/{id}/plan`: a submitted job's plan, against what its operator's grants have
/// left now (its operator, reviewers, admins, auditors and its datasets' holders).
pub(crate) async fn of_job(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<JobPlan>> {
    let job = visible_job(&s, &auth, &id, Readers::Staff)?;
    let wasm = s
        .store
        .wasm(&job.wasm_sha256)?
        .ok_or_else(|| ApiError::not_found(format!("job `{id}` no longer holds its wasm")))?;
    let operator = job
        .operator
        .parse()
        .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?;
    let planned = Planned {
        operator,
        wasm,
        params: job.params,
        datasets: job.datasets,
        max_epsilon: job.max_epsilon,
        scenario: job.scenario,
    };
    run(&s, planned).await.map(Json)
}

/// Compiles the job (refusing invalid wasm as a submission would) and plans it, on a blocking
/// thread, at most [`MAX_PLANS`] at once.
async fn run(s: &Arc<Shared>, p: Planned) -> ApiResult<JobPlan> {
    let _permit = RUNNING.try_acquire().map_err(|_| {
        ApiError::new(
            ErrorCode::QueueFull,
            format!("{MAX_PLANS} plans are running; retry in a few seconds"),
        )
        .retry_after(5)
    })?;
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
