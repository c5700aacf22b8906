//! The tantivy search index: a projection of the store, rebuildable at any time.
//!
//! Owns: the index directory, the one indexer thread (the only `IndexWriter`),
//! and the overlay of changes not yet committed to the index. A search reads the
//! committed index and the overlay together, so a write is searchable the moment
//! the store acknowledges it (read-your-writes), long before the next commit.
//!
//! Must not: write to the store, or be trusted over it. Hits carry ids; callers
//! load the records themselves from the store.

#[cfg(test)]
mod agreement_tests;
mod analyzer;
mod indexer;
mod overlay;
mod query;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
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

use crate::model::{Change, Micros, RecordKind, SearchDoc};
use crate::store::{ChangeListener, Store};

pub use indexer::{CommitObserver, IndexStats};
use query::PreparedDoc;
pub use query::{Matcher, parse_boolean};

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
    /// Stemmed words with positions: ranked, phrase and boolean search.
    pub text: Field,
    /// Words as written (lower-cased): prefix and fuzzy search.
    pub text_raw: Field,
    /// 3-character pieces, entities only: substring search.
    pub text_ngram: Field,
    pub tags: Field,
    /// `live` or `superseded`.
    pub status: Field,
    pub time: Field,
    pub weight: Field,
}

const LIVE: &str = "live";
const SUPERSEDED: &str = "superseded";

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer::NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let raw_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer::RAW_NAME)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        kind: b.add_text_field("kind", STRING | STORED),
        namespace: b.add_text_field("namespace", STRING),
        text: b.add_text_field("text", text_options),
        text_raw: b.add_text_field("text_raw", raw_options),
        text_ngram: b.add_text_field(
            "text_ngram",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(analyzer::NGRAM_NAME)
                    .set_index_option(IndexRecordOption::Basic),
            ),
        ),
        tags: b.add_text_field("tags", STRING),
        status: b.add_text_field("status", STRING),
        time: b.add_i64_field("time", INDEXED | FAST),
        weight: b.add_f64_field("weight", INDEXED | FAST),
    };
    (b.build(), fields)
}

/// A text query over one namespace and some record kinds, with filters.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub namespace: String,
    pub kinds: Vec<RecordKind>,
    pub matcher: Matcher,
    /// time >= since
    pub since: Option<Micros>,
    /// time < until
    pub until: Option<Micros>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    pub min_weight: Option<f64>,
    /// Also records replaced by newer versions.
    pub include_superseded: bool,
    /// Never these records (more-like-this leaves out its source).
    pub exclude_ids: Vec<String>,
    pub offset: usize,
    pub limit: usize,
}

