//! The in-memory graph: a petgraph projection of one namespace's entities and
//! relations, built from the store on demand and kept until a graph write makes
//! it stale (the `{ns}/graph` cache-tag generation moves). Derived, never
//! trusted over the store, rebuildable at any time.
//!
//! Traversals (neighbours, paths, subgraphs) and whole-graph algorithms
//! (PageRank, degree, components, label propagation) run on an immutable
//! snapshot on the blocking pool, each with a time budget: when the budget runs
//! out they return what they have, marked incomplete, instead of holding a
//! request.
//!
//! Must not: write anything, or know MCP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::unionfind::UnionFind;
use petgraph::visit::EdgeRef;

use crate::model::{Micros, Relation};
use crate::store::GraphRows;

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// `None` for a name only a relation mentions (possible after an import).
    pub entity_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub relation_type: String,
    pub valid_from: Option<Micros>,
    pub valid_to: Option<Micros>,
}

/// Which way edges are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Out,
    In,
    Both,
}

/// Which edges a traversal may use.
#[derive(Debug, Clone, Default)]
pub struct EdgeFilter {
    /// Only these relation types (empty: all).
    pub relation_types: Vec<String>,
    /// Only relations valid at this time (valid_from <= t < valid_to).
    pub valid_at: Option<Micros>,
}

impl EdgeFilter {
    fn allows(&self, e: &Edge) -> bool {
        (self.relation_types.is_empty() || self.relation_types.contains(&e.relation_type))
            && self.valid_at.is_none_or(|t| {
                e.valid_from.is_none_or(|f| f <= t) && e.valid_to.is_none_or(|u| t < u)
            })
    }
}

/// The entities along a path and the relations between them, in order.
pub type Path = (Vec<NodeIndex>, Vec<EdgeIndex>);

/// How far an all-paths search may go.
#[derive(Debug, Clone, Copy)]
pub struct PathBounds {
    /// Longest path, in hops.
    pub max_hops: usize,
    /// Most paths to find.
    pub max_paths: usize,
    /// When to stop looking.
    pub deadline: Instant,
}

pub struct Snapshot {
    pub graph: DiGraph<Node, Edge>,
    pub by_name: HashMap<String, NodeIndex>,
}

impl Snapshot {
    pub fn build(rows: GraphRows) -> Snapshot {
        let mut graph = DiGraph::with_capacity(rows.nodes.len(), rows.edges.len());
        let mut by_name = HashMap::with_capacity(rows.nodes.len());
        for (name, entity_type) in rows.nodes {
            let i = graph.add_node(Node {
                name: name.clone(),
                entity_type: Some(entity_type),
            });
            by_name.insert(name, i);
        }
        for e in rows.edges {
            let mut node = |name: &String| {
                *by_name.entry(name.clone()).or_insert_with(|| {
                    graph.add_node(Node {
                        name: name.clone(),
                        entity_type: None,
                    })
                })
            };
            let (a, b) = (node(&e.from), node(&e.to));
            graph.add_edge(
                a,
                b,
                Edge {
                    relation_type: e.relation_type,
                    valid_from: e.valid_from,
                    valid_to: e.valid_to,
                },
            );
        }
        Snapshot { graph, by_name }
    }

