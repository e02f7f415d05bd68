//! Python jobs: the sample through `sluice run`'s path and through the broker over HTTP, and the
//! hostile Python job contained attack by attack. The components are built with `sluice build`'s
//! own code (componentize-py in the virtual environment it installs on first use), once per test
//! process; their compiled form is kept in one directory for every run on this machine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sluice_runtime::{
    InMemoryAccountant, JobError, JobOutput, JobRequest, Limits, Sandbox, SandboxConfig,
};

use crate::{TestBroker, data_root, http, manifest_dir, op, policy};

/// Builds the job whose `job.py` is in `src` (copied to a fresh folder, so the source tree
/// stays clean); one build at a time (the first one may install componentize-py).
fn build(src: &Path, name: &str) -> Vec<u8> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("sluice-py-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("job.py"), dir.join("job.py")).unwrap();
    let wasm = sluice_broker::build::build(&dir)
        .unwrap_or_else(|e| panic!("building the Python job {name}: {e:#}"));
    std::fs::read(wasm).unwrap()
}

fn sample() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| build(&manifest_dir().join("../samples/python-visits"), "sample"))
}

fn hostile() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| build(&manifest_dir().join("guests/hostile-py"), "hostile"))
}

/// Where every test keeps compiled Python components (keyed by content and engine). Python
/// builds are not byte-for-byte reproducible, so each run of the tests compiles new ones (about
/// 40 MB each): the first use in a process removes those older than a day, which no run still
/// going can be using.
fn compiled_dir() -> PathBuf {
    static PRUNED: OnceLock<PathBuf> = OnceLock::new();
    PRUNED
        .get_or_init(|| {
            let dir = std::env::temp_dir().join("sluice-test-compiled");
            let day = std::time::Duration::from_secs(86_400);
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > day);
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            dir
        })
        .clone()
}

fn sandbox_with(limits: Limits) -> (Sandbox, Arc<InMemoryAccountant>) {
    let accountant = Arc::new(InMemoryAccountant::new());
    let config = SandboxConfig::new(policy(), data_root(), accountant.clone())
        .with_limits(limits)
        .with_compiled_dir(compiled_dir());
    (Sandbox::new(config).expect("sandbox starts"), accountant)
}

fn run(wasm: &[u8], params: &str) -> Result<JobOutput, JobError> {
    let (s, _) = sandbox_with(Limits::default());
    s.run_job(&JobRequest::new(op("analyst"), "py", wasm, params))
        .map_err(|f| f.error)
}

/// The report's text of a hostile run that must succeed.
fn text_of(params: &str) -> String {
    let out = run(hostile(), params).unwrap_or_else(|e| panic!("{params}: {e}"));
    out.report.text
}

#[test]
fn the_python_sample_answers_with_dp_tables_and_charges_its_query() {
    let (s, accountant) = sandbox_with(Limits::default());
    let out = s
        .run_job(&JobRequest::new(
            op("analyst"),
            "py-sample",
            sample(),
            "min_age=65",
        ))
        .expect("the Python sample runs");
    let (name, t) = &out.report.tables[0];
    assert_eq!(name, "by diagnosis group");
    assert_eq!(t.columns, ["diagnosis_group", "visits", "avg_cost"]);
    assert_eq!(t.rows.len(), 8, "every diagnosis group: {:?}", t.rows);
    for (row, acc) in t.rows.iter().zip(&t.accuracy) {
        let mean = row[2].as_f64().unwrap();
        assert!((0.0..=20_000.0).contains(&mean), "{row:?}");
        assert!(acc[1].unwrap() > 0.0 && acc[2].unwrap() > 0.0, "{acc:?}");
    }
    assert!(
        out.report.text.contains("costliest group per visit"),
        "{}",
        out.report.text
    );
    assert_eq!(out.queries.len(), 1);
    assert_eq!(out.queries[0].cost.epsilon, 0.6);
    assert!(
        out.log
            .iter()
            .any(|l| l.message == "asked 1 query for ε=0.6"),
        "{:?}",
        out.log
    );
    let spent = sluice_runtime::Accountant::spent(
        &*accountant,
        &op("analyst"),
        &sluice_policy::DatasetId::new("health_visits").unwrap(),
        "py-sample",
        std::time::Duration::from_secs(3600),
    );
    assert!((spent.job.epsilon - 0.6).abs() < 1e-9, "{spent:?}");
    // Bad parameters fail the job with its own message, before any query.
    let e = run(sample(), "min_age=abc").unwrap_err();
    assert_eq!(
        e,
        JobError::Guest("invalid parameters: `min_age` must be an integer, got `abc`".into())
    );
}

/// The seasons sample, under the example policies on the demo data: its date key released over
/// the months its WHERE range keeps, in calendar order, and its age histogram over the policy's
/// bins. The same data and policy a newcomer gets from `sluice datagen`.
#[test]
fn the_seasons_sample_releases_months_and_age_bins_of_the_demo_data() {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    let wasm =
        WASM.get_or_init(|| build(&manifest_dir().join("../samples/python-seasons"), "seasons"));
    let examples = sluice_policy::load(&manifest_dir().join("../policies/examples")).unwrap();
    let config = SandboxConfig::new(examples, data_root(), Arc::new(InMemoryAccountant::new()))
        .with_compiled_dir(compiled_dir());
    let s = Sandbox::new(config).expect("the example policy opens the demo data");
    let mut req = JobRequest::new(op("canal-analytics"), "seasons", wasm, "year=2025");
    req.datasets = Some(vec!["health_visits".parse().unwrap()]);
    let out = s.run_job(&req).expect("the seasons sample runs");
    let (name, months) = &out.report.tables[0];
    assert_eq!(name, "by month");
    let text = |v: &sluice_runtime::Value| match v {
        sluice_runtime::Value::Text(t) => t.clone(),
        other => panic!("a key is text: {other:?}"),
    };
    let labels: Vec<String> = months.rows.iter().map(|r| text(&r[0])).collect();
    let expected: Vec<String> = (1..=12).map(|m| format!("2025-{m:02}-01")).collect();
    assert_eq!(labels, expected, "only 2025's months, in calendar order");
    let (name, ages) = &out.report.tables[1];
    assert_eq!(name, "by age group");
    let bins: Vec<String> = ages.rows.iter().map(|r| text(&r[0])).collect();
    assert_eq!(bins, ["[0, 18)", "[18, 40)", "[40, 65)", "[65, 100]"]);
    assert_eq!(out.queries.len(), 2);
}

