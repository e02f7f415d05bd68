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
        "COUNT(DISTINCT person_id) by district",
        "SELECT district, COUNT(DISTINCT person_id) AS p FROM health_visits GROUP BY district",
    ),
    (
        "MEDIAN(cost) by district",
        "SELECT district, MEDIAN(cost) AS m FROM health_visits GROUP BY district",
    ),
    (
        "PERCENTILE_CONT(0.9) of age by sex",
        "SELECT sex, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY age) AS p90 FROM health_visits GROUP BY sex",
    ),
    (
        "COUNT+MEDIAN+P90 of cost by district",
        "SELECT district, COUNT(*) AS n, MEDIAN(cost) AS m, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) AS p90 FROM health_visits GROUP BY district",
    ),
    (
        "STDDEV(cost) by district",
        "SELECT district, STDDEV(cost) AS sd FROM health_visits GROUP BY district",
    ),
    (
        "COUNT by district, partition selection",
        "SELECT district, COUNT(*) AS n FROM health_sel GROUP BY district",
    ),
    (
        "COUNT by district, sex WHERE age >= 18",
        "SELECT district, sex, COUNT(*) AS n FROM health_visits WHERE age >= 18 GROUP BY district, sex",
    ),
];

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `sluice bench engine`: each DP query against the same SQL on plain DataFusion (and with a
/// naive bounding window), then a job's first and cached load.
pub fn run(rows: usize, reps: usize, dir: &Path) -> Result<ExitCode> {
    let reps = reps.max(1);
    crate::bench_workloads::run(rows, reps, dir)?;
    let path = dir.join(format!("health_visits_{rows}.parquet"));
    if !path.exists() {
        eprintln!("generating {rows} rows into {} (once)…", path.display());
        let t = Instant::now();
        sluice_datagen::health_visits(&path, rows, sluice_datagen::DEFAULT_SEED)?;
        eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
    }
    let abs = std::fs::canonicalize(&path)?;
    let policy = sluice_policy::parse_str("bench.toml", &bench_policy(&abs))?;
    let started = Instant::now();
    // Repetitions must each be a fresh release, not an answer from the cache.
    let sandbox = Sandbox::new(
        // Scans the file at each query, as the plain engine it is compared with does.
        SandboxConfig::new(policy, "/", Arc::new(InMemoryAccountant::new()))
            .without_answer_cache()
            .with_memory_bytes(0),
    )?;
    println!(
        "sandbox start (register + sha256 of {rows} rows): {:.0} ms",
        ms(started.elapsed())
    );
    let plain = SessionContext::new();
    for name in ["health_visits", "health_sel"] {
        sandbox.block_on(plain.register_parquet(
            name,
            abs.to_str().context("utf-8 path")?,
            ParquetReadOptions::default(),
        ))?;
    }
    let asker = asker()?;
    println!("\n{rows} rows, median of {reps} runs; ε = 0.5 per DP query");
    println!(
        "{:<40} {:>10} {:>14} {:>10} {:>7}",
        "query", "plain ms", "naive bound ms", "DP ms", "ratio"
    );
    for (name, sql) in CASES {
        query_row(&sandbox, &plain, &asker, reps, name, sql)?;
    }
    job_load(&sandbox, &asker, rows)?;
    Ok(ExitCode::SUCCESS)
}

/// Who asks the benchmark's queries: the operator its policies grant, for job `bench`.
pub(crate) fn asker() -> Result<Asker> {
    let operator = "canal-analytics"
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    Ok(Asker::new(operator, "bench"))
}

/// The benchmark's policy over the Parquet file at `abs`.
fn bench_policy(abs: &Path) -> String {
    format!(
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

# The same file with districts released by DP partition selection instead of a public domain.
[dataset.health_sel]
source = "{}"
holder = "bench"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
columns.district = {{ kind = "category", partition_selection = true }}

[[grant]]
operator = "canal-analytics"
datasets = ["health_visits", "health_sel"]
purpose = "benchmark"
aggregations = ["count", "sum", "mean", "quantile", "variance"]
epsilon_per_job = 100.0
epsilon_per_period = 100.0
period = "1d"
expires = 2099-12-31
review = "none"
delta_per_query = 1e-7
delta_per_period = 1e-3
"#,
        abs.display(),
        abs.display()
    )
}

/// One line of the engine table: the plain query, the naively bounded one and the DP one.
fn query_row(
    sandbox: &Sandbox,
    plain: &SessionContext,
    asker: &Asker,
    reps: usize,
    name: &str,
    sql: &str,
) -> Result<()> {
    // The same SQL with a naive contribution-bounding window over every row (no random order, no
    // noise): what bounding costs when every row goes through the sort. The engine sends only
    // the rows of units above the bound through its window.
    let bounded = |sql: &str| {
        sql.replace(
            "FROM health_visits",
            "FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY person_id) AS rn FROM health_visits) WHERE rn <= 5)",
        )
        .replace(
            "FROM health_sel",
            "FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY person_id) AS rn FROM health_sel) WHERE rn <= 5)",
        )
    };
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
            .block_on(sandbox.engine().query(asker, sql, 0.5))
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
    Ok(())
}

/// A job component's first load (componentize + compile) against a cached one, then the sample
/// job's run.
fn job_load(sandbox: &Sandbox, asker: &Asker, rows: usize) -> Result<()> {
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
    Ok(())
}

/// Runs the benchmark `which` names.
pub fn dispatch(
    which: Which,
    rows: usize,
    reps: usize,
    dir: &Path,
    jobs: usize,
) -> Result<ExitCode> {
    match which {
        Which::Engine => run(rows, reps, dir),
        Which::Broker => broker(jobs),
        Which::Python => python(reps),
        Which::Console => crate::bench_console::console(),
        Which::Rows => crate::bench_rows::run(rows, reps, dir).map(|()| ExitCode::SUCCESS),
        Which::Scale => crate::bench_workloads::scale(rows, reps, dir).map(|()| ExitCode::SUCCESS),
    }
}

/// Which benchmark `sluice bench` runs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    /// DP queries against plain DataFusion on `--rows` rows; job compile vs cached.
    Engine,
    /// Submit → result over HTTP on loopback, against the same job run in-process.
    Broker,
    /// A Python job's first compile, its load from disk after a restart and its instantiation,
    /// against the Rust sample's in the same run.
    Python,
    /// Console page loads from a broker holding 1,100 jobs and 10,000 audit entries, against a
    /// `/healthz` round trip.
    Console,
    /// A job's row function in SUM by district against the same query on a plain column, on
    /// `--rows` rows, and one unit's instance.
    Rows,
    /// W1–W4 in the broker's engine against a Ballista cluster of one and of two executors on
    /// this machine (scale-out builds only).
    Scale,
}

