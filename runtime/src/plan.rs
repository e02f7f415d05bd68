//! Whole-job plans: a dry run of a job on mock data, before anything is spent.
//!
//! A job that fails half-way keeps the budget its first queries spent, and a job whose totals
//! exceed a cap is refused at the query that crosses it, after the ones before were charged.
//! [`Sandbox::plan_job`] runs the job as it would run for real, with the same declarations,
//! validation, designs and mechanisms, but
//! - on mock rows drawn from the policy's public metadata ([`crate::mock`]), never on data;
//! - charging a throw-away ledger ([`PlanLedger`]) that starts from what the real ledger shows
//!   spent this period, checks every charge as the real one would, records the verdict and
//!   never refuses, so the plan sees the whole job;
//! - with an answer cache of its own, so a repetition within the job is free as it would be.
//!
//! The plan lists every query with its cost, accuracy and verdict, the totals per dataset
//! against the caps, and whether the job completed. It runs the job twice, on mock data of two
//! seeds: if the two runs ask different queries, the job's queries depend on its answers, and
//! the plan is one possible run rather than a forecast (it says so).
//!
//! A plan releases nothing about the people in the data: mock rows come from public metadata
//! only. Its one link to real data is the ledger's spending totals, which every budget view
//! already shows the operator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_policy::{DatasetId, OperatorId, PrivacyMeasure};

use crate::privacy::accountant::{
    Accountant, BudgetError, Charge, InMemoryAccountant, Recorded, Spent,
};
use crate::privacy::{ColumnAccuracy, PrivacyEngine};
use crate::report::{PrivacyCost, sig};
use crate::wasm::LogLine;
use crate::{InMemoryAnswerCache, JobRequest, Sandbox, SandboxError, data};

/// The seeds of the two mock runs.
const SEEDS: [u64; 2] = [0x5eed_0001, 0x5eed_0002];

/// One query of a plan.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PlannedQuery {
    /// The dataset it reads.
    pub dataset: String,
    /// The SQL as the job wrote it.
    pub sql: String,
    /// Its normalized plan text (as the ledger and audit log record it).
    pub normalized: String,
    /// What it would cost.
    pub cost: PrivacyCost,
    /// Whether it repeats an earlier query of the job (answered from the cache, free).
    pub cached: bool,
    /// Its columns' 95% half-widths (on mock data: where accuracy depends on the data, a guide).
    pub accuracy: Vec<ColumnAccuracy>,
    /// Why the real ledger would refuse its charge, if it would.
    pub refused: Option<String>,
}

/// A dataset's total in a plan, against its caps.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PlannedDataset {
    /// The dataset.
    pub dataset: String,
    /// `ε` or `ρ`: the dataset's measure.
    pub unit: &'static str,
    /// What the whole job would spend.
    pub total: f64,
    /// δ the whole job would spend.
    pub delta: f64,
    /// What one job may spend.
    pub per_job_cap: f64,
    /// What the grant had left this period when the plan ran.
    pub period_left: f64,
    /// What the dataset-wide cap had left this period, if the policy sets one.
    pub dataset_left: Option<f64>,
}

impl PlannedDataset {
    /// The smallest of what is left: the most the job may spend here.
    pub fn available(&self) -> f64 {
        let left = self.per_job_cap.min(self.period_left);
        self.dataset_left.map_or(left, |d| left.min(d))
    }

    /// By how much the job's total exceeds what is available, if it does.
    pub fn over_by(&self) -> Option<f64> {
        let over = self.total - self.available();
        (over > 1e-9).then_some(over)
    }
}

/// How the mock run ended.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PlanOutcome {
    /// The job returned a report.
    Completed {
        /// Its tables.
        tables: usize,
        /// Its scalars.
        scalars: usize,
    },
    /// The job failed.
    Failed {
        /// Why (about the mock run; no real data is involved).
        error: String,
    },
}

/// A whole job's dry run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JobPlan {
    /// Every query the job asked, in order.
    pub queries: Vec<PlannedQuery>,
    /// Totals per dataset charged, against the caps.
    pub datasets: Vec<PlannedDataset>,
    /// How the run ended.
    pub outcome: PlanOutcome,
    /// The job's log lines.
    pub log: Vec<LogLine>,
    /// Whether the queries differed between two runs on different mock data: the job's queries
    /// depend on its answers, so a real run may ask others.
    pub adaptive: bool,
    /// Why the job would not complete within its caps; empty if it would.
    pub problems: Vec<String>,
    /// Privacy units per mock dataset.
    pub mock_units: usize,
}

