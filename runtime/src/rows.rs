//! Row functions: a job's own wasm code over the rows of one privacy unit at a time, whose
//! clamped outputs feed the DP aggregates like a column.
//!
//! A job ships its row functions as a second, separate WebAssembly core module inside its own
//! binary: the custom section [`ROWS_SECTION`] of the job's module or component holds the rows
//! module's bytes (`sluice build` puts it there; see `guest-sdk/ROWS.md`). The rows module:
//!
//! - **imports nothing** (refused at load otherwise, naming the imports): no host call, no
//!   clock, no randomness, no log. The only thing that leaves an instance is the number a call
//!   returns;
//! - declares its functions in its own custom section [`MANIFEST_SECTION`], one line each:
//!   `<name> <lo> <hi> <default>`: the output's public clamp bounds and the value a row
//!   gets when the call traps, runs out of fuel or returns NaN or an infinity. They are part of
//!   the job's binary, so they are chosen before any data is seen and are named in the audit;
//! - exports each function as `sluice_row_<name>`, of type `(f64, …) -> f64` (1 to
//!   [`MAX_ARITY`] arguments): the row's arguments as numbers (NULL as NaN).
//!
//! The engine calls a function through a DataFusion window function partitioned by the privacy
//! unit (`RowWindow`): every unit's rows go to a **fresh instance** (state may live within a
//! unit, never across units), in an order that depends only on the unit's own argument values,
//! each call with fuel of its own and the unit's total capped ([`sluice_policy::RowFuel`]).
//! Instances come from wasmtime's pooling allocator with copy-on-write memory images, so an
//! instance costs microseconds.
//!
//! This is a core-module contract, not a WIT interface, on purpose: a call per row must cost tens
//! of nanoseconds, and the component model's lowering of a `list<value>` per row costs far more.
//! The contract is small enough to state here and in `guest-sdk/ROWS.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, TypeSignature, Volatility, WindowUDF, WindowUDFImpl,
};
use sha2::{Digest, Sha256};
use sluice_policy::RowFuel;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, ModuleExport};

use crate::JobError;

/// The custom section of a job's binary that holds its rows module.
pub const ROWS_SECTION: &str = "sluice-rows";
/// The custom section of a rows module that declares its functions.
pub const MANIFEST_SECTION: &str = "sluice-row-functions";
/// The export name of row function `<name>` is this prefix and the name.
pub const EXPORT_PREFIX: &str = "sluice_row_";
/// Largest rows module accepted.
pub const MAX_ROWS_MODULE_BYTES: usize = 4 << 20;
/// Linear memory one instance may have (its declared minimum included).
pub const ROW_MEMORY_BYTES: usize = 16 << 20;
/// Most functions one module declares.
pub const MAX_FUNCTIONS: usize = 32;
/// Most arguments of one function.
pub const MAX_ARITY: usize = 16;
/// Bytes of an instance's memory (and table) reset by `memset` when it is freed.
const KEEP_RESIDENT_BYTES: usize = 256 << 10;
/// Instances alive at once, across every query (a unit's instance lives while its rows run).
const POOL_INSTANCES: u32 = 256;

/// One row function as its module declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct RowFunction {
    /// Its name in SQL.
    pub name: String,
    /// How many arguments it takes.
    pub arity: usize,
    /// The lower clamp bound of its output.
    pub lo: f64,
    /// The upper clamp bound of its output.
    pub hi: f64,
    /// What a row gets when the call traps, runs out of fuel or returns a non-finite number.
    pub default: f64,
}

/// The engine row modules are compiled and run on: fuel metering, a pooling allocator with
/// copy-on-write memory images, and exactly the job features.
#[derive(Clone)]
pub struct RowEngine {
    engine: Engine,
}

impl RowEngine {
    /// The engine (one per sandbox; benchmarks make their own).
    pub fn new() -> Result<Self, JobError> {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES)
            .total_component_instances(0)
            .max_memory_size(ROW_MEMORY_BYTES)
            // A small memory (a row function's is a few pages) is reset with `memset`, not
            // `madvise`, whose TLB shootdowns would cost more than the instance; larger ones are
            // decommitted in batches.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            .decommit_batch_size(64)
            // Linux 6.7+: only the pages an instance touched are reset.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .max_wasm_stack(256 * 1024)
            .memory_reservation(ROW_MEMORY_BYTES as u64)
            .memory_guard_size(64 << 10)
            .memory_init_cow(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        crate::wasm::configure_features(&mut config);
        config.wasm_component_model(false);
        let engine = Engine::new(&config)
            .map_err(|e| JobError::Host(format!("cannot start the row-function engine: {e}")))?;
        Ok(Self { engine })
    }
}

