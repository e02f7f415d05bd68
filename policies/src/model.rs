//! The validated policy model: what the rest of Sluice reads once a policy file passed validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::date::Date;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $validate:path, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Validates `s`: ", $rule, ".")]
            pub fn new(s: &str) -> Result<Self, String> {
                $validate(s, $what).map(|()| Self(s.to_string()))
            }

            /// The identifier as written in policy.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::new(s)
            }
        }
    };
}

id_newtype!(
    /// The name of a dataset, as declared by `[dataset.<name>]` and used in SQL.
    DatasetId,
    "dataset name",
    validate_sql_name,
    "1 to 64 characters of `a-z`, `0-9` and `_`, starting with a letter (it is used as a SQL table name)"
);
id_newtype!(
    /// The identity of an authorized operator (an organisation or team).
    OperatorId,
    "operator id",
    validate_id,
    "1 to 64 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter"
);

/// The one name check: 1 to 64 characters of `a-z`, `0-9`, `_` (and `-` where `dash`), starting
/// with a letter (or `_` where `underscore_first`). `rule` is the wording of the error.
fn check_name(
    s: &str,
    what: &str,
    dash: bool,
    underscore_first: bool,
    rule: &str,
) -> Result<(), String> {
    let ok_first = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || (underscore_first && c == '_'));
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (dash && c == '-'));
    if s.is_empty() || s.len() > 64 || !ok_first || !ok_rest {
        return Err(format!(
            "invalid {what} `{s}`: use 1 to 64 characters of {rule}"
        ));
    }
    Ok(())
}

fn validate_id(s: &str, what: &str) -> Result<(), String> {
    check_name(
        s,
        what,
        true,
        false,
        "a-z, 0-9, `_` and `-`, starting with a letter",
    )
}

fn validate_sql_name(s: &str, what: &str) -> Result<(), String> {
    check_name(
        s,
        what,
        false,
        false,
        "a-z, 0-9 and `_`, starting with a letter",
    )
}

/// Checks a column name: SQL-friendly lower-case identifiers only, so that no quoting is ever needed.
pub(crate) fn validate_column_name(s: &str) -> Result<(), String> {
    check_name(
        s,
        "column name",
        false,
        true,
        "a-z, 0-9 and `_`, not starting with a digit",
    )
}

/// A whole validated policy: every dataset and every grant from one or more files.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Datasets by name.
    pub datasets: BTreeMap<DatasetId, Dataset>,
    /// Grants in file order.
    pub grants: Vec<Grant>,
    /// Public lookup tables by name (e.g. district → region), joinable with any dataset.
    pub lookups: BTreeMap<DatasetId, Lookup>,
    /// The files this policy was read from, in the order read, with their exact bytes
    /// (so that callers can hash what was loaded).
    pub files: Vec<(PathBuf, String)>,
    /// The zone its dates are read in: a grant `expires = 2027-12-31` is valid through the end
    /// of that day there. Default Asia/Shanghai.
    pub time_zone: crate::date::TimeZone,
    /// Alert rules, checked after every charge.
    pub alerts: Vec<AlertRule>,
    /// What each classification allows, where the policy says (`[grade.<classification>]`);
    /// the others get [`Grade::default_for`].
    pub grades: BTreeMap<Classification, Grade>,
}

impl Policy {
    /// The controls of classification `c`: its `[grade.<c>]` table, or the built-in default.
    pub fn grade(&self, c: Classification) -> Grade {
        self.grades
            .get(&c)
            .cloned()
            .unwrap_or_else(|| Grade::default_for(c))
    }
}

