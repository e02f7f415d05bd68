//! Regressions from an outside attack run and an HTTP fuzz: inputs that aborted the broker, memory
//! past the job's cap, connection exhaustion, queries that failed after their charge, and state
//! an anonymous client could grow. Each test failed before the fix it names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice_runtime::privacy::Budget;
use sluice_runtime::{Accountant, InMemoryAccountant, JobError, JobRequest, QueryError, Sandbox};

use crate::{TestBroker, World, asker, guest, http, op, sandbox, stats_grant};

// ---- wasm binaries, byte by byte -------------------------------------------------------------

fn leb(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn sleb(out: &mut Vec<u8>, mut n: i64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        let done = (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return;
        }
    }
}

fn read_leb(b: &[u8], pos: &mut usize) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let byte = b[*pos];
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

/// The top-level sections of a module or component: id and content range.
fn sections(wasm: &[u8]) -> Vec<(u8, std::ops::Range<usize>)> {
    let (mut pos, mut out) = (8, Vec::new());
    while pos < wasm.len() {
        let id = wasm[pos];
        pos += 1;
        let len = read_leb(wasm, &mut pos) as usize;
        out.push((id, pos..pos + len));
        pos += len;
    }
    out
}

fn push_section(wasm: &mut Vec<u8>, id: u8, body: &[u8]) {
    wasm.push(id);
    leb(wasm, body.len() as u64);
    wasm.extend_from_slice(body);
}

/// A core module of `sections` (id, body).
fn module(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    for (id, body) in sections {
        push_section(&mut m, *id, body);
    }
    m
}

/// A core module whose start function grows its one memory by `pages` and touches every byte,
/// trapping if the host refuses the growth.
fn memory_hog(pages: u32) -> Vec<u8> {
    let mut code = vec![0x00]; // no locals
    code.push(0x41);
    sleb(&mut code, i64::from(pages)); // i32.const pages
    code.extend([0x40, 0x00]); // memory.grow
    code.extend([0x41, 0x7f, 0x46]); // i32.const -1; i32.eq
    code.extend([0x04, 0x40, 0x00, 0x0b]); // if unreachable end
    code.extend([0x41, 0x00, 0x41, 0x01, 0x41]); // dst 0, value 1, i32.const len
    sleb(&mut code, i64::from(pages) * 65536);
    code.extend([0xfc, 0x0b, 0x00, 0x0b]); // memory.fill; end
    let mut body = vec![1];
    leb(&mut body, code.len() as u64);
    body.extend(code);
    module(&[
        (1, vec![1, 0x60, 0, 0]),
        (3, vec![1, 0]),
        (5, vec![1, 0x00, 0]),
        (8, vec![0]),
        (10, body),
    ])
}

/// A core module with one table of `elements` funcrefs.
fn table_hog(elements: u64) -> Vec<u8> {
    let mut table = vec![1, 0x70, 0x00];
    leb(&mut table, elements);
    module(&[(4, table)])
}

/// The hostile guest as a component, with `extra` (a core module) instantiated `instances` times
/// after everything else: each instance's memory or table is the job's too.
fn component_with(extra: &[u8], instances: u64) -> Vec<u8> {
    let mut c = wit_component::ComponentEncoder::default()
        .module(&guest(env!("GUEST_HOSTILE")))
        .and_then(|e| e.validate(true).encode())
        .expect("the hostile guest encodes");
    let index = sections(&c).iter().filter(|(id, _)| *id == 1).count() as u64;
    push_section(&mut c, 1, extra);
    let mut body = Vec::new();
    leb(&mut body, instances);
    for _ in 0..instances {
        body.push(0x00);
        leb(&mut body, index);
        body.push(0x00);
    }
    push_section(&mut c, 2, &body);
    c
}

fn run(s: &Sandbox, wasm: &[u8], params: &str) -> Result<sluice_runtime::JobOutput, JobError> {
    s.run_job(&JobRequest::new(op("analyst"), "hardening", wasm, params))
        .map_err(|f| f.error)
}

