//! Crash consistency: the broker is killed with SIGKILL at random moments while operators submit
//! a stream of jobs, restarted, and killed again, 22 times. Afterwards the audit log verifies, the
//! ledger equals the charges recorded in the audit log, every report an operator received carries
//! a receipt whose ε equals what the ledger charged, and no job is left running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_broker::client::{Client, Submission};
use sluice_broker::keys::{Receipt, public_key};
use sluice_broker::store::{Role, Store};

use crate::{data_root, guest, temp_dir, write_policy};

const KILLS: usize = 22;

/// The broker process the parent kills. Runs only when the parent starts this test binary with
/// `SLUICE_CRASH_CHILD` set; otherwise it returns at once.
#[test]
#[ignore = "a broker process to SIGKILL; run as their child process by crash::killed_brokers_stay_consistent and crash::a_held_job_survives_a_kill_and_is_released_after_it"]
fn crash_child() {
    let Some(dir) = std::env::var_os("SLUICE_CRASH_CHILD").map(PathBuf::from) else {
        return;
    };
    let policy = PathBuf::from(std::env::var_os("SLUICE_CRASH_POLICY").expect("policy"));
    let data = PathBuf::from(std::env::var_os("SLUICE_CRASH_DATA").expect("data root"));
    let running = sluice_broker::server::Running::start(
        &dir,
        sluice_broker::server::Config::new(policy, data),
        Default::default(),
        "127.0.0.1:0",
    )
    .expect("the broker starts");
    std::fs::write(dir.join("url.tmp"), &running.url).unwrap();
    std::fs::rename(dir.join("url.tmp"), dir.join("url")).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// The child is returned to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
fn spawn(dir: &Path, policy: &Path) -> (Child, String) {
    let _ = std::fs::remove_file(dir.join("url"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_CRASH_CHILD", dir)
        .env("SLUICE_CRASH_POLICY", policy)
        .env("SLUICE_CRASH_DATA", data_root())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("child.log")).unwrap())
        .spawn()
        .expect("start the broker process");
    let started = Instant::now();
    loop {
        if let Ok(url) = std::fs::read_to_string(dir.join("url")) {
            return (child, url);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the broker did not start:\n{}",
                std::fs::read_to_string(dir.join("child.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small xorshift generator for kill times (not privacy-relevant).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn killed_brokers_stay_consistent() {
    let root = temp_dir("crash");
    // The analyst's grant allows ε 100 per period: about 1,000 jobs of ε 0.1.
    let policy = write_policy(&root, |p| p);
    let dir = root.join("state");
    let store = Store::init(&dir).unwrap();
    let token = store
        .create_token(Role::Operator, "analyst", "test")
        .unwrap();
    let key = public_key(&store.public_key()).unwrap();
    drop(store);
    let wasm = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let datasets = vec!["health_visits".to_string()];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));

    let mut submitted: Vec<String> = Vec::new();
    let mut received: Vec<(String, String, Receipt)> = Vec::new();
    let mut fetched = std::collections::HashSet::new();
    let collect = |c: &Client,
                   submitted: &[String],
                   fetched: &mut std::collections::HashSet<String>,
                   received: &mut Vec<(String, String, Receipt)>| {
        for id in submitted {
            if fetched.contains(id) {
                continue;
            }
            let Ok(job) = c.get_json(&format!("/v1/jobs/{id}")) else {
                return;
            };
            if job["state"] == "succeeded" {
                let (Ok(report), Ok(receipt)) = (
                    c.get_text(&format!("/v1/jobs/{id}/result")),
                    c.get_text(&format!("/v1/jobs/{id}/receipt")),
                ) else {
                    return;
                };
                received.push((id.clone(), report, serde_json::from_str(&receipt).unwrap()));
                fetched.insert(id.clone());
            }
        }
    };
    for _ in 0..KILLS {
        let (mut child, url) = spawn(&dir, &policy);
        let c = Client::new(&url, &token);
        let deadline = Instant::now() + Duration::from_millis(200 + rng.below(1300));
        while Instant::now() < deadline {
            // A distinct ε per job, so that no answer comes from the identical-query cache and
            // every report's queries are charged to that job.
            let params = format!("epsilon=0.05{:04}&min_age=18", submitted.len() + 1);
            if let Ok(r) = c.submit(&Submission {
                wasm: &wasm,
                purpose: "crash test",
                params: &params,
                datasets: &datasets,
                max_epsilon: None,
                scenario: None,
            }) {
                submitted.push(r["id"].as_str().unwrap().to_string());
            }
            collect(&c, &submitted, &mut fetched, &mut received);
            std::thread::sleep(Duration::from_millis(rng.below(60)));
        }
        child.kill().expect("SIGKILL the broker");
        child.wait().unwrap();
    }

    // Restart once more and let every queued job finish.
    let (mut child, url) = spawn(&dir, &policy);
    let c = Client::new(&url, &token);
    let started = Instant::now();
    loop {
        let jobs = c.get_json("/v1/jobs").unwrap();
        let busy = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["state"] == "queued" || j["state"] == "running")
            .count();
        if busy == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{busy} jobs never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    collect(&c, &submitted, &mut fetched, &mut received);
    child.kill().unwrap();
    child.wait().unwrap();

    // 1. The audit log verifies.
    let conn = Store::open_conn_readonly(&dir).unwrap();
    let verified = sluice_broker::audit::verify(
        &conn,
        &key,
        Some(&sluice_broker::store::checkpoint_path(&dir)),
    )
    .unwrap()
    .unwrap_or_else(|b| panic!("{b}"));

    // 2. The ledger equals the charges in the audit log, entry by entry.
    let mut stmt = conn
        .prepare("SELECT c.job, c.epsilon, a.body FROM charges c LEFT JOIN audit a ON a.seq = c.audit_seq")
        .unwrap();
    let rows: Vec<(String, f64, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (job, eps, body) in &rows {
        let body: Value =
            serde_json::from_str(body.as_deref().expect("each charge has its audit entry"))
                .unwrap();
        assert_eq!(body["kind"], "query");
        assert_eq!(body["job"], job.as_str());
        assert_eq!(body["detail"]["epsilon"].as_f64(), Some(*eps));
    }
    let ledger: f64 = rows.iter().map(|r| r.1).sum();
    let audited: f64 = {
        let mut stmt = conn
            .prepare("SELECT body FROM audit WHERE kind = 'query'")
            .unwrap();
        let bodies: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(bodies.len(), rows.len(), "no query entry without a charge");
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str::<Value>(b).unwrap()["detail"]["epsilon"]
                    .as_f64()
                    .unwrap()
            })
            .sum()
    };
    assert!(
        (ledger - audited).abs() < 1e-9,
        "ledger {ledger} vs audit {audited}"
    );

    // 3. Every report an operator received was charged, and its receipt says exactly what.
    for (id, report, receipt) in &received {
        receipt.verify(&key, report.as_bytes()).unwrap();
        let charged: f64 = rows.iter().filter(|r| &r.0 == id).map(|r| r.1).sum();
        assert!(
            charged > 0.0,
            "report of {id} was released without a charge"
        );
        assert!(
            (charged - receipt.epsilon).abs() < 1e-9,
            "{id}: receipt {} vs ledger {charged}",
            receipt.epsilon
        );
        let kind: String = conn
            .query_row(
                "SELECT kind FROM audit WHERE seq = ?1",
                [receipt.audit_seq],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kind, "job.released");
    }

    // 4. Nothing is left running; interrupted jobs were failed, not lost.
    let states: Vec<(String, i64)> = {
        let mut stmt = conn
            .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        states
            .iter()
            .all(|(s, _)| s == "succeeded" || s == "failed"),
        "{states:?}"
    );
    let succeeded = states
        .iter()
        .find(|s| s.0 == "succeeded")
        .map_or(0, |s| s.1);
    assert!(succeeded > 0, "some jobs must get through: {states:?}");
    assert!(!received.is_empty());
    println!(
        "{KILLS} kills: {} jobs submitted, states {states:?}, {} reports received, {} charges (ε {ledger:.2}), {} audit entries",
        submitted.len(),
        received.len(),
        rows.len(),
        verified.entries
    );
}

/// A held job survives SIGKILL: after the restart it is still held, its report unreadable, and a
/// reviewer can release it with a receipt that verifies; the audit log verifies throughout.
#[test]
fn a_held_job_survives_a_kill_and_is_released_after_it() {
    let root = temp_dir("crash-held");
    let policy = write_policy(&root, |p| p);
    let dir = root.join("state");
    let store = Store::init(&dir).unwrap();
    let token = |role, who: &str| store.create_token(role, who, "test").unwrap();
    let (analyst, admin, reviewer) = (
        token(Role::Operator, "analyst"),
        token(Role::Admin, "root"),
        token(Role::Reviewer, "rita"),
    );
    let key = public_key(&store.public_key()).unwrap();
    drop(store);

    let (mut child, url) = spawn(&dir, &policy);
    let operator = Client::new(&url, &analyst);
    let id = operator
        .submit(&Submission {
            wasm: &guest(env!("GUEST_HOSTILE")),
            purpose: "crash test: held",
            params: "until-refused",
            datasets: &["health_visits".to_string()],
            max_epsilon: None,
            scenario: None,
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The dataset is suspended at the job's first query; the job ends held.
    let admin_client = Client::new(&url, &admin);
    let mut suspended = false;
    operator
        .follow(&id, |kind, _| {
            if kind == "query" && !suspended {
                suspended = true;
                admin_client
                    .post_json(
                        "/v1/admin/datasets/health_visits/suspend",
                        &serde_json::json!({ "reason": "crash drill" }),
                    )
                    .unwrap();
            }
        })
        .unwrap();
    assert_eq!(
        operator.get_json(&format!("/v1/jobs/{id}")).unwrap()["state"],
        "held"
    );
    child.kill().expect("SIGKILL the broker");
    child.wait().unwrap();

    let (mut child, url) = spawn(&dir, &policy);
    let operator = Client::new(&url, &analyst);
    assert_eq!(
        operator.get_json(&format!("/v1/jobs/{id}")).unwrap()["state"],
        "held"
    );
    assert!(operator.get_text(&format!("/v1/jobs/{id}/result")).is_err());
    Client::new(&url, &admin)
        .post_json(
            "/v1/admin/datasets/health_visits/resume",
            &serde_json::json!({ "reason": "drill over" }),
        )
        .unwrap();
    let r = Client::new(&url, &reviewer)
        .post_json(
            &format!("/v1/reviews/{id}/release"),
            &serde_json::json!({ "reason": "aggregate report, incident closed" }),
        )
        .unwrap();
    assert_eq!(r["state"], "succeeded");
    let report = operator.get_text(&format!("/v1/jobs/{id}/result")).unwrap();
    let receipt: Receipt = serde_json::from_str(
        &operator
            .get_text(&format!("/v1/jobs/{id}/receipt"))
            .unwrap(),
    )
    .unwrap();
    receipt.verify(&key, report.as_bytes()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let conn = Store::open_conn_readonly(&dir).unwrap();
    sluice_broker::audit::verify(
        &conn,
        &key,
        Some(&sluice_broker::store::checkpoint_path(&dir)),
    )
    .unwrap()
    .unwrap_or_else(|b| panic!("{b}"));
}
