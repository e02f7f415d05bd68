//! # sluice-runtime
//!
//! The sandbox of Sluice: it runs an analysis job (a WebAssembly component) in wasmtime, and answers
//! the job's SQL only with differentially private aggregates computed by DataFusion and noised by
//! OpenDP, charging the privacy budget before every answer.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sluice_runtime::{Sandbox, SandboxConfig, InMemoryAccountant, JobRequest};
//!
//! let policy = sluice_policy::load("policies/examples".as_ref())?;
//! let sandbox = Sandbox::new(SandboxConfig::new(policy, ".", Arc::new(InMemoryAccountant::new())))?;
//! let wasm = std::fs::read("visits_by_district.wasm")?;
//! let out = sandbox.run_job(&JobRequest::new("canal-analytics".parse()?, "job-1", &wasm, "{}"))
//!     .map_err(|f| f.error)?;
//! println!("{}", out.report.to_json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Core concepts
//! - [`Sandbox`] is the front type: one wasmtime engine, a cache of compiled components keyed by the
//!   sha256 of the submitted wasm, the DataFusion catalog and the privacy engine.
//! - [`Limits`] caps each job: fuel, wall clock, memory, stack, queries, report and log size. A job
//!   that exceeds one stops with a typed [`JobError`]; the sandbox carries on.
//! - The privacy engine ([`privacy`]) validates SQL on DataFusion's logical plan, bounds
//!   contributions, clamps, charges an [`Accountant`], executes and adds OpenDP noise.
//! - Errors have three audiences: [`QueryError`] is returned to the guest and depends only on the
//!   query and the policy; [`JobError`] ends a job; [`SandboxError`] stops the sandbox from starting.
//!
//! # Privacy
//! A job sees public metadata and DP answers only; see [`privacy`] for what each answer releases,
//! its sensitivity, mechanism and accounting. Out of scope: physical side channels and timing of
//! query execution (documented in the threat model).

pub mod data;
pub mod mock;
pub mod plan;
pub mod privacy;
pub mod remote;
pub mod report;
pub mod rows;
pub mod sql_job;
pub mod views;
mod wasm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_policy::{DatasetId, OperatorId, Policy};

pub use privacy::accountant::{
    Accountant, Amount, BudgetError, Caps, Charge, DatasetCap, InMemoryAccountant, Recorded, Spent,
    Totals,
};
pub use privacy::cache::{AnswerCache, CacheKey, InMemoryAnswerCache};
pub use privacy::{Budget, ColumnAccuracy, Estimate, QueryRecord};
pub use report::{NoisyTable, PrivacyCost, Report, Scalar, Value, sig};
pub use wasm::{JobFailure, JobOutput, LogLine, MAX_WASM_BYTES};

/// Per-job resource caps. Every default is conservative; raise them deliberately.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Wasm fuel (roughly instructions). Default 10 billion (seconds of pure compute).
    pub fuel: u64,
    /// Wall-clock time for the whole job, queries included. Default 60 s.
    pub wall_clock: Duration,
    /// Linear memory, in bytes. Default 256 MiB.
    pub memory_bytes: usize,
    /// Elements per table. Default 100,000.
    pub table_elements: usize,
    /// Instances, tables and memories per job. Default 16.
    pub instances: usize,
    /// Queries per job. Default 100.
    pub max_queries: u32,
    /// Size of the released report. Default 4 MiB.
    pub max_report_bytes: usize,
    /// Total bytes of log lines kept. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Size of the operator's parameter string. Default 64 KiB.
    pub max_params_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            wall_clock: Duration::from_secs(60),
            memory_bytes: 256 << 20,
            table_elements: 100_000,
            instances: 16,
            max_queries: 100,
            max_report_bytes: 4 << 20,
            max_log_bytes: 64 << 10,
            max_params_bytes: 64 << 10,
        }
    }
}

/// Why a query was refused. Every message depends only on the query text and the policy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The SQL could not be parsed or planned.
    #[error("invalid SQL: {0}")]
    InvalidSql(String),
    /// Outside the supported subset.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No grant for the dataset.
    #[error("not granted: {0}")]
    NotGranted(String),
    /// Unknown or hidden column.
    #[error("column denied: {0}")]
    ColumnDenied(String),
    /// Aggregation not allowed by the grant, or column cannot be aggregated.
    #[error("aggregation denied: {0}")]
    AggregationDenied(String),
    /// Bad query options.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Not enough budget; nothing was charged.
    #[error("budget exhausted: {0}")]
    BudgetExhausted(String),
    /// The job's query limit was reached.
    #[error("too many queries: the limit is {0} per job")]
    TooManyQueries(u32),
    /// Execution failed after the charge (the cause is never shown), or, with nothing charged,
    /// the cluster that runs the dataset's queries did not answer before it.
    #[error("query execution failed")]
    ExecutionFailed,
}