fn assert_still_serves(s: &Sandbox) {
    let out = run(s, &guest(env!("GUEST_VISITS_BY_DISTRICT")), "epsilon=0.1")
        .expect("a normal job runs afterwards");
    assert_eq!(out.report.tables.len(), 2);
}

// ---- inputs that aborted the broker ----------------------------------------------------------

fn nested_subqueries(n: usize) -> String {
    let mut sql = "SELECT COUNT(*) AS n FROM health_visits".to_string();
    for _ in 0..n {
        sql = format!("SELECT COUNT(*) AS n FROM ({sql})");
    }
    sql
}

/// The shapes that overflowed the planner's stack, each a little past where it did.
fn deep_shapes() -> Vec<(&'static str, String)> {
    let q = "SELECT COUNT(*) AS n FROM health_visits";
    vec![
        ("18 nested subqueries", nested_subqueries(18)),
        (
            "40 NOTs",
            format!("{q} WHERE {} age > 3", "NOT ".repeat(40)),
        ),
        (
            "246 chained +",
            format!("{q} WHERE age{} > 3", " + 1".repeat(246)),
        ),
        (
            "2,000 chained +",
            format!("{q} WHERE age{} > 3", "+1".repeat(2000)),
        ),
        (
            "246 chained ||",
            format!("{q} WHERE district{} = 'x'", " || 'a'".repeat(246)),
        ),
        (
            "246 COUNT(*)+",
            format!(
                "SELECT COUNT(*){} AS n FROM health_visits",
                " + COUNT(*)".repeat(246)
            ),
        ),
    ]
}

