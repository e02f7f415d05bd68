//! The audit log: an append-only hash chain in SQLite, with signed checkpoints.
//!
//! Each entry's body is JSON (keys sorted) holding its sequence number, time, kind, actor, the
//! job/operator/dataset it concerns, details, and the hash of the previous entry; the entry's hash
//! is the sha256 of its body's exact stored bytes. Verification hashes those bytes as they are and
//! never re-derives them (a verifier that re-serialized parsed JSON would report honest entries
//! holding extreme floats as edited, and stop there, hiding any later real edit). Every [`CHECKPOINT_EVERY`] entries, at each release and
//! at shutdown, the broker signs `(seq, hash)` with its ed25519 key and stores the checkpoint both
//! in the database and in `<data-dir>/audit-checkpoints.jsonl`.
//!
//! [`verify`] detects an edited, deleted, reordered or inserted entry anywhere, and a truncation
//! of the log back past any checkpoint (the file copy survives edits to the database). A tail
//! written after the last checkpoint can be truncated undetectably; checkpoints bound that window.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result};
use ed25519_dalek::VerifyingKey;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::keys::{self, Keys, sha256_hex};
use crate::store::Cached;

/// Entries between automatic checkpoints.
pub const CHECKPOINT_EVERY: i64 = 16;

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append.
#[derive(Clone, Debug, Default)]
pub struct NewEntry {
    /// What happened, e.g. `job.submitted`.
    pub kind: &'static str,
    /// Who did it (a principal, or `broker`).
    pub actor: String,
    /// The job it concerns.
    pub job: Option<String>,
    /// The operator it concerns.
    pub operator: Option<String>,
    /// The dataset it concerns.
    pub dataset: Option<String>,
    /// Details.
    pub detail: Value,
}

impl NewEntry {
    /// An entry of `kind` by `actor`.
    pub fn new(kind: &'static str, actor: impl Into<String>) -> Self {
        Self {
            kind,
            actor: actor.into(),
            detail: Value::Object(Default::default()),
            ..Self::default()
        }
    }
    /// Concerning `job`.
    pub fn job(mut self, job: &str) -> Self {
        self.job = Some(job.into());
        self
    }
    /// Concerning `operator`.
    pub fn operator(mut self, operator: &str) -> Self {
        self.operator = Some(operator.into());
        self
    }
    /// Concerning `dataset`.
    pub fn dataset(mut self, dataset: &str) -> Self {
        self.dataset = Some(dataset.into());
        self
    }
    /// With details.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored entry.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// Position in the log, from 1.
    pub seq: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// What happened.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// The job it concerns.
    pub job: Option<String>,
    /// The operator it concerns.
    pub operator: Option<String>,
    /// The dataset it concerns.
    pub dataset: Option<String>,
    /// Details.
    pub detail: Value,
    /// Hash of the previous entry.
    pub prev: String,
    /// This entry's hash.
    pub hash: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Appends `e` inside `tx`; returns its sequence number. The caller commits.
pub fn append(tx: &Transaction<'_>, e: NewEntry) -> Result<i64> {
    let (last_seq, prev): (i64, String) = tx
        .row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_string()));
    let seq = last_seq + 1;
    let body = json!({
        "seq": seq,
        "at_ms": now_ms(),
        "kind": e.kind,
        "actor": e.actor,
        "job": e.job,
        "operator": e.operator,
        "dataset": e.dataset,
        "detail": e.detail,
        "prev": prev,
    })
    .to_string();
    let hash = sha256_hex(body.as_bytes());
    tx.exec(
        "INSERT INTO audit (seq, kind, job, operator, dataset, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, e.kind, e.job, e.operator, e.dataset, body, hash],
    )?;
    Ok(seq)
}

/// The message a checkpoint signs.
fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("sluice-audit-checkpoint-v1\n{seq}\n{hash}").into_bytes()
}

/// A signed statement that the log's entry `seq` has hash `hash`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The entry.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was signed (Unix ms).
    pub at_ms: i64,
    /// ed25519 signature (hex).
    pub signature: String,
}

/// Signs the current head (if not signed yet) into the database and the checkpoint file.
pub fn checkpoint(conn: &Connection, keys: &Keys, file: &Path) -> Result<Option<Checkpoint>> {
    let cp = sign_head(conn, keys)?;
    if let Some(cp) = &cp {
        anchor(file, cp)?;
    }
    Ok(cp)
}

