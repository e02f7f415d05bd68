//! Spending per person and returning visitors by scenic spot, through the job's own row
//! functions (`rows/`): `per_person(spend, group_size)` divides a trip's spend among its group,
//! `repeat_trip(spend)` marks a visitor's trips after their first. Both run inside the sandbox,
//! one fresh instance per visitor; the queries see only their clamped outputs, in DP aggregates.
//!
//! Parameters (optional): `rho=<number>` per query (default 0.25) when `tourism_trips` is
//! accounted in zero-concentrated DP, `epsilon=<number>` per query (default 0.5) when in pure
//! ε-DP. Spends twice that on `tourism_trips`.

use sluice_guest::{Job, PrivacyMeasure, Report, Result};

fn per_person(ctx: &mut Job) -> Result<Report> {
    let zcdp = matches!(
        ctx.describe("tourism_trips").map(|d| d.privacy_measure),
        Some(PrivacyMeasure::Zcdp)
    );
    let (name, amount) = if zcdp {
        ("ρ", ctx.param_f64("rho", 0.25)?)
    } else {
        ("ε", ctx.param_f64("epsilon", 0.5)?)
    };
    let spend = ctx.query(
        "SELECT spot, AVG(per_person(spend, group_size)) AS spend_per_person, \
         COUNT(*) AS trips FROM tourism_trips GROUP BY spot",
    );
    let spend = if zcdp {
        spend.rho(amount)
    } else {
        spend.epsilon(amount)
    }
    .run()?;
    let returning = ctx.query(
        "SELECT spot, SUM(repeat_trip(spend)) AS repeat_trips \
         FROM tourism_trips GROUP BY spot",
    );
    let returning = if zcdp {
        returning.rho(amount)
    } else {
        returning.epsilon(amount)
    }
    .run()?;
    ctx.log(format!("{} spots released", spend.rows().len()));
    Ok(Report::new("Spending per person by scenic spot")
        .text(format!(
            "Mean spend per group member (a row function dividing each trip's spend by its group \
             size, clamped to 0-2000 CNY) and trips by returning visitors, per spot \
             ({name}={amount} per table)."
        ))
        .table("spend per person by spot", &spend)
        .table("returning visitors' trips by spot", &returning))
}

sluice_guest::job!(per_person);
