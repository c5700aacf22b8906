//! The indexer thread: the only owner of the `IndexWriter`.
//!
//! It applies changes as they arrive but commits only when `commit_interval_ms`
//! has passed since the first uncommitted change, or `commit_max_docs` are
//! pending, or someone asks (flush, shutdown). A commit costs tens of
//! milliseconds whatever its size, so it is never done per operation. Each commit
//! records the last change number it holds in the commit payload.
//!
//! While a rebuild reloads the index from the store, a commit (one falls due on
//! `commit_max_docs` or the timer) holds only part of the store, whatever
//! change numbers live writes brought meanwhile. Until the store scan is done
//! such commits record no change number (`{"rebuilding": true}`), so a crash
//! leaves an index the next start rebuilds; after the scan, and until the
//! rebuild's closing flush, they record the change number the scan started from.

use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tantivy::{IndexWriter, TantivyDocument, Term};
use tokio::sync::oneshot;

use super::{LIVE, Live, SUPERSEDED, SearchError, Shared};
use crate::model::{Change, SearchDoc};

/// Messages (each a committed batch of changes, or a batch of documents during a
/// rebuild) the indexer's queue holds before senders wait.
const QUEUE_MESSAGES: usize = 256;

pub(crate) enum Msg {
    /// Committed store changes, in change order.
    Changes(Vec<Change>),
    /// Documents for a rebuild (no change numbers). `upsert`: replace any copy
    /// already indexed (writes run concurrently with a live rebuild).
    Docs {
        docs: Vec<SearchDoc>,
        upsert: bool,
    },
    /// Throw the index away and start an empty one in its directory.
    Recreate(oneshot::Sender<Result<(), String>>),
    /// Delete every document (start of a rebuild).
    Clear,
    /// After a rebuild: the change number the index now reflects.
    SetSeq(i64),
    Flush(oneshot::Sender<Result<(), String>>),
    Stop,
    /// Tests: die as a crash would, dropping what was not committed.
    #[cfg(test)]
    Crash,
}

/// Told the outcome of every index commit: how a circuit breaker learns that the
/// index has stopped working even when no search has failed yet.
pub type CommitObserver = Arc<dyn Fn(Result<(), &str>) + Send + Sync>;

/// What the indexer has done, for health and metrics.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct IndexStats {
    /// Highest change number committed to the index.
    pub committed_seq: i64,
    /// Records searchable only through the in-memory overlay.
    pub overlay_records: usize,
    pub commits: u64,
    pub last_commit_ms: u64,
    /// Times the index was thrown away and rebuilt from the store while running.
    pub rebuilds: u64,
    /// The last commit error, if the last commit failed.
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub(crate) struct IndexerHandle {
    tx: mpsc::SyncSender<Msg>,
    stats: Arc<Mutex<IndexStats>>,
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Where a rebuild is: what an index commit may claim to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rebuild {
    /// No rebuild: the index holds every change up to the applied number.
    None,
    /// The index was emptied and the store scan is under way: the index holds
    /// some records only.
    Scanning,
    /// The scan is done (it saw every change up to this number); the changes
    /// after it are being replayed over it.
    Scanned(i64),
}

/// The change number a commit payload records, if any (`None`: rebuild).
pub(crate) fn parse_payload(payload: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()?
        .get("last_seq")?
        .as_i64()
}

impl IndexerHandle {
    pub(crate) fn start(
        shared: Arc<Shared>,
        writer: IndexWriter,
        committed_seq: i64,
        commit_interval_ms: u64,
        commit_max_docs: usize,
        observer: CommitObserver,
    ) -> Result<Self, SearchError> {
        // Bounded: when the indexer falls behind, the writer (which hands it
        // each committed batch) and a rebuild's scan wait instead of queueing
        // without limit.
        let (tx, rx) = mpsc::sync_channel(QUEUE_MESSAGES);
        let stats = Arc::new(Mutex::new(IndexStats {
            committed_seq,
            ..Default::default()
        }));
        let mut worker = Worker {
            shared: shared.clone(),
            writer: Some(writer),
            observer,
            stats: stats.clone(),
            applied_seq: committed_seq,
            rebuild: Rebuild::None,
            pending: 0,
            first_pending: None,
            interval: Duration::from_millis(commit_interval_ms.max(1)),
            max_docs: commit_max_docs.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("engram-indexer".into())
            .spawn(move || worker.run(rx))?;
        Ok(IndexerHandle {
            tx,
            stats,
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    pub(crate) fn sender(&self) -> mpsc::SyncSender<Msg> {
        self.tx.clone()
    }

    /// Queues `msg`, waiting (off the runtime's threads) while the queue is full.
    pub(crate) async fn send(&self, msg: Msg) -> Result<(), SearchError> {
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || tx.send(msg))
            .await
            .map_err(|_| SearchError::IndexerGone)?
            .map_err(|_| SearchError::IndexerGone)
    }

    pub(crate) async fn recreate(&self) -> Result<(), SearchError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Recreate(tx)).await?;
        rx.await
            .map_err(|_| SearchError::IndexerGone)?
            .map_err(SearchError::CatchUp)
    }

    pub(crate) async fn flush(&self) -> Result<(), SearchError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Flush(tx)).await?;
        rx.await
            .map_err(|_| SearchError::IndexerGone)?
            .map_err(SearchError::CatchUp)
    }

    pub(crate) fn shutdown(&self) {
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            let _ = self.tx.send(Msg::Stop);
            let _ = handle.join();
        }
    }

    pub(crate) fn stats(&self) -> IndexStats {
        let mut s = self.stats.lock().expect("stats poisoned").clone();
        s.overlay_records = self.shared.overlay.read().map(|o| o.len()).unwrap_or(0);
        s
    }
}

