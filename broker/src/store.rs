//! The broker's state in one SQLite file (WAL mode): jobs, the budget ledger, tokens,
//! suspensions, job events and the audit log.
//!
//! Every state change happens in one immediate transaction together with its audit entry, so the
//! entry is durable when (and only when) the change is: *log before effect*. A charge checks the
//! grant and is committed with its `query` audit entry before the query executes: *charge before
//! release*.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_runtime::{
    BudgetError, Charge, Recorded, Spent, Totals, privacy::accountant::check_limits,
};

use crate::audit::{self, NewEntry, now_ms};
use crate::filings::{Filing, FilingTerms};
use crate::keys::{DatasetVersion, Keys, Receipt, random_bytes, sha256_hex};
use crate::ledger_totals::{Key, NextCharge, Units};
use crate::wal_sync::WalSync;

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, job TEXT, operator TEXT, dataset TEXT,
    body TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_job ON audit(job);
CREATE INDEX audit_operator ON audit(operator);
CREATE INDEX audit_dataset ON audit(dataset);
CREATE TABLE checkpoints (
    seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, at_ms INTEGER NOT NULL, signature TEXT NOT NULL);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY, principal TEXT NOT NULL, role TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE wasm (sha256 TEXT PRIMARY KEY, bytes BLOB NOT NULL);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, n INTEGER NOT NULL UNIQUE, operator TEXT NOT NULL, purpose TEXT NOT NULL,
    params TEXT NOT NULL, wasm_sha256 TEXT NOT NULL REFERENCES wasm(sha256), datasets TEXT NOT NULL,
    max_epsilon REAL, state TEXT NOT NULL, error TEXT, review_reason TEXT, reviewer TEXT,
    created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER,
    report_json TEXT, report_csv TEXT, receipt TEXT);
CREATE INDEX jobs_state ON jobs(state, n);
CREATE INDEX jobs_operator ON jobs(operator, n);
CREATE TABLE charges (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, operator TEXT NOT NULL, dataset TEXT NOT NULL,
    job TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL, audit_seq INTEGER NOT NULL);
CREATE INDEX charges_grant ON charges(operator, dataset, at_ms);
CREATE INDEX charges_job ON charges(job);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, job TEXT NOT NULL, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX events_job ON events(job, id);
CREATE TABLE suspensions (
    kind TEXT NOT NULL, name TEXT NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name));
"#,
    r#"
CREATE TABLE answers (
    key TEXT PRIMARY KEY, operator TEXT NOT NULL, dataset TEXT NOT NULL,
    dataset_hash TEXT NOT NULL, sql TEXT NOT NULL, epsilon REAL NOT NULL,
    answer TEXT NOT NULL, created_ms INTEGER NOT NULL);
"#,
    // zero-concentrated DP: charges on zCDP datasets are in ρ (and 0 in ε).
    r#"
ALTER TABLE charges ADD COLUMN rho REAL NOT NULL DEFAULT 0;
"#,
    // Amounts carry their measure: a cached answer's `epsilon` held ρ on zCDP datasets. NULL
    // measure: stored before this migration (such zCDP keys no longer match any query).
    r#"
ALTER TABLE answers RENAME COLUMN epsilon TO amount;
ALTER TABLE answers ADD COLUMN measure TEXT;
"#,
    // Dataset-wide budgets sum every operator's charges on a dataset within a period.
    r#"
CREATE INDEX charges_dataset ON charges(dataset, at_ms);
"#,
    // Tokens expire. Tokens made before expiry existed get the default lifetime from now.
    r#"
ALTER TABLE tokens ADD COLUMN expires_ms INTEGER;
UPDATE tokens SET expires_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 7776000000;
"#,
    // Builds a reviewer allowed (`review approve --allow`): under `review = "unlisted"` they run
    // without review for that operator and dataset.
    r#"
CREATE TABLE allowed_builds (
    operator TEXT NOT NULL, dataset TEXT NOT NULL, wasm_sha256 TEXT NOT NULL,
    allowed_by TEXT NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (operator, dataset, wasm_sha256));
"#,
    // Alerts raised by the policy's rules.
    r#"
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, rule TEXT NOT NULL, operator TEXT NOT NULL,
    dataset TEXT NOT NULL, share REAL NOT NULL, action TEXT NOT NULL, audit_seq INTEGER NOT NULL);
CREATE INDEX alerts_rule ON alerts(rule, operator, dataset, at_ms);
"#,
    // Separated approval: a job on data whose grade says so needs its holders' approvals too.
    r#"
ALTER TABLE jobs ADD COLUMN holders_to_approve TEXT NOT NULL DEFAULT '[]';
CREATE TABLE approvals (
    job TEXT NOT NULL, principal TEXT NOT NULL, role TEXT NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (job, principal, role));
"#,
    // Scenario authorization: a job runs under one scenario; each scenario's grant has its own
    // ledger (NULL: a grant without a scenario).
    r#"
ALTER TABLE jobs ADD COLUMN scenario TEXT;
ALTER TABLE charges ADD COLUMN scenario TEXT;
"#,
    // Alert rules watch more than spending shares: what each alert watched.
    r#"
ALTER TABLE alerts ADD COLUMN watching TEXT NOT NULL DEFAULT 'budget_share';
ALTER TABLE alerts ADD COLUMN delivered_ms INTEGER;
"#,
    // Filings (备案): releases from data whose grade a regulator is told about.
    r#"
CREATE TABLE filings (
    number INTEGER PRIMARY KEY, job TEXT NOT NULL UNIQUE, terms TEXT NOT NULL,
    filed_ms INTEGER, audit_seq INTEGER);
"#,
    // A job's log is kept with it, so that its operator reads it through the broker.
    r#"
ALTER TABLE jobs ADD COLUMN log TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN log_dropped INTEGER NOT NULL DEFAULT 0;
"#,
    // A job's risk report, made once before its review: the approval's audit entry names its
    // sha256, so the body kept here can be checked against the log.
    r#"
CREATE TABLE risk_reports (
    job TEXT PRIMARY KEY, sha256 TEXT NOT NULL, body TEXT NOT NULL, at_ms INTEGER NOT NULL);
"#,
    // Objections (异议) anyone may file about a use of data; a reviewer resolves each, and an
    // upheld one counts on the operator's credit record.
    r#"
CREATE TABLE objections (
    id TEXT PRIMARY KEY, filed_ms INTEGER NOT NULL, subject TEXT NOT NULL, text TEXT NOT NULL,
    contact TEXT, status TEXT NOT NULL, operator TEXT, reason TEXT, decided_by TEXT,
    decided_ms INTEGER, audit_seq INTEGER NOT NULL);
CREATE INDEX objections_status ON objections(status, filed_ms);
CREATE INDEX objections_operator ON objections(operator, status);
"#,
    // Contribution metering: per job and dataset, queries answered (cached ones too), cells
    // released and compute, written when the job ends; statements price them with the ledger.
    r#"
CREATE TABLE meters (
    job TEXT NOT NULL, dataset TEXT NOT NULL, operator TEXT NOT NULL, scenario TEXT,
    queries INTEGER NOT NULL, cached INTEGER NOT NULL, cells INTEGER NOT NULL,
    compute_ms INTEGER NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (job, dataset));
CREATE INDEX meters_time ON meters(at_ms);
"#,
    // Registration (登记): records of resources, licences and products, each with its history.
    r#"
CREATE TABLE registry (
    number TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL, version INTEGER NOT NULL,
    status TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE registry_events (
    number TEXT NOT NULL, n INTEGER NOT NULL, kind TEXT NOT NULL, at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL, reason TEXT NOT NULL, audit_seq INTEGER NOT NULL,
    PRIMARY KEY (number, n));
"#,
    // Running totals of the ledger (`ledger_totals`): each charge carries the sums of its grant's
    // (operator, dataset, scenario) and of its dataset's charges up to and including it, in
    // charge order (at_ms, id), in whole units of 1e-12 (ε, ρ) and 1e-18 (δ), each charge rounded
    // up. A period's spend is then two index lookups instead of a sum over the period.
    r#"
ALTER TABLE charges ADD COLUMN grant_total_epsilon INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN grant_total_rho INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN grant_total_delta INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN dataset_total_epsilon INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN dataset_total_rho INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN dataset_total_delta INTEGER NOT NULL DEFAULT 0;
UPDATE charges SET
    grant_total_epsilon = t.ge, grant_total_rho = t.gr, grant_total_delta = t.gd,
    dataset_total_epsilon = t.de, dataset_total_rho = t.dr, dataset_total_delta = t.dd
FROM (
    SELECT id,
        SUM(e) OVER g AS ge, SUM(r) OVER g AS gr, SUM(d) OVER g AS gd,
        SUM(e) OVER ds AS de, SUM(r) OVER ds AS dr, SUM(d) OVER ds AS dd
    FROM (
        SELECT id, operator, dataset, scenario, at_ms,
            CAST(epsilon * 1e12 AS INTEGER) + (epsilon * 1e12 > CAST(epsilon * 1e12 AS INTEGER)) AS e,
            CAST(rho * 1e12 AS INTEGER) + (rho * 1e12 > CAST(rho * 1e12 AS INTEGER)) AS r,
            CAST(delta * 1e18 AS INTEGER) + (delta * 1e18 > CAST(delta * 1e18 AS INTEGER)) AS d
        FROM charges)
    WINDOW g AS (PARTITION BY operator, dataset, scenario ORDER BY at_ms, id),
           ds AS (PARTITION BY dataset ORDER BY at_ms, id)
) AS t
WHERE charges.id = t.id;
CREATE INDEX charges_grant_totals ON charges(operator, dataset, scenario, at_ms);
"#,
];

/// How long a token is valid unless its creator says otherwise: 90 days.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// The longest lifetime a token may have: 366 days.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 86_400);

/// A principal's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits jobs and reads their results.
    Operator,
    /// Approves jobs and reads the audit log.
    Reviewer,
    /// The platform's admin: reloads policy, suspends and freezes, reads usage and metrics.
    Admin,
    /// A data holder's officer (principal: the holder id datasets name): suspends, freezes and
    /// watches its own datasets only.
    Holder,
    /// A read-only overseer (a regulator, an internal audit office): reads the audit log, jobs,
    /// reviews, usage, alerts, suspensions, filings and metrics; decides and changes nothing, and
    /// reads no report.
    Auditor,
}

impl Role {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Reviewer => "reviewer",
            Self::Admin => "admin",
            Self::Holder => "holder",
            Self::Auditor => "auditor",
        }
    }
    /// The role called `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "operator" => Self::Operator,
            "reviewer" => Self::Reviewer,
            "admin" => Self::Admin,
            "holder" => Self::Holder,
            "auditor" => Self::Auditor,
            _ => return None,
        })
    }
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The name (for operators: the operator id of their grants).
    pub name: String,
    /// The role.
    pub role: Role,
}

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a reviewer.
    PendingReview,
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Released a report.
    Succeeded,
    /// Ended without a report.
    Failed,
    /// Refused by a reviewer.
    Rejected,
    /// Cancelled by its operator before it ran.
    Cancelled,
    /// Finished while its operator or a dataset was suspended: the report is kept but not
    /// released until a reviewer releases it (or discards it).
    Held,
}

impl JobState {
    /// Every state.
    pub const ALL: [Self; 8] = [
        Self::PendingReview,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Rejected,
        Self::Cancelled,
        Self::Held,
    ];
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingReview => "pending_review",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Held => "held",
        }
    }
    fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .unwrap_or(Self::Failed)
    }

    /// The event a job emits on entering this state.
    fn event(self) -> &'static str {
        match self {
            Self::Succeeded => "released",
            other => other.as_str(),
        }
    }

    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Rejected | Self::Cancelled
        )
    }
}

/// A job as the API shows it (without its report).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    /// Its id.
    pub id: String,
    /// Who submitted it.
    pub operator: String,
    /// The stated purpose.
    pub purpose: String,
    /// The parameter string passed to the job, in full: a job may take its SQL from it, so a
    /// reviewer must see it to know what will run.
    pub params: String,
    /// The scenario it runs under, if it names one.
    pub scenario: Option<String>,
    /// Holders who must approve it beside a reviewer.
    pub holders_to_approve: Vec<String>,
    /// Who approved it so far, in order.
    pub approved_by: Vec<String>,
    /// sha256 of the wasm.
    pub wasm_sha256: String,
    /// Size of the wasm in bytes.
    pub wasm_bytes: i64,
    /// The datasets it declared.
    pub datasets: Vec<String>,
    /// The ε per dataset it asked for (or `None`: the grant's per-job cap).
    pub max_epsilon: Option<f64>,
    /// Its state.
    pub state: JobState,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// The reviewer's reason.
    pub review_reason: Option<String>,
    /// The reviewer.
    pub reviewer: Option<String>,
    /// ε charged so far, over all its pure-DP datasets.
    pub epsilon_spent: f64,
    /// ρ charged so far, over all its zCDP datasets.
    pub rho_spent: f64,
    /// Queries charged so far.
    pub queries: i64,
    /// What it spent on each dataset, by dataset name.
    pub spent: Vec<DatasetSpend>,
    /// When it was submitted (Unix ms).
    pub created_ms: i64,
    /// When it started running.
    pub started_ms: Option<i64>,
    /// When it ended.
    pub finished_ms: Option<i64>,
}

/// What a job's run left to keep before its release: its log and its meters.
#[derive(Clone, Copy, Debug)]
pub struct RunRecord<'a> {
    /// The job.
    pub job: &'a str,
    /// Its operator.
    pub operator: &'a str,
    /// The scenario it named.
    pub scenario: Option<&'a str>,
    /// The log lines the cap kept.
    pub log: &'a [sluice_runtime::LogLine],
    /// How many it dropped.
    pub dropped: u64,
    /// Its meters, by dataset.
    pub meters: &'a std::collections::BTreeMap<String, crate::statements::Meter>,
}

/// What one job spent on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetSpend {
    /// The dataset.
    pub dataset: String,
    /// ε charged (pure-DP datasets).
    pub epsilon: f64,
    /// ρ charged (zCDP datasets).
    pub rho: f64,
    /// δ charged.
    pub delta: f64,
    /// Queries charged.
    pub queries: i64,
}

/// A review decision: who decides, in which role, what, why, and the risk report they decided
/// on (its `{level, sha256}`, recorded in the decision's audit entry).
#[derive(Clone, Copy, Debug)]
pub struct Verdict<'a> {
    /// The reviewer or holder.
    pub who: &'a str,
    /// Their role.
    pub role: Role,
    /// Approve (or reject).
    pub approve: bool,
    /// With an approval by a reviewer: allow the build for the job's operator and datasets.
    pub allow: bool,
    /// Why.
    pub reason: &'a str,
    /// The risk report's level and sha256, if one was made.
    pub risk: Option<&'a Value>,
}

/// A job claimed by a worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Its id.
    pub id: String,
    /// Its operator.
    pub operator: String,
    /// The wasm.
    pub wasm: Vec<u8>,
    /// sha256 of the wasm.
    pub wasm_sha256: String,
    /// Parameters.
    pub params: String,
    /// Declared datasets.
    pub datasets: Vec<String>,
    /// Requested ε cap.
    pub max_epsilon: Option<f64>,
    /// The scenario it runs under.
    pub scenario: Option<String>,
}

/// A job's id: `job-` and 16 hex digits, made by [`Store::submit`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for JobId {
    type Err = String;

    /// Any text that is not a job id is refused, as "no job `…`" (the start of it).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.len() == 20 && s.starts_with("job-") && s[4..].bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_string()))
        } else {
            let shown: String = s.lines().next().unwrap_or("").chars().take(200).collect();
            Err(format!("no job `{shown}`"))
        }
    }
}

/// A new job.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    /// Who submits it.
    pub operator: &'a str,
    /// Why.
    pub purpose: &'a str,
    /// Parameters for `run`.
    pub params: &'a str,
    /// The wasm.
    pub wasm: &'a [u8],
    /// Hex sha256 of `wasm` (computed once, by the caller that had the bytes first).
    pub wasm_sha256: &'a str,
    /// Datasets it will use.
    pub datasets: &'a [String],
    /// Requested per-dataset ε cap.
    pub max_epsilon: Option<f64>,
    /// Whether a reviewer must approve it first.
    pub needs_review: bool,
    /// Holders who must approve it too (their datasets' grade says so), beside a reviewer.
    pub holders_to_approve: &'a [String],
    /// The scenario it runs under, if it names one.
    pub scenario: Option<&'a str>,
}

