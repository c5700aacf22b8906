//! Semantic memory: facts the agent knows, with confidence, source, validity and
//! a version history; found by ranked (BM25), phrase, as-you-type, typo-tolerant,
//! boolean, hybrid and more-like-this search. Also `memory_search`, one ranked
//! list across layers.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::registry::Entry;
use super::{
    OpCtx, Operation, check_metadata, check_text, check_unit, cursor, normalize_tags, page_size,
};
use crate::error::OpError;
use crate::model::{Event, Fact, Micros, RecordKind, now_micros};
use crate::search::{Matcher, SearchQuery, snippet};
use crate::store::{FactFilter, FactPatch, NewFact};
use crate::timespec::TimeSpec;

/// This module's operations, for the registry.
pub(crate) const OPERATIONS: &[fn() -> Entry] = &[
    Entry::of::<StoreFact>,
    Entry::of::<StoreBatch>,
    Entry::of::<Get>,
    Entry::of::<Update>,
    Entry::of::<Delete>,
    Entry::of::<List>,
    Entry::of::<Search>,
    Entry::of::<SearchPhrase>,
    Entry::of::<SearchPrefix>,
    Entry::of::<SearchFuzzy>,
    Entry::of::<SearchBoolean>,
    Entry::of::<SearchHybrid>,
    Entry::of::<Similar>,
    Entry::of::<Tags>,
    Entry::of::<Reinforce>,
    Entry::of::<Supersede>,
    Entry::of::<History>,
    Entry::of::<MemorySearch>,
];

const DEFAULT_CONFIDENCE: f64 = 0.7;
/// How far `semantic_reinforce` moves confidence towards 1.0 by default.
const DEFAULT_REINFORCE_BOOST: f64 = 0.2;
const MAX_SOURCE_BYTES: usize = 1024;
/// Characters of context in a hit's snippet.
const SNIPPET_CHARS: usize = 200;
/// Hybrid search re-ranks at most this many of the best text matches.
const HYBRID_CANDIDATES: usize = 200;
/// Terms a more-like-this query keeps from its source fact.
const SIMILAR_TERMS: usize = 25;
const DEFAULT_TAGS_LIMIT: usize = 100;
const MAX_TAGS_LIMIT: usize = 1000;

// ---------- shared pieces ----------

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FactOutput {
    pub fact: Fact,
}

fn check_id(field: &str, id: &str) -> Result<(), OpError> {
    if id.trim().is_empty() {
        return Err(OpError::invalid(format!(
            "`{field}` is empty: pass a fact id"
        )));
    }
    Ok(())
}

/// The fields of a fact an agent supplies, as `semantic_store` takes them.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreInput {
    /// One self-contained statement ("staging runs PostgreSQL 16"); name things fully.
    pub content: String,
    /// Labels to filter by later, e.g. "infra".
    #[serde(default)]
    pub tags: Vec<String>,
    /// How sure, 0.0 to 1.0 (default 0.7).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Where it comes from: a URL, a file, "user", ...
    #[serde(default)]
    pub source: Option<String>,
    /// Since when it holds, if not now (RFC 3339, "yesterday", "2h ago").
    #[serde(default)]
    pub valid_from: Option<TimeSpec>,
    /// Extra JSON detail, kept as given, not searched.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

impl StoreInput {
    fn prepare(self, cx: &OpCtx) -> Result<NewFact, OpError> {
        let limits = cx.limits();
        check_text("content", &self.content, limits.max_content_bytes)?;
        let confidence = self.confidence.unwrap_or(DEFAULT_CONFIDENCE);
        check_unit("confidence", confidence)?;
        if let Some(s) = &self.source {
            check_text("source", s, MAX_SOURCE_BYTES)?;
        }
        let metadata = self.metadata.unwrap_or_default();
        check_metadata(&metadata, limits)?;
        Ok(NewFact {
            content: self.content,
            tags: normalize_tags(self.tags, limits)?,
            confidence,
            source: self.source,
            valid_from: self.valid_from.map(TimeSpec::micros),
            metadata,
        })
    }
}

/// Filters every fact search and list shares, checked.
struct Filters {
    tags: Vec<String>,
    since: Option<Micros>,
    until: Option<Micros>,
    min_confidence: Option<f64>,
    include_superseded: bool,
}

