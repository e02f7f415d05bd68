//! Grant expiry is read in the policy's time zone (default Asia/Shanghai): a grant "through
//! 2027-12-31" ends at midnight Beijing time, not at 08:00 the next morning; a date-time ends at
//! that second, in the zone or in the offset it names.

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
    policy.authorize(&op, &ds, at).is_ok()
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

fn with_expiry(expires: &str) -> sluice_policy::Policy {
    parse_str(
        "p.toml",
        &(common::visits("sensitive") + &common::grant("", expires)),
    )
    .unwrap()
}

#[test]
fn a_date_time_expiry_ends_at_its_second_in_the_zone_or_in_its_own_offset() {
    let eve = half_past_eleven_beijing();
    // A local date-time is read in the policy's zone.
    let local = with_expiry("2027-12-31T23:45:00");
    assert!(allowed(&local, eve));
    assert!(allowed(&local, eve + Duration::from_secs(15 * 60)));
    assert!(!allowed(&local, eve + Duration::from_secs(15 * 60 + 1)));
    // One with an offset is read in that offset: 23:45 UTC is 07:45 the next morning in Beijing.
    let utc = with_expiry("2027-12-31T23:45:00Z");
    assert!(allowed(&utc, eve + Duration::from_secs(8 * 3_600)));
    assert!(!allowed(&utc, eve + Duration::from_secs(9 * 3_600)));
    let cst = with_expiry("2028-01-01T00:00:00+08:00");
    assert!(allowed(&cst, eve) && !allowed(&cst, eve + Duration::from_secs(3_600)));
    // The refusal says when it ended, with the zone it was read in.
    let (op, ds) = (
        OperatorId::new("canal-analytics").unwrap(),
        DatasetId::new("visits").unwrap(),
    );
    let e = local
        .authorize(&op, &ds, eve + Duration::from_secs(3_600))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ran through 2027-12-31T23:45:00 Asia/Shanghai"),
        "{e}"
    );
}

#[test]
fn an_expiry_that_is_not_a_date_or_date_time_is_refused_at_its_place() {
    for (bad, col) in [("\"2027-12-31\"", 11), ("12:00:00", 11), ("2027", 11)] {
        let e = parse_str(
            "p.toml",
            &(common::visits("sensitive") + &common::grant("", bad)),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!(":{col}:")) && e.contains("date-time such as"),
            "{bad}: {e}"
        );
    }
}