/// One job event for the progress stream.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Monotonic id.
    pub id: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// `queued`, `pending_review`, `running`, `query`, `released`, `failed`, `rejected`, `cancelled`.
    pub kind: String,
    /// Details.
    pub detail: Value,
}

/// What a finished job produced, to release.
#[derive(Clone, Debug, Default)]
pub struct Outcome<'a> {
    /// The report as JSON.
    pub report_json: &'a str,
    /// The report as CSV.
    pub report_csv: &'a str,
    /// sha256 of the policy in force.
    pub policy_sha256: &'a str,
    /// The dataset versions the job could read.
    pub datasets: Vec<DatasetVersion>,
    /// Who besides its operator may fetch the report (its scenario's recipients).
    pub recipients: Vec<String>,
    /// What a filing of this release says beside its receipt, when a dataset it read is graded
    /// `important` (filed when the report is released, at once or by a reviewer).
    pub filing: Option<FilingTerms>,
    /// The job's row functions its queries aggregated (named on the receipt).
    pub row_functions: Vec<String>,
    /// The engines other than the broker that computed its answers (named on the receipt).
    pub engines: Vec<String>,
}

/// Where a charge left the totals it was checked against, in its own measure (ε or ρ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AfterCharge {
    /// What its operator has spent on its dataset (under its scenario) this period.
    pub own_period: f64,
    /// What every operator has spent on its dataset in the dataset cap's period, when the
    /// dataset has a cap.
    pub dataset_period: Option<f64>,
}

/// How a job's run ended, for [`Store::finish`].
#[derive(Debug)]
pub enum Ending<'a> {
    /// It finished: release its report.
    Released(Outcome<'a>),
    /// It failed, for this reason (shown to its operator).
    Failed(&'a str),
}

/// A job's log as the broker keeps it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobLog {
    /// The lines the log cap kept, in order.
    pub lines: Vec<LogEntry>,
    /// How many lines the cap dropped.
    pub dropped: u64,
}

/// One line of a job's log.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The text (at most 1 KiB).
    pub message: String,
}

/// An alert to raise.
#[derive(Clone, Debug)]
pub struct NewAlert<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// The operator whose spending fired it, or `*` (every operator).
    pub operator: &'a str,
    /// The dataset.
    pub dataset: &'a str,
    /// The level it fired at: the share of the cap spent, or the number of refusals.
    pub share: f64,
    /// What the rule watches (`budget_share`, `burn_rate`, `denials`, …).
    pub when: &'static str,
    /// `notify`, `suspend` or `hold_releases`.
    pub action: &'static str,
    /// What to suspend or hold: (`operator` | `dataset` | `hold:operator` | `hold:dataset`,
    /// name).
    pub act_on: Option<(&'static str, &'a str)>,
}

/// An alert as `GET /v1/admin/alerts` lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Its number.
    pub id: i64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// The rule.
    pub rule: String,
    /// The operator, or `*`.
    pub operator: String,
    /// The dataset.
    pub dataset: String,
    /// The level it fired at: the share of the cap spent (refusals counted, for `denials`).
    pub share: f64,
    /// What was done.
    pub action: String,
    /// Its `alert.raised` audit entry.
    pub audit_seq: i64,
    /// What the rule watched: `budget_share`, `dataset_share`, `burn_rate` or `denials`.
    pub when: String,
}

/// A token as `sluice token list` shows it (never the token itself).
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    /// A prefix of the token's hash.
    pub id: String,
    /// Who it is for.
    pub principal: String,
    /// The role.
    pub role: String,
    /// When it was made (Unix ms).
    pub created_ms: i64,
    /// When it stops working (Unix ms).
    pub expires_ms: Option<i64>,
}

/// Everything ever charged, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChargeTotals {
    /// Queries charged.
    pub queries: i64,
    /// ε charged on pure-DP datasets.
    pub epsilon: f64,
    /// ρ charged on zCDP datasets.
    pub rho: f64,
    /// δ charged.
    pub delta: f64,
}

/// ε charged on one dataset, with its holder.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// The dataset.
    pub dataset: String,
    /// The operator.
    pub operator: String,
    /// Queries charged.
    pub queries: i64,
    /// Jobs that charged.
    pub jobs: i64,
    /// Total ε.
    pub epsilon: f64,
    /// Total δ.
    pub delta: f64,
    /// Total ρ (zCDP datasets).
    pub rho: f64,
}

/// What one operator spent on one dataset in one UTC day.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DailySpend {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The operator.
    pub operator: String,
    /// Queries charged.
    pub queries: i64,
    /// ε charged (pure-DP datasets).
    pub epsilon: f64,
    /// δ charged.
    pub delta: f64,
    /// ρ charged (zCDP datasets).
    pub rho: f64,
}

/// Why a state change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No such job.
    #[error("no job `{0}`")]
    NoJob(String),
    /// The job is not in a state that allows it.
    #[error("job `{id}` is {state}; {what}")]
    WrongState {
        /// The job.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was expected.
        what: &'static str,
    },
    /// A holder decided on a job that does not wait for its approval.
    #[error("job `{id}` does not wait for the approval of `{who}`")]
    NotYours {
        /// The job.
        id: String,
        /// The holder.
        who: String,
    },
    /// A held job cannot be released while a suspension it ran under is in force.
    #[error("job `{id}` cannot be released: {why}; resume first, or discard the report")]
    StillSuspended {
        /// The job.
        id: String,
        /// Which suspension.
        why: String,
    },
    /// No such objection.
    #[error("no objection `{0}`")]
    NoObjection(String),
    /// The objection was resolved already.
    #[error("objection `{id}` is {status} already; a resolution is final")]
    ObjectionResolved {
        /// The objection.
        id: String,
        /// Its state.
        status: &'static str,
    },
    /// No such registered record.
    #[error("no registered record `{0}`")]
    NoRecord(String),
    /// The record was cancelled: it takes no further step.
    #[error("record `{0}` is cancelled; a cancelled registration takes no further step")]
    RecordCancelled(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

/// What became of a finished job's report.
#[derive(Debug)]
pub enum Released {
    /// Released, with its signed receipt.
    Receipt(Box<Receipt>),
    /// Held: its operator or a dataset was suspended while it ran.
    Held {
        /// Which suspension.
        why: String,
    },
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.into())
    }
}

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
    keys: Keys,
    dir: PathBuf,
    changed: tokio::sync::Notify,
    /// Answers kept for the identical-query cache and not written yet: each is written with
    /// the store's next transaction (its job's next charge, or its ending), so that keeping one
    /// costs no commit of its own. A crash before that loses it from the cache only: the query
    /// asked again is answered afresh and charged again.
    unwritten: Mutex<Vec<KeptAnswer>>,
    /// Read-only connections for the requests that only read (authentication, a job, its
    /// events and report): with the log in WAL mode they read the last commit while a worker
    /// writes, instead of waiting for the writer's lock.
    readers: Mutex<Vec<Connection>>,
    /// The jobs whose events someone follows, each woken when an event of it commits (rather
    /// than every follower at every commit).
    followed: Mutex<Followed>,
    /// Syncs the WAL for the commits that do not wait for the disk themselves: charges (see
    /// [`Store::charge_syncing`]) and submissions ([`Store::write_grouped`]).
    /// Appends the checkpoints releases sign to the checkpoint file, off the worker's path
    /// (declared before `wal_sync`, so that it is dropped, and drained, while syncs still run).
    anchorer: audit::Anchorer,
    wal_sync: WalSync,
}

/// The jobs followed, and how far the store has looked for their events.
#[derive(Default)]
struct Followed {
    /// Each followed job's waker and how many follow it.
    jobs: std::collections::HashMap<String, (Arc<tokio::sync::Notify>, usize)>,
    /// The last event id looked at for them.
    seen: i64,
}

/// One follower of a job's events: woken when an event of the job commits; stops following
/// when dropped.
pub struct Following {
    store: Arc<Store>,
    job: String,
    woken: Arc<tokio::sync::Notify>,
}

impl Following {
    /// Woken when an event of the job commits in this process.
    pub fn woken(&self) -> &tokio::sync::Notify {
        &self.woken
    }

    /// The job followed.
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut followed = self.store.followed();
        if let Some((_, n)) = followed.jobs.get_mut(&self.job) {
            *n -= 1;
            if *n == 0 {
                followed.jobs.remove(&self.job);
            }
        }
    }
}

/// Read-only connections kept open for reuse; more are opened when more readers run at once.
const READERS_KEPT: usize = 4;

/// A read-only connection borrowed from the store, returned to it when dropped.
pub(crate) struct Reader<'a> {
    store: &'a Store,
    conn: Option<Connection>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut kept = self.store.readers.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < READERS_KEPT
            && let Some(conn) = self.conn.take()
        {
            kept.push(conn);
        }
    }
}

impl Drop for Store {
    /// Writes the answers still kept in memory (a process that ends without a crash loses none).
    fn drop(&mut self) {
        let kept = !self
            .unwritten
            .get_mut()
            .map_or_else(|p| p.into_inner().is_empty(), |v| v.is_empty());
        if kept && let Err(e) = self.flush() {
            tracing::warn!("cannot write the answers kept for the cache: {e:#}");
        }
    }
}

/// An answer for the identical-query cache, as the `answers` table keeps it.
struct KeptAnswer {
    /// The cache key's digest.
    key: String,
    operator: String,
    dataset: String,
    dataset_hash: String,
    /// The normalized query.
    sql: String,
    /// The amount the original was charged, in `measure`.
    amount: f64,
    /// `pure` or `zcdp`.
    measure: &'static str,
    /// The released table, as JSON.
    answer: String,
    created_ms: i64,
}

/// The database file in a data directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("sluice.db")
}

/// The database's write-ahead log in a data directory.
fn wal_path(dir: &Path) -> PathBuf {
    dir.join("sluice.db-wal")
}

/// The checkpoint file in a data directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("audit-checkpoints.jsonl")
}

/// Whether a commit waits for the disk.
#[derive(Clone, Copy)]
enum Synchronous {
    /// It does (the connection's setting between transactions).
    Full,
    /// It does not: the WAL frames are written, and synced later.
    Normal,
}

/// Sets how the next commits on `conn` wait for the disk (a kept statement: the broker switches
/// several times per job).
fn synchronous(conn: &Connection, mode: Synchronous) -> rusqlite::Result<()> {
    let sql = match mode {
        Synchronous::Full => "PRAGMA synchronous = FULL",
        Synchronous::Normal => "PRAGMA synchronous = NORMAL",
    };
    conn.exec(sql, []).map(drop)
}

