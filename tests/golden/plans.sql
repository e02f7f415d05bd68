# One query a line: `operator | SQL`, under tests/fixtures/policy. `plans.expected` holds the
# logical plan of each query's additive releases over its bounded relation (the DP rewrite:
# clamping, fixed point, contribution bounding), as DataFusion prints it.
# `SLUICE_BLESS=1 cargo test --release -p sluice-tests goldens` rewrites it.
analyst | SELECT COUNT(*) AS n FROM health_visits
analyst | SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district
analyst | SELECT sex, SUM(age) AS s, AVG(cost) AS c FROM health_visits WHERE age >= 18 GROUP BY sex
analyst | SELECT COUNT(DISTINCT person_id) AS people FROM health_visits
analyst | SELECT CASE WHEN age < 18 THEN 'child' ELSE 'adult' END AS band, STDDEV(cost) AS sd FROM health_visits GROUP BY band
tourism-lab | SELECT spot, month, SUM(spend) AS s FROM tourism_trips GROUP BY spot, month
