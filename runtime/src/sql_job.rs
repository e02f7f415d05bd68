//! The built-in SQL job: one query from its parameters, for operators who ask a question
//! without writing a job (as lomas and AWS Clean Rooms take SQL directly).
//!
//! It is versioned like a build: its identity [`SQL_JOB`] and [`SQL_JOB_SHA256`] stand where a
//! job's wasm and its sha256 stand (in the ledger, the audit log and receipts), and its
//! parameters are the JSON [`SqlParams`], which reviewers read in full. It runs in the host,
//! not in wasm: its code is this file, reviewed with the broker, and its one query goes through
//! the same engine, grant, ledger and release as any job's.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::privacy::Budget;
use crate::report::Report;
use crate::wasm::{JobFailure, JobOutput};
use crate::{JobError, JobRequest, Sandbox};

/// The built-in SQL job's name and version.
pub const SQL_JOB: &str = "sluice:sql-job@1";

/// The sha256 that stands for the built-in SQL job where a wasm's would: of [`SQL_JOB`].
pub static SQL_JOB_SHA256: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hex::encode(Sha256::digest(SQL_JOB)));

/// The built-in SQL job's parameters: the query and what to spend on it (exactly one of
/// `epsilon`, `rho` and `accuracy`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlParams {
    /// The query.
    pub sql: String,
    /// Spend this ε.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Or this ρ (zCDP datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    /// Or the least ε (or ρ) for this 95% half-width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

impl SqlParams {
    /// Reads the parameter string of a built-in SQL job.
    pub fn parse(params: &str) -> Result<Self, String> {
        let p: Self = serde_json::from_str(params).map_err(|e| {
            format!(
                "the built-in SQL job takes JSON parameters {{\"sql\": …, \"epsilon\"|\"rho\"|\"accuracy\": …}}: {e}"
            )
        })?;
        p.budget()?;
        Ok(p)
    }

    /// The parameter string (canonical JSON).
    pub fn to_params(&self) -> String {
        serde_json::to_string(self).expect("parameters always serialise")
    }

    /// What to spend.
    pub fn budget(&self) -> Result<Budget, String> {
        match (self.epsilon, self.rho, self.accuracy) {
            (Some(e), None, None) => Ok(Budget::Epsilon(e)),
            (None, Some(r), None) => Ok(Budget::Rho(r)),
            (None, None, Some(a)) => Ok(Budget::Accuracy(a)),
            _ => Err("give exactly one of epsilon, rho and accuracy".into()),
        }
    }
}

impl Sandbox {
    /// Runs the built-in SQL job for `req` (whose `params` are [`SqlParams`]) on `engine`: its
    /// one query under `req`'s declarations, released as a report of one table called
    /// `answer`. [`Sandbox::run_job`] runs it for a request whose wasm is [`SQL_JOB`].
    pub(crate) fn sql_job_on(
        &self,
        engine: std::sync::Arc<crate::privacy::PrivacyEngine>,
        req: &JobRequest<'_>,
    ) -> Result<JobOutput, JobFailure> {
        let started = std::time::Instant::now();
        let fail = |error| JobFailure {
            error,
            log: Vec::new(),
            log_dropped: 0,
            queries: Vec::new(),
        };
        let p = SqlParams::parse(req.params).map_err(|e| fail(JobError::Guest(e)))?;
        let budget = p.budget().map_err(|e| fail(JobError::Guest(e)))?;
        let asker = req.asker();
        // Planning runs on a thread whose stack is known, as a job's queries do.
        let (handle, sql) = (self.rt().handle().clone(), &p.sql);
        let answered = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sluice-sql-job".into())
                .stack_size(crate::PLANNING_STACK_BYTES)
                .spawn_scoped(scope, move || {
                    handle.block_on(engine.query_with(&asker, sql, budget))
                })
                .map_err(|e| JobError::Host(e.to_string()))?
                .join()
                .map_err(|_| JobError::Host("the query thread panicked".into()))
        })
        .map_err(fail)?;
        let (table, record) =
            answered.map_err(|e| fail(JobError::Guest(format!("query refused: {e}"))))?;
        let report = Report {
            title: "Ad-hoc query".into(),
            text: p.sql.clone(),
            tables: vec![("answer".into(), table)],
            scalars: Vec::new(),
        };
        Ok(JobOutput {
            report,
            log: Vec::new(),
            log_dropped: 0,
            queries: vec![record],
            cached: true,
            load_time: std::time::Duration::ZERO,
            run_time: started.elapsed(),
            instantiate_time: std::time::Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_name_one_budget_and_nothing_else() {
        let p = SqlParams::parse(r#"{"sql":"SELECT COUNT(*) FROM t","epsilon":0.5}"#).unwrap();
        assert_eq!(p.budget(), Ok(Budget::Epsilon(0.5)));
        assert_eq!(SqlParams::parse(&p.to_params()).unwrap(), p);
        for bad in [
            r#"{"sql":"SELECT 1"}"#,
            r#"{"sql":"SELECT 1","epsilon":1,"rho":1}"#,
            r#"{"sql":"SELECT 1","epsilon":1,"extra":1}"#,
            "sql=SELECT 1",
        ] {
            assert!(SqlParams::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            *SQL_JOB_SHA256,
            hex::encode(Sha256::digest("sluice:sql-job@1"))
        );
    }
}