#[test]
fn deep_sql_gets_a_clean_refusal_from_the_estimate_route_and_from_inside_a_job() {
    let mut b = TestBroker::start("deep-sql", |p| p);
    for (name, sql) in deep_shapes() {
        let body = serde_json::json!({ "sql": sql, "epsilon": 0.1 }).to_string();
        let (status, resp) = http(
            b.url(),
            "POST",
            "/v1/estimate",
            Some(&b.analyst),
            Some("application/json"),
            body.as_bytes(),
        );
        assert_eq!(status, 400, "{name}: {resp}");
        assert_eq!(resp["error"]["code"], "query_refused", "{name}: {resp}");
        let (status, _) = http(b.url(), "GET", "/healthz", None, None, b"");
        assert_eq!(status, 200, "the broker serves after {name}");
    }
    b.stop();

    let (s, _) = sandbox();
    let hostile = guest(env!("GUEST_HOSTILE"));
    for (name, sql) in deep_shapes() {
        match run(&s, &hostile, &format!("sql:{sql}")) {
            Err(JobError::Guest(m)) => assert!(m.contains("query refused"), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_still_serves(&s);
}

#[test]
fn the_largest_accepted_shapes_plan_whatever_the_callers_stack() {
    use sluice_runtime::privacy::sql_bounds::{MAX_NESTING, MAX_OPERATORS};
    let (s, _) = sandbox();
    let q = "SELECT COUNT(*) AS n FROM health_visits";
    let half = MAX_OPERATORS / 2;
    let shapes = [
        nested_subqueries(MAX_NESTING - 1),
        format!("{q} WHERE age{} > 3", " + 1".repeat(MAX_OPERATORS - 1)),
        format!("{q} WHERE {} age > 3", "NOT ".repeat(MAX_OPERATORS - 1)),
        format!(
            "{q} WHERE {}{}age{}{} > 3",
            "NOT ".repeat(half),
            "(".repeat(MAX_NESTING - 1),
            " + 1".repeat(half - 1),
            ")".repeat(MAX_NESTING - 1)
        ),
        format!(
            "SELECT COUNT(*){} AS n FROM health_visits",
            " + COUNT(*)".repeat(MAX_OPERATORS)
        ),
    ];
    // A caller with a small stack: planning runs on the sandbox's own threads.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn_scoped(scope, || {
                for sql in &shapes {
                    // Refused or estimated, never a crash.
                    let _ = s.estimate(asker("analyst", "edge"), sql.clone(), Budget::Epsilon(0.1));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    // The bounds leave ordinary queries alone: 20 conditions are 39 operators.
    let conditions: Vec<String> = (0..20).map(|i| format!("age > {i}")).collect();
    let ordinary = s.estimate(
        asker("analyst", "edge"),
        format!("{q} WHERE {}", conditions.join(" AND ")),
        Budget::Epsilon(0.1),
    );
    assert!(ordinary.is_ok(), "{ordinary:?}");
}

/// `wasm` with `from` renamed to `to` after its last `component-type` marker only (the metadata
/// section comes last), or everywhere.
fn renamed(wasm: &[u8], from: &[u8], to: &[u8], metadata_only: bool) -> Vec<u8> {
    let start = if metadata_only {
        wasm.windows(14)
            .rposition(|w| w == b"component-type")
            .expect("the guest carries its component type")
    } else {
        0
    };
    let mut out = wasm.to_vec();
    let mut renamed = 0;
    for i in start..out.len().saturating_sub(from.len()) {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            renamed += 1;
        }
    }
    assert!(renamed > 0);
    out
}

#[test]
fn a_package_cycle_in_a_jobs_metadata_cannot_crash_the_host() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    // One byte renamed in the metadata alone: the host never decodes a guest's metadata, so the
    // job is built against the host's own WIT and runs.
    let cycle = renamed(&wasm, b"sluice:job/data", b"sluice:j6b/data", true);
    s.precompile(&cycle).expect("the metadata is not read");
    assert_eq!(
        run(&s, &cycle, "epsilon=0.1").unwrap().report.tables.len(),
        2
    );
    // Renamed everywhere, the import itself is outside the contract.
    let everywhere = renamed(&wasm, b"sluice:job/data", b"sluice:j6b/data", false);
    match s.precompile(&everywhere) {
        Err(JobError::ForbiddenImport(name)) => assert_eq!(name, "sluice:j6b/data@0.3.0"),
        other => panic!("{other:?}"),
    }
    // The same bytes over HTTP: a 400, and the broker carries on.
    let mut b = TestBroker::start("cycle", |p| p);
    let (status, resp) = http(
        b.url(),
        "POST",
        "/v1/jobs?purpose=cycle&datasets=health_visits",
        Some(&b.analyst),
        Some("application/wasm"),
        &everywhere,
    );
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (400, Some("invalid_wasm"))
    );
    let (status, _) = http(
        b.url(),
        "POST",
        "/v1/jobs?purpose=cycle&datasets=health_visits",
        Some(&b.analyst),
        Some("application/wasm"),
        &cycle,
    );
    assert_eq!(status, 202);
    b.stop();
}

#[test]
fn a_module_cut_inside_its_code_section_is_refused_not_a_panic() {
    let (s, _) = sandbox();
    let wasm = guest(env!("GUEST_HOSTILE"));
    let (_, code) = sections(&wasm)
        .into_iter()
        .find(|(id, _)| *id == 10)
        .expect("a code section");
    for cut in [
        code.start + 1,
        code.start + 100,
        (code.start + code.end) / 2,
        code.end - 1,
    ] {
        match s.precompile(&wasm[..cut]) {
            Err(JobError::InvalidWasm(m)) => assert!(!m.is_empty()),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert_still_serves(&s);
}

/// A random condition over the test dataset, up to `depth` levels of AND / OR / NOT.
fn random_condition(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
    if depth == 0 || rng.random_bool(0.3) {
        let n = rng.random_range(-5..120);
        return match rng.random_range(0..6) {
            0 => format!("age > {n}"),
            1 => format!("age BETWEEN {n} AND {}", n + 10),
            2 => "district IN ('Guangling', 'Hanjiang')".into(),
            3 => "sex = 'F'".into(),
            4 => format!("cost < {}", n * 100),
            _ => "diagnosis_group <> 'other'".into(),
        };
    }
    match rng.random_range(0..3) {
        0 => format!("NOT ({})", random_condition(rng, depth - 1)),
        1 => format!(
            "({} AND {})",
            random_condition(rng, depth - 1),
            random_condition(rng, depth - 1)
        ),
        _ => format!(
            "({} OR {})",
            random_condition(rng, depth - 1),
            random_condition(rng, depth - 1)
        ),
    }
}

/// Random SQL: a query from the supported grammar (keys, aggregates, a condition nested up to
/// 24 levels, past the limits on purpose), then sometimes one token inserted or replaced.
fn random_sql(rng: &mut rand::rngs::StdRng) -> String {
    const KEYS: &[&str] = &["district", "sex", "diagnosis_group"];
    const AGGS: &[&str] = &[
        "COUNT(*)",
        "SUM(age)",
        "AVG(cost)",
        "SUM(cost)",
        "COUNT(DISTINCT person_id)",
    ];
    const PIECES: &[&str] = &[
        "(",
        ")",
        "+",
        "*",
        "/ 0",
        "||",
        "AND",
        "NOT",
        "-9223372036854775808",
        "'",
        "\"",
        ",",
        "(SELECT",
        "CAST(",
        "name",
        "1e308",
        "ORDER BY age",
        ";",
    ];
    let keys: Vec<&str> = KEYS
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.4))
        .collect();
    let aggs: Vec<String> = (0..rng.random_range(1..4))
        .map(|i| format!("{} AS a{i}", AGGS[rng.random_range(0..AGGS.len())]))
        .collect();
    let mut select: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    select.extend(aggs);
    let mut sql = format!("SELECT {} FROM health_visits", select.join(", "));
    if rng.random_bool(0.8) {
        let depth = rng.random_range(0..24);
        sql.push_str(&format!(" WHERE {}", random_condition(rng, depth)));
    }
    if !keys.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", keys.join(", ")));
    }
    if rng.random_bool(0.3) {
        let words: Vec<&str> = sql.split(' ').collect();
        let at = rng.random_range(0..words.len());
        let piece = PIECES[rng.random_range(0..PIECES.len())];
        let mut out: Vec<&str> = words.clone();
        if rng.random_bool(0.5) {
            out.insert(at, piece);
        } else {
            out[at] = piece;
        }
        sql = out.join(" ");
    }
    sql
}

