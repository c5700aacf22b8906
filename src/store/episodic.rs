//! Episodic events in the store: typed reads and writes, always scoped to one
//! namespace. Every write logs its change in the same transaction.

use serde_json::{Map, Value};

use super::sql::{Dialect, Row, args};
use super::table::{Order, Query, Records, Table, Tags, counted, json, set, to_json};
use super::writer::WriteTxn;
use super::{Searchable, Store, StoreError, text_doc};
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

    /// Narrows a query of `events e` to this filter.
    fn narrow(self, q: &mut Query) -> &mut Query {
        q.and_some("e.occurred_at >= ?", self.since)
            .and_some("e.occurred_at < ?", self.until)
            .and_some("e.importance >= ?", self.min_importance)
            .and_some("e.importance <= ?", self.max_importance)
            .and_each(TAGS.has, &self.tags)
    }
}

impl EventPatch {
    fn apply(self, e: &mut Event, now: Micros) {
        set(&mut e.content, self.content);
        set(&mut e.tags, self.tags);
        set(&mut e.importance, self.importance);
        set(&mut e.occurred_at, self.occurred_at.map(micros_to_datetime));
        set(&mut e.metadata, self.metadata);
        e.updated_at = micros_to_datetime(now);
    }
}

pub(super) static EVENTS: Table<Event> = Table {
    name: "events",
    alias: "e",
    columns: "e.id, e.content, e.tags, e.importance, e.occurred_at, e.created_at, \
              e.updated_at, e.metadata, e.session_id",
    decode: event_from_row,
    search: &SEARCH,
    listed_by: "episodic_list or episodic_recall",
};

pub(super) static SEARCH: Searchable = Searchable {
    kind: RecordKind::Event,
    // Events are never superseded: NULL stands for `superseded_by`.
    sql: "SELECT id, namespace, content, tags, importance, occurred_at, NULL FROM events",
    doc: |_, r| text_doc(RecordKind::Event, r),
};

static TAGS: Tags = Tags {
    clear: "DELETE FROM event_tags WHERE event_id = ?1",
    add: "INSERT INTO event_tags (event_id, namespace, tag) VALUES (?1, ?2, ?3) \
          ON CONFLICT DO NOTHING",
    has: "EXISTS (SELECT 1 FROM event_tags t WHERE t.event_id = e.id AND t.tag = ?)",
};

/// The reply to each of the events `ids` (found by id, the namespace test
/// off the indexes as in `Table::by_ids`), with the event's id as its last
/// column: the next event of the same session by (occurred_at, id), at most
/// `within` later, kept only if `filter` admits it (a later event that does
/// is not the reply).
fn replies_of(
    dialect: Dialect,
    namespace: &str,
    ids: &[String],
    within: Micros,
    filter: EventFilter,
) -> Query {
    let unindexed = dialect.unindexed();
    let mut q = Query::new(
        format!(
            "SELECT {columns}, q.id FROM events q JOIN events e \
             ON e.namespace = q.namespace AND e.id = (\
             SELECT n.id FROM events n WHERE n.namespace = q.namespace \
             AND n.session_id = q.session_id \
             AND (n.occurred_at, n.id) > (q.occurred_at, q.id) \
             AND n.occurred_at <= q.occurred_at + ? \
             ORDER BY n.occurred_at ASC, n.id ASC LIMIT 1) \
             WHERE {unindexed}q.namespace = ?",
            columns = EVENTS.columns
        ),
        [within.into(), namespace.to_string().into()],
    );
    q.and_in("q.id", ids.to_vec());
    filter.narrow(&mut q);
    q
}

fn event_from_row(r: &Row<'_>) -> Result<Event, StoreError> {
    Ok(Event {
        id: r.get(0)?,
        content: r.get(1)?,
        tags: json(r, 2)?,
        importance: r.get(3)?,
        occurred_at: micros_to_datetime(r.get(4)?),
        created_at: micros_to_datetime(r.get(5)?),
        updated_at: micros_to_datetime(r.get(6)?),
        metadata: json(r, 7)?,
        session_id: r.get(8)?,
    })
}

fn build(new: NewEvent, session_id: &str, now: Micros) -> Event {
    let at = micros_to_datetime(now);
    Event {
        id: new_id(),
        content: new.content,
        tags: new.tags,
        importance: new.importance,
        occurred_at: new.occurred_at.map_or(at, micros_to_datetime),
        created_at: at,
        updated_at: at,
        metadata: new.metadata,
        session_id: session_id.to_string(),
    }
}

