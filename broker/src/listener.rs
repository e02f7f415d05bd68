//! The broker's connections: accepting, capping and timing out, before any request is read.
//!
//! `axum::serve` neither closes idle or slow-header connections nor caps how many are open, so a
//! client that opens sockets and sends nothing holds file descriptors until the broker starves.
//! Here each connection is served by hyper's HTTP/1 server with a header-read timeout (it also
//! runs while a keep-alive connection waits for its next request, so idle connections close),
//! and is admitted only under two caps: connections open in total, and connections open from one
//! source address. A refused connection is closed at once, and the broker logs that it is shedding
//! (at most one line per cap every [`SHED_LOG_EVERY`], with a count). Each request carries the
//! [`Peer`] it came from.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};

/// Shedding is logged at most this often per cap.
pub const SHED_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a graceful shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The address a request came from (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Caps and timeouts on connections; kept in the broker's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Connections open at once, in total. Default 512. The process needs about this many file
    /// descriptors plus 256 (`ulimit -n`).
    pub max_connections: usize,
    /// Connections open at once from one source address. Default 64.
    pub max_connections_per_source: usize,
    /// Seconds a client has to send a request's headers, and that a keep-alive connection may
    /// stay idle between requests. Default 10.
    pub header_read_timeout_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_connections_per_source: 64,
            header_read_timeout_secs: 10,
        }
    }
}

impl ConnectionLimits {
    /// File descriptors the broker needs beside its connections (database, datasets, epoll,
    /// threads' pipes), with room to spare.
    pub const OTHER_FILES: u64 = 256;

    /// The open-file limit a deployment needs for these caps.
    pub fn files_needed(&self) -> u64 {
        self.max_connections as u64 + Self::OTHER_FILES
    }
}

/// Open connections, in total and per source.
#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    shed: [Shed; 2],
}

/// Shedding of one cap since it was last logged.
#[derive(Default)]
struct Shed {
    count: u64,
    logged: Option<Instant>,
}

/// Admits connections under the caps; each admitted one holds a [`Slot`] until it closes.
#[derive(Clone)]
struct Admission {
    limits: ConnectionLimits,
    open: Arc<Mutex<Open>>,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    open: Arc<Mutex<Open>>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

impl Admission {
    fn admit(&self, source: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        let refused = if open.total >= self.limits.max_connections {
            Some((0, format!("{} connections are open", open.total)))
        } else if from_source >= self.limits.max_connections_per_source {
            Some((
                1,
                format!("{from_source} connections are open from {source}"),
            ))
        } else {
            None
        };
        if let Some((cap, why)) = refused {
            let shed = &mut open.shed[cap];
            shed.count += 1;
            if shed.logged.is_none_or(|t| t.elapsed() >= SHED_LOG_EVERY) {
                tracing::warn!(
                    "shedding connections: {why} (limits: {} in total, {} per source); {} refused since the last report",
                    self.limits.max_connections,
                    self.limits.max_connections_per_source,
                    shed.count
                );
                shed.count = 0;
                shed.logged = Some(Instant::now());
            }
            return None;
        }
        open.total += 1;
        *open.by_source.entry(source).or_insert(0) += 1;
        Some(Slot {
            open: self.open.clone(),
            source,
        })
    }

    fn open_connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// Warns when the process's open-file limit is below what `limits` need.
pub fn check_file_limit(limits: &ConnectionLimits) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<u64>().ok()
        });
    if let Some(soft) = soft
        && soft < limits.files_needed()
    {
        tracing::warn!(
            "the open-file limit is {soft}, below the {} that {} connections need; raise it (ulimit -n {}) or lower max_connections",
            limits.files_needed(),
            limits.max_connections,
            limits.files_needed()
        );
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits (at most
/// [`DRAIN_TIMEOUT`]) for open connections to finish their requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    check_file_limit(&limits);
    let admission = Admission {
        limits: limits.clone(),
        open: Arc::default(),
    };
    let header_timeout = Duration::from_secs(limits.header_read_timeout_secs.max(1));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or similar: wait instead of spinning.
                    tracing::error!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = admission.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        // Responses and event streams are written in small pieces: without this, Nagle's
        // algorithm holds each one back until the client's delayed ACK of the one before.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(Peer(peer));
                tower::ServiceExt::oneshot(app.clone(), req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while admission.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_source_and_freed_on_close() {
        let a = Admission {
            limits: ConnectionLimits {
                max_connections: 3,
                max_connections_per_source: 2,
                header_read_timeout_secs: 1,
            },
            open: Arc::default(),
        };
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "::1".parse().unwrap());
        let first = a.admit(x).unwrap();
        let _second = a.admit(x).unwrap();
        assert!(a.admit(x).is_none(), "the per-source cap");
        let _third = a.admit(y).unwrap();
        assert!(a.admit(y).is_none(), "the total cap");
        drop(first);
        let fourth = a.admit(y).expect("a closed connection frees its place");
        assert_eq!(a.open_connections(), 3);
        drop(fourth);
        assert_eq!(a.open_connections(), 2);
    }
}
