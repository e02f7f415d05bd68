//! `sluice bench console`: how long each console page takes to load from a local broker that
//! holds 1,100 jobs (100 waiting for review) and 10,000 audit entries, against a `/healthz` round trip in the same run.
//!
//! A page's load is what the browser fetches for it, one request after another (a browser
//! overlaps some, so this is an upper bound): the page and its two files, `GET /v1/me`, then the
//! API calls that page makes (the same ones `console/app.js` makes). Rendering in the browser is
//! not included; the browser test (`tests/src/console.rs`) shows the pages render.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice_broker::client::{Client, Submission};
use sluice_broker::server::{Config, Running};
use sluice_broker::store::{Role, Store};

use crate::bench::{BrokerWorld, ms, percentile};

/// Jobs the broker holds: run to the end, then waiting for review.
const JOBS: usize = 1000;
const PENDING: usize = 100;
/// Audit entries it holds at least.
const AUDIT_ENTRIES: i64 = 10_000;
/// Loads per page.
const LOADS: usize = 25;
/// The bar a page must meet.
const BAR: Duration = Duration::from_millis(200);

/// One console page: who opens it and what it fetches after the shell.
struct Page {
    name: &'static str,
    token: String,
    calls: Vec<String>,
}

/// `sluice bench console`.
pub fn console() -> Result<ExitCode> {
    let world = BrokerWorld::new(10_000)?;
    let dir = world.work.join("console");
    let store = Store::init(&dir)?;
    let tokens = [
        (Role::Operator, "canal-analytics"),
        (Role::Reviewer, "rita"),
        (Role::Admin, "root"),
        (Role::Holder, "city-health-commission"),
    ]
    .map(|(role, who)| store.create_token(role, who, "bench"));
    let [operator, reviewer, admin, holder] = tokens;
    let (operator, reviewer, admin, holder) = (operator?, reviewer?, admin?, holder?);
    drop(store);
    let mut config = Config::new(world.work.join("policy"), world.work.clone());
    config.max_queued = JOBS as i64 + 8;
    config.max_pending_reviews = PENDING as i64;
    config.max_pending_reviews_per_operator = PENDING as i64;
    let running = Running::start(&dir, config.clone(), Default::default(), "127.0.0.1:0")?;
    let job = fill(&world, &running.url, &operator)?;
    running.stop()?;
    let entries = top_up_audit(&dir)?;
    // The grant now asks for review: the last jobs wait in the queue.
    let policy = world.work.join("policy/health.toml");
    let text = std::fs::read_to_string(&policy)?;
    std::fs::write(
        &policy,
        text.replace(r#"review = "none""#, r#"review = "required""#),
    )?;
    let running = Running::start(&dir, config, Default::default(), "127.0.0.1:0")?;
    let url = running.url.clone();
    queue(&world, &url, &operator)?;
    let pages = [
        Page {
            name: "operator: jobs",
            token: operator.clone(),
            calls: vec!["/v1/jobs".into()],
        },
        Page {
            name: "operator: one job (report, log, events)",
            token: operator.clone(),
            calls: ["", "/result", "/log", "/events"]
                .map(|s| format!("/v1/jobs/{job}{s}"))
                .into(),
        },
        Page {
            name: "operator: budget",
            token: operator.clone(),
            calls: vec!["/v1/budget".into()],
        },
        Page {
            name: "reviewer: review queue",
            token: reviewer.clone(),
            calls: vec!["/v1/reviews".into()],
        },
        Page {
            name: "reviewer: jobs",
            token: reviewer.clone(),
            calls: vec!["/v1/jobs".into()],
        },
        Page {
            name: "reviewer: audit log (first 100)",
            token: reviewer.clone(),
            calls: vec!["/v1/audit?limit=100&after=0".into()],
        },
        Page {
            name: "reviewer: audit log filtered by job",
            token: reviewer.clone(),
            calls: vec![format!("/v1/audit?limit=100&after=0&job={job}")],
        },
        datasets_page("admin: datasets", admin),
        datasets_page("holder: datasets", holder.clone()),
    ];
    let baseline = timed(LOADS, || get(&url, None, "/healthz"))?;
    let mut rows = Vec::new();
    for page in &pages {
        let t = timed(LOADS, || load(&url, page))?;
        rows.push((page.name, t));
    }
    let verify = timed(5, || get(&url, Some(&reviewer), "/v1/audit/verify"))?;
    running.stop()?;
    print(JOBS + PENDING, entries, &baseline, &rows, &verify);
    let _ = std::fs::remove_dir_all(&world.work);
    let slow = rows
        .iter()
        .filter(|(_, t)| percentile(t, 0.5) > BAR)
        .count();
    Ok(if slow == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn datasets_page(name: &'static str, token: String) -> Page {
    Page {
        name,
        token,
        calls: [
            "/v1/datasets",
            "/v1/admin/usage",
            "/v1/admin/suspensions",
            "/v1/admin/alerts",
            "/v1/datasets/health_visits/spend",
        ]
        .map(String::from)
        .into(),
    }
}

/// Runs `JOBS` real jobs through the broker (8 clients), so that it holds their records,
/// charges, events and audit entries; the id of one of them.
fn fill(world: &BrokerWorld, url: &str, token: &str) -> Result<String> {
    let client = Client::new(url, token);
    let datasets = vec!["health_visits".to_string()];
    let next = std::sync::atomic::AtomicUsize::new(0);
    eprintln!("running {JOBS} jobs to fill the broker…");
    let ids = std::thread::scope(|s| -> Result<Vec<String>> {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (c, next, datasets) = (client.clone(), &next, &datasets);
                s.spawn(move || -> Result<Vec<String>> {
                    let mut ids = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= JOBS {
                            return Ok(ids);
                        }
                        let r = c.submit(&Submission {
                            wasm: &world.wasm,
                            purpose: "console benchmark",
                            params: &BrokerWorld::params(i),
                            datasets,
                            max_epsilon: None,
                            scenario: None,
                        })?;
                        let id = r["id"].as_str().context("no id")?.to_string();
                        c.follow(&id, |_, _| {})?;
                        ids.push(id);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))??,
            );
        }
        Ok(all)
    })?;
    ids.into_iter().next().context("no job ran")
}

/// Submits `PENDING` jobs that wait for review, and waits for the last one's risk report (made
/// in the background, one at a time).
fn queue(world: &BrokerWorld, url: &str, token: &str) -> Result<()> {
    let client = Client::new(url, token);
    let mut last = String::new();
    for i in 0..PENDING {
        let r = client.submit(&Submission {
            wasm: &world.wasm,
            purpose: "console benchmark, waiting for review",
            params: &BrokerWorld::params(JOBS + i),
            datasets: &["health_visits".to_string()],
            max_epsilon: None,
            scenario: None,
        })?;
        anyhow::ensure!(
            r["state"] == "pending_review",
            "not waiting for review: {r}"
        );
        last = r["id"].as_str().context("no id")?.to_string();
    }
    client.get_json(&format!("/v1/jobs/{last}/risk"))?;
    Ok(())
}

/// Adds entries through the store until the log holds `AUDIT_ENTRIES`; how many it holds.
fn top_up_audit(dir: &std::path::Path) -> Result<i64> {
    let store = Store::open(dir)?;
    let mut n = store.audit_len()?;
    while n < AUDIT_ENTRIES {
        store.record(
            sluice_broker::audit::NewEntry::new("bench.entry", "bench")
                .detail(serde_json::json!({ "n": n })),
        )?;
        n += 1;
    }
    Ok(n)
}

fn get(url: &str, token: Option<&str>, path: &str) -> Result<()> {
    let mut r = ureq::get(&format!("{url}{path}"));
    if let Some(t) = token {
        r = r.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = r.call().with_context(|| format!("GET {path}"))?;
    resp.body_mut().read_to_vec()?;
    Ok(())
}

/// One page load: the shell, who am I, then the page's calls.
fn load(url: &str, page: &Page) -> Result<()> {
    for path in ["/", "/console/app.js", "/console/app.css"] {
        get(url, None, path)?;
    }
    get(url, Some(&page.token), "/v1/me")?;
    for call in &page.calls {
        get(url, Some(&page.token), call)?;
    }
    Ok(())
}

/// `n` timings of `f`, sorted.
fn timed(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed());
    }
    t.sort();
    Ok(t)
}

