//! A fixed pool of read-only connections. Reads run on tokio's blocking pool so
//! they never stall the async runtime, and run concurrently with the writer
//! (WAL). At most `size` reads run at once; more wait for a connection (on the
//! runtime, not on a blocking thread), so under load connections are reused,
//! never opened and closed per call.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

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

    /// Runs `f` on a read-only connection, waiting for one if all are busy.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::CommitFailed("the read pool is closed".into()))?;
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give_back(conn);
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
