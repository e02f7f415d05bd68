//! Scalar functions the DP rewrite inserts into plans. Jobs cannot call them: the validator only lets
//! through the SQL subset, and these are registered on the execution context alone. Their per-row
//! loops are in [`sluice_kernels`], which every build profile optimises.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `sluice_fixed(x, lo, hi, center, power, scale)`: clamps `x` to `[lo, hi]` and encodes it as the
/// integer `round((x - center)^power * scale)` (power 1 or 2). NaN becomes NULL; the function never
/// fails on any input value, so it cannot open an error channel.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FixedPoint {
    signature: Signature,
}

impl FixedPoint {
    /// The function's name in plans.
    pub const NAME: &'static str = "sluice_fixed";

    /// The UDF.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(6, Volatility::Immutable),
        })
    }
}

fn scalar_f64(v: &ColumnarValue) -> Result<f64> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Float64(Some(x))) => Ok(*x),
        _ => exec_err!("sluice: parameters must be Float64 literals"),
    }
}

impl ScalarUDFImpl for FixedPoint {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let lo = scalar_f64(&args.args[1])?;
        let hi = scalar_f64(&args.args[2])?;
        let center = scalar_f64(&args.args[3])?;
        let power = scalar_f64(&args.args[4])? as i32;
        let scale = scalar_f64(&args.args[5])?;
        let input = float_input(&args.args[0], args.number_rows)?;
        let out = sluice_kernels::fixed_point(&input, lo, hi, center, power, scale);
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

fn float_input(v: &ColumnarValue, rows: usize) -> Result<Float64Array> {
    let input = v.to_array(rows)?;
    if let Some(numbers) = sluice_kernels::to_f64(&input) {
        return Ok(numbers);
    }
    let input = cast(&input, &DataType::Float64)?;
    Ok(input
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("cast to Float64 yields a Float64Array")
        .clone())
}

/// `sluice_rank(x, lo, hi, integer)`: where `x` falls among the quantile candidates of a column
/// with bounds `[lo, hi]` ([`sluice_kernels::rank_code`]). NULL and NaN become NULL; never
/// fails on any input value.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RankCode {
    signature: Signature,
}

impl RankCode {
    /// The function's name in plans.
    pub const NAME: &'static str = "sluice_rank";

    /// The UDF.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(4, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for RankCode {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let lo = scalar_f64(&args.args[1])?;
        let hi = scalar_f64(&args.args[2])?;
        let integer = scalar_f64(&args.args[3])? != 0.0;
        let candidates = crate::privacy::quantile::candidates(lo, hi, integer);
        let input = float_input(&args.args[0], args.number_rows)?;
        let out = sluice_kernels::rank_codes(&input, &candidates);
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// `sluice_random(x)`: a fresh uniformly random `u64` per row (the argument only sets the row count).
/// Used to choose which rows of a privacy unit are kept; never used for noise.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RandomKey {
    signature: Signature,
}

impl RandomKey {
    /// The function's name in plans.
    pub const NAME: &'static str = "sluice_random";

    /// The UDF.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Volatile),
        })
    }
}

impl ScalarUDFImpl for RandomKey {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let out = sluice_kernels::random_keys(args.number_rows);
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// `sluice_heavy(unit)`: whether a row's privacy unit is in a set of units that have more rows
/// than a bound ([`sluice_kernels::UnitSet`]); never NULL. The set travels inside the function,
/// not in the plan, so a plan shows only the function's name, never a unit.
pub struct InUnits {
    set: Arc<sluice_kernels::UnitSet>,
    signature: Signature,
}

impl InUnits {
    /// The function's name in plans.
    pub const NAME: &'static str = "sluice_heavy";

    /// The UDF over `set`.
    pub fn udf(set: Arc<sluice_kernels::UnitSet>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            set,
            signature: Signature::any(1, Volatility::Immutable),
        })
    }

    /// The units it marks.
    pub fn set(&self) -> &Arc<sluice_kernels::UnitSet> {
        &self.set
    }
}

// Never the units themselves: a plan's debug text can reach logs.
impl std::fmt::Debug for InUnits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InUnits({} units)", self.set.len())
    }
}

// Two of these are the same function only when they share one set.
impl PartialEq for InUnits {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.set, &other.set)
    }
}
impl Eq for InUnits {}
impl std::hash::Hash for InUnits {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.set), state);
    }
}

