//! The broker: the HTTP API (axum), the worker pool that runs jobs, and their shared state.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_policy::{ColumnKind, DatasetId, OperatorId, Policy, Review};
use sluice_runtime::{Limits, Sandbox, SandboxConfig};

use crate::audit::NewEntry;
use crate::error::{ApiError, ErrorCode};
use crate::keys::sha256_hex;
use crate::store::{
    JobId, JobState, LedgerAccountant, LedgerAnswerCache, NewJob, Principal, Role, Store,
};

pub use crate::config::Config;

/// Largest wasm accepted.
pub const MAX_WASM_BYTES: usize = 16 << 20;
/// Largest submit body (base64 wasm in JSON).
const MAX_SUBMIT_BODY: usize = 24 << 20;
/// Largest body of any other request.
const MAX_BODY: usize = 64 << 10;

/// The policy in force with its sandbox.
pub(crate) struct Current {
    pub(crate) sandbox: Sandbox,
    pub(crate) policy_sha256: String,
}

/// sha256 over a policy's files (names and exact bytes, in load order).
pub fn policy_sha256(policy: &Policy) -> String {
    let mut all = Vec::new();
    for (path, text) in &policy.files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        all.extend_from_slice(format!("{}\n{}\n", name.unwrap_or_default(), text.len()).as_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    sha256_hex(&all)
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) jobs_run: AtomicU64,
    pub(crate) job_seconds_micros: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) denials: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) current: RwLock<Arc<Current>>,
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    pub(crate) wake: (Mutex<u64>, Condvar),
    pub(crate) stop: AtomicBool,
    /// Set when the server starts shutting down: event streams end so that it can.
    pub(crate) closing: AtomicBool,
    pub(crate) metrics: Metrics,
    /// Open windows of denied requests, per source.
    pub(crate) denials: Mutex<crate::denials::DenialLog>,
}

/// A running broker: state, workers, and the router to serve.
pub struct Broker {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn load_policy(path: &Path) -> Result<Policy> {
    sluice_policy::load(path).map_err(|e| match e {
        sluice_policy::PolicyError::Invalid(p) => anyhow::anyhow!("the policy is invalid:\n{p}"),
        other => anyhow::anyhow!(other),
    })
}

fn start_sandbox(store: &Arc<Store>, config: &Config, limits: &Limits) -> Result<Current> {
    let policy = load_policy(&config.policy)?;
    let policy_sha256 = policy_sha256(&policy);
    let sandbox = Sandbox::new(
        SandboxConfig::new(
            policy,
            &config.data_root,
            Arc::new(LedgerAccountant(store.clone())),
        )
        .with_answer_cache(Arc::new(LedgerAnswerCache(store.clone())))
        .with_limits(limits.clone()),
    )
    .context("while starting the sandbox")?;
    Ok(Current {
        sandbox,
        policy_sha256,
    })
}

impl Broker {
    /// Opens the data directory, fails jobs a crash left running, loads and checks the policy and
    /// starts the workers. Blocking: call it outside async code (or in `spawn_blocking`).
    pub fn start(data_dir: &Path, config: Config, limits: Limits) -> Result<Self> {
        let store = Arc::new(Store::open(data_dir)?);
        let interrupted = store.recover()?;
        if interrupted > 0 {
            tracing::warn!(
                "{interrupted} job(s) were running when the broker stopped; marked failed"
            );
        }
        let current = start_sandbox(&store, &config, &limits)?;
        store.record(NewEntry::new("policy.loaded", "broker").detail(json!({
            "policy_sha256": current.policy_sha256,
            "files": current.sandbox.engine().policy().files.iter()
                .map(|(p, t)| json!({"file": p.display().to_string(), "sha256": sha256_hex(t.as_bytes())}))
                .collect::<Vec<_>>(),
        })))?;
        let shared = Arc::new(Shared {
            store,
            current: RwLock::new(Arc::new(current)),
            limits,
            wake: (Mutex::new(0), Condvar::new()),
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            metrics: Metrics::default(),
            denials: Mutex::default(),
            config,
        });
        let workers = (0..shared.config.workers.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{i}"))
                    .spawn(move || crate::worker::worker(s))
                    .expect("spawn a worker thread")
            })
            .collect();
        Ok(Self { shared, workers })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        router(self.shared.clone())
    }

