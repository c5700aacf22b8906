//! The knowledge graph, part 2: what the reference server cannot do. Traversals
//! and algorithms on the in-memory petgraph snapshot (`crate::graph`), and edits
//! that keep relations consistent (rename, merge, update). Whole-graph
//! algorithms run on the blocking pool with a time budget and say when they
//! stopped early.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::graph::MAX_NAME_BYTES;
use super::{OpCtx, check_text};
use crate::error::OpError;
use crate::graph::{Dir, EdgeFilter, PathBounds, Snapshot, deadline, groups};
use crate::model::Relation;
use crate::store::EntityRecord;
use crate::timespec::TimeSpec;

/// Time a whole-graph algorithm may take before it answers with what it has.
const ALGORITHM_BUDGET_MS: u64 = 2_000;
const MAX_DEPTH: usize = 6;
const MAX_NODES: usize = 5_000;
const DEFAULT_NODES: usize = 200;
const MAX_PATHS: usize = 200;
const DEFAULT_TOP_K: usize = 20;
const MAX_TOP_K: usize = 1_000;
/// Members listed per community (its size is always exact).
const MEMBERS_SHOWN: usize = 50;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Follow relations from the entity outwards (from → to).
    Out,
    /// Follow relations pointing at the entity (to ← from).
    In,
    /// Both ways (the default).
    #[default]
    Both,
}

impl From<Direction> for Dir {
    fn from(d: Direction) -> Dir {
        match d {
            Direction::Out => Dir::Out,
            Direction::In => Dir::In,
            Direction::Both => Dir::Both,
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeOut {
    pub name: String,
    /// Absent for a name only a relation mentions (from an imported file).
    #[serde(rename = "entityType", skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
}

fn node_out(s: &Snapshot, i: petgraph::graph::NodeIndex) -> NodeOut {
    NodeOut {
        name: s.graph[i].name.clone(),
        entity_type: s.graph[i].entity_type.clone(),
    }
}

fn find(s: &Snapshot, field: &str, name: &str) -> Result<petgraph::graph::NodeIndex, OpError> {
    check_text(field, name, MAX_NAME_BYTES)?;
    s.node(name).ok_or_else(|| {
        OpError::NotFound(format!(
            "there is no entity named {name:?} (`{field}`): names are case-sensitive; search_nodes finds existing ones"
        ))
    })
}

fn filter(relation_types: Vec<String>, valid_at: Option<TimeSpec>) -> EdgeFilter {
    EdgeFilter {
        relation_types,
        valid_at: valid_at.map(TimeSpec::micros),
    }
}

fn bounded(field: &str, v: Option<usize>, default: usize, max: usize) -> Result<usize, OpError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(OpError::invalid(format!(
            "`{field}` is {n}: give 1 to {max}"
        ))),
    }
}

/// Runs `f` on the namespace's snapshot on the blocking pool.
async fn on_snapshot<T: Send + 'static>(
    cx: &OpCtx,
    f: impl FnOnce(Arc<Snapshot>) -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    let snapshot = cx.app.graph(cx.namespace()).await?;
    tokio::task::spawn_blocking(move || f(snapshot))
        .await
        .map_err(|e| OpError::Storage(format!("graph computation failed: {e}")))?
}

