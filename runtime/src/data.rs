//! The data layer: DataFusion sessions over the datasets a policy registers.
//!
//! Two contexts are kept. The **planning** context holds, for each dataset, an empty table with the
//! declared columns only: a job's SQL is parsed and planned against it, so planning can never touch
//! (or fail because of) data. The **execution** context holds the real Parquet/CSV sources and runs
//! only the plans the privacy engine builds itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::datasource::empty::EmptyTable;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use sha2::{Digest, Sha256};
use sluice_policy::{ColumnKind, Dataset, DatasetId, Policy, SourceFormat};

use crate::privacy::udf::{FixedPoint, RandomKey, RankCode};

/// Loads a lookup into memory as text columns, checks its key is unique and non-null, and
/// registers it for planning (its own column names) and execution (renamed columns).
pub(crate) async fn load_lookup(
    lk: &sluice_policy::Lookup,
    data_root: &Path,
    planning: &SessionContext,
    execution: &SessionContext,
) -> Result<LoadedLookup, DataError> {
    use datafusion::arrow::array::{Array, ArrayRef, StringArray};
    use datafusion::arrow::compute::{cast, concat_batches};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::arrow::record_batch::RecordBatch;

    let path = if lk.source.is_absolute() {
        lk.source.clone()
    } else {
        data_root.join(&lk.source)
    };
    let source_err = |cause: String| DataError::Source {
        dataset: lk.id.clone(),
        path: path.clone(),
        cause,
    };
    let schema_err = |problem: String| DataError::Schema {
        dataset: lk.id.clone(),
        problem,
    };
    let content_hash = hash_file(&path).map_err(|e| source_err(e.to_string()))?;
    let path_str = path
        .to_str()
        .ok_or_else(|| source_err("path is not valid UTF-8".into()))?;
    let df = match lk.format {
        SourceFormat::Parquet => {
            execution
                .read_parquet(path_str, ParquetReadOptions::default())
                .await
        }
        SourceFormat::Csv => {
            execution
                .read_csv(path_str, CsvReadOptions::new().has_header(true))
                .await
        }
    }
    .map_err(|e| source_err(e.to_string()))?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .limit(0, Some(MAX_LOOKUP_ROWS + 1))
        .map_err(|e| source_err(e.to_string()))?
        .collect()
        .await
        .map_err(|e| source_err(e.to_string()))?;
    let all = concat_batches(&schema, &batches).map_err(|e| source_err(e.to_string()))?;
    if all.num_rows() > MAX_LOOKUP_ROWS {
        return Err(schema_err(format!(
            "a lookup holds at most {MAX_LOOKUP_ROWS} rows"
        )));
    }
    let mut names = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut domains = BTreeMap::new();
    for (field, array) in schema.fields().iter().zip(all.columns()) {
        let text = cast(array, &DataType::Utf8).map_err(|e| schema_err(e.to_string()))?;
        let values = text
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8");
        let mut domain: Vec<String> = values.iter().flatten().map(str::to_string).collect();
        if field.name() == &lk.key {
            if values.null_count() > 0 {
                return Err(schema_err(format!(
                    "lookup key `{}` has NULL values",
                    lk.key
                )));
            }
            let n = domain.len();
            domain.sort();
            domain.dedup();
            if domain.len() != n {
                return Err(schema_err(format!(
                    "lookup key `{}` is not unique: a join would repeat private rows",
                    lk.key
                )));
            }
        }
        domain.sort();
        domain.dedup();
        domains.insert(field.name().clone(), domain);
        names.push(field.name().clone());
        columns.push(text);
    }
    if !names.contains(&lk.key) {
        return Err(schema_err(format!(
            "lookup key `{}` is not a column of the source; its columns are: {}",
            lk.key,
            names.join(", ")
        )));
    }
    let register = |ctx: &SessionContext, table: &str, rename: bool| {
        let fields: Vec<Field> = names
            .iter()
            .map(|n| {
                let name = if rename { lookup_column(n) } else { n.clone() };
                Field::new(name, DataType::Utf8, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns.clone())
            .map_err(|e| schema_err(e.to_string()))?;
        let table_provider = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])
            .map_err(|e| schema_err(e.to_string()))?;
        ctx.register_table(table, Arc::new(table_provider))
            .map(|_| ())
            .map_err(|e| schema_err(e.to_string()))
    };
    register(planning, lk.id.as_str(), false)?;
    register(execution, &lookup_table(lk.id.as_str()), true)?;
    Ok(LoadedLookup {
        policy: lk.clone(),
        content_hash,
        domains,
    })
}

