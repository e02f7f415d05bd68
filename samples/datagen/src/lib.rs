//! # sluice-datagen
//!
//! A deterministic, seeded generator of realistic synthetic public-sector datasets for Sluice's demo,
//! tests and benchmarks. The same `(rows, seed)` always yields the same bytes.
//!
//! ```no_run
//! let dir = std::path::Path::new("data");
//! sluice_datagen::health_visits(&dir.join("health_visits.parquet"), 100_000, 7)?;
//! sluice_datagen::tourism_trips(&dir.join("tourism_trips.parquet"), 100_000, 7)?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! ## Datasets
//! - `health_visits`: one row per clinic visit. Privacy unit `person_id`; 1–7 visits per person
//!   (a few above the policy's bound of 5, so that contribution bounding matters). Columns: district
//!   (Yangzhou's districts, county-level cities and functional zones), sex, age, diagnosis group
//!   (age-dependent), cost in CNY (log-normal, a few above the policy's bound, 0.5% missing), and the
//!   hidden identifiers `name` and `id_card`.
//! - `tourism_trips`: one row per visit to a scenic spot. Privacy unit `visitor_id`; 1–14 trips per
//!   visitor. Columns: spot, month (`2026-MM`, seasonal), origin province, spend in CNY, group size,
//!   and the hidden `visitor_name` and `phone`.
//! - `residents`: the performance benchmark's shape (one row per person and month of income
//!   records). Privacy unit `person_id`; 1–5 rows per person, uniformly (3 on average, so 10M rows
//!   hold about 3.33M persons and none is above a bound of 5). Columns: one of 12 districts, age,
//!   income in CNY (log-normal, a few above a 200,000 bound).
//!
//! Every name and number is invented; no real person is described.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Default size of the demo datasets.
pub const DEFAULT_ROWS: usize = 1_000_000;
/// Default seed.
pub const DEFAULT_SEED: u64 = 20_261_127;
const BATCH: usize = 131_072;