struct Worker {
    shared: Arc<Shared>,
    /// `None` only when recreating the index failed; commits then fail until a
    /// rebuild succeeds.
    writer: Option<IndexWriter>,
    observer: CommitObserver,
    stats: Arc<Mutex<IndexStats>>,
    /// Highest change number applied to the writer (committed or not).
    applied_seq: i64,
    rebuild: Rebuild,
    pending: usize,
    first_pending: Option<Instant>,
    interval: Duration,
    max_docs: usize,
}

impl Worker {
    /// The thread's loop: applies each message, commits when one is due, and
    /// stops at `Stop` (or when every sender is gone).
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let msg = self.next_msg(&rx);
            if !self.handle(msg) {
                break;
            }
            if self.pending >= self.max_docs {
                let _ = self.commit();
            }
        }
        tracing::debug!("indexer stopped");
    }

    /// The next message, or `None` when the commit interval ran out first.
    /// Waits without a deadline while nothing is pending.
    fn next_msg(&self, rx: &mpsc::Receiver<Msg>) -> Option<Msg> {
        let Some(first) = self.first_pending else {
            return Some(rx.recv().unwrap_or(Msg::Stop));
        };
        let wait = self.interval.saturating_sub(first.elapsed());
        match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Stop),
        }
    }

    /// Acts on one message (`None`: the commit interval ran out). Answers
    /// whether the thread goes on.
    fn handle(&mut self, msg: Option<Msg>) -> bool {
        match msg {
            None => {
                // Failures are logged and retried at the next interval.
                let _ = self.commit();
            }
            Some(Msg::Changes(changes)) => self.apply_changes(changes),
            Some(Msg::Docs { docs, upsert }) => self.apply_docs(&docs, upsert),
            Some(Msg::Clear) => {
                if let Some(Err(e)) = self.writer.as_mut().map(|w| w.delete_all_documents()) {
                    tracing::error!(error = %e, "cannot clear the search index");
                }
                self.rebuild = Rebuild::Scanning;
                self.mark_pending();
            }
            Some(Msg::Recreate(reply)) => {
                let r = self.recreate();
                let _ = reply.send(r);
            }
            Some(Msg::SetSeq(seq)) => {
                // The scan is done; the replay of what came after it follows.
                self.applied_seq = seq;
                if self.rebuild == Rebuild::Scanning {
                    self.rebuild = Rebuild::Scanned(seq);
                }
                self.mark_pending();
            }
            Some(Msg::Flush(reply)) => {
                // The flush that closes a rebuild comes after its replay:
                // from here the index holds everything it has applied.
                if let Rebuild::Scanned(_) = self.rebuild {
                    self.rebuild = Rebuild::None;
                    self.mark_pending();
                }
                let r = self.commit();
                let _ = reply.send(r);
            }
            Some(Msg::Stop) => {
                let _ = self.commit();
                return false;
            }
            #[cfg(test)]
            Some(Msg::Crash) => {
                // Uncommitted documents are dropped with the writer.
                drop(self.writer.take());
                return false;
            }
        }
        true
    }

    /// Applies committed store changes: each searchable record's old copy goes,
    /// its new one (if any) comes.
    fn apply_changes(&mut self, changes: Vec<Change>) {
        for c in changes {
            if c.kind.searchable() {
                self.delete(&c.id);
                if let Some(doc) = &c.doc {
                    self.add(doc);
                }
            }
            self.applied_seq = self.applied_seq.max(c.seq);
            self.mark_pending();
        }
    }

    /// Adds a rebuild's documents; `upsert` replaces copies already indexed.
    fn apply_docs(&mut self, docs: &[SearchDoc], upsert: bool) {
        for doc in docs {
            if upsert {
                self.delete(&doc.id);
            }
            self.add(doc);
            self.mark_pending();
        }
    }

    fn mark_pending(&mut self) {
        self.pending += 1;
        self.first_pending.get_or_insert_with(Instant::now);
    }

    fn delete(&mut self, id: &str) {
        if let Some(w) = &self.writer {
            w.delete_term(Term::from_field_text(self.shared.fields.id, id));
        }
    }

    fn add(&mut self, d: &SearchDoc) {
        let Some(writer) = &self.writer else {
            return;
        };
        let f = &self.shared.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &d.id);
        doc.add_text(f.kind, d.kind.as_str());
        doc.add_text(f.namespace, &d.namespace);
        doc.add_text(f.text, &d.text);
        doc.add_text(f.text_raw, &d.text);
        if d.kind == crate::model::RecordKind::Entity {
            doc.add_text(f.text_ngram, &d.text);
        }
        for tag in &d.tags {
            doc.add_text(f.tags, tag);
        }
        doc.add_text(f.status, if d.superseded { SUPERSEDED } else { LIVE });
        doc.add_i64(f.time, d.time);
        doc.add_f64(f.weight, d.weight);
        if let Err(e) = writer.add_document(doc) {
            tracing::error!(error = %e, id = %d.id, "cannot index document");
        }
    }

    /// Drops the writer, empties the directory, and starts a new empty index
    /// there. What was pending is dropped too: the rebuild that follows reloads
    /// everything from the store (the overlay keeps serving it meanwhile).
    fn recreate(&mut self) -> Result<(), String> {
        drop(self.writer.take());
        let fresh = super::create_fresh(&self.shared.dir)
            .and_then(|index| super::reader_and_writer(&index));
        match fresh {
            Ok((reader, writer)) => {
                self.writer = Some(writer);
                *self.shared.live.write().expect("live index poisoned") = Arc::new(Live { reader });
                self.pending = 0;
                self.first_pending = None;
                self.applied_seq = 0;
                self.rebuild = Rebuild::Scanning;
                self.stats.lock().expect("stats poisoned").rebuilds += 1;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot recreate the search index");
                (self.observer)(Err(&e.to_string()));
                Err(e.to_string())
            }
        }
    }

    /// Commits with the change number the index now holds everything up to as
    /// payload (none in the middle of a rebuild's scan), reloads the reader, and
    /// prunes the overlay of what is now in the index.
    fn commit(&mut self) -> Result<(), String> {
        if self.pending == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let (seq, payload) = match self.rebuild {
            Rebuild::None => (
                self.applied_seq,
                serde_json::json!({ "last_seq": self.applied_seq }),
            ),
            // A crash now must leave an index the next start rebuilds.
            Rebuild::Scanning => (0, serde_json::json!({ "rebuilding": true })),
            // The scan saw every change up to `head`; the next start replays
            // the rest, which mends any record the scan left stale.
            Rebuild::Scanned(head) => (head, serde_json::json!({ "last_seq": head })),
        };
        let payload = payload.to_string();
        let result = match self.writer.as_mut() {
            None => Err(tantivy::TantivyError::SystemError(
                "the index could not be recreated".into(),
            )),
            Some(writer) => writer
                .prepare_commit()
                .and_then(|mut prepared| {
                    prepared.set_payload(&payload);
                    prepared.commit()
                })
                .and_then(|_| self.shared.live().reader.reload()),
        };
        let mut stats = self.stats.lock().expect("stats poisoned");
        match result {
            Ok(()) => {
                self.shared
                    .overlay
                    .write()
                    .expect("overlay poisoned")
                    .prune(seq);
                self.pending = 0;
                self.first_pending = None;
                stats.committed_seq = seq;
                stats.commits += 1;
                stats.last_commit_ms = started.elapsed().as_millis() as u64;
                stats.last_error = None;
                drop(stats);
                (self.observer)(Ok(()));
                Ok(())
            }
            Err(e) => {
                // Keep the changes pending (the overlay still serves them) and
                // try again at the next interval.
                tracing::error!(error = %e, "search index commit failed");
                self.first_pending = Some(Instant::now());
                stats.last_error = Some(e.to_string());
                drop(stats);
                (self.observer)(Err(&e.to_string()));
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::Msg;
    use crate::app::AppState;
    use crate::config::Config;
    use crate::model::{RecordKind, SearchDoc};
    use crate::search::{INDEX_DIR_NAME, Matcher, SearchIndex, SearchQuery};
    use crate::store::{NewEvent, Store};

    fn events(n: usize, word: &str) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                content: format!("{word} number {i}"),
                tags: Vec::new(),
                importance: 0.5,
                occurred_at: None,
                metadata: Default::default(),
            })
            .collect()
    }

    /// An online rebuild commits on `max_docs` before its store scan is done
    /// (a write arrived meanwhile, so the indexer has applied a recent change
    /// number), then the process dies. The next start must make the index whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_in_the_middle_of_a_rebuild_loses_no_record_from_search() {
        const N: usize = 100;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.index_commit_max_docs = 10;
        config.index_commit_interval_ms = 3_600_000;
        let (search, last) = SearchIndex::open(
            &dir.path().join(INDEX_DIR_NAME),
            config.index_commit_interval_ms,
            config.index_commit_max_docs,
            Arc::new(|_| {}),
        )
        .unwrap();
        let store = Store::open(&config, search.change_listener()).unwrap();
        search.catch_up(&store, last).await.unwrap();
        store
            .insert_events("default", "s", events(N, "wombat"))
            .await
            .unwrap();
        search.flush().await.unwrap();

        // The rebuild, as `SearchIndex::rebuild` drives it, cut short: the index
        // is thrown away, a write lands, a first part of the scan arrives and
        // fills a commit, and the process dies.
        search.indexer.recreate().await.unwrap();
        store
            .insert_events("default", "s", events(1, "wombat live"))
            .await
            .unwrap();
        let scanned: Arc<Mutex<Vec<SearchDoc>>> = Arc::default();
        let sink = scanned.clone();
        store
            .scan_search_docs(move |docs| {
                sink.lock().unwrap().extend(docs);
                Ok(())
            })
            .await
            .unwrap();
        let first_part = scanned.lock().unwrap()[..20].to_vec();
        search
            .indexer
            .send(Msg::Docs {
                docs: first_part,
                upsert: true,
            })
            .await
            .unwrap();
        search.indexer.send(Msg::Crash).await.unwrap();
        search.shutdown();
        store.shutdown();
        drop((search, store));

        // The next start, through the real path.
        let app = AppState::open(config).await.unwrap();
        let q = SearchQuery::new(
            "default",
            vec![RecordKind::Event],
            Matcher::words("wombat").unwrap(),
            1_000,
        );
        let found = app.search(q).await.unwrap();
        assert!(!found.degraded);
        assert_eq!(
            found.results.hits.len(),
            N + 1,
            "records lost from search by a crash during a rebuild"
        );
        let shutdown = app.clone();
        tokio::task::spawn_blocking(move || shutdown.shutdown())
            .await
            .unwrap();
    }
}