/// `execute` and `query_row` through the connection's statement cache: the broker runs the same
/// few statements for every job (a charge, an audit entry, a job step), and compiling one is a
/// good part of its cost in SQLite.
pub(crate) trait Cached {
    /// [`Connection::execute`], with the statement kept.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// [`Connection::query_row`], with the statement kept.
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements kept per connection (the default keeps 16).
const STATEMENT_CACHE: usize = 128;

fn open_conn(dir: &Path) -> Result<Connection> {
    let path = db_path(dir);
    let mut conn =
        Connection::open(&path).with_context(|| format!("while opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        bail!(
            "{} has schema version {version}, newer than this broker knows ({}); upgrade sluice",
            path.display(),
            MIGRATIONS.len()
        );
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(m)
            .with_context(|| format!("while applying schema migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// Hash of a bearer token, as stored.
fn token_hash(token: &str) -> String {
    sha256_hex(format!("sluice-token-v1\n{token}").as_bytes())
}

/// Constant-time equality of two byte strings of equal length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// Creates a data directory: database, signing key; returns nothing secret.
    pub fn init(dir: &Path) -> Result<Self> {
        Self::init_with_key(dir, None)
    }

    /// [`Store::init`], with the signing key written to `key_file` (away from the database it
    /// signs for) instead of `<dir>/broker.key`.
    pub fn init_with_key(dir: &Path, key_file: Option<&Path>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        if db_path(dir).exists() {
            bail!(
                "{} is already initialized (found {})",
                dir.display(),
                db_path(dir).display()
            );
        }
        let keys = Keys::generate();
        match key_file {
            Some(k) => keys.save_at(dir, k)?,
            None => keys.save(dir)?,
        }
        let store = Self::open_unchecked(dir)?;
        let public_key = store.keys.public_hex();
        store.record(
            NewEntry::new("broker.initialized", "sluice init")
                .detail(json!({ "public_key": public_key })),
        )?;
        Ok(store)
    }

    /// Opens an initialized data directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !db_path(dir).exists() {
            bail!(
                "{} is not a Sluice data directory (no sluice.db); run `sluice init --data-dir {}` first",
                dir.display(),
                dir.display()
            );
        }
        Self::open_unchecked(dir)
    }

    fn open_unchecked(dir: &Path) -> Result<Self> {
        let keys = Keys::load(dir)?;
        let wal_sync = WalSync::start(wal_path(dir))?;
        Ok(Self {
            conn: Mutex::new(open_conn(dir)?),
            keys,
            dir: dir.to_path_buf(),
            changed: tokio::sync::Notify::new(),
            unwritten: Mutex::new(Vec::new()),
            readers: Mutex::new(Vec::new()),
            followed: Mutex::default(),
            anchorer: audit::Anchorer::start(checkpoint_path(dir), wal_sync.waiter())?,
            wal_sync,
        })
    }

    /// Opens a data directory for reading and verification only (no key needed).
    pub fn open_conn_readonly(dir: &Path) -> Result<Connection> {
        let path = db_path(dir);
        if !path.exists() {
            bail!("{} has no sluice.db", dir.display());
        }
        Ok(Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?)
    }

    /// Woken after every committed change (the alert stream waits on it).
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    fn followed(&self) -> MutexGuard<'_, Followed> {
        self.followed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows job `job`'s events: the returned waker is woken when one commits.
    pub fn follow(self: &Arc<Self>, job: &str) -> Result<Following> {
        let mut followed = self.followed();
        if followed.jobs.is_empty() {
            // Nobody followed: the store stopped looking; start from the last event now.
            followed.seen =
                self.reader()?
                    .row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
        }
        let (woken, n) = followed
            .jobs
            .entry(job.to_string())
            .or_insert_with(|| (Arc::new(tokio::sync::Notify::new()), 0));
        *n += 1;
        Ok(Following {
            store: self.clone(),
            job: job.to_string(),
            woken: woken.clone(),
        })
    }

    /// After a commit on `conn`: wakes the alert stream, and the followers of each job that the
    /// commit (or one since the last look) wrote an event of.
    fn committed(&self, conn: &Connection) {
        self.changed.notify_waiters();
        let mut followed = self.followed();
        if followed.jobs.is_empty() {
            return;
        }
        let looked = (|| -> rusqlite::Result<i64> {
            let mut stmt = conn.prepare_cached("SELECT id, job FROM events WHERE id > ?1")?;
            let mut rows = stmt.query([followed.seen])?;
            let mut last = followed.seen;
            while let Some(r) = rows.next()? {
                last = last.max(r.get(0)?);
                if let Some((woken, _)) = followed.jobs.get(r.get_ref(1)?.as_str()?) {
                    woken.notify_waiters();
                }
            }
            Ok(last)
        })();
        match looked {
            Ok(last) => followed.seen = last,
            // Followers look again within a second regardless.
            Err(e) => tracing::warn!("cannot look for new job events: {e}"),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The broker's public key (hex).
    pub fn public_key(&self) -> String {
        self.keys.public_hex()
    }

    /// Signs `msg` with the broker's key (hex ed25519 signature; checked with
    /// [`crate::keys::verify`] against [`Store::public_key`]).
    pub fn sign(&self, msg: &[u8]) -> String {
        self.keys.sign(msg)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied (SQLite rolls
        // back an unfinished transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection: sees the last commit, never waits for the writer.
    pub(crate) fn reader(&self) -> Result<Reader<'_>> {
        let kept = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match kept {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    db_path(&self.dir),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(Duration::from_secs(10))?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                conn
            }
        };
        Ok(Reader {
            store: self,
            conn: Some(conn),
        })
    }

    /// Runs `f` in an immediate transaction, commits, then checkpoints if due.
    pub(crate) fn write<T, E>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<rusqlite::Error> + From<anyhow::Error>,
    {
        let mut conn = self.lock();
        let out = self.commit(&mut conn, f)?;
        self.checkpoint_if_due(&conn)?;
        Ok(out)
    }

    /// [`Store::write`] for a transaction whose loss in a power failure or an operating system
    /// crash is harmless, committed without waiting for the disk: claiming a job (lost, the job
    /// is queued again, having done nothing anyone else can see). The next durable commit (the
    /// job's first charge, or its end) carries it to the disk, since the log is written in
    /// order; a process that crashes loses nothing either way (the data is in the operating
    /// system's hands). No checkpoint is signed after it: a signed checkpoint must name
    /// entries that are on the disk.
    pub(crate) fn write_lazily<T, E>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<rusqlite::Error> + From<anyhow::Error>,
    {
        self.commit_lazily(&mut self.lock(), f)
    }

    /// [`Store::commit`] without waiting for the disk; the connection is back to waiting for
    /// it afterwards, whatever `f` did.
    fn commit_lazily<T, E>(
        &self,
        conn: &mut Connection,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<rusqlite::Error> + From<anyhow::Error>,
    {
        synchronous(conn, Synchronous::Normal)?;
        let out = self.commit(conn, f);
        synchronous(conn, Synchronous::Full)?;
        out
    }

    /// [`Store::write`] without holding the writer's lock through the disk's sync: the
    /// transaction commits without waiting for the disk, and its sync is asked of the sync
    /// thread, which covers it together with the commits that arrive meanwhile (group commit).
    /// Returns once it is durable. For a change whose effect reaches nobody before it returns: a
    /// submission, whose `202` is sent after (a worker may claim the job earlier, but its
    /// charges are settled, and its end committed durably, after this sync).
    pub(crate) fn write_grouped<T, E>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<rusqlite::Error> + From<anyhow::Error>,
    {
        let (out, mark) = self.write_unsynced(f)?;
        self.wal_sync.wait(mark)?;
        Ok(out)
    }

    /// Commits `f` without waiting for the disk and asks the sync thread for its sync; returns
    /// the sync's mark with `f`'s result. The caller keeps the commit's effect from reaching
    /// anyone until the sync is done (see [`Store::write_grouped`] and [`Store::finish`]).
    fn write_unsynced<T, E>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<(T, u64), E>
    where
        E: From<rusqlite::Error> + From<anyhow::Error>,
    {
        let mut conn = self.lock();
        let out = self.commit_lazily(&mut conn, f)?;
        // Asked while the writer's lock is held: whoever sees this commit and then takes the
        // lock finds the request counted (see `Store::result`).
        let mark = self.wal_sync.request();
        self.checkpoint_if_due(&conn)?;
        Ok((out, mark))
    }

    /// Runs `f` in an immediate transaction on `conn` with the answers kept for the cache,
    /// commits, and wakes who waits for the commit.
    fn commit<T, E>(
        &self,
        conn: &mut Connection,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<rusqlite::Error> + From<anyhow::Error>,
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let answers = self.write_answers(&tx)?;
        let out = f(&tx)?;
        tx.commit()?;
        self.answers_written(answers);
        self.committed(conn);
        Ok(out)
    }

    /// Writes the answers kept since the last transaction in `tx`; returns how many, for
    /// [`Store::answers_written`] once `tx` commits (a transaction rolled back leaves them kept).
    fn write_answers(&self, tx: &Connection) -> rusqlite::Result<usize> {
        let unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        for a in unwritten.iter() {
            tx.exec(
                "INSERT OR IGNORE INTO answers (key, operator, dataset, dataset_hash, sql, amount, measure, answer, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    a.key,
                    a.operator,
                    a.dataset,
                    a.dataset_hash,
                    a.sql,
                    a.amount,
                    a.measure,
                    a.answer,
                    a.created_ms
                ],
            )?;
        }
        Ok(unwritten.len())
    }

    /// Forgets the first `n` kept answers: a transaction wrote them.
    fn answers_written(&self, n: usize) {
        if n > 0 {
            self.unwritten
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..n);
        }
    }

    /// Writes what the store keeps in memory (answers for the cache) now: when it closes.
    fn flush(&self) -> Result<()> {
        self.write(|_| Ok::<_, anyhow::Error>(()))
    }

    fn checkpoint_if_due(&self, conn: &Connection) -> Result<()> {
        let (head, last): (i64, i64) = conn.row(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM audit), (SELECT COALESCE(MAX(seq), 0) FROM checkpoints)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if head - last >= audit::CHECKPOINT_EVERY {
            audit::checkpoint(conn, &self.keys, &checkpoint_path(&self.dir))?;
        }
        Ok(())
    }

    /// Signs a checkpoint of the current head now (at shutdown; a release signs its own, see
    /// [`Store::finish`]).
    pub fn checkpoint(&self) -> Result<Option<audit::Checkpoint>> {
        let conn = self.lock();
        audit::checkpoint(&conn, &self.keys, &checkpoint_path(&self.dir))
    }

    /// Appends one audit entry on its own.
    pub fn record(&self, e: NewEntry) -> Result<i64> {
        self.write(|tx| audit::append(tx, e))
    }

    /// How many entries the audit log holds.
    pub fn audit_len(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?)
    }

    /// Reads audit entries (see [`audit::read`]).
    pub fn audit_entries(
        &self,
        job: Option<&str>,
        operator: Option<&str>,
        dataset: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<audit::Entry>> {
        audit::read(&self.lock(), job, operator, dataset, after, limit)
    }

    // ---- tokens -------------------------------------------------------------------------

    /// Creates a token for `principal` with `role`; returns it (shown once; only its hash is kept).
    pub fn create_token(&self, role: Role, principal: &str, actor: &str) -> Result<String> {
        self.create_token_valid_for(role, principal, actor, DEFAULT_TOKEN_LIFETIME)
    }

    /// Creates a token valid for `lifetime` (at most [`MAX_TOKEN_LIFETIME`]); see
    /// [`Store::create_token`].
    pub fn create_token_valid_for(
        &self,
        role: Role,
        principal: &str,
        actor: &str,
        lifetime: Duration,
    ) -> Result<String> {
        if lifetime.is_zero() || lifetime > MAX_TOKEN_LIFETIME {
            bail!("a token is valid for 1 second to 366 days");
        }
        if principal.is_empty()
            || principal.len() > 64
            || !principal
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("a principal is 1 to 64 characters of letters, digits, '-', '_' and '.'");
        }
        let token = format!("sluice_{}", hex::encode(random_bytes::<32>()));
        let hash = token_hash(&token);
        let expires_ms = now_ms().saturating_add(lifetime.as_millis() as i64);
        self.write(|tx| -> Result<()> {
            audit::append(
                tx,
                NewEntry::new("token.created", actor).detail(json!({
                    "principal": principal,
                    "role": role.as_str(),
                    "token_id": &hash[..16],
                    "expires_ms": expires_ms,
                })),
            )?;
            tx.exec(
                "INSERT INTO tokens (hash, principal, role, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, principal, role.as_str(), now_ms(), expires_ms],
            )?;
            Ok(())
        })?;
        Ok(token)
    }

    /// Every token, expired ones too. The id is a prefix of the token's hash, never the token.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT hash, principal, role, created_ms, expires_ms FROM tokens ORDER BY created_ms",
        )?;
        Ok(stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    id: r.get::<_, String>(0)?[..16].to_string(),
                    principal: r.get(1)?,
                    role: r.get(2)?,
                    created_ms: r.get(3)?,
                    expires_ms: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes the token with id `id` (from [`Store::tokens`]); it stops working at once.
    pub fn revoke_token(&self, id: &str, actor: &str) -> Result<()> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("a token id is 16 hex digits (see `sluice token list`)");
        }
        self.write(|tx| -> Result<()> {
            let principal: Option<(String, String)> = tx
                .query_row(
                    "SELECT principal, role FROM tokens WHERE substr(hash, 1, 16) = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((principal, role)) = principal else {
                bail!("no token with id {id}");
            };
            audit::append(
                tx,
                NewEntry::new("token.revoked", actor).detail(json!({
                    "principal": principal,
                    "role": role,
                    "token_id": id,
                })),
            )?;
            tx.exec("DELETE FROM tokens WHERE substr(hash, 1, 16) = ?1", [id])?;
            Ok(())
        })
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        if token.len() > 200 {
            return Ok(None);
        }
        let hash = token_hash(token);
        let row: Option<(String, String, String)> = self
            .reader()?
            .row(
                "SELECT hash, principal, role FROM tokens
                 WHERE hash = ?1 AND COALESCE(expires_ms, 0) > ?2",
                params![&hash, now_ms()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.and_then(|(stored, name, role)| {
            ct_eq(stored.as_bytes(), hash.as_bytes())
                .then_some(())
                .and(Role::parse(&role))
                .map(|role| Principal { name, role })
        }))
    }

    // ---- jobs ---------------------------------------------------------------------------

    /// Records a submitted job; returns its id once the record is durable (a group commit with
    /// the submissions and charges committed meanwhile, see [`Store::write_grouped`]).
    pub fn submit(&self, job: &NewJob<'_>) -> Result<(JobId, JobState)> {
        let id = JobId(format!("job-{}", hex::encode(random_bytes::<8>())));
        let sha = job.wasm_sha256;
        let state = if job.needs_review {
            JobState::PendingReview
        } else {
            JobState::Queued
        };
        self.write_grouped(|tx| -> Result<()> {
            audit::append(
                tx,
                NewEntry::new("job.submitted", job.operator)
                    .job(id.as_str())
                    .operator(job.operator)
                    .detail(json!({
                        "purpose": job.purpose,
                        "wasm_sha256": sha,
                        "wasm_bytes": job.wasm.len(),
                        "params_sha256": sha256_hex(job.params.as_bytes()),
                        "params": job.params,
                        "holders_to_approve": job.holders_to_approve,
                        "scenario": job.scenario,
                        "datasets": job.datasets,
                        "max_epsilon": job.max_epsilon,
                        "decision": if job.needs_review { "allowed, pending review" } else { "allowed" },
                    })),
            )?;
            tx.exec(
                "INSERT OR IGNORE INTO wasm (sha256, bytes) VALUES (?1, ?2)",
                params![sha, job.wasm],
            )?;
            tx.exec(
                "INSERT INTO jobs (id, n, operator, purpose, params, wasm_sha256, datasets, max_epsilon, state, created_ms, holders_to_approve, scenario)
                 VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM jobs), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id.as_str(),
                    job.operator,
                    job.purpose,
                    job.params,
                    sha,
                    serde_json::to_string(job.datasets)?,
                    job.max_epsilon,
                    state.as_str(),
                    now_ms(),
                    serde_json::to_string(job.holders_to_approve)?,
                    job.scenario
                ],
            )?;
            event(tx, id.as_str(), state.event(), json!({}))?;
            Ok(())
        })?;
        Ok((id, state))
    }

    fn job_state(tx: &Connection, id: &str) -> Result<Option<(JobState, String)>, StateError> {
        Ok(tx
            .row(
                "SELECT state, operator FROM jobs WHERE id = ?1",
                [id],
                |r| Ok((JobState::parse(&r.get::<_, String>(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    /// A reviewer's decision on a pending job.
    pub fn review(
        &self,
        id: &str,
        reviewer: &str,
        approve: bool,
        reason: &str,
    ) -> Result<JobState, StateError> {
        self.review_allowing(id, reviewer, approve, false, reason)
    }

    /// Like [`Store::review`]; approving with `allow` also puts the job's build on the
    /// allow-list of its operator for each of its datasets (audited as `build.allowed`), so that
    /// under `review = "unlisted"` the same build runs without review next time.
    pub fn review_allowing(
        &self,
        id: &str,
        reviewer: &str,
        approve: bool,
        allow: bool,
        reason: &str,
    ) -> Result<JobState, StateError> {
        self.decide(
            id,
            &Verdict {
                who: reviewer,
                role: Role::Reviewer,
                approve,
                allow,
                reason,
                risk: None,
            },
        )
    }

    /// A decision on a job pending review by a reviewer or by a holder whose approval it needs
    /// (separated approval, 三权分置): a rejection by either rejects it; it is queued once a
    /// reviewer and every holder it names have approved. Until then each approval is recorded
    /// (`review.approved` with the role, and an `approval` event) and the job stays pending.
    pub fn decide(&self, id: &str, v: &Verdict<'_>) -> Result<JobState, StateError> {
        let Verdict {
            who,
            role,
            approve,
            allow,
            reason,
            risk,
        } = *v;
        self.write(|tx| {
            let (state, _) = Store::job_state(tx, id)?.ok_or_else(|| StateError::NoJob(id.into()))?;
            let needed: Vec<String> = tx
                .query_row(
                    "SELECT holders_to_approve FROM jobs WHERE id = ?1",
                    [id],
                    |r| r.get::<_, String>(0),
                )
                .map(|t| serde_json::from_str(&t).unwrap_or_default())?;
            if role == Role::Holder && !needed.iter().any(|h| h == who) {
                return Err(StateError::NotYours {
                    id: id.into(),
                    who: who.into(),
                });
            }
            if state != JobState::PendingReview {
                return Err(StateError::WrongState {
                    id: id.into(),
                    state: state.as_str(),
                    what: "only jobs pending review can be approved or rejected",
                });
            }
            // What ends the review: a rejection, or the last approval.
            let conclude = |to: JobState, kind: &'static str| {
                transition(
                    tx,
                    id,
                    Move {
                        from: &[JobState::PendingReview],
                        to,
                        refused: "only jobs pending review can be approved or rejected",
                    },
                    NewEntry::new(kind, who).detail(
                        json!({ "reason": reason, "role": role.as_str(), "risk_report": risk }),
                    ),
                    JobUpdate {
                        review: Some((who, reason)),
                        ..JobUpdate::default()
                    },
                    |_| json!({ "reason": reason, "reviewer": who }),
                )
                .map(|_| to)
            };
            if !approve {
                return conclude(JobState::Rejected, "review.rejected");
            }
            if allow && role == Role::Reviewer {
                allow_build(tx, id, who, reason)?;
            }
            tx.exec(
                "INSERT OR IGNORE INTO approvals (job, principal, role, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, who, role.as_str(), now_ms()],
            )?;
            let waiting = waiting_for(tx, id, &needed)?;
            if !waiting.is_empty() {
                audit::append(
                    tx,
                    NewEntry::new("review.approved", who)
                        .job(id)
                        .detail(json!({ "reason": reason, "role": role.as_str(), "waiting_for": waiting, "risk_report": risk })),
                )?;
                event(tx, id, "approval", json!({ "by": who, "waiting_for": waiting }))?;
                return Ok(JobState::PendingReview);
            }
            conclude(JobState::Queued, "review.approved")
        })
    }

    /// Cancels a job that has not started.
    pub fn cancel(&self, id: &str, actor: &str) -> Result<(), StateError> {
        self.write(|tx| {
            transition(
                tx,
                id,
                Move {
                    from: &[JobState::Queued, JobState::PendingReview],
                    to: JobState::Cancelled,
                    refused: "only queued jobs or jobs pending review can be cancelled",
                },
                NewEntry::new("job.cancelled", actor),
                JobUpdate::default(),
                |_| json!({}),
            )?;
            Ok(())
        })
    }

    /// Claims the oldest queued job whose operator and datasets are not suspended; jobs of
    /// suspended operators or datasets fail instead. While the platform is frozen nothing is
    /// claimed: queued jobs wait for the freeze to be lifted.
    pub fn claim_next(&self) -> Result<Option<Claimed>> {
        self.write_lazily(|tx| -> Result<Option<Claimed>> {
            let frozen: bool = tx.row(
                "SELECT EXISTS (SELECT 1 FROM suspensions WHERE kind = 'all')",
                [],
                |r| r.get(0),
            )?;
            if frozen {
                return Ok(None);
            }
            loop {
                let row: Option<(String, String, String, String, String, Option<f64>)> = tx
                    .row(
                        "SELECT id, operator, wasm_sha256, params, datasets, max_epsilon FROM jobs
                         WHERE state = 'queued' ORDER BY n LIMIT 1",
                        [],
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((id, operator, sha, params, datasets, max_epsilon)) = row else {
                    return Ok(None);
                };
                let datasets: Vec<String> = serde_json::from_str(&datasets)?;
                if let Some(why) = suspended(tx, &operator, &datasets)? {
                    let error = format!("not started: {why}");
                    transition(
                        tx,
                        &id,
                        Move {
                            from: &[JobState::Queued],
                            to: JobState::Failed,
                            refused: "only queued jobs can be claimed",
                        },
                        NewEntry::new("job.failed", "broker").detail(json!({ "error": error })),
                        JobUpdate {
                            error: Some(&error),
                            ..JobUpdate::default()
                        },
                        |_| json!({ "error": error }),
                    )?;
                    continue;
                }
                transition(
                    tx,
                    &id,
                    Move {
                        from: &[JobState::Queued],
                        to: JobState::Running,
                        refused: "only queued jobs can be claimed",
                    },
                    NewEntry::new("job.started", "broker"),
                    JobUpdate::default(),
                    |_| json!({}),
                )?;
                let wasm: Vec<u8> =
                    tx.row("SELECT bytes FROM wasm WHERE sha256 = ?1", [&sha], |r| {
                        r.get(0)
                    })?;
                let scenario: Option<String> =
                    tx.row("SELECT scenario FROM jobs WHERE id = ?1", [&id], |r| {
                        r.get(0)
                    })?;
                return Ok(Some(Claimed {
                    id,
                    operator,
                    wasm,
                    wasm_sha256: sha,
                    params,
                    datasets,
                    max_epsilon,
                    scenario,
                }));
            }
        })
    }

    /// Releases a finished job's report: stores it, appends `job.released` and signs its
    /// receipt, in one transaction. A job whose operator or a declared dataset was suspended at
    /// any moment since it started (the release gate) is `held` instead: its report is kept, no
    /// receipt is readable, and a reviewer decides ([`Store::release_held`],
    /// [`Store::discard_held`]).
    pub fn release(&self, id: &str, out: Outcome<'_>) -> Result<Released> {
        self.finish(id, None, Ending::Released(out))?
            .context("a released job has a release")
    }

    /// Ends a job that ran in one transaction: keeps what its run left (`run`: its log and
    /// meters), then releases its report or records why it failed, and signs a
    /// checkpoint of the log's head (appended to the checkpoint file once on disk, by the
    /// store's anchor thread). Returns the release, `None` for a failure.
    ///
    /// It returns without waiting for the disk, so that the worker goes on to its next job: the
    /// sync thread syncs the commit, and the report and receipt are served only once it has
    /// ([`Store::result`] waits for it), so that no report leaves before its release is on
    /// disk. The job's state and events are seen before (they carry nothing from the data).
    pub fn finish(
        &self,
        id: &str,
        run: Option<&RunRecord<'_>>,
        ending: Ending<'_>,
    ) -> Result<Option<Released>> {
        let ((released, checkpoint), mark) = self.write_unsynced(|tx| -> Result<_> {
            if let Some(run) = run {
                record_run(tx, run)?;
            }
            let released = match ending {
                Ending::Released(out) => Some(self.release_in(tx, id, out)?),
                Ending::Failed(error) => {
                    fail(tx, id, error)?;
                    None
                }
            };
            Ok((released, audit::sign_head(tx, &self.keys)?))
        })?;
        if let Some(cp) = checkpoint {
            self.anchorer.anchor(cp, mark);
        }
        Ok(released)
    }

    /// [`Store::release`]'s work in `tx`.
    fn release_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        id: &str,
        out: Outcome<'_>,
    ) -> Result<Released> {
        let Outcome {
            report_json,
            report_csv,
            policy_sha256,
            datasets,
            recipients,
            filing,
            row_functions,
            engines,
        } = out;
        let (wasm_sha256, operator, declared, purpose, reviewer, scenario): (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
        ) = tx.row(
            "SELECT wasm_sha256, operator, datasets, purpose, reviewer, scenario FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
        let declared: Vec<String> = serde_json::from_str(&declared).unwrap_or_default();
        let held = match suspended_since_start(tx, id, &operator, &declared)? {
            Some(why) => Some(why),
            None => releases_held(tx, &operator, &declared)?,
        };
        let (epsilon, delta, rho): (f64, f64, f64) = tx.row(
            "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0), COALESCE(SUM(rho), 0)
             FROM charges WHERE job = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let report_sha256 = sha256_hex(report_json.as_bytes());
        let report_csv_sha256 = sha256_hex(report_csv.as_bytes());
        let (to, kind) = match &held {
            Some(_) => (JobState::Held, "job.held"),
            None => (JobState::Succeeded, "job.released"),
        };
        let moved = transition(
            tx,
            id,
            Move {
                from: &[JobState::Running],
                to,
                refused: "only running jobs can be released",
            },
            NewEntry::new(kind, "broker").detail(json!({
                "report_sha256": report_sha256,
                "report_csv_sha256": report_csv_sha256,
                "report_bytes": report_json.len(),
                "epsilon": epsilon,
                "delta": delta,
                "rho": rho,
                "policy_sha256": policy_sha256,
                "held_because": held,
            })),
            JobUpdate {
                report: Some((report_json, report_csv)),
                ..JobUpdate::default()
            },
            |seq| json!({ "epsilon": epsilon, "delta": delta, "rho": rho, "audit_seq": seq, "held_because": held }),
        )?;
        // A held job's receipt is drafted now and signed again when a reviewer releases it.
        let mut receipt = Receipt {
            version: 2,
            job: id.into(),
            operator: moved.operator,
            wasm_sha256,
            policy_sha256: policy_sha256.into(),
            datasets,
            epsilon,
            delta,
            rho,
            scenario,
            purpose: Some(purpose),
            reviewers: approvers(tx, id, reviewer)?,
            recipients,
            risk_report_sha256: approved_risk(tx, id)?,
            row_functions: row_functions.clone(),
            engines: engines.clone(),
            audit_seq: moved.audit_seq,
            report_sha256,
            report_csv_sha256,
            issued_at_ms: now_ms(),
            public_key: String::new(),
            signature: String::new(),
        };
        receipt.sign(&self.keys);
        tx.exec(
            "UPDATE jobs SET receipt = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(&receipt)?],
        )?;
        if let Some(terms) = &filing {
            tx.exec(
                "INSERT INTO filings (job, terms) VALUES (?1, ?2)",
                params![id, serde_json::to_string(terms)?],
            )?;
            if held.is_none() {
                file(tx, id, "broker")?;
            }
        }
        Ok(match held {
            Some(why) => Released::Held { why },
            None => Released::Receipt(Box::new(receipt)),
        })
    }

    /// A reviewer releases a held job: refused while a suspension it ran under is still in
    /// force; otherwise `succeeded`, with its receipt signed now and pointing at the
    /// `job.released` entry that names the reviewer.
    pub fn release_held(
        &self,
        id: &str,
        reviewer: &str,
        reason: &str,
    ) -> Result<JobState, StateError> {
        self.write(|tx| {
            let (operator, declared, draft): (String, String, Option<String>) = tx
                .query_row(
                    "SELECT operator, datasets, receipt FROM jobs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or_else(|| StateError::NoJob(id.into()))?;
            let declared: Vec<String> = serde_json::from_str(&declared).unwrap_or_default();
            if let Some(why) = suspended(tx, &operator, &declared)? {
                return Err(StateError::StillSuspended { id: id.into(), why });
            }
            let moved = transition(
                tx,
                id,
                Move {
                    from: &[JobState::Held],
                    to: JobState::Succeeded,
                    refused: "only held jobs can be released by a reviewer",
                },
                NewEntry::new("job.released", reviewer)
                    .detail(json!({ "released_from_hold_by": reviewer, "reason": reason })),
                JobUpdate {
                    review: Some((reviewer, reason)),
                    ..JobUpdate::default()
                },
                |seq| json!({ "audit_seq": seq, "released_by": reviewer }),
            )?;
            let mut receipt: Receipt = draft
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(anyhow::Error::from)?
                .ok_or_else(|| anyhow::anyhow!("held job `{id}` has no drafted receipt"))?;
            receipt.audit_seq = moved.audit_seq;
            receipt.issued_at_ms = now_ms();
            receipt.reviewers.push(reviewer.to_string());
            receipt.sign(&self.keys);
            tx.exec(
                "UPDATE jobs SET receipt = ?2 WHERE id = ?1",
                params![
                    id,
                    serde_json::to_string(&receipt).map_err(anyhow::Error::from)?
                ],
            )?;
            file(tx, id, reviewer)?;
            Ok(JobState::Succeeded)
        })
    }

    /// A reviewer discards a held job's report: the job ends `failed` and its report and
    /// drafted receipt are deleted (what it spent stays charged).
    pub fn discard_held(
        &self,
        id: &str,
        reviewer: &str,
        reason: &str,
    ) -> Result<JobState, StateError> {
        self.write(|tx| {
            let error = format!("held report discarded by reviewer `{reviewer}`: {reason}");
            transition(
                tx,
                id,
                Move {
                    from: &[JobState::Held],
                    to: JobState::Failed,
                    refused: "only held jobs can be discarded",
                },
                NewEntry::new("job.discarded", reviewer)
                    .detail(json!({ "discarded_by": reviewer, "reason": reason })),
                JobUpdate {
                    error: Some(&error),
                    review: Some((reviewer, reason)),
                    ..JobUpdate::default()
                },
                |_| json!({ "error": error }),
            )?;
            tx.exec(
                "UPDATE jobs SET report_json = NULL, report_csv = NULL, receipt = NULL WHERE id = ?1",
                [id],
            )?;
            // Nothing was released: nothing to file.
            tx.exec("DELETE FROM filings WHERE job = ?1", [id])?;
            Ok(JobState::Failed)
        })
    }

    /// Marks a running job failed.
    pub fn fail(&self, id: &str, error: &str) -> Result<(), StateError> {
        self.write(|tx| fail(tx, id, error))
    }

    /// Job `id`'s risk report `(sha256, body)`, if one was made.
    pub fn risk_report(&self, id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT sha256, body FROM risk_reports WHERE job = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Keeps `body` as job `id`'s risk report unless one is kept already; returns the one kept
    /// `(sha256, body)`: a report is made once, and what a reviewer read is what is recorded.
    pub fn keep_risk_report(&self, id: &str, body: &str) -> Result<(String, String)> {
        let sha = crate::keys::sha256_hex(body.as_bytes());
        self.lock().execute(
            "INSERT OR IGNORE INTO risk_reports (job, sha256, body, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, sha, body, now_ms()],
        )?;
        self.risk_report(id)?
            .context("a risk report just kept is missing")
    }

    /// How many reviewer approvals jobs with build `wasm_sha256` received, other than job
    /// `except`'s.
    pub fn build_approvals(&self, wasm_sha256: &str, except: &str) -> Result<i64> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM approvals a JOIN jobs j ON a.job = j.id
             WHERE j.wasm_sha256 = ?1 AND a.job != ?2 AND a.role = 'reviewer'",
            params![wasm_sha256, except],
            |r| r.get(0),
        )?)
    }

    /// The wasm whose sha256 is `sha256`, if a job still holds it.
    pub fn wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row("SELECT bytes FROM wasm WHERE sha256 = ?1", [sha256], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Job `id`'s log, if the job exists.
    pub fn job_log(&self, id: &str) -> Result<Option<JobLog>> {
        let conn = self.lock();
        let row: Option<(String, i64)> = conn
            .query_row(
                "SELECT log, log_dropped FROM jobs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            None => None,
            Some((lines, dropped)) => Some(JobLog {
                lines: serde_json::from_str(&lines)?,
                dropped: u64::try_from(dropped).unwrap_or(0),
            }),
        })
    }

    /// At start-up: jobs left running by a crash are failed (their charges stay).
    pub fn recover(&self) -> Result<usize> {
        let ids: Vec<String> = {
            let conn = self.lock();
            let mut stmt =
                conn.prepare_cached("SELECT id FROM jobs WHERE state = 'running' ORDER BY n")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for id in &ids {
            self.fail(id, "interrupted: the broker stopped while the job was running; what it spent stays charged")?;
        }
        Ok(ids.len())
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<Option<JobInfo>> {
        let conn = self.reader()?;
        Ok(jobs_where(&conn, "j.id = ?1", params![id])?.pop())
    }

    /// An operator's jobs, newest first.
    pub fn jobs_of(&self, operator: &str, limit: i64) -> Result<Vec<JobInfo>> {
        let conn = self.reader()?;
        jobs_where(
            &conn,
            "j.operator = ?1 ORDER BY j.n DESC LIMIT ?2",
            params![operator, limit],
        )
    }

    /// The most recent jobs of every operator, newest first.
    pub fn jobs_recent(&self, limit: i64) -> Result<Vec<JobInfo>> {
        let conn = self.lock();
        jobs_where(&conn, "1 = 1 ORDER BY j.n DESC LIMIT ?1", params![limit])
    }

    /// Jobs pending review, oldest first.
    pub fn pending_reviews(&self) -> Result<Vec<JobInfo>> {
        let conn = self.lock();
        jobs_where(&conn, "j.state = 'pending_review' ORDER BY j.n", params![])
    }

    /// Whether a reviewer allowed build `wasm_sha256` for `operator` on `dataset`.
    pub fn build_allowed(&self, operator: &str, dataset: &str, wasm_sha256: &str) -> Result<bool> {
        Ok(self.reader()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM allowed_builds
                            WHERE operator = ?1 AND dataset = ?2 AND wasm_sha256 = ?3)",
            params![operator, dataset, wasm_sha256],
            |r| r.get(0),
        )?)
    }

    /// Raises alert `rule` for `operator` (`*`: every operator) on `dataset` at `share` of its
    /// cap, unless the same rule already fired for them within the last `window`: an
    /// `alert.raised` entry, the alert row and, for `suspend`, the suspension of `target` (the
    /// operator or the dataset, with its own `suspended` entry), in one transaction. Returns
    /// whether it was raised.
    pub fn raise_alert(&self, alert: &NewAlert<'_>, window: Duration) -> Result<bool> {
        let since = now_ms().saturating_sub(window.as_millis().min(i64::MAX as u128) as i64);
        let raised = |c: &Connection| -> rusqlite::Result<bool> {
            c.row(
                "SELECT EXISTS (SELECT 1 FROM alerts
                                WHERE rule = ?1 AND operator = ?2 AND dataset = ?3 AND at_ms >= ?4)",
                params![alert.rule, alert.operator, alert.dataset, since],
                |r| r.get(0),
            )
        };
        // A rule at its level fires on every charge until its window passes: look before
        // opening a transaction, and again inside it.
        if raised(&*self.reader()?)? {
            return Ok(false);
        }
        self.write(|tx| -> Result<bool> {
            if raised(tx)? {
                return Ok(false);
            }
            let actor = format!("alert:{}", alert.rule);
            let mut entry = NewEntry::new("alert.raised", &actor)
                .dataset(alert.dataset)
                .detail(json!({
                    "rule": alert.rule,
                    "when": alert.when,
                    "share": alert.share,
                    "action": alert.action,
                    "operator": alert.operator,
                }));
            if alert.operator != "*" {
                entry = entry.operator(alert.operator);
            }
            let seq = audit::append(tx, entry)?;
            tx.exec(
                "INSERT INTO alerts (at_ms, rule, operator, dataset, share, action, audit_seq, watching)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![now_ms(), alert.rule, alert.operator, alert.dataset, alert.share, alert.action, seq, alert.when],
            )?;
            if let Some((kind, name)) = alert.act_on {
                let reason = match alert.when {
                    "denials" => format!("alert `{}`: {} refused queries", alert.rule, alert.share),
                    "burn_rate" => format!(
                        "alert `{}`: {:.0}% of the period cap spent within its window",
                        alert.rule,
                        alert.share * 100.0
                    ),
                    _ => format!("alert `{}`: {:.0}% of the cap spent", alert.rule, alert.share * 100.0),
                };
                set_suspension(tx, kind, name, true, &actor, &reason, Some("alert"))?;
            }
            Ok(true)
        })
    }

    /// Filings made since `since_ms` (Unix ms), oldest first, at most 10 000.
    pub fn filings(&self, since_ms: i64) -> Result<Vec<Filing>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT f.number, f.filed_ms, f.audit_seq, f.terms, j.receipt
             FROM filings f JOIN jobs j ON j.id = f.job
             WHERE f.filed_ms IS NOT NULL AND f.filed_ms >= ?1 AND j.receipt IS NOT NULL
             ORDER BY f.number LIMIT 10000",
        )?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(number, filed_ms, audit_seq, terms, receipt)| {
                Ok(Filing {
                    number,
                    filed_ms,
                    audit_seq,
                    terms: serde_json::from_str(&terms)?,
                    receipt: serde_json::from_str(&receipt)?,
                })
            })
            .collect()
    }

    /// The filings made since `since_ms` that `keep` keeps, exported and signed for `scope`.
    pub fn export_filings(
        &self,
        since_ms: i64,
        scope: String,
        keep: impl Fn(&Filing) -> bool,
    ) -> Result<crate::filings::FilingExport> {
        let mut filings = self.filings(since_ms)?;
        filings.retain(keep);
        Ok(crate::filings::FilingExport::new(
            &self.keys, since_ms, scope, filings,
        ))
    }

    /// Alerts raised, newest first (at most `limit`).
    pub fn alerts(&self, limit: i64) -> Result<Vec<Alert>> {
        self.alerts_where("1 ORDER BY id DESC LIMIT ?1", limit)
    }

    /// Alerts raised after alert `after`, oldest first (at most 100): what an alert stream
    /// sends next.
    pub fn alerts_after(&self, after: i64) -> Result<Vec<Alert>> {
        self.alerts_where("id > ?1 ORDER BY id LIMIT 100", after)
    }

    /// Alerts raised in the last `within` and not yet delivered to the webhook, oldest first
    /// (at most 16).
    pub fn undelivered_alerts(&self, within: Duration) -> Result<Vec<Alert>> {
        let since = now_ms().saturating_sub(within.as_millis().min(i64::MAX as u128) as i64);
        self.alerts_where(
            "delivered_ms IS NULL AND at_ms >= ?1 ORDER BY id LIMIT 16",
            since,
        )
    }

    /// Notes that alert `id` reached the webhook.
    pub fn alert_delivered(&self, id: i64) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "UPDATE alerts SET delivered_ms = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )?;
            Ok(())
        })
    }

    /// The highest alert number so far (0 before the first).
    pub fn last_alert(&self) -> Result<i64> {
        let conn = self.lock();
        Ok(conn.row("SELECT COALESCE(MAX(id), 0) FROM alerts", [], |r| r.get(0))?)
    }

    fn alerts_where(&self, clause: &str, arg: i64) -> Result<Vec<Alert>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, at_ms, rule, operator, dataset, share, action, audit_seq, watching
             FROM alerts WHERE {clause}"
        ))?;
        Ok(stmt
            .query_map([arg], |r| {
                Ok(Alert {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    rule: r.get(2)?,
                    operator: r.get(3)?,
                    dataset: r.get(4)?,
                    share: r.get(5)?,
                    action: r.get(6)?,
                    audit_seq: r.get(7)?,
                    when: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Held jobs, oldest first.
    pub fn held_jobs(&self) -> Result<Vec<JobInfo>> {
        let conn = self.lock();
        jobs_where(&conn, "j.state = 'held' ORDER BY j.n", params![])
    }

    /// A released job's report (JSON or CSV) and receipt, once its release is on disk.
    pub fn result(&self, id: &str, csv: bool) -> Result<Option<(String, String)>> {
        let col = if csv { "report_csv" } else { "report_json" };
        let found = self
            .reader()?
            .query_row(
                &format!("SELECT {col}, receipt FROM jobs WHERE id = ?1 AND state = 'succeeded'"),
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if found.is_some() {
            self.synced_through_now()?;
        }
        Ok(found)
    }

    /// Returns once every commit seen so far is on disk: a release commits without waiting for
    /// the disk ([`Store::finish`]), and asks for its sync before it lets go of the writer's
    /// lock, so that a reader that saw it and then takes the lock finds its request counted.
    fn synced_through_now(&self) -> Result<()> {
        let mark = {
            let _writer = self.lock();
            self.wal_sync.requests()
        };
        self.wal_sync.wait(mark)
    }

    /// Events of a job after `after`.
    pub fn events(&self, job: &str, after: i64) -> Result<Vec<Event>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, at_ms, kind, detail FROM events WHERE job = ?1 AND id > ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![job, after], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at_ms, kind, detail) = row?;
            out.push(Event {
                id,
                at_ms,
                kind,
                detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
            });
        }
        Ok(out)
    }

    /// Number of queued jobs.
    pub fn queued(&self) -> Result<i64> {
        Ok(self.reader()?.row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Jobs waiting for review: `operator`'s, and everyone's.
    pub fn pending_review_counts(&self, operator: &str) -> Result<(i64, i64)> {
        Ok(self.reader()?.query_row(
            "SELECT COUNT(*) FILTER (WHERE operator = ?1), COUNT(*) FROM jobs WHERE state = 'pending_review'",
            [operator],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Jobs by state.
    pub fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        Ok(stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Totals of every charge in the ledger.
    pub fn charge_totals(&self) -> Result<ChargeTotals> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*), COALESCE(SUM(epsilon), 0), COALESCE(SUM(rho), 0), COALESCE(SUM(delta), 0)
             FROM charges",
            [],
            |r| {
                Ok(ChargeTotals {
                    queries: r.get(0)?,
                    epsilon: r.get(1)?,
                    rho: r.get(2)?,
                    delta: r.get(3)?,
                })
            },
        )?)
    }

    /// What each operator spent on `dataset` per UTC day since `since_ms`, oldest first.
    pub fn daily_spend(&self, dataset: &str, since_ms: i64) -> Result<Vec<DailySpend>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT at_ms / 86400000 AS day, operator, COUNT(*), SUM(epsilon), SUM(delta), SUM(rho)
             FROM charges WHERE dataset = ?1 AND at_ms >= ?2
             GROUP BY day, operator ORDER BY day, operator",
        )?;
        Ok(stmt
            .query_map(params![dataset, since_ms], |r| {
                Ok(DailySpend {
                    day: sluice_policy::Date::from_days_since_epoch(r.get(0)?).to_string(),
                    operator: r.get(1)?,
                    queries: r.get(2)?,
                    epsilon: r.get(3)?,
                    delta: r.get(4)?,
                    rho: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Usage by dataset and operator.
    pub fn usage(&self) -> Result<Vec<Usage>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT dataset, operator, COUNT(*), COUNT(DISTINCT job), SUM(epsilon), SUM(delta), SUM(rho)
             FROM charges GROUP BY dataset, operator ORDER BY dataset, operator",
        )?;
        Ok(stmt
            .query_map([], |r| {
                Ok(Usage {
                    dataset: r.get(0)?,
                    operator: r.get(1)?,
                    queries: r.get(2)?,
                    jobs: r.get(3)?,
                    epsilon: r.get(4)?,
                    delta: r.get(5)?,
                    rho: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    // ---- suspensions --------------------------------------------------------------------

    /// Suspends (or resumes) an operator or dataset; `kind` is `operator` or `dataset`.
    pub fn set_suspended(
        &self,
        kind: &'static str,
        name: &str,
        suspend: bool,
        actor: &str,
        reason: &str,
    ) -> Result<()> {
        self.write(|tx| set_suspension(tx, kind, name, suspend, actor, reason, None))
    }

    /// Freezes (or unfreezes) the platform, or one holder's datasets, in one transaction: a
    /// `frozen` (`unfrozen`) entry, then one suspension per dataset (or the platform-wide one),
    /// each with its own `suspended` (`resumed`) entry so that the release gate sees it.
    pub fn freeze(
        &self,
        holder: Option<(&str, &[String])>,
        frozen: bool,
        actor: &str,
        reason: &str,
    ) -> Result<()> {
        self.write(|tx| -> Result<()> {
            let scope = holder.map_or("all".to_string(), |(h, _)| format!("holder {h}"));
            audit::append(
                tx,
                NewEntry::new(if frozen { "frozen" } else { "unfrozen" }, actor).detail(json!({
                    "scope": scope,
                    "datasets": holder.map(|(_, d)| d),
                    "reason": reason,
                })),
            )?;
            let targets: Vec<(&str, &str)> = match holder {
                None => vec![("all", "*")],
                Some((_, datasets)) => datasets.iter().map(|d| ("dataset", d.as_str())).collect(),
            };
            for (kind, name) in targets {
                set_suspension(tx, kind, name, frozen, actor, reason, Some("freeze"))?;
            }
            Ok(())
        })
    }

    /// Current suspensions: (kind, name, reason).
    pub fn suspensions(&self) -> Result<Vec<(String, String, String)>> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached("SELECT kind, name, reason FROM suspensions ORDER BY kind, name")?;
        Ok(stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    // ---- the ledger ---------------------------------------------------------------------

    /// Charges a query: checks suspension and the grant's caps against the ledger, appends the
    /// `query` audit entry and the charge, and commits, all in one transaction, before the query
    /// runs; durable when it returns. Nothing is recorded when it is refused.
    pub fn charge(&self, c: &Charge) -> Result<AfterCharge, BudgetError> {
        let (after, recorded) = self.charge_syncing(c)?;
        self.settle(recorded)?;
        Ok(after)
    }

    /// [`Store::charge`], returning once the charge is committed but before it is durable: its
    /// sync runs on the store's sync thread (with other charges' syncs, group commit) while the
    /// query runs, and [`Store::settle`] waits for it before the answer leaves the engine. A
    /// power cut before then may lose the charge, but then nothing it paid for was released.
    pub fn charge_syncing(&self, c: &Charge) -> Result<(AfterCharge, Recorded), BudgetError> {
        match self.write_unsynced(|tx| charge_in(tx, c)) {
            Ok((after, mark)) => Ok((after, Recorded::Syncing(mark))),
            Err(NotCharged::Refused(e)) => Err(e),
            Err(NotCharged::Ledger(e)) => {
                tracing::error!("budget ledger failure: {e:#}");
                Err(BudgetError::Unavailable)
            }
        }
    }

    /// Returns once a charge made by [`Store::charge_syncing`] is durable.
    pub fn settle(&self, recorded: Recorded) -> Result<(), BudgetError> {
        match recorded {
            Recorded::Durable => Ok(()),
            Recorded::Syncing(mark) => self.wal_sync.wait(mark).map_err(|e| {
                tracing::error!("budget ledger failure: {e:#}");
                BudgetError::Unavailable
            }),
        }
    }

    /// What every operator together spent on `dataset` in the last `period`.
    pub fn dataset_spent(&self, dataset: &str, period: Duration) -> Totals {
        self.reader()
            .and_then(|c| dataset_spent(&c, dataset, period))
            .unwrap_or_default()
    }

    /// What `operator` spent on `dataset` this period, and `job` in all.
    pub fn spent(&self, operator: &str, dataset: &str, job: &str, period: Duration) -> Spent {
        self.spent_in(operator, dataset, None, job, period)
    }

    /// What `operator` spent on `dataset` under `scenario` this period, and `job` in all.
    pub fn spent_in(
        &self,
        operator: &str,
        dataset: &str,
        scenario: Option<&str>,
        job: &str,
        period: Duration,
    ) -> Spent {
        self.reader()
            .and_then(|c| spent(&c, operator, dataset, scenario, job, period))
            .unwrap_or_default()
    }

    /// Totals per job from the ledger, for consistency checks: (job, ε).
    pub fn ledger_by_job(&self) -> Result<Vec<(String, f64)>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT job, SUM(epsilon) FROM charges GROUP BY job ORDER BY job")?;
        Ok(stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }
}

/// Which states a job may leave for which, and what to say when it is in another.
struct Move {
    from: &'static [JobState],
    to: JobState,
    refused: &'static str,
}

/// What a job's row gets beside its new state (start and finish times follow from the state).
#[derive(Default)]
struct JobUpdate<'a> {
    error: Option<&'a str>,
    /// Reviewer and reason.
    review: Option<(&'a str, &'a str)>,
    /// The report as JSON and as CSV.
    report: Option<(&'a str, &'a str)>,
}

/// A job state change as recorded.
struct Moved {
    operator: String,
    audit_seq: i64,
}

/// Keeps what a job's run left in `tx`: its log (the lines the log cap kept, and how many it
/// dropped), sent to its followers as a `log` event, and its meters.
fn record_run(tx: &rusqlite::Transaction<'_>, run: &RunRecord<'_>) -> Result<()> {
    let text = serde_json::to_string(run.log)?;
    tx.exec(
        "UPDATE jobs SET log = ?2, log_dropped = ?3 WHERE id = ?1",
        params![
            run.job,
            text,
            i64::try_from(run.dropped).unwrap_or(i64::MAX)
        ],
    )?;
    event(
        tx,
        run.job,
        "log",
        json!({ "lines": run.log, "dropped": run.dropped }),
    )?;
    crate::statements::insert_meters(tx, run.job, run.operator, run.scenario, run.meters)?;
    Ok(())
}

/// [`Store::fail`]'s work in `tx`.
fn fail(tx: &rusqlite::Transaction<'_>, id: &str, error: &str) -> Result<(), StateError> {
    transition(
        tx,
        id,
        Move {
            from: &[JobState::Running],
            to: JobState::Failed,
            refused: "only running jobs can fail",
        },
        NewEntry::new("job.failed", "broker").detail(json!({ "error": error })),
        JobUpdate {
            error: Some(error),
            ..JobUpdate::default()
        },
        |_| json!({ "error": error }),
    )?;
    Ok(())
}

/// The one way a job changes state, inside `tx`: the job must be in one of `m.from`; the audit
/// entry (about this job and its operator) is appended, the row updated and the event (with
/// `detail` of the entry's sequence number) emitted, or nothing is.
fn transition(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    m: Move,
    entry: NewEntry,
    update: JobUpdate<'_>,
    detail: impl FnOnce(i64) -> Value,
) -> Result<Moved, StateError> {
    let (state, operator) =
        Store::job_state(tx, id)?.ok_or_else(|| StateError::NoJob(id.into()))?;
    if !m.from.contains(&state) {
        return Err(StateError::WrongState {
            id: id.into(),
            state: state.as_str(),
            what: m.refused,
        });
    }
    let audit_seq = audit::append(tx, entry.job(id).operator(&operator))?;
    let (reviewer, reason) = update.review.unzip();
    let (report_json, report_csv) = update.report.unzip();
    tx.exec(
        "UPDATE jobs SET state = ?2,
           started_ms = CASE WHEN ?3 THEN ?4 ELSE started_ms END,
           finished_ms = CASE WHEN ?5 THEN ?4 ELSE finished_ms END,
           error = COALESCE(?6, error),
           reviewer = COALESCE(?7, reviewer), review_reason = COALESCE(?8, review_reason),
           report_json = COALESCE(?9, report_json), report_csv = COALESCE(?10, report_csv)
         WHERE id = ?1",
        params![
            id,
            m.to.as_str(),
            m.to == JobState::Running,
            now_ms(),
            m.to.is_final(),
            update.error,
            reviewer,
            reason,
            report_json,
            report_csv
        ],
    )?;
    event(tx, id, m.to.event(), detail(audit_seq))?;
    Ok(Moved {
        operator,
        audit_seq,
    })
}

fn event(tx: &Connection, job: &str, kind: &str, detail: Value) -> rusqlite::Result<usize> {
    tx.exec(
        "INSERT INTO events (job, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![job, now_ms(), kind, detail.to_string()],
    )
}

/// Suspends (`on`) or resumes `kind` `name` (`operator`, `dataset`, or `all`) in `tx`: its
/// `suspended` (`resumed`) entry by `actor`, then the suspension row. `by` names what did it
/// when not a person directly (`freeze`, `alert`).
fn set_suspension(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    name: &str,
    on: bool,
    actor: &str,
    reason: &str,
    by: Option<&str>,
) -> Result<()> {
    let mut detail = json!({ "kind": kind, "name": name, "reason": reason });
    if let Some(by) = by {
        detail["by"] = json!(by);
    }
    let entry_kind = match (kind.starts_with("hold:"), on) {
        (false, true) => "suspended",
        (false, false) => "resumed",
        (true, true) => "releases.held",
        (true, false) => "releases.unheld",
    };
    let mut e = NewEntry::new(entry_kind, actor).detail(detail);
    match kind {
        "operator" | "hold:operator" => e = e.operator(name),
        "dataset" | "hold:dataset" => e = e.dataset(name),
        _ => {}
    }
    audit::append(tx, e)?;
    if on {
        tx.exec(
            "INSERT OR REPLACE INTO suspensions (kind, name, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![kind, name, reason, now_ms()],
        )?;
    } else {
        tx.exec(
            "DELETE FROM suspensions WHERE kind = ?1 AND name = ?2",
            params![kind, name],
        )?;
    }
    Ok(())
}

/// Whose approval job `id` still waits for: a reviewer's (`reviewer`) and each holder's in
/// `needed` that has not approved yet.
fn waiting_for(tx: &Connection, id: &str, needed: &[String]) -> Result<Vec<String>, StateError> {
    let mut stmt = tx.prepare_cached("SELECT principal, role FROM approvals WHERE job = ?1")?;
    let given: Vec<(String, String)> = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut waiting = Vec::new();
    if !given.iter().any(|(_, role)| role == "reviewer") {
        waiting.push("reviewer".to_string());
    }
    for h in needed {
        if !given.iter().any(|(p, role)| p == h && role == "holder") {
            waiting.push(format!("holder {h}"));
        }
    }
    Ok(waiting)
}

/// Who approved job `id`, in order (before approvals were recorded: its one reviewer).
fn approvers(tx: &Connection, id: &str, reviewer: Option<String>) -> Result<Vec<String>> {
    let mut stmt =
        tx.prepare_cached("SELECT principal FROM approvals WHERE job = ?1 ORDER BY at_ms, rowid")?;
    let mut out: Vec<String> = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if out.is_empty() {
        out.extend(reviewer);
    }
    Ok(out)
}

/// Puts job `id`'s build on its operator's allow-list for each of its datasets.
fn allow_build(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    reviewer: &str,
    reason: &str,
) -> Result<(), StateError> {
    let (operator, sha, datasets): (String, String, String) = tx
        .query_row(
            "SELECT operator, wasm_sha256, datasets FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| StateError::NoJob(id.into()))?;
    let datasets: Vec<String> = serde_json::from_str(&datasets).map_err(anyhow::Error::from)?;
    audit::append(
        tx,
        NewEntry::new("build.allowed", reviewer)
            .job(id)
            .operator(&operator)
            .detail(json!({ "wasm_sha256": sha, "datasets": datasets, "reason": reason })),
    )?;
    for d in &datasets {
        tx.exec(
            "INSERT OR IGNORE INTO allowed_builds (operator, dataset, wasm_sha256, allowed_by, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![operator, d, sha, reviewer, now_ms()],
        )?;
    }
    Ok(())
}

/// Whether `operator` or one of `datasets` is suspended now or was suspended at any moment since
/// job `id` started (a `suspended` audit entry after its `job.started`): the release gate.
fn suspended_since_start(
    tx: &Connection,
    id: &str,
    operator: &str,
    datasets: &[String],
) -> Result<Option<String>> {
    if let Some(why) = suspended(tx, operator, datasets)? {
        return Ok(Some(why));
    }
    let started: i64 = tx.row(
        "SELECT COALESCE(MAX(seq), 0) FROM audit WHERE job = ?1 AND kind = 'job.started'",
        [id],
        |r| r.get(0),
    )?;
    let names = serde_json::to_string(datasets)?;
    let during: Option<(String, Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT kind, operator, dataset FROM audit
             WHERE kind IN ('suspended', 'releases.held') AND seq > ?1
               AND (operator = ?2 OR dataset IN (SELECT value FROM json_each(?3))
                    OR json_extract(body, '$.detail.kind') = 'all')
             ORDER BY seq LIMIT 1",
            params![started, operator, names],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(during.map(|(kind, op, ds)| {
        let what = if kind == "suspended" {
            "suspended"
        } else {
            "put under a release hold"
        };
        match (op, ds) {
            (Some(op), _) => format!("operator `{op}` was {what} while the job ran"),
            (_, Some(ds)) => format!("dataset `{ds}` was {what} while the job ran"),
            _ => "the platform was frozen while the job ran".into(),
        }
    }))
}

/// Files the release of job `id` if its filing was drafted: a `filing` audit entry, and the
/// filing's time and entry. A job without a draft is not filed.
fn file(tx: &rusqlite::Transaction<'_>, id: &str, actor: &str) -> Result<()> {
    let number: Option<i64> = tx
        .query_row("SELECT number FROM filings WHERE job = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(number) = number else {
        return Ok(());
    };
    let seq = audit::append(
        tx,
        NewEntry::new("filing", actor)
            .job(id)
            .detail(json!({ "number": number })),
    )?;
    tx.exec(
        "UPDATE filings SET filed_ms = ?2, audit_seq = ?3 WHERE job = ?1",
        params![id, now_ms(), seq],
    )?;
    Ok(())
}

/// Why a report of `operator` on `datasets` may not leave without a reviewer now: a release
/// hold on the operator or one of the datasets (an alert's `hold_releases`, or an admin's).
fn releases_held(tx: &Connection, operator: &str, datasets: &[String]) -> Result<Option<String>> {
    let names = serde_json::to_string(datasets)?;
    let hold: Option<(String, String, String)> = tx
        .query_row(
            "SELECT kind, name, reason FROM suspensions
             WHERE (kind = 'hold:operator' AND name = ?1)
                OR (kind = 'hold:dataset' AND name IN (SELECT value FROM json_each(?2)))
             ORDER BY kind DESC LIMIT 1",
            params![operator, names],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(hold.map(|(kind, name, reason)| {
        let what = kind.trim_start_matches("hold:");
        format!("releases of {what} `{name}` are held ({reason})")
    }))
}

fn suspended(tx: &Connection, operator: &str, datasets: &[String]) -> Result<Option<String>> {
    let frozen: Option<String> = tx
        .query_row(
            "SELECT reason FROM suspensions WHERE kind = 'all'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(reason) = frozen {
        return Ok(Some(format!("the platform is frozen ({reason})")));
    }
    let op: Option<String> = tx
        .query_row(
            "SELECT reason FROM suspensions WHERE kind = 'operator' AND name = ?1",
            [operator],
            |r| r.get(0),
        )
        .optional()?;
    if op.is_some() {
        return Ok(Some(format!(
            "operator `{operator}` is suspended by the data holder"
        )));
    }
    for d in datasets {
        let ds: Option<String> = tx
            .query_row(
                "SELECT reason FROM suspensions WHERE kind = 'dataset' AND name = ?1",
                [d],
                |r| r.get(0),
            )
            .optional()?;
        if ds.is_some() {
            return Ok(Some(format!("dataset `{d}` is suspended by its holder")));
        }
    }
    Ok(None)
}

/// Why a charge was not recorded: refused by a rule, or the ledger failed.
enum NotCharged {
    Refused(BudgetError),
    Ledger(anyhow::Error),
}

impl From<rusqlite::Error> for NotCharged {
    fn from(e: rusqlite::Error) -> Self {
        Self::Ledger(e.into())
    }
}

impl From<anyhow::Error> for NotCharged {
    fn from(e: anyhow::Error) -> Self {
        Self::Ledger(e)
    }
}

/// The charge's work in `tx`: its totals after it, or why it was refused (an error, so that
/// the transaction rolls back and nothing is written).
fn charge_in(tx: &rusqlite::Transaction<'_>, c: &Charge) -> Result<AfterCharge, NotCharged> {
    if let Some(why) = suspended(tx, c.operator.as_str(), &[c.dataset.to_string()])? {
        return Err(NotCharged::Refused(BudgetError::Suspended(why)));
    }
    // Each key's last running total, read once: for the spend before the charge and for the
    // totals stored with it.
    let (grant, dataset_key) = (grant_key(c), Key::Dataset(c.dataset.as_str()));
    let (grant_last, dataset_last) = (grant.last(tx)?, dataset_key.last(tx)?);
    let spent = Spent {
        job: job_spent(
            tx,
            c.operator.as_str(),
            c.dataset.as_str(),
            c.scenario.as_deref(),
            &c.job,
        )?,
        period: grant.spent_since_mark(tx, grant_last, period_start(c.period))?,
    };
    let dataset = match c.dataset_cap {
        Some(cap) => dataset_key.spent_since_mark(tx, dataset_last, period_start(cap.period))?,
        None => Totals::default(),
    };
    check_limits(c, spent, dataset).map_err(NotCharged::Refused)?;
    let measure = c.amount.measure;
    let after = AfterCharge {
        own_period: spent.period.in_measure(measure) + c.amount.value,
        dataset_period: c
            .dataset_cap
            .map(|_| dataset.in_measure(measure) + c.amount.value),
    };
    let seq = audit::append(
        tx,
        NewEntry::new("query", c.operator.as_str())
            .job(&c.job)
            .operator(c.operator.as_str())
            .dataset(c.dataset.as_str())
            .detail(json!({
                "submitted_sql": c.submitted_sql,
                "sql": c.sql,
                "dataset_sha256": c.dataset_hash,
                "mechanism": c.mechanism,
                "engine": c.engine,
                "epsilon": c.amount.epsilon(),
                "rho": c.amount.rho(),
                "delta": c.delta,
                "scenario": c.scenario,
            })),
    )?;
    let next = NextCharge::new(
        grant_last,
        dataset_last,
        Units::of_charge(c.amount.epsilon(), c.amount.rho(), c.delta)?,
        now_ms(),
    )?;
    tx.exec(
            "INSERT INTO charges (at_ms, operator, dataset, job, epsilon, delta, audit_seq, rho, scenario,
                 grant_total_epsilon, grant_total_rho, grant_total_delta,
                 dataset_total_epsilon, dataset_total_rho, dataset_total_delta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                next.at_ms,
                c.operator.as_str(),
                c.dataset.as_str(),
                c.job,
                c.amount.epsilon(),
                c.delta,
                seq,
                c.amount.rho(),
                c.scenario,
                next.grant.epsilon,
                next.grant.rho,
                next.grant.delta,
                next.dataset.epsilon,
                next.dataset.rho,
                next.dataset.delta
            ],
        )?;
    event(
        tx,
        &c.job,
        "query",
        json!({ "dataset": c.dataset.as_str(), "epsilon": c.amount.epsilon(), "rho": c.amount.rho(), "delta": c.delta }),
    )?;
    Ok(after)
}

fn spent(
    conn: &Connection,
    operator: &str,
    dataset: &str,
    scenario: Option<&str>,
    job: &str,
    period: Duration,
) -> Result<Spent> {
    let grant = Key::Grant {
        operator,
        dataset,
        scenario,
    };
    Ok(Spent {
        job: job_spent(conn, operator, dataset, scenario, job)?,
        // A period's charges may be many: read from the running totals, the same cost after a
        // year of charges as on the first day.
        period: grant.spent_since(conn, period_start(period))?,
    })
}

/// What `job` spent on `dataset` under `scenario`: a job's charges are few, summed through
/// their index.
fn job_spent(
    conn: &Connection,
    operator: &str,
    dataset: &str,
    scenario: Option<&str>,
    job: &str,
) -> Result<Totals> {
    Ok(conn.row(
        "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(rho), 0), COALESCE(SUM(delta), 0)
         FROM charges INDEXED BY charges_job
         WHERE job = ?3 AND operator = ?1 AND dataset = ?2 AND scenario IS ?4",
        params![operator, dataset, job, scenario],
        |r| {
            Ok(Totals {
                epsilon: r.get(0)?,
                rho: r.get(1)?,
                delta: r.get(2)?,
            })
        },
    )?)
}

/// The grant a charge is made on, as the ledger's running totals key it.
fn grant_key(c: &Charge) -> Key<'_> {
    Key::Grant {
        operator: c.operator.as_str(),
        dataset: c.dataset.as_str(),
        scenario: c.scenario.as_deref(),
    }
}

/// When the period of length `period` that ends now began.
fn period_start(period: Duration) -> i64 {
    now_ms().saturating_sub(period.as_millis().min(i64::MAX as u128) as i64)
}

/// What every operator together spent on `dataset` in the last `period`.
fn dataset_spent(conn: &Connection, dataset: &str, period: Duration) -> Result<Totals> {
    Key::Dataset(dataset).spent_since(conn, period_start(period))
}

/// The sha256 of the risk report job `id` was approved on: the one its approvals' audit entries
/// name, if any named one.
fn approved_risk(tx: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    tx.row(
        "SELECT json_extract(body, '$.detail.risk_report.sha256') FROM audit
         WHERE job = ?1 AND kind = 'review.approved'
           AND json_extract(body, '$.detail.risk_report.sha256') IS NOT NULL
         ORDER BY seq DESC LIMIT 1",
        [id],
        |r| r.get(0),
    )
    .optional()
}

fn jobs_where(conn: &Connection, clause: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<JobInfo>> {
    let sql = format!(
        "SELECT j.id, j.operator, j.purpose, j.wasm_sha256, j.datasets, j.max_epsilon, j.state, j.error,
                j.review_reason, j.reviewer, j.created_ms, j.started_ms, j.finished_ms,
                (SELECT COALESCE(SUM(epsilon), 0) FROM charges c WHERE c.job = j.id),
                (SELECT COUNT(*) FROM charges c WHERE c.job = j.id),
                (SELECT COALESCE(SUM(rho), 0) FROM charges c WHERE c.job = j.id),
                j.params, j.holders_to_approve,
                (SELECT COALESCE(json_group_array(a.principal), '[]')
                 FROM (SELECT principal FROM approvals WHERE job = j.id ORDER BY at_ms, rowid) a),
                j.scenario,
                (SELECT COALESCE(json_group_array(json_object('dataset', d, 'epsilon', e, 'rho', r,
                                                              'delta', dl, 'queries', n)), '[]')
                 FROM (SELECT dataset d, SUM(epsilon) e, SUM(rho) r, SUM(delta) dl, COUNT(*) n
                       FROM charges c WHERE c.job = j.id GROUP BY dataset ORDER BY dataset)),
                (SELECT COALESCE(length(w.bytes), 0) FROM wasm w WHERE w.sha256 = j.wasm_sha256)
         FROM jobs j WHERE {clause}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok(JobInfo {
            id: r.get(0)?,
            operator: r.get(1)?,
            purpose: r.get(2)?,
            wasm_sha256: r.get(3)?,
            datasets: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
            max_epsilon: r.get(5)?,
            state: JobState::parse(&r.get::<_, String>(6)?),
            error: r.get(7)?,
            review_reason: r.get(8)?,
            reviewer: r.get(9)?,
            created_ms: r.get(10)?,
            started_ms: r.get(11)?,
            finished_ms: r.get(12)?,
            epsilon_spent: r.get(13)?,
            queries: r.get(14)?,
            rho_spent: r.get(15)?,
            params: r.get(16)?,
            holders_to_approve: serde_json::from_str(&r.get::<_, String>(17)?).unwrap_or_default(),
            approved_by: serde_json::from_str(&r.get::<_, String>(18)?).unwrap_or_default(),
            scenario: r.get(19)?,
            spent: serde_json::from_str(&r.get::<_, String>(20)?).unwrap_or_default(),
            wasm_bytes: r.get::<_, Option<i64>>(21)?.unwrap_or(0),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The broker's identical-query cache: released answers in the database, so that a repeated query
/// is free and returns the same answer across jobs and restarts. Each hit is audited.
pub struct LedgerAnswerCache(pub std::sync::Arc<Store>);

impl sluice_runtime::AnswerCache for LedgerAnswerCache {
    fn lookup(
        &self,
        key: &sluice_runtime::CacheKey,
        job: &str,
    ) -> Option<sluice_runtime::NoisyTable> {
        let digest = key.digest();
        let kept = self
            .0
            .unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|a| a.key == digest)
            .map(|a| a.answer.clone());
        let found = kept.or_else(|| {
            self.0
                .reader()
                .ok()?
                .row(
                    "SELECT answer FROM answers WHERE key = ?1",
                    [&digest],
                    |r| r.get(0),
                )
                .optional()
                .ok()
                .flatten()
        });
        let table: sluice_runtime::NoisyTable = serde_json::from_str(&found?).ok()?;
        // Log before effect: if the hit cannot be audited, answer afresh (and charge) instead.
        // A suspended operator or dataset gets no answer from the cache either: the charge that
        // follows a miss refuses it as suspended.
        let served = self
            .0
            .write(|tx| -> Result<bool> {
                if suspended(tx, &key.operator, std::slice::from_ref(&key.dataset))?.is_some() {
                    return Ok(false);
                }
                // The original's amount under its own unit's name: `epsilon_of_original` or
                // `rho_of_original`.
                let mut detail = json!({
                    "sql": key.normalized,
                    "dataset_sha256": key.dataset_hash,
                    "answer_key": digest,
                    "charged": 0.0,
                });
                let unit = match key.amount.measure {
                    sluice_policy::PrivacyMeasure::Pure => "epsilon_of_original",
                    sluice_policy::PrivacyMeasure::Zcdp => "rho_of_original",
                };
                detail[unit] = json!(key.amount.value);
                audit::append(
                    tx,
                    NewEntry::new("query.cached", &key.operator)
                        .job(job)
                        .operator(&key.operator)
                        .dataset(&key.dataset)
                        .detail(detail),
                )?;
                event(
                    tx,
                    job,
                    "query",
                    json!({ "dataset": key.dataset, "epsilon": 0.0, "cached": true }),
                )?;
                Ok(true)
            })
            .ok()?;
        served.then_some(table)
    }

    fn store(&self, key: &sluice_runtime::CacheKey, table: &sluice_runtime::NoisyTable) {
        let Ok(answer) = serde_json::to_string(table) else {
            return;
        };
        self.0
            .unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(KeptAnswer {
                key: key.digest(),
                operator: key.operator.clone(),
                dataset: key.dataset.clone(),
                dataset_hash: key.dataset_hash.clone(),
                sql: key.normalized.clone(),
                amount: key.amount.value,
                measure: match key.amount.measure {
                    sluice_policy::PrivacyMeasure::Pure => "pure",
                    sluice_policy::PrivacyMeasure::Zcdp => "zcdp",
                },
                answer,
                created_ms: now_ms(),
            });
    }
}

/// The broker's accountant: the runtime charges through the ledger in the database, and after
/// each charge (and each refusal) the policy's alert rules look at where that brought things.
pub struct LedgerAccountant {
    store: std::sync::Arc<Store>,
    alerts: Vec<sluice_policy::AlertRule>,
    /// When each operator's recent queries were refused (for `denials` rules): kept in memory,
    /// so that a flood of refusals costs no database write until a rule fires.
    refusals: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>,
    >,
}

/// Where one alert rule stands after a charge or a refusal.
struct Level<'a> {
    /// The operator it concerns, or `*`.
    operator: &'a str,
    /// The share of the cap (or the number of refusals) reached.
    share: f64,
    /// Whether that reaches the rule's level.
    fires: bool,
    /// The window in which the rule fires once per operator and dataset.
    window: Duration,
    /// What it would suspend or hold: (`operator` | `dataset`, name).
    target: (&'static str, &'a str),
}

impl LedgerAccountant {
    /// Charges through `store`, with no alert rules.
    pub fn new(store: std::sync::Arc<Store>) -> Self {
        Self::with_alerts(store, vec![])
    }

    /// Charges through `store` and checks `alerts` after each charge and refusal.
    pub fn with_alerts(
        store: std::sync::Arc<Store>,
        alerts: Vec<sluice_policy::AlertRule>,
    ) -> Self {
        Self {
            store,
            alerts,
            refusals: Default::default(),
        }
    }

    /// Raises every spending rule that `c` brought to its level. The charge is committed
    /// already: an alert's suspension stops the next query, not this one.
    fn check_alerts(&self, c: &Charge, after: AfterCharge) {
        for rule in &self.alerts {
            if !(rule.datasets.is_empty() || rule.datasets.contains(&c.dataset)) {
                continue;
            }
            if let Some(level) = self.spending_level(rule, c, after) {
                self.raise(rule, c.dataset.as_str(), level);
            }
        }
    }

    /// Where a spending rule stands after charge `c` left the totals at `after`; `None` for
    /// rules that watch refusals, and for `dataset_share` on a dataset without a dataset-wide cap.
    fn spending_level<'c>(
        &self,
        rule: &sluice_policy::AlertRule,
        c: &'c Charge,
        after: AfterCharge,
    ) -> Option<Level<'c>> {
        use sluice_policy::AlertWhen;
        let measure = c.amount.measure;
        let own = |window: Duration| {
            self.store
                .spent_in(
                    c.operator.as_str(),
                    c.dataset.as_str(),
                    c.scenario.as_deref(),
                    "",
                    window,
                )
                .period
                .in_measure(measure)
                / c.caps.per_period
        };
        // The same tolerance as the caps, so that 50 charges of 0.01 reach a share of 0.5.
        let reaches = |share: f64, threshold: f64| !share.is_nan() && share + 1e-9 >= threshold;
        let operator = ("operator", c.operator.as_str());
        Some(match rule.when {
            AlertWhen::BudgetShare { threshold } => {
                let share = after.own_period / c.caps.per_period;
                Level {
                    operator: c.operator.as_str(),
                    share,
                    fires: reaches(share, threshold),
                    window: c.period,
                    target: operator,
                }
            }
            AlertWhen::BurnRate {
                threshold,
                window_secs,
            } => {
                let window = Duration::from_secs(window_secs);
                let share = own(window);
                Level {
                    operator: c.operator.as_str(),
                    share,
                    fires: reaches(share, threshold),
                    window,
                    target: operator,
                }
            }
            AlertWhen::DatasetShare { threshold } => {
                let cap = c.dataset_cap?;
                let share = after.dataset_period? / cap.per_period;
                Level {
                    operator: "*",
                    share,
                    fires: reaches(share, threshold),
                    window: cap.period,
                    target: ("dataset", c.dataset.as_str()),
                }
            }
            AlertWhen::Denials { .. } => return None,
        })
    }

    /// Counts a refusal of `operator`'s query and raises every `denials` rule it brings to
    /// its count.
    fn count_refusal(&self, operator: &str) {
        use sluice_policy::AlertWhen;
        let rules: Vec<_> = self
            .alerts
            .iter()
            .filter_map(|r| match r.when {
                AlertWhen::Denials { count, window_secs } => {
                    Some((r, count, Duration::from_secs(window_secs)))
                }
                _ => None,
            })
            .collect();
        let Some(longest) = rules.iter().map(|(_, _, w)| *w).max() else {
            return;
        };
        let now = std::time::Instant::now();
        let recent: Vec<std::time::Instant> = {
            let mut all = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: past this many operators, the oldest entries go (a rule fires on the
            // operators refused most recently).
            if all.len() > 4096 {
                all.clear();
            }
            let times = all.entry(operator.to_string()).or_default();
            times.push_back(now);
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > longest)
            {
                times.pop_front();
            }
            times.iter().copied().collect()
        };
        for (rule, count, window) in rules {
            let n = recent
                .iter()
                .filter(|t| now.duration_since(**t) <= window)
                .count() as u64;
            let level = Level {
                operator,
                share: n as f64,
                fires: n >= count,
                window,
                target: ("operator", operator),
            };
            self.raise(rule, "*", level);
        }
    }

    /// Raises `rule` at `level` on `dataset` when it fires, acting on its target. A failure to
    /// raise is logged (what set it off stands; the rule fires again at the next one).
    fn raise(&self, rule: &sluice_policy::AlertRule, dataset: &str, level: Level<'_>) {
        use sluice_policy::AlertAction;
        if !level.fires {
            return;
        }
        let (kind, name) = level.target;
        let alert = NewAlert {
            rule: &rule.name,
            operator: level.operator,
            dataset,
            share: level.share,
            when: rule.when.as_str(),
            action: rule.action.as_str(),
            act_on: match rule.action {
                AlertAction::Notify => None,
                AlertAction::Suspend => Some((kind, name)),
                AlertAction::HoldReleases if kind == "operator" => Some(("hold:operator", name)),
                AlertAction::HoldReleases => Some(("hold:dataset", name)),
            },
        };
        match self.store.raise_alert(&alert, level.window) {
            Ok(true) => tracing::warn!(
                "alert `{}` raised on `{dataset}` by `{}`",
                rule.name,
                level.operator
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot raise alert `{}`: {e:#}", rule.name),
        }
    }
}

impl sluice_runtime::Accountant for LedgerAccountant {
    /// Commits the charge without waiting for the disk; the engine settles it (waits for its
    /// sync) after the query ran and before the answer is handed to the job.
    fn charge(&self, charge: &Charge) -> Result<Recorded, BudgetError> {
        let (after, recorded) = self.store.charge_syncing(charge)?;
        self.check_alerts(charge, after);
        Ok(recorded)
    }

    fn settle(&self, recorded: Recorded) -> Result<(), BudgetError> {
        self.store.settle(recorded)
    }

    fn spent_in(
        &self,
        operator: &sluice_policy::OperatorId,
        dataset: &sluice_policy::DatasetId,
        scenario: Option<&str>,
        job: &str,
        period: Duration,
    ) -> Spent {
        self.store
            .spent_in(operator.as_str(), dataset.as_str(), scenario, job, period)
    }

    fn dataset_spent(&self, dataset: &sluice_policy::DatasetId, period: Duration) -> Totals {
        self.store.dataset_spent(dataset.as_str(), period)
    }

    fn refused(&self, operator: &sluice_policy::OperatorId) {
        self.count_refusal(operator.as_str());
    }
}

#[cfg(test)]
mod tests {
    //! The job state machine over a real SQLite store (no HTTP, no sandbox).

    use super::*;

    fn store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "sluice-store-{}-{name}-{}",
            std::process::id(),
            hex::encode(random_bytes::<4>())
        ));
        Store::init(&dir).expect("a new store")
    }

    fn submit(s: &Store, needs_review: bool) -> String {
        let datasets = vec!["visits".to_string()];
        s.submit(&NewJob {
            operator: "op",
            purpose: "state machine",
            params: "",
            wasm: b"\0asm",
            wasm_sha256: &sha256_hex(b"\0asm"),
            datasets: &datasets,
            max_epsilon: None,
            needs_review,
            holders_to_approve: &[],
            scenario: None,
        })
        .unwrap()
        .0
        .to_string()
    }

    fn state(s: &Store, id: &str) -> JobState {
        s.job(id).unwrap().unwrap().state
    }

    /// Audit entries and events about `id`, by kind.
    fn trail(s: &Store, id: &str) -> (Vec<String>, Vec<String>) {
        let conn = s.lock();
        let kinds = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            stmt.query_map([id], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        (
            kinds("SELECT kind FROM audit WHERE job = ?1 ORDER BY seq"),
            kinds("SELECT kind FROM events WHERE job = ?1 ORDER BY id"),
        )
    }

    /// sha256 of each released migration, in order. A database records how many it has applied
    /// (`user_version`), so a released migration edited or moved breaks every upgrade: add new
    /// ones at the end, and their hash here.
    const RELEASED_MIGRATIONS: &[&str] = &[
        "33d3c50e95f7e897a31e74a4b94a75e86606167ea32098834b40f3dbd58ae2d7",
        "e72e54b926022c66825876389f34dc1e23128f99284933bc8dcdb0d97adea55d",
        "f1e80aeccd4b8e3206d82939c17ccaa6451cadb69889eb9b3266320a22704fd2",
        "f67e517769c8ec1d5f751cf2011e441b7232111cd8a171d89cf55d250911be5a",
        "cb8e918dc5bf753fd0024f9e6d5d92cd52086aabb28f79d759b2536e8958ee25",
        "ebd2d1500148bbf6cc98c533354dfd77b3c0b08284329ec92bd6fb834fde13d6",
        "5362885b09263c0a2f45db7b93256daa2aa5562d2e87206e1ee1d8c7b9a58296",
        "13a3f2c6ee104c7e10e61d0958768fb6697508c1dbd4133f9000fdec5757e46d",
        "8284ec975c36e7c1028fdc6de46fc5747b440761f9f9b7ab936b4420122bb432",
        "d30c8527616362fc4e54628d2df42de60808adbef6981535d95cc8811e867392",
        "b5e09da4575c846fa521d4281642a38a838f1483c6c860ea4c3d00839eb09938",
        "707c8f080e09745b25425a216bc772f5c6d518069ab71e994aeb0a555d74bbaa",
        "b56e1bca7fed7be6ea75bceed6b01652d945b92da65b878d1c756f2fd98c93f1",
        "7fa00e0971cd0384ee46c99cc626c4f56f40819331412f436697fd7f4213923e",
        "0eabe5a2fd8e9ab0499146f31b169e79696375604297e3e58bf058c8c1fbcf52",
        "5fe9a1997771877e0a08034c3d2e32eb984cb9686de7b316eb4d5b4bb803b4d2",
        "781e2569dae1a96ef1609de1df6dbbfb88d70b5c2ba3e8198c80b4952ccf75f8",
        "a003bf49c54d8d1c36281cfa626f62379d757760bd677bf15943c5f9fc9b9a20",
    ];

    #[test]
    fn migrations_are_only_ever_appended() {
        let got: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| sha256_hex(m.as_bytes()))
            .collect();
        assert_eq!(
            got, RELEASED_MIGRATIONS,
            "a released migration changed or moved"
        );
    }

    /// A data directory whose database has only the first `applied` migrations, filled by
    /// `fill` (the store's signing key made by a current `init`).
    fn older_database(name: &str, applied: usize, fill: impl FnOnce(&Connection)) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-store-{}-{name}-{}",
            std::process::id(),
            hex::encode(random_bytes::<4>())
        ));
        drop(Store::init(&dir).unwrap());
        let old = dir.join("old.db");
        {
            let conn = Connection::open(&old).unwrap();
            for m in &MIGRATIONS[..applied] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", applied as i64)
                .unwrap();
            fill(&conn);
        }
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db_path(&dir).display()));
        }
        std::fs::rename(&old, db_path(&dir)).unwrap();
        dir
    }

    #[test]
    fn a_database_of_the_previous_release_upgrades_and_keeps_its_jobs() {
        // The schema of the release before filings and job logs: the first 10 migrations.
        let dir = older_database("upgrade", 10, |conn| {
            conn.execute_batch(
                "INSERT INTO wasm (sha256, bytes) VALUES ('x', x'00');
                 INSERT INTO jobs (id, n, operator, purpose, params, wasm_sha256, datasets, state, created_ms)
                 VALUES ('job-old', 1, 'op', 'p', '', 'x', '[]', 'succeeded', 0);",
            )
            .unwrap();
        });
        let s = Store::open(&dir).expect("the old database upgrades");
        let job = s.job("job-old").unwrap().expect("its job is still there");
        assert_eq!(job.state, JobState::Succeeded);
        let conn = s.lock();
        let log: String = conn
            .query_row("SELECT log FROM jobs WHERE id = 'job-old'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(log, "[]");
    }

    #[test]
    fn a_freeze_keeps_queued_jobs_waiting_and_a_suspension_while_running_holds_the_report() {
        let s = store("freeze");
        let id = submit(&s, false);
        s.freeze(None, true, "root", "drill").unwrap();
        assert!(
            s.claim_next().unwrap().is_none(),
            "nothing starts while frozen"
        );
        assert_eq!(state(&s, &id), JobState::Queued);
        s.freeze(None, false, "root", "drill over").unwrap();
        assert_eq!(s.claim_next().unwrap().map(|c| c.id), Some(id.clone()));
        // Suspended and resumed while it runs: still held.
        s.set_suspended("dataset", "visits", true, "root", "incident")
            .unwrap();
        s.set_suspended("dataset", "visits", false, "root", "closed")
            .unwrap();
        let released = s.release(&id, Outcome::default()).unwrap();
        assert!(
            matches!(&released, Released::Held { why } if why.contains("visits")),
            "{released:?}"
        );
        assert_eq!(state(&s, &id), JobState::Held);
        assert!(
            s.result(&id, false).unwrap().is_none(),
            "nothing is readable"
        );
        assert_eq!(
            s.release_held(&id, "rita", "reviewed").unwrap(),
            JobState::Succeeded
        );
        let (_, receipt) = s.result(&id, false).unwrap().expect("released");
        assert!(receipt.contains("\"rita\""), "{receipt}");
        let (entries, _) = trail(&s, &id);
        assert_eq!(
            entries,
            ["job.submitted", "job.started", "job.held", "job.released"]
        );
    }

    #[test]
    fn job_ids_are_refused_unless_well_formed() {
        assert!("job-0123456789abcdef".parse::<JobId>().is_ok());
        for bad in [
            "job-0123",
            "task-0123456789abcdef",
            "job-0123456789abcdeg",
            "",
        ] {
            let e = bad.parse::<JobId>().unwrap_err();
            assert_eq!(e, format!("no job `{bad}`"));
        }
        let long = "x".repeat(1000);
        assert!(
            long.parse::<JobId>().unwrap_err().len() < 220,
            "the text shown is cut"
        );
    }

    #[test]
    fn a_job_runs_from_queued_to_released_with_one_entry_and_one_event_per_step() {
        let s = store("happy");
        let id = submit(&s, false);
        assert_eq!(state(&s, &id), JobState::Queued);
        let claimed = s.claim_next().unwrap().expect("the queued job");
        assert_eq!(
            (claimed.id.as_str(), state(&s, &id)),
            (id.as_str(), JobState::Running)
        );
        let Released::Receipt(receipt) = s.release(&id, Outcome::default()).unwrap() else {
            panic!("nothing was suspended: the job is released");
        };
        assert_eq!(state(&s, &id), JobState::Succeeded);
        let (entries, events) = trail(&s, &id);
        assert_eq!(entries, ["job.submitted", "job.started", "job.released"]);
        assert_eq!(events, ["queued", "running", "released"]);
        // The receipt names the release's own audit entry.
        let conn = s.lock();
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM audit WHERE job = ?1 AND kind = 'job.released'",
                [&id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(receipt.audit_seq, seq);
    }

    #[test]
    fn review_decides_only_pending_jobs_and_rejection_is_final() {
        let s = store("review");
        let id = submit(&s, true);
        assert_eq!(state(&s, &id), JobState::PendingReview);
        assert_eq!(s.claim_next().unwrap().map(|c| c.id), None, "not claimable");
        assert_eq!(
            s.review(&id, "rita", true, "fine").unwrap(),
            JobState::Queued
        );
        let err = s.review(&id, "rita", false, "changed my mind").unwrap_err();
        assert!(
            matches!(
                err,
                StateError::WrongState {
                    state: "queued",
                    ..
                }
            ),
            "{err}"
        );
        let other = submit(&s, true);
        assert_eq!(
            s.review(&other, "rita", false, "no").unwrap(),
            JobState::Rejected
        );
        assert!(s.cancel(&other, "op").is_err(), "rejected is final");
        let info = s.job(&other).unwrap().unwrap();
        assert!(info.state.is_final());
    }

    #[test]
    fn refused_transitions_write_nothing() {
        let s = store("refused");
        let id = submit(&s, false);
        let before = trail(&s, &id);
        // A queued job cannot fail or be released; an unknown job has no state.
        assert!(matches!(
            s.fail(&id, "x"),
            Err(StateError::WrongState { .. })
        ));
        assert!(s.release(&id, Outcome::default()).is_err());
        assert!(matches!(
            s.cancel("job-0000000000000000", "op"),
            Err(StateError::NoJob(_))
        ));
        assert_eq!(trail(&s, &id), before);
        assert_eq!(state(&s, &id), JobState::Queued);
        s.cancel(&id, "op").unwrap();
        assert_eq!(state(&s, &id), JobState::Cancelled);
        assert!(s.claim_next().unwrap().is_none());
    }

    #[test]
    fn a_crash_fails_running_jobs_and_suspension_fails_queued_ones_at_claim() {
        let s = store("recover");
        let running = submit(&s, false);
        s.claim_next().unwrap().unwrap();
        assert_eq!(s.recover().unwrap(), 1);
        assert_eq!(state(&s, &running), JobState::Failed);
        let queued = submit(&s, false);
        s.set_suspended("operator", "op", true, "root", "incident")
            .unwrap();
        assert!(s.claim_next().unwrap().is_none());
        assert_eq!(state(&s, &queued), JobState::Failed);
        let (entries, events) = trail(&s, &queued);
        assert_eq!(entries, ["job.submitted", "job.failed"]);
        assert_eq!(events, ["queued", "failed"]);
    }

    /// How many answers the `answers` table holds.
    fn answers_on_disk(s: &Store) -> i64 {
        s.lock()
            .query_row("SELECT COUNT(*) FROM answers", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_kept_answer_is_served_before_it_is_written_and_written_with_the_next_commit() {
        use sluice_runtime::AnswerCache;
        let dir = std::env::temp_dir().join(format!(
            "sluice-store-{}-answers-{}",
            std::process::id(),
            hex::encode(random_bytes::<4>())
        ));
        let s = Arc::new(Store::init(&dir).unwrap());
        let cache = LedgerAnswerCache(s.clone());
        let key = |sql: &str| sluice_runtime::CacheKey {
            operator: "op".into(),
            dataset: "visits".into(),
            dataset_hash: "ab".repeat(32),
            normalized: sql.into(),
            amount: sluice_runtime::privacy::accountant::Amount {
                measure: sluice_policy::PrivacyMeasure::Pure,
                value: 0.5,
            },
            terms: String::new(),
        };
        let table: sluice_runtime::NoisyTable = serde_json::from_value(json!({
            "columns": ["n"], "key_columns": 0, "rows": [[41]], "accuracy": [[3.0]],
            "cost": { "epsilon": 0.5, "delta": 0.0 }, "mechanism": "laplace"
        }))
        .unwrap();
        let job = submit(&s, false);
        s.claim_next().unwrap().unwrap();

        cache.store(&key("SELECT COUNT(*) FROM visits"), &table);
        assert_eq!(
            answers_on_disk(&s),
            0,
            "kept in memory, no commit of its own"
        );
        let hit = cache
            .lookup(&key("SELECT COUNT(*) FROM visits"), &job)
            .expect("a kept answer is served");
        assert_eq!(hit.rows, table.rows);
        // The hit's audit entry was a commit: the answer went to disk with it.
        assert_eq!(answers_on_disk(&s), 1);

        // A commit that rolls back (a refused transition) leaves the kept answer kept.
        cache.store(&key("SELECT SUM(x) FROM visits"), &table);
        assert!(s.review(&job, "rev", true, "not pending").is_err());
        assert_eq!(answers_on_disk(&s), 1);
        s.fail(&job, "done").unwrap();
        assert_eq!(answers_on_disk(&s), 2);

        // One kept at shutdown is written when the store closes, and found after a restart.
        cache.store(&key("SELECT AVG(x) FROM visits"), &table);
        drop(cache);
        drop(Arc::into_inner(s).expect("the only reference"));
        let s = Arc::new(Store::open(&dir).unwrap());
        assert_eq!(answers_on_disk(&s), 3);
        let again = LedgerAnswerCache(s.clone()).lookup(&key("SELECT AVG(x) FROM visits"), "job-x");
        assert_eq!(again.map(|t| t.rows), Some(table.rows));
    }

    /// A charge of `epsilon` (and `delta`) by `operator` on `dataset` under `scenario`, far below
    /// every cap, with a dataset cap so that the dataset's total is checked too.
    fn a_charge(
        operator: &str,
        dataset: &str,
        scenario: Option<&str>,
        epsilon: f64,
        delta: f64,
    ) -> Charge {
        Charge {
            operator: operator.parse().unwrap(),
            dataset: sluice_policy::DatasetId::new(dataset).unwrap(),
            job: format!("job-{operator}"),
            scenario: scenario.map(str::to_string),
            amount: sluice_runtime::privacy::accountant::Amount {
                measure: sluice_policy::PrivacyMeasure::Pure,
                value: epsilon,
            },
            delta,
            caps: sluice_runtime::Caps {
                per_job: 1e6,
                per_period: 1e6,
            },
            dataset_cap: Some(sluice_runtime::DatasetCap {
                per_period: 1e6,
                period: Duration::from_secs(86_400),
            }),
            delta_per_period: 1.0,
            period: Duration::from_secs(86_400),
            sql: "SELECT COUNT(*) FROM visits".into(),
            submitted_sql: "SELECT COUNT(*) FROM visits".into(),
            dataset_hash: "ab".repeat(32),
            mechanism: "discrete-laplace".into(),
            engine: "local".into(),
        }
    }

    /// The ledger's own sum of ε and δ over a grant's (`Some((operator, scenario))`) or a
    /// dataset's (`None`) charges at `since` or later.
    fn summed(
        conn: &Connection,
        grant: Option<(&str, Option<&str>)>,
        dataset: &str,
        since: i64,
    ) -> (f64, f64) {
        let sum = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        match grant {
            Some((op, scenario)) => conn.query_row(
                "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM charges
                 WHERE operator = ?1 AND dataset = ?2 AND scenario IS ?3 AND at_ms >= ?4",
                params![op, dataset, scenario, since],
                sum,
            ),
            None => conn.query_row(
                "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM charges
                 WHERE dataset = ?1 AND at_ms >= ?2",
                params![dataset, since],
                sum,
            ),
        }
        .unwrap()
    }

    /// Every grant's and dataset's running total since each charge's time (and since before
    /// the first and after the last) is the sum of its charges since then, to within the
    /// rounding up of each charge to a whole unit, and never less.
    fn assert_totals_match_sums(s: &Store, grants: &[(&str, Option<&str>)], datasets: &[&str]) {
        let conn = s.lock();
        let times: Vec<i64> = conn
            .prepare("SELECT DISTINCT at_ms FROM charges")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(times.len() > 3, "charges at several times");
        let close = |kept: Totals, (epsilon, delta): (f64, f64), what: &str| {
            assert!(
                kept.epsilon >= epsilon - 1e-12 && kept.epsilon - epsilon < 1e-9,
                "{what}: ε {} kept, {epsilon} charged",
                kept.epsilon
            );
            assert!(
                kept.delta >= delta - 1e-18 && kept.delta - delta < 1e-15,
                "{what}: δ {} kept, {delta} charged",
                kept.delta
            );
        };
        for since in times.iter().copied().chain([0, i64::MAX]) {
            for &dataset in datasets {
                for &(operator, scenario) in grants {
                    let key = Key::Grant {
                        operator,
                        dataset,
                        scenario,
                    };
                    close(
                        key.spent_since(&conn, since).unwrap(),
                        summed(&conn, Some((operator, scenario)), dataset, since),
                        &format!("{key:?} since {since}"),
                    );
                }
                close(
                    Key::Dataset(dataset).spent_since(&conn, since).unwrap(),
                    summed(&conn, None, dataset, since),
                    &format!("{dataset} since {since}"),
                );
            }
        }
    }

    /// Moves each charge back by `step_ms` per charge after it, keeping their order: a history
    /// spread over time, so that periods cut through it.
    fn spread_back(s: &Store, step_ms: i64) {
        s.lock()
            .execute(
                "UPDATE charges SET at_ms = at_ms - ?1 * (SELECT COUNT(*) FROM charges c WHERE c.id > charges.id)",
                [step_ms],
            )
            .unwrap();
    }

    const GRANTS: &[(&str, Option<&str>)] =
        &[("op-a", None), ("op-a", Some("tourism")), ("op-b", None)];
    const DATASETS: &[&str] = &["visits", "tours"];

    /// Charges from every grant on every dataset, of amounts that are not whole units.
    fn charge_each(s: &Store, rounds: usize) {
        for i in 0..rounds {
            for &(operator, scenario) in GRANTS {
                for &dataset in DATASETS {
                    let epsilon = 0.0100001 * (1 + i % 7) as f64 + 1e-13;
                    s.charge(&a_charge(operator, dataset, scenario, epsilon, 1e-9 / 3.0))
                        .expect("far below every cap");
                }
            }
        }
    }

    #[test]
    fn a_periods_spend_from_running_totals_is_its_charges_sum() {
        let s = store("totals");
        charge_each(&s, 8);
        spread_back(&s, 60_000);
        assert_totals_match_sums(&s, GRANTS, DATASETS);
        // Charges after the spread continue the totals.
        charge_each(&s, 2);
        assert_totals_match_sums(&s, GRANTS, DATASETS);
        // What the runtime reads: the grant's period (one day: the last 24 charges of each
        // key are within it, the spread put the others further back).
        let day = Duration::from_secs(86_400);
        let spent = s.spent_in("op-a", "visits", Some("tourism"), "job-op-a", day);
        let since = period_start(day);
        let (epsilon, _) = summed(&s.lock(), Some(("op-a", Some("tourism"))), "visits", since);
        assert!((spent.period.epsilon - epsilon).abs() < 1e-9 && epsilon > 0.0);
        let all = s.dataset_spent("visits", day);
        let (epsilon, _) = summed(&s.lock(), None, "visits", since);
        assert!((all.epsilon - epsilon).abs() < 1e-9 && epsilon > spent.period.epsilon);
    }

    #[test]
    fn a_charge_is_never_stamped_before_its_keys_last_charge() {
        let s = store("clock-back");
        charge_each(&s, 1);
        // The clock steps back an hour: the last charge looks an hour ahead of it.
        let ahead = now_ms() + 3_600_000;
        s.lock()
            .execute(
                "UPDATE charges SET at_ms = ?1 WHERE id = (SELECT MAX(id) FROM charges)",
                [ahead],
            )
            .unwrap();
        let (operator, scenario) = GRANTS[GRANTS.len() - 1];
        let dataset = DATASETS[DATASETS.len() - 1];
        s.charge(&a_charge(operator, dataset, scenario, 0.25, 0.0))
            .unwrap();
        let stamped: i64 = s
            .lock()
            .query_row(
                "SELECT at_ms FROM charges ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            stamped, ahead,
            "stamped at its key's last charge, not earlier"
        );
        assert_totals_match_sums(&s, GRANTS, DATASETS);
    }

    #[test]
    fn an_upgraded_ledger_gets_running_totals_of_its_past_charges() {
        let dir = older_database("totals-upgrade", MIGRATIONS.len() - 1, |conn| {
            // Charges out of time order (a clock that stepped back), on two keys.
            for (i, (at_ms, operator, scenario)) in [
                (5_000, "op-a", None),
                (3_000, "op-a", None),
                (4_000, "op-b", Some("tourism")),
                (9_000, "op-a", None),
                (1_000, "op-b", Some("tourism")),
            ]
            .into_iter()
            .enumerate()
            {
                conn.execute(
                    "INSERT INTO charges (at_ms, operator, dataset, job, epsilon, delta, audit_seq, rho, scenario)
                     VALUES (?1, ?2, 'visits', 'job-old', ?3, 1e-9, 0, 0, ?4)",
                    params![at_ms, operator, 0.1 * (i + 1) as f64 + 1e-14, scenario],
                )
                .unwrap();
            }
        });
        let s = Store::open(&dir).expect("the old ledger upgrades");
        let grants = [("op-a", None), ("op-b", Some("tourism"))];
        assert_totals_match_sums(&s, &grants, &["visits"]);
        s.charge(&a_charge("op-b", "visits", Some("tourism"), 0.5, 0.0))
            .unwrap();
        assert_totals_match_sums(&s, &grants, &["visits"]);
    }
}