    /// Stops the workers (each finishes its current job), then signs a final checkpoint.
    /// Blocking.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_workers();
        let repeated = self
            .shared
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expired(Instant::now(), true);
        for r in &repeated {
            self.shared.store.record(repeated_entry(r))?;
        }
        self.shared
            .store
            .record(NewEntry::new("broker.stopped", "broker"))?;
        self.shared.store.checkpoint()?;
        Ok(())
    }

    fn stop_workers(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.1.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn notify(shared: &Shared) {
    let mut n = shared.wake.0.lock().unwrap_or_else(|p| p.into_inner());
    *n += 1;
    shared.wake.1.notify_all();
}

pub(crate) fn current(shared: &Shared) -> Arc<Current> {
    shared
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

type ApiResult<T> = std::result::Result<T, ApiError>;

// ---- auth ----------------------------------------------------------------------------------

/// The authenticated caller.
struct Auth(Principal);

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

impl Auth {
    /// The caller as an operator id.
    fn operator(&self) -> ApiResult<OperatorId> {
        self.0
            .name
            .parse()
            .map_err(|_| ApiError::forbidden("this principal is not a valid operator id"))
    }

    fn require(&self, roles: &[Role]) -> ApiResult<()> {
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
async fn audit_denials(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
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
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
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
fn repeated_entry(r: &crate::denials::Repeated) -> NewEntry {
    NewEntry::new("access.denied.repeated", &r.source.principal).detail(json!({
        "count": r.count,
        "window_secs": r.window_secs,
        "sample_paths": r.sample_paths,
        "source": r.source.address.map(|a| a.to_string()),
    }))
}

async fn timeout(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let limit = Duration::from_secs(s.config.request_timeout_secs.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

fn router(s: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/result", get(job_result))
        .route("/v1/jobs/{id}/receipt", get(job_receipt))
        .route("/v1/jobs/{id}/cancel", post(job_cancel))
        .route("/v1/datasets", get(datasets))
        .route("/v1/datasets/{name}", get(dataset))
        .route("/v1/budget", get(budget))
        .route("/v1/estimate", post(estimate))
        .route("/v1/reviews", get(reviews))
        .route("/v1/reviews/{id}/{decision}", post(review))
        .route("/v1/audit", get(audit_log))
        .route("/v1/admin/policy/reload", post(reload))
        .route("/v1/admin/{kind}/{name}/{action}", post(suspend))
        .route("/v1/admin/usage", get(usage))
        .route("/v1/admin/suspensions", get(suspensions))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn_with_state(s.clone(), timeout));
    let streams = Router::new().route("/v1/jobs/{id}/events", get(events));
    api.merge(streams)
        .fallback(|| async {
            ApiError::not_found("no such endpoint; the API lives under /v1 (see docs/operator.md)")
        })
        .layer(middleware::from_fn_with_state(s.clone(), audit_denials))
        .layer(DefaultBodyLimit::max(MAX_SUBMIT_BODY))
        .with_state(s)
}

// ---- helpers -------------------------------------------------------------------------------

fn body(b: std::result::Result<Bytes, BytesRejection>, max: usize) -> ApiResult<Bytes> {
    let b = b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the request body is larger than {max} bytes"),
            )
        } else {
            ApiError::new(ErrorCode::BadBody, "the request body could not be read")
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
    Ok(b)
}

fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, b: &[u8]) -> ApiResult<T> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
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

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    l.chars().take(200).collect()
}

fn query<T>(q: std::result::Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::new(
            ErrorCode::BadQuery,
            format!("invalid query string: {}", first_line(&e.body_text())),
        )
    })
}

/// A job id from the request path (`{id}`): any other text is a 404, as for an unknown job.
impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let UrlPath(id) = UrlPath::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("no such job"))?;
        id.parse().map_err(ApiError::not_found)
    }
}