/// Signs the current head (if not signed yet) into the database, in the caller's transaction
/// when there is one; [`anchor`] it in the checkpoint file once that commits. A crash between
/// leaves the checkpoint in the database only, which [`verify`] accepts: it checks every
/// checkpoint of either place against the chain.
pub fn sign_head(conn: &Connection, keys: &Keys) -> Result<Option<Checkpoint>> {
    let head: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((seq, hash)) = head else {
        return Ok(None);
    };
    let done: bool = conn.row(
        "SELECT EXISTS(SELECT 1 FROM checkpoints WHERE seq = ?1)",
        [seq],
        |r| r.get(0),
    )?;
    if done {
        return Ok(None);
    }
    let cp = Checkpoint {
        seq,
        signature: keys.sign(&checkpoint_message(seq, &hash)),
        hash,
        at_ms: now_ms(),
    };
    conn.exec(
        "INSERT OR IGNORE INTO checkpoints (seq, hash, at_ms, signature) VALUES (?1, ?2, ?3, ?4)",
        params![cp.seq, cp.hash, cp.at_ms, cp.signature],
    )?;
    Ok(Some(cp))
}

/// Appends a committed checkpoint to the checkpoint file (kept apart from the database, so that a
/// database rolled back past it is caught).
pub fn anchor(file: &Path, cp: &Checkpoint) -> Result<()> {
    append_line(file, &serde_json::to_string(cp)?)
}

/// Appends committed checkpoints to the checkpoint file on a thread of its own, so that the
/// job whose release signed one does not wait for the file's sync: the checkpoints that arrive
/// while one sync runs are appended together (in order of `seq`) and synced once. Each waits
/// first for the sync of the commit that signed it, so that the file never names an entry that
/// is not on disk. A crash before a checkpoint is appended leaves it in the database only,
/// which [`verify`] accepts, as it did when the append came right after the commit. Dropping it
/// appends what is pending.
pub(crate) struct Anchorer {
    shared: Arc<AnchorQueue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct AnchorQueue {
    file: PathBuf,
    synced: crate::wal_sync::SyncWaiter,
    /// Checkpoints to append, each with the sync mark of its commit; and whether to stop.
    pending: Mutex<(Vec<(Checkpoint, u64)>, bool)>,
    wake: Condvar,
}

impl Anchorer {
    /// Starts the thread that appends to `file` once `synced` says their commits are on disk.
    pub(crate) fn start(file: PathBuf, synced: crate::wal_sync::SyncWaiter) -> Result<Self> {
        let shared = Arc::new(AnchorQueue {
            file,
            synced,
            pending: Mutex::new((Vec::new(), false)),
            wake: Condvar::new(),
        });
        let q = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-anchor".into())
            .spawn(move || q.run())
            .context("cannot start the checkpoint file's thread")?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Appends `cp` to the file once the commit that signed it, of sync mark `mark`, is on disk.
    pub(crate) fn anchor(&self, cp: Checkpoint, mark: u64) {
        let mut pending = self.shared.lock();
        pending.0.push((cp, mark));
        self.shared.wake.notify_one();
    }
}

impl AnchorQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<(Checkpoint, u64)>, bool)> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until stopped with nothing pending: takes what is pending, appends it in one write.
    fn run(&self) {
        loop {
            let mut batch = {
                let mut pending = self.lock();
                while pending.0.is_empty() && !pending.1 {
                    pending = self.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
                if pending.0.is_empty() {
                    return;
                }
                std::mem::take(&mut pending.0)
            };
            batch.sort_by_key(|(cp, _)| cp.seq);
            let last_mark = batch.iter().map(|(_, mark)| *mark).max().unwrap_or(0);
            let lines = self.synced.wait(last_mark).and_then(|()| {
                let lines = batch
                    .iter()
                    .map(|(cp, _)| serde_json::to_string(cp))
                    .collect::<serde_json::Result<Vec<_>>>()?;
                append_line(&self.file, &lines.join("\n"))
            });
            if let Err(e) = lines {
                tracing::error!(
                    "cannot append {} checkpoint(s) to {} (they stay in the database): {e:#}",
                    batch.len(),
                    self.file.display()
                );
            }
        }
    }
}

impl Drop for Anchorer {
    fn drop(&mut self) {
        self.shared.lock().1 = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Appends `line` to `file` in one write, on a line of its own: a process killed mid-write leaves
/// at most a torn last line, never a record glued to the next one, and a torn line left by an
/// earlier crash is ended first.
fn append_line(file: &Path, line: &str) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(file)
        .with_context(|| format!("while opening {}", file.display()))?;
    let mut buf = String::with_capacity(line.len() + 2);
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            buf.push('\n');
        }
    }
    buf.push_str(line);
    buf.push('\n');
    f.write_all(buf.as_bytes())?;
    f.sync_data()?;
    Ok(())
}

