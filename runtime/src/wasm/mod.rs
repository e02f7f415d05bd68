//! The wasm host: compiles job components, links only the `sluice:job` imports, enforces limits and
//! turns traps into typed errors.
//!
//! Jobs are WebAssembly components built from `wasm32-unknown-unknown` with the guest SDK; a core
//! module built with the SDK is componentized on load against the host's own copy of the WIT
//! ([`load`]). Such jobs link nothing but `sluice:job`. A component built by another toolchain
//! (componentize-py for Python) also imports WASI 0.2; it gets the null WASI ([`wasi`]): those
//! interfaces with nothing behind them. A component that imports anything else (sockets, HTTP, an
//! unknown interface) fails before instantiation with an error naming the import.
//!
//! The engine enables exactly the WebAssembly features in [`load::JOB_FEATURES`]. The memory cap
//! is per job: every linear memory and table the job's instances create or grow counts against
//! one total ([`JobState`]'s resource limiter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};

use crate::privacy::{Asker, PrivacyEngine, QueryRecord};
use crate::report::{self, NoisyTable, PrivacyCost};
use crate::{JobError, Limits, QueryError};

mod disk;
mod load;
mod wasi;

pub(crate) use load::{configure as configure_features, with_feature_list};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "job",
    });
}

use bindings::Job;
use bindings::sluice::job::types as wit;

/// Interfaces a job may import, without version.
const ALLOWED_IMPORTS: &[&str] = &["sluice:job/types", "sluice:job/data", "sluice:job/log"];
/// The version of the `sluice:job` package this host implements (`guest-sdk/wit/job.wit`).
const WIT_VERSION: &str = "0.3.0";
/// Largest job binary accepted: compilation time grows with size, so this bounds it. A Python
/// job (componentize-py: the interpreter and standard library in the component's memory image)
/// is about 18 MB; this leaves room for its own modules.
pub const MAX_WASM_BYTES: usize = 40 << 20;
/// Most compiled components kept in memory.
const CACHE_CAPACITY: usize = 64;
/// Bytes a table element is counted as against the job's memory cap (a pointer and its tag).
const TABLE_ELEMENT_BYTES: usize = 16;
/// Epoch tick length: the wall-clock limit's resolution.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The text (truncated to 1 KiB).
    pub message: String,
}

/// Compiles and caches components; one per sandbox.
pub(crate) struct Host {
    engine: Engine,
    /// `sluice:job` only.
    linker: Linker<JobState>,
    /// `sluice:job` and the null WASI, for components that import WASI.
    wasi_linker: Linker<JobState>,
    contract: load::Contract,
    /// Where jobs' row functions are compiled and run: started with the first job that carries
    /// some (its instance pool reserves address space).
    rows: std::sync::OnceLock<crate::rows::RowEngine>,
    cache: Mutex<HashMap<[u8; 32], Loaded>>,
    /// Compiled components kept across restarts, if configured.
    disk: Option<disk::DiskCache>,
    _ticker: Ticker,
}

/// A compiled job and what it links against.
#[derive(Clone)]
pub(crate) struct Loaded {
    component: Component,
    /// Whether it imports WASI (and so gets the null WASI).
    wasi: bool,
    /// The row functions it carries, compiled.
    rows: Option<Arc<crate::rows::RowModule>>,
}

/// Advances the engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Per-job state inside the store.
pub(crate) struct JobState {
    engine: Arc<PrivacyEngine>,
    rt: tokio::runtime::Handle,
    asker: Asker,
    limits: Limits,
    queries: u32,
    pub(crate) log: Vec<LogLine>,
    log_bytes: usize,
    pub(crate) log_dropped: u64,
    pub(crate) records: Vec<QueryRecord>,
    /// Linear memory and tables of all the job's instances, against one cap.
    memory: MemoryBudget,
    /// When the job's wall clock runs out. The epoch interrupt stops wasm code only, so host
    /// calls that wait on DataFusion stop waiting here.
    deadline: Instant,
    /// A host call was abandoned at the deadline: the job ran out of time, whatever it returns.
    timed_out: bool,
    /// The null WASI's state, for jobs that import WASI ([`wasi`]).
    wasi: wasi::NullWasi,
}

/// One job's memory cap, shared by all its linear memories and tables.
#[derive(Debug)]
struct MemoryBudget {
    limit_bytes: usize,
    reserved_bytes: usize,
    /// A request was refused: a trap that follows is reported as the memory limit.
    refused: bool,
}

