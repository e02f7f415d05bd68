//! Validation of a job's SQL on DataFusion's logical plan (never on strings).
//!
//! The accepted subset is
//! `SELECT <keys and aggregates> FROM <dataset> [JOIN <lookup> ON <column> = <key>]
//! [WHERE <predicate>] [GROUP BY <keys>]`:
//! - a public lookup table may be INNER-joined on its unique key; its columns may only be GROUP BY
//!   keys (domain: the lookup's values), never in WHERE or aggregates;
//! - aggregates: `COUNT(*)`, `COUNT(DISTINCT <privacy unit>)`, and over numeric columns with
//!   policy bounds `SUM`, `AVG`, `VARIANCE`/`STDDEV` (sample and `_POP`), `MEDIAN` and
//!   `PERCENTILE_CONT`;
//! - keys: category columns with a public value domain, or whose policy allows DP partition
//!   selection, and derived keys `CASE WHEN <predicate> THEN '<label>' … [ELSE '<label>'] END`
//!   (buckets: histograms of bounded numbers into query-declared bins), whose domain is the labels;
//! - predicate: comparisons of a column with a literal of a fitting type, `IN`, `BETWEEN`,
//!   `IS [NOT] NULL`, `AND`, `OR`, `NOT`. No arithmetic and no casts, so evaluation can never fail on
//!   some rows and not others (no error channel).
//!
//! Every refusal is a [`QueryError`] whose message depends only on the SQL and the policy.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{
    Column, ScalarValue, TableReference,
    tree_node::{Transformed, TreeNode},
};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, LogicalPlan, Operator, Projection, lit,
};
use sluice_policy::{Aggregation, ColumnKind, Dataset, DatasetId};

use std::sync::Arc;

use super::dates::{DateKey, Granularity};
use crate::QueryError;
use crate::data::LoadedLookup;
use crate::rows::{RowFunction, RowModule};

/// The aggregates the engine answers, for messages.
const SUPPORTED: &str = "COUNT(*), COUNT(DISTINCT <privacy unit>), SUM(column), AVG(column), VARIANCE(column), STDDEV(column) (and _POP), MEDIAN(column), PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY column)";

/// Largest number of released cells (product of the key domains) of one query.
pub const MAX_CELLS: usize = 10_000;
/// Deepest predicate accepted.
const MAX_PREDICATE_DEPTH: usize = 32;
/// Longest `IN` list accepted.
const MAX_IN_LIST: usize = 1_000;

/// One aggregate a query asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum AggSpec {
    /// `COUNT(*)`.
    Count,
    /// `SUM(column)`.
    Sum(String),
    /// `AVG(column)`.
    Mean(String),
    /// `COUNT(DISTINCT <privacy unit>)`: how many units (e.g. people) have a row.
    CountUnits,
    /// The `q`-quantile of a column: `MEDIAN(col)` (q = 0.5), `PERCENTILE_CONT(q) WITHIN GROUP
    /// (ORDER BY col)` or `PERCENTILE_CONT(col, q)`.
    Quantile {
        /// The column.
        column: String,
        /// The quantile, in [0, 1].
        q: f64,
    },
    /// `VARIANCE(col)`/`VAR_SAMP`, `VAR_POP`, `STDDEV(col)`/`STDDEV_SAMP`, `STDDEV_POP`.
    Variance {
        /// The column.
        column: String,
        /// Divide by n - 1 (sample) rather than n (population).
        sample: bool,
        /// Release the square root (standard deviation).
        stddev: bool,
    },
}

impl AggSpec {
    /// Whether the accuracy of every cell is known before the query runs (it is for additive
    /// noise on one release; AVG, VARIANCE, STDDEV and quantiles depend on the data).
    pub fn accuracy_is_public(&self) -> bool {
        matches!(self, Self::Count | Self::CountUnits | Self::Sum(_))
    }

    /// The grant permission this aggregate needs.
    pub fn aggregation(&self) -> Aggregation {
        match self {
            Self::Count | Self::CountUnits => Aggregation::Count,
            Self::Sum(_) => Aggregation::Sum,
            Self::Mean(_) => Aggregation::Mean,
            Self::Quantile { .. } => Aggregation::Quantile,
            Self::Variance { .. } => Aggregation::Variance,
        }
    }
}

/// An INNER join of the dataset with a public lookup table, in execution terms.
#[derive(Clone, Debug)]
pub struct LookupJoin {
    /// The lookup's table in the execution context (columns renamed).
    pub table: String,
    /// The dataset column joined on.
    pub on: String,
    /// The lookup key column, as renamed in the execution context.
    pub key: String,
    /// The sha256 of the lookup's source: part of the answer cache's dataset version.
    pub content_hash: String,
}

/// The relation name and table of a (possibly aliased) table scan.
fn scan_side(plan: &LogicalPlan) -> Option<(TableReference, String)> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
            LogicalPlan::TableScan(t) if t.filters.is_empty() && t.fetch.is_none() => {
                Some((a.alias.clone(), t.table_name.table().to_string()))
            }
            _ => None,
        },
        LogicalPlan::TableScan(t) if t.filters.is_empty() && t.fetch.is_none() => {
            Some((t.table_name.clone(), t.table_name.table().to_string()))
        }
        _ => None,
    }
}

/// Where an output column comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputSource {
    /// The i-th group key.
    Key(usize),
    /// The i-th aggregate.
    Agg(usize),
}

/// A row function applied to columns inside an aggregate: the engine computes it per privacy
/// unit ([`crate::rows`]) as the column `column`, which the aggregate then reads like any other
/// bounded column (its bounds are the function's declared ones).
#[derive(Clone, Debug)]
pub struct RowCall {
    /// The column it is computed as (`__sluice_row_<i>`).
    pub column: String,
    /// The function, as its module declares it.
    pub function: RowFunction,
    /// Its index in the module.
    pub index: usize,
    /// The columns it reads, in argument order.
    pub args: Vec<String>,
    /// The module that runs it.
    pub module: Arc<RowModule>,
}

impl RowCall {
    /// What receipts and records name it by: `name(args) in [lo, hi] default d, rows module
    /// sha256 <hex>`.
    pub fn describe(&self) -> String {
        let f = &self.function;
        format!(
            "{}({}) in [{}, {}] default {}, rows module sha256 {}",
            f.name,
            self.args.join(", "),
            f.lo,
            f.hi,
            f.default,
            self.module.sha256
        )
    }

