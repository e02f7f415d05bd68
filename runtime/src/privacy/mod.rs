//! The privacy engine: from a job's SQL to a differentially private table.
//!
//! # Privacy
//! - **Privacy unit:** the dataset's `privacy_unit` column (e.g. one person). Neighbouring datasets
//!   differ by all rows of one unit.
//! - **Contribution bounding:** after the WHERE filter, at most `max_rows_per_unit` (k) rows per unit
//!   are kept, chosen uniformly at random (`ROW_NUMBER() OVER (PARTITION BY unit ORDER BY random)`,
//!   applied only to the rows of the units that have more than k rows in the whole dataset, which
//!   the contribution index (`index.rs`) finds once per dataset version; a missing unit counts as one
//!   unit).
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
mod amount;
pub mod cache;
mod calibrate;
mod constants;
pub mod dates;
mod describe;
mod design;
mod execute;
mod index;
pub mod mechanisms;
mod plans;
pub mod quantile;
mod release;
pub mod selection;
pub mod sql_bounds;
pub(crate) mod udf;
pub mod validate;

pub use design::Bounds;

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::DataFusionError;
use datafusion::logical_expr::ScalarUDF;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use sluice_policy::{ColumnKind, DatasetId, Grant, OperatorId, Policy};

use crate::QueryError;
use crate::data::{Catalog, LoadedLookup, Registered};
use crate::report::{NoisyTable, PrivacyCost};
use accountant::{Accountant, Amount, BudgetError};
use calibrate::Calibrated;
use design::Design;
use udf::{FixedPoint, RandomKey, RankCode};
use validate::{OutputSource, ValidatedQuery};

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
    /// When the asking happens: grant expiry is read at this moment, in the policy's time zone.
    pub at: std::time::SystemTime,
    /// The datasets the job declared it will use; `None` for any dataset granted to the operator.
    pub scope: Option<Vec<DatasetId>>,
    /// A per-job ε cap below the grant's (what the operator asked for and a reviewer approved).
    pub max_epsilon: Option<f64>,
    /// The scenario the asking runs under (`None`: the operator's only grant on the dataset).
    pub scenario: Option<String>,
    /// The asking job's row functions, if it carries any ([`crate::rows`]).
    pub rows: Option<Arc<crate::rows::RowModule>>,
}

