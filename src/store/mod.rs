//! The sqlite store: the only source of truth.
//!
//! Owns: the database file, its migrations, the single writer thread (group
//! commit) and the pool of read-only connections. No rusqlite type leaves this
//! module: operations call typed methods (see `episodic.rs`), which is the seam a
//! PostgreSQL store would fill later. Each record kind declares once how it is
//! stored (a `table::Table`: get, get many, list, count, update, delete come from
//! it) and, if searchable, where its search documents come from (a `Searchable`,
//! listed in `SEARCHABLE`).
//!
//! Must not: know about MCP, sessions, or the search index. Derived views learn of
//! writes only through the change listener, called with each committed batch's
//! changes before any caller of that batch is answered.

mod audit;
mod consolidate;
mod episodic;
mod export;
mod follow;
mod graph;
mod handles;
mod meta;
mod migrations;
mod pg;
mod procedural;
mod prospective;
mod reader;
mod semantic;
mod sql;
mod table;
mod tokens;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use thiserror::Error;

use crate::config::{Config, Durability};
use crate::model::{Change, RecordKind, SearchDoc};
use sql::{Arg, Conn, Row, Value, args};
use writer::WriteTxn;

pub use audit::{AuditFilter, attributed};
pub use consolidate::{Decay, Merge, Plan, Policy, Promotion};
pub use episodic::{EventFilter, EventPatch, NewEvent};
pub use export::{
    ArchivedEvent, EXPORT_ORDER, ExportPosition, Exported, Imported, ProcedureRecord,
};
pub use graph::{
    EdgeRow, EntityRecord, GraphCounts, GraphRows, NewEntity, NewRelation, RelationRecord,
};
pub use handles::{HeldSession, StoredSession};
pub use meta::KindCount;
pub use procedural::{
    NewExecution, NewProcedure, ProcedureFilter, ProcedurePatch, RunSummary, smoothed_success,
};
pub use prospective::{NewTask, TaskFilter, TaskPatch};
pub use semantic::{FactFilter, FactPatch, NewFact};
pub use table::{Order, Records};
pub use tokens::{Direct, NewToken, TokenRecord};
pub use writer::ChangeListener;

/// sqlite's own statement cache holds 16 by default; 70+ operations need more.
const STATEMENT_CACHE_CAPACITY: usize = 256;
/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// The writer connection's page cache (sqlite's default is 2 MiB). Reads
/// borrow that connection while the writer is idle, and its cache, unlike a
/// pooled reader's, survives writes: a larger one holds more of a store's
/// working set. Filled only as pages are read; 8 MiB at the most.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
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
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("the write was not committed: {0}")]
    CommitFailed(String),
    #[error("the store is shut down")]
    Closed,
    /// The database cannot be reached (PostgreSQL down, the pool exhausted).
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    /// PostgreSQL refused text of the call it cannot store (a NUL, a byte
    /// sequence not in UTF-8): the caller's input, not the store's health.
    /// Other data exceptions (a stored value that does not cast) stay store
    /// failures.
    pub fn is_bad_value(&self) -> bool {
        use postgres::error::SqlState;
        self.sqlstate_in(&[
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::UNTRANSLATABLE_CHARACTER,
        ])
    }

    /// PostgreSQL aborted the transaction for a deadlock or a serialization
    /// failure: trying it again may succeed.
    pub fn is_conflict(&self) -> bool {
        use postgres::error::SqlState;
        self.sqlstate_in(&[
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ])
    }

    /// A PostgreSQL error whose SQLSTATE is one of `codes`.
    fn sqlstate_in(&self, codes: &[postgres::error::SqlState]) -> bool {
        match self {
            StoreError::Postgres(e) => e.code().is_some_and(|c| codes.contains(c)),
            _ => false,
        }
    }
}

/// What went wrong in PostgreSQL's words: the server's message (and its
/// SQLSTATE) or the client's cause; the error's own text is only "db error".
fn postgres_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether a stored record's search document holds every word of a
/// reminder's query (the agent's words), read as a search reads them.
pub type DocMatcher = Arc<dyn Fn(&str, &SearchDoc) -> bool + Send + Sync>;

/// Cheap handle to the store; clone freely.
#[derive(Clone)]
pub struct Store {
    writer: writer::WriterHandle,
    readers: Arc<reader::ReadPool>,
    matcher: DocMatcher,
    /// On a store shared by many nodes: what this node has heard of the
    /// others' writes (`follow.rs`).
    follower: Option<Arc<follow::Follower>>,
}

