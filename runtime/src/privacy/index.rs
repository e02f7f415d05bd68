//! The contribution index: per dataset and row bound, the privacy units with more rows than the
//! bound in the whole dataset.
//!
//! Contribution bounding keeps at most `k` rows per unit, chosen at random. Only a unit with more
//! than `k` rows after the query's filter needs that choice, and a filter (or the INNER join with a
//! public lookup on its unique key) never gives a unit more rows than it has in the dataset. So the
//! units heavy in the whole dataset are a superset of the units heavy in any query, and depend on
//! the data alone: not on the query, the operator or the noise. The engine computes them once per
//! dataset version (at the first query that needs them) and sends only their rows through the
//! random choice; every other row is kept as it is, which is what the choice would have done with
//! it. When no unit is heavy, bounding is no step at all.
//!
//! The released distribution is unchanged: a unit in the index that the filter left with at most
//! `k` rows keeps them all under the random choice too (`tests/src/bounding.rs` compares both paths
//! with a two-sample KS test). The index never leaves the engine: no plan text, error or log line
//! names a unit in it. A dataset version lives as long as the engine (sources are checked unchanged
//! before every query, see `Registered::check_unchanged`), so the index needs no invalidation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat;
use datafusion::common::DataFusionError;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use sluice_kernels::UnitSet;
use tokio::sync::OnceCell;

use super::udf;

/// One entry of the index: filled by the first query that needs it.
type Entry = Arc<OnceCell<Arc<UnitSet>>>;

/// The heavy units of each (dataset, bound) asked for so far.
#[derive(Default)]
pub(crate) struct ContributionIndex {
    entries: Mutex<HashMap<(sluice_policy::DatasetId, u32), Entry>>,
}

impl ContributionIndex {
    /// The units of dataset `ds` with more than `bound` rows (and whether its rows without a unit
    /// are more than `bound`), computed at the first call for this pair; concurrent first calls
    /// compute it once. A failure is not kept: the next query tries again.
    pub(crate) async fn heavy(
        &self,
        execution: &SessionContext,
        ds: &sluice_policy::Dataset,
        bound: u32,
    ) -> Result<Arc<UnitSet>, DataFusionError> {
        let cell = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((ds.id.clone(), bound))
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let all = execution.table(ds.id.as_str()).await?;
            Ok(Arc::new(heavy_units(all, &ds.privacy_unit, bound).await?))
        })
        .await
        .cloned()
    }
}

/// The units of `df` with more than `bound` rows; rows without a unit count as one unit.
pub(crate) async fn heavy_units(
    df: DataFrame,
    unit: &str,
    bound: u32,
) -> Result<UnitSet, DataFusionError> {
    let batches = df
        .aggregate(vec![col(unit)], vec![count(lit(1i64)).alias("__sluice_n")])?
        .filter(col("__sluice_n").gt(lit(i64::from(bound))))?
        .select(vec![col(unit)])?
        .collect()
        .await?;
    let columns: Vec<&dyn datafusion::arrow::array::Array> = batches
        .iter()
        .map(|b| b.column(0).as_ref())
        .filter(|c| !c.is_empty())
        .collect();
    if columns.is_empty() {
        return Ok(UnitSet::default());
    }
    let units: ArrayRef = concat(&columns)?;
    udf::unit_set(&units, units.null_count() > 0)
}
