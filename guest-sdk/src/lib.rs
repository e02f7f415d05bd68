//! # sluice-guest
//!
//! Write Sluice analysis jobs in Rust. A job asks differentially private aggregate queries of the
//! datasets its operator is granted, post-processes the noisy answers as it likes, and returns a
//! report; it never sees a raw row. This crate hides the WIT bindings: you write one function.
//!
//! ```no_run
//! use sluice_guest::{Job, Report, Result};
//!
//! fn visits_by_district(ctx: &mut Job) -> Result<Report> {
//!     let visits = ctx
//!         .query("SELECT district, COUNT(*) AS visits, AVG(cost) AS mean_cost FROM health_visits GROUP BY district")
//!         .epsilon(0.5)
//!         .run()?; // a noisy table with a ±95% accuracy per cell
//!     ctx.log(format!("{} districts released", visits.rows().len()));
//!     Ok(Report::new("Visits by district").table("visits by district", &visits))
//! }
//!
//! sluice_guest::job!(visits_by_district);
//! ```
//!
//! Build it for `wasm32-unknown-unknown` as a `cdylib` (`sluice new --lang rust my-job` writes
//! such a crate with this SDK vendored in it; `sluice build my-job` builds it and prints the
//! path, `target/wasm32-unknown-unknown/release/<job>.wasm`), then run it locally with
//! `sluice run --operator <id> --dataset <name> <that path>`. Sample crates inside this
//! workspace build with the `guest` profile instead (`target/wasm32-unknown-unknown/guest/`).
//!
//! ## Core concepts
//! - [`Job`] is the job's context: its parameters, dataset metadata, budget and queries.
//! - [`Query`] builds one DP query: SQL plus the ε it may spend ([`Query::epsilon`]), the ρ on
//!   datasets with zero-concentrated DP accounting ([`Query::rho`]; see
//!   [`DatasetInfo::privacy_measure`]), or the accuracy it must reach ([`Query::accuracy`]: the
//!   engine solves for the least ε or ρ). Each answer is
//!   charged to the operator's budget *before* it is computed; [`Query::estimate`] tells cost and
//!   accuracy first, without running or charging anything. Repeating an identical query returns
//!   the first answer at no charge.
//! - [`Table`] is a noisy answer: key columns first, then aggregates, sorted by key, each aggregate
//!   cell with the half-width of its 95% interval.
//! - [`Report`] is what the job releases: tables, scalars and text.
//! - The supported SQL: `SELECT <keys>, <aggregates> FROM <dataset> [WHERE …] [GROUP BY <keys>]`
//!   with `COUNT(*)`, `COUNT(DISTINCT <privacy unit>)`, `SUM`, `AVG`, `VARIANCE`, `STDDEV`,
//!   `MEDIAN` and `PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)`; keys must have public values (or
//!   partition selection, or bins) in policy, or be `CASE WHEN … THEN '<label>' … END` buckets or
//!   `date_trunc('month', day)` / `EXTRACT(MONTH FROM day)` on date columns, and aggregated
//!   columns must have bounds.
//!
//! # Privacy
//! Everything a job computes from [`Table`]s is post-processing of DP releases, so the report is
//! differentially private with the total ε (or ρ) the job's queries spent.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "job",
        pub_export_macro: true,
        export_macro_name: "__export_sluice_job",
        default_bindings_module: "sluice_guest::bindings",
    });
}

use bindings::sluice::job::{data, log as wit_log, types};

pub use types::{
    BudgetInfo, ColumnInfo, ColumnKind, CostEstimate, DatasetInfo, PrivacyCost, PrivacyMeasure,
    QueryError, Value,
};

