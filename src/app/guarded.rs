//! The backends behind their circuit breakers, all three in one place: the
//! store (one permit per operation call, taken by the pipeline), the search
//! index (a failing index is answered from a scan of the store, flagged
//! `degraded`) and graph snapshots. Each breaker is judged on the type of an
//! outcome (`Breaker::settle`), never on an error's text.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::Notify;

use super::{AppState, Inner};
use crate::config::Config;
use crate::error::OpError;
use crate::graph::Snapshot;
use crate::model::RecordKind;
use crate::resilience::breaker::{Breaker, BreakerReport, BreakerState, Permit};
use crate::resilience::cache::CacheStats;
use crate::search::{CommitObserver, IndexStats, SearchQuery, SearchResults};

pub(super) struct Breakers {
    store: Breaker,
    search: Arc<Breaker>,
    graph: Breaker,
}

impl Breakers {
    pub(super) fn new(config: &Config) -> Self {
        let breaker = |backend| {
            Breaker::new(
                backend,
                config.breaker_threshold,
                Duration::from_millis(config.breaker_open_ms),
            )
        };
        Breakers {
            store: breaker("store"),
            search: Arc::new(breaker("search")),
            graph: breaker("graph"),
        }
    }

    /// What the indexer calls after each commit: a failed commit counts
    /// against the search breaker, and the one that opens it asks for a rebuild.
    pub(super) fn index_commit_observer(&self, rebuild: Arc<Notify>) -> CommitObserver {
        let breaker = self.search.clone();
        Arc::new(move |outcome: Result<(), &str>| match outcome {
            Ok(()) => breaker.success(),
            Err(e) => {
                if breaker.failure(&format!("index commit failed: {e}")) {
                    rebuild.notify_one();
                }
            }
        })
    }
}

/// A search answer and whether it came from the store scan instead of the index.
pub struct Searched {
    pub results: SearchResults,
    pub degraded: bool,
}

/// One operation call's permission to use the store. Settle it with the call's
/// outcome; dropped unsettled (the call was cancelled) it frees the probe.
pub struct StoreCall<'a> {
    breaker: &'a Breaker,
    settled: bool,
}

impl StoreCall<'_> {
    pub fn settle<T>(mut self, outcome: &Result<T, OpError>) {
        self.settled = true;
        self.breaker.settle(outcome);
    }
}

impl Drop for StoreCall<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandon();
        }
    }
}

/// What `/health` and `meta_health` report.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    /// `ok`, or `degraded` when a breaker is not closed or a rebuild runs
    /// (answers are still correct, only slower).
    pub status: String,
    pub version: String,
    pub uptime_ms: u64,
    pub breakers: Vec<BreakerReport>,
    /// The search index is being rebuilt from the store.
    pub rebuilding_index: bool,
    pub search_index: IndexStats,
    pub cache: CacheSummary,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CacheSummary {
    pub capacity: usize,
    pub entries: usize,
    pub hit_rate: f64,
}