impl ScalarUDFImpl for InUnits {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let units = args.args[0].to_array(args.number_rows)?;
        let out = match units_key(&units)? {
            UnitKey::Ints(a) => self.set.mark_ints(&a),
            UnitKey::Texts(a) => self.set.mark_texts(&a),
            UnitKey::Views(a) => self.set.mark_text_views(&a),
        };
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// A unit column as the unit sets key it: integers that fit an `i64` losslessly as `i64`, every
/// other type as its text. Building a set and probing it go through this one function, so a
/// unit always meets itself.
pub(crate) enum UnitKey {
    Ints(datafusion::arrow::array::Int64Array),
    Texts(datafusion::arrow::array::StringArray),
    Views(datafusion::arrow::array::StringViewArray),
}

pub(crate) fn units_key(units: &ArrayRef) -> Result<UnitKey> {
    use datafusion::arrow::array::AsArray;
    Ok(match units.data_type() {
        DataType::Utf8View => UnitKey::Views(units.as_string_view().clone()),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => UnitKey::Ints(
            cast(units, &DataType::Int64)?
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone(),
        ),
        _ => UnitKey::Texts(cast(units, &DataType::Utf8)?.as_string::<i32>().clone()),
    })
}

/// The set of the units in `units` (rows of one column); `nulls` says whether the missing unit
/// belongs to it.
pub(crate) fn unit_set(units: &ArrayRef, nulls: bool) -> Result<sluice_kernels::UnitSet> {
    Ok(match units_key(units)? {
        UnitKey::Ints(a) => sluice_kernels::UnitSet::ints(&a, nulls),
        UnitKey::Texts(a) => sluice_kernels::UnitSet::texts(&a, nulls),
        UnitKey::Views(a) => {
            let text = cast(&(Arc::new(a) as ArrayRef), &DataType::Utf8)?;
            sluice_kernels::UnitSet::texts(
                datafusion::arrow::array::AsArray::as_string::<i32>(&text),
                nulls,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Float64Array, Int32Array, StringArray, StringViewArray, UInt64Array,
    };

    /// What `sluice_heavy` returns for `units`.
    fn marks(set: &sluice_kernels::UnitSet, units: &ArrayRef) -> BooleanArray {
        match units_key(units).unwrap() {
            UnitKey::Ints(a) => set.mark_ints(&a),
            UnitKey::Texts(a) => set.mark_texts(&a),
            UnitKey::Views(a) => set.mark_text_views(&a),
        }
    }

    #[test]
    fn a_unit_set_recognises_its_units_whatever_the_unit_column_type() {
        // A unit the set misses would escape contribution bounding: build and probe must agree
        // for every type a privacy unit column can have.
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(7), None, Some(-3)])),
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(1)])),
            Arc::new(StringArray::from(vec![Some("p-1"), None, Some("p-2")])),
            Arc::new(StringViewArray::from(vec![
                Some("a person id longer than twelve bytes"),
                None,
                Some("short"),
            ])),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(2.0)])),
        ];
        for units in columns {
            let heavy = units.slice(0, 1);
            let set = unit_set(&heavy, false).unwrap();
            assert_eq!(
                marks(&set, &units),
                BooleanArray::from(vec![true, false, false]),
                "{:?}",
                units.data_type()
            );
            let with_missing = unit_set(&units.slice(0, 2), true).unwrap();
            assert_eq!(
                marks(&with_missing, &units),
                BooleanArray::from(vec![true, true, false]),
                "{:?}",
                units.data_type()
            );
        }
    }
}

/// A job's row function as the planner sees it: its name and arity, floats in and out, so that
/// `SUM(bmi_risk(height_cm, weight_kg))` plans and the validator can find the call. It is never
/// executed: the engine computes row functions per unit ([`crate::rows::RowWindow`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RowPlanning {
    name: String,
    signature: Signature,
}

impl RowPlanning {
    /// The planning function of `f`.
    pub fn udf(f: &crate::rows::RowFunction) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name: f.name.clone(),
            signature: Signature::exact(vec![DataType::Float64; f.arity], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for RowPlanning {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "row function `{}` is planned, never executed, as a scalar",
            self.name
        )
    }
}
