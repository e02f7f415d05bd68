//! Who is asking: the bearer-token extractor, the middleware that audits denials, and the
//! request timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_policy::OperatorId;

use super::ApiResult;
use crate::audit::NewEntry;
use crate::error::{ApiError, ErrorCode};
use crate::server::Shared;
use crate::store::{Principal, Role};

/// The authenticated caller.
pub(crate) struct Auth(pub(crate) Principal);

impl FromRequestParts<Arc<Shared>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> ApiResult<Self> {
        let unauthorized = || {
            ApiError::new(
                ErrorCode::Unauthorized,
                "a valid bearer token is required (Authorization: Bearer <token>)",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let p = s
            .store
            .authenticate(token.trim())?
            .ok_or_else(unauthorized)?;
        Ok(Auth(p))
    }
}

/// Roles an endpoint serves.
pub(crate) trait Allowed: Send + Sync {
    /// The roles.
    const ROLES: &'static [Role];
}

/// Operators only.
pub(crate) struct Operators;
impl Allowed for Operators {
    const ROLES: &'static [Role] = &[Role::Operator];
}

/// The platform's admins only.
pub(crate) struct Admins;
impl Allowed for Admins {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Reviewers only.
pub(crate) struct Reviewers;
impl Allowed for Reviewers {
    const ROLES: &'static [Role] = &[Role::Reviewer];
}

/// Reviewers, admins and auditors: who read objections (holders see their outcome on the
/// credit records).
pub(crate) struct Moderators;
impl Allowed for Moderators {
    const ROLES: &'static [Role] = &[Role::Reviewer, Role::Admin, Role::Auditor];
}

/// Reviewers and holders: the two who approve jobs.
pub(crate) struct Approvers;
impl Allowed for Approvers {
    const ROLES: &'static [Role] = &[Role::Reviewer, Role::Holder];
}

/// Admins and holders (holders act on their own datasets only).
pub(crate) struct Custodians;
impl Allowed for Custodians {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Holder];
}

/// Reviewers, admins, holders and auditors (holders read what concerns their own datasets
/// only).
pub(crate) struct Overseers;
impl Allowed for Overseers {
    const ROLES: &'static [Role] = &[Role::Reviewer, Role::Admin, Role::Holder, Role::Auditor];
}

/// Admins, holders and auditors: who watch spending, alerts and filings (holders their own
/// datasets' only).
pub(crate) struct Watchers;
impl Allowed for Watchers {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Holder, Role::Auditor];
}

/// Admins and auditors: who read the platform's state as a whole.
pub(crate) struct Inspectors;
impl Allowed for Inspectors {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Auditor];
}

/// Reviewers, holders and auditors: who read the review queue.
pub(crate) struct QueueReaders;
impl Allowed for QueueReaders {
    const ROLES: &'static [Role] = &[Role::Reviewer, Role::Holder, Role::Auditor];
}

/// An authenticated caller in one of `R`'s roles. As an extractor it runs before the body is
/// read, so a caller of another role is refused before anything they sent is looked at.
pub(crate) struct Only<R> {
    auth: Auth,
    _roles: std::marker::PhantomData<R>,
}

impl<R> std::ops::Deref for Only<R> {
    type Target = Auth;
    fn deref(&self) -> &Auth {
        &self.auth
    }
}

impl<R: Allowed> FromRequestParts<Arc<Shared>> for Only<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> ApiResult<Self> {
        let auth = Auth::from_request_parts(parts, s).await?;
        auth.require(R::ROLES)?;
        Ok(Self {
            auth,
            _roles: std::marker::PhantomData,
        })
    }
}

impl Auth {
    /// For a holder's token, the datasets it holds under `policy`; `None` for every other role
    /// (which this scoping does not restrict).
    pub(crate) fn held(&self, policy: &sluice_policy::Policy) -> Option<Vec<String>> {
        (self.0.role == Role::Holder).then(|| {
            policy
                .held_by(&self.0.name)
                .map(|d| d.id.to_string())
                .collect()
        })
    }

    /// Refuses a holder acting on a dataset it does not hold (403, audited like every denial).
    pub(crate) fn may_act_on(
        &self,
        policy: &sluice_policy::Policy,
        dataset: &str,
    ) -> ApiResult<()> {
        match self.held(policy) {
            Some(held) if !held.iter().any(|d| d == dataset) => Err(ApiError::forbidden(format!(
                "dataset `{}` is not held by `{}`",
                super::first_line(dataset),
                self.0.name
            ))),
            _ => Ok(()),
        }
    }

