//! Execution: the DP rewrite on DataFusion (the rows read, contribution bounding, the
//! aggregates of the additive releases and the histograms of the quantile ones), which needs the
//! proof that the query was charged.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{DataFrame, Expr, JoinType, col, lit};

use super::accountant::Charged;
use super::design::{Design, Release, Statistic};
use super::quantile;
use super::validate::ValidatedQuery;
use super::{Asker, PrivacyEngine, udf};
use crate::QueryError;
use crate::data::Registered;

/// The exact values a query's releases are computed from.
pub(crate) struct Truth {
    /// Per key tuple, the exact value of each additive release (0 at quantile releases).
    pub additive: HashMap<Vec<String>, Vec<i64>>,
    /// Per quantile release (by index), per key tuple, the histogram of rank codes.
    pub histograms: HashMap<usize, HashMap<Vec<String>, Vec<u64>>>,
}

impl PrivacyEngine {
    /// Runs the query's releases on DataFusion. Only a charged query runs; any failure here is
    /// after the charge, so it is one generic error whose cause is never shown.
    pub(crate) async fn execute(
        &self,
        q: &ValidatedQuery,
        registered: &Registered,
        releases: &[Release],
        _charged: &Charged,
    ) -> Result<Truth, QueryError> {
        self.truth(q, &registered.policy, releases)
            .await
            .map_err(super::after_charge(QueryError::ExecutionFailed))
    }

    /// The bounded relation, built once (contribution bounding picks rows at random, and every
    /// release of a query reads the same pick), then the additive aggregates and each quantile's
    /// histogram from it. When the query has one reader, or when bounding keeps every row (no
    /// unit is heavy, so nothing is chosen at random and every plan of the bounded relation reads
    /// the same rows), each reader runs its own physical plan, kept for the next query of the
    /// same shape ([`super::plans`]). Otherwise the bounded relation is materialized once, with
    /// only the columns its readers read.
    async fn truth(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
        releases: &[Release],
    ) -> Result<Truth, DataFusionError> {
        let readers = readers(releases);
        let mut truth = Truth {
            additive: HashMap::new(),
            histograms: HashMap::new(),
        };
        let placement = self.catalog.placement(&ds.id, q.local_only());
        if readers.len() == 1 || self.bounding_keeps_every_row(q, ds).await? {
            // On a cluster, each reader's plan runs wholly there, instead of the bounded rows
            // coming back here.
            for (i, reader) in readers.iter().enumerate() {
                let plan = self.plan(q, ds, releases, reader, i).await?;
                let schema = plan.schema();
                let batches =
                    collect(reset_plan_states(plan)?, placement.context.task_ctx()).await?;
                if placement.remote.is_some() {
                    same_schema(&batches, &schema)?;
                }
                read(reader, &batches, q, releases, &mut truth)?;
            }
            return Ok(truth);
        }
        let columns = read_columns(q, releases, ds);
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let bounded = self
            .bound(self.base(q, ds).await?, q, ds)
            .await?
            .select_columns(&columns)?;
        let bounded = if placement.remote.is_some() {
            // Its readers run here, over the rows the cluster chose: a plan over a table held in
            // this process's memory cannot be shipped.
            let schema = Arc::new(bounded.schema().as_arrow().clone());
            let batches = bounded.collect().await?;
            same_schema(&batches, &schema)?;
            let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
            self.catalog
                .context_of(&ds.id)
                .read_table(Arc::new(table))?
        } else {
            bounded.cache().await?
        };
        for reader in &readers {
            let frame = self.reader_frame(bounded.clone(), reader, q, ds, releases)?;
            read(reader, &frame.collect().await?, q, releases, &mut truth)?;
        }
        Ok(truth)
    }

