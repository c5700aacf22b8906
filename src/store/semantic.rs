//! Semantic facts in sqlite: typed reads and writes, always scoped to one
//! namespace. Every write logs its change in the same transaction; supersession
//! updates both facts of the pair in one transaction.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params_from_iter};
use serde_json::{Map, Value};

use super::episodic::to_json;
use super::writer::WriteTxn;
use super::{Store, StoreError};
use crate::model::{Fact, Micros, RecordKind, SearchDoc, micros_to_datetime, new_id};

/// A fact to store; defaults already applied and validated by the caller.
#[derive(Debug, Clone)]
pub struct NewFact {
    pub content: String,
    pub tags: Vec<String>,
    pub confidence: f64,
    pub source: Option<String>,
    pub valid_from: Option<Micros>,
    pub metadata: Map<String, Value>,
}

/// Fields to change on a fact; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct FactPatch {
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    pub confidence: Option<f64>,
    pub source: Option<String>,
    pub valid_from: Option<Micros>,
    pub metadata: Option<Map<String, Value>>,
}

/// Which facts a list covers.
#[derive(Debug, Clone, Default)]
pub struct FactFilter {
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// valid_from >= since
    pub since: Option<Micros>,
    /// valid_from < until
    pub until: Option<Micros>,
    pub min_confidence: Option<f64>,
    pub include_superseded: bool,
}

impl FactFilter {
    fn push_sql(&self, sql: &mut String, params: &mut Vec<SqlValue>) {
        if !self.include_superseded {
            sql.push_str(" AND f.superseded_by IS NULL");
        }
        if let Some(since) = self.since {
            sql.push_str(" AND f.valid_from >= ?");
            params.push(SqlValue::Integer(since));
        }
        if let Some(until) = self.until {
            sql.push_str(" AND f.valid_from < ?");
            params.push(SqlValue::Integer(until));
        }
        if let Some(min) = self.min_confidence {
            sql.push_str(" AND f.confidence >= ?");
            params.push(SqlValue::Real(min));
        }
        for tag in &self.tags {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM fact_tags t WHERE t.fact_id = f.id AND t.tag = ?)",
            );
            params.push(SqlValue::Text(tag.clone()));
        }
    }
}

const FACT_COLUMNS: &str = "f.id, f.content, f.tags, f.confidence, f.source, f.valid_from, \
    f.valid_to, f.created_at, f.updated_at, f.access_count, f.last_accessed_at, f.supersedes, \
    f.superseded_by, f.metadata, f.session_id";

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn fact_from_row(r: &Row<'_>) -> Result<Fact, StoreError> {
    let tags: String = r.get(2)?;
    let metadata: String = r.get(13)?;
    Ok(Fact {
        id: r.get(0)?,
        content: r.get(1)?,
        tags: serde_json::from_str(&tags).map_err(corrupt)?,
        confidence: r.get(3)?,
        source: r.get(4)?,
        valid_from: micros_to_datetime(r.get(5)?),
        valid_to: r.get::<_, Option<i64>>(6)?.map(micros_to_datetime),
        created_at: micros_to_datetime(r.get(7)?),
        updated_at: micros_to_datetime(r.get(8)?),
        access_count: r.get::<_, i64>(9)?.max(0) as u64,
        last_accessed_at: r.get::<_, Option<i64>>(10)?.map(micros_to_datetime),
        supersedes: r.get(11)?,
        superseded_by: r.get(12)?,
        metadata: serde_json::from_str(&metadata).map_err(corrupt)?,
        session_id: r.get(14)?,
    })
}

/// Row of `id, namespace, content, tags, confidence, valid_from, superseded_by`.
pub(super) fn search_doc_from_row(r: &Row<'_>) -> Result<SearchDoc, StoreError> {
    let tags: String = r.get(3)?;
    Ok(SearchDoc {
        kind: RecordKind::Fact,
        id: r.get(0)?,
        namespace: r.get(1)?,
        text: r.get(2)?,
        tags: serde_json::from_str(&tags).map_err(corrupt)?,
        weight: r.get(4)?,
        time: r.get(5)?,
        superseded: r.get::<_, Option<String>>(6)?.is_some(),
    })
}

pub(super) const SEARCH_DOC_SQL: &str =
    "SELECT id, namespace, content, tags, confidence, valid_from, superseded_by FROM facts";

pub(super) fn search_doc_by_id(
    conn: &Connection,
    id: &str,
) -> Result<Option<SearchDoc>, StoreError> {
    let sql = format!("{SEARCH_DOC_SQL} WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(search_doc_from_row(r)?)),
        None => Ok(None),
    }
}

