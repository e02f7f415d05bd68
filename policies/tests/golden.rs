//! Golden tests of the policy error messages reviewers read: each `golden/<name>.toml` is checked
//! and its full output compared with `golden/<name>.expected`. Set `SLUICE_BLESS=1` to rewrite the
//! expected files after a deliberate change of wording.

use sluice_policy::PolicyError;

fn check(name: &str) {
    let dir = manifest_dir().join("tests/golden");
    let input = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&input).unwrap();
    let actual = match sluice_policy::parse_files(vec![(format!("{name}.toml").into(), text)]) {
        Ok(_) => "OK\n".to_string(),
        Err(PolicyError::Invalid(p)) => format!("{p}\n"),
        Err(e) => format!("{e}\n"),
    };
    let expected_path = dir.join(format!("{name}.expected"));
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with SLUICE_BLESS=1",
            expected_path.display()
        )
    });
    assert_eq!(actual, expected, "golden output of {name} changed");
}

#[test]
fn every_problem_is_reported_with_its_place_and_what_is_accepted() {
    check("many_problems");
}

#[test]
fn unknown_sections_are_named() {
    check("unknown_section");
}

#[test]
fn partition_selection_and_delta_misuse_is_reported() {
    check("selection_problems");
}

#[test]
fn privacy_measure_and_budget_cap_misuse_is_reported() {
    check("measure_problems");
}

#[test]
fn bin_and_date_column_misuse_is_reported() {
    check("column_problems");
}

#[test]
fn invalid_toml_is_reported_at_its_place() {
    check("invalid_toml");
}

#[test]
fn the_example_policies_are_valid() {
    let dir = manifest_dir().join("examples");
    let p = sluice_policy::load(&dir).expect("examples are valid");
    assert_eq!(p.datasets.len(), 2);
    assert_eq!(p.grants.len(), 2);
}

/// This package's directory, read when the test runs (cargo sets it), not when it was compiled: a
/// shared target directory can reuse a test binary built from another clone of the repository.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[test]
fn core_grants_and_dataset_budget_misuse_are_reported() {
    check("grade_problems");
}

#[test]
fn grants_above_their_grades_ceilings_are_reported_at_the_grant() {
    check("grades");
}

#[test]
fn alert_rules_take_the_fields_of_what_they_watch() {
    check("alert_problems");
}
