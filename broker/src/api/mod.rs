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
pub(crate) mod openapi;
pub(crate) mod oversight;
pub(crate) mod plans;
pub(crate) mod registry;
pub(crate) mod reviews;
pub(crate) mod statements;

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Largest submit body: the largest job as base64 in JSON (4/3 of its bytes) with room for the
/// other fields.
pub(crate) const MAX_SUBMIT_BODY: usize = crate::server::MAX_WASM_BYTES / 3 * 4 + (256 << 10);
/// Largest body of any other request.
pub(crate) const MAX_BODY: usize = 64 << 10;

/// Declares routes once: the function that adds them to a router, and the list of what they
/// serve (method, path) that the OpenAPI test holds the contract to.
macro_rules! routes {
    ($add:ident, $served:ident: $($method:ident $path:literal => $handler:path),* $(,)?) => {
        fn $add(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
            r$(.route($path, $method($handler)))*
        }
        const $served: &[(&str, &str)] = &[$((stringify!($method), $path)),*];
    };
}

routes!(add_requests, REQUESTS:
    post "/v1/jobs" => jobs::submit,
    get "/v1/jobs" => jobs::list,
    get "/v1/jobs/{id}" => jobs::status,
    post "/v1/query" => jobs::query,
    get "/v1/jobs/{id}/result" => jobs::result,
    get "/v1/jobs/{id}/receipt" => jobs::receipt,
    get "/v1/jobs/{id}/log" => jobs::log,
    get "/v1/jobs/{id}/wasm" => jobs::wasm,
    post "/v1/jobs/{id}/cancel" => jobs::cancel,
    get "/v1/datasets" => datasets::list,
    get "/v1/datasets/{name}" => datasets::one,
    get "/v1/datasets/{name}/spend" => datasets::spend,
    get "/v1/budget" => datasets::budget,
    post "/v1/estimate" => datasets::estimate,
    get "/v1/reviews" => reviews::pending,
    post "/v1/reviews/{id}/{decision}" => reviews::decide,
    get "/v1/audit" => reviews::audit_log,
    get "/v1/audit/verify" => reviews::audit_verify,
    post "/v1/receipts/verify" => reviews::receipt_verify,
    get "/v1/me" => auth::me,
    post "/v1/admin/policy/reload" => admin::reload,
    post "/v1/admin/tokens" => admin::create_token,
    post "/v1/admin/{action}" => admin::freeze,
    post "/v1/admin/{kind}/{name}/{action}" => admin::suspend,
    get "/v1/admin/usage" => admin::usage,
    get "/v1/admin/alerts" => admin::alerts,
    get "/v1/admin/suspensions" => admin::suspensions,
    get "/v1/filings" => admin::filings,
    get "/v1/openapi.json" => openapi::spec,
    get "/v1/objections" => oversight::list,
    get "/v1/objections/{id}" => oversight::one,
    post "/v1/objections/{id}/{decision}" => oversight::resolve,
    get "/v1/operators" => oversight::credit_records,
    get "/v1/operators/{id}" => oversight::credit_record,
    get "/v1/statements/{kind}/{party}/{month}" => statements::statement,
    post "/v1/registry" => registry::register,
    get "/v1/registry" => registry::list,
    get "/v1/registry/{number}" => registry::one,
    get "/v1/registry/{number}/certificate" => registry::certificate,
    post "/v1/registry/{number}/{step}" => registry::step,
    get "/public/registry/{number}" => registry::public,
    get "/public/register" => oversight::register,
    post "/public/objections" => oversight::file,
    get "/public/objections/{id}" => oversight::status,
    get "/metrics" => admin::metrics,
    get "/healthz" => openapi::healthz,
);

// Event streams outlive the request timeout; a plan runs its job twice, bounded by the job
// limits rather than the request timeout.
routes!(add_streams, STREAMS:
    get "/v1/jobs/{id}/events" => jobs::events,
    get "/v1/admin/alerts/stream" => admin::alert_stream,
    post "/v1/plan" => plans::plan,
    get "/v1/jobs/{id}/plan" => plans::of_job,
    get "/v1/jobs/{id}/risk" => plans::risk,
);

/// Every (method, path) the broker serves: the API's, then the console's.
pub(crate) fn served() -> impl Iterator<Item = (&'static str, &'static str)> {
    REQUESTS
        .iter()
        .chain(STREAMS)
        .chain(crate::console::SERVED)
        .copied()
}

/// Every route of the API.
pub(crate) fn router(s: Arc<Shared>) -> Router {
    let api =
        add_requests(Router::new()).layer(middleware::from_fn_with_state(s.clone(), auth::timeout));
    let streams = add_streams(Router::new());
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

/// A decision's reason, trimmed: 1 to 2,000 bytes, else `bad_reason` (reviews, objections,
/// registry steps).
pub(crate) fn reason(r: &str) -> ApiResult<&str> {
    let r = r.trim();
    if r.is_empty() || r.len() > 2000 {
        return Err(ApiError::new(
            ErrorCode::BadReason,
            "give a reason (1 to 2000 bytes)",
        ));
    }
    Ok(r)
}

/// The first line of `s`, at most 200 characters: what an error may quote of a caller's input.
pub(crate) fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    l.chars().take(200).collect()
}
