//! Visits and mean cost per district, and visits of adults by diagnosis group.
//!
//! Parameters (optional): `min_age=<int>` (default 18), `epsilon=<number>` per query (default 0.4).
//! Spends 2 × `epsilon` on `health_visits`.

use sluice_guest::{Error, Job, Report, Result};

fn visits_by_district(ctx: &mut Job) -> Result<Report> {
    let epsilon = ctx.param_f64("epsilon", 0.4)?;
    let min_age = ctx.param_f64("min_age", 18.0)?;
    if !(0.0..=100.0).contains(&min_age) || min_age.fract() != 0.0 {
        return Err(Error::InvalidParams(
            "`min_age` must be a whole number from 0 to 100".into(),
        ));
    }

    let by_district = ctx
        .query(
            "SELECT district, COUNT(*) AS visits, AVG(cost) AS mean_cost \
             FROM health_visits GROUP BY district",
        )
        .epsilon(epsilon)
        .run()?;
    ctx.log(format!("{} districts released", by_district.rows().len()));

    let by_diagnosis = ctx
        .query(format!(
            "SELECT diagnosis_group, COUNT(*) AS visits FROM health_visits \
             WHERE age >= {min_age} GROUP BY diagnosis_group",
            min_age = min_age as i64
        ))
        .epsilon(epsilon)
        .run()?;
    ctx.log(format!(
        "{} diagnosis groups released",
        by_diagnosis.rows().len()
    ));

    // Post-processing of noisy answers only: a share computed from the released counts.
    let (total, total_acc) = by_district.total("visits");
    let mut report = Report::new("Health visits by district")
        .text(format!(
            "Noisy counts and mean costs per district (ε={epsilon} per table). \
             The second table counts visits of patients aged {min_age} or more."
        ))
        .table("visits by district", &by_district)
        .table("adult visits by diagnosis group", &by_diagnosis)
        .scalar("total visits", total, Some(total_acc));
    if let Some(row) =
        (0..by_district.rows().len()).find(|&r| by_district.key(r, "district") == Some("Guangling"))
    {
        let n = by_district.number(row, "visits").unwrap_or(0.0);
        if total > 0.0 {
            report = report.scalar("share of visits in Guangling", n / total, None);
        }
    }
    Ok(report)
}

sluice_guest::job!(visits_by_district);