impl Asker {
    /// An asker for `job` of `operator` today, limited only by the operator's grants.
    pub fn new(operator: OperatorId, job: impl Into<String>) -> Self {
        Self {
            operator,
            job: job.into(),
            at: std::time::SystemTime::now(),
            scope: None,
            max_epsilon: None,
            scenario: None,
            rows: None,
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
    /// The SQL as the job wrote it.
    pub submitted: String,
    /// The cost charged.
    pub cost: PrivacyCost,
    /// Whether the answer came from the identical-query cache (free).
    pub cached: bool,
    /// Aggregate cells released (suppressed cells not counted): what a commercial tariff's
    /// per-cell price applies to. The operator sees every one of them.
    #[serde(default)]
    pub cells: u64,
    /// Each aggregate column of the answer with the widest 95% half-width of its cells, `None`
    /// where the mechanism states its accuracy otherwise (a quantile's is a rank error, in its
    /// mechanism text).
    pub accuracy: Vec<ColumnAccuracy>,
    /// The job's row functions the query aggregated, each as `name(args) in [lo, hi] default d,
    /// rows module sha256 <hex>` (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_functions: Vec<String>,
    /// The engine that answered: [`crate::remote::LOCAL`], a remote engine's name (a Ballista
    /// cluster's scheduler) or [`CACHE_ENGINE`].
    pub engine: String,
}

/// How accurate one aggregate column of an answer is.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ColumnAccuracy {
    /// The column.
    pub column: String,
    /// The widest half-width of a 95% interval over its cells.
    pub half_width_95: Option<f64>,
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
    /// The heavy units of each dataset, found once ([`index`]).
    index: index::ContributionIndex,
    /// Physical plans of the query shapes run so far ([`plans`]).
    plans: plans::PlanCache,
    /// Whether bounding sends only heavy units' rows through the random choice (the default) or
    /// every row (a baseline for benchmarks and tests).
    contribution_index: bool,
    /// Whether answers wait for the dataset's response-time bucket (not over mock data, whose
    /// timing is about no one).
    pad_response_time: bool,
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
            index: index::ContributionIndex::default(),
            plans: plans::PlanCache::default(),
            contribution_index: true,
            pad_response_time: true,
        }
    }

    /// Sends every row through contribution bounding's random choice instead of only the rows of
    /// the units the contribution index lists as heavy: the same released distribution, slower. A
    /// baseline for benchmarks and for the test that both paths agree.
    pub fn without_contribution_index(mut self) -> Self {
        self.contribution_index = false;
        self
    }

    /// Answers at once, whatever the datasets' `response_time_bucket_ms`: for plans over mock
    /// data only.
    pub(crate) fn without_response_padding(mut self) -> Self {
        self.pad_response_time = false;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy in force, shared.
    pub(crate) fn policy_arc(&self) -> Arc<Policy> {
        self.policy.clone()
    }

    /// The datasets.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The accountant.
    pub fn accountant(&self) -> &Arc<dyn Accountant> {
        &self.accountant
    }

    /// The public descriptions of the datasets granted to `operator` at `at`.
    pub fn datasets_for(
        &self,
        operator: &OperatorId,
        at: std::time::SystemTime,
    ) -> Vec<crate::views::DatasetView> {
        self.policy
            .granted_datasets(operator, at)
            .into_iter()
            .map(|d| crate::views::DatasetView::of(d, &self.policy))
            .collect()
    }

    /// Every lookup table, values included (they are public reference data).
    pub fn lookups(&self) -> Vec<crate::views::LookupView> {
        self.policy
            .lookups
            .keys()
            .filter_map(|id| self.catalog.lookup(id))
            .map(crate::views::LookupView::of)
            .collect()
    }

    /// `operator`'s budget on `dataset` under `scenario` as `job` sees it (`job` may be empty:
    /// no job's own spending), or `None` when no grant covers it at `at`.
    pub fn budget_for(
        &self,
        operator: &OperatorId,
        dataset: &DatasetId,
        scenario: Option<&str>,
        job: &str,
        at: std::time::SystemTime,
    ) -> Option<crate::views::BudgetView> {
        let grant = self
            .policy
            .authorize_in(operator, dataset, scenario, at)
            .ok()?;
        let ds = self.policy.datasets.get(dataset)?;
        let spent = self.accountant.spent_in(
            operator,
            dataset,
            grant.scenario.as_deref(),
            job,
            Duration::from_secs(grant.period_secs),
        );
        let all = ds.budget.map_or_else(accountant::Totals::default, |b| {
            self.accountant
                .dataset_spent(dataset, Duration::from_secs(b.period_secs))
        });
        let zone = &self.policy.time_zone.name;
        Some(crate::views::BudgetView::new(ds, grant, zone, spent, all))
    }

    /// `operator`'s budget on every dataset granted to it at `at`, one per scenario.
    pub fn budgets_for(
        &self,
        operator: &OperatorId,
        at: std::time::SystemTime,
    ) -> Vec<crate::views::BudgetView> {
        self.policy
            .grants_of(operator, at)
            .into_iter()
            .filter_map(|(g, d)| self.budget_for(operator, &d.id, g.scenario.as_deref(), "", at))
            .collect()
    }

    /// Validates `sql` for `asker` and returns the validated query, the dataset and the grant that
    /// allows it, without charging or running anything: parse, resolve the dataset, refuse hidden
    /// columns, plan, validate, check constants.
    pub async fn prepare(
        &self,
        asker: &Asker,
        sql: &str,
    ) -> Result<(ValidatedQuery, Cow<'_, Registered>, &Grant), QueryError> {
        let statement = parse(sql)?;
        let state = planning_state(self.catalog.planning.state(), asker.rows.as_deref())?;
        let (registered, grant, lookup) = self.resolve(asker, &state, &statement)?;
        registered
            .check_unchanged()
            .map_err(QueryError::NotGranted)?;
        refuse_hidden(&statement, registered)?;
        let key = plans::ValidatedKey::new(sql, &registered.policy, grant, asker.rows.as_deref());
        let q = match self.plans.validated(&key) {
            Some(q) => q,
            None => {
                let plan = state
                    .statement_to_plan(statement)
                    .await
                    .map_err(|e| plan_error(&e, &registered.policy))?;
                let mut q = validate::validate(
                    &plan,
                    &registered.policy,
                    &grant.aggregations,
                    lookup,
                    asker.rows.as_ref(),
                )?;
                q.submitted = sql.to_string();
                // After validation, whose refusals say more about the query; both come before
                // the charge.
                constants::check(&plan)?;
                self.plans.keep_validated(key, &q);
                q
            }
        };
        if let (Some(column), None) = (q.selected().first(), grant.delta_per_query) {
            return Err(QueryError::NotGranted(format!(
                "column `{column}` has no public value domain: its values are released only by DP partition selection, which spends δ, and the grant of operator `{}` on dataset `{}` allows no δ (delta_per_query)",
                asker.operator, registered.policy.id
            )));
        }
        if q.row_calls.is_empty() {
            return Ok((q, Cow::Borrowed(registered), grant));
        }
        if !grant.row_functions {
            return Err(QueryError::NotGranted(format!(
                "the grant of operator `{}` on dataset `{}` does not allow row functions (`row_functions = true` in the grant)",
                asker.operator, registered.policy.id
            )));
        }
        // The computed columns are bounded columns of this query's view of the dataset.
        let mut with_rows = registered.clone();
        with_rows
            .policy
            .columns
            .extend(q.row_calls.iter().map(validate::RowCall::column));
        Ok((q, Cow::Owned(with_rows), grant))
    }

    /// The dataset a statement reads (with at most one public lookup joined), if the job
    /// declared it and the operator's grant allows it.
    fn resolve(
        &self,
        asker: &Asker,
        state: &datafusion::execution::SessionState,
        statement: &Statement,
    ) -> Result<(&Registered, &Grant, Option<&LoadedLookup>), QueryError> {
        let refs = state
            .resolve_table_references(statement)
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
            // The operator may see its own datasets' names, so a near miss among them is named.
            let granted: Vec<String> = self
                .policy
                .granted_datasets(&asker.operator, asker.at)
                .iter()
                .map(|d| d.id.to_string())
                .collect();
            QueryError::NotGranted(format!(
                "dataset `{name}` is not granted to operator `{}`{}",
                asker.operator,
                did_you_mean(name, &granted)
            ))
        };
        // A name that cannot be a dataset's is granted to no one: the same answer as any other.
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
            .authorize_in(&asker.operator, &id, asker.scenario.as_deref(), asker.at)
            .map_err(|d| QueryError::NotGranted(d.to_string()))?;
        let registered = self.catalog.get(&id).ok_or_else(not_granted)?;
        Ok((registered, grant, lookup))
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
        let (q, prepared, grant) = self.prepare(asker, sql).await?;
        let registered: &Registered = &prepared;
        let ds = &registered.policy;
        let d = Design::new(&q, ds, grant);
        let amount = d.solve(&q, ds, budget)?;
        let accuracy = q
            .outputs
            .iter()
            .filter_map(|(name, src)| match src {
                OutputSource::Agg(a) => Some((name.clone(), d.accuracy(&q, *a, amount.value))),
                OutputSource::Key(_) => None,
            })
            .collect();
        Ok(Estimate {
            dataset: ds.id.to_string(),
            epsilon: amount.epsilon(),
            rho: amount.rho(),
            delta: if q.selected().is_empty() {
                0.0
            } else {
                grant.delta_per_query.unwrap_or(0.0)
            },
            accuracy,
            releases: d.releases.len(),
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
        if result.is_err() {
            self.accountant.refused(&asker.operator);
        }
        if let Some(ms) = bucket.filter(|_| self.pad_response_time) {
            let bucket = Duration::from_millis(u64::from(ms));
            let elapsed = started.elapsed();
            let buckets = elapsed.as_nanos().div_ceil(bucket.as_nanos()).max(1);
            let target = bucket.saturating_mul(u32::try_from(buckets).unwrap_or(u32::MAX));
            tokio::time::sleep(target.saturating_sub(elapsed)).await;
        }
        result
    }

    /// One answer, stage by stage as in the design's data flow: admit and validate, design,
    /// solve the budget, look in the cache, calibrate, charge, execute, release, describe.
    async fn answer(
        &self,
        asker: &Asker,
        sql: &str,
        budget: Budget,
        bucket: &mut Option<u32>,
    ) -> Result<(NoisyTable, QueryRecord), QueryError> {
        budget.check()?;
        let (q, prepared, grant) = self.prepare(asker, sql).await?;
        let registered: &Registered = &prepared;
        let ds = &registered.policy;
        *bucket = ds.response_time_bucket_ms;
        let design = Design::new(&q, ds, grant);
        let amount = design.solve(&q, ds, budget)?;
        let key = cache_key(asker, registered, grant, &q, amount);
        if let Some(hit) = self.cached(&key, asker, registered, &q, sql) {
            return Ok(hit);
        }
        let calibrated = Calibrated::new(design, amount, grant)?;
        let placement = self.catalog.placement(&ds.id, q.local_only());
        if let Some(remote) = placement.remote
            && !remote.reachable().await
        {
            // Known before the charge: nothing is spent on a query that cannot run.
            tracing::warn!(
                "{} does not accept connections; a query on `{}` is refused before its charge",
                remote.name,
                ds.id
            );
            return Err(QueryError::ExecutionFailed);
        }
        let engine = placement.engine;
        let charged = accountant::charge(
            &*self.accountant,
            &calibrated.charge(asker, registered, grant, &q, engine),
        )
        .map_err(|e| match e {
            BudgetError::Suspended(_) => QueryError::NotGranted(e.to_string()),
            _ => QueryError::BudgetExhausted(e.to_string()),
        })?;
        let truth = self
            .execute(&q, registered, &calibrated.design.releases, &charged)
            .await?;
        let settled = accountant::settle(&*self.accountant, charged)
            .map_err(after_charge(QueryError::ExecutionFailed))?;
        let released = release::release(&q, &calibrated, &truth, grant.min_group_count, &settled)?;
        let mechanism = describe::describe(&calibrated, &q, ds, grant.min_group_count);
        let cost = PrivacyCost {
            epsilon: calibrated.amount.epsilon(),
            delta: calibrated.delta,
            rho: calibrated.amount.rho(),
        };
        let table = NoisyTable {
            columns: q.outputs.iter().map(|(n, _)| n.clone()).collect(),
            key_columns: q
                .outputs
                .iter()
                .take_while(|(_, s)| matches!(s, OutputSource::Key(_)))
                .count(),
            rows: released.rows,
            accuracy: released.accuracy,
            cost,
            mechanism,
        };
        if let Some(c) = &self.cache {
            c.store(&key, &table);
        }
        let record = record(registered, &q, sql, &table, engine);
        Ok((table, record))
    }

    /// The stored answer to an identical query, at no charge.
    fn cached(
        &self,
        key: &cache::CacheKey,
        asker: &Asker,
        registered: &Registered,
        q: &ValidatedQuery,
        sql: &str,
    ) -> Option<(NoisyTable, QueryRecord)> {
        let mut table = self.cache.as_ref()?.lookup(key, &asker.job)?;
        table.cost = PrivacyCost::default();
        table.mechanism = format!(
            "identical to an earlier answer to the same query (returned from the cache, no charge); {}",
            table.mechanism
        );
        let record = record(registered, q, sql, &table, CACHE_ENGINE);
        Some((table, record))
    }
}

/// The state a query is planned in: the planning context's, with the asking job's row
/// functions as planning-only scalar functions (refused if one is named like a SQL function).
fn planning_state(
    state: datafusion::execution::SessionState,
    rows: Option<&crate::rows::RowModule>,
) -> Result<datafusion::execution::SessionState, QueryError> {
    let Some(rows) = rows else {
        return Ok(state);
    };
    let mut state = state;
    for f in rows.functions() {
        let taken = state.scalar_functions().contains_key(&f.name)
            || state.aggregate_functions().contains_key(&f.name)
            || state.window_functions().contains_key(&f.name);
        if taken {
            return Err(QueryError::InvalidSql(format!(
                "the job's row function `{}` has the name of a SQL function; rename it",
                f.name
            )));
        }
        datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(udf::RowPlanning::udf(f)),
        )
        .map_err(|e| QueryError::InvalidSql(first_line(&e.to_string())))?;
    }
    Ok(state)
}

