//! Plots of released tables as SVG: one bar per row of an aggregate column, with its 95%
//! interval as an error bar (`sluice result --plot`).
//!
//! Every string in a table comes from a job (its column names, its keys, its title), so every
//! one is escaped as XML text; the SVG has no script, no link and no external reference.

use std::fmt::Write as _;

use sluice_runtime::{NoisyTable, Value};

/// Plot geometry, in SVG user units (pixels).
const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 150.0;
/// Longest key label drawn, in characters.
const MAX_LABEL: usize = 28;
/// Most bars drawn; a bigger table is refused with a hint.
pub const MAX_BARS: usize = 200;

/// Why a table cannot be plotted.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlotError {
    /// No aggregate column of that name, or none at all.
    #[error("{0}")]
    Column(String),
    /// Too many rows for one chart.
    #[error(
        "the table has {0} rows; a chart draws at most {MAX_BARS} (choose a table with fewer keys)"
    )]
    TooManyRows(usize),
    /// No numeric cell to draw.
    #[error("column `{0}` has no numeric value to draw (every cell is suppressed)")]
    Empty(String),
}

/// One bar: its label, value and 95% half-width.
struct Bar {
    label: String,
    value: Option<f64>,
    half_width: Option<f64>,
}

/// `table`'s aggregate column `column` (the first aggregate column when `None`) as an SVG bar
/// chart titled `title`, each bar with its 95% interval.
pub fn svg(title: &str, table: &NoisyTable, column: Option<&str>) -> Result<String, PlotError> {
    let aggregates = &table.columns[table.key_columns.min(table.columns.len())..];
    let c = match column {
        Some(name) => table
            .columns
            .iter()
            .position(|n| n == name)
            .filter(|&i| i >= table.key_columns)
            .ok_or_else(|| {
                PlotError::Column(format!(
                    "no aggregate column `{name}`; the table's are: {}",
                    aggregates.join(", ")
                ))
            })?,
        None if aggregates.is_empty() => {
            return Err(PlotError::Column(
                "the table has no aggregate column".into(),
            ));
        }
        None => table.key_columns,
    };
    if table.rows.len() > MAX_BARS {
        return Err(PlotError::TooManyRows(table.rows.len()));
    }
    let bars: Vec<Bar> = table
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| Bar {
            label: label(&row[..table.key_columns]),
            value: row.get(c).and_then(number),
            half_width: table
                .accuracy
                .get(r)
                .and_then(|a| a.get(c).copied().flatten()),
        })
        .collect();
    let name = &table.columns[c];
    let (lo, hi) = range(&bars).ok_or_else(|| PlotError::Empty(name.clone()))?;
    Ok(draw(title, name, &bars, lo, hi))
}

