//! The single writer: one thread owns the only read-write connection.
//!
//! Group commit: the thread takes the first queued write, drains every other
//! write waiting at that moment (up to `max_group`), runs each inside its own
//! savepoint of one transaction, commits once (one fsync), tells the change
//! listener, and only then answers each caller. A write whose closure fails is
//! rolled back to its savepoint and answered with its error; the others in the
//! batch still commit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::model::{Change, RecordKind, SearchDoc, now_micros};

/// How many writes may wait for the writer before callers are held back.
const WRITE_QUEUE_CAPACITY: usize = 4096;

/// Called on the writer thread with every committed batch's changes, before the
/// batch's callers are answered. Must be quick and must not block on the store.
pub type ChangeListener = Arc<dyn Fn(Vec<Change>) + Send + Sync>;

/// The open transaction a write closure runs in.
pub(crate) struct WriteTxn<'c> {
    pub(crate) conn: &'c Connection,
    pub(crate) now: i64,
    changes: Vec<Change>,
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
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO changes (namespace, kind, record_id, op, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(rusqlite::params![
            namespace,
            kind.as_str(),
            id,
            op,
            self.now
        ])?;
        self.changes.push(Change {
            seq: self.conn.last_insert_rowid(),
            kind,
            id: id.to_string(),
            namespace: namespace.to_string(),
            doc,
        });
        Ok(())
    }
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A queued write. Called with `None` when its transaction could not begin: it
/// then only hands back its completion, which is answered with the error.
type Job = Box<dyn FnOnce(Option<&mut WriteTxn<'_>>) -> (bool, Completion) + Send>;

enum Msg {
    Job(Job),
    Stop,
}

#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl WriterHandle {
    pub(super) fn start(
        conn: Connection,
        listener: ChangeListener,
        max_group: usize,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("engram-writer".into())
            .spawn(move || writer_loop(conn, rx, listener, max_group.max(1)))
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
            let result = match txn {
                Some(txn) => f(txn),
                None => Err(StoreError::Closed),
            };
            let ok = result.is_ok();
            let complete: Completion = Box::new(move |commit| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::CommitFailed(e)),
                };
                let _ = reply.send(outcome);
            });
            (ok, complete)
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

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    listener: ChangeListener,
    max_group: usize,
) {
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut jobs = Vec::new();
        match first {
            Msg::Job(j) => jobs.push(j),
            Msg::Stop => break,
        }
        while jobs.len() < max_group {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        run_group(&conn, jobs, &listener);
    }
    tracing::debug!("writer stopped");
}

fn run_group(conn: &Connection, jobs: Vec<Job>, listener: &ChangeListener) {
    let mut completions = Vec::with_capacity(jobs.len());
    let mut changes = Vec::new();
    let begin = conn.execute_batch("BEGIN IMMEDIATE");
    if let Err(e) = begin {
        let msg = e.to_string();
        tracing::error!(error = %msg, "cannot begin write transaction");
        for job in jobs {
            let (_, complete) = job(None);
            complete(Err(msg.clone()));
        }
        return;
    }
    let now = now_micros();
    for job in jobs {
        let savepoint = conn.execute_batch("SAVEPOINT job");
        let mut txn = WriteTxn {
            conn,
            now,
            changes: Vec::new(),
        };
        let ran = savepoint.map_err(|e| e.to_string()).and_then(|()| {
            catch_unwind(AssertUnwindSafe(|| job(Some(&mut txn)))).map_err(panic_msg)
        });
        match ran {
            Ok((true, complete)) => {
                let _ = conn.execute_batch("RELEASE job");
                changes.append(&mut txn.changes);
                completions.push(complete);
            }
            Ok((false, complete)) => {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                completions.push(complete);
            }
            Err(msg) => {
                // The job panicked or its savepoint failed: its reply channel was
                // dropped with it, so its caller sees the store as failed.
                tracing::error!(error = %msg, "write job failed");
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
    }
    let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
    if let Err(e) = &commit {
        tracing::error!(error = %e, "group commit failed");
        let _ = conn.execute_batch("ROLLBACK");
    } else if !changes.is_empty() {
        listener(changes);
    }
    for complete in completions {
        complete(commit.clone());
    }
}

fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "write panicked".into())
}
