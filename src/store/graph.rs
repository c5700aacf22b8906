//! The knowledge graph in sqlite: entities (unique name per namespace, a type,
//! properties), their observations in the order added, and typed directed
//! relations between entity names. Every write logs the changed entities so the
//! search index (names, types and observations) follows.
//!
//! Relations refer to entities by name, as the reference memory server's file
//! does: a file with a relation to an entity it never defines imports without
//! loss. Through the tools, relations to unknown entities are refused.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::sql::{self, Conn, Dialect, Row, args};
use super::table::{Query, Table, counted, from_json, to_json};
use super::writer::WriteTxn;
use super::{Searchable, Store, StoreError};
use crate::model::{Entity, Micros, RecordKind, Relation, SearchDoc, micros_to_datetime, new_id};

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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
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

/// A relation with everything engram keeps about it (an export's record).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RelationRecord {
    #[serde(flatten)]
    pub relation: Relation,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
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

impl EntityRow {
    fn properties(&self) -> Map<String, Value> {
        serde_json::from_str(&self.properties).unwrap_or_default()
    }
}

static ENTITIES: Table<EntityRow> = Table {
    name: "entities",
    alias: "e",
    columns: "e.seq, e.id, e.name, e.entity_type, e.properties, e.created_at, e.updated_at",
    decode: entity_row,
    search: &SEARCH,
    listed_by: "search_nodes or read_graph",
};

/// An entity's search document: its name, type and observations, the
/// observations read in the same statement (one per entity would be a round
/// trip each on PostgreSQL, for every entity of a rebuild). The separator is a
/// newline character (Rust's `\n`, inside the SQL string literal); sqlite
/// (3.44+) and PostgreSQL both take `string_agg` with an order.
pub(super) static SEARCH: Searchable = Searchable {
    kind: RecordKind::Entity,
    sql: "SELECT id, namespace, name, entity_type, updated_at,
                 (SELECT string_agg(o.content, '\n' ORDER BY o.position)
                  FROM observations o WHERE o.entity_id = entities.id)
          FROM entities",
    doc: entity_doc,
};

/// How much an entity weighs in ranking (events and facts carry their own).
const ENTITY_WEIGHT: f64 = 0.5;

/// The columns `relation_row` reads.
const RELATION_COLUMNS: &str = "seq, from_name, to_name, relation_type";

/// Stores one relation unless the namespace has it (same ends and type);
/// changes one row when it did.
const INSERT_RELATION: &str = "INSERT INTO relations (namespace, from_name, to_name, \
     relation_type, properties, valid_from, valid_to, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING";

fn entity_row(r: &Row<'_>) -> Result<EntityRow, StoreError> {
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

/// (seq, relation) from a row of `RELATION_COLUMNS`.
fn relation_row(r: &Row<'_>) -> Result<(i64, Relation), StoreError> {
    let relation = Relation {
        from: r.get(1)?,
        to: r.get(2)?,
        relation_type: r.get(3)?,
    };
    Ok((r.get(0)?, relation))
}

fn find(conn: Conn<'_>, ns: &str, name: &str) -> Result<Option<EntityRow>, StoreError> {
    ENTITIES.find(conn, ns, "name", name)
}

fn must_find(conn: Conn<'_>, ns: &str, name: &str) -> Result<EntityRow, StoreError> {
    find(conn, ns, name)?.ok_or_else(|| {
        StoreError::NotFound(format!(
            "there is no entity named {name:?} in namespace {ns:?}: create it first with \
             create_entities (names are case-sensitive; search_nodes finds existing ones). \
             Nothing was written"
        ))
    })
}

/// `text` as a LIKE pattern matching itself: `%`, `_` and the escape `\`
/// escaped.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn observations(conn: Conn<'_>, entity_id: &str) -> Result<Vec<String>, StoreError> {
    Query::new(
        "SELECT content FROM observations WHERE entity_id = ? ORDER BY position",
        [entity_id.to_string().into()],
    )
    .column(conn)
}