    /// The dataset column the engine adds for it: a float within the function's bounds.
    pub fn column(&self) -> sluice_policy::Column {
        sluice_policy::Column {
            name: self.column.clone(),
            kind: ColumnKind::Float {
                bounds: Some((self.function.lo, self.function.hi)),
            },
            bins: None,
            row_functions: false,
        }
    }
}

/// A query that passed validation, in the engine's own terms.
#[derive(Clone, Debug)]
pub struct ValidatedQuery {
    /// The dataset queried.
    pub dataset: DatasetId,
    /// The WHERE predicate, with unqualified column references.
    pub filter: Option<Expr>,
    /// The GROUP BY keys, in order.
    pub keys: Vec<Key>,
    /// The public lookup table joined in, if any.
    pub lookup: Option<LookupJoin>,
    /// Aggregates.
    pub aggregates: Vec<AggSpec>,
    /// Output columns in SELECT order: name and source.
    pub outputs: Vec<(String, OutputSource)>,
    /// A canonical text of the query (the plan), for logs and caching.
    pub normalized: String,
    /// The SQL as the job wrote it (set by the engine after validation), for the audit log.
    pub submitted: String,
    /// The row functions its aggregates read.
    pub row_calls: Vec<RowCall>,
}

/// One GROUP BY key.
#[derive(Clone, Debug)]
pub struct Key {
    /// A column's name, or a derived key's output name.
    pub name: String,
    /// Its expression (a column, or a `CASE` with unqualified columns), for execution.
    pub expr: Expr,
    /// Where its released values come from.
    pub domain: Domain,
}

/// Where a key's released values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// The public values declared in policy (or derived from it), sorted.
    Public(Vec<String>),
    /// Values seen in the data, released by DP partition selection.
    Selected,
}

impl Domain {
    /// The public values, if any.
    pub fn public(&self) -> Option<&Vec<String>> {
        match self {
            Self::Public(v) => Some(v),
            Self::Selected => None,
        }
    }
}

impl ValidatedQuery {
    /// Whether the query must run in this process even when its dataset is on another engine:
    /// it joins a public lookup (held here) or runs row functions (in this process's sandbox).
    pub fn local_only(&self) -> bool {
        self.lookup.is_some() || !self.row_calls.is_empty()
    }

    /// The keys whose values are released by DP partition selection (no public domain).
    pub fn selected(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|k| k.domain == Domain::Selected)
            .map(|k| k.name.as_str())
            .collect()
    }
}

fn unsupported(msg: impl Into<String>) -> QueryError {
    QueryError::Unsupported(msg.into())
}

/// The dataset a plan scans, if it has the accepted shape down to the scan.
pub fn scanned_dataset(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::TableScan(scan) => Some(scan.table_name.table().to_string()),
        other => {
            let inputs = other.inputs();
            if inputs.len() == 1 {
                scanned_dataset(inputs[0])
            } else {
                None
            }
        }
    }
}

/// Validates `plan` (planned against the declared schema of `dataset`), pass by pass: the
/// query's shape, what it reads below the aggregate, its WHERE clause, its keys, its aggregates
/// and the order of its outputs.
pub fn validate(
    plan: &LogicalPlan,
    dataset: &Dataset,
    allowed: &[Aggregation],
    lookup: Option<&LoadedLookup>,
    rows: Option<&Arc<RowModule>>,
) -> Result<ValidatedQuery, QueryError> {
    let (projection, aggregate) = shape(plan)?;
    let source = source(aggregate, dataset, lookup)?;
    let cx = Cx {
        dataset,
        filter: source.filter.as_ref(),
        rows,
        row_calls: Default::default(),
    };
    let uses_lookup = |e: &Expr| {
        e.column_refs()
            .into_iter()
            .any(|c| source.is_lookup_column(c))
    };
    if source.filter.as_ref().is_some_and(uses_lookup)
        || aggregate.aggr_expr.iter().any(uses_lookup)
    {
        return Err(unsupported(
            "columns of a lookup table may only be GROUP BY keys (not in WHERE or in aggregates)",
        ));
    }
    if let Some(pred) = &source.filter {
        cx.predicate(pred, 0)?;
    }
    let keys = aggregate
        .group_expr
        .iter()
        .map(|g| key(&cx, g, &source))
        .collect::<Result<Vec<_>, _>>()?;
    let cells = keys
        .iter()
        .filter_map(|k| k.domain.public())
        .fold(1usize, |n, d| n.saturating_mul(d.len()));
    if cells > MAX_CELLS {
        return Err(unsupported(format!(
            "the GROUP BY keys have {cells} combinations; at most {MAX_CELLS} are released per query"
        )));
    }
    let aggregates = aggregate
        .aggr_expr
        .iter()
        .map(|e| granted(cx.aggregate(e)?, allowed))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = outputs(projection, aggregate, &keys)?;
    let row_calls = cx.row_calls.into_inner();
    let mut normalized = plan.display_indent().to_string();
    // The plan names a row function; its identity (the module's bytes) and declared terms are
    // part of what the query is, for the caches and the audit.
    for c in &row_calls {
        let f = &c.function;
        normalized += &format!(
            "\nrow function {}({}) of rows module sha256 {}: clamped to [{}, {}], default {}, as {}",
            f.name,
            c.args.join(", "),
            c.module.sha256,
            f.lo,
            f.hi,
            f.default,
            c.column
        );
    }
    Ok(ValidatedQuery {
        dataset: dataset.id.clone(),
        filter: source.filter.map(unqualify).transpose()?,
        keys,
        lookup: source.join.map(|j| j.join),
        aggregates,
        outputs,
        normalized,
        submitted: String::new(),
        row_calls,
    })
}

/// The accepted shape at the top: a projection over one aggregate.
fn shape(plan: &LogicalPlan) -> Result<(&Projection, &Aggregate), QueryError> {
    let LogicalPlan::Projection(projection) = plan else {
        return Err(match plan {
            LogicalPlan::Sort(_) => unsupported(
                "ORDER BY is not supported: released tables are always sorted by their keys",
            ),
            LogicalPlan::Limit(_) => unsupported("LIMIT is not supported"),
            LogicalPlan::Distinct(_) => unsupported("SELECT DISTINCT is not supported"),
            LogicalPlan::Union(_) => unsupported("UNION is not supported"),
            _ => unsupported(
                "only SELECT <keys>, <aggregates> FROM <dataset> [WHERE …] [GROUP BY …] is supported",
            ),
        });
    };
    let aggregate = match projection.input.as_ref() {
        LogicalPlan::Aggregate(a) => a,
        LogicalPlan::Filter(_) if contains_aggregate(&projection.input) => {
            return Err(unsupported("HAVING is not supported"));
        }
        _ => {
            return Err(unsupported(format!(
                "the query has no aggregate: every selected value must be a GROUP BY key or one of {SUPPORTED}"
            )));
        }
    };
    if aggregate.aggr_expr.is_empty() {
        return Err(unsupported(format!(
            "the query has no aggregate: add one of {SUPPORTED}"
        )));
    }
    Ok((projection, aggregate))
}