/// Exports `f` (a `fn(&mut Job) -> Result<Report>`) as the job's entry point.
#[macro_export]
macro_rules! job {
    ($f:path) => {
        #[doc(hidden)]
        struct __SluiceJobExport;

        impl $crate::bindings::Guest for __SluiceJobExport {
            fn run(
                params: String,
            ) -> ::core::result::Result<
                $crate::bindings::sluice::job::types::Report,
                $crate::bindings::sluice::job::types::JobError,
            > {
                $crate::__run(params, $f)
            }
        }

        $crate::bindings::__export_sluice_job!(__SluiceJobExport with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub fn __run(
    params: String,
    f: fn(&mut Job) -> Result<Report>,
) -> core::result::Result<types::Report, types::JobError> {
    // A panic traps the job; log its message first so the operator sees why.
    std::panic::set_hook(Box::new(|info| {
        wit_log::log(types::LogLevel::Error, &format!("job panicked: {info}"));
    }));
    let mut job = Job { params };
    match f(&mut job) {
        Ok(r) => Ok(r.into_wit()),
        Err(Error::Query(q)) => Err(types::JobError::Query(q)),
        Err(Error::InvalidParams(m)) => Err(types::JobError::InvalidParams(m)),
        Err(Error::Failed(m)) => Err(types::JobError::Failed(m)),
    }
}

/// Why a job step failed.
#[derive(Debug, Clone)]
pub enum Error {
    /// A query was refused (the message depends only on the query and the policy).
    Query(QueryError),
    /// The parameters were not what the job expects.
    InvalidParams(String),
    /// Anything else.
    Failed(String),
}

impl Error {
    /// An error with a message.
    pub fn msg(m: impl Into<String>) -> Self {
        Self::Failed(m.into())
    }
}

impl From<QueryError> for Error {
    fn from(e: QueryError) -> Self {
        Self::Query(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Query(q) => write!(f, "query refused: {q:?}"),
            Self::InvalidParams(m) => write!(f, "invalid parameters: {m}"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// The job's context.
pub struct Job {
    params: String,
}

/// `%XX` sequences decoded as UTF-8 bytes; anything else, including a `%` not followed by two
/// hex digits, kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Job {
    /// The operator's parameter string, as submitted.
    pub fn params(&self) -> &str {
        &self.params
    }

    /// The value of `name` in parameters written as `key=value` pairs separated by `&`, `;` or
    /// newlines (e.g. `min_age=18&epsilon=0.5`), percent-decoded: write a separator that
    /// belongs to a value as `%26` (`&`), `%3B` (`;`), `%3D` (`=`) or `%25` (`%`), as in a URL
    /// query (`+` stays a plus). The first pair named `name` wins.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .split(['&', ';', '\n'])
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| percent_decode(k.trim()) == name)
            .map(|(_, v)| percent_decode(v.trim()))
    }

    /// A parameter parsed as a number, or `default` when absent.
    pub fn param_f64(&self, name: &str, default: f64) -> Result<f64> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| Error::InvalidParams(format!("`{name}` must be a number, got `{v}`"))),
        }
    }

    /// The datasets this job may query (public metadata only).
    pub fn datasets(&self) -> Vec<DatasetInfo> {
        data::datasets()
    }

    /// Public metadata of one granted dataset.
    pub fn describe(&self, dataset: &str) -> Option<DatasetInfo> {
        data::describe(dataset)
    }

    /// What the grant still allows on `dataset`.
    pub fn budget(&self, dataset: &str) -> Option<BudgetInfo> {
        data::budget(dataset)
    }

    /// Starts a DP query. Set its ε with [`Query::epsilon`] (or a target accuracy with
    /// [`Query::accuracy`]), then [`Query::run`] or [`Query::estimate`]. It borrows the job
    /// shared, so a job may estimate, log and then run the same query.
    pub fn query(&self, sql: impl Into<String>) -> Query<'_> {
        Query {
            _job: self,
            sql: sql.into(),
            target: None,
        }
    }

    /// Logs a progress line for the operator.
    pub fn log(&self, message: impl AsRef<str>) {
        wit_log::log(types::LogLevel::Info, message.as_ref());
    }

    /// Logs a warning for the operator.
    pub fn warn(&self, message: impl AsRef<str>) {
        wit_log::log(types::LogLevel::Warn, message.as_ref());
    }
}

/// One DP aggregate query being built.
pub struct Query<'a> {
    _job: &'a Job,
    sql: String,
    target: Option<types::Target>,
}

impl Query<'_> {
    /// The total ε this query may spend (split evenly among its releases).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.target = Some(types::Target::Epsilon(epsilon));
        self
    }

    /// The total ρ this query may spend (split evenly among its releases), on datasets whose
    /// [`DatasetInfo::privacy_measure`] is [`PrivacyMeasure::Zcdp`]; they refuse an ε.
    pub fn rho(mut self, rho: f64) -> Self {
        self.target = Some(types::Target::Rho(rho));
        self
    }

    /// Spend the least ε (or ρ, on zCDP datasets) for which every aggregate cell's 95% interval
    /// is at most ±`half_width` (in the aggregate's units). For COUNT, COUNT(DISTINCT) and SUM;
    /// other aggregates' accuracy depends on the data, so they need an ε or ρ.
    pub fn accuracy(mut self, half_width: f64) -> Self {
        self.target = Some(types::Target::Accuracy(half_width));
        self
    }

    fn options(&self) -> Result<types::QueryOptions> {
        let target = self.target.ok_or_else(|| {
            Error::Failed(
                "no privacy budget set for the query: call .epsilon(…), .rho(…) or .accuracy(…) first"
                    .into(),
            )
        })?;
        Ok(types::QueryOptions { target })
    }

    /// Runs the query: the cost is charged first, then the noisy answer returned.
    pub fn run(self) -> Result<Table> {
        let t = data::query(&self.sql, self.options()?)?;
        Ok(Table(t))
    }

    /// What [`Query::run`] would cost and how accurate it would be, from the query and the policy
    /// alone: nothing runs and nothing is charged (it counts towards the job's query limit).
    pub fn estimate(&self) -> Result<CostEstimate> {
        Ok(data::estimate(&self.sql, self.options()?)?)
    }
}

/// A noisy answer: key columns first, then aggregates, rows sorted by key.
#[derive(Debug, Clone)]
pub struct Table(types::NoisyTable);

impl Table {
    /// Column names.
    pub fn columns(&self) -> &[String] {
        &self.0.columns
    }

