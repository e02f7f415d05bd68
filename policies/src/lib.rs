//! # sluice-policy
//!
//! The policy language of Sluice: which datasets exist, what about them is public, and which operator
//! may run which differentially private aggregations on them, within which privacy budget.
//! Policies are TOML files that security reviewers read; this crate validates them (reporting every
//! problem with file, line and column) and makes the authorization decision. It is pure logic: no I/O
//! beyond reading the policy files.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use sluice_policy::{parse_str, DatasetId, OperatorId};
//!
//! let policy = parse_str("example.toml", r#"
//! [dataset.health_visits]
//! source = "data/health_visits.parquet"
//! holder = "city-health-commission"
//! classification = "sensitive"
//! privacy_unit = "person_id"
//! max_rows_per_unit = 5
//! columns.district = { kind = "category", public_values = ["Guangling", "Hanjiang"] }
//! columns.age      = { kind = "int", bounds = [0, 100] }
//! columns.name     = { kind = "hidden" }
//!
//! [[grant]]
//! operator = "canal-analytics"
//! datasets = ["health_visits"]
//! purpose = "public health planning"
//! aggregations = ["count", "mean"]
//! epsilon_per_job = 1.0
//! epsilon_per_period = 10.0
//! period = "30d"
//! expires = 2027-12-31
//! review = "none"
//! "#).unwrap();
//!
//! let op = OperatorId::new("canal-analytics").unwrap();
//! let ds = DatasetId::new("health_visits").unwrap();
//! let nov_27_2026 = UNIX_EPOCH + Duration::from_secs(1_795_737_600);
//! let grant = policy.authorize(&op, &ds, nov_27_2026).unwrap();
//! assert_eq!(grant.epsilon_per_job, 1.0);
//! // Valid through 2027-12-31 23:59:59 in the policy's zone (Asia/Shanghai by default).
//! let jan_1_2028_beijing = UNIX_EPOCH + Duration::from_secs(1_830_268_800);
//! assert!(policy.authorize(&op, &ds, jan_1_2028_beijing).is_err());
//! ```
//!
//! ## Core concepts
//! - A **dataset** names its source file, holder, classification, **privacy unit** (the column that
//!   identifies one person or entity) and `max_rows_per_unit`, the contribution bound.
//! - Each **column** has a kind: `category` (with `public_values` it may be a GROUP BY key), `int` and
//!   `float` (with `bounds` they may be summed and averaged), or `hidden` (never usable). Columns that
//!   are not declared do not exist for jobs.
//! - A dataset's `privacy_measure` is `pure` (ε-DP, Laplace noise; the default) or `zcdp`
//!   (ρ-zero-concentrated DP, Gaussian noise, tighter over many queries).
//! - A **grant** lets one operator run some aggregations over some datasets for a purpose, with a
//!   budget per job and per period in each covered dataset's measure (`epsilon_per_*` for pure
//!   datasets, `rho_per_*` for zCDP ones), an expiry (a date, or a date-time, read in the policy's `time_zone`) and whether jobs need
//!   review.
//! - Validation is strict: unknown fields are errors, and every problem is reported at once
//!   (`sluice policy check <dir>`).

mod date;
mod model;
mod parse;

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

pub use date::{Date, Expiry, TimeZone, unix_secs};
pub use model::{
    Aggregation, AlertAction, AlertRule, AlertWhen, Classification, Column, ColumnKind, Dataset,
    DatasetBudget, DatasetId, Grade, Grant, Lookup, OperatorId, ParamsRule, Policy, PrivacyMeasure,
    Review, RowFuel, SourceFormat, Tariff, Usage,
};
pub use parse::{duration_secs, load, load_dir, load_file, parse_files};

/// Validates policy text held in memory, as if it were the file `name`.
pub fn parse_str(name: &str, text: &str) -> Result<Policy, PolicyError> {
    parse_files(vec![(PathBuf::from(name), text.to_string())])
}

/// One problem in a policy file, at a place a reviewer can jump to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in a policy, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("cannot read policy `{}`: {cause}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// The cause (in the message, so not also a `source`: a chain would print it twice).
        cause: std::io::Error,
    },
    /// A directory holds no `*.toml` file.
    #[error("no policy files (*.toml) in `{}`", .0.display())]
    Empty(PathBuf),
    /// The files were read but are not a valid policy.
    #[error("{n} problem(s) in policy:\n{0}", n = .0.0.len())]
    Invalid(Problems),
}