    /// The physical plan of a query's reader `index` (`reader`): the one kept for this query
    /// shape, or a new one (kept unless it holds state that a rerun would see).
    async fn plan(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
        releases: &[Release],
        reader: &Reader<'_>,
        index: usize,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let key = super::plans::PlanKey::new(q, releases, index);
        if let Some(plan) = self.plans.get(&key) {
            return Ok(plan);
        }
        let bounded = self.bound(self.base(q, ds).await?, q, ds).await?;
        let plan = self
            .reader_frame(bounded, reader, q, ds, releases)?
            .create_physical_plan()
            .await?;
        self.plans.insert(key, &plan);
        Ok(plan)
    }

    /// The aggregate `reader` runs over the bounded relation.
    fn reader_frame(
        &self,
        bounded: DataFrame,
        reader: &Reader<'_>,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
        releases: &[Release],
    ) -> Result<DataFrame, DataFusionError> {
        match *reader {
            Reader::Additive => self.additive_frame(bounded, q, ds, releases),
            Reader::Quantile {
                column,
                lo,
                hi,
                integer,
                ..
            } => self.histogram_frame(bounded, q, column, lo, hi, integer),
        }
    }

    /// Contribution bounding as the policy declares it: for a grouped query, at most
    /// `max_groups_per_unit` key tuples per unit and `max_rows_per_group` rows per unit and tuple
    /// (each chosen at random; rows with a NULL unit or key are dropped by the first), then at
    /// most `max_rows_per_unit` rows per unit (at most `max_rows_per_group` without GROUP BY),
    /// chosen by `ROW_NUMBER() OVER (PARTITION BY unit ORDER BY random)`; rows without a unit are
    /// bounded together as one unit.
    ///
    /// Every step is a no-op for a unit with no more rows than the smallest of these bounds, so
    /// only the rows of the units the [`index`](super::index) lists as heavy go through them, and
    /// the rest are kept as they are. Without the index (a benchmark's or a test's baseline) every
    /// row goes through them.
    ///
    /// `df` is read once per branch, so it must be deterministic: a scan with a filter and key
    /// expressions, never random choices. The random choices are read once.
    async fn bound(
        &self,
        df: DataFrame,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<DataFrame, DataFusionError> {
        let unit = ds.privacy_unit.as_str();
        let UnitBounds {
            group_bounds, rows, ..
        } = UnitBounds::of(q, ds);
        let columns: Vec<Expr> = df
            .schema()
            .fields()
            .iter()
            .map(|f| col(datafusion::common::Column::new_unqualified(f.name())))
            .collect();
        let (kept, chosen) = if self.contribution_index {
            let heavy = self.heavy_units(q, ds).await?;
            // The group step drops rows without a unit, however few.
            let drop_missing = group_bounds && ds.max_groups_per_unit.is_some();
            if heavy.is_empty() {
                return if drop_missing {
                    df.filter(col(unit).is_not_null())
                } else {
                    Ok(df)
                };
            }
            let is_heavy = udf::InUnits::udf(heavy).call(vec![col(unit)]);
            let mut kept = df
                .clone()
                .filter(datafusion::prelude::not(is_heavy.clone()))?;
            if drop_missing {
                kept = kept.filter(col(unit).is_not_null())?;
            }
            (Some(kept), df.filter(is_heavy)?)
        } else {
            (None, df)
        };
        let chosen = if group_bounds {
            self.bound_groups(chosen, q, ds)?
        } else {
            chosen
        };
        let rank = row_number()
            .partition_by(vec![col(unit)])
            .order_by(vec![self.random.call(vec![col(unit)]).sort(true, false)])
            .build()?
            .alias("__sluice_rank");
        let chosen = chosen
            .window(vec![rank])?
            .filter(col("__sluice_rank").lt_eq(lit(u64::from(rows))))?
            .select(columns)?;
        match kept {
            Some(kept) => kept.union(chosen),
            None => Ok(chosen),
        }
    }

    /// The units that go through [`Self::bound`]'s random choice: those with more rows in the
    /// dataset than the smallest bound that applies to `q` ([`super::index`]).
    async fn heavy_units(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<Arc<sluice_kernels::UnitSet>, DataFusionError> {
        let ctx = self.catalog.placement(&ds.id, q.local_only()).context;
        self.index.heavy(ctx, ds, UnitBounds::of(q, ds).light).await
    }

    /// Whether [`Self::bound`] keeps every row of `q`'s dataset as it is (no unit is heavy):
    /// then two plans of the bounded relation read the same rows.
    async fn bounding_keeps_every_row(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<bool, DataFusionError> {
        Ok(self.contribution_index && self.heavy_units(q, ds).await?.is_empty())
    }

    /// The group steps of [`Self::bound`] for a grouped query: at most `max_groups_per_unit` key
    /// tuples per unit, then at most `max_rows_per_group` rows per unit and tuple, each chosen at
    /// random. Its output has `df`'s columns and key columns of its own after them.
    fn bound_groups(
        &self,
        mut df: DataFrame,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<DataFrame, DataFusionError> {
        let unit = ds.privacy_unit.as_str();
        let random = |cols: Vec<Expr>| self.random.call(cols).sort(true, false);
        let keys: Vec<String> = (0..q.keys.len())
            .map(|i| format!("__sluice_k{i}"))
            .collect();
        for (name, k) in keys.iter().zip(&q.keys) {
            df = df.with_column(name, k.expr.clone())?;
        }
        if let Some(g) = ds.max_groups_per_unit {
            let mut tuple = vec![col(unit)];
            tuple.extend(keys.iter().map(|k| col(k.as_str())));
            let rank = row_number()
                .partition_by(vec![col(unit)])
                .order_by(vec![random(vec![col(unit)])])
                .build()?
                .alias("__sluice_grank");
            let mut kept = vec![col(unit).alias("__sluice_gu")];
            kept.extend(keys.iter().map(|k| col(k.as_str()).alias(format!("{k}_g"))));
            let chosen = df
                .clone()
                .aggregate(tuple, vec![])?
                .window(vec![rank])?
                .filter(col("__sluice_grank").lt_eq(lit(u64::from(g))))?
                .select(kept)?;
            let mut left = vec![unit.to_string()];
            left.extend(keys.iter().cloned());
            let mut right = vec!["__sluice_gu".to_string()];
            right.extend(keys.iter().map(|k| format!("{k}_g")));
            let left: Vec<&str> = left.iter().map(String::as_str).collect();
            let right: Vec<&str> = right.iter().map(String::as_str).collect();
            df = df.join(chosen, JoinType::LeftSemi, &left, &right, None)?;
        }
        if let Some(r) = ds.max_rows_per_group {
            let mut partition = vec![col(unit)];
            partition.extend(keys.iter().map(|k| col(k.as_str())));
            let rank = row_number()
                .partition_by(partition)
                .order_by(vec![random(vec![col(unit)])])
                .build()?
                .alias("__sluice_rrank");
            df = df
                .window(vec![rank])?
                .filter(col("__sluice_rrank").lt_eq(lit(u64::from(r))))?;
        }
        Ok(df)
    }

    /// The rows a query reads before bounding: the dataset, joined with its public lookup (an
    /// INNER join on a unique key, so no row is repeated), filtered by the WHERE clause, with a
    /// column per row function call, computed per privacy unit.
    async fn base(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<DataFrame, DataFusionError> {
        let ctx = self.catalog.placement(&ds.id, q.local_only()).context;
        let mut df = ctx.table(ds.id.as_str()).await?;
        if let Some(j) = &q.lookup {
            let lookup = ctx.table(j.table.as_str()).await?;
            df = df.join_on(
                lookup,
                JoinType::Inner,
                vec![
                    datafusion::prelude::cast(col(j.on.as_str()), DataType::Utf8)
                        .eq(col(j.key.as_str())),
                ],
            )?;
        }
        if let Some(f) = &q.filter {
            df = df.filter(f.clone())?;
        }
        for call in &q.row_calls {
            df = df.window(vec![row_column(call, ds)?])?;
        }
        Ok(df)
    }

    /// The aggregate that computes `stat` exactly, for the additive releases (`None` for
    /// quantiles, which [`Self::quantile_histograms`] answers).
    fn exact(&self, stat: &Statistic, unit: &str) -> Option<Expr> {
        Some(match stat {
            Statistic::Count => count(lit(1i64)),
            Statistic::Units => count_distinct(col(unit)),
            Statistic::NonNullCount(c) => count(col(c.as_str())),
            Statistic::FixedSum {
                column,
                lo,
                hi,
                center,
                power,
                scale,
            } => sum(self.fixed.call(vec![
                col(column.as_str()),
                lit(*lo),
                lit(*hi),
                lit(*center),
                lit(f64::from(*power)),
                lit(*scale),
            ])),
            Statistic::Quantile { .. } => return None,
        })
    }

    /// The aggregate over `df` (the bounded relation) that computes every additive release, one
    /// column each, in the order of [`additive_releases`].
    fn additive_frame(
        &self,
        df: DataFrame,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
        releases: &[Release],
    ) -> Result<DataFrame, DataFusionError> {
        let aggs: Vec<Expr> = additive_releases(releases)
            .into_iter()
            .filter_map(|i| {
                let e = self.exact(&releases[i].stat, &ds.privacy_unit)?;
                Some(e.alias(format!("__sluice_{i}")))
            })
            .collect();
        df.aggregate(key_exprs(q), aggs)
    }

    /// The logical plan of a query's additive releases over its bounded relation, as text, for
    /// golden tests of the DP rewrite. Like execution it reads the data to find the units with
    /// more rows than the bounds allow; it charges and releases nothing.
    #[doc(hidden)]
    pub async fn rewritten_plan(&self, asker: &Asker, sql: &str) -> Result<String, QueryError> {
        let (q, prepared, grant) = self.prepare(asker, sql).await?;
        let registered: &Registered = &prepared;
        let ds = &registered.policy;
        let design = Design::new(&q, ds, grant);
        let plan = async {
            let bounded = self.bound(self.base(&q, ds).await?, &q, ds).await?;
            let df = self.additive_frame(bounded, &q, ds, &design.releases)?;
            Ok::<_, DataFusionError>(df.logical_plan().display_indent().to_string())
        };
        plan.await
            .map_err(super::after_charge(QueryError::ExecutionFailed))
    }

    /// The aggregate that counts, per key tuple, the [`sluice_kernels::rank_code`]s of
    /// `column`'s bounded values: the counts OpenDP's quantile score is computed from.
    fn histogram_frame(
        &self,
        df: DataFrame,
        q: &ValidatedQuery,
        column: &str,
        lo: f64,
        hi: f64,
        integer: bool,
    ) -> Result<DataFrame, DataFusionError> {
        let mut keys = key_exprs(q);
        keys.push(
            self.rank
                .call(vec![
                    col(column),
                    lit(lo),
                    lit(hi),
                    lit(if integer { 1.0 } else { 0.0 }),
                ])
                .alias("__sluice_code"),
        );
        df.aggregate(keys, vec![count(lit(1i64)).alias("__sluice_n")])
    }
}

/// One consumer of a query's bounded relation: the aggregate of all its additive releases, or
/// one quantile release's histogram.
enum Reader<'a> {
    Additive,
    Quantile {
        release: usize,
        column: &'a str,
        lo: f64,
        hi: f64,
        integer: bool,
    },
}

/// The readers of `releases`: one per quantile release, and one for all the additive ones.
fn readers(releases: &[Release]) -> Vec<Reader<'_>> {
    let mut readers: Vec<Reader<'_>> = releases
        .iter()
        .enumerate()
        .filter_map(|(release, r)| match &r.stat {
            Statistic::Quantile {
                column,
                lo,
                hi,
                integer,
                ..
            } => Some(Reader::Quantile {
                release,
                column: column.as_str(),
                lo: *lo,
                hi: *hi,
                integer: *integer,
            }),
            _ => None,
        })
        .collect();
    if readers.len() < releases.len() {
        readers.insert(0, Reader::Additive);
    }
    readers
}

/// The releases one additive aggregate computes (all but the quantiles), by index.
fn additive_releases(releases: &[Release]) -> Vec<usize> {
    releases
        .iter()
        .enumerate()
        .filter(|(_, r)| !matches!(r.stat, Statistic::Quantile { .. }))
        .map(|(i, _)| i)
        .collect()
}

/// Reads what `reader`'s aggregate returned into `truth`.
fn read(
    reader: &Reader<'_>,
    batches: &[RecordBatch],
    q: &ValidatedQuery,
    releases: &[Release],
    truth: &mut Truth,
) -> Result<(), DataFusionError> {
    match *reader {
        Reader::Additive => {
            let additive = additive_releases(releases);
            for (key, vals) in collect_truth(batches, q.keys.len(), additive.len())? {
                let mut full = vec![0i64; releases.len()];
                for (v, &i) in vals.into_iter().zip(&additive) {
                    full[i] = v;
                }
                truth.additive.insert(key, full);
            }
        }
        Reader::Quantile {
            release,
            lo,
            hi,
            integer,
            ..
        } => {
            let m = quantile::candidates(lo, hi, integer).len();
            // The code is the last "key"; rows with a NULL code (NULL or NaN value) are dropped
            // like rows outside every public domain.
            let mut out: HashMap<Vec<String>, Vec<u64>> = HashMap::new();
            for (mut key, n) in collect_truth(batches, q.keys.len() + 1, 1)? {
                let code: usize = key
                    .pop()
                    .and_then(|c| c.parse().ok())
                    .filter(|c| *c <= 2 * m)
                    .ok_or_else(|| DataFusionError::Internal("rank code".into()))?;
                out.entry(key).or_insert_with(|| vec![0; 2 * m + 1])[code] += n[0].max(0) as u64;
            }
            truth.histograms.insert(release, out);
        }
    }
    Ok(())
}

/// The columns a query's keys and releases read (and the privacy unit).
fn read_columns(
    q: &ValidatedQuery,
    releases: &[Release],
    ds: &sluice_policy::Dataset,
) -> Vec<String> {
    let mut columns = std::collections::BTreeSet::from([ds.privacy_unit.clone()]);
    for k in &q.keys {
        columns.extend(k.expr.column_refs().into_iter().map(|c| c.name.clone()));
    }
    for r in releases {
        match &r.stat {
            Statistic::FixedSum { column, .. }
            | Statistic::NonNullCount(column)
            | Statistic::Quantile { column, .. } => {
                columns.insert(column.clone());
            }
            Statistic::Count | Statistic::Units => {}
        }
    }
    columns.into_iter().collect()
}

fn key_exprs(q: &ValidatedQuery) -> Vec<Expr> {
    q.keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.expr.clone().alias(format!("__sluice_key_{i}")))
        .collect()
}

/// The contribution bounds that apply to one query.
struct UnitBounds {
    /// Whether the group steps apply (a grouped query on a dataset with group bounds).
    group_bounds: bool,
    /// Rows kept per unit.
    rows: u32,
    /// The smallest of the bounds that apply: a unit with no more rows is never cut.
    light: u32,
}

impl UnitBounds {
    fn of(q: &ValidatedQuery, ds: &sluice_policy::Dataset) -> Self {
        let group_bounds = !q.keys.is_empty()
            && (ds.max_groups_per_unit.is_some() || ds.max_rows_per_group.is_some());
        let rows = match (q.keys.is_empty(), ds.max_rows_per_group) {
            (true, Some(r)) => r.min(ds.max_rows_per_unit),
            _ => ds.max_rows_per_unit,
        };
        let light = if group_bounds {
            [ds.max_groups_per_unit, ds.max_rows_per_group]
                .into_iter()
                .flatten()
                .fold(rows, u32::min)
        } else {
            rows
        };
        Self {
            group_bounds,
            rows,
            light,
        }
    }
}

/// Refuses rows another engine returned in a schema other than the plan's (a misconfigured or
/// hostile executor): nothing is read from them.
fn same_schema(
    batches: &[RecordBatch],
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<(), DataFusionError> {
    let fits = |b: &RecordBatch| {
        let got = b.schema();
        got.fields().len() == schema.fields().len()
            && got
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(g, w)| g.name() == w.name() && g.data_type() == w.data_type())
    };
    if batches.iter().all(fits) {
        Ok(())
    } else {
        Err(DataFusionError::Execution(
            "the cluster returned rows of another schema than the plan's".into(),
        ))
    }
}

fn collect_truth(
    batches: &[RecordBatch],
    nkeys: usize,
    nsubs: usize,
) -> Result<HashMap<Vec<String>, Vec<i64>>, DataFusionError> {
    let mut out = HashMap::new();
    for b in batches {
        let cast_all = |from: usize, n: usize, to: &DataType| {
            (from..from + n)
                .map(|i| cast(b.column(i), to))
                .collect::<Result<Vec<_>, _>>()
        };
        let keys = cast_all(0, nkeys, &DataType::Utf8)?;
        let vals = cast_all(nkeys, nsubs, &DataType::Int64)?;
        let keys: Vec<&StringArray> = keys.iter().map(|a| a.as_string::<i32>()).collect();
        let vals: Vec<&Int64Array> = vals.iter().map(|a| a.as_primitive::<Int64Type>()).collect();
        'rows: for r in 0..b.num_rows() {
            let mut key = Vec::with_capacity(nkeys);
            for k in &keys {
                if k.is_null(r) {
                    continue 'rows; // outside every public domain: never released
                }
                key.push(k.value(r).to_string());
            }
            let v = vals
                .iter()
                .map(|a| if a.is_null(r) { 0 } else { a.value(r) })
                .collect();
            out.insert(key, v);
        }
    }
    Ok(out)
}

/// `call` as a window column: the row function over each privacy unit's rows (rows without a
/// unit are one unit), fed in the order of their arguments' values, so that what a unit's
/// instance sees depends on that unit's rows alone, never on how other rows were laid out.
fn row_column(
    call: &super::validate::RowCall,
    ds: &sluice_policy::Dataset,
) -> Result<Expr, DataFusionError> {
    let column = |name: &str| col(datafusion::common::Column::new_unqualified(name));
    let udwf = crate::rows::RowWindow::udwf(call.module.clone(), call.index, ds.row_fuel);
    let args = call
        .args
        .iter()
        .map(|a| datafusion::prelude::cast(column(a), DataType::Float64))
        .collect();
    let order = call
        .args
        .iter()
        .map(|a| column(a).sort(true, true))
        .collect();
    Ok(udwf
        .call(args)
        .partition_by(vec![column(&ds.privacy_unit)])
        .order_by(order)
        .build()?
        .alias(&call.column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn rows_of_another_schema_than_the_plans_are_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let fits =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        assert!(same_schema(std::slice::from_ref(&fits), &schema).is_ok());
        assert!(same_schema(&[], &schema).is_ok());
        let float =
            RecordBatch::try_from_iter([("n", Arc::new(Float64Array::from(vec![1.0])) as _)])
                .unwrap();
        let renamed =
            RecordBatch::try_from_iter([("m", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
        let wider = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![1])) as _),
            ("secret", Arc::new(Int64Array::from(vec![7])) as _),
        ])
        .unwrap();
        for wrong in [float, renamed, wider] {
            let e = same_schema(&[fits.clone(), wrong], &schema).unwrap_err();
            assert!(e.to_string().contains("another schema"), "{e}");
        }
    }
}
