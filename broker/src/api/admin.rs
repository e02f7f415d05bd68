//! Holders' admins: policy reload, suspension and resumption, usage, suspensions and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Admins, Custodians, Inspectors, Only, Watchers};
use super::{ApiResult, OptionalJsonBody};
use crate::audit::NewEntry;
use crate::error::{ApiError, ErrorCode};
use crate::server::{Shared, current, start_sandbox};
use crate::store::{JobState, Role, Usage};

/// The policy now in force.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PolicyLoaded {
    policy_sha256: String,
}

/// `POST /v1/admin/policy/reload`: loads the policy files again; an invalid policy is refused
/// and the old one stays in force.
#[utoipa::path(
    post, path = "/v1/admin/policy/reload", tag = "admin",
    responses((status = 200, description = "The policy now in force", body = PolicyLoaded))
)]
pub(crate) async fn reload(
    State(s): State<Arc<Shared>>,
    auth: Only<Admins>,
) -> ApiResult<Json<PolicyLoaded>> {
    let who = auth.0.name.clone();
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<Json<PolicyLoaded>> {
        let next = match start_sandbox(&s2.store, &s2.config, &s2.limits) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{e:#}");
                s2.store.record(
                    NewEntry::new("policy.rejected", &who).detail(json!({ "error": msg })),
                )?;
                return Err(ApiError::new(
                    ErrorCode::InvalidPolicy,
                    format!("the new policy was not loaded; the old one stays in force: {msg}"),
                ));
            }
        };
        let sha = next.policy_sha256.clone();
        s2.store
            .record(NewEntry::new("policy.loaded", &who).detail(json!({ "policy_sha256": sha })))?;
        *s2.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(Json(PolicyLoaded { policy_sha256: sha }))
    })
    .await
    .map_err(ApiError::internal)?
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonBody {
    #[serde(default)]
    reason: String,
}

/// A suspension's (or release hold's) new state.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SuspensionChanged {
    kind: &'static str,
    name: String,
    /// `queries` for a suspension (nothing is answered), `releases` for a release hold (queries
    /// are answered; reports wait for a reviewer).
    scope: &'static str,
    suspended: bool,
}

