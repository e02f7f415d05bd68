//! Public oversight (社会监督、信用体系): objections anyone may file about a use of data, which
//! reviewers resolve with a reason; each operator's credit record; and the monthly figures the
//! public register shows. Everything here is read from the ledger, the jobs and the audit log:
//! no figure is derived from a row of data.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use crate::audit::{NewEntry, now_ms};
use crate::keys::{random_bytes, sha256_hex};
use crate::store::{StateError, Store};

/// Longest subject of an objection, in bytes.
pub const MAX_SUBJECT: usize = 200;
/// Longest objection text, in bytes.
pub const MAX_TEXT: usize = 4000;
/// Longest contact, in bytes.
pub const MAX_CONTACT: usize = 200;
/// Open objections beyond which new ones are refused (`429`) until reviewers catch up.
pub const MAX_OPEN: i64 = 1000;
/// Objections one address (an IPv6 address's /64) may file in an hour: without it one source
/// could fill the reviewers' queue ([`MAX_OPEN`]) and shut everyone else out.
pub const MAX_PER_ADDRESS_PER_HOUR: usize = 10;

/// When each address filed its objections in the last hour, in memory only: the broker keeps no
/// filer's address (a restart forgets the counts).
#[derive(Debug, Default)]
pub struct ObjectionRate {
    filed: std::collections::HashMap<std::net::IpAddr, Vec<std::time::Instant>>,
}

impl ObjectionRate {
    /// Counts a filing from `addr` at `now` if it is within the limit; otherwise `Err` with the
    /// seconds until the oldest of its filings leaves the hour.
    pub fn allow(&mut self, addr: std::net::IpAddr, now: std::time::Instant) -> Result<(), u64> {
        let hour = std::time::Duration::from_secs(3600);
        self.filed.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < hour);
            !times.is_empty()
        });
        let key = match addr {
            std::net::IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                std::net::IpAddr::V6(octets.into())
            }
            v4 => v4,
        };
        let times = self.filed.entry(key).or_default();
        if times.len() >= MAX_PER_ADDRESS_PER_HOUR {
            let wait = hour.saturating_sub(now.duration_since(times[0]));
            return Err(wait.as_secs().max(1));
        }
        times.push(now);
        Ok(())
    }
}

/// An objection as filed.
#[derive(Clone, Copy, Debug)]
pub struct NewObjection<'a> {
    /// What it is about: a job id, a scenario, a dataset or an operator, in the filer's words.
    pub subject: &'a str,
    /// The objection.
    pub text: &'a str,
    /// How to reach the filer, if they want to be reached (kept with the objection, never in
    /// the audit log or the public register).
    pub contact: Option<&'a str>,
}

/// An objection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectionStatus {
    /// Waiting for a reviewer.
    Open,
    /// A reviewer found it right; it counts against the operator it names.
    Upheld,
    /// A reviewer found it wrong.
    Dismissed,
}

impl ObjectionStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Upheld => "upheld",
            Self::Dismissed => "dismissed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "upheld" => Self::Upheld,
            "dismissed" => Self::Dismissed,
            _ => Self::Open,
        }
    }
}

/// An objection and its resolution.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Objection {
    /// Its tracking id (`obj-` and 16 hex digits): whoever holds it may read its status.
    pub id: String,
    /// When it was filed (Unix ms).
    pub filed_ms: i64,
    /// What it is about.
    pub subject: String,
    /// The objection.
    pub text: String,
    /// Its state.
    pub status: ObjectionStatus,
    /// The operator a reviewer found it concerns (set when resolved).
    pub operator: Option<String>,
    /// The reviewer's reason.
    pub reason: Option<String>,
    /// The reviewer.
    pub decided_by: Option<String>,
    /// When it was resolved.
    pub decided_ms: Option<i64>,
    /// The audit entry of its filing.
    pub audit_seq: i64,
}

