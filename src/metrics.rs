//! What `/metrics` serves, in the OpenMetrics text format Prometheus scrapes.
//!
//! One registry per process ([`metrics`]), as Prometheus clients keep it.
//! Events are counted where they happen: each operation call in the pipeline,
//! each group commit in the store's writer, each refused token at the HTTP
//! edge. State (cache, breakers, index lag, sizes, memory) is read from the
//! engine when a scrape asks ([`Metrics::render`]). Label values are bounded:
//! operation names, error kinds, backends; namespaces only with
//! `--metrics-namespaces`.

use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::resilience::breaker::{BreakerReport, BreakerState};
use crate::resilience::cache::CacheStats;

/// What a scrape reads of the engine, gathered by whoever holds it.
pub struct EngineState<'a> {
    pub cache: CacheStats,
    pub breakers: Vec<BreakerReport>,
    pub handles_open: usize,
    /// Records searchable only through the overlay: not yet committed to the index.
    pub index_pending: usize,
    pub index_commits: u64,
    /// The sqlite database (its write-ahead log lies beside it).
    pub database: &'a Path,
    pub index_dir: &'a Path,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    operation: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failed {
    operation: String,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InNamespace {
    namespace: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Backend {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadConnection {
    connection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
}

/// Most namespaces `--metrics-namespaces` labels one by one.
const MAX_NAMESPACE_LABELS: usize = 500;

fn latency_histogram() -> Histogram {
    // 50 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    calls: Family<Call, Counter>,
    errors: Family<Failed, Counter>,
    latency: Family<Operation, Histogram, fn() -> Histogram>,
    namespace_calls: Family<InNamespace, Counter>,
    /// Whether calls are also counted per namespace (`--metrics-namespaces`).
    by_namespace: AtomicBool,
    /// The namespaces given a label of their own, at most `MAX_NAMESPACE_LABELS`.
    labelled: std::sync::Mutex<std::collections::HashSet<String>>,
    auth_failures: Family<Reason, Counter>,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    store_reads: Family<ReadConnection, Counter>,
    sessions: Gauge,
    // Read from the engine at each scrape.
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_invalidations: Counter,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    breaker_state: Family<Backend, Gauge>,
    breaker_opened: Family<Backend, Counter>,
    handles: Gauge,
    index_pending: Gauge,
    index_commits: Counter,
    store_bytes: Gauge,
    index_bytes: Gauge,
    resident: Gauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            calls: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            namespace_calls: Family::default(),
            by_namespace: AtomicBool::new(false),
            labelled: Default::default(),
            auth_failures: Family::default(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: latency_histogram(),
            store_reads: Family::default(),
            sessions: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_invalidations: Counter::default(),
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
            breaker_state: Family::default(),
            breaker_opened: Family::default(),
            handles: Gauge::default(),
            index_pending: Gauge::default(),
            index_commits: Counter::default(),
            store_bytes: Gauge::default(),
            index_bytes: Gauge::default(),
            resident: Gauge::default(),
        };
        m.register()
    }

    fn register(mut self) -> Metrics {
        // (name, help => field): every family the registry serves.
        macro_rules! families {
            ($($name:literal, $help:literal => $field:ident;)*) => {
                $(self.registry.register($name, $help, self.$field.clone());)*
            };
        }
        families! {
            "engram_operation_calls", "Operation calls, by operation and kind (read, write, admin)" => calls;
            "engram_operation_errors", "Operation calls that failed, by operation and error kind" => errors;
            "engram_operation_duration_seconds", "Time to answer an operation call, by operation" => latency;
            "engram_auth_failures", "HTTP requests refused for their token: missing, invalid, expired, revoked, namespace" => auth_failures;
            "engram_commit_batch_size", "Writes committed together in one group commit" => commit_batch;
            "engram_commit_fsync_seconds", "Time of a group commit's COMMIT (the fsync with --durability full)" => commit_seconds;
            "engram_store_reads", "Bounded sqlite reads, by the connection that ran them: the writer's (idle, its page cache warm) or a pooled one" => store_reads;
            "engram_sessions_open", "Sessions alive (stdio, HTTP, forwarded, and stateless requests in flight)" => sessions;
            "engram_cache_hits", "Reads answered from the query cache" => cache_hits;
            "engram_cache_misses", "Cacheable reads that ran" => cache_misses;
            "engram_cache_evictions", "Cached answers pushed out to make room" => cache_evictions;
            "engram_cache_invalidations", "Cache generations bumped by writes" => cache_invalidations;
            "engram_cache_entries", "Answers in the query cache" => cache_entries;
            "engram_cache_bytes", "Bytes of answers in the query cache" => cache_bytes;
            "engram_breaker_state", "Circuit breaker per backend: 0 closed, 1 half-open, 2 open" => breaker_state;
            "engram_breaker_opened", "Times a backend's breaker opened" => breaker_opened;
            "engram_session_handles_open", "Session handles (session_open) held for stateless clients" => handles;
            "engram_index_pending_changes", "Records changed in the store and not yet committed to the search index" => index_pending;
            "engram_index_commits", "Search index commits" => index_commits;
            "engram_store_bytes", "Size of the sqlite database and its write-ahead log" => store_bytes;
            "engram_index_bytes", "Size of the search index on disk" => index_bytes;
            "engram_resident_memory_bytes", "Resident memory of the engram process" => resident;
            "engram_namespace_calls", "Operation calls per namespace and kind (only with --metrics-namespaces)" => namespace_calls;
        }
        let build: Family<Build, Gauge> = Family::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        self.registry
            .register("engram_build_info", "The running engram's version", build);
        self
    }

    /// Counts calls per namespace too (`--metrics-namespaces`).
    pub fn count_namespaces(&self, on: bool) {
        self.by_namespace.store(on, Ordering::Relaxed);
    }

    pub fn counts_namespaces(&self) -> bool {
        self.by_namespace.load(Ordering::Relaxed)
    }

    /// One operation call and how it ended.
    pub fn call(
        &self,
        operation: &str,
        kind: &'static str,
        namespace: &str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let operation = operation.to_string();
        self.calls
            .get_or_create(&Call {
                operation: operation.clone(),
                kind,
            })
            .inc();
        if let Some(error) = error {
            self.errors
                .get_or_create(&Failed {
                    operation: operation.clone(),
                    error,
                })
                .inc();
        }
        self.latency
            .get_or_create(&Operation { operation })
            .observe(took.as_secs_f64());
        if self.by_namespace.load(Ordering::Relaxed) {
            self.namespace_calls
                .get_or_create(&InNamespace {
                    namespace: self.namespace_label(namespace),
                    kind,
                })
                .inc();
        }
    }

    /// The namespace's own label, or `other` once `MAX_NAMESPACE_LABELS`
    /// namespaces have theirs (callers choose namespaces: the label must stay
    /// bounded).
    fn namespace_label(&self, namespace: &str) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        if labelled.contains(namespace) {
            return namespace.to_string();
        }
        if labelled.len() < MAX_NAMESPACE_LABELS {
            labelled.insert(namespace.to_string());
            return namespace.to_string();
        }
        "other".to_string()
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&Reason { reason }).inc();
    }

    /// One group commit: its writes and how long COMMIT took.
    pub fn group_commit(&self, writes: usize, took: Duration) {
        self.commit_batch.observe(writes as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// One bounded sqlite read, on the writer's idle connection or a pooled one.
    pub fn store_read(&self, on_writer: bool) {
        let connection = if on_writer { "writer" } else { "pool" };
        self.store_reads
            .get_or_create(&ReadConnection { connection })
            .inc();
    }

    pub fn session_opened(&self) {
        self.sessions.inc();
    }

    pub fn session_closed(&self) {
        self.sessions.dec();
    }

    /// The text a scrape gets: the engine's state read now, then every family.
    pub fn render(&self, state: EngineState<'_>) -> String {
        self.read_state(state);
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }

    fn read_state(&self, state: EngineState<'_>) {
        let set = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
        let cache = state.cache;
        set(&self.cache_hits, cache.hits);
        set(&self.cache_misses, cache.misses);
        set(&self.cache_evictions, cache.evictions);
        set(&self.cache_invalidations, cache.invalidations);
        self.cache_entries.set(cache.entries as i64);
        self.cache_bytes.set(cache.bytes as i64);
        for b in &state.breakers {
            let backend = Backend { backend: b.backend };
            let state = match b.state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            self.breaker_state.get_or_create(&backend).set(state);
            set(&self.breaker_opened.get_or_create(&backend), b.opened);
        }
        self.handles.set(state.handles_open as i64);
        self.index_pending.set(state.index_pending as i64);
        set(&self.index_commits, state.index_commits);
        let wal = state.database.with_extension("sqlite3-wal");
        self.store_bytes
            .set((file_size(state.database) + file_size(&wal)) as i64);
        self.index_bytes.set(dir_size(state.index_dir) as i64);
        self.resident.set(resident_bytes() as i64);
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Resident set size, from `/proc/self/statm` (0 where there is none).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}
