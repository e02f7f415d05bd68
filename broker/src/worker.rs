//! The workers: each claims the oldest queued job, admits it again against the policy in force,
//! runs it in the sandbox and releases its report (or records why it failed).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use sluice_policy::{DatasetId, OperatorId};
use sluice_runtime::JobRequest;

use crate::api::jobs::admit;
use crate::keys::DatasetVersion;
use crate::server::{Shared, current};
use crate::store::{Ending, Outcome, Released};

/// A worker's loop, until the broker stops.
pub(crate) fn worker(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let seen = *shared.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        match shared.store.claim_next() {
            Ok(Some(job)) => {
                let id = job.id.clone();
                if let Err(e) = run_claimed(&shared, job) {
                    tracing::error!("job {id}: {e:#}");
                    let _ = shared.store.fail(&id, "internal broker error");
                }
            }
            Ok(None) => {
                let guard = shared.wake.0.lock().unwrap_or_else(|p| p.into_inner());
                if *guard == seen && !shared.stop.load(Ordering::SeqCst) {
                    let _ = shared
                        .wake
                        .1
                        .wait_timeout(guard, Duration::from_millis(500));
                }
            }
            Err(e) => {
                tracing::error!("cannot claim a job: {e:#}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn run_claimed(shared: &Shared, job: crate::store::Claimed) -> Result<()> {
    let cur = current(shared);
    let operator: OperatorId = job
        .operator
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    // The policy may have changed since submission (a reload, an expired grant): admit again.
    // Review was decided at submission (or by a reviewer): only refusals matter now.
    let sql_job = job.wasm_sha256 == *sluice_runtime::sql_job::SQL_JOB_SHA256;
    let declared = crate::api::jobs::Declaration {
        datasets: &job.datasets,
        scenario: job.scenario.as_deref(),
        max_epsilon: job.max_epsilon,
        params: &job.params,
        sql_job,
    };
    if let Err(refusal) = admit(
        cur.sandbox.engine().policy(),
        &operator,
        &declared,
        &|_, _| true,
    ) {
        shared
            .store
            .fail(&job.id, &format!("not started: {refusal}"))?;
        return Ok(());
    }
    let datasets = job
        .datasets
        .iter()
        .map(|d| DatasetId::new(d).map_err(|e| anyhow::anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut req = JobRequest::new(operator, job.id.clone(), &job.wasm, &job.params);
    req.datasets = Some(datasets.clone());
    req.max_epsilon = job.max_epsilon;
    req.scenario = job.scenario.clone();
    let out = cur.sandbox.run_job(&req);
    shared.metrics.jobs_run.fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .job_seconds_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let (log, dropped, queries) = match &out {
        Ok(o) => (&o.log, o.log_dropped, &o.queries),
        Err(f) => (&f.log, f.log_dropped, &f.queries),
    };
    // Logged and metered with its release, so that every released report is on a statement.
    let run_ms = started.elapsed().as_millis() as i64;
    let meters = crate::statements::meters(queries, run_ms);
    let run = crate::store::RunRecord {
        job: &job.id,
        operator: &job.operator,
        scenario: job.scenario.as_deref(),
        log,
        dropped,
        meters: &meters,
    };
    let (json, csv, error);
    let ending = match &out {
        Ok(out) => {
            (json, csv) = (out.report.to_json(), out.report.to_csv());
            Ending::Released(outcome(&cur, &job, &datasets, out, &json, &csv))
        }
        Err(f) => {
            error = f.error.to_string();
            Ending::Failed(&error)
        }
    };
    if let Some(Released::Held { why }) = shared.store.finish(&job.id, Some(&run), ending)? {
        tracing::warn!("job {} is held for a reviewer: {why}", job.id);
    }
    Ok(())
}

/// What job `job`'s release of `out` records: its report, the policy and dataset versions it ran
/// under, its recipients, filing terms, row functions and engines.
fn outcome<'a>(
    cur: &'a crate::server::Current,
    job: &crate::store::Claimed,
    datasets: &[DatasetId],
    out: &sluice_runtime::JobOutput,
    json: &'a str,
    csv: &'a str,
) -> Outcome<'a> {
    let policy = cur.sandbox.engine().policy();
    Outcome {
        report_json: json,
        report_csv: csv,
        policy_sha256: &cur.policy_sha256,
        datasets: datasets
            .iter()
            .filter_map(|d| cur.sandbox.engine().catalog().get(d))
            .map(|r| DatasetVersion {
                name: r.policy.id.to_string(),
                sha256: r.content_hash.clone(),
            })
            .collect(),
        recipients: crate::api::jobs::recipients_of(
            policy,
            &job.operator,
            job.scenario.as_deref(),
            &job.datasets,
        )
        .into_iter()
        .map(|r| r.to_string())
        .collect(),
        row_functions: row_functions(&out.queries),
        engines: engines(&out.queries),
        filing: filing_terms(
            policy,
            &job.operator,
            job.scenario.as_deref(),
            &job.datasets,
        ),
    }
}

/// What the filing of a release by `operator` under `scenario` on `datasets` says, when one of
/// them is graded `important` (GB/T 43697: releases from important data are filed with the
/// regulator); `None` otherwise.
fn filing_terms(
    policy: &sluice_policy::Policy,
    operator: &str,
    scenario: Option<&str>,
    datasets: &[String],
) -> Option<crate::filings::FilingTerms> {
    use sluice_policy::Classification;
    let declared: Vec<&sluice_policy::Dataset> = datasets
        .iter()
        .filter_map(|d| policy.datasets.values().find(|p| p.id.as_str() == d))
        .collect();
    if !declared
        .iter()
        .any(|d| d.classification == Classification::Important)
    {
        return None;
    }
    let grant = policy.grants.iter().find(|g| {
        g.operator.as_str() == operator
            && g.scenario.as_deref() == scenario
            && g.datasets
                .iter()
                .any(|d| datasets.iter().any(|n| n == d.as_str()))
    });
    Some(crate::filings::FilingTerms {
        datasets: declared
            .iter()
            .map(|d| crate::filings::FiledDataset {
                name: d.id.to_string(),
                holder: d.holder.clone(),
                classification: d.classification.as_str().to_string(),
            })
            .collect(),
        legal_basis: grant.and_then(|g| g.legal_basis.clone()),
        usage: grant
            .map_or("public-interest", |g| g.usage.as_str())
            .to_string(),
    })
}

/// The engines other than the broker's own (and its answer cache) that answered `queries`, each
/// once, in order of first use.
fn engines(queries: &[sluice_runtime::privacy::QueryRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for q in queries {
        let e = &q.engine;
        let here = e == sluice_runtime::remote::LOCAL || e == sluice_runtime::privacy::CACHE_ENGINE;
        if !here && !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

/// The row functions `queries` aggregated, each once, in order of first use.
fn row_functions(queries: &[sluice_runtime::privacy::QueryRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in queries.iter().flat_map(|q| &q.row_functions) {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}