/// One job's load figures.
struct LoadFigures {
    bytes: usize,
    compile: Duration,
    disk_load: Duration,
    instantiate: Duration,
}

/// `sluice bench python`: for the Rust sample (the baseline) and the Python sample, the first
/// compile into an empty compiled-job directory, then `runs` times a fresh sandbox (a broker
/// restart) loading it from that directory, and instantiation; medians, and the Python/Rust
/// ratios.
pub fn python(runs: usize) -> Result<ExitCode> {
    let runs = runs.max(3);
    let world = BrokerWorld::new(100_000)?;
    let py_path =
        sluice_broker::build::build(&local::workspace_root().join("samples/python-visits"))?;
    let python = std::fs::read(py_path)?;
    let jobs: [(&str, &[u8], &str); 2] = [
        (
            "rust sample (visits-by-district)",
            &world.wasm,
            "epsilon=0.1",
        ),
        ("python sample (python-visits)", &python, "min_age=40"),
    ];
    let mut figures = Vec::new();
    for (i, (_, wasm, params)) in jobs.iter().enumerate() {
        figures.push(world.load_figures(&format!("compiled-{i}"), wasm, params, runs)?);
    }
    println!(
        "
job load on 2 cores, median of {runs} restarts"
    );
    println!(
        "{:<36} {:>9} {:>14} {:>16} {:>15}",
        "job", "size KiB", "compile ms", "disk load ms", "instantiate ms"
    );
    for ((name, _, _), f) in jobs.iter().zip(&figures) {
        println!(
            "{name:<36} {:>9} {:>14.1} {:>16.1} {:>15.2}",
            f.bytes / 1024,
            ms(f.compile),
            ms(f.disk_load),
            ms(f.instantiate)
        );
    }
    let (rust, py) = (&figures[0], &figures[1]);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "python/rust: compile {:.1}x, disk load {:.1}x, instantiate {:.1}x",
        ratio(py.compile, rust.compile),
        ratio(py.disk_load, rust.disk_load),
        ratio(py.instantiate, rust.instantiate)
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "bars: python disk load <= 50 ms: {} ({:.1} ms); python instantiate <= 10 ms: {} ({:.2} ms)",
        verdict(py.disk_load <= Duration::from_millis(50)),
        ms(py.disk_load),
        verdict(py.instantiate <= Duration::from_millis(10)),
        ms(py.instantiate)
    );
    let _ = std::fs::remove_dir_all(&world.work);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `sluice bench broker`: submit→result latency (p50/p99) and jobs/s over HTTP, against the
