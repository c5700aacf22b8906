//! The tantivy search index: a projection of the store, rebuildable at any time.
//!
//! Owns: the index directory, the one indexer thread (the only `IndexWriter`),
//! and the overlay of changes not yet committed to the index. A search reads the
//! committed index and the overlay together, so a write is searchable the moment
//! the store acknowledges it (read-your-writes), long before the next commit.
//!
//! Must not: write to the store, or be trusted over it. Hits carry ids; callers
//! load the records themselves from the store.

mod analyzer;
mod indexer;
mod overlay;

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock, mpsc};

use tantivy::collector::TopDocs;
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument, Term};
use thiserror::Error;

use crate::model::{Change, Micros, RecordKind};
use crate::store::{ChangeListener, Store};

pub use indexer::IndexStats;

/// Directory under the data dir holding the index.
pub const INDEX_DIR_NAME: &str = "index";
/// Memory the single indexing thread may buffer before it must flush a segment.
const WRITER_MEMORY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum SearchError {
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the indexer has stopped")]
    IndexerGone,
    #[error("cannot catch up with the store: {0}")]
    CatchUp(String),
}

/// The fields of the one tantivy schema every record kind shares.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    pub id: Field,
    pub kind: Field,
    pub namespace: Field,
    pub text: Field,
    pub tags: Field,
    pub time: Field,
    pub weight: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer::NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        kind: b.add_text_field("kind", STRING),
        namespace: b.add_text_field("namespace", STRING),
        text: b.add_text_field("text", text_options),
        tags: b.add_text_field("tags", STRING),
        time: b.add_i64_field("time", INDEXED | FAST),
        weight: b.add_f64_field("weight", INDEXED | FAST),
    };
    (b.build(), fields)
}

/// A ranked text query over one namespace and record kind.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub namespace: String,
    pub kind: RecordKind,
    pub text: String,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    pub min_weight: Option<f64>,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// More hits exist past this page.
    pub has_more: bool,
}

pub(crate) struct Shared {
    pub reader: IndexReader,
    pub fields: Fields,
    /// Changes the store committed that the index has not: read together with a
    /// searcher under this lock so no change is ever invisible to both.
    pub overlay: RwLock<overlay::Overlay>,
}

/// Cheap handle to the index; clone freely.
#[derive(Clone)]
pub struct SearchIndex {
    shared: Arc<Shared>,
    indexer: indexer::IndexerHandle,
}