impl Store {
    /// Opens (creating if needed) the database in `config.data_dir`, runs
    /// migrations, and starts the writer thread. `listener` sees every committed
    /// change before the writer answers the callers of that commit.
    /// With `config.store_url` set, the store is that PostgreSQL database
    /// instead (`pg.rs`).
    pub fn open(config: &Config, listener: ChangeListener) -> Result<Store, StoreError> {
        if let Some(url) = &config.store_url {
            return pg::open(url, config, listener);
        }
        let path = config.data_dir.join(DB_FILE_NAME);
        let mut conn = open_connection(&path, config.durability, false)?;
        migrations::run(&mut conn)?;
        let db = writer::WriterConn::new(sql::Database::Sqlite(conn));
        let writer = writer::WriterHandle::start(db.clone(), listener, config.max_group_commit)?;
        let readers = Arc::new(reader::ReadPool::new(path, config.max_read_connections, db));
        Ok(Store {
            writer,
            readers,
            matcher: Arc::new(every_word),
            follower: None,
        })
    }

    /// The store with reminders' queries matched by `matcher` (the search
    /// index's own evaluator) instead of plain word containment.
    pub fn match_with(self, matcher: DocMatcher) -> Store {
        Store { matcher, ..self }
    }

    /// Which database this store speaks to.
    pub(crate) fn dialect(&self) -> sql::Dialect {
        match &*self.readers {
            reader::ReadPool::Sqlite(_) => sql::Dialect::Sqlite,
            reader::ReadPool::Postgres(_) => sql::Dialect::Postgres,
        }
    }