impl AppState {
    /// Permission for one operation call to use the store, or why not: the
    /// store has been failing and its breaker is open.
    pub fn store_call(&self) -> Result<StoreCall<'_>, OpError> {
        let breaker = &self.0.breakers.store;
        if let Permit::Refuse(wait) = breaker.permit() {
            let why = breaker.report().last_error.unwrap_or_default();
            return Err(OpError::Unavailable(format!(
                "the store is failing ({why}); engram stopped sending it calls for a moment: retry in {} ms",
                wait.as_millis().max(1)
            )));
        }
        Ok(StoreCall {
            breaker,
            settled: false,
        })
    }

    /// Ranked search through the search breaker. While the index is failing
    /// (breaker open) or being rebuilt, answers come from a scan of the store:
    /// the same matches, slower, flagged `degraded`.
    pub async fn search(&self, q: SearchQuery) -> Result<Searched, OpError> {
        let breaker = &self.0.breakers.search;
        if !self.0.rebuilding.load(Ordering::Acquire) && breaker.permit() == Permit::Call {
            // The search runs here, to its end: a slow one is answered, and
            // counts against the breaker so the next ones scan the store
            // while the index recovers.
            let timeout = Duration::from_millis(self.0.config.search_timeout_ms);
            let started = Instant::now();
            let error = match self.0.search.search(&q) {
                Ok(results) if started.elapsed() <= timeout => {
                    breaker.success();
                    return Ok(Searched {
                        results,
                        degraded: false,
                    });
                }
                Ok(results) => {
                    let error = format!("search took longer than {} ms", timeout.as_millis());
                    tracing::warn!(error, "slow search; the next ones may scan the store");
                    if breaker.failure(&error) {
                        self.0.rebuild_wanted.notify_one();
                    }
                    return Ok(Searched {
                        results,
                        degraded: false,
                    });
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!(error, "search failed; answering from the store");
            if breaker.failure(&error) {
                self.0.rebuild_wanted.notify_one();
            }
        }
        let docs = self
            .0
            .store
            .search_docs_in(&q.namespace, q.kinds.clone())
            .await?;
        let results = tokio::task::spawn_blocking(move || crate::search::search_scanned(&q, docs))
            .await
            .map_err(|e| OpError::from_join("the store scan", e))?;
        Ok(Searched {
            results,
            degraded: true,
        })
    }

    /// The namespace's graph as of now: the snapshot in hand if no entity or
    /// relation changed since it was built, else a new one from the store.
    /// Guarded by the graph breaker: a build that fails or takes longer than
    /// the search timeout counts against it (and only it).
    pub async fn graph(&self, ns: &str) -> Result<Arc<Snapshot>, OpError> {
        let scopes = [RecordKind::Entity.scope(ns), RecordKind::Relation.scope(ns)];
        // Generations only grow, so their sum changes whenever one does.
        let generation = self.0.cache.generations(&scopes).iter().sum();
        if let Some(s) = self.0.graphs.get(ns, generation) {
            return Ok(s);
        }
        let breaker = &self.0.breakers.graph;
        if let Permit::Refuse(wait) = breaker.permit() {
            return Err(OpError::Unavailable(format!(
                "the graph view is failing ({}); retry in {} ms",
                breaker.report().last_error.unwrap_or_default(),
                wait.as_millis().max(1)
            )));
        }
        let timeout = Duration::from_millis(self.0.config.search_timeout_ms);
        let store = self.0.store.clone();
        let ns_owned = ns.to_string();
        let build = async move {
            let rows = store.graph_rows(&ns_owned).await?;
            tokio::task::spawn_blocking(move || Snapshot::build(rows))
                .await
                .map_err(|e| OpError::from_join("building the graph", e))
        };
        let outcome = match tokio::time::timeout(timeout, build).await {
            Ok(built) => built,
            // Unavailable, not Timeout: this counts against the graph breaker
            // here, not also against the store's.
            Err(_) => Err(OpError::Unavailable(format!(
                "building the graph took longer than {} ms: retry in a moment",
                timeout.as_millis()
            ))),
        };
        match outcome {
            Ok(snapshot) => {
                breaker.success();
                let snapshot = Arc::new(snapshot);
                self.0.graphs.put(ns, generation, snapshot.clone());
                Ok(snapshot)
            }
            Err(e) => {
                breaker.failure(&e.to_string());
                Err(e)
            }
        }
    }

    pub fn health(&self) -> Health {
        let b = &self.0.breakers;
        let breakers = vec![b.store.report(), b.search.report(), b.graph.report()];
        let rebuilding = self.0.rebuilding.load(Ordering::Acquire);
        let ok = !rebuilding && breakers.iter().all(|b| b.state == BreakerState::Closed);
        let cache = self.0.cache.stats();
        Health {
            status: if ok { "ok" } else { "degraded" }.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: self.0.started.elapsed().as_millis() as u64,
            breakers,
            rebuilding_index: rebuilding,
            search_index: self.0.search.stats(),
            cache: CacheSummary {
                capacity: cache.capacity,
                entries: cache.entries,
                hit_rate: cache.hit_rate,
            },
        }
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.0.cache.stats()
    }

    /// The query cache (the pipeline serves reads from it).
    pub fn cache(&self) -> &crate::resilience::cache::QueryCache {
        &self.0.cache
    }
}

impl AppState {
    /// Rebuilds the search index from the store now, while engram keeps
    /// answering (searches take the store scan meanwhile); returns the records
    /// indexed. Refused while another rebuild runs.
    pub async fn reindex(&self) -> Result<usize, OpError> {
        let inner = &self.0;
        if inner
            .rebuilding
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(OpError::Conflict(
                "the search index is being rebuilt already: wait for it (meta_health shows                  `rebuilding_index`), then search"
                    .into(),
            ));
        }
        tracing::info!("rebuilding the search index on request");
        let outcome = inner.search.rebuild(&inner.store).await;
        inner.rebuilding.store(false, Ordering::Release);
        match outcome {
            Ok(n) => {
                inner.breakers.search.success();
                Ok(n)
            }
            Err(e) => {
                inner.rebuild_wanted.notify_one();
                Err(OpError::Unavailable(format!(
                    "the rebuild failed ({e}); engram retries it in the background"
                )))
            }
        }
    }
}

/// Rebuilds the search index from the store (the maintenance task calls this
/// when the search breaker asks); searches take the store scan meanwhile. A
/// failed rebuild is retried after the breaker's open time.
pub(super) async fn rebuild_index(inner: &Inner) {
    inner.rebuilding.store(true, Ordering::Release);
    tracing::warn!("rebuilding the search index from the store");
    let outcome = inner.search.rebuild(&inner.store).await;
    inner.rebuilding.store(false, Ordering::Release);
    match outcome {
        Ok(_) => inner.breakers.search.success(),
        Err(e) => {
            tracing::error!(error = %e, "search index rebuild failed; retrying");
            inner
                .breakers
                .search
                .failure(&format!("rebuild failed: {e}"));
            let (retry, wait) = (inner.rebuild_wanted.clone(), inner.config.breaker_open_ms);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                retry.notify_one();
            });
        }
    }
}