impl MemoryBudget {
    fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            reserved_bytes: 0,
            refused: false,
        }
    }

    /// Reserves `extra` bytes, or refuses (and remembers it).
    fn reserve(&mut self, extra: usize) -> bool {
        match self.reserved_bytes.checked_add(extra) {
            Some(total) if total <= self.limit_bytes => {
                self.reserved_bytes = total;
                true
            }
            _ => {
                self.refused = true;
                false
            }
        }
    }
}

/// The memory cap holds for the job as a whole: creating or growing any memory or table of any of
/// its instances reserves bytes against one total. (wasmtime asks with `current` 0 when a memory
/// or table is created.)
impl ResourceLimiter for JobState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.memory.reserve(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.memory.refused = true;
            return Ok(false);
        }
        Ok(self.memory.reserve(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.instances
    }

    fn memories(&self) -> usize {
        self.limits.instances
    }
}

/// What a finished job produced.
#[derive(Debug)]
pub struct JobOutput {
    /// The released report.
    pub report: report::Report,
    /// The job's log lines.
    pub log: Vec<LogLine>,
    /// Log lines dropped by the cap.
    pub log_dropped: u64,
    /// Every query answered, with its cost.
    pub queries: Vec<QueryRecord>,
    /// Whether the compiled component came from the cache.
    pub cached: bool,
    /// Time to load (compile or fetch) the component.
    pub load_time: std::time::Duration,
    /// Time to run it (instantiation included).
    pub run_time: std::time::Duration,
    /// Time to instantiate it (part of `run_time`).
    pub instantiate_time: std::time::Duration,
}

/// A failed job with what it did before failing (queries stay charged).
#[derive(Debug)]
pub struct JobFailure {
    /// Why it failed.
    pub error: JobError,
    /// Its log lines.
    pub log: Vec<LogLine>,
    /// Log lines dropped by the cap.
    pub log_dropped: u64,
    /// Queries it had answered (and been charged for).
    pub queries: Vec<QueryRecord>,
}

