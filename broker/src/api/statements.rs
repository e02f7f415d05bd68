//! Signed monthly statements: what a holder's datasets were used for and earned, and the
//! matching invoice view for an operator ([`crate::statements`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::auth::Auth;
use super::{ApiResult, first_line};
use crate::audit::NewEntry;
use crate::error::{ApiError, ErrorCode};
use crate::server::{Shared, current};
use crate::statements::{Party, Statement};
use crate::store::Role;

/// `GET /v1/statements/{holders|operators}/{party}/{month}`: a signed statement for one month
/// (a holder its own, an operator its own; admins and auditors any). Each one issued is an
/// audit entry naming its sha256.
#[utoipa::path(
    get, path = "/v1/statements/{kind}/{party}/{month}", tag = "statements",
    params(
        ("kind" = String, Path, description = "`holders` or `operators`"),
        ("party" = String, Path, description = "The holder id or operator id"),
        ("month" = String, Path, description = "`YYYY-MM`, in the policy's time zone, or `current`: this month there"),
    ),
    responses((status = 200, description = "The signed statement", body = Statement))
)]
pub(crate) async fn statement(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    Path((kind, party, month)): Path<(String, String, String)>,
) -> ApiResult<Json<Statement>> {
    let party = match kind.as_str() {
        "holders" => Party::Holder(&party),
        "operators" => Party::Operator(&party),
        _ => {
            return Err(ApiError::not_found(
                "statements are for holders/<id> or operators/<id>",
            ));
        }
    };
    let own = match (auth.0.role, party) {
        (Role::Admin | Role::Auditor, _) => true,
        (Role::Holder, Party::Holder(h)) | (Role::Operator, Party::Operator(h)) => h == auth.0.name,
        _ => false,
    };
    if !own {
        return Err(ApiError::forbidden(format!(
            "the {} role reads its own statement only (admins and auditors read any)",
            auth.0.role.as_str()
        )));
    }
    // `current` is this month in the policy's zone: a browser's own month can differ from it
    // (it is 1 December in Shanghai from 16:00 UTC on 30 November).
    let month = match month.as_str() {
        "current" => crate::statements::month_at(
            crate::audit::now_ms(),
            &current(&s).sandbox.engine().policy().time_zone,
        ),
        _ => month,
    };
    // A month that does not parse is the caller's; any other failure is the broker's.
    crate::statements::month_bounds(&month, 0)
        .map_err(|e| ApiError::new(ErrorCode::BadQuery, first_line(&e.to_string())))?;
    let statement = {
        let cur = current(&s);
        crate::statements::statement(
            &s.store,
            cur.sandbox.engine().policy(),
            &cur.policy_sha256,
            party,
            &month,
        )
    }
    .map_err(ApiError::internal)?;
    let mut entry = NewEntry::new("statement.issued", &auth.0.name).detail(serde_json::json!({
        "kind": statement.kind,
        "party": statement.party,
        "month": statement.month,
        "fee_fen": statement.totals.used.fee_fen,
        "signature": statement.signature,
    }));
    if let Party::Operator(o) = party {
        entry = entry.operator(o);
    }
    s.store.record(entry)?;
    Ok(Json(statement))
}