fn print(
    jobs: usize,
    entries: i64,
    baseline: &[Duration],
    rows: &[(&str, Vec<Duration>)],
    verify: &[Duration],
) {
    let base = percentile(baseline, 0.5);
    println!(
        "\nconsole page loads from a local broker holding {jobs} jobs and {entries} audit entries ({LOADS} loads each; shell + /v1/me + the page's API calls, sequential)"
    );
    println!(
        "{:<42} {:>9} {:>9} {:>12} {:>6}",
        "page", "p50 ms", "p95 ms", "× /healthz", "≤200ms"
    );
    println!(
        "{:<42} {:>9.2} {:>9.2} {:>12} {:>6}",
        "GET /healthz (baseline)",
        ms(base),
        ms(percentile(baseline, 0.95)),
        "1.0",
        "-"
    );
    for (name, t) in rows {
        let p50 = percentile(t, 0.5);
        println!(
            "{:<42} {:>9.2} {:>9.2} {:>12.1} {:>6}",
            name,
            ms(p50),
            ms(percentile(t, 0.95)),
            p50.as_secs_f64() / base.as_secs_f64(),
            if p50 <= BAR { "yes" } else { "NO" }
        );
    }
    println!(
        "{:<42} {:>9.2} {:>9.2} {:>12.1} {:>6}",
        "action: verify the whole audit log",
        ms(percentile(verify, 0.5)),
        ms(percentile(verify, 0.95)),
        percentile(verify, 0.5).as_secs_f64() / base.as_secs_f64(),
        "-"
    );
}