    pub fn node(&self, name: &str) -> Option<NodeIndex> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, i: NodeIndex) -> &str {
        &self.graph[i].name
    }

    pub fn relation(&self, e: EdgeIndex) -> Relation {
        let (a, b) = self.graph.edge_endpoints(e).expect("edge exists");
        Relation {
            from: self.graph[a].name.clone(),
            to: self.graph[b].name.clone(),
            relation_type: self.graph[e].relation_type.clone(),
        }
    }

    /// Edges leaving `n` the allowed ways: (edge, the node at its other end).
    fn steps(&self, n: NodeIndex, dir: Dir, filter: &EdgeFilter) -> Vec<(EdgeIndex, NodeIndex)> {
        let mut out = Vec::new();
        if matches!(dir, Dir::Out | Dir::Both) {
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                if filter.allows(e.weight()) {
                    out.push((e.id(), e.target()));
                }
            }
        }
        if matches!(dir, Dir::In | Dir::Both) {
            for e in self.graph.edges_directed(n, Direction::Incoming) {
                if filter.allows(e.weight()) {
                    out.push((e.id(), e.source()));
                }
            }
        }
        out
    }

    /// Breadth-first from `seeds` up to `depth` hops, at most `max_nodes` nodes.
    /// Returns (node, hops from the nearest seed) in visit order, the edges
    /// walked, and whether the node budget cut the walk short.
    pub fn neighborhood(
        &self,
        seeds: &[NodeIndex],
        depth: usize,
        dir: Dir,
        filter: &EdgeFilter,
        max_nodes: usize,
    ) -> (Vec<(NodeIndex, usize)>, Vec<EdgeIndex>, bool) {
        let mut seen: HashMap<NodeIndex, usize> = HashMap::new();
        let mut order = Vec::new();
        let mut edges = Vec::new();
        let mut edge_seen = HashSet::new();
        let mut queue = VecDeque::new();
        for &s in seeds {
            if seen.insert(s, 0).is_none() {
                order.push((s, 0));
                queue.push_back(s);
            }
        }
        let mut cut = false;
        while let Some(n) = queue.pop_front() {
            let d = seen[&n];
            if d == depth {
                continue;
            }
            for (e, m) in self.steps(n, dir, filter) {
                if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(m) {
                    if order.len() >= max_nodes {
                        cut = true;
                        continue;
                    }
                    slot.insert(d + 1);
                    order.push((m, d + 1));
                    queue.push_back(m);
                }
                if edge_seen.insert(e) {
                    edges.push(e);
                }
            }
        }
        (order, edges, cut)
    }

    /// A shortest path (fewest hops) from `a` to `b`: nodes and edges along it.
    pub fn shortest_path(
        &self,
        a: NodeIndex,
        b: NodeIndex,
        dir: Dir,
        filter: &EdgeFilter,
    ) -> Option<(Vec<NodeIndex>, Vec<EdgeIndex>)> {
        let mut prev: HashMap<NodeIndex, (NodeIndex, EdgeIndex)> = HashMap::new();
        let mut seen = HashSet::from([a]);
        let mut queue = VecDeque::from([a]);
        while let Some(n) = queue.pop_front() {
            if n == b {
                let mut nodes = vec![b];
                let mut edges = Vec::new();
                let mut at = b;
                while let Some(&(p, e)) = prev.get(&at) {
                    nodes.push(p);
                    edges.push(e);
                    at = p;
                }
                nodes.reverse();
                edges.reverse();
                return Some((nodes, edges));
            }
            for (e, m) in self.steps(n, dir, filter) {
                if seen.insert(m) {
                    prev.insert(m, (n, e));
                    queue.push_back(m);
                }
            }
        }
        None
    }

    /// Simple paths from `a` to `b` within `bounds`, shortest first. Returns the
    /// paths and whether a bound (paths or time) cut the search.
    pub fn all_paths(
        &self,
        a: NodeIndex,
        b: NodeIndex,
        bounds: &PathBounds,
        dir: Dir,
        filter: &EdgeFilter,
    ) -> (Vec<Path>, bool) {
        let PathBounds {
            max_hops,
            max_paths,
            deadline,
        } = *bounds;
        let mut paths = Vec::new();
        let mut nodes = vec![a];
        let mut edges = Vec::new();
        let mut on_path = HashSet::from([a]);
        let mut cut = false;
        // Iterative deepening keeps shorter paths first.
        for limit in 1..=max_hops {
            self.dfs(
                b,
                limit,
                dir,
                filter,
                deadline,
                max_paths,
                &mut nodes,
                &mut edges,
                &mut on_path,
                &mut paths,
                &mut cut,
            );
            if cut {
                break;
            }
        }
        (paths, cut)
    }

    #[allow(clippy::too_many_arguments)]
    fn dfs(
        &self,
        target: NodeIndex,
        limit: usize,
        dir: Dir,
        filter: &EdgeFilter,
        deadline: Instant,
        max_paths: usize,
        nodes: &mut Vec<NodeIndex>,
        edges: &mut Vec<EdgeIndex>,
        on_path: &mut HashSet<NodeIndex>,
        paths: &mut Vec<Path>,
        cut: &mut bool,
    ) {
        if *cut {
            return;
        }
        if paths.len() >= max_paths || Instant::now() >= deadline {
            *cut = true;
            return;
        }
        let here = *nodes.last().expect("path starts at a node");
        for (e, m) in self.steps(here, dir, filter) {
            if on_path.contains(&m) {
                continue;
            }
            if m == target {
                // Only paths of exactly `limit` hops at this depth: shorter ones
                // were found at an earlier depth.
                if edges.len() + 1 == limit {
                    let mut n = nodes.clone();
                    n.push(m);
                    let mut es = edges.clone();
                    es.push(e);
                    paths.push((n, es));
                    if paths.len() >= max_paths {
                        *cut = true;
                        return;
                    }
                }
                continue;
            }
            if edges.len() + 1 < limit {
                nodes.push(m);
                edges.push(e);
                on_path.insert(m);
                self.dfs(
                    target, limit, dir, filter, deadline, max_paths, nodes, edges, on_path, paths,
                    cut,
                );
                on_path.remove(&m);
                nodes.pop();
                edges.pop();
                if *cut {
                    return;
                }
            }
        }
    }

    /// PageRank by power iteration (damping 0.85; dangling nodes spread their
    /// rank evenly) until the scores move less than `tolerance` in total or the
    /// deadline passes. Returns the scores and whether they converged.
    pub fn pagerank(&self, filter: &EdgeFilter, deadline: Instant) -> (Vec<f64>, bool) {
        const DAMPING: f64 = 0.85;
        const TOLERANCE: f64 = 1e-6;
        const MAX_ITERATIONS: usize = 100;
        let n = self.graph.node_count();
        if n == 0 {
            return (Vec::new(), true);
        }
        let out_degree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|i| {
                self.graph
                    .edges_directed(i, Direction::Outgoing)
                    .filter(|e| filter.allows(e.weight()))
                    .count()
            })
            .collect();
        let mut rank = vec![1.0 / n as f64; n];
        for _ in 0..MAX_ITERATIONS {
            let dangling: f64 = (0..n)
                .filter(|&i| out_degree[i] == 0)
                .map(|i| rank[i])
                .sum();
            let base = (1.0 - DAMPING) / n as f64 + DAMPING * dangling / n as f64;
            let mut next = vec![base; n];
            for e in self.graph.edge_references() {
                if filter.allows(e.weight()) {
                    let s = e.source().index();
                    next[e.target().index()] += DAMPING * rank[s] / out_degree[s] as f64;
                }
            }
            let delta: f64 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
            rank = next;
            if delta < TOLERANCE {
                return (rank, true);
            }
            if Instant::now() >= deadline {
                return (rank, false);
            }
        }
        (rank, false)
    }

    /// (in, out) degree of every node over the allowed edges.
    pub fn degrees(&self, filter: &EdgeFilter) -> Vec<(usize, usize)> {
        let mut d = vec![(0, 0); self.graph.node_count()];
        for e in self.graph.edge_references() {
            if filter.allows(e.weight()) {
                d[e.source().index()].1 += 1;
                d[e.target().index()].0 += 1;
            }
        }
        d
    }

    /// Weakly connected components: a label per node.
    pub fn components(&self, filter: &EdgeFilter) -> Vec<usize> {
        let mut uf = UnionFind::new(self.graph.node_count());
        for e in self.graph.edge_references() {
            if filter.allows(e.weight()) {
                uf.union(e.source().index(), e.target().index());
            }
        }
        (0..self.graph.node_count()).map(|i| uf.find(i)).collect()
    }

    /// Label propagation (undirected): every node takes the label with the
    /// most weight among its neighbours, sweeping in a fixed order until nothing
    /// changes or the deadline passes. A neighbour's vote weighs 1 + the number
    /// of neighbours the two share, so edges inside tight groups count more than
    /// a lone bridge between groups; ties go to the smallest label, and a node
    /// moves only to a strictly heavier label, so the answer is deterministic.
    /// Returns a label per node and whether it settled.
    pub fn label_propagation(&self, filter: &EdgeFilter, deadline: Instant) -> (Vec<usize>, bool) {
        const MAX_SWEEPS: usize = 50;
        let n = self.graph.node_count();
        let neighbours: Vec<HashSet<usize>> = self
            .graph
            .node_indices()
            .map(|i| {
                self.steps(i, Dir::Both, filter)
                    .into_iter()
                    .map(|(_, m)| m.index())
                    .filter(|&m| m != i.index())
                    .collect()
            })
            .collect();
        let weights: Vec<Vec<(usize, usize)>> = neighbours
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                ns.iter()
                    .map(|&m| {
                        let (small, large) = if ns.len() <= neighbours[m].len() {
                            (ns, &neighbours[m])
                        } else {
                            (&neighbours[m], ns)
                        };
                        let shared = small
                            .iter()
                            .filter(|x| **x != i && **x != m && large.contains(x))
                            .count();
                        (m, 1 + shared)
                    })
                    .collect()
            })
            .collect();
        let mut label: Vec<usize> = (0..n).collect();
        for _ in 0..MAX_SWEEPS {
            let mut changed = false;
            for i in 0..n {
                let mut votes: HashMap<usize, usize> = HashMap::new();
                for &(m, w) in &weights[i] {
                    *votes.entry(label[m]).or_default() += w;
                }
                let Some((&best, &weight)) = votes
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                else {
                    continue;
                };
                if best != label[i] && weight > votes.get(&label[i]).copied().unwrap_or(0) {
                    label[i] = best;
                    changed = true;
                }
            }
            if !changed {
                return (label, true);
            }
            if Instant::now() >= deadline {
                return (label, false);
            }
        }
        (label, false)
    }
}