/// Why a job ended without a report.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The submitted bytes are not a valid job component.
    #[error("invalid wasm: {0}")]
    InvalidWasm(String),
    /// The component imports something the sandbox never provides.
    #[error(
        "forbidden import `{0}`: jobs may import only sluice:job (types, data, log) and the null WASI 0.2 interfaces (cli environment, exit, stdio and terminals; clocks; filesystem types and preopens; io; random); sockets, HTTP and everything else are never linked"
    )]
    ForbiddenImport(String),
    /// The job ran out of fuel.
    #[error("the job exceeded its compute limit ({0} fuel)")]
    FuelExhausted(u64),
    /// The job ran past its wall-clock limit.
    #[error("the job exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// The job tried to grow memory past its cap.
    #[error("the job exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The job recursed too deeply.
    #[error("the job overflowed its stack")]
    StackOverflow,
    /// The job trapped for another reason (e.g. a panic).
    #[error("the job trapped: {0}")]
    Trapped(String),
    /// The report is larger than allowed.
    #[error("the report is {bytes} bytes; the limit is {limit}")]
    ReportTooLarge {
        /// Its size.
        bytes: usize,
        /// The cap.
        limit: usize,
    },
    /// The parameter string is larger than allowed.
    #[error("the parameters are {bytes} bytes; the limit is {limit}")]
    ParamsTooLarge {
        /// Its size.
        bytes: usize,
        /// The cap.
        limit: usize,
    },
    /// The job tried to pass more bytes to the host in one call (its report, a query, a log line)
    /// than the transfer cap allows; the host stopped copying.
    #[error(
        "the job passed more than {0} bytes to the host in one call (report, query or log line)"
    )]
    TransferTooLarge(usize),
    /// The job returned an error of its own.
    #[error("the job returned an error: {0}")]
    Guest(String),
    /// The job called WASI `exit` (Python's `sys.exit`, for instance) instead of returning a
    /// report.
    #[error("the job called exit({0}) before returning a report")]
    Exited(u8),
    /// A bug or resource failure in the host.
    #[error("internal sandbox error: {0}")]
    Host(String),
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A dataset could not be registered.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// The wasm engine or the async runtime could not start.
    #[error("cannot start the sandbox: {0}")]
    Start(String),
}

/// How to build a [`Sandbox`].
pub struct SandboxConfig {
    /// The validated policy.
    pub policy: Policy,
    /// Where relative dataset sources are resolved.
    pub data_root: PathBuf,
    /// Where charges go.
    pub accountant: Arc<dyn Accountant>,
    /// Default per-job limits.
    pub limits: Limits,
    /// DataFusion partitions (default: the number of CPUs).
    pub partitions: usize,
    /// Sources whose decoded rows take at most this many bytes (and whose file is no larger)
    /// are read once at start and held in memory ([`data::HeldInMemory`]); 0 scans every
    /// source from its file at each query. Default [`data::DEFAULT_MEMORY_BYTES`].
    pub memory_bytes: usize,
    /// Where answers to repeated queries are kept (default: in memory). `None` makes every
    /// repetition a fresh, charged release: only for statistical tests of the mechanisms.
    pub answer_cache: Option<Arc<dyn AnswerCache>>,
    /// Where compiled jobs are kept across restarts (default: nowhere, memory only). Entries
    /// are verified before they are loaded (see the runtime's `wasm/disk.rs`).
    pub compiled_dir: Option<PathBuf>,
    /// Register mock rows drawn from the policy's public metadata instead of the sources
    /// ([`mock`]): for plans without data. Nothing such a sandbox answers is about anyone.
    pub mock_data: bool,
    /// Whether contribution bounding uses the per-dataset index of heavy units (default) or sends
    /// every row through the random choice ([`privacy::PrivacyEngine::without_contribution_index`]).
    pub contribution_index: bool,
    /// Another engine for the datasets scanned from their files (a Ballista cluster, through
    /// `sluice-scale`; see [`remote`]). Default: none, every query runs in this process.
    pub remote: Option<remote::RemoteEngine>,
}