impl Host {
    pub(crate) fn new(compiled_dir: Option<&std::path::Path>) -> Result<Self, JobError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 * 1024)
            // A Python job's linear memory starts as the interpreter's 18 MB heap snapshot: an
            // image this large is mapped copy-on-write at instantiation instead of copied
            // (wasmtime's default limit for that is 16 MiB).
            .memory_guaranteed_dense_image_size(64 << 20);
        load::configure(&mut config);
        let engine = Engine::new(&config).map_err(|e| JobError::Host(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        Job::add_to_linker::<JobState, HasSelf<JobState>>(&mut linker, |s| s)
            .map_err(|e| JobError::Host(e.to_string()))?;
        let mut wasi_linker = linker.clone();
        wasi::add_to_linker(&mut wasi_linker)?;
        let disk = match compiled_dir {
            Some(d) => Some(disk::DiskCache::open(d, &engine).map_err(|e| {
                JobError::Host(format!(
                    "cannot open the compiled-job cache {}: {e}",
                    d.display()
                ))
            })?),
            None => None,
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| JobError::Host(e.to_string()))?;
        }
        Ok(Self {
            rows: std::sync::OnceLock::new(),
            engine,
            linker,
            wasi_linker,
            contract: load::Contract::new()?,
            cache: Mutex::new(HashMap::new()),
            disk,
            _ticker: Ticker { stop },
        })
    }

    /// The component for `wasm`, from the cache (keyed by its BLAKE3 hash) or freshly compiled.
    pub(crate) fn load(&self, wasm: &[u8]) -> Result<(Loaded, bool), JobError> {
        if wasm.len() > MAX_WASM_BYTES {
            return Err(JobError::InvalidWasm(format!(
                "the job is {} bytes; at most {MAX_WASM_BYTES} bytes (40 MiB) are accepted",
                wasm.len()
            )));
        }
        // Keyed by BLAKE3 rather than the sha256 receipts name: for an 18 MB Python job it is
        // 3 ms instead of 13 ms, on every load.
        let key: [u8; 32] = blake3::hash(wasm).into();
        if let Some(c) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok((c.clone(), true));
        }
        if let Some(component) = self.disk.as_ref().and_then(|d| d.get(&self.engine, &key)) {
            let wasi = check_imports(&component, &self.engine)?;
            let rows = self.row_module(wasm)?;
            let loaded = Loaded {
                component,
                wasi,
                rows,
            };
            self.remember(key, &loaded);
            return Ok((loaded, true));
        }
        let component_bytes = load::component_bytes(wasm, &self.contract)?;
        let rows = self.row_module(wasm)?;
        // wasmtime validates a component against the engine's features; a panic in it (none is
        // known) would be a bug to report as a refusal, not a reason to stop the broker.
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Component::new(&self.engine, &component_bytes)
        }))
        .map_err(|_| JobError::InvalidWasm("the engine could not compile this component".into()))?;
        let component = compiled.map_err(|e| {
            JobError::InvalidWasm(load::with_feature_list(&first_line(&format!("{e:#}"))))
        })?;
        let wasi = check_imports(&component, &self.engine)?;
        if let Some(d) = &self.disk {
            d.put(&key, &component);
        }
        let loaded = Loaded {
            component,
            wasi,
            rows,
        };
        self.remember(key, &loaded);
        Ok((loaded, false))
    }

    /// The row functions `wasm` carries, compiled on the row engine (started now if needed).
    fn row_module(&self, wasm: &[u8]) -> Result<Option<Arc<crate::rows::RowModule>>, JobError> {
        let Some(bytes) = crate::rows::rows_section(wasm)? else {
            return Ok(None);
        };
        let engine = match self.rows.get() {
            Some(e) => e,
            None => {
                let _ = self.rows.set(crate::rows::RowEngine::new()?);
                self.rows.get().expect("just set")
            }
        };
        crate::rows::RowModule::compile(bytes, engine).map(|m| Some(Arc::new(m)))
    }

    /// Keeps `loaded` in memory (at most [`CACHE_CAPACITY`] components).
    fn remember(&self, key: [u8; 32], loaded: &Loaded) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY
            && let Some(k) = cache.keys().next().copied()
        {
            cache.remove(&k);
        }
        cache.insert(key, loaded.clone());
    }

    pub(crate) fn run(
        &self,
        engine: Arc<PrivacyEngine>,
        rt: tokio::runtime::Handle,
        asker: Asker,
        limits: Limits,
        wasm: &[u8],
        params: &str,
    ) -> Result<JobOutput, JobFailure> {
        let fail = |error| JobFailure {
            error,
            log: Vec::new(),
            log_dropped: 0,
            queries: Vec::new(),
        };
        if params.len() > limits.max_params_bytes {
            return Err(fail(JobError::ParamsTooLarge {
                bytes: params.len(),
                limit: limits.max_params_bytes,
            }));
        }
        let started = Instant::now();
        let (loaded, cached) = self.load(wasm).map_err(fail)?;
        let load_time = started.elapsed();
        let mut asker = asker;
        asker.rows = loaded.rows.clone();
        let started = Instant::now();

        let state = JobState {
            engine,
            rt,
            asker,
            limits: limits.clone(),
            queries: 0,
            log: Vec::new(),
            log_bytes: 0,
            log_dropped: 0,
            records: Vec::new(),
            memory: MemoryBudget::new(limits.memory_bytes),
            deadline: started + limits.wall_clock,
            timed_out: false,
            wasi: wasi::NullWasi::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| fail(JobError::Host(e.to_string())))?;
        let ticks = (limits.wall_clock.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        // Caps what one guest-to-host call may make the host copy (the report included).
        store.set_hostcall_fuel(transfer_cap(&limits));
        store.epoch_deadline_trap();

        // The guest runs on a thread of its own with a known, generous native stack: the wasm stack
        // (512 KiB) and the host's work inside imports (planning, DataFusion) both fit, whatever
        // the caller's thread size.
        let (component, linker) = match loaded.wasi {
            true => (loaded.component, &self.wasi_linker),
            false => (loaded.component, &self.linker),
        };
        let (result, store, instantiate_time) = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sluice-job".into())
                .stack_size(crate::PLANNING_STACK_BYTES)
                .spawn_scoped(scope, move || {
                    let started = Instant::now();
                    let job = Job::instantiate(&mut store, &component, linker);
                    let instantiate_time = started.elapsed();
                    let r = job.and_then(|job| job.call_run(&mut store, params));
                    (r, store, instantiate_time)
                })
                .map(|h| h.join())
        })
        .map_err(|e| fail(JobError::Host(format!("cannot start the job thread: {e}"))))?
        // The panic's message went to the broker's log through the panic hook; it may describe
        // host state the operator must not see.
        .map_err(|_| fail(JobError::Host("the job thread panicked".into())))?;
        let run_time = started.elapsed();
        let mut state = store.into_data();
        state.flush_output();
        let failure = |error| JobFailure {
            error,
            log: state.log.clone(),
            log_dropped: state.log_dropped,
            queries: state.records.clone(),
        };
        match result {
            _ if state.timed_out => Err(failure(JobError::Timeout(limits.wall_clock))),
            Err(_) if state.wasi.exited.is_some() => Err(failure(JobError::Exited(
                state.wasi.exited.unwrap_or_default(),
            ))),
            Err(e) => Err(failure(classify(&e, state.memory.refused, &limits))),
            Ok(Err(e)) => Err(failure(JobError::Guest(job_error_text(e)))),
            Ok(Ok(r)) => {
                let report = convert_report(r);
                let bytes = report.approx_bytes();
                if bytes > limits.max_report_bytes {
                    return Err(failure(JobError::ReportTooLarge {
                        bytes,
                        limit: limits.max_report_bytes,
                    }));
                }
                Ok(JobOutput {
                    report,
                    log: state.log,
                    log_dropped: state.log_dropped,
                    queries: state.records,
                    cached,
                    load_time,
                    run_time,
                    instantiate_time,
                })
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(500).collect()
}

/// Refuses any import outside `sluice:job` and the null WASI, naming it; returns whether the
/// component imports WASI.
fn check_imports(component: &Component, engine: &Engine) -> Result<bool, JobError> {
    let mut wasi = false;
    let mut forbidden = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        match import_allowed(name) {
            Ok(w) => wasi |= w,
            Err(JobError::ForbiddenImport(name)) => forbidden.push(name),
            Err(e) => return Err(e),
        }
    }
    match forbidden.len() {
        0 => Ok(wasi),
        _ => Err(JobError::ForbiddenImport(forbidden.join("`, `"))),
    }
}

