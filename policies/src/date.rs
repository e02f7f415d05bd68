//! A calendar date: grant expiry, date column bounds and date keys.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A proleptic Gregorian calendar date (in the zone the context says: a policy's for expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2027.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
}

impl Date {
    /// The date at `unix_secs` seconds since the epoch in the zone `offset_minutes` east of UTC.
    pub fn at(unix_secs: i64, offset_minutes: i32) -> Self {
        let local = unix_secs + i64::from(offset_minutes) * 60;
        Self::from_days_since_epoch(local.div_euclid(86_400))
    }

    /// The date `days` days after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    pub fn from_days_since_epoch(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Self { year, month, day }
    }
}

impl Date {
    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    pub fn days_since_epoch(&self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Parses `YYYY-MM-DD` (a real calendar date).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
        let d = Self {
            year: i32::try_from(num(0..4)?).ok()?,
            month: u8::try_from(num(5..7)?).ok()?,
            day: u8::try_from(num(8..10)?).ok()?,
        };
        // Valid exactly when it survives the round trip through a day count.
        (Self::from_days_since_epoch(d.days_since_epoch()) == d).then_some(d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The time zone a policy's dates are read in (grant expiry): a fixed offset from UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZone {
    /// As written in the policy (`Asia/Shanghai`, `UTC`, `+08:00`).
    pub name: String,
    /// Minutes east of UTC.
    pub offset_minutes: i32,
}

impl Default for TimeZone {
    /// Asia/Shanghai (UTC+8 all year: China has kept no daylight saving time since 1991).
    fn default() -> Self {
        Self {
            name: "Asia/Shanghai".into(),
            offset_minutes: 8 * 60,
        }
    }
}

impl TimeZone {
    /// The zones a policy may name: `Asia/Shanghai` (also `Asia/Chongqing`, `Asia/Urumqi`'s
    /// official time, `PRC`), `UTC`, or a fixed offset `+HH:MM` / `-HH:MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let offset = match s {
            "Asia/Shanghai" | "Asia/Chongqing" | "PRC" => 8 * 60,
            "UTC" | "Etc/UTC" => 0,
            _ => {
                let (sign, rest) = match s.as_bytes().first()? {
                    b'+' => (1, &s[1..]),
                    b'-' => (-1, &s[1..]),
                    _ => return None,
                };
                let (h, m) = rest.split_once(':')?;
                if h.len() != 2 || m.len() != 2 {
                    return None;
                }
                let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
                if h > 14 || m > 59 {
                    return None;
                }
                sign * (h * 60 + m)
            }
        };
        Some(Self {
            name: s.into(),
            offset_minutes: offset,
        })
    }
}

/// When a grant ends, as its policy writes it: a date (valid through the end of that day in the
/// policy's time zone), a local date-time (in that zone) or a date-time with its own offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// `expires = 2027-12-31`: through the last second of that day in the policy's zone.
    EndOfDay(Date),
    /// `expires = 2027-12-31T18:00:00`: through that second in the policy's zone.
    Local {
        /// The day.
        date: Date,
        /// Seconds after that day's midnight, 0 to 86 399.
        second_of_day: u32,
    },
    /// `expires = 2027-12-31T18:00:00+08:00`: through that second, whatever the policy's zone.
    Offset {
        /// The day, in the written offset.
        date: Date,
        /// Seconds after that day's midnight, in the written offset.
        second_of_day: u32,
        /// The written offset, minutes east of UTC.
        offset_minutes: i32,
    },
}

impl Expiry {
    /// The last second (Unix time) at which a grant with this expiry is valid, read in `zone`.
    pub fn last_second(&self, zone: &TimeZone) -> i64 {
        let at = |date: &Date, second: u32, offset: i32| {
            date.days_since_epoch() * 86_400 + i64::from(second) - i64::from(offset) * 60
        };
        match self {
            Self::EndOfDay(d) => at(d, 86_399, zone.offset_minutes),
            Self::Local {
                date,
                second_of_day,
            } => at(date, *second_of_day, zone.offset_minutes),
            Self::Offset {
                date,
                second_of_day,
                offset_minutes,
            } => at(date, *second_of_day, *offset_minutes),
        }
    }

    /// Whether a grant with this expiry is still valid at `unix_secs`, read in `zone`.
    pub fn valid_at(&self, zone: &TimeZone, unix_secs: i64) -> bool {
        unix_secs <= self.last_second(zone)
    }