/// The search document of an entity from a row of `SEARCH.sql`. The name is
/// written twice so an entity named for the query outranks one that merely
/// mentions it once.
fn entity_doc(_: Conn<'_>, r: &Row<'_>) -> Result<SearchDoc, StoreError> {
    let (id, name, entity_type): (String, String, String) = (r.get(0)?, r.get(2)?, r.get(3)?);
    let mut text = [name.as_str(), name.as_str(), entity_type.as_str()].join("\n");
    if let Some(observations) = r.get::<Option<String>>(5)? {
        text.push('\n');
        text.push_str(&observations);
    }
    Ok(SearchDoc {
        kind: RecordKind::Entity,
        namespace: r.get(1)?,
        time: r.get(4)?,
        tags: vec![entity_type.to_lowercase()],
        weight: ENTITY_WEIGHT,
        superseded: false,
        id,
        text,
    })
}

/// Marks an entity changed and logs its new search document.
fn touch(txn: &mut WriteTxn<'_>, ns: &str, name: &str) -> Result<(), StoreError> {
    txn.conn.execute(
        "UPDATE entities SET updated_at = ?1 WHERE namespace = ?2 AND name = ?3",
        &args![txn.now, ns, name],
    )?;
    match find(txn.conn, ns, name)? {
        Some(e) => ENTITIES.log_saved(txn, ns, &e.id),
        None => Ok(()),
    }
}

/// `touch`, then everything about the entity: what graph edits answer.
fn touched_record(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    name: &str,
) -> Result<EntityRecord, StoreError> {
    touch(txn, ns, name)?;
    record(txn.conn, must_find(txn.conn, ns, name)?)
}

/// Logs that relations touching each entity named in `ends` changed (created,
/// deleted or renamed): relations have no search document, so the change only
/// tells the derived views (query cache, graph snapshots) to forget what they
/// hold.
fn relations_changed<'a>(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    ends: impl IntoIterator<Item = &'a str>,
) -> Result<(), StoreError> {
    for name in ends {
        txn.log_change(ns, RecordKind::Relation, name, None)?;
    }
    Ok(())
}

/// Runs each of `sqls` with `params`; returns how many rows they changed.
fn execute_each(
    txn: &WriteTxn<'_>,
    sqls: &[&str],
    params: &[sql::Value<'_>],
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for sql in sqls {
        changed += txn.conn.execute(sql, params)?;
    }
    Ok(changed)
}

/// Deletes every relation from or to `name` (two indexed deletes, not one OR).
fn delete_relations_of(txn: &mut WriteTxn<'_>, ns: &str, name: &str) -> Result<(), StoreError> {
    let deleted = execute_each(
        txn,
        &[
            "DELETE FROM relations WHERE namespace = ?1 AND from_name = ?2",
            "DELETE FROM relations WHERE namespace = ?1 AND to_name = ?2",
        ],
        &args![ns, name],
    )?;
    if deleted > 0 {
        relations_changed(txn, ns, [name])?;
    }
    Ok(())
}

fn insert_observations(
    txn: &WriteTxn<'_>,
    entity_id: &str,
    contents: &[String],
) -> Result<Vec<String>, StoreError> {
    let next: i64 = txn.conn.value(
        "SELECT coalesce(max(position), -1) + 1 FROM observations WHERE entity_id = ?1",
        &args![entity_id],
    )?;
    let mut added = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        let inserted = txn.conn.execute(
            "INSERT INTO observations (entity_id, position, content, created_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            &args![entity_id, next + i as i64, c, txn.now],
        )?;
        if inserted == 1 {
            added.push(c.clone());
        }
    }
    Ok(added)
}

fn load_entities(
    conn: Conn<'_>,
    rows: Vec<EntityRow>,
    with_observations: bool,
) -> Result<Vec<Entity>, StoreError> {
    // Every caller's rows are distinct entities: each takes its own list.
    let mut observed = if with_observations {
        let ids: Vec<String> = rows.iter().map(|e| e.id.clone()).collect();
        observations_of(conn, &ids)?
    } else {
        HashMap::new()
    };
    Ok(rows
        .into_iter()
        .map(|e| Entity {
            observations: with_observations.then(|| observed.remove(&e.id).unwrap_or_default()),
            name: e.name,
            entity_type: e.entity_type,
        })
        .collect())
}

/// Entity ids per statement when reading observations for many entities.
const OBSERVATIONS_CHUNK: usize = 200;