    /// Runs `f` on a read connection (a pooled one, or the idle writer's, lent
    /// read-only), with the namespace every statement of it is scoped by. For
    /// bounded reads: by id, by page, by limit.
    pub(super) async fn read_in<T, F>(&self, namespace: &str, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: FnOnce(Conn<'_>, &str) -> Result<T, StoreError> + Send,
    {
        self.readers.read(move |conn| f(conn, namespace)).await
    }

    /// [`Store::read_in`] for a read whose work grows with the namespace: on
    /// the blocking pool, never on a runtime worker.
    pub(super) async fn scan_in<T, F>(&self, namespace: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Conn<'_>, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let namespace = namespace.to_string();
        self.readers.scan(move |conn| f(conn, &namespace)).await
    }

    /// Runs `f` in the next group commit, with the namespace every statement of
    /// it is scoped by.
    pub(super) async fn write_in<T, F>(&self, namespace: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_>, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let namespace = namespace.to_string();
        let (actor, matcher) = (audit::actor(), self.matcher.clone());
        let (value, fired) = self
            .writer
            .write(move |txn| {
                let value = f(txn, &namespace)?;
                let fired = audit::after_write(txn, &namespace, &actor, &matcher)?;
                Ok((value, fired))
            })
            .await?;
        audit::fired(fired);
        Ok(value)
    }

    /// Stops the writer after every write queued before this call has committed.
    pub fn shutdown(&self) {
        if let Some(f) = &self.follower {
            f.stop();
        }
        self.writer.shutdown();
    }

    /// Whether other nodes write to this store too (a PostgreSQL store).
    pub fn is_shared(&self) -> bool {
        self.follower.is_some()
    }

    /// Before a read on a store other nodes write to: brings this node's
    /// derived views up to every change committed so far, so the read sees
    /// every write acknowledged anywhere before it began. Nothing on sqlite.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.with_follower(follow::Follower::sync).await
    }

    /// Once this node's derived views have caught up at start: from now on
    /// other nodes' changes reach them (see `follow.rs`). Nothing on sqlite.
    pub async fn follow_others(&self) -> Result<(), StoreError> {
        self.with_follower(follow::Follower::release).await
    }

    /// `act` on the follower with a read connection; nothing on sqlite.
    async fn with_follower(
        &self,
        act: fn(&follow::Follower, Conn<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match &self.follower {
            None => Ok(()),
            Some(f) => self.readers.read(|conn| act(f, conn)).await,
        }
    }

    /// Changes with a number above `after`, oldest first: how the search index
    /// catches up after a crash (as many as the index missed: a scan).
    pub async fn changes_since(&self, after: i64) -> Result<Vec<Change>, StoreError> {
        self.readers
            .scan(move |conn| changes_after(conn, after, |_| false))
            .await
    }

    /// The highest change number committed so far (0 when none).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        self.readers
            .read(|conn| conn.value("SELECT coalesce(max(seq), 0) FROM changes", &[]))
            .await
    }

    /// On a store other nodes share, the secret called `name` all of them use
    /// (made of `len` random bytes by the first to ask); `None` on sqlite,
    /// whose node keeps its secrets in its data dir.
    pub async fn shared_secret(
        &self,
        name: &str,
        len: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.is_shared() {
            return Ok(None);
        }
        let mut fresh = vec![0u8; len];
        getrandom::fill(&mut fresh)
            .map_err(|e| StoreError::Unavailable(format!("no randomness for a secret: {e}")))?;
        let name = name.to_string();
        self.readers
            .read(move |conn| {
                conn.execute(
                    "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    &args![name, fresh.as_slice()],
                )?;
                conn.value("SELECT value FROM secrets WHERE name = ?1", &args![name])
                    .map(Some)
            })
            .await
    }

    /// The lowest change number kept (0 when none): older ones were detached.
    pub async fn first_change(&self) -> Result<i64, StoreError> {
        self.readers
            .read(|conn| conn.value("SELECT coalesce(min(seq), 0) FROM changes", &[]))
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
                for source in SEARCHABLE {
                    source.each(conn, "", &[], |doc| {
                        batch.push(doc);
                        if batch.len() == SCAN_BATCH {
                            sink(std::mem::take(&mut batch)).map_err(StoreError::Corrupt)?;
                        }
                        Ok(())
                    })?;
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
        self.scan_in(namespace, move |conn, namespace| {
            let mut out = Vec::new();
            for source in SEARCHABLE.into_iter().filter(|s| kinds.contains(&s.kind)) {
                source.each(conn, " WHERE namespace = ?1", &args![namespace], |doc| {
                    out.push(doc);
                    Ok(())
                })?;
            }
            Ok(out)
        })
        .await
    }
}

/// The changes logged above `after`, oldest first, each with its record's
/// current search document; `skip` leaves out the numbers it names (their
/// documents are not read).
fn changes_after(
    conn: Conn<'_>,
    after: i64,
    skip: impl Fn(i64) -> bool,
) -> Result<Vec<Change>, StoreError> {
    let logged = conn.rows(
        "SELECT seq, kind, record_id, namespace FROM changes WHERE seq > ?1 ORDER BY seq",
        &args![after],
        |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
            ))
        },
    )?;
    let mut changes = Vec::new();
    for (seq, kind, id, namespace) in logged.into_iter().filter(|(seq, ..)| !skip(*seq)) {
        let kind = RecordKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown change kind {kind}")))?;
        changes.push((seq, kind, id, namespace));
    }
    // The documents, one statement per kind and chunk of ids (not one per
    // change: on PostgreSQL each is a round trip, and a new node catching up
    // reads every change there is).
    let mut docs: HashMap<(RecordKind, String), SearchDoc> = HashMap::new();
    for source in SEARCHABLE {
        let mut ids: Vec<&str> = changes
            .iter()
            .filter(|(_, kind, ..)| *kind == source.kind)
            .map(|(_, _, id, _)| id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(DOCS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let params: Vec<Value<'_>> = chunk.iter().map(|id| id.arg()).collect();
            source.each(conn, &format!(" WHERE id IN ({marks})"), &params, |doc| {
                docs.insert((source.kind, doc.id.clone()), doc);
                Ok(())
            })?;
        }
    }
    Ok(changes
        .into_iter()
        .map(|(seq, kind, id, namespace)| Change {
            doc: docs.get(&(kind, id.clone())).cloned(),
            seq,
            kind,
            id,
            namespace,
        })
        .collect())
}

/// Record ids per statement when reading the documents of logged changes.
const DOCS_PER_STATEMENT: usize = 200;

/// Reads one search document from a row of its kind's `Searchable::sql`.
type DocFromRow = fn(Conn<'_>, &Row<'_>) -> Result<SearchDoc, StoreError>;

/// Where one searchable kind's documents come from: declared once, in the
/// layer file that stores the kind, and listed in `SEARCHABLE`.
pub(super) struct Searchable {
    pub(super) kind: RecordKind,
    /// `SELECT ... FROM {table}`: the columns `doc` reads (always with `id`
    /// and `namespace`, which narrow it).
    pub(super) sql: &'static str,
    pub(super) doc: DocFromRow,
}

/// Every kind that has search documents, in the order a rebuild scans them.
/// Relations and reminders have none: their changes only invalidate.
const SEARCHABLE: [&Searchable; 5] = [
    &episodic::SEARCH,
    &semantic::SEARCH,
    &graph::SEARCH,
    &procedural::SEARCH,
    &prospective::SEARCH,
];

