//! Tourism spending by scenic spot and month.
//!
//! Parameters (optional): `epsilon=<number>` (default 1.0) when `tourism_trips` is accounted in
//! pure ε-DP, `rho=<number>` (default 0.5) when it is accounted in zero-concentrated DP. Spends
//! that on `tourism_trips`.

use sluice_guest::{Job, PrivacyMeasure, Report, Result};

fn tourism_spend(ctx: &mut Job) -> Result<Report> {
    let info = ctx
        .describe("tourism_trips")
        .ok_or_else(|| sluice_guest::Error::msg("tourism_trips is not granted to this operator"))?;
    ctx.log(format!(
        "dataset {} held by {}: at most {} trips per visitor enter each query",
        info.name, info.holder, info.max_rows_per_unit
    ));

    // The dataset's policy decides the unit of its budget.
    let zcdp = matches!(info.privacy_measure, PrivacyMeasure::Zcdp);
    let amount = if zcdp {
        ctx.param_f64("rho", 0.5)?
    } else {
        ctx.param_f64("epsilon", 1.0)?
    };
    let query = ctx.query(
        "SELECT spot, month, COUNT(*) AS trips, SUM(spend) AS total_spend \
         FROM tourism_trips GROUP BY spot, month",
    );
    let spend = if zcdp {
        query.rho(amount)
    } else {
        query.epsilon(amount)
    }
    .run()?;
    let budget = format!("{}={amount}", if zcdp { "ρ" } else { "ε" });
    let (trips, trips_acc) = spend.total("trips");
    let (total, total_acc) = spend.total("total_spend");
    if let Some(b) = ctx.budget("tourism_trips") {
        ctx.log(match b.privacy_measure {
            PrivacyMeasure::Pure => format!(
                "budget: ε {:.2} of {:.2} spent by this job",
                b.epsilon_spent_this_job, b.epsilon_per_job
            ),
            PrivacyMeasure::Zcdp => format!(
                "budget: ρ {:.2} of {:.2} spent by this job; this period's spending amounts to ε {:.2} at δ 1e-6",
                b.rho_spent_this_job, b.rho_per_job, b.epsilon_implied_this_period
            ),
        });
    }
    Ok(Report::new("Tourism spending by scenic spot and month")
        .text(format!(
            "Noisy trip counts and total spend per spot and month ({budget})."
        ))
        .table("spend by spot and month", &spend)
        .scalar("trips", trips, Some(trips_acc))
        .scalar("total spend (CNY)", total, Some(total_acc)))
}

sluice_guest::job!(tourism_spend);
