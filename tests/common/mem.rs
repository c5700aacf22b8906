//! engram in process: a real sqlite store (or, with
//! `ENGRAM_TEST_STORE=postgres`, a fresh database of a real PostgreSQL) and a
//! real tantivy index in a temporary data dir, called through the same
//! pipeline the servers use.
//!
//! This is the only place in `tests/` that knows the library's front door
//! (`Engine`, its sessions, `call`): the in-process tests speak to engram
//! through `Mem` alone, so renaming that door is a change here and nowhere else.

use std::path::Path;
use std::sync::Arc;

use engram::Engine;
use engram::config::Config;
use engram::error::OpError;
use engram::session::Session;
use serde_json::Value;

/// An open engram and one session in one namespace. Cheap to clone: a clone is
/// the same session (for concurrent calls from several tasks); `session_in`
/// opens another.
#[derive(Clone)]
pub struct Mem {
    app: Engine,
    session: Arc<Session>,
    /// Shared by every session of this engram; removed with the last of them.
    dir: Arc<tempfile::TempDir>,
}

/// Config tweak: the index commits only when a test calls [`Mem::flush`], so
/// searches are answered from the overlay of uncommitted changes until then.
pub fn commit_on_flush(config: &mut Config) {
    config.index_commit_interval_ms = 3_600_000;
}

impl Mem {
    /// Namespace `alpha`, the index committing only on `flush`.
    pub async fn new() -> Mem {
        Mem::open("alpha", commit_on_flush).await
    }

    /// As [`Mem::new`], then `tune` changes the config.
    pub async fn with(tune: impl FnOnce(&mut Config)) -> Mem {
        Mem::open("alpha", |c| {
            commit_on_flush(c);
            tune(c);
        })
        .await
    }

    /// The default config changed by `tune`, one session in `namespace`.
    pub async fn open(namespace: &str, tune: impl FnOnce(&mut Config)) -> Mem {
        let dir = tempfile::tempdir().expect("temp data dir");
        let mut config = Config::new(dir.path());
        if super::pg::selected() {
            config.store_url = Some(super::pg::fresh_database());
        }
        tune(&mut config);
        let app = Engine::open(config).await.expect("open engram");
        let session = app.new_session();
        session.set_namespace(namespace.into());
        Mem {
            app,
            session,
            dir: Arc::new(dir),
        }
    }

    /// Another session (its own scratch and rate allowance) of the same engram.
    pub fn session_in(&self, namespace: &str) -> Mem {
        let session = self.app.new_session();
        session.set_namespace(namespace.into());
        Mem {
            app: self.app.clone(),
            session,
            dir: self.dir.clone(),
        }
    }

    /// Calls an operation by name: its JSON answer, or its error as the agent reads it.
    pub async fn call(&self, op: &str, args: Value) -> Result<Value, String> {
        self.call_typed(op, args).await.map_err(|e| e.to_string())
    }

    /// The same, keeping the error's kind.
    pub async fn call_typed(&self, op: &str, args: Value) -> Result<Value, OpError> {
        self.app.call(&self.session, op, args).await
    }

    /// Calls an operation that must answer.
    pub async fn ok(&self, op: &str, args: Value) -> Value {
        self.call(op, args)
            .await
            .unwrap_or_else(|e| panic!("{op} failed: {e}"))
    }

    /// Calls an operation that must fail; its error message.
    pub async fn err(&self, op: &str, args: Value) -> String {
        match self.call(op, args).await {
            Ok(v) => panic!("{op} should have failed, answered {v}"),
            Err(e) => e,
        }
    }

    /// Calls a paged operation from its first page to its last, following
    /// `next_cursor`: every page's answer, in order.
    pub async fn pages(&self, op: &str, args: Value) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut args = args;
        loop {
            let page = self.ok(op, args.clone()).await;
            let next = page
                .get("next_cursor")
                .and_then(Value::as_str)
                .map(String::from);
            pages.push(page);
            match next {
                Some(cursor) => args["cursor"] = Value::String(cursor),
                None => return pages,
            }
        }
    }

    /// Commits the search index now.
    pub async fn flush(&self) {
        self.app
            .app()
            .search_index()
            .flush()
            .await
            .expect("index flush");
    }

    /// The data dir (the store, `index/`, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Commits every queued write and the index, and stops their threads.
    /// Blocking: call it from a blocking context.
    pub fn shutdown(&self) {
        self.app.shutdown();
    }
}
