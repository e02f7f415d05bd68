//! Running totals of the budget ledger: what a grant or a dataset spent in a period, read at two
//! index rows instead of summed over every charge in the period.
//!
//! Each charge row carries the sums of every charge of its **grant** (operator, dataset,
//! scenario) and of its **dataset** (every operator) up to and including it, in charge order
//! (`at_ms`, then `id`). What a key spent since a time `t` is then its last sum minus its last sum
//! before `t`: two lookups in an index, whether the period holds ten charges or a million.
//!
//! Two things make that exact:
//! - **Whole units.** The sums are integers: ε and ρ in units of 10⁻¹² and δ in units of 10⁻¹⁸,
//!   each charge rounded *up* to a whole unit, so that a difference of two sums is exactly the sum
//!   of the charges between them, and never less than what was charged. (Floating-point running
//!   sums would lose the small charges of a long history to rounding.)
//! - **Charge times never go back for a key.** A charge is stamped no earlier than the last charge
//!   of its grant and of its dataset, so the charges since `t` are the last ones in charge order.
//!   If the clock steps back, charges are stamped at the last charge's time until it catches up:
//!   they count in a period for a little longer, never shorter.

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use sluice_runtime::Totals;

use crate::store::Cached;

/// Units per ε and per ρ in a running total.
const EPSILON_RHO_UNITS: f64 = 1e12;
/// Units per δ in a running total.
const DELTA_UNITS: f64 = 1e18;

/// Amounts in whole units (see the module's doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Units {
    /// ε, in units of 10⁻¹².
    pub(crate) epsilon: i64,
    /// ρ, in units of 10⁻¹².
    pub(crate) rho: i64,
    /// δ, in units of 10⁻¹⁸.
    pub(crate) delta: i64,
}

impl Units {
    /// One charge's amounts, each rounded up to a whole unit. The same rounding as the migration
    /// that gave the charges before running totals theirs (`x * 1e12`, then its ceiling).
    pub(crate) fn of_charge(epsilon: f64, rho: f64, delta: f64) -> Result<Self> {
        let whole = |x: f64, per: f64, what: &str| -> Result<i64> {
            let units = (x * per).ceil();
            anyhow::ensure!(
                x.is_finite() && x >= 0.0 && units < i64::MAX as f64,
                "a charge of {what} {x} cannot be kept in the ledger's running totals"
            );
            Ok(units as i64)
        };
        Ok(Self {
            epsilon: whole(epsilon, EPSILON_RHO_UNITS, "ε")?,
            rho: whole(rho, EPSILON_RHO_UNITS, "ρ")?,
            delta: whole(delta, DELTA_UNITS, "δ")?,
        })
    }

    fn plus(self, o: Self) -> Result<Self> {
        let sum = || -> Option<Self> {
            Some(Self {
                epsilon: self.epsilon.checked_add(o.epsilon)?,
                rho: self.rho.checked_add(o.rho)?,
                delta: self.delta.checked_add(o.delta)?,
            })
        };
        sum().context("the ledger's running totals overflow")
    }

    fn minus(self, o: Self) -> Self {
        Self {
            epsilon: self.epsilon - o.epsilon,
            rho: self.rho - o.rho,
            delta: self.delta - o.delta,
        }
    }

    /// The amounts as the runtime counts them.
    pub(crate) fn totals(self) -> Totals {
        Totals {
            epsilon: self.epsilon as f64 / EPSILON_RHO_UNITS,
            rho: self.rho as f64 / EPSILON_RHO_UNITS,
            delta: self.delta as f64 / DELTA_UNITS,
        }
    }
}

/// Whose running total.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Key<'a> {
    /// One operator's grant on a dataset, under a scenario (`None`: the grant without one).
    Grant {
        operator: &'a str,
        dataset: &'a str,
        scenario: Option<&'a str>,
    },
    /// Every operator's charges on a dataset.
    Dataset(&'a str),
}

/// A key's running total at one charge.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mark {
    /// The charge's time.
    pub(crate) at_ms: i64,
    /// The sums up to and including it.
    pub(crate) units: Units,
}

