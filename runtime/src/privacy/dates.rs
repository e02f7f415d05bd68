//! Date keys: `date_trunc('month', col)` and `EXTRACT(MONTH FROM col)` as GROUP BY keys over a
//! `date` column, with a public domain derived from the policy.
//!
//! DataFusion's date functions are not compiled in (they bring time-zone tables we do not need),
//! so the planning context gets two *planning-only* functions of the same names, and `EXTRACT`
//! an expression planner that maps it to `date_part`. They give plans the shape the validator
//! reads and are never executed: the DP rewrite replaces each date key with
//! `sluice_date_key(granularity, col)`, which computes the key's label with the same code that
//! enumerates the key's domain, so a released label can only be one the domain lists.
//!
//! # Privacy
//! A date key's domain comes from the policy alone: every truncated date (or year) between the
//! column's public `bounds`, or a fixed calendar range (quarter 1–4, month 1–12, day 1–31, day of
//! week 0–6 with Sunday 0, day of year 1–366). Rows whose key falls outside it are dropped,
//! like rows outside any public domain; every label in it is released, empty ones too.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Date32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use sluice_policy::Date;

/// The most cells one date key may enumerate (e.g. about 27 years of days).
pub const MAX_DATE_CELLS: usize = 10_000;

/// What a date key keeps of a date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// `date_trunc(unit, col)`: the first day of the unit, labelled `YYYY-MM-DD`.
    Trunc(Unit),
    /// `EXTRACT(field FROM col)` / `date_part(field, col)`: a number, labelled in decimal.
    Part(Field),
}

/// A `date_trunc` unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// January 1st.
    Year,
    /// The first day of the quarter.
    Quarter,
    /// The first day of the month.
    Month,
    /// The Monday of the (ISO) week.
    Week,
    /// The day itself.
    Day,
}

/// An `EXTRACT` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The year.
    Year,
    /// 1 to 4.
    Quarter,
    /// 1 to 12.
    Month,
    /// Day of the month, 1 to 31.
    Day,
    /// Day of the week, 0 (Sunday) to 6.
    Dow,
    /// Day of the year, 1 to 366.
    Doy,
}

impl Granularity {
    /// The granularity of `function` (`date_trunc` or `date_part`) with its first argument.
    pub fn parse(function: &str, what: &str) -> Option<Self> {
        let what = what.to_ascii_lowercase();
        Some(match (function, what.as_str()) {
            ("date_trunc", "year") => Self::Trunc(Unit::Year),
            ("date_trunc", "quarter") => Self::Trunc(Unit::Quarter),
            ("date_trunc", "month") => Self::Trunc(Unit::Month),
            ("date_trunc", "week") => Self::Trunc(Unit::Week),
            ("date_trunc", "day") => Self::Trunc(Unit::Day),
            ("date_part", "year") => Self::Part(Field::Year),
            ("date_part", "quarter") => Self::Part(Field::Quarter),
            ("date_part", "month") => Self::Part(Field::Month),
            ("date_part", "day") => Self::Part(Field::Day),
            ("date_part", "dow") => Self::Part(Field::Dow),
            ("date_part", "doy") => Self::Part(Field::Doy),
            _ => return None,
        })
    }

    /// What may be written, for error messages.
    pub const ACCEPTED: &'static str = "date_trunc('year' | 'quarter' | 'month' | 'week' | 'day', col) and EXTRACT(YEAR | QUARTER | MONTH | DAY | DOW | DOY FROM col)";

    /// A stable code for the execution function's first argument.
    fn code(self) -> &'static str {
        match self {
            Self::Trunc(Unit::Year) => "trunc-year",
            Self::Trunc(Unit::Quarter) => "trunc-quarter",
            Self::Trunc(Unit::Month) => "trunc-month",
            Self::Trunc(Unit::Week) => "trunc-week",
            Self::Trunc(Unit::Day) => "trunc-day",
            Self::Part(Field::Year) => "part-year",
            Self::Part(Field::Quarter) => "part-quarter",
            Self::Part(Field::Month) => "part-month",
            Self::Part(Field::Day) => "part-day",
            Self::Part(Field::Dow) => "part-dow",
            Self::Part(Field::Doy) => "part-doy",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        let (kind, what) = code.split_once('-')?;
        Self::parse(
            if kind == "trunc" {
                "date_trunc"
            } else {
                "date_part"
            },
            what,
        )
    }