/// The controls a classification grade sets on every grant of its datasets (分类分级): ceilings
/// a grant may not exceed (`policy check` refuses it at the grant) and minimums the grant gets
/// whatever it says (the stricter of the two applies).
#[derive(Clone, Debug, PartialEq)]
pub struct Grade {
    /// Whether its datasets may be granted at all (never for `core`).
    pub grantable: bool,
    /// Ceiling of a grant's `epsilon_per_job`.
    pub max_epsilon_per_job: Option<f64>,
    /// Ceiling of a grant's `epsilon_per_period`.
    pub max_epsilon_per_period: Option<f64>,
    /// Ceiling of a grant's `rho_per_job`.
    pub max_rho_per_job: Option<f64>,
    /// Ceiling of a grant's `rho_per_period`.
    pub max_rho_per_period: Option<f64>,
    /// The least review a grant gets.
    pub review: Review,
    /// The least `min_group_count` a grant gets.
    pub min_group_count: Option<u64>,
    /// Whether grants may release keys by partition selection (`delta_per_query`).
    pub partition_selection: bool,
    /// Whether each job on such a dataset also needs its holder's approval, beside a
    /// reviewer's (then review is required whatever the grant says).
    pub holder_approval: bool,
    /// Whether grants may allow row functions (job code over rows); not for `important` data
    /// unless its grade says so.
    pub row_functions: bool,
}

impl Grade {
    /// Without a `[grade.…]` table: `core` is never granted; every other grade sets nothing.
    pub fn default_for(c: Classification) -> Self {
        Self {
            grantable: c != Classification::Core,
            max_epsilon_per_job: None,
            max_epsilon_per_period: None,
            max_rho_per_job: None,
            max_rho_per_period: None,
            review: Review::None,
            min_group_count: None,
            partition_selection: true,
            holder_approval: false,
            row_functions: !matches!(c, Classification::Important | Classification::Core),
        }
    }
}

/// A monitoring rule (监测预警): when spending crosses a share of a cap, or refusals pile up,
/// raise an alert and act.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Its name, unique in the policy (named in the alert and the audit log).
    pub name: String,
    /// What is watched, and the level at which the rule fires.
    pub when: AlertWhen,
    /// The datasets it watches; empty: every dataset.
    pub datasets: Vec<DatasetId>,
    /// What happens when it fires.
    pub action: AlertAction,
}

/// What an alert rule watches, with the level at which it fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlertWhen {
    /// One operator's spending on a dataset this period reaches `threshold` (a share in (0, 1])
    /// of its grant's period cap. At a high share (0.9) this is the near-exhaustion warning.
    BudgetShare {
        /// The share of the cap.
        threshold: f64,
    },
    /// Every operator's spending on a dataset reaches `threshold` of the dataset-wide cap.
    DatasetShare {
        /// The share of the cap.
        threshold: f64,
    },
    /// One operator's spending on a dataset within the last `window_secs` reaches `threshold`
    /// of its grant's period cap: a period's budget going in an hour.
    BurnRate {
        /// The share of the period cap.
        threshold: f64,
        /// The window, in seconds.
        window_secs: u64,
    },
    /// One operator's queries on a dataset are refused `count` times within `window_secs`
    /// (a job probing what the policy allows, or hammering a spent budget).
    Denials {
        /// How many refusals.
        count: u64,
        /// The window, in seconds.
        window_secs: u64,
    },
}

impl AlertWhen {
    /// The name a policy writes in `when`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BudgetShare { .. } => "budget_share",
            Self::DatasetShare { .. } => "dataset_share",
            Self::BurnRate { .. } => "burn_rate",
            Self::Denials { .. } => "denials",
        }
    }
}

/// What an alert rule does when it fires (beside the `alert.raised` audit entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertAction {
    /// Record and list the alert only.
    Notify,
    /// Also suspend: the operator, or the dataset (`dataset_share`). Nothing more is answered.
    Suspend,
    /// Also hold releases: queries are still answered, but every report of the operator (or on
    /// the dataset, for `dataset_share`) ends `held` until a reviewer releases it, and until the
    /// hold is lifted (`sluice resume … --releases`).
    HoldReleases,
}

impl AlertAction {
    /// The name a policy writes in `action`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::Suspend => "suspend",
            Self::HoldReleases => "hold_releases",
        }
    }
}