/// What the filer (or anyone holding the tracking id) may read: no text, no contact.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ObjectionStatusView {
    /// The tracking id.
    pub id: String,
    /// When it was filed (Unix ms).
    pub filed_ms: i64,
    /// Its state.
    pub status: ObjectionStatus,
    /// The reviewer's reason, once resolved.
    pub reason: Option<String>,
    /// When it was resolved.
    pub decided_ms: Option<i64>,
}

impl From<Objection> for ObjectionStatusView {
    fn from(o: Objection) -> Self {
        Self {
            id: o.id,
            filed_ms: o.filed_ms,
            status: o.status,
            reason: o.reason,
            decided_ms: o.decided_ms,
        }
    }
}

/// Privacy loss charged on one dataset in one month (the policy's time zone).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MonthSpend {
    /// The dataset.
    pub dataset: String,
    /// `YYYY-MM`.
    pub month: String,
    /// ε charged (pure-DP datasets).
    pub epsilon: f64,
    /// ρ charged (zCDP datasets).
    pub rho: f64,
    /// δ charged.
    pub delta: f64,
    /// Operators that charged it.
    pub operators: i64,
    /// Jobs that charged it.
    pub jobs: i64,
}

/// Reports released from one dataset in one month.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MonthReleases {
    /// The dataset.
    pub dataset: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Reports released (each with a signed receipt).
    pub releases: i64,
}

/// One event on an operator's record.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CreditEvent {
    /// Its audit entry.
    pub seq: i64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// `suspended`, `resumed`, `releases.held`, `releases.unheld`, `review.rejected` or
    /// `objection.resolved` (upheld).
    pub kind: String,
    /// The reason given.
    pub reason: Option<String>,
}

/// An operator's credit record (信用记录): what went wrong and what was repaired, from the
/// audit log and the jobs.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CreditRecord {
    /// The operator.
    pub operator: String,
    /// Jobs submitted.
    pub jobs: i64,
    /// Jobs that released a report.
    pub released: i64,
    /// Jobs a reviewer (or holder) rejected.
    pub rejected: i64,
    /// Times it was suspended.
    pub suspensions: i64,
    /// Times its releases were held.
    pub release_holds: i64,
    /// Repairs: suspensions and holds lifted.
    pub repairs: i64,
    /// Objections upheld against it.
    pub objections_upheld: i64,
    /// Whether it is suspended now.
    pub suspended_now: bool,
    /// The latest events, newest first (at most 50).
    pub events: Vec<CreditEvent>,
}

/// The month (`YYYY-MM`) of a Unix time in ms, `offset_minutes` east of UTC, in SQL.
fn month_sql(ms_column: &str, offset_minutes: i32) -> String {
    format!(
        "strftime('%Y-%m', {ms_column} / 1000 + {}, 'unixepoch')",
        i64::from(offset_minutes) * 60
    )
}

fn objection_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Objection> {
    Ok(Objection {
        id: r.get(0)?,
        filed_ms: r.get(1)?,
        subject: r.get(2)?,
        text: r.get(3)?,
        status: ObjectionStatus::parse(&r.get::<_, String>(4)?),
        operator: r.get(5)?,
        reason: r.get(6)?,
        decided_by: r.get(7)?,
        decided_ms: r.get(8)?,
        audit_seq: r.get(9)?,
    })
}

const OBJECTION_COLUMNS: &str =
    "id, filed_ms, subject, text, status, operator, reason, decided_by, decided_ms, audit_seq";

