//! Configuration: parsed first (no I/O), then resolved into opened resources by
//! `AppState::open`. Every limit and interval carries its unit in its name.

use std::path::PathBuf;

/// Bounds on what one call may carry. Exceeding any is a tool error that names
/// the limit; nothing is written.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_content_bytes: usize,
    pub max_batch_items: usize,
    pub max_page_size: usize,
    pub default_page_size: usize,
    pub max_tags: usize,
    pub max_tag_bytes: usize,
    pub max_metadata_bytes: usize,
    pub max_query_bytes: usize,
    pub max_scratch_keys: usize,
    pub max_scratch_value_bytes: usize,
    /// Most bytes (keys and JSON values) one session's scratch holds in all.
    pub max_scratch_bytes: usize,
    /// Most characters of JSON one read_graph / search_nodes answer carries
    /// before it pages (the reference server returns the whole graph at once).
    pub max_graph_answer_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_content_bytes: 64 * 1024,
            max_batch_items: 1000,
            max_page_size: 500,
            default_page_size: 20,
            max_tags: 32,
            max_tag_bytes: 64,
            max_metadata_bytes: 16 * 1024,
            max_query_bytes: 2048,
            max_scratch_keys: 1000,
            max_scratch_value_bytes: 64 * 1024,
            max_scratch_bytes: 256 * 1024,
            max_graph_answer_chars: 64 * 1024,
        }
    }
}

/// How a session's namespace is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMode {
    /// Always this namespace (unless an HTTP request header names another).
    Fixed(String),
    /// The name of the client's first MCP root (its project folder), else `default`.
    Auto,
}

/// sqlite's `synchronous` setting: FULL fsyncs every commit (acknowledged writes
/// survive power loss); NORMAL survives process crashes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://user@host/db`): the store shared by many
    /// nodes, instead of the sqlite file in `data_dir`. The data dir then holds
    /// this node's search index only.
    pub store_url: Option<String>,
    pub namespace: NamespaceMode,
    /// Tool profile: `core`, `all`, `compat`, or a comma-separated list of layers.
    pub tools: String,
    pub limits: Limits,
    pub durability: Durability,
    /// The indexer commits at least this often while changes are pending.
    pub index_commit_interval_ms: u64,
    /// ... or as soon as this many changes are pending.
    pub index_commit_max_docs: usize,
    /// Read-only sqlite connections: at most this many reads run at once.
    pub max_read_connections: usize,
    /// Most writes drained into one transaction (one fsync).
    pub max_group_commit: usize,
    /// Most read answers the query cache keeps (0 turns caching off) ...
    pub cache_capacity: usize,
    /// ... and the most bytes of answers (JSON text) it keeps.
    pub cache_max_bytes: usize,
    /// Calls per second each session may make (0: unlimited) ...
    pub rate_limit_per_second: u32,
    /// ... and how many it may make in a burst above that rate.
    pub rate_limit_burst: u32,
    /// Consecutive failures (errors or timeouts) that open a backend's breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before letting a probe call through.
    pub breaker_open_ms: u64,
    /// A search slower than this counts as a failure of the index.
    pub search_timeout_ms: u64,
    /// A read call slower than this fails (and counts against the store's
    /// breaker). It is checked whenever the call waits: a store read or a
    /// search in progress runs to its end first.
    pub read_timeout_ms: u64,
    /// A session handle (`session_open`) unused this long expires.
    pub handle_idle_secs: u64,
    /// Most session handles open at once.
    pub max_handles: usize,
}

pub const DEFAULT_NAMESPACE: &str = "default";

/// Defaults the command line and [`Config::new`] share (the README quotes
/// them; `tests/registry.rs` checks it does so truly).
pub mod defaults {
    pub const TOOLS: &str = "core";
    pub const INDEX_COMMIT_MS: u64 = 500;
    pub const INDEX_COMMIT_DOCS: usize = 10_000;
    pub const CACHE_CAPACITY: usize = 10_000;
    pub const CACHE_MB: usize = 64;
    pub const RATE_LIMIT: u32 = 5_000;
    pub const RATE_BURST: u32 = 10_000;
}

impl Config {
    /// A configuration with defaults for everything but the data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store_url: None,
            namespace: NamespaceMode::Fixed(DEFAULT_NAMESPACE.to_string()),
            tools: defaults::TOOLS.to_string(),
            limits: Limits::default(),
            durability: Durability::Full,
            index_commit_interval_ms: defaults::INDEX_COMMIT_MS,
            index_commit_max_docs: defaults::INDEX_COMMIT_DOCS,
            max_read_connections: 8,
            max_group_commit: 1024,
            cache_capacity: defaults::CACHE_CAPACITY,
            cache_max_bytes: defaults::CACHE_MB * 1024 * 1024,
            rate_limit_per_second: defaults::RATE_LIMIT,
            rate_limit_burst: defaults::RATE_BURST,
            breaker_threshold: 3,
            breaker_open_ms: 5_000,
            search_timeout_ms: 5_000,
            read_timeout_ms: 30_000,
            handle_idle_secs: 1_800,
            max_handles: 10_000,
        }
    }

    /// The platform's user data dir (`~/.local/share/engram` on Linux).
    pub fn default_data_dir() -> PathBuf {
        dirs::data_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("engram")
    }
}

/// Checks a namespace name: 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_namespace(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "namespace {name:?} is not valid: use 1-64 characters of letters, digits, '.', '_' or '-'"
        ))
    }
}

/// Turns an arbitrary folder name into a valid namespace (for `--namespace auto`).
pub fn namespace_from_folder(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let trimmed = cleaned.trim_matches('-').to_string();
    validate_namespace(&trimmed).ok().map(|_| trimmed)
}