/// How sensitive a dataset is, in the programme's classification and grading scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Classification {
    /// Open data.
    Public,
    /// For use inside the programme.
    Internal,
    /// Personal or commercially sensitive.
    Sensitive,
    /// Core data: the highest grade (GB/T 43697-2024 核心数据). Never granted.
    Core,
    /// General data (GB/T 43697-2024 一般数据).
    General,
    /// Important data (GB/T 43697-2024 重要数据).
    Important,
}

impl Classification {
    pub(crate) const NAMES: &'static [&'static str] = &[
        "public",
        "internal",
        "sensitive",
        "core",
        "general",
        "important",
    ];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Self::Public,
            "internal" => Self::Internal,
            "sensitive" => Self::Sensitive,
            "core" => Self::Core,
            "general" => Self::General,
            "important" => Self::Important,
            _ => return None,
        })
    }

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The file format of a dataset's source, taken from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
}

/// How a dataset's privacy loss is measured, composed and capped: the family of mechanisms its
/// queries use and the unit its grants' budgets are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrivacyMeasure {
    /// Pure ε-differential privacy (Laplace family); grants cap ε (`epsilon_per_job`,
    /// `epsilon_per_period`).
    #[default]
    Pure,
    /// ρ-zero-concentrated differential privacy (Gaussian family), which composes more tightly
    /// over many queries; grants cap ρ (`rho_per_job`, `rho_per_period`).
    Zcdp,
}

impl PrivacyMeasure {
    pub(crate) const NAMES: &'static [&'static str] = &["pure", "zcdp"];

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A public reference table a query may join with a dataset: every value in it is public, and its
/// key is unique, so the join neither reveals nor multiplies private rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// Its name in queries.
    pub id: DatasetId,
    /// Where its rows are, relative to the broker's data root unless absolute.
    pub source: PathBuf,
    /// The source's format.
    pub format: SourceFormat,
    /// The column a dataset joins on; its values must be unique and non-null.
    pub key: String,
}

/// A dataset a holder makes available for DP analysis.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Its name.
    pub id: DatasetId,
    /// Where its rows are, relative to the broker's data root unless absolute.
    pub source: PathBuf,
    /// The source's format.
    pub format: SourceFormat,
    /// Who holds the data.
    pub holder: String,
    /// Its classification.
    pub classification: Classification,
    /// The column that identifies one privacy unit (e.g. one person).
    pub privacy_unit: String,
    /// At most this many rows of one privacy unit enter any query.
    pub max_rows_per_unit: u32,
    /// At most this many groups (key tuples) of one privacy unit enter a grouped query (L0),
    /// chosen at random per query; `None`: bounded by `max_rows_per_unit` alone.
    pub max_groups_per_unit: Option<u32>,
    /// At most this many rows of one privacy unit in any one group (L∞), chosen at random;
    /// `None`: bounded by `max_rows_per_unit` alone.
    pub max_rows_per_group: Option<u32>,
    /// How privacy loss on this dataset is measured, composed and capped.
    pub measure: PrivacyMeasure,
    /// Pad every query's response time to a multiple of this many milliseconds, so that timing
    /// reveals at most a coarse bucket of the execution time.
    pub response_time_bucket_ms: Option<u32>,
    /// Declared columns, in declaration order. Columns of the source that are not declared are
    /// invisible to jobs.
    pub columns: Vec<Column>,
    /// The fuel a job's row function may burn on this dataset's rows (`row_fuel_per_row`,
    /// `row_fuel_per_unit`).
    pub row_fuel: RowFuel,
    /// The cap on what every operator together may spend on the dataset in a period: the
    /// privacy promise is to the people in the data, whoever asks.
    pub budget: Option<DatasetBudget>,
    /// Whether its queries may run on a cluster the broker is configured with (`cluster`,
    /// default true); `false` keeps every read of its rows in the broker's process.
    pub cluster: bool,
}

