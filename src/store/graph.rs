//! The knowledge graph in sqlite: entities (unique name per namespace, a type,
//! properties), their observations in the order added, and typed directed
//! relations between entity names. Every write logs the changed entities so the
//! search index (names, types and observations) follows.
//!
//! Relations refer to entities by name, as the reference memory server's file
//! does: a file with a relation to an entity it never defines imports without
//! loss. Through the tools, relations to unknown entities are refused.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};
use serde_json::{Map, Value};

use super::episodic::to_json;
use super::writer::WriteTxn;
use super::{Store, StoreError};
use crate::model::{Entity, Micros, RecordKind, Relation, SearchDoc, new_id};

/// An entity to create, as the reference's `create_entities` takes it.
#[derive(Debug, Clone)]
pub struct NewEntity {
    pub name: String,
    pub entity_type: String,
    pub observations: Vec<String>,
}

/// A relation to create, with what engram keeps beyond the reference's shape.
#[derive(Debug, Clone, Default)]
pub struct NewRelation {
    pub relation: Relation,
    pub properties: Map<String, Value>,
    /// The relation holds from this time (None: always has).
    pub valid_from: Option<Micros>,
    /// ... until this time (None: still does).
    pub valid_to: Option<Micros>,
}

/// An entity with everything engram keeps about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct EntityRecord {
    pub id: String,
    pub name: String,
    #[serde(rename = "entityType")]
    pub entity_type: String,
    pub observations: Vec<String>,
    pub properties: Map<String, Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// One edge of a graph snapshot.
#[derive(Debug, Clone)]
pub struct EdgeRow {
    pub from: String,
    pub to: String,
    pub relation_type: String,
    pub valid_from: Option<Micros>,
    pub valid_to: Option<Micros>,
}

/// Every entity (name, type) and relation of a namespace: what the in-memory
/// graph is built from.
#[derive(Debug, Clone, Default)]
pub struct GraphRows {
    pub nodes: Vec<(String, String)>,
    pub edges: Vec<EdgeRow>,
}

/// Counts for `graph_stats`.
#[derive(Debug, Clone, Default)]
pub struct GraphCounts {
    pub entities: u64,
    pub relations: u64,
    pub observations: u64,
    /// (entity type, count), most common first.
    pub entity_types: Vec<(String, u64)>,
    /// (relation type, count), most common first.
    pub relation_types: Vec<(String, u64)>,
}

struct EntityRow {
    seq: i64,
    id: String,
    name: String,
    entity_type: String,
    properties: String,
    created_at: i64,
    updated_at: i64,
}

const ENTITY_COLUMNS: &str = "seq, id, name, entity_type, properties, created_at, updated_at";

