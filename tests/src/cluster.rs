//! Scale-out on a real Ballista cluster: a scheduler and two executors, each its own process
//! (this test binary, started again as `cluster::cluster_child`), on loopback. A broker in this
//! process runs the queries of datasets scanned from their files there; the answers must agree
//! with the broker's own engine within their stated accuracy, and the ledger and audit log must
//! be as for a local query, naming the engine that answered. Faults: a scheduler that is down
//! at start, an executor killed in the middle of a query.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_broker::config::{ClusterConfig, WhenUnavailable};

use crate::{TestBroker, http, temp_dir};

/// A cluster member, run only when the parent starts this test binary with
/// `SLUICE_CLUSTER_ROLE` set; otherwise it returns at once.
#[test]
#[ignore = "a scheduler or executor process; run as their child process by the cluster tests"]
fn cluster_child() {
    let Ok(role) = std::env::var("SLUICE_CLUSTER_ROLE") else {
        return;
    };
    let port = |name: &str| -> u16 {
        std::env::var(name)
            .expect("a port")
            .parse()
            .expect("a port number")
    };
    if role == "wrong-executor" {
        return wrong_executor(
            port("SLUICE_CLUSTER_SCHEDULER"),
            port("SLUICE_CLUSTER_PORT"),
            port("SLUICE_CLUSTER_GRPC_PORT"),
        );
    }
    let result = match role.as_str() {
        "scheduler" => sluice_broker::cluster::scheduler(sluice_broker::cluster::SchedulerArgs {
            bind: format!("127.0.0.1:{}", port("SLUICE_CLUSTER_PORT"))
                .parse()
                .unwrap(),
            external_host: None,
            executor_timeout_secs: 6,
        }),
        _ => sluice_broker::cluster::executor(sluice_broker::cluster::ExecutorArgs {
            scheduler: format!("df://127.0.0.1:{}", port("SLUICE_CLUSTER_SCHEDULER")),
            bind_host: "127.0.0.1".into(),
            external_host: None,
            flight_port: port("SLUICE_CLUSTER_PORT"),
            grpc_port: port("SLUICE_CLUSTER_GRPC_PORT"),
            vcores: 2,
            work_dir: std::env::var("SLUICE_CLUSTER_WORK").ok(),
            heartbeat_secs: 1,
        }),
    };
    result.expect("the cluster member runs");
}

/// `sluice_fixed` as a misbuilt executor has it: floats where the plan's function gives integers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WrongFixed(datafusion::logical_expr::Signature);

impl datafusion::logical_expr::ScalarUDFImpl for WrongFixed {
    fn name(&self) -> &str {
        "sluice_fixed"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.0
    }
    fn return_type(
        &self,
        _: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::common::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Float64)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
        let zeros = datafusion::arrow::array::Float64Array::from(vec![0.0; args.number_rows]);
        Ok(datafusion::logical_expr::ColumnarValue::Array(
            std::sync::Arc::new(zeros),
        ))
    }
}

/// A Ballista executor with Sluice's codecs and functions, but `sluice_fixed` replaced by
/// [`WrongFixed`].
fn wrong_executor(scheduler: u16, flight: u16, grpc: u16) {
    use ballista_core::extension::SessionConfigExt;
    use std::sync::Arc;
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    for udf in sluice_runtime::remote::execution_udfs() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), udf);
    }
    registry.scalar_functions.insert(
        "sluice_fixed".into(),
        Arc::new(datafusion::logical_expr::ScalarUDF::new_from_impl(
            WrongFixed(datafusion::logical_expr::Signature::any(
                6,
                datafusion::logical_expr::Volatility::Immutable,
            )),
        )),
    );
    let config = || {
        datafusion::prelude::SessionConfig::new_with_ballista()
            .with_ballista_logical_extension_codec(Arc::new(
                sluice_scale::codec::LogicalCodec::default(),
            ))
            .with_ballista_physical_extension_codec(Arc::new(
                sluice_scale::codec::PhysicalCodec::default(),
            ))
    };
    let process = ballista_executor::executor_process::ExecutorProcessConfig {
        port: flight,
        grpc_port: grpc,
        scheduler_port: scheduler,
        scheduler_host: "127.0.0.1".into(),
        external_host: Some("127.0.0.1".into()),
        vcores: 2,
        executor_heartbeat_interval_seconds: 1,
        override_function_registry: Some(Arc::new(registry)),
        override_config_producer: Some(Arc::new(config)),
        override_logical_codec: Some(Arc::new(sluice_scale::codec::LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(sluice_scale::codec::PhysicalCodec::default())),
        ..Default::default()
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ballista_executor::executor_process::start_executor_process(
            Arc::new(process),
        ))
        .expect("the executor runs");
}