impl Key<'_> {
    /// Its last charge's mark, if it has one, the last before `before_ms` when given.
    fn mark(&self, conn: &Connection, before_ms: Option<i64>) -> Result<Option<Mark>> {
        let before = before_ms.unwrap_or(i64::MAX);
        let mark = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Mark> {
            Ok(Mark {
                at_ms: r.get(0)?,
                units: Units {
                    epsilon: r.get(1)?,
                    rho: r.get(2)?,
                    delta: r.get(3)?,
                },
            })
        };
        let found = match *self {
            Key::Grant {
                operator,
                dataset,
                scenario,
            } => conn
                .row(
                    "SELECT at_ms, grant_total_epsilon, grant_total_rho, grant_total_delta
                     FROM charges INDEXED BY charges_grant_totals
                     WHERE operator = ?1 AND dataset = ?2 AND scenario IS ?3 AND at_ms < ?4
                     ORDER BY at_ms DESC, id DESC LIMIT 1",
                    params![operator, dataset, scenario, before],
                    mark,
                )
                .optional()?,
            Key::Dataset(dataset) => conn
                .row(
                    "SELECT at_ms, dataset_total_epsilon, dataset_total_rho, dataset_total_delta
                     FROM charges INDEXED BY charges_dataset
                     WHERE dataset = ?1 AND at_ms < ?2
                     ORDER BY at_ms DESC, id DESC LIMIT 1",
                    params![dataset, before],
                    mark,
                )
                .optional()?,
        };
        Ok(found)
    }

    /// Its last charge's mark (zero when it has none).
    pub(crate) fn last(&self, conn: &Connection) -> Result<Mark> {
        Ok(self.mark(conn, None)?.unwrap_or_default())
    }

    /// What it spent at `since_ms` or later.
    pub(crate) fn spent_since(&self, conn: &Connection, since_ms: i64) -> Result<Totals> {
        self.spent_since_mark(conn, self.last(conn)?, since_ms)
    }

    /// [`Key::spent_since`], its last mark `last` already read.
    pub(crate) fn spent_since_mark(
        &self,
        conn: &Connection,
        last: Mark,
        since_ms: i64,
    ) -> Result<Totals> {
        let before = self.mark(conn, Some(since_ms))?.unwrap_or_default();
        Ok(last.units.minus(before.units).totals())
    }
}

/// A new charge's place in its two running totals: its time (no earlier than either key's last
/// charge) and the sums to store with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NextCharge {
    /// When it is stamped.
    pub(crate) at_ms: i64,
    /// Its grant's sums, with it.
    pub(crate) grant: Units,
    /// Its dataset's sums, with it.
    pub(crate) dataset: Units,
}

impl NextCharge {
    /// The charge `amount` made at `now_ms`, after `g` and `d`, its grant's and its dataset's
    /// last marks ([`Key::last`]).
    pub(crate) fn new(g: Mark, d: Mark, amount: Units, now_ms: i64) -> Result<Self> {
        Ok(Self {
            at_ms: now_ms.max(g.at_ms).max(d.at_ms),
            grant: g.units.plus(amount)?,
            dataset: d.units.plus(amount)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_is_rounded_up_to_whole_units() {
        let u = Units::of_charge(0.01, 0.0, 1e-9).unwrap();
        assert_eq!(u.epsilon, 10_000_000_000);
        // 1e-9 × 1e18 is a hair above 10⁹ in floating point: rounded up, one unit more.
        assert!(
            (1_000_000_000..=1_000_000_001).contains(&u.delta),
            "{}",
            u.delta
        );
        // Below one unit still costs one.
        assert_eq!(Units::of_charge(1e-15, 0.0, 0.0).unwrap().epsilon, 1);
        assert_eq!(Units::of_charge(0.0, 0.0, 0.0).unwrap(), Units::default());
        assert!(Units::of_charge(f64::NAN, 0.0, 0.0).is_err());
        assert!(Units::of_charge(-0.1, 0.0, 0.0).is_err());
        assert!(Units::of_charge(1e10, 0.0, 0.0).is_err());
    }

    #[test]
    fn totals_never_count_less_than_was_charged() {
        let charges = [0.0100001, 0.3, 1e-13, 0.7, 0.123456789];
        let mut sum = Units::default();
        for c in charges {
            sum = sum.plus(Units::of_charge(c, 0.0, 0.0).unwrap()).unwrap();
        }
        let exact: f64 = charges.iter().sum();
        let kept = sum.totals().epsilon;
        assert!(kept >= exact && kept - exact < 1e-11, "{kept} vs {exact}");
    }

    #[test]
    fn overflow_is_an_error() {
        let big = Units {
            epsilon: i64::MAX,
            ..Units::default()
        };
        assert!(big.plus(Units::of_charge(1.0, 0.0, 0.0).unwrap()).is_err());
    }
}
