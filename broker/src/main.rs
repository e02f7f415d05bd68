//! `sluice`: the Sluice command-line tool.
//!
//! - `sluice demo`: starts an embedded broker on loopback, submits the sample jobs over HTTP,
//!   approves the one that needs review, prints the reports and verifies the audit log.
//! - `sluice init` / `serve` / `token create`: set up and run a broker.
//! - `sluice submit` / `status` / `result` / `budget` / `estimate`: operator commands (over HTTP).
//! - `sluice review list|approve|reject`, `audit show`: reviewer commands (over HTTP).
//! - `sluice audit verify`, `receipt verify`, `policy check`: offline checks for reviewers.
//! - `sluice run`: runs one job locally, without a broker (job developers).
//! - `sluice datagen`, `sluice bench`: demo data and benchmarks.

mod bench;
mod bench_console;
mod bench_rows;
mod bench_workloads;
mod local;
mod print;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: DataFusion's many short-lived buffers and the broker's
/// request bodies made glibc's allocator (its frees of large blocks consolidate its bins) about
/// a tenth of the broker benchmark's CPU. The library crates leave the choice to the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use sluice_broker::store::Role;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a privacy-preserving data sandbox and compute broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the broker is and who is asking.
#[derive(Args, Clone)]
pub struct Conn {
    /// The broker's URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// A bearer token (from `sluice token create`).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the broker's JSON instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// What a job declares, the same for `run`, `plan` and `submit`: a local run that passes with
/// these predicts a broker run that does.
#[derive(Args, Clone)]
pub struct Declared {
    /// A dataset the job will use (repeat for several). The broker requires the list; the job
    /// may query no other dataset.
    #[arg(long = "dataset")]
    pub datasets: Vec<String>,
    /// The parameter string passed to the job.
    #[arg(long, default_value = "")]
    pub params: String,
    /// Cap the job's ε per dataset below the grant's.
    #[arg(long)]
    pub max_epsilon: Option<f64>,
    /// The scenario it runs under (needed when you hold several on a dataset).
    #[arg(long)]
    pub scenario: Option<String>,
}

/// `sluice plan`: a job (or a submitted job's id), its declarations, and where to plan it.
#[derive(Args)]
pub struct PlanArgs {
    /// The job's wasm (not with `--id`).
    #[arg(required_unless_present = "id")]
    pub job: Option<PathBuf>,
    /// A submitted job to plan instead.
    #[arg(long, conflicts_with = "job")]
    pub id: Option<String>,
    #[command(flatten)]
    pub declared: Declared,
    /// Plan locally against this policy file or directory.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// With `--policy`: the operator whose grants apply.
    #[arg(long, requires = "policy")]
    pub operator: Option<String>,
    /// With `--policy`: where lookup tables are read (datasets are never read).
    #[arg(long, default_value = ".")]
    pub data_root: PathBuf,
    /// The broker's URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// A bearer token (from `sluice token create`), for a plan by the broker.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sluice query`: one SQL question for the built-in SQL job.
#[derive(Args)]
pub struct QueryCmd {
    #[command(flatten)]
    pub conn: Conn,
    /// The SQL.
    pub sql: String,
    /// Why it is asked (shown to reviewers and recorded in the audit log).
    #[arg(long)]
    pub purpose: String,
    /// Spend this ε (pure-DP datasets).
    #[arg(long, required_unless_present_any = ["rho", "accuracy"], conflicts_with_all = ["rho", "accuracy"])]
    pub epsilon: Option<f64>,
    /// Or: spend this ρ (zCDP datasets).
    #[arg(long, conflicts_with = "accuracy")]
    pub rho: Option<f64>,
    /// Or: the 95% half-width every aggregate cell must have; the broker solves for ε (or ρ).
    #[arg(long)]
    pub accuracy: Option<f64>,
    /// The scenario it runs under (needed when you hold several on its dataset).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Submit and print the job id without waiting for the answer.
    #[arg(long)]
    pub no_wait: bool,
}

/// `sluice result`: a report as text, JSON, CSV or a chart, or written with its receipt.
#[derive(Args)]
pub struct ResultArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The job.
    pub id: String,
    /// Write the report here (and the receipt beside it, as <file>.receipt.json).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// CSV (as signed by the receipt) instead of text (or, with --output, JSON).
    #[arg(long)]
    pub csv: bool,
    /// Only this table (text or CSV on the terminal; the receipt covers the whole report).
    #[arg(long, conflicts_with = "output")]
    pub table: Option<String>,
    /// Draw a table (the first, or --table) as an SVG bar chart with 95% error bars.
    #[arg(long, conflicts_with_all = ["output", "csv"])]
    pub plot: Option<PathBuf>,
    /// With --plot: the aggregate column to draw (default: the table's first).
    #[arg(long, requires = "plot")]
    pub column: Option<String>,
}

/// `sluice submit`: a job, its purpose and declarations, and how to follow it.
#[derive(Args)]
pub struct SubmitCmd {
    #[command(flatten)]
    pub conn: Conn,
    /// The job's wasm.
    pub job: PathBuf,
    /// Why it runs (shown to reviewers and recorded in the audit log).
    #[arg(long)]
    pub purpose: String,
    #[command(flatten)]
    pub declared: Declared,
    /// Wait for the job to end, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: print the report once it is released.
    #[arg(long, requires = "wait")]
    pub print: bool,
    /// Submit without planning first. By default the broker plans the job on mock data
    /// (`sluice plan`) and nothing is submitted if it would fail or overspend.
    #[arg(long)]
    pub no_plan: bool,
}

/// An operator or a dataset to suspend, hold or resume.
#[derive(Args, Clone)]
pub struct Target {
    /// `operator` or `dataset`.
    #[arg(value_parser = ["operator", "dataset"])]
    pub kind: String,
    /// Its id.
    pub name: String,
    /// Only its releases: queries are still answered, but every report waits for a reviewer
    /// (`sluice review release|discard`).
    #[arg(long)]
    pub releases: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo: an embedded broker, the sample jobs over HTTP, review, reports,
    /// receipts and audit verification.
    Demo {
        /// Rows per synthetic dataset, when they must be generated.
        #[arg(long, default_value_t = sluice_datagen::DEFAULT_ROWS)]
        rows: usize,
        /// The data root (datasets are read from <root>/data/).
        #[arg(long, default_value = ".")]
        data_root: PathBuf,
    },
    /// Create a broker data directory: database, signing key, config and a first admin token.
    Init {
        /// The data directory to create.
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// The policy file or directory the broker enforces.
        #[arg(long, default_value = "policies/examples")]
        policy: PathBuf,
        /// Where relative dataset sources are resolved.
        #[arg(long, default_value = ".")]
        data_root: PathBuf,
        /// The address `serve` listens on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// Write the signing key here instead of <data-dir>/broker.key: keep it away from the
        /// database it signs for (the data directory records where it is; `SLUICE_SIGNING_KEY`
        /// overrides that for every command).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Publish the public register (`/public/register`: scenarios in force, privacy spent
        /// per dataset and month, releases, suspensions) and take objections from anyone, with
        /// no token.
        #[arg(long)]
        public_register: bool,
    },
    /// Run the broker until interrupted (Ctrl-C or SIGTERM).
    Serve {
        /// The data directory (from `sluice init`).
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// Override the listen address from the config.
        #[arg(long)]
        listen: Option<String>,
        /// Run the queries of datasets scanned from their files on the Ballista cluster whose
        /// scheduler is here (`df://host:port`; overrides `cluster` in the config; scale-out
        /// builds only, see docs/scaling.md).
        #[arg(long)]
        scheduler: Option<String>,
        /// With --scheduler: what to do when the scheduler does not answer at start.
        #[arg(long, value_enum, default_value_t = sluice_broker::config::WhenUnavailable::Refuse, requires = "scheduler")]
        when_unavailable: sluice_broker::config::WhenUnavailable,
    },
    /// Run a Ballista scheduler with Sluice's functions and codecs (scale-out builds only).
    Scheduler(sluice_broker::cluster::SchedulerArgs),
    /// Run a Ballista executor with Sluice's functions and codecs (scale-out builds only).
    Executor(sluice_broker::cluster::ExecutorArgs),
    /// Manage tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Submit a job (operator).
    Submit(SubmitCmd),
    /// A dry run of a whole job on mock data drawn from the policy's public metadata: every
    /// query with its cost and accuracy, and the totals against what your grants have left.
    /// Exits 1, before anything is spent, if the job would fail or exceed a cap. With `--policy`
    /// it plans locally (no broker, a fresh ledger); otherwise the broker plans it against your
    /// real budget; with `--id` it plans a submitted job (reviewers, holders, its operator).
    Plan(PlanArgs),
    /// Ask one SQL query without writing a job: the built-in SQL job runs it through the same
    /// engine, grant, ledger, review and receipts as any job (operator; the grant must set
    /// `adhoc_sql = true`). Waits for the answer and prints it.
    Query(QueryCmd),
    /// Privacy loss charged per dataset and operator, all time (admins, auditors; a holder sees
    /// its own datasets').
    Usage {
        #[command(flatten)]
        conn: Conn,
    },
    /// Load the policy files again (admin): an invalid policy is refused, listing its problems,
    /// and the one in force stays.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a job's state (or list your jobs without an id).
    Status {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: Option<String>,
    },
    /// Download a released report and its receipt.
    Result(ResultArgs),
    /// What a query would cost and how accurate it would be, without running it (operator).
    Estimate {
        #[command(flatten)]
        conn: Conn,
        /// The SQL.
        sql: String,
        /// Spend this ε (pure-DP datasets).
        #[arg(
            long,
            conflicts_with_all = ["accuracy", "rho"],
            required_unless_present_any = ["accuracy", "rho"]
        )]
        epsilon: Option<f64>,
        /// Or: spend this ρ (zCDP datasets).
        #[arg(long, conflicts_with = "accuracy")]
        rho: Option<f64>,
        /// Or: the 95% half-width every aggregate cell must have; the broker solves for ε (or ρ).
        #[arg(long)]
        accuracy: Option<f64>,
    },
    /// The datasets you may query (operator) or oversee (staff), with the columns a query may
    /// name and their public domains.
    Datasets {
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a job that has not started (operator).
    Cancel {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
    },
    /// A job's log lines (its operator; reviewers, admins and its datasets' holders too).
    Logs {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
    },
    /// Your remaining privacy budget per dataset (operator).
    Budget {
        #[command(flatten)]
        conn: Conn,
    },
    /// Freeze the platform, or one holder's datasets: no submission, query, cached answer or
    /// release until unfrozen (admin; one audited transaction).
    Freeze {
        #[command(flatten)]
        conn: Conn,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Only this holder's datasets.
        #[arg(long)]
        holder: Option<String>,
    },
    /// Lift a freeze (admin).
    Unfreeze {
        #[command(flatten)]
        conn: Conn,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// Only this holder's datasets.
        #[arg(long)]
        holder: Option<String>,
    },
    /// Suspend an operator or a dataset: nothing more is answered (admin; a holder suspends its
    /// own datasets). With --releases, hold its reports for a reviewer instead.
    Suspend {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        target: Target,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Lift a suspension (or, with --releases, a release hold).
    Resume {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        target: Target,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Suspensions and release holds in force (admin).
    Suspensions {
        #[command(flatten)]
        conn: Conn,
    },
    /// Alerts raised by the policy's alert rules, oldest first (admin; a holder sees its own
    /// datasets').
    Alerts {
        #[command(flatten)]
        conn: Conn,
        /// Then keep printing alerts as they are raised, until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Review jobs (reviewer).
    Review {
        #[command(subcommand)]
        command: ReviewCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Receipts.
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Registration (登记): register a resource, a licence or a product (answers its signed
    /// certificate), or take a record through its life cycle.
    Register {
        #[command(subcommand)]
        command: RegisterCommand,
    },
    /// Certificates of registered records: download one, or verify one offline (and, with
    /// `--url`, whether its record still stands).
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Signed monthly statements (收益分配): a holder's datasets' use and fees, or an operator's
    /// invoice view; verify one offline.
    Statement {
        #[command(subcommand)]
        command: StatementCommand,
    },
    /// Filings (备案) of releases from `important` data: export (admin, auditor, holder) and
    /// verify offline.
    Filings {
        #[command(subcommand)]
        command: FilingsCommand,
    },
    /// Run one job locally against the policy's datasets, printing its report and the ε it spent.
    Run {
        /// A policy file or a directory of them (the examples built into sluice when there is
        /// no `policies/examples` here).
        #[arg(long, default_value = local::EXAMPLE_POLICY)]
        policy: PathBuf,
        /// The operator whose grant applies.
        #[arg(long)]
        operator: String,
        /// Where relative dataset sources are resolved.
        #[arg(long, default_value = ".")]
        data_root: PathBuf,
        #[command(flatten)]
        declared: Declared,
        /// Output format of the report.
        #[arg(long, value_enum, default_value_t = local::Format::Text)]
        format: local::Format,
        /// The job: a component, or a core module built with the sluice-guest SDK.
        job: PathBuf,
    },
    /// Write a new job folder: a job that answers one question on the demo data.
    New {
        /// The folder to create.
        dir: PathBuf,
        /// The job's language.
        #[arg(long, value_parser = ["python", "rust"], default_value = "python")]
        lang: String,
        /// Rust: also write a row function (a crate in `rows/`, code that reads one person's
        /// rows inside the sandbox) and a job that aggregates it.
        #[arg(long)]
        rows: bool,
    },
    /// Build the job in a folder (Python: job.py, with componentize-py; Rust: Cargo.toml, with
    /// cargo) and print the path of its wasm.
    Build {
        /// The job's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write the synthetic demo datasets (Parquet).
    Datagen {
        /// Rows per dataset.
        #[arg(long, default_value_t = sluice_datagen::DEFAULT_ROWS)]
        rows: usize,
        /// Seed.
        #[arg(long, default_value_t = sluice_datagen::DEFAULT_SEED)]
        seed: u64,
        /// Output directory.
        #[arg(long, default_value = "data")]
        out: PathBuf,
    },
    /// Benchmarks: DP queries against plain DataFusion and job compile vs cache (`engine`),
    /// submit→result over HTTP on loopback (`broker`), a Python job's compile, load from disk
    /// and instantiation against a Rust job's (`python`), console page loads from a broker
    /// holding 1,100 jobs and 10,000 audit entries (`console`), a job's row function against a
    /// plain column (`rows`), or W1–W4 locally against a Ballista cluster of one and two
    /// executors (`scale`, scale-out builds).
    Bench {
        /// What to benchmark.
        #[arg(value_enum, default_value_t = bench::Which::Engine)]
        which: bench::Which,
        /// Rows of the benchmark dataset.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Repetitions per query (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Where the benchmark dataset is kept.
        #[arg(long, default_value = "data/bench")]
        dir: PathBuf,
        /// Jobs to submit (`broker`).
        #[arg(long, default_value_t = 200)]
        jobs: usize,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once and only its hash is stored.
    Create {
        /// The data directory.
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// The role.
        #[arg(long, value_enum)]
        role: Role,
        /// Who it is for (for operators: the operator id in the grants).
        #[arg(long)]
        principal: String,
        /// How long it works: whole days or hours (at most 366d).
        #[arg(long, default_value = "90d", value_parser = remote::parse_lifetime)]
        valid_for: std::time::Duration,
    },
    /// List tokens: id, principal, role (never the tokens themselves).
    List {
        /// The data directory.
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
    },
    /// Revoke a token by id; it stops working at once.
    Revoke {
        /// The data directory.
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// The token's id (from `sluice token list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// Jobs waiting for review, with what they ask for.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Download a job's wasm, to rebuild it from source and compare (prints its sha256).
    Wasm {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Approve a job.
    Approve {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Also allow this build for the job's operator and datasets: under `review =
        /// "unlisted"` it then runs without review.
        #[arg(long)]
        allow: bool,
    },
    /// Reject a job.
    Reject {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
        /// Why (recorded in the audit log and shown to the operator).
        #[arg(long)]
        reason: String,
    },
    /// Release a held job's report (held: its operator or a dataset was suspended while it ran).
    Release {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Discard a held job's report.
    Discard {
        #[command(flatten)]
        conn: Conn,
        /// The job.
        id: String,
        /// Why (recorded in the audit log and shown to the operator).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and signed checkpoints of a data directory's audit log (offline).
    Verify {
        /// The data directory.
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// The broker's public key (hex, or a file holding it); default: <data-dir>/broker.pub.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Show audit entries (reviewer or admin, over HTTP).
    Show {
        #[command(flatten)]
        conn: Conn,
        /// Only entries about this job.
        #[arg(long)]
        job: Option<String>,
        /// Only entries about this operator.
        #[arg(long)]
        operator: Option<String>,
        /// Only entries about this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Check a receipt's signature and that it covers a report file.
    Verify {
        /// The receipt (JSON).
        receipt: PathBuf,
        /// The report (JSON or CSV, exactly as downloaded).
        report: PathBuf,
        /// The broker's public key (hex, or a file holding it).
        #[arg(long)]
        public_key: String,
    },
}

/// Why and where, for every registration command.
#[derive(Args)]
struct Registering {
    #[command(flatten)]
    conn: Conn,
    /// Why (recorded in the registry and the audit log).
    #[arg(long, default_value = "")]
    reason: String,
    /// Write the signed certificate here.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RegisterCommand {
    /// A dataset: its holder, grade, public schema and current version (its holder or an
    /// admin; core data is refused).
    Resource {
        #[command(flatten)]
        how: Registering,
        /// The dataset.
        dataset: String,
    },
    /// A scenario's licence (许可凭证): an operator's grant on a dataset (the dataset's holder
    /// or an admin).
    Licence {
        #[command(flatten)]
        how: Registering,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The scenario (when the operator holds several on the dataset).
        #[arg(long)]
        scenario: Option<String>,
    },
    /// A product: released reports of one operator, with their receipts (that operator or an
    /// admin).
    Product {
        #[command(flatten)]
        how: Registering,
        /// A released job (repeat for several).
        #[arg(long = "job", required = true)]
        jobs: Vec<String>,
    },
    /// Refresh a record from the broker's state (a new dataset version, new grant terms); lifts
    /// an objection (its owner or an admin).
    Change {
        #[command(flatten)]
        conn: Conn,
        /// The record's number.
        number: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Pass a record to another owner (admin).
    Transfer {
        #[command(flatten)]
        conn: Conn,
        /// The record's number.
        number: String,
        /// The new owner.
        #[arg(long)]
        to: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Dispute a record: it stands as objected until changed (reviewers, holders, admins).
    Object {
        #[command(flatten)]
        conn: Conn,
        /// The record's number.
        number: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Cancel a record: its certificates are revoked (its owner or an admin).
    Cancel {
        #[command(flatten)]
        conn: Conn,
        /// The record's number.
        number: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum CertificateCommand {
    /// Download a record's signed certificate as it stands.
    Get {
        #[command(flatten)]
        conn: Conn,
        /// The record's number.
        number: String,
        /// Write it here.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a certificate's signature; with `--url`, also ask the broker whether its record
    /// still stands (exits 1 if it was cancelled: revoked).
    Verify {
        /// The certificate (JSON).
        certificate: PathBuf,
        /// The broker's public key (hex, or a file holding it).
        #[arg(long)]
        public_key: String,
        /// The broker to ask for the record's status (its public register, or `/v1` with a
        /// token).
        #[arg(long)]
        url: Option<String>,
        /// A bearer token, where the broker publishes no register.
        #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum StatementCommand {
    /// Download a month's signed statement and print it (a holder or operator its own; admins
    /// and auditors any).
    Get {
        #[command(flatten)]
        conn: Conn,
        /// The holder whose datasets' use it lists.
        #[arg(
            long,
            conflicts_with = "operator",
            required_unless_present = "operator"
        )]
        holder: Option<String>,
        /// Or: the operator whose use it lists (its invoice view).
        #[arg(long)]
        operator: Option<String>,
        /// The month, `YYYY-MM` (the policy's time zone).
        #[arg(long)]
        month: String,
        /// Write the signed statement here.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a statement's signature and totals.
    Verify {
        /// The statement (JSON, as `statement get -o` wrote it).
        statement: PathBuf,
        /// The broker's public key (hex, or a file holding it).
        #[arg(long)]
        public_key: String,
    },
}

#[derive(Subcommand)]
enum FilingsCommand {
    /// Download the signed export of filings and list them.
    Export {
        #[command(flatten)]
        conn: Conn,
        /// Only filings made on or after this day (YYYY-MM-DD, in the policy's time zone).
        #[arg(long)]
        since: Option<String>,
        /// Write the signed export here.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check an export's signature and every receipt in it.
    Verify {
        /// The export (JSON, as `filings export -o` wrote it).
        export: PathBuf,
        /// The broker's public key (hex, or a file holding it).
        #[arg(long)]
        public_key: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files; exits non-zero listing every problem.
    Check {
        /// A policy file or a directory of them.
        path: PathBuf,
        /// Also check that every dataset's and lookup's source is a file under this root (as
        /// `serve` will).
        #[arg(long)]
        data_root: Option<PathBuf>,
    },
}

/// `sluice filings …`.
fn filings(command: FilingsCommand) -> anyhow::Result<ExitCode> {
    match command {
        FilingsCommand::Export {
            conn,
            since,
            output,
        } => remote::filings_export(&conn, since.as_deref(), output.as_deref()),
        FilingsCommand::Verify { export, public_key } => {
            remote::filings_verify(&export, &public_key)
        }
    }
}

/// `sluice register …`.
fn register(command: RegisterCommand) -> anyhow::Result<ExitCode> {
    use serde_json::json;
    let (how, body) = match command {
        RegisterCommand::Resource { how, dataset } => {
            (how, json!({"kind": "resource", "dataset": dataset}))
        }
        RegisterCommand::Licence {
            how,
            operator,
            dataset,
            scenario,
        } => (
            how,
            json!({"kind": "licence", "operator": operator, "dataset": dataset, "scenario": scenario}),
        ),
        RegisterCommand::Product { how, jobs } => (how, json!({"kind": "product", "jobs": jobs})),
        RegisterCommand::Change {
            conn,
            number,
            reason,
        } => return remote::registry_step(&conn, &number, "change", &reason, None),
        RegisterCommand::Transfer {
            conn,
            number,
            to,
            reason,
        } => return remote::registry_step(&conn, &number, "transfer", &reason, Some(&to)),
        RegisterCommand::Object {
            conn,
            number,
            reason,
        } => return remote::registry_step(&conn, &number, "objection", &reason, None),
        RegisterCommand::Cancel {
            conn,
            number,
            reason,
        } => return remote::registry_step(&conn, &number, "cancel", &reason, None),
    };
    let mut body = body;
    body["reason"] = json!(how.reason);
    remote::register(&how.conn, &body, how.output.as_deref())
}

/// `sluice certificate …`.
fn certificate(command: CertificateCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertificateCommand::Get {
            conn,
            number,
            output,
        } => remote::certificate_get(&conn, &number, output.as_deref()),
        CertificateCommand::Verify {
            certificate,
            public_key,
            url,
            token,
        } => {
            remote::certificate_verify(&certificate, &public_key, url.as_deref(), token.as_deref())
        }
    }
}

/// `sluice statement …`.
fn statement(command: StatementCommand) -> anyhow::Result<ExitCode> {
    match command {
        StatementCommand::Get {
            conn,
            holder,
            operator,
            month,
            output,
        } => {
            let party = match (&holder, &operator) {
                (Some(h), _) => sluice_broker::statements::Party::Holder(h),
                (None, Some(o)) => sluice_broker::statements::Party::Operator(o),
                (None, None) => anyhow::bail!("name a --holder or an --operator"),
            };
            remote::statement_get(&conn, party, &month, output.as_deref())
        }
        StatementCommand::Verify {
            statement,
            public_key,
        } => remote::statement_verify(&statement, &public_key),
    }
}

/// `sluice token …`.
fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            data_dir,
            role,
            principal,
            valid_for,
        } => remote::token_create(&data_dir, role, &principal, valid_for),
        TokenCommand::List { data_dir } => remote::token_list(&data_dir),
        TokenCommand::Revoke { data_dir, id } => remote::token_revoke(&data_dir, &id),
    }
}

/// `sluice review …`.
fn review(command: ReviewCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReviewCommand::List { conn } => remote::review_list(&conn),
        ReviewCommand::Wasm { conn, id, output } => remote::review_wasm(&conn, &id, &output),
        ReviewCommand::Approve {
            conn,
            id,
            reason,
            allow,
        } => remote::review(&conn, &id, "approve", &reason, allow),
        ReviewCommand::Reject { conn, id, reason } => {
            remote::review(&conn, &id, "reject", &reason, false)
        }
        ReviewCommand::Release { conn, id, reason } => {
            remote::review(&conn, &id, "release", &reason, false)
        }
        ReviewCommand::Discard { conn, id, reason } => {
            remote::review(&conn, &id, "discard", &reason, false)
        }
    }
}

/// `sluice audit …`.
fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            data_dir,
            public_key,
        } => remote::audit_verify(&data_dir, public_key.as_deref()),
        AuditCommand::Show {
            conn,
            job,
            operator,
            dataset,
            limit,
        } => remote::audit_show(
            &conn,
            job.as_deref(),
            operator.as_deref(),
            dataset.as_deref(),
            limit,
        ),
    }
}

/// `sluice plan`: locally with `--policy`, else on the broker (a job's wasm, or `--id`).
fn plan(a: PlanArgs) -> anyhow::Result<ExitCode> {
    match (a.policy, a.job, a.id) {
        (Some(policy), Some(job), _) => match a.operator {
            Some(operator) => {
                local::plan(&policy, &operator, &a.data_root, &a.declared, &job, a.json)
            }
            None => Err(anyhow::anyhow!(
                "a local plan needs --operator: the operator whose grants apply"
            )),
        },
        (Some(_), None, _) => Err(anyhow::anyhow!(
            "--id plans a submitted job on the broker; leave out --policy"
        )),
        (None, job, id) => {
            let conn = Conn {
                url: a.url,
                token: a.token,
                json: a.json,
            };
            match (job, id) {
                (_, Some(id)) => remote::plan_submitted(&conn, &id, a.json),
                (Some(job), None) => remote::plan(&conn, &job, &a.declared, a.json),
                (None, None) => Err(anyhow::anyhow!("give the job's wasm, or --id")),
            }
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    report(run(Cli::parse().command))
}

/// Runs one command.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo { rows, data_root } => local::demo(rows, &data_root),
        Command::Init {
            data_dir,
            policy,
            data_root,
            listen,
            key_file,
            public_register,
        } => remote::init(
            &data_dir,
            policy,
            data_root,
            listen,
            key_file.as_deref(),
            public_register,
        ),
        Command::Serve {
            data_dir,
            listen,
            scheduler,
            when_unavailable,
        } => remote::serve(&data_dir, listen, scheduler, when_unavailable),
        Command::Scheduler(args) => {
            sluice_broker::cluster::scheduler(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Executor(args) => {
            sluice_broker::cluster::executor(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Token { command } => token(command),
        Command::Submit(a) => remote::submit(&a),
        Command::Plan(args) => plan(args),
        Command::Status { conn, id } => remote::status(&conn, id.as_deref()),
        Command::Usage { conn } => remote::usage(&conn),
        Command::Reload { conn } => remote::reload(&conn),
        Command::Query(q) => remote::query(&q),
        Command::Result(a) => remote::result_or_plot(&a),
        Command::Budget { conn } => remote::budget(&conn),
        Command::Alerts { conn, follow } => remote::alerts(&conn, follow),
        Command::Logs { conn, id } => remote::logs(&conn, &id),
        Command::Datasets { conn } => remote::datasets(&conn),
        Command::Cancel { conn, id } => remote::cancel(&conn, &id),
        Command::Suspend {
            conn,
            target,
            reason,
        } => remote::suspend(&conn, &target, true, &reason),
        Command::Resume {
            conn,
            target,
            reason,
        } => remote::suspend(&conn, &target, false, &reason),
        Command::Suspensions { conn } => remote::suspensions(&conn),
        Command::Freeze {
            conn,
            reason,
            holder,
        } => remote::freeze(&conn, true, &reason, holder.as_deref()),
        Command::Unfreeze {
            conn,
            reason,
            holder,
        } => remote::freeze(&conn, false, &reason, holder.as_deref()),
        Command::Estimate {
            conn,
            sql,
            epsilon,
            rho,
            accuracy,
        } => remote::estimate(&conn, &sql, [epsilon, rho, accuracy]),
        Command::Review { command } => review(command),
        Command::Audit { command } => audit(command),
        Command::Receipt {
            command:
                ReceiptCommand::Verify {
                    receipt,
                    report,
                    public_key,
                },
        } => remote::receipt_verify(&receipt, &report, &public_key),
        Command::Filings { command } => filings(command),
        Command::Statement { command } => statement(command),
        Command::Register { command } => register(command),
        Command::Certificate { command } => certificate(command),
        Command::New { dir, lang, rows } => remote::new_job(&dir, &lang, rows),
        Command::Build { dir } => remote::build_job(&dir),
        Command::Run {
            policy,
            operator,
            data_root,
            declared,
            format,
            job,
        } => local::run(&policy, &operator, &data_root, &declared, format, &job),
        Command::Policy {
            command: PolicyCommand::Check { path, data_root },
        } => local::policy_check(&path, data_root.as_deref()),
        Command::Datagen { rows, seed, out } => local::datagen(rows, seed, &out),
        Command::Bench {
            which,
            rows,
            reps,
            dir,
            jobs,
        } => bench::dispatch(which, rows, reps, &dir, jobs),
    }
}

/// The process's exit code for `result`, printing the error.
fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