/// `POST /v1/admin/{operators|datasets}/{name}/{suspend|resume|hold|unhold}`, with an optional
/// reason: a suspension stops every query; a release hold lets queries run and holds every
/// report for a reviewer.
#[utoipa::path(
    post, path = "/v1/admin/{kind}/{name}/{action}", tag = "admin", request_body(content((ReasonBody = "application/json")), description = "Optional"),
    params(("kind" = String, Path, description = "`operators` or `datasets`"), ("name" = String, Path, description = "The operator or dataset"), ("action" = String, Path, description = "`suspend`, `resume`, `hold` or `unhold`")),
    responses((status = 200, description = "The suspension's new state", body = SuspensionChanged))
)]
pub(crate) async fn suspend(
    State(s): State<Arc<Shared>>,
    auth: Only<Custodians>,
    Path((kind, name, action)): Path<(String, String, String)>,
    OptionalJsonBody(r): OptionalJsonBody<ReasonBody>,
) -> ApiResult<Json<SuspensionChanged>> {
    let kind: &'static str = match kind.as_str() {
        "operators" => "operator",
        "datasets" => "dataset",
        _ => {
            return Err(ApiError::not_found(
                "suspend operators/<id> or datasets/<name>",
            ));
        }
    };
    let (suspended, scope) = match action.as_str() {
        "suspend" => (true, "queries"),
        "resume" => (false, "queries"),
        "hold" => (true, "releases"),
        "unhold" => (false, "releases"),
        _ => {
            return Err(ApiError::not_found(
                "the action is suspend, resume, hold or unhold",
            ));
        }
    };
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::new(
            ErrorCode::BadName,
            "a name is 1 to 64 characters",
        ));
    }
    // A holder suspends its own datasets; an operator works on every holder's data, so only
    // the platform's admin suspends one.
    let cur = current(&s);
    let policy = cur.sandbox.engine().policy();
    if auth.0.role == Role::Holder && kind == "operator" {
        return Err(ApiError::forbidden(
            "a holder suspends its own datasets; ask the platform admin to suspend an operator",
        ));
    }
    if kind == "dataset" {
        auth.may_act_on(policy, &name)?;
    }
    let stored_kind = match (scope, kind) {
        ("releases", "operator") => "hold:operator",
        ("releases", _) => "hold:dataset",
        _ => kind,
    };
    s.store
        .set_suspended(stored_kind, &name, suspended, &auth.0.name, &r.reason)?;
    Ok(Json(SuspensionChanged {
        kind,
        name,
        scope,
        suspended,
    }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FreezeBody {
    #[serde(default)]
    reason: String,
    /// Only this holder's datasets; absent: the whole platform.
    holder: Option<String>,
}

/// A freeze's new state.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FreezeChanged {
    scope: String,
    datasets: Vec<String>,
    frozen: bool,
}

/// `POST /v1/admin/{freeze|unfreeze}` with `{"reason": …, "holder": …}`: one audited transaction
/// that stops (or restarts) every submission, charge, cached answer and release on the platform,
/// or on one holder's datasets.
#[utoipa::path(
    post, path = "/v1/admin/{action}", tag = "admin", request_body(content((FreezeBody = "application/json")), description = "Optional"),
    params(("action" = String, Path, description = "`freeze` or `unfreeze`")),
    responses((status = 200, description = "The freeze's new state", body = FreezeChanged))
)]
pub(crate) async fn freeze(
    State(s): State<Arc<Shared>>,
    auth: Only<Custodians>,
    Path(action): Path<String>,
    OptionalJsonBody(r): OptionalJsonBody<FreezeBody>,
) -> ApiResult<Json<FreezeChanged>> {
    let frozen = match action.as_str() {
        "freeze" => true,
        "unfreeze" => false,
        _ => return Err(ApiError::not_found("the action is freeze or unfreeze")),
    };
    if frozen && r.reason.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadReason,
            "give the reason for the freeze (it is recorded in the audit log)",
        ));
    }
    // A holder freezes its own datasets, whatever it names.
    let holder = match (auth.0.role, r.holder) {
        (Role::Holder, Some(h)) if h != auth.0.name => {
            return Err(ApiError::forbidden(format!(
                "`{}` may freeze only its own datasets",
                auth.0.name
            )));
        }
        (Role::Holder, _) => Some(auth.0.name.clone()),
        (_, h) => h,
    };
    let r = FreezeBody { holder, ..r };
    let datasets: Vec<String> = match &r.holder {
        None => vec![],
        Some(h) => {
            let cur = current(&s);
            let of_holder: Vec<String> = cur
                .sandbox
                .engine()
                .policy()
                .held_by(h)
                .map(|d| d.id.to_string())
                .collect();
            if of_holder.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no dataset is held by `{}`",
                    super::first_line(h)
                )));
            }
            of_holder
        }
    };
    let holder = r.holder.as_deref().map(|h| (h, datasets.as_slice()));
    s.store
        .freeze(holder, frozen, &auth.0.name, r.reason.trim())?;
    Ok(Json(FreezeChanged {
        scope: r.holder.map_or("all".into(), |h| format!("holder {h}")),
        datasets,
        frozen,
    }))
}

/// Alerts raised by the policy's rules, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Alerts {
    alerts: Vec<crate::store::Alert>,
}