/// The observations of each of these entities (in their order), read with one
/// statement per chunk of ids rather than one per entity: on PostgreSQL every
/// statement is a round trip. An entity without observations is absent.
fn observations_of(
    conn: Conn<'_>,
    entity_ids: &[String],
) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let mut found: HashMap<String, Vec<String>> = HashMap::with_capacity(entity_ids.len());
    for chunk in entity_ids.chunks(OBSERVATIONS_CHUNK) {
        let mut q = Query::new(
            "SELECT entity_id, content FROM observations WHERE 1 = 1",
            [],
        );
        q.and_in("entity_id", chunk.to_vec())
            .push(" ORDER BY entity_id, position", []);
        for (id, content) in q.rows(conn, |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)))? {
            found.entry(id).or_default().push(content);
        }
    }
    Ok(found)
}

/// These entities as the reference shows them, and every relation touching
/// any of them.
fn with_relations(
    conn: Conn<'_>,
    ns: &str,
    rows: Vec<EntityRow>,
    with_observations: bool,
) -> Result<(Vec<Entity>, Vec<Relation>), StoreError> {
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let entities = load_entities(conn, rows, with_observations)?;
    let relations = relations_touching(conn, ns, &names)?;
    Ok((entities, relations))
}

/// Relations with at least one end among `names`, in the order they were made.
fn relations_touching(
    conn: Conn<'_>,
    ns: &str,
    names: &[String],
) -> Result<Vec<Relation>, StoreError> {
    let mut seen = HashSet::new();
    let mut rows: Vec<(i64, Relation)> = Vec::new();
    // sqlite bounds the number of parameters; names come in chunks.
    for chunk in names.chunks(400) {
        let marks = vec!["?"; chunk.len()].join(",");
        // Two indexed lookups (from, then to) rather than one OR, which sqlite
        // would answer by scanning every relation of the namespace. Without
        // statistics sqlite prefers the covering unique index (namespace only)
        // for the `to` side, so the index is named (PostgreSQL has no such
        // clause, nor needs it).
        let by_to = match conn.dialect() {
            Dialect::Sqlite => " INDEXED BY relations_by_to",
            Dialect::Postgres => "",
        };
        let sql = format!(
            "SELECT {RELATION_COLUMNS} FROM relations
             WHERE namespace = ? AND from_name IN ({marks})
             UNION ALL
             SELECT {RELATION_COLUMNS} FROM relations{by_to}
             WHERE namespace = ? AND to_name IN ({marks})"
        );
        let side = || std::iter::once(ns).chain(chunk.iter().map(String::as_str));
        let params = side().chain(side()).map(|s| s.to_string().into());
        let found = Query::new(sql, params).rows(conn, relation_row)?;
        rows.extend(found.into_iter().filter(|(seq, _)| seen.insert(*seq)));
    }
    rows.sort_by_key(|(seq, _)| *seq);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// Entities of the namespace created after `after_seq` (of these types, or
/// any when none are given), in creation order; at most `limit`.
fn entities_since(ns: &str, after_seq: i64, entity_types: Vec<String>, limit: usize) -> Query {
    let mut q = ENTITIES.select(ns);
    q.and("e.seq > ?", after_seq)
        .and_in("e.entity_type", entity_types)
        .push(" ORDER BY e.seq", [])
        .limit(limit);
    q
}

fn record(conn: Conn<'_>, e: EntityRow) -> Result<EntityRecord, StoreError> {
    let observations = observations(conn, &e.id)?;
    record_with(e, observations)
}

fn record_with(e: EntityRow, observations: Vec<String>) -> Result<EntityRecord, StoreError> {
    Ok(EntityRecord {
        observations,
        properties: from_json(&e.properties)?,
        created_at: micros_to_datetime(e.created_at),
        updated_at: micros_to_datetime(e.updated_at),
        id: e.id,
        name: e.name,
        entity_type: e.entity_type,
    })
}

/// Entities of the namespace after position `after`, whole, in the order
/// stored, with their positions: an export's pages.
pub(super) fn export_entities(
    conn: Conn<'_>,
    ns: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, EntityRecord)>, StoreError> {
    let rows = entities_since(ns, after, Vec::new(), limit).rows(conn, entity_row)?;
    let ids: Vec<String> = rows.iter().map(|e| e.id.clone()).collect();
    let mut observed = observations_of(conn, &ids)?;
    rows.into_iter()
        .map(|e| {
            let observations = observed.remove(&e.id).unwrap_or_default();
            Ok((e.seq, record_with(e, observations)?))
        })
        .collect()
}

/// Relations of the namespace after position `after`, whole, in the order stored.
pub(super) fn export_relations(
    conn: Conn<'_>,
    ns: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, RelationRecord)>, StoreError> {
    let mut q = Query::new(
        "SELECT seq, from_name, to_name, relation_type, properties, valid_from, valid_to, created_at
         FROM relations WHERE namespace = ?",
        [ns.to_string().into()],
    );
    q.and("seq > ?", after)
        .push(" ORDER BY seq", [])
        .limit(limit);
    q.rows(conn, |r| {
        let (seq, relation) = relation_row(r)?;
        let at = |i| r.get::<Option<i64>>(i).map(|t| t.map(micros_to_datetime));
        Ok((
            seq,
            RelationRecord {
                relation,
                properties: from_json(&r.get::<String>(4)?)?,
                valid_from: at(5)?,
                valid_to: at(6)?,
                created_at: micros_to_datetime(r.get(7)?),
            },
        ))
    })
}

/// Stores an exported entity as it was (id, times, properties, observations)
/// unless the namespace has one of that name; whether it did.
pub(super) fn import_entity(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    e: &EntityRecord,
) -> Result<bool, StoreError> {
    if find(txn.conn, ns, &e.name)?.is_some() {
        return Ok(false);
    }
    txn.conn.execute(
        "INSERT INTO entities (id, namespace, name, entity_type, properties, created_at,
                               updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &args![
            e.id,
            ns,
            e.name,
            e.entity_type,
            to_json(&e.properties),
            e.created_at.timestamp_micros(),
            e.updated_at.timestamp_micros(),
        ],
    )?;
    insert_observations(txn, &e.id, &e.observations)?;
    ENTITIES.log_saved(txn, ns, &e.id)?;
    Ok(true)
}

/// Stores an exported relation as it was unless the namespace has it; whether it did.
pub(super) fn import_relation(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    r: &RelationRecord,
) -> Result<bool, StoreError> {
    let micros = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_micros());
    let created = txn.conn.execute(
        INSERT_RELATION,
        &args![
            ns,
            r.relation.from,
            r.relation.to,
            r.relation.relation_type,
            to_json(&r.properties),
            micros(r.valid_from),
            micros(r.valid_to),
            r.created_at.timestamp_micros(),
        ],
    )? == 1;
    if created {
        relations_changed(txn, ns, [r.relation.from.as_str()])?;
    }
    Ok(created)
}

