//! Application state: the opened backends and configuration, as one cheap handle.
//! The bottom of the request path: operations reach the store, the search index
//! and graph snapshots through it, each behind its circuit breaker
//! (`guarded.rs`). It does not know the pipeline that calls operations.
//!
//! Opening resolves a `Config` into resources in a fixed order: lock the data dir,
//! open the search index, open the store (with the derived views' change
//! listener), then let the index catch up with the store's change log. A
//! maintenance task then rebuilds the index when its breaker opens and flushes
//! counted uses.
//!
//! Derived views learn of writes only from the store's change log: each
//! committed change reaches the search index first, then makes the query
//! cache's entries for its namespace and record kind stale, then is announced
//! to resource watchers — all before the write's caller is answered.

mod errors;
mod guarded;
mod handles;

pub use guarded::{CacheSummary, Health, Searched, StoreCall};

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::catalog::catalog;
use crate::config::Config;
use crate::model::{Change, Micros, RecordKind, now_micros};
use crate::resilience::cache::QueryCache;
use crate::resilience::limiter::SessionLimiter;
use crate::search::{INDEX_DIR_NAME, SearchIndex};
use crate::session::{LocalHandles, Session, SessionHandles, ToolSelection};
use crate::store::{ChangeListener, Store};

/// How often counted uses of facts are written to the store.
const ACCESS_FLUSH_INTERVAL_MS: u64 = 1_000;

pub const LOCK_FILE_NAME: &str = "engram.lock";
/// The data dir's cursor-signing key (random, 0600).
pub const CURSOR_KEY_FILE_NAME: &str = "cursor.key";
const CURSOR_KEY_BYTES: usize = 32;

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
    /// Shared with the change listener, which makes entries stale.
    cache: Arc<QueryCache>,
    breakers: guarded::Breakers,
    graphs: crate::graph::GraphViews,
    /// Wakes the maintenance task to rebuild the index.
    rebuild_wanted: Arc<Notify>,
    /// A rebuild is running: searches take the store scan meanwhile.
    rebuilding: AtomicBool,
    accesses: AccessLog,
    started: Instant,
    /// Signs paging cursors (`ops::cursor`); kept in the data dir so cursors
    /// survive a restart and every process on the dir accepts them.
    cursor_key: [u8; CURSOR_KEY_BYTES],
    /// Sessions stateless clients hold by handle (`session_open`).
    handles: Arc<dyn SessionHandles>,
    /// The rate allowance of stateless requests (MCP 2026-07-28 over HTTP),
    /// which have no session of their own to hold one: one per namespace, the
    /// least recently used forgotten past `STATELESS_LIMITERS`.
    stateless_limiters: Mutex<lru::LruCache<String, Arc<SessionLimiter>>>,
    /// Announces each committed write (namespace, layer) to whoever watches:
    /// resource subscriptions. Lossy for slow watchers, never blocking writers.
    written: tokio::sync::broadcast::Sender<Written>,
    _lock: File,
}

/// A committed write: its namespace and layer.
#[derive(Debug, Clone)]
pub struct Written {
    pub namespace: String,
    pub layer: String,
}

/// Namespaces whose stateless rate allowance is remembered.
const STATELESS_LIMITERS: usize = 10_000;

/// Writes a slow resource watcher may lag behind before it skips ahead.
const WRITTEN_BACKLOG: usize = 1024;

/// Uses of facts counted in memory and written in batches: a use is not worth
/// a transaction of its own. Up to one flush interval of counts can be lost in a
/// crash; the facts themselves never are.
#[derive(Default)]
struct AccessLog {
    pending: Mutex<HashMap<(String, String), (u64, Micros)>>,
}

impl AccessLog {
    fn record(&self, namespace: &str, ids: impl IntoIterator<Item = String>) {
        let now = now_micros();
        let mut p = self.pending.lock().expect("access log poisoned");
        for id in ids {
            let e = p.entry((namespace.to_string(), id)).or_insert((0, now));
            e.0 += 1;
            e.1 = now;
        }
    }

    fn take(&self) -> Vec<(String, String, u64, Micros)> {
        let mut p = self.pending.lock().expect("access log poisoned");
        p.drain()
            .map(|((ns, id), (n, at))| (ns, id, n, at))
            .collect()
    }
}