impl JobPlan {
    /// Whether the job would run to completion within every cap.
    pub fn would_complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// The plan's stages: its queries matched with the ledger's verdicts, totals per dataset,
    /// and the problems those show.
    fn of(run: MockRun, adaptive: bool) -> Self {
        let queries = run.queries();
        let datasets = run.totals();
        let mut problems: Vec<String> = queries
            .iter()
            .enumerate()
            .filter_map(|(i, q)| {
                let why = q.refused.as_ref()?;
                Some(format!("query {} would be refused: {why}", i + 1))
            })
            .collect();
        for d in &datasets {
            if let Some(over) = d.over_by() {
                problems.push(format!(
                    "the job would spend {unit}={} on `{}`, {} more than the {unit}={} available (per-job cap {}, left this period {}{})",
                    sig(d.total),
                    d.dataset,
                    sig(over),
                    sig(d.available()),
                    sig(d.per_job_cap),
                    sig(d.period_left),
                    d.dataset_left
                        .map(|l| format!(", left on the dataset {}", sig(l)))
                        .unwrap_or_default(),
                    unit = d.unit,
                ));
            }
        }
        if let PlanOutcome::Failed { error } = &run.outcome {
            problems.push(format!("on mock data, {error}"));
        }
        Self {
            queries,
            datasets,
            outcome: run.outcome,
            log: run.log,
            adaptive,
            problems,
            mock_units: crate::mock::MOCK_UNITS,
        }
    }
}

/// One charge the plan's ledger saw, with the real ledger's verdict on it.
#[derive(Clone, Debug)]
struct SeenCharge {
    charge: Charge,
    /// What the real ledger showed spent this period before the job, in the measure.
    real: Spent,
    /// What every operator together had spent on the dataset, in the measure.
    real_dataset: f64,
    verdict: Result<(), BudgetError>,
}

/// The ledger of a dry run: what the real ledger shows spent, plus this run's own charges,
/// checked like real ones and recorded whatever the verdict.
pub struct PlanLedger {
    real: Arc<dyn Accountant>,
    own: InMemoryAccountant,
    seen: Mutex<Vec<SeenCharge>>,
}