/// `GET /v1/admin/alerts`: a holder sees the alerts on its own datasets.
#[utoipa::path(
    get, path = "/v1/admin/alerts", tag = "admin",
    responses((status = 200, description = "Alerts, newest first", body = Alerts))
)]
pub(crate) async fn alerts(
    State(s): State<Arc<Shared>>,
    auth: Only<Watchers>,
) -> ApiResult<Json<Alerts>> {
    let held = auth.held(current(&s).sandbox.engine().policy());
    let mut alerts = s.store.alerts(1000)?;
    alerts.retain(|a| held.as_ref().is_none_or(|h| h.contains(&a.dataset)));
    Ok(Json(Alerts { alerts }))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamFrom {
    /// Replay alerts after this number first; absent: only alerts raised from now on.
    after: Option<i64>,
}

/// `GET /v1/admin/alerts/stream[?after=N]`: alerts as server-sent events (`event: alert`, the
/// alert's number as the event id) as they are raised, until the broker stops. A holder gets
/// the alerts on its own datasets. A client that reconnects passes the last id it saw.
#[utoipa::path(
    get, path = "/v1/admin/alerts/stream", tag = "admin", params(StreamFrom),
    responses((status = 200, description = "Alerts as server-sent events, as they are raised", content((String = "text/event-stream"))))
)]
pub(crate) async fn alert_stream(
    State(s): State<Arc<Shared>>,
    auth: Only<Watchers>,
    super::QueryString(from): super::QueryString<StreamFrom>,
) -> ApiResult<
    Sse<impl futures_util::Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>>,
> {
    let held = auth.held(current(&s).sandbox.engine().policy());
    let after = match from.after {
        Some(n) => n,
        None => s.store.last_alert()?,
    };
    let stream =
        futures_util::stream::unfold(
            (s, after, std::collections::VecDeque::new()),
            move |(s, mut after, mut pending)| {
                let held = held.clone();
                async move {
                    loop {
                        if let Some(a) = pending.pop_front() {
                            let a: crate::store::Alert = a;
                            let ev = SseEvent::default()
                                .event("alert")
                                .id(a.id.to_string())
                                .json_data(&a)
                                .unwrap_or_else(|err| SseEvent::default().comment(err.to_string()));
                            return Some((Ok(ev), (s, after, pending)));
                        }
                        if s.closing.load(Ordering::SeqCst) {
                            return None;
                        }
                        let store = s.store.clone();
                        let changed = store.changed().notified();
                        tokio::pin!(changed);
                        changed.as_mut().enable();
                        match store.alerts_after(after) {
                            Ok(new) if !new.is_empty() => {
                                after = new.last().map_or(after, |a| a.id);
                                pending.extend(new.into_iter().filter(|a| {
                                    held.as_ref().is_none_or(|h| h.contains(&a.dataset))
                                }));
                            }
                            Ok(_) => {
                                let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
                            }
                            Err(_) => return None,
                        }
                    }
                }
            },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilingsSince {
    /// Filings made on or after this day (in the policy's time zone); absent: all.
    since: Option<String>,
}

/// `GET /v1/filings[?since=YYYY-MM-DD]`: the filings (备案) of releases from `important` data,
/// signed by the broker ([`crate::filings`]). A holder gets those on its own datasets.
#[utoipa::path(
    get, path = "/v1/filings", tag = "admin", params(FilingsSince),
    responses((status = 200, description = "Signed filings of releases from important data", body = Object))
)]
pub(crate) async fn filings(
    State(s): State<Arc<Shared>>,
    auth: Only<Watchers>,
    super::QueryString(q): super::QueryString<FilingsSince>,
) -> ApiResult<Json<crate::filings::FilingExport>> {
    let cur = current(&s);
    let policy = cur.sandbox.engine().policy();
    let since_ms = match q.since.as_deref() {
        None => 0,
        Some(d) => match sluice_policy::Date::parse(d) {
            Some(date) => {
                (date.days_since_epoch() * 86_400 - i64::from(policy.time_zone.offset_minutes) * 60)
                    * 1000
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::BadQuery,
                    "`since` is a date such as 2026-11-01",
                ));
            }
        },
    };
    let held = auth.held(policy);
    let scope = match &held {
        Some(_) => format!("holder {}", auth.0.name),
        None => "all".into(),
    };
    let export = s.store.export_filings(since_ms, scope, |f| {
        held.as_ref()
            .is_none_or(|h| f.terms.datasets.iter().any(|d| h.contains(&d.name)))
    })?;
    Ok(Json(export))
}