    /// The truncated date of `days` (days since 1970-01-01), as days.
    fn truncate(unit: Unit, days: i64) -> i64 {
        let d = Date::from_days_since_epoch(days);
        let first = |month: u8| {
            Date {
                year: d.year,
                month,
                day: 1,
            }
            .days_since_epoch()
        };
        match unit {
            Unit::Year => first(1),
            Unit::Quarter => first((d.month - 1) / 3 * 3 + 1),
            Unit::Month => first(d.month),
            // 1970-01-01 was a Thursday: Monday is 3 days before it.
            Unit::Week => days - (days + 3).rem_euclid(7),
            Unit::Day => days,
        }
    }

    /// The label of the date `days` days after 1970-01-01.
    pub fn label(self, days: i64) -> String {
        let d = Date::from_days_since_epoch(days);
        match self {
            Self::Trunc(unit) => {
                Date::from_days_since_epoch(Self::truncate(unit, days)).to_string()
            }
            Self::Part(f) => match f {
                Field::Year => d.year.to_string(),
                Field::Quarter => ((d.month - 1) / 3 + 1).to_string(),
                // Zero-padded, so that text order is calendar order: 01, 02, …, 12.
                Field::Month => format!("{:02}", d.month),
                Field::Day => format!("{:02}", d.day),
                // 1970-01-01 was a Thursday (4).
                Field::Dow => (days + 4).rem_euclid(7).to_string(),
                Field::Doy => {
                    let jan1 = Date {
                        year: d.year,
                        month: 1,
                        day: 1,
                    };
                    format!("{:03}", days - jan1.days_since_epoch() + 1)
                }
            },
        }
    }

    /// Every label of this key over a column with public `bounds`, in release order (sorted as
    /// text, like every key domain; labels are zero-padded so that this is calendar order), or
    /// why there is no public domain.
    pub fn domain(self, bounds: Option<(Date, Date)>) -> Result<Vec<String>, String> {
        let padded = |lo: i64, hi: i64, width: usize| {
            (lo..=hi)
                .map(|n| format!("{n:0width$}"))
                .collect::<Vec<_>>()
        };
        let range = |lo: i64, hi: i64| padded(lo, hi, 1);
        let mut out = match self {
            Self::Part(Field::Quarter) => range(1, 4),
            Self::Part(Field::Month) => padded(1, 12, 2),
            Self::Part(Field::Day) => padded(1, 31, 2),
            Self::Part(Field::Dow) => range(0, 6),
            Self::Part(Field::Doy) => padded(1, 366, 3),
            Self::Part(Field::Year) => {
                let (lo, hi) = public_bounds(bounds)?;
                range(
                    i64::from(Date::from_days_since_epoch(lo).year),
                    i64::from(Date::from_days_since_epoch(hi).year),
                )
            }
            Self::Trunc(unit) => {
                let (lo, hi) = public_bounds(bounds)?;
                let mut labels = Vec::new();
                let mut day = Self::truncate(unit, lo);
                while day <= hi {
                    if labels.len() >= MAX_DATE_CELLS {
                        return Err(format!(
                            "this date key has more than {MAX_DATE_CELLS} values within the column's bounds; use a coarser unit"
                        ));
                    }
                    labels.push(self.label(day));
                    // The next unit starts within 1 to 92 days; step to it exactly.
                    let mut next = day + 1;
                    while Self::truncate(unit, next) == day {
                        next += 1;
                    }
                    day = next;
                }
                labels
            }
        };
        out.sort();
        Ok(out)
    }
}

/// A date column's public bounds as days since the epoch, or why its years are not public.
fn public_bounds(bounds: Option<(Date, Date)>) -> Result<(i64, i64), String> {
    let (lo, hi) = bounds.ok_or(
        "the policy declares no bounds for this date column, so its years are not public; a data holder can add bounds = [first, last]",
    )?;
    Ok((lo.days_since_epoch(), hi.days_since_epoch()))
}

/// A function that exists for planning only: it gives `date_trunc(…)`/`date_part(…)` their
/// types, and fails if ever executed.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PlanOnly {
    name: &'static str,
    output: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for PlanOnly {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.output.clone())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{} is planned only; the DP rewrite replaces it", self.name)
    }
}

