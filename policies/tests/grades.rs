//! A grade's minimums apply to every grant of its datasets, whatever the grant says.

use sluice_policy::{Classification, Review, parse_str};

#[test]
fn a_grant_gets_the_stricter_review_and_group_count_of_its_grade() {
    let policy = parse_str(
        "p.toml",
        r#"
[grade.important]
review = "required"
min_group_count = 10

[dataset.visits]
source = "visits.parquet"
holder = "city-health-commission"
classification = "important"
privacy_unit = "person_id"
max_rows_per_unit = 5
columns.district = { kind = "category", public_values = ["a", "b"] }

[[grant]]
operator = "canal-analytics"
datasets = ["visits"]
purpose = "planning"
aggregations = ["count"]
epsilon_per_job = 1.0
epsilon_per_period = 2.0
period = "30d"
expires = 2099-12-31
review = "none"
min_group_count = 5
"#,
    )
    .unwrap();
    let g = &policy.grants[0];
    assert_eq!((g.review, g.min_group_count), (Review::Required, Some(10)));
    // Without a table, core is never grantable and the others set nothing.
    assert!(!policy.grade(Classification::Core).grantable);
    assert_eq!(policy.grade(Classification::Sensitive).review, Review::None);
}

#[test]
fn several_grants_of_one_operator_on_one_dataset_must_each_name_a_scenario() {
    let dataset = r#"
[dataset.visits]
source = "visits.parquet"
holder = "city-health-commission"
classification = "sensitive"
privacy_unit = "person_id"
max_rows_per_unit = 5
columns.district = { kind = "category", public_values = ["a", "b"] }
"#;
    let grant = |scenario: &str| {
        format!(
            "\n[[grant]]\noperator = \"canal-analytics\"\n{scenario}datasets = [\"visits\"]\npurpose = \"p\"\naggregations = [\"count\"]\nepsilon_per_job = 1.0\nepsilon_per_period = 2.0\nperiod = \"30d\"\nexpires = 2099-12-31\nreview = \"none\"\n"
        )
    };
    let two_plain = format!("{dataset}{}{}", grant(""), grant(""));
    let e = parse_str("p.toml", &two_plain).unwrap_err().to_string();
    assert!(e.contains("must each name a distinct `scenario`"), "{e}");
    let named = format!(
        "{dataset}{}{}",
        grant("scenario = \"a\"\n"),
        grant("scenario = \"b\"\n")
    );
    let policy = parse_str("p.toml", &named).unwrap();
    let op = "canal-analytics".parse().unwrap();
    let ds = "visits".parse().unwrap();
    let today = policy.today();
    assert!(
        policy.authorize(&op, &ds, today).is_err(),
        "which scenario?"
    );
    let g = policy.authorize_in(&op, &ds, Some("b"), today).unwrap();
    assert_eq!(g.scenario.as_deref(), Some("b"));
}
