//! Sluice on an [Apache Ballista](https://datafusion.apache.org/ballista/) cluster.
//!
//! The broker plans; the cluster executes. Validation, the design, the charge and the noise stay
//! in the broker's process; the bounded, clamped aggregation plan of a dataset scanned from its
//! file (scan, filter, contribution bounding, aggregate) is shipped to a Ballista scheduler,
//! which splits it into stages for its executors. Three pieces:
//!
//! - [`connect`]: the broker's side, a [`RemoteEngine`] whose context plans through Ballista's
//!   query planner with Sluice's codecs; it checks that the scheduler answers before it returns.
//! - [`run_scheduler`]: a Ballista scheduler that knows the functions the DP rewrite inserts
//!   (physical planning happens there) and Sluice's codecs.
//! - [`run_executor`]: a Ballista executor with the same functions and codecs.
//!
//! The functions are `sluice_runtime::remote::execution_udfs` (found by name) and `sluice_heavy`,
//! whose set of heavy units travels inside the plan ([`codec`]). `sluice_random`, which picks the
//! rows contribution bounding keeps, runs on the executors and draws from each executor's own
//! CSPRNG (the thread RNG, ChaCha seeded by the OS): no seed exists that a job, an operator or
//! the broker could set.
//!
//! A cluster sees raw rows, as the broker does: its scheduler and executors belong to the
//! trusted base, on a network only the broker reaches (Ballista's gRPC has no authentication).

pub mod codec;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use sluice_runtime::remote::{RemoteEngine, execution_udfs};

/// Why the cluster cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The scheduler's address is not a URL with a host.
    #[error(
        "scheduler address `{0}` is not valid: give it as df://host:port (e.g. df://10.0.0.5:50050)"
    )]
    Address(String),
    /// Nothing answered at the scheduler's address.
    #[error("no Ballista scheduler answers at {url}: {cause}; start one with `sluice scheduler`")]
    Unreachable {
        /// The address tried.
        url: String,
        /// The transport's error.
        cause: String,
    },
    /// A scheduler or executor failed to start or stopped.
    #[error("{0}")]
    Process(String),
}

/// The codecs every member of a Sluice cluster speaks.
fn codecs() -> (Arc<codec::LogicalCodec>, Arc<codec::PhysicalCodec>) {
    (
        Arc::new(codec::LogicalCodec::default()),
        Arc::new(codec::PhysicalCodec::default()),
    )
}

/// Ballista's session configuration with Sluice's codecs.
fn session_config() -> SessionConfig {
    let (logical, physical) = codecs();
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(logical)
        .with_ballista_physical_extension_codec(physical)
}

/// `df://host:port` (or `http://`) as the `http://host:port` Ballista's gRPC client dials.
pub fn scheduler_url(address: &str) -> Result<String, ScaleError> {
    let bad = || ScaleError::Address(address.to_string());
    let rest = address
        .split_once("://")
        .map_or(address, |(scheme, rest)| match scheme {
            "df" | "http" => rest,
            _ => "",
        });
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "50050"));
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(bad());
    }
    Ok(format!("http://{host}:{port}"))
}

/// The broker's side: a context that plans through the scheduler at `address`, named
/// `ballista <url>` in audit entries and receipts. Fails when no scheduler answers within
/// `timeout`, so that a broker configured for a cluster says so at start.
pub async fn connect(address: &str, timeout: Duration) -> Result<RemoteEngine, ScaleError> {
    let url = scheduler_url(address)?;
    let unreachable = |cause: String| ScaleError::Unreachable {
        url: url.clone(),
        cause,
    };
    match tokio::time::timeout(timeout, SchedulerGrpcClient::connect(url.clone())).await {
        Err(_) => return Err(unreachable(format!("no answer within {timeout:?}"))),
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(_)) => {}
    }
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(session_config())
        .build()
        .upgrade_for_ballista(url.clone())
        .map_err(|e| ScaleError::Process(e.to_string()))?;
    Ok(RemoteEngine {
        name: format!("ballista {url}"),
        context: SessionContext::new_with_state(state),
        probe: Some(url.trim_start_matches("http://").to_string()),
    })
}

/// How a scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The address it listens on (executors and brokers dial it).
    pub bind: SocketAddr,
    /// The host name executors and brokers reach it by.
    pub external_host: String,
    /// How long an executor may go without a heartbeat before its tasks are given to others.
    pub executor_timeout: Duration,
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<(), ScaleError> {
    let (logical, physical) = codecs();
    let timeout = options.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.external_host,
        executor_timeout_seconds: timeout,
        no_executors_grace_period_seconds: timeout,
        expire_dead_executor_interval_seconds: (timeout / 3).max(1),
        override_config_producer: Some(Arc::new(session_config)),
        override_session_builder: Some(Arc::new(|config: SessionConfig| {
            let mut state = ballista_core::utils::default_session_builder(config)?;
            for udf in execution_udfs() {
                datafusion::execution::FunctionRegistry::register_udf(&mut state, udf)?;
            }
            Ok(state)
        })),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        ..SchedulerConfig::default()
    };
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ScaleError::Process(format!("scheduler: {e}")))?;
    ballista_scheduler::scheduler_process::start_server(cluster, options.bind, config)
        .await
        .map_err(|e| ScaleError::Process(format!("scheduler: {e}")))
}

/// How an executor runs.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The scheduler's address (`df://host:port`).
    pub scheduler: String,
    /// The host it listens on.
    pub bind_host: String,
    /// The host name the scheduler and other executors reach it by.
    pub external_host: String,
    /// Its Arrow Flight port (shuffle data).
    pub flight_port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Tasks it runs at once (0: one per CPU).
    pub vcores: usize,
    /// Where it writes shuffle files (default: a temporary directory).
    pub work_dir: Option<String>,
    /// How often it tells the scheduler it is alive.
    pub heartbeat: Duration,
}

/// Runs an executor until the process is stopped or its scheduler tells it to stop.
pub async fn run_executor(options: ExecutorOptions) -> Result<(), ScaleError> {
    let url = scheduler_url(&options.scheduler)?;
    let (host, port) = url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
        .ok_or_else(|| ScaleError::Address(options.scheduler.clone()))?;
    let mut registry = BallistaFunctionRegistry::default();
    for udf in execution_udfs() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), udf);
    }
    let (logical, physical) = codecs();
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host,
        external_host: Some(options.external_host),
        port: options.flight_port,
        grpc_port: options.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 10,
        vcores: options.vcores,
        work_dir: options.work_dir,
        print_thread_info: false,
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        override_function_registry: Some(Arc::new(registry)),
        override_config_producer: Some(Arc::new(session_config)),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ScaleError::Process(format!("executor: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_are_read_or_refused_with_the_form_to_use() {
        assert_eq!(
            scheduler_url("df://10.0.0.5:50050").unwrap(),
            "http://10.0.0.5:50050"
        );
        assert_eq!(
            scheduler_url("http://sched:7000/").unwrap(),
            "http://sched:7000"
        );
        assert_eq!(scheduler_url("df://sched").unwrap(), "http://sched:50050");
        for bad in ["s3://x:1", "df://:50050", "df://h:port", "df://u@h:1", ""] {
            let e = scheduler_url(bad).unwrap_err().to_string();
            assert!(e.contains("df://host:port"), "{bad}: {e}");
        }
    }
}
