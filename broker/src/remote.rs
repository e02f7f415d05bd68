//! Broker commands: set-up and serving (local files), and the operator/reviewer commands that
//! talk to a broker over HTTP.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sluice_broker::client::{Client, Submission};
use sluice_broker::keys::{self, Receipt};
use sluice_broker::server::{self, Broker, Config};
use sluice_broker::store::{self, Role, Store};
use sluice_runtime::Limits;

use crate::{Conn, Declared};

fn client(conn: &Conn) -> Result<Client> {
    match &conn.token {
        Some(token) => Ok(Client::new(&conn.url, token)),
        None => anyhow::bail!(
            "no token: pass --token or set SLUICE_TOKEN (an admin makes one with `sluice token create --role … --principal …`)"
        ),
    }
}

/// `sluice init`.
pub fn init(
    dir: &Path,
    policy: PathBuf,
    data_root: PathBuf,
    listen: String,
    key_file: Option<&Path>,
    public_register: bool,
) -> Result<ExitCode> {
    // Check the policy first: a data directory is never created for a policy that cannot load.
    sluice_policy::load(&policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::init_with_key(dir, key_file)?;
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let mut config = Config::new(abs(policy), abs(data_root));
    config.listen = listen;
    config.public_register = public_register;
    config.save(dir)?;
    let token = store.create_token(Role::Admin, "admin", "sluice init")?;
    println!("initialized {}", dir.display());
    println!("public key (give it to reviewers): {}", store.public_key());
    println!("admin token (shown once; keep it secret): {token}");
    Ok(ExitCode::SUCCESS)
}

/// `sluice token create`.
pub fn token_create(
    dir: &Path,
    role: Role,
    principal: &str,
    valid_for: std::time::Duration,
) -> Result<ExitCode> {
    let store = Store::open(dir)?;
    let token = store.create_token_valid_for(role, principal, "sluice token create", valid_for)?;
    println!("{token}");
    if let Some(w) = unknown_principal(dir, role, principal) {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a token for `principal` in `role` can do nothing under the broker's policy, if so: an
/// operator no grant names, a holder no dataset names.
fn unknown_principal(dir: &Path, role: Role, principal: &str) -> Option<String> {
    let config = server::Config::load(dir).ok()?;
    let policy = sluice_policy::load(&config.policy).ok()?;
    match role {
        Role::Operator
            if !policy
                .grants
                .iter()
                .any(|g| g.operator.as_str() == principal) =>
        {
            Some(format!(
                "no grant in {} names operator `{principal}`: the token works, but every query will be refused until one does",
                config.policy.display()
            ))
        }
        Role::Holder if policy.held_by(principal).next().is_none() => Some(format!(
            "no dataset in {} is held by `{principal}`: the token can act on nothing",
            config.policy.display()
        )),
        _ => None,
    }
}

/// A lifetime such as `90d` or `12h`.
pub fn parse_lifetime(s: &str) -> std::result::Result<std::time::Duration, String> {
    sluice_policy::duration_secs(s)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("`{s}`: write whole days or hours, e.g. 90d or 12h"))
}

/// `sluice token list`.
pub fn token_list(dir: &Path) -> Result<ExitCode> {
    let store = Store::open(dir)?;
    println!("{:<18} {:<10} {:<24} principal", "id", "role", "expires");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for t in store.tokens()? {
        let expires = match t.expires_ms {
            Some(ms) if ms <= now => format!("expired {}", crate::print::minute(ms)),
            Some(ms) => crate::print::minute(ms),
            None => "expired".into(),
        };
        println!("{:<18} {:<10} {expires:<24} {}", t.id, t.role, t.principal);
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice token revoke`.
pub fn token_revoke(dir: &Path, id: &str) -> Result<ExitCode> {
    Store::open(dir)?.revoke_token(id, "sluice token revoke")?;
    println!("revoked {id}");
    Ok(ExitCode::SUCCESS)
}

/// `sluice serve`: the listen address and the cluster's scheduler (with what to do when it is
/// down at start) override the config's.
pub fn serve(
    dir: &Path,
    listen: Option<String>,
    scheduler: Option<String>,
    when_unavailable: sluice_broker::config::WhenUnavailable,
) -> Result<ExitCode> {
    let mut config = Config::load(dir)?;
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(scheduler) = scheduler {
        config.cluster = Some(sluice_broker::config::ClusterConfig {
            scheduler,
            when_unavailable,
            connect_timeout_secs: 5,
        });
    }
    let addr = config.listen.clone();
    let broker = Broker::start(dir, config, Limits::default())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-http")
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "sluice broker listening on http://{}",
            listener.local_addr()?
        );
        server::serve(broker, listener, async {
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("install a SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("stopping: waiting for running jobs to finish");
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `submit --wait` (and the demo) shows of a job's events, each with the time since it
/// began to follow: queries counted (against the plan's count when there was one), cached
/// answers marked free, a reviewer's reason, the log, and how it ended.
pub struct Progress {
    started: std::time::Instant,
    queries: usize,
    planned: Option<usize>,
}

impl Progress {
    /// Progress from now; `planned` is the plan's count of queries, if the job was planned.
    pub fn new(planned: Option<usize>) -> Self {
        Self {
            started: std::time::Instant::now(),
            queries: 0,
            planned,
        }
    }

    /// Prints one event.
    pub fn show(&mut self, kind: &str, data: &Value) {
        let d = &data["detail"];
        let at = format!(
            "[+{}]",
            crate::print::duration(self.started.elapsed().as_millis() as i64)
        );
        let text = |k: &str| d[k].as_str().unwrap_or("?").escape_debug().to_string();
        match kind {
            "query" => {
                self.queries += 1;
                let n = match self.planned {
                    Some(p) if p >= self.queries => format!("{} of {p}", self.queries),
                    _ => self.queries.to_string(),
                };
                let cost = if d["cached"] == true {
                    "answered from the cache (free)".to_string()
                } else {
                    format!("charged {}", crate::print::cost(d))
                };
                eprintln!("  {at} query {n} on {}: {cost}", text("dataset"));
            }
            "released" => eprintln!(
                "  {at} released ({} spent, audit entry {})",
                crate::print::cost(d),
                d["audit_seq"]
            ),
            "failed" => eprintln!("  {at} failed: {}", text("error")),
            "log" => print_log(d),
            other if d["reason"].is_string() => eprintln!(
                "  {at} {} ({}: \"{}\")",
                other.replace('_', " "),
                d["reviewer"]
                    .as_str()
                    .or(d["role"].as_str())
                    .unwrap_or("reviewer"),
                text("reason")
            ),
            other => eprintln!("  {at} {}", other.replace('_', " ")),
        }
    }
}

/// A job's log lines, as `sluice logs` and `submit --wait` print them.
fn print_log(log: &Value) {
    for l in log["lines"].as_array().into_iter().flatten() {
        eprintln!(
            "  [job log {}] {}",
            l["level"].as_str().unwrap_or("?"),
            l["message"].as_str().unwrap_or("")
        );
    }
    match log["dropped"].as_u64() {
        Some(n) if n > 0 => eprintln!("  [job log] {n} more line(s) dropped by the log cap"),
        _ => {}
    }
}

/// `sluice datasets`: what the token may query (operators) or oversees (staff), with each
/// column a query may name.
pub fn datasets(conn: &Conn) -> Result<ExitCode> {
    let r = client(conn)?.get_json("/v1/datasets")?;
    let all = r["datasets"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        println!("no datasets granted to you");
    }
    for d in all {
        println!(
            "{} (holder {}, {}, {}; privacy unit {}, at most {} row(s) each)",
            d["name"].as_str().unwrap_or("?"),
            d["holder"].as_str().unwrap_or("?"),
            d["classification"].as_str().unwrap_or("?"),
            match d["privacy_measure"].as_str() {
                Some("zcdp") => "ρ-zCDP",
                _ => "ε-DP",
            },
            d["privacy_unit"].as_str().unwrap_or("?"),
            d["max_rows_per_unit"]
        );
        for c in d["columns"].as_array().into_iter().flatten() {
            let what = match (&c["public_values"], &c["bounds"], &c["bins"]) {
                (Value::Array(v), _, _) => format!("{} value(s)", v.len()),
                (_, Value::Array(b), Value::Array(bins)) => {
                    format!("bounds [{}, {}], {} bin edges", b[0], b[1], bins.len())
                }
                (_, Value::Array(b), _) => format!("bounds [{}, {}]", b[0], b[1]),
                _ if c["partition_selection"] == true => "keys by partition selection".into(),
                _ => "no public domain".into(),
            };
            println!(
                "  {:<24} {:<9} {what}",
                c["name"].as_str().unwrap_or("?"),
                c["kind"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice cancel`.
pub fn cancel(conn: &Conn, id: &str) -> Result<ExitCode> {
    let r = client(conn)?.post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))?;
    println!("{id}: {}", r["state"].as_str().unwrap_or("?"));
    Ok(ExitCode::SUCCESS)
}

/// `sluice logs`.
pub fn logs(conn: &Conn, id: &str) -> Result<ExitCode> {
    let log = client(conn)?.get_json(&format!("/v1/jobs/{id}/log"))?;
    if log["lines"].as_array().is_none_or(Vec::is_empty) {
        eprintln!("job {id} logged nothing");
    }
    print_log(&log);
    Ok(ExitCode::SUCCESS)
}

/// The submission of the wasm in `job` with `declared`.
fn submission<'a>(wasm: &'a [u8], purpose: &'a str, declared: &'a Declared) -> Submission<'a> {
    Submission {
        wasm,
        purpose,
        params: &declared.params,
        datasets: &declared.datasets,
        max_epsilon: declared.max_epsilon,
        scenario: declared.scenario.as_deref(),
    }
}

