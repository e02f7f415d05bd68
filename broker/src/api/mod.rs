//! The HTTP API: routes, the typed extractors every handler takes its input through, and the
//! handlers, one module per audience.
//!
//! | module | endpoints |
//! |---|---|
//! | [`jobs`] | submit, list, status, result, receipt, cancel, events (operators; staff read) |
//! | [`datasets`] | datasets, budget, estimate (operators) |
//! | [`plans`] | whole-job plans on mock data (operators; staff for submitted jobs) |
//! | [`reviews`] | the review queue and decisions, the audit log (reviewers) |
//! | [`admin`] | policy reload, suspensions, usage, metrics (holders' admins) |
//! | [`auth`] | the bearer-token extractor, denial auditing and the request timeout |
//!
//! Every input arrives through an extractor that refuses it with one [`ErrorCode`]
//! ([`JsonBody`], [`QueryString`], [`JobId`], [`jobs::Submission`], [`auth::Auth`]); every
//! body is a `Serialize` type, and every error is an [`ApiError`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use crate::server::Shared;
use crate::store::JobId;

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod datasets;
pub(crate) mod jobs;
pub(crate) mod plans;
pub(crate) mod reviews;

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Largest submit body: the largest job as base64 in JSON (4/3 of its bytes) with room for the
/// other fields.
pub(crate) const MAX_SUBMIT_BODY: usize = crate::server::MAX_WASM_BYTES / 3 * 4 + (256 << 10);
/// Largest body of any other request.
pub(crate) const MAX_BODY: usize = 64 << 10;

/// Every route of the API.
pub(crate) fn router(s: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::status))
        .route("/v1/query", post(jobs::query))
        .route("/v1/jobs/{id}/result", get(jobs::result))
        .route("/v1/jobs/{id}/receipt", get(jobs::receipt))
        .route("/v1/jobs/{id}/log", get(jobs::log))
        .route("/v1/jobs/{id}/wasm", get(jobs::wasm))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/datasets", get(datasets::list))
        .route("/v1/datasets/{name}", get(datasets::one))
        .route("/v1/datasets/{name}/spend", get(datasets::spend))
        .route("/v1/budget", get(datasets::budget))
        .route("/v1/estimate", post(datasets::estimate))
        .route("/v1/reviews", get(reviews::pending))
        .route("/v1/reviews/{id}/{decision}", post(reviews::decide))
        .route("/v1/audit", get(reviews::audit_log))
        .route("/v1/audit/verify", get(reviews::audit_verify))
        .route("/v1/receipts/verify", post(reviews::receipt_verify))
        .route("/v1/me", get(auth::me))
        .route("/v1/admin/policy/reload", post(admin::reload))
        .route("/v1/admin/tokens", post(admin::create_token))
        .route("/v1/admin/{action}", post(admin::freeze))
        .route("/v1/admin/{kind}/{name}/{action}", post(admin::suspend))
        .route("/v1/admin/usage", get(admin::usage))
        .route("/v1/admin/alerts", get(admin::alerts))
        .route("/v1/admin/suspensions", get(admin::suspensions))
        .route("/v1/filings", get(admin::filings))
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn_with_state(s.clone(), auth::timeout));
    // Event streams outlive the request timeout.
    let streams = Router::new()
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/admin/alerts/stream", get(admin::alert_stream))
        // A plan runs its job twice, bounded by the job limits rather than the request timeout.
        .route("/v1/plan", post(plans::plan))
        .route("/v1/jobs/{id}/plan", get(plans::of_job))
        .route("/v1/jobs/{id}/risk", get(plans::risk));
    api.merge(streams)
        .merge(crate::console::routes())
        .fallback(|| async {
            ApiError::not_found("no such endpoint; the API lives under /v1 (see docs/operator.md)")
        })
        // Also OPTIONS: the API takes no cross-origin requests, so a preflight gets this too.
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("this endpoint does not take {method}; docs/operator.md lists each endpoint's method"),
            )
        })
        .layer(middleware::from_fn_with_state(
            s.clone(),
            auth::audit_denials,
        ))
        .layer(DefaultBodyLimit::max(MAX_SUBMIT_BODY))
        .layer(middleware::from_fn(crate::console::security_headers))
        .with_state(s)
}

/// A JSON request body (`application/json`, at most [`MAX_BODY`] bytes).
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let (headers, b) = read_body(req, state, MAX_BODY).await?;
        parse_json(&headers, &b).map(JsonBody)
    }
}

/// A JSON request body that may be left out: an empty body is `T::default()`.
pub(crate) struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let (headers, b) = read_body(req, state, MAX_BODY).await?;
        if b.is_empty() {
            return Ok(Self(T::default()));
        }
        parse_json(&headers, &b).map(OptionalJsonBody)
    }
}

/// The query string, parsed into `T` (unknown fields refused where `T` says so).
pub(crate) struct QueryString<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryString<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Self(t))
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::BadQuery,
                    format!("invalid query string: {}", first_line(&e.body_text())),
                )
            })
    }
}

/// A job id from the request path (`{id}`): any other text is a 404, as for an unknown job.
impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("no such job"))?;
        id.parse().map_err(ApiError::not_found)
    }
}

/// The body of `req`, at most `max` bytes, with its headers.
pub(crate) async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
    max: usize,
) -> ApiResult<(HeaderMap, Bytes)> {
    let headers = req.headers().clone();
    let b = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the request body is larger than {max} bytes"),
            )
        } else {
            ApiError::new(
                ErrorCode::BadBody,
                format!("the request body could not be read: {}", r.body_text()),
            )
        }
    })?;
    if b.len() > max {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the request body is {} bytes; at most {max} are accepted",
                b.len()
            ),
        ));
    }
    Ok((headers, b))
}

/// The content type of a request, or "".
pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `b` as JSON of type `T`, refused unless sent as `application/json`.
pub(crate) fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, b: &[u8]) -> ApiResult<T> {
    if !content_type(headers).starts_with("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the request body as application/json",
        ));
    }
    serde_json::from_slice(b).map_err(|e| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("the JSON body is not valid: {}", first_line(&e.to_string())),
        )
    })
}

/// The first line of `s`, at most 200 characters: what an error may quote of a caller's input.
pub(crate) fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    l.chars().take(200).collect()
}
