//! Ranked search: the semantic layer's fact searches (BM25, phrase,
//! as-you-type, typo-tolerant, boolean, hybrid, more-like-this) and
//! `memory_search`, one ranked list across layers.
//!
//! Every search runs the same steps: check the query, start the page
//! (`listing::Offsets`), search through the search breaker (`AppState::search`),
//! load the hits' records, snippet them off the runtime, fit the budget, and
//! hand back the next cursor. What differs is the matcher and the records.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::listing::{HitPage, Hits, Offsets, Span, Window, off_runtime};
use super::semantic::FACT_ID;
use super::{OpCtx, Operation, check_id, check_text, check_unit, normalize_tags};
use crate::error::OpError;
use crate::model::{Fact, Micros, RecordKind, micros_to_datetime, now_micros};
use crate::search::{Matcher, SearchHit, SearchQuery, snippet};

/// Characters of context in a hit's snippet.
const SNIPPET_CHARS: usize = 200;
/// Hybrid search re-ranks at most this many of the best text matches.
const HYBRID_CANDIDATES: usize = 200;
/// Terms a more-like-this query keeps from its source fact.
const SIMILAR_TERMS: usize = 25;

const ONLY_COMMON_WORDS: &str =
    "`query` has only very common words: add a word that names something";

// (Not a doc comment: schemars would copy it into every input that flattens it.)
// Which facts a search covers beyond the window: how confident, and whether
// superseded versions count.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct FactScope {
    /// Only facts at least this confident (0.0 to 1.0).
    pub min_confidence: Option<f64>,
    /// Also include facts that newer ones superseded (default false).
    #[serde(default)]
    pub include_superseded: bool,
}