#[test]
fn a_seeded_fuzz_of_submissions_and_estimates_never_crashes_the_sandbox() {
    let (s, _) = sandbox();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261129);
    let bases = [
        guest(env!("GUEST_VISITS_BY_DISTRICT")),
        guest(env!("GUEST_TOURISM_SPEND")),
        guest(env!("GUEST_HOSTILE")),
    ];
    // Submissions: flipped bytes, cuts, duplicated and dropped chunks. Bounded in count and time.
    let (mut accepted, mut refused) = (0, 0);
    let started = Instant::now();
    for _ in 0..400 {
        if started.elapsed() > Duration::from_secs(25) {
            break;
        }
        let mut w = bases[rng.random_range(0..bases.len())].clone();
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(8..w.len());
                    w[i] = rng.random();
                }
            }
            1 => w.truncate(rng.random_range(0..w.len())),
            2 => {
                let (a, n) = (rng.random_range(8..w.len()), rng.random_range(1..64));
                let chunk = w[a..(a + n).min(w.len())].to_vec();
                let at = rng.random_range(8..w.len());
                w.splice(at..at, chunk);
            }
            _ => {
                let a = rng.random_range(8..w.len());
                let b = (a + rng.random_range(1..256)).min(w.len());
                w.drain(a..b);
            }
        }
        match s.precompile(&w) {
            Ok(_) => accepted += 1,
            Err(JobError::InvalidWasm(_) | JobError::ForbiddenImport(_)) => refused += 1,
            Err(other) => panic!("a malformed job must be refused as invalid, got {other:?}"),
        }
    }
    // The loops are bounded in time as well as count: on a loaded machine they do less, but they
    // must reach both outcomes.
    assert!(
        refused > 20,
        "the mutations reach the validator: {refused} refused"
    );
    // Estimates: random SQL, each refused or estimated.
    let (mut estimated, mut declined) = (0, 0);
    let started = Instant::now();
    for i in 0..3000 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let sql = random_sql(&mut rng);
        match s.estimate(
            asker("analyst", &format!("fuzz-{i}")),
            sql,
            Budget::Epsilon(0.1),
        ) {
            Ok(_) => estimated += 1,
            Err(_) => declined += 1,
        }
    }
    println!(
        "fuzz: {accepted} mutated jobs accepted, {refused} refused; {estimated} estimates, {declined} refusals"
    );
    assert!(
        estimated > 20 && declined > 20,
        "the fuzz reaches both outcomes"
    );
    assert_still_serves(&s);
}