/// One import of a component: a `sluice:job` interface of the version this host implements
/// (`false`), or a null WASI interface of any 0.2 release (`true`).
fn import_allowed(name: &str) -> Result<bool, JobError> {
    let (base, version) = name.split_once('@').unwrap_or((name, ""));
    if wasi::INTERFACES.contains(&base) {
        if version.starts_with("0.2.") {
            return Ok(true);
        }
        return Err(JobError::ForbiddenImport(format!(
            "{name} (only WASI 0.2 releases are linked)"
        )));
    }
    job_import_allowed(name).map(|()| false)
}

/// One import of a job built with the Rust SDK (a core module): a `sluice:job` interface of
/// the version this host implements, nothing else.
fn job_import_allowed(name: &str) -> Result<(), JobError> {
    let (base, version) = name.split_once('@').unwrap_or((name, ""));
    if !ALLOWED_IMPORTS.contains(&base) {
        return Err(JobError::ForbiddenImport(name.to_string()));
    }
    if version != WIT_VERSION {
        return Err(JobError::InvalidWasm(format!(
            "the job was built for `{name}`, but this broker speaks sluice:job@{WIT_VERSION}; rebuild it with the current sluice-guest"
        )));
    }
    Ok(())
}

/// Bytes one guest-to-host transfer may carry: the report cap plus room for its framing, so that a
/// report just over the cap is still measured and refused by size.
fn transfer_cap(limits: &Limits) -> usize {
    limits.max_report_bytes.saturating_add(1 << 20)
}

fn classify(e: &wasmtime::Error, memory_limit_hit: bool, limits: &Limits) -> JobError {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => JobError::FuelExhausted(limits.fuel),
            Trap::Interrupt => JobError::Timeout(limits.wall_clock),
            Trap::StackOverflow => JobError::StackOverflow,
            _ if memory_limit_hit => JobError::MemoryLimit(limits.memory_bytes),
            other => JobError::Trapped(other.to_string()),
        };
    }
    if memory_limit_hit {
        return JobError::MemoryLimit(limits.memory_bytes);
    }
    let text = format!("{e:#}");
    if text.contains("too much data is being copied between the host and the guest") {
        return JobError::TransferTooLarge(transfer_cap(limits));
    }
    if text.contains("import") && text.contains("not") {
        return JobError::ForbiddenImport(first_line(&text));
    }
    JobError::Trapped(first_line(&text))
}

