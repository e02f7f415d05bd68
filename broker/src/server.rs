//! The broker: its shared state, the workers' start and stop, and serving the API
//! ([`crate::api`]) until shutdown.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use serde_json::json;
use sluice_policy::Policy;
use sluice_runtime::{Limits, Sandbox, SandboxConfig};

use crate::audit::NewEntry;
use crate::keys::sha256_hex;
use crate::store::{LedgerAccountant, LedgerAnswerCache, Store};

pub use crate::config::Config;

/// Largest wasm accepted (the sandbox's cap).
pub const MAX_WASM_BYTES: usize = sluice_runtime::MAX_WASM_BYTES;

/// The policy in force with its sandbox.
pub(crate) struct Current {
    pub(crate) sandbox: Sandbox,
    pub(crate) policy_sha256: String,
}

/// sha256 over a policy's files (names and exact bytes, in load order).
pub fn policy_sha256(policy: &Policy) -> String {
    let mut all = Vec::new();
    for (path, text) in &policy.files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        all.extend_from_slice(format!("{}\n{}\n", name.unwrap_or_default(), text.len()).as_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    sha256_hex(&all)
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) jobs_run: AtomicU64,
    pub(crate) job_seconds_micros: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) denials: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) current: RwLock<Arc<Current>>,
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    pub(crate) wake: (Mutex<u64>, Condvar),
    pub(crate) stop: AtomicBool,
    /// Set when the server starts shutting down: event streams end so that it can.
    pub(crate) closing: AtomicBool,
    pub(crate) metrics: Metrics,
    /// Open windows of denied requests, per source.
    pub(crate) denials: Mutex<crate::denials::DenialLog>,
    /// Objections filed per address in the last hour.
    pub(crate) objection_rate: Mutex<crate::oversight::ObjectionRate>,
    /// Plans running at once: asked for (plan, risk report on request) and made in the
    /// background (risk reports of jobs waiting for review), each pool its own.
    pub(crate) plans: crate::api::plans::PlanPermits,
}