/// Writes the whole event (a new one, or the changed fields of one stored),
/// its tags, and the change.
pub(super) fn save(txn: &mut WriteTxn<'_>, namespace: &str, e: &Event) -> Result<(), StoreError> {
    // PostgreSQL partitions events by `created_at`, so their key holds it
    // too; it never changes, so the event found is the same.
    let key = match txn.conn.dialect() {
        Dialect::Sqlite => "id",
        Dialect::Postgres => "id, created_at",
    };
    txn.conn.execute(
        &format!(
            "INSERT INTO events (id, namespace, content, tags, importance, occurred_at,
                                 created_at, updated_at, metadata, session_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT ({key}) DO UPDATE SET
                content = excluded.content, tags = excluded.tags,
                importance = excluded.importance, occurred_at = excluded.occurred_at,
                metadata = excluded.metadata, updated_at = excluded.updated_at"
        ),
        &args![
            e.id,
            namespace,
            e.content,
            to_json(&e.tags),
            e.importance,
            e.occurred_at.timestamp_micros(),
            e.created_at.timestamp_micros(),
            e.updated_at.timestamp_micros(),
            to_json(&e.metadata),
            e.session_id,
        ],
    )?;
    TAGS.replace(txn.conn, &e.id, namespace, &e.tags, &[])?;
    // The document from the event in hand, as `SEARCH` reads it from its row
    // (`store::tests::live_changes_replay_and_rebuild_agree` keeps them equal).
    let doc = SearchDoc {
        kind: RecordKind::Event,
        id: e.id.clone(),
        namespace: namespace.to_string(),
        text: e.content.clone(),
        tags: e.tags.clone(),
        time: e.occurred_at.timestamp_micros(),
        weight: e.importance,
        superseded: false,
    };
    txn.log_change(namespace, RecordKind::Event, &e.id, Some(doc))
}

impl Store {
    /// Stores events in one transaction (all or none) and returns them as stored.
    pub async fn insert_events(
        &self,
        namespace: &str,
        session_id: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        self.insert_records(namespace, session_id, events, build, save)
            .await
    }

    /// Events by id, listed and counted in time order (occurred_at, id),
    /// and updated.
    pub fn events(&self) -> Records<'_, Event, EventFilter, EventPatch> {
        Records {
            store: self,
            table: &EVENTS,
            key: ("e.occurred_at", "e.id"),
            key_of: |e| (e.occurred_at.timestamp_micros(), e.id.clone()),
            narrow: EventFilter::narrow,
            patch: EventPatch::apply,
            save,
        }
    }

    /// The events with these ids that exist in the namespace (in the order
    /// asked), each one `has_reply` holds for with its reply, if `filter`
    /// admits it: the next event of its session by (occurred_at, id), at most
    /// `within` later. One statement per chunk of ids for the replies.
    pub async fn events_with_replies(
        &self,
        namespace: &str,
        ids: Vec<String>,
        has_reply: fn(&Event) -> bool,
        within: Micros,
        filter: EventFilter,
    ) -> Result<Vec<(Event, Option<Event>)>, StoreError> {
        self.read_in(namespace, move |conn, ns| {
            let events = EVENTS.get_many(conn, ns, &ids)?;
            let asking: Vec<String> = events
                .iter()
                .filter(|e| has_reply(e))
                .map(|e| e.id.clone())
                .collect();
            let mut replies = EVENTS.by_key(conn, &asking, |chunk| {
                replies_of(conn.dialect(), ns, chunk, within, filter.clone())
            })?;
            Ok(events
                .into_iter()
                .map(|e| {
                    let reply = replies.remove(&e.id);
                    (e, reply)
                })
                .collect())
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
        let mut q = Query::new(
            "SELECT (e.occurred_at / ?) * ? AS b, count(*) FROM events e WHERE e.namespace = ?",
            [
                bucket_micros.into(),
                bucket_micros.into(),
                namespace.to_string().into(),
            ],
        );
        filter.narrow(&mut q).push(" GROUP BY b ORDER BY b", []);
        self.readers.scan(move |conn| q.rows(conn, counted)).await
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
        let events = self.events();
        let anchor = events.get(namespace, id).await?;
        let key = (anchor.occurred_at.timestamp_micros(), anchor.id.clone());
        let around = |order, after, limit| {
            events.list(namespace, EventFilter::default(), order, Some(after), limit)
        };
        let mut earlier = around(Order::Desc, key.clone(), before).await?;
        earlier.reverse();
        let later = around(Order::Asc, key, after).await?;
        Ok((anchor, earlier, later))
    }

    /// Deletes the events with these ids; returns (deleted, not found).
    pub async fn delete_events(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.delete_each(namespace, ids, |txn, ns, id| EVENTS.delete(txn, ns, id))
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
        let mut q = EVENTS.select_of("e.id", namespace);
        filter
            .narrow(&mut q)
            .push(" ORDER BY e.occurred_at, e.id", []);
        let sampled =
            move |ids: Vec<String>| (ids.len() as u64, ids.into_iter().take(sample).collect());
        if dry_run {
            let ids = self.readers.scan(move |conn| q.column(conn)).await?;
            return Ok(sampled(ids));
        }
        self.write_in(namespace, move |txn, namespace| {
            let ids: Vec<String> = q.column(txn.conn)?;
            for id in &ids {
                EVENTS.delete(txn, namespace, id)?;
            }
            Ok(sampled(ids))
        })
        .await
    }
}