impl Store {
    /// Files an objection: its `objection.filed` audit entry (the subject and the text's
    /// sha256; never the contact) and its row, in one transaction.
    pub fn file_objection(&self, o: &NewObjection<'_>) -> Result<Objection> {
        let id = format!("obj-{}", hex::encode(random_bytes::<8>()));
        let filed_ms = now_ms();
        let seq = self.write(|tx| -> Result<i64> {
            let seq = crate::audit::append(
                tx,
                NewEntry::new("objection.filed", "public").detail(json!({
                    "id": id,
                    "subject": o.subject,
                    "text_sha256": sha256_hex(o.text.as_bytes()),
                })),
            )?;
            tx.execute(
                "INSERT INTO objections (id, filed_ms, subject, text, contact, status, audit_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6)",
                params![id, filed_ms, o.subject, o.text, o.contact, seq],
            )?;
            Ok(seq)
        })?;
        Ok(Objection {
            id,
            filed_ms,
            subject: o.subject.to_string(),
            text: o.text.to_string(),
            status: ObjectionStatus::Open,
            operator: None,
            reason: None,
            decided_by: None,
            decided_ms: None,
            audit_seq: seq,
        })
    }

    /// Objection `id`, if there is one.
    pub fn objection(&self, id: &str) -> Result<Option<Objection>> {
        let sql = format!("SELECT {OBJECTION_COLUMNS} FROM objections WHERE id = ?1");
        Ok(self
            .lock()
            .query_row(&sql, [id], objection_row)
            .optional()?)
    }