/// Loads a job the caller may see: its operator, or any reviewer/admin when `staff_ok`.
fn visible_job(
    s: &Shared,
    auth: &Auth,
    id: &JobId,
    staff_ok: bool,
) -> ApiResult<crate::store::JobInfo> {
    let job = s
        .store
        .job(id.as_str())?
        .ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))?;
    let mine = auth.0.role == Role::Operator && job.operator == auth.0.name;
    if mine || (staff_ok && auth.0.role != Role::Operator) {
        Ok(job)
    } else {
        Err(ApiError::forbidden(format!("job `{id}` is not yours")))
    }
}

// ---- operator endpoints --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitJson {
    purpose: String,
    #[serde(default)]
    params: String,
    datasets: Vec<String>,
    #[serde(default)]
    max_epsilon: Option<f64>,
    wasm_base64: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    purpose: Option<String>,
    #[serde(default)]
    params: String,
    datasets: Option<String>,
    max_epsilon: Option<f64>,
}

async fn submit(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    headers: HeaderMap,
    q: std::result::Result<Query<SubmitQuery>, QueryRejection>,
    b: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    auth.require(&[Role::Operator])?;
    let job = Submission::read(&headers, q, b)?;
    job.check(&s.limits)?;
    let operator = auth.operator()?;
    let needs_review = {
        let cur = current(&s);
        admit(
            cur.sandbox.engine().policy(),
            &operator,
            &job.datasets,
            job.max_epsilon,
        )
        .map_err(Refusal::into_api)?
    };
    room_for(&s, &auth, &job.datasets, needs_review)?;
    // Compile now: an invalid job is refused at the door, and the first run skips compilation.
    let s2 = s.clone();
    let Submission {
        purpose,
        params,
        datasets,
        max_epsilon,
        wasm,
    } = job;
    let wasm =
        tokio::task::spawn_blocking(move || current(&s2).sandbox.precompile(&wasm).map(|_| wasm))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::new(ErrorCode::InvalidWasm, e.to_string()))?;
    let (id, state) = s.store.submit(&NewJob {
        operator: &auth.0.name,
        purpose: &purpose,
        params: &params,
        wasm: &wasm,
        datasets: &datasets,
        max_epsilon,
        needs_review,
    })?;
    notify(&s);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{id}"))],
        Json(json!({ "id": id, "state": state, "wasm_sha256": sha256_hex(&wasm) })),
    )
        .into_response())
}

/// A job as submitted: application/wasm with its metadata in the query string, or
/// application/json with the wasm in base64.
struct Submission {
    purpose: String,
    params: String,
    datasets: Vec<String>,
    max_epsilon: Option<f64>,
    wasm: Vec<u8>,
}

impl Submission {
    fn read(
        headers: &HeaderMap,
        q: std::result::Result<Query<SubmitQuery>, QueryRejection>,
        b: std::result::Result<Bytes, BytesRejection>,
    ) -> ApiResult<Self> {
        let b = body(b, MAX_SUBMIT_BODY)?;
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let job = if ct.starts_with("application/json") {
            let j: SubmitJson = json_body(headers, &b)?;
            let wasm = base64::engine::general_purpose::STANDARD
                .decode(j.wasm_base64.as_bytes())
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::BadWasmEncoding,
                        "wasm_base64 is not valid base64",
                    )
                })?;
            Self {
                purpose: j.purpose,
                params: j.params,
                datasets: j.datasets,
                max_epsilon: j.max_epsilon,
                wasm,
            }
        } else if ct.starts_with("application/wasm") || ct.starts_with("application/octet-stream") {
            let q = query(q)?;
            Self {
                purpose: q.purpose.unwrap_or_default(),
                params: q.params,
                datasets: q
                    .datasets
                    .unwrap_or_default()
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect(),
                max_epsilon: q.max_epsilon,
                wasm: b.to_vec(),
            }
        } else {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "submit the job as application/wasm (metadata in the query string) or as application/json with wasm_base64",
            ));
        };
        Ok(Self {
            purpose: job.purpose.trim().to_string(),
            ..job
        })
    }

    /// Refuses fields out of range, before anything is looked up.
    fn check(&self, limits: &Limits) -> ApiResult<()> {
        if self.purpose.is_empty() || self.purpose.chars().count() > 500 {
            return Err(ApiError::new(
                ErrorCode::BadPurpose,
                "state the job's purpose (1 to 500 characters)",
            ));
        }
        if self.params.len() > limits.max_params_bytes {
            return Err(ApiError::new(
                ErrorCode::ParamsTooLarge,
                format!(
                    "the parameters are {} bytes; at most {} are accepted",
                    self.params.len(),
                    limits.max_params_bytes
                ),
            ));
        }
        if self.wasm.is_empty() || self.wasm.len() > MAX_WASM_BYTES {
            return Err(ApiError::new(
                ErrorCode::BadWasm,
                format!("a job is 1 byte to {MAX_WASM_BYTES} bytes of wasm"),
            ));
        }
        if self.datasets.is_empty() || self.datasets.len() > 16 {
            return Err(ApiError::new(
                ErrorCode::BadDatasets,
                "name the datasets the job will use (1 to 16)",
            ));
        }
        if let Some(m) = self.max_epsilon
            && !(m.is_finite() && m > 0.0)
        {
            return Err(ApiError::new(
                ErrorCode::BadEpsilon,
                "max_epsilon must be a number above 0",
            ));
        }
        Ok(())
    }
}

