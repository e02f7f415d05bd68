//! The HTTP API's errors: a closed set of stable codes, each with one HTTP status, and a public
//! message that never carries data. The table in `docs/operator.md` is generated from
//! [`ErrorCode::ALL`] and checked by a test.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StateError;

/// Every error code the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// no valid bearer token.
    Unauthorized,
    /// the caller's role or grants do not allow this, or an operator or dataset is suspended.
    Forbidden,
    /// no such endpoint, job or decision.
    NotFound,
    /// the endpoint exists but not with this method (the `Allow` header lists the ones it takes).
    MethodNotAllowed,
    /// the job is not in a state that allows this (e.g. cancelling a running job).
    Conflict,
    /// the job has no report or receipt (yet).
    NotReleased,
    /// the request body could not be read.
    BadBody,
    /// the request body is over its limit.
    BodyTooLarge,
    /// the body's Content-Type is not one the endpoint takes.
    UnsupportedMediaType,
    /// the JSON body does not parse or has unknown fields.
    BadJson,
    /// the query string does not parse or has unknown fields.
    BadQuery,
    /// `wasm_base64` is not base64.
    BadWasmEncoding,
    /// the job is empty or over 40 MiB.
    BadWasm,
    /// the job is not a valid job component (the message says why).
    InvalidWasm,
    /// the purpose is empty or over 500 characters.
    BadPurpose,
    /// the parameters are over their limit.
    ParamsTooLarge,
    /// no datasets, or more than 16, are named.
    BadDatasets,
    /// `max_epsilon` is not above 0, or exceeds a grant's per-job cap.
    BadEpsilon,
    /// too many jobs are queued (or plans running); retry after `Retry-After` seconds.
    QueueFull,
    /// too many jobs wait for review (yours, or in all); retry after `Retry-After` seconds.
    ReviewQueueFull,
    /// `format` is not `json` or `csv`.
    BadFormat,
    /// an estimate needs exactly one of `epsilon`, `rho` and `accuracy`.
    BadBudget,
    /// the query was refused (the message says why; nothing was charged).
    QueryRefused,
    /// a review decision needs a reason of 1 to 2,000 bytes.
    BadReason,
    /// a suspended name is empty or over 64 characters.
    BadName,
    /// an objection needs a subject (1 to 200 bytes) and a text (1 to 4,000 bytes); a contact is at most 200 bytes.
    BadObjection,
    /// this address (or its IPv6 /64) filed its limit of objections in the last hour; retry after `Retry-After` seconds.
    TooManyObjections,
    /// the new policy did not load; the old one stays in force.
    InvalidPolicy,
    /// the request took longer than `request_timeout_secs` (`submit_timeout_secs` for a submission).
    Timeout,
    /// a fault in the broker (logged; the message never carries its cause).
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the documentation lists them.
    pub const ALL: &[ErrorCode] = &[
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::NotReleased,
        Self::BadBody,
        Self::BodyTooLarge,
        Self::UnsupportedMediaType,
        Self::BadJson,
        Self::BadQuery,
        Self::BadWasmEncoding,
        Self::BadWasm,
        Self::InvalidWasm,
        Self::BadPurpose,
        Self::ParamsTooLarge,
        Self::BadDatasets,
        Self::BadEpsilon,
        Self::QueueFull,
        Self::ReviewQueueFull,
        Self::BadFormat,
        Self::BadBudget,
        Self::QueryRefused,
        Self::BadReason,
        Self::BadName,
        Self::BadObjection,
        Self::TooManyObjections,
        Self::InvalidPolicy,
        Self::Timeout,
        Self::Internal,
    ];

    /// The code as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::NotReleased => "not_released",
            Self::BadBody => "bad_body",
            Self::BodyTooLarge => "body_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BadJson => "bad_json",
            Self::BadQuery => "bad_query",
            Self::BadWasmEncoding => "bad_wasm_encoding",
            Self::BadWasm => "bad_wasm",
            Self::InvalidWasm => "invalid_wasm",
            Self::BadPurpose => "bad_purpose",
            Self::ParamsTooLarge => "params_too_large",
            Self::BadDatasets => "bad_datasets",
            Self::BadEpsilon => "bad_epsilon",
            Self::QueueFull => "queue_full",
            Self::ReviewQueueFull => "review_queue_full",
            Self::BadFormat => "bad_format",
            Self::BadBudget => "bad_budget",
            Self::QueryRefused => "query_refused",
            Self::BadReason => "bad_reason",
            Self::BadName => "bad_name",
            Self::BadObjection => "bad_objection",
            Self::TooManyObjections => "too_many_objections",
            Self::InvalidPolicy => "invalid_policy",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status it comes with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::NotReleased => StatusCode::CONFLICT,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadJson => StatusCode::BAD_REQUEST,
            Self::BadQuery => StatusCode::BAD_REQUEST,
            Self::BadWasmEncoding => StatusCode::BAD_REQUEST,
            Self::BadWasm => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidWasm => StatusCode::BAD_REQUEST,
            Self::BadPurpose => StatusCode::BAD_REQUEST,
            Self::ParamsTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadDatasets => StatusCode::BAD_REQUEST,
            Self::BadEpsilon => StatusCode::BAD_REQUEST,
            Self::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Self::ReviewQueueFull => StatusCode::TOO_MANY_REQUESTS,
            Self::BadFormat => StatusCode::BAD_REQUEST,
            Self::BadBudget => StatusCode::BAD_REQUEST,
            Self::QueryRefused => StatusCode::BAD_REQUEST,
            Self::BadReason => StatusCode::BAD_REQUEST,
            Self::BadName => StatusCode::BAD_REQUEST,
            Self::BadObjection => StatusCode::BAD_REQUEST,
            Self::TooManyObjections => StatusCode::TOO_MANY_REQUESTS,
            Self::InvalidPolicy => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What it means, for the documentation.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Unauthorized => "no valid bearer token",
            Self::Forbidden => {
                "the caller's role or grants do not allow this, or an operator or dataset is suspended"
            }
            Self::NotFound => "no such endpoint, job or decision",
            Self::MethodNotAllowed => {
                "the endpoint exists but not with this method (the `Allow` header lists the ones it takes)"
            }
            Self::Conflict => {
                "the job is not in a state that allows this (e.g. cancelling a running job)"
            }
            Self::NotReleased => "the job has no report or receipt (yet)",
            Self::BadBody => "the request body could not be read",
            Self::BodyTooLarge => "the request body is over its limit",
            Self::UnsupportedMediaType => "the body's Content-Type is not one the endpoint takes",
            Self::BadJson => "the JSON body does not parse or has unknown fields",
            Self::BadQuery => "the query string does not parse or has unknown fields",
            Self::BadWasmEncoding => "`wasm_base64` is not base64",
            Self::BadWasm => "the job is empty or over 40 MiB",
            Self::InvalidWasm => "the job is not a valid job component (the message says why)",
            Self::BadPurpose => "the purpose is empty or over 500 characters",
            Self::ParamsTooLarge => "the parameters are over their limit",
            Self::BadDatasets => "no datasets, or more than 16, are named",
            Self::BadEpsilon => "`max_epsilon` is not above 0, or exceeds a grant's per-job cap",
            Self::QueueFull => {
                "too many jobs are queued (or plans running); retry after `Retry-After` seconds"
            }
            Self::ReviewQueueFull => {
                "too many jobs wait for review (yours, or in all); retry after `Retry-After` seconds"
            }
            Self::BadFormat => "`format` is not `json` or `csv`",
            Self::BadBudget => "an estimate needs exactly one of `epsilon`, `rho` and `accuracy`",
            Self::QueryRefused => {
                "the query was refused (the message says why; nothing was charged)"
            }
            Self::BadReason => "a review decision needs a reason of 1 to 2,000 bytes",
            Self::BadName => "a suspended name is empty or over 64 characters",
            Self::BadObjection => {
                "an objection needs a subject (1 to 200 bytes) and a text (1 to 4,000 bytes); a contact is at most 200 bytes"
            }
            Self::TooManyObjections => {
                "this address (or its IPv6 /64) filed its limit of objections in the last hour; retry after `Retry-After` seconds"
            }
            Self::InvalidPolicy => "the new policy did not load; the old one stays in force",
            Self::Timeout => {
                "the request took longer than `request_timeout_secs` (`submit_timeout_secs` for a submission)"
            }
            Self::Internal => "a fault in the broker (logged; the message never carries its cause)",
        }
    }

    /// The Markdown table of every code, as `docs/operator.md` holds it.
    pub fn table() -> String {
        let mut t = String::from("| code | status | meaning |\n|---|---|---|\n");
        for c in Self::ALL {
            t.push_str(&format!(
                "| `{}` | {} | {} |\n",
                c.as_str(),
                c.status().as_u16(),
                c.meaning()
            ));
        }
        t
    }
}