/// A running broker: state, workers, and the router to serve.
pub struct Broker {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn load_policy(path: &Path) -> Result<Policy> {
    sluice_policy::load(path).map_err(|e| match e {
        sluice_policy::PolicyError::Invalid(p) => anyhow::anyhow!("the policy is invalid:\n{p}"),
        other => anyhow::anyhow!(other),
    })
}

pub(crate) fn start_sandbox(
    store: &Arc<Store>,
    config: &Config,
    limits: &Limits,
) -> Result<Current> {
    let policy = load_policy(&config.policy)?;
    let alerts = policy.alerts.clone();
    let policy_sha256 = policy_sha256(&policy);
    let mut sandbox_config = SandboxConfig::new(
        policy,
        &config.data_root,
        Arc::new(LedgerAccountant::with_alerts(store.clone(), alerts)),
    )
    .with_answer_cache(Arc::new(LedgerAnswerCache(store.clone())))
    .with_compiled_dir(store.dir().join("compiled"))
    .with_memory_bytes(config.hold_in_memory_mib.saturating_mul(1 << 20))
    .with_limits(limits.clone());
    // A configured cluster's state at each start or reload is in the audit log.
    let engine = match crate::cluster::connect(config.cluster.as_ref())? {
        crate::cluster::Connected::None => None,
        crate::cluster::Connected::Cluster(remote) => {
            let name = remote.name.clone();
            sandbox_config.remote = Some(remote);
            Some(json!({ "engine": name }))
        }
        crate::cluster::Connected::FellBack(why) => {
            Some(json!({ "engine": sluice_runtime::remote::LOCAL, "cluster_unavailable": why }))
        }
    };
    if let Some(engine) = engine {
        store.record(NewEntry::new("cluster.connected", "broker").detail(engine))?;
    }
    let sandbox = Sandbox::new(sandbox_config).context("while starting the sandbox")?;
    Ok(Current {
        sandbox,
        policy_sha256,
    })
}

impl Broker {
    /// Opens the data directory, fails jobs a crash left running, loads and checks the policy and
    /// starts the workers. Blocking: call it outside async code (or in `spawn_blocking`).
    pub fn start(data_dir: &Path, config: Config, limits: Limits) -> Result<Self> {
        let store = Arc::new(Store::open(data_dir)?);
        let interrupted = store.recover()?;
        if interrupted > 0 {
            tracing::warn!(
                "{interrupted} job(s) were running when the broker stopped; marked failed"
            );
        }
        if let Some(url) = &config.alert_webhook {
            crate::webhook::check_url(url)?;
        }
        let current = start_sandbox(&store, &config, &limits)?;
        store.record(NewEntry::new("policy.loaded", "broker").detail(json!({
            "policy_sha256": current.policy_sha256,
            "files": current.sandbox.engine().policy().files.iter()
                .map(|(p, t)| json!({"file": p.display().to_string(), "sha256": sha256_hex(t.as_bytes())}))
                .collect::<Vec<_>>(),
        })))?;
        let shared = Arc::new(Shared {
            store,
            current: RwLock::new(Arc::new(current)),
            limits,
            wake: (Mutex::new(0), Condvar::new()),
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            metrics: Metrics::default(),
            denials: Mutex::default(),
            objection_rate: Mutex::default(),
            plans: Default::default(),
            config,
        });
        let mut workers: Vec<_> = (0..shared.config.workers.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{i}"))
                    .spawn(move || crate::worker::worker(s))
                    .expect("spawn a worker thread")
            })
            .collect();
        if let Some(url) = shared.config.alert_webhook.clone() {
            let s = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name("sluice-alert-webhook".into())
                    .spawn(move || crate::webhook::deliver(s, url))
                    .expect("spawn the webhook thread"),
            );
        }
        Ok(Self { shared, workers })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        crate::api::router(self.shared.clone())
    }

    /// Stops the workers (each finishes its current job), then signs a final checkpoint.
    /// Blocking.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_workers();
        let repeated = self
            .shared
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expired(Instant::now(), true);
        for r in &repeated {
            self.shared
                .store
                .record(crate::api::auth::repeated_entry(r))?;
        }
        self.shared
            .store
            .record(NewEntry::new("broker.stopped", "broker"))?;
        self.shared.store.checkpoint()?;
        Ok(())
    }

    fn stop_workers(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.1.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// Wakes the workers: a job may be ready to run.
pub(crate) fn notify(shared: &Shared) {
    let mut n = shared.wake.0.lock().unwrap_or_else(|p| p.into_inner());
    *n += 1;
    shared.wake.1.notify_all();
}

pub(crate) fn current(shared: &Shared) -> Arc<Current> {
    shared
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Serves the API on `listener` until `shutdown` resolves, then stops the broker cleanly.
pub async fn serve(
    broker: Broker,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = broker.router();
    let shared = broker.shared.clone();
    let limits = shared.config.connections.clone();
    crate::listener::serve(listener, app, limits, async move {
        shutdown.await;
        // Open event streams would hold the graceful shutdown forever: end them.
        shared.closing.store(true, Ordering::SeqCst);
        shared.store.changed().notify_waiters();
    })
    .await
    .context("the HTTP server failed")?;
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .context("shutdown panicked")?
}

/// A broker serving on a background thread (the demo, benchmarks and tests embed one).
pub struct Running {
    /// Its base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Running {
    /// Starts a broker on `data_dir` listening on `listen` (port 0 picks a free port). Blocking.
    pub fn start(data_dir: &Path, config: Config, limits: Limits, listen: &str) -> Result<Self> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let dir = data_dir.to_path_buf();
        let listen = listen.to_string();
        let thread = std::thread::Builder::new()
            .name("sluice-broker".into())
            .spawn(move || -> Result<()> {
                let started = (|| {
                    let broker = Broker::start(&dir, config, limits)?;
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("sluice-http")
                        .enable_all()
                        .build()?;
                    let listener = rt.block_on(tokio::net::TcpListener::bind(&listen))?;
                    anyhow::Ok((broker, rt, listener))
                })();
                let (broker, rt, listener) = match started {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let _ = addr_tx.send(Ok(listener.local_addr()?));
                let r = rt.block_on(serve(broker, listener, async {
                    let _ = stop_rx.await;
                }));
                rt.shutdown_timeout(Duration::from_secs(5));
                r
            })?;
        let addr = addr_rx
            .recv()
            .context("the broker thread ended before listening")?
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self {
            url: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops serving, lets running jobs finish, and signs a final checkpoint.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the broker thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