    /// The caller as an operator id.
    pub(crate) fn operator(&self) -> ApiResult<OperatorId> {
        self.0.name.parse().map_err(|e| {
            ApiError::forbidden(format!("this principal is not a valid operator id: {e}"))
        })
    }

    /// Refuses callers of any other role.
    pub(crate) fn require(&self, roles: &[Role]) -> ApiResult<()> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                self.0.role.as_str()
            )))
        }
    }
}

/// Records 401 and 403 answers in the audit log, aggregated per source ([`crate::denials`]), and
/// counts requests.
pub(crate) async fn audit_denials(
    State(s): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = crate::denials::capped_path(req.uri().path());
    let address = req
        .extensions()
        .get::<crate::listener::Peer>()
        .map(|p| p.0.ip());
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    s.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    let status = resp.status();
    let hidden = resp
        .extensions()
        .get::<crate::error::AuditAsDenial>()
        .is_some();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN && !hidden {
        return resp;
    }
    s.metrics.denials.fetch_add(1, Ordering::Relaxed);
    // Only denials need to know who asked: a successful request is not looked up twice.
    let who = token.and_then(|t| s.store.authenticate(&t).ok().flatten());
    let source = crate::denials::Source {
        address,
        principal: who
            .as_ref()
            .map_or("anonymous".to_string(), |p| p.name.clone()),
    };
    let now = Instant::now();
    let (note, repeated) = {
        let mut log = s.denials.lock().unwrap_or_else(|p| p.into_inner());
        let repeated = log.expired(now, false);
        (log.note(source.clone(), &path, now), repeated)
    };
    let mut entries: Vec<NewEntry> = repeated.iter().map(repeated_entry).collect();
    if note == crate::denials::Note::Record {
        let mut e = NewEntry::new("access.denied", &source.principal).detail(json!({
            "status": status.as_u16(),
            "method": method.as_str(),
            "path": path,
            "role": who.as_ref().map(|p| p.role.as_str()),
            "source": address.map(|a| a.to_string()),
        }));
        if let Some(p) = &who
            && p.role == Role::Operator
        {
            e = e.operator(&p.name);
        }
        entries.push(e);
    }
    for e in entries {
        if let Err(err) = s.store.record(e) {
            tracing::error!("cannot audit a denial: {err:#}");
            return ApiError::internal("audit log unavailable").into_response();
        }
    }
    resp
}

/// The audit entry for denials counted after a window's first.
pub(crate) fn repeated_entry(r: &crate::denials::Repeated) -> NewEntry {
    NewEntry::new("access.denied.repeated", &r.source.principal).detail(json!({
        "count": r.count,
        "window_secs": r.window_secs,
        "sample_paths": r.sample_paths,
        "source": r.source.address.map(|a| a.to_string()),
    }))
}

/// Answers `timeout` when a request takes longer than the configured limit.
pub(crate) async fn timeout(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    // A submission compiles its job before it answers.
    let submitting = req.method() == axum::http::Method::POST && req.uri().path() == "/v1/jobs";
    let secs = if submitting {
        s.config
            .submit_timeout_secs
            .max(s.config.request_timeout_secs)
    } else {
        s.config.request_timeout_secs
    };
    let limit = Duration::from_secs(secs.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Who a token belongs to: what the console shows and which of its pages it offers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    /// The principal's name (an operator id, a holder, a reviewer...).
    principal: String,
    /// `operator`, `reviewer`, `holder`, `admin` or `auditor`.
    role: &'static str,
    /// For a holder: the datasets it holds under the policy in force.
    holds: Vec<String>,
}

/// `GET /v1/me`: the caller's principal and role (any valid token).
#[utoipa::path(
    get, path = "/v1/me", tag = "meta",
    responses((status = 200, description = "The caller", body = Me))
)]
pub(crate) async fn me(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<axum::Json<Me>> {
    let holds = auth
        .held(crate::server::current(&s).sandbox.engine().policy())
        .unwrap_or_default();
    Ok(axum::Json(Me {
        role: auth.0.role.as_str(),
        principal: auth.0.name,
        holds,
    }))
}
