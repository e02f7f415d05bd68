# One query a line: `operator | SQL`, estimated at ε 0.5 under tests/fixtures/policy.
# `refusals.expected` holds what each gets; `SLUICE_BLESS=1 cargo test --release -p sluice-tests goldens` rewrites it.
analyst | DELETE FROM health_visits
analyst | SELECT COUNT(*) FROM health_visits; SELECT COUNT(*) FROM health_visits
analyst | SELECT COUNT(*) FROM secret_registry
analyst | SELECT COUNT(*) FROM tourism_trips
analyst | SELECT COUNT(*) FROM health_visits a JOIN health_raw b ON a.age = b.age
analyst | SELECT district FROM health_visits
analyst | SELECT district FROM health_visits GROUP BY district
analyst | SELECT district, COUNT(*) FROM health_visits GROUP BY district ORDER BY district
analyst | SELECT COUNT(*) FROM health_visits LIMIT 1
analyst | SELECT district, COUNT(*) FROM health_visits GROUP BY district HAVING COUNT(*) > 3
analyst | SELECT COUNT(*) FROM health_visits WHERE age > (SELECT 1)
analyst | SELECT name, COUNT(*) FROM health_visits GROUP BY name
analyst | SELECT COUNT(*) FROM health_visits WHERE id_card = '32100000000001'
analyst | SELECT person_id, COUNT(*) FROM health_visits GROUP BY person_id
analyst | SELECT COUNT(*) FROM health_visits WHERE person_id = 1
analyst | SELECT SUM(person_id) FROM health_visits
analyst | SELECT AVG(name) FROM health_visits
analyst | SELECT MAX(age) FROM health_visits
analyst | SELECT COUNT(DISTINCT age) FROM health_visits
analyst | SELECT COUNT(*) * 2 FROM health_visits
analyst | SELECT STDDEV(age) * 2 FROM health_visits
analyst | SELECT MEDIAN(age + 1) FROM health_visits
analyst | SELECT PERCENTILE_CONT(1.5) WITHIN GROUP (ORDER BY age) FROM health_visits
analyst | SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY age DESC) FROM health_visits
analyst | SELECT SUM(cost) FROM health_raw
analyst | SELECT MEDIAN(cost) FROM health_raw
analyst | SELECT district, COUNT(*) FROM health_raw GROUP BY district
analyst | SELECT age + 1 AS b, COUNT(*) FROM health_visits GROUP BY b
analyst | SELECT COUNT(*) FROM health_visits WHERE abs(age) > 3
analyst | SELECT COUNT(*) FROM health_visits WHERE CAST(age AS VARCHAR) = '3'
analyst | SELECT COUNT(*) FROM health_visits WHERE age = 'old'
analyst | SELECT COUNT(*) FROM health_visits WHERE age + 1 > 3
analyst | SELECT COUNT(*) FROM health_visits WHERE age > -(-9223372036854775808)
analyst | SELECT COUNT(*) FROM health_visits WHERE age > 1 / 0
analyst | SELECT CASE WHEN age < 18 THEN 1 ELSE 2 END AS b, COUNT(*) FROM health_visits GROUP BY b
analyst | SELECT CASE sex WHEN 'F' THEN 'f' END AS b, COUNT(*) FROM health_visits GROUP BY b
analyst | SELECT CASE WHEN name = 'x' THEN 'a' END AS b, COUNT(*) FROM health_visits GROUP BY b
analyst | SELECT CASE WHEN abs(age) < 18 THEN 'c' END AS b, COUNT(*) FROM health_visits GROUP BY b
analyst | SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM (SELECT COUNT(*) AS n FROM health_visits)))))))))))))))))
expired-op | SELECT COUNT(*) FROM health_visits
counter | SELECT SUM(age) FROM health_visits
tourism-lab | SELECT spot, COUNT(*) FROM tourism_trips GROUP BY spot
analyst | SELECT COUNT(*) AS n FROM health_visits WHERE sex = 'F'
analyst | SELECT district, COUNT(*) AS n, AVG(age) AS mean_age FROM health_visits GROUP BY district
