//! The privacy accountant: the one place a query's cost is checked against the grant and recorded,
//! *before* the query runs (DESIGN invariant 2: charge before release).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sluice_policy::{DatasetId, OperatorId};

/// One charge to make: who, on what, for which job, how much, within which limits.
#[derive(Clone, Debug)]
pub struct Charge {
    /// The operator.
    pub operator: OperatorId,
    /// The dataset.
    pub dataset: DatasetId,
    /// The job that asked.
    pub job: String,
    /// The ε to charge.
    pub epsilon: f64,
    /// The δ to charge (0 for pure ε-DP mechanisms).
    pub delta: f64,
    /// The grant's ε per job.
    pub epsilon_per_job: f64,
    /// The grant's ε per period.
    pub epsilon_per_period: f64,
    /// The grant's δ per period (0: no δ may be spent).
    pub delta_per_period: f64,
    /// The grant's period length.
    pub period: Duration,
    /// The query's normalized SQL, for the audit log.
    pub sql: String,
    /// The sha256 of the dataset version the query reads.
    pub dataset_hash: String,
    /// The mechanism family, e.g. `discrete-laplace`.
    pub mechanism: String,
}

/// What has been spent, seen from one job.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    /// ε spent by this job on this dataset.
    pub job: f64,
    /// ε spent by the operator on this dataset in the current period (all jobs).
    pub period: f64,
    /// δ spent by the operator on this dataset in the current period (all jobs).
    pub delta_period: f64,
}

/// Why a charge was refused. Nothing was charged.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The job's own ε cap would be exceeded.
    #[error(
        "query needs ε={needed} but the job has ε={remaining} left on dataset `{dataset}` (per-job cap {cap})"
    )]
    JobCap {
        /// The dataset.
        dataset: DatasetId,
        /// What the query needs.
        needed: f64,
        /// What is left.
        remaining: f64,
        /// The cap.
        cap: f64,
    },
    /// The operator's period cap would be exceeded.
    #[error(
        "query needs ε={needed} but the operator has ε={remaining} left on dataset `{dataset}` this period (cap {cap})"
    )]
    PeriodCap {
        /// The dataset.
        dataset: DatasetId,
        /// What the query needs.
        needed: f64,
        /// What is left.
        remaining: f64,
        /// The cap.
        cap: f64,
    },
    /// The operator's δ cap for the period would be exceeded.
    #[error(
        "query needs δ={needed} but the operator has δ={remaining} left on dataset `{dataset}` this period (cap {cap})"
    )]
    DeltaCap {
        /// The dataset.
        dataset: DatasetId,
        /// What the query needs.
        needed: f64,
        /// What is left.
        remaining: f64,
        /// The cap.
        cap: f64,
    },
    /// The operator or the dataset is suspended by the data holder; nothing can be charged.
    #[error("access suspended: {0}")]
    Suspended(String),
    /// The accountant could not record the charge (e.g. its storage failed); fail closed.
    #[error("the privacy budget ledger is unavailable")]
    Unavailable,
}

/// Records privacy spending. Implementations must make `charge` atomic: concurrent charges against
/// one grant must never together exceed it, and a charge that returned `Ok` is durable.
pub trait Accountant: Send + Sync {
    /// Checks the limits and records the charge, or refuses it without recording anything.
    fn charge(&self, charge: &Charge) -> Result<(), BudgetError>;

    /// What has been spent on `dataset` by `operator` (period) and by `job`.
    fn spent(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        job: &str,
        period: Duration,
    ) -> Spent;
}

/// Tolerance for float comparisons of budgets, so that ten charges of 0.1 fit a cap of 1.0.
const SLACK: f64 = 1e-9;

/// An in-memory accountant: correct under concurrency, forgotten at exit. The broker provides a
/// persistent one.
#[derive(Debug, Default)]
pub struct InMemoryAccountant {
    entries: Mutex<HashMap<(OperatorId, DatasetId), Vec<Entry>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    at: SystemTime,
    job: String,
    epsilon: f64,
    delta: f64,
}

impl InMemoryAccountant {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn sums(entries: &[Entry], job: &str, period: Duration) -> Spent {
        let since = SystemTime::now()
            .checked_sub(period)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut s = Spent::default();
        for e in entries {
            if e.job == job {
                s.job += e.epsilon;
            }
            if e.at >= since {
                s.period += e.epsilon;
                s.delta_period += e.delta;
            }
        }
        s
    }
}

