//! Contribution metering and revenue statements (按贡献决定报酬、收益分配、收益反哺).
//!
//! Every job is metered per dataset when it ends: queries answered (cached answers included,
//! which cost no privacy budget but are still a use of the data), cached answers, aggregate
//! cells released, and its compute time, split over its datasets by their share of its queries.
//! The privacy loss comes from the ledger itself (`charges`), so a statement's ε and ρ are the
//! ledger's. Nothing metered is derived from a row of data: cells released are what the
//! operator received.
//!
//! A statement covers one party (a holder, or an operator: the matching invoice view) and one
//! calendar month in the policy's time zone. Each line is one job's use of one dataset, priced by
//! the tariff of the grant it ran under (public-interest use is free); a monthly cap per grant
//! applies in the order the lines' first charges were made. Amounts are whole fen, so totals
//! are exact; the earmarked share (收益反哺) is floored per line. Statements are canonical JSON
//! signed with the broker's key and verify offline (`sluice statement verify`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use ed25519_dalek::VerifyingKey;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use sluice_policy::{DatasetId, Date, OperatorId, Policy, Tariff, Usage};
use sluice_runtime::privacy::QueryRecord;

use crate::store::{Cached, Store};

/// One job's meter on one dataset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meter {
    /// Queries answered, cached answers included.
    pub queries: i64,
    /// Of those, answered from the identical-query cache.
    pub cached: i64,
    /// Aggregate cells released.
    pub cells: i64,
    /// Compute time, in ms (the job's run time split by its share of queries).
    pub compute_ms: i64,
}

/// A job's meters, one per dataset it queried, from its answered queries and its run time.
pub fn meters(queries: &[QueryRecord], run_ms: i64) -> BTreeMap<String, Meter> {
    let mut out: BTreeMap<String, Meter> = BTreeMap::new();
    for q in queries {
        let m = out.entry(q.dataset.clone()).or_default();
        m.queries += 1;
        m.cached += i64::from(q.cached);
        m.cells += q.cells as i64;
    }
    let total = queries.len().max(1) as i64;
    let mut left = run_ms;
    let n = out.len();
    for (i, m) in out.values_mut().enumerate() {
        // The last dataset takes the remainder, so the parts add up to the run time.
        m.compute_ms = if i + 1 == n {
            left
        } else {
            run_ms * m.queries / total
        };
        left -= m.compute_ms;
    }
    out
}

/// One job's use of one dataset in the month, priced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementLine {
    /// The dataset's holder.
    pub holder: String,
    /// The operator.
    pub operator: String,
    /// The scenario the job ran under, if it named one.
    pub scenario: Option<String>,
    /// `public-interest` or `commercial` (the grant's use).
    pub usage: String,
    /// The job.
    pub job: String,
    /// The dataset.
    pub dataset: String,
    /// What it used and what that costs.
    #[serde(flatten)]
    pub used: Use,
    /// Whether the monthly cap cut this line's fee.
    pub capped: bool,
    /// When its first charge (or, for cached answers only, its meter) was made (Unix ms).
    pub first_ms: i64,
}

/// What was used and what it costs: one line's, or a statement's total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Use {
    /// ε charged (the ledger's).
    pub epsilon: f64,
    /// ρ charged (the ledger's).
    pub rho: f64,
    /// δ charged.
    pub delta: f64,
    /// Queries answered, cached ones included.
    pub queries: i64,
    /// Of those, answered from the cache (no privacy loss).
    pub cached: i64,
    /// Aggregate cells released.
    pub cells: i64,
    /// Compute time, in ms.
    pub compute_ms: i64,
    /// The fee, in fen (0.01 CNY), after the grants' monthly caps.
    pub fee_fen: u64,
    /// The part of the fee earmarked for public data (收益反哺), in fen.
    pub earmark_fen: u64,
}

impl std::ops::Add for Use {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        Self {
            epsilon: self.epsilon + o.epsilon,
            rho: self.rho + o.rho,
            delta: self.delta + o.delta,
            queries: self.queries + o.queries,
            cached: self.cached + o.cached,
            cells: self.cells + o.cells,
            compute_ms: self.compute_ms + o.compute_ms,
            fee_fen: self.fee_fen + o.fee_fen,
            earmark_fen: self.earmark_fen + o.earmark_fen,
        }
    }
}