/// An API error: a code (which fixes the status) and a message that never carries data.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    pub(crate) retry_after: Option<u64>,
    /// A refusal answered as something else (a 404 that hides another operator's job): still
    /// audited as a denial.
    denial: bool,
}

/// Marks a response the denial audit records whatever its status.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AuditAsDenial;

impl ApiError {
    /// Its code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// An error with `code` and a public `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            denial: false,
        }
    }

    /// The 404 of a job that exists but is not the caller's: the same answer as for no job, so
    /// that ids do not show which jobs exist, but audited as the denial it is.
    pub(crate) fn hidden(message: impl Into<String>) -> Self {
        Self {
            denial: true,
            ..Self::not_found(message)
        }
    }

    /// Asks the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A fault of the broker's: the cause goes to the log, the client gets a fixed message.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {e}");
        Self::new(ErrorCode::Internal, "internal broker error")
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::NoJob(_) | StateError::NoObjection(_) | StateError::NoRecord(_) => {
                Self::not_found(e.to_string())
            }
            StateError::NotYours { .. } => Self::forbidden(e.to_string()),
            StateError::WrongState { .. }
            | StateError::StillSuspended { .. }
            | StateError::ObjectionResolved { .. }
            | StateError::RecordCancelled(_) => Self::new(ErrorCode::Conflict, e.to_string()),
            StateError::Db(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.code.status(),
            Json(json!({ "error": { "code": self.code.as_str(), "message": self.message } })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.denial {
            r.extensions_mut().insert(AuditAsDenial);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_the_operator_docs_list_every_one() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
        }
        let docs = include_str!("../../docs/operator.md");
        assert!(
            docs.contains(&ErrorCode::table()),
            "docs/operator.md must hold the table ErrorCode::table() prints:\n{}",
            ErrorCode::table()
        );
    }
}
