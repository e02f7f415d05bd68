//! `sluice bench`: the cost of privacy, measured against plain DataFusion in the same run.
//!
//! For each query shape it times the DP query through the privacy engine (validation, contribution
//! bounding, clamping, charge, execution, noise) and the same SQL without privacy on a plain
//! DataFusion context over the same file, and prints the medians and their ratio. It then times a
//! job's component load when compiled and when served from the cache, and a whole sample job.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sluice_policy::Date;
use sluice_runtime::privacy::Asker;
use sluice_runtime::{InMemoryAccountant, JobRequest, Sandbox, SandboxConfig};

use crate::local;

const CASES: &[(&str, &str)] = &[
    (
        "COUNT(*) by district",
        "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district",
    ),
    (
        "SUM(cost) by district",
        "SELECT district, SUM(cost) AS s FROM health_visits GROUP BY district",
    ),
    (
        "AVG(cost) by district",
        "SELECT district, AVG(cost) AS m FROM health_visits GROUP BY district",
    ),
    (
        "COUNT+SUM+AVG by district",
        "SELECT district, COUNT(*) AS n, SUM(cost) AS s, AVG(cost) AS m FROM health_visits GROUP BY district",
    ),
    (
        "COUNT by district, sex WHERE age >= 18",
        "SELECT district, sex, COUNT(*) AS n FROM health_visits WHERE age >= 18 GROUP BY district, sex",
    ),
];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(rows: usize, reps: usize, dir: &Path) -> Result<ExitCode> {
    let reps = reps.max(1);
    let path = dir.join(format!("health_visits_{rows}.parquet"));
    if !path.exists() {
        eprintln!("generating {rows} rows into {} (once)…", path.display());
        let t = Instant::now();
        sluice_datagen::health_visits(&path, rows, sluice_datagen::DEFAULT_SEED)?;
        eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
    }
    let abs = std::fs::canonicalize(&path)?;
    let policy_text = format!(
        r#"
[dataset.health_visits]
source = "{}"
holder = "bench"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
columns.district = {{ kind = "category", public_values = ["Guangling", "Hanjiang", "Jiangdu", "Yizheng", "Gaoyou", "Baoying", "Development Zone", "Shugang-Slender West Lake", "Ecological New City"] }}
columns.sex = {{ kind = "category", public_values = ["F", "M"] }}
columns.diagnosis_group = {{ kind = "category", public_values = ["respiratory", "cardiovascular", "digestive", "musculoskeletal", "injury", "mental_health", "endocrine", "other"] }}
columns.age = {{ kind = "int", bounds = [0, 100] }}
columns.cost = {{ kind = "float", bounds = [0.0, 20000.0] }}

[[grant]]
operator = "canal-analytics"
datasets = ["health_visits"]
purpose = "benchmark"
aggregations = ["count", "sum", "mean"]
epsilon_per_job = 100.0
epsilon_per_period = 100.0
period = "1d"
expires = 2099-12-31
review = "none"
"#,
        abs.display()
    );
    let policy = sluice_policy::parse_str("bench.toml", &policy_text)?;
    let started = Instant::now();
    let sandbox = Sandbox::new(SandboxConfig::new(
        policy,
        "/",
        Arc::new(InMemoryAccountant::new()),
    ))?;
    println!(
        "sandbox start (register + sha256 of {rows} rows): {:.0} ms",
        ms(started.elapsed())
    );

    let plain = SessionContext::new();
    sandbox.block_on(plain.register_parquet(
        "health_visits",
        abs.to_str().context("utf-8 path")?,
        ParquetReadOptions::default(),
    ))?;

    let asker = Asker {
        operator: "canal-analytics"
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
        job: "bench".into(),
        today: Date::today_utc(),
    };
    println!("\n{rows} rows, median of {reps} runs; ε = 0.5 per DP query");
    println!(
        "{:<40} {:>10} {:>14} {:>10} {:>7}",
        "query", "plain ms", "plain+bound ms", "DP ms", "ratio"
    );
    // The same SQL with a contribution-bounding window (no random order, no noise): how much of
    // the DP cost is bounding.
    let bounded = |sql: &str| {
        sql.replace(
            "FROM health_visits",
            "FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY person_id) AS rn FROM health_visits) WHERE rn <= 5)",
        )
    };
    for (name, sql) in CASES {
        // Warm both paths once (file metadata caches), then measure.
        sandbox.block_on(async { plain.sql(sql).await?.collect().await })?;
        let mut plain_t = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            sandbox.block_on(async { plain.sql(sql).await?.collect().await })?;
            plain_t.push(t.elapsed());
        }
        let bsql = bounded(sql);
        let mut bound_t = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            sandbox.block_on(async { plain.sql(&bsql).await?.collect().await })?;
            bound_t.push(t.elapsed());
        }
        let mut dp_t = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            sandbox
                .block_on(sandbox.engine().query(&asker, sql, 0.5))
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            dp_t.push(t.elapsed());
        }
        let (p, b, d) = (median(plain_t), median(bound_t), median(dp_t));
        println!(
            "{name:<40} {:>10.1} {:>14.1} {:>10.1} {:>6.1}x",
            ms(p),
            ms(b),
            ms(d),
            d.as_secs_f64() / p.as_secs_f64()
        );
    }

    let wasm_path = &local::build_samples()?[0];
    let wasm = std::fs::read(wasm_path)?;
    let t = Instant::now();
    sandbox.precompile(&wasm)?;
    let compile = t.elapsed();
    let t = Instant::now();
    let cached = sandbox.precompile(&wasm)?;
    let hit = t.elapsed();
    assert!(cached, "second load must come from the cache");
    println!(
        "\njob component ({} KiB): first load (componentize + compile) {:.1} ms, cached load {:.3} ms, ratio {:.0}x",
        wasm.len() / 1024,
        ms(compile),
        ms(hit),
        compile.as_secs_f64() / hit.as_secs_f64().max(1e-9)
    );
    let out = sandbox
        .run_job(&JobRequest::new(
            asker.operator.clone(),
            "bench-job",
            &wasm,
            "epsilon=0.5",
        ))
        .map_err(|f| anyhow::anyhow!("sample job failed: {}", f.error))?;
    println!(
        "visits-by-district job on {rows} rows (cached component, 2 DP queries): {:.0} ms (load {:.3} ms)",
        ms(out.run_time),
        ms(out.load_time)
    );
    Ok(ExitCode::SUCCESS)
}