fn job_error_text(e: wit::JobError) -> String {
    match e {
        wit::JobError::InvalidParams(m) => format!("invalid parameters: {m}"),
        wit::JobError::Query(q) => format!("query refused: {}", QueryError::from(q)),
        wit::JobError::Failed(m) => m,
    }
}

fn convert_value(v: wit::Value) -> report::Value {
    match v {
        wit::Value::Null => report::Value::Null,
        wit::Value::Integer(i) => report::Value::Int(i),
        wit::Value::Float(f) => report::Value::Float(f),
        wit::Value::Text(s) => report::Value::Text(s),
    }
}

fn convert_table(t: wit::NoisyTable) -> NoisyTable {
    NoisyTable {
        columns: t.columns,
        key_columns: t.key_columns as usize,
        rows: t
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(convert_value).collect())
            .collect(),
        accuracy: t.accuracy,
        cost: PrivacyCost {
            epsilon: t.cost.epsilon,
            delta: t.cost.delta,
            rho: t.cost.rho,
        },
        mechanism: t.mechanism,
    }
}

fn convert_report(r: wit::Report) -> report::Report {
    report::Report {
        title: r.title,
        text: r.text,
        tables: r
            .tables
            .into_iter()
            .map(|t| (t.name, convert_table(t.table)))
            .collect(),
        scalars: r
            .scalars
            .into_iter()
            .map(|s| report::Scalar {
                name: s.name,
                value: s.value,
                accuracy: s.accuracy,
            })
            .collect(),
    }
}

fn to_wit_table(t: NoisyTable) -> wit::NoisyTable {
    wit::NoisyTable {
        columns: t.columns,
        key_columns: t.key_columns as u32,
        rows: t
            .rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| match v {
                        report::Value::Null => wit::Value::Null,
                        report::Value::Int(i) => wit::Value::Integer(i),
                        report::Value::Float(f) => wit::Value::Float(f),
                        report::Value::Text(s) => wit::Value::Text(s),
                    })
                    .collect()
            })
            .collect(),
        accuracy: t.accuracy,
        cost: wit::PrivacyCost {
            epsilon: t.cost.epsilon,
            delta: t.cost.delta,
            rho: t.cost.rho,
        },
        mechanism: t.mechanism,
    }
}

fn budget_of(options: wit::QueryOptions) -> crate::privacy::Budget {
    match options.target {
        wit::Target::Epsilon(e) => crate::privacy::Budget::Epsilon(e),
        wit::Target::Rho(r) => crate::privacy::Budget::Rho(r),
        wit::Target::Accuracy(a) => crate::privacy::Budget::Accuracy(a),
    }
}

impl From<QueryError> for wit::QueryError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidSql(m) => Self::InvalidSql(m),
            QueryError::Unsupported(m) => Self::Unsupported(m),
            QueryError::NotGranted(m) => Self::NotGranted(m),
            QueryError::ColumnDenied(m) => Self::ColumnDenied(m),
            QueryError::AggregationDenied(m) => Self::AggregationDenied(m),
            QueryError::InvalidOptions(m) => Self::InvalidOptions(m),
            QueryError::BudgetExhausted(m) => Self::BudgetExhausted(m),
            QueryError::TooManyQueries(n) => Self::TooManyQueries(n),
            QueryError::ExecutionFailed => Self::ExecutionFailed,
        }
    }
}

impl From<wit::QueryError> for QueryError {
    fn from(e: wit::QueryError) -> Self {
        match e {
            wit::QueryError::InvalidSql(m) => Self::InvalidSql(m),
            wit::QueryError::Unsupported(m) => Self::Unsupported(m),
            wit::QueryError::NotGranted(m) => Self::NotGranted(m),
            wit::QueryError::ColumnDenied(m) => Self::ColumnDenied(m),
            wit::QueryError::AggregationDenied(m) => Self::AggregationDenied(m),
            wit::QueryError::InvalidOptions(m) => Self::InvalidOptions(m),
            wit::QueryError::BudgetExhausted(m) => Self::BudgetExhausted(m),
            wit::QueryError::TooManyQueries(n) => Self::TooManyQueries(n),
            wit::QueryError::ExecutionFailed => Self::ExecutionFailed,
        }
    }
}

