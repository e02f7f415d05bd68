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
        Some(a) if a.is_finite() => format!("{v} ±{a:.1}"),
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
    let mut widths: Vec<usize> = t.columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
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
    line(&mut out, &t.columns);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for row in &rows {
        line(&mut out, row);
    }
    out
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
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").escape_debug().to_string();
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
        let cost = sluice_runtime::PrivacyCost {
            epsilon: num(&q["cost"]["epsilon"]),
            delta: num(&q["cost"]["delta"]),
            rho: num(&q["cost"]["rho"]),
        };
        let cost = if q["cached"] == true {
            "cached, free".to_string()
        } else {
            cost.to_string()
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
