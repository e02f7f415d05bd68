//! Plain-text rendering of reports for a terminal.

use std::fmt::Write as _;

use sluice_runtime::{NoisyTable, Report, Value};

fn cell(v: &Value, acc: Option<f64>) -> String {
    let v = match v {
        Value::Null => "(suppressed)".to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:.2}"),
        Value::Text(s) => s.clone(),
    };
    match acc {
        Some(a) if a.is_finite() => format!("{v} ±{}", sluice_runtime::sig(a)),
        _ => v,
    }
}

/// A table with aligned columns; aggregate cells carry their 95% half-width.
pub fn table(t: &NoisyTable) -> String {
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .enumerate()
                .map(|(c, v)| {
                    cell(
                        v,
                        t.accuracy.get(r).and_then(|a| a.get(c).copied().flatten()),
                    )
                })
                .collect()
        })
        .collect();
    let header: Vec<&str> = t.columns.iter().map(String::as_str).collect();
    columns(&header, &rows)
}

/// A whole report.
pub fn report(r: &Report) -> String {
    let mut out = format!("{}\n", r.title);
    if !r.text.is_empty() {
        let _ = writeln!(out, "{}", r.text);
    }
    for (name, t) in &r.tables {
        let _ = writeln!(out, "\n{name} (cost {}):", t.cost);
        out.push_str(&table(t));
        if !t.mechanism.is_empty() {
            let _ = writeln!(out, "  mechanism: {}", t.mechanism);
        }
    }
    if !r.scalars.is_empty() {
        out.push('\n');
        for s in &r.scalars {
            let _ = writeln!(
                out,
                "{}: {}",
                s.name,
                match s.accuracy {
                    Some(a) => format!("{:.3} ±{a:.1}", s.value),
                    None => format!("{:.3}", s.value),
                }
            );
        }
    }
    out
}

/// A job's plan (the JSON of [`sluice_runtime::plan::JobPlan`], from the broker or a local
/// run): every query with its cost and accuracy, the totals against the caps, how the mock run
/// ended, and the verdict. Text the job controls (SQL, log lines, errors) is printed escaped.
pub fn plan(job: &str, p: &serde_json::Value) -> String {
    let text = plain;
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mut out = format!(
        "plan of {job} on mock data ({} units per dataset, drawn from the policy's public metadata; no data read, nothing charged)\n",
        p["mock_units"]
    );
    let queries = p["queries"].as_array().cloned().unwrap_or_default();
    if queries.is_empty() {
        out.push_str("  the job asked no query\n");
    }
    for (i, q) in queries.iter().enumerate() {
        let cost = if q["cached"] == true {
            "cached, free".to_string()
        } else {
            cost(&q["cost"]).to_string()
        };
        let accuracy: Vec<String> = q["accuracy"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| match a["half_width_95"].as_f64() {
                Some(w) => format!("{} ±{}", text(&a["column"]), sluice_runtime::sig(w)),
                None => format!("{} (see its mechanism)", text(&a["column"])),
            })
            .collect();
        let sql: String = text(&q["sql"])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  {:>2}. {}  {cost}  {}\n      {sql}",
            i + 1,
            text(&q["dataset"]),
            accuracy.join(", "),
        );
        if let Some(why) = q["refused"].as_str() {
            let _ = writeln!(out, "      REFUSED: {}", why.escape_debug());
        }
    }
    let datasets = p["datasets"].as_array().cloned().unwrap_or_default();
    if !datasets.is_empty() {
        out.push_str("totals:\n");
    }
    for d in &datasets {
        let unit = d["unit"].as_str().unwrap_or("ε");
        let _ = writeln!(
            out,
            "  {}  {unit}={} of {} per job; {} left this period{}{}",
            text(&d["dataset"]),
            sluice_runtime::sig(num(&d["total"])),
            sluice_runtime::sig(num(&d["per_job_cap"])),
            sluice_runtime::sig(num(&d["period_left"])),
            d["dataset_left"]
                .as_f64()
                .map(|l| format!("; {} left on the dataset", sluice_runtime::sig(l)))
                .unwrap_or_default(),
            if num(&d["delta"]) > 0.0 {
                format!("; δ={:e}", num(&d["delta"]))
            } else {
                String::new()
            },
        );
    }
    let outcome = &p["outcome"];
    let _ = match outcome["state"].as_str() {
        Some("completed") => writeln!(
            out,
            "the job completed on mock data ({}, {})",
            count(outcome["tables"].as_u64().unwrap_or(0), "table"),
            count(outcome["scalars"].as_u64().unwrap_or(0), "scalar"),
        ),
        _ => writeln!(out, "the job failed on mock data"),
    };
    for l in p["log"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  [job log {}] {}",
            text(&l["level"]),
            text(&l["message"])
        );
    }
    if p["adaptive"] == true {
        out.push_str("note: the job asked different queries on two mock datasets: its queries depend on its answers, so a real run may ask others\n");
    }
    let problems = p["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        out.push_str("OK: the job would complete within its caps\n");
    } else {
        out.push_str(
            "REFUSED: the job would not complete; submitting it would spend budget for nothing:\n",
        );
        for pr in &problems {
            let _ = writeln!(out, "  - {}", text(pr));
        }
    }
    out
}