fn measure_of(d: &sluice_policy::Dataset) -> wit::PrivacyMeasure {
    match d.measure {
        sluice_policy::PrivacyMeasure::Pure => wit::PrivacyMeasure::Pure,
        sluice_policy::PrivacyMeasure::Zcdp => wit::PrivacyMeasure::Zcdp,
    }
}

fn dataset_info(d: &sluice_policy::Dataset) -> wit::DatasetInfo {
    use sluice_policy::ColumnKind as K;
    wit::DatasetInfo {
        name: d.id.to_string(),
        holder: d.holder.clone(),
        classification: d.classification.as_str().to_string(),
        privacy_unit: d.privacy_unit.clone(),
        max_rows_per_unit: d.max_rows_per_unit,
        max_groups_per_unit: d.max_groups_per_unit,
        max_rows_per_group: d.max_rows_per_group,
        privacy_measure: measure_of(d),
        columns: d
            .columns
            .iter()
            .filter_map(|c| {
                let (kind, public_values, partition_selection) = match &c.kind {
                    K::Category {
                        public_values,
                        partition_selection,
                    } => (
                        wit::ColumnKind::Category,
                        public_values.clone(),
                        *partition_selection,
                    ),
                    K::Int { .. } => (wit::ColumnKind::Integer, None, false),
                    K::Float { .. } => (wit::ColumnKind::Float, None, false),
                    K::Date { .. } => (wit::ColumnKind::Date, None, false),
                    K::Hidden => return None,
                };
                Some(wit::ColumnInfo {
                    name: c.name.clone(),
                    kind,
                    public_values,
                    bounds: c.kind.bounds_f64(),
                    bins: c.bins.clone(),
                    date_bounds: match &c.kind {
                        K::Date {
                            bounds: Some((lo, hi)),
                        } => Some((lo.to_string(), hi.to_string())),
                        _ => None,
                    },
                    partition_selection,
                })
            })
            .collect(),
    }
}

impl JobState {
    /// Counts one query (or estimate) against the job's limit.
    fn count_query(&mut self) -> Result<(), wit::QueryError> {
        if self.queries >= self.limits.max_queries {
            return Err(wit::QueryError::TooManyQueries(self.limits.max_queries));
        }
        self.queries += 1;
        Ok(())
    }
}

impl bindings::sluice::job::types::Host for JobState {}

impl bindings::sluice::job::data::Host for JobState {
    fn datasets(&mut self) -> Vec<wit::DatasetInfo> {
        self.engine
            .policy()
            .granted_datasets(&self.asker.operator, self.asker.at)
            .into_iter()
            .map(dataset_info)
            .collect()
    }

    fn describe(&mut self, name: String) -> Option<wit::DatasetInfo> {
        let id = sluice_policy::DatasetId::new(&name).ok()?;
        let policy = self.engine.policy();
        policy
            .authorize_in(
                &self.asker.operator,
                &id,
                self.asker.scenario.as_deref(),
                self.asker.at,
            )
            .ok()?;
        policy.datasets.get(&id).map(dataset_info)
    }

