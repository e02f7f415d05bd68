//! Calibration: the mechanism of every release of a design at the amount the query spends, and
//! the charge that amount and δ make.

use std::time::Duration;

use sluice_policy::{Grant, PrivacyMeasure};

use super::Asker;
use super::accountant::{Amount, Caps, Charge, DatasetCap};
use super::design::{Design, Statistic, additive};
use super::mechanisms::Additive;
use super::quantile::{self, QuantileMechanism};
use super::selection::{PartitionSelection, Reach};
use super::validate::ValidatedQuery;
use crate::QueryError;
use crate::data::Registered;

/// The mechanism of one release.
pub(crate) enum Mechanism {
    Additive(Additive),
    Quantile(QuantileMechanism),
    /// The count that selects non-public keys; the additive noise of the same scale states its
    /// accuracy.
    Select(PartitionSelection, Additive),
}

impl Mechanism {
    /// The additive noise of the release, for the releases that have one.
    pub(crate) fn additive(&self) -> Option<&Additive> {
        match self {
            Self::Additive(m) | Self::Select(_, m) => Some(m),
            Self::Quantile(_) => None,
        }
    }
}

/// A design with a mechanism for each release, at a total `amount` and `delta`.
pub(crate) struct Calibrated {
    pub design: Design,
    /// One per release of the design, in its order.
    pub mechanisms: Vec<Mechanism>,
    pub amount: Amount,
    pub delta: f64,
}

impl Calibrated {
    /// Calibrates every release of `design` for a query spending `amount` under `grant`.
    pub(crate) fn new(design: Design, amount: Amount, grant: &Grant) -> Result<Self, QueryError> {
        let delta = if design.select_with.is_some() {
            // Validation refuses selection without a δ in the grant.
            grant
                .delta_per_query
                .ok_or_else(|| QueryError::NotGranted("the grant allows no δ".into()))?
        } else {
            0.0
        };
        let each = design.each(amount.value);
        let mechanisms = (0..design.releases.len())
            .map(|i| mechanism(&design, i, each, delta))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            design,
            mechanisms,
            amount,
            delta,
        })
    }

    /// What answering costs `asker`, against the caps of `grant` (and the job's own ε cap).
    pub(crate) fn charge(
        &self,
        asker: &Asker,
        registered: &Registered,
        grant: &Grant,
        q: &ValidatedQuery,
        engine: &str,
    ) -> Charge {
        let family = match self.design.measure {
            PrivacyMeasure::Pure => "discrete-laplace",
            PrivacyMeasure::Zcdp => "discrete-gaussian",
        };
        let selection = if self.design.select_with.is_some() {
            "+partition-selection"
        } else {
            ""
        };
        Charge {
            operator: asker.operator.clone(),
            dataset: registered.policy.id.clone(),
            job: asker.job.clone(),
            scenario: grant.scenario.clone(),
            amount: self.amount,
            delta: self.delta,
            caps: caps(self.design.measure, grant, asker.max_epsilon),
            dataset_cap: registered.policy.budget.map(|b| DatasetCap {
                per_period: b.per_period,
                period: Duration::from_secs(b.period_secs),
            }),
            delta_per_period: grant.delta_per_period,
            period: Duration::from_secs(grant.period_secs),
            sql: q.normalized.clone(),
            submitted_sql: q.submitted.clone(),
            dataset_hash: registered.content_hash.clone(),
            mechanism: format!("{family}{selection}"),
            engine: engine.to_string(),
        }
    }
}

/// The caps of `grant` in `measure`, with the job's own ε cap where it set one: on a zCDP
/// dataset that caps its ρ at the ρ an ε-DP query of that ε counts for (ρ = ε²/2).
fn caps(measure: PrivacyMeasure, grant: &Grant, max_epsilon: Option<f64>) -> Caps {
    match measure {
        PrivacyMeasure::Pure => Caps {
            per_job: max_epsilon.map_or(grant.epsilon_per_job, |m| m.min(grant.epsilon_per_job)),
            per_period: grant.epsilon_per_period,
        },
        PrivacyMeasure::Zcdp => Caps {
            per_job: max_epsilon
                .map_or(grant.rho_per_job, |m| (m * m / 2.0).min(grant.rho_per_job)),
            per_period: grant.rho_per_period,
        },
    }
}

/// The mechanism of release `i` of `design`, spending `each`.
fn mechanism(design: &Design, i: usize, each: f64, delta: f64) -> Result<Mechanism, QueryError> {
    let (measure, bounds, release) = (design.measure, &design.bounds, &design.releases[i]);
    // Calibration fails only for amounts validation let through by mistake: nothing is charged
    // yet, so the query is refused.
    let refused = |e: &dyn std::fmt::Display| {
        QueryError::InvalidOptions(format!("the noise cannot be calibrated: {e}"))
    };
    if design.select_with == Some(i) {
        // A unit reaches at most l0 key tuples, with l1 rows in all and l∞ in one.
        let reach = Reach {
            l0: u32::try_from(bounds.l0).unwrap_or(u32::MAX),
            l1: bounds.l1,
            l2: bounds.l2_rows(),
            linf: bounds.linf,
        };
        let selection = match measure {
            PrivacyMeasure::Pure => PartitionSelection::laplace(reach, each, delta),
            PrivacyMeasure::Zcdp => PartitionSelection::gaussian(reach, each, delta),
        }
        .map_err(|e| refused(&e))?;
        let noise = additive(measure, bounds.l1, release.l2, each).map_err(|e| refused(&e))?;
        return Ok(Mechanism::Select(selection, noise));
    }
    match &release.stat {
        Statistic::Quantile {
            q, lo, hi, integer, ..
        } => {
            let candidates = quantile::candidates(*lo, *hi, *integer);
            let k = u32::try_from(bounds.l1).unwrap_or(u32::MAX);
            match measure {
                PrivacyMeasure::Pure => QuantileMechanism::new(candidates, *q, k, each),
                PrivacyMeasure::Zcdp => QuantileMechanism::zcdp(candidates, *q, k, each),
            }
            .map(Mechanism::Quantile)
            .map_err(|e| refused(&e))
        }
        _ => additive(measure, release.l1, release.l2, each)
            .map(Mechanism::Additive)
            .map_err(|e| refused(&e)),
    }
}