impl SandboxConfig {
    /// A configuration with default limits.
    pub fn new(
        policy: Policy,
        data_root: impl Into<PathBuf>,
        accountant: Arc<dyn Accountant>,
    ) -> Self {
        Self {
            policy,
            data_root: data_root.into(),
            accountant,
            limits: Limits::default(),
            partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_bytes: data::DEFAULT_MEMORY_BYTES,
            answer_cache: Some(Arc::new(InMemoryAnswerCache::new())),
            compiled_dir: None,
            mock_data: false,
            contribution_index: true,
            remote: None,
        }
    }

    /// Registers mock rows drawn from the policy's public metadata in place of every source
    /// (which need not exist): a sandbox for plans ([`Sandbox::plan_job`]) without data.
    pub fn with_mock_data(mut self) -> Self {
        self.mock_data = true;
        self
    }

    /// Keeps compiled jobs in `dir` across restarts: a big job (Python) is compiled once.
    pub fn with_compiled_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.compiled_dir = Some(dir.into());
        self
    }

    /// Keeps answers to repeated queries in `cache` (the broker's is in its database).
    pub fn with_answer_cache(mut self, cache: Arc<dyn AnswerCache>) -> Self {
        self.answer_cache = Some(cache);
        self
    }

    /// Answers every repetition afresh, each charged: for statistical tests of the mechanisms
    /// only. Without the cache an operator can average repeated answers (at full price).
    pub fn without_answer_cache(mut self) -> Self {
        self.answer_cache = None;
        self
    }

    /// Bounds contributions by sending every row through the random choice: the baseline of
    /// `sluice bench` and of the test that the contribution index changes no distribution.
    pub fn without_contribution_index(mut self) -> Self {
        self.contribution_index = false;
        self
    }

    /// Holds sources of at most `bytes` (on disk and decoded) in memory; 0 reads every source
    /// from its file at each query (a benchmark comparing with engines that scan the file).
    pub fn with_memory_bytes(mut self, bytes: usize) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// One job to run.
#[derive(Clone, Debug)]
pub struct JobRequest<'a> {
    /// Whose grant applies.
    pub operator: OperatorId,
    /// The job's id (per-job budget caps are keyed by it).
    pub job_id: String,
    /// The component (or SDK-built core module).
    pub wasm: &'a [u8],
    /// The operator's parameters, passed to `run`.
    pub params: &'a str,
    /// Limits for this job; `None` for the sandbox's defaults.
    pub limits: Option<Limits>,
    /// The only datasets the job may query; `None` for every dataset granted to the operator.
    pub datasets: Option<Vec<DatasetId>>,
    /// A per-job ε cap below the grant's, per dataset.
    pub max_epsilon: Option<f64>,
    /// The scenario the job runs under (`None`: the operator's only grant on each dataset).
    pub scenario: Option<String>,
}

impl<'a> JobRequest<'a> {
    /// A request with the sandbox's default limits.
    pub fn new(
        operator: OperatorId,
        job_id: impl Into<String>,
        wasm: &'a [u8],
        params: &'a str,
    ) -> Self {
        Self {
            operator,
            job_id: job_id.into(),
            wasm,
            params,
            limits: None,
            datasets: None,
            max_epsilon: None,
            scenario: None,
        }
    }

    /// Overrides the limits for this job.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Who asks this job's queries, within its declarations.
    pub(crate) fn asker(&self) -> privacy::Asker {
        privacy::Asker {
            scope: self.datasets.clone(),
            max_epsilon: self.max_epsilon,
            scenario: self.scenario.clone(),
            ..privacy::Asker::new(self.operator.clone(), self.job_id.clone())
        }
    }
}

/// Native stack of the sandbox's own threads (job threads and the data runtime's workers), where
/// all SQL planning runs: planning recurses over the statement, whose shape is bounded by
/// [`privacy::sql_bounds`] well inside this.
pub const PLANNING_STACK_BYTES: usize = 16 << 20;