/// The fuel (wasm instructions, about) a row function may burn: per row, and per privacy unit
/// (one instance's whole life). A row over its fuel gets the function's declared default, and
/// so do the unit's remaining rows once the unit's fuel is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowFuel {
    /// Fuel per call (one row).
    pub per_row: u64,
    /// Fuel per privacy unit (all its rows).
    pub per_unit: u64,
}

impl Default for RowFuel {
    fn default() -> Self {
        Self {
            per_row: 100_000,
            per_unit: 10_000_000,
        }
    }
}

/// A dataset-wide cap: every charge on the dataset, by any operator under any grant, counts
/// against it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DatasetBudget {
    /// ε (pure-DP datasets) or ρ (zCDP datasets) per period, all operators together.
    pub per_period: f64,
    /// The period's length in seconds.
    pub period_secs: u64,
}

impl Dataset {
    /// The declared column called `name`, if any.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Names of the columns a job may use (every declared column that is not hidden).
    pub fn public_column_names(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| !matches!(c.kind, ColumnKind::Hidden))
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// One declared column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Its name in the source.
    pub name: String,
    /// What it holds and what is public about it.
    pub kind: ColumnKind,
    /// Public bin edges of a numeric column, strictly increasing: with them, `GROUP BY <column>`
    /// releases a histogram over the bins `[e0, e1)`, `[e1, e2)`, …, `[eₙ₋₁, eₙ]` (every bin,
    /// empty ones too; values outside every bin are dropped).
    pub bins: Option<Vec<f64>>,
    /// Whether a job's row functions may read it (`row_functions = true`; numeric columns
    /// only): the values go into the function, and only its clamped output reaches an
    /// aggregate.
    pub row_functions: bool,
}

impl Column {
    /// The bins' labels and bounds, in order: `[lo, hi)` for each bin, the last one closed.
    pub fn bin_labels(&self) -> Vec<(String, f64, f64)> {
        let Some(edges) = &self.bins else {
            return Vec::new();
        };
        edges
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let close = if i + 2 == edges.len() { ']' } else { ')' };
                (format!("[{}, {}{close}", w[0], w[1]), w[0], w[1])
            })
            .collect()
    }
}

/// What a column holds, and the public metadata that lets the engine use it safely.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnKind {
    /// Text categories. With `public_values` the column can be a GROUP BY key: every declared value is
    /// released (empty ones too) and values outside the list are never released. With
    /// `partition_selection` instead, it can be a GROUP BY key whose values come from the data:
    /// a value is released only when its noisy count passes a threshold that costs δ (the
    /// grant's `delta_per_query`).
    Category {
        /// The public value domain, if declared.
        public_values: Option<Vec<String>>,
        /// Values may be released by DP partition selection.
        partition_selection: bool,
    },
    /// 64-bit integers. With `bounds` the column can be summed and averaged (values are clamped).
    Int {
        /// Public clamp bounds, inclusive.
        bounds: Option<(i64, i64)>,
    },
    /// Floating-point numbers. With `bounds` the column can be summed and averaged (values are clamped).
    Float {
        /// Public clamp bounds, inclusive.
        bounds: Option<(f64, f64)>,
    },
    /// Calendar dates. Comparable with date literals in WHERE; with `bounds`, usable as a GROUP BY
    /// key through `date_trunc('month', col)` and `EXTRACT(YEAR FROM col)`, whose released values
    /// are every truncated date (or year) within the bounds. `EXTRACT` of the quarter, month, day,
    /// day of week or day of year needs no bounds (its domain is fixed).
    Date {
        /// The first and last public date of the column, inclusive.
        bounds: Option<(Date, Date)>,
    },
    /// Never usable by a job, anywhere in a query.
    Hidden,
}

