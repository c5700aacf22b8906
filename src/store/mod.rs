//! The sqlite store: the only source of truth.
//!
//! Owns: the database file, its migrations, the single writer thread (group
//! commit) and the pool of read-only connections. No rusqlite type leaves this
//! module: operations call typed methods (see `episodic.rs`), which is the seam a
//! PostgreSQL store would fill later.
//!
//! Must not: know about MCP, sessions, or the search index. Derived views learn of
//! writes only through the change listener, called with each committed batch's
//! changes before any caller of that batch is answered.

mod episodic;
mod graph;
mod migrations;
mod reader;
mod semantic;
mod writer;

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use thiserror::Error;

use crate::config::{Config, Durability};
use crate::model::{Change, RecordKind, SearchDoc};

pub use episodic::{EventFilter, EventPatch, NewEvent, Order};
pub use graph::{EdgeRow, EntityRecord, GraphCounts, GraphRows, NewEntity, NewRelation};
pub use semantic::{FactFilter, FactPatch, NewFact};
pub use writer::ChangeListener;

/// sqlite's own statement cache holds 16 by default; 70+ operations need more.
const STATEMENT_CACHE_CAPACITY: usize = 256;
/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT_MS: u64 = 5_000;
pub const DB_FILE_NAME: &str = "engram.sqlite3";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    /// The write contradicts the record's state (e.g. superseding a fact twice).
    #[error("{0}")]
    Conflict(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("the write was not committed: {0}")]
    CommitFailed(String),
    #[error("the store is shut down")]
    Closed,
}

/// Cheap handle to the store; clone freely.
#[derive(Clone)]
pub struct Store {
    writer: writer::WriterHandle,
    readers: Arc<reader::ReadPool>,
}

impl Store {
    /// Opens (creating if needed) the database in `config.data_dir`, runs
    /// migrations, and starts the writer thread. `listener` sees every committed
    /// change before the writer answers the callers of that commit.
    pub fn open(config: &Config, listener: ChangeListener) -> Result<Store, StoreError> {
        let path = config.data_dir.join(DB_FILE_NAME);
        let mut conn = open_connection(&path, config.durability, false)?;
        migrations::run(&mut conn)?;
        let writer = writer::WriterHandle::start(conn, listener, config.max_group_commit)?;
        let readers = Arc::new(reader::ReadPool::new(path, config.max_read_connections));
        Ok(Store { writer, readers })
    }

    /// Stops the writer after every write queued before this call has committed.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// Changes with a number above `after`, oldest first: how the search index
    /// catches up after a crash.
    pub async fn changes_since(&self, after: i64) -> Result<Vec<Change>, StoreError> {
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, kind, record_id, namespace FROM changes WHERE seq > ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([after], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (seq, kind, id, namespace) = row?;
                    let kind = RecordKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown change kind {kind}")))?;
                    let doc = search_doc(conn, kind, &id)?;
                    out.push(Change { seq, kind, id, namespace, doc });
                }
                Ok(out)
            })
            .await
    }

    /// The highest change number committed so far (0 when none).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        self.readers
            .read(|conn| {
                Ok(
                    conn.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
    }

    /// Every searchable record, for rebuilding the index from scratch. Calls
    /// `sink` with batches so a large store is never held in memory at once.
    pub async fn scan_search_docs(
        &self,
        mut sink: impl FnMut(Vec<SearchDoc>) -> Result<(), String> + Send + 'static,
    ) -> Result<(), StoreError> {
        const SCAN_BATCH: usize = 5_000;
        self.readers
            .read(move |conn| {
                let mut batch = Vec::with_capacity(SCAN_BATCH);
                for (sql, from_row) in SEARCH_SOURCES {
                    let mut stmt = conn.prepare(sql)?;
                    let mut rows = stmt.query([])?;
                    while let Some(r) = rows.next()? {
                        batch.push(from_row(conn, r)?);
                        if batch.len() == SCAN_BATCH {
                            sink(std::mem::take(&mut batch)).map_err(StoreError::Corrupt)?;
                        }
                    }
                }
                if !batch.is_empty() {
                    sink(batch).map_err(StoreError::Corrupt)?;
                }
                Ok(())
            })
            .await
    }

    /// The searchable records of one namespace and some kinds: what a search
    /// reads when the index is down (the degraded path).
    pub async fn search_docs_in(
        &self,
        namespace: &str,
        kinds: Vec<RecordKind>,
    ) -> Result<Vec<SearchDoc>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut out = Vec::new();
                for (kind, (sql, from_row)) in
                    [RecordKind::Event, RecordKind::Fact, RecordKind::Entity]
                        .into_iter()
                        .zip(SEARCH_SOURCES)
                {
                    if !kinds.contains(&kind) {
                        continue;
                    }
                    let mut stmt = conn.prepare_cached(&format!("{sql} WHERE namespace = ?1"))?;
                    let mut rows = stmt.query([&namespace])?;
                    while let Some(r) = rows.next()? {
                        out.push(from_row(conn, r)?);
                    }
                }
                Ok(out)
            })
            .await
    }
}

type DocFromRow = fn(&Connection, &rusqlite::Row<'_>) -> Result<SearchDoc, StoreError>;

/// Where each searchable kind's documents come from: events, facts, entities.
const SEARCH_SOURCES: [(&str, DocFromRow); 3] = [
    (episodic::SEARCH_DOC_SQL, |_, r| {
        episodic::search_doc_from_row(r)
    }),
    (semantic::SEARCH_DOC_SQL, |_, r| {
        semantic::search_doc_from_row(r)
    }),
    (graph::SEARCH_DOC_SQL, graph::search_doc_from_row),
];

/// The current search document of one record, or `None` if it no longer exists.
fn search_doc(
    conn: &Connection,
    kind: RecordKind,
    id: &str,
) -> Result<Option<SearchDoc>, StoreError> {
    match kind {
        RecordKind::Event => episodic::search_doc_by_id(conn, id),
        RecordKind::Fact => semantic::search_doc_by_id(conn, id),
        RecordKind::Entity => graph::search_doc_by_id(conn, id),
        RecordKind::Relation => Ok(None),
    }
}

fn open_connection(
    path: &Path,
    durability: Durability,
    read_only: bool,
) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if read_only {
        conn.pragma_update(None, "query_only", "ON")?;
    } else {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
    }
    Ok(conn)
}
