//! The single writer: one thread writes, on the only read-write connection.
//!
//! Group commit: the thread takes the first queued write, drains every other
//! write waiting at that moment (up to `max_group`), runs each inside its own
//! savepoint of one transaction, commits once (one fsync), tells the change
//! listener, and only then answers each caller. A write whose closure fails is
//! rolled back to its savepoint and answered with its error; the others in the
//! batch still commit.
//!
//! On some errors (SQLITE_FULL, IOERR, NOMEM, BUSY) sqlite rolls back the whole
//! transaction, not just the failing statement. The writer checks for that after
//! every write: the writes that ran before in that transaction are answered
//! "failed" (their work is gone), and the writes after it start a new
//! transaction. So no caller is told "failed" for a durable write or "ok" for a
//! lost one, and the change listener hears of exactly the committed changes.
//!
//! `Store::atomically` runs several store calls in one transaction of their own
//! (a scope): all of them commit, or none.
//!
//! The connection is lent, read-only, to bounded reads while the writer has
//! nothing to do ([`WriterConn::lend`]; sqlite only), and the callers of a
//! group commit are answered once the writer has let go of it. sqlite drops a
//! connection's whole page cache when another connection has changed the
//! database, so a pooled reader reads every page again after each write; the
//! writer's own cache stays valid. A single client that alternates writes and
//! reads (an agent host over stdio) then reads warm pages, as a server with
//! one connection would.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::pg::Reconnect;
use super::sql::{Conn, Database, ReadsOnly, args};
use crate::model::{Change, RecordKind, SearchDoc, now_micros};

/// How many writes may wait for the writer before callers are held back.
const WRITE_QUEUE_CAPACITY: usize = 4096;

/// Called on the writer thread with every committed batch's changes, before the
/// batch's callers are answered. Must be quick and must not block on the store.
pub type ChangeListener = Arc<dyn Fn(Vec<Change>) + Send + Sync>;

/// The open transaction a write closure runs in.
pub(crate) struct WriteTxn<'c> {
    pub(crate) conn: Conn<'c>,
    pub(crate) now: i64,
    changes: Vec<Change>,
    /// Whether each of `changes` is a delete.
    deletes: Vec<bool>,
}

impl WriteTxn<'_> {
    /// Records a change in the log (same transaction) and queues it for derived
    /// views. `doc` is the record's new search document, `None` for a delete.
    pub(crate) fn log_change(
        &mut self,
        namespace: &str,
        kind: RecordKind,
        id: &str,
        doc: Option<SearchDoc>,
    ) -> Result<(), StoreError> {
        let op = if doc.is_some() { "upsert" } else { "delete" };
        self.log(namespace, kind, id, op, doc)
    }

    /// Records that a record of a kind without search documents was stored
    /// or changed.
    pub(crate) fn log_write(
        &mut self,
        namespace: &str,
        kind: RecordKind,
        id: &str,
    ) -> Result<(), StoreError> {
        debug_assert!(!kind.searchable(), "{kind:?} changes carry their document");
        self.log(namespace, kind, id, "upsert", None)
    }

    /// The changes this write has logged so far, with whether each was a delete.
    pub(crate) fn logged(&self) -> impl Iterator<Item = (&Change, bool)> {
        self.changes.iter().zip(&self.deletes).map(|(c, d)| (c, *d))
    }

    fn log(
        &mut self,
        namespace: &str,
        kind: RecordKind,
        id: &str,
        op: &str,
        doc: Option<SearchDoc>,
    ) -> Result<(), StoreError> {
        let seq = self.conn.insert_returning(
            "INSERT INTO changes (namespace, kind, record_id, op, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            "seq",
            &args![namespace, kind.as_str(), id, op, self.now],
        )?;
        self.deletes.push(op == "delete");
        self.changes.push(Change {
            seq,
            kind,
            id: id.to_string(),
            namespace: namespace.to_string(),
            doc,
        });
        Ok(())
    }
}