/// The checkpoints in the checkpoint file's text. A torn record (cut short by a crash mid-write)
/// is no evidence of anything and is skipped; records glued on one line by a crash between a
/// record and its newline (brokers before 2026-11-30 wrote them in two writes) are each read.
/// Anything else that is not a checkpoint is an error.
fn file_checkpoints(text: &str, file: &Path) -> Result<Vec<Checkpoint>> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        for cp in serde_json::Deserializer::from_str(line).into_iter::<Checkpoint>() {
            match cp {
                Ok(cp) => out.push(cp),
                Err(e) if e.is_eof() => break,
                Err(e) => anyhow::bail!("{} line {}: {e}", file.display(), i + 1),
            }
        }
    }
    Ok(out)
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// Entries checked.
    pub entries: i64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// The last checkpointed sequence number.
    pub last_checkpoint: Option<i64>,
}

/// Why the log failed verification: the first bad sequence number and what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("audit log verification failed at seq {seq}: {problem}")]
pub struct Broken {
    /// The first sequence number found bad.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

/// Reads entries, oldest first, matching the filters, after `after`, at most `limit`.
pub fn read(
    conn: &Connection,
    job: Option<&str>,
    operator: Option<&str>,
    dataset: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare(
        "SELECT body, hash FROM audit WHERE seq > ?1
           AND (?2 IS NULL OR job = ?2) AND (?3 IS NULL OR operator = ?3) AND (?4 IS NULL OR dataset = ?4)
         ORDER BY seq LIMIT ?5",
    )?;
    let rows = stmt.query_map(params![after, job, operator, dataset, limit], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (body, hash) = row?;
        let mut v: Value = serde_json::from_str(&body)?;
        v["hash"] = Value::String(hash);
        out.push(serde_json::from_value(v)?);
    }
    Ok(out)
}

/// Verifies the whole chain and every checkpoint (from the database and from `checkpoint_file`,
/// if present) against `key`.
pub fn verify(
    conn: &Connection,
    key: &VerifyingKey,
    checkpoint_file: Option<&Path>,
) -> Result<std::result::Result<Verified, Broken>> {
    let mut stmt = conn.prepare(
        "SELECT seq, seq, kind, job, operator, dataset, body, hash FROM audit ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    let mut hashes: Vec<String> = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(1)?;
        let body: String = r.get(6)?;
        let hash: String = r.get(7)?;
        let bad = |problem: String| {
            Ok(Err(Broken {
                seq: expected_seq,
                problem,
            }))
        };
        if seq != expected_seq {
            return bad(format!(
                "expected entry {expected_seq} next but found {seq} (an entry was deleted, inserted or reordered)"
            ));
        }
        // The hash covers the exact stored bytes; the parsed body is only read, never rewritten.
        if sha256_hex(body.as_bytes()) != hash {
            return bad("the entry's hash does not match its contents (edited)".into());
        }
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            return bad("the entry's body is not valid JSON (edited)".into());
        };
        if v["seq"].as_i64() != Some(seq) {
            return bad("the entry's body names another sequence number (moved)".into());
        }
        if v["prev"].as_str() != Some(prev.as_str()) {
            return bad(
                "the entry does not follow the previous one's hash (an entry before it was changed, deleted or reordered)"
                    .into(),
            );
        }
        let col = |i: usize, k: &str| -> rusqlite::Result<bool> {
            let c: Option<String> = r.get(i)?;
            Ok(c.as_deref() == v[k].as_str())
        };
        if !(col(2, "kind")? && col(3, "job")? && col(4, "operator")? && col(5, "dataset")?) {
            return bad("the entry's indexed columns differ from its signed body (edited)".into());
        }
        prev = hash.clone();
        hashes.push(hash);
        expected_seq += 1;
    }
    let entries = expected_seq - 1;