impl PlanLedger {
    fn new(real: Arc<dyn Accountant>) -> Self {
        Self {
            real,
            own: InMemoryAccountant::new(),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn seen(&self) -> Vec<SeenCharge> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Accountant for PlanLedger {
    fn charge(&self, c: &Charge) -> Result<Recorded, BudgetError> {
        let scenario = c.scenario.as_deref();
        let real = self
            .real
            .spent_in(&c.operator, &c.dataset, scenario, &c.job, c.period);
        let own = self
            .own
            .spent_in(&c.operator, &c.dataset, scenario, &c.job, c.period);
        let dataset_period = c.dataset_cap.map_or(c.period, |d| d.period);
        let real_dataset = self.real.dataset_spent(&c.dataset, dataset_period);
        let dataset = real_dataset + self.own.dataset_spent(&c.dataset, dataset_period);
        let verdict = crate::privacy::accountant::check_limits(c, real + own, dataset);
        self.own.record_unchecked(c);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SeenCharge {
                charge: c.clone(),
                real,
                real_dataset: real_dataset.in_measure(c.amount.measure),
                verdict,
            });
        // A dry run: nothing to make durable.
        Ok(Recorded::Durable)
    }

    fn spent_in(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        scenario: Option<&str>,
        job: &str,
        period: Duration,
    ) -> Spent {
        self.real.spent_in(operator, dataset, scenario, job, period)
            + self.own.spent_in(operator, dataset, scenario, job, period)
    }

    fn dataset_spent(&self, dataset: &DatasetId, period: Duration) -> crate::Totals {
        self.real.dataset_spent(dataset, period) + self.own.dataset_spent(dataset, period)
    }
}

/// What one mock run did.
struct MockRun {
    records: Vec<crate::QueryRecord>,
    charges: Vec<SeenCharge>,
    outcome: PlanOutcome,
    log: Vec<LogLine>,
}

impl MockRun {
    /// The queries asked, in order, as (dataset, normalized SQL, cost): what two runs compare.
    fn sequence(&self) -> Vec<(String, String, PrivacyCost)> {
        self.records
            .iter()
            .map(|r| (r.dataset.clone(), r.normalized.clone(), r.cost))
            .collect()
    }

    /// Each answered query with the verdict on its charge (cached ones were not charged).
    fn queries(&self) -> Vec<PlannedQuery> {
        let mut charges = self.charges.iter();
        let mut out: Vec<PlannedQuery> = self
            .records
            .iter()
            .map(|r| PlannedQuery {
                dataset: r.dataset.clone(),
                sql: r.submitted.clone(),
                normalized: r.normalized.clone(),
                cost: r.cost,
                cached: r.cached,
                accuracy: r.accuracy.clone(),
                refused: if r.cached {
                    None
                } else {
                    charges
                        .next()
                        .and_then(|c| c.verdict.as_ref().err().map(ToString::to_string))
                },
            })
            .collect();
        // A charge without an answer: the query was charged, then failed to execute.
        out.extend(charges.map(|c| PlannedQuery {
            dataset: c.charge.dataset.to_string(),
            sql: c.charge.sql.clone(),
            normalized: c.charge.sql.clone(),
            cost: PrivacyCost {
                epsilon: c.charge.amount.epsilon(),
                delta: c.charge.delta,
                rho: c.charge.amount.rho(),
            },
            cached: false,
            accuracy: Vec::new(),
            refused: c.verdict.as_ref().err().map(ToString::to_string),
        }));
        out
    }

    /// Totals per dataset, in the order first charged.
    fn totals(&self) -> Vec<PlannedDataset> {
        let mut out: Vec<PlannedDataset> = Vec::new();
        for c in &self.charges {
            let ch = &c.charge;
            let measure = ch.amount.measure;
            let name = ch.dataset.to_string();
            let i = match out.iter().position(|d| d.dataset == name) {
                Some(i) => i,
                None => {
                    out.push(PlannedDataset {
                        dataset: name,
                        unit: match measure {
                            PrivacyMeasure::Pure => "ε",
                            PrivacyMeasure::Zcdp => "ρ",
                        },
                        total: 0.0,
                        delta: 0.0,
                        per_job_cap: ch.caps.per_job,
                        period_left: (ch.caps.per_period - c.real.period.in_measure(measure))
                            .max(0.0),
                        dataset_left: ch
                            .dataset_cap
                            .map(|d| (d.per_period - c.real_dataset).max(0.0)),
                    });
                    out.len() - 1
                }
            };
            out[i].total += ch.amount.value;
            out[i].delta += ch.delta;
        }
        out
    }
}

impl Sandbox {
    /// A dry run of `req`'s job on mock data ([`crate::plan`]): every query with its cost,
    /// accuracy and verdict, the totals against the caps and what the real ledger has left,
    /// and whether the job would complete. Nothing is charged and no data is read. Blocking:
    /// call it outside async code (or in `spawn_blocking`).
    pub fn plan_job(&self, req: &JobRequest<'_>) -> Result<JobPlan, SandboxError> {
        let catalogs = self.mock_catalogs()?;
        let mut runs = catalogs
            .iter()
            .map(|catalog| self.mock_run(catalog.clone(), req));
        let first = runs.next().expect("two seeds");
        let second = runs.next().expect("two seeds");
        let adaptive = first.sequence() != second.sequence();
        Ok(JobPlan::of(first, adaptive))
    }

    /// The mock catalogs of [`SEEDS`], made on first use and kept.
    fn mock_catalogs(&self) -> Result<Arc<Vec<data::Catalog>>, SandboxError> {
        let mut slot = self.mock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let policy = self.engine.policy();
        let mut catalogs = Vec::new();
        for seed in SEEDS {
            catalogs.push(self.block_on(data::Catalog::mock(
                policy,
                &self.data_root,
                self.partitions,
                seed,
            ))?);
        }
        let catalogs = Arc::new(catalogs);
        *slot = Some(catalogs.clone());
        Ok(catalogs)
    }

    /// One run of `req`'s job over `catalog`, charging a fresh [`PlanLedger`].
    fn mock_run(&self, catalog: data::Catalog, req: &JobRequest<'_>) -> MockRun {
        let ledger = Arc::new(PlanLedger::new(self.engine.accountant().clone()));
        let engine = Arc::new(
            PrivacyEngine::new(
                catalog,
                self.engine.policy_arc(),
                ledger.clone(),
                Some(Arc::new(InMemoryAnswerCache::new())),
            )
            .without_response_padding(),
        );
        // A job id of its own: the real ledger has spent nothing under it.
        let mut req = req.clone();
        req.job_id = format!("plan-{}", plan_id());
        let out = self.run_on(engine, &req);
        let (records, outcome, log) = match out {
            Ok(o) => (
                o.queries,
                PlanOutcome::Completed {
                    tables: o.report.tables.len(),
                    scalars: o.report.scalars.len(),
                },
                o.log,
            ),
            Err(f) => (
                f.queries,
                PlanOutcome::Failed {
                    error: f.error.to_string(),
                },
                f.log,
            ),
        };
        MockRun {
            records,
            charges: ledger.seen(),
            outcome,
            log,
        }
    }
}

/// A random id for a plan's job: the real ledger has spent nothing under it.
fn plan_id() -> String {
    let mut b = [0u8; 8];
    // Should the OS refuse randomness, an all-zero id is still no real job's id.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}