/// Answers a write's caller: `Ok` once its transaction committed (the write's
/// own result then goes back), `Err` with why it did not.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A queued write. Called with `None` when its transaction could not begin: it
/// then only hands back its completion, which is answered with the error.
/// Returns whether the write succeeded (`Err`: its message) and its completion.
type Job = Box<dyn FnOnce(Option<&mut WriteTxn<'_>>) -> (Result<(), String>, Completion) + Send>;

enum Msg {
    Job(Job),
    /// Commit what is queued, then stop.
    Stop,
    /// Run the writes sent on this channel in one transaction of their own,
    /// until `Commit` (or `Stop`, or the channel closing: roll back).
    Scope(mpsc::Receiver<Msg>),
    /// Ends a scope: commit, and say whether it worked.
    Commit(oneshot::Sender<Result<(), String>>),
}

/// The writer's connection, which the writer thread holds for each group
/// commit or scope and lends to reads in between.
pub(crate) struct WriterConn {
    db: Mutex<Database>,
    /// Set while the writer waits for the connection: no read borrows it then,
    /// so reads cannot keep writes waiting for more than the one in progress.
    wanted: AtomicBool,
}

impl WriterConn {
    pub(super) fn new(db: Database) -> Arc<Self> {
        Arc::new(WriterConn {
            db: Mutex::new(db),
            wanted: AtomicBool::new(false),
        })
    }

    /// The connection for the writer thread, once the read borrowing it (if
    /// any) is done. A read that panicked cannot have left it changed.
    fn hold(&self) -> MutexGuard<'_, Database> {
        self.wanted.store(true, Ordering::Release);
        let db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        self.wanted.store(false, Ordering::Release);
        db
    }

    /// The connection, for one bounded read on this thread, if the writer is
    /// not using it, waiting for it, or in the middle of a transaction (a
    /// scope's writes or a failed rollback must not be seen). Never waits.
    pub(super) fn lend(&self) -> Option<Lent<'_>> {
        if self.wanted.load(Ordering::Acquire) {
            return None;
        }
        let db = match self.db.try_lock() {
            Ok(db) => db,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if db.conn().in_transaction() {
            return None;
        }
        Some(Lent {
            db,
            _reads_only: ReadsOnly::new(),
        })
    }
}

/// The writer's connection lent to one read: until it is given back, a
/// statement that would write is refused ([`ReadsOnly`]), so a read cannot
/// write past the change log, the change listener and group commit.
pub(super) struct Lent<'a> {
    db: MutexGuard<'a, Database>,
    _reads_only: ReadsOnly,
}

impl Lent<'_> {
    pub(super) fn conn(&self) -> Conn<'_> {
        self.db.conn()
    }
}