/// Checks a charge against what has been spent; shared by every accountant implementation.
pub fn check_limits(charge: &Charge, spent: Spent) -> Result<(), BudgetError> {
    if spent.job + charge.epsilon > charge.epsilon_per_job + SLACK {
        return Err(BudgetError::JobCap {
            dataset: charge.dataset.clone(),
            needed: charge.epsilon,
            remaining: (charge.epsilon_per_job - spent.job).max(0.0),
            cap: charge.epsilon_per_job,
        });
    }
    if spent.period + charge.epsilon > charge.epsilon_per_period + SLACK {
        return Err(BudgetError::PeriodCap {
            dataset: charge.dataset.clone(),
            needed: charge.epsilon,
            remaining: (charge.epsilon_per_period - spent.period).max(0.0),
            cap: charge.epsilon_per_period,
        });
    }
    // δ is compared relative to the cap (caps are tiny numbers such as 1e-6).
    if charge.delta > 0.0
        && spent.delta_period + charge.delta > charge.delta_per_period * (1.0 + SLACK)
    {
        return Err(BudgetError::DeltaCap {
            dataset: charge.dataset.clone(),
            needed: charge.delta,
            remaining: (charge.delta_per_period - spent.delta_period).max(0.0),
            cap: charge.delta_per_period,
        });
    }
    Ok(())
}

impl Accountant for InMemoryAccountant {
    fn charge(&self, charge: &Charge) -> Result<(), BudgetError> {
        let mut map = self.entries.lock().map_err(|_| BudgetError::Unavailable)?;
        let entries = map
            .entry((charge.operator.clone(), charge.dataset.clone()))
            .or_default();
        check_limits(charge, Self::sums(entries, &charge.job, charge.period))?;
        entries.push(Entry {
            at: SystemTime::now(),
            job: charge.job.clone(),
            epsilon: charge.epsilon,
            delta: charge.delta,
        });
        Ok(())
    }

    fn spent(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        job: &str,
        period: Duration,
    ) -> Spent {
        let Ok(map) = self.entries.lock() else {
            return Spent::default();
        };
        map.get(&(operator.clone(), dataset.clone()))
            .map(|e| Self::sums(e, job, period))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn charge(job: &str, eps: f64) -> Charge {
        Charge {
            operator: OperatorId::new("op").unwrap(),
            dataset: DatasetId::new("ds").unwrap(),
            job: job.into(),
            epsilon: eps,
            delta: 0.0,
            sql: "SELECT COUNT(*) FROM ds".into(),
            dataset_hash: "00".into(),
            mechanism: "discrete-laplace".into(),
            epsilon_per_job: 1.0,
            epsilon_per_period: 5.0,
            delta_per_period: 0.0,
            period: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn refuses_a_charge_beyond_the_job_cap_and_records_nothing() {
        let a = InMemoryAccountant::new();
        for _ in 0..10 {
            a.charge(&charge("j1", 0.1)).unwrap();
        }
        assert!(matches!(
            a.charge(&charge("j1", 0.1)),
            Err(BudgetError::JobCap { .. })
        ));
        let s = a.spent(
            &charge("j1", 0.0).operator,
            &charge("j1", 0.0).dataset,
            "j1",
            Duration::from_secs(86_400),
        );
        assert!((s.job - 1.0).abs() < 1e-9);
    }

    #[test]
    fn delta_is_capped_per_period_and_refused_without_a_cap() {
        let a = InMemoryAccountant::new();
        let with_delta = |job: &str, cap: f64| Charge {
            delta: 1e-7,
            delta_per_period: cap,
            epsilon_per_job: 10.0,
            epsilon_per_period: 10.0,
            ..charge(job, 0.01)
        };
        assert!(matches!(
            a.charge(&with_delta("j0", 0.0)),
            Err(BudgetError::DeltaCap { .. })
        ));
        for i in 0..10 {
            a.charge(&with_delta(&format!("j{i}"), 1e-6)).unwrap();
        }
        assert!(matches!(
            a.charge(&with_delta("j11", 1e-6)),
            Err(BudgetError::DeltaCap { .. })
        ));
    }

    #[test]
    fn concurrent_charges_never_exceed_the_period_cap() {
        let a = Arc::new(InMemoryAccountant::new());
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (a, ok) = (a.clone(), ok.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        if a.charge(&charge(&format!("j{t}-{i}"), 0.1)).is_ok() {
                            ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ok.load(std::sync::atomic::Ordering::SeqCst), 50);
    }
}
