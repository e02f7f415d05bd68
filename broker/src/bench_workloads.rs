//! The performance issue's four workloads (W1–W4) on the `residents` table: each DP query
//! against plain DataFusion and DataFusion's own bounded plan (per-person pre-aggregation, or a
//! `ROW_NUMBER` window for the quantiles), measured in the same run, with the ratios.
//!
//! Sluice's figure is one DP query through the privacy engine in-process (validation, design,
//! charge, bounding, execution, noise): the marginal time of a query inside a job. It is
//! measured on the contribution index's path once the index of the dataset version exists (the
//! first query, which builds it, is timed apart), and on the every-row bounding path that the
//! index replaces.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sluice_runtime::privacy::Asker;
use sluice_runtime::{InMemoryAccountant, Sandbox, SandboxConfig};

use crate::bench::{median, ms};

/// One workload: its DP SQL and the same question asked of plain DataFusion, without and with
/// contribution bounding (5 rows per person; no noise).
struct Workload {
    name: &'static str,
    dp: &'static str,
    plain: &'static str,
    bounded: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "W1 COUNT by district",
        dp: "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
        plain: "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
        bounded: "SELECT district, SUM(LEAST(n, 5)) AS n FROM (SELECT person_id, district, COUNT(*) AS n FROM residents GROUP BY person_id, district) GROUP BY district",
    },
    Workload {
        name: "W2 SUM(income) by district",
        dp: "SELECT district, SUM(income) AS s FROM residents GROUP BY district",
        plain: "SELECT district, SUM(LEAST(GREATEST(income, 0), 200000)) AS s FROM residents GROUP BY district",
        bounded: "SELECT district, SUM(s) AS s FROM (SELECT person_id, district, LEAST(SUM(LEAST(GREATEST(income, 0), 200000)), 1000000) AS s FROM residents GROUP BY person_id, district) GROUP BY district",
    },
    Workload {
        name: "W3 AVG(age)",
        dp: "SELECT AVG(age) AS a FROM residents",
        plain: "SELECT AVG(LEAST(GREATEST(age, 0), 100)) AS a FROM residents",
        bounded: "SELECT SUM(s) / SUM(n) AS a FROM (SELECT person_id, LEAST(SUM(LEAST(GREATEST(age, 0), 100)), 500) AS s, LEAST(COUNT(*), 5) AS n FROM residents GROUP BY person_id)",
    },
    Workload {
        name: "W4 median, 0.9 quantile of income",
        dp: "SELECT MEDIAN(income) AS m, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY income) AS p90 FROM residents",
        plain: "SELECT MEDIAN(income) AS m, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY income) AS p90 FROM residents",
        bounded: "SELECT MEDIAN(income) AS m, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY income) AS p90 FROM (SELECT income FROM (SELECT income, ROW_NUMBER() OVER (PARTITION BY person_id) AS rn FROM residents) WHERE rn <= 5)",
    },
];

/// The DP query's ε.
const EPSILON: f64 = 1.0;
/// Repetitions at most: each sandbox spends (reps + 1) · 4 · ε (+ ε) of its grant's 100.
const MAX_REPS: usize = 20;

/// The absolute path of `rows` rows of `residents` in `dir`, generated there the first time.
fn residents(rows: usize, dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join(format!("residents_{rows}.parquet"));
    if !path.exists() {
        eprintln!("generating {rows} rows into {} (once)…", path.display());
        sluice_datagen::residents(&path, rows, sluice_datagen::DEFAULT_SEED)?;
    }
    Ok(std::fs::canonicalize(&path)?)
}