/// A free loopback port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A process of the cluster, killed when dropped.
struct Member {
    child: Child,
    log: PathBuf,
}

impl Member {
    fn start(dir: &Path, name: &str, env: &[(&str, String)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "cluster::cluster_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("start a cluster member"),
            log,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `port` accepts connections, or panics with the member's log.
fn wait_for(port: u16, member: &Member) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing listens on {port}:\n{}",
            member.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scheduler and `executors` executors.
struct Cluster {
    scheduler_port: u16,
    scheduler: Member,
    executors: Vec<Member>,
}

impl Cluster {
    fn start(name: &str, executors: usize) -> Self {
        Self::with(name, &vec!["executor"; executors])
    }

    /// A scheduler and one executor per role (`executor`, or `wrong-executor`).
    fn with(name: &str, roles: &[&str]) -> Self {
        let dir = temp_dir(name);
        let scheduler_port = free_port();
        let scheduler = Member::start(
            &dir,
            "scheduler",
            &[
                ("SLUICE_CLUSTER_ROLE", "scheduler".into()),
                ("SLUICE_CLUSTER_PORT", scheduler_port.to_string()),
            ],
        );
        wait_for(scheduler_port, &scheduler);
        let executors = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let (flight, grpc) = (free_port(), free_port());
                let work = dir.join(format!("work-{i}"));
                std::fs::create_dir_all(&work).unwrap();
                let member = Member::start(
                    &dir,
                    &format!("executor-{i}"),
                    &[
                        ("SLUICE_CLUSTER_ROLE", role.to_string()),
                        ("SLUICE_CLUSTER_SCHEDULER", scheduler_port.to_string()),
                        ("SLUICE_CLUSTER_PORT", flight.to_string()),
                        ("SLUICE_CLUSTER_GRPC_PORT", grpc.to_string()),
                        ("SLUICE_CLUSTER_WORK", work.display().to_string()),
                    ],
                );
                wait_for(flight, &member);
                member
            })
            .collect();
        // Executors register with their first heartbeat.
        std::thread::sleep(Duration::from_secs(2));
        Self {
            scheduler_port,
            scheduler,
            executors,
        }
    }

    fn address(&self) -> String {
        format!("df://127.0.0.1:{}", self.scheduler_port)
    }

    /// A broker's configuration for it, refusing to start without it.
    fn config(&self) -> ClusterConfig {
        ClusterConfig {
            scheduler: self.address(),
            when_unavailable: WhenUnavailable::Refuse,
            connect_timeout_secs: 5,
        }
    }

    fn logs(&self) -> String {
        let mut out = format!("scheduler:\n{}", self.scheduler.log());
        for (i, e) in self.executors.iter().enumerate() {
            out += &format!("\nexecutor {i}:\n{}", e.log());
        }
        out
    }
}

/// The test policy with ad-hoc SQL for the analyst, and a dataset whose diagnosis groups are
/// released by partition selection.
///
/// People in `health_visits` have 1–7 visits, so at its bound of 5 about two in seven are heavy
/// and go through the random choice (on the cluster: `sluice_heavy` with its set shipped in the
/// plan). A person keeps one district and one age, so COUNT by district and AVG(age) do not
/// depend on which visits are kept, and SUM(cost) only within its (wide) stated accuracy;
/// counts by diagnosis group would, so `health_codes` bounds at 7, where no one is heavy and the
/// two engines' answers differ by their noise alone.
fn policy(t: String) -> String {
    // A public lookup (held in the broker's memory): queries joining it run in the broker.
    let lookup = temp_dir("cluster-lookup").join("district_region.csv");
    let mut csv = String::from("district,region\n");
    for (d, r) in [
        ("Guangling", "urban"),
        ("Hanjiang", "urban"),
        ("Development Zone", "urban"),
        ("Shugang-Slender West Lake", "urban"),
        ("Ecological New City", "urban"),
        ("Jiangdu", "county"),
        ("Yizheng", "county"),
        ("Gaoyou", "county"),
        ("Baoying", "county"),
    ] {
        csv += &format!("{d},{r}\n");
    }
    std::fs::write(&lookup, csv).expect("write the lookup");
    let lookup = format!(
        "\n[lookup.district_region]\nsource = \"{}\"\nkey = \"district\"\n",
        lookup.display()
    );
    lookup
        + &t.replacen(
            "operator = \"analyst\"\n",
            "operator = \"analyst\"\nadhoc_sql = true\n",
            1,
        )
        + r#"
[dataset.health_codes]
source = "data/health_visits.parquet"
holder = "city-health-commission"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 7
columns.diagnosis_group = { kind = "category", partition_selection = true }
columns.age = { kind = "int", bounds = [0, 100] }

[dataset.health_here]
source = "data/health_visits.parquet"
holder = "city-health-commission"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
cluster = false
columns.district = { kind = "category", public_values = ["Guangling", "Hanjiang"] }

[[grant]]
operator = "analyst"
datasets = ["health_codes", "health_here"]
purpose = "tests: partition selection"
aggregations = ["count", "quantile"]
epsilon_per_job = 50.0
epsilon_per_period = 100.0
period = "30d"
expires = 2099-12-31
review = "none"
adhoc_sql = true
delta_per_query = 1e-6
delta_per_period = 1e-3
"#
}

/// A broker scanning every dataset from its file, on `cluster` when given.
fn broker(name: &str, cluster: Option<ClusterConfig>) -> TestBroker {
    TestBroker::start_with(name, policy, |mut c| {
        c.hold_in_memory_mib = 0;
        c.cluster = cluster;
        c
    })
}

/// COUNT, SUM, AVG, a quantile and a partition selection, then COUNT and MEDIAN read from one
/// bounded relation: with heavy units (it is computed on the cluster and read back) and without
/// (each release's plan runs on the cluster).
const QUERIES: [&str; 7] = [
    "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district",
    "SELECT district, SUM(cost) AS total FROM health_visits GROUP BY district",
    "SELECT AVG(age) AS mean_age FROM health_visits",
    "SELECT MEDIAN(age) AS median_age FROM health_visits",
    "SELECT diagnosis_group, COUNT(*) AS n FROM health_codes GROUP BY diagnosis_group",
    "SELECT district, COUNT(*) AS n, MEDIAN(age) AS median_age FROM health_visits GROUP BY district",
    "SELECT COUNT(*) AS n, MEDIAN(age) AS median_age FROM health_codes",
];

/// Submits `sql` as an ad-hoc query at `epsilon`; the job's id.
fn submit(b: &TestBroker, sql: &str, epsilon: f64) -> String {
    let (status, v) = http(
        b.url(),
        "POST",
        "/v1/query",
        Some(&b.analyst),
        Some("application/json"),
        json!({"purpose": "tests: scale-out", "sql": sql, "epsilon": epsilon})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Runs `sql` as an ad-hoc query at `epsilon`; the job's id and its final state.
fn ask(b: &TestBroker, sql: &str, epsilon: f64) -> (String, Value) {
    let id = submit(b, sql, epsilon);
    b.client(&b.analyst).follow(&id, |_, _| {}).unwrap();
    let (_, job) = get(b.url(), &b.analyst, &format!("/v1/jobs/{id}"));
    (id, job)
}

/// `GET path` at `url` with `token`.
fn get(url: &str, token: &str, path: &str) -> (u16, Value) {
    http(url, "GET", path, Some(token), None, b"")
}

/// The answer table of job `id`: per value cell, its row's key (the first cell, or "" without
/// keys) and column, its value and its 95% half-width where the answer states one.
fn answer(b: &TestBroker, id: &str) -> Vec<(String, f64, Option<f64>)> {
    let (status, report) = get(b.url(), &b.analyst, &format!("/v1/jobs/{id}/result"));
    assert_eq!(status, 200, "{report}");
    let table = &report["tables"][0]["table"];
    let keys = table["key_columns"].as_u64().unwrap_or(0) as usize;
    let rows = table["rows"].as_array().unwrap();
    let accuracy = table["accuracy"].as_array();
    let mut cells = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let key = if keys > 0 {
            row[0].as_str().unwrap_or_default().to_string()
        } else {
            String::new()
        };
        for c in keys..row.as_array().unwrap().len() {
            let value = row[c].as_f64().unwrap_or(f64::NAN);
            let hw = accuracy.and_then(|a| a[i][c].as_f64());
            cells.push((format!("{key}/{c}"), value, hw));
        }
    }
    cells
}

/// Job `id` released nothing: no report to fetch, no release in the audit log.
fn assert_nothing_released(b: &TestBroker, id: &str) {
    let (status, _) = get(b.url(), &b.analyst, &format!("/v1/jobs/{id}/result"));
    assert_ne!(status, 200);
    assert!(audit(b, id, "job.released").is_empty());
}

/// The audit entries of job `id` of kind `kind`.
fn audit(b: &TestBroker, id: &str, kind: &str) -> Vec<Value> {
    let (_, v) = get(b.url(), &b.reviewer, &format!("/v1/audit?job={id}"));
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[test]
fn queries_on_a_ballista_cluster_agree_with_the_local_engine_and_are_accounted_alike() {
    let cluster = Cluster::start("cluster-agree", 2);
    let remote = broker("cluster-remote", Some(cluster.config()));
    let local = broker("cluster-local", None);
    let engine = format!("ballista http://127.0.0.1:{}", cluster.scheduler_port);
    const EPSILON: f64 = 10.0;
    for sql in QUERIES {
        let (rid, rjob) = ask(&remote, sql, EPSILON);
        assert_eq!(
            rjob["state"],
            "succeeded",
            "{sql}: {rjob}\n{}",
            cluster.logs()
        );
        let (lid, ljob) = ask(&local, sql, EPSILON);
        assert_eq!(ljob["state"], "succeeded", "{sql}: {ljob}");
        // The ledger: the same charge.
        assert_eq!(rjob["spent"], ljob["spent"], "{sql}");
        // The audit log: one query entry each, alike but for the engine.
        let (rq, lq) = (audit(&remote, &rid, "query"), audit(&local, &lid, "query"));
        assert_eq!((rq.len(), lq.len()), (1, 1), "{sql}");
        assert_eq!(rq[0]["detail"]["engine"], engine.as_str(), "{sql}");
        assert_eq!(lq[0]["detail"]["engine"], "local", "{sql}");
        for field in ["sql", "mechanism", "epsilon", "delta", "dataset_sha256"] {
            assert_eq!(
                rq[0]["detail"][field], lq[0]["detail"][field],
                "{sql}: {field}"
            );
        }
        // The receipt names the cluster; a local one names no engine.
        let (_, receipt) = get(
            remote.url(),
            &remote.analyst,
            &format!("/v1/jobs/{rid}/receipt"),
        );
        assert_eq!(receipt["engines"], json!([engine]), "{receipt}");
        let (_, receipt) = get(
            local.url(),
            &local.analyst,
            &format!("/v1/jobs/{lid}/receipt"),
        );
        assert!(receipt.get("engines").is_none(), "{receipt}");
        // The answers: the same keys, and values within their stated accuracy of each other
        // (each half-width is 1.96 σ of its cell's noise; the difference of two independent
        // answers has σ√2, so 2.5 (hw₁ + hw₂) is about 7 σ of it).
        let (r, l) = (answer(&remote, &rid), answer(&local, &lid));
        let keys = |a: &[(String, f64, Option<f64>)]| {
            let mut k: Vec<String> = a.iter().map(|r| r.0.clone()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&r), keys(&l), "{sql}");
        for (key, value, hw) in &r {
            let (_, other, other_hw) = l.iter().find(|x| &x.0 == key).unwrap();
            let tolerance = match (hw, other_hw) {
                (Some(a), Some(b)) => 2.5 * (a + b),
                // A quantile states a rank error; ages are whole years in [0, 100].
                _ => 5.0,
            };
            assert!(
                (value - other).abs() <= tolerance,
                "{sql}: {key}: cluster {value}, local {other}, tolerance {tolerance}"
            );
        }
    }
    // A dataset whose policy says `cluster = false` is read in the broker alone.
    let (id, job) = ask(&remote, "SELECT COUNT(*) AS n FROM health_here", 1.0);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(audit(&remote, &id, "query")[0]["detail"]["engine"], "local");
    // A query joining the public lookup runs in the broker, and says so.
    let (id, job) = ask(
        &remote,
        "SELECT r.region, COUNT(*) AS n FROM health_visits v JOIN district_region r ON v.district = r.district GROUP BY r.region",
        1.0,
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(audit(&remote, &id, "query")[0]["detail"]["engine"], "local");
    let (_, receipt) = get(
        remote.url(),
        &remote.analyst,
        &format!("/v1/jobs/{id}/receipt"),
    );
    assert!(receipt.get("engines").is_none(), "{receipt}");
}

#[test]
fn a_scheduler_that_is_down_at_start_is_refused_or_replaced_by_the_local_engine_as_configured() {
    let down = ClusterConfig {
        scheduler: format!("df://127.0.0.1:{}", free_port()),
        when_unavailable: WhenUnavailable::Refuse,
        connect_timeout_secs: 2,
    };
    let root = temp_dir("cluster-down");
    let policy_dir = crate::write_policy(&root, policy);
    let dir = root.join("state");
    sluice_broker::store::Store::init(&dir).expect("init");
    let mut config = sluice_broker::server::Config::new(policy_dir, crate::data_root().into());
    config.cluster = Some(down.clone());
    let refused = sluice_broker::server::Running::start(
        &dir,
        config.clone(),
        Default::default(),
        "127.0.0.1:0",
    );
    let message = format!("{:#}", refused.err().expect("the broker refuses to start"));
    assert!(
        message.contains("no Ballista scheduler answers at")
            && message.contains("when_unavailable"),
        "{message}"
    );
    // Configured to fall back, it starts, says so in the audit log, and answers locally.
    let b = broker(
        "cluster-fallback",
        Some(ClusterConfig {
            when_unavailable: WhenUnavailable::Local,
            ..down
        }),
    );
    let (_, v) = get(b.url(), &b.reviewer, "/v1/audit");
    let connected: Vec<&Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "cluster.connected")
        .collect();
    assert_eq!(connected.len(), 1, "{v}");
    assert_eq!(connected[0]["detail"]["engine"], "local");
    assert!(
        connected[0]["detail"]["cluster_unavailable"]
            .as_str()
            .unwrap()
            .contains("no Ballista scheduler answers"),
        "{}",
        connected[0]
    );
    let (id, job) = ask(&b, QUERIES[0], 1.0);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(audit(&b, &id, "query")[0]["detail"]["engine"], "local");
}

#[test]
fn an_executor_killed_mid_query_fails_the_query_after_one_charge_or_is_retried() {
    // Rows enough that the query is still running on the cluster when the executor dies.
    let data = temp_dir("cluster-kill-data").join("residents.parquet");
    sluice_datagen::residents(&data, 3_000_000, 7).expect("generate residents");
    let districts: Vec<String> = sluice_datagen::RESIDENT_DISTRICTS
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect();
    let residents = format!(
        r#"
[dataset.residents]
source = "{}"
holder = "tests"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 3
columns.district = {{ kind = "category", public_values = [{}] }}
columns.income = {{ kind = "float", bounds = [0.0, 200000.0] }}

[[grant]]
operator = "analyst"
datasets = ["residents"]
purpose = "tests: a fault"
aggregations = ["sum"]
epsilon_per_job = 5.0
epsilon_per_period = 100.0
period = "30d"
expires = 2099-12-31
review = "none"
adhoc_sql = true
"#,
        data.display(),
        districts.join(", ")
    );
    let mut cluster = Cluster::start("cluster-kill", 2);
    let b = TestBroker::start_with(
        "cluster-kill-broker",
        |t| policy(t) + &residents,
        |mut c| {
            c.hold_in_memory_mib = 0;
            c.cluster = Some(cluster.config());
            c
        },
    );
    // Stages: the scan, the random choice of at most 3 rows per person (heavy persons only),
    // the sums by district.
    let sql = "SELECT district, SUM(income) AS total FROM residents GROUP BY district";
    let id = submit(&b, sql, 1.0);
    // Kill one executor as soon as the query is charged (its audit entry is written before it
    // executes).
    let started = Instant::now();
    while audit(&b, &id, "query").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "never charged");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.executors[0].kill();
    b.client(&b.analyst).follow(&id, |_, _| {}).unwrap();
    let (_, job) = get(b.url(), &b.analyst, &format!("/v1/jobs/{id}"));
    eprintln!(
        "after the kill the query ended {} in {:?}",
        job["state"],
        started.elapsed()
    );
    // Exactly one charge either way.
    assert_eq!(audit(&b, &id, "query").len(), 1, "{job}");
    assert_eq!(job["spent"][0]["epsilon"], 1.0, "{job}");
    match job["state"].as_str() {
        // Ballista ran the lost tasks on the other executor.
        Some("succeeded") => assert_eq!(answer(&b, &id).len(), 12, "{job}"),
        // Or the query failed as an execution failure, and nothing was released.
        Some("failed") => {
            let text = job.to_string();
            assert!(
                text.contains("execution_failed")
                    || text.contains("ExecutionFailed")
                    || text.contains("execution failed"),
                "{job}"
            );
            assert_nothing_released(&b, &id);
        }
        other => panic!("{other:?}: {job}\n{}", cluster.logs()),
    }
}

#[test]
fn an_executor_whose_functions_do_not_match_the_plan_is_refused_after_one_charge() {
    let cluster = Cluster::with("cluster-wrong", &["wrong-executor"]);
    let b = broker("cluster-wrong-broker", Some(cluster.config()));
    // SUM(cost) encodes each cost with `sluice_fixed`, which this executor gets wrong.
    let (id, job) = ask(&b, QUERIES[1], 1.0);
    assert_eq!(job["state"], "failed", "{job}\n{}", cluster.logs());
    assert!(job.to_string().contains("execution failed"), "{job}");
    assert_eq!(audit(&b, &id, "query").len(), 1, "{job}");
    assert_eq!(job["spent"][0]["epsilon"], 1.0, "{job}");
    assert_nothing_released(&b, &id);
}

#[test]
fn a_query_while_the_scheduler_is_down_is_refused_before_its_charge() {
    let mut cluster = Cluster::start("cluster-gone", 1);
    let b = broker("cluster-gone-broker", Some(cluster.config()));
    let (_, job) = ask(&b, QUERIES[0], 1.0);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", cluster.logs());
    cluster.scheduler.kill();
    // Another query (the same one would be answered from the answer cache).
    let (id, job) = ask(&b, QUERIES[1], 1.0);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job.to_string().contains("execution failed"), "{job}");
    // Nothing was charged: no query entry, nothing spent.
    assert!(audit(&b, &id, "query").is_empty(), "{job}");
    let spent = job["spent"].as_array().map_or(0.0, |s| {
        s.iter().map(|x| x["epsilon"].as_f64().unwrap_or(0.0)).sum()
    });
    assert_eq!(spent, 0.0, "{job}");
}
