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
