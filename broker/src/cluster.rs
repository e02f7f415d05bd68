//! Scale-out: a broker whose large datasets' queries run on an Apache Ballista cluster, and the
//! `sluice scheduler` and `sluice executor` commands that run one (`sluice-scale`).
//!
//! Built only with the `scale-out` feature (`cargo build --release -p sluice-broker --features
//! scale-out`), so that the README's demo does not build Ballista and its gRPC stack. A broker
//! built without it refuses a configured cluster with that command, or (with `when_unavailable`
//! = `local`) runs every query itself and says so.

use anyhow::Result;
use sluice_runtime::remote::RemoteEngine;

use crate::config::{ClusterConfig, WhenUnavailable};

/// What became of a configured cluster at start.
pub enum Connected {
    /// No cluster is configured.
    None,
    /// Its scheduler answered.
    Cluster(RemoteEngine),
    /// It did not answer (or this build has no scale-out) and the configuration says to run
    /// locally: why.
    FellBack(String),
}

/// Connects to the configured cluster, or refuses or falls back as configured.
pub fn connect(cluster: Option<&ClusterConfig>) -> Result<Connected> {
    let Some(cluster) = cluster else {
        return Ok(Connected::None);
    };
    match try_connect(cluster) {
        Ok(engine) => Ok(Connected::Cluster(engine)),
        Err(why) => match cluster.when_unavailable {
            WhenUnavailable::Refuse => Err(anyhow::anyhow!(
                "{why}; the broker is configured to run on that cluster (`cluster` in config.json) and does not start without it: start the scheduler, or set `\"when_unavailable\": \"local\"` to run every query in the broker meanwhile"
            )),
            WhenUnavailable::Local => {
                tracing::warn!("{why}; every query runs in the broker until it is reloaded");
                Ok(Connected::FellBack(why))
            }
        },
    }
}

#[cfg(feature = "scale-out")]
fn try_connect(cluster: &ClusterConfig) -> Result<RemoteEngine, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(sluice_scale::connect(
        &cluster.scheduler,
        std::time::Duration::from_secs(cluster.connect_timeout_secs.max(1)),
    ))
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "scale-out"))]
fn try_connect(_cluster: &ClusterConfig) -> Result<RemoteEngine, String> {
    Err(NOT_BUILT.to_string())
}

/// What a build without the feature says when asked for scale-out.
pub const NOT_BUILT: &str = "this sluice was built without scale-out: build it with `cargo build --release -p sluice-broker --features scale-out`";

/// `sluice scheduler`'s arguments.
#[derive(clap::Args, Debug)]
pub struct SchedulerArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: std::net::SocketAddr,
    /// The host name executors and brokers reach it by (default: the bind address's host).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor is taken as lost and its tasks run
    /// elsewhere.
    #[arg(long, default_value_t = 30)]
    pub executor_timeout_secs: u64,
}

/// `sluice executor`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ExecutorArgs {
    /// The scheduler, `df://host:port`.
    #[arg(long, default_value = "df://127.0.0.1:50050")]
    pub scheduler: String,
    /// The host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host name the scheduler and other executors reach it by (default: the bind host).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Its Arrow Flight port, where other executors fetch its shuffle output.
    #[arg(long, default_value_t = 50051)]
    pub flight_port: u16,
    /// Its gRPC port.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks run at once (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub vcores: usize,
    /// Where shuffle files are written (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
}

/// Runs a Ballista scheduler with Sluice's functions and codecs until stopped.
#[cfg(feature = "scale-out")]
pub fn scheduler(args: SchedulerArgs) -> Result<()> {
    let options = sluice_scale::SchedulerOptions {
        external_host: args
            .external_host
            .unwrap_or_else(|| args.bind.ip().to_string()),
        bind: args.bind,
        executor_timeout: std::time::Duration::from_secs(args.executor_timeout_secs),
    };
    eprintln!("sluice scheduler listening on {}", options.bind);
    runtime()?.block_on(sluice_scale::run_scheduler(options))?;
    Ok(())
}

/// Runs a Ballista executor with Sluice's functions and codecs until stopped.
#[cfg(feature = "scale-out")]
pub fn executor(args: ExecutorArgs) -> Result<()> {
    let options = sluice_scale::ExecutorOptions {
        external_host: args.external_host.unwrap_or_else(|| args.bind_host.clone()),
        scheduler: args.scheduler,
        bind_host: args.bind_host,
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        vcores: args.vcores,
        work_dir: args.work_dir,
        heartbeat: std::time::Duration::from_secs(args.heartbeat_secs),
    };
    eprintln!(
        "sluice executor on {}:{} for scheduler {}",
        options.bind_host, options.flight_port, options.scheduler
    );
    runtime()?.block_on(sluice_scale::run_executor(options))?;
    Ok(())
}

#[cfg(feature = "scale-out")]
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Without the feature: says how to build it.
#[cfg(not(feature = "scale-out"))]
pub fn scheduler(_args: SchedulerArgs) -> Result<()> {
    anyhow::bail!("{NOT_BUILT}")
}

/// Without the feature: says how to build it.
#[cfg(not(feature = "scale-out"))]
pub fn executor(_args: ExecutorArgs) -> Result<()> {
    anyhow::bail!("{NOT_BUILT}")
}
