//! A hostile job. Its parameter names the attack; each has a test in `tests/src/hostile.rs` that
//! names the error it expects.

use std::hint::black_box;

use sluice_guest::{Error, Job, Report, Result};

/// Recursion that lives on the wasm stack (no locals in linear memory), so it overflows the
/// engine's stack limit rather than Rust's shadow stack in linear memory.
fn recurse(n: u64) -> u64 {
    if black_box(n) == u64::MAX {
        return 0;
    }
    black_box(recurse(n + 1)).wrapping_mul(3) ^ n
}

fn hostile(ctx: &mut Job) -> Result<Report> {
    let attack = ctx.params().to_string();
    let (name, arg) = attack.split_once(':').unwrap_or((attack.as_str(), ""));
    match name {
        // Burns CPU forever: must hit the fuel limit (or, with unlimited fuel, the wall clock).
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        // Allocates without end: must hit the memory limit.
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 16 << 20];
                chunk[0] = 1;
                hoard.push(black_box(chunk));
            }
        }
        // Recurses without end: must hit the stack limit.
        "recursion" => Ok(Report::new(format!("{}", recurse(0)))),
        // Returns a report of `arg` MiB: must hit the report cap.
        "big-report" => {
            let mib: usize = arg.parse().unwrap_or(300);
            Ok(Report::new("big").text("x".repeat(mib << 20)))
        }
        // Returns a report whose text is `arg` bytes.
        "big-report-bytes" => {
            let n: usize = arg.parse().unwrap_or(1 << 20);
            Ok(Report::new("big").text("x".repeat(n)))
        }
        // Tries to read a host file. There is no filesystem to reach.
        "open-file" => match std::fs::read_to_string("/etc/passwd") {
            Ok(s) => Ok(Report::new("stolen").text(s)),
            Err(e) => Err(Error::msg(format!("open-file: {e}"))),
        },
        // Tries to read the host environment. There is none.
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            if vars.is_empty() {
                Err(Error::msg("env: no environment visible"))
            } else {
                Ok(Report::new("stolen").text(vars.join("\n")))
            }
        }
        // Asks queries until refused: must hit the query limit.
        "query-spam" => loop {
            ctx.query("SELECT COUNT(*) AS n FROM health_visits")
                .epsilon(0.001)
                .run()?;
        },
        // Asks distinct queries until one is refused (a suspension, a cap), catches the refusal
        // and returns a report built from the answers before it: the release gate must hold it.
        "until-refused" => {
            let mut answered = 0u32;
            loop {
                let sql = format!("SELECT COUNT(*) AS n FROM health_visits WHERE age > {answered}");
                match ctx.query(&sql).epsilon(0.01).run() {
                    Ok(_) => answered += 1,
                    Err(e) => {
                        return Ok(Report::new("built from earlier answers")
                            .text(format!("{answered} answers before: {e}")));
                    }
                }
            }
        }
        // Asks `arg` = `N:sql` N times, catching each refusal, and reports how many were refused
        // (a job probing what the policy allows: the `denials` alert rule must notice).
        "probe" => {
            let (n, sql) = arg.split_once(':').unwrap_or(("10", arg));
            let n: u32 = n.parse().unwrap_or(10);
            let refused = (0..n)
                .filter(|_| ctx.query(sql).epsilon(0.01).run().is_err())
                .count();
            Ok(Report::new("probed").text(format!("{refused} of {n} refused")))
        }
        // Panics: a trap.
        "panic" => panic!("hostile job panicked on purpose"),
        // Queries with the given SQL, ε 0.1, and reports the answer.
        "sql" => {
            let t = ctx.query(arg).epsilon(0.1).run()?;
            Ok(Report::new("answer").table("answer", &t))
        }
        // Estimates the SQL at a ±50 target, then runs it at that target: reports both costs.
        // (One query estimated, logged about, then run: the SDK's `Query` borrows the job
        // shared, so this compiles.)
        "accuracy" => {
            let q = ctx.query(arg).accuracy(50.0);
            let e = q.estimate()?;
            ctx.log(format!("estimated ε {}", e.cost.epsilon));
            let t = q.run()?;
            let first = t.columns()[t.key_columns()].clone();
            Ok(Report::new("accuracy")
                .scalar("estimated epsilon", e.cost.epsilon, None)
                .scalar(
                    "estimated half-width",
                    e.accuracy[0].1.unwrap_or(f64::NAN),
                    None,
                )
                .scalar("charged epsilon", t.cost().epsilon, None)
                .scalar(
                    "released half-width",
                    t.accuracy(0, &first).unwrap_or(f64::NAN),
                    None,
                ))
        }
        // Builds its second query from its first answer: a job whose queries depend on the
        // data (a plan must say its queries are not a forecast).
        "adaptive" => {
            let t = ctx
                .query("SELECT AVG(cost) AS m FROM health_visits")
                .epsilon(0.1)
                .run()?;
            let mean = t.number(0, "m").unwrap_or(0.0);
            let sql = format!("SELECT COUNT(*) AS n FROM health_visits WHERE cost > {mean:.6}");
            ctx.query(&sql).epsilon(0.1).run()?;
            Ok(Report::new("adaptive"))
        }
        // Spams the log.
        "log-spam" => {
            for i in 0..100_000 {
                ctx.log(format!("line {i} {}", "y".repeat(100)));
            }
            Ok(Report::new("logged"))
        }
        // Puts markup everywhere a job controls text: title, text, table name, column name,
        // scalar name, log lines. A page that shows the report must show it as text.
        "markup" => {
            const SCRIPT: &str = "<script>window.__pwned = 'script'</script>";
            const IMG: &str = "<img src=x onerror=\"window.__pwned = 'img'\">";
            const LINK: &str = "<a href=\"javascript:window.__pwned = 'link'\">open me</a>";
            ctx.log(format!("log line {SCRIPT}"));
            ctx.log(format!("log line {IMG} {LINK}"));
            let t = ctx
                .query(
                    "SELECT district, COUNT(*) AS \"<img src=x onerror=window.__pwned=1>\" \
                     FROM health_visits GROUP BY district",
                )
                .epsilon(0.5)
                .run()?;
            Ok(Report::new(format!("Title {SCRIPT}"))
                .text(format!("Text {IMG}"))
                .text(format!("Link {LINK} javascript:window.__pwned='text'"))
                .table(format!("Table {IMG}"), &t)
                .scalar(format!("Scalar {SCRIPT}"), 1.0, Some(0.5)))
        }
        other => Err(Error::InvalidParams(format!("unknown attack `{other}`"))),
    }
}

sluice_guest::job!(hostile);