impl FactScope {
    pub fn check(&self) -> Result<(), OpError> {
        match self.min_confidence {
            Some(m) => check_unit("min_confidence", m),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FactHit {
    /// Relevance; higher is better. Comparable within one answer only.
    pub score: f32,
    /// The matching part of the fact, matched words marked with **…**.
    pub snippet: String,
    pub fact: Fact,
    /// Hybrid search only: the parts the score blends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<HybridComponents>,
}

/// A fact search's answer.
pub type SearchOutput = Hits<FactHit>;

/// A fact search's matched facts, before paging.
struct Found {
    hits: Vec<FactHit>,
    more: bool,
    degraded: bool,
}

/// Runs a fact search and loads the hits: the shared body of the fact searches.
async fn search_facts(
    cx: &OpCtx,
    matcher: Matcher,
    (span, scope): (Span, &FactScope),
    exclude: Option<String>,
    (offset, limit): (usize, usize),
) -> Result<Found, OpError> {
    let searched = cx
        .app
        .search(SearchQuery {
            since: span.since,
            until: span.until,
            tags: span.tags,
            min_weight: scope.min_confidence,
            include_superseded: scope.include_superseded,
            exclude_ids: exclude.into_iter().collect(),
            offset,
            ..SearchQuery::new(
                cx.namespace(),
                vec![RecordKind::Fact],
                matcher.clone(),
                limit,
            )
        })
        .await?;
    let ids: Vec<String> = searched.results.hits.iter().map(|h| h.id.clone()).collect();
    let facts = cx.store().facts().get_many(cx.namespace(), ids).await?;
    let mut by_id: HashMap<String, Fact> = facts.into_iter().map(|f| (f.id.clone(), f)).collect();
    let ranked = searched.results.hits;
    // Snippets read whole texts (up to 64 KB each): off the runtime's threads.
    let hits: Vec<FactHit> = off_runtime(move || {
        ranked
            .into_iter()
            .filter_map(|h| {
                by_id.remove(&h.id).map(|fact| FactHit {
                    score: h.score,
                    snippet: snippet(&fact.content, &matcher, SNIPPET_CHARS),
                    fact,
                    components: None,
                })
            })
            .collect()
    })
    .await?;
    cx.app
        .record_fact_access(cx.namespace(), hits.iter().map(|h| h.fact.id.clone()));
    Ok(Found {
        hits,
        more: searched.results.has_more,
        degraded: searched.degraded,
    })
}

/// Records of one kind found by a ranked search, best first, with their scores.
pub(super) struct Ranked<T> {
    pub hits: Vec<(f32, T)>,
    /// More hits exist past this page.
    pub more: bool,
    pub degraded: bool,
}

/// Runs `query` through the search breaker and loads the records behind its
/// hits with `load` (a record deleted since it was indexed drops out).
pub(super) async fn search_records<T, Fut>(
    cx: &OpCtx,
    query: SearchQuery,
    load: impl FnOnce(Vec<String>) -> Fut,
    id_of: fn(&T) -> &str,
) -> Result<Ranked<T>, OpError>
where
    Fut: Future<Output = Result<Vec<T>, crate::store::StoreError>>,
{
    let searched = cx.app.search(query).await?;
    let ids = searched.results.hits.iter().map(|h| h.id.clone()).collect();
    let mut by_id: HashMap<String, T> = load(ids)
        .await?
        .into_iter()
        .map(|r| (id_of(&r).to_string(), r))
        .collect();
    let hits = searched
        .results
        .hits
        .into_iter()
        .filter_map(|h| by_id.remove(&h.id).map(|r| (h.score, r)))
        .collect();
    Ok(Ranked {
        hits,
        more: searched.results.has_more,
        degraded: searched.degraded,
    })
}

/// The answer to one page of a fact search.
fn answer(cx: &OpCtx, page: Offsets, found: Found) -> SearchOutput {
    Hits::of(page.finish(cx, found.hits, found.more), found.degraded)
}

/// The checked arguments of a fact search by a query.
struct Prepared {
    matcher: Matcher,
    span: Span,
}

/// Checks a fact search's query, filters and scope, and builds its matcher.
fn prepare(
    cx: &OpCtx,
    input: &mut SearchInput,
    matcher: impl FnOnce(&str) -> Result<Option<Matcher>, OpError>,
) -> Result<Prepared, OpError> {
    check_text("query", &input.query, cx.limits().max_query_bytes)?;
    let matcher = matcher(&input.query)?.ok_or_else(|| {
        OpError::invalid(
            "`query` has only very common words (like \"the\", \"of\"): add a word that names \
             what you are looking for, or use semantic_list with tags",
        )
    })?;
    input.scope.check()?;
    let span = std::mem::take(&mut input.window).check(cx)?;
    Ok(Prepared { matcher, span })
}

/// One page of a fact search ranked by the index.
async fn ranked_page(
    cx: &OpCtx,
    page: Offsets,
    mut input: SearchInput,
    matcher: impl FnOnce(&str) -> Result<Option<Matcher>, OpError>,
) -> Result<SearchOutput, OpError> {
    let p = prepare(cx, &mut input, matcher)?;
    let window = (page.offset, page.limit);
    let found = search_facts(cx, p.matcher, (p.span, &input.scope), None, window).await?;
    Ok(answer(cx, page, found))
}

// The arguments every fact search by a query shares. (Not a doc comment:
// schemars would copy it into the inputs that flatten it.)
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct SearchInput {
    /// What to look for (see the tool's description).
    pub query: String,
    #[serde(flatten)]
    pub window: Window,
    #[serde(flatten)]
    pub scope: FactScope,
    #[serde(flatten)]
    pub page: HitPage,
}

/// Which query language a `SearchInput` is read in.
#[derive(Clone, Copy)]
enum Style {
    Words,
    Phrase,
    Prefix,
    Boolean,
}

impl Style {
    fn matcher(self, query: &str) -> Result<Option<Matcher>, OpError> {
        Ok(match self {
            Style::Words => Matcher::words(query),
            Style::Phrase => Matcher::phrase(query),
            Style::Prefix => Matcher::as_you_type(query),
            Style::Boolean => Some(
                crate::search::parse_boolean(query)
                    .map_err(|e| OpError::invalid(format!("`query`: {e}")))?,
            ),
        })
    }
}

macro_rules! text_search {
    ($ty:ident, $name:literal, $style:expr) => {
        pub struct $ty;

        impl Operation for $ty {
            const NAME: &'static str = $name;
            type Input = SearchInput;
            type Output = SearchOutput;

            async fn run(cx: OpCtx, mut input: SearchInput) -> Result<SearchOutput, OpError> {
                let page = Offsets::start(&cx, &mut input, |i| &mut i.page)?;
                ranked_page(&cx, page, input, |q| $style.matcher(q)).await
            }

            fn degraded(output: &SearchOutput) -> bool {
                output.degraded
            }
        }
    };
}

text_search!(Search, "semantic_search", Style::Words);
text_search!(SearchPhrase, "semantic_search_phrase", Style::Phrase);
text_search!(SearchPrefix, "semantic_search_prefix", Style::Prefix);
text_search!(SearchBoolean, "semantic_search_boolean", Style::Boolean);

// ---------- semantic_search_fuzzy ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct FuzzyInput {
    #[serde(flatten)]
    pub search: SearchInput,
    /// Most edits (insert, delete, change, swap two letters) a word may be off
    /// by, 0 to 2. Default: 1 for words of 3-5 letters, 2 for longer words.
    pub max_distance: Option<u8>,
}

operation!(SearchFuzzy = "semantic_search_fuzzy", FuzzyInput => SearchOutput, semantic_search_fuzzy, degraded);

async fn semantic_search_fuzzy(cx: OpCtx, mut input: FuzzyInput) -> Result<SearchOutput, OpError> {
    if input.max_distance.is_some_and(|d| d > 2) {
        return Err(OpError::invalid(
            "`max_distance` must be 0, 1 or 2: more edits match almost anything",
        ));
    }
    let page = Offsets::start(&cx, &mut input, |i| &mut i.search.page)?;
    let distance = input.max_distance;
    let fuzzy = |q: &str| {
        Matcher::fuzzy(q, distance)
            .map(Some)
            .ok_or_else(|| OpError::invalid(ONLY_COMMON_WORDS))
    };
    ranked_page(&cx, page, input.search, fuzzy).await
}

// ---------- semantic_search_hybrid ----------

/// How hybrid search blends its signals. Each weight is ≥ 0; they are
/// normalised to sum to 1.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub struct HybridWeights {
    /// Text relevance (BM25, scaled so the best match is 1). Default 0.6.
    #[serde(default = "w_text")]
    pub text: f64,
    /// Recency: 1 for a fact updated now, halving every `half_life_days`. Default 0.2.
    #[serde(default = "w_recency")]
    pub recency: f64,
    /// The fact's confidence (0 to 1). Default 0.15.
    #[serde(default = "w_confidence")]
    pub confidence: f64,
    /// How often the fact was used, log-scaled so the most used is 1. Default 0.05.
    #[serde(default = "w_access")]
    pub access: f64,
    /// Recency half-life in days. Default 30.
    #[serde(default = "half_life")]
    pub half_life_days: f64,
}

fn w_text() -> f64 {
    0.6
}
fn w_recency() -> f64 {
    0.2
}
fn w_confidence() -> f64 {
    0.15
}
fn w_access() -> f64 {
    0.05
}
fn half_life() -> f64 {
    30.0
}

impl Default for HybridWeights {
    fn default() -> Self {
        HybridWeights {
            text: w_text(),
            recency: w_recency(),
            confidence: w_confidence(),
            access: w_access(),
            half_life_days: half_life(),
        }
    }
}

impl HybridWeights {
    fn check(&self) -> Result<(), OpError> {
        let parts = [self.text, self.recency, self.confidence, self.access];
        if parts.iter().any(|x| !x.is_finite() || *x < 0.0) || parts.iter().sum::<f64>() <= 0.0 {
            return Err(OpError::invalid(
                "`weights` must be zero or positive numbers, at least one above zero",
            ));
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return Err(OpError::invalid(
                "`weights.half_life_days` must be above zero",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HybridComponents {
    pub text: f64,
    pub recency: f64,
    pub confidence: f64,
    pub access: f64,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct HybridInput {
    #[serde(flatten)]
    pub search: SearchInput,
    /// How to blend text relevance with recency, confidence and use (see defaults).
    pub weights: Option<HybridWeights>,
}

operation!(SearchHybrid = "semantic_search_hybrid", HybridInput => SearchOutput, semantic_search_hybrid, degraded);

async fn semantic_search_hybrid(
    cx: OpCtx,
    mut input: HybridInput,
) -> Result<SearchOutput, OpError> {
    let w = input.weights.unwrap_or_default();
    w.check()?;
    let page = Offsets::start(&cx, &mut input, |i| &mut i.search.page)?;
    let mut search = input.search;
    let p = prepare(&cx, &mut search, |q| Ok(Matcher::words(q)))?;
    // The blend re-ranks the best text matches, then pages through them.
    let candidates = (0, HYBRID_CANDIDATES);
    let mut found = search_facts(&cx, p.matcher, (p.span, &search.scope), None, candidates).await?;
    blend(&mut found.hits, &w, now_micros());
    found.more = found.hits.len() > page.offset + page.limit;
    found.hits = std::mem::take(&mut found.hits)
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    Ok(answer(&cx, page, found))
}

/// Re-scores hits as the weighted blend of text, recency, confidence and use,
/// and sorts them by it.
fn blend(hits: &mut [FactHit], w: &HybridWeights, now: Micros) {
    let sum = w.text + w.recency + w.confidence + w.access;
    let best_text = hits
        .iter()
        .map(|h| h.score)
        .fold(0.0f32, f32::max)
        .max(f32::EPSILON) as f64;
    let most_used = hits.iter().map(|h| h.fact.access_count).max().unwrap_or(0);
    let half_life_us = w.half_life_days * 86_400_000_000.0;
    for h in hits.iter_mut() {
        let age = (now - h.fact.updated_at.timestamp_micros()).max(0) as f64;
        let c = HybridComponents {
            text: h.score as f64 / best_text,
            recency: 0.5f64.powf(age / half_life_us),
            confidence: h.fact.confidence,
            access: if most_used == 0 {
                0.0
            } else {
                (1.0 + h.fact.access_count as f64).ln() / (1.0 + most_used as f64).ln()
            },
        };
        h.score = ((w.text * c.text
            + w.recency * c.recency
            + w.confidence * c.confidence
            + w.access * c.access)
            / sum) as f32;
        h.components = Some(c);
    }
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b.fact.id.cmp(&a.fact.id))
    });
}

// ---------- semantic_similar ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct SimilarInput {
    /// The fact to find others like.
    pub id: String,
    /// Only facts carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Also consider superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    #[serde(flatten)]
    pub page: HitPage,
}

operation!(Similar = "semantic_similar", SimilarInput => SearchOutput, semantic_similar, degraded);

async fn semantic_similar(cx: OpCtx, mut input: SimilarInput) -> Result<SearchOutput, OpError> {
    check_id("id", &input.id, FACT_ID)?;
    let page = Offsets::start(&cx, &mut input, |i| &mut i.page)?;
    let source = cx.store().facts().get(cx.namespace(), &input.id).await?;
    let terms = cx
        .app
        .search_index()
        .characteristic_terms(&source.content, SIMILAR_TERMS);
    let Some(matcher) = Matcher::any_terms(terms) else {
        return Ok(SearchOutput {
            hits: Vec::new(),
            degraded: false,
            truncated: false,
            next_cursor: None,
        });
    };
    let span = Span {
        tags: normalize_tags(input.tags, cx.limits())?,
        ..Span::default()
    };
    let scope = FactScope {
        min_confidence: None,
        include_superseded: input.include_superseded,
    };
    let window = (page.offset, page.limit);
    let found = search_facts(&cx, matcher, (span, &scope), Some(source.id), window).await?;
    Ok(answer(&cx, page, found))
}

// ---------- memory_search ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Episodic,
    Semantic,
    /// Knowledge-graph entities: their names, types and observations.
    Graph,
    /// Procedures: names, goals and steps.
    Procedural,
    /// Tasks: titles and notes.
    Prospective,
}

impl Layer {
    const ALL: [Layer; 5] = [
        Layer::Episodic,
        Layer::Semantic,
        Layer::Graph,
        Layer::Procedural,
        Layer::Prospective,
    ];

