//! Episodic events in sqlite: typed reads and writes, always scoped to one
//! namespace. Every write logs its change in the same transaction.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params_from_iter};
use serde_json::{Map, Value};

use super::writer::WriteTxn;
use super::{Store, StoreError};
use crate::model::{Event, Micros, RecordKind, SearchDoc, micros_to_datetime, new_id};

/// An event to store; defaults already applied and validated by the caller.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub content: String,
    pub tags: Vec<String>,
    pub importance: f64,
    pub occurred_at: Option<Micros>,
    pub metadata: Map<String, Value>,
}

/// Fields to change on an event; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EventPatch {
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<f64>,
    pub occurred_at: Option<Micros>,
    pub metadata: Option<Map<String, Value>>,
}

/// Which events a list, count, timeline or bulk delete covers.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// occurred_at >= since
    pub since: Option<Micros>,
    /// occurred_at < until
    pub until: Option<Micros>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    pub min_importance: Option<f64>,
    pub max_importance: Option<f64>,
}

impl EventFilter {
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.tags.is_empty()
            && self.min_importance.is_none()
            && self.max_importance.is_none()
    }

    /// Appends ` AND ...` clauses for this filter; `e` is the events alias.
    fn push_sql(&self, sql: &mut String, params: &mut Vec<SqlValue>) {
        if let Some(since) = self.since {
            sql.push_str(" AND e.occurred_at >= ?");
            params.push(SqlValue::Integer(since));
        }
        if let Some(until) = self.until {
            sql.push_str(" AND e.occurred_at < ?");
            params.push(SqlValue::Integer(until));
        }
        if let Some(min) = self.min_importance {
            sql.push_str(" AND e.importance >= ?");
            params.push(SqlValue::Real(min));
        }
        if let Some(max) = self.max_importance {
            sql.push_str(" AND e.importance <= ?");
            params.push(SqlValue::Real(max));
        }
        for tag in &self.tags {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM event_tags t WHERE t.event_id = e.id AND t.tag = ?)",
            );
            params.push(SqlValue::Text(tag.clone()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

const EVENT_COLUMNS: &str = "e.id, e.content, e.tags, e.importance, e.occurred_at, e.created_at, \
                             e.updated_at, e.metadata, e.session_id";

fn event_from_row(r: &Row<'_>) -> Result<Event, StoreError> {
    let tags: String = r.get(2)?;
    let metadata: String = r.get(7)?;
    Ok(Event {
        id: r.get(0)?,
        content: r.get(1)?,
        tags: serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        importance: r.get(3)?,
        occurred_at: micros_to_datetime(r.get(4)?),
        created_at: micros_to_datetime(r.get(5)?),
        updated_at: micros_to_datetime(r.get(6)?),
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        session_id: r.get(8)?,
    })
}

/// Row of `id, namespace, content, tags, importance, occurred_at`.
pub(super) fn search_doc_from_row(r: &Row<'_>) -> Result<SearchDoc, StoreError> {
    let tags: String = r.get(3)?;
    Ok(SearchDoc {
        kind: RecordKind::Event,
        id: r.get(0)?,
        namespace: r.get(1)?,
        text: r.get(2)?,
        tags: serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        weight: r.get(4)?,
        time: r.get(5)?,
        superseded: false,
    })
}

pub(super) const SEARCH_DOC_SQL: &str =
    "SELECT id, namespace, content, tags, importance, occurred_at FROM events";

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

fn search_doc(namespace: &str, e: &Event) -> SearchDoc {
    SearchDoc {
        kind: RecordKind::Event,
        id: e.id.clone(),
        namespace: namespace.to_string(),
        text: e.content.clone(),
        tags: e.tags.clone(),
        time: e.occurred_at.timestamp_micros(),
        weight: e.importance,
        superseded: false,
    }
}

fn get_in(conn: &Connection, namespace: &str, id: &str) -> Result<Option<Event>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.namespace = ?1 AND e.id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([namespace, id])?;
    match rows.next()? {
        Some(r) => Ok(Some(event_from_row(r)?)),
        None => Ok(None),
    }
}

fn not_found(namespace: &str, id: &str) -> StoreError {
    StoreError::NotFound(format!(
        "no event with id {id:?} in namespace {namespace:?}: check the id (episodic_list or episodic_recall return ids)"
    ))
}

fn write_tags(txn: &WriteTxn<'_>, namespace: &str, e: &Event) -> Result<(), StoreError> {
    let mut del = txn
        .conn
        .prepare_cached("DELETE FROM event_tags WHERE event_id = ?1")?;
    del.execute([&e.id])?;
    let mut ins = txn.conn.prepare_cached(
        "INSERT OR IGNORE INTO event_tags (event_id, namespace, tag) VALUES (?1, ?2, ?3)",
    )?;
    for tag in &e.tags {
        ins.execute([&e.id, namespace, tag])?;
    }
    Ok(())
}

pub(super) fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("tags and metadata always serialize")
}

