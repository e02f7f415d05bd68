//! A grade's minimums apply to every grant of its datasets, whatever the grant says.

use sluice_policy::{Classification, Review, parse_str};

mod common;

#[test]
fn a_grant_gets_the_stricter_review_and_group_count_of_its_grade() {
    let text = "\n[grade.important]\nreview = \"required\"\nmin_group_count = 10\n".to_string()
        + &common::visits("important")
        + &common::grant("min_group_count = 5\n", "2099-12-31");
    let policy = parse_str("p.toml", &text).unwrap();
    let g = &policy.grants[0];
    assert_eq!((g.review, g.min_group_count), (Review::Required, Some(10)));
    // Without a table, core is never grantable and the others set nothing.
    assert!(!policy.grade(Classification::Core).grantable);
    assert_eq!(policy.grade(Classification::Sensitive).review, Review::None);
}

#[test]
fn several_grants_of_one_operator_on_one_dataset_must_each_name_a_scenario() {
    let dataset = common::visits("sensitive");
    let grant = |scenario: &str| common::grant(scenario, "2099-12-31");
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
    let today = std::time::SystemTime::now();
    assert!(
        policy.authorize(&op, &ds, today).is_err(),
        "which scenario?"
    );
    let g = policy.authorize_in(&op, &ds, Some("b"), today).unwrap();
    assert_eq!(g.scenario.as_deref(), Some("b"));
}