/// `1 table`, `2 tables`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A Unix time in ms, in UTC: `2026-11-30 07:50:12 UTC`.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let s = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        sluice_policy::Date::at(secs, 0),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The same to the minute: `2026-11-30 07:50 UTC`.
pub fn minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let m = secs.rem_euclid(86_400) / 60;
    format!(
        "{} {:02}:{:02} UTC",
        sluice_policy::Date::at(secs, 0),
        m / 60,
        m % 60
    )
}

/// A span of ms for people: `0.42 s`, `3 min 5 s`, `2 h 10 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..60_000 => format!("{} s", sluice_runtime::sig(ms as f64 / 1000.0)),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A period in seconds: `30d`, `12h`.
pub fn period(secs: u64) -> String {
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else {
        format!("{}h", secs / 3_600)
    }
}

/// Rows under a header, each column as wide as its widest cell, with a rule under the header.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        let _ = writeln!(out, "  {}", parts.join("  ").trim_end());
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for row in rows {
        line(&mut out, row);
    }
    out
}

/// The privacy cost in a JSON object's `epsilon`, `delta` and `rho` (absent ones are 0).
pub fn cost(v: &serde_json::Value) -> sluice_runtime::PrivacyCost {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    sluice_runtime::PrivacyCost {
        epsilon: f("epsilon"),
        delta: f("delta"),
        rho: f("rho"),
    }
}

/// Operator-written or job-controlled text, on one line with control characters escaped.
fn plain(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").escape_debug().to_string()
}

/// What a job spent, per dataset: `health_visits ε=0.8 (2 queries)`.
fn spent(j: &serde_json::Value) -> String {
    let parts: Vec<String> = j["spent"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let cost = cost(d);
            let n = d["queries"].as_u64().unwrap_or(0);
            format!(
                "{} {cost} ({n} quer{})",
                plain(&d["dataset"]),
                if n == 1 { "y" } else { "ies" }
            )
        })
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join("; ")
    }
}

/// One job, as `sluice status <id>` shows it.
pub fn job(j: &serde_json::Value) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("operator", plain(&j["operator"])),
        ("purpose", plain(&j["purpose"])),
        (
            "scenario",
            j["scenario"]
                .as_str()
                .map_or("(the operator's only grant)".into(), |s| {
                    s.escape_debug().to_string()
                }),
        ),
        (
            "datasets",
            j["datasets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(plain)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("params", format!("\"{}\"", plain(&j["params"]))),
        ("wasm", format!("sha256 {}", plain(&j["wasm_sha256"]))),
    ];
    let created = j["created_ms"].as_i64().unwrap_or(0);
    rows.push(("submitted", time(created)));
    if let Some(started) = j["started_ms"].as_i64() {
        rows.push((
            "started",
            format!("{} (waited {})", time(started), duration(started - created)),
        ));
        if let Some(ended) = j["finished_ms"].as_i64() {
            rows.push((
                "ended",
                format!("{} (ran {})", time(ended), duration(ended - started)),
            ));
        }
    } else if let Some(ended) = j["finished_ms"].as_i64() {
        rows.push(("ended", time(ended)));
    }
    rows.push(("spent", spent(j)));
    if let Some(reviewer) = j["reviewer"].as_str() {
        rows.push((
            "review",
            format!(
                "{}: \"{}\"",
                reviewer.escape_debug(),
                plain(&j["review_reason"])
            ),
        ));
    }
    let approved: Vec<String> = j["approved_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(plain)
        .collect();
    if !approved.is_empty() {
        rows.push(("approved by", approved.join(", ")));
    }
    if let Some(e) = j["error"].as_str() {
        rows.push(("error", e.escape_debug().to_string()));
    }
    let mut out = format!("{}  {}\n", plain(&j["id"]), plain(&j["state"]));
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<11} {v}");
    }
    out
}

