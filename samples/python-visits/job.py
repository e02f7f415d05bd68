"""Which diagnosis groups cost the city's clinics the most per visit, for residents of a given age?

A Sluice sample job in Python. Parameters (all optional): ``epsilon`` (what the job spends on
`health_visits`, default 0.6), ``min_age`` (default 18).

    sluice build samples/python-visits
    sluice run --operator canal-analytics --dataset health_visits samples/python-visits/build/job.wasm --params min_age=65
"""

from sluice import Job, Report


def run(job: Job) -> Report:
    epsilon = job.param_float("epsilon", 0.6)
    min_age = job.param_int("min_age", 18)
    if not 0 <= min_age <= 100:
        from sluice import InvalidParams

        raise InvalidParams(f"min_age must be between 0 and 100, got {min_age}")

    # One query, three releases (the count, and the sum and count behind each mean): ε is
    # split evenly between them.
    groups = job.query(
        "SELECT diagnosis_group, COUNT(*) AS visits, AVG(cost) AS avg_cost "
        f"FROM health_visits WHERE age >= {min_age} GROUP BY diagnosis_group"
    ).epsilon(epsilon).run()
    job.log(f"asked 1 query for ε={groups.cost.epsilon}")

    # Post-processing of the noisy answers costs nothing more.
    ranked = sorted(groups.records(), key=lambda r: r["avg_cost"] or 0.0, reverse=True)
    top, bottom = ranked[0], ranked[-1]
    visits, width = groups.total("visits")
    return (
        Report(f"Cost per visit by diagnosis group, patients aged {min_age}+")
        .table("by diagnosis group", groups)
        .scalar("visits in all", visits, width)
        .text(
            f"The costliest group per visit is {top['diagnosis_group']} "
            f"(about {top['avg_cost']:.0f} CNY), the cheapest {bottom['diagnosis_group']} "
            f"(about {bottom['avg_cost']:.0f} CNY)."
        )
        .text(
            "Counts and means carry calibrated noise (each cell's 95% interval is in the table); "
            f"the job spent ε={groups.cost.epsilon}."
        )
    )