impl SearchQuery {
    /// A query with no filters, first page of `limit`.
    pub fn new(namespace: &str, kinds: Vec<RecordKind>, matcher: Matcher, limit: usize) -> Self {
        SearchQuery {
            namespace: namespace.to_string(),
            kinds,
            matcher,
            since: None,
            until: None,
            tags: Vec::new(),
            min_weight: None,
            include_superseded: false,
            exclude_ids: Vec::new(),
            offset: 0,
            limit,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    pub kind: RecordKind,
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// More hits exist past this page.
    pub has_more: bool,
}

/// The index as currently opened; replaced whole when the index is rebuilt.
pub(crate) struct Live {
    pub reader: IndexReader,
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub live: RwLock<Arc<Live>>,
    pub fields: Fields,
    /// Changes the store committed that the index has not: read together with a
    /// searcher under this lock so no change is ever invisible to both.
    pub overlay: RwLock<overlay::Overlay>,
}

impl Shared {
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.read().expect("live index poisoned").clone()
    }
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
    /// rebuilt from the store). `observer` hears the outcome of every commit.
    pub fn open(
        dir: &Path,
        commit_interval_ms: u64,
        commit_max_docs: usize,
        observer: CommitObserver,
    ) -> Result<(SearchIndex, Option<i64>), SearchError> {
        let (schema, fields) = schema();
        std::fs::create_dir_all(dir)?;
        let index = match open_existing(dir, &schema) {
            Some(index) => {
                register_analyzers(&index);
                index
            }
            // Derived data: start over rather than refuse to start.
            None => create_fresh(dir)?,
        };
        let last_seq = index
            .load_metas()?
            .payload
            .as_deref()
            .and_then(indexer::parse_payload);
        let (reader, writer) = reader_and_writer(&index)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            live: RwLock::new(Arc::new(Live { reader })),
            fields,
            overlay: RwLock::new(overlay::Overlay::default()),
        });
        let indexer = indexer::IndexerHandle::start(
            shared.clone(),
            writer,
            last_seq.unwrap_or(0),
            commit_interval_ms,
            commit_max_docs,
            observer,
        )?;
        Ok((SearchIndex { shared, indexer }, last_seq))
    }

    /// The hook the store calls after each commit: the changes become searchable
    /// at once (overlay) and are queued for the indexer.
    pub fn change_listener(&self) -> ChangeListener {
        let shared = self.shared.clone();
        let tx: mpsc::SyncSender<indexer::Msg> = self.indexer.sender();
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
                    self.indexer.send(indexer::Msg::Changes(changes)).await?;
                }
                n
            }
            None => {
                self.indexer.send(indexer::Msg::Clear).await?;
                self.load_everything(store, false).await?
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

    /// Throws the index away and builds a new one from the store while the
    /// server runs (after the index failed). Searches keep answering meanwhile
    /// from the old searcher and the overlay, or from the store when the circuit
    /// breaker is open. Returns the number of records indexed.
    pub async fn rebuild(&self, store: &Store) -> Result<usize, SearchError> {
        let started = std::time::Instant::now();
        self.indexer.recreate().await?;
        let n = self.load_everything(store, true).await?;
        self.flush().await?;
        tracing::info!(
            records = n,
            ms = started.elapsed().as_millis() as u64,
            "search index rebuilt"
        );
        Ok(n)
    }

    /// Feeds every record of the store to the indexer, then the changes made
    /// while it was reading. `upsert`: replace documents already indexed (writes
    /// may run concurrently); otherwise the index is known to be empty.
    async fn load_everything(&self, store: &Store, upsert: bool) -> Result<usize, SearchError> {
        let catch_up = |e: crate::store::StoreError| SearchError::CatchUp(e.to_string());
        let head = store.last_change().await.map_err(catch_up)?;
        let tx = self.indexer.sender();
        let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = counted.clone();
        store
            .scan_search_docs(move |docs| {
                count.fetch_add(docs.len(), std::sync::atomic::Ordering::Relaxed);
                tx.send(indexer::Msg::Docs { docs, upsert })
                    .map_err(|_| "indexer stopped".to_string())
            })
            .await
            .map_err(catch_up)?;
        self.indexer.send(indexer::Msg::SetSeq(head)).await?;
        if upsert {
            // The scan read one snapshot; writes committed since then may have
            // reached the indexer before the scan's older copies. Replaying them
            // after the scan makes the newest version win.
            let later = store.changes_since(head).await.map_err(catch_up)?;
            if !later.is_empty() {
                self.indexer.send(indexer::Msg::Changes(later)).await?;
            }
        }
        Ok(counted.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Commits everything queued to the index and waits for it.
    pub async fn flush(&self) -> Result<(), SearchError> {
        self.indexer.flush().await
    }

    /// Commits what is pending and stops the indexer thread.
    pub fn shutdown(&self) {
        self.indexer.shutdown();
    }

    /// Documents committed to the index (every namespace; the overlay's
    /// uncommitted changes not counted).
    pub fn committed_documents(&self) -> u64 {
        self.shared.live().reader.searcher().num_docs()
    }

    pub fn stats(&self) -> IndexStats {
        self.indexer.stats()
    }

    /// Ranked search over the committed index and the overlay together, on
    /// the caller's thread: a search is bounded by its limit and takes well
    /// under a millisecond, less than a hand-off to another thread and back.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, SearchError> {
        search_blocking(&self.shared, q)
    }

    /// The words a query reduces to after analysis (lower-cased, stemmed, stop
    /// words removed). Empty means nothing in the query can match.
    pub fn query_terms(text: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        analyzer::query_positioned_terms(text)
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }

    /// Analyzed terms with their counts, most frequent first, weighted by how
    /// rare each is in the index (tf × idf): what a "more like this" query uses.
    pub fn characteristic_terms(&self, text: &str, max: usize) -> Vec<String> {
        let live = self.shared.live();
        let searcher = live.reader.searcher();
        let docs = searcher.total_num_docs().unwrap_or(0);
        let mut tf: HashMap<String, u32> = HashMap::new();
        for t in analyzer::terms_with_repeats(text) {
            *tf.entry(t).or_default() += 1;
        }
        let mut weighted: Vec<(f32, String)> = tf
            .into_iter()
            .map(|(t, n)| {
                let df = searcher
                    .doc_freq(&Term::from_field_text(self.shared.fields.text, &t))
                    .unwrap_or(0);
                (n as f32 * query::idf(docs.max(1), df), t)
            })
            .collect();
        weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        weighted.into_iter().take(max).map(|(_, t)| t).collect()
    }
}

/// Answers a query from documents read straight from the store, without the
/// index: the degraded path while the index is down. Same matching rules and
/// BM25, with statistics counted over the scanned documents.
pub fn search_scanned(q: &SearchQuery, docs: Vec<SearchDoc>) -> SearchResults {
    let docs: Vec<PreparedDoc> = docs
        .into_iter()
        .filter(|d| q.kinds.contains(&d.kind) && d.namespace == q.namespace)
        .map(PreparedDoc::new)
        .collect();
    let mut stats = query::ScanStats {
        docs: docs.len() as u64,
        df: HashMap::new(),
        avg: [0.0, 0.0],
    };
    if !docs.is_empty() {
        let n = docs.len() as f32;
        stats.avg = [
            docs.iter().map(|d| d.stems.len()).sum::<usize>() as f32 / n,
            docs.iter().map(|d| d.raw.len()).sum::<usize>() as f32 / n,
        ];
    }
    let mut matched = Vec::new();
    for d in &docs {
        let mut hits = Vec::new();
        let ok = query::matches(&q.matcher, d, &mut hits);
        let mut seen = std::collections::HashSet::new();
        for h in &hits {
            if seen.insert((h.which, h.term.clone())) {
                *stats.df.entry((h.which, h.term.clone())).or_default() += 1;
            }
        }
        if ok && overlay::passes_filters(&d.doc, q) {
            matched.push((d, hits));
        }
    }
    let mut hits: Vec<SearchHit> = matched
        .into_iter()
        .map(|(d, h)| SearchHit {
            id: d.doc.id.clone(),
            kind: d.doc.kind,
            score: query::score(d, &h, &mut stats),
        })
        .collect();
    page(&mut hits, q)
}

/// Whether one document holds every word of `query` (analyzed as a search
/// analyzes them: case, word forms and stop words aside): how reminders watch
/// writes. A search ranks records holding any of the words; a reminder waits
/// for all of them.
pub fn matches_words(query: &str, doc: &SearchDoc) -> bool {
    let Some(Matcher::Any(terms)) = Matcher::words(query) else {
        return false;
    };
    let every = Matcher::All(terms);
    query::matches(&every, &PreparedDoc::new(doc.clone()), &mut Vec::new())
}

/// Sorts by score (ties: newest id first) and cuts out the requested page.
fn page(hits: &mut Vec<SearchHit>, q: &SearchQuery) -> SearchResults {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.id.cmp(&a.id)));
    let has_more = hits.len() > q.offset.saturating_add(q.limit);
    let hits = std::mem::take(hits)
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .collect();
    SearchResults { hits, has_more }
}