impl SearchIndex {
    /// Opens the index in `dir` (created if missing; rebuilt from scratch if it
    /// cannot be opened, since it is derived) and starts the indexer thread.
    /// Returns the index and the last change number it holds (None: empty, must be
    /// rebuilt from the store).
    pub fn open(
        dir: &Path,
        commit_interval_ms: u64,
        commit_max_docs: usize,
    ) -> Result<(SearchIndex, Option<i64>), SearchError> {
        let (schema, fields) = schema();
        std::fs::create_dir_all(dir)?;
        let index = match open_existing(dir, &schema) {
            Some(index) => index,
            None => {
                // Derived data: start over rather than refuse to start.
                for entry in std::fs::read_dir(dir)? {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Index::create_in_dir(dir, schema)?
            }
        };
        index
            .tokenizers()
            .register(analyzer::NAME, analyzer::analyzer());
        let last_seq = index
            .load_metas()?
            .payload
            .as_deref()
            .and_then(indexer::parse_payload);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        let shared = Arc::new(Shared {
            reader,
            fields,
            overlay: RwLock::new(overlay::Overlay::default()),
        });
        let indexer = indexer::IndexerHandle::start(
            shared.clone(),
            writer,
            last_seq.unwrap_or(0),
            commit_interval_ms,
            commit_max_docs,
        )?;
        Ok((SearchIndex { shared, indexer }, last_seq))
    }

    /// The hook the store calls after each commit: the changes become searchable
    /// at once (overlay) and are queued for the indexer.
    pub fn change_listener(&self) -> ChangeListener {
        let shared = self.shared.clone();
        let tx: mpsc::Sender<indexer::Msg> = self.indexer.sender();
        Arc::new(move |changes: Vec<Change>| {
            shared
                .overlay
                .write()
                .expect("overlay poisoned")
                .apply(&changes);
            let _ = tx.send(indexer::Msg::Changes(changes));
        })
    }

    /// Brings the index up to date with the store: replays the change log past
    /// `last_seq`, or rebuilds everything when the index is new. Waits for the
    /// result to be committed.
    pub async fn catch_up(&self, store: &Store, last_seq: Option<i64>) -> Result<(), SearchError> {
        let started = std::time::Instant::now();
        let replayed = match last_seq {
            Some(seq) => {
                let changes = store
                    .changes_since(seq)
                    .await
                    .map_err(|e| SearchError::CatchUp(e.to_string()))?;
                let n = changes.len();
                if n > 0 {
                    self.indexer.send(indexer::Msg::Changes(changes))?;
                }
                n
            }
            None => {
                let head = store
                    .last_change()
                    .await
                    .map_err(|e| SearchError::CatchUp(e.to_string()))?;
                self.indexer.send(indexer::Msg::Clear)?;
                let tx = self.indexer.sender();
                let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let count = counted.clone();
                store
                    .scan_search_docs(move |docs| {
                        count.fetch_add(docs.len(), std::sync::atomic::Ordering::Relaxed);
                        tx.send(indexer::Msg::Docs(docs))
                            .map_err(|_| "indexer stopped".to_string())
                    })
                    .await
                    .map_err(|e| SearchError::CatchUp(e.to_string()))?;
                self.indexer.send(indexer::Msg::SetSeq(head))?;
                counted.load(std::sync::atomic::Ordering::Relaxed)
            }
        };
        self.flush().await?;
        tracing::info!(
            replayed,
            rebuilt = last_seq.is_none(),
            ms = started.elapsed().as_millis() as u64,
            "search index caught up"
        );
        Ok(())
    }

    /// Commits everything queued to the index and waits for it.
    pub async fn flush(&self) -> Result<(), SearchError> {
        self.indexer.flush().await
    }

    /// Commits what is pending and stops the indexer thread.
    pub fn shutdown(&self) {
        self.indexer.shutdown();
    }

    pub fn stats(&self) -> IndexStats {
        self.indexer.stats()
    }

    /// Ranked search: BM25 over the analyzed query words (any word may match; more
    /// and rarer words rank higher), restricted by namespace, kind and filters.
    pub async fn search(&self, q: SearchQuery) -> Result<SearchResults, SearchError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || search_blocking(&shared, &q))
            .await
            .map_err(|_| SearchError::IndexerGone)?
    }

    /// The words a query reduces to after analysis (lower-cased, stemmed, stop
    /// words removed). Empty means nothing in the query can match.
    pub fn query_terms(text: &str) -> Vec<String> {
        analyzer::terms(text)
    }
}

fn open_existing(dir: &Path, schema: &Schema) -> Option<Index> {
    if !dir.join("meta.json").exists() {
        return None;
    }
    match Index::open_in_dir(dir) {
        Ok(index) if index.schema() == *schema => Some(index),
        Ok(_) => {
            tracing::warn!("search index schema changed; rebuilding it from the store");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "search index unreadable; rebuilding it from the store");
            None
        }
    }
}

fn filter_query(f: &Fields, q: &SearchQuery) -> Vec<(Occur, Box<dyn Query>)> {
    let term = |field, value: &str| -> Box<dyn Query> {
        Box::new(ConstScoreQuery::new(
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            )),
            0.0,
        ))
    };
    let mut clauses = vec![
        (Occur::Must, term(f.namespace, &q.namespace)),
        (Occur::Must, term(f.kind, q.kind.as_str())),
    ];
    for tag in &q.tags {
        clauses.push((Occur::Must, term(f.tags, tag)));
    }
    if q.since.is_some() || q.until.is_some() {
        let lower = q.since.map_or(Bound::Unbounded, |t| {
            Bound::Included(Term::from_field_i64(f.time, t))
        });
        let upper = q.until.map_or(Bound::Unbounded, |t| {
            Bound::Excluded(Term::from_field_i64(f.time, t))
        });
        clauses.push((
            Occur::Must,
            Box::new(ConstScoreQuery::new(
                Box::new(RangeQuery::new(lower, upper)),
                0.0,
            )),
        ));
    }
    if let Some(min) = q.min_weight {
        let lower = Bound::Included(Term::from_field_f64(f.weight, min));
        clauses.push((
            Occur::Must,
            Box::new(ConstScoreQuery::new(
                Box::new(RangeQuery::new(lower, Bound::Unbounded)),
                0.0,
            )),
        ));
    }
    clauses
}