impl AppState {
    pub async fn open(config: Config) -> Result<AppState, OpenError> {
        let tools = ToolSelection::parse(&config.tools, catalog()).map_err(OpenError::Config)?;
        let dir = &config.data_dir;
        let io_err = |source| OpenError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        create_private_dir(dir).map_err(io_err)?;
        let lock = lock_data_dir(&config)?;

        let breakers = guarded::Breakers::new(&config);
        let rebuild_wanted = Arc::new(Notify::new());
        let observer = breakers.index_commit_observer(rebuild_wanted.clone());
        let (search, indexed_seq) = SearchIndex::open(
            &dir.join(INDEX_DIR_NAME),
            config.index_commit_interval_ms,
            config.index_commit_max_docs,
            observer,
        )?;
        let cache = Arc::new(QueryCache::new(
            config.cache_capacity,
            config.cache_max_bytes,
        ));
        let written = tokio::sync::broadcast::channel(WRITTEN_BACKLOG).0;
        let listener = derived_views(search.change_listener(), cache.clone(), written.clone());
        let store =
            Store::open(&config, listener)?.match_with(Arc::new(crate::search::matches_words));
        // An index ahead of the store (the store was restored from a backup) holds
        // records the store does not: rebuild it rather than replay.
        let head = store.last_change().await?;
        // An index older than the oldest change kept (older months of a
        // PostgreSQL change log detached) cannot catch up by replay either.
        let oldest = store.first_change().await?;
        let indexed_seq = indexed_seq.filter(|&seq| seq <= head && seq + 1 >= oldest);
        // Nodes sharing a store sign cursors with one key, so a cursor from one
        // node pages on another.
        let cursor_key = match store.shared_secret("cursor_key", CURSOR_KEY_BYTES).await? {
            Some(key) => <[u8; CURSOR_KEY_BYTES]>::try_from(key.as_slice()).map_err(|_| {
                crate::store::StoreError::Corrupt("the shared cursor key is not 32 bytes".into())
            })?,
            None => load_cursor_key(dir).map_err(io_err)?,
        };
        search.catch_up(&store, indexed_seq).await?;
        store.follow_others().await?;

        // On a store many nodes share, so are the handles.
        let idle = Duration::from_secs(config.handle_idle_secs);
        let handles: Arc<dyn SessionHandles> = if store.is_shared() {
            Arc::new(handles::StoredHandles::new(
                store.clone(),
                idle,
                config.max_handles,
                (config.rate_limit_per_second, config.rate_limit_burst),
            ))
        } else {
            Arc::new(LocalHandles::new(idle, config.max_handles))
        };
        let app = AppState(Arc::new(Inner {
            cache,
            breakers,
            graphs: crate::graph::GraphViews::default(),
            rebuild_wanted,
            rebuilding: AtomicBool::new(false),
            accesses: AccessLog::default(),
            started: Instant::now(),
            config,
            store,
            search,
            tools,
            cursor_key,
            handles,
            written,
            stateless_limiters: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(STATELESS_LIMITERS).expect("non-zero"),
            )),
            _lock: lock,
        }));
        tokio::spawn(maintenance(Arc::downgrade(&app.0)));
        Ok(app)
    }

    /// The rate allowance a call of `session` draws on: its own, or for a
    /// stateless request (a fresh session per request) its namespace's.
    pub fn limiter_for(&self, session: &Session) -> Arc<SessionLimiter> {
        if !session.is_stateless() {
            return session.limiter.clone();
        }
        let c = &self.0.config;
        self.0
            .stateless_limiters
            .lock()
            .expect("limiters poisoned")
            .get_or_insert(session.namespace().to_string(), || {
                Arc::new(SessionLimiter::new(
                    c.rate_limit_per_second,
                    c.rate_limit_burst,
                ))
            })
            .clone()
    }

    /// Every committed write from now on.
    pub fn watch_writes(&self) -> tokio::sync::broadcast::Receiver<Written> {
        self.0.written.subscribe()
    }

    /// Session handles (`session_open`).
    pub fn handles(&self) -> &dyn SessionHandles {
        self.0.handles.as_ref()
    }

    /// The key paging cursors are signed with.
    pub fn cursor_key(&self) -> &[u8] {
        &self.0.cursor_key
    }

    /// Counts a use of these facts (opened or returned by a search).
    pub fn record_fact_access(&self, namespace: &str, ids: impl IntoIterator<Item = String>) {
        self.0.accesses.record(namespace, ids);
    }
}

