//! What a caller may see of datasets and budgets, in one place: the broker's API and a job's
//! `budget` call both show these views, so they cannot drift apart.
//!
//! A [`DatasetView`] is a dataset's public description (hidden columns never appear in it); a
//! [`BudgetView`] is a grant's caps beside what has been spent under them.
//!
//! ```
//! use sluice_runtime::views::{Bounds, DatasetView};
//! let policy = sluice_policy::parse_str("p.toml", r#"
//! [dataset.visits]
//! source = "visits.parquet"
//! holder = "city-health-commission"
//! classification = "sensitive"
//! privacy_unit = "patient_id"
//! max_rows_per_unit = 5
//! columns.name = { kind = "hidden" }
//! columns.age = { kind = "int", bounds = [0, 120] }
//! "#).unwrap();
//! let view = DatasetView::of(&policy.datasets[&"visits".parse().unwrap()], &policy);
//! let names: Vec<&str> = view.columns.iter().map(|c| c.name.as_str()).collect();
//! assert_eq!(names, ["age"], "the hidden column is not shown");
//! assert_eq!(view.columns[0].bounds, Some(Bounds::Number(0.0, 120.0)));
//! ```

use serde::Serialize;
use sluice_policy::{ColumnKind, Dataset, Grant, PrivacyMeasure};

use crate::privacy::accountant::{Spent, Totals, ZCDP_REPORT_DELTA};

/// A dataset as callers granted it see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetView {
    /// Its name.
    pub name: String,
    /// The data holder.
    pub holder: String,
    /// Its classification.
    pub classification: &'static str,
    /// The column whose values identify the people the promise is made to.
    pub privacy_unit: String,
    /// Rows of one unit that any query uses at most.
    pub max_rows_per_unit: u32,
    /// Groups one unit reaches at most, where the policy caps them.
    pub max_groups_per_unit: Option<u32>,
    /// Rows of one unit in one group at most, where the policy caps them.
    pub max_rows_per_group: Option<u32>,
    /// `pure` (ε) or `zcdp` (ρ).
    pub privacy_measure: &'static str,
    /// Every column a query may name.
    pub columns: Vec<ColumnView>,
    /// What its classification's grade sets on every grant of it.
    pub grade: GradeView,
    /// The cap over every operator together per period, in the dataset's measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_cap_per_period: Option<f64>,
    /// Its period in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_period_secs: Option<u64>,
}

/// A grade's controls, as callers see them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GradeView {
    /// Whether the dataset may be granted at all.
    pub grantable: bool,
    /// The least review every job on it gets.
    pub review: &'static str,
    /// Ceilings of grants' caps, where the grade sets them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_epsilon_per_job: Option<f64>,
    /// See `max_epsilon_per_job`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_epsilon_per_period: Option<f64>,
    /// See `max_epsilon_per_job`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rho_per_job: Option<f64>,
    /// See `max_epsilon_per_job`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rho_per_period: Option<f64>,
    /// The least minimum group count of every grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_group_count: Option<u64>,
    /// Whether grants may release keys by partition selection.
    pub partition_selection: bool,
}

impl GradeView {
    fn of(g: &sluice_policy::Grade) -> Self {
        Self {
            grantable: g.grantable,
            review: g.review.as_str(),
            max_epsilon_per_job: g.max_epsilon_per_job,
            max_epsilon_per_period: g.max_epsilon_per_period,
            max_rho_per_job: g.max_rho_per_job,
            max_rho_per_period: g.max_rho_per_period,
            min_group_count: g.min_group_count,
            partition_selection: g.partition_selection,
        }
    }
}

/// One usable column and what is public about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnView {
    /// Its name.
    pub name: String,
    /// `category`, `int`, `float` or `date`.
    pub kind: &'static str,
    /// Public clamp bounds (numbers) or first and last date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounds: Option<Bounds>,
    /// Public bin edges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<f64>>,
    /// The public values of a category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_values: Option<Vec<String>>,
    /// Whether a category's values may be released by DP partition selection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partition_selection: bool,
}

/// Public bounds of a column, serialized as a two-element array.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Bounds {
    /// Inclusive numeric bounds.
    Number(f64, f64),
    /// First and last date, `YYYY-MM-DD`.
    Date(String, String),
}

impl DatasetView {
    /// The public description of `d` under `policy` (for its grade).
    pub fn of(d: &Dataset, policy: &sluice_policy::Policy) -> Self {
        Self {
            grade: GradeView::of(&policy.grade(d.classification)),
            name: d.id.to_string(),
            holder: d.holder.clone(),
            classification: d.classification.as_str(),
            privacy_unit: d.privacy_unit.clone(),
            max_rows_per_unit: d.max_rows_per_unit,
            max_groups_per_unit: d.max_groups_per_unit,
            max_rows_per_group: d.max_rows_per_group,
            privacy_measure: d.measure.as_str(),
            dataset_cap_per_period: d.budget.map(|b| b.per_period),
            dataset_period_secs: d.budget.map(|b| b.period_secs),
            columns: d
                .columns
                .iter()
                .filter(|c| !matches!(c.kind, ColumnKind::Hidden))
                .map(|c| ColumnView {
                    name: c.name.clone(),
                    kind: c.kind.name(),
                    bounds: match &c.kind {
                        ColumnKind::Date {
                            bounds: Some((lo, hi)),
                        } => Some(Bounds::Date(lo.to_string(), hi.to_string())),
                        k => k.bounds_f64().map(|(lo, hi)| Bounds::Number(lo, hi)),
                    },
                    bins: c.bins.clone(),
                    public_values: match &c.kind {
                        ColumnKind::Category { public_values, .. } => public_values.clone(),
                        _ => None,
                    },
                    partition_selection: matches!(
                        c.kind,
                        ColumnKind::Category {
                            partition_selection: true,
                            ..
                        }
                    ),
                })
                .collect(),
        }
    }
}