/// A job's compiled rows module: its declared functions, ready to instantiate per unit.
pub struct RowModule {
    /// sha256 of the module's bytes (lowercase hex).
    pub sha256: String,
    functions: Vec<RowFunction>,
    exports: Vec<ModuleExport>,
    pre: InstancePre<()>,
    engine: Engine,
}

impl std::fmt::Debug for RowModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowModule")
            .field("sha256", &self.sha256)
            .field("functions", &self.functions)
            .finish()
    }
}

impl RowModule {
    /// The rows module a job's binary carries, compiled; `None` when it carries none. Every
    /// problem is an [`JobError::InvalidWasm`] naming it.
    pub fn from_job(wasm: &[u8], engine: &RowEngine) -> Result<Option<Arc<Self>>, JobError> {
        let Some(bytes) = rows_section(wasm)? else {
            return Ok(None);
        };
        Self::compile(bytes, engine).map(|m| Some(Arc::new(m)))
    }

    /// Compiles a rows module: validated with the job features, no imports, a manifest whose
    /// every function is exported with the declared type.
    pub(crate) fn compile(bytes: &[u8], engine: &RowEngine) -> Result<Self, JobError> {
        let bad = |why: String| JobError::InvalidWasm(format!("the job's row functions: {why}"));
        if bytes.len() > MAX_ROWS_MODULE_BYTES {
            return Err(bad(format!(
                "the rows module is {} bytes; at most {MAX_ROWS_MODULE_BYTES} are accepted",
                bytes.len()
            )));
        }
        let mut functions = manifest(bytes).map_err(bad)?;
        let module = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Module::new(&engine.engine, bytes)
        }))
        .map_err(|_| bad("the engine could not compile the rows module".into()))?
        .map_err(|e| bad(crate::wasm::with_feature_list(&format!("{e:#}"))))?;
        let imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect();
        if !imports.is_empty() {
            return Err(bad(format!(
                "the rows module imports `{}`; row functions import nothing (no host call, clock or randomness), so that the only thing leaving them is the number they return",
                imports.join("`, `")
            )));
        }
        let mut exports = Vec::new();
        for f in &mut functions {
            let export = format!("{EXPORT_PREFIX}{}", f.name);
            let ty = module
                .get_export(&export)
                .and_then(|e| e.func().cloned())
                .ok_or_else(|| {
                    bad(format!(
                        "`{}` is declared but `{export}` is not exported as a function",
                        f.name
                    ))
                })?;
            let params: Vec<_> = ty.params().collect();
            let results: Vec<_> = ty.results().collect();
            let f64s =
                |v: &[wasmtime::ValType]| v.iter().all(|t| matches!(t, wasmtime::ValType::F64));
            if !(1..=MAX_ARITY).contains(&params.len())
                || !f64s(&params)
                || results.len() != 1
                || !f64s(&results)
            {
                return Err(bad(format!(
                    "`{export}` must take 1 to {MAX_ARITY} f64 arguments and return one f64"
                )));
            }
            f.arity = params.len();
            exports.push(
                module
                    .get_export_index(&export)
                    .ok_or_else(|| bad(format!("`{export}` is not exported")))?,
            );
        }
        let pre = Linker::new(&engine.engine)
            .instantiate_pre(&module)
            .map_err(|e| bad(format!("{e:#}")))?;
        // What makes every unit's instance fail is known now, before any query is charged: a
        // memory or table above the caps, a start function that traps.
        let mut store = wasmtime::Store::new(&engine.engine, ());
        store
            .set_fuel(RowFuel::default().per_unit)
            .map_err(|e| bad(e.to_string()))?;
        if let Err(e) = pre.instantiate(&mut store) {
            return Err(bad(format!(
                "the rows module cannot be instantiated ({}); each instance has at most {} MiB of memory",
                e.to_string().lines().next().unwrap_or(""),
                ROW_MEMORY_BYTES >> 20
            )));
        }
        Ok(Self {
            sha256: hex::encode(Sha256::digest(bytes)),
            functions,
            exports,
            pre,
            engine: engine.engine.clone(),
        })
    }

    /// Its functions, as declared.
    pub fn functions(&self) -> &[RowFunction] {
        &self.functions
    }

    /// The function named `name`, with its index.
    pub fn function(&self, name: &str) -> Option<(usize, &RowFunction)> {
        self.functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
    }

    /// Function `index` over one unit's rows (`args[a][r]`: argument `a` of row `r`) in a fresh
    /// instance ([`sluice_kernels::rows::RowCall::run_unit`]): one output per row, clamped to the
    /// declared bounds, the declared default where a call fails.
    pub fn run_unit(
        &self,
        index: usize,
        args: &[Float64Array],
        rows: usize,
        fuel: RowFuel,
    ) -> Result<Vec<f64>, String> {
        let f = &self.functions[index];
        sluice_kernels::rows::RowCall {
            engine: &self.engine,
            pre: &self.pre,
            export: &self.exports[index],
            lo: f.lo,
            hi: f.hi,
            default: f.default,
            fuel_per_row: fuel.per_row,
            fuel_per_unit: fuel.per_unit,
        }
        .run_unit(args, rows)
    }
}

