//! Physical plans kept per query shape, so that a query asked again (by any job, at any ε) skips
//! DataFusion's optimizer and physical planner, which are most of a small query's time; and
//! validated queries kept per SQL text, so that it also skips logical planning and validation.
//!
//! A validated query is a pure function of the SQL, the dataset's policy (the engine's own, fixed
//! for its life) and the grant's aggregations; only validations that succeeded are kept, so every
//! refusal is worked out afresh. Authorization (the grant, the job's declared datasets, the
//! source's stamp, hidden columns) runs on every query before the kept query is looked up.
//!
//! A plan is a pure function of what its key holds: the dataset (one version for the engine's
//! life, with one contribution index), the validated query (filter, keys, lookup join) and the
//! releases (statistics, clamp bounds, fixed-point scales); the policy is the engine's own. It
//! holds no data and no answer: every run executes it afresh, with fresh random choices in
//! contribution bounding, on a copy whose run-time state DataFusion resets
//! (`reset_plan_states`), never on the kept original. A plan with a dynamic filter (a hash
//! join's, pushed into a scan) is not kept, since DataFusion does not support rerunning those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::physical_plan::{ExecutionPlan, displayable};

use super::design::Release;
use super::validate::ValidatedQuery;

/// Plans (and validated queries) kept at most; past that the cache starts afresh (query shapes are few in practice).
const MAX_PLANS: usize = 512;

/// What a kept validated query is the validation of.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ValidatedKey(String);

impl ValidatedKey {
    /// The key of `sql` validated against `ds` under `grant`'s aggregations.
    pub(crate) fn new(
        sql: &str,
        ds: &sluice_policy::Dataset,
        grant: &sluice_policy::Grant,
        rows: Option<&crate::rows::RowModule>,
    ) -> Self {
        let rows = rows.map_or("", |r| r.sha256.as_str());
        Self(format!(
            "{}\n{:?}\n{rows}\n{sql}",
            ds.id, grant.aggregations
        ))
    }
}

/// What a kept plan is the plan of.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey(String);

impl PlanKey {
    /// The key of reader `reader` of `q`'s releases: its canonical plan text and the exact
    /// expressions and releases the rewrite reads (their debug forms, which name every literal).
    pub(crate) fn new(q: &ValidatedQuery, releases: &[Release], reader: usize) -> Self {
        let keys: Vec<_> = q.keys.iter().map(|k| &k.expr).collect();
        let stats: Vec<_> = releases.iter().map(|r| &r.stat).collect();
        Self(format!(
            "{}\n{}\n{:?}\n{:?}\n{:?}\n{:?}\nreader {reader}",
            q.dataset, q.normalized, q.filter, keys, q.lookup, stats
        ))
    }
}

/// The kept plans and validated queries.
#[derive(Default)]
pub(crate) struct PlanCache {
    plans: Mutex<HashMap<PlanKey, Arc<dyn ExecutionPlan>>>,
    validated: Mutex<HashMap<ValidatedKey, ValidatedQuery>>,
}

impl PlanCache {
    /// The validated query kept for `key`.
    pub(crate) fn validated(&self, key: &ValidatedKey) -> Option<ValidatedQuery> {
        lock(&self.validated).get(key).cloned()
    }

    /// Keeps the validation of `key`.
    pub(crate) fn keep_validated(&self, key: ValidatedKey, q: &ValidatedQuery) {
        let mut kept = lock(&self.validated);
        if kept.len() >= MAX_PLANS {
            kept.clear();
        }
        kept.insert(key, q.clone());
    }

    /// The plan kept for `key`.
    pub(crate) fn get(&self, key: &PlanKey) -> Option<Arc<dyn ExecutionPlan>> {
        lock(&self.plans).get(key).cloned()
    }

    /// Keeps `plan` for `key`, unless it cannot be rerun.
    pub(crate) fn insert(&self, key: PlanKey, plan: &Arc<dyn ExecutionPlan>) {
        if !rerunnable(plan.as_ref()) {
            return;
        }
        let mut plans = lock(&self.plans);
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, plan.clone());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether DataFusion supports running `plan` again after resetting its state: not with a
/// dynamic filter.
fn rerunnable(plan: &dyn ExecutionPlan) -> bool {
    !displayable(plan)
        .indent(true)
        .to_string()
        .contains("DynamicFilter")
}
