//! Semantic facts in the store: typed reads and writes, always scoped to one
//! namespace. Every write logs its change in the same transaction; supersession
//! updates both facts of the pair in one transaction.

use serde_json::{Map, Value};

use super::sql::{self, Conn, Row, args};
use super::table::{Query, Records, Table, Tags, counted, json, set, to_json};
use super::writer::WriteTxn;
use super::{Searchable, Store, StoreError, text_doc};
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
    /// Narrows a query of `facts f` to this filter.
    fn narrow(self, q: &mut Query) -> &mut Query {
        if !self.include_superseded {
            q.push(" AND f.superseded_by IS NULL", []);
        }
        q.and_some("f.valid_from >= ?", self.since)
            .and_some("f.valid_from < ?", self.until)
            .and_some("f.confidence >= ?", self.min_confidence)
            .and_each(TAGS.has, &self.tags)
    }
}

impl FactPatch {
    fn apply(self, f: &mut Fact, now: Micros) {
        set(&mut f.content, self.content);
        set(&mut f.tags, self.tags);
        set(&mut f.confidence, self.confidence);
        set(&mut f.source, self.source.map(Some));
        set(&mut f.valid_from, self.valid_from.map(micros_to_datetime));
        set(&mut f.metadata, self.metadata);
        f.updated_at = micros_to_datetime(now);
    }
}

pub(super) static FACTS: Table<Fact> = Table {
    name: "facts",
    alias: "f",
    columns: "f.id, f.content, f.tags, f.confidence, f.source, f.valid_from, f.valid_to, \
              f.created_at, f.updated_at, f.access_count, f.last_accessed_at, f.supersedes, \
              f.superseded_by, f.metadata, f.session_id",
    decode: fact_from_row,
    search: &SEARCH,
    listed_by: "semantic_list or semantic_search",
};

pub(super) static SEARCH: Searchable = Searchable {
    kind: RecordKind::Fact,
    sql: "SELECT id, namespace, content, tags, confidence, valid_from, superseded_by FROM facts",
    doc: |_, r| text_doc(RecordKind::Fact, r),
};

/// A fact's tag rows also say whether the fact is current (tag counts skip
/// superseded facts).
static TAGS: Tags = Tags {
    clear: "DELETE FROM fact_tags WHERE fact_id = ?1",
    add: "INSERT INTO fact_tags (fact_id, namespace, tag, current) \
          VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    has: "EXISTS (SELECT 1 FROM fact_tags t WHERE t.fact_id = f.id AND t.tag = ?)",
};

fn fact_from_row(r: &Row<'_>) -> Result<Fact, StoreError> {
    Ok(Fact {
        id: r.get(0)?,
        content: r.get(1)?,
        tags: json(r, 2)?,
        confidence: r.get(3)?,
        source: r.get(4)?,
        valid_from: micros_to_datetime(r.get(5)?),
        valid_to: r.get::<Option<i64>>(6)?.map(micros_to_datetime),
        created_at: micros_to_datetime(r.get(7)?),
        updated_at: micros_to_datetime(r.get(8)?),
        access_count: r.get::<i64>(9)?.max(0) as u64,
        last_accessed_at: r.get::<Option<i64>>(10)?.map(micros_to_datetime),
        supersedes: r.get(11)?,
        superseded_by: r.get(12)?,
        metadata: json(r, 13)?,
        session_id: r.get(14)?,
    })
}

/// Writes the whole row (insert or replace), its tags, and the change.
pub(super) fn save(txn: &mut WriteTxn<'_>, namespace: &str, f: &Fact) -> Result<(), StoreError> {
    txn.conn.execute(
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
        &args![
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
        ],
    )?;
    let current = sql::Value::from(f.superseded_by.is_none());
    TAGS.replace(txn.conn, &f.id, namespace, &f.tags, &[current])?;
    // The document from the fact in hand, as `SEARCH` reads it from its row
    // (`store::tests::live_changes_replay_and_rebuild_agree` keeps them equal).
    let doc = SearchDoc {
        kind: RecordKind::Fact,
        id: f.id.clone(),
        namespace: namespace.to_string(),
        text: f.content.clone(),
        tags: f.tags.clone(),
        time: f.valid_from.timestamp_micros(),
        weight: f.confidence,
        superseded: f.superseded_by.is_some(),
    };
    txn.log_change(namespace, RecordKind::Fact, &f.id, Some(doc))
}