/// `job` (a module or a component) with `rows` (a rows module) inside it, as its
/// [`ROWS_SECTION`] custom section: what `sluice build` ships for a job with a `rows/` crate.
/// A job that already carries row functions has them replaced.
pub fn embed(job: &[u8], rows: &[u8]) -> Result<Vec<u8>, String> {
    let header = |b: &[u8]| b.len() >= 8 && b[..4] == *b"\0asm";
    if !header(job) {
        return Err("the job is not a WebAssembly binary".into());
    }
    if !header(rows) || rows[4..8] != [1, 0, 0, 0] {
        return Err("the rows module is not a WebAssembly core module".into());
    }
    let mut out = without_rows_section(job)?;
    let name = ROWS_SECTION.as_bytes();
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(rows);
    out.push(0);
    out.extend(leb128(payload.len()));
    out.extend(payload);
    Ok(out)
}

/// `wasm` without its top-level [`ROWS_SECTION`]s.
fn without_rows_section(wasm: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = wasm[..8].to_vec();
    for section in top_level_sections(wasm) {
        let section = section?;
        if !section.is_rows {
            out.extend_from_slice(&wasm[section.whole]);
        }
    }
    Ok(out)
}

/// The LEB128 number at `at` in `b` and the offset after it.
fn read_leb128(b: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let mut n: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(at)?;
        at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return usize::try_from(n).ok().map(|n| (n, at));
        }
    }
    None
}

/// `n` as unsigned LEB128.
fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The bytes of a binary's [`ROWS_SECTION`] at its top level (a nested module's sections are
/// inside a top-level section's contents, so they are never read as the job's).
pub(crate) fn rows_section(wasm: &[u8]) -> Result<Option<&[u8]>, JobError> {
    let mut found = None;
    for section in top_level_sections(wasm) {
        let section = section.map_err(JobError::InvalidWasm)?;
        if section.is_rows {
            if found.is_some() {
                return Err(JobError::InvalidWasm(format!(
                    "the job carries two `{ROWS_SECTION}` sections; a job has one rows module"
                )));
            }
            found = Some(&wasm[section.payload]);
        }
    }
    Ok(found)
}

/// One top-level section of a module or component: an id byte, a LEB128 size, the contents.
struct Section {
    /// The whole section, id byte included.
    whole: std::ops::Range<usize>,
    /// Whether it is the custom section [`ROWS_SECTION`].
    is_rows: bool,
    /// A custom section's payload after its name (the whole contents otherwise).
    payload: std::ops::Range<usize>,
}