/// Spending per dataset and operator, with the dataset's holder.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UsageReport {
    usage: Vec<UsageRow>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UsageRow {
    #[serde(flatten)]
    usage: Usage,
    holder: Option<String>,
}

/// `GET /v1/admin/usage`.
#[utoipa::path(
    get, path = "/v1/admin/usage", tag = "admin",
    responses((status = 200, description = "Spending per dataset and operator", body = UsageReport))
)]
pub(crate) async fn usage(
    State(s): State<Arc<Shared>>,
    auth: Only<Watchers>,
) -> ApiResult<Json<UsageReport>> {
    let held = auth.held(current(&s).sandbox.engine().policy());
    let holders: BTreeMap<String, String> = {
        let cur = s.current.read().unwrap_or_else(|p| p.into_inner());
        cur.sandbox
            .engine()
            .policy()
            .datasets
            .values()
            .map(|d| (d.id.to_string(), d.holder.clone()))
            .collect()
    };
    let usage = s
        .store
        .usage()?
        .into_iter()
        .filter(|u| held.as_ref().is_none_or(|h| h.contains(&u.dataset)))
        .map(|usage| UsageRow {
            holder: holders.get(&usage.dataset).cloned(),
            usage,
        })
        .collect();
    Ok(Json(UsageReport { usage }))
}

/// Every suspension in force.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Suspensions {
    suspensions: Vec<Suspension>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Suspension {
    kind: String,
    name: String,
    reason: String,
}