// ---------- graph_neighbors ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NeighborsInput {
    /// The entity to start from.
    pub name: String,
    /// How many hops out (default 1, at most 6).
    pub depth: Option<usize>,
    /// out, in, or both (default).
    #[serde(default)]
    pub direction: Direction,
    /// Only follow these relation types (default: all).
    #[serde(default)]
    pub relation_types: Vec<String>,
    /// Only relations valid at this time (RFC 3339, "yesterday", "2h ago").
    pub valid_at: Option<TimeSpec>,
    /// Most entities to return (default 200, at most 5000).
    pub max_nodes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Neighbor {
    pub name: String,
    #[serde(rename = "entityType", skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    /// Hops from the start.
    pub depth: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NeighborsOutput {
    /// The start first, then by distance.
    pub nodes: Vec<Neighbor>,
    /// The relations walked.
    pub relations: Vec<Relation>,
    /// True when `max_nodes` stopped the walk early.
    pub truncated: bool,
}

operation!(Neighbors = "graph_neighbors", NeighborsInput => NeighborsOutput, graph_neighbors);

async fn graph_neighbors(cx: OpCtx, input: NeighborsInput) -> Result<NeighborsOutput, OpError> {
    let depth = bounded("depth", input.depth, 1, MAX_DEPTH)?;
    let max_nodes = bounded("max_nodes", input.max_nodes, DEFAULT_NODES, MAX_NODES)?;
    let f = filter(input.relation_types, input.valid_at);
    let dir = input.direction.into();
    on_snapshot(&cx, move |s| {
        let start = find(&s, "name", &input.name)?;
        let (nodes, edges, truncated) = s.neighborhood(&[start], depth, dir, &f, max_nodes);
        Ok(NeighborsOutput {
            nodes: nodes
                .into_iter()
                .map(|(i, d)| {
                    let n = node_out(&s, i);
                    Neighbor {
                        name: n.name,
                        entity_type: n.entity_type,
                        depth: d,
                    }
                })
                .collect(),
            relations: edges.into_iter().map(|e| s.relation(e)).collect(),
            truncated,
        })
    })
    .await
}

// ---------- graph_shortest_path ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PathInput {
    /// Where the path starts.
    pub from: String,
    /// Where it ends.
    pub to: String,
    /// out (follow relations forwards only), in, or both (default: direction ignored).
    #[serde(default)]
    pub direction: Direction,
    /// Only these relation types (default: all).
    #[serde(default)]
    pub relation_types: Vec<String>,
    /// Only relations valid at this time (RFC 3339, "yesterday", "2h ago").
    pub valid_at: Option<TimeSpec>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PathOutput {
    pub found: bool,
    /// Hops along the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    /// Entity names from `from` to `to`.
    pub path: Vec<String>,
    /// The relations along it, in order (as stored, whichever way they point).
    pub relations: Vec<Relation>,
}

operation!(ShortestPath = "graph_shortest_path", PathInput => PathOutput, graph_shortest_path);

async fn graph_shortest_path(cx: OpCtx, input: PathInput) -> Result<PathOutput, OpError> {
    let f = filter(input.relation_types, input.valid_at);
    let dir = input.direction.into();
    on_snapshot(&cx, move |s| {
        let a = find(&s, "from", &input.from)?;
        let b = find(&s, "to", &input.to)?;
        Ok(match s.shortest_path(a, b, dir, &f) {
            Some((nodes, edges)) => PathOutput {
                found: true,
                length: Some(edges.len()),
                path: nodes.iter().map(|n| s.name(*n).to_string()).collect(),
                relations: edges.into_iter().map(|e| s.relation(e)).collect(),
            },
            None => PathOutput {
                found: false,
                length: None,
                path: Vec::new(),
                relations: Vec::new(),
            },
        })
    })
    .await
}

// ---------- graph_all_paths ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AllPathsInput {
    pub from: String,
    pub to: String,
    /// Longest path, in hops (default 4, at most 6).
    pub max_depth: Option<usize>,
    /// Most paths to return (default 20, at most 200). Shorter paths come first.
    pub max_paths: Option<usize>,
    /// out, in, or both (default).
    #[serde(default)]
    pub direction: Direction,
    /// Only these relation types (default: all).
    #[serde(default)]
    pub relation_types: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PathFound {
    pub path: Vec<String>,
    pub relations: Vec<Relation>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AllPathsOutput {
    pub paths: Vec<PathFound>,
    /// True when `max_paths` or the time budget stopped the search: more paths may exist.
    pub truncated: bool,
}

operation!(AllPaths = "graph_all_paths", AllPathsInput => AllPathsOutput, graph_all_paths);

async fn graph_all_paths(cx: OpCtx, input: AllPathsInput) -> Result<AllPathsOutput, OpError> {
    let max_depth = bounded("max_depth", input.max_depth, 4, MAX_DEPTH)?;
    let max_paths = bounded("max_paths", input.max_paths, 20, MAX_PATHS)?;
    let f = filter(input.relation_types, None);
    let dir = input.direction.into();
    on_snapshot(&cx, move |s| {
        let a = find(&s, "from", &input.from)?;
        let b = find(&s, "to", &input.to)?;
        let bounds = PathBounds {
            max_hops: max_depth,
            max_paths,
            deadline: deadline(Duration::from_millis(ALGORITHM_BUDGET_MS)),
        };
        let (paths, truncated) = s.all_paths(a, b, &bounds, dir, &f);
        Ok(AllPathsOutput {
            paths: paths
                .into_iter()
                .map(|(nodes, edges)| PathFound {
                    path: nodes.iter().map(|n| s.name(*n).to_string()).collect(),
                    relations: edges.into_iter().map(|e| s.relation(e)).collect(),
                })
                .collect(),
            truncated,
        })
    })
    .await
}

// ---------- graph_subgraph ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SubgraphInput {
    /// Entities to grow the subgraph around.
    pub seeds: Vec<String>,
    /// Hops out from the seeds (default 1, at most 6).
    pub hops: Option<usize>,
    /// Most entities in the answer (default 200, at most 5000).
    pub max_nodes: Option<usize>,
    /// Only follow these relation types (default: all).
    #[serde(default)]
    pub relation_types: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SubgraphOutput {
    pub entities: Vec<NodeOut>,
    /// Every relation between entities of the subgraph.
    pub relations: Vec<Relation>,
    /// True when `max_nodes` cut it.
    pub truncated: bool,
}

operation!(Subgraph = "graph_subgraph", SubgraphInput => SubgraphOutput, graph_subgraph);

async fn graph_subgraph(cx: OpCtx, input: SubgraphInput) -> Result<SubgraphOutput, OpError> {
    if input.seeds.is_empty() {
        return Err(OpError::invalid(
            "`seeds` is empty: name at least one entity",
        ));
    }
    let hops = bounded("hops", input.hops, 1, MAX_DEPTH)?;
    let max_nodes = bounded("max_nodes", input.max_nodes, DEFAULT_NODES, MAX_NODES)?;
    let f = filter(input.relation_types, None);
    on_snapshot(&cx, move |s| {
        let seeds = input
            .seeds
            .iter()
            .map(|n| find(&s, "seeds[]", n))
            .collect::<Result<Vec<_>, _>>()?;
        let (nodes, _, truncated) = s.neighborhood(&seeds, hops, Dir::Both, &f, max_nodes);
        let inside: HashSet<_> = nodes.iter().map(|(n, _)| *n).collect();
        let relations = s
            .graph
            .edge_indices()
            .filter(|e| {
                let (a, b) = s.graph.edge_endpoints(*e).expect("edge exists");
                inside.contains(&a) && inside.contains(&b) && {
                    let w = &s.graph[*e];
                    f.relation_types.is_empty() || f.relation_types.contains(&w.relation_type)
                }
            })
            .map(|e| s.relation(e))
            .collect();
        Ok(SubgraphOutput {
            entities: nodes.into_iter().map(|(n, _)| node_out(&s, n)).collect(),
            relations,
            truncated,
        })
    })
    .await
}

// ---------- graph_centrality ----------

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Importance by who points at you, and how important they are (default).
    #[default]
    Pagerank,
    /// Relations in plus out.
    Degree,
    InDegree,
    OutDegree,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CentralityInput {
    /// pagerank (default), degree, in_degree or out_degree.
    #[serde(default)]
    pub measure: Measure,
    /// How many of the most central entities to return (default 20, at most 1000).
    pub top_k: Option<usize>,
    /// Only count these relation types (default: all).
    #[serde(default)]
    pub relation_types: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Ranked {
    pub name: String,
    #[serde(rename = "entityType", skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    pub score: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CentralityOutput {
    pub measure: Measure,
    pub top: Vec<Ranked>,
    /// False when the time budget stopped PageRank before it converged (scores
    /// are then close, not exact).
    pub complete: bool,
    pub entities: usize,
}

operation!(Centrality = "graph_centrality", CentralityInput => CentralityOutput, graph_centrality);

async fn graph_centrality(cx: OpCtx, input: CentralityInput) -> Result<CentralityOutput, OpError> {
    let top_k = bounded("top_k", input.top_k, DEFAULT_TOP_K, MAX_TOP_K)?;
    let f = filter(input.relation_types, None);
    let measure = input.measure;
    on_snapshot(&cx, move |s| {
        let until = deadline(Duration::from_millis(ALGORITHM_BUDGET_MS));
        let (scores, complete): (Vec<f64>, bool) = match measure {
            Measure::Pagerank => s.pagerank(&f, until),
            m => {
                let d = s.degrees(&f);
                let pick = |(i, o): (usize, usize)| match m {
                    Measure::InDegree => i,
                    Measure::OutDegree => o,
                    _ => i + o,
                } as f64;
                (d.into_iter().map(pick).collect(), true)
            }
        };
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| {
            scores[b].total_cmp(&scores[a]).then_with(|| {
                s.graph[petgraph::graph::NodeIndex::new(a)]
                    .name
                    .cmp(&s.graph[petgraph::graph::NodeIndex::new(b)].name)
            })
        });
        let top = order
            .into_iter()
            .take(top_k)
            .map(|i| {
                let n = node_out(&s, petgraph::graph::NodeIndex::new(i));
                Ranked {
                    name: n.name,
                    entity_type: n.entity_type,
                    score: scores[i],
                }
            })
            .collect();
        Ok(CentralityOutput {
            measure,
            top,
            complete,
            entities: scores.len(),
        })
    })
    .await
}

// ---------- graph_communities ----------

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommunityAlgorithm {
    /// Groups of entities that relate to each other more than to others (default).
    #[default]
    LabelPropagation,
    /// Groups connected by any chain of relations (direction ignored).
    Components,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CommunitiesInput {
    /// label_propagation (default) or components.
    #[serde(default)]
    pub algorithm: CommunityAlgorithm,
    /// Leave out groups smaller than this (default 2).
    pub min_size: Option<usize>,
    /// Most groups to return, largest first (default 20, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Community {
    pub size: usize,
    /// Up to 50 member names, sorted.
    pub members: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CommunitiesOutput {
    pub algorithm: CommunityAlgorithm,
    /// Groups of at least `min_size`, largest first.
    pub communities: Vec<Community>,
    /// How many groups of at least `min_size` exist (all of them, not only those listed).
    pub count: usize,
    /// False when the time budget stopped label propagation before it settled.
    pub complete: bool,
}

operation!(Communities = "graph_communities", CommunitiesInput => CommunitiesOutput, graph_communities);

async fn graph_communities(
    cx: OpCtx,
    input: CommunitiesInput,
) -> Result<CommunitiesOutput, OpError> {
    let min_size = bounded("min_size", input.min_size, 2, MAX_NODES)?;
    let limit = bounded("limit", input.limit, 20, 1000)?;
    let algorithm = input.algorithm;
    on_snapshot(&cx, move |s| {
        let f = EdgeFilter::default();
        let (labels, complete) = match algorithm {
            CommunityAlgorithm::Components => (s.components(&f), true),
            CommunityAlgorithm::LabelPropagation => {
                s.label_propagation(&f, deadline(Duration::from_millis(ALGORITHM_BUDGET_MS)))
            }
        };
        let all: Vec<_> = groups(&s, &labels)
            .into_iter()
            .filter(|g| g.len() >= min_size)
            .collect();
        Ok(CommunitiesOutput {
            algorithm,
            count: all.len(),
            communities: all
                .into_iter()
                .take(limit)
                .map(|g| Community {
                    size: g.len(),
                    members: g
                        .iter()
                        .take(MEMBERS_SHOWN)
                        .map(|n| s.name(*n).to_string())
                        .collect(),
                })
                .collect(),
            complete,
        })
    })
    .await
}

// ---------- graph_rename_entity / graph_merge_entities / graph_update_entity ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct EntityOutput {
    pub entity: EntityRecord,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RenameInput {
    /// The entity's current name.
    pub name: String,
    /// Its new name (must not be taken).
    pub new_name: String,
}

operation!(RenameEntity = "graph_rename_entity", RenameInput => EntityOutput, graph_rename_entity);

async fn graph_rename_entity(cx: OpCtx, input: RenameInput) -> Result<EntityOutput, OpError> {
    check_text("name", &input.name, MAX_NAME_BYTES)?;
    check_text("new_name", &input.new_name, MAX_NAME_BYTES)?;
    if input.name == input.new_name {
        return Err(OpError::invalid(
            "`new_name` is the current name: nothing to do",
        ));
    }
    let entity = cx
        .store()
        .rename_entity(cx.namespace(), &input.name, &input.new_name)
        .await?;
    Ok(EntityOutput { entity })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MergeInput {
    /// The entity that remains.
    pub target: String,
    /// Entities merged into it and then deleted: their observations join the
    /// target's (no duplicates) and their relations move to it.
    pub sources: Vec<String>,
}

operation!(MergeEntities = "graph_merge_entities", MergeInput => EntityOutput, graph_merge_entities);

async fn graph_merge_entities(cx: OpCtx, input: MergeInput) -> Result<EntityOutput, OpError> {
    check_text("target", &input.target, MAX_NAME_BYTES)?;
    if input.sources.is_empty() {
        return Err(OpError::invalid(
            "`sources` is empty: name the entities to merge in",
        ));
    }
    for s in &input.sources {
        check_text("sources[]", s, MAX_NAME_BYTES)?;
    }
    let entity = cx
        .store()
        .merge_entities(cx.namespace(), &input.target, input.sources)
        .await?;
    Ok(EntityOutput { entity })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateEntityInput {
    pub name: String,
    /// A new type.
    #[serde(default, rename = "entityType")]
    pub entity_type: Option<String>,
    /// Properties to set (merged into the existing ones; a null value removes a key).
    pub properties: Option<Map<String, Value>>,
}

operation!(UpdateEntity = "graph_update_entity", UpdateEntityInput => EntityOutput, graph_update_entity);

async fn graph_update_entity(cx: OpCtx, input: UpdateEntityInput) -> Result<EntityOutput, OpError> {
    check_text("name", &input.name, MAX_NAME_BYTES)?;
    if let Some(t) = &input.entity_type {
        check_text("entityType", t, 256)?;
    }
    if let Some(p) = &input.properties {
        super::check_metadata(p, cx.limits())?;
    }
    if input.entity_type.is_none() && input.properties.is_none() {
        return Err(OpError::invalid(
            "nothing to change: pass `entityType`, `properties`, or both",
        ));
    }
    let entity = cx
        .store()
        .update_entity(
            cx.namespace(),
            &input.name,
            input.entity_type,
            input.properties,
        )
        .await?;
    Ok(EntityOutput { entity })
}

// ---------- graph_stats ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatsInput {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatsOutput {
    pub entities: u64,
    pub relations: u64,
    pub observations: u64,
    /// relations / (entities × (entities − 1)).
    pub density: f64,
    /// Groups connected by any chain of relations.
    pub components: usize,
    /// Entities with no relation at all.
    pub isolated: usize,
    /// Most common entity types (up to 50).
    pub entity_types: Vec<TypeCount>,
    /// Most common relation types (up to 50).
    pub relation_types: Vec<TypeCount>,
}

operation!(Stats = "graph_stats", StatsInput => StatsOutput, graph_stats);

async fn graph_stats(cx: OpCtx, _: StatsInput) -> Result<StatsOutput, OpError> {
    let counts = cx.store().graph_counts(cx.namespace()).await?;
    let (components, isolated) = on_snapshot(&cx, |s| {
        let f = EdgeFilter::default();
        let labels = s.components(&f);
        let distinct: HashSet<usize> = labels.iter().copied().collect();
        let isolated = s.degrees(&f).iter().filter(|(i, o)| i + o == 0).count();
        Ok((distinct.len(), isolated))
    })
    .await?;
    let n = counts.entities as f64;
    let to_counts = |v: Vec<(String, u64)>| {
        v.into_iter()
            .map(|(name, count)| TypeCount { name, count })
            .collect()
    };
    Ok(StatsOutput {
        density: if n > 1.0 {
            counts.relations as f64 / (n * (n - 1.0))
        } else {
            0.0
        },
        entities: counts.entities,
        relations: counts.relations,
        observations: counts.observations,
        components,
        isolated,
        entity_types: to_counts(counts.entity_types),
        relation_types: to_counts(counts.relation_types),
    })
}