/// A statement's totals: the sums of its lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Lines.
    pub lines: usize,
    /// Their use, summed.
    #[serde(flatten)]
    pub used: Use,
}

/// A signed monthly statement for one holder (what its datasets earned) or one operator (what
/// it owes: the invoice view).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Statement {
    /// Format version (1).
    pub version: u32,
    /// `holder` or `operator`.
    pub kind: String,
    /// The holder id or operator id.
    pub party: String,
    /// `YYYY-MM`, in `time_zone`.
    pub month: String,
    /// The time zone months are counted in.
    pub time_zone: String,
    /// `CNY`: every `*_fen` amount is in fen (0.01 CNY).
    pub currency: String,
    /// sha256 of the policy whose tariffs priced it.
    pub policy_sha256: String,
    /// Its lines, in the order their first charges were made.
    pub lines: Vec<StatementLine>,
    /// Their sums.
    pub totals: Totals,
    /// When it was issued (Unix ms).
    pub issued_ms: i64,
    /// The broker's public key (hex ed25519).
    pub public_key: String,
    /// The broker's signature over everything else (hex).
    pub signature: String,
}

impl Statement {
    fn signed_bytes(&self) -> Vec<u8> {
        crate::keys::signed_bytes("sluice-statement-v1", self)
    }

    /// Checks the signature with `key`, and that the totals are the sums of the lines.
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        if hex::encode(key.to_bytes()) != self.public_key {
            bail!("the statement was signed by a different key than the one given");
        }
        if !crate::keys::verify(key, &self.signed_bytes(), &self.signature) {
            bail!("the statement's signature is invalid (it was altered or forged)");
        }
        if totals(&self.lines) != self.totals {
            bail!("the statement's totals are not the sums of its lines");
        }
        Ok(())
    }
}

/// The sums of `lines`.
pub fn totals(lines: &[StatementLine]) -> Totals {
    Totals {
        lines: lines.len(),
        used: lines
            .iter()
            .map(|l| l.used)
            .fold(Use::default(), |a, b| a + b),
    }
}

/// Whose statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party<'a> {
    /// A holder: every line on its datasets.
    Holder(&'a str),
    /// An operator: every line of its jobs.
    Operator(&'a str),
}

/// The first and last-plus-one Unix ms of `month` (`YYYY-MM`) `offset_minutes` east of UTC.
pub fn month_bounds(month: &str, offset_minutes: i32) -> Result<(i64, i64)> {
    let bad = || anyhow::anyhow!("`{month}` is not a month such as 2026-11");
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if month.len() != 7 || !(1..=12).contains(&m) || !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    let first = |y: i32, m: u32| {
        Date::parse(&format!("{y:04}-{m:02}-01"))
            .map(|d| (d.days_since_epoch() * 86_400 - i64::from(offset_minutes) * 60) * 1000)
            .ok_or_else(bad)
    };
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Ok((first(y, m)?, first(ny, nm)?))
}

/// The month (`YYYY-MM`) of Unix time `ms` in `zone`.
pub fn month_at(ms: i64, zone: &sluice_policy::TimeZone) -> String {
    let day = Date::at(ms.div_euclid(1000), zone.offset_minutes).to_string();
    day[..7].to_string()
}

/// The unpriced lines of every job in `[from_ms, to_ms)`: the ledger's charges and the meters,
/// by job and dataset, in the order of their first charge.
fn raw_lines(store: &Store, from_ms: i64, to_ms: i64) -> Result<Vec<StatementLine>> {
    let conn = store.lock();
    let mut lines: BTreeMap<(String, String), StatementLine> = BTreeMap::new();
    let mut charges = conn.prepare(
        "SELECT job, dataset, operator, scenario, SUM(epsilon), SUM(rho), SUM(delta), MIN(at_ms)
         FROM charges WHERE at_ms >= ?1 AND at_ms < ?2 GROUP BY job, dataset",
    )?;
    let mut rows = charges.query(params![from_ms, to_ms])?;
    while let Some(r) = rows.next()? {
        let line = line_of(&mut lines, r)?;
        line.used.epsilon = r.get(4)?;
        line.used.rho = r.get(5)?;
        line.used.delta = r.get(6)?;
        line.first_ms = r.get(7)?;
    }
    let mut meters = conn.prepare(
        "SELECT job, dataset, operator, scenario, queries, cached, cells, compute_ms, at_ms
         FROM meters WHERE at_ms >= ?1 AND at_ms < ?2",
    )?;
    let mut rows = meters.query(params![from_ms, to_ms])?;
    while let Some(r) = rows.next()? {
        let line = line_of(&mut lines, r)?;
        line.used.queries = r.get(4)?;
        line.used.cached = r.get(5)?;
        line.used.cells = r.get(6)?;
        line.used.compute_ms = r.get(7)?;
        line.first_ms = line.first_ms.min(r.get(8)?);
    }
    let mut out: Vec<StatementLine> = lines.into_values().collect();
    out.sort_by(|a, b| (a.first_ms, &a.job, &a.dataset).cmp(&(b.first_ms, &b.job, &b.dataset)));
    Ok(out)
}

/// The line of the job and dataset a row starts with (`job, dataset, operator, scenario`),
/// made on first sight.
fn line_of<'l>(
    lines: &'l mut BTreeMap<(String, String), StatementLine>,
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<&'l mut StatementLine> {
    let (job, dataset): (String, String) = (r.get(0)?, r.get(1)?);
    let (operator, scenario) = (r.get(2)?, r.get(3)?);
    Ok(lines
        .entry((job.clone(), dataset.clone()))
        .or_insert_with(|| StatementLine {
            holder: String::new(),
            operator,
            scenario,
            usage: String::new(),
            job,
            dataset,
            used: Use::default(),
            capped: false,
            first_ms: i64::MAX,
        }))
}