    /// How many leading columns are keys.
    pub fn key_columns(&self) -> usize {
        self.0.key_columns as usize
    }

    /// The rows.
    pub fn rows(&self) -> &[Vec<Value>] {
        &self.0.rows
    }

    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.0.columns.iter().position(|c| c == name)
    }

    /// A cell as a number (`None` for keys and suppressed cells).
    pub fn number(&self, row: usize, column: &str) -> Option<f64> {
        let c = self.column(column)?;
        match self.0.rows.get(row)?.get(c)? {
            Value::Integer(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A key cell as text.
    pub fn key(&self, row: usize, column: &str) -> Option<&str> {
        let c = self.column(column)?;
        match self.0.rows.get(row)?.get(c)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The half-width of the 95% interval of a cell.
    pub fn accuracy(&self, row: usize, column: &str) -> Option<f64> {
        let c = self.column(column)?;
        *self.0.accuracy.get(row)?.get(c)?
    }

    /// Sum of a numeric column over all rows (post-processing), with a conservative 95% half-width
    /// (the sum of the cells' half-widths).
    pub fn total(&self, column: &str) -> (f64, f64) {
        (0..self.0.rows.len()).fold((0.0, 0.0), |(s, a), r| {
            (
                s + self.number(r, column).unwrap_or(0.0),
                a + self.accuracy(r, column).unwrap_or(0.0),
            )
        })
    }

    /// What this answer cost.
    pub fn cost(&self) -> PrivacyCost {
        self.0.cost
    }

    /// How it was produced.
    pub fn mechanism(&self) -> &str {
        &self.0.mechanism
    }
}

/// What the job releases.
#[derive(Debug, Clone, Default)]
pub struct Report {
    title: String,
    text: String,
    tables: Vec<types::NamedTable>,
    scalars: Vec<types::Scalar>,
}

impl Report {
    /// An empty report with a title.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// Appends a paragraph of text.
    pub fn text(mut self, text: impl AsRef<str>) -> Self {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(text.as_ref());
        self
    }

    /// Adds a table.
    pub fn table(mut self, name: impl Into<String>, table: &Table) -> Self {
        self.tables.push(types::NamedTable {
            name: name.into(),
            table: table.0.clone(),
        });
        self
    }

    /// Adds a named number, with the half-width of its 95% interval if known.
    pub fn scalar(mut self, name: impl Into<String>, value: f64, accuracy: Option<f64>) -> Self {
        self.scalars.push(types::Scalar {
            name: name.into(),
            value,
            accuracy,
        });
        self
    }

    fn into_wit(self) -> types::Report {
        types::Report {
            title: self.title,
            text: self.text,
            tables: self.tables,
            scalars: self.scalars,
        }
    }
}

/// Declares a row function: job code that reads the rows of one privacy unit at a time, whose
/// output a query aggregates like a column (`SELECT spot, AVG(per_person(spend, group_size))
/// FROM tourism_trips GROUP BY spot`).
///
/// ```
/// sluice_guest::row_function!(per_person(spend, group_size) in [0.0, 2000.0] default 0.0 => {
///     spend / group_size.max(1.0)
/// });
/// assert_eq!(per_person(300.0, 3.0), 100.0);
/// ```
///
/// Row functions live in a crate of their own, `rows/` beside the job's crate (`sluice build`
/// builds it and puts it inside the job's binary): a module that imports nothing, so the only
/// thing that leaves it is the number it returns. Arguments arrive as `f64` (NULL as NaN); the
/// output is clamped to `[lo, hi]` (public bounds, chosen before seeing data: they set the
/// sensitivity); a trap, running out of fuel, NaN or an infinity gives `default`. Every privacy
/// unit's rows go through a fresh instance, in an order set by their own values, so a `static`
/// may carry state across one unit's rows, never from one unit to another. See
/// `guest-sdk/ROWS.md`.
#[macro_export]
macro_rules! row_function {
    ($name:ident ( $($arg:ident),+ ) in [$lo:literal, $hi:literal] default $default:literal => $body:block) => {
        const _: () = {
            const LINE: &str = concat!(
                stringify!($name), " ", stringify!($lo), " ", stringify!($hi), " ",
                stringify!($default), "\n"
            );
            #[unsafe(link_section = "sluice-row-functions")]
            #[used]
            static MANIFEST: [u8; LINE.len()] = $crate::__manifest_bytes::<{ LINE.len() }>(LINE);
        };
        #[unsafe(export_name = concat!("sluice_row_", stringify!($name)))]
        pub extern "C" fn $name($($arg: f64),+) -> f64 $body
    };
}

/// The bytes of a manifest line, as a fixed-size array for a custom section.
#[doc(hidden)]
pub const fn __manifest_bytes<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn separators_inside_values_are_written_percent_encoded() {
        assert_eq!(percent_decode("a%3Bb%26c%3Dd%25"), "a;b&c=d%");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E4%B8%AD"), "中");
        assert_eq!(percent_decode("x+y"), "x+y");
    }
}