    fn query(
        &mut self,
        sql: String,
        options: wit::QueryOptions,
    ) -> Result<wit::NoisyTable, wit::QueryError> {
        self.count_query()?;
        let engine = self.engine.clone();
        let asker = self.asker.clone();
        let budget = budget_of(options);
        let deadline = tokio::time::Instant::from_std(self.deadline);
        // Past the deadline the query is abandoned (its charge stands, as for any failure after
        // the charge) and the job traps on its next wasm instruction.
        let result = self
            .rt
            .block_on(async move {
                tokio::time::timeout_at(deadline, engine.query_with(&asker, &sql, budget)).await
            })
            .unwrap_or_else(|_| {
                self.timed_out = true;
                Err(QueryError::ExecutionFailed)
            });
        match result {
            Ok((table, record)) => {
                self.records.push(record);
                Ok(to_wit_table(table))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn estimate(
        &mut self,
        sql: String,
        options: wit::QueryOptions,
    ) -> Result<wit::CostEstimate, wit::QueryError> {
        // Estimates read only the policy and the schema, but planning costs CPU: they count
        // towards the query limit like queries.
        self.count_query()?;
        let engine = self.engine.clone();
        let asker = self.asker.clone();
        let budget = budget_of(options);
        let e = self
            .rt
            .block_on(async move { engine.estimate(&asker, &sql, budget).await })?;
        Ok(wit::CostEstimate {
            dataset: e.dataset,
            cost: wit::PrivacyCost {
                epsilon: e.epsilon,
                delta: e.delta,
                rho: e.rho,
            },
            accuracy: e.accuracy,
            releases: u32::try_from(e.releases).unwrap_or(u32::MAX),
        })
    }

    fn budget(&mut self, dataset: String) -> Option<wit::BudgetInfo> {
        let id = sluice_policy::DatasetId::new(&dataset).ok()?;
        let at = self.asker.at;
        let (operator, job) = (&self.asker.operator, &self.asker.job);
        let v = self
            .engine
            .budget_for(operator, &id, self.asker.scenario.as_deref(), job, at)?;
        let ds = self.engine.policy().datasets.get(&id)?;
        Some(wit::BudgetInfo {
            dataset,
            privacy_measure: measure_of(ds),
            epsilon_implied_this_period: v.implied_epsilon_this_period,
            rho_per_job: v.rho_per_job,
            rho_spent_this_job: v.spent.job.rho,
            rho_per_period: v.rho_per_period,
            rho_spent_this_period: v.spent.period.rho,
            epsilon_per_job: v.epsilon_per_job,
            epsilon_spent_this_job: v.spent.job.epsilon,
            epsilon_per_period: v.epsilon_per_period,
            epsilon_spent_this_period: v.spent.period.epsilon,
            delta_per_period: v.delta_per_period,
            delta_spent_this_period: v.delta_spent_this_period,
        })
    }
}

impl bindings::sluice::job::log::Host for JobState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let level = match level {
            wit::LogLevel::Debug => "debug",
            wit::LogLevel::Info => "info",
            wit::LogLevel::Warn => "warn",
            wit::LogLevel::Error => "error",
        };
        self.push_log(level, message);
    }
}

impl JobState {
    /// Appends a line to the job's log: cut at 1 KiB, dropped (and counted) past the log cap.
    fn push_log(&mut self, level: &'static str, message: String) {
        let mut message = message;
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if self.log_bytes + message.len() > self.limits.max_log_bytes {
            self.log_dropped += 1;
            return;
        }
        self.log_bytes += message.len();
        self.log.push(LogLine { level, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_0_2_imports_link_the_null_wasi_and_anything_else_is_refused_by_name() {
        for name in [
            "wasi:cli/environment@0.2.0",
            "wasi:sockets/tcp@0.2.9",
            "wasi:filesystem/preopens@0.2.12",
        ] {
            assert!(import_allowed(name).unwrap(), "{name}");
        }
        assert!(!import_allowed("sluice:job/data@0.3.0").unwrap());
        for name in [
            "wasi:http/types@0.2.0",
            "wasi:cli/environment@0.3.0",
            "wasi:clocks/timezone@0.2.12",
            "acme:spy/exfiltrate@1.0.0",
        ] {
            let e = import_allowed(name).unwrap_err().to_string();
            assert!(e.contains(name.split('@').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn the_memory_cap_is_one_total_across_memories_and_tables() {
        let mut m = MemoryBudget::new(256 << 20);
        // Sixteen memories of 256 MiB each, the attack that a per-memory cap let through: the
        // first fits, every other is refused.
        assert!(m.reserve(256 << 20));
        for _ in 1..16 {
            assert!(!m.reserve(256 << 20));
        }
        assert!(m.refused);
        assert_eq!(m.reserved_bytes, 256 << 20);
        let mut m = MemoryBudget::new(1 << 20);
        assert!(m.reserve(600 << 10));
        assert!(m.reserve(400 << 10));
        assert!(!m.reserve(100 << 10), "tables and memories share the total");
        assert!(!m.reserve(usize::MAX), "no overflow");
        assert!(m.reserve(24 << 10), "exactly the cap is allowed");
    }

    #[test]
    fn imports_of_rust_jobs_must_be_sluice_job_at_the_host_version() {
        assert!(job_import_allowed("sluice:job/data@0.3.0").is_ok());
        match job_import_allowed("sluice:job/data@0.1.0") {
            Err(JobError::InvalidWasm(m)) => assert!(m.contains("rebuild"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            job_import_allowed("wasi:cli/environment@0.2.0"),
            Err(JobError::ForbiddenImport(_))
        ));
        // The WIT file and the host agree on the version.
        let wit = include_str!("../../../guest-sdk/wit/job.wit");
        assert!(wit.contains(&format!("package sluice:job@{WIT_VERSION};")));
    }
}