fn set_properties(
    txn: &WriteTxn<'_>,
    seq: i64,
    props: &Map<String, Value>,
) -> Result<(), StoreError> {
    txn.conn.execute(
        "UPDATE entities SET properties = ?1 WHERE seq = ?2",
        &args![to_json(props), seq],
    )?;
    Ok(())
}

/// Deletes one entity by name with every relation touching it; false when
/// there is none (its dangling relations go all the same).
fn delete_entity(txn: &mut WriteTxn<'_>, ns: &str, name: &str) -> Result<bool, StoreError> {
    delete_relations_of(txn, ns, name)?;
    match find(txn.conn, ns, name)? {
        Some(e) => ENTITIES.delete(txn, ns, &e.id),
        None => Ok(false),
    }
}

/// Moves the observations, relations and properties of entity `s` onto `t`,
/// then deletes `s`.
fn merge_into(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    t: &EntityRow,
    s: &EntityRow,
) -> Result<(), StoreError> {
    insert_observations(txn, &t.id, &observations(txn.conn, &s.id)?)?;
    // The source's relations from it, then to it, each re-pointed at the target.
    for (col, other, from, to) in [
        ("from_name", "to_name", "?3", "to_name"),
        ("to_name", "from_name", "from_name", "?3"),
    ] {
        let sql = format!(
            "INSERT INTO relations (namespace, from_name, to_name, relation_type, properties,
                                   valid_from, valid_to, created_at)
             SELECT namespace, {from}, {to}, relation_type, properties, valid_from, valid_to,
                    created_at
             FROM relations WHERE namespace = ?1 AND {col} = ?2 AND {other} != ?3
             ON CONFLICT DO NOTHING"
        );
        txn.conn.execute(&sql, &args![ns, s.name, t.name])?;
    }
    delete_relations_of(txn, ns, &s.name)?;
    let props = s.properties();
    if !props.is_empty() {
        let mut merged = t.properties();
        for (k, v) in props {
            merged.entry(k).or_insert(v);
        }
        set_properties(txn, t.seq, &merged)?;
    }
    ENTITIES.delete(txn, ns, &s.id)?;
    Ok(())
}