/// The sandbox: the front type of this crate.
///
/// It can be dropped anywhere, also on an async runtime's thread: its own runtime is shut down
/// in the background rather than waited for.
pub struct Sandbox {
    host: wasm::Host,
    engine: Arc<privacy::PrivacyEngine>,
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    limits: Limits,
    /// Where lookups are read for mock catalogs.
    data_root: PathBuf,
    /// DataFusion partitions.
    partitions: usize,
    /// The mock catalogs of whole-job plans ([`plan`]), made on first use.
    mock: std::sync::Mutex<Option<Arc<Vec<data::Catalog>>>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its workers stop, which panics inside async code;
        // shutting it down in the background never blocks. Nothing of ours outlives the sandbox
        // on it: jobs and estimates wait for their tasks before returning.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Sandbox {
    /// Starts a sandbox: registers and hashes every dataset (failing closed if any source is missing
    /// or does not match the policy) and starts the wasm engine.
    ///
    /// It owns a small tokio runtime for DataFusion, so call it (and drop it) outside async code, or
    /// from `spawn_blocking`.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.partitions.clamp(1, 8))
            .thread_name("sluice-data")
            .thread_stack_size(PLANNING_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| SandboxError::Start(e.to_string()))?;
        let catalog = if config.mock_data {
            rt.block_on(data::Catalog::mock(
                &config.policy,
                &config.data_root,
                config.partitions,
                0,
            ))?
        } else {
            rt.block_on(data::Catalog::open(
                &config.policy,
                &config.data_root,
                data::CatalogOptions {
                    partitions: config.partitions,
                    memory_bytes: config.memory_bytes,
                    remote: config.remote.clone(),
                },
            ))?
        };
        let mut engine = privacy::PrivacyEngine::new(
            catalog,
            Arc::new(config.policy),
            config.accountant,
            config.answer_cache,
        );
        if !config.contribution_index {
            engine = engine.without_contribution_index();
        }
        let engine = Arc::new(engine);
        let host = wasm::Host::new(config.compiled_dir.as_deref())
            .map_err(|e| SandboxError::Start(e.to_string()))?;
        Ok(Self {
            host,
            engine,
            rt: Some(rt),
            limits: config.limits,
            data_root: config.data_root,
            partitions: config.partitions,
            mock: std::sync::Mutex::new(None),
        })
    }

    /// The privacy engine, for running queries without a job (tests, benchmarks, `estimate`).
    pub fn engine(&self) -> &Arc<privacy::PrivacyEngine> {
        &self.engine
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives until the sandbox is dropped")
    }

    /// Runs `f` on the sandbox's async runtime, on the calling thread.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt().block_on(f)
    }

    /// What `sql` would cost `asker` and how accurate it would be, without running or charging
    /// anything ([`privacy::PrivacyEngine::estimate`]). Planning runs on one of the sandbox's own
    /// threads, whose stack is known ([`PLANNING_STACK_BYTES`]), whatever the caller's thread.
    /// Blocking: call it outside async code (or in `spawn_blocking`).
    pub fn estimate(
        &self,
        asker: privacy::Asker,
        sql: String,
        budget: Budget,
    ) -> Result<Estimate, QueryError> {
        let engine = self.engine.clone();
        let task = self
            .rt()
            .spawn(async move { engine.estimate(&asker, &sql, budget).await });
        self.block_on(task).unwrap_or_else(|_| {
            Err(QueryError::Unsupported(
                "the query could not be planned".into(),
            ))
        })
    }

    /// Compiles `wasm` into the cache without running it; returns whether it was cached already.
    pub fn precompile(&self, wasm: &[u8]) -> Result<bool, JobError> {
        self.host.load(wasm).map(|(_, cached)| cached)
    }

    /// Runs one job to completion (blocking). Queries it asked before failing stay charged.
    /// A request whose wasm is [`sql_job::SQL_JOB`] runs the built-in SQL job.
    pub fn run_job(&self, req: &JobRequest<'_>) -> Result<JobOutput, JobFailure> {
        self.run_on(self.engine.clone(), req)
    }

    /// [`Sandbox::run_job`] answered by `engine` (the sandbox's own, or a plan's over mock data).
    pub(crate) fn run_on(
        &self,
        engine: Arc<privacy::PrivacyEngine>,
        req: &JobRequest<'_>,
    ) -> Result<JobOutput, JobFailure> {
        if req.wasm == sql_job::SQL_JOB.as_bytes() {
            return self.sql_job_on(engine, req);
        }
        let limits = req.limits.clone().unwrap_or_else(|| self.limits.clone());
        self.host.run(
            engine,
            self.rt().handle().clone(),
            req.asker(),
            limits,
            req.wasm,
            req.params,
        )
    }
}