/// Several jobs, one line each, newest first.
pub fn jobs(list: &[serde_json::Value]) -> String {
    if list.is_empty() {
        return "no jobs\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            vec![
                plain(&j["id"]),
                plain(&j["state"]),
                time(j["created_ms"].as_i64().unwrap_or(0)),
                spent(j),
                plain(&j["purpose"]),
            ]
        })
        .collect();
    columns(&["job", "state", "submitted", "spent", "purpose"], &rows)
}

/// An operator's budgets, one line per grant and dataset.
pub fn budget(b: &serde_json::Value) -> String {
    let list = b["budgets"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no dataset is granted to this token\n".into();
    }
    let num = |v: &serde_json::Value| sluice_runtime::sig(v.as_f64().unwrap_or(0.0));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let rho = d["privacy_measure"] == "zcdp";
            let unit = if rho { "rho" } else { "epsilon" };
            vec![
                plain(&d["dataset"]),
                d["scenario"]
                    .as_str()
                    .unwrap_or("-")
                    .escape_debug()
                    .to_string(),
                if rho { "ρ" } else { "ε" }.into(),
                num(&d[format!("{unit}_per_job")]),
                format!(
                    "{} / {}",
                    num(&d[format!("{unit}_per_period")]),
                    period(d["period_secs"].as_u64().unwrap_or(0))
                ),
                num(&d["spent_this_period"]),
                num(&d["available_this_period"]),
                d["dataset_remaining_this_period"]
                    .as_f64()
                    .map_or("-".into(), sluice_runtime::sig),
                match d["implied_delta_this_period"].as_f64().unwrap_or(0.0) {
                    0.0 => format!("({}, 0)", num(&d["implied_epsilon_this_period"])),
                    delta => format!("({}, {delta:.0e})", num(&d["implied_epsilon_this_period"])),
                },
                plain(&d["review"]),
                plain(&d["expires"]),
            ]
        })
        .collect();
    columns(
        &[
            "dataset",
            "scenario",
            "unit",
            "per job",
            "per period",
            "spent",
            "available",
            "dataset left",
            "(ε, δ) so far",
            "review",
            "expires",
        ],
        &rows,
    )
}

/// Audit entries: their place, time, kind and actor, and what they say in brief (a query's SQL
/// as the job wrote it, with its cost; other entries' details as compact JSON).
pub fn audit(entries: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for e in entries {
        let d = &e["detail"];
        let about: Vec<String> = [("job", &e["job"]), ("dataset", &e["dataset"])]
            .iter()
            .filter_map(|(k, v)| Some(format!("{k} {}", v.as_str()?.escape_debug())))
            .collect();
        let _ = writeln!(
            out,
            "{:>6}  {}  {:<18} {}{}",
            e["seq"].as_i64().unwrap_or(0),
            time(e["at_ms"].as_i64().unwrap_or(0)),
            plain(&e["kind"]),
            plain(&e["actor"]),
            if about.is_empty() {
                String::new()
            } else {
                format!("  ({})", about.join(", "))
            }
        );
        if e["kind"] == "query" {
            let cost = cost(d);
            let sql = d["submitted_sql"]
                .as_str()
                .or(d["sql"].as_str())
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "        {cost}  {}\n        {}",
                sql.escape_debug(),
                plain(&d["mechanism"])
            );
        } else if let Some(fields) = d.as_object() {
            let shown: Vec<String> = fields
                .iter()
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_array().is_some_and(Vec::is_empty)
                        || v == &&serde_json::json!(""))
                })
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}=\"{}\"", s.escape_debug()),
                    serde_json::Value::Number(n) => {
                        format!(
                            "{k}={}",
                            n.as_f64().map_or(n.to_string(), sluice_runtime::sig)
                        )
                    }
                    other => format!("{k}={other}"),
                })
                .collect();
            if !shown.is_empty() {
                let _ = writeln!(out, "        {}", shown.join("  "));
            }
        }
    }
    if entries.is_empty() {
        out.push_str("no audit entries match\n");
    }
    out
}