/// Why a job may not run, from the policy alone.
pub(crate) enum Refusal {
    /// No grant covers a dataset for the operator today.
    NotGranted(String),
    /// The job's ε cap exceeds a grant's.
    Epsilon(String),
}

impl Refusal {
    fn into_api(self) -> ApiError {
        match self {
            Self::NotGranted(m) => ApiError::forbidden(m),
            Self::Epsilon(m) => ApiError::new(ErrorCode::BadEpsilon, m),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotGranted(m) | Self::Epsilon(m) => f.write_str(m),
        }
    }
}

/// Admission by policy, at submission and again when a worker starts the job: every dataset
/// granted to `operator` today, and the job's ε cap within each grant's per-job cap in the
/// dataset's own measure (on zCDP datasets it caps ρ at ε²/2, as the runtime applies it).
/// Returns whether a reviewer must approve the job first.
pub(crate) fn admit(
    policy: &Policy,
    operator: &OperatorId,
    datasets: &[String],
    max_epsilon: Option<f64>,
) -> std::result::Result<bool, Refusal> {
    let today = sluice_policy::Date::today_utc();
    let mut review = false;
    for d in datasets {
        let id = DatasetId::new(d).map_err(|_| {
            Refusal::NotGranted(format!(
                "dataset `{}` is not granted to operator `{operator}`",
                first_line(d)
            ))
        })?;
        let grant = policy
            .authorize(operator, &id, today)
            .map_err(|d| Refusal::NotGranted(d.to_string()))?;
        let zcdp = policy
            .datasets
            .get(&id)
            .is_some_and(|d| d.measure == sluice_policy::PrivacyMeasure::Zcdp);
        match max_epsilon {
            Some(m) if zcdp && m * m / 2.0 > grant.rho_per_job => {
                return Err(Refusal::Epsilon(format!(
                    "max_epsilon {m} caps ρ at {} (ε²/2) on the zCDP dataset `{id}`, above the grant's per-job ρ cap of {}",
                    m * m / 2.0,
                    grant.rho_per_job
                )));
            }
            Some(m) if !zcdp && m > grant.epsilon_per_job => {
                return Err(Refusal::Epsilon(format!(
                    "max_epsilon {m} exceeds the grant's per-job cap of {} on `{id}`",
                    grant.epsilon_per_job
                )));
            }
            _ => {}
        }
        review |= grant.review == Review::Required;
    }
    Ok(review)
}