fn search_blocking(shared: &Shared, q: &SearchQuery) -> Result<SearchResults, SearchError> {
    let f = &shared.fields;
    let terms = analyzer::terms(&q.text);
    if terms.is_empty() || q.limit == 0 {
        return Ok(SearchResults {
            hits: Vec::new(),
            has_more: false,
        });
    }
    // One consistent view: the searcher and the overlay taken under one lock.
    let (searcher, pending) = {
        let overlay = shared.overlay.read().expect("overlay poisoned");
        (
            shared.reader.searcher(),
            overlay.snapshot(&q.namespace, q.kind),
        )
    };

    let text_clauses: Vec<(Occur, Box<dyn Query>)> = terms
        .iter()
        .map(|t| {
            let q: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(f.text, t),
                IndexRecordOption::WithFreqs,
            ));
            (Occur::Should, q)
        })
        .collect();
    let mut clauses = filter_query(f, q);
    clauses.push((Occur::Must, Box::new(BooleanQuery::new(text_clauses))));
    let query = BooleanQuery::new(clauses);

    // Committed copies of overlaid records are stale and dropped, so fetch more
    // until a page survives the dropping or the index has no more.
    let wanted = q.offset + q.limit + 1;
    let mut fetch = wanted;
    let mut hits: Vec<SearchHit> = loop {
        let top = searcher.search(&query, &TopDocs::with_limit(fetch).order_by_score())?;
        let exhausted = top.len() < fetch;
        let mut kept = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let Some(id) = doc.get_first(f.id).and_then(|v| v.as_str()) else {
                continue;
            };
            if !pending.contains_key(id) {
                kept.push(SearchHit {
                    id: id.to_string(),
                    score,
                });
            }
        }
        // At most `pending.len()` hits can be dropped, so that bound always ends it.
        let next = fetch.saturating_mul(2).min(wanted + pending.len());
        if exhausted || kept.len() >= wanted || next <= fetch {
            break kept;
        }
        fetch = next;
    };
    let stats = Bm25Stats::new(&searcher, f.text, &terms)?;
    for pending_doc in pending.values().flatten() {
        if !overlay::passes_filters(&pending_doc.doc, q) {
            continue;
        }
        if let Some(score) = stats.score(&pending_doc.terms) {
            hits.push(SearchHit {
                id: pending_doc.doc.id.clone(),
                score,
            });
        }
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.id.cmp(&a.id)));
    let has_more = hits.len() > q.offset + q.limit;
    let hits = hits.into_iter().skip(q.offset).take(q.limit).collect();
    Ok(SearchResults { hits, has_more })
}

/// BM25 for documents not yet in the index, computed with the committed index's
/// statistics and tantivy's constants so overlay and index scores rank together.
struct Bm25Stats {
    /// (term, idf)
    idf: Vec<(String, f32)>,
    avg_len: f32,
}

const BM25_K1: f32 = 1.2;
const BM25_B: f32 = 0.75;

impl Bm25Stats {
    fn new(searcher: &Searcher, field: Field, terms: &[String]) -> Result<Self, SearchError> {
        let docs = searcher.total_num_docs()?;
        let tokens = searcher.total_num_tokens(field)?;
        let avg_len = if docs == 0 {
            0.0
        } else {
            tokens as f32 / docs as f32
        };
        let mut idf = Vec::with_capacity(terms.len());
        for t in terms {
            let df = searcher
                .doc_freq(&Term::from_field_text(field, t))?
                .min(docs);
            let x = ((docs - df) as f32 + 0.5) / (df as f32 + 0.5);
            idf.push((t.clone(), (1.0 + x).ln()));
        }
        Ok(Bm25Stats { idf, avg_len })
    }

    /// `doc_terms`: the document's analyzed terms, with repeats.
    fn score(&self, doc_terms: &[String]) -> Option<f32> {
        let len = doc_terms.len() as f32;
        let avg = if self.avg_len > 0.0 {
            self.avg_len
        } else {
            len.max(1.0)
        };
        let mut score = 0.0;
        let mut matched = false;
        for (term, idf) in &self.idf {
            let tf = doc_terms.iter().filter(|t| *t == term).count() as f32;
            if tf > 0.0 {
                matched = true;
                let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len / avg);
                score += idf * tf * (BM25_K1 + 1.0) / (tf + norm);
            }
        }
        matched.then_some(score)
    }
}
