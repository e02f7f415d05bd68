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
