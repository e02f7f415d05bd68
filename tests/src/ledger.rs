//! The persistent ledger under concurrency: 240 queries at once, through two broker stores (two
//! SQLite connections, as two broker processes would have), against one grant.

use std::sync::{Arc, Barrier};

use sluice_broker::store::{LedgerAccountant, Store};
use sluice_runtime::{QueryError, Sandbox, SandboxConfig};

use crate::{asker, data_root, temp_dir, write_policy};

#[test]
fn concurrent_queries_never_overspend_a_grant() {
    let root = temp_dir("ledger");
    // `counter` may spend ε 5.0 per period and ε 1.0 per job; every query is its own job.
    let policy_dir = write_policy(&root, |p| {
        p.replace(
            "epsilon_per_job = 1.0\nepsilon_per_period = 2.0",
            "epsilon_per_job = 1.0\nepsilon_per_period = 5.0",
        )
    });
    let dir = root.join("state");
    drop(Store::init(&dir).unwrap());
    let stores: Vec<Arc<Store>> = (0..2)
        .map(|_| Arc::new(Store::open(&dir).unwrap()))
        .collect();
    let sandboxes: Vec<Arc<Sandbox>> = stores
        .iter()
        .map(|s| {
            let policy = sluice_policy::load(&policy_dir).unwrap();
            Arc::new(
                // No answer cache: every query here must be a separate, charged release.
                Sandbox::new(
                    SandboxConfig::new(
                        policy,
                        data_root(),
                        Arc::new(LedgerAccountant::new(s.clone())),
                    )
                    .without_answer_cache(),
                )
                .unwrap(),
            )
        })
        .collect();

    const N: usize = 240;
    const EPS: f64 = 0.1;
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let sandbox = sandboxes[i % 2].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let r = sandbox.block_on(sandbox.engine().query(
                    &asker("counter", &format!("job-{i}")),
                    "SELECT COUNT(*) AS n FROM health_visits",
                    EPS,
                ));
                drop(sandbox);
                r.map(|_| ())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, QueryError::BudgetExhausted(_)), "{e}");
        }
    }
    assert_eq!(ok, 50, "exactly 5.0 / 0.1 queries fit the period cap");

    let conn = Store::open_conn_readonly(&dir).unwrap();
    let (n, total): (i64, f64) = conn
        .query_row("SELECT COUNT(*), SUM(epsilon) FROM charges", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, 50);
    assert!(total <= 5.0 + 1e-9, "charged {total}");
    let queries: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit WHERE kind = 'query'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        queries, 50,
        "each charge has its audit entry, refusals have none"
    );
    let key = sluice_broker::keys::public_key(&stores[0].public_key()).unwrap();
    sluice_broker::audit::verify(
        &conn,
        &key,
        Some(&sluice_broker::store::checkpoint_path(&dir)),
    )
    .unwrap()
    .expect("the audit chain stays intact under concurrent writers");
    // Sandboxes own runtimes: drop them outside any async context (here, the test thread).
    drop(sandboxes);
}

#[test]
fn a_suspension_refuses_further_charges_at_once_and_records_nothing() {
    use sluice_runtime::{Amount, BudgetError, Caps, Charge};
    let dir = temp_dir("suspend").join("state");
    let store = Store::init(&dir).unwrap();
    let charge = Charge {
        operator: crate::op("analyst"),
        dataset: sluice_policy::DatasetId::new("health_visits").unwrap(),
        job: "job-1".into(),
        amount: Amount::pure(0.1),
        delta: 0.0,
        caps: Caps {
            per_job: 1.0,
            per_period: 10.0,
        },
        dataset_cap: None,
        scenario: None,
        delta_per_period: 0.0,
        period: std::time::Duration::from_secs(86_400),
        sql: "SELECT COUNT(*) FROM health_visits".into(),
        submitted_sql: "SELECT COUNT(*) FROM health_visits".into(),
        dataset_hash: "00".into(),
        mechanism: "discrete-laplace".into(),
        engine: sluice_runtime::remote::LOCAL.into(),
    };
    store.charge(&charge).unwrap();
    for (kind, name) in [("dataset", "health_visits"), ("operator", "analyst")] {
        store
            .set_suspended(kind, name, true, "root", "incident")
            .unwrap();
        assert!(matches!(
            store.charge(&charge),
            Err(BudgetError::Suspended(_))
        ));
        store
            .set_suspended(kind, name, false, "root", "resolved")
            .unwrap();
    }
    store.charge(&charge).unwrap();
    let spent = store.spent("analyst", "health_visits", "job-1", charge.period);
    assert!(
        (spent.job.epsilon - 0.2).abs() < 1e-9,
        "refused charges record nothing: {spent:?}"
    );
}

