//! Mock data: rows drawn from a policy's public metadata alone, for dry runs of whole jobs
//! ([`crate::plan`]).
//!
//! Nothing here reads a dataset. Each dataset gets [`MOCK_UNITS`] privacy units with 1 to
//! `max_rows_per_unit` rows each; every declared column takes values from what the policy makes
//! public: a category its `public_values` (or made-up labels), a number uniform within its bounds
//! (or its bins' range), a date within its bounds. Lookups are public reference tables and are
//! loaded as they are. The same seed gives the same rows; two seeds let a plan see whether a
//! job's queries depend on its answers.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::datasource::empty::EmptyTable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use sluice_policy::{Column, ColumnKind, Dataset, Policy};

use crate::data::{Catalog, DataError, Registered, contexts, load_lookup};

/// Privacy units per mock dataset.
pub const MOCK_UNITS: usize = 1_000;

/// Labels of a category column that declares no public values.
const MADE_UP_LABELS: usize = 8;

impl Catalog {
    /// Every dataset of `policy` filled with mock rows drawn from its public metadata with
    /// `seed`, and every lookup loaded from `data_root` (lookups are public). A dataset's
    /// version is the sha256 of `mock:<dataset>:<seed>`, never a real source's.
    pub async fn mock(
        policy: &Policy,
        data_root: &Path,
        partitions: usize,
        seed: u64,
    ) -> Result<Self, DataError> {
        let (execution, planning) = contexts(partitions);
        let mut datasets = std::collections::BTreeMap::new();
        for ds in policy.datasets.values() {
            let mut rng = StdRng::seed_from_u64(seed ^ fnv(ds.id.as_str()));
            let batch = mock_rows(ds, &mut rng).map_err(|problem| DataError::Schema {
                dataset: ds.id.clone(),
                problem,
            })?;
            let schema = batch.schema();
            let (batch_rows, batch_bytes) = (batch.num_rows(), batch.get_array_memory_size());
            let schema_err = |e: datafusion::error::DataFusionError| DataError::Schema {
                dataset: ds.id.clone(),
                problem: e.to_string(),
            };
            let table = MemTable::try_new(schema.clone(), vec![vec![batch]]).map_err(schema_err)?;
            execution
                .register_table(ds.id.as_str(), Arc::new(table))
                .map_err(schema_err)?;
            planning
                .register_table(ds.id.as_str(), Arc::new(EmptyTable::new(schema.clone())))
                .map_err(schema_err)?;
            let declared: Vec<Field> = ds
                .columns
                .iter()
                .filter_map(|c| schema.field_with_name(&c.name).ok().cloned())
                .collect();
            let version = Sha256::digest(format!("mock:{}:{seed}", ds.id.as_str()));
            datasets.insert(
                ds.id.clone(),
                Registered {
                    policy: ds.clone(),
                    content_hash: hex::encode(version),
                    declared_schema: Arc::new(Schema::new(declared)),
                    stamp: None,
                    held: Some(crate::data::HeldInMemory {
                        rows: batch_rows,
                        bytes: batch_bytes,
                    }),
                },
            );
        }
        let mut lookups = std::collections::BTreeMap::new();
        for lk in policy.lookups.values() {
            let loaded = load_lookup(lk, data_root, &planning, &execution).await?;
            lookups.insert(lk.id.clone(), loaded);
        }
        Ok(Self {
            narrow: crate::data::narrow(&execution),
            planning,
            execution,
            datasets,
            lookups,
            remote: None,
        })
    }
}