// ---- memory: one cap per job -----------------------------------------------------------------

#[test]
fn a_multi_memory_module_carrying_the_sdks_component_type_is_refused_naming_the_feature() {
    // The hostile guest with its memory section replaced: its own memory, then 15 of 4,096
    // pages (256 MiB each, exactly the per-memory cap that used to apply).
    let wasm = guest(env!("GUEST_HOSTILE"));
    let (_, mem) = sections(&wasm)
        .into_iter()
        .find(|(id, _)| *id == 5)
        .unwrap();
    assert_eq!(wasm[mem.start], 1, "one memory");
    let mut body = vec![16];
    body.extend_from_slice(&wasm[mem.start + 1..mem.end]);
    for _ in 0..15 {
        body.extend([0x00, 0x80, 0x20]);
    }
    let mut multi = b"\0asm\x01\0\0\0".to_vec();
    for (id, range) in sections(&wasm) {
        let original = &wasm[range];
        push_section(&mut multi, id, if id == 5 { &body } else { original });
    }
    let (s, _) = sandbox();
    match run(&s, &multi, "panic") {
        Err(JobError::InvalidWasm(m)) => {
            assert!(m.contains("multiple memories"), "{m}");
            assert!(m.contains("jobs may use WebAssembly 2.0"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_table_bomb_is_stopped_with_the_memory_limit() {
    let (s, _) = sandbox();
    let bomb = component_with(&table_hog(10_000_000), 1);
    assert!(
        matches!(run(&s, &bomb, "x"), Err(JobError::MemoryLimit(_))),
        "{:?}",
        run(&s, &bomb, "x").map(|o| o.report.title)
    );
    assert_still_serves(&s);
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The attack in a process of its own, so that its peak memory is its own. Runs only when the
/// parent starts this test binary with `SLUICE_MEMORY_CHILD` set.
#[test]
#[ignore = "a child process, so that its peak RSS is the attack's alone; run by hardening::instances_that_together_pass_the_memory_cap_are_stopped_and_the_host_stays_small"]
fn memory_child() {
    if std::env::var_os("SLUICE_MEMORY_CHILD").is_none() {
        return;
    }
    let (s, _) = sandbox();
    // Four instances of 200 MiB each, each under the old per-memory cap of 256 MiB.
    let attack = component_with(&memory_hog(3200), 4);
    s.precompile(&attack).expect("the attack compiles");
    let baseline = proc_status_kib("VmRSS:");
    // Reset the peak so that it measures the job alone.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let error = run(&s, &attack, "x").err();
    let peak = proc_status_kib("VmHWM:");
    println!("SLUICE-MEMORY baseline_kib={baseline} peak_kib={peak} error={error:?}");
}

#[test]
fn instances_that_together_pass_the_memory_cap_are_stopped_and_the_host_stays_small() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hardening::memory_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_MEMORY_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("SLUICE-MEMORY").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("the child reported nothing: {stdout}"));
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(line.contains("MemoryLimit"), "{line}");
    let grown_mib = field("peak_kib=").saturating_sub(field("baseline_kib=")) / 1024;
    // The documented cap (256 MiB for the whole job) plus 64 MiB for the host's own work.
    println!("peak RSS above the host's baseline while the attack ran: {grown_mib} MiB");
    assert!(grown_mib <= 256 + 64, "{line}");
}

// ---- connections -----------------------------------------------------------------------------

#[test]
fn idle_and_slow_header_connections_are_closed_while_real_requests_still_succeed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut b = TestBroker::start_with(
        "connections",
        |p| p,
        |mut c| {
            c.connections.header_read_timeout_secs = 2;
            c.connections.max_connections_per_source = 64;
            c
        },
    );
    let addr: SocketAddr = b.url().trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = |from: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    // 300 idle sockets from one address, and 20 slowloris clients from another that send a
    // request line and then one header byte at a time.
    let (mut idle, mut slow) = rt.block_on(async {
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(connect("127.0.0.2").await);
        }
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut s = connect("127.0.0.3").await;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(s);
        }
        (idle, slow)
    });
    let started = Instant::now();
    let (status, _) = http(b.url(), "GET", "/healthz", None, None, b"");
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let (closed, answered) = rt.block_on(async {
        for _ in 0..10 {
            for s in &mut slow {
                let _ = s.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // By now every one of them is past the 2 s header timeout or was never admitted: the
        // broker has closed it (a read ends, possibly after a 408).
        let (mut closed, mut answered) = (0, 0);
        for s in idle.iter_mut().chain(slow.iter_mut()) {
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        closed += 1;
                        break;
                    }
                    Ok(Ok(_)) => answered += 1,
                    Err(_) => break,
                }
            }
        }
        (closed, answered)
    });
    assert_eq!(closed, 320, "connections left open ({answered} answered)");
    let (status, _) = http(b.url(), "GET", "/healthz", None, None, b"");
    assert_eq!(status, 200);
    drop(rt);
    b.stop();
}

