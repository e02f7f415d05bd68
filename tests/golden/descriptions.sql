# One query a line: `ε | SQL`, answered for operator `analyst` under tests/fixtures/policy; each
# released table's mechanism description goes to `descriptions.expected`.
# `SLUICE_BLESS=1 cargo test --release -p sluice-tests goldens` rewrites it.
0.1 | SELECT COUNT(*) AS n FROM health_visits
0.1 | SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district
0.2 | SELECT sex, SUM(age) AS s FROM health_visits GROUP BY sex
0.2 | SELECT AVG(cost) AS mean_cost FROM health_visits
0.3 | SELECT diagnosis_group, COUNT(*) AS n, AVG(age) AS a FROM health_visits GROUP BY diagnosis_group
0.2 | SELECT STDDEV(age) AS sd FROM health_visits
0.2 | SELECT VARIANCE(cost) AS v FROM health_visits WHERE sex = 'M'
0.2 | SELECT MEDIAN(age) AS m FROM health_visits
0.2 | SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY age) AS p90 FROM health_visits
0.2 | SELECT COUNT(DISTINCT person_id) AS people FROM health_visits
0.2 | SELECT CASE WHEN age < 18 THEN 'child' WHEN age < 65 THEN 'adult' ELSE 'senior' END AS band, COUNT(*) AS n FROM health_visits GROUP BY band
0.2 | SELECT district, COUNT(*) AS n FROM health_raw GROUP BY district
