//! Grant expiry is a date in the policy's time zone (default Asia/Shanghai): a grant "through
//! 2027-12-31" ends at midnight Beijing time, not at 08:00 the next morning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_policy::{DatasetId, OperatorId, parse_str};

mod common;

/// `visits` and one grant through 2027-12-31.
fn policy_text() -> String {
    common::visits("sensitive") + &common::grant("", "2027-12-31")
}

/// 2027-12-31T23:30:00+08:00.
fn half_past_eleven_beijing() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_830_267_000)
}

fn allowed(policy: &sluice_policy::Policy, at: SystemTime) -> bool {
    let (op, ds) = (
        OperatorId::new("canal-analytics").unwrap(),
        DatasetId::new("visits").unwrap(),
    );
    policy.authorize(&op, &ds, policy.date_at(at)).is_ok()
}

#[test]
fn a_grant_through_new_years_eve_ends_at_midnight_beijing_time() {
    let policy = parse_str("p.toml", &policy_text()).unwrap();
    assert_eq!(policy.time_zone.name, "Asia/Shanghai");
    assert!(allowed(&policy, half_past_eleven_beijing()));
    let after = half_past_eleven_beijing() + Duration::from_secs(3_600);
    assert!(!allowed(&policy, after), "00:30 on 2028-01-01 in Beijing");
    // Read in UTC, 00:30 Beijing time is still 2027-12-31: the grant would run on for 7.5 h.
    let utc = parse_str("p.toml", &format!("time_zone = \"UTC\"\n{}", policy_text())).unwrap();
    assert!(allowed(&utc, after));
    assert!(!allowed(&utc, after + Duration::from_secs(8 * 3_600)));
}

#[test]
fn an_unknown_zone_and_two_zones_are_refused_at_their_place() {
    let e = parse_str(
        "p.toml",
        &format!("time_zone = \"Mars/Olympus\"\n{}", policy_text()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("p.toml:1:13") && e.contains("fixed offset"),
        "{e}"
    );
    let two = sluice_policy::parse_files(vec![
        (
            "a.toml".into(),
            format!("time_zone = \"+08:00\"\n{}", policy_text()),
        ),
        ("b.toml".into(), "time_zone = \"UTC\"\n".into()),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        two.contains("b.toml:1:13") && two.contains("declare one zone"),
        "{two}"
    );
}