// ---- work that failed after its charge -------------------------------------------------------

#[test]
fn a_csv_value_that_does_not_parse_past_the_inference_sample_fails_the_start_naming_its_line() {
    let mut csv = String::from("person_id,district,age\n");
    for i in 0..1500 {
        let age = if i == 1199 {
            "abc".to_string()
        } else {
            (i % 90).to_string()
        };
        csv.push_str(&format!("{i},a,{age}\n"));
    }
    let policy = format!(
        r#"
[dataset.people]
source = "data/people.csv"
holder = "test"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 1
columns.district = {{ kind = "category", public_values = ["a"] }}
columns.age = {{ kind = "int", bounds = [0, 100] }}
{}"#,
        stats_grant("people", "late CSV values", r#""count""#)
    );
    let world = World::csv("csv-late", "people", &csv, &policy);
    let err = world
        .try_sandbox(Arc::new(InMemoryAccountant::new()))
        .err()
        .expect("the sandbox must not start");
    assert!(err.contains("people.csv"), "{err}");
    assert!(err.contains("line 1201"), "{err}");
    assert!(!err.contains("Row data"), "{err}");
}

#[test]
fn queries_that_cannot_run_are_refused_before_the_charge_and_none_fails_after_it() {
    let (s, acc) = sandbox();
    let q = "SELECT COUNT(*) AS n FROM health_visits WHERE";
    // Known at planning time to fail: refused, for free.
    let doomed = [
        format!("{q} age > -(-9223372036854775808)"),
        format!("{q} age > 9223372036854775807 + 1"),
        format!("{q} age > CAST('abc' AS INT)"),
        format!("{q} age > 1 / 0"),
        format!("{q} age / 0 > 1"),
        format!("{q} age % 0 = 1"),
        format!("{q} district = CAST(1 / 0 AS VARCHAR)"),
        format!("{q} age > abs(-9223372036854775808)"),
    ];
    // Shapes around them that may be answered or refused, but must never fail after the charge.
    let corpus = [
        format!("{q} age > -(-922337203685477580)"),
        format!("{q} age > 9223372036854775806 + 1"),
        format!("{q} age > CAST('42' AS INT)"),
        format!("{q} age / 2 > 1"),
        format!("{q} age * 9223372036854775807 > 0"),
        format!("{q} age + 9223372036854775807 > 0"),
        format!("{q} CAST(district AS INT) > 0"),
        format!("{q} age / (age - age) > 0"),
        format!("{q} cost / 0.0 > 1"),
        format!("{q} 1 + 1.5 > age"),
        "SELECT SUM(age / 0) AS s FROM health_visits".to_string(),
        "SELECT SUM(age * 9223372036854775807) AS s FROM health_visits".to_string(),
    ];
    let day = Duration::from_secs(86_400);
    let ds = sluice_policy::DatasetId::new("health_visits").unwrap();
    let mut after_charge = Vec::new();
    for (i, sql) in doomed.iter().chain(corpus.iter()).enumerate() {
        let job = format!("doomed-{i}");
        let r = s.block_on(s.engine().query(&asker("analyst", &job), sql, 0.1));
        let spent = acc.spent(&op("analyst"), &ds, &job, day).job.epsilon;
        if matches!(r, Err(QueryError::ExecutionFailed)) {
            after_charge.push(sql.clone());
        }
        if i < doomed.len() {
            assert!(r.is_err(), "{sql}");
            assert_eq!(spent, 0.0, "{sql} was charged: {r:?}");
        }
    }
    assert!(
        after_charge.is_empty(),
        "failed after their charge: {after_charge:#?}"
    );
}

// ---- state an anonymous client could grow ----------------------------------------------------

#[test]
fn anonymous_denials_are_aggregated_per_source_and_a_long_path_is_capped() {
    let mut b = TestBroker::start("denial-flood", |p| p);
    let long = format!("/v1/jobs/{}", "x".repeat(16 << 10));
    for _ in 0..300 {
        let (status, _) = http(b.url(), "GET", &long, None, None, b"");
        assert_eq!(status, 401);
    }
    let dir = b.dir.clone();
    let entries = |kind: &str| -> Vec<String> {
        let conn = sluice_broker::store::Store::open_conn_readonly(&dir).unwrap();
        let mut stmt = conn
            .prepare("SELECT body FROM audit WHERE kind = ?1")
            .unwrap();
        stmt.query_map([kind], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let denied = entries("access.denied");
    assert_eq!(
        denied.len(),
        1,
        "one entry for the window, not one per request"
    );
    assert!(denied[0].len() < 1024, "{} bytes", denied[0].len());
    b.stop();
    let repeated = entries("access.denied.repeated");
    assert_eq!(repeated.len(), 1);
    let r: serde_json::Value = serde_json::from_str(&repeated[0]).unwrap();
    assert_eq!(r["detail"]["count"], 299);
    assert_eq!(r["detail"]["source"], "127.0.0.1");
    assert!(repeated[0].len() < 2048);
}

#[test]
fn jobs_waiting_for_review_are_bounded_per_operator() {
    let mut b = TestBroker::start("review-bound", |p| p);
    let wasm = guest(env!("GUEST_TOURISM_SPEND"));
    let submit = || {
        http(
            b.url(),
            "POST",
            "/v1/jobs?purpose=review%20flood&datasets=tourism_trips",
            Some(&b.tourism),
            Some("application/wasm"),
            &wasm,
        )
    };
    for i in 0..8 {
        let (status, resp) = submit();
        assert_eq!(status, 202, "job {i}: {resp}");
        assert_eq!(resp["state"], "pending_review");
    }
    let (status, resp) = submit();
    assert_eq!(status, 429, "{resp}");
    assert_eq!(resp["error"]["code"], "review_queue_full");
    b.stop();
}

#[test]
fn a_sandbox_can_be_dropped_inside_async_code() {
    let (s, _) = sandbox();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move { drop(s) });
}