/// A lookup joined in, with the relation its columns carry in the plan.
struct Joined<'a> {
    join: LookupJoin,
    relation: TableReference,
    lookup: &'a LoadedLookup,
}

/// What a query reads below its aggregate: an optional filter over the dataset's scan,
/// optionally joined with one public lookup.
struct Source<'a> {
    filter: Option<Expr>,
    join: Option<Joined<'a>>,
}

impl Source<'_> {
    fn is_lookup_column(&self, c: &Column) -> bool {
        self.join
            .as_ref()
            .is_some_and(|j| c.relation.as_ref() == Some(&j.relation))
    }
}

/// Below the aggregate: an optional filter, an optional lookup join, an optional alias, then the
/// dataset's scan.
fn source<'a>(
    aggregate: &Aggregate,
    dataset: &Dataset,
    lookup: Option<&'a LoadedLookup>,
) -> Result<Source<'a>, QueryError> {
    let mut node = aggregate.input.as_ref();
    let mut filter = None;
    if let LogicalPlan::Filter(f) = node {
        filter = Some(f.predicate.clone());
        node = f.input.as_ref();
    }
    let mut join = None;
    if let LogicalPlan::Join(j) = node {
        let Some(lk) = lookup else {
            return Err(unsupported(
                "joins are supported only with a public lookup table declared in policy",
            ));
        };
        let (joined, dataset_side) = lookup_join(j, dataset, lk)?;
        join = Some(joined);
        node = dataset_side;
    }
    if let LogicalPlan::SubqueryAlias(a) = node {
        node = a.input.as_ref();
    }
    let LogicalPlan::TableScan(scan) = node else {
        return Err(match node {
            LogicalPlan::Join(_) => {
                unsupported("joins are supported only with one public lookup table")
            }
            LogicalPlan::Subquery(_)
            | LogicalPlan::Projection(_)
            | LogicalPlan::SubqueryAlias(_) => unsupported("subqueries are not supported"),
            _ => unsupported("the query must read one dataset directly: FROM <dataset>"),
        });
    };
    if scan.table_name.table() != dataset.id.as_str()
        || !scan.filters.is_empty()
        || scan.fetch.is_some()
    {
        return Err(unsupported(
            "the query must read one dataset directly: FROM <dataset>",
        ));
    }
    Ok(Source { filter, join })
}

/// An INNER equi-join of the dataset with lookup `lk` on its key; returns the join and the
/// dataset's side of it.
fn lookup_join<'a, 'p>(
    j: &'p datafusion::logical_expr::Join,
    dataset: &Dataset,
    lk: &'a LoadedLookup,
) -> Result<(Joined<'a>, &'p LogicalPlan), QueryError> {
    let shape = || {
        unsupported(
            "join a lookup as: FROM <dataset> [AS d] JOIN <lookup> [AS l] ON d.<column> = l.<key>",
        )
    };
    // The SQL planner leaves `ON a = b` in the join filter (the optimizer, which we do not run on
    // jobs' plans, would move it to `on`); accept either form, nothing more.
    let pair = match (j.on.as_slice(), &j.filter) {
        ([(a, b)], None) => (a.clone(), b.clone()),
        (
            [],
            Some(Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            })),
        ) => (left.as_ref().clone(), right.as_ref().clone()),
        _ => return Err(shape()),
    };
    if j.join_type != datafusion::logical_expr::JoinType::Inner {
        return Err(shape());
    }
    let (lrel, lscan) = scan_side(&j.left).ok_or_else(shape)?;
    let (rrel, rscan) = scan_side(&j.right).ok_or_else(shape)?;
    let lk_name = lk.policy.id.as_str();
    let (ds_plan, lk_rel) = if lscan == dataset.id.as_str() && rscan == lk_name {
        (j.left.as_ref(), rrel)
    } else if rscan == dataset.id.as_str() && lscan == lk_name {
        (j.right.as_ref(), lrel)
    } else {
        return Err(shape());
    };
    let (Expr::Column(a), Expr::Column(b)) = (&pair.0, &pair.1) else {
        return Err(shape());
    };
    let (ds_col, lk_col) = if b.relation.as_ref() == Some(&lk_rel) {
        (a, b)
    } else {
        (b, a)
    };
    if lk_col.relation.as_ref() != Some(&lk_rel) || lk_col.name != lk.policy.key {
        return Err(unsupported(format!(
            "a join with lookup `{lk_name}` must match its key `{}`",
            lk.policy.key
        )));
    }
    if !matches!(
        (Cx {
            dataset,
            filter: None,
            rows: None,
            row_calls: Default::default(),
        })
        .column(&ds_col.name)?,
        ColumnKind::Category { .. }
    ) {
        return Err(unsupported(
            "a lookup joins on a category column of the dataset",
        ));
    }
    let join = LookupJoin {
        table: crate::data::lookup_table(lk_name),
        on: ds_col.name.clone(),
        key: crate::data::lookup_column(&lk.policy.key),
        content_hash: lk.content_hash.clone(),
    };
    Ok((
        Joined {
            join,
            relation: lk_rel,
            lookup: lk,
        },
        ds_plan,
    ))
}