/// Groups nodes by label, largest group first (ties by first member's name).
pub fn groups(snapshot: &Snapshot, labels: &[usize]) -> Vec<Vec<NodeIndex>> {
    let mut by: HashMap<usize, Vec<NodeIndex>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by.entry(l).or_default().push(NodeIndex::new(i));
    }
    let mut out: Vec<Vec<NodeIndex>> = by.into_values().collect();
    for g in &mut out {
        g.sort_by(|a, b| snapshot.name(*a).cmp(snapshot.name(*b)));
    }
    out.sort_by(|a, b| {
        b.len()
            .cmp(&a.len())
            .then_with(|| snapshot.name(a[0]).cmp(snapshot.name(b[0])))
    });
    out
}

/// The deadline for a budget starting now.
pub fn deadline(budget: Duration) -> Instant {
    Instant::now() + budget
}

/// Snapshots per namespace, each with the `{ns}/graph` generation it was built at.
#[derive(Default)]
pub struct GraphViews {
    views: std::sync::Mutex<HashMap<String, (u64, Arc<Snapshot>)>>,
}

impl GraphViews {
    pub fn get(&self, ns: &str, generation: u64) -> Option<Arc<Snapshot>> {
        let views = self.views.lock().expect("graph views poisoned");
        views
            .get(ns)
            .filter(|(g, _)| *g == generation)
            .map(|(_, s)| s.clone())
    }