fn entity_row(r: &Row<'_>) -> rusqlite::Result<EntityRow> {
    Ok(EntityRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        entity_type: r.get(3)?,
        properties: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn find(conn: &Connection, ns: &str, name: &str) -> Result<Option<EntityRow>, StoreError> {
    let sql = format!("SELECT {ENTITY_COLUMNS} FROM entities WHERE namespace = ?1 AND name = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([ns, name], entity_row)
        .optional()?)
}

fn observations(conn: &Connection, entity_id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT content FROM observations WHERE entity_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([entity_id], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn unknown_entity(ns: &str, name: &str) -> StoreError {
    StoreError::NotFound(format!(
        "there is no entity named {name:?} in namespace {ns:?}: create it first with create_entities \
         (names are case-sensitive; search_nodes finds existing ones). Nothing was written"
    ))
}

/// The search document of an entity: its name, type and observations. The name
/// is written twice so an entity named for the query outranks one that merely
/// mentions it once.
fn search_doc(ns: &str, e: &EntityRow, obs: &[String]) -> SearchDoc {
    let mut text = String::with_capacity(2 * e.name.len() + e.entity_type.len() + 64);
    text.push_str(&e.name);
    text.push('\n');
    text.push_str(&e.name);
    text.push('\n');
    text.push_str(&e.entity_type);
    for o in obs {
        text.push('\n');
        text.push_str(o);
    }
    SearchDoc {
        kind: RecordKind::Entity,
        id: e.id.clone(),
        namespace: ns.to_string(),
        text,
        tags: vec![e.entity_type.to_lowercase()],
        time: e.updated_at,
        weight: 0.5,
        superseded: false,
    }
}

/// Re-reads an entity and logs its new search document.
fn touch(txn: &mut WriteTxn<'_>, ns: &str, name: &str) -> Result<(), StoreError> {
    txn.conn
        .prepare_cached("UPDATE entities SET updated_at = ?1 WHERE namespace = ?2 AND name = ?3")?
        .execute(rusqlite::params![txn.now, ns, name])?;
    let Some(e) = find(txn.conn, ns, name)? else {
        return Ok(());
    };
    let obs = observations(txn.conn, &e.id)?;
    let doc = search_doc(ns, &e, &obs);
    txn.log_change(ns, RecordKind::Entity, &e.id, Some(doc))
}

/// Logs that relations touching entity `name` changed (created, deleted or
/// renamed): relations have no search document, so the change only tells the
/// derived views (query cache, graph snapshots) to forget what they hold.
fn relations_changed(txn: &mut WriteTxn<'_>, ns: &str, name: &str) -> Result<(), StoreError> {
    txn.log_change(ns, RecordKind::Relation, name, None)
}

/// Deletes every relation from or to `name` (two indexed deletes, not one OR).
fn delete_relations_of(txn: &mut WriteTxn<'_>, ns: &str, name: &str) -> Result<(), StoreError> {
    let mut deleted = 0;
    for sql in [
        "DELETE FROM relations WHERE namespace = ?1 AND from_name = ?2",
        "DELETE FROM relations WHERE namespace = ?1 AND to_name = ?2",
    ] {
        deleted += txn.conn.prepare_cached(sql)?.execute([ns, name])?;
    }
    if deleted > 0 {
        relations_changed(txn, ns, name)?;
    }
    Ok(())
}

fn insert_observations(
    txn: &WriteTxn<'_>,
    entity_id: &str,
    contents: &[String],
) -> Result<Vec<String>, StoreError> {
    let next: i64 = txn
        .conn
        .prepare_cached(
            "SELECT coalesce(max(position), -1) + 1 FROM observations WHERE entity_id = ?1",
        )?
        .query_row([entity_id], |r| r.get(0))?;
    let mut ins = txn.conn.prepare_cached(
        "INSERT OR IGNORE INTO observations (entity_id, position, content, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut added = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        if ins.execute(rusqlite::params![entity_id, next + i as i64, c, txn.now])? == 1 {
            added.push(c.clone());
        }
    }
    Ok(added)
}

fn load_entities(
    conn: &Connection,
    rows: Vec<EntityRow>,
    with_observations: bool,
) -> Result<Vec<Entity>, StoreError> {
    rows.into_iter()
        .map(|e| {
            Ok(Entity {
                observations: if with_observations {
                    Some(observations(conn, &e.id)?)
                } else {
                    None
                },
                name: e.name,
                entity_type: e.entity_type,
            })
        })
        .collect()
}

/// Relations with at least one end among `names`, in the order they were made.
fn relations_touching(
    conn: &Connection,
    ns: &str,
    names: &[String],
) -> Result<Vec<Relation>, StoreError> {
    let mut out = Vec::new();
    // sqlite bounds the number of parameters; names come in chunks.
    let mut seen = HashSet::new();
    let mut rows: Vec<(i64, Relation)> = Vec::new();
    for chunk in names.chunks(400) {
        let marks = vec!["?"; chunk.len()].join(",");
        // Two indexed lookups (from, then to) rather than one OR, which sqlite
        // would answer by scanning every relation of the namespace. Without
        // statistics sqlite prefers the covering unique index (namespace only)
        // for the `to` side, so the index is named.
        let sql = format!(
            "SELECT seq, from_name, to_name, relation_type FROM relations
             WHERE namespace = ? AND from_name IN ({marks})
             UNION ALL
             SELECT seq, from_name, to_name, relation_type FROM relations INDEXED BY relations_by_to
             WHERE namespace = ? AND to_name IN ({marks})"
        );
        let mut params = Vec::with_capacity(2 * chunk.len() + 2);
        for _ in 0..2 {
            params.push(SqlValue::Text(ns.to_string()));
            params.extend(chunk.iter().map(|n| SqlValue::Text(n.clone())));
        }
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut q = stmt.query(params_from_iter(params))?;
        while let Some(r) = q.next()? {
            let seq: i64 = r.get(0)?;
            if seen.insert(seq) {
                rows.push((
                    seq,
                    Relation {
                        from: r.get(1)?,
                        to: r.get(2)?,
                        relation_type: r.get(3)?,
                    },
                ));
            }
        }
    }
    rows.sort_by_key(|(seq, _)| *seq);
    out.extend(rows.into_iter().map(|(_, r)| r));
    Ok(out)
}

/// Row of `id, namespace, name, entity_type, updated_at` for a search document.
pub(super) const SEARCH_DOC_SQL: &str =
    "SELECT id, namespace, name, entity_type, updated_at FROM entities";

pub(super) fn search_doc_from_row(conn: &Connection, r: &Row<'_>) -> Result<SearchDoc, StoreError> {
    let e = EntityRow {
        seq: 0,
        id: r.get(0)?,
        name: r.get(2)?,
        entity_type: r.get(3)?,
        properties: String::new(),
        created_at: 0,
        updated_at: r.get(4)?,
    };
    let ns: String = r.get(1)?;
    let obs = observations(conn, &e.id)?;
    Ok(search_doc(&ns, &e, &obs))
}

pub(super) fn search_doc_by_id(
    conn: &Connection,
    id: &str,
) -> Result<Option<SearchDoc>, StoreError> {
    let sql = format!("{SEARCH_DOC_SQL} WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(search_doc_from_row(conn, r)?)),
        None => Ok(None),
    }
}

fn record(conn: &Connection, e: EntityRow) -> Result<EntityRecord, StoreError> {
    Ok(EntityRecord {
        observations: observations(conn, &e.id)?,
        properties: serde_json::from_str(&e.properties)
            .map_err(|err| StoreError::Corrupt(err.to_string()))?,
        created_at: crate::model::micros_to_datetime(e.created_at),
        updated_at: crate::model::micros_to_datetime(e.updated_at),
        id: e.id,
        name: e.name,
        entity_type: e.entity_type,
    })
}

impl Store {
    /// Creates the entities whose names are new (in the order given; a repeated
    /// name in one call counts once) and returns those it created.
    pub async fn create_entities(
        &self,
        ns: &str,
        entities: Vec<NewEntity>,
    ) -> Result<Vec<Entity>, StoreError> {
        let ns = ns.to_string();
        self.writer
            .write(move |txn| {
                let mut created = Vec::new();
                let mut named = HashSet::new();
                for new in entities {
                    if !named.insert(new.name.clone()) || find(txn.conn, &ns, &new.name)?.is_some() {
                        continue;
                    }
                    let id = new_id();
                    txn.conn
                        .prepare_cached(
                            "INSERT INTO entities (id, namespace, name, entity_type, created_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        )?
                        .execute(rusqlite::params![id, ns, new.name, new.entity_type, txn.now])?;
                    let mut unique = Vec::with_capacity(new.observations.len());
                    for o in new.observations {
                        if !unique.contains(&o) {
                            unique.push(o);
                        }
                    }
                    insert_observations(txn, &id, &unique)?;
                    touch(txn, &ns, &new.name)?;
                    created.push(Entity {
                        name: new.name,
                        entity_type: new.entity_type,
                        observations: Some(unique),
                    });
                }
                Ok(created)
            })
            .await
    }

    /// Creates the relations not already present. Every endpoint must exist
    /// (`strict`); otherwise nothing is written. Returns those created.
    pub async fn create_relations(
        &self,
        ns: &str,
        relations: Vec<Relation>,
        strict: bool,
    ) -> Result<Vec<Relation>, StoreError> {
        let relations = relations
            .into_iter()
            .map(|relation| NewRelation {
                relation,
                ..Default::default()
            })
            .collect();
        self.create_relations_with(ns, relations, strict).await
    }

    /// `create_relations` with validity and properties per relation.
    pub async fn create_relations_with(
        &self,
        ns: &str,
        relations: Vec<NewRelation>,
        strict: bool,
    ) -> Result<Vec<Relation>, StoreError> {
        let ns = ns.to_string();
        self.writer
            .write(move |txn| {
                if strict {
                    for NewRelation { relation: r, .. } in &relations {
                        for end in [&r.from, &r.to] {
                            if find(txn.conn, &ns, end)?.is_none() {
                                return Err(unknown_entity(&ns, end));
                            }
                        }
                    }
                }
                let mut created = Vec::new();
                let mut ins = txn.conn.prepare_cached(
                    "INSERT OR IGNORE INTO relations (namespace, from_name, to_name, relation_type,
                                                      properties, valid_from, valid_to, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for new in relations {
                    let r = new.relation;
                    let props = to_json(&new.properties);
                    let row = rusqlite::params![
                        ns,
                        r.from,
                        r.to,
                        r.relation_type,
                        props,
                        new.valid_from,
                        new.valid_to,
                        txn.now
                    ];
                    if ins.execute(row)? == 1 {
                        created.push(r);
                    }
                }
                drop(ins);
                for r in &created {
                    relations_changed(txn, &ns, &r.from)?;
                }
                Ok(created)
            })
            .await
    }

    /// Adds observations (duplicates dropped) to existing entities; an unknown
    /// entity fails the whole call. Returns what each entity gained.
    pub async fn add_observations(
        &self,
        ns: &str,
        additions: Vec<(String, Vec<String>)>,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let ns = ns.to_string();
        self.writer
            .write(move |txn| {
                let mut ids = Vec::with_capacity(additions.len());
                for (name, _) in &additions {
                    let e = find(txn.conn, &ns, name)?.ok_or_else(|| unknown_entity(&ns, name))?;
                    ids.push(e.id);
                }
                let mut out = Vec::with_capacity(additions.len());
                for ((name, contents), id) in additions.into_iter().zip(ids) {
                    let added = insert_observations(txn, &id, &contents)?;
                    if !added.is_empty() {
                        touch(txn, &ns, &name)?;
                    }
                    out.push((name, added));
                }
                Ok(out)
            })
            .await
    }

    /// Deletes entities and every relation touching them. Returns (deleted, not found).
    pub async fn delete_entities(
        &self,
        ns: &str,
        names: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let ns = ns.to_string();
        self.writer
            .write(move |txn| {
                let (mut deleted, mut missing) = (Vec::new(), Vec::new());
                for name in names {
                    delete_relations_of(txn, &ns, &name)?;
                    match find(txn.conn, &ns, &name)? {
                        Some(e) => {
                            txn.conn
                                .prepare_cached("DELETE FROM entities WHERE seq = ?1")?
                                .execute([e.seq])?;
                            txn.log_change(&ns, RecordKind::Entity, &e.id, None)?;
                            deleted.push(name);
                        }
                        None => missing.push(name),
                    }
                }
                Ok((deleted, missing))
            })
            .await
    }

    /// Removes these observations; unknown entities and observations are ignored.
    /// Returns how many observations were removed.
    pub async fn delete_observations(
        &self,
        ns: &str,
        deletions: Vec<(String, Vec<String>)>,
    ) -> Result<u64, StoreError> {
        let ns = ns.to_string();
        self.writer
            .write(move |txn| {
                let mut removed = 0;
                for (name, contents) in deletions {
                    let Some(e) = find(txn.conn, &ns, &name)? else {
                        continue;
                    };
                    let mut del = txn.conn.prepare_cached(
                        "DELETE FROM observations WHERE entity_id = ?1 AND content = ?2",
                    )?;
                    let mut n = 0;
                    for c in &contents {
                        n += del.execute([&e.id, c])? as u64;
                    }
                    if n > 0 {
                        touch(txn, &ns, &name)?;
                    }
                    removed += n;
                }
                Ok(removed)
            })
            .await
    }

    /// Deletes these relations; returns how many existed.
    pub async fn delete_relations(
        &self,
        ns: &str,
        relations: Vec<Relation>,
    ) -> Result<u64, StoreError> {
        let ns = ns.to_string();
        self.writer
            .write(move |txn| {
                let mut del = txn.conn.prepare_cached(
                    "DELETE FROM relations WHERE namespace = ?1 AND from_name = ?2 AND to_name = ?3 AND relation_type = ?4",
                )?;
                let mut removed = Vec::new();
                for r in &relations {
                    if del.execute([&ns, &r.from, &r.to, &r.relation_type])? > 0 {
                        removed.push(&r.from);
                    }
                }
                drop(del);
                for from in &removed {
                    relations_changed(txn, &ns, from)?;
                }
                Ok(removed.len() as u64)
            })
            .await
    }

    /// One page of the graph in creation order: entities after `after_seq`
    /// (optionally only some types), and the relations that start at them.
    /// Returns (entities, their seqs, relations, more exist).
    pub async fn read_graph_page(
        &self,
        ns: &str,
        entity_types: Vec<String>,
        after_seq: i64,
        limit: usize,
        with_observations: bool,
    ) -> Result<(Vec<Entity>, Vec<i64>, Vec<Relation>, bool), StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let mut sql = format!(
                    "SELECT {ENTITY_COLUMNS} FROM entities WHERE namespace = ? AND seq > ?"
                );
                let mut params = vec![SqlValue::Text(ns.clone()), SqlValue::Integer(after_seq)];
                if !entity_types.is_empty() {
                    sql.push_str(&format!(
                        " AND entity_type IN ({})",
                        vec!["?"; entity_types.len()].join(",")
                    ));
                    params.extend(entity_types.into_iter().map(SqlValue::Text));
                }
                sql.push_str(" ORDER BY seq LIMIT ?");
                params.push(SqlValue::Integer(limit as i64 + 1));
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows: Vec<EntityRow> = stmt
                    .query_map(params_from_iter(params), entity_row)?
                    .collect::<Result<_, _>>()?;
                let more = rows.len() > limit;
                rows.truncate(limit);
                let seqs = rows.iter().map(|r| r.seq).collect();
                let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
                let entities = load_entities(conn, rows, with_observations)?;
                let page: HashSet<&String> = names.iter().collect();
                let relations = relations_touching(conn, &ns, &names)?
                    .into_iter()
                    .filter(|r| page.contains(&r.from))
                    .collect();
                Ok((entities, seqs, relations, more))
            })
            .await
    }

    /// Entities in creation order after `after_seq`, with observations: for export.
    pub async fn entities_after(
        &self,
        ns: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Entity)>, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let sql = format!(
                    "SELECT {ENTITY_COLUMNS} FROM entities WHERE namespace = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows: Vec<EntityRow> = stmt
                    .query_map(rusqlite::params![ns, after_seq, limit as i64], entity_row)?
                    .collect::<Result<_, _>>()?;
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                Ok(seqs.into_iter().zip(load_entities(conn, rows, true)?).collect())
            })
            .await
    }

    /// Relations in creation order after `after_seq`: for export.
    pub async fn relations_after(
        &self,
        ns: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Relation)>, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, from_name, to_name, relation_type FROM relations
                     WHERE namespace = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt.query_map(rusqlite::params![ns, after_seq, limit as i64], |r| {
                    Ok((
                        r.get(0)?,
                        Relation {
                            from: r.get(1)?,
                            to: r.get(2)?,
                            relation_type: r.get(3)?,
                        },
                    ))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Relations that start at no entity of the namespace (possible only after
    /// importing a file that had them): read_graph lists them on its last page.
    pub async fn dangling_relations(&self, ns: &str) -> Result<Vec<Relation>, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT from_name, to_name, relation_type FROM relations r WHERE namespace = ?1
                     AND NOT EXISTS (SELECT 1 FROM entities e WHERE e.namespace = r.namespace AND e.name = r.from_name)
                     ORDER BY seq",
                )?;
                let rows = stmt.query_map([&ns], |r| {
                    Ok(Relation {
                        from: r.get(0)?,
                        to: r.get(1)?,
                        relation_type: r.get(2)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The named entities that exist (in the order asked) and every relation
    /// touching any of them.
    pub async fn open_nodes(
        &self,
        ns: &str,
        names: Vec<String>,
        with_observations: bool,
    ) -> Result<(Vec<Entity>, Vec<Relation>), StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let mut rows = Vec::new();
                let mut seen = HashSet::new();
                for n in &names {
                    if seen.insert(n)
                        && let Some(e) = find(conn, &ns, n)?
                    {
                        rows.push(e);
                    }
                }
                let found: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
                let entities = load_entities(conn, rows, with_observations)?;
                let relations = relations_touching(conn, &ns, &found)?;
                Ok((entities, relations))
            })
            .await
    }

    /// Entities by search-index id, in the order given, with their relations.
    pub async fn entities_by_ids(
        &self,
        ns: &str,
        ids: Vec<String>,
        with_observations: bool,
    ) -> Result<(Vec<Entity>, Vec<Relation>), StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let sql = format!(
                    "SELECT {ENTITY_COLUMNS} FROM entities WHERE namespace = ?1 AND id = ?2"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = Vec::new();
                for id in &ids {
                    if let Some(e) = stmt.query_row([&ns, id], entity_row).optional()? {
                        rows.push(e);
                    }
                }
                let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
                let entities = load_entities(conn, rows, with_observations)?;
                let relations = relations_touching(conn, &ns, &names)?;
                Ok((entities, relations))
            })
            .await
    }

    /// Entities by search-index id: id → (entity with observations, last change).
    pub async fn entities_keyed(
        &self,
        ns: &str,
        ids: Vec<String>,
    ) -> Result<HashMap<String, (Entity, Micros)>, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let sql = format!(
                    "SELECT {ENTITY_COLUMNS} FROM entities WHERE namespace = ?1 AND id = ?2"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut out = HashMap::new();
                for id in ids {
                    if let Some(e) = stmt.query_row([&ns, &id], entity_row).optional()? {
                        let updated = e.updated_at;
                        let obs = observations(conn, &e.id)?;
                        out.insert(
                            id,
                            (
                                Entity {
                                    name: e.name,
                                    entity_type: e.entity_type,
                                    observations: Some(obs),
                                },
                                updated,
                            ),
                        );
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Ids of entities whose name, type or an observation contains `needle`
    /// (case-insensitive), in creation order: the reference's matching rule.
    pub async fn entity_ids_containing(
        &self,
        ns: &str,
        needle: &str,
        entity_types: Vec<String>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (ns, needle) = (ns.to_string(), needle.to_lowercase());
        self.readers
            .read(move |conn| {
                let mut sql = "SELECT e.id FROM entities e WHERE e.namespace = ?
                     AND (instr(lower(e.name), ?) > 0 OR instr(lower(e.entity_type), ?) > 0
                          OR EXISTS (SELECT 1 FROM observations o WHERE o.entity_id = e.id
                                     AND instr(lower(o.content), ?) > 0))"
                    .to_string();
                let mut params = vec![
                    SqlValue::Text(ns),
                    SqlValue::Text(needle.clone()),
                    SqlValue::Text(needle.clone()),
                    SqlValue::Text(needle),
                ];
                if !entity_types.is_empty() {
                    sql.push_str(&format!(
                        " AND e.entity_type IN ({})",
                        vec!["?"; entity_types.len()].join(",")
                    ));
                    params.extend(entity_types.into_iter().map(SqlValue::Text));
                }
                sql.push_str(" ORDER BY e.seq LIMIT ?");
                params.push(SqlValue::Integer(limit as i64));
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The entity types of these entity ids (for filtering ranked hits).
    pub async fn entity_types_of(
        &self,
        ns: &str,
        ids: Vec<String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT entity_type FROM entities WHERE namespace = ?1 AND id = ?2",
                )?;
                let mut out = HashMap::new();
                for id in ids {
                    if let Some(t) = stmt
                        .query_row([&ns, &id], |r| r.get::<_, String>(0))
                        .optional()?
                    {
                        out.insert(id, t);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Everything about one entity.
    pub async fn entity_record(&self, ns: &str, name: &str) -> Result<EntityRecord, StoreError> {
        let (ns, name) = (ns.to_string(), name.to_string());
        self.readers
            .read(move |conn| {
                let e = find(conn, &ns, &name)?.ok_or_else(|| unknown_entity(&ns, &name))?;
                record(conn, e)
            })
            .await
    }

    /// Every node and edge of a namespace, for the in-memory graph.
    pub async fn graph_rows(&self, ns: &str) -> Result<GraphRows, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let mut rows = GraphRows::default();
                let mut stmt = conn.prepare_cached(
                    "SELECT name, entity_type FROM entities WHERE namespace = ?1 ORDER BY seq",
                )?;
                let nodes = stmt.query_map([&ns], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.nodes = nodes.collect::<Result<_, _>>()?;
                let mut stmt = conn.prepare_cached(
                    "SELECT from_name, to_name, relation_type, valid_from, valid_to FROM relations
                     WHERE namespace = ?1 ORDER BY seq",
                )?;
                let edges = stmt.query_map([&ns], |r| {
                    Ok(EdgeRow {
                        from: r.get(0)?,
                        to: r.get(1)?,
                        relation_type: r.get(2)?,
                        valid_from: r.get(3)?,
                        valid_to: r.get(4)?,
                    })
                })?;
                rows.edges = edges.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    pub async fn graph_counts(&self, ns: &str) -> Result<GraphCounts, StoreError> {
        let ns = ns.to_string();
        self.readers
            .read(move |conn| {
                let one = |sql: &str| -> Result<u64, StoreError> {
                    Ok(conn.prepare_cached(sql)?.query_row([&ns], |r| r.get::<_, i64>(0))? as u64)
                };
                let grouped = |sql: &str| -> Result<Vec<(String, u64)>, StoreError> {
                    let mut stmt = conn.prepare_cached(sql)?;
                    let rows = stmt.query_map([&ns], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                };
                Ok(GraphCounts {
                    entities: one("SELECT count(*) FROM entities WHERE namespace = ?1")?,
                    relations: one("SELECT count(*) FROM relations WHERE namespace = ?1")?,
                    observations: one(
                        "SELECT count(*) FROM observations o JOIN entities e ON e.id = o.entity_id WHERE e.namespace = ?1",
                    )?,
                    entity_types: grouped(
                        "SELECT entity_type, count(*) AS n FROM entities WHERE namespace = ?1
                         GROUP BY entity_type ORDER BY n DESC, entity_type LIMIT 50",
                    )?,
                    relation_types: grouped(
                        "SELECT relation_type, count(*) AS n FROM relations WHERE namespace = ?1
                         GROUP BY relation_type ORDER BY n DESC, relation_type LIMIT 50",
                    )?,
                })
            })
            .await
    }

    /// Renames an entity; its relations follow. Fails if the new name is taken.
    pub async fn rename_entity(
        &self,
        ns: &str,
        old: &str,
        new: &str,
    ) -> Result<EntityRecord, StoreError> {
        let (ns, old, new) = (ns.to_string(), old.to_string(), new.to_string());
        self.writer
            .write(move |txn| {
                find(txn.conn, &ns, &old)?.ok_or_else(|| unknown_entity(&ns, &old))?;
                if find(txn.conn, &ns, &new)?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "an entity named {new:?} already exists: pick another name, or merge the two with graph_merge_entities"
                    )));
                }
                txn.conn
                    .prepare_cached("UPDATE entities SET name = ?1 WHERE namespace = ?2 AND name = ?3")?
                    .execute([&new, &ns, &old])?;
                txn.conn
                    .prepare_cached("UPDATE relations SET from_name = ?1 WHERE namespace = ?2 AND from_name = ?3")?
                    .execute([&new, &ns, &old])?;
                txn.conn
                    .prepare_cached("UPDATE relations SET to_name = ?1 WHERE namespace = ?2 AND to_name = ?3")?
                    .execute([&new, &ns, &old])?;
                relations_changed(txn, &ns, &old)?;
                touch(txn, &ns, &new)?;
                record(txn.conn, find(txn.conn, &ns, &new)?.expect("just renamed"))
            })
            .await
    }

    /// Merges `sources` into `target`: observations appended (duplicates
    /// dropped), relations re-pointed (duplicates and self-loops they would
    /// create dropped), sources deleted. All or nothing.
    pub async fn merge_entities(
        &self,
        ns: &str,
        target: &str,
        sources: Vec<String>,
    ) -> Result<EntityRecord, StoreError> {
        let (ns, target) = (ns.to_string(), target.to_string());
        self.writer
            .write(move |txn| {
                let t = find(txn.conn, &ns, &target)?.ok_or_else(|| unknown_entity(&ns, &target))?;
                for source in &sources {
                    if source == &target {
                        continue;
                    }
                    let s = find(txn.conn, &ns, source)?.ok_or_else(|| unknown_entity(&ns, source))?;
                    insert_observations(txn, &t.id, &observations(txn.conn, &s.id)?)?;
                    for (col, other) in [("from_name", "to_name"), ("to_name", "from_name")] {
                        let sql = format!(
                            "INSERT OR IGNORE INTO relations (namespace, from_name, to_name, relation_type, properties, valid_from, valid_to, created_at)
                             SELECT namespace, {}, {}, relation_type, properties, valid_from, valid_to, created_at
                             FROM relations WHERE namespace = ?1 AND {col} = ?2 AND {other} != ?3",
                            if col == "from_name" { "?3" } else { "from_name" },
                            if col == "to_name" { "?3" } else { "to_name" },
                        );
                        txn.conn.prepare_cached(&sql)?.execute([&ns, source, &target])?;
                    }
                    delete_relations_of(txn, &ns, source)?;
                    let props: Map<String, Value> =
                        serde_json::from_str(&s.properties).unwrap_or_default();
                    if !props.is_empty() {
                        let mut merged: Map<String, Value> =
                            serde_json::from_str(&t.properties).unwrap_or_default();
                        for (k, v) in props {
                            merged.entry(k).or_insert(v);
                        }
                        txn.conn
                            .prepare_cached("UPDATE entities SET properties = ?1 WHERE seq = ?2")?
                            .execute(rusqlite::params![to_json(&merged), t.seq])?;
                    }
                    txn.conn
                        .prepare_cached("DELETE FROM entities WHERE seq = ?1")?
                        .execute([s.seq])?;
                    txn.log_change(&ns, RecordKind::Entity, &s.id, None)?;
                }
                touch(txn, &ns, &target)?;
                record(txn.conn, find(txn.conn, &ns, &target)?.expect("target exists"))
            })
            .await
    }

    /// Changes an entity's type and/or merges properties (a null value removes a key).
    pub async fn update_entity(
        &self,
        ns: &str,
        name: &str,
        entity_type: Option<String>,
        properties: Option<Map<String, Value>>,
    ) -> Result<EntityRecord, StoreError> {
        let (ns, name) = (ns.to_string(), name.to_string());
        self.writer
            .write(move |txn| {
                let e = find(txn.conn, &ns, &name)?.ok_or_else(|| unknown_entity(&ns, &name))?;
                if let Some(t) = entity_type {
                    txn.conn
                        .prepare_cached("UPDATE entities SET entity_type = ?1 WHERE seq = ?2")?
                        .execute(rusqlite::params![t, e.seq])?;
                }
                if let Some(patch) = properties {
                    let mut props: Map<String, Value> =
                        serde_json::from_str(&e.properties).unwrap_or_default();
                    for (k, v) in patch {
                        if v.is_null() {
                            props.remove(&k);
                        } else {
                            props.insert(k, v);
                        }
                    }
                    txn.conn
                        .prepare_cached("UPDATE entities SET properties = ?1 WHERE seq = ?2")?
                        .execute(rusqlite::params![to_json(&props), e.seq])?;
                }
                touch(txn, &ns, &name)?;
                record(txn.conn, find(txn.conn, &ns, &name)?.expect("exists"))
            })
            .await
    }
}
