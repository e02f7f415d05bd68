//! Tamper evidence: every kind of edit to the audit log in the database file is detected by
//! `audit verify`, which names the first bad sequence number.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice_broker::audit::{self, NewEntry};
use sluice_broker::store::{Store, checkpoint_path, db_path};

use crate::temp_dir;

/// A data directory with 40 audit entries (checkpointed every 16, and at the end).
fn log() -> (PathBuf, String) {
    let dir = temp_dir("tamper").join("state");
    let store = Store::init(&dir).unwrap();
    for i in 2..=40 {
        store
            .record(NewEntry::new("test.entry", "tester").detail(json!({ "i": i })))
            .unwrap();
    }
    store.checkpoint().unwrap();
    (dir, store.public_key())
}

fn verify(dir: &Path, key: &str) -> Result<audit::Verified, audit::Broken> {
    let conn = Store::open_conn_readonly(dir).unwrap();
    let key = sluice_broker::keys::public_key(key).unwrap();
    audit::verify(&conn, &key, Some(&checkpoint_path(dir))).unwrap()
}

fn tampered(sql: impl FnOnce(&Connection)) -> Result<audit::Verified, audit::Broken> {
    let (dir, key) = log();
    assert_eq!(verify(&dir, &key).unwrap().entries, 40);
    let conn = Connection::open(db_path(&dir)).unwrap();
    sql(&conn);
    drop(conn);
    verify(&dir, &key)
}

fn rehash(conn: &Connection, from: i64) {
    // An attacker who knows the format rewrites every later entry so the chain links up again.
    let mut prev: String = conn
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [from - 1], |r| {
            r.get(0)
        })
        .unwrap();
    let max: i64 = conn
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    for seq in from..=max {
        let body: String = conn
            .query_row("SELECT body FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["prev"] = json!(prev);
        let body = v.to_string();
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        conn.execute(
            "UPDATE audit SET body = ?2, hash = ?3 WHERE seq = ?1",
            rusqlite::params![seq, body, hash],
        )
        .unwrap();
        prev = hash;
    }
}

#[test]
fn an_untouched_log_verifies() {
    let (dir, key) = log();
    let v = verify(&dir, &key).unwrap();
    assert_eq!(v.entries, 40);
    assert_eq!(v.last_checkpoint, Some(40));
    assert!(v.checkpoints >= 3);
}

#[test]
fn an_edited_entry_is_detected_at_its_sequence_number() {
    let r = tampered(|c| {
        c.execute(
            "UPDATE audit SET body = replace(body, '\"i\":10', '\"i\":11') WHERE seq = 10",
            [],
        )
        .unwrap();
    });
    assert_eq!(r.unwrap_err().seq, 10);
}

#[test]
fn an_edit_with_a_recomputed_hash_is_detected_at_the_next_entry() {
    let r = tampered(|c| {
        let body: String = c
            .query_row("SELECT body FROM audit WHERE seq = 10", [], |r| r.get(0))
            .unwrap();
        let body = body.replace("\"i\":10", "\"i\":99");
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        c.execute(
            "UPDATE audit SET body = ?1, hash = ?2 WHERE seq = 10",
            rusqlite::params![body, hash],
        )
        .unwrap();
    });
    assert_eq!(r.unwrap_err().seq, 11);
}

#[test]
fn a_rewritten_chain_is_detected_by_the_signed_checkpoints() {
    let r = tampered(|c| {
        c.execute(
            "UPDATE audit SET body = replace(body, '\"i\":10', '\"i\":99') WHERE seq = 10",
            [],
        )
        .unwrap();
        rehash(c, 10);
    });
    let e = r.unwrap_err();
    assert_eq!(e.seq, 16, "the first checkpoint after the edit: {e}");
    assert!(e.problem.contains("checkpoint"), "{e}");
}

#[test]
fn a_deleted_entry_is_detected() {
    let r = tampered(|c| {
        c.execute("DELETE FROM audit WHERE seq = 7", []).unwrap();
    });
    assert_eq!(r.unwrap_err().seq, 7);
}

#[test]
fn reordered_entries_are_detected() {
    let r = tampered(|c| {
        let row = |seq: i64| -> (String, String) {
            c.query_row("SELECT body, hash FROM audit WHERE seq = ?1", [seq], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        let (a, b) = (row(3), row(4));
        let set = |seq: i64, (body, hash): &(String, String)| {
            c.execute(
                "UPDATE audit SET body = ?2, hash = ?3 WHERE seq = ?1",
                rusqlite::params![seq, body, hash],
            )
            .unwrap();
        };
        set(3, &b);
        set(4, &a);
    });
    assert_eq!(r.unwrap_err().seq, 3);
}

#[test]
fn a_truncated_log_is_detected_even_with_its_checkpoints_deleted() {
    let r = tampered(|c| {
        c.execute("DELETE FROM audit WHERE seq > 30", []).unwrap();
        c.execute("DELETE FROM checkpoints WHERE seq > 30", [])
            .unwrap();
    });
    let e = r.unwrap_err();
    assert_eq!(e.seq, 31, "{e}");
    assert!(e.problem.contains("truncated"), "{e}");
}

/// Amounts at the edges of f64: subnormals, huge exponents, 17-digit values, and the ones an
/// attack run found breaking verification; then random bit patterns (finite ones), seeded.
fn extreme_floats(n: usize) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    // The two an attack run saw break verification, and the extremes of f64.
    let mut v = vec![7.888609052210118e-29, 0.400_001_201_000_000_03];
    v.extend([1e300, f64::MAX, f64::MIN_POSITIVE, 5e-324, -0.0]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    while v.len() < n {
        let x = f64::from_bits(rng.random::<u64>());
        if x.is_finite() {
            v.push(x);
        }
        // Subnormals and 17-significant-digit values near 1 are the hard cases for parsers.
        v.push(f64::from_bits(rng.random::<u64>() >> 12));
        v.push(1.0 + f64::from_bits(rng.random::<u64>() >> 12) * 1e300);
    }
    v
}

#[test]
fn extreme_floats_in_audited_records_verify_after_a_restart_and_an_edit_is_still_found() {
    let dir = temp_dir("tamper-floats").join("state");
    let floats = extreme_floats(600);
    let key = {
        let store = Store::init(&dir).unwrap();
        for (i, x) in floats.iter().enumerate() {
            store
                .record(
                    NewEntry::new("test.amount", "tester")
                        .detail(json!({ "epsilon": x, "delta": [x, -x], "i": i })),
                )
                .unwrap();
        }
        store.public_key()
    };
    // A restart: the store is reopened from disk.
    drop(Store::open(&dir).unwrap());
    let verified = verify(&dir, &key).unwrap_or_else(|e| panic!("an untouched log: {e}"));
    assert!(verified.entries > floats.len() as i64, "{verified:?}");

    // One flipped byte in an entry whose amount is extreme: found at exactly that entry.
    let seq = 300;
    let conn = Connection::open(db_path(&dir)).unwrap();
    let body: String = conn
        .query_row("SELECT body FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
        .unwrap();
    let at = body.find("\"epsilon\":").unwrap() + "\"epsilon\":".len() + 1;
    let mut bytes = body.into_bytes();
    bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    conn.execute(
        "UPDATE audit SET body = ?2 WHERE seq = ?1",
        rusqlite::params![seq, String::from_utf8(bytes).unwrap()],
    )
    .unwrap();
    drop(conn);
    assert_eq!(verify(&dir, &key).unwrap_err().seq, seq);
}
