"""When, and at what ages, do residents visit the clinics for respiratory illness?

A Sluice sample job in Python that uses the demo data's date column and age bins. Parameters
(all optional): ``epsilon`` (per query, default 0.3; the job asks two), ``year`` (default 2025).

    sluice build samples/python-seasons
    sluice run --operator canal-analytics --dataset health_visits samples/python-seasons/build/job.wasm
"""

from sluice import InvalidParams, Job, Report


def run(job: Job) -> Report:
    epsilon = job.param_float("epsilon", 0.3)
    year = job.param_int("year", 2025)
    if not 2024 <= year <= 2026:
        raise InvalidParams(f"the demo data covers 2024 to 2026, not {year}")

    # `date_trunc` keys release every month the WHERE range keeps within the column's public
    # bounds (the query's literals are public): twelve rows, empty months too.
    months = job.query(
        "SELECT date_trunc('month', visit_day) AS month, COUNT(*) AS visits "
        "FROM health_visits WHERE diagnosis_group = 'respiratory' "
        f"AND visit_day >= DATE '{year}-01-01' AND visit_day <= DATE '{year}-12-31' "
        "GROUP BY date_trunc('month', visit_day)"
    ).epsilon(epsilon).run()

    # `GROUP BY age` over the policy's public bins: a histogram, every bin released.
    ages = job.query(
        "SELECT age, COUNT(*) AS visits FROM health_visits "
        "WHERE diagnosis_group = 'respiratory' GROUP BY age"
    ).epsilon(epsilon).run()

    busiest = max(months.records(), key=lambda r: r["visits"] or 0)
    return (
        Report(f"Respiratory visits in {year}: by month, and by age group")
        .table("by month", months)
        .table("by age group", ages)
        .text(
            f"The busiest month was {busiest['month'][:7]}. Each count carries discrete Laplace "
            f"noise; the job spent ε={months.cost.epsilon + ages.cost.epsilon:.2f}."
        )
    )
