//! The privacy accountant: the one place a query's cost is checked against the grant and recorded,
//! *before* the query runs (DESIGN invariant 2: charge before release).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sluice_policy::{DatasetId, OperatorId, PrivacyMeasure};

pub use super::amount::Amount;
use crate::report::sig;

/// One charge to make: who, on what, for which job, how much, within which limits.
#[derive(Clone, Debug)]
pub struct Charge {
    /// The operator.
    pub operator: OperatorId,
    /// The dataset.
    pub dataset: DatasetId,
    /// The job that asked.
    pub job: String,
    /// The scenario whose grant allows it, if the grant names one: its own ledger (its caps
    /// count only its charges).
    pub scenario: Option<String>,
    /// The amount to charge, in the dataset's measure.
    pub amount: Amount,
    /// The δ to charge (0 unless partition selection spends some).
    pub delta: f64,
    /// The caps the amount is checked against, in the same measure.
    pub caps: Caps,
    /// The dataset-wide cap (every operator together), if the policy sets one.
    pub dataset_cap: Option<DatasetCap>,
    /// The grant's δ per period (0: no δ may be spent).
    pub delta_per_period: f64,
    /// The grant's period length.
    pub period: Duration,
    /// The query's normalized SQL, for the audit log.
    pub sql: String,
    /// The SQL as the job wrote it, for the audit log (beside the normalized plan).
    pub submitted_sql: String,
    /// The sha256 of the dataset version the query reads.
    pub dataset_hash: String,
    /// The mechanism family, e.g. `discrete-laplace`.
    pub mechanism: String,
    /// The engine that will run the query ([`crate::remote::LOCAL`] or a cluster's name), for
    /// the audit log.
    pub engine: String,
}

/// The caps on one dataset's spending, in the dataset's measure (ε or ρ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Caps {
    /// What one job may spend.
    pub per_job: f64,
    /// What may be spent in one period.
    pub per_period: f64,
}

/// A cap on what every operator together may spend on one dataset in a period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DatasetCap {
    /// In the dataset's measure.
    pub per_period: f64,
    /// The period.
    pub period: Duration,
}

/// Sums of past charges in every unit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// ε charged on pure-DP terms.
    pub epsilon: f64,
    /// ρ charged on zCDP terms.
    pub rho: f64,
    /// δ charged.
    pub delta: f64,
}

impl Totals {
    /// The total in `measure`.
    pub fn in_measure(&self, measure: PrivacyMeasure) -> f64 {
        match measure {
            PrivacyMeasure::Pure => self.epsilon,
            PrivacyMeasure::Zcdp => self.rho,
        }
    }

    fn record(&mut self, amount: Amount, delta: f64) {
        self.epsilon += amount.epsilon();
        self.rho += amount.rho();
        self.delta += delta;
    }
}

impl std::ops::Add for Totals {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        Self {
            epsilon: self.epsilon + o.epsilon,
            rho: self.rho + o.rho,
            delta: self.delta + o.delta,
        }
    }
}

/// What has been spent, seen from one job.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    /// Spent by this job on this dataset.
    pub job: Totals,
    /// Spent on this dataset in the current period, by every job the caps cover.
    pub period: Totals,
}

impl std::ops::Add for Spent {
    type Output = Self;

    /// Two ledgers' spending together (a plan's own on top of the real one).
    fn add(self, o: Self) -> Self {
        Self {
            job: self.job + o.job,
            period: self.period + o.period,
        }
    }
}

impl Spent {
    /// The ε of the (ε, δ)-DP guarantee this period's spending amounts to: the ε spent on a pure
    /// dataset; on a zCDP dataset, the ε its ρ implies at δ = [`ZCDP_REPORT_DELTA`] (the δ of
    /// that guarantee is that plus `period.delta`).
    pub fn implied_epsilon(&self) -> f64 {
        if self.period.rho > 0.0 {
            zcdp_epsilon(self.period.rho, ZCDP_REPORT_DELTA).unwrap_or(f64::INFINITY)
        } else {
            self.period.epsilon
        }
    }
}

