//! Semantic memory: facts the agent knows, with confidence, source, validity and
//! a version history. Their searches live in `search.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::listing::{Deleted, Keyset, Page, Window, ids_to_delete, prepare_batch};
use super::search::FactScope;
use super::{OpCtx, check_id, check_metadata, check_text, check_unit, normalize_tags};
use crate::error::OpError;
use crate::model::Fact;
use crate::store::{FactFilter, FactPatch, NewFact, Order};
use crate::timespec::TimeSpec;

const DEFAULT_CONFIDENCE: f64 = 0.7;
/// How far `semantic_reinforce` moves confidence towards 1.0 by default.
const DEFAULT_REINFORCE_BOOST: f64 = 0.2;
const MAX_SOURCE_BYTES: usize = 1024;
const DEFAULT_TAGS_LIMIT: usize = 100;
const MAX_TAGS_LIMIT: usize = 1000;

// ---------- shared pieces ----------

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FactOutput {
    pub fact: Fact,
}

/// What an id argument of this layer names.
pub(crate) const FACT_ID: &str = "a fact id";

/// The fields of a fact an agent supplies, as `semantic_store` takes them.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct StoreInput {
    /// One self-contained statement ("staging runs PostgreSQL 16"); name things fully.
    pub content: String,
    /// Labels to filter by later, e.g. "infra".
    #[serde(default)]
    pub tags: Vec<String>,
    /// How sure, 0.0 to 1.0 (default 0.7).
    pub confidence: Option<f64>,
    /// Where it comes from: a URL, a file, "user", ...
    pub source: Option<String>,
    /// Since when it holds, if not now (RFC 3339, "yesterday", "2h ago").
    pub valid_from: Option<TimeSpec>,
    /// Extra JSON detail, kept as given, not searched.
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

// ---------- semantic_store / _batch ----------

operation!(StoreFact = "semantic_store", StoreInput => FactOutput, semantic_store);

async fn semantic_store(cx: OpCtx, input: StoreInput) -> Result<FactOutput, OpError> {
    let new = input.prepare(&cx)?;
    let mut facts = cx
        .store()
        .insert_facts(cx.namespace(), &cx.session.id, vec![new])
        .await?;
    Ok(FactOutput {
        fact: facts.pop().expect("one fact in, one out"),
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
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

operation!(StoreBatch = "semantic_store_batch", StoreBatchInput => StoreBatchOutput, semantic_store_batch);

async fn semantic_store_batch(
    cx: OpCtx,
    input: StoreBatchInput,
) -> Result<StoreBatchOutput, OpError> {
    let prepared = prepare_batch(&cx, "facts", input.facts, |item| item.prepare(&cx))?;
    let facts = cx
        .store()
        .insert_facts(cx.namespace(), &cx.session.id, prepared)
        .await?;
    Ok(StoreBatchOutput {
        count: facts.len(),
        facts,
    })
}

// ---------- semantic_get ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct IdInput {
    /// The fact's id.
    pub id: String,
}

operation!(Get = "semantic_get", IdInput => FactOutput, semantic_get);

async fn semantic_get(cx: OpCtx, input: IdInput) -> Result<FactOutput, OpError> {
    check_id("id", &input.id, FACT_ID)?;
    let fact = cx.store().facts().get(cx.namespace(), &input.id).await?;
    cx.app.record_fact_access(cx.namespace(), [fact.id.clone()]);
    Ok(FactOutput { fact })
}

// ---------- semantic_update ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateInput {
    /// The fact to change.
    pub id: String,
    /// New text (replaces the old; to keep the old version, use semantic_supersede).
    pub content: Option<String>,
    /// New tags (replace the old ones).
    pub tags: Option<Vec<String>>,
    pub confidence: Option<f64>,
    pub source: Option<String>,
    pub valid_from: Option<TimeSpec>,
    /// New metadata object (replaces the old one).
    pub metadata: Option<Map<String, Value>>,
}

operation!(Update = "semantic_update", UpdateInput => FactOutput, semantic_update);

async fn semantic_update(cx: OpCtx, input: UpdateInput) -> Result<FactOutput, OpError> {
    check_id("id", &input.id, FACT_ID)?;
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
    some_change!(
        patch, content, tags, confidence, source, valid_from, metadata
    )?;
    let fact = cx
        .store()
        .facts()
        .update(cx.namespace(), &input.id, patch)
        .await?;
    Ok(FactOutput { fact })
}

// ---------- semantic_delete ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteInput {
    /// The facts to delete (at most the batch limit).
    pub ids: Vec<String>,
}