impl Store {
    /// Stores events in one transaction (all or none) and returns them as stored.
    pub async fn insert_events(
        &self,
        namespace: &str,
        session_id: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        let namespace = namespace.to_string();
        let session_id = session_id.to_string();
        self.writer
            .write(move |txn| {
                let mut out = Vec::with_capacity(events.len());
                for new in events {
                    let now = micros_to_datetime(txn.now);
                    let event = Event {
                        id: new_id(),
                        content: new.content,
                        tags: new.tags,
                        importance: new.importance,
                        occurred_at: new.occurred_at.map(micros_to_datetime).unwrap_or(now),
                        created_at: now,
                        updated_at: now,
                        metadata: new.metadata,
                        session_id: session_id.clone(),
                    };
                    let mut stmt = txn.conn.prepare_cached(
                        "INSERT INTO events (id, namespace, content, tags, importance, occurred_at,
                                             created_at, updated_at, metadata, session_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?;
                    stmt.execute(rusqlite::params![
                        event.id,
                        namespace,
                        event.content,
                        to_json(&event.tags),
                        event.importance,
                        event.occurred_at.timestamp_micros(),
                        txn.now,
                        txn.now,
                        to_json(&event.metadata),
                        event.session_id,
                    ])?;
                    write_tags(txn, &namespace, &event)?;
                    txn.log_change(
                        &namespace,
                        RecordKind::Event,
                        &event.id,
                        Some(search_doc(&namespace, &event)),
                    )?;
                    out.push(event);
                }
                Ok(out)
            })
            .await
    }

    pub async fn get_event(&self, namespace: &str, id: &str) -> Result<Event, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.readers
            .read(move |conn| {
                get_in(conn, &namespace, &id)?.ok_or_else(|| not_found(&namespace, &id))
            })
            .await
    }

