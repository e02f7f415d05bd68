//! # sluice-broker
//!
//! The Sluice service: operators submit wasm jobs over HTTP, reviewers approve them and audit the
//! log, data holders reload policy and suspend access. State lives in one embedded SQLite file.
//!
//! - [`store`]: jobs, the budget ledger (the runtime's [`sluice_runtime::Accountant`]), tokens,
//!   suspensions and the audit log, each change committed with its audit entry.
//! - [`audit`]: the hash-chained log, signed checkpoints and `verify`.
//! - [`keys`]: the broker's ed25519 key, and signed receipts for released reports.
//! - [`server`]: the axum API under `/v1` and the worker pool.
//! - [`client`]: a blocking client for the API.
//!
//! ```no_run
//! use sluice_broker::{server::{Broker, Config}, store::{Role, Store}};
//!
//! let dir = std::path::Path::new("/var/lib/sluice");
//! let store = Store::init(dir)?;                       // database + signing key
//! let token = store.create_token(Role::Operator, "canal-analytics", "admin")?;
//! drop(store);
//! let config = Config::new("policies/examples".into(), ".".into());
//! config.save(dir)?;
//! let broker = Broker::start(dir, config, Default::default())?;
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//!     sluice_broker::server::serve(broker, listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! })?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Invariants
//! Charge before release: a query's charge and its audit entry commit in one transaction before
//! the query executes. Log before effect: every state change commits with its audit entry.
//! Concurrent charges serialize on SQLite's write lock, so no grant is ever overspent.

mod api;
pub mod audit;
pub mod build;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod denials;
pub mod error;
pub mod filings;
pub mod keys;
mod ledger_totals;
pub mod listener;
pub mod oversight;
pub mod plot;
pub mod registry;
pub mod server;
pub mod statements;
pub mod store;
mod wal_sync;
pub mod webhook;
mod worker;

/// Every (method, path) the broker serves, as its router declares them (methods in lower case).
pub fn served_routes() -> Vec<(&'static str, &'static str)> {
    api::served().collect()
}

/// The API's contract as an OpenAPI 3.1 document: what `GET /v1/openapi.json` serves.
pub fn openapi() -> serde_json::Value {
    api::openapi::document()
}