/// Why the data layer could not start. The broker refuses to start on any of these (fail closed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A source file is missing or unreadable.
    #[error("dataset `{dataset}`: cannot read source `{}`: {cause}", path.display())]
    Source {
        /// The dataset.
        dataset: DatasetId,
        /// The resolved path.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// The source does not match what the policy declares.
    #[error("dataset `{dataset}`: {problem}")]
    Schema {
        /// The dataset.
        dataset: DatasetId,
        /// What does not match.
        problem: String,
    },
    /// Several datasets or lookups could not be registered: every problem, one per line.
    #[error("{} problem(s) with the policy's sources:\n{}", .0.len(), list(.0))]
    Several(Vec<DataError>),
}

fn list(errors: &[DataError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A dataset as registered: its policy, the sha256 of its source bytes, and its declared schema.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The policy declaration.
    pub policy: Dataset,
    /// Hex sha256 of the source file: the dataset version.
    pub content_hash: String,
    /// The declared columns (including hidden ones), with their source types.
    pub declared_schema: SchemaRef,
    /// The source file's size and modification time when it was hashed (`None` for mock data).
    pub stamp: Option<SourceStamp>,
    /// Whether its rows are held in memory (a small source, or mock data), and how many.
    pub held: Option<HeldInMemory>,
}

/// A dataset whose decoded rows the engine holds in memory: read once at registration (after
/// hashing, and checked against the source's stamp afterwards, so the rows are the version's),
/// then every query scans memory instead of decoding the file again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldInMemory {
    /// Rows held.
    pub rows: usize,
    /// Bytes of Arrow memory they take.
    pub bytes: usize,
}

impl HeldInMemory {
    /// Whether its queries are planned on one partition: below this many rows, splitting a scan
    /// across threads costs more (repartitioning, task hand-offs) than it saves.
    pub fn narrow(&self) -> bool {
        self.rows <= NARROW_MAX_ROWS
    }
}

/// Largest dataset held in memory that is planned on one partition (rows).
pub const NARROW_MAX_ROWS: usize = 262_144;

/// Default for [`crate::SandboxConfig::memory_bytes`]: sources whose decoded rows take at most
/// this many bytes are held in memory.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Rows per batch of a dataset held in memory (DataFusion's default batch size).
const HELD_BATCH_ROWS: usize = 8192;

/// A source file's size and modification time, taken before its bytes are hashed: a file that
/// changes after that (even while it is hashed) no longer matches its stamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStamp {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time.
    pub modified: std::time::SystemTime,
}

impl SourceStamp {
    /// The stamp of `path` now.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes: meta.len(),
            modified: meta.modified()?,
        })
    }
}

impl Registered {
    /// Refuses a dataset whose source file changed since it was registered: its version (the
    /// hash every receipt names), its answer cache entries and its contribution index describe
    /// the bytes that were registered, so the new bytes wait for a restart that registers them.
    /// A stat per query, before any charge.
    pub fn check_unchanged(&self) -> Result<(), String> {
        let Some(stamp) = &self.stamp else {
            return Ok(());
        };
        match SourceStamp::of(&stamp.path) {
            Ok(now) if now == *stamp => Ok(()),
            _ => Err(format!(
                "the source of dataset `{}` changed after version {} was registered; its queries are refused until the broker restarts and registers the new version",
                self.policy.id,
                &self.content_hash[..self.content_hash.len().min(12)]
            )),
        }
    }
}

/// A public lookup table as loaded: every column as text, its key checked unique.
#[derive(Clone, Debug)]
pub struct LoadedLookup {
    /// The policy declaration.
    pub policy: sluice_policy::Lookup,
    /// Hex sha256 of the source file.
    pub content_hash: String,
    /// Every column's distinct non-null values, sorted: the public domain of a GROUP BY on it.
    pub domains: BTreeMap<String, Vec<String>>,
}