/// Why an operator may not use a dataset. Messages depend only on the policy, never on data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// No dataset of that name (or the operator may not know of it).
    #[error("dataset `{0}` is not granted to operator `{1}`")]
    NotGranted(String, OperatorId),
    /// The operator holds several scenarios on the dataset and the job named none of them.
    #[error(
        "operator `{operator}` holds several scenarios on dataset `{dataset}`: name one ({})",
        scenarios.join(", ")
    )]
    ScenarioRequired {
        /// The dataset.
        dataset: DatasetId,
        /// The operator.
        operator: OperatorId,
        /// The scenarios it holds there.
        scenarios: Vec<String>,
    },
    /// The grant has expired.
    #[error(
        "the grant of dataset `{dataset}` to operator `{operator}` expired: it ran through {expires}"
    )]
    Expired {
        /// The dataset.
        dataset: DatasetId,
        /// The operator.
        operator: OperatorId,
        /// When it ended, as the policy says, with the zone it is read in.
        expires: String,
    },
}

impl Policy {
    /// Whether `grant` is still valid at `at`, its expiry read in the policy's time zone.
    pub fn in_force(&self, grant: &Grant, at: SystemTime) -> bool {
        grant.expires.valid_at(&self.time_zone, date::unix_secs(at))
    }

    /// The grant under which `operator` may analyse `dataset` at `at`, or why not: its
    /// only grant there (an operator holding several scenarios on the dataset must name one,
    /// see [`Policy::authorize_in`]).
    ///
    /// Unknown datasets and datasets without a grant get the same answer, so that an operator cannot
    /// probe which datasets exist beyond those granted to them.
    pub fn authorize(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        at: SystemTime,
    ) -> Result<&Grant, Denial> {
        self.authorize_in(operator, dataset, None, at)
    }

    /// The grant of `scenario` under which `operator` may analyse `dataset` at `at`; with no
    /// scenario, the operator's only grant on the dataset.
    pub fn authorize_in(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        scenario: Option<&str>,
        at: SystemTime,
    ) -> Result<&Grant, Denial> {
        let grant = self.grant_in(operator, dataset, scenario)?;
        if !self.in_force(grant, at) {
            return Err(Denial::Expired {
                dataset: dataset.clone(),
                operator: operator.clone(),
                expires: grant.expires.describe(&self.time_zone),
            });
        }
        Ok(grant)
    }

    /// The grant of `scenario` that `operator` holds on `dataset`, in force or not; with no
    /// scenario, the operator's only grant on the dataset. What a use of the dataset ran under
    /// (for statements and registration), as [`Policy::authorize_in`] picks it.
    pub fn grant_in(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        scenario: Option<&str>,
    ) -> Result<&Grant, Denial> {
        let not_granted = || Denial::NotGranted(dataset.to_string(), operator.clone());
        if !self.datasets.contains_key(dataset) {
            return Err(not_granted());
        }
        let mut held = self
            .grants
            .iter()
            .filter(|g| &g.operator == operator && g.covers(dataset));
        let grant = match scenario {
            Some(s) => held
                .find(|g| g.scenario.as_deref() == Some(s))
                .ok_or_else(not_granted)?,
            None => {
                let all: Vec<&Grant> = held.collect();
                match all.as_slice() {
                    [] => return Err(not_granted()),
                    [one] => *one,
                    several => {
                        return Err(Denial::ScenarioRequired {
                            dataset: dataset.clone(),
                            operator: operator.clone(),
                            scenarios: several.iter().filter_map(|g| g.scenario.clone()).collect(),
                        });
                    }
                }
            }
        };
        Ok(grant)
    }

    /// The datasets `holder` holds.
    pub fn held_by<'a>(&'a self, holder: &'a str) -> impl Iterator<Item = &'a Dataset> + 'a {
        self.datasets.values().filter(move |d| d.holder == holder)
    }

    /// `operator`'s grants in force at `at`, with each dataset they cover.
    pub fn grants_of(&self, operator: &OperatorId, at: SystemTime) -> Vec<(&Grant, &Dataset)> {
        self.grants
            .iter()
            .filter(|g| &g.operator == operator && self.in_force(g, at))
            .flat_map(|g| {
                g.datasets
                    .iter()
                    .filter_map(|d| self.datasets.get(d))
                    .map(move |d| (g, d))
            })
            .collect()
    }

    /// The datasets `operator` holds a grant in force for at `at`, by name.
    pub fn granted_datasets(&self, operator: &OperatorId, at: SystemTime) -> Vec<&Dataset> {
        let mut out: Vec<&Dataset> = self
            .grants_of(operator, at)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }
}