/// The grant a line ran under (as authorization picked it), with its index in the policy: a
/// grant's monthly cap is counted per grant.
fn grant_of<'p>(
    policy: &'p Policy,
    l: &StatementLine,
) -> Option<(usize, &'p sluice_policy::Grant)> {
    let operator = OperatorId::new(&l.operator).ok()?;
    let dataset = DatasetId::new(&l.dataset).ok()?;
    let grant = policy
        .grant_in(&operator, &dataset, l.scenario.as_deref())
        .ok()?;
    let i = policy.grants.iter().position(|g| std::ptr::eq(g, grant))?;
    Some((i, grant))
}

/// A line's fee before the cap, in fen.
fn list_price(t: &Tariff, l: &StatementLine) -> u64 {
    let privacy = l.used.epsilon * t.fen_per_epsilon as f64 + l.used.rho * t.fen_per_rho as f64;
    (privacy.round().max(0.0) as u64)
        .saturating_add((l.used.queries.max(0) as u64).saturating_mul(t.fen_per_query))
        .saturating_add((l.used.cells.max(0) as u64).saturating_mul(t.fen_per_cell))
}

/// Names each line's holder and use, and prices it under its grant's tariff and monthly cap
/// (applied across every holder's lines, in order).
fn price(policy: &Policy, lines: &mut [StatementLine]) {
    let mut used: BTreeMap<usize, u64> = BTreeMap::new();
    for l in lines.iter_mut() {
        l.holder = DatasetId::new(&l.dataset)
            .ok()
            .and_then(|d| policy.datasets.get(&d))
            .map_or_else(|| "(no longer in the policy)".into(), |d| d.holder.clone());
        let Some((i, grant)) = grant_of(policy, l) else {
            l.usage = "(no grant in the policy)".into();
            continue;
        };
        l.usage = grant.usage.as_str().into();
        l.scenario = grant.scenario.clone();
        let Some(t) = grant.tariff.filter(|_| grant.usage == Usage::Commercial) else {
            continue;
        };
        let before = used.entry(i).or_default();
        let list = list_price(&t, l);
        l.used.fee_fen = list.min(t.cap_fen_per_month.saturating_sub(*before));
        l.capped = l.used.fee_fen < list;
        *before += l.used.fee_fen;
        l.used.earmark_fen = l.used.fee_fen * u64::from(t.earmark_percent) / 100;
    }
}