#[test]
fn the_python_sample_runs_through_the_broker_with_a_verified_receipt() {
    let mut b = TestBroker::start("python", |t| t);
    let (status, v) = http(
        b.url(),
        "POST",
        "/v1/jobs",
        Some(&b.analyst),
        Some("application/json"),
        serde_json::json!({
            "purpose": "tests: a Python job",
            "params": "min_age=40",
            "datasets": ["health_visits"],
            "wasm_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sample()),
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    b.client(&b.analyst).follow(&id, |_, _| {}).unwrap();
    let (_, job) = http(
        b.url(),
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&b.analyst),
        None,
        b"",
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let client = b.client(&b.analyst);
    let report = client.get_text(&format!("/v1/jobs/{id}/result")).unwrap();
    let receipt: sluice_broker::keys::Receipt =
        serde_json::from_str(&client.get_text(&format!("/v1/jobs/{id}/receipt")).unwrap()).unwrap();
    let key = sluice_broker::keys::public_key(&b.public_key).unwrap();
    receipt
        .verify(&key, report.as_bytes())
        .expect("the receipt verifies");
    assert!(report.contains("by diagnosis group"), "{report:.300}");
    assert_eq!(receipt.epsilon, 0.6);
    assert_eq!(receipt.operator, "analyst");
    b.stop();
}

#[test]
fn a_python_job_finds_no_files_no_environment_and_no_network() {
    assert_eq!(text_of("open-file"), "error: FileNotFoundError");
    let listed = text_of("list-dir");
    assert!(listed.starts_with("error: "), "{listed}");
    assert_eq!(
        text_of("env"),
        "ok: {}\nok: []",
        "no variables, no arguments"
    );
    // CPython for WASI has no `_socket`: the module does not even load.
    assert_eq!(text_of("socket"), "error: ModuleNotFoundError");
    let sub = text_of("subprocess");
    assert!(sub.starts_with("error: "), "{sub}");
}

#[test]
fn a_python_job_reads_a_clock_that_tells_nothing_and_randomness_that_is_always_the_same() {
    let out = run(hostile(), "clock").unwrap();
    let scalar = |n: &str| {
        out.report
            .scalars
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.value)
            .unwrap()
    };
    assert_eq!(scalar("t0"), 946_684_800.0, "2000-01-01T00:00:00Z");
    assert_eq!(scalar("t1"), scalar("t0"), "the wall clock does not move");
    assert_eq!(
        scalar("m1"),
        scalar("m0"),
        "a busy loop does not move the monotonic clock"
    );
    // A sleep returns at once; only the virtual clock moves, by what was asked.
    let started = std::time::Instant::now();
    let out = run(hostile(), "sleep").unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.report.scalars[0].value, 30.0);
    assert_eq!(text_of("urandom"), text_of("urandom"), "no host entropy");
}

#[test]
fn python_runaways_and_failures_end_with_typed_errors_and_the_sandbox_keeps_serving() {
    let (s, _) = sandbox_with(Limits {
        fuel: 2_000_000_000,
        memory_bytes: 256 << 20,
        ..Limits::default()
    });
    let attack = |params: &str| {
        s.run_job(&JobRequest::new(
            op("analyst"),
            "py-hostile",
            hostile(),
            params,
        ))
        .map_err(|f| (f.error, f.log))
    };
    assert_eq!(
        attack("loop").unwrap_err().0,
        JobError::FuelExhausted(2_000_000_000)
    );
    let memory = attack("memory").unwrap_err().0;
    assert!(
        matches!(&memory, JobError::MemoryLimit(_))
            || matches!(&memory, JobError::Guest(m) if m.contains("MemoryError")),
        "{memory:?}"
    );
    assert_eq!(
        attack("exception").unwrap_err().0,
        JobError::Guest("ValueError: the hostile job raised on purpose".into())
    );
    assert_eq!(
        attack("sys-exit").unwrap_err().0,
        JobError::Guest("the job called sys.exit(3)".into())
    );
    // WASI 0.2.0's `exit` carries success or failure only: os._exit(4) arrives as a failure.
    assert_eq!(attack("os-exit").unwrap_err().0, JobError::Exited(1));
    // A print flood fills the capped log; the rest is counted, not kept.
    let out = s
        .run_job(&JobRequest::new(
            op("analyst"),
            "py-print",
            hostile(),
            "print-flood",
        ))
        .expect("printing is allowed");
    assert!(
        out.log_dropped > 0 && out.log[0].message.starts_with("line 0 "),
        "{:?}",
        out.log.first()
    );
    let out = s
        .run_job(&JobRequest::new(op("analyst"), "py-after", sample(), ""))
        .expect("the sandbox still serves");
    assert_eq!(out.queries.len(), 1);
}