/// One SELECT statement, bounded in size and shape before it is parsed.
fn parse(sql: &str) -> Result<Statement, QueryError> {
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
        .map_err(|e| QueryError::InvalidSql(parser_message(&e.to_string(), sql)))?;
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
    Ok(statement)
}

/// Hidden columns are refused by name wherever they appear, even where planning would fail for
/// another reason first (e.g. AVG over a text column).
fn refuse_hidden(statement: &Statement, registered: &Registered) -> Result<(), QueryError> {
    let Statement::Statement(inner) = statement else {
        return Ok(());
    };
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
    match hidden {
        Some(name) => Err(validate::hidden_column(&registered.policy, &name)),
        None => Ok(()),
    }
}

/// Maps a failure after the charge to `public`, logging its cause at debug level on the
/// `sluice::sensitive` target only: a DataFusion or sampling error can quote data, so it never
/// reaches a job or an operator, and the broker's default log level (warn) does not emit it.
pub(crate) fn after_charge<E: std::fmt::Display>(
    public: QueryError,
) -> impl FnOnce(E) -> QueryError {
    move |cause| {
        tracing::debug!(target: "sluice::sensitive", "{public}: {cause}");
        public
    }
}

/// What identifies a repeat of this query: dataset version (with its joined lookup), normalized
/// plan, amount and the grant's release terms. Not the operator: a repeat is no new release of
/// the data, whoever asks.
fn cache_key(
    asker: &Asker,
    registered: &Registered,
    grant: &Grant,
    q: &ValidatedQuery,
    amount: Amount,
) -> cache::CacheKey {
    cache::CacheKey {
        operator: asker.operator.to_string(),
        dataset: registered.policy.id.to_string(),
        // A joined lookup is part of the data version.
        dataset_hash: match &q.lookup {
            Some(j) => format!("{}+{}", registered.content_hash, j.content_hash),
            None => registered.content_hash.clone(),
        },
        normalized: q.normalized.clone(),
        amount,
        terms: format!(
            "min_group_count={:?};delta_per_query={:?}",
            grant.min_group_count, grant.delta_per_query
        ),
    }
}