/// The matcher a store opens with: every word of the query is in the text
/// (case aside).
fn every_word(query: &str, doc: &SearchDoc) -> bool {
    let text = doc.text.to_lowercase();
    query
        .split_whitespace()
        .all(|w| text.contains(&w.to_lowercase()))
}

impl Searchable {
    /// Calls `f` with the document of each row that `filter` (` WHERE ...`,
    /// its `?`s bound to `params`) selects.
    fn each(
        &self,
        conn: Conn<'_>,
        filter: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(SearchDoc) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let sql = format!("{}{filter}", self.sql);
        conn.each(&sql, params, |r| f((self.doc)(conn, r)?))
    }

    /// The current search document of record `id`, or `None` if it no longer
    /// exists.
    pub(super) fn by_id(&self, conn: Conn<'_>, id: &str) -> Result<Option<SearchDoc>, StoreError> {
        let mut doc = None;
        self.each(conn, " WHERE id = ?1", &args![id], |d| {
            doc = Some(d);
            Ok(())
        })?;
        Ok(doc)
    }
}

/// The search document of a text record (event, fact) from a row of `id,
/// namespace, content, tags, weight, time, superseded_by`.
fn text_doc(kind: RecordKind, r: &Row<'_>) -> Result<SearchDoc, StoreError> {
    Ok(SearchDoc {
        kind,
        id: r.get(0)?,
        namespace: r.get(1)?,
        text: r.get(2)?,
        tags: table::json(r, 3)?,
        weight: r.get(4)?,
        time: r.get(5)?,
        superseded: r.get::<Option<String>>(6)?.is_some(),
    })
}

