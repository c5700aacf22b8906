//! A fixed pool of read-only connections, reading concurrently with the
//! writer (WAL). At most `size` reads run at once; more wait for a connection
//! (on the runtime, not on a thread), so under load connections are reused,
//! never opened and closed per call.
//!
//! A read ([`ReadPool::read`]) runs on the thread that asks: reads are bounded
//! (by id, by page, by limit) and take tens to hundreds of microseconds, less
//! than a hand-off to tokio's blocking pool and back, which was most of a small
//! call's latency. A read whose work grows with the namespace (a scan for
//! consolidation, a graph snapshot, a fallback search, a timeline) goes through
//! [`ReadPool::scan`], on the blocking pool, so it never holds a runtime worker.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{StoreError, open_connection};
use crate::config::Durability;

pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection the pool may hold; a read keeps its permit
    /// until its connection is back (even when its caller stopped waiting).
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf, size: usize) -> Self {
        let size = size.max(1);
        ReadPool {
            path,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// An idle connection, or a new one (opened at most `size` times unless one
    /// was lost to a panic): the caller holds a permit.
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("read pool poisoned").pop() {
            return Ok(conn);
        }
        // Durability does not apply to read-only connections.
        open_connection(&self.path, Durability::Full, true)
    }

    fn give_back(&self, conn: Connection) {
        self.idle.lock().expect("read pool poisoned").push(conn);
    }

    /// Runs `f` on a read-only connection here, waiting for one if all are
    /// busy. For bounded reads.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let _permit = self.permit().await?;
        self.with_connection(f)
    }

    /// Runs `f` on a read-only connection on the blocking pool: for reads whose
    /// work grows with the namespace.
    pub(crate) async fn scan<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = pool.with_connection(f);
            drop(permit);
            out
        })
        .await;
        match joined {
            Ok(out) => out,
            // A bug in a read: let the operation's panic guard report it, not
            // the store's breaker.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::CommitFailed(format!("read task failed: {e}"))),
        }
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::CommitFailed("the read pool is closed".into()))
    }

    /// `f` on a pooled connection; the caller holds a permit. A connection a
    /// panic unwinds through is dropped, not given back.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let out = f(&conn);
        self.give_back(conn);
        out
    }
}
