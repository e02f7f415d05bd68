//! The `sluice` command line as a user sees it: exit codes and the text it prints.

use std::process::Command;

fn sluice(args: &[&str]) -> (i32, String, String) {
    sluice_in(manifest_dir().parent().unwrap(), args)
}

/// `sluice args` run in `dir`.
fn sluice_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    // Help texts print these variables' values, and colour can be forced: neither is ours.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(args)
        .env_remove("SLUICE_URL")
        .env_remove("SLUICE_TOKEN")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The job developer's documented path, from an empty folder outside this repository: scaffold,
/// build, run (which writes the demo data), plan; and the plan of an over-cap job refused (exit 1) before anything
/// is spent. The plan texts are goldens.
#[test]
fn a_job_developer_goes_from_an_empty_folder_to_a_planned_run() {
    let dir = temp_dir("job-dev");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (code, stdout, stderr) = sluice_in(&dir, &["new", "visits", "--lang", "rust"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("wrote visits. Next:"), "{stdout}");
    // The SDK is vendored into the folder: nothing points back at this repository.
    let manifest = std::fs::read_to_string(dir.join("visits/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"sluice-guest = { path = "sluice-guest" }"#),
        "{manifest}"
    );
    let wasm = build_job(&dir, "visits", "visits.wasm");
    // Three commands: the run writes the demo data the built-in example policies read.
    let run = [
        "run",
        "--operator",
        "canal-analytics",
        "--dataset",
        "health_visits",
        &wasm,
    ];
    let (code, stdout, stderr) = sluice_in(&dir, &run);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Visits by district"), "{stdout}");
    assert!(
        stderr.contains("using the example policies built into sluice"),
        "{stderr}"
    );
    std::fs::copy(&wasm, dir.join("job.wasm")).unwrap();
    let plan = |params: &str| {
        sluice_in(
            &dir,
            &[
                "plan",
                "--policy",
                "policies/examples",
                "--operator",
                "canal-analytics",
                "--dataset",
                "health_visits",
                "--params",
                params,
                "job.wasm",
            ],
        )
    };
    let mut out = String::new();
    for params in ["epsilon=0.5", "epsilon=2"] {
        let (code, stdout, _) = plan(params);
        out.push_str(&format!(
            "$ sluice plan … --params {params} job.wasm\nexit {code}\n{stdout}\n"
        ));
    }
    golden("plan.expected", &out);
    // A dataset the operator holds no grant on is refused before the job runs, as the broker
    // refuses the submission.
    let (code, _, stderr) = sluice_in(
        &dir,
        &[
            "plan",
            "--policy",
            "policies/examples",
            "--operator",
            "canal-analytics",
            "--dataset",
            "tourism_trips",
            "job.wasm",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`tourism_trips` is not granted to operator `canal-analytics`"),
        "{stderr}"
    );
    the_operator_runs_it_on_a_broker(&dir, &dir.join("job.wasm"));
    // A million rows of demo data: not left behind.
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same job through a broker, by the CLI an operator uses: submit (planned first) and wait,
/// then status, result, budget and the audit log, each as people read it (goldens, with ids,
/// times, hashes and noisy figures masked).
fn the_operator_runs_it_on_a_broker(dir: &std::path::Path, wasm: &std::path::Path) {
    use sluice_broker::server::{Config, Running};
    use sluice_broker::store::{Role, Store};
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    // Internal data: no reviewer or holder approval stands between submit and result here.
    let health = std::fs::read_to_string(manifest_dir().join("../policies/examples/health.toml"))
        .unwrap()
        .replacen(
            r#"classification = "important""#,
            r#"classification = "internal""#,
            1,
        );
    std::fs::write(dir.join("policy/health.toml"), health).unwrap();
    let state = dir.join("state");
    let (operator, auditor, holder) = {
        let store = Store::init(&state).unwrap();
        let t = |role, p: &str| store.create_token(role, p, "cli test").unwrap();
        (
            t(Role::Operator, "canal-analytics"),
            t(Role::Auditor, "city-audit-office"),
            t(Role::Holder, "city-health-commission"),
        )
    };
    let broker = Running::start(
        &state,
        Config::new(dir.join("policy"), dir.to_path_buf()),
        Default::default(),
        "127.0.0.1:0",
    )
    .unwrap();
    let url = broker.url.clone();
    let run = |token: &str, args: &[&str]| {
        sluice_in(
            dir,
            &[args, &["--url", url.as_str(), "--token", token][..]].concat(),
        )
    };
    let shown = |token: &str, args: &[&str]| {
        let (code, stdout, stderr) = run(token, args);
        format!(
            "$ sluice {}\nexit {code}\n{stdout}{stderr}\n",
            args.join(" ")
        )
    };
    let wasm = wasm.to_str().unwrap();
    let (code, stdout, stderr) = run(
        &operator,
        &[
            "submit",
            wasm,
            "--purpose",
            "visits per district",
            "--dataset",
            "health_visits",
            "--params",
            "epsilon=0.5",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let id = stdout.trim().to_string();
    let mut out = format!("$ sluice submit … --wait\nexit {code}\n{stdout}{stderr}\n");
    out.push_str(&shown(&operator, &["status", &id]));
    out.push_str(&shown(&operator, &["status"]));
    out.push_str(&mask_numbers(&mask(
        &shown(&operator, &["result", &id]),
        wasm,
        dir,
    )));
    out.push_str(&shown(&operator, &["budget"]));
    out.push_str(&shown(&auditor, &["audit", "show", "--job", &id]));
    out.push_str(&shown(&auditor, &["usage"]));
    // The month's statement (the operator's invoice view), then checked offline.
    let month = sluice_broker::statements::month_at(
        sluice_broker::audit::now_ms(),
        &sluice_policy::TimeZone::default(),
    );
    let file = dir.join("statement.json");
    let file = file.to_str().unwrap();
    let got = shown(
        &operator,
        &[
            "statement",
            "get",
            "--operator",
            "canal-analytics",
            "--month",
            &month,
            "-o",
            file,
        ],
    );
    out.push_str(&mask_numbers(&mask(
        &got.replace(&month, "<month>"),
        wasm,
        dir,
    )));
    let key = state.join("broker.pub");
    let (code, stdout, stderr) = sluice_in(
        dir,
        &[
            "statement",
            "verify",
            file,
            "--public-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    out.push_str(&format!(
        "$ sluice statement verify statement.json --public-key broker.pub\nexit {code}\n{}{stderr}\n",
        stdout.replace(&month, "<month>")
    ));
    // The released table as a chart: one bar per district, each with its 95% interval.
    let svg = dir.join("visits.svg");
    let (code, _, stderr) = run(&operator, &["result", &id, "--plot", svg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<rect x=").count(), 9, "{svg}");
    assert_eq!(
        svg.matches("<path d=").count(),
        9,
        "an error bar per bar: {svg}"
    );
    out.push_str(&the_holder_registers_and_cancels(
        dir, &url, &holder, &state,
    ));
    golden("daily_path.expected", &mask(&out, wasm, dir));
    broker.stop().unwrap();
}

/// A holder registers its dataset and gets a certificate that verifies offline and, asked, is
/// still standing; one changed byte breaks it; cancelled, it is reported revoked.
fn the_holder_registers_and_cancels(
    dir: &std::path::Path,
    url: &str,
    holder: &str,
    state: &std::path::Path,
) -> String {
    let cert = dir.join("cert.json");
    let (cert, key) = (cert.to_str().unwrap(), state.join("broker.pub"));
    let key = key.to_str().unwrap();
    let conn = ["--url", url, "--token", holder];
    let mut out = String::new();
    let mut number = String::new();
    let mut step = |what: &str, args: &[&str], want: i32| -> String {
        let (code, stdout, stderr) = sluice_in(dir, args);
        assert_eq!(code, want, "{what}: {stdout}{stderr}");
        if number.is_empty() {
            number = stdout.split_whitespace().next().unwrap_or("").to_string();
        }
        let shown = format!("$ {what}\nexit {code}\n{stdout}{stderr}\n");
        let shown = mask_minutes(&shown.replace(&number, "DR-NUMBER"));
        out.push_str(&mask(&shown, "\u{0}", dir));
        stdout
    };
    let registered = step(
        "sluice register resource health_visits -o cert.json",
        &[
            &["register", "resource", "health_visits", "-o", cert][..],
            &conn,
        ]
        .concat(),
        0,
    );
    let number = registered.split_whitespace().next().unwrap().to_string();
    assert!(number.starts_with("DR-"), "{registered}");
    step(
        "sluice certificate verify cert.json --public-key broker.pub --url URL --token …",
        &[
            &["certificate", "verify", cert, "--public-key", key][..],
            &conn,
        ]
        .concat(),
        0,
    );
    let text = std::fs::read_to_string(cert).unwrap();
    std::fs::write(cert, text.replacen("\"version\": 1", "\"version\": 2", 1)).unwrap();
    step(
        "sluice certificate verify cert.json --public-key broker.pub   # one byte changed",
        &["certificate", "verify", cert, "--public-key", key],
        1,
    );
    std::fs::write(cert, text).unwrap();
    step(
        "sluice register cancel DR-… --reason \"dataset withdrawn\"",
        &[
            &[
                "register",
                "cancel",
                &number,
                "--reason",
                "dataset withdrawn",
            ][..],
            &conn,
        ]
        .concat(),
        0,
    );
    step(
        "sluice certificate verify cert.json --public-key broker.pub --url URL --token …",
        &[
            &["certificate", "verify", cert, "--public-key", key][..],
            &conn,
        ]
        .concat(),
        1,
    );
    out
}

/// `text` with what changes from run to run masked: job ids, times, durations, hashes, paths.
fn mask(text: &str, wasm: &str, dir: &std::path::Path) -> String {
    let text = text
        .replace(wasm, "job.wasm")
        .replace(dir.to_str().unwrap(), "DIR");
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
                match core.strip_prefix("job-") {
                    Some(h) if h.len() == 16 && hex(h) => w.replace(h, "ID"),
                    _ if core.len() == 64 && hex(core) => w.replace(core, "SHA256"),
                    _ => w.to_string(),
                }
            })
            .collect();
        out.push_str(&mask_sizes(&mask_hex(&mask_times(&words.join(" ")))));
        out.push('\n');
    }
    out
}

/// Every `2026-11-30 07:50 UTC` as `MINUTE`.
fn mask_minutes(text: &str) -> String {
    let shape = "dddd-dd-dd dd:dd UTC";
    let chars: Vec<char> = text.chars().collect();
    let fits = |at: usize| {
        shape.chars().enumerate().all(|(i, s)| {
            chars.get(at + i).is_some_and(|&c| match s {
                'd' => c.is_ascii_digit(),
                other => c == other,
            })
        })
    };
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if fits(i) {
            out.push_str("MINUTE");
            i += shape.len();
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Every run of 64 hex digits (a sha256, in JSON or text) as `SHA256`.
fn mask_hex(line: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in line.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() == 64 { "SHA256" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// `…_bytes=123` as `…_bytes=N`: sizes of builds and of noisy reports.
fn mask_sizes(line: &str) -> String {
    line.split("  ")
        .map(|field| match field.split_once("_bytes=") {
            Some((k, _)) => format!("{k}_bytes=N"),
            None => field.to_string(),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// `2026-11-30 07:50:12 UTC` as `TIME`, and `(waited 0.1 s)`-style spans as `<waited D>`.
fn mask_times(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(" UTC") {
        let start = at.saturating_sub(19);
        let stamp = rest.as_bytes().get(start..at).unwrap_or_default();
        if stamp.len() == 19 && stamp[4] == b'-' && stamp[13] == b':' {
            out.push_str(&rest[..start]);
            out.push_str("TIME");
        } else {
            out.push_str(&rest[..at + 4]);
        }
        rest = &rest[at + 4..];
    }
    out.push_str(rest);
    while let Some(at) = out.find("[+") {
        let end = out[at..].find(']').map_or(out.len(), |e| at + e + 1);
        out.replace_range(at..end, "<+T>");
    }
    for word in ["waited", "ran"] {
        while let Some(at) = out.find(&format!("({word} ")) {
            let end = out[at..].find(')').map_or(out.len(), |e| at + e + 1);
            out.replace_range(at..end, &format!("<{word} D>"));
        }
    }
    out
}

/// Every number in `text` as `N`, and runs of spaces or dashes as one: a noisy report's shape
/// (its column widths follow its noisy values).
fn mask_numbers(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            if !((c == ' ' || c == '-') && out.ends_with(c)) {
                out.push(c);
            }
        }
    }
    out
}

/// Compares `actual` with `tests/golden/<name>` (`SLUICE_BLESS=1` rewrites it).
fn golden(name: &str, actual: &str) {
    let path = manifest_dir().join("tests/golden").join(name);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with SLUICE_BLESS=1", path.display()));
    assert_eq!(actual, expected, "{name} changed (SLUICE_BLESS=1 if meant)");
}

#[test]
fn policy_check_accepts_the_examples() {
    let (code, stdout, _) = sluice(&["policy", "check", "policies/examples"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "policy OK: 2 dataset(s), 2 grant(s) in 3 file(s)\n");
}

#[test]
fn policy_check_finds_missing_sources_under_a_data_root_and_warns_on_expired_grants() {
    let dir = temp_dir("check");
    let empty = dir.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, stdout, stderr) = sluice(&[
        "policy",
        "check",
        "policies/examples",
        "--data-root",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("dataset `health_visits`: source ")
            && stderr.contains("is not a file (resolved against --data-root")
            && stderr.ends_with("2 problem(s)\n"),
        "{stderr}"
    );
    let expired = dir.join("expired");
    std::fs::create_dir_all(&expired).unwrap();
    let health = std::fs::read_to_string(manifest_dir().join("../policies/examples/health.toml"))
        .unwrap()
        .replace("expires = 2027-12-31", "expires = 2020-01-01");
    std::fs::write(expired.join("health.toml"), health).unwrap();
    let (code, stdout, stderr) = sluice(&["policy", "check", expired.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "policy OK: 1 dataset(s), 1 grant(s) in 1 file(s)\n");
    assert_eq!(
        stderr,
        "warning: the grant of `health_visits` to operator `canal-analytics` (scenario `district-health-planning`) expired: it ran through 2020-01-01 23:59:59 Asia/Shanghai\n"
    );
}

#[test]
fn policy_check_lists_every_problem_and_fails() {
    let (code, stdout, stderr) = sluice(&[
        "policy",
        "check",
        "policies/tests/golden/many_problems.toml",
    ]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    let golden = std::fs::read_to_string(
        manifest_dir().join("../policies/tests/golden/many_problems.expected"),
    )
    .unwrap();
    // Same problems as the library reports, with the path as given, then a count.
    let expected: String = golden
        .lines()
        .map(|l| format!("policies/tests/golden/{l}\n"))
        .collect::<String>()
        + &format!("{} problem(s)\n", golden.lines().count());
    assert_eq!(stderr, expected);
}

/// A job with a row function from an empty folder outside this repository: `sluice new --rows`,
/// `sluice build` (both crates, the rows module shipped inside the job), `sluice run`.
#[test]
fn a_job_developer_scaffolds_builds_and_runs_a_row_function() {
    let dir = temp_dir("rows-dev");
    let _ = std::fs::remove_dir_all(dir.join("pp"));
    let (code, stdout, stderr) = sluice_in(&dir, &["new", "pp", "--lang", "rust", "--rows"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("pp/rows (its row function)"), "{stdout}");
    let rows = std::fs::read_to_string(dir.join("pp/rows/Cargo.toml")).unwrap();
    assert!(
        rows.contains(r#"sluice-guest = { path = "../sluice-guest" }"#),
        "{rows}"
    );
    let (code, _, stderr) = sluice_in(&dir, &["new", "py", "--rows"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("row functions are written in Rust"),
        "{stderr}"
    );
    let wasm = build_job(&dir, "pp", "pp.job.wasm");
    let run = [
        "run",
        "--operator",
        "yangzhou-tourism-lab",
        "--dataset",
        "tourism_trips",
        &wasm,
    ];
    let (code, stdout, stderr) = sluice_in(&dir, &run);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("Spend per person by scenic spot"),
        "{stdout}"
    );
    assert!(stdout.contains("per_person(spend, group_size)"), "{stdout}");
}

/// `sluice build <job>` in `dir`, asserting it succeeds and prints a path ending in `ends`;
/// returns the path. Job builds share one target directory across test runs (the SDK's
/// dependencies compile once).
fn build_job(dir: &std::path::Path, job: &str, ends: &str) -> String {
    let build = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(["build", job])
        .env(
            "CARGO_TARGET_DIR",
            std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("sluice-test-job-target")),
        )
        .output()
        .unwrap();
    let wasm = String::from_utf8_lossy(&build.stdout).trim().to_string();
    assert!(
        build.status.success() && wasm.ends_with(ends),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    wasm
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_refuses_to_start_when_the_policy_sources_are_missing() {
    let dir = temp_dir("nodata");
    let job = dir.join("job.wasm");
    std::fs::write(&job, b"hello").unwrap();
    let (code, _, stderr) = sluice(&[
        "run",
        "--operator",
        "canal-analytics",
        "--data-root",
        dir.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    // Every missing source in one error, and where the demo data comes from.
    assert!(
        stderr.starts_with("error: 2 problem(s) with the policy's sources:\n  - dataset `health_visits`: cannot read source")
            && stderr.contains("\n  - dataset `tourism_trips`: cannot read source")
            && stderr.contains("made by `sluice datagen`"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_invalid_wasm_with_a_clear_message() {
    let dir = temp_dir("badwasm");
    let data = dir.join("data");
    let (code, stdout, _) = sluice(&["datagen", "--rows", "2000", "--out", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("wrote 2000 rows each to"), "{stdout}");
    let job = dir.join("job.wasm");
    std::fs::write(&job, b"hello").unwrap();
    let (code, stdout, stderr) = sluice(&[
        "run",
        "--operator",
        "canal-analytics",
        "--data-root",
        dir.to_str().unwrap(),
        "--dataset",
        "health_visits",
        job.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr,
        "job failed: invalid wasm: not a WebAssembly binary (missing the \\0asm header) (no privacy budget spent)\n"
    );
}

#[test]
fn unknown_subcommands_fail_with_usage() {
    let (code, _, stderr) = sluice(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{stderr}"
    );
}

/// This package's directory, read when the test runs (cargo sets it), not when it was compiled: a
/// shared target directory can reuse a test binary built from another clone of the repository.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[test]
fn init_then_audit_verify_passes_and_catches_an_edit() {
    let dir = temp_dir("audit");
    let data = dir.join("state");
    let _ = std::fs::remove_dir_all(&data);
    let (code, stdout, stderr) = sluice(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--policy",
        "policies/examples",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("admin token (shown once"), "{stdout}");
    let (code, _, stderr) = sluice(&[
        "token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--role",
        "operator",
        "--principal",
        "canal-analytics",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "a granted operator: {stderr}");
    // A token for an operator no grant names works, but says it will be refused.
    let (code, _, stderr) = sluice(&[
        "token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--role",
        "operator",
        "--principal",
        "nobody-granted",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.starts_with("warning: no grant in ")
            && stderr.contains("policies/examples names operator `nobody-granted`"),
        "{stderr}"
    );
    let (code, stdout, stderr) = sluice(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("audit log OK: 4 entries"), "{stdout}");
    // Not silently: the key beside the database is trusted only with a warning.
    assert!(
        stderr.starts_with("warning: verifying with ") && stderr.contains("--public-key"),
        "{stderr}"
    );
    let public = std::fs::read_to_string(data.join("broker.pub")).unwrap();
    let (code, _, stderr) = sluice(&[
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
        "--public-key",
        public.trim(),
    ]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let (code, list, _) = sluice(&["token", "list", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(!list.contains("sluice_"), "tokens are never listed: {list}");
    let ops: Vec<&str> = list
        .lines()
        .filter(|l| l.ends_with("canal-analytics"))
        .collect();
    assert_eq!(ops.len(), 1, "{list}");
    let id = ops[0].split_whitespace().next().unwrap();
    let (code, _, stderr) = sluice(&["token", "revoke", "--data-dir", data.to_str().unwrap(), id]);
    assert_eq!(code, 0, "{stderr}");
    let (_, list, _) = sluice(&["token", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(!list.contains("canal-analytics"), "{list}");
    let (code, _, stderr) = sluice(&["token", "revoke", "--data-dir", data.to_str().unwrap(), id]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no token with id"), "{stderr}");

    let conn = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    conn.execute(
        "UPDATE audit SET body = replace(body, 'canal-analytics', 'someone-else') WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, _, stderr) = sluice(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("verification failed at seq 3"), "{stderr}");
    // A second init never overwrites a data directory.
    let (code, _, stderr) = sluice(&["init", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already"), "{stderr}");
}

/// `init --key-file` keeps the signing key away from the database it signs for: the data
/// directory holds only where it is, and every command finds it there.
#[test]
fn the_signing_key_can_live_outside_the_data_directory() {
    let dir = temp_dir("keyfile");
    let data = dir.join("state");
    let key = dir.join("secrets/broker.key");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&key);
    let (code, _, stderr) = sluice(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--policy",
        "policies/examples",
        "--key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(key.is_file() && !data.join("broker.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
    }
    // Commands that sign find the key where init put it.
    let (code, _, stderr) = sluice(&[
        "token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--role",
        "reviewer",
        "--principal",
        "rita",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // Without it, the data directory cannot be opened to sign anything.
    std::fs::rename(&key, dir.join("moved.key")).unwrap();
    let (code, _, stderr) = sluice(&[
        "token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--role",
        "reviewer",
        "--principal",
        "rita",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("secrets/broker.key"), "{stderr}");
}

/// Every text a person reads from the command line that does not depend on data, a clock or a
/// random token: help of each command, and the errors of common mistakes. Compared with
/// `tests/golden/cli.expected`; `SLUICE_BLESS=1` rewrites it (the switch every golden uses).
#[test]
fn cli_texts_read_as_before() {
    let cases: &[&[&str]] = &[
        &["--help"],
        &["run", "--help"],
        &["submit", "--help"],
        &["plan", "--help"],
        &["estimate", "--help"],
        &["serve", "--help"],
        &["token", "create", "--help"],
        &["review", "approve", "--help"],
        &["audit", "verify", "--help"],
        &["receipt", "verify", "--help"],
        &["policy", "check", "--help"],
        &["run", "--operator", "canal-analytics", "no-such-job.wasm"],
        &["policy", "check", "no-such-policy"],
        &[
            "status",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "job-0000000000000000",
        ],
        &[
            "audit",
            "verify",
            "--data-dir",
            "no-such-dir",
            "--public-key",
            "00",
        ],
        &["frobnicate"],
    ];
    let mut out = String::new();
    for args in cases {
        let (code, stdout, stderr) = sluice(args);
        out.push_str(&format!(
            "$ sluice {}\nexit {code}\n--- stdout\n{stdout}--- stderr\n{stderr}\n",
            args.join(" ")
        ));
    }
    golden("cli.expected", &out);
}

#[test]
fn operator_verbs_speak_to_a_running_broker_in_plain_text() {
    use sluice_broker::server::{Config, Running};
    use sluice_broker::store::{Role, Store};
    let dir = temp_dir("remote");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    sluice_datagen::health_visits(&dir.join("data/health_visits.parquet"), 2_000, 7).unwrap();
    for f in ["health.toml", "grades.toml"] {
        std::fs::copy(
            manifest_dir().join("../policies/examples").join(f),
            dir.join("policy").join(f),
        )
        .unwrap();
    }
    let state = dir.join("state");
    let token = Store::init(&state)
        .and_then(|s| s.create_token(Role::Operator, "canal-analytics", "cli test"))
        .unwrap();
    let broker = Running::start(
        &state,
        Config::new(dir.join("policy"), dir.clone()),
        Default::default(),
        "127.0.0.1:0",
    )
    .unwrap();
    let conn = ["--url", broker.url.as_str(), "--token", token.as_str()];
    let with = |args: &[&str]| sluice(&[args, &conn[..]].concat());

    let (code, out, err) = with(&["datasets"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("health_visits (holder city-health-commission, important, ε-DP; privacy unit person_id, at most 5 row(s) each)\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  district                 category  9 value(s)\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  cost                     float     bounds [0.0, 20000.0]\n"),
        "{out}"
    );

    // An estimate says whether the cost fits the grant, and fails when it does not.
    let sql = "SELECT COUNT(*) AS n FROM health_visits";
    let (code, out, _) = with(&["estimate", sql, "--epsilon", "0.5"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\nfits: per-job cap ε=1, 10 left this period\n"),
        "{out}"
    );
    let (code, out, _) = with(&["estimate", sql, "--epsilon", "5"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("would EXCEED the grant's per-job cap ε=1 by 4"),
        "{out}"
    );

    let (code, _, err) = with(&["cancel", "job-0000000000000000"]);
    assert_eq!(code, 1);
    assert!(err.contains("no job `job-0000000000000000`"), "{err}");
    broker.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