/// The top-level sections of `wasm` after its 8-byte header (the caller checks the header),
/// the same walk in a module and a component; an error names a malformed section.
fn top_level_sections(wasm: &[u8]) -> impl Iterator<Item = Result<Section, String>> + '_ {
    let mut at = 8;
    std::iter::from_fn(move || {
        if at >= wasm.len() {
            return None;
        }
        let start = at;
        let parsed = read_leb128(wasm, start + 1).and_then(|(size, body)| {
            let end = body.checked_add(size).filter(|&e| e <= wasm.len())?;
            Some((body, end))
        });
        let Some((body, end)) = parsed else {
            at = wasm.len();
            return Some(Err("the job's sections are malformed".to_string()));
        };
        at = end;
        let named = (wasm[start] == 0)
            .then(|| read_leb128(wasm, body))
            .flatten()
            .and_then(|(n, name)| Some((wasm.get(name..name.checked_add(n)?)?, name + n)));
        let (is_rows, payload) = match named {
            Some((name, data)) if name == ROWS_SECTION.as_bytes() && data <= end => {
                (true, data..end)
            }
            _ => (false, body..end),
        };
        Some(Ok(Section {
            whole: start..end,
            is_rows,
            payload,
        }))
    })
}

/// The functions a rows module declares in its [`MANIFEST_SECTION`] (the sections of that name,
/// concatenated, as a linker joins them).
fn manifest(module: &[u8]) -> Result<Vec<RowFunction>, String> {
    use wasmparser::{Parser, Payload};
    let mut text = String::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload =
            payload.map_err(|e| format!("the rows module is malformed: {}", e.message()))?;
        if let Payload::CustomSection(c) = payload
            && c.name() == MANIFEST_SECTION
        {
            text += std::str::from_utf8(c.data())
                .map_err(|_| format!("its `{MANIFEST_SECTION}` section is not UTF-8"))?;
        }
    }
    let mut functions: BTreeMap<String, RowFunction> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f = manifest_line(line)?;
        if functions.insert(f.name.clone(), f).is_some() {
            return Err(format!(
                "function `{}` is declared twice",
                line.split(' ').next().unwrap_or("")
            ));
        }
    }
    if functions.is_empty() {
        return Err(format!(
            "the rows module declares no function (its `{MANIFEST_SECTION}` section lists `<name> <lo> <hi> <default>` per line)"
        ));
    }
    if functions.len() > MAX_FUNCTIONS {
        return Err(format!(
            "{} functions declared; at most {MAX_FUNCTIONS}",
            functions.len()
        ));
    }
    Ok(functions.into_values().collect())
}

/// One manifest line: `<name> <lo> <hi> <default>` (the arity is the export's).
fn manifest_line(line: &str) -> Result<RowFunction, String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [name, lo, hi, default] = parts.as_slice() else {
        return Err(format!(
            "manifest line `{}` is not `<name> <lo> <hi> <default>`",
            line.chars().take(80).collect::<String>()
        ));
    };
    let valid_name = name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(format!(
            "function name `{}` must be 1 to 48 lowercase letters, digits or `_`, starting with a letter",
            name.chars().take(60).collect::<String>()
        ));
    }
    if !callable_in_sql(name) {
        return Err(format!(
            "function name `{name}` is a SQL keyword, so a query cannot call it; rename it"
        ));
    }
    if sql_function_names().contains(*name) {
        return Err(format!(
            "function name `{name}` is the name of a SQL function; rename it"
        ));
    }
    let number = |s: &str, what: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("`{name}`: {what} `{s}` is not a finite number"))
    };
    let (lo, hi, default) = (
        number(lo, "the lower bound")?,
        number(hi, "the upper bound")?,
        number(default, "the default")?,
    );
    if lo >= hi || !(lo..=hi).contains(&default) {
        return Err(format!(
            "`{name}`: the bounds must have lo < hi and the default within them (got [{lo}, {hi}], default {default})"
        ));
    }
    Ok(RowFunction {
        name: (*name).to_string(),
        arity: 0,
        lo,
        hi,
        default,
    })
}

/// The names (and aliases) of DataFusion's built-in scalar, aggregate and window functions,
/// which a row function may not take.
fn sql_function_names() -> &'static std::collections::HashSet<String> {
    static NAMES: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .build();
        state
            .scalar_functions()
            .keys()
            .chain(state.aggregate_functions().keys())
            .chain(state.window_functions().keys())
            .map(|n| n.to_ascii_lowercase())
            .chain(["date_trunc", "date_part", "variance"].map(String::from))
            .collect()
    })
}

