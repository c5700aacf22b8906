//! Application state: the opened backends and configuration, as one cheap handle.
//!
//! Opening resolves a `Config` into resources in a fixed order: lock the data dir,
//! open the search index, open the store (with the index's change listener),
//! then let the index catch up with the store's change log.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::catalog;
use crate::config::Config;
use crate::error::OpError;
use crate::search::{INDEX_DIR_NAME, SearchIndex};
use crate::session::{Session, ToolSelection};
use crate::store::Store;

pub const LOCK_FILE_NAME: &str = "engram.lock";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use data dir {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error(
        "data dir {dir} is in use by another engram process{holder}. Stop it, point this one \
         at another --data-dir, or share the running one over HTTP (engram serve --http)"
    )]
    Locked { dir: String, holder: String },
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("search index: {0}")]
    Search(#[from] crate::search::SearchError),
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    store: Store,
    search: SearchIndex,
    tools: ToolSelection,
    _lock: File,
}

impl AppState {
    pub async fn open(config: Config) -> Result<AppState, OpenError> {
        let tools = ToolSelection::parse(&config.tools, catalog()).map_err(OpenError::Config)?;
        let dir = &config.data_dir;
        let io_err = |source| OpenError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let lock = lock_data_dir(&config)?;

        let (search, indexed_seq) = SearchIndex::open(
            &dir.join(INDEX_DIR_NAME),
            config.index_commit_interval_ms,
            config.index_commit_max_docs,
        )?;
        let store = Store::open(&config, search.change_listener())?;
        // An index ahead of the store (the store was restored from a backup) holds
        // records the store does not: rebuild it rather than replay.
        let head = store.last_change().await?;
        let indexed_seq = indexed_seq.filter(|&seq| seq <= head);
        search.catch_up(&store, indexed_seq).await?;

        Ok(AppState(Arc::new(Inner {
            config,
            store,
            search,
            tools,
            _lock: lock,
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn search(&self) -> &SearchIndex {
        &self.0.search
    }

    /// The tools a new session lists, from `--tools`.
    pub fn default_tools(&self) -> &ToolSelection {
        &self.0.tools
    }

    pub fn new_session(&self) -> Arc<Session> {
        Arc::new(Session::new(self.0.tools.clone()))
    }

    /// Runs one operation through the pipeline.
    pub async fn call(
        &self,
        session: &Arc<Session>,
        name: &str,
        args: Value,
    ) -> Result<Value, OpError> {
        crate::pipeline::execute(self, session, name, args).await
    }

    /// Commits every queued write, then the search index, and stops both
    /// threads. Blocking: call from a blocking context or at the very end.
    pub fn shutdown(&self) {
        self.0.store.shutdown();
        self.0.search.shutdown();
    }
}

fn lock_data_dir(config: &Config) -> Result<File, OpenError> {
    let dir = &config.data_dir;
    let path = dir.join(LOCK_FILE_NAME);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| OpenError::DataDir {
            dir: dir.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).ok();
            let _ = writeln!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            Err(OpenError::Locked {
                dir: dir.display().to_string(),
                holder,
            })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::DataDir {
            dir: dir.display().to_string(),
            source,
        }),
    }
}