/// Yangzhou's districts, county-level cities and functional zones, with rough population weights.
pub const DISTRICTS: &[(&str, f64)] = &[
    ("Guangling", 0.13),
    ("Hanjiang", 0.20),
    ("Jiangdu", 0.22),
    ("Yizheng", 0.12),
    ("Gaoyou", 0.14),
    ("Baoying", 0.12),
    ("Development Zone", 0.04),
    ("Shugang-Slender West Lake", 0.01),
    ("Ecological New City", 0.02),
];
const DIAGNOSES: &[&str] = &[
    "respiratory",
    "cardiovascular",
    "digestive",
    "musculoskeletal",
    "injury",
    "mental_health",
    "endocrine",
    "other",
];
/// Scenic spots with popularity weights.
pub const SPOTS: &[(&str, f64)] = &[
    ("Slender West Lake", 0.30),
    ("Ge Garden", 0.14),
    ("He Garden", 0.13),
    ("Daming Temple", 0.12),
    ("Grand Canal Museum", 0.10),
    ("Dongguan Street", 0.12),
    ("Guazhou Ancient Ferry", 0.04),
    ("Yangzhou Museum", 0.05),
];
const ORIGINS: &[(&str, f64)] = &[
    ("Jiangsu", 0.45),
    ("Shanghai", 0.18),
    ("Zhejiang", 0.14),
    ("Anhui", 0.10),
    ("other", 0.13),
];
const SURNAMES: &[&str] = &[
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu",
];

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (name, w) in items {
        if x < *w {
            return name;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

/// A standard normal draw (Box–Muller). For synthetic data only, never for privacy noise.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

struct Writer {
    writer: ArrowWriter<File>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    progress: Progress,
}

/// A progress line on a terminal for large files (`health_visits.parquet: 40% (4000000 of
/// 10000000 rows)`), redrawn in place; nothing when stderr is not a terminal or the file is
/// small.
struct Progress {
    name: String,
    total: usize,
    written: usize,
    shown: bool,
}

impl Progress {
    /// Files smaller than this are written without a progress line.
    const FROM_ROWS: usize = 1_000_000;

    fn new(path: &Path, total: usize) -> Self {
        use std::io::IsTerminal;
        Self {
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            total,
            written: 0,
            shown: total >= Self::FROM_ROWS && std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, rows: usize) {
        self.written += rows;
        if self.shown {
            eprint!(
                "\r  {}: {}% ({} of {} rows)",
                self.name,
                self.written * 100 / self.total.max(1),
                self.written,
                self.total
            );
        }
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

impl Writer {
    fn create(path: &Path, schema: SchemaRef, rows: usize) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("while creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("parquet.tmp");
        let file =
            File::create(&tmp).with_context(|| format!("while creating {}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(BATCH))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(Self {
            writer,
            tmp,
            path: path.to_path_buf(),
            progress: Progress::new(path, rows),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.progress.advance(batch.num_rows());
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.progress.done();
        self.writer.close()?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("while moving {} into place", self.path.display()))?;
        Ok(())
    }
}

/// Writes `rows` health visits to `path` (Parquet), deterministically from `seed`.
pub fn health_visits(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("id_card", DataType::Utf8, false),
        Field::new("district", DataType::Utf8, false),
        Field::new("sex", DataType::Utf8, false),
        Field::new("age", DataType::Int64, false),
        Field::new("diagnosis_group", DataType::Utf8, false),
        Field::new("cost", DataType::Float64, true),
        Field::new("visit_day", DataType::Date32, false),
    ]));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Visit days come from a stream of their own, so that every other column is what it was
    // before the column was added.
    let mut days = ChaCha8Rng::seed_from_u64(seed ^ 0x0da7_e5ee_d000_0001);
    let mut out = Writer::create(path, schema.clone(), rows)?;
    let mut written = 0usize;
    let mut person: i64 = 0;
    let mut cols = HealthCols::default();
    while written < rows {
        person += 1;
        let district = pick(&mut rng, DISTRICTS);
        let sex = if rng.random::<bool>() { "F" } else { "M" };
        let age = ((normal(&mut rng) * 22.0 + 45.0).round() as i64).clamp(0, 104);
        let name = format!(
            "{} {}",
            SURNAMES[rng.random_range(0..SURNAMES.len())],
            rng.random_range(100..10_000)
        );
        let id_card = format!("3210{:014}", rng.random_range(0..100_000_000_000_000u64));
        // Most people visit 1–3 times; a few visit often (above the policy bound of 5).
        let visits = match rng.random::<f64>() {
            x if x < 0.45 => 1,
            x if x < 0.72 => 2,
            x if x < 0.87 => 3,
            x if x < 0.94 => 4,
            x if x < 0.98 => 5,
            _ => rng.random_range(6..=7),
        };
        for _ in 0..visits {
            if written >= rows {
                break;
            }
            let diag = if age >= 60 && rng.random::<f64>() < 0.35 {
                "cardiovascular"
            } else if age < 15 && rng.random::<f64>() < 0.5 {
                "respiratory"
            } else {
                DIAGNOSES[rng.random_range(0..DIAGNOSES.len())]
            };
            let base = match diag {
                "cardiovascular" => 900.0,
                "injury" => 700.0,
                "endocrine" => 500.0,
                "mental_health" => 450.0,
                _ => 300.0,
            };
            let cost = (base * (normal(&mut rng) * 0.9).exp() * 100.0).round() / 100.0;
            let cost = if rng.random::<f64>() < 0.005 {
                None
            } else {
                Some(cost)
            };
            cols.person.push(person);
            cols.name.push(name.clone());
            cols.id_card.push(id_card.clone());
            cols.district.push(district);
            cols.sex.push(sex);
            cols.age.push(age);
            cols.diag.push(diag);
            cols.cost.push(cost);
            cols.day.push(visit_day(&mut days, diag));
            written += 1;
            if cols.person.len() == BATCH {
                out.write(&cols.take(&schema)?)?;
            }
        }
    }
    if !cols.person.is_empty() {
        out.write(&cols.take(&schema)?)?;
    }
    out.finish()
}

#[derive(Default)]
struct HealthCols {
    person: Vec<i64>,
    name: Vec<String>,
    id_card: Vec<String>,
    district: Vec<&'static str>,
    sex: Vec<&'static str>,
    age: Vec<i64>,
    diag: Vec<&'static str>,
    cost: Vec<Option<f64>>,
    day: Vec<i32>,
}

/// First and last visit day of the demo data: 2024-01-01 to 2026-12-31 (days since 1970-01-01).
pub const VISIT_DAYS: (i32, i32) = (19_723, 20_818);

/// A visit's day within [`VISIT_DAYS`]: uniform, except that a respiratory visit falls in the
/// winter months (December to February) more often than not.
fn visit_day(rng: &mut ChaCha8Rng, diag: &str) -> i32 {
    loop {
        let day = rng.random_range(VISIT_DAYS.0..=VISIT_DAYS.1);
        // Day of the year, roughly: 0 is January 1st (leap days shift it by one at most).
        let doy = (day - VISIT_DAYS.0).rem_euclid(365);
        let winter = !(59..334).contains(&doy);
        if diag != "respiratory" || winter || rng.random::<f64>() < 0.4 {
            return day;
        }
    }
}

impl HealthCols {
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let c = std::mem::take(self);
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(c.person)),
            Arc::new(StringArray::from(c.name)),
            Arc::new(StringArray::from(c.id_card)),
            Arc::new(StringArray::from(c.district)),
            Arc::new(StringArray::from(c.sex)),
            Arc::new(Int64Array::from(c.age)),
            Arc::new(StringArray::from(c.diag)),
            Arc::new(Float64Array::from(c.cost)),
            Arc::new(Date32Array::from(c.day)),
        ];
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }
}

