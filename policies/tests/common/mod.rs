//! The small policy the policy tests build on: dataset `visits` and grants of
//! `canal-analytics` on it.

/// Dataset `visits`, classified `classification`.
pub fn visits(classification: &str) -> String {
    format!(
        r#"
[dataset.visits]
source = "visits.parquet"
holder = "city-health-commission"
classification = "{classification}"
privacy_unit = "person_id"
max_rows_per_unit = 5
columns.district = {{ kind = "category", public_values = ["a", "b"] }}
"#
    )
}

/// A grant of `canal-analytics` on `visits` (ε 1 a job, 2 a period, counts, no review) through
/// `expires`, with `extra` lines (each ending in a newline) added.
pub fn grant(extra: &str, expires: &str) -> String {
    format!(
        "\n[[grant]]\noperator = \"canal-analytics\"\n{extra}datasets = [\"visits\"]\npurpose = \"planning\"\naggregations = [\"count\"]\nepsilon_per_job = 1.0\nepsilon_per_period = 2.0\nperiod = \"30d\"\nexpires = {expires}\nreview = \"none\"\n"
    )
}