/// One GROUP BY expression as a key: a lookup column, a CASE bucket, a date unit, a binned
/// column, or a category column with a public domain or partition selection.
fn key(cx: &Cx<'_>, g: &Expr, source: &Source<'_>) -> Result<Key, QueryError> {
    let derived = |expr: Expr, domain: Vec<String>| Key {
        name: g.schema_name().to_string(),
        expr,
        domain: Domain::Public(domain),
    };
    if let (Expr::Column(c), Some(j)) = (g, &source.join)
        && source.is_lookup_column(c)
    {
        let domain = j.lookup.domains.get(&c.name).ok_or_else(|| {
            QueryError::ColumnDenied(format!(
                "unknown column `{}` in lookup `{}`",
                c.name, j.lookup.policy.id
            ))
        })?;
        return Ok(Key {
            name: c.name.clone(),
            expr: Expr::Column(Column::new_unqualified(crate::data::lookup_column(&c.name))),
            domain: Domain::Public(domain.clone()),
        });
    }
    if g.column_refs()
        .into_iter()
        .any(|c| source.is_lookup_column(c))
    {
        return Err(unsupported(
            "columns of a lookup table may be GROUP BY keys only as plain columns",
        ));
    }
    match g {
        Expr::Case(case) => {
            let domain = cx.case_key(case)?;
            return Ok(derived(unqualify(g.clone())?, domain));
        }
        Expr::ScalarFunction(f) if matches!(f.func.name(), "date_trunc" | "date_part") => {
            let (expr, domain) = cx.date_key(f)?;
            return Ok(derived(expr, domain));
        }
        _ => {}
    }
    let Expr::Column(c) = g else {
        return Err(unsupported(format!(
            "GROUP BY accepts column names, CASE WHEN <condition> THEN '<label>' … END buckets and, on date columns, {} (no other expressions, ROLLUP or GROUPING SETS)",
            Granularity::ACCEPTED
        )));
    };
    column_key(cx, c)
}

/// A plain column as a key.
fn column_key(cx: &Cx<'_>, c: &Column) -> Result<Key, QueryError> {
    let kind = cx.column(&c.name)?;
    if let Some(column) = cx.dataset.column(&c.name).filter(|col| col.bins.is_some()) {
        // A histogram over the policy's bins: the bucket expression is built here, from policy,
        // and its labels are the key's public domain.
        let (expr, domain) = bins_key(column);
        return Ok(Key {
            name: c.name.clone(),
            expr,
            domain: Domain::Public(domain),
        });
    }
    let domain = match kind {
        ColumnKind::Category {
            public_values: Some(values),
            ..
        } => {
            let mut v = values.clone();
            v.sort();
            Domain::Public(v)
        }
        ColumnKind::Category {
            partition_selection: true,
            ..
        } => Domain::Selected,
        ColumnKind::Date { .. } => {
            return Err(unsupported(format!(
                "date column `{}` is grouped by a unit of time: use {}",
                c.name,
                Granularity::ACCEPTED
            )));
        }
        _ => {
            return Err(QueryError::ColumnDenied(format!(
                "column `{}` cannot be a GROUP BY key: the policy declares no public value domain, bins or partition selection for it (bucket it with CASE WHEN … THEN '<label>' … END instead)",
                c.name
            )));
        }
    };
    Ok(Key {
        name: c.name.clone(),
        expr: Expr::Column(Column::new_unqualified(c.name.clone())),
        domain,
    })
}