operation!(Delete = "semantic_delete", DeleteInput => Deleted, semantic_delete);

async fn semantic_delete(cx: OpCtx, input: DeleteInput) -> Result<Deleted, OpError> {
    let ids = ids_to_delete("ids", input.ids, FACT_ID, &cx)?;
    let (deleted, not_found) = cx.store().delete_facts(cx.namespace(), ids).await?;
    Ok(Deleted { deleted, not_found })
}

// ---------- semantic_list ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ListInput {
    #[serde(flatten)]
    pub window: Window,
    #[serde(flatten)]
    pub scope: FactScope,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Newest first.
    pub facts: Vec<Fact>,
    /// Pass as `cursor` (with the same other arguments) for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(List = "semantic_list", ListInput => ListOutput, semantic_list);

async fn semantic_list(cx: OpCtx, mut input: ListInput) -> Result<ListOutput, OpError> {
    let page = Keyset::start(&cx, &mut input, |i| &mut i.page)?;
    input.scope.check()?;
    let span = input.window.check(&cx)?;
    let filter = FactFilter {
        tags: span.tags,
        since: span.since,
        until: span.until,
        min_confidence: input.scope.min_confidence,
        include_superseded: input.scope.include_superseded,
    };
    let (facts, next_cursor) = page
        .fetch(&cx, cx.store().facts(), filter, Order::Desc)
        .await?;
    Ok(ListOutput { facts, next_cursor })
}

// ---------- semantic_tags ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TagsInput {
    /// Only tags starting with this.
    pub prefix: Option<String>,
    /// Also count superseded facts (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// Most tags to return, most used first (default 100, at most 1000).
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

operation!(Tags = "semantic_tags", TagsInput => TagsOutput, semantic_tags);

async fn semantic_tags(cx: OpCtx, input: TagsInput) -> Result<TagsOutput, OpError> {
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
        .store()
        .fact_tags(cx.namespace(), input.include_superseded, prefix, limit)
        .await?
        .into_iter()
        .map(|(tag, count)| TagCount { tag, count })
        .collect();
    Ok(TagsOutput { tags })
}

// ---------- semantic_reinforce ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReinforceInput {
    /// The fact that proved true again.
    pub id: String,
    /// How far to move confidence towards 1.0, as a fraction of the remaining
    /// distance (default 0.2: 0.5 becomes 0.6).
    pub boost: Option<f64>,
}

operation!(Reinforce = "semantic_reinforce", ReinforceInput => FactOutput, semantic_reinforce);

async fn semantic_reinforce(cx: OpCtx, input: ReinforceInput) -> Result<FactOutput, OpError> {
    check_id("id", &input.id, FACT_ID)?;
    let boost = input.boost.unwrap_or(DEFAULT_REINFORCE_BOOST);
    check_unit("boost", boost)?;
    let fact = cx
        .store()
        .reinforce_fact(cx.namespace(), &input.id, boost)
        .await?;
    Ok(FactOutput { fact })
}

// ---------- semantic_supersede ----------

#[derive(Debug, Deserialize, JsonSchema)]
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

operation!(Supersede = "semantic_supersede", SupersedeInput => SupersedeOutput, semantic_supersede);

async fn semantic_supersede(cx: OpCtx, input: SupersedeInput) -> Result<SupersedeOutput, OpError> {
    check_id("id", &input.id, FACT_ID)?;
    let new = input.new.prepare(&cx).map_err(|e| match e {
        OpError::InvalidInput(m) => OpError::invalid(format!("new: {m}")),
        other => other,
    })?;
    let (old, new) = cx
        .store()
        .supersede_fact(cx.namespace(), &cx.session.id, &input.id, new)
        .await?;
    Ok(SupersedeOutput { old, new })
}

// ---------- semantic_history ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOutput {
    /// Every version, oldest first; the last is current unless it was deleted.
    pub versions: Vec<Fact>,
}

operation!(History = "semantic_history", IdInput => HistoryOutput, semantic_history);

async fn semantic_history(cx: OpCtx, input: IdInput) -> Result<HistoryOutput, OpError> {
    check_id("id", &input.id, FACT_ID)?;
    let versions = cx.store().fact_history(cx.namespace(), &input.id).await?;
    Ok(HistoryOutput { versions })
}
