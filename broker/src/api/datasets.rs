//! What an operator may look at before spending: the datasets granted to them, their budgets,
//! and cost estimates. The views come from the runtime ([`sluice_runtime::views`]), which a
//! job's own `budget` call shows too.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use sluice_runtime::views::{BudgetView, DatasetView, LookupView};
use sluice_runtime::{Budget, Estimate, QueryError};

use super::auth::{Auth, Only, Operators};
use super::{ApiResult, JsonBody, first_line};
use crate::error::{ApiError, ErrorCode};
use crate::server::{Shared, current};
use crate::store::Role;

/// The datasets a caller may see, and every lookup table.
#[derive(Serialize)]
pub(crate) struct Datasets {
    datasets: Vec<DatasetView>,
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
pub(crate) async fn list(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Datasets>> {
    // Lookup tables are public reference data: every caller may see them, values included.
    let lookups = current(&s).sandbox.engine().lookups();
    Ok(Json(Datasets {
        datasets: visible_datasets(&s, &auth),
        lookups,
    }))
}

/// `GET /v1/datasets/{name}`.
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
#[derive(Serialize)]
pub(crate) struct Budgets {
    operator: String,
    budgets: Vec<BudgetView>,
}

/// `GET /v1/budget`.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EstimateBody {
    sql: String,
    epsilon: Option<f64>,
    rho: Option<f64>,
    accuracy: Option<f64>,
}

/// `POST /v1/estimate`: what a query would cost and how accurate it would be; charges nothing.
pub(crate) async fn estimate(
    State(s): State<Arc<Shared>>,
    auth: Only<Operators>,
    JsonBody(r): JsonBody<EstimateBody>,
) -> ApiResult<Json<Estimate>> {
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
    // Planning runs on the sandbox's own threads, whose stack is known.
    let answer = tokio::task::spawn_blocking(move || {
        let asker = sluice_runtime::privacy::Asker::new(op, "estimate");
        current(&s2).sandbox.estimate(asker, r.sql, budget)
    })
    .await
    .map_err(ApiError::internal)?;
    match answer {
        Ok(e) => Ok(Json(e)),
        Err(e @ QueryError::NotGranted(_)) => Err(ApiError::forbidden(e.to_string())),
        Err(e) => Err(ApiError::new(ErrorCode::QueryRefused, e.to_string())),
    }
}