/// Largest lookup table accepted (rows): lookups are small public reference tables.
pub const MAX_LOOKUP_ROWS: usize = 100_000;

/// The execution context's name for a lookup table, whose columns are renamed with
/// [`lookup_column`] so that they never collide with a dataset's.
pub(crate) fn lookup_table(name: &str) -> String {
    format!("__sluice_lookup_{name}")
}

/// The execution context's name for column `column` of a lookup.
pub(crate) fn lookup_column(column: &str) -> String {
    format!("__sluice_lk_{column}")
}

/// Every dataset of a policy, ready to plan against and to execute on.
#[derive(Clone)]
pub struct Catalog {
    pub(crate) planning: SessionContext,
    pub(crate) execution: SessionContext,
    /// The execution context planning on one partition, for datasets held in memory that are
    /// [narrow](HeldInMemory::narrow) (it shares the execution context's tables and functions).
    pub(crate) narrow: SessionContext,
    pub(crate) datasets: BTreeMap<DatasetId, Registered>,
    pub(crate) lookups: BTreeMap<DatasetId, LoadedLookup>,
    /// The other engine, if one is configured, and the datasets registered in it.
    pub(crate) remote: Option<(crate::remote::RemoteEngine, BTreeSet<DatasetId>)>,
}

/// Where one query's plans run: the context they are planned in and the engine's name.
#[derive(Clone, Copy)]
pub(crate) struct Placement<'a> {
    /// The context.
    pub context: &'a SessionContext,
    /// The engine's name for audit entries and receipts ([`crate::remote::LOCAL`] or the remote
    /// engine's name).
    pub engine: &'a str,
    /// The other engine, when the context executes there.
    pub remote: Option<&'a crate::remote::RemoteEngine>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("datasets", &self.datasets.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn type_fits(kind: &ColumnKind, dt: &DataType) -> bool {
    use DataType::*;
    match kind {
        ColumnKind::Category { .. } => matches!(dt, Utf8 | LargeUtf8 | Utf8View),
        ColumnKind::Int { .. } => {
            matches!(dt, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32)
        }
        ColumnKind::Float { .. } => matches!(
            dt,
            Float32 | Float64 | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32
        ),
        ColumnKind::Date { .. } => matches!(dt, Date32 | Date64),
        ColumnKind::Hidden => true,
    }
}

/// Decodes `columns` of every row of the CSV at `path` once, keeping nothing. One partition, so
/// that the line arrow names counts from the start of the file.
async fn read_every_row(path: &str, columns: &[&str]) -> Result<(), String> {
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::ident;
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_repartition_file_scans(false),
    );
    let counts = columns.iter().map(|c| count(ident(*c))).collect();
    let scan = async {
        ctx.read_csv(path, CsvReadOptions::new().has_header(true))
            .await?
            .aggregate(vec![], counts)?
            .collect()
            .await
    };
    scan.await
        .map(drop)
        .map_err(|e| csv_error(&e.strip_backtrace()))
}