/// Why a charge was refused. Nothing was charged.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The job's own cap (ε or ρ) would be exceeded.
    #[error(
        "query needs {unit}={} but the job has {unit}={} left on dataset `{dataset}` (per-job cap {})",
        sig(*.needed),
        sig(*.remaining),
        sig(*.cap)
    )]
    JobCap {
        /// `ε` or `ρ`: the dataset's measure.
        unit: &'static str,
        /// The dataset.
        dataset: DatasetId,
        /// What the query needs.
        needed: f64,
        /// What is left.
        remaining: f64,
        /// The cap.
        cap: f64,
    },
    /// The operator's period cap (ε or ρ) would be exceeded.
    #[error(
        "query needs {unit}={} but the operator has {unit}={} left on dataset `{dataset}` this period (cap {})",
        sig(*.needed),
        sig(*.remaining),
        sig(*.cap)
    )]
    PeriodCap {
        /// `ε` or `ρ`: the dataset's measure.
        unit: &'static str,
        /// The dataset.
        dataset: DatasetId,
        /// What the query needs.
        needed: f64,
        /// What is left.
        remaining: f64,
        /// The cap.
        cap: f64,
    },
    /// The dataset-wide cap (every operator together) would be exceeded.
    #[error(
        "query needs {unit}={} but dataset `{dataset}` has {unit}={} left this period over all operators together (cap {})",
        sig(*.needed),
        sig(*.remaining),
        sig(*.cap)
    )]
    DatasetCap {
        /// `ε` or `ρ`: the dataset's measure.
        unit: &'static str,
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
    /// The dataset's privacy measure changed this period (policy edited from pure ε-DP to zCDP or
    /// back): spending in the two measures cannot be capped together, so nothing more is charged
    /// on it until the period of the earlier spending has passed.
    #[error(
        "dataset `{dataset}` changed privacy measure this period; it can be queried again once the period of the earlier spending has passed"
    )]
    MeasureChanged {
        /// The dataset.
        dataset: DatasetId,
    },
    /// The operator or the dataset is suspended by the data holder; nothing can be charged.
    #[error("access suspended: {0}")]
    Suspended(String),
    /// The accountant could not record the charge (e.g. its storage failed); fail closed.
    #[error("the privacy budget ledger is unavailable")]
    Unavailable,
}

/// Records privacy spending. Implementations must make `charge` atomic: concurrent charges against
/// one grant must never together exceed it; and a charge is durable once it is recorded as
/// [`Recorded::Durable`], or once [`Accountant::settle`] returned `Ok` for it.
pub trait Accountant: Send + Sync {
    /// Checks the limits and records the charge, or refuses it without recording anything.
    ///
    /// A charge may be recorded before it is durable ([`Recorded::Syncing`]): the engine then
    /// runs the query while the accountant makes it durable, and calls [`Accountant::settle`]
    /// before the value is handed to the job.
    fn charge(&self, charge: &Charge) -> Result<Recorded, BudgetError>;

    /// Returns once the charge `recorded` is durable (at once for [`Recorded::Durable`]); an
    /// error if it cannot be made so, and then the value must not be released. An accountant
    /// that records charges as [`Recorded::Syncing`] must override it: by default such a charge
    /// never settles (fail closed).
    fn settle(&self, recorded: Recorded) -> Result<(), BudgetError> {
        match recorded {
            Recorded::Durable => Ok(()),
            Recorded::Syncing(_) => Err(BudgetError::Unavailable),
        }
    }

    /// What has been spent on `dataset` by `operator` under `scenario` (`None`: its grant
    /// without one) in the last `period`, and by `job`.
    fn spent_in(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        scenario: Option<&str>,
        job: &str,
        period: Duration,
    ) -> Spent;

    /// A query of `operator` was refused (by policy, budget or suspension), before any charge.
    /// Nothing is owed; the broker counts refusals for its alert rules. By default, nothing.
    fn refused(&self, operator: &OperatorId) {
        let _ = operator;
    }

    /// [`Accountant::spent_in`] for a grant without a scenario.
    fn spent(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        job: &str,
        period: Duration,
    ) -> Spent {
        self.spent_in(operator, dataset, None, job, period)
    }

    /// What every operator together has spent on `dataset` in the last `period`.
    fn dataset_spent(&self, dataset: &DatasetId, period: Duration) -> Totals;
}

/// Where a recorded charge stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a charge is durable only once it is settled"]
pub enum Recorded {
    /// Durable when [`Accountant::charge`] returned.
    Durable,
    /// Committed and being made durable: the accountant's own mark, for
    /// [`Accountant::settle`].
    Syncing(u64),
}

/// Proof that a query's cost was charged: execution takes one, and only [`charge`] makes one.
#[derive(Debug)]
pub(crate) struct Charged(Recorded);

/// Proof that a query's charge is durable: release takes one, and only [`settle`] makes one
/// (from a [`Charged`]), so "charge before release" is a fact of the types.
#[derive(Debug)]
pub(crate) struct Settled(());