/// A lookup table: public reference data, shown to every caller with its values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LookupView {
    /// Its name in queries.
    pub name: String,
    /// The column datasets join on.
    pub key: String,
    /// Every column's distinct values, sorted.
    pub columns: std::collections::BTreeMap<String, Vec<String>>,
}

impl LookupView {
    /// The view of a loaded lookup table.
    pub fn of(l: &crate::data::LoadedLookup) -> Self {
        Self {
            name: l.policy.id.to_string(),
            key: l.policy.key.clone(),
            columns: l.domains.clone(),
        }
    }
}

/// A grant's caps on one dataset beside what has been spent under them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetView {
    /// The dataset.
    pub dataset: String,
    /// The scenario of the grant, if it names one (each has its own caps and ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// What the scenario's products are for: `public-interest` or `commercial`.
    pub usage: &'static str,
    /// `pure` (caps in ε) or `zcdp` (caps in ρ).
    pub privacy_measure: &'static str,
    /// The grant's ε per job (pure-DP datasets).
    pub epsilon_per_job: f64,
    /// The grant's ε per period (pure-DP datasets).
    pub epsilon_per_period: f64,
    /// The grant's ρ per job (zCDP datasets).
    pub rho_per_job: f64,
    /// The grant's ρ per period (zCDP datasets).
    pub rho_per_period: f64,
    /// The period's length in seconds.
    pub period_secs: u64,
    /// Spent this period, in the dataset's measure.
    pub spent_this_period: f64,
    /// Left this period, in the dataset's measure.
    pub remaining_this_period: f64,
    /// δ the grant allows per period.
    pub delta_per_period: f64,
    /// δ spent this period.
    pub delta_spent_this_period: f64,
    /// The ε of the (ε, δ)-DP guarantee this period's spending amounts to.
    pub implied_epsilon_this_period: f64,
    /// The δ of that guarantee.
    pub implied_delta_this_period: f64,
    /// The dataset-wide cap (every operator together) per its period, if the policy sets one.
    pub dataset_cap_per_period: Option<f64>,
    /// The dataset-wide cap's period in seconds.
    pub dataset_period_secs: Option<u64>,
    /// What every operator together spent in that period, in the dataset's measure.
    pub dataset_spent_this_period: Option<f64>,
    /// What is left of the dataset-wide cap.
    pub dataset_remaining_this_period: Option<f64>,
    /// What this operator can still spend this period: the smaller of its own and the
    /// dataset's remaining.
    pub available_this_period: f64,
    /// When the grant ends, as the policy writes it: a date (valid through that day) or a
    /// date-time, read in `time_zone` unless it carries its own offset.
    pub expires: String,
    /// The policy's time zone.
    pub time_zone: String,
    /// `required` when a reviewer approves each job first, `unlisted` when only builds off the
    /// grant's allow-list need approval, else `none`.
    pub review: &'static str,
    /// The sums behind the figures, this job's included.
    #[serde(skip)]
    pub spent: Spent,
}

impl BudgetView {
    /// The view of `grant` on dataset `d` after `spent` (this operator) and `dataset` (every
    /// operator together, in the dataset cap's period).
    pub fn new(d: &Dataset, grant: &Grant, time_zone: &str, spent: Spent, dataset: Totals) -> Self {
        let per_period = match d.measure {
            PrivacyMeasure::Pure => grant.epsilon_per_period,
            PrivacyMeasure::Zcdp => grant.rho_per_period,
        };
        let spent_this_period = spent.period.in_measure(d.measure);
        let report_delta = if d.measure == PrivacyMeasure::Zcdp && spent.period.rho > 0.0 {
            ZCDP_REPORT_DELTA
        } else {
            0.0
        };
        let remaining = (per_period - spent_this_period).max(0.0);
        let dataset_spent = d.budget.map(|_| dataset.in_measure(d.measure));
        let dataset_remaining = d
            .budget
            .map(|b| (b.per_period - dataset.in_measure(d.measure)).max(0.0));
        Self {
            dataset: d.id.to_string(),
            scenario: grant.scenario.clone(),
            usage: grant.usage.as_str(),
            privacy_measure: d.measure.as_str(),
            epsilon_per_job: grant.epsilon_per_job,
            epsilon_per_period: grant.epsilon_per_period,
            rho_per_job: grant.rho_per_job,
            rho_per_period: grant.rho_per_period,
            period_secs: grant.period_secs,
            spent_this_period,
            remaining_this_period: remaining,
            delta_per_period: grant.delta_per_period,
            delta_spent_this_period: spent.period.delta,
            implied_epsilon_this_period: spent.implied_epsilon(),
            implied_delta_this_period: spent.period.delta + report_delta,
            dataset_cap_per_period: d.budget.map(|b| b.per_period),
            dataset_period_secs: d.budget.map(|b| b.period_secs),
            dataset_spent_this_period: dataset_spent,
            dataset_remaining_this_period: dataset_remaining,
            available_this_period: dataset_remaining.map_or(remaining, |r| r.min(remaining)),
            expires: grant.expires.to_string(),
            time_zone: time_zone.into(),
            review: grant.review.as_str(),
            spent,
        }
    }
}