/// `spec`, if the grant allows its aggregation.
fn granted(spec: AggSpec, allowed: &[Aggregation]) -> Result<AggSpec, QueryError> {
    let needed = spec.aggregation();
    if allowed.contains(&needed) {
        return Ok(spec);
    }
    Err(QueryError::AggregationDenied(format!(
        "the grant does not allow `{}`; it allows: {}",
        needed.as_str(),
        allowed
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The output columns, keys first (the contract), each in SELECT order.
fn outputs(
    projection: &Projection,
    aggregate: &Aggregate,
    keys: &[Key],
) -> Result<Vec<(String, OutputSource)>, QueryError> {
    let mut outputs = Vec::new();
    for e in &projection.expr {
        // The planner may stack aliases (`count(Int64(1)) AS count(*) AS n`): the outermost names it.
        let mut inner = e;
        let mut name = String::new();
        while let Expr::Alias(a) = inner {
            if name.is_empty() {
                name = a.name.clone();
            }
            inner = a.expr.as_ref();
        }
        let Expr::Column(c) = inner else {
            return Err(unsupported(
                "each selected value must be a GROUP BY key or a plain aggregate (no arithmetic on aggregates; do that in the job)",
            ));
        };
        let index = aggregate.schema.index_of_column(c).map_err(|_| {
            unsupported("each selected value must be a GROUP BY key or an aggregate")
        })?;
        let ngroups = aggregate.group_expr.len();
        let source = if index < ngroups {
            OutputSource::Key(index)
        } else {
            OutputSource::Agg(index - ngroups)
        };
        let name = if name.is_empty() {
            match &source {
                OutputSource::Key(i) => keys[*i].name.clone(),
                OutputSource::Agg(_) => c.name.clone(),
            }
        } else {
            name
        };
        outputs.push((name, source));
    }
    // The contract puts key columns first: keep SELECT order within keys and within aggregates.
    outputs.sort_by_key(|(_, source)| matches!(source, OutputSource::Agg(_)));
    Ok(outputs)
}

fn contains_aggregate(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Aggregate(_)) || plan.inputs().into_iter().any(contains_aggregate)
}

/// Strips table qualifiers so the predicate can be applied to the execution context's table.
fn unqualify(e: Expr) -> Result<Expr, QueryError> {
    e.transform(|e| {
        Ok(match e {
            Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
    .map_err(|e| unsupported(format!("the WHERE clause could not be prepared: {e}")))
}

/// The refusal of a hidden column.
pub(crate) fn hidden_column(dataset: &Dataset, name: &str) -> QueryError {
    QueryError::ColumnDenied(format!(
        "column `{name}` of dataset `{}` is hidden by policy",
        dataset.id
    ))
}

/// The text of a string literal.
fn text_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// The GROUP BY expression of a column with policy bins, `CASE WHEN lo <= x AND x < hi THEN
/// '[lo, hi)' … END` (the last bin closed), and its labels, sorted.
fn bins_key(column: &sluice_policy::Column) -> (Expr, Vec<String>) {
    let int = matches!(column.kind, ColumnKind::Int { .. });
    let edge = |v: f64| if int { lit(v as i64) } else { lit(v) };
    let x = || Expr::Column(Column::new_unqualified(column.name.clone()));
    let bins = column.bin_labels();
    let last = bins.len().saturating_sub(1);
    let mut labels = Vec::with_capacity(bins.len());
    let mut when_then = Vec::with_capacity(bins.len());
    for (i, (label, lo, hi)) in bins.into_iter().enumerate() {
        let upper = if i == last {
            x().lt_eq(edge(hi))
        } else {
            x().lt(edge(hi))
        };
        let cond = x().gt_eq(edge(lo)).and(upper);
        when_then.push((Box::new(cond), Box::new(lit(label.clone()))));
        labels.push(label);
    }
    labels.sort();
    let case = datafusion::logical_expr::expr::Case::new(None, when_then, None);
    (Expr::Case(case), labels)
}

/// A specific refusal for an operand that is neither a column nor a literal.
fn operand_error(e: &Expr) -> QueryError {
    match e {
        Expr::Cast(_) | Expr::TryCast(_) => unsupported("CAST is not supported"),
        Expr::ScalarFunction(f) => unsupported(format!(
            "function `{}` is not supported in WHERE",
            f.func.name()
        )),
        Expr::BinaryExpr(_) => {
            unsupported("arithmetic is not supported in WHERE; compare a column with a literal")
        }
        Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => {
            unsupported("subqueries are not supported; compare a column with a literal")
        }
        _ => unsupported("WHERE comparisons must compare a column with a literal value"),
    }
}

struct Cx<'a> {
    dataset: &'a Dataset,
    /// The WHERE clause: its date-range literals narrow the released domain of date keys.
    filter: Option<&'a Expr>,
    /// The asking job's row functions, if any.
    rows: Option<&'a Arc<RowModule>>,
    /// The row function calls the aggregates read, in order of first use.
    row_calls: std::cell::RefCell<Vec<RowCall>>,
}

/// A date literal as days since 1970-01-01: `DATE '2025-01-31'` (planned as a cast of the
/// string) or a date value.
fn date_literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Date32 | DataType::Date64) => {
            text_literal(&c.expr)
                .and_then(sluice_policy::Date::parse)
                .map(|d| d.days_since_epoch())
        }
        Expr::Literal(ScalarValue::Date32(Some(d)), _) => Some(i64::from(*d)),
        Expr::Literal(ScalarValue::Date64(Some(ms)), _) => Some(ms.div_euclid(86_400_000)),
        _ => None,
    }
}

/// `(lo, hi)` (days) narrowed by the comparisons of date column `column` with literals that
/// the WHERE clause `e` ANDs together (`>=`, `>`, `<=`, `<`, `=`, `BETWEEN`); anything else
/// (an OR, a NOT, another column) leaves it as it is.
fn date_range(e: &Expr, column: &str, (lo, hi): (i64, i64)) -> (i64, i64) {
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::And => {
            date_range(right, column, date_range(left, column, (lo, hi)))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, day) = if is_column(left) {
                (*op, date_literal(right))
            } else if is_column(right) {
                match op.swap() {
                    Some(op) => (op, date_literal(left)),
                    None => return (lo, hi),
                }
            } else {
                return (lo, hi);
            };
            let Some(day) = day else {
                return (lo, hi);
            };
            match op {
                Operator::GtEq => (lo.max(day), hi),
                Operator::Gt => (lo.max(day + 1), hi),
                Operator::LtEq => (lo, hi.min(day)),
                Operator::Lt => (lo, hi.min(day - 1)),
                Operator::Eq => (lo.max(day), hi.min(day)),
                _ => (lo, hi),
            }
        }
        Expr::Between(b) if !b.negated && is_column(&b.expr) => {
            match (date_literal(&b.low), date_literal(&b.high)) {
                (Some(l), Some(h)) => (lo.max(l), hi.min(h)),
                _ => (lo, hi),
            }
        }
        _ => (lo, hi),
    }
}

/// The kinds of literal a column may be compared with.
#[derive(PartialEq)]
enum Lit {
    Text,
    Int,
    Float,
    Date,
    Null,
    Other,
}

fn literal_kind(e: &Expr) -> Option<Lit> {
    let v = match e {
        // `DATE '2025-01-31'` plans as a cast of the string: a date when the string is one.
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Date32 | DataType::Date64) => {
            return Some(match text_literal(&c.expr) {
                Some(s) if sluice_policy::Date::parse(s).is_some() => Lit::Date,
                _ => Lit::Other,
            });
        }
        Expr::Literal(v, _) => v,
        Expr::Negative(inner) => {
            return match literal_kind(inner)? {
                Lit::Int => Some(Lit::Int),
                Lit::Float => Some(Lit::Float),
                _ => Some(Lit::Other),
            };
        }
        _ => return None,
    };
    Some(if v.is_null() {
        Lit::Null
    } else {
        match v {
            ScalarValue::Utf8(_) | ScalarValue::LargeUtf8(_) | ScalarValue::Utf8View(_) => {
                Lit::Text
            }
            ScalarValue::Int8(_)
            | ScalarValue::Int16(_)
            | ScalarValue::Int32(_)
            | ScalarValue::Int64(_)
            | ScalarValue::UInt8(_)
            | ScalarValue::UInt16(_)
            | ScalarValue::UInt32(_) => Lit::Int,
            ScalarValue::Float32(_) | ScalarValue::Float64(_) => Lit::Float,
            ScalarValue::Date32(_) | ScalarValue::Date64(_) => Lit::Date,
            _ => Lit::Other,
        }
    })
}