/// `sluice submit`.
pub fn submit(args: &crate::SubmitCmd) -> Result<ExitCode> {
    let (conn, job) = (&args.conn, args.job.as_path());
    if args.declared.datasets.is_empty() {
        anyhow::bail!("name the datasets the job will use with --dataset (repeat for several)");
    }
    let wasm = std::fs::read(job).with_context(|| format!("while reading {}", job.display()))?;
    let c = client(conn)?;
    let sub = submission(&wasm, &args.purpose, &args.declared);
    let mut planned = None;
    if !args.no_plan {
        let plan = c.plan(&sub)?;
        if !plan["problems"].as_array().is_none_or(Vec::is_empty) {
            eprint!("{}", crate::print::plan(&job.display().to_string(), &plan));
            eprintln!("nothing was submitted (submit with --no-plan to submit anyway)");
            return Ok(ExitCode::FAILURE);
        }
        let queries = plan["queries"].as_array().map_or(0, Vec::len);
        // A job whose queries depend on its answers may ask others: no count to show.
        planned = (plan["adaptive"] != true).then_some(queries);
        eprintln!(
            "planned on mock data: {queries} quer{}, {}; it would complete within its caps",
            if queries == 1 { "y" } else { "ies" },
            plan_totals(&plan),
        );
    }
    let r = c.submit(&sub)?;
    let id = r["id"].as_str().context("the broker returned no job id")?;
    println!("{id}");
    eprintln!("submitted {id} ({})", r["state"].as_str().unwrap_or("?"));
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut progress = Progress::new(planned);
    c.follow(id, |kind, data| progress.show(kind, data))?;
    let job = c.get_json(&format!("/v1/jobs/{id}"))?;
    if job["state"] != "succeeded" {
        return Ok(ExitCode::FAILURE);
    }
    if args.print {
        let report = c.get_text(&format!("/v1/jobs/{id}/result?format=json"))?;
        let report = sluice_runtime::Report::from_json(&report)
            .context("the broker's report does not parse")?;
        print!("\n{}", crate::print::report(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice query`: the built-in SQL job, submitted and (by default) followed to its answer.
pub fn query(args: &crate::QueryCmd) -> Result<ExitCode> {
    let conn = &args.conn;
    let c = client(conn)?;
    let r = c.post_json(
        "/v1/query",
        &json!({
            "purpose": args.purpose,
            "sql": args.sql,
            "epsilon": args.epsilon,
            "rho": args.rho,
            "accuracy": args.accuracy,
            "scenario": args.scenario,
        }),
    )?;
    let id = r["id"].as_str().context("the broker returned no job id")?;
    println!("{id}");
    eprintln!("submitted {id} ({})", r["state"].as_str().unwrap_or("?"));
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut progress = Progress::new(Some(1));
    c.follow(id, |kind, data| progress.show(kind, data))?;
    let job = c.get_json(&format!("/v1/jobs/{id}"))?;
    if job["state"] != "succeeded" {
        return Ok(ExitCode::FAILURE);
    }
    let report = c.get_text(&format!("/v1/jobs/{id}/result?format=json"))?;
    if conn.json {
        print!("{report}");
    } else {
        let report = sluice_runtime::Report::from_json(&report)
            .context("the broker's report does not parse")?;
        for (_, table) in &report.tables {
            print!("{}", crate::print::table(table));
            println!("  cost {}; {}", table.cost, table.mechanism);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A plan's totals in one line: `ε=0.9 on health_visits`.
fn plan_totals(plan: &Value) -> String {
    let totals: Vec<String> = plan["datasets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{}={} on {}",
                d["unit"].as_str().unwrap_or("ε"),
                sluice_runtime::sig(d["total"].as_f64().unwrap_or(0.0)),
                d["dataset"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if totals.is_empty() {
        "nothing spent".into()
    } else {
        totals.join(", ")
    }
}

/// Prints a plan (or its JSON) and exits 1 if it found a problem.
fn print_plan(name: &str, plan: &Value, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(plan)?);
    } else {
        print!("{}", crate::print::plan(name, plan));
    }
    Ok(if plan["problems"].as_array().is_none_or(Vec::is_empty) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `sluice plan JOB`: the broker's plan of a job not yet submitted.
pub fn plan(conn: &Conn, job: &Path, declared: &Declared, json: bool) -> Result<ExitCode> {
    if declared.datasets.is_empty() {
        anyhow::bail!("name the datasets the job will use with --dataset (repeat for several)");
    }
    let wasm = std::fs::read(job).with_context(|| format!("while reading {}", job.display()))?;
    let plan = client(conn)?.plan(&submission(&wasm, "plan", declared))?;
    print_plan(&job.display().to_string(), &plan, json)
}

/// `sluice plan --id`: the plan of a submitted job.
pub fn plan_submitted(conn: &Conn, id: &str, json: bool) -> Result<ExitCode> {
    let plan = client(conn)?.get_json(&format!("/v1/jobs/{id}/plan"))?;
    print_plan(&format!("job {id}"), &plan, json)
}

/// Prints `v` as pretty JSON.
fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `sluice status`.
pub fn status(conn: &Conn, id: Option<&str>) -> Result<ExitCode> {
    let c = client(conn)?;
    let v = match id {
        Some(id) => c.get_json(&format!("/v1/jobs/{id}"))?,
        None => c.get_json("/v1/jobs")?,
    };
    if conn.json {
        print_json(&v)?;
    } else if id.is_some() {
        print!("{}", crate::print::job(&v));
    } else {
        let list = v["jobs"].as_array().cloned().unwrap_or_default();
        print!("{}", crate::print::jobs(&list));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice result`: the report, or with `--plot` a chart of one of its tables.
pub fn result_or_plot(a: &crate::ResultArgs) -> Result<ExitCode> {
    match &a.plot {
        Some(plot) => self::plot(
            &a.conn,
            &a.id,
            plot,
            a.table.as_deref(),
            a.column.as_deref(),
        ),
        None => result(
            &a.conn,
            &a.id,
            a.output.as_deref(),
            a.csv,
            a.table.as_deref(),
        ),
    }
}

/// `sluice result`: the report as text (or JSON with `--json`, CSV with `--csv`), or written
/// to a file with its receipt beside it.
pub fn result(
    conn: &Conn,
    id: &str,
    output: Option<&Path>,
    csv: bool,
    table: Option<&str>,
) -> Result<ExitCode> {
    let c = client(conn)?;
    let fmt = if csv { "csv" } else { "json" };
    let report = c.get_text(&format!("/v1/jobs/{id}/result?format={fmt}"))?;
    if let Some(path) = output {
        let receipt = c.get_text(&format!("/v1/jobs/{id}/receipt"))?;
        std::fs::write(path, &report)
            .with_context(|| format!("while writing {}", path.display()))?;
        let rpath = receipt_path(path);
        std::fs::write(&rpath, &receipt)
            .with_context(|| format!("while writing {}", rpath.display()))?;
        eprintln!("wrote {} and {}", path.display(), rpath.display());
        return Ok(ExitCode::SUCCESS);
    }
    if csv {
        match table {
            Some(name) => print!("{}", csv_table(&report, name)?),
            None => print!("{report}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if conn.json {
        print!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut parsed =
        sluice_runtime::Report::from_json(&report).context("the broker's report does not parse")?;
    if let Some(name) = table {
        let names: Vec<String> = parsed.tables.iter().map(|(n, _)| n.clone()).collect();
        parsed.tables.retain(|(n, _)| n == name);
        if parsed.tables.is_empty() {
            anyhow::bail!(
                "the report has no table `{name}`; its tables: {}",
                names.join(", ")
            );
        }
        parsed.scalars.clear();
    }
    print!("{}", crate::print::report(&parsed));
    Ok(ExitCode::SUCCESS)
}

/// `sluice result --plot`: a released table drawn as an SVG bar chart with 95% error bars.
pub fn plot(
    conn: &Conn,
    id: &str,
    path: &Path,
    table: Option<&str>,
    column: Option<&str>,
) -> Result<ExitCode> {
    let text = client(conn)?.get_text(&format!("/v1/jobs/{id}/result?format=json"))?;
    let report =
        sluice_runtime::Report::from_json(&text).context("the broker's report does not parse")?;
    let names: Vec<&str> = report.tables.iter().map(|(n, _)| n.as_str()).collect();
    let (name, t) = match table {
        Some(want) => report.tables.iter().find(|(n, _)| n == want),
        None => report.tables.first(),
    }
    .with_context(|| format!("no such table; the report's tables: {}", names.join(", ")))?;
    let svg = sluice_broker::plot::svg(&format!("{} — {name}", report.title), t, column)?;
    std::fs::write(path, svg).with_context(|| format!("while writing {}", path.display()))?;
    eprintln!("wrote {} (table `{name}`)", path.display());
    Ok(ExitCode::SUCCESS)
}

/// One table's section of a report's CSV (the lines after its `# table: <name>` line), as a
/// CSV of its own.
fn csv_table(csv: &str, name: &str) -> Result<String> {
    let mut names = Vec::new();
    for section in csv.split("# table: ").skip(1) {
        let (title, body) = section.split_once('\n').unwrap_or((section, ""));
        if title == name {
            return Ok(body.trim_end_matches('\n').to_string() + "\n");
        }
        names.push(title.to_string());
    }
    anyhow::bail!(
        "the report has no table `{name}`; its tables: {}",
        names.join(", ")
    )
}

/// Where `result -o <file>` puts the receipt.
pub fn receipt_path(report: &Path) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".receipt.json");
    PathBuf::from(s)
}

/// `sluice usage`.
pub fn usage(conn: &Conn) -> Result<ExitCode> {
    let v = client(conn)?.get_json("/v1/admin/usage")?;
    if conn.json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v["usage"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            let cost = crate::print::cost(u);
            vec![
                u["dataset"].as_str().unwrap_or("?").to_string(),
                u["holder"].as_str().unwrap_or("-").to_string(),
                u["operator"].as_str().unwrap_or("?").to_string(),
                u["jobs"].to_string(),
                u["queries"].to_string(),
                cost.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("nothing charged yet");
    } else {
        print!(
            "{}",
            crate::print::columns(
                &[
                    "dataset", "holder", "operator", "jobs", "queries", "charged"
                ],
                &rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice reload`.
pub fn reload(conn: &Conn) -> Result<ExitCode> {
    let v = client(conn)?.post_json("/v1/admin/policy/reload", &json!({}))?;
    println!(
        "policy reloaded: sha256 {}",
        v["policy_sha256"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice budget`.
pub fn budget(conn: &Conn) -> Result<ExitCode> {
    let b = client(conn)?.get_json("/v1/budget")?;
    if conn.json {
        print_json(&b)?;
    } else {
        print!("{}", crate::print::budget(&b));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice estimate`.
pub fn estimate(
    conn: &Conn,
    sql: &str,
    [epsilon, rho, accuracy]: [Option<f64>; 3],
) -> Result<ExitCode> {
    let e = client(conn)?.post_json(
        "/v1/estimate",
        &json!({ "sql": sql, "epsilon": epsilon, "rho": rho, "accuracy": accuracy }),
    )?;
    let (unit, amount) = if e["rho"].as_f64().unwrap_or(0.0) > 0.0 {
        ("ρ", &e["rho"])
    } else {
        ("ε", &e["epsilon"])
    };
    println!(
        "dataset {}: would charge {unit}={} (δ={}) over {} noisy release(s); nothing was run or charged",
        e["dataset"].as_str().unwrap_or("?"),
        sluice_runtime::sig(amount.as_f64().unwrap_or(0.0)),
        e["delta"],
        e["releases"]
    );
    for col in e["accuracy"].as_array().into_iter().flatten() {
        match col[1].as_f64() {
            Some(a) => println!(
                "  {}: ±{} (95%)",
                col[0].as_str().unwrap_or("?"),
                sluice_runtime::sig(a)
            ),
            None => println!(
                "  {}: no interval before the data: a mean's or variance's is computed from the released noisy count and each answer cell carries it; a quantile's is a rank error, stated in the answer's mechanism",
                col[0].as_str().unwrap_or("?")
            ),
        }
    }
    Ok(budget_verdict(&e["budget"], unit))
}

/// What `sluice estimate` says of the cost against the grant; failure when it would not fit.
fn budget_verdict(b: &Value, unit: &str) -> ExitCode {
    if b.is_null() {
        return ExitCode::SUCCESS;
    }
    let f = |k: &str| sluice_runtime::sig(b[k].as_f64().unwrap_or(0.0));
    let over = |k: &str| b[k].as_f64().unwrap_or(0.0) > 0.0;
    if over("over_per_job") {
        println!(
            "would EXCEED the grant's per-job cap {unit}={} by {}",
            f("per_job"),
            f("over_per_job")
        );
    }
    if over("over_period") {
        println!(
            "would EXCEED what is left this period ({unit}={}) by {}",
            f("available_this_period"),
            f("over_period")
        );
    }
    if over("over_per_job") || over("over_period") {
        return ExitCode::FAILURE;
    }
    println!(
        "fits: per-job cap {unit}={}, {} left this period",
        f("per_job"),
        f("available_this_period")
    );
    ExitCode::SUCCESS
}

/// `sluice review wasm`: the job's wasm, written to `output`, and its sha256 checked against
/// the job's.
pub fn review_wasm(conn: &Conn, id: &str, output: &Path) -> Result<ExitCode> {
    let c = client(conn)?;
    let job = c.get_json(&format!("/v1/jobs/{id}"))?;
    let bytes = c.get_bytes(&format!("/v1/jobs/{id}/wasm"))?;
    let sha = keys::sha256_hex(&bytes);
    if job["wasm_sha256"].as_str() != Some(sha.as_str()) {
        anyhow::bail!(
            "the wasm the broker sent has sha256 {sha}, not the job's {}",
            job["wasm_sha256"]
        );
    }
    std::fs::write(output, &bytes)
        .with_context(|| format!("while writing {}", output.display()))?;
    println!(
        "wrote {} ({} bytes, sha256 {sha})",
        output.display(),
        bytes.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice review list`.
pub fn review_list(conn: &Conn) -> Result<ExitCode> {
    let r = client(conn)?.get_json("/v1/reviews")?;
    let pending = r["pending"].as_array().cloned().unwrap_or_default();
    let held = r["held"].as_array().cloned().unwrap_or_default();
    if pending.is_empty() {
        println!("no jobs pending review");
    }
    for j in held {
        println!(
            "{}  HELD  operator={} datasets={}: its operator or a dataset was suspended, or its releases held, while it ran; `sluice review release|discard {} --reason …`",
            j["id"].as_str().unwrap_or("?"),
            j["operator"].as_str().unwrap_or("?"),
            j["datasets"],
            j["id"].as_str().unwrap_or("?"),
        );
    }
    for j in pending {
        // Operator-controlled text is printed escaped: no control character reaches the
        // reviewer's terminal.
        let text = |k: &str| j[k].as_str().unwrap_or("").escape_debug().to_string();
        println!(
            "{}  operator={} datasets={} max_epsilon={} wasm_sha256={}\n    purpose: {}\n    params:  \"{}\"\n    plan:    sluice plan --id {}    (its queries, costs and caps, on mock data)",
            j["id"].as_str().unwrap_or("?"),
            j["operator"].as_str().unwrap_or("?"),
            j["datasets"],
            if j["max_epsilon"].is_null() {
                "grant's per-job cap".to_string()
            } else {
                j["max_epsilon"].to_string()
            },
            j["wasm_sha256"].as_str().unwrap_or("?"),
            text("purpose"),
            text("params"),
            j["id"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice alerts`.
pub fn alerts(conn: &Conn, follow: bool) -> Result<ExitCode> {
    let r = client(conn)?.get_json("/v1/admin/alerts")?;
    let mut alerts = r["alerts"].as_array().cloned().unwrap_or_default();
    alerts.reverse();
    if alerts.is_empty() && !follow {
        println!("no alerts");
    }
    let last = alerts.last().and_then(|a| a["id"].as_i64()).unwrap_or(0);
    for a in &alerts {
        println!("{}", alert_line(a));
    }
    if follow {
        client(conn)?.stream(&format!("/v1/admin/alerts/stream?after={last}"), |_, a| {
            println!("{}", alert_line(a));
            true
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One alert as `sluice alerts` prints it.
fn alert_line(a: &Value) -> String {
    format!(
        "#{} {}  rule={} dataset={} operator={} {} action={} (audit entry {})",
        a["id"],
        crate::print::minute(a["at_ms"].as_i64().unwrap_or(0)),
        a["rule"].as_str().unwrap_or("?"),
        a["dataset"].as_str().unwrap_or("?"),
        a["operator"].as_str().unwrap_or("?"),
        match a["when"].as_str() {
            Some("denials") => format!("refusals={}", a["share"]),
            _ => format!("share={:.0}%", a["share"].as_f64().unwrap_or(0.0) * 100.0),
        },
        a["action"].as_str().unwrap_or("?"),
        a["audit_seq"],
    )
}

/// `sluice suspend` and `sluice resume` (with `--releases`: a release hold and its lifting).
pub fn suspend(conn: &Conn, target: &crate::Target, on: bool, reason: &str) -> Result<ExitCode> {
    let action = match (target.releases, on) {
        (false, true) => "suspend",
        (false, false) => "resume",
        (true, true) => "hold",
        (true, false) => "unhold",
    };
    client(conn)?.post_json(
        &format!("/v1/admin/{}s/{}/{action}", target.kind, target.name),
        &json!({ "reason": reason }),
    )?;
    let what = match (target.releases, on) {
        (false, true) => "suspended: nothing more is answered",
        (false, false) => "resumed",
        (true, true) => "releases held: every report waits for a reviewer",
        (true, false) => "release hold lifted",
    };
    println!("{} `{}` {what}", target.kind, target.name);
    Ok(ExitCode::SUCCESS)
}

/// `sluice suspensions`.
pub fn suspensions(conn: &Conn) -> Result<ExitCode> {
    let r = client(conn)?.get_json("/v1/admin/suspensions")?;
    let all = r["suspensions"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        println!("no suspensions or release holds");
    }
    for s in all {
        let kind = s["kind"].as_str().unwrap_or("?");
        let what = match kind.strip_prefix("hold:") {
            Some(k) => format!("{k} {} releases held", s["name"].as_str().unwrap_or("?")),
            None if kind == "all" => "platform frozen".to_string(),
            None => format!("{kind} {} suspended", s["name"].as_str().unwrap_or("?")),
        };
        println!("{what}: {}", s["reason"].as_str().unwrap_or(""));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice freeze` and `sluice unfreeze`.
pub fn freeze(conn: &Conn, frozen: bool, reason: &str, holder: Option<&str>) -> Result<ExitCode> {
    let action = if frozen { "freeze" } else { "unfreeze" };
    let r = client(conn)?.post_json(
        &format!("/v1/admin/{action}"),
        &json!({ "reason": reason, "holder": holder }),
    )?;
    println!(
        "{} {}{}",
        if frozen { "frozen:" } else { "unfrozen:" },
        r["scope"].as_str().unwrap_or("?"),
        match r["datasets"].as_array() {
            Some(d) if !d.is_empty() => format!(" ({} dataset(s))", d.len()),
            _ => String::new(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice review approve|reject|release|discard`.
pub fn review(
    conn: &Conn,
    id: &str,
    decision: &str,
    reason: &str,
    allow: bool,
) -> Result<ExitCode> {
    let body = if allow {
        json!({ "reason": reason, "allow": true })
    } else {
        json!({ "reason": reason })
    };
    let c = client(conn)?;
    if decision == "approve" {
        // The approval is recorded with the job's risk report: make it (once) and show it.
        match c.get_json(&format!("/v1/jobs/{id}/risk")) {
            Ok(risk) => print!("{}", crate::print::risk(&risk)),
            Err(e) => eprintln!("warning: no risk report ({e:#}); the approval records none"),
        }
    }
    let r = c.post_json(&format!("/v1/reviews/{id}/{decision}"), &body)?;
    println!("{id}: {}", r["state"].as_str().unwrap_or("?"));
    Ok(ExitCode::SUCCESS)
}

fn read_key(arg: &str) -> Result<ed25519_dalek::VerifyingKey> {
    let text = if Path::new(arg).exists() {
        std::fs::read_to_string(arg).with_context(|| format!("while reading {arg}"))?
    } else {
        arg.to_string()
    };
    keys::public_key(&text)
}

/// Verifies a data directory's audit log; `Ok(Err(..))` when it is broken.
pub fn verify_dir(
    dir: &Path,
    public_key: Option<&str>,
) -> Result<std::result::Result<sluice_broker::audit::Verified, sluice_broker::audit::Broken>> {
    let key_arg = match public_key {
        Some(k) => k.to_string(),
        None => {
            let beside = dir.join("broker.pub");
            eprintln!(
                "warning: verifying with {}, which sits beside the database it vouches for: whoever can rewrite one can rewrite the other. Pass the public key you were given at `sluice init` with --public-key.",
                beside.display()
            );
            beside.display().to_string()
        }
    };
    let key = read_key(&key_arg)?;
    let conn = Store::open_conn_readonly(dir)?;
    sluice_broker::audit::verify(&conn, &key, Some(&store::checkpoint_path(dir)))
}

/// `sluice audit verify`.
pub fn audit_verify(dir: &Path, public_key: Option<&str>) -> Result<ExitCode> {
    match verify_dir(dir, public_key)? {
        Ok(v) => {
            println!(
                "audit log OK: {} entries, hash chain intact, {} signed checkpoint(s) valid (last at entry {})",
                v.entries,
                v.checkpoints,
                v.last_checkpoint.map_or("none".into(), |s| s.to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            eprintln!("{b}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sluice audit show`.
pub fn audit_show(
    conn: &Conn,
    job: Option<&str>,
    operator: Option<&str>,
    dataset: Option<&str>,
    limit: i64,
) -> Result<ExitCode> {
    let mut q = format!("/v1/audit?limit={}", limit.clamp(1, 1000));
    for (k, v) in [("job", job), ("operator", operator), ("dataset", dataset)] {
        if let Some(v) = v {
            q.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    let r = client(conn)?.get_json(&q)?;
    if conn.json {
        print_json(&r)?;
    } else {
        let entries = r["entries"].as_array().cloned().unwrap_or_default();
        print!("{}", crate::print::audit(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `sluice new`.
pub fn new_job(dir: &Path, lang: &str, rows: bool) -> Result<ExitCode> {
    let lang = match lang {
        "rust" => sluice_broker::build::Lang::Rust,
        _ => sluice_broker::build::Lang::Python,
    };
    sluice_broker::build::new(dir, lang, rows)?;
    let d = dir.display();
    if rows {
        println!(
            "wrote {d} (the job) and {d}/rows (its row function). Next:\n  sluice build {d}        # builds both; prints the path of <job>.job.wasm\n  sluice run --operator yangzhou-tourism-lab --dataset tourism_trips <wasm>"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "wrote {d}. Next:\n  sluice build {d}        # prints the path of the job's wasm\n  sluice run --operator canal-analytics --dataset health_visits <wasm>\n  sluice plan --policy policies/examples --operator canal-analytics --dataset health_visits <wasm>"
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice build`.
pub fn build_job(dir: &Path) -> Result<ExitCode> {
    let wasm = sluice_broker::build::build(dir)?;
    println!("{}", wasm.display());
    Ok(ExitCode::SUCCESS)
}

/// `sluice filings export`.
pub fn filings_export(conn: &Conn, since: Option<&str>, output: Option<&Path>) -> Result<ExitCode> {
    let path = match since {
        Some(d) => format!("/v1/filings?since={d}"),
        None => "/v1/filings".into(),
    };
    let v = client(conn)?.get_json(&path)?;
    let export: sluice_broker::filings::FilingExport =
        serde_json::from_value(v.clone()).context("the broker's answer is not a filings export")?;
    if export.filings.is_empty() {
        println!("no filings ({})", export.scope);
    }
    for f in &export.filings {
        print_filing(f);
    }
    if let Some(out) = output {
        std::fs::write(out, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("while writing {}", out.display()))?;
        println!("signed export written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_filing(f: &sluice_broker::filings::Filing) {
    let r = &f.receipt;
    let datasets: Vec<String> = f
        .terms
        .datasets
        .iter()
        .map(|d| format!("{} ({}, {})", d.name, d.classification, d.holder))
        .collect();
    println!(
        "filing {}  {}  job {} by {}{}  ε={} ρ={} δ={}  datasets: {}",
        f.number,
        crate::print::minute(f.filed_ms),
        r.job,
        r.operator,
        r.scenario
            .as_deref()
            .map(|s| format!(" under {s}"))
            .unwrap_or_default(),
        r.epsilon,
        r.rho,
        r.delta,
        datasets.join(", ")
    );
}

/// `sluice filings verify`.
pub fn filings_verify(export: &Path, public_key: &str) -> Result<ExitCode> {
    let key = read_key(public_key)?;
    let e: sluice_broker::filings::FilingExport = serde_json::from_slice(
        &std::fs::read(export).with_context(|| format!("while reading {}", export.display()))?,
    )
    .context("the file is not a filings export (JSON)")?;
    match e.verify(&key) {
        Ok(n) => {
            println!(
                "filings OK: {n} filing(s), scope {}, since {}, every receipt signed by the same key",
                e.scope,
                crate::print::minute(e.since_ms)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("filings INVALID: {err:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sluice register resource|licence|product`.
pub fn register(conn: &Conn, body: &Value, output: Option<&Path>) -> Result<ExitCode> {
    let v = client(conn)?.post_json("/v1/registry", body)?;
    show_certificate(conn, &v, output)
}

/// Prints a certificate (or its JSON) and writes it to `output`.
fn show_certificate(conn: &Conn, v: &Value, output: Option<&Path>) -> Result<ExitCode> {
    if conn.json {
        print_json(v)?;
    } else {
        let c: sluice_broker::registry::Certificate = serde_json::from_value(v.clone())
            .context("the broker's answer is not a certificate")?;
        print!("{}", crate::print::record(&c.registration));
    }
    if let Some(out) = output {
        std::fs::write(out, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("while writing {}", out.display()))?;
        eprintln!("signed certificate written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice register change|transfer|object|cancel`.
pub fn registry_step(
    conn: &Conn,
    number: &str,
    step: &str,
    reason: &str,
    to: Option<&str>,
) -> Result<ExitCode> {
    let v = client(conn)?.post_json(
        &format!("/v1/registry/{}/{step}", urlencode(number)),
        &serde_json::json!({ "reason": reason, "to": to }),
    )?;
    if conn.json {
        print_json(&v)?;
    } else {
        let r: sluice_broker::registry::Record =
            serde_json::from_value(v).context("the broker's answer is not a record")?;
        print!("{}", crate::print::record(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice certificate get`.
pub fn certificate_get(conn: &Conn, number: &str, output: Option<&Path>) -> Result<ExitCode> {
    let v = client(conn)?.get_json(&format!("/v1/registry/{}/certificate", urlencode(number)))?;
    show_certificate(conn, &v, output)
}

/// `sluice certificate verify`.
pub fn certificate_verify(
    path: &Path,
    public_key: &str,
    url: Option<&str>,
    token: Option<&str>,
) -> Result<ExitCode> {
    let key = read_key(public_key)?;
    let c: sluice_broker::registry::Certificate = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?,
    )
    .context("the file is not a certificate (JSON)")?;
    if let Err(e) = c.verify(&key) {
        eprintln!("certificate INVALID: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    let r = &c.registration;
    println!(
        "certificate OK: {} ({} of {}, version {}), issued by {} and signed by the key given",
        r.number,
        r.kind.as_str(),
        r.owner,
        r.version,
        c.issuer.name
    );
    let Some(url) = url else {
        println!("(pass --url to ask the broker whether the record still stands)");
        return Ok(ExitCode::SUCCESS);
    };
    let number = urlencode(&r.number);
    let v = match token {
        Some(t) => Client::new(url, t).get_json(&format!("/v1/registry/{number}"))?,
        None => Client::new(url, "").get_json(&format!("/public/registry/{number}"))?,
    };
    let now: sluice_broker::registry::Record =
        serde_json::from_value(v).context("the broker's answer is not a record")?;
    match now.status.as_str() {
        "cancelled" => {
            let when = now
                .events
                .iter()
                .rev()
                .find(|e| e.kind == "cancel")
                .map(|e| format!(" on {} ({})", crate::print::minute(e.at_ms), e.reason))
                .unwrap_or_default();
            eprintln!(
                "certificate REVOKED: record {} was cancelled{when}",
                r.number
            );
            Ok(ExitCode::FAILURE)
        }
        status => {
            println!("the record stands: {status}, version {}", now.version);
            if now.version > r.version {
                println!(
                    "note: this certificate is of version {}; the record has changed since (`sluice certificate get {}`)",
                    r.version, r.number
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sluice statement get`.
pub fn statement_get(
    conn: &Conn,
    party: sluice_broker::statements::Party<'_>,
    month: &str,
    output: Option<&Path>,
) -> Result<ExitCode> {
    use sluice_broker::statements::Party;
    let path = match party {
        Party::Holder(h) => format!(
            "/v1/statements/holders/{}/{}",
            urlencode(h),
            urlencode(month)
        ),
        Party::Operator(o) => {
            format!(
                "/v1/statements/operators/{}/{}",
                urlencode(o),
                urlencode(month)
            )
        }
    };
    let v = client(conn)?.get_json(&path)?;
    if conn.json {
        print_json(&v)?;
    } else {
        let s: sluice_broker::statements::Statement =
            serde_json::from_value(v.clone()).context("the broker's answer is not a statement")?;
        print!("{}", crate::print::statement(&s));
    }
    if let Some(out) = output {
        std::fs::write(out, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("while writing {}", out.display()))?;
        eprintln!("signed statement written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice statement verify`.
pub fn statement_verify(path: &Path, public_key: &str) -> Result<ExitCode> {
    let key = read_key(public_key)?;
    let s: sluice_broker::statements::Statement = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?,
    )
    .context("the file is not a statement (JSON)")?;
    match s.verify(&key) {
        Ok(()) => {
            println!(
                "statement OK: {} {}, {}, {} line(s), fees {} CNY ({} CNY earmarked), signed by the key given",
                s.kind,
                s.party,
                s.month,
                s.lines.len(),
                crate::print::cny(s.totals.used.fee_fen),
                crate::print::cny(s.totals.used.earmark_fen)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("statement INVALID: {err:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sluice receipt verify`.
pub fn receipt_verify(receipt: &Path, report: &Path, public_key: &str) -> Result<ExitCode> {
    let key = read_key(public_key)?;
    let r: Receipt = serde_json::from_slice(
        &std::fs::read(receipt).with_context(|| format!("while reading {}", receipt.display()))?,
    )
    .context("the receipt is not valid JSON")?;
    let bytes =
        std::fs::read(report).with_context(|| format!("while reading {}", report.display()))?;
    match r.verify(&key, &bytes) {
        Ok(()) => {
            println!(
                "receipt OK: job {} released to {} under policy {}, ε={} δ={}, audit entry {}",
                r.job,
                r.operator,
                &r.policy_sha256[..16],
                r.epsilon,
                r.delta,
                r.audit_seq
            );
            if let Some(sc) = &r.scenario {
                println!("  scenario: {sc}");
            }
            if let Some(p) = &r.purpose {
                println!("  purpose: {p}");
            }
            if !r.reviewers.is_empty() {
                println!("  reviewed by: {}", r.reviewers.join(", "));
            }
            if !r.recipients.is_empty() {
                println!("  recipients: {}", r.recipients.join(", "));
            }
            if let Some(risk) = &r.risk_report_sha256 {
                println!("  approved on risk report sha256 {risk}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("receipt INVALID: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