/// The twelve districts of the `residents` benchmark table.
pub const RESIDENT_DISTRICTS: [&str; 12] = [
    "D01", "D02", "D03", "D04", "D05", "D06", "D07", "D08", "D09", "D10", "D11", "D12",
];

/// Writes `rows` resident income records to `path` (Parquet), deterministically from `seed`: the
/// benchmark shape of 1–5 rows per person (see the crate docs).
pub fn residents(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("district", DataType::Utf8, false),
        Field::new("age", DataType::Int64, false),
        Field::new("income", DataType::Float64, false),
    ]));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Writer::create(path, schema.clone(), rows)?;
    let (mut written, mut person) = (0usize, 0i64);
    let mut cols: (Vec<i64>, Vec<&str>, Vec<i64>, Vec<f64>) = Default::default();
    while written < rows {
        person += 1;
        let district = RESIDENT_DISTRICTS[rng.random_range(0..RESIDENT_DISTRICTS.len())];
        let age = ((normal(&mut rng) * 18.0 + 42.0).round() as i64).clamp(16, 100);
        let level = 60_000.0 * (normal(&mut rng) * 0.6).exp();
        for _ in 0..rng.random_range(1..=5) {
            if written >= rows {
                break;
            }
            let income = (level * (normal(&mut rng) * 0.1).exp()).round();
            cols.0.push(person);
            cols.1.push(district);
            cols.2.push(age);
            cols.3.push(income);
            written += 1;
            if cols.0.len() == BATCH || written == rows {
                let (p, d, a, i) = std::mem::take(&mut cols);
                let arrays: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(p)),
                    Arc::new(StringArray::from(d)),
                    Arc::new(Int64Array::from(a)),
                    Arc::new(Float64Array::from(i)),
                ];
                out.write(&RecordBatch::try_new(schema.clone(), arrays)?)?;
            }
        }
    }
    out.finish()
}