    /// The searchable kind of record the layer holds.
    fn kind(self) -> RecordKind {
        match self {
            Layer::Episodic => RecordKind::Event,
            Layer::Semantic => RecordKind::Fact,
            Layer::Graph => RecordKind::Entity,
            Layer::Procedural => RecordKind::Procedure,
            Layer::Prospective => RecordKind::Task,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct MemorySearchInput {
    /// What to look for, in natural words.
    pub query: String,
    /// Only these layers (default: all).
    pub layers: Option<Vec<Layer>>,
    #[serde(flatten)]
    pub window: Window,
    #[serde(flatten)]
    pub page: HitPage,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MemoryHit {
    /// Which layer the record lives in: read it with that layer's tools.
    pub layer: Layer,
    /// The record's id; for the graph, the entity's name (open_nodes takes it).
    pub id: String,
    pub score: f32,
    /// The matching part, matched words marked with **…**.
    pub snippet: String,
    pub tags: Vec<String>,
    /// Events: when it happened. Facts: since when it holds. Procedures: when
    /// last written. Tasks: when due (else created).
    pub time: chrono::DateTime<chrono::Utc>,
    /// Events: importance. Facts: confidence. Procedures: smoothed success.
    /// Tasks: priority (low 0 to urgent 1).
    pub weight: f64,
}

/// memory_search's answer.
pub type MemorySearchOutput = Hits<MemoryHit>;

operation!(MemorySearch = "memory_search", MemorySearchInput => MemorySearchOutput, memory_search, degraded);

async fn memory_search(
    cx: OpCtx,
    mut input: MemorySearchInput,
) -> Result<MemorySearchOutput, OpError> {
    let page = Offsets::start(&cx, &mut input, |i| &mut i.page)?;
    check_text("query", &input.query, cx.limits().max_query_bytes)?;
    let layers = input.layers.unwrap_or_else(|| Layer::ALL.to_vec());
    if layers.is_empty() {
        return Err(OpError::invalid(
            "`layers` is empty: name at least one, or leave it out to search all",
        ));
    }
    let matcher =
        Matcher::words(&input.query).ok_or_else(|| OpError::invalid(ONLY_COMMON_WORDS))?;
    let span = input.window.check(&cx)?;
    let searched = cx
        .app
        .search(SearchQuery {
            since: span.since,
            until: span.until,
            tags: span.tags,
            offset: page.offset,
            ..SearchQuery::new(
                cx.namespace(),
                layers.iter().map(|l| l.kind()).collect(),
                matcher.clone(),
                page.limit,
            )
        })
        .await?;
    let hits = shown(&cx, searched.results.hits, matcher).await?;
    cx.app.record_fact_access(
        cx.namespace(),
        hits.iter()
            .filter(|h| h.layer == Layer::Semantic)
            .map(|h| h.id.clone()),
    );
    let paged = page.finish(&cx, hits, searched.results.has_more);
    Ok(Hits::of(paged, searched.degraded))
}

/// What a hit of any layer shows: its layer, id, text to snippet, tags, time
/// and weight.
struct Shown {
    layer: Layer,
    id: String,
    text: String,
    tags: Vec<String>,
    time: Micros,
    weight: f64,
}

/// Loads the records behind ranked hits, one store call per kind, and shows
/// them in rank order (a record deleted since it was indexed drops out).
async fn shown(
    cx: &OpCtx,
    ranked: Vec<SearchHit>,
    matcher: Matcher,
) -> Result<Vec<MemoryHit>, OpError> {
    let mut records = loaded(cx, &ranked).await?;
    // Snippets read whole texts (up to 64 KB each): off the runtime's threads.
    off_runtime(move || {
        ranked
            .iter()
            .filter_map(|h| {
                let r = records.remove(&h.id)?;
                Some(MemoryHit {
                    layer: r.layer,
                    snippet: snippet(&r.text, &matcher, SNIPPET_CHARS),
                    id: r.id,
                    score: h.score,
                    tags: r.tags,
                    time: micros_to_datetime(r.time),
                    weight: r.weight,
                })
            })
            .collect()
    })
    .await
}

/// The records behind ranked hits, by id, as a hit shows them.
async fn loaded(cx: &OpCtx, ranked: &[SearchHit]) -> Result<HashMap<String, Shown>, OpError> {
    let ids_of = |kind: RecordKind| -> Vec<String> {
        ranked
            .iter()
            .filter(|h| h.kind == kind)
            .map(|h| h.id.clone())
            .collect()
    };
    let (store, ns) = (cx.store(), cx.namespace());
    let mut records: HashMap<String, Shown> = HashMap::new();
    for e in store
        .events()
        .get_many(ns, ids_of(RecordKind::Event))
        .await?
    {
        let shown = Shown {
            layer: Layer::Episodic,
            id: e.id.clone(),
            text: e.content,
            tags: e.tags,
            time: e.occurred_at.timestamp_micros(),
            weight: e.importance,
        };
        records.insert(e.id, shown);
    }
    for f in store.facts().get_many(ns, ids_of(RecordKind::Fact)).await? {
        let shown = Shown {
            layer: Layer::Semantic,
            id: f.id.clone(),
            text: f.content,
            tags: f.tags,
            time: f.valid_from.timestamp_micros(),
            weight: f.confidence,
        };
        records.insert(f.id, shown);
    }
    for (id, (e, updated)) in store.entities_keyed(ns, ids_of(RecordKind::Entity)).await? {
        let observations = e.observations.unwrap_or_default().join("\n");
        let shown = Shown {
            layer: Layer::Graph,
            text: format!("{} ({})\n{observations}", e.name, e.entity_type),
            id: e.name,
            tags: vec![e.entity_type],
            time: updated,
            weight: 0.5,
        };
        records.insert(id, shown);
    }
    for p in store
        .procedures()
        .get_many(ns, ids_of(RecordKind::Procedure))
        .await?
    {
        let v = p.current;
        let shown = Shown {
            layer: Layer::Procedural,
            id: p.id.clone(),
            text: format!("{}: {}\n{}", v.name, v.goal, v.steps.join("\n")),
            tags: v.tags,
            time: v.updated_at.timestamp_micros(),
            weight: crate::store::smoothed_success(&p.track_record),
        };
        records.insert(p.id, shown);
    }
    for t in store.tasks().get_many(ns, ids_of(RecordKind::Task)).await? {
        let shown = Shown {
            layer: Layer::Prospective,
            id: t.id.clone(),
            text: format!("{}\n{}", t.title, t.notes.unwrap_or_default()),
            tags: t.tags,
            time: t.due_at.unwrap_or(t.created_at).timestamp_micros(),
            weight: t.priority as u8 as f64 / crate::model::Priority::Urgent as u8 as f64,
        };
        records.insert(t.id, shown);
    }
    Ok(records)
}