fn search_doc(namespace: &str, f: &Fact) -> SearchDoc {
    SearchDoc {
        kind: RecordKind::Fact,
        id: f.id.clone(),
        namespace: namespace.to_string(),
        text: f.content.clone(),
        tags: f.tags.clone(),
        time: f.valid_from.timestamp_micros(),
        weight: f.confidence,
        superseded: f.superseded_by.is_some(),
    }
}

fn get_in(conn: &Connection, namespace: &str, id: &str) -> Result<Option<Fact>, StoreError> {
    let sql = format!("SELECT {FACT_COLUMNS} FROM facts f WHERE f.namespace = ?1 AND f.id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([namespace, id])?;
    match rows.next()? {
        Some(r) => Ok(Some(fact_from_row(r)?)),
        None => Ok(None),
    }
}

fn not_found(namespace: &str, id: &str) -> StoreError {
    StoreError::NotFound(format!(
        "no fact with id {id:?} in namespace {namespace:?}: check the id (semantic_list or semantic_search return ids)"
    ))
}

fn must_get(conn: &Connection, namespace: &str, id: &str) -> Result<Fact, StoreError> {
    get_in(conn, namespace, id)?.ok_or_else(|| not_found(namespace, id))
}

/// Writes the whole row (insert or replace), its tags, and the change.
fn save(txn: &mut WriteTxn<'_>, namespace: &str, f: &Fact) -> Result<(), StoreError> {
    let mut stmt = txn.conn.prepare_cached(
        "INSERT INTO facts (id, namespace, content, tags, confidence, source, valid_from, valid_to,
                            created_at, updated_at, access_count, last_accessed_at, supersedes,
                            superseded_by, metadata, session_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (id) DO UPDATE SET
            content = excluded.content, tags = excluded.tags, confidence = excluded.confidence,
            source = excluded.source, valid_from = excluded.valid_from,
            valid_to = excluded.valid_to, updated_at = excluded.updated_at,
            access_count = excluded.access_count, last_accessed_at = excluded.last_accessed_at,
            supersedes = excluded.supersedes, superseded_by = excluded.superseded_by,
            metadata = excluded.metadata",
    )?;
    stmt.execute(rusqlite::params![
        f.id,
        namespace,
        f.content,
        to_json(&f.tags),
        f.confidence,
        f.source,
        f.valid_from.timestamp_micros(),
        f.valid_to.map(|t| t.timestamp_micros()),
        f.created_at.timestamp_micros(),
        f.updated_at.timestamp_micros(),
        f.access_count as i64,
        f.last_accessed_at.map(|t| t.timestamp_micros()),
        f.supersedes,
        f.superseded_by,
        to_json(&f.metadata),
        f.session_id,
    ])?;
    txn.conn
        .prepare_cached("DELETE FROM fact_tags WHERE fact_id = ?1")?
        .execute([&f.id])?;
    let mut ins = txn.conn.prepare_cached(
        "INSERT OR IGNORE INTO fact_tags (fact_id, namespace, tag, current) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for tag in &f.tags {
        ins.execute(rusqlite::params![
            f.id,
            namespace,
            tag,
            f.superseded_by.is_none()
        ])?;
    }
    txn.log_change(
        namespace,
        RecordKind::Fact,
        &f.id,
        Some(search_doc(namespace, f)),
    )
}

fn build(new: NewFact, session_id: &str, now: Micros) -> Fact {
    let at = micros_to_datetime(now);
    Fact {
        id: new_id(),
        content: new.content,
        tags: new.tags,
        confidence: new.confidence,
        source: new.source,
        valid_from: new.valid_from.map(micros_to_datetime).unwrap_or(at),
        valid_to: None,
        created_at: at,
        updated_at: at,
        access_count: 0,
        last_accessed_at: None,
        supersedes: None,
        superseded_by: None,
        metadata: new.metadata,
        session_id: session_id.to_string(),
    }
}

impl Store {
    /// Stores facts in one transaction (all or none) and returns them as stored.
    pub async fn insert_facts(
        &self,
        namespace: &str,
        session_id: &str,
        facts: Vec<NewFact>,
    ) -> Result<Vec<Fact>, StoreError> {
        let (namespace, session_id) = (namespace.to_string(), session_id.to_string());
        self.writer
            .write(move |txn| {
                let mut out = Vec::with_capacity(facts.len());
                for new in facts {
                    let fact = build(new, &session_id, txn.now);
                    save(txn, &namespace, &fact)?;
                    out.push(fact);
                }
                Ok(out)
            })
            .await
    }

    pub async fn get_fact(&self, namespace: &str, id: &str) -> Result<Fact, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.readers
            .read(move |conn| must_get(conn, &namespace, &id))
            .await
    }

    /// The facts with these ids that exist in the namespace, in the order asked.
    pub async fn get_facts(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Fact>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut out = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(f) = get_in(conn, &namespace, id)? {
                        out.push(f);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Facts matching `filter`, newest first, strictly after the keyset `after`
    /// (created_at, id); at most `limit`.
    pub async fn list_facts(
        &self,
        namespace: &str,
        filter: FactFilter,
        after: Option<(Micros, String)>,
        limit: usize,
    ) -> Result<Vec<Fact>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut sql = format!("SELECT {FACT_COLUMNS} FROM facts f WHERE f.namespace = ?");
                let mut params = vec![SqlValue::Text(namespace)];
                filter.push_sql(&mut sql, &mut params);
                if let Some((t, id)) = after {
                    sql.push_str(" AND (f.created_at, f.id) < (?, ?)");
                    params.push(SqlValue::Integer(t));
                    params.push(SqlValue::Text(id));
                }
                sql.push_str(" ORDER BY f.created_at DESC, f.id DESC LIMIT ?");
                params.push(SqlValue::Integer(limit as i64));
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(fact_from_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    pub async fn count_facts(
        &self,
        namespace: &str,
        filter: FactFilter,
    ) -> Result<u64, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut sql = "SELECT count(*) FROM facts f WHERE f.namespace = ?".to_string();
                let mut params = vec![SqlValue::Text(namespace)];
                filter.push_sql(&mut sql, &mut params);
                let n: i64 = conn
                    .prepare_cached(&sql)?
                    .query_row(params_from_iter(params), |r| r.get(0))?;
                Ok(n as u64)
            })
            .await
    }

    /// Tags with the number of facts carrying each, most used first (ties by
    /// name). `prefix` narrows to tags starting with it.
    pub async fn fact_tags(
        &self,
        namespace: &str,
        include_superseded: bool,
        prefix: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut sql =
                    "SELECT tag, count(*) AS n FROM fact_tags WHERE namespace = ?".to_string();
                let mut params = vec![SqlValue::Text(namespace)];
                if !include_superseded {
                    sql.push_str(" AND current = 1");
                }
                if let Some(p) = prefix {
                    sql.push_str(" AND substr(tag, 1, length(?)) = ?");
                    params.push(SqlValue::Text(p.clone()));
                    params.push(SqlValue::Text(p));
                }
                sql.push_str(" GROUP BY tag ORDER BY n DESC, tag ASC LIMIT ?");
                params.push(SqlValue::Integer(limit as i64));
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(params), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    pub async fn update_fact(
        &self,
        namespace: &str,
        id: &str,
        patch: FactPatch,
    ) -> Result<Fact, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.writer
            .write(move |txn| {
                let mut f = must_get(txn.conn, &namespace, &id)?;
                if let Some(c) = patch.content {
                    f.content = c;
                }
                if let Some(t) = patch.tags {
                    f.tags = t;
                }
                if let Some(c) = patch.confidence {
                    f.confidence = c;
                }
                if let Some(s) = patch.source {
                    f.source = Some(s);
                }
                if let Some(t) = patch.valid_from {
                    f.valid_from = micros_to_datetime(t);
                }
                if let Some(m) = patch.metadata {
                    f.metadata = m;
                }
                f.updated_at = micros_to_datetime(txn.now);
                save(txn, &namespace, &f)?;
                Ok(f)
            })
            .await
    }

    /// Deletes facts; returns (deleted, not found). A fact whose successor is
    /// deleted becomes current again.
    pub async fn delete_facts(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let namespace = namespace.to_string();
        self.writer
            .write(move |txn| {
                let (mut deleted, mut missing) = (Vec::new(), Vec::new());
                for id in ids {
                    let Some(f) = get_in(txn.conn, &namespace, &id)? else {
                        missing.push(id);
                        continue;
                    };
                    txn.conn
                        .prepare_cached("DELETE FROM facts WHERE namespace = ?1 AND id = ?2")?
                        .execute([&namespace, &id])?;
                    txn.log_change(&namespace, RecordKind::Fact, &id, None)?;
                    if let Some(prev) = &f.supersedes
                        && let Some(mut older) = get_in(txn.conn, &namespace, prev)?
                        && older.superseded_by.as_deref() == Some(id.as_str())
                    {
                        older.superseded_by = None;
                        older.valid_to = None;
                        older.updated_at = micros_to_datetime(txn.now);
                        save(txn, &namespace, &older)?;
                    }
                    if let Some(next) = &f.superseded_by
                        && let Some(mut newer) = get_in(txn.conn, &namespace, next)?
                    {
                        newer.supersedes = f.supersedes.clone();
                        save(txn, &namespace, &newer)?;
                    }
                    deleted.push(id);
                }
                Ok((deleted, missing))
            })
            .await
    }

    /// An agent confirms a fact: confidence moves `boost` of the way to 1.0 and
    /// the use is counted.
    pub async fn reinforce_fact(
        &self,
        namespace: &str,
        id: &str,
        boost: f64,
    ) -> Result<Fact, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.writer
            .write(move |txn| {
                let mut f = must_get(txn.conn, &namespace, &id)?;
                f.confidence = (f.confidence + (1.0 - f.confidence) * boost).clamp(0.0, 1.0);
                f.access_count += 1;
                f.last_accessed_at = Some(micros_to_datetime(txn.now));
                f.updated_at = micros_to_datetime(txn.now);
                save(txn, &namespace, &f)?;
                Ok(f)
            })
            .await
    }

    /// Stores `new` as the successor of `old_id` in one transaction: the old fact
    /// gets `valid_to` (when the new one starts holding) and a link forward.
    /// Returns (old, new).
    pub async fn supersede_fact(
        &self,
        namespace: &str,
        session_id: &str,
        old_id: &str,
        new: NewFact,
    ) -> Result<(Fact, Fact), StoreError> {
        let (namespace, session_id, old_id) = (
            namespace.to_string(),
            session_id.to_string(),
            old_id.to_string(),
        );
        self.writer
            .write(move |txn| {
                let mut old = must_get(txn.conn, &namespace, &old_id)?;
                if let Some(by) = &old.superseded_by {
                    return Err(StoreError::Conflict(format!(
                        "fact {old_id:?} was already superseded by {by:?}: supersede that one (semantic_history shows the chain)"
                    )));
                }
                let mut fact = build(new, &session_id, txn.now);
                fact.supersedes = Some(old.id.clone());
                save(txn, &namespace, &fact)?;
                old.superseded_by = Some(fact.id.clone());
                old.valid_to = Some(fact.valid_from.max(old.valid_from));
                old.updated_at = micros_to_datetime(txn.now);
                save(txn, &namespace, &old)?;
                Ok((old, fact))
            })
            .await
    }

    /// Every version of the fact `id` belongs to, oldest first.
    pub async fn fact_history(&self, namespace: &str, id: &str) -> Result<Vec<Fact>, StoreError> {
        /// A chain longer than this is cut (a guard against a corrupt cycle).
        const MAX_VERSIONS: usize = 1000;
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.readers
            .read(move |conn| {
                let start = must_get(conn, &namespace, &id)?;
                let mut older = Vec::new();
                let mut cursor = start.supersedes.clone();
                while let Some(prev) = cursor {
                    if older.len() >= MAX_VERSIONS {
                        break;
                    }
                    match get_in(conn, &namespace, &prev)? {
                        Some(f) => {
                            cursor = f.supersedes.clone();
                            older.push(f);
                        }
                        None => break,
                    }
                }
                older.reverse();
                let mut cursor = start.superseded_by.clone();
                older.push(start);
                while let Some(next) = cursor {
                    if older.len() >= MAX_VERSIONS {
                        break;
                    }
                    match get_in(conn, &namespace, &next)? {
                        Some(f) => {
                            cursor = f.superseded_by.clone();
                            older.push(f);
                        }
                        None => break,
                    }
                }
                Ok(older)
            })
            .await
    }

    /// Adds counted uses to facts (batched by the caller). Not a change of the
    /// fact's content: no change-log entry, no search update.
    pub async fn record_fact_access(
        &self,
        accesses: Vec<(String, String, u64, Micros)>,
    ) -> Result<(), StoreError> {
        self.writer
            .write(move |txn| {
                let mut stmt = txn.conn.prepare_cached(
                    "UPDATE facts SET access_count = access_count + ?1,
                        last_accessed_at = max(coalesce(last_accessed_at, 0), ?2)
                     WHERE namespace = ?3 AND id = ?4",
                )?;
                for (namespace, id, n, at) in &accesses {
                    stmt.execute(rusqlite::params![*n as i64, at, namespace, id])?;
                }
                Ok(())
            })
            .await
    }
}