/// A row's keys as one label (`Guangling`, `F · 2025-03-01`), or `all` for an ungrouped table.
fn label(keys: &[Value]) -> String {
    if keys.is_empty() {
        return "all".into();
    }
    let text: Vec<String> = keys
        .iter()
        .map(|k| match k {
            Value::Text(t) => t.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => sluice_runtime::sig(*f),
            Value::Null => "(null)".into(),
        })
        .collect();
    let joined = text.join(" · ");
    if joined.chars().count() > MAX_LABEL {
        joined.chars().take(MAX_LABEL - 1).collect::<String>() + "…"
    } else {
        joined
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

/// The value axis: from the lowest interval end (or 0) to the highest (or 0), padded 5%.
fn range(bars: &[Bar]) -> Option<(f64, f64)> {
    let ends: Vec<f64> = bars
        .iter()
        .filter_map(|b| {
            let v = b.value?;
            let w = b.half_width.filter(|w| w.is_finite()).unwrap_or(0.0);
            Some([v - w, v + w])
        })
        .flatten()
        .collect();
    if ends.is_empty() {
        return None;
    }
    let lo = ends.iter().copied().fold(0.0_f64, f64::min);
    let hi = ends.iter().copied().fold(0.0_f64, f64::max);
    let pad = ((hi - lo) * 0.05).max(1e-9);
    Some((if lo < 0.0 { lo - pad } else { lo }, hi + pad))
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 20 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// XML text: `&`, `<`, `>`, quotes escaped, control characters dropped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The chart's stages: frame and title, axis with ticks, then each bar, its error bar and its
/// label.
fn draw(title: &str, column: &str, bars: &[Bar], lo: f64, hi: f64) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (hi - v) / (hi - lo);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        xml(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="44" fill="#555">{} (bars: released value; whiskers: 95% interval)</text>"##,
        xml(column)
    );
    // The value axis.
    for t in ticks(lo, hi) {
        let ty = y(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            ty + 4.0,
            xml(&sluice_runtime::sig(t))
        );
    }
    let zero = y(0.0_f64.clamp(lo, hi));
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" x2="{}" y1="{zero:.1}" y2="{zero:.1}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
    // The bars.
    let slot = plot_w / bars.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(1.0);
    for (i, b) in bars.iter().enumerate() {
        let cx = LEFT + slot * (i as f64 + 0.5);
        if let Some(v) = b.value {
            let (top, bottom) = if v >= 0.0 { (y(v), zero) } else { (zero, y(v)) };
            let _ = writeln!(
                out,
                r##"<rect x="{:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="#4c78a8"><title>{}: {}</title></rect>"##,
                cx - bar_w / 2.0,
                (bottom - top).max(0.5),
                xml(&b.label),
                xml(&match b.half_width {
                    Some(w) => format!("{} ±{}", sluice_runtime::sig(v), sluice_runtime::sig(w)),
                    None => sluice_runtime::sig(v),
                })
            );
            if let Some(w) = b.half_width.filter(|w| w.is_finite() && *w > 0.0) {
                let (y1, y2) = (y(v + w), y(v - w));
                let cap = (bar_w * 0.25).min(8.0);
                let _ = writeln!(
                    out,
                    r##"<path d="M{cx:.1} {y1:.1}V{y2:.1}M{:.1} {y1:.1}H{:.1}M{:.1} {y2:.1}H{:.1}" stroke="#222" stroke-width="1.5" fill="none"/>"##,
                    cx - cap,
                    cx + cap,
                    cx - cap,
                    cx + cap
                );
            }
        }
        let ly = HEIGHT - BOTTOM + 14.0;
        let _ = writeln!(
            out,
            r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-45 {cx:.1} {ly:.1})">{}</text>"#,
            xml(&b.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::PrivacyCost;

    fn table(keys: &[&str], values: &[Value], widths: &[Option<f64>]) -> NoisyTable {
        NoisyTable {
            columns: vec!["district".into(), "visits".into()],
            key_columns: 1,
            rows: keys
                .iter()
                .zip(values)
                .map(|(k, v)| vec![Value::Text((*k).into()), v.clone()])
                .collect(),
            accuracy: widths.iter().map(|w| vec![None, *w]).collect(),
            cost: PrivacyCost::default(),
            mechanism: String::new(),
        }
    }

    #[test]
    fn a_table_reads_as_before() {
        let t = table(
            &["Guangling", "Hanjiang", "Jiangdu"],
            &[Value::Int(120), Value::Int(-4), Value::Null],
            &[Some(30.44), Some(30.44), None],
        );
        let svg = svg("Visits by district", &t, None).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plot.svg");
        if std::env::var_os("SLUICE_BLESS").is_some() {
            std::fs::write(&path, &svg).unwrap();
        }
        let expected =
            std::fs::read_to_string(&path).expect("tests/golden/plot.svg (SLUICE_BLESS=1)");
        assert_eq!(svg, expected, "the plot changed (SLUICE_BLESS=1 if meant)");
    }

    #[test]
    fn job_text_is_escaped_and_nothing_active_is_emitted() {
        let t = table(
            &[
                "<script>alert(1)</script>",
                "<img src=x onerror=alert(1)>",
                "javascript:alert(1)",
            ],
            &[Value::Int(1), Value::Int(2), Value::Int(3)],
            &[Some(1.0), Some(1.0), Some(1.0)],
        );
        let svg = svg("<b onload=\"x\">", &t, None).unwrap();
        assert!(
            !svg.contains("<script") && !svg.contains("<img") && !svg.contains("<b "),
            "{svg}"
        );
        assert!(svg.contains("&lt;script&gt;") && svg.contains("&lt;b onload=&quot;x&quot;&gt;"));
        assert!(
            !svg.contains("href") && !svg.contains("onerror=alert(1)>"),
            "{svg}"
        );
    }

    #[test]
    fn columns_rows_and_empty_tables_are_refused_with_the_reason() {
        let t = table(&["a"], &[Value::Int(1)], &[None]);
        assert_eq!(
            svg("t", &t, Some("district")),
            Err(PlotError::Column(
                "no aggregate column `district`; the table's are: visits".into()
            ))
        );
        let empty = table(&["a"], &[Value::Null], &[None]);
        assert_eq!(
            svg("t", &empty, None),
            Err(PlotError::Empty("visits".into()))
        );
        let keys: Vec<String> = (0..=MAX_BARS).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let many = table(
            &refs,
            &vec![Value::Int(1); refs.len()],
            &vec![None; refs.len()],
        );
        assert_eq!(
            svg("t", &many, None),
            Err(PlotError::TooManyRows(MAX_BARS + 1))
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(-10.0, 10.0), [-10.0, -5.0, 0.0, 5.0, 10.0]);
    }
}