    let mut cps: Vec<Checkpoint> = {
        let mut stmt = conn.prepare("SELECT seq, hash, at_ms, signature FROM checkpoints")?;
        stmt.query_map([], |r| {
            Ok(Checkpoint {
                seq: r.get(0)?,
                hash: r.get(1)?,
                at_ms: r.get(2)?,
                signature: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    if let Some(file) = checkpoint_file
        && file.exists()
    {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("while reading {}", file.display()))?;
        cps.extend(file_checkpoints(&text, file)?);
    }
    cps.sort_by_key(|c| c.seq);
    cps.dedup();
    for cp in &cps {
        if !keys::verify(key, &checkpoint_message(cp.seq, &cp.hash), &cp.signature) {
            return Ok(Err(Broken {
                seq: cp.seq,
                problem: "a checkpoint's signature is invalid for this broker's key".into(),
            }));
        }
        if cp.seq > entries {
            return Ok(Err(Broken {
                seq: entries + 1,
                problem: format!(
                    "the log ends at entry {entries} but a signed checkpoint covers entry {} (truncated)",
                    cp.seq
                ),
            }));
        }
        if hashes[(cp.seq - 1) as usize] != cp.hash {
            return Ok(Err(Broken {
                seq: cp.seq,
                problem: "the entry differs from the signed checkpoint (the log was rewritten)"
                    .into(),
            }));
        }
    }
    Ok(Ok(Verified {
        entries,
        checkpoints: cps.len(),
        last_checkpoint: cps.last().map(|c| c.seq),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(seq: i64) -> String {
        serde_json::to_string(&Checkpoint {
            seq,
            hash: "00".repeat(32),
            signature: "11".repeat(64),
            at_ms: 1,
        })
        .unwrap()
    }

    #[test]
    fn torn_and_glued_checkpoint_records_from_crashes_are_read_and_anything_else_is_refused() {
        let file = Path::new("audit-checkpoints.jsonl");
        let (a, b, c) = (cp(1), cp(2), cp(3));
        // A record glued to the next (newline lost), a torn record, a whole one.
        let text = format!("{a}{b}\n{}\n{c}\n", &c[..20]);
        let seqs: Vec<i64> = file_checkpoints(&text, file)
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        let e = file_checkpoints(&format!("{a}\nnot a checkpoint\n"), file).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn an_append_after_a_torn_record_starts_a_line_of_its_own() {
        let dir = std::env::temp_dir().join(format!("sluice-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("audit-checkpoints.jsonl");
        let (a, b) = (cp(1), cp(2));
        std::fs::write(&file, format!("{a}\n{}", &b[..30])).unwrap();
        append_line(&file, &b).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("{a}\n{}\n{b}\n", &b[..30]));
        assert_eq!(file_checkpoints(&text, &file).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn checkpoints_anchored_from_several_threads_are_all_in_the_file_once_it_is_dropped() {
        let dir = std::env::temp_dir().join(format!("sluice-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("audit-checkpoints.jsonl");
        let _ = std::fs::remove_file(&file);
        let sync = crate::wal_sync::WalSync::start(dir.join("x.db-wal")).unwrap();
        let anchorer = Arc::new(Anchorer::start(file.clone(), sync.waiter()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let a = anchorer.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        a.anchor(serde_json::from_str(&cp(t * 100 + i)).unwrap(), 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(Arc::into_inner(anchorer).expect("the only reference"));
        let text = std::fs::read_to_string(&file).unwrap();
        let mut seqs: Vec<i64> = file_checkpoints(&text, &file)
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(text.lines().count(), 100, "one line each");
        seqs.sort_unstable();
        let expected: Vec<i64> = (0..4)
            .flat_map(|t| (0..25).map(move |i| t * 100 + i))
            .collect();
        assert_eq!(seqs, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_whose_commit_never_reached_the_disk_is_not_anchored() {
        let dir = std::env::temp_dir().join(format!("sluice-anchor-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("audit-checkpoints.jsonl");
        let _ = std::fs::remove_file(&file);
        // A WAL under a plain file: its sync fails.
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let sync = crate::wal_sync::WalSync::start(plain.join("x.db-wal")).unwrap();
        let anchorer = Anchorer::start(file.clone(), sync.waiter()).unwrap();
        anchorer.anchor(serde_json::from_str(&cp(7)).unwrap(), sync.request());
        drop(anchorer);
        assert!(!file.exists(), "nothing appended");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