impl ColumnKind {
    pub(crate) const NAMES: &'static [&'static str] =
        &["category", "int", "float", "date", "hidden"];

    /// The kind's name in policy files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Category { .. } => "category",
            Self::Int { .. } => "int",
            Self::Float { .. } => "float",
            Self::Date { .. } => "date",
            Self::Hidden => "hidden",
        }
    }

    /// Clamp bounds as floats, for numeric columns that declare them.
    pub fn bounds_f64(&self) -> Option<(f64, f64)> {
        match self {
            Self::Int {
                bounds: Some((lo, hi)),
            } => Some((*lo as f64, *hi as f64)),
            Self::Float { bounds: Some(b) } => Some(*b),
            _ => None,
        }
    }
}

/// An aggregation a grant may allow, in the analyst's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aggregation {
    /// `COUNT(*)`.
    Count,
    /// `SUM(col)`.
    Sum,
    /// `AVG(col)`.
    Mean,
    /// `MEDIAN(col)`, `PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY col)`.
    Quantile,
    /// `VARIANCE(col)`, `STDDEV(col)` and their `_POP`/`_SAMP` forms.
    Variance,
}

impl Aggregation {
    pub(crate) const NAMES: &'static [&'static str] =
        &["count", "sum", "mean", "quantile", "variance"];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "mean" => Self::Mean,
            "quantile" => Self::Quantile,
            "variance" => Self::Variance,
            _ => return None,
        })
    }

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// What a scenario's products are for, which decides how they are priced
/// (发改价格〔2025〕65号: public-interest products are free).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Usage {
    /// Public governance and public-interest causes.
    #[default]
    PublicInterest,
    /// Industry development.
    Commercial,
}

impl Usage {
    pub(crate) const NAMES: &'static [&'static str] = &["public-interest", "commercial"];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public-interest" => Self::PublicInterest,
            "commercial" => Self::Commercial,
            _ => return None,
        })
    }

    /// Its name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublicInterest => "public-interest",
            Self::Commercial => "commercial",
        }
    }
}

/// Whether a job under a grant needs a reviewer's approval before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Review {
    /// Jobs run without review.
    None,
    /// A security reviewer must approve each job.
    Required,
    /// Builds on the grant's allow-list (`allowed_wasm`, or added by a reviewer approving with
    /// `--allow`) run without review; any other build waits for a reviewer.
    Unlisted,
}

impl Review {
    pub(crate) const NAMES: &'static [&'static str] = &["none", "required", "unlisted"];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "required" => Self::Required,
            "unlisted" => Self::Unlisted,
            _ => return None,
        })
    }

    /// The stricter of two: `required` over `unlisted` over `none`.
    pub fn stricter(self, other: Self) -> Self {
        let rank = |r: Self| match r {
            Self::None => 0,
            Self::Unlisted => 1,
            Self::Required => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// Its name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Unlisted => "unlisted",
            Self::Required => "required",
        }
    }
}

