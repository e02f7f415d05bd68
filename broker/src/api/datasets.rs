//! What an operator may look at before spending: the datasets granted to them, their budgets,
//! and cost estimates. The views come from the runtime ([`sluice_runtime::views`]), which a
//! job's own `budget` call shows too.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use sluice_runtime::views::{BudgetView, DatasetView, LookupView};
use sluice_runtime::{Budget, Estimate, QueryError};

use super::auth::{Auth, Only, Operators, Overseers};
use super::{ApiResult, JsonBody, QueryString, first_line};
use crate::error::{ApiError, ErrorCode};
use crate::server::{Shared, current};
use crate::store::Role;

/// The datasets a caller may see, and every lookup table.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Datasets {
    /// Each dataset as `sluice datasets --json` shows it (columns, bounds, grade, caps).
    #[schema(value_type = Vec<Object>)]
    datasets: Vec<DatasetView>,
    /// Public lookup tables, with their values.
    #[schema(value_type = Vec<Object>)]
    lookups: Vec<LookupView>,
}

/// Operators see the datasets granted to them today; staff see every dataset.
fn visible_datasets(s: &Shared, auth: &Auth) -> Vec<DatasetView> {
    let cur = current(s);
    let engine = cur.sandbox.engine();
    match auth.0.role {
        Role::Operator => match auth.0.name.parse() {
            Ok(op) => engine.datasets_for(&op, std::time::SystemTime::now()),
            Err(_) => vec![],
        },
        Role::Holder => engine
            .policy()
            .held_by(&auth.0.name)
            .map(|d| DatasetView::of(d, engine.policy()))
            .collect(),
        Role::Reviewer | Role::Admin | Role::Auditor => engine
            .policy()
            .datasets
            .values()
            .map(|d| DatasetView::of(d, engine.policy()))
            .collect(),
    }
}

/// `GET /v1/datasets`.
#[utoipa::path(
    get, path = "/v1/datasets", tag = "datasets", operation_id = "list_datasets",
    responses((status = 200, description = "The datasets the caller may see, and every lookup table", body = Datasets))
)]
pub(crate) async fn list(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Datasets>> {
    // Lookup tables are public reference data: every caller may see them, values included.
    let lookups = current(&s).sandbox.engine().lookups();
    Ok(Json(Datasets {
        datasets: visible_datasets(&s, &auth),
        lookups,
    }))
}

/// `GET /v1/datasets/{name}`.
#[utoipa::path(
    get, path = "/v1/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "A dataset's name in the policy")),
    responses((status = 200, description = "One dataset", body = Object))
)]
pub(crate) async fn one(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<DatasetView>> {
    visible_datasets(&s, &auth)
        .into_iter()
        .find(|d| d.name == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::forbidden(format!(
                "dataset `{}` is not granted to `{}`",
                first_line(&name),
                auth.0.name
            ))
        })
}

/// An operator's budgets, one per dataset granted today.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Budgets {
    operator: String,
    /// One per dataset (and scenario) granted today: caps, spent and remaining this period.
    #[schema(value_type = Vec<Object>)]
    budgets: Vec<BudgetView>,
}

/// `GET /v1/budget`.
#[utoipa::path(
    get, path = "/v1/budget", tag = "datasets",
    responses((status = 200, description = "The operator's budgets", body = Budgets))
)]
pub(crate) async fn budget(
    State(s): State<Arc<Shared>>,
    auth: Only<Operators>,
) -> ApiResult<Json<Budgets>> {
    let op = auth.operator()?;
    let cur = current(&s);
    let engine = cur.sandbox.engine();
    let budgets = engine.budgets_for(&op, std::time::SystemTime::now());
    Ok(Json(Budgets {
        operator: op.to_string(),
        budgets,
    }))
}

/// How many days of spending `GET /v1/datasets/{name}/spend` covers.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpendQuery {
    /// Days back from today (UTC), 1 to 366; the dataset-wide cap's period when left out (30
    /// days where the dataset has none).
    days: Option<u32>,
}

/// A dataset's spending by day and operator: what a burn-down chart is drawn from.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DatasetSpending {
    dataset: String,
    /// `epsilon` or `rho`: the measure the dataset is charged in.
    measure: &'static str,
    /// The dataset-wide cap per period, in `measure`, if the policy sets one.
    cap_per_period: Option<f64>,
    /// The cap's period, in seconds.
    period_secs: Option<u64>,
    /// The first day covered, `YYYY-MM-DD` (UTC).
    since: String,
    /// Spending per day and operator, oldest first (days without charges are left out).
    days: Vec<crate::store::DailySpend>,
}