    /// Its last second, with the zone it is read in where it names none:
    /// `2027-12-31 23:59:59 Asia/Shanghai`.
    pub fn describe(&self, zone: &TimeZone) -> String {
        match self {
            Self::EndOfDay(d) => format!("{d} 23:59:59 {}", zone.name),
            Self::Local { .. } => format!("{self} {}", zone.name),
            Self::Offset { .. } => self.to_string(),
        }
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clock = |f: &mut fmt::Formatter<'_>, s: u32| {
            write!(f, "T{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
        };
        match self {
            Self::EndOfDay(d) => write!(f, "{d}"),
            Self::Local {
                date,
                second_of_day,
            } => {
                write!(f, "{date}")?;
                clock(f, *second_of_day)
            }
            Self::Offset {
                date,
                second_of_day,
                offset_minutes,
            } => {
                write!(f, "{date}")?;
                clock(f, *second_of_day)?;
                let (sign, m) = if *offset_minutes < 0 {
                    ('-', -offset_minutes)
                } else {
                    ('+', *offset_minutes)
                };
                write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
            }
        }
    }
}

/// Seconds since the Unix epoch at `at` (negative before it).
pub fn unix_secs(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_in_shanghai_turns_at_midnight_beijing_time_not_utc() {
        let cst = TimeZone::default();
        // 2027-12-31T23:30+08:00 and 2028-01-01T00:30+08:00.
        let before = 1_830_267_000; // 2027-12-31T15:30:00Z
        let after = before + 3_600;
        assert_eq!(
            Date::at(before, cst.offset_minutes).to_string(),
            "2027-12-31"
        );
        assert_eq!(
            Date::at(after, cst.offset_minutes).to_string(),
            "2028-01-01"
        );
        // In UTC both instants are still 2027-12-31.
        assert_eq!(Date::at(after, 0).to_string(), "2027-12-31");
        assert_eq!(Date::at(-1, 0).to_string(), "1969-12-31");
    }

    #[test]
    fn expiry_reads_dates_and_local_times_in_the_zone_and_offsets_as_written() {
        let cst = TimeZone::default();
        let new_years_eve = Date::parse("2027-12-31").unwrap();
        let half_past_eleven = 1_830_267_000; // 2027-12-31T23:30:00+08:00
        let day = Expiry::EndOfDay(new_years_eve);
        assert!(day.valid_at(&cst, half_past_eleven));
        assert!(!day.valid_at(&cst, half_past_eleven + 3_600));
        assert_eq!(day.last_second(&cst), half_past_eleven + 30 * 60 - 1);
        let six_pm = Expiry::Local {
            date: new_years_eve,
            second_of_day: 18 * 3600,
        };
        assert!(!six_pm.valid_at(&cst, half_past_eleven));
        assert_eq!(six_pm.to_string(), "2027-12-31T18:00:00");
        let utc_six_pm = Expiry::Offset {
            date: new_years_eve,
            second_of_day: 18 * 3600,
            offset_minutes: 0,
        };
        // 18:00Z is 02:00 the next day in Beijing: still valid at 23:30 Beijing time.
        assert!(utc_six_pm.valid_at(&cst, half_past_eleven));
        assert_eq!(utc_six_pm.describe(&cst), "2027-12-31T18:00:00+00:00");
        assert_eq!(day.describe(&cst), "2027-12-31 23:59:59 Asia/Shanghai");
    }

    #[test]
    fn zones_are_names_we_know_or_fixed_offsets() {
        assert_eq!(TimeZone::parse("UTC").unwrap().offset_minutes, 0);
        assert_eq!(TimeZone::parse("+05:30").unwrap().offset_minutes, 330);
        assert_eq!(TimeZone::parse("-03:00").unwrap().offset_minutes, -180);
        for bad in ["Europe/Paris", "+8", "+08:60", "+15:00", "08:00", ""] {
            assert_eq!(TimeZone::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_round_trip_and_invalid_dates_are_refused() {
        for days in [-800_000, -1, 0, 11_016, 20_784, 60_000] {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        assert_eq!(
            Date::parse("2024-02-29").map(|d| d.days_since_epoch()),
            Some(19_782)
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "20240101",
            "2024-01-32",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn converts_known_days_to_dates() {
        assert_eq!(Date::from_days_since_epoch(0).to_string(), "1970-01-01");
        assert_eq!(
            Date::from_days_since_epoch(11_016).to_string(),
            "2000-02-29"
        );
        assert_eq!(
            Date::from_days_since_epoch(20_784).to_string(),
            "2026-11-27"
        );
    }
}