fn open_connection(
    path: &Path,
    durability: Durability,
    read_only: bool,
) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    use rusqlite::config::DbConfig;
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    // The writer's connection, lent to reads, runs their statements as well
    // as the writes'.
    let statements = if read_only { 1 } else { 2 } * STATEMENT_CACHE_CAPACITY;
    conn.set_prepared_statement_cache_capacity(statements);
    // Plans that do not depend on bound values. Without this, planning `col =
    // ?` marks the parameter as plan-relevant, and the statement cache's
    // `sqlite3_clear_bindings` then expires the statement: every cached
    // statement was parsed and planned again on every use.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
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
        // Negative: KiB rather than pages.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::model::Relation;

    type Docs = BTreeMap<(&'static str, String), Option<SearchDoc>>;

    /// A cached statement is planned once: run again with other values it is
    /// not parsed and planned anew (see `open_connection`).
    #[test]
    fn cached_statements_are_not_prepared_again() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("memory.db");
        let mut conn = open_connection(&path, Durability::Full, false)?;
        migrations::run(&mut conn)?;
        let sql =
            "SELECT content FROM observations WHERE entity_id = ?1 ORDER BY position LIMIT ?2";
        for (id, limit) in [("a", 5), ("b", 7), ("c", 1)] {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows: Vec<String> = stmt
                .query_map(rusqlite::params![id, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            assert!(rows.is_empty());
            let reprepared = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(
                reprepared, 0,
                "run with {id:?} prepared the statement again"
            );
        }
        Ok(())
    }

    /// The last document of each record in `changes`.
    fn last_docs(changes: &[Change]) -> Docs {
        let key = |c: &Change| (c.kind.as_str(), c.id.clone());
        changes.iter().map(|c| (key(c), c.doc.clone())).collect()
    }

    fn text(content: &str, tags: &[&str]) -> (String, Vec<String>) {
        (content.into(), tags.iter().map(|t| t.to_string()).collect())
    }

    /// A write of every kind the store logs.
    async fn write_everything(store: &Store) -> Result<(), StoreError> {
        let event = |(content, tags)| NewEvent {
            content,
            tags,
            importance: 0.5,
            occurred_at: None,
            metadata: Default::default(),
        };
        let fact = |(content, tags)| NewFact {
            content,
            tags,
            confidence: 0.7,
            source: None,
            valid_from: None,
            metadata: Default::default(),
        };
        let events = [text("quokka hops", &["a"]), text("wombat digs", &[])];
        let ev = store
            .insert_events("ns", "s", events.map(event).into())
            .await?;
        let patch = EventPatch {
            tags: Some(vec!["b".into()]),
            ..Default::default()
        };
        store.events().update("ns", &ev[0].id, patch).await?;
        store
            .delete_events("ns", vec![ev[1].id.clone(), "nope".into()])
            .await?;
        let f = store
            .insert_facts("ns", "s", vec![fact(text("sky is blue", &["c"]))])
            .await?;
        store
            .supersede_fact("ns", "s", &f[0].id, fact(text("sky is grey", &[])))
            .await?;
        store.reinforce_fact("ns", &f[0].id, 0.5).await?;
        let entity = |name: &str| NewEntity {
            name: name.into(),
            entity_type: "Person".into(),
            observations: vec![format!("{name} exists")],
        };
        store
            .create_entities("ns", ["a", "b", "c"].map(entity).into())
            .await?;
        let knows = Relation {
            from: "a".into(),
            to: "b".into(),
            relation_type: "knows".into(),
        };
        store.create_relations("ns", vec![knows], true).await?;
        store
            .add_observations("ns", vec![("a".into(), vec!["a sings".into()])])
            .await?;
        store.rename_entity("ns", "b", "b2").await?;
        store.merge_entities("ns", "a", vec!["c".into()]).await?;
        store
            .delete_entities("ns", vec!["b2".into(), "nobody".into()])
            .await?;
        write_plans(store).await
    }

    /// Writes of procedures (versions, runs) and tasks (a goal closed with its
    /// sub-task, the sub-task deleted).
    async fn write_plans(store: &Store) -> Result<(), StoreError> {
        let procedure = |name: &str| NewProcedure {
            name: name.into(),
            goal: format!("{name} the service"),
            steps: vec!["stop it".into(), "start it".into()],
            preconditions: vec![],
            tags: vec!["ops".into()],
            metadata: Default::default(),
        };
        let p = store
            .insert_procedure("ns", "s", procedure("restart"))
            .await?;
        let patch = ProcedurePatch {
            goal: Some("restart it gently".into()),
            ..Default::default()
        };
        store.update_procedure("ns", "s", &p.id, patch).await?;
        let run = NewExecution {
            outcome: crate::model::Outcome::Partial,
            duration_ms: Some(5),
            notes: None,
        };
        store.record_execution("ns", "s", "restart", run).await?;
        let gone = store.insert_procedure("ns", "s", procedure("drop")).await?;
        store.delete_procedures("ns", vec![gone.id]).await?;
        let task = |title: &str, parent: Option<String>| NewTask {
            title: title.into(),
            notes: Some("soon".into()),
            priority: crate::model::Priority::High,
            due_at: Some(1_000),
            tags: vec!["t".into()],
            parent_id: parent,
            metadata: Default::default(),
        };
        let goal = store.insert_task("ns", "s", task("goal", None)).await?;
        let sub = store
            .insert_task("ns", "s", task("sub", Some(goal.id.clone())))
            .await?;
        store
            .close_task("ns", &goal.id, crate::model::TaskStatus::Done, true, None)
            .await?;
        store.delete_prospective("ns", vec![sub.id]).await?;
        Ok(())
    }

    /// What derived views hear at each write is what a replay of the change log
    /// reads, and what a rebuild scans: the index built either way is the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_changes_replay_and_rebuild_agree() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.durability = Durability::Normal;
        let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
        let record = seen.clone();
        let listener: ChangeListener = Arc::new(move |c| record.lock().unwrap().extend(c));
        let store = Store::open(&config, listener).unwrap();
        write_everything(&store).await.unwrap();

        let live = seen.lock().unwrap().clone();
        let replay = store.changes_since(0).await.unwrap();
        let entries = |cs: &[Change]| -> Vec<_> {
            cs.iter()
                .map(|c| (c.seq, c.kind, c.id.clone(), c.namespace.clone()))
                .collect()
        };
        assert_eq!(
            entries(&live),
            entries(&replay),
            "the log is not what was heard"
        );
        assert_eq!(last_docs(&live), last_docs(&replay));

        let scanned: Arc<Mutex<Vec<SearchDoc>>> = Arc::default();
        let sink = scanned.clone();
        let scan = move |docs: Vec<SearchDoc>| {
            sink.lock().unwrap().extend(docs);
            Ok(())
        };
        store.scan_search_docs(scan).await.unwrap();
        let rebuilt: Docs = scanned
            .lock()
            .unwrap()
            .iter()
            .map(|d| ((d.kind.as_str(), d.id.clone()), Some(d.clone())))
            .collect();
        let mut current = last_docs(&live);
        current.retain(|_, doc| doc.is_some());
        assert_eq!(current, rebuilt);
        let left = "2 facts, 1 event, 1 entity (c merged into a, b2 deleted), 1 procedure \
                    and 1 task remain";
        assert_eq!(current.len(), 6, "{left}: {current:?}");
        store.shutdown();
    }
}