fn filters(
    cx: &OpCtx,
    tags: Vec<String>,
    since: Option<TimeSpec>,
    until: Option<TimeSpec>,
    min_confidence: Option<f64>,
    include_superseded: bool,
) -> Result<Filters, OpError> {
    if let Some(m) = min_confidence {
        check_unit("min_confidence", m)?;
    }
    if let (Some(s), Some(u)) = (since, until)
        && s.micros() >= u.micros()
    {
        return Err(OpError::invalid(format!(
            "`since` ({}) is not before `until` ({}): swap them or widen the range",
            s.0.to_rfc3339(),
            u.0.to_rfc3339()
        )));
    }
    Ok(Filters {
        tags: normalize_tags(tags, cx.limits())?,
        since: since.map(TimeSpec::micros),
        until: until.map(TimeSpec::micros),
        min_confidence,
        include_superseded,
    })
}

#[derive(Serialize, Deserialize)]
struct OffsetCursor {
    o: usize,
    f: String,
}

/// The offset a cursor resumes at, after checking it belongs to these arguments.
fn resume(cx: &OpCtx, cursor_arg: Option<String>, fingerprint: &str) -> Result<usize, OpError> {
    match cursor_arg {
        None => Ok(0),
        Some(c) => {
            let c: OffsetCursor = cursor::decode(cx, &c)?;
            if c.f != fingerprint {
                return Err(cursor::mismatch());
            }
            Ok(c.o)
        }
    }
}

fn next_cursor(cx: &OpCtx, more: bool, offset: usize, fingerprint: String) -> Option<String> {
    more.then(|| {
        cursor::encode(
            cx,
            &OffsetCursor {
                o: offset,
                f: fingerprint,
            },
        )
    })
}

/// Runs CPU-heavy answer building (snippets over long texts) on the blocking
/// pool, so one big answer never stalls the runtime's workers.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => OpError::from_panic("building the answer", panic),
            Err(e) => OpError::Internal(format!("building the answer was cancelled: {e}")),
        })
}

/// Keeps the leading hits whose JSON fits in `max_chars` (always at least one,
/// so paging moves on). Returns the hits kept and whether some were cut.
fn fit_budget<T: Serialize>(hits: Vec<T>, max_chars: Option<usize>) -> (Vec<T>, bool) {
    let Some(budget) = max_chars else {
        return (hits, false);
    };
    let total = hits.len();
    let mut used = 0;
    let mut kept = Vec::with_capacity(hits.len());
    for hit in hits {
        let size = serde_json::to_string(&hit).map_or(0, |s| s.len() + 1);
        if !kept.is_empty() && used + size > budget {
            break;
        }
        used += size;
        kept.push(hit);
    }
    let cut = kept.len() < total;
    (kept, cut)
}

