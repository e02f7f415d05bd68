//! Hostile guests: each attack ends with the error it names, and the sandbox keeps serving.

use std::time::Duration;

use sluice_runtime::{JobError, JobRequest, Limits, Sandbox};

use crate::{guest, op, sandbox, sandbox_with};

fn attack(sandbox: &Sandbox, params: &str, limits: Option<Limits>) -> JobError {
    let wasm = guest(env!("GUEST_HOSTILE"));
    let mut req = JobRequest::new(
        op("analyst"),
        format!("hostile-{params:.20}"),
        &wasm,
        params,
    );
    if let Some(l) = limits {
        req = req.with_limits(l);
    }
    match sandbox.run_job(&req) {
        Ok(out) => panic!(
            "attack `{params:.40}` produced a report: {:.200}",
            out.report.to_json()
        ),
        Err(f) => f.error,
    }
}

fn assert_still_serves(sandbox: &Sandbox) {
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let out = sandbox
        .run_job(&JobRequest::new(
            op("analyst"),
            "after-attack",
            &wasm,
            "epsilon=0.1",
        ))
        .expect("a normal job runs after an attack");
    assert_eq!(out.report.tables.len(), 2);
}

#[test]
fn infinite_loop_is_stopped_by_the_fuel_limit() {
    let (s, _) = sandbox();
    let limits = Limits {
        fuel: 50_000_000,
        ..Limits::default()
    };
    assert_eq!(
        attack(&s, "loop", Some(limits)),
        JobError::FuelExhausted(50_000_000)
    );
    assert_still_serves(&s);
}