/// Writes `rows` tourism trips to `path` (Parquet), deterministically from `seed`.
pub fn tourism_trips(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("visitor_id", DataType::Int64, false),
        Field::new("visitor_name", DataType::Utf8, false),
        Field::new("phone", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("spot", DataType::Utf8, false),
        Field::new("month", DataType::Utf8, false),
        Field::new("spend", DataType::Float64, false),
        Field::new("group_size", DataType::Int64, false),
    ]));
    // Spring (Fireworks in March, the poem) and the October holiday are the high seasons.
    let months: Vec<(String, f64)> = [
        0.05, 0.06, 0.12, 0.13, 0.09, 0.06, 0.08, 0.08, 0.08, 0.12, 0.07, 0.06,
    ]
    .iter()
    .enumerate()
    .map(|(i, w)| (format!("2026-{:02}", i + 1), *w))
    .collect();
    let months: Vec<(&str, f64)> = months.iter().map(|(m, w)| (m.as_str(), *w)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7001);
    let mut out = Writer::create(path, schema.clone(), rows)?;
    let mut written = 0usize;
    let mut visitor: i64 = 0;
    let mut c = TourismCols::default();
    while written < rows {
        visitor += 1;
        let origin = pick(&mut rng, ORIGINS);
        let name = format!(
            "{} {}",
            SURNAMES[rng.random_range(0..SURNAMES.len())],
            rng.random_range(100..10_000)
        );
        let phone = format!("1{:010}", rng.random_range(3_000_000_000u64..9_999_999_999));
        let trips = if rng.random::<f64>() < 0.03 {
            rng.random_range(8..=14)
        } else {
            rng.random_range(1..=6)
        };
        let group = if rng.random::<f64>() < 0.01 {
            25
        } else {
            rng.random_range(1..=6)
        };
        for _ in 0..trips {
            if written >= rows {
                break;
            }
            let spot = pick(&mut rng, SPOTS);
            let month = pick(&mut rng, &months);
            let spend = (280.0 * (normal(&mut rng) * 0.8).exp() * group as f64 / 2.0 * 100.0)
                .round()
                / 100.0;
            c.visitor.push(visitor);
            c.name.push(name.clone());
            c.phone.push(phone.clone());
            c.origin.push(origin);
            c.spot.push(spot);
            c.month.push(month.to_string());
            c.spend.push(spend);
            c.group.push(group);
            written += 1;
            if c.visitor.len() == BATCH {
                out.write(&c.take(&schema)?)?;
            }
        }
    }
    if !c.visitor.is_empty() {
        out.write(&c.take(&schema)?)?;
    }
    out.finish()
}

#[derive(Default)]
struct TourismCols {
    visitor: Vec<i64>,
    name: Vec<String>,
    phone: Vec<String>,
    origin: Vec<&'static str>,
    spot: Vec<&'static str>,
    month: Vec<String>,
    spend: Vec<f64>,
    group: Vec<i64>,
}

impl TourismCols {
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let c = std::mem::take(self);
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(c.visitor)),
            Arc::new(StringArray::from(c.name)),
            Arc::new(StringArray::from(c.phone)),
            Arc::new(StringArray::from(c.origin)),
            Arc::new(StringArray::from(c.spot)),
            Arc::new(StringArray::from(c.month)),
            Arc::new(Float64Array::from(c.spend)),
            Arc::new(Int64Array::from(c.group)),
        ];
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }
}

/// Whether the Parquet file at `path` exists and has a column called `name`.
fn has_column(path: &Path, name: &str) -> bool {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    File::open(path)
        .ok()
        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
        .is_some_and(|b| b.schema().field_with_name(name).is_ok())
}

/// Generates both demo datasets under `dir` unless they exist (with the columns the example
/// policies declare); returns which files it wrote.
pub fn ensure_demo_data(dir: &Path, rows: usize, seed: u64) -> Result<Vec<std::path::PathBuf>> {
    let mut wrote = Vec::new();
    let health = dir.join("health_visits.parquet");
    // A file from an older generator (without `visit_day`) is written again: the example policy
    // declares the column.
    if !has_column(&health, "visit_day") {
        health_visits(&health, rows, seed)?;
        wrote.push(health);
    }
    let tourism = dir.join("tourism_trips.parquet");
    if !tourism.exists() {
        tourism_trips(&tourism, rows, seed)?;
        wrote.push(tourism);
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn residents_have_one_to_five_rows_each_and_the_same_seed_gives_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("sluice-datagen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.parquet"), dir.join("b.parquet"));
        residents(&a, 30_000, 7).unwrap();
        residents(&b, 30_000, 7).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&a).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut per_person = std::collections::HashMap::<i64, usize>::new();
        let mut districts = std::collections::BTreeSet::new();
        for batch in reader {
            let batch = batch.unwrap();
            for p in batch.column(0).as_primitive::<Int64Type>().values() {
                *per_person.entry(*p).or_default() += 1;
            }
            for d in batch.column(1).as_string::<i32>().iter().flatten() {
                districts.insert(d.to_string());
            }
        }
        assert_eq!(per_person.values().sum::<usize>(), 30_000);
        // The last person may be cut short by the row count.
        assert!(per_person.values().all(|n| (1..=5).contains(n)));
        let mean = 30_000.0 / per_person.len() as f64;
        assert!((2.8..3.2).contains(&mean), "{mean} rows per person");
        assert_eq!(districts.len(), RESIDENT_DISTRICTS.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
