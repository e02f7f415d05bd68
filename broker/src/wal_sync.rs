//! Makes commits durable off the committing thread, and without the writer's lock.
//!
//! A charge commits without waiting for the disk (`synchronous=NORMAL`: its WAL frames are
//! written, not yet synced) and asks this syncer for a sync; its query runs meanwhile, and the
//! engine waits for the sync before the answer is handed to the job ("charge before release":
//! durable before the value leaves the engine). A submission does the same and waits before
//! its `202` is sent. One thread syncs the WAL file: a sync started
//! after a request covers that request's commit, since SQLite writes the WAL in order and the
//! commit returned before the request. Requests that arrive while a sync runs are covered
//! together by the next one (group commit).
//!
//! A failed sync is final: after an `fsync` error the kernel may have dropped the dirty pages,
//! so no later sync can vouch for what came before it. Every wait then fails, and the engine
//! releases nothing more until the broker restarts (and SQLite recovers the WAL as it is on
//! disk).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};

/// The syncer of one database's WAL file.
pub(crate) struct WalSync {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    wal: PathBuf,
    state: Mutex<State>,
    /// Wakes the sync thread: a request, or stopping.
    requested: Condvar,
    /// Wakes waiters: a sync ended.
    synced: Condvar,
}

#[derive(Default)]
struct State {
    /// Requests made (each one's mark is the count after it).
    requests: u64,
    /// Requests covered by a finished sync.
    synced: u64,
    /// The error of a failed sync (final).
    failed: Option<String>,
    stopping: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WalSync {
    /// Starts the thread that syncs `wal` (a database's `-wal` file).
    pub(crate) fn start(wal: PathBuf) -> Result<Self> {
        let shared = Arc::new(Shared {
            wal,
            state: Mutex::new(State::default()),
            requested: Condvar::new(),
            synced: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-wal-sync".into())
            .spawn(move || sync_loop(&s))
            .context("cannot start the WAL sync thread")?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a sync covering every commit made before this call; returns the mark to
    /// [`WalSync::wait`] for.
    pub(crate) fn request(&self) -> u64 {
        let mut state = self.shared.state();
        state.requests += 1;
        self.shared.requested.notify_one();
        state.requests
    }

    /// The number of requests made so far: waiting for it waits for every commit that asked
    /// for a sync before now.
    pub(crate) fn requests(&self) -> u64 {
        self.shared.state().requests
    }

    /// A handle that waits for syncs (for another thread).
    pub(crate) fn waiter(&self) -> SyncWaiter {
        SyncWaiter(self.shared.clone())
    }

    /// Returns once a sync covering request `mark` has finished, or the error of a failed one.
    pub(crate) fn wait(&self, mark: u64) -> Result<()> {
        self.waiter().wait(mark)
    }
}

/// Waits for a [`WalSync`]'s syncs from another thread.
#[derive(Clone)]
pub(crate) struct SyncWaiter(Arc<Shared>);

impl SyncWaiter {
    /// [`WalSync::wait`].
    pub(crate) fn wait(&self, mark: u64) -> Result<()> {
        let shared = &self.0;
        let mut state = shared.state();
        loop {
            if let Some(e) = &state.failed {
                bail!("the database's log could not be synced to disk: {e}");
            }
            if state.synced >= mark {
                return Ok(());
            }
            state = shared.synced.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The sync thread: waits for requests, syncs the WAL once for all that arrived, repeats.
fn sync_loop(shared: &Shared) {
    loop {
        let target = {
            let mut state = shared.state();
            while state.requests == state.synced && !state.stopping && state.failed.is_none() {
                state = shared
                    .requested
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if state.failed.is_some() || (state.stopping && state.requests == state.synced) {
                return;
            }
            state.requests
        };
        let outcome = sync_file(shared);
        let mut state = shared.state();
        match outcome {
            Ok(()) => state.synced = target,
            Err(e) => {
                tracing::error!("the database's log could not be synced to disk: {e:#}");
                state.failed = Some(format!("{e:#}"));
            }
        }
        shared.synced.notify_all();
    }
}

/// Syncs the WAL file's data. A WAL that is gone was checkpointed into the database, which
/// SQLite syncs before it removes the WAL: nothing is left to sync.
fn sync_file(shared: &Shared) -> Result<()> {
    match std::fs::File::open(&shared.wal) {
        Ok(f) => f
            .sync_data()
            .with_context(|| format!("while syncing {}", shared.wal.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("while opening {}", shared.wal.display())),
    }
}

impl Drop for WalSync {
    /// Finishes the syncs asked for, then stops the thread.
    fn drop(&mut self) {
        self.shared.state().stopping = true;
        self.shared.requested.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_covered_by_a_later_sync() {
        let dir = std::env::temp_dir().join(format!("sluice-walsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wal = dir.join("x.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let sync = Arc::new(WalSync::start(wal.clone()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sync = sync.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mark = sync.request();
                        sync.wait(mark).unwrap();
                        assert!(sync.shared.state().synced >= mark);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = sync.shared.state();
        assert_eq!((state.requests, state.synced), (200, 200));
        drop(state);
        // A WAL that is gone (checkpointed and removed) needs no sync.
        std::fs::remove_file(&wal).unwrap();
        let mark = sync.request();
        sync.wait(mark).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_sync_fails_every_wait_after_it() {
        // A WAL path under a plain file cannot be opened: the sync fails.
        let dir = std::env::temp_dir().join(format!("sluice-walsync-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        let sync = WalSync::start(file.join("x.db-wal")).unwrap();
        let mark = sync.request();
        let e = sync.wait(mark).unwrap_err().to_string();
        assert!(e.contains("could not be synced"), "{e}");
        assert!(sync.wait(0).is_err(), "final: every wait after it fails");
        drop(sync);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
