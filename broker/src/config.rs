//! How a broker is configured: `<data-dir>/config.json`, written by `sluice init`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How a broker is configured; kept in `<data-dir>/config.json` by `sluice init`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// The policy file or directory.
    pub policy: PathBuf,
    /// Where relative dataset sources are resolved.
    pub data_root: PathBuf,
    /// The address `serve` listens on.
    pub listen: String,
    /// Jobs run at once.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Queued jobs beyond which submissions get `429`.
    #[serde(default = "default_max_queued")]
    pub max_queued: i64,
    /// Seconds before a request (other than an event stream, a submission or a plan) times out.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Seconds before a submission times out: it compiles its job first (a Python job takes
    /// about 10 s on 2 cores, more on a busy machine).
    #[serde(default = "default_submit_timeout")]
    pub submit_timeout_secs: u64,
    /// Jobs waiting for review beyond which submissions that need review get `429`.
    #[serde(default = "default_max_pending_reviews")]
    pub max_pending_reviews: i64,
    /// The same, per operator.
    #[serde(default = "default_max_pending_reviews_per_operator")]
    pub max_pending_reviews_per_operator: i64,
    /// Connection caps and the header-read timeout.
    #[serde(default)]
    pub connections: crate::listener::ConnectionLimits,
    /// Where alerts are posted as they are raised (`http://host:port/path`; see
    /// [`crate::webhook`]). Absent: alerts are only listed and streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_webhook: Option<String>,
    /// Publish the public register (`GET /public/register`) and take objections from anyone
    /// (`POST /public/objections`), without a token. Off unless the operator of the platform
    /// turns it on (`sluice init --public-register`, or `"public_register": true` here).
    #[serde(default)]
    pub public_register: bool,
    /// Datasets whose source file and decoded rows each take at most this many MiB are read once
    /// at start and held in memory (queries scan memory instead of decoding the file each
    /// time); 0 scans every file at each query.
    #[serde(default = "default_hold_in_memory_mib")]
    pub hold_in_memory_mib: usize,
    /// A Ballista cluster that runs the queries of datasets scanned from their files (see
    /// [`crate::cluster`]). Absent: every query runs in the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// Where the cluster's scheduler is and what to do when it does not answer at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The scheduler's address, `df://host:port`.
    pub scheduler: String,
    /// What the broker does when the scheduler does not answer at start.
    #[serde(default)]
    pub when_unavailable: WhenUnavailable,
    /// Seconds to wait for the scheduler at start.
    #[serde(default = "default_cluster_connect_secs")]
    pub connect_timeout_secs: u64,
}

/// What a broker configured for a cluster does when the scheduler does not answer at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnavailable {
    /// Refuse to start, saying why (the default: an operator who configured a cluster learns
    /// at once that it is not there).
    #[default]
    Refuse,
    /// Start, say so in the log and the audit log, and run every query in the broker.
    Local,
}

fn default_cluster_connect_secs() -> u64 {
    5
}

fn default_workers() -> usize {
    2
}
fn default_max_queued() -> i64 {
    64
}
fn default_max_pending_reviews() -> i64 {
    64
}
fn default_max_pending_reviews_per_operator() -> i64 {
    8
}
fn default_hold_in_memory_mib() -> usize {
    sluice_runtime::data::DEFAULT_MEMORY_BYTES >> 20
}
fn default_timeout() -> u64 {
    30
}
fn default_submit_timeout() -> u64 {
    300
}

impl Config {
    /// A configuration with defaults.
    pub fn new(policy: PathBuf, data_root: PathBuf) -> Self {
        Self {
            policy,
            data_root,
            listen: "127.0.0.1:7878".into(),
            workers: default_workers(),
            max_queued: default_max_queued(),
            request_timeout_secs: default_timeout(),
            submit_timeout_secs: default_submit_timeout(),
            max_pending_reviews: default_max_pending_reviews(),
            max_pending_reviews_per_operator: default_max_pending_reviews_per_operator(),
            connections: Default::default(),
            alert_webhook: None,
            public_register: false,
            hold_in_memory_mib: default_hold_in_memory_mib(),
            cluster: None,
        }
    }

    /// Reads `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("while reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes `<dir>/config.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )
        .context("while writing config.json")
    }
}