/// Refuses a submission when its operator or a dataset is suspended, or the queue it would wait
/// in is full: the review queue (per operator and in total) or the run queue.
fn room_for(s: &Shared, auth: &Auth, datasets: &[String], needs_review: bool) -> ApiResult<()> {
    if let Some(why) = s.store.suspensions()?.iter().find(|(k, n, _)| {
        (k == "operator" && *n == auth.0.name) || (k == "dataset" && datasets.contains(n))
    }) {
        return Err(ApiError::forbidden(format!(
            "{} `{}` is suspended",
            why.0, why.1
        )));
    }
    let (code, message, retry_after) = if needs_review {
        // Jobs waiting for review hold their wasm in the database: bounded per operator and in
        // total, like the run queue.
        let (mine, all) = s.store.pending_review_counts(&auth.0.name)?;
        let message = if mine >= s.config.max_pending_reviews_per_operator {
            format!(
                "{mine} of your jobs are waiting for review (at most {} per operator); wait for decisions or cancel some",
                s.config.max_pending_reviews_per_operator
            )
        } else if all >= s.config.max_pending_reviews {
            format!(
                "{all} jobs are waiting for review (at most {}); try again later",
                s.config.max_pending_reviews
            )
        } else {
            return Ok(());
        };
        (ErrorCode::ReviewQueueFull, message, 60)
    } else if s.store.queued()? >= s.config.max_queued {
        (
            ErrorCode::QueueFull,
            format!("{} jobs are queued; try again later", s.config.max_queued),
            5,
        )
    } else {
        return Ok(());
    };
    Err(ApiError::new(code, message).retry_after(retry_after))
}

async fn list_jobs(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    let jobs = match auth.0.role {
        Role::Operator => s.store.jobs_of(&auth.0.name, 200)?,
        _ => s.store.jobs_recent(200)?,
    };
    Ok(Json(json!({ "jobs": jobs })))
}

