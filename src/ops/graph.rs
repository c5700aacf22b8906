//! The knowledge graph, part 1: the nine tools of the reference memory server
//! (`@modelcontextprotocol/server-memory`), same names, same required inputs,
//! same answer shapes, so a host can swap it for engram without changing a
//! prompt. Where the reference is unsound engram is strict and says so: a
//! relation to an unknown entity, or observations for an unknown entity, fail
//! the call and write nothing.
//!
//! Extras, all optional: `limit`, `cursor`, `include_observations` and
//! `entity_types` on read_graph and search_nodes, `include_observations` on
//! open_nodes. read_graph pages instead of flooding the context.

use std::collections::{HashMap, HashSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::listing::{Keyset, Offsets, check_batch};
use super::{OpCtx, check_text, cursor, page_size};
use crate::error::OpError;
use crate::model::{Entity, RecordKind, Relation};
use crate::search::{Matcher, SearchQuery};
use crate::store::{NewEntity, NewRelation};
use crate::timespec::TimeSpec;
use serde_json::{Map, Value};

/// The longest entity name or relation end (bytes).
pub(crate) const MAX_NAME_BYTES: usize = 512;
/// The longest entity or relation type (bytes).
pub(crate) const MAX_TYPE_BYTES: usize = 256;
/// search_nodes returns this many entities unless asked for another `limit`.
const DEFAULT_SEARCH_NODES: usize = 100;

fn check_name(field: &str, name: &str) -> Result<(), OpError> {
    check_text(field, name, MAX_NAME_BYTES)
}

fn check_relation(at: &str, r: &Relation) -> Result<(), OpError> {
    check_name(&format!("{at}.from"), &r.from)?;
    check_name(&format!("{at}.to"), &r.to)?;
    check_text(
        &format!("{at}.relationType"),
        &r.relation_type,
        MAX_TYPE_BYTES,
    )
}

// ---------- create_entities ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EntityInput {
    /// The name of the entity (unique; how relations refer to it).
    pub name: String,
    /// The type of the entity ("person", "service", ...).
    #[serde(rename = "entityType")]
    pub entity_type: String,
    /// An array of observation contents associated with the entity.
    pub observations: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateEntitiesInput {
    /// Entities to create. Names that already exist are skipped.
    pub entities: Vec<EntityInput>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EntitiesOutput {
    /// The entities created (existing names were skipped).
    pub entities: Vec<Entity>,
}

operation!(CreateEntities = "create_entities", CreateEntitiesInput => EntitiesOutput, create_entities);

async fn create_entities(cx: OpCtx, input: CreateEntitiesInput) -> Result<EntitiesOutput, OpError> {
    check_batch("entities", &input.entities, &cx)?;
    let max = cx.limits().max_content_bytes;
    let mut new = Vec::with_capacity(input.entities.len());
    for (i, e) in input.entities.into_iter().enumerate() {
        check_name(&format!("entities[{i}].name"), &e.name)?;
        check_text(
            &format!("entities[{i}].entityType"),
            &e.entity_type,
            MAX_TYPE_BYTES,
        )?;
        for (j, o) in e.observations.iter().enumerate() {
            check_text(&format!("entities[{i}].observations[{j}]"), o, max)?;
        }
        new.push(NewEntity {
            name: e.name,
            entity_type: e.entity_type,
            observations: e.observations,
        });
    }
    let entities = cx.store().create_entities(cx.namespace(), new).await?;
    Ok(EntitiesOutput { entities })
}

// ---------- create_relations ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RelationsInput {
    /// The relations, each named by from, to and relationType.
    pub relations: Vec<RelationInput>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateRelationsInput {
    /// Relations, in active voice: `from` does `relationType` to `to`. Both
    /// entities must exist.
    pub relations: Vec<NewRelationInput>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NewRelationInput {
    /// The name of the entity where the relation starts.
    pub from: String,
    /// The name of the entity where the relation ends.
    pub to: String,
    /// The type of the relation ("works_at", "depends_on", ...).
    #[serde(rename = "relationType")]
    pub relation_type: String,
    /// Optional: since when the relation holds (RFC 3339, "yesterday", "2h ago").
    pub valid_from: Option<TimeSpec>,
    /// Optional: until when it held.
    pub valid_to: Option<TimeSpec>,
    /// Optional: free properties (a JSON object).
    pub properties: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RelationInput {
    /// The name of the entity where the relation starts.
    pub from: String,
    /// The name of the entity where the relation ends.
    pub to: String,
    /// The type of the relation ("works_at", "depends_on", ...).
    #[serde(rename = "relationType")]
    pub relation_type: String,
}

impl RelationInput {
    fn into_relation(self) -> Relation {
        Relation {
            from: self.from,
            to: self.to,
            relation_type: self.relation_type,
        }
    }
}

fn relations_of(cx: &OpCtx, input: Vec<RelationInput>) -> Result<Vec<Relation>, OpError> {
    check_batch("relations", &input, cx)?;
    let relations: Vec<Relation> = input
        .into_iter()
        .map(RelationInput::into_relation)
        .collect();
    for (i, r) in relations.iter().enumerate() {
        check_relation(&format!("relations[{i}]"), r)?;
    }
    Ok(relations)
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RelationsOutput {
    /// The relations created (duplicates of existing ones were skipped).
    pub relations: Vec<Relation>,
}

operation!(CreateRelations = "create_relations", CreateRelationsInput => RelationsOutput, create_relations);

async fn create_relations(
    cx: OpCtx,
    input: CreateRelationsInput,
) -> Result<RelationsOutput, OpError> {
    check_batch("relations", &input.relations, &cx)?;
    let mut relations = Vec::with_capacity(input.relations.len());
    for (i, r) in input.relations.into_iter().enumerate() {
        let at = format!("relations[{i}]");
        let relation = Relation {
            from: r.from,
            to: r.to,
            relation_type: r.relation_type,
        };
        check_relation(&at, &relation)?;
        if let (Some(f), Some(t)) = (r.valid_from, r.valid_to)
            && f.micros() >= t.micros()
        {
            return Err(OpError::invalid(format!(
                "`{at}.valid_from` is not before `valid_to`: swap them"
            )));
        }
        let properties = r.properties.unwrap_or_default();
        super::check_metadata(&properties, cx.limits())?;
        relations.push(NewRelation {
            relation,
            properties,
            valid_from: r.valid_from.map(TimeSpec::micros),
            valid_to: r.valid_to.map(TimeSpec::micros),
        });
    }
    let relations = cx
        .store()
        .create_relations_with(cx.namespace(), relations, true)
        .await?;
    Ok(RelationsOutput { relations })
}

// ---------- add_observations ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ObservationsInput {
    /// For each entity, observations to add. Every entity must exist, or
    /// nothing is added.
    pub observations: Vec<ObservationAddition>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ObservationAddition {
    /// The name of the entity to add the observations to.
    #[serde(rename = "entityName")]
    pub entity_name: String,
    /// An array of observation contents to add.
    pub contents: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AddedObservations {
    #[serde(rename = "entityName")]
    pub entity_name: String,
    /// What was new (observations the entity already had are not repeated).
    #[serde(rename = "addedObservations")]
    pub added_observations: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ObservationsOutput {
    pub results: Vec<AddedObservations>,
}

operation!(AddObservations = "add_observations", ObservationsInput => ObservationsOutput, add_observations);

async fn add_observations(
    cx: OpCtx,
    input: ObservationsInput,
) -> Result<ObservationsOutput, OpError> {
    check_batch("observations", &input.observations, &cx)?;
    let max = cx.limits().max_content_bytes;
    let mut additions = Vec::with_capacity(input.observations.len());
    for (i, o) in input.observations.into_iter().enumerate() {
        check_name(&format!("observations[{i}].entityName"), &o.entity_name)?;
        for (j, c) in o.contents.iter().enumerate() {
            check_text(&format!("observations[{i}].contents[{j}]"), c, max)?;
        }
        additions.push((o.entity_name, o.contents));
    }
    let results = cx
        .store()
        .add_observations(cx.namespace(), additions)
        .await?
        .into_iter()
        .map(|(entity_name, added_observations)| AddedObservations {
            entity_name,
            added_observations,
        })
        .collect();
    Ok(ObservationsOutput { results })
}

// ---------- delete_entities / delete_observations / delete_relations ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedOutput {
    pub success: bool,
    pub message: String,
    /// Names given that matched nothing (nothing was done for them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteEntitiesInput {
    /// An array of entity names to delete. Their relations go with them.
    #[serde(rename = "entityNames")]
    pub entity_names: Vec<String>,
}

operation!(DeleteEntities = "delete_entities", DeleteEntitiesInput => DeletedOutput, delete_entities);

async fn delete_entities(cx: OpCtx, input: DeleteEntitiesInput) -> Result<DeletedOutput, OpError> {
    check_batch("entityNames", &input.entity_names, &cx)?;
    let (_, not_found) = cx
        .store()
        .delete_entities(cx.namespace(), input.entity_names)
        .await?;
    Ok(DeletedOutput {
        success: true,
        message: "Entities deleted successfully".into(),
        not_found,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteObservationsInput {
    pub deletions: Vec<ObservationDeletion>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ObservationDeletion {
    /// The name of the entity containing the observations.
    #[serde(rename = "entityName")]
    pub entity_name: String,
    /// An array of observations to delete (exact text).
    pub observations: Vec<String>,
}

operation!(DeleteObservations = "delete_observations", DeleteObservationsInput => DeletedOutput, delete_observations);

async fn delete_observations(
    cx: OpCtx,
    input: DeleteObservationsInput,
) -> Result<DeletedOutput, OpError> {
    check_batch("deletions", &input.deletions, &cx)?;
    let deletions = input
        .deletions
        .into_iter()
        .map(|d| (d.entity_name, d.observations))
        .collect();
    cx.store()
        .delete_observations(cx.namespace(), deletions)
        .await?;
    Ok(DeletedOutput {
        success: true,
        message: "Observations deleted successfully".into(),
        not_found: Vec::new(),
    })
}

operation!(DeleteRelations = "delete_relations", RelationsInput => DeletedOutput, delete_relations);

async fn delete_relations(cx: OpCtx, input: RelationsInput) -> Result<DeletedOutput, OpError> {
    let relations = relations_of(&cx, input.relations)?;
    cx.store()
        .delete_relations(cx.namespace(), relations)
        .await?;
    Ok(DeletedOutput {
        success: true,
        message: "Relations deleted successfully".into(),
        not_found: Vec::new(),
    })
}

// ---------- read_graph / search_nodes / open_nodes ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct GraphOutput {
    pub entities: Vec<Entity>,
    pub relations: Vec<Relation>,
    /// More of the graph is left: pass this as `cursor` (same other arguments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Says why the answer stopped short and how to go on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn entity_types(types: Vec<String>) -> Result<Vec<String>, OpError> {
    for t in &types {
        check_text("entity_types[]", t, MAX_TYPE_BYTES)?;
    }
    Ok(types)
}

/// Cuts entities (and the relations that start at the cut ones) to the
/// character budget. Returns how many entities were kept.
fn fit_graph(entities: &mut Vec<Entity>, relations: &mut Vec<Relation>, budget: usize) -> usize {
    fn size<T: Serialize>(v: &T) -> usize {
        serde_json::to_string(v).map_or(0, |s| s.len() + 1)
    }
    let mut used = 0;
    let mut kept = 0;
    for e in entities.iter() {
        let rel: usize = relations
            .iter()
            .filter(|r| r.from == e.name)
            .map(size)
            .sum();
        let cost = size(e) + rel;
        if kept > 0 && used + cost > budget {
            break;
        }
        used += cost;
        kept += 1;
    }
    if kept < entities.len() {
        let dropped: HashSet<String> = entities[kept..].iter().map(|e| e.name.clone()).collect();
        entities.truncate(kept);
        relations.retain(|r| !dropped.contains(&r.from));
    }
    kept
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ReadGraphInput {
    /// Most entities per page (default and upper bound: the page limit, 500).
    /// Answers are also cut to a size budget; `next_cursor` continues.
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
    /// Include each entity's observations (default true).
    pub include_observations: Option<bool>,
    /// Only entities of these types (exact names).
    #[serde(default)]
    pub entity_types: Vec<String>,
}

operation!(ReadGraph = "read_graph", ReadGraphInput => GraphOutput, read_graph);

async fn read_graph(cx: OpCtx, mut input: ReadGraphInput) -> Result<GraphOutput, OpError> {
    let limits = cx.limits();
    let limit = input
        .limit
        .map_or(Ok(limits.max_page_size), |l| page_size(Some(l), limits))?;
    let cursor_arg = input.cursor.take();
    let page = Keyset::resume(&cx, cursor_arg, limit, cursor::fingerprint(&input))?;
    let after = page.after.as_ref().map_or(0, |(seq, _)| *seq);
    let types = entity_types(input.entity_types)?;
    let store = cx.store();
    let (mut entities, seqs, mut relations, more) = store
        .read_graph_page(
            cx.namespace(),
            types.clone(),
            after,
            limit,
            input.include_observations.unwrap_or(true),
        )
        .await?;
    let fetched = entities.len();
    let kept = fit_graph(&mut entities, &mut relations, limits.max_graph_answer_chars);
    let cut = kept < fetched;
    if !more && !cut && types.is_empty() {
        // The last page also carries relations that start at no entity (only
        // an imported file can have them), so the whole graph is read.
        relations.extend(store.dangling_relations(cx.namespace()).await?);
    }
    let next_cursor =
        (more || cut).then(|| page.cursor_after(&cx, (seqs[kept - 1], String::new())));
    let note = next_cursor.as_ref().map(|_| {
        format!(
            "The graph is larger than one answer ({kept} entities here). Call read_graph again with \
             `cursor` set to next_cursor for more, or use search_nodes / open_nodes to read only what you need."
        )
    });
    Ok(GraphOutput {
        entities,
        relations,
        next_cursor,
        note,
    })
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct SearchNodesInput {
    /// The search query to match against entity names, types, and observation
    /// content. Entities holding every word rank first (by relevance); entities
    /// containing the query as written (case-insensitive) follow; then entities
    /// holding some of the words, ranked, while they score at least half the best.
    pub query: String,
    /// Most entities to return (default 100).
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page of the same search.
    pub cursor: Option<String>,
    /// Include each entity's observations (default true).
    pub include_observations: Option<bool>,
    /// Only entities of these types (exact names).
    #[serde(default)]
    pub entity_types: Vec<String>,
}

operation!(SearchNodes = "search_nodes", SearchNodesInput => GraphOutput, search_nodes);

async fn search_nodes(cx: OpCtx, mut input: SearchNodesInput) -> Result<GraphOutput, OpError> {
    let limits = cx.limits();
    check_text("query", &input.query, limits.max_query_bytes)?;
    let limit = page_size(Some(input.limit.unwrap_or(DEFAULT_SEARCH_NODES)), limits)?;
    let cursor_arg = input.cursor.take();
    let resumed = Offsets::resume(&cx, cursor_arg, limit, cursor::fingerprint(&input))?;
    let offset = resumed.offset;
    let types = entity_types(input.entity_types)?;
    let wanted = offset + limit + 1;
    let mut ids: Vec<String> = Vec::new();
    // Ranked: entities holding every word of the query.
    let terms = crate::search::SearchIndex::query_terms(&input.query);
    // With one word, "some of the words" is every word: the first pass has them.
    let partial_pass = terms.len() > 1;
    if !terms.is_empty() {
        let matcher = Matcher::All(terms.into_iter().map(Matcher::Term).collect());
        let ranked = ranked_entities(&cx, matcher, &types, wanted).await?;
        ids.extend(ranked.into_iter().map(|(id, _)| id));
    }
    // Then the reference's rule, so nothing it finds is missed: entities
    // containing the query as written, case-insensitively.
    let mut seen: HashSet<String> = ids.iter().cloned().collect();
    let more_wanted = wanted.saturating_sub(ids.len());
    if more_wanted > 0 {
        let substring = substring_matches(&cx, &input.query, &types, &seen, more_wanted).await?;
        seen.extend(substring.iter().cloned());
        ids.extend(substring);
    }
    // Then entities holding some of the words (a question rarely uses every
    // word of the entity it is about), ranked, down to a share of the best.
    if partial_pass
        && ids.len() < wanted
        && let Some(matcher) = Matcher::words(&input.query).filter(Matcher::has_content_words)
    {
        let related = ranked_entities(&cx, matcher, &types, wanted).await?;
        let best = related.first().map_or(0.0, |(_, score)| *score);
        ids.extend(
            related
                .into_iter()
                .take_while(|(_, score)| *score >= best * RELATED_SHARE)
                .filter_map(|(id, _)| seen.insert(id.clone()).then_some(id)),
        );
    }
    let more = ids.len() > offset + limit;
    let page: Vec<String> = ids.into_iter().skip(offset).take(limit).collect();
    let (mut entities, mut relations) = cx
        .store()
        .entities_by_ids(
            cx.namespace(),
            page,
            input.include_observations.unwrap_or(true),
        )
        .await?;
    let fetched = entities.len();
    let kept = fit_graph(&mut entities, &mut relations, limits.max_graph_answer_chars);
    let names: HashSet<&String> = entities.iter().map(|e| &e.name).collect();
    relations.retain(|r| names.contains(&r.from) || names.contains(&r.to));
    let next_cursor = (more || kept < fetched).then(|| resumed.cursor_after(&cx, kept));
    let note = next_cursor.as_ref().map(|_| {
        "More entities match: call search_nodes again with `cursor` set to next_cursor.".to_string()
    });
    Ok(GraphOutput {
        entities,
        relations,
        next_cursor,
        note,
    })
}

/// A search_nodes hit holding only some of the query's words is kept when it
/// scores at least this share of the best such hit.
const RELATED_SHARE: f32 = 0.5;

/// Up to `wanted` entities matching `matcher` (of `types`, if any), best
/// first, with their scores.
async fn ranked_entities(
    cx: &OpCtx,
    matcher: Matcher,
    types: &[String],
    wanted: usize,
) -> Result<Vec<(String, f32)>, OpError> {
    let mut q = SearchQuery::new(cx.namespace(), vec![RecordKind::Entity], matcher, wanted);
    if types.len() == 1 {
        q.tags = vec![types[0].to_lowercase()];
    }
    let hits = cx.app.search(q).await?.results.hits;
    let mut ranked: Vec<(String, f32)> = hits.into_iter().map(|h| (h.id, h.score)).collect();
    if !types.is_empty() {
        let ids = ranked.iter().map(|(id, _)| id.clone()).collect();
        let of = cx.store().entity_types_of(cx.namespace(), ids).await?;
        ranked.retain(|(id, _)| of.get(id).is_some_and(|t| types.contains(t)));
    }
    Ok(ranked)
}

/// Ids of up to `wanted` entities, none of them in `found_already`, whose name,
/// type or an observation contains `needle` (case-insensitive), in the order
/// of the first entities that do. The trigram index finds candidates holding
/// every 3-character piece; each is then checked for the whole needle (the
/// entities found already are not read again). Needles under 3 characters fall
/// back to a scan of the store.
async fn substring_matches(
    cx: &OpCtx,
    needle: &str,
    types: &[String],
    found_already: &HashSet<String>,
    wanted: usize,
) -> Result<Vec<String>, OpError> {
    /// Candidates fetched per round, before checking.
    const FIRST_FETCH: usize = 64;
    let unseen = |ids: Vec<String>| ids.into_iter().filter(|id| !found_already.contains(id));
    let Some(matcher) = Matcher::substring(needle) else {
        let limit = wanted + found_already.len();
        let ids = cx
            .store()
            .entity_ids_containing(cx.namespace(), needle, types.to_vec(), limit)
            .await?;
        return Ok(unseen(ids).take(wanted).collect());
    };
    let lower = needle.to_lowercase();
    let mut fetch = (wanted + found_already.len()).max(FIRST_FETCH);
    loop {
        let q = SearchQuery::new(
            cx.namespace(),
            vec![RecordKind::Entity],
            matcher.clone(),
            fetch,
        );
        let searched = cx.app.search(q).await?.results;
        let exhausted = !searched.has_more;
        let candidates: Vec<String> =
            unseen(searched.hits.into_iter().map(|h| h.id).collect()).collect();
        let found = if candidates.is_empty() {
            HashMap::new()
        } else {
            let ids = candidates.clone();
            cx.store().entities_keyed(cx.namespace(), ids).await?
        };
        let contains = |s: &str| s.to_lowercase().contains(&lower);
        let verified: Vec<String> = candidates
            .into_iter()
            .filter(|id| {
                found.get(id).is_some_and(|(e, _)| {
                    (types.is_empty() || types.contains(&e.entity_type))
                        && (contains(&e.name)
                            || contains(&e.entity_type)
                            || e.observations.iter().flatten().any(|o| contains(o)))
                })
            })
            .collect();
        if exhausted || verified.len() >= wanted {
            return Ok(verified.into_iter().take(wanted).collect());
        }
        fetch = fetch.saturating_mul(4);
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OpenNodesInput {
    /// An array of entity names to retrieve. Names that do not exist are skipped.
    pub names: Vec<String>,
    /// Include each entity's observations (default true).
    pub include_observations: Option<bool>,
}

operation!(OpenNodes = "open_nodes", OpenNodesInput => GraphOutput, open_nodes);

async fn open_nodes(cx: OpCtx, input: OpenNodesInput) -> Result<GraphOutput, OpError> {
    if input.names.len() > cx.limits().max_batch_items {
        return Err(OpError::invalid(format!(
            "`names` has {} items, the limit is {}: split it into several calls",
            input.names.len(),
            cx.limits().max_batch_items
        )));
    }
    let (entities, relations) = cx
        .store()
        .open_nodes(
            cx.namespace(),
            input.names,
            input.include_observations.unwrap_or(true),
        )
        .await?;
    Ok(GraphOutput {
        entities,
        relations,
        next_cursor: None,
        note: None,
    })
}