/// Arrow's CSV error with its line counted in the file (arrow counts data rows from 1, after the
/// header) and without the row it quotes.
fn csv_error(text: &str) -> String {
    let text = text.split(". Row data").next().unwrap_or("");
    let text: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    const AT: &str = " at line ";
    let Some(at) = text.find(AT) else {
        return text;
    };
    let digits: String = text[at + AT.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.parse::<u64>() {
        Ok(row) => format!(
            "{}{AT}{}{}",
            &text[..at],
            row + 1,
            &text[at + AT.len() + digits.len()..]
        ),
        Err(_) => text,
    }
}

/// The execution context (with the DP rewrite's functions) and the planning context (with the
/// planning-only date functions, `EXTRACT` and `VARIANCE`).
pub(crate) fn contexts(partitions: usize) -> (SessionContext, SessionContext) {
    let config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_information_schema(false);
    let execution = SessionContext::new_with_config(config.clone());
    execution.register_udf(FixedPoint::udf());
    execution.register_udf(RandomKey::udf());
    execution.register_udf(RankCode::udf());
    execution.register_udf(crate::privacy::dates::DateKey::udf());
    let mut planning = SessionContext::new_with_config(config);
    // Date keys: planning-only `date_trunc`/`date_part`, and `EXTRACT` planned as `date_part`.
    for udf in crate::privacy::dates::planning_udfs() {
        planning.register_udf(udf);
    }
    {
        use datafusion::execution::FunctionRegistry;
        // It only appends to a list; should it ever fail, EXTRACT is refused at planning.
        if let Err(e) =
            planning.register_expr_planner(Arc::new(crate::privacy::dates::ExtractPlanner::new()))
        {
            tracing::warn!("EXTRACT will not be available: {e}");
        }
    }
    // `VARIANCE(x)` is the common SQL spelling of DataFusion's `var` (sample variance).
    planning.register_udaf(
        datafusion::functions_aggregate::variance::var_samp_udaf()
            .as_ref()
            .clone()
            .with_aliases(["variance"]),
    );
    (execution, planning)
}

/// Every row of table `name` as one batch, or `None` as soon as the rows read take more than
/// `limit` bytes (so a source that turns out too big costs at most `limit` to find out).
async fn read_at_most(
    execution: &SessionContext,
    name: &str,
    limit: usize,
) -> Result<Option<RecordBatch>, datafusion::error::DataFusionError> {
    use futures_util::StreamExt;
    let df = execution.table(name).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let (mut batches, mut bytes) = (Vec::new(), 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes += batch.get_array_memory_size();
        if bytes > limit {
            return Ok(None);
        }
        batches.push(batch);
    }
    Ok(Some(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?))
}

/// `execution` planning on one partition, sharing its tables and functions.
pub(crate) fn narrow(execution: &SessionContext) -> SessionContext {
    let config = execution
        .copied_config()
        .with_target_partitions(1)
        // Its tables are `execution`'s: no catalog of its own.
        .with_create_default_catalog_and_schema(false);
    SessionContext::new_with_state(
        datafusion::execution::SessionStateBuilder::new_from_existing(execution.state())
            .with_config(config)
            .build(),
    )
}

/// One dataset: its source hashed and registered for execution, its declared columns checked
/// against the source (a CSV read whole), and an empty table of the declared schema registered
/// for planning.
async fn register(
    ds: &Dataset,
    data_root: &Path,
    contexts: &Contexts<'_>,
    options: &CatalogOptions,
) -> Result<Registered, DataError> {
    let Contexts {
        execution,
        planning,
    } = *contexts;
    let path = if ds.source.is_absolute() {
        ds.source.clone()
    } else {
        data_root.join(&ds.source)
    };
    let source_err = |cause: String| DataError::Source {
        dataset: ds.id.clone(),
        path: path.clone(),
        cause,
    };
    let stamp = SourceStamp::of(&path).map_err(|e| source_err(e.to_string()))?;
    let content_hash = hash_file(&path).map_err(|e| source_err(e.to_string()))?;
    let path_str = path
        .to_str()
        .ok_or_else(|| source_err("path is not valid UTF-8".into()))?;
    let name = ds.id.as_str();
    register_source(execution, ds.format, name, path_str)
        .await
        .map_err(|e| source_err(e.to_string()))?;
    let provider = execution
        .table_provider(name)
        .await
        .map_err(|e| source_err(e.to_string()))?;
    let source_schema = provider.schema();
    let schema_err = |problem: String| DataError::Schema {
        dataset: ds.id.clone(),
        problem,
    };
    let mut fields = declared_fields(ds, &source_schema).map_err(schema_err)?;
    if matches!(ds.format, SourceFormat::Csv) {
        // A CSV's types are inferred from its first rows: read every row once, so that a value
        // further down that does not parse fails the start (fail closed), not a query after its
        // charge.
        let mut read: Vec<&str> = ds.columns.iter().map(|c| c.name.as_str()).collect();
        read.push(&ds.privacy_unit);
        read_every_row(path_str, &read).await.map_err(|cause| {
            schema_err(format!(
                "{}: {cause}; every value of a column must parse as the type its first rows have",
                path.display()
            ))
        })?;
    }
    let declared_schema = Arc::new(Schema::new(fields.clone()));
    // Planning also knows the privacy unit, so that `COUNT(DISTINCT unit)` plans; the validator
    // refuses the unit anywhere else (it is not a declared column).
    if ds.column(&ds.privacy_unit).is_none()
        && let Ok(f) = source_schema.field_with_name(&ds.privacy_unit)
    {
        fields.push(f.clone());
    }
    planning
        .register_table(
            name,
            Arc::new(EmptyTable::new(Arc::new(Schema::new(fields)))),
        )
        .map_err(|e| schema_err(e.to_string()))?;
    let held = hold_in_memory(execution, name, &stamp, options)
        .await
        .map_err(source_err)?;
    if held.is_none()
        && ds.cluster
        && let Some(remote) = &options.remote
    {
        register_source(&remote.context, ds.format, name, path_str)
            .await
            .map_err(|e| source_err(format!("on {}: {e}", remote.name)))?;
    }
    Ok(Registered {
        policy: ds.clone(),
        content_hash,
        declared_schema,
        stamp: Some(stamp),
        held,
    })
}

/// Registers the file at `path` as table `name` of `ctx`, read as `format` declares.
async fn register_source(
    ctx: &SessionContext,
    format: SourceFormat,
    name: &str,
    path: &str,
) -> Result<(), datafusion::error::DataFusionError> {
    match format {
        SourceFormat::Parquet => {
            ctx.register_parquet(name, path, ParquetReadOptions::default())
                .await
        }
        SourceFormat::Csv => {
            ctx.register_csv(name, path, CsvReadOptions::new().has_header(true))
                .await
        }
    }
}

/// The two contexts a dataset is registered in.
#[derive(Clone, Copy)]
struct Contexts<'a> {
    execution: &'a SessionContext,
    planning: &'a SessionContext,
}