/// Whether `SELECT SUM(<name>(x)) FROM t` parses with `<name>` as a function call: names that
/// are SQL keywords (`returning`, `case`, …) do not.
fn callable_in_sql(name: &str) -> bool {
    use datafusion::sql::parser::{DFParserBuilder, Statement};
    use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr, Statement as Sql};
    let sql = format!("SELECT SUM({name}(x)) FROM t");
    let Ok(mut statements) = DFParserBuilder::new(sql.as_str())
        .build()
        .and_then(|mut p| p.parse_statements())
    else {
        return false;
    };
    let Some(Statement::Statement(statement)) = statements.pop_front() else {
        return false;
    };
    let Sql::Query(query) = *statement else {
        return false;
    };
    let SetExpr::Select(select) = *query.body else {
        return false;
    };
    let [SelectItem::UnnamedExpr(Expr::Function(sum))] = select.projection.as_slice() else {
        return false;
    };
    sum.to_string() == format!("SUM({name}(x))")
}

/// The window function that runs row function `index` of `module` over each partition of its
/// window (the engine partitions by the privacy unit): `sluice_row_<name>(args…) OVER
/// (PARTITION BY unit ORDER BY args…)`.
pub(crate) struct RowWindow {
    module: Arc<RowModule>,
    index: usize,
    fuel: RowFuel,
    name: String,
    signature: Signature,
}

impl RowWindow {
    /// The window function for `module`'s function `index` under `fuel`.
    pub(crate) fn udwf(module: Arc<RowModule>, index: usize, fuel: RowFuel) -> WindowUDF {
        let f = &module.functions[index];
        let signature = Signature::new(
            TypeSignature::Exact(vec![DataType::Float64; f.arity]),
            Volatility::Immutable,
        );
        let name = format!("{EXPORT_PREFIX}{}", f.name);
        WindowUDF::new_from_impl(Self {
            module,
            index,
            fuel,
            name,
            signature,
        })
    }
}

impl std::fmt::Debug for RowWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RowWindow({} of {})",
            self.name,
            &self.module.sha256[..12]
        )
    }
}

impl PartialEq for RowWindow {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.module, &other.module)
            && self.index == other.index
            && self.fuel == other.fuel
    }
}
impl Eq for RowWindow {}
impl std::hash::Hash for RowWindow {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.module), state);
        self.index.hash(state);
    }
}

impl WindowUDFImpl for RowWindow {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(UnitEvaluator {
            module: self.module.clone(),
            index: self.index,
            fuel: self.fuel,
        }))
    }
    fn field(&self, field_args: WindowUDFFieldArgs) -> DfResult<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            false,
        )))
    }
}

/// One window partition's (one unit's) evaluation: a fresh instance over all its rows.
#[derive(Debug)]
struct UnitEvaluator {
    module: Arc<RowModule>,
    index: usize,
    fuel: RowFuel,
}

impl PartitionEvaluator for UnitEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> DfResult<ArrayRef> {
        let args = values
            .iter()
            .map(|v| {
                Ok(cast(v, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone())
            })
            .collect::<DfResult<Vec<Float64Array>>>()?;
        let out = self
            .module
            .run_unit(self.index, &args, num_rows, self.fuel)
            .map_err(datafusion::common::DataFusionError::Execution)?;
        Ok(Arc::new(Float64Array::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_are_checked_and_names_must_be_callable() {
        let f = manifest_line("per_person 0 2000 0").unwrap();
        assert_eq!(
            (f.name.as_str(), f.lo, f.hi, f.default),
            ("per_person", 0.0, 2000.0, 0.0)
        );
        for (line, why) in [
            ("returning 0 1 0", "SQL keyword"),
            ("interval 0 1 0", "SQL keyword"),
            ("abs 0 1 0", "name of a SQL function"),
            ("median 0 1 0", "name of a SQL function"),
            ("row_number 0 1 0", "name of a SQL function"),
            ("Upper 0 1 0", "lowercase"),
            ("f 1 0 0", "lo < hi"),
            ("f 0 1 2", "default within"),
            ("f 0 inf 0", "finite"),
            ("f 0 1", "<name> <lo> <hi> <default>"),
        ] {
            let e = manifest_line(line).expect_err(line);
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn embedding_replaces_an_earlier_rows_module() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let once = embed(&module, &module).unwrap();
        let twice = embed(&once, &module).unwrap();
        assert_eq!(once, twice);
        assert_eq!(rows_section(&twice).unwrap(), Some(&module[..]));
        assert!(embed(b"not wasm", &module).is_err());
    }
}