impl Cx<'_> {
    /// The policy kind of a column a query may use; hidden and undeclared columns are refused.
    fn column(&self, name: &str) -> Result<&ColumnKind, QueryError> {
        match self.dataset.column(name) {
            Some(c) if matches!(c.kind, ColumnKind::Hidden) => {
                Err(hidden_column(self.dataset, name))
            }
            Some(c) => Ok(&c.kind),
            None => Err(QueryError::ColumnDenied(format!(
                "unknown column `{name}` in dataset `{}`; public columns are: {}",
                self.dataset.id,
                self.dataset.public_column_names().join(", ")
            ))),
        }
    }

    fn aggregate(&self, e: &Expr) -> Result<AggSpec, QueryError> {
        let mut e = e;
        while let Expr::Alias(a) = e {
            e = a.expr.as_ref();
        }
        let Expr::AggregateFunction(f) = e else {
            return Err(unsupported(format!(
                "only these aggregates are supported: {SUPPORTED}"
            )));
        };
        let p = &f.params;
        let name = f.func.name().to_ascii_lowercase();
        if p.distinct {
            if let (true, [Expr::Column(c)]) = (name == "count", p.args.as_slice())
                && c.name == self.dataset.privacy_unit
                && p.filter.is_none()
            {
                return Ok(AggSpec::CountUnits);
            }
            return Err(unsupported(format!(
                "{}(DISTINCT …) is not supported; the only distinct count is COUNT(DISTINCT {}), the privacy unit",
                name.to_uppercase(),
                self.dataset.privacy_unit
            )));
        }
        if p.filter.is_some() || p.null_treatment.is_some() {
            return Err(unsupported(
                "aggregate FILTER and null treatment are not supported",
            ));
        }
        let quantile = matches!(
            name.as_str(),
            "median"
                | "approx_median"
                | "percentile_cont"
                | "quantile_cont"
                | "approx_percentile_cont"
        );
        if !p.order_by.is_empty() && !quantile {
            return Err(unsupported("ORDER BY inside an aggregate is not supported"));
        }
        match name.as_str() {
            "count" => match p.args.as_slice() {
                [Expr::Literal(v, _)] if !v.is_null() => Ok(AggSpec::Count),
                [Expr::Column(c)] => {
                    self.column(&c.name)?;
                    Err(unsupported("COUNT(column) is not supported; use COUNT(*)"))
                }
                _ => Err(unsupported("COUNT accepts only *")),
            },
            "sum" | "avg" | "var" | "var_samp" | "var_sample" | "var_pop" | "var_population"
            | "variance" | "stddev" | "stddev_samp" | "stddev_pop" | "median" | "approx_median" => {
                let (column, c) = match p.args.as_slice() {
                    [e] if let Some(row) = self.row_call(e)? => {
                        (row.clone(), Column::from_name(row))
                    }
                    [Expr::Column(c)] => {
                        self.bounded(c, &name)?;
                        (c.name.clone(), c.clone())
                    }
                    _ => {
                        return Err(unsupported(format!(
                            "{}() accepts one plain column (no expressions){}",
                            name.to_uppercase(),
                            match self.rows {
                                Some(_) => " or one of the job's row functions over columns",
                                None => "",
                            }
                        )));
                    }
                };
                let c = &c;
                Ok(match name.as_str() {
                    "sum" => AggSpec::Sum(column),
                    "avg" => AggSpec::Mean(column),
                    "median" | "approx_median" => {
                        self.quantile_order(&p.order_by, c)?;
                        AggSpec::Quantile { column, q: 0.5 }
                    }
                    other => AggSpec::Variance {
                        column,
                        sample: !other.ends_with("_pop") && !other.ends_with("_population"),
                        stddev: other.starts_with("stddev"),
                    },
                })
            }
            "percentile_cont" | "quantile_cont" | "approx_percentile_cont" => {
                let [Expr::Column(c), q] = p.args.as_slice() else {
                    return Err(unsupported(format!(
                        "write {}(q) WITHIN GROUP (ORDER BY column) with a plain column and a literal q",
                        name.to_uppercase()
                    )));
                };
                self.bounded(c, &name)?;
                self.quantile_order(&p.order_by, c)?;
                let q = match q {
                    Expr::Literal(ScalarValue::Float64(Some(q)), _) => *q,
                    Expr::Literal(ScalarValue::Float32(Some(q)), _) => f64::from(*q),
                    Expr::Literal(ScalarValue::Int64(Some(q @ (0 | 1))), _) => *q as f64,
                    _ => {
                        return Err(unsupported(
                            "the quantile must be a literal number in [0, 1]",
                        ));
                    }
                };
                if !(0.0..=1.0).contains(&q) {
                    return Err(unsupported(
                        "the quantile must be a literal number in [0, 1]",
                    ));
                }
                Ok(AggSpec::Quantile {
                    column: c.name.clone(),
                    q,
                })
            }
            other => Err(unsupported(format!(
                "aggregate `{other}` is not supported; supported: {SUPPORTED}"
            ))),
        }
    }

    /// The column `e` is computed as, if it is a call of one of the job's row functions (each
    /// argument a column the policy lets row functions read, possibly cast to a float by
    /// planning); the same call twice is one column.
    fn row_call(&self, e: &Expr) -> Result<Option<String>, QueryError> {
        let (Some(module), Expr::ScalarFunction(f)) = (self.rows, e) else {
            return Ok(None);
        };
        let Some((index, function)) = module.function(f.func.name()) else {
            return Ok(None);
        };
        let mut args = Vec::new();
        for a in &f.args {
            let mut a = a;
            while let Expr::Cast(c) = a {
                a = c.expr.as_ref();
            }
            let Expr::Column(c) = a else {
                return Err(unsupported(format!(
                    "the arguments of row function `{}` must be plain columns",
                    function.name
                )));
            };
            self.column(&c.name)?;
            let readable = self
                .dataset
                .column(&c.name)
                .is_some_and(|col| col.row_functions);
            if !readable {
                let visible: Vec<&str> = self
                    .dataset
                    .columns
                    .iter()
                    .filter(|c| c.row_functions)
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(QueryError::ColumnDenied(format!(
                    "column `{}` of dataset `{}` is not readable by row functions; the policy marks those with `row_functions = true`: {}",
                    c.name,
                    self.dataset.id,
                    if visible.is_empty() {
                        "none".to_string()
                    } else {
                        visible.join(", ")
                    }
                )));
            }
            args.push(c.name.clone());
        }
        let mut calls = self.row_calls.borrow_mut();
        if let Some(known) = calls.iter().find(|c| c.index == index && c.args == args) {
            return Ok(Some(known.column.clone()));
        }
        let column = format!("__sluice_row_{}", calls.len());
        calls.push(RowCall {
            column: column.clone(),
            function: function.clone(),
            index,
            args,
            module: module.clone(),
        });
        Ok(Some(column))
    }

    /// A column an aggregate reads: public, with policy bounds.
    fn bounded(&self, c: &Column, aggregate: &str) -> Result<(), QueryError> {
        let kind = self.column(&c.name)?;
        if kind.bounds_f64().is_none() {
            return Err(QueryError::AggregationDenied(format!(
                "column `{}` cannot be aggregated with {}: the policy declares no bounds for it",
                c.name,
                aggregate.to_uppercase()
            )));
        }
        Ok(())
    }

    /// A quantile's WITHIN GROUP clause, if any, must order by its own column, ascending.
    fn quantile_order(
        &self,
        order_by: &[datafusion::logical_expr::SortExpr],
        c: &Column,
    ) -> Result<(), QueryError> {
        match order_by {
            [] => Ok(()),
            [s] if s.asc && matches!(&s.expr, Expr::Column(o) if o.name == c.name) => Ok(()),
            _ => Err(unsupported(
                "a quantile orders by its own column, ascending: PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY column)",
            )),
        }
    }

    /// A derived key `CASE WHEN <condition> THEN '<label>' … [ELSE '<label>'] END`: each condition
    /// is a WHERE-style predicate, each result a text literal. Its domain is the set of labels
    /// (public: they are written in the query); rows that match no branch and have no ELSE are
    /// dropped, like rows outside a public domain.
    fn case_key(
        &self,
        case: &datafusion::logical_expr::expr::Case,
    ) -> Result<Vec<String>, QueryError> {
        if case.expr.is_some() {
            return Err(unsupported(
                "write CASE buckets as CASE WHEN <condition> THEN '<label>' … END (not CASE <column> WHEN …)",
            ));
        }
        let label = |e: &Expr| match e {
            Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
                _,
            ) => Ok(s.clone()),
            _ => Err(unsupported(
                "each CASE bucket must be labelled with a text literal, e.g. THEN '18-64'",
            )),
        };
        let mut domain = Vec::new();
        for (when, then) in &case.when_then_expr {
            self.predicate(when, 1)?;
            domain.push(label(then)?);
        }
        if let Some(e) = &case.else_expr {
            domain.push(label(e)?);
        }
        domain.sort();
        domain.dedup();
        Ok(domain)
    }

    /// A date key, `date_trunc('<unit>', col)` or `date_part('<field>', col)` (`EXTRACT`): its
    /// execution expression and its public domain, derived from the policy.
    fn date_key(
        &self,
        f: &datafusion::logical_expr::expr::ScalarFunction,
    ) -> Result<(Expr, Vec<String>), QueryError> {
        let usage = || unsupported(format!("date keys are written {}", Granularity::ACCEPTED));
        let [what, Expr::Column(c)] = f.args.as_slice() else {
            return Err(usage());
        };
        let g = text_literal(what)
            .and_then(|w| Granularity::parse(f.func.name(), w))
            .ok_or_else(usage)?;
        let ColumnKind::Date { bounds } = self.column(&c.name)? else {
            return Err(unsupported(format!(
                "`{}` applies to date columns; `{}` is `{}`",
                f.func.name(),
                c.name,
                self.column(&c.name)?.name()
            )));
        };
        // Literals in the query are public: released dates outside its WHERE range would be
        // noise over rows the filter drops, so the domain is the bounds' intersection with it.
        let bounds = match (bounds, self.filter) {
            (Some((lo, hi)), Some(filter)) => {
                let (lo, hi) = date_range(
                    filter,
                    &c.name,
                    (lo.days_since_epoch(), hi.days_since_epoch()),
                );
                if lo > hi {
                    return Err(unsupported(format!(
                        "the WHERE clause keeps no date of `{}` within its public bounds: the query would release nothing",
                        c.name
                    )));
                }
                Some((
                    sluice_policy::Date::from_days_since_epoch(lo),
                    sluice_policy::Date::from_days_since_epoch(hi),
                ))
            }
            (b, _) => *b,
        };
        let domain = g
            .domain(bounds)
            .map_err(|m| QueryError::ColumnDenied(format!("column `{}`: {m}", c.name)))?;
        let column = Expr::Column(Column::new_unqualified(c.name.clone()));
        Ok((DateKey::call(g, column), domain))
    }

    fn predicate(&self, e: &Expr, depth: usize) -> Result<(), QueryError> {
        if depth > MAX_PREDICATE_DEPTH {
            return Err(unsupported(format!(
                "the WHERE clause nests deeper than {MAX_PREDICATE_DEPTH} levels"
            )));
        }
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => {
                    self.predicate(left, depth + 1)?;
                    self.predicate(right, depth + 1)
                }
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq => match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), lit) | (lit, Expr::Column(c))
                        if literal_kind(lit).is_some() =>
                    {
                        self.comparable(c, lit)
                    }
                    (l, r) => Err(operand_error(
                        if matches!(l, Expr::Column(_) | Expr::Literal(..)) {
                            r
                        } else {
                            l
                        },
                    )),
                },
                other => Err(unsupported(format!(
                    "operator `{other}` is not supported in WHERE; supported: = <> < <= > >= AND OR NOT IN BETWEEN IS NULL"
                ))),
            },
            Expr::Not(inner) => self.predicate(inner, depth + 1),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => match inner.as_ref() {
                Expr::Column(c) => self.column(&c.name).map(|_| ()),
                _ => Err(unsupported("IS NULL applies to a column only")),
            },
            Expr::Between(b) => {
                let Expr::Column(c) = b.expr.as_ref() else {
                    return Err(unsupported("BETWEEN applies to a column only"));
                };
                self.comparable(c, &b.low)?;
                self.comparable(c, &b.high)
            }
            Expr::InList(l) => {
                let Expr::Column(c) = l.expr.as_ref() else {
                    return Err(unsupported("IN applies to a column only"));
                };
                if l.list.len() > MAX_IN_LIST {
                    return Err(unsupported(format!(
                        "IN lists are limited to {MAX_IN_LIST} values"
                    )));
                }
                l.list.iter().try_for_each(|v| self.comparable(c, v))
            }
            Expr::Column(c) => {
                self.column(&c.name)?;
                Err(unsupported(
                    "a bare column is not a condition; compare it with a value",
                ))
            }
            Expr::ScalarFunction(f) => Err(unsupported(format!(
                "function `{}` is not supported in WHERE",
                f.func.name()
            ))),
            Expr::Cast(_) | Expr::TryCast(_) => Err(unsupported("CAST is not supported")),
            Expr::Like(_) | Expr::SimilarTo(_) => Err(unsupported("LIKE is not supported")),
            Expr::InSubquery(_) | Expr::Exists(_) | Expr::ScalarSubquery(_) => {
                Err(unsupported("subqueries are not supported"))
            }
            _ => Err(unsupported(
                "this WHERE condition is not supported; use comparisons with literals, IN, BETWEEN, IS NULL, AND, OR, NOT",
            )),
        }
    }

    /// A column compared with a literal: the literal must fit the column's kind, so that evaluation
    /// never needs a cast that could fail on some rows.
    fn comparable(&self, c: &Column, lit: &Expr) -> Result<(), QueryError> {
        let kind = self.column(&c.name)?;
        let Some(lk) = literal_kind(lit) else {
            return Err(unsupported(
                "WHERE comparisons must compare a column with a literal value",
            ));
        };
        let ok = match kind {
            ColumnKind::Category { .. } => lk == Lit::Text,
            ColumnKind::Int { .. } => lk == Lit::Int,
            ColumnKind::Float { .. } => matches!(lk, Lit::Int | Lit::Float),
            // A string is a date only if it parses as one here, so that the cast DataFusion
            // inserts can never fail on execution.
            ColumnKind::Date { .. } => {
                lk == Lit::Date
                    || text_literal(lit).is_some_and(|s| sluice_policy::Date::parse(s).is_some())
            }
            ColumnKind::Hidden => false,
        };
        if lk == Lit::Null {
            return Err(unsupported("compare with NULL using IS NULL"));
        }
        if !ok {
            return Err(unsupported(format!(
                "column `{}` is `{}`; compare it with {} literal",
                c.name,
                kind.name(),
                match kind {
                    ColumnKind::Category { .. } => "a string",
                    ColumnKind::Int { .. } => "an integer",
                    ColumnKind::Date { .. } => "a date such as DATE '2025-01-31' or '2025-01-31'",
                    _ => "a numeric",
                }
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Validation on plans over an empty, planning-only table: no data, no Parquet, no HTTP.

    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    const POLICY: &str = r#"
[dataset.visits]
source = "visits.csv"
holder = "test"
classification = "internal"
privacy_unit = "person_id"
max_rows_per_unit = 3
columns.district = { kind = "category", public_values = ["b", "a"] }
columns.code = { kind = "category", partition_selection = true }
columns.note = { kind = "category" }
columns.age = { kind = "int", bounds = [0, 100] }
columns.cost = { kind = "float", bounds = [0.0, 10.0] }
columns.name = { kind = "hidden" }

[[grant]]
operator = "op"
datasets = ["visits"]
purpose = "unit tests of validation"
aggregations = ["count", "sum", "mean", "quantile", "variance"]
epsilon_per_job = 1.0
epsilon_per_period = 1.0
period = "30d"
expires = 2099-12-31
review = "none"
delta_per_query = 1e-6
delta_per_period = 1e-5
"#;

    const ALL: &[Aggregation] = &[
        Aggregation::Count,
        Aggregation::Sum,
        Aggregation::Mean,
        Aggregation::Quantile,
        Aggregation::Variance,
    ];

    fn check_with(sql: &str, allowed: &[Aggregation]) -> Result<ValidatedQuery, QueryError> {
        let policy = sluice_policy::parse_str("test.toml", POLICY).expect("a valid policy");
        let ds = policy.datasets.values().next().unwrap();
        let ctx = SessionContext::new();
        let schema = Schema::new(vec![
            Field::new("person_id", DataType::Int64, true),
            Field::new("district", DataType::Utf8, true),
            Field::new("code", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
            Field::new("age", DataType::Int64, true),
            Field::new("cost", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
        ]);
        ctx.register_table("visits", Arc::new(EmptyTable::new(Arc::new(schema))))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let plan = rt
            .block_on(ctx.state().create_logical_plan(sql))
            .expect("the test SQL plans");
        validate(&plan, ds, allowed, None, None)
    }

    fn check(sql: &str) -> Result<ValidatedQuery, QueryError> {
        check_with(sql, ALL)
    }

    fn refusal(sql: &str) -> String {
        match check(sql) {
            Ok(q) => panic!("{sql} was accepted: {q:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn keys_carry_their_sorted_public_domain_or_partition_selection() {
        let q = check("SELECT district, code, COUNT(*) AS n FROM visits GROUP BY district, code")
            .unwrap();
        assert_eq!(q.keys.len(), 2);
        assert_eq!(q.keys[0].name, "district");
        assert_eq!(
            q.keys[0].domain,
            Domain::Public(vec!["a".into(), "b".into()])
        );
        assert_eq!(q.keys[1].domain, Domain::Selected);
        assert_eq!(q.selected(), ["code"]);
    }

    #[test]
    fn outputs_put_keys_first_in_select_order() {
        let q =
            check("SELECT COUNT(*) AS n, district, SUM(age) AS s FROM visits GROUP BY district")
                .unwrap();
        let outputs: Vec<(&str, &OutputSource)> =
            q.outputs.iter().map(|(n, s)| (n.as_str(), s)).collect();
        assert_eq!(
            outputs,
            [
                ("district", &OutputSource::Key(0)),
                ("n", &OutputSource::Agg(0)),
                ("s", &OutputSource::Agg(1)),
            ]
        );
        assert_eq!(q.aggregates, [AggSpec::Count, AggSpec::Sum("age".into())]);
    }

    #[test]
    fn the_filter_is_kept_with_unqualified_columns() {
        let q = check("SELECT COUNT(*) FROM visits WHERE visits.age > 3").unwrap();
        let filter = q.filter.expect("a filter");
        assert!(
            filter
                .column_refs()
                .iter()
                .all(|c| c.relation.is_none() && c.name == "age"),
            "{filter}"
        );
    }

    #[test]
    fn each_pass_refuses_what_it_owns() {
        for (sql, needle) in [
            (
                "SELECT district, COUNT(*) FROM visits GROUP BY district ORDER BY district",
                "ORDER BY",
            ),
            ("SELECT COUNT(*) FROM visits LIMIT 1", "LIMIT"),
            (
                "SELECT district, COUNT(*) FROM visits GROUP BY district HAVING COUNT(*) > 1",
                "HAVING",
            ),
            (
                "SELECT district FROM visits GROUP BY district",
                "no aggregate",
            ),
            (
                "SELECT COUNT(*) * 2 FROM visits",
                "no arithmetic on aggregates",
            ),
            (
                "SELECT note, COUNT(*) FROM visits GROUP BY note",
                "no public value domain",
            ),
            (
                "SELECT age + 1 AS a, COUNT(*) FROM visits GROUP BY age + 1",
                "GROUP BY accepts",
            ),
            ("SELECT MAX(age) FROM visits", "not supported"),
        ] {
            let e = refusal(sql);
            assert!(e.contains(needle), "{sql}: {e}");
        }
    }

    #[test]
    fn an_aggregation_the_grant_does_not_allow_is_denied_naming_what_it_allows() {
        match check_with("SELECT AVG(age) FROM visits", &[Aggregation::Count]) {
            Err(QueryError::AggregationDenied(m)) => {
                assert!(
                    m.contains("`mean`") && m.contains("it allows: count"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