    /// The events with these ids that exist in the namespace, in the order asked.
    pub async fn get_events(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Event>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut out = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(e) = get_in(conn, &namespace, id)? {
                        out.push(e);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Events matching `filter` in time order, strictly after the keyset `after`
    /// (occurred_at, id) in that order; at most `limit`.
    pub async fn list_events(
        &self,
        namespace: &str,
        filter: EventFilter,
        order: Order,
        after: Option<(Micros, String)>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.namespace = ?");
                let mut params = vec![SqlValue::Text(namespace)];
                filter.push_sql(&mut sql, &mut params);
                let (cmp, dir) = match order {
                    Order::Asc => (">", "ASC"),
                    Order::Desc => ("<", "DESC"),
                };
                if let Some((t, id)) = after {
                    sql.push_str(&format!(" AND (e.occurred_at, e.id) {cmp} (?, ?)"));
                    params.push(SqlValue::Integer(t));
                    params.push(SqlValue::Text(id));
                }
                sql.push_str(&format!(
                    " ORDER BY e.occurred_at {dir}, e.id {dir} LIMIT ?"
                ));
                params.push(SqlValue::Integer(limit as i64));
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(event_from_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    pub async fn count_events(
        &self,
        namespace: &str,
        filter: EventFilter,
    ) -> Result<u64, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut sql = "SELECT count(*) FROM events e WHERE e.namespace = ?".to_string();
                let mut params = vec![SqlValue::Text(namespace)];
                filter.push_sql(&mut sql, &mut params);
                let n: i64 = conn
                    .prepare_cached(&sql)?
                    .query_row(params_from_iter(params), |r| r.get(0))?;
                Ok(n as u64)
            })
            .await
    }

    /// (bucket start, count) for each non-empty bucket of `bucket_micros`,
    /// aligned to the Unix epoch (so hours and days are UTC hours and days).
    pub async fn event_timeline(
        &self,
        namespace: &str,
        filter: EventFilter,
        bucket_micros: i64,
    ) -> Result<Vec<(Micros, u64)>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                let mut sql = "SELECT (e.occurred_at / ?) * ? AS b, count(*) FROM events e \
                               WHERE e.namespace = ?"
                    .to_string();
                let mut params = vec![
                    SqlValue::Integer(bucket_micros),
                    SqlValue::Integer(bucket_micros),
                    SqlValue::Text(namespace),
                ];
                filter.push_sql(&mut sql, &mut params);
                sql.push_str(" GROUP BY b ORDER BY b");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(params), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The anchor event and up to `before` / `after` events on either side of it
    /// in time (both lists in time order).
    pub async fn events_around(
        &self,
        namespace: &str,
        id: &str,
        before: usize,
        after: usize,
    ) -> Result<(Event, Vec<Event>, Vec<Event>), StoreError> {
        let anchor = self.get_event(namespace, id).await?;
        let key = (anchor.occurred_at.timestamp_micros(), anchor.id.clone());
        let mut earlier = self
            .list_events(
                namespace,
                EventFilter::default(),
                Order::Desc,
                Some(key.clone()),
                before,
            )
            .await?;
        earlier.reverse();
        let later = self
            .list_events(
                namespace,
                EventFilter::default(),
                Order::Asc,
                Some(key),
                after,
            )
            .await?;
        Ok((anchor, earlier, later))
    }

    pub async fn update_event(
        &self,
        namespace: &str,
        id: &str,
        patch: EventPatch,
    ) -> Result<Event, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.writer
            .write(move |txn| {
                let mut e =
                    get_in(txn.conn, &namespace, &id)?.ok_or_else(|| not_found(&namespace, &id))?;
                if let Some(c) = patch.content {
                    e.content = c;
                }
                if let Some(t) = patch.tags {
                    e.tags = t;
                }
                if let Some(i) = patch.importance {
                    e.importance = i;
                }
                if let Some(t) = patch.occurred_at {
                    e.occurred_at = micros_to_datetime(t);
                }
                if let Some(m) = patch.metadata {
                    e.metadata = m;
                }
                e.updated_at = micros_to_datetime(txn.now);
                let mut stmt = txn.conn.prepare_cached(
                    "UPDATE events SET content = ?1, tags = ?2, importance = ?3, occurred_at = ?4,
                                       metadata = ?5, updated_at = ?6
                     WHERE namespace = ?7 AND id = ?8",
                )?;
                stmt.execute(rusqlite::params![
                    e.content,
                    to_json(&e.tags),
                    e.importance,
                    e.occurred_at.timestamp_micros(),
                    to_json(&e.metadata),
                    txn.now,
                    namespace,
                    e.id,
                ])?;
                write_tags(txn, &namespace, &e)?;
                txn.log_change(
                    &namespace,
                    RecordKind::Event,
                    &e.id,
                    Some(search_doc(&namespace, &e)),
                )?;
                Ok(e)
            })
            .await
    }

    /// Deletes the events with these ids; returns (deleted, not found).
    pub async fn delete_events(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let namespace = namespace.to_string();
        self.writer
            .write(move |txn| {
                let (mut deleted, mut missing) = (Vec::new(), Vec::new());
                for id in ids {
                    if delete_one(txn, &namespace, &id)? {
                        deleted.push(id);
                    } else {
                        missing.push(id);
                    }
                }
                Ok((deleted, missing))
            })
            .await
    }

    /// Deletes every event matching `filter` (or, with `dry_run`, only counts
    /// them). Returns the number matched and up to `sample` of their ids.
    pub async fn delete_events_where(
        &self,
        namespace: &str,
        filter: EventFilter,
        dry_run: bool,
        sample: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let namespace = namespace.to_string();
        let scope = namespace.clone();
        let select = move |conn: &Connection| -> Result<Vec<String>, StoreError> {
            let mut sql = "SELECT e.id FROM events e WHERE e.namespace = ?".to_string();
            let mut params = vec![SqlValue::Text(scope)];
            filter.push_sql(&mut sql, &mut params);
            sql.push_str(" ORDER BY e.occurred_at, e.id");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        if dry_run {
            let ids = self.readers.read(select).await?;
            let n = ids.len() as u64;
            return Ok((n, ids.into_iter().take(sample).collect()));
        }
        self.writer
            .write(move |txn| {
                let ids = select(txn.conn)?;
                for id in &ids {
                    delete_one(txn, &namespace, id)?;
                }
                let n = ids.len() as u64;
                Ok((n, ids.into_iter().take(sample).collect()))
            })
            .await
    }
}

fn delete_one(txn: &mut WriteTxn<'_>, namespace: &str, id: &str) -> Result<bool, StoreError> {
    let n = txn
        .conn
        .prepare_cached("DELETE FROM events WHERE namespace = ?1 AND id = ?2")?
        .execute([namespace, id])?;
    if n == 1 {
        txn.log_change(namespace, RecordKind::Event, id, None)?;
    }
    Ok(n == 1)
}