/// A sandbox over `dir`'s ledger and answer cache, under `policy_dir`.
fn broker_sandbox(dir: &std::path::Path, policy_dir: &std::path::Path) -> (Arc<Store>, Sandbox) {
    let store = Arc::new(Store::open(dir).unwrap());
    let sandbox = Sandbox::new(
        SandboxConfig::new(
            sluice_policy::load(policy_dir).unwrap(),
            data_root(),
            Arc::new(LedgerAccountant::new(store.clone())),
        )
        .with_answer_cache(Arc::new(sluice_broker::store::LedgerAnswerCache(
            store.clone(),
        ))),
    )
    .unwrap();
    (store, sandbox)
}

#[test]
fn a_query_repeated_a_thousand_times_is_charged_once_and_answered_identically() {
    let root = temp_dir("cache");
    let policy_dir = write_policy(&root, |p| p);
    let dir = root.join("state");
    drop(Store::init(&dir).unwrap());
    let sql = "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district";
    // Spelled differently, planned the same: still the same query.
    let respelled = "select DISTRICT, count(*) as n\n  from health_visits group by district";
    let (store, sandbox) = broker_sandbox(&dir, &policy_dir);
    let (first, _) = sandbox
        .block_on(sandbox.engine().query(&asker("analyst", "job-0"), sql, 0.5))
        .unwrap();
    for i in 1..1000 {
        let q = if i % 2 == 0 { sql } else { respelled };
        let (t, record) = sandbox
            .block_on(
                sandbox
                    .engine()
                    .query(&asker("analyst", &format!("job-{i}")), q, 0.5),
            )
            .unwrap();
        assert_eq!(
            t.rows, first.rows,
            "repetition {i} returned a different answer"
        );
        assert_eq!(record.cost.epsilon, 0.0);
    }
    let spent = store.spent(
        "analyst",
        "health_visits",
        "job-0",
        std::time::Duration::from_secs(86_400),
    );
    assert!(
        (spent.period.epsilon - 0.5).abs() < 1e-9,
        "charged {} in all",
        spent.period.epsilon
    );
    drop(sandbox);
    drop(store);

    // After a restart the answer is still cached; a different ε is a different, charged query.
    let (store, sandbox) = broker_sandbox(&dir, &policy_dir);
    let (again, record) = sandbox
        .block_on(
            sandbox
                .engine()
                .query(&asker("analyst", "job-after"), sql, 0.5),
        )
        .unwrap();
    assert_eq!(again.rows, first.rows);
    assert_eq!(record.cost.epsilon, 0.0);
    let (_, record) = sandbox
        .block_on(
            sandbox
                .engine()
                .query(&asker("analyst", "job-after"), sql, 0.25),
        )
        .unwrap();
    assert_eq!(record.cost.epsilon, 0.25);
    // Another operator's identical query is no new release of the data: the same answer, free.
    let (other, record) = sandbox
        .block_on(sandbox.engine().query(&asker("counter", "job-c"), sql, 0.5))
        .unwrap();
    assert_eq!((other.rows, record.cost.epsilon), (first.rows.clone(), 0.0));
    let conn = Store::open_conn_readonly(&dir).unwrap();
    let count = |kind: &str| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM audit WHERE kind = ?1", [kind], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(count("query"), 2, "two charged releases");
    assert_eq!(
        count("query.cached"),
        1001,
        "every cached answer is audited"
    );
    drop(sandbox);
    drop(store);
}