#[test]
fn infinite_loop_with_unlimited_fuel_is_stopped_by_the_wall_clock() {
    let (s, _) = sandbox();
    let limits = Limits {
        fuel: u64::MAX,
        wall_clock: Duration::from_millis(300),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    assert_eq!(
        attack(&s, "loop", Some(limits)),
        JobError::Timeout(Duration::from_millis(300))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_still_serves(&s);
}

#[test]
fn memory_bomb_is_stopped_by_the_memory_limit() {
    let (s, _) = sandbox();
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    assert_eq!(
        attack(&s, "memory", Some(limits)),
        JobError::MemoryLimit(64 << 20)
    );
    assert_still_serves(&s);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let (s, _) = sandbox();
    assert_eq!(attack(&s, "recursion", None), JobError::StackOverflow);
    assert_still_serves(&s);
}

#[test]
fn a_report_of_hundreds_of_megabytes_is_refused() {
    let (s, _) = sandbox();
    let limits = Limits {
        memory_bytes: 1 << 30,
        ..Limits::default()
    };
    // The host stops copying past the cap: the 300 MiB never reach host memory.
    assert_eq!(
        attack(&s, "big-report:300", Some(limits.clone())),
        JobError::TransferTooLarge(Limits::default().max_report_bytes + (1 << 20))
    );
    // Just over the report cap (within the transfer cap): measured and refused by size.
    match attack(&s, "big-report-bytes:4194400", Some(limits)) {
        JobError::ReportTooLarge { bytes, limit } => {
            assert!(bytes > limit && bytes < limit + 4096, "{bytes}");
            assert_eq!(limit, Limits::default().max_report_bytes);
        }
        other => panic!("expected ReportTooLarge, got {other:?}"),
    }
    assert_still_serves(&s);
}

#[test]
fn opening_a_file_finds_no_filesystem() {
    let (s, _) = sandbox();
    match attack(&s, "open-file", None) {
        JobError::Guest(msg) => {
            assert!(msg.starts_with("open-file:"), "{msg}");
            assert!(!msg.contains("root:"), "{msg}");
        }
        other => panic!("expected the guest's own error, got {other:?}"),
    }
}

#[test]
fn reading_the_environment_finds_nothing() {
    let (s, _) = sandbox();
    // On wasm32-unknown-unknown std has no environment to offer; whichever way it fails
    // (an error or a panic), nothing is read.
    match attack(&s, "env", None) {
        JobError::Guest(m) => assert_eq!(m, "env: no environment visible"),
        JobError::Trapped(_) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn importing_wasi_interfaces_is_refused_naming_the_import() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_SMUGGLER"));
    let err = s
        .run_job(&JobRequest::new(op("analyst"), "smuggler", &wasm, ""))
        .expect_err("a WASI-importing job must not run")
        .error;
    match &err {
        JobError::ForbiddenImport(name) => {
            assert!(
                name == "wasi:cli/environment@0.2.0" || name == "wasi:filesystem/preopens@0.2.0",
                "{name}"
            );
            assert!(err.to_string().contains(name.as_str()));
        }
        other => panic!("expected ForbiddenImport, got {other:?}"),
    }
    assert_still_serves(&s);
}

#[test]
fn invalid_wasm_is_refused_with_a_clear_error() {
    let (s, _) = sandbox();
    for bytes in [
        b"definitely not wasm".to_vec(),
        b"\0asm\x01\0\0\0\xff\xff".to_vec(),
        b"\0asm\x0d\0\x01\0garbage".to_vec(),
        Vec::new(),
        vec![0u8; 17 << 20],
    ] {
        let err = s
            .run_job(&JobRequest::new(op("analyst"), "bad", &bytes, ""))
            .expect_err("invalid wasm must not run")
            .error;
        assert!(matches!(err, JobError::InvalidWasm(_)), "{err:?}");
    }
    assert_still_serves(&s);
}

#[test]
fn asking_too_many_queries_is_refused_and_repeats_cost_nothing() {
    let (s, accountant) = sandbox();
    let limits = Limits {
        max_queries: 20,
        ..Limits::default()
    };
    let wasm = guest(env!("GUEST_HOSTILE"));
    let failure = s
        .run_job(&JobRequest::new(op("analyst"), "spam", &wasm, "query-spam").with_limits(limits))
        .expect_err("query spam must end in an error");
    match &failure.error {
        JobError::Guest(msg) => assert!(msg.contains("too many queries"), "{msg}"),
        other => panic!("expected the query limit, got {other:?}"),
    }
    // The query limit counts every query; the spam repeats one query, so only the first answer
    // was charged and the other 19 came from the answer cache (averaging them gains nothing).
    assert_eq!(failure.queries.len(), 20);
    assert_eq!(failure.queries[0].cost.epsilon, 0.001);
    assert!(failure.queries[1..].iter().all(|q| q.cost.epsilon == 0.0));
    let spent = sluice_runtime::Accountant::spent(
        accountant.as_ref(),
        &op("analyst"),
        &"health_visits".parse().unwrap(),
        "spam",
        Duration::from_secs(86_400),
    );
    assert!((spent.job.epsilon - 0.001).abs() < 1e-12, "{spent:?}");
}

#[test]
fn a_panicking_job_traps_and_its_log_says_why() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_HOSTILE"));
    let failure = s
        .run_job(&JobRequest::new(op("analyst"), "panic", &wasm, "panic"))
        .expect_err("a panic is a failure");
    assert!(
        matches!(failure.error, JobError::Trapped(_)),
        "{:?}",
        failure.error
    );
    assert!(
        failure
            .log
            .iter()
            .any(|l| l.level == "error" && l.message.contains("hostile job panicked on purpose")),
        "{:?}",
        failure.log
    );
    assert_still_serves(&s);
}

#[test]
fn log_spam_is_capped() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_HOSTILE"));
    let out = s
        .run_job(&JobRequest::new(op("analyst"), "log", &wasm, "log-spam"))
        .expect("logging is allowed, within the cap");
    let bytes: usize = out.log.iter().map(|l| l.message.len()).sum();
    assert!(bytes <= Limits::default().max_log_bytes);
    assert!(out.log_dropped > 90_000, "{}", out.log_dropped);
}

#[test]
fn oversized_parameters_are_refused_before_the_job_starts() {
    let (s, _) = sandbox();
    let params = "x".repeat(Limits::default().max_params_bytes + 1);
    assert!(matches!(
        attack(&s, &params, None),
        JobError::ParamsTooLarge { .. }
    ));
}

#[test]
fn the_sandbox_keeps_serving_after_every_attack_in_a_row() {
    let (s, _) = sandbox_with(Limits {
        fuel: 50_000_000,
        memory_bytes: 64 << 20,
        ..Limits::default()
    });
    for a in ["loop", "memory", "recursion", "panic", "open-file", "env"] {
        let _ = attack(&s, a, None);
    }
    assert_still_serves(&s);
}

#[test]
fn a_query_still_running_at_the_wall_clock_limit_is_abandoned() {
    // Responses on health_visits are padded to 10 s; the job may run 500 ms. Without the
    // deadline on host calls the job would wait out the padding.
    let dir = crate::temp_dir("host-deadline");
    let pdir = crate::write_policy(&dir, |p| {
        p.replacen(
            "max_rows_per_unit = 5\n",
            "max_rows_per_unit = 5\nresponse_time_bucket_ms = 10000\n",
            1,
        )
    });
    let policy = sluice_policy::load(&pdir).unwrap();
    let limits = Limits {
        wall_clock: Duration::from_millis(500),
        ..Limits::default()
    };
    let accountant = std::sync::Arc::new(sluice_runtime::InMemoryAccountant::new());
    let s = Sandbox::new(
        sluice_runtime::SandboxConfig::new(policy, crate::data_root(), accountant.clone())
            .with_limits(limits),
    )
    .unwrap();
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let started = std::time::Instant::now();
    let failure = s
        .run_job(&JobRequest::new(
            op("analyst"),
            "deadline",
            &wasm,
            "epsilon=0.3&min_age=18",
        ))
        .expect_err("the job runs out of time");
    assert_eq!(failure.error, JobError::Timeout(Duration::from_millis(500)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // No answer was released, but the abandoned query was charged (before it executed).
    assert!(failure.queries.is_empty());
    let spent = sluice_runtime::Accountant::spent(
        accountant.as_ref(),
        &op("analyst"),
        &sluice_policy::DatasetId::new("health_visits").unwrap(),
        "deadline",
        Duration::from_secs(86_400),
    );
    assert!(spent.job.epsilon > 0.0, "{spent:?}");
}