/// The record of one answer, for logs and audit.
/// The engine a cached answer's record names: no engine ran the query again.
pub const CACHE_ENGINE: &str = "answer cache";

fn record(
    registered: &Registered,
    q: &ValidatedQuery,
    sql: &str,
    table: &NoisyTable,
    engine: &str,
) -> QueryRecord {
    let cached = engine == CACHE_ENGINE;
    let accuracy = (table.key_columns..table.columns.len())
        .map(|c| ColumnAccuracy {
            column: table.columns[c].clone(),
            half_width_95: table
                .accuracy
                .iter()
                .filter_map(|row| row.get(c).copied().flatten())
                .reduce(f64::max),
        })
        .collect();
    QueryRecord {
        dataset: registered.policy.id.to_string(),
        dataset_hash: registered.content_hash.clone(),
        normalized: q.normalized.clone(),
        submitted: sql.to_string(),
        cost: table.cost,
        cached,
        cells: table
            .rows
            .iter()
            .flat_map(|row| row.iter().skip(table.key_columns))
            .filter(|v| !matches!(v, crate::report::Value::Null))
            .count() as u64,
        accuracy,
        row_functions: q
            .row_calls
            .iter()
            .map(validate::RowCall::describe)
            .collect(),
        engine: engine.to_string(),
    }
}