    /// Objections, newest first: the open ones only, or all (at most `limit`).
    pub fn objections(&self, open_only: bool, limit: i64) -> Result<Vec<Objection>> {
        let sql = format!(
            "SELECT {OBJECTION_COLUMNS} FROM objections WHERE (?1 = 0 OR status = 'open')
             ORDER BY filed_ms DESC, id LIMIT ?2"
        );
        let conn = self.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![open_only as i64, limit], objection_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Objections by state: (open, upheld, dismissed).
    pub fn objection_counts(&self) -> Result<(i64, i64, i64)> {
        Ok(self.lock().query_row(
            "SELECT COALESCE(SUM(status = 'open'), 0), COALESCE(SUM(status = 'upheld'), 0),
                    COALESCE(SUM(status = 'dismissed'), 0) FROM objections",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }

    /// Resolves an open objection: upheld (against `operator`, when it names one) or dismissed,
    /// with the reviewer's reason; its `objection.resolved` audit entry and the row in one
    /// transaction.
    pub fn resolve_objection(
        &self,
        id: &str,
        uphold: bool,
        operator: Option<&str>,
        who: &str,
        reason: &str,
    ) -> Result<Objection, StateError> {
        let status = if uphold {
            ObjectionStatus::Upheld
        } else {
            ObjectionStatus::Dismissed
        };
        self.write(|tx| -> Result<(), StateError> {
            let now: Option<String> = tx
                .query_row("SELECT status FROM objections WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            match now.as_deref() {
                None => return Err(StateError::NoObjection(id.to_string())),
                Some("open") => {}
                Some(other) => {
                    return Err(StateError::ObjectionResolved {
                        id: id.to_string(),
                        status: ObjectionStatus::parse(other).as_str(),
                    });
                }
            }
            let mut e = NewEntry::new("objection.resolved", who).detail(json!({
                "id": id,
                "decision": status.as_str(),
                "reason": reason,
                "operator": operator,
            }));
            if let Some(op) = operator {
                e = e.operator(op);
            }
            crate::audit::append(tx, e)?;
            tx.execute(
                "UPDATE objections SET status = ?2, operator = ?3, reason = ?4, decided_by = ?5,
                        decided_ms = ?6 WHERE id = ?1",
                params![id, status.as_str(), operator, reason, who, now_ms()],
            )?;
            Ok(())
        })?;
        self.objection(id)?
            .ok_or_else(|| StateError::NoObjection(id.to_string()))
    }

    /// Privacy loss charged per dataset and month (months `offset_minutes` east of UTC),
    /// oldest first.
    pub fn monthly_spend(&self, offset_minutes: i32) -> Result<Vec<MonthSpend>> {
        let sql = format!(
            "SELECT dataset, {} AS month, SUM(epsilon), SUM(rho), SUM(delta),
                    COUNT(DISTINCT operator), COUNT(DISTINCT job)
             FROM charges GROUP BY dataset, month ORDER BY month, dataset",
            month_sql("at_ms", offset_minutes)
        );
        let conn = self.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok(MonthSpend {
                dataset: r.get(0)?,
                month: r.get(1)?,
                epsilon: r.get(2)?,
                rho: r.get(3)?,
                delta: r.get(4)?,
                operators: r.get(5)?,
                jobs: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Reports released per dataset and month, oldest first.
    pub fn monthly_releases(&self, offset_minutes: i32) -> Result<Vec<MonthReleases>> {
        let sql = format!(
            "SELECT d.value, {} AS month, COUNT(*)
             FROM jobs j, json_each(j.datasets) d
             WHERE j.state = 'succeeded' AND j.finished_ms IS NOT NULL
             GROUP BY d.value, month ORDER BY month, d.value",
            month_sql("j.finished_ms", offset_minutes)
        );
        let conn = self.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok(MonthReleases {
                dataset: r.get(0)?,
                month: r.get(1)?,
                releases: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `operator`'s credit record.
    pub fn credit(&self, operator: &str) -> Result<CreditRecord> {
        let conn = self.lock();
        let count =
            |sql: &str| -> rusqlite::Result<i64> { conn.query_row(sql, [operator], |r| r.get(0)) };
        let audit_kind = |kind: &str| -> rusqlite::Result<i64> {
            conn.query_row(
                "SELECT COUNT(*) FROM audit WHERE operator = ?1 AND kind = ?2",
                params![operator, kind],
                |r| r.get(0),
            )
        };
        let mut stmt = conn.prepare(
            "SELECT seq, json_extract(body, '$.at_ms'), kind, json_extract(body, '$.detail.reason')
             FROM audit WHERE operator = ?1 AND (kind IN ('suspended', 'resumed', 'releases.held',
                 'releases.unheld', 'review.rejected')
                 OR (kind = 'objection.resolved' AND json_extract(body, '$.detail.decision') = 'upheld'))
             ORDER BY seq DESC LIMIT 50",
        )?;
        let events = stmt
            .query_map([operator], |r| {
                Ok(CreditEvent {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(CreditRecord {
            operator: operator.to_string(),
            jobs: count("SELECT COUNT(*) FROM jobs WHERE operator = ?1")?,
            released: count(
                "SELECT COUNT(*) FROM jobs WHERE operator = ?1 AND state = 'succeeded'",
            )?,
            rejected: count(
                "SELECT COUNT(*) FROM jobs WHERE operator = ?1 AND state = 'rejected'",
            )?,
            suspensions: audit_kind("suspended")?,
            release_holds: audit_kind("releases.held")?,
            repairs: audit_kind("resumed")? + audit_kind("releases.unheld")?,
            objections_upheld: count(
                "SELECT COUNT(*) FROM objections WHERE operator = ?1 AND status = 'upheld'",
            )?,
            suspended_now: count(
                "SELECT COUNT(*) FROM suspensions WHERE kind = 'operator' AND name = ?1",
            )? > 0,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    #[test]
    fn the_objection_limit_is_per_address_per_hour_and_an_ipv6_64_is_one_address() {
        let mut rate = ObjectionRate::default();
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..MAX_PER_ADDRESS_PER_HOUR {
            let from = if i % 2 == 0 { a } else { same_64 };
            assert_eq!(rate.allow(from, t0 + Duration::from_secs(i as u64)), Ok(()));
        }
        // The /64 is spent: the wait is until its first filing leaves the hour.
        let late = t0 + Duration::from_secs(600);
        assert_eq!(rate.allow(same_64, late), Err(3000));
        assert_eq!(
            rate.allow(other, late),
            Ok(()),
            "another address has its own limit"
        );
        // An hour after the first filing, one more fits.
        assert_eq!(rate.allow(a, t0 + Duration::from_secs(3600)), Ok(()));
        assert!(rate.allow(a, t0 + Duration::from_secs(3600)).is_err());
    }
}