async fn job_status(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<Json<crate::store::JobInfo>> {
    Ok(Json(visible_job(&s, &auth, &id, true)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultQuery {
    format: Option<String>,
}

async fn job_result(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
    q: std::result::Result<Query<ResultQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let job = visible_job(&s, &auth, &id, false)?;
    let csv = match query(q)?.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::new(ErrorCode::BadFormat, "format is json or csv")),
    };
    let Some((report, _)) = s.store.result(id.as_str(), csv)? else {
        return Err(ApiError::new(
            ErrorCode::NotReleased,
            format!(
                "job `{id}` is {}; only succeeded jobs have a report",
                job.state.as_str()
            ),
        ));
    };
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    Ok(([(header::CONTENT_TYPE, ct)], report).into_response())
}

async fn job_receipt(State(s): State<Arc<Shared>>, auth: Auth, id: JobId) -> ApiResult<Response> {
    let job = visible_job(&s, &auth, &id, true)?;
    let Some((_, receipt)) = s.store.result(id.as_str(), false)? else {
        return Err(ApiError::new(
            ErrorCode::NotReleased,
            format!(
                "job `{id}` is {}; only succeeded jobs have a receipt",
                job.state.as_str()
            ),
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], receipt).into_response())
}

async fn job_cancel(State(s): State<Arc<Shared>>, auth: Auth, id: JobId) -> ApiResult<Json<Value>> {
    visible_job(&s, &auth, &id, false)?;
    s.store.cancel(id.as_str(), &auth.0.name)?;
    Ok(Json(json!({ "id": id, "state": "cancelled" })))
}

async fn events(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    id: JobId,
) -> ApiResult<
    Sse<impl futures_util::Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>>,
> {
    visible_job(&s, &auth, &id, true)?;
    let stream = futures_util::stream::unfold(
        (s, id, 0i64, false, std::collections::VecDeque::new()),
        |(s, id, mut after, mut done, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    let e: crate::store::Event = e;
                    let ev = SseEvent::default()
                        .event(e.kind.clone())
                        .id(e.id.to_string())
                        .data(
                            json!({ "at_ms": e.at_ms, "kind": e.kind, "detail": e.detail })
                                .to_string(),
                        );
                    return Some((Ok(ev), (s, id, after, done, pending)));
                }
                if done || s.closing.load(Ordering::SeqCst) {
                    return None;
                }
                let store = s.store.clone();
                let changed = store.changed().notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                match store.events(id.as_str(), after) {
                    Ok(evs) if !evs.is_empty() => {
                        after = evs.last().map_or(after, |e| e.id);
                        done = evs.iter().any(|e| {
                            matches!(
                                e.kind.as_str(),
                                "released" | "failed" | "rejected" | "cancelled"
                            )
                        });
                        pending.extend(evs);
                    }
                    Ok(_) => {
                        // Another process (e.g. `sluice token create`) may write without waking
                        // us: look again every second regardless.
                        let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
                    }
                    Err(_) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn dataset_json(d: &sluice_policy::Dataset) -> Value {
    let columns: Vec<Value> = d
        .columns
        .iter()
        .filter(|c| !matches!(c.kind, ColumnKind::Hidden))
        .map(|c| {
            let mut v = json!({ "name": c.name, "kind": c.kind.name() });
            if let Some((lo, hi)) = c.kind.bounds_f64() {
                v["bounds"] = json!([lo, hi]);
            }
            if let Some(edges) = &c.bins {
                v["bins"] = json!(edges);
            }
            if let ColumnKind::Date {
                bounds: Some((lo, hi)),
            } = &c.kind
            {
                v["bounds"] = json!([lo.to_string(), hi.to_string()]);
            }
            if let ColumnKind::Category {
                public_values,
                partition_selection,
            } = &c.kind
            {
                if let Some(vals) = public_values {
                    v["public_values"] = json!(vals);
                }
                if *partition_selection {
                    v["partition_selection"] = json!(true);
                }
            }
            v
        })
        .collect();
    json!({
        "name": d.id.as_str(),
        "holder": d.holder,
        "classification": d.classification.as_str(),
        "privacy_unit": d.privacy_unit,
        "max_rows_per_unit": d.max_rows_per_unit,
        "max_groups_per_unit": d.max_groups_per_unit,
        "max_rows_per_group": d.max_rows_per_group,
        "privacy_measure": d.measure.as_str(),
        "columns": columns,
    })
}

fn visible_datasets(s: &Shared, auth: &Auth) -> Vec<Value> {
    let cur = s.current.read().unwrap_or_else(|p| p.into_inner());
    let policy = cur.sandbox.engine().policy();
    match auth.0.role {
        Role::Operator => match auth.0.name.parse::<OperatorId>() {
            Ok(op) => policy
                .granted_datasets(&op, sluice_policy::Date::today_utc())
                .into_iter()
                .map(dataset_json)
                .collect(),
            Err(_) => vec![],
        },
        _ => policy.datasets.values().map(dataset_json).collect(),
    }
}

async fn datasets(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    // Lookup tables are public reference data: every caller may see them, values included.
    let cur = current(&s);
    let catalog = cur.sandbox.engine().catalog();
    let lookups: Vec<Value> = cur
        .sandbox
        .engine()
        .policy()
        .lookups
        .keys()
        .filter_map(|id| catalog.lookup(id))
        .map(|l| json!({ "name": l.policy.id.as_str(), "key": l.policy.key, "columns": l.domains }))
        .collect();
    Ok(Json(
        json!({ "datasets": visible_datasets(&s, &auth), "lookups": lookups }),
    ))
}

async fn dataset(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    visible_datasets(&s, &auth)
        .into_iter()
        .find(|d| d["name"] == name.as_str())
        .map(Json)
        .ok_or_else(|| {
            ApiError::forbidden(format!(
                "dataset `{}` is not granted to `{}`",
                first_line(&name),
                auth.0.name
            ))
        })
}

async fn budget(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Operator])?;
    let op = auth.operator()?;
    let cur = current(&s);
    let policy = cur.sandbox.engine().policy();
    let today = sluice_policy::Date::today_utc();
    let mut out = Vec::new();
    for d in policy.granted_datasets(&op, today) {
        let g = policy.authorize(&op, &d.id, today).expect("granted");
        let spent = s.store.spent(
            op.as_str(),
            d.id.as_str(),
            "",
            Duration::from_secs(g.period_secs),
        );
        // Caps and spending in the dataset's measure: ε, or ρ on zCDP datasets.
        let (measure, per_period) = match d.measure {
            sluice_policy::PrivacyMeasure::Pure => ("pure", g.epsilon_per_period),
            sluice_policy::PrivacyMeasure::Zcdp => ("zcdp", g.rho_per_period),
        };
        let spent_period = spent.period.in_measure(d.measure);
        out.push(json!({
            "dataset": d.id.as_str(),
            "privacy_measure": measure,
            "epsilon_per_job": g.epsilon_per_job,
            "epsilon_per_period": g.epsilon_per_period,
            "rho_per_job": g.rho_per_job,
            "rho_per_period": g.rho_per_period,
            "period_secs": g.period_secs,
            "spent_this_period": spent_period,
            "remaining_this_period": (per_period - spent_period).max(0.0),
            "delta_per_period": g.delta_per_period,
            "delta_spent_this_period": spent.period.delta,
            // The (ε, δ)-DP guarantee this period's spending amounts to.
            "implied_epsilon_this_period": spent.implied_epsilon(),
            "implied_delta_this_period": spent.period.delta
                + if measure == "zcdp" && spent.period.rho > 0.0 {
                    sluice_runtime::privacy::accountant::ZCDP_REPORT_DELTA
                } else {
                    0.0
                },
            "expires": g.expires.to_string(),
            "review": if g.review == Review::Required { "required" } else { "none" },
        }));
    }
    Ok(Json(json!({ "operator": op.as_str(), "budgets": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EstimateBody {
    sql: String,
    epsilon: Option<f64>,
    rho: Option<f64>,
    accuracy: Option<f64>,
}

async fn estimate(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    headers: HeaderMap,
    b: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Operator])?;
    let b = body(b, MAX_BODY)?;
    let r: EstimateBody = json_body(&headers, &b)?;
    let budget = match (r.epsilon, r.rho, r.accuracy) {
        (Some(e), None, None) => sluice_runtime::Budget::Epsilon(e),
        (None, Some(rho), None) => sluice_runtime::Budget::Rho(rho),
        (None, None, Some(a)) => sluice_runtime::Budget::Accuracy(a),
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
        Ok(e) => Ok(Json(serde_json::to_value(&e).map_err(ApiError::internal)?)),
        Err(e @ sluice_runtime::QueryError::NotGranted(_)) => {
            Err(ApiError::forbidden(e.to_string()))
        }
        Err(e) => Err(ApiError::new(ErrorCode::QueryRefused, e.to_string())),
    }
}

// ---- reviewer endpoints --------------------------------------------------------------------

async fn reviews(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Reviewer])?;
    Ok(Json(json!({ "pending": s.store.pending_reviews()? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    reason: String,
}

async fn review(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    headers: HeaderMap,
    UrlPath((id, decision)): UrlPath<(String, String)>,
    b: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Reviewer])?;
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::not_found("the decision is approve or reject")),
    };
    let id: JobId = id.parse().map_err(ApiError::not_found)?;
    let b = body(b, MAX_BODY)?;
    let r: ReviewBody = json_body(&headers, &b)?;
    if r.reason.trim().is_empty() || r.reason.len() > 2000 {
        return Err(ApiError::new(
            ErrorCode::BadReason,
            "give a reason (1 to 2000 bytes)",
        ));
    }
    let state = s
        .store
        .review(id.as_str(), &auth.0.name, approve, r.reason.trim())?;
    notify(&s);
    Ok(Json(json!({ "id": id, "state": state })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    job: Option<String>,
    operator: Option<String>,
    dataset: Option<String>,
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

async fn audit_log(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    q: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Reviewer, Role::Admin])?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = s.store.audit_entries(
        q.job.as_deref(),
        q.operator.as_deref(),
        q.dataset.as_deref(),
        q.after,
        limit,
    )?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.seq));
    Ok(Json(
        json!({ "entries": entries, "next_after": next.flatten() }),
    ))
}

// ---- admin endpoints -----------------------------------------------------------------------

async fn reload(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Admin])?;
    let who = auth.0.name.clone();
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<Json<Value>> {
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
        Ok(Json(json!({ "policy_sha256": sha })))
    })
    .await
    .map_err(ApiError::internal)?
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn suspend(
    State(s): State<Arc<Shared>>,
    auth: Auth,
    headers: HeaderMap,
    UrlPath((kind, name, action)): UrlPath<(String, String, String)>,
    b: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Admin])?;
    let kind: &'static str = match kind.as_str() {
        "operators" => "operator",
        "datasets" => "dataset",
        _ => {
            return Err(ApiError::not_found(
                "suspend operators/<id> or datasets/<name>",
            ));
        }
    };
    let suspend = match action.as_str() {
        "suspend" => true,
        "resume" => false,
        _ => return Err(ApiError::not_found("the action is suspend or resume")),
    };
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::new(
            ErrorCode::BadName,
            "a name is 1 to 64 characters",
        ));
    }
    let b = body(b, MAX_BODY)?;
    let r: ReasonBody = if b.is_empty() {
        ReasonBody::default()
    } else {
        json_body(&headers, &b)?
    };
    s.store
        .set_suspended(kind, &name, suspend, &auth.0.name, &r.reason)?;
    Ok(Json(
        json!({ "kind": kind, "name": name, "suspended": suspend }),
    ))
}