/// same job run directly in a sandbox (no HTTP, no database) in the same run.
pub fn broker(jobs: usize) -> Result<ExitCode> {
    let jobs = jobs.max(10);
    let world = BrokerWorld::new(10_000)?;
    let base = world.baseline(jobs)?;
    let (seq, wall, concurrency, split) = world.over_http(jobs)?;
    print_broker_table(&world, jobs, base, seq, wall, concurrency);
    println!(
        "concurrent jobs in the broker (medians): {} ms queued, {} ms from claim to end",
        split.queued_ms, split.running_ms
    );
    let _ = std::fs::remove_dir_all(&world.work);
    Ok(ExitCode::SUCCESS)
}

/// The broker benchmark's data, policy and job.
pub(crate) struct BrokerWorld {
    pub(crate) work: std::path::PathBuf,
    rows: usize,
    pub(crate) wasm: Vec<u8>,
}

impl BrokerWorld {
    pub(crate) fn new(rows: usize) -> Result<Self> {
        let work = std::env::temp_dir().join(format!("sluice-bench-broker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("policy"))?;
        let data = work.join("health_visits.parquet");
        sluice_datagen::health_visits(&data, rows, sluice_datagen::DEFAULT_SEED)?;
        // The example policy with this dataset and the largest period budget a policy allows
        // (ε 100: 5,000 jobs of ε 0.02).
        let policy =
            std::fs::read_to_string(local::workspace_root().join("policies/examples/health.toml"))?
                .replace("data/health_visits.parquet", &data.display().to_string())
                .replace("epsilon_per_period = 10.0", "epsilon_per_period = 100.0");
        std::fs::write(work.join("policy/health.toml"), policy)?;
        let wasm = std::fs::read(&local::build_samples()?[0])?;
        Ok(Self { work, rows, wasm })
    }

    /// A sandbox over the world's data keeping compiled jobs in `compiled` (under the work
    /// directory).
    fn sandbox(&self, compiled: &str) -> Result<Sandbox> {
        Ok(Sandbox::new(
            SandboxConfig::new(
                sluice_policy::load(&self.work.join("policy"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                &self.work,
                Arc::new(InMemoryAccountant::new()),
            )
            .with_compiled_dir(self.work.join(compiled)),
        )?)
    }

    /// `wasm`'s first compile into the empty directory `compiled`, then `runs` fresh sandboxes
    /// loading it from there and instantiating it (medians).
    fn load_figures(
        &self,
        compiled: &str,
        wasm: &[u8],
        params: &str,
        runs: usize,
    ) -> Result<LoadFigures> {
        let op: sluice_policy::OperatorId = "canal-analytics"
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let first = self.sandbox(compiled)?;
        let t = Instant::now();
        first.precompile(wasm)?;
        let compile = t.elapsed();
        drop(first);
        let (mut loads, mut instantiations) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let restarted = self.sandbox(compiled)?;
            let t = Instant::now();
            let cached = restarted.precompile(wasm)?;
            loads.push(t.elapsed());
            if !cached {
                anyhow::bail!("the compiled job was not loaded from disk after a restart");
            }
            let out = restarted
                .run_job(&JobRequest::new(
                    op.clone(),
                    format!("load-{i}"),
                    wasm,
                    params,
                ))
                .map_err(|f| anyhow::anyhow!("the job failed: {}", f.error))?;
            instantiations.push(out.instantiate_time);
        }
        Ok(LoadFigures {
            bytes: wasm.len(),
            compile,
            disk_load: median(loads),
            instantiate: median(instantiations),
        })
    }

    /// A distinct ε per job, so that no job is answered from the identical-query cache.
    pub(crate) fn params(i: usize) -> String {
        format!("epsilon=0.01{i:05}")
    }

    /// The same job in-process: cached component, in-memory accountant.
    fn baseline(&self, jobs: usize) -> Result<Vec<Duration>> {
        let sandbox = Sandbox::new(SandboxConfig::new(
            sluice_policy::load(&self.work.join("policy")).map_err(|e| anyhow::anyhow!("{e}"))?,
            &self.work,
            Arc::new(InMemoryAccountant::new()),
        ))?;
        let op: sluice_policy::OperatorId = "canal-analytics"
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        sandbox.precompile(&self.wasm)?;
        let mut base = Vec::new();
        for i in 0..jobs {
            let t = Instant::now();
            sandbox
                .run_job(&JobRequest::new(
                    op.clone(),
                    format!("b{i}"),
                    &self.wasm,
                    &Self::params(i),
                ))
                .map_err(|f| anyhow::anyhow!("baseline job failed: {}", f.error))?;
            base.push(t.elapsed());
        }
        Ok(base)
    }

    /// Submit → follow → result over loopback HTTP: `jobs` one after another, then `jobs` from
    /// concurrent clients. Returns the sequential latencies, the concurrent wall time and the
    /// number of clients.
    fn over_http(&self, jobs: usize) -> Result<(Vec<Duration>, Duration, usize, PhaseSplit)> {
        use sluice_broker::client::{Client, Submission};
        use sluice_broker::server::{Config, Running};
        use sluice_broker::store::{Role, Store};
        let dir = self.work.join("broker");
        let store = Store::init(&dir)?;
        let token = store.create_token(Role::Operator, "canal-analytics", "bench")?;
        drop(store);
        let mut config = Config::new(self.work.join("policy"), self.work.clone());
        config.max_queued = jobs as i64 + 8;
        let running = Running::start(&dir, config, Default::default(), "127.0.0.1:0")?;
        let client = Client::new(&running.url, &token);
        let datasets = vec!["health_visits".to_string()];
        let counter = std::sync::atomic::AtomicUsize::new(jobs);
        let one = |c: &Client| -> Result<Duration> {
            let p = Self::params(counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
            let t = Instant::now();
            let r = c.submit(&Submission {
                wasm: &self.wasm,
                purpose: "benchmark",
                params: &p,
                datasets: &datasets,
                max_epsilon: None,
                scenario: None,
            })?;
            let id = r["id"].as_str().context("no id")?.to_string();
            c.follow(&id, |_, _| {})?;
            c.get_text(&format!("/v1/jobs/{id}/result"))?;
            Ok(t.elapsed())
        };
        one(&client)?; // warm: the component is compiled once, then cached
        let seq = (0..jobs)
            .map(|_| one(&client))
            .collect::<Result<Vec<_>>>()?;
        let concurrency = 8;
        let t = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..concurrency)
                .map(|_| {
                    let c = client.clone();
                    let one = &one;
                    s.spawn(move || -> Result<()> {
                        for _ in 0..jobs / concurrency {
                            one(&c)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))??;
            }
            Ok(())
        })?;
        let wall = t.elapsed();
        running.stop()?;
        let split = PhaseSplit::read(&dir, jobs + 1)?;
        Ok((seq, wall, concurrency, split))
    }
}

/// Where the concurrent phase's jobs spent their time in the broker, from their records:
/// waiting in the queue (submitted → claimed) and running (claimed → ended), medians in ms.
struct PhaseSplit {
    queued_ms: i64,
    running_ms: i64,
}

impl PhaseSplit {
    /// The split of the jobs after the first `before` (the warm-up and sequential ones).
    fn read(dir: &Path, before: usize) -> Result<Self> {
        let conn = sluice_broker::store::Store::open_conn_readonly(dir)?;
        let mut stmt = conn.prepare(
            "SELECT started_ms - created_ms, finished_ms - started_ms FROM jobs
             WHERE n > ?1 AND finished_ms IS NOT NULL",
        )?;
        let (mut queued, mut running): (Vec<i64>, Vec<i64>) = stmt
            .query_map([before as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?
            .into_iter()
            .unzip();
        let median = |v: &mut Vec<i64>| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        Ok(Self {
            queued_ms: median(&mut queued),
            running_ms: median(&mut running),
        })
    }
}

fn print_broker_table(
    world: &BrokerWorld,
    jobs: usize,
    mut base: Vec<Duration>,
    mut seq: Vec<Duration>,
    wall: Duration,
    concurrency: usize,
) {
    base.sort();
    seq.sort();
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    let (s50, s99) = (percentile(&seq, 0.5), percentile(&seq, 0.99));
    println!(
        "\nbroker load benchmark: visits-by-district (ε ≈ 0.01 per query, 2 DP queries, none cached) on {} rows, {jobs} jobs, loopback HTTP",
        world.rows
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "", "p50 ms", "p99 ms", "jobs/s"
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>10.1}",
        "in-process sandbox (baseline, sequential)",
        ms(b50),
        ms(b99),
        jobs as f64 / base.iter().sum::<Duration>().as_secs_f64()
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>10.1}",
        "broker submit→result, sequential",
        ms(s50),
        ms(s99),
        jobs as f64 / seq.iter().sum::<Duration>().as_secs_f64()
    );
    let done = (jobs / concurrency) * concurrency;
    println!(
        "{:<44} {:>10} {:>10} {:>10.1}",
        format!("broker, {concurrency} concurrent clients, 2 workers"),
        "-",
        "-",
        done as f64 / wall.as_secs_f64()
    );
    println!(
        "ratio broker/baseline: p50 {:.1}x, p99 {:.1}x",
        s50.as_secs_f64() / b50.as_secs_f64(),
        s99.as_secs_f64() / b99.as_secs_f64()
    );
}
