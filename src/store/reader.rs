//! A fixed pool of read-only connections, reading concurrently with the
//! writer (WAL). At most `size` reads run at once; more wait for a connection
//! (on the runtime, not on a thread), so under load connections are reused,
//! never opened and closed per call.
//!
//! A bounded read on sqlite borrows the writer's connection when the writer
//! is idle (`WriterConn::lend`): its page cache is still valid after a write,
//! a pooled connection's is not. Otherwise it takes a pooled connection.
//!
//! A read ([`ReadPool::read`]) runs on the thread that asks: reads are bounded
//! (by id, by page, by limit) and take tens to hundreds of microseconds, less
//! than a hand-off to tokio's blocking pool and back, which was most of a small
//! call's latency. A read whose work grows with the namespace (a scan for
//! consolidation, a graph snapshot, a fallback search, a timeline) goes through
//! [`ReadPool::scan`], on the blocking pool, so it never holds a runtime worker.
//!
//! On PostgreSQL the connections come from an r2d2 pool (`pg.rs`), and every
//! read leaves the runtime's worker: the client blocks on its own runtime,
//! which cannot run inside tokio's. A bounded read runs in `block_in_place`
//! (a scoped thread on a single-threaded runtime), a scan on the blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pg::PgPool;
use super::sql::{Conn, Database};
use super::writer::WriterConn;
use super::{StoreError, open_connection};
use crate::config::Durability;

pub(crate) enum ReadPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl ReadPool {
    /// Read-only connections to the sqlite file at `path`, at most `size`,
    /// and the writer's connection when it is idle.
    pub(crate) fn new(path: PathBuf, size: usize, writer: Arc<WriterConn>) -> Self {
        let size = size.max(1);
        ReadPool::Sqlite(SqlitePool {
            path,
            writer,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    /// Runs `f` on a read connection, waiting for one if all are busy. For
    /// bounded reads.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: FnOnce(Conn<'_>) -> Result<T, StoreError> + Send,
    {
        match &**self {
            ReadPool::Sqlite(pool) => {
                let _permit = pool.permit().await?;
                let lent = pool.writer.lend();
                crate::metrics::metrics().store_read(lent.is_some());
                match lent {
                    Some(db) => f(db.conn()),
                    None => pool.with_connection(f),
                }
            }
            ReadPool::Postgres(pool) => off_the_runtime(|| pool.with_connection(f)),
        }
    }

    /// Runs `f` on a read connection on the blocking pool: for reads whose
    /// work grows with the namespace.
    pub(crate) async fn scan<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Conn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = match &**self {
            ReadPool::Sqlite(pool) => Some(pool.permit().await?),
            ReadPool::Postgres(_) => None,
        };
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = match &*pool {
                ReadPool::Sqlite(p) => p.with_connection(f),
                ReadPool::Postgres(p) => p.with_connection(f),
            };
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
}

/// Runs blocking work from a runtime worker without stalling the runtime: in
/// `block_in_place`, or on a scoped thread where that is not allowed (a
/// single-threaded runtime).
fn off_the_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => f(),
    }
}

pub(crate) struct SqlitePool {
    path: PathBuf,
    /// Lent to bounded reads while the writer is idle; scans never take it
    /// (they would hold writes back).
    writer: Arc<WriterConn>,
    idle: Mutex<Vec<Database>>,
    /// One permit per connection the pool may hold; a read keeps its permit
    /// until its connection is back (even when its caller stopped waiting).
    permits: Arc<Semaphore>,
}

impl SqlitePool {
    /// An idle connection, or a new one (opened at most `size` times unless one
    /// was lost to a panic): the caller holds a permit.
    fn take(&self) -> Result<Database, StoreError> {
        if let Some(conn) = self.idle.lock().expect("read pool poisoned").pop() {
            return Ok(conn);
        }
        // Durability does not apply to read-only connections.
        Ok(Database::Sqlite(open_connection(
            &self.path,
            Durability::Full,
            true,
        )?))
    }

    fn give_back(&self, conn: Database) {
        self.idle.lock().expect("read pool poisoned").push(conn);
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
        f: impl FnOnce(Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let out = f(conn.conn());
        self.give_back(conn);
        out
    }
}