pub(super) fn build(new: NewFact, session_id: &str, now: Micros) -> Fact {
    let at = micros_to_datetime(now);
    Fact {
        id: new_id(),
        content: new.content,
        tags: new.tags,
        confidence: new.confidence,
        source: new.source,
        valid_from: new.valid_from.map_or(at, micros_to_datetime),
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

/// Deletes one fact; a fact it superseded becomes current again, and the fact
/// that superseded it now follows the one before.
fn delete_fact(txn: &mut WriteTxn<'_>, namespace: &str, id: &str) -> Result<bool, StoreError> {
    let Some(f) = FACTS.get(txn.conn, namespace, id)? else {
        return Ok(false);
    };
    FACTS.delete(txn, namespace, id)?;
    if let Some(prev) = &f.supersedes
        && let Some(mut older) = FACTS.get(txn.conn, namespace, prev)?
        && older.superseded_by.as_deref() == Some(id)
    {
        older.superseded_by = None;
        older.valid_to = None;
        older.updated_at = micros_to_datetime(txn.now);
        save(txn, namespace, &older)?;
    }
    if let Some(next) = &f.superseded_by
        && let Some(mut newer) = FACTS.get(txn.conn, namespace, next)?
    {
        newer.supersedes = f.supersedes.clone();
        save(txn, namespace, &newer)?;
    }
    Ok(true)
}

/// The facts reached from `from` by following `link` (`supersedes` back,
/// `superseded_by` forward), in that order; at most `max` of them.
fn follow(
    conn: Conn<'_>,
    namespace: &str,
    mut from: Option<String>,
    link: fn(&Fact) -> &Option<String>,
    max: usize,
) -> Result<Vec<Fact>, StoreError> {
    let mut out = Vec::new();
    while let Some(id) = from
        && out.len() < max
        && let Some(f) = FACTS.get(conn, namespace, &id)?
    {
        from = link(&f).clone();
        out.push(f);
    }
    Ok(out)
}

impl Store {
    /// Stores facts in one transaction (all or none) and returns them as stored.
    pub async fn insert_facts(
        &self,
        namespace: &str,
        session_id: &str,
        facts: Vec<NewFact>,
    ) -> Result<Vec<Fact>, StoreError> {
        self.insert_records(namespace, session_id, facts, build, save)
            .await
    }

    /// Facts by id, listed and counted by the time they were stored
    /// (created_at, id), and updated.
    pub fn facts(&self) -> Records<'_, Fact, FactFilter, FactPatch> {
        Records {
            store: self,
            table: &FACTS,
            key: ("f.created_at", "f.id"),
            key_of: |f| (f.created_at.timestamp_micros(), f.id.clone()),
            narrow: FactFilter::narrow,
            patch: FactPatch::apply,
            save,
        }
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
        let mut q = Query::new(
            "SELECT tag, count(*) AS n FROM fact_tags WHERE namespace = ?",
            [namespace.to_string().into()],
        );
        if !include_superseded {
            q.push(" AND current = 1", []);
        }
        if let Some(p) = prefix {
            q.push(
                " AND substr(tag, 1, length(CAST(? AS TEXT))) = ?",
                [p.clone().into(), p.into()],
            );
        }
        q.push(" GROUP BY tag ORDER BY n DESC, tag ASC", [])
            .limit(limit);
        self.readers.scan(move |conn| q.rows(conn, counted)).await
    }

    /// Deletes facts; returns (deleted, not found). A fact whose successor is
    /// deleted becomes current again.
    pub async fn delete_facts(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.delete_each(namespace, ids, delete_fact).await
    }

    /// An agent confirms a fact: confidence moves `boost` of the way to 1.0 and
    /// the use is counted.
    pub async fn reinforce_fact(
        &self,
        namespace: &str,
        id: &str,
        boost: f64,
    ) -> Result<Fact, StoreError> {
        self.update_record(&FACTS, save, namespace, id, move |f, now| {
            f.confidence = (f.confidence + (1.0 - f.confidence) * boost).clamp(0.0, 1.0);
            f.access_count += 1;
            f.last_accessed_at = Some(micros_to_datetime(now));
            f.updated_at = micros_to_datetime(now);
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
        let (session_id, old_id) = (session_id.to_string(), old_id.to_string());
        self.write_in(namespace, move |txn, namespace| {
            let mut old = FACTS.must_get(txn.conn, namespace, &old_id)?;
            if let Some(by) = &old.superseded_by {
                return Err(StoreError::Conflict(format!(
                    "fact {old_id:?} was already superseded by {by:?}: supersede that one \
                     (semantic_history shows the chain)"
                )));
            }
            let mut fact = build(new, &session_id, txn.now);
            fact.supersedes = Some(old.id.clone());
            save(txn, namespace, &fact)?;
            old.superseded_by = Some(fact.id.clone());
            old.valid_to = Some(fact.valid_from.max(old.valid_from));
            old.updated_at = micros_to_datetime(txn.now);
            save(txn, namespace, &old)?;
            Ok((old, fact))
        })
        .await
    }

    /// Every version of the fact `id` belongs to, oldest first.
    pub async fn fact_history(&self, namespace: &str, id: &str) -> Result<Vec<Fact>, StoreError> {
        /// A chain longer than this is cut (a guard against a corrupt cycle).
        const MAX_VERSIONS: usize = 1000;
        let id = id.to_string();
        self.read_in(namespace, move |conn, namespace| {
            let start = FACTS.must_get(conn, namespace, &id)?;
            let back = start.supersedes.clone();
            let mut chain = follow(conn, namespace, back, |f| &f.supersedes, MAX_VERSIONS)?;
            chain.reverse();
            let forth = start.superseded_by.clone();
            chain.push(start);
            let room = MAX_VERSIONS.saturating_sub(chain.len());
            chain.extend(follow(conn, namespace, forth, |f| &f.superseded_by, room)?);
            Ok(chain)
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
                // The later of the two times: sqlite's `max(a, b)` is not
                // PostgreSQL's, and `greatest` is not sqlite's.
                let bump = "UPDATE facts SET access_count = access_count + ?1,
                        last_accessed_at = CASE WHEN coalesce(last_accessed_at, 0) > ?2
                            THEN coalesce(last_accessed_at, 0) ELSE ?2 END
                     WHERE namespace = ?3 AND id = ?4";
                for (namespace, id, n, at) in &accesses {
                    txn.conn
                        .execute(bump, &args![*n as i64, *at, namespace, id])?;
                }
                Ok(())
            })
            .await
    }
}