/// Prints the W1–W4 table on `rows` rows of `residents` (generated into `dir` once).
pub fn run(rows: usize, reps: usize, dir: &Path) -> Result<()> {
    let reps = reps.clamp(1, MAX_REPS);
    let abs = residents(rows, dir)?;
    let sandbox = |index: bool| -> Result<Sandbox> {
        let policy = sluice_policy::parse_str("workloads.toml", &policy(&abs))?;
        // Scans the file at each query, as the plain engines it is compared with do.
        let config = SandboxConfig::new(policy, "/", Arc::new(InMemoryAccountant::new()))
            .without_answer_cache()
            .with_memory_bytes(0);
        let config = if index {
            config
        } else {
            config.without_contribution_index()
        };
        Ok(Sandbox::new(config)?)
    };
    let (indexed, every_row) = (sandbox(true)?, sandbox(false)?);
    let plain = SessionContext::new();
    indexed.block_on(plain.register_parquet(
        "residents",
        abs.to_str().context("utf-8 path")?,
        ParquetReadOptions::default(),
    ))?;
    let asker = crate::bench::asker()?;
    let t = Instant::now();
    dp(&indexed, &asker, WORKLOADS[0].dp)?;
    println!(
        "\nresidents: {rows} rows, 1–5 per person, bound 5 rows per person, ε = {EPSILON}; median of {reps}\n\
         first DP query on this dataset version (builds its contribution index): {:.0} ms",
        ms(t.elapsed())
    );
    println!(
        "{:<36} {:>9} {:>11} {:>9} {:>12} {:>9} {:>10}",
        "workload", "plain ms", "bounded ms", "DP ms", "DP every-row", "DP/plain", "DP/bounded"
    );
    // Per column: the largest peak resident set seen while it ran (the peak is reset before).
    let mut peaks = [0u64; 4];
    for w in WORKLOADS {
        let mut time = |column: usize, f: &dyn Fn() -> Result<()>| -> Result<Duration> {
            reset_peak_rss();
            f()?; // warm: file metadata, page cache
            let mut t = Vec::new();
            for _ in 0..reps {
                let start = Instant::now();
                f()?;
                t.push(start.elapsed());
            }
            peaks[column] = peaks[column].max(peak_rss_kib().unwrap_or(0));
            Ok(median(t))
        };
        let sql = |q: &'static str| -> Result<()> {
            indexed.block_on(async { plain.sql(q).await?.collect().await })?;
            Ok(())
        };
        let d = time(2, &|| dp(&indexed, &asker, w.dp))?;
        let p = time(0, &|| sql(w.plain))?;
        let b = time(1, &|| sql(w.bounded))?;
        let e = time(3, &|| dp(&every_row, &asker, w.dp))?;
        println!(
            "{:<36} {:>9.0} {:>11.0} {:>9.0} {:>12.0} {:>8.1}x {:>9.2}x",
            w.name,
            ms(p),
            ms(b),
            ms(d),
            ms(e),
            d.as_secs_f64() / p.as_secs_f64(),
            d.as_secs_f64() / b.as_secs_f64()
        );
    }
    // Validation, design and the budget's solution of a query shape already seen (what comes
    // before the charge), by `estimate`, which stops there.
    let estimate = |sql: &str| -> Result<Duration> {
        let t = Instant::now();
        indexed
            .block_on(indexed.engine().estimate(
                &asker,
                sql,
                sluice_runtime::privacy::Budget::Epsilon(EPSILON),
            ))
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        Ok(t.elapsed())
    };
    let planning = (0..50)
        .map(|_| estimate(WORKLOADS[0].dp))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "validation and design of a query shape already seen (W1, no charge): {:.2} ms (median of 50)",
        ms(median(planning))
    );
    let [p, b, d, e] = peaks.map(|kib| kib as f64 / 1024.0);
    println!(
        "peak RSS of the process while each column ran (MiB): plain {p:.0}, bounded {b:.0}, DP {d:.0}, DP every-row {e:.0}"
    );
    Ok(())
}

/// W1–W4 as DP queries in the broker's engine and on a Ballista cluster of one, then two,
/// executors started on this machine (`sluice scheduler`, `sluice executor`), on `rows` rows.
#[cfg(feature = "scale-out")]
pub fn scale(rows: usize, reps: usize, dir: &Path) -> Result<()> {
    let reps = reps.clamp(1, MAX_REPS);
    let abs = residents(rows, dir)?;
    // W1–W4, and W4's median alone: W4's two quantiles are two readers of one bounded relation
    // (on this data no unit is heavy, so each runs wholly on the cluster).
    let queries: Vec<(&str, &str)> = WORKLOADS
        .iter()
        .map(|w| (w.name, w.dp))
        .chain([(
            "W4a median of income alone",
            "SELECT MEDIAN(income) AS m FROM residents",
        )])
        .collect();
    let local = time_each(&scale_sandbox(&abs, None)?, &queries, reps)?;
    let mut cluster = scale::LocalCluster::start()?;
    // Timings on one executor, then on two.
    let mut on_cluster = Vec::new();
    for _ in 0..2 {
        cluster.add_executor()?;
        let sandbox = scale_sandbox(&abs, Some(&cluster.address))?;
        on_cluster.push(time_each(&sandbox, &queries, reps)?);
    }
    let rows_out: Vec<scale::Row> = queries
        .iter()
        .enumerate()
        .map(|(i, (name, _))| scale::Row {
            name,
            local: local[i],
            one_executor: on_cluster[0][i],
            two_executors: on_cluster[1][i],
        })
        .collect();
    scale::print(rows, reps, &rows_out);
    Ok(())
}

/// A sandbox over the benchmark's dataset scanning its file at each query, on the cluster whose
/// scheduler is at `scheduler` when given.
#[cfg(feature = "scale-out")]
fn scale_sandbox(abs: &Path, scheduler: Option<&str>) -> Result<Sandbox> {
    let policy = sluice_policy::parse_str("workloads.toml", &policy(abs))?;
    let mut config = SandboxConfig::new(policy, "/", Arc::new(InMemoryAccountant::new()))
        .without_answer_cache()
        .with_memory_bytes(0);
    if let Some(address) = scheduler {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        config.remote = Some(rt.block_on(sluice_scale::connect(address, Duration::from_secs(5)))?);
    }
    Ok(Sandbox::new(config)?)
}