#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    /// `None` in a scope's handle, which owns no thread.
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl WriterHandle {
    pub(super) fn start(
        db: Arc<WriterConn>,
        listener: ChangeListener,
        max_group: usize,
    ) -> Result<Self, StoreError> {
        Self::start_with(db, listener, max_group, None)
    }

    /// [`WriterHandle::start`] on a connection that `reconnect` replaces when
    /// it is lost (PostgreSQL).
    pub(super) fn start_with(
        db: Arc<WriterConn>,
        listener: ChangeListener,
        max_group: usize,
        reconnect: Option<Reconnect>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("engram-writer".into())
            .spawn(move || writer_loop(db, rx, listener, max_group.max(1), reconnect))
            .map_err(|e| StoreError::CommitFailed(format!("cannot start writer: {e}")))?;
        Ok(WriterHandle {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Runs `f` inside the next group commit and answers once it is durable.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |txn| {
            // `None`: the write never ran (no transaction could be had for it).
            let result = txn.map(f);
            let ran = match &result {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the write did not run".to_string()),
            };
            let complete: Completion = Box::new(move |commit| {
                let outcome = match (commit, result) {
                    // A write that failed says why, whatever became of the rest.
                    (_, Some(Err(e))) => Err(e),
                    (Ok(()), Some(ok)) => ok,
                    (Err(e), Some(Ok(_))) => Err(StoreError::CommitFailed(e)),
                    // Never ran: say why the transaction could not be had.
                    (Err(e), None) => Err(StoreError::CommitFailed(e)),
                    (Ok(()), None) => Err(StoreError::Closed),
                };
                let _ = reply.send(outcome);
            });
            (ran, complete)
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits everything queued so far, then stops the thread and waits for it.
    pub(crate) fn shutdown(&self) {
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            // A full queue can only drain: the thread is alive until it reads Stop.
            let tx = self.tx.clone();
            let _ = std::thread::spawn(move || tx.blocking_send(Msg::Stop)).join();
            let _ = handle.join();
        }
    }
}

impl super::Store {
    /// Runs `body` with a store whose writes all go into one transaction of
    /// their own: committed together when `body` returns `Ok`, rolled back
    /// together when it returns `Err` (or panics, or is dropped). All or nothing,
    /// for work that spans several store calls (an import).
    ///
    /// Inside, each write answers as soon as it has run (so `body` can go on
    /// from its result), but nothing is durable, visible to readers or handed to
    /// the change listener before the commit. Other writes wait meanwhile, so
    /// `body` must not wait on anything that writes through another handle.
    pub async fn atomically<T, E, F, Fut>(&self, body: F) -> Result<T, E>
    where
        F: FnOnce(super::Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: From<StoreError>,
    {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        self.writer
            .tx
            .send(Msg::Scope(rx))
            .await
            .map_err(|_| StoreError::Closed)?;
        let scoped = super::Store {
            writer: WriterHandle {
                tx: tx.clone(),
                thread: Arc::new(Mutex::new(None)),
            },
            readers: self.readers.clone(),
            matcher: self.matcher.clone(),
            follower: self.follower.clone(),
        };
        match body(scoped).await {
            Ok(value) => {
                let (reply, answer) = oneshot::channel();
                tx.send(Msg::Commit(reply))
                    .await
                    .map_err(|_| StoreError::Closed)?;
                answer
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(StoreError::CommitFailed)?;
                Ok(value)
            }
            Err(e) => {
                let _ = tx.send(Msg::Stop).await;
                Err(e)
            }
        }
    }
}

fn writer_loop(
    shared: Arc<WriterConn>,
    mut rx: mpsc::Receiver<Msg>,
    listener: ChangeListener,
    max_group: usize,
    mut reconnect: Option<Reconnect>,
) {
    let mut next: Option<Msg> = None;
    loop {
        let Some(first) = next.take().or_else(|| rx.blocking_recv()) else {
            break;
        };
        let mut db = shared.hold();
        let mut jobs = Vec::new();
        let mut stopping = false;
        match first {
            Msg::Job(j) => jobs.push(j),
            Msg::Stop => break,
            Msg::Scope(scope) => {
                if let Some(r) = reconnect.as_mut() {
                    // A scope that finds no connection fails at its begin.
                    let _ = r.ready(&mut db);
                }
                run_scope(db.conn(), scope, &listener);
                continue;
            }
            Msg::Commit(reply) => {
                let _ = reply.send(Err("no write scope is open".into()));
                continue;
            }
        }
        while jobs.len() < max_group {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                // A scope runs after the writes queued before it.
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let settled = match reconnect.as_mut().map(|r| r.ready(&mut db)) {
            Some(Err(why)) => {
                for job in jobs {
                    let (_, complete) = job(None);
                    complete(Err(why.clone()));
                }
                None
            }
            _ => run_group(db.conn(), jobs),
        };
        // The callers are answered once the connection is free, so that the
        // reads they go on to make can borrow it.
        drop(db);
        if let Some(settled) = settled {
            settled.answer(&listener);
        }
        if stopping {
            break;
        }
    }
    tracing::debug!("writer stopped");
}

/// The writes of one transaction so far.
struct Txn {
    now: i64,
    /// Callers of writes that succeeded, answered at commit.
    completions: Vec<Completion>,
    changes: Vec<Change>,
}

impl Txn {
    fn begin(conn: Conn<'_>) -> Result<Txn, String> {
        if conn.in_transaction() {
            // Left open by a failure that could not even roll back: nothing in
            // it was acknowledged.
            let _ = conn.end(false);
        }
        conn.begin_write().map_err(|e| {
            tracing::error!(error = %e, "cannot begin write transaction");
            e.to_string()
        })?;
        Ok(Txn {
            now: now_micros(),
            completions: Vec::new(),
            changes: Vec::new(),
        })
    }

    /// The transaction is gone (rolled back): every write in it is told so.
    fn lost(self, why: &str) {
        fail(self.completions, &lost_message(why));
    }

    /// Commits; the callers are answered by [`Settled::answer`].
    fn commit(self, conn: Conn<'_>) -> Settled {
        let started = std::time::Instant::now();
        let committed = if self.changes.is_empty() {
            conn.end(true)
        } else {
            conn.announce().and_then(|()| conn.end(true))
        };
        crate::metrics::metrics().group_commit(self.completions.len(), started.elapsed());
        let outcome = match committed {
            Ok(()) => Ok(self.changes),
            Err(e) => {
                tracing::error!(error = %e, "group commit failed");
                if conn.in_transaction() {
                    let _ = conn.end(false);
                }
                Err(lost_message(&format!("the commit failed ({e})")))
            }
        };
        Settled {
            outcome,
            completions: self.completions,
        }
    }
}

/// What a write in a lost transaction is told.
fn lost_message(why: &str) -> String {
    format!(
        "{why}; this write was in the same transaction and was rolled back with it \
         (nothing of it was saved): retry it"
    )
}

/// A transaction's end, for its callers.
struct Settled {
    /// The committed changes, or why every write in it was lost.
    outcome: Result<Vec<Change>, String>,
    completions: Vec<Completion>,
}

impl Settled {
    /// Hands the committed changes to the listener, then answers each caller.
    fn answer(self, listener: &ChangeListener) {
        match self.outcome {
            Ok(changes) => {
                if !changes.is_empty() {
                    listener(changes);
                }
                for complete in self.completions {
                    complete(Ok(()));
                }
            }
            Err(msg) => fail(self.completions, &msg),
        }
    }
}

/// Answers each of these callers with the same failure.
fn fail(completions: Vec<Completion>, msg: &str) {
    for complete in completions {
        complete(Err(msg.to_string()));
    }
}

/// What became of one write run in an open transaction.
enum Ran {
    /// It succeeded; its caller is answered at commit (or now, in a scope).
    Done(Completion),
    /// It failed (and its caller has been answered), the transaction goes on.
    Failed,
    /// sqlite rolled back the whole transaction (SQLITE_FULL, IOERR, NOMEM,
    /// BUSY, ...), or it could not be brought back to a known state: every
    /// earlier write of the transaction is lost. The reason.
    TxnLost(String),
}

/// Runs one write in its own savepoint of `txn`. Its changes join `txn`'s only
/// if it succeeded.
fn run_job(conn: Conn<'_>, txn: &mut Txn, job: Job) -> Ran {
    if let Err(e) = conn.batch("SAVEPOINT job") {
        let msg = e.to_string();
        if conn.in_transaction() {
            let _ = conn.end(false);
        }
        let (_, complete) = job(None);
        complete(Err(msg.clone()));
        return Ran::TxnLost(format!("a savepoint could not be opened ({msg})"));
    }
    let mut w = WriteTxn {
        conn,
        now: txn.now,
        changes: Vec::new(),
        deletes: Vec::new(),
    };
    let ran = catch_unwind(AssertUnwindSafe(|| job(Some(&mut w))));
    let changes = std::mem::take(&mut w.changes);
    if !conn.in_transaction() {
        // The savepoint and everything before it in this transaction are gone.
        let why = match &ran {
            Ok((Err(e), _)) => e.clone(),
            Ok((Ok(()), _)) => "sqlite ended the transaction".to_string(),
            Err(p) => panic_text(p),
        };
        tracing::error!(error = %why, "sqlite rolled back the whole write transaction");
        let why = format!(
            "a write in the same transaction failed with `{why}` and sqlite rolled back the whole transaction"
        );
        if let Ok((ran, complete)) = ran {
            // A failed write gets its own error; a successful one was lost.
            complete(match ran {
                Ok(()) => Err(format!(
                    "{why}; this write was rolled back with it: retry it"
                )),
                Err(_) => Ok(()),
            });
        }
        return Ran::TxnLost(why);
    }
    match ran {
        Ok((Ok(()), complete)) => match conn.batch("RELEASE job") {
            Ok(()) => {
                txn.changes.extend(changes);
                Ran::Done(complete)
            }
            Err(e) => {
                let msg = format!("its savepoint could not be released ({e})");
                let lost = undo_job(conn);
                complete(Err(msg.clone()));
                lost.map_or(Ran::Failed, Ran::TxnLost)
            }
        },
        Ok((Err(_), complete)) => {
            let lost = undo_job(conn);
            // Its own error goes back; nothing of it stays.
            complete(Ok(()));
            lost.map_or(Ran::Failed, Ran::TxnLost)
        }
        Err(p) => {
            // The job panicked: its reply channel was dropped with it, so its
            // caller sees the store as failed.
            tracing::error!(error = %panic_text(&p), "write job panicked");
            undo_job(conn).map_or(Ran::Failed, Ran::TxnLost)
        }
    }
}

/// Rolls back a failed write's savepoint. `Some(reason)` when that did not
/// work: the transaction may hold part of the write, so it must not commit.
fn undo_job(conn: Conn<'_>) -> Option<String> {
    match conn.batch("ROLLBACK TO job; RELEASE job") {
        Ok(()) => None,
        Err(_) if !conn.in_transaction() => {
            Some("sqlite rolled back the whole transaction".to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot roll back a failed write; rolling back its transaction");
            let _ = conn.end(false);
            Some(format!("a failed write could not be undone ({e})"))
        }
    }
}

/// Runs a batch of writes in one transaction and commits it; its callers are
/// answered from what it returns (`None`: no transaction was left to commit,
/// and every caller has been answered).
fn run_group(conn: Conn<'_>, jobs: Vec<Job>) -> Option<Settled> {
    let mut txn: Option<Txn> = None;
    // Once a transaction cannot even begin (after the busy timeout), the rest
    // of the batch fails with it rather than waiting that long again, each.
    let mut cannot_begin: Option<String> = None;
    for job in jobs {
        if let Some(msg) = &cannot_begin {
            let (_, complete) = job(None);
            complete(Err(msg.clone()));
            continue;
        }
        let open = match txn.as_mut() {
            Some(t) => t,
            None => match Txn::begin(conn) {
                Ok(t) => txn.insert(t),
                Err(msg) => {
                    let (_, complete) = job(None);
                    complete(Err(msg.clone()));
                    cannot_begin = Some(msg);
                    continue;
                }
            },
        };
        match run_job(conn, open, job) {
            Ran::Done(complete) => open.completions.push(complete),
            Ran::Failed => {}
            // The writes after it start a new transaction.
            Ran::TxnLost(why) => {
                if let Some(t) = txn.take() {
                    t.lost(&why);
                }
            }
        }
    }
    txn.map(|t| t.commit(conn))
}

/// One transaction for every write sent on `scope`, until it commits or ends.
fn run_scope(conn: Conn<'_>, mut scope: mpsc::Receiver<Msg>, listener: &ChangeListener) {
    let (mut txn, mut failed) = match Txn::begin(conn) {
        Ok(t) => (Some(t), None),
        Err(msg) => (
            None,
            Some(format!("the transaction could not begin ({msg})")),
        ),
    };
    loop {
        match scope.blocking_recv() {
            Some(Msg::Job(job)) => match (txn.as_mut(), &failed) {
                (Some(open), None) => match run_job(conn, open, job) {
                    // Answered now: the scope's body goes on from it.
                    Ran::Done(complete) => complete(Ok(())),
                    Ran::Failed => {}
                    Ran::TxnLost(why) => {
                        txn = None;
                        failed = Some(why);
                    }
                },
                (_, why) => {
                    let (_, complete) = job(None);
                    complete(Err(why.clone().unwrap_or_default()));
                }
            },
            Some(Msg::Commit(reply)) => {
                let outcome = match (txn.take(), failed.take()) {
                    (Some(t), None) => match conn.announce().and_then(|()| conn.end(true)) {
                        Ok(()) => {
                            if !t.changes.is_empty() {
                                listener(t.changes);
                            }
                            Ok(())
                        }
                        Err(e) => {
                            if conn.in_transaction() {
                                let _ = conn.end(false);
                            }
                            Err(format!("the commit failed ({e}); nothing was saved"))
                        }
                    },
                    (_, why) => Err(format!(
                        "{}; nothing was saved",
                        why.unwrap_or_else(|| "the transaction was lost".into())
                    )),
                };
                let _ = reply.send(outcome);
                return;
            }
            Some(Msg::Scope(_)) => {
                // Scopes do not nest: the inner one's writes find it closed.
            }
            Some(Msg::Stop) | None => {
                if txn.is_some() && conn.in_transaction() {
                    let _ = conn.end(false);
                }
                return;
            }
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "write panicked".into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::super::{
        DB_FILE_NAME, NewEvent, Store, StoreError, migrations, open_connection, reader,
    };
    use super::{ChangeListener, WriterConn, WriterHandle};
    use crate::config::Durability;
    use crate::model::{Change, RecordKind};
    use crate::search::{Matcher, SearchIndex, SearchQuery};

    /// A store whose writer connection may grow the database by only `pages`
    /// pages (`PRAGMA max_page_count`): a real SQLITE_FULL, raised in the middle
    /// of a batch, on which sqlite rolls back the whole transaction. Every change
    /// the writer hands on is recorded, and fed to a real search index.
    struct Cramped {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        store: Store,
        /// The writer's connection, lent to reads.
        conn: Arc<WriterConn>,
        search: SearchIndex,
        seen: Arc<Mutex<Vec<Change>>>,
    }

    fn cramped(pages: i64) -> Cramped {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        let mut conn = open_connection(&path, Durability::Normal, false).unwrap();
        migrations::run(&mut conn).unwrap();
        let now: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", now + pages)
            .unwrap();
        let (search, _) = SearchIndex::open(
            &dir.path().join("index"),
            3_600_000,
            1_000_000,
            Arc::new(|_| {}),
        )
        .unwrap();
        let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
        let (record, index) = (seen.clone(), search.change_listener());
        let listener: ChangeListener = Arc::new(move |changes: Vec<Change>| {
            record.lock().unwrap().extend(changes.iter().cloned());
            index(changes);
        });
        let db = WriterConn::new(super::super::sql::Database::Sqlite(conn));
        let writer = WriterHandle::start(db.clone(), listener, 64).unwrap();
        let readers = Arc::new(reader::ReadPool::new(path.clone(), 4, db.clone()));
        Cramped {
            _dir: dir,
            path,
            store: Store {
                writer,
                readers,
                matcher: Arc::new(super::super::every_word),
                follower: None,
            },
            conn: db,
            search,
            seen,
        }
    }

    impl Cramped {
        /// The ids of the changes the listener was handed (each once).
        fn seen_ids(&self) -> BTreeSet<String> {
            let seen = self.seen.lock().unwrap();
            let ids: BTreeSet<String> = seen.iter().map(|ch| ch.id.clone()).collect();
            assert_eq!(seen.len(), ids.len(), "a change was handed on twice");
            ids
        }

        /// The ids of the events a search for `word` finds.
        async fn found_ids(&self, word: &str) -> BTreeSet<String> {
            let q = SearchQuery::new(
                "ns",
                vec![RecordKind::Event],
                Matcher::words(word).unwrap(),
                10_000,
            );
            let hits = self.search.search(&q).unwrap().hits;
            hits.into_iter().map(|h| h.id).collect()
        }

        fn shutdown(&self) {
            self.store.shutdown();
            self.search.shutdown();
        }
    }

    fn event(content: String) -> NewEvent {
        NewEvent {
            content,
            tags: Vec::new(),
            importance: 0.5,
            occurred_at: None,
            metadata: Default::default(),
        }
    }

    fn stored_ids(path: &std::path::Path) -> BTreeSet<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The change log's (seq, record id) pairs.
    fn logged_changes(path: &std::path::Path) -> BTreeSet<(i64, String)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT seq, record_id FROM changes").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// 32 writers of 25 events each, small and big mixed: (the ids of the
    /// acknowledged writes, the errors of the refused ones).
    async fn write_concurrently(store: &Store) -> (BTreeSet<String>, Vec<String>) {
        let mut tasks = Vec::new();
        for w in 0..32usize {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..25usize {
                    // Small writes fit in pages already there; big ones need new
                    // pages and hit the ceiling.
                    let size = [100, 2500, 400, 6000][(w + i) % 4];
                    let content = format!("quokka w{w} i{i} {}", "x".repeat(size));
                    let r = store.insert_events("ns", "s", vec![event(content)]).await;
                    out.push(r.map(|mut e| e.remove(0).id).map_err(|e| e.to_string()));
                }
                out
            }));
        }
        let (mut acked, mut refused) = (BTreeSet::new(), Vec::new());
        for t in tasks {
            for r in t.await.unwrap() {
                match r {
                    Ok(id) => {
                        acked.insert(id);
                    }
                    Err(e) => refused.push(e),
                }
            }
        }
        (acked, refused)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_database_full_in_mid_batch_answers_every_write_truthfully() {
        let c = cramped(24);
        let (acked, refused) = write_concurrently(&c.store).await;
        // No caller was told "failed" for a durable write, or "ok" for a lost one.
        let stored = stored_ids(&c.path);
        let durable_but_refused: Vec<_> = stored.difference(&acked).collect();
        let acked_but_lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            durable_but_refused.is_empty() && acked_but_lost.is_empty(),
            "{} writes refused but stored, {} acknowledged but lost ({} acked, {} refused)",
            durable_but_refused.len(),
            acked_but_lost.len(),
            acked.len(),
            refused.len()
        );

        let mut reasons: Vec<&String> = refused.iter().collect();
        reasons.dedup();
        assert!(
            refused.iter().any(|e| e.contains("full")),
            "the database never filled up: {:?}",
            &reasons[..reasons.len().min(5)]
        );
        assert!(!acked.is_empty(), "nothing was written at all");
        // Writes that ran before the failing one in its transaction were lost
        // with it, and said so.
        assert!(
            refused.iter().any(|e| e.contains("rolled back")),
            "no transaction was rolled back under other writes: {:?}",
            &reasons[..reasons.len().min(5)]
        );

        // The change listener got exactly the committed changes, once each, and
        // every acknowledged write is searchable.
        assert_eq!(
            c.seen_ids(),
            acked,
            "the listener saw other changes than committed"
        );
        // Each with the position the change log gave it, rolled-back
        // transactions between them notwithstanding.
        let handed_on: BTreeSet<(i64, String)> = c
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|ch| (ch.seq, ch.id.clone()))
            .collect();
        assert_eq!(
            handed_on,
            logged_changes(&c.path),
            "a change was handed on with another seq than the log's"
        );
        assert_eq!(
            c.found_ids("quokka").await,
            acked,
            "search does not find exactly the acknowledged writes"
        );
        c.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scope_commits_all_its_writes_or_none() {
        let c = cramped(10_000);
        // Failed: the first write is rolled back with the scope.
        let failed: Result<(), StoreError> = c
            .store
            .atomically(|store| async move {
                store
                    .insert_events("ns", "s", vec![event("quokka gone".into())])
                    .await?;
                Err(StoreError::Conflict("the body gave up".into()))
            })
            .await;
        assert!(failed.is_err());
        assert!(
            stored_ids(&c.path).is_empty(),
            "a failed scope left a write"
        );

        // A write queued while a scope runs waits for it, then commits alone.
        let (outside, ids) = tokio::join!(
            c.store
                .insert_events("ns", "s", vec![event("quokka outside".into())]),
            c.store.atomically(|store| async move {
                let mut ids = Vec::new();
                for i in 0..3 {
                    let e = store
                        .insert_events("ns", "s", vec![event(format!("quokka inside {i}"))])
                        .await?;
                    ids.push(e[0].id.clone());
                }
                Ok::<_, StoreError>(ids)
            })
        );
        let mut expected: BTreeSet<String> = ids.unwrap().into_iter().collect();
        expected.insert(outside.unwrap()[0].id.clone());
        assert_eq!(stored_ids(&c.path), expected);
        assert_eq!(
            c.seen_ids(),
            expected,
            "the listener saw exactly the committed writes"
        );
        c.shutdown();
    }

    /// Reads borrow the writer's connection only while it is idle and out of
    /// a transaction: what a scope wrote and has not committed is never read.
    /// A borrowed connection cannot write, and can again once given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_borrow_the_writer_connection_only_between_its_transactions() {
        let c = cramped(10_000);
        let before = c
            .store
            .insert_events("ns", "s", vec![event("quokka before".into())])
            .await
            .unwrap();
        // The writer let go of its connection before it answered.
        let lent = c.conn.lend().expect("the idle writer lends nothing");
        let sneak = "UPDATE events SET content = 'sneaked' WHERE 0 = 1";
        // Refused as a read-only connection refuses it.
        let read_only = |e: Option<StoreError>| {
            matches!(e, Some(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::ReadOnly)
        };
        let executed = lent.conn().execute(sneak, &[]).err();
        assert!(read_only(executed), "a lent connection wrote");
        assert!(
            read_only(lent.conn().batch(sneak).err()),
            "a lent connection wrote"
        );
        drop(lent);
        let read = |store: Store, id: String| async move {
            store.events().get_many("ns", vec![id]).await.unwrap().len()
        };
        assert_eq!(read(c.store.clone(), before[0].id.clone()).await, 1);

        let (conn, first) = (c.conn.clone(), before[0].id.clone());
        let written = c
            .store
            .atomically(|store| async move {
                let e = store
                    .insert_events("ns", "s", vec![event("quokka inside".into())])
                    .await?;
                let id = e[0].id.clone();
                assert!(conn.lend().is_none(), "a scope's connection was lent");
                assert_eq!(
                    read(store.clone(), id.clone()).await,
                    0,
                    "an uncommitted read"
                );
                assert_eq!(read(store, first).await, 1);
                Ok::<_, StoreError>(id)
            })
            .await
            .unwrap();
        assert_eq!(
            read(c.store.clone(), written).await,
            1,
            "the commit is read"
        );
        // Writes go on after the loans.
        c.store
            .insert_events("ns", "s", vec![event("quokka after".into())])
            .await
            .unwrap();

        // Loans leave the connection's prepared statements as they were
        // (sqlite's `PRAGMA query_only` would expire them all at each loan).
        let sql = "SELECT count(*) FROM events WHERE content = ?1";
        for word in ["a", "b", "c"] {
            let lent = c.conn.lend().expect("the idle writer lends nothing");
            let super::Conn::Sqlite(conn) = lent.conn() else {
                unreachable!("a sqlite store")
            };
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let n: i64 = stmt.query_row([word], |r| r.get(0)).unwrap();
            assert_eq!(n, 0);
            let again = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(again, 0, "a loan made the statement be prepared again");
        }

        // A transaction left open (a rollback that failed) is never lent.
        c.conn.hold().conn().batch("BEGIN").unwrap();
        assert!(c.conn.lend().is_none(), "an open transaction was lent");
        c.conn.hold().conn().batch("COMMIT").unwrap();
        assert!(c.conn.lend().is_some());
        c.shutdown();
    }
}