fn plan_only(name: &'static str, output: DataType) -> ScalarUDF {
    ScalarUDF::new_from_impl(PlanOnly {
        name,
        output,
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// Whether `udf` is one of [`planning_udfs`], which plan but never execute.
pub(crate) fn is_planned_only(udf: &ScalarUDF) -> bool {
    let any: &dyn std::any::Any = udf.inner().as_ref();
    any.is::<PlanOnly>()
}

/// The planning-only `date_trunc` and `date_part`.
pub fn planning_udfs() -> [ScalarUDF; 2] {
    [
        plan_only("date_trunc", DataType::Date32),
        plan_only("date_part", DataType::Int64),
    ]
}

/// Plans `EXTRACT(field FROM x)` as `date_part('field', x)`.
#[derive(Debug)]
pub struct ExtractPlanner(Arc<ScalarUDF>);

impl ExtractPlanner {
    /// The planner.
    pub fn new() -> Self {
        Self(Arc::new(plan_only("date_part", DataType::Int64)))
    }
}

impl Default for ExtractPlanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ExprPlanner for ExtractPlanner {
    fn plan_extract(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(self.0.call(args)))
    }
}

/// `sluice_date_key(code, date)`: the label of a date key (see [`Granularity::label`]); NULL for
/// NULL. Never fails on any value.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateKey {
    signature: Signature,
}

impl DateKey {
    /// The function's name in plans.
    pub const NAME: &'static str = "sluice_date_key";

    /// The UDF.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(2, Volatility::Immutable),
        })
    }

    /// The key expression for `granularity` over `column`.
    pub fn call(granularity: Granularity, column: Expr) -> Expr {
        Self::udf().call(vec![
            Expr::Literal(ScalarValue::from(granularity.code()), None),
            column,
        ])
    }
}

impl ScalarUDFImpl for DateKey {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let g = match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(code))) => Granularity::from_code(code),
            _ => None,
        };
        let Some(g) = g else {
            return exec_err!("sluice_date_key: unknown granularity");
        };
        let input: ArrayRef = args.args[1].to_array(args.number_rows)?;
        let days = cast(&input, &DataType::Date32)?;
        let days = days
            .as_any()
            .downcast_ref::<Date32Array>()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("date32".into()))?;
        let out = sluice_kernels::date_labels(days, &|d| g.label(d));
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn labels_truncate_and_extract_like_sql() {
        let d = date("2025-08-14").days_since_epoch(); // a Thursday
        let g = |f: &str, w: &str| Granularity::parse(f, w).unwrap().label(d);
        assert_eq!(g("date_trunc", "year"), "2025-01-01");
        assert_eq!(g("date_trunc", "quarter"), "2025-07-01");
        assert_eq!(g("date_trunc", "MONTH"), "2025-08-01");
        assert_eq!(g("date_trunc", "week"), "2025-08-11");
        assert_eq!(g("date_trunc", "day"), "2025-08-14");
        assert_eq!(g("date_part", "year"), "2025");
        assert_eq!(g("date_part", "quarter"), "3");
        assert_eq!(g("date_part", "month"), "08");
        assert_eq!(g("date_part", "day"), "14");
        assert_eq!(g("date_part", "dow"), "4");
        assert_eq!(g("date_part", "doy"), "226");
        assert_eq!(Granularity::parse("date_trunc", "hour"), None);
    }

    #[test]
    fn every_label_of_a_date_within_bounds_is_in_the_domain() {
        let bounds = Some((date("2023-11-15"), date("2025-02-03")));
        let (lo, hi) = (
            date("2023-11-15").days_since_epoch(),
            date("2025-02-03").days_since_epoch(),
        );
        for (f, w, n) in [
            ("date_trunc", "year", 3),
            ("date_trunc", "quarter", 6),
            ("date_trunc", "month", 16),
            ("date_trunc", "week", 65),
            ("date_trunc", "day", 447),
            ("date_part", "year", 3),
            ("date_part", "dow", 7),
        ] {
            let g = Granularity::parse(f, w).unwrap();
            let domain = g.domain(bounds).unwrap();
            assert_eq!(domain.len(), n, "{f} {w}");
            for day in lo..=hi {
                assert!(domain.binary_search(&g.label(day)).is_ok(), "{f} {w} {day}");
            }
        }
        assert!(
            Granularity::parse("date_trunc", "month")
                .unwrap()
                .domain(None)
                .is_err()
        );
        assert!(
            Granularity::parse("date_trunc", "day")
                .unwrap()
                .domain(Some((date("1990-01-01"), date("2030-01-01"))))
                .is_err()
        );
    }
}