/// How a [`Catalog`] registers its datasets.
#[derive(Clone, Debug)]
pub struct CatalogOptions {
    /// DataFusion partitions.
    pub partitions: usize,
    /// Sources of at most this many bytes on disk whose decoded rows take at most this many
    /// bytes of memory are held in memory ([`HeldInMemory`]); 0 scans every source from its
    /// file at each query.
    pub memory_bytes: usize,
    /// Another engine that runs the queries of every dataset scanned from its file (not held in
    /// memory), see [`crate::remote`].
    pub remote: Option<crate::remote::RemoteEngine>,
}

/// Reads a small source's rows into memory and registers them in place of the file (see
/// [`HeldInMemory`]); `None` when the source is larger than `options.memory_bytes` on disk or
/// decoded, and it stays a file scan. The stamp is checked after the read, so that the rows
/// held are the bytes that were hashed.
async fn hold_in_memory(
    execution: &SessionContext,
    name: &str,
    stamp: &SourceStamp,
    options: &CatalogOptions,
) -> Result<Option<HeldInMemory>, String> {
    let limit = options.memory_bytes;
    if limit == 0 || stamp.bytes > limit as u64 {
        return Ok(None);
    }
    let Some(whole) = read_at_most(execution, name, limit)
        .await
        .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())?
    else {
        return Ok(None);
    };
    let held = HeldInMemory {
        rows: whole.num_rows(),
        bytes: whole.get_array_memory_size(),
    };
    if held.bytes > limit {
        return Ok(None);
    }
    if SourceStamp::of(&stamp.path).ok().as_ref() != Some(stamp) {
        return Err(
            "the file changed while it was registered; register it again once it is written".into(),
        );
    }
    let parts = if held.narrow() {
        1
    } else {
        options.partitions.max(1)
    };
    let mut partitions = vec![Vec::new(); parts];
    for (i, start) in (0..held.rows).step_by(HELD_BATCH_ROWS).enumerate() {
        partitions[i % parts].push(whole.slice(start, HELD_BATCH_ROWS.min(held.rows - start)));
    }
    let table = MemTable::try_new(whole.schema(), partitions).map_err(|e| e.to_string())?;
    execution
        .deregister_table(name)
        .and_then(|_| execution.register_table(name, Arc::new(table)))
        .map_err(|e| e.to_string())?;
    Ok(Some(held))
}

