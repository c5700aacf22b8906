//! A pool of read-only connections. Reads run on tokio's blocking pool so they
//! never stall the async runtime, and run concurrently with the writer (WAL).

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{StoreError, open_connection};
use crate::config::Durability;

pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf, max_idle: usize) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("read pool poisoned").pop() {
            return Ok(conn);
        }
        // Durability does not apply to read-only connections.
        open_connection(&self.path, Durability::Full, true)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("read pool poisoned");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Runs `f` on a read-only connection.
    pub(crate) async fn read<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::CommitFailed(format!("read task failed: {e}")))?
    }
}