/// A job's risk report in brief: its level, the reasons, and the sha256 the approval records.
pub fn risk(r: &serde_json::Value) -> String {
    let mut out = format!(
        "risk: {} (report sha256 {}; {} earlier approval(s) of this build)\n",
        plain(&r["level"]).to_uppercase(),
        plain(&r["sha256"]),
        r["past_approvals_of_build"]
    );
    for why in r["reasons"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}", plain(why));
    }
    out
}

/// An amount in fen as CNY: `12.34`.
pub fn cny(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// A signed statement for people: one row per job and dataset, then the totals.
pub fn statement(s: &sluice_broker::statements::Statement) -> String {
    let mut out = format!(
        "statement for {} {}, {} ({}), {}\n",
        s.kind,
        s.party,
        s.month,
        s.time_zone,
        count(s.lines.len() as u64, "line")
    );
    let rows: Vec<Vec<String>> = s
        .lines
        .iter()
        .map(|l| {
            vec![
                l.operator.clone(),
                l.holder.clone(),
                l.scenario.clone().unwrap_or_else(|| "-".into()),
                l.usage.clone(),
                l.job.clone(),
                l.dataset.clone(),
                sluice_runtime::sig(l.used.epsilon),
                sluice_runtime::sig(l.used.rho),
                format!("{} ({} cached)", l.used.queries, l.used.cached),
                l.used.cells.to_string(),
                duration(l.used.compute_ms),
                format!(
                    "{}{}",
                    cny(l.used.fee_fen),
                    if l.capped { " (capped)" } else { "" }
                ),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&columns(
            &[
                "operator", "holder", "scenario", "use", "job", "dataset", "ε", "ρ", "queries",
                "cells", "compute", "fee CNY",
            ],
            &rows,
        ));
    }
    let t = &s.totals;
    let _ = writeln!(
        out,
        "total: ε={} ρ={}{}, {} queries ({} cached), {} cells, compute {}; fees {} CNY, of which {} CNY earmarked for public data",
        sluice_runtime::sig(t.used.epsilon),
        sluice_runtime::sig(t.used.rho),
        if t.used.delta > 0.0 {
            format!(" δ={:e}", t.used.delta)
        } else {
            String::new()
        },
        t.used.queries,
        t.used.cached,
        t.used.cells,
        duration(t.used.compute_ms),
        cny(t.used.fee_fen),
        cny(t.used.earmark_fen)
    );
    out
}

/// A registered record for people: its number, kind, owner, status, what it records and its
/// history.
pub fn record(r: &sluice_broker::registry::Record) -> String {
    let mut out = format!(
        "{}  {} of {}  {} (version {})\n",
        r.number,
        r.kind.as_str(),
        r.owner,
        r.status,
        r.version
    );
    if let Some(fields) = r.record.as_object() {
        for (k, v) in fields {
            let shown = match v {
                serde_json::Value::String(s) => s.escape_debug().to_string(),
                other => other.to_string(),
            };
            let _ = writeln!(out, "  {k:<16} {shown}");
        }
    }
    for e in &r.events {
        let _ = writeln!(
            out,
            "  {}  {:<9} by {}: {} (audit entry {})",
            minute(e.at_ms),
            e.kind,
            e.actor,
            e.reason,
            e.audit_seq
        );
    }
    out
}