/// `GET /v1/datasets/{name}/spend?days=`: every operator's spending on a dataset, by day
/// (reviewers, admins, auditors, and the dataset's holder). Spending is the ledger's, not data:
/// no figure here is derived from a row.
#[utoipa::path(
    get, path = "/v1/datasets/{name}/spend", tag = "datasets", params(("name" = String, Path, description = "A dataset's name in the policy"), SpendQuery),
    responses((status = 200, description = "Spending by day and operator", body = DatasetSpending))
)]
pub(crate) async fn spend(
    State(s): State<Arc<Shared>>,
    auth: Only<Overseers>,
    Path(name): Path<String>,
    QueryString(q): QueryString<SpendQuery>,
) -> ApiResult<Json<DatasetSpending>> {
    let view = {
        let cur = current(&s);
        let policy = cur.sandbox.engine().policy();
        auth.may_act_on(policy, &name)?;
        sluice_policy::DatasetId::new(&name)
            .ok()
            .and_then(|id| policy.datasets.get(&id))
            .map(|d| DatasetView::of(d, policy))
            .ok_or_else(|| {
                ApiError::not_found(format!("no dataset `{}` in the policy", first_line(&name)))
            })?
    };
    let days = match q.days {
        Some(d @ 1..=366) => i64::from(d),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::BadQuery,
                "days is a whole number from 1 to 366",
            ));
        }
        None => view
            .dataset_period_secs
            .map_or(30, |p| (p.div_ceil(86_400) as i64).clamp(1, 366)),
    };
    let today = crate::audit::now_ms().div_euclid(86_400_000);
    let first_day = today - days + 1;
    Ok(Json(DatasetSpending {
        measure: if view.privacy_measure == "zcdp" {
            "rho"
        } else {
            "epsilon"
        },
        cap_per_period: view.dataset_cap_per_period,
        period_secs: view.dataset_period_secs,
        since: sluice_policy::Date::from_days_since_epoch(first_day).to_string(),
        days: s.store.daily_spend(&name, first_day * 86_400_000)?,
        dataset: view.name,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EstimateBody {
    sql: String,
    epsilon: Option<f64>,
    rho: Option<f64>,
    accuracy: Option<f64>,
}

/// An estimate beside what the operator's grant still allows.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct EstimateAnswer {
    /// The estimate: `dataset`, `epsilon`, `rho`, `delta`, `accuracy` (column, 95% half-width)
    /// pairs and `releases`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    estimate: Estimate,
    /// The estimate against the grant's per-job cap and what is left this period (absent when
    /// the operator holds several scenarios on the dataset: the job names one).
    budget: Option<BudgetCheck>,
}

/// How an estimated cost compares with the grant.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BudgetCheck {
    /// `epsilon` or `rho`: the measure both figures are in.
    unit: &'static str,
    /// The grant's per-job cap.
    per_job: f64,
    /// What can still be spent this period (the smaller of the grant's and the dataset's).
    available_this_period: f64,
    /// How far the cost is above the per-job cap (0 when within).
    over_per_job: f64,
    /// How far the cost is above what is left this period (0 when within).
    over_period: f64,
}

impl BudgetCheck {
    fn of(e: &Estimate, v: &sluice_runtime::views::BudgetView) -> Self {
        let zcdp = v.privacy_measure == "zcdp";
        let (unit, cost, per_job) = if zcdp {
            ("rho", e.rho, v.rho_per_job)
        } else {
            ("epsilon", e.epsilon, v.epsilon_per_job)
        };
        Self {
            unit,
            per_job,
            available_this_period: v.available_this_period,
            over_per_job: (cost - per_job).max(0.0),
            over_period: (cost - v.available_this_period).max(0.0),
        }
    }
}

/// `POST /v1/estimate`: what a query would cost and how accurate it would be, and how that
/// compares with what the grant still allows; charges nothing.
#[utoipa::path(
    post, path = "/v1/estimate", tag = "datasets", request_body = EstimateBody,
    responses((status = 200, description = "Cost and accuracy, no charge", body = EstimateAnswer))
)]
pub(crate) async fn estimate(
    State(s): State<Arc<Shared>>,
    auth: Only<Operators>,
    JsonBody(r): JsonBody<EstimateBody>,
) -> ApiResult<Json<EstimateAnswer>> {
    let budget = match (r.epsilon, r.rho, r.accuracy) {
        (Some(e), None, None) => Budget::Epsilon(e),
        (None, Some(rho), None) => Budget::Rho(rho),
        (None, None, Some(a)) => Budget::Accuracy(a),
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadBudget,
                "give exactly one of epsilon (pure-DP datasets), rho (zCDP datasets) and accuracy (the 95% half-width you need)",
            ));
        }
    };
    let op = auth.operator()?;
    let s2 = s.clone();
    let asking = op.clone();
    // Planning runs on the sandbox's own threads, whose stack is known.
    let answer = tokio::task::spawn_blocking(move || {
        let asker = sluice_runtime::privacy::Asker::new(asking, "estimate");
        current(&s2).sandbox.estimate(asker, r.sql, budget)
    })
    .await
    .map_err(ApiError::internal)?;
    match answer {
        Ok(estimate) => {
            let cur = current(&s);
            let check = sluice_policy::DatasetId::new(&estimate.dataset)
                .ok()
                .and_then(|d| {
                    cur.sandbox
                        .engine()
                        .budget_for(&op, &d, None, "", std::time::SystemTime::now())
                })
                .map(|v| BudgetCheck::of(&estimate, &v));
            Ok(Json(EstimateAnswer {
                estimate,
                budget: check,
            }))
        }
        Err(e @ QueryError::NotGranted(_)) => Err(ApiError::forbidden(e.to_string())),
        Err(e) => Err(ApiError::new(ErrorCode::QueryRefused, e.to_string())),
    }
}
