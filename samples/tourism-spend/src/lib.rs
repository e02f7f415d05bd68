//! Tourism spending by scenic spot and month.
//!
//! Parameters (optional): `epsilon=<number>` for the query (default 1.0). Spends `epsilon` on
//! `tourism_trips`.

use sluice_guest::{Job, Report, Result};

fn tourism_spend(ctx: &mut Job) -> Result<Report> {
    let epsilon = ctx.param_f64("epsilon", 1.0)?;
    let info = ctx
        .describe("tourism_trips")
        .ok_or_else(|| sluice_guest::Error::msg("tourism_trips is not granted to this operator"))?;
    ctx.log(format!(
        "dataset {} held by {}: at most {} trips per visitor enter each query",
        info.name, info.holder, info.max_rows_per_unit
    ));

    let spend = ctx
        .query(
            "SELECT spot, month, COUNT(*) AS trips, SUM(spend) AS total_spend \
             FROM tourism_trips GROUP BY spot, month",
        )
        .epsilon(epsilon)
        .run()?;
    let (trips, trips_acc) = spend.total("trips");
    let (total, total_acc) = spend.total("total_spend");
    if let Some(b) = ctx.budget("tourism_trips") {
        ctx.log(format!(
            "budget: ε {:.2} of {:.2} spent by this job",
            b.epsilon_spent_this_job, b.epsilon_per_job
        ));
    }
    Ok(Report::new("Tourism spending by scenic spot and month")
        .text(format!(
            "Noisy trip counts and total spend per spot and month (ε={epsilon})."
        ))
        .table("spend by spot and month", &spend)
        .scalar("trips", trips, Some(trips_acc))
        .scalar("total spend (CNY)", total, Some(total_acc)))
}

sluice_guest::job!(tourism_spend);