/// Permission for one operator to analyse some datasets, for a purpose, within a privacy budget.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The scenario it authorizes (场景化授权), when it names one: an operator may hold several
    /// grants on one dataset, one per scenario, each with its own caps and ledger.
    pub scenario: Option<String>,
    /// The legal basis or consent the scenario rests on, as the holder states it.
    pub legal_basis: Option<String>,
    /// What the scenario's products are for.
    pub usage: Usage,
    /// What its use costs, for `commercial` use (public-interest use is free, and may not set
    /// one); `None`: free.
    pub tariff: Option<Tariff>,
    /// Operators who may fetch the scenario's released reports and receipts besides the one
    /// that ran the job (the product-operation right); named on each receipt.
    pub recipients: Vec<OperatorId>,
    /// Who may analyse.
    pub operator: OperatorId,
    /// Which datasets.
    pub datasets: Vec<DatasetId>,
    /// For what purpose (shown to reviewers and recorded with each job).
    pub purpose: String,
    /// Which aggregations queries may use.
    pub aggregations: Vec<Aggregation>,
    /// At most this much ε per job and dataset (pure-DP datasets); 0 when the grant declares no
    /// ε caps, which it may only do when it covers no pure-DP dataset.
    pub epsilon_per_job: f64,
    /// At most this much ε per period and dataset (pure-DP datasets); 0 when not declared.
    pub epsilon_per_period: f64,
    /// At most this much ρ per job and dataset (zCDP datasets); 0 when the grant declares no ρ
    /// caps, which it may only do when it covers no zCDP dataset.
    pub rho_per_job: f64,
    /// At most this much ρ per period and dataset (zCDP datasets); 0 when not declared.
    pub rho_per_period: f64,
    /// The length of a budget period, in seconds.
    pub period_secs: u64,
    /// When the grant ends (read in the policy's time zone where it names none).
    pub expires: crate::date::Expiry,
    /// Whether jobs need review.
    pub review: Review,
    /// sha256 (lowercase hex) of job builds that run without review under `review = "unlisted"`.
    pub allowed_wasm: Vec<String>,
    /// Which parameter strings a job may pass: a job can take its SQL from its parameters, so
    /// a holder may pin them (or forbid any).
    pub params: ParamsRule,
    /// Whether the operator may ask ad-hoc SQL through the built-in SQL job (`sluice query`)
    /// under this grant, rather than only through jobs of its own.
    pub adhoc_sql: bool,
    /// Groups whose noisy count is below this are suppressed, if set.
    pub min_group_count: Option<u64>,
    /// The δ a query spends when it releases keys by DP partition selection; `None`: the grant
    /// allows no δ, so such queries are refused.
    pub delta_per_query: Option<f64>,
    /// The δ the operator may spend per dataset per period (0 when `delta_per_query` is `None`).
    pub delta_per_period: f64,
    /// Whether the operator's jobs may run row functions (wasm over the rows of one privacy
    /// unit at a time) on the columns its datasets mark `row_functions = true`.
    pub row_functions: bool,
}

/// What a commercial scenario's use costs, in fen (0.01 CNY), under a monthly cap: the unit
/// prices of a guided-price model (发改价格〔2025〕65号). Each dataset's line of a statement is
/// priced with that dataset's own consumption, so a job over several holders' datasets splits its
/// fee by what it used of each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tariff {
    /// Per unit of ε charged (pure-DP datasets).
    pub fen_per_epsilon: u64,
    /// Per unit of ρ charged (zCDP datasets).
    pub fen_per_rho: u64,
    /// Per query answered, cached answers included.
    pub fen_per_query: u64,
    /// Per aggregate cell released.
    pub fen_per_cell: u64,
    /// At most this much per calendar month (the policy's time zone) under the grant.
    pub cap_fen_per_month: u64,
    /// The share of each fee earmarked for reinvestment in public data (收益反哺), in percent.
    pub earmark_percent: u8,
}

/// Which parameter strings a grant lets a job pass.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ParamsRule {
    /// Any (reviewers see them in full where review applies).
    #[default]
    Any,
    /// None: the parameter string must be empty (`params = "none"`).
    Forbidden,
    /// Exactly one of these strings (`params = ["…", …]`).
    OneOf(Vec<String>),
}

impl ParamsRule {
    /// Whether `params` is allowed, or why not (the message quotes what the grant allows, which
    /// its operator may read in the policy anyway).
    pub fn check(&self, params: &str) -> Result<(), String> {
        match self {
            Self::Any => Ok(()),
            Self::Forbidden if params.is_empty() => Ok(()),
            Self::Forbidden => Err("the grant forbids job parameters: submit with none".into()),
            Self::OneOf(allowed) if allowed.iter().any(|a| a == params) => Ok(()),
            Self::OneOf(allowed) => Err(format!(
                "the grant pins the job's parameters to one of: {}",
                allowed
                    .iter()
                    .map(|a| format!("\"{}\"", a.escape_debug()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl Grant {
    /// Whether this grant covers `dataset`.
    pub fn covers(&self, dataset: &DatasetId) -> bool {
        self.datasets.contains(dataset)
    }
}
