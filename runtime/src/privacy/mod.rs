//! The privacy engine: from a job's SQL to a differentially private table.
//!
//! # Privacy
//! - **Privacy unit:** the dataset's `privacy_unit` column (e.g. one person). Neighbouring datasets
//!   differ by all rows of one unit.
//! - **Contribution bounding:** after the WHERE filter, at most `max_rows_per_unit` (k) rows per unit
//!   are kept, chosen uniformly at random (`ROW_NUMBER() OVER (PARTITION BY unit ORDER BY random)`,
//!   applied only to the rows of units that have more than k; a missing unit counts as one unit).
//! - **Released:** for every combination of the GROUP BY keys' *public* domains (empty groups
//!   too, rows whose key is outside the domain dropped), each requested aggregate plus noise.
//!   Key values come from policy, never from data, except for keys whose policy allows DP
//!   partition selection: then only the key tuples whose noisy count passes a threshold are
//!   released, at a cost of δ (see [`selection`]).
//! - **Sensitivity (L1, over the whole table of one aggregate):** `COUNT(*)`: k.
//!   `COUNT(DISTINCT unit)`: a unit counts once in each group it keeps a row in, so min(k, number of
//!   released cells) (1 without GROUP BY). `SUM(col)`: values are
//!   clamped to the public bounds `[lo, hi]` and encoded in fixed point as `round(x·2^p)`, summed in
//!   64-bit integers, so the sensitivity is `k·max(|lo·2^p|, |hi·2^p|)` exactly, with no
//!   floating-point rounding in the sum. `AVG(col)` is released as a noisy fixed-point sum and a noisy
//!   count of non-null values, and divided afterwards (post-processing). `VARIANCE`/`STDDEV` are
//!   released as noisy sums of `x - c` and `(x - c)²` (c the middle of the bounds, so the
//!   sensitivities are k·(hi-lo)/2 and k·((hi-lo)/2)²) and a noisy count, combined afterwards.
//!   Quantiles: see [`quantile`].
//! - **Mechanisms:** discrete Laplace from OpenDP (see [`mechanisms`]); OpenDP's private quantile
//!   ([`quantile`]); OpenDP's Laplace threshold for partition selection ([`selection`]).
//! - **Accounting:** ε-DP, or (ε, δ)-DP when a key is selected. The query's ε is split evenly over
//!   its releases (basic composition) and, with its δ, charged to the [`Accountant`] *before* the
//!   query executes; it is never refunded, whatever happens next.
//! - **zCDP datasets** (`privacy_measure = "zcdp"`): the same releases with discrete Gaussian noise
//!   calibrated to the **L2** sensitivity (a unit adds at most l∞ rows to each of at most l0 cells
//!   and l1 in all, so its count vector moves by at most √(m·l∞² + r²), m = min(l0, ⌊l1/l∞⌋) full
//!   cells and r the rest; sums scale it by the largest encoded value; COUNT(DISTINCT) is
//!   √min(l0, l1)); quantiles by the same ε-DP mechanism at ε = √(2ρ); partition selection by
//!   OpenDP's Gaussian threshold. The query's ρ is split evenly (ρ adds up under composition) and
//!   charged as ρ (plus δ); the answer also states the (ε, δ) it implies alone.
//! - **Repeats:** an identical query (same operator, dataset version, normalized plan and ε) gets
//!   the stored answer at no charge (see [`cache`]), so repeating a query cannot average noise away.
//! - **Errors:** every refusal depends only on the SQL and the policy. Execution failures (which the
//!   validator makes impossible in practice) surface as one generic error after the charge.

pub mod accountant;
pub mod cache;
mod constants;
pub mod dates;
pub mod mechanisms;
pub mod quantile;
pub mod selection;
pub mod sql_bounds;
pub(crate) mod udf;
pub mod validate;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, ScalarUDF};
use datafusion::prelude::{DataFrame, Expr, JoinType, col, lit};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use sluice_policy::{ColumnKind, DatasetId, Date, Grant, OperatorId, Policy, PrivacyMeasure};

use crate::QueryError;
use crate::data::{Catalog, Registered};
use crate::report::{NoisyTable, PrivacyCost, Value};
use accountant::{Accountant, BudgetError, Charge, ZCDP_REPORT_DELTA, zcdp_epsilon};
use mechanisms::{ALPHA, Additive, DiscreteGaussian, DiscreteLaplace, MechanismError};
use quantile::QuantileMechanism;
use selection::{PartitionSelection, Reach};
use udf::{FixedPoint, RandomKey, RankCode};
use validate::{AggSpec, OutputSource, ValidatedQuery};

/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 16 * 1024;
/// Largest ε one query may ask for.
pub const MAX_QUERY_EPSILON: f64 = 100.0;
/// Largest ρ one query may ask for (on zCDP datasets).
pub const MAX_QUERY_RHO: f64 = 50.0;

/// Who is asking, for which job, on which day.
#[derive(Clone, Debug)]
pub struct Asker {
    /// The operator whose grant applies.
    pub operator: OperatorId,
    /// The job (per-job budget caps).
    pub job: String,
    /// Today's date (grant expiry).
    pub today: Date,
    /// The datasets the job declared it will use; `None` for any dataset granted to the operator.
    pub scope: Option<Vec<DatasetId>>,
    /// A per-job ε cap below the grant's (what the operator asked for and a reviewer approved).
    pub max_epsilon: Option<f64>,
}

impl Asker {
    /// An asker for `job` of `operator` today, limited only by the operator's grants.
    pub fn new(operator: OperatorId, job: impl Into<String>) -> Self {
        Self {
            operator,
            job: job.into(),
            today: Date::today_utc(),
            scope: None,
            max_epsilon: None,
        }
    }
}

/// A record of one answered query, for logs and audit.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QueryRecord {
    /// The dataset queried.
    pub dataset: String,
    /// sha256 of the dataset's source: its version.
    pub dataset_hash: String,
    /// The query's canonical plan text.
    pub normalized: String,
    /// The cost charged.
    pub cost: PrivacyCost,
}

/// The privacy engine: validates, charges, executes and adds noise.
pub struct PrivacyEngine {
    catalog: Catalog,
    policy: Arc<Policy>,
    accountant: Arc<dyn Accountant>,
    cache: Option<Arc<dyn cache::AnswerCache>>,
    fixed: Arc<ScalarUDF>,
    random: Arc<ScalarUDF>,
    rank: Arc<ScalarUDF>,
}

/// One noisy release inside a query.
#[derive(Clone, Debug)]
enum Sub {
    Count,
    /// Distinct privacy units (after bounding).
    Units,
    NonNullCount(String),
    /// `Σ round(((clamp(x, lo, hi) - center)^power) · scale)` over non-null values.
    FixedSum {
        column: String,
        lo: f64,
        hi: f64,
        center: f64,
        power: i32,
        scale: f64,
    },
    /// One candidate by OpenDP's private quantile (not additive noise).
    Quantile {
        column: String,
        q: f64,
        lo: f64,
        hi: f64,
        integer: bool,
    },
}

/// The mechanism of one release.
enum Noise {
    Additive(Additive),
    Quantile(QuantileMechanism),
    /// The count that selects non-public keys; the additive noise of the same scale states its
    /// accuracy.
    Select(PartitionSelection, Additive),
}

impl Noise {
    fn additive(&self) -> &Additive {
        match self {
            Self::Additive(m) | Self::Select(_, m) => m,
            Self::Quantile(_) => unreachable!("an additive release"),
        }
    }
}

/// The additive mechanism of a release with L1 sensitivity `l1` and L2 sensitivity `l2`
/// spending `each` (ε or ρ, by the dataset's measure).
fn additive(
    measure: PrivacyMeasure,
    l1: i64,
    l2: f64,
    each: f64,
) -> Result<Additive, MechanismError> {
    Ok(match measure {
        PrivacyMeasure::Pure => Additive::Laplace(DiscreteLaplace::new(l1, each)?),
        PrivacyMeasure::Zcdp => Additive::Gaussian(DiscreteGaussian::new(l2, each)?),
    })
}