/// `; did you mean `x`?` for the candidate nearest to `name` when it is a near miss (at most
/// two edits, and fewer than a third of the name's letters), else nothing.
fn did_you_mean(name: &str, candidates: &[String]) -> String {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    let lower = name.to_lowercase();
    candidates
        .iter()
        .map(|c| (distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d > 0 && *d <= 2 && *d * 3 < name.chars().count().max(3))
        .min()
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// sqlparser's error without its wrapper (`SQL error: ParserError("…")`), with the line of the
/// query it points at and a caret under the column.
fn parser_message(error: &str, sql: &str) -> String {
    let inner = error
        .split_once("ParserError(\"")
        .or_else(|| error.split_once("TokenizerError(\""))
        .map_or(error, |(_, rest)| rest.trim_end_matches("\")"));
    let inner = first_line(inner);
    let Some((message, place)) = inner.rsplit_once(" at Line: ") else {
        return inner;
    };
    let mut numbers = place
        .split(", Column: ")
        .map(|n| n.trim().parse::<usize>().ok());
    let (Some(Some(line)), Some(Some(column))) = (numbers.next(), numbers.next()) else {
        return inner;
    };
    let Some(text) = sql.lines().nth(line.saturating_sub(1)) else {
        return inner;
    };
    // Tabs keep the caret aligned; control characters of the query are not echoed.
    let shown: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    let pad: String = shown
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!("{message} (line {line}, column {column})\n    {shown}\n    {pad}^")
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
        let public: Vec<String> = ds
            .public_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        return QueryError::ColumnDenied(format!(
            "unknown column `{}` in dataset `{}`{}; public columns are: {}",
            field.name,
            ds.id,
            did_you_mean(&field.name, &public),
            public.join(", ")
        ));
    }
    QueryError::InvalidSql(first_line(&e.to_string()))
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

impl Budget {
    /// Refuses an ε or ρ outside what one query may spend, before the query is looked at.
    fn check(self) -> Result<(), QueryError> {
        match self {
            Self::Epsilon(e) => design::check_epsilon(e),
            Self::Rho(r) => design::check_rho(r),
            Self::Accuracy(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod parser_message_tests {
    use super::*;

    #[test]
    fn near_misses_are_named_and_far_ones_are_not() {
        let names = ["health_visits".to_string(), "tourism_trips".to_string()];
        assert_eq!(
            did_you_mean("helth_visits", &names),
            "; did you mean `health_visits`?"
        );
        assert_eq!(did_you_mean("visits", &names), "");
        assert_eq!(did_you_mean("health_visits", &names), "");
        assert_eq!(did_you_mean("ag", &["age".to_string()]), "");
    }

    #[test]
    fn a_parse_error_points_at_its_place() {
        let sql = "SELECT district, COUNT(*) AS n\nFROM health_visits GROUP district";
        let e = parse(sql).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "invalid SQL: Expected: end of statement, found: GROUP (line 2, column 20)\n"
            ),
            "{e}"
        );
        assert!(
            e.ends_with(&format!(
                "\n    FROM health_visits GROUP district\n    {}^",
                " ".repeat(19)
            )),
            "{e:?}"
        );
        // Without a place, the message alone.
        assert_eq!(parser_message("plain", "x"), "plain");
    }
}