/// Charges `c` to `accountant`; the [`Charged`] it returns is what execution requires.
pub(crate) fn charge(accountant: &dyn Accountant, c: &Charge) -> Result<Charged, BudgetError> {
    accountant.charge(c).map(Charged)
}

/// Waits until the charge is durable; the [`Settled`] it returns is what release requires.
pub(crate) fn settle(
    accountant: &dyn Accountant,
    charged: Charged,
) -> Result<Settled, BudgetError> {
    accountant.settle(charged.0).map(|()| Settled(()))
}

/// The δ at which spending on zCDP datasets is also reported as (ε, δ)-DP.
pub const ZCDP_REPORT_DELTA: f64 = 1e-6;

/// The ε for which ρ-zCDP implies (ε, `delta`)-DP, by OpenDP's conversion (Canonne, Kamath and
/// Steinke 2020, as in `make_zCDP_to_approxDP`); `None` if OpenDP cannot compute it.
pub fn zcdp_epsilon(rho: f64, delta: f64) -> Option<f64> {
    use opendp::combinators::ConcentratedMeasure;
    use opendp::measures::ZeroConcentratedDivergence;
    if rho == 0.0 {
        return Some(0.0);
    }
    ZeroConcentratedDivergence::convert(rho)
        .and_then(|profile| profile.epsilon(delta))
        .ok()
}

/// Tolerance for float comparisons of budgets, so that ten charges of 0.1 fit a cap of 1.0.
const SLACK: f64 = 1e-9;

/// An in-memory accountant: correct under concurrency, forgotten at exit. The broker provides a
/// persistent one.
#[derive(Debug, Default)]
pub struct InMemoryAccountant {
    entries: Mutex<Ledger>,
}

type Ledger = HashMap<(OperatorId, DatasetId), Vec<Entry>>;

#[derive(Debug, Clone)]
struct Entry {
    at: SystemTime,
    job: String,
    scenario: Option<String>,
    amount: Amount,
    delta: f64,
}

impl InMemoryAccountant {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn dataset_sums(map: &Ledger, dataset: &DatasetId, period: Duration) -> Totals {
        let since = SystemTime::now()
            .checked_sub(period)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut t = Totals::default();
        let of_dataset = map.iter().filter(|((_, d), _)| d == dataset);
        for e in of_dataset.flat_map(|(_, es)| es).filter(|e| e.at >= since) {
            t.record(e.amount, e.delta);
        }
        t
    }

    fn sums(entries: &[Entry], scenario: Option<&str>, job: &str, period: Duration) -> Spent {
        let since = SystemTime::now()
            .checked_sub(period)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut s = Spent::default();
        for e in entries.iter().filter(|e| e.scenario.as_deref() == scenario) {
            if e.job == job {
                s.job.record(e.amount, e.delta);
            }
            if e.at >= since {
                s.period.record(e.amount, e.delta);
            }
        }
        s
    }
}

/// Checks a charge against what its operator has spent (`spent`) and what every operator
/// together has spent on the dataset in the dataset cap's period (`dataset`); shared by every
/// accountant implementation.
pub fn check_limits(charge: &Charge, spent: Spent, dataset: Totals) -> Result<(), BudgetError> {
    let measure = charge.amount.measure;
    let other = |t: &Totals| match measure {
        PrivacyMeasure::Pure => t.rho,
        PrivacyMeasure::Zcdp => t.epsilon,
    };
    if other(&spent.period) > 0.0 || (charge.dataset_cap.is_some() && other(&dataset) > 0.0) {
        return Err(BudgetError::MeasureChanged {
            dataset: charge.dataset.clone(),
        });
    }
    let (unit, needed, caps) = (charge.amount.unit(), charge.amount.value, charge.caps);
    let job = spent.job.in_measure(measure);
    let period = spent.period.in_measure(measure);
    if job + needed > caps.per_job + SLACK {
        return Err(BudgetError::JobCap {
            unit,
            dataset: charge.dataset.clone(),
            needed,
            remaining: (caps.per_job - job).max(0.0),
            cap: caps.per_job,
        });
    }
    if period + needed > caps.per_period + SLACK {
        return Err(BudgetError::PeriodCap {
            unit,
            dataset: charge.dataset.clone(),
            needed,
            remaining: (caps.per_period - period).max(0.0),
            cap: caps.per_period,
        });
    }
    if let Some(cap) = charge.dataset_cap {
        let all = dataset.in_measure(measure);
        if all + needed > cap.per_period + SLACK {
            return Err(BudgetError::DatasetCap {
                unit,
                dataset: charge.dataset.clone(),
                needed,
                remaining: (cap.per_period - all).max(0.0),
                cap: cap.per_period,
            });
        }
    }
    // δ is compared relative to the cap (caps are tiny numbers such as 1e-6).
    if charge.delta > 0.0
        && spent.period.delta + charge.delta > charge.delta_per_period * (1.0 + SLACK)
    {
        return Err(BudgetError::DeltaCap {
            dataset: charge.dataset.clone(),
            needed: charge.delta,
            remaining: (charge.delta_per_period - spent.period.delta).max(0.0),
            cap: charge.delta_per_period,
        });
    }
    Ok(())
}