/// `party`'s statement for `month`, signed.
pub fn statement(
    store: &Store,
    policy: &Policy,
    policy_sha256: &str,
    party: Party<'_>,
    month: &str,
) -> Result<Statement> {
    let zone = &policy.time_zone;
    let (from, to) = month_bounds(month, zone.offset_minutes)?;
    let mut lines = raw_lines(store, from, to).context("while reading the ledger")?;
    price(policy, &mut lines);
    lines.retain(|l| match party {
        Party::Holder(h) => l.holder == h,
        Party::Operator(o) => l.operator == o,
    });
    let (kind, who) = match party {
        Party::Holder(h) => ("holder", h),
        Party::Operator(o) => ("operator", o),
    };
    let mut s = Statement {
        version: 1,
        kind: kind.into(),
        party: who.into(),
        month: month.into(),
        time_zone: zone.name.clone(),
        currency: "CNY".into(),
        policy_sha256: policy_sha256.into(),
        totals: totals(&lines),
        lines,
        issued_ms: crate::audit::now_ms(),
        public_key: store.public_key(),
        signature: String::new(),
    };
    s.signature = store.sign(&s.signed_bytes());
    Ok(s)
}

/// Writes a job's meters (one row per dataset), replacing any earlier ones, in `tx`.
pub(crate) fn insert_meters(
    tx: &rusqlite::Transaction<'_>,
    job: &str,
    operator: &str,
    scenario: Option<&str>,
    meters: &BTreeMap<String, Meter>,
) -> rusqlite::Result<()> {
    let now = crate::audit::now_ms();
    for (dataset, m) in meters {
        tx.exec(
            "INSERT OR REPLACE INTO meters
             (job, dataset, operator, scenario, queries, cached, cells, compute_ms, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                job,
                dataset,
                operator,
                scenario,
                m.queries,
                m.cached,
                m.cells,
                m.compute_ms,
                now
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_bounded_in_the_policy_zone() {
        let (from, to) = month_bounds("2026-11", 8 * 60).unwrap();
        // 2026-11-01 00:00 +08:00 is 2026-10-31 16:00 UTC.
        assert_eq!(from, 1_793_462_400_000);
        assert_eq!(to - from, 30 * 86_400_000);
        let (from, to) = month_bounds("2026-12", 0).unwrap();
        assert_eq!(to - from, 31 * 86_400_000);
        for bad in ["2026-13", "2026-1", "26-11", "november", "2026-00"] {
            assert!(month_bounds(bad, 0).is_err(), "{bad}");
        }
    }

    fn line(epsilon: f64, queries: i64, cells: i64) -> StatementLine {
        StatementLine {
            holder: "h".into(),
            operator: "op".into(),
            scenario: None,
            usage: "commercial".into(),
            job: "j".into(),
            dataset: "d".into(),
            used: Use {
                epsilon,
                queries,
                cells,
                ..Use::default()
            },
            capped: false,
            first_ms: 0,
        }
    }

    #[test]
    fn a_tariff_prices_privacy_queries_and_cells() {
        let t = Tariff {
            fen_per_epsilon: 10_000,
            fen_per_query: 100,
            fen_per_cell: 2,
            cap_fen_per_month: 1_000_000,
            ..Tariff::default()
        };
        // 0.25 ε → 2,500; 3 queries → 300; 40 cells → 80.
        assert_eq!(list_price(&t, &line(0.25, 3, 40)), 2_880);
        assert_eq!(list_price(&Tariff::default(), &line(0.25, 3, 40)), 0);
    }

    #[test]
    fn meters_split_compute_by_queries_and_add_up() {
        let q = |dataset: &str, cached: bool, cells: u64| QueryRecord {
            dataset: dataset.into(),
            dataset_hash: String::new(),
            normalized: String::new(),
            submitted: String::new(),
            cost: Default::default(),
            cached,
            cells,
            accuracy: vec![],
            row_functions: vec![],
            engine: sluice_runtime::remote::LOCAL.into(),
        };
        let m = meters(&[q("a", false, 9), q("a", true, 9), q("b", false, 4)], 1001);
        assert_eq!(m["a"].queries, 2);
        assert_eq!(m["a"].cached, 1);
        assert_eq!(m["a"].cells, 18);
        assert_eq!(m["b"].cells, 4);
        assert_eq!(m["a"].compute_ms + m["b"].compute_ms, 1001);
        assert_eq!(m["a"].compute_ms, 667);
    }
}