/// Background upkeep, for as long as the app is open: rebuilds the search index
/// when its breaker asks, writes counted fact uses and forgets expired session
/// handles every second.
async fn maintenance(app: Weak<Inner>) {
    let wanted = match app.upgrade() {
        Some(inner) => inner.rebuild_wanted.clone(),
        None => return,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(ACCESS_FLUSH_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let rebuild = tokio::select! {
            _ = wanted.notified() => true,
            _ = tick.tick() => false,
        };
        let Some(inner) = app.upgrade() else {
            return;
        };
        if rebuild {
            guarded::rebuild_index(&inner).await;
        }
        // Expired session handles free their scratch now, not when the table fills.
        inner.handles.sweep().await;
        let accesses = inner.accesses.take();
        if !accesses.is_empty()
            && let Err(e) = inner.store.record_fact_access(accesses).await
        {
            tracing::warn!(error = %e, "could not record fact uses");
        }
    }
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn search_index(&self) -> &SearchIndex {
        &self.0.search
    }

    /// The tools a new session lists, from `--tools`.
    pub fn default_tools(&self) -> &ToolSelection {
        &self.0.tools
    }

    pub fn new_session(&self) -> Arc<Session> {
        self.new_session_with_tools(self.0.tools.clone())
    }

    pub fn new_session_with_tools(&self, tools: ToolSelection) -> Arc<Session> {
        let c = &self.0.config;
        Arc::new(Session::new(
            tools,
            Arc::new(SessionLimiter::new(
                c.rate_limit_per_second,
                c.rate_limit_burst,
            )),
        ))
    }

    /// Commits every queued write, then the search index, and stops both
    /// threads. Blocking: call from a blocking context or at the very end.
    pub fn shutdown(&self) {
        let accesses = self.0.accesses.take();
        if !accesses.is_empty() {
            // On a thread of its own: this may be called from inside a runtime.
            let store = self.0.store.clone();
            let flushed = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build();
                if let Ok(rt) = rt {
                    let _ = rt.block_on(store.record_fact_access(accesses));
                }
            });
            let _ = flushed.join();
        }
        self.0.store.shutdown();
        self.0.search.shutdown();
    }
}

/// The change listener of the derived views, in the order that keeps them
/// truthful: the search index first (so a read that misses the cache finds the
/// change), then the query cache (entries that read a changed kind in its
/// namespace go stale), then resource watchers.
fn derived_views(
    index: ChangeListener,
    cache: Arc<QueryCache>,
    written: tokio::sync::broadcast::Sender<Written>,
) -> ChangeListener {
    Arc::new(move |changes: Vec<Change>| {
        let mut touched: Vec<(String, RecordKind)> = Vec::new();
        for c in &changes {
            if !touched
                .iter()
                .any(|(ns, k)| *k == c.kind && *ns == c.namespace)
            {
                touched.push((c.namespace.clone(), c.kind));
            }
        }
        index(changes);
        let scopes: Vec<String> = touched.iter().map(|(ns, k)| k.scope(ns)).collect();
        cache.invalidate(&scopes);
        if written.receiver_count() > 0 {
            let mut announced: Vec<(&str, &str)> = Vec::new();
            for (ns, kind) in &touched {
                if !announced.contains(&(ns.as_str(), kind.layer())) {
                    announced.push((ns.as_str(), kind.layer()));
                    let _ = written.send(Written {
                        namespace: ns.clone(),
                        layer: kind.layer().to_string(),
                    });
                }
            }
        }
    })
}

/// Creates the data dir, private to the user who runs engram.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
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

/// Reads the data dir's cursor key, making one the first time. Called with the
/// data dir's lock held, so no other process writes it meanwhile.
fn load_cursor_key(dir: &std::path::Path) -> std::io::Result<[u8; CURSOR_KEY_BYTES]> {
    let path = dir.join(CURSOR_KEY_FILE_NAME);
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; CURSOR_KEY_BYTES]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let mut key = [0u8; CURSOR_KEY_BYTES];
    getrandom::fill(&mut key).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{CURSOR_KEY_FILE_NAME}.tmp"));
    let mut options = File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(&key)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}