impl InMemoryAccountant {
    fn push(entries: &mut Vec<Entry>, charge: &Charge) {
        entries.push(Entry {
            at: SystemTime::now(),
            job: charge.job.clone(),
            scenario: charge.scenario.clone(),
            amount: charge.amount,
            delta: charge.delta,
        });
    }

    /// Records `charge` without checking any limit: a dry run's ledger ([`crate::plan`]), which
    /// must see a whole job even where the real ledger would refuse.
    pub(crate) fn record_unchecked(&self, charge: &Charge) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entries = map
            .entry((charge.operator.clone(), charge.dataset.clone()))
            .or_default();
        Self::push(entries, charge);
    }
}

impl Accountant for InMemoryAccountant {
    /// Nothing outlives the process, so a charge is as durable as it gets once it is recorded.
    fn charge(&self, charge: &Charge) -> Result<Recorded, BudgetError> {
        let mut map = self.entries.lock().map_err(|_| BudgetError::Unavailable)?;
        let dataset = charge.dataset_cap.map_or_else(Totals::default, |cap| {
            Self::dataset_sums(&map, &charge.dataset, cap.period)
        });
        let entries = map
            .entry((charge.operator.clone(), charge.dataset.clone()))
            .or_default();
        let spent = Self::sums(
            entries,
            charge.scenario.as_deref(),
            &charge.job,
            charge.period,
        );
        check_limits(charge, spent, dataset)?;
        Self::push(entries, charge);
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
        let Ok(map) = self.entries.lock() else {
            return Spent::default();
        };
        map.get(&(operator.clone(), dataset.clone()))
            .map(|e| Self::sums(e, scenario, job, period))
            .unwrap_or_default()
    }

