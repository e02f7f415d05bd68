//! What leaves the sandbox: noisy tables and the job's report, serialisable to JSON and CSV.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One cell of a released table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// No value (e.g. a suppressed group).
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text (group keys).
    Text(String),
}

impl Value {
    /// The value as a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn approx_bytes(&self) -> usize {
        match self {
            Self::Text(s) => s.len() + 8,
            _ => 8,
        }
    }

    fn csv(&self) -> String {
        match self {
            Self::Null => String::new(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Text(s) => csv_escape(s),
        }
    }
}

/// A privacy cost, in the measure of the dataset charged: ε on pure-DP datasets, ρ on zCDP
/// datasets (the other one is 0), plus δ where partition selection spent some.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyCost {
    /// Pure-DP ε (0 on zCDP datasets).
    pub epsilon: f64,
    /// δ (0 unless keys were released by partition selection).
    pub delta: f64,
    /// zero-concentrated DP ρ (0 on pure-DP datasets).
    #[serde(default)]
    pub rho: f64,
}

impl PrivacyCost {
    /// The two costs together (basic composition: each of ε, δ and ρ adds up).
    pub fn plus(self, other: Self) -> Self {
        Self {
            epsilon: self.epsilon + other.epsilon,
            delta: self.delta + other.delta,
            rho: self.rho + other.rho,
        }
    }
}

/// `x` to 4 significant digits, for people.
pub fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{x:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

impl std::fmt::Display for PrivacyCost {
    /// `ε=0.5`, `ρ=0.05` (4 significant digits), with `, δ=1e-6` when δ was spent (both ε and ρ when a job spent on
    /// datasets of both measures).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.epsilon > 0.0, self.rho > 0.0) {
            (_, false) => write!(f, "ε={}", sig(self.epsilon))?,
            (false, true) => write!(f, "ρ={}", sig(self.rho))?,
            (true, true) => write!(f, "ε={}, ρ={}", sig(self.epsilon), sig(self.rho))?,
        }
        if self.delta > 0.0 {
            write!(f, ", δ={:e}", self.delta)?;
        }
        Ok(())
    }
}

/// A table of differentially private answers (or a table a job built from them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoisyTable {
    /// Column names: keys first, then aggregates.
    pub columns: Vec<String>,
    /// How many leading columns are group keys.
    pub key_columns: usize,
    /// Rows, sorted by key.
    pub rows: Vec<Vec<Value>>,
    /// Per cell: the half-width of a 95% interval for aggregate cells, `None` for keys.
    pub accuracy: Vec<Vec<Option<f64>>>,
    /// What releasing this table cost.
    pub cost: PrivacyCost,
    /// How it was produced.
    pub mechanism: String,
}

impl NoisyTable {
    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    fn approx_bytes(&self) -> usize {
        let cells: usize = self
            .rows
            .iter()
            .flat_map(|r| r.iter().map(Value::approx_bytes))
            .sum();
        let names: usize = self.columns.iter().map(|c| c.len() + 8).sum();
        cells
            + names
            + self.accuracy.iter().map(|r| r.len() * 8).sum::<usize>()
            + self.mechanism.len()
    }
}

/// A named scalar in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Half-width of a 95% interval, if stated.
    pub accuracy: Option<f64>,
}

/// What a job releases.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// A title.
    pub title: String,
    /// Free text.
    pub text: String,
    /// Named tables.
    pub tables: Vec<(String, NoisyTable)>,
    /// Named scalars.
    pub scalars: Vec<Scalar>,
}

impl Report {
    /// An upper estimate of the report's size in bytes, used for the output cap.
    pub fn approx_bytes(&self) -> usize {
        self.title.len()
            + self.text.len()
            + self
                .tables
                .iter()
                .map(|(n, t)| n.len() + t.approx_bytes())
                .sum::<usize>()
            + self
                .scalars
                .iter()
                .map(|s| s.name.len() + 16)
                .sum::<usize>()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        let tables: Vec<_> = self
            .tables
            .iter()
            .map(|(name, t)| serde_json::json!({ "name": name, "table": t }))
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "title": self.title,
            "text": self.text,
            "tables": tables,
            "scalars": self.scalars,
        }))
        .expect("a report always serialises")
    }

    /// Reads a report back from [`Report::to_json`]'s output.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
            table: NoisyTable,
        }
        #[derive(Deserialize)]
        struct Doc {
            title: String,
            text: String,
            tables: Vec<Named>,
            scalars: Vec<Scalar>,
        }
        let d: Doc = serde_json::from_str(json)?;
        Ok(Self {
            title: d.title,
            text: d.text,
            tables: d.tables.into_iter().map(|n| (n.name, n.table)).collect(),
            scalars: d.scalars,
        })
    }

    /// The report as CSV: one section per table (a `# table: <name>` line, a header, the rows with a
    /// `<column>_accuracy95` column after each aggregate), then the scalars.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for (name, t) in &self.tables {
            let _ = writeln!(out, "# table: {name}");
            let header: Vec<String> = t
                .columns
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    let c = csv_escape(c);
                    if i < t.key_columns {
                        vec![c]
                    } else {
                        vec![c.clone(), format!("{c}_accuracy95")]
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", header.join(","));
            for (r, row) in t.rows.iter().enumerate() {
                let cells: Vec<String> = row
                    .iter()
                    .enumerate()
                    .flat_map(|(i, v)| {
                        if i < t.key_columns {
                            vec![v.csv()]
                        } else {
                            let acc = t
                                .accuracy
                                .get(r)
                                .and_then(|a| a.get(i).copied().flatten())
                                .map(|a| a.to_string())
                                .unwrap_or_default();
                            vec![v.csv(), acc]
                        }
                    })
                    .collect();
                let _ = writeln!(out, "{}", cells.join(","));
            }
            out.push('\n');
        }
        if !self.scalars.is_empty() {
            out.push_str("# scalars\nname,value,accuracy95\n");
            for s in &self.scalars {
                let acc = s.accuracy.map(|a| a.to_string()).unwrap_or_default();
                let _ = writeln!(out, "{},{},{}", csv_escape(&s.name), s.value, acc);
            }
        }
        out
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_puts_accuracy_after_each_aggregate_and_escapes_keys() {
        let t = NoisyTable {
            columns: vec!["district".into(), "n".into()],
            key_columns: 1,
            rows: vec![vec![Value::Text("A, B".into()), Value::Int(12)]],
            accuracy: vec![vec![None, Some(3.5)]],
            cost: PrivacyCost::default(),
            mechanism: String::new(),
        };
        let r = Report {
            title: "t".into(),
            tables: vec![("visits".into(), t)],
            ..Default::default()
        };
        assert_eq!(Report::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(
            r.to_csv(),
            "# table: visits\ndistrict,n,n_accuracy95\n\"A, B\",12,3.5\n\n"
        );
    }

    #[test]
    fn sig_keeps_four_significant_digits() {
        assert_eq!(sig(0.15053361688360678), "0.1505");
        assert_eq!(sig(0.050000000000000044), "0.05");
        assert_eq!(sig(18.3), "18.3");
        assert_eq!(sig(80.38150673607223), "80.38");
        assert_eq!(sig(12345.678), "12346");
        assert_eq!(sig(0.0), "0");
        assert_eq!(sig(1.0), "1");
        assert_eq!(sig(-2.5), "-2.5");
        assert_eq!(sig(0.000012345), "0.00001234");
        let c = PrivacyCost {
            epsilon: 0.15053361688360678,
            delta: 1e-6,
            rho: 0.0,
        };
        assert_eq!(c.to_string(), "ε=0.1505, δ=1e-6");
    }
}