fn check_max_chars(max_chars: Option<usize>) -> Result<(), OpError> {
    /// Smaller budgets cannot hold even one hit's id and snippet.
    const MIN_MAX_CHARS: usize = 200;
    match max_chars {
        Some(n) if n < MIN_MAX_CHARS => Err(OpError::invalid(format!(
            "`max_chars` is {n}: give at least {MIN_MAX_CHARS}, or leave it out for no budget"
        ))),
        _ => Ok(()),
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

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchOutput {
    pub hits: Vec<FactHit>,
    /// True when the search index was unavailable and the answer came from a
    /// slower scan of the store (same matches; scores may differ slightly).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// True when `max_chars` cut this page short; `next_cursor` continues it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Pass as `cursor` with the same arguments for more hits. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Runs a fact search and loads the hits: the shared body of the search tools.
async fn search_facts(
    cx: &OpCtx,
    matcher: Matcher,
    f: Filters,
    exclude: Option<String>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<FactHit>, bool, bool), OpError> {
    let searched = cx
        .app
        .search(SearchQuery {
            since: f.since,
            until: f.until,
            tags: f.tags,
            min_weight: f.min_confidence,
            include_superseded: f.include_superseded,
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
    let facts = cx.app.store().get_facts(cx.namespace(), ids).await?;
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
    Ok((hits, searched.results.has_more, searched.degraded))
}

/// The arguments the text searches share.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchInput {
    /// What to look for (see the tool's description).
    pub query: String,
    /// Only facts with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only facts valid from this time on (RFC 3339, "yesterday", "2h ago").
    #[serde(default)]
    pub since: Option<TimeSpec>,
    /// Only facts valid from before this time.
    #[serde(default)]
    pub until: Option<TimeSpec>,
    /// Only facts at least this confident (0.0 to 1.0).
    #[serde(default)]
    pub min_confidence: Option<f64>,
    /// Also search facts that newer ones superseded.
    #[serde(default)]
    pub include_superseded: bool,
    /// Most hits (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Most characters to answer with; the rest goes to the next page.
    #[serde(default)]
    pub max_chars: Option<usize>,
}

/// Which query language a `SearchInput` is read in.
#[derive(Clone, Copy)]
enum Style {
    Words,
    Phrase,
    Prefix,
    Boolean,
}

async fn run_text_search(
    cx: OpCtx,
    mut input: SearchInput,
    style: Style,
) -> Result<SearchOutput, OpError> {
    let limits = cx.limits();
    check_text("query", &input.query, limits.max_query_bytes)?;
    check_max_chars(input.max_chars)?;
    let limit = page_size(input.limit, limits)?;
    let cursor_arg = input.cursor.take();
    let fingerprint = cursor::fingerprint(&input);
    let offset = resume(&cx, cursor_arg, &fingerprint)?;
    let matcher = match style {
        Style::Words => Matcher::words(&input.query),
        Style::Phrase => Matcher::phrase(&input.query),
        Style::Prefix => Matcher::as_you_type(&input.query),
        Style::Boolean => Some(
            crate::search::parse_boolean(&input.query)
                .map_err(|e| OpError::invalid(format!("`query`: {e}")))?,
        ),
    }
    .ok_or_else(|| {
        OpError::invalid(
            "`query` has only very common words (like \"the\", \"of\"): add a word that names \
             what you are looking for, or use semantic_list with tags",
        )
    })?;
    let f = filters(
        &cx,
        input.tags,
        input.since,
        input.until,
        input.min_confidence,
        input.include_superseded,
    )?;
    let (hits, more, degraded) = search_facts(&cx, matcher, f, None, offset, limit).await?;
    let (hits, truncated) = fit_budget(hits, input.max_chars);
    let next = offset + hits.len();
    Ok(SearchOutput {
        next_cursor: next_cursor(&cx, more || truncated, next, fingerprint),
        hits,
        degraded,
        truncated,
    })
}

macro_rules! text_search {
    ($ty:ident, $name:literal, $style:expr) => {
        pub struct $ty;

        impl Operation for $ty {
            const NAME: &'static str = $name;
            type Input = SearchInput;
            type Output = SearchOutput;

            async fn run(cx: OpCtx, input: SearchInput) -> Result<SearchOutput, OpError> {
                run_text_search(cx, input, $style).await
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

// ---------- semantic_store / _batch ----------

pub struct StoreFact;

impl Operation for StoreFact {
    const NAME: &'static str = "semantic_store";
    type Input = StoreInput;
    type Output = FactOutput;

    async fn run(cx: OpCtx, input: StoreInput) -> Result<FactOutput, OpError> {
        let new = input.prepare(&cx)?;
        let mut facts = cx
            .app
            .store()
            .insert_facts(cx.namespace(), &cx.session.id, vec![new])
            .await?;
        Ok(FactOutput {
            fact: facts.pop().expect("one fact in, one out"),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreBatchInput {
    /// The facts to store, each shaped like semantic_store's arguments. All are
    /// checked first; if any is invalid, none is stored.
    pub facts: Vec<StoreInput>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StoreBatchOutput {
    pub count: usize,
    pub facts: Vec<Fact>,
}

pub struct StoreBatch;

impl Operation for StoreBatch {
    const NAME: &'static str = "semantic_store_batch";
    type Input = StoreBatchInput;
    type Output = StoreBatchOutput;

    async fn run(cx: OpCtx, input: StoreBatchInput) -> Result<StoreBatchOutput, OpError> {
        let max = cx.limits().max_batch_items;
        if input.facts.is_empty() {
            return Err(OpError::invalid("`facts` is empty: pass at least one fact"));
        }
        if input.facts.len() > max {
            return Err(OpError::invalid(format!(
                "`facts` has {} items, the limit is {max}: split it into several calls",
                input.facts.len()
            )));
        }
        let mut prepared = Vec::with_capacity(input.facts.len());
        for (i, f) in input.facts.into_iter().enumerate() {
            prepared.push(f.prepare(&cx).map_err(|err| match err {
                OpError::InvalidInput(m) => OpError::invalid(format!("facts[{i}]: {m}")),
                other => other,
            })?);
        }
        let facts = cx
            .app
            .store()
            .insert_facts(cx.namespace(), &cx.session.id, prepared)
            .await?;
        Ok(StoreBatchOutput {
            count: facts.len(),
            facts,
        })
    }
}

// ---------- semantic_get ----------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdInput {
    /// The fact's id.
    pub id: String,
}

pub struct Get;

impl Operation for Get {
    const NAME: &'static str = "semantic_get";
    type Input = IdInput;
    type Output = FactOutput;

    async fn run(cx: OpCtx, input: IdInput) -> Result<FactOutput, OpError> {
        check_id("id", &input.id)?;
        let fact = cx.app.store().get_fact(cx.namespace(), &input.id).await?;
        cx.app.record_fact_access(cx.namespace(), [fact.id.clone()]);
        Ok(FactOutput { fact })
    }
}

// ---------- semantic_update ----------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInput {
    /// The fact to change.
    pub id: String,
    /// New text (replaces the old; to keep the old version, use semantic_supersede).
    #[serde(default)]
    pub content: Option<String>,
    /// New tags (replace the old ones).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub valid_from: Option<TimeSpec>,
    /// New metadata object (replaces the old one).
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

pub struct Update;

impl Operation for Update {
    const NAME: &'static str = "semantic_update";
    type Input = UpdateInput;
    type Output = FactOutput;

    async fn run(cx: OpCtx, input: UpdateInput) -> Result<FactOutput, OpError> {
        check_id("id", &input.id)?;
        let limits = cx.limits();
        if let Some(c) = &input.content {
            check_text("content", c, limits.max_content_bytes)?;
        }
        if let Some(c) = input.confidence {
            check_unit("confidence", c)?;
        }
        if let Some(s) = &input.source {
            check_text("source", s, MAX_SOURCE_BYTES)?;
        }
        if let Some(m) = &input.metadata {
            check_metadata(m, limits)?;
        }
        let patch = FactPatch {
            content: input.content,
            tags: input.tags.map(|t| normalize_tags(t, limits)).transpose()?,
            confidence: input.confidence,
            source: input.source,
            valid_from: input.valid_from.map(TimeSpec::micros),
            metadata: input.metadata,
        };
        if patch.content.is_none()
            && patch.tags.is_none()
            && patch.confidence.is_none()
            && patch.source.is_none()
            && patch.valid_from.is_none()
            && patch.metadata.is_none()
        {
            return Err(OpError::invalid(
                "nothing to change: pass at least one of content, tags, confidence, source, valid_from, metadata",
            ));
        }
        let fact = cx
            .app
            .store()
            .update_fact(cx.namespace(), &input.id, patch)
            .await?;
        Ok(FactOutput { fact })
    }
}

// ---------- semantic_delete ----------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// The facts to delete (at most the batch limit).
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    pub deleted: Vec<String>,
    /// Ids that did not exist in this namespace (nothing was done for them).
    pub not_found: Vec<String>,
}

pub struct Delete;

impl Operation for Delete {
    const NAME: &'static str = "semantic_delete";
    type Input = DeleteInput;
    type Output = DeleteOutput;

    async fn run(cx: OpCtx, input: DeleteInput) -> Result<DeleteOutput, OpError> {
        if input.ids.is_empty() {
            return Err(OpError::invalid("`ids` is empty: pass the ids to delete"));
        }
        if input.ids.len() > cx.limits().max_batch_items {
            return Err(OpError::invalid(format!(
                "`ids` has {} items, the limit is {}: split it into several calls",
                input.ids.len(),
                cx.limits().max_batch_items
            )));
        }
        for id in &input.ids {
            check_id("ids[]", id)?;
        }
        let (deleted, not_found) = cx
            .app
            .store()
            .delete_facts(cx.namespace(), input.ids)
            .await?;
        Ok(DeleteOutput { deleted, not_found })
    }
}

// ---------- semantic_list ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// Only facts carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only facts stored at or after this time (RFC 3339, "yesterday", "2h ago").
    #[serde(default)]
    pub since: Option<TimeSpec>,
    /// Only facts stored before this time.
    #[serde(default)]
    pub until: Option<TimeSpec>,
    /// Only facts at least this confident (0.0 to 1.0).
    #[serde(default)]
    pub min_confidence: Option<f64>,
    /// Also list superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// Page size (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Newest first.
    pub facts: Vec<Fact>,
    /// Pass as `cursor` (with the same other arguments) for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct KeysetCursor {
    t: i64,
    id: String,
    f: String,
}

pub struct List;

impl Operation for List {
    const NAME: &'static str = "semantic_list";
    type Input = ListInput;
    type Output = ListOutput;

    async fn run(cx: OpCtx, mut input: ListInput) -> Result<ListOutput, OpError> {
        let limit = page_size(input.limit, cx.limits())?;
        let cursor_arg = input.cursor.take();
        let fingerprint = cursor::fingerprint(&input);
        let after = match cursor_arg {
            None => None,
            Some(c) => {
                let c: KeysetCursor = cursor::decode(&cx, &c)?;
                if c.f != fingerprint {
                    return Err(cursor::mismatch());
                }
                Some((c.t, c.id))
            }
        };
        let f = filters(
            &cx,
            input.tags,
            input.since,
            input.until,
            input.min_confidence,
            input.include_superseded,
        )?;
        let filter = FactFilter {
            tags: f.tags,
            since: f.since,
            until: f.until,
            min_confidence: f.min_confidence,
            include_superseded: f.include_superseded,
        };
        let mut facts = cx
            .app
            .store()
            .list_facts(cx.namespace(), filter, after, limit + 1)
            .await?;
        let more = facts.len() > limit;
        facts.truncate(limit);
        let next_cursor = match facts.last() {
            Some(last) if more => Some(cursor::encode(
                &cx,
                &KeysetCursor {
                    t: last.created_at.timestamp_micros(),
                    id: last.id.clone(),
                    f: fingerprint,
                },
            )),
            _ => None,
        };
        Ok(ListOutput { facts, next_cursor })
    }
}

// ---------- semantic_search_fuzzy ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FuzzyInput {
    /// Words to look for, typos allowed ("postgress replcia").
    pub query: String,
    /// Most edits (insert, delete, change, swap two letters) a word may be off
    /// by, 0 to 2. Default: 1 for words of 3-5 letters, 2 for longer words.
    #[serde(default)]
    pub max_distance: Option<u8>,
    /// Only facts carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only facts valid from this time on or later (RFC 3339, "yesterday", "2h ago").
    #[serde(default)]
    pub since: Option<TimeSpec>,
    /// Only facts valid from before this time.
    #[serde(default)]
    pub until: Option<TimeSpec>,
    /// Only facts at least this confident (0.0 to 1.0).
    #[serde(default)]
    pub min_confidence: Option<f64>,
    /// Also search superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// Most hits to return (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page of the same search.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Budget for the answer's size in characters (at least one hit is returned).
    #[serde(default)]
    pub max_chars: Option<usize>,
}

pub struct SearchFuzzy;

impl Operation for SearchFuzzy {
    const NAME: &'static str = "semantic_search_fuzzy";
    type Input = FuzzyInput;
    type Output = SearchOutput;

    async fn run(cx: OpCtx, mut input: FuzzyInput) -> Result<SearchOutput, OpError> {
        let limits = cx.limits();
        check_text("query", &input.query, limits.max_query_bytes)?;
        check_max_chars(input.max_chars)?;
        if input.max_distance.is_some_and(|d| d > 2) {
            return Err(OpError::invalid(
                "`max_distance` must be 0, 1 or 2: more edits match almost anything",
            ));
        }
        let limit = page_size(input.limit, limits)?;
        let cursor_arg = input.cursor.take();
        let fingerprint = cursor::fingerprint(&input);
        let offset = resume(&cx, cursor_arg, &fingerprint)?;
        let matcher = Matcher::fuzzy(&input.query, input.max_distance).ok_or_else(|| {
            OpError::invalid("`query` has only very common words: add a word that names something")
        })?;
        let f = filters(
            &cx,
            input.tags,
            input.since,
            input.until,
            input.min_confidence,
            input.include_superseded,
        )?;
        let (hits, more, degraded) = search_facts(&cx, matcher, f, None, offset, limit).await?;
        let (hits, truncated) = fit_budget(hits, input.max_chars);
        let next = offset + hits.len();
        Ok(SearchOutput {
            next_cursor: next_cursor(&cx, more || truncated, next, fingerprint),
            hits,
            degraded,
            truncated,
        })
    }

    fn degraded(output: &Self::Output) -> bool {
        output.degraded
    }
}

// ---------- semantic_search_hybrid ----------

/// How hybrid search blends its signals. Each weight is ≥ 0; they are
/// normalised to sum to 1.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HybridComponents {
    pub text: f64,
    pub recency: f64,
    pub confidence: f64,
    pub access: f64,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HybridInput {
    /// What to look for, in natural words.
    pub query: String,
    /// How to blend text relevance with recency, confidence and use (see defaults).
    #[serde(default)]
    pub weights: Option<HybridWeights>,
    /// Only facts carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only facts valid from this time on or later (RFC 3339, "yesterday", "2h ago").
    #[serde(default)]
    pub since: Option<TimeSpec>,
    /// Only facts valid from before this time.
    #[serde(default)]
    pub until: Option<TimeSpec>,
    /// Only facts at least this confident (0.0 to 1.0).
    #[serde(default)]
    pub min_confidence: Option<f64>,
    /// Also search superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// Most hits to return (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page of the same search.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Budget for the answer's size in characters (at least one hit is returned).
    #[serde(default)]
    pub max_chars: Option<usize>,
}

pub struct SearchHybrid;

impl Operation for SearchHybrid {
    const NAME: &'static str = "semantic_search_hybrid";
    type Input = HybridInput;
    type Output = SearchOutput;

    async fn run(cx: OpCtx, mut input: HybridInput) -> Result<SearchOutput, OpError> {
        let limits = cx.limits();
        check_text("query", &input.query, limits.max_query_bytes)?;
        check_max_chars(input.max_chars)?;
        let limit = page_size(input.limit, limits)?;
        let w = input.weights.unwrap_or_default();
        let parts = [w.text, w.recency, w.confidence, w.access];
        if parts.iter().any(|x| !x.is_finite() || *x < 0.0) || parts.iter().sum::<f64>() <= 0.0 {
            return Err(OpError::invalid(
                "`weights` must be zero or positive numbers, at least one above zero",
            ));
        }
        if !(w.half_life_days.is_finite() && w.half_life_days > 0.0) {
            return Err(OpError::invalid(
                "`weights.half_life_days` must be above zero",
            ));
        }
        let cursor_arg = input.cursor.take();
        let fingerprint = cursor::fingerprint(&input);
        let offset = resume(&cx, cursor_arg, &fingerprint)?;
        let matcher = Matcher::words(&input.query).ok_or_else(|| {
            OpError::invalid("`query` has only very common words: add a word that names something")
        })?;
        let f = filters(
            &cx,
            input.tags,
            input.since,
            input.until,
            input.min_confidence,
            input.include_superseded,
        )?;
        let (mut hits, _, degraded) =
            search_facts(&cx, matcher, f, None, 0, HYBRID_CANDIDATES).await?;
        blend(&mut hits, &w, now_micros());
        let more = hits.len() > offset + limit;
        let page: Vec<FactHit> = hits.into_iter().skip(offset).take(limit).collect();
        let (page, truncated) = fit_budget(page, input.max_chars);
        let next = offset + page.len();
        Ok(SearchOutput {
            next_cursor: next_cursor(&cx, more || truncated, next, fingerprint),
            hits: page,
            degraded,
            truncated,
        })
    }

    fn degraded(output: &Self::Output) -> bool {
        output.degraded
    }
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
#[serde(deny_unknown_fields)]
pub struct SimilarInput {
    /// The fact to find others like.
    pub id: String,
    /// Only facts carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Also consider superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// Most hits to return (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Budget for the answer's size in characters (at least one hit is returned).
    #[serde(default)]
    pub max_chars: Option<usize>,
}

pub struct Similar;

impl Operation for Similar {
    const NAME: &'static str = "semantic_similar";
    type Input = SimilarInput;
    type Output = SearchOutput;

    async fn run(cx: OpCtx, mut input: SimilarInput) -> Result<SearchOutput, OpError> {
        check_id("id", &input.id)?;
        check_max_chars(input.max_chars)?;
        let limit = page_size(input.limit, cx.limits())?;
        let cursor_arg = input.cursor.take();
        let fingerprint = cursor::fingerprint(&input);
        let offset = resume(&cx, cursor_arg, &fingerprint)?;
        let source = cx.app.store().get_fact(cx.namespace(), &input.id).await?;
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
        let f = filters(&cx, input.tags, None, None, None, input.include_superseded)?;
        let (hits, more, degraded) =
            search_facts(&cx, matcher, f, Some(source.id), offset, limit).await?;
        let (hits, truncated) = fit_budget(hits, input.max_chars);
        let next = offset + hits.len();
        Ok(SearchOutput {
            next_cursor: next_cursor(&cx, more || truncated, next, fingerprint),
            hits,
            degraded,
            truncated,
        })
    }

    fn degraded(output: &Self::Output) -> bool {
        output.degraded
    }
}

// ---------- semantic_tags ----------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsInput {
    /// Only tags starting with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Also count superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// Most tags to return, most used first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TagCount {
    pub tag: String,
    pub count: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TagsOutput {
    pub tags: Vec<TagCount>,
}

pub struct Tags;

impl Operation for Tags {
    const NAME: &'static str = "semantic_tags";
    type Input = TagsInput;
    type Output = TagsOutput;

    async fn run(cx: OpCtx, input: TagsInput) -> Result<TagsOutput, OpError> {
        let limit = match input.limit {
            None => DEFAULT_TAGS_LIMIT,
            Some(n) if (1..=MAX_TAGS_LIMIT).contains(&n) => n,
            Some(n) => {
                return Err(OpError::invalid(format!(
                    "`limit` is {n}: give 1 to {MAX_TAGS_LIMIT}"
                )));
            }
        };
        let prefix = input
            .prefix
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty());
        let tags = cx
            .app
            .store()
            .fact_tags(cx.namespace(), input.include_superseded, prefix, limit)
            .await?
            .into_iter()
            .map(|(tag, count)| TagCount { tag, count })
            .collect();
        Ok(TagsOutput { tags })
    }
}

// ---------- semantic_reinforce ----------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReinforceInput {
    /// The fact that proved true again.
    pub id: String,
    /// How far to move confidence towards 1.0, as a fraction of the remaining
    /// distance (default 0.2: 0.5 becomes 0.6).
    #[serde(default)]
    pub boost: Option<f64>,
}

pub struct Reinforce;

impl Operation for Reinforce {
    const NAME: &'static str = "semantic_reinforce";
    type Input = ReinforceInput;
    type Output = FactOutput;

    async fn run(cx: OpCtx, input: ReinforceInput) -> Result<FactOutput, OpError> {
        check_id("id", &input.id)?;
        let boost = input.boost.unwrap_or(DEFAULT_REINFORCE_BOOST);
        check_unit("boost", boost)?;
        let fact = cx
            .app
            .store()
            .reinforce_fact(cx.namespace(), &input.id, boost)
            .await?;
        Ok(FactOutput { fact })
    }
}

// ---------- semantic_supersede ----------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupersedeInput {
    /// The fact that is no longer true (it must be current).
    pub id: String,
    /// The fact that replaces it.
    pub new: StoreInput,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SupersedeOutput {
    /// The old fact, now with `valid_to` and `superseded_by`.
    pub old: Fact,
    /// The new current fact.
    pub new: Fact,
}

pub struct Supersede;

impl Operation for Supersede {
    const NAME: &'static str = "semantic_supersede";
    type Input = SupersedeInput;
    type Output = SupersedeOutput;

    async fn run(cx: OpCtx, input: SupersedeInput) -> Result<SupersedeOutput, OpError> {
        check_id("id", &input.id)?;
        let new = input.new.prepare(&cx).map_err(|e| match e {
            OpError::InvalidInput(m) => OpError::invalid(format!("new: {m}")),
            other => other,
        })?;
        let (old, new) = cx
            .app
            .store()
            .supersede_fact(cx.namespace(), &cx.session.id, &input.id, new)
            .await?;
        Ok(SupersedeOutput { old, new })
    }
}

// ---------- semantic_history ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOutput {
    /// Every version, oldest first; the last is current unless it was deleted.
    pub versions: Vec<Fact>,
}

pub struct History;

impl Operation for History {
    const NAME: &'static str = "semantic_history";
    type Input = IdInput;
    type Output = HistoryOutput;

    async fn run(cx: OpCtx, input: IdInput) -> Result<HistoryOutput, OpError> {
        check_id("id", &input.id)?;
        let versions = cx
            .app
            .store()
            .fact_history(cx.namespace(), &input.id)
            .await?;
        Ok(HistoryOutput { versions })
    }
}

// ---------- memory_search ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Episodic,
    Semantic,
    /// Knowledge-graph entities: their names, types and observations.
    Graph,
}

impl Layer {
    fn kind(self) -> RecordKind {
        match self {
            Layer::Episodic => RecordKind::Event,
            Layer::Semantic => RecordKind::Fact,
            Layer::Graph => RecordKind::Entity,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySearchInput {
    /// What to look for, in natural words.
    pub query: String,
    /// Only these layers (default: all).
    #[serde(default)]
    pub layers: Option<Vec<Layer>>,
    /// Only records with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only records from this time on (RFC 3339, "yesterday", "2h ago").
    #[serde(default)]
    pub since: Option<TimeSpec>,
    /// Only records from before this time.
    #[serde(default)]
    pub until: Option<TimeSpec>,
    /// Most hits (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Most characters to answer with; the rest goes to the next page.
    #[serde(default)]
    pub max_chars: Option<usize>,
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
    /// Events: when it happened. Facts: since when it holds.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Events: importance. Facts: confidence.
    pub weight: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MemorySearchOutput {
    pub hits: Vec<MemoryHit>,
    /// True when the answer came from a slower scan of the store (index down).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub struct MemorySearch;

impl Operation for MemorySearch {
    const NAME: &'static str = "memory_search";
    type Input = MemorySearchInput;
    type Output = MemorySearchOutput;

    async fn run(cx: OpCtx, mut input: MemorySearchInput) -> Result<MemorySearchOutput, OpError> {
        let limits = cx.limits();
        check_text("query", &input.query, limits.max_query_bytes)?;
        check_max_chars(input.max_chars)?;
        let limit = page_size(input.limit, limits)?;
        let cursor_arg = input.cursor.take();
        let fingerprint = cursor::fingerprint(&input);
        let offset = resume(&cx, cursor_arg, &fingerprint)?;
        let layers = input
            .layers
            .unwrap_or_else(|| vec![Layer::Episodic, Layer::Semantic, Layer::Graph]);
        if layers.is_empty() {
            return Err(OpError::invalid(
                "`layers` is empty: name at least one, or leave it out to search all",
            ));
        }
        let matcher = Matcher::words(&input.query).ok_or_else(|| {
            OpError::invalid("`query` has only very common words: add a word that names something")
        })?;
        let f = filters(&cx, input.tags, input.since, input.until, None, false)?;
        let mut searched = cx
            .app
            .search(SearchQuery {
                since: f.since,
                until: f.until,
                tags: f.tags,
                offset,
                ..SearchQuery::new(
                    cx.namespace(),
                    layers.iter().map(|l| l.kind()).collect(),
                    matcher.clone(),
                    limit,
                )
            })
            .await?;
        let (mut event_ids, mut fact_ids, mut entity_ids) = (Vec::new(), Vec::new(), Vec::new());
        for h in &searched.results.hits {
            match h.kind {
                RecordKind::Event => event_ids.push(h.id.clone()),
                RecordKind::Fact => fact_ids.push(h.id.clone()),
                RecordKind::Entity => entity_ids.push(h.id.clone()),
                RecordKind::Relation => {}
            }
        }
        let store = cx.app.store();
        let events: HashMap<String, Event> = store
            .get_events(cx.namespace(), event_ids)
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let facts: HashMap<String, Fact> = store
            .get_facts(cx.namespace(), fact_ids)
            .await?
            .into_iter()
            .map(|f| (f.id.clone(), f))
            .collect();
        let entities = store.entities_keyed(cx.namespace(), entity_ids).await?;
        let ranked = std::mem::take(&mut searched.results.hits);
        let matcher_for_snippets = matcher.clone();
        // Snippets read whole texts (up to 64 KB each): off the runtime's threads.
        let hits: Vec<MemoryHit> = off_runtime(move || {
            let matcher = matcher_for_snippets;
            ranked
                .iter()
                .filter_map(|h| match h.kind {
                    RecordKind::Relation => None,
                    RecordKind::Event => events.get(&h.id).map(|e| MemoryHit {
                        layer: Layer::Episodic,
                        id: e.id.clone(),
                        score: h.score,
                        snippet: snippet(&e.content, &matcher, SNIPPET_CHARS),
                        tags: e.tags.clone(),
                        time: e.occurred_at,
                        weight: e.importance,
                    }),
                    RecordKind::Fact => facts.get(&h.id).map(|f| MemoryHit {
                        layer: Layer::Semantic,
                        id: f.id.clone(),
                        score: h.score,
                        snippet: snippet(&f.content, &matcher, SNIPPET_CHARS),
                        tags: f.tags.clone(),
                        time: f.valid_from,
                        weight: f.confidence,
                    }),
                    RecordKind::Entity => entities.get(&h.id).map(|(e, updated)| {
                        let observations = e.observations.clone().unwrap_or_default().join("\n");
                        let text = format!("{} ({})\n{observations}", e.name, e.entity_type);
                        MemoryHit {
                            layer: Layer::Graph,
                            id: e.name.clone(),
                            score: h.score,
                            snippet: snippet(&text, &matcher, SNIPPET_CHARS),
                            tags: vec![e.entity_type.clone()],
                            time: crate::model::micros_to_datetime(*updated),
                            weight: 0.5,
                        }
                    }),
                })
                .collect()
        })
        .await?;
        cx.app.record_fact_access(
            cx.namespace(),
            hits.iter()
                .filter(|h| h.layer == Layer::Semantic)
                .map(|h| h.id.clone()),
        );
        let (hits, truncated) = fit_budget(hits, input.max_chars);
        let next = offset + hits.len();
        Ok(MemorySearchOutput {
            next_cursor: next_cursor(
                &cx,
                searched.results.has_more || truncated,
                next,
                fingerprint,
            ),
            hits,
            degraded: searched.degraded,
            truncated,
        })
    }

    fn degraded(output: &Self::Output) -> bool {
        output.degraded
    }
}