    pub fn put(&self, ns: &str, generation: u64, snapshot: Arc<Snapshot>) {
        let mut views = self.views.lock().expect("graph views poisoned");
        match views.get(ns) {
            Some((g, _)) if *g > generation => {}
            _ => {
                views.insert(ns.to_string(), (generation, snapshot));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EdgeRow;

    fn snap(edges: &[(&str, &str, &str)]) -> Snapshot {
        let mut names: Vec<String> = Vec::new();
        for (a, b, _) in edges {
            for n in [a, b] {
                if !names.contains(&n.to_string()) {
                    names.push(n.to_string());
                }
            }
        }
        Snapshot::build(GraphRows {
            nodes: names
                .into_iter()
                .map(|n| (n, "thing".to_string()))
                .collect(),
            edges: edges
                .iter()
                .map(|(a, b, t)| EdgeRow {
                    from: a.to_string(),
                    to: b.to_string(),
                    relation_type: t.to_string(),
                    valid_from: None,
                    valid_to: None,
                })
                .collect(),
        })
    }

    fn names(s: &Snapshot, nodes: &[NodeIndex]) -> Vec<String> {
        nodes.iter().map(|n| s.name(*n).to_string()).collect()
    }

    #[test]
    fn paths_neighbours_and_communities() {
        let s = snap(&[
            ("a", "b", "x"),
            ("b", "c", "x"),
            ("a", "c", "y"),
            ("c", "d", "x"),
            ("e", "f", "x"),
            ("f", "g", "x"),
            ("g", "e", "x"),
        ]);
        let f = EdgeFilter::default();
        let (a, c, d) = (
            s.node("a").unwrap(),
            s.node("c").unwrap(),
            s.node("d").unwrap(),
        );
        let (p, _) = s.shortest_path(a, d, Dir::Out, &f).unwrap();
        assert_eq!(names(&s, &p), ["a", "c", "d"]);
        assert!(s.shortest_path(d, a, Dir::Out, &f).is_none());
        assert!(s.shortest_path(d, a, Dir::Both, &f).is_some());
        let only_x = EdgeFilter {
            relation_types: vec!["x".into()],
            valid_at: None,
        };
        let (p, _) = s.shortest_path(a, d, Dir::Out, &only_x).unwrap();
        assert_eq!(names(&s, &p), ["a", "b", "c", "d"]);

        let bounds = PathBounds {
            max_hops: 4,
            max_paths: 10,
            deadline: deadline(Duration::from_secs(5)),
        };
        let (paths, cut) = s.all_paths(a, c, &bounds, Dir::Out, &f);
        assert!(!cut);
        let found: Vec<Vec<String>> = paths.iter().map(|(n, _)| names(&s, n)).collect();
        assert_eq!(found, vec![vec!["a", "c"], vec!["a", "b", "c"]]);

        let (near, _, cut) = s.neighborhood(&[c], 1, Dir::Both, &f, 100);
        let mut near: Vec<String> = names(&s, &near.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        near.sort();
        assert_eq!(near, ["a", "b", "c", "d"]);
        assert!(!cut);

        let comps = groups(&s, &s.components(&f));
        assert_eq!(comps.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 3]);
        let (labels, settled) = s.label_propagation(&f, deadline(Duration::from_secs(5)));
        assert!(settled);
        let found: Vec<Vec<String>> = groups(&s, &labels).iter().map(|g| names(&s, g)).collect();
        assert_eq!(found, vec![vec!["a", "b", "c", "d"], vec!["e", "f", "g"]]);

        let (rank, converged) = s.pagerank(&f, deadline(Duration::from_secs(5)));
        assert!(converged);
        assert!((rank.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // d is fed by c, which two nodes feed: d outranks a, which nothing feeds.
        assert!(rank[d.index()] > rank[a.index()]);
    }
}