/// The median time of each query's DP answer in `sandbox`, after one warm-up (the index, file
/// metadata, the page cache).
#[cfg(feature = "scale-out")]
fn time_each(sandbox: &Sandbox, queries: &[(&str, &str)], reps: usize) -> Result<Vec<Duration>> {
    let asker = crate::bench::asker()?;
    queries
        .iter()
        .map(|(_, sql)| {
            dp(sandbox, &asker, sql)?;
            let mut t = Vec::new();
            for _ in 0..reps {
                let start = Instant::now();
                dp(sandbox, &asker, sql)?;
                t.push(start.elapsed());
            }
            Ok(median(t))
        })
        .collect()
}

/// The scale benchmark's cluster and table.
#[cfg(feature = "scale-out")]
mod scale {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::Result;

    use super::EPSILON;
    use crate::bench::ms;

    /// A scheduler and executors started from this binary on loopback, killed when dropped.
    pub(super) struct LocalCluster {
        /// The scheduler's address (`df://127.0.0.1:port`).
        pub address: String,
        processes: Vec<Child>,
    }

    fn free_port() -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    /// Waits until something listens on `port`.
    fn wait_for(port: u16) -> Result<()> {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(60),
                "nothing listens on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    impl LocalCluster {
        /// A scheduler, listening.
        pub fn start() -> Result<Self> {
            let port = free_port()?;
            let mut cluster = Self {
                address: format!("df://127.0.0.1:{port}"),
                processes: Vec::new(),
            };
            cluster.spawn(&["scheduler", "--bind", &format!("127.0.0.1:{port}")])?;
            wait_for(port)?;
            Ok(cluster)
        }

        /// One more executor, registered (its first heartbeats take a moment).
        pub fn add_executor(&mut self) -> Result<()> {
            let (flight, grpc) = (free_port()?, free_port()?);
            let address = self.address.clone();
            self.spawn(&[
                "executor",
                "--scheduler",
                &address,
                "--flight-port",
                &flight.to_string(),
                "--grpc-port",
                &grpc.to_string(),
            ])?;
            wait_for(flight)?;
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        }

        fn spawn(&mut self, args: &[&str]) -> Result<()> {
            self.processes.push(
                Command::new(std::env::current_exe()?)
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
            Ok(())
        }
    }

    impl Drop for LocalCluster {
        fn drop(&mut self) {
            for c in &mut self.processes {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// One query's medians.
    pub(super) struct Row<'a> {
        pub name: &'a str,
        pub local: Duration,
        pub one_executor: Duration,
        pub two_executors: Duration,
    }

    /// The table, with ratios measured in the same run.
    pub(super) fn print(rows: usize, reps: usize, table: &[Row<'_>]) {
        println!(
            "\nresidents: {rows} rows, bound 5 rows per person, ε = {EPSILON}; median of {reps} DP queries after one warm-up; executors on this machine ({} CPUs), one task slot per CPU each",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<36} {:>9} {:>14} {:>14} {:>10} {:>10}",
            "workload", "local ms", "1 executor ms", "2 executors ms", "1 ex/local", "2 ex/1 ex"
        );
        for r in table {
            println!(
                "{:<36} {:>9.0} {:>14.0} {:>14.0} {:>9.2}x {:>9.2}x",
                r.name,
                ms(r.local),
                ms(r.one_executor),
                ms(r.two_executors),
                r.one_executor.as_secs_f64() / r.local.as_secs_f64(),
                r.two_executors.as_secs_f64() / r.one_executor.as_secs_f64()
            );
        }
    }
}

/// Without the feature: says how to build it.
#[cfg(not(feature = "scale-out"))]
pub fn scale(_rows: usize, _reps: usize, _dir: &Path) -> Result<()> {
    anyhow::bail!("{}", sluice_broker::cluster::NOT_BUILT)
}

fn dp(sandbox: &Sandbox, asker: &Asker, sql: &str) -> Result<()> {
    sandbox
        .block_on(sandbox.engine().query(asker, sql, EPSILON))
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
}

/// Resets the process's peak resident set to its current one (Linux: `clear_refs` 5), so that
/// the next [`peak_rss_kib`] is the peak since now; elsewhere it stays the process's peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set (`VmHWM`), where `/proc` tells it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn policy(abs: &Path) -> String {
    let districts: Vec<String> = sluice_datagen::RESIDENT_DISTRICTS
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect();
    format!(
        r#"
[dataset.residents]
source = "{}"
holder = "bench"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
columns.district = {{ kind = "category", public_values = [{}] }}
columns.age = {{ kind = "int", bounds = [0, 100] }}
columns.income = {{ kind = "float", bounds = [0.0, 200000.0] }}

[[grant]]
operator = "canal-analytics"
datasets = ["residents"]
purpose = "benchmark"
aggregations = ["count", "sum", "mean", "quantile"]
epsilon_per_job = 100.0
epsilon_per_period = 100.0
period = "1d"
expires = 2099-12-31
review = "none"
"#,
        abs.display(),
        districts.join(", ")
    )
}