/// `GET /v1/admin/suspensions`: every suspension (admins, auditors), or a holder's own
/// datasets' (holders).
#[utoipa::path(
    get, path = "/v1/admin/suspensions", tag = "admin",
    responses((status = 200, description = "Suspensions in force", body = Suspensions))
)]
pub(crate) async fn suspensions(
    State(s): State<Arc<Shared>>,
    auth: Only<Watchers>,
) -> ApiResult<Json<Suspensions>> {
    let held = auth.held(current(&s).sandbox.engine().policy());
    let suspensions = s
        .store
        .suspensions()?
        .into_iter()
        .filter(|(kind, name, _)| {
            held.as_ref()
                .is_none_or(|h| kind.ends_with("dataset") && h.contains(name))
        })
        .map(|(kind, name, reason)| Suspension { kind, name, reason })
        .collect();
    Ok(Json(Suspensions { suspensions }))
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text", content((String = "text/plain"))))
)]
pub(crate) async fn metrics(
    State(s): State<Arc<Shared>>,
    _: Only<Inspectors>,
) -> ApiResult<Response> {
    let mut out = String::new();
    out.push_str("# HELP sluice_jobs Jobs by state.\n# TYPE sluice_jobs gauge\n");
    let counts: BTreeMap<String, i64> = s.store.job_counts()?.into_iter().collect();
    for st in JobState::ALL {
        out.push_str(&format!(
            "sluice_jobs{{state=\"{}\"}} {}\n",
            st.as_str(),
            counts.get(st.as_str()).copied().unwrap_or(0)
        ));
    }
    let totals = s.store.charge_totals()?;
    let counters = [
        (
            "sluice_queries_total",
            "Queries charged.",
            totals.queries as f64,
        ),
        (
            "sluice_epsilon_charged_total",
            "Epsilon charged on pure-DP datasets, all grants.",
            totals.epsilon,
        ),
        (
            "sluice_rho_charged_total",
            "Rho charged on zCDP datasets, all grants.",
            totals.rho,
        ),
        (
            "sluice_delta_charged_total",
            "Delta charged by partition selection, all grants.",
            totals.delta,
        ),
    ];
    for (name, help, value) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    // Per dataset, all operators together: what the holders' dataset-wide caps count.
    let mut per_dataset: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for u in s.store.usage()? {
        let t = per_dataset.entry(u.dataset).or_default();
        (t.0, t.1, t.2) = (t.0 + u.epsilon, t.1 + u.rho, t.2 + u.delta);
    }
    out.push_str("# HELP sluice_dataset_charged_total Privacy loss charged per dataset, all operators, by unit.\n# TYPE sluice_dataset_charged_total counter\n");
    for (dataset, (epsilon, rho, delta)) in &per_dataset {
        for (unit, v) in [("epsilon", epsilon), ("rho", rho), ("delta", delta)] {
            out.push_str(&format!(
                "sluice_dataset_charged_total{{dataset=\"{dataset}\",unit=\"{unit}\"}} {v}\n"
            ));
        }
    }
    let m = &s.metrics;
    out.push_str(&format!(
        "# HELP sluice_job_duration_seconds Time jobs ran (this process).\n# TYPE sluice_job_duration_seconds summary\nsluice_job_duration_seconds_sum {}\nsluice_job_duration_seconds_count {}\n",
        m.job_seconds_micros.load(Ordering::Relaxed) as f64 / 1e6,
        m.jobs_run.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP sluice_http_requests_total HTTP requests (this process).\n# TYPE sluice_http_requests_total counter\nsluice_http_requests_total {}\n",
        m.requests.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP sluice_http_denials_total 401 and 403 responses (this process).\n# TYPE sluice_http_denials_total counter\nsluice_http_denials_total {}\n",
        m.denials.load(Ordering::Relaxed)
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The body of `POST /v1/admin/tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    role: String,
    principal: String,
    /// Days it works (1 to 366; default 90).
    #[serde(default)]
    valid_for_days: Option<u64>,
}

/// A token made over the API: shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MadeToken {
    token: String,
    role: &'static str,
    principal: String,
    valid_for_days: u64,
    /// Why the token may be refused everywhere it goes (no grant names the operator, no dataset
    /// names the holder), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// `POST /v1/admin/tokens`: a token for `principal` in `role` (admins), without access to the
/// broker's data directory; audited as `token.created` by the admin.
#[utoipa::path(
    post, path = "/v1/admin/tokens", tag = "admin", request_body = NewToken,
    responses((status = 200, description = "The new token, shown once", body = MadeToken))
)]
pub(crate) async fn create_token(
    State(s): State<Arc<Shared>>,
    auth: Only<Admins>,
    super::JsonBody(t): super::JsonBody<NewToken>,
) -> ApiResult<Json<MadeToken>> {
    let role = Role::parse(&t.role).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadName,
            format!(
                "no role `{}`; roles: operator, reviewer, admin, holder, auditor",
                t.role.escape_debug()
            ),
        )
    })?;
    let days = t.valid_for_days.unwrap_or(90);
    if !(1..=366).contains(&days) {
        return Err(ApiError::new(
            ErrorCode::BadName,
            "a token is valid for 1 to 366 days",
        ));
    }
    let warning = {
        let cur = current(&s);
        let policy = cur.sandbox.engine().policy();
        match role {
            Role::Operator
                if !policy
                    .grants
                    .iter()
                    .any(|g| g.operator.as_str() == t.principal) =>
            {
                Some(format!(
                    "no grant names operator `{}`: its requests will be refused",
                    t.principal
                ))
            }
            Role::Holder if !policy.datasets.values().any(|d| d.holder == t.principal) => {
                Some(format!(
                    "no dataset names holder `{}`: it will oversee nothing",
                    t.principal
                ))
            }
            _ => None,
        }
    };
    let token = s
        .store
        .create_token_valid_for(
            role,
            &t.principal,
            &auth.0.name,
            Duration::from_secs(days * 86_400),
        )
        .map_err(|e| ApiError::new(ErrorCode::BadName, e.to_string()))?;
    Ok(Json(MadeToken {
        token,
        role: role.as_str(),
        principal: t.principal,
        valid_for_days: days,
        warning,
    }))
}
