//! Local commands: run a job without a server, the demo, policy check and data generation.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sluice_policy::{OperatorId, PolicyError};
use sluice_runtime::{
    InMemoryAccountant, JobOutput, JobRequest, PrivacyCost, Sandbox, SandboxConfig,
};

use crate::{Declared, print};

/// How `run` prints the report.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables for a terminal.
    Text,
    /// JSON.
    Json,
    /// CSV.
    Csv,
}

/// The sample jobs the demo runs: crate, operator, parameters.
pub const SAMPLES: &[(&str, &str, &str)] = &[
    (
        "sample-visits-by-district",
        "canal-analytics",
        "epsilon=0.4&min_age=18",
    ),
    ("sample-tourism-spend", "yangzhou-tourism-lab", "rho=0.5"),
    (
        "sample-tourism-per-person",
        "yangzhou-tourism-lab",
        "rho=0.25",
    ),
];

/// Samples with row functions, and the crate of their rows module (built beside them and
/// shipped inside their binary, as `sluice build` does).
pub const SAMPLE_ROWS: &[(&str, &str)] = &[(
    "sample-tourism-per-person",
    "sample-tourism-per-person-rows",
)];

/// The workspace this binary was built from.
pub fn workspace_root() -> PathBuf {
    // At run time under `cargo run` (the clone being used), else where this binary was built.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("broker/ has a parent")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the sample jobs with cargo and returns the path of each `.wasm`.
pub fn build_samples() -> Result<Vec<PathBuf>> {
    sluice_broker::build::ensure_wasm_target()?;
    let root = workspace_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root).args([
        "build",
        "--quiet",
        "--profile",
        "guest",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    for (pkg, _, _) in SAMPLES {
        cmd.args(["-p", pkg]);
    }
    for (_, rows) in SAMPLE_ROWS {
        cmd.args(["-p", rows]);
    }
    eprintln!("building the sample jobs (wasm32-unknown-unknown)…");
    let status = cmd
        .status()
        .context("while running cargo to build the sample jobs")?;
    if !status.success() {
        bail!("building the sample jobs failed");
    }
    let dir = target_dir(&root).join("wasm32-unknown-unknown/guest");
    let built = |pkg: &str| dir.join(format!("{}.wasm", pkg.replace('-', "_")));
    SAMPLES
        .iter()
        .map(|(pkg, _, _)| {
            let Some((_, rows)) = SAMPLE_ROWS.iter().find(|(job, _)| job == pkg) else {
                return Ok(built(pkg));
            };
            let shipped = dir.join(format!("{}.job.wasm", pkg.replace('-', "_")));
            sluice_broker::build::ship_rows(&built(pkg), &built(rows), &shipped)?;
            Ok(shipped)
        })
        .collect()
}

/// The default `--policy` of `run`.
pub const EXAMPLE_POLICY: &str = "policies/examples";

/// Loads the policy at `path`; the example policies compiled into this binary when `path` is
/// the default and there is no such folder here (outside this repository).
fn load_policy(path: &Path) -> Result<sluice_policy::Policy> {
    let path = if path == Path::new(EXAMPLE_POLICY) && !path.exists() {
        let embedded = sluice_broker::build::example_policies()?;
        eprintln!(
            "note: no {EXAMPLE_POLICY} here; using the example policies built into sluice ({})",
            embedded.display()
        );
        embedded
    } else {
        path.to_path_buf()
    };
    sluice_policy::load(&path).map_err(|e| match e {
        PolicyError::Invalid(p) => anyhow::anyhow!("the policy is invalid:\n{p}"),
        other => anyhow::anyhow!(other),
    })
}

fn print_output(name: &str, operator: &str, out: &JobOutput, format: Format) {
    match format {
        Format::Json => println!("{}", out.report.to_json()),
        Format::Csv => print!("{}", out.report.to_csv()),
        Format::Text => {
            println!("{}", print::report(&out.report));
            for l in &out.log {
                println!("  [job log {}] {}", l.level, l.message);
            }
            let spent = out
                .queries
                .iter()
                .fold(PrivacyCost::default(), |a, q| a.plus(q.cost));
            println!(
                "{name}: {} queries, {spent} spent by operator `{operator}`; component {} in {:.1} ms, ran in {:.1} ms",
                out.queries.len(),
                if out.cached { "from cache" } else { "compiled" },
                out.load_time.as_secs_f64() * 1e3,
                out.run_time.as_secs_f64() * 1e3,
            );
        }
    }
}

/// A local sandbox over `policy`, charging a fresh in-memory ledger; refuses an operator who
/// holds no grant in it (a typo would otherwise fail only at the first query).
fn local_sandbox(
    policy: &Path,
    operator: &str,
    data_root: &Path,
    mock: bool,
) -> Result<(Sandbox, OperatorId)> {
    let operator: OperatorId = operator.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let built_in = policy == Path::new(EXAMPLE_POLICY) && !policy.exists();
    let policy = load_policy(policy)?;
    // Outside this repository, the built-in example policies come with their demo data: a
    // first job is `sluice new`, `sluice build`, `sluice run`.
    if built_in && !mock {
        let wrote = sluice_datagen::ensure_demo_data(
            &data_root.join("data"),
            sluice_datagen::DEFAULT_ROWS,
            sluice_datagen::DEFAULT_SEED,
        )?;
        for path in wrote {
            eprintln!(
                "note: wrote the demo data the example policies read: {}",
                path.display()
            );
        }
    }
    if policy
        .granted_datasets(&operator, std::time::SystemTime::now())
        .is_empty()
    {
        let mut granted: Vec<String> = policy
            .grants
            .iter()
            .map(|g| format!("`{}`", g.operator))
            .collect();
        granted.sort();
        granted.dedup();
        bail!(
            "operator `{operator}` holds no grant in force in this policy; the operators it grants are: {}",
            granted.join(", ")
        );
    }
    let mut config = SandboxConfig::new(policy, data_root, Arc::new(InMemoryAccountant::new()))
        .with_compiled_dir(sluice_broker::build::cache_dir().join("compiled"));
    if mock {
        config = config.with_mock_data();
    }
    let sandbox = Sandbox::new(config).map_err(|e| match e {
        sluice_runtime::SandboxError::Data(d) => anyhow::anyhow!(
            "{d}\n(the example datasets are made by `sluice datagen`; or point --data-root at your data)"
        ),
        other => anyhow::anyhow!(other),
    })?;
    Ok((sandbox, operator))
}

/// A job request carrying `declared`, refused as the broker would refuse its submission when a
/// declared dataset's grant pins or forbids its parameters.
fn declared_request<'a>(
    policy: &sluice_policy::Policy,
    operator: OperatorId,
    job_id: String,
    wasm: &'a [u8],
    declared: &'a Declared,
) -> Result<JobRequest<'a>> {
    let mut req = JobRequest::new(operator.clone(), job_id, wasm, &declared.params);
    if !declared.datasets.is_empty() {
        let ids = declared
            .datasets
            .iter()
            .map(|d| sluice_policy::DatasetId::new(d).map_err(|e| anyhow::anyhow!(e)))
            .collect::<Result<Vec<_>>>()?;
        for id in &ids {
            let grant = policy
                .authorize_in(
                    &operator,
                    id,
                    declared.scenario.as_deref(),
                    std::time::SystemTime::now(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            grant
                .params
                .check(&declared.params)
                .map_err(|why| anyhow::anyhow!("on `{id}`: {why}"))?;
        }
        req.datasets = Some(ids);
    }
    req.max_epsilon = declared.max_epsilon;
    req.scenario = declared.scenario.clone();
    Ok(req)
}

/// `sluice run`.
pub fn run(
    policy: &Path,
    operator: &str,
    data_root: &Path,
    declared: &Declared,
    format: Format,
    job: &Path,
) -> Result<ExitCode> {
    let wasm = std::fs::read(job).with_context(|| format!("while reading {}", job.display()))?;
    let (sandbox, operator) = local_sandbox(policy, operator, data_root, false)?;
    if declared.datasets.is_empty() {
        eprintln!(
            "note: no --dataset declared, so the job may query any dataset granted to `{operator}`; `sluice submit` requires the list"
        );
    }
    let job_id = format!("local-{}", std::process::id());
    let req = declared_request(
        sandbox.engine().policy(),
        operator.clone(),
        job_id,
        &wasm,
        declared,
    )?;
    match sandbox.run_job(&req) {
        Ok(out) => {
            print_output(&job.display().to_string(), operator.as_str(), &out, format);
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            for l in &f.log {
                eprintln!("  [job log {}] {}", l.level, l.message);
            }
            let spent = f
                .queries
                .iter()
                .fold(PrivacyCost::default(), |a, q| a.plus(q.cost));
            if spent == PrivacyCost::default() {
                eprintln!("job failed: {} (no privacy budget spent)", f.error);
            } else {
                eprintln!("job failed: {} ({spent} spent before failing)", f.error);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sluice plan --policy`: the job's plan on mock data, against a fresh ledger (the full caps).
pub fn plan(
    policy: &Path,
    operator: &str,
    data_root: &Path,
    declared: &Declared,
    job: &Path,
    json: bool,
) -> Result<ExitCode> {
    let wasm = std::fs::read(job).with_context(|| format!("while reading {}", job.display()))?;
    let (sandbox, operator) = local_sandbox(policy, operator, data_root, true)?;
    let req = declared_request(
        sandbox.engine().policy(),
        operator,
        "plan".into(),
        &wasm,
        declared,
    )?;
    let plan = sandbox.plan_job(&req)?;
    let value = serde_json::to_value(&plan)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", print::plan(&job.display().to_string(), &value));
    }
    Ok(if plan.would_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The datasets each sample job declares.
fn sample_datasets(pkg: &str) -> Vec<String> {
    match pkg {
        "sample-tourism-spend" | "sample-tourism-per-person" => vec!["tourism_trips".into()],
        _ => vec!["health_visits".into()],
    }
}

/// The demo's emergency drill, as the health commission (a holder token): the alerts its
/// datasets raised, then a freeze of its datasets that refuses the next submission, then the
/// freeze lifted. Every step is an audit entry.
fn emergency_drill(url: &str, holder: &str, operator: &str, wasm: &[u8]) -> Result<()> {
    use sluice_broker::client::{Client, Submission};
    let holder = Client::new(url, holder);
    println!("\n=== emergency drill, as holder `city-health-commission` ===");
    let alerts = holder.get_json("/v1/admin/alerts")?;
    for a in alerts["alerts"].as_array().into_iter().flatten() {
        println!(
            "alert `{}`: operator `{}` has spent {:.0}% of its period cap on `{}` ({})",
            a["rule"].as_str().unwrap_or("?"),
            a["operator"].as_str().unwrap_or("?"),
            a["share"].as_f64().unwrap_or(0.0) * 100.0,
            a["dataset"].as_str().unwrap_or("?"),
            a["action"].as_str().unwrap_or("?"),
        );
    }
    let frozen = holder.post_json(
        "/v1/admin/freeze",
        &serde_json::json!({ "reason": "demo: incident drill" }),
    )?;
    println!(
        "froze {} ({})",
        frozen["scope"].as_str().unwrap_or("?"),
        frozen["datasets"]
    );
    let refused = Client::new(url, operator).submit(&Submission {
        wasm,
        purpose: "demo: during the drill",
        params: "",
        datasets: &["health_visits".to_string()],
        max_epsilon: None,
        scenario: None,
    });
    match refused {
        Err(e) => println!("a submission during the freeze is refused: {e:#}"),
        Ok(v) => bail!("a submission during the freeze was accepted: {v}"),
    }
    holder.post_json(
        "/v1/admin/unfreeze",
        &serde_json::json!({ "reason": "demo: drill over" }),
    )?;
    println!("unfroze: the holder's datasets take jobs again");
    Ok(())
}

/// Approves job `id` as the reviewer, then as the holder when its data's grade asks for the
/// holder's approval too (separated rights: both must approve before it runs).
fn approve(
    reviewer: &sluice_broker::client::Client,
    holder: &sluice_broker::client::Client,
    id: &str,
) -> Result<()> {
    let pending = reviewer.get_json("/v1/reviews")?;
    let listed = pending["pending"]
        .as_array()
        .is_some_and(|p| p.iter().any(|j| j["id"] == id));
    if !listed {
        bail!("job {id} needs review but the reviewer does not see it");
    }
    // The reviewer reads the job's risk report; the approval records its sha256.
    let risk = reviewer.get_json(&format!("/v1/jobs/{id}/risk"))?;
    print!("{}", print::risk(&risk));
    let after = reviewer.post_json(
        &format!("/v1/reviews/{id}/approve"),
        &serde_json::json!({ "reason": "demo: purpose matches the grant" }),
    )?;
    println!("reviewer `demo-reviewer` approved {id}");
    if after["state"] == "pending_review" {
        holder.post_json(
            &format!("/v1/reviews/{id}/approve"),
            &serde_json::json!({ "reason": "demo: the commission agrees" }),
        )?;
        println!("holder `city-health-commission` approved {id} (its data is graded important)");
    }
    Ok(())
}

/// The demo's held release: the holder holds the releases of its dataset, a job on it runs and
/// its report is held; a reviewer releases it; the hold is lifted. Then the filings of releases
/// from the (important) dataset, as the holder reads them.
fn held_release(
    url: &str,
    (reviewer, holder): (
        &sluice_broker::client::Client,
        &sluice_broker::client::Client,
    ),
    operator: &str,
    wasm: &[u8],
) -> Result<()> {
    use sluice_broker::client::{Client, Submission};
    println!("\n=== a held release, as holder `city-health-commission` and reviewer ===");
    holder.post_json(
        "/v1/admin/datasets/health_visits/hold",
        &serde_json::json!({ "reason": "demo: reports on health_visits wait for a reviewer" }),
    )?;
    println!("holder put a release hold on health_visits");
    let client = Client::new(url, operator);
    let submitted = client.submit(&Submission {
        wasm,
        purpose: "demo: sample analysis, again",
        params: SAMPLES[0].2,
        datasets: &["health_visits".to_string()],
        max_epsilon: None,
        scenario: None,
    })?;
    let id = submitted["id"].as_str().context("no job id")?.to_string();
    approve(reviewer, holder, &id)?;
    client.follow(&id, |_, _| {})?;
    let job = client.get_json(&format!("/v1/jobs/{id}"))?;
    if job["state"] != "held" {
        bail!("job {id} should be held, is {}", job["state"]);
    }
    println!("job {id} ran and is held: its report waits for a reviewer");
    reviewer.post_json(
        &format!("/v1/reviews/{id}/release"),
        &serde_json::json!({ "reason": "demo: report checked" }),
    )?;
    println!(
        "reviewer released it: {}",
        client.get_json(&format!("/v1/jobs/{id}"))?["state"]
    );
    holder.post_json(
        "/v1/admin/datasets/health_visits/unhold",
        &serde_json::json!({ "reason": "demo: hold over" }),
    )?;
    let filings = holder.get_json("/v1/filings")?;
    println!(
        "hold lifted; {} release(s) from health_visits filed (备案) for the regulator",
        filings["filings"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

/// `sluice demo`: an embedded broker on a loopback port; the samples go through it over HTTP.
/// What the month's use of the health commission's data comes to (revenue follows
/// contribution): its signed statement, verified and printed.
fn print_statement(
    holder: &sluice_broker::client::Client,
    zone: &sluice_policy::TimeZone,
    public_key: &str,
) -> Result<()> {
    let month = sluice_broker::statements::month_at(sluice_broker::audit::now_ms(), zone);
    let statement: sluice_broker::statements::Statement =
        serde_json::from_value(holder.get_json(&format!(
            "/v1/statements/holders/city-health-commission/{month}"
        ))?)?;
    statement.verify(&sluice_broker::keys::public_key(public_key)?)?;
    println!();
    print!("{}", print::statement(&statement));
    Ok(())
}

pub fn demo(rows: usize, data_root: &Path) -> Result<ExitCode> {
    use sluice_broker::client::{Client, Submission};
    use sluice_broker::server::{Config, Running};
    use sluice_broker::store::{Role, Store};

    let root = workspace_root();
    let wasm_paths = build_samples()?;
    let data = data_root.join("data");
    let wrote = sluice_datagen::ensure_demo_data(&data, rows, sluice_datagen::DEFAULT_SEED)?;
    for w in &wrote {
        eprintln!("generated {}", w.display());
    }
    let policy_dir = root.join("policies/examples");
    let zone = load_policy(&policy_dir)?.time_zone;

    // A fresh broker data directory: database, signing key, tokens.
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::init(&dir)?;
    let reviewer = store.create_token(Role::Reviewer, "demo-reviewer", "sluice demo")?;
    let holder = store.create_token(Role::Holder, "city-health-commission", "sluice demo")?;
    let mut operator_tokens = Vec::new();
    for (_, operator, _) in SAMPLES {
        operator_tokens.push(store.create_token(Role::Operator, operator, "sluice demo")?);
    }
    let public_key = store.public_key();
    drop(store);
    let data_root = std::fs::canonicalize(data_root).unwrap_or_else(|_| data_root.to_path_buf());
    let broker = Running::start(
        &dir,
        Config::new(policy_dir, data_root),
        Default::default(),
        "127.0.0.1:0",
    )
    .context("while starting the embedded broker")?;
    println!(
        "broker listening on {} (data directory {})",
        broker.url,
        dir.display()
    );
    let reviewer = Client::new(&broker.url, &reviewer);
    let holder_client = Client::new(&broker.url, &holder);

    for (((pkg, operator, params), path), token) in
        SAMPLES.iter().zip(&wasm_paths).zip(&operator_tokens)
    {
        let wasm =
            std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
        let client = Client::new(&broker.url, token);
        println!(
            "\n=== {pkg}: submitted over HTTP by operator `{operator}` (params `{params}`) ==="
        );
        let submitted = client.submit(&Submission {
            wasm: &wasm,
            purpose: "demo: sample analysis",
            params,
            datasets: &sample_datasets(pkg),
            max_epsilon: None,
            scenario: None,
        })?;
        let id = submitted["id"].as_str().context("no job id")?.to_string();
        println!("job {id}: {}", submitted["state"].as_str().unwrap_or("?"));
        if submitted["state"] == "pending_review" {
            approve(&reviewer, &holder_client, &id)?;
        }
        let mut progress = crate::remote::Progress::new(None);
        client.follow(&id, |kind, data| progress.show(kind, data))?;
        let job = client.get_json(&format!("/v1/jobs/{id}"))?;
        if job["state"] != "succeeded" {
            bail!("{pkg} did not succeed: {}", job["error"]);
        }
        let report = client.get_text(&format!("/v1/jobs/{id}/result"))?;
        let receipt: sluice_broker::keys::Receipt =
            serde_json::from_str(&client.get_text(&format!("/v1/jobs/{id}/receipt"))?)?;
        receipt.verify(
            &sluice_broker::keys::public_key(&public_key)?,
            report.as_bytes(),
        )?;
        println!(
            "{}",
            print::report(&sluice_runtime::Report::from_json(&report)?)
        );
        println!(
            "receipt verified: {} charged, report sha256 {}…, audit entry {}",
            PrivacyCost {
                epsilon: receipt.epsilon,
                delta: receipt.delta,
                rho: receipt.rho,
            },
            &receipt.report_sha256[..16],
            receipt.audit_seq
        );
    }
    let first_wasm = std::fs::read(&wasm_paths[0])?;
    emergency_drill(&broker.url, &holder, &operator_tokens[0], &first_wasm)?;
    held_release(
        &broker.url,
        (&reviewer, &holder_client),
        &operator_tokens[0],
        &first_wasm,
    )?;
    print_statement(&holder_client, &zone, &public_key)?;
    broker.stop()?;
    match crate::remote::verify_dir(&dir, None)? {
        Ok(v) => println!(
            "\naudit verify: OK, {} entries, hash chain intact, {} signed checkpoint(s) valid",
            v.entries, v.checkpoints
        ),
        Err(b) => bail!("audit verify failed: {b}"),
    }
    println!(
        "Every number above is a differentially private answer (OpenDP discrete Laplace or Gaussian noise, as each dataset's policy chooses); ± is the half-width of its 95% interval."
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// `sluice policy check`.
pub fn policy_check(path: &Path, data_root: Option<&Path>) -> Result<ExitCode> {
    match sluice_policy::load(path) {
        Ok(p) => {
            let missing = data_root.map_or_else(Vec::new, |root| missing_sources(&p, root));
            for m in &missing {
                eprintln!("{m}");
            }
            for w in expired_grants(&p) {
                eprintln!("warning: {w}");
            }
            if !missing.is_empty() {
                eprintln!("{} problem(s)", missing.len());
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "policy OK: {} dataset(s), {} grant(s) in {} file(s)",
                p.datasets.len(),
                p.grants.len(),
                p.files.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(PolicyError::Invalid(problems)) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s)", problems.0.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The sources of `policy`'s datasets and lookups that are not files under `root` (what
/// `serve` would refuse at start).
fn missing_sources(policy: &sluice_policy::Policy, root: &Path) -> Vec<String> {
    let sources = policy
        .datasets
        .values()
        .map(|d| ("dataset", d.id.as_str(), &d.source))
        .chain(
            policy
                .lookups
                .values()
                .map(|l| ("lookup", l.id.as_str(), &l.source)),
        );
    sources
        .filter_map(|(kind, id, source)| {
            let path = root.join(source);
            (!path.is_file()).then(|| {
                format!(
                    "{kind} `{id}`: source {} is not a file (resolved against --data-root {})",
                    path.display(),
                    root.display()
                )
            })
        })
        .collect()
}

/// The grants of `policy` that have expired: valid policy, dead letters.
fn expired_grants(policy: &sluice_policy::Policy) -> Vec<String> {
    let now = std::time::SystemTime::now();
    policy
        .grants
        .iter()
        .filter(|g| !policy.in_force(g, now))
        .map(|g| {
            format!(
                "the grant of {} to operator `{}`{} expired: it ran through {}",
                g.datasets
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                g.operator,
                g.scenario
                    .as_deref()
                    .map(|s| format!(" (scenario `{s}`)"))
                    .unwrap_or_default(),
                g.expires.describe(&policy.time_zone)
            )
        })
        .collect()
}

/// `sluice datagen`.
pub fn datagen(rows: usize, seed: u64, out: &Path) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    sluice_datagen::health_visits(&out.join("health_visits.parquet"), rows, seed)?;
    sluice_datagen::tourism_trips(&out.join("tourism_trips.parquet"), rows, seed)?;
    println!(
        "wrote {rows} rows each to {}/health_visits.parquet and {}/tourism_trips.parquet in {:.1} s",
        out.display(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