#[test]
fn zcdp_charges_are_stored_in_rho_capped_in_rho_and_survive_a_restart() {
    use sluice_runtime::{Amount, BudgetError, Caps, Charge};
    let dir = temp_dir("ledger-rho").join("state");
    let charge = |job: &str, rho: f64| Charge {
        operator: crate::op("analyst"),
        dataset: sluice_policy::DatasetId::new("visits_zcdp").unwrap(),
        job: job.into(),
        amount: Amount::zcdp(rho),
        delta: 0.0,
        caps: Caps {
            per_job: 0.3,
            per_period: 0.5,
        },
        dataset_cap: None,
        scenario: None,
        delta_per_period: 0.0,
        period: std::time::Duration::from_secs(86_400),
        sql: "SELECT COUNT(*) FROM visits_zcdp".into(),
        submitted_sql: "SELECT COUNT(*) FROM visits_zcdp".into(),
        dataset_hash: "00".into(),
        mechanism: "discrete-gaussian".into(),
        engine: sluice_runtime::remote::LOCAL.into(),
    };
    {
        let store = Store::init(&dir).unwrap();
        store.charge(&charge("j1", 0.2)).unwrap();
        assert!(matches!(
            store.charge(&charge("j1", 0.2)),
            Err(BudgetError::JobCap { unit: "ρ", .. })
        ));
        store.charge(&charge("j2", 0.25)).unwrap();
    }
    // Reopened: the ρ spent is still there and still caps the period.
    let store = Store::open(&dir).unwrap();
    let e = store.charge(&charge("j3", 0.1)).unwrap_err();
    assert!(matches!(e, BudgetError::PeriodCap { unit: "ρ", .. }), "{e}");
    let spent = store.spent(
        "analyst",
        "visits_zcdp",
        "j1",
        std::time::Duration::from_secs(86_400),
    );
    assert!((spent.job.rho - 0.2).abs() < 1e-12);
    assert!((spent.period.rho - 0.45).abs() < 1e-12);
    assert_eq!(spent.period.epsilon, 0.0, "nothing is charged in ε");
    // Reported as (ε, δ) too: ρ = 0.45 implies ε ≈ 8 at δ = 1e-6 (below ρ + 2√(ρ ln 1e6)).
    let eps = spent.implied_epsilon();
    assert!(
        eps > 3.0 && eps < 0.45 + 2.0 * (0.45 * 1e6f64.ln()).sqrt(),
        "{eps}"
    );
    let usage = store.usage().unwrap();
    assert!((usage[0].rho - 0.45).abs() < 1e-12 && usage[0].epsilon == 0.0);
    // A pure-ε charge on the same dataset this period is refused: the measures never mix.
    let pure = Charge {
        amount: Amount::pure(0.1),
        caps: Caps {
            per_job: 1.0,
            per_period: 1.0,
        },
        dataset_cap: None,
        scenario: None,
        ..charge("j4", 0.0)
    };
    assert!(matches!(
        store.charge(&pure),
        Err(BudgetError::MeasureChanged { .. })
    ));
}

/// A ledger that records charges (in memory) but can never make them durable: its `settle`
/// fails, as the broker's does after a failed sync of its log.
struct NeverDurable(sluice_runtime::InMemoryAccountant);

impl sluice_runtime::Accountant for NeverDurable {
    fn charge(
        &self,
        c: &sluice_runtime::Charge,
    ) -> Result<sluice_runtime::Recorded, sluice_runtime::BudgetError> {
        let _in_memory = self.0.charge(c)?;
        Ok(sluice_runtime::Recorded::Syncing(1))
    }
    fn settle(&self, _: sluice_runtime::Recorded) -> Result<(), sluice_runtime::BudgetError> {
        Err(sluice_runtime::BudgetError::Unavailable)
    }
    fn spent_in(
        &self,
        operator: &sluice_policy::OperatorId,
        dataset: &sluice_policy::DatasetId,
        scenario: Option<&str>,
        job: &str,
        period: std::time::Duration,
    ) -> sluice_runtime::Spent {
        self.0.spent_in(operator, dataset, scenario, job, period)
    }
    fn dataset_spent(
        &self,
        dataset: &sluice_policy::DatasetId,
        period: std::time::Duration,
    ) -> sluice_runtime::Totals {
        self.0.dataset_spent(dataset, period)
    }
}

#[test]
fn an_answer_whose_charge_cannot_be_made_durable_is_not_released_nor_cached() {
    let root = temp_dir("never-durable");
    let policy_dir = write_policy(&root, |p| p.to_string());
    let accountant = Arc::new(NeverDurable(sluice_runtime::InMemoryAccountant::new()));
    let sandbox = Sandbox::new(SandboxConfig::new(
        sluice_policy::load(&policy_dir).unwrap(),
        data_root(),
        accountant.clone(),
    ))
    .unwrap();
    let sql = "SELECT COUNT(*) AS n FROM health_visits";
    for job in ["job-1", "job-2"] {
        let r = sandbox.block_on(sandbox.engine().query(&asker("counter", job), sql, 0.1));
        assert!(
            matches!(r, Err(QueryError::ExecutionFailed)),
            "no answer leaves before its charge is durable: {r:?}"
        );
    }
    // Both were charged (the charge stands, as for any failure after it): the second was not
    // served from a cache the first filled.
    let spent = sluice_runtime::Accountant::dataset_spent(
        &*accountant,
        &sluice_policy::DatasetId::new("health_visits").unwrap(),
        std::time::Duration::from_secs(86_400),
    );
    assert!((spent.epsilon - 0.2).abs() < 1e-9, "{spent:?}");
}