/// A stable 64-bit hash of a name (FNV-1a), so each dataset draws its own rows from one seed.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The mock rows of one dataset: its privacy unit as text, then every declared column.
fn mock_rows(ds: &Dataset, rng: &mut StdRng) -> Result<RecordBatch, String> {
    let rows_of: Vec<u32> = (0..MOCK_UNITS)
        .map(|_| rng.random_range(1..=ds.max_rows_per_unit.max(1)))
        .collect();
    let units: Vec<String> = rows_of
        .iter()
        .enumerate()
        .flat_map(|(u, &n)| std::iter::repeat_n(format!("mock-{u:06}"), n as usize))
        .collect();
    let rows = units.len();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    if ds.column(&ds.privacy_unit).is_none() {
        fields.push(Field::new(&ds.privacy_unit, DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(units)));
    }
    for col in &ds.columns {
        let (data_type, array) = mock_column(col, rows, rng);
        fields.push(Field::new(&col.name, data_type, false));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// `rows` values of one column, drawn from what the policy makes public about it.
fn mock_column(col: &Column, rows: usize, rng: &mut StdRng) -> (DataType, ArrayRef) {
    let bin_range = col
        .bins
        .as_ref()
        .and_then(|b| Some((*b.first()?, *b.last()?)));
    match &col.kind {
        ColumnKind::Category { public_values, .. } => {
            let labels: Vec<String> = match public_values {
                Some(v) if !v.is_empty() => v.clone(),
                _ => (1..=MADE_UP_LABELS)
                    .map(|i| format!("{}-{i}", col.name))
                    .collect(),
            };
            let values: Vec<&str> = (0..rows)
                .map(|_| labels[rng.random_range(0..labels.len())].as_str())
                .collect();
            (DataType::Utf8, Arc::new(StringArray::from(values)))
        }
        ColumnKind::Int { bounds } => {
            let (lo, hi) = bounds
                .or(bin_range.map(|(lo, hi)| (lo.ceil() as i64, hi.floor() as i64)))
                .unwrap_or((0, 100));
            let values: Vec<i64> = (0..rows)
                .map(|_| rng.random_range(lo.min(hi)..=hi.max(lo)))
                .collect();
            (DataType::Int64, Arc::new(Int64Array::from(values)))
        }
        ColumnKind::Float { bounds } => {
            let (lo, hi) = bounds.or(bin_range).unwrap_or((0.0, 100.0));
            let values: Vec<f64> = (0..rows)
                .map(|_| lo + rng.random::<f64>() * (hi - lo))
                .collect();
            (DataType::Float64, Arc::new(Float64Array::from(values)))
        }
        ColumnKind::Date { bounds } => {
            let (lo, hi) = bounds.map_or((19_723, 20_453), |(lo, hi)| {
                (lo.days_since_epoch(), hi.days_since_epoch())
            });
            let values: Vec<i32> = (0..rows)
                .map(|_| rng.random_range(lo.min(hi)..=hi.max(lo)) as i32)
                .collect();
            (DataType::Date32, Arc::new(Date32Array::from(values)))
        }
        ColumnKind::Hidden => (
            DataType::Utf8,
            Arc::new(StringArray::from(vec!["hidden"; rows])),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        sluice_policy::parse_str(
            "mock.toml",
            r#"
[dataset.visits]
source = "nowhere.parquet"
holder = "h"
classification = "internal"
privacy_unit = "person_id"
max_rows_per_unit = 3
columns.district = { kind = "category", public_values = ["a", "b"] }
columns.age = { kind = "int", bounds = [0, 100], bins = [0, 18, 65, 100] }
columns.day = { kind = "date", bounds = [2025-01-01, 2025-12-31] }
columns.income = { kind = "float", bounds = [0.0, 10.0] }
columns.name = { kind = "hidden" }

[[grant]]
operator = "op"
datasets = ["visits"]
purpose = "tests"
aggregations = ["count"]
epsilon_per_job = 1.0
epsilon_per_period = 1.0
period = "30d"
expires = 2099-12-31
review = "none"
"#,
        )
        .expect("policy")
    }

    #[tokio::test]
    async fn mock_rows_stay_within_the_public_metadata() {
        let p = policy();
        let c = Catalog::mock(&p, Path::new("/nonexistent"), 1, 7)
            .await
            .unwrap();
        let df = c
            .execution
            .sql(
                "SELECT COUNT(*), COUNT(DISTINCT person_id), MIN(age), MAX(age), MIN(day), MAX(day), \
                 MIN(income), MAX(income), COUNT(DISTINCT district), MAX(district) FROM visits",
            )
            .await
            .unwrap();
        let text =
            datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
                .unwrap()
                .to_string();
        let row: Vec<&str> = text
            .lines()
            .nth(3)
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        let rows: usize = row[1].parse().unwrap();
        assert!((MOCK_UNITS..=3 * MOCK_UNITS).contains(&rows), "{text}");
        assert_eq!(row[2], MOCK_UNITS.to_string());
        assert!(row[3].parse::<i64>().unwrap() >= 0 && row[4].parse::<i64>().unwrap() <= 100);
        assert!(
            row[5].starts_with("2025-") && row[6].starts_with("2025-"),
            "{text}"
        );
        assert!(row[7].parse::<f64>().unwrap() >= 0.0 && row[8].parse::<f64>().unwrap() <= 10.0);
        assert_eq!((row[9], row[10]), ("2", "b"));
        // The version names the mock and its seed, never a source.
        let v = &c.get(&"visits".parse().unwrap()).unwrap().content_hash;
        assert_eq!(v, &hex::encode(Sha256::digest("mock:visits:7")));
    }

    #[tokio::test]
    async fn two_seeds_draw_different_rows() {
        let p = policy();
        let sum = |seed| {
            let p = p.clone();
            async move {
                let c = Catalog::mock(&p, Path::new("/"), 1, seed).await.unwrap();
                let df = c
                    .execution
                    .sql("SELECT SUM(age) FROM visits")
                    .await
                    .unwrap();
                format!("{:?}", df.collect().await.unwrap())
            }
        };
        assert_eq!(sum(1).await, sum(1).await);
        assert_ne!(sum(1).await, sum(2).await);
    }
}