async fn usage(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Admin])?;
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
    let rows: Vec<Value> = s
        .store
        .usage()?
        .into_iter()
        .map(|u| {
            let mut v = serde_json::to_value(&u).unwrap_or(Value::Null);
            v["holder"] = json!(holders.get(&u.dataset));
            v
        })
        .collect();
    Ok(Json(json!({ "usage": rows })))
}

async fn suspensions(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(&[Role::Admin])?;
    let list: Vec<Value> = s
        .store
        .suspensions()?
        .into_iter()
        .map(|(k, n, r)| json!({ "kind": k, "name": n, "reason": r }))
        .collect();
    Ok(Json(json!({ "suspensions": list })))
}

async fn metrics(State(s): State<Arc<Shared>>, auth: Auth) -> ApiResult<Response> {
    auth.require(&[Role::Admin])?;
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
    let (queries, eps) = s.store.charge_totals()?;
    out.push_str(&format!(
        "# HELP sluice_queries_total Queries charged.\n# TYPE sluice_queries_total counter\nsluice_queries_total {queries}\n"
    ));
    out.push_str(&format!(
        "# HELP sluice_epsilon_charged_total Epsilon charged, all grants.\n# TYPE sluice_epsilon_charged_total counter\nsluice_epsilon_charged_total {eps}\n"
    ));
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

/// Serves the API on `listener` until `shutdown` resolves, then stops the broker cleanly.
pub async fn serve(
    broker: Broker,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = broker.router();
    let shared = broker.shared.clone();
    let limits = shared.config.connections.clone();
    crate::listener::serve(listener, app, limits, async move {
        shutdown.await;
        // Open event streams would hold the graceful shutdown forever: end them.
        shared.closing.store(true, Ordering::SeqCst);
        shared.store.changed().notify_waiters();
    })
    .await
    .context("the HTTP server failed")?;
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .context("shutdown panicked")?
}

/// A broker serving on a background thread (the demo, benchmarks and tests embed one).
pub struct Running {
    /// Its base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Running {
    /// Starts a broker on `data_dir` listening on `listen` (port 0 picks a free port). Blocking.
    pub fn start(data_dir: &Path, config: Config, limits: Limits, listen: &str) -> Result<Self> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let dir = data_dir.to_path_buf();
        let listen = listen.to_string();
        let thread = std::thread::Builder::new()
            .name("sluice-broker".into())
            .spawn(move || -> Result<()> {
                let started = (|| {
                    let broker = Broker::start(&dir, config, limits)?;
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("sluice-http")
                        .enable_all()
                        .build()?;
                    let listener = rt.block_on(tokio::net::TcpListener::bind(&listen))?;
                    anyhow::Ok((broker, rt, listener))
                })();
                let (broker, rt, listener) = match started {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let _ = addr_tx.send(Ok(listener.local_addr()?));
                let r = rt.block_on(serve(broker, listener, async {
                    let _ = stop_rx.await;
                }));
                rt.shutdown_timeout(Duration::from_secs(5));
                r
            })?;
        let addr = addr_rx
            .recv()
            .context("the broker thread ended before listening")?
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self {
            url: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops serving, lets running jobs finish, and signs a final checkpoint.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the broker thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