impl Store {
    /// Creates the entities whose names are new (in the order given; a repeated
    /// name in one call counts once) and returns those it created.
    pub async fn create_entities(
        &self,
        ns: &str,
        entities: Vec<NewEntity>,
    ) -> Result<Vec<Entity>, StoreError> {
        self.write_in(ns, move |txn, ns| {
            let mut created = Vec::new();
            let mut named = HashSet::new();
            for new in entities {
                if !named.insert(new.name.clone()) || find(txn.conn, ns, &new.name)?.is_some() {
                    continue;
                }
                let id = new_id();
                txn.conn.execute(
                    "INSERT INTO entities (id, namespace, name, entity_type, created_at,
                                           updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    &args![id, ns, new.name, new.entity_type, txn.now],
                )?;
                let mut unique = Vec::with_capacity(new.observations.len());
                for o in new.observations {
                    if !unique.contains(&o) {
                        unique.push(o);
                    }
                }
                insert_observations(txn, &id, &unique)?;
                touch(txn, ns, &new.name)?;
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
        self.write_in(ns, move |txn, ns| {
            if strict {
                for NewRelation { relation: r, .. } in &relations {
                    must_find(txn.conn, ns, &r.from)?;
                    must_find(txn.conn, ns, &r.to)?;
                }
            }
            let mut created = Vec::new();
            for new in relations {
                let r = new.relation;
                let props = to_json(&new.properties);
                let row = args![
                    ns,
                    r.from,
                    r.to,
                    r.relation_type,
                    props,
                    new.valid_from,
                    new.valid_to,
                    txn.now
                ];
                if txn.conn.execute(INSERT_RELATION, &row)? == 1 {
                    created.push(r);
                }
            }
            relations_changed(txn, ns, created.iter().map(|r| r.from.as_str()))?;
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
        self.write_in(ns, move |txn, ns| {
            let mut ids = Vec::with_capacity(additions.len());
            for (name, _) in &additions {
                ids.push(must_find(txn.conn, ns, name)?.id);
            }
            let mut out = Vec::with_capacity(additions.len());
            for ((name, contents), id) in additions.into_iter().zip(ids) {
                let added = insert_observations(txn, &id, &contents)?;
                if !added.is_empty() {
                    touch(txn, ns, &name)?;
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
        self.delete_each(ns, names, delete_entity).await
    }

    /// Removes these observations; unknown entities and observations are ignored.
    /// Returns how many observations were removed.
    pub async fn delete_observations(
        &self,
        ns: &str,
        deletions: Vec<(String, Vec<String>)>,
    ) -> Result<u64, StoreError> {
        self.write_in(ns, move |txn, ns| {
            let mut removed = 0;
            for (name, contents) in deletions {
                let Some(e) = find(txn.conn, ns, &name)? else {
                    continue;
                };
                let mut n = 0;
                for c in &contents {
                    n += txn.conn.execute(
                        "DELETE FROM observations WHERE entity_id = ?1 AND content = ?2",
                        &args![e.id, c],
                    )? as u64;
                }
                if n > 0 {
                    touch(txn, ns, &name)?;
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
        self.write_in(ns, move |txn, ns| {
            let mut removed = Vec::new();
            for r in &relations {
                let deleted = txn.conn.execute(
                    "DELETE FROM relations
                     WHERE namespace = ?1 AND from_name = ?2 AND to_name = ?3
                       AND relation_type = ?4",
                    &args![ns, r.from, r.to, r.relation_type],
                )?;
                if deleted > 0 {
                    removed.push(r.from.as_str());
                }
            }
            relations_changed(txn, ns, removed.iter().copied())?;
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
        // One more than asked: whether more exist.
        let q = entities_since(ns, after_seq, entity_types, limit + 1);
        self.read_in(ns, move |conn, ns| {
            let mut rows = q.rows(conn, entity_row)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let seqs = rows.iter().map(|r| r.seq).collect();
            let (entities, mut relations) = with_relations(conn, ns, rows, with_observations)?;
            let page: HashSet<&str> = entities.iter().map(|e| e.name.as_str()).collect();
            relations.retain(|r| page.contains(r.from.as_str()));
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
        let q = entities_since(ns, after_seq, Vec::new(), limit);
        self.readers
            .read(move |conn| {
                let rows = q.rows(conn, entity_row)?;
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                Ok(seqs
                    .into_iter()
                    .zip(load_entities(conn, rows, true)?)
                    .collect())
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
        let mut q = Query::new(
            format!("SELECT {RELATION_COLUMNS} FROM relations WHERE namespace = ? AND seq > ?"),
            [ns.to_string().into(), after_seq.into()],
        );
        q.push(" ORDER BY seq", []).limit(limit);
        self.read_rows(q, relation_row).await
    }

    /// Relations that start at no entity of the namespace (possible only after
    /// importing a file that had them): read_graph lists them on its last page.
    pub async fn dangling_relations(&self, ns: &str) -> Result<Vec<Relation>, StoreError> {
        let q = Query::new(
            format!(
                "SELECT {RELATION_COLUMNS} FROM relations r WHERE namespace = ?
                 AND NOT EXISTS (SELECT 1 FROM entities e
                                 WHERE e.namespace = r.namespace AND e.name = r.from_name)
                 ORDER BY seq"
            ),
            [ns.to_string().into()],
        );
        let rows = self.scan_rows(q, relation_row).await?;
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    /// The named entities that exist (in the order asked) and every relation
    /// touching any of them.
    pub async fn open_nodes(
        &self,
        ns: &str,
        names: Vec<String>,
        with_observations: bool,
    ) -> Result<(Vec<Entity>, Vec<Relation>), StoreError> {
        self.read_in(ns, move |conn, ns| {
            let rows = ENTITIES.find_many(conn, ns, "name", &names)?;
            with_relations(conn, ns, rows, with_observations)
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
        self.read_in(ns, move |conn, ns| {
            let rows = ENTITIES.get_many(conn, ns, &ids)?;
            with_relations(conn, ns, rows, with_observations)
        })
        .await
    }

    /// Entities by search-index id: id → (entity with observations, last change).
    pub async fn entities_keyed(
        &self,
        ns: &str,
        ids: Vec<String>,
    ) -> Result<HashMap<String, (Entity, Micros)>, StoreError> {
        self.read_in(ns, move |conn, ns| {
            let rows = ENTITIES.get_many(conn, ns, &ids)?;
            let keys: Vec<(String, Micros)> =
                rows.iter().map(|e| (e.id.clone(), e.updated_at)).collect();
            let entities = load_entities(conn, rows, true)?;
            let keyed = keys.into_iter().zip(entities);
            Ok(keyed.map(|((id, at), e)| (id, (e, at))).collect())
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
        // sqlite's LIKE folds ASCII case as it compares, where lower() copied
        // every text it scanned (half the time of the scan); other letters
        // compare as they are in both, and the needle is lower-cased here.
        // PostgreSQL's LIKE folds nothing: ILIKE folds case as it compares.
        let like = match self.dialect() {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        };
        let pattern = format!("%{}%", like_escaped(&needle.to_lowercase()));
        let mut q = Query::new(
            format!(
                r"SELECT e.id FROM entities e WHERE e.namespace = ?
                 AND (e.name {like} ? ESCAPE '\' OR e.entity_type {like} ? ESCAPE '\'
                      OR EXISTS (SELECT 1 FROM observations o WHERE o.entity_id = e.id
                                 AND o.content {like} ? ESCAPE '\'))"
            ),
            [
                ns.to_string().into(),
                pattern.clone().into(),
                pattern.clone().into(),
                pattern.into(),
            ],
        );
        q.and_in("e.entity_type", entity_types)
            .push(" ORDER BY e.seq", [])
            .limit(limit);
        // The limit bounds the answer, not the work: a needle that matches
        // nothing reads every entity.
        self.readers.scan(move |conn| q.column(conn)).await
    }

    /// The entity types of these entity ids (for filtering ranked hits).
    pub async fn entity_types_of(
        &self,
        ns: &str,
        ids: Vec<String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows = self
            .read_in(ns, move |conn, ns| ENTITIES.get_many(conn, ns, &ids))
            .await?;
        Ok(rows.into_iter().map(|e| (e.id, e.entity_type)).collect())
    }

    /// Everything about one entity.
    pub async fn entity_record(&self, ns: &str, name: &str) -> Result<EntityRecord, StoreError> {
        let name = name.to_string();
        self.read_in(ns, move |conn, ns| {
            record(conn, must_find(conn, ns, &name)?)
        })
        .await
    }

    /// Every node and edge of a namespace, for the in-memory graph.
    pub async fn graph_rows(&self, ns: &str) -> Result<GraphRows, StoreError> {
        self.scan_in(ns, move |conn, ns| {
            let of_ns = |sql: &str| Query::new(sql, [ns.to_string().into()]);
            let nodes =
                of_ns("SELECT name, entity_type FROM entities WHERE namespace = ? ORDER BY seq");
            let edges = of_ns(
                "SELECT from_name, to_name, relation_type, valid_from, valid_to FROM relations
                 WHERE namespace = ? ORDER BY seq",
            );
            Ok(GraphRows {
                nodes: nodes.rows(conn, |r| Ok((r.get(0)?, r.get(1)?)))?,
                edges: edges.rows(conn, |r| {
                    Ok(EdgeRow {
                        from: r.get(0)?,
                        to: r.get(1)?,
                        relation_type: r.get(2)?,
                        valid_from: r.get(3)?,
                        valid_to: r.get(4)?,
                    })
                })?,
            })
        })
        .await
    }

    pub async fn graph_counts(&self, ns: &str) -> Result<GraphCounts, StoreError> {
        self.scan_in(ns, move |conn, ns| {
            let of_ns = |sql: &str| Query::new(sql, [ns.to_string().into()]);
            Ok(GraphCounts {
                entities: of_ns("SELECT count(*) FROM entities WHERE namespace = ?").count(conn)?,
                relations: of_ns("SELECT count(*) FROM relations WHERE namespace = ?")
                    .count(conn)?,
                observations: of_ns(
                    "SELECT count(*) FROM observations o JOIN entities e ON e.id = o.entity_id
                     WHERE e.namespace = ?",
                )
                .count(conn)?,
                entity_types: of_ns(
                    "SELECT entity_type, count(*) AS n FROM entities WHERE namespace = ?
                     GROUP BY entity_type ORDER BY n DESC, entity_type LIMIT 50",
                )
                .rows(conn, counted)?,
                relation_types: of_ns(
                    "SELECT relation_type, count(*) AS n FROM relations WHERE namespace = ?
                     GROUP BY relation_type ORDER BY n DESC, relation_type LIMIT 50",
                )
                .rows(conn, counted)?,
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
        let (old, new) = (old.to_string(), new.to_string());
        self.write_in(ns, move |txn, ns| {
            must_find(txn.conn, ns, &old)?;
            if find(txn.conn, ns, &new)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an entity named {new:?} already exists: pick another name, or merge the \
                     two with graph_merge_entities"
                )));
            }
            execute_each(
                txn,
                &[
                    "UPDATE entities SET name = ?1 WHERE namespace = ?2 AND name = ?3",
                    "UPDATE relations SET from_name = ?1 WHERE namespace = ?2 AND from_name = ?3",
                    "UPDATE relations SET to_name = ?1 WHERE namespace = ?2 AND to_name = ?3",
                ],
                &args![new, ns, old],
            )?;
            relations_changed(txn, ns, [old.as_str()])?;
            touched_record(txn, ns, &new)
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
        let target = target.to_string();
        self.write_in(ns, move |txn, ns| {
            must_find(txn.conn, ns, &target)?;
            for source in sources.iter().filter(|s| **s != target) {
                // Read the target again each time: the previous merge changed it.
                let t = must_find(txn.conn, ns, &target)?;
                let s = must_find(txn.conn, ns, source)?;
                merge_into(txn, ns, &t, &s)?;
            }
            touched_record(txn, ns, &target)
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
        let name = name.to_string();
        self.write_in(ns, move |txn, ns| {
            let e = must_find(txn.conn, ns, &name)?;
            if let Some(t) = entity_type {
                txn.conn.execute(
                    "UPDATE entities SET entity_type = ?1 WHERE seq = ?2",
                    &args![t, e.seq],
                )?;
            }
            if let Some(patch) = properties {
                let mut props = e.properties();
                for (k, v) in patch {
                    if v.is_null() {
                        props.remove(&k);
                    } else {
                        props.insert(k, v);
                    }
                }
                set_properties(txn, e.seq, &props)?;
            }
            touched_record(txn, ns, &name)
        })
        .await
    }
}
