//! `sluice bench rows`: a query aggregating a job's row function against the same query on a
//! plain column, on the `residents` table, and what one privacy unit's fresh instance costs.
//!
//! The row function is the tourism sample's `per_person(spend, group_size)` (a division),
//! applied to `income` and `age`: the work per row is trivial, so the figures are the cost of
//! running job code per unit (grouping rows by unit, one instance per unit, a call per row).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice_runtime::rows::{RowEngine, RowModule};
use sluice_runtime::{InMemoryAccountant, Sandbox, SandboxConfig};

use crate::bench::{median, ms};

/// The DP query's ε.
const EPSILON: f64 = 1.0;

/// Prints the row-function figures on `rows` rows of `residents` (generated into `dir` once).
pub fn run(rows: usize, reps: usize, dir: &Path) -> Result<()> {
    let reps = reps.clamp(1, 20);
    let path = dir.join(format!("residents_{rows}.parquet"));
    if !path.exists() {
        eprintln!("generating {rows} rows into {} (once)…", path.display());
        sluice_datagen::residents(&path, rows, sluice_datagen::DEFAULT_SEED)?;
    }
    let abs = std::fs::canonicalize(&path)?;
    let policy = sluice_policy::parse_str("rows.toml", &policy(&abs))?;
    let sandbox = Sandbox::new(
        SandboxConfig::new(policy, "/", Arc::new(InMemoryAccountant::new()))
            .without_answer_cache()
            .with_memory_bytes(0),
    )?;
    let module = sample_rows_module()?;
    let mut asker = crate::bench::asker()?;
    asker.rows = Some(module.clone());
    let query = |sql: &str| -> Result<Duration> {
        let t = Instant::now();
        sandbox
            .block_on(sandbox.engine().query(&asker, sql, EPSILON))
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        Ok(t.elapsed())
    };
    let plain = "SELECT district, SUM(income) AS s FROM residents GROUP BY district";
    let rowfn =
        "SELECT district, SUM(per_person(income, age)) AS s FROM residents GROUP BY district";
    query(plain)?; // the contribution index and the page cache
    let time = |sql: &str| -> Result<Duration> {
        query(sql)?;
        Ok(median(
            (0..reps).map(|_| query(sql)).collect::<Result<_>>()?,
        ))
    };
    let (p, r) = (time(plain)?, time(rowfn)?);
    let units = 100_000;
    let per_unit = instance_cost(&module, units)?;
    println!(
        "\nrow functions on residents: {rows} rows, 1–5 per person, bound 5, ε = {EPSILON}; median of {reps}"
    );
    println!("{:<58} {:>10}", "query", "DP ms");
    println!(
        "{:<58} {:>10.0}",
        "SUM(income) by district (plain column)",
        ms(p)
    );
    println!(
        "{:<58} {:>10.0}",
        "SUM(per_person(income, age)) by district (row function)",
        ms(r)
    );
    println!(
        "ratio row function / plain column: {:.1}x",
        r.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "one unit's fresh instance with one call ({units} units, one at a time): {:.2} µs",
        per_unit.as_secs_f64() * 1e6
    );
    Ok(())
}

/// The tourism sample's rows module, built (`sluice build` style) and compiled.
fn sample_rows_module() -> Result<Arc<RowModule>> {
    let paths = crate::local::build_samples()?;
    let (i, _) = crate::local::SAMPLES
        .iter()
        .enumerate()
        .find(|(_, s)| s.0 == "sample-tourism-per-person")
        .context("no tourism-per-person sample")?;
    let wasm = std::fs::read(&paths[i])?;
    RowModule::from_job(&wasm, &RowEngine::new()?)?.context("the sample carries no row functions")
}

/// Mean time of a fresh instance running one row, over `units` units.
fn instance_cost(module: &RowModule, units: usize) -> Result<Duration> {
    use datafusion::arrow::array::Float64Array;
    let (index, _) = module.function("per_person").context("no per_person")?;
    let args = [
        Float64Array::from(vec![300.0]),
        Float64Array::from(vec![3.0]),
    ];
    let fuel = sluice_policy::RowFuel::default();
    let t = Instant::now();
    for _ in 0..units {
        module
            .run_unit(index, &args, 1, fuel)
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(t.elapsed() / units as u32)
}

/// The workloads' residents policy, with `age` and `income` readable by row functions and the
/// grant allowing them.
fn policy(abs: &Path) -> String {
    crate::bench_workloads::policy(abs)
        .replace(
            "bounds = [0, 100] }",
            "bounds = [0, 100], row_functions = true }",
        )
        .replace(
            "bounds = [0.0, 200000.0] }",
            "bounds = [0.0, 200000.0], row_functions = true }",
        )
        .replace(
            "review = \"none\"",
            "review = \"none\"\nrow_functions = true",
        )
}