/// The largest |encoded value| of a fixed-point release, before scaling.
fn encoded_range(lo: f64, hi: f64, center: f64, power: i32) -> f64 {
    (lo - center).abs().max((hi - center).abs()).powi(power)
}

/// Fixed-point scale 2^p for a column with bounds `(lo, hi)`: as fine as possible while every encoded
/// value stays within ±2^31, so that sums of up to 2^32 rows fit in an i64. Integer columns are kept
/// exact (scale 1) whenever they fit.
fn fixed_scale(kind: &ColumnKind, lo: f64, hi: f64) -> f64 {
    let max_abs = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
    let limit = 2f64.powi(31);
    let p = (limit / max_abs).log2().floor().clamp(-40.0, 24.0) as i32;
    match kind {
        ColumnKind::Int { .. } if p >= 0 => 1.0,
        _ => 2f64.powi(p),
    }
}

impl PrivacyEngine {
    /// An engine over `catalog`, authorizing with `policy`, charging `accountant` and answering
    /// repeated queries from `cache` (`None` only for statistical tests of the mechanisms).
    pub fn new(
        catalog: Catalog,
        policy: Arc<Policy>,
        accountant: Arc<dyn Accountant>,
        cache: Option<Arc<dyn cache::AnswerCache>>,
    ) -> Self {
        Self {
            catalog,
            policy,
            accountant,
            cache,
            fixed: Arc::new(FixedPoint::udf()),
            random: Arc::new(RandomKey::udf()),
            rank: Arc::new(RankCode::udf()),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The datasets.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The accountant.
    pub fn accountant(&self) -> &Arc<dyn Accountant> {
        &self.accountant
    }

    /// Validates `sql` for `asker` and returns the validated query, the dataset and the grant that
    /// allows it, without charging or running anything.
    pub async fn prepare(
        &self,
        asker: &Asker,
        sql: &str,
    ) -> Result<(ValidatedQuery, &Registered, &Grant), QueryError> {
        if sql.len() > MAX_SQL_BYTES {
            return Err(QueryError::InvalidSql(format!(
                "the query is {} bytes; at most {MAX_SQL_BYTES} are accepted",
                sql.len()
            )));
        }
        sql_bounds::check(sql)?;
        let mut statements = DFParserBuilder::new(sql)
            .with_dialect(&GenericDialect {})
            .with_recursion_limit(64)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| QueryError::InvalidSql(first_line(&e.to_string())))?;
        if statements.len() != 1 {
            return Err(QueryError::InvalidSql(format!(
                "expected exactly one SELECT statement, found {}",
                statements.len()
            )));
        }
        let statement = statements.pop_front().expect("one statement");
        let is_query = matches!(&statement, Statement::Statement(s)
            if matches!(s.as_ref(), datafusion::sql::sqlparser::ast::Statement::Query(_)));
        if !is_query {
            return Err(QueryError::Unsupported(
                "only SELECT queries are accepted".into(),
            ));
        }
        let state = self.catalog.planning.state();
        let refs = state
            .resolve_table_references(&statement)
            .map_err(|e| QueryError::InvalidSql(first_line(&e.to_string())))?;
        if let Some(r) = refs
            .iter()
            .find(|r| r.schema().is_some() || r.catalog().is_some())
        {
            return Err(QueryError::NotGranted(format!(
                "dataset `{r}` is not granted to operator `{}`",
                asker.operator
            )));
        }
        let mut names: Vec<String> = refs.iter().map(|r| r.table().to_string()).collect();
        names.sort();
        names.dedup();
        // Public lookup tables may be joined; everything else must be one dataset.
        let (lookups, names): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| {
            DatasetId::new(n).is_ok_and(|id| self.catalog.lookups.contains_key(&id))
        });
        let [name] = names.as_slice() else {
            return Err(QueryError::Unsupported(
                "a query reads exactly one dataset, optionally joined with one public lookup table (other joins and subqueries are not supported)".into(),
            ));
        };
        if lookups.len() > 1 {
            return Err(QueryError::Unsupported(
                "a query joins at most one public lookup table".into(),
            ));
        }
        let lookup = lookups
            .first()
            .and_then(|l| self.catalog.lookup(&DatasetId::new(l).ok()?));
        let not_granted = || {
            QueryError::NotGranted(format!(
                "dataset `{name}` is not granted to operator `{}`",
                asker.operator
            ))
        };
        let id = DatasetId::new(name).map_err(|_| not_granted())?;
        if let Some(scope) = &asker.scope
            && !scope.contains(&id)
        {
            return Err(QueryError::NotGranted(format!(
                "dataset `{name}` is not among the datasets this job declared"
            )));
        }
        let grant = self
            .policy
            .authorize(&asker.operator, &id, asker.today)
            .map_err(|d| QueryError::NotGranted(d.to_string()))?;
        let registered = self.catalog.get(&id).ok_or_else(not_granted)?;

        // Hidden columns are refused by name wherever they appear, even where planning would fail
        // for another reason first (e.g. AVG over a text column).
        if let Statement::Statement(inner) = &statement {
            let mut hidden = None;
            let _ = visit_expressions(inner.as_ref(), |e| {
                let ident = match e {
                    SqlExpr::Identifier(i) => Some(i),
                    SqlExpr::CompoundIdentifier(parts) => parts.last(),
                    _ => None,
                };
                if let Some(i) = ident {
                    let name = if i.quote_style.is_some() {
                        i.value.clone()
                    } else {
                        i.value.to_ascii_lowercase()
                    };
                    if registered
                        .policy
                        .column(&name)
                        .is_some_and(|c| matches!(c.kind, ColumnKind::Hidden))
                    {
                        hidden = Some(name);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            if let Some(name) = hidden {
                return Err(validate::hidden_column(&registered.policy, &name));
            }
        }

        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| plan_error(&e, &registered.policy))?;
        let q = validate::validate(&plan, &registered.policy, &grant.aggregations, lookup)?;
        // After validation, whose refusals say more about the query; both come before the charge.
        constants::check(&plan)?;
        if let (Some(column), None) = (q.selected.first(), grant.delta_per_query) {
            return Err(QueryError::NotGranted(format!(
                "column `{column}` has no public value domain: its values are released only by DP partition selection, which spends δ, and the grant of operator `{}` on dataset `{}` allows no δ (delta_per_query)",
                asker.operator, registered.policy.id
            )));
        }
        Ok((q, registered, grant))
    }

    /// Answers one query at `epsilon`: validate, charge, execute, add noise.
    pub async fn query(
        &self,
        asker: &Asker,
        sql: &str,
        epsilon: f64,
    ) -> Result<(NoisyTable, QueryRecord), QueryError> {
        self.query_with(asker, sql, Budget::Epsilon(epsilon)).await
    }

    /// What a query would cost and how accurate each aggregate would be, without executing it
    /// or charging anything. Planning reads only the policy and the schema, never data.
    pub async fn estimate(
        &self,
        asker: &Asker,
        sql: &str,
        budget: Budget,
    ) -> Result<Estimate, QueryError> {
        let (q, registered, grant) = self.prepare(asker, sql).await?;
        let ds = &registered.policy;
        let d = design(&q, ds, grant);
        let amount = solve_budget(&q, &d, ds, budget)?;
        let columns = q
            .outputs
            .iter()
            .filter_map(|(name, src)| match src {
                OutputSource::Agg(a) => {
                    Some((name.clone(), aggregate_accuracy(&q, &d, *a, amount)))
                }
                OutputSource::Key(_) => None,
            })
            .collect();
        let (epsilon, rho) = d.split_amount(amount);
        Ok(Estimate {
            dataset: ds.id.to_string(),
            epsilon,
            rho,
            delta: if q.selected.is_empty() {
                0.0
            } else {
                grant.delta_per_query.unwrap_or(0.0)
            },
            accuracy: columns,
            releases: d.subs.len(),
        })
    }

    /// Answers one query with `budget`: an ε, or a target accuracy the engine solves ε for.
    ///
    /// When the dataset's policy sets `response_time_bucket_ms`, the answer (or refusal) is
    /// returned only at the next multiple of that time since the query arrived, so that how long
    /// execution took shows at most as a coarse bucket.
    pub async fn query_with(
        &self,
        asker: &Asker,
        sql: &str,
        budget: Budget,
    ) -> Result<(NoisyTable, QueryRecord), QueryError> {
        let started = std::time::Instant::now();
        let mut bucket = None;
        let result = self.answer(asker, sql, budget, &mut bucket).await;
        if let Some(ms) = bucket {
            let bucket = Duration::from_millis(u64::from(ms));
            let elapsed = started.elapsed();
            let buckets = elapsed.as_nanos().div_ceil(bucket.as_nanos()).max(1);
            let target = bucket.saturating_mul(u32::try_from(buckets).unwrap_or(u32::MAX));
            tokio::time::sleep(target.saturating_sub(elapsed)).await;
        }
        result
    }

    async fn answer(
        &self,
        asker: &Asker,
        sql: &str,
        budget: Budget,
        bucket: &mut Option<u32>,
    ) -> Result<(NoisyTable, QueryRecord), QueryError> {
        match budget {
            Budget::Epsilon(epsilon) => check_epsilon(epsilon)?,
            Budget::Rho(rho) => check_rho(rho)?,
            Budget::Accuracy(_) => {}
        }
        let (q, registered, grant) = self.prepare(asker, sql).await?;
        let ds = &registered.policy;
        *bucket = ds.response_time_bucket_ms;
        let d = design(&q, ds, grant);
        // What the query spends, in the dataset's measure: ε (pure) or ρ (zCDP).
        let amount = solve_budget(&q, &d, ds, budget)?;
        let measure = d.measure;
        let (epsilon, rho) = d.split_amount(amount);
        let key = cache::CacheKey {
            operator: asker.operator.to_string(),
            dataset: ds.id.to_string(),
            // A joined lookup is part of the data version.
            dataset_hash: match &q.lookup {
                Some(j) => format!("{}+{}", registered.content_hash, j.content_hash),
                None => registered.content_hash.clone(),
            },
            normalized: q.normalized.clone(),
            epsilon: amount,
        };
        if let Some(mut table) = self.cache.as_ref().and_then(|c| c.lookup(&key, &asker.job)) {
            table.cost = PrivacyCost::default();
            table.mechanism = format!(
                "identical to an earlier answer to the same query (returned from the cache, no charge); {}",
                table.mechanism
            );
            let record = QueryRecord {
                dataset: ds.id.to_string(),
                dataset_hash: registered.content_hash.clone(),
                normalized: q.normalized.clone(),
                cost: PrivacyCost::default(),
            };
            return Ok((table, record));
        }

        let Design {
            subs,
            agg_subs,
            suppress_with,
            select_with,
            sensitivities,
            l2,
            bounds,
            ..
        } = d;
        let each = amount / subs.len() as f64;
        let k = bounds.l1;
        let delta = if select_with.is_some() {
            grant.delta_per_query.ok_or(QueryError::ExecutionFailed)?
        } else {
            0.0
        };
        let mut mechanisms = Vec::with_capacity(subs.len());
        for (i, (sub, sens)) in subs.iter().zip(&sensitivities).enumerate() {
            let m = match sub {
                // A unit reaches at most l0 key tuples, with l1 rows in all and l∞ in one.
                _ if select_with == Some(i) => {
                    let reach = Reach {
                        l0: u32::try_from(bounds.l0).unwrap_or(u32::MAX),
                        l1: bounds.l1,
                        l2: bounds.l2_rows(),
                        linf: bounds.linf,
                    };
                    match measure {
                        PrivacyMeasure::Pure => PartitionSelection::laplace(reach, each, delta),
                        PrivacyMeasure::Zcdp => PartitionSelection::gaussian(reach, each, delta),
                    }
                    .and_then(|s| Ok(Noise::Select(s, additive(measure, k, l2[i], each)?)))
                }
                Sub::Quantile {
                    q, lo, hi, integer, ..
                } => {
                    let candidates = quantile::candidates(*lo, *hi, *integer);
                    let k = u32::try_from(k).unwrap_or(u32::MAX);
                    match measure {
                        PrivacyMeasure::Pure => QuantileMechanism::new(candidates, *q, k, each),
                        PrivacyMeasure::Zcdp => QuantileMechanism::zcdp(candidates, *q, k, each),
                    }
                    .map(Noise::Quantile)
                }
                _ => additive(measure, *sens, l2[i], each).map(Noise::Additive),
            };
            mechanisms.push(m.map_err(|_| QueryError::ExecutionFailed)?);
        }

        // Charge before execution; never refunded.
        let charge = Charge {
            operator: asker.operator.clone(),
            dataset: ds.id.clone(),
            job: asker.job.clone(),
            epsilon,
            rho,
            delta,
            epsilon_per_job: asker
                .max_epsilon
                .map_or(grant.epsilon_per_job, |m| m.min(grant.epsilon_per_job)),
            epsilon_per_period: grant.epsilon_per_period,
            // A job's ε cap, where set, caps its ρ at the ρ an ε-DP query of that ε counts for.
            rho_per_job: asker
                .max_epsilon
                .map_or(grant.rho_per_job, |m| (m * m / 2.0).min(grant.rho_per_job)),
            rho_per_period: grant.rho_per_period,
            delta_per_period: grant.delta_per_period,
            period: Duration::from_secs(grant.period_secs),
            sql: q.normalized.clone(),
            dataset_hash: registered.content_hash.clone(),
            mechanism: match (measure, select_with.is_some()) {
                (PrivacyMeasure::Pure, false) => "discrete-laplace".into(),
                (PrivacyMeasure::Pure, true) => "discrete-laplace+partition-selection".into(),
                (PrivacyMeasure::Zcdp, false) => "discrete-gaussian".into(),
                (PrivacyMeasure::Zcdp, true) => "discrete-gaussian+partition-selection".into(),
            },
        };
        self.accountant.charge(&charge).map_err(|e| match e {
            BudgetError::Suspended(_) => QueryError::NotGranted(e.to_string()),
            _ => QueryError::BudgetExhausted(e.to_string()),
        })?;

        let truth = self
            .true_values(&q, registered, &subs)
            .await
            .map_err(|_| QueryError::ExecutionFailed)?;
        let mut histograms = HashMap::new();
        for (i, sub) in subs.iter().enumerate() {
            if let Sub::Quantile {
                column,
                lo,
                hi,
                integer,
                ..
            } = sub
            {
                let h = self
                    .quantile_histograms(&q, registered, column, *lo, *hi, *integer)
                    .await
                    .map_err(|_| QueryError::ExecutionFailed)?;
                histograms.insert(i, h);
            }
        }

        // The released cells: every combination of the keys' public domains, or, with partition
        // selection, the key tuples whose noisy count passes the threshold. Sorted either way.
        let domains = q.key_domains.clone();
        let mut selected_counts = HashMap::new();
        let cells = match (select_with, &mechanisms[select_with.unwrap_or(0)]) {
            (Some(s), Noise::Select(sel, _)) => {
                // Tuples seen in the data, minus those with a value outside a public domain.
                let mut by_name = HashMap::new();
                let mut counts = HashMap::new();
                for (tuple, v) in &truth {
                    let public_ok = tuple.iter().zip(&domains).all(|(value, d)| {
                        d.as_ref().is_none_or(|d| d.binary_search(value).is_ok())
                    });
                    if public_ok {
                        let name = serde_json::to_string(tuple)
                            .map_err(|_| QueryError::ExecutionFailed)?;
                        counts.insert(name.clone(), v[s]);
                        by_name.insert(name, tuple.clone());
                    }
                }
                let released = sel
                    .release(&counts)
                    .map_err(|_| QueryError::ExecutionFailed)?;
                let mut cells: Vec<Vec<String>> = Vec::with_capacity(released.len());
                for (name, noisy) in released {
                    let tuple = by_name.remove(&name).ok_or(QueryError::ExecutionFailed)?;
                    selected_counts.insert(tuple.clone(), noisy);
                    cells.push(tuple);
                }
                cells.sort();
                cells
            }
            _ => cartesian(
                &domains
                    .into_iter()
                    .map(|d| d.expect("validated keys have public domains without selection"))
                    .collect::<Vec<_>>(),
            ),
        };
        // Additive releases in `noisy`, quantiles in `chosen` (the other one empty for each).
        let mut noisy: Vec<Vec<i64>> = Vec::with_capacity(subs.len());
        let mut chosen: Vec<Vec<f64>> = Vec::with_capacity(subs.len());
        for (i, m) in mechanisms.iter().enumerate() {
            match m {
                Noise::Select(..) => {
                    noisy.push(cells.iter().map(|c| selected_counts[c]).collect());
                    chosen.push(Vec::new());
                }
                Noise::Additive(m) => {
                    let exact: Vec<i64> = cells
                        .iter()
                        .map(|c| truth.get(c).map_or(0, |v| v[i]))
                        .collect();
                    noisy.push(m.release(&exact).map_err(|_| QueryError::ExecutionFailed)?);
                    chosen.push(Vec::new());
                }
                Noise::Quantile(m) => {
                    let empty = vec![0u64; 2 * m.candidates().len() + 1];
                    let mut out = Vec::with_capacity(cells.len());
                    for c in &cells {
                        let h = histograms[&i].get(c).unwrap_or(&empty);
                        out.push(m.release(h).map_err(|_| QueryError::ExecutionFailed)?);
                    }
                    noisy.push(Vec::new());
                    chosen.push(out);
                }
            }
        }

        let suppressed: Vec<bool> = cells
            .iter()
            .enumerate()
            .map(|(c, _)| match (suppress_with, grant.min_group_count) {
                (Some(s), Some(min)) => noisy[s][c] < min as i64,
                _ => false,
            })
            .collect();

        let mut rows = Vec::with_capacity(cells.len());
        let mut accuracy = Vec::with_capacity(cells.len());
        for (c, cell) in cells.iter().enumerate() {
            let mut row = Vec::with_capacity(q.outputs.len());
            let mut acc = Vec::with_capacity(q.outputs.len());
            for (_, src) in &q.outputs {
                match src {
                    OutputSource::Key(i) => {
                        row.push(Value::Text(cell[*i].clone()));
                        acc.push(None);
                    }
                    OutputSource::Agg(_) if suppressed[c] => {
                        row.push(Value::Null);
                        acc.push(None);
                    }
                    OutputSource::Agg(a) => {
                        let (v, e) = finish_cell(
                            &q.aggregates[*a],
                            &agg_subs[*a],
                            &subs,
                            &mechanisms,
                            (&noisy, &chosen),
                            c,
                            ds,
                        );
                        row.push(v);
                        acc.push(e);
                    }
                }
            }
            rows.push(row);
            accuracy.push(acc);
        }

        let guarantee = match (measure, delta > 0.0) {
            (PrivacyMeasure::Pure, false) => "pure ε-DP".to_string(),
            (PrivacyMeasure::Pure, true) => format!("(ε, δ)-DP with δ={delta}"),
            (PrivacyMeasure::Zcdp, d) => format!(
                "{}ρ-zCDP with ρ={rho}{}, which alone implies (ε={:.4}, δ={:e})-DP",
                if d { "δ-approximate " } else { "" },
                if d {
                    format!(" and δ={delta}")
                } else {
                    String::new()
                },
                zcdp_epsilon(rho, ZCDP_REPORT_DELTA).unwrap_or(f64::INFINITY),
                ZCDP_REPORT_DELTA + delta,
            ),
        };
        let (unit, composition, family) = match measure {
            PrivacyMeasure::Pure => (
                "ε",
                "basic composition",
                "discrete Laplace noise (OpenDP make_laplace)",
            ),
            PrivacyMeasure::Zcdp => (
                "ρ",
                "zCDP composition: ρ adds up",
                "discrete Gaussian noise calibrated to L2 sensitivity (OpenDP make_gaussian)",
            ),
        };
        let mut mechanism = format!(
            "{guarantee}; contribution bounds per {}: {} group(s), {k} row(s), {} per group, chosen at random; {unit}={amount} split evenly over {} release(s) ({composition}); additive releases use {family}:",
            ds.privacy_unit,
            bounds.l0,
            bounds.linf,
            subs.len()
        );
        for (i, ((s, sens), m)) in subs.iter().zip(&sensitivities).zip(&mechanisms).enumerate() {
            if let Noise::Select(sel, _) = m {
                let (e, d) = sel.spent();
                let how = match measure {
                    PrivacyMeasure::Pure => "make_laplace_threshold",
                    PrivacyMeasure::Zcdp => "make_gaussian_threshold",
                };
                mechanism.push_str(&format!(
                    " the values of {} are not public: a key tuple is released only when its noisy COUNT(*) reaches {} (DP partition selection, OpenDP {how}, scale {:.4}, {unit}={e}, δ={d:e} by OpenDP's map);",
                    q.selected.join(", "),
                    sel.threshold(),
                    sel.scale()
                ));
            }
            let what = match s {
                Sub::Count => "COUNT(*)".to_string(),
                Sub::Units => format!("COUNT(DISTINCT {})", ds.privacy_unit),
                Sub::NonNullCount(c) => format!("COUNT({c}) of non-null values"),
                Sub::FixedSum {
                    column,
                    lo,
                    hi,
                    center,
                    power,
                    scale,
                } => {
                    let x = format!("clamp({column}, {lo}, {hi})");
                    let term = match (*center == 0.0, power) {
                        (true, 1) => x,
                        (false, 1) => format!("({x} - {center})"),
                        _ => format!("({x} - {center})^{power}"),
                    };
                    format!("SUM({term}) in units of {}", 1.0 / scale)
                }
                Sub::Quantile {
                    column, q, lo, hi, ..
                } => {
                    let Noise::Quantile(m) = m else {
                        unreachable!()
                    };
                    mechanism.push_str(&format!(
                        " {q}-quantile of {column}: OpenDP private quantile (make_quantile_score_candidates + make_noisy_max, permute-and-flip) over {} candidates in [{lo}, {hi}], {k} rows per unit, scale {:.4} (score units, {} per row); the released rank is within ±{:.1} rows of the requested rank at 95%;",
                        m.candidates().len(),
                        m.scale(),
                        m.alpha_fraction().1,
                        m.rank_accuracy(ALPHA),
                    ));
                    continue;
                }
            };
            match m.additive() {
                Additive::Laplace(_) => mechanism.push_str(&format!(
                    " {what}: sensitivity {sens}, scale {:.4};",
                    m.additive().scale()
                )),
                Additive::Gaussian(_) => mechanism.push_str(&format!(
                    " {what}: L2 sensitivity {:.4}, σ {:.4};",
                    l2[i],
                    m.additive().scale()
                )),
            }
        }
        if let Some(min) = grant.min_group_count {
            mechanism.push_str(&format!(
                " groups with noisy count below {min} are suppressed;"
            ));
        }
        let columns = q.outputs.iter().map(|(n, _)| n.clone()).collect();
        let key_columns = q
            .outputs
            .iter()
            .take_while(|(_, s)| matches!(s, OutputSource::Key(_)))
            .count();
        let cost = PrivacyCost {
            epsilon,
            delta,
            rho,
        };
        let record = QueryRecord {
            dataset: ds.id.to_string(),
            dataset_hash: registered.content_hash.clone(),
            normalized: q.normalized.clone(),
            cost,
        };
        let table = NoisyTable {
            columns,
            key_columns,
            rows,
            accuracy,
            cost,
            mechanism,
        };
        if let Some(c) = &self.cache {
            c.store(&key, &table);
        }
        Ok((table, record))
    }

    /// Contribution bounding as the policy declares it: for a grouped query, at most
    /// `max_groups_per_unit` key tuples per unit and `max_rows_per_group` rows per unit and tuple
    /// (each chosen at random; rows with a NULL unit or key are dropped by these steps); then at
    /// most `max_rows_per_unit` rows per unit (at most `max_rows_per_group` without GROUP BY).
    async fn bound(
        &self,
        mut df: DataFrame,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<DataFrame, DataFusionError> {
        let unit = ds.privacy_unit.as_str();
        let random = |cols: Vec<Expr>| self.random.call(cols).sort(true, false);
        if q.key_exprs.is_empty() {
            let k = ds
                .max_rows_per_group
                .map_or(ds.max_rows_per_unit, |r| r.min(ds.max_rows_per_unit));
            return self.bound_contributions(df, unit, k).await;
        }
        if ds.max_groups_per_unit.is_some() || ds.max_rows_per_group.is_some() {
            let keys: Vec<String> = (0..q.key_exprs.len())
                .map(|i| format!("__sluice_k{i}"))
                .collect();
            for (name, e) in keys.iter().zip(&q.key_exprs) {
                df = df.with_column(name, e.clone())?;
            }
            let columns: Vec<Expr> = df
                .schema()
                .fields()
                .iter()
                .map(|f| col(datafusion::common::Column::new_unqualified(f.name())))
                .collect();
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
                    .filter(col("__sluice_rrank").lt_eq(lit(u64::from(r))))?
                    .select(columns.clone())?;
            }
            // The rows above come from random choices: a plan that read them twice (as the
            // light/heavy split of `bound_contributions` does) would see two different
            // choices and could let a unit through unbounded. One window over them all reads
            // them once.
            let rank = row_number()
                .partition_by(vec![col(unit)])
                .order_by(vec![random(vec![col(unit)])])
                .build()?
                .alias("__sluice_rank");
            return df
                .window(vec![rank])?
                .filter(col("__sluice_rank").lt_eq(lit(u64::from(ds.max_rows_per_unit))))?
                .select(columns);
        }
        self.bound_contributions(df, unit, ds.max_rows_per_unit)
            .await
    }

    /// Keeps at most `k` rows of each privacy unit, chosen uniformly at random.
    ///
    /// Units with at most `k` rows keep them all; only the rows of the other units (found first
    /// and held in memory) and of a missing unit (treated as one unit) go through
    /// `ROW_NUMBER() OVER (PARTITION BY unit ORDER BY random) <= k`. The result is the same as
    /// windowing every row, but the sort touches only the heavy units, and both joins build
    /// their hash table over the heavy units alone.
    ///
    /// The plan reads `df` more than once (to count, and in each branch), so `df` must be
    /// deterministic: a scan with a filter and key expressions, never random choices.
    async fn bound_contributions(
        &self,
        df: DataFrame,
        unit: &str,
        k: u32,
    ) -> Result<DataFrame, DataFusionError> {
        let columns: Vec<Expr> = df
            .schema()
            .fields()
            .iter()
            .map(|f| col(datafusion::common::Column::new_unqualified(f.name())))
            .collect();
        // The units above the bound, computed once and held in memory: usually few, so both
        // joins below build a small hash table instead of one over every unit.
        let heavy_units = df
            .clone()
            .aggregate(vec![col(unit)], vec![count(lit(1i64)).alias("__sluice_n")])?
            .filter(
                col("__sluice_n")
                    .gt(lit(i64::from(k)))
                    .and(col(unit).is_not_null()),
            )?
            .select(vec![col(unit).alias("__sluice_heavy")])?;
        let schema = Arc::new(heavy_units.schema().as_arrow().clone());
        let batches = heavy_units.collect().await?;
        let heavy_units = self.catalog.execution.read_table(Arc::new(
            datafusion::datasource::MemTable::try_new(schema, vec![batches])?,
        ))?;
        let light = df.clone().filter(col(unit).is_not_null())?.join(
            heavy_units.clone(),
            JoinType::LeftAnti,
            &[unit],
            &["__sluice_heavy"],
            None,
        )?;
        let rank = row_number()
            .partition_by(vec![col(unit)])
            .order_by(vec![self.random.call(vec![col(unit)]).sort(true, false)])
            .build()?
            .alias("__sluice_rank");
        // Rows of heavy units, and rows without a unit (bounded together as one unit).
        let heavy = df
            .clone()
            .join(
                heavy_units,
                JoinType::LeftSemi,
                &[unit],
                &["__sluice_heavy"],
                None,
            )?
            .union(df.filter(col(unit).is_null())?)?
            .window(vec![rank])?
            .filter(col("__sluice_rank").lt_eq(lit(u64::from(k))))?
            .select(columns)?;
        light.union(heavy)
    }

    /// The rows a query reads before bounding: the dataset, joined with its public lookup (an
    /// INNER join on a unique key, so no row is repeated), filtered by the WHERE clause.
    async fn base(
        &self,
        q: &ValidatedQuery,
        ds: &sluice_policy::Dataset,
    ) -> Result<DataFrame, DataFusionError> {
        let mut df = self.catalog.execution.table(ds.id.as_str()).await?;
        if let Some(j) = &q.lookup {
            let lookup = self.catalog.execution.table(j.table.as_str()).await?;
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
        Ok(df)
    }

    /// Runs the DP rewrite on DataFusion and returns, per key tuple, the exact value of each release.
    async fn true_values(
        &self,
        q: &ValidatedQuery,
        registered: &Registered,
        subs: &[Sub],
    ) -> Result<HashMap<Vec<String>, Vec<i64>>, DataFusionError> {
        let ds = &registered.policy;
        let mut df = self.base(q, ds).await?;
        // Quantiles are answered by `quantile_histograms`; the rest is one aggregate.
        let additive: Vec<usize> = (0..subs.len())
            .filter(|i| !matches!(subs[*i], Sub::Quantile { .. }))
            .collect();
        if additive.is_empty() {
            return Ok(HashMap::new());
        }
        df = self.bound(df, q, ds).await?;
        let aggs: Vec<Expr> = additive
            .iter()
            .map(|&i| {
                let e = match &subs[i] {
                    Sub::Count => count(lit(1i64)),
                    Sub::Units => count_distinct(col(ds.privacy_unit.as_str())),
                    Sub::NonNullCount(c) => count(col(c.as_str())),
                    Sub::FixedSum {
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
                    Sub::Quantile { .. } => unreachable!("filtered out"),
                };
                e.alias(format!("__sluice_{i}"))
            })
            .collect();
        let batches = df.aggregate(key_exprs(q), aggs)?.collect().await?;
        let truth = collect_truth(&batches, q.keys.len(), additive.len())?;
        Ok(truth
            .into_iter()
            .map(|(key, vals)| {
                let mut full = vec![0i64; subs.len()];
                for (v, &i) in vals.into_iter().zip(&additive) {
                    full[i] = v;
                }
                (key, full)
            })
            .collect())
    }

    /// Per key tuple, the histogram of [`sluice_kernels::rank_code`]s of `column`'s bounded
    /// values: the counts OpenDP's quantile score is computed from.
    async fn quantile_histograms(
        &self,
        q: &ValidatedQuery,
        registered: &Registered,
        column: &str,
        lo: f64,
        hi: f64,
        integer: bool,
    ) -> Result<HashMap<Vec<String>, Vec<u64>>, DataFusionError> {
        let ds = &registered.policy;
        let m = quantile::candidates(lo, hi, integer).len();
        let mut df = self.base(q, ds).await?;
        df = self.bound(df, q, ds).await?;
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
        let batches = df
            .aggregate(keys, vec![count(lit(1i64)).alias("__sluice_n")])?
            .collect()
            .await?;
        // The code becomes the last "key"; rows with a NULL code (NULL or NaN value) are dropped
        // like rows outside every public domain.
        let flat = collect_truth(&batches, q.keys.len() + 1, 1)?;
        let mut out: HashMap<Vec<String>, Vec<u64>> = HashMap::new();
        for (mut key, n) in flat {
            let code: usize = key
                .pop()
                .and_then(|c| c.parse().ok())
                .filter(|c| *c <= 2 * m)
                .ok_or_else(|| DataFusionError::Internal("rank code".into()))?;
            out.entry(key).or_insert_with(|| vec![0; 2 * m + 1])[code] += n[0].max(0) as u64;
        }
        Ok(out)
    }
}

/// The released value of aggregate `agg` in `cell` and the half-width of its 95% interval (`None`
/// when that depends on the data, as for quantiles).
fn finish_cell(
    agg: &AggSpec,
    idx: &[usize],
    subs: &[Sub],
    mechanisms: &[Noise],
    (noisy, chosen): (&[Vec<i64>], &[Vec<f64>]),
    cell: usize,
    ds: &sluice_policy::Dataset,
) -> (Value, Option<f64>) {
    let fixed = |i: usize, alpha: f64| {
        let Sub::FixedSum { scale, .. } = &subs[i] else {
            unreachable!("a fixed-point sum")
        };
        (
            noisy[i][cell] as f64 / scale,
            mechanisms[i].additive().accuracy(alpha) / scale,
        )
    };
    let counted = |i: usize, alpha: f64| {
        (
            noisy[i][cell] as f64,
            mechanisms[i].additive().accuracy(alpha),
        )
    };
    match agg {
        AggSpec::Count | AggSpec::CountUnits => {
            let i = idx[0];
            (
                Value::Int(noisy[i][cell]),
                Some(mechanisms[i].additive().accuracy(ALPHA)),
            )
        }
        AggSpec::Sum(c) => {
            let i = idx[0];
            let Sub::FixedSum { scale, .. } = &subs[i] else {
                unreachable!()
            };
            let (v, acc) = fixed(i, ALPHA);
            let int_col = matches!(ds.column(c).map(|c| &c.kind), Some(ColumnKind::Int { .. }));
            let v = if int_col && *scale == 1.0 {
                Value::Int(noisy[i][cell])
            } else {
                Value::Float(v)
            };
            (v, Some(acc))
        }
        AggSpec::Mean(_) => {
            let Sub::FixedSum { lo, hi, .. } = &subs[idx[0]] else {
                unreachable!()
            };
            // A 95% interval by a union bound over two 97.5% intervals.
            let (s, a_s) = fixed(idx[0], ALPHA / 2.0);
            let (n, a_n) = counted(idx[1], ALPHA / 2.0);
            let (mean, acc) = mean_interval(s, a_s, n, a_n, *lo, *hi);
            (Value::Float(mean), Some(acc))
        }
        AggSpec::Variance { sample, stddev, .. } => {
            let Sub::FixedSum { lo, hi, center, .. } = &subs[idx[0]] else {
                unreachable!()
            };
            // A 95% interval by a union bound over three 98.33% intervals.
            let (s, a_s) = fixed(idx[0], ALPHA / 3.0);
            let (ss, a_ss) = fixed(idx[1], ALPHA / 3.0);
            let (n, a_n) = counted(idx[2], ALPHA / 3.0);
            let (v, acc) = variance_interval(
                (s, a_s),
                (ss, a_ss),
                (n, a_n),
                (lo - center, hi - center),
                *sample,
                *stddev,
            );
            (Value::Float(v), Some(acc))
        }
        AggSpec::Quantile { column, .. } => {
            let v = chosen[idx[0]][cell];
            let int_col = matches!(
                ds.column(column).map(|c| &c.kind),
                Some(ColumnKind::Int { .. })
            );
            let v = if int_col {
                Value::Int(v as i64)
            } else {
                Value::Float(v)
            };
            (v, None)
        }
    }
}

/// A mean from a noisy sum `s` (±`a_s`) and a noisy count `n` (±`a_n`) of values within
/// `[lo, hi]`: the estimate and the half-width of the interval the two intervals imply.
fn mean_interval(s: f64, a_s: f64, n: f64, a_n: f64, lo: f64, hi: f64) -> (f64, f64) {
    if n < 1.0 {
        return ((lo + hi) / 2.0, hi - lo);
    }
    let mean = (s / n).clamp(lo, hi);
    if n - a_n < 1.0 {
        return (mean, hi - lo);
    }
    let corners = [
        (s - a_s) / (n - a_n),
        (s - a_s) / (n + a_n),
        (s + a_s) / (n - a_n),
        (s + a_s) / (n + a_n),
    ];
    let min = corners.iter().copied().fold(f64::INFINITY, f64::min);
    let max = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The true mean always lies within the bounds: an interval wholly outside them means the
    // noise landed in its 5% tail, and the release says nothing beyond the bounds. (Clamping
    // such an interval would claim a half-width of 0.)
    if max < lo || min > hi {
        return (mean, hi - lo);
    }
    let (min, max) = (min.clamp(lo, hi), max.clamp(lo, hi));
    (mean, (mean - min).max(max - mean))
}

/// A variance (or standard deviation) from noisy sums of centered values `s`, of their squares
/// `ss`, and a noisy count `n`, each with its half-width, for centered values within `[clo, chi]`:
/// the estimate and the half-width of the interval the three intervals imply.
fn variance_interval(
    (s, a_s): (f64, f64),
    (ss, a_ss): (f64, f64),
    (n, a_n): (f64, f64),
    (clo, chi): (f64, f64),
    sample: bool,
    stddev: bool,
) -> (f64, f64) {
    // The largest possible variance of values within the bounds: half the range, squared.
    let vmax = ((chi - clo) / 2.0).powi(2);
    let finish = |v: f64| if stddev { v.sqrt() } else { v };
    let unknown = (finish(vmax / 2.0), finish(vmax));
    if n < 2.0 {
        return unknown;
    }
    let correct = |v: f64, n: f64| if sample { v * n / (n - 1.0) } else { v };
    let mean = (s / n).clamp(clo, chi);
    let var = correct((ss / n - mean * mean).clamp(0.0, vmax), n).min(vmax);
    if n - a_n < 2.0 {
        return (finish(var), finish(vmax));
    }
    let (n_lo, n_hi) = (n - a_n, n + a_n);
    let ratios = |x: f64, a: f64| {
        let c = [
            (x - a) / n_lo,
            (x - a) / n_hi,
            (x + a) / n_lo,
            (x + a) / n_hi,
        ];
        (
            c.iter().copied().fold(f64::INFINITY, f64::min),
            c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (m_lo, m_hi) = ratios(s, a_s);
    let (m_lo, m_hi) = (m_lo.clamp(clo, chi), m_hi.clamp(clo, chi));
    let (e2_lo, e2_hi) = ratios(ss, a_ss);
    let sq_hi = (m_lo * m_lo).max(m_hi * m_hi);
    let sq_lo = if m_lo <= 0.0 && m_hi >= 0.0 {
        0.0
    } else {
        (m_lo * m_lo).min(m_hi * m_hi)
    };
    let v_lo = correct((e2_lo - sq_hi).max(0.0), n_hi).min(vmax);
    let v_hi = correct((e2_hi - sq_lo).max(0.0), n_lo).min(vmax);
    if v_hi < v_lo || v_lo > vmax {
        return (finish(var), finish(vmax));
    }
    let (lo, hi, v) = (finish(v_lo), finish(v_hi), finish(var));
    (v, (v - lo).max(hi - v))
}

/// The GROUP BY expressions of the DP rewrite, each under a name of its own.
fn key_exprs(q: &ValidatedQuery) -> Vec<Expr> {
    q.key_exprs
        .iter()
        .enumerate()
        .map(|(i, e)| e.clone().alias(format!("__sluice_key_{i}")))
        .collect()
}

fn collect_truth(
    batches: &[RecordBatch],
    nkeys: usize,
    nsubs: usize,
) -> Result<HashMap<Vec<String>, Vec<i64>>, DataFusionError> {
    let mut out = HashMap::new();
    for b in batches {
        let keys: Vec<_> = (0..nkeys)
            .map(|i| cast(b.column(i), &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let keys: Vec<&StringArray> = keys
            .iter()
            .map(|a| {
                a.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8")
            })
            .collect();
        let vals: Vec<_> = (0..nsubs)
            .map(|i| cast(b.column(nkeys + i), &DataType::Int64))
            .collect::<Result<_, _>>()?;
        let vals: Vec<&Int64Array> = vals
            .iter()
            .map(|a| {
                a.as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("cast to Int64")
            })
            .collect();
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

fn cartesian(domains: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    for d in domains {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                d.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect();
    }
    out
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(300).collect()
}

/// Maps a planning error to a message about the query and policy only.
fn plan_error(e: &DataFusionError, ds: &sluice_policy::Dataset) -> QueryError {
    if let DataFusionError::SchemaError(err, _) = e.find_root()
        && let datafusion::common::SchemaError::FieldNotFound { field, .. } = err.as_ref()
    {
        return QueryError::ColumnDenied(format!(
            "unknown column `{}` in dataset `{}`; public columns are: {}",
            field.name,
            ds.id,
            ds.public_column_names().join(", ")
        ));
    }
    QueryError::InvalidSql(first_line(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_scale_keeps_integers_exact_and_floats_fine() {
        let int = ColumnKind::Int {
            bounds: Some((0, 100)),
        };
        assert_eq!(fixed_scale(&int, 0.0, 100.0), 1.0);
        let float = ColumnKind::Float {
            bounds: Some((0.0, 20000.0)),
        };
        let s = fixed_scale(&float, 0.0, 20000.0);
        assert!(20000.0 * s <= 2f64.powi(31) && 20000.0 * s * 2.0 > 2f64.powi(31));
    }

    #[test]
    fn cartesian_enumerates_every_cell_in_order() {
        let d = vec![vec!["a".into(), "b".into()], vec!["x".into(), "y".into()]];
        let c = cartesian(&d);
        assert_eq!(c.len(), 4);
        assert_eq!(c[1], vec!["a".to_string(), "y".to_string()]);
    }

    #[test]
    fn the_l2_bound_is_the_norm_of_the_most_concentrated_contribution() {
        // Brute force over every way to spread at most l1 rows over l0 cells, at most l∞ each.
        fn brute(l0: i64, l1: i64, linf: i64) -> f64 {
            fn go(cells: i64, left: i64, linf: i64) -> i64 {
                if cells == 0 {
                    return 0;
                }
                (0..=left.min(linf))
                    .map(|c| c * c + go(cells - 1, left - c, linf))
                    .max()
                    .unwrap_or(0)
            }
            (go(l0, l1, linf) as f64).sqrt()
        }
        for l0 in 1..=4 {
            for linf in 1..=5 {
                for l1 in linf..=(l0 * linf) {
                    let b = Bounds { l0, l1, linf };
                    assert!(
                        (b.l2_rows() - brute(l0, l1, linf)).abs() < 1e-9,
                        "{b:?}: {} vs {}",
                        b.l2_rows(),
                        brute(l0, l1, linf)
                    );
                }
            }
        }
    }
}

/// How a query's ε is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Spend exactly this ε (datasets with pure ε-DP accounting).
    Epsilon(f64),
    /// Spend exactly this ρ (datasets with zero-concentrated DP accounting).
    Rho(f64),
    /// Spend the least ε (or ρ) for which every aggregate cell's 95% interval has at most this
    /// half-width (in the aggregate's units). For COUNT, COUNT(DISTINCT) and SUM; the accuracy
    /// of AVG, VARIANCE, STDDEV and quantiles depends on the data, so it cannot be targeted in
    /// advance.
    Accuracy(f64),
}

/// What [`PrivacyEngine::estimate`] returns.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// The dataset.
    pub dataset: String,
    /// The ε the query would be charged (0 on zCDP datasets).
    pub epsilon: f64,
    /// The ρ the query would be charged (0 on pure-DP datasets).
    pub rho: f64,
    /// The δ it would be charged.
    pub delta: f64,
    /// For each aggregate column: the 95% half-width of every cell, or `None` when it depends on
    /// the data (AVG, VARIANCE, STDDEV, quantiles).
    pub accuracy: Vec<(String, Option<f64>)>,
    /// Noisy releases the ε is split over.
    pub releases: usize,
}

fn check_rho(rho: f64) -> Result<(), QueryError> {
    if rho.is_finite() && rho > 0.0 && rho <= MAX_QUERY_RHO {
        Ok(())
    } else {
        Err(QueryError::InvalidOptions(format!(
            "rho must be a number greater than 0 and at most {MAX_QUERY_RHO}"
        )))
    }
}

fn check_epsilon(epsilon: f64) -> Result<(), QueryError> {
    if epsilon.is_finite() && epsilon > 0.0 && epsilon <= MAX_QUERY_EPSILON {
        Ok(())
    } else {
        Err(QueryError::InvalidOptions(format!(
            "epsilon must be a number greater than 0 and at most {MAX_QUERY_EPSILON}"
        )))
    }
}

/// How much one privacy unit can change a query's table after contribution bounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Cells (key tuples) it can reach.
    pub l0: i64,
    /// Rows it can contribute in all.
    pub l1: i64,
    /// Rows it can contribute to one cell.
    pub linf: i64,
}

impl Bounds {
    /// The bounds the policy's `max_rows_per_unit` (k), `max_groups_per_unit` (g) and
    /// `max_rows_per_group` (r) give a query releasing `cells` cells (`i64::MAX` when unknown).
    /// An ungrouped query has one group, so r bounds the unit's rows there too.
    pub fn of(ds: &sluice_policy::Dataset, grouped: bool, cells: i64) -> Self {
        let k = i64::from(ds.max_rows_per_unit);
        let g = ds.max_groups_per_unit.map_or(k, i64::from);
        let r = ds.max_rows_per_group.map_or(k, i64::from).min(k);
        if !grouped {
            return Self {
                l0: 1,
                l1: r,
                linf: r,
            };
        }
        let l0 = k.min(g).min(cells.max(1));
        Self {
            l0,
            l1: k.min(l0.saturating_mul(r)),
            linf: r,
        }
    }

    /// The largest L2 norm of the change one unit makes to a vector of per-cell row counts:
    /// l∞ rows in each of m = min(l0, ⌊l1/l∞⌋) cells and the rest of l1 (at most l∞) in one more
    /// cell, if a cell is left (concentrating rows maximises the norm).
    pub fn l2_rows(&self) -> f64 {
        let (l0, l1, linf) = (self.l0 as f64, self.l1 as f64, self.linf.max(1) as f64);
        let full = l0.min((l1 / linf).floor());
        let rest = if full < l0 {
            (l1 - full * linf).clamp(0.0, linf)
        } else {
            0.0
        };
        (full * linf * linf + rest * rest).sqrt()
    }
}

/// A query's noisy releases, which of them each aggregate reads, and their sensitivities.
struct Design {
    subs: Vec<Sub>,
    agg_subs: Vec<Vec<usize>>,
    suppress_with: Option<usize>,
    /// The count that selects key tuples, when some keys have no public domain.
    select_with: Option<usize>,
    sensitivities: Vec<i64>,
    /// The L2 sensitivities, for zCDP datasets.
    l2: Vec<f64>,
    bounds: Bounds,
    measure: PrivacyMeasure,
}

impl Design {
    /// An amount in the dataset's measure, as (ε, ρ): the other one is 0.
    fn split_amount(&self, amount: f64) -> (f64, f64) {
        match self.measure {
            PrivacyMeasure::Pure => (amount, 0.0),
            PrivacyMeasure::Zcdp => (0.0, amount),
        }
    }
}

fn design(q: &ValidatedQuery, ds: &sluice_policy::Dataset, grant: &Grant) -> Design {
    // The noisy releases this query needs, and which of them each aggregate reads.
    let mut subs: Vec<Sub> = Vec::new();
    let mut agg_subs: Vec<Vec<usize>> = Vec::new();
    for a in &q.aggregates {
        let mut idx = Vec::new();
        match a {
            AggSpec::Count => {
                idx.push(subs.len());
                subs.push(Sub::Count);
            }
            AggSpec::CountUnits => {
                idx.push(subs.len());
                subs.push(Sub::Units);
            }
            AggSpec::Sum(c) | AggSpec::Mean(c) => {
                let kind = &ds.column(c).expect("validated column").kind;
                let (lo, hi) = kind.bounds_f64().expect("validated bounds");
                idx.push(subs.len());
                subs.push(Sub::FixedSum {
                    column: c.clone(),
                    lo,
                    hi,
                    center: 0.0,
                    power: 1,
                    scale: fixed_scale(kind, lo, hi),
                });
                if matches!(a, AggSpec::Mean(_)) {
                    idx.push(subs.len());
                    subs.push(Sub::NonNullCount(c.clone()));
                }
            }
            AggSpec::Variance { column, .. } => {
                // Centered at the middle of the bounds, which halves the sums' sensitivity.
                let kind = &ds.column(column).expect("validated column").kind;
                let (lo, hi) = kind.bounds_f64().expect("validated bounds");
                let center = (lo + hi) / 2.0;
                let float = ColumnKind::Float { bounds: None };
                for power in [1, 2] {
                    let r = encoded_range(lo, hi, center, power);
                    idx.push(subs.len());
                    subs.push(Sub::FixedSum {
                        column: column.clone(),
                        lo,
                        hi,
                        center,
                        power,
                        scale: fixed_scale(&float, -r, r),
                    });
                }
                idx.push(subs.len());
                subs.push(Sub::NonNullCount(column.clone()));
            }
            AggSpec::Quantile { column, q } => {
                let kind = &ds.column(column).expect("validated column").kind;
                let (lo, hi) = kind.bounds_f64().expect("validated bounds");
                idx.push(subs.len());
                subs.push(Sub::Quantile {
                    column: column.clone(),
                    q: *q,
                    lo,
                    hi,
                    integer: matches!(kind, ColumnKind::Int { .. }),
                });
            }
        }
        agg_subs.push(idx);
    }
    // Suppression by noisy count needs a count; spend part of ε on one if the query has none.
    let suppress_with = grant.min_group_count.map(|_| {
        subs.iter()
            .position(|s| matches!(s, Sub::Count))
            .unwrap_or_else(|| {
                subs.push(Sub::Count);
                subs.len() - 1
            })
    });
    // Partition selection needs a count too (the same one).
    let select_with = (!q.selected.is_empty()).then(|| {
        subs.iter()
            .position(|s| matches!(s, Sub::Count))
            .unwrap_or_else(|| {
                subs.push(Sub::Count);
                subs.len() - 1
            })
    });
    // Released cells: the product of the keys' public domain sizes (unbounded with selection).
    let n_cells: i64 = q
        .key_domains
        .iter()
        .map(|d| d.as_ref().map_or(i64::MAX, |v| v.len() as i64))
        .fold(1i64, |a, n| a.saturating_mul(n.max(1)));
    let bounds = Bounds::of(ds, !q.keys.is_empty(), n_cells);
    let k = bounds.l1;
    let rows_l2 = bounds.l2_rows();
    let mut sensitivities = Vec::with_capacity(subs.len());
    let mut l2 = Vec::with_capacity(subs.len());
    for s in &subs {
        let (sens, sens2) = match s {
            // A unit is counted once in each group it has a (kept) row in: at most l0 groups,
            // never more than it has rows nor more than are released.
            Sub::Units => (bounds.l0.min(k), (bounds.l0.min(k) as f64).sqrt()),
            // Otherwise each kept row moves its cell by at most m: 1 for counts (quantiles: the
            // mechanism is calibrated from the rows itself); for sums, each value is encoded as
            // round(((x - center)^power)·scale), so m = round(range·scale) (rounding is monotone).
            _ => {
                let m = match s {
                    Sub::FixedSum {
                        lo,
                        hi,
                        center,
                        power,
                        scale,
                        ..
                    } => (encoded_range(*lo, *hi, *center, *power) * scale)
                        .round()
                        .max(1.0),
                    _ => 1.0,
                };
                (k.saturating_mul(m as i64), rows_l2 * m)
            }
        };
        l2.push(sens2);
        sensitivities.push(sens);
    }

    Design {
        subs,
        agg_subs,
        suppress_with,
        select_with,
        sensitivities,
        l2,
        bounds,
        measure: ds.measure,
    }
}

/// The 95% half-width of every cell of aggregate `a` at total `amount` (ε or ρ); `None` where
/// it depends on the data (AVG, VARIANCE, STDDEV, quantiles).
fn aggregate_accuracy(q: &ValidatedQuery, d: &Design, a: usize, amount: f64) -> Option<f64> {
    if !q.aggregates[a].accuracy_is_public() {
        return None;
    }
    let each = amount / d.subs.len() as f64;
    let i = d.agg_subs[a][0];
    let acc = additive(d.measure, d.sensitivities[i], d.l2[i], each)
        .ok()?
        .accuracy(ALPHA);
    match &d.subs[i] {
        Sub::FixedSum { scale, .. } => Some(acc / scale),
        _ => Some(acc),
    }
}

/// What to spend, in the dataset's measure (ε or ρ): as given, or the least amount (found by
/// bisection; the half-width falls as the amount grows) at which every aggregate meets the
/// target.
fn solve_budget(
    q: &ValidatedQuery,
    d: &Design,
    ds: &sluice_policy::Dataset,
    budget: Budget,
) -> Result<f64, QueryError> {
    let (max, unit) = match d.measure {
        PrivacyMeasure::Pure => (MAX_QUERY_EPSILON, "ε"),
        PrivacyMeasure::Zcdp => (MAX_QUERY_RHO, "ρ"),
    };
    let target = match (budget, d.measure) {
        (Budget::Epsilon(e), PrivacyMeasure::Pure) => {
            check_epsilon(e)?;
            return Ok(e);
        }
        (Budget::Rho(r), PrivacyMeasure::Zcdp) => {
            check_rho(r)?;
            return Ok(r);
        }
        (Budget::Epsilon(_), PrivacyMeasure::Zcdp) => {
            return Err(QueryError::InvalidOptions(format!(
                "dataset `{}` accounts privacy in zero-concentrated DP (privacy_measure = \"zcdp\"): give rho (e.g. 0.05) or a target accuracy instead of epsilon",
                ds.id
            )));
        }
        (Budget::Rho(_), PrivacyMeasure::Pure) => {
            return Err(QueryError::InvalidOptions(format!(
                "dataset `{}` accounts privacy in pure ε-DP: give epsilon (e.g. 0.5) or a target accuracy instead of rho",
                ds.id
            )));
        }
        (Budget::Accuracy(a), _) if a.is_finite() && a > 0.0 => a,
        (Budget::Accuracy(_), _) => {
            return Err(QueryError::InvalidOptions(
                "the target accuracy must be a number greater than 0".into(),
            ));
        }
    };
    if !q.aggregates.iter().all(AggSpec::accuracy_is_public) {
        return Err(QueryError::InvalidOptions(format!(
            "a target accuracy works for COUNT, COUNT(DISTINCT) and SUM; the accuracy of AVG, VARIANCE, STDDEV and quantiles depends on the data, so give {}",
            if d.measure == PrivacyMeasure::Zcdp {
                "rho"
            } else {
                "epsilon"
            }
        )));
    }
    let worst = |eps: f64| {
        (0..q.aggregates.len())
            .filter_map(|a| aggregate_accuracy(q, d, a, eps))
            .fold(0.0f64, f64::max)
    };
    if worst(max) > target {
        return Err(QueryError::InvalidOptions(format!(
            "a 95% half-width of {target} needs more than the largest {unit} a query may spend ({max})"
        )));
    }
    let (mut lo, mut hi) = (0.0f64, max);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if mid > 0.0 && worst(mid) <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}