fn register_analyzers(index: &Index) {
    index
        .tokenizers()
        .register(analyzer::NAME, analyzer::analyzer());
    index
        .tokenizers()
        .register(analyzer::RAW_NAME, analyzer::raw_analyzer());
    index
        .tokenizers()
        .register(analyzer::NGRAM_NAME, analyzer::ngram_analyzer());
}

/// Empties `dir` and creates a new index in it.
pub(crate) fn create_fresh(dir: &Path) -> Result<Index, SearchError> {
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    let index = Index::create_in_dir(dir, schema().0)?;
    register_analyzers(&index);
    Ok(index)
}

pub(crate) fn reader_and_writer(
    index: &Index,
) -> Result<(IndexReader, tantivy::IndexWriter), SearchError> {
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
    Ok((reader, writer))
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
    let kinds: Vec<(Occur, Box<dyn Query>)> = q
        .kinds
        .iter()
        .map(|k| (Occur::Should, term(f.kind, k.as_str())))
        .collect();
    let mut clauses = vec![
        (Occur::Must, term(f.namespace, &q.namespace)),
        (
            Occur::Must,
            Box::new(BooleanQuery::new(kinds)) as Box<dyn Query>,
        ),
    ];
    if !q.include_superseded {
        clauses.push((Occur::Must, term(f.status, LIVE)));
    }
    for tag in &q.tags {
        clauses.push((Occur::Must, term(f.tags, tag)));
    }
    for id in &q.exclude_ids {
        clauses.push((Occur::MustNot, term(f.id, id)));
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

/// The overlay's records for one query: id → the newest document (None: deleted).
type Pending = HashMap<String, Option<Arc<PreparedDoc>>>;

/// Ranked search over the committed index and the overlay, taken together.
fn search_blocking(shared: &Shared, q: &SearchQuery) -> Result<SearchResults, SearchError> {
    let f = &shared.fields;
    if q.limit == 0 || q.kinds.is_empty() {
        return Ok(SearchResults {
            hits: Vec::new(),
            has_more: false,
        });
    }
    // One consistent view: the searcher and the overlay taken under one lock.
    let mut terms = Vec::new();
    query::scored_terms(&q.matcher, &mut terms);
    let (searcher, pending, overlay_stats) = {
        let overlay = shared.overlay.read().expect("overlay poisoned");
        (
            shared.live().reader.searcher(),
            overlay.snapshot(&q.namespace, &q.kinds),
            overlay.stats_for(&terms),
        )
    };

    let mut clauses = filter_query(f, q);
    clauses.push((Occur::Must, query::compile(&q.matcher, f, &searcher)?));
    let query = BooleanQuery::new(clauses);
    let mut stats = query::IndexStats::new(&searcher, f, overlay_stats)?;
    let mut hits = committed_hits(&searcher, &query, &stats, f, &pending, q)?;
    hits.extend(overlay_hits(&pending, q, &mut stats));
    Ok(page(&mut hits, q))
}

/// The committed index's hits for `query` but the records the overlay holds
/// newer copies of: enough for the page and one more, when the index has them.
fn committed_hits(
    searcher: &Searcher,
    query: &BooleanQuery,
    stats: &query::IndexStats<'_>,
    f: &Fields,
    pending: &Pending,
    q: &SearchQuery,
) -> Result<Vec<SearchHit>, SearchError> {
    // Committed copies of overlaid records are stale and dropped, so fetch more
    // until a page survives the dropping or the index has no more.
    // Nothing a client sends sizes an allocation: the index holds at most
    // `num_docs` hits, whatever offset a cursor carries.
    let wanted = q.offset.saturating_add(q.limit).saturating_add(1);
    let most = usize::try_from(searcher.num_docs())
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut fetch = wanted.min(most);
    loop {
        let top = searcher.search_with_statistics_provider(
            query,
            &TopDocs::with_limit(fetch).order_by_score(),
            stats,
        )?;
        let exhausted = top.len() < fetch;
        let mut kept = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            kept.extend(committed_hit(&doc, score, f).filter(|h| !pending.contains_key(&h.id)));
        }
        // At most `pending.len()` hits can be dropped, so that bound always ends it.
        let next = fetch
            .saturating_mul(2)
            .min(wanted.saturating_add(pending.len()))
            .min(most);
        if exhausted || kept.len() >= wanted || next <= fetch {
            return Ok(kept);
        }
        fetch = next;
    }
}

/// The hit a committed document scored; `None` when it lacks its id or kind.
fn committed_hit(doc: &TantivyDocument, score: f32, f: &Fields) -> Option<SearchHit> {
    let id = doc.get_first(f.id).and_then(|v| v.as_str())?;
    let kind = doc
        .get_first(f.kind)
        .and_then(|v| v.as_str())
        .and_then(RecordKind::parse)?;
    Some(SearchHit {
        id: id.to_string(),
        kind,
        score,
    })
}

/// The overlay's documents that pass `q`, scored with BM25 over the committed
/// index's statistics so they rank with its hits.
fn overlay_hits(
    pending: &Pending,
    q: &SearchQuery,
    stats: &mut query::IndexStats<'_>,
) -> Vec<SearchHit> {
    let mut hits = Vec::new();
    for pending_doc in pending.values().flatten() {
        if !overlay::passes_filters(&pending_doc.doc, q) {
            continue;
        }
        let mut term_hits = Vec::new();
        if query::matches(&q.matcher, pending_doc, &mut term_hits) {
            hits.push(SearchHit {
                id: pending_doc.doc.id.clone(),
                kind: pending_doc.doc.kind,
                score: query::score(pending_doc, &term_hits, stats),
            });
        }
    }
    hits
}

/// Marks, in `text`, the words `matcher` matched with `**…**`, and cuts a window
/// of about `max_chars` around the densest run of matches. Whole text when short.
pub fn snippet(text: &str, matcher: &Matcher, max_chars: usize) -> String {
    let tokens = analyzer::raw_tokens(text);
    let marks: Vec<(usize, usize)> = tokens
        .iter()
        .filter(|(_, _, w)| matcher.highlights(w, analyzer::stem(w).as_deref()))
        .map(|(a, b, _)| (*a, *b))
        .collect();
    // The window start: the match with the most other matches within reach.
    // Marks are in text order, so one sliding window finds it in linear time.
    let (mut from, mut to) = (0, text.len());
    if text.len() > max_chars {
        let (mut best, mut best_n, mut end) = (0, 0, 0);
        for (i, &(a, _)) in marks.iter().enumerate() {
            end = end.max(i);
            while end < marks.len() && marks[end].0 < a + max_chars {
                end += 1;
            }
            if end - i > best_n {
                (best, best_n) = (a, end - i);
            }
        }
        from = floor_boundary(text, best.saturating_sub(max_chars / 5));
        to = floor_boundary(text, (from + max_chars).min(text.len()));
    }
    let mut out = String::with_capacity(to - from + 16);
    if from > 0 {
        out.push('…');
    }
    let mut at = from;
    for &(a, b) in marks.iter().filter(|(a, b)| *a >= from && *b <= to) {
        out.push_str(&text[at..a]);
        out.push_str("**");
        out.push_str(&text[a..b]);
        out.push_str("**");
        at = b;
    }
    out.push_str(&text[at..to]);
    if to < text.len() {
        out.push('…');
    }
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_mark_matches_and_window_long_text() {
        let m = Matcher::words("staging database").unwrap();
        assert_eq!(
            snippet("The staging DB is a database", &m, 200),
            "The **staging** DB is a **database**"
        );
        let long = format!(
            "{} staging database here {}",
            "x ".repeat(200),
            "y ".repeat(200)
        );
        let s = snippet(&long, &m, 80);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("**staging** **database**"), "{s}");
        // 80 chars of text, two ellipses, four pairs of stars.
        assert!(s.chars().count() <= 90, "{s}");
    }

    #[test]
    fn snippets_of_texts_full_of_matches_are_linear() {
        let m = Matcher::words("zz").unwrap();
        let text = "zz ".repeat(40_000);
        // 40,000 matches: the quadratic window search took minutes on this.
        let s = snippet(&text, &m, 200);
        assert!(s.starts_with("**zz**"), "{s}");
        assert!(s.ends_with('…'), "{s}");
    }
}