/// The source's field for each declared column, or what does not match.
fn declared_fields(ds: &Dataset, source: &SchemaRef) -> Result<Vec<Field>, String> {
    if source.field_with_name(&ds.privacy_unit).is_err() {
        return Err(format!(
            "privacy unit column `{}` is missing from the source",
            ds.privacy_unit
        ));
    }
    ds.columns
        .iter()
        .map(|col| {
            let field = source.field_with_name(&col.name).map_err(|_| {
                format!(
                    "column `{}` is declared in policy but missing from the source",
                    col.name
                )
            })?;
            if !type_fits(&col.kind, field.data_type()) {
                return Err(format!(
                    "column `{}` is declared `{}` but the source holds {}",
                    col.name,
                    col.kind.name(),
                    field.data_type()
                ));
            }
            Ok(field.clone())
        })
        .collect()
}

impl Catalog {
    /// Registers every dataset of `policy`, resolving relative sources against `data_root`, hashing
    /// each source and checking that every declared column exists with a fitting type.
    pub async fn open(
        policy: &Policy,
        data_root: &Path,
        options: CatalogOptions,
    ) -> Result<Self, DataError> {
        let (execution, planning) = contexts(options.partitions);
        if let Some(remote) = &options.remote {
            for udf in crate::remote::execution_udfs() {
                remote.context.register_udf(udf.as_ref().clone());
            }
        }
        let both = Contexts {
            execution: &execution,
            planning: &planning,
        };
        // Every source is tried, so that one start lists every problem.
        let mut problems = Vec::new();
        let mut datasets = BTreeMap::new();
        for ds in policy.datasets.values() {
            match register(ds, data_root, &both, &options).await {
                Ok(registered) => {
                    datasets.insert(ds.id.clone(), registered);
                }
                Err(e) => problems.push(e),
            }
        }
        let mut lookups = BTreeMap::new();
        for lk in policy.lookups.values() {
            match load_lookup(lk, data_root, &planning, &execution).await {
                Ok(loaded) => {
                    lookups.insert(lk.id.clone(), loaded);
                }
                Err(e) => problems.push(e),
            }
        }
        if problems.len() == 1 {
            return Err(problems.remove(0));
        }
        if !problems.is_empty() {
            return Err(DataError::Several(problems));
        }
        let remote = options.remote.map(|remote| {
            let on = datasets
                .values()
                .filter(|r| r.held.is_none() && r.policy.cluster)
                .map(|r| r.policy.id.clone())
                .collect();
            (remote, on)
        });
        Ok(Self {
            planning,
            narrow: narrow(&execution),
            execution,
            datasets,
            lookups,
            remote,
        })
    }

    /// Where a query on dataset `id` runs: on the remote engine when one is configured and the
    /// dataset is registered there, unless the query must run here (`local_only`: it joins a
    /// lookup or runs row functions, see [`crate::remote`]).
    pub(crate) fn placement(&self, id: &DatasetId, local_only: bool) -> Placement<'_> {
        match &self.remote {
            Some((remote, on)) if !local_only && on.contains(id) => Placement {
                context: &remote.context,
                engine: &remote.name,
                remote: Some(remote),
            },
            _ => Placement {
                context: self.context_of(id),
                engine: crate::remote::LOCAL,
                remote: None,
            },
        }
    }

    /// The context a dataset's queries are planned and run in: the [narrow](Self::narrow) one
    /// for a small dataset held in memory.
    pub(crate) fn context_of(&self, id: &DatasetId) -> &SessionContext {
        match self.datasets.get(id).and_then(|r| r.held) {
            Some(held) if held.narrow() => &self.narrow,
            _ => &self.execution,
        }
    }

    /// A loaded lookup table.
    pub fn lookup(&self, id: &DatasetId) -> Option<&LoadedLookup> {
        self.lookups.get(id)
    }

    /// A registered dataset.
    pub fn get(&self, id: &DatasetId) -> Option<&Registered> {
        self.datasets.get(id)
    }

    /// Every registered dataset.
    pub fn datasets(&self) -> impl Iterator<Item = &Registered> {
        self.datasets.values()
    }
}