    fn dataset_spent(&self, dataset: &DatasetId, period: Duration) -> Totals {
        let Ok(map) = self.entries.lock() else {
            return Totals::default();
        };
        Self::dataset_sums(&map, dataset, period)
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
            scenario: None,
            amount: Amount::pure(eps),
            delta: 0.0,
            sql: "SELECT COUNT(*) FROM ds".into(),
            submitted_sql: "SELECT COUNT(*) FROM ds".into(),
            dataset_hash: "00".into(),
            mechanism: "discrete-laplace".into(),
            engine: crate::remote::LOCAL.into(),
            caps: Caps {
                per_job: 1.0,
                per_period: 5.0,
            },
            dataset_cap: None,
            delta_per_period: 0.0,
            period: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn refuses_a_charge_beyond_the_job_cap_and_records_nothing() {
        let a = InMemoryAccountant::new();
        for _ in 0..10 {
            assert_eq!(a.charge(&charge("j1", 0.1)), Ok(Recorded::Durable));
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
        assert!((s.job.epsilon - 1.0).abs() < 1e-9);
    }

    #[test]
    fn delta_is_capped_per_period_and_refused_without_a_cap() {
        let a = InMemoryAccountant::new();
        let with_delta = |job: &str, cap: f64| Charge {
            delta: 1e-7,
            delta_per_period: cap,
            caps: Caps {
                per_job: 10.0,
                per_period: 10.0,
            },
            ..charge(job, 0.01)
        };
        assert!(matches!(
            a.charge(&with_delta("j0", 0.0)),
            Err(BudgetError::DeltaCap { .. })
        ));
        for i in 0..10 {
            assert_eq!(
                a.charge(&with_delta(&format!("j{i}"), 1e-6)),
                Ok(Recorded::Durable)
            );
        }
        assert!(matches!(
            a.charge(&with_delta("j11", 1e-6)),
            Err(BudgetError::DeltaCap { .. })
        ));
    }

    #[test]
    fn rho_is_capped_in_its_own_unit_and_measures_never_mix_in_a_period() {
        let a = InMemoryAccountant::new();
        let zcdp = |job: &str, rho: f64| Charge {
            amount: Amount::zcdp(rho),
            caps: Caps {
                per_job: 0.5,
                per_period: 1.0,
            },
            ..charge(job, 0.0)
        };
        assert_eq!(a.charge(&zcdp("j1", 0.3)), Ok(Recorded::Durable));
        let e = a.charge(&zcdp("j1", 0.3)).unwrap_err();
        assert!(matches!(e, BudgetError::JobCap { unit: "ρ", .. }), "{e}");
        assert_eq!(a.charge(&zcdp("j2", 0.5)), Ok(Recorded::Durable));
        assert!(matches!(
            a.charge(&zcdp("j3", 0.3)),
            Err(BudgetError::PeriodCap { unit: "ρ", .. })
        ));
        // The dataset switched back to pure ε-DP: refused until the ρ spending is out of period.
        assert!(matches!(
            a.charge(&charge("j4", 0.1)),
            Err(BudgetError::MeasureChanged { .. })
        ));
        let s = a.spent(
            &charge("j1", 0.0).operator,
            &charge("j1", 0.0).dataset,
            "j1",
            Duration::from_secs(86_400),
        );
        assert!((s.job.rho - 0.3).abs() < 1e-12 && (s.period.rho - 0.8).abs() < 1e-12);
        assert_eq!(s.period.epsilon, 0.0);
    }

    #[test]
    fn rho_converts_to_epsilon_at_least_as_tightly_as_the_classic_bound() {
        // ρ + 2√(ρ ln(1/δ)) (Bun & Steinke 2016) is an upper bound; OpenDP's is tighter.
        for rho in [0.01, 0.1, 0.5, 2.0] {
            let e = zcdp_epsilon(rho, 1e-6).unwrap();
            let classic = rho + 2.0 * (rho * (1e6f64).ln()).sqrt();
            assert!(e > 0.0 && e <= classic, "ρ {rho}: {e} vs {classic}");
        }
        assert_eq!(zcdp_epsilon(0.0, 1e-6), Some(0.0));
    }

    #[test]
    fn operators_together_never_exceed_the_dataset_wide_cap() {
        let a = Arc::new(InMemoryAccountant::new());
        let capped = |op: &str, job: &str| Charge {
            operator: OperatorId::new(op).unwrap(),
            dataset_cap: Some(DatasetCap {
                per_period: 1.5,
                period: Duration::from_secs(86_400),
            }),
            ..charge(job, 0.1)
        };
        let threads: Vec<_> = ["op-a", "op-b"]
            .into_iter()
            .map(|op| {
                let a = a.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|i| a.charge(&capped(op, &format!("{op}-{i}"))).is_ok())
                        .count()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // Each operator's own cap (5.0 a period, 1.0 a job) allows all ten; together only 15.
        assert_eq!(granted, 15);
        let all = a.dataset_spent(&DatasetId::new("ds").unwrap(), Duration::from_secs(86_400));
        assert!((all.epsilon - 1.5).abs() < 1e-9, "{all:?}");
        let e = a.charge(&capped("op-c", "late")).unwrap_err();
        assert!(
            matches!(e, BudgetError::DatasetCap { unit: "ε", .. }),
            "{e}"
        );
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

    /// An accountant that records charges as syncing but does not say how to settle them.
    struct Forgetful(InMemoryAccountant);

    impl Accountant for Forgetful {
        fn charge(&self, c: &Charge) -> Result<Recorded, BudgetError> {
            let _in_memory = self.0.charge(c)?;
            Ok(Recorded::Syncing(1))
        }
        fn spent_in(
            &self,
            operator: &OperatorId,
            dataset: &DatasetId,
            scenario: Option<&str>,
            job: &str,
            period: Duration,
        ) -> Spent {
            self.0.spent_in(operator, dataset, scenario, job, period)
        }
        fn dataset_spent(&self, dataset: &DatasetId, period: Duration) -> Totals {
            self.0.dataset_spent(dataset, period)
        }
    }

    #[test]
    fn a_syncing_charge_never_settles_by_default() {
        let a = Forgetful(InMemoryAccountant::new());
        let charged = super::charge(&a, &charge("j1", 0.1)).unwrap();
        assert_eq!(
            super::settle(&a, charged).map(|_| ()),
            Err(BudgetError::Unavailable),
            "fail closed: nothing is released"
        );
        let durable = super::charge(&InMemoryAccountant::new(), &charge("j1", 0.1)).unwrap();
        assert!(super::settle(&InMemoryAccountant::new(), durable).is_ok());
    }
}
